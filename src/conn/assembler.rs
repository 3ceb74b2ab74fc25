//! Content assembly (spec §4.2.6): a content-bearing method is followed by one content
//! header frame and as many body frames as the header's body size needs. A small machine
//! that returns outcomes, like RabbitMQ's `rabbit_command_assembler`.
//!
//! A body that arrives in one frame is kept as a slice of the read buffer (zero copy);
//! a body in several frames is gathered into one buffer (one copy, large messages only).

use bytes::{Bytes, BytesMut};

use crate::error::{AmqpError, ReplyCode};
use crate::proto::{basic, ContentHeader};

/// RabbitMQ 3.10's default max message size (128 MiB).
pub const MAX_MESSAGE_SIZE: u64 = 128 * 1024 * 1024;

/// Gathering is preallocated at most this much; larger bodies grow as they arrive, so a
/// lying body size cannot make us allocate.
const PREALLOC_MAX: u64 = 1 << 20;

#[derive(Debug, Default)]
pub enum Assembler {
    #[default]
    Idle,
    /// basic.publish seen; its content header comes next.
    Header(basic::Publish),
    /// Header seen; `size` is the body size it declared, `parts` what has arrived of
    /// the body so far (complete when their length reaches `size`).
    Body {
        publish: basic::Publish,
        properties: Bytes,
        size: u64,
        parts: Parts,
    },
}

#[derive(Debug)]
pub enum Parts {
    None,
    One(Bytes),
    Many(BytesMut),
}

/// What a frame did to the assembly.
#[derive(Debug)]
pub enum Outcome {
    /// More frames needed.
    Pending,
    /// A whole message.
    Complete {
        publish: basic::Publish,
        properties: Bytes,
        body: Bytes,
    },
}

fn unexpected(text: &str) -> AmqpError {
    AmqpError::new(ReplyCode::UnexpectedFrame, text)
}

impl Assembler {
    /// Whether a method frame may come now (no content is half-assembled).
    pub fn is_idle(&self) -> bool {
        matches!(self, Assembler::Idle)
    }

    /// Starts a message after basic.publish.
    pub fn start(&mut self, publish: basic::Publish) {
        *self = Assembler::Header(publish);
    }

    /// A content header frame arrived. Errors are connection errors (505, 501) except
    /// an oversized message, which is a channel error (406) as in RabbitMQ.
    pub fn header(&mut self, payload: &Bytes) -> Result<Outcome, AmqpError> {
        let Assembler::Header(publish) = std::mem::take(self) else {
            return Err(unexpected(
                "expected method frame, got non method frame instead",
            ));
        };
        let h = ContentHeader::parse(payload).map_err(|e| {
            AmqpError::new(
                ReplyCode::FrameError,
                format!("malformed content header: {e}"),
            )
        })?;
        if h.class_id != 60 {
            return Err(AmqpError::new(
                ReplyCode::FrameError,
                format!(
                    "content header for class {} does not match basic.publish",
                    h.class_id
                ),
            ));
        }
        if h.body_size > MAX_MESSAGE_SIZE {
            return Err(AmqpError::new(
                ReplyCode::PreconditionFailed,
                format!(
                    "message size {} is larger than configured max size {MAX_MESSAGE_SIZE}",
                    h.body_size
                ),
            ));
        }
        if h.body_size == 0 {
            return Ok(Outcome::Complete {
                publish,
                properties: h.properties,
                body: Bytes::new(),
            });
        }
        *self = Assembler::Body {
            publish,
            properties: h.properties,
            size: h.body_size,
            parts: Parts::None,
        };
        Ok(Outcome::Pending)
    }

    /// A body frame arrived.
    pub fn body(&mut self, payload: Bytes) -> Result<Outcome, AmqpError> {
        let Assembler::Body { size, parts, .. } = self else {
            return Err(unexpected(
                "expected method frame, got non method frame instead",
            ));
        };
        let have = match parts {
            Parts::None => 0,
            Parts::One(b) => b.len() as u64,
            Parts::Many(m) => m.len() as u64,
        };
        let now = have + payload.len() as u64;
        if now > *size {
            return Err(AmqpError::new(
                ReplyCode::UnexpectedFrame,
                format!("body of {now} bytes is longer than the {size} bytes its header declared"),
            ));
        }
        *parts = match std::mem::replace(parts, Parts::None) {
            Parts::None if now == *size => Parts::One(payload),
            Parts::None => {
                let mut m = BytesMut::with_capacity((*size).min(PREALLOC_MAX) as usize);
                m.extend_from_slice(&payload);
                Parts::Many(m)
            }
            Parts::One(first) => {
                let mut m = BytesMut::with_capacity((*size).min(PREALLOC_MAX) as usize);
                m.extend_from_slice(&first);
                m.extend_from_slice(&payload);
                Parts::Many(m)
            }
            Parts::Many(mut m) => {
                m.extend_from_slice(&payload);
                Parts::Many(m)
            }
        };
        if now < *size {
            return Ok(Outcome::Pending);
        }
        let Assembler::Body {
            publish,
            properties,
            parts,
            ..
        } = std::mem::take(self)
        else {
            return Ok(Outcome::Pending);
        };
        let body = match parts {
            Parts::None => Bytes::new(),
            Parts::One(b) => b,
            Parts::Many(m) => m.freeze(),
        };
        Ok(Outcome::Complete {
            publish,
            properties,
            body,
        })
    }
}
