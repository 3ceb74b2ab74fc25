//! Protocol-neutral operations on the broker, and plain snapshots of what it holds.
//!
//! The AMQP channel handlers ([`crate::conn`]) and the management API call the same
//! operations; neither writes the other's frames. An operation that touches more than
//! the broker returns those SIDE EFFECTS as data ([`Effect`]: a consumer to cancel, a
//! connection to close), and the caller's owner (the server) applies them after the
//! batch, so an HTTP `DELETE` of a queue cancels its consumers exactly as AMQP's
//! queue.delete does. Operations without side effects are the broker's own methods,
//! which already take plain declarations and return `AmqpError` values
//! (`Broker::declare_exchange`, `declare_queue`, `delete_exchange`, `bind`, `unbind`,
//! `purge`, `publish`): they are not wrapped again here.
//!
//! Inspection returns snapshots: owned structs of cheap fields (`Bytes` refcounts,
//! integers), taken in one go on the reactor thread, so a reader never borrows the
//! broker. Connection and channel snapshots are defined here and filled by
//! [`crate::conn`] (`Connection::info`, `Channel::info`), which owns that state.
//!
//! Doors: uses `broker`, `store` (through the broker), `message`, `error`, `proto`
//! types; never `conn`, `server` or a socket. This room sits between the protocols and
//! the broker; issue 11's `authorize` checks belong here, once for both protocols.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::broker::{self, Broker, Dest, QueueId, VhostId};
use crate::error::{not_found, AmqpError};
use crate::message::Body;
use crate::proto::FieldTable;

/// A side effect of an operation on something the broker does not own.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The queue of this consumer went away: the connection forgets the consumer and,
    /// when the client announced `consumer_cancel_notify`, gets a server-sent
    /// basic.cancel.
    Cancel {
        conn: usize,
        channel: u16,
        tag: Bytes,
    },
    /// Close this connection with 320 CONNECTION_FORCED and this reason.
    Close { conn: usize, reason: String },
}

/// queue.delete (AMQP) and `DELETE /api/queues/{vhost}/{name}` (HTTP): removes queue
/// `id` with its bindings unless `if_unused` and it has consumers, or `if_empty` and it
/// has ready messages (406). Returns the number of ready messages dropped; a cancel
/// per consumer it had is appended to `effects`. A queue already gone deletes nothing.
pub fn delete_queue(
    broker: &mut Broker,
    id: QueueId,
    if_unused: bool,
    if_empty: bool,
    effects: &mut Vec<Effect>,
) -> Result<u32, AmqpError> {
    let (n, orphans) = broker.delete_queue(id, if_unused, if_empty)?;
    effects.extend(orphans.into_iter().map(|o| Effect::Cancel {
        conn: o.conn,
        channel: o.channel,
        tag: o.tag,
    }));
    Ok(n)
}

/// Closes connection `conn` (the management API's `DELETE /api/connections/{name}`;
/// the caller resolves the name to the connection's key).
pub fn close_connection(conn: usize, reason: impl Into<String>) -> Effect {
    Effect::Close {
        conn,
        reason: reason.into(),
    }
}

/// One message taken by [`get`].
#[derive(Debug, Clone)]
pub struct Got {
    pub exchange: Bytes,
    pub routing_key: Bytes,
    /// The encoded content-header property list.
    pub properties: Bytes,
    pub body: Bytes,
    pub redelivered: bool,
    /// Ready messages left in the queue after this one was taken.
    pub remaining: u32,
}

