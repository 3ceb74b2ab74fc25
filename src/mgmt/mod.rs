//! The management plane: RabbitMQ's HTTP API (3.10's management plugin: its paths,
//! methods, status codes, JSON field names and error bodies), the dashboard's files, and
//! Prometheus metrics, answered on the reactor thread from snapshots of the broker.
//!
//! [`handle`] takes one parsed request and returns its response; it never touches a
//! socket. Requests are authenticated with HTTP Basic against [`crate::auth`]; the router
//! splits the path into percent-decoded segments (`/api/queues/%2F/q` is
//! `["api", "queues", "/", "q"]`) and hands them to one module per resource, each with a
//! `route` that answers `None` for a path it does not serve (404). Changes go through the
//! same broker operations and [`crate::ops`] as AMQP, so an HTTP declare is checked exactly
//! as a queue.declare is; their [`AmqpError`]s become RabbitMQ's HTTP errors
//! ([`ApiError::from`]).
//!
//! Lists ([`list`]) take RabbitMQ's query parameters: `page`, `page_size`, `name` with
//! `use_regex`, `sort`, `sort_reverse`, `columns`.
//!
//! Doors: uses `server`, `ops`, `broker`, `auth`, `http`; nothing below calls it.

pub mod access;
pub mod bindings;
pub mod connections;
pub mod definitions;
pub mod exchanges;
pub mod health;
pub mod limits;
pub mod overview;
pub mod phash2;
pub mod policies;
pub mod prometheus;
pub mod queues;
pub mod stats;
pub mod users;
pub mod vhosts;

use serde_json::{json, Map, Value};
use std::net::SocketAddr;

use crate::auth::{Tag, User};
use crate::broker::VhostId;
use crate::error::{AmqpError, ReplyCode};
use crate::http::conn::Service;
use crate::http::{Request, Response};
use crate::proto::{FieldTable, FieldValue};
use crate::server::Server;

/// The realm RabbitMQ's management plugin announces.
const REALM: &str = "Basic realm=\"RabbitMQ Management\"";
/// RabbitMQ's largest page (`?MAX_PAGE_SIZE`).
const MAX_PAGE_SIZE: usize = 500;

/// An error answer: RabbitMQ's `{"error": ..., "reason": ...}` with its status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub error: &'static str,
    pub reason: String,
}

impl ApiError {
    pub fn new(status: u16, error: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            reason: reason.into(),
        }
    }

    pub fn not_found() -> ApiError {
        ApiError::new(404, "Object Not Found", "Not Found")
    }

    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", reason)
    }

    pub fn response(&self) -> Response {
        Response::json(
            self.status,
            &json!({"error": self.error, "reason": self.reason}),
        )
    }
}

