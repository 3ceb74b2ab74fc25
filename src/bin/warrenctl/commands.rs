//! Each rabbitmqctl command as management API calls: which endpoint, which rabbitmqctl
//! column reads which JSON field, the informational lines rabbitmqctl prints (dropped by
//! `-q` and by `--formatter json`), and how the API's refusals map to rabbitmqctl's
//! messages and exit codes (checked against rabbitmqctl 3.10 on the same broker).

use std::io::{Read, Write};

use serde_json::Value;

use crate::format::{field, print_rows};
use crate::http::Api;
use crate::{Fail, Opts, EX_DATAERR, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE};

pub const COMMANDS: &[(&str, &str)] = &[
    ("list_queues", "[-p <vhost>] [<column> ...]"),
    ("list_exchanges", "[-p <vhost>] [<column> ...]"),
    ("list_bindings", "[-p <vhost>] [<column> ...]"),
    ("list_connections", "[<column> ...]"),
    ("list_channels", "[<column> ...]"),
    ("list_consumers", "[-p <vhost>] [<column> ...]"),
    ("list_vhosts", "[<column> ...]"),
    ("list_users", "[<column> ...]"),
    ("list_permissions", "[-p <vhost>]"),
    ("status", ""),
    ("purge_queue", "[-p <vhost>] <queue>"),
    (
        "delete_queue",
        "[-p <vhost>] <queue> [--if-empty] [--if-unused]",
    ),
    ("close_connection", "<connection name> <reason>"),
    ("close_all_connections", "[-p <vhost> | --global] <reason>"),
    ("export_definitions", "<file | ->"),
    ("import_definitions", "<file | ->"),
];

/// A list command: its endpoint, default columns, and each column it knows with the
/// JSON path (`a/b` into nested objects) that fills it. A path starting with `=` is a
/// constant. Warren has no Erlang pids: `pid` columns show the object's API name,
/// which is what `close_connection` takes.
struct List {
    what: &'static str,
    defaults: &'static [&'static str],
    columns: &'static [(&'static str, &'static str)],
}

const QUEUES: List = List {
    what: "queues",
    defaults: &["name", "messages"],
    columns: &[
        ("name", "name"),
        ("vhost", "vhost"),
        ("durable", "durable"),
        ("auto_delete", "auto_delete"),
        ("exclusive", "exclusive"),
        ("arguments", "arguments"),
        ("policy", "policy"),
        ("owner_pid", "owner_pid_details/name"),
        ("exclusive_consumer_tag", "exclusive_consumer_tag"),
        ("messages", "messages"),
        ("messages_ready", "messages_ready"),
        ("messages_unacknowledged", "messages_unacknowledged"),
        ("messages_persistent", "messages_persistent"),
        ("messages_ram", "messages_ram"),
        ("messages_ready_ram", "messages_ready_ram"),
        ("messages_unacknowledged_ram", "messages_unacknowledged_ram"),
        ("message_bytes", "message_bytes"),
        ("message_bytes_ready", "message_bytes_ready"),
        (
            "message_bytes_unacknowledged",
            "message_bytes_unacknowledged",
        ),
        ("message_bytes_ram", "message_bytes_ram"),
        ("message_bytes_persistent", "message_bytes_persistent"),
        ("head_message_timestamp", "head_message_timestamp"),
        ("consumers", "consumers"),
        ("consumer_utilisation", "consumer_utilisation"),
        ("consumer_capacity", "consumer_capacity"),
        ("memory", "memory"),
        ("state", "state"),
        ("type", "type"),
    ],
};

const EXCHANGES: List = List {
    what: "exchanges",
    defaults: &["name", "type"],
    columns: &[
        ("name", "name"),
        ("vhost", "vhost"),
        ("type", "type"),
        ("durable", "durable"),
        ("auto_delete", "auto_delete"),
        ("internal", "internal"),
        ("arguments", "arguments"),
        ("policy", "policy"),
    ],
};

