//! Users, passwords and permissions (issue 11): created through the management API,
//! logging in over AMQP with the Rust clients (raw frames and lapin) and pika, refused
//! with RabbitMQ's codes and texts, surviving restarts and `kill -9`, loopback-only
//! users, and a password hash made by RabbitMQ logging in to Warren.
//!
//! The same assertions pass against RabbitMQ 3.10 (`WARREN_TEST_PORT=5672`); tests that
//! need their own process or flags say "skipped" there.

mod support;

use serde_json::json;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::api::Api;
use support::*;

// ----- helpers ------------------------------------------------------------------------

/// connection.start-ok with PLAIN, announcing `authentication_failure_close` or not.
fn start_ok(user: &str, pass: &str, failure_close: bool) -> Vec<u8> {
    let mut caps = table_entry_bool("authentication_failure_close", failure_close);
    caps.extend(table_entry_bool("consumer_cancel_notify", true));
    let mut props = table_entry_longstr("product", b"warren-users-test");
    props.extend(table_entry_table("capabilities", &caps));
    let mut resp = vec![0u8];
    resp.extend_from_slice(user.as_bytes());
    resp.push(0);
    resp.extend_from_slice(pass.as_bytes());
    method(
        10,
        11,
        &Args::new()
            .table(&props)
            .shortstr("PLAIN")
            .longstr(&resp)
            .shortstr("en_US")
            .build(),
    )
}

/// How a login attempt ended.
#[derive(Debug, PartialEq)]
enum Login {
    /// connection.open-ok: the connection is usable.
    Open,
    /// connection.close with this code and text.
    Closed(u16, String),
    /// The socket was closed without a close method.
    Dropped,
}

/// Logs in over raw AMQP at `addr` as `user`/`pass` and opens `vhost`.
fn login_at(addr: SocketAddr, user: &str, pass: &str, vhost: &str, failure_close: bool) -> Login {
    let mut c = RawClient::connect_to(addr);
    c.start().expect("connection.start");
    c.send_method(0, &start_ok(user, pass, failure_close));
    // RabbitMQ waits ~3 s before dropping a refused client.
    let Some(f) = c.read_frame(Duration::from_secs(15)) else {
        assert!(c.eof, "neither a frame nor a close");
        return Login::Dropped;
    };
    if f.is_method(10, 50) {
        let mut a = f.args();
        let r = Login::Closed(a.short(), a.shortstr());
        c.send_method(0, &connection_close_ok());
        return r;
    }
    assert!(f.is_method(10, 30), "expected connection.tune, got {f:?}");
    let mut a = f.args();
    let (channel_max, frame_max, _hb) = (a.short(), a.long(), a.short());
    c.send_method(0, &connection_tune_ok(channel_max, frame_max, 0));
    c.send_method(0, &connection_open(vhost));
    let f = c.read_frame(STEP).expect("an answer to connection.open");
    if f.is_method(10, 50) {
        let mut a = f.args();
        let r = Login::Closed(a.short(), a.shortstr());
        c.send_method(0, &connection_close_ok());
        return r;
    }
    assert!(
        f.is_method(10, 41),
        "expected connection.open-ok, got {f:?}"
    );
    c.close();
    Login::Open
}

fn login(b: &Broker, user: &str, pass: &str, failure_close: bool) -> Login {
    login_at(
        SocketAddr::from(([127, 0, 0, 1], b.port)),
        user,
        pass,
        "/",
        failure_close,
    )
}

const REFUSED_PLAIN: &str = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";

fn refused() -> Login {
    Login::Closed(403, REFUSED_PLAIN.to_owned())
}

