//! HTTP/1.1 for the management plane: requests read off a byte buffer, responses
//! serialised into bytes. Pure, like the AMQP codec: no socket here. The reactor feeds an
//! [`conn::HttpConn`]'s input to a [`RequestReader`] and writes what the handler answered.
//!
//! What we take from a peer is bounded ([`Limits`]): the head's size and header count,
//! the body's size (32 MiB, room for a definitions file), and (in `conn`) the time a peer
//! may take to send a head or a body. A request we cannot serve gets its status and a
//! `Connection: close`; the reader never panics on any input (a fuzz target runs it).
//!
//! A long list can be answered as a [`BodyStream`]: rendered a batch per loop turn and
//! sent with chunked transfer encoding, so 100,000 queues never stall AMQP for the
//! seconds their JSON takes to build.
//!
//! Doors: uses nothing of the broker but the `Server` type a stream renders from; `mgmt`
//! builds on it.

pub mod assets;
pub mod conn;

use bytes::{Buf, Bytes, BytesMut};
use std::fmt::Write as _;

/// Bounds on what one request may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers together.
    pub max_head: usize,
    pub max_headers: usize,
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_headers: 64,
            max_body: 32 * 1024 * 1024,
        }
    }
}

/// Why a request cannot be read; each is answered with its status and the connection is
/// closed, since the framing of what follows is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// A malformed request line or header.
    Malformed,
    /// A version other than HTTP/1.0 or HTTP/1.1 (cowboy's 505).
    Version,
    /// The head is larger than `max_head` or has more than `max_headers` headers.
    HeadTooLarge,
    /// `Content-Length` (or the chunks' total) over `max_body`.
    BodyTooLarge,
    /// A `Content-Length` that is not a number, or two that disagree.
    BadLength,
    /// A malformed chunk size line or chunk terminator.
    BadChunk,
    /// A `Transfer-Encoding` other than chunked.
    UnsupportedEncoding,
    /// The peer took too long over a head or a body (set by the connection).
    Timeout,
}

impl HttpError {
    pub fn status(self) -> u16 {
        match self {
            HttpError::Malformed | HttpError::BadLength | HttpError::BadChunk => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::UnsupportedEncoding => 501,
            HttpError::Version => 505,
            HttpError::Timeout => 408,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            HttpError::Malformed => "malformed HTTP request",
            HttpError::Version => "HTTP version not supported",
            HttpError::HeadTooLarge => "request head too large or too many headers",
            HttpError::BodyTooLarge => "request body too large",
            HttpError::BadLength => "bad Content-Length",
            HttpError::BadChunk => "malformed chunked body",
            HttpError::UnsupportedEncoding => "unsupported Transfer-Encoding",
            HttpError::Timeout => "request timed out",
        }
    }
}

/// One request, owned (management requests are rare next to AMQP frames: a copy of the
/// head's strings costs nothing that matters).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path as sent, still percent-encoded (segments are decoded one by one, so an
    /// encoded `/` inside a vhost name stays inside its segment).
    pub path: String,
    /// Query parameters, decoded (`+` is a space).
    pub query: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// HTTP/1.0 without keep-alive, or `Connection: close`.
    pub close: bool,
}

impl Request {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path's segments, each percent-decoded (`/api/queues/%2F/q` gives
    /// `["api", "queues", "/", "q"]`); empty segments from a trailing `/` are dropped.
    /// None when a segment does not decode to UTF-8.
    pub fn segments(&self) -> Option<Vec<String>> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect()
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set, as in a query string).
/// None for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes a path segment as RabbitMQ's API expects it (`/` is `%2F`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// How the body of the request being read is framed.
#[derive(Debug)]
enum Body {
    Length(usize),
    Chunked(Chunked),
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Default)]
struct Chunked {
    body: Vec<u8>,
    /// Bytes left in the current chunk's data (then its CRLF).
    left: usize,
    in_data: bool,
    /// After the last (zero) chunk: trailers until an empty line.
    trailers: bool,
    /// Trailer bytes read so far (bounded like a head, so a peer cannot keep a
    /// connection busy with an endless trailer section).
    trailer_bytes: usize,
}

/// Longest chunk-size or trailer line, without its CRLF.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes after the last chunk.
const MAX_TRAILERS: usize = 64 * 1024;

