//! `/api/queues`: list (all, per vhost), `GET`/`PUT`/`DELETE` one, its bindings,
//! `DELETE .../contents` (purge) and `POST .../get`, as RabbitMQ 3.10 answers them.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::access;
use super::{
    bool_field, json_body, json_path, json_table, list, list_by, method_not_allowed,
    properties_json, query_flag, sort_key, table_json, vhost, ApiError, ApiResult, Caller, SortKey,
};
use crate::auth::{Permission, Resource};
use crate::broker::{QueueDecl, QueueId};
use crate::http::{Request, Response};
use crate::ops::{self, QueueInfo};
use crate::server::Server;

pub fn route(
    server: &mut Server,
    caller: &Caller,
    req: &Request,
    segs: &[String],
) -> Option<ApiResult> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let get = m == "GET" || m == "HEAD";
    // Every path below names a vhost or lists across them: RabbitMQ's
    // `is_authorized_vhost` first, then the operation's own AMQP permission.
    if let Some(vh) = s.get(1) {
        if let Err(e) = access::require_vhost(server, caller, vh) {
            return Some(Err(e));
        }
    }
    let r = match s.as_slice() {
        ["queues"] if get => list_queues(server, caller, req, None),
        ["queues"] => Ok(method_not_allowed()),
        ["queues", vh] if get => {
            vhost(server, vh).and_then(|_| list_queues(server, caller, req, Some(vh)))
        }
        ["queues", _] => Ok(method_not_allowed()),
        ["queues", vh, name] => match m {
            "GET" | "HEAD" => one(server, req, vh, name).map(|v| Response::json(200, &v)),
            "PUT" => declare(server, caller, req, vh, name),
            "DELETE" => delete(server, caller, req, vh, name),
            _ => Ok(method_not_allowed()),
        },
        ["queues", vh, name, "bindings"] if get => find(server, vh, name)
            .and_then(|_| list(req, super::bindings_of_queue(server, vh, name))),
        ["queues", vh, name, "contents"] if m == "DELETE" => {
            find(server, vh, name).and_then(|id| {
                access::authorize(
                    server,
                    caller,
                    vh,
                    Permission::Read,
                    Resource::Queue(name.as_bytes()),
                )?;
                server.broker.purge(id);
                Ok(Response::empty(204))
            })
        }
        ["queues", vh, name, "get"] if m == "POST" => get_messages(server, caller, req, vh, name),
        ["queues", _, _, "bindings" | "contents" | "get"] => Ok(method_not_allowed()),
        _ => return None,
    };
    Some(r)
}

/// The queue `name` in vhost `vh`, or 404.
fn find(server: &Server, vh: &str, name: &str) -> Result<QueueId, ApiError> {
    let v = vhost(server, vh)?;
    server
        .broker
        .queue_id(v, name.as_bytes())
        .ok_or_else(ApiError::not_found)
}

/// Every queue (of vhost `only`), filtered, sorted and paged on the snapshots; only
/// the page is rendered.
fn list_queues(server: &Server, caller: &Caller, req: &Request, only: Option<&str>) -> ApiResult {
    let mut qs = ops::queues(&server.broker);
    qs.retain(|q| {
        only.is_none_or(|v| &*q.vhost == v) && access::visible_vhost(server, caller, &q.vhost)
    });
    list_by(
        server,
        req,
        qs,
        |q| std::str::from_utf8(&q.name).unwrap_or(""),
        |q| &q.vhost,
        |q, path| {
            let n = |v: u64| Some(SortKey::Num(v as f64));
            match path {
                ["name"] => Some(SortKey::Str(String::from_utf8_lossy(&q.name).into_owned())),
                ["vhost"] => Some(SortKey::Str(q.vhost.to_string())),
                ["messages"] => n(q.ready as u64 + q.unacked),
                ["messages_ready"] => n(q.ready as u64),
                ["messages_unacknowledged"] => n(q.unacked),
                ["consumers"] => n(q.consumers as u64),
                ["message_bytes"] => n(q.bytes),
                _ => json_path(&queue_json(server, q), path).map(sort_key),
            }
        },
        |server, q| queue_json(server, &q),
    )
}

fn one(server: &Server, req: &Request, vh: &str, name: &str) -> Result<Value, ApiError> {
    let v = vhost(server, vh)?;
    let q = ops::queue(&server.broker, v, name.as_bytes()).ok_or_else(ApiError::not_found)?;
    let mut j = queue_json(server, &q);
    // `?msg_rates_age=600&msg_rates_incr=5` and `lengths_age`/`lengths_incr` ask for
    // the chart samples, as RabbitMQ.
    let window = |age: &str, incr: &str| {
        let num = |k: &str| req.param(k).and_then(|v| v.parse::<u64>().ok());
        num(age).map(|a| (a, num(incr).unwrap_or(5)))
    };
    if let (Some(id), Value::Object(m)) = (server.broker.queue_id(v, name.as_bytes()), &mut j) {
        super::stats::queue_history(
            server,
            id,
            window("msg_rates_age", "msg_rates_incr"),
            window("lengths_age", "lengths_incr"),
            m,
        );
    }
    let consumers: Vec<Value> = ops::consumers(&server.broker)
        .into_iter()
        .filter(|c| &*c.vhost == vh && &c.queue[..] == name.as_bytes())
        .map(|c| super::consumer_json(server, &c))
        .collect();
    if let Value::Object(m) = &mut j {
        m.insert("consumer_details".into(), Value::Array(consumers));
        m.insert("deliveries".into(), json!([]));
        m.insert("incoming".into(), json!([]));
    }
    Ok(j)
}