/// Takes up to `count` ready messages from queue `id` outside any channel (the
/// management API's "get messages"): each is settled (`requeue` false: gone, as
/// `ack_requeue_false`) or put back at its original place marked redelivered
/// (`requeue` true, as `ack_requeue_true`), after all are taken so the same message is
/// not taken twice. A paged body that cannot be read back is dropped and skipped.
/// 404 when the queue is gone.
pub fn get(
    broker: &mut Broker,
    id: QueueId,
    count: usize,
    requeue: bool,
) -> Result<Vec<Got>, AmqpError> {
    let mut got = Vec::new();
    let mut taken = Vec::new();
    while got.len() < count {
        if broker.queue(id).is_some_and(|q| q.features.is_some()) {
            // Each get is a basic.get in RabbitMQ's API: never an expired message (a
            // priority queue's head can move to a level whose head has expired).
            broker.expire_due(id, false);
        }
        let Some((q, store)) = broker.queue_and_store(id) else {
            return Err(not_found("queue vanished"));
        };
        let Some(r) = q.next_delivery() else { break };
        let remaining = q.message_count();
        let durable = q.durable_id;
        let body = match broker::load_body_in(store, &r.msg) {
            Ok(Body::Shared(b)) => b.clone(),
            Ok(Body::Loaded(b)) => b,
            Ok(Body::Inline(b)) => Bytes::copy_from_slice(b),
            Err(e) => {
                log::error!("store: cannot read a paged message back: {e}; dropping it");
                broker.settle(durable, &r.msg);
                continue;
            }
        };
        got.push(Got {
            exchange: Bytes::copy_from_slice(r.msg.exchange()),
            routing_key: Bytes::copy_from_slice(r.msg.routing_key()),
            properties: Bytes::copy_from_slice(r.msg.properties()),
            body,
            redelivered: r.redelivered(),
            remaining,
        });
        taken.push((durable, r));
    }
    // Counted as RabbitMQ's API does it (basic.get with manual ack on a channel of its
    // own, then ack or reject): `get`, `redeliver`, and `ack` when not requeued.
    let n = got.len() as u64;
    let again = got.iter().filter(|g| g.redelivered).count() as u64;
    let acked = if requeue { 0 } else { n };
    let add = |c: &mut crate::counters::MsgCounters| {
        c.get += n;
        c.redeliver += again;
        c.ack += acked;
    };
    if let Some(q) = broker.queue_mut(id) {
        add(q.counting());
    }
    add(&mut broker.counters);
    // Newest first, so each lands at the front in its original order.
    for (durable, r) in taken.into_iter().rev() {
        if requeue {
            let seq = r.token();
            broker.requeue(id, durable, r.msg, seq);
        } else {
            broker.settle(durable, &r.msg);
        }
    }
    Ok(got)
}

// ----- snapshots ---------------------------------------------------------------------

/// A queue as the management API and `list_queues` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    pub name: Bytes,
    pub vhost: Arc<str>,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive: bool,
    pub arguments: FieldTable,
    /// Ready messages.
    pub ready: u32,
    /// Deliveries to its consumers not acked yet (basic.get's are not counted: the
    /// queue does not track them).
    pub unacked: u64,
    pub consumers: u32,
    /// Body bytes of the ready messages.
    pub bytes: u64,
    /// Messages (and their body bytes) waiting to be dead-lettered at-least-once
    /// (RabbitMQ's `messages_dlx`, `message_bytes_dlx`; see `broker::at_least_once`).
    pub dlx: u64,
    pub dlx_bytes: u64,
    /// The tag of a classic single-active-consumer queue's active consumer (RabbitMQ
    /// 3.10 shows none for a quorum queue's).
    pub single_active_consumer_tag: Option<Bytes>,
    /// The tag of the exclusive consumer of a classic queue that has one (a quorum
    /// queue ignores the flag).
    pub exclusive_consumer_tag: Option<Bytes>,
}

/// An exchange as the management API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeInfo {
    pub name: Bytes,
    pub vhost: Arc<str>,
    pub kind: &'static str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// What a binding leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationType {
    Queue,
    Exchange,
}

impl DestinationType {
    /// RabbitMQ's `destination_type` field.
    pub fn name(self) -> &'static str {
        match self {
            DestinationType::Queue => "queue",
            DestinationType::Exchange => "exchange",
        }
    }
}

/// A binding as the management API shows it. The default exchange's implicit binding
/// of every queue by its name is listed too, as RabbitMQ lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingInfo {
    pub source: Bytes,
    pub vhost: Arc<str>,
    pub destination: Bytes,
    pub destination_type: DestinationType,
    pub routing_key: Bytes,
    pub arguments: FieldTable,
}

/// A consumer as the management API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerInfo {
    pub queue: Bytes,
    pub vhost: Arc<str>,
    /// The connection's key (the server maps it to the connection's name).
    pub conn: usize,
    pub channel: u16,
    pub tag: Bytes,
    pub ack_required: bool,
    pub exclusive: bool,
    /// basic.qos prefetch-count at basic.consume; 0 = no limit.
    pub prefetch: u16,
    /// RabbitMQ's `activity_status`: "up" on a queue without single active consumer,
    /// else "single_active" for the one that receives and "waiting" for the others
    /// (`active` is false only for those).
    pub activity_status: &'static str,
}

