//! A client connection: protocol state, read buffer, out-queue and channels.
//!
//! Owns everything about one peer except its socket's registration (the reactor's) and
//! the broker model (the server's), including who the peer is: its authenticated user
//! and the vhost it opened, by name and by broker id (`vhost_id`, in which every name a
//! channel method sends is resolved; the auth module decides both; see `state.rs`). Handlers
//! append frames to `out`; only the reactor's flush phase writes them, with vectored
//! writes, through the connection's [`Transport`] (`net`), which is also where reads
//! land in `rbuf`. The transport is optional so the whole connection logic can be
//! driven in-process without one (tests, fuzzing).

pub mod assembler;
pub mod channel;
pub mod methods;
pub mod state;
pub mod usage;

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::User;
use crate::broker::VhostId;
use crate::message::{Body, BODY_BY_REF};
use crate::net::Transport;
use crate::proto::frame;
use channel::Channel;

/// Bytes of queued output above which the broker stops delivering to a connection (a
/// slow consumer's socket is full) and stops reading from it.
pub const HIGH_WATER: usize = 1 << 20;
/// Output must drain below this before deliveries resume.
pub const LOW_WATER: usize = HIGH_WATER / 4;

/// Size of a fresh read buffer; one read takes up to what is left of it.
pub const READ_BUFFER: usize = 256 * 1024;
/// Below this much room a new read buffer is started.
pub const READ_MIN: usize = 16 * 1024;

/// Frames waiting to be written: shared `Bytes` chunks (bodies by reference) followed by
/// a tail buffer that encoders append to.
#[derive(Debug, Default)]
pub struct OutBuf {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl OutBuf {
    /// The buffer encoders write small frames into. Nothing is to be called after:
    /// `len` counts the tail as it is, and `push_ref` freezes it before a shared chunk.
    pub fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queued bytes in total.
    pub fn len(&self) -> usize {
        self.len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a shared chunk without copying it.
    pub fn push_ref(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            let t = self.tail.split().freeze();
            self.len += t.len();
            self.chunks.push_back(t);
        }
        self.len += b.len();
        self.chunks.push_back(b);
    }

    /// Writes a content header and body frames for `body`, splitting by `frame_max`.
    /// Large bodies go by reference (no copy), small ones are copied.
    pub fn write_content(&mut self, channel: u16, properties: &[u8], body: &Body, frame_max: u32) {
        frame::write_content_header(&mut self.tail, channel, body.len() as u64, properties);
        let body = match body.shared() {
            Some(b) if b.len() >= BODY_BY_REF => b,
            _ => {
                frame::write_body(&mut self.tail, channel, body.as_slice(), frame_max);
                return;
            }
        };
        let max = (frame_max.max(frame::FRAME_MIN_SIZE) - 8) as usize;
        let mut at = 0;
        while at < body.len() {
            let end = (at + max).min(body.len());
            frame::write_body_frame_header(&mut self.tail, channel, (end - at) as u32);
            self.push_ref(body.slice(at..end));
            self.tail.extend_from_slice(&[frame::FRAME_END]);
            at = end;
        }
    }

    /// Writes as much as the socket takes with vectored writes. Returns Ok(true) when
    /// everything was written, Ok(false) when the socket would block with bytes left.
    pub fn flush_to<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        loop {
            if self.is_empty() {
                return Ok(true);
            }
            let mut slices: [IoSlice<'_>; 64] = [IoSlice::new(&[]); 64];
            let mut n = 0;
            for c in self.chunks.iter().take(63) {
                slices[n] = IoSlice::new(c);
                n += 1;
            }
            if n == self.chunks.len() && !self.tail.is_empty() {
                slices[n] = IoSlice::new(&self.tail);
                n += 1;
            }
            match w.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            if let Some(front) = self.chunks.front_mut() {
                if n >= front.len() {
                    n -= front.len();
                    self.len -= front.len();
                    self.chunks.pop_front();
                } else {
                    front.advance(n);
                    self.len -= n;
                    n = 0;
                }
            } else {
                let k = n.min(self.tail.len());
                self.tail.advance(k);
                n -= k;
                if k == 0 {
                    break;
                }
            }
        }
    }

    /// Everything queued, in order (tests and the in-process driver).
    pub fn take_all(&mut self) -> BytesMut {
        let mut all = BytesMut::with_capacity(self.len());
        for c in self.chunks.drain(..) {
            all.extend_from_slice(&c);
        }
        all.extend_from_slice(&self.tail);
        self.tail.clear();
        self.len = 0;
        all
    }
}

/// Where a connection is in its life (spec §2.2.4, the connection class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the 8-byte protocol header.
    Header,
    /// connection.start sent; waiting for start-ok.
    StartOk,
    /// connection.tune sent; waiting for tune-ok.
    TuneOk,
    /// Tuned; waiting for connection.open.
    Open,
    /// Open for business.
    Running,
    /// We sent connection.close; waiting for close-ok (everything else is discarded).
    Closing,
    /// We sent connection.close-ok: everything the connection held is released, only the
    /// socket is left. Input is read and discarded until the client closes its end or
    /// `close_deadline` passes (RabbitMQ's `closed` reader state). Closing the socket
    /// at once would reset it when the client still has bytes in flight, and the reset
    /// can destroy the close-ok before the client reads it.
    Lingering,
    /// Done: flush what is queued, then the reactor closes the socket and reaps.
    Closed,
}

