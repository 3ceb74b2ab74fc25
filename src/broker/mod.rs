//! The virtual hosts: each with its exchanges (its own default exchange and predeclared
//! `amq.*`), queues and the bindings between them; and routing.
//!
//! Per-vhost model: [`Vhost`] holds the NAMES of its exchanges and queues (a name is
//! unique only inside its vhost); the exchanges and queues themselves live in the
//! broker-wide slabs, each recording its [`VhostId`], so ids, routing and the publish and
//! deliver paths do not look at vhosts at all. Every call that takes a name takes the
//! vhost it is resolved in; a binding joins two entities of one vhost, and the default
//! exchange routes to the queues of its own vhost. "/" exists after a first start; vhosts
//! are created with [`Broker::put_vhost`] (or [`Broker::add_vhost`]) and deleted with
//! [`Broker::delete_vhost`], which removes everything in them. A vhost's record carries
//! RabbitMQ's metadata (description, tags, default queue type) and its limits
//! (`max-connections`, `max-queues`); the records persist in the metadata snapshot, so an
//! empty vhost survives a restart.
//!
//! Owns no connection (only [`dispatch`], the delivery policy, is handed the server's connections
//! to write deliveries into; see its header). Queues and exchanges live in slabs addressed by
//! generational ids, so a stale id (a queue deleted while a channel still holds its unacked
//! messages) is detected instead of reaching a reused slot. Everything here is synchronous and runs
//! on the reactor thread; queues that gained work are listed in `dirty` for the server's dispatch
//! phase, which calls [`dispatch::dispatch_queue`]. A queue's ready messages are behind
//! [`queue::Queue`]'s methods. Argument knowledge (validation, equivalence, RabbitMQ's texts) lives
//! in [`args`]; this module only calls it on the declare paths.

pub mod args;
pub mod at_least_once;
pub mod dead_letter;
pub mod dispatch;
pub mod exchange;
pub mod features;
pub mod policy;
pub mod queue;
pub mod quorum;
pub mod reply_to;

use bytes::Bytes;
use log::warn;
use slab::Slab;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{
    access_refused, not_found, precondition, resource_locked, AmqpError, ReplyCode,
};
use crate::message::{Body, Message};
use crate::proto::{properties, FieldTable};
use crate::store::meta::{MetaBinding, MetaExchange, MetaQueue, MetaVhost};
use crate::store::{self, Location, Meta, Store};
use exchange::{Binding, Exchange, ExchangeKind};
use queue::{Consumer, Queue, QueueProps};

/// Generational handle of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueId {
    idx: u32,
    gen: u32,
}

/// Generational handle of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExchangeId {
    idx: u32,
    gen: u32,
}

/// Index of a vhost in the broker. Slots are never reused: a deleted vhost leaves a
/// tombstone, so an id held by anything (a connection still closing, a queue snapshot)
/// never names another vhost, even one re-created with the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VhostId(u32);

impl VhostId {
    /// "/", the vhost [`Broker::new`] creates first (also `VhostId::default()`).
    pub const DEFAULT: VhostId = VhostId(0);
}

/// A virtual host: its name, metadata and limits, and the names of its exchanges and
/// queues. The entities are in the broker's slabs; this is only the vhost's namespace.
#[derive(Debug)]
pub struct Vhost {
    pub name: Arc<str>,
    pub meta: VhostMeta,
    pub limits: VhostLimits,
    /// Its policies and operator policies (see [`policy`]).
    pub policies: policy::Policies,
    exchanges: HashMap<Bytes, ExchangeId>,
    queues: HashMap<Bytes, QueueId>,
}

impl Vhost {
    /// How many queues the vhost has (RabbitMQ's `max-queues` counts them all).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }
}

/// RabbitMQ's vhost metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VhostMeta {
    pub description: String,
    pub tags: Vec<String>,
    /// None: not set (RabbitMQ shows "undefined").
    pub default_queue_type: Option<String>,
}

/// A vhost's limits as set (RabbitMQ's `vhost-limits` parameter): None when not set; a
/// negative value is kept as given (RabbitMQ shows it) and means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VhostLimits {
    pub max_connections: Option<i64>,
    pub max_queues: Option<i64>,
}

impl VhostLimits {
    /// A limit in force: Some(n) for a value set to n >= 0.
    pub fn effective(limit: Option<i64>) -> Option<u64> {
        limit.and_then(|n| u64::try_from(n).ok())
    }

    /// The limit called `name` (`max-connections`, `max-queues`), or None for another name.
    pub fn slot(&mut self, name: &str) -> Option<&mut Option<i64>> {
        match name {
            "max-connections" => Some(&mut self.max_connections),
            "max-queues" => Some(&mut self.max_queues),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.max_connections.is_none() && self.max_queues.is_none()
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    Queue(QueueId),
    Exchange(ExchangeId),
}

/// The arguments of exchange.declare that the broker needs.
#[derive(Debug, Clone)]
pub struct ExchangeDecl {
    pub name: Bytes,
    pub kind: Bytes,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// The arguments of queue.declare that the broker needs.
#[derive(Debug, Clone)]
pub struct QueueDecl {
    pub name: Bytes,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

impl QueueDecl {
    /// A plain declare of `name`: not passive, durable, exclusive or auto-delete, no
    /// arguments (set the fields to change that).
    pub fn named(name: impl Into<Bytes>) -> QueueDecl {
        QueueDecl {
            name: name.into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::new(),
        }
    }
}

/// Messages and consumers over all queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
}

/// A queue's answer to queue.declare.
#[derive(Debug, Clone)]
pub struct Declared {
    pub id: QueueId,
    pub name: Bytes,
    pub messages: u32,
    pub consumers: u32,
}

/// A consumer removed because its queue went away: it gets a server-sent basic.cancel.
pub type Orphan = Consumer;

/// What [`Broker::publish`] did with a message, for the publisher.
#[derive(Debug)]
pub enum Published {
    /// Enqueued in every queue it routed to.
    Routed,
    /// It routed, but the store refused to write it (full disk): not enqueued, and the
    /// store fails this turn's sync, so a confirm for it is a nack.
    Refused,
    /// No queue took it; its parts come back for a mandatory `basic.return`.
    Unroutable { properties: Bytes, body: Bytes },
}

/// The vhost that exists from the start (RabbitMQ's default vhost).
pub const DEFAULT_VHOST: &str = "/";

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[derive(Debug, Default)]
pub struct Broker {
    /// Indexed by `VhostId`; None is a deleted vhost's tombstone (never reused). Boxed:
    /// a tombstone costs a pointer.
    vhosts: Vec<Option<Box<Vhost>>>,
    exchanges: Slab<Exchange>,
    queues: Slab<Queue>,
    next_gen: u32,
    /// Queues with ready messages or new credit, for the dispatch phase.
    dirty: Vec<QueueId>,
    stamp: u64,
    name_counter: u64,
    scratch: Vec<Dest>,
    stack: Vec<ExchangeId>,
    /// The queues of the publish being routed (reused: no allocation per publish).
    routed: Vec<QueueId>,
    next_consumer_id: u64,
    /// The durable store; None for a memory-only broker (tests, fuzzing).
    pub store: Option<Store>,
    /// Durable exchanges, queues or bindings changed: the sync phase rewrites `meta`.
    meta_dirty: bool,
    ref_scratch: Vec<u32>,
    /// Broker-wide message counters (RabbitMQ's global counters and the overview's
    /// message_stats), added to on the hot path; see `crate::counters`.
    pub counters: crate::counters::MsgCounters,
    /// Connections, channels and queues made and removed (the server counts the first
    /// two here too: this is where the sampler and the metrics read them).
    pub churn: crate::counters::Sampled<crate::counters::Churn>,
    /// Queues whose `features` are set (see [`features`]): while 0, a publish does not
    /// look at its queues' features.
    featured: usize,
    /// Head-expiry and `x-expires` deadlines (see [`features`]).
    timers: std::collections::BinaryHeap<features::Timer>,
    /// This turn's wall clock in epoch ms; 0 = not read yet this turn.
    now_ms: u64,
    /// The last publish was refused by a queue at its length limit: its confirm is a
    /// nack (read and cleared by the publisher with [`Broker::take_rejected`]).
    rejected: bool,
    /// Queues with `reject-publish-dlx` that refused the current publish.
    reject_dlx: Vec<QueueId>,
    /// Direct reply-to addresses and the channels they name (see [`reply_to`]).
    pub reply_to: reply_to::Registry,
    /// Quorum queues (see [`quorum`]): while 0, a transient publish does not look for
    /// them among its queues.
    quorum_queues: usize,
    /// See [`Broker::last_route`].
    last_route: Option<(u32, QueueId)>,
    /// How often at-least-once dead-lettering retries (ms); 0 = the default (see
    /// [`at_least_once`]).
    dlx_retry_ms: u64,
}

/// The store reference a queue holds on a message: its durable id for a persistent
/// message of a durable queue, `SPILL` for any other copy of a paged message, none else.
fn ref_id(persistent: bool, paged: bool, durable: u32) -> Option<u32> {
    if persistent && durable != 0 {
        Some(durable)
    } else if paged {
        Some(store::SPILL)
    } else {
        None
    }
}

/// Releases the store reference of (queue `durable`, `msg`), if it has one.
pub fn settle_in(store: Option<&mut Store>, durable: u32, msg: &Message) {
    if let (Some(st), Some(loc)) = (store, msg.location()) {
        if let Some(id) = ref_id(msg.is_persistent(), msg.is_paged(), durable) {
            st.ack(loc, id);
        }
    }
}

/// Records a manual-ack delivery of a persistent message of a durable queue.
pub fn delivered_in(store: Option<&mut Store>, durable: u32, msg: &Message) {
    if let (Some(st), Some(loc), true) =
        (store, msg.location(), msg.is_persistent() && durable != 0)
    {
        st.delivered(loc, durable);
    }
}

/// The body to deliver: in memory, or read back from the store for a paged message.
/// Inlined: every delivery asks, and nearly every answer is the body in memory.
#[inline]
pub fn load_body_in<'m>(store: Option<&mut Store>, msg: &'m Message) -> std::io::Result<Body<'m>> {
    if !msg.is_paged() {
        return Ok(msg.body());
    }
    read_paged_body(store, msg)
}

/// [`load_body_in`] for a paged message.
#[cold]
fn read_paged_body<'m>(store: Option<&mut Store>, msg: &'m Message) -> std::io::Result<Body<'m>> {
    match (store, msg.location()) {
        (Some(st), Some(loc)) => st.read_body(loc).map(Body::Loaded),
        _ => Err(std::io::Error::other("paged message without a store")),
    }
}

