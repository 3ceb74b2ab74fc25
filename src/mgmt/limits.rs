//! Topic permissions and user limits in the management API (issue 11), as RabbitMQ
//! 3.10's management plugin serves them:
//!
//! - `GET /api/topic-permissions`, `GET /api/users/{user}/topic-permissions`,
//!   `GET /api/vhosts/{vhost}/topic-permissions`;
//! - `GET|PUT|DELETE /api/topic-permissions/{vhost}/{user}`: the GET lists one row per
//!   exchange (404 when there is none), the PUT sets one exchange's
//!   `{"exchange", "write", "read"}` (201 when the user had none in the vhost, 204
//!   otherwise), the DELETE removes all of them (RabbitMQ takes no `exchange` there);
//! - `GET /api/user-limits[/{user}]`, `PUT|DELETE /api/user-limits/{user}/{name}` with
//!   `{"value": N}`; `max-connections` and `max-channels`.
//!
//! The data lives in [`crate::auth::Auth`]; every change is saved with
//! `Server::save_auth`. Everything here is administrator-only, as in RabbitMQ, except
//! the user-limits reads, which every management user may make.

use serde_json::{json, Map, Value};

use super::{json_body, list, method_not_allowed, ApiError, ApiResult, Caller};
use crate::auth::{Pattern, TopicPermissionInfo, UserLimits};
use crate::http::{Request, Response};
use crate::server::Server;

pub fn route(
    server: &mut Server,
    caller: &Caller,
    req: &Request,
    segs: &[String],
) -> Option<ApiResult> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = req.method == "GET" || req.method == "HEAD";
    let put = req.method == "PUT";
    let delete = req.method == "DELETE";
    let r = match s.as_slice() {
        ["topic-permissions"] if get => {
            require_admin(server, caller).and_then(|_| list(req, topic_rows(server, |_| true)))
        }
        ["topic-permissions", vh, user] if get => require_admin(server, caller)
            .and_then(|_| existing(server, vh, user))
            .and_then(|_| {
                let rows = topic_rows(server, |t| &*t.vhost == *vh && &*t.user == *user);
                if rows.is_empty() {
                    Err(ApiError::not_found())
                } else {
                    list(req, rows)
                }
            }),
        ["topic-permissions", vh, user] if put => {
            require_admin(server, caller).and_then(|_| put_topic(server, req, vh, user))
        }
        ["topic-permissions", vh, user] if delete => {
            require_admin(server, caller).and_then(|_| delete_topic(server, vh, user))
        }
        ["users", user, "topic-permissions"] if get => require_admin(server, caller)
            .and_then(|_| {
                server
                    .auth
                    .user(user)
                    .map(|_| ())
                    .ok_or_else(ApiError::not_found)
            })
            .and_then(|_| list(req, topic_rows(server, |t| &*t.user == *user))),
        ["vhosts", vh, "topic-permissions"] if get => require_admin(server, caller)
            .and_then(|_| super::vhost(server, vh))
            .and_then(|_| list(req, topic_rows(server, |t| &*t.vhost == *vh))),
        // Readable by every management user, as in RabbitMQ.
        ["user-limits"] if get => list(req, limit_rows(server, |_| true)),
        ["user-limits", user] if get => match server.auth.user(user) {
            None => Err(ApiError::not_found()),
            Some(_) => list(req, limit_rows(server, |u| u == *user)),
        },
        ["user-limits", user, name] if put => {
            require_admin(server, caller).and_then(|_| put_limit(server, req, user, name))
        }
        ["user-limits", user, name] if delete => {
            require_admin(server, caller).and_then(|_| delete_limit(server, user, name))
        }
        ["topic-permissions"]
        | ["topic-permissions", _, _]
        | ["users" | "vhosts", _, "topic-permissions"]
        | ["user-limits"]
        | ["user-limits", _]
        | ["user-limits", _, _] => Ok(method_not_allowed()),
        _ => return None,
    };
    Some(r)
}

// ----- authorization ---------------------------------------------------------------------

/// RabbitMQ's answer to a non-administrator here (`access::require_admin`).
fn require_admin(_server: &Server, caller: &Caller) -> Result<(), ApiError> {
    super::access::require_admin(caller)
}

fn save(server: &mut Server) -> Result<(), ApiError> {
    server
        .save_auth()
        .map_err(|e| ApiError::new(500, "internal_server_error", e.to_string()))
}

// ----- topic permissions -----------------------------------------------------------------

fn topic_rows(server: &Server, keep: impl Fn(&TopicPermissionInfo) -> bool) -> Vec<Value> {
    let mut rows: Vec<TopicPermissionInfo> = server
        .auth
        .topic_permissions()
        .into_iter()
        .filter(keep)
        .collect();
    rows.sort_by(|a, b| (&a.user, &a.vhost, &a.exchange).cmp(&(&b.user, &b.vhost, &b.exchange)));
    rows.into_iter()
        .map(|t| {
            json!({
                "user": &*t.user,
                "vhost": &*t.vhost,
                "exchange": &*t.exchange,
                "write": t.write.as_str(),
                "read": t.read.as_str(),
            })
        })
        .collect()
}

