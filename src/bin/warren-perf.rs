//! `warren-perf`: an AMQP 0-9-1 load generator in the spirit of RabbitMQ's PerfTest,
//! built to have a much higher ceiling than the broker it measures.
//!
//! Threads, all blocking std I/O (no async runtime):
//! - one thread per producer: publishes from a pre-built buffer of whole publishes
//!   (method + header + body frames) in which only the 8-byte timestamps are patched,
//!   with one `write_all` per batch (up to 256 KB, or one rate tick's worth);
//! - one reader thread per producer (a clone of its socket): confirms, returns and
//!   broker-initiated closes;
//! - one thread per consumer: reads 256 KB at a time and walks the frames in place
//!   with `frame::parse`, decoding only the delivery tag and the body timestamp;
//!   acks are appended to a buffer and written once per read;
//! - the main thread: setup, one report line per second, the summary.
//!
//! Latency: every body starts with the send time (nanoseconds since a process-wide
//! epoch, big-endian); consumers record `now - sent` into a log-linear histogram
//! (1/64 relative precision) kept per thread and merged once per second.
//!
//! `--sink` and `--source` measure the tool itself against local TCP peers that
//! discard everything / replay pre-built deliveries.

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren::proto::frame::{
    self, FrameHead, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER,
};
use warren::proto::{
    basic, channel, confirm, connection, exchange, queue, BasicProperties, FieldTable, FieldValue,
    Method,
};

// ---------------------------------------------------------------------------
// Globals: the clock epoch, the stop flag, counters.

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Set when the run ends: workers stop sending/counting and close their connections.
static STOP: AtomicBool = AtomicBool::new(false);
static SENT: AtomicU64 = AtomicU64::new(0);
static RECEIVED: AtomicU64 = AtomicU64::new(0);
static CONFIRMED: AtomicU64 = AtomicU64::new(0);
static NACKED: AtomicU64 = AtomicU64::new(0);
static RETURNED: AtomicU64 = AtomicU64::new(0);
/// Producers that have sent their `-C` messages (and seen them confirmed).
static PRODUCERS_DONE: AtomicUsize = AtomicUsize::new(0);

/// A body timestamp meaning "do not record latency" (pre-filled messages).
const NO_TIMESTAMP: u64 = u64::MAX;
/// Bytes per producer write (unlimited rate) and per consumer read.
const BATCH_BYTES: usize = 256 * 1024;
const READ_BYTES: usize = 256 * 1024;
/// The frame-max we ask for (the broker's, if lower).
const FRAME_MAX: u32 = 131_072;
/// The channel every connection uses.
const CH: u16 = 1;
/// How often blocked readers wake up to look at [`STOP`].
const POLL: Duration = Duration::from_millis(100);

fn now_nanos() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Prints one line to stderr and exits non-zero. Callable from any thread.
fn fatal(msg: impl std::fmt::Display) -> ! {
    static ONCE: Mutex<()> = Mutex::new(());
    let _g = ONCE.lock();
    let _ = io::stdout().flush();
    eprintln!("warren-perf: {msg}");
    std::process::exit(1);
}

/// `io::Error` text without the " (os error N)" suffix.
fn io_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ---------------------------------------------------------------------------
// Latency histogram: log-linear buckets, HdrHistogram-like, no dependency.

/// Values below `2 * SUB` get exact buckets; above, each power of two is split into
/// `SUB` buckets (relative error < 1/64).
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize) * SUB;

