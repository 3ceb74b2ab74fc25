//! Broker configuration: every command-line flag, its documented default, and parsing.
//!
//! The flag names are an interface that scripts and tests use; keep them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the broker needs to know at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses the AMQP listeners bind to, one listener each (default 127.0.0.1).
    /// `--bind` may be given several times, e.g. `--bind :: --bind 0.0.0.0`.
    pub bind: Vec<IpAddr>,
    /// AMQP port (default 5672; 0 picks a free port and prints it).
    pub amqp_port: u16,
    /// The management HTTP API and dashboard (default 15672; 0 picks a free port).
    pub http_port: u16,
    /// Prometheus metrics (default 15692, as RabbitMQ's plugin; 0 picks a free port).
    pub prometheus_port: u16,
    /// How often message rates are sampled (default 5 s, as RabbitMQ).
    pub stats_interval: Duration,
    /// Where durable state lives (default ./warren-data).
    pub data_dir: PathBuf,
    /// Unacked deliveries older than this close their channel with 406 (default 1800 s).
    pub consumer_timeout: Duration,
    /// How often a quorum queue retries at-least-once dead-lettering of messages that
    /// found no target queue (default 180000 ms: RabbitMQ's
    /// `dead_letter_worker_publisher_confirm_timeout`).
    pub dead_letter_retry_ms: u64,
    /// Free-disk alarm threshold in bytes (default 50,000,000).
    pub disk_free_limit: u64,
    /// Publishers are blocked while the broker's RSS is above this fraction of RAM
    /// (default 0.4, RabbitMQ's).
    pub memory_high_watermark: f64,
    /// Bodies of queued messages beyond this many bytes stay on disk and are read back on
    /// delivery (default: a fifth of RAM).
    pub memory_budget: u64,
    /// Heartbeat interval the server proposes in connection.tune, seconds (default 60).
    pub heartbeat: u16,
    /// Largest frame the server accepts and proposes (default 131072).
    pub frame_max: u32,
    /// Highest channel number the server proposes (default 2047).
    pub channel_max: u16,
    /// Connections beyond this many are closed as soon as they are accepted (default 65535).
    pub max_connections: usize,
    /// A client that has not finished the handshake (TLS, then AMQP) after this long is
    /// closed (`--handshake-timeout`, 10 s, as RabbitMQ).
    pub handshake_timeout: Duration,
    /// env_logger filter (default "info").
    pub log_level: String,
    /// A RabbitMQ definitions file imported at every start, before the listeners open
    /// (RabbitMQ's `load_definitions`); a file that does not import stops the start.
    pub definitions: Option<PathBuf>,
    /// AMQPS port (`--tls-port`; off unless given; 0 picks a free port and prints it).
    pub tls_port: Option<u16>,
    /// Certificate, key and client CA for AMQPS and `--http-tls` (`--tls-cert`,
    /// `--tls-key`, `--tls-ca`, `--tls-require-client-cert`). Boxed: rarely set, and
    /// it would make `Config` (moved around by value at start-up) twice its size.
    pub tls: Option<Box<crate::net::tls::TlsFiles>>,
    /// What SASL EXTERNAL logs in as (`--tls-login-from`, default the DN, as RabbitMQ).
    pub tls_login_from: crate::net::tls::LoginFrom,
    /// The management listener serves HTTPS with the same certificate (`--http-tls`).
    pub http_tls: bool,
    /// The user created on a first start, with no users stored (default guest/guest),
    /// as RabbitMQ's `default_user` / `default_pass`.
    pub default_user: String,
    pub default_pass: String,
    /// Users that may only connect from loopback (default `guest`, RabbitMQ's
    /// `loopback_users`).
    pub loopback_users: Vec<String>,
}

impl Config {
    /// The memory alarm threshold in bytes (0 = off).
    pub fn memory_limit(&self) -> u64 {
        crate::alarm::total_ram().map_or(0, |r| (r as f64 * self.memory_high_watermark) as u64)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: vec![IpAddr::from([127, 0, 0, 1])],
            amqp_port: 5672,
            http_port: 15672,
            prometheus_port: 15692,
            stats_interval: Duration::from_secs(5),
            data_dir: PathBuf::from("./warren-data"),
            consumer_timeout: Duration::from_secs(1800),
            dead_letter_retry_ms: 180_000,
            disk_free_limit: 50_000_000,
            memory_high_watermark: 0.4,
            memory_budget: crate::alarm::total_ram().map_or(1 << 30, |r| r / 5),
            heartbeat: 60,
            frame_max: 131_072,
            channel_max: 2047,
            max_connections: 65_535,
            handshake_timeout: Duration::from_secs(10),
            log_level: "info".to_string(),
            definitions: None,
            tls_port: None,
            tls: None,
            tls_login_from: crate::net::tls::LoginFrom::default(),
            http_tls: false,
            default_user: "guest".to_string(),
            default_pass: "guest".to_string(),
            loopback_users: vec!["guest".to_string()],
        }
    }
}

