//! `/api/queues` and the node-wide resources (`/api/overview`, whoami, vhosts, users,
//! permissions): statuses, bodies, field names and paging as RabbitMQ 3.10 answers
//! them. Every assertion holds against RabbitMQ too (`WARREN_TEST_PORT=5672`), whose
//! queue statistics lag a few seconds (each count is waited for) and which other suites
//! share (node-wide totals are exact only on our own broker).

mod support;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use serde_json::{json, Value};
use std::time::Duration;

use support::api::{enc, Api, Resp};
use support::{block_on, step, unique, wait_until, Broker};

/// RabbitMQ emits queue statistics every 5 s; allow a few rounds.
const STATS: Duration = Duration::from_secs(20);

/// A polled answer's JSON, or Null for a non-200 or non-JSON one (a loaded RabbitMQ
/// sometimes answers a request with an error; polling just asks again).
fn polled(r: support::api::Resp) -> Value {
    if r.status != 200 {
        return Value::Null;
    }
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

fn not_found() -> Value {
    json!({"error": "Object Not Found", "reason": "Not Found"})
}

fn bad_request(reason: &str) -> Value {
    json!({"error": "bad_request", "reason": reason})
}

fn qpath(name: &str) -> String {
    format!("/api/queues/%2F/{}", enc(name))
}

/// Deletes its queues when dropped, so a failing test leaves nothing behind in a
/// shared RabbitMQ.
struct Cleanup<'a> {
    api: &'a Api,
    queues: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for q in &self.queues {
            let _ = self.api.delete(&qpath(q));
        }
    }
}

/// Waits until GET of queue `name` shows `messages` (RabbitMQ's statistics lag; a
/// loaded RabbitMQ may also answer an odd request with an error, which is retried).
fn wait_messages(api: &Api, name: &str, messages: u64) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(STATS, || {
        let r = api.get(&qpath(name));
        last = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body));
        r.status == 200 && last["messages"] == messages
    });
    assert!(ok, "{name}: wanted {messages} messages: {last}");
    last
}

async fn publish(ch: &Channel, queue: &str, body: &str) {
    step(
        "publish",
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_content_type("text/plain".into()),
        ),
    )
    .await
    .expect("publish")
    .await
    .expect("published");
}

fn get(api: &Api, name: &str, body: Value) -> Resp {
    api.post(&format!("{}/get", qpath(name)), &body)
}