/// Creates `name` with `password` and `tags` (201) and, when `grant`, ".*" x3 on "/".
fn add_user(api: &Api, name: &str, password: &str, tags: &str, grant: bool) {
    let r = api.put(
        &format!("/api/users/{name}"),
        &json!({"password": password, "tags": tags}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    if grant {
        let r = api.put(
            &format!("/api/permissions/%2F/{name}"),
            &json!({"configure": ".*", "write": ".*", "read": ".*"}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

/// Deletes users this test made (in RabbitMQ they would otherwise stay).
struct Cleanup<'a> {
    api: &'a Api,
    users: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for u in &self.users {
            self.api.delete(&format!("/api/users/{u}"));
        }
    }
}

fn user_uri(b: &Broker, user: &str, pass: &str) -> String {
    format!("amqp://{user}:{pass}@127.0.0.1:{}/%2f", b.port)
}

/// This machine's address that is not loopback (the one a default route leaves by);
/// None when there is none. A UDP "connect" sends nothing.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

// ----- the API ------------------------------------------------------------------------

#[test]
fn users_api_creates_shows_updates_and_deletes_as_rabbitmq() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("auth-u");
    let _c = Cleanup {
        api: &api,
        users: vec![u.clone()],
    };
    let path = format!("/api/users/{u}");
    let r = api.put(
        &path,
        &json!({"password": "pw1", "tags": "administrator,management"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let got = api.get(&path).json();
    assert_eq!(got["name"], json!(u));
    assert_eq!(got["tags"], json!(["administrator", "management"]));
    assert_eq!(got["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert_eq!(got["limits"], json!({}));
    let hash = got["password_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 48, "base64 of 4 + 32 bytes: {hash}");
    // Tags as a list; an update is 204 and changes the hash (a fresh salt).
    let r = api.put(
        &path,
        &json!({"password": "pw2", "tags": ["monitoring", "custom"]}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let got = api.get(&path).json();
    assert_eq!(got["tags"], json!(["monitoring", "custom"]));
    assert_ne!(got["password_hash"], json!(hash));
    assert!(api
        .get("/api/users")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == json!(u)));
    // limits in a PUT are merged into the user's (RabbitMQ 3.10's PUT takes them).
    let body = json!({"password": "pw2", "tags": ["monitoring", "custom"], "limits": {"max-connections": 2}});
    assert_eq!(api.put(&path, &body).status, 204);
    let body =
        json!({"password": "pw2", "tags": ["monitoring", "custom"], "limits": {"max-channels": 5}});
    assert_eq!(api.put(&path, &body).status, 204);
    let body = json!({"password": "pw2", "tags": ["monitoring", "custom"]});
    assert_eq!(api.put(&path, &body).status, 204);
    assert_eq!(
        api.get(&path).json()["limits"],
        json!({"max-connections": 2, "max-channels": 5})
    );
    // RabbitMQ's 400s.
    let r = api.put(&path, &json!({"password": "x"}));
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("tags_not_present"))
    );
    let r = api.put(
        &path,
        &json!({"password": "x", "password_hash": "abcd", "tags": ""}),
    );
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("both_password_and_password_hash_are_provided"))
    );
    let r = api.put(&path, &json!({"password_hash": "!!notbase64", "tags": ""}));
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!(["not_base64", "!!notbase64"]))
    );
    // Tags only: the password is cleared (RabbitMQ's update without a password).
    let r = api.put(&path, &json!({"tags": "management"}));
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(api.get(&path).json()["password_hash"], "");
    assert_eq!(login(&b, &u, "pw2", true), refused());
    // Permissions of the user: none yet; without-permissions lists it.
    assert_eq!(api.get(&format!("{path}/permissions")).json(), json!([]));
    let without = api.get("/api/users/without-permissions").json();
    assert!(without
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == json!(u)));
    assert_eq!(api.delete(&path).status, 204);
    assert_eq!(api.delete(&path).status, 404);
    assert_eq!(api.get(&path).status, 404);
    assert_eq!(api.get(&format!("{path}/permissions")).status, 404);
}

#[test]
fn bulk_delete_removes_users_in_order() {
    let b = Broker::start();
    let api = Api::new(&b);
    let (u1, u2) = (unique("auth-b1"), unique("auth-b2"));
    let _c = Cleanup {
        api: &api,
        users: vec![u1.clone(), u2.clone()],
    };
    add_user(&api, &u1, "p", "", false);
    add_user(&api, &u2, "p", "", false);
    let r = api.post("/api/users/bulk-delete", &json!({"users": [u1, u2]}));
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(api.get(&format!("/api/users/{u1}")).status, 404);
    assert_eq!(api.get(&format!("/api/users/{u2}")).status, 404);
    let r = api.post("/api/users/bulk-delete", &json!({}));
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("[{key_missing,users}]"))
    );
    let r = api.post("/api/users/bulk-delete", &json!({"users": [u1]}));
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!(["no_such_user", u1]))
    );
}

