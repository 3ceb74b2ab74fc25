//! Warren-only: what `--data-dir` promises across restarts (SIGTERM and SIGKILL), torn
//! or garbled segment tails, unusable data directories, and space reclamation.
//!
//! Every test owns its broker processes and a data directory that outlives them; all
//! are skipped when `WARREN_TEST_PORT` is set.
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::PublisherConfirm;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use support::*;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A fresh data directory kept across restarts; `None` in external mode.
fn data_dir() -> Option<tempfile::TempDir> {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return None;
    }
    Some(tempfile::TempDir::new().expect("tempdir"))
}

fn start(dir: &Path) -> Broker {
    Broker::spawn_in(dir, &[]).expect("not external")
}

/// A connection with one channel in confirm mode.
struct Client {
    conn: Connection,
    ch: Channel,
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn transient() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(1)
}

impl Client {
    async fn open(b: &Broker) -> Client {
        let conn = b.connect().await;
        let ch = confirm_channel(&conn).await;
        Client { conn, ch }
    }

    async fn channel(&self) -> Channel {
        step("create_channel", self.conn.create_channel())
            .await
            .unwrap()
    }

    /// Declares a queue; returns its (possibly server-chosen) name.
    async fn queue(&self, name: &str, durable: bool, exclusive: bool) -> String {
        let q = step(
            "queue_declare",
            self.ch.queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable,
                    exclusive,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        q.name().as_str().to_string()
    }

    async fn exchange(&self, name: &str, durable: bool) {
        step(
            "exchange_declare",
            self.ch.exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }

    async fn bind(&self, queue: &str, exchange: &str, key: &str) {
        step(
            "queue_bind",
            self.ch.queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }

    /// Publishes without waiting for the confirm.
    async fn publish_async(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> PublisherConfirm {
        step(
            "basic_publish",
            self.ch.basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            ),
        )
        .await
        .unwrap()
    }

    /// Publishes and waits for the broker's ack.
    async fn publish(&self, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
        let c = self.publish_async(exchange, key, body, props).await;
        expect_ack(c).await;
    }

    /// Publishes every body (pipelined), then waits for all confirms.
    async fn publish_all(&self, key: &str, bodies: &[String], props: BasicProperties) {
        let mut pending = Vec::with_capacity(bodies.len());
        for b in bodies {
            pending.push(
                self.publish_async("", key, b.as_bytes(), props.clone())
                    .await,
            );
        }
        for c in pending {
            expect_ack(c).await;
        }
    }

    /// Gets (no-ack) everything in `queue`: (body, redelivered).
    async fn get_all(&self, queue: &str) -> Vec<(String, bool)> {
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
                Some(m) => out.push((
                    String::from_utf8_lossy(&m.delivery.data).into_owned(),
                    m.delivery.redelivered,
                )),
                None => return out,
            }
        }
    }

    /// basic.get with manual ack: (body, delivery tag).
    async fn get_manual(&self, queue: &str) -> (String, u64) {
        let m = step(
            "basic_get",
            self.ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .unwrap()
        .expect("queue unexpectedly empty");
        (
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            m.delivery.delivery_tag,
        )
    }

    /// basic.get with manual ack until empty, acking nothing: (body, redelivered, tag).
    async fn get_all_manual(&self, queue: &str) -> Vec<(String, bool, u64)> {
        let mut out = Vec::new();
        loop {
            let m = step(
                "basic_get",
                self.ch
                    .basic_get(queue.into(), BasicGetOptions { no_ack: false }),
            )
            .await
            .unwrap();
            match m {
                Some(m) => out.push((
                    String::from_utf8_lossy(&m.delivery.data).into_owned(),
                    m.delivery.redelivered,
                    m.delivery.delivery_tag,
                )),
                None => return out,
            }
        }
    }

    async fn ack(&self, tag: u64) {
        step(
            "basic_ack",
            self.ch.basic_ack(tag, BasicAckOptions::default()),
        )
        .await
        .unwrap();
    }

    /// A synchronous round trip on the confirm channel: everything sent on it before
    /// (acks included) has been handled by the broker when this returns.
    async fn barrier(&self) {
        step(
            "basic_qos barrier",
            self.ch.basic_qos(0, Default::default()),
        )
        .await
        .unwrap();
    }

    /// (messages, consumers) of a queue, or `None` if it does not exist.
    async fn counts(&self, queue: &str) -> Option<(u32, u32)> {
        queue_counts(&self.conn, queue).await
    }

    async fn exchange_exists(&self, name: &str) -> bool {
        let ch = self.channel().await;
        let r = step(
            "passive exchange_declare",
            ch.exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await;
        match r {
            Ok(()) => {
                let _ = ch.close(200, "ok".into()).await;
                true
            }
            Err(e) => {
                assert_eq!(amqp_error(&e).map(|x| x.0), Some(404), "{e:?}");
                false
            }
        }
    }

    async fn close(self) {
        let _ = step("connection close", self.conn.close(200, "bye".into())).await;
    }
}

async fn expect_ack(c: PublisherConfirm) {
    match step("publisher confirm", c).await {
        Ok(Confirmation::Ack(_)) => {}
        other => panic!("expected a publisher ack, got {other:?}"),
    }
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

fn not_redelivered(v: &[String]) -> Vec<(String, bool)> {
    v.iter().map(|b| (b.clone(), false)).collect()
}

/// `msgs.*` files of a data directory, by segment number.
fn segments(dir: &Path) -> Vec<(u32, PathBuf, u64)> {
    let mut v: Vec<(u32, PathBuf, u64)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("msgs.")?.parse::<u32>().ok()?;
            Some((n, e.path(), e.metadata().ok()?.len()))
        })
        .collect();
    v.sort();
    v
}

/// The highest-numbered segment holding at least one record (more than its 8-byte
/// header): every start creates a new, empty one.
fn last_segment(dir: &Path) -> PathBuf {
    segments(dir)
        .into_iter()
        .rev()
        .find(|(_, _, len)| *len > 8)
        .map(|(_, p, _)| p)
        .unwrap_or_else(|| panic!("no non-empty segment in {}", dir.display()))
}

fn msgs_bytes(dir: &Path) -> u64 {
    segments(dir).iter().map(|(_, _, len)| len).sum()
}

// ---------------------------------------------------------------------------------
// Graceful restart
// ---------------------------------------------------------------------------------

#[test]
fn graceful_restart_keeps_durable_entities_and_persistent_messages_only() {
    let Some(dir) = data_dir() else { return };
    let t0 = Instant::now();
    let mut b = start(dir.path());
    let persistent_bodies = bodies("p", 50);
    let server_named = block_on(async {
        let c = Client::open(&b).await;
        c.exchange("dx", true).await;
        c.exchange("tx", false).await;
        c.queue("dq", true, false).await;
        c.queue("tq", false, false).await;
        c.bind("dq", "dx", "k").await;
        c.bind("tq", "dx", "t").await;
        // Persistent and transient messages interleaved in the durable queue, some of
        // them through the durable exchange.
        for (i, body) in persistent_bodies.iter().enumerate() {
            if i % 2 == 0 {
                c.publish("", "dq", body.as_bytes(), persistent()).await;
            } else {
                c.publish("dx", "k", body.as_bytes(), persistent()).await;
            }
            if i % 5 == 0 {
                c.publish("", "dq", format!("transient-{i}").as_bytes(), transient())
                    .await;
                c.publish(
                    "",
                    "dq",
                    format!("nomode-{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await;
            }
        }
        // Persistent messages in queues that must not survive.
        c.publish("", "tq", b"in-transient-queue", persistent())
            .await;
        let sn = c.queue("", true, false).await;
        c.publish("", &sn, b"in-server-named", persistent()).await;
        // An exclusive durable queue of another connection that is still open at the
        // SIGTERM.
        let other = Client::open(&b).await;
        other.queue("exq", true, true).await;
        other
            .publish("", "exq", b"in-exclusive", persistent())
            .await;
        assert_eq!(c.counts("dq").await, Some((50 + 20, 0)));
        c.close().await;
        std::mem::forget(other); // still connected when the broker stops
        sn
    });
    b.stop();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(
            c.get_all("dq").await,
            not_redelivered(&persistent_bodies),
            "the durable queue holds exactly its persistent messages, in order"
        );
        assert!(c.exchange_exists("dx").await, "durable exchange kept");
        c.publish("dx", "k", b"after-restart", persistent()).await;
        assert_eq!(
            c.get_all("dq").await,
            vec![("after-restart".to_string(), false)],
            "the binding dx -k-> dq survived"
        );
        assert!(!c.exchange_exists("tx").await, "non-durable exchange gone");
        assert_eq!(c.counts("tq").await, None, "non-durable queue gone");
        assert_eq!(
            c.counts(&server_named).await,
            None,
            "server-named queue gone"
        );
        assert_eq!(c.counts("exq").await, None, "exclusive queue gone");
        c.close().await;
    });
    b.stop();
    println!("graceful restart test: {:?}", t0.elapsed());
}

#[test]
fn acked_messages_are_not_redelivered_after_a_clean_restart() {
    let Some(dir) = data_dir() else { return };
    let mut b = start(dir.path());
    let all = bodies("m", 10);
    block_on(async {
        let c = Client::open(&b).await;
        c.queue("q", true, false).await;
        c.publish_all("q", &all, persistent()).await;
        // Five deliveries with manual ack; the first four acked, the fifth left
        // unacked when the broker stops.
        let mut tags = Vec::new();
        for want in &all[..5] {
            let (got, tag) = c.get_manual("q").await;
            assert_eq!(&got, want);
            tags.push(tag);
        }
        for tag in &tags[..4] {
            c.ack(*tag).await;
        }
        c.barrier().await;
        std::mem::forget(c);
    });
    b.stop();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        let mut want = vec![(all[4].clone(), true)];
        want.extend(not_redelivered(&all[5..]));
        assert_eq!(
            c.get_all("q").await,
            want,
            "acked messages stay acked; the delivered-unacked one is redelivered"
        );
        c.close().await;
    });
    b.stop();
}

