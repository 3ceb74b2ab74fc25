//! `/api/connections`, `/api/channels`, `/api/consumers`: a lapin client's connection,
//! channels and consumer appear with RabbitMQ's fields, and `DELETE` of a connection
//! closes it with 320 and the `X-Reason` text. Every assertion holds against RabbitMQ
//! 3.10 too (`WARREN_TEST_PORT=5672`), whose statistics lag a few seconds: each check
//! waits for its condition.

mod support;

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::api::{enc, Api};
use support::{block_on, step, unique, wait_until, within, Broker};

/// RabbitMQ's statistics arrive every 5 s; allow a few rounds.
const STATS: Duration = Duration::from_secs(20);

/// A lapin connection carrying `name` as its `connection_name` client property, so the
/// test finds its own connection among others.
async fn named_connection(b: &Broker, name: &str) -> Connection {
    step(
        "lapin connect",
        Connection::connect(
            &b.uri(),
            ConnectionProperties::default().with_connection_name(name.into()),
        ),
    )
    .await
    .expect("connect")
}

/// Our connection in `/api/connections` (found by its `connection_name`), once `pred`
/// holds for it.
fn wait_conn(api: &Api, tag: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut found = Value::Null;
    let ok = wait_until(STATS, || {
        let list = polled(api.get("/api/connections"));
        let Some(c) = list.as_array().and_then(|l| {
            l.iter()
                .find(|c| c["client_properties"]["connection_name"] == tag)
        }) else {
            return false;
        };
        found = c.clone();
        pred(c)
    });
    assert!(ok, "connection {tag} not listed as expected: {found}");
    found
}

/// Whether this process holds a TCP socket from local port `local` to remote port
/// `remote` (from /proc: the socket's inode among our file descriptors), so a
/// `peer_port` is shown to be our client's own port.
fn ours(local: u16, remote: u16) -> bool {
    let mut inodes = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(t) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in t.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port = |s: &str| {
                s.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if cols.len() > 9 && port(cols[1]) == Some(local) && port(cols[2]) == Some(remote) {
                inodes.push(format!("socket:[{}]", cols[9]));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| inodes.iter().any(|i| l.to_string_lossy() == *i))
            })
        })
        .unwrap_or(false)
}

/// A polled answer's JSON, or Null for a non-200 or non-JSON one (a loaded RabbitMQ
/// sometimes answers a request with an error; polling just asks again).
fn polled(r: support::api::Resp) -> Value {
    if r.status != 200 {
        return Value::Null;
    }
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

fn find_by<'a>(list: &'a Value, key: &str, want: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|v| v[key] == want)
}