/// RabbitMQ's HTTP answer to an operation's AMQP error: a refused permission or reserved
/// name is 401 `not_authorised`, a missing object 404, anything else 400 with the reason
/// (an inequivalent declare, a locked queue, a bad argument).
impl From<AmqpError> for ApiError {
    fn from(e: AmqpError) -> ApiError {
        match e.code {
            ReplyCode::AccessRefused => ApiError::new(401, "not_authorised", "Access refused."),
            ReplyCode::NotFound => ApiError::not_found(),
            _ => ApiError::bad_request(e.text),
        }
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// 405 with no body, as RabbitMQ answers a method a resource does not take.
pub fn method_not_allowed() -> Response {
    Response::empty(405)
}

/// What a handler knows about who is asking: the user, where from, and its tags as
/// they were when the request came (what [`access`] decides by).
pub struct Caller {
    pub user: User,
    pub peer: SocketAddr,
    pub tags: Vec<Tag>,
}

/// Answers one request of `service`.
pub fn handle(server: &mut Server, service: Service, req: &Request, peer: SocketAddr) -> Response {
    match service {
        Service::Prometheus => prometheus(server, req),
        Service::Management => management(server, req, peer),
    }
}

/// The Prometheus listener: `GET /metrics` (aggregated) and `/metrics/per-object`
/// (`mgmt::prometheus`), in RabbitMQ's text format and content type.
fn prometheus(server: &mut Server, req: &Request) -> Response {
    let per_object = match req.path.as_str() {
        "/metrics" => false,
        "/metrics/per-object" => true,
        _ => return ApiError::not_found().response(),
    };
    if req.method != "GET" && req.method != "HEAD" {
        return method_not_allowed();
    }
    let body = prometheus::render(server, per_object).into_bytes();
    Response::new(200, "text/plain; version=0.0.4", body)
}

fn management(server: &mut Server, req: &Request, peer: SocketAddr) -> Response {
    let Some(segs) = req.segments() else {
        return ApiError::bad_request("bad path encoding").response();
    };
    if segs.first().map(String::as_str) != Some("api") {
        return asset(req);
    }
    let user = match authenticate(server, req, peer) {
        Ok(u) => u,
        Err(r) => return r,
    };
    // A user without a management tag may not use the API at all (RabbitMQ's
    // `is_mgmt_user`).
    let tags = server.auth.tags(&user).to_vec();
    if let Err(e) = access::require_management(&tags) {
        log::warn!("{peer}: HTTP access refused: user '{user}' - {}", e.reason);
        return e.response();
    }
    let caller = Caller { user, peer, tags };
    let rest = &segs[1..];
    let routed = match rest.first().map(String::as_str) {
        Some("topic-permissions" | "user-limits") => limits::route(server, &caller, req, rest),
        Some("users" | "vhosts")
            if rest.get(2).map(String::as_str) == Some("topic-permissions") =>
        {
            limits::route(server, &caller, req, rest)
        }
        Some("policies" | "operator-policies") => policies::route(server, &caller, req, rest),
        Some("queues") => queues::route(server, &caller, req, rest),
        Some("exchanges") => exchanges::route(server, &caller, req, rest),
        Some("bindings") => bindings::route(server, &caller, req, rest),
        Some("definitions") => definitions::route(server, &caller, req, rest),
        Some("users" | "permissions") => users::route(server, &caller, req, rest),
        Some("connections" | "channels" | "consumers") => {
            connections::route(server, &caller, req, rest)
                .or_else(|| overview::route(server, &caller, req, rest))
        }
        // `/api/vhosts/{v}/permissions` is users.rs's.
        Some("vhosts" | "vhost-limits") => vhosts::route(server, &caller, req, rest)
            .or_else(|| connections::route(server, &caller, req, rest))
            .or_else(|| users::route(server, &caller, req, rest)),
        Some("health" | "aliveness-test") => health::route(server, &caller, req, rest),
        _ => overview::route(server, &caller, req, rest),
    };
    match routed {
        Some(Ok(r)) => r,
        Some(Err(e)) => e.response(),
        None => ApiError::not_found().response(),
    }
}

/// The dashboard's files (GET and HEAD only).
fn asset(req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return method_not_allowed();
    }
    match crate::http::assets::asset(&req.path) {
        // no-cache: a browser revalidates, so an upgraded broker serves its own dashboard.
        Some((ctype, body)) => Response::new(200, ctype, body.to_vec())
            .with_header("cache-control", "no-cache")
            .with_header("x-content-type-options", "nosniff"),
        None => Response::text(404, "Not Found"),
    }
}

/// HTTP Basic against Warren's users, with RabbitMQ's 401 otherwise.
fn authenticate(server: &Server, req: &Request, peer: SocketAddr) -> Result<User, Response> {
    let refused = |reason: &str| {
        Response::json(401, &json!({"error": "not_authorized", "reason": reason}))
            .with_header("www-authenticate", REALM)
    };
    let Some(h) = req.header("authorization") else {
        return Err(refused("Not_Authorized"));
    };
    // Another scheme is a failed login; a Basic header that does not parse (bad base64,
    // no colon) is a bad request, as cowboy answers it: 400, no body, no challenge.
    let Some(b) = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))
    else {
        return Err(if h.eq_ignore_ascii_case("basic") {
            Response::empty(400)
        } else {
            refused("Login failed")
        });
    };
    let Some(decoded) = base64_decode(b.trim()) else {
        return Err(Response::empty(400));
    };
    let creds = String::from_utf8_lossy(&decoded);
    let Some((user, pass)) = creds.split_once(':') else {
        return Err(Response::empty(400));
    };
    match server.auth.check_password(user, pass.as_bytes(), peer) {
        Ok(u) => Ok(u),
        Err(e) => {
            log::warn!("{peer}: HTTP access refused: {e}");
            // RabbitMQ's answer to a loopback-only user from afar: 401 without a
            // challenge, spelt "not_authorised".
            if let crate::auth::AuthError::LoopbackOnly { .. } = e {
                return Err(Response::json(
                    401,
                    &json!({"error": "not_authorised", "reason": "User can only log in via localhost"}),
                ));
            }
            Err(refused("Login failed"))
        }
    }
}

