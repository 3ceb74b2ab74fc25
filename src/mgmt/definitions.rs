//! `/api/definitions` and `/api/definitions/{vhost}`: export (`GET`) and import
//! (`POST`) of users, vhosts, permissions, exchanges, queues and bindings in RabbitMQ
//! 3.10's JSON format, so a file exported from RabbitMQ imports into Warren and back.
//!
//! Import is in three steps, so that a bad file changes nothing: [`parse_definitions`]
//! (pure, fuzzed: shape, types, names, arguments), then a plan against the broker
//! (inequivalent redeclares, reserved names, permissions) that mutates nothing, then the
//! apply. What Warren cannot hold is skipped with a log line, never an error: users
//! other than the ones it has (issue 11 adds users), policies, parameters, permission
//! patterns beyond `.*` and `""`, objects of a vhost that neither exists nor is in the
//! file, and bindings whose ends are missing (RabbitMQ skips those too).

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{json_table, table_json, vhost, ApiError, ApiResult, Caller};
use crate::auth::{Pattern, Permission, Permissions, Resource};
use crate::broker::exchange::ExchangeKind;
use crate::broker::{args, Dest, ExchangeDecl, QueueDecl};
use crate::http::{Request, Response};
use crate::ops::{self, DestinationType};
use crate::proto::FieldTable;
use crate::server::Server;

/// A parsed definitions file. `vhost` fields are None in a per-vhost file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    pub users: Vec<String>,
    pub vhosts: Vec<String>,
    pub permissions: Vec<PermissionDef>,
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
    /// Non-empty sections Warren does not apply (policies, parameters, ...).
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDef {
    pub vhost: Option<String>,
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    pub vhost: Option<String>,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BindingDef {
    pub vhost: Option<String>,
    pub source: String,
    pub destination: String,
    pub destination_type: DestinationType,
    pub routing_key: String,
    pub arguments: FieldTable,
}

pub fn route(
    server: &mut Server,
    caller: &Caller,
    req: &Request,
    segs: &[String],
) -> Option<ApiResult> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let r = match (s.as_slice(), m) {
        (["definitions"], "GET" | "HEAD") => Ok(export(server, req, None)),
        (["definitions"], "POST") => import(server, caller, req, None),
        (["definitions", vh], "GET" | "HEAD") => match vhost(server, vh) {
            Ok(_) => Ok(export(server, req, Some(vh))),
            Err(_) => Err(ApiError::bad_request("vhost_not_found")),
        },
        (["definitions", vh], "POST") => match vhost(server, vh) {
            Ok(_) => import(server, caller, req, Some(vh)),
            Err(_) => Err(ApiError::new(404, "not_found", "vhost_not_found")),
        },
        (["definitions"] | ["definitions", _], _) => Ok(super::method_not_allowed()),
        _ => return None,
    };
    Some(r)
}

// ----- export --------------------------------------------------------------------------

