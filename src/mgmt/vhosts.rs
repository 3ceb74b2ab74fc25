//! `/api/vhosts[/{name}]` (list, show, create or update, delete) and
//! `/api/vhost-limits[/{vhost}[/{name}]]` (list, set, clear), as RabbitMQ 3.10's
//! management plugin answers them (rabbit_mgmt_wm_vhost, rabbit_mgmt_wm_limits,
//! rabbit_mgmt_wm_limit).
//!
//! Vhosts and their limits live in the broker (`Broker::put_vhost`,
//! `set_vhost_limits`); a deletion goes through `Server::delete_vhost`, which also
//! closes the vhost's connections. Changes are administrator-only ([`require_admin`]).

use serde_json::{json, Map, Value};
use std::collections::HashMap;

use super::{json_body, list, method_not_allowed, ApiError, ApiResult, Caller};
use crate::auth::Permissions;
use crate::broker::{Vhost, VhostId, VhostMeta};
use crate::http::{Request, Response};
use crate::server::Server;

/// The queue types RabbitMQ 3.10 accepts as a vhost's default.
const QUEUE_TYPES: &[&str] = &["classic", "quorum", "stream"];

pub fn route(
    server: &mut Server,
    caller: &Caller,
    req: &Request,
    segs: &[String],
) -> Option<ApiResult> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let get = m == "GET" || m == "HEAD";
    let r = match s.as_slice() {
        // Monitors see every vhost, others those they may log into; one vhost's record
        // is for administrators (RabbitMQ 3.10's `rabbit_mgmt_wm_vhost`).
        ["vhosts"] if get => {
            let mut all = vhosts(server);
            all.retain(|v| {
                super::access::listed_vhost(server, caller, v["name"].as_str().unwrap_or(""))
            });
            list(req, all)
        }
        ["vhosts", name] => match m {
            "GET" | "HEAD" => require_admin(server, caller).and_then(|()| {
                server
                    .broker
                    .lookup_vhost(name.as_bytes())
                    .and_then(|(id, _)| Some(one_vhost(server, id, server.broker.vhost(id)?)))
                    .map(|v| Response::json(200, &v))
                    .ok_or_else(ApiError::not_found)
            }),
            "PUT" => {
                require_admin(server, caller).and_then(|()| put_vhost(server, caller, req, name))
            }
            "DELETE" => require_admin(server, caller).and_then(|()| {
                if server.delete_vhost(name) {
                    log::info!(
                        "{}: vhost '{name}' deleted via the management API",
                        caller.peer
                    );
                    Ok(Response::empty(204))
                } else {
                    Err(ApiError::not_found())
                }
            }),
            _ => Ok(method_not_allowed()),
        },
        ["vhost-limits"] if get => Ok(Response::json(200, &limits_json(server, None))),
        ["vhost-limits", vh] if get => super::access::require_vhost_visible(server, caller, vh)
            .and_then(|()| super::vhost(server, vh))
            .map(|id| Response::json(200, &limits_json(server, Some(id)))),
        ["vhost-limits", vh, name] => match m {
            "PUT" => require_admin(server, caller).and_then(|()| set_limit(server, req, vh, name)),
            "DELETE" => require_admin(server, caller).and_then(|()| clear_limit(server, vh, name)),
            _ => Ok(method_not_allowed()),
        },
        ["vhosts"] | ["vhost-limits"] | ["vhost-limits", _] => Ok(method_not_allowed()),
        _ => return None,
    };
    Some(r)
}

/// 401 unless the caller is an administrator, as RabbitMQ's `is_authorized_admin`.
fn require_admin(_server: &Server, caller: &Caller) -> Result<(), ApiError> {
    super::access::require_admin(caller)
}

/// Every vhost as the API shows it, in creation order. One pass over the queues for
/// all the vhosts' message totals.
fn vhosts(server: &Server) -> Vec<Value> {
    let mut totals: HashMap<VhostId, (u64, u64)> = HashMap::new();
    for (_, q) in server.broker.queues() {
        let t = totals.entry(q.vhost).or_default();
        t.0 += u64::from(q.message_count());
        t.1 += q.unacked_count();
    }
    server
        .broker
        .vhosts()
        .map(|(id, v)| vhost_json(v, totals.get(&id).copied().unwrap_or_default()))
        .collect()
}

/// One vhost as the API shows it (one pass over the queues for its totals).
fn one_vhost(server: &Server, id: VhostId, v: &Vhost) -> Value {
    let totals = server
        .broker
        .queues()
        .filter(|(_, q)| q.vhost == id)
        .fold((0u64, 0u64), |(r, u), (_, q)| {
            (r + u64::from(q.message_count()), u + q.unacked_count())
        });
    vhost_json(v, totals)
}

