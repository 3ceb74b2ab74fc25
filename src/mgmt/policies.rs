//! Policies and operator policies in the management API (issue 12), as RabbitMQ
//! 3.10's management plugin serves them (rabbit_mgmt_wm_policies, _policy,
//! _operator_policies, _operator_policy):
//!
//! - `GET /api/policies[/{vhost}]`, `GET /api/operator-policies[/{vhost}]`: every
//!   management user, listing the vhosts it has permissions in;
//! - `GET|PUT|DELETE /api/policies/{vhost}/{name}`: administrators, and policymakers
//!   in the vhosts they have permissions in;
//! - `GET|PUT|DELETE /api/operator-policies/{vhost}/{name}`: administrators only.
//!
//! A PUT takes `{"pattern", "definition", "apply-to"?, "priority"?}` and answers 201
//! when the policy is new, 204 when it replaced one; a bad body is RabbitMQ's 400
//! "Validation failed" with its text (HTML-escaped for policies, as RabbitMQ does, not
//! for operator policies). The policies live in the broker ([`crate::broker::policy`],
//! `Broker::set_policy`), which applies them at once and persists them with the
//! metadata. Also here: the `policy`, `operator_policy` and
//! `effective_policy_definition` fields of queues and the `policy` of exchanges.

use serde_json::{json, Map, Value};

use super::{json_body, list, method_not_allowed, ApiError, ApiResult, Caller};
use crate::broker::policy::{self, ApplyTo, Policy};
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
    let operator = match s.first() {
        Some(&"policies") => false,
        Some(&"operator-policies") => true,
        _ => return None,
    };
    let r = match &s[1..] {
        // The lists are every management user's, filtered to the vhosts they may see
        // (RabbitMQ's `is_authorized_vhost` and `filter_vhost`), operator policies too.
        [] if get => listed(req, server, caller, operator, None),
        [vh] if get => super::access::require_vhost(server, caller, vh).and_then(|_| {
            super::vhost(server, vh)?;
            listed(req, server, caller, operator, Some(vh))
        }),
        [vh, name] if get => allowed(server, caller, operator, Some(vh)).and_then(|_| {
            let id = super::vhost(server, vh)?;
            let p = server
                .broker
                .vhost(id)
                .and_then(|v| v.policies.get(operator, name))
                .ok_or_else(ApiError::not_found)?;
            Ok(Response::new(
                200,
                "application/json",
                p.to_json_text(vh).into_bytes(),
            ))
        }),
        [vh, name] if put => allowed(server, caller, operator, Some(vh))
            .and_then(|_| put_policy(server, req, operator, vh, name)),
        [vh, name] if delete => allowed(server, caller, operator, Some(vh)).and_then(|_| {
            let id = super::vhost(server, vh)?;
            if !server.broker.clear_policy(id, operator, name) {
                return Err(ApiError::not_found());
            }
            Ok(Response::empty(204))
        }),
        [] | [_] | [_, _] => Ok(method_not_allowed()),
        _ => return None,
    };
    Some(r)
}

/// One policy: administrators, or policymakers with permissions in the vhost
/// (`is_authorized_policies`); one operator policy: administrators.
fn allowed(
    server: &Server,
    caller: &Caller,
    operator: bool,
    vhost: Option<&str>,
) -> Result<(), ApiError> {
    if operator {
        return super::access::require_admin(caller);
    }
    super::access::require_policies(server, caller, vhost.unwrap_or(""))
}

/// A policy list: with no query, in RabbitMQ's bytes (its field order); with one
/// (`columns`, `sort`, pagination...), through the API's common list handling.
fn listed(
    req: &Request,
    server: &Server,
    caller: &Caller,
    operator: bool,
    only: Option<&str>,
) -> ApiResult {
    if !req.query.is_empty() {
        return list(req, rows(server, caller, operator, only));
    }
    let items: Vec<String> = visible(server, caller, operator, only)
        .into_iter()
        .map(|(vh, p)| p.to_json_text(vh))
        .collect();
    Ok(Response::new(
        200,
        "application/json",
        format!("[{}]", items.join(",")).into_bytes(),
    ))
}

/// Every policy (of `only`) the caller may see, in RabbitMQ's order: by vhost, then
/// priority, then name.
fn rows(server: &Server, caller: &Caller, operator: bool, only: Option<&str>) -> Vec<Value> {
    visible(server, caller, operator, only)
        .into_iter()
        .map(|(vh, p)| p.to_json(vh))
        .collect()
}

