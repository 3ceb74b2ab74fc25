//! `x-dead-letter-strategy: at-least-once` on quorum queues (issue 12), as RabbitMQ
//! 3.10's `rabbit_fifo_dlx` does it: in effect only with `x-overflow: reject-publish`
//! (else at-most-once); a dead-lettered message stays in its source queue, not ready but
//! counted (`messages`, `messages_dlx`, `message_bytes_dlx` in the API, and against the
//! length limit), until a target queue has it; a dead-letter exchange that does not
//! exist or routes nowhere keeps it, and the periodic retry delivers it once a queue is
//! bound. On Warren (which owns its process): waiting messages survive a `kill -9`, and
//! a `kill -9` while a batch is being dead-lettered loses nothing.
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! dead_letter_strategy` (the kill tests are skipped there). RabbitMQ retries every
//! 180 s (`dead_letter_worker_publisher_confirm_timeout`); Warren's tests set
//! `--dead-letter-retry-ms`. Against RabbitMQ the wait for the retry runs only with
//! `WARREN_TEST_SLOW=1` (it takes three minutes).
mod queue_features;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{BasicNackOptions, ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, ExchangeKind};
use queue_features::*;
use serde_json::Value;
use support::api::Api;
use support::*;

/// The retry interval Warren runs with here (RabbitMQ's is 180 s).
const RETRY_MS: &str = "300";

fn at_least_once(dlx: &str) -> Vec<(&'static str, AMQPValue)> {
    vec![
        ("x-queue-type", lstr("quorum")),
        ("x-dead-letter-exchange", lstr(dlx)),
        ("x-dead-letter-strategy", lstr("at-least-once")),
        ("x-overflow", lstr("reject-publish")),
    ]
}

/// A broker whose retry interval is short (Warren), or the external one.
fn start() -> Broker {
    if is_external() {
        Broker::start()
    } else {
        Broker::start_with(&["--dead-letter-retry-ms", RETRY_MS]).expect("spawn")
    }
}

/// The API's view of queue `q` once `ok` holds for it (RabbitMQ refreshes its queue
/// statistics every few seconds); panics with the last view otherwise.
async fn api_queue(api: &Api, q: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/queues/%2F/{q}");
    let mut last = Value::Null;
    let found = wait_until_async(Duration::from_secs(30), || {
        let r = api.get(&path);
        last = if r.status == 200 {
            r.json()
        } else {
            Value::Null
        };
        let hit = ok(&last);
        async move { hit }
    })
    .await;
    assert!(found, "{q}: API never matched; last:\n{last:#}");
    last
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX)
}

async fn declare_fanout(c: &Client, x: &str) {
    step(
        "exchange_declare",
        c.ch.exchange_declare(
            x.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
}

async fn delete_exchange(c: &Client, x: &str) {
    let _ = step(
        "exchange_delete",
        c.ch.exchange_delete(x.into(), ExchangeDeleteOptions::default()),
    )
    .await;
}

/// Gets and rejects (requeue=false) the next `k` messages of `q`.
async fn reject_next(c: &Client, q: &str, k: usize) {
    for _ in 0..k {
        let m = c.wait_get(q, LONG).await;
        c.reject(m.delivery.delivery_tag).await;
    }
}

/// A dead-letter exchange that does not exist yet keeps the rejected messages in the
/// source (counted as RabbitMQ counts them, and against the length limit); once the
/// exchange exists and routes to a queue, the retry delivers them with their `x-death`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_dead_letter_waits_and_is_delivered_once_a_queue_is_bound() {
    let b = start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let dlx = unique("dls-x");
    let mut args = at_least_once(&dlx);
    args.push(("x-max-length", int(3)));
    let q = c.queue_opts("dls-src", &args, true).await;
    for body in ["m1", "m2", "m3"] {
        let r = c.publish("", &q, body.as_bytes(), BasicProperties::default());
        assert!(matches!(r.await, Confirmation::Ack(None)));
    }
    reject_next(&c, &q, 2).await;
    // Not ready, not dropped: RabbitMQ's counts.
    assert_eq!(c.count(&q).await, Some(1));
    // RabbitMQ fills these fields from two sources at different moments: wait for all.
    let counts = |v: &Value| {
        (
            n(v, "messages"),
            n(v, "messages_ready"),
            n(v, "messages_dlx"),
            n(v, "message_bytes_dlx"),
            n(v, "message_bytes"),
        )
    };
    api_queue(&api, &q, |v| counts(v) == (3, 1, 2, 4, 6)).await;
    // They count against x-max-length 3 (1 ready + 2 waiting): a quorum queue refuses
    // once it is over its limit, so one more is taken and the next refused.
    let r = c.publish("", &q, b"m4", BasicProperties::default()).await;
    assert!(matches!(r, Confirmation::Ack(None)), "{r:?}");
    let r = c.publish("", &q, b"m5", BasicProperties::default()).await;
    assert!(matches!(r, Confirmation::Nack(None)), "{r:?}");

    // The exchange and a queue bound to it appear: the next retry delivers both.
    declare_fanout(&c, &dlx).await;
    let target = c.queue_opts("dls-target", &[], true).await;
    c.bind(&target, &dlx, "").await;
    if is_external() && std::env::var_os("WARREN_TEST_SLOW").is_none() {
        println!("skipped the retry wait: RabbitMQ retries after 180 s (WARREN_TEST_SLOW=1)");
    } else {
        let wait = if is_external() {
            Duration::from_secs(200)
        } else {
            LONG
        };
        let mut got = Vec::new();
        for _ in 0..2 {
            let m = c.wait_get(&target, wait).await;
            let d = deaths(&m);
            assert_eq!(death_summary(&d[0]), (q.clone(), "rejected".to_string(), 1));
            got.push(msg_body(&m));
            c.ack(m.delivery.delivery_tag).await;
        }
        assert_eq!(got, ["m1", "m2"]);
        api_queue(&api, &q, |v| {
            (
                n(v, "messages"),
                n(v, "messages_dlx"),
                n(v, "message_bytes_dlx"),
            ) == (2, 0, 0)
        })
        .await;
    }
    c.cleanup().await;
    let c = Client::open(&b).await;
    delete_exchange(&c, &dlx).await;
    c.cleanup().await;
}

/// A dead-letter exchange that routes: the message moves at once and leaves the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routable_dead_letter_moves_at_once() {
    let b = start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let dlx = unique("dls-x");
    declare_fanout(&c, &dlx).await;
    let target = c.queue_opts("dls-target", &[], true).await;
    c.bind(&target, &dlx, "").await;
    let q = c.queue_opts("dls-src", &at_least_once(&dlx), true).await;
    c.publish("", &q, b"poison", BasicProperties::default())
        .await;
    reject_next(&c, &q, 1).await;
    let m = c.wait_get(&target, LONG).await;
    assert_eq!(msg_body(&m), "poison");
    assert_eq!(
        text(get(&headers(&m), "x-first-death-reason")),
        "rejected".to_string()
    );
    c.ack(m.delivery.delivery_tag).await;
    // Both fields present: a queue's first statistics on RabbitMQ lack `messages_dlx`.
    api_queue(&api, &q, |v| {
        n(v, "messages") == 0 && n(v, "messages_dlx") == 0
    })
    .await;
    c.cleanup().await;
    let c = Client::open(&b).await;
    delete_exchange(&c, &dlx).await;
    c.cleanup().await;
}

/// Without `x-overflow: reject-publish` the strategy falls back to at-most-once: a
/// message the dead-letter exchange cannot take is dropped, nothing waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reject_publish_it_is_at_most_once() {
    let b = start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let dlx = unique("dls-missing");
    let args: Vec<_> = at_least_once(&dlx)
        .into_iter()
        .filter(|(k, _)| *k != "x-overflow")
        .collect();
    let q = c.queue_opts("dls-amo", &args, true).await;
    c.publish("", &q, b"gone", BasicProperties::default()).await;
    // Published and seen by the API first, so that "0" below is not a stale view.
    api_queue(&api, &q, |v| n(v, "messages") == 1).await;
    reject_next(&c, &q, 1).await;
    api_queue(&api, &q, |v| {
        n(v, "messages") == 0 && n(v, "messages_dlx") == 0
    })
    .await;
    assert_eq!(c.count(&q).await, Some(0));
    c.cleanup().await;
}

/// Warren only: a message waiting to be dead-lettered is still waiting after a `kill
/// -9` (not ready again), and the retry delivers it once the exchange routes.
#[test]
fn a_waiting_dead_letter_survives_a_kill_9() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let mut b = Broker::spawn_in(dir.path(), &["--dead-letter-retry-ms", RETRY_MS]).unwrap();
    let dlx = unique("dls-x");
    let q = block_on(async {
        let api = Api::new(&b);
        let c = Client::open(&b).await;
        let q = c.queue_opts("dls-crash", &at_least_once(&dlx), true).await;
        for body in ["w1", "w2"] {
            let props = BasicProperties::default().with_delivery_mode(2);
            c.publish("", &q, body.as_bytes(), props).await;
        }
        reject_next(&c, &q, 1).await;
        api_queue(&api, &q, |v| n(v, "messages_dlx") == 1).await;
        q
    });
    b.kill9();
    let b = Broker::spawn_in(dir.path(), &["--dead-letter-retry-ms", RETRY_MS]).unwrap();
    block_on(async {
        let api = Api::new(&b);
        let c = Client::open(&b).await;
        api_queue(&api, &q, |v| {
            (
                n(v, "messages_dlx"),
                n(v, "messages"),
                n(v, "messages_ready"),
            ) == (1, 2, 1)
        })
        .await;
        declare_fanout(&c, &dlx).await;
        let target = c.queue_opts("dls-target", &[], true).await;
        c.bind(&target, &dlx, "").await;
        let m = c.wait_get(&target, LONG).await;
        assert_eq!(msg_body(&m), "w1");
        assert_eq!(
            death_summary(&deaths(&m)[0]),
            (q.clone(), "rejected".to_string(), 1)
        );
        let m = c.wait_get(&q, LONG).await;
        assert_eq!(msg_body(&m), "w2");
        api_queue(&api, &q, |v| n(v, "messages_dlx") == 0).await;
        let _ = step("close", c.conn.close(200, "bye".into())).await;
    });
    drop(b);
}

