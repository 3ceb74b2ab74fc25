//! Message rates: the sampler that turns the hot path's counters (`crate::counters`)
//! into rates on a fixed interval, the ring of global samples that the overview's
//! charts draw, and RabbitMQ's `message_stats` JSON for queues, exchanges, channels,
//! connections and the overview.
//!
//! What is kept, and why: every object keeps its live counters and their values at the
//! last two samples (`counters::Sampled`), enough for the current rate. The global
//! counters keep a ring (10 minutes of samples) for the overview's charts, and every
//! queue that has seen traffic keeps its own (publish, deliver/get, ack and redeliver
//! increments and its lengths, 24 bytes a sample: about 2.9 KB at the default interval)
//! for its page's charts; an idle queue keeps nothing, so 100,000 idle queues cost no
//! ring each. Exchanges (`publish_in`/`publish_out`), channels (their `message_stats`
//! fields) and connections (`recv_oct`/`send_oct`) keep a [`History`]: one ring of
//! increments per counter that moved within the window, so an object keeps rings only
//! for what it does (a publisher's channel: publish and confirm), an object idle for
//! the whole window keeps none, and a closed or deleted one loses its history at the
//! next sample. Sampling is a timer in the server's timers phase ([`Sampler::due`],
//! [`sample`]): one pass over the objects per `--stats-interval`, nothing per message.
//!
//! Memory at the default 5 s interval (121 samples a ring): a message counter's ring is
//! 484 bytes (u32 increments), a byte counter's 968 (u64: a connection can move more
//! than 4 GiB in a long interval); with the bookkeeping (ring and map entry headers,
//! the counters at the newest sample) an exchange with traffic in and out costs 1,120
//! bytes, a publisher's or a consumer's channel (two counters moving) 1,208, a channel
//! with all eleven moving 5,996, a connection 2,096 (`bytes_per_object_history` pins
//! these), plus the hash maps' slack. Since heartbeats are traffic, every open
//! connection keeps its 2 KB; an exchange or channel idle for 10 minutes keeps none.
//!
//! Owns the `Sampler` (a field of the server); reads the broker and the connections.

use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use crate::broker::QueueId;
use crate::counters::{IoCounters, MsgCounters, Sampled};
use crate::server::Server;

/// How far back the global ring reaches (RabbitMQ's default `msg_rates_age` window
/// of the overview's charts).
pub const HISTORY: Duration = Duration::from_secs(600);

/// The sampler's state: when the next sample is due, and the global ring.
#[derive(Debug, Default)]
pub struct Sampler {
    next: Option<Instant>,
    /// The global counters with their last two samples (the overview's rates).
    pub global: Sampled<MsgCounters>,
    /// (wall-clock milliseconds aligned to the interval, global counters), oldest first.
    ring: VecDeque<(u64, MsgCounters)>,
    /// The ring has dropped samples: older times are unknown rather than 0.
    dropped: bool,
    /// Messages and consumers over all queues at the last sample (None before it).
    pub queue_totals: Option<crate::broker::QueueTotals>,
    /// Per-queue history for the charts of a queue's page, for queues that ever
    /// counted something (see [`QueueHistory`]).
    queues: HashMap<QueueId, QueueHistory>,
    /// Samples taken so far (marks which histories were seen in the last pass).
    samples: u64,
    /// Per-exchange history (`publish_in`, `publish_out`); ids are generational, so a
    /// re-declared exchange in a reused slot is a different key.
    exchanges: HashMap<crate::broker::ExchangeId, History<u32, 2>>,
    /// Per-channel history of the [`CHANNEL_FIELDS`], by connection and channel number.
    channels: HashMap<(ConnKey, u16), History<u32, CHANNEL_N>>,
    /// Per-connection history of `recv_oct` and `send_oct`.
    connections: HashMap<ConnKey, History<u64, 2>>,
}

/// A connection in the history maps: its slab key with its accept time, so a key the
/// slab hands to the next connection does not name the old one's history. (Two
/// connections in one slot within one millisecond are told apart by
/// [`History::record`]'s continuity check.)
type ConnKey = (usize, u64);

/// A counter increment kept in a ring: u32 for message counts (an interval never sees
/// 4 billion of one thing on one object), u64 for byte counts.
trait Incr: Copy + Into<u64> {
    fn saturating(v: u64) -> Self;
}

impl Incr for u32 {
    fn saturating(v: u64) -> Self {
        u32::try_from(v).unwrap_or(u32::MAX)
    }
}

impl Incr for u64 {
    fn saturating(v: u64) -> Self {
        v
    }
}

/// One counter's increments, one per sample, newest last, from the sample at which it
/// first moved (the increments before were 0).
#[derive(Debug)]
struct Series<T> {
    /// Which of the object's counters (an index into its `[u64; N]`).
    field: u8,
    ring: VecDeque<T>,
    /// The sample number of its newest nonzero increment: once a whole window has
    /// passed since, the ring is all zeros and is dropped.
    moved: u64,
}

/// The history of one exchange, channel or connection over the last 10 minutes: a
/// [`Series`] for each of its `N` counters that moved within the window, and the
/// counters at the newest sample. A counter without a series was flat all window.
#[derive(Debug)]
struct History<T, const N: usize> {
    /// The object's counters at the newest sample (never all 0: an object that never
    /// counted has no history).
    last: [u64; N],
    series: Vec<Series<T>>,
    /// The sample number at which the object was last seen.
    seen: u64,
}

