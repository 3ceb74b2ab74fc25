//! The priority queue kind (`x-max-priority`): ready messages by the `priority`
//! property, highest first, in publish order within one priority, a requeued message
//! back at its original position within its priority (RabbitMQ's
//! `rabbit_priority_queue`).
//!
//! One [`ClassicQueue`] per level (0..=max) holds that level's messages in sequence
//! order, and a 256-bit bitmap says which levels are non-empty, so push and requeue are
//! the classic queue's O(1) (O(log n) for a mid-list requeue) plus one property read,
//! and pop finds the highest level in one word test per 64 levels. An empty level is a
//! `ClassicQueue` that has not allocated.
//!
//! RabbitMQ's rules, which the rest of the broker relies on by only ever looking at
//! [`PriorityQueue::peek`] and [`PriorityQueue::pop`]: a message without a priority is
//! at 0, one above the maximum at the maximum; `drop-head` (max-length) drops the
//! message that would be delivered next, i.e. the head of the highest level; expiry
//! looks at that head too, and reaches a lower level only once every level above it is
//! empty (`rabbit_priority_queue:dropwhile` stops at the first level whose head has
//! not expired).
//!
//! Plain storage, like the classic kind: sequence numbers come from [`super::Queue`].

use crate::message::Message;
use crate::proto::properties;

use super::classic::ClassicQueue;
use super::Ready;

/// The ready messages of a priority queue (see the module doc).
#[derive(Debug)]
pub struct PriorityQueue {
    /// One queue per priority level, index = priority; `max + 1` of them.
    levels: Vec<ClassicQueue>,
    /// Bit `p` set when `levels[p]` is not empty.
    nonempty: [u64; 4],
    /// How many words of `nonempty` the levels use (1 for up to 64 levels).
    words: usize,
    /// Ready messages over all levels.
    len: usize,
}

impl PriorityQueue {
    /// A queue with levels 0..=`max`.
    pub fn new(max: u8) -> PriorityQueue {
        PriorityQueue {
            levels: (0..=usize::from(max))
                .map(|_| ClassicQueue::default())
                .collect(),
            nonempty: [0; 4],
            words: usize::from(max) / 64 + 1,
            len: 0,
        }
    }

    /// The highest priority of this queue (`x-max-priority`).
    pub fn max(&self) -> u8 {
        // `levels` has 1..=256 entries by construction.
        u8::try_from(self.levels.len() - 1).unwrap_or(u8::MAX)
    }

    /// The level a message goes to: its priority, none = 0, above the maximum = the
    /// maximum (RabbitMQ's `rabbit_priority_queue:priority/2`).
    #[inline]
    pub fn level_of(&self, msg: &Message) -> usize {
        let p = properties::priority(msg.properties()).unwrap_or(0);
        usize::from(p).min(self.levels.len() - 1)
    }

    /// The highest non-empty level.
    #[inline]
    fn top(&self) -> Option<usize> {
        (0..self.words)
            .rev()
            .find(|&w| self.nonempty[w] != 0)
            .map(|w| w * 64 + 63 - self.nonempty[w].leading_zeros() as usize)
    }

    #[inline]
    fn mark(&mut self, level: usize) {
        self.nonempty[level / 64] |= 1 << (level % 64);
    }

    /// Appends a message whose sequence number is above every other ready one.
    // Out of line: inlined into `QueueKind`'s match it would grow the classic
    // queue's push and pop past the size the compiler inlines into the hot path.
    #[inline(never)]
    pub fn push(&mut self, r: Ready) {
        let l = self.level_of(&r.msg);
        self.levels[l].push(r);
        self.mark(l);
        self.len += 1;
    }

    /// Puts a message back at the position of its sequence number within its level.
    pub fn requeue(&mut self, r: Ready) {
        let l = self.level_of(&r.msg);
        self.levels[l].requeue(r);
        self.mark(l);
        self.len += 1;
    }

