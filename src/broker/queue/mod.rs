//! A queue: its ready messages (in a queue kind), its consumers lined up as dispatch
//! takes them (round-robin, by `x-priority`, or single active consumer first: see
//! [`ConsumerOrder`]), and the counts that declare-ok, purge and inspection report.
//!
//! Ready messages carry a per-queue sequence number so that a message returned by a
//! consumer (nack, reject, channel closed) goes back to its original position, as
//! RabbitMQ's requeue does. Unacked messages live in the channels that received them,
//! not here; the queue only counts them per consumer for `basic.qos`.
//!
//! The queue-kind seam: `QueueKind` owns the ready storage and answers push, pop,
//! requeue-at-position, purge, length and iteration; a `match` over its variants
//! ([`classic::ClassicQueue`], [`priority::PriorityQueue`] for `x-max-priority`), where
//! an append-only stream slots in next (as RabbitMQ's `rabbit_queue_type` and LavinMQ's
//! queue factory do). Nothing outside this module reaches the ready storage: the rest
//! of the broker uses `Queue`'s methods. Which consumer gets the next message, and whether it may, is the dispatch
//! policy in [`super::dispatch`], not here. Neither touches the store or a connection.

pub mod classic;
pub mod priority;

use bytes::Bytes;

use crate::message::Message;
use crate::proto::FieldTable;

use super::{ExchangeId, VhostId};
use classic::ClassicQueue;
use priority::PriorityQueue;

/// A message waiting in a queue: 16 bytes, as queued messages dominate memory.
#[derive(Debug, Clone)]
pub struct Ready {
    pub msg: Message,
    /// The per-queue sequence number, with [`REDELIVERED`] as its top bit and a quorum
    /// queue's delivery count in the bits below it ([`COUNT_SHIFT`]).
    seq: u64,
}

/// Top bit of `Ready::seq`: the message was delivered before. Sequence numbers count
/// publishes to one queue, so they never reach 2^47 (a million a second for 4 years).
const REDELIVERED: u64 = 1 << 63;

/// Where a quorum queue's delivery count (`x-delivery-count`: how often the message
/// came back) sits in `Ready::seq`: 16 bits between the sequence number and
/// [`REDELIVERED`], so that it travels with the message's position into the channel's
/// unacked entry and back on requeue, at no cost in memory. Always 0 in classic queues.
const COUNT_SHIFT: u32 = 47;
const COUNT_MAX: u64 = (1 << 16) - 1;
const SEQ_MASK: u64 = (1 << COUNT_SHIFT) - 1;

impl Ready {
    /// `seq` is a position as [`Ready::token`] gives it (a plain sequence number is one
    /// with a delivery count of 0).
    pub fn new(msg: Message, seq: u64, redelivered: bool) -> Ready {
        let flag = if redelivered { REDELIVERED } else { 0 };
        Ready {
            msg,
            seq: (seq & !REDELIVERED) | flag,
        }
    }

    /// Position in the queue's publish order.
    pub fn seq(&self) -> u64 {
        self.seq & SEQ_MASK
    }

    /// The position with the delivery count: what a delivery keeps (`Unacked::seq`) and
    /// hands back to `Queue::requeue`.
    pub fn token(&self) -> u64 {
        self.seq & !REDELIVERED
    }

    /// How often this message came back to its (quorum) queue.
    pub fn delivery_count(&self) -> u64 {
        delivery_count(self.seq)
    }

    pub fn redelivered(&self) -> bool {
        self.seq & REDELIVERED != 0
    }
}

/// The delivery count in a position token (see [`Ready::token`]).
pub fn delivery_count(token: u64) -> u64 {
    (token & !REDELIVERED) >> COUNT_SHIFT
}

/// `token` with its delivery count one higher (it stays at the 16-bit maximum).
pub fn count_return(token: u64) -> u64 {
    let n = (delivery_count(token) + 1).min(COUNT_MAX);
    (token & SEQ_MASK) | (n << COUNT_SHIFT)
}

/// `token` with delivery count `n` (recovery: the count the store kept).
pub fn with_delivery_count(token: u64, n: u64) -> u64 {
    (token & SEQ_MASK) | (n.min(COUNT_MAX) << COUNT_SHIFT)
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
    /// `x-priority` (default 0). A basic.consume may send any integer; one beyond i32
    /// is held at i32's bounds (it keeps its order against every sane priority). Fits
    /// in padding: `Consumer` stays at 64 bytes (its arguments, for the API, are kept by
    /// the channel: `ChannelConsumer::args`).
    pub priority: i32,
}