#[test]
fn permissions_api_sets_shows_and_clears_as_rabbitmq() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("auth-p");
    let _c = Cleanup {
        api: &api,
        users: vec![u.clone()],
    };
    add_user(&api, &u, "pw", "", false);
    let path = format!("/api/permissions/%2F/{u}");
    assert_eq!(api.get(&path).status, 404);
    let body = json!({"configure": "^a", "write": ".*", "read": ""});
    let r = api.put(&path, &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.put(
        &path,
        &json!({"configure": "^b", "write": ".*", "read": ""}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let want = json!({"user": u, "vhost": "/", "configure": "^b", "write": ".*", "read": ""});
    assert_eq!(api.get(&path).json(), want);
    assert_eq!(
        api.get(&format!("/api/users/{u}/permissions")).json(),
        json!([want])
    );
    let all = api.get("/api/permissions").json();
    assert!(all.as_array().unwrap().contains(&want), "{all}");
    let vh = api.get("/api/vhosts/%2F/permissions").json();
    assert!(vh.as_array().unwrap().contains(&want), "{vh}");
    // A bad regex, missing keys, an unknown vhost or user: RabbitMQ's 400s.
    let r = api.put(
        &path,
        &json!({"configure": "(x", "write": ".*", "read": ""}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["reason"][0], "invalid_regexp", "{}", r.body);
    let r = api.put(&path, &json!({"configure": "x"}));
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("[{key_missing,write},{key_missing,read}]"))
    );
    let full = json!({"configure": ".*", "write": ".*", "read": ".*"});
    let nov = unique("auth-nov");
    let r = api.put(&format!("/api/permissions/{nov}/{u}"), &full);
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("vhost_or_user_not_found"))
    );
    let r = api.put(&format!("/api/permissions/%2F/{nov}"), &full);
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (400, json!("vhost_or_user_not_found"))
    );
    assert_eq!(
        api.get(&format!("/api/vhosts/{nov}/permissions")).status,
        404
    );
    assert_eq!(api.delete(&path).status, 204);
    assert_eq!(api.delete(&path).status, 404);
}

#[test]
fn only_administrators_manage_users() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("auth-mgmt");
    let _c = Cleanup {
        api: &api,
        users: vec![u.clone()],
    };
    add_user(&api, &u, "pw", "management", false);
    let theirs = api.as_user(&u, "pw");
    for r in [
        theirs.get("/api/users"),
        theirs.put("/api/users/x-never", &json!({"password": "p", "tags": ""})),
        theirs.get("/api/permissions"),
    ] {
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(
            r.json(),
            json!({"error": "not_authorised", "reason": "Not administrator user"})
        );
    }
}

// ----- AMQP logins --------------------------------------------------------------------

#[test]
fn a_created_user_logs_in_and_a_wrong_password_is_refused() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("auth-l");
    let _c = Cleanup {
        api: &api,
        users: vec![u.clone()],
    };
    add_user(&api, &u, "s3cret", "", true);
    assert_eq!(login(&b, &u, "s3cret", true), Login::Open);
    assert_eq!(login(&b, &u, "wrong", true), refused());
    assert_eq!(login(&b, &u, "", true), refused());
    assert_eq!(login(&b, &u, "wrong", false), Login::Dropped);
    // AMQPLAIN too.
    let opts = |pass: &str| HandshakeOpts {
        user: u.clone(),
        pass: pass.to_owned(),
        amqplain: true,
        ..Default::default()
    };
    let mut c = b.connect_raw();
    c.do_handshake(&opts("s3cret")).expect("AMQPLAIN login");
    c.close();
    let mut c = b.connect_raw();
    c.start().unwrap();
    c.send_method(0, &connection_start_ok_amqplain(&u, "wrong"));
    let (code, text, _, _) = c.expect_close();
    assert_eq!(
        (code, text.as_str()),
        (403, "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. For details see the broker logfile.")
    );
    // The Rust client.
    block_on(async {
        let conn = connect(&user_uri(&b, &u, "s3cret")).await;
        let ch = step("channel", conn.create_channel()).await.unwrap();
        let q = unique("auth-q");
        step(
            "declare",
            ch.queue_declare(
                q.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                Default::default(),
            ),
        )
        .await
        .unwrap();
        step("close", conn.close(200, "bye".into())).await.unwrap();
        let r = step(
            "wrong password",
            lapin::Connection::connect(&user_uri(&b, &u, "nope"), Default::default()),
        )
        .await;
        assert!(r.is_err(), "lapin logged in with a wrong password");
    });
    // Warren logs the failure with the peer address.
    if !b.is_external() {
        assert!(
            wait_until(STEP, || b
                .logs()
                .contains(&format!("user '{u}' - invalid credentials"))),
            "{}",
            b.logs()
        );
        let line = b
            .logs()
            .lines()
            .find(|l| l.contains(&format!("user '{u}' - invalid credentials")))
            .map(str::to_owned)
            .unwrap_or_default();
        assert!(line.contains("127.0.0.1:"), "{line}");
    }
}

