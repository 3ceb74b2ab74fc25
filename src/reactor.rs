//! The reactor: one `mio::Poll` over the listeners, the signal pipes and every
//! connection's transport; the socket phases of the loop turn that `Server::turn`
//! orders (see `lib.rs`).
//!
//! This module is the only one that drives sockets, always through a connection's
//! [`Transport`] (`net`). It owns the listeners, each tagged with the [`Protocol`] it
//! speaks, and the token scheme ([`Tok`]): what a mio token stands for is decoded in one
//! place, and no two kinds can share a token.

use log::{error, info, warn};
use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;
use std::io::{self, Read, Write};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::conn::{HIGH_WATER, READ_MIN};
use crate::http::conn::{HttpConn, Service};
use crate::net::Transport;
use crate::server::{Io, Server};

/// Reads per connection per turn before moving on (fairness between peers).
const READS_PER_TURN: usize = 4;

/// What a mio token stands for. Encoded as `index << TAG_BITS | kind`: kinds never share
/// a token, whatever the index, and a token we did not make decodes to `None`.
/// (`Token(usize::MAX)`, which mio reserves, has an unused kind tag.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// An AMQP connection: its slab key in `Server::conns`.
    Conn(usize),
    /// Listener `i` of the reactor's list (see [`Listener`]).
    Listener(usize),
    /// The SIGTERM/SIGINT pipe: stop.
    Signal,
    /// The SIGUSR1 pipe: log one line of counters (`Server::stats`).
    Stats,
    /// An HTTP connection (management API, dashboard, Prometheus): its key in the
    /// reactor's `http` slab.
    Http(usize),
}

/// Low bits of a token that say its kind: room for three more kinds.
const TAG_BITS: u32 = 3;
const TAG_MASK: usize = (1 << TAG_BITS) - 1;

impl Tok {
    /// The mio token, or None when the index is too large to carry a tag (a slab key
    /// near `usize::MAX >> 3`: never in practice, but a collision is ruled out).
    pub fn token(self) -> Option<Token> {
        let (index, kind) = match self {
            Tok::Conn(k) => (k, 0),
            Tok::Listener(i) => (i, 1),
            Tok::Signal => (0, 2),
            Tok::Stats => (0, 3),
            Tok::Http(k) => (k, 4),
        };
        index
            .checked_mul(1 << TAG_BITS)
            .map(|shifted| Token(shifted | kind))
    }

    /// What `token` stands for; None for a token no [`Tok::token`] returns.
    pub fn from_token(token: Token) -> Option<Tok> {
        let index = token.0 >> TAG_BITS;
        match token.0 & TAG_MASK {
            0 => Some(Tok::Conn(index)),
            1 => Some(Tok::Listener(index)),
            2 if index == 0 => Some(Tok::Signal),
            3 if index == 0 => Some(Tok::Stats),
            4 => Some(Tok::Http(index)),
            _ => None,
        }
    }
}

/// What a listener speaks, which decides what an accepted socket becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Amqp,
    /// AMQP over TLS (`--tls-port`).
    Amqps,
    /// The management HTTP API and the dashboard.
    Http,
    /// The same over TLS (`--http-tls`).
    Https,
    /// Prometheus metrics over HTTP.
    Prometheus,
}

impl Protocol {
    /// The line announced on stdout, before the address (tests wait for these).
    fn banner(self) -> &'static str {
        match self {
            Protocol::Amqp => "warren listening on amqp://",
            Protocol::Amqps => "warren listening on amqps://",
            Protocol::Http => "warren management on http://",
            Protocol::Https => "warren management on https://",
            Protocol::Prometheus => "warren prometheus on http://",
        }
    }

    /// The protocol's name in the management API's `listeners` (RabbitMQ's names).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Amqp => "amqp",
            Protocol::Amqps => "amqp/ssl",
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Prometheus => "http/prometheus",
        }
    }
}

