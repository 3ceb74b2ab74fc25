//! `/api/exchanges`: list (all, per vhost), `GET`/`PUT`/`DELETE` one, its bindings as
//! source and as destination, and `POST .../publish`, as RabbitMQ 3.10 answers them.
//! The default exchange is `amq.default` in paths (its name is "").

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::access;
use super::{
    binding_json, bool_field, json_body, json_properties, json_table, list, method_not_allowed,
    query_flag, table_json, vhost, ApiError, ApiResult, Caller,
};
use crate::auth::{Permission, Resource};
use crate::broker::exchange::ExchangeKind;
use crate::broker::{ExchangeDecl, Published, VhostId};
use crate::error::AmqpError;
use crate::http::{Request, Response};
use crate::ops::{self, DestinationType, ExchangeInfo};
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
    // RabbitMQ's `is_authorized_vhost` for any path naming a vhost, then each
    // operation's own AMQP permission.
    if let Some(vh) = s.get(1) {
        if let Err(e) = access::require_vhost(server, caller, vh) {
            return Some(Err(e));
        }
    }
    let r = match s.as_slice() {
        ["exchanges"] if get => list(req, all(server, caller, None)),
        ["exchanges"] => Ok(method_not_allowed()),
        ["exchanges", vh] if get => {
            vhost(server, vh).and_then(|_| list(req, all(server, caller, Some(vh))))
        }
        ["exchanges", _] => Ok(method_not_allowed()),
        ["exchanges", vh, name] => {
            let name = path_name(name);
            match m {
                "GET" | "HEAD" => one(server, req, vh, name).map(|v| Response::json(200, &v)),
                "PUT" => declare(server, caller, req, vh, name),
                "DELETE" => delete(server, caller, req, vh, name),
                _ => Ok(method_not_allowed()),
            }
        }
        ["exchanges", vh, name, "bindings", side @ ("source" | "destination")] if get => {
            bindings_of(server, vh, path_name(name), *side == "source").and_then(|v| list(req, v))
        }
        ["exchanges", vh, name, "publish"] if m == "POST" => {
            publish(server, caller, req, vh, path_name(name))
        }
        ["exchanges", _, _, "bindings", "source" | "destination"]
        | ["exchanges", _, _, "publish"] => Ok(method_not_allowed()),
        _ => return None,
    };
    Some(r)
}

/// The exchange a path segment names: `amq.default` is the default exchange "".
pub fn path_name(seg: &str) -> &str {
    if seg == "amq.default" {
        ""
    } else {
        seg
    }
}

/// The exchanges (of vhost `only`) in the vhosts `caller` may see.
fn all(server: &Server, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    ops::exchanges(&server.broker)
        .iter()
        .filter(|x| {
            only.is_none_or(|v| &*x.vhost == v) && access::visible_vhost(server, caller, &x.vhost)
        })
        .map(|x| exchange_json(server, x))
        .collect()
}

/// Whether RabbitMQ itself made this exchange (the default one and `amq.*`).
fn is_builtin(name: &[u8]) -> bool {
    name.is_empty() || name.starts_with(b"amq.")
}

/// An exchange as RabbitMQ's API shows it.
pub fn exchange_json(server: &Server, x: &ExchangeInfo) -> Value {
    // Warren does not record who declared an exchange; the built-in ones are RabbitMQ's
    // "rmq-internal", the others are left blank rather than guessed.
    let who = if is_builtin(&x.name) {
        "rmq-internal"
    } else {
        ""
    };
    let mut j = json!({
        "name": String::from_utf8_lossy(&x.name),
        "vhost": &*x.vhost,
        "type": x.kind,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_json(&x.arguments),
        "user_who_performed_action": who,
        "message_stats": message_stats(server, x),
    });
    super::policies::decorate_exchange(server, &x.vhost, &x.name, &mut j);
    j
}

/// An exchange's `message_stats` (`publish_in`, `publish_out` with `_details.rate`,
/// from `mgmt::stats`); `{}` for an exchange nothing was published to.
pub fn message_stats(server: &Server, x: &ExchangeInfo) -> Value {
    let name = String::from_utf8_lossy(&x.name);
    super::stats::exchange_message_stats(server, &x.vhost, &name).unwrap_or_else(|| json!({}))
}

