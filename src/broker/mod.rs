//! The virtual host: exchanges, queues, bindings.
pub mod exchange;