/// A listening socket and the protocol its connections speak.
#[derive(Debug)]
pub struct Listener {
    pub sock: TcpListener,
    pub protocol: Protocol,
    /// The TLS configuration of an AMQPS or HTTPS listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Runs the broker until SIGTERM/SIGINT. Prints the listening address on stdout (one
/// line per listener: `warren listening on amqp://ADDR`) once connections are accepted.
pub fn run(config: Config) -> io::Result<()> {
    // Recover the store before accepting anyone: a damaged data directory stops here.
    let mut server = Server::with_store(config).map_err(io::Error::other)?;
    // `--definitions FILE`: imported before anyone can connect, on every start (as
    // RabbitMQ's `load_definitions`); a file that does not import stops here, unapplied.
    if let Some(path) = server.config.definitions.clone() {
        crate::mgmt::definitions::load_file(&mut server, &path).map_err(io::Error::other)?;
    }
    server.contain_panics = true;
    let config = server.config.clone();
    // Certificates and keys are read before anything listens: a bad file stops
    // start-up with its message (exit 1), never a broker without its TLS listener.
    let (amqps_tls, https_tls) = match &config.tls {
        Some(files) => (
            Some(crate::net::tls::server_config(files, &[]).map_err(io::Error::other)?),
            Some(crate::net::tls::server_config(files, &[b"http/1.1"]).map_err(io::Error::other)?),
        ),
        None => (None, None),
    };
    let poll = Poll::new()?;
    let mut listeners = listen(&poll, &config.bind, config.amqp_port, Protocol::Amqp, 0)?;
    if let Some(port) = config.tls_port {
        let mut amqps = listen(&poll, &config.bind, port, Protocol::Amqps, listeners.len())?;
        for l in &mut amqps {
            l.tls = amqps_tls.clone();
        }
        listeners.extend(amqps);
    }
    let (http_protocol, http_tls) = match (config.http_tls, https_tls) {
        (true, Some(t)) => (Protocol::Https, Some(t)),
        _ => (Protocol::Http, None),
    };
    let mut http = listen(
        &poll,
        &config.bind,
        config.http_port,
        http_protocol,
        listeners.len(),
    )?;
    for l in &mut http {
        l.tls = http_tls.clone();
    }
    listeners.extend(http);
    let prometheus = listen(
        &poll,
        &config.bind,
        config.prometheus_port,
        Protocol::Prometheus,
        listeners.len(),
    )?;
    listeners.extend(prometheus);

    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let signals = signal_pipe(&poll, &[SIGTERM, SIGINT], Tok::Signal)?;
    let stats = signal_pipe(&poll, &[SIGUSR1], Tok::Stats)?;

    {
        let mut out = io::stdout().lock();
        for l in &listeners {
            let local = l.sock.local_addr()?;
            info!("listening on {local} ({})", l.protocol.name());
            writeln!(out, "{}{local}", l.protocol.banner())?;
            server.listeners.push((l.protocol, local));
        }
        out.flush()?;
    }

    let mut reactor = Reactor {
        poll,
        events: Events::with_capacity(1024),
        listeners,
        signals,
        stats,
        stopping: false,
        pending: Vec::new(),
        flush: Vec::new(),
        http: Slab::new(),
        http_pending: Vec::new(),
        http_flush: Vec::new(),
        next_sweep: Instant::now(),
    };
    while !reactor.stopping {
        server.turn(&mut reactor)?;
    }
    reactor.stop(&mut server);
    Ok(())
}

/// Binds one listener per address, all on the same port (the first one's when `port`
/// is 0), IPv6 first. As RabbitMQ does, an IPv4 address already covered by a
/// dual-stack `::` listener (bind fails with EADDRINUSE) is skipped with a log line, so
/// `--bind :: --bind 0.0.0.0` works whether or not the system makes `::` dual-stack.
fn listen(
    poll: &Poll,
    addrs: &[IpAddr],
    mut port: u16,
    protocol: Protocol,
    first: usize,
) -> io::Result<Vec<Listener>> {
    let mut addrs = addrs.to_vec();
    addrs.sort_by_key(|a| !a.is_ipv6());
    addrs.dedup();
    let mut listeners: Vec<Listener> = Vec::new();
    for ip in addrs {
        let mut l = match TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(l) => l,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && ip.is_ipv4()
                    && listeners.iter().any(|l| {
                        l.sock
                            .local_addr()
                            .is_ok_and(|a| a.ip() == IpAddr::from([0u16; 8]))
                    }) =>
            {
                info!("{ip}:{port} is served by the dual-stack listener on [::]:{port}");
                continue;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot listen on {}: {e}", SocketAddr::new(ip, port)),
                ))
            }
        };
        if port == 0 {
            port = l.local_addr()?.port();
        }
        let token = Tok::Listener(first + listeners.len())
            .token()
            .ok_or_else(|| io::Error::other("too many listeners"))?;
        poll.registry()
            .register(&mut l, token, Interest::READABLE)?;
        listeners.push(Listener {
            sock: l,
            protocol,
            tls: None,
        });
    }
    Ok(listeners)
}

