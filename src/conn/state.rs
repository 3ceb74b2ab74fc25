//! The connection state machine: every frame a peer sends goes through `Session::input`.
//!
//! A `Session` is a connection borrowed together with the broker (mutably) and the
//! users and permissions (`Auth`, read-only), for one batch of input. It decodes frames
//! from the read buffer, runs one `match` over (state, method), and appends replies to
//! the connection's out-queue. It never touches a socket and never frees the
//! connection: closing only changes `state`, and the server reaps.
//!
//! This file owns the connection level: the protocol header, the handshake (start-ok
//! authenticates through `Auth` and sets `Connection::user`; open asks the broker whether
//! the vhost exists and `Auth` whether the user may use it, and sets
//! `Connection::vhost`), framing checks and dispatch by frame type, heartbeats, channel.open,
//! connection.close and the close/linger states, and channel close on error. Methods on
//! an open channel (exchange, queue, basic, confirm, tx) and publishing live in
//! [`super::methods`]; it calls them through `channel_method` and `publish`.
//!
//! Errors are values: a handler returns `AmqpError`; channel-scoped codes close the
//! channel (spec §1.4.2.2: 403, 404, 405, 406), the rest close the connection.

use bytes::{Bytes, BytesMut};
use log::{debug, info, warn};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{self, Auth};
use crate::broker::Broker;
use crate::config::Config;
use crate::error::{AmqpError, ReplyCode};
use crate::proto::frame::{
    self, FrameError, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD,
};
use crate::proto::{basic, channel, connection, FieldTable, FieldValue, Method};

use super::assembler::Outcome;
use super::channel::{Channel, Unacked};
use super::methods::release_channel;
use super::{Connection, State};

/// How long a connection that sent connection.close waits for close-ok.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a connection lingers after its close-ok for the client to close the socket
/// (RabbitMQ's `close_connection` in rabbit_reader.erl): the negotiated heartbeat
/// timeout when it is between 1 and 29 seconds, else 30 seconds.
pub fn linger_timeout(heartbeat: u16) -> Duration {
    if heartbeat > 0 && heartbeat < 30 {
        Duration::from_secs(u64::from(heartbeat))
    } else {
        Duration::from_secs(30)
    }
}

/// Frames handled per connection per call, so one busy peer cannot starve the others.
pub const FRAMES_PER_TURN: usize = 1024;

/// Side effects on other connections, applied by the server after the batch.
#[derive(Debug)]
pub enum Event {
    /// A side effect of an operation on another connection (a consumer cancelled
    /// because its queue was deleted, a connection to close): see [`crate::ops`].
    Op(crate::ops::Effect),
    /// This connection has publisher confirms to send after the turn.
    Confirms(usize),
    /// More than [`RETURN_NOW`] unacked deliveries to requeue (a channel or connection
    /// closed, nack/recover of many): too many to put back within one loop turn, so the
    /// server returns them a budget per turn (`Server::returns`). In delivery-tag order.
    Return(VecDeque<Unacked>),
    /// A direct reply-to message for the reply consumer of another (or this)
    /// connection's channel (see `super::methods::deliver_reply`).
    Reply(Box<super::methods::Reply>),
}

/// Unacked sets up to this size are requeued on the spot; larger ones are handed to
/// the server to spread over loop turns (`Event::Return`).
pub const RETURN_NOW: usize = 1024;

/// A connection borrowed with the broker for one batch of frames.
pub struct Session<'a> {
    pub conn: &'a mut Connection,
    pub broker: &'a mut Broker,
    /// Users and permissions: the handshake authenticates through it, channel methods
    /// authorize through it.
    pub auth: &'a Auth,
    pub config: &'a Config,
    pub now: Instant,
    pub events: &'a mut Vec<Event>,
    /// A resource alarm in force: publishers get connection.blocked.
    pub alarm: Option<crate::alarm::Alarm>,
    /// Connections per vhost and user, channels per user: what connection.open and
    /// channel.open check the vhost and user limits against.
    pub usage: &'a super::usage::Usage,
}