const BINDINGS: List = List {
    what: "bindings",
    defaults: &[
        "source_name",
        "source_kind",
        "destination_name",
        "destination_kind",
        "routing_key",
        "arguments",
    ],
    columns: &[
        ("source_name", "source"),
        // Bindings always start at an exchange; the API does not say so.
        ("source_kind", "=exchange"),
        ("destination_name", "destination"),
        ("destination_kind", "destination_type"),
        ("routing_key", "routing_key"),
        ("arguments", "arguments"),
        ("vhost", "vhost"),
    ],
};

const CONNECTIONS: List = List {
    what: "connections",
    defaults: &["user", "peer_host", "peer_port", "state"],
    columns: &[
        ("pid", "name"),
        ("name", "name"),
        ("port", "port"),
        ("host", "host"),
        ("peer_port", "peer_port"),
        ("peer_host", "peer_host"),
        ("ssl", "ssl"),
        ("user", "user"),
        ("vhost", "vhost"),
        ("timeout", "timeout"),
        ("frame_max", "frame_max"),
        ("channel_max", "channel_max"),
        ("protocol", "protocol"),
        ("connected_at", "connected_at"),
        ("state", "state"),
        ("channels", "channels"),
        ("recv_oct", "recv_oct"),
        ("recv_cnt", "recv_cnt"),
        ("send_oct", "send_oct"),
        ("send_cnt", "send_cnt"),
        ("send_pend", "send_pend"),
        ("client_properties", "client_properties"),
        ("auth_mechanism", "auth_mechanism"),
        ("user_provided_name", "user_provided_name"),
        ("type", "type"),
    ],
};

const CHANNELS: List = List {
    what: "channels",
    defaults: &["pid", "user", "consumer_count", "messages_unacknowledged"],
    columns: &[
        ("pid", "name"),
        ("name", "name"),
        ("connection", "connection_details/name"),
        ("number", "number"),
        ("user", "user"),
        ("vhost", "vhost"),
        ("transactional", "transactional"),
        ("confirm", "confirm"),
        ("consumer_count", "consumer_count"),
        ("messages_unacknowledged", "messages_unacknowledged"),
        ("messages_uncommitted", "messages_uncommitted"),
        ("acks_uncommitted", "acks_uncommitted"),
        ("messages_unconfirmed", "messages_unconfirmed"),
        ("prefetch_count", "prefetch_count"),
        ("global_prefetch_count", "global_prefetch_count"),
        ("state", "state"),
    ],
};

const CONSUMERS: List = List {
    what: "consumers",
    defaults: &[
        "queue_name",
        "channel_pid",
        "consumer_tag",
        "ack_required",
        "prefetch_count",
        "active",
        "arguments",
    ],
    columns: &[
        ("queue_name", "queue/name"),
        ("channel_pid", "channel_details/name"),
        ("consumer_tag", "consumer_tag"),
        ("ack_required", "ack_required"),
        ("prefetch_count", "prefetch_count"),
        ("active", "active"),
        ("activity_status", "activity_status"),
        ("exclusive", "exclusive"),
        ("arguments", "arguments"),
    ],
};

const VHOSTS: List = List {
    what: "vhosts",
    defaults: &["name"],
    columns: &[
        ("name", "name"),
        ("description", "description"),
        ("tags", "tags"),
        ("tracing", "tracing"),
        ("default_queue_type", "default_queue_type"),
        ("cluster_state", "cluster_state"),
    ],
};

const USERS: List = List {
    what: "users",
    defaults: &["user", "tags"],
    columns: &[("user", "name"), ("tags", "tags")],
};