/// Standard base64 (RFC 4648, padding optional) to bytes; None when malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// Standard base64 with padding.
pub fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

// ----- vhosts, bodies ----------------------------------------------------------------

/// The vhost named `name`, or 404.
pub fn vhost(server: &Server, name: &str) -> Result<VhostId, ApiError> {
    server
        .broker
        .lookup_vhost(name.as_bytes())
        .map(|(id, _)| id)
        .ok_or_else(ApiError::not_found)
}

/// The request's JSON body as an object (an empty body is `{}`); 400 `not_json`
/// otherwise, as RabbitMQ.
pub fn json_body(req: &Request) -> Result<Map<String, Value>, ApiError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        // RabbitMQ takes `null` as no body, and names the likely mistake behind a string.
        Ok(Value::Null) => Ok(Map::new()),
        Ok(Value::String(_)) => Err(ApiError::bad_request(
            "invalid payload: the request body JSON-decoded to a string. \
             Is the input doubly-JSON-encoded?",
        )),
        Ok(_) => Err(ApiError::bad_request("not_json")),
        Err(_) => Err(ApiError::bad_request("not_json")),
    }
}

/// A boolean field of a body: RabbitMQ takes `true`/`false` and their strings.
pub fn bool_field(body: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a boolean"))),
    }
}

/// A query flag such as `if-empty=true`.
pub fn query_flag(req: &Request, key: &str) -> bool {
    req.param(key).is_some_and(|v| v == "true")
}

// ----- field tables and JSON ---------------------------------------------------------

/// A field table as RabbitMQ's API shows it: strings as strings, numbers as numbers,
/// arrays and nested tables as JSON arrays and objects.
pub fn table_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.iter() {
        m.insert(String::from_utf8_lossy(k).into_owned(), value_json(v));
    }
    Value::Object(m)
}

fn value_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => json!(b),
        FieldValue::I8(n) => json!(n),
        FieldValue::U8(n) => json!(n),
        FieldValue::I16(n) => json!(n),
        FieldValue::U16(n) => json!(n),
        FieldValue::I32(n) => json!(n),
        FieldValue::U32(n) => json!(n),
        FieldValue::I64(n) => json!(n),
        FieldValue::F32(n) => json!(n),
        FieldValue::F64(n) => json!(n),
        FieldValue::Decimal(scale, v) => json!(*v as f64 / 10f64.powi(*scale as i32)),
        FieldValue::LongStr(b) | FieldValue::ByteArray(b) => {
            json!(String::from_utf8_lossy(b))
        }
        FieldValue::Array(a) => Value::Array(a.iter().map(value_json).collect()),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(t) => table_json(t),
        FieldValue::Void => Value::Null,
    }
}

/// A JSON `arguments` object as a field table, typed as RabbitMQ's management plugin
/// does (integers as signed 64-bit `l`, strings as long strings `S`, booleans `t`,
/// floats `d`, arrays `A`, objects `F`). 400 when it is not an object.
pub fn json_table(v: Option<&Value>) -> Result<FieldTable, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(FieldTable::new()),
        Some(Value::Object(m)) => {
            let mut t = FieldTable::new();
            for (k, v) in m {
                t.insert(bytes::Bytes::copy_from_slice(k.as_bytes()), json_value(v));
            }
            Ok(t)
        }
        // The dashboard's forms send "" for no arguments.
        Some(Value::String(s)) if s.is_empty() => Ok(FieldTable::new()),
        Some(_) => Err(ApiError::bad_request("arguments must be an object")),
    }
}

