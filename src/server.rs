//! The server state that the reactor drives: the broker, the users and permissions (`auth`) and the
//! connections, side by side; the one ordered list of a loop turn's phases ([`Server::turn`]) and
//! the phases that do not touch sockets (input handling, returns, dispatch, sync, confirms, timers,
//! removing connections). The socket phases come from an [`Io`]: the reactor's, or the in-process
//! driver's ([`Server::feed`], [`Server::turn_without_io`]), which has no sockets and is how the
//! connection logic is unit-tested and fuzzed.

use bytes::{Bytes, BytesMut};
use log::{info, warn};
use slab::Slab;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::auth::Auth;
use crate::broker::{Broker, QueueId};
use crate::config::Config;
use crate::conn::channel::Unacked;
use crate::conn::state::{self, Event, Session};
use crate::conn::{Connection, State, LOW_WATER};
use crate::error::precondition;
use crate::net::Transport;
use crate::ops::Effect;
use crate::proto::frame;

/// How often every connection's timers are looked at.
const TIMER_PERIOD: Duration = Duration::from_millis(100);

/// How often a failure that keeps repeating is summed up in the log.
const REPEAT_REPORT: Duration = Duration::from_secs(10);

/// Logs a failure once, then how many times it repeated every `REPEAT_REPORT`, then
/// once when it stops: a full disk fails every turn and must not flood the log.
#[derive(Debug, Default)]
struct RepeatLog {
    last: Option<String>,
    repeats: u64,
    reported: Option<Instant>,
}

impl RepeatLog {
    fn failed(&mut self, now: Instant, what: &str, text: String) {
        if self.last.as_deref() == Some(text.as_str()) {
            self.repeats += 1;
            if self
                .reported
                .is_some_and(|t| now.duration_since(t) >= REPEAT_REPORT)
            {
                log::error!("{what}: failed {} more times: {text}", self.repeats);
                self.repeats = 0;
                self.reported = Some(now);
            }
            return;
        }
        self.flush(what);
        log::error!("{what}: {text}");
        self.last = Some(text);
        self.reported = Some(now);
    }

    fn succeeded(&mut self, what: &str) {
        if self.last.is_some() {
            self.flush(what);
            info!("{what}: succeeds again");
            self.last = None;
        }
    }

    fn flush(&mut self, what: &str) {
        if let (Some(t), n) = (&self.last, self.repeats) {
            if n > 0 {
                log::error!("{what}: failed {n} more times: {t}");
            }
        }
        self.repeats = 0;
    }
}

/// Unacked messages put back into their queues per loop turn (`Server::returns`):
/// about a quarter of a millisecond in a release build, so a client closing with
/// hundreds of thousands unacked costs everyone else nothing noticeable per turn.
const RETURNS_PER_TURN: usize = 4096;

/// Give freed memory back to the system each time resident message bodies have fallen
/// this far below their peak (the kernel frees about 1 MB per 0.1 ms: a few ms a trim).
const TRIM_AFTER_FREEING: usize = 16 << 20;

/// A large unacked set on its way back to its queues (see `Event::Return`).
struct Returning {
    /// What is left to put back, in delivery-tag order; taken from the back.
    msgs: std::collections::VecDeque<Unacked>,
    /// Queues this set has placed messages into, each holding (`Queue::held`) until
    /// the set is complete.
    held: Vec<QueueId>,
}

pub struct Server {
    pub config: Config,
    pub broker: Broker,
    /// Users and permissions, read by every connection's handshake and channel methods.
    pub auth: Auth,
    pub conns: Slab<Connection>,
    /// The time of this loop turn (one clock read per turn).
    pub now: Instant,
    events: Vec<Event>,
    dirty: Vec<QueueId>,
    /// Connections whose out-queue may have gained bytes this turn.
    touched: Vec<usize>,
    confirm_due: Vec<usize>,
    next_timer: Instant,
    /// The last sync failed: this turn's confirms become nacks.
    sync_failed: bool,
    /// The resource alarm in force, if any.
    pub alarm: Option<crate::alarm::Alarm>,
    next_alarm_check: Instant,
    /// Free disk bytes at the last measurement; with the bytes the store wrote since,
    /// an estimate that raises the disk alarm between two measurements.
    free_at_check: u64,
    sync_log: RepeatLog,
    /// Publishers to read again because an alarm cleared (the reactor drains this).
    pub unblocked: Vec<usize>,
    /// The most message-body bytes resident since memory was last given back.
    body_peak: usize,
    /// Large unacked sets being requeued, oldest first, a budget per turn.
    returning: std::collections::VecDeque<Returning>,
    /// Catch a panic while handling one connection and close only that connection.
    /// On in the broker; off in tests and fuzzing, where a panic must surface.
    pub contain_panics: bool,
    /// Message-rate sampling and the global history (`crate::mgmt::stats`).
    pub sampler: crate::mgmt::stats::Sampler,
    /// What the reactor listens on, for the management API's `listeners` (empty when
    /// driven in process).
    pub listeners: Vec<(crate::reactor::Protocol, std::net::SocketAddr)>,
    /// When this server started (the API's uptime).
    pub started: Instant,
    /// Connections per vhost and user, channels per user (vhost and user limits).
    pub usage: crate::conn::usage::Usage,
    /// Queue timers (TTL expiry) had more due work than one turn's budget.
    queue_timers_due: bool,
}

impl Server {
    /// A server without a data directory (tests, fuzzing): its users are the first
    /// start's, `--default-user` with `--loopback-users`, in memory only.
    pub fn new(config: Config) -> Server {
        let now = Instant::now();
        let mut broker = Broker::new();
        broker.set_dead_letter_retry_ms(config.dead_letter_retry_ms);
        let mut auth = Auth::new();
        auth.ensure_default_user(&config.default_user, config.default_pass.as_bytes());
        auth.set_loopback_users(config.loopback_users.clone());
        Server {
            config,
            broker,
            auth,
            conns: Slab::new(),
            now,
            events: Vec::new(),
            dirty: Vec::new(),
            touched: Vec::new(),
            confirm_due: Vec::new(),
            next_timer: now,
            sync_failed: false,
            alarm: None,
            next_alarm_check: now,
            free_at_check: u64::MAX,
            sync_log: RepeatLog::default(),
            unblocked: Vec::new(),
            returning: Default::default(),
            body_peak: 0,
            contain_panics: false,
            sampler: Default::default(),
            listeners: Vec::new(),
            started: now,
            usage: Default::default(),
            queue_timers_due: false,
        }
    }

    /// A server over the durable store in `config.data_dir`, with everything recovered.
    /// Err is the reason the broker must not start with (its `Display` is readable).
    pub fn with_store(config: Config) -> Result<Server, crate::store::StoreError> {
        let (store, meta, recovered) = crate::store::Store::open(&config.data_dir)?;
        let mut s = Server::new(config);
        // The users file: loaded when present (damage stops start-up, as a damaged meta
        // does); a first start stores the default user made by `Server::new`.
        let dir = s.config.data_dir.clone();
        let users_path = dir.join(crate::auth::USERS_FILE);
        let io_err = |source| crate::store::StoreError::Io {
            path: users_path.clone(),
            source,
        };
        match Auth::load(&dir) {
            Ok(Some(mut a)) => {
                a.set_loopback_users(s.config.loopback_users.clone());
                s.auth = a;
            }
            Ok(None) if s.config.definitions.is_some() => {
                // RabbitMQ seeds no default user when definitions are loaded at boot:
                // the file brings the users (`reactor::run` imports it next, and saves).
                s.auth = Auth::new();
                s.auth.set_loopback_users(s.config.loopback_users.clone());
                info!("first start with --definitions: no default user created");
            }
            Ok(None) => {
                s.auth.save(&dir).map_err(io_err)?;
                info!(
                    "created default user '{}' (first start)",
                    s.config.default_user
                );
            }
            Err(e) => return Err(io_err(e)),
        }
        let budget = s.config.memory_budget;
        s.broker = Broker::recover(store, meta, recovered, budget);
        s.broker
            .set_dead_letter_retry_ms(s.config.dead_letter_retry_ms);
        s.check_alarms();
        Ok(s)
    }

    /// Stores the users and permissions after a change (management operations: rare).
    /// A server without a data directory (`Server::new` in tests) has nothing to write
    /// to and keeps them in memory. Err is logged and is the caller's 500.
    pub fn save_auth(&self) -> std::io::Result<()> {
        if self.broker.store.is_none() {
            return Ok(());
        }
        self.auth.save(&self.config.data_dir).inspect_err(|e| {
            log::error!(
                "users: cannot save to {}: {e}",
                self.config.data_dir.display()
            );
        })
    }