fn visible<'s>(
    server: &'s Server,
    caller: &Caller,
    operator: bool,
    only: Option<&str>,
) -> Vec<(&'s str, &'s Policy)> {
    let mut out = Vec::new();
    for (_, v) in server.broker.vhosts() {
        if only.is_some_and(|o| o != &*v.name)
            || !(super::access::is_admin(caller)
                || server.auth.can_access_vhost(&caller.user, &v.name))
        {
            continue;
        }
        for p in v.policies.listed(operator) {
            out.push((&*v.name, p));
        }
    }
    out
}

/// RabbitMQ's 400 for a policy that fails validation.
fn invalid(operator: bool, text: &str) -> ApiError {
    let text = if operator {
        text.to_string()
    } else {
        // rabbit_mgmt_wm_policy escapes the reason; the operator policy resource does not.
        text.replace('<', "&lt;").replace('>', "&gt;")
    };
    ApiError::bad_request(format!("Validation failed\n\n{text}\n"))
}

fn put_policy(
    server: &mut Server,
    req: &Request,
    operator: bool,
    vh: &str,
    name: &str,
) -> ApiResult {
    // RabbitMQ's PUT names the missing vhost (a GET answers the plain 404).
    let id =
        super::vhost(server, vh).map_err(|_| ApiError::new(404, "not_found", "vhost_not_found"))?;
    let body = json_body(req)?;
    let missing: Vec<String> = ["pattern", "definition"]
        .iter()
        .filter(|k| !body.contains_key(**k))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!("[{}]", missing.join(","))));
    }
    let p = parse(&body, name, operator).map_err(|e| invalid(operator, &e))?;
    let created = server
        .broker
        .set_policy(id, operator, p)
        .ok_or_else(ApiError::not_found)?;
    Ok(Response::empty(if created { 201 } else { 204 }))
}

/// A policy from a PUT body or a definitions entry (`pattern`, `definition`,
/// `apply-to`, `priority`), checked in RabbitMQ's order (priority, pattern, apply-to,
/// definition). Err is the text after "Validation failed\n\n".
pub fn parse(body: &Map<String, Value>, name: &str, operator: bool) -> Result<Policy, String> {
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
        Some(v) => {
            return Err(format!(
                "priority should be a number, actually was {}",
                policy::erl(v)
            ))
        }
    };
    let pattern = match body.get("pattern") {
        Some(Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(format!(
                "pattern should be regular expression but is {}",
                policy::erl(v)
            ))
        }
        None => return Err("pattern not found".into()),
    };
    let apply_to = match body.get("apply-to") {
        None | Some(Value::Null) => ApplyTo::All,
        Some(Value::String(s)) => ApplyTo::parse(s).ok_or_else(|| {
            format!("apply-to '{s}' unrecognised; should be 'queues', 'exchanges' or 'all'")
        })?,
        Some(v) => {
            return Err(format!(
                "apply-to {} unrecognised; should be 'queues', 'exchanges' or 'all'",
                policy::erl(v)
            ))
        }
    };
    let definition = match body.get("definition") {
        Some(Value::Object(m)) => m.clone(),
        // RabbitMQ's API crashes (500) on a definition that is not an object.
        Some(v) => {
            return Err(format!(
                "{} is not a valid policy definition",
                policy::erl(v)
            ))
        }
        None => return Err("no policy provided".into()),
    };
    Policy::new(name, pattern, apply_to, priority, definition, operator)
}

/// Sets a queue's `policy`, `operator_policy` and `effective_policy_definition`.
pub fn decorate_queue(server: &Server, vhost: &str, name: &[u8], j: &mut Value) {
    let Some(v) = server
        .broker
        .lookup_vhost(vhost.as_bytes())
        .and_then(|(id, _)| server.broker.vhost(id))
    else {
        return;
    };
    if v.policies.is_empty() {
        return;
    }
    let (user, op) = v.policies.applied(name, true);
    if let Value::Object(m) = j {
        m.insert("policy".into(), json!(user.map(|p| &p.name)));
        m.insert("operator_policy".into(), json!(op.map(|p| &p.name)));
        m.insert(
            "effective_policy_definition".into(),
            Value::Object(policy::effective_definition(user, op)),
        );
    }
}

/// Sets an exchange's `policy` when one applies (RabbitMQ leaves the field out
/// otherwise).
pub fn decorate_exchange(server: &Server, vhost: &str, name: &[u8], j: &mut Value) {
    let Some(v) = server
        .broker
        .lookup_vhost(vhost.as_bytes())
        .and_then(|(id, _)| server.broker.vhost(id))
    else {
        return;
    };
    if let (Some(p), Value::Object(m)) = (v.policies.applied(name, false).0, j) {
        m.insert("policy".into(), json!(p.name));
    }
}
