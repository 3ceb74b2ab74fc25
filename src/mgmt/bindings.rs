//! `/api/bindings`: list (all, per vhost), the bindings between an exchange and a queue
//! (`/e/{src}/q/{dst}`) or another exchange (`/e/{src}/e/{dst}`) with `POST` to create
//! one, and one binding by its properties key (`GET`/`DELETE .../{props}`), as RabbitMQ
//! 3.10 answers them.

use bytes::Bytes;
use serde_json::Value;

use super::access;
use super::exchanges::path_name;
use super::{
    binding_json, json_body, json_table, list, method_not_allowed, properties_key, vhost, ApiError,
    ApiResult, Caller,
};
use crate::auth::{Permission, Resource};
use crate::broker::Dest;
use crate::http::{Request, Response};
use crate::ops::{self, BindingInfo, DestinationType};
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
    let kind = |k: &str| match k {
        "q" => Some(DestinationType::Queue),
        "e" => Some(DestinationType::Exchange),
        _ => None,
    };
    // RabbitMQ's `is_authorized_vhost` for any path naming a vhost; creating and
    // deleting a binding then need the AMQP permissions of queue.bind.
    if let Some(vh) = s.get(1) {
        if let Err(e) = access::require_vhost(server, caller, vh) {
            return Some(Err(e));
        }
    }
    let r = match s.as_slice() {
        ["bindings"] if get => list(req, all(server, caller, None)),
        ["bindings", vh] if get => {
            vhost(server, vh).and_then(|_| list(req, all(server, caller, Some(vh))))
        }
        ["bindings"] | ["bindings", _] => Ok(method_not_allowed()),
        ["bindings", vh, "e", src, k, dst] => {
            let dt = kind(k)?;
            let src = path_name(src);
            match m {
                "GET" | "HEAD" => between(server, vh, src, dt, dst)
                    .and_then(|v| list(req, v.iter().map(binding_json).collect())),
                "POST" => create(server, caller, req, vh, src, dt, dst),
                _ => Ok(method_not_allowed()),
            }
        }
        ["bindings", vh, "e", src, k, dst, props] => {
            let dt = kind(k)?;
            let src = path_name(src);
            match m {
                "GET" | "HEAD" => find(server, vh, src, dt, dst, props)
                    .map(|b| Response::json(200, &binding_json(&b))),
                "DELETE" => delete(server, caller, vh, src, dt, dst, props),
                _ => Ok(method_not_allowed()),
            }
        }
        _ => return None,
    };
    Some(r)
}

/// The bindings (of vhost `only`) in the vhosts `caller` may see.
fn all(server: &Server, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    ops::bindings(&server.broker)
        .iter()
        .filter(|b| {
            only.is_none_or(|v| &*b.vhost == v) && access::visible_vhost(server, caller, &b.vhost)
        })
        .map(binding_json)
        .collect()
}

/// The bindings from `src` to `dst` in `vh` (none when either end is missing, as
/// RabbitMQ answers `[]`; 404 for a missing vhost).
fn between(
    server: &Server,
    vh: &str,
    src: &str,
    dt: DestinationType,
    dst: &str,
) -> Result<Vec<BindingInfo>, ApiError> {
    vhost(server, vh)?;
    Ok(ops::bindings(&server.broker)
        .into_iter()
        .filter(|b| {
            &*b.vhost == vh
                && &b.source[..] == src.as_bytes()
                && b.destination_type == dt
                && &b.destination[..] == dst.as_bytes()
        })
        .collect())
}

/// The binding from `src` to `dst` whose properties key is `props`, or 404.
fn find(
    server: &Server,
    vh: &str,
    src: &str,
    dt: DestinationType,
    dst: &str,
    props: &str,
) -> Result<BindingInfo, ApiError> {
    between(server, vh, src, dt, dst)?
        .into_iter()
        .find(|b| properties_key(&String::from_utf8_lossy(&b.routing_key), &b.arguments) == props)
        .ok_or_else(ApiError::not_found)
}

/// RabbitMQ's 404 for a binding end that does not exist:
/// `{"error":"not_found","reason":"no exchange 'x' in vhost '/'"}`.
fn no_such(what: &str, name: &str, vh: &str) -> ApiError {
    ApiError::new(
        404,
        "not_found",
        format!("no {what} '{name}' in vhost '{vh}'"),
    )
}

/// Resolves the destination `dst` of kind `dt` in `vh`.
fn dest(server: &Server, vh: &str, dt: DestinationType, dst: &str) -> Result<Dest, ApiError> {
    let v = vhost(server, vh)?;
    match dt {
        DestinationType::Queue => server
            .broker
            .queue_id(v, dst.as_bytes())
            .map(Dest::Queue)
            .ok_or_else(|| no_such("queue", dst, vh)),
        DestinationType::Exchange => {
            if dst.is_empty() {
                return Err(ApiError::new(401, "not_authorised", "Access refused."));
            }
            server
                .broker
                .exchange_id(v, dst.as_bytes())
                .map(Dest::Exchange)
                .ok_or_else(|| no_such("exchange", dst, vh))
        }
    }
}