pub fn run(o: &Opts, api: &Api) -> Result<(), Fail> {
    let vh = o.vhost.as_str();
    match o.command.as_str() {
        "list_queues" => {
            let cols = columns(&QUEUES, o)?;
            let mut info = vec![format!("Timeout: {:.1} seconds ...", o.timeout)];
            info.push(format!("Listing queues for vhost {vh} ..."));
            // With 100,000 queues the full objects are tens of MB: ask the API for only
            // the fields shown (RabbitMQ's `columns` takes top-level names).
            let fields: Vec<&str> = cols
                .iter()
                .filter_map(|c| path_of(&QUEUES, c).split('/').next())
                .collect();
            let query = format!("?columns={}", fields.join(","));
            let items = fetch(api, &QUEUES, &["api", "queues", vh], &query, true)?;
            render(o, &QUEUES, &cols, &items, &info);
            Ok(())
        }
        "list_exchanges" => {
            let cols = columns(&EXCHANGES, o)?;
            let info = vec![format!("Listing exchanges for vhost {vh} ...")];
            list(
                o,
                api,
                &EXCHANGES,
                cols,
                &["api", "exchanges", vh],
                info,
                true,
            )
        }
        "list_bindings" => {
            let cols = columns(&BINDINGS, o)?;
            // rabbitmqctl's own spelling: no space before the dots.
            let info = vec![format!("Listing bindings for vhost {vh}...")];
            list(
                o,
                api,
                &BINDINGS,
                cols,
                &["api", "bindings", vh],
                info,
                true,
            )
        }
        "list_connections" => {
            let cols = columns(&CONNECTIONS, o)?;
            let info = vec!["Listing connections ...".to_string()];
            list(
                o,
                api,
                &CONNECTIONS,
                cols,
                &["api", "connections"],
                info,
                false,
            )
        }
        "list_channels" => {
            let cols = columns(&CHANNELS, o)?;
            let info = vec!["Listing channels ...".to_string()];
            list(o, api, &CHANNELS, cols, &["api", "channels"], info, false)
        }
        "list_consumers" => {
            let cols = columns(&CONSUMERS, o)?;
            let info = vec![format!("Listing consumers in vhost {vh} ...")];
            list(
                o,
                api,
                &CONSUMERS,
                cols,
                &["api", "consumers", vh],
                info,
                true,
            )
        }
        "list_vhosts" => {
            let cols = columns(&VHOSTS, o)?;
            let info = vec!["Listing vhosts ...".to_string()];
            list(o, api, &VHOSTS, cols, &["api", "vhosts"], info, false)
        }
        "list_users" => {
            let cols = columns(&USERS, o)?;
            let info = vec!["Listing users ...".to_string()];
            list(o, api, &USERS, cols, &["api", "users"], info, false)
        }
        "status" => {
            no_args(o)?;
            status(o, api)
        }
        "purge_queue" => purge_queue(o, api),
        "delete_queue" => delete_queue(o, api),
        "close_connection" => close_connection(o, api),
        "close_all_connections" => close_all_connections(o, api),
        "export_definitions" => export_definitions(o, api),
        "import_definitions" => import_definitions(o, api),
        other => crate::admin::run(o, api)
            .or_else(|| crate::policies::run(o, api))
            .unwrap_or_else(|| Err(Fail::usage(format!("Command '{other}' not found.")))),
    }
}

fn no_args(o: &Opts) -> Result<(), Fail> {
    if o.args.is_empty() {
        Ok(())
    } else {
        Err(Fail::usage("too many arguments."))
    }
}

/// Exactly `n` positional arguments, as rabbitmqctl's validation wants them.
pub(crate) fn args_n(o: &Opts, n: usize) -> Result<&[String], Fail> {
    match o.args.len().cmp(&n) {
        std::cmp::Ordering::Less => Err(Fail::usage("not enough arguments.")),
        std::cmp::Ordering::Greater => Err(Fail::usage("too many arguments.")),
        std::cmp::Ordering::Equal => Ok(&o.args),
    }
}

