//! Single active consumer (issue 12): `x-single-active-consumer: true`. Only one
//! consumer receives at a time; when it cancels, its channel closes or its connection
//! goes, the next in RabbitMQ 3.10's order takes over (a classic queue: the highest
//! `x-priority` waiting, registration order among equals; a quorum queue: registration
//! order) and gets the unacked messages that came back. An exclusive consume is refused
//! on a classic SAC queue (accepted on a quorum one), basic.get works as on any queue,
//! the argument is validated as RabbitMQ does, the management API shows
//! `single_active_consumer_tag` and each consumer's `active` / `activity_status`, and
//! a durable SAC queue is still one after a restart and a `kill -9`.
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! single_active_consumer` (the restart test is skipped there).
mod queue_features;
mod support;

use std::time::Duration;

use lapin::options::BasicConsumeOptions;
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use queue_features::*;
use serde_json::{json, Value};
use support::api::Api;
use support::*;

fn sac() -> (&'static str, AMQPValue) {
    ("x-single-active-consumer", AMQPValue::Boolean(true))
}

fn quorum() -> (&'static str, AMQPValue) {
    ("x-queue-type", lstr("quorum"))
}

fn prio(p: i64) -> (&'static str, AMQPValue) {
    ("x-priority", AMQPValue::LongLongInt(p))
}

fn bodies(g: &[(String, u64, bool)]) -> Vec<&str> {
    g.iter().map(|x| x.0.as_str()).collect()
}

async fn publish_n(c: &Client, q: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let body = format!("{prefix}{i}");
        c.publish("", q, body.as_bytes(), BasicProperties::default())
            .await;
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_first_receives_and_the_next_takes_over_on_cancel() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("sac-cancel", &[sac()]).await;
    let (cha, mut a) = consumer_on(&c.conn, &q, "a", 0, &[]).await;
    let (_chb, mut bb) = consumer_on(&c.conn, &q, "b", 0, &[]).await;
    let (chc, _cc) = consumer_on(&c.conn, &q, "c", 0, &[]).await;
    publish_n(&c, &q, "m", 6).await;
    // All six to "a" (and so none to the others: each message goes out once).
    assert_eq!(bodies(&take(&mut a, 6, LONG).await), names("m", 6));
    step("cancel a", cha.basic_cancel("a".into(), Default::default()))
        .await
        .unwrap();
    publish_n(&c, &q, "n", 4).await;
    assert_eq!(bodies(&take(&mut bb, 4, LONG).await), names("n", 4));
    // A waiting consumer's cancel changes nothing: "b" stays active.
    step("cancel c", chc.basic_cancel("c".into(), Default::default()))
        .await
        .unwrap();
    publish_n(&c, &q, "o", 1).await;
    assert_eq!(bodies(&take(&mut bb, 1, LONG).await), ["o0"]);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_go_to_the_next_when_the_active_channel_or_connection_closes() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("sac-close", &[sac()]).await;
    // "a" on its own connection, holding 3 unacked (prefetch 3).
    let other = connect(&b.uri()).await;
    let (cha, mut a) = consumer_on(&other, &q, "a", 3, &[]).await;
    let (chb, mut bb) = consumer_on(&c.conn, &q, "b", 3, &[]).await;
    let (_chc, mut cc) = consumer_on(&c.conn, &q, "c", 0, &[]).await;
    publish_n(&c, &q, "m", 5).await;
    assert_eq!(bodies(&take(&mut a, 3, LONG).await), names("m", 3));
    // Blocked at its prefetch, "a" is still the only one: m3 and m4 wait.
    c.wait_count(&q, 2, LONG).await;
    // Its channel closes: "b" takes over and gets all five, the three back first.
    step("close a's channel", cha.close(200, "bye".into()))
        .await
        .unwrap();
    let got = take(&mut bb, 3, LONG).await;
    assert_eq!(bodies(&got), names("m", 3));
    assert!(got.iter().all(|g| g.2), "redelivered: {got:?}");
    drop(other);
    // "b"'s connection is the test's; kill "b" by closing its channel without acking:
    // "c" gets m0..m4 back (b held m0..m2; m3, m4 were still ready).
    step("close b's channel", chb.close(200, "bye".into()))
        .await
        .unwrap();
    let got = take(&mut cc, 5, LONG).await;
    assert_eq!(bodies(&got), names("m", 5));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_consumers_connection_dying_hands_over() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("sac-conn", &[sac()]).await;
    let doomed = connect(&b.uri()).await;
    let (_cha, mut a) = consumer_on(&doomed, &q, "a", 0, &[]).await;
    let (_chb, mut bb) = consumer_on(&c.conn, &q, "b", 0, &[]).await;
    publish_n(&c, &q, "m", 2).await;
    assert_eq!(bodies(&take(&mut a, 2, LONG).await), names("m", 2));
    step("close a's connection", doomed.close(200, "bye".into()))
        .await
        .unwrap();
    let got = take(&mut bb, 2, LONG).await;
    assert_eq!(bodies(&got), names("m", 2));
    assert!(got.iter().all(|g| g.2));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_active_is_chosen_in_rabbitmqs_order() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    // Classic: the highest priority waiting takes over (registration order among
    // equals), never preempting the active one. Quorum (3.10): registration order.
    for (quorum_queue, want) in [
        (false, ["high", "mid1", "mid2"]),
        (true, ["mid1", "high", "mid2"]),
    ] {
        let args: Vec<(&str, AMQPValue)> = if quorum_queue {
            vec![sac(), quorum()]
        } else {
            vec![sac()]
        };
        let q = c.queue_opts("sac-order", &args, quorum_queue).await;
        let (first_ch, mut first) = consumer_on(&c.conn, &q, "first", 0, &[prio(0)]).await;
        let mut waiting = Vec::new();
        for (tag, p) in [("mid1", 1), ("high", 9), ("mid2", 1)] {
            waiting.push((tag, consumer_on(&c.conn, &q, tag, 0, &[prio(p)]).await));
        }
        publish_n(&c, &q, "m", 1).await;
        assert_eq!(bodies(&take(&mut first, 1, LONG).await), ["m0"]);
        let mut current = ("first", first_ch);
        let mut kept = Vec::new();
        for (round, next) in want.iter().enumerate() {
            step(
                "cancel the active one",
                current.1.basic_cancel(current.0.into(), Default::default()),
            )
            .await
            .unwrap();
            let body = format!("r{round}");
            c.publish("", &q, body.as_bytes(), BasicProperties::default())
                .await;
            let at = waiting.iter().position(|(t, _)| t == next).unwrap();
            let (tag, (ch, mut consumer)) = waiting.remove(at);
            let got = take(&mut consumer, 1, LONG).await;
            assert_eq!(
                bodies(&got),
                [body.as_str()],
                "quorum {quorum_queue}: {tag} is next"
            );
            // Keep the old channel open: closing it would requeue its unacked message.
            let old = std::mem::replace(&mut current, (tag, ch));
            kept.push(old.1);
        }
    }
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consume_and_validation() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("sac-excl", &[sac()]).await;
    let ch = step("create_channel", c.conn.create_channel())
        .await
        .unwrap();
    let r = step(
        "exclusive consume",
        ch.basic_consume(
            q.as_str().into(),
            "x".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(r, 403),
        format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
    );
    // A quorum SAC queue takes it (RabbitMQ 3.10's quorum queues ignore the flag),
    // and the exclusive consumer is simply the active one.
    let qq = c.queue_opts("sac-exclqq", &[sac(), quorum()], true).await;
    let ch = step("create_channel", c.conn.create_channel())
        .await
        .unwrap();
    let mut x = step(
        "exclusive consume on quorum",
        ch.basic_consume(
            qq.as_str().into(),
            "x".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        ),
    )
    .await
    .unwrap();
    let (_ch2, _other) = consumer_on(&c.conn, &qq, "other", 0, &[]).await;
    publish_n(&c, &qq, "m", 1).await;
    assert_eq!(bodies(&take(&mut x, 1, LONG).await), ["m0"]);
    // So does a quorum queue without SAC: a second consumer joins an exclusive one.
    let plain_qq = c.queue_opts("sac-exclqq2", &[quorum()], true).await;
    let ch = step("create_channel", c.conn.create_channel())
        .await
        .unwrap();
    step(
        "exclusive consume on a plain quorum queue",
        ch.basic_consume(
            plain_qq.as_str().into(),
            "x".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        ),
    )
    .await
    .unwrap();
    let (_ch3, _joined) = consumer_on(&c.conn, &plain_qq, "joined", 0, &[]).await;
    // The argument must be a bool; false is a plain queue.
    let name = unique("sac-bad");
    let r = c
        .declare_named(&name, &[("x-single-active-consumer", lstr("true"))], false)
        .await;
    assert_eq!(
        expect_amqp_error(r, 406),
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue '{name}' in vhost '/': {{unacceptable_type,longstr}}"
        )
    );
    let plain = c
        .queue(
            "sac-false",
            &[("x-single-active-consumer", AMQPValue::Boolean(false))],
        )
        .await;
    let (_c1, mut one) = consumer_on(&c.conn, &plain, "one", 0, &[]).await;
    let (_c2, mut two) = consumer_on(&c.conn, &plain, "two", 0, &[]).await;
    publish_n(&c, &plain, "p", 2).await;
    assert_eq!(bodies(&take(&mut one, 1, LONG).await), ["p0"]);
    assert_eq!(bodies(&take(&mut two, 1, LONG).await), ["p1"]);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_takes_what_the_active_consumer_cannot() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let q = c.queue("sac-get", &[sac()]).await;
    publish_n(&c, &q, "m", 1).await;
    let m = c.wait_get(&q, LONG).await;
    assert_eq!(msg_body(&m), "m0");
    c.ack(m.delivery.delivery_tag).await;
    let (_cha, mut a) = consumer_on(&c.conn, &q, "a", 1, &[]).await;
    publish_n(&c, &q, "n", 2).await;
    assert_eq!(bodies(&take(&mut a, 1, LONG).await), ["n0"]);
    c.wait_count(&q, 1, LONG).await;
    let m = c.wait_get(&q, LONG).await;
    assert_eq!(msg_body(&m), "n1");
    c.ack(m.delivery.delivery_tag).await;
    c.cleanup().await;
}

/// Waits until `GET path` answers with JSON for which `ok` holds (RabbitMQ's consumer
/// statistics arrive every few seconds); returns it.
fn wait_json(api: &Api, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let done = wait_until(Duration::from_secs(20), || {
        last = api.get(path).json();
        ok(&last)
    });
    assert!(done, "{path}: {last}");
    last
}

fn statuses(details: &Value) -> Vec<(String, bool, String)> {
    let mut v: Vec<(String, bool, String)> = details
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["consumer_tag"].as_str().unwrap_or("").to_owned(),
                        d["active"].as_bool().unwrap_or(false),
                        d["activity_status"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_api_shows_who_is_active() {
    let b = Broker::start();
    let api = Api::new(&b);
    block_on(async {
        let c = Client::open(&b).await;
        let q = c.queue("sac-api", &[sac()]).await;
        let (cha, _a) = consumer_on(&c.conn, &q, "first", 0, &[]).await;
        let (_chb, _b) = consumer_on(&c.conn, &q, "second", 0, &[prio(3)]).await;
        let path = format!("/api/queues/%2F/{q}");
        let j = wait_json(&api, &path, |j| {
            j["consumer_details"]
                .as_array()
                .is_some_and(|d| d.len() == 2)
                && j["single_active_consumer_tag"] == "first"
        });
        assert_eq!(
            statuses(&j["consumer_details"]),
            [
                ("first".to_owned(), true, "single_active".to_owned()),
                ("second".to_owned(), false, "waiting".to_owned())
            ]
        );
        assert_eq!(j["exclusive_consumer_tag"], Value::Null);
        let second = j["consumer_details"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["consumer_tag"] == "second"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(second["arguments"], json!({"x-priority": 3}));
        let all = wait_json(&api, "/api/consumers/%2F", |j| {
            statuses(&Value::Array(
                j.as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|d| d["queue"]["name"] == q.as_str())
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
            ))
            .len()
                == 2
        });
        let mine: Vec<Value> = all
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|d| d["queue"]["name"] == q.as_str())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            statuses(&Value::Array(mine)),
            [
                ("first".to_owned(), true, "single_active".to_owned()),
                ("second".to_owned(), false, "waiting".to_owned())
            ]
        );
        // The first cancels: the second is active, in the queue's field too.
        step(
            "cancel first",
            cha.basic_cancel("first".into(), Default::default()),
        )
        .await
        .unwrap();
        let j = wait_json(&api, &path, |j| {
            j["single_active_consumer_tag"] == "second"
                && j["consumer_details"]
                    .as_array()
                    .is_some_and(|d| d.len() == 1)
        });
        assert_eq!(
            statuses(&j["consumer_details"]),
            [("second".to_owned(), true, "single_active".to_owned())]
        );
        c.cleanup().await;
    });
}

/// A durable SAC queue is one after a clean restart and after a `kill -9`.
#[test]
fn the_argument_survives_restarts() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let mut b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
    let q = block_on(async {
        let c = Client::open(&b).await;
        let q = c.queue_opts("sac-durable", &[sac()], true).await;
        let _ = step("close", c.conn.close(200, "bye".into())).await;
        q
    });
    for crash in [false, true] {
        if crash {
            b.kill9();
        } else {
            b.stop();
        }
        b = Broker::spawn_in(dir.path(), &[]).expect("respawn");
        block_on(async {
            let c = Client::open(&b).await;
            let (_cha, mut a) = consumer_on(&c.conn, &q, "a", 0, &[]).await;
            let (_chb, _b) = consumer_on(&c.conn, &q, "b", 0, &[]).await;
            publish_n(&c, &q, "m", 4).await;
            assert_eq!(
                bodies(&take(&mut a, 4, LONG).await),
                names("m", 4),
                "crash: {crash}"
            );
            let j = Api::new(&b).get(&format!("/api/queues/%2F/{q}")).json();
            assert_eq!(j["single_active_consumer_tag"], "a", "crash: {crash}");
            let _ = step("close", c.conn.close(200, "bye".into())).await;
        });
    }
}