/// The checks RabbitMQ makes for queue.bind/unbind: write on the destination, read on
/// the source, and the topic permission to read `key` on a topic source.
fn authorize(
    server: &Server,
    caller: &Caller,
    vh: &str,
    src: &str,
    dt: DestinationType,
    dst: &str,
    key: &[u8],
) -> Result<(), ApiError> {
    let d = match dt {
        DestinationType::Queue => Resource::Queue(dst.as_bytes()),
        DestinationType::Exchange => Resource::Exchange(dst.as_bytes()),
    };
    access::authorize(server, caller, vh, Permission::Write, d)?;
    access::authorize(
        server,
        caller,
        vh,
        Permission::Read,
        Resource::Exchange(src.as_bytes()),
    )?;
    access::check_topic(server, caller, vh, Permission::Read, src, key).map_err(ApiError::from)
}

/// `POST /api/bindings/{vhost}/e/{src}/{q|e}/{dst}` with `routing_key` (default "")
/// and `arguments`: 201 with `Location: {dst}/{props}` relative to the request path,
/// each part quoted again as RabbitMQ does (`xq/a%2Bb%252Fc` for key "a b/c"). The
/// default exchange is 401; a missing end 404.
fn create(
    server: &mut Server,
    caller: &Caller,
    req: &Request,
    vh: &str,
    src: &str,
    dt: DestinationType,
    dst: &str,
) -> ApiResult {
    let v = vhost(server, vh)?;
    let body = json_body(req)?;
    let key = match body.get("routing_key") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad_request("routing_key must be a string")),
    };
    let args = json_table(body.get("arguments"))?;
    if src.is_empty() {
        return Err(ApiError::new(401, "not_authorised", "Access refused."));
    }
    if server.broker.exchange_id(v, src.as_bytes()).is_none() {
        return Err(no_such("exchange", src, vh));
    }
    let d = dest(server, vh, dt, dst)?;
    authorize(server, caller, vh, src, dt, dst, key.as_bytes())?;
    let props = properties_key(&key, &args);
    server
        .broker
        .bind(v, src.as_bytes(), d, Bytes::from(key), args)
        .map_err(ApiError::from)?;
    let location = format!("{}/{}", quote_plus(dst), quote_plus(&props));
    Ok(Response::empty(201).with_header("location", location))
}

/// `DELETE /api/bindings/{vhost}/e/{src}/{q|e}/{dst}/{props}`: 204, or 404 when there
/// is no such binding.
fn delete(
    server: &mut Server,
    caller: &Caller,
    vh: &str,
    src: &str,
    dt: DestinationType,
    dst: &str,
    props: &str,
) -> ApiResult {
    let v = vhost(server, vh)?;
    if src.is_empty() {
        return Err(ApiError::new(401, "not_authorised", "Access refused."));
    }
    let b = find(server, vh, src, dt, dst, props)?;
    let d = dest(server, vh, dt, dst)?;
    authorize(server, caller, vh, src, dt, dst, &b.routing_key)?;
    server
        .broker
        .unbind(v, src.as_bytes(), Some(d), &b.routing_key, &b.arguments)
        .map_err(ApiError::from)?;
    Ok(Response::empty(204))
}

/// mochiweb's `quote_plus`, which RabbitMQ's management plugin uses for keys and
/// locations: alphanumerics and `-._~` stay, a space is `+`, the rest `%XX`.
pub fn quote_plus(s: &str) -> String {
    crate::http::percent_encode(s).replace("%20", "+")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FieldTable;

    #[test]
    fn keys_and_locations_are_quoted_as_rabbitmq_does() {
        // RabbitMQ 3.10's properties_key of the routing keys "a.*#~_-é+%" and "a b/c":
        // quote_plus, then `~` (the separator of the arguments' hash) escaped too.
        let k = super::super::properties_key("a.*#~_-é+%", &FieldTable::new());
        assert_eq!(k, "a.%2A%23%7E_-%C3%A9%2B%25");
        assert_eq!(quote_plus("a b/c"), "a+b%2Fc");
        // Its Location header quotes the key once more.
        assert_eq!(quote_plus(&k), "a.%252A%2523%257E_-%25C3%25A9%252B%2525");
        let mut args = FieldTable::new();
        args.insert(
            bytes::Bytes::from_static(b"x"),
            crate::proto::FieldValue::I64(1),
        );
        let k = super::super::properties_key("rk", &args);
        assert!(k.starts_with("rk~") && k.len() == 9, "{k}");
        assert_eq!(quote_plus(&k), k, "the hash needs no quoting");
    }
}
