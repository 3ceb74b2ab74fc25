//! `--definitions FILE`: a RabbitMQ definitions file imported at start-up, as RabbitMQ's
//! `load_definitions`. A good file's users log in and its objects exist, on the first
//! start and on every start after (the import is repeated, so a user's password is the
//! file's again); a file that does not import (unreadable, not JSON, an invalid entry,
//! a conflict with what the data directory holds) stops the start with exit code 1 and
//! a message on stderr naming the file and what is wrong, and leaves the data directory
//! as it was.
//!
//! Every test here owns its Warren process (`spawn_in`), so they are skipped against an
//! external broker.
mod support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::api::{enc, Api};
use support::*;

const USERS_FIXTURE: &str = include_str!("data/rabbitmq-3.10-users.json");

/// The administrator the boot files bring (a first start with `--definitions` creates
/// no guest user, as RabbitMQ's).
const ADMIN: &str = "wt-defs-boot-admin";
const ADMIN_PW: &str = "boot-admin-pw";

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write definitions file");
    p
}

/// RabbitMQ 3.10's export of the fixture, plus an administrator and a durable queue in
/// "/". guest's permission goes: the fixture (trimmed from a whole export) has no
/// guest, and a first start with definitions creates none.
fn good_file() -> Value {
    let mut d: Value = serde_json::from_str(USERS_FIXTURE).unwrap();
    d["permissions"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["user"] != "guest");
    d["users"].as_array_mut().unwrap().push(json!({
        "name": ADMIN, "password": ADMIN_PW, "tags": "administrator"
    }));
    for vh in ["/", "wt-defs-fx"] {
        d["permissions"].as_array_mut().unwrap().push(json!({
            "user": ADMIN, "vhost": vh, "configure": ".*", "write": ".*", "read": ".*"
        }));
    }
    d["queues"].as_array_mut().unwrap().push(json!({
        "name": "boot-q", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}
    }));
    d
}

fn login(port: u16, user: &str, pass: &str, vhost: &str) -> Result<(), String> {
    let uri = format!(
        "amqp://{}:{}@127.0.0.1:{port}/{}",
        enc(user),
        enc(pass),
        enc(vhost)
    );
    block_on(async {
        let c = step(
            "login",
            lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
        )
        .await
        .map_err(|e| format!("{e}"))?;
        let _ = c.close(200, "bye".into()).await;
        Ok(())
    })
}

