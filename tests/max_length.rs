//! Length limits (issue 12): `x-max-length` and `x-max-length-bytes` with the three
//! `x-overflow` modes, seen by a confirming publisher: `drop-head` (default) acks every
//! publish and dead-letters the dropped heads with reason `maxlen`; `reject-publish`
//! nacks what does not fit (and it is gone); `reject-publish-dlx` nacks it and
//! dead-letters it.
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! max_length`.
mod queue_features;
mod support;

use lapin::types::AMQPValue;
use lapin::{BasicProperties, Confirmation};
use queue_features::*;
use support::*;

fn acked(c: &Confirmation) -> bool {
    matches!(c, Confirmation::Ack(_))
}

async fn bodies(c: &Client, q: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = c.get(q).await {
        out.push(msg_body(&m));
        c.ack(m.delivery.delivery_tag).await;
    }
    out
}

async fn limited(c: &Client, dlq: &str, limit: (&str, i64), overflow: Option<&str>) -> String {
    let mut args: Vec<(&str, AMQPValue)> = vec![
        (limit.0, int(limit.1)),
        ("x-dead-letter-exchange", lstr("")),
        ("x-dead-letter-routing-key", lstr(dlq)),
    ];
    if let Some(o) = overflow {
        args.push(("x-overflow", lstr(o)));
    }
    c.queue("limited", &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_keeps_the_newest_and_dead_letters_the_rest() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("dlq", &[]).await;
    let q = limited(&c, &dlq, ("x-max-length", 2), None).await;
    for i in 1..=5 {
        let conf = c
            .publish(
                "",
                &q,
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await;
        assert!(acked(&conf), "drop-head acks every publish: {conf:?}");
    }
    c.wait_count(&dlq, 3, LONG).await;
    assert_eq!(bodies(&c, &q).await, ["m4", "m5"]);
    for i in 1..=3 {
        let m = c.wait_get(&dlq, LONG).await;
        assert_eq!(msg_body(&m), format!("m{i}"));
        assert_eq!(
            death_summary(&deaths(&m)[0]),
            (q.clone(), "maxlen".into(), 1)
        );
        c.ack(m.delivery.delivery_tag).await;
    }
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_nacks_what_does_not_fit() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("dlq", &[]).await;
    let q = limited(&c, &dlq, ("x-max-length", 2), Some("reject-publish")).await;
    let mut confs = Vec::new();
    for i in 1..=4 {
        confs.push(acked(
            &c.publish(
                "",
                &q,
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await,
        ));
    }
    assert_eq!(confs, [true, true, false, false]);
    assert_eq!(
        c.count(&dlq).await,
        Some(0),
        "reject-publish does not dead-letter"
    );
    assert_eq!(bodies(&c, &q).await, ["m1", "m2"]);
    // Room again: accepted.
    assert!(acked(
        &c.publish("", &q, b"m5", BasicProperties::default()).await
    ));
    assert_eq!(bodies(&c, &q).await, ["m5"]);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_publish_dlx_nacks_and_dead_letters() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("dlq", &[]).await;
    let q = limited(&c, &dlq, ("x-max-length", 1), Some("reject-publish-dlx")).await;
    let first = c.publish("", &q, b"in", BasicProperties::default()).await;
    let second = c.publish("", &q, b"out", BasicProperties::default()).await;
    assert!(acked(&first));
    assert!(!acked(&second), "{second:?}");
    let m = c.wait_get(&dlq, LONG).await;
    assert_eq!(msg_body(&m), "out");
    assert_eq!(
        death_summary(&deaths(&m)[0]),
        (q.clone(), "maxlen".into(), 1)
    );
    c.ack(m.delivery.delivery_tag).await;
    assert_eq!(bodies(&c, &q).await, ["in"]);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_bytes_counts_ready_bodies() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("dlq", &[]).await;
    let q = limited(&c, &dlq, ("x-max-length-bytes", 10), None).await;
    for body in ["aaaa", "bbbb", "cccc"] {
        c.publish("", &q, body.as_bytes(), BasicProperties::default())
            .await;
    }
    c.wait_count(&dlq, 1, LONG).await;
    assert_eq!(bodies(&c, &q).await, ["bbbb", "cccc"]);
    // Unacked messages do not count: two out unacked, two more fit.
    let q2 = limited(&c, &dlq, ("x-max-length", 2), Some("reject-publish")).await;
    for body in ["1", "2"] {
        assert!(acked(
            &c.publish("", &q2, body.as_bytes(), BasicProperties::default())
                .await
        ));
    }
    let _a = c.wait_get(&q2, LONG).await;
    let _b = c.wait_get(&q2, LONG).await;
    for body in ["3", "4"] {
        assert!(acked(
            &c.publish("", &q2, body.as_bytes(), BasicProperties::default())
                .await
        ));
    }
    assert!(!acked(
        &c.publish("", &q2, b"5", BasicProperties::default()).await
    ));
    c.cleanup().await;
}

/// A consumer that can take messages gets them before they count against the limit
/// (RabbitMQ delivers straight to a waiting consumer): a burst published faster than
/// the limit into a queue with a consumer loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_consumer_takes_a_burst_before_the_limit_counts() {
    use futures_lite::StreamExt;
    use lapin::options::{BasicPublishOptions, BasicQosOptions};
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("dlq", &[]).await;
    let q = limited(&c, &dlq, ("x-max-length", 2), None).await;
    let ch = c.conn.create_channel().await.unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&ch, &q, "burst", false).await;
    let mut confirms = Vec::new();
    for i in 0..20 {
        confirms.push(
            c.pub_ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
        );
    }
    for conf in confirms {
        assert!(acked(&conf.await.unwrap()));
    }
    for i in 0..20 {
        let d = within("delivery", LONG, consumer.next())
            .await
            .expect("stream")
            .expect("delivery");
        assert_eq!(d.data, format!("m{i}").into_bytes());
    }
    assert_eq!(c.count(&dlq).await, Some(0));
    c.cleanup().await;
}

/// Length limits after a clean restart and after a `kill -9` (Warren only: it owns the
/// process): the recovered messages count against `x-max-length` and
/// `x-max-length-bytes`, `reject-publish` still nacks what does not fit, `drop-head`
/// still dead-letters the oldest (reason `maxlen`), and the counts are right.
#[test]
fn limits_hold_across_a_restart_and_a_kill_9() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let mut b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
    let persistent = || BasicProperties::default().with_delivery_mode(2);
    let (rejecting, bytes, dropping, dlq) = block_on(async {
        let c = Client::open(&b).await;
        let dlq = c.queue_opts("dlq", &[], true).await;
        let dl = |extra: Vec<(&'static str, AMQPValue)>| {
            let mut a = vec![
                ("x-dead-letter-exchange", lstr("")),
                ("x-dead-letter-routing-key", lstr(&dlq)),
            ];
            a.extend(extra);
            a
        };
        let rejecting = c
            .queue_opts(
                "rp",
                &dl(vec![
                    ("x-max-length", int(2)),
                    ("x-overflow", lstr("reject-publish")),
                ]),
                true,
            )
            .await;
        let bytes = c
            .queue_opts(
                "rp-bytes",
                &dl(vec![
                    ("x-max-length-bytes", int(10)),
                    ("x-overflow", lstr("reject-publish")),
                ]),
                true,
            )
            .await;
        let dropping = c
            .queue_opts("dh", &dl(vec![("x-max-length", int(2))]), true)
            .await;
        for q in [&rejecting, &dropping] {
            for body in ["a1", "a2"] {
                assert!(acked(
                    &c.publish("", q, body.as_bytes(), persistent()).await
                ));
            }
        }
        // 4 + 4 of 10 bytes.
        for body in ["bbb1", "bbb2"] {
            assert!(acked(
                &c.publish("", &bytes, body.as_bytes(), persistent()).await
            ));
        }
        let _ = c.conn.close(200, "bye".into()).await;
        (rejecting, bytes, dropping, dlq)
    });
    for (round, kill) in [(1, false), (2, true)] {
        if kill {
            b.kill9();
        } else {
            b.stop();
        }
        b = Broker::spawn_in(dir.path(), &[]).expect("respawn");
        block_on(async {
            let c = Client::open(&b).await;
            assert_eq!(c.count(&rejecting).await, Some(2), "round {round}");
            assert_eq!(c.count(&bytes).await, Some(2), "round {round}");
            assert_eq!(c.count(&dropping).await, Some(2), "round {round}");
            // Full: refused.
            let r = c.publish("", &rejecting, b"no", persistent()).await;
            assert!(!acked(&r), "round {round}: {r:?}");
            // 8 of 10 bytes: 2 more fit, 3 do not.
            let r = c.publish("", &bytes, b"ccc", persistent()).await;
            assert!(!acked(&r), "round {round}: {r:?}");
            // drop-head: the oldest goes to the dead-letter queue.
            let body = format!("d{round}");
            assert!(acked(
                &c.publish("", &dropping, body.as_bytes(), persistent())
                    .await
            ));
            c.wait_count(&dlq, round, LONG).await;
            assert_eq!(c.count(&dropping).await, Some(2));
            assert_eq!(c.count(&rejecting).await, Some(2));
            assert_eq!(c.count(&bytes).await, Some(2));
            let _ = c.conn.close(200, "bye".into()).await;
        });
    }
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(bodies(&c, &dropping).await, ["d1", "d2"]);
        let mut dead = Vec::new();
        while let Some(m) = c.get(&dlq).await {
            assert_eq!(text(get(&headers(&m), "x-first-death-reason")), "maxlen");
            dead.push(msg_body(&m));
            c.ack(m.delivery.delivery_tag).await;
        }
        assert_eq!(dead, ["a1", "a2"]);
        assert_eq!(bodies(&c, &rejecting).await, ["a1", "a2"]);
        assert_eq!(bodies(&c, &bytes).await, ["bbb1", "bbb2"]);
        // Room again after the restarts: accepted.
        assert!(acked(&c.publish("", &bytes, b"ccc", persistent()).await));
        let _ = c.conn.close(200, "bye".into()).await;
    });
}