/// A non-blocking pipe that becomes readable (under `tok`) when one of `signals` arrives.
fn signal_pipe(poll: &Poll, signals: &[i32], tok: Tok) -> io::Result<UnixStream> {
    let token = tok
        .token()
        .ok_or_else(|| io::Error::other("no token for a signal pipe"))?;
    let (read, write) = std::os::unix::net::UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    for &sig in signals {
        signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
    }
    let mut read = UnixStream::from_std(read);
    poll.registry()
        .register(&mut read, token, Interest::READABLE)?;
    Ok(read)
}

/// Empties a signal pipe (several signals may have queued bytes).
fn drain(pipe: &mut UnixStream) {
    let mut buf = [0u8; 64];
    while matches!(pipe.read(&mut buf), Ok(n) if n > 0) {}
}

impl Listener {
    /// Accepts every pending connection and hands each to the server as what the
    /// listener's protocol makes of it.
    fn accept_all(&self, registry: &Registry, server: &mut Server, http: &mut Slab<HttpConn>) {
        loop {
            match self.sock.accept() {
                Ok((sock, peer)) => {
                    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; logs
                    // and checks use the plain IPv4 address, as RabbitMQ shows it.
                    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                    let tls = self.tls.clone();
                    match self.protocol {
                        Protocol::Amqp | Protocol::Amqps => {
                            open_amqp(registry, server, sock, peer, tls)
                        }
                        Protocol::Http | Protocol::Https => {
                            open_http(registry, http, sock, peer, Service::Management, tls)
                        }
                        Protocol::Prometheus => {
                            open_http(registry, http, sock, peer, Service::Prometheus, None)
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and try again next turn.
                    error!("accept failed: {e}");
                    return;
                }
            }
        }
    }
}

/// Most HTTP connections open at once; more are refused (a management client needs a
/// handful, so this only bounds abuse).
const MAX_HTTP_CONNECTIONS: usize = 1024;
/// Bytes read from one HTTP connection per turn.
const HTTP_READ_PER_TURN: usize = 256 * 1024;

/// An accepted HTTP socket becomes an [`HttpConn`] serving `service`.
fn open_http(
    registry: &Registry,
    http: &mut Slab<HttpConn>,
    sock: mio::net::TcpStream,
    peer: SocketAddr,
    service: Service,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    if http.len() >= MAX_HTTP_CONNECTIONS {
        warn!("{peer}: refusing HTTP connection: limit of {MAX_HTTP_CONNECTIONS} reached");
        let _ = sock.shutdown(std::net::Shutdown::Both);
        return;
    }
    let Some(mut t) = transport(sock, peer, tls) else {
        return;
    };
    let Some(token) = Tok::Http(http.vacant_key()).token() else {
        t.shutdown();
        return;
    };
    if let Err(e) = registry.register(&mut t, token, Interest::READABLE) {
        warn!("{peer}: cannot register socket: {e}");
        return;
    }
    http.insert(HttpConn::new(t, peer, service, Instant::now()));
}

/// An accepted AMQP socket becomes a connection, unless the connection limit is reached.
fn open_amqp(
    registry: &Registry,
    server: &mut Server,
    sock: mio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    if server.conns.len() >= server.config.max_connections {
        warn!(
            "{peer}: refusing connection: limit of {} connections reached",
            server.config.max_connections
        );
        let _ = sock.shutdown(std::net::Shutdown::Both);
        return;
    }
    let Some(mut t) = transport(sock, peer, tls) else {
        return;
    };
    let Some(token) = Tok::Conn(server.conns.vacant_key()).token() else {
        warn!("{peer}: refusing connection: no token left");
        t.shutdown();
        return;
    };
    if let Err(e) = registry.register(&mut t, token, Interest::READABLE) {
        warn!("{peer}: cannot register socket: {e}");
        return;
    }
    server.open(peer, Some(t));
}

/// The transport of an accepted socket: plain, or TLS with the listener's config.
fn transport(
    sock: mio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Option<Transport> {
    match tls {
        None => Some(Transport::tcp(sock)),
        Some(config) => match Transport::tls(sock, config) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!("{peer}: cannot start a TLS session: {e}");
                None
            }
        },
    }
}

/// Reads what the socket has (a bounded number of big reads) and handles the frames.
/// Returns true when the connection must be visited again without a new event:
/// readiness is edge-triggered, so stopping before the socket is drained (read or
/// frame budget spent) means nobody will tell us again.
fn read_conn(server: &mut Server, key: usize) -> bool {
    for _ in 0..READS_PER_TURN {
        let Some(c) = server.conns.get_mut(key) else {
            return false;
        };
        if c.is_closed() {
            return false;
        }
        // Backpressure: a peer that does not read its replies is not read either;
        // the flush phase revisits it once its output drains.
        if c.out.len() >= HIGH_WATER {
            return false;
        }
        // A resource alarm pauses publishers; `unblocked` brings them back.
        if server.is_blocked(key) {
            return false;
        }
        let Some(c) = server.conns.get_mut(key) else {
            return false;
        };
        // Input left over from a spent frame budget is handled before reading
        // more, so a flooding publisher cannot grow the read buffer without bound.
        // Any leftover counts, however short: the socket may be empty, and then no
        // event will ever bring us back to it. (A partial frame costs one header check.)
        if !c.input().is_empty() && server.input(key) {
            return true;
        }
        let Some(c) = server.conns.get_mut(key) else {
            return false;
        };
        let read = c.read_socket(READ_MIN);
        // TLS handshake records the socket did not take: the flush phase writes them.
        if c.transport.as_ref().is_some_and(Transport::wants_write) {
            server.touch(key);
        }
        match read {
            Ok(None) => return false,
            Ok(Some((0, _))) => {
                server.input(key);
                server.lost(key);
                return false;
            }
            Ok(Some((n, offered))) => {
                if let Some(c) = server.conns.get_mut(key) {
                    c.io.now.recv_oct += n as u64;
                    c.io.now.recv_cnt += 1;
                }
                if server.input(key) {
                    return true;
                }
                let read_closed = server.conns.get(key).is_some_and(|c| c.read_closed);
                if n < offered && !read_closed {
                    // A short read emptied the socket: the next byte brings an event.
                    // Not so once the FIN is in: it arrived with (or before) these
                    // bytes and its event is spent, so read on to the end of stream.
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let peer = server.conns.get(key).map(|c| c.peer);
                match peer {
                    Some(p) => info!("{p}: read error: {e}"),
                    None => info!("read error: {e}"),
                }
                server.lost(key);
                return false;
            }
        }
    }
    true
}

struct Reactor {
    poll: Poll,
    events: Events,
    listeners: Vec<Listener>,
    /// SIGTERM/SIGINT and SIGUSR1 pipes (`Tok::Signal`, `Tok::Stats`).
    signals: UnixStream,
    stats: UnixStream,
    /// A stop signal arrived: the turn finishes, then `stop` runs.
    stopping: bool,
    /// Connections with unhandled input left (budget) or unread socket data.
    pending: Vec<usize>,
    flush: Vec<usize>,
    /// HTTP connections (management, Prometheus), beside the server's AMQP ones.
    http: Slab<HttpConn>,
    /// HTTP connections to serve again without an event (requests or output left).
    http_pending: Vec<usize>,
    /// HTTP connections that may have output this turn.
    http_flush: Vec<usize>,
    /// When HTTP connections are next checked for timeouts.
    next_sweep: Instant,
}

/// The socket phases of `Server::turn`.
impl Io for Reactor {
    type Error = io::Error;

    /// Polls (without sleeping when work is pending; else until the next timer, at most
    /// one second), accepts, answers signals, and reads every ready connection.
    fn read(&mut self, server: &mut Server) -> io::Result<()> {
        let timeout = if !self.pending.is_empty()
            || !self.http_pending.is_empty()
            || server.has_pending_work()
        {
            Duration::ZERO
        } else {
            server
                .next_deadline()
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1))
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        server.now = Instant::now();
        let mut ready = std::mem::take(&mut self.pending);
        let mut http_ready = std::mem::take(&mut self.http_pending);
        for ev in self.events.iter() {
            match Tok::from_token(ev.token()) {
                Some(Tok::Conn(k)) => {
                    if ev.is_read_closed() {
                        if let Some(c) = server.conns.get_mut(k) {
                            c.read_closed = true;
                        }
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        ready.push(k);
                    }
                    if ev.is_writable() {
                        server.touch(k);
                    }
                }
                Some(Tok::Listener(i)) => {
                    if let Some(l) = self.listeners.get(i) {
                        l.accept_all(self.poll.registry(), server, &mut self.http);
                    }
                }
                Some(Tok::Http(k)) => http_ready.push(k),
                Some(Tok::Signal) => {
                    drain(&mut self.signals);
                    self.stopping = true;
                }
                Some(Tok::Stats) => {
                    drain(&mut self.stats);
                    info!("{}", server.stats());
                }
                None => {}
            }
        }
        ready.sort_unstable();
        ready.dedup();
        for &k in &ready {
            if read_conn(server, k) {
                self.pending.push(k);
            }
        }
        // HTTP after AMQP: management requests take what is left of the turn.
        http_ready.sort_unstable();
        http_ready.dedup();
        for &k in &http_ready {
            if self.serve_http(server, k) {
                self.http_pending.push(k);
            }
            self.http_flush.push(k);
        }
        if server.now >= self.next_sweep {
            self.next_sweep = server.now + Duration::from_secs(1);
            self.sweep_http(server.now);
        }
        Ok(())
    }

    fn read_again(&mut self, keys: &mut Vec<usize>) {
        self.pending.append(keys);
    }

    /// The flush phase: vectored writes for every connection that gained output.
    fn flush(&mut self, server: &mut Server) {
        let mut keys = std::mem::take(&mut self.flush);
        server.take_touched(&mut keys);
        for &k in &keys {
            let Some(c) = server.conns.get_mut(k) else {
                continue;
            };
            let Some(sock) = c.transport.as_mut() else {
                continue;
            };
            if c.out.is_empty() && !c.want_write && !sock.wants_write() {
                continue;
            }
            let before = c.out.len();
            let tls_held = sock.wants_write();
            // Then what the transport itself holds (TLS records; nothing for TCP).
            let result = c.out.flush_to(sock).and_then(|done| {
                if done {
                    sock.flush_pending()
                } else {
                    Ok(false)
                }
            });
            match result {
                Ok(done) => {
                    let wrote = c.out.len() < before;
                    // Per flush (one or more vectored writes), not per frame.
                    c.io.now.send_oct += (before - c.out.len()) as u64;
                    c.io.now.send_cnt += u64::from(wrote);
                    if done == c.want_write {
                        c.want_write = !done;
                        let interest = if done {
                            Interest::READABLE
                        } else {
                            Interest::READABLE | Interest::WRITABLE
                        };
                        if let Some(token) = Tok::Conn(k).token() {
                            let _ = self.poll.registry().reregister(sock, token, interest);
                        }
                    }
                    let was_throttled = c.throttled;
                    server.flushed(k, wrote);
                    // A publisher we stopped reading for backpressure is read again;
                    // so is a TLS peer whose handshake waited on our records (its
                    // next bytes may already be in, with their event spent).
                    if was_throttled || before >= HIGH_WATER || (tls_held && done) {
                        self.pending.push(k);
                    }
                }
                Err(e) => {
                    info!("{}: write error: {e}", c.peer);
                    server.lost(k);
                }
            }
        }
        // Kept for the reap phase of this turn.
        self.flush = keys;
        self.flush_http(server);
    }

    /// The reap phase: closed connections are flushed one last time and removed.
    fn reap(&mut self, server: &mut Server) {
        // Only connections touched this turn can have closed: every path that closes one
        // touches it (see `Server::touch`), so this costs nothing per idle connection.
        let keys = std::mem::take(&mut self.flush);
        for &k in &keys {
            if !server.conns.get(k).is_some_and(|c| c.is_closed()) {
                continue;
            }
            if let Some(mut c) = server.remove(k) {
                if let Some(mut sock) = c.transport.take() {
                    let _ = c.out.flush_to(&mut sock);
                    let _ = self.poll.registry().deregister(&mut sock);
                    sock.shutdown();
                }
            }
        }
        let mut keys = keys;
        keys.clear();
        self.flush = keys;
        self.pending.retain(|k| server.conns.contains(*k));
    }
}

impl Reactor {
    /// Reads an HTTP connection and answers every complete request in it (up to a
    /// budget). Returns true when it must be served again without a new event.
    fn serve_http(&mut self, server: &mut Server, k: usize) -> bool {
        let Some(c) = self.http.get_mut(k) else {
            return false;
        };
        let mut again = false;
        // Backpressure: a client that does not read its answers is not read either.
        if c.pending_out() < crate::http::conn::WRITE_BUDGET && !c.close_after && !c.eof {
            let was_empty = c.input.is_empty();
            match c.read_socket(HTTP_READ_PER_TURN) {
                Ok(n) => again |= n >= HTTP_READ_PER_TURN,
                Err(e) => {
                    info!("{}: HTTP read error: {e}", c.peer);
                    c.eof = true;
                }
            }
            c.note_input(server.now, was_empty);
        }
        for _ in 0..crate::http::conn::REQUESTS_PER_TURN {
            match c.next_request(server.now) {
                Ok(Some(req)) => {
                    let resp = crate::mgmt::handle(server, c.service, &req, c.peer);
                    c.respond(resp, req.method == "HEAD", req.close);
                }
                Ok(None) => return again,
                Err(e) => {
                    info!("{}: HTTP: {} ({})", c.peer, e.reason(), e.status());
                    c.fail(e);
                    return again;
                }
            }
        }
        true
    }

