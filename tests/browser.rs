//! The web dashboard in a real headless browser (issue 10): Debian's Chromium driven through
//! chromedriver (tests/support/browser.rs) against a real `warren` process, next to real AMQP
//! clients (lapin).
//!
//! The story: log in; see the overview's totals and a message-rate chart that moves while a
//! publisher runs; find one queue by filter among 10,000; see its message count change; purge
//! it, publish a message and get it back from its page; see a connection's and a channel's
//! charts on their pages and close the connection; see an exchange's chart; export and import
//! definitions; delete the queue. Each page is saved as a PNG under `target/screenshots/`.
//!
//! In external mode (`WARREN_TEST_PORT`, `WARREN_TEST_HTTP_PORT`) the same story runs against
//! that broker's dashboard; every object it makes has a unique name and is removed again.

mod support;

#[path = "support/browser.rs"]
mod browser;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use browser::Browser;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use support::{unique, Broker};

/// Long enough for two 5 s refreshes and the server's 5 s statistics interval.
const UI: Duration = Duration::from_secs(40);
const FILLERS: usize = 10_000;

/// Logs in as guest and waits for the overview.
fn login(b: &Browser, http: &str) {
    b.goto(&format!("{http}/"));
    b.type_into("#login-username", "guest");
    b.type_into("#login-password", "guest");
    b.click("#login-submit");
    b.wait_find("#page-overview", UI);
}

/// Reads a number shown with thousands separators ("10,001").
fn shown_number(s: Option<String>) -> Option<f64> {
    s.and_then(|t| t.replace(',', "").trim().parse().ok())
}

/// Deletes what the story made through the HTTP API, even when it fails half-way (the filler
/// queues are exclusive: they go with their connection).
struct Cleanup {
    http: String,
    queues: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for q in &self.queues {
            let _ = ureq::delete(&format!("{}/api/queues/%2F/{}", self.http, q))
                .set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
                .timeout(Duration::from_secs(10))
                .call();
        }
    }
}

fn api_get(http: &str, path: &str) -> Result<serde_json::Value, u16> {
    match ureq::get(&format!("{http}/api{path}"))
        .set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        .timeout(Duration::from_secs(10))
        .call()
    {
        Ok(r) => r.into_json().map_err(|_| 0),
        Err(ureq::Error::Status(code, _)) => Err(code),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

async fn declare(ch: &lapin::Channel, name: &str, exclusive: bool) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            exclusive,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("declare {name}: {e}"));
}

