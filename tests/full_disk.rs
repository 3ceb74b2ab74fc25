//! Warren-only: a full disk blocks publishers and nothing else (issue 8 point 4).
//!
//! Every test mounts its own small tmpfs (8 MiB) as the data directory's filesystem, so
//! ENOSPC is real; a drop guard unmounts it. Where the test cannot mount (not root), it is
//! skipped with a message. All are skipped when `WARREN_TEST_PORT` is set (they need
//! their own broker and its flags).
//!
//! The disk is filled on purpose by the test (a `filler` file next to the data
//! directory) after the broker's last measurement, so the store meets a real ENOSPC.
mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use support::*;

const BODY: usize = 4096;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        if is_external() {
            println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
            return None;
        }
        let dir = tempfile::TempDir::new().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                println!(
                    "skipped: cannot mount a tmpfs here (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Fills the filesystem to the last page with a file next to the data directory.
    fn fill(&self) -> PathBuf {
        let path = self.dir.path().join("filler");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        for chunk in [65536, 4096, 512, 1] {
            let buf = vec![0xAB; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn start(dir: &Path) -> Broker {
    // Limit 0: the only protection left is Warren's own (the reserve and its floor).
    Broker::spawn_in(dir, &["--disk-free-limit", "0"]).expect("not external")
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn body(prefix: &str, i: usize) -> Vec<u8> {
    let mut b = format!("{prefix}-{i:05}-").into_bytes();
    b.resize(BODY, b'.');
    b
}

fn name_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches('.')
        .trim_end_matches('-')
        .to_string()
}

async fn confirm_channel_with_durable_queue(conn: &Connection, queue: &str) -> Channel {
    let ch = confirm_channel(conn).await;
    step(
        "queue_declare",
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    ch
}

async fn publish(ch: &Channel, queue: &str, body: &[u8]) -> PublisherConfirm {
    step(
        "basic_publish",
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            persistent(),
        ),
    )
    .await
    .unwrap()
}

type Held =
    std::pin::Pin<Box<dyn std::future::Future<Output = lapin::Result<Confirmation>> + Send>>;

/// A publish whose confirm is awaited later (lapin itself may hold a publish back once
/// the broker said connection.blocked).
fn held_publish(ch: &Channel, queue: &str, body: Vec<u8>) -> Held {
    let (ch, queue) = (ch.clone(), queue.to_string());
    Box::pin(async move {
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            persistent(),
        )
        .await?
        .await
    })
}

/// Publishes `n` messages in batches, each batch confirmed before the next.
async fn publish_confirmed(ch: &Channel, queue: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for start in (0..n).step_by(50) {
        let mut pending = Vec::new();
        for i in start..(start + 50).min(n) {
            pending.push(publish(ch, queue, &body(prefix, i)).await);
            names.push(name_of(&body(prefix, i)));
        }
        for c in pending {
            match step("confirm", c).await.unwrap() {
                Confirmation::Ack(_) => {}
                other => panic!("expected an ack before the disk is full, got {other:?}"),
            }
        }
    }
    names
}

/// Publishes one at a time on a full disk until one is nacked; returns its name.
async fn publish_until_nacked(ch: &Channel, queue: &str) -> String {
    let b = body("nacked", 0);
    let c = publish(ch, queue, &b).await;
    match within(
        "confirm of a publish on a full disk",
        Duration::from_secs(10),
        c,
    )
    .await
    .unwrap()
    {
        Confirmation::Nack(_) => name_of(&b),
        other => panic!("a publish that met ENOSPC must be nacked, got {other:?}"),
    }
}

/// Gets and acks everything in `queue`; returns the bodies' names.
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let m = step(
            "basic_get",
            ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .unwrap();
        let Some(m) = m else { break };
        got.push(name_of(&m.delivery.data));
        step(
            "basic_ack",
            ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()),
        )
        .await
        .unwrap();
    }
    got
}

fn error_lines(logs: &str, needle: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains("ERROR") && l.contains(needle))
        .count()
}