/// How a queue picks among its consumers (`Queue::order`): chosen at consume time so
/// that the dispatch loop decides once per call, never per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumerOrder {
    /// Round-robin over every consumer: every consumer has the default priority.
    #[default]
    RoundRobin,
    /// Some consumer has an `x-priority`: the consumers are sorted highest first
    /// (registration order within one priority) and a message goes to the highest
    /// group with a consumer that can take it, round-robin within the group.
    Priority,
    /// `x-single-active-consumer`: only `consumers[0]` receives; the rest wait in the
    /// order they take over in (see [`Queue::insert_consumer`]).
    SingleActive,
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

/// What `x-overflow` does when a length limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (dead-letter) the oldest ready messages (the default).
    #[default]
    DropHead,
    /// Refuse the new message: nack for a confirming publisher.
    RejectPublish,
    /// Refuse it and dead-letter it.
    RejectPublishDlx,
}

/// The queue arguments Warren acts on (TTL, dead-lettering, length limits, expiry) and
/// the state they need. Boxed behind [`Queue::features`], which is None for a queue
/// without any of them: such a queue's per-message path tests one pointer.
#[derive(Debug, Default, Clone)]
pub struct Features {
    /// `x-dead-letter-exchange` (the empty string names the default exchange).
    pub dlx: Option<Bytes>,
    /// `x-dead-letter-routing-key`.
    pub dlrk: Option<Bytes>,
    /// `x-message-ttl` in milliseconds.
    pub ttl: Option<u64>,
    /// `x-max-length`.
    pub max_len: Option<u64>,
    /// `x-max-length-bytes` (bodies of ready messages).
    pub max_bytes: Option<u64>,
    pub overflow: Overflow,
    /// `x-expires` in milliseconds.
    pub expires: Option<u64>,
    /// A quorum queue's `x-delivery-limit` (RabbitMQ accepts any integer; a negative
    /// one dead-letters at the first return).
    pub delivery_limit: Option<i64>,
    /// The message TTLs in force before a policy changed `ttl`: (until epoch ms, TTL)
    /// in change order. RabbitMQ fixes a message's expiry when it arrives, so a message
    /// that arrived before `until` keeps that entry's TTL (see [`Features::ttl_at`]).
    /// Empty unless a policy changed the TTL of a queue holding messages.
    pub ttl_before: Vec<(u64, Option<u64>)>,
    /// Body bytes of the ready messages (kept while the features exist).
    pub bytes: u64,
    /// The head-expiry deadline (epoch ms) a timer is armed for; 0 = none.
    pub armed: u64,
    /// When the queue was last used (epoch ms), for `x-expires`.
    pub last_used: u64,
    /// An `x-expires` timer entry is in the heap (one at a time: a client that declares
    /// the queue in a loop moves `last_used`, not the heap).
    pub unused_armed: bool,
    /// A quorum queue's `x-dead-letter-strategy: at-least-once`, in effect (it needs a
    /// dead-letter exchange and `x-overflow: reject-publish`, as in RabbitMQ).
    pub at_least_once: bool,
    /// Messages being dead-lettered at-least-once that no target queue has yet (see
    /// `super::at_least_once`); they count against the length limits.
    pub dlx_pending: std::collections::VecDeque<super::at_least_once::Pending>,
    /// Body bytes of `dlx_pending`.
    pub dlx_bytes: u64,
    /// A retry timer for `dlx_pending` is in the heap.
    pub dlx_retry_armed: bool,
}