/// A connection as the management API shows it (filled by `Connection::info`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionInfo {
    /// The connection's key in the server (for `close_connection`).
    pub conn: usize,
    /// RabbitMQ's name: "peer -> local", e.g. "127.0.0.1:50000 -> 127.0.0.1:5672".
    pub name: String,
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    pub user: String,
    pub vhost: Arc<str>,
    pub channels: usize,
    /// RabbitMQ's state names: starting, tuning, opening, running, blocked, closing, closed.
    pub state: &'static str,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat: u16,
    /// Ms since the epoch.
    pub connected_at: u64,
    /// The client's connection.start-ok table, raw.
    pub client_properties: FieldTable,
    /// "PLAIN", "AMQPLAIN", ...
    pub auth_mechanism: String,
    /// The TLS session of an AMQPS connection (None: plain TCP).
    pub tls: Option<crate::net::tls::TlsInfo>,
}

/// A channel as the management API shows it (filled by `Channel::info`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    pub number: u16,
    pub consumers: usize,
    pub unacked: usize,
    pub prefetch_count: u16,
    pub global_prefetch_count: u16,
    pub confirm: bool,
    pub transactional: bool,
    pub closing: bool,
    /// Publishes in confirm mode not confirmed yet.
    pub unconfirmed: u64,
    /// Publishes and acks/nacks/rejects buffered by an open transaction.
    pub uncommitted_publishes: usize,
    pub uncommitted_acks: usize,
}

/// RabbitMQ's "peer -> local" connection name.
pub fn connection_name(peer: SocketAddr, local: Option<SocketAddr>) -> String {
    match local {
        Some(l) => format!("{peer} -> {l}"),
        None => format!("{peer} -> ?"),
    }
}

/// The name of vhost `id`, shared (a refcount per snapshot, no copy).
fn vhost_name(broker: &Broker, id: VhostId) -> Arc<str> {
    broker
        .vhost(id)
        .map_or_else(|| Arc::from(""), |v| v.name.clone())
}

fn queue_info(broker: &Broker, q: &broker::queue::Queue) -> QueueInfo {
    QueueInfo {
        name: q.name.clone(),
        vhost: vhost_name(broker, q.vhost),
        durable: q.props.durable,
        auto_delete: q.props.auto_delete,
        exclusive: q.owner.is_some(),
        arguments: q.props.arguments.clone(),
        ready: q.message_count(),
        unacked: q.unacked_count(),
        consumers: q.consumer_count(),
        bytes: q.ready_bytes(),
        dlx: q
            .features
            .as_ref()
            .map_or(0, |f| f.dlx_pending.len() as u64),
        dlx_bytes: q.features.as_ref().map_or(0, |f| f.dlx_bytes),
        single_active_consumer_tag: q
            .single_active()
            .filter(|_| !q.quorum)
            .map(|c| c.tag.clone()),
        exclusive_consumer_tag: q
            .consumers()
            .find(|c| c.exclusive && !q.is_single_active() && !q.quorum)
            .map(|c| c.tag.clone()),
    }
}

/// Every queue of every vhost.
pub fn queues(broker: &Broker) -> Vec<QueueInfo> {
    broker
        .queues()
        .map(|(_, q)| queue_info(broker, q))
        .collect()
}

/// One queue by vhost and name, None when there is none.
pub fn queue(broker: &Broker, vhost: VhostId, name: &[u8]) -> Option<QueueInfo> {
    broker
        .queue_id(vhost, name)
        .and_then(|id| broker.queue(id))
        .map(|q| queue_info(broker, q))
}

fn exchange_info(broker: &Broker, x: &broker::exchange::Exchange) -> ExchangeInfo {
    ExchangeInfo {
        name: x.name.clone(),
        vhost: vhost_name(broker, x.vhost),
        kind: x.kind.name(),
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: x.arguments.clone(),
    }
}

/// Every exchange of every vhost, each vhost's default one ("") included.
pub fn exchanges(broker: &Broker) -> Vec<ExchangeInfo> {
    broker
        .exchanges()
        .map(|(_, x)| exchange_info(broker, x))
        .collect()
}

