//! Priority queues (issue 12): `x-max-priority` queues deliver the highest `priority`
//! first and in publish order within one priority (no priority = 0, above the maximum =
//! the maximum), requeued messages (nack, reject, a closed channel) go back to their
//! place within their priority, RabbitMQ's 406s for bad values, `drop-head` drops the
//! highest-priority head, TTL looks at the head as RabbitMQ's priority queue does, the
//! management API's get takes messages in priority order, and the order survives a
//! restart and a `kill -9`.
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! priority` (the restart test is skipped there).
mod queue_features;
mod support;

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicQosOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::BasicProperties;
use queue_features::*;
use serde_json::json;
use support::api::Api;
use support::*;

fn prio(p: u8) -> BasicProperties {
    BasicProperties::default().with_priority(p)
}

/// Publishes `(body, priority)` pairs (None: no priority property) to `q`.
async fn publish_all(c: &Client, q: &str, msgs: &[(&str, Option<u8>)], persistent: bool) {
    for (body, p) in msgs {
        let mut props = match p {
            Some(p) => prio(*p),
            None => BasicProperties::default(),
        };
        if persistent {
            props = props.with_delivery_mode(2);
        }
        c.publish("", q, body.as_bytes(), props).await;
    }
}

/// Takes every ready message with basic.get (acked): the bodies in delivery order.
async fn drain(c: &Client, q: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = c.get(q).await {
        out.push(msg_body(&m));
        c.ack(m.delivery.delivery_tag).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn highest_priority_first_fifo_within_one_and_clamped_to_the_maximum() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("prio", &[("x-max-priority", int(5))]).await;
    publish_all(
        &c,
        &q,
        &[
            ("none-a", None),
            ("p3-a", Some(3)),
            ("p9-a", Some(9)), // above the maximum: treated as 5
            ("p0-a", Some(0)),
            ("p5-a", Some(5)),
            ("p3-b", Some(3)),
            ("p255", Some(255)),
            ("none-b", None),
            ("p1", Some(1)),
        ],
        false,
    )
    .await;
    assert_eq!(c.count(&q).await, Some(9));
    assert_eq!(
        drain(&c, &q).await,
        ["p9-a", "p5-a", "p255", "p3-a", "p3-b", "p1", "none-a", "p0-a", "none-b"]
    );
    // A consumer gets the same order, and a higher priority published meanwhile
    // overtakes what is still queued.
    publish_all(
        &c,
        &q,
        &[("low-1", Some(1)), ("low-2", Some(1)), ("mid", Some(2))],
        false,
    )
    .await;
    let ch = c.conn.create_channel().await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&ch, &q, "prio-c", false).await;
    let mut seen = Vec::new();
    for i in 0..4 {
        let d = within("delivery", LONG, consumer.next())
            .await
            .expect("stream")
            .expect("delivery");
        seen.push(String::from_utf8_lossy(&d.data).into_owned());
        if i == 0 {
            // "mid" is unacked (prefetch 1): "high" arrives before the next delivery.
            publish_all(&c, &q, &[("high", Some(4))], false).await;
        }
        d.ack(Default::default()).await.unwrap();
    }
    assert_eq!(seen, ["mid", "high", "low-1", "low-2"]);
    let _ = ch.close(200, "bye".into()).await;
    // A purge empties every level; the queue orders what comes next as before.
    publish_all(&c, &q, &[("x", Some(1)), ("y", Some(4))], false).await;
    let purged = step(
        "queue_purge",
        c.ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(purged, 2);
    assert_eq!(c.count(&q).await, Some(0));
    publish_all(&c, &q, &[("z", None), ("w", Some(3))], false).await;
    assert_eq!(drain(&c, &q).await, ["w", "z"]);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_messages_go_back_to_their_place_within_their_priority() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c
        .queue("prio-requeue", &[("x-max-priority", int(10))])
        .await;
    publish_all(
        &c,
        &q,
        &[
            ("a1", Some(1)),
            ("a2", Some(1)),
            ("a3", Some(1)),
            ("b1", Some(5)),
            ("b2", Some(5)),
            ("c1", Some(9)),
        ],
        false,
    )
    .await;
    // A second channel takes c1 and holds it until it closes.
    let other = c.conn.create_channel().await.unwrap();
    let held = step(
        "basic_get",
        other.basic_get(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap()
    .expect("c1");
    assert_eq!(String::from_utf8_lossy(&held.delivery.data), "c1");
    // Take b1, b2, a1 and a2; give back a2 (nack), b1 (reject), a1 (nack).
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(c.get(&q).await.expect("message"));
    }
    let bodies: Vec<String> = got.iter().map(msg_body).collect();
    assert_eq!(bodies, ["b1", "b2", "a1", "a2"]);
    let tag = |i: usize| got[i].delivery.delivery_tag;
    c.nack(tag(3), false, true).await;
    step(
        "reject requeue",
        c.ch.basic_reject(tag(0), lapin::options::BasicRejectOptions { requeue: true }),
    )
    .await
    .unwrap();
    c.nack(tag(2), false, true).await;
    c.ack(tag(1)).await;
    // The closed channel's c1 comes back too, still the highest priority.
    let _ = other.close(200, "bye".into()).await;
    c.wait_count(&q, 5, LONG).await;
    let mut order = Vec::new();
    while let Some(m) = c.get(&q).await {
        order.push((msg_body(&m), m.delivery.redelivered));
        c.ack(m.delivery.delivery_tag).await;
    }
    let want = [
        ("c1", true),
        ("b1", true),
        ("a1", true),
        ("a2", true),
        ("a3", false),
    ];
    let want: Vec<(String, bool)> = want.iter().map(|(b, r)| (b.to_string(), *r)).collect();
    assert_eq!(order, want);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_max_priority_values_are_refused_as_rabbitmq_does() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let name = unique("prio-bad");
    let cases = [
        (int(-1), "{value_negative,-1}"),
        (int(256), "{max_value_exceeded,256}"),
        (lstr("5"), "\"expected integer, got longstr\""),
        (
            lapin::types::AMQPValue::Boolean(true),
            "\"expected integer, got bool\"",
        ),
    ];
    for (v, why) in cases {
        let r = c
            .declare_named(&name, &[("x-max-priority", v)], false)
            .await;
        let text = expect_amqp_error(r, 406);
        assert_eq!(
            text,
            format!("PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{name}' in vhost '/': {why}")
        );
    }
    // 0 and 255 are accepted; 0 is one level (plain FIFO).
    let zero = c.queue("prio-zero", &[("x-max-priority", int(0))]).await;
    publish_all(&c, &zero, &[("x", Some(0)), ("y", Some(7))], false).await;
    assert_eq!(drain(&c, &zero).await, ["x", "y"]);
    let top = c.queue("prio-255", &[("x-max-priority", int(255))]).await;
    publish_all(&c, &top, &[("x", Some(254)), ("y", Some(255))], false).await;
    assert_eq!(drain(&c, &top).await, ["y", "x"]);
    // A redeclare with another maximum is inequivalent.
    let r = c
        .declare_named(&top, &[("x-max-priority", int(10))], false)
        .await;
    let text = expect_amqp_error(r, 406);
    assert!(text.contains("inequivalent arg 'x-max-priority'"), "{text}");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_head_drops_the_highest_priority_message() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("prio-dlq", &[]).await;
    let q = c
        .queue(
            "prio-maxlen",
            &[
                ("x-max-priority", int(10)),
                ("x-max-length", int(3)),
                ("x-dead-letter-exchange", lstr("")),
                ("x-dead-letter-routing-key", lstr(&dlq)),
            ],
        )
        .await;
    // RabbitMQ drops the message that would be delivered next: here the newest.
    publish_all(
        &c,
        &q,
        &[
            ("p1", Some(1)),
            ("p5", Some(5)),
            ("p3", Some(3)),
            ("p9", Some(9)),
        ],
        false,
    )
    .await;
    c.wait_count(&dlq, 1, LONG).await;
    assert_eq!(drain(&c, &q).await, ["p5", "p3", "p1"]);
    let m = c.wait_get(&dlq, LONG).await;
    assert_eq!(msg_body(&m), "p9");
    assert_eq!(
        death_summary(&deaths(&m)[0]),
        (q.clone(), "maxlen".into(), 1)
    );
    c.ack(m.delivery.delivery_tag).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_on_a_priority_queue_looks_at_the_highest_priority_head() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("prio-ttl-dlq", &[]).await;
    let dl = [
        ("x-max-priority", int(10)),
        ("x-dead-letter-exchange", lstr("")),
        ("x-dead-letter-routing-key", lstr(&dlq)),
    ];
    // A queue TTL: everything expires, head first, so in priority order.
    let mut args = dl.to_vec();
    args.push(("x-message-ttl", int(200)));
    let q = c.queue("prio-ttl", &args).await;
    publish_all(
        &c,
        &q,
        &[
            ("l1", Some(1)),
            ("h1", Some(8)),
            ("l2", Some(1)),
            ("h2", Some(8)),
        ],
        false,
    )
    .await;
    c.wait_count(&dlq, 4, LONG).await;
    assert_eq!(c.count(&q).await, Some(0));
    let mut expired = Vec::new();
    for _ in 0..4 {
        let m = c.wait_get(&dlq, LONG).await;
        assert_eq!(
            death_summary(&deaths(&m)[0]),
            (q.clone(), "expired".into(), 1)
        );
        expired.push(msg_body(&m));
        c.ack(m.delivery.delivery_tag).await;
    }
    assert_eq!(expired, ["h1", "h2", "l1", "l2"]);

    // Per-message expiration: an expired low-priority message behind a live
    // high-priority head stays counted, and is never delivered: once the levels above
    // it are delivered, it is dead-lettered instead.
    let q2 = c.queue("prio-exp", &dl).await;
    let short = prio(1).with_expiration("30".into());
    c.publish("", &q2, b"short", short).await;
    let long = |p| prio(p).with_expiration("60000".into());
    c.publish("", &q2, b"long-1", long(7)).await;
    c.publish("", &q2, b"long-2", long(7)).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(c.count(&q2).await, Some(3));
    let ch = c.conn.create_channel().await.unwrap();
    let mut consumer = consume(&ch, &q2, "prio-ttl-c", true).await;
    for want in ["long-1", "long-2"] {
        let d = within("delivery", LONG, consumer.next())
            .await
            .expect("stream")
            .expect("delivery");
        assert_eq!(String::from_utf8_lossy(&d.data), want);
    }
    c.wait_count(&dlq, 1, LONG).await;
    assert_eq!(c.count(&q2).await, Some(0));
    let m = c.wait_get(&dlq, LONG).await;
    assert_eq!(msg_body(&m), "short");
    assert_eq!(
        death_summary(&deaths(&m)[0]),
        (q2.clone(), "expired".into(), 1)
    );
    c.ack(m.delivery.delivery_tag).await;
    let _ = ch.close(200, "bye".into()).await;
    c.cleanup().await;
}

/// The management API's get takes messages in priority order and, with requeue, leaves
/// them in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_get_takes_the_highest_priority_first() {
    let b = Broker::start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let q = c.queue("prio-api", &[("x-max-priority", int(3))]).await;
    publish_all(
        &c,
        &q,
        &[("a", Some(1)), ("b", Some(3)), ("c", None), ("d", Some(3))],
        false,
    )
    .await;
    let path = format!("/api/queues/%2F/{}/get", support::api::enc(&q));
    let r = tokio::task::spawn_blocking(move || {
        let body = json!({"count": 3, "ackmode": "ack_requeue_true", "encoding": "auto"});
        api.post(&path, &body)
    })
    .await
    .expect("api thread");
    assert_eq!(r.status, 200, "{}", r.body);
    let payloads: Vec<String> = r
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["payload"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(payloads, ["b", "d", "a"]);
    assert_eq!(drain(&c, &q).await, ["b", "d", "a", "c"]);
    c.cleanup().await;
}

/// A durable priority queue's persistent messages come back after a restart and a
/// `kill -9` in priority order (Warren only: it restarts the broker).
#[test]
fn priority_order_survives_a_restart_and_kill_9() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    for kill in [false, true] {
        let dir = tempfile::TempDir::new().unwrap();
        let mut b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
        let q = block_on(async {
            let c = Client::open(&b).await;
            let q = c
                .queue_opts("prio-restart", &[("x-max-priority", int(10))], true)
                .await;
            publish_all(
                &c,
                &q,
                &[
                    ("a", Some(1)),
                    ("b", Some(5)),
                    ("c", Some(1)),
                    ("d", Some(9)),
                    ("e", None),
                    ("f", Some(5)),
                    ("g", Some(200)),
                ],
                true,
            )
            .await;
            // One delivered and requeued before the restart: back at its place.
            let m = c.get(&q).await.expect("g");
            assert_eq!(msg_body(&m), "g");
            c.nack(m.delivery.delivery_tag, false, true).await;
            c.wait_count(&q, 7, LONG).await;
            let _ = c.conn.close(200, "bye".into()).await;
            q
        });
        if kill {
            b.kill9();
        } else {
            b.stop();
        }
        let b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
        block_on(async {
            let c = Client::open(&b).await;
            assert_eq!(c.count(&q).await, Some(7), "kill: {kill}");
            assert_eq!(
                drain(&c, &q).await,
                ["g", "d", "b", "f", "a", "c", "e"],
                "kill: {kill}"
            );
            let _ = step(
                "queue_delete",
                c.ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
            )
            .await;
            let _ = c.conn.close(200, "bye".into()).await;
        });
    }
}