#[test]
fn dashboard_story() {
    browser::require_installed();
    let broker = Broker::start();
    let http = broker.http_url();
    let own = !broker.is_external();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let prefix = unique("dash");
    let target = format!("{prefix}-target");
    let imported = format!("{prefix}-imported");
    let _cleanup = Cleanup {
        http: http.clone(),
        queues: vec![target.clone(), imported.clone()],
    };

    // 10,000 exclusive filler queues (pipelined on 8 channels) and the one we will look for.
    let fillers = rt.block_on(async {
        let conn = Connection::connect(&broker.uri(), ConnectionProperties::default())
            .await
            .expect("connect (fillers)");
        let mut set = tokio::task::JoinSet::new();
        for lane in 0..8 {
            let ch = conn.create_channel().await.expect("channel");
            let prefix = prefix.clone();
            set.spawn(async move {
                for i in (lane..FILLERS).step_by(8) {
                    declare(&ch, &format!("{prefix}-filler-{i:05}"), true).await;
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("filler task");
        }
        let ch = conn.create_channel().await.expect("channel");
        declare(&ch, &target, false).await;
        conn
    });

    let b = Browser::start();

    // Login: an unauthenticated visit lands on the login page; a wrong password is refused.
    b.goto(&format!("{http}/"));
    b.wait_find("#login-username", UI);
    b.screenshot("login");
    b.type_into("#login-username", "guest");
    b.type_into("#login-password", "not-the-password");
    b.click("#login-submit");
    b.wait("the login error", UI, |b| {
        b.text("#login-error").is_some_and(|t| t.contains("failed"))
    });
    b.type_into("#login-password", "guest");
    b.click("#login-submit");

    // Overview: totals, node and listeners.
    b.wait_find("#page-overview", UI);
    b.wait("the queue total", UI, |b| {
        shown_number(b.text("#total-queues")).is_some_and(|n| n >= (FILLERS + 1) as f64)
    });
    if own {
        assert_eq!(
            shown_number(b.text("#total-queues")),
            Some((FILLERS + 1) as f64)
        );
    }
    b.wait("an AMQP listener row", UI, |b| {
        b.count("#listeners-rows tr[data-protocol='amqp']") >= 1
    });
    assert_eq!(b.attr("#alarms", "data-alarms").as_deref(), Some("0"));

    // The rate chart is flat before the publisher (on our own broker), and moves once it runs.
    b.wait("the rate chart's first data", UI, |b| {
        b.attr("#chart-rates", "data-draws")
            .is_some_and(|d| d != "0")
    });
    if own {
        assert_eq!(
            b.attr("#chart-rates", "data-max-publish").as_deref(),
            Some("0"),
            "nothing was published yet"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (uri, queue, stop, published) = (
            broker.uri(),
            target.clone(),
            stop.clone(),
            published.clone(),
        );
        rt.spawn(async move {
            let conn = Connection::connect(&uri, ConnectionProperties::default())
                .await
                .expect("connect (publisher)");
            let ch = conn.create_channel().await.expect("channel");
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirm_select");
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    ch.basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        b"from the publisher",
                        BasicProperties::default(),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
                    published.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = conn.close(200, "done".into()).await;
        })
    };
    // The newest point, not the maximum: the chart must show the publisher now, not some
    // earlier traffic of a shared external broker.
    b.wait("the publish rate to show on the chart", UI, |b| {
        b.attr("#chart-rates", "data-last-publish")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    });
    b.wait("the confirm rate to show on the chart", UI, |b| {
        b.attr("#chart-rates", "data-last-confirm")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    });
    b.screenshot("overview");

    // Queues: the filter finds all 10,001 of ours, pages them, and then just the one.
    b.click("#nav-queues");
    b.wait_find("#queues-table[data-loaded='1']", UI);
    b.type_into("#queues-filter", &prefix);
    b.wait("the prefix filter", UI, |b| {
        b.attr("#queues-table", "data-filter").as_deref() == Some(prefix.as_str())
    });
    assert_eq!(
        b.attr("#queues-table", "data-filtered-count"),
        Some((FILLERS + 1).to_string())
    );
    assert_eq!(
        b.count("#queues-rows tr[data-name]"),
        100,
        "one page of 100"
    );
    b.screenshot("queues-filtered");
    b.type_into("#queues-filter", &target);
    let row = format!("#queues-rows tr[data-name='{target}']");
    b.wait("the target queue alone in the list", UI, |b| {
        b.attr("#queues-table", "data-filter").as_deref() == Some(target.as_str())
            && b.count("#queues-rows tr[data-name]") == 1
            && b.count(&row) == 1
    });
    assert_eq!(
        b.attr("#queues-table", "data-filtered-count").as_deref(),
        Some("1")
    );
    // Its message count grows while the publisher runs (the list refreshes every 5 s).
    let cell = format!("{row} td[data-col='messages']");
    b.wait("a message count on the row", UI, |b| {
        shown_number(b.text(&cell)).is_some_and(|n| n > 0.0)
    });
    let first = shown_number(b.text(&cell)).unwrap_or(0.0);
    b.wait("the row's message count to change", UI, |b| {
        shown_number(b.text(&cell)).is_some_and(|n| n > first)
    });
    b.screenshot("queues");

    // The queue's page: stop the publisher, see its final count, purge.
    b.click(&format!("{row} td[data-col='name'] a"));
    b.wait_find("#page-queue", UI);
    stop.store(true, Ordering::SeqCst);
    rt.block_on(publisher).expect("publisher task");
    let total = published.load(Ordering::SeqCst);
    assert!(total > 0);
    b.wait("the page to show every published message", UI, |b| {
        b.attr("#q-messages", "data-value") == Some(total.to_string())
    });
    b.click("#q-purge");
    b.wait("the purge button to arm", UI, |b| {
        b.attr("#q-purge", "data-armed").as_deref() == Some("1")
    });
    b.click("#q-purge");
    b.wait("the queue to be empty after the purge", UI, |b| {
        b.attr("#q-messages", "data-value").as_deref() == Some("0")
    });
    let depth =
        |name: &str| api_get(&http, &format!("/queues/%2F/{name}")).map(|q| q["messages"].as_u64());
    assert!(support::wait_until(UI, || depth(&target) == Ok(Some(0))));

    // Publish from the page, then get the message back (acknowledged: it leaves the queue).
    let payload = format!("hello from the dashboard {prefix}");
    b.type_into("#q-publish-payload", &payload);
    b.click("#q-publish-submit");
    b.wait("the publish result", UI, |b| {
        b.attr("#q-publish-result", "data-routed").as_deref() == Some("true")
    });
    b.wait("the queue to hold the published message", UI, |b| {
        b.attr("#q-messages", "data-value").as_deref() == Some("1")
    });
    b.js(
        "document.getElementById('q-get-ackmode').value = 'ack_requeue_false';",
        json!([]),
    );
    b.click("#q-get-submit");
    b.wait("the got message", UI, |b| {
        b.attr("#q-get-result", "data-count").as_deref() == Some("1")
    });
    assert_eq!(
        b.attr("#q-get-result .message", "data-payload"),
        Some(payload.clone())
    );
    b.wait("the queue to be empty after the get", UI, |b| {
        b.attr("#q-messages", "data-value").as_deref() == Some("0")
    });
    b.js("window.scrollTo(0, 0);", json!([]));
    b.screenshot("queue");
    b.js(
        "document.getElementById('q-get-form').scrollIntoView();",
        json!([]),
    );
    b.screenshot("queue-get");

    // Connections: the one we name has a page with its data rates and a channel, whose page
    // charts its publishes (unroutable ones: no queue changes); then it is closed from its row.
    let client_name = format!("{prefix}-victim");
    // (The channel is kept: lapin closes a channel it drops.)
    let (victim, _victim_channel) = rt.block_on(async {
        let c = Connection::connect(
            &broker.uri(),
            ConnectionProperties::default().with_connection_name(client_name.as_str().into()),
        )
        .await
        .expect("connect (victim)");
        let ch = c.create_channel().await.expect("channel (victim)");
        for _ in 0..3 {
            ch.basic_publish(
                "".into(),
                format!("{prefix}-nowhere").as_str().into(),
                BasicPublishOptions::default(),
                b"unroutable",
                BasicProperties::default(),
            )
            .await
            .expect("publish (victim)");
        }
        (c, ch)
    });
    b.click("#nav-connections");
    let vrow = format!("#connections-rows tr[data-user-provided-name='{client_name}']");
    b.wait("the named connection's row", UI, |b| b.count(&vrow) == 1);
    b.screenshot("connections");
    b.click(&format!("{vrow} td[data-col='name'] a"));
    b.wait_find("#page-connection", UI);
    b.wait("the connection's data rates on its chart", UI, |b| {
        b.attr("#c-chart-data", "data-max-recv-oct")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    });
    b.screenshot("connection");
    b.wait("the connection's channel", UI, |b| {
        b.count("#c-channels-rows tr[data-number='1']") == 1
    });
    b.click("#c-channels-rows tr[data-number='1'] a");
    b.wait_find("#page-channel", UI);
    b.wait("the channel's publish rate on its chart", UI, |b| {
        b.attr("#ch-chart-rates", "data-max-publish")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    });
    b.screenshot("channel");
    b.click("#nav-connections");
    b.wait("the named connection's row", UI, |b| b.count(&vrow) == 1);
    let close = format!("{vrow} button[data-action='close']");
    b.click(&close);
    b.wait("the close button to arm", UI, |b| {
        b.attr(&close, "data-armed").as_deref() == Some("1")
    });
    b.click(&close);
    b.wait("the connection's row to go", UI, |b| b.count(&vrow) == 0);
    assert!(
        support::wait_until(UI, || !victim.status().connected()),
        "the client saw its connection closed"
    );

    // Channels and exchanges are listed.
    b.click("#nav-channels");
    b.wait_find("#channels-table[data-loaded='1']", UI);
    b.screenshot("channels");
    b.click("#nav-exchanges");
    b.wait_find("#exchanges-table[data-loaded='1']", UI);
    b.type_into("#exchanges-filter", "amq.direct");
    b.wait("amq.direct in the list", UI, |b| {
        b.count("#exchanges-rows tr[data-name='amq.direct']") == 1
    });
    b.screenshot("exchanges");

    // An exchange's page: bind our queue to amq.direct, publish through it.
    b.click("#exchanges-rows tr[data-name='amq.direct'] td[data-col='name'] a");
    b.wait_find("#page-exchange[data-name='amq.direct']", UI);
    b.type_into("#x-bind-dest", &target);
    b.type_into("#x-bind-rk", "dash-key");
    b.click("#x-bind-submit");
    let brow = format!(
        "#x-bindings-source-rows tr[data-destination='{target}'][data-routing-key='dash-key']"
    );
    b.wait("the new binding's row", UI, |b| b.count(&brow) == 1);
    b.type_into("#x-publish-rk", "dash-key");
    b.type_into("#x-publish-payload", "through amq.direct");
    b.click("#x-publish-submit");
    b.wait("the exchange publish result", UI, |b| {
        b.attr("#x-publish-result", "data-routed").as_deref() == Some("true")
    });
    assert!(
        support::wait_until(UI, || depth(&target) == Ok(Some(1))),
        "the message routed through amq.direct is in the queue"
    );
    b.wait("the exchange's rate on its chart", UI, |b| {
        b.attr("#x-chart-rates", "data-max-publish-in")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)
    });
    b.screenshot("exchange");

    // Definitions: export counts our queue; import declares a new one.
    b.click("#nav-definitions");
    b.click("#defs-export");
    b.wait("the export summary", UI, |b| {
        b.attr("#defs-summary", "data-queues")
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n >= 1)
    });
    let defs = json!({
        "queues": [{"name": imported, "vhost": "/", "durable": true, "auto_delete": false,
                    "arguments": {}}]
    });
    b.js(
        "document.getElementById('defs-text').value = arguments[0];",
        json!([defs.to_string()]),
    );
    b.click("#defs-import");
    b.wait("the import result", UI, |b| {
        b.attr("#defs-import-result", "data-ok").as_deref() == Some("true")
    });
    assert!(depth(&imported).is_ok(), "the imported queue exists");
    b.screenshot("definitions");

    // Finally delete the queue from its page.
    b.goto(&format!("{http}/#/queues/%2F/{target}"));
    b.wait_find("#page-queue", UI);
    b.click("#q-delete");
    b.wait("the delete button to arm", UI, |b| {
        b.attr("#q-delete", "data-armed").as_deref() == Some("1")
    });
    b.click("#q-delete");
    b.wait_find("#page-queues", UI);
    assert_eq!(depth(&target), Err(404), "the queue is gone");

    drop(b);
    rt.block_on(async {
        let _ = fillers.close(200, "done".into()).await;
    });
}

/// One raw HTTP/1.1 GET (no client-side path normalisation, unlike a URL library): the status
/// code and the body.
fn raw_get(http: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = http.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The dashboard's three files are served (no login needed: they hold no data) with their
/// types, and nothing else is: no path reaches the disk.
#[test]
fn dashboard_files_and_nothing_else() {
    let broker = Broker::start();
    if broker.is_external() {
        println!("skipped: checks Warren's own embedded files");
        return;
    }
    let http = broker.http_url();
    for (path, ctype, needle) in [
        ("/", "text/html", "app.js"),
        ("/index.html", "text/html", "app.js"),
        ("/app.js", "text/javascript", "function route()"),
        ("/app.css", "text/css", "--accent"),
    ] {
        let r = ureq::get(&format!("{http}{path}"))
            .timeout(Duration::from_secs(10))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with(ctype)),
            "{path}: {:?}",
            r.header("content-type")
        );
        let body = r.into_string().expect("body");
        assert!(body.contains(needle), "{path} holds {needle:?}");
    }
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "/static/app.js",
        "/src/http/static/app.js",
        "//etc/passwd",
        "/../../../../etc/passwd",
        "/app.js/..",
    ] {
        let (status, body) = raw_get(&http, path);
        assert_eq!(status, 404, "{path} answered {status}: {body:.200}");
        assert!(!body.contains("[package]") && !body.contains("root:"));
    }
}