impl<T: Incr, const N: usize> History<T, N> {
    /// Records sample number `n` of an object whose counters were `prev` at the
    /// sample before and are `last` now (its `Sampled::prev`/`last` after sampling),
    /// in `map` under `key`. An entry under `key` whose newest counters are not `prev`
    /// belonged to another object (a reused slab key or channel number: the new one did
    /// not exist at the sample before, so its `prev` is 0, while a history's `last` is
    /// never all 0) and is replaced. Objects that never counted get no entry.
    fn record<K: std::hash::Hash + Eq>(
        map: &mut HashMap<K, Self>,
        key: K,
        prev: [u64; N],
        last: [u64; N],
        n: u64,
        cap: usize,
    ) {
        use std::collections::hash_map::Entry;
        if last == [0; N] {
            return;
        }
        let fresh = || History {
            last: [0; N],
            series: Vec::new(),
            seen: 0,
        };
        let h = match map.entry(key) {
            Entry::Occupied(e) if e.get().last == prev => e.into_mut(),
            Entry::Occupied(mut e) => {
                e.insert(fresh());
                e.into_mut()
            }
            Entry::Vacant(e) => e.insert(fresh()),
        };
        for i in 0..N {
            let d = last[i].saturating_sub(prev[i]);
            match h.series.iter_mut().find(|s| usize::from(s.field) == i) {
                Some(s) => {
                    while s.ring.len() >= cap {
                        s.ring.pop_front();
                    }
                    s.ring.push_back(T::saturating(d));
                    if d > 0 {
                        s.moved = n;
                    }
                }
                None if d > 0 => {
                    let mut ring = VecDeque::with_capacity(cap);
                    ring.push_back(T::saturating(d));
                    // One series at a time: a publisher's channel keeps two, not four.
                    h.series.reserve_exact(1);
                    h.series.push(Series {
                        field: i as u8,
                        ring,
                        moved: n,
                    });
                }
                None => {}
            }
        }
        h.series.retain(|s| n - s.moved < cap as u64);
        h.last = last;
        h.seen = n;
    }

    /// The bytes this history holds on the heap beside its map entry (tests pin the
    /// figures in the module header).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.series.capacity() * std::mem::size_of::<Series<T>>()
            + self
                .series
                .iter()
                .map(|s| s.ring.capacity() * std::mem::size_of::<T>())
                .sum::<usize>()
    }

    /// Whether to keep this history after sample `n`: its object was seen in it and
    /// moved within the window.
    fn kept(&self, n: u64) -> bool {
        self.seen == n && !self.series.is_empty()
    }

    /// The counters `k` samples before the newest, for each `k` of `points`, given the
    /// newest ones `last`. Before a series' oldest increment the counter is taken as
    /// it was then (older samples are unknown, or were flat).
    fn cumulative(h: Option<&Self>, last: [u64; N], points: &[(u64, usize)]) -> Vec<[u64; N]> {
        let mut out = vec![last; points.len()];
        let Some(h) = h else {
            return out;
        };
        for s in &h.series {
            let i = usize::from(s.field);
            // cum[k]: the counter k samples back.
            let mut cum = Vec::with_capacity(s.ring.len() + 1);
            let mut v = last[i];
            cum.push(v);
            for d in s.ring.iter().rev() {
                v = v.saturating_sub((*d).into());
                cum.push(v);
            }
            for (o, (_, k)) in out.iter_mut().zip(points) {
                o[i] = cum[(*k).min(cum.len() - 1)];
            }
        }
        out
    }
}

/// The counters a channel's history keeps, in the order of its `[u64; N]`: every
/// channel `message_stats` field but `deliver_get`, which is their sum.
const CHANNEL_N: usize = 11;

fn channel_values(c: &MsgCounters) -> [u64; CHANNEL_N] {
    [
        c.publish,
        c.confirm,
        c.return_unroutable,
        c.drop_unroutable,
        c.deliver,
        c.deliver_no_ack,
        c.get,
        c.get_no_ack,
        c.get_empty,
        c.ack,
        c.redeliver,
    ]
}

fn channel_counters(v: &[u64; CHANNEL_N]) -> MsgCounters {
    MsgCounters {
        publish: v[0],
        confirm: v[1],
        return_unroutable: v[2],
        drop_unroutable: v[3],
        deliver: v[4],
        deliver_no_ack: v[5],
        get: v[6],
        get_no_ack: v[7],
        get_empty: v[8],
        ack: v[9],
        redeliver: v[10],
        ..MsgCounters::default()
    }
}

fn exchange_values(c: &MsgCounters) -> [u64; 2] {
    [c.publish, c.routed]
}

fn exchange_counters(v: &[u64; 2]) -> MsgCounters {
    MsgCounters {
        publish: v[0],
        routed: v[1],
        ..MsgCounters::default()
    }
}

fn io_values(c: &IoCounters) -> [u64; 2] {
    [c.recv_oct, c.send_oct]
}

fn io_counters(v: &[u64; 2]) -> IoCounters {
    IoCounters {
        recv_oct: v[0],
        send_oct: v[1],
        ..IoCounters::default()
    }
}

/// The byte counters whose samples a connection shows (`data_rates_age`).
const CONNECTION_DATA: &[FieldOf<IoCounters>] =
    &[("recv_oct", |c| c.recv_oct), ("send_oct", |c| c.send_oct)];

/// The chart series of one queue over the last 10 minutes, one entry per sample,
/// newest last: the message counters as increments since the sample before (u32: an
/// interval never sees 4 billion of one thing on one queue) and the queue's lengths.
/// 24 bytes a sample, about 2.9 KB for a queue with traffic at the default interval;
/// an idle queue (no statistics box) has none.
#[derive(Debug, Default)]
struct QueueHistory {
    /// [publish, deliver_get, ack, redeliver] increments, [ready, unacked] levels.
    ring: VecDeque<[u32; 6]>,
    /// The sample number at which this queue was last seen (a deleted queue's history
    /// is dropped at the next sample).
    seen: u64,
}

/// The queue series' names in RabbitMQ's `message_stats` and lengths.
const QUEUE_RATES: [&str; 4] = ["publish", "deliver_get", "ack", "redeliver"];
const QUEUE_LENGTHS: [&str; 2] = ["messages_ready", "messages_unacknowledged"];

