//! Per-channel state: content assembly, consumers, unacked deliveries, prefetch,
//! publisher confirm counters, the transaction's buffered operations, and the last
//! declared queue and published-to exchange. (channel.flow has no state: RabbitMQ 3.x
//! refuses active=false, and so do we.)
//!
//! Plain data with small helpers: the methods that change it live in `super::methods`,
//! the broker is never touched from here.
//!
//! Delivery tags are handed out in increasing order, so `unacked` is sorted by tag:
//! `ack multiple` drains a prefix and a single ack binary-searches.

use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Instant;

use crate::broker::QueueId;
use crate::message::Message;
use crate::proto::basic;

use super::assembler::Assembler;

/// A delivered message that waits for ack/nack/reject.
#[derive(Debug)]
pub struct Unacked {
    pub tag: u64,
    pub queue: QueueId,
    /// The queue's id in the store (0 = not durable); kept here because the queue may
    /// be deleted before the message is settled.
    pub durable: u32,
    /// The consumer it was delivered to; 0 for basic.get.
    pub consumer: u64,
    pub msg: Message,
    /// Its position in the queue, to requeue it there (`Ready::token`: with a quorum
    /// queue's delivery count in its top bits).
    pub seq: u64,
    pub delivered_at: Instant,
}

/// A consumer as its channel knows it.
#[derive(Debug, Clone)]
pub struct ChannelConsumer {
    pub tag: Bytes,
    pub queue: QueueId,
    pub id: u64,
    /// The basic.consume arguments as sent (the management API shows them); None when
    /// there were none, so a plain consumer allocates nothing for them.
    pub args: Option<Box<crate::proto::FieldTable>>,
}

/// Operations a transaction buffers until tx.commit.
#[derive(Debug)]
pub enum TxOp {
    Publish {
        publish: basic::Publish,
        properties: Bytes,
        body: Bytes,
    },
    Ack {
        tag: u64,
        multiple: bool,
    },
    Nack {
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
}

/// A short string a channel's publish cache keeps (an exchange name, a routing key):
/// copied, not sliced from the frame it came in, so that a cache entry never keeps a
/// 256 KiB read buffer alive after the connection has moved on to the next one
/// (ARCHITECTURE.md, convention 3). Up to 63 bytes inline, so that a publisher switching
/// between keys allocates nothing; longer ones (rare) on the heap.
#[derive(Clone)]
pub enum ShortKey {
    Inline { len: u8, buf: [u8; 63] },
    Heap(Box<[u8]>),
}

impl ShortKey {
    pub fn new(s: &[u8]) -> ShortKey {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= 63 => {
                let mut buf = [0; 63];
                buf[..s.len()].copy_from_slice(s);
                ShortKey::Inline { len, buf }
            }
            _ => ShortKey::Heap(s.into()),
        }
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ShortKey::Inline { len, buf } => &buf[..usize::from(*len)],
            ShortKey::Heap(b) => b,
        }
    }

    /// Whether this is `s`.
    #[inline]
    pub fn is(&self, s: &[u8]) -> bool {
        self.as_bytes() == s
    }
}

impl std::fmt::Debug for ShortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A channel's cached publish target: RabbitMQ's per-channel permission cache, which
/// Warren invalidates when permissions change (`Auth::generation`) rather than when the
/// channel idles.
#[derive(Debug, Clone)]
pub struct ExchangeCache {
    pub name: ShortKey,
    pub id: crate::broker::ExchangeId,
    /// `Auth::generation()` when the write permission was checked.
    pub generation: u64,
    /// A topic exchange: routing keys may need the user's topic permission.
    pub topic: bool,
    /// The last routing key the topic permission allowed on this exchange (a publisher
    /// repeating its key is not checked again).
    pub topic_key: Option<ShortKey>,
    /// The last routing key and the route `Broker::last_route` gave for it, so that a
    /// publisher repeating its key routes without a hash lookup (the broker checks
    /// that it still holds; see `Broker::route_hinted`).
    pub route: Option<(ShortKey, u32, crate::broker::QueueId)>,
}