/// The definitions as RabbitMQ exports them: no built-in exchanges (`""`, `amq.*`), no
/// exclusive queues, no default-exchange bindings. Per vhost: only `rabbit_version`,
/// `parameters`, `policies`, `queues`, `exchanges`, `bindings`, without `vhost` fields.
/// `?download=NAME` makes it an attachment, as the dashboard's export link asks.
fn export(server: &Server, req: &Request, only: Option<&str>) -> Response {
    let keep = |vh: &str| only.is_none_or(|o| o == vh);
    let with_vhost = |mut m: Map<String, Value>, vh: &str| {
        if only.is_none() {
            m.insert("vhost".into(), json!(vh));
        }
        Value::Object(m)
    };
    let queues: Vec<Value> = ops::queues(&server.broker)
        .iter()
        .filter(|q| !q.exclusive && keep(&q.vhost))
        .map(|q| {
            let mut m = Map::new();
            m.insert("name".into(), json!(String::from_utf8_lossy(&q.name)));
            m.insert("durable".into(), json!(q.durable));
            m.insert("auto_delete".into(), json!(q.auto_delete));
            m.insert("arguments".into(), table_json(&q.arguments));
            with_vhost(m, &q.vhost)
        })
        .collect();
    let exchanges: Vec<Value> = ops::exchanges(&server.broker)
        .iter()
        .filter(|x| !x.name.is_empty() && !x.name.starts_with(b"amq.") && keep(&x.vhost))
        .map(|x| {
            let mut m = Map::new();
            m.insert("name".into(), json!(String::from_utf8_lossy(&x.name)));
            m.insert("type".into(), json!(x.kind));
            m.insert("durable".into(), json!(x.durable));
            m.insert("auto_delete".into(), json!(x.auto_delete));
            m.insert("internal".into(), json!(x.internal));
            m.insert("arguments".into(), table_json(&x.arguments));
            with_vhost(m, &x.vhost)
        })
        .collect();
    let bindings: Vec<Value> = ops::bindings(&server.broker)
        .iter()
        .filter(|b| !b.source.is_empty() && keep(&b.vhost))
        .map(|b| {
            let mut m = Map::new();
            m.insert("source".into(), json!(String::from_utf8_lossy(&b.source)));
            m.insert(
                "destination".into(),
                json!(String::from_utf8_lossy(&b.destination)),
            );
            m.insert("destination_type".into(), json!(b.destination_type.name()));
            m.insert(
                "routing_key".into(),
                json!(String::from_utf8_lossy(&b.routing_key)),
            );
            m.insert("arguments".into(), table_json(&b.arguments));
            with_vhost(m, &b.vhost)
        })
        .collect();
    let version = super::overview::RABBITMQ_VERSION;
    let body = if only.is_some() {
        json!({
            "rabbit_version": version,
            "parameters": [],
            "policies": [],
            "queues": queues,
            "exchanges": exchanges,
            "bindings": bindings,
        })
    } else {
        let users: Vec<Value> = server
            .auth
            .users()
            .iter()
            .map(|u| {
                let tags: Vec<&str> = u.tags.iter().map(|t| t.name()).collect();
                json!({
                    "name": &*u.name,
                    "password_hash": server.auth.password_hash(&u.name).unwrap_or_default(),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": tags,
                    "limits": {},
                })
            })
            .collect();
        let vhosts: Vec<Value> = server
            .broker
            .vhosts()
            .map(|(_, v)| json!({"name": &*v.name}))
            .collect();
        let permissions = super::overview::permissions(server);
        json!({
            "rabbit_version": version,
            "rabbitmq_version": version,
            "product_name": "Warren",
            "product_version": env!("CARGO_PKG_VERSION"),
            "users": users,
            "vhosts": vhosts,
            "permissions": permissions,
            "topic_permissions": [],
            "parameters": [],
            "global_parameters": [],
            "policies": [],
            "queues": queues,
            "exchanges": exchanges,
            "bindings": bindings,
        })
    };
    let resp = Response::json(200, &body);
    match req.param("download").filter(|d| !d.is_empty()) {
        Some(name) => {
            // Only a plain file name goes into the header (no quotes, no CR/LF).
            let name: String = name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.+".contains(*c))
                .collect();
            resp.with_header(
                "content-disposition",
                format!("attachment; filename=\"{name}\""),
            )
        }
        None => resp,
    }
}

// ----- parsing -------------------------------------------------------------------------

fn bad(reason: impl Into<String>) -> ApiError {
    ApiError::bad_request(reason)
}

/// The longest name AMQP can carry (a short string).
const MAX_NAME: usize = 255;

fn section<'a>(top: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], ApiError> {
    match top.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(bad(format!("'{key}' must be a list"))),
    }
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object()
        .ok_or_else(|| bad(format!("each of '{what}' must be an object")))
}

fn string(m: &Map<String, Value>, key: &str, what: &str) -> Result<String, ApiError> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad(format!("{what}: '{key}' must be a string"))),
        None => Err(bad(format!("{what}: '{key}' is missing"))),
    }
}

fn name(m: &Map<String, Value>, key: &str, what: &str) -> Result<String, ApiError> {
    let s = string(m, key, what)?;
    if s.len() > MAX_NAME {
        return Err(bad(format!("{what}: '{key}' is longer than 255 bytes")));
    }
    Ok(s)
}

