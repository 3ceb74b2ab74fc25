//! Policies and operator policies (issue 12): the API's answers and validation texts,
//! RabbitMQ 3.10's precedence per key between queue arguments, policies and operator
//! policies, a policy set or changed while queues exist applying to them at once (a
//! max-length policy drops heads, a DLX takes effect for the next rejection, an
//! alternate exchange for the next unroutable publish, a TTL for what arrives next:
//! RabbitMQ fixes a message's expiry on arrival), and policies surviving a restart and
//! a `kill -9`.
//!
//! Every assertion holds against RabbitMQ too: `WARREN_TEST_PORT=5672 cargo test --test
//! policies` (the restart tests are skipped there). Each policy's pattern matches only
//! the uniquely named objects of its test, and every test deletes its policies.
mod queue_features;
mod support;

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, ExchangeKind};
use queue_features::*;
use serde_json::{json, Value};
use support::api::Api;
use support::*;

/// Deletes the policies it names when dropped (also when an assertion fails), so that
/// a failed run leaves nothing in the shared RabbitMQ.
struct Cleanup<'a> {
    api: &'a Api,
    paths: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = self.api.delete(p);
        }
    }
}

fn cleanup(api: &Api) -> Cleanup<'_> {
    Cleanup {
        api,
        paths: Vec::new(),
    }
}

impl Cleanup<'_> {
    /// PUTs a policy (or operator policy when `kind` is "operator-policies") and
    /// remembers it for deletion; returns the status.
    fn put(&mut self, kind: &str, name: &str, body: Value) -> u16 {
        let path = format!("/api/{kind}/%2F/{name}");
        if !self.paths.contains(&path) {
            self.paths.push(path.clone());
        }
        let r = self.api.put(&path, &body);
        assert!(
            r.status == 201 || r.status == 204,
            "PUT {path} {body}: {} {}",
            r.status,
            r.body
        );
        r.status
    }
}

/// The queue's `field` in the API once it equals `want` (RabbitMQ shows a policy change
/// in its queue stats some seconds later).
fn wait_field(api: &Api, path: &str, field: &str, want: &Value) {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(15), || {
        let r = api.get(path);
        if r.status == 200 {
            last = r.json().get(field).cloned().unwrap_or(Value::Null);
        }
        &last == want
    });
    assert!(ok, "{path} {field}: want {want}, last saw {last}");
}

fn reason(r: &support::api::Resp) -> String {
    r.json()["reason"].as_str().unwrap_or_default().to_string()
}

