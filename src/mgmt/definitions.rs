//! `/api/definitions` and `/api/definitions/{vhost}`: export (`GET`) and import
//! (`POST`) of users (password hashes, tags, limits), vhosts, permissions, topic
//! permissions, vhost limits, exchanges, queues and bindings in RabbitMQ 3.10's JSON
//! format, so a file exported from RabbitMQ imports into Warren and back; and the same
//! import of a file at start-up (`--definitions FILE`, [`load_file`]).
//!
//! Import is in three steps, so that a bad file changes nothing: [`parse_definitions`]
//! (pure, fuzzed: shape, types, names, arguments, regular expressions, password hashes
//! and their algorithm, limits), then a plan against the broker and the users
//! (inequivalent redeclares, reserved names, unknown users and vhosts of permissions,
//! the importer's permissions, the queues it adds against a vhost's max-queues) that
//! mutates nothing, then the apply. What Warren cannot
//! hold is skipped with a log line, never an error: policies (issue 12), runtime
//! parameters other than `vhost-limits` (shovels, federation upstreams), global
//! parameters (`cluster_name`, `internal_cluster_id`), objects of a vhost that neither
//! exists nor is in the file, and bindings whose ends are missing (RabbitMQ skips those
//! too).

use std::path::Path;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{json_table, table_json, vhost, ApiError, ApiResult, Caller};
use crate::auth::{
    hashing_algorithm, Credential, Pattern, Permission, Permissions, Resource, UserLimits,
    HASHING_ALGORITHM, HASHING_ALGORITHMS,
};
use crate::broker::exchange::ExchangeKind;
use crate::broker::{args, Dest, ExchangeDecl, QueueDecl, VhostLimits, VhostMeta};
use crate::http::{Request, Response};
use crate::ops::{self, DestinationType};
use crate::proto::FieldTable;
use crate::server::Server;

/// A parsed definitions file. `vhost` fields are None in a per-vhost file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    pub users: Vec<UserDef>,
    pub vhosts: Vec<VhostDef>,
    pub permissions: Vec<PermissionDef>,
    pub topic_permissions: Vec<TopicPermissionDef>,
    /// The `vhost-limits` runtime parameters.
    pub vhost_limits: Vec<VhostLimitsDef>,
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
    /// `policies`, and the `operator_policy` parameters (RabbitMQ exports operator
    /// policies as parameters), validated as the API validates them.
    pub policies: Vec<PolicyDef>,
    /// What Warren does not apply (policies, other parameters, global parameters), one
    /// log line each.
    pub ignored: Vec<String>,
}

/// A policy or operator policy of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDef {
    pub vhost: Option<String>,
    pub operator: bool,
    pub name: String,
    /// `pattern`, `definition`, `apply-to`, `priority` as in the API's PUT body.
    pub body: Map<String, Value>,
}

/// A policy of the file (an entry of `policies`, or an `operator_policy` parameter's
/// value): 400 with RabbitMQ's validation text when it would not pass the API's PUT.
fn policy_def(
    m: &Map<String, Value>,
    vhost: Option<String>,
    name: String,
    operator: bool,
) -> Result<PolicyDef, ApiError> {
    let kind = if operator {
        "operator policy"
    } else {
        "policy"
    };
    let mut body = Map::new();
    for k in ["pattern", "definition", "apply-to", "priority"] {
        if let Some(v) = m.get(k) {
            body.insert(k.into(), v.clone());
        }
    }
    super::policies::parse(&body, &name, operator)
        .map_err(|e| bad(format!("{kind} '{name}': Validation failed: {e}")))?;
    Ok(PolicyDef {
        vhost,
        operator,
        name,
        body,
    })
}