#[test]
fn enospc_nacks_blocks_publishers_keeps_connections_and_a_full_drain_clears_the_alarm() {
    let Some(fs_) = Tmpfs::mount("8m") else {
        return;
    };
    let b = start(&fs_.data());
    let q = unique("full");
    block_on(async {
        let pconn = b.connect().await;
        let pch = confirm_channel_with_durable_queue(&pconn, &q).await;
        let confirmed = publish_confirmed(&pch, &q, "ok", 600).await;
        fs_.fill();
        let nacked = publish_until_nacked(&pch, &q).await;
        // The alarm is raised: the next publish is not read, so not confirmed.
        let mut held = held_publish(&pch, &q, body("held", 0));
        assert!(
            tokio::time::timeout(Duration::from_secs(2), &mut held)
                .await
                .is_err(),
            "a publisher on a full disk is blocked"
        );
        assert!(b.logs().contains("low on disk"), "{}", b.logs());

        // Consumers keep working, on a new connection too.
        let cconn = b.connect().await;
        let cch = step("create_channel", cconn.create_channel())
            .await
            .unwrap();
        let mut got = drain(&cch, &q).await;
        // The drain frees space: once the alarm clears, the held publish may be queued
        // before the drain ends. It is counted once, here or in the last drain below.
        let held_name = name_of(&body("held", 0));
        let held_early: Vec<String> = got.iter().filter(|g| **g == held_name).cloned().collect();
        got.retain(|g| *g != held_name);
        for c in &confirmed {
            assert!(got.contains(c), "confirmed message {c} lost");
        }
        assert!(
            got.iter().all(|g| confirmed.contains(g) || *g == nacked),
            "{got:?}"
        );

        // The drain gave the space back (the filler is still there): the alarm clears and
        // the held publish goes through, on the same connection.
        match within(
            "held publish after the drain",
            Duration::from_secs(15),
            held,
        )
        .await
        .unwrap()
        {
            Confirmation::Ack(_) => {}
            other => panic!("expected an ack once space is back, got {other:?}"),
        }
        assert!(pconn.status().connected() && cconn.status().connected());
        let mut late = drain(&cch, &q).await;
        late.extend(held_early);
        assert_eq!(late, vec![held_name]);
    });
    let logs = b.logs();
    assert!(
        // Not a bare "541": ports and timestamps in the log contain it (a flake seen
        // once in 20 loaded runs); a 541 close always logs INTERNAL_ERROR.
        !logs.contains("INTERNAL_ERROR"),
        "{logs}"
    );
    // One ERROR line per distinct failure (plus counts), not one per loop turn.
    assert!(error_lines(&logs, "store") <= 4, "{logs}");
}

#[test]
fn sigkill_on_a_full_disk_restarts_with_the_alarm_raised_and_consumers_drain() {
    let Some(fs_) = Tmpfs::mount("8m") else {
        return;
    };
    let q = unique("full-kill");
    let mut b = start(&fs_.data());
    let (confirmed, nacked) = block_on(async {
        let conn = b.connect().await;
        let ch = confirm_channel_with_durable_queue(&conn, &q).await;
        let confirmed = publish_confirmed(&ch, &q, "ok", 800).await;
        fs_.fill();
        let nacked = publish_until_nacked(&ch, &q).await;
        (confirmed, nacked)
    });
    b.kill9();
    // The disk is still full: the broker must start anyway.
    let b = start(&fs_.data());
    assert!(
        wait_until(Duration::from_secs(5), || b.logs().contains("low on disk")),
        "starts with the disk alarm raised:\n{}",
        b.logs()
    );
    block_on(async {
        let pconn = b.connect().await;
        let pch = confirm_channel_with_durable_queue(&pconn, &q).await;
        // As in RabbitMQ, the publish that makes a connection a publisher is read
        // before the connection is blocked (stored, or nacked when the store is full);
        // the ones after it are held.
        let _first = within(
            "first publish",
            Duration::from_secs(5),
            held_publish(&pch, &q, body("first", 0)),
        )
        .await
        .unwrap();
        let mut held = held_publish(&pch, &q, body("after", 0));
        assert!(
            tokio::time::timeout(Duration::from_secs(2), &mut held)
                .await
                .is_err(),
            "publishers are blocked after a start on a full disk"
        );
        let cconn = b.connect().await;
        let cch = step("create_channel", cconn.create_channel())
            .await
            .unwrap();
        let mut got = drain(&cch, &q).await;
        // The drain frees space: once the alarm clears, the held publish may be read and
        // queued before the drain ends (a loaded machine saw 801 of 800), so it and the
        // first publish are not counted among the recovered ones.
        got.retain(|g| !g.starts_with("first") && !g.starts_with("after"));
        assert!(!got.contains(&nacked), "a nacked publish is not recovered");
        let extra: Vec<&String> = got.iter().filter(|g| !confirmed.contains(g)).collect();
        let missing: Vec<&String> = confirmed.iter().filter(|c| !got.contains(c)).collect();
        assert!(
            got == confirmed,
            "every confirmed message, in order, once: {} recovered for {} confirmed, \
             extra {extra:?}, missing {missing:?}",
            got.len(),
            confirmed.len()
        );
        match within("publish after the drain", Duration::from_secs(15), held)
            .await
            .unwrap()
        {
            Confirmation::Ack(_) => {}
            other => panic!("publishing resumes after the drain, got {other:?}"),
        }
    });
}

