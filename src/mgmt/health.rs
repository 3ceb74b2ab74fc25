//! Health checks: `/api/health/checks/{alarms, local-alarms, port-listener/{port},
//! protocol-listener/{protocol}, virtual-hosts, node-is-quorum-critical, node-is-mirror-sync-critical}` and
//! `/api/aliveness-test/{vhost}`, with RabbitMQ 3.10's bodies: 200 `{"status":"ok"}`,
//! 503 `{"status":"failed","reason":...}` plus the check's details otherwise.

use bytes::Bytes;
use serde_json::{json, Value};

use super::{access, method_not_allowed, vhost, ApiError, ApiResult, Caller};
use crate::auth::{Permission, Resource};
use crate::broker::QueueDecl;
use crate::http::{Request, Response};
use crate::server::Server;

/// The queue the aliveness test declares and leaves behind, as RabbitMQ does.
const ALIVENESS_QUEUE: &str = "aliveness-test";

pub fn route(
    server: &mut Server,
    caller: &Caller,
    req: &Request,
    segs: &[String],
) -> Option<ApiResult> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = req.method == "GET" || req.method == "HEAD";
    let r = match s.as_slice() {
        ["health", "checks", "alarms"] if get => {
            Ok(alarms(server, "There are alarms in effect in the cluster"))
        }
        ["health", "checks", "local-alarms"] if get => {
            Ok(alarms(server, "There are alarms in effect on the node"))
        }
        ["health", "checks", "port-listener", port] if get => port_listener(server, port),
        ["health", "checks", "protocol-listener", proto] if get => {
            Ok(protocol_listener(server, proto))
        }
        // Every vhost of a single node is always up.
        ["health", "checks", "virtual-hosts"] if get => Ok(ok()),
        ["health", "checks", "node-is-quorum-critical" | "node-is-mirror-sync-critical"] if get => {
            Ok(Response::json(
                200,
                &json!({"status": "ok", "reason": "single node cluster"}),
            ))
        }
        ["aliveness-test", vh] if get => aliveness(server, caller, vh),
        ["health", "checks", "alarms" | "local-alarms" | "virtual-hosts"]
        | ["health", "checks", "node-is-quorum-critical" | "node-is-mirror-sync-critical"]
        | ["health", "checks", "port-listener" | "protocol-listener", _]
        | ["aliveness-test", _] => Ok(method_not_allowed()),
        _ => return None,
    };
    Some(r)
}

fn ok() -> Response {
    Response::json(200, &json!({"status": "ok"}))
}

fn failed(reason: &str, mut details: serde_json::Map<String, Value>) -> Response {
    details.insert("status".into(), json!("failed"));
    details.insert("reason".into(), json!(reason));
    Response::json(503, &Value::Object(details))
}

/// One node: the cluster's alarms are the node's. RabbitMQ names the resources
/// "memory" and "disk space".
fn alarms(server: &Server, reason: &str) -> Response {
    let Some(alarm) = server.alarm else {
        return ok();
    };
    let resource = match alarm {
        crate::alarm::Alarm::Memory => "memory",
        crate::alarm::Alarm::Disk => "disk space",
    };
    let mut d = serde_json::Map::new();
    d.insert(
        "alarms".into(),
        json!([{"resource": resource, "node": super::overview::node_name()}]),
    );
    failed(reason, d)
}

fn port_listener(server: &Server, port: &str) -> ApiResult {
    let port: u64 = port
        .parse()
        .map_err(|_| ApiError::bad_request("Invalid port"))?;
    let mut ports: Vec<u16> = server.listeners.iter().map(|(_, a)| a.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.iter().any(|p| u64::from(*p) == port) {
        return Ok(Response::json(200, &json!({"status": "ok", "port": port})));
    }
    let mut d = serde_json::Map::new();
    d.insert("missing".into(), json!(port));
    d.insert("ports".into(), json!(ports));
    Ok(failed("No active listener", d))
}

/// RabbitMQ's protocol names, with the aliases its check accepts for AMQP 0-9-1.
fn protocol_name(p: &str) -> String {
    let p = p.to_ascii_lowercase();
    match p.as_str() {
        "amqp091" | "amqp0.9.1" | "amqp0-9-1" | "amqp0_9_1" => "amqp".to_owned(),
        _ => p,
    }
}

fn protocol_listener(server: &Server, proto: &str) -> Response {
    let want = protocol_name(proto);
    let mut have: Vec<&str> = server.listeners.iter().map(|(p, _)| p.name()).collect();
    have.dedup();
    if have.contains(&want.as_str()) {
        return Response::json(200, &json!({"status": "ok", "protocol": want}));
    }
    let mut d = serde_json::Map::new();
    d.insert("missing".into(), json!(want));
    d.insert("protocols".into(), json!(have));
    failed("No active listener", d)
}

/// RabbitMQ's aliveness test: declare `aliveness-test` in the vhost, publish a message
/// to it through the default exchange and get it back (acked). 404 for a missing vhost.
///
/// RabbitMQ runs it over AMQP as the caller: the vhost must be the caller's
/// (`is_authorized_vhost`), and the declare, publish and get need configure and read
/// on the queue and write on the default exchange, refused with their AMQP text.
fn aliveness(server: &mut Server, caller: &Caller, vh: &str) -> ApiResult {
    access::require_vhost(server, caller, vh)?;
    let v = vhost(server, vh)?;
    let user = caller.user.clone();
    let auth = &server.auth;
    let declared = server
        .broker
        .declare_queue(v, &QueueDecl::named(ALIVENESS_QUEUE), usize::MAX, |n| {
            auth.authorize(&user, vh, Permission::Configure, Resource::Queue(n))
        })
        .map_err(access::refused_with_text)?;
    for (perm, resource) in [
        (Permission::Write, Resource::Exchange(b"")),
        (
            Permission::Read,
            Resource::Queue(ALIVENESS_QUEUE.as_bytes()),
        ),
    ] {
        access::check(server, caller, vh, perm, resource).map_err(access::refused_with_text)?;
    }
    let x = server
        .broker
        .publish_target(v, b"")
        .map_err(ApiError::from)?;
    // Empty content-header properties (no flags set).
    let props = Bytes::from_static(&[0, 0]);
    let body = Bytes::from_static(b"test_message");
    let published = server.broker.publish(
        x,
        b"",
        ALIVENESS_QUEUE.as_bytes(),
        props,
        body.clone(),
        u64::MAX,
    );
    if !matches!(published, crate::broker::Published::Routed) {
        return Ok(failed(
            "aliveness-test message was not routed",
            Default::default(),
        ));
    }
    let got = crate::ops::get(&mut server.broker, declared.id, 1, false).map_err(ApiError::from)?;
    match got.first() {
        Some(g) if g.body == body => Ok(ok()),
        _ => Ok(failed(
            "aliveness-test message was not received",
            Default::default(),
        )),
    }
}
