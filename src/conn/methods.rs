//! Channel methods: exchange, queue, basic, confirm and tx handlers on an open channel,
//! publishing a completed message, basic.get, settling (ack/nack/reject/recover), and
//! releasing a channel's consumers and unacked messages.
//!
//! Owns no state of its own: these are `Session` methods, called by the framing
//! dispatch in [`super::state`] (`running_frame`) once a channel exists and is not
//! closing. It uses the broker (declare, bind, `Broker::publish`, credit, requeue,
//! settle; basic.get through `broker::dispatch::get`, which delivers as the dispatch
//! phase does), the protocol-neutral operations of [`crate::ops`] (queue.delete, whose
//! consumer cancels come back as effects, handed to the server as `Event::Op`) and the
//! channel's state (`super::channel`), and appends replies to the connection's
//! out-queue. It never touches a socket, never scopes its own errors (the caller's
//! `raise` does) and never handles channel 0.
//!
//! Permissions follow RabbitMQ 3.10's `rabbit_channel`, check by check and in its
//! order (the name checks that come first there come first here): declare and delete
//! need configure (plus, for a new object, read on it and write on its
//! alternate/dead-letter exchange); bind and unbind write on the destination, read on
//! the source and, on a topic source, the topic permission on the binding key;
//! consume, get and purge read; publish write on the exchange ("" matched as
//! `amq.default`) and, on a topic exchange, the topic permission on the routing key.
//! A passive declaration is checked for nothing. Publishing checks once per channel
//! and exchange: the channel caches the answer with `Auth::generation`, so a narrowed
//! permission reaches it at its next publish, and a plain publish pays two compares.
//!
//! Direct reply-to lives here too, as RabbitMQ keeps it in `rabbit_channel`: the reply
//! consumer is channel state (`Channel::reply`, with its address in the broker's
//! `reply_to` registry), a publish rewrites `reply_to: amq.rabbitmq.reply-to` to the
//! channel's address, and a publish to an address becomes an `Event::Reply` that the
//! server hands to [`deliver_reply`] for the connection it names.

use bytes::Bytes;

use crate::auth::{Permission, Resource};
use crate::broker::exchange::ExchangeKind;
use crate::broker::reply_to;
use crate::broker::{Broker, Dest, ExchangeDecl, Published, QueueDecl, QueueId};
use crate::error::{access_refused, not_found, precondition, AmqpError, ReplyCode};
use crate::message::Body;
use crate::ops;
use crate::proto::frame;
use crate::proto::{
    basic, channel, confirm, connection, exchange, queue, tx, BasicProperties, FieldTable,
    FieldValue, Method,
};

use super::channel::{Channel, ChannelConsumer, ExchangeCache, ShortKey, TxOp};
use super::state::{show, Event, Session, RETURN_NOW};
use super::Connection;