#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            counts: vec![0; BUCKETS],
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    #[inline]
    fn index(v: u64) -> usize {
        if v < (2 * SUB) as u64 {
            v as usize
        } else {
            let msb = 63 - v.leading_zeros();
            let shift = msb - SUB_BITS;
            let mantissa = (v >> shift) as usize; // in [SUB, 2 * SUB)
            (shift as usize + 1) * SUB + (mantissa - SUB)
        }
    }

    /// The midpoint of bucket `i`.
    fn value_at(i: usize) -> u64 {
        if i < 2 * SUB {
            i as u64
        } else {
            let shift = (i / SUB - 1) as u32;
            let mantissa = (i % SUB + SUB) as u64;
            (mantissa << shift) + ((1u64 << shift) >> 1)
        }
    }

    #[inline]
    fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    #[inline]
    fn record_n(&mut self, v: u64, n: u64) {
        self.counts[Self::index(v)] += n;
        self.count += n;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn merge(&mut self, o: &Hist) {
        if o.count == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    fn clear(&mut self) {
        if self.count != 0 {
            self.counts.iter_mut().for_each(|c| *c = 0);
        }
        self.count = 0;
        self.min = u64::MAX;
        self.max = 0;
    }

    /// The value at quantile `q` (0..=1), clamped to the observed min and max.
    fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if q <= 0.0 {
            return self.min;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value_at(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// min/p50/p75/p95/p99/max in microseconds.
    fn summary_us(&self) -> [f64; 6] {
        let us = |ns: u64| ns as f64 / 1000.0;
        if self.count == 0 {
            return [0.0; 6];
        }
        [
            us(self.min),
            us(self.quantile(0.50)),
            us(self.quantile(0.75)),
            us(self.quantile(0.95)),
            us(self.quantile(0.99)),
            us(self.max),
        ]
    }
}

/// Per-thread histograms, registered so that the reporter can merge them.
#[derive(Default)]
struct HistRegistry {
    hists: Mutex<Vec<Arc<Mutex<Hist>>>>,
}

impl HistRegistry {
    fn register(&self) -> Arc<Mutex<Hist>> {
        let h = Arc::new(Mutex::new(Hist::new()));
        self.hists.lock().unwrap().push(h.clone());
        h
    }

    /// Moves every thread's samples into `into` (and leaves them empty).
    fn drain_into(&self, into: &mut Hist) {
        for h in self.hists.lock().unwrap().iter() {
            let mut h = h.lock().unwrap();
            into.merge(&h);
            h.clear();
        }
    }
}

static CONSUMER_LAT: OnceLock<HistRegistry> = OnceLock::new();
static CONFIRM_LAT: OnceLock<HistRegistry> = OnceLock::new();

fn consumer_lat() -> &'static HistRegistry {
    CONSUMER_LAT.get_or_init(HistRegistry::default)
}

fn confirm_lat() -> &'static HistRegistry {
    CONFIRM_LAT.get_or_init(HistRegistry::default)
}

// ---------------------------------------------------------------------------
// Options.

#[derive(Clone, Debug)]
struct Uri {
    user: String,
    pass: String,
    host: String,
    port: u16,
    vhost: String,
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

fn parse_uri(s: &str) -> Result<Uri, String> {
    let rest = s
        .strip_prefix("amqp://")
        .ok_or_else(|| format!("uri {s:?} must start with amqp://"))?;
    let (auth, rest) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (user, pass) = match auth {
        Some(a) => match a.split_once(':') {
            Some((u, p)) => (percent_decode(u)?, percent_decode(p)?),
            None => (percent_decode(a)?, String::new()),
        },
        None => ("guest".to_string(), "guest".to_string()),
    };
    let (hostport, vhost) = match rest.split_once('/') {
        Some((h, v)) => (
            h,
            if v.is_empty() {
                "/".into()
            } else {
                percent_decode(v)?
            },
        ),
        None => (rest, "/".to_string()),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        // [ipv6]:port
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| format!("bad host in uri {s:?}"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    let port = if port.is_empty() {
        5672
    } else {
        port.parse()
            .map_err(|_| format!("bad port {port:?} in uri {s:?}"))?
    };
    let host = if host.is_empty() {
        "127.0.0.1".to_string()
    } else {
        host
    };
    Ok(Uri {
        user,
        pass,
        host,
        port,
        vhost,
    })
}

#[derive(Clone, Debug)]
struct Opts {
    uri: Uri,
    producers: usize,
    consumers: usize,
    size: usize,
    rate: f64,
    duration: Option<f64>,
    count: u64,
    qos: u16,
    autoack: bool,
    multi_ack: u64,
    confirm: u64,
    persistent: bool,
    mandatory: bool,
    queue: String,
    exchange: String,
    kind: String,
    routing_key: String,
    queues: usize,
    pre_fill: u64,
    json: Option<String>,
    quiet: bool,
    predeclared: bool,
    keep: bool,
    sink: bool,
    source: bool,
}

fn usage(o: &getopts::Options) -> String {
    o.usage(
        "Usage: warren-perf [options]\n\n\
         AMQP 0-9-1 load generator (PerfTest-like). Examples:\n  \
         warren-perf -x 1 -y 1 -s 16 -a -z 10\n  \
         warren-perf -x 1 -y 1 -q 1000 -A 100 -z 10\n  \
         warren-perf -x 1 -y 1 -r 10000 -a -z 10\n  \
         warren-perf --sink -x 1 -z 5        (the tool's own producing ceiling)\n  \
         warren-perf --source -y 1 -a -z 5   (the tool's own consuming ceiling)",
    )
}

fn parse_opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = getopts::Options::new();
    o.optopt(
        "h",
        "uri",
        "broker URI (default amqp://guest:guest@127.0.0.1:5672/%2f)",
        "URI",
    );
    o.optopt("x", "producers", "producer connections (default 1)", "N");
    o.optopt(
        "y",
        "consumers",
        "consumer connections per queue (default 1)",
        "N",
    );
    o.optopt(
        "s",
        "size",
        "body size in bytes (min 12, default 12)",
        "BYTES",
    );
    o.optopt(
        "r",
        "rate",
        "msg/s per producer, 0 = unlimited (default 0)",
        "RATE",
    );
    o.optopt("z", "time", "run duration in seconds", "SECONDS");
    o.optopt(
        "C",
        "pmessages",
        "messages per producer; the run ends when all are sent and received",
        "N",
    );
    o.optopt(
        "q",
        "qos",
        "consumer prefetch count, 0 = no basic.qos (default 0)",
        "N",
    );
    o.optflag("a", "autoack", "consume with no-ack");
    o.optopt(
        "A",
        "multi-ack-every",
        "manual acks: ack with multiple=true every N messages; 1 = ack each (default 1)",
        "N",
    );
    o.optopt(
        "c",
        "confirm",
        "publisher confirms with at most N unconfirmed messages per producer",
        "N",
    );
    o.optmulti(
        "f",
        "flag",
        "message flag: persistent | mandatory (repeatable)",
        "FLAG",
    );
    o.optopt("u", "queue", "queue name (default warren-perf)", "NAME");
    o.optopt(
        "e",
        "exchange",
        "exchange name, \"\" = default exchange (default warren-perf)",
        "NAME",
    );
    o.optopt("t", "type", "exchange type (default direct)", "TYPE");
    o.optopt(
        "k",
        "routing-key",
        "routing key (default: the queue name)",
        "KEY",
    );
    o.optopt(
        "",
        "queues",
        "queues bound to the exchange, each with -y consumers (default 1)",
        "N",
    );
    o.optopt(
        "",
        "pre-fill",
        "publish N messages before consumers start, then time the drain",
        "N",
    );
    o.optopt("", "json", "write the summary as JSON to FILE", "FILE");
    o.optflag("", "quiet", "no per-second lines");
    o.optflag(
        "p",
        "predeclared",
        "do not declare, purge, bind or delete the exchange and queues (default: declare and purge them, delete them at the end)",
    );
    o.optflag(
        "",
        "keep",
        "do not delete the queues and exchange at the end",
    );
    o.optflag(
        "",
        "sink",
        "self-test: producers write into a local socket that discards",
    );
    o.optflag(
        "",
        "source",
        "self-test: consumers read pre-built deliveries from a local socket",
    );
    o.optflag("", "help", "print this help");
    let m = match o.parse(&args) {
        Ok(m) => m,
        Err(e) => fatal(format!("{e} (try --help)")),
    };
    if m.opt_present("help") {
        print!("{}", usage(&o));
        std::process::exit(0);
    }
    if !m.free.is_empty() {
        fatal(format!("unexpected argument {:?} (try --help)", m.free[0]));
    }
    fn num<T: std::str::FromStr>(m: &getopts::Matches, name: &str, default: T) -> T {
        match m.opt_str(name) {
            None => default,
            Some(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|_| fatal(format!("bad value {s:?} for --{name}"))),
        }
    }
    let uri_s = m
        .opt_str("uri")
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let uri = parse_uri(&uri_s).unwrap_or_else(|e| fatal(e));
    let mut persistent = false;
    let mut mandatory = false;
    for f in m.opt_strs("flag") {
        match f.as_str() {
            "persistent" => persistent = true,
            "mandatory" => mandatory = true,
            other => fatal(format!(
                "unknown flag {other:?} (expected persistent or mandatory)"
            )),
        }
    }
    let size: usize = num(&m, "size", 12);
    if size < 12 {
        fatal("body size (-s) must be at least 12 bytes");
    }
    let queue = m.opt_str("queue").unwrap_or_else(|| "warren-perf".into());
    let exchange = m
        .opt_str("exchange")
        .unwrap_or_else(|| "warren-perf".into());
    let routing_key = m.opt_str("routing-key").unwrap_or_else(|| queue.clone());
    let duration: Option<f64> = m.opt_str("time").map(|_| num(&m, "time", 0.0));
    let qos: u16 = num(&m, "qos", 0);
    let mut multi_ack: u64 = num(&m, "multi-ack-every", 1);
    if multi_ack == 0 {
        multi_ack = 1;
    }
    if qos > 0 && multi_ack > u64::from(qos) {
        eprintln!(
            "warren-perf: note: -A {multi_ack} exceeds -q {qos} (would stall); acking every {qos}"
        );
        multi_ack = u64::from(qos);
    }
    let queues: usize = num(&m, "queues", 1);
    if queues == 0 {
        fatal("--queues must be at least 1");
    }
    Opts {
        uri,
        producers: num(&m, "producers", 1),
        consumers: num(&m, "consumers", 1),
        size,
        rate: num(&m, "rate", 0.0),
        duration,
        count: num(&m, "pmessages", 0),
        qos,
        autoack: m.opt_present("autoack"),
        multi_ack,
        confirm: num(&m, "confirm", 0),
        persistent,
        mandatory,
        queue,
        exchange,
        kind: m.opt_str("type").unwrap_or_else(|| "direct".into()),
        routing_key,
        queues,
        pre_fill: num(&m, "pre-fill", 0),
        json: m.opt_str("json"),
        quiet: m.opt_present("quiet"),
        predeclared: m.opt_present("predeclared"),
        keep: m.opt_present("keep"),
        sink: m.opt_present("sink"),
        source: m.opt_present("source"),
    }
}

impl Opts {
    fn queue_names(&self) -> Vec<String> {
        if self.queues == 1 {
            vec![self.queue.clone()]
        } else {
            (0..self.queues)
                .map(|i| format!("{}-{i}", self.queue))
                .collect()
        }
    }

    /// Copies of each message that reach queues.
    fn copies_per_message(&self) -> u64 {
        if self.exchange.is_empty() {
            1
        } else {
            self.queues as u64
        }
    }

    /// The routing key producer `i` publishes with.
    fn routing_key_for(&self, i: usize) -> String {
        if self.exchange.is_empty() && self.queues > 1 {
            self.queue_names()[i % self.queues].clone()
        } else {
            self.routing_key.clone()
        }
    }
}

// ---------------------------------------------------------------------------
// A blocking AMQP connection: handshake and synchronous methods.

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    frame_max: u32,
    peer: String,
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
    fn from_stream(stream: TcpStream, peer: String) -> Conn {
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

    fn tcp(host: &str, port: u16) -> Result<(TcpStream, String), String> {
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
    fn open(uri: &Uri, name: &str) -> Result<Conn, String> {
        let (stream, peer) = Conn::tcp(&uri.host, uri.port)?;
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

    fn write(&mut self, b: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(b)
            .map_err(|e| format!("write to {}: {}", self.peer, io_text(&e)))
    }

    fn send(&mut self, ch: u16, m: Method) -> Result<(), String> {
        let mut b = BytesMut::new();
        frame::write_method(&mut b, ch, &m);
        self.write(&b)
    }

    fn unexpected(&self, m: &Method) -> String {
        format!("unexpected {m:?} from {}", self.peer)
    }

    /// Reads more bytes into the buffer (compacting first). `Ok(false)` on a read
    /// timeout.
    fn fill(&mut self) -> Result<bool, String> {
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
    fn next_frame(&mut self) -> Result<Option<(FrameHead, Range<usize>)>, String> {
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
                let payload = Bytes::copy_from_slice(&self.buf[p]);
                let m = Method::decode(&payload)
                    .map_err(|e| format!("bad method from {}: {e}", self.peer))?;
                check_close(&m)?;
                return Ok(m);
            }
            if !self.fill()? {
                return Err(format!("timed out waiting for {}", self.peer));
            }
        }
    }

    fn rpc(&mut self, ch: u16, m: Method, ok: fn(&Method) -> bool) -> Result<Method, String> {
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
    fn close(mut self) {
        let _ = self.send(
            0,
            Method::ConnectionClose(connection::Close {
                reply_code: 200,
                reply_text: Bytes::from_static(b"OK"),
                class_id: 0,
                method_id: 0,
            }),
        );
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

/// A broker-initiated close as an error message.
fn check_close(m: &Method) -> Result<(), String> {
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

// ---------------------------------------------------------------------------
// Topology.

fn declare_topology(c: &mut Conn, o: &Opts) -> Result<(), String> {
    if o.predeclared {
        return Ok(());
    }
    if !o.exchange.is_empty() && !o.exchange.starts_with("amq.") {
        c.rpc(
            CH,
            Method::ExchangeDeclare(exchange::Declare {
                exchange: Bytes::from(o.exchange.clone()),
                kind: Bytes::from(o.kind.clone()),
                durable: o.persistent,
                ..Default::default()
            }),
            |m| matches!(m, Method::ExchangeDeclareOk(_)),
        )?;
    }
    for q in o.queue_names() {
        c.rpc(
            CH,
            Method::QueueDeclare(queue::Declare {
                queue: Bytes::from(q.clone()),
                durable: o.persistent,
                ..Default::default()
            }),
            |m| matches!(m, Method::QueueDeclareOk(_)),
        )?;
        c.rpc(
            CH,
            Method::QueuePurge(queue::Purge {
                queue: Bytes::from(q.clone()),
                ..Default::default()
            }),
            |m| matches!(m, Method::QueuePurgeOk(_)),
        )?;
        if !o.exchange.is_empty() {
            c.rpc(
                CH,
                Method::QueueBind(queue::Bind {
                    queue: Bytes::from(q.clone()),
                    exchange: Bytes::from(o.exchange.clone()),
                    routing_key: Bytes::from(o.routing_key.clone()),
                    ..Default::default()
                }),
                |m| matches!(m, Method::QueueBindOk(_)),
            )?;
        }
    }
    Ok(())
}

fn delete_topology(c: &mut Conn, o: &Opts) -> Result<(), String> {
    for q in o.queue_names() {
        c.rpc(
            CH,
            Method::QueueDelete(queue::Delete {
                queue: Bytes::from(q),
                ..Default::default()
            }),
            |m| matches!(m, Method::QueueDeleteOk(_)),
        )?;
    }
    if !o.exchange.is_empty() && !o.exchange.starts_with("amq.") {
        c.rpc(
            CH,
            Method::ExchangeDelete(exchange::Delete {
                exchange: Bytes::from(o.exchange.clone()),
                ..Default::default()
            }),
            |m| matches!(m, Method::ExchangeDeleteOk(_)),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Producers.

/// The bytes of one publish (method, header and body frames) and where the body's
/// timestamp sits in them.
fn publish_template(o: &Opts, routing_key: &str, frame_max: u32) -> (Vec<u8>, usize) {
    let mut b = BytesMut::new();
    frame::write_method(
        &mut b,
        CH,
        &Method::BasicPublish(basic::Publish {
            ticket: 0,
            exchange: Bytes::from(o.exchange.clone()),
            routing_key: Bytes::from(routing_key.to_string()),
            mandatory: o.mandatory,
            immediate: false,
        }),
    );
    let props = BasicProperties {
        delivery_mode: o.persistent.then_some(2),
        ..Default::default()
    }
    .to_raw();
    frame::write_content_header(&mut b, CH, o.size as u64, &props);
    let ts_at = b.len() + 7;
    let mut body = vec![0u8; o.size];
    body[8..12].copy_from_slice(b"wrn!");
    frame::write_body(&mut b, CH, &body, frame_max);
    (b.to_vec(), ts_at)
}

/// Confirm bookkeeping shared by a producer and its reader thread.
struct Confirms {
    inner: Mutex<ConfirmInner>,
    /// Messages acked or nacked so far (a count, not a tag).
    done: AtomicU64,
    producer: OnceLock<thread::Thread>,
}

#[derive(Default)]
struct ConfirmInner {
    /// (first seq, last seq, send time) per batch, oldest first.
    batches: VecDeque<(u64, u64, u64)>,
    /// Every tag <= watermark is confirmed.
    watermark: u64,
    /// Confirmed tags above the watermark (single acks out of order).
    singles: BTreeSet<u64>,
    done: u64,
}

impl Confirms {
    fn new() -> Confirms {
        Confirms {
            inner: Mutex::new(ConfirmInner::default()),
            done: AtomicU64::new(0),
            producer: OnceLock::new(),
        }
    }

    fn confirm(&self, tag: u64, multiple: bool, now: u64, hist: &mut Hist) {
        let mut g = self.inner.lock().unwrap();
        let i = &mut *g;
        if tag <= i.watermark {
            return;
        }
        if multiple {
            let above: Vec<u64> = i.singles.range(..=tag).copied().collect();
            i.done += tag - i.watermark - above.len() as u64;
            for t in above {
                i.singles.remove(&t);
            }
            i.watermark = tag;
        } else if i.singles.insert(tag) {
            i.done += 1;
        }
        while i.singles.remove(&(i.watermark + 1)) {
            i.watermark += 1;
        }
        while let Some(&(first, last, ts)) = i.batches.front() {
            if last <= i.watermark {
                hist.record_n(now.saturating_sub(ts), last - first + 1);
                i.batches.pop_front();
            } else {
                if first <= i.watermark {
                    hist.record_n(now.saturating_sub(ts), i.watermark - first + 1);
                    i.batches.front_mut().unwrap().0 = i.watermark + 1;
                }
                break;
            }
        }
        self.done.store(i.done, Ordering::Release);
        drop(g);
        if let Some(t) = self.producer.get() {
            t.unpark();
        }
    }
}

struct ProducerCfg {
    template: Vec<u8>,
    ts_at: usize,
    rate: f64,
    count: u64,
    window: u64,
    /// Pre-fill: no timestamps, no latency.
    no_ts: bool,
}

/// The producer hot loop: writes batches of pre-built publishes, patching only the
/// timestamps. Returns the number sent.
fn produce(
    stream: &mut TcpStream,
    cfg: &ProducerCfg,
    confirms: Option<&Confirms>,
    count_global: bool,
) -> Result<(u64, bool), String> {
    let per = cfg.template.len();
    let max_batch = (BATCH_BYTES / per).max(1);
    let mut buf = cfg.template.repeat(max_batch);
    let started = Instant::now();
    let tick = Duration::from_millis(1);
    let mut sent: u64 = 0;
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    loop {
        if STOP.load(Ordering::Relaxed) {
            break;
        }
        let mut n = max_batch as u64;
        if cfg.count > 0 {
            n = n.min(cfg.count - sent);
            if n == 0 {
                break;
            }
        }
        if let Some(c) = confirms {
            if cfg.window > 0 {
                let outstanding = sent - c.done.load(Ordering::Acquire);
                if outstanding >= cfg.window {
                    thread::park_timeout(Duration::from_millis(10));
                    continue;
                }
                n = n.min(cfg.window - outstanding);
            }
        }
        if cfg.rate > 0.0 {
            let due = (started.elapsed().as_secs_f64() * cfg.rate) as u64;
            if due <= sent {
                // Sleep until the next message is due, but send at most every tick.
                let next = started + Duration::from_secs_f64((sent + 1) as f64 / cfg.rate);
                let wake = next.max(Instant::now() + tick);
                thread::sleep(wake.saturating_duration_since(Instant::now()));
                continue;
            }
            n = n.min(due - sent);
        }
        let ts = if cfg.no_ts { NO_TIMESTAMP } else { now_nanos() };
        let tsb = ts.to_be_bytes();
        let n_us = n as usize;
        for k in 0..n_us {
            let at = k * per + cfg.ts_at;
            buf[at..at + 8].copy_from_slice(&tsb);
        }
        if let Some(c) = confirms {
            c.inner
                .lock()
                .unwrap()
                .batches
                .push_back((sent + 1, sent + n, ts));
        }
        match write_until_stop(stream, &buf[..n_us * per]) {
            Ok(Wrote::All) => {}
            Ok(w) => return Ok((sent, w == Wrote::StoppedClean)),
            Err(e) => return Err(format!("write to {peer}: {}", io_text(&e))),
        }
        sent += n;
        if count_global {
            SENT.fetch_add(n, Ordering::Relaxed);
        }
    }
    Ok((sent, true))
}

/// How a batch write ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wrote {
    All,
    /// The run stopped before any byte of the batch was written.
    StoppedClean,
    /// The run stopped and the broker would not take the rest of a batch within
    /// two seconds: the stream ends inside a frame.
    StoppedDirty,
}

/// Writes all of `b` to a socket that has a write timeout, giving up once the run
/// is stopping, so that a broker applying back-pressure cannot hang the end of the
/// run; a batch already begun is finished if the broker takes it within 2 s.
fn write_until_stop(s: &mut TcpStream, mut b: &[u8]) -> io::Result<Wrote> {
    let total = b.len();
    let mut deadline: Option<Instant> = None;
    while !b.is_empty() {
        match s.write(b) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => b = &b[n..],
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                if STOP.load(Ordering::Relaxed) {
                    if b.len() == total {
                        return Ok(Wrote::StoppedClean);
                    }
                    let d =
                        *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
                    if Instant::now() >= d {
                        return Ok(Wrote::StoppedDirty);
                    }
                }
            }
            Err(_) if STOP.load(Ordering::Relaxed) => return Ok(Wrote::StoppedDirty),
            Err(e) => return Err(e),
        }
    }
    Ok(Wrote::All)
}

/// The reader half of a producer connection: confirms, returns, closes.
fn producer_reader(mut c: Conn, confirms: Arc<Confirms>, hist: Arc<Mutex<Hist>>) {
    let mut stopping: Option<Instant> = None;
    loop {
        let now = now_nanos();
        loop {
            let f = match c.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => fatal(e),
            };
            let (h, p) = f;
            if h.kind != FRAME_METHOD {
                continue; // content of a basic.return, heartbeats
            }
            let pl = &c.buf[p.clone()];
            match pl.get(..4) {
                Some([0, 60, 0, 80]) | Some([0, 60, 0, 120]) if pl.len() >= 13 => {
                    let tag = u64::from_be_bytes(pl[4..12].try_into().unwrap());
                    let multiple = pl[12] & 1 != 0;
                    let before = confirms.done.load(Ordering::Relaxed);
                    confirms.confirm(tag, multiple, now, &mut hist.lock().unwrap());
                    let d = confirms.done.load(Ordering::Relaxed) - before;
                    if pl[3] == 80 {
                        CONFIRMED.fetch_add(d, Ordering::Relaxed);
                    } else {
                        NACKED.fetch_add(d, Ordering::Relaxed);
                    }
                }
                Some([0, 60, 0, 50]) => {
                    RETURNED.fetch_add(1, Ordering::Relaxed);
                }
                Some([0, 10, 0, 51]) => return, // close-ok: we are done
                _ => {
                    let payload = Bytes::copy_from_slice(pl);
                    match Method::decode(&payload) {
                        Ok(m) => {
                            if let Err(e) = check_close(&m) {
                                if STOP.load(Ordering::Relaxed) {
                                    return; // the run is over; the summary stands
                                }
                                fatal(e);
                            }
                            if let Method::ConnectionBlocked(b) = &m {
                                eprintln!(
                                    "warren-perf: note: connection blocked by broker: {}",
                                    String::from_utf8_lossy(&b.reason)
                                );
                            }
                        }
                        Err(e) => fatal(format!("bad method from {}: {e}", c.peer)),
                    }
                }
            }
        }
        if STOP.load(Ordering::Relaxed) {
            let t = *stopping.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(3) {
                return;
            }
        }
        match c.fill() {
            Ok(_) => {}
            Err(_) if STOP.load(Ordering::Relaxed) => return,
            Err(e) => fatal(e),
        }
    }
}

/// Starts one producer connection; returns its thread.
fn spawn_producer(
    o: &Opts,
    idx: usize,
    count: u64,
    rate: f64,
    window: u64,
    no_ts: bool,
    count_global: bool,
) -> Result<JoinHandle<u64>, String> {
    let mut c = Conn::open(&o.uri, &format!("warren-perf producer {idx}"))?;
    if window > 0 {
        c.rpc(CH, Method::ConfirmSelect(confirm::Select::default()), |m| {
            matches!(m, Method::ConfirmSelectOk(_))
        })?;
    }
    c.stream
        .set_read_timeout(Some(POLL))
        .map_err(|e| io_text(&e))?;
    let (template, ts_at) = publish_template(o, &o.routing_key_for(idx), c.frame_max);
    let cfg = ProducerCfg {
        template,
        ts_at,
        rate,
        count,
        window,
        no_ts,
    };
    let mut w = c
        .stream
        .try_clone()
        .map_err(|e| format!("clone socket: {}", io_text(&e)))?;
    w.set_write_timeout(Some(POLL)).map_err(|e| io_text(&e))?;
    let confirms = Arc::new(Confirms::new());
    let hist = confirm_lat().register();
    let reader = {
        let confirms = confirms.clone();
        thread::Builder::new()
            .name(format!("p{idx}-reader"))
            .spawn(move || producer_reader(c, confirms, hist))
            .map_err(|e| e.to_string())?
    };
    thread::Builder::new()
        .name(format!("producer-{idx}"))
        .spawn(move || {
            let _ = confirms.producer.set(thread::current());
            let conf = (window > 0).then_some(&*confirms);
            let (sent, clean) =
                produce(&mut w, &cfg, conf, count_global).unwrap_or_else(|e| fatal(e));
            if count > 0 && sent == count {
                // Wait for the last confirms before calling this producer done.
                if window > 0 {
                    while confirms.done.load(Ordering::Acquire) < sent
                        && !STOP.load(Ordering::Relaxed)
                    {
                        thread::park_timeout(Duration::from_millis(10));
                    }
                }
                PRODUCERS_DONE.fetch_add(1, Ordering::SeqCst);
            }
            // Wait for the end of the run (the reader keeps watching for closes).
            while !STOP.load(Ordering::Relaxed) {
                thread::park_timeout(Duration::from_millis(50));
            }
            if clean {
                let mut b = BytesMut::new();
                frame::write_method(
                    &mut b,
                    0,
                    &Method::ConnectionClose(connection::Close {
                        reply_code: 200,
                        reply_text: Bytes::from_static(b"OK"),
                        class_id: 0,
                        method_id: 0,
                    }),
                );
                let _ = w.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = w.write_all(&b);
            } else {
                // Mid-frame: a close would read as garbage; just hang up.
                let _ = w.shutdown(std::net::Shutdown::Both);
            }
            let _ = reader.join();
            sent
        })
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Consumers.

/// The consumer hot loop: walks deliveries in place; acks are batched per read.
fn consume(c: &mut Conn, autoack: bool, multi_ack: u64, hist: &Mutex<Hist>) {
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut tag: u64 = 0;
    let mut body_left: u64 = 0;
    let mut body_started = false;
    let mut unacked: u64 = 0;
    let multiple = multi_ack > 1;
    loop {
        match c.fill() {
            Ok(true) => {}
            Ok(false) => {
                if STOP.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(e) => {
                if STOP.load(Ordering::Relaxed) {
                    return;
                }
                fatal(e)
            }
        }
        if STOP.load(Ordering::Relaxed) {
            return;
        }
        let now = now_nanos();
        let mut got: u64 = 0;
        let mut h = hist.lock().unwrap();
        loop {
            let (fh, p) = match c.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => fatal(e),
            };
            let pl = &c.buf[p];
            match fh.kind {
                FRAME_METHOD => {
                    if pl.get(..4) == Some(&[0, 60, 0, 60]) {
                        let ctag_len = *pl.get(4).unwrap_or(&0) as usize;
                        let t = pl
                            .get(5 + ctag_len..13 + ctag_len)
                            .unwrap_or_else(|| fatal("short basic.deliver"));
                        tag = u64::from_be_bytes(t.try_into().unwrap());
                    } else {
                        let payload = Bytes::copy_from_slice(pl);
                        match Method::decode(&payload) {
                            Ok(m) => {
                                if let Err(e) = check_close(&m) {
                                    fatal(e)
                                }
                                if let Method::BasicCancel(_) = m {
                                    fatal("consumer cancelled by broker (queue deleted?)")
                                }
                            }
                            Err(e) => fatal(format!("bad method from {}: {e}", c.peer)),
                        }
                    }
                }
                FRAME_HEADER => {
                    body_left = pl
                        .get(4..12)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
                        .unwrap_or(0);
                    body_started = false;
                    if body_left == 0 {
                        got += 1;
                    }
                }
                FRAME_BODY => {
                    if !body_started {
                        body_started = true;
                        if let Some(ts) = pl.get(..8) {
                            let ts = u64::from_be_bytes(ts.try_into().unwrap());
                            if ts != NO_TIMESTAMP {
                                h.record(now.saturating_sub(ts));
                            }
                        }
                    }
                    body_left = body_left.saturating_sub(pl.len() as u64);
                    if body_left == 0 {
                        got += 1;
                        if !autoack {
                            unacked += 1;
                            if unacked >= multi_ack {
                                frame::write_ack(&mut wbuf, CH, tag, multiple);
                                unacked = 0;
                            }
                        }
                    }
                }
                FRAME_HEARTBEAT => {}
                _ => {}
            }
        }
        drop(h);
        RECEIVED.fetch_add(got, Ordering::Relaxed);
        if !wbuf.is_empty() {
            if let Err(e) = c.stream.write_all(&wbuf) {
                if STOP.load(Ordering::Relaxed) {
                    return;
                }
                fatal(format!("write to {}: {}", c.peer, io_text(&e)));
            }
            wbuf.clear();
        }
    }
}

fn start_consumer(o: &Opts, q: &str, idx: usize) -> Result<JoinHandle<()>, String> {
    let mut c = Conn::open(&o.uri, &format!("warren-perf consumer {idx}"))?;
    if o.qos > 0 {
        c.rpc(
            CH,
            Method::BasicQos(basic::Qos {
                prefetch_count: o.qos,
                ..Default::default()
            }),
            |m| matches!(m, Method::BasicQosOk(_)),
        )?;
    }
    c.rpc(
        CH,
        Method::BasicConsume(basic::Consume {
            queue: Bytes::from(q.to_string()),
            consumer_tag: Bytes::from(format!("warren-perf-{idx}")),
            no_ack: o.autoack,
            ..Default::default()
        }),
        |m| matches!(m, Method::BasicConsumeOk(_)),
    )?;
    c.stream
        .set_read_timeout(Some(POLL))
        .map_err(|e| io_text(&e))?;
    let hist = consumer_lat().register();
    let (autoack, multi) = (o.autoack, o.multi_ack);
    thread::Builder::new()
        .name(format!("consumer-{idx}"))
        .spawn(move || {
            consume(&mut c, autoack, multi, &hist);
            c.close();
        })
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Reporting.

struct Totals {
    duration: f64,
    sent: u64,
    received: u64,
    confirmed: u64,
    nacked: u64,
    returned: u64,
    lat: Hist,
    conf_lat: Hist,
    drain: Option<(u64, f64)>,
}

fn fmt_lat(v: &[f64; 6], idx: &[usize]) -> String {
    idx.iter()
        .map(|&i| format!("{:.0}", v[i]))
        .collect::<Vec<_>>()
        .join("/")
}

fn json_lat(h: &Hist) -> String {
    let v = h.summary_us();
    format!(
        "{{\"count\": {}, \"min\": {:.1}, \"p50\": {:.1}, \"p75\": {:.1}, \"p95\": {:.1}, \"p99\": {:.1}, \"max\": {:.1}}}",
        h.count, v[0], v[1], v[2], v[3], v[4], v[5]
    )
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write_json(path: &str, o: &Opts, t: &Totals) {
    let d = t.duration.max(1e-9);
    let mode = if o.sink {
        "sink"
    } else if o.source {
        "source"
    } else {
        "broker"
    };
    let mut s = String::from("{\n");
    s.push_str(&format!("  \"mode\": {},\n", json_str(mode)));
    s.push_str(&format!("  \"sent\": {},\n", t.sent));
    s.push_str(&format!("  \"received\": {},\n", t.received));
    s.push_str(&format!("  \"confirmed\": {},\n", t.confirmed));
    s.push_str(&format!("  \"nacked\": {},\n", t.nacked));
    s.push_str(&format!("  \"returned\": {},\n", t.returned));
    s.push_str(&format!("  \"duration_s\": {:.3},\n", t.duration));
    s.push_str(&format!("  \"send_rate\": {:.1},\n", t.sent as f64 / d));
    s.push_str(&format!(
        "  \"receive_rate\": {:.1},\n",
        t.received as f64 / d
    ));
    s.push_str(&format!(
        "  \"confirm_rate\": {:.1},\n",
        t.confirmed as f64 / d
    ));
    s.push_str(&format!("  \"latency_us\": {},\n", json_lat(&t.lat)));
    s.push_str(&format!(
        "  \"confirm_latency_us\": {},\n",
        json_lat(&t.conf_lat)
    ));
    if let Some((n, secs)) = t.drain {
        s.push_str(&format!(
            "  \"drain\": {{\"messages\": {n}, \"seconds\": {secs:.3}, \"rate\": {:.1}}},\n",
            n as f64 / secs.max(1e-9)
        ));
    }
    s.push_str(&format!(
        "  \"config\": {{\"producers\": {}, \"consumers\": {}, \"queues\": {}, \"body_size\": {}, \"rate\": {}, \"count\": {}, \"qos\": {}, \"autoack\": {}, \"multi_ack_every\": {}, \"confirm\": {}, \"persistent\": {}, \"mandatory\": {}, \"exchange\": {}, \"queue\": {}, \"pre_fill\": {}}}\n",
        o.producers,
        o.consumers,
        o.queues,
        o.size,
        o.rate,
        o.count,
        o.qos,
        o.autoack,
        o.multi_ack,
        o.confirm,
        o.persistent,
        o.mandatory,
        json_str(&o.exchange),
        json_str(&o.queue),
        o.pre_fill
    ));
    s.push_str("}\n");
    if let Err(e) = std::fs::write(path, s) {
        fatal(format!("cannot write {path}: {}", io_text(&e)));
    }
}

fn print_summary(o: &Opts, t: &Totals) {
    let d = t.duration.max(1e-9);
    let mut line = format!(
        "summary: duration {:.2}s, sent {} ({:.0} msg/s), received {} ({:.0} msg/s)",
        t.duration,
        t.sent,
        t.sent as f64 / d,
        t.received,
        t.received as f64 / d
    );
    if o.confirm > 0 {
        line.push_str(&format!(
            ", confirmed {} ({:.0} msg/s), nacked {}",
            t.confirmed,
            t.confirmed as f64 / d,
            t.nacked
        ));
    }
    if o.mandatory {
        line.push_str(&format!(", returned {}", t.returned));
    }
    println!("{line}");
    if let Some((n, secs)) = t.drain {
        println!(
            "drain: {n} pre-filled messages in {secs:.3}s ({:.0} msg/s)",
            n as f64 / secs.max(1e-9)
        );
    }
    if t.lat.count > 0 {
        println!(
            "consumer latency min/p50/p75/p95/p99/max: {} µs",
            fmt_lat(&t.lat.summary_us(), &[0, 1, 2, 3, 4, 5])
        );
    }
    if t.conf_lat.count > 0 {
        println!(
            "confirm latency min/p50/p75/p95/p99/max: {} µs",
            fmt_lat(&t.conf_lat.summary_us(), &[0, 1, 2, 3, 4, 5])
        );
    }
}

/// Prints one line per second until the run ends; returns the whole-run totals.
fn report_loop(o: &Opts, expected: Option<u64>, drain_target: u64) -> Totals {
    let start = Instant::now();
    let mut lat_total = Hist::new();
    let mut conf_total = Hist::new();
    let mut lat_iv = Hist::new();
    let mut conf_iv = Hist::new();
    let mut next = 1u64;
    let mut last = (0u64, 0u64, 0u64);
    let mut last_t = 0.0f64;
    let mut drain = None;
    let mut stall = (RECEIVED.load(Ordering::Relaxed), Instant::now());
    let end_at = o.duration.map(|d| start + Duration::from_secs_f64(d));
    let counted = o.count > 0 || (o.producers == 0 && o.pre_fill > 0);
    let producing = o.producers > 0;
    let end;
    loop {
        thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        let recv = RECEIVED.load(Ordering::Relaxed);
        if drain.is_none() && drain_target > 0 && recv >= drain_target {
            drain = Some((drain_target, start.elapsed().as_secs_f64()));
        }
        let el = (now - start).as_secs_f64();
        if el >= next as f64 {
            let cur = (
                SENT.load(Ordering::Relaxed),
                CONFIRMED.load(Ordering::Relaxed),
                recv,
            );
            let dt = el - last_t;
            consumer_lat().drain_into(&mut lat_iv);
            confirm_lat().drain_into(&mut conf_iv);
            if !o.quiet {
                let mut line = format!(
                    "time: {next}s, sent: {:.0} msg/s",
                    (cur.0 - last.0) as f64 / dt
                );
                if o.confirm > 0 {
                    line.push_str(&format!(
                        ", confirmed: {:.0} msg/s",
                        (cur.1 - last.1) as f64 / dt
                    ));
                }
                line.push_str(&format!(
                    ", received: {:.0} msg/s",
                    (cur.2 - last.2) as f64 / dt
                ));
                if lat_iv.count > 0 {
                    line.push_str(&format!(
                        ", consumer latency min/p50/p75/p95/p99: {} µs",
                        fmt_lat(&lat_iv.summary_us(), &[0, 1, 2, 3, 4])
                    ));
                }
                if conf_iv.count > 0 {
                    line.push_str(&format!(
                        ", confirm latency p50/p99: {} µs",
                        fmt_lat(&conf_iv.summary_us(), &[1, 4])
                    ));
                }
                println!("{line}");
            }
            lat_total.merge(&lat_iv);
            conf_total.merge(&conf_iv);
            lat_iv.clear();
            conf_iv.clear();
            last = cur;
            last_t = el;
            next += 1;
        }
        if let Some(e) = end_at {
            if now >= e {
                end = e;
                break;
            }
        }
        if counted {
            let producers_done = !producing || PRODUCERS_DONE.load(Ordering::SeqCst) >= o.producers;
            let exp = expected.unwrap_or(0);
            if producers_done && (o.consumers == 0 || recv >= exp) {
                end = now;
                break;
            }
            if recv != stall.0 {
                stall = (recv, now);
            } else if producers_done && now - stall.1 > Duration::from_secs(10) {
                eprintln!(
                    "warren-perf: received {recv} of {exp} expected messages; nothing for 10 s, giving up"
                );
                end = now;
                break;
            }
        }
    }
    let duration = (end - start).as_secs_f64();
    // Counters as of the end (the last messages may still trickle in: ignored).
    let totals = (
        SENT.load(Ordering::Relaxed),
        RECEIVED.load(Ordering::Relaxed),
        CONFIRMED.load(Ordering::Relaxed),
        NACKED.load(Ordering::Relaxed),
        RETURNED.load(Ordering::Relaxed),
    );
    STOP.store(true, Ordering::SeqCst);
    consumer_lat().drain_into(&mut lat_total);
    confirm_lat().drain_into(&mut conf_total);
    Totals {
        duration,
        sent: totals.0,
        received: totals.1,
        confirmed: totals.2,
        nacked: totals.3,
        returned: totals.4,
        lat: lat_total,
        conf_lat: conf_total,
        drain,
    }
}

// ---------------------------------------------------------------------------
// Self-tests: the tool against local peers.

fn local_listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fatal(io_text(&e)));
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Accepts connections and discards everything they send.
fn spawn_discarder(l: TcpListener) {
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut b = vec![0u8; 1 << 20];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
}

/// A buffer of whole deliveries (deliver + header + body frames), about 256 KB,
/// with the size of one delivery and where its body timestamp sits.
fn deliveries_buffer(o: &Opts) -> (Vec<u8>, usize, usize) {
    let mut one = BytesMut::new();
    let props = BasicProperties::default().to_raw();
    let body = vec![0u8; o.size];
    let mut out = Vec::new();
    let mut tag = 1u64;
    let mut ts_at = 0;
    while out.len() < BATCH_BYTES {
        one.clear();
        frame::write_deliver(
            &mut one,
            CH,
            b"warren-perf-0",
            tag,
            false,
            o.exchange.as_bytes(),
            o.routing_key.as_bytes(),
        );
        frame::write_content_header(&mut one, CH, o.size as u64, &props);
        ts_at = one.len() + 7;
        frame::write_body(&mut one, CH, &body, FRAME_MAX);
        out.extend_from_slice(&one);
        tag += 1;
    }
    (out, one.len(), ts_at)
}

fn self_test(o: &Opts) {
    let d = o.duration.unwrap_or(5.0);
    let o = Opts {
        duration: Some(d),
        ..o.clone()
    };
    let mut handles = Vec::new();
    if o.sink {
        let (l, port) = local_listener();
        spawn_discarder(l);
        for i in 0..o.producers {
            let (mut s, _) = Conn::tcp("127.0.0.1", port).unwrap_or_else(|e| fatal(e));
            let _ = s.set_nodelay(true);
            let (template, ts_at) = publish_template(&o, &o.routing_key_for(i), FRAME_MAX);
            let cfg = ProducerCfg {
                template,
                ts_at,
                rate: o.rate,
                count: o.count,
                window: 0,
                no_ts: false,
            };
            handles.push(thread::spawn(move || {
                let _ = produce(&mut s, &cfg, None, true);

                PRODUCERS_DONE.fetch_add(1, Ordering::SeqCst);
            }));
        }
    }
    if o.source {
        let (l, port) = local_listener();
        let (buf, per, ts_at) = deliveries_buffer(&o);
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = buf.clone();
                // Discard the acks on a clone, replay deliveries on this one.
                if let Ok(mut r) = s.try_clone() {
                    thread::spawn(move || {
                        let mut b = vec![0u8; 1 << 16];
                        while matches!(r.read(&mut b), Ok(n) if n > 0) {}
                    });
                }
                thread::spawn(move || {
                    while !STOP.load(Ordering::Relaxed) {
                        // Stamp like a producer would, so latency means time in flight.
                        let ts = now_nanos().to_be_bytes();
                        for at in (ts_at..buf.len()).step_by(per) {
                            buf[at..at + 8].copy_from_slice(&ts);
                        }
                        if s.write_all(&buf).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        for i in 0..o.consumers {
            let (s, peer) = Conn::tcp("127.0.0.1", port).unwrap_or_else(|e| fatal(e));
            let mut c = Conn::from_stream(s, peer);
            let _ = c.stream.set_read_timeout(Some(POLL));
            let hist = consumer_lat().register();
            let (autoack, multi) = (o.autoack, o.multi_ack);
            handles.push(
                thread::Builder::new()
                    .name(format!("consumer-{i}"))
                    .spawn(move || consume(&mut c, autoack, multi, &hist))
                    .unwrap(),
            );
        }
    }
    let o2 = Opts {
        count: 0,
        confirm: 0,
        ..o.clone()
    };
    let t = report_loop(&o2, None, 0);
    for h in handles {
        let _ = h.join();
    }
    print_summary(&o2, &t);
    if let Some(p) = &o.json {
        write_json(p, &o2, &t);
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let _ = now_nanos(); // fix the epoch
    let o = parse_opts();
    if o.sink || o.source {
        if o.sink && o.source {
            fatal("--sink and --source are separate self-tests; pick one");
        }
        self_test(&o);
        return;
    }
    if o.duration.is_none() && o.count == 0 && !(o.producers == 0 && o.pre_fill > 0) {
        eprintln!("warren-perf: note: no -z or -C given: running until interrupted");
    }

    let mut setup = Conn::open(&o.uri, "warren-perf setup").unwrap_or_else(|e| fatal(e));
    declare_topology(&mut setup, &o).unwrap_or_else(|e| fatal(e));

    let copies = o.copies_per_message();
    let mut drain_target = 0;
    if o.pre_fill > 0 {
        let t0 = Instant::now();
        let h = spawn_producer(&o, usize::MAX, o.pre_fill, 0.0, 50_000, true, false)
            .unwrap_or_else(|e| fatal(e));
        while PRODUCERS_DONE.load(Ordering::SeqCst) < 1 {
            thread::sleep(Duration::from_millis(2));
        }
        let secs = t0.elapsed().as_secs_f64();
        STOP.store(true, Ordering::SeqCst);
        let _ = h.join();
        STOP.store(false, Ordering::SeqCst);
        PRODUCERS_DONE.store(0, Ordering::SeqCst);
        CONFIRMED.store(0, Ordering::SeqCst);
        NACKED.store(0, Ordering::SeqCst);
        confirm_lat().drain_into(&mut Hist::new());
        if !o.quiet {
            println!(
                "pre-fill: {} messages published and confirmed in {secs:.3}s ({:.0} msg/s)",
                o.pre_fill,
                o.pre_fill as f64 / secs.max(1e-9)
            );
        }
        drain_target = o.pre_fill * copies;
    }

    let mut consumers = Vec::new();
    let names = o.queue_names();
    for (qi, q) in names.iter().enumerate() {
        for ci in 0..o.consumers {
            let idx = qi * o.consumers + ci;
            consumers.push(start_consumer(&o, q, idx).unwrap_or_else(|e| fatal(e)));
        }
    }
    let mut producers = Vec::new();
    for i in 0..o.producers {
        producers.push(
            spawn_producer(&o, i, o.count, o.rate, o.confirm, false, true)
                .unwrap_or_else(|e| fatal(e)),
        );
    }
    let expected = Some(o.count * o.producers as u64 * copies + drain_target);
    let t = report_loop(&o, expected, drain_target);
    print_summary(&o, &t);
    if let Some(p) = &o.json {
        write_json(p, &o, &t);
    }
    // Close politely, but never hang the exit on a broker that does not answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    let all: Vec<JoinHandle<()>> = consumers
        .into_iter()
        .chain(producers.into_iter().map(|h| {
            thread::spawn(move || {
                let _ = h.join();
            })
        }))
        .collect();
    while Instant::now() < deadline && !all.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(10));
    }
    if all.iter().all(|h| h.is_finished()) {
        if !o.predeclared && !o.keep {
            if let Err(e) = delete_topology(&mut setup, &o) {
                eprintln!("warren-perf: note: cleanup failed: {e}");
            }
        }
        setup.close();
    }
    if let Some(exp) = expected.filter(|_| o.count > 0 && o.consumers > 0) {
        if t.received < exp && o.duration.is_none() {
            std::process::exit(3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_precise() {
        let mut prev = 0;
        for i in 0..BUCKETS {
            let v = Hist::value_at(i);
            assert!(i == 0 || v > prev, "bucket {i}");
            assert_eq!(Hist::index(v), i, "bucket {i} value {v}");
            prev = v;
        }
        for v in [0u64, 1, 127, 128, 129, 1000, 65_535, 1 << 40, u64::MAX] {
            let back = Hist::value_at(Hist::index(v)) as f64;
            let err = (back - v as f64).abs() / (v as f64).max(1.0);
            assert!(err <= 1.0 / 64.0, "{v} -> {back}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Hist::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.quantile(0.0), 1000);
        let mut m = Hist::new();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count, 20_000);
        assert_eq!(m.quantile(0.5), h.quantile(0.5));
        m.clear();
        assert_eq!(m.count, 0);
        assert_eq!(m.quantile(0.5), 0);
    }

    #[test]
    fn uris() {
        let u = parse_uri("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(
            (&u.user[..], &u.pass[..], &u.host[..], u.port, &u.vhost[..]),
            ("guest", "guest", "127.0.0.1", 5672, "/")
        );
        let u = parse_uri("amqp://a%40b:p%3Aw@localhost/vh").unwrap();
        assert_eq!((&u.user[..], &u.pass[..]), ("a@b", "p:w"));
        assert_eq!(
            (&u.host[..], u.port, &u.vhost[..]),
            ("localhost", 5672, "vh")
        );
        let u = parse_uri("amqp://[::1]:5673").unwrap();
        assert_eq!((&u.host[..], u.port, &u.vhost[..]), ("::1", 5673, "/"));
        assert!(parse_uri("http://x").is_err());
        assert!(parse_uri("amqp://h:notaport/").is_err());
    }

    #[test]
    fn confirm_bookkeeping() {
        let c = Confirms::new();
        {
            let mut g = c.inner.lock().unwrap();
            g.batches.push_back((1, 10, 100));
            g.batches.push_back((11, 20, 200));
        }
        let mut h = Hist::new();
        c.confirm(3, false, 1000, &mut h); // out of order single
        assert_eq!(c.done.load(Ordering::Relaxed), 1);
        c.confirm(2, true, 1000, &mut h); // 1..=2, then 3 joins the watermark
        assert_eq!(c.done.load(Ordering::Relaxed), 3);
        assert_eq!(h.count, 3);
        c.confirm(15, true, 2000, &mut h);
        assert_eq!(c.done.load(Ordering::Relaxed), 15);
        assert_eq!(h.count, 15);
        c.confirm(15, true, 2000, &mut h); // duplicate: ignored
        c.confirm(20, false, 2000, &mut h);
        c.confirm(16, true, 2000, &mut h);
        assert_eq!(c.done.load(Ordering::Relaxed), 17);
        assert_eq!(c.inner.lock().unwrap().batches.front().unwrap().0, 17);
    }

    #[test]
    fn publish_template_patches_the_timestamp() {
        let o = Opts {
            size: 16,
            ..test_opts()
        };
        let (t, ts_at) = publish_template(&o, "rk", FRAME_MAX);
        // method, header, body: the body frame starts 7 bytes before ts_at.
        let mut rest = &t[..];
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let h = frame::parse(rest, FRAME_MAX).unwrap().unwrap();
            kinds.push(h.kind);
            rest = &rest[h.total_len()..];
        }
        assert_eq!(kinds, [FRAME_METHOD, FRAME_HEADER, FRAME_BODY]);
        assert_eq!(t[ts_at - 7], FRAME_BODY);
        assert_eq!(t.len() - ts_at, 16 + 1);
    }

    fn test_opts() -> Opts {
        Opts {
            uri: parse_uri("amqp://127.0.0.1").unwrap(),
            producers: 1,
            consumers: 1,
            size: 12,
            rate: 0.0,
            duration: None,
            count: 0,
            qos: 0,
            autoack: false,
            multi_ack: 1,
            confirm: 0,
            persistent: false,
            mandatory: false,
            queue: "q".into(),
            exchange: "x".into(),
            kind: "direct".into(),
            routing_key: "q".into(),
            queues: 1,
            pre_fill: 0,
            json: None,
            quiet: true,
            predeclared: false,
            keep: false,
            sink: false,
            source: false,
        }
    }
}
