//! The access-control commands of rabbitmqctl (issue 11): users, passwords and tags,
//! vhosts, permissions, topic permissions, vhost and user limits, `authenticate_user`.
//! Each is a few calls of RabbitMQ's management API (`/api/users`, `/api/vhosts`,
//! `/api/permissions`, `/api/topic-permissions`, `/api/vhost-limits`,
//! `/api/user-limits`, `/api/whoami`), with rabbitmqctl 3.10's informational lines,
//! output and exit codes, which differ from command to command (a missing user is 67
//! for `delete_user` but 69 for `clear_password`); each mapping below was taken from
//! rabbitmqctl on the same broker.
//!
//! Where rabbitmqctl's semantics and the API's differ, the command reads first and
//! then writes what rabbitmqctl would have left: `add_user` refuses an existing user
//! (the API's PUT would update it), `set_user_tags` sends the stored password hash back
//! (a PUT without one clears the password), `set_vhost_limits` replaces the whole set,
//! `clear_topic_permissions USER EXCHANGE` puts back the other exchanges' permissions
//! (the API only deletes all of a user's in a vhost).

use std::io::BufRead;

use serde_json::{json, Map, Value};

use crate::commands::{args_n, info};
use crate::format::print_rows;
use crate::http::{Api, Reply};
use crate::{Fail, Opts, EX_DATAERR, EX_SOFTWARE, EX_UNAVAILABLE};

/// rabbitmqctl's code for a user that does not exist (EX_NOUSER).
const EX_NOUSER: u8 = 67;

pub const COMMANDS: &[(&str, &str)] = &[
    ("add_user", "<username> [<password>]"),
    ("delete_user", "<username>"),
    ("change_password", "<username> [<password>]"),
    ("clear_password", "<username>"),
    ("authenticate_user", "<username> [<password>]"),
    ("set_user_tags", "<username> <tag> [...]"),
    ("list_user_permissions", "<username>"),
    (
        "set_permissions",
        "[-p <vhost>] <username> <conf> <write> <read>",
    ),
    ("clear_permissions", "[-p <vhost>] <username>"),
    (
        "set_topic_permissions",
        "[-p <vhost>] <username> <exchange> <write> <read>",
    ),
    (
        "clear_topic_permissions",
        "[-p <vhost>] <username> [<exchange>]",
    ),
    ("list_topic_permissions", "[-p <vhost>]"),
    ("list_user_topic_permissions", "<username>"),
    ("add_vhost", "<vhost> [--description <description> --tags \"<tag1>,<tag2>,<...>\" --default-queue-type <quorum|classic|stream>]"),
    ("delete_vhost", "<vhost>"),
    ("set_vhost_limits", "[-p <vhost>] <definition>"),
    ("clear_vhost_limits", "[-p <vhost>]"),
    ("list_vhost_limits", "[-p <vhost>] [--global]"),
    ("set_user_limits", "<username> <definition>"),
    ("clear_user_limits", "<username> <limit> | all"),
    ("list_user_limits", "[--user <username>] [--global]"),
];

/// Runs `o.command` if it is one of this module's; `None` if it is not.
pub fn run(o: &Opts, api: &Api) -> Option<Result<(), Fail>> {
    Some(match o.command.as_str() {
        "add_user" => add_user(o, api),
        "delete_user" => delete_user(o, api),
        "change_password" => change_password(o, api),
        "clear_password" => clear_password(o, api),
        "authenticate_user" => authenticate_user(o, api),
        "set_user_tags" => set_user_tags(o, api),
        "list_user_permissions" => list_user_permissions(o, api),
        "set_permissions" => set_permissions(o, api),
        "clear_permissions" => clear_permissions(o, api),
        "list_permissions" => list_permissions(o, api),
        "set_topic_permissions" => set_topic_permissions(o, api),
        "clear_topic_permissions" => clear_topic_permissions(o, api),
        "list_topic_permissions" => list_topic_permissions(o, api),
        "list_user_topic_permissions" => list_user_topic_permissions(o, api),
        "add_vhost" => add_vhost(o, api),
        "delete_vhost" => delete_vhost(o, api),
        "set_vhost_limits" => set_vhost_limits(o, api),
        "clear_vhost_limits" => clear_vhost_limits(o, api),
        "list_vhost_limits" => list_vhost_limits(o, api),
        "set_user_limits" => set_user_limits(o, api),
        "clear_user_limits" => clear_user_limits(o, api),
        "list_user_limits" => list_user_limits(o, api),
        _ => return None,
    })
}