#[test]
fn a_fast_confirmed_publisher_is_blocked_before_the_disk_fills_and_keeps_its_heartbeats() {
    let Some(fs_) = Tmpfs::mount("8m") else {
        return;
    };
    // 3 MB limit on 8 MiB: the publisher sends 6 MB as fast as it can.
    let b = Broker::spawn_in(&fs_.data(), &["--disk-free-limit", "3000000"]).expect("own");
    let q = unique("fast");
    let n = 1500;
    block_on(async {
        let pconn = connect(&format!("{}?heartbeat=1", b.uri())).await;
        let pch = confirm_channel_with_durable_queue(&pconn, &q).await;
        let (tx, rx) = std::sync::mpsc::channel();
        let ch = pch.clone();
        let qq = q.clone();
        tokio::spawn(async move {
            for i in 0..n {
                let c = ch
                    .basic_publish(
                        "".into(),
                        qq.as_str().into(),
                        BasicPublishOptions::default(),
                        &body("fast", i),
                        persistent(),
                    )
                    .await
                    .unwrap();
                if tx.send(Box::pin(c)).is_err() {
                    return;
                }
            }
        });
        assert!(
            wait_until_async(Duration::from_secs(20), || {
                let l = b.logs();
                async move { l.contains("low on disk") }
            })
            .await,
            "the disk alarm fires:\n{}",
            b.logs()
        );
        // Blocked for several heartbeat intervals: still connected.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            pconn.status().connected(),
            "a blocked publisher is not dropped for missed heartbeats"
        );
        let cconn = b.connect().await;
        let cch = step("create_channel", cconn.create_channel())
            .await
            .unwrap();
        let mut got = 0;
        let mut acks = 0;
        let mut pending = std::collections::VecDeque::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while acks < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{acks} of {n} confirmed"
            );
            got += drain(&cch, &q).await.len();
            while let Ok(c) = rx.try_recv() {
                pending.push_back(c);
            }
            while let Some(c) = pending.front_mut() {
                match tokio::time::timeout(Duration::from_millis(50), c).await {
                    Err(_) => break,
                    Ok(Ok(Confirmation::Ack(_))) => acks += 1,
                    Ok(other) => panic!("confirm {acks}: expected an ack, got {other:?}"),
                }
                pending.pop_front();
            }
        }
        got += drain(&cch, &q).await.len();
        assert_eq!(got, n);
        assert!(pconn.status().connected());
    });
    let logs = b.logs();
    assert!(!logs.contains("No space left"), "{logs}");
    assert!(!logs.contains("missed heartbeats"), "{logs}");
}

#[test]
fn acks_taken_while_the_disk_is_full_survive_a_sigkill() {
    let Some(fs_) = Tmpfs::mount("8m") else {
        return;
    };
    let q = unique("full-acks");
    let mut b = start(&fs_.data());
    let confirmed = block_on(async {
        let conn = b.connect().await;
        let ch = confirm_channel_with_durable_queue(&conn, &q).await;
        let confirmed = publish_confirmed(&ch, &q, "ok", 800).await;
        fs_.fill();
        publish_until_nacked(&ch, &q).await;
        // Durable declarations cannot be stored now: refused on the channel, and the
        // connection (not a publisher, so not blocked) stays.
        let cconn = b.connect().await;
        let other = step("create_channel", cconn.create_channel())
            .await
            .unwrap();
        let r = other
            .queue_declare(
                unique("full-decl").as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        expect_amqp_error(r, 406);
        assert!(conn.status().connected() && cconn.status().connected());
        // Half of the queue is consumed and acked while the disk is full.
        let cch = step("create_channel", cconn.create_channel())
            .await
            .unwrap();

        for want in &confirmed[..400] {
            let m = step(
                "basic_get",
                cch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }),
            )
            .await
            .unwrap()
            .expect("message");
            assert_eq!(&name_of(&m.delivery.data), want);
            step(
                "basic_ack",
                cch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()),
            )
            .await
            .unwrap();
        }
        // The acks reach the broker's store before the kill (a get after them is
        // handled after them, in order, on the same channel).
        let m = step(
            "basic_get",
            cch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap();
        assert!(m.is_some());
        confirmed
    });
    b.kill9();
    let b = start(&fs_.data());
    block_on(async {
        let conn = b.connect().await;
        let ch = step("create_channel", conn.create_channel()).await.unwrap();
        let got = drain(&ch, &q).await;
        // The no-ack get (message 400) is settled in memory only at the kill: it may
        // come back. The 400 acked ones must not.
        let expect_from = if got.first() == Some(&confirmed[400]) {
            400
        } else {
            401
        };
        assert_eq!(got.len(), 800 - expect_from, "acked messages came back");
        assert!(got[..] == confirmed[expect_from..]);
    });
}