    /// Writes what HTTP connections owe (a budget each) and removes finished ones.
    fn flush_http(&mut self, server: &Server) {
        let mut keys = std::mem::take(&mut self.http_flush);
        keys.sort_unstable();
        keys.dedup();
        for &k in &keys {
            let Some(c) = self.http.get_mut(k) else {
                continue;
            };
            // One batch of a streamed body per turn, when its output has room.
            let produced = c.produce(server);
            let before = c.pending_out();
            let result = c.flush();
            let wrote = c.pending_out() < before;
            match result {
                Ok(done) => {
                    let want_write = !done && c.blocked_on_write();
                    if want_write != c.want_write {
                        c.want_write = want_write;
                        let interest = if want_write {
                            Interest::READABLE | Interest::WRITABLE
                        } else {
                            Interest::READABLE
                        };
                        if let Some(token) = Tok::Http(k).token() {
                            let _ =
                                self.poll
                                    .registry()
                                    .reregister(&mut c.transport, token, interest);
                        }
                    }
                    // Budget spent with the socket still writable (no event will come),
                    // or room made for requests waiting in the input: serve again.
                    if (wrote && (!done || !c.input.is_empty())) || (produced && c.streaming()) {
                        self.http_pending.push(k);
                    }
                }
                Err(e) => {
                    info!("{}: HTTP write error: {e}", c.peer);
                    c.eof = true;
                    c.close_after = true;
                    self.close_http(k);
                    continue;
                }
            }
            if self.http.get(k).is_some_and(|c| c.finished()) {
                self.close_http(k);
            }
        }
        keys.clear();
        self.http_flush = keys;
    }