fn opt_string(m: &Map<String, Value>, key: &str, what: &str) -> Result<Option<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string(m, key, what).map(Some),
    }
}

/// A flag: RabbitMQ's files have booleans; a missing one is false.
fn flag(m: &Map<String, Value>, key: &str, what: &str) -> Result<bool, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(_) => Err(bad(format!("{what}: '{key}' must be a boolean"))),
    }
}

fn arguments(m: &Map<String, Value>, what: &str) -> Result<FieldTable, ApiError> {
    json_table(m.get("arguments"))
        .map_err(|_| bad(format!("{what}: 'arguments' must be an object")))
}

/// Parses and validates a definitions file (the whole body: JSON, RabbitMQ's format)
/// without looking at the broker: sections are lists of objects, names are strings of
/// at most 255 bytes, flags booleans, arguments objects that pass the same checks as a
/// declare's, exchange types and destination types known. 400 with the reason
/// otherwise. Pure, so it can be fuzzed ([`crate::fuzzing`]'s `definitions`).
pub fn parse_definitions(body: &[u8]) -> Result<Definitions, ApiError> {
    let top = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => return Err(bad("failed_to_parse_json")),
    };
    let mut d = Definitions::default();
    for u in section(&top, "users")? {
        d.users.push(name(object(u, "users")?, "name", "user")?);
    }
    for v in section(&top, "vhosts")? {
        d.vhosts.push(name(object(v, "vhosts")?, "name", "vhost")?);
    }
    for p in section(&top, "permissions")? {
        let m = object(p, "permissions")?;
        let what = "permission";
        d.permissions.push(PermissionDef {
            user: name(m, "user", what)?,
            vhost: name(m, "vhost", what)?,
            configure: string(m, "configure", what)?,
            write: string(m, "write", what)?,
            read: string(m, "read", what)?,
        });
    }
    for x in section(&top, "exchanges")? {
        let m = object(x, "exchanges")?;
        let n = name(m, "name", "exchange")?;
        let what = format!("exchange '{n}'");
        let vh = opt_string(m, "vhost", &what)?;
        let kind = match m.get("type") {
            Some(Value::String(s)) => s.clone(),
            _ => "undefined".to_owned(),
        };
        let kind = ExchangeKind::parse(kind.as_bytes())
            .ok_or_else(|| bad(format!("{what}: invalid exchange type '{kind}'")))?;
        let a = arguments(m, &what)?;
        args::validate_exchange_declare(vh.as_deref().unwrap_or(""), n.as_bytes(), &a)
            .map_err(|e| bad(e.text))?;
        d.exchanges.push(ExchangeDef {
            vhost: vh,
            durable: flag(m, "durable", &what)?,
            auto_delete: flag(m, "auto_delete", &what)?,
            internal: flag(m, "internal", &what)?,
            arguments: a,
            kind,
            name: n,
        });
    }
    for q in section(&top, "queues")? {
        let m = object(q, "queues")?;
        let n = name(m, "name", "queue")?;
        let what = format!("queue '{n}'");
        if n.is_empty() {
            return Err(bad("queue: 'name' is empty"));
        }
        let vh = opt_string(m, "vhost", &what)?;
        let durable = flag(m, "durable", &what)?;
        let auto_delete = flag(m, "auto_delete", &what)?;
        let a = arguments(m, &what)?;
        args::validate_queue_declare(
            vh.as_deref().unwrap_or(""),
            n.as_bytes(),
            &a,
            durable,
            false,
            auto_delete,
        )
        .map_err(|e| bad(e.text))?;
        d.queues.push(QueueDef {
            vhost: vh,
            name: n,
            durable,
            auto_delete,
            arguments: a,
        });
    }
    for b in section(&top, "bindings")? {
        let m = object(b, "bindings")?;
        let what = "binding";
        let destination_type = match string(m, "destination_type", what)?.as_str() {
            "queue" => DestinationType::Queue,
            "exchange" => DestinationType::Exchange,
            other => return Err(bad(format!("binding: unknown destination_type '{other}'"))),
        };
        let routing_key = match m.get("routing_key") {
            None | Some(Value::Null) => String::new(),
            Some(_) => name(m, "routing_key", what)?,
        };
        d.bindings.push(BindingDef {
            vhost: opt_string(m, "vhost", what)?,
            source: name(m, "source", what)?,
            destination: name(m, "destination", what)?,
            destination_type,
            routing_key,
            arguments: arguments(m, what)?,
        });
    }
    for key in [
        "topic_permissions",
        "parameters",
        "global_parameters",
        "policies",
    ] {
        if !section(&top, key)?.is_empty() {
            d.ignored.push(key.to_owned());
        }
    }
    Ok(d)
}

