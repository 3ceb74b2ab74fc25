//! Shared helpers for Warren's integration tests.
//!
//! Two modes:
//! * default: every `Broker::start*()` spawns the `warren` binary on an ephemeral port
//!   with its own temporary data directory;
//! * `WARREN_TEST_PORT=<port>`: nothing is spawned; tests talk to an already running
//!   broker (e.g. RabbitMQ 3.10, the behaviour oracle) on 127.0.0.1:<port>. Tests that
//!   need broker flags (`Broker::start_with` with arguments) are skipped in that mode.
//!
//! The raw-frame helpers below deliberately do not use Warren's own codec: they are
//! written from the AMQP 0-9-1 spec so that they can test it.
#![allow(dead_code)]

pub mod api;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Default deadline for a single broker round trip in tests.
pub const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------------

pub struct Broker {
    pub port: u16,
    /// The management HTTP API's port (`warren management on http://ADDR:PORT`).
    pub http_port: u16,
    /// The Prometheus listener's port.
    pub prometheus_port: u16,
    child: Option<Child>,
    logs: Arc<Mutex<String>>,
    /// What the broker wrote on stderr only (for start-up error messages).
    stderr: Arc<Mutex<String>>,
    _data_dir: Option<tempfile::TempDir>,
}

/// Why a spawned broker did not come up: its exit status (None if it had to be killed
/// after the deadline) and what it printed on stderr (and everything, interleaved).
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub stderr: String,
    pub logs: String,
}

/// The port of an externally managed broker, if `WARREN_TEST_PORT` is set.
pub fn external_port() -> Option<u16> {
    std::env::var("WARREN_TEST_PORT")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .expect("WARREN_TEST_PORT must be a port number")
        })
}

/// True when tests run against an external broker (RabbitMQ or a running Warren).
pub fn is_external() -> bool {
    external_port().is_some()
}

impl Broker {
    /// Start a broker with default flags (or attach to the external one).
    pub fn start() -> Broker {
        match Self::start_inner(&[]) {
            Some(b) => b,
            None => unreachable!(),
        }
    }

    /// Start a broker with extra command-line flags. Returns `None` (after printing
    /// "skipped") when running against an external broker and `args` is non-empty,
    /// because its flags cannot be changed.
    pub fn start_with(args: &[&str]) -> Option<Broker> {
        Self::start_inner(args)
    }

    /// Like `start_with`, but always spawns a Warren process; `None` in external mode.
    /// For tests that need to own the process (signals, exit status).
    pub fn spawn_own(args: &[&str]) -> Option<Broker> {
        if is_external() {
            println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
            return None;
        }
        Some(Self::spawn(args))
    }

    fn start_inner(args: &[&str]) -> Option<Broker> {
        if let Some(port) = external_port() {
            if !args.is_empty() {
                println!("skipped: needs broker flags {args:?} (WARREN_TEST_PORT is set)");
                return None;
            }
            let env_port = |name: &str, default: u16| {
                std::env::var(name)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(default)
            };
            return Some(Broker {
                port,
                http_port: env_port("WARREN_TEST_HTTP_PORT", 15672),
                prometheus_port: env_port("WARREN_TEST_PROMETHEUS_PORT", 15692),
                child: None,
                logs: Arc::new(Mutex::new(String::new())),
                stderr: Arc::new(Mutex::new(String::new())),
                _data_dir: None,
            });
        }
        Some(Self::spawn(args))
    }

    fn spawn(args: &[&str]) -> Broker {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let path = dir.path().to_path_buf();
        match Self::try_spawn(&path, Some(dir), args) {
            Ok(b) => b,
            Err(f) => panic!(
                "warren did not start (status {:?}); output:\n{}",
                f.status, f.logs
            ),
        }
    }

    /// Spawns a broker on `dir` (created if missing, kept across restarts: the caller
    /// owns it). `None` in external mode. Panics if it does not start listening.
    pub fn spawn_in(dir: &Path, args: &[&str]) -> Option<Broker> {
        if is_external() {
            println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
            return None;
        }
        match Self::try_spawn(dir, None, args) {
            Ok(b) => Some(b),
            Err(f) => panic!(
                "warren on {} did not start (status {:?}); output:\n{}",
                dir.display(),
                f.status,
                f.logs
            ),
        }
    }

    /// Spawns a broker on `dir` that is expected NOT to start: waits (up to 20 s) for it
    /// to exit and returns why. Panics if it prints its listening line instead.
    pub fn start_failure(dir: &Path, args: &[&str]) -> StartFailure {
        match Self::try_spawn(dir, None, args) {
            Ok(b) => panic!(
                "warren started on {} (port {}) although it should have refused; output:\n{}",
                dir.display(),
                b.port,
                b.logs()
            ),
            Err(f) => f,
        }
    }