/// The columns asked for (rabbitmqctl also takes them comma-separated), or the
/// defaults; an unknown one is a usage error before anything is sent.
fn columns(l: &List, o: &Opts) -> Result<Vec<String>, Fail> {
    let asked: Vec<String> = o
        .args
        .iter()
        .flat_map(|a| a.split(','))
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if asked.is_empty() {
        return Ok(l.defaults.iter().map(|c| c.to_string()).collect());
    }
    let unknown: Vec<&str> = asked
        .iter()
        .filter(|c| !l.columns.iter().any(|(k, _)| k == c))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(Fail::usage(format!(
            "Info key(s) {} are not supported",
            unknown.join(",")
        )));
    }
    Ok(asked)
}

pub(crate) fn info(o: &Opts, lines: &[String]) {
    if !o.quiet && !o.json {
        for l in lines {
            outln!("{l}");
        }
    }
}

/// Fetches a list and prints the asked columns. A vhost-scoped list of a vhost that
/// does not exist is empty, as rabbitmqctl shows it (the API answers 404).
fn list(
    o: &Opts,
    api: &Api,
    l: &List,
    cols: Vec<String>,
    segs: &[&str],
    info_lines: Vec<String>,
    vhost_scoped: bool,
) -> Result<(), Fail> {
    let items = fetch(api, l, segs, "", vhost_scoped)?;
    render(o, l, &cols, &items, &info_lines);
    Ok(())
}

/// `query` (`?columns=...` or empty) is appended to the path.
fn fetch(
    api: &Api,
    l: &List,
    segs: &[&str],
    query: &str,
    vhost_scoped: bool,
) -> Result<Vec<Value>, Fail> {
    let r = api.call("GET", &format!("{}{query}", Api::path(segs)), &[], None)?;
    match r.status {
        200 => match r.json()? {
            Value::Array(items) => Ok(items),
            other => Err(Fail::internal(format!(
                "GET {} answered {} instead of a list of {}",
                Api::path(segs),
                kind(&other),
                l.what
            ))),
        },
        // Only the API's own 404 body means "no such vhost"; another server's 404 (a
        // --url pointing at the wrong port) is an error, not an empty list.
        404 if vhost_scoped && is_api_error(&r.body) => Ok(Vec::new()),
        s => Err(Fail::failed(format!(
            "GET {} answered {s}: {}",
            Api::path(segs),
            r.reason()
        ))),
    }
}

/// The JSON path behind a column (the column's own name if it has no entry).
fn path_of<'a>(l: &'a List, col: &'a str) -> &'a str {
    l.columns
        .iter()
        .find(|(k, _)| *k == col)
        .map_or(col, |(_, p)| p)
}

fn render(o: &Opts, l: &List, cols: &[String], items: &[Value], info_lines: &[String]) {
    let rows: Vec<Vec<Value>> = items
        .iter()
        .map(|item| {
            cols.iter()
                .map(|c| {
                    let path = path_of(l, c);
                    match path.strip_prefix('=') {
                        Some(constant) => Value::String(constant.to_string()),
                        None => field(item, path).clone(),
                    }
                })
                .collect()
        })
        .collect();
    info(o, info_lines);
    out!("{}", print_rows(cols, &rows, o.json, o.headers));
}

fn is_api_error(body: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| v.get("error").is_some())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn purge_queue(o: &Opts, api: &Api) -> Result<(), Fail> {
    let q = &args_n(o, 1)?[0];
    let vh = &o.vhost;
    info(o, &[format!("Purging queue '{q}' in vhost '{vh}' ...")]);
    let path = Api::path(&["api", "queues", vh, q, "contents"]);
    let r = api.call("DELETE", &path, &[], None)?;
    match r.status {
        200 | 204 => Ok(()),
        // rabbitmqctl 3.10 answers a missing queue with "not_found" and 69.
        404 => Err(Fail::error(
            EX_UNAVAILABLE,
            format!("not_found: queue '{q}' in vhost '{vh}'"),
        )),
        s => Err(Fail::failed(format!("{s}: {}", r.reason()))),
    }
}

