//! The AMQP 0-9-1 codec: pure functions from bytes to values and back. No I/O.
//! See each submodule; `Ok(None)` from a parser means "need more bytes".
