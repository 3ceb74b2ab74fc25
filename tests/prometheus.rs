//! The Prometheus listener against a real broker: `/metrics` and `/metrics/per-object`
//! parse with the reference parser (the `prometheus-client` Python package's, in a venv
//! under `target/prom-venv`), carry RabbitMQ's families with their types, and their
//! values move with what a lapin client does and agree with the management API.
//!
//! Runs against RabbitMQ too (`WARREN_TEST_PORT=5672`): the global counters there are
//! shared with whoever else uses it, so they are compared as growth (at least what this
//! test did); per-queue values use a queue of this test's own.

mod support;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::Value;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{unique, wait_until, Broker};

/// Creates `target/prom-venv` with `prometheus-client` unless it already works (under a
/// lock, as tests/pika.rs does for its venv), and returns its python.
fn ensure_venv() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    fs::create_dir_all(&target).expect("create target/");
    let venv = target.join("prom-venv");
    let python = venv.join("bin").join("python");
    let ready = |p: &Path| {
        p.exists()
            && Command::new(p)
                .args(["-c", "import prometheus_client.parser"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    };
    let lock = File::create(target.join("prom-venv.lock")).expect("create venv lock file");
    lock.lock().expect("lock target/prom-venv.lock");
    if !ready(&python) {
        if !python.exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "python3 -m venv {} failed", venv.display());
        }
        let ok = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .arg("prometheus-client==0.*")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && ready(&python), "cannot install prometheus-client");
    }
    drop(lock);
    python
}

/// Parses with `prometheus_client.parser` and prints, as JSON, the families' types and
/// every sample as `name{label="v",...}` (labels sorted) with its value.
const PARSE: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
types, samples = {}, {}
for f in text_string_to_metric_families(sys.stdin.read()):
    types[f.name] = f.type
    for s in f.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        value = s.value if math.isfinite(s.value) else str(s.value)  # JSON has no NaN
        samples[s.name + ("{%s}" % labels if labels else "")] = value
print(json.dumps({"types": types, "samples": samples}))
"#;

struct Scrape {
    types: HashMap<String, String>,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(f64::NAN)
    }
}

fn scrape(python: &Path, url: &str) -> Scrape {
    let resp = ureq::get(url).call().expect("scrape");
    assert_eq!(resp.status(), 200);
    let ct = resp.header("content-type").unwrap_or("").to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.into_string().expect("scrape body");
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed the parser");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the parser rejected the scrape:\n{text}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("parser JSON");
    let types = v["types"]
        .as_object()
        .expect("types")
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap_or("").to_string()))
        .collect();
    let samples = v["samples"]
        .as_object()
        .expect("samples")
        .iter()
        .map(|(k, x)| (k.clone(), x.as_f64().unwrap_or(f64::NAN)))
        .collect();
    Scrape { types, samples }
}

/// Deletes a queue through the API when dropped, so that a failed assertion does not
/// leave the test's queue behind (in RabbitMQ, where the suite can run too).
struct DeleteQueue<'a>(&'a Broker, String);

impl Drop for DeleteQueue<'_> {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/api/queues/%2F/{}", self.0.http_url(), self.1))
            .set("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
            .call();
    }
}

fn api(b: &Broker, path: &str) -> Value {
    ureq::get(&format!("{}{path}", b.http_url()))
        .set("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        .call()
        .expect("API call")
        .into_json()
        .expect("API JSON")
}

const GLOBAL: &str = "{protocol=\"amqp091\"}";
const CLASSIC: &str = "{protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"}";

