//! A quorum queue's `x-dead-letter-strategy: at-least-once` (RabbitMQ 3.10's
//! `rabbit_fifo_dlx` and `rabbit_fifo_dlx_worker`), on one node: a dead-lettered message
//! leaves its source queue only once a target queue has it safely.
//!
//! In effect only with a dead-letter exchange and `x-overflow: reject-publish`
//! (`Features::at_least_once`); otherwise RabbitMQ falls back to at-most-once with a
//! warning, and so does Warren (`Broker::init_features` logs it).
//!
//! - Routed at once when the dead-letter exchange exists and routes the message to a
//!   queue that takes it: the copy is enqueued (written to the store in this turn's
//!   group commit when durable) and the source's store reference is released only after
//!   that sync ([`crate::store::Store::ack_after_sync`]): a kill -9 at any point leaves
//!   the message in the source, the target, or both (a duplicate), never neither.
//! - Otherwise (no such exchange, no route, only cycles, the targets refusing it at
//!   their limit) it is kept in the source's `Features::dlx_pending`, recorded in the
//!   store as waiting ([`crate::store::Store::dead`], so a restart keeps it waiting and
//!   retries it at once, as RabbitMQ's worker does when it starts), and retried every
//!   [`Broker::dead_letter_retry_ms`] (RabbitMQ's
//!   `dead_letter_worker_publisher_confirm_timeout`, 180 s by default). RabbitMQ does not
//!   react to a new binding either: the retry timer (or a restart) finds it.
//! - Waiting messages are counted as RabbitMQ counts them: not ready (not delivered, not
//!   in declare-ok's count), in the API's `messages`, `messages_dlx`, `message_bytes` and
//!   `message_bytes_dlx`, and against `x-max-length`/`-bytes`.
//!
//! Only queues with the strategy in effect come here (`Broker::dead_letter` tests one
//! flag of the features a dead-lettering queue has anyway); nothing else pays for it.

use std::cmp::Reverse;

use bytes::Bytes;

use crate::message::{Body, Message};
use crate::proto::properties;

use super::dead_letter::{self, Death, Reason};
use super::features::DLX_RETRY;
use super::{load_body_in, Broker, Published, QueueId};

/// RabbitMQ's default `dead_letter_worker_publisher_confirm_timeout` (ms).
pub const DEFAULT_RETRY_MS: u64 = 180_000;

/// A message being dead-lettered that no target queue has yet.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The message as the source queue held it (its store reference still held).
    pub msg: Message,
    /// Its properties as dead-lettered (`x-death` and the rest, computed at its death).
    pub properties: Bytes,
    /// The routing key it is dead-lettered with.
    pub routing_key: Bytes,
    pub reason: Reason,
}

/// The reason's code in a store record (see `Store::dead`).
fn code(r: Reason) -> u8 {
    match r {
        Reason::Rejected => 0,
        Reason::Expired => 1,
        Reason::Maxlen => 2,
        Reason::DeliveryLimit => 3,
    }
}

/// The reason a store record's code names.
pub fn reason_of(code: u8) -> Reason {
    match code {
        0 => Reason::Rejected,
        1 => Reason::Expired,
        2 => Reason::Maxlen,
        _ => Reason::DeliveryLimit,
    }
}

impl Broker {
    /// How often messages waiting to be dead-lettered are retried (ms).
    pub fn dead_letter_retry_ms(&self) -> u64 {
        if self.dlx_retry_ms == 0 {
            DEFAULT_RETRY_MS
        } else {
            self.dlx_retry_ms
        }
    }

    /// Sets the retry interval (`--dead-letter-retry-ms`); 0 is the default.
    pub fn set_dead_letter_retry_ms(&mut self, ms: u64) {
        self.dlx_retry_ms = ms;
    }

    /// Whether queue `id` dead-letters at-least-once.
    pub(super) fn is_at_least_once(&self, id: QueueId) -> bool {
        self.queue(id)
            .and_then(|q| q.features.as_ref())
            .is_some_and(|f| f.at_least_once)
    }

    /// Dead-letters `msg`, which left queue `id` (store id `durable`) for `reason`,
    /// at-least-once (see the module doc).
    pub(super) fn dead_letter_at_least_once(
        &mut self,
        id: QueueId,
        durable: u32,
        msg: Message,
        reason: Reason,
    ) {
        let time = self.now_ms() / 1000;
        let Some(p) = self.pending(id, msg, reason, time) else {
            return;
        };
        if let Some(p) = self.try_dead_letter(id, durable, p) {
            if let (Some(st), Some(loc), true) =
                (self.store.as_mut(), p.msg.location(), durable != 0)
            {
                st.dead(loc, durable, code(reason));
            }
            self.keep_pending(id, p);
        }
    }