fn json_value(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongStr(bytes::Bytes::copy_from_slice(s.as_bytes())),
        Value::Array(a) => FieldValue::Array(a.iter().map(json_value).collect()),
        Value::Object(m) => {
            let mut t = FieldTable::new();
            for (k, v) in m {
                t.insert(bytes::Bytes::copy_from_slice(k.as_bytes()), json_value(v));
            }
            FieldValue::Table(t)
        }
    }
}

// ----- shared views ------------------------------------------------------------------

/// A message's encoded content-header properties as RabbitMQ's API shows them (`[]`, the
/// Erlang empty list, when there are none; that is what RabbitMQ sends).
pub fn properties_json(raw: &bytes::Bytes) -> Value {
    let Ok(p) = crate::proto::properties::BasicProperties::decode(raw) else {
        return json!([]);
    };
    let mut m = Map::new();
    let s = |b: &Option<bytes::Bytes>| b.as_ref().map(|b| json!(String::from_utf8_lossy(b)));
    let fields = [
        ("content_type", s(&p.content_type)),
        ("content_encoding", s(&p.content_encoding)),
        ("headers", p.headers.as_ref().map(table_json)),
        ("delivery_mode", p.delivery_mode.map(|v| json!(v))),
        ("priority", p.priority.map(|v| json!(v))),
        ("correlation_id", s(&p.correlation_id)),
        ("reply_to", s(&p.reply_to)),
        ("expiration", s(&p.expiration)),
        ("message_id", s(&p.message_id)),
        ("timestamp", p.timestamp.map(|v| json!(v))),
        ("type", s(&p.kind)),
        ("user_id", s(&p.user_id)),
        ("app_id", s(&p.app_id)),
        ("cluster_id", s(&p.cluster_id)),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    }
    if m.is_empty() {
        json!([])
    } else {
        Value::Object(m)
    }
}

/// RabbitMQ's `properties` object of a publish request as content-header properties;
/// 400 for a field of the wrong type.
pub fn json_properties(
    v: Option<&Value>,
) -> Result<crate::proto::properties::BasicProperties, ApiError> {
    let mut p = crate::proto::properties::BasicProperties::default();
    let m = match v {
        None | Some(Value::Null) => return Ok(p),
        Some(Value::Array(a)) if a.is_empty() => return Ok(p),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::bad_request("properties must be an object")),
    };
    let text = |k: &str| -> Result<Option<bytes::Bytes>, ApiError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(bytes::Bytes::copy_from_slice(s.as_bytes()))),
            Some(_) => Err(ApiError::bad_request(format!(
                "property {k} must be a string"
            ))),
        }
    };
    let int = |k: &str, max: u64| -> Result<Option<u64>, ApiError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("property {k} must be an integer"))),
        }
    };
    p.content_type = text("content_type")?;
    p.content_encoding = text("content_encoding")?;
    if let Some(h) = m.get("headers") {
        p.headers = Some(json_table(Some(h))?);
    }
    p.delivery_mode = int("delivery_mode", 255)?.map(|v| v as u8);
    p.priority = int("priority", 255)?.map(|v| v as u8);
    p.correlation_id = text("correlation_id")?;
    p.reply_to = text("reply_to")?;
    p.expiration = text("expiration")?;
    p.message_id = text("message_id")?;
    p.timestamp = int("timestamp", u64::MAX)?;
    p.kind = text("type")?;
    p.user_id = text("user_id")?;
    p.app_id = text("app_id")?;
    p.cluster_id = text("cluster_id")?;
    Ok(p)
}