/// Capabilities the client announced in connection.start-ok.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCaps {
    pub consumer_cancel_notify: bool,
    pub connection_blocked: bool,
    pub authentication_failure_close: bool,
}

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    /// The slab key (and mio token) of this connection.
    pub key: usize,
    pub peer: SocketAddr,
    /// The socket; `None` when driven in-process (tests, fuzzing).
    pub transport: Option<Transport>,
    pub state: State,
    /// Read buffer: unparsed input, with spare capacity to read into.
    /// Frames are cut off the front with one `split_to(..).freeze()` each (zero copy).
    rbuf: BytesMut,
    pub out: OutBuf,
    /// Open channels, few per connection: a small vector beats a 2047-slot table.
    pub channels: Vec<Channel>,
    pub frame_max: u32,
    pub channel_max: u16,
    /// Negotiated heartbeat in seconds; 0 = off.
    pub heartbeat: u16,
    pub caps: ClientCaps,
    /// The authenticated user (nobody until connection.start-ok is accepted).
    pub user: User,
    /// The name of the vhost opened by connection.open ("" until then).
    pub vhost: Arc<str>,
    /// That vhost in the broker: every name a channel method sends is resolved in it.
    /// Meaningless until connection.open (no channel method runs before).
    pub vhost_id: VhostId,
    pub opened_at: Instant,
    /// Wall-clock time of accept, ms since the epoch (the API's `connected_at`).
    pub connected_at: u64,
    /// The client's table from connection.start-ok, kept raw: converted only when the
    /// management API asks.
    pub client_properties: crate::proto::FieldTable,
    /// The SASL mechanism the client logged in with ("" until start-ok).
    pub auth_mechanism: Bytes,
    /// The name SASL EXTERNAL logs in as: the verified TLS client certificate's
    /// (`--tls-login-from`); None on plain TCP or without a certificate.
    pub external_name: Option<Arc<str>>,
    pub last_recv: Instant,
    pub last_sent: Instant,
    /// When a Closing connection gives up waiting for close-ok, or a Lingering one
    /// stops waiting for the client to close its socket.
    pub close_deadline: Option<Instant>,
    /// Deliveries were held back because `out` passed HIGH_WATER.
    pub throttled: bool,
    /// WRITABLE interest is registered (a flush left bytes behind).
    pub want_write: bool,
    /// The peer's FIN has been reported (EPOLLRDHUP): no further readiness event will
    /// come, so the socket must be read until end of stream, not just to a short read.
    pub read_closed: bool,
    /// Listed in the server's flush list for this turn.
    pub touched: bool,
    /// Listed in the server's confirm list for this turn.
    pub confirm_due: bool,
    /// Has published: a resource alarm stops reading from it.
    pub publisher: bool,
    /// connection.blocked was sent and not yet followed by unblocked.
    pub blocked_sent: bool,
    /// Bytes and calls read and written on the socket (the reactor counts them), with
    /// their last samples for rates.
    pub io: crate::counters::Sampled<crate::counters::IoCounters>,
    /// What this connection adds to the server's connection and channel tallies
    /// (vhost and user limits; see `usage`).
    pub counted: usage::Counted,
}

impl Connection {
    pub fn new(
        key: usize,
        peer: SocketAddr,
        transport: Option<Transport>,
        now: Instant,
        frame_max: u32,
    ) -> Self {
        Connection {
            key,
            peer,
            transport,
            state: State::Header,
            rbuf: BytesMut::new(),
            out: OutBuf::default(),
            channels: Vec::new(),
            frame_max,
            channel_max: 0,
            heartbeat: 0,
            caps: ClientCaps::default(),
            user: User::default(),
            vhost: Arc::from(""),
            vhost_id: VhostId::DEFAULT,
            opened_at: now,
            connected_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            client_properties: crate::proto::FieldTable::new(),
            auth_mechanism: Bytes::new(),
            external_name: None,
            last_recv: now,
            last_sent: now,
            close_deadline: None,
            throttled: false,
            want_write: false,
            read_closed: false,
            touched: false,
            confirm_due: false,
            publisher: false,
            blocked_sent: false,
            io: Default::default(),
            counted: Default::default(),
        }
    }

    /// Unparsed input.
    pub fn input(&self) -> &[u8] {
        &self.rbuf
    }