/// The `type` field: RabbitMQ's name of the queue's type (`x-queue-type`).
fn queue_type(args: &crate::proto::FieldTable) -> &'static str {
    use crate::broker::args::QueueType;
    match QueueType::of(args) {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
        QueueType::Stream => "stream",
    }
}

/// A queue as RabbitMQ's API shows it (the fields tools read).
pub fn queue_json(server: &Server, q: &QueueInfo) -> Value {
    let name = String::from_utf8_lossy(&q.name);
    let messages = q.ready as u64 + q.unacked + q.dlx;
    let idle = q.consumers == 0;
    let kind = queue_type(&q.arguments);
    let mut j = json!({
        "name": name,
        "vhost": &*q.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive,
        "arguments": table_json(&q.arguments),
        "type": kind,
        "node": super::overview::node_name(),
        "state": "running",
        "policy": null,
        "operator_policy": null,
        "effective_policy_definition": {},
        "exclusive_consumer_tag": q.exclusive_consumer_tag.as_ref().map(|t| String::from_utf8_lossy(t)),
        "single_active_consumer_tag": q.single_active_consumer_tag.as_ref().map(|t| String::from_utf8_lossy(t)),
        "messages": messages,
        "messages_details": {"rate": 0.0},
        "messages_ready": q.ready,
        "messages_ready_details": {"rate": 0.0},
        "messages_unacknowledged": q.unacked,
        "messages_unacknowledged_details": {"rate": 0.0},
        "messages_ram": messages,
        "messages_ready_ram": q.ready,
        "messages_unacknowledged_ram": q.unacked,
        "messages_persistent": 0,
        "messages_paged_out": 0,
        "message_bytes": q.bytes + q.dlx_bytes,
        "message_bytes_ready": q.bytes,
        "message_bytes_unacknowledged": 0,
        "message_bytes_ram": q.bytes,
        "message_bytes_persistent": 0,
        "message_bytes_paged_out": 0,
        "consumers": q.consumers,
        // RabbitMQ writes the integer 0 for a queue without consumers.
        "consumer_capacity": if idle { json!(0) } else { json!(1.0) },
        "consumer_utilisation": if idle { json!(0) } else { json!(1.0) },
        "memory": 256 + 64 * q.ready as u64 + q.bytes,
        "head_message_timestamp": null,
        "idle_since": if idle { Value::String(super::now_rfc3339()) } else { Value::Null },
        "message_stats": super::message_stats_queue(server, q),
    });
    super::policies::decorate_queue(server, &q.vhost, &q.name, &mut j);
    if kind == "quorum" {
        // A one-node quorum queue: this node leads and is the one member, online.
        let node = super::overview::node_name();
        if let Value::Object(m) = &mut j {
            m.insert("leader".into(), json!(node.clone()));
            m.insert("members".into(), json!([node.clone()]));
            m.insert("online".into(), json!([node]));
            // Waiting to be dead-lettered at-least-once (in `messages` too, as RabbitMQ).
            m.insert("messages_dlx".into(), json!(q.dlx));
            m.insert("message_bytes_dlx".into(), json!(q.dlx_bytes));
        }
    }
    j
}

/// `PUT /api/queues/{vhost}/{name}`: queue.declare with the body's `durable`,
/// `auto_delete` and `arguments` (RabbitMQ's defaults: all false, none). 201 when
/// created, 204 when it existed and is equivalent, 400 when not; 401 for `amq.` names.
fn declare(server: &mut Server, caller: &Caller, req: &Request, vh: &str, name: &str) -> ApiResult {
    // RabbitMQ's PUT names the missing vhost (a GET answers the plain 404).
    let v = vhost(server, vh).map_err(|_| ApiError::new(404, "not_found", "vhost_not_found"))?;
    let body = json_body(req)?;
    let mut d = QueueDecl::named(Bytes::copy_from_slice(name.as_bytes()));
    d.durable = bool_field(&body, "durable")?;
    d.auto_delete = bool_field(&body, "auto_delete")?;
    d.arguments = json_table(body.get("arguments"))?;
    if name.starts_with("amq.") {
        return Err(ApiError::new(401, "not_authorised", "Access refused."));
    }
    let existed = server.broker.queue_id(v, name.as_bytes()).is_some();
    let user = caller.user.clone();
    let vhost_name = vh.to_owned();
    let auth = &server.auth;
    // No connection owns an HTTP-declared queue (exclusive is refused by RabbitMQ's
    // API too: the body's `exclusive` is ignored).
    server
        .broker
        .declare_queue(v, &d, usize::MAX, |n| {
            auth.authorize(
                &user,
                &vhost_name,
                Permission::Configure,
                Resource::Queue(n),
            )
        })
        .map_err(ApiError::from)?;
    Ok(Response::empty(if existed { 204 } else { 201 }))
}

