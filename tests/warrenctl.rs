//! `warrenctl` (issue 10): the real binary against a real broker's management API, with
//! lapin creating what it lists. Each command's output is checked against what the
//! broker holds, in rabbitmqctl's format (info lines, header row, tab-separated cells,
//! `-q`, `--no-table-headers`, `--formatter json`) and with rabbitmqctl's exit codes
//! (64 usage, 69 unreachable, 65 bad definitions file, 2 refused).
//!
//! The expected texts were taken from rabbitmqctl 3.10 on the same objects; the suite
//! also runs against RabbitMQ (`WARREN_TEST_PORT=5672 cargo test --test warrenctl`), where
//! it only looks at rows for the objects it made and never closes others' connections.
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use serde_json::Value;
use support::*;

const EXE: &str = env!("CARGO_BIN_EXE_warrenctl");

/// RabbitMQ refreshes its queue statistics every 5 s; Warren's are immediate.
const SETTLE: Duration = Duration::from_secs(20);

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `exe --url URL args...` with WARREN_URL cleared, so only the flag counts.
fn run(exe: &Path, url: &str, args: &[&str], stdin: Option<&str>) -> Out {
    tokio::task::block_in_place(|| {
        let mut cmd = Command::new(exe);
        cmd.arg("--url")
            .arg(url)
            .args(args)
            .env_remove("WARREN_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("spawn warrenctl");
        if let Some(text) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        let o = child.wait_with_output().expect("warrenctl output");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    })
}

fn ctl(b: &Broker, args: &[&str]) -> Out {
    run(Path::new(EXE), &b.http_url(), args, None)
}

/// A command that must succeed: its stdout.
fn ok(b: &Broker, args: &[&str]) -> String {
    let o = ctl(b, args);
    assert_eq!(
        o.code, 0,
        "warrenctl {args:?} exited {}: {}{}",
        o.code, o.stdout, o.stderr
    );
    o.stdout
}

/// Runs a command until `pred` holds for its stdout (RabbitMQ's numbers lag); returns
/// that stdout or panics with the last one.
fn wait_for(b: &Broker, args: &[&str], pred: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let done = tokio::task::block_in_place(|| {
        wait_until(SETTLE, || {
            last = ok(b, args);
            let hit = pred(&last);
            if !hit {
                // Each try is a process and a request: no need to spin.
                std::thread::sleep(Duration::from_millis(100));
            }
            hit
        })
    });
    assert!(
        done,
        "warrenctl {args:?} never matched; last output:\n{last}"
    );
    last
}

fn cells(line: &str) -> Vec<&str> {
    line.split('\t').collect()
}

/// The data rows (tab-split) whose `col`th cell is `name`.
fn rows_with<'a>(out: &'a str, col: usize, name: &str) -> Vec<Vec<&'a str>> {
    out.lines()
        .map(cells)
        .filter(|c| c.get(col) == Some(&name))
        .collect()
}

fn has_row(out: &str, row: &[&str]) -> bool {
    out.lines().any(|l| cells(l) == row)
}

async fn channel(b: &Broker) -> (Connection, Channel) {
    let conn = connect(&b.uri()).await;
    let ch = step("create_channel", conn.create_channel()).await.unwrap();
    (conn, ch)
}

async fn declare(ch: &Channel, q: &str, durable: bool, args: FieldTable) {
    step(
        "queue_declare",
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions {
                durable,
                ..Default::default()
            },
            args,
        ),
    )
    .await
    .unwrap();
}

