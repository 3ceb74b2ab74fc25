//! The classic queue kind: ready messages in publish order, a requeued message back at
//! its original position (RabbitMQ's classic queue semantics).
//!
//! The ready messages are two sorted runs: `ready`, a deque that publishes append to and
//! requeues that belong at either end go into (O(1)), and `returned`, an ordered map for
//! the requeues that belong in the middle (several consumers' interleaved sets coming
//! back): O(log n) each instead of shifting half the deque per message. Taking the next
//! message takes the lower sequence number of the two heads; a queue that never had a
//! mid-list requeue pays one `is_empty` test for it.
//!
//! Plain storage: sequence numbers are handed out by [`super::Queue`], consumers,
//! credit and the store are not seen here.

use std::collections::{BTreeMap, VecDeque};

use crate::message::Message;

use super::Ready;

/// The ready messages of a classic queue, in sequence order (see the module doc).
#[derive(Debug, Default)]
pub struct ClassicQueue {
    ready: VecDeque<Ready>,
    /// Requeued (hence redelivered) messages whose place is between two of `ready`,
    /// by sequence number (each with its position token: a quorum queue's delivery
    /// count rides in it).
    returned: BTreeMap<u64, Ready>,
}

impl ClassicQueue {
    /// Appends a message whose sequence number is above every other ready one.
    #[inline]
    pub fn push(&mut self, r: Ready) {
        self.ready.push_back(r);
    }

    /// Puts a message back at the position of its sequence number. O(1) when it belongs
    /// at either end of `ready` (one consumer's set returned newest first), O(log n) in
    /// the middle.
    pub fn requeue(&mut self, r: Ready) {
        let seq = r.seq();
        match (self.ready.front(), self.ready.back()) {
            (Some(f), _) if seq < f.seq() => self.ready.push_front(r),
            (Some(_), Some(b)) if seq < b.seq() => {
                let displaced = self.returned.insert(seq, r);
                // Sequence numbers are unique in a queue and a message is in one place
                // at a time, so nothing can be displaced.
                debug_assert!(displaced.is_none(), "requeue of a message already ready");
            }
            _ => self.ready.push_back(r),
        }
    }

    /// Takes the next message in sequence order.
    #[inline]
    pub fn pop(&mut self) -> Option<Ready> {
        if self.returned.is_empty() {
            return self.ready.pop_front();
        }
        self.pop_merged()
    }

    #[cold]
    fn pop_merged(&mut self) -> Option<Ready> {
        let from_returned = match (self.ready.front(), self.returned.first_key_value()) {
            (Some(r), Some((&seq, _))) => seq < r.seq(),
            (None, _) => true,
            (Some(_), None) => false,
        };
        if from_returned {
            self.returned.pop_first().map(|(_, r)| r)
        } else {
            self.ready.pop_front()
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.returned.is_empty()
    }

    /// The message [`ClassicQueue::pop`] would take, left in place.
    pub fn peek(&self) -> Option<&Message> {
        match (self.ready.front(), self.returned.first_key_value()) {
            (Some(r), Some((&seq, m))) => Some(if seq < r.seq() { &m.msg } else { &r.msg }),
            (Some(r), None) => Some(&r.msg),
            (None, Some((_, m))) => Some(&m.msg),
            (None, None) => None,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.ready.len() + self.returned.len()
    }

    /// Every ready message, in no particular order.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.ready
            .iter()
            .map(|r| &r.msg)
            .chain(self.returned.values().map(|r| &r.msg))
    }

    /// Drops every ready message.
    pub fn clear(&mut self) {
        self.ready.clear();
        self.returned.clear();
    }
}