impl Sampler {
    /// Whether a sample is due at `now` (the first call schedules the first sample one
    /// interval later).
    pub fn due(&mut self, now: Instant, interval: Duration) -> bool {
        match self.next {
            None => {
                self.next = Some(now + interval);
                false
            }
            Some(t) if now >= t => {
                // Catch up from `now`, not `t`: a stalled loop does not sample in a burst.
                self.next = Some(now + interval);
                true
            }
            Some(_) => false,
        }
    }

    /// Records a global sample taken at wall-clock `ts_ms` (aligned to the interval).
    fn record(&mut self, ts_ms: u64, counters: MsgCounters, interval: Duration) {
        self.global.now = counters;
        self.global.sample();
        let cap = (HISTORY.as_millis() / interval.as_millis().max(1)) as usize + 1;
        while self.ring.len() >= cap {
            self.ring.pop_front();
            self.dropped = true;
        }
        self.ring.push_back((ts_ms, counters));
    }

    /// The global counters at wall-clock time `t_ms`: the newest sample at or before it.
    fn at(&self, t_ms: u64) -> MsgCounters {
        let i = self.ring.partition_point(|(ts, _)| *ts <= t_ms);
        match (i, self.ring.front()) {
            (0, Some((_, oldest))) if self.dropped => *oldest,
            (0, _) => MsgCounters::default(),
            (i, _) => self.ring[i - 1].1,
        }
    }
}

/// Wall-clock milliseconds, rounded down to a multiple of `interval` (RabbitMQ's
/// sample timestamps are aligned so).
fn aligned_now_ms(interval: Duration) -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let step = interval.as_millis().max(1) as u64;
    ms - ms % step
}

/// The timers phase's sampling: when a sample is due, every queue, exchange, channel
/// and connection that counted something records its counters, and the global counters
/// go into the ring. One pass over the objects per interval.
pub fn maybe_sample(server: &mut Server) {
    let interval = server.config.stats_interval;
    if server.sampler.due(server.now, interval) {
        sample(server);
    }
}

/// Takes a sample now (the timer, and tests).
pub fn sample(server: &mut Server) {
    let interval = server.config.stats_interval;
    let totals = server.broker.sample_stats();
    server.sampler.queue_totals = Some(totals);
    for (_, c) in server.conns.iter_mut() {
        c.io.sample();
        for ch in c.channels.iter_mut() {
            ch.stats.sample();
        }
    }
    server.broker.churn.sample();
    let counters = server.broker.counters;
    server
        .sampler
        .record(aligned_now_ms(interval), counters, interval);
    record_queues(server);
    record_objects(server);
}

/// Appends this sample to the history of every exchange, channel and connection that
/// counted something, and drops the histories of objects that are gone or were idle
/// for the whole window. Runs after [`record_queues`] (which numbers the sample).
fn record_objects(server: &mut Server) {
    let cap = (HISTORY.as_millis() / server.config.stats_interval.as_millis().max(1)) as usize + 1;
    let sampler = &mut server.sampler;
    let n = sampler.samples;
    for (id, x) in server.broker.exchanges() {
        if let Some(st) = x.stats.as_deref() {
            let (prev, last) = (exchange_values(&st.prev), exchange_values(&st.last));
            History::record(&mut sampler.exchanges, id, prev, last, n, cap);
        }
    }
    for (key, c) in server.conns.iter() {
        let ck: ConnKey = (key, c.connected_at);
        let (prev, last) = (io_values(&c.io.prev), io_values(&c.io.last));
        History::record(&mut sampler.connections, ck, prev, last, n, cap);
        for ch in &c.channels {
            let (prev, last) = (
                channel_values(&ch.stats.prev),
                channel_values(&ch.stats.last),
            );
            History::record(&mut sampler.channels, (ck, ch.id), prev, last, n, cap);
        }
    }
    sampler.exchanges.retain(|_, h| h.kept(n));
    sampler.channels.retain(|_, h| h.kept(n));
    sampler.connections.retain(|_, h| h.kept(n));
}

/// RabbitMQ's window parameters of a request (`msg_rates_age` and `msg_rates_incr`,
/// say), in seconds; None without the age (then no samples are shown). The increment
/// defaults to 5 s.
pub fn window(req: &crate::http::Request, age: &str, incr: &str) -> Option<(u64, u64)> {
    let num = |k: &str| req.param(k).and_then(|v| v.parse::<u64>().ok());
    num(age).map(|a| (a, num(incr).unwrap_or(5)))
}

/// The times a window asks for, newest first (`age / incr + 1` of them, aligned to
/// the newest sample), each with how many samples back from the newest it falls.
fn sample_points(server: &Server, age: u64, incr: u64) -> Vec<(u64, usize)> {
    let interval = server.config.stats_interval.as_millis().max(1) as u64;
    let newest = server.sampler.ring.back().map_or_else(
        || aligned_now_ms(server.config.stats_interval),
        |(ts, _)| *ts,
    );
    let (age, incr) = (age.clamp(1, 24 * 3600), incr.max(1));
    (0..=age / incr)
        .map(|k| {
            let t = newest.saturating_sub(k * incr * 1000);
            (t, ((newest - t) / interval) as usize)
        })
        .collect()
}

/// Adds `samples` (newest first), `avg_rate` and `avg` to each `{name}_details`
/// object of `fields` that `target` already has (a group RabbitMQ would not show is
/// not added), from the counters `at` each point of `points`.
fn add_samples<C>(
    target: &mut Map<String, Value>,
    fields: &[FieldOf<C>],
    at: &[C],
    points: &[(u64, usize)],
    age: u64,
) {
    for (name, f) in fields {
        let Some(Value::Object(d)) = target.get_mut(&format!("{name}_details")) else {
            continue;
        };
        let values: Vec<u64> = at.iter().map(f).collect();
        let samples: Vec<Value> = values
            .iter()
            .zip(points)
            .map(|(s, (t, _))| json!({"sample": s, "timestamp": t}))
            .collect();
        let (first, oldest) = (
            values.first().copied().unwrap_or(0),
            values.last().copied().unwrap_or(0),
        );
        let avg_rate = first.saturating_sub(oldest) as f64 / age.clamp(1, 24 * 3600) as f64;
        let avg = values.iter().sum::<u64>() as f64 / values.len().max(1) as f64;
        d.insert("samples".into(), Value::Array(samples));
        d.insert("avg_rate".into(), json!(avg_rate));
        d.insert("avg".into(), json!(avg));
    }
}

