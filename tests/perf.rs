//! Integration tests for the `warren-perf` binary.
//!
//! Broker: `WARREN_TEST_PORT` if set (e.g. 5672 for a local RabbitMQ), else a
//! `warren` spawned on an ephemeral port with a temporary data directory.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PERF: &str = env!("CARGO_BIN_EXE_warren-perf");

/// A broker to test against; kills the spawned one on drop.
struct Broker {
    port: u16,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Broker {
    fn start() -> Broker {
        if let Ok(p) = std::env::var("WARREN_TEST_PORT") {
            let port = p.trim().parse().expect("WARREN_TEST_PORT is a port number");
            return Broker {
                port,
                child: None,
                _dir: None,
            };
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "--amqp-port",
                "0",
                "--http-port",
                "0",
                "--prometheus-port",
                "0",
                "--data-dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn warren");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("warren listening on amqp://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                    let _ = tx.send(port.parse::<u16>().ok());
                }
            }
        });
        let mut b = Broker {
            port: 0,
            child: Some(child),
            _dir: Some(dir),
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(port)) => b.port = port,
            _ => panic!("warren did not print its listening line within 20 s"),
        }
        b
    }

    fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

fn perf(args: &[&str]) -> Output {
    Command::new(PERF)
        .args(args)
        .output()
        .expect("run warren-perf")
}

/// A name unique to this test process and `tag`, so that parallel tests do not
/// share queues or routing keys.
fn unique(tag: &str) -> String {
    format!("warren-perf-test-{tag}-{}", std::process::id())
}

/// The number after `"key":` in a flat-enough JSON text.
fn json_num(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} missing in {json}"))
        + pat.len();
    let num: String = json[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    num.parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unreachable_broker_is_a_clear_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let o = perf(&["-h", &uri, "-C", "10"]);
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert!(
        err.starts_with(&format!(
            "warren-perf: cannot connect to 127.0.0.1:{port}: "
        )),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn bad_options_are_rejected() {
    let o = perf(&["-s", "4"]);
    assert!(!o.status.success());
    assert!(stderr_of(&o).contains("at least 12"), "{}", stderr_of(&o));
    let o = perf(&["-h", "http://x"]);
    assert!(!o.status.success());
    let o = perf(&["--help"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("--multi-ack-every"));
}

#[test]
fn fixed_count_run_sends_and_receives_everything() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let q = unique("count");
    let o = perf(&[
        "-h",
        &b.uri(),
        "-x",
        "1",
        "-y",
        "1",
        "-C",
        "1000",
        "-z",
        "60",
        "-u",
        &q,
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let j = std::fs::read_to_string(&json).unwrap();
    assert_eq!(json_num(&j, "sent"), 1000.0, "{j}");
    assert_eq!(json_num(&j, "received"), 1000.0, "{j}");
    assert_eq!(json_num(&j, "count"), 1000.0, "latency samples: {j}");
    assert!(json_num(&j, "p99") > 0.0, "{j}");
}

#[test]
fn confirms_and_multi_ack_and_two_queues() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let q = unique("confirm");
    let o = perf(&[
        "-h",
        &b.uri(),
        "-x",
        "2",
        "-y",
        "1",
        "--queues",
        "2",
        "-t",
        "fanout",
        "-e",
        &q,
        "-C",
        "500",
        "-c",
        "50",
        "-q",
        "100",
        "-A",
        "10",
        "-s",
        "100",
        "-z",
        "60",
        "-u",
        &q,
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let j = std::fs::read_to_string(&json).unwrap();
    assert_eq!(json_num(&j, "sent"), 1000.0, "{j}");
    assert_eq!(json_num(&j, "confirmed"), 1000.0, "{j}");
    assert_eq!(json_num(&j, "received"), 2000.0, "{j}");
}

#[test]
fn broker_closing_the_channel_is_reported() {
    let b = Broker::start();
    let q = unique("close");
    let o = perf(&[
        "-h",
        &b.uri(),
        "--predeclared",
        "-e",
        &format!("{q}-no-such-exchange"),
        "-y",
        "0",
        "-C",
        "10",
        "-z",
        "30",
    ]);
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert!(err.starts_with("warren-perf: "), "{err}");
    assert!(err.contains("closed by broker: 404"), "{err}");
}

#[test]
fn wrong_password_is_reported() {
    let b = Broker::start();
    let uri = format!("amqp://guest:wrong@127.0.0.1:{}/%2f", b.port);
    let o = perf(&["-h", &uri, "-C", "10", "-z", "30"]);
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert!(err.starts_with("warren-perf: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn self_tests_run() {
    let o = perf(&["--sink", "-x", "1", "-z", "1", "--quiet"]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("summary:"));
    let o = perf(&["--source", "-y", "1", "-z", "1", "--quiet"]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("summary:"));
}