    /// The sync phase: this turn's store writes reach the disk (one fdatasync when
    /// persistent messages were appended) before any confirm goes out.
    ///
    /// A failure (full disk, I/O error) makes this turn's confirms nacks and raises the
    /// disk alarm at once; it is logged once, then as a count. The disk alarm is also
    /// raised early when the bytes written since the last measurement would bring free
    /// space under the limit: a fast publisher is blocked before the disk fills.
    pub fn sync(&mut self) {
        match self.broker.sync() {
            Err(e) => {
                self.sync_failed = true;
                self.sync_log.failed(
                    self.now,
                    "store: sync",
                    format!("{e}; confirms of this turn are nacks"),
                );
            }
            Ok(()) => self.sync_log.succeeded("store: sync"),
        }
        let limit = self.disk_limit();
        let Some(st) = self.broker.store.as_ref() else {
            return;
        };
        let disk_alarm = self.alarm == Some(crate::alarm::Alarm::Disk);
        if st.is_full() && !disk_alarm {
            self.check_alarms();
            return;
        }
        if !disk_alarm {
            // Only arithmetic per turn; a measurement only when the estimate says so.
            let estimate = self.free_at_check.saturating_sub(st.pending_written());
            if estimate < limit {
                self.check_alarms();
            }
        }
    }

    /// Clean stop of the store: everything written and synced.
    pub fn close_store(&mut self) {
        if let Err(e) = self.broker.sync() {
            log::error!("store: final sync failed: {e}");
        }
        if let Some(st) = self.broker.store.as_mut() {
            if let Err(e) = st.close() {
                log::error!("store: close failed: {e}");
            }
        }
    }

    /// Registers a new connection; returns its key.
    pub fn open(&mut self, peer: SocketAddr, transport: Option<Transport>) -> usize {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        entry.insert(Connection::new(
            key,
            peer,
            transport,
            self.now,
            self.config.frame_max,
        ));
        info!("{peer}: connection accepted");
        self.broker.churn.now.connection_created += 1;
        key
    }

