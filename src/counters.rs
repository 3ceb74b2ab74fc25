//! The statistics counters of the hot path: plain integers that the publish, deliver,
//! get, ack and confirm paths and the reactor's read and flush phases add to, one
//! `+= 1` (or `+= n`) each, with no allocation, hashing or clock read per message.
//!
//! Owns only the counter types. Where each lives: global counters in
//! `Broker::counters`; per queue and per exchange in a lazily allocated box
//! (`Queue::stats`, `Exchange::stats`: an idle object costs one null pointer, and
//! `Queue` stays within its size pin); per channel inline (`Channel::stats`); per
//! connection the byte counters (`Connection::io`). Turning counters into rates
//! (sampling on a timer, the global rings) and into JSON or Prometheus text is
//! `crate::mgmt::stats` and `crate::mgmt::prometheus`; nothing here reads a clock.

/// Message counters, named as RabbitMQ's `message_stats` fields. Which fields an
/// object uses depends on what it is (see each field); the others stay 0.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MsgCounters {
    /// Messages published (channel, global: received from publishers; queue: routed
    /// into it; exchange: `publish_in`, published into it).
    pub publish: u64,
    /// Publisher confirms (acks) sent (channel, global).
    pub confirm: u64,
    /// Unroutable mandatory messages returned with basic.return (channel, global).
    pub return_unroutable: u64,
    /// Unroutable non-mandatory messages dropped (channel, global).
    pub drop_unroutable: u64,
    /// Deliveries to manual-ack consumers.
    pub deliver: u64,
    /// Deliveries to no-ack consumers.
    pub deliver_no_ack: u64,
    /// basic.get-ok with manual ack.
    pub get: u64,
    /// basic.get-ok with no-ack.
    pub get_no_ack: u64,
    /// basic.get-empty answers.
    pub get_empty: u64,
    /// Deliveries acked by consumers.
    pub ack: u64,
    /// Deliveries (consume or get) of a message delivered before.
    pub redeliver: u64,
    /// Global: queue copies routed (RabbitMQ's `messages_routed`, one per queue a
    /// message went to); exchange: `publish_out`, the same counted at the exchange the
    /// message was published to.
    pub routed: u64,
    /// Global: publishes received on channels in confirm mode.
    pub publish_confirm: u64,
}

/// How many fields [`MsgCounters`] has (the length of [`MsgCounters::values`]).
pub const MSG_FIELDS: usize = 13;

impl MsgCounters {
    /// RabbitMQ's names of the fields, in the order of [`MsgCounters::values`]
    /// (`routed` and `publish_confirm` are Warren's; the exchange shows `routed` as
    /// `publish_out`).
    pub const NAMES: [&'static str; MSG_FIELDS] = [
        "publish",
        "confirm",
        "return_unroutable",
        "drop_unroutable",
        "deliver",
        "deliver_no_ack",
        "get",
        "get_no_ack",
        "get_empty",
        "ack",
        "redeliver",
        "routed",
        "publish_confirm",
    ];

    /// The fields as an array, in the order of [`MsgCounters::NAMES`].
    pub fn values(&self) -> [u64; MSG_FIELDS] {
        [
            self.publish,
            self.confirm,
            self.return_unroutable,
            self.drop_unroutable,
            self.deliver,
            self.deliver_no_ack,
            self.get,
            self.get_no_ack,
            self.get_empty,
            self.ack,
            self.redeliver,
            self.routed,
            self.publish_confirm,
        ]
    }

    /// `deliver_get` as RabbitMQ sums it: every delivery, by consume or get.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}

/// How many connections, channels and queues came and went: RabbitMQ's overview
/// `churn_rates` and its `rabbitmq_*_opened_total`/`_closed_total`/`queues_*_total`
/// metrics. Counted where an object is made or removed, never per message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Churn {
    /// Connections accepted.
    pub connection_created: u64,
    /// Connections removed, for whatever reason (a handshake that failed included, as
    /// RabbitMQ counts them).
    pub connection_closed: u64,
    pub channel_created: u64,
    /// Channels closed by either side, and those open when their connection went.
    pub channel_closed: u64,
    /// Successful queue.declare (and API declares), new or existing queue.
    pub queue_declared: u64,
    /// Declares that made a new queue.
    pub queue_created: u64,
    pub queue_deleted: u64,
}

impl Churn {
    /// RabbitMQ's names (the overview's `churn_rates` keys), in the order of
    /// [`Churn::values`].
    pub const NAMES: [&'static str; 7] = [
        "connection_created",
        "connection_closed",
        "channel_created",
        "channel_closed",
        "queue_declared",
        "queue_created",
        "queue_deleted",
    ];

    pub fn values(&self) -> [u64; 7] {
        [
            self.connection_created,
            self.connection_closed,
            self.channel_created,
            self.channel_closed,
            self.queue_declared,
            self.queue_created,
            self.queue_deleted,
        ]
    }
}

/// Byte and call counters of a connection's socket: counted by the reactor per read
/// or write call (not per frame), as RabbitMQ's `recv_oct`/`recv_cnt`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoCounters {
    pub recv_oct: u64,
    pub recv_cnt: u64,
    pub send_oct: u64,
    pub send_cnt: u64,
}

impl IoCounters {
    pub const NAMES: [&'static str; 4] = ["recv_oct", "recv_cnt", "send_oct", "send_cnt"];

    pub fn values(&self) -> [u64; 4] {
        [self.recv_oct, self.recv_cnt, self.send_oct, self.send_cnt]
    }
}

/// Live counters with the values they had at the last two samples (the sampler's
/// timer, every `--stats-interval`), from which a rate is computed without any
/// per-message work: rate = (last − prev) / interval, as RabbitMQ's `_details.rate`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sampled<T> {
    /// What the hot path adds to.
    pub now: T,
    /// `now` at the last sample.
    pub last: T,
    /// `now` at the sample before.
    pub prev: T,
}

impl<T: Copy> Sampled<T> {
    /// Takes a sample (the sampler's timer).
    pub fn sample(&mut self) {
        self.prev = self.last;
        self.last = self.now;
    }
}

/// The counters of a queue or an exchange, boxed on first use (see the module header).
pub type ObjectStats = Option<Box<Sampled<MsgCounters>>>;

/// The counters of `stats`, allocated the first time an object counts something.
#[inline]
pub fn counting(stats: &mut ObjectStats) -> &mut MsgCounters {
    &mut stats.get_or_insert_with(Default::default).now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_line_up() {
        let c = MsgCounters {
            publish: 1,
            confirm: 2,
            return_unroutable: 3,
            drop_unroutable: 4,
            deliver: 5,
            deliver_no_ack: 6,
            get: 7,
            get_no_ack: 8,
            get_empty: 9,
            ack: 10,
            redeliver: 11,
            routed: 12,
            publish_confirm: 13,
        };
        let v = c.values();
        assert_eq!(v.to_vec(), (1..=13).collect::<Vec<u64>>());
        assert_eq!(MsgCounters::NAMES[4], "deliver");
        assert_eq!(c.deliver_get(), 5 + 6 + 7 + 8);
    }

    #[test]
    fn sampling_keeps_the_last_two_values() {
        let mut s = Sampled::<MsgCounters>::default();
        s.now.publish = 5;
        s.sample();
        s.now.publish = 12;
        s.sample();
        assert_eq!((s.prev.publish, s.last.publish, s.now.publish), (5, 12, 12));
        let mut boxed: ObjectStats = None;
        counting(&mut boxed).ack += 1;
        assert_eq!(boxed.map(|b| b.now.ack), Some(1));
    }
}