impl Broker {
    /// A broker with the vhost "/" (see [`Broker::add_vhost`]).
    pub fn new() -> Broker {
        let mut b = Broker::default();
        b.add_vhost(DEFAULT_VHOST);
        b
    }

    /// Creates the vhost `name` with its default exchange and its predeclared `amq.*`
    /// exchanges, and returns its id; an existing vhost of that name is returned as is.
    pub fn add_vhost(&mut self, name: &str) -> VhostId {
        self.put_vhost(name, None).0
    }

    /// RabbitMQ's `put_vhost`: creates the vhost `name` with `meta` (default metadata
    /// when None), or, when it exists, updates its description and tags with `meta`'s
    /// (the default queue type is only taken at creation, as RabbitMQ). Returns its id
    /// and whether it was created.
    pub fn put_vhost(&mut self, name: &str, meta: Option<VhostMeta>) -> (VhostId, bool) {
        if let Some((id, _)) = self.lookup_vhost(name.as_bytes()) {
            if let (Some(m), Some(v)) = (meta, self.vhost_mut(id)) {
                if v.meta.description != m.description || v.meta.tags != m.tags {
                    v.meta.description = m.description;
                    v.meta.tags = m.tags;
                    self.meta_dirty = true;
                }
            }
            return (id, false);
        }
        let id = VhostId(self.vhosts.len() as u32);
        self.vhosts.push(Some(Box::new(Vhost {
            name: Arc::from(name),
            meta: meta.unwrap_or_default(),
            limits: VhostLimits::default(),
            policies: policy::Policies::default(),
            exchanges: HashMap::new(),
            queues: HashMap::new(),
        })));
        for (name, kind) in [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            self.insert_exchange(
                id,
                Bytes::from_static(name.as_bytes()),
                kind,
                true,
                false,
                false,
                FieldTable::new(),
            );
        }
        self.meta_dirty = true;
        (id, true)
    }

    /// Sets the limits of vhost `id` (false when it does not exist).
    pub fn set_vhost_limits(&mut self, id: VhostId, limits: VhostLimits) -> bool {
        let Some(v) = self.vhost_mut(id) else {
            return false;
        };
        if v.limits != limits {
            v.limits = limits;
            self.meta_dirty = true;
        }
        true
    }

    /// Deletes vhost `id` with everything in it: its queues (their ready messages
    /// settled, so durable ones leave the store), its exchanges and their bindings (a
    /// binding never leaves its vhost), and its record. Returns the consumers of its
    /// queues (their connections are the vhost's, which the server closes) and false
    /// when the vhost does not exist. Unacked messages still held by the vhost's
    /// channels are settled when those channels release them (their queue is gone).
    pub fn delete_vhost(&mut self, id: VhostId) -> Option<Vec<Orphan>> {
        let v = self.vhosts.get_mut(id.0 as usize)?.take()?;
        let mut orphans = Vec::new();
        for (_, qid) in v.queues.iter() {
            let Some(q) = self.queues.get(qid.idx as usize) else {
                continue;
            };
            if q.gen != qid.gen {
                continue;
            }
            let q = self.queues.remove(qid.idx as usize);
            for m in q.messages() {
                settle_in(self.store.as_mut(), q.durable_id, m);
            }
            orphans.extend(q.consumers);
        }
        for (_, xid) in v.exchanges.iter() {
            if self.exchange(*xid).is_some() {
                self.exchanges.remove(xid.idx as usize);
            }
        }
        self.meta_dirty = true;
        Some(orphans)
    }

    /// The id and name of the vhost called `name`, when it exists (connection.open).
    /// A scan: vhosts are few and looked up once per connection.
    pub fn lookup_vhost(&self, name: &[u8]) -> Option<(VhostId, Arc<str>)> {
        self.vhosts()
            .find_map(|(id, v)| (v.name.as_bytes() == name).then(|| (id, v.name.clone())))
    }

    /// A vhost by id (None for a deleted one).
    pub fn vhost(&self, id: VhostId) -> Option<&Vhost> {
        self.vhosts.get(id.0 as usize)?.as_deref()
    }