/// The definitions file in a request: a JSON body, or the `file` part of the dashboard's
/// `multipart/form-data` upload (RabbitMQ's form).
fn file_of(req: &Request) -> Result<&[u8], ApiError> {
    let ct = req.header("content-type").unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("multipart/form-data") {
        return Ok(&req.body);
    }
    let boundary = ct
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad("multipart body without a boundary"))?;
    let delim = format!("--{boundary}");
    let body = &req.body[..];
    let mut parts = split(body, delim.as_bytes()).into_iter();
    parts.next(); // the preamble
    for part in parts {
        let Some(head_end) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..head_end]).to_ascii_lowercase();
        if !head.contains("name=\"file\"") {
            continue;
        }
        let content = &part[head_end + 4..];
        return Ok(content.strip_suffix(b"\r\n").unwrap_or(content));
    }
    Err(bad("multipart body without a 'file' part"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], delim: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(at) = find(hay, delim) {
        out.push(&hay[..at]);
        hay = &hay[at + delim.len()..];
    }
    out.push(hay);
    out
}

// ----- import --------------------------------------------------------------------------

/// One change the import will make, planned before anything is changed.
enum Step {
    Vhost(String),
    Permissions(String, String, Permissions),
    Exchange(String, ExchangeDecl),
    Queue(String, QueueDecl),
    Binding(String, BindingDef),
}

/// `POST /api/definitions[/{vhost}]`: parse, plan (every check the declares would
/// make, nothing changed), apply. 204, or 400/401 with the first problem and no change.
fn import(server: &mut Server, caller: &Caller, req: &Request, only: Option<&str>) -> ApiResult {
    let defs = parse_definitions(file_of(req)?)?;
    let steps = plan(server, caller, &defs, only)?;
    let applied = apply(server, caller, steps);
    // Permissions the import set (and those of the vhosts it created) are durable too,
    // even when a later step failed.
    server
        .save_auth()
        .map_err(|e| ApiError::new(500, "internal_server_error", e.to_string()))?;
    applied?;
    Ok(Response::empty(204))
}

/// The vhost an object goes to: the per-vhost import's, else its own `vhost` field.
fn target<'a>(only: Option<&'a str>, own: &'a Option<String>) -> Option<&'a str> {
    only.or(own.as_deref())
}