#[test]
fn pika_logs_in_with_a_created_user() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("auth-pika");
    let _c = Cleanup {
        api: &api,
        users: vec![u.clone()],
    };
    add_user(&api, &u, "pk-pass", "", true);
    let script = r#"
import sys, pika
port, user = int(sys.argv[1]), sys.argv[2]
def params(pw):
    return pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials(user, pw),
                                     connection_attempts=1, socket_timeout=10)
c = pika.BlockingConnection(params("pk-pass"))
ch = c.channel()
q = ch.queue_declare("", exclusive=True).method.queue
ch.basic_publish("", q, b"hi")
m = None
for _ in range(100):
    m = ch.basic_get(q, auto_ack=True)
    if m[0] is not None:
        break
    c.process_data_events(0.05)
assert m[2] == b"hi", m
c.close()
try:
    pika.BlockingConnection(params("wrong"))
    print("LOGGED IN WITH A WRONG PASSWORD"); sys.exit(1)
except pika.exceptions.ProbableAuthenticationError as e:
    assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(e), e
print("pika ok")
"#;
    let have_pika = Command::new("python3")
        .args(["-c", "import pika"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_pika {
        println!("skipped: python3 cannot import pika");
        return;
    }
    let out = Command::new("python3")
        .args(["-c", script, &b.port.to_string(), &u])
        .output()
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("pika ok"), "{text}");
}

#[test]
fn a_user_without_permissions_is_refused_at_connection_open() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("auth-np");
    let _c = Cleanup {
        api: &api,
        users: vec![u.clone()],
    };
    add_user(&api, &u, "pw", "", false);
    assert_eq!(
        login(&b, &u, "pw", true),
        Login::Closed(
            530,
            format!("NOT_ALLOWED - access to vhost '/' refused for user '{u}'")
        )
    );
    // Granted: in; cleared again: out.
    let path = format!("/api/permissions/%2F/{u}");
    let full = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert_eq!(api.put(&path, &full).status, 201);
    assert_eq!(login(&b, &u, "pw", true), Login::Open);
    assert_eq!(api.delete(&path).status, 204);
    assert!(matches!(login(&b, &u, "pw", true), Login::Closed(530, _)));
}

#[test]
fn a_password_change_takes_effect_and_deletion_refuses() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("auth-c");
    let _c = Cleanup {
        api: &api,
        users: vec![u.clone()],
    };
    add_user(&api, &u, "old", "", true);
    assert_eq!(login(&b, &u, "old", true), Login::Open);
    let r = api.put(
        &format!("/api/users/{u}"),
        &json!({"password": "new", "tags": ""}),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(login(&b, &u, "old", true), refused());
    assert_eq!(login(&b, &u, "new", true), Login::Open);
    // Permissions stay across a password change.
    assert_eq!(api.get(&format!("/api/permissions/%2F/{u}")).status, 200);
    assert_eq!(api.delete(&format!("/api/users/{u}")).status, 204);
    assert_eq!(login(&b, &u, "new", true), refused());
    assert_eq!(api.get(&format!("/api/permissions/%2F/{u}")).status, 404);
}

/// RabbitMQ 3.10's connection tracking closes a deleted user's connections with 320;
/// other users' connections carry on.
#[test]
fn deleting_a_user_closes_its_connections() {
    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("auth-gone");
    let _c = Cleanup {
        api: &api,
        users: vec![u.clone()],
    };
    add_user(&api, &u, "pw", "", true);
    let mut doomed = RawClient::handshake_with(
        b.port,
        &HandshakeOpts {
            user: u.clone(),
            pass: "pw".into(),
            ..Default::default()
        },
    );
    doomed.open_channel(1);
    let mut survivor = RawClient::handshake(b.port);
    survivor.open_channel(1);
    assert_eq!(api.delete(&format!("/api/users/{u}")).status, 204);
    let (code, text, _, _) = doomed.expect_close();
    assert_eq!(
        (code, text),
        (320, format!("CONNECTION_FORCED - user '{u}' is deleted"))
    );
    survivor.send_method(1, &support::queue_declare("", false, true));
    survivor.expect_method(1, 50, 11);
    survivor.close();
}

