//! Alternate exchanges (issue 12): the `alternate-exchange` exchange argument receives
//! what the exchange cannot route, before `mandatory` returns it; chains of alternates
//! are followed, a missing one is ignored (and found once declared), a cycle stops, an
//! exchange that routes somewhere (even only to another exchange) does not use its
//! alternate; declaring one needs write permission on the alternate; a value that is
//! not a string is RabbitMQ's 406.
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! alternate_exchange`.
mod queue_features;
mod support;

use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use queue_features::*;
use serde_json::json;
use support::api::Api;
use support::*;

/// Exchanges a test declared, deleted at the end (RabbitMQ is shared).
struct Exchanges {
    names: Vec<String>,
}

/// exchange.declare of `name` (not passive, not durable) with these arguments.
async fn declare_x(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    args: FieldTable,
) -> lapin::Result<()> {
    step(
        "exchange_declare",
        ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), args),
    )
    .await
}

impl Exchanges {
    fn new() -> Exchanges {
        Exchanges { names: Vec::new() }
    }

    /// Declares a uniquely named exchange, with `ae` as its alternate when given.
    async fn declare(
        &mut self,
        ch: &Channel,
        prefix: &str,
        kind: ExchangeKind,
        ae: Option<&str>,
    ) -> String {
        let name = unique(prefix);
        declare_x(ch, &name, kind, ae_args(ae)).await.unwrap();
        self.names.push(name.clone());
        name
    }

    async fn delete_all(&mut self, c: &Client) {
        let ch = step("create_channel", c.conn.create_channel())
            .await
            .unwrap();
        for x in self.names.drain(..) {
            let _ = step(
                "exchange_delete",
                ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()),
            )
            .await;
        }
    }
}

fn ae_args(ae: Option<&str>) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(ae) = ae {
        t.insert("alternate-exchange".into(), lstr(ae));
    }
    t
}

/// Publishes with mandatory on the client's confirm channel; the confirm.
async fn publish_mandatory(c: &Client, x: &str, key: &str, body: &[u8]) -> Confirmation {
    step("publish", async {
        c.pub_ch
            .basic_publish(
                x.into(),
                key.into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                BasicProperties::default(),
            )
            .await?
            .await
    })
    .await
    .unwrap()
}

/// The confirm of a mandatory publish that must have been routed (no basic.return).
fn assert_routed(c: &Confirmation) {
    assert!(matches!(c, Confirmation::Ack(None)), "routed: {c:?}");
}

/// The confirm of a mandatory publish that must have come back NO_ROUTE, as published.
fn assert_returned(c: Confirmation, x: &str, key: &str, body: &[u8]) {
    match c {
        Confirmation::Ack(Some(ret)) => {
            assert_eq!(ret.reply_code, 312);
            assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(
                ret.delivery.exchange.as_str(),
                x,
                "the exchange published to"
            );
            assert_eq!(ret.delivery.routing_key.as_str(), key);
            assert_eq!(ret.delivery.data, body);
        }
        other => panic!("expected a basic.return, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_goes_to_the_alternate_and_routable_does_not() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let mut xs = Exchanges::new();
    let ae = xs.declare(&c.ch, "ae", ExchangeKind::Fanout, None).await;
    let x = xs
        .declare(&c.ch, "x", ExchangeKind::Direct, Some(&ae))
        .await;
    let unrouted = c.queue("unrouted", &[]).await;
    let orders = c.queue("orders", &[]).await;
    c.bind(&unrouted, &ae, "").await;
    c.bind(&orders, &x, "order").await;

    assert_routed(&publish_mandatory(&c, &x, "order", b"o1").await);
    assert_routed(&publish_mandatory(&c, &x, "typo", b"lost?").await);
    let m = c.wait_get(&unrouted, LONG).await;
    assert_eq!(msg_body(&m), "lost?");
    assert_eq!(
        m.delivery.exchange.as_str(),
        x,
        "delivered with the exchange it was published to"
    );
    assert_eq!(m.delivery.routing_key.as_str(), "typo");
    c.ack(m.delivery.delivery_tag).await;
    let m = c.wait_get(&orders, LONG).await;
    assert_eq!(msg_body(&m), "o1");
    c.ack(m.delivery.delivery_tag).await;
    assert_eq!(c.count(&unrouted).await, Some(0), "routable: not in the AE");
    assert_eq!(c.count(&orders).await, Some(0));

    // The alternate itself routes nowhere: mandatory returns it, as published.
    step(
        "queue_unbind",
        c.ch.queue_unbind(
            unrouted.as_str().into(),
            ae.as_str().into(),
            "".into(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert_returned(
        publish_mandatory(&c, &x, "typo", b"b1").await,
        &x,
        "typo",
        b"b1",
    );
    xs.delete_all(&c).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_are_followed_and_a_missing_alternate_is_ignored_until_declared() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let mut xs = Exchanges::new();
    // x1 → (AE) x2: direct, no binding for the key → (AE) x3 → q. x3 is declared
    // last: until then x2's alternate is missing and the message comes back.
    let x3 = unique("x3");
    let x2 = xs
        .declare(&c.ch, "x2", ExchangeKind::Direct, Some(&x3))
        .await;
    let x1 = xs
        .declare(&c.ch, "x1", ExchangeKind::Topic, Some(&x2))
        .await;
    assert_returned(
        publish_mandatory(&c, &x1, "a.b", b"m0").await,
        &x1,
        "a.b",
        b"m0",
    );

    declare_x(&c.ch, &x3, ExchangeKind::Fanout, FieldTable::default())
        .await
        .unwrap();
    xs.names.push(x3.clone());
    let q = c.queue("end", &[]).await;
    c.bind(&q, &x3, "").await;
    assert_routed(&publish_mandatory(&c, &x1, "a.b", b"m1").await);
    let m = c.wait_get(&q, LONG).await;
    assert_eq!(msg_body(&m), "m1");
    assert_eq!(m.delivery.exchange.as_str(), x1);
    c.ack(m.delivery.delivery_tag).await;

    // A queue bound on x2 for the key takes it there; x2's alternate is not used.
    let mid = c.queue("mid", &[]).await;
    c.bind(&mid, &x2, "a.b").await;
    assert_routed(&publish_mandatory(&c, &x1, "a.b", b"m2").await);
    let m = c.wait_get(&mid, LONG).await;
    assert_eq!(msg_body(&m), "m2");
    c.ack(m.delivery.delivery_tag).await;
    assert_eq!(c.count(&q).await, Some(0));
    xs.delete_all(&c).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_of_alternates_stops() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let mut xs = Exchanges::new();
    let a_name = unique("cyc-a");
    let bx = xs
        .declare(&c.ch, "cyc-b", ExchangeKind::Direct, Some(&a_name))
        .await;
    declare_x(&c.ch, &a_name, ExchangeKind::Direct, ae_args(Some(&bx)))
        .await
        .unwrap();
    xs.names.push(a_name.clone());
    assert_returned(
        publish_mandatory(&c, &a_name, "k", b"round").await,
        &a_name,
        "k",
        b"round",
    );
    // With a queue on the way, it arrives once.
    let q = c.queue("cyc", &[]).await;
    c.bind(&q, &bx, "k").await;
    assert_routed(&publish_mandatory(&c, &a_name, "k", b"once").await);
    let m = c.wait_get(&q, LONG).await;
    assert_eq!(msg_body(&m), "once");
    c.ack(m.delivery.delivery_tag).await;
    assert_eq!(c.count(&q).await, Some(0), "delivered once");
    xs.delete_all(&c).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_bound_to_an_exchange_routes_there_not_to_its_alternate() {
    // RabbitMQ applies an exchange's alternate when its own bindings matched nothing;
    // a match that is an exchange counts, even if that exchange routes nowhere (then
    // that exchange's alternate, if any, is used).
    let b = Broker::start();
    let c = Client::open(&b).await;
    let mut xs = Exchanges::new();
    let ae_src = xs
        .declare(&c.ch, "ae-src", ExchangeKind::Fanout, None)
        .await;
    let ae_dst = xs
        .declare(&c.ch, "ae-dst", ExchangeKind::Fanout, None)
        .await;
    let src = xs
        .declare(&c.ch, "src", ExchangeKind::Direct, Some(&ae_src))
        .await;
    let dst = xs
        .declare(&c.ch, "dst", ExchangeKind::Direct, Some(&ae_dst))
        .await;
    step(
        "exchange_bind",
        c.ch.exchange_bind(
            dst.as_str().into(),
            src.as_str().into(),
            "k".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let q_src = c.queue("q-ae-src", &[]).await;
    let q_dst = c.queue("q-ae-dst", &[]).await;
    c.bind(&q_src, &ae_src, "").await;
    c.bind(&q_dst, &ae_dst, "").await;

    assert_routed(&publish_mandatory(&c, &src, "k", b"via-dst").await);
    let m = c.wait_get(&q_dst, LONG).await;
    assert_eq!(msg_body(&m), "via-dst");
    c.ack(m.delivery.delivery_tag).await;
    assert_routed(&publish_mandatory(&c, &src, "other", b"via-src").await);
    let m = c.wait_get(&q_src, LONG).await;
    assert_eq!(msg_body(&m), "via-src");
    c.ack(m.delivery.delivery_tag).await;
    assert_eq!(c.count(&q_src).await, Some(0));
    assert_eq!(c.count(&q_dst).await, Some(0));
    xs.delete_all(&c).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_that_is_not_a_string_is_406_and_redeclare_compares_it() {
    let b = Broker::start();
    let c = Client::open(&b).await;
    let name = unique("bad-ae");
    let ch = step("create_channel", c.conn.create_channel())
        .await
        .unwrap();
    let mut t = FieldTable::default();
    t.insert("alternate-exchange".into(), AMQPValue::LongInt(5));
    let r = declare_x(&ch, &name, ExchangeKind::Direct, t).await;
    let text = expect_amqp_error(r, 406);
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange '{name}' in vhost '/'"
        )
    );

    let mut xs = Exchanges::new();
    let x = xs
        .declare(&c.ch, "eq", ExchangeKind::Direct, Some("one"))
        .await;
    let ch = step("create_channel", c.conn.create_channel())
        .await
        .unwrap();
    let r = declare_x(&ch, &x, ExchangeKind::Direct, ae_args(Some("two"))).await;
    let text = expect_amqp_error(r, 406);
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': received 'two' but current is 'one'"
        )
    );
    xs.delete_all(&c).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_an_alternate_needs_write_on_it_and_read_on_the_exchange() {
    let b = Broker::start();
    let api = Api::new(&b);
    let user = unique("ae-user");
    let r = api.put(
        &format!("/api/users/{user}"),
        &json!({"password": "pw", "tags": ""}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let forbidden = unique("ae-forbidden");
    let r = api.put(
        &format!("/api/permissions/%2F/{user}"),
        &json!({"configure": ".*", "write": "^wt-ae-ok-", "read": ".*"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let c = Client::open_uri(&format!("amqp://{user}:pw@127.0.0.1:{}/%2f", b.port)).await;
    let x = unique("ae-perm");
    let ch = step("create_channel", c.conn.create_channel())
        .await
        .unwrap();
    let r = declare_x(&ch, &x, ExchangeKind::Direct, ae_args(Some(&forbidden))).await;
    let text = expect_amqp_error(r, 403);
    assert_eq!(
        text,
        format!(
            "ACCESS_REFUSED - access to exchange '{forbidden}' in vhost '/' refused for user '{user}'"
        )
    );
    // Not declared: a passive declare finds nothing.
    let ch = step("create_channel", c.conn.create_channel())
        .await
        .unwrap();
    let r = step(
        "exchange_declare passive",
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    expect_amqp_error(r, 404);
    c.cleanup().await;
    assert_eq!(api.delete(&format!("/api/users/{user}")).status, 204);
}

/// Warren only (it owns the process): a durable exchange keeps its alternate across a
/// clean restart and a `kill -9`; what it cannot route still reaches the alternate's
/// queue, and the persistent message routed there before the crash is still there.
#[test]
fn the_alternate_survives_a_restart_and_a_kill_9() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let mut b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let persistent = || BasicProperties::default().with_delivery_mode(2);
    let (x, unrouted) = block_on(async {
        let c = Client::open(&b).await;
        let ae = unique("ae-durable");
        let x = unique("x-durable");
        for (name, kind, args) in [
            (&ae, ExchangeKind::Fanout, FieldTable::default()),
            (&x, ExchangeKind::Direct, ae_args(Some(&ae))),
        ] {
            step(
                "exchange_declare",
                c.ch.exchange_declare(name.as_str().into(), kind, durable, args),
            )
            .await
            .unwrap();
        }
        let unrouted = c.queue_opts("unrouted", &[], true).await;
        c.bind(&unrouted, &ae, "").await;
        assert!(matches!(
            c.publish(&x, "typo", b"before", persistent()).await,
            Confirmation::Ack(_)
        ));
        let _ = c.conn.close(200, "bye".into()).await;
        (x, unrouted)
    });
    for (round, kill) in [(1u32, false), (2, true)] {
        if kill {
            b.kill9();
        } else {
            b.stop();
        }
        b = Broker::spawn_in(dir.path(), &[]).expect("respawn");
        block_on(async {
            let c = Client::open(&b).await;
            // The persistent one is back; the transient one of the round before is not.
            assert_eq!(c.count(&unrouted).await, Some(1), "round {round}");
            let body = format!("after{round}");
            assert_routed(&publish_mandatory(&c, &x, "typo", body.as_bytes()).await);
            c.wait_count(&unrouted, 2, LONG).await;
            let _ = c.conn.close(200, "bye".into()).await;
        });
    }
    block_on(async {
        let c = Client::open(&b).await;
        let mut got = Vec::new();
        while let Some(m) = c.get(&unrouted).await {
            got.push(msg_body(&m));
            c.ack(m.delivery.delivery_tag).await;
        }
        // publish_mandatory publishes transient: only "before" (persistent) and what
        // was published after the last restart are there.
        assert_eq!(got, ["before", "after2"]);
        let _ = c.conn.close(200, "bye".into()).await;
    });
}