/// Now as RabbitMQ writes times in the API: `2026-12-06T21:01:54.318+00:00`.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_millis() as u64)
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmm+00:00` (UTC).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A queue's `message_stats` (filled from the statistics counters, `mgmt::stats`).
pub fn message_stats_queue(server: &Server, q: &crate::ops::QueueInfo) -> Value {
    let name = String::from_utf8_lossy(&q.name);
    stats::queue_message_stats(server, &q.vhost, &name).unwrap_or_else(|| json!({}))
}

/// A consumer as RabbitMQ's API shows it.
pub fn consumer_json(server: &Server, c: &crate::ops::ConsumerInfo) -> Value {
    let conn = server.conns.get(c.conn).map(|k| k.info());
    // The consume arguments stay with the consumer's channel (not in the queue's
    // consumer list, which dispatch walks per message).
    let arguments = server
        .conns
        .get(c.conn)
        .and_then(|k| k.channel(c.channel))
        .and_then(|ch| ch.consumer(&c.tag))
        .and_then(|cc| cc.args.as_deref())
        .map_or_else(|| json!({}), table_json);
    let conn_name = conn.as_ref().map_or(String::new(), |i| i.name.clone());
    let (peer_host, peer_port, user) = conn
        .as_ref()
        .map_or((String::new(), 0, String::new()), |i| {
            (i.peer.ip().to_string(), i.peer.port(), i.user.clone())
        });
    json!({
        "consumer_tag": String::from_utf8_lossy(&c.tag),
        "exclusive": c.exclusive,
        "ack_required": c.ack_required,
        "prefetch_count": c.prefetch,
        "active": c.activity_status != "waiting",
        "activity_status": c.activity_status,
        "arguments": arguments,
        "queue": {"name": String::from_utf8_lossy(&c.queue), "vhost": &*c.vhost},
        "channel_details": {
            "name": format!("{conn_name} ({})", c.channel),
            "number": c.channel,
            "connection_name": conn_name,
            "peer_host": peer_host,
            "peer_port": peer_port,
            "user": user,
            "node": overview::node_name(),
        },
    })
}

/// A binding as RabbitMQ's API shows it, with its `properties_key` (the routing key,
/// `~` plus a hash when there are arguments; `~` alone for an empty key).
pub fn binding_json(b: &crate::ops::BindingInfo) -> Value {
    let key = String::from_utf8_lossy(&b.routing_key).into_owned();
    json!({
        "source": String::from_utf8_lossy(&b.source),
        "vhost": &*b.vhost,
        "destination": String::from_utf8_lossy(&b.destination),
        "destination_type": b.destination_type.name(),
        "routing_key": key,
        "arguments": table_json(&b.arguments),
        "properties_key": properties_key(&key, &b.arguments),
    })
}

/// RabbitMQ's binding properties key (`rabbit_mgmt_format:pack_binding_props`): the
/// routing key quoted as mochiweb's `quote_plus` does (a space is `+`) with `~` escaped
/// too, then `~HASH` when the binding has arguments, HASH being base64url of their
/// 32-bit `erlang:phash2` ([`phash2`]); `~` alone for an empty key without arguments.
pub fn properties_key(routing_key: &str, args: &FieldTable) -> String {
    let key = bindings::quote_plus(routing_key).replace('~', "%7E");
    if args.is_empty() {
        return if key.is_empty() { "~".to_owned() } else { key };
    }
    let hash = base64_encode(&phash2::args_hash(args).to_be_bytes())
        .replace('+', "-")
        .replace('/', "_");
    format!("{key}~{}", hash.trim_end_matches('='))
}

/// The bindings whose destination is queue `name` in `vh` (the default exchange's
/// implicit one first, as RabbitMQ lists it).
pub fn bindings_of_queue(server: &Server, vh: &str, name: &str) -> Vec<Value> {
    let mut v = vec![json!({
        "source": "",
        "vhost": vh,
        "destination": name,
        "destination_type": "queue",
        "routing_key": name,
        "arguments": {},
        "properties_key": properties_key(name, &FieldTable::new()),
    })];
    v.extend(
        crate::ops::bindings(&server.broker)
            .iter()
            .filter(|b| {
                &*b.vhost == vh
                    && b.destination_type == crate::ops::DestinationType::Queue
                    && &b.destination[..] == name.as_bytes()
                    && !b.source.is_empty()
            })
            .map(binding_json),
    );
    v
}

// ----- lists -------------------------------------------------------------------------

/// A list answer with RabbitMQ's query parameters applied, for rows already in JSON.
/// See [`list_by`].
pub fn list(req: &Request, items: Vec<Value>) -> ApiResult {
    let s = select(
        req,
        items,
        |v| v.get("name").and_then(Value::as_str).unwrap_or(""),
        |v| v.get("vhost").and_then(Value::as_str).unwrap_or(""),
        |v, path| json_path(v, path).map(sort_key),
    )?;
    let rows: Vec<Value> = s.rows.into_iter().map(|v| pick(&s.columns, v)).collect();
    Ok(match s.page {
        None => Response::json(200, &Value::Array(rows)),
        Some(p) => Response::json(200, &p.envelope(rows)),
    })
}

/// Lists longer than this, asked for whole (no `page`), are streamed: rendered
/// [`STREAM_BATCH`] rows per loop turn.
const STREAM_OVER: usize = 1000;
const STREAM_BATCH: usize = 200;

/// A list answer with RabbitMQ's query parameters applied: without `page`, the whole
/// (sorted) list; with it, the envelope `{items, page, page_count, page_size,
/// filtered_count, item_count, total_count}`. `name` filters by a case-insensitive
/// substring (a case-insensitive regex with `use_regex=true`); `sort` names a field
/// (dotted for nested ones: `message_stats.publish`), `sort_reverse=true` reverses;
/// `columns` keeps only the named top-level fields.
///
/// Rows stay in their cheap snapshot form `T` while they are filtered and sorted; only
/// the rows answered are rendered to JSON. `key(row, path)` gives a row's sort key for
/// a dotted field path, `None` when the row lacks it; a list with 100,000 queues sorts
/// on integers, not on 100,000 JSON objects. A whole list longer than [`STREAM_OVER`]
/// rows is streamed (rendered a batch per loop turn) rather than rendered at once.
pub fn list_by<T: 'static>(
    server: &Server,
    req: &Request,
    items: Vec<T>,
    name: impl Fn(&T) -> &str,
    vhost: impl Fn(&T) -> &str,
    key: impl Fn(&T, &[&str]) -> Option<SortKey>,
    render: impl Fn(&Server, T) -> Value + 'static,
) -> ApiResult {
    let s = select(req, items, name, vhost, key)?;
    let columns = s.columns;
    let show = move |server: &Server, t: T| pick(&columns, render(server, t));
    Ok(match s.page {
        None if s.rows.len() > STREAM_OVER => {
            Response::json_stream(200, s.rows, STREAM_BATCH, show)
        }
        None => {
            let all: Vec<Value> = s.rows.into_iter().map(|t| show(server, t)).collect();
            Response::json(200, &Value::Array(all))
        }
        Some(p) => {
            let rows: Vec<Value> = s.rows.into_iter().map(|t| show(server, t)).collect();
            Response::json(200, &p.envelope(rows))
        }
    })
}