/// Reads requests one after another off a connection's input (pipelining-safe: what
/// follows a request stays in the buffer for the next call).
#[derive(Debug, Default)]
pub struct RequestReader {
    limits: Limits,
    /// The head of a request whose body is still arriving.
    pending: Option<(Request, Body)>,
}

impl RequestReader {
    pub fn new(limits: Limits) -> Self {
        RequestReader {
            limits,
            pending: None,
        }
    }

    /// True while a request is partly read (a head without its body, or part of a head).
    pub fn in_body(&self) -> bool {
        self.pending.is_some()
    }

    /// The next complete request in `buf`, consuming it. `Ok(None)`: more bytes are needed
    /// (what was consumed is kept in the reader). Err: the connection must be answered
    /// with the error's status and closed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        if self.pending.is_none() {
            let Some((req, body)) = self.head(buf)? else {
                return Ok(None);
            };
            self.pending = Some((req, body));
        }
        let Some((_, body)) = self.pending.as_mut() else {
            return Ok(None);
        };
        let done = match body {
            Body::Length(n) => {
                if buf.len() < *n {
                    false
                } else {
                    let b = buf.split_to(*n).freeze();
                    if let Some((req, _)) = self.pending.as_mut() {
                        req.body = b;
                    }
                    true
                }
            }
            Body::Chunked(c) => {
                if decode_chunks(c, buf, self.limits.max_body)? {
                    let b = Bytes::from(std::mem::take(&mut c.body));
                    if let Some((req, _)) = self.pending.as_mut() {
                        req.body = b;
                    }
                    true
                } else {
                    false
                }
            }
        };
        if done {
            Ok(self.pending.take().map(|(r, _)| r))
        } else {
            Ok(None)
        }
    }

    /// Parses a complete head off `buf` (consuming it), or None when it is not all in.
    fn head(&self, buf: &mut BytesMut) -> Result<Option<(Request, Body)>, HttpError> {
        // Leading empty lines before a request line are allowed (RFC 9112 §2.2).
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let max = self.limits.max_headers.min(headers.len());
        let mut parsed = httparse::Request::new(&mut headers[..max]);
        // Only the first `max_head` bytes are looked at: what lies beyond cannot belong
        // to a head we take, so whether a bad byte there is seen must not depend on how
        // much of the stream has arrived (the fuzz target found a 400 read whole that
        // was a 431 read in pieces). It also bounds each re-parse of a partial head.
        let window = &buf[..buf.len().min(self.limits.max_head)];
        let len = match parsed.parse(window) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if window.len() >= self.limits.max_head {
                    return Err(HttpError::HeadTooLarge);
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
            Err(httparse::Error::Version) => return Err(HttpError::Version),
            Err(_) => return Err(HttpError::Malformed),
        };
        if len > self.limits.max_head {
            return Err(HttpError::HeadTooLarge);
        }
        let (Some(method), Some(target), Some(version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Err(HttpError::Malformed);
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if !path.starts_with('/') {
            return Err(HttpError::Malformed);
        }
        let mut req = Request {
            method: method.to_owned(),
            path: path.to_owned(),
            query: parse_query(query),
            headers: Vec::with_capacity(parsed.headers.len()),
            body: Bytes::new(),
            close: version == 0,
        };
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for h in parsed.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            let value = String::from_utf8_lossy(h.value).trim().to_owned();
            match name.as_str() {
                "content-length" => {
                    let n: usize = value.parse().map_err(|_| HttpError::BadLength)?;
                    if length.is_some_and(|l| l != n) {
                        return Err(HttpError::BadLength);
                    }
                    length = Some(n);
                }
                "transfer-encoding" => {
                    if value.eq_ignore_ascii_case("chunked") {
                        chunked = true;
                    } else if !value.eq_ignore_ascii_case("identity") {
                        return Err(HttpError::UnsupportedEncoding);
                    }
                }
                "connection" => {
                    for token in value.split(',').map(str::trim) {
                        if token.eq_ignore_ascii_case("close") {
                            req.close = true;
                        } else if token.eq_ignore_ascii_case("keep-alive") {
                            req.close = false;
                        }
                    }
                }
                _ => {}
            }
            req.headers.push((name, value));
        }
        // Both framings at once is a smuggling attempt (RFC 9112 §6.3): refuse it.
        if chunked && length.is_some() {
            return Err(HttpError::BadLength);
        }
        let body = if chunked {
            Body::Chunked(Chunked::default())
        } else {
            let n = length.unwrap_or(0);
            if n > self.limits.max_body {
                return Err(HttpError::BodyTooLarge);
            }
            Body::Length(n)
        };
        buf.advance(len);
        Ok(Some((req, body)))
    }
}

