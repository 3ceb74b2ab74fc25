//! Direct reply-to (issue 12) with a Rust client: an RPC round trip through
//! `amq.rabbitmq.reply-to` with no reply queue (the requester consumes the pseudo-queue
//! no-ack, the responder on another connection publishes to the address its request
//! carried), the address rewritten in a transaction too, replies dropped once the
//! requesting channel is gone, RabbitMQ's 406s for misuse, and a reply published through
//! the management API (`POST /api/exchanges/%2F/amq.default/publish`).
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! direct_reply_to`. The pika version (the RPC tutorial) is tests/pika/test_direct_reply_to.py.
mod support;

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde_json::json;
use support::api::Api;
use support::*;

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

async fn channel(c: &Connection) -> Channel {
    step("create_channel", c.create_channel()).await.unwrap()
}

/// Consumes the pseudo-queue no-ack on `ch`; the consumer.
async fn consume_replies(ch: &Channel) -> lapin::Consumer {
    step(
        "basic_consume reply-to",
        ch.basic_consume(
            REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap()
}

/// basic.get until a message comes (no-ack).
async fn wait_get(ch: &Channel, q: &str) -> lapin::message::BasicGetMessage {
    let end = std::time::Instant::now() + STEP;
    loop {
        let got = step(
            "basic_get",
            ch.basic_get(q.into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap();
        if let Some(m) = got {
            return m;
        }
        assert!(std::time::Instant::now() < end, "nothing in {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn declare(ch: &Channel, name: &str, passive: bool) -> lapin::Result<lapin::Queue> {
    step(
        "queue_declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
}

async fn publish(ch: &Channel, key: &str, body: &[u8], props: BasicProperties) {
    step(
        "basic_publish",
        ch.basic_publish(
            "".into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        ),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_round_trip_without_a_reply_queue() {
    let b = Broker::start();
    let client = b.connect().await;
    let server = b.connect().await;
    let cch = channel(&client).await;
    let sch = channel(&server).await;
    let rpc = unique("rpc");
    declare(&sch, &rpc, false).await.unwrap();
    let mut replies = consume_replies(&cch).await;

    for (i, corr) in ["c1", "c2"].into_iter().enumerate() {
        let props = BasicProperties::default()
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id(corr.into());
        publish(&cch, &rpc, format!("req{i}").as_bytes(), props).await;
        let req = wait_get(&sch, &rpc).await;
        let address = req
            .delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|s| s.to_string())
            .expect("reply_to");
        assert!(
            address.starts_with("amq.rabbitmq.reply-to.") && address.len() > REPLY_TO.len() + 1,
            "{address}"
        );
        // The address exists for others while its consumer does.
        let ok = declare(&channel(&server).await, &address, true)
            .await
            .unwrap();
        assert_eq!((ok.message_count(), ok.consumer_count()), (0, 1));
        let reply = BasicProperties::default().with_correlation_id(corr.into());
        publish(&sch, &address, format!("resp{i}").as_bytes(), reply).await;
        let d = within("reply", STEP, replies.next())
            .await
            .expect("consumer stream ended")
            .unwrap();
        assert_eq!(d.data, format!("resp{i}").as_bytes());
        assert_eq!(
            d.properties.correlation_id().as_ref().map(|s| s.as_str()),
            Some(corr)
        );
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(d.routing_key.as_str(), address);
        assert!(!d.redelivered);
    }
    let _ = sch
        .queue_delete(rpc.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = client.close(200, "bye".into()).await;
    let _ = server.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_carries_the_address_and_a_closed_channel_gets_nothing() {
    let b = Broker::start();
    let client = b.connect().await;
    let server = b.connect().await;
    let cch = channel(&client).await;
    let sch = channel(&server).await;
    let rpc = unique("rpc-tx");
    declare(&sch, &rpc, false).await.unwrap();
    let mut replies = consume_replies(&cch).await;
    step("tx_select", cch.tx_select()).await.unwrap();
    publish(
        &cch,
        &rpc,
        b"in-tx",
        BasicProperties::default().with_reply_to(REPLY_TO.into()),
    )
    .await;
    step("tx_commit", cch.tx_commit()).await.unwrap();
    let req = wait_get(&sch, &rpc).await;
    let address = req
        .delivery
        .properties
        .reply_to()
        .as_ref()
        .map(|s| s.to_string())
        .expect("reply_to");
    assert!(address.starts_with("amq.rabbitmq.reply-to."), "{address}");
    publish(&sch, &address, b"answer", BasicProperties::default()).await;
    let d = within("reply", STEP, replies.next())
        .await
        .expect("consumer stream ended")
        .unwrap();
    assert_eq!(d.data, b"answer");

    // The requesting channel closes: its address is gone and a reply to it is dropped
    // (a confirming responder still gets an ack: nothing refused it).
    step("channel close", cch.close(200, "done".into()))
        .await
        .unwrap();
    let r = declare(&channel(&server).await, &address, true).await;
    let text = expect_amqp_error(r, 404);
    assert_eq!(
        text,
        format!("NOT_FOUND - no queue '{address}' in vhost '/'")
    );
    let pch = channel(&server).await;
    step(
        "confirm_select",
        pch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let confirm = step("publish", async {
        pch.basic_publish(
            "".into(),
            address.as_str().into(),
            BasicPublishOptions::default(),
            b"late",
            BasicProperties::default(),
        )
        .await?
        .await
    })
    .await
    .unwrap();
    assert!(confirm.is_ack(), "{confirm:?}");
    // The connection and its other channels are unaffected.
    let other = channel(&client).await;
    declare(&other, REPLY_TO, true).await.unwrap();
    let _ = sch
        .queue_delete(rpc.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = client.close(200, "bye".into()).await;
    let _ = server.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misuse_gets_rabbitmq_406s() {
    let b = Broker::start();
    let c = b.connect().await;

    // The two consume refusals over raw frames: the channel.close is read as it comes
    // (lapin may report the consume as done when the close races its consume-ok
    // bookkeeping: seen once in 24 runs).
    let mut raw = b.handshake();
    raw.open_channel(1);
    raw.send_method(1, &basic_consume(REPLY_TO, "", false));
    let close = raw.expect_method(1, 20, 40);
    let mut a = close.args();
    assert_eq!(a.short(), 406);
    assert_eq!(
        a.shortstr(),
        "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    );
    raw.close();
    let mut raw = b.handshake();
    raw.open_channel(1);
    raw.send_method(1, &basic_consume(REPLY_TO, "", true));
    raw.expect_method(1, 60, 21);
    raw.send_method(1, &basic_consume(REPLY_TO, "", true));
    let close = raw.expect_method(1, 20, 40);
    let mut a = close.args();
    assert_eq!(a.short(), 406);
    assert_eq!(
        a.shortstr(),
        "PRECONDITION_FAILED - reply consumer already set"
    );
    raw.close();

    let ch = channel(&c).await;
    step(
        "confirm_select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    let r = step("publish", async {
        ch.basic_publish(
            "".into(),
            unique("nobody").as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_reply_to(REPLY_TO.into()),
        )
        .await?
        .await
    })
    .await;
    let text = expect_amqp_error(r, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - fast reply consumer does not exist"
    );

    let _ = c.close(200, "bye".into()).await;
}

/// A reply published through the HTTP API reaches the requesting channel as an AMQP one
/// does; RabbitMQ 3.10 answers `{"routed":false}` all the same (no queue took it), and
/// the same for an address nobody consumes any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_published_through_the_api_reaches_the_channel() {
    let b = Broker::start();
    let api = Api::new(&b);
    let client = b.connect().await;
    let cch = channel(&client).await;
    let mut replies = consume_replies(&cch).await;
    let rpc = unique("rpc-api");
    declare(&cch, &rpc, false).await.unwrap();
    let props = BasicProperties::default().with_reply_to(REPLY_TO.into());
    publish(&cch, &rpc, b"req", props).await;
    let req = wait_get(&cch, &rpc).await;
    let address = req
        .delivery
        .properties
        .reply_to()
        .as_ref()
        .map(|s| s.to_string())
        .expect("reply_to");
    let post = |key: &str| {
        api.post(
            "/api/exchanges/%2F/amq.default/publish",
            &json!({
                "routing_key": key,
                "properties": {"correlation_id": "c-api"},
                "payload": "resp-api",
                "payload_encoding": "string"
            }),
        )
    };
    let r = post(&address);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"routed": false}));
    let d = within("reply", STEP, replies.next())
        .await
        .expect("consumer stream ended")
        .unwrap();
    assert_eq!(d.data, b"resp-api");
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some("c-api")
    );
    assert_eq!(
        (d.exchange.as_str(), d.routing_key.as_str()),
        ("", address.as_str())
    );
    // An address no one holds: the same answer, nothing delivered.
    let r = post("amq.rabbitmq.reply-to.nobody");
    assert_eq!((r.status, r.json()), (200, json!({"routed": false})));
    let _ = cch
        .queue_delete(rpc.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = client.close(200, "bye".into()).await;
    // The requester is gone: its address reaches no one.
    let r = post(&address);
    assert_eq!((r.status, r.json()), (200, json!({"routed": false})));
}
