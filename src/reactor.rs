//! The reactor: one `mio::Poll` over the listener, the signal pipe and every
//! connection's socket; the loop turn described in `lib.rs`.
//!
//! This module is the only one that touches sockets. Tokens are slab keys of the
//! connections; the listeners (one per `--bind` address) and the two signal pipes use
//! the highest tokens.

use log::{error, info, warn};
use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::{Config, MAX_LISTENERS};
use crate::conn::{HIGH_WATER, READ_MIN};
use crate::net::Transport;
use crate::server::Server;

const SIGNALS: Token = Token(usize::MAX - 1);
/// SIGUSR1: log one line of counters (`Server::stats`).
const STATS: Token = Token(usize::MAX - 2);
/// Listener `i` (in `Reactor::listeners`) has token `FIRST_LISTENER + i`.
const FIRST_LISTENER: usize = usize::MAX - 2 - MAX_LISTENERS;

/// Reads per connection per turn before moving on (fairness between peers).
const READS_PER_TURN: usize = 4;

/// Runs the broker until SIGTERM/SIGINT. Prints the listening address on stdout (one
/// line: `warren listening on amqp://ADDR`) once connections are accepted.
pub fn run(config: Config) -> io::Result<()> {
    // Recover the store before accepting anyone: a damaged data directory stops here.
    let mut server = Server::with_store(config).map_err(io::Error::other)?;
    server.contain_panics = true;
    let config = &server.config;
    let poll = Poll::new()?;
    let listeners = listen(&poll, &config.bind, config.amqp_port)?;

    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut sig_read = signal_pipe(&poll, &[SIGTERM, SIGINT], SIGNALS)?;
    let mut stats_read = signal_pipe(&poll, &[SIGUSR1], STATS)?;

    {
        let mut out = io::stdout().lock();
        for l in &listeners {
            let local = l.local_addr()?;
            info!("listening on {local}");
            writeln!(out, "warren listening on amqp://{local}")?;
        }
        out.flush()?;
    }

    let mut reactor = Reactor {
        poll,
        listeners,
        server: &mut server,
        pending: Vec::new(),
        flush: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);
    loop {
        let stop = reactor.turn(&mut events, &mut sig_read, &mut stats_read)?;
        if stop {
            break;
        }
    }
    reactor.stop();
    Ok(())
}