/// Adds the samples of exchange `id` (RabbitMQ's `msg_rates_age`/`msg_rates_incr`) to
/// its `message_stats` (`publish_in_details.samples`, ...). An exchange without
/// history (idle all window) shows flat samples of its counters; one that never
/// counted has no `message_stats` fields to add them to.
pub fn exchange_history(
    server: &Server,
    id: crate::broker::ExchangeId,
    (age, incr): (u64, u64),
    message_stats: &mut Map<String, Value>,
) {
    let Some(st) = server.broker.exchange(id).and_then(|x| x.stats.as_deref()) else {
        return;
    };
    let points = sample_points(server, age, incr);
    let h = server.sampler.exchanges.get(&id);
    let at: Vec<MsgCounters> = History::cumulative(h, exchange_values(&st.last), &points)
        .iter()
        .map(exchange_counters)
        .collect();
    add_samples(message_stats, EXCHANGE, &at, &points, age);
}

/// Adds the samples of channel `number` of connection `conn` (a slab key) to its
/// `message_stats`, as [`exchange_history`] does for an exchange.
pub fn channel_history(
    server: &Server,
    conn: usize,
    number: u16,
    (age, incr): (u64, u64),
    message_stats: &mut Map<String, Value>,
) {
    let Some(c) = server.conns.get(conn) else {
        return;
    };
    let Some(ch) = c.channel(number) else {
        return;
    };
    let points = sample_points(server, age, incr);
    let h = server
        .sampler
        .channels
        .get(&((conn, c.connected_at), number));
    let at: Vec<MsgCounters> = History::cumulative(h, channel_values(&ch.stats.last), &points)
        .iter()
        .map(channel_counters)
        .collect();
    for group in groups(Kind::Channel) {
        add_samples(message_stats, group, &at, &points, age);
    }
}

/// Adds the samples of connection `conn`'s `recv_oct` and `send_oct` (RabbitMQ's
/// `data_rates_age`/`data_rates_incr`) to its JSON's `recv_oct_details` and
/// `send_oct_details`.
pub fn connection_history(
    server: &Server,
    conn: usize,
    (age, incr): (u64, u64),
    connection: &mut Map<String, Value>,
) {
    let Some(c) = server.conns.get(conn) else {
        return;
    };
    let points = sample_points(server, age, incr);
    let h = server.sampler.connections.get(&(conn, c.connected_at));
    let at: Vec<IoCounters> = History::cumulative(h, io_values(&c.io.last), &points)
        .iter()
        .map(io_counters)
        .collect();
    add_samples(connection, CONNECTION_DATA, &at, &points, age);
}

/// Appends this sample to the history of every queue with statistics, and drops the
/// histories of queues that are gone.
fn record_queues(server: &mut Server) {
    let cap = (HISTORY.as_millis() / server.config.stats_interval.as_millis().max(1)) as usize + 1;
    let sampler = &mut server.sampler;
    sampler.samples += 1;
    let n = sampler.samples;
    for (id, q) in server.broker.queues() {
        let Some(st) = q.stats.as_deref() else {
            continue;
        };
        let d = |f: fn(&MsgCounters) -> u64| {
            u32::try_from(f(&st.last).saturating_sub(f(&st.prev))).unwrap_or(u32::MAX)
        };
        let entry = [
            d(|c| c.publish),
            d(|c| c.deliver_get()),
            d(|c| c.ack),
            d(|c| c.redeliver),
            q.message_count(),
            u32::try_from(q.unacked_count()).unwrap_or(u32::MAX),
        ];
        let h = sampler.queues.entry(id).or_default();
        while h.ring.len() >= cap {
            h.ring.pop_front();
        }
        h.ring.push_back(entry);
        h.seen = n;
    }
    sampler.queues.retain(|_, h| h.seen == n);
}