impl Session<'_> {
    /// A method on an open channel. Errors are scoped by the caller.
    pub(super) fn channel_method(
        &mut self,
        idx: usize,
        ch: u16,
        m: Method,
    ) -> Result<(), AmqpError> {
        let conn_key = self.conn.key;
        match m {
            Method::ChannelOpen(_) => Err(AmqpError::new(
                ReplyCode::ChannelError,
                "second 'channel.open' seen",
            )),
            Method::ChannelClose(_) => {
                let mut c = self.conn.channels.swap_remove(idx);
                self.broker.churn.now.channel_closed += 1;
                release_channel(&mut c, self.broker, self.events);
                self.send(ch, &Method::ChannelCloseOk(channel::CloseOk {}));
                Ok(())
            }
            Method::ChannelCloseOk(_) => Ok(()),
            Method::ChannelFlow(f) => {
                // RabbitMQ 3.x refuses to stop deliveries this way (basic.qos does it).
                if !f.active {
                    return Err(AmqpError::new(ReplyCode::NotImplemented, "active=false"));
                }
                self.send(ch, &Method::ChannelFlowOk(channel::FlowOk { active: true }));
                Ok(())
            }
            Method::ChannelFlowOk(_) => Ok(()),
            Method::AccessRequest(_) => {
                self.send(
                    ch,
                    &Method::AccessRequestOk(crate::proto::access::RequestOk { ticket: 1 }),
                );
                Ok(())
            }

            // ----- exchange -----
            Method::ExchangeDeclare(d) => {
                // RabbitMQ's order (rabbit_channel's exchange.declare): the type, the
                // default exchange, configure on the exchange; then, for a new exchange
                // with an alternate-exchange, read on it and write on the alternate. A
                // passive declaration is checked for nothing but the default exchange.
                if !d.passive {
                    if ExchangeKind::parse(&d.kind).is_none() {
                        return Err(AmqpError::new(
                            ReplyCode::CommandInvalid,
                            format!("unknown exchange type '{}'", show(&d.kind)),
                        ));
                    }
                    if d.exchange.is_empty() {
                        return Err(default_exchange());
                    }
                    self.authorize(Permission::Configure, Resource::Exchange(&d.exchange))?;
                    let is_new = self
                        .broker
                        .exchange_id(self.conn.vhost_id, &d.exchange)
                        .is_none();
                    // A reserved name is refused by the broker before the alternate matters.
                    if is_new && !d.exchange.starts_with(b"amq.") {
                        if let Some(ae) = string_arg(&d.arguments, b"alternate-exchange") {
                            self.authorize(Permission::Read, Resource::Exchange(&d.exchange))?;
                            self.authorize(Permission::Write, Resource::Exchange(ae))?;
                        }
                    }
                }
                self.broker.declare_exchange(
                    self.conn.vhost_id,
                    &ExchangeDecl {
                        name: d.exchange,
                        kind: d.kind,
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: d.arguments,
                    },
                )?;
                if !d.nowait {
                    self.send(ch, &Method::ExchangeDeclareOk(exchange::DeclareOk {}));
                }
                Ok(())
            }
            Method::ExchangeDelete(d) => {
                // RabbitMQ: the default exchange, then a system exchange (whether it
                // exists or not), then configure.
                if d.exchange.is_empty() {
                    return Err(default_exchange());
                }
                if d.exchange.starts_with(b"amq.") {
                    return Err(access_refused(format!(
                        "deletion of system exchange '{}' in vhost '{}' not allowed",
                        show(&d.exchange),
                        self.conn.vhost
                    )));
                }
                self.authorize(Permission::Configure, Resource::Exchange(&d.exchange))?;
                self.broker
                    .delete_exchange(self.conn.vhost_id, &d.exchange, d.if_unused)?;
                if !d.nowait {
                    self.send(ch, &Method::ExchangeDeleteOk(exchange::DeleteOk {}));
                }
                Ok(())
            }
            Method::ExchangeBind(b) => {
                self.may_bind(&b.destination, &b.source, &b.routing_key)?;
                let vhost = self.conn.vhost_id;
                let dest = self.broker.exchange_dest(vhost, &b.destination)?;
                self.broker
                    .bind(vhost, &b.source, dest, b.routing_key, b.arguments)?;
                if !b.nowait {
                    self.send(ch, &Method::ExchangeBindOk(exchange::BindOk {}));
                }
                Ok(())
            }
            Method::ExchangeUnbind(b) => {
                self.may_bind(&b.destination, &b.source, &b.routing_key)?;
                // A destination that no longer exists is not an error (see Broker::unbind).
                let vhost = self.conn.vhost_id;
                let dest = match self.broker.exchange_dest(vhost, &b.destination) {
                    Ok(d) => Some(d),
                    Err(e) if e.code == ReplyCode::NotFound => None,
                    Err(e) => return Err(e),
                };
                self.broker
                    .unbind(vhost, &b.source, dest, &b.routing_key, &b.arguments)?;
                if !b.nowait {
                    self.send(ch, &Method::ExchangeUnbindOk(exchange::UnbindOk {}));
                }
                Ok(())
            }

            // ----- queue -----
            Method::QueueDeclare(d) if d.queue.starts_with(reply_to::PSEUDO_QUEUE) => {
                // RabbitMQ: every declare of these names is passive, whatever its flags
                // and arguments, and needs no permission; the pseudo-queue always
                // exists, an address exists while its reply consumer does.
                let exists = d.queue[..] == *reply_to::PSEUDO_QUEUE
                    || reply_to::suffix(&d.queue)
                        .is_some_and(|s| self.broker.reply_to.lookup(s).is_some());
                if !exists {
                    return Err(not_found(format!(
                        "no queue '{}' in vhost '{}'",
                        show(&d.queue),
                        self.conn.vhost
                    )));
                }
                if !d.nowait {
                    let ok = queue::DeclareOk {
                        queue: d.queue,
                        message_count: 0,
                        consumer_count: 1,
                    };
                    self.send(ch, &Method::QueueDeclareOk(ok));
                }
                Ok(())
            }
            Method::QueueDeclare(d) => {
                let name = if d.passive && d.queue.is_empty() {
                    self.conn.channels[idx].last_queue.clone()
                } else {
                    d.queue
                };
                // RabbitMQ checks configure on the (possibly server-made) name; for a
                // new queue with a dead-letter exchange also read on the queue and
                // write on that exchange. The broker calls the check once, where
                // RabbitMQ makes it (never for a passive declaration).
                let is_new =
                    name.is_empty() || self.broker.queue_id(self.conn.vhost_id, &name).is_none();
                let dlx = string_arg(&d.arguments, b"x-dead-letter-exchange").cloned();
                let (auth, user, vhost) = (self.auth, &self.conn.user, &self.conn.vhost);
                let may_configure = |q: &[u8]| {
                    auth.authorize(user, vhost, Permission::Configure, Resource::Queue(q))?;
                    if let (true, Some(x)) = (is_new, &dlx) {
                        auth.authorize(user, vhost, Permission::Read, Resource::Queue(q))?;
                        auth.authorize(user, vhost, Permission::Write, Resource::Exchange(x))?;
                    }
                    Ok(())
                };
                let got = self.broker.declare_queue(
                    self.conn.vhost_id,
                    &QueueDecl {
                        name,
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        arguments: d.arguments,
                    },
                    conn_key,
                    may_configure,
                )?;
                self.conn.channels[idx].last_queue = got.name.clone();
                if !d.nowait {
                    let ok = queue::DeclareOk {
                        queue: got.name,
                        message_count: got.messages,
                        consumer_count: got.consumers,
                    };
                    self.send(ch, &Method::QueueDeclareOk(ok));
                }
                Ok(())
            }
            Method::QueueBind(b) => {
                // RabbitMQ's binding_action: write on the queue, the default exchange
                // refused, read on the exchange (and its topic permission on the key),
                // all before either end is looked up.
                let name = self.queue_name(idx, &b.queue)?;
                self.authorize(Permission::Write, Resource::Queue(&name))?;
                self.may_bind_from(&b.exchange, &b.routing_key)?;
                let q = self
                    .broker
                    .find_queue(self.conn.vhost_id, &name, self.conn.key)?;
                let vhost = self.conn.vhost_id;
                self.broker.bind(
                    vhost,
                    &b.exchange,
                    Dest::Queue(q),
                    b.routing_key,
                    b.arguments,
                )?;
                if !b.nowait {
                    self.send(ch, &Method::QueueBindOk(queue::BindOk {}));
                }
                Ok(())
            }
            Method::QueueUnbind(b) => {
                // A queue that no longer exists is not an error (see Broker::unbind); an
                // exclusive queue of another connection still is (405), and so is an
                // empty name with no queue declared before on the channel.
                let name = self.queue_name(idx, &b.queue)?;
                self.authorize(Permission::Write, Resource::Queue(&name))?;
                self.may_bind_from(&b.exchange, &b.routing_key)?;
                let q = match self
                    .broker
                    .find_queue(self.conn.vhost_id, &name, self.conn.key)
                {
                    Ok(q) => Some(Dest::Queue(q)),
                    Err(e) if e.code == ReplyCode::NotFound => None,
                    Err(e) => return Err(e),
                };
                let vhost = self.conn.vhost_id;
                self.broker
                    .unbind(vhost, &b.exchange, q, &b.routing_key, &b.arguments)?;
                self.send(ch, &Method::QueueUnbindOk(queue::UnbindOk {}));
                Ok(())
            }
            Method::QueuePurge(p) => {
                let q = self.queue_for(idx, &p.queue, Permission::Read)?;
                let n = self.broker.purge(q);
                if !p.nowait {
                    self.send(
                        ch,
                        &Method::QueuePurgeOk(queue::PurgeOk { message_count: n }),
                    );
                }
                Ok(())
            }
            Method::QueueDelete(d) => {
                let name = if d.queue.is_empty() {
                    self.conn.channels[idx].last_queue.clone()
                } else {
                    d.queue
                };
                self.authorize(Permission::Configure, Resource::Queue(&name))?;
                let n = match self.broker.find_queue(self.conn.vhost_id, &name, conn_key) {
                    Ok(q) => {
                        let mut effects = Vec::new();
                        let n = ops::delete_queue(
                            self.broker,
                            q,
                            d.if_unused,
                            d.if_empty,
                            &mut effects,
                        )?;
                        self.events.extend(effects.into_iter().map(Event::Op));
                        n
                    }
                    // Deleting a queue that does not exist succeeds (RabbitMQ 3.x).
                    Err(e) if e.code == ReplyCode::NotFound => 0,
                    Err(e) => return Err(e),
                };
                if !d.nowait {
                    self.send(
                        ch,
                        &Method::QueueDeleteOk(queue::DeleteOk { message_count: n }),
                    );
                }
                Ok(())
            }

            // ----- basic -----
            Method::BasicQos(q) => {
                // prefetch_size is not supported by RabbitMQ either; it is ignored there too.
                let c = &mut self.conn.channels[idx];
                if q.global {
                    c.global_prefetch = q.prefetch_count;
                } else {
                    c.prefetch_count = q.prefetch_count;
                }
                self.mark_channel_queues_dirty(idx);
                self.send(ch, &Method::BasicQosOk(basic::QosOk {}));
                Ok(())
            }
            Method::BasicConsume(c) if c.queue[..] == *reply_to::PSEUDO_QUEUE => {
                self.consume_replies(idx, ch, c)
            }
            Method::BasicConsume(c) => {
                // RabbitMQ refuses a tag in use before it checks the queue's permission.
                if !c.consumer_tag.is_empty()
                    && self.conn.channels[idx].consumer(&c.consumer_tag).is_some()
                {
                    return Err(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!("attempt to reuse consumer tag '{}'", show(&c.consumer_tag)),
                    ));
                }
                let q = self.queue_for(idx, &c.queue, Permission::Read)?;
                let tag = if c.consumer_tag.is_empty() {
                    self.broker.consumer_tag()
                } else {
                    c.consumer_tag
                };
                if self.conn.channels[idx].consumer(&tag).is_some() {
                    return Err(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!("attempt to reuse consumer tag '{}'", show(&tag)),
                    ));
                }
                if !c.arguments.is_empty() {
                    if let Some(queue) = self.broker.queue(q) {
                        let qtype = crate::broker::args::QueueType::of(&queue.props.arguments);
                        crate::broker::args::validate_consume(
                            &self.conn.vhost,
                            &queue.name,
                            qtype,
                            &c.arguments,
                        )?;
                    }
                }
                let prefetch = self.conn.channels[idx].prefetch_count;
                let id = self.broker.add_consumer(
                    q,
                    conn_key,
                    ch,
                    tag.clone(),
                    c.no_ack,
                    c.exclusive,
                    prefetch,
                    crate::broker::args::consumer_priority(&c.arguments),
                )?;
                self.conn.channels[idx].consumers.push(ChannelConsumer {
                    tag: tag.clone(),
                    queue: q,
                    id,
                    args: (!c.arguments.is_empty()).then(|| Box::new(c.arguments)),
                });
                if !c.nowait {
                    self.send(
                        ch,
                        &Method::BasicConsumeOk(basic::ConsumeOk { consumer_tag: tag }),
                    );
                }
                Ok(())
            }
            Method::BasicCancel(c) => {
                let chan = &mut self.conn.channels[idx];
                if chan
                    .reply
                    .as_ref()
                    .is_some_and(|(t, _)| *t == c.consumer_tag)
                {
                    if let Some((_, suffix)) = chan.reply.take() {
                        self.broker.reply_to.unregister(&suffix);
                    }
                } else if let Some(cc) = chan.remove_consumer(&c.consumer_tag) {
                    self.broker.remove_consumer(cc.queue, cc.id);
                }
                if !c.nowait {
                    self.send(
                        ch,
                        &Method::BasicCancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        }),
                    );
                }
                Ok(())
            }
            Method::BasicPublish(p) => {
                if p.immediate {
                    return Err(AmqpError::new(ReplyCode::NotImplemented, "immediate=true"));
                }
                self.conn.channels[idx].assembler.start(p);
                Ok(())
            }
            Method::BasicGet(g) => self.basic_get(idx, g),
            Method::BasicAck(a) => self.settle(idx, a.delivery_tag, a.multiple, None),
            Method::BasicNack(n) => self.settle(idx, n.delivery_tag, n.multiple, Some(n.requeue)),
            Method::BasicReject(r) => self.settle(idx, r.delivery_tag, false, Some(r.requeue)),
            Method::BasicRecover(r) => {
                self.recover(idx, r.requeue)?;
                self.send(ch, &Method::BasicRecoverOk(basic::RecoverOk {}));
                Ok(())
            }
            Method::BasicRecoverAsync(r) => self.recover(idx, r.requeue),

            // ----- confirm / tx -----
            Method::ConfirmSelect(s) => {
                let c = &mut self.conn.channels[idx];
                if c.tx.is_some() {
                    return Err(precondition("cannot switch from tx to confirm mode"));
                }
                c.confirm = true;
                if !s.nowait {
                    self.send(ch, &Method::ConfirmSelectOk(confirm::SelectOk {}));
                }
                Ok(())
            }
            Method::TxSelect(_) => {
                let c = &mut self.conn.channels[idx];
                if c.confirm {
                    return Err(precondition("cannot switch from confirm to tx mode"));
                }
                if c.tx.is_none() {
                    c.tx = Some(Vec::new());
                }
                self.send(ch, &Method::TxSelectOk(tx::SelectOk {}));
                Ok(())
            }
            Method::TxCommit(_) => {
                let Some(ops) = self.conn.channels[idx].tx.as_mut().map(std::mem::take) else {
                    return Err(precondition("channel is not transactional"));
                };
                for op in ops {
                    match op {
                        TxOp::Publish {
                            publish,
                            properties,
                            body,
                        } => self.route_publish(ch, publish, properties, body)?,
                        TxOp::Ack { tag, multiple } => {
                            self.apply_settle(idx, tag, multiple, None)?
                        }
                        TxOp::Nack {
                            tag,
                            multiple,
                            requeue,
                        } => self.apply_settle(idx, tag, multiple, Some(requeue))?,
                    }
                }
                self.send(ch, &Method::TxCommitOk(tx::CommitOk {}));
                Ok(())
            }
            Method::TxRollback(_) => {
                let Some(ops) = self.conn.channels[idx].tx.as_mut() else {
                    return Err(precondition("channel is not transactional"));
                };
                ops.clear();
                self.send(ch, &Method::TxRollbackOk(tx::RollbackOk {}));
                Ok(())
            }
            m => Err(AmqpError::new(
                ReplyCode::CommandInvalid,
                format!("{} is not a client method on a channel", m.name()),
            )),
        }
    }

    /// A queue name from a method: "" is the channel's last declared queue (404 "no
    /// previously declared queue" when there is none), as RabbitMQ's expand_shortcuts.
    fn queue_name(&self, idx: usize, name: &Bytes) -> Result<Bytes, AmqpError> {
        let name = if name.is_empty() {
            &self.conn.channels[idx].last_queue
        } else {
            name
        };
        if name.is_empty() {
            return Err(not_found("no previously declared queue"));
        }
        Ok(name.clone())
    }

    /// Resolves a queue name from a method ([`Session::queue_name`]), checks that the
    /// user may `perm` it (before looking it up, as RabbitMQ does) and finds it.
    /// Errors: 404 no previously declared queue, 403 refused, 404/405 from
    /// `Broker::find_queue`.
    fn queue_for(&self, idx: usize, name: &Bytes, perm: Permission) -> Result<QueueId, AmqpError> {
        let name = self.queue_name(idx, name)?;
        self.authorize(perm, Resource::Queue(&name))?;
        self.broker
            .find_queue(self.conn.vhost_id, &name, self.conn.key)
    }

    /// Whether this connection's user may `perm` the `resource` in its vhost (403 with
    /// RabbitMQ's text when not; see `Auth::authorize`).
    fn authorize(&self, perm: Permission, resource: Resource<'_>) -> Result<(), AmqpError> {
        self.auth
            .authorize(&self.conn.user, &self.conn.vhost, perm, resource)
    }

    /// exchange.bind/unbind, in RabbitMQ's order (`binding_action`): write on the
    /// destination exchange, then the source's checks ([`Session::may_bind_from`]), the
    /// default exchange refused at either end in between.
    fn may_bind(&self, dest: &[u8], source: &[u8], key: &[u8]) -> Result<(), AmqpError> {
        self.authorize(Permission::Write, Resource::Exchange(dest))?;
        if dest.is_empty() {
            return Err(default_exchange());
        }
        self.may_bind_from(source, key)
    }

    /// The source side of a binding: the default exchange is refused, read on the
    /// source, and when it exists and is a topic exchange, the user's topic permission
    /// to read `key` (RabbitMQ's `check_read_permitted_on_topic`).
    fn may_bind_from(&self, source: &[u8], key: &[u8]) -> Result<(), AmqpError> {
        if source.is_empty() {
            return Err(default_exchange());
        }
        self.authorize(Permission::Read, Resource::Exchange(source))?;
        let topic = self
            .broker
            .exchange_id(self.conn.vhost_id, source)
            .and_then(|id| self.broker.exchange(id))
            .is_some_and(|x| x.kind == ExchangeKind::Topic);
        if topic {
            self.authorize_topic(Permission::Read, source, key)?;
        }
        Ok(())
    }

    /// The user's topic permission `perm` on `routing_key` at `exchange` (a topic
    /// exchange): RabbitMQ's `check_{read,write}_permitted_on_topic`.
    fn authorize_topic(
        &self,
        perm: Permission,
        exchange: &[u8],
        routing_key: &[u8],
    ) -> Result<(), AmqpError> {
        self.auth.authorize_topic(
            &self.conn.user,
            &self.conn.vhost,
            perm,
            exchange,
            routing_key,
        )
    }

    /// A publish's checks when the channel's cache does not answer, in RabbitMQ's
    /// order: write on the exchange, the exchange itself (404, internal 403), the
    /// topic permission on the routing key. Ok is the exchange and whether it is a
    /// topic exchange.
    fn publish_checks(
        &self,
        exchange: &[u8],
        routing_key: &[u8],
    ) -> Result<(crate::broker::ExchangeId, bool), AmqpError> {
        self.authorize(Permission::Write, Resource::Exchange(exchange))?;
        let id = self.broker.publish_target(self.conn.vhost_id, exchange)?;
        let topic = self
            .broker
            .exchange(id)
            .is_some_and(|x| x.kind == ExchangeKind::Topic);
        if topic {
            self.authorize_topic(Permission::Write, exchange, routing_key)?;
        }
        Ok((id, topic))
    }

    fn mark_channel_queues_dirty(&mut self, idx: usize) {
        for c in &self.conn.channels[idx].consumers {
            self.broker.mark_dirty(c.queue);
        }
    }

    /// Marks the connection as a publisher; under an alarm, tells it it is blocked
    /// (the reactor stops reading from it).
    fn note_publisher(&mut self) {
        self.conn.publisher = true;
        if let Some(a) = self.alarm {
            if self.conn.caps.connection_blocked && !self.conn.blocked_sent {
                let b = connection::Blocked {
                    reason: Bytes::from_static(a.reason().as_bytes()),
                };
                self.send(0, &Method::ConnectionBlocked(b));
                self.conn.blocked_sent = true;
            }
        }
    }

    /// A whole message arrived on channel `ch`.
    pub(super) fn publish(
        &mut self,
        ch: u16,
        publish: basic::Publish,
        properties: Bytes,
        body: Bytes,
    ) -> Result<(), AmqpError> {
        self.note_publisher();
        // RabbitMQ checks `expiration` as the publish arrives (in a transaction too).
        if crate::broker::features::has_expiration(&properties) {
            if let Some(e) = crate::proto::properties::expiration(&properties) {
                if let Err(why) = crate::broker::features::parse_expiration(e) {
                    return Err(precondition(format!(
                        "invalid expiration '{}': {why}",
                        show(e)
                    )));
                }
            }
        }
        // Field by field, so that the user and vhost can be read while the channel is
        // borrowed.
        let conn = &mut *self.conn;
        let Some(c) = conn.channels.iter_mut().find(|c| c.id == ch) else {
            return Ok(());
        };
        if let Some(ops) = c.tx.as_mut() {
            // Check the exchange now so that the error comes with the publish, as in
            // RabbitMQ (the write permission, the exchange, the topic permission).
            self.auth.authorize(
                &conn.user,
                &conn.vhost,
                Permission::Write,
                Resource::Exchange(&publish.exchange),
            )?;
            let x = self
                .broker
                .publish_target(conn.vhost_id, &publish.exchange)?;
            if self
                .broker
                .exchange(x)
                .is_some_and(|x| x.kind == ExchangeKind::Topic)
            {
                self.auth.authorize_topic(
                    &conn.user,
                    &conn.vhost,
                    Permission::Write,
                    &publish.exchange,
                    &publish.routing_key,
                )?;
            }
            // As RabbitMQ, the reply address is filled in as the publish arrives.
            let properties = fast_reply_to(c.reply.as_ref(), properties)?;
            ops.push(TxOp::Publish {
                publish,
                properties,
                body,
            });
            return Ok(());
        }
        self.route_publish(ch, publish, properties, body)
    }

    /// basic.consume of `amq.rabbitmq.reply-to` (RabbitMQ's clause, in its order): a
    /// consumer tag in use is 530; acknowledging mode is 406 "reply consumer cannot
    /// acknowledge"; a second reply consumer on the channel is 406 "reply consumer
    /// already set". No permission is checked (there is no queue).
    fn consume_replies(&mut self, idx: usize, ch: u16, c: basic::Consume) -> Result<(), AmqpError> {
        if self.conn.channels[idx].consumer(&c.consumer_tag).is_some() {
            return Err(AmqpError::new(
                ReplyCode::NotAllowed,
                format!("attempt to reuse consumer tag '{}'", show(&c.consumer_tag)),
            ));
        }
        if !c.no_ack {
            return Err(precondition("reply consumer cannot acknowledge"));
        }
        if self.conn.channels[idx].reply.is_some() {
            return Err(precondition("reply consumer already set"));
        }
        let tag = if c.consumer_tag.is_empty() {
            self.broker.consumer_tag()
        } else {
            c.consumer_tag
        };
        let suffix = self.broker.reply_to.register(self.conn.key, ch);
        self.conn.channels[idx].reply = Some((tag.clone(), suffix));
        if !c.nowait {
            self.send(
                ch,
                &Method::BasicConsumeOk(basic::ConsumeOk { consumer_tag: tag }),
            );
        }
        Ok(())
    }

    /// Routes a complete message (outside a transaction, or at tx.commit): resolves the
    /// exchange (cached per channel), checks the user-id property, and hands the message
    /// to [`Broker::publish`] (route, persist or page, enqueue; a full disk refuses it
    /// and makes its confirm a nack). Unroutable and mandatory: sent back with
    /// basic.return. In confirm mode it is counted for a confirm. Errors: 404/403 for a
    /// missing/internal exchange, 406 for a user-id that is not the connection's user.
    fn route_publish(
        &mut self,
        ch: u16,
        p: basic::Publish,
        properties: Bytes,
        body: Bytes,
    ) -> Result<(), AmqpError> {
        // Only the exchange's name, the generation and (on a topic exchange) the key
        // are compared on a hit: a plain publish pays no permission lookup.
        let generation = self.auth.generation();
        let cached = self
            .conn
            .channel(ch)
            .and_then(|c| c.last_exchange.as_ref())
            .filter(|c| {
                c.name.is(&p.exchange)
                    && c.generation == generation
                    && self.broker.exchange(c.id).is_some()
            })
            .map(|c| {
                let hint = c.route.as_ref().filter(|(k, _, _)| k.is(&p.routing_key));
                let topic_ok = c.topic_key.as_ref().is_some_and(|k| k.is(&p.routing_key));
                (c.id, c.topic, topic_ok, hint.map(|(_, v, q)| (*v, *q)))
            });
        let hint = cached.and_then(|c| c.3);
        let x = match cached {
            Some((id, false, _, _)) | Some((id, true, true, _)) => id,
            Some((id, true, false, _)) => {
                // Another key on a cached topic exchange: only the topic permission.
                self.authorize_topic(Permission::Write, &p.exchange, &p.routing_key)?;
                if let Some(c) = self
                    .conn
                    .channel_mut(ch)
                    .and_then(|c| c.last_exchange.as_mut())
                {
                    c.topic_key = Some(ShortKey::new(&p.routing_key));
                }
                id
            }
            None => {
                let (id, topic) = self.publish_checks(&p.exchange, &p.routing_key)?;
                if let Some(c) = self.conn.channel_mut(ch) {
                    c.last_exchange = Some(ExchangeCache {
                        name: ShortKey::new(&p.exchange),
                        id,
                        generation,
                        topic,
                        topic_key: topic.then(|| ShortKey::new(&p.routing_key)),
                        route: None,
                    });
                }
                id
            }
        };
        // Only a publish with a reply-to property (bit 9 of the flags: bit 1 of their
        // first byte) can name the pseudo-queue; the plain path tests one bit.
        let properties = if properties.first().is_some_and(|f| f & 0x02 != 0) {
            let reply = self.conn.channel(ch).and_then(|c| c.reply.as_ref());
            fast_reply_to(reply, properties)?
        } else {
            properties
        };
        // A publish to a reply address (default exchange) goes straight to the reply
        // consumer it names, if any; for the publisher it is still unroutable, as in
        // RabbitMQ (no queue took it: a mandatory one comes back too). While no reply
        // consumer exists, no address can name one.
        if p.exchange.is_empty() && !self.broker.reply_to.is_empty() {
            if let Some(to) = reply_to::suffix(&p.routing_key)
                .and_then(|s| Some((s, self.broker.reply_to.lookup(s)?)))
            {
                let (suffix, (conn, channel)) = to;
                self.events.push(Event::Reply(Box::new(Reply {
                    conn,
                    channel,
                    suffix: Bytes::copy_from_slice(suffix),
                    routing_key: p.routing_key.clone(),
                    properties: properties.clone(),
                    body: body.clone(),
                })));
            }
        }
        // user-id is bit 4 of the first property-flag word; decode only then.
        if properties.get(1).is_some_and(|f| f & 0x10 != 0) {
            let user = BasicProperties::decode(&properties)
                .ok()
                .and_then(|p| p.user_id);
            // RabbitMQ lets an `impersonator` claim any user id.
            let impersonator = || {
                self.auth
                    .tags(&self.conn.user)
                    .contains(&crate::auth::Tag::Impersonator)
            };
            if let Some(u) =
                user.filter(|u| u[..] != *self.conn.user.name().as_bytes() && !impersonator())
            {
                return Err(precondition(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    show(&u),
                    self.conn.user
                )));
            }
        }
        let published = self.broker.publish_hinted(
            x,
            hint,
            &p.exchange,
            &p.routing_key,
            properties,
            body,
            self.config.memory_budget,
        );
        // Remember the route this key took, for the channel's next publish.
        let reached = self.broker.last_route();
        if reached != hint {
            if let Some(cache) = self
                .conn
                .channel_mut(ch)
                .and_then(|c| c.last_exchange.as_mut())
            {
                cache.route = reached.map(|(v, q)| (ShortKey::new(&p.routing_key), v, q));
            }
        }
        // A queue at its length limit with `reject-publish` refused it: nack.
        let refused = self.broker.take_rejected();
        let unroutable = matches!(published, Published::Unroutable { .. });
        if unroutable {
            // Rare: counted on its own path, not on every publish.
            let (returned, dropped) = (u64::from(p.mandatory), u64::from(!p.mandatory));
            self.broker.counters.return_unroutable += returned;
            self.broker.counters.drop_unroutable += dropped;
            if let Some(c) = self.conn.channel_mut(ch) {
                c.stats.now.return_unroutable += returned;
                c.stats.now.drop_unroutable += dropped;
            }
        }
        if let (Published::Unroutable { properties, body }, true) = (published, p.mandatory) {
            let ret = basic::Return {
                reply_code: ReplyCode::NoRoute as u16,
                reply_text: Bytes::from_static(b"NO_ROUTE"),
                exchange: p.exchange,
                routing_key: p.routing_key,
            };
            self.send(ch, &Method::BasicReturn(ret));
            let fm = self.conn.frame_max;
            self.conn
                .out
                .write_content(ch, &properties, &Body::Shared(&body), fm);
        }
        if let Some(c) = self.conn.channel_mut(ch) {
            c.stats.now.publish += 1;
            if c.confirm {
                c.publish_seq += 1;
                if refused {
                    c.nacks.push(c.publish_seq);
                }
                self.broker.counters.publish_confirm += 1;
                self.events.push(Event::Confirms(self.conn.key));
            }
        }
        Ok(())
    }

    /// basic.get: the broker's dispatch policy takes the message and writes get-ok (or
    /// get-empty), the same way as a basic.deliver.
    fn basic_get(&mut self, idx: usize, g: basic::Get) -> Result<(), AmqpError> {
        let qid = self.queue_for(idx, &g.queue, Permission::Read)?;
        crate::broker::dispatch::get(self.broker, qid, self.conn, idx, g.no_ack, self.now)
    }

    /// basic.ack / nack / reject: buffered in a transaction, applied otherwise.
    fn settle(
        &mut self,
        idx: usize,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
    ) -> Result<(), AmqpError> {
        if let Some(ops) = self.conn.channels[idx].tx.as_mut() {
            ops.push(match requeue {
                None => TxOp::Ack { tag, multiple },
                Some(requeue) => TxOp::Nack {
                    tag,
                    multiple,
                    requeue,
                },
            });
            return Ok(());
        }
        self.apply_settle(idx, tag, multiple, requeue)
    }

    /// Removes the covered deliveries; requeues them when asked; gives credit back.
    fn apply_settle(
        &mut self,
        idx: usize,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
    ) -> Result<(), AmqpError> {
        let mut done = Vec::new();
        if self.conn.channels[idx]
            .take_acked(tag, multiple, &mut done)
            .is_none()
        {
            return Err(precondition(format!("unknown delivery tag {tag}")));
        }
        let ack = requeue.is_none();
        let requeue = requeue.unwrap_or(false);
        // Credit runs of the same consumer in one call (and count acks per run); requeue
        // newest first so each message lands at the front in its original order.
        let mut run: Option<(QueueId, u64, u32)> = None;
        for u in done.iter() {
            match &mut run {
                Some((q, c, n)) if *q == u.queue && *c == u.consumer => *n += 1,
                _ => {
                    if let Some((q, c, n)) = run.take() {
                        self.credit_run(q, c, n, ack);
                    }
                    run = Some((u.queue, u.consumer, 1));
                }
            }
        }
        if let Some((q, c, n)) = run {
            self.credit_run(q, c, n, ack);
        }
        if ack {
            let n = done.len() as u64;
            self.broker.counters.ack += n;
            self.conn.channels[idx].stats.now.ack += n;
        }
        if requeue && done.len() > RETURN_NOW {
            self.events.push(Event::Return(done.into()));
        } else if requeue {
            for u in done.into_iter().rev() {
                self.broker.requeue(u.queue, u.durable, u.msg, u.seq);
            }
        } else if ack {
            for u in &done {
                self.broker.settle(u.durable, &u.msg);
            }
        } else {
            // Rejected (reject, or nack with requeue=false): dead-lettered when the
            // queue has a dead-letter exchange, dropped otherwise.
            for u in done {
                let reason = crate::broker::dead_letter::Reason::Rejected;
                self.broker.dead_letter(u.queue, u.durable, u.msg, reason);
            }
        }
        if self.conn.channels[idx].global_prefetch > 0 {
            self.mark_channel_queues_dirty(idx);
        }
        Ok(())
    }

    /// Gives `n` deliveries of consumer `consumer` of queue `q` their credit back; when
    /// they were acked, counts them in the queue's `ack`.
    fn credit_run(&mut self, q: QueueId, consumer: u64, n: u32, ack: bool) {
        if ack {
            if let Some(queue) = self.broker.queue_mut(q) {
                queue.counting().ack += u64::from(n);
            }
        }
        self.broker.credit(q, consumer, n);
    }

    /// basic.recover: RabbitMQ supports requeue=true only.
    fn recover(&mut self, idx: usize, requeue: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::new(ReplyCode::NotImplemented, "requeue=false"));
        }
        self.apply_settle(idx, 0, true, Some(true))
    }
}