#[test]
fn a_hash_made_by_rabbitmq_logs_in() {
    // RabbitMQ's API on this machine makes the hash; skipped when it is not there.
    if TcpStream::connect_timeout(&"127.0.0.1:15672".parse().unwrap(), Duration::from_secs(2))
        .is_err()
    {
        println!("skipped: no RabbitMQ management API on 127.0.0.1:15672");
        return;
    }
    let rabbit = Api::at("http://127.0.0.1:15672", "guest", "guest");
    let donor = unique("auth-donor");
    let r = rabbit.put(
        &format!("/api/users/{donor}"),
        &json!({"password": "from-rabbit", "tags": ""}),
    );
    if r.status == 401 {
        println!("skipped: RabbitMQ refused guest/guest");
        return;
    }
    assert_eq!(r.status, 201, "{}", r.body);
    let hash = rabbit.get(&format!("/api/users/{donor}")).json()["password_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rabbit.delete(&format!("/api/users/{donor}")).status, 204);

    let b = Broker::start();
    let api = Api::new(&b);
    let u = unique("auth-h");
    let _c = Cleanup {
        api: &api,
        users: vec![u.clone()],
    };
    let r = api.put(
        &format!("/api/users/{u}"),
        &json!({"password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        api.get(&format!("/api/users/{u}")).json()["password_hash"],
        json!(hash)
    );
    let full = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert_eq!(
        api.put(&format!("/api/permissions/%2F/{u}"), &full).status,
        201
    );
    assert_eq!(login(&b, &u, "from-rabbit", true), Login::Open);
    assert_eq!(login(&b, &u, "from-warren", true), refused());
}

// ----- loopback-only users --------------------------------------------------------------

#[test]
fn loopback_users_are_refused_from_another_address() {
    let Some(ip) = non_loopback_ip() else {
        println!("skipped: this machine has no non-loopback address");
        return;
    };
    if is_external() {
        // RabbitMQ's default: guest is loopback-only.
        let addr = SocketAddr::new(ip, external_port().unwrap_or(5672));
        if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
            println!("skipped: the broker does not listen on {addr}");
            return;
        }
        assert_eq!(login_at(addr, "guest", "guest", "/", true), refused());
        let http = SocketAddr::new(ip, b_http_port());
        if TcpStream::connect_timeout(&http, Duration::from_secs(2)).is_ok() {
            let api = Api::at(&format!("http://{http}"), "guest", "guest");
            expect_http_loopback_refusal(&api);
        }
        return;
    }
    let admin = unique("auth-lb");
    let Some(b) = Broker::spawn_own(&[
        "--bind",
        "0.0.0.0",
        "--default-user",
        &admin,
        "--default-pass",
        "lbpass",
        "--loopback-users",
        &format!("{admin},someone-else"),
    ]) else {
        return;
    };
    let far = SocketAddr::new(ip, b.port);
    let near = SocketAddr::from(([127, 0, 0, 1], b.port));
    assert_eq!(login_at(far, &admin, "lbpass", "/", true), refused());
    assert_eq!(login_at(far, &admin, "lbpass", "/", false), Login::Dropped);
    assert_eq!(login_at(near, &admin, "lbpass", "/", true), Login::Open);
    assert!(
        wait_until(STEP, || b.logs().contains(&format!("{ip}:"))
            && b.logs().contains(&format!(
                "user '{admin}' can only connect via localhost"
            ))),
        "{}",
        b.logs()
    );
    // The management API refuses the same way, with RabbitMQ's own reason.
    let far_api = Api::at(&format!("http://{ip}:{}", b.http_port), &admin, "lbpass");
    expect_http_loopback_refusal(&far_api);
    // Another user is not loopback-only.
    let api = Api::at(&b.http_url(), &admin, "lbpass");
    add_user(&api, "remote-user", "rpass", "", true);
    assert_eq!(
        login_at(far, "remote-user", "rpass", "/", true),
        Login::Open
    );
    // guest does not exist here: the default user was --default-user.
    assert_eq!(login_at(near, "guest", "guest", "/", true), refused());
}

fn b_http_port() -> u16 {
    std::env::var("WARREN_TEST_HTTP_PORT")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(15672)
}

fn expect_http_loopback_refusal(api: &Api) {
    let r = api.get("/api/whoami");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": "not_authorised", "reason": "User can only log in via localhost"})
    );
}

// ----- persistence and start-up -----------------------------------------------------------

fn expect_open(b: &Broker, user: &str, pass: &str) {
    assert_eq!(login(b, user, pass, true), Login::Open, "{}", b.logs());
}

#[test]
fn users_survive_a_restart_and_kill_9() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::spawn_in(dir.path(), &[]).unwrap();
    let api = Api::new(&b);
    add_user(&api, "durable-user", "pw1", "monitoring,custom", true);
    let perms = json!({"configure": "^dur-", "write": ".*", "read": "^dur-"});
    assert_eq!(
        api.put("/api/permissions/%2F/durable-user", &perms).status,
        204
    );
    let before = api.get("/api/users/durable-user").json();
    drop(b);

    let mut b = Broker::spawn_in(dir.path(), &[]).unwrap();
    let api = Api::new(&b);
    assert_eq!(api.get("/api/users/durable-user").json(), before);
    let got = api.get("/api/permissions/%2F/durable-user").json();
    assert_eq!(got["configure"], "^dur-");
    expect_open(&b, "durable-user", "pw1");
    // A change right before kill -9 is on disk: every 2xx has saved.
    let r = api.put(
        "/api/users/durable-user",
        &json!({"password": "pw2", "tags": "monitoring"}),
    );
    assert_eq!(r.status, 204);
    add_user(&api, "late-user", "late", "", true);
    b.kill9();
    drop(b);

    let b = Broker::spawn_in(dir.path(), &[]).unwrap();
    expect_open(&b, "durable-user", "pw2");
    expect_open(&b, "late-user", "late");
    assert_eq!(login(&b, "durable-user", "pw1", true), refused());
    expect_open(&b, "guest", "guest");
    let api = Api::new(&b);
    assert_eq!(
        api.get("/api/users/durable-user").json()["tags"],
        json!(["monitoring"])
    );
    // Deleting guest sticks too: no default user is made again on a later start.
    assert_eq!(api.delete("/api/users/guest").status, 204);
    drop(b);
    let b = Broker::spawn_in(dir.path(), &[]).unwrap();
    assert_eq!(login(&b, "guest", "guest", true), refused());
    expect_open(&b, "durable-user", "pw2");
}