#[test]
fn a_clients_connection_channels_and_consumer_appear_with_rabbitmqs_fields() {
    let b = Broker::start();
    let api = Api::new(&b);
    let tag = unique("cc-conn");
    block_on(async {
        let conn = named_connection(&b, &tag).await;
        let ch1 = step("channel 1", conn.create_channel()).await.unwrap();
        step("qos", ch1.basic_qos(7, BasicQosOptions::default()))
            .await
            .unwrap();
        let q = unique("cc-q");
        step(
            "declare",
            ch1.queue_declare(
                q.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        let ctag = unique("cc-tag");
        let _consumer = step(
            "consume",
            ch1.basic_consume(
                q.as_str().into(),
                ctag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        let ch2 = step("channel 2", conn.create_channel()).await.unwrap();
        step(
            "confirm",
            ch2.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .unwrap();
        // A transaction with one publish not committed yet.
        let ch3 = step("channel 3", conn.create_channel()).await.unwrap();
        step("tx.select", ch3.tx_select()).await.unwrap();
        step(
            "publish in tx",
            ch3.basic_publish(
                "".into(),
                q.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                b"pending",
                lapin::BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;

        // The connection, with its client's properties.
        let c = wait_conn(&api, &tag, |c| c["channels"] == 3);
        let name = c["name"].as_str().expect("name").to_owned();
        assert_eq!(c["user"], "guest");
        assert_eq!(c["vhost"], "/");
        assert_eq!(c["protocol"], "AMQP 0-9-1");
        assert_eq!(c["state"], "running");
        assert_eq!(c["type"], "network");
        assert_eq!(c["ssl"], false);
        assert_eq!(c["auth_mechanism"], "PLAIN");
        assert_eq!(c["peer_host"], "127.0.0.1");
        assert_eq!(c["port"], b.port);
        let peer_port = c["peer_port"].as_u64().expect("peer_port") as u16;
        assert!(ours(peer_port, b.port), "peer_port {peer_port} is not ours");
        assert_eq!(
            name,
            format!("127.0.0.1:{peer_port} -> 127.0.0.1:{}", b.port)
        );
        assert_eq!(
            c["client_properties"]["capabilities"]["consumer_cancel_notify"], true,
            "{c}"
        );
        assert!(c["client_properties"]["product"].is_string(), "{c}");
        let at = c["connected_at"].as_u64().expect("connected_at");
        assert!(
            at <= started + 1000 && at + 60_000 > started,
            "{at} vs {started}"
        );
        for k in [
            "timeout",
            "frame_max",
            "channel_max",
            "recv_oct",
            "send_oct",
            "recv_cnt",
            "send_cnt",
        ] {
            assert!(c[k].is_u64(), "{k}: {c}");
        }
        assert!(c["node"].is_string());

        // One by name, and per vhost.
        let one = api.get(&format!("/api/connections/{}", enc(&name)));
        assert_eq!(one.status, 200, "{}", one.body);
        assert_eq!(one.json()["peer_port"], peer_port);
        let per_vhost = api.get("/api/vhosts/%2F/connections").json();
        assert!(find_by(&per_vhost, "name", &name).is_some(), "{per_vhost}");

        // Its channels.
        let path = format!("/api/connections/{}/channels", enc(&name));
        let mut chans = Value::Null;
        let ok = wait_until(STATS, || {
            chans = polled(api.get(&path));
            chans.as_array().is_some_and(|l| {
                l.len() == 3
                    && l.iter()
                        .any(|c| c["number"] == 3 && c["messages_uncommitted"] == 1)
            })
        });
        assert!(ok, "{chans}");
        let chans = chans.as_array().expect("list");
        let c3 = chans.iter().find(|c| c["number"] == 3).expect("channel 3");
        assert_eq!(c3["transactional"], true);
        assert_eq!(c3["acks_uncommitted"], 0);
        let c1 = chans.iter().find(|c| c["number"] == 1).expect("channel 1");
        let c2 = chans.iter().find(|c| c["number"] == 2).expect("channel 2");
        assert_eq!(c1["name"], format!("{name} (1)"));
        assert_eq!(c1["connection_details"]["name"], name);
        assert_eq!(c1["connection_details"]["peer_port"], peer_port);
        assert_eq!(c1["connection_details"]["peer_host"], "127.0.0.1");
        assert_eq!((&c1["vhost"], &c1["user"]), (&"/".into(), &"guest".into()));
        assert_eq!(c1["prefetch_count"], 7);
        assert_eq!(c1["global_prefetch_count"], 0);
        assert_eq!(c1["consumer_count"], 1);
        assert_eq!(c1["messages_unacknowledged"], 0);
        assert_eq!(
            (&c1["confirm"], &c2["confirm"]),
            (&false.into(), &true.into())
        );
        assert_eq!(c1["transactional"], false);
        assert_eq!(c2["messages_unconfirmed"], 0);
        assert_eq!(c1["state"], "running");

        let all = api.get("/api/channels").json();
        assert!(find_by(&all, "name", &format!("{name} (2)")).is_some());
        let per_vhost = api.get("/api/vhosts/%2F/channels").json();
        assert!(find_by(&per_vhost, "name", &format!("{name} (1)")).is_some());
        let one = api.get(&format!("/api/channels/{}", enc(&format!("{name} (1)"))));
        assert_eq!(one.status, 200, "{}", one.body);
        let one = one.json();
        assert_eq!(one["number"], 1);
        assert_eq!(one["consumer_details"][0]["consumer_tag"], ctag.as_str());

        // The consumer.
        let mut cons = Value::Null;
        assert!(wait_until(STATS, || {
            cons = polled(api.get("/api/consumers"));
            find_by(&cons, "consumer_tag", &ctag).is_some()
        }));
        let k = find_by(&cons, "consumer_tag", &ctag).unwrap();
        assert_eq!(k["queue"]["name"], q.as_str());
        assert_eq!(k["queue"]["vhost"], "/");
        assert_eq!(k["ack_required"], true);
        assert_eq!(k["exclusive"], false);
        assert_eq!(k["prefetch_count"], 7);
        assert_eq!(k["channel_details"]["connection_name"], name);
        assert_eq!(k["channel_details"]["name"], format!("{name} (1)"));
        assert_eq!(k["channel_details"]["number"], 1);
        assert_eq!(k["channel_details"]["peer_port"], peer_port);
        assert_eq!(k["channel_details"]["user"], "guest");
        let per_vhost = api.get("/api/consumers/%2F").json();
        assert!(find_by(&per_vhost, "consumer_tag", &ctag).is_some());

        step("close", conn.close(200, "bye".into())).await.unwrap();
        // Gone from the list once closed.
        assert!(wait_until(STATS, || api
            .get(&format!("/api/connections/{}", enc(&name)))
            .status
            == 404));
    });
}

/// The values of a `_details` object's `samples` for a 60 s window in 5 s steps, after
/// checking their shape as RabbitMQ sends it: 13 `{"sample", "timestamp"}` objects,
/// newest first, 5 s apart on 5 s boundaries, beside `avg_rate` and `avg`. None while
/// they are missing.
fn window_samples(details: &Value) -> Option<Vec<u64>> {
    let s = details.get("samples")?.as_array()?;
    assert_eq!(s.len(), 13, "{details}");
    let ts: Vec<u64> = s.iter().filter_map(|x| x["timestamp"].as_u64()).collect();
    assert_eq!(ts.len(), 13, "{details}");
    assert!(ts.iter().all(|t| t % 5000 == 0), "{details}");
    assert!(ts.windows(2).all(|w| w[0] == w[1] + 5000), "{details}");
    assert!(
        details["avg_rate"].is_number() && details["avg"].is_number(),
        "{details}"
    );
    s.iter().map(|x| x["sample"].as_u64()).collect()
}

/// The newest sample of `details`, once there are samples.
fn newest(details: &Value) -> Option<u64> {
    window_samples(details).and_then(|s| s.first().copied())
}

/// A connection's and a channel's rates over the last minutes, as their pages chart
/// them: `GET /api/connections/{name}?data_rates_age=60&data_rates_incr=5` carries
/// `recv_oct_details.samples` and `send_oct_details.samples`, and
/// `GET /api/channels/{name}?msg_rates_age=60&msg_rates_incr=5` the samples of each
/// `message_stats` field, once a sample was taken after the traffic (every 5 s).
#[test]
fn a_connections_and_a_channels_rates_have_samples() {
    let b = Broker::start();
    let api = Api::new(&b);
    let tag = unique("cc-hist");
    block_on(async {
        let conn = named_connection(&b, &tag).await;
        let ch = step("channel", conn.create_channel()).await.unwrap();
        step(
            "confirm",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .unwrap();
        let q = unique("cc-histq");
        step(
            "declare",
            ch.queue_declare(
                q.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        for _ in 0..5 {
            step(
                "publish",
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    lapin::options::BasicPublishOptions::default(),
                    b"m",
                    lapin::BasicProperties::default(),
                ),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        let got = step(
            "get",
            ch.basic_get(
                q.as_str().into(),
                lapin::options::BasicGetOptions::default(),
            ),
        )
        .await
        .unwrap()
        .expect("a message");
        step(
            "ack",
            got.delivery.ack(lapin::options::BasicAckOptions::default()),
        )
        .await
        .unwrap();

        let name = wait_conn(&api, &tag, |_| true)["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let path = format!(
            "/api/connections/{}?data_rates_age=60&data_rates_incr=5",
            enc(&name)
        );
        let mut c = Value::Null;
        let ok = wait_until(STATS, || {
            c = polled(api.get(&path));
            ["recv_oct", "send_oct"]
                .iter()
                .all(|k| newest(&c[format!("{k}_details")]).is_some_and(|n| n > 0))
        });
        assert!(ok, "no samples of the connection's bytes: {c}");
        assert!(c["recv_oct_details"]["rate"].is_number(), "{c}");

        let path = format!(
            "/api/channels/{}?msg_rates_age=60&msg_rates_incr=5",
            enc(&format!("{name} (1)"))
        );
        let mut chan = Value::Null;
        let want = [
            ("publish", 5),
            ("confirm", 5),
            ("deliver_get", 1),
            ("get", 1),
            ("ack", 1),
        ];
        let ok = wait_until(STATS, || {
            chan = polled(api.get(&path));
            want.iter()
                .all(|(k, n)| newest(&chan["message_stats"][format!("{k}_details")]) == Some(*n))
        });
        assert!(ok, "no samples of the channel's counters: {chan}");
        // RabbitMQ's other channel fields carry samples too (zero here).
        for k in [
            "redeliver",
            "deliver",
            "deliver_no_ack",
            "get_no_ack",
            "get_empty",
        ] {
            assert_eq!(
                newest(&chan["message_stats"][format!("{k}_details")]),
                Some(0),
                "{k}: {chan}"
            );
        }
        for k in ["return_unroutable", "drop_unroutable"] {
            assert_eq!(
                newest(&chan["message_stats"][format!("{k}_details")]),
                Some(0),
                "{k}: {chan}"
            );
        }

        // Without the window parameters: rates only.
        let plain = polled(api.get(&format!("/api/connections/{}", enc(&name))));
        assert!(plain["recv_oct_details"]["samples"].is_null(), "{plain}");
        assert!(plain["recv_oct_details"]["rate"].is_number(), "{plain}");
        step("close", conn.close(200, "bye".into())).await.unwrap();
    });
}

#[test]
fn missing_names_are_404_and_wrong_methods_405() {
    let b = Broker::start();
    let api = Api::new(&b);
    let missing = "127.0.0.1:1 -> 127.0.0.1:2";
    for path in [
        format!("/api/connections/{}", enc(missing)),
        // (RabbitMQ answers `/api/connections/{missing}/channels` with a 500 crash
        // report; Warren's 404 is not asserted here.)
        format!("/api/channels/{}", enc(&format!("{missing} (1)"))),
        "/api/channels/nosuch".to_owned(),
        "/api/consumers/no-such-vhost".to_owned(),
        "/api/vhosts/no-such-vhost/connections".to_owned(),
        "/api/vhosts/no-such-vhost/channels".to_owned(),
    ] {
        let r = api.get(&path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "Object Not Found", "reason": "Not Found"})
        );
    }
    let r = api.delete(&format!("/api/connections/{}", enc(missing)));
    assert_eq!(r.status, 404, "{}", r.body);
    for (method, path) in [
        ("POST", "/api/connections"),
        ("PUT", "/api/connections/x"),
        ("DELETE", "/api/channels/x"),
        ("DELETE", "/api/consumers"),
        ("POST", "/api/channels"),
    ] {
        let r = api.request(method, path, None, &[]);
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
    }
}

/// Closes our connection through the API (with `reason` as `X-Reason`, if any) and
/// returns the (code, text) the lapin client got.
fn close_via_api(b: &Broker, api: &Api, reason: Option<&str>) -> (u16, String) {
    let tag = unique("cc-close");
    block_on(async {
        let conn = named_connection(b, &tag).await;
        let mut events = conn.events_listener();
        let c = wait_conn(api, &tag, |c| c["state"] == "running");
        let name = c["name"].as_str().expect("name").to_owned();
        let headers: Vec<(&str, &str)> = reason.map(|r| ("X-Reason", r)).into_iter().collect();
        let r = api.request(
            "DELETE",
            &format!("/api/connections/{}", enc(&name)),
            None,
            &headers,
        );
        assert_eq!(r.status, 204, "{}", r.body);
        let err = within("the close reaches lapin", Duration::from_secs(10), async {
            loop {
                match events.next().await {
                    Some(lapin::Event::Error(e)) => break e,
                    Some(_) => continue,
                    None => panic!("event stream ended without an error"),
                }
            }
        })
        .await;
        assert!(!conn.status().connected());
        assert!(wait_until(STATS, || api
            .get(&format!("/api/connections/{}", enc(&name)))
            .status
            == 404));
        support::amqp_error(&err).unwrap_or_else(|| panic!("not an AMQP close: {err:?}"))
    })
}

#[test]
fn delete_closes_the_connection_with_320_and_the_x_reason_text() {
    let b = Broker::start();
    let api = Api::new(&b);
    assert_eq!(
        close_via_api(&b, &api, Some("maintenance window")),
        (320, "CONNECTION_FORCED - maintenance window".to_owned())
    );
    assert_eq!(
        close_via_api(&b, &api, None),
        (
            320,
            "CONNECTION_FORCED - Closed via management plugin".to_owned()
        )
    );
}