/// How a user of the file logs in.
#[derive(Debug, Clone, PartialEq)]
pub enum PasswordDef {
    /// `password_hash` with its `hashing_algorithm` (one of
    /// [`crate::auth::HASHING_ALGORITHMS`]): base64 of a 4-byte salt and the digest of
    /// salt ++ password, checked to decode to that many bytes.
    Hash(String, &'static str),
    /// `password`: clear text (RabbitMQ accepts it in hand-written files), hashed with a
    /// fresh salt.
    Clear(String),
    /// `password_hash: ""`, or neither field: a user without a password (no PLAIN login).
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserDef {
    pub name: String,
    pub password: PasswordDef,
    /// Every tag as given, known to Warren or not (RabbitMQ keeps any string).
    pub tags: Vec<String>,
    pub limits: UserLimitsDef,
}

/// A user's `limits` as given: None = not in the file (an existing user keeps its own),
/// a negative value = no limit (RabbitMQ's -1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserLimitsDef {
    pub max_connections: Option<i64>,
    pub max_channels: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VhostDef {
    pub name: String,
    /// `description`, else `metadata.description` (RabbitMQ 3.10 reads both).
    pub description: Option<String>,
    /// `tags` (a list or a comma-separated string), else `metadata.tags`.
    pub tags: Option<Vec<String>>,
    /// `default_queue_type`, else `metadata.default_queue_type`.
    pub default_queue_type: Option<String>,
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
pub struct TopicPermissionDef {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// A `vhost-limits` parameter: None = not in the file, negative = no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VhostLimitsDef {
    pub vhost: Option<String>,
    pub max_connections: Option<i64>,
    pub max_queues: Option<i64>,
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
    // Definitions are for administrators only (RabbitMQ's `rabbit_mgmt_wm_definitions`).
    if let Err(e) = super::access::require_admin(caller) {
        return Some(Err(e));
    }
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
    let parameters: Vec<Value> = server
        .broker
        .vhosts()
        .filter(|(_, v)| keep(&v.name))
        .filter_map(|(_, v)| {
            let l = &v.limits;
            let mut value = Map::new();
            if let Some(n) = l.max_queues {
                value.insert("max-queues".into(), json!(n));
            }
            if let Some(n) = l.max_connections {
                value.insert("max-connections".into(), json!(n));
            }
            if value.is_empty() {
                return None;
            }
            // A parameter names its vhost also in a per-vhost export (RabbitMQ's).
            Some(json!({
                "value": value,
                "vhost": &*v.name,
                "component": "vhost-limits",
                "name": "limits",
            }))
        })
        .collect();
    // Policies (with their vhost also in a per-vhost export, as RabbitMQ), and operator
    // policies as RabbitMQ exports them: `operator_policy` parameters.
    let mut parameters = parameters;
    let mut policies: Vec<Value> = Vec::new();
    for (_, v) in server.broker.vhosts().filter(|(_, v)| keep(&v.name)) {
        for p in v.policies.listed(false) {
            policies.push(p.to_json(&v.name));
        }
        for p in v.policies.listed(true) {
            parameters.push(json!({
                "value": {
                    "pattern": p.pattern,
                    "definition": p.definition,
                    "priority": p.priority,
                    "apply-to": p.apply_to.as_str(),
                },
                "vhost": &*v.name,
                "component": "operator_policy",
                "name": p.name,
            }));
        }
    }
    let version = super::overview::RABBITMQ_VERSION;
    let body = if only.is_some() {
        json!({
            "rabbit_version": version,
            "parameters": parameters,
            "policies": policies,
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
                let tags: Vec<&str> = u.tags_text.iter().map(|t| &**t).collect();
                json!({
                    "name": &*u.name,
                    "password_hash": u.password_hash,
                    "hashing_algorithm": u.hashing_algorithm,
                    "tags": tags,
                    "limits": user_limits_json(&u.limits),
                })
            })
            .collect();
        // RabbitMQ 3.10 exports a vhost's name only; its import reads `description`
        // and `tags` too (and clears them when absent), so they are added when the
        // vhost has them: a round trip keeps them, and a plain vhost looks as in 3.10.
        let vhosts: Vec<Value> = server
            .broker
            .vhosts()
            .map(|(_, v)| {
                let mut m = Map::new();
                m.insert("name".into(), json!(&*v.name));
                let meta = &v.meta;
                if !meta.description.is_empty() || !meta.tags.is_empty() {
                    m.insert("description".into(), json!(meta.description));
                    m.insert("tags".into(), json!(meta.tags));
                }
                if let Some(t) = &meta.default_queue_type {
                    m.insert("default_queue_type".into(), json!(t));
                }
                Value::Object(m)
            })
            .collect();
        let permissions = super::overview::permissions(server);
        let topic_permissions: Vec<Value> = server
            .auth
            .topic_permissions()
            .iter()
            .map(|t| {
                json!({
                    "user": &*t.user,
                    "vhost": &*t.vhost,
                    "exchange": &*t.exchange,
                    "write": t.write.as_str(),
                    "read": t.read.as_str(),
                })
            })
            .collect();
        json!({
            "rabbit_version": version,
            "rabbitmq_version": version,
            "product_name": "Warren",
            "product_version": env!("CARGO_PKG_VERSION"),
            "users": users,
            "vhosts": vhosts,
            "permissions": permissions,
            "topic_permissions": topic_permissions,
            "parameters": parameters,
            "global_parameters": [],
            "policies": policies,
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

/// A user's `limits` as RabbitMQ exports them: only the limits that are set.
fn user_limits_json(l: &UserLimits) -> Value {
    let mut m = Map::new();
    if let Some(n) = l.max_channels {
        m.insert("max-channels".into(), json!(n));
    }
    if let Some(n) = l.max_connections {
        m.insert("max-connections".into(), json!(n));
    }
    Value::Object(m)
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

/// A tag list: RabbitMQ's export has a list, its API and older files a
/// comma-separated string; blanks are dropped.
fn tag_list(v: &Value, what: &str) -> Result<Vec<String>, ApiError> {
    let refused = || {
        bad(format!(
            "{what}: 'tags' must be a list of strings or a comma-separated string"
        ))
    };
    let tags: Vec<String> = match v {
        Value::Null => Vec::new(),
        Value::String(s) => s.split(',').map(str::to_owned).collect(),
        Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(str::to_owned).ok_or_else(refused))
            .collect::<Result<_, _>>()?,
        _ => return Err(refused()),
    };
    Ok(tags
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect())
}

/// A limit's value: an integer (negative: no limit, RabbitMQ's -1).
fn limit(v: &Value, key: &str, what: &str) -> Result<i64, ApiError> {
    v.as_i64()
        .ok_or_else(|| bad(format!("{what}: limit '{key}' must be an integer, not {v}")))
}

/// A permission pattern: a regular expression as RabbitMQ's (checked here, compiled
/// again when applied).
fn pattern(m: &Map<String, Value>, key: &str, what: &str) -> Result<String, ApiError> {
    let s = string(m, key, what)?;
    Pattern::parse(&s).map_err(|e| {
        // The regex crate's error draws the pattern over several lines; its last line
        // says what is wrong ("error: unclosed group"), which fits a one-line message.
        let last = e.lines().rev().map(str::trim).find(|l| !l.is_empty());
        let why = last.map_or(e.as_str(), |l| l.strip_prefix("error: ").unwrap_or(l));
        bad(format!(
            "{what}: '{key}' is not a valid regular expression: {why} in '{s}'"
        ))
    })?;
    Ok(s)
}

/// The length of a decoded hash of RabbitMQ's `algorithm`: salt (4) and digest.
fn hash_len(algorithm: &str) -> usize {
    match algorithm {
        "rabbit_password_hashing_sha512" => 4 + 64,
        "rabbit_password_hashing_md5" => 4 + 16,
        _ => 4 + 32,
    }
}

/// How a user of the file logs in: `password_hash` (checked: a hashing algorithm of
/// RabbitMQ's, base64 of that algorithm's length), `password` (clear text), or none.
fn password(m: &Map<String, Value>, what: &str, version: &str) -> Result<PasswordDef, ApiError> {
    let hash = opt_string(m, "password_hash", what)?;
    let clear = opt_string(m, "password", what)?;
    match (hash, clear) {
        (Some(_), Some(_)) => Err(bad(format!(
            "{what}: both 'password' and 'password_hash' are given"
        ))),
        (None, Some(p)) => Ok(PasswordDef::Clear(p)),
        (None, None) => Ok(PasswordDef::None),
        (Some(h), None) if h.is_empty() => Ok(PasswordDef::None),
        (Some(h), None) => {
            // No algorithm: RabbitMQ's rule by the exporting version (MD5 before 3.6).
            let name = match m.get("hashing_algorithm") {
                None | Some(Value::Null) => {
                    let old = ["3.0.", "3.1.", "3.2.", "3.3.", "3.4.", "3.5."];
                    if old.iter().any(|o| version.starts_with(o)) {
                        "rabbit_password_hashing_md5".to_owned()
                    } else {
                        HASHING_ALGORITHM.to_owned()
                    }
                }
                Some(_) => string(m, "hashing_algorithm", what)?,
            };
            let Some(algorithm) = hashing_algorithm(&name) else {
                return Err(bad(format!(
                    "{what}: unknown hashing_algorithm '{name}' (Warren keeps {})",
                    HASHING_ALGORITHMS.join(", ")
                )));
            };
            let want = hash_len(algorithm);
            match super::base64_decode(&h) {
                Some(raw) if raw.len() == want => Ok(PasswordDef::Hash(h, algorithm)),
                Some(raw) => Err(bad(format!(
                    "{what}: malformed password_hash: {} bytes, a {algorithm} hash is {want} (4 of salt and the digest)",
                    raw.len()
                ))),
                None => Err(bad(format!("{what}: malformed password_hash: not base64"))),
            }
        }
    }
}

fn user(m: &Map<String, Value>, version: &str) -> Result<UserDef, ApiError> {
    let name = name(m, "name", "user")?;
    if name.is_empty() {
        return Err(bad("user: 'name' is empty"));
    }
    let what = format!("user '{name}'");
    // RabbitMQ refuses a user without tags (`tags_not_present`); files from before
    // tags had a boolean `administrator`.
    let tags = match (m.get("tags"), m.get("administrator")) {
        (Some(t), _) => tag_list(t, &what)?,
        (None, Some(a)) if a == &json!(true) || a == &json!("true") => {
            vec!["administrator".to_owned()]
        }
        (None, Some(_)) => Vec::new(),
        (None, None) => return Err(bad(format!("{what}: 'tags' is missing"))),
    };
    let mut limits = UserLimitsDef::default();
    match m.get("limits") {
        None | Some(Value::Null) => {}
        Some(Value::Object(l)) => {
            for (k, v) in l {
                match k.as_str() {
                    "max-connections" => limits.max_connections = Some(limit(v, k, &what)?),
                    "max-channels" => limits.max_channels = Some(limit(v, k, &what)?),
                    _ => {
                        return Err(bad(format!(
                            "{what}: unknown limit '{k}' (max-connections, max-channels)"
                        )))
                    }
                }
            }
        }
        Some(_) => return Err(bad(format!("{what}: 'limits' must be an object"))),
    }
    Ok(UserDef {
        password: password(m, &what, version)?,
        name,
        tags,
        limits,
    })
}

fn vhost_def(m: &Map<String, Value>) -> Result<VhostDef, ApiError> {
    let name = name(m, "name", "vhost")?;
    let what = format!("vhost '{name}'");
    let meta = match m.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(bad(format!("{what}: 'metadata' must be an object"))),
    };
    let pick = |key: &str| m.get(key).filter(|v| !v.is_null()).or(meta.get(key));
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match pick(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("{what}: '{key}' must be a string"))),
        }
    };
    Ok(VhostDef {
        description: text("description")?,
        tags: pick("tags").map(|t| tag_list(t, &what)).transpose()?,
        default_queue_type: text("default_queue_type")?,
        name,
    })
}

/// A runtime parameter: `vhost-limits` is read; any other component (shovels,
/// federation upstreams, ...) is noted in `ignored`.
fn parameter(m: &Map<String, Value>, d: &mut Definitions) -> Result<(), ApiError> {
    let component = string(m, "component", "parameter")?;
    let pname = match m.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let vh = opt_string(m, "vhost", "parameter")?;
    let where_ = vh
        .as_deref()
        .map(|v| format!(" of vhost '{v}'"))
        .unwrap_or_default();
    if component == "operator_policy" {
        let Some(Value::Object(value)) = m.get("value") else {
            return Err(bad(format!(
                "operator policy '{pname}'{where_}: 'value' must be an object"
            )));
        };
        d.policies.push(policy_def(value, vh, pname, true)?);
        return Ok(());
    }
    if component != "vhost-limits" {
        d.ignored.push(format!(
            "parameter '{pname}' of component '{component}'{where_} skipped: Warren has no {component}"
        ));
        return Ok(());
    }
    let what = format!("parameter 'vhost-limits'{where_}");
    let Some(Value::Object(value)) = m.get("value") else {
        return Err(bad(format!("{what}: 'value' must be an object")));
    };
    let mut l = VhostLimitsDef {
        vhost: vh,
        ..Default::default()
    };
    for (k, v) in value {
        match k.as_str() {
            "max-connections" => l.max_connections = Some(limit(v, k, &what)?),
            "max-queues" => l.max_queues = Some(limit(v, k, &what)?),
            _ => {
                return Err(bad(format!(
                    "{what}: unknown limit '{k}' (max-connections, max-queues)"
                )))
            }
        }
    }
    d.vhost_limits.push(l);
    Ok(())
}

/// Parses and validates a definitions file (the whole body: JSON, RabbitMQ's format)
/// without looking at the broker: sections are lists of objects, names are strings of
/// at most 255 bytes, flags booleans, arguments objects that pass the same checks as a
/// declare's, exchange types and destination types known, permission patterns regular
/// expressions, password hashes RabbitMQ's SHA-256 ones, limits integers. 400 with the
/// reason otherwise. Pure, so it can be fuzzed ([`crate::fuzzing`]'s `definitions`).
pub fn parse_definitions(body: &[u8]) -> Result<Definitions, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => parse_value(&v),
        Err(_) => Err(bad("failed_to_parse_json")),
    }
}

/// [`parse_definitions`] of a file already read as JSON.
pub fn parse_value(v: &Value) -> Result<Definitions, ApiError> {
    let Value::Object(top) = v else {
        return Err(bad("failed_to_parse_json"));
    };
    let mut d = Definitions::default();
    let version = ["rabbitmq_version", "rabbit_version"]
        .iter()
        .find_map(|k| top.get(*k).and_then(Value::as_str))
        .unwrap_or("");
    for u in section(top, "users")? {
        d.users.push(user(object(u, "users")?, version)?);
    }
    for v in section(top, "vhosts")? {
        d.vhosts.push(vhost_def(object(v, "vhosts")?)?);
    }
    for p in section(top, "permissions")? {
        let m = object(p, "permissions")?;
        let user = name(m, "user", "permission")?;
        let vhost = name(m, "vhost", "permission")?;
        let what = format!("permission of user '{user}' in vhost '{vhost}'");
        d.permissions.push(PermissionDef {
            configure: pattern(m, "configure", &what)?,
            write: pattern(m, "write", &what)?,
            read: pattern(m, "read", &what)?,
            user,
            vhost,
        });
    }
    for p in section(top, "topic_permissions")? {
        let m = object(p, "topic_permissions")?;
        let user = name(m, "user", "topic permission")?;
        let vhost = name(m, "vhost", "topic permission")?;
        let exchange = name(m, "exchange", "topic permission")?;
        let what = format!(
            "topic permission of user '{user}' in vhost '{vhost}' for exchange '{exchange}'"
        );
        d.topic_permissions.push(TopicPermissionDef {
            write: pattern(m, "write", &what)?,
            read: pattern(m, "read", &what)?,
            user,
            vhost,
            exchange,
        });
    }
    for p in section(top, "parameters")? {
        parameter(object(p, "parameters")?, &mut d)?;
    }
    for g in section(top, "global_parameters")? {
        let m = object(g, "global_parameters")?;
        let n = string(m, "name", "global parameter")?;
        d.ignored.push(format!(
            "global parameter '{n}' skipped: Warren has no cluster"
        ));
    }
    for p in section(top, "policies")? {
        let m = object(p, "policies")?;
        let n = name(m, "name", "policy")?;
        let vh = opt_string(m, "vhost", &format!("policy '{n}'"))?;
        d.policies.push(policy_def(m, vh, n, false)?);
    }
    for x in section(top, "exchanges")? {
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
    for q in section(top, "queues")? {
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
    for b in section(top, "bindings")? {
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
    User(UserDef),
    /// A vhost of the file; `true` when it is new.
    Vhost(VhostDef, bool),
    Permissions(String, String, Permissions),
    TopicPermissions(String, String, String, Pattern, Pattern),
    VhostLimits(String, VhostLimitsDef),
    Policy(String, PolicyDef),
    Exchange(String, ExchangeDecl),
    Queue(String, QueueDecl),
    Binding(String, BindingDef),
}

/// `POST /api/definitions[/{vhost}]`: parse, plan (every check the declares would
/// make, nothing changed), apply. 204, or 400/401 with the first problem and no change.
fn import(server: &mut Server, caller: &Caller, req: &Request, only: Option<&str>) -> ApiResult {
    let defs = parse_definitions(file_of(req)?)?;
    let steps = plan(server, Some(caller), &defs, only)?;
    apply(server, Some(caller), steps)?;
    Ok(Response::empty(204))
}

/// `--definitions FILE`: imports a RabbitMQ definitions file at start-up, before the
/// listeners open, as RabbitMQ's `load_definitions` (on every start: an import of an
/// unchanged file changes nothing). The same parse, plan and apply as the API's import,
/// acting as the broker itself (no permission checks; a new vhost grants nobody
/// anything). Err is the message start-up stops with, naming the file and what in it
/// is wrong; nothing has been changed then.
pub fn load_file(server: &mut Server, path: &Path) -> Result<(), String> {
    let at = path.display();
    let body = std::fs::read(path).map_err(|e| format!("definitions file {at}: {e}"))?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("definitions file {at}: not valid JSON: {e}"))?;
    let failed = |e: ApiError| format!("definitions file {at}: {}", e.reason);
    let defs = parse_value(&json).map_err(failed)?;
    let steps = plan(server, None, &defs, None).map_err(failed)?;
    let n = steps.len();
    apply(server, None, steps).map_err(failed)?;
    log::info!("definitions file {at}: imported ({n} definitions applied)");
    Ok(())
}

/// The vhost an object goes to: the per-vhost import's, else its own `vhost` field.
fn target<'a>(only: Option<&'a str>, own: &'a Option<String>) -> Option<&'a str> {
    only.or(own.as_deref())
}

/// A limit of the file as Warren holds it: negative is no limit.
fn limit_value(n: i64) -> Option<u64> {
    u64::try_from(n).ok()
}

fn plan(
    server: &Server,
    acting: Option<&Caller>,
    defs: &Definitions,
    only: Option<&str>,
) -> Result<Vec<Step>, ApiError> {
    let b = &server.broker;
    let mut steps = Vec::new();
    for s in &defs.ignored {
        log::info!("definitions import: {s}");
    }
    // Users, vhosts, permissions and topic permissions are the whole file's only (a
    // per-vhost file has parameters, policies, queues, exchanges and bindings).
    let mut new_users: Vec<&str> = Vec::new();
    let mut new_vhosts: Vec<&str> = Vec::new();
    if only.is_none() {
        for u in &defs.users {
            new_users.push(&u.name);
            steps.push(Step::User(u.clone()));
        }
        for v in &defs.vhosts {
            let new = b.lookup_vhost(v.name.as_bytes()).is_none()
                && !new_vhosts.contains(&v.name.as_str());
            if new {
                new_vhosts.push(&v.name);
            }
            steps.push(Step::Vhost(v.clone(), new));
        }
    }
    let known = |vh: &str| b.lookup_vhost(vh.as_bytes()).is_some() || new_vhosts.contains(&vh);
    let user_known = |u: &str| new_users.contains(&u) || server.auth.user(u).is_some();
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
    // importing user gets full permissions there, as in RabbitMQ). The broker itself
    // (a file at start-up) may do anything.
    let may = |vh: &str, r: Resource<'_>| -> Result<(), ApiError> {
        let Some(caller) = acting else {
            return Ok(());
        };
        if new_vhosts.contains(&vh) {
            return Ok(());
        }
        server
            .auth
            .authorize(&caller.user, vh, Permission::Configure, r)
            .map_err(|_| ApiError::new(401, "not_authorised", "Access refused."))
    };
    // Permissions of a user or vhost that is nowhere are RabbitMQ's 400s.
    let check_ends = |what: &str, user: &str, vh: &str| -> Result<(), ApiError> {
        if !user_known(user) {
            return Err(bad(format!("{what}: no such user '{user}'")));
        }
        if !known(vh) {
            return Err(bad(format!("{what}: no such vhost '{vh}'")));
        }
        Ok(())
    };
    let compiled = |s: &str| Pattern::parse(s).map_err(bad);
    if only.is_none() {
        for p in &defs.permissions {
            check_ends(
                &format!("permission of user '{}' in vhost '{}'", p.user, p.vhost),
                &p.user,
                &p.vhost,
            )?;
            steps.push(Step::Permissions(
                p.user.clone(),
                p.vhost.clone(),
                Permissions {
                    configure: compiled(&p.configure)?,
                    write: compiled(&p.write)?,
                    read: compiled(&p.read)?,
                },
            ));
        }
        for t in &defs.topic_permissions {
            check_ends(
                &format!(
                    "topic permission of user '{}' in vhost '{}'",
                    t.user, t.vhost
                ),
                &t.user,
                &t.vhost,
            )?;
            steps.push(Step::TopicPermissions(
                t.user.clone(),
                t.vhost.clone(),
                t.exchange.clone(),
                compiled(&t.write)?,
                compiled(&t.read)?,
            ));
        }
    }
    // Vhost limits: applied after the queues (below), so that, as in RabbitMQ, the
    // file's own limits do not refuse the file's own queues.
    let mut limit_steps = Vec::new();
    for l in &defs.vhost_limits {
        let Some(vh) = target(only, &l.vhost) else {
            return Err(bad("parameter 'vhost-limits': 'vhost' is missing"));
        };
        if !known(vh) {
            return Err(bad(format!(
                "parameter 'vhost-limits' of vhost '{vh}': no such vhost '{vh}'"
            )));
        }
        limit_steps.push(Step::VhostLimits(vh.to_owned(), l.clone()));
    }
    for p in &defs.policies {
        let kind = if p.operator {
            "operator policy"
        } else {
            "policy"
        };
        let what = format!("{kind} '{}'", p.name);
        let Some(vh) = usable(target(only, &p.vhost), &what) else {
            continue;
        };
        steps.push(Step::Policy(vh, p.clone()));
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
    // RabbitMQ's validate_limits: the queues the file adds to a vhost must fit in the
    // max-queues it has before the import (checked first, so no declare fails midway).
    let mut vhosts_q: Vec<&str> = declared_q.iter().map(|(h, _)| h.as_str()).collect();
    vhosts_q.sort_unstable();
    vhosts_q.dedup();
    for vh in vhosts_q {
        let Some(record) = vhost_record(server, vh) else {
            continue;
        };
        let Some(max) = VhostLimits::effective(record.limits.max_queues) else {
            continue;
        };
        let v = b.lookup_vhost(vh.as_bytes()).map(|(v, _)| v);
        let existing = record.queue_count();
        let adding = declared_q
            .iter()
            .filter(|(h, q)| h == vh && v.is_none_or(|v| b.queue_id(v, &q.name).is_none()))
            .count();
        if adding > 0 && (existing + adding) as u64 > max {
            return Err(bad(format!(
                "Adding {adding} queue(s) to virtual host \"{vh}\" would exceed the limit of {max} queue(s). This virtual host currently has {existing} queue(s) defined. Import aborted!"
            )));
        }
    }
    steps.extend(limit_steps);
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

fn apply(server: &mut Server, acting: Option<&Caller>, steps: Vec<Step>) -> Result<(), ApiError> {
    let mut auth_changed = false;
    let applied = apply_steps(server, acting, steps, &mut auth_changed);
    // What was changed is saved even if a later step failed (planned not to happen).
    if auth_changed {
        server
            .save_auth()
            .map_err(|e| ApiError::new(500, "internal_server_error", e.to_string()))?;
    }
    applied
}

fn apply_steps(
    server: &mut Server,
    acting: Option<&Caller>,
    steps: Vec<Step>,
    auth_changed: &mut bool,
) -> Result<(), ApiError> {
    let vid = |server: &Server, vh: &str| vhost(server, vh);
    for step in steps {
        match step {
            Step::User(u) => {
                // An existing user's hash and tags are replaced, as RabbitMQ's import;
                // its limits only where the file gives them.
                let cred = match u.password {
                    PasswordDef::Hash(h, HASHING_ALGORITHM) => Credential::Hash(h),
                    PasswordDef::Hash(h, algorithm) => {
                        if algorithm == "rabbit_password_hashing_md5" {
                            log::warn!(
                                "definitions import: user '{}' has an MD5 password hash: kept, but Warren checks no MD5 login; give the user a new password",
                                u.name
                            );
                        }
                        Credential::HashWith(h, algorithm)
                    }
                    PasswordDef::Clear(p) => Credential::Password(p.into_bytes()),
                    PasswordDef::None => Credential::NoPassword,
                };
                let created = server
                    .auth
                    .put_user(&u.name, cred, u.tags)
                    .map_err(|e| bad(format!("user '{}': {e}", u.name)))?;
                let given = &u.limits;
                if given.max_connections.is_some() || given.max_channels.is_some() {
                    let mut l = server.auth.user_limits(&u.name);
                    if let Some(n) = given.max_connections {
                        l.max_connections = limit_value(n);
                    }
                    if let Some(n) = given.max_channels {
                        l.max_channels = limit_value(n);
                    }
                    server.auth.set_user_limits(&u.name, l);
                }
                let how = if created { "created" } else { "updated" };
                log::info!("definitions import: {how} user '{}'", u.name);
                *auth_changed = true;
            }
            Step::Vhost(v, new) => {
                // RabbitMQ's put_vhost: a vhost of the file gets the file's description
                // and tags, also when it exists (a bare name clears them, as there).
                let meta = VhostMeta {
                    description: v.description.unwrap_or_default(),
                    tags: v.tags.unwrap_or_default(),
                    default_queue_type: v.default_queue_type,
                };
                server.broker.put_vhost(&v.name, Some(meta));
                if new {
                    if let Some(caller) = acting {
                        server.auth.set_permissions(
                            caller.user.name(),
                            &v.name,
                            Permissions::full(),
                        );
                        *auth_changed = true;
                    }
                    log::info!("definitions import: created vhost '{}'", v.name);
                }
            }
            Step::Permissions(user, vh, p) => {
                server.auth.set_permissions(&user, &vh, p);
                *auth_changed = true;
            }
            Step::TopicPermissions(user, vh, exchange, write, read) => {
                server
                    .auth
                    .set_topic_permissions(&user, &vh, &exchange, write, read);
                *auth_changed = true;
            }
            Step::Policy(vh, p) => {
                let v = vid(server, &vh)?;
                let policy = super::policies::parse(&p.body, &p.name, p.operator)
                    .map_err(|e| bad(format!("policy '{}': {e}", p.name)))?;
                server.broker.set_policy(v, p.operator, policy);
                log::info!(
                    "definitions import: set policy '{}' in vhost '{vh}'",
                    p.name
                );
            }
            Step::VhostLimits(vh, l) => {
                // The parameter is the vhost's whole set of limits (RabbitMQ's).
                let v = vid(server, &vh)?;
                let limits = VhostLimits {
                    max_connections: l.max_connections,
                    max_queues: l.max_queues,
                };
                server.broker.set_vhost_limits(v, limits);
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

// ----- vhost metadata and limits (the broker's vhost records) ---------------------------

/// Vhost `name`'s record, if it exists.
fn vhost_record<'a>(server: &'a Server, name: &str) -> Option<&'a crate::broker::Vhost> {
    let (id, _) = server.broker.lookup_vhost(name.as_bytes())?;
    server.broker.vhost(id)
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
        let vhosts: Vec<&str> = d.vhosts.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(vhosts, ["xb-fixture-vh", "/"]);
        assert!(
            d.ignored.iter().any(|s| s.contains("global parameter")),
            "{:?}",
            d.ignored
        );
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

    /// A RabbitMQ 3.10.8 export with users (hashes, tags, limits), regex permissions,
    /// topic permissions and vhost limits (`tests/data/rabbitmq-3.10-users.json`).
    #[test]
    fn parses_users_permissions_and_limits() {
        let d =
            parse_definitions(include_bytes!("../../tests/data/rabbitmq-3.10-users.json")).unwrap();
        let alice = &d.users[0];
        assert_eq!(alice.name, "wt-defs-alice");
        assert_eq!(
            alice.password,
            PasswordDef::Hash(
                "n7PUymh/8EPGsQNEUkfPLwYFoV5BPu1SEya5muRFCmX4Flhw".into(),
                HASHING_ALGORITHM
            )
        );
        assert_eq!(alice.tags, ["management", "custom-tag"]);
        assert_eq!(
            alice.limits,
            UserLimitsDef {
                max_connections: Some(5),
                max_channels: Some(10)
            }
        );
        assert_eq!(d.users[1].password, PasswordDef::None);
        assert_eq!(d.permissions[0].write, "^(amq\\.topic|alice\\..*)$");
        assert_eq!(d.topic_permissions[0].exchange, "amq.topic");
        assert_eq!(
            d.vhost_limits,
            [VhostLimitsDef {
                vhost: Some("wt-defs-fx".into()),
                max_connections: Some(20),
                max_queues: Some(50)
            }]
        );
    }

    #[test]
    fn tags_are_a_list_or_a_comma_string_and_vhost_metadata_is_read() {
        let d = parse_definitions(
            br#"{"users": [{"name": "u", "password_hash": "", "tags": " administrator, ,foo"},
                           {"name": "v", "administrator": "true"}],
                 "vhosts": [{"name": "a", "metadata": {"description": "m", "tags": ["x"]}},
                            {"name": "b", "description": "d", "tags": "p,q",
                             "default_queue_type": "quorum"}]}"#,
        )
        .unwrap();
        assert_eq!(d.users[0].tags, ["administrator", "foo"]);
        assert_eq!(d.users[1].tags, ["administrator"]);
        assert_eq!(d.users[1].password, PasswordDef::None);
        assert_eq!(d.vhosts[0].description.as_deref(), Some("m"));
        assert_eq!(d.vhosts[0].tags, Some(vec!["x".to_owned()]));
        assert_eq!(d.vhosts[1].tags, Some(vec!["p".to_owned(), "q".to_owned()]));
        assert_eq!(d.vhosts[1].default_queue_type.as_deref(), Some("quorum"));
    }

    #[test]
    fn refuses_bad_users_patterns_and_limits_by_name() {
        let hash = "n7PUymh/8EPGsQNEUkfPLwYFoV5BPu1SEya5muRFCmX4Flhw";
        for (body, reason) in [
            (
                json!({"users": [{"name": "u", "password_hash": hash}]}),
                "user 'u': 'tags' is missing",
            ),
            (
                json!({"users": [{"name": "u", "tags": [], "password_hash": hash,
                                  "hashing_algorithm": "rabbit_password_hashing_sha1"}]}),
                "user 'u': unknown hashing_algorithm 'rabbit_password_hashing_sha1' (Warren keeps rabbit_password_hashing_sha256, rabbit_password_hashing_sha512, rabbit_password_hashing_md5)",
            ),
            (
                json!({"users": [{"name": "u", "tags": [], "password_hash": hash,
                                  "hashing_algorithm": "rabbit_password_hashing_sha512"}]}),
                "user 'u': malformed password_hash: 36 bytes, a rabbit_password_hashing_sha512 hash is 68 (4 of salt and the digest)",
            ),
            (
                json!({"rabbit_version": "3.5.7",
                       "users": [{"name": "u", "tags": [], "password_hash": hash}]}),
                "user 'u': malformed password_hash: 36 bytes, a rabbit_password_hashing_md5 hash is 20 (4 of salt and the digest)",
            ),
            (
                json!({"users": [{"name": "u", "tags": [], "password_hash": "!!!"}]}),
                "user 'u': malformed password_hash: not base64",
            ),
            (
                json!({"users": [{"name": "u", "tags": [], "password_hash": "YWJj"}]}),
                "user 'u': malformed password_hash: 3 bytes, a rabbit_password_hashing_sha256 hash is 36 (4 of salt and the digest)",
            ),
            (
                json!({"users": [{"name": "u", "tags": [], "password": "p", "password_hash": hash}]}),
                "user 'u': both 'password' and 'password_hash' are given",
            ),
            (
                json!({"users": [{"name": "u", "tags": 3}]}),
                "user 'u': 'tags' must be a list of strings or a comma-separated string",
            ),
            (
                json!({"users": [{"name": "u", "tags": [], "limits": {"max-foo": 1}}]}),
                "user 'u': unknown limit 'max-foo' (max-connections, max-channels)",
            ),
            (
                json!({"users": [{"name": "u", "tags": [], "limits": {"max-channels": "x"}}]}),
                "user 'u': limit 'max-channels' must be an integer, not \"x\"",
            ),
            (
                json!({"parameters": [{"vhost": "v", "component": "vhost-limits", "name": "limits",
                                       "value": {"max-queues": 1.5}}]}),
                "parameter 'vhost-limits' of vhost 'v': limit 'max-queues' must be an integer, not 1.5",
            ),
            (
                json!({"parameters": [{"vhost": "v", "component": "vhost-limits", "name": "limits",
                                       "value": {"max-foo": 1}}]}),
                "parameter 'vhost-limits' of vhost 'v': unknown limit 'max-foo' (max-connections, max-queues)",
            ),
            (
                json!({"vhosts": [{"name": "v", "tags": {}}]}),
                "vhost 'v': 'tags' must be a list of strings or a comma-separated string",
            ),
        ] {
            let e = parse_definitions(body.to_string().as_bytes()).unwrap_err();
            assert_eq!((e.status, e.reason.as_str()), (400, reason));
        }
        let e = parse_definitions(
            br#"{"permissions": [{"user": "u", "vhost": "v", "configure": "(", "write": "", "read": ""}]}"#,
        )
        .unwrap_err();
        assert!(
            e.reason
                == "permission of user 'u' in vhost 'v': 'configure' is not a valid regular expression: unclosed group in '('",
            "{}",
            e.reason
        );
        let e = parse_definitions(
            br#"{"topic_permissions": [{"user": "u", "vhost": "v", "exchange": "amq.topic", "write": ".*", "read": "["}]}"#,
        )
        .unwrap_err();
        assert!(
            e.reason
                == "topic permission of user 'u' in vhost 'v' for exchange 'amq.topic': 'read' is not a valid regular expression: unclosed character class in '['",
            "{}",
            e.reason
        );
    }

    #[test]
    fn other_parameters_and_global_parameters_are_noted_policies_are_read() {
        let d = parse_definitions(
            br#"{"parameters": [{"vhost": "v", "component": "shovel", "name": "s", "value": {}},
                                {"vhost": "v", "component": "operator_policy", "name": "op",
                                 "value": {"pattern": "^a", "definition": {"max-length": 3}, "priority": 0, "apply-to": "queues"}}],
                 "global_parameters": [{"name": "cluster_name", "value": "rabbit@x"}],
                 "policies": [{"vhost": "v", "name": "p", "pattern": ".*", "definition": {"message-ttl": 5}}]}"#,
        )
        .unwrap();
        assert_eq!(
            d.ignored,
            [
                "parameter 's' of component 'shovel' of vhost 'v' skipped: Warren has no shovel",
                "global parameter 'cluster_name' skipped: Warren has no cluster",
            ]
        );
        let names: Vec<(&str, bool)> = d
            .policies
            .iter()
            .map(|p| (p.name.as_str(), p.operator))
            .collect();
        assert_eq!(names, [("op", true), ("p", false)]);
        let bad = parse_definitions(
            br#"{"policies": [{"vhost": "v", "name": "p", "pattern": ".*", "definition": {"message-ttl": -1}}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            bad.reason,
            "policy 'p': Validation failed: -1 is not a valid message TTL"
        );
    }
}