// ----- shared pieces -------------------------------------------------------------------

/// A failure rabbitmqctl reports without its "Error:" line (vhost lookups): the text
/// alone on stderr.
fn bare(code: u8, msg: impl Into<String>) -> Fail {
    Fail {
        code,
        msg: msg.into(),
    }
}

fn no_vhost(vh: &str) -> Fail {
    bare(EX_DATAERR, format!("Virtual host '{vh}' does not exist"))
}

/// The Elixir term rabbitmqctl prints for a missing user in some commands.
fn no_such_user(u: &str) -> Fail {
    Fail::error(EX_UNAVAILABLE, format!("{{:no_such_user, \"{u}\"}}"))
}

/// Anything the API answered that the command has no mapping for.
fn unexpected(what: &str, r: &Reply) -> Fail {
    Fail::error(
        EX_UNAVAILABLE,
        format!("{what}: {} {}", r.status, r.reason()),
    )
}

/// `{"node": ..., "result": "ok"}`: what a changing command prints under
/// `--formatter json` (nothing otherwise).
fn done(o: &Opts, api: &Api) -> Result<(), Fail> {
    if o.json {
        outln!("{}", json!({"node": node(api)?, "result": "ok"}));
    }
    Ok(())
}

fn node(api: &Api) -> Result<String, Fail> {
    let ov = api.get_ok(&["api", "overview"])?;
    Ok(ov
        .get("node")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string())
}

/// The user's JSON (`/api/users/{name}`), or None when there is no such user.
fn user(api: &Api, name: &str) -> Result<Option<Value>, Fail> {
    let r = api.get(&["api", "users", name])?;
    match r.status {
        200 => Ok(Some(r.json()?)),
        404 => Ok(None),
        _ => Err(unexpected(&format!("GET /api/users/{name}"), &r)),
    }
}

fn vhost_exists(api: &Api, name: &str) -> Result<bool, Fail> {
    let r = api.get(&["api", "vhosts", name])?;
    match r.status {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(unexpected(&format!("GET /api/vhosts/{name}"), &r)),
    }
}

/// A list endpoint's items.
fn items(api: &Api, segs: &[&str]) -> Result<Vec<Value>, Fail> {
    match api.get_ok(segs)? {
        Value::Array(a) => Ok(a),
        _ => Err(Fail::internal(format!(
            "GET {} did not answer a list",
            Api::path(segs)
        ))),
    }
}

/// A user's tags as the API shows them (a list, or a comma-separated string in older
/// versions), as the comma-separated text a PUT takes.
fn tags_text(user: &Value) -> String {
    match user.get("tags") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// The password argument, or one line of standard input, as rabbitmqctl reads it
/// ("Password: " shown unless quiet). None at end of input.
fn password(o: &Opts, idx: usize) -> Option<String> {
    if let Some(p) = o.args.get(idx) {
        return Some(p.clone());
    }
    if !o.quiet && !o.json {
        outln!("Password: ");
    }
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_string()),
    }
}

fn no_password(code: u8) -> Fail {
    Fail::error(code, "Password is not provided via argument or stdin")
}

/// Between `min` and `max` positional arguments.
fn args_range(o: &Opts, min: usize, max: usize) -> Result<&[String], Fail> {
    if o.args.len() < min {
        Err(Fail::usage("not enough arguments."))
    } else if o.args.len() > max {
        Err(Fail::usage("too many arguments."))
    } else {
        Ok(&o.args)
    }
}

fn put(api: &Api, segs: &[&str], body: &Value) -> Result<Reply, Fail> {
    api.call(
        "PUT",
        &Api::path(segs),
        &[],
        Some(body.to_string().as_bytes()),
    )
}

fn delete(api: &Api, segs: &[&str]) -> Result<Reply, Fail> {
    api.call("DELETE", &Api::path(segs), &[], None)
}

fn ok_status(r: &Reply) -> bool {
    matches!(r.status, 200 | 201 | 204)
}