fn delete_queue(o: &Opts, api: &Api) -> Result<(), Fail> {
    let q = &args_n(o, 1)?[0];
    let vh = &o.vhost;
    let cond = match (o.if_empty, o.if_unused) {
        (false, false) => String::new(),
        (true, false) => " if queue is empty".into(),
        (false, true) => " if queue is unused".into(),
        (true, true) => " if queue is empty and if queue is unused".into(),
    };
    info(
        o,
        &[format!("Deleting queue '{q}' on vhost '{vh}'{cond} ...")],
    );
    // rabbitmqctl reports how many ready messages went with the queue: read the count
    // first (the delete answers 204 with no body).
    let before = api.get(&["api", "queues", vh, q])?;
    if before.status == 404 {
        return Err(Fail::error(EX_USAGE, "Queue not found"));
    }
    let ready = before
        .json()
        .ok()
        .and_then(|v| v.get("messages_ready").and_then(Value::as_u64))
        .unwrap_or(0);
    let mut query = Vec::new();
    if o.if_empty {
        query.push("if-empty=true");
    }
    if o.if_unused {
        query.push("if-unused=true");
    }
    let mut path = Api::path(&["api", "queues", vh, q]);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let r = api.call("DELETE", &path, &[], None)?;
    match r.status {
        200 | 204 => {
            outln!("Queue was successfully deleted with {ready} ready messages");
            Ok(())
        }
        // rabbitmqctl's texts and code (64) for these three.
        404 => Err(Fail::error(EX_USAGE, "Queue not found")),
        400 if r.reason().contains("not empty") => Err(Fail::error(EX_USAGE, "Queue is not empty")),
        400 if r.reason().contains("in use") => Err(Fail::error(EX_USAGE, "Queue is in use")),
        s => Err(Fail::failed(format!("{s}: {}", r.reason()))),
    }
}

fn close_connection(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_n(o, 2)?;
    let (name, reason) = (&a[0], &a[1]);
    info(
        o,
        &[format!("Closing connection {name}, reason: {reason}...")],
    );
    let path = Api::path(&["api", "connections", name]);
    let r = api.call("DELETE", &path, &[("X-Reason", reason)], None)?;
    match r.status {
        200 | 204 => Ok(()),
        404 => Err(Fail::failed(format!("connection '{name}' not found"))),
        s => Err(Fail::failed(format!("{s}: {}", r.reason()))),
    }
}

fn close_all_connections(o: &Opts, api: &Api) -> Result<(), Fail> {
    let reason = &args_n(o, 1)?[0];
    let vh = &o.vhost;
    if o.global {
        info(
            o,
            &[format!(
                "Closing all connections (across all vhosts), reason: {reason}..."
            )],
        );
    } else {
        info(
            o,
            &[format!(
                "Closing all connections in vhost {vh}, reason: {reason}..."
            )],
        );
    }
    let all = api.get_ok(&["api", "connections"])?;
    let Value::Array(conns) = all else {
        return Err(Fail::internal("GET /api/connections did not answer a list"));
    };
    let mut closed = 0usize;
    for c in &conns {
        if !o.global && c.get("vhost").and_then(Value::as_str) != Some(vh.as_str()) {
            continue;
        }
        let Some(name) = c.get("name").and_then(Value::as_str) else {
            continue;
        };
        let path = Api::path(&["api", "connections", name]);
        let r = api.call("DELETE", &path, &[("X-Reason", reason)], None)?;
        match r.status {
            200 | 204 => closed += 1,
            // Gone by itself between the list and the close: nothing to do.
            404 => {}
            s => return Err(Fail::failed(format!("closing {name}: {s}: {}", r.reason()))),
        }
    }
    outln!("Closed {closed} connections");
    Ok(())
}