    /// Cuts `n` bytes of input off the front as one shared `Bytes` (no copy).
    pub fn consume(&mut self, n: usize) -> Bytes {
        let n = n.min(self.rbuf.len());
        self.rbuf.split_to(n).freeze()
    }

    /// Drops all unparsed input.
    pub fn clear_input(&mut self) {
        let n = self.rbuf.len();
        let _ = self.consume(n);
    }

    /// One read from the transport straight into the read buffer's spare capacity
    /// (see [`Transport::read_into`]): Ok(None) without a transport, else (bytes read,
    /// room offered); 0 bytes read is end of stream.
    pub fn read_socket(&mut self, min: usize) -> io::Result<Option<(usize, usize)>> {
        let Some(t) = self.transport.as_mut() else {
            return Ok(None);
        };
        reserve_input(&mut self.rbuf, min);
        t.read_into(&mut self.rbuf).map(Some)
    }

    /// Appends input bytes (the in-process driver and tests).
    pub fn push_input(&mut self, data: &[u8]) {
        reserve_input(&mut self.rbuf, data.len());
        self.rbuf.extend_from_slice(data);
    }

    pub fn channel(&self, id: u16) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    pub fn channel_mut(&mut self, id: u16) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|c| c.id == id)
    }

    /// Whether the connection should get no more deliveries this turn.
    pub fn is_congested(&self) -> bool {
        self.out.len() >= HIGH_WATER || self.state != State::Running
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// A snapshot for inspection (the management API): name, peer, user, vhost,
    /// channels, state in RabbitMQ's words.
    pub fn info(&self) -> crate::ops::ConnectionInfo {
        let local = self.transport.as_ref().and_then(|t| t.local_addr());
        let state = match self.state {
            State::Header | State::StartOk => "starting",
            State::TuneOk => "tuning",
            State::Open => "opening",
            State::Running if self.blocked_sent => "blocked",
            State::Running => "running",
            State::Closing | State::Lingering => "closing",
            State::Closed => "closed",
        };
        crate::ops::ConnectionInfo {
            conn: self.key,
            name: crate::ops::connection_name(self.peer, local),
            peer: self.peer,
            local,
            user: self.user.name().to_string(),
            vhost: self.vhost.clone(),
            channels: self.channels.len(),
            state,
            frame_max: self.frame_max,
            channel_max: self.channel_max,
            heartbeat: self.heartbeat,
            connected_at: self.connected_at,
            client_properties: self.client_properties.clone(),
            auth_mechanism: String::from_utf8_lossy(&self.auth_mechanism).into_owned(),
            tls: self
                .transport
                .as_ref()
                .and_then(Transport::as_tls)
                .and_then(|t| t.info()),
        }
    }
}

/// Makes room for at least `min` more bytes in a read buffer. When the current buffer is
/// short, the unparsed tail moves to a fresh buffer; the old one lives on only as long as
/// the messages sliced from it.
fn reserve_input(rbuf: &mut BytesMut, min: usize) {
    if rbuf.capacity() - rbuf.len() < min {
        let len = rbuf.len();
        let mut fresh = BytesMut::with_capacity(READ_BUFFER.max(len * 2).max(len + min));
        fresh.extend_from_slice(rbuf);
        *rbuf = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, then would block.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        calls: usize,
        max_calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(b)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls == self.max_calls {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let k = (self.cap - n).min(b.len());
                self.got.extend_from_slice(&b[..k]);
                n += k;
                if n == self.cap {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_vectored_writes_keep_order() {
        let mut o = OutBuf::default();
        let mut expect = Vec::new();
        for i in 0..200u32 {
            let small = i.to_be_bytes();
            o.tail().extend_from_slice(&small);
            expect.extend_from_slice(&small);
            let big = Bytes::from(vec![i as u8; 5000 + i as usize]);
            expect.extend_from_slice(&big);
            o.push_ref(big);
        }
        let mut w = Trickle {
            got: Vec::new(),
            cap: 7777,
            calls: 0,
            max_calls: 10,
        };
        assert!(!o.flush_to(&mut w).unwrap());
        w.max_calls = usize::MAX;
        assert!(o.flush_to(&mut w).unwrap());
        assert_eq!(w.got, expect);
        assert!(o.is_empty());
    }

    #[test]
    fn large_bodies_are_split_by_frame_max_and_not_copied() {
        let mut o = OutBuf::default();
        let body = Bytes::from(vec![7u8; 10_000]);
        o.write_content(1, &[0, 0], &Body::Shared(&body), 4096);
        // header frame + 3 body frames (4088 + 4088 + 1824)
        let all = o.take_all();
        let mut at = 0;
        let mut sizes = Vec::new();
        while at < all.len() {
            let h = frame::parse(&all[at..], 0).unwrap().unwrap();
            sizes.push((h.kind, h.size));
            at += h.total_len();
        }
        assert_eq!(sizes, vec![(2, 14), (3, 4088), (3, 4088), (3, 1824)]);
    }
}
