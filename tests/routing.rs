//! Exchange types, bindings and routing.
mod support;

use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Confirmation;
use lapin::{BasicProperties, ExchangeKind};
use support::*;

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_routes_by_queue_name() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("dflt").await;
    f.publish("", &q, b"one").await;
    f.publish("", &unique("nobody"), b"lost").await;
    assert_eq!(f.drain(&q).await, vec!["one"]);
    f.cleanup().await;
}

/// A channel that keeps publishing to one name while the queue behind it is deleted and
/// declared again reaches the new queue, and in between nothing (Warren remembers the
/// queue a channel's routing key named; this shows the memory never outlives it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_follows_a_queue_deleted_and_declared_again() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("again").await;
    let other = f.queue("other").await;
    let mandatory = |key: &str, body: &'static [u8]| {
        let f = &f;
        let key = key.to_string();
        async move {
            f.publish_with("", &key, body, BasicProperties::default(), true)
                .await
        }
    };
    for body in [&b"1"[..], b"2"] {
        assert!(matches!(mandatory(&q, body).await, Confirmation::Ack(None)));
    }
    assert!(matches!(
        mandatory(&other, b"x").await,
        Confirmation::Ack(None)
    ));
    assert!(matches!(mandatory(&q, b"3").await, Confirmation::Ack(None)));
    assert_eq!(f.drain(&q).await, vec!["1", "2", "3"]);
    let deleted = step(
        "queue_delete",
        f.ch.queue_delete(q.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(deleted, 0);
    match mandatory(&q, b"lost").await {
        Confirmation::Ack(Some(ret)) => assert_eq!(ret.reply_code, 312),
        other => panic!("a publish to the deleted queue must come back: {other:?}"),
    }
    let exclusive = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    f.declare_queue(&q, exclusive).await;
    assert!(matches!(mandatory(&q, b"4").await, Confirmation::Ack(None)));
    assert_eq!(f.drain(&q).await, vec!["4"]);
    assert_eq!(f.drain(&other).await, vec!["x"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_cannot_be_bound_to() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let q = f.queue("dfltbind").await;
    let r = step(
        "bind to default",
        f.ch.queue_bind(
            q.as_str().into(),
            "".into(),
            "x".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let text = expect_amqp_error(r, 403);
    assert_eq!(
        text,
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_exchange_with_multiple_bindings() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("direct", ExchangeKind::Direct).await;
    let q1 = f.queue("d1").await;
    let q2 = f.queue("d2").await;
    f.bind(&q1, &x, "orange", FieldTable::default()).await;
    f.bind(&q2, &x, "black", FieldTable::default()).await;
    f.bind(&q2, &x, "green", FieldTable::default()).await;
    f.bind(&q1, &x, "shared", FieldTable::default()).await;
    f.bind(&q2, &x, "shared", FieldTable::default()).await;
    for k in ["orange", "black", "green", "shared", "pink", ""] {
        f.publish(&x, k, k.as_bytes()).await;
    }
    assert_eq!(f.drain(&q1).await, vec!["orange", "shared"]);
    assert_eq!(f.drain(&q2).await, vec!["black", "green", "shared"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_ignores_routing_key() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("fanout", ExchangeKind::Fanout).await;
    let qs = [
        f.queue("f1").await,
        f.queue("f2").await,
        f.queue("f3").await,
    ];
    for (i, q) in qs.iter().enumerate() {
        f.bind(q, &x, &format!("ignored{i}"), FieldTable::default())
            .await;
    }
    f.publish(&x, "whatever", b"a").await;
    f.publish(&x, "", b"b").await;
    for q in &qs {
        assert_eq!(f.drain(q).await, vec!["a", "b"]);
    }
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_exchange_tutorial_five() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("topic", ExchangeKind::Topic).await;
    let q1 = f.queue("t1").await;
    let q2 = f.queue("t2").await;
    let all = f.queue("tall").await;
    f.bind(&q1, &x, "*.orange.*", FieldTable::default()).await;
    f.bind(&q2, &x, "*.*.rabbit", FieldTable::default()).await;
    f.bind(&q2, &x, "lazy.#", FieldTable::default()).await;
    f.bind(&all, &x, "#", FieldTable::default()).await;
    let keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "orange",
        "quick.orange.male.rabbit",
        "lazy.orange.male.rabbit",
        "lazy",
        "",
    ];
    for k in keys {
        f.publish(&x, k, k.as_bytes()).await;
    }
    assert_eq!(
        f.drain(&q1).await,
        vec![
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox"
        ]
    );
    assert_eq!(
        f.drain(&q2).await,
        vec![
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.male.rabbit",
            "lazy",
        ]
    );
    assert_eq!(f.drain(&all).await, keys.to_vec());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_exchange_edge_cases() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("topic2", ExchangeKind::Topic).await;
    let cases: &[(&str, &[&str], &[&str])] = &[
        // (binding, matching keys, non-matching keys)
        (
            "a.#.b",
            &["a.b", "a.x.b", "a.x.y.b"],
            &["a", "b", "a.b.c", "x.a.b"],
        ),
        ("#.b", &["b", "a.b", "a.a.b"], &["b.a", "ab"]),
        ("a.*", &["a.b", "a."], &["a", "a.b.c", "b.a"]),
        // "*" needs exactly one word; RabbitMQ does not treat "" as one empty word.
        ("*", &["x"], &["x.y", ""]),
        ("#.#", &["", "a", "a.b.c"], &[]),
        ("a.*.#", &["a.b", "a.b.c"], &["a"]),
        ("", &[""], &["a"]),
    ];
    for (binding, yes, no) in cases {
        let q = f.queue("tq").await;
        f.bind(&q, &x, binding, FieldTable::default()).await;
        for k in yes.iter().chain(no.iter()) {
            f.publish(&x, k, k.as_bytes()).await;
        }
        assert_eq!(
            f.drain(&q).await,
            yes.to_vec(),
            "binding {binding:?}: matching keys"
        );
        step(
            "unbind",
            f.ch.queue_unbind(
                q.as_str().into(),
                x.as_str().into(),
                (*binding).into(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }
    f.cleanup().await;
}

async fn headers_case(
    f: &Fixture,
    x: &str,
    binding: FieldTable,
    msgs: &[(&str, FieldTable)],
) -> Vec<String> {
    let q = f.queue("hq").await;
    f.bind(&q, x, "", binding).await;
    for (body, headers) in msgs {
        f.publish_with(
            x,
            "ignored",
            body.as_bytes(),
            BasicProperties::default().with_headers(headers.clone()),
            false,
        )
        .await;
    }
    f.drain(&q).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_all_and_any() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("headers", ExchangeKind::Headers).await;
    let msgs = [
        (
            "both",
            table(&[("format", s("pdf")), ("type", s("report"))]),
        ),
        (
            "both+extra",
            table(&[("format", s("pdf")), ("type", s("report")), ("z", s("1"))]),
        ),
        ("format", table(&[("format", s("pdf"))])),
        ("type", table(&[("type", s("report"))])),
        ("wrong", table(&[("format", s("zip")), ("type", s("log"))])),
        ("none", FieldTable::default()),
        ("x-only", table(&[("x-format", s("pdf"))])),
    ];
    let all = headers_case(
        &f,
        &x,
        table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
        &msgs,
    )
    .await;
    assert_eq!(all, vec!["both", "both+extra"]);
    let any = headers_case(
        &f,
        &x,
        table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
        &msgs,
    )
    .await;
    assert_eq!(any, vec!["both", "both+extra", "format", "type"]);
    // x-match defaults to all.
    let dflt = headers_case(
        &f,
        &x,
        table(&[("format", s("pdf")), ("type", s("report"))]),
        &msgs,
    )
    .await;
    assert_eq!(dflt, vec!["both", "both+extra"]);
    // No headers in the binding: all matches everything, any matches nothing.
    let empty_all = headers_case(&f, &x, table(&[("x-match", s("all"))]), &msgs).await;
    assert_eq!(empty_all.len(), msgs.len());
    let empty_any = headers_case(&f, &x, table(&[("x-match", s("any"))]), &msgs).await;
    assert!(empty_any.is_empty(), "{empty_any:?}");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_x_prefixed_headers() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("hdrx", ExchangeKind::Headers).await;
    let msgs = [
        ("x-match", table(&[("x-k", s("v"))])),
        ("x+plain", table(&[("x-k", s("v")), ("k", s("v"))])),
        ("plain", table(&[("k", s("v"))])),
    ];
    // Plain all/any ignore x- headers in the binding.
    let any = headers_case(
        &f,
        &x,
        table(&[("x-match", s("any")), ("x-k", s("v"))]),
        &msgs,
    )
    .await;
    assert!(any.is_empty(), "{any:?}");
    // 3.10 introduced any-with-x / all-with-x, which do consider them.
    let any_x = headers_case(
        &f,
        &x,
        table(&[("x-match", s("any-with-x")), ("x-k", s("v"))]),
        &msgs,
    )
    .await;
    assert_eq!(any_x, vec!["x-match", "x+plain"]);
    let all_x = headers_case(
        &f,
        &x,
        table(&[("x-match", s("all-with-x")), ("x-k", s("v")), ("k", s("v"))]),
        &msgs,
    )
    .await;
    assert_eq!(all_x, vec!["x+plain"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_value_types() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("hdrt", ExchangeKind::Headers).await;
    let msgs = [
        ("I5", table(&[("n", AMQPValue::LongInt(5))])),
        ("l5", table(&[("n", AMQPValue::LongLongInt(5))])),
        ("b5", table(&[("n", AMQPValue::ShortShortInt(5))])),
        ("S5", table(&[("n", s("5"))])),
        ("d5", table(&[("n", AMQPValue::Double(5.0))])),
        ("I6", table(&[("n", AMQPValue::LongInt(6))])),
        ("t", table(&[("n", AMQPValue::Boolean(true))])),
        ("V", table(&[("n", AMQPValue::Void)])),
    ];
    let int = headers_case(&f, &x, table(&[("n", AMQPValue::LongInt(5))]), &msgs).await;
    println!("binding n=I(5) matches {int:?}");
    let string = headers_case(&f, &x, table(&[("n", s("5"))]), &msgs).await;
    println!("binding n=S(5) matches {string:?}");
    let boolean = headers_case(&f, &x, table(&[("n", AMQPValue::Boolean(true))]), &msgs).await;
    println!("binding n=t(true) matches {boolean:?}");
    let void = headers_case(&f, &x, table(&[("n", AMQPValue::Void)]), &msgs).await;
    println!("binding n=V matches {void:?}");
    assert_eq!(int, vec!["I5", "l5", "b5", "d5"]);
    assert_eq!(string, vec!["S5"]);
    assert_eq!(boolean, vec!["t"]);
    assert_eq!(
        void,
        msgs.iter().map(|m| m.0.to_string()).collect::<Vec<_>>()
    );
    f.cleanup().await;
}

async fn bind_x(f: &Fixture, dest: &str, src: &str, key: &str) {
    step(
        "exchange_bind",
        f.ch.exchange_bind(
            dest.into(),
            src.into(),
            key.into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let a = f.exchange("e2ea", ExchangeKind::Direct).await;
    let t = f.exchange("e2et", ExchangeKind::Topic).await;
    let q = f.queue("e2eq").await;
    let qa = f.queue("e2eqa").await;
    bind_x(&f, &t, &a, "k1").await;
    f.bind(&q, &t, "#", FieldTable::default()).await;
    f.bind(&qa, &a, "k2", FieldTable::default()).await;
    f.publish(&a, "k1", b"via-t").await;
    f.publish(&a, "k2", b"direct").await;
    f.publish(&a, "k3", b"nowhere").await;
    f.publish(&t, "anything", b"t-only").await;
    assert_eq!(f.drain(&q).await, vec!["via-t", "t-only"]);
    assert_eq!(f.drain(&qa).await, vec!["direct"]);
    // exchange.unbind stops the flow.
    step(
        "exchange_unbind",
        f.ch.exchange_unbind(
            t.as_str().into(),
            a.as_str().into(),
            "k1".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    f.publish(&a, "k1", b"after-unbind").await;
    assert!(f.drain(&q).await.is_empty());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_binding_cycle_delivers_once() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let a = f.exchange("cyca", ExchangeKind::Fanout).await;
    let x = f.exchange("cycb", ExchangeKind::Fanout).await;
    bind_x(&f, &x, &a, "").await;
    bind_x(&f, &a, &x, "").await;
    let qa = f.queue("cycqa").await;
    let qb = f.queue("cycqb").await;
    f.bind(&qa, &a, "", FieldTable::default()).await;
    f.bind(&qb, &x, "", FieldTable::default()).await;
    f.publish(&a, "", b"from-a").await;
    f.publish(&x, "", b"from-b").await;
    assert_eq!(f.drain(&qa).await, vec!["from-a", "from-b"]);
    assert_eq!(f.drain(&qb).await, vec!["from-a", "from-b"]);
    // A self-binding is also harmless.
    bind_x(&f, &a, &a, "").await;
    f.publish(&a, "", b"self").await;
    assert_eq!(f.drain(&qa).await, vec!["self"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_reached_by_two_paths_gets_one_copy() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let top = f.exchange("2pt", ExchangeKind::Topic).await;
    let fan = f.exchange("2pf", ExchangeKind::Fanout).await;
    let q = f.queue("2pq").await;
    f.bind(&q, &top, "a.*", FieldTable::default()).await;
    f.bind(&q, &top, "*.b", FieldTable::default()).await;
    f.bind(&q, &top, "#", FieldTable::default()).await;
    bind_x(&f, &fan, &top, "a.b").await;
    f.bind(&q, &fan, "", FieldTable::default()).await;
    f.publish(&top, "a.b", b"once").await;
    assert_eq!(f.drain(&q).await, vec!["once"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbind_stops_routing_and_is_idempotent() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("unb", ExchangeKind::Direct).await;
    let q = f.queue("unbq").await;
    f.bind(&q, &x, "k", FieldTable::default()).await;
    // Binding twice is a no-op.
    f.bind(&q, &x, "k", FieldTable::default()).await;
    f.publish(&x, "k", b"1").await;
    for _ in 0..2 {
        step(
            "queue_unbind",
            f.ch.queue_unbind(
                q.as_str().into(),
                x.as_str().into(),
                "k".into(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }
    f.publish(&x, "k", b"2").await;
    assert_eq!(f.drain(&q).await, vec!["1"]);
    f.cleanup().await;
}

/// One channel publishing with one key while the bindings behind it change: every
/// publish follows the bindings of that moment (Warren remembers a channel's last
/// route; a new binding, an exchange-to-exchange binding, an alternate exchange or a
/// change downstream must each show at the next publish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_follows_binding_changes() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("rep", ExchangeKind::Direct).await;
    let y = f.exchange("repy", ExchangeKind::Fanout).await;
    let (q1, q2, q3) = (
        f.queue("rep1").await,
        f.queue("rep2").await,
        f.queue("rep3").await,
    );
    f.bind(&q1, &x, "k", FieldTable::default()).await;
    f.publish(&x, "k", b"a").await;
    f.publish(&x, "k", b"b").await;
    f.bind(&q2, &x, "k", FieldTable::default()).await;
    f.publish(&x, "k", b"c").await;
    bind_x(&f, &y, &x, "k").await;
    f.publish(&x, "k", b"d").await;
    f.bind(&q3, &y, "", FieldTable::default()).await;
    f.publish(&x, "k", b"e").await;
    assert_eq!(f.drain(&q1).await, vec!["a", "b", "c", "d", "e"]);
    assert_eq!(f.drain(&q2).await, vec!["c", "d", "e"]);
    assert_eq!(f.drain(&q3).await, vec!["e"]);
    // Only y's binding changes now: x's route to q1 alone must not be taken for it.
    for q in [&q2] {
        step(
            "queue_unbind",
            f.ch.queue_unbind(
                q.as_str().into(),
                x.as_str().into(),
                "k".into(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }
    step(
        "exchange_unbind",
        f.ch.exchange_unbind(
            y.as_str().into(),
            x.as_str().into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    f.publish(&x, "k", b"f").await;
    f.publish(&x, "k", b"g").await;
    bind_x(&f, &y, &x, "k").await;
    f.publish(&x, "k", b"h").await;
    assert_eq!(f.drain(&q1).await, vec!["f", "g", "h"]);
    assert_eq!(f.drain(&q2).await, Vec::<String>::new());
    assert_eq!(f.drain(&q3).await, vec!["h"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predeclared_exchanges_exist() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        step(
            "passive declare",
            f.ch.exchange_declare(
                name.into(),
                kind,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    // amq.direct routes like any direct exchange.
    let q = f.queue("amqd").await;
    f.bind(&q, "amq.direct", &q, FieldTable::default()).await;
    f.publish("amq.direct", &q, b"hi").await;
    assert_eq!(f.drain(&q).await, vec!["hi"]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_declare_errors() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    // Reserved prefix.
    let name = unique("amq.reserved");
    let name = name.trim_start_matches("wt-").to_string();
    let ch = f.channel().await;
    let r = step(
        "declare amq.*",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let text = expect_amqp_error(r, 403);
    assert_eq!(
        text,
        format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")
    );
    // Passive declare of a missing exchange.
    let ch = f.channel().await;
    let missing = unique("missingx");
    let r = step(
        "passive missing",
        ch.exchange_declare(
            missing.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    let text = expect_amqp_error(r, 404);
    assert_eq!(
        text,
        format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
    );
    // Redeclare with a different type.
    let ch = f.channel().await;
    let x = f.exchange("redecl", ExchangeKind::Direct).await;
    let r = step(
        "redeclare as fanout",
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let text = expect_amqp_error(r, 406);
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': \
             received 'fanout' but current is 'direct'"
        )
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_missing_exchange_closes_channel() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let missing = unique("nox");
    let r = step("publish to missing exchange", async {
        f.ch.basic_publish(
            missing.as_str().into(),
            "k".into(),
            Default::default(),
            b"x",
            BasicProperties::default(),
        )
        .await?
        .await
    })
    .await;
    let text = expect_amqp_error(r, 404);
    assert_eq!(
        text,
        format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("mand", ExchangeKind::Direct).await;
    let c = f
        .publish_with(
            &x,
            "nobody-home",
            b"bounce",
            BasicProperties::default(),
            true,
        )
        .await;
    match c {
        Confirmation::Ack(Some(ret)) => {
            assert_eq!(ret.reply_code, 312);
            assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(ret.delivery.exchange.as_str(), x);
            assert_eq!(ret.delivery.routing_key.as_str(), "nobody-home");
            assert_eq!(ret.delivery.data, b"bounce");
        }
        other => panic!("expected ack with returned message, got {other:?}"),
    }
    // Non-mandatory unroutable: silently dropped, still acked.
    let c = f.publish(&x, "nobody-home", b"dropped").await;
    assert!(matches!(c, Confirmation::Ack(None)), "{c:?}");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_delete_if_unused() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("ifunused", ExchangeKind::Fanout).await;
    let q = f.queue("ifunusedq").await;
    f.bind(&q, &x, "", FieldTable::default()).await;
    let ch = f.channel().await;
    let r = step(
        "delete if_unused",
        ch.exchange_delete(
            x.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        ),
    )
    .await;
    let text = expect_amqp_error(r, 406);
    assert_eq!(
        text,
        format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use")
    );
    // Unused after unbinding: delete succeeds, and deleting again is fine too.
    step(
        "unbind",
        f.ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        step(
            "delete if_unused",
            f.ch.exchange_delete(
                x.as_str().into(),
                ExchangeDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    }
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_exchange_removes_its_bindings() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("delx", ExchangeKind::Fanout).await;
    let q = f.queue("delxq").await;
    f.bind(&q, &x, "", FieldTable::default()).await;
    step(
        "delete",
        f.ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()),
    )
    .await
    .unwrap();
    // Recreate: the old binding must be gone.
    step(
        "redeclare",
        f.ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    f.publish(&x, "", b"x").await;
    assert!(sorted(f.drain(&q).await).is_empty());
    f.cleanup().await;
}

/// queue.unbind of one or both ends that no longer exist: RabbitMQ 3.10 answers
/// unbind-ok, Warren closed the channel with 404. aio-pika's RPC close does exactly
/// this (its auto-delete reply queue is gone by the time it unbinds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_unbind_of_a_missing_queue_or_exchange_is_unbind_ok() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("unbx", ExchangeKind::Direct).await;
    let q = f.queue("unbq").await;
    let (nox, noq) = (unique("no-x"), unique("no-q"));
    for (what, queue, exchange) in [
        ("missing queue", noq.as_str(), x.as_str()),
        ("missing exchange", q.as_str(), nox.as_str()),
        ("missing both", noq.as_str(), nox.as_str()),
    ] {
        step(
            what,
            f.ch.queue_unbind(
                queue.into(),
                exchange.into(),
                "k".into(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    }
    // The aio-pika sequence: the consumer of an auto-delete queue is cancelled, which
    // deletes the queue; then the queue is unbound.
    let reply = unique("rpc-reply");
    let auto_delete = lapin::options::QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    f.declare_queue(&reply, auto_delete).await;
    f.bind(&reply, &x, "rpc", FieldTable::default()).await;
    let consumer = step(
        "basic_consume",
        f.ch.basic_consume(
            reply.as_str().into(),
            "rpc-consumer".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    step(
        "basic_cancel",
        f.ch.basic_cancel(consumer.tag(), Default::default()),
    )
    .await
    .unwrap();
    f.wait_counts(&reply, None).await;
    step(
        "queue_unbind after auto-delete",
        f.ch.queue_unbind(
            reply.as_str().into(),
            x.as_str().into(),
            "rpc".into(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    // The channel is still open and routes.
    f.bind(&q, &x, "k", FieldTable::default()).await;
    f.publish(&x, "k", b"still open").await;
    assert_eq!(f.drain(&q).await, vec!["still open"]);
    f.cleanup().await;
}

/// exchange.unbind with a source or destination that no longer exists: unbind-ok on
/// RabbitMQ 3.10, a 404 channel close on Warren before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_unbind_of_a_missing_source_or_destination_is_unbind_ok() {
    let b = Broker::start();
    let f = Fixture::open(&b.uri()).await;
    let x = f.exchange("unbsrc", ExchangeKind::Fanout).await;
    let (nox, noy) = (unique("no-src"), unique("no-dst"));
    for (what, dest, source) in [
        ("missing source", x.as_str(), nox.as_str()),
        ("missing destination", noy.as_str(), x.as_str()),
        ("missing both", noy.as_str(), nox.as_str()),
    ] {
        step(
            what,
            f.ch.exchange_unbind(
                dest.into(),
                source.into(),
                "k".into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    }
    let q = f.queue("unbsrcq").await;
    f.bind(&q, &x, "", FieldTable::default()).await;
    f.publish(&x, "", b"still open").await;
    assert_eq!(f.drain(&q).await, vec!["still open"]);
    f.cleanup().await;
}
