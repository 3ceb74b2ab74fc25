//! Direct reply-to (`amq.rabbitmq.reply-to`): the registry of reply addresses, each
//! naming the one channel whose reply consumer gets what is published to it.
//!
//! RabbitMQ has no queue behind the pseudo-queue: a channel that consumes from
//! `amq.rabbitmq.reply-to` (no-ack only) gets a suffix; its publishes with `reply_to:
//! amq.rabbitmq.reply-to` carry `amq.rabbitmq.reply-to.<suffix>` instead, and a publish
//! to the default exchange with that routing key goes straight to the channel. This
//! module owns only the suffix → (connection, channel) map and the making of suffixes;
//! the channel methods (`conn::methods`) register, look up and unregister, and the
//! server writes the delivery. Nothing here touches a connection.
//!
//! A suffix is unguessable (RabbitMQ's carries a random key too): a counter, so that two
//! suffixes never collide, and 128 bits keyed by this process's random SipHash keys, so
//! that no one can address a channel whose address they were not given. Connection
//! keys are reused after a close; the suffix is not, so a stale address reaches no one.

use bytes::Bytes;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// The pseudo-queue a reply consumer consumes from, and the `reply_to` value a
/// requester publishes with.
pub const PSEUDO_QUEUE: &[u8] = b"amq.rabbitmq.reply-to";

/// What every reply address starts with; the rest is the suffix.
pub const PREFIX: &[u8] = b"amq.rabbitmq.reply-to.";

/// The suffix of a reply address, if `name` is one (`amq.rabbitmq.reply-to.` + at least
/// one byte).
pub fn suffix(name: &[u8]) -> Option<&[u8]> {
    name.strip_prefix(PREFIX).filter(|s| !s.is_empty())
}

/// Reply addresses in use: suffix → (connection key, channel number).
#[derive(Debug, Default)]
pub struct Registry {
    by_suffix: HashMap<Bytes, (usize, u16)>,
    keys: RandomState,
    made: u64,
}

impl Registry {
    /// A fresh suffix for the reply consumer of `channel` on connection `conn`.
    pub fn register(&mut self, conn: usize, channel: u16) -> Bytes {
        self.made += 1;
        let n = self.made;
        let a = self.keys.hash_one((n, 0u8));
        let b = self.keys.hash_one((n, 1u8));
        let suffix = Bytes::from(format!("{n:x}.{a:016x}{b:016x}"));
        self.by_suffix.insert(suffix.clone(), (conn, channel));
        suffix
    }

    /// The address is gone (basic.cancel, channel or connection closed).
    pub fn unregister(&mut self, suffix: &[u8]) {
        self.by_suffix.remove(suffix);
    }

    /// The (connection, channel) a suffix names, if its reply consumer still exists.
    pub fn lookup(&self, suffix: &[u8]) -> Option<(usize, u16)> {
        self.by_suffix.get(suffix).copied()
    }

    /// How many reply consumers exist (tests, inspection).
    pub fn len(&self) -> usize {
        self.by_suffix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_suffix.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_distinct_and_resolve_until_unregistered() {
        let mut r = Registry::default();
        let a = r.register(3, 1);
        let b = r.register(3, 1);
        assert_ne!(a, b);
        assert_eq!(r.lookup(&a), Some((3, 1)));
        r.unregister(&a);
        assert_eq!(r.lookup(&a), None);
        assert_eq!(r.lookup(&b), Some((3, 1)));
        assert_eq!(r.lookup(b"garbage"), None);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn suffix_of_an_address() {
        assert_eq!(suffix(b"amq.rabbitmq.reply-to.abc"), Some(&b"abc"[..]));
        assert_eq!(suffix(b"amq.rabbitmq.reply-to."), None);
        assert_eq!(suffix(b"amq.rabbitmq.reply-to"), None);
        assert_eq!(suffix(b"q"), None);
    }
}