/// 404 unless both the vhost and the user exist (RabbitMQ's `resource_exists`).
fn existing(server: &Server, vh: &str, user: &str) -> Result<(), ApiError> {
    super::vhost(server, vh)?;
    server
        .auth
        .user(user)
        .map(|_| ())
        .ok_or_else(ApiError::not_found)
}

/// RabbitMQ's 400 for the fields a body lacks: `[{key_missing,write},...]`.
fn required<'a>(body: &'a Map<String, Value>, keys: &[&str]) -> Result<Vec<&'a Value>, ApiError> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| !body.contains_key(**k))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!("[{}]", missing.join(","))));
    }
    Ok(keys.iter().filter_map(|k| body.get(*k)).collect())
}

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    v.as_str()
        .ok_or_else(|| ApiError::bad_request(format!("{key} must be a string")))
}

fn pattern(s: &str) -> Result<Pattern, ApiError> {
    Pattern::parse(s).map_err(|e| ApiError::bad_request(format!("invalid_regexp '{s}': {e}")))
}

fn put_topic(server: &mut Server, req: &Request, vh: &str, user: &str) -> ApiResult {
    let body = json_body(req)?;
    let v = required(&body, &["exchange", "write", "read"])?;
    let exchange = text(v[0], "exchange")?;
    let write = pattern(text(v[1], "write")?)?;
    let read = pattern(text(v[2], "read")?)?;
    if super::vhost(server, vh).is_err() || server.auth.user(user).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    // The resource is the user's topic permissions in the vhost: created with the first.
    let had = server
        .auth
        .topic_permissions()
        .iter()
        .any(|t| &*t.vhost == vh && &*t.user == user);
    server
        .auth
        .set_topic_permissions(user, vh, exchange, write, read);
    save(server)?;
    Ok(Response::empty(if had { 204 } else { 201 }))
}

fn delete_topic(server: &mut Server, vh: &str, user: &str) -> ApiResult {
    existing(server, vh, user)?;
    if !server.auth.clear_topic_permissions(user, vh, None) {
        return Err(ApiError::not_found());
    }
    save(server)?;
    Ok(Response::empty(204))
}

// ----- user limits -----------------------------------------------------------------------

/// The limits RabbitMQ knows for users.
const LIMITS: [&str; 2] = ["max-connections", "max-channels"];

fn limits_json(l: &UserLimits) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(n) = l.max_channels {
        m.insert("max-channels".into(), json!(n));
    }
    if let Some(n) = l.max_connections {
        m.insert("max-connections".into(), json!(n));
    }
    m
}

/// `[{"user": ..., "value": {...}}]` for the users with any limit.
fn limit_rows(server: &Server, keep: impl Fn(&str) -> bool) -> Vec<Value> {
    server
        .auth
        .users()
        .into_iter()
        .filter(|u| keep(&u.name))
        .filter_map(|u| {
            let m = limits_json(&u.limits);
            (!m.is_empty()).then(|| json!({"user": &*u.name, "value": m}))
        })
        .collect()
}

/// A JSON value as the Erlang term RabbitMQ's messages show.
fn erl(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        other => other.to_string(),
    }
}

fn put_limit(server: &mut Server, req: &Request, user: &str, name: &str) -> ApiResult {
    let body = json_body(req)?;
    let v = required(&body, &["value"])?[0];
    if !LIMITS.contains(&name) {
        return Err(ApiError::bad_request(format!(
            "Unrecognised terms [{{<<\"{name}\">>,{}}}] in user-limits",
            erl(v)
        )));
    }
    // RabbitMQ takes any integer; a negative one means no limit.
    let value = match v.as_i64() {
        Some(n) if n < 0 => None,
        Some(n) => Some(n as u64),
        None => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                return Err(ApiError::bad_request(format!(
                    "{name} should be a number, actually was {}",
                    erl(v)
                )))
            }
        },
    };
    if server.auth.user(user).is_none() {
        return Err(ApiError::bad_request(format!("no_such_user: {user}")));
    }
    let mut l = server.auth.user_limits(user);
    if name == "max-connections" {
        l.max_connections = value;
    } else {
        l.max_channels = value;
    }
    server.auth.set_user_limits(user, l);
    save(server)?;
    Ok(Response::empty(204))
}

fn delete_limit(server: &mut Server, user: &str, name: &str) -> ApiResult {
    // RabbitMQ answers 500 for a user that does not exist; 404 says it better.
    if server.auth.user(user).is_none() {
        return Err(ApiError::not_found());
    }
    let mut l = server.auth.user_limits(user);
    match name {
        "max-connections" => l.max_connections = None,
        "max-channels" => l.max_channels = None,
        // Not a limit RabbitMQ knows: nothing to clear, and no error (as RabbitMQ).
        _ => return Ok(Response::empty(204)),
    }
    server.auth.set_user_limits(user, l);
    save(server)?;
    Ok(Response::empty(204))
}