/// Warren only: a `kill -9` right after a batch is rejected (while it is being
/// dead-lettered into a durable queue) loses nothing: every message is in the source
/// or the target after the restart (at worst in both).
#[test]
fn a_kill_9_while_dead_lettering_loses_nothing() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    const N: usize = 300;
    let dir = tempfile::TempDir::new().unwrap();
    let mut b = Broker::spawn_in(dir.path(), &[]).unwrap();
    let dlx = unique("dls-x");
    let (q, target) = block_on(async {
        let c = Client::open(&b).await;
        declare_fanout(&c, &dlx).await;
        let target = c.queue_opts("dls-target", &[], true).await;
        c.bind(&target, &dlx, "").await;
        let q = c.queue_opts("dls-batch", &at_least_once(&dlx), true).await;
        for i in 0..N {
            let props = BasicProperties::default().with_delivery_mode(2);
            let r = c.publish("", &q, format!("b{i}").as_bytes(), props).await;
            assert!(matches!(r, Confirmation::Ack(None)));
        }
        let mut last = 0;
        for _ in 0..N {
            last = c.wait_get(&q, LONG).await.delivery.delivery_tag;
        }
        // The whole batch rejected in one frame; the kill follows without waiting.
        let nack = BasicNackOptions {
            multiple: true,
            requeue: false,
        };
        let _ = c.ch.basic_nack(last, nack).await;
        (q, target)
    });
    b.kill9();
    let b = Broker::spawn_in(dir.path(), &[]).unwrap();
    block_on(async {
        let c = Client::open(&b).await;
        let mut seen = BTreeSet::new();
        for queue in [&q, &target] {
            while let Some(m) = c.get(queue).await {
                seen.insert(msg_body(&m));
                c.ack(m.delivery.delivery_tag).await;
            }
        }
        let missing: Vec<String> = (0..N)
            .map(|i| format!("b{i}"))
            .filter(|b| !seen.contains(b))
            .collect();
        assert!(missing.is_empty(), "lost across the kill: {missing:?}");
        let _ = step("close", c.conn.close(200, "bye".into())).await;
    });
    drop(b);
}