#[test]
fn scrapes_parse_and_agree_with_the_api_and_with_what_was_published() {
    let python = ensure_venv();
    let b = Broker::start();
    let metrics = format!("{}/metrics", b.prometheus_url());
    let per_object = format!("{}/metrics/per-object", b.prometheus_url());

    let before = scrape(&python, &metrics);
    for (family, kind) in [
        ("rabbitmq_queue_messages_ready", "gauge"),
        ("rabbitmq_queue_messages_unacked", "gauge"),
        ("rabbitmq_queue_messages", "gauge"),
        ("rabbitmq_connections", "gauge"),
        ("rabbitmq_channels", "gauge"),
        ("rabbitmq_consumers", "gauge"),
        ("rabbitmq_queues", "gauge"),
        ("rabbitmq_global_messages_received", "counter"),
        ("rabbitmq_global_messages_delivered", "counter"),
        ("rabbitmq_global_messages_confirmed", "counter"),
        ("rabbitmq_global_messages_acknowledged", "counter"),
        ("rabbitmq_global_messages_routed", "counter"),
        ("rabbitmq_global_messages_unroutable_dropped", "counter"),
        ("rabbitmq_global_messages_unroutable_returned", "counter"),
        ("rabbitmq_process_resident_memory_bytes", "gauge"),
        ("rabbitmq_disk_space_available_bytes", "gauge"),
        ("rabbitmq_alarms_memory_used_watermark", "unknown"),
        ("rabbitmq_alarms_free_disk_space_watermark", "unknown"),
        ("rabbitmq_build_info", "unknown"),
        ("rabbitmq_identity_info", "unknown"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert!(before.get("rabbitmq_process_resident_memory_bytes") > 0.0);

    // What this test does: 5 confirmed publishes into its queue, 1 unroutable dropped,
    // 2 basic.get with manual ack, both acked; 3 stay ready.
    let q = unique("prom-q");
    let _cleanup = DeleteQueue(&b, q.clone());
    // One runtime for the test: lapin's connection lives as long as it does.
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let conn = rt
        .block_on(lapin::Connection::connect(&b.uri(), Default::default()))
        .expect("connect");
    let ch = rt.block_on(conn.create_channel()).expect("channel");
    rt.block_on(ch.confirm_select(ConfirmSelectOptions::default()))
        .expect("confirm.select");
    rt.block_on(ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .expect("declare");
    for (rk, body) in [(&q[..], "1"), (&q, "2"), (&q, "3"), (&q, "4"), (&q, "5")]
        .into_iter()
        .chain([(&*unique("prom-nowhere"), "x")])
    {
        let c = rt
            .block_on(ch.basic_publish(
                "".into(),
                rk.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            ))
            .expect("publish");
        rt.block_on(c).expect("confirm");
    }
    for _ in 0..2 {
        let m = rt
            .block_on(ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
            .expect("get")
            .expect("a message");
        rt.block_on(m.delivery.ack(BasicAckOptions::default()))
            .expect("ack");
    }

    // RabbitMQ updates its figures on its own interval: wait for them.
    let grew = |s: &Scrape, series: &str, by: f64| s.get(series) - before.get(series) >= by;
    let mut after = scrape(&python, &metrics);
    let ok = wait_until(Duration::from_secs(20), || {
        after = scrape(&python, &metrics);
        grew(
            &after,
            &format!("rabbitmq_global_messages_received_total{GLOBAL}"),
            6.0,
        ) && grew(
            &after,
            &format!("rabbitmq_global_messages_routed_total{GLOBAL}"),
            5.0,
        ) && grew(
            &after,
            &format!("rabbitmq_global_messages_confirmed_total{GLOBAL}"),
            6.0,
        ) && grew(
            &after,
            &format!("rabbitmq_global_messages_unroutable_dropped_total{GLOBAL}"),
            1.0,
        ) && grew(
            &after,
            &format!("rabbitmq_global_messages_delivered_total{CLASSIC}"),
            2.0,
        ) && grew(
            &after,
            &format!("rabbitmq_global_messages_delivered_get_manual_ack_total{CLASSIC}"),
            2.0,
        ) && grew(
            &after,
            &format!("rabbitmq_global_messages_acknowledged_total{CLASSIC}"),
            2.0,
        ) && after.get("rabbitmq_connections") >= 1.0
            && after.get("rabbitmq_channels") >= 1.0
            && after.get("rabbitmq_queue_messages_ready") >= 3.0
    });
    assert!(ok, "global counters did not move: {:?}", after.samples);

    // Per object: this test's queue, the same figures as the API's.
    let series = format!("rabbitmq_queue_messages_ready{{queue=\"{q}\",vhost=\"/\"}}");
    let mut po = scrape(&python, &per_object);
    let ok = wait_until(Duration::from_secs(20), || {
        po = scrape(&python, &per_object);
        po.get(&series) == 3.0
    });
    assert!(ok, "{series} is {}", po.get(&series));
    assert!(
        po.samples
            .keys()
            .all(|k| !k.starts_with("rabbitmq_queue_messages_ready{}")),
        "per-object queue samples are labelled"
    );
    let path = format!("/api/queues/%2F/{q}");
    let mut from_api = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        from_api = api(&b, &path);
        from_api["messages_ready"] == 3 && from_api["message_stats"]["publish"] == 5
    });
    assert!(ok, "API: {from_api}");
    assert_eq!(from_api["message_stats"]["get"], 2, "{from_api}");
    assert_eq!(from_api["message_stats"]["ack"], 2, "{from_api}");
    let unacked = format!("rabbitmq_queue_messages_unacked{{queue=\"{q}\",vhost=\"/\"}}");
    assert_eq!(
        po.get(&unacked),
        from_api["messages_unacknowledged"].as_f64().unwrap_or(-1.0)
    );

    // The exchange it was published through, and the connection's bytes, as the API
    // shows them (the same counters as the scrape).
    let mut x = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        x = api(&b, "/api/exchanges/%2F/amq.default");
        x["message_stats"]["publish_in"].as_u64() >= Some(6)
            && x["message_stats"]["publish_out"].as_u64() >= Some(5)
    });
    assert!(ok, "default exchange: {x}");
    let mut conns = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        conns = api(&b, "/api/connections");
        conns.as_array().is_some_and(|a| {
            a.iter()
                .any(|c| c["recv_oct"].as_u64() > Some(100) && c["send_oct"].as_u64() > Some(100))
        })
    });
    assert!(ok, "connections: {conns}");

    rt.block_on(ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .expect("delete");
    let _ = rt.block_on(conn.close(200, "bye".into()));
}