/// Detaches a channel's consumers and returns its unacked messages to their queues,
/// in their original order, marked redelivered: at once for a few, through
/// `Event::Return` (spread over loop turns) for more than [`RETURN_NOW`].
pub fn release_channel(ch: &mut Channel, broker: &mut Broker, events: &mut Vec<Event>) {
    if let Some((_, suffix)) = ch.reply.take() {
        broker.reply_to.unregister(&suffix);
    }
    for c in ch.consumers.drain(..) {
        broker.remove_consumer(c.queue, c.id);
    }
    if ch.unacked.len() > RETURN_NOW {
        events.push(Event::Return(std::mem::take(&mut ch.unacked)));
    }
    while let Some(u) = ch.unacked.pop_back() {
        broker.requeue(u.queue, u.durable, u.msg, u.seq);
    }
    ch.assembler = Default::default();
    ch.tx = None;
}

/// The `reply_to` property of a publish on a channel with reply consumer `reply` (tag,
/// suffix): `amq.rabbitmq.reply-to` becomes the channel's reply address (RabbitMQ's `maybe_set_fast_reply_to`); a channel with no
/// reply consumer is 406 "fast reply consumer does not exist". Anything else is kept as
/// is: only a publish with the reply-to flag set is decoded.
fn fast_reply_to(reply: Option<&(Bytes, Bytes)>, properties: Bytes) -> Result<Bytes, AmqpError> {
    // reply-to is bit 9 of the property flags: bit 1 of their first byte.
    if properties.first().is_none_or(|f| f & 0x02 == 0) {
        return Ok(properties);
    }
    let Ok(mut decoded) = BasicProperties::decode(&properties) else {
        return Ok(properties);
    };
    if decoded.reply_to.as_deref() != Some(reply_to::PSEUDO_QUEUE) {
        return Ok(properties);
    }
    let Some((_, suffix)) = reply else {
        return Err(precondition("fast reply consumer does not exist"));
    };
    let mut address = Vec::with_capacity(reply_to::PREFIX.len() + suffix.len());
    address.extend_from_slice(reply_to::PREFIX);
    address.extend_from_slice(suffix);
    decoded.reply_to = Some(Bytes::from(address));
    Ok(decoded.to_raw())
}