/// Publishes `n` messages to `q` and waits for the broker's confirms.
async fn publish(ch: &Channel, q: &str, n: usize) {
    step(
        "confirm_select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .unwrap();
    for i in 0..n {
        let confirm = step(
            "publish",
            ch.basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
        step("confirm", confirm).await.unwrap();
    }
}

/// A port nothing listens on: bound, read, released.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queues_shows_what_the_broker_holds_in_each_format() {
    let b = Broker::start();
    let (_conn, ch) = channel(&b).await;
    let q1 = unique("ctl-q1");
    let q2 = unique("ctl-q2");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(10));
    declare(&ch, &q1, true, args).await;
    declare(&ch, &q2, false, FieldTable::default()).await;
    publish(&ch, &q1, 3).await;

    // Default columns, with rabbitmqctl's two info lines and header.
    let out = wait_for(&b, &["list_queues"], |o| has_row(o, &[&q1, "3"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Timeout: 60.0 seconds ...", "{out}");
    assert_eq!(lines[1], "Listing queues for vhost / ...", "{out}");
    assert_eq!(lines[2], "name\tmessages", "{out}");
    assert!(has_row(&out, &[&q2, "0"]), "{out}");

    // Every column the issue names, in the order asked.
    let all = [
        "name",
        "messages",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "durable",
        "auto_delete",
        "exclusive",
        "arguments",
        "state",
        "type",
        "memory",
    ];
    let mut args = vec!["list_queues"];
    args.extend(all);
    let out = ok(&b, &args);
    assert!(out.lines().any(|l| l == all.join("\t")), "{out}");
    let r1 = rows_with(&out, 0, &q1);
    assert_eq!(r1.len(), 1, "{out}");
    assert_eq!(
        r1[0][..11],
        [
            q1.as_str(),
            "3",
            "3",
            "0",
            "0",
            "true",
            "false",
            "false",
            r#"[{"x-max-length",10}]"#,
            "running",
            "classic"
        ],
        "{out}"
    );
    assert!(r1[0][11].parse::<u64>().is_ok(), "memory: {out}");
    let r2 = rows_with(&out, 0, &q2);
    assert_eq!(
        r2[0][1..11],
        ["0", "0", "0", "0", "false", "false", "false", "[]", "running", "classic"],
        "{out}"
    );

    // -q: no info lines, header first.
    let out = ok(&b, &["-q", "list_queues"]);
    assert_eq!(out.lines().next(), Some("name\tmessages"), "{out}");
    assert!(!out.contains("Listing queues"), "{out}");
    // --no-table-headers: info lines, no header.
    let out = ok(&b, &["list_queues", "--no-table-headers"]);
    assert!(out.starts_with("Timeout: 60.0 seconds ...\nListing queues for vhost / ...\n"));
    assert!(!out.lines().any(|l| l == "name\tmessages"), "{out}");
    assert!(has_row(&out, &[&q1, "3"]), "{out}");
    // Both: data rows only.
    let out = ok(&b, &["-q", "--no-table-headers", "list_queues", "name"]);
    assert!(
        out.lines().all(|l| !l.contains('\t') && l != "name"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == q1), "{out}");

    // JSON: one object per line, keys in the asked order, arguments as typed triples.
    let out = ok(&b, &["list_queues", "--formatter", "json"]);
    assert!(out.starts_with("[\n") && out.ends_with("]\n"), "{out}");
    let line = format!("{{\"name\":\"{q1}\",\"messages\":3}}");
    assert!(
        out.lines()
            .any(|l| l == line || l.strip_prefix(',') == Some(line.as_str())),
        "{out}"
    );
    let out = ok(
        &b,
        &[
            "list_queues",
            "name",
            "arguments",
            "durable",
            "--formatter=json",
        ],
    );
    let v: Vec<Value> = serde_json::from_str(&out).expect("JSON list");
    let o1 = v.iter().find(|o| o["name"] == q1.as_str()).expect("q1");
    assert_eq!(
        o1["arguments"],
        serde_json::json!([["x-max-length", "long", 10]])
    );
    assert_eq!(o1["durable"], true);
    let o2 = v.iter().find(|o| o["name"] == q2.as_str()).expect("q2");
    assert_eq!(o2["arguments"], serde_json::json!([]));

    // A vhost that does not exist lists nothing, as with rabbitmqctl.
    let out = ok(&b, &["list_queues", "-p", "no-such-vhost-ctl"]);
    assert_eq!(
        out,
        "Timeout: 60.0 seconds ...\nListing queues for vhost no-such-vhost-ctl ...\n"
    );

    ok(&b, &["-q", "delete_queue", &q1]);
    ok(&b, &["-q", "delete_queue", &q2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_queue_and_delete_queue() {
    let b = Broker::start();
    let (_conn, ch) = channel(&b).await;
    let q = unique("ctl-purge");
    declare(&ch, &q, false, FieldTable::default()).await;
    publish(&ch, &q, 2).await;
    wait_for(&b, &["list_queues"], |o| has_row(o, &[&q, "2"]));

    let out = ok(&b, &["purge_queue", &q]);
    assert_eq!(out, format!("Purging queue '{q}' in vhost '/' ...\n"));
    wait_for(&b, &["list_queues"], |o| has_row(o, &[&q, "0"]));

    publish(&ch, &q, 1).await;
    wait_for(&b, &["list_queues"], |o| has_row(o, &[&q, "1"]));
    let o = ctl(&b, &["delete_queue", &q, "--if-empty"]);
    assert_eq!(o.code, 64, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        o.stdout,
        format!("Deleting queue '{q}' on vhost '/' if queue is empty ...\n")
    );
    assert_eq!(o.stderr, "Error:\nQueue is not empty\n");
    assert!(has_row(&ok(&b, &["list_queues"]), &[&q, "1"]));

    let out = ok(&b, &["delete_queue", &q]);
    assert_eq!(
        out,
        format!(
            "Deleting queue '{q}' on vhost '/' ...\nQueue was successfully deleted with 1 ready \
             messages\n"
        )
    );
    wait_for(&b, &["list_queues"], |o| rows_with(o, 0, &q).is_empty());

    // Missing queues: rabbitmqctl 3.10 answers purge with 69 and delete with 64.
    let o = ctl(&b, &["purge_queue", &q]);
    assert_eq!(o.code, 69, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.starts_with("Error:\nnot_found"), "{}", o.stderr);
    let o = ctl(&b, &["-q", "delete_queue", &q]);
    assert_eq!(o.code, 64, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stderr, "Error:\nQueue not found\n");
    assert_eq!(o.stdout, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_channels_and_connections_and_closing_them() {
    let b = Broker::start();
    let (conn, ch) = channel(&b).await;
    let q = unique("ctl-cons");
    let tag = unique("ctl-tag");
    declare(&ch, &q, false, FieldTable::default()).await;
    step("qos", ch.basic_qos(7, BasicQosOptions::default()))
        .await
        .unwrap();
    let _consumer = step(
        "consume",
        ch.basic_consume(
            q.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();

    // RabbitMQ fills in the consumer's channel with its next stats emission.
    let out = wait_for(&b, &["list_consumers"], |o| {
        rows_with(o, 0, &q)
            .first()
            .is_some_and(|r| !r[1].is_empty())
    });
    assert!(out.starts_with(
        "Listing consumers in vhost / ...\nqueue_name\tchannel_pid\tconsumer_tag\t\
         ack_required\tprefetch_count\tactive\targuments\n"
    ));
    let row = rows_with(&out, 0, &q).remove(0);
    let chan = row[1].to_string();
    assert!(!chan.is_empty(), "{out}");
    assert_eq!(row[2..], [tag.as_str(), "true", "7", "true", "[]"], "{out}");

    // The channel, by the name list_consumers showed for it.
    // RabbitMQ's channel statistics lag the consumer by up to a stats interval.
    let out = wait_for(&b, &["list_channels"], |o| {
        rows_with(o, 0, &chan)
            .first()
            .is_some_and(|r| r.get(2) == Some(&"1"))
    });
    assert!(out
        .starts_with("Listing channels ...\npid\tuser\tconsumer_count\tmessages_unacknowledged\n"));
    assert_eq!(
        rows_with(&out, 0, &chan)[0][1..],
        ["guest", "1", "0"],
        "{out}"
    );
    let out = ok(
        &b,
        &[
            "-q",
            "list_channels",
            "name",
            "connection",
            "prefetch_count",
        ],
    );
    let row = rows_with(&out, 0, &chan).remove(0);
    let conn_name = row[1].to_string();
    assert_eq!(row[2], "7", "{out}");

    // Its connection.
    let out = ok(&b, &["list_connections"]);
    assert!(out.starts_with("Listing connections ...\nuser\tpeer_host\tpeer_port\tstate\n"));
    let cols = [
        "-q",
        "list_connections",
        "name",
        "user",
        "vhost",
        "state",
        "channels",
    ];
    // Channel counts, too, come with RabbitMQ's next stats emission.
    let out = wait_for(&b, &cols, |o| {
        rows_with(o, 0, &conn_name)
            .first()
            .is_some_and(|r| r.get(4) == Some(&"1"))
    });
    let row = rows_with(&out, 0, &conn_name);
    assert_eq!(row.len(), 1, "{conn_name} in {out}");
    assert_eq!(row[0][1..], ["guest", "/", "running", "1"], "{out}");

    // close_connection by that name: lapin sees the close, and the list loses it.
    let out = ok(&b, &["close_connection", &conn_name, "ctl says bye"]);
    assert_eq!(
        out,
        format!("Closing connection {conn_name}, reason: ctl says bye...\n")
    );
    assert!(
        wait_until_async(STEP, || async { !conn.status().connected() }).await,
        "lapin still connected after close_connection"
    );
    wait_for(&b, &["-q", "list_connections", "name"], |o| {
        !o.lines().any(|l| l == conn_name)
    });
    let o = ctl(&b, &["close_connection", &conn_name, "again"]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    ok(&b, &["-q", "delete_queue", &q]);

    if b.is_external() {
        println!("close_all_connections skipped: it would close other clients of RabbitMQ");
        return;
    }
    let (c1, _ch1) = channel(&b).await;
    let (c2, _ch2) = channel(&b).await;
    wait_for(&b, &["-q", "--no-table-headers", "list_connections"], |o| {
        o.lines().count() == 2
    });
    let out = ok(&b, &["close_all_connections", "maintenance"]);
    assert_eq!(
        out,
        "Closing all connections in vhost /, reason: maintenance...\nClosed 2 connections\n"
    );
    assert!(
        wait_until_async(STEP, || async {
            !c1.status().connected() && !c2.status().connected()
        })
        .await
    );
    let out = ok(&b, &["-q", "close_all_connections", "again"]);
    assert_eq!(out, "Closed 0 connections\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_and_bindings() {
    let b = Broker::start();
    let (_conn, ch) = channel(&b).await;
    let x = unique("ctl-x");
    let q = unique("ctl-xq");
    step(
        "exchange_declare",
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    declare(&ch, &q, false, FieldTable::default()).await;
    let mut bargs = FieldTable::default();
    bargs.insert("x-foo".into(), AMQPValue::LongString("bar".into()));
    step(
        "queue_bind",
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "a.#".into(),
            QueueBindOptions::default(),
            bargs,
        ),
    )
    .await
    .unwrap();

    let out = ok(&b, &["list_exchanges"]);
    assert!(
        out.starts_with("Listing exchanges for vhost / ...\nname\ttype\n"),
        "{out}"
    );
    assert!(has_row(&out, &[&x, "topic"]), "{out}");
    assert!(
        has_row(&out, &["", "direct"]),
        "the default exchange: {out}"
    );
    assert!(has_row(&out, &["amq.fanout", "fanout"]), "{out}");
    let out = ok(
        &b,
        &[
            "-q",
            "list_exchanges",
            "name",
            "type",
            "durable",
            "auto_delete",
            "internal",
            "arguments",
        ],
    );
    assert!(
        has_row(&out, &[&x, "topic", "true", "false", "false", "[]"]),
        "{out}"
    );

    let out = ok(&b, &["list_bindings"]);
    assert!(out.starts_with(
        "Listing bindings for vhost /...\nsource_name\tsource_kind\tdestination_name\t\
         destination_kind\trouting_key\targuments\n"
    ));
    let mine = rows_with(&out, 2, &q);
    assert_eq!(mine.len(), 2, "{out}");
    assert!(
        has_row(&out, &["", "exchange", &q, "queue", &q, "[]"]),
        "{out}"
    );
    assert!(
        has_row(
            &out,
            &[&x, "exchange", &q, "queue", "a.#", r#"[{"x-foo","bar"}]"#]
        ),
        "{out}"
    );
    let out = ok(&b, &["list_bindings", "--formatter", "json"]);
    let v: Vec<Value> = serde_json::from_str(&out).expect("JSON list");
    let bound = v
        .iter()
        .find(|o| o["source_name"] == x.as_str())
        .expect("our binding");
    assert_eq!(
        bound["arguments"],
        serde_json::json!([["x-foo", "longstr", "bar"]])
    );

    ok(&b, &["-q", "delete_queue", &q]);
    step(
        "exchange_delete",
        ch.exchange_delete(x.as_str().into(), Default::default()),
    )
    .await
    .unwrap();
}

#[test]
fn vhosts_users_permissions_and_status() {
    let b = Broker::start();
    let out = ok(&b, &["list_vhosts"]);
    assert!(out.starts_with("Listing vhosts ...\nname\n"), "{out}");
    assert!(out.lines().any(|l| l == "/"), "{out}");
    let out = ok(&b, &["list_users"]);
    assert!(out.starts_with("Listing users ...\nuser\ttags\n"), "{out}");
    assert!(has_row(&out, &["guest", "[administrator]"]), "{out}");
    let out = ok(&b, &["list_users", "--formatter", "json"]);
    let v: Vec<Value> = serde_json::from_str(&out).expect("JSON list");
    assert!(
        v.contains(&serde_json::json!({"user": "guest", "tags": ["administrator"]})),
        "{out}"
    );
    let out = ok(&b, &["list_permissions"]);
    assert!(
        out.starts_with("Listing permissions for vhost \"/\" ...\nuser\tconfigure\twrite\tread\n"),
        "{out}"
    );
    assert!(has_row(&out, &["guest", ".*", ".*", ".*"]), "{out}");

    let out = ok(&b, &["status"]);
    assert!(out.starts_with("Status of node "), "{out}");
    for section in ["Runtime", "Alarms", "Memory", "Totals", "Listeners"] {
        assert!(out.lines().any(|l| l == section), "{section}: {out}");
    }
    let amqp = format!("port: {}, protocol: amqp,", b.port);
    assert!(out.lines().any(|l| l.contains(&amqp)), "{amqp}: {out}");
    let out = ok(&b, &["status", "--formatter", "json"]);
    let v: Value = serde_json::from_str(&out).expect("JSON status");
    assert!(v["totals"]["queue_count"].is_u64(), "{out}");
    assert!(
        v["listeners"].as_array().is_some_and(|l| !l.is_empty()),
        "{out}"
    );

    // Wrong credentials: the API's 401 is a failed command, said plainly.
    let o = ctl(&b, &["--password", "not-the-password", "list_queues"]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("401"), "{}", o.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_definitions() {
    let b = Broker::start();
    let (_conn, ch) = channel(&b).await;
    let q = unique("ctl-defs");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(5));
    declare(&ch, &q, true, args).await;

    let dir = tempfile::TempDir::new().expect("tempdir");
    let file = dir.path().join("defs.json");
    let file_s = file.to_str().expect("utf-8 path");
    let out = ok(&b, &["export_definitions", file_s]);
    assert_eq!(
        out,
        format!("Exporting definitions in JSON to a file at \"{file_s}\" ...\n")
    );
    let defs: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read export")).expect("JSON");
    let mine = defs["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|d| d["name"] == q.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{q} not in the export: {defs}"));
    assert_eq!(mine["durable"], true);
    assert_eq!(mine["arguments"]["x-max-length"], 5);
    let out = ok(&b, &["export_definitions", "-"]);
    let to_stdout: Value = serde_json::from_str(&out).expect("stdout export is JSON");
    assert!(to_stdout["queues"].is_array(), "{out}");

    // Import only our queue back (a whole export would touch others' objects when this
    // runs against a shared RabbitMQ).
    ok(&b, &["-q", "delete_queue", &q]);
    let only_mine = serde_json::json!({"queues": [mine]}).to_string();
    std::fs::write(&file, &only_mine).expect("write import");
    let out = ok(&b, &["import_definitions", file_s]);
    assert!(out.starts_with(&format!(
        "Importing definitions in JSON from a file at \"{file_s}\" ...\n"
    )));
    let out = wait_for(
        &b,
        &["-q", "list_queues", "name", "durable", "arguments"],
        |o| !rows_with(o, 0, &q).is_empty(),
    );
    assert!(
        has_row(&out, &[&q, "true", r#"[{"x-max-length",5}]"#]),
        "{out}"
    );

    // From standard input.
    let q2 = unique("ctl-defs-stdin");
    let defs2 = serde_json::json!({"queues": [{"name": q2, "vhost": "/", "durable": true,
        "auto_delete": false, "arguments": {}}]})
    .to_string();
    let o = run(
        Path::new(EXE),
        &b.http_url(),
        &["import_definitions", "-"],
        Some(&defs2),
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    wait_for(&b, &["-q", "list_queues", "name"], |o| {
        o.lines().any(|l| l == q2)
    });

    // A broken file and a missing one: 65, as rabbitmqctl.
    std::fs::write(&file, "{bad").expect("write");
    let o = ctl(&b, &["import_definitions", file_s]);
    assert_eq!(o.code, 65, "{}{}", o.stdout, o.stderr);
    assert!(o
        .stderr
        .starts_with("Error:\nFailed to deserialise input (format: JSON)"));
    let missing = dir.path().join("missing.json");
    let o = ctl(
        &b,
        &["import_definitions", missing.to_str().expect("utf-8")],
    );
    assert_eq!(o.code, 65, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("does not exist"), "{}", o.stderr);

    ok(&b, &["-q", "delete_queue", &q]);
    ok(&b, &["-q", "delete_queue", &q2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqctl_link_behaves_the_same() {
    let b = Broker::start();
    let (_conn, ch) = channel(&b).await;
    let q = unique("ctl-link");
    declare(&ch, &q, false, FieldTable::default()).await;
    publish(&ch, &q, 1).await;
    wait_for(&b, &["list_queues"], |o| has_row(o, &[&q, "1"]));

    let dir = tempfile::TempDir::new().expect("tempdir");
    let link = dir.path().join("rabbitmqctl");
    std::os::unix::fs::symlink(EXE, &link).expect("symlink");
    // Through the link, with the URL from the environment as a sudo'd script would have.
    let o = tokio::task::block_in_place(|| {
        Command::new(&link)
            .arg("list_queues")
            .env("WARREN_URL", b.http_url())
            .output()
            .expect("run the link")
    });
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(
            "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\nname\tmessages\n"
        ),
        "{out}"
    );
    assert!(has_row(&out, &[&q, "1"]), "{out}");
    // Its usage errors name it rabbitmqctl.
    let o = run(&link, &b.http_url(), &["list_queues", "bogus_column"], None);
    assert_eq!(o.code, 64);
    assert!(o.stderr.contains("\nrabbitmqctl [--url"), "{}", o.stderr);

    ok(&b, &["-q", "delete_queue", &q]);
}

#[test]
fn unreachable_broker_is_69_with_one_line_naming_the_url() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    for cmd in [&["list_queues"][..], &["status"], &["purge_queue", "q"]] {
        let o = run(Path::new(EXE), &url, cmd, None);
        assert_eq!(o.code, 69, "{cmd:?}: {}{}", o.stdout, o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
        assert!(o.stderr.contains(&url), "{}", o.stderr);
        assert!(o.stderr.contains("Connection refused"), "{}", o.stderr);
    }
    // The same through WARREN_URL.
    let o = Command::new(EXE)
        .arg("list_vhosts")
        .env("WARREN_URL", &url)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&url));
}

#[test]
fn bad_usage_is_64_before_anything_is_sent() {
    // A closed port: each of these must fail on the command line, not on the network.
    let url = format!("http://127.0.0.1:{}", closed_port());
    let cases: &[&[&str]] = &[
        &[],
        &["no_such_command"],
        &["list_queues", "--bogus"],
        &["list_queues", "no_such_column"],
        &["list_queues", "name", "-p"],
        &["list_exchanges", "--if-empty"],
        &["purge_queue"],
        &["purge_queue", "a", "b"],
        &["close_connection", "only-a-name"],
        &["close_all_connections"],
        &["list_queues", "--formatter", "xml"],
        &["list_queues", "--timeout", "soon"],
    ];
    for args in cases {
        let o = run(Path::new(EXE), &url, args, None);
        assert_eq!(o.code, 64, "{args:?}: {}{}", o.stdout, o.stderr);
        assert!(o.stderr.contains("Usage"), "{args:?}: {}", o.stderr);
        assert_eq!(o.stdout, "", "{args:?}");
    }
    let o = run(
        Path::new(EXE),
        &url,
        &["list_queues", "no_such_column"],
        None,
    );
    assert!(
        o.stderr.starts_with(
            "Error (argument validation): Info key(s) no_such_column are not supported"
        ),
        "{}",
        o.stderr
    );
    let o = run(Path::new(EXE), "ftp://127.0.0.1:1", &["list_queues"], None);
    assert_eq!(o.code, 64, "{}", o.stderr);
}

// ----- issue 11: users, vhosts, permissions, limits ------------------------------------
//
// Every line and exit code below was taken from rabbitmqctl 3.10 on the same objects.

/// Deletes what a test created (users, vhosts) when it ends, passed or not: the suite
/// also runs against a shared RabbitMQ.
struct Cleanup<'a> {
    b: &'a Broker,
    users: Vec<String>,
    vhosts: Vec<String>,
}

impl<'a> Cleanup<'a> {
    fn new(b: &'a Broker) -> Cleanup<'a> {
        Cleanup {
            b,
            users: Vec::new(),
            vhosts: Vec::new(),
        }
    }
    fn user(&mut self, prefix: &str) -> String {
        let u = unique(prefix);
        self.users.push(u.clone());
        u
    }
    fn vhost(&mut self, prefix: &str) -> String {
        let v = unique(prefix);
        self.vhosts.push(v.clone());
        v
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for u in &self.users {
            ctl(self.b, &["-q", "delete_user", u]);
        }
        for v in &self.vhosts {
            ctl(self.b, &["-q", "delete_vhost", v]);
        }
    }
}

/// Runs a command and checks its exit code, its whole stdout and its whole stderr.
#[track_caller]
fn expect(b: &Broker, args: &[&str], code: i32, stdout: &str, stderr: &str) {
    let o = ctl(b, args);
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (code, stdout, stderr),
        "warrenctl {args:?}"
    );
}

/// The same through standard input (passwords not given as arguments).
#[track_caller]
fn expect_stdin(b: &Broker, args: &[&str], stdin: &str, code: i32, stdout: &str, stderr: &str) {
    let o = run(Path::new(EXE), &b.http_url(), args, Some(stdin));
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (code, stdout, stderr),
        "warrenctl {args:?} < {stdin:?}"
    );
}

const DONE: &str = "Done. Don't forget to grant the user permissions to some virtual hosts! \
                    See 'rabbitmqctl help set_permissions' to learn more.";

#[test]
fn users_passwords_tags_and_authenticate_user() {
    let b = Broker::start();
    let mut c = Cleanup::new(&b);
    let u = c.user("ctl-u");
    let u2 = c.user("ctl-u2");
    let nobody = unique("ctl-nobody");

    expect(
        &b,
        &["add_user", &u, "pw1"],
        0,
        &format!("Adding user \"{u}\" ...\n{DONE}\n"),
        "",
    );
    expect(
        &b,
        &["add_user", &u, "pw1"],
        70,
        &format!("Adding user \"{u}\" ...\n"),
        &format!("Error:\nUser \"{u}\" already exists\n"),
    );
    // The password from standard input; -q prints nothing at all.
    expect_stdin(&b, &["-q", "add_user", &u2], "pw2\n", 0, "", "");
    expect_stdin(
        &b,
        &["authenticate_user", &u2],
        "pw2\n",
        0,
        &format!("Authenticating user \"{u2}\" ...\nPassword: \nSuccess\n"),
        "",
    );
    let o = ctl(&b, &["add_user", "", "x"]);
    assert_eq!(o.code, 65, "{}", o.stderr);
    assert!(o.stderr.starts_with(
        "Error (argument validation): Bad argument: user cannot be an empty string\n"
    ));

    // A new user has no tags; list_users shows it.
    let out = ok(&b, &["list_users"]);
    assert!(out.starts_with("Listing users ...\nuser\ttags\n"), "{out}");
    assert!(has_row(&out, &[&u, "[]"]), "{out}");

    expect(
        &b,
        &["authenticate_user", &u, "pw1"],
        0,
        &format!("Authenticating user \"{u}\" ...\nSuccess\n"),
        "",
    );
    expect(
        &b,
        &["-q", "authenticate_user", &u, "pw1"],
        0,
        "Success\n",
        "",
    );
    expect(
        &b,
        &["--formatter", "json", "authenticate_user", &u, "pw1"],
        0,
        "{\"message\":\"Success\"}\n",
        "",
    );
    let refused = |who: &str| {
        format!("Error:\nError: failed to authenticate user \"{who}\"\nuser '{who}' - invalid credentials\n")
    };
    expect(
        &b,
        &["authenticate_user", &u, "wrong"],
        65,
        &format!("Authenticating user \"{u}\" ...\n"),
        &refused(&u),
    );
    expect(
        &b,
        &["authenticate_user", &nobody, "x"],
        65,
        &format!("Authenticating user \"{nobody}\" ...\n"),
        &refused(&nobody),
    );

    // change_password: the old one stops working, the tags stay.
    expect(
        &b,
        &["set_user_tags", &u, "monitoring", "custom-tag"],
        0,
        &format!("Setting tags for user \"{u}\" to [monitoring, custom-tag] ...\n"),
        "",
    );
    expect(
        &b,
        &["change_password", &u, "pw1b"],
        0,
        &format!("Changing password for user \"{u}\" ...\n"),
        "",
    );
    expect(
        &b,
        &["-q", "authenticate_user", &u, "pw1b"],
        0,
        "Success\n",
        "",
    );
    assert_eq!(ctl(&b, &["authenticate_user", &u, "pw1"]).code, 65);
    let out = ok(&b, &["list_users"]);
    assert!(has_row(&out, &[&u, "[monitoring, custom-tag]"]), "{out}");
    // set_user_tags keeps the password; with no tags it clears them.
    expect(
        &b,
        &["set_user_tags", &u, "administrator"],
        0,
        &format!("Setting tags for user \"{u}\" to [administrator] ...\n"),
        "",
    );
    expect(
        &b,
        &["-q", "authenticate_user", &u, "pw1b"],
        0,
        "Success\n",
        "",
    );
    let out = ok(&b, &["--formatter", "json", "list_users"]);
    let v: Vec<Value> = serde_json::from_str(&out).expect("JSON list");
    assert!(
        v.contains(&serde_json::json!({"user": u, "tags": ["administrator"]})),
        "{out}"
    );
    expect(
        &b,
        &["set_user_tags", &u],
        0,
        &format!("Setting tags for user \"{u}\" to [] ...\n"),
        "",
    );
    assert!(has_row(&ok(&b, &["list_users"]), &[&u, "[]"]));

    // clear_password: no password login any more.
    expect(
        &b,
        &["clear_password", &u],
        0,
        &format!("Clearing password for user \"{u}\" ...\n"),
        "",
    );
    assert_eq!(ctl(&b, &["authenticate_user", &u, "pw1b"]).code, 65);

    // Missing users: each command's own text and code.
    let no_user = format!("Error:\nUser \"{nobody}\" does not exist\n");
    expect(
        &b,
        &["change_password", &nobody, "x"],
        67,
        &format!("Changing password for user \"{nobody}\" ...\n"),
        &no_user,
    );
    expect(
        &b,
        &["set_user_tags", &nobody, "a"],
        67,
        &format!("Setting tags for user \"{nobody}\" to [a] ...\n"),
        &no_user,
    );
    expect(
        &b,
        &["clear_password", &nobody],
        69,
        &format!("Clearing password for user \"{nobody}\" ...\n"),
        &format!("Error:\n{{:no_such_user, \"{nobody}\"}}\n"),
    );
    // No password and nothing on standard input.
    expect_stdin(
        &b,
        &["change_password", &u],
        "",
        70,
        &format!("Changing password for user \"{u}\" ...\nPassword: \n"),
        "Error:\nPassword is not provided via argument or stdin\n",
    );

    expect(
        &b,
        &["delete_user", &u],
        0,
        &format!("Deleting user \"{u}\" ...\n"),
        "",
    );
    expect(
        &b,
        &["delete_user", &u],
        67,
        &format!("Deleting user \"{u}\" ...\n"),
        &format!("Error:\nUser \"{u}\" does not exist\n"),
    );
    let out = ok(&b, &["list_users"]);
    assert!(rows_with(&out, 0, &u).is_empty(), "{out}");
    let node = ok(&b, &["status", "--formatter", "json"]);
    let node: Value = serde_json::from_str(&node).expect("status JSON");
    expect(
        &b,
        &["--formatter", "json", "delete_user", &u2],
        0,
        &format!(
            "{}\n",
            serde_json::json!({"node": node["node_name"], "result": "ok"})
        ),
        "",
    );
}

#[test]
fn permissions_and_topic_permissions() {
    let b = Broker::start();
    let mut c = Cleanup::new(&b);
    let u = c.user("ctl-perm");
    let nobody = unique("ctl-nobody");
    let novh = unique("ctl-novh");
    ok(&b, &["-q", "add_user", &u, "pw"]);

    expect(
        &b,
        &["set_permissions", &u, ".*", "^a", ""],
        0,
        &format!("Setting permissions for user \"{u}\" in vhost \"/\" ...\n"),
        "",
    );
    let out = ok(&b, &["list_permissions"]);
    assert!(
        out.starts_with("Listing permissions for vhost \"/\" ...\nuser\tconfigure\twrite\tread\n"),
        "{out}"
    );
    assert!(has_row(&out, &[&u, ".*", "^a", ""]), "{out}");
    expect(
        &b,
        &["list_user_permissions", &u],
        0,
        &format!("Listing permissions for user \"{u}\" ...\nvhost\tconfigure\twrite\tread\n/\t.*\t^a\t\n"),
        "",
    );
    expect(
        &b,
        &["--formatter", "json", "list_user_permissions", &u],
        0,
        "[\n{\"vhost\":\"/\",\"configure\":\".*\",\"write\":\"^a\",\"read\":\"\"}\n]\n",
        "",
    );
    // A bad pattern is refused and changes nothing.
    let o = ctl(&b, &["set_permissions", &u, "(", "b", "c"]);
    assert_eq!(o.code, 69, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("invalid_regexp"), "{}", o.stderr);
    assert!(has_row(
        &ok(&b, &["list_permissions"]),
        &[&u, ".*", "^a", ""]
    ));

    expect(
        &b,
        &["set_permissions", &nobody, "a", "b", "c"],
        67,
        &format!("Setting permissions for user \"{nobody}\" in vhost \"/\" ...\n"),
        &format!("Error:\nUser {nobody} does not exist\n"),
    );
    expect(
        &b,
        &["set_permissions", "-p", &novh, &u, "a", "b", "c"],
        69,
        &format!("Setting permissions for user \"{u}\" in vhost \"{novh}\" ...\n"),
        &format!("Error:\nVirtual host {novh} does not exist\n"),
    );
    expect(
        &b,
        &["list_permissions", "-p", &novh],
        65,
        &format!("Listing permissions for vhost \"{novh}\" ...\n"),
        &format!("Virtual host '{novh}' does not exist\n"),
    );
    expect(
        &b,
        &["list_user_permissions", &nobody],
        69,
        &format!("Listing permissions for user \"{nobody}\" ...\n"),
        &format!("Error:\n{{:no_such_user, \"{nobody}\"}}\n"),
    );

    // Cleared, twice (the second is no error), then nothing listed: an empty line.
    for _ in 0..2 {
        expect(
            &b,
            &["clear_permissions", &u],
            0,
            &format!("Clearing permissions for user \"{u}\" in vhost \"/\" ...\n"),
            "",
        );
    }
    expect(
        &b,
        &["list_user_permissions", &u],
        0,
        &format!("Listing permissions for user \"{u}\" ...\n\n"),
        "",
    );
    expect(
        &b,
        &["clear_permissions", &nobody],
        67,
        &format!("Clearing permissions for user \"{nobody}\" in vhost \"/\" ...\n"),
        &format!("Error:\nUser {nobody} does not exist\n"),
    );

    // Topic permissions.
    expect(
        &b,
        &["set_topic_permissions", &u, "amq.topic", "^a", "^b"],
        0,
        &format!(
            "Setting topic permissions on \"amq.topic\" for user \"{u}\" in vhost \"/\" ...\n"
        ),
        "",
    );
    ok(
        &b,
        &["-q", "set_topic_permissions", "-p", "/", &u, "xx", "", ".*"],
    );
    let out = ok(&b, &["list_topic_permissions"]);
    assert!(
        out.starts_with(
            "Listing topic permissions for vhost \"/\" ...\nuser\texchange\twrite\tread\n"
        ),
        "{out}"
    );
    assert!(has_row(&out, &[&u, "amq.topic", "^a", "^b"]), "{out}");
    assert!(has_row(&out, &[&u, "xx", "", ".*"]), "{out}");
    // No header row for this one, as rabbitmqctl 3.10 prints it.
    let out = ok(&b, &["list_user_topic_permissions", &u]);
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.remove(0),
        format!("Listing topic permissions for user \"{u}\" ...")
    );
    lines.sort_unstable();
    assert_eq!(lines, ["/\tamq.topic\t^a\t^b", "/\txx\t\t.*"], "{out}");
    let o = ctl(&b, &["set_topic_permissions", &u, "amq.topic", "(", "b"]);
    assert_eq!(o.code, 69, "{}{}", o.stdout, o.stderr);
    expect(
        &b,
        &["set_topic_permissions", &nobody, "amq.topic", "a", "b"],
        67,
        &format!(
            "Setting topic permissions on \"amq.topic\" for user \"{nobody}\" in vhost \"/\" ...\n"
        ),
        &format!("Error:\nUser {nobody} does not exist\n"),
    );
    expect(
        &b,
        &["list_topic_permissions", "-p", &novh],
        65,
        &format!("Listing topic permissions for vhost \"{novh}\" ...\n"),
        &format!("Virtual host '{novh}' does not exist\n"),
    );
    // One exchange's cleared (twice: the second is no error): the other's stays.
    for _ in 0..2 {
        expect(
            &b,
            &["clear_topic_permissions", &u, "xx"],
            0,
            &format!("Clearing topic permissions on \"xx\" for user \"{u}\" in vhost \"/\" ...\n"),
            "",
        );
    }
    expect(
        &b,
        &["clear_topic_permissions", &nobody, "xx"],
        67,
        &format!("Clearing topic permissions on \"xx\" for user \"{nobody}\" in vhost \"/\" ...\n"),
        &format!("Error:\nUser {nobody} does not exist\n"),
    );
    expect(
        &b,
        &["-q", "list_user_topic_permissions", &u],
        0,
        "/\tamq.topic\t^a\t^b\n",
        "",
    );
    expect(
        &b,
        &["clear_topic_permissions", &u],
        0,
        &format!("Clearing topic permissions for user \"{u}\" in vhost \"/\" ...\n"),
        "",
    );
    expect(&b, &["-q", "list_user_topic_permissions", &u], 0, "\n", "");
    expect(
        &b,
        &["clear_topic_permissions", "-p", &novh, &u],
        69,
        &format!("Clearing topic permissions for user \"{u}\" in vhost \"{novh}\" ...\n"),
        &format!("Error:\nVirtual host {novh} does not exist\n"),
    );
}

#[test]
fn vhosts_and_vhost_limits() {
    let b = Broker::start();
    let mut c = Cleanup::new(&b);
    let v = c.vhost("ctl-vh");
    let v2 = c.vhost("ctl-vh2");
    let novh = unique("ctl-novh");

    // Adding twice is no error, and leaves the first one's metadata.
    expect(
        &b,
        &[
            "add_vhost",
            &v2,
            "--description",
            "my desc",
            "--tags",
            "a,b",
            "--default-queue-type",
            "quorum",
        ],
        0,
        &format!("Adding vhost \"{v2}\" ...\n"),
        "",
    );
    for _ in 0..2 {
        expect(
            &b,
            &["add_vhost", &v],
            0,
            &format!("Adding vhost \"{v}\" ...\n"),
            "",
        );
    }
    ok(&b, &["-q", "add_vhost", &v2]);
    let out = ok(
        &b,
        &[
            "list_vhosts",
            "name",
            "description",
            "tags",
            "default_queue_type",
            "tracing",
        ],
    );
    assert!(
        out.starts_with(
            "Listing vhosts ...\nname\tdescription\ttags\tdefault_queue_type\ttracing\n"
        ),
        "{out}"
    );
    assert!(
        has_row(&out, &[&v2, "my desc", "[a, b]", "quorum", "false"]),
        "{out}"
    );
    assert_eq!(rows_with(&out, 0, &v).len(), 1, "{out}");
    expect(
        &b,
        &["add_vhost", &v, "--default-queue-type", "bogus"],
        69,
        &format!("Adding vhost \"{v}\" ...\n"),
        "Error:\ninvalid_queue_type\n",
    );

    // Limits: set replaces the whole set.
    expect(
        &b,
        &["set_vhost_limits", "-p", &v, r#"{"max-connections": 10}"#],
        0,
        &format!("Setting vhost limits to \"{{\"max-connections\": 10}}\" for vhost \"{v}\" ...\n"),
        "",
    );
    ok(
        &b,
        &["-q", "set_vhost_limits", "-p", &v, r#"{"max-queues": 5}"#],
    );
    expect(
        &b,
        &["list_vhost_limits", "-p", &v],
        0,
        &format!("Listing limits for vhost \"{v}\" ...\n{{\"max-queues\":5}}\n"),
        "",
    );
    ok(
        &b,
        &[
            "-q",
            "set_vhost_limits",
            "-p",
            &v,
            r#"{"max-queues": 5, "max-connections": 2}"#,
        ],
    );
    let out = ok(&b, &["list_vhost_limits", "--global"]);
    assert!(
        out.starts_with("Listing limits for all vhosts ...\nvhost\tlimits\n"),
        "{out}"
    );
    assert!(
        has_row(&out, &[&v, r#"{"max-connections":2,"max-queues":5}"#]),
        "{out}"
    );
    let out = ok(&b, &["--formatter", "json", "list_vhost_limits", "-p", &v]);
    let j: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        j["value"], r#"{"max-connections":2,"max-queues":5}"#,
        "{out}"
    );
    expect(
        &b,
        &["set_vhost_limits", "-p", &v, r#"{"bogus": 5}"#],
        69,
        &format!("Setting vhost limits to \"{{\"bogus\": 5}}\" for vhost \"{v}\" ...\n"),
        "Error:\nValidation failed\n\nUnrecognised terms [{<<\"bogus\">>,5}] in limits\n\n",
    );
    expect(
        &b,
        &["set_vhost_limits", "-p", &v, "nojson"],
        69,
        &format!("Setting vhost limits to \"nojson\" for vhost \"{v}\" ...\n"),
        "Error:\nJSON decoding error. Reason: badarg\n",
    );
    expect(
        &b,
        &["set_vhost_limits", "-p", &novh, r#"{"max-queues": 5}"#],
        65,
        &format!("Setting vhost limits to \"{{\"max-queues\": 5}}\" for vhost \"{novh}\" ...\n"),
        &format!("Virtual host '{novh}' does not exist\n"),
    );
    expect(
        &b,
        &["clear_vhost_limits", "-p", &v],
        0,
        &format!("Clearing vhost \"{v}\" limits ...\n"),
        "",
    );
    expect(
        &b,
        &["clear_vhost_limits", "-p", &v],
        69,
        &format!("Clearing vhost \"{v}\" limits ...\n"),
        "Error:\nParameter does not exist\n",
    );
    expect(
        &b,
        &["list_vhost_limits", "-p", &v],
        0,
        &format!("Listing limits for vhost \"{v}\" ...\n\n"),
        "",
    );
    expect(
        &b,
        &["list_vhost_limits", "-p", &novh],
        65,
        &format!("Listing limits for vhost \"{novh}\" ...\n"),
        &format!("Virtual host '{novh}' does not exist\n"),
    );

    for name in [&v, &v2] {
        expect(
            &b,
            &["delete_vhost", name],
            0,
            &format!("Deleting vhost \"{name}\" ...\n"),
            "",
        );
    }
    expect(
        &b,
        &["delete_vhost", &v],
        65,
        &format!("Deleting vhost \"{v}\" ...\n"),
        &format!("Virtual host '{v}' does not exist\n"),
    );
    let out = ok(&b, &["-q", "list_vhosts"]);
    assert!(rows_with(&out, 0, &v).is_empty(), "{out}");
}

#[test]
fn user_limits() {
    let b = Broker::start();
    let mut c = Cleanup::new(&b);
    let u = c.user("ctl-lim");
    let nobody = unique("ctl-nobody");
    ok(&b, &["-q", "add_user", &u, "pw"]);

    expect(
        &b,
        &["list_user_limits", "--user", &u],
        0,
        &format!("Listing limits for user \"{u}\" ...\n{{}}\n"),
        "",
    );
    expect(
        &b,
        &["set_user_limits", &u, r#"{"max-connections": 10}"#],
        0,
        &format!("Setting user limits to \"{{\"max-connections\": 10}}\" for user \"{u}\" ...\n"),
        "",
    );
    // Merged, not replaced.
    ok(&b, &["-q", "set_user_limits", &u, r#"{"max-channels": 4}"#]);
    expect(
        &b,
        &["-q", "list_user_limits", "--user", &u],
        0,
        "{\"max-channels\":4,\"max-connections\":10}\n",
        "",
    );
    let out = ok(&b, &["list_user_limits", "--global"]);
    assert!(
        out.starts_with("Listing limits for all users ...\nuser\tlimits\n"),
        "{out}"
    );
    assert!(
        has_row(&out, &[&u, r#"{"max-channels":4,"max-connections":10}"#]),
        "{out}"
    );
    let out = ok(&b, &["--formatter", "json", "list_user_limits", "--global"]);
    let rows: Vec<Value> = serde_json::from_str(&out).expect("JSON");
    assert!(
        rows.contains(
            &serde_json::json!({"user": u, "limits": "{\"max-channels\":4,\"max-connections\":10}"})
        ),
        "{out}"
    );
    for (def, err) in [
        (
            r#"{"bogus": 10}"#,
            "Unrecognised terms [{<<\"bogus\">>,10}] in user-limits",
        ),
        (
            r#"{"max-channels": "x"}"#,
            "max-channels should be a number, actually was <<\"x\">>",
        ),
        ("notjson", "JSON decoding error. Reason: badarg"),
    ] {
        expect(
            &b,
            &["set_user_limits", &u, def],
            69,
            &format!("Setting user limits to \"{def}\" for user \"{u}\" ...\n"),
            &format!("Error:\n{err}\n"),
        );
    }
    expect(
        &b,
        &["set_user_limits", &nobody, r#"{"max-channels": 4}"#],
        69,
        &format!("Setting user limits to \"{{\"max-channels\": 4}}\" for user \"{nobody}\" ...\n"),
        &format!("Error:\n{{:no_such_user, \"{nobody}\"}}\n"),
    );
    expect(
        &b,
        &["list_user_limits", "--user", &nobody],
        69,
        &format!("Listing limits for user \"{nobody}\" ...\n"),
        &format!("Error:\n{{:no_such_user, \"{nobody}\"}}\n"),
    );
    // One cleared (twice is no error, nor is an unknown name), then all.
    for _ in 0..2 {
        expect(
            &b,
            &["clear_user_limits", &u, "max-channels"],
            0,
            &format!("Clearing \"max-channels\" limit for user \"{u}\" ...\n"),
            "",
        );
    }
    ok(&b, &["-q", "clear_user_limits", &u, "bogus"]);
    expect(
        &b,
        &["-q", "list_user_limits", "--user", &u],
        0,
        "{\"max-connections\":10}\n",
        "",
    );
    expect(
        &b,
        &["clear_user_limits", &u, "all"],
        0,
        &format!("Clearing all limits for user \"{u}\" ...\n"),
        "",
    );
    expect(&b, &["-q", "list_user_limits", "--user", &u], 0, "{}\n", "");
    expect(
        &b,
        &["clear_user_limits", &nobody, "all"],
        69,
        &format!("Clearing all limits for user \"{nobody}\" ...\n"),
        &format!("Error:\n{{:no_such_user, \"{nobody}\"}}\n"),
    );
}

#[test]
fn access_control_usage_errors_are_64() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let cases: &[&[&str]] = &[
        &["add_user"],
        &["add_user", "a", "b", "c"],
        &["delete_user"],
        &["set_permissions", "u", "a", "b"],
        &["clear_user_limits", "u"],
        &["list_user_limits", "u"],
        &["list_users", "--description", "x"],
        &["set_user_limits", "u"],
        &["add_vhost"],
    ];
    for args in cases {
        let o = run(Path::new(EXE), &url, args, None);
        assert_eq!(o.code, 64, "{args:?}: {}{}", o.stdout, o.stderr);
        assert!(o.stderr.contains("Usage"), "{args:?}: {}", o.stderr);
    }
}

/// Clears the policies it names when dropped (RabbitMQ is shared: also after a failed
/// assertion).
struct PolicyCleanup<'a> {
    b: &'a Broker,
    names: Vec<(&'static str, String)>,
}

impl Drop for PolicyCleanup<'_> {
    fn drop(&mut self) {
        for (cmd, n) in &self.names {
            let _ = ctl(self.b, &[cmd, n]);
        }
    }
}

#[test]
fn policies_and_operator_policies() {
    let b = Broker::start();
    let p = unique("ctl-pol");
    let op = unique("ctl-opol");
    let _c = PolicyCleanup {
        b: &b,
        names: vec![
            ("clear_policy", p.clone()),
            ("clear_operator_policy", op.clone()),
        ],
    };
    let pat = format!("^{p}-");
    let novh = unique("ctl-pol-novh");

    expect(
        &b,
        &["set_policy", &p, &pat, r#"{"message-ttl":-1}"#],
        69,
        &format!("Setting policy \"{p}\" for pattern \"{pat}\" to \"{{\"message-ttl\":-1}}\" with priority \"0\" for vhost \"/\" ...\n"),
        "Error:\nValidation failed\n\n-1 is not a valid message TTL\n\n",
    );
    expect(
        &b,
        &["set_policy", &p, &pat, r#"{"foo":1}"#],
        69,
        &format!("Setting policy \"{p}\" for pattern \"{pat}\" to \"{{\"foo\":1}}\" with priority \"0\" for vhost \"/\" ...\n"),
        "Error:\nValidation failed\n\n[{<<\"foo\">>,1}] are not recognised policy settings\n\n",
    );
    expect(
        &b,
        &["set_policy", &p, &pat, r#"{"message-ttl":1}"#, "--apply-to", "bogus"],
        69,
        &format!("Setting policy \"{p}\" for pattern \"{pat}\" to \"{{\"message-ttl\":1}}\" with priority \"0\" for vhost \"/\" ...\n"),
        "Error:\nValidation failed\n\napply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'\n\n",
    );
    expect(
        &b,
        &["set_policy", "-p", &novh, &p, &pat, r#"{"message-ttl":1}"#],
        65,
        &format!("Setting policy \"{p}\" for pattern \"{pat}\" to \"{{\"message-ttl\":1}}\" with priority \"0\" for vhost \"{novh}\" ...\n"),
        &format!("Virtual host '{novh}' does not exist\n"),
    );
    let o = ctl(&b, &["set_policy", &p]);
    assert_eq!(o.code, 64, "{}", o.stderr);

    expect(
        &b,
        &[
            "set_policy", &p, &pat, r#"{"message-ttl":1000}"#, "--priority", "3", "--apply-to",
            "queues",
        ],
        0,
        &format!("Setting policy \"{p}\" for pattern \"{pat}\" to \"{{\"message-ttl\":1000}}\" with priority \"3\" for vhost \"/\" ...\n"),
        "",
    );
    let out = ok(&b, &["list_policies"]);
    assert!(
        out.starts_with("Listing policies for vhost \"/\" ...\nvhost\tname\tpattern\tapply-to\tdefinition\tpriority\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "/\t{p}\t{pat}\tqueues\t{{\"message-ttl\":1000}}\t3\n"
        )),
        "{out}"
    );
    let out = ok(&b, &["list_policies", "--formatter", "json"]);
    assert!(
        out.contains(&format!(
            "{{\"vhost\":\"/\",\"name\":\"{p}\",\"pattern\":\"{pat}\",\"apply-to\":\"queues\",\"definition\":\"{{\\\"message-ttl\\\":1000}}\",\"priority\":3}}"
        )),
        "{out}"
    );
    expect(
        &b,
        &["list_policies", "-p", &novh],
        65,
        &format!("Listing policies for vhost \"{novh}\" ...\n"),
        &format!("Virtual host '{novh}' does not exist\n"),
    );
    expect(
        &b,
        &["clear_policy", &p],
        0,
        &format!("Clearing policy \"{p}\" on vhost \"/\" ...\n"),
        "",
    );
    expect(
        &b,
        &["clear_policy", &p],
        69,
        &format!("Clearing policy \"{p}\" on vhost \"/\" ...\n"),
        "Error:\nParameter does not exist\n",
    );

    // Operator policies: their own words and their own restricted keys.
    expect(
        &b,
        &["set_operator_policy", &op, &pat, r#"{"overflow":"drop-head"}"#],
        69,
        &format!("Setting operator policy override \"{op}\" for pattern \"{pat}\" to \"{{\"overflow\":\"drop-head\"}}\" with priority \"0\" for vhost \"/\" ...\n"),
        "Error:\nValidation failed\n\n[{<<\"overflow\">>,<<\"drop-head\">>}] are not recognised policy settings\n\n",
    );
    expect(
        &b,
        &["set_operator_policy", &op, &pat, r#"{"max-length":3}"#, "--apply-to", "queues"],
        0,
        &format!("Setting operator policy override \"{op}\" for pattern \"{pat}\" to \"{{\"max-length\":3}}\" with priority \"0\" for vhost \"/\" ...\n"),
        "",
    );
    let out = ok(&b, &["list_operator_policies"]);
    assert!(
        out.starts_with("Listing operator policy overrides for vhost \"/\" ...\nvhost\tname\tpattern\tapply-to\tdefinition\tpriority\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "/\t{op}\t{pat}\tqueues\t{{\"max-length\":3}}\t0\n"
        )),
        "{out}"
    );
    let out = ok(&b, &["-s", "list_operator_policies"]);
    assert!(
        out.contains(&format!(
            "/\t{op}\t{pat}\tqueues\t{{\"max-length\":3}}\t0\n"
        )) && !out.contains("Listing"),
        "{out}"
    );
    expect(
        &b,
        &["clear_operator_policy", &op],
        0,
        &format!("Clearing operator policy \"{op}\" on vhost \"/\" ...\n"),
        "",
    );
    expect(
        &b,
        &["clear_operator_policy", &op],
        69,
        &format!("Clearing operator policy \"{op}\" on vhost \"/\" ...\n"),
        "Error:\nParameter does not exist\n",
    );
}
