//! A queue: its ready messages in order, its consumers in round-robin order.
//!
//! Ready messages carry a per-queue sequence number so that a message returned by a
//! consumer (nack, reject, channel closed) goes back to its original position, as
//! RabbitMQ's requeue does. Unacked messages live in the channels that received them,
//! not here; the queue only counts them per consumer for `basic.qos`.

use bytes::Bytes;
use std::collections::VecDeque;

use crate::message::Message;
use crate::proto::FieldTable;

use super::ExchangeId;

/// A message waiting in a queue: 16 bytes, as queued messages dominate memory.
#[derive(Debug, Clone)]
pub struct Ready {
    pub msg: Message,
    /// The per-queue sequence number, with [`REDELIVERED`] as its top bit.
    seq: u64,
}

/// Top bit of `Ready::seq`: the message was delivered before. Sequence numbers count
/// publishes to one queue, so they never reach 2^63.
const REDELIVERED: u64 = 1 << 63;

impl Ready {
    pub fn new(msg: Message, seq: u64, redelivered: bool) -> Ready {
        let flag = if redelivered { REDELIVERED } else { 0 };
        Ready {
            msg,
            seq: (seq & !REDELIVERED) | flag,
        }
    }

    /// Position in the queue's publish order.
    pub fn seq(&self) -> u64 {
        self.seq & !REDELIVERED
    }

    pub fn redelivered(&self) -> bool {
        self.seq & REDELIVERED != 0
    }

    pub fn set_redelivered(&mut self) {
        self.seq |= REDELIVERED;
    }
}

/// A consumer attached to a queue: where its deliveries go and how many it may hold.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// Unique for the broker's lifetime; unacked deliveries refer to their consumer by it.
    pub id: u64,
    pub conn: usize,
    pub channel: u16,
    pub tag: Bytes,
    pub no_ack: bool,
    pub exclusive: bool,
    /// basic.qos prefetch-count with global=false at the time of basic.consume; 0 = no limit.
    pub prefetch: u16,
    /// Deliveries not yet acked (manual-ack consumers only).
    pub unacked: u32,
}

impl Consumer {
    /// Whether the per-consumer prefetch allows one more delivery.
    pub fn has_credit(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.unacked < u32::from(self.prefetch)
    }
}

/// The declared properties that `queue.declare` compares for equivalence.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueProps {
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Debug)]
pub struct Queue {
    pub(super) gen: u32,
    pub name: Bytes,
    pub props: QueueProps,
    /// The connection that owns an exclusive queue.
    pub owner: Option<usize>,
    pub ready: VecDeque<Ready>,
    next_seq: u64,
    pub consumers: Vec<Consumer>,
    /// Index of the consumer that gets the next delivery (round-robin).
    pub rr: usize,
    /// An auto-delete queue is deleted when its last consumer goes, once it had one.
    pub had_consumer: bool,
    /// Exchanges that have at least one binding to this queue (with repeats).
    pub(super) sources: Vec<ExchangeId>,
    /// Id of a durable queue in the store's records; 0 = not persisted.
    pub durable_id: u32,
    /// Set while the queue sits in the broker's dirty list.
    pub(super) dirty: bool,
    /// Last publish that routed here (dedupes a message that reaches us by several paths).
    pub(super) stamp: u64,
}

impl Queue {
    pub(super) fn new(gen: u32, name: Bytes, props: QueueProps, owner: Option<usize>) -> Queue {
        Queue {
            gen,
            name,
            props,
            owner,
            ready: VecDeque::new(),
            next_seq: 0,
            consumers: Vec::new(),
            rr: 0,
            had_consumer: false,
            sources: Vec::new(),
            durable_id: 0,
            dirty: false,
            stamp: 0,
        }
    }