/// The rows a list answers (one page of them when paged), and how to present them.
struct Selected<T> {
    rows: Vec<T>,
    page: Option<Page>,
    columns: Option<Vec<String>>,
}

/// Where a page sits in its list.
struct Page {
    page: usize,
    size: usize,
    page_count: usize,
    filtered: usize,
    total: usize,
}

impl Page {
    /// RabbitMQ's paging envelope around `items`.
    fn envelope(&self, items: Vec<Value>) -> Value {
        json!({
            "filtered_count": self.filtered,
            "item_count": items.len(),
            "items": items,
            "page": self.page,
            "page_count": self.page_count,
            "page_size": self.size,
            "total_count": self.total,
        })
    }
}

/// Keeps only the `columns` of an object (RabbitMQ's `columns` parameter).
fn pick(columns: &Option<Vec<String>>, v: Value) -> Value {
    match (columns, v) {
        (Some(cols), Value::Object(mut m)) => {
            m.retain(|k, _| cols.iter().any(|c| c == k));
            Value::Object(m)
        }
        (_, v) => v,
    }
}

/// Filters, sorts and pages `items` as the request's parameters say.
fn select<T>(
    req: &Request,
    items: Vec<T>,
    name: impl Fn(&T) -> &str,
    vhost: impl Fn(&T) -> &str,
    key: impl Fn(&T, &[&str]) -> Option<SortKey>,
) -> Result<Selected<T>, ApiError> {
    let total = items.len();
    let number = |p: Option<&str>| match p {
        None => Ok(None),
        Some(p) => p
            .parse::<usize>()
            .map(Some)
            .map_err(|_| ApiError::bad_request("Pagination parameters are invalid")),
    };
    let page = number(req.param("page"))?;
    let page_size = number(req.param("page_size"))?;
    let mut items = items;
    if page.is_some() {
        if let Some(pattern) = req.param("name").filter(|n| !n.is_empty()) {
            if query_flag(req, "use_regex") {
                let re = regex::RegexBuilder::new(pattern)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|_| ApiError::bad_request("Pagination parameters are invalid"))?;
                items.retain(|v| re.is_match(name(v)));
            } else {
                let needle = pattern.to_lowercase();
                items.retain(|v| contains_caseless(name(v), &needle));
            }
        }
    }
    match req.param("sort").filter(|s| !s.is_empty()) {
        None => items.sort_by(|a, b| (vhost(a), name(a)).cmp(&(vhost(b), name(b)))),
        Some(field) => {
            let path: Vec<&str> = field.split('.').collect();
            let mut keyed: Vec<(Option<SortKey>, T)> =
                items.into_iter().map(|t| (key(&t, &path), t)).collect();
            keyed.sort_by(|a, b| cmp_keys(a.0.as_ref(), b.0.as_ref()));
            items = keyed.into_iter().map(|(_, t)| t).collect();
        }
    }
    if query_flag(req, "sort_reverse") {
        items.reverse();
    }
    let columns: Option<Vec<String>> = req.param("columns").map(|c| {
        c.split(',')
            .map(|c| c.split('.').next().unwrap_or(c).to_owned())
            .collect()
    });
    let Some(page) = page else {
        return Ok(Selected {
            rows: items,
            page: None,
            columns,
        });
    };
    let size = page_size.unwrap_or(100);
    if page == 0 || size == 0 || size > MAX_PAGE_SIZE {
        let size = page_size.map_or("undefined".to_owned(), |s| s.to_string());
        return Err(ApiError::new(
            400,
            "invalid_pagination_parameters",
            format!("Invalid pagination parameters: page number {page}, page size {size}"),
        ));
    }
    let filtered = items.len();
    // 0 pages for an empty (filtered) list, as RabbitMQ counts.
    let page_count = filtered.div_ceil(size);
    let start = (page - 1).saturating_mul(size);
    if start > filtered || (start == filtered && filtered > 0) {
        return Err(ApiError::new(
            400,
            "page_out_of_range",
            format!("Page out of range, page: {page} page size: {size}, len: {filtered}"),
        ));
    }
    let rows: Vec<T> = items.into_iter().skip(start).take(size).collect();
    Ok(Selected {
        rows,
        page: Some(Page {
            page,
            size,
            page_count,
            filtered,
            total,
        }),
        columns,
    })
}

