//! The dispatch policy, written once: which consumer of a queue gets the next message
//! (round-robin; the highest `x-priority` group that can take it; or the single active
//! consumer alone, by `Queue::order`, decided once per call), whether it may take it now (per-consumer prefetch, the channel's
//! global prefetch, backpressure on a congested out-queue), and the one function,
//! [`deliver`], that turns a message taken from a queue into a delivery. The dispatch
//! phase ([`dispatch_queue`], basic.deliver) and basic.get ([`get`], basic.get-ok) both
//! go through it.
//!
//! Doors: this is the one place in `broker/` that sees connections, because a delivery
//! is half queue and half channel. The server passes its parts in (`&mut Broker`,
//! `&mut Slab<Connection>`). On the broker side it uses `Queue`'s methods, the consumer
//! list and the store references of what it delivers; on the connection side it only
//! touches what a delivery changes: the channel's delivery tags and unacked list, frames
//! appended to the out-queue, and the `throttled` and `touched` flags. It never reads
//! input, never closes anything and never touches a socket.

use bytes::Bytes;
use slab::Slab;
use std::time::Instant;

use crate::conn::channel::Unacked;
use crate::conn::Connection;
use crate::error::{not_found, AmqpError};
use crate::proto::{basic, frame, Method};
use crate::store::Store;

use super::queue::{Consumer, ConsumerOrder, Ready};
use super::{delivered_in, load_body_in, settle_in, Broker, QueueId};

/// Deliveries per queue per loop turn: a queue with a huge ready list and consumers
/// that read fast would otherwise fill every consumer's out-queue to its high-water mark
/// (1 MiB each) in one turn, tens of milliseconds with many consumers, while everyone
/// else waits. The rest goes next turn (the queue stays dirty).
pub const DELIVERIES_PER_TURN: usize = 2048;

/// Who a delivery goes to, and so which method frame announces it.
pub enum Recipient<'a> {
    /// basic.deliver to a consumer; a manual-ack consumer's unacked count grows.
    Consumer(&'a mut Consumer),
    /// basic.get-ok; `message_count` is what the queue holds after this one; `quorum`:
    /// from a quorum queue, whose basic.get-ok always carries `x-delivery-count`.
    Get {
        no_ack: bool,
        message_count: u32,
        quorum: bool,
    },
}

/// Delivers from queue `qid` to its consumers, round-robin, each within its prefetch
/// and its channel's, skipping consumers whose connection is congested (marked
/// `throttled`, so that its flush marks the queue dirty again). Connections that got
/// output are listed in `touched` once. Returns true when [`DELIVERIES_PER_TURN`] ran out
/// with messages and consumers able to take them left (dispatch again next turn); false
/// when the queue is gone, held (`Queue::is_held`), empty or nobody can take more.
pub fn dispatch_queue(
    broker: &mut Broker,
    conns: &mut Slab<Connection>,
    qid: QueueId,
    now: Instant,
    touched: &mut Vec<usize>,
) -> bool {
    // A queue with features first drops what expired before this turn (not what
    // expires now: a TTL-0 message goes to a consumer that can take it at once).
    let featured = broker.featured > 0 && broker.queue(qid).is_some_and(|q| q.features.is_some());
    if featured {
        broker.expire_due(qid, true);
    }
    let more = if featured
        && broker
            .queue(qid)
            .is_some_and(|q| q.priority_run().is_some())
    {
        dispatch_levels(broker, conns, qid, now, touched)
    } else {
        dispatch_ready(broker, conns, qid, now, touched, DELIVERIES_PER_TURN).1
    };
    if featured {
        broker.expire_due(qid, false);
        broker.enforce_limit(qid);
    }
    more
}

/// [`dispatch_queue`] for a priority queue with features (TTL): RabbitMQ drops the
/// expired head after each fetch, and a priority queue's head moves to a lower level
/// whose head was never looked at once the level above is delivered. So it delivers one
/// level's run at a time, expiring before each (a classic queue's head never moves
/// that way: it is dispatched in one go).
#[cold]
fn dispatch_levels(
    broker: &mut Broker,
    conns: &mut Slab<Connection>,
    qid: QueueId,
    now: Instant,
    touched: &mut Vec<usize>,
) -> bool {
    let mut budget = DELIVERIES_PER_TURN;
    loop {
        let run = match broker.queue(qid).and_then(|q| q.priority_run()) {
            Some(run) if run > 0 => run,
            _ => return false,
        };
        let limit = run.min(budget);
        let (taken, more) = dispatch_ready(broker, conns, qid, now, touched, limit);
        budget -= taken;
        if !more {
            return false; // empty, held, or nobody can take more
        }
        if budget == 0 {
            return true;
        }
        broker.expire_due(qid, true);
    }
}