    /// Appends a newly published message.
    pub fn push(&mut self, msg: Message) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready.push_back(Ready::new(msg, seq, false));
    }

    /// Returns a message that was delivered but not acked to its original position,
    /// marked redelivered. Cheap in the usual case (it belongs at the front).
    pub fn requeue(&mut self, msg: Message, seq: u64) {
        let entry = Ready::new(msg, seq, true);
        match self.ready.front() {
            None => self.ready.push_back(entry),
            Some(f) if seq < f.seq() => self.ready.push_front(entry),
            Some(_) => {
                let at = self.ready.partition_point(|r| r.seq() < seq);
                self.ready.insert(at, entry);
            }
        }
    }

    /// Number of ready messages (what queue.declare-ok and purge report).
    pub fn message_count(&self) -> u32 {
        u32::try_from(self.ready.len()).unwrap_or(u32::MAX)
    }

    pub fn consumer_count(&self) -> u32 {
        u32::try_from(self.consumers.len()).unwrap_or(u32::MAX)
    }

    pub fn consumer_mut(&mut self, id: u64) -> Option<&mut Consumer> {
        self.consumers.iter_mut().find(|c| c.id == id)
    }

    /// Removes a consumer; returns it. Keeps the round-robin position stable.
    pub fn remove_consumer(&mut self, id: u64) -> Option<Consumer> {
        let at = self.consumers.iter().position(|c| c.id == id)?;
        let c = self.consumers.remove(at);
        if at < self.rr {
            self.rr -= 1;
        }
        if self.rr >= self.consumers.len() {
            self.rr = 0;
        }
        Some(c)
    }

    /// Whether an exclusive consumer holds the queue.
    pub fn has_exclusive_consumer(&self) -> bool {
        self.consumers.iter().any(|c| c.exclusive)
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&mut self) -> u32 {
        let n = self.message_count();
        self.ready.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &'static str) -> Message {
        Message::new(b"", b"", &[0, 0], Bytes::from_static(body.as_bytes()), None)
    }

    fn q() -> Queue {
        let props = QueueProps {
            durable: false,
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        Queue::new(0, Bytes::from_static(b"q"), props, None)
    }

    fn bodies(q: &Queue) -> Vec<Vec<u8>> {
        q.ready
            .iter()
            .map(|r| r.msg.body().as_slice().to_vec())
            .collect()
    }

    #[test]
    fn requeue_restores_original_order() {
        let mut q = q();
        for b in ["a", "b", "c", "d", "e"] {
            q.push(msg(b));
        }
        // Deliver a, b, c; then d stays ready. Requeue c, then a: order must be a c d e... plus b later.
        let a = q.ready.pop_front().unwrap();
        let b = q.ready.pop_front().unwrap();
        let c = q.ready.pop_front().unwrap();
        let seq = c.seq();
        q.requeue(c.msg, seq);
        let seq = a.seq();
        q.requeue(a.msg, seq);
        let seq = b.seq();
        q.requeue(b.msg, seq);
        assert_eq!(
            bodies(&q),
            [b"a", b"b", b"c", b"d", b"e"].map(|b| b.to_vec())
        );
        assert!(q.ready.iter().take(3).all(|r| r.redelivered()));
        assert!(!q.ready[3].redelivered());
        assert_eq!(q.ready[3].seq(), 3);
        assert_eq!(std::mem::size_of::<Ready>(), 16);
    }

    #[test]
    fn remove_consumer_keeps_round_robin_in_range() {
        let mut q = q();
        for id in 0..3 {
            q.consumers.push(Consumer {
                id,
                conn: 0,
                channel: 1,
                tag: Bytes::new(),
                no_ack: true,
                exclusive: false,
                prefetch: 0,
                unacked: 0,
            });
        }
        q.rr = 2;
        assert!(q.remove_consumer(0).is_some());
        assert_eq!(q.rr, 1);
        assert!(q.remove_consumer(2).is_some());
        assert_eq!(q.rr, 0);
        assert!(q.remove_consumer(7).is_none());
    }
}
