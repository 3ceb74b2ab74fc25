//! Consumers, acknowledgements, prefetch and queue lifecycle.
mod support;

use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::Channel;
use support::*;

const QUIET: Duration = Duration::from_millis(400);

async fn qos(ch: &Channel, n: u16, global: bool) {
    step("basic_qos", ch.basic_qos(n, BasicQosOptions { global }))
        .await
        .unwrap();
}

async fn get(ch: &Channel, q: &str, no_ack: bool) -> Option<lapin::message::BasicGetMessage> {
    step(
        "basic_get",
        ch.basic_get(q.into(), BasicGetOptions { no_ack }),
    )
    .await
    .unwrap()
}

fn bodies(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

async fn fill_n(f: &Fixture, q: &str, n: usize) -> Vec<String> {
    let b = bodies(n);
    let refs: Vec<&str> = b.iter().map(|s| s.as_str()).collect();
    f.fill(q, &refs).await;
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_among_three_consumers() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("rr").await;
    let mut cs = Vec::new();
    for i in 0..3 {
        let ch = f.channel().await;
        cs.push((consume(&ch, &q, &format!("c{i}"), false).await, ch));
    }
    let sent = fill_n(&f, &q, 9).await;
    for (i, (c, _)) in cs.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..3 {
            let d = next_delivery(c).await;
            got.push(body(&d));
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        assert_eq!(
            got,
            vec![sent[i].clone(), sent[i + 3].clone(), sent[i + 6].clone()],
            "consumer {i}"
        );
    }
    for (c, _) in cs.iter_mut() {
        assert_no_delivery(c, Duration::from_millis(100)).await;
    }
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_consumer_prefetch() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("pfc").await;
    let ch = f.channel().await;
    qos(&ch, 2, false).await;
    let mut c1 = consume(&ch, &q, "c1", false).await;
    let mut c2 = consume(&ch, &q, "c2", false).await;
    fill_n(&f, &q, 10).await;
    let a1 = next_delivery(&mut c1).await;
    let _a2 = next_delivery(&mut c1).await;
    let _b1 = next_delivery(&mut c2).await;
    let _b2 = next_delivery(&mut c2).await;
    assert_no_delivery(&mut c1, QUIET).await;
    assert_no_delivery(&mut c2, Duration::from_millis(50)).await;
    f.wait_counts(&q, Some((6, 2))).await;
    // Acking one of c1's frees exactly one slot for c1.
    a1.ack(BasicAckOptions::default()).await.unwrap();
    let _a3 = next_delivery(&mut c1).await;
    assert_no_delivery(&mut c1, QUIET).await;
    assert_no_delivery(&mut c2, Duration::from_millis(50)).await;
    f.wait_counts(&q, Some((5, 2))).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_prefetch_is_shared_by_the_channel() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("pfg").await;
    let ch = f.channel().await;
    qos(&ch, 3, true).await;
    let mut c1 = consume(&ch, &q, "c1", false).await;
    let mut c2 = consume(&ch, &q, "c2", false).await;
    fill_n(&f, &q, 10).await;
    // 3 in flight on the channel in total, round-robin: c1, c2, c1.
    let d1 = next_delivery(&mut c1).await;
    let _d2 = next_delivery(&mut c2).await;
    let _d3 = next_delivery(&mut c1).await;
    assert_no_delivery(&mut c1, QUIET).await;
    assert_no_delivery(&mut c2, Duration::from_millis(50)).await;
    f.wait_counts(&q, Some((7, 2))).await;
    d1.ack(BasicAckOptions::default()).await.unwrap();
    // One slot: goes to c2 (next in round-robin).
    let _d4 = next_delivery(&mut c2).await;
    assert_no_delivery(&mut c1, QUIET).await;
    f.wait_counts(&q, Some((6, 2))).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_and_per_consumer_prefetch_combine() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("pfb").await;
    let ch = f.channel().await;
    qos(&ch, 3, true).await; // channel-wide
    qos(&ch, 1, false).await; // each new consumer
    let mut c1 = consume(&ch, &q, "c1", false).await;
    let mut c2 = consume(&ch, &q, "c2", false).await;
    fill_n(&f, &q, 10).await;
    let _ = next_delivery(&mut c1).await;
    let _ = next_delivery(&mut c2).await;
    assert_no_delivery(&mut c1, QUIET).await;
    assert_no_delivery(&mut c2, Duration::from_millis(50)).await;
    f.wait_counts(&q, Some((8, 2))).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_multiple() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("ackm").await;
    let ch = f.channel().await;
    let mut c = consume(&ch, &q, "c", false).await;
    let sent = fill_n(&f, &q, 5).await;
    let mut ds = Vec::new();
    for _ in 0..5 {
        ds.push(next_delivery(&mut c).await);
    }
    step(
        "ack multiple",
        ch.basic_ack(ds[2].delivery_tag, BasicAckOptions { multiple: true }),
    )
    .await
    .unwrap();
    // Closing the channel requeues only the two still unacked.
    step("channel close", ch.close(200, "bye".into()))
        .await
        .unwrap();
    f.wait_counts(&q, Some((2, 0))).await;
    let got = f.drain(&q).await;
    assert_eq!(got, vec![sent[3].clone(), sent[4].clone()]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_multiple_requeue_redelivers_in_order() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("nackm").await;
    let ch = f.channel().await;
    qos(&ch, 3, false).await;
    let mut c = consume(&ch, &q, "c", false).await;
    let sent = fill_n(&f, &q, 4).await;
    let mut ds = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut c).await;
        assert!(!d.redelivered);
        ds.push(d);
    }
    step(
        "nack multiple",
        ch.basic_nack(
            ds[2].delivery_tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        ),
    )
    .await
    .unwrap();
    // Requeued messages go back to their original positions (ahead of m3).
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = next_delivery(&mut c).await;
        got.push((body(&d), d.redelivered));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(
        got,
        vec![
            (sent[0].clone(), true),
            (sent[1].clone(), true),
            (sent[2].clone(), true),
            (sent[3].clone(), false),
        ]
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_without_requeue_drops() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("rej").await;
    let ch = f.channel().await;
    f.fill(&q, &["a", "b"]).await;
    let m = get(&ch, &q, false).await.unwrap();
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let m = get(&ch, &q, false).await.unwrap();
    assert_eq!(body(&m.delivery), "b");
    m.delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let m = get(&ch, &q, true).await.unwrap();
    assert_eq!(body(&m.delivery), "b");
    assert!(m.delivery.redelivered);
    assert!(get(&ch, &q, true).await.is_none());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_requeue_redelivers() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("recov").await;
    let ch = f.channel().await;
    let mut c = consume(&ch, &q, "c", false).await;
    f.fill(&q, &["a", "b"]).await;
    for want in ["a", "b"] {
        let d = next_delivery(&mut c).await;
        assert_eq!((body(&d).as_str(), d.redelivered), (want, false));
    }
    step(
        "basic_recover",
        ch.basic_recover(BasicRecoverOptions { requeue: true }),
    )
    .await
    .unwrap();
    for want in ["a", "b"] {
        let d = next_delivery(&mut c).await;
        assert_eq!((body(&d).as_str(), d.redelivered), (want, true));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_no_delivery(&mut c, Duration::from_millis(100)).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_channel_requeues_unacked_in_order() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("closereq").await;
    let ch = f.channel().await;
    let mut c = consume(&ch, &q, "c", false).await;
    let sent = fill_n(&f, &q, 5).await;
    let mut ds = Vec::new();
    for _ in 0..5 {
        ds.push(next_delivery(&mut c).await);
    }
    ds[1].ack(BasicAckOptions::default()).await.unwrap();
    ds[3].ack(BasicAckOptions::default()).await.unwrap();
    step("channel close", ch.close(200, "bye".into()))
        .await
        .unwrap();
    f.wait_counts(&q, Some((3, 0))).await;
    let ch2 = f.channel().await;
    let mut got = Vec::new();
    while let Some(m) = get(&ch2, &q, true).await {
        got.push((body(&m.delivery), m.delivery.redelivered));
    }
    assert_eq!(
        got,
        vec![
            (sent[0].clone(), true),
            (sent[2].clone(), true),
            (sent[4].clone(), true),
        ]
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_counts_and_acks() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("get").await;
    let ch = f.channel().await;
    assert!(get(&ch, &q, false).await.is_none(), "get-empty");
    f.fill(&q, &["a", "b", "c"]).await;
    let m1 = get(&ch, &q, false).await.unwrap();
    assert_eq!((body(&m1.delivery).as_str(), m1.message_count), ("a", 2));
    assert_eq!(m1.delivery.delivery_tag, 1);
    assert_eq!(m1.delivery.exchange.as_str(), "");
    assert_eq!(m1.delivery.routing_key.as_str(), q);
    let m2 = get(&ch, &q, true).await.unwrap();
    assert_eq!((body(&m2.delivery).as_str(), m2.message_count), ("b", 1));
    assert_eq!(m2.delivery.delivery_tag, 2);
    let m3 = get(&ch, &q, false).await.unwrap();
    assert_eq!((body(&m3.delivery).as_str(), m3.message_count), ("c", 0));
    assert!(get(&ch, &q, false).await.is_none());
    m1.delivery.ack(BasicAckOptions::default()).await.unwrap();
    // m3 is unacked: closing the channel requeues it.
    step("close", ch.close(200, "bye".into())).await.unwrap();
    f.wait_counts(&q, Some((1, 0))).await;
    assert_eq!(f.drain(&q).await, vec!["c"]);
    f.cleanup().await;
}

#[test]
fn unknown_delivery_tag_is_precondition_failed() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    let q = unique("badtag");
    c.send_method(1, &queue_declare(&q, true, false));
    c.expect_method(1, 50, 11);
    c.send_method(1, &basic_publish("", &q, false));
    c.send_frame(FRAME_HEADER, 1, &content_header(1));
    c.send_frame(FRAME_BODY, 1, b"a");
    let get = method(
        60,
        70,
        &Args::new().short(0).shortstr(&q).bits(&[false]).build(),
    );
    // The publish may not have reached the queue yet: poll with basic.get.
    let deadline = std::time::Instant::now() + STEP;
    loop {
        c.send_method(1, &get);
        let f = c.read_frame(STEP).expect("get reply");
        if f.is_method(60, 71) {
            break;
        }
        assert!(f.is_method(60, 72), "{f:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "message never arrived"
        );
    }
    assert_eq!(c.read_frame(STEP).unwrap().kind, FRAME_HEADER);
    assert_eq!(c.read_frame(STEP).unwrap().kind, FRAME_BODY);
    c.send_method(1, &basic_ack(1, false));
    c.send_method(1, &basic_ack(1, false));
    let (code, text, class, meth) = c.expect_channel_close(1);
    assert_eq!(code, 406);
    assert_eq!(text, "PRECONDITION_FAILED - unknown delivery tag 1");
    assert_eq!((class, meth), (60, 80));
    // Tag that was never issued, with multiple=true.
    c.open_channel(2);
    c.send_method(2, &basic_ack(42, true));
    let (code, text, class, meth) = c.expect_channel_close(2);
    assert_eq!(code, 406);
    assert_eq!(text, "PRECONDITION_FAILED - unknown delivery tag 42");
    assert_eq!((class, meth), (60, 80));
    c.close();
    block_on(roundtrip(&b.uri()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_deliveries() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("cancel").await;
    let ch = f.channel().await;
    let mut c = consume(&ch, &q, "ctag-1", false).await;
    f.fill(&q, &["a"]).await;
    let d = next_delivery(&mut c).await;
    d.ack(BasicAckOptions::default()).await.unwrap();
    step(
        "basic_cancel",
        ch.basic_cancel("ctag-1".into(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    f.fill(&q, &["b"]).await;
    f.wait_counts(&q, Some((1, 0))).await;
    assert_eq!(f.drain(&q).await, vec!["b"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("xcons").await;
    let ch1 = f.channel().await;
    let _c1 = step(
        "exclusive consume",
        ch1.basic_consume(
            q.as_str().into(),
            "x1".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let ch2 = f.channel().await;
    let r = step(
        "second consume",
        ch2.basic_consume(
            q.as_str().into(),
            "x2".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let text = expect_amqp_error(r, 403);
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
    );
    // And an exclusive consume on a queue that already has a consumer.
    let q2 = f.queue("xcons2").await;
    let ch3 = f.channel().await;
    let _c3 = consume(&ch3, &q2, "plain", false).await;
    let ch4 = f.channel().await;
    let r = step(
        "exclusive consume on busy queue",
        ch4.basic_consume(
            q2.as_str().into(),
            "x4".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    let text = expect_amqp_error(r, 403);
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - queue '{q2}' in vhost '/' in exclusive use")
    );
    f.cleanup().await;
}

#[test]
fn deleted_queue_cancels_consumer() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    let q = unique("delcancel");
    c.send_method(1, &queue_declare(&q, false, false));
    c.expect_method(1, 50, 11);
    c.send_method(1, &basic_consume(&q, "doomed", false));
    c.expect_method(1, 60, 21);
    // Another client deletes the queue.
    let mut other = RawClient::with_channel(b.port);
    other.send_method(1, &queue_delete(&q));
    other.expect_method(1, 50, 41);
    other.close();
    let f = c.expect_method(1, 60, 30);
    let mut a = f.args();
    assert_eq!(a.shortstr(), "doomed");
    assert_eq!(
        a.octet(),
        1,
        "RabbitMQ sets no-wait on server-sent basic.cancel"
    );
    // The channel stays usable.
    c.send_method(1, &queue_declare("", true, false));
    c.expect_method(1, 50, 11);
    c.close();
    block_on(roundtrip(&b.uri()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_with_last_consumer() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = unique("autodel");
    step(
        "declare auto-delete",
        f.ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    // No consumer yet: stays.
    f.wait_counts(&q, Some((0, 0))).await;
    let ch = f.channel().await;
    let _c1 = consume(&ch, &q, "a", false).await;
    let _c2 = consume(&ch, &q, "b", false).await;
    step("cancel a", ch.basic_cancel("a".into(), Default::default()))
        .await
        .unwrap();
    f.wait_counts(&q, Some((0, 1))).await;
    step("cancel b", ch.basic_cancel("b".into(), Default::default()))
        .await
        .unwrap();
    f.wait_counts(&q, None).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_private_and_dies_with_connection() {
    let b = Broker::start();
    let owner = connect(&b.uri()).await;
    let ch = owner.create_channel().await.unwrap();
    let q = unique("excl");
    step(
        "declare exclusive",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let f = Fixture::open(&b.uri()).await;
    let ch2 = f.channel().await;
    let r = step(
        "consume other's exclusive queue",
        ch2.basic_consume(
            q.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let text = expect_amqp_error(r, 405);
    assert_eq!(
        text,
        format!(
            "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. \
             It could be originally declared on another connection or the exclusive property \
             value does not match that of the original declaration."
        )
    );
    step("close owner", owner.close(200, "bye".into()))
        .await
        .unwrap();
    f.wait_counts(&q, None).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = step(
        "declare server-named",
        f.ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let name = q.name().as_str().to_string();
    assert!(name.starts_with("amq.gen-"), "{name}");
    assert_eq!(name.len(), "amq.gen-".len() + 22, "{name}");
    assert!(name["amq.gen-".len()..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    // Declaring an amq.* name explicitly is refused.
    let ch = f.channel().await;
    let bad = unique("amq.mine").trim_start_matches("wt-").to_string();
    let r = step(
        "declare amq.*",
        ch.queue_declare(
            bad.as_str().into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let text = expect_amqp_error(r, 403);
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - queue name '{bad}' contains reserved prefix 'amq.*'")
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_counts_and_purge() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("counts").await;
    fill_n(&f, &q, 4).await;
    f.wait_counts(&q, Some((4, 0))).await;
    let ch = f.channel().await;
    qos(&ch, 1, false).await;
    let mut c1 = consume(&ch, &q, "c1", false).await;
    let mut c2 = consume(&ch, &q, "c2", false).await;
    let _ = next_delivery(&mut c1).await;
    let _ = next_delivery(&mut c2).await;
    // message_count counts only ready messages.
    f.wait_counts(&q, Some((2, 2))).await;
    let purged = step(
        "purge",
        f.ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(purged, 2, "purge leaves unacked messages alone");
    f.wait_counts(&q, Some((0, 2))).await;
    step("close consumers", ch.close(200, "bye".into()))
        .await
        .unwrap();
    f.wait_counts(&q, Some((2, 0))).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delete_if_empty_and_if_unused() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("delif").await;
    f.fill(&q, &["a", "b"]).await;
    let ch = f.channel().await;
    let r = step(
        "delete if_empty",
        ch.queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        ),
    )
    .await;
    let text = expect_amqp_error(r, 406);
    assert_eq!(
        text,
        format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")
    );
    let ch = f.channel().await;
    let _c = consume(&ch, &q, "holder", false).await;
    let ch2 = f.channel().await;
    let r = step(
        "delete if_unused",
        ch2.queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        ),
    )
    .await;
    let text = expect_amqp_error(r, 406);
    assert_eq!(
        text,
        format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")
    );
    // Unconditional delete reports the ready message count (unacked are not counted).
    step("close consumer", ch.close(200, "bye".into()))
        .await
        .unwrap();
    f.wait_counts(&q, Some((2, 0))).await;
    let n = step(
        "delete",
        f.ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    // Deleting a missing queue is not an error.
    let n = step(
        "delete again",
        f.ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(n, 0);
    f.cleanup().await;
}
