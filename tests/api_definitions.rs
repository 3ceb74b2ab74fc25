//! Definitions export and import (issue 10): a file exported from RabbitMQ 3.10
//! (`tests/data/rabbitmq-3.10-definitions.json`) imports into Warren and its objects
//! appear; Warren's export imports back (into itself and into a fresh Warren); a
//! malformed file is a 400 that changes nothing. Every shared assertion also holds
//! against RabbitMQ 3.10 (`WARREN_TEST_PORT=5672`), which then gets the same fixture
//! imported and cleaned up afterwards.
mod support;

use serde_json::{json, Value};
use support::api::{enc, Api};
use support::*;

const FIXTURE: &str = include_str!("data/rabbitmq-3.10-definitions.json");

fn list(api: &Api, path: &str) -> Vec<Value> {
    let r = api.get(path);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json().as_array().cloned().unwrap_or_default()
}

/// Removes the fixture's objects (RabbitMQ is shared; a Warren test broker goes away
/// by itself, and Warren has no vhost deletion yet).
fn remove_fixture(api: &Api) {
    for x in [
        "xb-fixture-topic",
        "xb-fixture-fanout",
        "xb-fixture-headers",
    ] {
        api.delete(&format!("/api/exchanges/%2F/{x}"));
    }
    for q in ["xb-fixture-q1", "xb-fixture-q2"] {
        api.delete(&format!("/api/queues/%2F/{q}"));
    }
    api.delete("/api/vhosts/xb-fixture-vh");
}

