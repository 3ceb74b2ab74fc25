//! Reply codes and the two error scopes of AMQP 0-9-1 (spec §1.4.2, "Exceptions"):
//! a soft error closes the channel (`channel.close`), a hard error the whole connection
//! (`connection.close`). Errors are small values; handlers return them and the
//! connection turns them into the close handshake.

use std::fmt;

/// The spec's reply codes (`constants` in amqp0-9-1.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ReplyCode {
    Success = 200,
    ContentTooLarge = 311,
    NoRoute = 312,
    NoConsumers = 313,
    ConnectionForced = 320,
    InvalidPath = 402,
    AccessRefused = 403,
    NotFound = 404,
    ResourceLocked = 405,
    PreconditionFailed = 406,
    FrameError = 501,
    SyntaxError = 502,
    CommandInvalid = 503,
    ChannelError = 504,
    UnexpectedFrame = 505,
    ResourceError = 506,
    NotAllowed = 530,
    NotImplemented = 540,
    InternalError = 541,
}

impl ReplyCode {
    /// The spec's name, as RabbitMQ prints it at the start of a reply text.
    pub fn name(self) -> &'static str {
        use ReplyCode::*;
        match self {
            Success => "OK",
            ContentTooLarge => "CONTENT_TOO_LARGE",
            NoRoute => "NO_ROUTE",
            NoConsumers => "NO_CONSUMERS",
            ConnectionForced => "CONNECTION_FORCED",
            InvalidPath => "INVALID_PATH",
            AccessRefused => "ACCESS_REFUSED",
            NotFound => "NOT_FOUND",
            ResourceLocked => "RESOURCE_LOCKED",
            PreconditionFailed => "PRECONDITION_FAILED",
            FrameError => "FRAME_ERROR",
            SyntaxError => "SYNTAX_ERROR",
            CommandInvalid => "COMMAND_INVALID",
            ChannelError => "CHANNEL_ERROR",
            UnexpectedFrame => "UNEXPECTED_FRAME",
            ResourceError => "RESOURCE_ERROR",
            NotAllowed => "NOT_ALLOWED",
            NotImplemented => "NOT_IMPLEMENTED",
            InternalError => "INTERNAL_ERROR",
        }
    }

    /// Soft errors close the channel; everything else closes the connection.
    pub fn is_channel_scoped(self) -> bool {
        use ReplyCode::*;
        matches!(
            self,
            AccessRefused
                | NotFound
                | ResourceLocked
                | PreconditionFailed
                | ContentTooLarge
                | NoRoute
                | NoConsumers
        )
    }
}

/// An error raised while handling a method: the reply code, a readable reason, and the
/// method that caused it (class id, method id; 0, 0 when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    pub code: ReplyCode,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    /// `text` is the reason; the reply text becomes "CODE_NAME - reason" as in RabbitMQ.
    pub fn new(code: ReplyCode, text: impl Into<String>) -> Self {
        AmqpError {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Attaches the offending method's ids (reported in channel.close/connection.close).
    pub fn on(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// The reply text as sent: "NOT_FOUND - no queue 'x' in vhost '/'", cut to fit a shortstr.
    pub fn reply_text(&self) -> String {
        let mut s = format!("{} - {}", self.code.name(), self.text);
        if s.len() > 255 {
            let mut cut = 255;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code as u16, self.reply_text())
    }
}

impl std::error::Error for AmqpError {}

/// Shorthand constructors used all over the handlers.
pub fn not_found(text: impl Into<String>) -> AmqpError {
    AmqpError::new(ReplyCode::NotFound, text)
}
pub fn precondition(text: impl Into<String>) -> AmqpError {
    AmqpError::new(ReplyCode::PreconditionFailed, text)
}
pub fn access_refused(text: impl Into<String>) -> AmqpError {
    AmqpError::new(ReplyCode::AccessRefused, text)
}
pub fn resource_locked(text: impl Into<String>) -> AmqpError {
    AmqpError::new(ReplyCode::ResourceLocked, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_spec() {
        assert!(ReplyCode::NotFound.is_channel_scoped());
        assert!(ReplyCode::PreconditionFailed.is_channel_scoped());
        assert!(!ReplyCode::FrameError.is_channel_scoped());
        assert!(!ReplyCode::NotAllowed.is_channel_scoped());
        assert!(!ReplyCode::ChannelError.is_channel_scoped());
    }

    #[test]
    fn reply_text_is_rabbit_style_and_fits_a_shortstr() {
        let e = not_found("no queue 'q' in vhost '/'");
        assert_eq!(e.reply_text(), "NOT_FOUND - no queue 'q' in vhost '/'");
        let long = not_found("é".repeat(300));
        assert!(long.reply_text().len() <= 255);
    }
}