// ---------------------------------------------------------------------------------
// SIGKILL
// ---------------------------------------------------------------------------------

#[test]
fn sigkill_keeps_every_confirmed_message_and_marks_unacked_deliveries() {
    let Some(dir) = data_dir() else { return };
    const N: usize = 1000;
    let t0 = Instant::now();
    let mut b = start(dir.path());
    let all = bodies("k", N);
    block_on(async {
        let c = Client::open(&b).await;
        c.queue("q", true, false).await;
        c.publish_all("q", &all, persistent()).await;
        // Three deliveries with manual ack, never acked.
        for want in &all[..3] {
            assert_eq!(&c.get_manual("q").await.0, want);
        }
        std::mem::forget(c);
    });
    b.kill9();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        let got = c.get_all_manual("q").await;
        let want: Vec<(String, bool)> = all
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i < 3))
            .collect();
        assert_eq!(got.len(), N, "every confirmed message survived SIGKILL");
        let seen: Vec<(String, bool)> = got.iter().map(|(s, r, _)| (s.clone(), *r)).collect();
        assert_eq!(seen, want, "in order; delivered-unacked ones redelivered");
        // Ack the first 10 and let the broker answer a later request on the channel;
        // the rest stay delivered and unacked. After another SIGKILL the acks hold.
        for (_, _, tag) in &got[..10] {
            c.ack(*tag).await;
        }
        c.barrier().await;
        std::mem::forget(c);
    });
    b.kill9();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        let got = c.get_all("q").await;
        // Everything but the 10 acked came back; all N - 10 had been delivered
        // (by get_all_manual), so all are redelivered.
        let want: Vec<(String, bool)> = all[10..].iter().map(|s| (s.clone(), true)).collect();
        assert_eq!(got, want);
        c.close().await;
    });
    b.stop();
    println!("sigkill test: {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------
// Deletes, purges, unbinds
// ---------------------------------------------------------------------------------

#[test]
fn delete_purge_unbind_and_exchange_delete_persist() {
    let Some(dir) = data_dir() else { return };
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        for q in ["gone", "purged", "unbound", "kept"] {
            c.queue(q, true, false).await;
        }
        c.exchange("x1", true).await;
        c.exchange("x2", true).await;
        c.bind("unbound", "x1", "k").await;
        c.bind("kept", "x1", "k").await;
        c.bind("kept", "x2", "k2").await;
        c.publish_all("gone", &bodies("g", 5), persistent()).await;
        c.publish_all("purged", &bodies("p", 5), persistent()).await;
        c.publish("x1", "k", b"fanned", persistent()).await;
        step(
            "queue_delete",
            c.ch.queue_delete("gone".into(), QueueDeleteOptions::default()),
        )
        .await
        .unwrap();
        let purged = step(
            "queue_purge",
            c.ch.queue_purge("purged".into(), QueuePurgeOptions::default()),
        )
        .await
        .unwrap();
        assert_eq!(purged, 5);
        step(
            "queue_unbind",
            c.ch.queue_unbind(
                "unbound".into(),
                "x1".into(),
                "k".into(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        step(
            "exchange_delete",
            c.ch.exchange_delete("x2".into(), ExchangeDeleteOptions::default()),
        )
        .await
        .unwrap();
        c.close().await;
    });
    b.stop();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(c.counts("gone").await, None, "deleted queue stays deleted");
        assert_eq!(c.counts("purged").await, Some((0, 0)), "purge persisted");
        assert!(c.exchange_exists("x1").await);
        assert!(!c.exchange_exists("x2").await, "exchange.delete persisted");
        // The message routed before the unbind is still in both queues.
        assert_eq!(c.get_all("unbound").await, vec![("fanned".into(), false)]);
        assert_eq!(c.get_all("kept").await, vec![("fanned".into(), false)]);
        c.publish("x1", "k", b"after", persistent()).await;
        assert_eq!(c.get_all("unbound").await, vec![], "unbind persisted");
        assert_eq!(c.get_all("kept").await, vec![("after".into(), false)]);
        // A queue re-declared under a deleted one's name does not inherit its messages.
        c.queue("gone", true, false).await;
        assert_eq!(c.counts("gone").await, Some((0, 0)));
        c.close().await;
    });
    b.stop();
    // ... not even after one more restart.
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(c.counts("gone").await, Some((0, 0)));
        assert_eq!(c.counts("purged").await, Some((0, 0)));
        c.close().await;
    });
    b.stop();
}

