//! The management API's authorization by user tags, as RabbitMQ 3.10's management
//! plugin decides it (`rabbit_mgmt_util`): no management tag, no API; `management` sees
//! the objects of the vhosts it has permissions in and only its own connections;
//! `monitoring` sees every connection and the node, but objects only where it has
//! permissions; `policymaker` is a management user here; `administrator` sees and does
//! everything. Mutations also need the AMQP permission of the same operation.
//!
//! The users are made through the API (`PUT /api/users/{name}`, `PUT
//! /api/permissions/%2F/{name}`) and deleted at the end. Every assertion holds against
//! RabbitMQ (`WARREN_TEST_PORT=5672`), whose connection lists lag (waited for).

mod support;

use serde_json::{json, Value};
use std::time::Duration;

use support::api::{enc, Api, Resp};
use support::{block_on, connect, unique, wait_until, Broker};

/// Users made for one test, deleted (with the queues and exchanges named) when dropped.
struct Users {
    admin: Api,
    names: Vec<String>,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Users {
    fn new(b: &Broker) -> Users {
        Users {
            admin: Api::new(b),
            names: Vec::new(),
            queues: Vec::new(),
            exchanges: Vec::new(),
        }
    }

    /// A user with `tags` and, when given, configure/write/read patterns on "/".
    fn add(&mut self, tags: &str, perms: Option<(&str, &str, &str)>) -> (String, Api) {
        let name = unique("perm-api");
        let r = self.admin.put(
            &format!("/api/users/{}", enc(&name)),
            &json!({"password": "pw", "tags": tags}),
        );
        assert_eq!(r.status, 201, "create user: {r:?}");
        self.names.push(name.clone());
        if let Some((c, w, rd)) = perms {
            let r = self.admin.put(
                &format!("/api/permissions/%2F/{}", enc(&name)),
                &json!({"configure": c, "write": w, "read": rd}),
            );
            assert!(matches!(r.status, 201 | 204), "permissions: {r:?}");
        }
        let api = self.admin.as_user(&name, "pw");
        (name, api)
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for q in &self.queues {
            let _ = self.admin.delete(&format!("/api/queues/%2F/{}", enc(q)));
        }
        for x in &self.exchanges {
            let _ = self.admin.delete(&format!("/api/exchanges/%2F/{}", enc(x)));
        }
        for n in &self.names {
            let _ = self.admin.delete(&format!("/api/users/{}", enc(n)));
        }
    }
}

fn not_authorised(reason: &str) -> Value {
    json!({"error": "not_authorised", "reason": reason})
}

fn assert_refused(r: Resp, reason: &str) {
    assert_eq!((r.status, r.json()), (401, not_authorised(reason)), "{r:?}");
}

fn names(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {r:?}"))
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect()
}

fn users_of(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {r:?}"))
        .iter()
        .filter_map(|v| v["user"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_user_without_a_management_tag_is_refused() {
    let b = Broker::start();
    let mut u = Users::new(&b);
    let (_, plain) = u.add("", Some((".*", ".*", ".*")));
    for path in ["/api/overview", "/api/whoami", "/api/queues", "/api/vhosts"] {
        assert_refused(plain.get(path), "Not management user");
    }
    assert_refused(
        plain.put("/api/queues/%2F/wt-perm-never", &json!({})),
        "Not management user",
    );
}

#[test]
fn each_tag_sees_what_rabbitmq_shows() {
    let b = Broker::start();
    let mut u = Users::new(&b);
    let all = Some((".*", ".*", ".*"));
    let (mgmt_name, mgmt) = u.add("management", all);
    let (_, stranger) = u.add("management", None);
    let (mon_name, mon) = u.add("monitoring", None);
    let (pol_name, pol) = u.add("policymaker", all);
    let (admin_name, admin) = u.add("administrator", None);
    let q = unique("perm-api-q");
    let r = u
        .admin
        .put(&format!("/api/queues/%2F/{}", enc(&q)), &json!({}));
    assert_eq!(r.status, 201, "{r:?}");
    u.queues.push(q.clone());

    // whoami: every management user, with its tags.
    for (api, name, tag) in [
        (&mgmt, &mgmt_name, "management"),
        (&mon, &mon_name, "monitoring"),
        (&pol, &pol_name, "policymaker"),
        (&admin, &admin_name, "administrator"),
    ] {
        let r = api.get("/api/whoami");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["name"], json!(name));
        assert_eq!(r.json()["tags"], json!([tag]));
    }

    // Queues: where the user has permissions (administrators: everywhere). A monitor
    // without permissions sees none, as in RabbitMQ.
    for (api, sees) in [
        (&mgmt, true),
        (&pol, true),
        (&admin, true),
        (&stranger, false),
        (&mon, false),
    ] {
        assert_eq!(
            names(&api.get("/api/queues")).contains(&q),
            sees,
            "{} /api/queues",
            api.user
        );
    }
    for api in [&stranger, &mon] {
        assert_refused(
            api.get("/api/queues/%2F"),
            "User not authorised to access virtual host",
        );
        assert_refused(
            api.get(&format!("/api/queues/%2F/{}", enc(&q))),
            "User not authorised to access virtual host",
        );
        assert_refused(
            api.get("/api/exchanges/%2F"),
            "User not authorised to access virtual host",
        );
        assert_refused(
            api.get("/api/bindings/%2F"),
            "User not authorised to access virtual host",
        );
    }
    assert_eq!(
        mgmt.get(&format!("/api/queues/%2F/{}", enc(&q))).status,
        200
    );

    // Vhosts: monitors see every vhost, others those they may use; one vhost's record
    // is for administrators.
    let vhost_names = |api: &Api| names(&api.get("/api/vhosts"));
    assert!(vhost_names(&mgmt).contains(&"/".to_owned()));
    assert!(vhost_names(&mon).contains(&"/".to_owned()));
    assert!(!vhost_names(&stranger).contains(&"/".to_owned()));
    assert_refused(mgmt.get("/api/vhosts/%2F"), "Not administrator user");
    assert_eq!(admin.get("/api/vhosts/%2F").status, 200);

    // Users, permissions and definitions: administrators only.
    for api in [&mgmt, &mon, &pol] {
        for path in ["/api/users", "/api/permissions", "/api/definitions"] {
            assert_refused(api.get(path), "Not administrator user");
        }
        assert_refused(
            api.get(&format!("/api/users/{}", enc(&admin_name))),
            "Not administrator user",
        );
    }
    let users = names(&admin.get("/api/users"));
    assert!(users.contains(&mgmt_name) && users.contains(&admin_name));

    // Nodes: monitors.
    for api in [&mgmt, &pol, &stranger] {
        assert_refused(api.get("/api/nodes"), "Not monitor user");
    }
    assert_eq!(mon.get("/api/nodes").status, 200);

    // The overview: the node and its listeners for monitors only.
    for (api, monitor) in [
        (&mgmt, false),
        (&stranger, false),
        (&mon, true),
        (&admin, true),
    ] {
        let r = api.get("/api/overview");
        assert_eq!(r.status, 200);
        let o = r.json();
        assert_eq!(o.get("node").is_some(), monitor, "{}: {o}", api.user);
        assert_eq!(o.get("listeners").is_some(), monitor, "{}: {o}", api.user);
        for k in ["queues", "exchanges", "connections", "channels"] {
            assert!(o["object_totals"].get(k).is_some(), "{k}: {o}");
        }
    }
    // A user without any vhost counts no queues or exchanges.
    let o = stranger.get("/api/overview").json();
    assert_eq!(o["object_totals"]["queues"], 0);
    assert_eq!(o["object_totals"]["exchanges"], 0);
}

#[test]
fn connections_are_their_owners_and_monitors() {
    let b = Broker::start();
    let mut u = Users::new(&b);
    let all = Some((".*", ".*", ".*"));
    let (owner_name, owner) = u.add("management", all);
    let (_, other) = u.add("management", all);
    let (_, mon) = u.add("monitoring", None);
    let admin = u
        .admin
        .as_user(&u.admin.user.clone(), &u.admin.pass.clone());
    block_on(async {
        let conn = connect(&format!(
            "amqp://{}:pw@127.0.0.1:{}/%2f",
            enc(&owner_name),
            b.port
        ))
        .await;
        let _ch = conn.create_channel().await.unwrap();
        // The connection as listed to an administrator (RabbitMQ lists it a little later).
        let mut name = None;
        assert!(
            wait_until(Duration::from_secs(30), || {
                let r = admin.get("/api/connections");
                name = r.json().as_array().and_then(|a| {
                    a.iter()
                        .find(|c| c["user"] == json!(owner_name))
                        .and_then(|c| c["name"].as_str().map(str::to_owned))
                });
                name.is_some()
            }),
            "the owner's connection never listed"
        );
        let name = name.unwrap_or_default();
        let path = format!("/api/connections/{}", enc(&name));

        // Lists: a management user sees only its own; a monitor everyone's.
        let own = users_of(&owner.get("/api/connections"));
        assert!(own.contains(&owner_name), "{own:?}");
        assert!(own.iter().all(|n| *n == owner_name), "{own:?}");
        assert!(!users_of(&other.get("/api/connections")).contains(&owner_name));
        assert!(users_of(&mon.get("/api/connections")).contains(&owner_name));
        let chans = users_of(&owner.get("/api/channels"));
        assert!(chans.iter().all(|n| *n == owner_name), "{chans:?}");
        assert!(!users_of(&other.get("/api/channels")).contains(&owner_name));

        // One connection: its owner and monitors may look, only its owner and
        // administrators may close it.
        assert_eq!(owner.get(&path).status, 200);
        assert_eq!(mon.get(&path).status, 200);
        assert_refused(other.get(&path), "User not authorised to access object");
        assert_refused(
            other.get(&format!("{path}/channels")),
            "User not authorised to access object",
        );
        assert_refused(other.delete(&path), "User not authorised to access object");
        assert_refused(mon.delete(&path), "User not authorised to access object");
        assert_eq!(owner.delete(&path).status, 204);
        let _ = conn.close(200, "bye".into()).await;
    });
}

#[test]
fn mutations_need_the_amqp_permission() {
    let b = Broker::start();
    let mut u = Users::new(&b);
    let (user, api) = u.add("management", Some(("^allowed-", "^allowed-", "^allowed-")));
    let (_, stranger) = u.add("management", None);
    let t = unique("perm-api");
    let (aq, dq, ax, dx) = (
        format!("allowed-{t}-q"),
        format!("denied-{t}-q"),
        format!("allowed-{t}-x"),
        format!("denied-{t}-x"),
    );
    u.queues.extend([aq.clone(), dq.clone()]);
    u.exchanges.extend([ax.clone(), dx.clone()]);
    let queue = |n: &str| format!("/api/queues/%2F/{}", enc(n));
    let exchange = |n: &str| format!("/api/exchanges/%2F/{}", enc(n));
    assert_eq!(u.admin.put(&queue(&dq), &json!({})).status, 201);
    assert_eq!(
        u.admin
            .put(&exchange(&dx), &json!({"type": "direct"}))
            .status,
        201
    );
    let refused = "Access refused.";

    // Declare and delete: configure.
    assert_eq!(api.put(&queue(&aq), &json!({})).status, 201);
    assert_refused(api.put(&queue(&format!("{dq}2")), &json!({})), refused);
    assert_refused(api.delete(&queue(&dq)), refused);
    assert_eq!(
        api.put(&exchange(&ax), &json!({"type": "direct"})).status,
        201
    );
    assert_refused(
        api.put(&exchange(&format!("{dx}2")), &json!({"type": "direct"})),
        refused,
    );
    assert_refused(api.delete(&exchange(&dx)), refused);
    // A missing queue is 404 before any permission.
    assert_eq!(api.delete(&queue(&format!("{dq}-gone"))).status, 404);

    // Purge and get: read (get refused with the AMQP text).
    assert_refused(api.delete(&format!("{}/contents", queue(&dq))), refused);
    assert_eq!(api.delete(&format!("{}/contents", queue(&aq))).status, 204);
    let get = json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"});
    assert_refused(
        api.post(&format!("{}/get", queue(&dq)), &get),
        &format!("ACCESS_REFUSED - access to queue '{dq}' in vhost '/' refused for user '{user}'"),
    );
    assert_eq!(api.post(&format!("{}/get", queue(&aq)), &get).status, 200);

    // Publish: write on the exchange, refused as RabbitMQ's API does (400 with the
    // AMQP code and text).
    let msg =
        json!({"routing_key": "k", "properties": {}, "payload": "x", "payload_encoding": "string"});
    let r = api.post(&format!("{}/publish", exchange(&dx)), &msg);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        r.json()["reason"],
        json!(format!(
            "403 ACCESS_REFUSED - access to exchange '{dx}' in vhost '/' refused for user '{user}'"
        ))
    );
    assert_eq!(
        api.post(&format!("{}/publish", exchange(&ax)), &msg).status,
        200
    );

    // Bindings: write on the queue, read on the exchange.
    let bind = |x: &str, q: &str| {
        api.post(
            &format!("/api/bindings/%2F/e/{}/q/{}", enc(x), enc(q)),
            &json!({"routing_key": "k"}),
        )
    };
    assert_refused(bind(&dx, &aq), refused);
    assert_refused(bind(&ax, &dq), refused);
    assert_eq!(bind(&ax, &aq).status, 201);

    // A vhost the user has no permissions in: refused at the vhost.
    assert_refused(
        stranger.put(&queue(&format!("{aq}-s")), &json!({})),
        "User not authorised to access virtual host",
    );
    assert_refused(
        stranger.get("/api/aliveness-test/%2F"),
        "User not authorised to access virtual host",
    );
}
