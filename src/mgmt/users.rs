//! Users and permissions in the HTTP API, as RabbitMQ 3.10's management plugin answers
//! them: `/api/users[/{name}[/permissions]]`, `/api/users/without-permissions`,
//! `/api/users/bulk-delete`, `/api/permissions[/{vhost}/{user}]` and
//! `/api/vhosts/{vhost}/permissions`, with RabbitMQ's bodies, status codes and error
//! reasons. Every change is saved at once (`Server::save_auth`): a 2xx means the users
//! file holds it.

use serde_json::{json, Map, Value};

use super::{json_body, list, method_not_allowed, ApiError, ApiResult, Caller};
use crate::auth::{self, Credential, Pattern, Permissions, UserInfo, UserLimits};
use crate::http::{Request, Response};
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
    // Only paths this module owns are answered; the rest fall through (None).
    let ours = matches!(
        s.as_slice(),
        ["users"]
            | ["users", _]
            | ["users", _, "permissions"]
            | ["permissions"]
            | ["permissions", _, _]
            | ["vhosts", _, "permissions"]
    );
    if !ours {
        return None;
    }
    if let Err(e) = require_admin(server, caller) {
        return Some(Err(e));
    }
    let r = match s.as_slice() {
        ["users"] if get => list(req, users_json(server)),
        ["users", "without-permissions"] if get => {
            let with: Vec<_> = server.auth.permissions();
            let rows = server
                .auth
                .users()
                .iter()
                .filter(|u| !with.iter().any(|p| p.user == u.name))
                .map(user_json)
                .collect();
            list(req, rows)
        }
        ["users", "bulk-delete"] if m == "POST" => bulk_delete(server, req),
        ["users", "without-permissions" | "bulk-delete"] => Ok(method_not_allowed()),
        ["users", name] if get => server
            .auth
            .user(name)
            .map(|u| Response::json(200, &user_json(&u)))
            .ok_or_else(ApiError::not_found),
        ["users", name] if m == "PUT" => put_user(server, req, name),
        ["users", name] if m == "DELETE" => {
            if !server.delete_user(name) {
                return Some(Err(ApiError::not_found()));
            }
            saved(server).map(|()| Response::empty(204))
        }
        ["users", name, "permissions"] if get => {
            if server.auth.user(name).is_none() {
                return Some(Err(ApiError::not_found()));
            }
            let rows = permission_rows(server, |p| &*p.user == *name);
            list(req, rows)
        }
        ["permissions"] if get => list(req, permission_rows(server, |_| true)),
        ["permissions", vh, user] if get => {
            permission_rows(server, |p| &*p.vhost == *vh && &*p.user == *user)
                .into_iter()
                .next()
                .map(|p| Response::json(200, &p))
                .ok_or_else(ApiError::not_found)
        }
        ["permissions", vh, user] if m == "PUT" => put_permissions(server, req, vh, user),
        ["permissions", vh, user] if m == "DELETE" => {
            if !server.auth.clear_permissions(user, vh) {
                return Some(Err(ApiError::not_found()));
            }
            saved(server).map(|()| Response::empty(204))
        }
        ["vhosts", vh, "permissions"] if get => {
            if server.broker.lookup_vhost(vh.as_bytes()).is_none() {
                return Some(Err(ApiError::not_found()));
            }
            list(req, permission_rows(server, |p| &*p.vhost == *vh))
        }
        _ => Ok(method_not_allowed()),
    };
    Some(r)
}

/// Administrators only, until the management authorization rules land
/// (`mgmt::access::require_admin` replaces this at merge). RabbitMQ's answer to a
/// non-administrator.
fn require_admin(_server: &Server, caller: &Caller) -> Result<(), ApiError> {
    super::access::require_admin(caller)
}

/// Saves the users file after a change; a failure is the request's 500.
fn saved(server: &Server) -> Result<(), ApiError> {
    server
        .save_auth()
        .map_err(|e| ApiError::new(500, "internal_server_error", e.to_string()))
}