/// API calls as guest for the admin story: status and JSON body (Null when none).
fn api_call(
    http: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let req = ureq::request(method, &format!("{http}/api{path}"))
        .set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        .timeout(Duration::from_secs(10));
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Deletes the admin story's user and vhost even when it fails half-way.
struct AdminCleanup {
    http: String,
    user: String,
    vhost: String,
}

impl Drop for AdminCleanup {
    fn drop(&mut self) {
        let enc = support::api::enc;
        api_call(
            &self.http,
            "DELETE",
            &format!("/users/{}", enc(&self.user)),
            None,
        );
        api_call(
            &self.http,
            "DELETE",
            &format!("/vhosts/{}", enc(&self.vhost)),
            None,
        );
    }
}

/// Issue 11's admin pages: add a user (password and tags) and a vhost (description, limits)
/// through the pages, give the user permissions, a topic permission and a limit there, check
/// each through the API (and the password by logging in with it), then delete both from
/// their pages. Screens are saved as target/screenshots/admin-*.png.
#[test]
fn admin_pages_manage_users_vhosts_and_permissions() {
    browser::require_installed();
    let broker = Broker::start();
    let http = broker.http_url();
    let enc = support::api::enc;
    let user = unique("dash-admin-u");
    let vhost = unique("dash-admin-v");
    let _cleanup = AdminCleanup {
        http: http.clone(),
        user: user.clone(),
        vhost: vhost.clone(),
    };

    let b = Browser::start();
    login(&b, &http);

    // Users: add one with a password and a tag.
    b.click("#nav-admin");
    b.wait_find("#users-table[data-loaded='1']", UI);
    b.type_into("#add-user-name", &user);
    b.type_into("#add-user-password", "s3cret-pw");
    b.type_into("#add-user-tags", "monitoring");
    b.click("#add-user-submit");
    b.wait("the user added", UI, |b| {
        b.attr("#add-user-result", "data-ok").as_deref() == Some("true")
    });
    let row = format!("#users-table-rows tr[data-name='{user}']");
    b.wait("the new user's row", UI, |b| b.count(&row) == 1);
    assert_eq!(
        b.text(&format!("{row} td[data-col='tags']")).as_deref(),
        Some("monitoring")
    );
    b.screenshot("admin-users");
    let (status, u) = api_call(&http, "GET", &format!("/users/{}", enc(&user)), None);
    assert_eq!(status, 200, "{u}");
    assert_eq!(u["tags"], json!(["monitoring"]), "{u}");
    // The password is the one typed: the user can log in to the API with it.
    let whoami = ureq::get(&format!("{http}/api/whoami"))
        .set(
            "Authorization",
            &format!(
                "Basic {}",
                support::api::base64(format!("{user}:s3cret-pw").as_bytes())
            ),
        )
        .timeout(Duration::from_secs(10))
        .call();
    assert!(whoami.is_ok(), "logging in as {user}: {whoami:?}");

    // Vhosts: add one with a description.
    b.click("#admin-tab-vhosts");
    b.wait_find("#vhosts-table[data-loaded='1']", UI);
    b.type_into("#add-vhost-name", &vhost);
    b.type_into("#add-vhost-description", "made by the admin page");
    b.click("#add-vhost-submit");
    b.wait("the vhost added", UI, |b| {
        b.attr("#add-vhost-result", "data-ok").as_deref() == Some("true")
    });
    let vrow = format!("#vhosts-table-rows tr[data-name='{vhost}']");
    b.wait("the new vhost's row", UI, |b| b.count(&vrow) == 1);
    b.screenshot("admin-vhosts");
    let (status, v) = api_call(&http, "GET", &format!("/vhosts/{}", enc(&vhost)), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["description"], "made by the admin page", "{v}");

    // The vhost's page: permissions for the new user, and a connection limit.
    b.click(&format!("{vrow} td[data-col='name'] a"));
    b.wait_find("#page-vhost", UI);
    b.wait("the user in the permission form", UI, |b| {
        b.count(&format!("#vhost-perm-user option[value='{user}']")) == 1
    });
    b.js(
        "const s = document.getElementById('vhost-perm-user'); s.value = arguments[0];",
        json!([user]),
    );
    b.type_into("#vhost-perm-configure", "^app\\.");
    b.type_into("#vhost-perm-write", ".*");
    b.type_into("#vhost-perm-read", "");
    b.click("#vhost-perm-submit");
    let prow = format!("#vhost-perms-rows tr[data-user='{user}']");
    b.wait("the user's permission row", UI, |b| b.count(&prow) == 1);
    b.type_into("#vhost-limit-max-connections", "7");
    b.click("#vhost-limits-form-submit");
    b.wait("the vhost limit shown", UI, |b| {
        b.text("#vhost-limits")
            .is_some_and(|t| t.contains("max-connections: 7"))
    });
    b.screenshot("admin-vhost");
    let (status, p) = api_call(
        &http,
        "GET",
        &format!("/permissions/{}/{}", enc(&vhost), enc(&user)),
        None,
    );
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (&p["configure"], &p["write"], &p["read"]),
        (&json!("^app\\."), &json!(".*"), &json!("")),
        "{p}"
    );
    let (_, l) = api_call(
        &http,
        "GET",
        &format!("/vhost-limits/{}", enc(&vhost)),
        None,
    );
    assert_eq!(
        l,
        json!([{"vhost": vhost, "value": {"max-connections": 7}}])
    );

    // The user's page: a topic permission in that vhost and a channel limit.
    b.click(&format!("{prow} td[data-col='user'] a"));
    b.wait_find("#page-user", UI);
    b.wait("the vhost in the topic form", UI, |b| {
        b.count(&format!("#set-topic-vhost option[value='{vhost}']")) == 1
    });
    b.js(
        "document.getElementById('set-topic-vhost').value = arguments[0];",
        json!([vhost]),
    );
    b.type_into("#set-topic-write", "^orders\\.");
    b.type_into("#set-topic-read", ".*");
    b.click("#set-topic-submit");
    let trow =
        format!("#user-topic-perms-rows tr[data-vhost='{vhost}'][data-exchange='amq.topic']");
    b.wait("the topic permission row", UI, |b| b.count(&trow) == 1);
    b.type_into("#user-limit-max-channels", "3");
    b.click("#user-limits-form-submit");
    b.wait("the user limit shown", UI, |b| {
        b.text("#user-limits")
            .is_some_and(|t| t.contains("max-channels: 3"))
    });
    assert!(
        b.count(&format!("#user-perms-rows tr[data-vhost='{vhost}']")) == 1,
        "the vhost's permission on the user's page: {}",
        b.page_summary()
    );
    b.js("window.scrollTo(0, 0);", json!([]));
    b.screenshot("admin-user");
    let (status, t) = api_call(
        &http,
        "GET",
        &format!("/topic-permissions/{}/{}", enc(&vhost), enc(&user)),
        None,
    );
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        t,
        json!([{"user": user, "vhost": vhost, "exchange": "amq.topic", "write": "^orders\\.", "read": ".*"}])
    );
    let (_, l) = api_call(&http, "GET", &format!("/user-limits/{}", enc(&user)), None);
    assert_eq!(l, json!([{"user": user, "value": {"max-channels": 3}}]));

    // Updating the tags keeps the password.
    b.type_into("#update-user-tags", "management");
    b.click("#update-user-submit");
    b.wait("the tags updated", UI, |b| {
        b.text("#user-tags").as_deref() == Some("management")
    });
    let again = ureq::get(&format!("{http}/api/whoami"))
        .set(
            "Authorization",
            &format!(
                "Basic {}",
                support::api::base64(format!("{user}:s3cret-pw").as_bytes())
            ),
        )
        .timeout(Duration::from_secs(10))
        .call();
    assert!(again.is_ok(), "the password after a tag change: {again:?}");

    // That user (management only) logs in: no Admin tab, and the admin page's refusal is
    // an error on the page, not a logout.
    b.click("#logout");
    b.wait_find("#login-username", UI);
    b.type_into("#login-username", &user);
    b.type_into("#login-password", "s3cret-pw");
    b.click("#login-submit");
    b.wait_find("#page-overview", UI);
    assert!(
        b.attr("#nav-admin", "hidden").is_some(),
        "the Admin tab shown to a management user"
    );
    b.goto(&format!("{http}/#/admin"));
    b.wait("the refusal shown", UI, |b| {
        b.text("#status")
            .is_some_and(|t| t.contains("Not administrator user"))
    });
    assert_eq!(b.text("#whoami").as_deref(), Some(user.as_str()));
    assert!(b.find("#login-form").is_none(), "{}", b.page_summary());
    b.screenshot("admin-refused");
    b.click("#logout");
    b.wait_find("#login-username", UI);
    b.type_into("#login-username", "guest");
    b.type_into("#login-password", "guest");
    b.click("#login-submit");
    b.wait_find("#page-overview", UI);
    assert!(
        b.attr("#nav-admin", "hidden").is_none(),
        "no Admin tab for guest"
    );
    b.goto(&format!("{http}/#/admin/users/{}", enc(&user)));
    b.wait_find("#page-user", UI);

    // Delete the user, then the vhost, each behind a second click.
    b.click("#delete-user");
    b.wait("the delete button to arm", UI, |b| {
        b.attr("#delete-user", "data-armed").as_deref() == Some("1")
    });
    b.click("#delete-user");
    b.wait_find("#users-table[data-loaded='1']", UI);
    b.wait("the user's row to go", UI, |b| b.count(&row) == 0);
    assert_eq!(
        api_call(&http, "GET", &format!("/users/{}", enc(&user)), None).0,
        404
    );
    b.goto(&format!("{http}/#/admin/vhosts/{}", enc(&vhost)));
    b.wait_find("#page-vhost", UI);
    b.click("#delete-vhost");
    b.wait("the delete button to arm", UI, |b| {
        b.attr("#delete-vhost", "data-armed").as_deref() == Some("1")
    });
    b.click("#delete-vhost");
    b.wait_find("#vhosts-table[data-loaded='1']", UI);
    b.wait("the vhost's row to go", UI, |b| b.count(&vrow) == 0);
    assert_eq!(
        api_call(&http, "GET", &format!("/vhosts/{}", enc(&vhost)), None).0,
        404
    );
}