    /// Takes the next message: the oldest of the highest non-empty level.
    // Out of line: inlined into `QueueKind`'s match it would grow the classic
    // queue's push and pop past the size the compiler inlines into the hot path.
    #[inline(never)]
    pub fn pop(&mut self) -> Option<Ready> {
        let l = self.top()?;
        let r = self.levels[l].pop();
        if self.levels[l].is_empty() {
            self.nonempty[l / 64] &= !(1 << (l % 64));
        }
        if r.is_some() {
            self.len -= 1;
        }
        r
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message [`PriorityQueue::pop`] would take, left in place.
    pub fn peek(&self) -> Option<&Message> {
        self.levels[self.top()?].peek()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// How many messages the highest non-empty level holds: what can be delivered
    /// before the head moves to another level (and must be looked at for expiry again).
    pub fn top_len(&self) -> usize {
        self.top().map_or(0, |l| self.levels[l].len())
    }

    /// Every ready message, in no particular order.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.levels.iter().flat_map(|l| l.messages())
    }

    /// Drops every ready message.
    pub fn clear(&mut self) {
        for l in &mut self.levels {
            l.clear();
        }
        self.nonempty = [0; 4];
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::properties::BasicProperties;
    use bytes::Bytes;

    fn msg(body: &'static str, priority: Option<u8>) -> Message {
        let props = BasicProperties {
            priority,
            ..Default::default()
        }
        .to_raw();
        Message::new(b"", b"", &props, Bytes::from_static(body.as_bytes()), None)
    }

    fn bodies(q: &mut PriorityQueue) -> Vec<String> {
        std::iter::from_fn(|| q.pop())
            .map(|r| String::from_utf8_lossy(r.msg.body().as_slice()).into_owned())
            .collect()
    }

    #[test]
    fn highest_first_fifo_within_a_level_and_clamped() {
        let mut q = PriorityQueue::new(5);
        assert_eq!(q.max(), 5);
        let input = [
            ("a", None),
            ("b", Some(3)),
            ("c", Some(200)),
            ("d", Some(0)),
            ("e", Some(3)),
            ("f", Some(5)),
        ];
        for (seq, (b, p)) in input.into_iter().enumerate() {
            q.push(Ready::new(msg(b, p), seq as u64, false));
        }
        assert_eq!(q.len(), 6);
        assert_eq!(q.top_len(), 2, "c (clamped to 5) and f");
        assert_eq!(
            q.peek().map(|m| m.body().as_slice().to_vec()),
            Some(b"c".to_vec())
        );
        assert_eq!(q.messages().count(), 6);
        assert_eq!(bodies(&mut q), ["c", "f", "b", "e", "a", "d"]);
        assert!(q.is_empty() && q.peek().is_none() && q.pop().is_none());
    }

    #[test]
    fn requeue_goes_back_to_its_place_within_its_level() {
        let mut q = PriorityQueue::new(255);
        for (seq, (b, p)) in [("x", 1), ("y", 1), ("z", 1), ("hi", 255), ("lo", 0)]
            .into_iter()
            .enumerate()
        {
            q.push(Ready::new(msg(b, Some(p)), seq as u64, false));
        }
        let taken: Vec<Ready> = (0..3).filter_map(|_| q.pop()).collect();
        // hi, x, y taken; y then hi then x come back.
        for i in [2, 0, 1] {
            let r = &taken[i];
            q.requeue(Ready::new(r.msg.clone(), r.seq(), true));
        }
        assert_eq!(q.len(), 5);
        let got: Vec<(u64, bool)> = std::iter::from_fn(|| q.pop())
            .map(|r| (r.seq(), r.redelivered()))
            .collect();
        assert_eq!(
            got,
            [(3, true), (0, true), (1, true), (2, false), (4, false)]
        );
    }

    #[test]
    fn levels_across_bitmap_words_and_clear() {
        let mut q = PriorityQueue::new(255);
        for (seq, p) in [63u8, 64, 0, 128, 191, 192, 255, 127]
            .into_iter()
            .enumerate()
        {
            q.push(Ready::new(msg("m", Some(p)), seq as u64, false));
        }
        let order: Vec<usize> = std::iter::from_fn(|| q.pop())
            .map(|r| q_level(&r))
            .collect();
        assert_eq!(order, [255, 192, 191, 128, 127, 64, 63, 0]);
        q.push(Ready::new(msg("m", Some(7)), 9, false));
        q.clear();
        assert!(q.is_empty() && q.pop().is_none() && q.top_len() == 0);
    }

    fn q_level(r: &Ready) -> usize {
        usize::from(properties::priority(r.msg.properties()).unwrap_or(0))
    }
}