    /// The message `msg` of queue `id` as it is dead-lettered for `reason` at `time`
    /// (seconds); None (the message settled and dropped) when its properties do not
    /// decode, which never happens for properties Warren accepted.
    fn pending(&mut self, id: QueueId, msg: Message, reason: Reason, time: u64) -> Option<Pending> {
        let q = self.queue(id)?;
        let dlrk = q.features.as_ref().and_then(|f| f.dlrk.clone());
        let raw = Bytes::copy_from_slice(msg.properties());
        let death = Death {
            reason,
            queue: &q.name,
            exchange: msg.exchange(),
            routing_key: msg.routing_key(),
            time,
            new_routing_key: dlrk.is_some(),
        };
        let Some(properties) = dead_letter::dead_letter_properties(&raw, &death) else {
            let durable = q.durable_id;
            self.settle(durable, &msg);
            return None;
        };
        let routing_key = dlrk.unwrap_or_else(|| Bytes::copy_from_slice(msg.routing_key()));
        Some(Pending {
            msg,
            properties,
            routing_key,
            reason,
        })
    }

    /// Publishes `p` into the dead-letter exchange of queue `id` (store id `durable`);
    /// when a target queue took it, the source's reference is released after this
    /// turn's sync and None is returned, else `p` comes back to be kept.
    fn try_dead_letter(&mut self, id: QueueId, durable: u32, p: Pending) -> Option<Pending> {
        let target = self.queue(id).and_then(|q| {
            let dlx = q.features.as_ref()?.dlx.clone()?;
            Some((self.exchange_id(q.vhost, &dlx)?, dlx))
        });
        let Some((x, dlx)) = target else {
            return Some(p);
        };
        let mut routed = Vec::new();
        self.route(x, &p.routing_key, &p.properties, &mut routed);
        if p.reason != Reason::Rejected && !routed.is_empty() {
            let headers = properties::headers(&p.properties);
            routed.retain(|q| {
                let name = self.queue(*q).map(|q| q.name.clone()).unwrap_or_default();
                !dead_letter::is_cycle(p.reason, headers.as_ref(), &name)
            });
        }
        if routed.is_empty() {
            return Some(p);
        }
        let body = match load_body_in(self.store.as_mut(), &p.msg) {
            Ok(Body::Inline(b)) => Bytes::copy_from_slice(b),
            Ok(Body::Shared(b)) => b.clone(),
            Ok(Body::Loaded(b)) => b,
            Err(e) => {
                log::error!("store: cannot read a paged message back to dead-letter it: {e}");
                return Some(p);
            }
        };
        // No confirm to anyone, not counted as a publish (as at-most-once).
        let rejected = std::mem::take(&mut self.rejected);
        let reject_dlx = std::mem::take(&mut self.reject_dlx);
        let published = self.enqueue_routed(
            &mut routed,
            &dlx,
            &p.routing_key,
            &p.properties,
            body,
            u64::MAX,
        );
        self.rejected = rejected;
        self.reject_dlx = reject_dlx;
        if matches!(published, Published::Refused) || routed.is_empty() {
            // The store refused the copy, or every target was at its limit.
            return Some(p);
        }
        if let (Some(st), Some(loc)) = (self.store.as_mut(), p.msg.location()) {
            if p.msg.is_persistent() && durable != 0 {
                st.ack_after_sync(loc, durable);
            } else {
                super::settle_in(Some(st), durable, &p.msg);
            }
        }
        None
    }

    /// Keeps `p` in queue `id`'s waiting list and arms the retry timer.
    pub(super) fn keep_pending(&mut self, id: QueueId, p: Pending) {
        let at = self.now_ms().saturating_add(self.dead_letter_retry_ms());
        self.keep_pending_until(id, p, at);
    }

    /// [`Broker::keep_pending`] with the retry at `at` (epoch ms).
    pub(super) fn keep_pending_until(&mut self, id: QueueId, p: Pending, at: u64) {
        let Some(f) = self.queue_mut(id).and_then(|q| q.features.as_mut()) else {
            return;
        };
        f.dlx_bytes += p.msg.body_len() as u64;
        f.dlx_pending.push_back(p);
        if !f.dlx_retry_armed {
            f.dlx_retry_armed = true;
            self.timers.push(Reverse((at, id.idx, id.gen, DLX_RETRY)));
        }
    }

    /// The retry timer of queue `id` fired: every waiting message is tried again, in
    /// order; those still without a target wait for the next retry.
    pub(super) fn retry_dead_letters(&mut self, id: QueueId) {
        let Some(q) = self.queue_mut(id) else { return };
        let durable = q.durable_id;
        let Some(f) = q.features.as_mut() else { return };
        f.dlx_retry_armed = false;
        f.dlx_bytes = 0;
        let pending = std::mem::take(&mut f.dlx_pending);
        let mut kept = 0;
        for p in pending {
            if let Some(p) = self.try_dead_letter(id, durable, p) {
                kept += 1;
                self.keep_pending(id, p);
            }
        }
        if kept > 0 {
            log::debug!("{kept} dead-lettered messages still without a target queue");
        }
    }

    /// A message recovered from the store as waiting to be dead-lettered from queue
    /// `id` for the reason coded `code`: kept, and retried at once (as RabbitMQ's
    /// worker delivers what it finds when it starts). Its `x-death` time is the
    /// restart's: the store keeps the message as published, not its dead-lettered form.
    pub(super) fn recover_pending(&mut self, id: QueueId, msg: Message, code: u8) {
        let time = self.now_ms() / 1000;
        if let Some(p) = self.pending(id, msg, reason_of(code), time) {
            let now = self.now_ms();
            self.keep_pending_until(id, p, now);
        }
    }
}