#[test]
fn a_rabbitmq_export_imports_and_its_objects_appear() {
    let b = Broker::start();
    let api = Api::new(&b);
    let r = api.request("POST", "/api/definitions", Some(FIXTURE), &[]);
    assert_eq!(r.status, 204, "{}", r.body);

    let check = || {
        let x = api.get("/api/exchanges/%2F/xb-fixture-topic").json();
        assert_eq!(
            (&x["type"], &x["durable"]),
            (&json!("topic"), &json!(true)),
            "{x}"
        );
        let h = api.get("/api/exchanges/%2F/xb-fixture-headers").json();
        assert_eq!(h["type"], "headers");
        let q1 = api.get("/api/queues/%2F/xb-fixture-q1").json();
        assert_eq!(q1["durable"], true, "{q1}");
        assert_eq!(
            q1["arguments"],
            json!({"x-max-length": 100, "x-message-ttl": 60000})
        );
        let q2 = api.get("/api/queues/%2F/xb-fixture-q2").json();
        assert_eq!(q2["arguments"], json!({"x-queue-type": "classic"}));
        assert_eq!(api.get("/api/vhosts/xb-fixture-vh").status, 200);
        let q3 = api.get("/api/queues/xb-fixture-vh/xb-fixture-q3");
        assert_eq!(q3.status, 200, "{}", q3.body);
        let x3 = api.get("/api/exchanges/xb-fixture-vh/xb-fixture-direct");
        assert_eq!(x3.status, 200, "{}", x3.body);
        let to_q1 = list(&api, "/api/bindings/%2F/e/xb-fixture-topic/q/xb-fixture-q1");
        assert_eq!(to_q1.len(), 1);
        assert_eq!(to_q1[0]["routing_key"], "orders.*");
        let e2e = list(
            &api,
            "/api/bindings/%2F/e/xb-fixture-topic/e/xb-fixture-fanout",
        );
        assert_eq!(e2e.len(), 1);
        assert_eq!(e2e[0]["routing_key"], "#");
        let hb = list(
            &api,
            "/api/bindings/%2F/e/xb-fixture-headers/q/xb-fixture-q2",
        );
        assert_eq!(hb[0]["arguments"], json!({"kind": "a", "x-match": "all"}));
        let vb = list(
            &api,
            "/api/bindings/xb-fixture-vh/e/xb-fixture-direct/q/xb-fixture-q3",
        );
        assert_eq!(vb[0]["routing_key"], "k3");
        // The importing user may use the new vhost.
        let perms = list(&api, "/api/permissions");
        assert!(
            perms
                .iter()
                .any(|p| p["user"] == "guest" && p["vhost"] == "xb-fixture-vh"),
            "{perms:?}"
        );
    };
    check();
    // Importing the same file again is a no-op that succeeds.
    let r = api.request("POST", "/api/definitions", Some(FIXTURE), &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    check();

    // The export holds them, in RabbitMQ's shape.
    let d = api.get("/api/definitions").json();
    for k in [
        "rabbit_version",
        "rabbitmq_version",
        "product_name",
        "product_version",
        "users",
        "vhosts",
        "permissions",
        "topic_permissions",
        "parameters",
        "global_parameters",
        "policies",
        "queues",
        "exchanges",
        "bindings",
    ] {
        assert!(d.get(k).is_some(), "{k} missing from the export");
    }
    let guest = d["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "guest")
        .expect("guest exported")
        .clone();
    assert_eq!(guest["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert_eq!(
        guest["password_hash"].as_str().map(str::len),
        Some(48),
        "{guest}"
    );
    let xs = d["exchanges"].as_array().unwrap();
    assert!(xs
        .iter()
        .all(|x| !x["name"].as_str().unwrap().starts_with("amq.") && x["name"] != ""));
    assert!(xs
        .iter()
        .any(|x| x["name"] == "xb-fixture-fanout" && x["vhost"] == "/"));
    assert!(d["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["source"] != ""));

    // Per vhost: no vhost fields, RabbitMQ's keys.
    let v = api.get("/api/definitions/xb-fixture-vh").json();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "bindings",
            "exchanges",
            "parameters",
            "policies",
            "queues",
            "rabbit_version"
        ]
    );
    assert_eq!(
        v["queues"],
        json!([{"name": "xb-fixture-q3", "durable": true,
                                     "auto_delete": false, "arguments": {}}])
    );
    assert_eq!(v["bindings"][0]["routing_key"], "k3");
    assert!(v["bindings"][0].get("vhost").is_none());
    assert_eq!(api.get("/api/definitions/xb-no-such-vhost").status, 400);

    remove_fixture(&api);
}

#[test]
fn warren_export_imports_back() {
    let b = Broker::start();
    let api = Api::new(&b);
    let x = unique("xb-rt-x");
    let q = unique("xb-rt-q");
    let xp = format!("/api/exchanges/%2F/{}", enc(&x));
    let qp = format!("/api/queues/%2F/{}", enc(&q));
    assert_eq!(
        api.put(&xp, &json!({"type": "topic", "durable": true}))
            .status,
        201
    );
    assert_eq!(
        api.put(
            &qp,
            &json!({"durable": true, "arguments": {"x-max-priority": 5}})
        )
        .status,
        201
    );
    let bind = format!("/api/bindings/%2F/e/{}/q/{}", enc(&x), enc(&q));
    assert_eq!(
        api.post(
            &bind,
            &json!({"routing_key": "a.#", "arguments": {"k": "v"}})
        )
        .status,
        201
    );
    // An exclusive queue is not exported.
    let exclusive = block_on(async {
        let conn = b.connect().await;
        let ch = step("channel", conn.create_channel()).await.unwrap();
        let q = step(
            "exclusive declare",
            ch.queue_declare(
                "".into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        let export = api.get("/api/definitions").json();
        drop(conn);
        (q.name().to_string(), export)
    });
    let (exclusive_name, export) = exclusive;
    let names = |k: &str| -> Vec<String> {
        export[k]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(names("queues").contains(&q));
    assert!(
        !names("queues").contains(&exclusive_name),
        "exclusive queues are not exported"
    );
    assert!(names("exchanges").contains(&x));

    // Only this test's objects go back (RabbitMQ is shared with others).
    let mine = |k: &str, field: &str| -> Vec<Value> {
        export[k]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o[field] == x.as_str() || o[field] == q.as_str())
            .cloned()
            .collect()
    };
    let file = json!({
        "queues": mine("queues", "name"),
        "exchanges": mine("exchanges", "name"),
        "bindings": mine("bindings", "source"),
    });
    assert_eq!(file["bindings"].as_array().unwrap().len(), 1, "{file}");
    assert_eq!(api.delete(&xp).status, 204);
    assert_eq!(api.delete(&qp).status, 204);
    assert_eq!(api.get(&qp).status, 404);
    let r = api.post("/api/definitions", &file);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(api.get(&xp).json()["type"], "topic");
    assert_eq!(
        api.get(&qp).json()["arguments"],
        json!({"x-max-priority": 5})
    );
    let back = list(&api, &bind);
    assert_eq!(back.len(), 1);
    assert_eq!(
        (&back[0]["routing_key"], &back[0]["arguments"]),
        (&json!("a.#"), &json!({"k": "v"}))
    );

    // The per-vhost form: objects without vhost fields land in the path's vhost.
    let x2 = unique("xb-rt-vx");
    let r = api.post(
        "/api/definitions/%2F",
        &json!({"exchanges": [{"name": x2, "type": "fanout", "durable": false,
                               "auto_delete": false, "internal": false, "arguments": {}}]}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let x2p = format!("/api/exchanges/%2F/{}", enc(&x2));
    assert_eq!(api.get(&x2p).json()["type"], "fanout");
    let r = api.post("/api/definitions/xb-no-such-vhost", &json!({}));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"error": "not_found", "reason": "vhost_not_found"})
    );

    // Warren only: the whole export (users, vhosts, permissions) into a fresh Warren.
    if !b.is_external() {
        let fresh = Broker::start();
        let api2 = Api::new(&fresh);
        let r = api2.post("/api/definitions", &export);
        assert_eq!(r.status, 204, "{}", r.body);
        assert_eq!(api2.get(&qp).json()["durable"], true);
        assert_eq!(list(&api2, &bind).len(), 1);
        let again = api2.get("/api/definitions").json();
        for k in ["queues", "exchanges", "bindings", "vhosts", "permissions"] {
            assert_eq!(again[k], export[k], "{k} differs after the round trip");
        }
        // The exported hash is RabbitMQ's: guest/guest still logs in after a re-import.
        assert_eq!(api2.get("/api/whoami").status, 200);
    }

    for p in [&xp, &x2p, &qp] {
        api.delete(p);
    }
}

#[test]
fn a_malformed_file_is_refused() {
    let b = Broker::start();
    let api = Api::new(&b);
    let r = api.request("POST", "/api/definitions", Some("{\"exchanges\":"), &[]);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": "failed_to_parse_json"})
    );
    let r = api.request("POST", "/api/definitions", Some("[1]"), &[]);
    assert_eq!(r.status, 400);

    // A good queue with a bad exchange: refused. (RabbitMQ has declared the queue by
    // then; Warren validates the whole file first and changes nothing.)
    let q = unique("xb-bad-q");
    let x = unique("xb-bad-x");
    let file = json!({
        "queues": [{"name": q, "vhost": "/", "durable": false, "auto_delete": false, "arguments": {}}],
        "exchanges": [{"name": x, "vhost": "/", "type": "bogus", "durable": false,
                       "auto_delete": false, "internal": false, "arguments": {}}],
    });
    let r = api.post("/api/definitions", &file);
    assert_eq!(r.status, 400, "{}", r.body);
    let qp = format!("/api/queues/%2F/{}", enc(&q));
    if !b.is_external() {
        assert_eq!(api.get(&qp).status, 404, "a refused file changed nothing");
        assert!(r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("invalid exchange type 'bogus'"));
        // An inequivalent redeclare of an existing queue, after a new exchange.
        assert_eq!(api.put(&qp, &json!({"durable": true})).status, 201);
        let file = json!({
            "exchanges": [{"name": x, "vhost": "/", "type": "fanout", "durable": false,
                           "auto_delete": false, "internal": false, "arguments": {}}],
            "queues": [{"name": q, "vhost": "/", "durable": false, "auto_delete": false,
                        "arguments": {}}],
        });
        let r = api.post("/api/definitions", &file);
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(
            r.json()["reason"],
            format!("inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'false' but current is 'true'")
        );
        assert_eq!(
            api.get(&format!("/api/exchanges/%2F/{}", enc(&x))).status,
            404
        );
    }
    api.delete(&qp);
    api.delete(&format!("/api/exchanges/%2F/{}", enc(&x)));
}

/// The dashboard's (and RabbitMQ's) upload form: `multipart/form-data` with a `file`.
#[test]
fn a_form_upload_imports() {
    let b = Broker::start();
    let api = Api::new(&b);
    let x = unique("xb-form");
    let file = json!({"exchanges": [{"name": x, "vhost": "/", "type": "fanout", "durable": false,
                                     "auto_delete": false, "internal": false, "arguments": {}}]});
    let boundary = "xb-boundary-7d3";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"defs.json\"\r\n\
         Content-Type: application/json\r\n\r\n{file}\r\n--{boundary}--\r\n"
    );
    let auth = format!("Basic {}", support::api::base64(b"guest:guest"));
    let resp = ureq::post(&format!("{}/api/definitions", api.base))
        .set("authorization", &auth)
        .set(
            "content-type",
            &format!("multipart/form-data; boundary={boundary}"),
        )
        .send_string(&body);
    let status = match resp {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 204);
    let xp = format!("/api/exchanges/%2F/{}", enc(&x));
    assert_eq!(api.get(&xp).json()["type"], "fanout");
    assert_eq!(api.delete(&xp).status, 204);
}

/// The fuzz entry point (`warren::fuzzing::definitions`) on the fixture and on a few
/// hostile files: no panic, a refused file changes nothing, an export re-imports.
#[test]
fn fuzz_entry_point_holds_on_known_inputs() {
    for input in [
        FIXTURE,
        "",
        "{}",
        "[]",
        "{\"queues\": [{\"name\": \"q\", \"vhost\": \"/\"}, {\"name\": \"q\", \"vhost\": \"/\", \"durable\": true}]}",
        "{\"exchanges\": [{\"name\": \"amq.x\", \"vhost\": \"/\", \"type\": \"direct\"}]}",
        "{\"bindings\": [{\"source\": \"\", \"vhost\": \"/\", \"destination\": \"q\", \"destination_type\": \"queue\"}]}",
        "{\"vhosts\": [{\"name\": \"v\"}], \"queues\": [{\"name\": \"q\", \"vhost\": \"v\", \"arguments\": {\"x-queue-type\": \"quorum\"}}]}",
    ] {
        warren::fuzzing::definitions(input.as_bytes());
    }
}

mod generated {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn name() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!("a")),
            Just(json!("b")),
            Just(json!("")),
            Just(json!("amq.direct")),
            Just(json!("amq.x")),
            Just(json!(1)),
        ]
    }

    fn vhost() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!("/")),
            Just(json!("v1")),
            Just(json!("missing")),
            Just(Value::Null)
        ]
    }

    fn flag() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!(true)),
            Just(json!(false)),
            Just(json!("x")),
            Just(Value::Null)
        ]
    }

    fn args() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({})),
            Just(json!({"x-queue-type": "quorum"})),
            Just(json!({"x-max-length": 3})),
            Just(json!({"x-max-length": "three"})),
            Just(json!({"alternate-exchange": "a"})),
            Just(json!([1])),
        ]
    }

    fn file() -> impl Strategy<Value = Value> {
        let exchange = (name(), vhost(), prop_oneof![Just(json!("direct")), Just(json!("fanout")), Just(json!("bogus"))], flag(), flag(), args())
            .prop_map(|(n, v, t, d, a, x)| json!({"name": n, "vhost": v, "type": t, "durable": d, "auto_delete": a, "arguments": x}));
        let queue = (name(), vhost(), flag(), flag(), args())
            .prop_map(|(n, v, d, a, x)| json!({"name": n, "vhost": v, "durable": d, "auto_delete": a, "arguments": x}));
        let binding = (name(), name(), vhost(), prop_oneof![Just(json!("queue")), Just(json!("exchange")), Just(json!("x"))], args())
            .prop_map(|(s, d, v, t, x)| json!({"source": s, "destination": d, "vhost": v, "destination_type": t, "routing_key": "k", "arguments": x}));
        (
            prop::collection::vec(exchange, 0..4),
            prop::collection::vec(queue, 0..4),
            prop::collection::vec(binding, 0..4),
            prop::collection::vec(
                prop_oneof![Just(json!({"name": "v1"})), Just(json!({"name": 5}))],
                0..2,
            ),
        )
            .prop_map(
                |(x, q, b, v)| json!({"vhosts": v, "exchanges": x, "queues": q, "bindings": b}),
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Generated files near the valid ones: each is accepted, or refused with a 4xx
        /// that changes nothing, and an accepted one's export imports again.
        #[test]
        fn files_apply_whole_or_not_at_all(f in file()) {
            warren::fuzzing::definitions(f.to_string().as_bytes());
        }
    }
}

