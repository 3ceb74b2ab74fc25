//! Dead-lettering (issue 12): `x-dead-letter-exchange` and `-routing-key`, reason
//! `rejected` for basic.reject and basic.nack with requeue=false, the `x-death` header
//! and the `x-first-death-*` headers as RabbitMQ 3.10 writes them, the retry-with-delay
//! pattern (work queue → retry queue with a TTL → work queue, `count` going up), the
//! cycle rule, and a missing dead-letter exchange dropping silently.
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! dead_letter` (the restart test is skipped there).
mod queue_features;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::types::AMQPValue;
use lapin::{BasicProperties, Confirmation, ExchangeKind};
use queue_features::*;
use support::*;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_dead_letters_with_rabbitmq_x_death_fields() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlx = c.exchange("dlx", ExchangeKind::Direct).await;
    let dlq = c.queue("dlq", &[]).await;
    c.bind(&dlq, &dlx, "k").await;
    let work = c
        .queue("work", &[("x-dead-letter-exchange", lstr(&dlx))])
        .await;
    c.bind(&work, "amq.direct", "k").await;
    let mut h = lapin::types::FieldTable::default();
    h.insert("app".into(), lstr("kept"));
    let props = BasicProperties::default()
        .with_expiration("60000".into())
        .with_headers(h)
        .with_message_id("m1".into());
    let before = now_s();
    assert!(matches!(
        c.publish("amq.direct", "k", b"poison", props).await,
        Confirmation::Ack(_)
    ));
    let m = c.wait_get(&work, LONG).await;
    c.reject(m.delivery.delivery_tag).await;
    let d = c.wait_get(&dlq, LONG).await;
    c.ack(d.delivery.delivery_tag).await;
    assert_eq!(msg_body(&d), "poison");
    assert_eq!(d.delivery.exchange.as_str(), dlx);
    assert_eq!(d.delivery.routing_key.as_str(), "k");
    assert!(!d.delivery.redelivered);
    let p = &d.delivery.properties;
    assert_eq!(p.expiration(), &None, "expiration is removed");
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
    let hd = headers(&d);
    assert_eq!(text(get(&hd, "app")), "kept");
    assert_eq!(text(get(&hd, "x-first-death-reason")), "rejected");
    assert_eq!(text(get(&hd, "x-first-death-queue")), work);
    assert_eq!(text(get(&hd, "x-first-death-exchange")), "amq.direct");
    let deaths = deaths(&d);
    assert_eq!(deaths.len(), 1);
    let x = &deaths[0];
    assert_eq!(death_summary(x), (work.clone(), "rejected".into(), 1));
    assert_eq!(text(get(x, "exchange")), "amq.direct");
    assert_eq!(text(get(x, "original-expiration")), "60000");
    match get(x, "routing-keys") {
        Some(AMQPValue::FieldArray(a)) => {
            assert_eq!(a.as_slice(), &[lstr("k")]);
        }
        other => panic!("routing-keys {other:?}"),
    }
    match get(x, "time") {
        Some(AMQPValue::Timestamp(t)) => {
            assert!(*t >= before && *t <= now_s() + 1, "time {t}")
        }
        other => panic!("time {other:?}"),
    }
    let keys: Vec<String> = x.inner().keys().map(|k| k.to_string()).collect();
    assert_eq!(
        keys.len(),
        7,
        "count, reason, queue, time, exchange, routing-keys, original-expiration: {keys:?}"
    );
    assert_eq!(c.count(&work).await, Some(0));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_multiple_dead_letters_each_with_the_dead_letter_routing_key() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlq = c.queue("dlq", &[]).await;
    let work = c
        .queue(
            "work",
            &[
                ("x-dead-letter-exchange", lstr("")),
                ("x-dead-letter-routing-key", lstr(&dlq)),
            ],
        )
        .await;
    for i in 0..3 {
        c.publish(
            "",
            &work,
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = c.wait_get(&work, LONG).await.delivery.delivery_tag;
    }
    c.nack(last, true, false).await;
    for i in 0..3 {
        let d = c.wait_get(&dlq, LONG).await;
        assert_eq!(msg_body(&d), format!("m{i}"), "in order");
        assert_eq!(d.delivery.exchange.as_str(), "");
        assert_eq!(
            d.delivery.routing_key.as_str(),
            dlq,
            "the dead-letter routing key"
        );
        let x = &deaths(&d)[0];
        assert_eq!(death_summary(x), (work.clone(), "rejected".into(), 1));
        match get(x, "routing-keys") {
            Some(AMQPValue::FieldArray(a)) => assert_eq!(a.as_slice(), &[lstr(&work)]),
            other => panic!("routing-keys {other:?}"),
        }
        assert!(get(x, "original-expiration").is_none());
        c.ack(d.delivery.delivery_tag).await;
    }
    // requeue=true does not dead-letter.
    c.publish("", &work, b"back", BasicProperties::default())
        .await;
    let m = c.wait_get(&work, LONG).await;
    c.nack(m.delivery.delivery_tag, false, true).await;
    assert_eq!(c.count(&work).await, Some(1));
    assert_eq!(c.count(&dlq).await, Some(0));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_exchange_drops_silently() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let work = c
        .queue(
            "work",
            &[("x-dead-letter-exchange", lstr(&unique("nowhere")))],
        )
        .await;
    c.publish("", &work, b"x", BasicProperties::default()).await;
    let m = c.wait_get(&work, LONG).await;
    c.reject(m.delivery.delivery_tag).await;
    // The channel is still usable and the message is gone.
    assert_eq!(c.count(&work).await, Some(0));
    assert!(c.get(&work).await.is_none());
    c.cleanup().await;
}

/// The retry-with-delay pattern: a consumer rejects; the message waits in a retry queue
/// for its TTL, expires back into the work queue; `x-death` counts each leg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_delay_counts_up_in_x_death() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let work_name = unique("work");
    let retry = c
        .queue(
            "retry",
            &[
                ("x-message-ttl", int(100)),
                ("x-dead-letter-exchange", lstr("")),
                ("x-dead-letter-routing-key", lstr(&work_name)),
            ],
        )
        .await;
    c.declare_named(
        &work_name,
        &[
            ("x-dead-letter-exchange", lstr("")),
            ("x-dead-letter-routing-key", lstr(&retry)),
        ],
        false,
    )
    .await
    .unwrap();
    c.forget_later(&work_name);
    let work = work_name;
    c.publish("", &work, b"job", BasicProperties::default())
        .await;
    for round in 1..=3i64 {
        let m = c.wait_get(&work, LONG).await;
        if round > 1 {
            let d = deaths(&m);
            assert_eq!(d.len(), 2, "{d:?}");
            // Newest first: it just expired out of the retry queue.
            assert_eq!(
                death_summary(&d[0]),
                (retry.clone(), "expired".into(), round - 1)
            );
            assert_eq!(
                death_summary(&d[1]),
                (work.clone(), "rejected".into(), round - 1)
            );
            assert_eq!(m.delivery.routing_key.as_str(), work);
            let h = headers(&m);
            assert_eq!(text(get(&h, "x-first-death-queue")), work);
            assert_eq!(text(get(&h, "x-first-death-reason")), "rejected");
        }
        c.reject(m.delivery.delivery_tag).await;
    }
    let m = c.wait_get(&work, LONG).await;
    assert_eq!(death_summary(&deaths(&m)[0]).2, 3);
    c.ack(m.delivery.delivery_tag).await;
    c.cleanup().await;
}

/// A message that expires back into the queue it expired from (no rejection on the way)
/// is dropped there, while other queues of the dead-letter exchange get it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_dead_letter_cycle_is_dropped() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let dlx = c.exchange("cyc", ExchangeKind::Fanout).await;
    let other = c.queue("other", &[]).await;
    let looping = c
        .queue(
            "loop",
            &[
                ("x-message-ttl", int(50)),
                ("x-dead-letter-exchange", lstr(&dlx)),
            ],
        )
        .await;
    c.bind(&other, &dlx, "").await;
    c.bind(&looping, &dlx, "").await;
    c.publish("", &looping, b"round", BasicProperties::default())
        .await;
    c.wait_count(&other, 1, LONG).await;
    c.wait_count(&looping, 0, LONG).await;
    // A cycle would bring it back into `loop` and a second copy into `other` within a
    // TTL or two; wait ten.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.count(&other).await, Some(1));
    assert_eq!(c.count(&looping).await, Some(0));
    let m = c.wait_get(&other, LONG).await;
    assert_eq!(
        death_summary(&deaths(&m)[0]),
        (looping.clone(), "expired".into(), 1)
    );
    c.ack(m.delivery.delivery_tag).await;
    c.cleanup().await;
}

/// A persistent message dead-lettered into a durable queue is persistent there: it and
/// its x-death survive a restart (Warren only: it owns the process).
#[test]
fn dead_lettered_persistent_messages_survive_a_restart() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let mut b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
    let (work, dlq) = block_on(async {
        let c = Client::open(&b).await;
        let dlq = c.queue_opts("dlq", &[], true).await;
        let work = c
            .queue_opts(
                "work",
                &[
                    ("x-dead-letter-exchange", lstr("")),
                    ("x-dead-letter-routing-key", lstr(&dlq)),
                ],
                true,
            )
            .await;
        let props = BasicProperties::default().with_delivery_mode(2);
        assert!(matches!(
            c.publish("", &work, b"p", props).await,
            Confirmation::Ack(_)
        ));
        let m = c.wait_get(&work, LONG).await;
        c.reject(m.delivery.delivery_tag).await;
        c.wait_count(&dlq, 1, LONG).await;
        let _ = c.conn.close(200, "bye".into()).await;
        (work, dlq)
    });
    b.kill9();
    let b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
    block_on(async {
        let c = Client::open(&b).await;
        assert_eq!(c.count(&work).await, Some(0));
        let m = c.wait_get(&dlq, LONG).await;
        assert_eq!(msg_body(&m), "p");
        assert_eq!(m.delivery.properties.delivery_mode(), &Some(2));
        assert_eq!(
            death_summary(&deaths(&m)[0]),
            (work.clone(), "rejected".into(), 1)
        );
        c.ack(m.delivery.delivery_tag).await;
    });
}

/// Warren only: the x-death history written before a `kill -9` goes on counting after
/// it: a message rejected from `work` into `retry`, then (after the crash) rejected from
/// `retry` back into `work` and from `work` again carries both entries, `work`'s with
/// count 2, and the `x-first-death-*` headers of its first death.
#[test]
fn x_death_keeps_counting_after_a_kill_9() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let mut b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
    let work = unique("work");
    let retry = unique("retry");
    let to = |q: &str| {
        vec![
            ("x-dead-letter-exchange", lstr("")),
            ("x-dead-letter-routing-key", lstr(q)),
        ]
    };
    block_on(async {
        let c = Client::open(&b).await;
        c.declare_named(&work, &to(&retry), true).await.unwrap();
        c.declare_named(&retry, &to(&work), true).await.unwrap();
        let props = BasicProperties::default().with_delivery_mode(2);
        c.publish("", &work, b"p", props).await;
        let m = c.wait_get(&work, LONG).await;
        c.reject(m.delivery.delivery_tag).await;
        c.wait_count(&retry, 1, LONG).await;
        let _ = c.conn.close(200, "bye".into()).await;
    });
    b.kill9();
    let b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
    block_on(async {
        let c = Client::open(&b).await;
        for q in [&retry, &work] {
            let m = c.wait_get(q, LONG).await;
            c.reject(m.delivery.delivery_tag).await;
        }
        let m = c.wait_get(&retry, LONG).await;
        let d = deaths(&m);
        let summary: Vec<_> = d.iter().map(death_summary).collect();
        assert_eq!(
            summary,
            [
                (work.clone(), "rejected".into(), 2),
                (retry.clone(), "rejected".into(), 1)
            ]
        );
        let h = headers(&m);
        assert_eq!(text(get(&h, "x-first-death-queue")), work);
        assert_eq!(text(get(&h, "x-first-death-reason")), "rejected");
        assert_eq!(m.delivery.properties.delivery_mode(), &Some(2));
        c.ack(m.delivery.delivery_tag).await;
        let ch = c.conn.create_channel().await.unwrap();
        for q in [&work, &retry] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
    });
}