/// Adds `samples` (newest first, `{"sample", "timestamp"}`), `avg_rate` and `avg` to a
/// queue's `message_stats` (with `msg_rates_age`/`msg_rates_incr`) and its lengths'
/// `_details` (with `lengths_age`/`lengths_incr`), as RabbitMQ's API does, from the
/// queue's history. Counters are cumulative as of each sample. Does nothing for a queue
/// without history.
pub fn queue_history(
    server: &Server,
    id: QueueId,
    rates: Option<(u64, u64)>,
    lengths: Option<(u64, u64)>,
    queue: &mut Map<String, Value>,
) {
    let Some(h) = server.sampler.queues.get(&id) else {
        return;
    };
    let Some(st) = server.broker.queue(id).and_then(|q| q.stats.as_deref()) else {
        return;
    };
    let interval = server.config.stats_interval.as_millis().max(1) as u64;
    let newest = server.sampler.ring.back().map_or_else(
        || aligned_now_ms(server.config.stats_interval),
        |(ts, _)| *ts,
    );
    // Index k back from the newest sample, for each requested time.
    let times = |age: u64, incr: u64| -> Vec<(u64, usize)> {
        let (age, incr) = (age.clamp(1, 24 * 3600), incr.max(1));
        (0..=age / incr)
            .map(|k| {
                let t = newest.saturating_sub(k * incr * 1000);
                (t, ((newest - t) / interval) as usize)
            })
            .collect()
    };
    let len = h.ring.len();
    if let Some((age, incr)) = rates {
        let last = [
            st.last.publish,
            st.last.deliver_get(),
            st.last.ack,
            st.last.redeliver,
        ];
        let Some(Value::Object(ms)) = queue.get_mut("message_stats") else {
            return;
        };
        for (i, name) in QUEUE_RATES.iter().enumerate() {
            // Cumulative value k samples back: the last sampled value minus the
            // increments of the k newest samples.
            let mut cum = Vec::with_capacity(len + 1);
            let mut v = last[i];
            cum.push(v);
            for e in h.ring.iter().rev() {
                v = v.saturating_sub(u64::from(e[i]));
                cum.push(v);
            }
            let pts = times(age, incr);
            let values: Vec<u64> = pts
                .iter()
                .map(|(_, k)| cum[(*k).min(cum.len() - 1)])
                .collect();
            let samples: Vec<Value> = values
                .iter()
                .zip(&pts)
                .map(|(s, (t, _))| json!({"sample": s, "timestamp": t}))
                .collect();
            let avg_rate = values[0].saturating_sub(values[values.len() - 1]) as f64
                / age.clamp(1, 24 * 3600) as f64;
            let avg = values.iter().sum::<u64>() as f64 / values.len() as f64;
            let d = ms
                .entry(format!("{name}_details"))
                .or_insert_with(|| json!({"rate": 0.0}));
            if let Value::Object(d) = d {
                d.insert("samples".into(), Value::Array(samples));
                d.insert("avg_rate".into(), json!(avg_rate));
                d.insert("avg".into(), json!(avg));
            }
            ms.entry(name.to_string()).or_insert(json!(last[i]));
        }
    }
    if let Some((age, incr)) = lengths {
        let pts = times(age, incr);
        let level = |i: usize, k: usize| -> u64 {
            // Before the oldest sample the queue's level is unknown: the oldest is used.
            let j = len.saturating_sub(1 + k);
            h.ring.get(j).map_or(0, |e| u64::from(e[i]))
        };
        for (i, name) in QUEUE_LENGTHS.iter().enumerate() {
            let samples: Vec<Value> = pts
                .iter()
                .map(|(t, k)| json!({"sample": level(4 + i, *k), "timestamp": t}))
                .collect();
            queue.insert(
                format!("{name}_details"),
                json!({"rate": 0.0, "samples": samples}),
            );
        }
        let samples: Vec<Value> = pts
            .iter()
            .map(|(t, k)| json!({"sample": level(4, *k) + level(5, *k), "timestamp": t}))
            .collect();
        queue.insert(
            "messages_details".into(),
            json!({"rate": 0.0, "samples": samples}),
        );
    }
}

/// What kind of object a `message_stats` is for: each shows RabbitMQ's fields for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Queue,
    Exchange,
    Channel,
    Overview,
}

/// A named counter of counters `C`, as a JSON field shows it.
type FieldOf<C> = (&'static str, fn(&C) -> u64);
type Field = FieldOf<MsgCounters>;

/// Fields about publishing, as RabbitMQ names them for a channel and the overview.
const PUBLISHING: &[Field] = &[
    ("publish", |c| c.publish),
    ("confirm", |c| c.confirm),
    ("return_unroutable", |c| c.return_unroutable),
    ("drop_unroutable", |c| c.drop_unroutable),
];

/// Fields about deliveries, for queues, channels and the overview.
const DELIVERING: &[Field] = &[
    ("ack", |c| c.ack),
    ("deliver", |c| c.deliver),
    ("deliver_get", |c| c.deliver_get()),
    ("deliver_no_ack", |c| c.deliver_no_ack),
    ("get", |c| c.get),
    ("get_empty", |c| c.get_empty),
    ("get_no_ack", |c| c.get_no_ack),
    ("redeliver", |c| c.redeliver),
];

const QUEUE_PUBLISHING: &[Field] = &[("publish", |c| c.publish)];

const EXCHANGE: &[Field] = &[("publish_in", |c| c.publish), ("publish_out", |c| c.routed)];

/// The groups of fields of a kind. As in RabbitMQ, a group shows once one of its
/// counters moved (an idle queue has no `message_stats` fields; one that was only
/// published to shows `publish` alone).
fn groups(kind: Kind) -> &'static [&'static [Field]] {
    match kind {
        Kind::Queue => &[QUEUE_PUBLISHING, DELIVERING],
        Kind::Exchange => &[EXCHANGE],
        Kind::Channel | Kind::Overview => &[PUBLISHING, DELIVERING],
    }
}

/// The per-second rate between two samples `interval` apart.
fn rate(last: u64, prev: u64, interval: Duration) -> f64 {
    let secs = interval.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    // Counters only grow; a saturating difference keeps a reset from going negative.
    let r = last.saturating_sub(prev) as f64 / secs;
    (r * 10.0).round() / 10.0
}

/// RabbitMQ's `message_stats` object for counters `s` of an object of `kind`:
/// `{"publish": N, "publish_details": {"rate": R}, ...}`; `{}` for an object that never
/// counted anything (the caller may then leave `message_stats` out, as RabbitMQ does).
pub fn message_stats(s: Option<&Sampled<MsgCounters>>, kind: Kind, interval: Duration) -> Value {
    let mut m = Map::new();
    let Some(s) = s else {
        return Value::Object(m);
    };
    for group in groups(kind) {
        if group.iter().all(|(_, f)| f(&s.now) == 0) {
            continue;
        }
        for (name, f) in group.iter() {
            m.insert((*name).into(), json!(f(&s.now)));
            m.insert(
                format!("{name}_details"),
                json!({ "rate": rate(f(&s.last), f(&s.prev), interval) }),
            );
        }
    }
    Value::Object(m)
}

/// A queue's `message_stats` (`{}` when it never counted anything); None when `vhost`
/// has no queue `name`.
pub fn queue_message_stats(server: &Server, vhost: &str, name: &str) -> Option<Value> {
    let (v, _) = server.broker.lookup_vhost(vhost.as_bytes())?;
    let q = server
        .broker
        .queue(server.broker.queue_id(v, name.as_bytes())?)?;
    let interval = server.config.stats_interval;
    Some(message_stats(q.stats.as_deref(), Kind::Queue, interval))
}