fn plan(
    server: &Server,
    caller: &Caller,
    defs: &Definitions,
    only: Option<&str>,
) -> Result<Vec<Step>, ApiError> {
    let b = &server.broker;
    let mut steps = Vec::new();
    for s in &defs.ignored {
        log::info!("definitions import: section '{s}' is not supported by Warren; skipped");
    }
    for u in &defs.users {
        if !server.auth.users().iter().any(|x| &*x.name == u) {
            log::info!("definitions import: user '{u}' skipped (Warren has built-in users only)");
        }
    }
    // Vhosts (a per-vhost file has none).
    let mut new_vhosts: Vec<&str> = Vec::new();
    if only.is_none() {
        for v in &defs.vhosts {
            if b.lookup_vhost(v.as_bytes()).is_none() && !new_vhosts.contains(&v.as_str()) {
                new_vhosts.push(v);
                steps.push(Step::Vhost(v.clone()));
            }
        }
    }
    let known = |vh: &str| b.lookup_vhost(vh.as_bytes()).is_some() || new_vhosts.contains(&vh);
    let usable = |vh: Option<&str>, what: &str| -> Option<String> {
        match vh {
            Some(v) if known(v) => Some(v.to_owned()),
            Some(v) => {
                log::info!("definitions import: {what} skipped: vhost '{v}' does not exist");
                None
            }
            None => {
                log::info!("definitions import: {what} skipped: no vhost");
                None
            }
        }
    };
    // What the caller may configure: in a vhost made by this import, everything (the
    // importing user gets full permissions there, as in RabbitMQ).
    let may = |vh: &str, r: Resource<'_>| -> Result<(), ApiError> {
        if new_vhosts.contains(&vh) {
            return Ok(());
        }
        server
            .auth
            .authorize(&caller.user, vh, Permission::Configure, r)
            .map_err(|_| ApiError::new(401, "not_authorised", "Access refused."))
    };
    if only.is_none() {
        for p in &defs.permissions {
            let users = server.auth.users();
            let patterns = (
                Pattern::parse(&p.configure).ok(),
                Pattern::parse(&p.write).ok(),
                Pattern::parse(&p.read).ok(),
            );
            match (users.iter().any(|u| *u.name == *p.user), patterns) {
                (true, (Some(configure), Some(write), Some(read))) if known(&p.vhost) => {
                    steps.push(Step::Permissions(
                        p.user.clone(),
                        p.vhost.clone(),
                        Permissions {
                            configure,
                            write,
                            read,
                        },
                    ));
                }
                _ => log::info!(
                    "definitions import: permissions of '{}' in vhost '{}' skipped (unknown user or vhost, or patterns Warren cannot hold yet)",
                    p.user,
                    p.vhost
                ),
            }
        }
    }
    let mut declared_x: Vec<(String, ExchangeDecl)> = Vec::new();
    for x in &defs.exchanges {
        let what = format!("exchange '{}'", x.name);
        let Some(vh) = usable(target(only, &x.vhost), &what) else {
            continue;
        };
        let d = ExchangeDecl {
            name: Bytes::copy_from_slice(x.name.as_bytes()),
            kind: Bytes::from_static(x.kind.name().as_bytes()),
            passive: false,
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: x.arguments.clone(),
        };
        let existing = b
            .lookup_vhost(vh.as_bytes())
            .and_then(|(v, _)| b.exchange_id(v, x.name.as_bytes()).map(|_| v));
        if x.name.is_empty() || x.name.starts_with("amq.") {
            if existing.is_none() {
                return Err(ApiError::new(401, "not_authorised", "Access refused."));
            }
            // A built-in exchange in the file: already there, nothing to do.
            continue;
        }
        may(&vh, Resource::Exchange(x.name.as_bytes()))?;
        if let Some((_, earlier)) = declared_x
            .iter()
            .find(|(h, e)| *h == vh && e.name == d.name)
        {
            check_exchange(&vh, earlier, &d)?;
            continue;
        }
        if let Some(x) = existing
            .and_then(|v| b.exchange_id(v, &d.name))
            .and_then(|id| b.exchange(id))
        {
            check_exchange(&vh, &existing_exchange(x), &d)?;
        }
        declared_x.push((vh.clone(), d.clone()));
        steps.push(Step::Exchange(vh, d));
    }
    let mut declared_q: Vec<(String, QueueDecl)> = Vec::new();
    for q in &defs.queues {
        let what = format!("queue '{}'", q.name);
        let Some(vh) = usable(target(only, &q.vhost), &what) else {
            continue;
        };
        if q.name.starts_with("amq.") {
            return Err(ApiError::new(401, "not_authorised", "Access refused."));
        }
        may(&vh, Resource::Queue(q.name.as_bytes()))?;
        let mut d = QueueDecl::named(Bytes::copy_from_slice(q.name.as_bytes()));
        d.durable = q.durable;
        d.auto_delete = q.auto_delete;
        d.arguments = q.arguments.clone();
        if let Some((_, earlier)) = declared_q
            .iter()
            .find(|(h, e)| *h == vh && e.name == d.name)
        {
            check_queue(&vh, earlier, false, &d)?;
            continue;
        }
        let existing = b
            .lookup_vhost(vh.as_bytes())
            .and_then(|(v, _)| b.queue_id(v, q.name.as_bytes()))
            .and_then(|id| b.queue(id));
        if let Some(cur) = existing {
            let mut c = QueueDecl::named(cur.name.clone());
            c.durable = cur.props.durable;
            c.auto_delete = cur.props.auto_delete;
            c.arguments = cur.props.arguments.clone();
            check_queue(&vh, &c, cur.owner.is_some(), &d)?;
        }
        declared_q.push((vh.clone(), d.clone()));
        steps.push(Step::Queue(vh, d));
    }
    for bd in &defs.bindings {
        let what = format!(
            "binding of '{}' to {} '{}'",
            bd.source,
            bd.destination_type.name(),
            bd.destination
        );
        let Some(vh) = usable(target(only, &bd.vhost), &what) else {
            continue;
        };
        let v = b.lookup_vhost(vh.as_bytes()).map(|(v, _)| v);
        let has_x = |n: &str| {
            declared_x
                .iter()
                .any(|(h, x)| *h == vh && x.name == n.as_bytes())
                || v.is_some_and(|v| b.exchange_id(v, n.as_bytes()).is_some())
        };
        let has_q = |n: &str| {
            declared_q
                .iter()
                .any(|(h, q)| *h == vh && q.name == n.as_bytes())
                || v.is_some_and(|v| b.queue_id(v, n.as_bytes()).is_some())
        };
        let dest_ok = match bd.destination_type {
            DestinationType::Queue => has_q(&bd.destination),
            DestinationType::Exchange => !bd.destination.is_empty() && has_x(&bd.destination),
        };
        if bd.source.is_empty() || !has_x(&bd.source) || !dest_ok {
            log::info!("definitions import: {what} in vhost '{vh}' skipped: an end is missing");
            continue;
        }
        steps.push(Step::Binding(vh, bd.clone()));
    }
    Ok(steps)
}

