//! Helpers shared by tests/dead_letter.rs, tests/ttl.rs and tests/max_length.rs: a
//! client with a plain channel and a confirm channel that declares uniquely named
//! queues and exchanges with arguments and deletes them at the end (RabbitMQ is shared),
//! and readers for the `x-death` header.
#![allow(dead_code)]

use std::sync::Mutex;
use std::time::Duration;

use lapin::message::BasicGetMessage;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};

use crate::support::*;

pub fn lstr(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

pub fn int(v: i64) -> AMQPValue {
    AMQPValue::LongLongInt(v)
}

pub struct Client {
    pub conn: Connection,
    /// Plain channel (gets, acks, rejects).
    pub ch: Channel,
    /// Confirm-mode channel (publishes).
    pub pub_ch: Channel,
    queues: Mutex<Vec<String>>,
    exchanges: Mutex<Vec<String>>,
}

impl Client {
    pub async fn open(b: &Broker) -> Client {
        Client::open_uri(&b.uri()).await
    }

    pub async fn open_uri(uri: &str) -> Client {
        let conn = connect(uri).await;
        let ch = step("create_channel", conn.create_channel()).await.unwrap();
        let pub_ch = confirm_channel(&conn).await;
        Client {
            conn,
            ch,
            pub_ch,
            queues: Mutex::new(Vec::new()),
            exchanges: Mutex::new(Vec::new()),
        }
    }

    /// Declares a queue with a unique name from `prefix` and these arguments.
    pub async fn queue(&self, prefix: &str, args: &[(&str, AMQPValue)]) -> String {
        self.queue_opts(prefix, args, false).await
    }

    pub async fn queue_opts(
        &self,
        prefix: &str,
        args: &[(&str, AMQPValue)],
        durable: bool,
    ) -> String {
        let name = unique(prefix);
        self.declare_named(&name, args, durable).await.unwrap();
        self.queues.lock().unwrap().push(name.clone());
        name
    }

    /// queue.declare of `name` (not passive) on a fresh channel; the result.
    pub async fn declare_named(
        &self,
        name: &str,
        args: &[(&str, AMQPValue)],
        durable: bool,
    ) -> lapin::Result<lapin::Queue> {
        let ch = step("create_channel", self.conn.create_channel())
            .await
            .unwrap();
        let r = step(
            "queue_declare",
            ch.queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable,
                    ..Default::default()
                },
                table(args),
            ),
        )
        .await;
        if r.is_ok() {
            let _ = ch.close(200, "ok".into()).await;
        }
        r
    }

    /// Notes a queue created elsewhere for deletion at the end.
    pub fn forget_later(&self, name: &str) {
        self.queues.lock().unwrap().push(name.to_string());
    }

    pub async fn exchange(&self, prefix: &str, kind: ExchangeKind) -> String {
        let name = unique(prefix);
        step(
            "exchange_declare",
            self.ch.exchange_declare(
                name.as_str().into(),
                kind,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        self.exchanges.lock().unwrap().push(name.clone());
        name
    }

    pub async fn bind(&self, q: &str, x: &str, key: &str) {
        step(
            "queue_bind",
            self.ch.queue_bind(
                q.into(),
                x.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }

    /// Publishes on the confirm channel and waits for the confirm.
    pub async fn publish(
        &self,
        x: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Confirmation {
        step("publish", async {
            self.pub_ch
                .basic_publish(
                    x.into(),
                    key.into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await?
                .await
        })
        .await
        .unwrap()
    }

    /// basic.get with manual ack.
    pub async fn get(&self, q: &str) -> Option<BasicGetMessage> {
        step(
            "basic_get",
            self.ch
                .basic_get(q.into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .unwrap()
    }

    /// basic.get until a message comes (manual ack), within `d`.
    pub async fn wait_get(&self, q: &str, d: Duration) -> BasicGetMessage {
        let end = std::time::Instant::now() + d;
        loop {
            if let Some(m) = self.get(q).await {
                return m;
            }
            assert!(
                std::time::Instant::now() < end,
                "no message in {q} within {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn ack(&self, tag: u64) {
        step("ack", self.ch.basic_ack(tag, BasicAckOptions::default()))
            .await
            .unwrap();
    }

    pub async fn reject(&self, tag: u64) {
        step(
            "reject",
            self.ch
                .basic_reject(tag, BasicRejectOptions { requeue: false }),
        )
        .await
        .unwrap();
    }

    pub async fn nack(&self, tag: u64, multiple: bool, requeue: bool) {
        step(
            "nack",
            self.ch
                .basic_nack(tag, BasicNackOptions { multiple, requeue }),
        )
        .await
        .unwrap();
    }

    /// Ready-message count of `q` (None when it does not exist).
    pub async fn count(&self, q: &str) -> Option<u32> {
        queue_counts(&self.conn, q).await.map(|c| c.0)
    }

    /// Waits until `q` holds `n` ready messages.
    pub async fn wait_count(&self, q: &str, n: u32, d: Duration) {
        let end = std::time::Instant::now() + d;
        loop {
            let got = self.count(q).await;
            if got == Some(n) {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "{q}: expected {n} ready messages within {d:?}, last saw {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deletes what this client declared and closes the connection.
    pub async fn cleanup(self) {
        if let Ok(ch) = self.conn.create_channel().await {
            let queues = std::mem::take(&mut *self.queues.lock().unwrap());
            for q in queues {
                let _ = step(
                    "queue_delete",
                    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
                )
                .await;
            }
            let exchanges = std::mem::take(&mut *self.exchanges.lock().unwrap());
            for x in exchanges {
                let _ = step(
                    "exchange_delete",
                    ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()),
                )
                .await;
            }
        }
        let _ = step("connection close", self.conn.close(200, "bye".into())).await;
    }
}

/// The headers of a message.
pub fn headers(m: &BasicGetMessage) -> FieldTable {
    m.delivery.properties.headers().clone().unwrap_or_default()
}

pub fn get<'a>(t: &'a FieldTable, k: &str) -> Option<&'a AMQPValue> {
    t.inner().get(&ShortString::from(k))
}

pub fn text(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("expected a long string, got {other:?}"),
    }
}

/// The `x-death` entries, newest first.
pub fn deaths(m: &BasicGetMessage) -> Vec<FieldTable> {
    match get(&headers(m), "x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry is not a table: {other:?}"),
            })
            .collect(),
        other => panic!("no x-death array: {other:?}"),
    }
}

/// (queue, reason, count) of an x-death entry.
pub fn death_summary(d: &FieldTable) -> (String, String, i64) {
    let count = match get(d, "count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("count is {other:?}"),
    };
    (text(get(d, "queue")), text(get(d, "reason")), count)
}

pub fn msg_body(m: &BasicGetMessage) -> String {
    String::from_utf8_lossy(&m.delivery.data).into_owned()
}

pub const LONG: Duration = Duration::from_secs(10);

/// A channel (basic.qos `prefetch` when non-zero) with a manual-ack consumer on `q`
/// with these consume arguments.
pub async fn consumer_on(
    conn: &Connection,
    q: &str,
    tag: &str,
    prefetch: u16,
    args: &[(&str, AMQPValue)],
) -> (Channel, lapin::Consumer) {
    let ch = step("create_channel", conn.create_channel()).await.unwrap();
    if prefetch > 0 {
        step(
            "basic_qos",
            ch.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await
        .unwrap();
    }
    let consumer = step(
        "basic_consume",
        ch.basic_consume(
            q.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            table(args),
        ),
    )
    .await
    .unwrap();
    (ch, consumer)
}

/// The next `n` deliveries of `consumer` within `d`: (body, delivery tag, redelivered).
pub async fn take(
    consumer: &mut lapin::Consumer,
    n: usize,
    d: Duration,
) -> Vec<(String, u64, bool)> {
    use futures_lite::StreamExt;
    within(&format!("{n} deliveries"), d, async {
        let mut got = Vec::new();
        while got.len() < n {
            let delivery = consumer
                .next()
                .await
                .expect("consumer stream ended")
                .expect("delivery");
            got.push((
                String::from_utf8_lossy(&delivery.data).into_owned(),
                delivery.delivery_tag,
                delivery.redelivered,
            ));
        }
        got
    })
    .await
}