    fn close_http(&mut self, k: usize) {
        if self.http.contains(k) {
            let mut c = self.http.remove(k);
            let _ = self.poll.registry().deregister(&mut c.transport);
            c.transport.shutdown();
            self.http_pending.retain(|&p| p != k);
        }
    }

    /// Answers 408 to a peer too slow with its request and closes idle keep-alives.
    fn sweep_http(&mut self, now: Instant) {
        let mut idle = Vec::new();
        for (k, c) in self.http.iter_mut() {
            match c.timed_out(now) {
                Some(true) => {
                    info!("{}: HTTP request timed out", c.peer);
                    c.fail(crate::http::HttpError::Timeout);
                    self.http_flush.push(k);
                }
                Some(false) => idle.push(k),
                None => {}
            }
        }
        for k in idle {
            self.close_http(k);
        }
    }

    /// Graceful stop: 320 CONNECTION_FORCED to everyone, a short wait for close-ok, flush.
    fn stop(&mut self, server: &mut Server) {
        info!("shutting down: closing {} connections", server.conns.len());
        server.shutdown();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !server.conns.is_empty() && Instant::now() < deadline {
            self.flush(server);
            self.reap(server);
            let _ = self
                .poll
                .poll(&mut self.events, Some(Duration::from_millis(50)));
            server.now = Instant::now();
            for ev in self.events.iter() {
                if let Some(Tok::Conn(k)) = Tok::from_token(ev.token()) {
                    read_conn(server, k);
                }
            }
        }
        self.flush(server);
        server.close_store();
        info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_collide() {
        let toks = [
            Tok::Conn(0),
            Tok::Conn(1),
            Tok::Conn(12345),
            Tok::Conn(usize::MAX >> TAG_BITS),
            Tok::Listener(0),
            Tok::Listener(7),
            Tok::Listener(usize::MAX >> TAG_BITS),
            Tok::Signal,
            Tok::Stats,
            Tok::Http(0),
            Tok::Http(9),
        ];
        let mut seen = std::collections::HashSet::new();
        for t in toks {
            let token = t.token().unwrap();
            assert_eq!(Tok::from_token(token), Some(t), "{t:?}");
            assert!(seen.insert(token), "{t:?} shares a token");
        }
        // Too large to carry a tag: refused rather than wrapped onto another token.
        assert_eq!(Tok::Conn((usize::MAX >> TAG_BITS) + 1).token(), None);
        assert_eq!(Tok::Listener(usize::MAX).token(), None);
        // Tokens nobody made, including the one mio reserves, stand for nothing.
        assert_eq!(Tok::from_token(Token(usize::MAX)), None);
        assert_eq!(Tok::from_token(Token(5)), None);
        assert_eq!(Tok::from_token(Token((1 << TAG_BITS) | 2)), None);
    }
}