/// An exchange's `message_stats` (`publish_in`, `publish_out`); None when missing.
pub fn exchange_message_stats(server: &Server, vhost: &str, name: &str) -> Option<Value> {
    let (v, _) = server.broker.lookup_vhost(vhost.as_bytes())?;
    let x = server
        .broker
        .exchange(server.broker.exchange_id(v, name.as_bytes())?)?;
    let interval = server.config.stats_interval;
    Some(message_stats(x.stats.as_deref(), Kind::Exchange, interval))
}

/// A channel's `message_stats`.
pub fn channel_message_stats(ch: &crate::conn::channel::Channel, interval: Duration) -> Value {
    message_stats(Some(&ch.stats), Kind::Channel, interval)
}

/// A connection's byte counters as RabbitMQ shows them at the top level of a
/// connection: `recv_oct`, `recv_oct_details.rate`, `recv_cnt`, `send_oct`,
/// `send_oct_details.rate`, `send_cnt`.
pub fn connection_io_stats(io: &Sampled<IoCounters>, interval: Duration) -> Map<String, Value> {
    let mut m = Map::new();
    let (now, last, prev) = (io.now.values(), io.last.values(), io.prev.values());
    for (i, name) in IoCounters::NAMES.iter().enumerate() {
        m.insert((*name).into(), json!(now[i]));
        if name.ends_with("_oct") {
            m.insert(
                format!("{name}_details"),
                json!({ "rate": rate(last[i], prev[i], interval) }),
            );
        }
    }
    m
}

/// The overview's `message_stats`: the global counters with their current rates, and
/// `disk_reads`/`disk_writes` (not counted yet: 0). With `history` = Some((age, incr))
/// in seconds (RabbitMQ's `msg_rates_age` and `msg_rates_incr`), each `_details` also
/// The overview's `churn_rates`: each count with its `_details.rate` per second over
/// the last sampling interval, as RabbitMQ's.
pub fn churn_rates(server: &Server) -> Value {
    let c = server.broker.churn;
    let secs = server.config.stats_interval.as_secs_f64().max(1e-3);
    let mut m = serde_json::Map::new();
    let (now, last, prev) = (c.now.values(), c.last.values(), c.prev.values());
    for (i, name) in crate::counters::Churn::NAMES.iter().enumerate() {
        let rate = last[i].saturating_sub(prev[i]) as f64 / secs;
        m.insert((*name).to_string(), json!(now[i]));
        m.insert(format!("{name}_details"), json!({ "rate": rate }));
    }
    Value::Object(m)
}