/// A JSON value as the Erlang term rabbitmqctl's messages show (`<<"x">>` for a string).
fn erl(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        Value::Array(a) => format!("[{}]", a.iter().map(erl).collect::<Vec<_>>().join(",")),
        Value::Object(m) => format!(
            "[{}]",
            m.iter()
                .map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", erl(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// A limits definition (`'{"max-connections": 10}'`) checked as RabbitMQ checks it,
/// before anything is sent, so a bad key or value changes nothing. `what` names the
/// parameter in RabbitMQ's message ("user-limits", "limits").
fn limits_arg(text: &str, known: &[&str], what: &str) -> Result<Map<String, Value>, Fail> {
    let m = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(Fail::error(
                EX_UNAVAILABLE,
                "JSON decoding error. Reason: badarg",
            ))
        }
    };
    let unknown: Map<String, Value> = m
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !unknown.is_empty() {
        let terms = erl(&Value::Object(unknown));
        let msg = if what == "limits" {
            format!("Validation failed\n\nUnrecognised terms {terms} in limits\n")
        } else {
            format!("Unrecognised terms {terms} in {what}")
        };
        return Err(Fail::error(EX_UNAVAILABLE, msg));
    }
    for (k, v) in &m {
        if v.as_i64().is_none() {
            return Err(Fail::error(
                EX_UNAVAILABLE,
                format!("{k} should be a number, actually was {}", erl(v)),
            ));
        }
    }
    Ok(m)
}

/// Prints a list rabbitmqctl renders whole rather than streamed: an empty one is an
/// empty line (streamed lists print nothing).
fn print_list(o: &Opts, cols: &[&str], rows: Vec<Vec<Value>>, headers: bool) {
    let cols: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
    if rows.is_empty() && !o.json {
        outln!("");
        return;
    }
    out!("{}", print_rows(&cols, &rows, o.json, headers && o.headers));
}

fn row(item: &Value, cols: &[&str]) -> Vec<Value> {
    cols.iter()
        .map(|c| item.get(*c).cloned().unwrap_or(Value::Null))
        .collect()
}

// ----- users ---------------------------------------------------------------------------

fn add_user(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_range(o, 1, 2)?;
    let name = &a[0];
    if name.is_empty() {
        return Err(Fail {
            code: EX_DATAERR,
            msg: "Error (argument validation): Bad argument: user cannot be an empty string".into(),
        });
    }
    info(o, &[format!("Adding user \"{name}\" ...")]);
    let pass = password(o, 1).ok_or_else(|| no_password(EX_DATAERR))?;
    // The API's PUT would update an existing user; rabbitmqctl refuses.
    if user(api, name)?.is_some() {
        return Err(Fail::error(
            EX_SOFTWARE,
            format!("User \"{name}\" already exists"),
        ));
    }
    let r = put(
        api,
        &["api", "users", name],
        &json!({"password": pass, "tags": ""}),
    )?;
    if !ok_status(&r) {
        return Err(unexpected("adding the user", &r));
    }
    let msg = "Done. Don't forget to grant the user permissions to some virtual hosts! \
               See 'rabbitmqctl help set_permissions' to learn more.";
    if o.json {
        outln!(
            "{}",
            json!({"message": msg, "node": node(api)?, "status": "ok"})
        );
    } else {
        info(o, &[msg.to_string()]);
    }
    Ok(())
}

fn delete_user(o: &Opts, api: &Api) -> Result<(), Fail> {
    let name = &args_n(o, 1)?[0];
    info(o, &[format!("Deleting user \"{name}\" ...")]);
    let r = delete(api, &["api", "users", name])?;
    match r.status {
        200 | 204 => done(o, api),
        404 => Err(Fail::error(
            EX_NOUSER,
            format!("User \"{name}\" does not exist"),
        )),
        _ => Err(unexpected("deleting the user", &r)),
    }
}

fn change_password(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_range(o, 1, 2)?;
    let name = &a[0];
    info(o, &[format!("Changing password for user \"{name}\" ...")]);
    let pass = password(o, 1).ok_or_else(|| no_password(EX_SOFTWARE))?;
    let Some(u) = user(api, name)? else {
        return Err(Fail::error(
            EX_NOUSER,
            format!("User \"{name}\" does not exist"),
        ));
    };
    let r = put(
        api,
        &["api", "users", name],
        &json!({"password": pass, "tags": tags_text(&u)}),
    )?;
    if !ok_status(&r) {
        return Err(unexpected("changing the password", &r));
    }
    done(o, api)
}