/// Binds one listener per address, all on the same port (the first one's when `port`
/// is 0), IPv6 first. As RabbitMQ does, an IPv4 address already covered by a
/// dual-stack `::` listener (bind fails with EADDRINUSE) is skipped with a log line, so
/// `--bind :: --bind 0.0.0.0` works whether or not the system makes `::` dual-stack.
fn listen(poll: &Poll, addrs: &[IpAddr], mut port: u16) -> io::Result<Vec<TcpListener>> {
    let mut addrs = addrs.to_vec();
    addrs.sort_by_key(|a| !a.is_ipv6());
    addrs.dedup();
    let mut listeners: Vec<TcpListener> = Vec::new();
    for ip in addrs {
        let mut l = match TcpListener::bind(SocketAddr::new(ip, port)) {
            Ok(l) => l,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && ip.is_ipv4()
                    && listeners.iter().any(|l| {
                        l.local_addr()
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
        let token = Token(FIRST_LISTENER + listeners.len());
        poll.registry()
            .register(&mut l, token, Interest::READABLE)?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// A non-blocking pipe that becomes readable (under `token`) when one of `signals` arrives.
fn signal_pipe(poll: &Poll, signals: &[i32], token: Token) -> io::Result<UnixStream> {
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

struct Reactor<'a> {
    poll: Poll,
    listeners: Vec<TcpListener>,
    server: &'a mut Server,
    /// Connections with unhandled input left (budget) or unread socket data.
    pending: Vec<usize>,
    flush: Vec<usize>,
}

impl Reactor<'_> {
    /// One loop turn. Returns true when a stop signal arrived.
    fn turn(
        &mut self,
        events: &mut Events,
        sig: &mut UnixStream,
        stats: &mut UnixStream,
    ) -> io::Result<bool> {
        let timeout = if !self.pending.is_empty() || self.server.has_pending_work() {
            Some(Duration::ZERO)
        } else {
            let next = self.server.timers();
            Some(
                next.saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1)),
            )
        };
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.server.now = Instant::now();
        let mut stop = false;
        let mut ready = std::mem::take(&mut self.pending);
        for ev in events.iter() {
            match ev.token() {
                Token(t) if (FIRST_LISTENER..FIRST_LISTENER + MAX_LISTENERS).contains(&t) => {
                    self.accept(t - FIRST_LISTENER)
                }
                SIGNALS => {
                    drain(sig);
                    stop = true;
                }
                STATS => {
                    drain(stats);
                    info!("{}", self.server.stats());
                }
                Token(k) => {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        ready.push(k);
                    }
                    if ev.is_writable() {
                        self.server.touch(k);
                    }
                }
            }
        }
        ready.sort_unstable();
        ready.dedup();
        for &k in &ready {
            if self.read(k) {
                self.pending.push(k);
            }
        }
        self.server.returns();
        self.server.dispatch();
        self.server.sync();
        self.server.send_confirms();
        self.server.timers();
        self.pending.append(&mut self.server.unblocked);
        self.flush_all();
        self.reap();
        Ok(stop)
    }

    /// Accepts every pending connection of listener `i`.
    fn accept(&mut self, i: usize) {
        loop {
            let Some(listener) = self.listeners.get(i) else {
                return;
            };
            match listener.accept() {
                Ok((sock, peer)) => {
                    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; logs
                    // and checks use the plain IPv4 address, as RabbitMQ shows it.
                    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                    if self.server.conns.len() >= self.server.config.max_connections {
                        warn!(
                            "{peer}: refusing connection: limit of {} connections reached",
                            self.server.config.max_connections
                        );
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                        continue;
                    }
                    let mut t = Transport::tcp(sock);
                    let key = self.server.conns.vacant_key();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut t, Token(key), Interest::READABLE)
                    {
                        warn!("{peer}: cannot register socket: {e}");
                        continue;
                    }
                    self.server.open(peer, Some(t));
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

    /// Reads what the socket has (a bounded number of big reads) and handles the frames.
    /// Returns true when the connection must be visited again without a new event:
    /// readiness is edge-triggered, so stopping before the socket is drained (read or
    /// frame budget spent) means nobody will tell us again.
    fn read(&mut self, key: usize) -> bool {
        for _ in 0..READS_PER_TURN {
            let Some(c) = self.server.conns.get_mut(key) else {
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
            if self.server.is_blocked(key) {
                return false;
            }
            let Some(c) = self.server.conns.get_mut(key) else {
                return false;
            };
            // Input left over from a spent frame budget is handled before reading
            // more, so a flooding publisher cannot grow the read buffer without bound.
            // Any leftover counts, however short: the socket may be empty, and then no
            // event will ever bring us back to it. (A partial frame costs one header check.)
            if !c.input().is_empty() && self.server.input(key) {
                return true;
            }
            let Some(c) = self.server.conns.get_mut(key) else {
                return false;
            };
            match c.read_socket(READ_MIN) {
                Ok(None) => return false,
                Ok(Some((0, _))) => {
                    self.server.input(key);
                    self.server.lost(key);
                    return false;
                }
                Ok(Some((n, offered))) => {
                    if self.server.input(key) {
                        return true;
                    }
                    if n < offered {
                        // A short read emptied the socket: the next byte brings an event.
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    info!("read error: {e}");
                    self.server.lost(key);
                    return false;
                }
            }
        }
        true
    }

    /// The flush phase: vectored writes for every connection that gained output.
    fn flush_all(&mut self) {
        let mut keys = std::mem::take(&mut self.flush);
        self.server.take_touched(&mut keys);
        for &k in &keys {
            let Some(c) = self.server.conns.get_mut(k) else {
                continue;
            };
            let Some(sock) = c.transport.as_mut() else {
                continue;
            };
            if c.out.is_empty() && !c.want_write {
                continue;
            }
            let before = c.out.len();
            match c.out.flush_to(sock) {
                Ok(done) => {
                    let wrote = c.out.len() < before;
                    if done == c.want_write {
                        c.want_write = !done;
                        let interest = if done {
                            Interest::READABLE
                        } else {
                            Interest::READABLE | Interest::WRITABLE
                        };
                        let _ = self.poll.registry().reregister(sock, Token(k), interest);
                    }
                    let was_throttled = c.throttled;
                    self.server.flushed(k, wrote);
                    // A publisher we stopped reading for backpressure is read again.
                    if was_throttled || before >= HIGH_WATER {
                        self.pending.push(k);
                    }
                }
                Err(e) => {
                    info!("{}: write error: {e}", c.peer);
                    self.server.lost(k);
                }
            }
        }
        // Kept for the reap phase of this turn.
        self.flush = keys;
    }

    /// The reap phase: closed connections are flushed one last time and removed.
    fn reap(&mut self) {
        // Only connections touched this turn can have closed: every path that closes one
        // touches it (see `Server::touch`), so this costs nothing per idle connection.
        let keys = std::mem::take(&mut self.flush);
        for &k in &keys {
            if !self.server.conns.get(k).is_some_and(|c| c.is_closed()) {
                continue;
            }
            if let Some(mut c) = self.server.remove(k) {
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
        self.pending.retain(|k| self.server.conns.contains(*k));
    }

    /// Graceful stop: 320 CONNECTION_FORCED to everyone, a short wait for close-ok, flush.
    fn stop(&mut self) {
        info!(
            "shutting down: closing {} connections",
            self.server.conns.len()
        );
        self.server.shutdown();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut events = Events::with_capacity(256);
        while !self.server.conns.is_empty() && Instant::now() < deadline {
            self.flush_all();
            self.reap();
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
            self.server.now = Instant::now();
            let keys: Vec<usize> = events
                .iter()
                .map(|e| e.token().0)
                .filter(|k| *k < FIRST_LISTENER)
                .collect();
            for k in keys {
                self.read(k);
            }
        }
        self.flush_all();
        self.server.close_store();
        info!("stopped");
    }
}
