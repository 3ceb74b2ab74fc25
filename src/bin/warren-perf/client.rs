//! A blocking AMQP 0-9-1 client connection ([`Conn`]) over std's `TcpStream`, plain or
//! TLS (`tls::Stream`, for `amqps://` / `--tls`): TCP connect, the handshake (PLAIN, heartbeats off, channel 1 opened), synchronous
//! methods, a read buffer walked frame by frame in place, and the polite close.
//!
//! Owns the wire format the tool speaks to a broker outside the hot loops; the
//! producer and consumer loops reuse its buffer and `next_frame` but decode their own
//! fast-path methods. Knows nothing of options beyond the [`Uri`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren::proto::frame::{self, FrameHead, FRAME_METHOD, PROTOCOL_HEADER};
use warren::proto::{channel, connection, FieldTable, FieldValue, Method};

use crate::options::Uri;
use crate::shared::{io_text, is_timeout, CH, FRAME_MAX, READ_BYTES};
use crate::tls::Stream;

pub struct Conn {
    pub stream: Stream,
    pub buf: Vec<u8>,
    start: usize,
    end: usize,
    pub frame_max: u32,
    pub peer: String,
}

fn close_text(code: u16, text: &[u8], class: u16, method: u16) -> String {
    let mut s = format!("{code} {}", String::from_utf8_lossy(text));
    if class != 0 {
        s.push_str(&format!(
            " (in {})",
            warren::proto::method_name(class, method)
        ));
    }
    s
}