// ---------------------------------------------------------------------------------
// Torn and corrupt tails
// ---------------------------------------------------------------------------------

/// Publishes 20 persistent messages (confirmed), stops cleanly, lets `damage` edit the
/// last segment, restarts and returns what the queue holds plus the broker's output.
/// Then checks that the recovered store keeps working: one more message, another
/// restart, and the queue holds the survivors plus that message.
fn damaged_tail(damage: impl FnOnce(&Path)) -> (Vec<String>, Vec<String>, String) {
    let dir = tempfile::TempDir::new().unwrap();
    let all = bodies("t", 20);
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        c.queue("q", true, false).await;
        c.publish_all("q", &all, persistent()).await;
        c.close().await;
    });
    b.stop();
    damage(&last_segment(dir.path()));
    let mut b = start(dir.path());
    // Recovery logs to stderr before the listening line reaches stdout, but the two pipes
    // are drained by different threads: wait (bounded) for the line to be captured.
    wait_until(Duration::from_secs(5), || {
        b.logs().contains("torn or corrupt tail")
    });
    let logs = b.logs();
    let got = block_on(async {
        let c = Client::open(&b).await;
        // basic.get without ack: the messages stay in the queue.
        let got: Vec<String> = c
            .get_all_manual("q")
            .await
            .into_iter()
            .map(|(s, r, _)| {
                assert!(!r, "{s} was never delivered");
                s
            })
            .collect();
        c.publish("", "q", b"after-recovery", persistent()).await;
        c.close().await;
        got
    });
    b.stop();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        let mut want: Vec<(String, bool)> = got.iter().map(|s| (s.clone(), true)).collect();
        want.push(("after-recovery".into(), false));
        assert_eq!(
            c.get_all("q").await,
            want,
            "the repaired store keeps working"
        );
        c.close().await;
    });
    b.stop();
    (all, got, logs)
}

