//! One HTTP connection: its socket, what it has sent us, what we owe it, and its clocks.
//! The reactor reads into it, hands each complete request to the management plane, and
//! writes the answers in the flush phase, at most [`WRITE_BUDGET`] bytes per turn, so a
//! large response (a definitions export, every queue) never holds up AMQP output.

use bytes::BytesMut;
use std::io::{self, IoSlice, Write};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{BodyStream, HttpError, Limits, Request, RequestReader, Response};
use crate::net::Transport;

/// Bytes written to one HTTP connection per turn (the same as an AMQP connection's
/// output high-water mark).
pub const WRITE_BUDGET: usize = crate::conn::HIGH_WATER;
/// A head must arrive whole this long after its first byte (or after the connection
/// opened, or after the previous answer): a peer dribbling a byte a second is cut off.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A body must arrive whole this long after its head (32 MiB is a fraction of a second
/// on any link a broker is managed over).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// An idle keep-alive connection is closed after this long (cowboy's default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests answered per connection per turn (pipelining fairness).
pub const REQUESTS_PER_TURN: usize = 16;

/// What the listener that accepted a connection serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The management API and the dashboard.
    Management,
    /// Prometheus metrics.
    Prometheus,
}

pub struct HttpConn {
    pub transport: Transport,
    pub peer: SocketAddr,
    pub service: Service,
    pub input: BytesMut,
    reader: RequestReader,
    out: Vec<u8>,
    written: usize,
    /// The body of the answer being written, produced a batch per turn.
    stream: Option<BodyStream>,
    /// Close once the stream is done (the request asked for it).
    close_after_stream: bool,
    /// Close once `out` is written (Connection: close, or an error answered).
    pub close_after: bool,
    /// The peer closed its side, or the socket failed: remove once written.
    pub eof: bool,
    /// When the request being read (or the wait for one) started.
    since: Instant,
    /// Whether WRITABLE interest is registered.
    pub want_write: bool,
}

impl HttpConn {
    pub fn new(transport: Transport, peer: SocketAddr, service: Service, now: Instant) -> Self {
        HttpConn {
            transport,
            peer,
            service,
            input: BytesMut::with_capacity(4096),
            reader: RequestReader::new(Limits::default()),
            out: Vec::new(),
            written: 0,
            stream: None,
            close_after_stream: false,
            close_after: false,
            eof: false,
            since: now,
            want_write: false,
        }
    }

    /// Reads what the socket has, up to `max` bytes. Ok(0) is end of stream.
    pub fn read_socket(&mut self, max: usize) -> io::Result<usize> {
        let mut total = 0;
        while total < max {
            self.input.reserve(16 * 1024);
            match self.transport.read_into(&mut self.input) {
                Ok((0, _)) => {
                    self.eof = true;
                    return Ok(total);
                }
                // Read on after a short read too (one more call, which would-blocks):
                // a FIN that came with the last bytes has no event of its own.
                Ok((n, _)) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// The next complete request in the input, if any and if we may take one now (not
    /// while an answer is being written past the budget: a pipelining client that does
    /// not read is not read either). Err: answer with the error and close.
    pub fn next_request(&mut self, now: Instant) -> Result<Option<Request>, HttpError> {
        if self.close_after || self.stream.is_some() || self.pending_out() >= WRITE_BUDGET {
            return Ok(None);
        }
        let r = self.reader.next(&mut self.input)?;
        if r.is_some() {
            self.since = now;
        }
        Ok(r)
    }

    /// Queues `resp`; `head_only` for a HEAD request.
    pub fn respond(&mut self, mut resp: Response, head_only: bool, close: bool) {
        if self.written > 0 && self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        resp.write_to(&mut self.out, head_only, close);
        match resp.stream.take() {
            Some(s) if !head_only => {
                self.stream = Some(s);
                self.close_after_stream = close;
            }
            _ if close => self.close_after = true,
            _ => {}
        }
    }

    /// Whether a streamed body still has batches to produce.
    pub fn streaming(&self) -> bool {
        self.stream.is_some()
    }

    /// Produces the next batch of a streamed body when the output has room. Returns
    /// true when it produced something.
    pub fn produce(&mut self, server: &crate::server::Server) -> bool {
        if self.pending_out() >= WRITE_BUDGET / 4 {
            return false;
        }
        let Some(s) = self.stream.as_mut() else {
            return false;
        };
        if self.written > 0 && self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        if s(server, &mut self.out) {
            self.stream = None;
            if self.close_after_stream {
                self.close_after = true;
            }
        }
        true
    }

    /// Answers a request that cannot be read and closes.
    pub fn fail(&mut self, e: HttpError) {
        let body = serde_json::json!({"error": "bad_request", "reason": e.reason()});
        self.stream = None;
        self.respond(Response::json(e.status(), &body), false, true);
        self.input.clear();
    }

    pub fn pending_out(&self) -> usize {
        self.out.len() - self.written
    }

    /// Writes up to `WRITE_BUDGET` bytes. Ok(true): everything queued is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        let mut budget = WRITE_BUDGET;
        while self.written < self.out.len() {
            if budget == 0 {
                return Ok(false);
            }
            let end = self.out.len().min(self.written + budget);
            match self
                .transport
                .write_vectored(&[IoSlice::new(&self.out[self.written..end])])
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    budget -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.written = 0;
        // TLS records the socket has not taken yet (handshake, tail of a response).
        self.transport.flush_pending()
    }

    /// The socket wants WRITABLE: bytes left over after a would-block.
    pub fn blocked_on_write(&self) -> bool {
        self.pending_out() > 0 || self.transport.wants_write()
    }

    /// Done: closing and everything written, or the peer gone.
    pub fn finished(&self) -> bool {
        (self.close_after || self.eof) && self.pending_out() == 0
    }

    /// Whether the peer has overstayed: a head or body too slow, or idle too long.
    /// Some(true) when it must get a 408; Some(false) to close silently (idle).
    pub fn timed_out(&self, now: Instant) -> Option<bool> {
        if self.close_after || self.stream.is_some() || self.pending_out() > 0 {
            return None;
        }
        let waited = now.saturating_duration_since(self.since);
        if self.reader.in_body() {
            (waited > BODY_TIMEOUT).then_some(true)
        } else if !self.input.is_empty() {
            (waited > HEAD_TIMEOUT).then_some(true)
        } else {
            (waited > IDLE_TIMEOUT).then_some(false)
        }
    }

    /// Marks the start of a wait for a head when the first byte of one arrives after an
    /// idle spell (so the head clock does not count the idle time).
    pub fn note_input(&mut self, now: Instant, was_empty: bool) {
        if was_empty && !self.reader.in_body() {
            self.since = now;
        }
    }
}