pub(super) fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Server properties of connection.start, with the capabilities RabbitMQ advertises.
fn server_properties() -> FieldTable {
    let s = |v: &'static str| FieldValue::LongStr(Bytes::from_static(v.as_bytes()));
    let mut caps = FieldTable::new();
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(Bytes::from_static(c.as_bytes()), FieldValue::Bool(true));
    }
    let mut t = FieldTable::new();
    t.insert(Bytes::from_static(b"capabilities"), FieldValue::Table(caps));
    t.insert(Bytes::from_static(b"cluster_name"), s("warren"));
    t.insert(
        Bytes::from_static(b"copyright"),
        s("Copyright (c) the Warren authors"),
    );
    t.insert(
        Bytes::from_static(b"information"),
        s("Warren, an AMQP 0-9-1 broker"),
    );
    t.insert(Bytes::from_static(b"platform"), s("Rust"));
    t.insert(Bytes::from_static(b"product"), s("Warren"));
    t.insert(Bytes::from_static(b"version"), s(env!("CARGO_PKG_VERSION")));
    t
}

impl Session<'_> {
    pub(super) fn send(&mut self, channel: u16, m: &Method) {
        frame::write_method(self.conn.out.tail(), channel, m);
    }

    /// Handles every complete frame in the read buffer, up to the per-turn budget.
    /// Returns true when complete frames remain (call again next turn).
    pub fn input(&mut self) -> bool {
        #[cfg(test)]
        if tests::PANIC_NEXT.with(|p| p.replace(false)) {
            panic!("injected fault (test)");
        }
        let mut handled = 0;
        loop {
            // After close-ok, whatever the client still sends is read and dropped.
            if matches!(self.conn.state, State::Closed | State::Lingering) {
                self.conn.clear_input();
                return false;
            }
            if self.conn.state == State::Header {
                if !self.protocol_header() {
                    return false;
                }
                continue;
            }
            if handled == FRAMES_PER_TURN {
                return true;
            }
            // RabbitMQ accepts a payload of up to frame_max bytes (not frame_max - 8).
            let limit = self.conn.frame_max.saturating_add(8);
            let head = match frame::parse(self.conn.input(), limit) {
                Ok(None) => return false,
                Ok(Some(h)) => h,
                Err(e) => {
                    let text = frame_error_text(self.conn.input(), e, self.conn.frame_max);
                    self.connection_error(AmqpError::new(ReplyCode::FrameError, text));
                    self.conn.clear_input();
                    return false;
                }
            };
            handled += 1;
            let whole = self.conn.consume(head.total_len());
            let payload = whole.slice(7..7 + head.size as usize);
            self.conn.last_recv = self.now;
            if let Err(e) = self.frame(head.kind, head.channel, payload) {
                self.connection_error(e);
            }
        }
    }

    /// Checks the 8-byte protocol header. Returns false when more bytes are needed or
    /// the connection is done.
    fn protocol_header(&mut self) -> bool {
        let want = frame::PROTOCOL_HEADER;
        let input = self.conn.input();
        let have = input.len().min(8);
        if input[..have] != want[..have] {
            // Spec §4.2.2: reply with the header we support, then close.
            info!(
                "{}: rejected protocol header {:?}",
                self.conn.peer,
                &input[..have]
            );
            self.conn.out.tail().extend_from_slice(want);
            self.conn.state = State::Closed;
            self.conn.clear_input();
            return false;
        }
        if have < 8 {
            return false;
        }
        let _ = self.conn.consume(8);
        // A TLS client whose certificate was verified may log in with it (EXTERNAL);
        // the handshake is over by now, so the certificate is known.
        self.conn.external_name = self
            .conn
            .transport
            .as_ref()
            .and_then(crate::net::Transport::as_tls)
            .and_then(|t| t.peer_name(self.config.tls_login_from))
            .map(Arc::from);
        let mechanisms = if self.conn.external_name.is_some() {
            Bytes::from_static(auth::MECHANISMS_EXTERNAL)
        } else {
            Bytes::from_static(auth::MECHANISMS)
        };
        let start = connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms,
            locales: Bytes::from_static(b"en_US"),
        };
        self.send(0, &Method::ConnectionStart(start));
        self.conn.state = State::StartOk;
        true
    }

    /// Sends connection.close and releases everything the connection holds.
    pub fn connection_error(&mut self, e: AmqpError) {
        if matches!(
            self.conn.state,
            State::Closing | State::Lingering | State::Closed
        ) {
            return;
        }
        warn!("{}: closing connection: {}", self.conn.peer, e);
        let close = connection::Close {
            reply_code: e.code as u16,
            reply_text: Bytes::from(e.reply_text()),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        self.send(0, &Method::ConnectionClose(close));
        self.release_all();
        self.conn.state = State::Closing;
        self.conn.close_deadline = Some(self.now + CLOSE_TIMEOUT);
    }

    /// Server-initiated close (shutdown): 320 CONNECTION_FORCED.
    pub fn force_close(&mut self, text: &str) {
        if self.conn.state == State::Running || self.conn.state == State::Open {
            self.connection_error(AmqpError::new(ReplyCode::ConnectionForced, text));
        } else if self.conn.state != State::Closing {
            // A Lingering connection already has its close-ok queued: the reap phase
            // flushes it and closes the socket without waiting for the client.
            self.conn.state = State::Closed;
        }
    }

    /// Sends connection.close-ok and lets the socket linger (`State::Lingering`): the
    /// channels are released and the exclusive queues deleted now, as RabbitMQ does when
    /// it sends close-ok; only the socket waits for the client to close it, at most
    /// `linger_timeout`.
    fn close_ok_and_linger(&mut self) {
        self.send(0, &Method::ConnectionCloseOk(connection::CloseOk {}));
        self.release_all();
        for q in self.broker.exclusive_queues_of(self.conn.key) {
            self.broker.remove_queue(q);
        }
        // Nothing it sends counts any more: a resource alarm must not stop us reading
        // its end of stream.
        self.conn.publisher = false;
        self.conn.state = State::Lingering;
        self.conn.close_deadline = Some(self.now + linger_timeout(self.conn.heartbeat));
    }

    /// Returns every channel's unacked messages to their queues and detaches consumers.
    pub fn release_all(&mut self) {
        let channels = std::mem::take(&mut self.conn.channels);
        for mut ch in channels {
            release_channel(&mut ch, self.broker, self.events);
        }
    }

    fn frame(&mut self, kind: u8, ch: u16, payload: Bytes) -> Result<(), AmqpError> {
        match self.conn.state {
            State::Header | State::Lingering | State::Closed => Ok(()),
            State::Closing => {
                // Spec: after sending close, discard everything but close and close-ok.
                if kind == FRAME_METHOD && ch == 0 {
                    match Method::decode(&payload) {
                        Ok(Method::ConnectionCloseOk(_)) => self.conn.state = State::Closed,
                        Ok(Method::ConnectionClose(_)) => self.close_ok_and_linger(),
                        _ => {}
                    }
                }
                Ok(())
            }
            State::StartOk | State::TuneOk | State::Open => {
                if kind == FRAME_HEARTBEAT {
                    return Ok(());
                }
                if kind != FRAME_METHOD || ch != 0 {
                    return Err(AmqpError::new(
                        ReplyCode::UnexpectedFrame,
                        "expected a connection method frame on channel 0 during the handshake",
                    ));
                }
                let m = self.decode(&payload)?;
                let (class, method) = (m.class_id(), m.method_id());
                self.handshake(m).map_err(|e| e.on(class, method))
            }
            State::Running => self.running_frame(kind, ch, payload),
        }
    }

    fn decode(&mut self, payload: &Bytes) -> Result<Method, AmqpError> {
        Method::decode(payload).map_err(|e| {
            let (class, method) = (
                payload
                    .first()
                    .zip(payload.get(1))
                    .map_or(0, |(a, b)| u16::from_be_bytes([*a, *b])),
                payload
                    .get(2)
                    .zip(payload.get(3))
                    .map_or(0, |(a, b)| u16::from_be_bytes([*a, *b])),
            );
            let code = match e {
                crate::proto::DecodeError::UnknownMethod { .. } => ReplyCode::NotImplemented,
                _ => ReplyCode::SyntaxError,
            };
            AmqpError::new(
                code,
                format!("cannot decode method frame ({class}, {method}): {e}"),
            )
            .on(class, method)
        })
    }

    /// connection.start-ok, tune-ok, open, in that order (spec §2.2.4).
    fn handshake(&mut self, m: Method) -> Result<(), AmqpError> {
        let (class, method) = (m.class_id(), m.method_id());
        match (self.conn.state, m) {
            (State::StartOk, Method::ConnectionStartOk(ok)) => {
                if let Some(FieldValue::Table(caps)) = ok.client_properties.get(b"capabilities") {
                    let flag =
                        |k: &[u8]| caps.get(k).and_then(FieldValue::as_bool).unwrap_or(false);
                    self.conn.caps.consumer_cancel_notify = flag(b"consumer_cancel_notify");
                    self.conn.caps.connection_blocked = flag(b"connection.blocked");
                    self.conn.caps.authentication_failure_close =
                        flag(b"authentication_failure_close");
                }
                let login = match &self.conn.external_name {
                    Some(name) if &ok.mechanism[..] == b"EXTERNAL" => {
                        info!(
                            "{}: EXTERNAL login as '{name}' (TLS client certificate)",
                            self.conn.peer
                        );
                        self.auth.login_external(name, self.conn.peer)
                    }
                    _ => self
                        .auth
                        .authenticate(&ok.mechanism, &ok.response, self.conn.peer),
                };
                match login {
                    Ok(user) => {
                        self.conn.user = user;
                        self.conn.auth_mechanism = ok.mechanism.clone();
                        self.conn.client_properties = ok.client_properties.clone();
                    }
                    Err(e) => {
                        warn!("{}: {e}", self.conn.peer);
                        match e.refusal() {
                            Some(text) if self.conn.caps.authentication_failure_close => {
                                let e = AmqpError::new(ReplyCode::AccessRefused, text);
                                self.connection_error(e);
                            }
                            // An unknown mechanism is a handshake failure in RabbitMQ,
                            // and a refusal to a client without
                            // authentication_failure_close too: the socket is just
                            // closed, with no close method.
                            _ => self.conn.state = State::Closed,
                        }
                        return Ok(());
                    }
                }
                let tune = connection::Tune {
                    channel_max: self.config.channel_max,
                    frame_max: self.config.frame_max,
                    heartbeat: self.config.heartbeat,
                };
                self.send(0, &Method::ConnectionTune(tune));
                self.conn.state = State::TuneOk;
                Ok(())
            }
            (State::TuneOk, Method::ConnectionTuneOk(t)) => {
                let max = self.config.frame_max;
                if t.frame_max != 0 && t.frame_max < frame::FRAME_MIN_SIZE {
                    return Err(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!(
                            "frame_max={} < {} min size",
                            t.frame_max,
                            frame::FRAME_MIN_SIZE
                        ),
                    ));
                }
                if t.frame_max > max {
                    return Err(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!("frame_max={} > {} max size", t.frame_max, max),
                    ));
                }
                if t.channel_max > self.config.channel_max {
                    return Err(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!(
                            "channel_max={} > {} max",
                            t.channel_max, self.config.channel_max
                        ),
                    ));
                }
                self.conn.frame_max = if t.frame_max == 0 { max } else { t.frame_max };
                self.conn.channel_max = if t.channel_max == 0 {
                    self.config.channel_max
                } else {
                    t.channel_max
                };
                self.conn.heartbeat = t.heartbeat;
                self.conn.state = State::Open;
                Ok(())
            }
            (State::Open, Method::ConnectionOpen(o)) => {
                // RabbitMQ's check_vhost_access: the vhost must exist, then the user
                // must have permissions in it; both refusals are 530.
                let (vhost_id, vhost) =
                    self.broker.lookup_vhost(&o.virtual_host).ok_or_else(|| {
                        AmqpError::new(
                            ReplyCode::NotAllowed,
                            format!("vhost {} not found", show(&o.virtual_host)),
                        )
                    })?;
                self.check_connection_limits(vhost_id, &vhost)?;
                if !self.auth.can_access_vhost(&self.conn.user, &vhost) {
                    return Err(AmqpError::new(
                        ReplyCode::NotAllowed,
                        format!(
                            "access to vhost '{vhost}' refused for user '{}'",
                            self.conn.user
                        ),
                    ));
                }
                self.conn.vhost = vhost;
                self.conn.vhost_id = vhost_id;
                self.send(
                    0,
                    &Method::ConnectionOpenOk(connection::OpenOk {
                        known_hosts: Bytes::new(),
                    }),
                );
                self.conn.state = State::Running;
                info!(
                    "{}: connection open (user '{}', vhost '{}')",
                    self.conn.peer, self.conn.user, self.conn.vhost
                );
                Ok(())
            }
            (_, Method::ConnectionClose(_)) => {
                self.close_ok_and_linger();
                Ok(())
            }
            (state, m) => Err(AmqpError::new(
                ReplyCode::CommandInvalid,
                format!(
                    "unexpected {} during the handshake (state {state:?})",
                    m.name()
                ),
            )
            .on(class, method)),
        }
    }

    /// RabbitMQ's connection.open checks before access (rabbit_reader's
    /// `is_over_vhost_connection_limit`, then `is_over_user_connection_limit`): 530 when
    /// the vhost already has `max-connections` connections, or the user its own
    /// `max-connections` (a limit of 0 refuses every connection).
    fn check_connection_limits(
        &self,
        id: crate::broker::VhostId,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        let user = self.conn.user.name();
        let limit = self
            .broker
            .vhost(id)
            .and_then(|v| crate::broker::VhostLimits::effective(v.limits.max_connections));
        if let Some(limit) = limit {
            if u64::from(self.usage.vhost_connections(id)) >= limit {
                return Err(AmqpError::new(
                    ReplyCode::NotAllowed,
                    format!(
                        "access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
                    ),
                ));
            }
        }
        if let Some(limit) = self.auth.user_limits(user).max_connections {
            if u64::from(self.usage.user_connections(user)) >= limit {
                return Err(AmqpError::new(
                    ReplyCode::NotAllowed,
                    format!(
                        "connection refused for user '{user}': user connection limit ({limit}) is reached"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The user's `max-channels` at channel.open (rabbit_reader's `create_channel`): 530,
    /// closing the connection, once the user has that many channels over all its
    /// connections. This connection's own channels are counted as they are now.
    fn check_channel_limit(&self) -> Result<(), AmqpError> {
        let user = self.conn.user.name();
        let Some(limit) = self.auth.user_limits(user).max_channels else {
            return Ok(());
        };
        let others = self
            .usage
            .user_channels(user)
            .saturating_sub(self.conn.counted.channels());
        if u64::from(others) + self.conn.channels.len() as u64 >= limit {
            return Err(AmqpError::new(
                ReplyCode::NotAllowed,
                format!(
                    "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})"
                ),
            ));
        }
        Ok(())
    }

    fn running_frame(&mut self, kind: u8, ch: u16, payload: Bytes) -> Result<(), AmqpError> {
        if kind == FRAME_HEARTBEAT {
            if ch != 0 {
                return Err(AmqpError::new(
                    ReplyCode::UnexpectedFrame,
                    "type 8, all octets = <<>>",
                ));
            }
            return Ok(());
        }
        if ch == 0 {
            if kind != FRAME_METHOD {
                return Err(AmqpError::new(
                    ReplyCode::UnexpectedFrame,
                    "content frame on channel 0",
                ));
            }
            let m = self.decode(&payload)?;
            return self.connection_method(m);
        }
        let Some(idx) = self.conn.channels.iter().position(|c| c.id == ch) else {
            if kind != FRAME_METHOD {
                return Err(AmqpError::new(
                    ReplyCode::ChannelError,
                    "expected 'channel.open'",
                ));
            }
            let m = self.decode(&payload)?;
            return match m {
                Method::ChannelOpen(_) => {
                    // Like RabbitMQ, channel_max bounds how many channels are open, not
                    // their numbers.
                    let open = self.conn.channels.len();
                    if open >= usize::from(self.conn.channel_max) {
                        return Err(AmqpError::new(
                            ReplyCode::NotAllowed,
                            format!(
                                "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                                self.conn.channel_max
                            ),
                        ));
                    }
                    self.check_channel_limit()?;
                    self.conn.channels.push(Channel::new(ch));
                    self.broker.churn.now.channel_created += 1;
                    let ok = channel::OpenOk {
                        channel_id: Bytes::new(),
                    };
                    self.send(ch, &Method::ChannelOpenOk(ok));
                    Ok(())
                }
                m => Err(
                    AmqpError::new(ReplyCode::ChannelError, "expected 'channel.open'")
                        .on(m.class_id(), m.method_id()),
                ),
            };
        };
        if self.conn.channels[idx].closing {
            // Spec §2.2.5: after sending channel.close, discard all but close/close-ok.
            if kind == FRAME_METHOD {
                match Method::decode(&payload) {
                    Ok(Method::ChannelCloseOk(_)) => {
                        self.conn.channels.swap_remove(idx);
                        self.broker.churn.now.channel_closed += 1;
                    }
                    Ok(Method::ChannelClose(_)) => {
                        self.send(ch, &Method::ChannelCloseOk(channel::CloseOk {}));
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        let outcome = match kind {
            FRAME_METHOD => {
                if !self.conn.channels[idx].assembler.is_idle() {
                    return Err(AmqpError::new(
                        ReplyCode::UnexpectedFrame,
                        "expected content header for class 60, got non content header frame instead",
                    ));
                }
                let m = self.decode(&payload)?;
                let (class, method) = (m.class_id(), m.method_id());
                return match self.channel_method(idx, ch, m) {
                    Ok(()) => Ok(()),
                    Err(e) => self.raise(ch, e.on(class, method)),
                };
            }
            FRAME_HEADER => self.conn.channels[idx].assembler.header(&payload),
            FRAME_BODY => self.conn.channels[idx].assembler.body(payload),
            other => {
                return Err(AmqpError::new(
                    ReplyCode::FrameError,
                    format!("unknown frame type {other}"),
                ))
            }
        };
        match outcome {
            Ok(Outcome::Pending) => Ok(()),
            Ok(Outcome::Complete {
                publish,
                properties,
                body,
            }) => match self.publish(ch, publish, properties, body) {
                Ok(()) => Ok(()),
                Err(e) => self.raise(ch, e.on(60, 40)),
            },
            Err(e) => self.raise(ch, e.on(60, 40)),
        }
    }

    /// Routes an error to its scope: channel errors close the channel, others are
    /// returned to close the connection.
    fn raise(&mut self, ch: u16, e: AmqpError) -> Result<(), AmqpError> {
        if !e.code.is_channel_scoped() {
            return Err(e);
        }
        info!("{}: closing channel {ch}: {}", self.conn.peer, e);
        self.close_channel(ch, e);
        Ok(())
    }

    /// Sends channel.close, releases the channel's consumers and unacked messages.
    pub fn close_channel(&mut self, ch: u16, e: AmqpError) {
        let Some(c) = self.conn.channel_mut(ch) else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        let close = channel::Close {
            reply_code: e.code as u16,
            reply_text: Bytes::from(e.reply_text()),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        self.send(ch, &Method::ChannelClose(close));
        if let Some(c) = self.conn.channel_mut(ch) {
            release_channel(c, self.broker, self.events);
        }
    }

    fn connection_method(&mut self, m: Method) -> Result<(), AmqpError> {
        let (class, method) = (m.class_id(), m.method_id());
        match m {
            Method::ConnectionClose(c) => {
                debug!(
                    "{}: client closed the connection ({} {})",
                    self.conn.peer,
                    c.reply_code,
                    show(&c.reply_text)
                );
                self.close_ok_and_linger();
                Ok(())
            }
            Method::ConnectionCloseOk(_) => {
                self.conn.state = State::Closed;
                Ok(())
            }
            Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => Ok(()),
            Method::ConnectionUpdateSecret(_) => {
                self.send(
                    0,
                    &Method::ConnectionUpdateSecretOk(connection::UpdateSecretOk {}),
                );
                Ok(())
            }
            m => Err(AmqpError::new(
                ReplyCode::CommandInvalid,
                format!("{} is not allowed on channel 0", m.name()),
            )
            .on(class, method)),
        }
    }
}

/// Encodes basic.cancel sent by the server (queue deleted under a consumer).
pub fn write_server_cancel(out: &mut BytesMut, ch: u16, tag: Bytes) {
    frame::write_method(
        out,
        ch,
        &Method::BasicCancel(basic::Cancel {
            consumer_tag: tag,
            nowait: true,
        }),
    );
}

/// The reply text of a framing error, in RabbitMQ's words (the frame type, the payload
/// octets seen, and the Erlang term of the reason), e.g.
/// `type 3, all octets = <<>>: {frame_too_large,10000,4088}`.
fn frame_error_text(input: &[u8], e: FrameError, frame_max: u32) -> String {
    let kind = input.first().copied().unwrap_or(0);
    match e {
        FrameError::TooLarge { size, .. } => format!(
            "type {kind}, all octets = <<>>: {{frame_too_large,{size},{}}}",
            frame_max.saturating_sub(8)
        ),
        FrameError::BadFrameEnd(b) => {
            let size = input
                .get(3..7)
                .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize);
            let payload = input.get(7..7 + size).unwrap_or(&[]);
            let octets: Vec<String> = payload.iter().take(64).map(|b| b.to_string()).collect();
            format!(
                "type {kind}, all octets = <<{}>>: {{invalid_frame_end_marker,{b}}}",
                octets.join(",")
            )
        }
        FrameError::UnknownType(t) => {
            format!("type {t}, all octets = <<>>: {{unknown_frame_type,{t}}}")
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    thread_local! {
        /// Makes the next `Session::input` panic: proves that the server contains it.
        pub(crate) static PANIC_NEXT: Cell<bool> = const { Cell::new(false) };
    }
}