/// Issue 12 in the dashboard: the add-queue form declares a quorum queue with arguments
/// picked from its "Add:" links (typed values: integers stay integers), and the queue
/// list shows RabbitMQ's feature abbreviations for them, with the values on hover; a
/// value that is not an integer is refused in the page, before any request.
#[test]
fn queue_form_declares_arguments_and_the_list_shows_their_features() {
    browser::require_installed();
    let broker = Broker::start();
    let http = broker.http_url();
    let q = unique("dash-features");
    let _cleanup = Cleanup {
        http: http.clone(),
        queues: vec![q.clone()],
    };
    let b = Browser::start();
    login(&b, &http);
    b.click("#nav-queues");
    b.wait_find("#queues-table[data-loaded='1']", UI);

    b.type_into("#add-queue-name", &q);
    b.js(
        "const s = document.getElementById('add-queue-type'); s.value = 'quorum'; \
         s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    assert!(
        b.attr("#add-queue-durable", "disabled").is_some(),
        "a quorum queue is always durable"
    );
    // Message TTL from its link into the first row; then a bad value is refused.
    b.click("#add-queue-args-known a[data-arg='x-message-ttl']");
    b.type_into("#add-queue-args-value-0", "sixty");
    b.click("#add-queue-submit");
    b.wait("the refusal of a non-integer", UI, |b| {
        b.text("#status")
            .is_some_and(|t| t.contains("is not an integer"))
    });
    b.type_into("#add-queue-args-value-0", "60000");
    b.click("#add-queue-args-known a[data-arg='x-delivery-limit']");
    b.type_into("#add-queue-args-value-1", "3");
    b.click("#add-queue-args-known a[data-arg='x-dead-letter-exchange']");
    b.type_into("#add-queue-args-value-2", "amq.fanout");
    b.click("#add-queue-submit");

    let got = support::wait_until(UI, || api_get(&http, &format!("/queues/%2F/{q}")).is_ok());
    assert!(got, "the form did not declare {q}");
    let info = api_get(&http, &format!("/queues/%2F/{q}")).expect("the queue");
    assert_eq!(info["type"], json!("quorum"), "{info}");
    assert_eq!(info["durable"], json!(true), "{info}");
    assert_eq!(
        info["arguments"],
        json!({
            "x-queue-type": "quorum",
            "x-message-ttl": 60000,
            "x-delivery-limit": 3,
            "x-dead-letter-exchange": "amq.fanout",
        }),
        "{info}"
    );

    b.type_into("#queues-filter", &q);
    let cell = format!("#queues-rows tr[data-name='{q}'] td[data-col='features'] span");
    b.wait("the new queue's features", UI, |b| b.count(&cell) == 1);
    assert_eq!(
        b.attr(&cell, "data-features").as_deref(),
        Some("D TTL DlL DLX")
    );
    assert_eq!(
        b.attr(&format!("{cell} abbr:nth-of-type(2)"), "title")
            .as_deref(),
        Some("x-message-ttl: 60000")
    );
    b.screenshot("queues-features");
}