impl Conn {
    pub fn from_stream(stream: Stream, peer: String) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: vec![0; READ_BYTES.max(2 * FRAME_MAX as usize)],
            start: 0,
            end: 0,
            frame_max: FRAME_MAX,
            peer,
        }
    }

    pub fn tcp(host: &str, port: u16) -> Result<(TcpStream, String), String> {
        let peer = format!("{host}:{port}");
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {peer}: {}", io_text(&e)))?
            .collect();
        let mut last = format!("cannot connect to {peer}: no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                Ok(s) => return Ok((s, peer)),
                Err(e) => last = format!("cannot connect to {peer}: {}", io_text(&e)),
            }
        }
        Err(last)
    }

    /// Connects, performs the AMQP handshake (heartbeats off) and opens channel 1.
    pub fn open(uri: &Uri, name: &str) -> Result<Conn, String> {
        let (stream, peer) = Conn::tcp(&uri.host, uri.port)?;
        let stream = match &uri.tls {
            Some(config) => Stream::tls(stream, config.clone(), &uri.host)?,
            None => Stream::Tcp(stream),
        };
        let mut c = Conn::from_stream(stream, peer);
        c.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| io_text(&e))?;
        c.write(PROTOCOL_HEADER)?;
        let start = match c.next_method(0)? {
            Method::ConnectionStart(s) => s,
            m => return Err(c.unexpected(&m)),
        };
        if !start
            .mechanisms
            .split(|&b| b == b' ')
            .any(|m| m == b"PLAIN")
        {
            return Err(format!(
                "broker at {} does not offer PLAIN authentication",
                c.peer
            ));
        }
        let mut caps = FieldTable::new();
        for cap in [
            "authentication_failure_close",
            "publisher_confirms",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
        ] {
            caps.insert(Bytes::from(cap), FieldValue::Bool(true));
        }
        let mut props = FieldTable::new();
        props.insert(
            Bytes::from_static(b"product"),
            FieldValue::LongStr(Bytes::from_static(b"warren-perf")),
        );
        props.insert(
            Bytes::from_static(b"connection_name"),
            FieldValue::LongStr(Bytes::from(name.to_string())),
        );
        props.insert(Bytes::from_static(b"capabilities"), FieldValue::Table(caps));
        let response = format!("\0{}\0{}", uri.user, uri.pass);
        c.send(
            0,
            Method::ConnectionStartOk(connection::StartOk {
                client_properties: props,
                mechanism: Bytes::from_static(b"PLAIN"),
                response: Bytes::from(response),
                locale: Bytes::from_static(b"en_US"),
            }),
        )?;
        let tune = match c.next_method(0) {
            Ok(Method::ConnectionTune(t)) => t,
            Ok(m) => return Err(c.unexpected(&m)),
            Err(e) if e.contains("closed the connection") => {
                return Err(format!(
                    "{e} after authentication (wrong user or password for {:?}?)",
                    uri.user
                ))
            }
            Err(e) => return Err(e),
        };
        c.frame_max = if tune.frame_max == 0 {
            FRAME_MAX
        } else {
            tune.frame_max.min(FRAME_MAX)
        };
        c.send(
            0,
            Method::ConnectionTuneOk(connection::TuneOk {
                channel_max: if tune.channel_max == 0 {
                    16
                } else {
                    tune.channel_max.min(16)
                },
                frame_max: c.frame_max,
                heartbeat: 0,
            }),
        )?;
        c.rpc(
            0,
            Method::ConnectionOpen(connection::Open {
                virtual_host: Bytes::from(uri.vhost.clone()),
                ..Default::default()
            }),
            |m| matches!(m, Method::ConnectionOpenOk(_)),
        )?;
        c.rpc(CH, Method::ChannelOpen(channel::Open::default()), |m| {
            matches!(m, Method::ChannelOpenOk(_))
        })?;
        Ok(c)
    }

    pub fn write(&mut self, b: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(b)
            .map_err(|e| format!("write to {}: {}", self.peer, io_text(&e)))
    }

    pub fn send(&mut self, ch: u16, m: Method) -> Result<(), String> {
        let mut b = BytesMut::new();
        frame::write_method(&mut b, ch, &m);
        self.write(&b)
    }

    pub fn unexpected(&self, m: &Method) -> String {
        format!("unexpected {m:?} from {}", self.peer)
    }

    /// Reads more bytes into the buffer (compacting first). `Ok(false)` on a read
    /// timeout.
    pub fn fill(&mut self) -> Result<bool, String> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < READ_BYTES / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(format!("{} closed the connection", self.peer)),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) if is_timeout(&e) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(format!("read from {}: {}", self.peer, io_text(&e))),
        }
    }

    /// The next complete frame in the buffer, if any (consumed).
    #[inline]
    pub fn next_frame(&mut self) -> Result<Option<(FrameHead, Range<usize>)>, String> {
        match frame::parse(&self.buf[self.start..self.end], self.frame_max) {
            Ok(Some(h)) => {
                let p = self.start + 7..self.start + 7 + h.size as usize;
                self.start += h.total_len();
                Ok(Some((h, p)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(format!("framing error from {}: {e}", self.peer)),
        }
    }

    /// Blocks for the next method frame (heartbeats and content skipped); a
    /// connection.close or channel.close from the broker is an error.
    fn next_method(&mut self, _ch: u16) -> Result<Method, String> {
        loop {
            while let Some((h, p)) = self.next_frame()? {
                if h.kind != FRAME_METHOD {
                    continue;
                }
                let m = self.decode_method(p)?;
                check_close(&m)?;
                return Ok(m);
            }
            if !self.fill()? {
                return Err(format!("timed out waiting for {}", self.peer));
            }
        }
    }

    /// Decodes the method frame whose payload is `p` (a range [`Conn::next_frame`]
    /// returned), copied off the read buffer: for the methods the hot loops do not pick
    /// out of the bytes themselves. The error names the peer.
    pub fn decode_method(&self, p: Range<usize>) -> Result<Method, String> {
        let payload = Bytes::copy_from_slice(&self.buf[p]);
        Method::decode(&payload).map_err(|e| format!("bad method from {}: {e}", self.peer))
    }

    pub fn rpc(&mut self, ch: u16, m: Method, ok: fn(&Method) -> bool) -> Result<Method, String> {
        self.send(ch, m)?;
        loop {
            let r = self.next_method(ch)?;
            if ok(&r) {
                return Ok(r);
            }
            if !matches!(r, Method::BasicQosOk(_) | Method::ConnectionBlocked(_)) {
                return Err(self.unexpected(&r));
            }
        }
    }

    /// Sends connection.close and waits (briefly) for close-ok.
    pub fn close(mut self) {
        let _ = self.send(0, normal_close());
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(2)));
        self.drain_until_close_ok();
    }

    fn drain_until_close_ok(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            loop {
                match self.next_frame() {
                    Ok(Some((h, p))) => {
                        if h.kind == FRAME_METHOD
                            && self.buf[p.start..].starts_with(&[0, 10, 0, 51])
                        {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            if self.fill().is_err() {
                return;
            }
        }
    }
}

/// The client's connection.close: 200 OK, not in reply to any method.
pub fn normal_close() -> Method {
    Method::ConnectionClose(connection::Close {
        reply_code: 200,
        reply_text: Bytes::from_static(b"OK"),
        class_id: 0,
        method_id: 0,
    })
}

/// A broker-initiated close as an error message.
pub fn check_close(m: &Method) -> Result<(), String> {
    match m {
        Method::ConnectionClose(c) => Err(format!(
            "connection closed by broker: {}",
            close_text(c.reply_code, &c.reply_text, c.class_id, c.method_id)
        )),
        Method::ChannelClose(c) => Err(format!(
            "channel closed by broker: {}",
            close_text(c.reply_code, &c.reply_text, c.class_id, c.method_id)
        )),
        _ => Ok(()),
    }
}