fn export_definitions(o: &Opts, api: &Api) -> Result<(), Fail> {
    let target = &args_n(o, 1)?[0];
    if target != "-" {
        info(
            o,
            &[format!(
                "Exporting definitions in JSON to a file at \"{target}\" ..."
            )],
        );
    }
    let defs = api.get_ok(&["api", "definitions"])?;
    let text = serde_json::to_string(&defs)
        .map_err(|e| Fail::internal(format!("cannot serialise the definitions: {e}")))?;
    if target == "-" {
        outln!("{text}");
        return Ok(());
    }
    std::fs::write(target, text.as_bytes()).map_err(|e| Fail {
        code: EX_SOFTWARE,
        msg: format!("Error:\ncannot write {target}: {e}"),
    })
}

fn import_definitions(o: &Opts, api: &Api) -> Result<(), Fail> {
    let source = &args_n(o, 1)?[0];
    let mut body = Vec::new();
    if source == "-" {
        info(
            o,
            &["Importing definitions in JSON from standard input ...".to_string()],
        );
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| Fail::internal(format!("cannot read standard input: {e}")))?;
    } else {
        body = match std::fs::read(source) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Fail {
                    code: EX_DATAERR,
                    msg: format!(
                        "Error (argument validation): Bad argument: File {source} does not exist"
                    ),
                })
            }
            Err(e) => {
                return Err(Fail::error(
                    EX_DATAERR,
                    format!("cannot read {source}: {e}"),
                ))
            }
        };
        info(
            o,
            &[format!(
                "Importing definitions in JSON from a file at \"{source}\" ..."
            )],
        );
    }
    // Checked here so a broken file gets rabbitmqctl's message and code (65) without a
    // round trip.
    if let Err(e) = serde_json::from_slice::<Value>(&body) {
        let _ = std::io::stdout().flush();
        return Err(Fail::error(
            EX_DATAERR,
            format!("Failed to deserialise input (format: JSON) (error: {e})"),
        ));
    }
    let r = api.call("POST", "/api/definitions", &[], Some(&body))?;
    match r.status {
        200 | 201 | 204 => {
            if !o.quiet {
                outln!("Successfully imported definitions");
            }
            Ok(())
        }
        400 => Err(Fail::error(EX_DATAERR, r.reason())),
        s => Err(Fail::failed(format!("{s}: {}", r.reason()))),
    }
}