/// A user as RabbitMQ 3.10 shows it: `tags` is a list; `limits` holds only the limits
/// that are set, by RabbitMQ's names.
pub fn user_json(u: &UserInfo) -> Value {
    let tags: Vec<&str> = u.tags_text.iter().map(|t| &**t).collect();
    json!({
        "name": &*u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": tags,
        "limits": limits_json(u.limits),
    })
}

/// `{"max-connections": n, "max-channels": n}` with only the limits that are set.
pub fn limits_json(l: UserLimits) -> Value {
    let mut m = Map::new();
    if let Some(n) = l.max_connections {
        m.insert("max-connections".into(), json!(n));
    }
    if let Some(n) = l.max_channels {
        m.insert("max-channels".into(), json!(n));
    }
    Value::Object(m)
}

fn users_json(server: &Server) -> Vec<Value> {
    server.auth.users().iter().map(user_json).collect()
}

fn permission_rows(server: &Server, keep: impl Fn(&auth::PermissionInfo) -> bool) -> Vec<Value> {
    server
        .auth
        .permissions()
        .into_iter()
        .filter(|p| keep(p))
        .map(|p| {
            json!({
                "user": &*p.user,
                "vhost": &*p.vhost,
                "configure": p.permissions.configure.as_str(),
                "write": p.permissions.write.as_str(),
                "read": p.permissions.read.as_str(),
            })
        })
        .collect()
}

/// RabbitMQ's `tags`: a comma-separated string or a list of strings.
pub fn parse_tags(v: &Value) -> Result<Vec<String>, ApiError> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match v {
        Value::String(s) => Ok(split(s)),
        Value::Array(a) => {
            let mut out = Vec::new();
            for t in a {
                match t {
                    Value::String(s) => out.extend(split(s)),
                    _ => return Err(ApiError::bad_request("tags must be strings")),
                }
            }
            Ok(out)
        }
        _ => Err(ApiError::bad_request(
            "tags must be a comma-separated string or a list",
        )),
    }
}

/// `PUT /api/users/{name}`: `password`, or `password_hash` (+ `hashing_algorithm`), or
/// neither; `tags` always (RabbitMQ 3.10 refuses a body without it). 201 created, 204
/// updated. With neither password nor hash a new user gets the hash of the empty
/// password and an existing one loses its password, as RabbitMQ does; both are
/// password-less (an empty password never logs in).
fn put_user(server: &mut Server, req: &Request, name: &str) -> ApiResult {
    let body = json_body(req)?;
    let tags = match body.get("tags") {
        None => return Err(ApiError::bad_request("tags_not_present")),
        Some(v) => parse_tags(v)?,
    };
    let string = |key: &str| -> Result<Option<String>, ApiError> {
        match body.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
        }
    };
    let exists = server.auth.user(name).is_some();
    let cred = match (string("password")?, string("password_hash")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "both_password_and_password_hash_are_provided",
            ))
        }
        (Some(p), None) => Credential::Password(p.into_bytes()),
        (None, Some(h)) => {
            if !h.is_empty() && super::base64_decode(&h).is_none() {
                return Ok(bad_request_json(json!(["not_base64", h])));
            }
            let algorithm = match string("hashing_algorithm")? {
                None => auth::HASHING_ALGORITHM,
                Some(a) => auth::hashing_algorithm(&a).ok_or_else(|| {
                    ApiError::bad_request(format!("unsupported hashing_algorithm '{a}'"))
                })?,
            };
            Credential::HashWith(h, algorithm)
        }
        (None, None) if exists => Credential::NoPassword,
        (None, None) => Credential::Password(Vec::new()),
    };
    let limits = match body.get("limits") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_limits(v, server.auth.user_limits(name))?),
    };
    let created = server
        .auth
        .put_user(name, cred, tags)
        .map_err(ApiError::bad_request)?;
    if let Some(l) = limits {
        server.auth.set_user_limits(name, l);
    }
    saved(server)?;
    Ok(Response::empty(if created { 201 } else { 204 }))
}

