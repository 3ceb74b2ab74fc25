//! Publisher confirms and transactions.
mod support;

use std::collections::BTreeSet;

use lapin::options::*;
use lapin::{BasicProperties, Confirmation};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_ack_every_publish() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("conf").await;
    let mut pending = Vec::new();
    for i in 0..200 {
        pending.push(
            step(
                "publish",
                f.ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("{i}").as_bytes(),
                    BasicProperties::default(),
                ),
            )
            .await
            .unwrap(),
        );
    }
    for p in pending {
        let c = step("confirm", p).await.unwrap();
        assert!(matches!(c, Confirmation::Ack(None)), "{c:?}");
    }
    let returned = step("wait_for_confirms", f.ch.wait_for_confirms())
        .await
        .unwrap();
    assert!(returned.is_empty());
    f.wait_counts(&q, Some((200, 0))).await;
    f.cleanup().await;
}

/// Confirm-mode publishes on a raw channel; returns the acked delivery tags.
fn raw_confirm_channel(c: &mut RawClient) {
    c.open_channel(1);
    c.send_method(1, &method(85, 10, &Args::new().bits(&[false]).build()));
    c.expect_method(1, 85, 11);
}

fn raw_publish(c: &mut RawClient, exchange: &str, key: &str, mandatory: bool, body: &[u8]) {
    c.send_method(1, &basic_publish(exchange, key, mandatory));
    c.send_frame(FRAME_HEADER, 1, &content_header(body.len() as u64));
    if !body.is_empty() {
        c.send_frame(FRAME_BODY, 1, body);
    }
}

#[test]
fn raw_confirm_tags_cover_all_publishes() {
    let b = Broker::start();
    let mut c = b.handshake();
    raw_confirm_channel(&mut c);
    let q = unique("rawconf");
    c.send_method(1, &queue_declare(&q, true, false));
    c.expect_method(1, 50, 11);
    const N: u64 = 300;
    for i in 0..N {
        raw_publish(&mut c, "", &q, false, format!("{i}").as_bytes());
    }
    let mut acked = BTreeSet::new();
    let mut multiple_seen = false;
    while (acked.len() as u64) < N {
        let f = c.read_frame(STEP).expect("basic.ack");
        assert!(f.is_method(60, 80), "expected basic.ack, got {f:?}");
        let mut a = f.args();
        let tag = a.longlong();
        let multiple = a.octet() & 1 == 1;
        assert!((1..=N).contains(&tag), "tag {tag}");
        assert!(!acked.contains(&tag), "tag {tag} acked twice");
        if multiple {
            multiple_seen = true;
            for t in 1..=tag {
                acked.insert(t);
            }
        } else {
            acked.insert(tag);
        }
    }
    println!("multiple acks used: {multiple_seen}");
    c.close();
    block_on(roundtrip(&b.uri()));
}

#[test]
fn raw_mandatory_unroutable_with_confirms_returns_then_acks() {
    let b = Broker::start();
    let mut c = b.handshake();
    raw_confirm_channel(&mut c);
    let key = unique("noroute");
    raw_publish(&mut c, "", &key, true, b"boing");
    let ret = c.expect_method(1, 60, 50);
    let mut a = ret.args();
    assert_eq!(a.short(), 312);
    assert_eq!(a.shortstr(), "NO_ROUTE");
    assert_eq!(a.shortstr(), "");
    assert_eq!(a.shortstr(), key);
    let h = c.read_frame(STEP).unwrap();
    assert_eq!(h.kind, FRAME_HEADER);
    let body = c.read_frame(STEP).unwrap();
    assert_eq!(
        (body.kind, body.payload.as_slice()),
        (FRAME_BODY, &b"boing"[..])
    );
    let ack = c.expect_method(1, 60, 80);
    let mut a = ack.args();
    assert_eq!(a.longlong(), 1);
    assert_eq!(a.octet(), 0);
    c.close();
    block_on(roundtrip(&b.uri()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_and_rollback_publishes() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("txpub").await;
    let ch = f.channel().await;
    step("tx_select", ch.tx_select()).await.unwrap();
    for body in ["a", "b"] {
        step(
            "publish",
            ch.basic_publish(
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
    f.wait_counts(&q, Some((0, 0))).await;
    step("tx_commit", ch.tx_commit()).await.unwrap();
    f.wait_counts(&q, Some((2, 0))).await;
    step(
        "publish",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            b"c",
            BasicProperties::default(),
        ),
    )
    .await
    .unwrap();
    step("tx_rollback", ch.tx_rollback()).await.unwrap();
    // An empty commit is fine too.
    step("tx_commit", ch.tx_commit()).await.unwrap();
    f.wait_counts(&q, Some((2, 0))).await;
    assert_eq!(f.drain(&q).await, vec!["a", "b"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_and_rollback_acks() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("txack").await;
    f.fill(&q, &["a", "b"]).await;
    let ch = f.channel().await;
    step("tx_select", ch.tx_select()).await.unwrap();
    let m1 = step(
        "get",
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .unwrap()
    .unwrap();
    let m2 = step(
        "get",
        ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .unwrap()
    .unwrap();
    m1.delivery.ack(BasicAckOptions::default()).await.unwrap();
    step("tx_rollback", ch.tx_rollback()).await.unwrap();
    m2.delivery.ack(BasicAckOptions::default()).await.unwrap();
    step("tx_commit", ch.tx_commit()).await.unwrap();
    // The rolled-back ack did not happen: m1 is still unacked and comes back on close.
    step("close", ch.close(200, "bye".into())).await.unwrap();
    f.wait_counts(&q, Some((1, 0))).await;
    assert_eq!(f.drain(&q).await, vec!["a"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_without_select_is_precondition_failed() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let ch = f.channel().await;
    let text = expect_amqp_error(step("tx_commit", ch.tx_commit()).await, 406);
    assert_eq!(text, "PRECONDITION_FAILED - channel is not transactional");
    let ch = f.channel().await;
    let text = expect_amqp_error(step("tx_rollback", ch.tx_rollback()).await, 406);
    assert_eq!(text, "PRECONDITION_FAILED - channel is not transactional");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_and_confirm_modes_are_exclusive() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    // f.ch is already in confirm mode.
    let text = expect_amqp_error(step("tx_select", f.ch.tx_select()).await, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    );
    let ch = f.channel().await;
    step("tx_select", ch.tx_select()).await.unwrap();
    let text = expect_amqp_error(
        step(
            "confirm_select",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await,
        406,
    );
    assert_eq!(
        text,
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
    );
    let _ = step("close", f.conn.close(200, "bye".into())).await;
    roundtrip(&b.uri()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_select_is_idempotent_and_tx_select_too() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    step(
        "confirm_select again",
        f.ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let q = f.queue("confidem").await;
    assert!(matches!(
        f.publish("", &q, b"x").await,
        Confirmation::Ack(None)
    ));
    let ch = f.channel().await;
    step("tx_select", ch.tx_select()).await.unwrap();
    step("tx_select again", ch.tx_select()).await.unwrap();
    f.cleanup().await;
}
