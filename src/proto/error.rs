//! Why a peer's bytes could not be decoded.
//!
//! Every decoder in [`crate::proto`] reports malformed input with a [`DecodeError`]
//! rather than panicking: the bytes come from an untrusted peer, and the connection
//! layer maps these to a connection close (501 FRAME_ERROR / 502 SYNTAX_ERROR /
//! 540 NOT_IMPLEMENTED) with [`DecodeError`]'s `Display` text as the reply text.

use std::fmt;

/// A reason a method payload, content header, property list or field table is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before a value it announced (or a fixed-size field) was complete.
    Truncated,
    /// The (class id, method id) pair is not a method of AMQP 0-9-1 (RabbitMQ edition).
    UnknownMethod {
        /// The class id read from the payload.
        class: u16,
        /// The method id read from the payload.
        method: u16,
    },
    /// A field table or array holds a value whose type letter is not one of RabbitMQ's.
    BadFieldType(u8),
    /// Bytes were left after the last argument / property / table entry.
    TrailingBytes,
    /// Property flags name a property the class does not have (or a continuation
    /// word sets property bits).
    BadPropertyFlags,
    /// Field tables / arrays are nested deeper than [`crate::proto::types::MAX_DEPTH`];
    /// refused so that a hostile table cannot exhaust the stack.
    TooDeep,
    /// A content header names a class other than basic (60), the only class with content.
    BadContentClass(u16),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => {
                f.write_str("truncated: value extends past the end of its frame")
            }
            DecodeError::UnknownMethod { class, method } => {
                write!(f, "unknown method: class {class}, method {method}")
            }
            DecodeError::BadFieldType(t) => {
                if t.is_ascii_graphic() {
                    write!(f, "unknown field-table value type '{}'", char::from(*t))
                } else {
                    write!(f, "unknown field-table value type 0x{t:02x}")
                }
            }
            DecodeError::TrailingBytes => f.write_str("unexpected bytes after the last field"),
            DecodeError::BadPropertyFlags => {
                f.write_str("property flags name a nonexistent property")
            }
            DecodeError::TooDeep => f.write_str("field tables nested too deeply"),
            DecodeError::BadContentClass(c) => {
                write!(f, "content header for class {c}, which has no content")
            }
        }
    }
}

impl std::error::Error for DecodeError {}