// ----- users, permissions, topic permissions and limits (issue 11) ----------------------

/// Exported from RabbitMQ 3.10.8 (created there through its API, exported with
/// `GET /api/definitions`, trimmed to these objects, then deleted): users with hashes
/// (alice's password is "alice-pw", bob's "bob-pw", carol has none), tags, user limits,
/// regex permissions, a topic permission, vhost limits and a queue, exchange and binding.
const USERS_FIXTURE: &str = include_str!("data/rabbitmq-3.10-users.json");

/// Opens an AMQP connection as `user` into `vhost` on 127.0.0.1:`port`; the error's
/// text when refused.
fn login(port: u16, user: &str, pass: &str, vhost: &str) -> Result<(), String> {
    let uri = format!(
        "amqp://{}:{}@127.0.0.1:{port}/{}",
        enc(user),
        enc(pass),
        enc(vhost)
    );
    block_on(async {
        let c = step(
            "login",
            lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
        )
        .await
        .map_err(|e| format!("{e}"))?;
        let _ = c.close(200, "bye".into()).await;
        Ok(())
    })
}

/// The element of an export's `section` whose `key` is `value`.
fn entry(d: &Value, section: &str, key: &str, value: &str) -> Value {
    d[section]
        .as_array()
        .unwrap_or_else(|| panic!("{section} is not a list: {d}"))
        .iter()
        .find(|o| o[key] == value)
        .unwrap_or_else(|| panic!("no {key} '{value}' in {section}: {}", d[section]))
        .clone()
}

