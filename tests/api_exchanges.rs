//! The management API's exchanges and bindings (issue 10): declare, list, get, delete
//! (`if-unused`), publish with the message arriving on an AMQP consumer, and bindings
//! created, listed, fetched and deleted by their properties key. Every assertion also
//! holds against RabbitMQ 3.10 (`WARREN_TEST_PORT=5672`).
mod support;

use serde_json::{json, Value};
use support::api::{enc, Api};
use support::*;

/// The names in a list answer.
fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .filter_map(|x| x["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn declare_get_list_and_delete_an_exchange() {
    let b = Broker::start();
    let api = Api::new(&b);
    let x = unique("xb-x");
    let path = format!("/api/exchanges/%2F/{}", enc(&x));

    let r = api.put(
        &path,
        &json!({"type": "topic", "durable": false, "arguments": {}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.put(&path, &json!({"type": "topic", "durable": false}));
    assert_eq!(r.status, 204, "{}", r.body);
    let r = api.put(&path, &json!({"type": "fanout"}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": format!(
            "inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'fanout' but current is 'topic'"
        )})
    );
    let r = api.put(&path, &json!({"type": "topic", "auto_delete": true}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["reason"],
        format!("inequivalent arg 'auto_delete' for exchange '{x}' in vhost '/': received 'true' but current is 'false'")
    );

    let r = api.get(&path);
    assert_eq!(r.status, 200, "{}", r.body);
    let e = r.json();
    for (k, v) in [
        ("name", json!(x)),
        ("vhost", json!("/")),
        ("type", json!("topic")),
        ("durable", json!(false)),
        ("auto_delete", json!(false)),
        ("internal", json!(false)),
        ("arguments", json!({})),
    ] {
        assert_eq!(e[k], v, "{k} in {e}");
    }
    assert!(e["user_who_performed_action"].is_string(), "{e}");

    assert!(names(&api.get("/api/exchanges/%2F").json()).contains(&x));
    assert!(names(&api.get("/api/exchanges").json()).contains(&x));
    let builtin = names(&api.get("/api/exchanges/%2F").json());
    for n in [
        "",
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
    ] {
        assert!(
            builtin.contains(&n.to_owned()),
            "{n} missing from {builtin:?}"
        );
    }
    let d = api.get("/api/exchanges/%2F/amq.default").json();
    assert_eq!((&d["name"], &d["type"]), (&json!(""), &json!("direct")));
    assert_eq!(api.get("/api/exchanges/no-such-vhost").status, 404);

    // Reserved names and unknown types.
    let r = api.put(
        "/api/exchanges/%2F/amq.xb-reserved",
        &json!({"type": "direct"}),
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": "not_authorised", "reason": "Access refused."})
    );
    assert_eq!(
        api.put("/api/exchanges/%2F/amq.default", &json!({"type": "direct"}))
            .status,
        401
    );
    let bogus = unique("xb-bogus");
    // A type name never used before: RabbitMQ's "unknown exchange type" (a name that
    // exists as an Erlang atom in the node, such as "bogus" at times, gets "invalid").
    let kind = unique("bogus-type");
    let r = api.put(
        &format!("/api/exchanges/%2F/{}", enc(&bogus)),
        &json!({ "type": kind }),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        format!("unknown exchange type '{kind}'")
    );
    assert_eq!(
        api.get(&format!("/api/exchanges/%2F/{}", enc(&bogus)))
            .status,
        404
    );
    // No type: RabbitMQ makes a direct exchange.
    let plain = unique("xb-plain");
    let plain_path = format!("/api/exchanges/%2F/{}", enc(&plain));
    assert_eq!(api.put(&plain_path, &json!({})).status, 201);
    assert_eq!(api.get(&plain_path).json()["type"], "direct");
    assert_eq!(api.delete(&plain_path).status, 204);
    assert_eq!(api.delete("/api/exchanges/%2F/amq.direct").status, 401);
    assert_eq!(api.delete("/api/exchanges/%2F/amq.default").status, 401);
    assert_eq!(api.request("POST", &path, Some("{}"), &[]).status, 405);

    assert_eq!(api.delete(&path).status, 204);
    let r = api.get(&path);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );
    assert_eq!(api.delete(&path).status, 404);
}

#[test]
fn bindings_by_properties_key_and_if_unused() {
    let b = Broker::start();
    let api = Api::new(&b);
    let x = unique("xb-src");
    let x2 = unique("xb-dst");
    let q = unique("xb-q");
    let xp = format!("/api/exchanges/%2F/{}", enc(&x));
    let x2p = format!("/api/exchanges/%2F/{}", enc(&x2));
    let qp = format!("/api/queues/%2F/{}", enc(&q));
    assert_eq!(api.put(&xp, &json!({"type": "direct"})).status, 201);
    assert_eq!(api.put(&x2p, &json!({"type": "fanout"})).status, 201);
    assert_eq!(api.put(&qp, &json!({"durable": false})).status, 201);

    let to_q = format!("/api/bindings/%2F/e/{}/q/{}", enc(&x), enc(&q));
    let to_x = format!("/api/bindings/%2F/e/{}/e/{}", enc(&x), enc(&x2));
    let r = api.post(&to_q, &json!({"routing_key": "rk", "arguments": {}}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some(format!("{q}/rk").as_str()));
    // The key is quoted twice: once into the properties key, once into the location.
    let r = api.post(&to_q, &json!({"routing_key": "a b/c"}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some(format!("{q}/a%2Bb%252Fc").as_str())
    );
    let r = api.post(
        &to_q,
        &json!({"routing_key": "k", "arguments": {"x-xb": "v", "n": 1}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let loc = r.header("location").unwrap_or_default().to_owned();
    // RabbitMQ's key: `~` and base64url of erlang:phash2 of the arguments.
    assert_eq!(loc, format!("{q}/k~ed1PhA"));
    let r = api.post(&to_x, &json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some(format!("{x2}/~").as_str()));

    // Missing ends and the default exchange.
    let r = api.post(
        &format!("/api/bindings/%2F/e/{}/q/{}", enc(&x), enc("xb-no-such-q")),
        &json!({"routing_key": "x"}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": "not_found", "reason": "no queue 'xb-no-such-q' in vhost '/'"})
    );
    let r = api.post(
        &format!("/api/bindings/%2F/e/xb-no-such-x/q/{}", enc(&q)),
        &json!({"routing_key": "x"}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["reason"],
        "no exchange 'xb-no-such-x' in vhost '/'"
    );
    let r = api.post(
        &format!("/api/bindings/%2F/e/amq.default/q/{}", enc(&q)),
        &json!({"routing_key": "x"}),
    );
    assert_eq!(r.status, 401);

    // Listing: between the two ends, by exchange, by vhost.
    let list = api.get(&to_q).json();
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["properties_key"].as_str())
        .collect();
    assert_eq!(keys.len(), 3, "{list}");
    assert!(
        keys.contains(&"rk") && keys.contains(&"a+b%2Fc"),
        "{keys:?}"
    );
    let with_args = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["routing_key"] == "k")
        .unwrap()
        .clone();
    assert_eq!(with_args["arguments"], json!({"x-xb": "v", "n": 1}));
    assert_eq!(
        Some(with_args["properties_key"].as_str().unwrap()),
        loc.split_once('/').map(|(_, k)| k)
    );
    for b in list.as_array().unwrap() {
        for (k, v) in [
            ("source", json!(x)),
            ("vhost", json!("/")),
            ("destination", json!(q)),
            ("destination_type", json!("queue")),
        ] {
            assert_eq!(b[k], v, "{k} in {b}");
        }
    }
    let source = api.get(&format!("{xp}/bindings/source")).json();
    assert_eq!(source.as_array().unwrap().len(), 4, "{source}");
    let dest = api.get(&format!("{x2p}/bindings/destination")).json();
    assert_eq!(dest.as_array().unwrap().len(), 1, "{dest}");
    assert_eq!(dest[0]["destination_type"], "exchange");
    let all = api.get("/api/bindings/%2F").json();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|b| b["source"] == "" && b["destination"] == q.as_str()),
        "the default exchange's binding of {q} is listed"
    );
    assert!(api.get("/api/bindings").json().as_array().unwrap().len() >= 5);
    assert_eq!(api.get("/api/bindings/xb-no-such-vhost").status, 404);

    // One binding by its key.
    let one = api.get(&format!("{to_q}/a%2Bb%252Fc"));
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["routing_key"], "a b/c");
    let one = api.get(&format!(
        "{to_q}/{}",
        enc(with_args["properties_key"].as_str().unwrap())
    ));
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json(), with_args);
    assert_eq!(api.get(&format!("{to_q}/nope")).status, 404);

    // In use: if-unused refuses.
    let r = api.delete(&format!("{xp}?if-unused=true"));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        format!("exchange '{x}' in vhost '/' in use")
    );

    // Delete by key; a second time is 404.
    assert_eq!(api.delete(&format!("{to_q}/rk")).status, 204);
    assert_eq!(api.delete(&format!("{to_q}/rk")).status, 404);
    let key = enc(with_args["properties_key"].as_str().unwrap());
    assert_eq!(api.delete(&format!("{to_q}/{key}")).status, 204);
    assert_eq!(api.delete(&format!("{to_q}/a%2Bb%252Fc")).status, 204);
    assert_eq!(api.delete(&format!("{to_x}/~")).status, 204);
    assert_eq!(api.get(&to_q).json(), json!([]));
    assert_eq!(api.delete(&format!("{xp}?if-unused=true")).status, 204);

    assert_eq!(api.delete(&x2p).status, 204);
    assert_eq!(api.delete(&qp).status, 204);
}

#[test]
fn publish_routes_and_the_message_arrives() {
    let b = Broker::start();
    let api = Api::new(&b);
    let x = unique("xb-pub");
    let q = unique("xb-pubq");
    let xp = format!("/api/exchanges/%2F/{}", enc(&x));
    let qp = format!("/api/queues/%2F/{}", enc(&q));
    assert_eq!(api.put(&xp, &json!({"type": "direct"})).status, 201);
    assert_eq!(api.put(&qp, &json!({"durable": false})).status, 201);
    let bind = format!("/api/bindings/%2F/e/{}/q/{}", enc(&x), enc(&q));
    assert_eq!(api.post(&bind, &json!({"routing_key": "rk"})).status, 201);

    block_on(async {
        let conn = b.connect().await;
        let ch = step("channel", conn.create_channel()).await.unwrap();
        let mut c = consume(&ch, &q, "xb", true).await;

        let publish = |body: Value| api.post(&format!("{xp}/publish"), &body);
        let r = publish(
            json!({"routing_key": "rk", "payload": "hello", "payload_encoding": "string", "properties": {}}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json(), json!({"routed": true}));
        let d = next_delivery(&mut c).await;
        assert_eq!(&d.data[..], b"hello");
        assert_eq!(d.routing_key.as_str(), "rk");
        assert_eq!(d.exchange.as_str(), x.as_str());

        let r = publish(
            json!({"routing_key": "elsewhere", "payload": "x", "payload_encoding": "string", "properties": {}}),
        );
        assert_eq!(r.json(), json!({"routed": false}));

        // base64 and properties, through the default exchange.
        let r = api.post(
            "/api/exchanges/%2F/amq.default/publish",
            &json!({
                "routing_key": q,
                "payload": "AAEC/w==",
                "payload_encoding": "base64",
                "properties": {"delivery_mode": 2, "content_type": "application/x-xb",
                               "headers": {"h": "v"}},
            }),
        );
        assert_eq!(r.json(), json!({"routed": true}), "{}", r.body);
        let d = next_delivery(&mut c).await;
        assert_eq!(&d.data[..], &[0, 1, 2, 255]);
        assert_eq!(d.properties.delivery_mode(), &Some(2));
        assert_eq!(
            d.properties.content_type().as_ref().map(|s| s.as_str()),
            Some("application/x-xb")
        );
        let h = d.properties.headers().as_ref().expect("headers");
        assert!(format!("{h:?}").contains('h'), "{h:?}");
        assert_no_delivery(&mut c, std::time::Duration::from_millis(100)).await;
    });

    // RabbitMQ's refusals.
    let r = api.post(&format!("{xp}/publish"), &json!({"payload": "x"}));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "[{key_missing,routing_key},\n {key_missing,properties},\n {key_missing,payload_encoding}]"
    );
    let r = api.post(
        &format!("{xp}/publish"),
        &json!({"routing_key": "rk", "payload": "x", "payload_encoding": "hex", "properties": {}}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], json!(["unsupported_encoding", "hex"]));
    let r = api.post(
        &format!("{xp}/publish"),
        &json!({"routing_key": "rk", "payload": "!!!", "payload_encoding": "base64", "properties": {}}),
    );
    assert_eq!(r.json()["reason"], json!(["not_base64", "!!!"]));
    let r = api.post(
        "/api/exchanges/%2F/xb-no-such-x/publish",
        &json!({"routing_key": "rk", "payload": "x", "payload_encoding": "string", "properties": {}}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["reason"],
        "404 NOT_FOUND - no exchange 'xb-no-such-x' in vhost '/'"
    );
    assert_eq!(api.get(&format!("{xp}/publish")).status, 405);

    assert_eq!(api.delete(&qp).status, 204);
    assert_eq!(api.delete(&xp).status, 204);
}

/// The values of a `_details` object's `samples` for a 60 s window in 5 s steps, after
/// checking their shape as RabbitMQ sends it: 13 `{"sample", "timestamp"}` objects,
/// newest first, 5 s apart on 5 s boundaries, beside `avg_rate` and `avg`. None while
/// they are missing (RabbitMQ has no statistics for a new object until its next
/// collection).
fn window_samples(details: &Value) -> Option<Vec<u64>> {
    let s = details.get("samples")?.as_array()?;
    assert_eq!(s.len(), 13, "{details}");
    let ts: Vec<u64> = s.iter().filter_map(|x| x["timestamp"].as_u64()).collect();
    assert_eq!(ts.len(), 13, "{details}");
    assert!(ts.iter().all(|t| t % 5000 == 0), "{details}");
    assert!(ts.windows(2).all(|w| w[0] == w[1] + 5000), "{details}");
    assert!(
        details["avg_rate"].is_number() && details["avg"].is_number(),
        "{details}"
    );
    s.iter().map(|x| x["sample"].as_u64()).collect()
}

/// An exchange's message rates over the last minutes, as its page charts them:
/// `GET /api/exchanges/{vhost}/{name}?msg_rates_age=60&msg_rates_incr=5` carries
/// `publish_in_details.samples` and `publish_out_details.samples` once a sample has
/// been taken after the publishes (every 5 s, Warren's default and RabbitMQ's).
#[test]
fn an_exchanges_message_rates_have_samples() {
    let b = Broker::start();
    let api = Api::new(&b);
    let x = unique("xb-hist");
    let q = unique("xb-histq");
    let xp = format!("/api/exchanges/%2F/{}", enc(&x));
    let qp = format!("/api/queues/%2F/{}", enc(&q));
    assert_eq!(api.put(&xp, &json!({"type": "fanout"})).status, 201);
    assert_eq!(api.put(&qp, &json!({"durable": false})).status, 201);
    let bind = format!("/api/bindings/%2F/e/{}/q/{}", enc(&x), enc(&q));
    assert_eq!(api.post(&bind, &json!({"routing_key": ""})).status, 201);

    block_on(async {
        let conn = b.connect().await;
        let ch = step("channel", conn.create_channel()).await.unwrap();
        step(
            "confirm",
            ch.confirm_select(lapin::options::ConfirmSelectOptions::default()),
        )
        .await
        .unwrap();
        for _ in 0..5 {
            step(
                "publish",
                ch.basic_publish(
                    x.as_str().into(),
                    "".into(),
                    lapin::options::BasicPublishOptions::default(),
                    b"m",
                    lapin::BasicProperties::default(),
                ),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        step("close", conn.close(200, "bye".into())).await.unwrap();
    });

    let path = format!("{xp}?msg_rates_age=60&msg_rates_incr=5");
    let mut x = Value::Null;
    let sampled = wait_until(std::time::Duration::from_secs(20), || {
        x = api.get(&path).json();
        ["publish_in", "publish_out"].iter().all(|k| {
            window_samples(&x["message_stats"][format!("{k}_details")]).is_some_and(|s| s[0] == 5)
        })
    });
    assert!(sampled, "no sample of the publishes: {x}");
    let ms = &x["message_stats"];
    assert_eq!(
        (&ms["publish_in"], &ms["publish_out"]),
        (&json!(5), &json!(5))
    );
    // Counters never go down from the newest sample back.
    let s = window_samples(&ms["publish_in_details"]).unwrap_or_default();
    assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
    assert!(ms["publish_in_details"]["rate"].is_number());

    // Without the window parameters: rates only, as RabbitMQ.
    let plain = api.get(&xp).json();
    assert!(
        plain["message_stats"]["publish_in_details"]["samples"].is_null(),
        "{plain}"
    );
    assert!(
        plain["message_stats"]["publish_in_details"]["rate"].is_number(),
        "{plain}"
    );

    assert_eq!(api.delete(&qp).status, 204);
    assert_eq!(api.delete(&xp).status, 204);
}

/// Warren only (it restarts the broker): a persistent message published over HTTP to a
/// durable queue is written to the store like an AMQP one and survives a restart.
#[test]
fn persistent_http_publish_survives_a_restart() {
    let dir = std::env::temp_dir().join(unique("xb-persist"));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(mut b) = Broker::spawn_in(&dir, &[]) else {
        return;
    };
    let api = Api::new(&b);
    assert_eq!(
        api.put("/api/queues/%2F/xb-durable", &json!({"durable": true}))
            .status,
        201
    );
    for mode in [2, 1] {
        let r = api.post(
            "/api/exchanges/%2F/amq.default/publish",
            &json!({"routing_key": "xb-durable", "payload": format!("m{mode}"),
                    "payload_encoding": "string", "properties": {"delivery_mode": mode}}),
        );
        assert_eq!(r.json(), json!({"routed": true}));
    }
    b.stop();
    drop(b);
    let b = Broker::spawn_in(&dir, &[]).expect("restart");
    let api = Api::new(&b);
    let got = api.post(
        "/api/queues/%2F/xb-durable/get",
        &json!({"count": 10, "ackmode": "ack_requeue_false", "encoding": "auto"}),
    );
    let got = got.json();
    let bodies: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["payload"].as_str())
        .collect();
    assert_eq!(bodies, vec!["m2"], "only the persistent message survives");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Warren only (it needs broker flags): under a resource alarm an HTTP publish is
/// refused with 503 rather than left waiting, as AMQP publishers are blocked.
#[test]
fn publish_is_refused_under_an_alarm() {
    let Some(b) = Broker::start_with(&["--disk-free-limit", "1000000000000000000"]) else {
        return;
    };
    let api = Api::new(&b);
    assert!(
        wait_until(std::time::Duration::from_secs(10), || {
            api.get("/api/nodes").json()[0]["disk_free_alarm"] == true
        }),
        "the disk alarm was not raised"
    );
    let r = api.post(
        "/api/exchanges/%2F/amq.default/publish",
        &json!({"routing_key": "q", "payload": "x", "payload_encoding": "string", "properties": {}}),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["reason"], "publishing is blocked: low on disk");
}
