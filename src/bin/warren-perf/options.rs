//! The command line: the flags (PerfTest's letters where PerfTest has one), `--help`,
//! the broker URI, and the [`Opts`] every other module reads.
//!
//! Owns validation of what the user typed; a bad value is a `fatal` exit here, so the
//! rest of the tool can trust [`Opts`]. Opens no connection.

use crate::shared::fatal;

#[derive(Clone, Debug)]
pub struct Uri {
    pub user: String,
    pub pass: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
    /// `amqps://` or `--tls`: the TLS client configuration (None: plain TCP).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The URI said `amqps://` (its default port is 5671).
    pub amqps: bool,
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
    let (rest, amqps) = match (s.strip_prefix("amqp://"), s.strip_prefix("amqps://")) {
        (Some(r), _) => (r, false),
        (None, Some(r)) => (r, true),
        _ => return Err(format!("uri {s:?} must start with amqp:// or amqps://")),
    };
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
        if amqps {
            5671
        } else {
            5672
        }
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
        tls: None,
        amqps,
    })
}

#[derive(Clone, Debug)]
pub struct Opts {
    pub uri: Uri,
    pub producers: usize,
    pub consumers: usize,
    pub size: usize,
    pub rate: f64,
    pub duration: Option<f64>,
    pub count: u64,
    pub qos: u16,
    pub autoack: bool,
    pub multi_ack: u64,
    pub confirm: u64,
    pub persistent: bool,
    pub mandatory: bool,
    pub queue: String,
    pub exchange: String,
    pub kind: String,
    pub routing_key: String,
    pub queues: usize,
    pub pre_fill: u64,
    pub json: Option<String>,
    pub quiet: bool,
    pub predeclared: bool,
    pub keep: bool,
    pub sink: bool,
    pub source: bool,
    /// `--queue-arg KEY=VALUE`: queue.declare arguments (integers as signed 64-bit,
    /// anything else as a long string), e.g. `x-message-ttl=60000`.
    pub queue_args: warren::proto::FieldTable,
    /// `--reject`: consumers reject (requeue=false) every message instead of acking it,
    /// for dead-lettering throughput.
    pub reject: bool,
    /// `--priority-random N`: each message gets a `priority` property drawn uniformly
    /// from 0..N (0 = no priority property), for priority-queue runs.
    pub priority_random: u16,
    /// `--handshakes N`: open and close N connections (handshake, open, close) and
    /// report connections per second instead of a message run.
    pub handshakes: u64,
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

pub fn parse_opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = getopts::Options::new();
    o.optopt(
        "h",
        "uri",
        "broker URI (default amqp://guest:guest@127.0.0.1:5672/%2f)",
        "URI",
    );
    o.optflag(
        "",
        "tls",
        "connect with TLS (as an amqps:// URI does; the port stays the URI's)",
    );
    o.optopt(
        "",
        "tls-ca",
        "PEM CA file to verify the broker's certificate (default: not verified)",
        "FILE",
    );
    o.optopt(
        "",
        "handshakes",
        "open and close N connections (-x threads) and report connections/s",
        "N",
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
    o.optmulti(
        "",
        "queue-arg",
        "queue.declare argument KEY=VALUE (repeatable; integer values are sent as signed 64-bit), e.g. x-message-ttl=60000",
        "KEY=VALUE",
    );
    o.optflag(
        "",
        "reject",
        "consumers basic.reject (requeue=false) every message instead of acking it",
    );
    o.optopt(
        "",
        "priority-random",
        "publish with a priority property drawn uniformly from 0..N (N at most 256), e.g. 10 with --queue-arg x-max-priority=9",
        "N",
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
    let mut uri = parse_uri(&uri_s).unwrap_or_else(|e| fatal(e));
    if uri.amqps || m.opt_present("tls") {
        let ca = m.opt_str("tls-ca");
        if ca.is_none() && !m.opt_present("quiet") {
            eprintln!(
                "warren-perf: note: TLS without --tls-ca: the broker's certificate is not verified"
            );
        }
        uri.tls = Some(crate::tls::config(ca.as_deref()).unwrap_or_else(|e| fatal(e)));
    }
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
        queue_args: queue_args(&m.opt_strs("queue-arg")),
        reject: m.opt_present("reject"),
        priority_random: {
            let n: u16 = num(&m, "priority-random", 0);
            if n > 256 {
                fatal(format!(
                    "--priority-random {n}: priorities are 0..=255, so N is at most 256"
                ));
            }
            n
        },
        handshakes: num(&m, "handshakes", 0),
    }
}

/// `KEY=VALUE` pairs as a field table.
fn queue_args(pairs: &[String]) -> warren::proto::FieldTable {
    use warren::proto::FieldValue;
    let mut t = warren::proto::FieldTable::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            fatal(format!("--queue-arg {p:?}: expected KEY=VALUE"));
        };
        let value = match v.parse::<i64>() {
            Ok(n) => FieldValue::I64(n),
            Err(_) => FieldValue::LongStr(bytes::Bytes::from(v.to_string())),
        };
        t.insert(bytes::Bytes::from(k.to_string()), value);
    }
    t
}

impl Opts {
    pub fn queue_names(&self) -> Vec<String> {
        if self.queues == 1 {
            vec![self.queue.clone()]
        } else {
            (0..self.queues)
                .map(|i| format!("{}-{i}", self.queue))
                .collect()
        }
    }

    /// Copies of each message that reach queues.
    pub fn copies_per_message(&self) -> u64 {
        if self.exchange.is_empty() {
            1
        } else {
            self.queues as u64
        }
    }

    /// The routing key producer `i` publishes with.
    pub fn routing_key_for(&self, i: usize) -> String {
        if self.exchange.is_empty() && self.queues > 1 {
            self.queue_names()[i % self.queues].clone()
        } else {
            self.routing_key.clone()
        }
    }
}

/// Options as `parse_opts` would give them for a plain run, for unit tests.
#[cfg(test)]
pub fn test_opts() -> Opts {
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
        queue_args: warren::proto::FieldTable::new(),
        reject: false,
        priority_random: 0,
        handshakes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