/// A sort key: numbers before strings (RabbitMQ's Erlang term order puts numbers first).
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    Num(f64),
    Str(String),
    /// Anything else (objects, lists, booleans), by its JSON text.
    Other(String),
}

/// The sort key of a JSON value.
pub fn sort_key(v: &Value) -> SortKey {
    match v {
        Value::Number(n) => SortKey::Num(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => SortKey::Str(s.clone()),
        other => SortKey::Other(other.to_string()),
    }
}

/// The value at a dotted path in a JSON object.
pub fn json_path<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, p| cur.get(p))
}

fn contains_caseless(hay: &str, needle_lower: &str) -> bool {
    if hay.is_ascii() && needle_lower.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        hay.to_lowercase().contains(needle_lower)
    }
}

/// Missing keys first, then numbers, then strings, then the rest.
fn cmp_keys(a: Option<&SortKey>, b: Option<&SortKey>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    use SortKey::*;
    let rank = |k: Option<&SortKey>| match k {
        None => 0,
        Some(Num(_)) => 1,
        Some(Str(_)) => 2,
        Some(Other(_)) => 3,
    };
    match (a, b) {
        (Some(Num(x)), Some(Num(y))) => x.total_cmp(y),
        (Some(Str(x)), Some(Str(y))) | (Some(Other(x)), Some(Other(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)).then(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "g", "gu", "guest:guest", "ü:\u{0}x"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(base64_decode("Z3Vlc3Q6Z3Vlc3Q=").unwrap(), b"guest:guest");
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Z3V*"), None);
    }

    fn req(q: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/api/queues".into(),
            query: q
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Request::default()
        }
    }

    fn answer(q: &[(&str, &str)], items: &[Value]) -> Result<Value, ApiError> {
        let r = list(&req(q), items.to_vec())?;
        Ok(serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn lists_page_filter_sort_and_pick_columns_as_rabbitmq() {
        let items: Vec<Value> = ["abc", "xABCx", "zz", "b"]
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"name": n, "vhost": "/", "messages": 10 - i, "x": 1}))
            .collect();
        // No page: the whole list, by vhost and name; `name` is ignored without paging.
        let all = answer(&[("name", "zz")], &items).unwrap();
        let names: Vec<&str> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["abc", "b", "xABCx", "zz"]);
        let p = answer(&[("page", "1"), ("name", "abc")], &items).unwrap();
        assert_eq!(p["filtered_count"], 2);
        assert_eq!(p["total_count"], 4);
        assert_eq!(p["page_size"], 100);
        let p = answer(
            &[("page", "1"), ("name", "^a"), ("use_regex", "true")],
            &items,
        )
        .unwrap();
        assert_eq!(p["items"][0]["name"], "abc");
        assert_eq!(p["item_count"], 1);
        let p = answer(
            &[
                ("page", "2"),
                ("page_size", "3"),
                ("sort", "messages"),
                ("sort_reverse", "true"),
                ("columns", "name,messages"),
            ],
            &items,
        )
        .unwrap();
        assert_eq!(p["page_count"], 2);
        assert_eq!(p["items"], json!([{"name": "b", "messages": 7}]));
        let e = answer(&[("page", "3"), ("page_size", "3")], &items).unwrap_err();
        assert_eq!((e.status, e.error), (400, "page_out_of_range"));
        let e = answer(&[("page", "1"), ("page_size", "501")], &items).unwrap_err();
        assert_eq!(e.error, "invalid_pagination_parameters");
        let e = answer(&[("page", "x")], &items).unwrap_err();
        assert_eq!(e.reason, "Pagination parameters are invalid");
        let e = answer(
            &[("page", "1"), ("name", "("), ("use_regex", "true")],
            &items,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        // An empty list: page 1 is answered, with 0 pages (RabbitMQ's count).
        let p = answer(&[("page", "1")], &[]).unwrap();
        assert_eq!(p["page_count"], 0);
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(rfc3339(1_796_590_914_318), "2026-12-06T21:01:54.318+00:00");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000+00:00");
    }

    #[test]
    fn tables_convert_both_ways() {
        let v = json!({"x-max-length": 5, "s": "a", "b": true, "a": [1, "x"], "t": {"k": 1.5}});
        let t = json_table(Some(&v)).unwrap();
        assert_eq!(t.get(b"x-max-length"), Some(&FieldValue::I64(5)));
        assert_eq!(table_json(&t), v);
        assert!(json_table(Some(&json!([1]))).is_err());
    }
}