    fn session(&mut self, key: usize) -> Option<Session<'_>> {
        let conn = self.conns.get_mut(key)?;
        Some(Session {
            conn,
            broker: &mut self.broker,
            auth: &self.auth,
            config: &self.config,
            now: self.now,
            events: &mut self.events,
            alarm: self.alarm,
            usage: &self.usage,
        })
    }

    /// Handles the frames in a connection's read buffer. Returns true when frames
    /// remain because the per-turn budget ran out.
    pub fn input(&mut self, key: usize) -> bool {
        let more = if self.contain_panics {
            let run =
                std::panic::AssertUnwindSafe(|| self.session(key).is_some_and(|mut s| s.input()));
            match std::panic::catch_unwind(run) {
                Ok(more) => more,
                Err(_) => {
                    self.contained(key);
                    false
                }
            }
        } else {
            self.session(key).is_some_and(|mut s| s.input())
        };
        self.reconcile(key);
        self.touch(key);
        self.apply_events();
        more
    }

    /// Notes that a connection may have output to flush this turn.
    pub fn touch(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.touched {
                c.touched = true;
                self.touched.push(key);
            }
        }
    }

    /// Takes the list of connections with possible output (the flush phase's work).
    pub fn take_touched(&mut self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(&mut self.touched, into);
        for &k in into.iter() {
            if let Some(c) = self.conns.get_mut(k) {
                c.touched = false;
            }
        }
    }

    fn apply_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        for e in events.drain(..) {
            match e {
                Event::Op(effect) => self.apply(effect),
                Event::Confirms(conn) => {
                    if let Some(c) = self.conns.get_mut(conn) {
                        if !c.confirm_due {
                            c.confirm_due = true;
                            self.confirm_due.push(conn);
                        }
                    }
                }
                Event::Return(msgs) => self.returning.push_back(Returning {
                    msgs,
                    held: Vec::new(),
                }),
                Event::Reply(r) => {
                    if let Some(c) = self.conns.get_mut(r.conn) {
                        if crate::conn::methods::deliver_reply(c, &r) {
                            self.touch(r.conn);
                        }
                    }
                }
            }
        }
        self.events = events;
    }

    /// Applies a side effect of an operation (see [`crate::ops`]), whoever called it:
    /// the AMQP handlers through their events, the management API directly.
    pub fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Cancel { conn, channel, tag } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                let notify = c.caps.consumer_cancel_notify;
                let Some(ch) = c.channel_mut(channel) else {
                    return;
                };
                if ch.remove_consumer(&tag).is_none() || ch.closing {
                    return;
                }
                if notify {
                    state::write_server_cancel(c.out.tail(), channel, tag);
                    self.touch(conn);
                }
            }
            Effect::Close { conn, reason } => {
                if let Some(mut s) = self.session(conn) {
                    s.force_close(&reason);
                }
                self.reconcile(conn);
                self.touch(conn);
                // Closing releases the connection's channels: their events now.
                self.apply_events();
            }
        }
    }

    /// The return phase: puts back up to [`RETURNS_PER_TURN`] messages of the large
    /// unacked sets handed over by `Event::Return`, oldest set first, each set newest
    /// message first (so one consumer's set lands at its queue's front in O(1)). A queue
    /// that got part of a set is held (not dispatched) until the set is complete, then
    /// marked for dispatch: consumers never see a set half back, and a message is in
    /// exactly one place (the set or its queue) at any time. Returns true when work is
    /// left for the next turn.
    pub fn returns(&mut self) -> bool {
        let mut budget = RETURNS_PER_TURN;
        while budget > 0 {
            let Some(set) = self.returning.front_mut() else {
                return false;
            };
            while budget > 0 {
                let Some(u) = set.msgs.pop_back() else { break };
                budget -= 1;
                let queue = u.queue;
                if self.broker.requeue_held(queue, u.durable, u.msg, u.seq)
                    && set.held.last() != Some(&queue)
                    && !set.held.contains(&queue)
                {
                    set.held.push(queue);
                    if let Some(q) = self.broker.queue_mut(queue) {
                        q.hold();
                    }
                }
            }
            if !set.msgs.is_empty() {
                break;
            }
            if let Some(done) = self.returning.pop_front() {
                for q in done.held {
                    if let Some(queue) = self.broker.queue_mut(q) {
                        queue.release();
                    }
                    self.broker.mark_dirty(q);
                }
            }
        }
        !self.returning.is_empty()
    }

    /// The dispatch phase: every queue that gained messages or credit delivers to its
    /// consumers, round-robin, within prefetch limits and output backpressure.
    pub fn dispatch(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.broker.take_dirty(&mut dirty);
        for &q in &dirty {
            self.broker.undirty(q);
            let more = if self.contain_panics {
                let run = std::panic::AssertUnwindSafe(|| self.dispatch_queue(q));
                std::panic::catch_unwind(run).unwrap_or_else(|_| {
                    log::error!(
                        "internal error while dispatching a queue; it is skipped this turn"
                    );
                    false
                })
            } else {
                self.dispatch_queue(q)
            };
            if more {
                self.broker.mark_dirty(q);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Delivers from one queue by the broker's dispatch policy; true when the per-turn
    /// budget ran out with work left (dispatch again next turn).
    fn dispatch_queue(&mut self, qid: QueueId) -> bool {
        crate::broker::dispatch::dispatch_queue(
            &mut self.broker,
            &mut self.conns,
            qid,
            self.now,
            &mut self.touched,
        )
    }

    /// One line of counters for operators (`kill -USR1`), e.g. to tell a memory leak from
    /// a backlog: RSS next to the messages that explain it.
    pub fn stats(&self) -> String {
        let (mut channels, mut unacked) = (0, 0);
        for (_, c) in &self.conns {
            channels += c.channels.len();
            unacked += c.channels.iter().map(|ch| ch.unacked.len()).sum::<usize>();
        }
        let rss = crate::alarm::rss().map_or("?".into(), |b| (b / 1024).to_string());
        format!(
            "stats: connections {}, channels {channels}, queues {}, ready {}, unacked {unacked}, \
             resident body bytes {}, rss KiB {rss}",
            self.conns.len(),
            self.broker.queue_count(),
            self.broker.ready_count(),
            crate::message::resident_bytes(),
        )
    }

    /// Whether work is waiting that needs no new input (poll must not block).
    pub fn has_pending_work(&self) -> bool {
        !self.broker.dirty_is_empty() || !self.returning.is_empty() || self.queue_timers_due
    }

    /// Sends publisher confirms for everything published this turn. Transient
    /// messages are confirmed once routed (as RabbitMQ does for non-durable queues).
    pub fn send_confirms(&mut self) {
        let due = std::mem::take(&mut self.confirm_due);
        for &k in &due {
            let Some(c) = self.conns.get_mut(k) else {
                continue;
            };
            c.confirm_due = false;
            let mut wrote = false;
            for ch in c.channels.iter_mut() {
                if ch.confirm
                    && ch.publish_seq > ch.confirmed
                    && !ch.closing
                    && !ch.nacks.is_empty()
                    && !self.sync_failed
                {
                    // Publishes a queue refused at its length limit (rare).
                    Self::send_refusals(&mut c.out, ch, &mut self.broker.counters);
                    wrote = true;
                }
                if ch.confirm && ch.publish_seq > ch.confirmed && !ch.closing {
                    let multiple = ch.publish_seq - ch.confirmed > 1;
                    if self.sync_failed {
                        let nack = crate::proto::basic::Nack {
                            delivery_tag: ch.publish_seq,
                            multiple,
                            requeue: false,
                        };
                        frame::write_method(
                            c.out.tail(),
                            ch.id,
                            &crate::proto::Method::BasicNack(nack),
                        );
                    } else {
                        frame::write_ack(c.out.tail(), ch.id, ch.publish_seq, multiple);
                        let n = ch.publish_seq - ch.confirmed;
                        ch.stats.now.confirm += n;
                        self.broker.counters.confirm += n;
                    }
                    ch.confirmed = ch.publish_seq;
                    wrote = true;
                }
            }
            if wrote {
                self.touch(k);
            }
        }
        self.sync_failed = false;
        let mut due = due;
        due.clear();
        if self.confirm_due.is_empty() {
            self.confirm_due = due;
        }
    }

    /// Confirms up to and including each refused publish of `ch` (acks for the ones
    /// before it, then its nack), leaving the publishes after the last one to the
    /// caller's usual ack.
    #[cold]
    fn send_refusals(
        out: &mut crate::conn::OutBuf,
        ch: &mut crate::conn::channel::Channel,
        counters: &mut crate::counters::MsgCounters,
    ) {
        for seq in std::mem::take(&mut ch.nacks) {
            if seq <= ch.confirmed || seq > ch.publish_seq {
                continue;
            }
            if seq - 1 > ch.confirmed {
                let multiple = seq - 1 - ch.confirmed > 1;
                frame::write_ack(out.tail(), ch.id, seq - 1, multiple);
                let n = seq - 1 - ch.confirmed;
                ch.stats.now.confirm += n;
                counters.confirm += n;
            }
            let nack = crate::proto::basic::Nack {
                delivery_tag: seq,
                multiple: false,
                requeue: false,
            };
            frame::write_method(out.tail(), ch.id, &crate::proto::Method::BasicNack(nack));
            ch.confirmed = seq;
        }
    }

    /// After a flush: a throttled connection whose output drained gets deliveries again.
    pub fn flushed(&mut self, key: usize, wrote: bool) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if wrote {
            c.last_sent = self.now;
        }
        if c.throttled && c.out.len() < LOW_WATER {
            c.throttled = false;
            let queues: Vec<QueueId> = c
                .channels
                .iter()
                .flat_map(|ch| ch.consumers.iter().map(|cc| cc.queue))
                .collect();
            for q in queues {
                self.broker.mark_dirty(q);
            }
        }
    }

    /// The timer phase: handshake timeout, heartbeats, close timeouts, consumer
    /// timeouts, alarm checks. Cheap when called every turn: it scans at most every
    /// 100 ms (and gives freed memory back when bodies fell far below their peak).
    pub fn run_timers(&mut self) {
        self.give_back_memory();
        // Queue TTLs and x-expires: a heap peek when nothing is due.
        self.queue_timers_due = self.broker.run_queue_timers();
        if self.now < self.next_timer {
            return;
        }
        self.next_timer = self.now + TIMER_PERIOD;
        crate::mgmt::stats::maybe_sample(self);
        if self.now >= self.next_alarm_check {
            self.next_alarm_check = self.now + Duration::from_secs(1);
            self.check_alarms();
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.conn_timers(k);
        }
    }

    /// When the timer phase next has work: how long the reactor may sleep in poll
    /// with nothing else to do. Pure: runs nothing.
    pub fn next_deadline(&self) -> Instant {
        match self.broker.next_timer_ms() {
            Some(at) => {
                // The queue timers are in epoch ms; one clock read per idle poll.
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let wait = Duration::from_millis(at.saturating_sub(now_ms));
                self.next_timer.min(Instant::now() + wait)
            }
            None => self.next_timer,
        }
    }

    fn conn_timers(&mut self, key: usize) {
        let now = self.now;
        let timeout = self.config.consumer_timeout;
        let handshake = self.config.handshake_timeout;
        // A blocked publisher is not read, so its heartbeats are not seen: as RabbitMQ,
        // heartbeat monitoring pauses while it is blocked.
        let blocked = self.is_blocked(key);
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match c.state {
            State::Header | State::StartOk | State::TuneOk | State::Open => {
                if now.duration_since(c.opened_at) > handshake {
                    warn!("{}: closing connection: handshake timeout", c.peer);
                    c.state = State::Closed;
                    self.touch(key);
                }
                return;
            }
            // Waiting for close-ok, or for the client to close after our close-ok.
            State::Closing | State::Lingering => {
                if c.close_deadline.is_some_and(|d| now >= d) {
                    c.state = State::Closed;
                    self.touch(key);
                }
                return;
            }
            State::Closed => return,
            State::Running => {}
        }
        if c.heartbeat > 0 {
            let hb = Duration::from_secs(u64::from(c.heartbeat));
            if !blocked && now.duration_since(c.last_recv) > hb * 2 {
                warn!(
                    "{}: missed heartbeats from client, timeout: {}s",
                    c.peer, c.heartbeat
                );
                if let Some(mut s) = self.session(key) {
                    s.release_all();
                    s.conn.state = State::Closed;
                }
                self.apply_events();
                self.touch(key);
                return;
            }
            if now.duration_since(c.last_sent) >= hb / 2 && c.out.is_empty() {
                frame::write_heartbeat(c.out.tail());
                self.touch(key);
            }
        }
        let Some(c) = self.conns.get(key) else { return };
        let expired: Vec<u16> = c
            .channels
            .iter()
            .filter(|ch| {
                !ch.closing
                    && ch
                        .unacked
                        .front()
                        .is_some_and(|u| now.duration_since(u.delivered_at) > timeout)
            })
            .map(|ch| ch.id)
            .collect();
        for ch in expired {
            let text = format!(
                "delivery acknowledgement on channel {ch} timed out. Timeout value used: {} ms. This timeout value can be configured, see consumers doc guide to learn more",
                timeout.as_millis()
            );
            if let Some(mut s) = self.session(key) {
                s.close_channel(ch, precondition(text));
            }
            self.apply_events();
            self.touch(key);
        }
    }

    /// While a backlog drains, hands the freed pages back to the system, so that RSS
    /// falls when queues empty instead of staying at the high-water mark of the largest
    /// backlog. Called every turn: two integer compares, unless resident message bodies
    /// fell [`TRIM_AFTER_FREEING`] below their peak since the last trim; a turn frees at
    /// most a turn's budget of messages, so no peak goes unseen and each trim gives back
    /// a slice of a few milliseconds rather than a whole backlog in one long call.
    fn give_back_memory(&mut self) {
        let bodies = crate::message::resident_bytes();
        if bodies >= self.body_peak {
            self.body_peak = bodies;
            return;
        }
        if self.body_peak - bodies < TRIM_AFTER_FREEING {
            return;
        }
        let t = Instant::now();
        crate::alarm::give_back_memory();
        log::debug!(
            "gave memory back after {} MiB of bodies were freed, in {:?}",
            (self.body_peak - bodies) >> 20,
            t.elapsed()
        );
        self.body_peak = bodies;
    }

    /// Re-evaluates the disk and memory alarms (only with a store: a memory-only server
    /// has no data directory to watch). On a change, publishers are told.
    pub fn check_alarms(&mut self) {
        if self.broker.store.is_none() {
            return;
        }
        let limit = self.disk_limit();
        let Some(st) = self.broker.store.as_mut() else {
            return;
        };
        st.take_written();
        let free = crate::alarm::free_disk(&self.config.data_dir);
        self.free_at_check = free.unwrap_or(u64::MAX);
        if let Some(free) = free {
            if st.retry_after_full(free, limit) {
                info!("store: disk space is back ({free} bytes free); accepting messages again");
            }
        }
        let disk = st.is_full() || free.is_some_and(|f| f < limit);
        if disk {
            // Dead data in the segment being written is given back while the alarm is on.
            st.compact();
        }
        let memory = self.config.memory_limit();
        let now = if disk {
            Some(crate::alarm::Alarm::Disk)
        } else if memory > 0 && crate::alarm::rss().is_some_and(|r| r > memory) {
            Some(crate::alarm::Alarm::Memory)
        } else {
            None
        };
        if now == self.alarm {
            return;
        }
        match now {
            Some(a) => warn!("resource alarm: {}; blocking publishers", a.reason()),
            None => info!("resource alarm cleared; unblocking publishers"),
        }
        self.alarm = now;
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.publisher)
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            let Some(c) = self.conns.get_mut(k) else {
                continue;
            };
            if c.state != State::Running {
                continue;
            }
            match now {
                Some(a) if c.caps.connection_blocked && !c.blocked_sent => {
                    let b = crate::proto::connection::Blocked {
                        reason: Bytes::from_static(a.reason().as_bytes()),
                    };
                    frame::write_method(
                        c.out.tail(),
                        0,
                        &crate::proto::Method::ConnectionBlocked(b),
                    );
                    c.blocked_sent = true;
                }
                None => {
                    // Heartbeat monitoring was paused while blocked (not read).
                    c.last_recv = self.now;
                    if c.blocked_sent {
                        let u = crate::proto::connection::Unblocked {};
                        frame::write_method(
                            c.out.tail(),
                            0,
                            &crate::proto::Method::ConnectionUnblocked(u),
                        );
                        c.blocked_sent = false;
                    }
                    self.unblocked.push(k);
                }
                _ => {}
            }
            self.touch(k);
        }
    }

    /// The free-disk floor of the disk alarm: `--disk-free-limit`, and never less than
    /// the store's reserve, so a limit of 0 (or too low) still blocks publishers before
    /// the disk is full.
    fn disk_limit(&self) -> u64 {
        self.config.disk_free_limit.max(crate::store::RESERVE)
    }

    /// Whether reading from this connection is paused by a resource alarm.
    pub fn is_blocked(&self, key: usize) -> bool {
        self.alarm.is_some() && self.conns.get(key).is_some_and(|c| c.publisher)
    }

    /// Keys of connections that are done (closed), for the reap phase.
    pub fn closed(&self) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| c.is_closed())
            .map(|(k, _)| k)
            .collect()
    }

    /// Removes a connection for good: its channels are released, its exclusive queues
    /// deleted. Returns it so the reactor can deregister the socket.
    pub fn remove(&mut self, key: usize) -> Option<Connection> {
        if let Some(mut s) = self.session(key) {
            s.release_all();
        }
        self.apply_events();
        for q in self.broker.exclusive_queues_of(key) {
            self.broker.remove_queue(q);
        }
        let mut c = self.conns.try_remove(key)?;
        self.usage.forget(&mut c);
        let churn = &mut self.broker.churn.now;
        churn.connection_closed += 1;
        churn.channel_closed += c.channels.len() as u64;
        info!("{}: connection closed", c.peer);
        Some(c)
    }

    /// Brings connection `key`'s share of the connection and channel tallies up to
    /// date (after it was handled; see `conn::usage`).
    fn reconcile(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            self.usage.reconcile(c);
        }
    }

    /// RabbitMQ's vhost deletion: the vhost's record, queues (their durable messages
    /// settled), exchanges and bindings go; its connections are closed with 320
    /// CONNECTION_FORCED "vhost 'X' is deleted" (rabbit_connection_tracking's text), their
    /// unacked messages settled as they are released (their queues are gone); the
    /// permissions on it are forgotten. False when no vhost has that name.
    pub fn delete_vhost(&mut self, name: &str) -> bool {
        let Some((id, vhost)) = self.broker.lookup_vhost(name.as_bytes()) else {
            return false;
        };
        info!("deleting vhost '{vhost}' and closing its connections");
        // The record goes first: a connection.open racing the deletion finds no vhost.
        let orphans = self.broker.delete_vhost(id).unwrap_or_default();
        let reason = format!("vhost '{vhost}' is deleted");
        let conns: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.vhost_id == id && !c.vhost.is_empty() && !c.is_closed())
            .map(|(k, _)| k)
            .collect();
        for conn in conns {
            self.apply(crate::ops::close_connection(conn, reason.clone()));
        }
        // Consumers on connections of other vhosts cannot exist (a queue is consumed in
        // its own vhost), but a cancel costs nothing and keeps the invariant local.
        for o in orphans {
            self.apply(Effect::Cancel {
                conn: o.conn,
                channel: o.channel,
                tag: o.tag,
            });
        }
        self.auth.forget_vhost(&vhost);
        // Logged where it fails; the vhost is gone either way.
        let _ = self.save_auth();
        true
    }

    /// Deletes the user `name` and closes its connections with 320 CONNECTION_FORCED
    /// "user 'X' is deleted", as RabbitMQ 3.10's connection tracking does; false when
    /// there is no such user. The caller saves the users file.
    pub fn delete_user(&mut self, name: &str) -> bool {
        if !self.auth.delete_user(name) {
            return false;
        }
        let reason = format!("user '{name}' is deleted");
        let conns: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user.name() == name && !c.is_closed())
            .map(|(k, _)| k)
            .collect();
        if !conns.is_empty() {
            info!(
                "closing {} connection(s) of deleted user '{name}'",
                conns.len()
            );
        }
        for conn in conns {
            self.apply(crate::ops::close_connection(conn, reason.clone()));
        }
        true
    }

    /// A bug panicked while handling connection `key`: that connection is closed (its
    /// channels released as on any close); the broker and everyone else go on.
    fn contained(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            log::error!(
                "{}: internal error while handling this connection; closing it",
                c.peer
            );
            c.state = State::Closed;
            c.out = Default::default();
        }
    }

    /// Marks a connection whose socket failed or hit EOF as closed.
    pub fn lost(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if c.state != State::Closed {
                if c.state == State::Running {
                    warn!("{}: client unexpectedly closed TCP connection", c.peer);
                }
                c.state = State::Closed;
            }
        }
        self.touch(key);
    }

    /// Shutdown: every open connection gets connection.close 320 CONNECTION_FORCED.
    pub fn shutdown(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            if let Some(mut s) = self.session(k) {
                s.force_close("broker forced connection closure with reason 'shutdown'");
            }
            self.touch(k);
        }
        self.apply_events();
    }

    /// One loop turn: every phase, in order. This is the only place the order is
    /// written; the reactor runs it with sockets, the in-process driver
    /// ([`Server::turn_without_io`]) without. `io` does the phases that touch sockets.
    pub fn turn<I: Io>(&mut self, io: &mut I) -> Result<(), I::Error> {
        // Read first because every later phase works on what this turn's frames did
        // (publishes routed, acks, credit, closes).
        // The queue clock is read lazily (first use after poll): a new turn, a new read.
        self.broker.tick();
        io.read(self)?;
        // Returns before dispatch because a closed channel's messages go back to their
        // queues' fronts, and must be there before those queues deliver again.
        self.returns();
        // Dispatch before sync because deliveries write ack and delivered records, and
        // the one fsync of the turn must cover them too.
        self.dispatch();
        // Sync before confirms because a confirm promises the message is on disk.
        self.sync();
        // Confirms before flush because they go out in this turn's vectored write.
        self.send_confirms();
        // Timers before flush because heartbeats and timeout closes are output too.
        self.run_timers();
        // Read-again after sync and timers because their alarm checks are what
        // unblock publishers (read next turn: no event will say their socket has input).
        io.read_again(&mut self.unblocked);
        // Flush before reap because a closing connection's last frames (close,
        // close-ok) must be written before its socket goes.
        io.flush(self);
        // Reap last because a reused slab key must never meet a stale event of this turn.
        io.reap(self);
        Ok(())
    }

    /// In-process driver: feeds bytes to a connection, runs it to quiescence, and
    /// returns everything it would have written. Used by unit tests and fuzz targets.
    pub fn feed(&mut self, key: usize, data: &[u8]) -> BytesMut {
        if let Some(c) = self.conns.get_mut(key) {
            c.push_input(data);
        }
        self.run_in_process(Some(key));
        self.conns
            .get_mut(key)
            .map(|c| c.out.take_all())
            .unwrap_or_default()
    }

    /// In-process driver without new input: runs turns (no sockets) until no phase has
    /// work left for the next turn (the budgets of returns and dispatch ran out).
    pub fn turn_without_io(&mut self) {
        self.run_in_process(None);
    }

    fn run_in_process(&mut self, key: Option<usize>) {
        let mut io = InProcess { key };
        loop {
            let Ok(()) = self.turn(&mut io);
            if !self.has_pending_work() {
                return;
            }
        }
    }
}