/// With a 1 s interval the overview's publish rate moves while a publisher runs, and
/// the chart samples come newest first at the asked spacing. Warren only (the flag).
#[test]
fn overview_rates_move_while_publishing() {
    let Some(b) = Broker::start_with(&["--stats-interval", "1"]) else {
        return;
    };
    let q = unique("rate-q");
    let _cleanup = DeleteQueue(&b, q.clone());
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let conn = rt
        .block_on(lapin::Connection::connect(&b.uri(), Default::default()))
        .expect("connect");
    let ch = rt.block_on(conn.create_channel()).expect("channel");
    rt.block_on(ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .expect("declare");
    let mut overview = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        for _ in 0..50 {
            let _ = rt.block_on(ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default(),
            ));
        }
        overview = api(&b, "/api/overview?msg_rates_age=60&msg_rates_incr=1");
        overview["message_stats"]["publish_details"]["rate"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    });
    assert!(ok, "{}", overview["message_stats"]);
    let d = &overview["message_stats"]["publish_details"];
    let samples = d["samples"].as_array().cloned().unwrap_or_default();
    assert_eq!(samples.len(), 61);
    let t = |i: usize| samples[i]["timestamp"].as_u64().unwrap_or(0);
    assert_eq!(t(0) - t(1), 1000, "newest first, 1 s apart");
    assert!(samples[0]["sample"].as_u64() >= samples[60]["sample"].as_u64());
    let q_stats = api(&b, &format!("/api/queues/%2F/{q}"));
    assert!(
        q_stats["message_stats"]["publish"].as_u64() > Some(0),
        "{q_stats}"
    );
    let _ = rt.block_on(conn.close(200, "bye".into()));
}