/// [`dispatch_queue`] once expiry is done: at most `limit` messages. Returns how many
/// it took and whether the limit ran out with messages and consumers able to take them
/// left.
#[inline(always)]
fn dispatch_ready(
    broker: &mut Broker,
    conns: &mut Slab<Connection>,
    qid: QueueId,
    now: Instant,
    touched: &mut Vec<usize>,
    limit: usize,
) -> (usize, bool) {
    let Some((q, mut store)) = broker.queue_and_store(qid) else {
        return (0, false);
    };
    if q.is_held() {
        // Part of a large unacked set is back, the rest comes in later turns; the
        // set's completion marks the queue dirty again.
        return (0, false);
    }
    let durable = q.durable_id;
    // Decided once per call: a queue whose consumers all have the default priority
    // runs the plain round-robin loop below; a single-active-consumer queue runs it
    // over its first consumer alone.
    let n = match q.order() {
        ConsumerOrder::RoundRobin => q.consumers.len(),
        ConsumerOrder::SingleActive => q.consumers.len().min(1),
        ConsumerOrder::Priority => {
            return dispatch_prioritised(broker, conns, qid, now, touched, limit);
        }
    };
    let mut idle = 0;
    let mut budget = limit;
    let mut more = false;
    // Counted here and added to the queue and the broker once per call, not per message.
    let mut tally = Tally::default();
    while idle < n && !q.is_empty() {
        if budget == 0 {
            more = true;
            break;
        }
        let i = q.rr as usize % n;
        q.rr = ((i + 1) % n) as u32;
        let c = &q.consumers[i];
        let Some(conn) = conns.get_mut(c.conn) else {
            idle += 1;
            continue;
        };
        let Some(chi) = may_take_one(conn, c) else {
            idle += 1;
            continue;
        };
        idle = 0;
        budget -= 1;
        let Some(r) = q.next_delivery() else { break };
        let again = r.redelivered();
        let manual = !q.consumers[i].no_ack;
        let to = Recipient::Consumer(&mut q.consumers[i]);
        if deliver(store.as_deref_mut(), qid, durable, r, conn, chi, to, now) {
            tally.delivered(manual, again);
            if !conn.touched {
                conn.touched = true;
                touched.push(conn.key);
            }
        }
    }
    if tally.any() {
        tally.add_to(q.counting());
        tally.add_to(&mut broker.counters);
    }
    (limit - budget, more)
}