#[derive(Debug)]
pub struct Channel {
    pub id: u16,
    /// We sent channel.close and wait for close-ok; other frames are discarded.
    pub closing: bool,
    pub assembler: Assembler,
    next_tag: u64,
    pub unacked: VecDeque<Unacked>,
    /// basic.qos global=false: applies to consumers created afterwards.
    pub prefetch_count: u16,
    /// basic.qos global=true: shared by all consumers of the channel; 0 = no limit.
    pub global_prefetch: u16,
    pub consumers: Vec<ChannelConsumer>,
    /// confirm.select was received.
    pub confirm: bool,
    /// Sequence number of the last publish in confirm mode.
    pub publish_seq: u64,
    /// Highest sequence number acked to the publisher.
    pub confirmed: u64,
    /// Publish sequence numbers above `confirmed` that a queue at its length limit
    /// refused (`x-overflow: reject-publish`): nacked, the rest acked. In order.
    pub nacks: Vec<u64>,
    /// tx.select was received: publishes and acks are buffered until commit.
    pub tx: Option<Vec<TxOp>>,
    /// The last queue declared on this channel ("" in later methods means it).
    pub last_queue: Bytes,
    /// The exchange the last publish went to: a publisher that keeps publishing to one
    /// exchange skips the name lookup (its generational id proves it still exists) and
    /// the write check (its auth generation proves no permission changed since).
    pub last_exchange: Option<ExchangeCache>,
    /// Message counters of this channel (publish, confirm, deliver, ack, ...), with
    /// their last samples for rates (see `crate::counters`).
    pub stats: crate::counters::Sampled<crate::counters::MsgCounters>,
    /// The direct reply-to consumer (basic.consume of `amq.rabbitmq.reply-to`), at most
    /// one per channel: its consumer tag and the suffix of its reply address.
    pub reply: Option<(Bytes, Bytes)>,
}

impl Channel {
    pub fn new(id: u16) -> Channel {
        Channel {
            id,
            closing: false,
            assembler: Assembler::Idle,
            next_tag: 0,
            unacked: VecDeque::new(),
            prefetch_count: 0,
            global_prefetch: 0,
            consumers: Vec::new(),
            confirm: false,
            publish_seq: 0,
            confirmed: 0,
            nacks: Vec::new(),
            tx: None,
            last_queue: Bytes::new(),
            last_exchange: None,
            stats: Default::default(),
            reply: None,
        }
    }

    /// The next delivery tag (1, 2, …).
    pub fn next_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// The tag the next delivery will get, without taking it: what a direct reply-to
    /// delivery carries (RabbitMQ's `deliver_reply` does not advance the channel's tag;
    /// the reply is no-ack, so no ack can name it).
    pub fn peek_tag(&self) -> u64 {
        self.next_tag + 1
    }

    /// A snapshot for inspection (the management API).
    pub fn info(&self) -> crate::ops::ChannelInfo {
        crate::ops::ChannelInfo {
            number: self.id,
            consumers: self.consumers.len(),
            unacked: self.unacked.len(),
            prefetch_count: self.prefetch_count,
            global_prefetch_count: self.global_prefetch,
            confirm: self.confirm,
            transactional: self.tx.is_some(),
            closing: self.closing,
            unconfirmed: self.publish_seq.saturating_sub(self.confirmed),
            uncommitted_publishes: self.tx.as_ref().map_or(0, |ops| {
                ops.iter()
                    .filter(|o| matches!(o, TxOp::Publish { .. }))
                    .count()
            }),
            uncommitted_acks: self.tx.as_ref().map_or(0, |ops| {
                ops.iter()
                    .filter(|o| !matches!(o, TxOp::Publish { .. }))
                    .count()
            }),
        }
    }

    /// Whether the channel as a whole may take one more delivery.
    pub fn can_deliver(&self) -> bool {
        !self.closing
            && (self.global_prefetch == 0 || self.unacked.len() < usize::from(self.global_prefetch))
    }

    pub fn consumer(&self, tag: &[u8]) -> Option<&ChannelConsumer> {
        self.consumers.iter().find(|c| &c.tag[..] == tag)
    }

