//! The AMQP 0-9-1 codec (RabbitMQ's dialect): pure functions from bytes to values
//! and back. No I/O, no global state.
//!
//! Layers, bottom up:
//! - [`types`]: checked readers, writers, field tables;
//! - [`frame`]: frame headers ([`frame::parse`]; `Ok(None)` from a parser means
//!   "need more bytes") and writers for whole frames, including hand-written
//!   hot-path encoders for basic.deliver and basic.ack;
//! - [`method`] and one module per class: every method as a struct, [`Method`] as
//!   their union, generated from the spec by `codegen.py`;
//! - [`properties`]: content headers, kept raw ([`ContentHeader`]) and decoded on
//!   demand ([`BasicProperties`], or the raw accessors).
//!
//! Nothing a peer sends can make a decoder panic: malformed input is a
//! [`DecodeError`] or a [`frame::FrameError`].

pub mod error;
pub mod frame;
pub mod method;
pub mod properties;
pub mod types;

pub mod access;
pub mod basic;
pub mod channel;
pub mod confirm;
pub mod connection;
pub mod exchange;
pub mod queue;
pub mod tx;

#[cfg(test)]
mod tests;

pub use error::DecodeError;
pub use method::{method_name, Method};
pub use properties::{BasicProperties, ContentHeader};
pub use types::{FieldTable, FieldValue};
