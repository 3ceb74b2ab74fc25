//! Message bodies and properties must round-trip byte for byte.
mod support;

use lapin::options::*;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use support::*;

async fn get_one(ch: &Channel, q: &str) -> lapin::message::BasicGetMessage {
    step(
        "basic_get",
        ch.basic_get(q.into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    .expect("queue unexpectedly empty")
}

async fn roundtrip_body(f: &Fixture, data: &[u8]) {
    let q = f.queue("body").await;
    f.publish("", &q, data).await;
    let m = get_one(&f.ch, &q).await;
    assert_eq!(m.delivery.data.len(), data.len());
    assert!(m.delivery.data == data, "body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_body() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    roundtrip_body(&f, b"").await;
    // Also through a consumer.
    let q = f.queue("emptyc").await;
    let ch = f.channel().await;
    let mut c = consume(&ch, &q, "", true).await;
    f.publish("", &q, b"").await;
    f.publish("", &q, b"after").await;
    assert_eq!(next_delivery(&mut c).await.data, b"");
    assert_eq!(next_delivery(&mut c).await.data, b"after");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_value() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let data: Vec<u8> = (0..=255u8).cycle().take(256 * 4 + 17).collect();
    roundtrip_body(&f, &data).await;
    // Frame-end octets and zeroes at frame boundaries.
    roundtrip_body(&f, &[0xCE; 1000]).await;
    roundtrip_body(&f, &[0u8; 131072 - 8 + 1]).await;
    f.cleanup().await;
}

fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_body() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    roundtrip_body(&f, &pseudo_random(1 << 20, 7)).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_body() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let data = pseudo_random(16 << 20, 99);
    let q = f.queue("big").await;
    f.publish("", &q, &data).await;
    let ch = f.channel().await;
    let mut c = consume(&ch, &q, "", false).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data.len(), data.len());
    assert!(d.data == data, "16 MiB body differs");
    d.ack(BasicAckOptions::default()).await.unwrap();
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_client_frame_max_large_body() {
    let b = Broker::start();
    let uri = format!("{}?frame_max=4096", b.uri());
    let f = Fixture::open(&uri).await;
    assert_eq!(f.conn.configuration().frame_max(), 4096);
    let data = pseudo_random(300_000, 3);
    roundtrip_body(&f, &data).await;
    f.cleanup().await;
}

fn every_field_type() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("deep".into(), AMQPValue::LongString("er".into()));
    inner.insert(
        "arr".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongInt(-1)])),
    );
    let values = vec![
        ("bool_t", AMQPValue::Boolean(true)),
        ("bool_f", AMQPValue::Boolean(false)),
        ("i8", AMQPValue::ShortShortInt(-128)),
        ("u8", AMQPValue::ShortShortUInt(255)),
        ("i16", AMQPValue::ShortInt(-32768)),
        ("u16", AMQPValue::ShortUInt(65535)),
        ("i32", AMQPValue::LongInt(i32::MIN)),
        ("u32", AMQPValue::LongUInt(u32::MAX)),
        ("i64", AMQPValue::LongLongInt(i64::MIN)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25e300)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 3,
                value: 123456,
            }),
        ),
        (
            "longstr",
            AMQPValue::LongString(LongString::from(vec![0u8, 1, 0xCE, 0xFF, b'x'])),
        ),
        ("utf8", AMQPValue::LongString("héllo ✓".into())),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        ("table", AMQPValue::FieldTable(inner.clone())),
        ("empty_table", AMQPValue::FieldTable(FieldTable::default())),
        (
            "array",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Boolean(true),
                AMQPValue::ShortShortInt(-1),
                AMQPValue::ShortInt(7),
                AMQPValue::LongInt(8),
                AMQPValue::LongLongInt(9),
                AMQPValue::Double(0.5),
                AMQPValue::LongString("s".into()),
                AMQPValue::Timestamp(1),
                AMQPValue::FieldTable(inner),
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldArray(
                    FieldArray::default(),
                )])),
                AMQPValue::Void,
                AMQPValue::ByteArray(ByteArray::from(vec![1u8, 2, 3])),
            ])),
        ),
        ("empty_array", AMQPValue::FieldArray(FieldArray::default())),
        ("void", AMQPValue::Void),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 0xCE, 255])),
        ),
    ];
    let mut t = FieldTable::default();
    for (k, v) in values {
        t.insert(k.into(), v);
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_properties_and_field_types_round_trip() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("props").await;
    let props = BasicProperties::default()
        .with_content_type("application/x-test".into())
        .with_content_encoding("gzip".into())
        .with_headers(every_field_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-1".into())
        .with_reply_to("reply-queue".into())
        .with_expiration("600000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_234_567_890)
        .with_type("the-type".into())
        .with_user_id("guest".into())
        .with_app_id("warren-tests".into())
        .with_cluster_id("cluster-x".into());
    f.publish_with("", &q, b"p", props.clone(), false).await;
    let m = get_one(&f.ch, &q).await;
    assert_eq!(m.delivery.properties, props);
    // Same through a consumer.
    f.publish_with("", &q, b"p", props.clone(), false).await;
    let ch = f.channel().await;
    let mut c = consume(&ch, &q, "", true).await;
    assert_eq!(next_delivery(&mut c).await.properties, props);
    // No properties at all stays no properties.
    f.publish("", &q, b"bare").await;
    assert_eq!(
        next_delivery(&mut c).await.properties,
        BasicProperties::default()
    );
    f.cleanup().await;
}

#[test]
fn wrong_user_id_is_precondition_failed() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    c.send_method(1, &basic_publish("", "nowhere", false));
    // Content header with only the user-id property (flag bit 4).
    let header = Args::new()
        .short(60)
        .short(0)
        .longlong(1)
        .short(1 << 4)
        .shortstr("mallory")
        .build();
    c.send_frame(FRAME_HEADER, 1, &header);
    c.send_frame(FRAME_BODY, 1, b"x");
    let (code, text, class, meth) = c.expect_channel_close(1);
    assert_eq!(code, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"
    );
    assert_eq!((class, meth), (60, 40));
    c.close();
    block_on(roundtrip(&b.uri()));
}
