//! Topic permissions and user limits in the management API (issue 11):
//! `/api/topic-permissions[/{vhost}/{user}]`, `/api/users/{user}/topic-permissions`,
//! `/api/vhosts/{vhost}/topic-permissions`, `/api/user-limits[/{user}[/{name}]]`. Their
//! status codes, bodies and field names, their refusals of bad bodies and of
//! non-administrators, and 405s for what they do not take. Every assertion also holds
//! against RabbitMQ 3.10 (`WARREN_TEST_PORT=5672`); RabbitMQ's order of rows is not
//! fixed, so lists are compared sorted.
mod support;

use serde_json::{json, Value};
use support::api::{enc, Api};
use support::*;

/// A user made for one test and deleted when it ends, passed or not (the suite also
/// runs against a shared RabbitMQ).
struct TestUser<'a> {
    api: &'a Api,
    name: String,
}

impl<'a> TestUser<'a> {
    fn new(api: &'a Api, prefix: &str, tags: &str) -> TestUser<'a> {
        let name = unique(prefix);
        let r = api.put(
            &format!("/api/users/{}", enc(&name)),
            &json!({"password": "pw", "tags": tags}),
        );
        assert_eq!(r.status, 201, "creating {name}: {}", r.body);
        TestUser { api, name }
    }
}

impl Drop for TestUser<'_> {
    fn drop(&mut self) {
        self.api.delete(&format!("/api/users/{}", enc(&self.name)));
    }
}

fn sorted(v: &Value, key: &str) -> Vec<Value> {
    let mut rows = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .clone();
    rows.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
    rows
}

#[track_caller]
fn assert_error(r: &support::api::Resp, status: u16, error: &str, reason: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    let body = r.json();
    assert_eq!(body["error"], error, "{}", r.body);
    if let Some(reason) = reason {
        assert_eq!(body["reason"], reason, "{}", r.body);
    }
}