fn one(server: &Server, req: &Request, vh: &str, name: &str) -> Result<Value, ApiError> {
    let v = vhost(server, vh)?;
    let x = ops::exchange(&server.broker, v, name.as_bytes()).ok_or_else(ApiError::not_found)?;
    let mut j = exchange_json(server, &x);
    if let Value::Object(m) = &mut j {
        // `?msg_rates_age=600&msg_rates_incr=5` asks for the chart samples, as RabbitMQ.
        let rates = super::stats::window(req, "msg_rates_age", "msg_rates_incr");
        if let (Some(rates), Some(id), Some(Value::Object(ms))) = (
            rates,
            server.broker.exchange_id(v, name.as_bytes()),
            m.get_mut("message_stats"),
        ) {
            super::stats::exchange_history(server, id, rates, ms);
        }
        m.insert("incoming".into(), json!([]));
        m.insert("outgoing".into(), json!([]));
    }
    Ok(j)
}

/// `PUT /api/exchanges/{vhost}/{name}`: exchange.declare with the body's `type`
/// (RabbitMQ's default: direct), `durable`, `auto_delete`, `internal` (default false)
/// and `arguments`. 201 created, 204 existed and equivalent, 400 inequivalent or an
/// unknown type, 401 for the default exchange and `amq.` names.
fn declare(server: &mut Server, caller: &Caller, req: &Request, vh: &str, name: &str) -> ApiResult {
    let v = vhost(server, vh).map_err(|_| ApiError::new(404, "not_found", "vhost_not_found"))?;
    let body = json_body(req)?;
    let kind = match body.get("type") {
        None | Some(Value::Null) => "direct".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad_request("type must be a string")),
    };
    let d = ExchangeDecl {
        name: Bytes::copy_from_slice(name.as_bytes()),
        kind: Bytes::from(kind.clone()),
        passive: false,
        durable: bool_field(&body, "durable")?,
        auto_delete: bool_field(&body, "auto_delete")?,
        internal: bool_field(&body, "internal")?,
        arguments: json_table(body.get("arguments"))?,
    };
    if is_builtin(name.as_bytes()) {
        return Err(ApiError::new(401, "not_authorised", "Access refused."));
    }
    access::authorize(
        server,
        caller,
        vh,
        Permission::Configure,
        Resource::Exchange(name.as_bytes()),
    )?;
    let existed = server.broker.exchange_id(v, name.as_bytes()).is_some();
    // The type is checked before equivalence, as RabbitMQ does. Its text is "unknown
    // exchange type" for a name that is not an Erlang atom in the node (every name a
    // client makes up) and "invalid exchange type" for one that happens to be.
    if ExchangeKind::parse(kind.as_bytes()).is_none() {
        return Err(ApiError::bad_request(format!(
            "unknown exchange type '{kind}'"
        )));
    }
    server
        .broker
        .declare_exchange(v, &d)
        .map_err(ApiError::from)?;
    Ok(Response::empty(if existed { 204 } else { 201 }))
}

/// `DELETE /api/exchanges/{vhost}/{name}[?if-unused=true]`: 404 when missing, 401 for
/// built-in exchanges, 400 when in use and `if-unused`.
fn delete(server: &mut Server, caller: &Caller, req: &Request, vh: &str, name: &str) -> ApiResult {
    let v = vhost(server, vh)?;
    if is_builtin(name.as_bytes()) {
        return Err(ApiError::new(401, "not_authorised", "Access refused."));
    }
    if server.broker.exchange_id(v, name.as_bytes()).is_none() {
        return Err(ApiError::not_found());
    }
    access::authorize(
        server,
        caller,
        vh,
        Permission::Configure,
        Resource::Exchange(name.as_bytes()),
    )?;
    server
        .broker
        .delete_exchange(v, name.as_bytes(), query_flag(req, "if-unused"))
        .map_err(ApiError::from)?;
    Ok(Response::empty(204))
}

/// The bindings whose source (or destination) is exchange `name`; an exchange that
/// does not exist has none (RabbitMQ answers `[]`, not 404).
fn bindings_of(
    server: &Server,
    vh: &str,
    name: &str,
    as_source: bool,
) -> Result<Vec<Value>, ApiError> {
    vhost(server, vh)?;
    Ok(ops::bindings(&server.broker)
        .iter()
        .filter(|b| {
            &*b.vhost == vh
                && if as_source {
                    &b.source[..] == name.as_bytes()
                } else {
                    b.destination_type == DestinationType::Exchange
                        && &b.destination[..] == name.as_bytes()
                }
        })
        .map(binding_json)
        .collect())
}

/// RabbitMQ's answer to an AMQP error during an HTTP publish: 400 with the AMQP reply
/// text ("404 NOT_FOUND - no exchange 'x' in vhost '/'").
fn publish_error(e: AmqpError) -> ApiError {
    ApiError::bad_request(format!("{} {}", e.code as u16, e.reply_text()))
}

/// Erlang's `~p` of a list of `{key_missing,K}`, as RabbitMQ's reason shows it.
pub fn keys_missing(body: &Map<String, Value>, keys: &[&str]) -> Result<(), ApiError> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| !body.contains_key(**k))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("[{}]", missing.join(",\n "))))
    }
}

