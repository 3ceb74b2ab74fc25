//! The management API answers on the port the broker announces, with Basic auth.
mod support;

use support::api::Api;
use support::Broker;

#[test]
fn overview_needs_credentials_and_answers_with_them() {
    let b = Broker::start();
    let api = Api::new(&b);
    let r = api.get("/api/overview");
    assert_eq!(r.status, 200, "{}", r.body);
    let o = r.json();
    assert!(o["object_totals"]["queues"].is_u64(), "{o}");
    assert!(o["rabbitmq_version"].is_string(), "{o}");
    let bad = api.as_user("guest", "wrong").get("/api/overview");
    assert_eq!(bad.status, 401);
    assert!(
        bad.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic realm=")),
        "{:?}",
        bad.headers
    );
    assert_eq!(bad.json()["error"], "not_authorized");
}

/// A whole list longer than the broker renders at once comes in chunks (a batch per
/// loop turn) and still parses as one JSON array holding every queue; the connection
/// stays usable for the next request.
#[test]
fn a_long_whole_list_is_streamed_and_complete() {
    let Some(b) = Broker::spawn_own(&[]) else {
        return;
    };
    let api = Api::new(&b);
    let n = 1500;
    for i in 0..n {
        let r = api.put(
            &format!("/api/queues/%2F/long-{i:05}"),
            &serde_json::json!({}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = api.get("/api/queues?columns=name,messages");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("transfer-encoding"),
        Some("chunked"),
        "{:?}",
        r.headers
    );
    let all = r.json();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), n);
    assert_eq!(names[0], "long-00000");
    assert_eq!(names[n - 1], "long-01499");
    assert_eq!(
        all[0].as_object().unwrap().len(),
        2,
        "columns apply: {}",
        all[0]
    );
    // The same keep-alive agent goes on with a small answer.
    assert_eq!(api.get("/api/whoami").status, 200);
}

/// A queue's page draws its charts from the samples the broker keeps per queue
/// (RabbitMQ's `msg_rates_age`/`lengths_age` parameters): after three publishes, the
/// newest samples show them, and older ones what came before.
#[test]
fn a_queue_answers_its_chart_samples() {
    let Some(b) = Broker::spawn_own(&["--stats-interval", "1"]) else {
        return;
    };
    let api = Api::new(&b);
    assert_eq!(
        api.put("/api/queues/%2F/charted", &serde_json::json!({}))
            .status,
        201
    );
    for _ in 0..3 {
        let r = api.post(
            "/api/exchanges/%2F/amq.default/publish",
            &serde_json::json!({"properties": {}, "routing_key": "charted",
                "payload": "x", "payload_encoding": "string"}),
        );
        assert_eq!(r.json()["routed"], true);
    }
    let path =
        "/api/queues/%2F/charted?msg_rates_age=60&msg_rates_incr=1&lengths_age=60&lengths_incr=1";
    let mut last = serde_json::Value::Null;
    let ok = support::wait_until(std::time::Duration::from_secs(20), || {
        last = api.get(path).json();
        let newest = |v: &serde_json::Value| v["samples"][0]["sample"].as_u64();
        newest(&last["message_stats"]["publish_details"]) == Some(3)
            && newest(&last["messages_ready_details"]) == Some(3)
    });
    assert!(ok, "{last}");
    let samples = last["message_stats"]["publish_details"]["samples"]
        .as_array()
        .unwrap();
    assert_eq!(samples.len(), 61, "60 s at 1 s, both ends");
    let (t0, t1) = (
        samples[0]["timestamp"].as_u64().unwrap(),
        samples[1]["timestamp"].as_u64().unwrap(),
    );
    assert_eq!(t0 - t1, 1000, "newest first, 1 s apart");
}