/// Removes the users fixture's objects (a Warren test broker goes away by itself;
/// RabbitMQ is shared).
fn remove_users_fixture(api: &Api) {
    for u in ["wt-defs-alice", "wt-defs-bob", "wt-defs-carol"] {
        api.delete(&format!("/api/users/{u}"));
    }
    api.delete("/api/vhosts/wt-defs-fx");
}

#[test]
fn a_rabbitmq_export_with_users_imports_and_they_log_in() {
    let b = Broker::start();
    let api = Api::new(&b);
    let r = api.request("POST", "/api/definitions", Some(USERS_FIXTURE), &[]);
    assert_eq!(r.status, 204, "{}", r.body);

    // The users log in with the passwords they had in RabbitMQ.
    login(b.port, "wt-defs-alice", "alice-pw", "wt-defs-fx").unwrap();
    login(b.port, "wt-defs-bob", "bob-pw", "wt-defs-fx").unwrap();
    login(b.port, "wt-defs-bob", "bob-pw", "/").unwrap();
    assert!(login(b.port, "wt-defs-alice", "bob-pw", "wt-defs-fx").is_err());
    // carol has no password: no PLAIN login at all.
    assert!(login(b.port, "wt-defs-carol", "", "wt-defs-fx").is_err());
    // alice has no permissions in "/".
    assert!(login(b.port, "wt-defs-alice", "alice-pw", "/").is_err());

    // The regex permissions hold: alice may configure "alice." names only.
    let refused = block_on(async {
        let uri = format!(
            "amqp://wt-defs-alice:alice-pw@127.0.0.1:{}/wt-defs-fx",
            b.port
        );
        let conn = connect(&uri).await;
        let ch = step("channel", conn.create_channel()).await.unwrap();
        step(
            "allowed declare",
            ch.queue_declare(
                "alice.q".into(),
                lapin::options::QueueDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            ),
        )
        .await
        .expect("alice may declare alice.q");
        let ch = step("channel", conn.create_channel()).await.unwrap();
        let r = step(
            "refused declare",
            ch.queue_declare(
                "bob.q".into(),
                lapin::options::QueueDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            ),
        )
        .await;
        expect_amqp_error(r, 403)
    });
    assert_eq!(
        refused,
        "ACCESS_REFUSED - access to queue 'bob.q' in vhost 'wt-defs-fx' refused for user 'wt-defs-alice'"
    );
    api.delete("/api/queues/wt-defs-fx/alice.q");

    // The export carries them as RabbitMQ's does.
    let fixture: Value = serde_json::from_str(USERS_FIXTURE).unwrap();
    let d = api.get("/api/definitions").json();
    for name in ["wt-defs-alice", "wt-defs-bob", "wt-defs-carol"] {
        assert_eq!(
            entry(&d, "users", "name", name),
            entry(&fixture, "users", "name", name),
            "user {name}"
        );
    }
    for p in fixture["permissions"].as_array().unwrap() {
        assert!(
            d["permissions"].as_array().unwrap().contains(p),
            "{p} missing from {}",
            d["permissions"]
        );
    }
    assert_eq!(
        entry(&d, "topic_permissions", "user", "wt-defs-alice"),
        fixture["topic_permissions"][0]
    );
    assert_eq!(
        entry(&d, "parameters", "vhost", "wt-defs-fx"),
        fixture["parameters"][0]
    );
    let fx = api.get("/api/queues/wt-defs-fx/fx-q");
    assert_eq!(fx.status, 200, "{}", fx.body);

    // Importing a user that exists replaces its hash and tags (as RabbitMQ): alice
    // gets bob's hash, and keeps her limits where the file gives none.
    let bob = entry(&fixture, "users", "name", "wt-defs-bob");
    let file = json!({"users": [{"name": "wt-defs-alice", "password_hash": bob["password_hash"],
                                 "hashing_algorithm": "rabbit_password_hashing_sha256",
                                 "tags": "monitoring"}]});
    assert_eq!(api.post("/api/definitions", &file).status, 204);
    login(b.port, "wt-defs-alice", "bob-pw", "wt-defs-fx").unwrap();
    assert!(login(b.port, "wt-defs-alice", "alice-pw", "wt-defs-fx").is_err());
    let alice = entry(
        &api.get("/api/definitions").json(),
        "users",
        "name",
        "wt-defs-alice",
    );
    assert_eq!(alice["tags"], json!(["monitoring"]));
    assert_eq!(
        alice["limits"],
        json!({"max-channels": 10, "max-connections": 5})
    );

    // Importing the fixture again restores it.
    let r = api.request("POST", "/api/definitions", Some(USERS_FIXTURE), &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    login(b.port, "wt-defs-alice", "alice-pw", "wt-defs-fx").unwrap();

    remove_users_fixture(&api);
}

/// Bad users, permissions and limits are refused with a 400 naming what is wrong, and
/// nothing of the file is applied (RabbitMQ applies what came before the bad entry;
/// Warren checks the whole file first).
#[test]
fn bad_users_permissions_and_limits_are_refused_whole() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("defs-bad");
    let other = unique("defs-bad-hash");
    // RabbitMQ is shared: what it applied of a refused file goes, even on failure.
    struct Cleanup<'a>(&'a Api, [String; 2]);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            for u in &self.1 {
                self.0.delete(&format!("/api/users/{}", enc(u)));
            }
        }
    }
    let _cleanup = Cleanup(&api, [u.clone(), other.clone()]);
    let good_user = json!({"name": u, "password": "pw", "tags": "management"});
    let hash = "n7PUymh/8EPGsQNEUkfPLwYFoV5BPu1SEya5muRFCmX4Flhw";
    // (file, reason, whether RabbitMQ 3.10 refuses it too)
    for (bad, reason, rabbit_refuses) in [
        (
            json!({"permissions": [{"user": u, "vhost": "/", "configure": "(", "write": "", "read": ""}]}),
            format!("permission of user '{u}' in vhost '/': 'configure' is not a valid regular expression"),
            true,
        ),
        (
            json!({"topic_permissions": [{"user": u, "vhost": "/", "exchange": "amq.topic",
                                          "write": "[", "read": ""}]}),
            format!("topic permission of user '{u}' in vhost '/' for exchange 'amq.topic': 'write' is not a valid regular expression"),
            true,
        ),
        (
            // RabbitMQ stores a hash of any algorithm name (and then no login works).
            json!({"users": [{"name": other, "tags": "", "password_hash": hash,
                              "hashing_algorithm": "rabbit_password_hashing_foo"}]}),
            format!("user '{other}': unknown hashing_algorithm 'rabbit_password_hashing_foo'"),
            false,
        ),
        (
            json!({"users": [{"name": other, "tags": "", "password_hash": "!!!notbase64"}]}),
            format!("user '{other}': malformed password_hash: not base64"),
            true,
        ),
        (
            json!({"permissions": [{"user": "wt-defs-nobody", "vhost": "/", "configure": ".*",
                                    "write": ".*", "read": ".*"}]}),
            "permission of user 'wt-defs-nobody' in vhost '/': no such user 'wt-defs-nobody'".to_owned(),
            true,
        ),
        (
            json!({"permissions": [{"user": u, "vhost": "wt-defs-novh", "configure": ".*",
                                    "write": ".*", "read": ".*"}]}),
            format!("permission of user '{u}' in vhost 'wt-defs-novh': no such vhost 'wt-defs-novh'"),
            true,
        ),
        (
            json!({"parameters": [{"vhost": "/", "component": "vhost-limits", "name": "limits",
                                   "value": {"max-queues": "x"}}]}),
            "parameter 'vhost-limits' of vhost '/': limit 'max-queues' must be an integer".to_owned(),
            true,
        ),
    ] {
        if b.is_external() && !rabbit_refuses {
            continue;
        }
        let mut file = bad.as_object().unwrap().clone();
        file.insert("users".into(), {
            let mut users = vec![good_user.clone()];
            users.extend(bad["users"].as_array().cloned().unwrap_or_default());
            json!(users)
        });
        let r = api.post("/api/definitions", &Value::Object(file));
        assert_eq!(r.status, 400, "{reason}: {}", r.body);
        if !b.is_external() {
            let got = r.json()["reason"].as_str().unwrap_or_default().to_owned();
            assert!(got.starts_with(&reason), "{got:?} does not start with {reason:?}");
            // The good user before the bad entry was not created.
            assert!(login(b.port, &u, "pw", "/").is_err(), "{reason}: half applied");
            assert_eq!(api.get(&format!("/api/users/{}", enc(&u))).status, 404);
        }
    }
}