impl Features {
    /// The features `args` (already validated by `args::validate_queue_declare`) ask
    /// for; None when they ask for none.
    pub fn from_args(args: &FieldTable) -> Option<Box<Features>> {
        if args.is_empty() {
            return None;
        }
        let int = |k: &[u8]| {
            args.get(k)
                .and_then(|v| v.as_i64())
                .and_then(|n| u64::try_from(n).ok())
        };
        let string = |k: &[u8]| match args.get(k) {
            Some(crate::proto::FieldValue::LongStr(s)) => Some(s.clone()),
            _ => None,
        };
        let overflow = match args.get(b"x-overflow").and_then(|v| v.as_bytes()) {
            Some(b"reject-publish") => Overflow::RejectPublish,
            Some(b"reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
        let at_least_once = string(b"x-dead-letter-exchange").is_some()
            && overflow == Overflow::RejectPublish
            && string(b"x-dead-letter-strategy").is_some_and(|s| &s[..] == b"at-least-once");
        let f = Features {
            at_least_once,
            dlx: string(b"x-dead-letter-exchange"),
            dlrk: string(b"x-dead-letter-routing-key"),
            ttl: int(b"x-message-ttl"),
            max_len: int(b"x-max-length"),
            max_bytes: int(b"x-max-length-bytes"),
            overflow,
            expires: int(b"x-expires"),
            delivery_limit: args.get(b"x-delivery-limit").and_then(|v| v.as_i64()),
            ..Features::default()
        };
        let any = f.dlx.is_some()
            || f.ttl.is_some()
            || f.max_len.is_some()
            || f.max_bytes.is_some()
            || f.expires.is_some()
            || f.delivery_limit.is_some();
        any.then(|| Box::new(f))
    }

    /// Whether a quorum queue message that came back `count` times is beyond
    /// `x-delivery-limit` (RabbitMQ's `rabbit_fifo`: dead-lettered once the count
    /// exceeds the limit; a limit that is not an integer never is).
    pub fn beyond_delivery_limit(&self, count: u64) -> bool {
        self.delivery_limit
            .is_some_and(|l| i128::from(count) > i128::from(l))
    }

    /// The queue TTL that applies to a message that arrived at `arrival_ms`.
    pub fn ttl_at(&self, arrival_ms: u64) -> Option<u64> {
        self.ttl_before
            .iter()
            .find(|(until, _)| arrival_ms < *until)
            .map_or(self.ttl, |(_, ttl)| *ttl)
    }

    /// Whether one more message of `len` body bytes goes beyond a length limit.
    /// Messages waiting to be dead-lettered at-least-once count against the limits, as
    /// in RabbitMQ's `rabbit_fifo:is_over_limit`.
    pub fn would_overflow(&self, count: usize, len: usize) -> bool {
        let count = count as u64 + self.dlx_pending.len() as u64;
        let bytes = self.bytes + self.dlx_bytes;
        self.max_len.is_some_and(|m| count + 1 > m)
            || self.max_bytes.is_some_and(|m| bytes + len as u64 > m)
    }

    /// A quorum queue's `reject-publish` test (`rabbit_fifo:is_over_limit`): whether
    /// its ready messages (`count`) and those waiting to be dead-lettered are already
    /// beyond a limit, before the new message is counted.
    pub fn over_limit_soft(&self, count: usize) -> bool {
        let count = count as u64 + self.dlx_pending.len() as u64;
        self.max_len.is_some_and(|m| count > m)
            || self
                .max_bytes
                .is_some_and(|m| self.bytes + self.dlx_bytes > m)
    }

    /// Whether the ready messages (`count` of them) are beyond a length limit.
    pub fn over_limit(&self, count: usize) -> bool {
        self.max_len.is_some_and(|m| count as u64 > m)
            || self.max_bytes.is_some_and(|m| self.bytes > m)
    }
}

/// The kinds of queue: each owns its ready messages and answers the same questions.
/// An enum, not a trait object: one `match` per call, inlined, nothing per message.
/// The priority kind is boxed so that `Queue` stays the size it was.
#[derive(Debug)]
enum QueueKind {
    Classic(ClassicQueue),
    Priority(Box<PriorityQueue>),
}

impl QueueKind {
    /// The kind a queue's arguments ask for: a priority queue for an integer
    /// `x-max-priority` of 1 or more (validated to 0..=255 on declare; RabbitMQ's
    /// `rabbit_priority_queue:priorities/1` caps it at 255). `x-max-priority` 0 is one
    /// level: a classic queue.
    fn of(arguments: &FieldTable) -> QueueKind {
        if arguments.is_empty() {
            return QueueKind::Classic(ClassicQueue::default());
        }
        let max = arguments
            .get(b"x-max-priority")
            .and_then(|v| v.as_i64())
            .filter(|&n| n > 0)
            .map(|n| u8::try_from(n).unwrap_or(u8::MAX));
        match max {
            Some(max) => QueueKind::Priority(Box::new(PriorityQueue::new(max))),
            None => QueueKind::Classic(ClassicQueue::default()),
        }
    }

    #[inline]
    fn push(&mut self, r: Ready) {
        match self {
            QueueKind::Classic(c) => c.push(r),
            QueueKind::Priority(p) => p.push(r),
        }
    }

    #[inline]
    fn requeue(&mut self, r: Ready) {
        match self {
            QueueKind::Classic(c) => c.requeue(r),
            QueueKind::Priority(p) => p.requeue(r),
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<Ready> {
        match self {
            QueueKind::Classic(c) => c.pop(),
            QueueKind::Priority(p) => p.pop(),
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        match self {
            QueueKind::Classic(c) => c.is_empty(),
            QueueKind::Priority(p) => p.is_empty(),
        }
    }

    fn peek(&self) -> Option<&Message> {
        match self {
            QueueKind::Classic(c) => c.peek(),
            QueueKind::Priority(p) => p.peek(),
        }
    }

    #[inline]
    fn len(&self) -> usize {
        match self {
            QueueKind::Classic(c) => c.len(),
            QueueKind::Priority(p) => p.len(),
        }
    }

    /// Boxed: a walk over the whole queue (purge, inspection), never per message.
    fn messages(&self) -> Box<dyn Iterator<Item = &Message> + '_> {
        match self {
            QueueKind::Classic(c) => Box::new(c.messages()),
            QueueKind::Priority(p) => Box::new(p.messages()),
        }
    }

    fn clear(&mut self) {
        match self {
            QueueKind::Classic(c) => c.clear(),
            QueueKind::Priority(p) => p.clear(),
        }
    }
}

#[derive(Debug)]
pub struct Queue {
    pub(super) gen: u32,
    /// The vhost it belongs to (its name is unique there).
    pub vhost: VhostId,
    pub name: Bytes,
    pub props: QueueProps,
    /// The connection that owns an exclusive queue.
    /// A u32, not the slab key's usize, to keep `Queue` at 232 bytes with `features`:
    /// connection keys are dense slab indexes of open sockets, far below 2^32 (a key
    /// that did not fit would make the queue nobody's, locked rather than shared).
    pub owner: Option<u32>,
    /// The ready messages, in the queue kind's storage.
    kind: QueueKind,
    /// Large unacked sets being returned over several loop turns that have already
    /// placed messages here (see `Server::returns`): while non-zero the queue is not
    /// dispatched, so consumers see the whole set back in order or none of it, as when
    /// RabbitMQ's queue process handles a channel's requeue in one step. Meanwhile
    /// `message_count` counts what is back so far, and basic.get is not held (it takes
    /// the oldest message back so far: a synchronous reply cannot wait for later turns).
    held: u32,
    next_seq: u64,
    /// Round-robin order; read and changed by the dispatch policy and consumer methods.
    pub(super) consumers: Vec<Consumer>,
    /// Index of the consumer that gets the next delivery (round-robin). A u32 (no
    /// queue has 4 billion consumers) keeps `Queue` at its size from before the vhost id.
    pub(super) rr: u32,
    /// An auto-delete queue is deleted when its last consumer goes, once it had one.
    pub had_consumer: bool,
    /// Round-robin, consumer priorities or single active consumer; one byte that found
    /// room in padding (`Queue` stays at 232 bytes).
    pub(super) order: ConsumerOrder,
    /// `x-queue-type: quorum`: every message is kept in the store and counts its
    /// returns (`x-delivery-count`, `x-delivery-limit`); see `super::quorum`.
    pub quorum: bool,
    /// Exchanges that have at least one binding to this queue (with repeats).
    pub(super) sources: Vec<ExchangeId>,
    /// Id of a durable queue in the store's records; 0 = not persisted.
    pub durable_id: u32,
    /// Set while the queue sits in the broker's dirty list.
    pub(super) dirty: bool,
    /// Last publish that routed here (dedupes a message that reaches us by several paths).
    pub(super) stamp: u64,
    /// Message counters (publish, deliver, get, ack, ...), boxed on first use so an
    /// idle queue costs 8 bytes (see `crate::counters`).
    pub stats: crate::counters::ObjectStats,
    /// TTL, dead-lettering, length limits, expiry: None for a queue without them (and
    /// without a message carrying its own `expiration`).
    pub features: Option<Box<Features>>,
}

impl Queue {
    pub(super) fn new(
        gen: u32,
        vhost: VhostId,
        name: Bytes,
        props: QueueProps,
        owner: Option<usize>,
    ) -> Queue {
        let kind = QueueKind::of(&props.arguments);
        Queue {
            gen,
            vhost,
            name,
            props,
            owner: owner.map(|o| u32::try_from(o).unwrap_or(u32::MAX)),
            kind,
            held: 0,
            next_seq: 0,
            consumers: Vec::new(),
            rr: 0,
            had_consumer: false,
            order: ConsumerOrder::RoundRobin,
            quorum: false,
            sources: Vec::new(),
            durable_id: 0,
            dirty: false,
            stamp: 0,
            stats: None,
            features: None,
        }
    }

    // ----- ready messages ------------------------------------------------------------

    /// Publishes: appends a newly routed message.
    #[inline]
    pub fn push(&mut self, msg: Message) {
        self.push_recovered(msg, false);
    }

    /// Appends a message read back from the store at startup; `redelivered` when the
    /// store recorded a delivery of it before the restart.
    #[inline]
    pub fn push_recovered(&mut self, msg: Message, redelivered: bool) {
        self.push_counted(msg, redelivered, 0);
    }

    /// [`Queue::push_recovered`] for a quorum queue's message that had come back
    /// `count` times before the restart.
    #[inline]
    pub fn push_counted(&mut self, msg: Message, redelivered: bool, count: u64) {
        let seq = with_delivery_count(self.next_seq & SEQ_MASK, count);
        self.next_seq += 1;
        if let Some(f) = self.features.as_mut() {
            f.bytes += msg.body_len() as u64;
        }
        self.kind.push(Ready::new(msg, seq, redelivered));
    }

    /// Returns a message that was delivered but not acked to its original position
    /// (`seq`, from [`Ready::token`] or [`Ready::seq`]), marked redelivered.
    #[inline]
    pub fn requeue(&mut self, msg: Message, seq: u64) {
        if let Some(f) = self.features.as_mut() {
            f.bytes += msg.body_len() as u64;
        }
        self.kind.requeue(Ready::new(msg, seq, true));
    }

    /// Takes the next message to deliver, for a consumer or a basic.get (the dispatch
    /// policy in [`super::dispatch`] decides who may take it).
    #[inline]
    pub fn next_delivery(&mut self) -> Option<Ready> {
        let r = self.kind.pop();
        if let (Some(f), Some(r)) = (self.features.as_mut(), r.as_ref()) {
            f.bytes = f.bytes.saturating_sub(r.msg.body_len() as u64);
        }
        r
    }

    /// The message [`Queue::next_delivery`] would take, left in place.
    pub fn peek(&self) -> Option<&Message> {
        self.kind.peek()
    }

    /// When the head expires (epoch ms), if it can: per-message expiry is looked at only
    /// at the head, as RabbitMQ does.
    pub fn head_expiry(&self) -> Option<u64> {
        let t = self.peek()?.timing()?;
        let ttl = self.features.as_ref().and_then(|f| f.ttl_at(t.arrival_ms));
        t.expiry(ttl)
    }

    /// The features, created (with the ready bytes counted) when the queue had none: a
    /// message with its own `expiration` arrived in a queue without arguments.
    pub fn features_mut(&mut self) -> &mut Features {
        let bytes = if self.features.is_none() {
            self.ready_bytes()
        } else {
            0
        };
        self.features.get_or_insert_with(|| {
            Box::new(Features {
                bytes,
                ..Features::default()
            })
        })
    }

    /// Whether no message is ready.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.kind.is_empty()
    }

    /// Number of ready messages.
    #[inline]
    pub fn len(&self) -> usize {
        self.kind.len()
    }

    /// Every ready message, in no particular order.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.kind.messages()
    }

    /// For a priority queue, how many messages can be delivered before the head moves
    /// to a lower priority, whose head must be looked at for expiry first (see
    /// `dispatch::dispatch_queue`); None for a classic queue, whose head never moves
    /// that way.
    pub fn priority_run(&self) -> Option<usize> {
        match &self.kind {
            QueueKind::Classic(_) => None,
            QueueKind::Priority(p) => Some(p.top_len()),
        }
    }

    /// Drops every ready message, handing each to `settle` first (the caller releases
    /// its store reference); returns how many.
    pub fn purge(&mut self, mut settle: impl FnMut(&Message)) -> u32 {
        let n = self.message_count();
        for m in self.kind.messages() {
            settle(m);
        }
        self.kind.clear();
        if let Some(f) = self.features.as_mut() {
            f.bytes = 0;
        }
        n
    }

    // ----- holding while a large unacked set comes back ------------------------------

    /// A large unacked set started coming back into this queue: do not dispatch it.
    pub fn hold(&mut self) {
        self.held += 1;
    }

    /// A set that was coming back is complete.
    pub fn release(&mut self) {
        self.held = self.held.saturating_sub(1);
    }

    /// Whether part of a large unacked set is back and the rest is still to come.
    #[inline]
    pub fn is_held(&self) -> bool {
        self.held > 0
    }

    // ----- counts --------------------------------------------------------------------

    /// This queue's message counters, allocated on first use (see `crate::counters`).
    #[inline]
    pub fn counting(&mut self) -> &mut crate::counters::MsgCounters {
        crate::counters::counting(&mut self.stats)
    }

    /// Number of ready messages (what queue.declare-ok and purge report).
    pub fn message_count(&self) -> u32 {
        u32::try_from(self.len()).unwrap_or(u32::MAX)
    }

    pub fn consumer_count(&self) -> u32 {
        u32::try_from(self.consumers.len()).unwrap_or(u32::MAX)
    }

    /// Deliveries to this queue's consumers not yet acked. basic.get deliveries are not
    /// counted: they are tracked by their channel only (`Unacked::consumer` 0).
    pub fn unacked_count(&self) -> u64 {
        self.consumers.iter().map(|c| u64::from(c.unacked)).sum()
    }

    /// Body bytes of the ready messages, in memory or paged out. Walks the queue: for
    /// inspection, not for a hot path.
    pub fn ready_bytes(&self) -> u64 {
        self.messages().map(|m| m.body_len() as u64).sum()
    }

    // ----- consumers -----------------------------------------------------------------

    /// The consumers, in round-robin order (for inspection).
    pub fn consumers(&self) -> impl Iterator<Item = &Consumer> {
        self.consumers.iter()
    }

    pub fn consumer_mut(&mut self, id: u64) -> Option<&mut Consumer> {
        self.consumers.iter_mut().find(|c| c.id == id)
    }

    /// Removes a consumer; returns it. Keeps the round-robin position stable. On a
    /// single-active-consumer queue, removing `consumers[0]` makes the next in line
    /// (now at index 0) the active one. A priority queue whose last prioritised
    /// consumer left goes back to plain round-robin.
    pub fn remove_consumer(&mut self, id: u64) -> Option<Consumer> {
        let at = self.consumers.iter().position(|c| c.id == id)?;
        let c = self.consumers.remove(at);
        if at < self.rr as usize {
            self.rr -= 1;
        }
        if self.rr as usize >= self.consumers.len() {
            self.rr = 0;
        }
        if self.order == ConsumerOrder::Priority && self.consumers.iter().all(|c| c.priority == 0) {
            self.order = ConsumerOrder::RoundRobin;
        }
        Some(c)
    }

    /// Adds a consumer where RabbitMQ 3.10 would line it up. Round-robin with the
    /// default priority: at the end (what a queue without priorities always did). With
    /// a priority: after every consumer of the same or a higher priority, and the queue
    /// switches to [`ConsumerOrder::Priority`]. Single active consumer: the first one
    /// becomes active (index 0); later ones wait behind it, a classic queue's by
    /// priority then registration (`rabbit_queue_consumers:get_consumer`), a quorum
    /// queue's by registration alone (`rabbit_fifo`'s waiting list).
    pub fn insert_consumer(&mut self, c: Consumer) {
        let by_priority = |cs: &[Consumer], from: usize| {
            from + cs[from..]
                .iter()
                .position(|o| o.priority < c.priority)
                .unwrap_or(cs.len() - from)
        };
        let at = match self.order {
            ConsumerOrder::SingleActive if self.consumers.is_empty() || self.quorum => {
                self.consumers.len()
            }
            ConsumerOrder::SingleActive => by_priority(&self.consumers, 1),
            ConsumerOrder::RoundRobin if c.priority == 0 => self.consumers.len(),
            ConsumerOrder::RoundRobin | ConsumerOrder::Priority => {
                self.order = ConsumerOrder::Priority;
                by_priority(&self.consumers, 0)
            }
        };
        // `rr` keeps pointing at the consumer it pointed at.
        if !self.consumers.is_empty() && at <= self.rr as usize {
            self.rr += 1;
        }
        self.consumers.insert(at, c);
    }

    /// The consumer that receives on a single-active-consumer queue (None on other
    /// queues, or when it has no consumer).
    pub fn single_active(&self) -> Option<&Consumer> {
        if self.order == ConsumerOrder::SingleActive {
            self.consumers.first()
        } else {
            None
        }
    }

    /// Whether this is a single-active-consumer queue.
    pub fn is_single_active(&self) -> bool {
        self.order == ConsumerOrder::SingleActive
    }

    /// Makes this a single-active-consumer queue (at creation, from its arguments).
    pub(super) fn set_single_active(&mut self) {
        self.order = ConsumerOrder::SingleActive;
    }

    /// How dispatch picks among the consumers.
    #[inline]
    pub fn order(&self) -> ConsumerOrder {
        self.order
    }

    /// Whether an exclusive consumer holds the queue.
    pub fn has_exclusive_consumer(&self) -> bool {
        self.consumers.iter().any(|c| c.exclusive)
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
        Queue::new(0, VhostId::DEFAULT, Bytes::from_static(b"q"), props, None)
    }

    /// Takes every ready message in delivery order: (body, seq, redelivered).
    fn take_all(q: &mut Queue) -> Vec<(Vec<u8>, u64, bool)> {
        std::iter::from_fn(|| q.next_delivery())
            .map(|r| (r.msg.body().as_slice().to_vec(), r.seq(), r.redelivered()))
            .collect()
    }

    #[test]
    fn requeue_restores_original_order() {
        let mut q = q();
        for b in ["a", "b", "c", "d", "e"] {
            q.push(msg(b));
        }
        // Deliver a, b, c; then d stays ready. Requeue c, then a: order must be a c d e... plus b later.
        let a = q.next_delivery().unwrap();
        let b = q.next_delivery().unwrap();
        let c = q.next_delivery().unwrap();
        let seq = c.seq();
        q.requeue(c.msg, seq);
        let seq = a.seq();
        q.requeue(a.msg, seq);
        let seq = b.seq();
        q.requeue(b.msg, seq);
        assert_eq!(q.message_count(), 5);
        let got = take_all(&mut q);
        let bodies: Vec<&[u8]> = got.iter().map(|(b, _, _)| &b[..]).collect();
        assert_eq!(bodies, [b"a", b"b", b"c", b"d", b"e"]);
        assert!(got.iter().take(3).all(|g| g.2));
        assert!(!got[3].2);
        assert_eq!(got[3].1, 3);
        assert_eq!(std::mem::size_of::<Ready>(), 16);
        // The dispatch loop walks consumers: one cache line each.
        assert_eq!(std::mem::size_of::<Consumer>(), 64);
        // Memory per empty queue (benches/memory.py): the vhost id fitted in by making
        // `rr` a u32; a new field should find room the same way. 232 since issue 10: the
        // statistics counters are boxed and allocated only once a queue counts something,
        // but the pointer to them is 8 bytes that found no padding to hide in.
        assert!(
            std::mem::size_of::<Queue>() <= 232,
            "{}",
            std::mem::size_of::<Queue>()
        );
    }

    #[test]
    fn interleaved_sets_return_in_order() {
        // Two consumers got alternate messages; each set comes back newest first.
        let mut q = q();
        let names = ["0", "1", "2", "3", "4", "5", "6", "7"];
        for b in names {
            q.push(msg(b));
        }
        let all: Vec<Ready> = std::iter::from_fn(|| q.next_delivery()).collect();
        q.push(msg("8"));
        for parity in [1, 0] {
            for r in all.iter().rev().filter(|r| r.seq() % 2 == parity) {
                q.requeue(r.msg.clone(), r.seq());
            }
        }
        assert_eq!(q.message_count(), 9);
        let got = take_all(&mut q);
        let seqs: Vec<u64> = got.iter().map(|g| g.1).collect();
        assert_eq!(seqs, (0..9).collect::<Vec<u64>>());
        assert!(got.iter().take(8).all(|g| g.2));
        assert!(!got[8].2, "the message never delivered is not redelivered");
        assert!(q.is_empty());
        let mut settled = 0;
        q.push(msg("9"));
        q.requeue(all[0].msg.clone(), 0);
        q.requeue(all[5].msg.clone(), 5);
        assert_eq!(q.purge(|_| settled += 1), 3);
        assert_eq!((settled, q.len()), (3, 0));
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
                priority: 0,
            });
        }
        q.rr = 2;
        assert!(q.remove_consumer(0).is_some());
        assert_eq!(q.rr, 1);
        assert!(q.remove_consumer(2).is_some());
        assert_eq!(q.rr, 0);
        assert!(q.remove_consumer(7).is_none());
    }

    fn consumer(id: u64, priority: i32) -> Consumer {
        Consumer {
            id,
            conn: 0,
            channel: 1,
            tag: Bytes::new(),
            no_ack: true,
            exclusive: false,
            prefetch: 0,
            unacked: 0,
            priority,
        }
    }

    fn ids(q: &Queue) -> Vec<u64> {
        q.consumers().map(|c| c.id).collect()
    }

    #[test]
    fn consumers_line_up_by_priority_and_single_active_keeps_its_head() {
        let mut q = q();
        q.insert_consumer(consumer(1, 0));
        q.insert_consumer(consumer(2, 0));
        assert_eq!(q.order(), ConsumerOrder::RoundRobin, "default priorities");
        q.rr = 1;
        q.insert_consumer(consumer(3, 5));
        q.insert_consumer(consumer(4, -1));
        q.insert_consumer(consumer(5, 5));
        assert_eq!(ids(&q), [3, 5, 1, 2, 4]);
        assert_eq!(q.order(), ConsumerOrder::Priority);
        assert_eq!(q.rr, 3, "rr still points at consumer 2");
        q.remove_consumer(3);
        q.remove_consumer(5);
        q.remove_consumer(4);
        assert_eq!(
            q.order(),
            ConsumerOrder::RoundRobin,
            "no prioritised one left"
        );

        // Single active: the first stays at the head whatever comes after; a classic
        // queue lines the waiting ones up by priority, a quorum queue by arrival.
        let mut q = self::q();
        q.set_single_active();
        q.insert_consumer(consumer(1, 0));
        q.insert_consumer(consumer(2, 1));
        q.insert_consumer(consumer(3, 9));
        q.insert_consumer(consumer(4, 1));
        assert_eq!(ids(&q), [1, 3, 2, 4]);
        assert_eq!(q.single_active().map(|c| c.id), Some(1));
        q.remove_consumer(1);
        assert_eq!(q.single_active().map(|c| c.id), Some(3));
        let mut q = self::q();
        q.quorum = true;
        q.set_single_active();
        for (id, p) in [(1, 0), (2, 1), (3, 9)] {
            q.insert_consumer(consumer(id, p));
        }
        assert_eq!(ids(&q), [1, 2, 3]);
        assert_eq!(q.order(), ConsumerOrder::SingleActive);
    }

    #[test]
    fn counts_and_recovered_messages() {
        let mut q = q();
        q.push_recovered(msg("ab"), true);
        q.push(msg("cde"));
        assert_eq!((q.message_count(), q.ready_bytes()), (2, 5));
        for (id, unacked) in [(1, 3), (2, 4)] {
            q.consumers.push(Consumer {
                id,
                conn: 0,
                channel: 1,
                tag: Bytes::new(),
                no_ack: false,
                exclusive: false,
                prefetch: 0,
                unacked,
                priority: 0,
            });
        }
        assert_eq!((q.consumer_count(), q.unacked_count()), (2, 7));
        let got = take_all(&mut q);
        assert_eq!(
            got,
            [(b"ab".to_vec(), 0, true), (b"cde".to_vec(), 1, false)]
        );
        q.hold();
        q.hold();
        q.release();
        assert!(q.is_held());
        q.release();
        q.release();
        assert!(!q.is_held());
    }
}
