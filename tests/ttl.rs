//! Message TTL and queue expiry (issue 12): `x-message-ttl`, the per-message
//! `expiration` (expired only at the head), TTL 0 (delivered only to a consumer that can
//! take it at once), a requeued message keeping its original expiry, expired messages
//! dead-lettered with reason `expired`, RabbitMQ's 406s for bad values, `x-expires`
//! deleting an unused queue, and TTLs counting across a restart and a `kill -9` by the
//! message's arrival time.
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! ttl` (the restart tests are skipped there).
mod queue_features;
mod support;

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::BasicProperties;
use queue_features::*;
use support::*;

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ms.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_ttl_expires_and_dead_letters_with_reason_expired() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("dlq", &[]).await;
    let q = c
        .queue(
            "ttl",
            &[
                ("x-message-ttl", int(200)),
                ("x-dead-letter-exchange", lstr("")),
                ("x-dead-letter-routing-key", lstr(&dlq)),
            ],
        )
        .await;
    let t0 = Instant::now();
    for i in 0..3 {
        c.publish(
            "",
            &q,
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    assert_eq!(c.count(&q).await, Some(3), "not expired before its TTL");
    c.wait_count(&dlq, 3, LONG).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        c.count(&q).await,
        Some(0),
        "expired messages leave the count"
    );
    for i in 0..3 {
        let m = c.wait_get(&dlq, LONG).await;
        assert_eq!(msg_body(&m), format!("m{i}"), "in order");
        let d = deaths(&m);
        assert_eq!(death_summary(&d[0]), (q.clone(), "expired".into(), 1));
        assert!(get(&d[0], "original-expiration").is_none());
        assert_eq!(text(get(&headers(&m), "x-first-death-reason")), "expired");
        c.ack(m.delivery.delivery_tag).await;
    }
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_expiration_applies_at_the_head_only() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("perm", &[]).await;
    c.publish("", &q, b"short", expiring("50")).await;
    c.wait_count(&q, 0, LONG).await;
    // A long-lived head keeps an expired message behind it counted...
    c.publish("", &q, b"long", expiring("60000")).await;
    c.publish("", &q, b"short", expiring("20")).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(c.count(&q).await, Some(2));
    // ...but it is never delivered: once it is the head, it is gone.
    let m = c.wait_get(&q, LONG).await;
    assert_eq!(msg_body(&m), "long");
    assert_eq!(
        m.delivery
            .properties
            .expiration()
            .as_ref()
            .map(|e| e.as_str()),
        Some("60000"),
        "the property is delivered as published"
    );
    c.ack(m.delivery.delivery_tag).await;
    assert!(c.get(&q).await.is_none());
    assert_eq!(c.count(&q).await, Some(0));
    // The smaller of the queue's TTL and the message's applies.
    let q2 = c.queue("both", &[("x-message-ttl", int(60000))]).await;
    c.publish("", &q2, b"x", expiring("30")).await;
    c.wait_count(&q2, 0, LONG).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_zero_reaches_only_a_consumer_ready_at_once() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("zero", &[("x-message-ttl", int(0))]).await;
    c.publish("", &q, b"nobody", BasicProperties::default())
        .await;
    assert!(c.get(&q).await.is_none(), "no consumer: expired at once");
    let mut consumer = consume(&c.ch, &q, "z", true).await;
    c.publish("", &q, b"someone", BasicProperties::default())
        .await;
    let d = within("delivery", LONG, consumer.next())
        .await
        .expect("stream")
        .expect("delivery");
    assert_eq!(&d.data[..], b"someone");
    // Per-message expiration "0" likewise.
    let q0 = c.queue("zero-msg", &[]).await;
    c.publish("", &q0, b"gone", expiring("0")).await;
    assert!(c.get(&q0).await.is_none());
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_message_keeps_its_original_expiry() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("dlq", &[]).await;
    let q = c
        .queue(
            "requeue",
            &[
                ("x-message-ttl", int(300)),
                ("x-dead-letter-exchange", lstr("")),
                ("x-dead-letter-routing-key", lstr(&dlq)),
            ],
        )
        .await;
    let t0 = Instant::now();
    c.publish("", &q, b"held", BasicProperties::default()).await;
    let m = c.wait_get(&q, LONG).await;
    // Held unacked past its TTL: not expired while unacked...
    tokio::time::sleep(Duration::from_millis(400).saturating_sub(t0.elapsed())).await;
    assert_eq!(c.count(&dlq).await, Some(0));
    // ...and expired as soon as it is back, not 300 ms later.
    let back = Instant::now();
    c.nack(m.delivery.delivery_tag, false, true).await;
    c.wait_count(&dlq, 1, LONG).await;
    assert!(
        back.elapsed() < Duration::from_millis(250),
        "{:?}",
        back.elapsed()
    );
    let d = c.wait_get(&dlq, LONG).await;
    assert_eq!(
        death_summary(&deaths(&d)[0]),
        (q.clone(), "expired".into(), 1)
    );
    c.ack(d.delivery.delivery_tag).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_as_rabbitmq_does() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = unique("badttl");
    let e = expect_amqp_error(
        c.declare_named(&q, &[("x-message-ttl", int(-1))], false)
            .await,
        406,
    );
    assert!(
        e.contains("invalid arg 'x-message-ttl' for queue") && e.contains("{value_negative,-1}"),
        "{e}"
    );
    let c = Client::open(&b).await;
    let e = expect_amqp_error(
        c.declare_named(&q, &[("x-expires", int(0))], false).await,
        406,
    );
    assert!(e.contains("{value_zero,0}"), "{e}");
    for (exp, why) in [
        ("abc", "no_integer"),
        ("12x", "{leftover_string,\"x\"}"),
        ("-1", "{value_negative,-1}"),
        ("315360000001", "{value_too_large,315360000001}"),
    ] {
        // Raw frames: the channel.close is read as it comes (a client library may
        // report the closing channel instead of its reply).
        let mut raw = b.handshake();
        raw.open_channel(1);
        let mut header = Vec::new();
        header.extend(60u16.to_be_bytes());
        header.extend(0u16.to_be_bytes());
        header.extend(1u64.to_be_bytes());
        header.extend(0x0100u16.to_be_bytes()); // expiration only
        header.push(exp.len() as u8);
        header.extend(exp.as_bytes());
        raw.send_method(1, &basic_publish("", &q, false));
        raw.send_frame(FRAME_HEADER, 1, &header);
        raw.send_frame(FRAME_BODY, 1, b"x");
        let close = raw.expect_method(1, 20, 40);
        let mut a = close.args();
        assert_eq!(a.short(), 406);
        assert_eq!(
            a.shortstr(),
            format!("PRECONDITION_FAILED - invalid expiration '{exp}': {why}")
        );
        raw.close();
    }
    let c = Client::open(&b).await;
    c.cleanup().await;
}

/// Whether queue `q` of vhost "/" exists, asked through the management API: a
/// queue.declare, even passive, is a use and would restart the `x-expires` period.
fn exists(api: &support::api::Api, q: &str) -> bool {
    let r = api.get(&format!("/api/queues/%2F/{}", support::api::enc(q)));
    assert!(r.status == 200 || r.status == 404, "{}", r.status);
    r.status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_expires_deletes_a_queue_unused_that_long() {
    let b = Broker::start();
    let api = support::api::Api::new(&b);
    let c = Client::open(&b).await;
    let t0 = Instant::now();
    let q = c.queue("expires", &[("x-expires", int(300))]).await;
    let api2 = support::api::Api::new(&b);
    let q2 = q.clone();
    let gone = tokio::task::spawn_blocking(move || wait_until(LONG, || !exists(&api2, &q2)))
        .await
        .unwrap();
    assert!(gone, "not deleted");
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
    // A consumer keeps it; once the consumer goes, the period starts again.
    let q = c.queue("expires-used", &[("x-expires", int(300))]).await;
    let ch = c.conn.create_channel().await.unwrap();
    let _consumer = consume(&ch, &q, "keep", true).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(exists(&api, &q), "in use: kept");
    let cancelled = Instant::now();
    ch.close(200, "bye".into()).await.unwrap();
    let api2 = support::api::Api::new(&b);
    let q2 = q.clone();
    let gone = tokio::task::spawn_blocking(move || wait_until(LONG, || !exists(&api2, &q2)))
        .await
        .unwrap();
    assert!(gone, "not deleted after its consumer left");
    assert!(
        cancelled.elapsed() >= Duration::from_millis(250),
        "{:?}",
        cancelled.elapsed()
    );
    c.cleanup().await;
}

/// A queue's TTL counts from the message's arrival, not from a restart: a message with
/// 1.5 s to live, the broker killed and restarted after 1 s, expires about 0.5 s after
/// the restart (Warren only).
#[test]
fn ttl_keeps_counting_across_a_restart_and_kill_9() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    for kill in [false, true] {
        let dir = tempfile::TempDir::new().unwrap();
        let mut b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
        let (q, perm, published) = block_on(async {
            let c = Client::open(&b).await;
            let q = c
                .queue_opts("ttl-restart", &[("x-message-ttl", int(1500))], true)
                .await;
            let perm = c.queue_opts("exp-restart", &[], true).await;
            let p = BasicProperties::default().with_delivery_mode(2);
            c.publish("", &q, b"a", p.clone()).await;
            c.publish("", &perm, b"b", p.with_expiration("1500".into()))
                .await;
            let published = Instant::now();
            let _ = c.conn.close(200, "bye".into()).await;
            (q, perm, published)
        });
        std::thread::sleep(Duration::from_millis(800));
        if kill {
            b.kill9();
        } else {
            b.stop();
        }
        let b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
        block_on(async {
            let c = Client::open(&b).await;
            c.wait_count(&q, 0, LONG).await;
            c.wait_count(&perm, 0, LONG).await;
            let took = published.elapsed();
            assert!(
                took < Duration::from_millis(1500 + 1200),
                "expired {took:?} after publish: the TTL restarted"
            );
            let _ = c.conn.close(200, "bye".into()).await;
        });
    }
}

/// Expiring a million queued messages is one timer, not a scan (timing printed). A
/// measurement for the notes, not a check: `cargo test --release --test ttl -- --ignored`.
#[test]
#[ignore]
fn a_million_messages_expire_without_a_scan() {
    if is_external() {
        println!("skipped: measures Warren's expiry");
        return;
    }
    let b = Broker::start();
    let q = unique("million");
    let mut c = RawClient::with_channel(b.port);
    let mut args = Vec::new();
    // x-message-ttl: a signed 64-bit 'l' field.
    args.push(13u8);
    args.extend(b"x-message-ttl");
    args.push(b'l');
    args.extend(10_000i64.to_be_bytes());
    c.send_method(
        1,
        &method(
            50,
            10,
            &Args::new()
                .short(0)
                .shortstr(&q)
                .bits(&[false, false, false, true, false])
                .table(&args)
                .build(),
        ),
    );
    c.expect_method(1, 50, 11);
    let n = 1_000_000usize;
    let mut one = frame(1, 1, &basic_publish("", &q, false));
    one.extend(frame(2, 1, &content_header(16)));
    one.extend(frame(3, 1, &[b'x'; 16]));
    let batch = one.repeat(10_000);
    let start = Instant::now();
    for _ in 0..n / 10_000 {
        c.send(&batch);
    }
    let mut probe = RawClient::with_channel(b.port);
    let count = |p: &mut RawClient| {
        p.send_method(
            1,
            &method(
                50,
                10,
                &Args::new()
                    .short(0)
                    .shortstr(&q)
                    .bits(&[true, false, false, false, false])
                    .table(&[])
                    .build(),
            ),
        );
        let f = p.expect_method(1, 50, 11);
        let mut a = f.args();
        a.shortstr();
        a.long()
    };
    assert!(wait_until(Duration::from_secs(120), || count(&mut probe)
        as usize
        == n));
    let filled = start.elapsed();
    let cpu0 = cpu_of(b.pid());
    assert!(wait_until(Duration::from_secs(120), || count(&mut probe) == 0));
    let cpu1 = cpu_of(b.pid());
    println!(
        "expiry of {n} messages: filled in {filled:?}, all gone {:?} after the start, broker CPU during expiry wait {:?}",
        start.elapsed(),
        cpu1.zip(cpu0).map(|(a, b)| a.saturating_sub(b))
    );
}

/// utime+stime of a process, from /proc (clock ticks → ms at 100 Hz).
fn cpu_of(pid: Option<u32>) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// `x-expires` across a clean restart and a `kill -9` (Warren only): RabbitMQ starts the
/// period again when the queue's process starts at boot (`init_exp`), so a queue unused
/// for most of its period before the restart lives a whole period after it, and is then
/// deleted, for good (not back after another restart).
#[test]
fn x_expires_starts_again_at_boot() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    const EXPIRES_MS: u64 = 2000;
    for kill in [false, true] {
        let dir = tempfile::TempDir::new().unwrap();
        let mut b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
        let q = block_on(async {
            let c = Client::open(&b).await;
            let q = c
                .queue_opts(
                    "expires-boot",
                    &[("x-expires", int(EXPIRES_MS as i64))],
                    true,
                )
                .await;
            let _ = c.conn.close(200, "bye".into()).await;
            q
        });
        std::thread::sleep(Duration::from_millis(1300));
        if kill {
            b.kill9();
        } else {
            b.stop();
        }
        let mut b = Broker::spawn_in(dir.path(), &[]).expect("respawn");
        let booted = Instant::now();
        let api = support::api::Api::new(&b);
        assert!(exists(&api, &q), "kill={kill}: deleted at boot");
        assert!(
            wait_until(LONG, || !exists(&api, &q)),
            "kill={kill}: never deleted"
        );
        let lived = booted.elapsed();
        assert!(
            lived >= Duration::from_millis(EXPIRES_MS - 300),
            "kill={kill}: deleted {lived:?} after boot: the period did not start again"
        );
        // The deletion is durable.
        b.stop();
        let b = Broker::spawn_in(dir.path(), &[]).expect("respawn");
        let api = support::api::Api::new(&b);
        assert!(!exists(&api, &q), "kill={kill}: back after a restart");
    }
}