/// One exchange by vhost and name, None when there is none.
pub fn exchange(broker: &Broker, vhost: VhostId, name: &[u8]) -> Option<ExchangeInfo> {
    broker
        .exchange_id(vhost, name)
        .and_then(|id| broker.exchange(id))
        .map(|x| exchange_info(broker, x))
}

/// Every binding: first each queue's implicit one from the default exchange, then the
/// declared ones by source exchange.
pub fn bindings(broker: &Broker) -> Vec<BindingInfo> {
    let mut out: Vec<BindingInfo> = broker
        .queues()
        .map(|(_, q)| BindingInfo {
            source: Bytes::new(),
            vhost: vhost_name(broker, q.vhost),
            destination: q.name.clone(),
            destination_type: DestinationType::Queue,
            routing_key: q.name.clone(),
            arguments: FieldTable::new(),
        })
        .collect();
    for (_, x) in broker.exchanges() {
        for b in x.bindings() {
            let (destination, destination_type) = match b.dest {
                Dest::Queue(q) => match broker.queue(q) {
                    Some(q) => (q.name.clone(), DestinationType::Queue),
                    None => continue,
                },
                Dest::Exchange(d) => match broker.exchange(d) {
                    Some(d) => (d.name.clone(), DestinationType::Exchange),
                    None => continue,
                },
            };
            out.push(BindingInfo {
                source: x.name.clone(),
                vhost: vhost_name(broker, x.vhost),
                destination,
                destination_type,
                routing_key: b.key.clone(),
                arguments: b.args.clone(),
            });
        }
    }
    out
}