#[test]
fn a_truncated_last_record_is_dropped_and_the_rest_recovered() {
    if is_external() {
        return;
    }
    let (all, got, logs) = damaged_tail(|seg| {
        let len = fs::metadata(seg).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(seg).unwrap();
        f.set_len(len - 3).unwrap();
    });
    assert_eq!(got, all[..19], "only the torn last record is lost");
    assert!(logs.contains("torn or corrupt tail"), "{logs}");
}

#[test]
fn a_garbled_last_record_is_dropped_and_the_rest_recovered() {
    if is_external() {
        return;
    }
    let (all, got, logs) = damaged_tail(|seg| {
        let mut data = fs::read(seg).unwrap();
        let n = data.len();
        data[n - 2] ^= 0xA5;
        data[n - 1] ^= 0x5A;
        fs::write(seg, data).unwrap();
    });
    assert_eq!(got, all[..19], "only the garbled last record is lost");
    assert!(logs.contains("torn or corrupt tail"), "{logs}");
}

#[test]
fn garbage_after_the_last_record_loses_nothing() {
    if is_external() {
        return;
    }
    let (all, got, logs) = damaged_tail(|seg| {
        // xorshift: deterministic "random" bytes.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let garbage: Vec<u8> = (0..777)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut data = fs::read(seg).unwrap();
        data.extend_from_slice(&garbage);
        fs::write(seg, data).unwrap();
    });
    assert_eq!(got, all, "nothing lost");
    assert!(logs.contains("dropping 777 bytes"), "{logs}");
}