fn clear_password(o: &Opts, api: &Api) -> Result<(), Fail> {
    let name = &args_n(o, 1)?[0];
    info(o, &[format!("Clearing password for user \"{name}\" ...")]);
    let Some(u) = user(api, name)? else {
        return Err(no_such_user(name));
    };
    // An empty hash is RabbitMQ's password-less user.
    let r = put(
        api,
        &["api", "users", name],
        &json!({"password_hash": "", "tags": tags_text(&u)}),
    )?;
    if !ok_status(&r) {
        return Err(unexpected("clearing the password", &r));
    }
    done(o, api)
}

fn set_user_tags(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_range(o, 1, usize::MAX)?;
    let (name, tags) = (&a[0], &a[1..]);
    info(
        o,
        &[format!(
            "Setting tags for user \"{name}\" to [{}] ...",
            tags.join(", ")
        )],
    );
    let Some(u) = user(api, name)? else {
        return Err(Fail::error(
            EX_NOUSER,
            format!("User \"{name}\" does not exist"),
        ));
    };
    // A PUT without a password clears it: send the stored hash back unchanged.
    let mut body = json!({"tags": tags.join(",")});
    if let Some(h) = u.get("password_hash") {
        body["password_hash"] = h.clone();
    }
    if let Some(alg) = u.get("hashing_algorithm") {
        body["hashing_algorithm"] = alg.clone();
    }
    let r = put(api, &["api", "users", name], &body)?;
    if !ok_status(&r) {
        return Err(unexpected("setting the tags", &r));
    }
    done(o, api)
}

/// Checks a user's password the only way the API offers: `/api/whoami` with the
/// user's own credentials. "Not management user" still means the password was right
/// (the user just may not use the API); "Login failed" means it was not.
fn authenticate_user(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_range(o, 1, 2)?;
    let name = &a[0];
    info(o, &[format!("Authenticating user \"{name}\" ...")]);
    let pass = password(o, 1).ok_or_else(|| no_password(EX_SOFTWARE))?;
    let failed = |why: String| {
        Fail::error(
            EX_DATAERR,
            format!("Error: failed to authenticate user \"{name}\"\n{why}"),
        )
    };
    if pass.is_empty() {
        return Err(failed(format!(
            "user '{name}' attempted to log in with a blank password, which is prohibited by \
             the internal authN backend. To use TLS/x509 certificate-based authentication, see \
             the rabbitmq_auth_mechanism_ssl plugin and configure the client to use the \
             EXTERNAL authentication mechanism. Alternatively change the password for the user \
             to be non-blank."
        )));
    }
    let as_user = api.with_credentials(name, &pass);
    let r = as_user.call_raw("GET", "/api/whoami", &[], None)?;
    let accepted = r.status == 200
        || (r.status == 401
            && r.reason()
                .to_ascii_lowercase()
                .contains("not management user"));
    if !accepted {
        if r.status == 401 {
            return Err(failed(format!("user '{name}' - invalid credentials")));
        }
        return Err(unexpected("GET /api/whoami", &r));
    }
    if o.json {
        outln!("{}", json!({"message": "Success"}));
    } else {
        // Printed even with -q, as rabbitmqctl does: it is the answer.
        outln!("Success");
    }
    Ok(())
}

// ----- permissions ---------------------------------------------------------------------

/// Which of user and vhost is missing, after the API refused with
/// `vhost_or_user_not_found` or a 404: the user first, as rabbitmqctl checks.
fn missing_user_or_vhost(api: &Api, name: &str, vh: &str) -> Result<Option<Fail>, Fail> {
    if user(api, name)?.is_none() {
        return Ok(Some(Fail::error(
            EX_NOUSER,
            format!("User {name} does not exist"),
        )));
    }
    if !vhost_exists(api, vh)? {
        return Ok(Some(Fail::error(
            EX_UNAVAILABLE,
            format!("Virtual host {vh} does not exist"),
        )));
    }
    Ok(None)
}

fn set_permissions(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_n(o, 4)?;
    let (name, vh) = (&a[0], &o.vhost);
    info(
        o,
        &[format!(
            "Setting permissions for user \"{name}\" in vhost \"{vh}\" ..."
        )],
    );
    let r = put(
        api,
        &["api", "permissions", vh, name],
        &json!({"configure": a[1], "write": a[2], "read": a[3]}),
    )?;
    if ok_status(&r) {
        return done(o, api);
    }
    if let Some(f) = missing_user_or_vhost(api, name, vh)? {
        return Err(f);
    }
    Err(Fail::error(EX_UNAVAILABLE, regex_reason(&r)))
}