/// How many `--bind` addresses the broker accepts.
pub const MAX_LISTENERS: usize = 8;

/// Why a command line cannot be run. `Display` is the message the binary prints after
/// "warren: " (followed by "(try --help)").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// getopts refused it (unknown flag, missing value, …).
    Options(getopts::Fail),
    /// A free argument: warren takes none.
    Unexpected(String),
    /// A flag's value does not parse.
    BadValue { flag: &'static str, value: String },
    /// More than [`MAX_LISTENERS`] `--bind`.
    TooManyBinds,
    /// `--memory-high-watermark` outside 0..=1.
    Watermark,
    /// `--frame-max` below the spec's minimum frame size.
    FrameMaxTooSmall,
    /// A TLS flag without what it needs (a listener without a certificate and key).
    Tls(&'static str),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Options(e) => write!(f, "{e}"),
            ConfigError::Unexpected(a) => write!(f, "unexpected argument '{a}'"),
            ConfigError::BadValue { flag, value } => {
                write!(f, "--{flag}: '{value}' is not a valid value")
            }
            ConfigError::TooManyBinds => write!(f, "--bind: at most {MAX_LISTENERS} addresses"),
            ConfigError::Watermark => {
                f.write_str("--memory-high-watermark must be a fraction between 0 and 1")
            }
            ConfigError::FrameMaxTooSmall => write!(
                f,
                "--frame-max must be at least {}",
                crate::proto::frame::FRAME_MIN_SIZE
            ),
            ConfigError::Tls(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Options(e) => Some(e),
            _ => None,
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
// Made once per process: the size of `Run` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    Run(Config),
    Help(String),
    Version,
}

fn options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optmulti(
        "",
        "bind",
        "address to listen on; repeat for several (default 127.0.0.1; \
         :: for all interfaces, both families)",
        "ADDR",
    );
    o.optopt(
        "",
        "amqp-port",
        "AMQP port (default 5672; 0 = any free port)",
        "PORT",
    );
    o.optopt(
        "",
        "http-port",
        "management HTTP API and dashboard port (default 15672; 0 = any free port)",
        "PORT",
    );
    o.optopt(
        "",
        "prometheus-port",
        "Prometheus metrics port (default 15692; 0 = any free port)",
        "PORT",
    );
    o.optopt(
        "",
        "stats-interval",
        "seconds between message-rate samples (default 5)",
        "SECS",
    );
    o.optopt(
        "",
        "data-dir",
        "data directory (default ./warren-data)",
        "DIR",
    );
    o.optopt(
        "",
        "consumer-timeout",
        "unacked delivery timeout (default 1800)",
        "SECS",
    );
    o.optopt(
        "",
        "dead-letter-retry-ms",
        "at-least-once dead-letter retry interval (default 180000)",
        "MS",
    );
    o.optopt(
        "",
        "disk-free-limit",
        "free disk alarm threshold (default 50000000)",
        "BYTES",
    );
    o.optopt(
        "",
        "memory-high-watermark",
        "block publishers above this fraction of RAM (default 0.4)",
        "FRACTION",
    );
    o.optopt(
        "",
        "memory-budget",
        "queued bodies kept in memory before paging to disk (default RAM/5)",
        "BYTES",
    );
    o.optopt(
        "",
        "heartbeat",
        "heartbeat interval proposed to clients (default 60)",
        "SECS",
    );
    o.optopt(
        "",
        "frame-max",
        "maximum frame size (default 131072)",
        "BYTES",
    );
    o.optopt(
        "",
        "channel-max",
        "maximum channel number (default 2047)",
        "N",
    );
    o.optopt(
        "",
        "max-connections",
        "connections beyond this are refused (default 65535)",
        "N",
    );
    o.optopt(
        "",
        "log-level",
        "error|warn|info|debug|trace (default info)",
        "LEVEL",
    );
    o.optopt(
        "",
        "definitions",
        "RabbitMQ definitions JSON imported at every start (users, vhosts, \
         permissions, limits, queues, exchanges, bindings); a bad file stops the start",
        "FILE",
    );
    o.optopt(
        "",
        "handshake-timeout",
        "close a client that has not finished the TLS and AMQP handshakes in time (default 10)",
        "SECS",
    );
    o.optopt(
        "",
        "tls-port",
        "AMQPS (AMQP over TLS) port; off unless given (0 = any free port)",
        "PORT",
    );
    o.optopt(
        "",
        "tls-cert",
        "PEM certificate chain for AMQPS and --http-tls",
        "FILE",
    );
    o.optopt("", "tls-key", "PEM private key of --tls-cert", "FILE");
    o.optopt(
        "",
        "tls-ca",
        "PEM CA certificates that client certificates are verified against \
         (a client without one is still accepted unless --tls-require-client-cert)",
        "FILE",
    );
    o.optflag(
        "",
        "tls-require-client-cert",
        "refuse TLS clients without a certificate --tls-ca verifies",
    );
    o.optopt(
        "",
        "tls-login-from",
        "what SASL EXTERNAL logs in as: dn (default, RabbitMQ's) or common_name",
        "dn|common_name",
    );
    o.optflag(
        "",
        "http-tls",
        "the management listener serves HTTPS with --tls-cert/--tls-key",
    );
    o.optopt(
        "",
        "default-user",
        "user created on a first start with no users (default guest)",
        "NAME",
    );
    o.optopt(
        "",
        "default-pass",
        "that user's password (default guest)",
        "PASS",
    );
    o.optopt(
        "",
        "loopback-users",
        "comma-separated users that may only connect from loopback \
         (default guest; '' or none: nobody)",
        "LIST",
    );
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

/// `value` of `--flag`, parsed.
fn parse_value<T: std::str::FromStr>(flag: &'static str, value: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadValue {
        flag,
        value: value.to_string(),
    })
}