/// Deletes the policies story's policies even when it fails half-way.
struct PolicyCleanup {
    http: String,
    name: String,
}

impl Drop for PolicyCleanup {
    fn drop(&mut self) {
        for kind in ["policies", "operator-policies"] {
            api_call(
                &self.http,
                "DELETE",
                &format!("/{kind}/%2F/{}", self.name),
                None,
            );
        }
    }
}

/// Issue 12's Admin > Policies page: add a policy and an operator policy from the form,
/// see them in their tables and through the API, then delete both from their rows.
#[test]
fn admin_policies_page_adds_lists_and_deletes() {
    if support::is_external() {
        // The page is Warren's dashboard; RabbitMQ's has its own.
        println!("skipped: Warren's dashboard (WARREN_TEST_PORT is set)");
        return;
    }
    browser::require_installed();
    let broker = Broker::start();
    let http = broker.http_url();
    let name = unique("dash-pol");
    let _cleanup = PolicyCleanup {
        http: http.clone(),
        name: name.clone(),
    };
    let b = Browser::start();
    login(&b, &http);
    b.click("#nav-admin");
    b.wait_find("#users-table[data-loaded='1']", UI);
    b.click("#admin-tab-policies");
    b.wait_find("#policies-table[data-loaded='1']", UI);
    b.wait("the vhost in the form", UI, |b| {
        b.count("#add-policy-vhost option[value='/']") == 1
    });

    b.type_into("#add-policy-name", &name);
    b.type_into("#add-policy-pattern", &format!("^{name}$"));
    b.type_into("#add-policy-definition", r#"{"message-ttl": 60000}"#);
    b.js(
        "document.getElementById('add-policy-apply-to').value = 'queues'; \
         document.getElementById('add-policy-priority').value = '2';",
        json!([]),
    );
    b.click("#add-policy-submit");
    b.wait("the policy added", UI, |b| {
        b.attr("#add-policy-result", "data-ok").as_deref() == Some("true")
    });
    let row = format!("#policies-table-rows tr[data-name='{name}']");
    b.wait("the policy's row", UI, |b| b.count(&row) == 1);
    assert_eq!(
        b.text(&format!("{row} td[data-col='definition']"))
            .as_deref(),
        Some(r#"{"message-ttl":60000}"#)
    );
    let (status, p) = api_call(&http, "GET", &format!("/policies/%2F/{name}"), None);
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p,
        json!({"vhost": "/", "name": name, "pattern": format!("^{name}$"), "apply-to": "queues",
               "definition": {"message-ttl": 60000}, "priority": 2})
    );

    // A bad definition is refused with RabbitMQ's reason in the form.
    b.js(
        "document.getElementById('add-policy-definition').value = '{\"message-ttl\": -1}';",
        json!([]),
    );
    b.click("#add-policy-submit");
    b.wait("the refusal shown", UI, |b| {
        b.attr("#add-policy-result", "data-ok").as_deref() == Some("false")
            && b.text("#add-policy-result")
                .is_some_and(|t| t.contains("not a valid message TTL"))
    });

    // An operator policy, in its own table.
    b.js(
        "document.getElementById('add-policy-kind').value = 'operator-policies'; \
         document.getElementById('add-policy-definition').value = '{\"max-length\": 5}';",
        json!([]),
    );
    b.click("#add-policy-submit");
    let orow = format!("#operator-policies-table-rows tr[data-name='{name}']");
    b.wait("the operator policy's row", UI, |b| b.count(&orow) == 1);
    b.screenshot("admin-policies");
    let (status, _) = api_call(
        &http,
        "GET",
        &format!("/operator-policies/%2F/{name}"),
        None,
    );
    assert_eq!(status, 200);

    // Delete both (a delete button asks for a second click).
    for r in [&row, &orow] {
        let button = format!("{r} button[data-action='delete-policy']");
        b.click(&button);
        b.click(&button);
        b.wait("the row gone", UI, |b| b.count(r) == 0);
    }
    for kind in ["policies", "operator-policies"] {
        let (status, _) = api_call(&http, "GET", &format!("/{kind}/%2F/{name}"), None);
        assert_eq!(status, 404, "{kind}");
    }
}