/// Every consumer of every queue.
pub fn consumers(broker: &Broker) -> Vec<ConsumerInfo> {
    let mut out = Vec::new();
    for (_, q) in broker.queues() {
        let sac = q.is_single_active();
        out.extend(q.consumers().enumerate().map(|(i, c)| ConsumerInfo {
            queue: q.name.clone(),
            vhost: vhost_name(broker, q.vhost),
            conn: c.conn,
            channel: c.channel,
            tag: c.tag.clone(),
            ack_required: !c.no_ack,
            exclusive: c.exclusive,
            prefetch: c.prefetch,
            activity_status: match (sac, i) {
                (false, _) => "up",
                (true, 0) => "single_active",
                (true, _) => "waiting",
            },
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{ExchangeDecl, QueueDecl};

    /// The vhost "/" of `Broker::new()`.
    const ROOT: VhostId = VhostId::DEFAULT;

    fn publish(b: &mut Broker, rk: &'static str, body: &'static [u8]) {
        let x = b.publish_target(ROOT, b"").unwrap();
        let props = Bytes::from_static(&[0, 0]);
        b.publish(
            x,
            b"",
            rk.as_bytes(),
            props,
            Bytes::from_static(body),
            u64::MAX,
        );
    }

    #[test]
    fn queue_exchange_and_binding_snapshots() {
        let mut b = Broker::new();
        let mut d = QueueDecl::named("q");
        d.exclusive = true;
        let q = b.declare_queue(ROOT, &d, 7, |_| Ok(())).unwrap().id;
        b.declare_exchange(
            ROOT,
            &ExchangeDecl {
                name: Bytes::from_static(b"x"),
                kind: Bytes::from_static(b"topic"),
                passive: false,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: FieldTable::new(),
            },
        )
        .unwrap();
        b.bind(
            ROOT,
            b"x",
            Dest::Queue(q),
            Bytes::from_static(b"a.*"),
            FieldTable::new(),
        )
        .unwrap();
        publish(&mut b, "q", b"hello");
        publish(&mut b, "q", b"!");
        b.add_consumer(q, 7, 1, Bytes::from_static(b"c1"), false, false, 10, 0)
            .unwrap();

        let qi = queue(&b, ROOT, b"q").unwrap();
        assert_eq!(
            (&*qi.vhost, qi.exclusive, qi.durable, qi.ready, qi.consumers),
            ("/", true, false, 2, 1)
        );
        assert_eq!(qi.bytes, 6);
        assert_eq!(queues(&b), vec![qi]);

        let xi = exchange(&b, ROOT, b"x").unwrap();
        assert_eq!((xi.kind, xi.durable, xi.internal), ("topic", true, false));
        // "", five amq.* and x.
        assert_eq!(exchanges(&b).len(), 7);
        assert!(exchange(&b, ROOT, b"nope").is_none());

        let bs = bindings(&b);
        assert_eq!(bs.len(), 2);
        assert_eq!(
            (&bs[0].source[..], &bs[0].routing_key[..]),
            (&b""[..], &b"q"[..])
        );
        assert_eq!(
            (
                &bs[1].source[..],
                &bs[1].destination[..],
                &bs[1].routing_key[..]
            ),
            (&b"x"[..], &b"q"[..], &b"a.*"[..])
        );
        assert_eq!(bs[1].destination_type.name(), "queue");

        let cs = consumers(&b);
        assert_eq!(cs.len(), 1);
        assert_eq!(
            (
                cs[0].conn,
                cs[0].channel,
                &cs[0].tag[..],
                cs[0].ack_required
            ),
            (7, 1, &b"c1"[..], true)
        );
    }

    #[test]
    fn deleting_a_queue_returns_cancels_for_its_consumers() {
        let mut b = Broker::new();
        let q = b
            .declare_queue(ROOT, &QueueDecl::named("q"), 1, |_| Ok(()))
            .unwrap()
            .id;
        publish(&mut b, "q", b"m");
        b.add_consumer(q, 3, 2, Bytes::from_static(b"t"), true, false, 0, 0)
            .unwrap();
        let mut effects = Vec::new();
        assert!(delete_queue(&mut b, q, true, false, &mut effects).is_err());
        assert!(effects.is_empty());
        assert_eq!(delete_queue(&mut b, q, false, false, &mut effects), Ok(1));
        assert_eq!(
            effects,
            vec![Effect::Cancel {
                conn: 3,
                channel: 2,
                tag: Bytes::from_static(b"t")
            }]
        );
        assert!(queue(&b, ROOT, b"q").is_none());
        // Gone already: nothing to delete, no effect.
        assert_eq!(delete_queue(&mut b, q, false, false, &mut effects), Ok(0));
        assert_eq!(effects.len(), 1);
    }

    #[test]
    fn get_with_requeue_leaves_the_queue_in_order_marked_redelivered() {
        let mut b = Broker::new();
        let q = b
            .declare_queue(ROOT, &QueueDecl::named("q"), 1, |_| Ok(()))
            .unwrap()
            .id;
        for body in [&b"1"[..], b"2", b"3"] {
            let x = b.publish_target(ROOT, b"").unwrap();
            b.publish(
                x,
                b"",
                b"q",
                Bytes::from_static(&[0, 0]),
                Bytes::copy_from_slice(body),
                u64::MAX,
            );
        }
        let got = get(&mut b, q, 2, true).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((&got[0].body[..], got[0].remaining), (&b"1"[..], 2));
        assert!(!got[0].redelivered);
        assert_eq!(queue(&b, ROOT, b"q").unwrap().ready, 3);
        let again = get(&mut b, q, 10, false).unwrap();
        let bodies: Vec<&[u8]> = again.iter().map(|g| &g.body[..]).collect();
        assert_eq!(bodies, vec![&b"1"[..], b"2", b"3"]);
        assert!(again[0].redelivered && again[1].redelivered && !again[2].redelivered);
        assert_eq!(queue(&b, ROOT, b"q").unwrap().ready, 0);
        // Counted as gets (5), redeliveries (2) and, for the ones not requeued, acks (3).
        let c = b.queue(q).and_then(|q| q.stats.as_ref()).map(|s| s.now);
        let c = c.unwrap_or_default();
        assert_eq!((c.get, c.redeliver, c.ack, c.publish), (5, 2, 3, 3));
        assert_eq!((b.counters.get, b.counters.ack), (5, 3));
    }

    #[test]
    fn connection_names_are_peer_arrow_local() {
        let p: SocketAddr = "10.0.0.1:50000".parse().unwrap();
        let l: SocketAddr = "10.0.0.2:5672".parse().unwrap();
        assert_eq!(
            connection_name(p, Some(l)),
            "10.0.0.1:50000 -> 10.0.0.2:5672"
        );
        assert_eq!(
            close_connection(4, "bye"),
            Effect::Close {
                conn: 4,
                reason: "bye".into()
            }
        );
    }
}
