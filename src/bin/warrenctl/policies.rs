//! The policy commands of rabbitmqctl (issue 12): `set_policy`, `clear_policy`,
//! `list_policies` and their operator-policy twins (`set_operator_policy`, ...), over
//! `/api/policies` and `/api/operator-policies`, with rabbitmqctl 3.10's informational
//! lines, output and exit codes (taken from rabbitmqctl on the same broker): a missing
//! vhost is 65 with its bare line, a validation failure or a missing policy 69 after
//! "Error:", bad options 64.

use serde_json::{json, Map, Value};

use crate::commands::{args_n, info};
use crate::format::print_rows;
use crate::http::{Api, Reply};
use crate::{Fail, Opts, EX_DATAERR, EX_UNAVAILABLE};

pub const COMMANDS: &[(&str, &str)] = &[
    (
        "set_policy",
        "[-p <vhost>] [--priority <priority>] [--apply-to <apply-to>] <name> <pattern> <definition>",
    ),
    ("clear_policy", "[-p <vhost>] <name>"),
    ("list_policies", "[-p <vhost>]"),
    (
        "set_operator_policy",
        "[-p <vhost>] [--priority <priority>] [--apply-to <apply-to>] <name> <pattern> <definition>",
    ),
    ("clear_operator_policy", "[-p <vhost>] <name>"),
    ("list_operator_policies", "[-p <vhost>]"),
];

/// Runs `o.command` if it is one of this module's; `None` if it is not.
pub fn run(o: &Opts, api: &Api) -> Option<Result<(), Fail>> {
    Some(match o.command.as_str() {
        "set_policy" => set(o, api, false),
        "clear_policy" => clear(o, api, false),
        "list_policies" => list(o, api, false),
        "set_operator_policy" => set(o, api, true),
        "clear_operator_policy" => clear(o, api, true),
        "list_operator_policies" => list(o, api, true),
        _ => return None,
    })
}

fn resource(operator: bool) -> &'static str {
    if operator {
        "operator-policies"
    } else {
        "policies"
    }
}

fn no_vhost(vh: &str) -> Fail {
    Fail {
        code: EX_DATAERR,
        msg: format!("Virtual host '{vh}' does not exist"),
    }
}

fn vhost_exists(api: &Api, vh: &str) -> Result<bool, Fail> {
    let r = api.get(&["api", "vhosts", vh])?;
    match r.status {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(unexpected(&r)),
    }
}

fn unexpected(r: &Reply) -> Fail {
    Fail::error(EX_UNAVAILABLE, format!("{} {}", r.status, r.reason()))
}

/// `{"node": ..., "result": "ok"}` under `--formatter json` (nothing otherwise).
fn done(o: &Opts, api: &Api) -> Result<(), Fail> {
    if o.json {
        let node = api
            .get_ok(&["api", "overview"])?
            .get("node")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        outln!("{}", json!({"node": node, "result": "ok"}));
    }
    Ok(())
}

fn set(o: &Opts, api: &Api, operator: bool) -> Result<(), Fail> {
    let a = args_n(o, 3)?;
    let (name, pattern, def) = (&a[0], &a[1], &a[2]);
    let priority = match o.priority.as_deref() {
        None => 0,
        Some(p) => p.parse::<i64>().map_err(|_| {
            Fail::usage(format!(
                "Invalid options for this command:\n--priority : {p}"
            ))
        })?,
    };
    let vh = &o.vhost;
    let what = if operator {
        "operator policy override"
    } else {
        "policy"
    };
    info(
        o,
        &[format!(
            "Setting {what} \"{name}\" for pattern \"{pattern}\" to \"{def}\" with priority \"{priority}\" for vhost \"{vh}\" ..."
        )],
    );
    let definition: Map<String, Value> = match serde_json::from_str::<Value>(def) {
        Ok(Value::Object(m)) => m,
        // rabbitmqctl's words for a definition that is not JSON.
        _ => {
            return Err(Fail::error(
                EX_UNAVAILABLE,
                "JSON decoding error. Reason: badarg",
            ))
        }
    };
    if !vhost_exists(api, vh)? {
        return Err(no_vhost(vh));
    }
    let mut body = json!({
        "pattern": pattern,
        "definition": definition,
        "priority": priority,
    });
    if let (Some(at), Value::Object(m)) = (o.apply_to.as_deref(), &mut body) {
        m.insert("apply-to".into(), json!(at));
    }
    let r = api.call(
        "PUT",
        &Api::path(&["api", resource(operator), vh, name]),
        &[],
        Some(body.to_string().as_bytes()),
    )?;
    match r.status {
        200 | 201 | 204 => done(o, api),
        // The API escapes its policy texts for HTML; rabbitmqctl prints them plain.
        400 => Err(Fail::error(
            EX_UNAVAILABLE,
            r.reason().replace("&lt;", "<").replace("&gt;", ">"),
        )),
        404 => Err(no_vhost(vh)),
        _ => Err(unexpected(&r)),
    }
}

fn clear(o: &Opts, api: &Api, operator: bool) -> Result<(), Fail> {
    let name = &args_n(o, 1)?[0];
    let vh = &o.vhost;
    let what = if operator {
        "operator policy"
    } else {
        "policy"
    };
    info(
        o,
        &[format!("Clearing {what} \"{name}\" on vhost \"{vh}\" ...")],
    );
    let r = api.call(
        "DELETE",
        &Api::path(&["api", resource(operator), vh, name]),
        &[],
        None,
    )?;
    match r.status {
        200 | 204 => done(o, api),
        // rabbitmqctl says the same for a missing vhost.
        404 => Err(Fail::error(EX_UNAVAILABLE, "Parameter does not exist")),
        _ => Err(unexpected(&r)),
    }
}

fn list(o: &Opts, api: &Api, operator: bool) -> Result<(), Fail> {
    args_n(o, 0)?;
    let vh = &o.vhost;
    let what = if operator {
        "operator policy overrides"
    } else {
        "policies"
    };
    info(o, &[format!("Listing {what} for vhost \"{vh}\" ...")]);
    let r = api.get(&["api", resource(operator), vh])?;
    let items = match r.status {
        200 => match r.json()? {
            Value::Array(a) => a,
            _ => Vec::new(),
        },
        404 => return Err(no_vhost(vh)),
        _ => return Err(unexpected(&r)),
    };
    let cols: Vec<String> = [
        "vhost",
        "name",
        "pattern",
        "apply-to",
        "definition",
        "priority",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    let rows: Vec<Vec<Value>> = items
        .iter()
        .map(|p| {
            cols.iter()
                .map(|c| match (c.as_str(), p.get(c)) {
                    // A compact JSON text, in the table and as a JSON string.
                    ("definition", Some(d)) => Value::String(d.to_string()),
                    (_, v) => v.cloned().unwrap_or(Value::Null),
                })
                .collect()
        })
        .collect();
    if rows.is_empty() && !o.json {
        outln!("");
        return Ok(());
    }
    out!("{}", print_rows(&cols, &rows, o.json, o.headers));
    Ok(())
}