/// `DELETE /api/queues/{vhost}/{name}[?if-empty=true][&if-unused=true]`: 404 when
/// missing, then configure on the queue (401).
fn delete(server: &mut Server, caller: &Caller, req: &Request, vh: &str, name: &str) -> ApiResult {
    let id = find(server, vh, name)?;
    access::authorize(
        server,
        caller,
        vh,
        Permission::Configure,
        Resource::Queue(name.as_bytes()),
    )?;
    let mut effects = Vec::new();
    ops::delete_queue(
        &mut server.broker,
        id,
        query_flag(req, "if-unused"),
        query_flag(req, "if-empty"),
        &mut effects,
    )
    .map_err(|e| ApiError::bad_request(e.text))?;
    for e in effects {
        server.apply(e);
    }
    Ok(Response::empty(204))
}

/// `POST /api/queues/{vhost}/{name}/get`: `count`, `ackmode` (`ack_requeue_true`,
/// `ack_requeue_false`, `reject_requeue_true`, `reject_requeue_false`), `encoding`
/// (`auto`: a UTF-8 payload as a string, else base64; `base64`), `truncate` (bytes).
fn get_messages(
    server: &mut Server,
    caller: &Caller,
    req: &Request,
    vh: &str,
    name: &str,
) -> ApiResult {
    // RabbitMQ checks the body before the queue: the missing keys all at once, in
    // its (alphabetical) order, then the encoding.
    let body = json_body(req)?;
    let missing: Vec<String> = ["ackmode", "count", "encoding"]
        .iter()
        .filter(|k| body.get(**k).is_none())
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!("[{}]", missing.join(","))));
    }
    let ackmode = body.get("ackmode").and_then(Value::as_str).unwrap_or("");
    let requeue = match ackmode {
        "ack_requeue_true" | "reject_requeue_true" => true,
        "ack_requeue_false" | "reject_requeue_false" => false,
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let count = match body.get("count") {
        None => None,
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    }
    .ok_or_else(|| ApiError::bad_request("count must be a non-negative integer"))?;
    let base64 = match body.get("encoding").and_then(Value::as_str) {
        Some("auto") => false,
        Some("base64") => true,
        _ => {
            return Err(ApiError::bad_request(
                "Unsupported encoding. Please use auto or base64.",
            ))
        }
    };
    // A missing vhost fails RabbitMQ's permission check (401); so does a queue the
    // caller may not read (with the AMQP text, as basic.get's refusal); a missing
    // queue is the AMQP not_found, with its AMQP text.
    let v = super::vhost(server, vh)
        .map_err(|_| ApiError::new(401, "not_authorised", "Access refused."))?;
    access::check(
        server,
        caller,
        vh,
        Permission::Read,
        Resource::Queue(name.as_bytes()),
    )
    .map_err(access::refused_with_text)?;
    let id = server.broker.queue_id(v, name.as_bytes()).ok_or_else(|| {
        ApiError::new(
            404,
            "not_found",
            format!("NOT_FOUND - no queue '{name}' in vhost '{vh}'"),
        )
    })?;
    let truncate = match body.get("truncate") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    let got = ops::get(&mut server.broker, id, count.min(100_000) as usize, requeue)
        .map_err(ApiError::from)?;
    let items: Vec<Value> = got
        .iter()
        .map(|g| {
            let payload = match truncate {
                Some(n) if n < g.body.len() => &g.body[..n],
                _ => &g.body[..],
            };
            let (payload, encoding) = match std::str::from_utf8(payload) {
                Ok(s) if !base64 => (s.to_owned(), "string"),
                _ => (super::base64_encode(payload), "base64"),
            };
            let mut m = Map::new();
            m.insert("payload_bytes".into(), json!(g.body.len()));
            m.insert("redelivered".into(), json!(g.redelivered));
            m.insert(
                "exchange".into(),
                json!(String::from_utf8_lossy(&g.exchange)),
            );
            m.insert(
                "routing_key".into(),
                json!(String::from_utf8_lossy(&g.routing_key)),
            );
            m.insert("message_count".into(), json!(g.remaining));
            m.insert("properties".into(), properties_json(&g.properties));
            m.insert("payload".into(), json!(payload));
            m.insert("payload_encoding".into(), json!(encoding));
            Value::Object(m)
        })
        .collect();
    Ok(Response::json(200, &Value::Array(items)))
}