/// An exchange already there (in the broker, or earlier in the file) against the
/// file's: the checks of exchange.declare, which compares an existing exchange and
/// changes nothing.
fn check_exchange(vn: &str, cur: &ExchangeDecl, d: &ExchangeDecl) -> Result<(), ApiError> {
    let name = String::from_utf8_lossy(&d.name);
    let ineq = |arg: &str, got: String, cur: String| {
        ApiError::bad_request(format!(
            "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vn}': received '{got}' but current is '{cur}'"
        ))
    };
    if cur.kind != d.kind {
        return Err(ineq(
            "type",
            String::from_utf8_lossy(&d.kind).into_owned(),
            String::from_utf8_lossy(&cur.kind).into_owned(),
        ));
    }
    for (arg, got, cur) in [
        ("durable", d.durable, cur.durable),
        ("auto_delete", d.auto_delete, cur.auto_delete),
        ("internal", d.internal, cur.internal),
    ] {
        if got != cur {
            return Err(ineq(arg, got.to_string(), cur.to_string()));
        }
    }
    args::check_exchange_equivalence(vn, &d.name, &d.arguments, &cur.arguments)
        .map_err(|e| ApiError::bad_request(e.text))
}

/// The declaration an existing exchange answers to.
fn existing_exchange(x: &crate::broker::exchange::Exchange) -> ExchangeDecl {
    ExchangeDecl {
        name: x.name.clone(),
        kind: Bytes::from_static(x.kind.name().as_bytes()),
        passive: false,
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: x.arguments.clone(),
    }
}