/// A message published to a direct reply-to address, on its way to the connection and
/// channel the address names (`Event::Reply`).
#[derive(Debug)]
pub struct Reply {
    pub conn: usize,
    pub channel: u16,
    /// The address's suffix: the channel must still have the reply consumer it names.
    pub suffix: Bytes,
    pub routing_key: Bytes,
    pub properties: Bytes,
    pub body: Bytes,
}

/// Writes a direct reply-to message to its reply consumer as a basic.deliver (no-ack,
/// never redelivered, exchange "" since replies go through the default exchange, the
/// channel's next tag without taking it, as RabbitMQ). Dropped, returning false, when
/// the channel is gone, closing, or no longer has that reply consumer.
pub fn deliver_reply(conn: &mut Connection, r: &Reply) -> bool {
    let Some(c) = conn.channel(r.channel) else {
        return false;
    };
    let tag = match &c.reply {
        Some((tag, suffix)) if !c.closing && *suffix == r.suffix => tag.clone(),
        _ => return false,
    };
    let delivery_tag = c.peek_tag();
    frame::write_deliver(
        conn.out.tail(),
        r.channel,
        &tag,
        delivery_tag,
        false,
        b"",
        &r.routing_key,
    );
    let frame_max = conn.frame_max;
    conn.out
        .write_content(r.channel, &r.properties, &Body::Shared(&r.body), frame_max);
    true
}