/// carries `samples` (newest first, `age / incr + 1` of them, `{"sample": N,
/// "timestamp": MS}`), `avg_rate` and `avg`, from the global ring.
pub fn overview_message_stats(server: &Server, history: Option<(u64, u64)>) -> Value {
    let interval = server.config.stats_interval;
    let sampler = &server.sampler;
    let mut s = sampler.global;
    // Counts are live; rates come from the last two samples.
    s.now = server.broker.counters;
    let mut v = message_stats(Some(&s), Kind::Overview, interval);
    let Value::Object(m) = &mut v else {
        return v;
    };
    for name in ["disk_reads", "disk_writes"] {
        m.insert(name.into(), json!(0));
        m.insert(format!("{name}_details"), json!({ "rate": 0.0 }));
    }
    let Some((age, incr)) = history else {
        return v;
    };
    let (age, incr) = (age.clamp(1, 24 * 3600), incr.max(1));
    let newest = sampler
        .ring
        .back()
        .map_or_else(|| aligned_now_ms(interval), |(ts, _)| *ts);
    let times: Vec<u64> = (0..=age / incr)
        .map(|k| newest.saturating_sub(k * incr * 1000))
        .collect();
    let at: Vec<MsgCounters> = times.iter().map(|t| sampler.at(*t)).collect();
    for group in groups(Kind::Overview) {
        for (name, f) in group.iter() {
            let Some(Value::Object(d)) = m.get_mut(&format!("{name}_details")) else {
                continue;
            };
            let values: Vec<u64> = at.iter().map(f).collect();
            let samples: Vec<Value> = values
                .iter()
                .zip(&times)
                .map(|(s, t)| json!({ "sample": s, "timestamp": t }))
                .collect();
            let (first, last) = (values[0], values[values.len() - 1]);
            let avg_rate = first.saturating_sub(last) as f64 / age as f64;
            let avg = values.iter().sum::<u64>() as f64 / values.len() as f64;
            d.insert("samples".into(), Value::Array(samples));
            d.insert("avg_rate".into(), json!(avg_rate));
            d.insert("avg".into(), json!(avg));
        }
    }
    for name in ["disk_reads", "disk_writes"] {
        m.insert(
            format!("{name}_details"),
            json!({ "rate": 0.0, "avg_rate": 0.0, "avg": 0.0, "samples":
                times.iter().map(|t| json!({"sample": 0, "timestamp": t})).collect::<Vec<_>>() }),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn server(interval_secs: u64) -> Server {
        Server::new(Config {
            stats_interval: Duration::from_secs(interval_secs),
            ..Config::default()
        })
    }

    #[test]
    fn rates_come_from_the_last_two_samples() {
        let mut s = Sampled::<MsgCounters>::default();
        s.now.publish = 10;
        s.sample();
        s.now.publish = 60;
        s.sample();
        s.now.publish = 1000; // after the last sample: not in the rate yet
        let v = message_stats(Some(&s), Kind::Queue, Duration::from_secs(5));
        assert_eq!(v["publish"], 1000);
        assert_eq!(v["publish_details"]["rate"], 10.0);
        assert!(
            v.get("deliver").is_none(),
            "no delivery yet: no delivery fields"
        );
        s.now.get_no_ack = 1;
        let v = message_stats(Some(&s), Kind::Queue, Duration::from_secs(5));
        assert_eq!(v["deliver_get"], 1);
        assert_eq!(v["ack"], 0);
        assert_eq!(v["redeliver_details"]["rate"], 0.0);
    }

    #[test]
    fn idle_objects_have_no_fields_and_exchanges_show_in_and_out() {
        assert_eq!(
            message_stats(None, Kind::Queue, Duration::from_secs(5)),
            json!({})
        );
        let mut s = Sampled::<MsgCounters>::default();
        s.now.publish = 3;
        s.now.routed = 6;
        let v = message_stats(Some(&s), Kind::Exchange, Duration::from_secs(5));
        assert_eq!(
            (v["publish_in"].clone(), v["publish_out"].clone()),
            (json!(3), json!(6))
        );
        assert_eq!(v.as_object().map(|m| m.len()), Some(4));
    }

    #[test]
    fn the_sampler_is_a_timer_and_the_ring_is_bounded() {
        let mut sm = Sampler::default();
        let t = Instant::now();
        let i = Duration::from_secs(5);
        assert!(!sm.due(t, i), "the first call schedules");
        assert!(!sm.due(t + Duration::from_secs(4), i));
        assert!(sm.due(t + Duration::from_secs(5), i));
        assert!(!sm.due(t + Duration::from_secs(6), i));
        for k in 0..200u64 {
            let c = MsgCounters {
                publish: k,
                ..Default::default()
            };
            sm.record(k * 5000, c, i);
        }
        assert_eq!(sm.ring.len(), 121, "10 minutes at 5 s, both ends");
        assert_eq!(sm.at(199 * 5000 + 1).publish, 199);
        assert_eq!(sm.at(0).publish, 79, "older than the ring: its oldest");
        let fresh = Sampler::default();
        assert_eq!(fresh.at(1).publish, 0);
    }

    #[test]
    fn overview_samples_have_rabbitmqs_shape() {
        let mut s = server(5);
        for k in 1..=3u64 {
            s.broker.counters.publish = k * 100;
            sample(&mut s);
        }
        let v = overview_message_stats(&s, Some((600, 5)));
        let d = &v["publish_details"];
        let samples = d["samples"].as_array().cloned().unwrap_or_default();
        assert_eq!(samples.len(), 121);
        assert_eq!(samples[0]["sample"], 300, "newest first");
        let t0 = samples[0]["timestamp"].as_u64().unwrap_or(0);
        assert_eq!(t0 % 5000, 0, "aligned to the interval");
        assert_eq!(samples[1]["timestamp"].as_u64(), Some(t0 - 5000));
        assert_eq!(samples[120]["sample"], 0);
        assert!((d["avg_rate"].as_f64().unwrap_or(0.0) - 0.5).abs() < 1e-9);
        assert!(v["disk_reads_details"]["samples"].is_array());
        // Without history: only rates, as /api/overview without the parameters.
        let v = overview_message_stats(&s, None);
        assert!(v["publish_details"].get("samples").is_none());
        assert_eq!(v["publish"], 300);
    }

    /// The samples of `field` in `v` (newest first).
    fn samples_of(v: &Map<String, Value>, field: &str) -> Vec<u64> {
        v.get(&format!("{field}_details"))
            .and_then(|d| d.get("samples"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s["sample"].as_u64()).collect())
            .unwrap_or_default()
    }

    fn conn_samples(s: &Server, key: usize) -> Vec<u64> {
        let mut m = Map::new();
        m.insert("recv_oct_details".into(), json!({"rate": 0.0}));
        connection_history(s, key, (60, 5), &mut m);
        samples_of(&m, "recv_oct")
    }

    fn chan_samples(s: &Server, key: usize, number: u16) -> Vec<u64> {
        let Some(ch) = s.conns.get(key).and_then(|c| c.channel(number)) else {
            return Vec::new();
        };
        let Value::Object(mut m) = channel_message_stats(ch, s.config.stats_interval) else {
            return Vec::new();
        };
        channel_history(s, key, number, (60, 5), &mut m);
        samples_of(&m, "publish")
    }

    #[test]
    fn a_reused_slab_key_or_channel_number_does_not_inherit_history() {
        let mut s = server(5);
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 40000).into();
        let key = s.open(peer, None);
        let connected_at = s.conns[key].connected_at;
        for k in 1..=3u64 {
            let c = &mut s.conns[key];
            c.io.now.recv_oct = 1000 * k;
            if k == 1 {
                c.channels.push(crate::conn::channel::Channel::new(1));
            }
            c.channels[0].stats.now.publish = 100 * k;
            sample(&mut s);
        }
        assert_eq!(&conn_samples(&s, key)[..4], &[3000, 2000, 1000, 0]);
        assert_eq!(&chan_samples(&s, key, 1)[..4], &[300, 200, 100, 0]);
        assert_eq!(s.sampler.connections.len(), 1);

        // The channel closes and another opens with its number before the next sample.
        s.conns[key].channels.clear();
        s.conns[key]
            .channels
            .push(crate::conn::channel::Channel::new(1));
        s.conns[key].channels[0].stats.now.publish = 7;
        sample(&mut s);
        assert_eq!(
            &chan_samples(&s, key, 1)[..3],
            &[7, 0, 0],
            "the new channel's history starts at its own first sample"
        );
        let ring_len = |h: Option<&History<u32, CHANNEL_N>>| h.map(|h| h.series[0].ring.len());
        assert_eq!(
            ring_len(s.sampler.channels.get(&((key, connected_at), 1))),
            Some(1),
            "not the old channel's ring"
        );

        // The connection goes and the slab gives its key to the next one, accepted in
        // the same millisecond (the worst case: the key and connected_at both match).
        s.conns.remove(key);
        let again = s.open(([127, 0, 0, 1], 40001).into(), None);
        assert_eq!(again, key, "the slab reuses the key");
        s.conns[again].connected_at = connected_at;
        s.conns[again].io.now.recv_oct = 10;
        sample(&mut s);
        assert_eq!(&conn_samples(&s, again)[..3], &[10, 0, 0]);
        assert_eq!(
            s.sampler.connections[&(key, connected_at)].series[0]
                .ring
                .len(),
            1,
            "not the old connection's ring"
        );
        assert!(
            chan_samples(&s, again, 1).is_empty(),
            "no channel 1 on the new connection"
        );
        assert!(
            s.sampler.channels.is_empty(),
            "the old channel's history was dropped"
        );

        // Gone without a successor: its history goes at the next sample.
        s.conns.remove(again);
        sample(&mut s);
        assert!(s.sampler.connections.is_empty());
    }

    #[test]
    fn a_ring_per_counter_that_moved_dropped_after_an_idle_window() {
        let mut m: HashMap<u8, History<u32, 2>> = HashMap::new();
        let cap = 121;
        History::record(&mut m, 1, [0, 0], [0, 0], 1, cap);
        assert!(m.is_empty(), "an object that never counted has no history");
        History::record(&mut m, 1, [0, 0], [5, 0], 2, cap);
        assert_eq!(m[&1].series.len(), 1, "only the counter that moved");
        let mut v = 5;
        for n in 3..300u64 {
            let prev = [v, 0];
            if n < 10 {
                v += 1;
            }
            History::record(&mut m, 1, prev, [v, 0], n, cap);
            assert!(m[&1].series.iter().all(|s| s.ring.len() <= cap));
            m.retain(|_, h| h.kept(n));
            if n >= 9 + cap as u64 {
                assert!(m.is_empty(), "idle for a whole window at sample {n}");
                break;
            }
            assert_eq!(m.len(), 1, "sample {n}");
        }
        assert!(m.is_empty());
    }

    /// The memory figures of the module header, at the default interval.
    #[test]
    fn bytes_per_object_history() {
        fn full<T: Incr, K: std::hash::Hash + Eq + Copy, const N: usize>(
            key: K,
            moving: usize,
        ) -> usize {
            let mut m: HashMap<K, History<T, N>> = HashMap::new();
            let mut last = [0u64; N];
            for n in 1..=200u64 {
                let prev = last;
                for v in last.iter_mut().take(moving) {
                    *v += 1;
                }
                History::record(&mut m, key, prev, last, n, 121);
            }
            let h = &m[&key];
            assert!(h.series.iter().all(|s| s.ring.len() == 121));
            // The map entry (key and History) plus the heap behind it.
            std::mem::size_of::<(K, History<T, N>)>() + h.heap_bytes()
        }
        // (An ExchangeId is two u32s: a u64 key has its size.)
        assert_eq!(std::mem::size_of::<crate::broker::ExchangeId>(), 8);
        let exchange = full::<u32, u64, 2>(1, 2);
        let publisher = full::<u32, ((usize, u64), u16), CHANNEL_N>(((1, 1), 1), 2);
        let busy = full::<u32, ((usize, u64), u16), CHANNEL_N>(((1, 1), 1), CHANNEL_N);
        let conn = full::<u64, ConnKey, 2>((1, 1), 2);
        println!(
            "exchange {exchange} B, channel {publisher} B (all: {busy} B), connection {conn} B"
        );
        assert!(exchange <= 1200, "{exchange}");
        assert!(publisher <= 1300, "{publisher}");
        assert!(busy <= 6100, "{busy}");
        assert!(conn <= 2200, "{conn}");
    }

    #[test]
    fn exchange_history_after_redeclare_starts_afresh() {
        use crate::broker::ExchangeDecl;
        let mut s = server(5);
        let v = crate::broker::VhostId::DEFAULT;
        let decl = ExchangeDecl {
            name: bytes::Bytes::from_static(b"hx"),
            kind: bytes::Bytes::from_static(b"fanout"),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: Default::default(),
        };
        let publish = |s: &mut Server, n: usize| {
            let x = s.broker.exchange_id(v, b"hx").expect("declared");
            for _ in 0..n {
                s.broker.publish(
                    x,
                    b"hx",
                    b"",
                    bytes::Bytes::new(),
                    bytes::Bytes::from_static(b"m"),
                    u64::MAX,
                );
            }
            x
        };
        let ms = |s: &Server, x| {
            let Value::Object(mut m) = exchange_message_stats(s, "/", "hx").unwrap_or_default()
            else {
                return Vec::new();
            };
            exchange_history(s, x, (60, 5), &mut m);
            samples_of(&m, "publish_in")
        };
        assert!(s.broker.declare_exchange(v, &decl).is_ok());
        let x1 = publish(&mut s, 4);
        sample(&mut s);
        publish(&mut s, 4);
        sample(&mut s);
        assert_eq!(&ms(&s, x1)[..3], &[8, 4, 0]);
        assert!(s.broker.delete_exchange(v, b"hx", false).is_ok());
        assert!(s.broker.declare_exchange(v, &decl).is_ok());
        let x2 = publish(&mut s, 1);
        assert_ne!(x1, x2, "a generation tells the two apart");
        sample(&mut s);
        assert_eq!(&ms(&s, x2)[..3], &[1, 0, 0]);
        assert_eq!(s.sampler.exchanges.len(), 1, "the deleted one's is gone");
    }

    #[test]
    fn connection_io_fields() {
        let mut io = Sampled::<IoCounters>::default();
        io.now.recv_oct = 100;
        io.sample();
        io.now.recv_oct = 600;
        io.sample();
        let m = connection_io_stats(&io, Duration::from_secs(5));
        assert_eq!(m["recv_oct"], 600);
        assert_eq!(m["recv_oct_details"]["rate"], 100.0);
        assert!(m.get("recv_cnt_details").is_none());
        assert_eq!(m["send_oct"], 0);
    }
}