// ---------------------------------------------------------------------------------
// Unusable data directories
// ---------------------------------------------------------------------------------

fn assert_refused(f: &StartFailure, needle: &str) {
    let status = f
        .status
        .expect("warren neither started nor exited within 20 s");
    assert!(
        !status.success(),
        "exit status {status}; output:\n{}",
        f.logs
    );
    assert!(
        f.stderr.contains(needle),
        "stderr should mention {needle:?}; stderr:\n{}",
        f.stderr
    );
}

#[test]
fn a_regular_file_as_data_dir_is_refused_with_its_path() {
    let Some(dir) = data_dir() else { return };
    let file = dir.path().join("not-a-directory");
    fs::write(&file, b"hello").unwrap();
    let f = Broker::start_failure(&file, &[]);
    assert_refused(&f, &file.display().to_string());
    println!("stderr: {}", f.stderr.trim());
}

#[test]
fn a_garbage_meta_file_is_refused() {
    let Some(dir) = data_dir() else { return };
    fs::write(dir.path().join("meta"), b"this is not a warren snapshot\n").unwrap();
    let f = Broker::start_failure(dir.path(), &[]);
    assert_refused(&f, "meta");
    println!("stderr: {}", f.stderr.trim());
}

#[test]
fn a_damaged_meta_snapshot_is_refused() {
    let Some(dir) = data_dir() else { return };
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        c.queue("q", true, false).await;
        c.close().await;
    });
    b.stop();
    let path = dir.path().join("meta");
    let mut data = fs::read(&path).unwrap();
    assert!(data.len() > 12, "meta is {} bytes", data.len());
    let n = data.len();
    data[n - 3] ^= 0xFF;
    fs::write(&path, data).unwrap();
    let f = Broker::start_failure(dir.path(), &[]);
    assert_refused(&f, "meta");
}

#[test]
fn a_second_broker_on_the_same_dir_is_refused() {
    let Some(dir) = data_dir() else { return };
    let mut first = start(dir.path());
    let f = Broker::start_failure(dir.path(), &[]);
    assert_refused(&f, "in use");
    println!("stderr: {}", f.stderr.trim());
    // The first one is unaffected.
    block_on(roundtrip(&first.uri()));
    first.stop();
    // And once it is gone, the directory can be used again.
    let mut again = start(dir.path());
    again.stop();
}

// ---------------------------------------------------------------------------------
// Space
// ---------------------------------------------------------------------------------

#[test]
fn fully_acked_segments_are_deleted() {
    let Some(dir) = data_dir() else { return };
    const N: usize = 1100;
    const SEGMENT: u64 = 64 * 1024 * 1024;
    let t0 = Instant::now();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        c.queue("big", true, false).await;
        let mut body = vec![0u8; 64 * 1024];
        for chunk in 0..N / 100 {
            let mut pending = Vec::new();
            for i in 0..100 {
                let id = (chunk * 100 + i) as u32;
                body[..4].copy_from_slice(&id.to_be_bytes());
                pending.push(c.publish_async("", "big", &body, persistent()).await);
            }
            for p in pending {
                expect_ack(p).await;
            }
        }
        let before = msgs_bytes(dir.path());
        assert!(
            before > SEGMENT && segments(dir.path()).len() >= 2,
            "the test needs more than one segment: {} bytes in {:?}",
            before,
            segments(dir.path())
        );
        println!("published {N} x 64 KiB in {:?}", t0.elapsed());
        // Take and ack them all (basic.get with manual ack, acked in batches).
        let mut n = 0;
        loop {
            let m = step(
                "basic_get",
                c.ch.basic_get("big".into(), BasicGetOptions { no_ack: false }),
            )
            .await
            .unwrap();
            let Some(m) = m else { break };
            assert_eq!(
                u32::from_be_bytes(m.delivery.data[..4].try_into().unwrap()),
                n as u32
            );
            n += 1;
            if n % 50 == 0 || n == N {
                step(
                    "basic_ack",
                    c.ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions { multiple: true }),
                )
                .await
                .unwrap();
            }
        }
        assert_eq!(n, N);
        c.barrier().await;
        assert!(
            wait_until(Duration::from_secs(10), || msgs_bytes(dir.path()) < SEGMENT),
            "fully acked segments were not deleted: {:?}",
            segments(dir.path())
        );
        println!(
            "after acking: {:?} ({} bytes)",
            segments(dir.path()),
            msgs_bytes(dir.path())
        );
        c.close().await;
    });
    b.stop();
    // After a restart nothing comes back and the store is small.
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(c.counts("big").await, Some((0, 0)));
        c.close().await;
    });
    assert!(
        msgs_bytes(dir.path()) < 1024 * 1024,
        "{:?}",
        segments(dir.path())
    );
    b.stop();
    println!("space test: {:?}", t0.elapsed());
}