/// A 400 whose reason is not a string but RabbitMQ's Erlang term as JSON, e.g.
/// `["not_base64", HASH]` (`ApiError` carries text only).
fn bad_request_json(reason: Value) -> Response {
    Response::json(400, &json!({"error": "bad_request", "reason": reason}))
}

/// A user's `limits` object (`max-connections`, `max-channels`; a negative value is
/// no limit, as RabbitMQ's -1), merged into the limits `current` (a key not given keeps
/// its limit, as RabbitMQ's PUT does).
fn parse_limits(v: &Value, current: UserLimits) -> Result<UserLimits, ApiError> {
    let Value::Object(m) = v else {
        return Err(ApiError::bad_request("limits must be an object"));
    };
    let mut l = current;
    for (k, v) in m {
        let n = v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| ApiError::bad_request(format!("limit '{k}' must be an integer")))?;
        let n = u64::try_from(n).ok();
        match k.as_str() {
            "max-connections" => l.max_connections = n,
            "max-channels" => l.max_channels = n,
            _ => return Err(ApiError::bad_request(format!("unknown limit '{k}'"))),
        }
    }
    Ok(l)
}

/// `POST /api/users/bulk-delete` `{"users": [...]}`: deletes in order; an unknown name
/// stops there with RabbitMQ's 400 `["no_such_user", NAME]` (the ones before it are
/// gone, as in RabbitMQ).
fn bulk_delete(server: &mut Server, req: &Request) -> ApiResult {
    let body = json_body(req)?;
    let names = match body.get("users") {
        None => return Err(ApiError::bad_request("[{key_missing,users}]")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::bad_request("users must be a list")),
    };
    let mut result = Ok(Response::empty(204));
    for n in names {
        let Some(n) = n.as_str() else {
            result = Err(ApiError::bad_request("users must be strings"));
            break;
        };
        if !server.delete_user(n) {
            result = Ok(bad_request_json(json!(["no_such_user", n])));
            break;
        }
    }
    saved(server)?;
    result
}

/// `PUT /api/permissions/{vhost}/{user}` `{"configure", "write", "read"}`: all three
/// required (RabbitMQ's `[{key_missing,write}]`), each a valid regex; an unknown vhost
/// or user is RabbitMQ's 400 `vhost_or_user_not_found`. 201 created, 204 updated.
fn put_permissions(server: &mut Server, req: &Request, vh: &str, user: &str) -> ApiResult {
    let body = json_body(req)?;
    let missing: Vec<String> = ["configure", "write", "read"]
        .iter()
        .filter(|k| !body.contains_key(**k))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!("[{}]", missing.join(","))));
    }
    if server.broker.lookup_vhost(vh.as_bytes()).is_none() || server.auth.user(user).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    // Err(Ok(response)): RabbitMQ's `["invalid_regexp", PATTERN, WHY]` as JSON.
    let pattern = |key: &str| -> Result<Pattern, ApiResult> {
        let s = match body.get(key) {
            Some(Value::String(s)) => s.as_str(),
            _ => {
                return Err(Err(ApiError::bad_request(format!(
                    "{key} must be a string"
                ))))
            }
        };
        Pattern::parse(s).map_err(|e| Ok(bad_request_json(json!(["invalid_regexp", s, e]))))
    };
    let p = match (pattern("configure"), pattern("write"), pattern("read")) {
        (Ok(configure), Ok(write), Ok(read)) => Permissions {
            configure,
            write,
            read,
        },
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let existed = server
        .auth
        .permissions()
        .iter()
        .any(|x| &*x.user == user && &*x.vhost == vh);
    server.auth.set_permissions(user, vh, p);
    saved(server)?;
    Ok(Response::empty(if existed { 204 } else { 201 }))
}