#[test]
fn api_answers_and_validation_texts_are_rabbitmqs() {
    let b = Broker::start();
    let api = Api::new(&b);
    let name = unique("pol-api");
    let path = format!("/api/policies/%2F/{name}");
    let mut c = cleanup(&api);
    c.paths.push(path.clone());
    let pat = format!("^{name}-");

    let bad = |body: Value| {
        let r = api.put(&path, &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["error"], "bad_request");
        reason(&r)
    };
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {"message-ttl": -1}})),
        "Validation failed\n\n-1 is not a valid message TTL\n"
    );
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {"message-ttl": "a"}})),
        "Validation failed\n\n&lt;&lt;\"a\"&gt;&gt; is not a valid message TTL\n"
    );
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {"foo": 1}})),
        "Validation failed\n\n[{&lt;&lt;\"foo\"&gt;&gt;,1}] are not recognised policy settings\n"
    );
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {"expires": 0}})),
        "Validation failed\n\n0 is not a valid queue expiry\n"
    );
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {"overflow": "bad"}})),
        "Validation failed\n\n&lt;&lt;\"bad\"&gt;&gt; is not a valid overflow value\n"
    );
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {"dead-letter-exchange": 1}})),
        "Validation failed\n\n1 is not a valid dead letter exchange name\n"
    );
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {"max-length": -1}})),
        "Validation failed\n\n-1 is not a valid maximum length\n"
    );
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {}})),
        "Validation failed\n\nno policy provided\n"
    );
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {"message-ttl": 1}, "apply-to": "bogus"})),
        "Validation failed\n\napply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'\n"
    );
    assert_eq!(
        bad(json!({"pattern": pat, "definition": {"message-ttl": 1}, "priority": "5"})),
        "Validation failed\n\npriority should be a number, actually was &lt;&lt;\"5\"&gt;&gt;\n"
    );
    assert!(
        bad(json!({"pattern": "^(", "definition": {"message-ttl": 1}})).starts_with(
            "Validation failed\n\npattern should be regular expression but is invalid: "
        )
    );
    assert_eq!(
        bad(json!({"definition": {"message-ttl": 1}})),
        "[{key_missing,pattern}]"
    );
    assert_eq!(bad(json!({"pattern": pat})), "[{key_missing,definition}]");
    assert_eq!(api.get(&path).status, 404, "nothing was stored");

    let put = api.put(
        &path,
        &json!({"pattern": pat, "definition": {"message-ttl": 1000}}),
    );
    assert_eq!(put.status, 201, "{}", put.body);
    let put = api.put(
        &path,
        &json!({"pattern": pat, "definition": {"max-length": 5, "message-ttl": 2000}, "apply-to": "queues", "priority": 3}),
    );
    assert_eq!(put.status, 204, "{}", put.body);
    let want = json!({
        "vhost": "/", "name": name, "pattern": pat, "apply-to": "queues",
        "definition": {"max-length": 5, "message-ttl": 2000}, "priority": 3
    });
    let got = api.get(&path);
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), want);
    // The exact bytes RabbitMQ writes (field order included).
    assert_eq!(
        got.body,
        format!("{{\"vhost\":\"/\",\"name\":\"{name}\",\"pattern\":\"{pat}\",\"apply-to\":\"queues\",\"definition\":{{\"max-length\":5,\"message-ttl\":2000}},\"priority\":3}}")
    );
    // RabbitMQ's bytes in a list too.
    let one = api.get("/api/policies/%2F").body;
    assert!(one.contains(&got.body), "{one}");
    for list in ["/api/policies", "/api/policies/%2F"] {
        let all = api.get(list).json();
        let mine: Vec<&Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == name.as_str())
            .collect();
        assert_eq!(mine, vec![&want], "{list}");
    }
    let r = api.get("/api/policies/no-such-vhost-pol");
    assert_eq!((r.status, reason(&r)), (404, "Not Found".into()));
    let r = api.put(
        &format!("/api/policies/no-such-vhost-pol/{name}"),
        &json!({"pattern": pat, "definition": {"message-ttl": 1}}),
    );
    assert_eq!(
        (r.status, r.json()),
        (
            404,
            json!({"error": "not_found", "reason": "vhost_not_found"})
        )
    );

    assert_eq!(api.delete(&path).status, 204);
    assert_eq!(api.get(&path).status, 404);
    assert_eq!(api.delete(&path).status, 404);

    // Operator policies: only numeric limits, and their texts are not escaped.
    let opath = format!("/api/operator-policies/%2F/{name}");
    c.paths.push(opath.clone());
    let r = api.put(
        &opath,
        &json!({"pattern": pat, "definition": {"max-length": 1, "overflow": "drop-head"}}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        reason(&r),
        "Validation failed\n\n[{<<\"overflow\">>,<<\"drop-head\">>}] are not recognised policy settings\n"
    );
    let r = api.put(
        &opath,
        &json!({"pattern": pat, "definition": {"expires": 100000, "delivery-limit": 3}, "apply-to": "queues"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        api.get(&opath).json(),
        json!({"vhost": "/", "name": name, "pattern": pat, "apply-to": "queues",
               "definition": {"delivery-limit": 3, "expires": 100000}, "priority": 0})
    );
    assert!(api
        .get("/api/operator-policies")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == name.as_str()));
    assert_eq!(api.get(&path).status, 404, "separate namespaces");
    assert_eq!(api.delete(&opath).status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_exchange_objects_show_their_policies() {
    let b = Broker::start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let p = unique("pol-show");
    let q = format!("{p}-q");
    let q_none = unique("pol-none");
    c.declare_named(&q, &[], false).await.unwrap();
    c.forget_later(&q);
    c.declare_named(&q_none, &[], false).await.unwrap();
    c.forget_later(&q_none);
    let x = format!("{p}-x");
    c.ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut cl = cleanup(&api);
    // Equal priorities: the greatest name wins, as in RabbitMQ 3.10.
    cl.put(
        "policies",
        &format!("{p}-a"),
        json!({"pattern": format!("^{p}-"), "definition": {"message-ttl": 60000}}),
    );
    cl.put(
        "policies",
        &format!("{p}-b"),
        json!({"pattern": format!("^{p}-"), "definition": {"message-ttl": 50000, "max-length": 100}}),
    );
    cl.put(
        "operator-policies",
        &format!("{p}-op"),
        json!({"pattern": format!("^{p}-q"), "definition": {"message-ttl": 40000, "expires": 600000}, "apply-to": "queues"}),
    );
    let qpath = format!("/api/queues/%2F/{q}");
    wait_field(&api, &qpath, "policy", &json!(format!("{p}-b")));
    let j = api.get(&qpath).json();
    assert_eq!(j["operator_policy"], json!(format!("{p}-op")));
    assert_eq!(
        j["effective_policy_definition"],
        json!({"expires": 600000, "max-length": 100, "message-ttl": 40000})
    );
    assert_eq!(j["arguments"], json!({}), "arguments stay as declared");
    wait_field(
        &api,
        &format!("/api/queues/%2F/{q_none}"),
        "effective_policy_definition",
        &json!({}),
    );
    let j = api.get(&format!("/api/queues/%2F/{q_none}")).json();
    assert_eq!(
        (&j["policy"], &j["operator_policy"]),
        (&Value::Null, &Value::Null)
    );
    let xj = api.get(&format!("/api/exchanges/%2F/{x}")).json();
    assert_eq!(xj["policy"], json!(format!("{p}-b")));
    let amq = api.get("/api/exchanges/%2F/amq.direct").json();
    assert!(
        amq.get("policy").is_none(),
        "absent without a policy: {amq}"
    );
    // A higher priority takes over.
    cl.put(
        "policies",
        &format!("{p}-a"),
        json!({"pattern": format!("^{p}-"), "definition": {"message-ttl": 60000}, "priority": 1}),
    );
    wait_field(&api, &qpath, "policy", &json!(format!("{p}-a")));
    drop(cl);
    let _ =
        c.ch.exchange_delete(x.as_str().into(), Default::default())
            .await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_between_arguments_policies_and_operator_policies() {
    let b = Broker::start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let p = unique("pol-prec");
    let dl_arg = c.queue("dl-arg", &[]).await;
    let dl_pol = c.queue("dl-pol", &[]).await;
    let mk = |s: &str| format!("{p}-{s}");
    // max-length: the smaller of argument and policy, either way round.
    c.declare_named(&mk("len-arg5"), &[("x-max-length", int(5))], false)
        .await
        .unwrap();
    c.declare_named(&mk("len-arg1"), &[("x-max-length", int(1))], false)
        .await
        .unwrap();
    // Dead-lettering: the argument's routing key wins over the policy's.
    c.declare_named(
        &mk("dl-own"),
        &[
            ("x-dead-letter-exchange", lstr("")),
            ("x-dead-letter-routing-key", lstr(&dl_arg)),
        ],
        false,
    )
    .await
    .unwrap();
    c.declare_named(&mk("dl-none"), &[], false).await.unwrap();
    // Overflow: the argument wins (drop-head over the policy's reject-publish).
    c.declare_named(
        &mk("ovf-arg"),
        &[("x-overflow", lstr("drop-head")), ("x-max-length", int(1))],
        false,
    )
    .await
    .unwrap();
    c.declare_named(&mk("ovf-pol"), &[("x-max-length", int(1))], false)
        .await
        .unwrap();
    // message-ttl: user policy 60 s, operator policy 100 ms: the smaller applies.
    c.declare_named(&mk("ttl"), &[], false).await.unwrap();
    for s in [
        "len-arg5", "len-arg1", "dl-own", "dl-none", "ovf-arg", "ovf-pol", "ttl",
    ] {
        c.forget_later(&mk(s));
    }
    let mut cl = cleanup(&api);
    cl.put(
        "policies",
        &mk("len"),
        json!({"pattern": format!("^{p}-len-"), "definition": {"max-length": 2}}),
    );
    cl.put(
        "policies",
        &mk("dl"),
        json!({"pattern": format!("^{p}-dl-"), "definition": {"dead-letter-exchange": "", "dead-letter-routing-key": dl_pol}}),
    );
    cl.put(
        "policies",
        &mk("ovf"),
        json!({"pattern": format!("^{p}-ovf-"), "definition": {"overflow": "reject-publish"}}),
    );
    cl.put(
        "policies",
        &mk("ttl"),
        json!({"pattern": format!("^{p}-ttl$"), "definition": {"message-ttl": 60000, "max-length": 1}}),
    );
    cl.put(
        "operator-policies",
        &mk("ttl-op"),
        json!({"pattern": format!("^{p}-ttl$"), "definition": {"message-ttl": 100, "max-length": 5}}),
    );

    let plain = BasicProperties::default;
    for i in 0..4 {
        for s in ["len-arg5", "len-arg1"] {
            c.publish("", &mk(s), format!("m{i}").as_bytes(), plain())
                .await;
        }
    }
    c.wait_count(&mk("len-arg5"), 2, LONG).await;
    c.wait_count(&mk("len-arg1"), 1, LONG).await;
    let m = c.wait_get(&mk("len-arg5"), LONG).await;
    assert_eq!(msg_body(&m), "m2", "drop-head kept the newest two");
    c.ack(m.delivery.delivery_tag).await;

    for s in ["dl-own", "dl-none"] {
        c.publish("", &mk(s), s.as_bytes(), plain()).await;
        let m = c.wait_get(&mk(s), LONG).await;
        c.reject(m.delivery.delivery_tag).await;
    }
    assert_eq!(msg_body(&c.wait_get(&dl_arg, LONG).await), "dl-own");
    assert_eq!(msg_body(&c.wait_get(&dl_pol, LONG).await), "dl-none");

    for i in 0..2 {
        let body = format!("o{i}");
        assert!(matches!(
            c.publish("", &mk("ovf-arg"), body.as_bytes(), plain())
                .await,
            Confirmation::Ack(_)
        ));
    }
    assert!(matches!(
        c.publish("", &mk("ovf-pol"), b"o0", plain()).await,
        Confirmation::Ack(_)
    ));
    assert!(
        matches!(
            c.publish("", &mk("ovf-pol"), b"o1", plain()).await,
            Confirmation::Nack(_)
        ),
        "the policy's reject-publish applies where no argument says otherwise"
    );
    assert_eq!(c.count(&mk("ovf-arg")).await, Some(1));
    assert_eq!(msg_body(&c.wait_get(&mk("ovf-arg"), LONG).await), "o1");

    // Operator policy vs policy: the smaller TTL (100 ms) and the smaller length (1).
    for i in 0..3 {
        c.publish("", &mk("ttl"), format!("t{i}").as_bytes(), plain())
            .await;
    }
    c.wait_count(&mk("ttl"), 0, Duration::from_secs(3)).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_live_applies_to_existing_queues() {
    let b = Broker::start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let p = unique("pol-live");
    let q = format!("{p}-q");
    let dlq = c.queue("live-dlq", &[]).await;
    c.declare_named(&q, &[], false).await.unwrap();
    c.forget_later(&q);
    let plain = BasicProperties::default;
    for i in 0..5 {
        c.publish("", &q, format!("m{i}").as_bytes(), plain()).await;
    }
    let mut cl = cleanup(&api);
    // A length limit with a DLX by policy: the heads go at once, dead-lettered.
    cl.put(
        "policies",
        &p,
        json!({"pattern": format!("^{p}-q$"), "apply-to": "queues",
               "definition": {"max-length": 2, "dead-letter-exchange": "", "dead-letter-routing-key": dlq}}),
    );
    c.wait_count(&q, 2, LONG).await;
    c.wait_count(&dlq, 3, LONG).await;
    let m = c.wait_get(&dlq, LONG).await;
    assert_eq!(msg_body(&m), "m0");
    assert_eq!(
        death_summary(&deaths(&m)[0]),
        (q.clone(), "maxlen".into(), 1)
    );
    c.ack(m.delivery.delivery_tag).await;
    // The policy's DLX for a rejection.
    let m = c.wait_get(&q, LONG).await;
    assert_eq!(msg_body(&m), "m3");
    c.reject(m.delivery.delivery_tag).await;
    c.wait_count(&dlq, 3, LONG).await;

    // A TTL by policy: what arrives from now on expires, dead-lettered as `expired`;
    // what was there keeps the expiry it arrived with (none), as in RabbitMQ.
    cl.put(
        "policies",
        &p,
        json!({"pattern": format!("^{p}-q$"), "apply-to": "queues",
               "definition": {"message-ttl": 100, "dead-letter-exchange": "", "dead-letter-routing-key": dlq}}),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(c.count(&q).await, Some(1), "m4 arrived without a TTL");
    let m = c.wait_get(&q, LONG).await;
    assert_eq!(msg_body(&m), "m4");
    c.ack(m.delivery.delivery_tag).await;
    c.publish("", &q, b"late", plain()).await;
    c.wait_count(&q, 0, LONG).await;
    c.wait_count(&dlq, 4, LONG).await;

    // Clearing it: nothing expires any more, rejections are dropped.
    assert_eq!(api.delete(&format!("/api/policies/%2F/{p}")).status, 204);
    c.publish("", &q, b"kept", plain()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(c.count(&q).await, Some(1));
    let m = c.wait_get(&q, LONG).await;
    c.reject(m.delivery.delivery_tag).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.count(&dlq).await, Some(4));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_ttl_applies_to_new_messages_not_old_ones() {
    let b = Broker::start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let p = unique("pol-ttl");
    let q = format!("{p}-q");
    c.declare_named(&q, &[("x-message-ttl", int(60000))], false)
        .await
        .unwrap();
    c.forget_later(&q);
    c.publish("", &q, b"old", BasicProperties::default()).await;
    let mut cl = cleanup(&api);
    cl.put(
        "policies",
        &p,
        json!({"pattern": format!("^{p}-q$"), "definition": {"message-ttl": 100}}),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.count(&q).await,
        Some(1),
        "RabbitMQ fixes a message's expiry on arrival"
    );
    let m = c.wait_get(&q, LONG).await;
    c.ack(m.delivery.delivery_tag).await;
    c.publish("", &q, b"new", BasicProperties::default()).await;
    c.wait_count(&q, 0, Duration::from_secs(3)).await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_and_expiry_by_policy() {
    let b = Broker::start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let p = unique("pol-ae");
    let x = format!("{p}-x");
    let ae = c.exchange("pol-ae-target", ExchangeKind::Fanout).await;
    let caught = c.queue("pol-ae-caught", &[]).await;
    c.ch.queue_bind(
        caught.as_str().into(),
        ae.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    c.ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut cl = cleanup(&api);
    c.publish(&x, "nowhere", b"lost", BasicProperties::default())
        .await;
    cl.put(
        "policies",
        &p,
        json!({"pattern": format!("^{p}-x$"), "apply-to": "exchanges", "definition": {"alternate-exchange": ae}}),
    );
    c.publish(&x, "nowhere", b"caught", BasicProperties::default())
        .await;
    assert_eq!(msg_body(&c.wait_get(&caught, LONG).await), "caught");
    assert_eq!(c.count(&caught).await, Some(0), "the first one was lost");

    // `expires` by policy deletes an unused queue.
    let q = format!("{p}-exp");
    c.declare_named(&q, &[], false).await.unwrap();
    cl.put(
        "policies",
        &format!("{p}-exp"),
        json!({"pattern": format!("^{p}-exp$"), "apply-to": "queues", "definition": {"expires": 300}}),
    );
    // Watched through the API: a passive declare would be a use (RabbitMQ's `stat`
    // restarts the expiry timer).
    let qpath = format!("/api/queues/%2F/{q}");
    assert!(
        wait_until(LONG, || api.get(&qpath).status == 404),
        "{q} not deleted"
    );
    drop(cl);
    let _ =
        c.ch.exchange_delete(x.as_str().into(), Default::default())
            .await;
    c.cleanup().await;
}

/// Policies persist with the metadata: after a clean restart and after `kill -9`, they
/// are listed and act on the recovered queue (Warren only: it owns the process).
#[test]
fn policies_survive_a_restart_and_kill_9() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let mut b = Broker::spawn_in(dir.path(), &[]).expect("spawn");
    let q = "kept-q";
    block_on(async {
        let c = Client::open(&b).await;
        c.declare_named(q, &[], true).await.unwrap();
        let api = Api::new(&b);
        let r = api.put(
            "/api/policies/%2F/cap",
            &json!({"pattern": "^kept-", "definition": {"max-length": 2}, "priority": 4, "apply-to": "queues"}),
        );
        assert_eq!(r.status, 201);
        let r = api.put(
            "/api/operator-policies/%2F/opcap",
            &json!({"pattern": "^kept-", "definition": {"max-length": 1}}),
        );
        assert_eq!(r.status, 201);
        let _ = c.conn.close(200, "bye".into()).await;
    });
    for kill in [false, true] {
        if kill {
            b.kill9();
        } else {
            b.stop();
        }
        b = Broker::spawn_in(dir.path(), &[]).expect("restart");
        let api = Api::new(&b);
        let got = api.get("/api/policies/%2F/cap");
        assert_eq!(got.status, 200, "kill={kill}");
        assert_eq!(
            got.json(),
            json!({"vhost": "/", "name": "cap", "pattern": "^kept-", "apply-to": "queues",
                   "definition": {"max-length": 2}, "priority": 4})
        );
        let op = api.get("/api/operator-policies/%2F/opcap");
        assert_eq!(op.status, 200);
        // The change made just before the kill is there: a policy is on disk (the
        // metadata's sync) before its PUT is answered.
        let want_expires = if kill { json!(3600000) } else { Value::Null };
        assert_eq!(
            op.json()["definition"]["expires"],
            want_expires,
            "kill={kill}"
        );
        let qj = api.get("/api/queues/%2F/kept-q").json();
        assert_eq!(qj["policy"], "cap");
        assert_eq!(qj["operator_policy"], "opcap");
        block_on(async {
            let c = Client::open(&b).await;
            for i in 0..3 {
                let props = BasicProperties::default().with_delivery_mode(2);
                c.publish("", q, format!("m{i}").as_bytes(), props).await;
            }
            c.wait_count(q, 1, LONG).await;
            let m = c.wait_get(q, LONG).await;
            c.ack(m.delivery.delivery_tag).await;
            let _ = c.conn.close(200, "bye".into()).await;
        });
        // Changed before the next round: the change persists too.
        let r = api.put(
            "/api/operator-policies/%2F/opcap",
            &json!({"pattern": "^kept-", "definition": {"max-length": 1, "expires": 3600000}}),
        );
        assert_eq!(r.status, 204);
    }
    let api = Api::new(&b);
    let op = api.get("/api/operator-policies/%2F/opcap").json();
    assert_eq!(op["definition"]["expires"], 3600000);
}

/// Who may do what, as RabbitMQ 3.10: a policymaker with permissions in the vhost sets
/// and deletes policies but not operator policies; a management user lists (what its
/// vhosts hold) and changes nothing.
#[test]
fn policymakers_set_policies_and_only_administrators_operator_policies() {
    let b = Broker::start();
    let api = Api::new(&b);
    let pm = unique("pol-pm");
    let mg = unique("pol-mg");
    for (u, tag) in [(&pm, "policymaker"), (&mg, "management")] {
        let r = api.put(
            &format!("/api/users/{u}"),
            &json!({"password": "pw", "tags": tag}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let r = api.put(
            &format!("/api/permissions/%2F/{u}"),
            &json!({"configure": ".*", "write": ".*", "read": ".*"}),
        );
        assert!(r.status == 201 || r.status == 204, "{}", r.body);
    }
    let name = unique("pol-acc");
    let path = format!("/api/policies/%2F/{name}");
    let opath = format!("/api/operator-policies/%2F/{name}");
    let mut cl = cleanup(&api);
    cl.paths.push(path.clone());
    cl.paths.push(opath.clone());
    let body = json!({"pattern": format!("^{name}$"), "definition": {"max-length": 1}});
    let (pma, mga) = (api.as_user(&pm, "pw"), api.as_user(&mg, "pw"));

    let r = mga.put(&path, &body);
    assert_eq!(
        (r.status, reason(&r)),
        (401, "User not authorised to access object".into())
    );
    assert_eq!(pma.put(&path, &body).status, 201);
    let listed = mga.get("/api/policies/%2F");
    assert_eq!(listed.status, 200);
    assert!(listed.body.contains(&name), "{}", listed.body);
    assert_eq!(mga.get("/api/policies").status, 200);
    assert_eq!(mga.get("/api/operator-policies").status, 200);
    assert_eq!(mga.delete(&path).status, 401);
    for who in [&pma, &mga] {
        let r = who.put(&opath, &body);
        assert_eq!(
            (r.status, reason(&r)),
            (401, "Not administrator user".into())
        );
    }
    assert_eq!(pma.delete(&path).status, 204);
    drop(cl);
    for u in [&pm, &mg] {
        api.delete(&format!("/api/users/{u}"));
    }
}

/// `delivery-limit` from a policy on a quorum queue, the smaller of it and the queue's
/// `x-delivery-limit`; the poison message dead-lettered with the policy's DLX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_limit_by_policy_on_a_quorum_queue() {
    let b = Broker::start();
    let api = Api::new(&b);
    let c = Client::open(&b).await;
    let p = unique("pol-dl");
    let q = format!("{p}-qq");
    let dlq = c.queue("pol-dl-dlq", &[]).await;
    c.declare_named(
        &q,
        &[
            ("x-queue-type", lstr("quorum")),
            ("x-delivery-limit", int(5)),
        ],
        true,
    )
    .await
    .unwrap();
    c.forget_later(&q);
    let mut cl = cleanup(&api);
    cl.put(
        "policies",
        &p,
        json!({"pattern": format!("^{p}-qq$"), "apply-to": "queues",
               "definition": {"delivery-limit": 1, "dead-letter-exchange": "", "dead-letter-routing-key": dlq}}),
    );
    c.publish("", &q, b"poison", BasicProperties::default())
        .await;
    for _ in 0..2 {
        let m = c.wait_get(&q, LONG).await;
        c.nack(m.delivery.delivery_tag, false, true).await;
    }
    let m = c.wait_get(&dlq, LONG).await;
    assert_eq!(msg_body(&m), "poison");
    assert_eq!(
        death_summary(&deaths(&m)[0]),
        (q.clone(), "delivery_limit".into(), 1)
    );
    c.ack(m.delivery.delivery_tag).await;
    assert_eq!(c.count(&q).await, Some(0));
    c.cleanup().await;
}