/// Decodes as much of a chunked body as `buf` holds, consuming it. Ok(true) when the
/// last chunk and the trailers are in.
fn decode_chunks(c: &mut Chunked, buf: &mut BytesMut, max: usize) -> Result<bool, HttpError> {
    loop {
        if c.in_data {
            if c.left > 0 {
                let n = c.left.min(buf.len());
                if n == 0 {
                    return Ok(false);
                }
                c.body.extend_from_slice(&buf[..n]);
                buf.advance(n);
                c.left -= n;
                continue;
            }
            if buf.len() < 2 {
                return Ok(false);
            }
            if &buf[..2] != b"\r\n" {
                return Err(HttpError::BadChunk);
            }
            buf.advance(2);
            c.in_data = false;
            continue;
        }
        // A size line (or trailer) has no business being longer than MAX_CHUNK_LINE.
        // The bound holds whether or not the line's end is in yet: a line's fate must
        // not depend on how TCP cut the stream (the fuzz target checks this).
        let window = &buf[..buf.len().min(MAX_CHUNK_LINE + 2)];
        let Some(eol) = window.windows(2).position(|w| w == b"\r\n") else {
            if buf.len() > MAX_CHUNK_LINE + 1 {
                return Err(HttpError::BadChunk);
            }
            return Ok(false);
        };
        if eol > MAX_CHUNK_LINE {
            return Err(HttpError::BadChunk);
        }
        if c.trailers {
            c.trailer_bytes += eol + 2;
            if c.trailer_bytes > MAX_TRAILERS {
                return Err(HttpError::BadChunk);
            }
            buf.advance(eol + 2);
            if eol == 0 {
                return Ok(true);
            }
            continue;
        }
        let line = std::str::from_utf8(&buf[..eol]).map_err(|_| HttpError::BadChunk)?;
        let size = line.split(';').next().unwrap_or("").trim();
        if size.is_empty() || size.len() > 15 {
            return Err(HttpError::BadChunk);
        }
        let size = usize::from_str_radix(size, 16).map_err(|_| HttpError::BadChunk)?;
        buf.advance(eol + 2);
        if size == 0 {
            c.trailers = true;
            continue;
        }
        if c.body.len().saturating_add(size) > max {
            return Err(HttpError::BodyTooLarge);
        }
        c.left = size;
        c.in_data = true;
    }
}

/// A body produced over several turns: each call appends the next batch to `out` and
/// returns true once the body is complete.
pub type BodyStream = Box<dyn FnMut(&crate::server::Server, &mut Vec<u8>) -> bool>;