/// A refused pattern as rabbitmqctl shows it: `{:invalid_regexp, '(', {'missing )', 1}}`.
/// RabbitMQ's API gives `["invalid_regexp", PATTERN, [MESSAGE, OFFSET]]` with Erlang
/// strings as lists of character codes; any other reason is shown as it is.
fn regex_reason(r: &Reply) -> String {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(a) => a
                .iter()
                .map(|c| c.as_u64().and_then(|c| char::from_u32(c as u32)))
                .collect(),
            _ => None,
        }
    }
    let parsed = serde_json::from_str::<Value>(&r.body).ok();
    let reason = parsed.as_ref().and_then(|v| v.get("reason"));
    if let Some(Value::Array(a)) = reason {
        if a.first().and_then(Value::as_str) == Some("invalid_regexp") {
            let pattern = a.get(1).and_then(text).unwrap_or_default();
            let (msg, at) = match a.get(2) {
                Some(Value::Array(d)) => (
                    d.first().and_then(text).unwrap_or_default(),
                    d.get(1).map(Value::to_string).unwrap_or_default(),
                ),
                _ => (String::new(), String::new()),
            };
            return format!("{{:invalid_regexp, '{pattern}', {{'{msg}', {at}}}}}");
        }
    }
    r.reason()
}

fn clear_permissions(o: &Opts, api: &Api) -> Result<(), Fail> {
    let name = &args_n(o, 1)?[0];
    let vh = &o.vhost;
    info(
        o,
        &[format!(
            "Clearing permissions for user \"{name}\" in vhost \"{vh}\" ..."
        )],
    );
    let r = delete(api, &["api", "permissions", vh, name])?;
    match r.status {
        200 | 204 => done(o, api),
        // No permissions to clear is success for rabbitmqctl, unless the user or the
        // vhost is missing.
        404 => match missing_user_or_vhost(api, name, vh)? {
            Some(f) => Err(f),
            None => done(o, api),
        },
        _ => Err(unexpected("clearing the permissions", &r)),
    }
}

fn list_permissions(o: &Opts, api: &Api) -> Result<(), Fail> {
    args_n(o, 0)?;
    let vh = &o.vhost;
    info(o, &[format!("Listing permissions for vhost \"{vh}\" ...")]);
    if !vhost_exists(api, vh)? {
        return Err(no_vhost(vh));
    }
    // `/api/permissions` filtered here: every version of the API serves it.
    let cols = ["user", "configure", "write", "read"];
    let rows = items(api, &["api", "permissions"])?
        .iter()
        .filter(|p| p.get("vhost").and_then(Value::as_str) == Some(vh.as_str()))
        .map(|p| row(p, &cols))
        .collect();
    print_list(o, &cols, rows, true);
    Ok(())
}

fn list_user_permissions(o: &Opts, api: &Api) -> Result<(), Fail> {
    let name = &args_n(o, 1)?[0];
    info(o, &[format!("Listing permissions for user \"{name}\" ...")]);
    if user(api, name)?.is_none() {
        return Err(no_such_user(name));
    }
    let cols = ["vhost", "configure", "write", "read"];
    let rows = items(api, &["api", "permissions"])?
        .iter()
        .filter(|p| p.get("user").and_then(Value::as_str) == Some(name.as_str()))
        .map(|p| row(p, &cols))
        .collect();
    print_list(o, &cols, rows, true);
    Ok(())
}

// ----- topic permissions ---------------------------------------------------------------

fn set_topic_permissions(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_n(o, 4)?;
    let (name, x, vh) = (&a[0], &a[1], &o.vhost);
    info(
        o,
        &[format!(
            "Setting topic permissions on \"{x}\" for user \"{name}\" in vhost \"{vh}\" ..."
        )],
    );
    let r = put(
        api,
        &["api", "topic-permissions", vh, name],
        &json!({"exchange": x, "write": a[2], "read": a[3]}),
    )?;
    if ok_status(&r) {
        return done(o, api);
    }
    if let Some(f) = missing_user_or_vhost(api, name, vh)? {
        return Err(f);
    }
    Err(Fail::error(EX_UNAVAILABLE, regex_reason(&r)))
}