#[test]
fn put_declares_with_rabbitmqs_statuses_and_get_shows_the_fields() {
    let b = Broker::start();
    let api = Api::new(&b);
    let q = unique("cc-put");
    let bad = unique("cc-bad");
    let _cleanup = Cleanup {
        api: &api,
        queues: vec![q.clone(), bad.clone()],
    };
    let body = json!({"durable": true, "auto_delete": false, "arguments": {"x-max-length": 5}});
    let r = api.put(&qpath(&q), &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.put(&qpath(&q), &body);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = api.put(&qpath(&q), &json!({"durable": false}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json(),
        bad_request(&format!(
            "inequivalent arg 'durable' for queue '{q}' in vhost '/': \
             received 'false' but current is 'true'"
        ))
    );

    let r = api.put(&qpath("amq.cc-reserved"), &json!({}));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": "not_authorised", "reason": "Access refused."})
    );
    let r = api.request("PUT", &qpath(&bad), Some("nope"), &[]);
    assert_eq!((r.status, r.json()), (400, bad_request("not_json")));
    let r = api.put(&qpath(&bad), &json!({"arguments": {"x-max-length": "abc"}}));
    assert_eq!(r.status, 400, "{}", r.body);
    let reason = r.json()["reason"].as_str().unwrap_or("").to_owned();
    assert!(
        reason.starts_with(&format!(
            "invalid arg 'x-max-length' for queue '{bad}' in vhost '/'"
        )),
        "{reason}"
    );
    assert_eq!(
        api.get(&qpath(&bad)).status,
        404,
        "a refused PUT declares nothing"
    );
    let r = api.put(
        &format!("/api/queues/no-such-vhost/{}", enc(&bad)),
        &json!({}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": "not_found", "reason": "vhost_not_found"})
    );

    // One queue, with the fields tools read.
    let v = wait_messages(&api, &q, 0);
    assert_eq!(v["name"], q.as_str());
    assert_eq!(v["vhost"], "/");
    assert_eq!(
        (&v["durable"], &v["auto_delete"], &v["exclusive"]),
        (&json!(true), &json!(false), &json!(false))
    );
    assert_eq!(v["arguments"], json!({"x-max-length": 5}));
    assert_eq!(v["type"], "classic");
    assert_eq!(v["state"], "running");
    assert!(v["node"].is_string());
    for k in [
        "messages",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "memory",
        "message_bytes",
    ] {
        assert!(v[k].is_u64(), "{k}: {v}");
    }
    assert!(v["consumer_details"].is_array(), "{v}");
    assert!(v["messages_details"]["rate"].is_number(), "{v}");

    // Wrong methods, and 404s.
    for (method, path) in [
        ("POST", qpath(&q)),
        ("POST", "/api/queues".to_owned()),
        ("PUT", "/api/queues/%2F".to_owned()),
        ("GET", format!("{}/get", qpath(&q))),
        ("GET", format!("{}/contents", qpath(&q))),
    ] {
        let r = api.request(method, &path, None, &[]);
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
    }
    let r = api.delete(&qpath(&q));
    assert_eq!(r.status, 204, "{}", r.body);
    // (RabbitMQ answers `.../bindings` of a missing queue with its default binding,
    // 200; Warren's 404 is not asserted.)
    for path in [qpath(&q), "/api/queues/no-such-vhost".to_owned()] {
        let r = api.get(&path);
        assert_eq!((r.status, r.json()), (404, not_found()), "{path}");
    }
    let r = api.delete(&qpath(&q));
    assert_eq!((r.status, r.json()), (404, not_found()));
}

#[test]
fn lists_page_filter_sort_and_pick_columns() {
    let b = Broker::start();
    let api = Api::new(&b);
    let p = unique("cc-list");
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| format!("{p}-{s}")).collect();
    let _cleanup = Cleanup {
        api: &api,
        queues: names.clone(),
    };
    for n in &names {
        assert_eq!(api.put(&qpath(n), &json!({})).status, 201);
    }
    block_on(async {
        let conn = b.connect().await;
        let ch = step("channel", conn.create_channel()).await.unwrap();
        for (n, count) in names.iter().zip([2, 0, 1]) {
            for i in 0..count {
                publish(&ch, n, &format!("m{i}")).await;
            }
        }
        let _ = conn.close(200, "done".into()).await;
    });
    for (n, count) in names.iter().zip([2, 0, 1]) {
        wait_messages(&api, n, count);
    }
    let page = |q: &str| {
        let r = api.get(&format!("/api/queues?{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        r.json()
    };
    let item_names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };

    let v = page(&format!("page=1&page_size=2&name={p}&sort=name"));
    assert_eq!(item_names(&v), names[..2].to_vec());
    assert_eq!(
        (
            &v["page"],
            &v["page_size"],
            &v["page_count"],
            &v["filtered_count"],
            &v["item_count"]
        ),
        (&json!(1), &json!(2), &json!(2), &json!(3), &json!(2))
    );
    assert!(v["total_count"].as_u64().unwrap_or(0) >= 3, "{v}");
    let v = page(&format!("page=2&page_size=2&name={p}&sort=name"));
    assert_eq!(item_names(&v), names[2..].to_vec());
    assert_eq!(v["item_count"], 1);

    let re = format!("^{p}-(a|c)$");
    let v = page(&format!("page=1&use_regex=true&name={}", enc(&re)));
    assert_eq!(v["filtered_count"], 2, "{v}");
    let v = page(&format!("page=1&name={p}&sort=messages&sort_reverse=true"));
    assert_eq!(
        item_names(&v),
        vec![names[0].clone(), names[2].clone(), names[1].clone()]
    );
    let v = page(&format!("page=1&name={p}&sort=name&columns=name,messages"));
    assert_eq!(v["items"][0], json!({"name": names[0], "messages": 2}));
    let v = page("page=1&name=cc-no-such-queue-anywhere");
    assert_eq!(
        (
            &v["filtered_count"],
            &v["item_count"],
            &v["page_count"],
            &v["items"]
        ),
        (&json!(0), &json!(0), &json!(0), &json!([]))
    );

    // Without `page`: a plain list, all vhosts or one.
    let all = api.get("/api/queues").json();
    for list in [all, api.get("/api/queues/%2F").json()] {
        let found: Vec<&Value> = list
            .as_array()
            .expect("a list")
            .iter()
            .filter(|q| q["name"].as_str().is_some_and(|n| n.starts_with(&p)))
            .collect();
        assert_eq!(found.len(), 3);
    }

    // The paging errors.
    let err = |q: &str| {
        let r = api.get(&format!("/api/queues?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        r.json()
    };
    assert_eq!(
        err("page=0"),
        json!({"error": "invalid_pagination_parameters",
               "reason": "Invalid pagination parameters: page number 0, page size undefined"})
    );
    assert_eq!(
        err("page=1&page_size=501"),
        json!({"error": "invalid_pagination_parameters",
               "reason": "Invalid pagination parameters: page number 1, page size 501"})
    );
    assert_eq!(
        err("page=abc"),
        bad_request("Pagination parameters are invalid")
    );
    assert_eq!(
        err(&format!("page=3&page_size=2&name={p}")),
        json!({"error": "page_out_of_range",
               "reason": "Page out of range, page: 3 page size: 2, len: 3"})
    );
    assert_eq!(
        err("page=1&use_regex=true&name=%28"),
        bad_request("Pagination parameters are invalid")
    );

    // A queue's bindings: the default exchange's implicit one.
    let r = api.get(&format!("{}/bindings", qpath(&names[0])));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!([{"source": "", "vhost": "/", "destination": names[0],
                "destination_type": "queue", "routing_key": names[0], "arguments": {},
                "properties_key": names[0]}])
    );
    for n in &names {
        assert_eq!(api.delete(&qpath(n)).status, 204);
    }
}

#[test]
fn conditional_delete_purge_and_get_with_each_ackmode() {
    let b = Broker::start();
    let api = Api::new(&b);
    let q = unique("cc-get");
    let busy = unique("cc-busy");
    let _cleanup = Cleanup {
        api: &api,
        queues: vec![q.clone(), busy.clone()],
    };
    assert_eq!(api.put(&qpath(&q), &json!({})).status, 201);
    assert_eq!(api.put(&qpath(&busy), &json!({})).status, 201);
    block_on(async {
        let conn = b.connect().await;
        let ch = step("channel", conn.create_channel()).await.unwrap();
        for body in ["m1", "m2", "m3"] {
            publish(&ch, &q, body).await;
        }
        let _consumer = step(
            "consume",
            ch.basic_consume(
                busy.as_str().into(),
                "cc-busy-tag".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        assert!(wait_until(STATS, || polled(api.get(&qpath(&busy)))
            ["consumers"]
            == 1));
        let r = api.delete(&format!("{}?if-unused=true", qpath(&busy)));
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(
            r.json(),
            bad_request(&format!("queue '{busy}' in vhost '/' in use"))
        );
        let _ = conn.close(200, "done".into()).await;
    });
    assert!(wait_until(STATS, || api
        .delete(&format!("{}?if-unused=true", qpath(&busy)))
        .status
        == 204));

    wait_messages(&api, &q, 3);
    let r = api.delete(&format!("{}?if-empty=true", qpath(&q)));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json(),
        bad_request(&format!("queue '{q}' in vhost '/' not empty"))
    );

    // ack_requeue_true: taken and put back, truncated, with the remaining count.
    let r = get(
        &api,
        &q,
        json!({"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.json();
    assert_eq!(got.as_array().map(Vec::len), Some(2), "{got}");
    assert_eq!(
        got[0],
        json!({"payload_bytes": 2, "redelivered": false, "exchange": "", "routing_key": q,
               "message_count": 2, "properties": {"content_type": "text/plain"},
               "payload": "m", "payload_encoding": "string"})
    );
    assert_eq!(got[1]["message_count"], 1);
    // reject_requeue_true, base64: the same first message, now redelivered.
    let got = get(
        &api,
        &q,
        json!({"count": 1, "ackmode": "reject_requeue_true", "encoding": "base64"}),
    )
    .json();
    assert_eq!(
        (
            &got[0]["payload"],
            &got[0]["payload_encoding"],
            &got[0]["redelivered"]
        ),
        (&json!("bTE="), &json!("base64"), &json!(true))
    );
    assert_eq!(got[0]["message_count"], 2);
    // ack_requeue_false and reject_requeue_false take them for good.
    let got = get(
        &api,
        &q,
        json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}),
    )
    .json();
    assert_eq!(
        (&got[0]["payload"], &got[0]["redelivered"]),
        (&json!("m1"), &json!(true))
    );
    let got = get(
        &api,
        &q,
        json!({"count": 1, "ackmode": "reject_requeue_false", "encoding": "auto"}),
    )
    .json();
    assert_eq!(got[0]["payload"], "m2");
    wait_messages(&api, &q, 1);

    // The body's errors.
    for (body, reason) in [
        (
            json!({"ackmode": "ack_requeue_false", "encoding": "auto"}),
            "[{key_missing,count}]",
        ),
        (
            json!({"count": 1, "encoding": "auto"}),
            "[{key_missing,ackmode}]",
        ),
        (
            json!({"count": 1, "ackmode": "ack_requeue_false"}),
            "[{key_missing,encoding}]",
        ),
        (
            json!({}),
            "[{key_missing,ackmode},{key_missing,count},{key_missing,encoding}]",
        ),
        (
            json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "hex"}),
            "Unsupported encoding. Please use auto or base64.",
        ),
    ] {
        let r = get(&api, &q, body);
        assert_eq!((r.status, r.json()), (400, bad_request(reason)));
    }
    wait_messages(&api, &q, 1);

    // Purge, then the queue is empty and if-empty deletes.
    let r = api.delete(&format!("{}/contents", qpath(&q)));
    assert_eq!(r.status, 204, "{}", r.body);
    wait_messages(&api, &q, 0);
    let got = get(
        &api,
        &q,
        json!({"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"}),
    );
    assert_eq!((got.status, got.json()), (200, json!([])));
    let r = api.delete(&format!("{}?if-empty=true", qpath(&q)));
    assert_eq!(r.status, 204, "{}", r.body);
    let r = get(
        &api,
        &q,
        json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
    );
    assert_eq!(
        (r.status, r.json()),
        (
            404,
            json!({"error": "not_found",
                   "reason": format!("NOT_FOUND - no queue '{q}' in vhost '/'")})
        )
    );
    let r = api.delete(&format!("{}/contents", qpath(&q)));
    assert_eq!((r.status, r.json()), (404, not_found()));
}

#[test]
fn overview_totals_follow_what_a_client_did() {
    let b = Broker::start();
    let api = Api::new(&b);
    let q = unique("cc-ov");
    let qc = unique("cc-ov-consumed");
    let _cleanup = Cleanup {
        api: &api,
        queues: vec![q.clone(), qc.clone()],
    };
    let own = !b.is_external();
    block_on(async {
        let conn = b.connect().await;
        let ch = step("channel", conn.create_channel()).await.unwrap();
        for n in [&q, &qc] {
            step(
                "declare",
                ch.queue_declare(n.as_str().into(), Default::default(), FieldTable::default()),
            )
            .await
            .unwrap();
        }
        for i in 0..4 {
            publish(&ch, &q, &format!("m{i}")).await;
        }
        let _consumer = step(
            "consume",
            ch.basic_consume(
                qc.as_str().into(),
                "cc-ov-tag".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        wait_messages(&api, &q, 4);
        let mut o = Value::Null;
        let ok = wait_until(STATS, || {
            o = polled(api.get("/api/overview"));
            let t = &o["object_totals"];
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            let m = |k: &str| o["queue_totals"][k].as_u64().unwrap_or(0);
            if own {
                n("connections") == 1
                    && n("channels") == 1
                    && n("consumers") == 1
                    && n("queues") == 2
                    && m("messages") == 4
                    && m("messages_ready") == 4
                    && m("messages_unacknowledged") == 0
            } else {
                n("connections") >= 1
                    && n("channels") >= 1
                    && n("consumers") >= 1
                    && n("queues") >= 2
                    && m("messages") >= 4
            }
        });
        assert!(ok, "{o}");
        assert!(
            o["object_totals"]["exchanges"].as_u64().unwrap_or(0) >= 6,
            "{o}"
        );
        for k in [
            "rabbitmq_version",
            "management_version",
            "node",
            "cluster_name",
        ] {
            assert!(o[k].is_string(), "{k}: {o}");
        }
        assert!(o["listeners"].as_array().is_some_and(|l| l
            .iter()
            .any(|l| l["protocol"] == "amqp" && l["port"] == b.port)));
        let _ = conn.close(200, "done".into()).await;
    });
    for n in [&q, &qc] {
        assert_eq!(api.delete(&qpath(n)).status, 204);
    }
}

#[test]
fn whoami_vhosts_users_and_permissions() {
    let b = Broker::start();
    let api = Api::new(&b);
    assert_eq!(
        api.get("/api/whoami").json(),
        json!({"name": "guest", "tags": ["administrator"]})
    );
    let vhosts = api.get("/api/vhosts").json();
    let root = vhosts
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "/"))
        .expect("vhost /");
    assert_eq!(root["tracing"], false);
    let one = api.get("/api/vhosts/%2F");
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["name"], "/");

    let users = api.get("/api/users").json();
    let guest = users
        .as_array()
        .and_then(|l| l.iter().find(|u| u["name"] == "guest"))
        .expect("guest");
    assert_eq!(guest["tags"], json!(["administrator"]));
    assert_eq!(guest["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert_eq!(guest["limits"], json!({}));
    let one = api.get("/api/users/guest");
    assert_eq!((one.status, &one.json()["name"]), (200, &json!("guest")));

    let perms = api.get("/api/permissions").json();
    assert!(
        perms.as_array().is_some_and(|l| l.contains(&json!({
            "user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"
        }))),
        "{perms}"
    );
    for path in ["/api/users/cc-no-such-user", "/api/vhosts/cc-no-such-vhost"] {
        let r = api.get(path);
        assert_eq!((r.status, r.json()), (404, not_found()), "{path}");
    }
    for path in ["/api/whoami", "/api/overview"] {
        let r = api.request("POST", path, Some("{}"), &[]);
        assert_eq!(r.status, 405, "{path}");
    }
}