/// A user exported with RabbitMQ's other hashing module (`rabbit_password_hashing_sha512`,
/// a node configured with `password_hashing_module`) imports, logs in, and is exported
/// with its algorithm.
#[test]
fn a_sha512_hash_imports_and_logs_in() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("defs-512");
    let salt = [0x5a, 0x11, 0x7e, 0x02];
    let mut salted = salt.to_vec();
    salted.extend_from_slice(b"pw-512");
    let mut raw = salt.to_vec();
    raw.extend_from_slice(&warren::auth::hash::sha512(&salted));
    let hash = support::api::base64(&raw);
    let user = json!({"name": u, "password_hash": hash,
                      "hashing_algorithm": "rabbit_password_hashing_sha512", "tags": ["management"],
                      "limits": {}});
    let file = json!({"users": [user],
                      "permissions": [{"user": u, "vhost": "/", "configure": "", "write": "", "read": ""}]});
    let r = api.post("/api/definitions", &file);
    assert_eq!(r.status, 204, "{}", r.body);
    login(b.port, &u, "pw-512", "/").unwrap();
    assert!(login(b.port, &u, "pw-256", "/").is_err());
    assert_eq!(
        entry(&api.get("/api/definitions").json(), "users", "name", &u),
        user
    );
    assert_eq!(api.delete(&format!("/api/users/{}", enc(&u))).status, 204);
}