/// `POST /api/exchanges/{vhost}/{name}/publish`: `routing_key`, `properties`,
/// `payload`, `payload_encoding` (`string` or `base64`), all required. Published the
/// way basic.publish is ([`crate::broker::Broker::publish`]: persisted for
/// delivery_mode 2 to durable queues, paged past the memory budget). Answers
/// `{"routed": bool}`; HTTP has no mandatory flag, so an unroutable message is dropped.
fn publish(server: &mut Server, caller: &Caller, req: &Request, vh: &str, name: &str) -> ApiResult {
    let v: VhostId = vhost(server, vh)?;
    let body = json_body(req)?;
    keys_missing(
        &body,
        &["routing_key", "properties", "payload", "payload_encoding"],
    )?;
    let routing_key = match body.get("routing_key") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ApiError::bad_request("routing_key must be a string")),
    };
    let payload = match body.get("payload") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(ApiError::bad_request("payload must be a string")),
    };
    let payload = match body.get("payload_encoding").and_then(Value::as_str) {
        Some("string") => Bytes::copy_from_slice(payload.as_bytes()),
        Some("base64") => match super::base64_decode(payload.trim()) {
            Some(b) => Bytes::from(b),
            None => return Ok(bad_pair("not_base64", payload)),
        },
        Some(other) => return Ok(bad_pair("unsupported_encoding", other)),
        None => return Ok(bad_pair("unsupported_encoding", "")),
    };
    let props = json_properties(body.get("properties"))?;
    if let Some(u) = &props.user_id {
        if u[..] != *caller.user.name().as_bytes() {
            return Err(publish_error(crate::error::precondition(format!(
                "user_id property set to '{}' but authenticated user was '{}'",
                String::from_utf8_lossy(u),
                caller.user.name()
            ))));
        }
    }
    access::check(
        server,
        caller,
        vh,
        Permission::Write,
        Resource::Exchange(name.as_bytes()),
    )
    .map_err(publish_error)?;
    access::check_topic(
        server,
        caller,
        vh,
        Permission::Write,
        name,
        routing_key.as_bytes(),
    )
    .map_err(publish_error)?;
    let x = server
        .broker
        .publish_target(v, name.as_bytes())
        .map_err(publish_error)?;
    // Under a resource alarm AMQP publishers are blocked (not read); an HTTP request
    // cannot be left waiting on the reactor thread, so it is refused instead.
    if let Some(alarm) = server.alarm {
        return Err(ApiError::new(
            503,
            "service_unavailable",
            format!("publishing is blocked: {}", alarm.reason()),
        ));
    }
    let mut raw = bytes::BytesMut::new();
    props.encode(&mut raw);
    let raw = raw.freeze();
    if name.is_empty() {
        reply(server, routing_key.as_bytes(), &raw, &payload);
    }
    let budget = server.config.memory_budget;
    let routed = match server.broker.publish(
        x,
        name.as_bytes(),
        routing_key.as_bytes(),
        raw,
        payload,
        budget,
    ) {
        Published::Routed => true,
        Published::Unroutable { .. } => false,
        Published::Refused => {
            return Err(ApiError::new(
                503,
                "service_unavailable",
                "the message store refused the message (disk full)",
            ))
        }
    };
    Ok(Response::json(200, &json!({ "routed": routed })))
}

/// A publish to the default exchange with a direct reply-to address as its routing key
/// goes straight to the reply consumer it names, as basic.publish does
/// (`conn::methods`): RabbitMQ 3.10 delivers it and still answers `{"routed":false}`
/// (no queue took it), so the caller's answer is left as the routing made it.
fn reply(server: &mut Server, routing_key: &[u8], properties: &Bytes, body: &Bytes) {
    let Some(suffix) = crate::broker::reply_to::suffix(routing_key) else {
        return;
    };
    let Some((conn, channel)) = server.broker.reply_to.lookup(suffix) else {
        return;
    };
    let r = crate::conn::methods::Reply {
        conn,
        channel,
        suffix: Bytes::copy_from_slice(suffix),
        routing_key: Bytes::copy_from_slice(routing_key),
        properties: properties.clone(),
        body: body.clone(),
    };
    let delivered = server
        .conns
        .get_mut(conn)
        .is_some_and(|c| crate::conn::methods::deliver_reply(c, &r));
    if delivered {
        server.touch(conn);
    }
}

/// RabbitMQ's 400 whose reason is an `[atom, value]` pair (`["not_base64","!!!"]`),
/// an array where [`ApiError`] has a string.
fn bad_pair(what: &str, value: &str) -> Response {
    Response::json(
        400,
        &json!({"error": "bad_request", "reason": [what, value]}),
    )
}