#[test]
fn permissions_set_by_a_definitions_import_survive_a_restart() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::spawn_in(dir.path(), &[]).unwrap();
    let api = Api::new(&b);
    add_user(&api, "defs-user", "pw", "", false);
    let defs = json!({
        "vhosts": [{"name": "defs-vh"}],
        "permissions": [{"user": "defs-user", "vhost": "/", "configure": "^d-", "write": ".*", "read": ".*"}],
    });
    let r = api.post("/api/definitions", &defs);
    assert_eq!(r.status, 204, "{}", r.body);
    drop(b);
    let b = Broker::spawn_in(dir.path(), &[]).unwrap();
    let api = Api::new(&b);
    let got = api.get("/api/permissions/%2F/defs-user");
    assert_eq!(
        (got.status, got.json()["configure"].clone()),
        (200, json!("^d-"))
    );
    // The importing user got full permissions in the vhost the import created.
    assert_eq!(api.get("/api/permissions/defs-vh/guest").status, 200);
}

#[test]
fn default_user_flags_apply_on_the_first_start_only() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = ["--default-user", "boss", "--default-pass", "b0ss"];
    let b = Broker::spawn_in(dir.path(), &args).unwrap();
    let api = Api::at(&b.http_url(), "boss", "b0ss");
    let users = api.get("/api/users").json();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["boss"]);
    assert_eq!(users[0]["tags"], json!(["administrator"]));
    expect_open(&b, "boss", "b0ss");
    assert_eq!(login(&b, "guest", "guest", true), refused());
    drop(b);
    // Other flags on a later start change nothing: the users file rules.
    let b = Broker::spawn_in(
        dir.path(),
        &["--default-user", "other", "--default-pass", "x"],
    )
    .unwrap();
    expect_open(&b, "boss", "b0ss");
    assert_eq!(login(&b, "other", "x", true), refused());
}

fn damage(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    let last = data.len() - 3;
    data[last] ^= 0x55;
    std::fs::write(path, data).unwrap();
}

#[test]
fn a_damaged_users_file_stops_start_up() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::spawn_in(dir.path(), &[]).unwrap();
    drop(b);
    let users = dir.path().join("users");
    assert!(users.exists(), "a first start writes the users file");
    damage(&users);
    let f = Broker::start_failure(dir.path(), &[]);
    assert_eq!(f.status.and_then(|s| s.code()), Some(1), "{}", f.logs);
    assert!(
        f.stderr.contains("users: users file fails its checksum"),
        "{}",
        f.stderr
    );
}