fn num<T: std::str::FromStr>(
    m: &getopts::Matches,
    name: &'static str,
    into: &mut T,
) -> Result<(), ConfigError> {
    if let Some(v) = m.opt_str(name) {
        *into = parse_value(name, &v)?;
    }
    Ok(())
}

/// `--loopback-users`: comma-separated names; "" or "none" is nobody.
fn parse_loopback_users(s: &str) -> Vec<String> {
    if s.trim() == "none" {
        return Vec::new();
    }
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Command {
    /// Parses `args` (without the program name).
    pub fn parse(args: &[String]) -> Result<Command, ConfigError> {
        let opts = options();
        let m = opts.parse(args).map_err(ConfigError::Options)?;
        if m.opt_present("h") {
            let brief = "Usage: warren [options]\n\nAn AMQP 0-9-1 message broker.";
            return Ok(Command::Help(opts.usage(brief)));
        }
        if m.opt_present("V") {
            return Ok(Command::Version);
        }
        if !m.free.is_empty() {
            return Err(ConfigError::Unexpected(m.free[0].clone()));
        }
        let mut c = Config::default();
        let binds = m.opt_strs("bind");
        if !binds.is_empty() {
            c.bind = binds
                .iter()
                .map(|v| parse_value("bind", v))
                .collect::<Result<_, _>>()?;
            if c.bind.len() > MAX_LISTENERS {
                return Err(ConfigError::TooManyBinds);
            }
        }
        num(&m, "amqp-port", &mut c.amqp_port)?;
        num(&m, "http-port", &mut c.http_port)?;
        num(&m, "prometheus-port", &mut c.prometheus_port)?;
        let mut secs = c.stats_interval.as_secs();
        num(&m, "stats-interval", &mut secs)?;
        c.stats_interval = Duration::from_secs(secs.max(1));
        if let Some(d) = m.opt_str("data-dir") {
            c.data_dir = PathBuf::from(d);
        }
        let mut secs = c.consumer_timeout.as_secs();
        num(&m, "consumer-timeout", &mut secs)?;
        c.consumer_timeout = Duration::from_secs(secs);
        num(&m, "dead-letter-retry-ms", &mut c.dead_letter_retry_ms)?;
        c.dead_letter_retry_ms = c.dead_letter_retry_ms.max(1);
        num(&m, "disk-free-limit", &mut c.disk_free_limit)?;
        num(&m, "memory-high-watermark", &mut c.memory_high_watermark)?;
        if !(0.0..=1.0).contains(&c.memory_high_watermark) {
            return Err(ConfigError::Watermark);
        }
        num(&m, "memory-budget", &mut c.memory_budget)?;
        num(&m, "heartbeat", &mut c.heartbeat)?;
        num(&m, "frame-max", &mut c.frame_max)?;
        num(&m, "channel-max", &mut c.channel_max)?;
        num(&m, "max-connections", &mut c.max_connections)?;
        let mut secs = c.handshake_timeout.as_secs_f64();
        num(&m, "handshake-timeout", &mut secs)?;
        if !(secs > 0.0 && secs.is_finite()) {
            return Err(ConfigError::BadValue {
                flag: "handshake-timeout",
                value: secs.to_string(),
            });
        }
        c.handshake_timeout = Duration::from_secs_f64(secs);
        if c.frame_max < crate::proto::frame::FRAME_MIN_SIZE {
            return Err(ConfigError::FrameMaxTooSmall);
        }
        if let Some(l) = m.opt_str("log-level") {
            c.log_level = l;
        }
        c.definitions = m.opt_str("definitions").map(PathBuf::from);
        parse_tls(&m, &mut c)?;
        if let Some(u) = m.opt_str("default-user") {
            if u.is_empty() {
                return Err(ConfigError::BadValue {
                    flag: "default-user",
                    value: u,
                });
            }
            c.default_user = u;
        }
        if let Some(p) = m.opt_str("default-pass") {
            c.default_pass = p;
        }
        if let Some(l) = m.opt_str("loopback-users") {
            c.loopback_users = parse_loopback_users(&l);
        }
        Ok(Command::Run(c))
    }
}

/// The `--tls-*` and `--http-tls` flags: a TLS listener needs a certificate and its
/// key; the files themselves are read at start-up (`reactor::run`).
fn parse_tls(m: &getopts::Matches, c: &mut Config) -> Result<(), ConfigError> {
    use crate::net::tls::{LoginFrom, TlsFiles};
    if let Some(p) = m.opt_str("tls-port") {
        c.tls_port = Some(parse_value("tls-port", &p)?);
    }
    c.http_tls = m.opt_present("http-tls");
    if let Some(v) = m.opt_str("tls-login-from") {
        c.tls_login_from = match v.as_str() {
            "dn" | "distinguished_name" => LoginFrom::DistinguishedName,
            "common_name" => LoginFrom::CommonName,
            _ => {
                return Err(ConfigError::BadValue {
                    flag: "tls-login-from",
                    value: v,
                })
            }
        };
    }
    match (m.opt_str("tls-cert"), m.opt_str("tls-key")) {
        (Some(cert), Some(key)) => {
            c.tls = Some(Box::new(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                ca: m.opt_str("tls-ca").map(PathBuf::from),
                require_client_cert: m.opt_present("tls-require-client-cert"),
            }))
        }
        (Some(_), None) => return Err(ConfigError::Tls("--tls-cert needs --tls-key")),
        (None, Some(_)) => return Err(ConfigError::Tls("--tls-key needs --tls-cert")),
        (None, None) => {
            if c.tls_port.is_some() || c.http_tls {
                return Err(ConfigError::Tls(
                    "--tls-port and --http-tls need --tls-cert and --tls-key",
                ));
            }
        }
    }
    if m.opt_present("tls-require-client-cert") && m.opt_str("tls-ca").is_none() {
        return Err(ConfigError::Tls(
            "--tls-require-client-cert needs --tls-ca (the CA to verify clients against)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[&str]) -> Result<Command, ConfigError> {
        Command::parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_are_documented_values() {
        let Ok(Command::Run(c)) = parse(&[]) else {
            panic!("expected run")
        };
        assert_eq!(c.amqp_port, 5672);
        assert_eq!(c.http_port, 15672);
        assert_eq!(c.consumer_timeout, Duration::from_secs(1800));
        assert_eq!(c.disk_free_limit, 50_000_000);
        assert_eq!(
            (c.heartbeat, c.frame_max, c.channel_max),
            (60, 131_072, 2047)
        );
        assert_eq!(c.data_dir, PathBuf::from("./warren-data"));
        assert_eq!((&*c.default_user, &*c.default_pass), ("guest", "guest"));
        assert_eq!(c.loopback_users, ["guest"]);
    }

    #[test]
    fn errors_say_what_the_binary_always_printed() {
        let e = |a: &[&str]| parse(a).unwrap_err().to_string();
        assert_eq!(
            e(&["--amqp-port", "x"]),
            "--amqp-port: 'x' is not a valid value"
        );
        assert_eq!(
            e(&["--bind", "nowhere"]),
            "--bind: 'nowhere' is not a valid value"
        );
        assert_eq!(e(&["extra"]), "unexpected argument 'extra'");
        assert_eq!(
            e(&["--frame-max", "100"]),
            "--frame-max must be at least 4096"
        );
        assert_eq!(
            e(&["--memory-high-watermark", "2"]),
            "--memory-high-watermark must be a fraction between 0 and 1"
        );
        let nine: Vec<&str> = ["--bind", "127.0.0.1"].repeat(9);
        assert_eq!(e(&nine), "--bind: at most 8 addresses");
        assert_eq!(e(&["--nope"]), "Unrecognized option: 'nope'");
    }

    #[test]
    fn flags_override_and_bad_values_are_errors() {
        let Ok(Command::Run(c)) = parse(&["--amqp-port", "0", "--consumer-timeout", "1"]) else {
            panic!("expected run")
        };
        assert_eq!(c.amqp_port, 0);
        assert_eq!(c.consumer_timeout, Duration::from_secs(1));
        assert!(parse(&["--amqp-port", "x"]).is_err());
        assert!(parse(&["--bind", "nowhere"]).is_err());
        let Ok(Command::Run(c)) = parse(&["--bind", "::", "--bind", "0.0.0.0"]) else {
            panic!("expected run")
        };
        let want: Vec<IpAddr> = vec!["::".parse().unwrap(), "0.0.0.0".parse().unwrap()];
        assert_eq!(c.bind, want, "several --bind, in order");
        assert!(parse(&["--frame-max", "100"]).is_err());
        let Ok(Command::Run(c)) = parse(&["--definitions", "defs.json"]) else {
            panic!("expected run")
        };
        assert_eq!(c.definitions, Some(PathBuf::from("defs.json")));
        assert!(matches!(parse(&["-h"]), Ok(Command::Help(_))));
        let Ok(Command::Run(c)) = parse(&[
            "--default-user",
            "admin",
            "--default-pass",
            "pw",
            "--loopback-users",
            "a, b,,c",
        ]) else {
            panic!("expected run")
        };
        assert_eq!((&*c.default_user, &*c.default_pass), ("admin", "pw"));
        assert_eq!(c.loopback_users, ["a", "b", "c"]);
        for nobody in ["", "none"] {
            let Ok(Command::Run(c)) = parse(&["--loopback-users", nobody]) else {
                panic!("expected run")
            };
            assert!(c.loopback_users.is_empty(), "{nobody:?}");
        }
        assert!(parse(&["--default-user", ""]).is_err());
        assert!(matches!(parse(&["-V"]), Ok(Command::Version)));
    }

    #[test]
    fn tls_flags_need_a_certificate_and_key() {
        use crate::net::tls::LoginFrom;
        let Ok(Command::Run(c)) = parse(&[]) else {
            panic!("expected run")
        };
        assert!(c.tls.is_none() && c.tls_port.is_none() && !c.http_tls);
        assert_eq!(c.tls_login_from, LoginFrom::DistinguishedName);
        let Ok(Command::Run(c)) = parse(&[
            "--tls-port",
            "5671",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-ca",
            "ca.pem",
            "--tls-require-client-cert",
            "--tls-login-from",
            "common_name",
            "--http-tls",
            "--handshake-timeout",
            "2.5",
        ]) else {
            panic!("expected run")
        };
        assert_eq!(c.tls_port, Some(5671));
        let t = c.tls.unwrap();
        assert_eq!(t.ca, Some(PathBuf::from("ca.pem")));
        assert!(t.require_client_cert && c.http_tls);
        assert_eq!(c.tls_login_from, LoginFrom::CommonName);
        assert_eq!(c.handshake_timeout, Duration::from_millis(2500));
        let e = |a: &[&str]| parse(a).unwrap_err().to_string();
        assert_eq!(
            e(&["--tls-port", "0"]),
            "--tls-port and --http-tls need --tls-cert and --tls-key"
        );
        assert_eq!(
            e(&["--http-tls"]),
            "--tls-port and --http-tls need --tls-cert and --tls-key"
        );
        assert_eq!(e(&["--tls-cert", "c"]), "--tls-cert needs --tls-key");
        assert_eq!(
            e(&[
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--tls-require-client-cert"
            ]),
            "--tls-require-client-cert needs --tls-ca (the CA to verify clients against)"
        );
        assert_eq!(
            e(&["--tls-login-from", "san"]),
            "--tls-login-from: 'san' is not a valid value"
        );
        assert_eq!(
            e(&["--handshake-timeout", "0"]),
            "--handshake-timeout: '0' is not a valid value"
        );
    }
}