fn clear_topic_permissions(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_range(o, 1, 2)?;
    let (name, vh) = (&a[0], &o.vhost);
    let exchange = a.get(1);
    info(
        o,
        &[match exchange {
            Some(x) => format!(
                "Clearing topic permissions on \"{x}\" for user \"{name}\" in vhost \"{vh}\" ..."
            ),
            None => format!("Clearing topic permissions for user \"{name}\" in vhost \"{vh}\" ..."),
        }],
    );
    let segs = ["api", "topic-permissions", vh.as_str(), name.as_str()];
    // The API clears all of a user's topic permissions in a vhost at once; to clear one
    // exchange's, the others are put back.
    let keep: Vec<Value> = match exchange {
        None => Vec::new(),
        Some(x) => {
            let r = api.get(&segs)?;
            let all = match r.status {
                200 => match r.json()? {
                    Value::Array(all) => all,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let is_x = |t: &Value| t.get("exchange").and_then(Value::as_str) == Some(x);
            // Nothing set for that exchange: nothing to clear (if user and vhost exist).
            if !all.iter().any(is_x) {
                return match missing_user_or_vhost(api, name, vh)? {
                    Some(f) => Err(f),
                    None => done(o, api),
                };
            }
            all.into_iter().filter(|t| !is_x(t)).collect()
        }
    };
    let r = delete(api, &segs)?;
    match r.status {
        200 | 204 => {}
        404 => {
            if let Some(f) = missing_user_or_vhost(api, name, vh)? {
                return Err(f);
            }
        }
        _ => return Err(unexpected("clearing the topic permissions", &r)),
    }
    for t in keep {
        let body = json!({"exchange": t["exchange"], "write": t["write"], "read": t["read"]});
        let r = put(api, &segs, &body)?;
        if !ok_status(&r) {
            return Err(unexpected("restoring the other topic permissions", &r));
        }
    }
    done(o, api)
}

fn list_topic_permissions(o: &Opts, api: &Api) -> Result<(), Fail> {
    args_n(o, 0)?;
    let vh = &o.vhost;
    info(
        o,
        &[format!("Listing topic permissions for vhost \"{vh}\" ...")],
    );
    let list = topic_permissions(api, &["api", "vhosts", vh, "topic-permissions"], || {
        no_vhost(vh)
    })?;
    let cols = ["user", "exchange", "write", "read"];
    print_list(o, &cols, rows(&list, &cols), true);
    Ok(())
}

fn list_user_topic_permissions(o: &Opts, api: &Api) -> Result<(), Fail> {
    let name = &args_n(o, 1)?[0];
    info(
        o,
        &[format!("Listing topic permissions for user \"{name}\" ...")],
    );
    let list = topic_permissions(api, &["api", "users", name, "topic-permissions"], || {
        no_such_user(name)
    })?;
    let cols = ["vhost", "exchange", "write", "read"];
    // rabbitmqctl 3.10 prints this one without a header row.
    print_list(o, &cols, rows(&list, &cols), false);
    Ok(())
}

/// GET of a topic-permission list; a 404 is `missing`'s failure.
fn topic_permissions(
    api: &Api,
    path: &[&str],
    missing: impl FnOnce() -> Fail,
) -> Result<Value, Fail> {
    let r = api.get(path)?;
    match r.status {
        200 => r.json(),
        404 => Err(missing()),
        _ => Err(unexpected("listing topic permissions", &r)),
    }
}

/// The `cols` of every item of a JSON list, as table rows.
fn rows(list: &Value, cols: &[&str]) -> Vec<Vec<Value>> {
    list.as_array()
        .map(|a| a.iter().map(|t| row(t, cols)).collect())
        .unwrap_or_default()
}

// ----- vhosts --------------------------------------------------------------------------

fn add_vhost(o: &Opts, api: &Api) -> Result<(), Fail> {
    let name = &args_n(o, 1)?[0];
    info(o, &[format!("Adding vhost \"{name}\" ...")]);
    if let Some(t) = &o.default_queue_type {
        if !matches!(t.as_str(), "classic" | "quorum" | "stream") {
            return Err(Fail::error(EX_UNAVAILABLE, "invalid_queue_type"));
        }
    }
    // rabbitmqctl leaves an existing vhost as it is; the API's PUT would replace its
    // description and tags.
    if vhost_exists(api, name)? {
        return done(o, api);
    }
    let mut body = Map::new();
    if let Some(d) = &o.description {
        body.insert("description".into(), json!(d));
    }
    if let Some(t) = &o.vhost_tags {
        body.insert("tags".into(), json!(t));
    }
    if let Some(t) = &o.default_queue_type {
        // RabbitMQ 3.10's API reads `defaultqueuetype` (and shows `default_queue_type`).
        body.insert("defaultqueuetype".into(), json!(t));
        body.insert("default_queue_type".into(), json!(t));
    }
    let r = put(api, &["api", "vhosts", name], &Value::Object(body))?;
    if !ok_status(&r) {
        return Err(Fail::error(EX_UNAVAILABLE, r.reason()));
    }
    done(o, api)
}

fn delete_vhost(o: &Opts, api: &Api) -> Result<(), Fail> {
    let name = &args_n(o, 1)?[0];
    info(o, &[format!("Deleting vhost \"{name}\" ...")]);
    let r = delete(api, &["api", "vhosts", name])?;
    match r.status {
        200 | 204 => done(o, api),
        404 => Err(no_vhost(name)),
        _ => Err(unexpected("deleting the vhost", &r)),
    }
}

/// A vhost's limits object (`{}` when it has none).
fn vhost_limits(api: &Api, vh: &str) -> Result<Option<Map<String, Value>>, Fail> {
    let r = api.get(&["api", "vhost-limits", vh])?;
    match r.status {
        200 => Ok(Some(first_value(&r.json()?))),
        404 => Ok(None),
        _ => Err(unexpected("reading the vhost limits", &r)),
    }
}

/// The `value` of the one entry of a `[{"vhost"/"user": ..., "value": {...}}]` list.
fn first_value(list: &Value) -> Map<String, Value> {
    list.as_array()
        .and_then(|a| a.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn set_vhost_limits(o: &Opts, api: &Api) -> Result<(), Fail> {
    let def = &args_n(o, 1)?[0];
    let vh = &o.vhost;
    info(
        o,
        &[format!(
            "Setting vhost limits to \"{def}\" for vhost \"{vh}\" ..."
        )],
    );
    let Some(old) = vhost_limits(api, vh)? else {
        return Err(no_vhost(vh));
    };
    let new = limits_arg(def, &["max-connections", "max-queues"], "limits")?;
    // rabbitmqctl replaces the whole set: what the new one does not name goes.
    for (k, v) in &new {
        let r = put(api, &["api", "vhost-limits", vh, k], &json!({"value": v}))?;
        if !ok_status(&r) {
            return Err(Fail::error(EX_UNAVAILABLE, r.reason()));
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        let r = delete(api, &["api", "vhost-limits", vh, k])?;
        if !ok_status(&r) && r.status != 404 {
            return Err(unexpected("clearing a vhost limit", &r));
        }
    }
    done(o, api)
}

fn clear_vhost_limits(o: &Opts, api: &Api) -> Result<(), Fail> {
    args_n(o, 0)?;
    let vh = &o.vhost;
    info(o, &[format!("Clearing vhost \"{vh}\" limits ...")]);
    let old = vhost_limits(api, vh)?.unwrap_or_default();
    if old.is_empty() {
        return Err(Fail::error(EX_UNAVAILABLE, "Parameter does not exist"));
    }
    for k in old.keys() {
        let r = delete(api, &["api", "vhost-limits", vh, k])?;
        if !ok_status(&r) && r.status != 404 {
            return Err(unexpected("clearing a vhost limit", &r));
        }
    }
    done(o, api)
}

/// `{"max-queues":5}` as rabbitmqctl prints a limits value: compact, keys sorted.
fn limits_text(m: &Map<String, Value>) -> String {
    let sorted: std::collections::BTreeMap<&String, &Value> = m.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

fn list_vhost_limits(o: &Opts, api: &Api) -> Result<(), Fail> {
    args_n(o, 0)?;
    if o.global {
        info(o, &["Listing limits for all vhosts ...".to_string()]);
        let rows = items(api, &["api", "vhost-limits"])?
            .iter()
            .map(|e| {
                let value = e.get("value").and_then(Value::as_object);
                vec![
                    e.get("vhost").cloned().unwrap_or(Value::Null),
                    json!(value.map(limits_text).unwrap_or_default()),
                ]
            })
            .collect();
        print_list(o, &["vhost", "limits"], rows, true);
        return Ok(());
    }
    let vh = &o.vhost;
    info(o, &[format!("Listing limits for vhost \"{vh}\" ...")]);
    let Some(limits) = vhost_limits(api, vh)? else {
        return Err(no_vhost(vh));
    };
    if o.json {
        outln!(
            "{}",
            json!({"node": node(api)?, "result": "ok", "value": limits_text(&limits)})
        );
    } else if limits.is_empty() {
        outln!("");
    } else {
        outln!("{}", limits_text(&limits));
    }
    Ok(())
}

// ----- user limits ---------------------------------------------------------------------

fn set_user_limits(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_n(o, 2)?;
    let (name, def) = (&a[0], &a[1]);
    info(
        o,
        &[format!(
            "Setting user limits to \"{def}\" for user \"{name}\" ..."
        )],
    );
    let new = limits_arg(def, &["max-connections", "max-channels"], "user-limits")?;
    if user(api, name)?.is_none() {
        return Err(no_such_user(name));
    }
    // Merged into the user's limits, as rabbitmqctl does: others stay.
    for (k, v) in &new {
        let r = put(api, &["api", "user-limits", name, k], &json!({"value": v}))?;
        if !ok_status(&r) {
            return Err(Fail::error(EX_UNAVAILABLE, r.reason()));
        }
    }
    done(o, api)
}

fn clear_user_limits(o: &Opts, api: &Api) -> Result<(), Fail> {
    let a = args_n(o, 2)?;
    let (name, which) = (&a[0], &a[1]);
    info(
        o,
        &[if which == "all" {
            format!("Clearing all limits for user \"{name}\" ...")
        } else {
            format!("Clearing \"{which}\" limit for user \"{name}\" ...")
        }],
    );
    let Some(u) = user(api, name)? else {
        return Err(no_such_user(name));
    };
    let names: Vec<String> = if which == "all" {
        u.get("limits")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    } else {
        vec![which.clone()]
    };
    for k in &names {
        let r = delete(api, &["api", "user-limits", name, k])?;
        // A limit that was not set is cleared already.
        if !ok_status(&r) && r.status != 404 {
            return Err(unexpected("clearing a user limit", &r));
        }
    }
    done(o, api)
}

fn list_user_limits(o: &Opts, api: &Api) -> Result<(), Fail> {
    args_n(o, 0)?;
    if o.global {
        info(o, &["Listing limits for all users ...".to_string()]);
        let rows = items(api, &["api", "user-limits"])?
            .iter()
            .map(|e| {
                let value = e.get("value").and_then(Value::as_object);
                vec![
                    e.get("user").cloned().unwrap_or(Value::Null),
                    json!(value.map(limits_text).unwrap_or_default()),
                ]
            })
            .collect();
        print_list(o, &["user", "limits"], rows, true);
        return Ok(());
    }
    // rabbitmqctl's default is the user it runs as, guest; ours is the API user.
    let name = o.limit_user.as_deref().unwrap_or(&o.username);
    info(o, &[format!("Listing limits for user \"{name}\" ...")]);
    let r = api.get(&["api", "user-limits", name])?;
    let limits = match r.status {
        200 => first_value(&r.json()?),
        404 => return Err(no_such_user(name)),
        _ => return Err(unexpected("reading the user limits", &r)),
    };
    if o.json {
        outln!("{}", json!({"message": limits_text(&limits)}));
    } else {
        outln!("{}", limits_text(&limits));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_as_rabbitmq_checks_them() {
        let known = ["max-connections", "max-channels"];
        let m = limits_arg(r#"{"max-connections": 10}"#, &known, "user-limits").expect("ok");
        assert_eq!(m["max-connections"], 10);
        let e = limits_arg(r#"{"bogus": 10}"#, &known, "user-limits").unwrap_err();
        assert_eq!(
            e.msg,
            "Error:\nUnrecognised terms [{<<\"bogus\">>,10}] in user-limits"
        );
        assert_eq!(e.code, 69);
        let e = limits_arg(r#"{"max-channels": "x"}"#, &known, "user-limits").unwrap_err();
        assert_eq!(
            e.msg,
            "Error:\nmax-channels should be a number, actually was <<\"x\">>"
        );
        let e = limits_arg("nojson", &known, "user-limits").unwrap_err();
        assert_eq!(e.msg, "Error:\nJSON decoding error. Reason: badarg");
        let e = limits_arg(r#"{"bogus": 5}"#, &["max-queues"], "limits").unwrap_err();
        assert_eq!(
            e.msg,
            "Error:\nValidation failed\n\nUnrecognised terms [{<<\"bogus\">>,5}] in limits\n"
        );
        let mut m = Map::new();
        m.insert("max-queues".into(), json!(5));
        m.insert("max-connections".into(), json!(1));
        assert_eq!(limits_text(&m), r#"{"max-connections":1,"max-queues":5}"#);
    }
}
