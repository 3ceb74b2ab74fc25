//! Consumer priorities (issue 12): the `x-priority` basic.consume argument. Messages go
//! to the highest-priority consumers that can take one (prefetch room), round-robin
//! among equals; a lower-priority consumer gets messages only while every higher one is
//! blocked; the default is 0 and negative priorities rank below it. A bad `x-priority`
//! (or `x-cancel-on-ha-failover`, or another queue type's consume argument) is
//! RabbitMQ's 406, and the management API shows a consumer's arguments.
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! consumer_priority`.
mod queue_features;
mod support;

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use queue_features::*;
use support::api::Api;
use support::*;

async fn publish_n(c: &Client, q: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let body = format!("{prefix}{i}");
        c.publish("", q, body.as_bytes(), BasicProperties::default())
            .await;
    }
}

fn prio(p: i64) -> (&'static str, AMQPValue) {
    ("x-priority", AMQPValue::LongLongInt(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_priority_takes_everything_round_robin_among_equals() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("cprio-rr", &[]).await;
    // Registered low first: order of registration must not matter, priority must.
    let (_chl, mut low) = consumer_on(&c.conn, &q, "low", 0, &[]).await;
    let (cha, mut a) = consumer_on(&c.conn, &q, "a", 0, &[prio(10)]).await;
    let (chb, mut bb) = consumer_on(&c.conn, &q, "b", 0, &[prio(10)]).await;
    publish_n(&c, &q, "m", 20).await;
    let got_a = take(&mut a, 10, LONG).await;
    let got_b = take(&mut bb, 10, LONG).await;
    // 20 published, 20 taken by the two priority-10 consumers: none reached "low".
    let bodies = |g: &[(String, u64, bool)]| g.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        bodies(&got_a),
        (0..20)
            .step_by(2)
            .map(|i| format!("m{i}"))
            .collect::<Vec<_>>(),
        "alternating between the equals"
    );
    assert_eq!(
        bodies(&got_b),
        (1..20)
            .step_by(2)
            .map(|i| format!("m{i}"))
            .collect::<Vec<_>>()
    );
    // Once they are gone, the low one gets the next ones.
    for (ch, tag) in [(&cha, "a"), (&chb, "b")] {
        step(
            "basic_cancel",
            ch.basic_cancel(tag.into(), Default::default()),
        )
        .await
        .unwrap();
    }
    publish_n(&c, &q, "late", 2).await;
    let got = take(&mut low, 2, LONG).await;
    assert_eq!(bodies(&got), ["late0", "late1"]);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_priority_gets_messages_only_while_the_higher_is_blocked() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("cprio-block", &[]).await;
    // "high" may hold 2 unacked deliveries; "low" has no limit and a negative priority.
    let (chh, mut high) = consumer_on(&c.conn, &q, "high", 2, &[prio(5)]).await;
    let (_chl, mut low) = consumer_on(&c.conn, &q, "low", 0, &[prio(-3)]).await;
    publish_n(&c, &q, "m", 10).await;
    let got_high = take(&mut high, 2, LONG).await;
    let got_low = take(&mut low, 8, LONG).await;
    assert_eq!(
        got_high.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["m0", "m1"]
    );
    assert_eq!(got_low.len(), 8);
    // "high" acks on its channel, then a publish on that same channel (ordered after
    // the acks on both brokers): "high" has room again, so it gets both.
    for (_, tag, _) in &got_high {
        step("ack", chh.basic_ack(*tag, BasicAckOptions::default()))
            .await
            .unwrap();
    }
    for body in ["n0", "n1"] {
        step(
            "publish on high's channel",
            chh.basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                body.as_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
    }
    let again = take(&mut high, 2, LONG).await;
    assert_eq!(
        again.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["n0", "n1"]
    );
    // And blocked again: the next goes to "low".
    publish_n(&c, &q, "o", 1).await;
    assert_eq!(take(&mut low, 1, LONG).await[0].0, "o0");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_priority_ranks_above_a_negative_one() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    for quorum in [false, true] {
        let args: &[(&str, AMQPValue)] = if quorum {
            &[("x-queue-type", AMQPValue::LongString("quorum".into()))]
        } else {
            &[]
        };
        let q = c.queue_opts("cprio-neg", args, quorum).await;
        let (_chn, mut neg) = consumer_on(&c.conn, &q, "neg", 0, &[prio(-1)]).await;
        let (_chd, mut dflt) = consumer_on(&c.conn, &q, "default", 1, &[]).await;
        publish_n(&c, &q, "m", 3).await;
        let got = take(&mut dflt, 1, LONG).await;
        assert_eq!(got[0].0, "m0", "quorum: {quorum}");
        let got = take(&mut neg, 2, LONG).await;
        assert_eq!(
            got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
            ["m1", "m2"],
            "quorum: {quorum}"
        );
    }
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_consume_arguments_are_refused_as_rabbitmq_does() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("cprio-bad", &[]).await;
    let qq = c
        .queue_opts(
            "cprio-badqq",
            &[("x-queue-type", AMQPValue::LongString("quorum".into()))],
            true,
        )
        .await;
    let rs = |q: &str| format!("for queue '{q}' in vhost '/'");
    let cases: Vec<(&str, (&str, AMQPValue), String)> = vec![
        (
            &q,
            ("x-priority", lstr("high")),
            format!("'x-priority' {}: \"expected integer, got longstr\"", rs(&q)),
        ),
        (
            &q,
            ("x-priority", AMQPValue::Boolean(true)),
            format!("'x-priority' {}: \"expected integer, got bool\"", rs(&q)),
        ),
        (
            &q,
            ("x-cancel-on-ha-failover", AMQPValue::LongInt(1)),
            format!(
                "'x-cancel-on-ha-failover' {}: {{unacceptable_type,signedint}}",
                rs(&q)
            ),
        ),
        (
            &q,
            ("x-stream-offset", AMQPValue::LongInt(1)),
            format!(
                "'x-stream-offset' {} of queue type rabbit_classic_queue",
                rs(&q)
            ),
        ),
        (
            &qq,
            ("x-cancel-on-ha-failover", AMQPValue::Boolean(true)),
            format!(
                "'x-cancel-on-ha-failover' {} of queue type rabbit_quorum_queue",
                rs(&qq)
            ),
        ),
    ];
    for (queue, arg, want) in cases {
        let ch = step("create_channel", c.conn.create_channel())
            .await
            .unwrap();
        let r = step(
            "basic_consume",
            ch.basic_consume(
                queue.into(),
                "bad".into(),
                BasicConsumeOptions::default(),
                table(&[arg]),
            ),
        )
        .await;
        assert_eq!(
            expect_amqp_error(r, 406),
            format!("PRECONDITION_FAILED - invalid arg {want}")
        );
    }
    // Unknown keys and any integer type pass.
    let (_ch, _c) = consumer_on(
        &c.conn,
        &q,
        "fine",
        0,
        &[
            ("x-priority", AMQPValue::ShortShortInt(-2)),
            ("x-whatever", lstr("ok")),
        ],
    )
    .await;
    c.cleanup().await;
}

#[test]
fn the_api_shows_consume_arguments() {
    let b = Broker::start();
    let api = Api::new(&b);
    block_on(async {
        let c = Client::open(&b).await;
        let q = c.queue("cprio-api", &[]).await;
        let (_ch, _consumer) = consumer_on(&c.conn, &q, "shown", 0, &[prio(7)]).await;
        // RabbitMQ's consumer statistics arrive every few seconds.
        let path = format!("/api/queues/%2F/{q}");
        let mut last = serde_json::Value::Null;
        let ok = wait_until(Duration::from_secs(20), || {
            last = api.get(&path).json();
            last["consumer_details"]
                .as_array()
                .is_some_and(|d| d.len() == 1)
        });
        assert!(ok, "no consumer_details: {last}");
        let d = &last["consumer_details"][0];
        assert_eq!(d["consumer_tag"], "shown");
        assert_eq!(d["arguments"], serde_json::json!({"x-priority": 7}));
        assert_eq!(d["active"], true);
        assert_eq!(d["activity_status"], "up");
        assert_eq!(last["single_active_consumer_tag"], serde_json::Value::Null);
        c.cleanup().await;
    });
}