/// What a broker started from a good file holds: its users log in, its objects exist.
fn check_good(b: &Broker) {
    login(b.port, "wt-defs-alice", "alice-pw", "wt-defs-fx").unwrap();
    login(b.port, "wt-defs-bob", "bob-pw", "/").unwrap();
    login(b.port, ADMIN, ADMIN_PW, "/").unwrap();
    let api = Api::at(&b.http_url(), ADMIN, ADMIN_PW);
    for path in [
        "/api/queues/wt-defs-fx/fx-q",
        "/api/exchanges/wt-defs-fx/fx-x",
        "/api/queues/%2F/boot-q",
    ] {
        let r = api.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let bound = api.get("/api/bindings/wt-defs-fx/e/fx-x/q/fx-q").json();
    assert_eq!(bound[0]["routing_key"], "fx.#", "{bound}");
    let d = api.get("/api/definitions").json();
    let alice = d["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "wt-defs-alice")
        .cloned()
        .expect("alice exported");
    assert_eq!(alice["tags"], json!(["management", "custom-tag"]));
    assert_eq!(
        alice["limits"],
        json!({"max-channels": 10, "max-connections": 5})
    );
    let topic = &d["topic_permissions"];
    assert_eq!(
        topic,
        &json!([{"user": "wt-defs-alice", "vhost": "wt-defs-fx", "exchange": "amq.topic",
                 "write": "^alice\\.", "read": "^(alice|public)\\."}])
    );
    let limits = api.get("/api/vhost-limits/wt-defs-fx").json();
    assert_eq!(
        limits[0]["value"],
        json!({"max-connections": 20, "max-queues": 50}),
        "{limits}"
    );
}

#[test]
fn a_good_file_loads_on_every_start() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let file = write(dir.path(), "defs.json", &good_file().to_string());
    let file_arg = file.to_str().unwrap();
    let Some(mut b) = Broker::spawn_in(&data, &["--definitions", file_arg]) else {
        return;
    };
    check_good(&b);
    // No default user on a first start with definitions (RabbitMQ's rule).
    assert!(login(b.port, "guest", "guest", "/").is_err());
    // stderr's lines reach the test on their own pipe: wait for this one.
    assert!(
        wait_until(STEP, || b.logs().contains("imported")),
        "no import line in the log:\n{}",
        b.logs()
    );

    // A password changed after the start ...
    let api = Api::at(&b.http_url(), ADMIN, ADMIN_PW);
    let change = json!({"users": [{"name": "wt-defs-bob", "password": "changed", "tags": ""}]});
    assert_eq!(api.post("/api/definitions", &change).status, 204);
    login(b.port, "wt-defs-bob", "changed", "/").unwrap();
    b.stop();

    // ... is the file's again after a restart with the file (imported on every start).
    let mut b = Broker::spawn_in(&data, &["--definitions", file_arg]).unwrap();
    check_good(&b);
    assert!(login(b.port, "wt-defs-bob", "changed", "/").is_err());
    b.stop();

    // Without the file, what it made is kept by the data directory.
    let b = Broker::spawn_in(&data, &[]).unwrap();
    check_good(&b);
}

/// A bad file at start-up: exit code 1, a message naming the file and the problem, and
/// nothing of the file in the data directory (each bad file also carries a good user,
/// vhost and queue before its bad entry).
#[test]
fn a_bad_file_stops_the_start_and_changes_nothing() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let good = write(dir.path(), "good.json", &good_file().to_string());
    let mut b = Broker::spawn_in(&data, &["--definitions", good.to_str().unwrap()]).unwrap();
    check_good(&b);
    b.stop();

    let hash = "n7PUymh/8EPGsQNEUkfPLwYFoV5BPu1SEya5muRFCmX4Flhw";
    // A good start, then the bad entry: a file is applied whole or not at all.
    let with = |bad: Value| -> String {
        let mut f = json!({
            "users": [{"name": "wt-defs-intruder", "password": "in-pw", "tags": "administrator"}],
            "vhosts": [{"name": "wt-defs-intruder-vh"}],
            "permissions": [{"user": "wt-defs-intruder", "vhost": "/", "configure": ".*",
                             "write": ".*", "read": ".*"}],
            "queues": [{"name": "intruder-q", "vhost": "/", "durable": true,
                        "auto_delete": false, "arguments": {}}],
        });
        for (k, v) in bad.as_object().unwrap() {
            let list = f[k].as_array().cloned().unwrap_or_default();
            let mut list = list;
            list.extend(v.as_array().cloned().unwrap_or_default());
            f[k] = json!(list);
        }
        f.to_string()
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing.json", None, "No such file or directory"),
        (
            "truncated.json",
            Some("{\"users\": [".to_owned()),
            "not valid JSON: EOF while parsing a list at line 1 column 11",
        ),
        (
            "not-a-list.json",
            Some(json!({"users": [], "queues": {"name": "q"}}).to_string()),
            "'queues' must be a list",
        ),
        (
            "bad-regex.json",
            Some(with(json!({"permissions": [{"user": "wt-defs-intruder", "vhost": "/",
                "configure": "(", "write": ".*", "read": ".*"}]}))),
            "permission of user 'wt-defs-intruder' in vhost '/': 'configure' is not a valid regular expression: unclosed group in '('",
        ),
        (
            "sha1.json",
            Some(with(json!({"users": [{"name": "wt-defs-old", "tags": "", "password_hash": hash,
                "hashing_algorithm": "rabbit_password_hashing_sha1"}]}))),
            "user 'wt-defs-old': unknown hashing_algorithm 'rabbit_password_hashing_sha1'",
        ),
        (
            "bad-hash.json",
            Some(with(json!({"users": [{"name": "wt-defs-old", "tags": "", "password_hash": "YWJj"}]}))),
            "user 'wt-defs-old': malformed password_hash: 3 bytes",
        ),
        (
            "unknown-user.json",
            Some(with(json!({"topic_permissions": [{"user": "wt-defs-nobody", "vhost": "/",
                "exchange": "amq.topic", "write": ".*", "read": ".*"}]}))),
            "topic permission of user 'wt-defs-nobody' in vhost '/': no such user 'wt-defs-nobody'",
        ),
        (
            "bad-limit.json",
            Some(with(json!({"parameters": [{"vhost": "/", "component": "vhost-limits",
                "name": "limits", "value": {"max-queues": "ten"}}]}))),
            "parameter 'vhost-limits' of vhost '/': limit 'max-queues' must be an integer",
        ),
        (
            "inequivalent.json",
            Some(with(json!({"queues": [{"name": "boot-q", "vhost": "/", "durable": false,
                "auto_delete": false, "arguments": {}}]}))),
            "inequivalent arg 'durable' for queue 'boot-q' in vhost '/': received 'false' but current is 'true'",
        ),
    ];
    for (name, body, reason) in &cases {
        let path = match body {
            Some(b) => write(dir.path(), name, b),
            None => dir.path().join(name),
        };
        let f = Broker::start_failure(&data, &["--definitions", path.to_str().unwrap()]);
        assert_eq!(
            f.status.and_then(|s| s.code()),
            Some(1),
            "{name}: exit status; output:\n{}",
            f.logs
        );
        let want = format!("warren: definitions file {}: ", path.display());
        assert!(
            f.stderr.contains(&want) && f.stderr.contains(reason),
            "{name}: expected '{want}…{reason}' on stderr:\n{}",
            f.stderr
        );
    }

    // The data directory holds what the good file made and nothing of the bad ones.
    let b = Broker::spawn_in(&data, &[]).unwrap();
    check_good(&b);
    assert!(login(b.port, "wt-defs-intruder", "in-pw", "/").is_err());
    let api = Api::at(&b.http_url(), ADMIN, ADMIN_PW);
    assert_eq!(api.get("/api/queues/%2F/intruder-q").status, 404);
    assert_eq!(api.get("/api/vhosts/wt-defs-intruder-vh").status, 404);
    let q = api.get("/api/queues/%2F/boot-q").json();
    assert_eq!(q["durable"], true, "{q}");
}