    /// Every vhost with its id, in creation order.
    pub fn vhosts(&self) -> impl Iterator<Item = (VhostId, &Vhost)> {
        self.vhosts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((VhostId(i as u32), v.as_deref()?)))
    }

    /// The name of vhost `id` for error texts and snapshots ("" for an unknown id).
    pub fn vhost_label(&self, id: VhostId) -> &str {
        self.vhost(id).map_or("", |v| &v.name)
    }

    fn vhost_mut(&mut self, id: VhostId) -> Option<&mut Vhost> {
        self.vhosts.get_mut(id.0 as usize)?.as_deref_mut()
    }

    fn gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_exchange(
        &mut self,
        vhost: VhostId,
        name: Bytes,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> ExchangeId {
        let gen = self.gen();
        let x = Exchange::new(
            gen,
            vhost,
            name.clone(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
        );
        let idx = self.exchanges.insert(x) as u32;
        let id = ExchangeId { idx, gen };
        if let Some(v) = self.vhost_mut(vhost) {
            v.exchanges.insert(name, id);
        }
        self.apply_exchange_policy(id);
        id
    }

    // ----- lookups -------------------------------------------------------------------

    pub fn queue(&self, id: QueueId) -> Option<&Queue> {
        self.queues.get(id.idx as usize).filter(|q| q.gen == id.gen)
    }

    /// A queue and the store side by side (the dispatch phase settles no-ack
    /// deliveries of persistent messages while it walks the queue).
    pub fn queue_and_store(&mut self, id: QueueId) -> Option<(&mut Queue, Option<&mut Store>)> {
        let q = self
            .queues
            .get_mut(id.idx as usize)
            .filter(|q| q.gen == id.gen)?;
        Some((q, self.store.as_mut()))
    }

    pub fn queue_mut(&mut self, id: QueueId) -> Option<&mut Queue> {
        self.queues
            .get_mut(id.idx as usize)
            .filter(|q| q.gen == id.gen)
    }

    pub fn exchange(&self, id: ExchangeId) -> Option<&Exchange> {
        self.exchanges
            .get(id.idx as usize)
            .filter(|x| x.gen == id.gen)
    }

    fn exchange_mut(&mut self, id: ExchangeId) -> Option<&mut Exchange> {
        self.exchanges
            .get_mut(id.idx as usize)
            .filter(|x| x.gen == id.gen)
    }

    /// The exchange called `name` in vhost `vhost`.
    pub fn exchange_id(&self, vhost: VhostId, name: &[u8]) -> Option<ExchangeId> {
        self.vhost(vhost)?.exchanges.get(name).copied()
    }

    /// The queue called `name` in vhost `vhost`.
    pub fn queue_id(&self, vhost: VhostId, name: &[u8]) -> Option<QueueId> {
        self.vhost(vhost)?.queues.get(name).copied()
    }

    /// Every queue with its id, in slab order (inspection, the management API).
    pub fn queues(&self) -> impl Iterator<Item = (QueueId, &Queue)> {
        self.queues.iter().map(|(idx, q)| {
            let id = QueueId {
                idx: idx as u32,
                gen: q.gen,
            };
            (id, q)
        })
    }

    /// Every exchange with its id, in slab order (inspection, the management API).
    pub fn exchanges(&self) -> impl Iterator<Item = (ExchangeId, &Exchange)> {
        self.exchanges.iter().map(|(idx, x)| {
            let id = ExchangeId {
                idx: idx as u32,
                gen: x.gen,
            };
            (id, x)
        })
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Ready messages over all queues (the stats line).
    pub fn ready_count(&self) -> usize {
        self.queues.iter().map(|(_, q)| q.len()).sum()
    }

    /// Looks a queue up by name in `vhost` for connection `conn`: 404 when missing,
    /// 405 when another connection owns it exclusively.
    pub fn find_queue(
        &self,
        vhost: VhostId,
        name: &[u8],
        conn: usize,
    ) -> Result<QueueId, AmqpError> {
        let (id, q) = self
            .queue_id(vhost, name)
            .and_then(|id| Some((id, self.queue(id)?)))
            .ok_or_else(|| self.no_queue(vhost, name))?;
        match q.owner {
            Some(owner) if owner as usize != conn => Err(self.locked_queue(vhost, name)),
            _ => Ok(id),
        }
    }

    /// 404 for a queue missing from `vhost`.
    fn no_queue(&self, vhost: VhostId, name: &[u8]) -> AmqpError {
        not_found(format!(
            "no queue '{}' in vhost '{}'",
            show(name),
            self.vhost_label(vhost)
        ))
    }

    /// 404 for an exchange missing from `vhost`.
    fn no_exchange(&self, vhost: VhostId, name: &[u8]) -> AmqpError {
        not_found(format!(
            "no exchange '{}' in vhost '{}'",
            show(name),
            self.vhost_label(vhost)
        ))
    }

    /// 405 for a queue of `vhost` that another connection owns exclusively.
    fn locked_queue(&self, vhost: VhostId, name: &[u8]) -> AmqpError {
        resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally \
             declared on another connection or the exclusive property value does not match that of the \
             original declaration.",
            show(name),
            self.vhost_label(vhost)
        ))
    }

    fn find_exchange(&self, vhost: VhostId, name: &[u8]) -> Result<ExchangeId, AmqpError> {
        self.exchange_id(vhost, name)
            .ok_or_else(|| self.no_exchange(vhost, name))
    }

    // ----- exchanges -----------------------------------------------------------------

    /// exchange.declare in `vhost`.
    pub fn declare_exchange(&mut self, vhost: VhostId, d: &ExchangeDecl) -> Result<(), AmqpError> {
        if d.name.is_empty() {
            return Err(access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        let vn = self.vhost_label(vhost);
        if let Some(id) = self.exchange_id(vhost, &d.name) {
            let x = self
                .exchange(id)
                .ok_or_else(|| not_found("exchange vanished"))?;
            if d.passive {
                return Ok(());
            }
            let inequivalent = |arg: &str, got: String, cur: String| {
                precondition(format!(
                    "inequivalent arg '{arg}' for exchange '{}' in vhost '{vn}': received '{got}' but current is '{cur}'",
                    show(&d.name)
                ))
            };
            if x.kind.name().as_bytes() != &d.kind[..] {
                return Err(inequivalent("type", show(&d.kind), x.kind.name().into()));
            }
            if x.durable != d.durable {
                return Err(inequivalent(
                    "durable",
                    d.durable.to_string(),
                    x.durable.to_string(),
                ));
            }
            if x.auto_delete != d.auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    d.auto_delete.to_string(),
                    x.auto_delete.to_string(),
                ));
            }
            if x.internal != d.internal {
                return Err(inequivalent(
                    "internal",
                    d.internal.to_string(),
                    x.internal.to_string(),
                ));
            }
            return args::check_exchange_equivalence(vn, &d.name, &d.arguments, &x.arguments);
        }
        if d.passive {
            return Err(self.no_exchange(vhost, &d.name));
        }
        if d.name.starts_with(b"amq.") {
            return Err(access_refused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                show(&d.name)
            )));
        }
        let kind = ExchangeKind::parse(&d.kind).ok_or_else(|| {
            AmqpError::new(
                ReplyCode::CommandInvalid,
                format!("unknown exchange type '{}'", show(&d.kind)),
            )
        })?;
        args::validate_exchange_declare(vn, &d.name, &d.arguments)?;
        self.insert_exchange(
            vhost,
            d.name.clone(),
            kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments.clone(),
        );
        self.meta_dirty |= d.durable;
        Ok(())
    }

    /// exchange.delete in `vhost`. Deleting a missing exchange succeeds, as in RabbitMQ 3.x.
    pub fn delete_exchange(
        &mut self,
        vhost: VhostId,
        name: &[u8],
        if_unused: bool,
    ) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        let Some(id) = self.exchange_id(vhost, name) else {
            return Ok(());
        };
        let vn = self.vhost_label(vhost);
        if name.starts_with(b"amq.") {
            return Err(access_refused(format!(
                "deletion of system exchange '{}' in vhost '{vn}' not allowed",
                show(name)
            )));
        }
        if if_unused && self.exchange(id).is_some_and(Exchange::has_bindings) {
            return Err(precondition(format!(
                "exchange '{}' in vhost '{vn}' in use",
                show(name)
            )));
        }
        self.remove_exchange(id);
        Ok(())
    }

    /// Removes an exchange, its bindings as a source and as a destination.
    fn remove_exchange(&mut self, id: ExchangeId) {
        let Some(x) = self.exchange(id) else { return };
        let (vhost, name) = (x.vhost, x.name.clone());
        let durable = x.durable;
        let outgoing: Vec<Dest> = x.bindings().iter().map(|b| b.dest).collect();
        self.meta_dirty |= durable;
        if let Some(v) = self.vhost_mut(vhost) {
            v.exchanges.remove(&name);
        }
        self.exchanges.remove(id.idx as usize);
        for d in outgoing {
            if let Dest::Queue(q) = d {
                if let Some(q) = self.queue_mut(q) {
                    q.sources.retain(|s| *s != id);
                }
            }
        }
        // Bindings that lead to this exchange from others.
        let sources: Vec<ExchangeId> = self.exchanges().map(|(id, _)| id).collect();
        for s in sources {
            let removed = self
                .exchange_mut(s)
                .map_or(0, |x| x.unbind_all(Dest::Exchange(id)));
            if removed > 0 {
                self.maybe_auto_delete_exchange(s);
            }
        }
    }

    fn maybe_auto_delete_exchange(&mut self, id: ExchangeId) {
        if self
            .exchange(id)
            .is_some_and(|x| x.auto_delete && !x.has_bindings())
        {
            self.remove_exchange(id);
        }
    }

    fn check_bindable_source(&self, vhost: VhostId, name: &[u8]) -> Result<ExchangeId, AmqpError> {
        if name.is_empty() {
            return Err(access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        self.find_exchange(vhost, name)
    }

    /// queue.bind / exchange.bind from exchange `source` of `vhost`: `dest` is already
    /// resolved in the same vhost.
    pub fn bind(
        &mut self,
        vhost: VhostId,
        source: &[u8],
        dest: Dest,
        key: Bytes,
        args: FieldTable,
    ) -> Result<(), AmqpError> {
        let src = self.check_bindable_source(vhost, source)?;
        let added = self
            .exchange_mut(src)
            .map(|x| x.bind(Binding { dest, key, args }))
            .unwrap_or(false);
        self.meta_dirty |= added && self.is_durable_binding(src, dest);
        if let (true, Dest::Queue(q)) = (added, dest) {
            if let Some(q) = self.queue_mut(q) {
                q.sources.push(src);
            }
        }
        Ok(())
    }

    /// queue.unbind / exchange.unbind; `dest` is None when the destination does not
    /// exist. A missing binding, source or destination is not an error: RabbitMQ 3.x
    /// answers unbind-ok (rabbit_channel's `binding_action`), and clients rely on it
    /// (aio-pika unbinds its RPC reply queue after deleting it). Unbinding from the
    /// default exchange is still 403. `source` and `dest` are of `vhost`.
    pub fn unbind(
        &mut self,
        vhost: VhostId,
        source: &[u8],
        dest: Option<Dest>,
        key: &[u8],
        args: &FieldTable,
    ) -> Result<(), AmqpError> {
        let src = match self.check_bindable_source(vhost, source) {
            Ok(src) => src,
            Err(e) if e.code == crate::error::ReplyCode::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(dest) = dest else {
            return Ok(());
        };
        let removed = self
            .exchange_mut(src)
            .is_some_and(|x| x.unbind(dest, key, args));
        if removed {
            self.meta_dirty |= self.is_durable_binding(src, dest);
            if let Dest::Queue(q) = dest {
                if let Some(q) = self.queue_mut(q) {
                    if let Some(at) = q.sources.iter().position(|s| *s == src) {
                        q.sources.swap_remove(at);
                    }
                }
            }
            self.maybe_auto_delete_exchange(src);
        }
        Ok(())
    }

    /// Bindings persist when both ends do.
    fn is_durable_binding(&self, src: ExchangeId, dest: Dest) -> bool {
        let src = self.exchange(src).is_some_and(|x| x.durable);
        let dest = match dest {
            Dest::Queue(q) => self.queue(q).is_some_and(|q| q.durable_id != 0),
            Dest::Exchange(x) => self.exchange(x).is_some_and(|x| x.durable),
        };
        src && dest
    }

    /// Resolves the destination exchange of exchange.bind/unbind in `vhost`.
    pub fn exchange_dest(&self, vhost: VhostId, name: &[u8]) -> Result<Dest, AmqpError> {
        if name.is_empty() {
            return Err(access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        Ok(Dest::Exchange(self.find_exchange(vhost, name)?))
    }

    // ----- queues --------------------------------------------------------------------

    /// queue.declare in `vhost` for connection `conn`. A declaration that is not passive asks
    /// `may_configure` about the queue's name once it is known (a server-generated one
    /// included) and before anything is compared or created, where RabbitMQ checks the
    /// configure permission; its error is returned as is.
    pub fn declare_queue(
        &mut self,
        vhost: VhostId,
        d: &QueueDecl,
        conn: usize,
        may_configure: impl FnOnce(&[u8]) -> Result<(), AmqpError>,
    ) -> Result<Declared, AmqpError> {
        if !d.name.is_empty() || d.passive {
            if self.queue_id(vhost, &d.name).is_some() {
                if !d.passive {
                    may_configure(&d.name)?;
                }
                let id = self.find_queue(vhost, &d.name, conn)?;
                let q = self.queue(id).ok_or_else(|| not_found("queue vanished"))?;
                let vn = self.vhost_label(vhost);
                if !d.passive {
                    if q.owner.is_some() != d.exclusive {
                        return Err(self.locked_queue(vhost, &d.name));
                    }
                    let inequivalent = |arg: &str, got: bool, cur: bool| {
                        precondition(format!(
                            "inequivalent arg '{arg}' for queue '{}' in vhost '{vn}': received '{got}' but current is '{cur}'",
                            show(&d.name)
                        ))
                    };
                    if q.props.durable != d.durable {
                        return Err(inequivalent("durable", d.durable, q.props.durable));
                    }
                    if q.props.auto_delete != d.auto_delete {
                        return Err(inequivalent(
                            "auto_delete",
                            d.auto_delete,
                            q.props.auto_delete,
                        ));
                    }
                    args::check_queue_equivalence(vn, &d.name, &d.arguments, &q.props.arguments)?;
                }
                if q.features.is_some() {
                    // A declare is a use (`x-expires`), and its count leaves out
                    // what has expired.
                    self.touch_unused(id);
                    self.expire_due(id, false);
                }
                let q = self.queue(id).ok_or_else(|| not_found("queue vanished"))?;
                let declared = Declared {
                    id,
                    name: q.name.clone(),
                    messages: q.message_count(),
                    consumers: q.consumer_count(),
                };
                self.churn.now.queue_declared += 1;
                return Ok(declared);
            }
            if d.passive {
                return Err(self.no_queue(vhost, &d.name));
            }
            if d.name.starts_with(b"amq.") {
                return Err(access_refused(format!(
                    "queue name '{}' contains reserved prefix 'amq.*'",
                    show(&d.name)
                )));
            }
        }
        let name = if d.name.is_empty() {
            self.server_name(vhost)
        } else {
            d.name.clone()
        };
        may_configure(&name)?;
        self.check_queue_limit(vhost, &name)?;
        let vn = self.vhost_label(vhost);
        args::validate_queue_declare(
            vn,
            &d.name,
            &d.arguments,
            d.durable,
            d.exclusive,
            d.auto_delete,
        )?;
        let props = QueueProps {
            durable: d.durable,
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
        };
        let owner = d.exclusive.then_some(conn);
        // Server-named and exclusive queues never persist.
        let persist = d.durable && !d.exclusive && !d.name.is_empty();
        let durable_id = match (&mut self.store, persist) {
            // The declaration could not be made durable: say so now rather than lose it.
            (Some(st), true) if st.is_full() => {
                return Err(precondition(format!(
                    "cannot declare durable queue '{}' in vhost '{}': the disk is full",
                    show(&name),
                    self.vhost_label(vhost)
                )));
            }
            (Some(st), true) => st.next_queue_id(),
            _ => 0,
        };
        warn_not_implemented(self.vhost_label(vhost), &name, &d.arguments);
        let id = self.insert_queue(vhost, name.clone(), props, owner, durable_id);
        self.meta_dirty |= durable_id != 0;
        self.churn.now.queue_declared += 1;
        self.churn.now.queue_created += 1;
        Ok(Declared {
            id,
            name,
            messages: 0,
            consumers: 0,
        })
    }

    /// RabbitMQ's `check_vhost_queue_limit`, for a queue about to be created in `vhost`:
    /// 406 once the vhost has `max-queues` queues (0: none may be declared).
    fn check_queue_limit(&self, vhost: VhostId, name: &[u8]) -> Result<(), AmqpError> {
        let Some(v) = self.vhost(vhost) else {
            return Ok(());
        };
        match VhostLimits::effective(v.limits.max_queues) {
            Some(limit) if v.queues.len() as u64 >= limit => Err(precondition(format!(
                "cannot declare queue '{}': queue limit in vhost '{}' ({limit}) is reached",
                show(name),
                v.name
            ))),
            _ => Ok(()),
        }
    }

    /// Puts a new queue in the slab and its name in `vhost` (declare and recovery).
    fn insert_queue(
        &mut self,
        vhost: VhostId,
        name: Bytes,
        props: QueueProps,
        owner: Option<usize>,
        durable_id: u32,
    ) -> QueueId {
        let gen = self.gen();
        let mut q = Queue::new(gen, vhost, name.clone(), props, owner);
        q.durable_id = durable_id;
        q.quorum = args::QueueType::of(&q.props.arguments) == args::QueueType::Quorum;
        self.quorum_queues += usize::from(q.quorum);
        if matches!(
            q.props.arguments.get(b"x-single-active-consumer"),
            Some(crate::proto::FieldValue::Bool(true))
        ) {
            q.set_single_active();
        }
        let idx = self.queues.insert(q) as u32;
        let id = QueueId { idx, gen };
        if let Some(v) = self.vhost_mut(vhost) {
            v.queues.insert(name, id);
        }
        self.init_features(id);
        id
    }

    /// A fresh `amq.gen-…` name, unique for this broker's life and unused in `vhost`.
    fn server_name(&mut self, vhost: VhostId) -> Bytes {
        loop {
            self.name_counter += 1;
            let mut x =
                self.name_counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ std::process::id() as u64;
            let mut s = String::from("amq.gen-");
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            for _ in 0..22 {
                s.push(ALPHABET[(x & 63) as usize] as char);
                x = x.rotate_right(6) ^ self.name_counter;
            }
            let b = Bytes::from(s);
            if self.queue_id(vhost, &b).is_none() {
                return b;
            }
        }
    }

    /// queue.purge: drops ready messages, returns how many.
    pub fn purge(&mut self, id: QueueId) -> u32 {
        let Some((q, mut store)) = self.queue_and_store(id) else {
            return 0;
        };
        let durable = q.durable_id;
        q.purge(|m| settle_in(store.as_deref_mut(), durable, m))
    }

    /// queue.delete with its conditions; returns (ready messages dropped, consumers to cancel).
    pub fn delete_queue(
        &mut self,
        id: QueueId,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<(u32, Vec<Orphan>), AmqpError> {
        let Some(q) = self.queue(id) else {
            return Ok((0, Vec::new()));
        };
        let vn = self.vhost_label(q.vhost);
        if if_unused && !q.consumers.is_empty() {
            return Err(precondition(format!(
                "queue '{}' in vhost '{vn}' in use",
                show(&q.name)
            )));
        }
        if if_empty && !q.is_empty() {
            return Err(precondition(format!(
                "queue '{}' in vhost '{vn}' not empty",
                show(&q.name)
            )));
        }
        Ok(self.remove_queue(id))
    }

    /// Removes a queue unconditionally with its bindings; returns (ready count, consumers).
    pub fn remove_queue(&mut self, id: QueueId) -> (u32, Vec<Orphan>) {
        if self.queue(id).is_none() {
            return (0, Vec::new());
        }
        let q = self.queues.remove(id.idx as usize);
        self.churn.now.queue_deleted += 1;
        if let Some(v) = self.vhost_mut(q.vhost) {
            v.queues.remove(&q.name);
        }
        if q.features.is_some() {
            self.featured = self.featured.saturating_sub(1);
        }
        if q.quorum {
            self.quorum_queues = self.quorum_queues.saturating_sub(1);
        }
        self.meta_dirty |= q.durable_id != 0;
        for m in q.messages() {
            settle_in(self.store.as_mut(), q.durable_id, m);
        }
        // Messages still waiting to be dead-lettered at-least-once go with the queue.
        for p in q.features.iter().flat_map(|f| f.dlx_pending.iter()) {
            settle_in(self.store.as_mut(), q.durable_id, &p.msg);
        }
        let mut sources = q.sources.clone();
        sources.sort_by_key(|s| (s.idx, s.gen));
        sources.dedup();
        for s in sources {
            if let Some(x) = self.exchange_mut(s) {
                x.unbind_all(Dest::Queue(id));
            }
            self.maybe_auto_delete_exchange(s);
        }
        (q.message_count(), q.consumers)
    }

    /// Every exclusive queue owned by `conn` (deleted when it closes).
    pub fn exclusive_queues_of(&self, conn: usize) -> Vec<QueueId> {
        self.queues()
            .filter(|(_, q)| q.owner.is_some_and(|o| o as usize == conn))
            .map(|(id, _)| id)
            .collect()
    }

    // ----- consumers -----------------------------------------------------------------

    /// Attaches a consumer (basic.consume). Returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn add_consumer(
        &mut self,
        id: QueueId,
        conn: usize,
        channel: u16,
        tag: Bytes,
        no_ack: bool,
        exclusive: bool,
        prefetch: u16,
        priority: i32,
    ) -> Result<u64, AmqpError> {
        self.next_consumer_id += 1;
        let cid = self.next_consumer_id;
        let q = self.queue(id).ok_or_else(|| not_found("queue vanished"))?;
        // A classic single-active-consumer queue refuses any exclusive consume
        // (`exclusive_consume_unavailable`). A quorum queue ignores the flag, as
        // RabbitMQ 3.10's `rabbit_quorum_queue:consume` does (no exclusive use, no
        // `exclusive_consumer_tag`).
        let refused = if q.quorum {
            false
        } else if q.is_single_active() {
            exclusive
        } else {
            q.has_exclusive_consumer() || (exclusive && !q.consumers.is_empty())
        };
        if refused {
            return Err(access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                show(&q.name),
                self.vhost_label(q.vhost)
            )));
        }
        let q = self
            .queue_mut(id)
            .ok_or_else(|| not_found("queue vanished"))?;
        q.insert_consumer(Consumer {
            id: cid,
            conn,
            channel,
            tag,
            no_ack,
            exclusive,
            prefetch,
            unacked: 0,
            priority,
        });
        q.had_consumer = true;
        self.mark_dirty(id);
        Ok(cid)
    }

    /// Detaches a consumer (basic.cancel, channel close). Deletes an auto-delete queue
    /// that lost its last consumer (it has no consumer left to cancel). A queue or
    /// consumer that no longer exists is ignored.
    pub fn remove_consumer(&mut self, id: QueueId, consumer: u64) {
        let Some(q) = self.queue_mut(id) else { return };
        q.remove_consumer(consumer);
        if q.props.auto_delete && q.had_consumer && q.consumers.is_empty() {
            self.remove_queue(id);
        } else if q.consumers.is_empty() && q.features.is_some() {
            // Unused from now on (`x-expires`).
            self.touch_unused(id);
        }
    }

    // ----- publishing ----------------------------------------------------------------

    /// Resolves the exchange of a basic.publish in `vhost`: 404 when missing, 403 when
    /// internal.
    pub fn publish_target(&self, vhost: VhostId, exchange: &[u8]) -> Result<ExchangeId, AmqpError> {
        let id = self.find_exchange(vhost, exchange)?;
        match self.exchange(id) {
            Some(x) if x.internal => Err(access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                show(exchange),
                self.vhost_label(vhost)
            ))),
            Some(_) => Ok(id),
            None => Err(self.no_exchange(vhost, exchange)),
        }
    }

    /// Computes the queues `msg` goes to from exchange `x`, each once, into `out`
    /// (cleared first). Follows exchange-to-exchange bindings, and the alternate
    /// exchange of any exchange on the way that routes nowhere, without looping.
    pub fn route(
        &mut self,
        x: ExchangeId,
        routing_key: &[u8],
        properties: &Bytes,
        out: &mut Vec<QueueId>,
    ) {
        self.route_hinted(x, None, routing_key, properties, out);
    }

    /// [`Broker::route`] with `hint`: what [`Broker::last_route`] said after the
    /// publisher's previous publish to exchange `x` with the same `routing_key` (the
    /// channel remembers it). It is taken, sparing the hash lookup, while it still
    /// holds: the exchange's bindings have not changed since (`Exchange::version`; a
    /// deleted queue's bindings go with it) and the queue exists (its id carries a
    /// generation, so a re-declared queue is not taken for the old one). Only a route
    /// that one exchange, not a headers one, resolved to one queue is returned, to be
    /// remembered: nothing about the message or another exchange enters it.
    #[inline]
    fn route_hinted(
        &mut self,
        x: ExchangeId,
        hint: Option<(u32, QueueId)>,
        routing_key: &[u8],
        properties: &Bytes,
        out: &mut Vec<QueueId>,
    ) -> Option<(u32, QueueId)> {
        out.clear();
        let ex = self.exchange(x)?;
        if let Some((version, q)) = hint {
            if version == ex.version && ex.kind != ExchangeKind::Headers && self.queue(q).is_some()
            {
                out.push(q);
                return hint;
            }
        }
        if ex.name.is_empty() {
            // The default exchange binds every queue of its vhost by its name (and
            // nothing else: its version never changes).
            let q = self.queue_id(ex.vhost, routing_key)?;
            out.push(q);
            return Some((0, q));
        }
        let (version, simple) = (ex.version, ex.kind != ExchangeKind::Headers);
        self.stamp += 1;
        let stamp = self.stamp;
        let mut visited = 0;
        let mut headers: Option<Option<FieldTable>> = None;
        let mut stack = std::mem::take(&mut self.stack);
        let mut scratch = std::mem::take(&mut self.scratch);
        stack.clear();
        stack.push(x);
        if let Some(ex) = self.exchange_mut(x) {
            ex.stamp = stamp;
        }
        while let Some(e) = stack.pop() {
            scratch.clear();
            visited += 1;
            let Some(ex) = self.exchange(e) else { continue };
            let h = if ex.kind == ExchangeKind::Headers {
                headers
                    .get_or_insert_with(|| properties::headers(properties))
                    .as_ref()
            } else {
                None
            };
            ex.route(routing_key, h, &mut scratch);
            if scratch.is_empty() {
                // RabbitMQ's `process_alternate`: an exchange that routes nowhere hands
                // the message to its alternate exchange, if that exists (chains follow;
                // the stamp stops cycles, as RabbitMQ's seen-set does).
                if let Some(ae) = ex.alternate.as_ref() {
                    if let Some(n) = self.exchange_id(ex.vhost, ae) {
                        scratch.push(Dest::Exchange(n));
                    }
                }
            }
            for d in scratch.iter() {
                match *d {
                    Dest::Queue(q) => {
                        if let Some(queue) = self.queue_mut(q) {
                            if queue.stamp != stamp {
                                queue.stamp = stamp;
                                out.push(q);
                            }
                        }
                    }
                    Dest::Exchange(n) => {
                        if let Some(next) = self.exchange_mut(n) {
                            if next.stamp != stamp {
                                next.stamp = stamp;
                                stack.push(n);
                            }
                        }
                    }
                }
            }
        }
        self.stack = stack;
        self.scratch = scratch;
        match (&out[..], simple, visited) {
            // One pass over `x` alone gave one queue (an alternate exchange or an
            // exchange-to-exchange binding would have taken a second pass).
            ([q], true, 1) => Some((version, *q)),
            _ => None,
        }
    }

    /// What the last publish's route resolved to, when the publisher may remember it:
    /// the version of the exchange's bindings and the one queue (see
    /// [`Broker::route_hinted`]).
    #[inline]
    pub fn last_route(&self) -> Option<(u32, QueueId)> {
        self.last_route
    }

    /// Appends a published message to a queue (counted in its `publish`) and schedules
    /// it for dispatch.
    pub fn enqueue(&mut self, id: QueueId, msg: Message) {
        let timed = msg.timing().is_some();
        self.enqueue_as(id, msg, timed);
    }

    /// [`Broker::enqueue`] told whether the message has timing (the plain publish path
    /// knows it has none and does not ask the message).
    #[inline(always)]
    fn enqueue_as(&mut self, id: QueueId, msg: Message, timed: bool) {
        if let Some(q) = self.queue_mut(id) {
            q.counting().publish += 1;
            q.push(msg);
            let featured = timed || q.features.is_some();
            if !q.dirty {
                q.dirty = true;
                self.dirty.push(id);
            }
            if featured {
                self.enqueued_featured(id, timed);
            }
        }
    }

    /// Puts an unacked message back at its original position, marked redelivered. A
    /// message whose queue is gone is settled instead (`durable` is that queue's id).
    pub fn requeue(&mut self, id: QueueId, durable: u32, msg: Message, seq: u64) {
        let (msg, seq) = match self.queue(id) {
            Some(q) if q.quorum => match self.quorum_return(id, durable, msg, seq) {
                Some(back) => back,
                None => return,
            },
            _ => (msg, seq),
        };
        if let Some(q) = self.queue_mut(id) {
            q.requeue(msg, seq);
            let featured = q.features.is_some();
            self.mark_dirty(id);
            if featured {
                // It keeps its original expiry and may be the new head.
                self.arm(id);
            }
        } else {
            self.settle(durable, &msg);
        }
    }

    /// `requeue` for one message of a large set returned over several turns: the queue
    /// is not marked for dispatch (it is held until the whole set is back; see
    /// `Queue::held`). Returns false when the queue is gone (the message is settled).
    pub fn requeue_held(&mut self, id: QueueId, durable: u32, msg: Message, seq: u64) -> bool {
        let (msg, seq) = match self.queue(id) {
            Some(q) if q.quorum => match self.quorum_return(id, durable, msg, seq) {
                Some(back) => back,
                // Dead-lettered past its delivery limit; the queue is still there.
                None => return true,
            },
            _ => (msg, seq),
        };
        if let Some(q) = self.queue_mut(id) {
            q.requeue(msg, seq);
            if q.features.is_some() {
                self.arm(id);
            }
            true
        } else {
            self.settle(durable, &msg);
            false
        }
    }

    /// The queue with durable id `durable` is done with `msg` (ack, drop, no-ack delivery).
    pub fn settle(&mut self, durable: u32, msg: &Message) {
        settle_in(self.store.as_mut(), durable, msg);
    }

    /// Publishes a complete message that exchange `x` (already resolved and checked
    /// with [`Broker::publish_target`]; `exchange` is the name the publisher used)
    /// routes: computes its queues, writes it to the store when it is persistent and
    /// routed to a durable queue or its body goes beyond `memory_budget` (paged: it
    /// stays on disk until delivery; a full disk keeps bodies in memory, the memory
    /// alarm guards that), and enqueues it into each queue once. The one broker call
    /// per publish, for AMQP and the management API alike; no allocation beyond the
    /// message's own. Returns what the publisher must know (see [`Published`]).
    #[inline]
    pub fn publish(
        &mut self,
        x: ExchangeId,
        exchange: &[u8],
        routing_key: &[u8],
        properties: Bytes,
        body: Bytes,
        memory_budget: u64,
    ) -> Published {
        let (e, k) = (exchange, routing_key);
        self.publish_hinted(x, None, e, k, properties, body, memory_budget)
    }

    /// [`Broker::publish`] with the route the publisher remembers for this exchange
    /// and key (see [`Broker::route_hinted`]); [`Broker::last_route`] tells it what to
    /// remember next.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn publish_hinted(
        &mut self,
        x: ExchangeId,
        hint: Option<(u32, QueueId)>,
        exchange: &[u8],
        routing_key: &[u8],
        properties: Bytes,
        body: Bytes,
        memory_budget: u64,
    ) -> Published {
        // One store; a caller that never takes it (the API) leaves no stale nack.
        self.rejected = false;
        let mut routed = std::mem::take(&mut self.routed);
        // Kept aside: dead-lettering during this publish routes too.
        let memo = self.route_hinted(x, hint, routing_key, &properties, &mut routed);
        // Counted once the route is known, whatever happens next (a refused write
        // was still received and routed, as RabbitMQ counts it).
        let n = routed.len() as u64;
        self.counters.publish += 1;
        self.counters.routed += n;
        if let Some(ex) = self.exchange_mut(x) {
            let c = crate::counters::counting(&mut ex.stats);
            c.publish += 1;
            c.routed += n;
        }
        if routed.is_empty() {
            self.routed = routed;
            self.last_route = None;
            return Published::Unroutable { properties, body };
        }
        // The plain path (no queue with features, no quorum queue, no `expiration`)
        // is the whole of what a queue without features pays for them: these loads.
        let published = if self.featured == 0
            && self.quorum_queues == 0
            && !features::has_expiration(&properties)
        {
            self.enqueue_plain(
                &routed,
                exchange,
                routing_key,
                &properties,
                body,
                memory_budget,
            )
        } else {
            self.enqueue_routed(
                &mut routed,
                exchange,
                routing_key,
                &properties,
                body,
                memory_budget,
            )
        };
        self.routed = routed;
        self.last_route = memo;
        published
    }

    /// [`Broker::publish`] once the message's queues are known and none of them has
    /// a feature: persists it when it must be and enqueues it.
    #[inline(always)]
    fn enqueue_plain(
        &mut self,
        routed: &[QueueId],
        exchange: &[u8],
        routing_key: &[u8],
        properties: &Bytes,
        body: Bytes,
        memory_budget: u64,
    ) -> Published {
        let persistent = properties::delivery_mode(properties) == Some(2);
        let page = self.must_page(body.len(), memory_budget);
        let (e, k, p) = (exchange, routing_key, properties);
        self.store_and_enqueue(routed, e, k, p, body, persistent, page, None)
    }

    /// The end of every publish: writes the message to the store when it is persistent
    /// (and `routed` has durable queues) or paged, builds it, and enqueues it in each of
    /// `routed`. Inlined into both paths: with `timing` None (the plain path), the
    /// timing's branches fold away.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn store_and_enqueue(
        &mut self,
        routed: &[QueueId],
        exchange: &[u8],
        routing_key: &[u8],
        properties: &Bytes,
        body: Bytes,
        persistent: bool,
        page: bool,
        timing: Option<crate::message::Timing>,
    ) -> Published {
        let mut location = None;
        if persistent || page {
            match self.persist(
                routed,
                persistent,
                page,
                exchange,
                routing_key,
                properties,
                &body,
                timing.map(|t| t.arrival_ms),
            ) {
                Ok(l) => location = l,
                Err(_) => return Published::Refused,
            }
        }
        let msg = match (location, timing) {
            (Some(loc), _) if page => {
                Message::paged_timed(exchange, routing_key, properties, body.len(), loc, timing)
            }
            // `Message::new` is `build` specialised for no timing.
            (_, None) => Message::new(exchange, routing_key, properties, body, location),
            (_, Some(_)) => {
                Message::new_timed(exchange, routing_key, properties, body, location, timing)
            }
        };
        for &q in routed {
            self.enqueue_as(q, msg.clone(), timing.is_some());
        }
        Published::Routed
    }

    /// Whether a body of `len` bytes goes to the store rather than memory (paging;
    /// never while the disk is full: the memory alarm guards that).
    #[inline(always)]
    fn must_page(&self, len: usize, memory_budget: u64) -> bool {
        self.store.as_ref().is_some_and(|st| !st.is_full())
            && crate::message::resident_bytes() as u64 + len as u64 > memory_budget
    }

    /// Whether the last [`Broker::publish`] was refused by a queue at its length limit
    /// (`reject-publish`): a confirming publisher gets a nack. Clears it.
    #[inline]
    pub fn take_rejected(&mut self) -> bool {
        std::mem::take(&mut self.rejected)
    }

    /// The second half of a publish when a feature may apply, for a message whose
    /// queues are known: admits it into `routed` (length limits, timing), then persists
    /// and enqueues it (see [`Broker::enqueue_routed_timed`]). Used by
    /// [`Broker::publish`] off its plain path, and by dead-lettering. Kept out of line
    /// so that the plain path stays small.
    #[inline(never)]
    fn enqueue_routed(
        &mut self,
        routed: &mut Vec<QueueId>,
        exchange: &[u8],
        routing_key: &[u8],
        properties: &Bytes,
        body: Bytes,
        memory_budget: u64,
    ) -> Published {
        let timing = self.admit(routed, properties, body.len());
        self.enqueue_routed_timed(
            routed,
            exchange,
            routing_key,
            properties,
            body,
            memory_budget,
            timing,
        )
    }

    /// Persists (when it must be) and enqueues a message into the queues that admitted
    /// it; a message refused by `reject-publish-dlx` queues (`self.reject_dlx`) is
    /// dead-lettered from each of them.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn enqueue_routed_timed(
        &mut self,
        routed: &mut [QueueId],
        exchange: &[u8],
        routing_key: &[u8],
        properties: &Bytes,
        body: Bytes,
        memory_budget: u64,
        timing: Option<crate::message::Timing>,
    ) -> Published {
        if !self.reject_dlx.is_empty() {
            self.dead_letter_refused(exchange, routing_key, properties, &body, timing);
        }
        if routed.is_empty() {
            return Published::Routed;
        }
        let persistent = properties::delivery_mode(properties) == Some(2);
        let page = self.must_page(body.len(), memory_budget);
        let mut routed = routed;
        if !persistent && self.quorum_queues > 0 && self.store.is_some() {
            // Quorum queues keep even a transient message in the store: they get their
            // own persistent copy; the other queues the message as published.
            let n = self.quorum_first(routed);
            if n > 0 {
                let (quorum, rest) = routed.split_at_mut(n);
                if self
                    .enqueue_quorum_copy(
                        quorum,
                        exchange,
                        routing_key,
                        properties,
                        &body,
                        page,
                        timing,
                    )
                    .is_err()
                {
                    return Published::Refused;
                }
                if rest.is_empty() {
                    return Published::Routed;
                }
                routed = rest;
            }
        }
        let (e, k, p) = (exchange, routing_key, properties);
        self.store_and_enqueue(routed, e, k, p, body, persistent, page, timing)
    }

    /// Dead-letters (reason `maxlen`) a message the `reject-publish-dlx` queues in
    /// `self.reject_dlx` refused.
    #[cold]
    fn dead_letter_refused(
        &mut self,
        exchange: &[u8],
        routing_key: &[u8],
        properties: &Bytes,
        body: &Bytes,
        timing: Option<crate::message::Timing>,
    ) {
        let queues = std::mem::take(&mut self.reject_dlx);
        let msg = Message::new_timed(
            exchange,
            routing_key,
            properties,
            body.clone(),
            None,
            timing,
        );
        let rejected = self.rejected;
        for q in queues {
            self.dead_letter(q, 0, msg.clone(), dead_letter::Reason::Maxlen);
        }
        self.rejected = rejected;
    }

    /// Writes a message routed to `queues` to the store when it must be: a persistent
    /// message with durable queues among them, or any message that is paged out
    /// (`page`). Returns where it went, None when nothing was written.
    #[allow(clippy::too_many_arguments)]
    fn persist(
        &mut self,
        queues: &[QueueId],
        persistent: bool,
        page: bool,
        exchange: &[u8],
        routing_key: &[u8],
        props: &[u8],
        body: &[u8],
        arrival_ms: Option<u64>,
    ) -> std::io::Result<Option<Location>> {
        if self.store.is_none() {
            return Ok(None);
        }
        let mut ids = std::mem::take(&mut self.ref_scratch);
        ids.clear();
        for q in queues {
            let d = self.queue(*q).map_or(0, |q| q.durable_id);
            match ref_id(persistent, page, d) {
                Some(id) => ids.push(id),
                None => continue,
            }
        }
        let r = match (self.store.as_mut(), ids.is_empty()) {
            (Some(st), false) => st
                .append_timed(&ids, exchange, routing_key, props, body, arrival_ms)
                .map(Some),
            _ => Ok(None),
        };
        self.ref_scratch = ids;
        r
    }

    /// The sync phase: the metadata snapshot when it changed, then this turn's records
    /// with one fdatasync. Returns Err when the disk refused (confirms become nacks).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.store.is_none() {
            return Ok(());
        }
        let mut meta_result = Ok(());
        if self.meta_dirty {
            let meta = self.durable_meta();
            if let Some(st) = self.store.as_mut() {
                meta_result = st.write_meta(&meta);
                if meta_result.is_err() {
                    // Retried next turn; this turn's publishes are nacked and abandoned.
                    st.refuse_turn();
                } else {
                    self.meta_dirty = false;
                }
            }
        }
        if let Some(st) = self.store.as_mut() {
            st.sync()?;
        }
        meta_result
    }

    /// Everything durable except messages, for the metadata snapshot; each entity with
    /// the name of its vhost.
    pub fn durable_meta(&self) -> Meta {
        let mut m = Meta::default();
        // Once per vhost, not per entity (a tombstone's name is never asked for).
        let names: Vec<Bytes> = self
            .vhosts
            .iter()
            .map(|v| {
                v.as_ref()
                    .map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.name.as_bytes()))
            })
            .collect();
        m.vhosts = Some(
            self.vhosts()
                .map(|(id, v)| MetaVhost {
                    name: names[id.0 as usize].clone(),
                    description: Bytes::copy_from_slice(v.meta.description.as_bytes()),
                    tags: v
                        .meta
                        .tags
                        .iter()
                        .map(|t| Bytes::copy_from_slice(t.as_bytes()))
                        .collect(),
                    default_queue_type: v
                        .meta
                        .default_queue_type
                        .as_deref()
                        .map_or_else(Bytes::new, |t| Bytes::copy_from_slice(t.as_bytes())),
                    max_connections: v.limits.max_connections,
                    max_queues: v.limits.max_queues,
                })
                .collect(),
        );
        for (id, v) in self.vhosts() {
            m.policies
                .extend(policy::meta_records(&names[id.0 as usize], &v.policies));
        }
        let vhost_of = |v: VhostId| names.get(v.0 as usize).cloned().unwrap_or_default();
        for (_, x) in self.exchanges.iter() {
            if !x.durable {
                continue;
            }
            if !x.name.is_empty() && !x.name.starts_with(b"amq.") {
                m.exchanges.push(MetaExchange {
                    vhost: vhost_of(x.vhost),
                    name: x.name.clone(),
                    kind: Bytes::from_static(x.kind.name().as_bytes()),
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: x.arguments.clone(),
                });
            }
            for b in x.bindings() {
                let (to_exchange, destination) = match b.dest {
                    Dest::Queue(q) => match self.queue(q) {
                        Some(q) if q.durable_id != 0 => (false, q.name.clone()),
                        _ => continue,
                    },
                    Dest::Exchange(d) => match self.exchange(d) {
                        Some(d) if d.durable => (true, d.name.clone()),
                        _ => continue,
                    },
                };
                m.bindings.push(MetaBinding {
                    vhost: vhost_of(x.vhost),
                    source: x.name.clone(),
                    to_exchange,
                    destination,
                    key: b.key.clone(),
                    arguments: b.args.clone(),
                });
            }
        }
        for (_, q) in self.queues.iter() {
            if q.durable_id != 0 {
                m.queues.push(MetaQueue {
                    vhost: vhost_of(q.vhost),
                    name: q.name.clone(),
                    id: q.durable_id,
                    auto_delete: q.props.auto_delete,
                    arguments: q.props.arguments.clone(),
                });
            }
        }
        m
    }

    /// A broker over an opened store: the vhosts of the metadata (when it has vhost
    /// records; before version 3, "/"), durable exchanges, queues and bindings, each in
    /// its vhost (created when it does not exist yet), then the recovered messages in log
    /// order (so each queue keeps its order). Bodies beyond `budget` bytes in memory stay
    /// on disk (paged).
    pub fn recover(
        store: Store,
        meta: Meta,
        messages: Vec<store::Recovered>,
        budget: u64,
    ) -> Broker {
        let mut b = match &meta.vhosts {
            // A store written since vhost records exist: exactly its vhosts, so a
            // deleted "/" stays deleted.
            Some(vhosts) => {
                let mut b = Broker::default();
                let text = |t: &Bytes| String::from_utf8_lossy(t).into_owned();
                for v in vhosts {
                    let m = VhostMeta {
                        description: text(&v.description),
                        tags: v.tags.iter().map(text).collect(),
                        default_queue_type: (!v.default_queue_type.is_empty())
                            .then(|| text(&v.default_queue_type)),
                    };
                    let (id, _) = b.put_vhost(&text(&v.name), Some(m));
                    b.set_vhost_limits(
                        id,
                        VhostLimits {
                            max_connections: v.max_connections,
                            max_queues: v.max_queues,
                        },
                    );
                }
                b
            }
            None => Broker::new(),
        };
        b.store = Some(store);
        // Before the entities, so that each is declared under its policies.
        b.recover_policies(&meta.policies);
        for x in &meta.exchanges {
            let Some(kind) = ExchangeKind::parse(&x.kind) else {
                continue;
            };
            let vhost = b.add_vhost(&String::from_utf8_lossy(&x.vhost));
            b.insert_exchange(
                vhost,
                x.name.clone(),
                kind,
                true,
                x.auto_delete,
                x.internal,
                x.arguments.clone(),
            );
        }
        let mut by_id: HashMap<u32, QueueId> = HashMap::new();
        for q in &meta.queues {
            let vhost = b.add_vhost(&String::from_utf8_lossy(&q.vhost));
            let props = QueueProps {
                durable: true,
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            };
            let id = b.insert_queue(vhost, q.name.clone(), props, None, q.id);
            by_id.insert(q.id, id);
            warn_not_implemented(b.vhost_label(vhost), &q.name, &q.arguments);
        }
        for bind in &meta.bindings {
            let vhost = b.add_vhost(&String::from_utf8_lossy(&bind.vhost));
            let dest = if bind.to_exchange {
                b.exchange_id(vhost, &bind.destination).map(Dest::Exchange)
            } else {
                b.queue_id(vhost, &bind.destination).map(Dest::Queue)
            };
            if let Some(dest) = dest {
                let (key, args) = (bind.key.clone(), bind.arguments.clone());
                let _ = b.bind(vhost, &bind.source, dest, key, args);
            }
        }
        let mut timed_queues = Vec::new();
        for r in messages {
            let rec = r.record;
            let page = crate::message::resident_bytes() as u64 + rec.body.len() as u64 > budget;
            // A message that could expire keeps its arrival (a TTL counts from it, not
            // from the restart); its own TTL is read back from its `expiration`.
            let timing = rec.arrival_ms.map(|arrival_ms| crate::message::Timing {
                arrival_ms,
                ttl_ms: properties::expiration(&rec.properties)
                    .and_then(|e| features::parse_expiration(e).ok())
                    .unwrap_or(u64::MAX),
            });
            let msg = if page {
                Message::paged_timed(
                    &rec.exchange,
                    &rec.routing_key,
                    &rec.properties,
                    rec.body.len(),
                    r.location,
                    timing,
                )
            } else {
                let (e, k, p) = (&rec.exchange, &rec.routing_key, &rec.properties);
                Message::new_timed(e, k, p, rec.body, Some(r.location), timing)
            };
            // A transient message in the store is a quorum queue's (see `quorum`): it
            // is handled as persistent again.
            let msg = if !msg.is_persistent()
                && r.queues.iter().any(|(qid, _)| {
                    by_id
                        .get(qid)
                        .and_then(|id| b.queue(*id))
                        .is_some_and(|q| q.quorum)
                }) {
                msg.into_persistent()
            } else {
                msg
            };
            for (qid, delivered) in r.queues {
                let Some(&id) = by_id.get(&qid) else { continue };
                let count = r
                    .returns
                    .iter()
                    .find(|(q, _)| *q == qid)
                    .map_or(0, |(_, n)| u64::from(*n));
                if let Some(&(_, code)) = r.dead.iter().find(|(q, _)| *q == qid) {
                    // Waiting to be dead-lettered at-least-once: still waiting.
                    b.recover_pending(id, msg.clone(), code);
                    continue;
                }
                if let Some(q) = b.queue_mut(id) {
                    q.push_counted(msg.clone(), delivered || count > 0, count);
                    if timing.is_some() && timed_queues.last() != Some(&id) {
                        timed_queues.push(id);
                    }
                }
            }
        }
        timed_queues.sort_by_key(|q| (q.idx, q.gen));
        timed_queues.dedup();
        for id in timed_queues {
            b.enqueued_featured(id, true);
        }
        b.meta_dirty = false;
        b
    }

    /// Records that an ack freed credit of consumer `consumer` on queue `id`.
    pub fn credit(&mut self, id: QueueId, consumer: u64, n: u32) {
        if let Some(q) = self.queue_mut(id) {
            if let Some(c) = q.consumer_mut(consumer) {
                c.unacked = c.unacked.saturating_sub(n);
            }
            self.mark_dirty(id);
        }
    }

    /// Schedules a queue for the dispatch phase (idempotent).
    pub fn mark_dirty(&mut self, id: QueueId) {
        if let Some(q) = self.queue_mut(id) {
            if !q.dirty {
                q.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Takes the dirty list; the caller clears each queue's flag via `queue_mut`
    /// as it dispatches (see `Broker::undirty`).
    pub fn take_dirty(&mut self, into: &mut Vec<QueueId>) {
        std::mem::swap(&mut self.dirty, into);
    }

    /// Whether no queue waits for dispatch.
    pub fn dirty_is_empty(&self) -> bool {
        self.dirty.is_empty()
    }

    /// A fresh server-generated consumer tag.
    pub fn consumer_tag(&mut self) -> Bytes {
        self.name_counter += 1;
        Bytes::from(format!(
            "amq.ctag-{}-{}",
            std::process::id(),
            self.name_counter
        ))
    }

    /// Takes a statistics sample of every queue and exchange, and returns the message
    /// and consumer totals over all queues (the overview's `queue_totals`, as RabbitMQ's
    /// are: as of the last sample, so an overview never walks 100,000 queues).
    pub fn sample_stats(&mut self) -> QueueTotals {
        let mut t = QueueTotals::default();
        for (_, q) in self.queues.iter_mut() {
            if let Some(s) = q.stats.as_mut() {
                s.sample();
            }
            t.ready += q.message_count() as u64;
            t.unacked += q.unacked_count();
            t.consumers += q.consumer_count() as u64;
        }
        for (_, x) in self.exchanges.iter_mut() {
            if let Some(s) = x.stats.as_mut() {
                s.sample();
            }
        }
        t
    }

    /// The same totals, counted now (one pass over every queue).
    pub fn queue_totals(&self) -> QueueTotals {
        let mut t = QueueTotals::default();
        for (_, q) in self.queues.iter() {
            t.ready += q.message_count() as u64;
            t.unacked += q.unacked_count();
            t.consumers += q.consumer_count() as u64;
        }
        t
    }

    pub fn undirty(&mut self, id: QueueId) {
        if let Some(q) = self.queue_mut(id) {
            q.dirty = false;
        }
    }
}

/// The one warning a new (or recovered) queue logs when it carries known arguments that
/// Warren accepts but does not act on yet; nothing for a queue without arguments.
fn warn_not_implemented(vhost: &str, name: &[u8], arguments: &FieldTable) {
    if arguments.0.is_empty() {
        return;
    }
    let ignored = args::not_implemented(arguments);
    if !ignored.is_empty() {
        warn!(
            "queue '{}' in vhost '{vhost}': argument(s) {} have no effect yet (not implemented)",
            show(name),
            ignored.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vhost "/" of `Broker::new()`.
    const ROOT: VhostId = VhostId::DEFAULT;

    fn msg(rk: &'static str) -> Message {
        Message::new(b"", rk.as_bytes(), &[0, 0], Bytes::new(), None)
    }

    fn decl(name: &'static str) -> QueueDecl {
        QueueDecl::named(name)
    }

    fn xdecl(name: &'static str, kind: &'static str) -> ExchangeDecl {
        ExchangeDecl {
            name: Bytes::from_static(name.as_bytes()),
            kind: Bytes::from_static(kind.as_bytes()),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        }
    }

    fn route(b: &mut Broker, x: &str, rk: &'static str) -> Vec<QueueId> {
        route_in(b, ROOT, x, rk)
    }

    fn route_in(b: &mut Broker, v: VhostId, x: &str, rk: &'static str) -> Vec<QueueId> {
        let id = b.publish_target(v, x.as_bytes()).unwrap();
        let mut out = Vec::new();
        let m = msg(rk);
        let props = Bytes::copy_from_slice(m.properties());
        b.route(id, m.routing_key(), &props, &mut out);
        out
    }

    #[test]
    fn default_exchange_routes_by_queue_name() {
        let mut b = Broker::new();
        let q = b
            .declare_queue(ROOT, &decl("hello"), 1, |_| Ok(()))
            .unwrap()
            .id;
        assert_eq!(route(&mut b, "", "hello"), vec![q]);
        assert!(route(&mut b, "", "nobody").is_empty());
    }

    #[test]
    fn exchange_cycles_deliver_once_per_queue() {
        let mut b = Broker::new();
        b.declare_exchange(ROOT, &xdecl("a", "fanout")).unwrap();
        b.declare_exchange(ROOT, &xdecl("b", "fanout")).unwrap();
        let q = b.declare_queue(ROOT, &decl("q"), 1, |_| Ok(())).unwrap().id;
        let da = b.exchange_dest(ROOT, b"a").unwrap();
        let db = b.exchange_dest(ROOT, b"b").unwrap();
        b.bind(ROOT, b"a", db, Bytes::new(), FieldTable::new())
            .unwrap();
        b.bind(ROOT, b"b", da, Bytes::new(), FieldTable::new())
            .unwrap();
        b.bind(ROOT, b"a", Dest::Queue(q), Bytes::new(), FieldTable::new())
            .unwrap();
        b.bind(ROOT, b"b", Dest::Queue(q), Bytes::new(), FieldTable::new())
            .unwrap();
        assert_eq!(route(&mut b, "a", "x"), vec![q]);
        assert_eq!(route(&mut b, "b", "x"), vec![q]);
    }

    #[test]
    fn deleting_a_queue_removes_its_bindings_and_auto_delete_exchanges() {
        let mut b = Broker::new();
        let mut x = xdecl("ad", "direct");
        x.auto_delete = true;
        b.declare_exchange(ROOT, &x).unwrap();
        let q = b.declare_queue(ROOT, &decl("q"), 1, |_| Ok(())).unwrap().id;
        b.bind(
            ROOT,
            b"ad",
            Dest::Queue(q),
            Bytes::from_static(b"k"),
            FieldTable::new(),
        )
        .unwrap();
        assert_eq!(route(&mut b, "ad", "k"), vec![q]);
        b.delete_queue(q, false, false).unwrap();
        assert!(b.exchange_id(ROOT, b"ad").is_none());
        assert!(b.queue(q).is_none());
    }

    #[test]
    fn stale_ids_do_not_reach_new_queues() {
        let mut b = Broker::new();
        let q1 = b.declare_queue(ROOT, &decl("a"), 1, |_| Ok(())).unwrap().id;
        b.remove_queue(q1);
        let q2 = b.declare_queue(ROOT, &decl("b"), 1, |_| Ok(())).unwrap().id;
        assert!(b.queue(q1).is_none());
        assert!(b.queue(q2).is_some());
    }

    #[test]
    fn redeclare_checks_equivalence_and_exclusivity() {
        let mut b = Broker::new();
        b.declare_queue(ROOT, &decl("q"), 1, |_| Ok(())).unwrap();
        let mut d = decl("q");
        d.durable = true;
        assert_eq!(
            b.declare_queue(ROOT, &d, 1, |_| Ok(())).unwrap_err().code,
            ReplyCode::PreconditionFailed
        );
        let mut e = decl("ex");
        e.exclusive = true;
        b.declare_queue(ROOT, &e, 1, |_| Ok(())).unwrap();
        assert_eq!(
            b.declare_queue(ROOT, &e, 2, |_| Ok(())).unwrap_err().code,
            ReplyCode::ResourceLocked
        );
        let mut p = decl("ex");
        p.passive = true;
        assert_eq!(
            b.declare_queue(ROOT, &p, 2, |_| Ok(())).unwrap_err().code,
            ReplyCode::ResourceLocked
        );
        assert!(b.declare_queue(ROOT, &p, 1, |_| Ok(())).is_ok());
        let mut missing = decl("nope");
        missing.passive = true;
        assert_eq!(
            b.declare_queue(ROOT, &missing, 1, |_| Ok(()))
                .unwrap_err()
                .code,
            ReplyCode::NotFound
        );
    }

    fn publish(b: &mut Broker, v: VhostId, x: &str, rk: &'static str, persistent: bool) {
        let id = b.publish_target(v, x.as_bytes()).unwrap();
        // Property flags with delivery-mode (bit 12), then delivery-mode 2 when persistent.
        let props = if persistent {
            Bytes::from_static(&[0x10, 0, 2])
        } else {
            Bytes::from_static(&[0, 0])
        };
        let body = Bytes::from_static(b"m");
        let r = b.publish(id, x.as_bytes(), rk.as_bytes(), props, body, u64::MAX);
        assert!(matches!(
            r,
            Published::Routed | Published::Unroutable { .. }
        ));
    }

    fn ready(b: &Broker, v: VhostId, q: &str) -> u32 {
        let id = b.queue_id(v, q.as_bytes()).unwrap();
        b.queue(id).unwrap().message_count()
    }

    #[test]
    fn two_vhosts_with_the_same_names_are_independent() {
        let mut b = Broker::new();
        let other = b.add_vhost("other");
        assert_ne!(other, ROOT);
        assert_eq!(b.add_vhost("other"), other);
        assert_eq!(b.lookup_vhost(b"other").map(|(id, _)| id), Some(other));
        assert!(b.lookup_vhost(b"nope").is_none());
        // Each vhost has its own predeclared exchanges.
        for v in [ROOT, other] {
            for x in [
                "",
                "amq.direct",
                "amq.fanout",
                "amq.topic",
                "amq.headers",
                "amq.match",
            ] {
                assert!(b.exchange_id(v, x.as_bytes()).is_some(), "{x}");
            }
        }
        assert_ne!(b.exchange_id(ROOT, b""), b.exchange_id(other, b""));

        let mut ids = Vec::new();
        for v in [ROOT, other] {
            b.declare_exchange(v, &xdecl("x", "direct")).unwrap();
            let q = b.declare_queue(v, &decl("q"), 1, |_| Ok(())).unwrap().id;
            b.bind(
                v,
                b"x",
                Dest::Queue(q),
                Bytes::from_static(b"k"),
                FieldTable::new(),
            )
            .unwrap();
            ids.push(q);
        }
        assert_ne!(ids[0], ids[1]);
        assert_eq!(b.queue(ids[1]).unwrap().vhost, other);
        // Routing stays inside the publisher's vhost, by an exchange and by the default one.
        assert_eq!(route_in(&mut b, other, "x", "k"), vec![ids[1]]);
        assert_eq!(route_in(&mut b, ROOT, "", "q"), vec![ids[0]]);
        publish(&mut b, other, "x", "k", false);
        publish(&mut b, other, "", "q", false);
        assert_eq!((ready(&b, ROOT, "q"), ready(&b, other, "q")), (0, 2));

        // A name missing in one vhost is missing there only, and errors name the vhost.
        b.declare_exchange(other, &xdecl("only-other", "fanout"))
            .unwrap();
        let e = b.publish_target(ROOT, b"only-other").unwrap_err();
        assert_eq!(e.text, "no exchange 'only-other' in vhost '/'");
        let e = b.find_queue(other, b"missing", 1).unwrap_err();
        assert_eq!(e.text, "no queue 'missing' in vhost 'other'");
        // Server-named queues live in their vhost.
        let gen = b
            .declare_queue(other, &decl(""), 1, |_| Ok(()))
            .unwrap()
            .name;
        assert!(b.queue_id(other, &gen).is_some() && b.queue_id(ROOT, &gen).is_none());

        // Deleting in one vhost leaves the other alone.
        b.delete_queue(ids[1], false, false).unwrap();
        b.delete_exchange(other, b"x", false).unwrap();
        assert!(b.queue_id(other, b"q").is_none() && b.exchange_id(other, b"x").is_none());
        assert_eq!(b.queue_id(ROOT, b"q"), Some(ids[0]));
        assert_eq!(route_in(&mut b, ROOT, "x", "k"), vec![ids[0]]);
    }

    #[test]
    fn recovery_puts_durable_entities_back_in_their_vhost() {
        let dir = std::env::temp_dir().join(format!("warren-vhosts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            let (store, meta, msgs) = Store::open(&dir).unwrap();
            let mut b = Broker::recover(store, meta, msgs, u64::MAX);
            let other = b.add_vhost("other");
            for v in [ROOT, other] {
                let mut x = xdecl("x", "direct");
                x.durable = true;
                b.declare_exchange(v, &x).unwrap();
                let mut d = decl("q");
                d.durable = true;
                let q = b.declare_queue(v, &d, 1, |_| Ok(())).unwrap().id;
                b.bind(
                    v,
                    b"x",
                    Dest::Queue(q),
                    Bytes::from_static(b"k"),
                    FieldTable::new(),
                )
                .unwrap();
            }
            publish(&mut b, other, "x", "k", true);
            b.sync().unwrap();
        }
        let (store, meta, msgs) = Store::open(&dir).unwrap();
        let mut b = Broker::recover(store, meta, msgs, u64::MAX);
        let (other, name) = b.lookup_vhost(b"other").unwrap();
        assert_eq!(&*name, "other");
        assert_eq!((ready(&b, ROOT, "q"), ready(&b, other, "q")), (0, 1));
        let q = b.queue_id(other, b"q").unwrap();
        assert_eq!(route_in(&mut b, other, "x", "k"), vec![q]);
        let q = b.queue_id(ROOT, b"q").unwrap();
        assert_eq!(route_in(&mut b, ROOT, "x", "k"), vec![q]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deleting_a_vhost_removes_everything_in_it_and_never_reuses_its_id() {
        let mut b = Broker::new();
        let doomed = b.add_vhost("doomed");
        let other = b.add_vhost("other");
        for v in [doomed, other] {
            b.declare_exchange(v, &xdecl("x", "direct")).unwrap();
            let q = b.declare_queue(v, &decl("q"), 1, |_| Ok(())).unwrap().id;
            b.bind(
                v,
                b"x",
                Dest::Queue(q),
                Bytes::from_static(b"k"),
                FieldTable::new(),
            )
            .unwrap();
            b.add_consumer(q, 7, 1, Bytes::from_static(b"c"), true, false, 0, 0)
                .unwrap();
            publish(&mut b, v, "x", "k", false);
        }
        let q = b.queue_id(doomed, b"q").unwrap();
        let x = b.exchange_id(doomed, b"x").unwrap();
        let (queues, exchanges) = (b.queue_count(), b.exchanges().count());
        let orphans = b.delete_vhost(doomed).unwrap();
        assert_eq!(orphans.len(), 1);
        assert!(b.queue(q).is_none() && b.exchange(x).is_none());
        assert_eq!(b.queue_count(), queues - 1);
        // Its own x, "" and the five amq.* exchanges.
        assert_eq!(b.exchanges().count(), exchanges - 7);
        assert!(b.vhost(doomed).is_none() && b.lookup_vhost(b"doomed").is_none());
        assert_eq!(b.vhost_label(doomed), "");
        assert!(b.delete_vhost(doomed).is_none());
        assert!(b.queue_id(doomed, b"q").is_none());
        // The other vhost is untouched.
        assert_eq!(ready(&b, other, "q"), 1);
        assert_eq!(
            route_in(&mut b, other, "x", "k"),
            vec![b.queue_id(other, b"q").unwrap()]
        );
        // A vhost re-created with the same name is new and empty.
        let again = b.add_vhost("doomed");
        assert_ne!(again, doomed);
        assert!(b.queue_id(again, b"q").is_none() && b.exchange_id(again, b"x").is_none());
        assert!(b.exchange_id(again, b"amq.topic").is_some());
        let names: Vec<&str> = b.vhosts().map(|(_, v)| &*v.name).collect();
        assert_eq!(names, ["/", "other", "doomed"]);
    }

    #[test]
    fn max_queues_counts_every_queue_of_the_vhost() {
        let mut b = Broker::new();
        let v = b.add_vhost("limited");
        let limits = VhostLimits {
            max_queues: Some(1),
            ..Default::default()
        };
        assert!(b.set_vhost_limits(v, limits));
        b.declare_queue(v, &decl("a"), 1, |_| Ok(())).unwrap();
        let e = b.declare_queue(v, &decl("b"), 1, |_| Ok(())).unwrap_err();
        assert_eq!(e.code, ReplyCode::PreconditionFailed);
        assert_eq!(
            e.text,
            "cannot declare queue 'b': queue limit in vhost 'limited' (1) is reached"
        );
        // Redeclaring is no new queue; other vhosts have their own count.
        b.declare_queue(v, &decl("a"), 1, |_| Ok(())).unwrap();
        b.declare_queue(ROOT, &decl("b"), 1, |_| Ok(())).unwrap();
        // Negative: no limit.
        let limits = VhostLimits {
            max_queues: Some(-1),
            ..Default::default()
        };
        b.set_vhost_limits(v, limits);
        b.declare_queue(v, &decl("b"), 1, |_| Ok(())).unwrap();
    }

    #[test]
    fn vhost_records_and_limits_persist_and_a_deleted_root_stays_deleted() {
        let dir = std::env::temp_dir().join(format!("warren-vhrec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            let (store, meta, msgs) = Store::open(&dir).unwrap();
            let mut b = Broker::recover(store, meta, msgs, u64::MAX);
            let meta = VhostMeta {
                description: "empty".into(),
                tags: vec!["t".into()],
                default_queue_type: Some("quorum".into()),
            };
            let (id, created) = b.put_vhost("empty", Some(meta));
            assert!(created);
            let limits = VhostLimits {
                max_connections: Some(3),
                max_queues: Some(-1),
            };
            b.set_vhost_limits(id, limits);
            b.delete_vhost(ROOT).unwrap();
            b.sync().unwrap();
        }
        let (store, meta, msgs) = Store::open(&dir).unwrap();
        let b = Broker::recover(store, meta, msgs, u64::MAX);
        let names: Vec<&str> = b.vhosts().map(|(_, v)| &*v.name).collect();
        assert_eq!(names, ["empty"]);
        let (id, _) = b.lookup_vhost(b"empty").unwrap();
        let v = b.vhost(id).unwrap();
        assert_eq!(v.meta.description, "empty");
        assert_eq!(v.meta.tags, ["t"]);
        assert_eq!(v.meta.default_queue_type.as_deref(), Some("quorum"));
        assert_eq!(v.limits.max_connections, Some(3));
        assert_eq!(v.limits.max_queues, Some(-1));
        assert!(b.exchange_id(id, b"amq.direct").is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn server_named_queues_are_unique_amq_gen() {
        let mut b = Broker::new();
        let a = b
            .declare_queue(ROOT, &decl(""), 1, |_| Ok(()))
            .unwrap()
            .name;
        let c = b
            .declare_queue(ROOT, &decl(""), 1, |_| Ok(()))
            .unwrap()
            .name;
        assert!(a.starts_with(b"amq.gen-"));
        assert_ne!(a, c);
    }
}