/// A reading of `/api/overview` and `/api/nodes/{node}` in rabbitmqctl status's
/// sections. Fields a broker does not serve print as unknown rather than failing.
fn status(o: &Opts, api: &Api) -> Result<(), Fail> {
    let ov = api.get_ok(&["api", "overview"])?;
    let node_name = ov
        .get("node")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let node = match api.get(&["api", "nodes", &node_name])? {
        r if r.status == 200 => r.json()?,
        _ => Value::Null,
    };
    let vhosts = match api.get_ok(&["api", "vhosts"])? {
        Value::Array(v) => v.len(),
        _ => 0,
    };
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let gb =
        |b: Option<f64>| b.map_or_else(|| "unknown".to_string(), |b| format!("{:.4} gb", b / 1e9));
    let totals = ov.get("object_totals").cloned().unwrap_or(Value::Null);
    let total = |k: &str| totals.get(k).and_then(Value::as_u64).unwrap_or(0);
    let version = ov
        .get("rabbitmq_version")
        .or_else(|| ov.get("product_version"))
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let listeners: Vec<Value> = match ov.get("listeners") {
        Some(Value::Array(l)) => l.clone(),
        _ => Vec::new(),
    };
    let mut alarms = Vec::new();
    if node.get("mem_alarm").and_then(Value::as_bool) == Some(true) {
        alarms.push("memory".to_string());
    }
    if node.get("disk_free_alarm").and_then(Value::as_bool) == Some(true) {
        alarms.push("disk".to_string());
    }
    if o.json {
        let out = serde_json::json!({
            "alarms": alarms,
            "disk_free": node.get("disk_free"),
            "disk_free_limit": node.get("disk_free_limit"),
            "listeners": listeners.iter().map(|l| serde_json::json!({
                "interface": l.get("ip_address"),
                "node": l.get("node"),
                "port": l.get("port"),
                "protocol": l.get("protocol"),
                "purpose": purpose(l),
            })).collect::<Vec<_>>(),
            "memory": {"total": {"rss": node.get("mem_used")}},
            "node_name": node_name,
            "os": node.get("os_pid").map(|_| "Linux"),
            "pid": node.get("os_pid"),
            "rabbitmq_version": version,
            "totals": {
                "connection_count": total("connections"),
                "queue_count": total("queues"),
                "virtual_host_count": vhosts,
            },
            "uptime": node.get("uptime").and_then(Value::as_u64).map(|u| u / 1000),
            "vm_memory_high_watermark_limit": node.get("mem_limit"),
        });
        outln!("{out}");
        return Ok(());
    }
    let mut s = String::new();
    if !o.quiet {
        s.push_str(&format!("Status of node {node_name} ...\n"));
    }
    let show = |v: Option<&Value>| match v {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "unknown".into(),
        Some(x) => x.to_string(),
    };
    s.push_str("Runtime\n\n");
    s.push_str(&format!("OS PID: {}\n", show(node.get("os_pid"))));
    s.push_str(&format!(
        "OS: {}\n",
        std::env::consts::OS.replace("linux", "Linux")
    ));
    s.push_str(&format!(
        "Uptime (seconds): {}\n",
        node.get("uptime")
            .and_then(Value::as_u64)
            .map_or_else(|| "unknown".into(), |u| (u / 1000).to_string())
    ));
    s.push_str(&format!("RabbitMQ version: {version}\n"));
    s.push_str(&format!("Node name: {node_name}\n"));
    s.push_str("\nAlarms\n\n");
    if alarms.is_empty() {
        s.push_str("(none)\n");
    }
    for a in &alarms {
        let what = if a == "memory" {
            "Memory"
        } else {
            "Free disk space"
        };
        s.push_str(&format!("{what} alarm on node {node_name}\n"));
    }
    s.push_str("\nMemory\n\n");
    s.push_str(&format!(
        "Total memory used: {}\n",
        gb(num(&node, "mem_used"))
    ));
    s.push_str(&format!(
        "Memory high watermark setting: computed to: {}\n",
        gb(num(&node, "mem_limit"))
    ));
    s.push_str("\nFree Disk Space\n\n");
    s.push_str(&format!(
        "Low free disk space watermark: {}\n",
        gb(num(&node, "disk_free_limit"))
    ));
    s.push_str(&format!(
        "Free disk space: {}\n",
        gb(num(&node, "disk_free"))
    ));
    s.push_str("\nTotals\n\n");
    s.push_str(&format!("Connection count: {}\n", total("connections")));
    s.push_str(&format!("Queue count: {}\n", total("queues")));
    s.push_str(&format!("Virtual host count: {vhosts}\n"));
    s.push_str("\nListeners\n\n");
    for l in &listeners {
        s.push_str(&format!(
            "Interface: {}, port: {}, protocol: {}, purpose: {}\n",
            interface(&show(l.get("ip_address"))),
            show(l.get("port")),
            show(l.get("protocol")),
            purpose(l)
        ));
    }
    out!("{s}");
    Ok(())
}

/// rabbitmqctl brackets IPv6 addresses: `[::]`.
fn interface(ip: &str) -> String {
    if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// rabbitmqctl's words for what a listener is for.
fn purpose(l: &Value) -> &'static str {
    match l.get("protocol").and_then(Value::as_str) {
        Some("amqp") => "AMQP 0-9-1 and AMQP 1.0",
        Some("amqp/ssl") => "AMQP 0-9-1 and AMQP 1.0 over TLS",
        Some("http") => "HTTP API",
        Some("http/prometheus") => "Prometheus exporter API over HTTP",
        Some("clustering") => "inter-node and CLI tool communication",
        _ => "",
    }
}