    pub fn remove_consumer(&mut self, tag: &[u8]) -> Option<ChannelConsumer> {
        let at = self.consumers.iter().position(|c| &c.tag[..] == tag)?;
        Some(self.consumers.swap_remove(at))
    }

    /// Takes the unacked deliveries an ack/nack/reject of `tag` covers. `multiple`
    /// covers every tag up to and including `tag` (0 with multiple = all). None when
    /// the tag is unknown (406 PRECONDITION_FAILED in RabbitMQ).
    pub fn take_acked(&mut self, tag: u64, multiple: bool, into: &mut Vec<Unacked>) -> Option<()> {
        if multiple {
            if tag == 0 {
                into.extend(self.unacked.drain(..));
                return Some(());
            }
            if !self.unacked.iter().any(|u| u.tag == tag) {
                // RabbitMQ accepts multiple=true for a tag at or below the last one
                // delivered, acking what is outstanding up to it.
                if tag > self.next_tag {
                    return None;
                }
            }
            let n = self.unacked.partition_point(|u| u.tag <= tag);
            into.extend(self.unacked.drain(..n));
            Some(())
        } else {
            let at = self.unacked.binary_search_by_key(&tag, |u| u.tag).ok()?;
            into.extend(self.unacked.remove(at));
            Some(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::queue::QueueProps;
    use crate::broker::{Broker, QueueDecl, VhostId};
    use crate::proto::FieldTable;

    #[test]
    fn short_keys_are_copies_inline_up_to_63_bytes() {
        for n in [0usize, 1, 63, 64, 255] {
            let s: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let frame = Bytes::from(s.clone());
            let k = ShortKey::new(&frame);
            assert_eq!(k.as_bytes(), &s[..]);
            assert!(k.is(&s));
            assert!(!k.is(b"other"));
            assert_eq!(matches!(k, ShortKey::Inline { .. }), n <= 63, "{n}");
            // A copy: the frame's buffer is not shared with the key.
            assert!(n == 0 || k.as_bytes().as_ptr() != frame.as_ptr());
        }
    }

    fn chan_with(tags: &[u64]) -> Channel {
        let mut b = Broker::new();
        let _ = QueueProps {
            durable: false,
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        let d = QueueDecl::named("q");
        let q = b
            .declare_queue(VhostId::DEFAULT, &d, 0, |_| Ok(()))
            .unwrap()
            .id;
        let mut c = Channel::new(1);
        let now = Instant::now();
        for &t in tags {
            c.next_tag = t;
            let msg = Message::new(b"", b"", &[0, 0], Bytes::new(), None);
            c.unacked.push_back(Unacked {
                tag: t,
                queue: q,
                durable: 0,
                consumer: 1,
                msg,
                seq: t,
                delivered_at: now,
            });
        }
        c
    }

    fn tags(v: &[Unacked]) -> Vec<u64> {
        v.iter().map(|u| u.tag).collect()
    }

    #[test]
    fn ack_single_multiple_and_all() {
        let mut c = chan_with(&[1, 2, 3, 4, 5]);
        let mut got = Vec::new();
        c.take_acked(3, false, &mut got).unwrap();
        assert_eq!(tags(&got), vec![3]);
        got.clear();
        assert!(
            c.take_acked(3, false, &mut got).is_none(),
            "double ack is unknown"
        );
        c.take_acked(4, true, &mut got).unwrap();
        assert_eq!(tags(&got), vec![1, 2, 4]);
        got.clear();
        c.take_acked(0, true, &mut got).unwrap();
        assert_eq!(tags(&got), vec![5]);
        assert!(c.take_acked(9, true, &mut got).is_none());
    }

    #[test]
    fn global_prefetch_limits_the_channel() {
        let mut c = chan_with(&[1, 2]);
        c.global_prefetch = 2;
        assert!(!c.can_deliver());
        c.global_prefetch = 3;
        assert!(c.can_deliver());
        c.closing = true;
        assert!(!c.can_deliver());
    }
}
