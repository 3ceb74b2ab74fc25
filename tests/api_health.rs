//! `/api/health/checks/...` and `/api/aliveness-test/{vhost}`: RabbitMQ's statuses and
//! bodies, on Warren and on RabbitMQ 3.10 alike (`WARREN_TEST_PORT=5672`), and the
//! alarm checks failing with 503 while a memory alarm is raised (Warren only: its flags
//! raise one).

mod support;

use serde_json::{json, Value};
use std::time::Duration;

use support::api::Api;
use support::{wait_until, Broker};

/// A polled answer's JSON, or Null for a non-200 or non-JSON one (a loaded RabbitMQ
/// sometimes answers a request with an error; polling just asks again).
fn polled(r: support::api::Resp) -> Value {
    if r.status != 200 {
        return Value::Null;
    }
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

#[test]
fn checks_pass_on_a_healthy_node() {
    let b = Broker::start();
    let api = Api::new(&b);
    for check in ["alarms", "local-alarms", "virtual-hosts"] {
        let r = api.get(&format!("/api/health/checks/{check}"));
        assert_eq!(r.status, 200, "{check}: {}", r.body);
        assert_eq!(r.json(), json!({"status": "ok"}), "{check}");
    }
    for check in ["node-is-quorum-critical", "node-is-mirror-sync-critical"] {
        let r = api.get(&format!("/api/health/checks/{check}"));
        assert_eq!(r.status, 200, "{check}: {}", r.body);
        assert_eq!(r.json()["status"], "ok", "{check}");
    }
    let r = api.request("POST", "/api/health/checks/alarms", Some("{}"), &[]);
    assert_eq!(r.status, 405);
}

#[test]
fn port_listener_knows_the_amqp_and_http_ports() {
    let b = Broker::start();
    let api = Api::new(&b);
    for port in [b.port, b.http_port] {
        let r = api.get(&format!("/api/health/checks/port-listener/{port}"));
        assert_eq!(r.status, 200, "{port}: {}", r.body);
        assert_eq!(r.json(), json!({"status": "ok", "port": port}));
    }
    // A port nothing listens on (the kernel's first ephemeral port is far above).
    let r = api.get("/api/health/checks/port-listener/1");
    assert_eq!(r.status, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["reason"], "No active listener");
    assert_eq!(v["missing"], 1);
    let ports: Vec<u64> = v["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(ports.contains(&u64::from(b.port)), "{v}");
    assert!(ports.contains(&u64::from(b.http_port)), "{v}");

    let r = api.get("/api/health/checks/port-listener/amqp");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": "bad_request", "reason": "Invalid port"})
    );
}

#[test]
fn protocol_listener_knows_amqp_and_http() {
    let b = Broker::start();
    let api = Api::new(&b);
    for (asked, name) in [("amqp", "amqp"), ("amqp091", "amqp"), ("http", "http")] {
        let r = api.get(&format!("/api/health/checks/protocol-listener/{asked}"));
        assert_eq!(r.status, 200, "{asked}: {}", r.body);
        assert_eq!(r.json(), json!({"status": "ok", "protocol": name}));
    }
    let r = api.get("/api/health/checks/protocol-listener/mqtt");
    assert_eq!(r.status, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (&v["status"], &v["reason"], &v["missing"]),
        (
            &json!("failed"),
            &json!("No active listener"),
            &json!("mqtt")
        )
    );
    let protocols = v["protocols"].as_array().expect("protocols");
    assert!(protocols.contains(&json!("amqp")), "{v}");
}

#[test]
fn aliveness_test_round_trips_a_message_and_404s_a_missing_vhost() {
    let b = Broker::start();
    let api = Api::new(&b);
    for _ in 0..2 {
        let r = api.get("/api/aliveness-test/%2F");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json(), json!({"status": "ok"}));
    }
    // It leaves its queue behind, empty, as RabbitMQ does.
    let q = api.get("/api/queues/%2F/aliveness-test");
    assert_eq!(q.status, 200, "{}", q.body);
    let q = q.json();
    assert_eq!(q["durable"], false);
    assert!(wait_until(Duration::from_secs(20), || {
        polled(api.get("/api/queues/%2F/aliveness-test"))["messages"] == 0
    }));

    let r = api.get("/api/aliveness-test/no-such-vhost");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );
    let r = api.request("PUT", "/api/aliveness-test/%2F", Some("{}"), &[]);
    assert_eq!(r.status, 405);
}

#[test]
fn alarm_checks_fail_with_503_during_a_memory_alarm() {
    let Some(b) = Broker::start_with(&["--memory-high-watermark", "0.0000001"]) else {
        return;
    };
    let api = Api::new(&b);
    let mut last = None;
    let raised = wait_until(Duration::from_secs(20), || {
        let r = api.get("/api/health/checks/alarms");
        let done = r.status == 503;
        last = Some(r);
        done
    });
    let r = last.expect("asked");
    assert!(raised, "no alarm: {} {}", r.status, r.body);
    let v = r.json();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["reason"], "There are alarms in effect in the cluster");
    assert_eq!(v["alarms"][0]["resource"], "memory", "{v}");
    assert!(v["alarms"][0]["node"].is_string(), "{v}");

    let r = api.get("/api/health/checks/local-alarms");
    assert_eq!(r.status, 503, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["reason"], "There are alarms in effect on the node");
    assert_eq!(v["alarms"][0]["resource"], "memory", "{v}");
    // The other checks do not depend on alarms.
    let r = api.get("/api/health/checks/virtual-hosts");
    assert_eq!(r.status, 200, "{}", r.body);
}