/// The phases of a loop turn that touch sockets, for [`Server::turn`]: the reactor's
/// implementation reads, writes and closes them; the in-process one has none.
pub trait Io {
    /// What can stop a turn (poll failing).
    type Error;
    /// Waits for readiness (not when work is pending), sets `server.now`, and handles
    /// the input of every ready connection (`Server::input`).
    fn read(&mut self, server: &mut Server) -> Result<(), Self::Error>;
    /// Takes connections to read again next turn although no event will say so
    /// (publishers unblocked by a cleared alarm); leaves `keys` empty.
    fn read_again(&mut self, keys: &mut Vec<usize>);
    /// Writes every connection that gained output this turn (`Server::take_touched`).
    fn flush(&mut self, server: &mut Server);
    /// Removes connections that closed this turn (`Server::remove`) and their sockets.
    fn reap(&mut self, server: &mut Server);
}

/// The in-process driver's I/O: input was pushed into the read buffer beforehand, output
/// stays in each connection's out-queue for the caller to take, and closed connections
/// stay until the caller removes them (tests look at them).
struct InProcess {
    /// A connection that was fed input, handled in the next read phase.
    key: Option<usize>,
}

impl Io for InProcess {
    type Error = std::convert::Infallible;

    fn read(&mut self, server: &mut Server) -> Result<(), Self::Error> {
        if let Some(k) = self.key.take() {
            while server.input(k) {}
        }
        Ok(())
    }