/// A crash can leave an ack file created but still empty (it is created when the first
/// ack of a segment is recorded, and its header is written with the records at the end
/// of the loop turn). Acks recorded after the restart must still count.
#[test]
fn acks_after_an_empty_ack_file_left_by_a_crash_still_count() {
    let Some(dir) = data_dir() else { return };
    let all = bodies("e", 3);
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        c.queue("q", true, false).await;
        c.publish_all("q", &all, persistent()).await;
        c.close().await;
    });
    b.stop();
    let seg = last_segment(dir.path());
    let acks = seg
        .to_string_lossy()
        .replace("msgs.", "acks.")
        .parse::<PathBuf>()
        .unwrap();
    assert!(!acks.exists());
    fs::write(&acks, b"").unwrap();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        // Two of three acked: the segment stays (a fully acked one would be deleted
        // with its ack file).
        for want in &all[..2] {
            let (got, tag) = c.get_manual("q").await;
            assert_eq!(&got, want);
            c.ack(tag).await;
        }
        c.barrier().await;
        c.close().await;
    });
    b.stop();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(
            c.get_all("q").await,
            not_redelivered(&all[2..]),
            "acked messages came back"
        );
        c.close().await;
    });
    b.stop();
}

// ---------------------------------------------------------------------------------
// More SIGKILL cases
// ---------------------------------------------------------------------------------

/// Every metadata change is on disk once its -ok has arrived: SIGKILL right after.
#[test]
fn metadata_changes_survive_a_sigkill_right_after_their_ok() {
    let Some(dir) = data_dir() else { return };
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        c.exchange("x", true).await;
        c.queue("q1", true, false).await;
        c.queue("q2", true, false).await;
        c.bind("q1", "x", "k").await;
        std::mem::forget(c);
    });
    b.kill9();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert!(c.exchange_exists("x").await);
        assert_eq!(c.counts("q1").await, Some((0, 0)));
        assert_eq!(c.counts("q2").await, Some((0, 0)));
        c.publish("x", "k", b"routed", persistent()).await;
        assert_eq!(c.counts("q1").await, Some((1, 0)), "binding survived");
        // Now undo some of it, and SIGKILL again.
        step(
            "queue_unbind",
            c.ch.queue_unbind("q1".into(), "x".into(), "k".into(), FieldTable::default()),
        )
        .await
        .unwrap();
        c.bind("q2", "x", "k2").await;
        step(
            "queue_delete",
            c.ch.queue_delete("q1".into(), QueueDeleteOptions::default()),
        )
        .await
        .unwrap();
        std::mem::forget(c);
    });
    b.kill9();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(c.counts("q1").await, None, "delete survived");
        c.publish("x", "k2", b"to-q2", persistent()).await;
        assert_eq!(c.get_all("q2").await, vec![("to-q2".into(), false)]);
        step(
            "exchange_delete",
            c.ch.exchange_delete("x".into(), ExchangeDeleteOptions::default()),
        )
        .await
        .unwrap();
        std::mem::forget(c);
    });
    b.kill9();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert!(!c.exchange_exists("x").await, "exchange.delete survived");
        assert_eq!(c.counts("q2").await, Some((0, 0)));
        c.close().await;
    });
    b.stop();
}