/// [`dispatch_ready`] for a queue with consumer priorities: its consumers are sorted
/// highest priority first (`Queue::insert_consumer`), and each message goes to the
/// first group of equal priority that has a consumer able to take it, round-robin
/// within the group (from `Queue::rr`), at most `limit` messages, as RabbitMQ's
/// `rabbit_queue_consumers:deliver`
/// takes the highest consumer that is not blocked. A consumer unable to take one now
/// stays unable for the rest of the call (nothing acks during dispatch), so a group
/// found full is skipped from then on: lower groups get messages only while every
/// higher consumer is blocked.
#[cold]
fn dispatch_prioritised(
    broker: &mut Broker,
    conns: &mut Slab<Connection>,
    qid: QueueId,
    now: Instant,
    touched: &mut Vec<usize>,
    limit: usize,
) -> (usize, bool) {
    let Some((q, mut store)) = broker.queue_and_store(qid) else {
        return (0, false);
    };
    let durable = q.durable_id;
    let n = q.consumers.len();
    let mut budget = limit;
    let mut more = false;
    let mut tally = Tally::default();
    // The group being served: consumers[start..end] share one priority.
    let mut start = 0;
    while start < n && !q.is_empty() {
        let p = q.consumers[start].priority;
        let end = start
            + q.consumers[start..]
                .iter()
                .take_while(|c| c.priority == p)
                .count();
        let size = end - start;
        let rr = q.rr as usize;
        let first = if (start..end).contains(&rr) {
            rr
        } else {
            start
        };
        let mut picked = None;
        for k in 0..size {
            let i = start + (first - start + k) % size;
            let c = &q.consumers[i];
            let Some(conn) = conns.get_mut(c.conn) else {
                continue;
            };
            if let Some(chi) = may_take_one(conn, c) {
                picked = Some((i, chi));
                break;
            }
        }
        let Some((i, chi)) = picked else {
            start = end;
            continue;
        };
        if budget == 0 {
            more = true;
            break;
        }
        budget -= 1;
        q.rr = (start + (i - start + 1) % size) as u32;
        let Some(r) = q.next_delivery() else { break };
        let again = r.redelivered();
        let manual = !q.consumers[i].no_ack;
        let Some(conn) = conns.get_mut(q.consumers[i].conn) else {
            break;
        };
        let to = Recipient::Consumer(&mut q.consumers[i]);
        if deliver(store.as_deref_mut(), qid, durable, r, conn, chi, to, now) {
            tally.delivered(manual, again);
            if !conn.touched {
                conn.touched = true;
                touched.push(conn.key);
            }
        }
    }
    if tally.any() {
        tally.add_to(q.counting());
        tally.add_to(&mut broker.counters);
    }
    (limit - budget, more)
}

/// Deliveries counted during one dispatch call, added to the queue's and the broker's
/// counters once at its end.
#[derive(Default)]
struct Tally {
    acked: u64,
    no_ack: u64,
    redelivered: u64,
}

impl Tally {
    #[inline(always)]
    fn delivered(&mut self, manual: bool, again: bool) {
        if manual {
            self.acked += 1;
        } else {
            self.no_ack += 1;
        }
        self.redelivered += u64::from(again);
    }

    fn any(&self) -> bool {
        self.acked + self.no_ack > 0
    }

    fn add_to(&self, c: &mut crate::counters::MsgCounters) {
        c.deliver += self.acked;
        c.deliver_no_ack += self.no_ack;
        c.redeliver += self.redelivered;
    }
}

/// Whether consumer `c` may take one more delivery now; the index of its channel in
/// `conn` when it may. A congested connection is marked `throttled` (its flush, once
/// below the low-water mark, makes its queues dirty again).
#[inline]
fn may_take_one(conn: &mut Connection, c: &Consumer) -> Option<usize> {
    if conn.is_congested() {
        conn.throttled = true;
        return None;
    }
    let chi = conn.channels.iter().position(|ch| ch.id == c.channel)?;
    (c.has_credit() && conn.channels[chi].can_deliver()).then_some(chi)
}

/// basic.get on queue `qid` for the channel at index `chi` of `conn`: the next ready
/// message goes out as basic.get-ok through [`deliver`], or basic.get-empty is written
/// when there is none (or its paged body could not be read back). Not held back by
/// `Queue::is_held`: a synchronous reply cannot wait for later turns. Err (404) when the
/// queue is gone.
pub fn get(
    broker: &mut Broker,
    qid: QueueId,
    conn: &mut Connection,
    chi: usize,
    no_ack: bool,
    now: Instant,
) -> Result<(), AmqpError> {
    if broker.queue(qid).is_some_and(|q| q.features.is_some()) {
        // A basic.get is a use (`x-expires`) and never returns an expired message.
        broker.touch_unused(qid);
        broker.expire_due(qid, false);
    }
    let Some((q, store)) = broker.queue_and_store(qid) else {
        return Err(not_found("queue vanished"));
    };
    let durable = q.durable_id;
    let quorum = q.quorum;
    let mut again = false;
    let delivered = match q.next_delivery() {
        Some(r) => {
            let message_count = q.message_count();
            again = r.redelivered();
            let to = Recipient::Get {
                no_ack,
                message_count,
                quorum,
            };
            deliver(store, qid, durable, r, conn, chi, to, now)
        }
        None => false,
    };
    let mut counts = crate::counters::MsgCounters::default();
    match (delivered, no_ack) {
        (false, _) => counts.get_empty = 1,
        (true, false) => counts.get = 1,
        (true, true) => counts.get_no_ack = 1,
    }
    counts.redeliver = u64::from(delivered && again);
    let add = |c: &mut crate::counters::MsgCounters| {
        c.get += counts.get;
        c.get_no_ack += counts.get_no_ack;
        c.get_empty += counts.get_empty;
        c.redeliver += counts.redeliver;
    };
    add(q.counting());
    add(&mut broker.counters);
    if !delivered {
        conn.channels[chi].stats.now.get_empty += 1;
        let ch = conn.channels[chi].id;
        let empty = basic::GetEmpty {
            cluster_id: Bytes::new(),
        };
        frame::write_method(conn.out.tail(), ch, &Method::BasicGetEmpty(empty));
    }
    Ok(())
}