#[test]
fn topic_permissions_are_set_listed_and_cleared() {
    let b = Broker::start();
    let api = Api::new(&b);
    let user = TestUser::new(&api, "ctl-tp", "");
    let u = user.name.as_str();
    let path = format!("/api/topic-permissions/%2F/{}", enc(u));
    let x2 = unique("ctl-tp-x");

    // None yet: the resource does not exist.
    assert_error(&api.get(&path), 404, "Object Not Found", Some("Not Found"));
    assert_error(
        &api.delete(&path),
        404,
        "Object Not Found",
        Some("Not Found"),
    );

    // The first one creates the user's topic permissions in the vhost; the next update it.
    let r = api.put(
        &path,
        &json!({"exchange": "amq.topic", "write": "^a", "read": "^b"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.put(
        &path,
        &json!({"exchange": "amq.topic", "write": "^a2", "read": "^b"}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = api.put(&path, &json!({"exchange": x2, "write": "w", "read": ""}));
    assert_eq!(r.status, 204, "{}", r.body);

    let mine = |u: &str| {
        let mut rows = vec![
            json!({"user": u, "vhost": "/", "exchange": "amq.topic", "write": "^a2", "read": "^b"}),
            json!({"user": u, "vhost": "/", "exchange": x2, "write": "w", "read": ""}),
        ];
        rows.sort_by(|a, b| a["exchange"].as_str().cmp(&b["exchange"].as_str()));
        rows
    };
    let r = api.get(&path);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sorted(&r.json(), "exchange"), mine(u));
    let r = api.get(&format!("/api/users/{}/topic-permissions", enc(u)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sorted(&r.json(), "exchange"), mine(u));
    for all in [
        "/api/topic-permissions".to_string(),
        "/api/vhosts/%2F/topic-permissions".to_string(),
    ] {
        let r = api.get(&all);
        assert_eq!(r.status, 200, "{all}: {}", r.body);
        let rows: Vec<Value> = sorted(&r.json(), "exchange")
            .into_iter()
            .filter(|t| t["user"] == u)
            .collect();
        assert_eq!(rows, mine(u), "{all}");
    }

    // Bad bodies, and what does not exist.
    for (body, reason) in [
        (
            json!({"exchange": "amq.topic"}),
            "[{key_missing,write},{key_missing,read}]",
        ),
        (
            json!({}),
            "[{key_missing,exchange},{key_missing,write},{key_missing,read}]",
        ),
        (json!([]), "not_json"),
    ] {
        assert_error(&api.put(&path, &body), 400, "bad_request", Some(reason));
    }
    let r = api.request("PUT", &path, Some("{bad"), &[]);
    assert_error(&r, 400, "bad_request", Some("not_json"));
    let r = api.put(
        &path,
        &json!({"exchange": "amq.topic", "write": "(", "read": ""}),
    );
    assert_error(&r, 400, "bad_request", None);
    assert!(r.body.contains("invalid_regexp"), "{}", r.body);
    let nobody = unique("ctl-nobody");
    let novh = unique("ctl-novh");
    let good = json!({"exchange": "amq.topic", "write": "a", "read": "b"});
    for p in [
        format!("/api/topic-permissions/%2F/{}", enc(&nobody)),
        format!("/api/topic-permissions/{}/{}", enc(&novh), enc(u)),
    ] {
        assert_error(
            &api.put(&p, &good),
            400,
            "bad_request",
            Some("vhost_or_user_not_found"),
        );
        assert_error(&api.get(&p), 404, "Object Not Found", None);
    }
    for p in [
        format!("/api/users/{}/topic-permissions", enc(&nobody)),
        format!("/api/vhosts/{}/topic-permissions", enc(&novh)),
    ] {
        assert_error(&api.get(&p), 404, "Object Not Found", None);
    }
    // The refused changes changed nothing.
    assert_eq!(sorted(&api.get(&path).json(), "exchange"), mine(u));
    assert_eq!(api.post("/api/topic-permissions", &json!({})).status, 405);

    // Administrators only, reads included.
    let other = TestUser::new(&api, "ctl-tp-mgmt", "management");
    let as_other = api.as_user(&other.name, "pw");
    for r in [
        as_other.get("/api/topic-permissions"),
        as_other.get(&path),
        as_other.put(&path, &good),
        as_other.delete(&path),
    ] {
        assert_error(&r, 401, "not_authorised", Some("Not administrator user"));
    }

    // DELETE takes all of them (RabbitMQ has no per-exchange DELETE).
    let r = api.delete(&path);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(api.get(&path).status, 404);
    assert_eq!(
        api.get(&format!("/api/users/{}/topic-permissions", enc(u)))
            .json(),
        json!([])
    );
    assert_eq!(api.delete(&path).status, 404);
}

#[test]
fn user_limits_are_set_listed_and_cleared() {
    let b = Broker::start();
    let api = Api::new(&b);
    let user = TestUser::new(&api, "ctl-ul", "");
    let u = user.name.as_str();
    let path = format!("/api/user-limits/{}", enc(u));

    let r = api.get(&path);
    assert_eq!((r.status, r.json()), (200, json!([])), "{}", r.body);
    for (name, value) in [
        ("max-connections", 10),
        ("max-connections", 11),
        ("max-channels", 5),
    ] {
        let r = api.put(&format!("{path}/{name}"), &json!({"value": value}));
        assert_eq!(r.status, 204, "{name}: {}", r.body);
    }
    let expected = json!([{"user": u, "value": {"max-channels": 5, "max-connections": 11}}]);
    let r = api.get(&path);
    assert_eq!((r.status, r.json()), (200, expected.clone()), "{}", r.body);
    let all = api.get("/api/user-limits");
    assert_eq!(all.status, 200, "{}", all.body);
    let mine: Vec<Value> = all
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["user"] == u)
        .cloned()
        .collect();
    assert_eq!(Value::Array(mine), expected);
    // 0 is a limit (no channels at all), not "unlimited".
    let r = api.put(&format!("{path}/max-channels"), &json!({"value": 0}));
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(api.get(&path).json()[0]["value"]["max-channels"], 0);
    let r = api.put(&format!("{path}/max-channels"), &json!({"value": 5}));
    assert_eq!(r.status, 204, "{}", r.body);

    // Bad bodies and names.
    for (name, body, reason) in [
        (
            "bogus",
            json!({"value": 3}),
            "Unrecognised terms [{<<\"bogus\">>,3}] in user-limits",
        ),
        (
            "max-channels",
            json!({"value": "x"}),
            "max-channels should be a number, actually was <<\"x\">>",
        ),
        (
            "max-channels",
            json!({"value": 1.5}),
            "max-channels should be a number, actually was 1.5",
        ),
        ("max-channels", json!({}), "[{key_missing,value}]"),
    ] {
        let r = api.put(&format!("{path}/{name}"), &body);
        assert_error(&r, 400, "bad_request", Some(reason));
    }
    let r = api.request("PUT", &format!("{path}/max-channels"), Some("bad"), &[]);
    assert_error(&r, 400, "bad_request", Some("not_json"));
    let nobody = unique("ctl-nobody");
    let r = api.put(
        &format!("/api/user-limits/{}/max-channels", enc(&nobody)),
        &json!({"value": 3}),
    );
    assert_error(&r, 400, "bad_request", None);
    assert!(r.body.contains("no_such_user"), "{}", r.body);
    assert_error(
        &api.get(&format!("/api/user-limits/{}", enc(&nobody))),
        404,
        "Object Not Found",
        None,
    );
    assert_eq!(
        api.get(&path).json(),
        expected,
        "refused changes changed nothing"
    );
    assert_eq!(api.get(&format!("{path}/max-channels")).status, 405);
    assert_eq!(api.put(&path, &json!({"value": 3})).status, 405);

    // Changes are administrator-only; any management user reads them.
    let other = TestUser::new(&api, "ctl-ul-mgmt", "management");
    let as_other = api.as_user(&other.name, "pw");
    let r = as_other.get(&path);
    assert_eq!((r.status, r.json()), (200, expected.clone()), "{}", r.body);
    assert!(as_other
        .get("/api/user-limits")
        .json()
        .as_array()
        .expect("a list")
        .contains(&expected[0]));
    assert_error(
        &as_other.put(&format!("{path}/max-channels"), &json!({"value": 1})),
        401,
        "not_authorised",
        Some("Not administrator user"),
    );
    assert_error(
        &as_other.delete(&format!("{path}/max-channels")),
        401,
        "not_authorised",
        Some("Not administrator user"),
    );

    // Cleared one at a time; clearing what is not set is no error.
    for name in ["max-channels", "max-channels", "bogus"] {
        let r = api.delete(&format!("{path}/{name}"));
        assert_eq!(r.status, 204, "{name}: {}", r.body);
    }
    assert_eq!(
        api.get(&path).json(),
        json!([{"user": u, "value": {"max-connections": 11}}])
    );
    assert_eq!(api.delete(&format!("{path}/max-connections")).status, 204);
    assert_eq!(api.get(&path).json(), json!([]));
    assert!(!api
        .get("/api/user-limits")
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .any(|e| e["user"] == u));
}

/// Warren only (it restarts the broker): topic permissions and user limits set through
/// the API are saved, and a restart finds them, as RabbitMQ keeps them in its database.
#[test]
fn topic_permissions_and_user_limits_survive_a_restart() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let Some(mut b) = Broker::spawn_in(dir.path(), &[]) else {
        return;
    };
    let api = Api::new(&b);
    let r = api.put(
        "/api/users/ctl-keep",
        &json!({"password": "pw", "tags": "management"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.put(
        "/api/topic-permissions/%2F/ctl-keep",
        &json!({"exchange": "amq.topic", "write": "^w\\.", "read": "^r\\."}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for (name, value) in [("max-connections", 2), ("max-channels", 9)] {
        let r = api.put(
            &format!("/api/user-limits/ctl-keep/{name}"),
            &json!({"value": value}),
        );
        assert_eq!(r.status, 204, "{}", r.body);
    }
    b.stop();
    drop(b);

    let b = Broker::spawn_in(dir.path(), &[]).expect("restart");
    let api = Api::new(&b);
    assert_eq!(
        api.get("/api/topic-permissions/%2F/ctl-keep").json(),
        json!([{"user": "ctl-keep", "vhost": "/", "exchange": "amq.topic",
                "write": "^w\\.", "read": "^r\\."}])
    );
    assert_eq!(
        api.get("/api/user-limits/ctl-keep").json(),
        json!([{"user": "ctl-keep", "value": {"max-channels": 9, "max-connections": 2}}])
    );
    // And a clear is saved too.
    assert_eq!(
        api.delete("/api/topic-permissions/%2F/ctl-keep").status,
        204
    );
    assert_eq!(
        api.delete("/api/user-limits/ctl-keep/max-channels").status,
        204
    );
    let mut b = b;
    b.stop();
    drop(b);
    let b = Broker::spawn_in(dir.path(), &[]).expect("second restart");
    let api = Api::new(&b);
    assert_eq!(api.get("/api/topic-permissions/%2F/ctl-keep").status, 404);
    assert_eq!(
        api.get("/api/user-limits/ctl-keep").json(),
        json!([{"user": "ctl-keep", "value": {"max-connections": 2}}])
    );
}
