//! The queue features RabbitMQ 3.10 gives classic queues through arguments: message TTL
//! (`x-message-ttl` and the per-message `expiration`), dead-lettering
//! (`x-dead-letter-exchange`, `x-dead-letter-routing-key`), length limits
//! (`x-max-length`, `x-max-length-bytes`, `x-overflow`) and queue expiry (`x-expires`).
//!
//! Cost model: a queue without these arguments has `Queue::features == None`, and the
//! broker counts the queues that have them (`Broker::featured`): a publish looks at its
//! routed queues only when that count is non-zero or the message carries an
//! `expiration` (one flag bit), an enqueue tests one pointer, and nothing scans queues
//! per tick. Expiry is driven by one min-heap of deadlines (`Broker::timers`): a queue
//! with expiring messages arms one entry for its head's expiry (a queue-level TTL keeps
//! its messages in expiry order, and RabbitMQ expires per-message TTLs only at the
//! head), and a queue with `x-expires` one entry for the moment it would be unused long
//! enough. A stale entry (the head changed, the queue was used) is recognised when it
//! fires and re-armed or dropped; nothing is ever removed from the middle of the heap.
//!
//! Time: epoch milliseconds (wall clock, so that a TTL keeps counting across a
//! restart by the message's arrival), read at most once per loop turn
//! (`Broker::now_ms`, reset by `Broker::tick`).
//!
//! Dead-lettering republishes into the dead-letter exchange of the queue's vhost as a
//! new message (new properties from [`super::dead_letter`], routed, persisted when
//! persistent and routed to a durable queue, enqueued with the target queues' own
//! limits), without a confirm to anyone, as RabbitMQ's at-most-once dead-lettering. A
//! dead-letter exchange that does not exist drops the message silently.

use std::cmp::Reverse;

use bytes::Bytes;

use crate::message::{Body, Message, Timing};
use crate::proto::properties;

use super::dead_letter::{self, Death, Reason};
use super::queue::Overflow;
use super::{load_body_in, Broker, QueueId};

/// Messages expired per loop turn at most (the rest in the next turns: a million
/// expiring at once must not stall every connection for the whole of it).
pub const EXPIRE_PER_TURN: usize = 16384;

/// What a timer entry is for.
const HEAD: u8 = 0;
const UNUSED: u8 = 1;
/// At-least-once dead-lettering retries (see `super::at_least_once`).
pub(super) const DLX_RETRY: u8 = 2;

/// A timer: (deadline in epoch ms, queue slot, queue generation, kind).
pub(super) type Timer = Reverse<(u64, u32, u32, u8)>;

/// The first byte of a raw property list has the `expiration` flag as its lowest bit
/// (property 8 of the first flag word: bit 8 of the big-endian u16).
#[inline]
pub fn has_expiration(raw: &[u8]) -> bool {
    raw.len() >= 2 && raw[0] & 0x01 != 0
}

/// Parses an `expiration` property as RabbitMQ does (`rabbit_basic:parse_expiration`:
/// Erlang's `string:to_integer` then `check_expiry`). Err is the reason as RabbitMQ
/// prints it after "invalid expiration '...': ".
pub fn parse_expiration(s: &[u8]) -> Result<u64, String> {
    let (neg, digits_at) = match s.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let rest = &s[digits_at..];
    let n_digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if n_digits == 0 {
        return Err("no_integer".into());
    }
    let (digits, left) = rest.split_at(n_digits);
    if !left.is_empty() {
        return Err(format!("{{leftover_string,{}}}", erlang_string(left)));
    }
    let text = std::str::from_utf8(digits).unwrap_or("0");
    let trimmed = text.trim_start_matches('0');
    let shown = if trimmed.is_empty() { "0" } else { trimmed };
    let sign = if neg && shown != "0" { "-" } else { "" };
    if !sign.is_empty() {
        return Err(format!("{{value_negative,-{shown}}}"));
    }
    // Above ten years (and anything too long for u64) is too large.
    match shown.parse::<u64>() {
        Ok(n) if n <= 315_360_000_000 => Ok(n),
        _ => Err(format!("{{value_too_large,{shown}}}")),
    }
}