/// Turns `r`, just taken from queue `qid` (`durable`: its store id), into a delivery on
/// the channel at index `chi` of `conn`: the next delivery tag, the method frame
/// (basic.deliver or basic.get-ok, by `to`) and the content frames re-framed to the
/// connection's frame_max appended to the out-queue. A no-ack delivery settles the
/// message's store reference now; a manual-ack one is recorded as unacked on the channel
/// (and on the consumer), and for a persistent message of a durable queue in the store,
/// so that a crash brings it back `redelivered`.
///
/// A paged body is read back from the store. When that fails the message is logged,
/// settled and dropped, nothing is written, and false is returned. No allocation per
/// call besides that read (basic.get-ok copies its two short strings, as before).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn deliver(
    mut store: Option<&mut Store>,
    qid: QueueId,
    durable: u32,
    r: Ready,
    conn: &mut Connection,
    chi: usize,
    to: Recipient<'_>,
    now: Instant,
) -> bool {
    // The token keeps a quorum queue's delivery count for a requeue.
    let (seq, redelivered, count) = (r.token(), r.redelivered(), r.delivery_count());
    let msg = r.msg;
    let body = match load_body_in(store.as_deref_mut(), &msg) {
        Ok(b) => b,
        Err(e) => {
            log::error!("store: cannot read a paged message back: {e}; dropping it");
            settle_in(store, durable, &msg);
            return false;
        }
    };
    let ch = &mut conn.channels[chi];
    let tag = ch.next_tag();
    let channel = ch.id;
    ch.stats.now.redeliver += u64::from(redelivered);
    let mut count_header = count > 0;
    let (no_ack, consumer) = match to {
        Recipient::Consumer(c) => {
            frame::write_deliver(
                conn.out.tail(),
                channel,
                &c.tag,
                tag,
                redelivered,
                msg.exchange(),
                msg.routing_key(),
            );
            if !c.no_ack {
                c.unacked += 1;
            }
            (c.no_ack, c.id)
        }
        Recipient::Get {
            no_ack,
            message_count,
            quorum,
        } => {
            count_header |= quorum;
            let ok = basic::GetOk {
                delivery_tag: tag,
                redelivered,
                exchange: Bytes::copy_from_slice(msg.exchange()),
                routing_key: Bytes::copy_from_slice(msg.routing_key()),
                message_count,
            };
            frame::write_method(conn.out.tail(), channel, &Method::BasicGetOk(ok));
            (no_ack, 0)
        }
    };
    let counts = &mut conn.channels[chi].stats.now;
    match (consumer, no_ack) {
        (0, false) => counts.get += 1,
        (0, true) => counts.get_no_ack += 1,
        (_, false) => counts.deliver += 1,
        (_, true) => counts.deliver_no_ack += 1,
    }
    let frame_max = conn.frame_max;
    // A quorum queue's redelivery (or any basic.get from one) says how often the
    // message came back; nothing else is re-encoded.
    let counted = if count_header {
        super::quorum::delivery_count_properties(msg.properties(), count)
    } else {
        None
    };
    let props = counted.as_deref().unwrap_or(msg.properties());
    conn.out.write_content(channel, props, &body, frame_max);
    if no_ack {
        settle_in(store, durable, &msg);
    } else {
        delivered_in(store, durable, &msg);
        conn.channels[chi].unacked.push_back(Unacked {
            tag,
            queue: qid,
            durable,
            consumer,
            msg,
            seq,
            delivered_at: now,
        });
    }
    true
}