/// A vhost as RabbitMQ 3.10 shows it (its info and metadata), with the message totals
/// of its queues (ready, unacked) that RabbitMQ adds from its statistics.
fn vhost_json(v: &Vhost, (ready, unacked): (u64, u64)) -> Value {
    let mut metadata = json!({
        "description": v.meta.description,
        "tags": v.meta.tags,
    });
    if let (Some(t), Value::Object(m)) = (&v.meta.default_queue_type, &mut metadata) {
        m.insert("default_queue_type".into(), json!(t));
    }
    json!({
        "name": &*v.name,
        "description": v.meta.description,
        "tags": v.meta.tags,
        "default_queue_type": v.meta.default_queue_type.as_deref().unwrap_or("undefined"),
        "metadata": metadata,
        "tracing": false,
        "cluster_state": {super::overview::node_name(): "running"},
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

/// RabbitMQ's `parse_tags`: a comma-separated string or a list of strings, each
/// trimmed; empty and null are no tags.
fn parse_tags(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let tags: Vec<String> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|t| t.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| match t {
                Value::String(s) => Ok(s.trim().to_owned()),
                _ => Err(ApiError::bad_request("tags must be strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("tags must be a string or a list")),
    };
    Ok(tags.into_iter().filter(|t| !t.is_empty()).collect())
}

/// A string field of a body ("" when absent or null).
fn text_field(body: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
    }
}

/// `PUT /api/vhosts/{name}`: creates the vhost (201) and gives the creating user full
/// permissions on it, as RabbitMQ's `put_vhost` does; or updates the description and
/// tags of an existing one (204). The default queue type is read from
/// `default_queue_type` or 3.10's `defaultqueuetype`.
fn put_vhost(server: &mut Server, caller: &Caller, req: &Request, name: &str) -> ApiResult {
    // Names travel in connection.open's short string: longer could never be opened.
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request(
            "vhost names must be 1 to 255 bytes long",
        ));
    }
    let body = json_body(req)?;
    let qt = match body
        .get("default_queue_type")
        .or_else(|| body.get("defaultqueuetype"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.is_empty() || t == "undefined" => None,
        Some(Value::String(t)) if QUEUE_TYPES.contains(&t.as_str()) => Some(t.clone()),
        Some(t) => {
            return Err(ApiError::bad_request(format!(
                "invalid_queue_type: {t} is not one of classic, quorum, stream"
            )))
        }
    };
    let meta = VhostMeta {
        description: text_field(&body, "description")?,
        tags: parse_tags(body.get("tags"))?,
        default_queue_type: qt,
    };
    let (_, created) = server.broker.put_vhost(name, Some(meta));
    if !created {
        return Ok(Response::empty(204));
    }
    log::info!(
        "{}: vhost '{name}' created via the management API",
        caller.peer
    );
    let user = caller.user.name().to_owned();
    if server
        .auth
        .set_permissions(&user, name, Permissions::full())
    {
        server.save_auth().map_err(|e| {
            ApiError::new(
                500,
                "internal_server_error",
                format!("cannot save users: {e}"),
            )
        })?;
    }
    Ok(Response::empty(201))
}

/// The limits of every vhost that has some (or of `only`, [] when it has none), as
/// `[{"vhost": V, "value": {"max-connections": N, ...}}]`.
fn limits_json(server: &Server, only: Option<VhostId>) -> Value {
    let rows: Vec<Value> = server
        .broker
        .vhosts()
        .filter(|(id, v)| only.is_none_or(|o| o == *id) && !v.limits.is_empty())
        .map(|(_, v)| {
            let mut value = Map::new();
            if let Some(n) = v.limits.max_connections {
                value.insert("max-connections".into(), json!(n));
            }
            if let Some(n) = v.limits.max_queues {
                value.insert("max-queues".into(), json!(n));
            }
            json!({"vhost": &*v.name, "value": value})
        })
        .collect();
    Value::Array(rows)
}

/// `PUT /api/vhost-limits/{vhost}/{name}` with `{"value": N}`: 204; RabbitMQ's
/// validation texts for an unknown limit or a value that is not an integer.
fn set_limit(server: &mut Server, req: &Request, vh: &str, name: &str) -> ApiResult {
    let id = server
        .broker
        .lookup_vhost(vh.as_bytes())
        .map(|(id, _)| id)
        .ok_or_else(|| ApiError::new(404, "not_found", "vhost_not_found"))?;
    let body = json_body(req)?;
    let Some(value) = body.get("value") else {
        return Err(ApiError::bad_request("[{key_missing,value}]"));
    };
    let mut limits = server
        .broker
        .vhost(id)
        .map(|v| v.limits)
        .unwrap_or_default();
    let Some(slot) = limits.slot(name) else {
        return Err(ApiError::bad_request(format!(
            "Validation failed\n\nUnrecognised terms [{{<<\"{name}\">>,{value}}}] in limits\n"
        )));
    };
    let Some(n) = value.as_i64() else {
        let shown = match value {
            Value::String(s) => format!("<<\"{s}\">>"),
            v => v.to_string(),
        };
        return Err(ApiError::bad_request(format!(
            "Validation failed\n\n{name} should be a number, actually was {shown}\n"
        )));
    };
    *slot = Some(n);
    server.broker.set_vhost_limits(id, limits);
    Ok(Response::empty(204))
}

/// `DELETE /api/vhost-limits/{vhost}/{name}`: 204, also for a limit that is not set.
/// (RabbitMQ answers 500 for an unknown vhost; 404 here.)
fn clear_limit(server: &mut Server, vh: &str, name: &str) -> ApiResult {
    let id = super::vhost(server, vh)?;
    let mut limits = server
        .broker
        .vhost(id)
        .map(|v| v.limits)
        .unwrap_or_default();
    if let Some(slot) = limits.slot(name) {
        *slot = None;
        server.broker.set_vhost_limits(id, limits);
    }
    Ok(Response::empty(204))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_parsed_as_rabbitmq_parses_them() {
        assert_eq!(parse_tags(None).unwrap(), Vec::<String>::new());
        assert_eq!(parse_tags(Some(&json!(""))).unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_tags(Some(&json!("a, b ,c"))).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(parse_tags(Some(&json!(["x", " y"]))).unwrap(), ["x", "y"]);
        assert!(parse_tags(Some(&json!(3))).is_err());
    }
}