/// A response, serialised by [`Response::write_to`].
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// When set, the body comes from this stream (chunked), not from `body`.
    pub stream: Option<BodyStream>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("stream", &self.stream.is_some())
            .finish()
    }
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("content-type", content_type.to_owned())],
            body,
            stream: None,
        }
    }

    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        let body = serde_json::to_vec(v).unwrap_or_default();
        Response::new(status, "application/json", body)
    }

    pub fn text(status: u16, s: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", s.as_bytes().to_vec())
    }

    /// A response without a body (204, or 201 with a Location).
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            stream: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the status line, headers and body to `out`. `head_only` for HEAD
    /// requests; `close` adds `Connection: close`.
    pub fn write_to(&self, out: &mut Vec<u8>, head_only: bool, close: bool) {
        let _ = write!(
            Vec_(out),
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (n, v) in &self.headers {
            let _ = write!(Vec_(out), "{n}: {v}\r\n");
        }
        if self.stream.is_some() {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if self.status != 204 && self.status != 304 {
            let _ = write!(Vec_(out), "content-length: {}\r\n", self.body.len());
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }

    /// A JSON array produced `batch` rows at a time: `rows` are rendered by `render`
    /// (with the server as it is when each batch is written) and framed as one chunk
    /// per batch.
    pub fn json_stream<T: 'static>(
        status: u16,
        rows: Vec<T>,
        batch: usize,
        render: impl Fn(&crate::server::Server, T) -> serde_json::Value + 'static,
    ) -> Response {
        let mut rows = rows.into_iter();
        let mut first = true;
        let mut done = false;
        let stream: BodyStream = Box::new(move |server, out| {
            if done {
                return true;
            }
            let mut chunk = Vec::new();
            if first {
                chunk.push(b'[');
            }
            for _ in 0..batch.max(1) {
                let Some(row) = rows.next() else {
                    chunk.push(b']');
                    done = true;
                    break;
                };
                if !first {
                    chunk.push(b',');
                }
                first = false;
                let _ = serde_json::to_writer(&mut chunk, &render(server, row));
            }
            let _ = write!(Vec_(out), "{:x}\r\n", chunk.len());
            out.extend_from_slice(&chunk);
            out.extend_from_slice(b"\r\n");
            if done {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            done
        });
        let mut r = Response::new(status, "application/json", Vec::new());
        r.stream = Some(stream);
        r
    }
}

/// `fmt::Write` into a byte vector.
struct Vec_<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Vec_<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_err(input: &[u8], step: usize) -> Option<HttpError> {
        read_all(input, step).err()
    }

    fn read_all(input: &[u8], step: usize) -> Result<Vec<Request>, HttpError> {
        let mut r = RequestReader::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(req) = r.next(&mut buf)? {
                out.push(req);
            }
        }
        Ok(out)
    }

    #[test]
    fn pipelined_requests_with_length_and_chunked_bodies_in_any_split() {
        let input = b"GET /api/queues/%2F/q%201?page=2&name=a+b HTTP/1.1\r\nHost: x\r\n\r\n\
            PUT /api/queues/%2F/q HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n\
            GET / HTTP/1.0\r\n\r\n";
        for step in [1, 2, 3, 7, 64, input.len()] {
            let reqs = read_all(input, step).unwrap();
            assert_eq!(reqs.len(), 4, "step {step}");
            assert_eq!(reqs[0].method, "GET");
            assert_eq!(
                reqs[0].segments().unwrap(),
                vec!["api", "queues", "/", "q 1"]
            );
            assert_eq!(reqs[0].param("page"), Some("2"));
            assert_eq!(reqs[0].param("name"), Some("a b"));
            assert_eq!(reqs[0].header("host"), Some("x"));
            assert!(!reqs[0].close);
            assert_eq!(&reqs[1].body[..], b"hello");
            assert_eq!(&reqs[2].body[..], b"abcde");
            assert!(reqs[3].close, "HTTP/1.0 without keep-alive closes");
        }
    }

    #[test]
    fn limits_and_malformed_input_are_errors_not_panics() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        assert_eq!(
            read_err(big.as_bytes(), 4096),
            Some(HttpError::HeadTooLarge)
        );
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..80 {
            many.push_str(&format!("H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            read_err(many.as_bytes(), 100),
            Some(HttpError::HeadTooLarge)
        );
        assert_eq!(
            read_err(
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
                10
            ),
            Some(HttpError::BodyTooLarge)
        );
        assert_eq!(
            read_err(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 10),
            Some(HttpError::BadLength)
        );
        assert_eq!(
            read_err(
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                10
            ),
            Some(HttpError::BadLength)
        );
        assert_eq!(
            read_err(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 10),
            Some(HttpError::UnsupportedEncoding)
        );
        assert_eq!(
            read_err(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                10
            ),
            Some(HttpError::BadChunk)
        );
        assert_eq!(
            read_err(b"\x16\x03\x01garbage\r\n\r\n", 3),
            Some(HttpError::Malformed)
        );
        assert_eq!(
            read_err(b"GET x HTTP/1.1\r\n\r\n", 3),
            Some(HttpError::Malformed)
        );
        for v in ["HTTP/9.9", "HTTP/2.0", "HTTX/1.1", "http/1.1"] {
            let req = format!("GET / {v}\r\n\r\n");
            assert_eq!(read_err(req.as_bytes(), 2), Some(HttpError::Version), "{v}");
        }
        assert_eq!(
            read_err(b"GET /\r\n\r\n", 2),
            Some(HttpError::Malformed),
            "no version at all"
        );
    }

    #[test]
    fn percent_coding_round_trips_and_rejects_bad_escapes() {
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(
            percent_decode(&percent_encode("a b/ü%"), false).unwrap(),
            "a b/ü%"
        );
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%2", false), None);
        assert_eq!(percent_decode("%ff", false), None, "not UTF-8");
    }

    #[test]
    fn responses_carry_length_and_close() {
        let mut out = Vec::new();
        Response::text(404, "no").write_to(&mut out, false, true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(s.contains("content-length: 2\r\n"));
        assert!(s.contains("connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\nno"));
    }
}