/// A vhost of a file gets the file's description and tags, also when it exists, and a
/// bare name clears them (RabbitMQ 3.10's put_vhost); Warren's export carries them so
/// that they survive a round trip (RabbitMQ 3.10 exports the name only).
#[test]
fn vhost_description_and_tags_import_as_rabbitmq() {
    let b = Broker::start();
    let api = Api::new(&b);
    let vh = unique("defs-meta");
    let v = format!("/api/vhosts/{}", enc(&vh));
    let r = api.post(
        "/api/definitions",
        &json!({"vhosts": [{"name": vh, "description": "first", "tags": "a,b"}]}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let got = api.get(&v).json();
    assert_eq!(
        (&got["description"], &got["tags"]),
        (&json!("first"), &json!(["a", "b"]))
    );
    let r = api.post(
        "/api/definitions",
        &json!({"vhosts": [{"name": vh, "metadata": {"description": "second", "tags": ["c"]}}]}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let got = api.get(&v).json();
    assert_eq!(
        (&got["description"], &got["tags"]),
        (&json!("second"), &json!(["c"]))
    );
    if !b.is_external() {
        let d = api.get("/api/definitions").json();
        assert_eq!(
            entry(&d, "vhosts", "name", &vh),
            json!({"name": vh, "description": "second", "tags": ["c"]})
        );
    }
    assert_eq!(
        api.post("/api/definitions", &json!({"vhosts": [{"name": vh}]}))
            .status,
        204
    );
    let got = api.get(&v).json();
    assert_eq!(
        (&got["description"], &got["tags"]),
        (&json!(""), &json!([]))
    );
    assert_eq!(api.delete(&v).status, 204);
}

/// RabbitMQ's import checks the queues it adds against the max-queues a vhost has
/// before the import (a limit in the same file does not refuse the file's queues), and
/// refuses the whole file when they do not fit.
#[test]
fn vhost_queue_limits_are_checked_before_the_import() {
    let b = Broker::start();
    let api = Api::new(&b);
    let vh = unique("defs-lim");
    let queue = |n: &str| json!({"name": n, "vhost": vh, "durable": true, "auto_delete": false, "arguments": {}});
    let file = json!({
        "vhosts": [{"name": vh}],
        "parameters": [{"vhost": vh, "component": "vhost-limits", "name": "limits",
                        "value": {"max-queues": 1}}],
        "queues": [queue("q1"), queue("q2")],
    });
    let r = api.post("/api/definitions", &file);
    assert_eq!(r.status, 204, "{}", r.body);
    let v = enc(&vh);
    assert_eq!(api.get(&format!("/api/queues/{v}/q2")).status, 200);
    assert_eq!(
        api.get(&format!("/api/vhost-limits/{v}")).json()[0]["value"],
        json!({"max-queues": 1})
    );
    let r = api.post(
        "/api/definitions",
        &json!({"queues": [queue("q1"), queue("q3"), queue("q4")]}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    if !b.is_external() {
        assert_eq!(
            r.json()["reason"],
            format!("Adding 2 queue(s) to virtual host \"{vh}\" would exceed the limit of 1 queue(s). This virtual host currently has 2 queue(s) defined. Import aborted!")
        );
    }
    assert_eq!(api.get(&format!("/api/queues/{v}/q3")).status, 404);
    assert_eq!(api.delete(&format!("/api/vhosts/{v}")).status, 204);
}

/// A per-vhost file's `vhost-limits` parameter applies to the path's vhost; users in it
/// are not imported (RabbitMQ's per-vhost import has parameters, policies, queues,
/// exchanges and bindings only); the per-vhost export names the vhost in parameters.
#[test]
fn per_vhost_files_carry_vhost_limits() {
    let b = Broker::start();
    let api = Api::new(&b);
    let vh = unique("defs-pv");
    let u = unique("defs-pv-user");
    let v = enc(&vh);
    assert_eq!(api.put(&format!("/api/vhosts/{v}"), &json!({})).status, 201);
    let r = api.post(
        &format!("/api/definitions/{v}"),
        &json!({"parameters": [{"component": "vhost-limits", "name": "limits",
                                "value": {"max-connections": 4}}],
                "users": [{"name": u, "password": "x", "tags": ""}]}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        api.get(&format!("/api/vhost-limits/{v}")).json(),
        json!([{"vhost": vh, "value": {"max-connections": 4}}])
    );
    assert_eq!(api.get(&format!("/api/users/{}", enc(&u))).status, 404);
    let d = api.get(&format!("/api/definitions/{v}")).json();
    assert_eq!(
        d["parameters"],
        json!([{"value": {"max-connections": 4}, "vhost": vh,
                "component": "vhost-limits", "name": "limits"}])
    );
    assert_eq!(api.delete(&format!("/api/vhosts/{v}")).status, 204);
}

/// Policies and operator policies (which RabbitMQ 3.10 exports as `operator_policy`
/// parameters) import in a per-vhost file, act on the file's queue, and export back in
/// RabbitMQ's shapes; a policy that fails validation refuses the whole file.
#[test]
fn policies_and_operator_policies_import_and_export() {
    let b = Broker::start();
    let api = Api::new(&b);
    let vh = unique("defs-pol");
    let v = enc(&vh);
    assert_eq!(api.put(&format!("/api/vhosts/{v}"), &json!({})).status, 201);
    let bad = api.post(
        &format!("/api/definitions/{v}"),
        &json!({"policies": [{"name": "bad", "pattern": ".*", "definition": {"message-ttl": -1}}],
                "queues": [{"name": "untouched", "durable": true, "auto_delete": false, "arguments": {}}]}),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(api.get(&format!("/api/queues/{v}/untouched")).status, 404);
    let policy = json!({"vhost": vh, "name": "ttl", "pattern": "^pq", "apply-to": "queues",
                        "definition": {"message-ttl": 60000, "max-length": 10}, "priority": 2});
    let op = json!({"value": {"pattern": "^pq", "definition": {"max-length": 5},
                              "priority": 0, "apply-to": "all"},
                    "vhost": vh, "component": "operator_policy", "name": "cap"});
    let r = api.post(
        &format!("/api/definitions/{v}"),
        &json!({"policies": [policy], "parameters": [op],
                "queues": [{"name": "pq1", "durable": true, "auto_delete": false, "arguments": {}}]}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(api.get(&format!("/api/policies/{v}/ttl")).json(), policy);
    assert_eq!(
        api.get(&format!("/api/operator-policies/{v}/cap")).json(),
        json!({"vhost": vh, "name": "cap", "pattern": "^pq", "apply-to": "all",
               "definition": {"max-length": 5}, "priority": 0})
    );
    let qpath = format!("/api/queues/{v}/pq1");
    let want = json!({"max-length": 5, "message-ttl": 60000});
    assert!(
        wait_until(std::time::Duration::from_secs(15), || api
            .get(&qpath)
            .json()
            .get("effective_policy_definition")
            == Some(&want)),
        "{}",
        api.get(&qpath).body
    );
    for path in [
        format!("/api/definitions/{v}"),
        "/api/definitions".to_string(),
    ] {
        let d = api.get(&path).json();
        let mine = |section: &str| -> Vec<Value> {
            d[section]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["vhost"] == vh.as_str())
                .cloned()
                .collect()
        };
        assert_eq!(mine("policies"), vec![policy.clone()], "{path}");
        assert_eq!(mine("parameters"), vec![op.clone()], "{path}");
    }
    assert_eq!(api.delete(&format!("/api/vhosts/{v}")).status, 204);
}

/// Shovels, federation upstreams and global parameters (cluster_name) are skipped with
/// a log line, the rest of the file applies (policies too, since issue 12).
#[test]
fn unsupported_sections_are_skipped_with_a_log_line() {
    let Some(b) = Broker::spawn_own(&[]) else {
        return;
    };
    let api = Api::new(&b);
    let x = unique("defs-skip");
    let file = json!({
        "parameters": [{"vhost": "/", "component": "shovel", "name": "s1", "value": {"src-uri": "amqp://"}}],
        "global_parameters": [{"name": "cluster_name", "value": "rabbit@elsewhere"}],
        "policies": [{"vhost": "/", "name": "p1", "pattern": ".*", "apply-to": "queues",
                      "definition": {"max-length": 1}, "priority": 0}],
        "exchanges": [{"name": x, "vhost": "/", "type": "fanout", "durable": false,
                       "auto_delete": false, "internal": false, "arguments": {}}],
    });
    let r = api.post("/api/definitions", &file);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        api.get(&format!("/api/exchanges/%2F/{}", enc(&x))).status,
        200
    );
    assert_eq!(api.get("/api/policies/%2F/p1").status, 200);
    for line in [
        "parameter 's1' of component 'shovel' of vhost '/' skipped",
        "global parameter 'cluster_name' skipped",
    ] {
        // The log reaches the test through a pipe, after the response.
        assert!(
            wait_until(STEP, || b.logs().contains(line)),
            "no '{line}' in the log:\n{}",
            b.logs()
        );
    }
}

/// RabbitMQ on this machine (127.0.0.1:5672 and :15672, guest/guest), or None when it
/// is not there (the round trips are then skipped, saying so).
fn rabbitmq() -> Option<Api> {
    use std::net::{SocketAddr, TcpStream};
    let up = [5672u16, 15672].iter().all(|p| {
        let a = SocketAddr::from(([127, 0, 0, 1], *p));
        TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1)).is_ok()
    });
    if !up {
        println!("skipped: no RabbitMQ on 127.0.0.1:5672/15672");
        return None;
    }
    Some(Api::at("http://127.0.0.1:15672", "guest", "guest"))
}

/// Deletes the round trip's users and vhost from RabbitMQ, even when the test fails.
struct RabbitCleanup<'a> {
    api: &'a Api,
    users: Vec<String>,
    vhost: String,
}

impl Drop for RabbitCleanup<'_> {
    fn drop(&mut self) {
        for u in &self.users {
            self.api.delete(&format!("/api/users/{}", enc(u)));
        }
        self.api
            .delete(&format!("/api/vhosts/{}", enc(&self.vhost)));
    }
}

/// The objects of an export that name one of `names` (as user, vhost or name), each
/// section sorted.
fn only(d: &Value, names: &[&str]) -> Value {
    let mine = |o: &Value| {
        ["name", "user", "vhost"]
            .iter()
            .any(|k| o[*k].as_str().is_some_and(|s| names.contains(&s)))
    };
    let mut out = serde_json::Map::new();
    for k in [
        "users",
        "vhosts",
        "permissions",
        "topic_permissions",
        "parameters",
    ] {
        let mut list: Vec<Value> = d[k]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| mine(o))
            .cloned()
            .collect();
        // The order of a section is not part of the format (RabbitMQ's is the table's).
        list.sort_by_key(|o| o.to_string());
        out.insert(k.into(), json!(list));
    }
    out.insert("rabbit_version".into(), d["rabbit_version"].clone());
    Value::Object(out)
}

/// Users made in RabbitMQ 3.10 log in to Warren after an export/import, and users made
/// in Warren log in to RabbitMQ after Warren's export is imported there, with the same
/// hashes, tags, limits, permissions and topic permissions on both sides.
#[test]
fn definitions_round_trip_with_rabbitmq() {
    let Some(w) = Broker::spawn_own(&[]) else {
        return;
    };
    let Some(rmq) = rabbitmq() else {
        return;
    };
    let warren = Api::new(&w);
    let vh = unique("defs-rt-vh");
    let from_rmq = unique("defs-rt-r");
    let from_warren = unique("defs-rt-w");
    let _cleanup = RabbitCleanup {
        api: &rmq,
        users: vec![from_rmq.clone(), from_warren.clone()],
        vhost: vh.clone(),
    };

    // RabbitMQ → Warren.
    let ok = |r: support::api::Resp| assert!(r.status < 300, "{}: {}", r.status, r.body);
    ok(rmq.put(&format!("/api/vhosts/{}", enc(&vh)), &json!({})));
    let u = enc(&from_rmq);
    ok(rmq.put(
        &format!("/api/users/{u}"),
        &json!({"password": "r-pw", "tags": "policymaker,x-tag"}),
    ));
    ok(rmq.put(
        &format!("/api/permissions/{}/{u}", enc(&vh)),
        &json!({"configure": "^r\\.", "write": "^(amq\\.topic|r\\..*)$", "read": ".*"}),
    ));
    ok(rmq.put(
        &format!("/api/topic-permissions/{}/{u}", enc(&vh)),
        &json!({"exchange": "amq.topic", "write": "^r\\.", "read": ".*"}),
    ));
    ok(rmq.put(
        &format!("/api/user-limits/{u}/max-channels"),
        &json!({"value": 7}),
    ));
    ok(rmq.put(
        &format!("/api/vhost-limits/{}/max-queues", enc(&vh)),
        &json!({"value": 9}),
    ));
    let exported = only(&rmq.get("/api/definitions").json(), &[&vh, &from_rmq]);
    let r = warren.post("/api/definitions", &exported);
    assert_eq!(r.status, 204, "{}: {exported}", r.body);
    login(w.port, &from_rmq, "r-pw", &vh).unwrap();
    assert!(login(w.port, &from_rmq, "wrong", &vh).is_err());
    let back = only(&warren.get("/api/definitions").json(), &[&vh, &from_rmq]);
    for k in ["users", "permissions", "topic_permissions", "parameters"] {
        assert_eq!(back[k], exported[k], "{k} differs in Warren's export");
    }

    // Warren → RabbitMQ.
    let file = json!({
        "users": [{"name": from_warren, "password": "w-pw", "tags": ["management", "y-tag"],
                   "limits": {"max-connections": 3}}],
        "permissions": [{"user": from_warren, "vhost": vh, "configure": "",
                         "write": "^w\\.", "read": "^w\\..*$"}],
        "topic_permissions": [{"user": from_warren, "vhost": vh, "exchange": "amq.topic",
                               "write": "^w\\.", "read": "^(w|public)\\."}],
    });
    let r = warren.post("/api/definitions", &file);
    assert_eq!(r.status, 204, "{}", r.body);
    login(w.port, &from_warren, "w-pw", &vh).unwrap();
    let exported = only(&warren.get("/api/definitions").json(), &[&from_warren]);
    let r = rmq.post("/api/definitions", &exported);
    assert_eq!(
        r.status, 204,
        "RabbitMQ refused Warren's export: {}",
        r.body
    );
    login(5672, &from_warren, "w-pw", &vh).unwrap();
    assert!(login(5672, &from_warren, "wrong", &vh).is_err());
    let there = only(&rmq.get("/api/definitions").json(), &[&from_warren]);
    for k in ["users", "permissions", "topic_permissions"] {
        assert_eq!(there[k], exported[k], "{k} differs in RabbitMQ's export");
    }
}