/// A byte list as Erlang's `~p` prints a string: quoted when printable, else a list.
fn erlang_string(b: &[u8]) -> String {
    let printable = b
        .iter()
        .all(|&c| (32..=126).contains(&c) || (160..=255).contains(&c) || c == b'\n' || c == b'\t');
    if printable {
        let mut out = String::from("\"");
        for &c in b {
            match c {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                b'\n' => out.push_str("\\n"),
                b'\t' => out.push_str("\\t"),
                c => out.push(char::from(c)),
            }
        }
        out.push('"');
        out
    } else {
        let items: Vec<String> = b.iter().map(|c| c.to_string()).collect();
        format!("[{}]", items.join(","))
    }
}

fn now_epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Broker {
    /// The wall clock in epoch ms, read once per loop turn (on first use after
    /// [`Broker::tick`]).
    pub fn now_ms(&mut self) -> u64 {
        if self.now_ms == 0 {
            self.now_ms = now_epoch_ms();
        }
        self.now_ms
    }

    /// A new loop turn: the next [`Broker::now_ms`] reads the clock again.
    #[inline]
    pub fn tick(&mut self) {
        self.now_ms = 0;
    }

    /// Sets up a new queue's features from its arguments (declare and recovery), and
    /// arms its `x-expires` timer.
    pub(super) fn init_features(&mut self, id: QueueId) {
        let Some(q) = self.queue(id) else { return };
        // A vhost without policies: the arguments as they are, no copy.
        let features = match self.vhost(q.vhost).filter(|v| !v.policies.is_empty()) {
            None => super::queue::Features::from_args(&q.props.arguments),
            Some(v) => {
                let (user, op) = v.policies.applied(&q.name, true);
                let args = super::policy::queue_args(&q.props.arguments, user, op);
                super::queue::Features::from_args(&args)
            }
        };
        let Some(q) = self.queue_mut(id) else { return };
        q.features = features;
        if q.features.is_none() {
            return;
        }
        let args = &q.props.arguments;
        let wants = |k: &[u8], v: &[u8]| args.get(k).and_then(|x| x.as_bytes()) == Some(v);
        let fallback = wants(b"x-dead-letter-strategy", b"at-least-once")
            && args.get(b"x-dead-letter-exchange").is_some()
            && !q.features.as_ref().is_some_and(|f| f.at_least_once);
        if fallback {
            let (name, vhost) = (q.name.clone(), q.vhost);
            // RabbitMQ's `rabbit_quorum_queue:dlh` warning.
            log::warn!(
                "Falling back to dead-letter-strategy at-most-once for queue '{}' in vhost '{}' \
                 because configured dead-letter-strategy at-least-once is incompatible with \
                 effective overflow strategy drop-head. To enable dead-letter-strategy \
                 at-least-once, set overflow strategy to reject-publish.",
                String::from_utf8_lossy(&name),
                self.vhost_label(vhost)
            );
        }
        self.featured += 1;
        self.touch_unused(id);
    }

    /// The queue was used (declared again, basic.get, its last consumer left): its
    /// `x-expires` period starts again now.
    pub fn touch_unused(&mut self, id: QueueId) {
        let now = self.now_ms();
        let Some(f) = self.queue_mut(id).and_then(|q| q.features.as_mut()) else {
            return;
        };
        let Some(expires) = f.expires else { return };
        f.last_used = now;
        self.timers.push(Reverse((
            now.saturating_add(expires),
            id.idx,
            id.gen,
            UNUSED,
        )));
    }

    /// Arms the head-expiry timer of queue `id` when its head can expire earlier than
    /// what is armed (or nothing is).
    pub(super) fn arm(&mut self, id: QueueId) {
        let Some(q) = self.queue_mut(id) else { return };
        let Some(at) = q.head_expiry() else { return };
        let created = q.features.is_none();
        q.features_mut();
        if created {
            self.featured += 1;
        }
        let Some(f) = self.queue_mut(id).and_then(|q| q.features.as_mut()) else {
            return;
        };
        if f.armed != 0 && f.armed <= at {
            return;
        }
        f.armed = at;
        self.timers.push(Reverse((at, id.idx, id.gen, HEAD)));
    }

    /// When the earliest timer is due (epoch ms), for the reactor's poll timeout.
    pub fn next_timer_ms(&self) -> Option<u64> {
        self.timers.peek().map(|Reverse(t)| t.0)
    }

    /// The timer phase's part for queues: expires heads and deletes unused queues whose
    /// deadline passed, at most [`EXPIRE_PER_TURN`] messages. Returns true when due
    /// work is left (run again next turn without waiting).
    pub fn run_queue_timers(&mut self) -> bool {
        if self.timers.is_empty() {
            return false;
        }
        let now = self.now_ms();
        let mut budget = EXPIRE_PER_TURN;
        while let Some(&Reverse((at, idx, gen, kind))) = self.timers.peek() {
            if at > now {
                return false;
            }
            if budget == 0 {
                return true;
            }
            self.timers.pop();
            let id = QueueId { idx, gen };
            if kind == UNUSED {
                self.expire_unused(id, now);
                continue;
            }
            if kind == DLX_RETRY {
                self.retry_dead_letters(id);
                continue;
            }
            let Some(f) = self.queue_mut(id).and_then(|q| q.features.as_mut()) else {
                continue;
            };
            if f.armed != at {
                continue; // stale: a later arm replaced it
            }
            f.armed = 0;
            self.expire(id, now, &mut budget);
        }
        false
    }

    /// `x-expires`: deletes queue `id` when it has been unused (no consumer, no
    /// basic.get, no redeclare) for its period; re-arms when it was used meanwhile.
    fn expire_unused(&mut self, id: QueueId, now: u64) {
        let Some(q) = self.queue_mut(id) else { return };
        let has_consumers = !q.consumers.is_empty();
        let Some(f) = q.features.as_mut() else { return };
        let Some(expires) = f.expires else { return };
        f.unused_armed = false;
        if has_consumers {
            return; // re-armed when its last consumer leaves
        }
        let due = f.last_used.saturating_add(expires);
        if due > now {
            // Used since this entry was armed: wait for the rest of the new period.
            f.unused_armed = true;
            self.timers.push(Reverse((due, id.idx, id.gen, UNUSED)));
            return;
        }
        let Some(q) = self.queue(id) else { return };
        log::info!(
            "queue '{}' in vhost '{}': deleted after {expires} ms unused (x-expires)",
            String::from_utf8_lossy(&q.name),
            self.vhost_label(q.vhost)
        );
        self.remove_queue(id);
    }

    /// Expires the head of queue `id` while it expired at or before `cutoff` (epoch
    /// ms), dead-lettering each (reason `expired`) or dropping it, at most `budget`
    /// messages; then arms the timer for the new head (now when the budget ran out).
    pub fn expire(&mut self, id: QueueId, cutoff: u64, budget: &mut usize) {
        loop {
            let Some(q) = self.queue_mut(id) else { return };
            if q.is_held() {
                // Part of a returning unacked set is back: nothing leaves until all of
                // it is. Not re-armed here (its deadline is due: the timer phase would
                // spin on it); the set's release dispatches the queue, which expires
                // and arms.
                return;
            }
            match q.head_expiry() {
                Some(at) if at <= cutoff => {}
                _ => break,
            }
            if *budget == 0 {
                let f = q.features_mut();
                f.armed = cutoff;
                self.timers.push(Reverse((cutoff, id.idx, id.gen, HEAD)));
                return;
            }
            *budget -= 1;
            let Some(r) = q.next_delivery() else { break };
            let durable = q.durable_id;
            self.dead_letter(id, durable, r.msg, Reason::Expired);
        }
        self.arm(id);
    }

    /// [`Broker::expire`] for a queue about to deliver (dispatch, basic.get,
    /// declare-ok's count): messages whose expiry is before `now` (`strict`) or at it.
    /// A TTL-0 message is delivered when a consumer can take it in the turn it arrived
    /// (the dispatch phase expires strictly before delivering, at `now` after), as
    /// RabbitMQ hands it to a waiting consumer or expires it at once.
    pub fn expire_due(&mut self, id: QueueId, strict: bool) {
        let now = self.now_ms();
        let cutoff = if strict { now.saturating_sub(1) } else { now };
        let mut budget = EXPIRE_PER_TURN;
        self.expire(id, cutoff, &mut budget);
    }

    /// Publish-time work for queues with features, and for a message with its own
    /// `expiration`: removes from `routed` the queues that refuse the message
    /// (`reject-publish`, `reject-publish-dlx` at their limit; `self.rejected` is set so
    /// the publisher gets a nack, and the `-dlx` ones are listed in `self.reject_dlx`),
    /// and returns the message's timing when it can expire in one of them.
    pub(super) fn admit(
        &mut self,
        routed: &mut Vec<QueueId>,
        properties: &[u8],
        body_len: usize,
    ) -> Option<Timing> {
        let ttl_ms = if has_expiration(properties) {
            properties::expiration(properties)
                .and_then(|e| parse_expiration(e).ok())
                .unwrap_or(u64::MAX)
        } else {
            u64::MAX
        };
        let mut timed = ttl_ms != u64::MAX;
        if self.featured > 0 {
            let mut i = 0;
            while i < routed.len() {
                let id = routed[i];
                let Some(q) = self.queue(id) else {
                    i += 1;
                    continue;
                };
                let Some(f) = q.features.as_ref() else {
                    i += 1;
                    continue;
                };
                timed |= f.ttl.is_some();
                let overflow = f.overflow;
                // A quorum queue refuses only once it is already over its limit
                // (`rabbit_fifo:is_over_limit`): its limit is soft by one message.
                let full = if q.quorum {
                    f.over_limit_soft(q.len())
                } else {
                    f.would_overflow(q.len(), body_len)
                };
                if overflow != Overflow::DropHead && full {
                    self.rejected = true;
                    if overflow == Overflow::RejectPublishDlx {
                        self.reject_dlx.push(id);
                    }
                    routed.swap_remove(i);
                    continue;
                }
                i += 1;
            }
        }
        timed.then(|| Timing {
            arrival_ms: self.now_ms(),
            ttl_ms,
        })
    }

    /// After `msg` was appended to queue `id`: arms its expiry, and enforces a length
    /// limit (`drop-head`) at once when nobody consumes; with consumers, the dispatch
    /// phase of this turn enforces it after delivering (see [`Broker::enforce_limit`]).
    #[cold]
    pub(super) fn enqueued_featured(&mut self, id: QueueId, timed: bool) {
        let Some(q) = self.queue_mut(id) else { return };
        if timed && q.features.is_none() {
            q.features_mut();
            self.featured += 1;
        }
        if self.queue(id).is_some_and(|q| q.consumers.is_empty()) {
            self.enforce_limit(id);
        }
        self.arm(id);
    }

    /// `drop-head`: drops (dead-letters, reason `maxlen`) the oldest ready messages of
    /// queue `id` while a length limit is exceeded. RabbitMQ hands a message to a
    /// consumer that can take it before it counts against the limit; Warren delivers in
    /// the dispatch phase, so with consumers attached the limit is enforced there, after
    /// delivering, not as each message of a burst arrives.
    pub fn enforce_limit(&mut self, id: QueueId) {
        loop {
            let Some(q) = self.queue_mut(id) else { return };
            if !q.features.as_ref().is_some_and(|f| f.over_limit(q.len())) {
                return;
            }
            let Some(r) = q.next_delivery() else { return };
            let durable = q.durable_id;
            self.dead_letter(id, durable, r.msg, Reason::Maxlen);
        }
    }

    /// Dead-letters `msg`, which left queue `id` (store id `durable`) for `reason`:
    /// settles its reference in the queue, then, when the queue has a dead-letter
    /// exchange that exists, publishes it there with its `x-death` history (see
    /// [`dead_letter::dead_letter_properties`]), routed by the dead-letter routing key
    /// or its own, minus the queues RabbitMQ's cycle rule excludes. Otherwise (no
    /// dead-letter exchange, the queue or the exchange gone) the message is dropped.
    pub fn dead_letter(&mut self, id: QueueId, durable: u32, msg: Message, reason: Reason) {
        if self.is_at_least_once(id) {
            return self.dead_letter_at_least_once(id, durable, msg, reason);
        }
        let target = self.queue(id).and_then(|q| {
            let f = q.features.as_ref()?;
            let dlx = f.dlx.clone()?;
            let x = self.exchange_id(q.vhost, &dlx)?;
            Some((x, dlx, f.dlrk.clone(), q.name.clone()))
        });
        let Some((x, dlx, dlrk, qname)) = target else {
            self.settle(durable, &msg);
            return;
        };
        let body = match load_body_in(self.store.as_mut(), &msg) {
            Ok(Body::Inline(b)) => Bytes::copy_from_slice(b),
            Ok(Body::Shared(b)) => b.clone(),
            Ok(Body::Loaded(b)) => b,
            Err(e) => {
                log::error!("store: cannot read a paged message back to dead-letter it: {e}");
                self.settle(durable, &msg);
                return;
            }
        };
        self.settle(durable, &msg);
        let time = self.now_ms() / 1000;
        let raw = Bytes::copy_from_slice(msg.properties());
        let death = Death {
            reason,
            queue: &qname,
            exchange: msg.exchange(),
            routing_key: msg.routing_key(),
            time,
            new_routing_key: dlrk.is_some(),
        };
        let Some(props) = dead_letter::dead_letter_properties(&raw, &death) else {
            return;
        };
        let rk = dlrk.unwrap_or_else(|| Bytes::copy_from_slice(msg.routing_key()));
        drop(msg);
        let mut routed = Vec::new();
        self.route(x, &rk, &props, &mut routed);
        if reason != Reason::Rejected && !routed.is_empty() {
            let headers = properties::headers(&props);
            routed.retain(|q| {
                let name = self.queue(*q).map(|q| q.name.clone()).unwrap_or_default();
                let cycle = dead_letter::is_cycle(reason, headers.as_ref(), &name);
                if cycle {
                    log::debug!(
                        "message dropped: dead-letter cycle into queue '{}' without a rejection",
                        String::from_utf8_lossy(&name)
                    );
                }
                !cycle
            });
        }
        if routed.is_empty() {
            return;
        }
        // Not counted as a publish (RabbitMQ 3.10 does not either); no confirm to anyone.
        let rejected = std::mem::take(&mut self.rejected);
        let reject_dlx = std::mem::take(&mut self.reject_dlx);
        let _ = self.enqueue_routed(&mut routed, &dlx, &rk, &props, body, u64::MAX);
        self.rejected = rejected;
        self.reject_dlx = reject_dlx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_texts_match_rabbitmq() {
        assert_eq!(parse_expiration(b"60000"), Ok(60000));
        assert_eq!(parse_expiration(b"+5"), Ok(5));
        assert_eq!(parse_expiration(b"-0"), Ok(0));
        assert_eq!(parse_expiration(b"007"), Ok(7));
        assert_eq!(parse_expiration(b"abc").unwrap_err(), "no_integer");
        assert_eq!(parse_expiration(b"").unwrap_err(), "no_integer");
        assert_eq!(parse_expiration(b" 5").unwrap_err(), "no_integer");
        assert_eq!(parse_expiration(b"-").unwrap_err(), "no_integer");
        assert_eq!(
            parse_expiration(b"12x").unwrap_err(),
            "{leftover_string,\"x\"}"
        );
        assert_eq!(
            parse_expiration(b"5 ").unwrap_err(),
            "{leftover_string,\" \"}"
        );
        assert_eq!(parse_expiration(b"-1").unwrap_err(), "{value_negative,-1}");
        assert_eq!(
            parse_expiration(b"315360000001").unwrap_err(),
            "{value_too_large,315360000001}"
        );
        assert_eq!(
            parse_expiration(b"99999999999999999999999").unwrap_err(),
            "{value_too_large,99999999999999999999999}"
        );
    }

    #[test]
    fn expiration_flag_is_the_low_bit_of_the_first_byte() {
        use crate::proto::properties::BasicProperties;
        let with = BasicProperties {
            expiration: Some(Bytes::from_static(b"1")),
            ..Default::default()
        }
        .to_raw();
        assert!(has_expiration(&with));
        assert!(!has_expiration(&BasicProperties::default().to_raw()));
    }
}