    fn read_again(&mut self, keys: &mut Vec<usize>) {
        // No socket holds unread input: everything fed was handled.
        keys.clear();
    }

    fn flush(&mut self, _: &mut Server) {}

    fn reap(&mut self, _: &mut Server) {}
}

/// The bytes of a frame, for tests: kind, channel, payload.
pub fn raw_frame(kind: u8, channel: u16, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.extend_from_slice(&[kind]);
    b.extend_from_slice(&channel.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b.extend_from_slice(&[frame::FRAME_END]);
    b.freeze()
}

#[cfg(test)]
mod tests {
    //! The connection state machine driven in-process: bytes in, frames out.
    use super::*;
    use crate::broker::dispatch::DELIVERIES_PER_TURN;
    use crate::broker::VhostId;
    use crate::proto::{basic, channel, connection, queue, FieldTable, Method};

    /// A client speaking through `Server::feed`.
    struct Client {
        server: Server,
        key: usize,
    }

    #[derive(Debug)]
    #[allow(dead_code)] // fields are read through Debug in assertion messages
    enum Out {
        Method(u16, Method),
        Header(u16, u64),
        Body(u16, Bytes),
        Heartbeat,
    }

    fn frames(mut b: &[u8]) -> Vec<Out> {
        let mut v = Vec::new();
        while let Ok(Some(h)) = frame::parse(b, 0) {
            let payload = Bytes::copy_from_slice(&b[7..7 + h.size as usize]);
            v.push(match h.kind {
                frame::FRAME_METHOD => Out::Method(
                    h.channel,
                    Method::decode(&payload).expect("server sent a bad method"),
                ),
                frame::FRAME_HEADER => Out::Header(
                    h.channel,
                    crate::proto::ContentHeader::parse(&payload)
                        .unwrap()
                        .body_size,
                ),
                frame::FRAME_BODY => Out::Body(h.channel, payload),
                _ => Out::Heartbeat,
            });
            b = &b[h.total_len()..];
        }
        v
    }

    impl Client {
        fn new() -> Client {
            Client::on(Server::new(Config::default()))
        }

        fn on(mut server: Server) -> Client {
            let key = server.open("127.0.0.1:40000".parse().unwrap(), None);
            Client { server, key }
        }

        fn send_raw(&mut self, data: &[u8]) -> Vec<Out> {
            let out = self.server.feed(self.key, data);
            frames(&out)
        }

        fn send(&mut self, ch: u16, m: Method) -> Vec<Out> {
            let mut b = BytesMut::new();
            frame::write_method(&mut b, ch, &m);
            self.send_raw(&b)
        }

        fn publish(&mut self, ch: u16, exchange: &str, key: &str, body: &[u8]) -> Vec<Out> {
            self.publish_with(ch, exchange, key, &[0, 0], body)
        }

        /// A publish with raw basic properties (`[0x10, 0, 2]`: delivery_mode 2).
        fn publish_with(
            &mut self,
            ch: u16,
            exchange: &str,
            key: &str,
            props: &[u8],
            body: &[u8],
        ) -> Vec<Out> {
            let mut b = BytesMut::new();
            let p = basic::Publish {
                exchange: Bytes::copy_from_slice(exchange.as_bytes()),
                routing_key: Bytes::copy_from_slice(key.as_bytes()),
                ..Default::default()
            };
            frame::write_method(&mut b, ch, &Method::BasicPublish(p));
            frame::write_content_header(&mut b, ch, body.len() as u64, props);
            frame::write_body(&mut b, ch, body, 131_072);
            self.send_raw(&b)
        }

        fn open() -> Client {
            Client::open_on(Server::new(Config::default()))
        }

        fn open_on(server: Server) -> Client {
            let mut c = Client::on(server);
            let out = c.send_raw(frame::PROTOCOL_HEADER);
            assert!(matches!(out[0], Out::Method(0, Method::ConnectionStart(_))));
            let ok = connection::StartOk {
                client_properties: FieldTable::new(),
                mechanism: Bytes::from_static(b"PLAIN"),
                response: Bytes::from_static(b"\0guest\0guest"),
                locale: Bytes::from_static(b"en_US"),
            };
            let out = c.send(0, Method::ConnectionStartOk(ok));
            assert!(
                matches!(out[0], Out::Method(0, Method::ConnectionTune(_))),
                "{out:?}"
            );
            let tune = connection::TuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 0,
            };
            assert!(c.send(0, Method::ConnectionTuneOk(tune)).is_empty());
            let open = connection::Open {
                virtual_host: Bytes::from_static(b"/"),
                ..Default::default()
            };
            let out = c.send(0, Method::ConnectionOpen(open));
            assert!(matches!(
                out[0],
                Out::Method(0, Method::ConnectionOpenOk(_))
            ));
            let out = c.send(1, Method::ChannelOpen(channel::Open::default()));
            assert!(matches!(out[0], Out::Method(1, Method::ChannelOpenOk(_))));
            c
        }

        fn declare(&mut self, name: &str) {
            let d = queue::Declare {
                queue: Bytes::copy_from_slice(name.as_bytes()),
                ..Default::default()
            };
            let out = self.send(1, Method::QueueDeclare(d));
            assert!(
                matches!(out[0], Out::Method(1, Method::QueueDeclareOk(_))),
                "{out:?}"
            );
        }
    }

    fn close_code(out: &[Out]) -> Option<(u16, u16)> {
        out.iter().find_map(|o| match o {
            Out::Method(ch, Method::ChannelClose(c)) => Some((*ch, c.reply_code)),
            Out::Method(0, Method::ConnectionClose(c)) => Some((0, c.reply_code)),
            _ => None,
        })
    }

    #[test]
    fn connection_snapshots_and_the_close_effect() {
        let mut a = Client::open();
        let info = a.server.conns[a.key].info();
        assert_eq!(
            (info.state, info.user.as_str(), &*info.vhost, info.channels),
            ("running", "guest", "/", 1)
        );
        let ch = a.server.conns[a.key].channels[0].info();
        assert_eq!((ch.number, ch.consumers, ch.confirm), (1, 0, false));
        a.server.apply(crate::ops::close_connection(
            a.key,
            "Closed via management plugin",
        ));
        let out = a.send_raw(&[]);
        assert!(
            out.iter().any(|o| matches!(o,
            Out::Method(0, Method::ConnectionClose(c))
                if c.reply_code == 320 && c.reply_text.ends_with(b"Closed via management plugin"))),
            "{out:?}"
        );
        assert_eq!(a.server.conns[a.key].info().state, "closing");
    }

    #[test]
    fn a_panic_while_handling_a_connection_closes_only_that_connection() {
        let mut a = Client::open();
        a.declare("q");
        a.server.contain_panics = true;
        let other = a.server.open("127.0.0.1:40001".parse().unwrap(), None);
        crate::conn::state::tests::PANIC_NEXT.with(|p| p.set(true));
        let out = a.server.feed(other, frame::PROTOCOL_HEADER);
        assert!(out.is_empty());
        assert_eq!(
            a.server.closed(),
            vec![other],
            "the faulty connection is closed"
        );
        a.server.remove(other);
        // The broker and the first connection go on.
        let out = a.publish(1, "", "q", b"still here");
        assert!(out.is_empty());
        let g = basic::Get {
            queue: Bytes::from_static(b"q"),
            no_ack: true,
            ..Default::default()
        };
        let out = a.send(1, Method::BasicGet(g));
        assert!(out
            .iter()
            .any(|o| matches!(o, Out::Body(_, b) if &b[..] == b"still here")));
    }

    #[test]
    fn guest_may_only_connect_from_loopback() {
        for (peer, caps, refused) in [
            ("10.1.2.3:5000", true, true),
            ("[::1]:5000", true, false),
            ("127.0.0.9:5000", true, false),
            // What a dual-stack listener (--bind ::) reports for 127.0.0.1.
            ("[::ffff:127.0.0.1]:5000", true, false),
            ("[::ffff:10.1.2.3]:5000", true, true),
            ("192.168.1.7:5000", false, true),
        ] {
            let mut server = Server::new(Config::default());
            let key = server.open(peer.parse().unwrap(), None);
            let out = frames(&server.feed(key, frame::PROTOCOL_HEADER));
            assert!(matches!(out[0], Out::Method(0, Method::ConnectionStart(_))));
            let mut cap_table = FieldTable::new();
            cap_table.insert(
                Bytes::from_static(b"authentication_failure_close"),
                crate::proto::FieldValue::Bool(caps),
            );
            let mut props = FieldTable::new();
            props.insert(
                Bytes::from_static(b"capabilities"),
                crate::proto::FieldValue::Table(cap_table),
            );
            let ok = connection::StartOk {
                client_properties: props,
                mechanism: Bytes::from_static(b"PLAIN"),
                response: Bytes::from_static(b"\0guest\0guest"),
                locale: Bytes::from_static(b"en_US"),
            };
            let mut b = BytesMut::new();
            frame::write_method(&mut b, 0, &Method::ConnectionStartOk(ok));
            let out = frames(&server.feed(key, &b));
            match (refused, caps) {
                (false, _) => assert!(
                    matches!(out[0], Out::Method(0, Method::ConnectionTune(_))),
                    "{peer}"
                ),
                (true, true) => assert_eq!(close_code(&out), Some((0, 403)), "{peer}"),
                // Without authentication_failure_close the socket is just closed.
                (true, false) => {
                    assert!(out.is_empty(), "{peer}");
                    assert_eq!(server.closed(), vec![key]);
                }
            }
        }
    }

    #[test]
    fn rarely_used_methods_get_their_replies() {
        let mut c = Client::open();
        let req = crate::proto::access::Request {
            realm: Bytes::from_static(b"/data"),
            ..Default::default()
        };
        let out = c.send(1, Method::AccessRequest(req));
        assert!(
            matches!(out[0], Out::Method(1, Method::AccessRequestOk(_))),
            "{out:?}"
        );
        let up = connection::UpdateSecret {
            new_secret: Bytes::from_static(b"guest"),
            reason: Bytes::new(),
        };
        let out = c.send(0, Method::ConnectionUpdateSecret(up));
        assert!(
            matches!(out[0], Out::Method(0, Method::ConnectionUpdateSecretOk(_))),
            "{out:?}"
        );

        // basic.recover-async requeues like basic.recover, without a reply.
        c.declare("q");
        c.publish(1, "", "q", b"m");
        let g = basic::Get {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        };
        c.send(1, Method::BasicGet(g.clone()));
        let out = c.send(
            1,
            Method::BasicRecoverAsync(basic::RecoverAsync { requeue: true }),
        );
        assert!(out.is_empty(), "{out:?}");
        let out = c.send(1, Method::BasicGet(g));
        assert!(out
            .iter()
            .any(|o| matches!(o, Out::Method(_, Method::BasicGetOk(ok)) if ok.redelivered)));
    }

    #[test]
    fn a_secure_ok_nobody_asked_for_is_an_error() {
        let mut c = Client::new();
        c.send_raw(frame::PROTOCOL_HEADER);
        let ok = connection::SecureOk {
            response: Bytes::from_static(b"x"),
        };
        let out = c.send(0, Method::ConnectionSecureOk(ok));
        assert_eq!(close_code(&out), Some((0, 503)));
    }

    #[test]
    fn wrong_protocol_header_gets_ours_back_and_closes() {
        let mut c = Client::new();
        let out = c.server.feed(c.key, b"AMQP\x01\x01\x00\x0a");
        assert_eq!(&out[..], frame::PROTOCOL_HEADER);
        assert_eq!(c.server.closed(), vec![c.key]);
    }

    #[test]
    fn publish_then_consume_round_robin() {
        let mut c = Client::open();
        c.declare("q");
        for tag in ["a", "b"] {
            let m = basic::Consume {
                queue: Bytes::from_static(b"q"),
                consumer_tag: Bytes::copy_from_slice(tag.as_bytes()),
                no_ack: true,
                ..Default::default()
            };
            c.send(1, Method::BasicConsume(m));
        }
        let mut tags = Vec::new();
        for i in 0..4 {
            let out = c.publish(1, "", "q", format!("m{i}").as_bytes());
            for o in out {
                if let Out::Method(_, Method::BasicDeliver(d)) = o {
                    tags.push(d.consumer_tag);
                }
            }
        }
        assert_eq!(tags, vec!["a", "b", "a", "b"]);
    }

    #[test]
    fn prefetch_one_holds_back_until_ack() {
        let mut c = Client::open();
        c.declare("q");
        c.send(
            1,
            Method::BasicQos(basic::Qos {
                prefetch_count: 1,
                ..Default::default()
            }),
        );
        let m = basic::Consume {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        };
        c.send(1, Method::BasicConsume(m));
        let first = c.publish(1, "", "q", b"1");
        assert!(first
            .iter()
            .any(|o| matches!(o, Out::Method(_, Method::BasicDeliver(_)))));
        let second = c.publish(1, "", "q", b"2");
        assert!(!second
            .iter()
            .any(|o| matches!(o, Out::Method(_, Method::BasicDeliver(_)))));
        let out = c.send(
            1,
            Method::BasicAck(basic::Ack {
                delivery_tag: 1,
                multiple: false,
            }),
        );
        assert!(out
            .iter()
            .any(|o| matches!(o, Out::Method(_, Method::BasicDeliver(d)) if d.delivery_tag == 2)));
    }

    #[test]
    fn channel_errors_close_the_channel_only() {
        let mut c = Client::open();
        let out = c.send(
            1,
            Method::BasicAck(basic::Ack {
                delivery_tag: 9,
                multiple: false,
            }),
        );
        assert_eq!(close_code(&out), Some((1, 406)));
        // Frames on a closing channel are discarded; close-ok frees the channel.
        assert!(c
            .send(1, Method::BasicQos(basic::Qos::default()))
            .is_empty());
        c.send(1, Method::ChannelCloseOk(channel::CloseOk {}));
        let out = c.send(1, Method::ChannelOpen(channel::Open::default()));
        assert!(matches!(out[0], Out::Method(1, Method::ChannelOpenOk(_))));
    }

    #[test]
    fn connection_errors_use_the_spec_codes() {
        let mut c = Client::open();
        let out = c.send(5, Method::BasicQos(basic::Qos::default()));
        assert_eq!(
            close_code(&out),
            Some((0, 504)),
            "method on an unopened channel"
        );

        let mut c = Client::open();
        let out = c.send_raw(&raw_frame(
            frame::FRAME_HEADER,
            1,
            &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ));
        assert_eq!(
            close_code(&out),
            Some((0, 505)),
            "content header without a method"
        );

        let mut c = Client::open();
        let out = c.send_raw(&[1, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            close_code(&out),
            Some((0, 501)),
            "frame larger than frame_max, header only"
        );

        let mut c = Client::open();
        let out = c.send_raw(&raw_frame(frame::FRAME_HEARTBEAT, 1, &[]));
        assert_eq!(
            close_code(&out),
            Some((0, 505)),
            "heartbeat on a non-zero channel"
        );
    }

    #[test]
    fn body_longer_than_declared_is_an_unexpected_frame() {
        let mut c = Client::open();
        let mut b = BytesMut::new();
        let p = basic::Publish {
            routing_key: Bytes::from_static(b"q"),
            ..Default::default()
        };
        frame::write_method(&mut b, 1, &Method::BasicPublish(p));
        frame::write_content_header(&mut b, 1, 2, &[0, 0]);
        frame::write_body(&mut b, 1, b"abc", 131_072);
        let out = c.send_raw(&b);
        assert_eq!(close_code(&out), Some((0, 505)));
    }

    #[test]
    fn confirms_become_nacks_when_the_store_cannot_sync() {
        let dir = tempfile::TempDir::new().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let mut c = Client::open_on(Server::with_store(config).unwrap());
        let d = queue::Declare {
            queue: Bytes::from_static(b"dq"),
            durable: true,
            ..Default::default()
        };
        c.send(1, Method::QueueDeclare(d));
        let out = c.send(
            1,
            Method::ConfirmSelect(crate::proto::confirm::Select::default()),
        );
        assert!(matches!(out[0], Out::Method(1, Method::ConfirmSelectOk(_))));
        let persistent = [0x10, 0, 2];

        crate::store::FAIL_NEXT_SYNC.with(|f| f.set(true));
        let out = c.publish_with(1, "", "dq", &persistent, b"unsure");
        assert!(
            matches!(
                &out[..],
                [Out::Method(1, Method::BasicNack(n))] if n.delivery_tag == 1 && !n.multiple
            ),
            "{out:?}"
        );
        // The disk is back: the next publish is confirmed, the nacked one is not re-acked.
        let out = c.publish_with(1, "", "dq", &persistent, b"sure");
        assert!(
            matches!(
                &out[..],
                [Out::Method(1, Method::BasicAck(a))] if a.delivery_tag == 2 && !a.multiple
            ),
            "{out:?}"
        );
    }

    /// After close-ok only the socket lingers: channels, consumers and unacked messages
    /// are released and exclusive queues deleted at close-ok time, not when the client
    /// finally closes its socket.
    #[test]
    fn a_lingering_connection_holds_nothing_but_its_socket() {
        let mut c = Client::open();
        c.declare("q");
        let d = queue::Declare {
            queue: Bytes::from_static(b"excl"),
            exclusive: true,
            ..Default::default()
        };
        c.send(1, Method::QueueDeclare(d));
        c.publish(1, "", "q", b"m");
        let m = basic::Consume {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        };
        let out = c.send(1, Method::BasicConsume(m));
        assert!(out
            .iter()
            .any(|o| matches!(o, Out::Method(_, Method::BasicDeliver(_)))));
        let out = c.send(0, Method::ConnectionClose(connection::Close::default()));
        assert!(matches!(
            out[..],
            [Out::Method(0, Method::ConnectionCloseOk(_))]
        ));
        let conn = &c.server.conns[c.key];
        assert_eq!(conn.state, State::Lingering);
        assert!(conn.channels.is_empty());
        assert!(c.server.closed().is_empty(), "the socket is not reaped yet");
        assert!(c
            .server
            .broker
            .queue_id(VhostId::DEFAULT, b"excl")
            .is_none());
        let q = c.server.broker.queue_id(VhostId::DEFAULT, b"q").unwrap();
        let q = c.server.broker.queue(q).unwrap();
        assert_eq!(
            (q.len(), q.consumer_count()),
            (1, 0),
            "requeued, no consumer"
        );
        // Whatever still arrives is dropped without a reply.
        assert!(c
            .send(1, Method::BasicQos(basic::Qos::default()))
            .is_empty());
    }

    #[test]
    fn unacked_messages_return_in_order_when_the_channel_closes() {
        let mut c = Client::open();
        c.declare("q");
        for b in ["1", "2", "3"] {
            c.publish(1, "", "q", b.as_bytes());
        }
        let m = basic::Consume {
            queue: Bytes::from_static(b"q"),
            ..Default::default()
        };
        c.send(1, Method::BasicConsume(m));
        c.send(1, Method::ChannelClose(channel::Close::default()));
        c.send(2, Method::ChannelOpen(channel::Open::default()));
        let mut got = Vec::new();
        for _ in 0..3 {
            let g = basic::Get {
                queue: Bytes::from_static(b"q"),
                no_ack: true,
                ..Default::default()
            };
            let out = c.send(2, Method::BasicGet(g));
            let redelivered = out
                .iter()
                .any(|o| matches!(o, Out::Method(_, Method::BasicGetOk(g)) if g.redelivered));
            let body = out.iter().find_map(|o| match o {
                Out::Body(_, b) => Some(b.clone()),
                _ => None,
            });
            got.push((body.unwrap(), redelivered));
        }
        assert_eq!(
            got,
            vec![
                (Bytes::from("1"), true),
                (Bytes::from("2"), true),
                (Bytes::from("3"), true)
            ]
        );
    }

    #[test]
    fn a_large_unacked_set_comes_back_over_turns_and_holds_its_queue_meanwhile() {
        let n = RETURNS_PER_TURN + 1000;
        let mut c = Client::open();
        c.declare("q");
        for i in 0..n {
            c.publish(1, "", "q", format!("{i}").as_bytes());
        }
        let consume = |no_ack| {
            Method::BasicConsume(basic::Consume {
                queue: Bytes::from_static(b"q"),
                no_ack,
                ..Default::default()
            })
        };
        let out = c.send(1, consume(false));
        let delivered = out
            .iter()
            .filter(|o| matches!(o, Out::Method(1, Method::BasicDeliver(_))))
            .count();
        assert_eq!(
            delivered, n,
            "no prefetch limit: channel 1 holds everything"
        );
        c.send(2, Method::ChannelOpen(channel::Open::default()));
        assert!(c
            .send(2, consume(true))
            .iter()
            .all(|o| !matches!(o, Out::Method(_, Method::BasicDeliver(_)))));

        // Channel 1 closes: its set goes back a budget per turn, not at once.
        let mut b = BytesMut::new();
        frame::write_method(&mut b, 1, &Method::ChannelClose(channel::Close::default()));
        c.server.conns[c.key].push_input(&b);
        c.server.input(c.key);
        let count = |s: &Server| {
            s.broker
                .queue(s.broker.queue_id(VhostId::DEFAULT, b"q").unwrap())
                .unwrap()
                .len()
        };
        assert_eq!(count(&c.server), 0);
        assert!(c.server.has_pending_work());
        assert!(c.server.returns(), "more than one turn's budget");
        assert_eq!(count(&c.server), RETURNS_PER_TURN);
        // A publish meanwhile marks the queue for dispatch.
        let mut b = BytesMut::new();
        let p = basic::Publish {
            routing_key: Bytes::from_static(b"q"),
            ..Default::default()
        };
        frame::write_method(&mut b, 2, &Method::BasicPublish(p));
        frame::write_content_header(&mut b, 2, 3, &[0, 0]);
        frame::write_body(&mut b, 2, b"new", 131_072);
        c.server.conns[c.key].push_input(&b);
        c.server.input(c.key);
        assert_eq!(count(&c.server), RETURNS_PER_TURN + 1);
        c.server.dispatch();
        let out = frames(&c.server.conns[c.key].out.take_all());
        assert!(
            !out.iter()
                .any(|o| matches!(o, Out::Method(_, Method::BasicDeliver(_)))),
            "a queue with part of a set back is not dispatched"
        );
        assert!(!c.server.returns(), "the rest fits in the second turn");
        assert_eq!(count(&c.server), n + 1);
        c.server.dispatch();
        let out = frames(&c.server.conns[c.key].out.take_all());
        let mut got = Vec::new();
        for o in &out {
            match o {
                Out::Method(2, Method::BasicDeliver(d)) => assert!(d.redelivered),
                Out::Body(2, body) => got.push(String::from_utf8_lossy(body).into_owned()),
                _ => {}
            }
        }
        assert_eq!(got.len(), DELIVERIES_PER_TURN, "one turn's dispatch budget");
        let want: Vec<String> = (0..DELIVERIES_PER_TURN).map(|i| i.to_string()).collect();
        assert_eq!(got, want, "back in publish order");
        assert!(
            c.server.has_pending_work(),
            "the queue is dispatched again next turn"
        );
    }

    /// Channel operations ask auth where RabbitMQ does: with guest narrowed to write-only
    /// on "/", each one below closes its channel with 403 and RabbitMQ's text, and a
    /// publish goes through until write is taken away too.
    #[test]
    fn channel_operations_are_authorized_where_rabbitmq_checks() {
        use crate::auth::{Pattern, Permissions};
        use crate::proto::exchange;
        let mut c = Client::open();
        c.declare("q");
        let only = |write| Permissions {
            configure: Pattern::Nothing,
            write,
            read: Pattern::Nothing,
        };
        assert!(c
            .server
            .auth
            .set_permissions("guest", "/", only(Pattern::Any)));
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let refused = |what: &str| {
            format!("ACCESS_REFUSED - access to {what} in vhost '/' refused for user 'guest'")
        };
        let cases = [
            (
                Method::QueueDeclare(queue::Declare {
                    queue: b("q2"),
                    ..Default::default()
                }),
                refused("queue 'q2'"),
            ),
            (
                Method::ExchangeDeclare(exchange::Declare {
                    exchange: b("x"),
                    kind: b("direct"),
                    ..Default::default()
                }),
                refused("exchange 'x'"),
            ),
            (
                Method::ExchangeDelete(exchange::Delete {
                    exchange: b("x"),
                    ..Default::default()
                }),
                refused("exchange 'x'"),
            ),
            (
                Method::QueueDelete(queue::Delete {
                    queue: b("q"),
                    ..Default::default()
                }),
                refused("queue 'q'"),
            ),
            (
                Method::QueuePurge(queue::Purge {
                    queue: b("q"),
                    ..Default::default()
                }),
                refused("queue 'q'"),
            ),
            (
                Method::BasicGet(basic::Get {
                    queue: b("q"),
                    ..Default::default()
                }),
                refused("queue 'q'"),
            ),
            (
                Method::BasicConsume(basic::Consume {
                    queue: b("q"),
                    ..Default::default()
                }),
                refused("queue 'q'"),
            ),
            // Write on the queue is allowed; read on the source exchange is not.
            (
                Method::QueueBind(queue::Bind {
                    queue: b("q"),
                    exchange: b("amq.direct"),
                    ..Default::default()
                }),
                refused("exchange 'amq.direct'"),
            ),
        ];
        for (m, want) in cases {
            let name = m.name();
            let out = c.send(1, m);
            let text = out.iter().find_map(|o| match o {
                Out::Method(1, Method::ChannelClose(x)) if x.reply_code == 403 => {
                    Some(String::from_utf8_lossy(&x.reply_text).into_owned())
                }
                _ => None,
            });
            assert_eq!(text.as_deref(), Some(want.as_str()), "{name}: {out:?}");
            c.send(1, Method::ChannelCloseOk(channel::CloseOk {}));
            c.send(1, Method::ChannelOpen(channel::Open::default()));
        }
        // A server-named queue is checked under the name it would get.
        let out = c.send(1, Method::QueueDeclare(queue::Declare::default()));
        assert!(
            out.iter()
                .any(|o| matches!(o, Out::Method(1, Method::ChannelClose(x))
                if x.reply_text.starts_with(b"ACCESS_REFUSED - access to queue 'amq.gen-"))),
            "{out:?}"
        );
        let out = c.send(2, Method::ChannelOpen(channel::Open::default()));
        assert!(matches!(out[0], Out::Method(2, Method::ChannelOpenOk(_))));
        assert!(c.publish(2, "", "q", b"allowed").is_empty());
        assert!(c
            .server
            .auth
            .set_permissions("guest", "/", only(Pattern::Nothing)));
        let out = c.send(3, Method::ChannelOpen(channel::Open::default()));
        assert!(matches!(out[0], Out::Method(3, Method::ChannelOpenOk(_))));
        let out = c.publish(3, "", "q", b"refused");
        assert_eq!(close_code(&out), Some((3, 403)), "{out:?}");
    }

    /// The statistics counters (issue 10) move where RabbitMQ's do: per queue, exchange,
    /// channel and globally, for publishes, unroutables, confirms, deliveries, gets,
    /// acks and redeliveries; the sampler turns them into rates.
    #[test]
    fn a_queue_keeps_ten_minutes_of_chart_samples_and_forgets_them_when_deleted() {
        let mut c = Client::open();
        c.declare("q");
        // Three intervals: 2 publishes, then 3, then none.
        for n in [2, 3, 0] {
            for _ in 0..n {
                c.publish(1, "", "q", b"m");
            }
            crate::mgmt::stats::sample(&mut c.server);
        }
        let v = c.server.broker.lookup_vhost(b"/").unwrap().0;
        let id = c.server.broker.queue_id(v, b"q").unwrap();
        let mut m = serde_json::Map::new();
        m.insert("message_stats".into(), serde_json::json!({}));
        let interval = c.server.config.stats_interval.as_secs();
        crate::mgmt::stats::queue_history(
            &c.server,
            id,
            Some((4 * interval, interval)),
            Some((4 * interval, interval)),
            &mut m,
        );
        let samples = |v: &serde_json::Value| -> Vec<u64> {
            v["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["sample"].as_u64().unwrap())
                .collect()
        };
        // Newest first: 5 published as of the last two samples, 2 before, 0 before
        // that, and the oldest known value beyond the history.
        let publish = &m["message_stats"]["publish_details"];
        assert_eq!(samples(publish), [5, 5, 2, 0, 0], "{publish}");
        assert_eq!(samples(&m["messages_ready_details"]), [5, 5, 2, 2, 2]);
        // A deleted queue's history goes at the next sample.
        let mut effects = Vec::new();
        crate::ops::delete_queue(&mut c.server.broker, id, false, false, &mut effects).unwrap();
        crate::mgmt::stats::sample(&mut c.server);
        let mut m = serde_json::Map::new();
        m.insert("message_stats".into(), serde_json::json!({}));
        crate::mgmt::stats::queue_history(&c.server, id, Some((60, 5)), None, &mut m);
        assert_eq!(m["message_stats"], serde_json::json!({}));
    }

    #[test]
    fn statistics_counters_follow_publish_deliver_get_and_ack() {
        let mut c = Client::open();
        c.declare("q");
        c.send(
            1,
            Method::ConfirmSelect(crate::proto::confirm::Select::default()),
        );
        for b in ["1", "2", "3"] {
            c.publish(1, "", "q", b.as_bytes());
        }
        c.publish(1, "", "nowhere", b"dropped");
        let mut b = BytesMut::new();
        let p = basic::Publish {
            routing_key: Bytes::from_static(b"nowhere"),
            mandatory: true,
            ..Default::default()
        };
        frame::write_method(&mut b, 1, &Method::BasicPublish(p));
        frame::write_content_header(&mut b, 1, 1, &[0, 0]);
        frame::write_body(&mut b, 1, b"r", 131_072);
        let out = c.send_raw(&b);
        assert!(out
            .iter()
            .any(|o| matches!(o, Out::Method(1, Method::BasicReturn(_)))));
        // Manual-ack consumer gets 1, 2, 3; acks 1, cancels, nacks 2 and 3 (requeued).
        let m = basic::Consume {
            queue: Bytes::from_static(b"q"),
            consumer_tag: Bytes::from_static(b"t"),
            ..Default::default()
        };
        c.send(1, Method::BasicConsume(m));
        c.send(
            1,
            Method::BasicAck(basic::Ack {
                delivery_tag: 1,
                multiple: false,
            }),
        );
        let cancel = basic::Cancel {
            consumer_tag: Bytes::from_static(b"t"),
            nowait: false,
        };
        c.send(1, Method::BasicCancel(cancel));
        let nack = basic::Nack {
            delivery_tag: 3,
            multiple: true,
            requeue: true,
        };
        c.send(1, Method::BasicNack(nack));
        // basic.get with no-ack takes the requeued 2, then with manual ack 3 (both
        // redelivered), acked, then the queue is empty.
        let get = |no_ack| {
            Method::BasicGet(basic::Get {
                queue: Bytes::from_static(b"q"),
                no_ack,
                ..Default::default()
            })
        };
        c.send(1, get(true));
        c.send(1, get(false));
        c.send(
            1,
            Method::BasicAck(basic::Ack {
                delivery_tag: 5,
                multiple: false,
            }),
        );
        c.send(1, get(true));

        let g = c.server.broker.counters;
        assert_eq!((g.publish, g.routed, g.publish_confirm), (5, 3, 5));
        assert_eq!(
            (g.drop_unroutable, g.return_unroutable, g.confirm),
            (1, 1, 5)
        );
        assert_eq!(
            (g.deliver, g.deliver_no_ack, g.get, g.get_no_ack),
            (3, 0, 1, 1)
        );
        assert_eq!((g.get_empty, g.ack, g.redeliver), (1, 2, 2));
        let ch = &c.server.conns[c.key].channels[0].stats.now;
        assert_eq!(
            (
                ch.publish,
                ch.confirm,
                ch.deliver,
                ch.get,
                ch.get_no_ack,
                ch.ack
            ),
            (5, 5, 3, 1, 1, 2)
        );
        assert_eq!((ch.get_empty, ch.redeliver, ch.drop_unroutable), (1, 2, 1));
        let qid = c.server.broker.queue_id(VhostId::DEFAULT, b"q").unwrap();
        let q = c
            .server
            .broker
            .queue(qid)
            .unwrap()
            .stats
            .as_ref()
            .unwrap()
            .now;
        assert_eq!(
            (q.publish, q.deliver, q.get, q.get_no_ack, q.ack),
            (3, 3, 1, 1, 2)
        );
        assert_eq!((q.get_empty, q.redeliver), (1, 2));
        let x = c.server.broker.exchange_id(VhostId::DEFAULT, b"").unwrap();
        let x = c
            .server
            .broker
            .exchange(x)
            .unwrap()
            .stats
            .as_ref()
            .unwrap()
            .now;
        assert_eq!((x.publish, x.routed), (5, 3), "publish_in, publish_out");

        // Two samples one interval apart give the rate of the counts between them.
        crate::mgmt::stats::sample(&mut c.server);
        c.publish(1, "", "q", b"4");
        crate::mgmt::stats::sample(&mut c.server);
        let v = crate::mgmt::stats::queue_message_stats(&c.server, "/", "q").unwrap();
        assert_eq!(v["publish"], 4);
        assert_eq!(v["publish_details"]["rate"], 0.2, "1 message in 5 s");
        assert_eq!(v["deliver_get"], 5);
        assert!(crate::mgmt::stats::queue_message_stats(&c.server, "/", "nope").is_none());
    }
}