/// A queue already there (in the broker, or earlier in the file) against the file's:
/// the checks of queue.declare. `exclusive`: the existing queue belongs to a connection.
fn check_queue(vn: &str, cur: &QueueDecl, exclusive: bool, d: &QueueDecl) -> Result<(), ApiError> {
    let name = String::from_utf8_lossy(&d.name);
    if exclusive {
        return Err(ApiError::bad_request(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{vn}'"
        )));
    }
    for (arg, got, cur) in [
        ("durable", d.durable, cur.durable),
        ("auto_delete", d.auto_delete, cur.auto_delete),
    ] {
        if got != cur {
            return Err(ApiError::bad_request(format!(
                "inequivalent arg '{arg}' for queue '{name}' in vhost '{vn}': received '{got}' but current is '{cur}'"
            )));
        }
    }
    args::check_queue_equivalence(vn, &d.name, &d.arguments, &cur.arguments)
        .map_err(|e| ApiError::bad_request(e.text))
}

fn apply(server: &mut Server, caller: &Caller, steps: Vec<Step>) -> Result<(), ApiError> {
    let vid = |server: &Server, vh: &str| vhost(server, vh);
    for step in steps {
        match step {
            Step::Vhost(name) => {
                server.broker.add_vhost(&name);
                server
                    .auth
                    .set_permissions(caller.user.name(), &name, Permissions::full());
                log::info!("definitions import: created vhost '{name}'");
            }
            Step::Permissions(user, vh, p) => {
                server.auth.set_permissions(&user, &vh, p);
            }
            Step::Exchange(vh, d) => {
                let v = vid(server, &vh)?;
                server
                    .broker
                    .declare_exchange(v, &d)
                    .map_err(ApiError::from)?;
            }
            Step::Queue(vh, d) => {
                let v = vid(server, &vh)?;
                server
                    .broker
                    .declare_queue(v, &d, usize::MAX, |_| Ok(()))
                    .map_err(ApiError::from)?;
            }
            Step::Binding(vh, bd) => {
                let v = vid(server, &vh)?;
                let dest = match bd.destination_type {
                    DestinationType::Queue => server
                        .broker
                        .queue_id(v, bd.destination.as_bytes())
                        .map(Dest::Queue),
                    DestinationType::Exchange => server
                        .broker
                        .exchange_id(v, bd.destination.as_bytes())
                        .map(Dest::Exchange),
                };
                // Planned to exist; an auto-delete end may have gone with an earlier step.
                let Some(dest) = dest else { continue };
                server
                    .broker
                    .bind(
                        v,
                        bd.source.as_bytes(),
                        dest,
                        Bytes::from(bd.routing_key),
                        bd.arguments,
                    )
                    .map_err(ApiError::from)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_rabbitmq_export() {
        let d = parse_definitions(include_bytes!(
            "../../tests/data/rabbitmq-3.10-definitions.json"
        ))
        .unwrap();
        assert_eq!(d.queues.len(), 3);
        assert_eq!(d.exchanges.len(), 4);
        assert_eq!(d.bindings.len(), 5);
        assert_eq!(d.vhosts, vec!["xb-fixture-vh".to_owned(), "/".to_owned()]);
        assert!(d.ignored.contains(&"global_parameters".to_owned()));
    }

    #[test]
    fn refuses_malformed_files_with_a_reason() {
        for (body, reason) in [
            (&b"{"[..], "failed_to_parse_json"),
            (b"[1]", "failed_to_parse_json"),
            (b"{\"queues\": 1}", "'queues' must be a list"),
            (b"{\"queues\": [1]}", "each of 'queues' must be an object"),
            (b"{\"queues\": [{\"durable\": true}]}", "queue: 'name' is missing"),
            (
                b"{\"exchanges\": [{\"name\": \"x\", \"type\": \"bogus\"}]}",
                "exchange 'x': invalid exchange type 'bogus'",
            ),
            (
                b"{\"queues\": [{\"name\": \"q\", \"durable\": \"x\"}]}",
                "queue 'q': 'durable' must be a boolean",
            ),
            (
                b"{\"bindings\": [{\"source\": \"x\", \"destination\": \"q\", \"destination_type\": \"topic\"}]}",
                "binding: unknown destination_type 'topic'",
            ),
        ] {
            let e = parse_definitions(body).unwrap_err();
            assert_eq!((e.status, e.reason.as_str()), (400, reason));
        }
        assert!(parse_definitions(b"{}").unwrap() == Definitions::default());
    }
}