/// The churn counters (connections, channels and queues made and removed) and the
/// per-channel families move with what a client does, in the scrape and in the
/// overview's `churn_rates`.
#[test]
fn churn_and_channel_families_follow_the_client() {
    let python = ensure_venv();
    let b = Broker::start();
    let metrics = format!("{}/metrics", b.prometheus_url());
    let per_object = format!("{}/metrics/per-object", b.prometheus_url());
    let before = scrape(&python, &metrics);
    let churn_before = api(&b, "/api/overview")["churn_rates"].clone();
    for (family, kind) in [
        ("rabbitmq_connections_opened", "counter"),
        ("rabbitmq_connections_closed", "counter"),
        ("rabbitmq_channels_opened", "counter"),
        ("rabbitmq_channels_closed", "counter"),
        ("rabbitmq_queues_declared", "counter"),
        ("rabbitmq_queues_created", "counter"),
        ("rabbitmq_queues_deleted", "counter"),
        ("rabbitmq_channel_messages_published", "counter"),
        ("rabbitmq_channel_messages_delivered_ack", "counter"),
        ("rabbitmq_channel_get_empty", "counter"),
        ("rabbitmq_channel_consumers", "gauge"),
        ("rabbitmq_channel_messages_unacked", "gauge"),
        ("rabbitmq_process_open_fds", "gauge"),
        ("rabbitmq_process_max_fds", "gauge"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert!(before.get("rabbitmq_process_open_fds") > 0.0);
    assert!(before.get("rabbitmq_process_max_fds") >= before.get("rabbitmq_process_open_fds"));

    // One connection, three channels (one closed by the client, one by the broker), one
    // queue declared twice and deleted, 4 publishes and an empty basic.get on a channel
    // that stays open.
    let q = unique("churn-q");
    let _cleanup = DeleteQueue(&b, q.clone());
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let conn = rt
        .block_on(lapin::Connection::connect(&b.uri(), Default::default()))
        .expect("connect");
    let ch = rt.block_on(conn.create_channel()).expect("channel");
    let ch2 = rt.block_on(conn.create_channel()).expect("channel 2");
    let ch3 = rt.block_on(conn.create_channel()).expect("channel 3");
    rt.block_on(ch3.close(200, "bye".into()))
        .expect("close channel 3");
    for _ in 0..2 {
        rt.block_on(ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ))
        .expect("declare");
    }
    for _ in 0..4 {
        rt.block_on(ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        ))
        .expect("publish");
    }
    let got = rt
        .block_on(ch2.basic_get(
            unique("churn-none").as_str().into(),
            BasicGetOptions::default(),
        ))
        .err();
    // A get from a missing queue is a 404 that closes ch2: a channel closed by the broker.
    assert!(got.is_some(), "no such queue");
    rt.block_on(ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()))
        .expect("purge");
    let empty = rt
        .block_on(ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
        .expect("get");
    assert!(empty.is_none());
    rt.block_on(ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .expect("delete");

    let grew = |s: &Scrape, series: &str, by: f64| s.get(series) - before.get(series) >= by;
    let mut after = scrape(&python, &metrics);
    let ok = wait_until(Duration::from_secs(20), || {
        after = scrape(&python, &metrics);
        grew(&after, "rabbitmq_connections_opened_total", 1.0)
            && grew(&after, "rabbitmq_channels_opened_total", 3.0)
            // ch3 closed, ch2 closed by the 404
            && grew(&after, "rabbitmq_channels_closed_total", 2.0)
            && grew(&after, "rabbitmq_queues_declared_total", 2.0)
            && grew(&after, "rabbitmq_queues_created_total", 1.0)
            && grew(&after, "rabbitmq_queues_deleted_total", 1.0)
            // ch is open: its publishes are in the sum over live channels.
            && grew(&after, "rabbitmq_channel_messages_published_total", 4.0)
    });
    let ours: Vec<_> = after
        .samples
        .iter()
        .filter(|(k, _)| {
            k.contains("_opened_")
                || k.contains("_closed_")
                || k.starts_with("rabbitmq_queues_")
                || k.starts_with("rabbitmq_channel_messages_published")
        })
        .map(|(k, v)| (k, v - before.get(k)))
        .collect();
    assert!(ok, "churn did not move (growth): {ours:?}");

    // Per object: ch, still open, has its own sample with the `channel` label.
    let mut po = scrape(&python, &per_object);
    let ok = wait_until(Duration::from_secs(20), || {
        po = scrape(&python, &per_object);
        po.samples.iter().any(|(k, v)| {
            k.starts_with("rabbitmq_channel_messages_published_total{channel=") && *v >= 4.0
        })
    });
    let channel_samples: Vec<_> = po
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with("rabbitmq_channel_"))
        .collect();
    assert!(ok, "per-channel samples: {channel_samples:?}");

    // The overview's churn_rates count the same events.
    let mut churn = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        churn = api(&b, "/api/overview")["churn_rates"].clone();
        let d =
            |k: &str| churn[k].as_f64().unwrap_or(0.0) - churn_before[k].as_f64().unwrap_or(0.0);
        d("connection_created") >= 1.0
            && d("channel_created") >= 3.0
            && d("queue_declared") >= 2.0
            && d("queue_created") >= 1.0
            && d("queue_deleted") >= 1.0
            && churn["queue_deleted_details"]["rate"].is_number()
    });
    assert!(ok, "churn_rates: {churn} (before: {churn_before})");
    let _ = rt.block_on(conn.close(200, "bye".into()));
}