    /// Spawns `warren --amqp-port 0 --http-port 0 --prometheus-port 0 --data-dir <dir> ...`
    /// and waits for its three listening lines; Err with the exit status and output if it
    /// exits (or hangs 20 s) first.
    pub fn try_spawn(
        dir: &Path,
        owned: Option<tempfile::TempDir>,
        args: &[&str],
    ) -> Result<Broker, StartFailure> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.arg("--amqp-port")
            .arg("0")
            .args(["--http-port", "0", "--prometheus-port", "0"])
            .arg("--data-dir")
            .arg(dir)
            .arg("--log-level")
            .arg("info")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn warren");
        let logs = Arc::new(Mutex::new(String::new()));
        let errs = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<(u16, u16, u16)>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        {
            let logs = logs.clone();
            let done_tx = done_tx.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                let mut tx = Some(tx);
                let (mut amqp, mut http, mut prometheus) = (None, None, None);
                let port_of = |line: &str, banner: &str| {
                    line.trim_end()
                        .strip_prefix(banner)
                        .and_then(|a| a.rsplit_once(':'))
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                };
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            logs.lock().unwrap().push_str(&line);
                            // The first listener's line of each kind (any address:
                            // `--bind ::` prints [::]:PORT); a kind's listeners share
                            // their port.
                            amqp = amqp.or(port_of(&line, "warren listening on amqp://"));
                            http = http
                                .or(port_of(&line, "warren management on http://"))
                                .or(port_of(&line, "warren management on https://"));
                            prometheus =
                                prometheus.or(port_of(&line, "warren prometheus on http://"));
                            if let (Some(a), Some(h), Some(p)) = (amqp, http, prometheus) {
                                if let Some(t) = tx.take() {
                                    let _ = t.send((a, h, p));
                                }
                            }
                        }
                    }
                }
                let _ = done_tx.send(());
            });
        }
        {
            let logs = logs.clone();
            let errs = errs.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&buf);
                            logs.lock().unwrap().push_str(&text);
                            errs.lock().unwrap().push_str(&text);
                        }
                    }
                }
                let _ = done_tx.send(());
            });
        }
        let failure = |status, logs: &Arc<Mutex<String>>, errs: &Arc<Mutex<String>>| {
            // Both pipes reach EOF once the process is gone: wait for the drain threads
            // (bounded) so that the last lines are in.
            for _ in 0..2 {
                let _ = done_rx.recv_timeout(Duration::from_secs(2));
            }
            StartFailure {
                status,
                stderr: errs.lock().unwrap().clone(),
                logs: logs.lock().unwrap().clone(),
            }
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((port, http_port, prometheus_port)) => {
                    return Ok(Broker {
                        port,
                        http_port,
                        prometheus_port,
                        child: Some(child),
                        logs,
                        stderr: errs,
                        _data_dir: owned,
                    })
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(failure(Some(status), &logs, &errs));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) if Instant::now() < deadline => {
                    // stdout closed without a listening line: the process is exiting.
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(failure(Some(status), &logs, &errs));
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(failure(None, &logs, &errs));
                }
            }
        }
    }

    pub fn is_external(&self) -> bool {
        self.child.is_none()
    }

    /// The management API's base URL, e.g. `http://127.0.0.1:15672`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The Prometheus listener's base URL, e.g. `http://127.0.0.1:15692`.
    pub fn prometheus_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.prometheus_port)
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn uri_vhost(&self, vhost_encoded: &str) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/{}",
            self.port, vhost_encoded
        )
    }

    /// Everything the broker printed so far (stdout and stderr interleaved by line).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Send SIGTERM to the spawned broker (no-op for an external broker).
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }

    /// True once the spawned process has exited (and been reaped): signalling its pid
    /// again could hit an unrelated process.
    fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// SIGKILL the spawned broker (`kill -KILL pid`) and reap it (10 s deadline).
    /// No-op for an external broker or one that has already exited.
    pub fn kill9(&mut self) {
        if self.has_exited() {
            return;
        }
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let status = self.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some(),
            "warren did not die within 10 s of SIGKILL"
        );
    }

    /// SIGTERM and wait (10 s) for exit status 0.
    pub fn stop(&mut self) {
        assert!(
            !self.has_exited(),
            "warren already exited:\n{}",
            self.logs()
        );
        self.sigterm();
        let status = self
            .wait_exit(Duration::from_secs(10))
            .expect("warren did not exit within 10 s of SIGTERM");
        assert!(
            status.success(),
            "warren exited with {status}; output:\n{}",
            self.logs()
        );
    }

    /// What the broker wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait for the spawned broker to exit, polling up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect_raw(&self) -> RawClient {
        RawClient::connect(self.port)
    }

    /// A raw client that has completed the PLAIN handshake (guest/guest, vhost "/").
    pub fn handshake(&self) -> RawClient {
        RawClient::handshake(self.port)
    }

    pub async fn connect(&self) -> Connection {
        connect(&self.uri()).await
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.has_exited() {
            return;
        }
        self.sigterm();
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Generic helpers
// ---------------------------------------------------------------------------------

/// Poll `f` every 10 ms until it returns true or `deadline` elapses.
pub fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Async version of `wait_until` for conditions that need the broker.
pub async fn wait_until_async<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A name unique across processes and tests: `<prefix>-<pid>-<nanos>-<counter>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("wt-{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// Run a future to completion on a fresh multi-threaded runtime (for sync tests).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `tokio::time::timeout` that panics with `what` on expiry.
pub async fn within<F: Future>(what: &str, d: Duration, f: F) -> F::Output {
    match tokio::time::timeout(d, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?}: {what}"),
    }
}

/// Shorthand for `within(what, STEP, f)`.
pub async fn step<F: Future>(what: &str, f: F) -> F::Output {
    within(what, STEP, f).await
}

// ---------------------------------------------------------------------------------
// lapin helpers
// ---------------------------------------------------------------------------------

pub async fn connect(uri: &str) -> Connection {
    step(
        "lapin connect",
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("lapin connect to {uri}: {e:?}"))
}

/// The (reply code, reply text) of an AMQP protocol error, if `e` is one.
pub fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => {
            Some((err.get_id(), err.get_message().as_str().to_string()))
        }
        _ => None,
    }
}

/// Assert that `r` failed with an AMQP error with reply code `code`; returns the text.
pub fn expect_amqp_error<T: std::fmt::Debug>(r: lapin::Result<T>, code: u16) -> String {
    match r {
        Ok(v) => panic!("expected AMQP error {code}, got Ok({v:?})"),
        Err(e) => match amqp_error(&e) {
            Some((c, text)) => {
                assert_eq!(c, code, "unexpected reply code, text: {text}");
                text
            }
            None => panic!("expected AMQP error {code}, got {e:?}"),
        },
    }
}

/// Full publish/consume/ack round trip on a fresh lapin connection: proves the broker
/// is still healthy after a misbehaving client.
pub async fn roundtrip(uri: &str) {
    let conn = connect(uri).await;
    let ch = step("create_channel", conn.create_channel()).await.unwrap();
    let q = unique("rt");
    step(
        "queue_declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                auto_delete: false,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    step(
        "publish",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"ping",
            BasicProperties::default(),
        ),
    )
    .await
    .unwrap();
    let mut consumer = step(
        "consume",
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let d = step("delivery", consumer.next())
        .await
        .expect("consumer ended")
        .unwrap();
    assert_eq!(d.data, b"ping");
    step("ack", d.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    step(
        "queue_delete",
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .unwrap();
    let _ = step("close", conn.close(200, "bye".into())).await;
}

// ---------------------------------------------------------------------------------
// Raw AMQP 0-9-1 frames, written from the spec (independent of Warren's codec)
// ---------------------------------------------------------------------------------

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;

/// A complete frame: type, channel, size, payload, frame-end.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.push(kind);
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(FRAME_END);
    v
}

/// Builder for method arguments / property lists.
#[derive(Default, Clone)]
pub struct Args(pub Vec<u8>);

impl Args {
    pub fn new() -> Self {
        Args(Vec::new())
    }
    pub fn octet(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn short(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn long(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn longlong(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn shortstr(mut self, s: &str) -> Self {
        assert!(s.len() < 256);
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn longstr(mut self, s: &[u8]) -> Self {
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s);
        self
    }
    /// A field table given as already-encoded entries (see `table_entry_*`).
    pub fn table(mut self, encoded_entries: &[u8]) -> Self {
        self.0
            .extend_from_slice(&(encoded_entries.len() as u32).to_be_bytes());
        self.0.extend_from_slice(encoded_entries);
        self
    }
    /// Packed bits, first element is the least significant bit.
    pub fn bits(mut self, bits: &[bool]) -> Self {
        let mut b = 0u8;
        for (i, on) in bits.iter().enumerate() {
            if *on {
                b |= 1 << i;
            }
        }
        self.0.push(b);
        self
    }
    pub fn bytes(mut self, raw: &[u8]) -> Self {
        self.0.extend_from_slice(raw);
        self
    }
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

pub fn table_entry_bool(name: &str, v: bool) -> Vec<u8> {
    let mut e = vec![name.len() as u8];
    e.extend_from_slice(name.as_bytes());
    e.push(b't');
    e.push(v as u8);
    e
}

pub fn table_entry_longstr(name: &str, v: &[u8]) -> Vec<u8> {
    let mut e = vec![name.len() as u8];
    e.extend_from_slice(name.as_bytes());
    e.push(b'S');
    e.extend_from_slice(&(v.len() as u32).to_be_bytes());
    e.extend_from_slice(v);
    e
}

pub fn table_entry_table(name: &str, inner_entries: &[u8]) -> Vec<u8> {
    let mut e = vec![name.len() as u8];
    e.extend_from_slice(name.as_bytes());
    e.push(b'F');
    e.extend_from_slice(&(inner_entries.len() as u32).to_be_bytes());
    e.extend_from_slice(inner_entries);
    e
}

/// Method frame payload: class id, method id, arguments.
pub fn method(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + args.len());
    v.extend_from_slice(&class.to_be_bytes());
    v.extend_from_slice(&method.to_be_bytes());
    v.extend_from_slice(args);
    v
}

/// Client properties advertising the capabilities a modern client sends.
pub fn client_properties() -> Vec<u8> {
    let mut caps = Vec::new();
    caps.extend(table_entry_bool("authentication_failure_close", true));
    caps.extend(table_entry_bool("consumer_cancel_notify", true));
    caps.extend(table_entry_bool("publisher_confirms", true));
    caps.extend(table_entry_bool("basic.nack", true));
    caps.extend(table_entry_bool("connection.blocked", true));
    let mut props = Vec::new();
    props.extend(table_entry_longstr("product", b"warren-raw-test"));
    props.extend(table_entry_table("capabilities", &caps));
    props
}

pub fn connection_start_ok_plain(user: &str, pass: &str) -> Vec<u8> {
    let mut resp = vec![0u8];
    resp.extend_from_slice(user.as_bytes());
    resp.push(0);
    resp.extend_from_slice(pass.as_bytes());
    connection_start_ok("PLAIN", &resp)
}

pub fn connection_start_ok_amqplain(user: &str, pass: &str) -> Vec<u8> {
    // The AMQPLAIN response is a field table *without* its length prefix.
    let mut resp = table_entry_longstr("LOGIN", user.as_bytes());
    resp.extend(table_entry_longstr("PASSWORD", pass.as_bytes()));
    connection_start_ok("AMQPLAIN", &resp)
}

pub fn connection_start_ok(mechanism: &str, response: &[u8]) -> Vec<u8> {
    method(
        10,
        11,
        &Args::new()
            .table(&client_properties())
            .shortstr(mechanism)
            .longstr(response)
            .shortstr("en_US")
            .build(),
    )
}

pub fn connection_tune_ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> Vec<u8> {
    method(
        10,
        31,
        &Args::new()
            .short(channel_max)
            .long(frame_max)
            .short(heartbeat)
            .build(),
    )
}

pub fn connection_open(vhost: &str) -> Vec<u8> {
    method(
        10,
        40,
        &Args::new()
            .shortstr(vhost)
            .shortstr("")
            .bits(&[false])
            .build(),
    )
}

pub fn connection_close(code: u16, text: &str) -> Vec<u8> {
    method(
        10,
        50,
        &Args::new()
            .short(code)
            .shortstr(text)
            .short(0)
            .short(0)
            .build(),
    )
}

pub fn connection_close_ok() -> Vec<u8> {
    method(10, 51, &[])
}

pub fn channel_open() -> Vec<u8> {
    method(20, 10, &Args::new().shortstr("").build())
}

pub fn channel_close(code: u16, text: &str) -> Vec<u8> {
    method(
        20,
        40,
        &Args::new()
            .short(code)
            .shortstr(text)
            .short(0)
            .short(0)
            .build(),
    )
}

pub fn channel_close_ok() -> Vec<u8> {
    method(20, 41, &[])
}

pub fn queue_declare(name: &str, exclusive: bool, auto_delete: bool) -> Vec<u8> {
    method(
        50,
        10,
        &Args::new()
            .short(0)
            .shortstr(name)
            // passive, durable, exclusive, auto-delete, no-wait
            .bits(&[false, false, exclusive, auto_delete, false])
            .table(&[])
            .build(),
    )
}

pub fn queue_delete(name: &str) -> Vec<u8> {
    method(
        50,
        40,
        &Args::new()
            .short(0)
            .shortstr(name)
            .bits(&[false, false, false])
            .build(),
    )
}

pub fn basic_publish(exchange: &str, routing_key: &str, mandatory: bool) -> Vec<u8> {
    method(
        60,
        40,
        &Args::new()
            .short(0)
            .shortstr(exchange)
            .shortstr(routing_key)
            .bits(&[mandatory, false])
            .build(),
    )
}

pub fn basic_consume(queue: &str, tag: &str, no_ack: bool) -> Vec<u8> {
    method(
        60,
        20,
        &Args::new()
            .short(0)
            .shortstr(queue)
            .shortstr(tag)
            // no-local, no-ack, exclusive, no-wait
            .bits(&[false, no_ack, false, false])
            .table(&[])
            .build(),
    )
}

pub fn basic_ack(delivery_tag: u64, multiple: bool) -> Vec<u8> {
    method(
        60,
        80,
        &Args::new().longlong(delivery_tag).bits(&[multiple]).build(),
    )
}

/// Content header payload for class basic with no properties.
pub fn content_header(body_size: u64) -> Vec<u8> {
    Args::new()
        .short(60)
        .short(0)
        .longlong(body_size)
        .short(0)
        .build()
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    /// (class id, method id) of a method frame.
    pub fn method_id(&self) -> Option<(u16, u16)> {
        if self.kind != FRAME_METHOD || self.payload.len() < 4 {
            return None;
        }
        Some((
            u16::from_be_bytes([self.payload[0], self.payload[1]]),
            u16::from_be_bytes([self.payload[2], self.payload[3]]),
        ))
    }
    pub fn is_method(&self, class: u16, method: u16) -> bool {
        self.method_id() == Some((class, method))
    }
    /// Arguments of a method frame (after class and method ids).
    pub fn args(&self) -> Reader<'_> {
        Reader::new(&self.payload[4..])
    }
}

/// Cursor over wire-format data.
pub struct Reader<'a> {
    pub data: &'a [u8],
    pub pos: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Decimal(u8, u32),
    Str(Vec<u8>),
    Timestamp(u64),
    Table(BTreeMap<String, Value>),
    Array(Vec<Value>),
    Void,
    Bytes(Vec<u8>),
}

impl Value {
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            _ => None,
        }
    }
    pub fn as_table(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    pub fn octet(&mut self) -> u8 {
        self.take(1)[0]
    }
    pub fn short(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    pub fn long(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn longlong(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn shortstr(&mut self) -> String {
        let n = self.octet() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
    pub fn longstr(&mut self) -> Vec<u8> {
        let n = self.long() as usize;
        self.take(n).to_vec()
    }
    pub fn table(&mut self) -> BTreeMap<String, Value> {
        let n = self.long() as usize;
        let mut inner = Reader::new(self.take(n));
        let mut m = BTreeMap::new();
        while inner.pos < inner.data.len() {
            let k = inner.shortstr();
            let v = inner.value();
            m.insert(k, v);
        }
        m
    }
    pub fn value(&mut self) -> Value {
        match self.octet() {
            b't' => Value::Bool(self.octet() != 0),
            b'b' => Value::Int(self.octet() as i8 as i64),
            b'B' => Value::UInt(self.octet() as u64),
            b's' | b'U' => Value::Int(self.short() as i16 as i64),
            b'u' => Value::UInt(self.short() as u64),
            b'I' => Value::Int(self.long() as i32 as i64),
            b'i' => Value::UInt(self.long() as u64),
            b'l' | b'L' => Value::Int(self.longlong() as i64),
            b'f' => Value::Float(f32::from_bits(self.long()) as f64),
            b'd' => Value::Float(f64::from_bits(self.longlong())),
            b'D' => {
                let scale = self.octet();
                Value::Decimal(scale, self.long())
            }
            b'S' => Value::Str(self.longstr()),
            b'T' => Value::Timestamp(self.longlong()),
            b'F' => Value::Table(self.table()),
            b'A' => {
                let n = self.long() as usize;
                let mut inner = Reader::new(self.take(n));
                let mut v = Vec::new();
                while inner.pos < inner.data.len() {
                    v.push(inner.value());
                }
                Value::Array(v)
            }
            b'V' => Value::Void,
            b'x' => Value::Bytes(self.longstr()),
            t => panic!("unknown field type {:?}", t as char),
        }
    }
}

/// connection.tune values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tune {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}

/// Options for a raw handshake.
#[derive(Debug, Clone)]
pub struct HandshakeOpts {
    pub user: String,
    pub pass: String,
    pub vhost: String,
    pub amqplain: bool,
    /// Values sent in tune-ok; `None` = echo the server's proposal.
    pub channel_max: Option<u16>,
    pub frame_max: Option<u32>,
    pub heartbeat: Option<u16>,
}

impl Default for HandshakeOpts {
    fn default() -> Self {
        HandshakeOpts {
            user: "guest".into(),
            pass: "guest".into(),
            vhost: "/".into(),
            amqplain: false,
            channel_max: None,
            frame_max: None,
            heartbeat: Some(0),
        }
    }
}

impl HandshakeOpts {
    /// The defaults with `heartbeat` sent in tune-ok.
    pub fn heartbeat(seconds: u16) -> Self {
        HandshakeOpts {
            heartbeat: Some(seconds),
            ..Default::default()
        }
    }

    /// The defaults with `frame_max` sent in tune-ok.
    pub fn frame_max(bytes: u32) -> Self {
        HandshakeOpts {
            frame_max: Some(bytes),
            ..Default::default()
        }
    }

    /// The defaults with `channel_max` sent in tune-ok.
    pub fn channel_max(n: u16) -> Self {
        HandshakeOpts {
            channel_max: Some(n),
            ..Default::default()
        }
    }
}

/// A client speaking AMQP byte by byte over a blocking TcpStream.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Set once the peer closed the socket (EOF or reset).
    pub eof: bool,
    /// The server's connection.start server-properties, after `handshake*`.
    pub server_properties: BTreeMap<String, Value>,
    pub mechanisms: String,
    pub locales: String,
    /// The server's connection.tune proposal, after `handshake*`.
    pub server_tune: Option<Tune>,
    /// What we answered in tune-ok.
    pub tune: Option<Tune>,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        RawClient::connect_to(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Connects to any address (e.g. [::1]:port for an IPv6 listener).
    pub fn connect_to(addr: std::net::SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
            eof: false,
            server_properties: BTreeMap::new(),
            mechanisms: String::new(),
            locales: String::new(),
            server_tune: None,
            tune: None,
        }
    }

    /// Connect and complete the handshake as guest/guest on vhost "/".
    pub fn handshake(port: u16) -> RawClient {
        let mut c = RawClient::connect(port);
        c.do_handshake(&HandshakeOpts::default())
            .expect("raw handshake failed");
        c
    }

    /// `handshake`, then channel 1 opened (open-ok read).
    pub fn with_channel(port: u16) -> RawClient {
        let mut c = RawClient::handshake(port);
        c.open_channel(1);
        c
    }

    pub fn handshake_with(port: u16, opts: &HandshakeOpts) -> RawClient {
        let mut c = RawClient::connect(port);
        c.do_handshake(opts).expect("raw handshake failed");
        c
    }

    /// Sends the protocol header and reads connection.start.
    pub fn start(&mut self) -> Result<(), String> {
        self.send(PROTOCOL_HEADER);
        let f = self
            .read_frame(STEP)
            .ok_or("no connection.start received")?;
        if !f.is_method(10, 10) {
            return Err(format!("expected connection.start, got {f:?}"));
        }
        let mut a = f.args();
        let (maj, min) = (a.octet(), a.octet());
        if (maj, min) != (0, 9) {
            return Err(format!("connection.start version {maj}.{min}"));
        }
        self.server_properties = a.table();
        self.mechanisms = String::from_utf8_lossy(&a.longstr()).into_owned();
        self.locales = String::from_utf8_lossy(&a.longstr()).into_owned();
        Ok(())
    }

    /// Everything up to and including tune-ok (not connection.open).
    pub fn login(&mut self, opts: &HandshakeOpts) -> Result<(), String> {
        self.start()?;
        let start_ok = if opts.amqplain {
            connection_start_ok_amqplain(&opts.user, &opts.pass)
        } else {
            connection_start_ok_plain(&opts.user, &opts.pass)
        };
        self.send_method(0, &start_ok);
        let f = self.read_frame(STEP).ok_or("no connection.tune received")?;
        if !f.is_method(10, 30) {
            return Err(format!("expected connection.tune, got {f:?}"));
        }
        let mut a = f.args();
        let server = Tune {
            channel_max: a.short(),
            frame_max: a.long(),
            heartbeat: a.short(),
        };
        self.server_tune = Some(server);
        let ours = Tune {
            channel_max: opts.channel_max.unwrap_or(server.channel_max),
            frame_max: opts.frame_max.unwrap_or(server.frame_max),
            heartbeat: opts.heartbeat.unwrap_or(server.heartbeat),
        };
        self.tune = Some(ours);
        self.send_method(
            0,
            &connection_tune_ok(ours.channel_max, ours.frame_max, ours.heartbeat),
        );
        Ok(())
    }

    pub fn do_handshake(&mut self, opts: &HandshakeOpts) -> Result<(), String> {
        self.login(opts)?;
        self.send_method(0, &connection_open(&opts.vhost));
        let f = self
            .read_frame(STEP)
            .ok_or("no connection.open-ok received")?;
        if !f.is_method(10, 41) {
            return Err(format!("expected connection.open-ok, got {f:?}"));
        }
        Ok(())
    }

    pub fn send(&mut self, bytes: &[u8]) {
        // The peer may already have closed; tests assert on what they read back.
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.flush();
    }

    pub fn send_frame(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        self.send(&frame(kind, channel, payload));
    }

    pub fn send_method(&mut self, channel: u16, payload: &[u8]) {
        self.send_frame(FRAME_METHOD, channel, payload);
    }

    pub fn send_heartbeat(&mut self) {
        self.send_frame(FRAME_HEARTBEAT, 0, &[]);
    }

    /// Opens `channel` and waits for channel.open-ok.
    pub fn open_channel(&mut self, channel: u16) {
        self.send_method(channel, &channel_open());
        self.expect_method(channel, 20, 11);
    }

    /// Reads the next method frame on `channel`, panicking unless it is class.method.
    pub fn expect_method(&mut self, channel: u16, class: u16, method: u16) -> Frame {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self
                .read_frame(left)
                .unwrap_or_else(|| panic!("no frame while waiting for {class}.{method}"));
            if f.kind == FRAME_HEARTBEAT {
                continue;
            }
            assert_eq!(
                (f.channel, f.method_id()),
                (channel, Some((class, method))),
                "unexpected frame {f:?}"
            );
            return f;
        }
    }

    /// Fills the buffer until at least `n` bytes are buffered; false on EOF/timeout.
    fn fill(&mut self, n: usize, deadline: Instant) -> bool {
        let mut chunk = [0u8; 65536];
        while self.buf.len() < n {
            if self.eof {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return false;
                }
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut
                        || e.kind() == std::io::ErrorKind::Interrupted =>
                {
                    continue
                }
                Err(_) => {
                    self.eof = true;
                    return false;
                }
            }
        }
        true
    }

    /// Reads exactly `n` raw bytes (for the protocol-header reply).
    pub fn read_bytes(&mut self, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        if !self.fill(n, Instant::now() + timeout) {
            return None;
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Reads one frame; `None` on timeout or EOF (check `eof`).
    pub fn read_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        if !self.fill(7, deadline) {
            return None;
        }
        let size = u32::from_be_bytes(self.buf[3..7].try_into().unwrap()) as usize;
        if !self.fill(7 + size + 1, deadline) {
            return None;
        }
        let f = Frame {
            kind: self.buf[0],
            channel: u16::from_be_bytes([self.buf[1], self.buf[2]]),
            payload: self.buf[7..7 + size].to_vec(),
        };
        assert_eq!(self.buf[7 + size], FRAME_END, "server sent a bad frame-end");
        self.buf.drain(..8 + size);
        Some(f)
    }

    /// Reads frames until connection.close arrives (skipping anything else), answers
    /// close-ok and returns (reply code, reply text, class id, method id).
    pub fn expect_close(&mut self) -> (u16, String, u16, u16) {
        self.expect_close_within(STEP)
    }

    pub fn expect_close_within(&mut self, timeout: Duration) -> (u16, String, u16, u16) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(f) = self.read_frame(left) else {
                panic!("no connection.close within {timeout:?} (eof={})", self.eof);
            };
            if f.channel == 0 && f.is_method(10, 50) {
                let mut a = f.args();
                let r = (a.short(), a.shortstr(), a.short(), a.short());
                self.send_method(0, &connection_close_ok());
                return r;
            }
        }
    }

    /// Reads frames until channel.close on `channel`, answers close-ok and returns
    /// (reply code, reply text, class id, method id).
    pub fn expect_channel_close(&mut self, channel: u16) -> (u16, String, u16, u16) {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(f) = self.read_frame(left) else {
                panic!("no channel.close (eof={})", self.eof);
            };
            if f.channel == 0 && f.is_method(10, 50) {
                let mut a = f.args();
                panic!(
                    "got connection.close {} {:?} instead of channel.close",
                    a.short(),
                    a.shortstr()
                );
            }
            if f.channel == channel && f.is_method(20, 40) {
                let mut a = f.args();
                let r = (a.short(), a.shortstr(), a.short(), a.short());
                self.send_method(channel, &channel_close_ok());
                return r;
            }
        }
    }

    /// True if the server closes the socket within `timeout` (any frames received
    /// meanwhile are discarded).
    pub fn is_closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.buf.clear();
            if self.eof {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.fill(1, deadline);
        }
    }

    /// Politely closes the connection (close / close-ok).
    pub fn close(mut self) {
        self.send_method(0, &connection_close(200, "bye"));
        let deadline = Instant::now() + STEP;
        while let Some(f) = self.read_frame(deadline.saturating_duration_since(Instant::now())) {
            if f.is_method(10, 51) {
                break;
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------
// Higher-level lapin fixture
// ---------------------------------------------------------------------------------

use lapin::options::{
    BasicGetOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions,
};
use lapin::Confirmation;
use lapin::{Channel, ExchangeKind};

/// A connection plus a publisher-confirms channel, tracking what it declared so it can
/// clean up. Queues are declared exclusive (they vanish with the connection);
/// exchanges are deleted by `cleanup`.
pub struct Fixture {
    pub conn: Connection,
    /// Channel in confirm mode: `publish` returns once the broker has routed.
    pub ch: Channel,
    exchanges: Mutex<Vec<String>>,
}

/// basic.consume of `q` on `ch` with consumer tag `tag` ("" = server-named).
pub async fn consume(ch: &Channel, q: &str, tag: &str, no_ack: bool) -> lapin::Consumer {
    step(
        "basic_consume",
        ch.basic_consume(
            q.into(),
            tag.into(),
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap()
}

/// A new channel on `conn`, in publisher-confirm mode.
pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = step("create_channel", conn.create_channel()).await.unwrap();
    step(
        "confirm_select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    ch
}

impl Fixture {
    pub async fn open(uri: &str) -> Fixture {
        let conn = connect(uri).await;
        let ch = confirm_channel(&conn).await;
        Fixture {
            conn,
            ch,
            exchanges: Mutex::new(Vec::new()),
        }
    }

    pub async fn channel(&self) -> Channel {
        step("create_channel", self.conn.create_channel())
            .await
            .unwrap()
    }

    /// Declares an exclusive queue with a unique name derived from `prefix`.
    pub async fn queue(&self, prefix: &str) -> String {
        let name = unique(prefix);
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        self.declare_queue(&name, exclusive).await;
        name
    }

    /// Declares the queue `name` with `options` (no arguments).
    pub async fn declare_queue(&self, name: &str, options: QueueDeclareOptions) {
        step(
            "queue_declare",
            self.ch
                .queue_declare(name.into(), options, FieldTable::default()),
        )
        .await
        .unwrap();
    }

    /// Declares an exchange with a unique name derived from `prefix`.
    pub async fn exchange(&self, prefix: &str, kind: ExchangeKind) -> String {
        let name = unique(prefix);
        step(
            "exchange_declare",
            self.ch.exchange_declare(
                name.as_str().into(),
                kind,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        self.exchanges.lock().unwrap().push(name.clone());
        name
    }

    pub async fn bind(&self, queue: &str, exchange: &str, key: &str, args: FieldTable) {
        step(
            "queue_bind",
            self.ch.queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                args,
            ),
        )
        .await
        .unwrap();
    }

    pub async fn publish(&self, exchange: &str, key: &str, body: &[u8]) -> Confirmation {
        self.publish_with(exchange, key, body, BasicProperties::default(), false)
            .await
    }

    pub async fn publish_with(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> Confirmation {
        step("publish", async {
            self.ch
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    },
                    body,
                    props,
                )
                .await?
                .await
        })
        .await
        .unwrap()
    }

    /// Gets (no-ack) every message currently in `queue`, as UTF-8 strings.
    pub async fn drain(&self, queue: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let m = step(
                "basic_get",
                self.ch
                    .basic_get(queue.into(), BasicGetOptions { no_ack: true }),
            )
            .await
            .unwrap();
            match m {
                Some(m) => out.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
                None => return out,
            }
        }
    }

    /// Deletes the exchanges this fixture declared and closes the connection.
    pub async fn cleanup(self) {
        let names = std::mem::take(&mut *self.exchanges.lock().unwrap());
        if let Ok(ch) = self.conn.create_channel().await {
            for x in names {
                let _ = step(
                    "exchange_delete",
                    ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()),
                )
                .await;
            }
        }
        let _ = step("connection close", self.conn.close(200, "bye".into())).await;
    }
}

/// (message count, consumer count) of `queue` via a passive declare on a fresh channel
/// of `conn`; `None` if the queue does not exist (404).
pub async fn queue_counts(conn: &Connection, queue: &str) -> Option<(u32, u32)> {
    let ch = step("create_channel", conn.create_channel()).await.unwrap();
    let r = step(
        "passive queue_declare",
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    match r {
        Ok(q) => {
            let _ = ch.close(200, "ok".into()).await;
            Some((q.message_count(), q.consumer_count()))
        }
        Err(e) => {
            assert_eq!(amqp_error(&e).map(|x| x.0), Some(404), "{e:?}");
            None
        }
    }
}

/// Builds a FieldTable from (key, value) pairs.
pub fn table(entries: &[(&str, lapin::types::AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Long-string AMQP value.
pub fn s(v: &str) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongString(v.into())
}

impl Fixture {
    /// (message count, consumer count) of `queue` via a passive declare on a fresh
    /// channel; `None` if the queue does not exist (404).
    pub async fn counts(&self, queue: &str) -> Option<(u32, u32)> {
        queue_counts(&self.conn, queue).await
    }

    /// Polls `counts` until it equals `want` (10 s deadline).
    pub async fn wait_counts(&self, queue: &str, want: Option<(u32, u32)>) {
        let end = Instant::now() + STEP;
        loop {
            let last = self.counts(queue).await;
            if last == want {
                return;
            }
            assert!(
                Instant::now() < end,
                "queue {queue}: counts {last:?}, wanted {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes each body (confirmed) to the default exchange.
    pub async fn fill(&self, queue: &str, bodies: &[&str]) {
        for b in bodies {
            self.publish("", queue, b.as_bytes()).await;
        }
    }
}

/// Next delivery from a consumer, panicking after `STEP`.
pub async fn next_delivery(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    step("next delivery", c.next())
        .await
        .expect("consumer stream ended")
        .expect("delivery error")
}

/// Asserts the consumer receives nothing within `d` (a bounded negative check).
pub async fn assert_no_delivery(c: &mut lapin::Consumer, d: Duration) {
    if let Ok(Some(x)) = tokio::time::timeout(d, c.next()).await {
        panic!("unexpected delivery: {:?}", x.map(|d| d.data));
    }
}

pub fn body(d: &lapin::message::Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}