/// One persistent message routed to two durable queues is one record: acked in one
/// queue it stays in the other, across SIGKILLs.
#[test]
fn a_message_in_two_durable_queues_lives_until_both_are_done() {
    let Some(dir) = data_dir() else { return };
    let mut b = start(dir.path());
    let all = bodies("f", 10);
    block_on(async {
        let c = Client::open(&b).await;
        c.exchange("fan", true).await;
        for q in ["a", "b"] {
            c.queue(q, true, false).await;
            c.bind(q, "fan", "k").await;
        }
        for m in &all {
            c.publish("fan", "k", m.as_bytes(), persistent()).await;
        }
        // Queue a: everything acked. Queue b: first three rejected without requeue,
        // next two nacked without requeue, the sixth left unacked.
        for _ in &all {
            let (_, tag) = c.get_manual("a").await;
            c.ack(tag).await;
        }
        for (i, want) in all.iter().enumerate().take(6) {
            let (got, tag) = c.get_manual("b").await;
            assert_eq!(&got, want);
            match i {
                0..=2 => step(
                    "basic_reject",
                    c.ch.basic_reject(tag, BasicRejectOptions { requeue: false }),
                )
                .await
                .unwrap(),
                3..=4 => step(
                    "basic_nack",
                    c.ch.basic_nack(
                        tag,
                        BasicNackOptions {
                            requeue: false,
                            multiple: false,
                        },
                    ),
                )
                .await
                .unwrap(),
                _ => {} // left unacked
            }
        }
        c.barrier().await;
        std::mem::forget(c);
    });
    b.kill9();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(c.get_all("a").await, vec![]);
        let mut want = vec![(all[5].clone(), true)];
        want.extend(not_redelivered(&all[6..]));
        assert_eq!(c.get_all("b").await, want);
        c.close().await;
    });
    b.stop();
    // All settled now: after a clean restart no segment holds a record.
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(c.counts("a").await, Some((0, 0)));
        assert_eq!(c.counts("b").await, Some((0, 0)));
        c.close().await;
    });
    b.stop();
    assert!(
        segments(dir.path()).iter().all(|(_, _, len)| *len <= 8),
        "{:?}",
        segments(dir.path())
    );
}

/// Recovery across several 64 MiB segments after SIGKILL keeps order, and acks spread
/// over segments hold.
#[test]
fn sigkill_with_several_segments_keeps_order_and_acks() {
    let Some(dir) = data_dir() else { return };
    const N: u32 = 1100;
    let t0 = Instant::now();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        c.queue("big", true, false).await;
        let mut body = vec![7u8; 64 * 1024];
        for chunk in 0..N / 100 {
            let mut pending = Vec::new();
            for i in 0..100 {
                body[..4].copy_from_slice(&(chunk * 100 + i).to_be_bytes());
                pending.push(c.publish_async("", "big", &body, persistent()).await);
            }
            for p in pending {
                expect_ack(p).await;
            }
        }
        // Ack every third message.
        for i in 0..N {
            let m = step(
                "basic_get",
                c.ch.basic_get("big".into(), BasicGetOptions { no_ack: false }),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(
                u32::from_be_bytes(m.delivery.data[..4].try_into().unwrap()),
                i
            );
            if i.is_multiple_of(3) {
                c.ack(m.delivery.delivery_tag).await;
            }
        }
        c.barrier().await;
        std::mem::forget(c);
    });
    assert!(
        segments(dir.path()).len() >= 2,
        "{:?}",
        segments(dir.path())
    );
    b.kill9();
    let mut b = start(dir.path());
    block_on(async {
        let c = Client::open(&b).await;
        let mut want = 0u32;
        let mut n = 0;
        while let Some(m) = step(
            "basic_get",
            c.ch.basic_get("big".into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap()
        {
            if want.is_multiple_of(3) {
                want += 1;
            }
            let id = u32::from_be_bytes(m.delivery.data[..4].try_into().unwrap());
            assert_eq!(id, want, "order across segments");
            assert!(m.delivery.redelivered);
            assert_eq!(m.delivery.data.len(), 64 * 1024);
            assert!(m.delivery.data[4..].iter().all(|b| *b == 7));
            want += 1;
            n += 1;
        }
        assert_eq!(n, N - N.div_ceil(3));
        c.close().await;
    });
    b.stop();
    println!("several segments test: {:?}", t0.elapsed());
}