/// RabbitMQ's refusal of an operation on the default exchange.
fn default_exchange() -> AmqpError {
    access_refused("operation not permitted on the default exchange")
}

/// A long-string argument (RabbitMQ's `r_arg`: another type is left to the broker's
/// argument validation).
fn string_arg<'a>(args: &'a FieldTable, key: &[u8]) -> Option<&'a Bytes> {
    match args.get(key) {
        Some(FieldValue::LongStr(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! Topic permissions and the publish cache, driven in-process (the integration
    //! tests set topic permissions through `/api/topic-permissions`, another module's).
    use super::*;
    use crate::auth::{Credential, Pattern, Permissions};
    use crate::config::Config;
    use crate::proto::{frame, FieldTable};
    use crate::server::Server;

    struct Client {
        server: Server,
        key: usize,
    }

    impl Client {
        /// User "u" (everything on "/", topic permission on amq.topic: write `^pub\.`,
        /// read `^sub\.`) with channel 1 open in confirm mode.
        fn open() -> Client {
            let mut server = Server::new(Config::default());
            let any = || Pattern::parse(".*").unwrap();
            server
                .auth
                .put_user("u", Credential::Password(b"pw".to_vec()), Vec::new())
                .unwrap();
            server.auth.set_permissions(
                "u",
                "/",
                Permissions {
                    configure: any(),
                    write: any(),
                    read: any(),
                },
            );
            let mut c = Client {
                key: server.open("127.0.0.1:40000".parse().unwrap(), None),
                server,
            };
            c.set_topic("^pub\\.", "^sub\\.");
            c.server.feed(c.key, frame::PROTOCOL_HEADER);
            c.send(
                0,
                Method::ConnectionStartOk(connection::StartOk {
                    client_properties: FieldTable::new(),
                    mechanism: Bytes::from_static(b"PLAIN"),
                    response: Bytes::from_static(b"\0u\0pw"),
                    locale: Bytes::from_static(b"en_US"),
                }),
            );
            c.send(
                0,
                Method::ConnectionTuneOk(connection::TuneOk {
                    channel_max: 2047,
                    frame_max: 131_072,
                    heartbeat: 0,
                }),
            );
            let out = c.send(
                0,
                Method::ConnectionOpen(connection::Open {
                    virtual_host: Bytes::from_static(b"/"),
                    ..Default::default()
                }),
            );
            assert!(matches!(out[..], [Method::ConnectionOpenOk(_)]), "{out:?}");
            c.send(1, Method::ChannelOpen(channel::Open::default()));
            c.send(1, Method::ConfirmSelect(confirm::Select { nowait: false }));
            c
        }

        fn set_topic(&mut self, write: &str, read: &str) {
            let p = |s: &str| Pattern::parse(s).unwrap();
            assert!(self.server.auth.set_topic_permissions(
                "u",
                "/",
                "amq.topic",
                p(write),
                p(read)
            ));
        }

        /// The methods the server answers (content frames skipped).
        fn send_raw(&mut self, b: &[u8]) -> Vec<Method> {
            let out = self.server.feed(self.key, b);
            let mut v = Vec::new();
            let mut rest = &out[..];
            while let Ok(Some(h)) = frame::parse(rest, 0) {
                if h.kind == frame::FRAME_METHOD {
                    let payload = Bytes::copy_from_slice(&rest[7..7 + h.size as usize]);
                    v.push(Method::decode(&payload).unwrap());
                }
                rest = &rest[h.total_len()..];
            }
            v
        }

        fn send(&mut self, ch: u16, m: Method) -> Vec<Method> {
            let mut b = bytes::BytesMut::new();
            frame::write_method(&mut b, ch, &m);
            self.send_raw(&b)
        }

        fn publish_to(&mut self, exchange: &'static str, key: &str) -> Vec<Method> {
            let mut b = bytes::BytesMut::new();
            let p = basic::Publish {
                exchange: Bytes::from_static(exchange.as_bytes()),
                routing_key: Bytes::copy_from_slice(key.as_bytes()),
                ..Default::default()
            };
            frame::write_method(&mut b, 1, &Method::BasicPublish(p));
            frame::write_content_header(&mut b, 1, 1, &[0, 0]);
            frame::write_body(&mut b, 1, b"m", 131_072);
            self.send_raw(&b)
        }

        fn publish(&mut self, key: &str) -> Vec<Method> {
            self.publish_to("amq.topic", key)
        }

        fn bind(&mut self, key: &str) -> Vec<Method> {
            self.send(
                1,
                Method::QueueBind(queue::Bind {
                    queue: Bytes::from_static(b"q"),
                    exchange: Bytes::from_static(b"amq.topic"),
                    routing_key: Bytes::copy_from_slice(key.as_bytes()),
                    ..Default::default()
                }),
            )
        }
    }

    fn refused(out: &[Method], key: &str) {
        let want = format!(
            "ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic' in vhost '/' refused for user 'u'"
        );
        match out {
            [Method::ChannelClose(c)] => {
                assert_eq!((c.reply_code, &c.reply_text[..]), (403, want.as_bytes()));
            }
            other => panic!("expected a 403 channel.close, got {other:?}"),
        }
    }

    #[test]
    fn topic_permissions_check_publish_keys_and_follow_changes() {
        let mut c = Client::open();
        assert!(matches!(c.publish("pub.a")[..], [Method::BasicAck(_)]));
        assert!(matches!(c.publish("pub.a")[..], [Method::BasicAck(_)]));
        assert!(matches!(c.publish("pub.b")[..], [Method::BasicAck(_)]));
        refused(&c.publish("other"), "other");

        // Narrowed while the channel has the exchange and the key cached.
        let mut c = Client::open();
        assert!(matches!(c.publish("pub.a")[..], [Method::BasicAck(_)]));
        c.set_topic("^x$", "^sub\\.");
        refused(&c.publish("pub.a"), "pub.a");

        // A plain (not topic) exchange is never checked by key.
        let mut c = Client::open();
        c.set_topic("^x$", "^x$");
        assert!(matches!(
            c.publish_to("amq.direct", "other")[..],
            [Method::BasicAck(_)]
        ));
    }

    #[test]
    fn topic_permissions_check_binding_keys() {
        let mut c = Client::open();
        let out = c.send(
            1,
            Method::QueueDeclare(queue::Declare {
                queue: Bytes::from_static(b"q"),
                ..Default::default()
            }),
        );
        assert!(matches!(out[..], [Method::QueueDeclareOk(_)]));
        assert!(matches!(c.bind("sub.#")[..], [Method::QueueBindOk(_)]));
        refused(&c.bind("pub.#"), "pub.#");
    }
}
