//! Permissions on every channel operation, as RabbitMQ 3.10 checks them
//! (`rabbit_channel`: which permission on which resource, in which order, with which
//! 403 text), topic permissions on publish and bind, and a narrowed permission reaching
//! a channel that already published.
//!
//! Each test makes its own user through the management API (`PUT /api/users/{name}`,
//! `PUT /api/permissions/%2F/{name}`) whose patterns allow names starting `allowed-`
//! and nothing else, so every row is tried both ways. Every assertion holds against
//! RabbitMQ (`WARREN_TEST_PORT=5672`); the users and objects made are deleted again.

mod support;

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use serde_json::json;
use std::time::Duration;

use support::api::{enc, Api};
use support::*;

/// A user of its own for one test, with configure/write/read patterns on "/", and the
/// objects the test made (as guest) to be deleted at the end.
struct Setup {
    api: Api,
    user: String,
    tag: String,
    port: u16,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Setup {
    fn new(b: &Broker, configure: &str, write: &str, read: &str) -> Setup {
        let api = Api::new(b);
        let user = unique("perm-u");
        let r = api.put(
            &format!("/api/users/{}", enc(&user)),
            &json!({"password": "pw", "tags": ""}),
        );
        assert_eq!(r.status, 201, "create user: {r:?}");
        let s = Setup {
            api,
            user,
            tag: unique("perm"),
            port: b.port,
            queues: Vec::new(),
            exchanges: Vec::new(),
        };
        s.set_permissions(configure, write, read);
        s
    }

    /// The usual user: `allowed-` names for everything, and the default exchange
    /// (matched as `amq.default`) for writing.
    fn allowed_only(b: &Broker) -> Setup {
        Setup::new(b, "^allowed-", "^allowed-|^amq\\.default$", "^allowed-")
    }

    fn set_permissions(&self, configure: &str, write: &str, read: &str) {
        let r = self.api.put(
            &format!("/api/permissions/%2F/{}", enc(&self.user)),
            &json!({"configure": configure, "write": write, "read": read}),
        );
        assert!(matches!(r.status, 201 | 204), "set permissions: {r:?}");
    }

    fn allowed(&self, what: &str) -> String {
        format!("allowed-{}-{what}", self.tag)
    }

    fn denied(&self, what: &str) -> String {
        format!("denied-{}-{what}", self.tag)
    }

    async fn user_conn(&self) -> Connection {
        connect(&format!(
            "amqp://{}:pw@127.0.0.1:{}/%2f",
            enc(&self.user),
            self.port
        ))
        .await
    }

    /// RabbitMQ's refusal of `kind` `name` to this user in "/".
    fn refusal(&self, kind: &str, name: &str) -> String {
        format!(
            "ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user '{}'",
            self.user
        )
    }

    /// Declares (as guest) a queue to be deleted at the end.
    async fn queue(&mut self, guest: &Channel, name: &str) {
        step(
            "guest queue_declare",
            guest.queue_declare(
                name.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        self.queues.push(name.to_owned());
    }

    /// Declares (as guest) an exchange to be deleted at the end.
    async fn exchange(&mut self, guest: &Channel, name: &str, kind: ExchangeKind, internal: bool) {
        step(
            "guest exchange_declare",
            guest.exchange_declare(
                name.into(),
                kind,
                ExchangeDeclareOptions {
                    internal,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        self.exchanges.push(name.to_owned());
    }

    /// Remembers a name the user may have created, for the cleanup.
    fn made_queue(&mut self, name: &str) {
        self.queues.push(name.to_owned());
    }

    fn made_exchange(&mut self, name: &str) {
        self.exchanges.push(name.to_owned());
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for q in &self.queues {
            let _ = self.api.delete(&format!("/api/queues/%2F/{}", enc(q)));
        }
        for x in &self.exchanges {
            let _ = self.api.delete(&format!("/api/exchanges/%2F/{}", enc(x)));
        }
        let _ = self.api.delete(&format!("/api/users/{}", enc(&self.user)));
    }
}

async fn channel(conn: &Connection) -> Channel {
    step("create_channel", conn.create_channel()).await.unwrap()
}

/// What a fresh channel of `conn` answers: Ok, or the (code, text) of its error.
type Outcome = Result<(), (u16, String)>;

fn outcome<T>(r: lapin::Result<T>) -> Outcome {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(amqp_error(&e).unwrap_or_else(|| panic!("not an AMQP error: {e:?}"))),
    }
}

fn refused(text: String) -> Outcome {
    Err((403, text))
}

async fn declare_exchange(
    conn: &Connection,
    name: &str,
    kind: ExchangeKind,
    passive: bool,
    args: FieldTable,
) -> Outcome {
    let ch = channel(conn).await;
    outcome(
        step(
            "exchange_declare",
            ch.exchange_declare(
                name.into(),
                kind,
                ExchangeDeclareOptions {
                    passive,
                    ..Default::default()
                },
                args,
            ),
        )
        .await,
    )
}

async fn delete_exchange(conn: &Connection, name: &str) -> Outcome {
    let ch = channel(conn).await;
    outcome(
        step(
            "exchange_delete",
            ch.exchange_delete(name.into(), ExchangeDeleteOptions::default()),
        )
        .await,
    )
}

async fn declare_queue(
    conn: &Connection,
    name: &str,
    passive: bool,
    exclusive: bool,
    args: FieldTable,
) -> Outcome {
    let ch = channel(conn).await;
    outcome(
        step(
            "queue_declare",
            ch.queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive,
                    exclusive,
                    ..Default::default()
                },
                args,
            ),
        )
        .await,
    )
}

async fn queue_bind(conn: &Connection, q: &str, x: &str, key: &str, unbind: bool) -> Outcome {
    let ch = channel(conn).await;
    if unbind {
        outcome(
            step(
                "queue_unbind",
                ch.queue_unbind(q.into(), x.into(), key.into(), FieldTable::default()),
            )
            .await,
        )
    } else {
        outcome(
            step(
                "queue_bind",
                ch.queue_bind(
                    q.into(),
                    x.into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await,
        )
    }
}

async fn exchange_bind(conn: &Connection, dest: &str, src: &str, key: &str) -> Outcome {
    let ch = channel(conn).await;
    outcome(
        step(
            "exchange_bind",
            ch.exchange_bind(
                dest.into(),
                src.into(),
                key.into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await,
    )
}

/// Publishes one message on `ch` (in confirm mode) and waits for its confirm: Ok, or
/// the channel's error.
async fn publish_on(ch: &Channel, x: &str, key: &str) -> Outcome {
    outcome(
        step("publish", async {
            ch.basic_publish(
                x.into(),
                key.into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default(),
            )
            .await?
            .await
        })
        .await,
    )
}

async fn publish(conn: &Connection, x: &str, key: &str) -> Outcome {
    let ch = confirm_channel(conn).await;
    publish_on(&ch, x, key).await
}

fn args(entries: &[(&str, &str)]) -> FieldTable {
    let e: Vec<(&str, lapin::types::AMQPValue)> = entries.iter().map(|(k, v)| (*k, s(v))).collect();
    table(&e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_and_delete_need_configure() {
    let b = Broker::start();
    let mut t = Setup::allowed_only(&b);
    let guest = connect(&b.uri()).await;
    let gch = channel(&guest).await;
    let (dx, dq) = (t.denied("x"), t.denied("q"));
    t.exchange(&gch, &dx, ExchangeKind::Direct, false).await;
    t.queue(&gch, &dq).await;
    let user = t.user_conn().await;
    let direct = || ExchangeKind::Direct;
    let none = FieldTable::default;

    // exchange.declare: configure on the exchange.
    let ax = t.allowed("x");
    t.made_exchange(&ax);
    assert_eq!(
        declare_exchange(&user, &ax, direct(), false, none()).await,
        Ok(())
    );
    let dx2 = t.denied("x2");
    assert_eq!(
        declare_exchange(&user, &dx2, direct(), false, none()).await,
        refused(t.refusal("exchange", &dx2))
    );
    // Redeclaring an existing exchange is checked too; a passive declaration is not.
    assert_eq!(
        declare_exchange(&user, &dx, direct(), false, none()).await,
        refused(t.refusal("exchange", &dx))
    );
    assert_eq!(
        declare_exchange(&user, &dx, direct(), true, none()).await,
        Ok(())
    );
    let default_refused =
        refused("ACCESS_REFUSED - operation not permitted on the default exchange".into());
    assert_eq!(
        declare_exchange(&user, "", direct(), false, none()).await,
        default_refused
    );
    assert_eq!(
        declare_exchange(&user, "", direct(), true, none()).await,
        default_refused
    );
    // The type is checked first (503 is a connection error: a connection of its own),
    // then the default exchange, then the permission. The type's name is new each run:
    // RabbitMQ says "invalid" rather than "unknown" for a name that happens to be an
    // Erlang atom already.
    let other = t.user_conn().await;
    let bogus = format!("x-{}", t.tag);
    assert_eq!(
        declare_exchange(
            &other,
            &dx2,
            ExchangeKind::Custom(bogus.as_str().into()),
            false,
            none()
        )
        .await,
        Err((
            503,
            format!("COMMAND_INVALID - unknown exchange type '{bogus}'")
        ))
    );
    // A reserved name is refused by permission first when the pattern does not allow it.
    assert_eq!(
        declare_exchange(&user, "amq.wt-perm-x", direct(), false, none()).await,
        refused(t.refusal("exchange", "amq.wt-perm-x"))
    );
    // A new exchange with an alternate exchange: read on it, write on the alternate.
    let ax_ae = t.allowed("x-ae");
    t.made_exchange(&ax_ae);
    assert_eq!(
        declare_exchange(
            &user,
            &ax_ae,
            direct(),
            false,
            args(&[("alternate-exchange", &dx)])
        )
        .await,
        refused(t.refusal("exchange", &dx))
    );
    assert_eq!(
        declare_exchange(
            &user,
            &ax_ae,
            direct(),
            false,
            args(&[("alternate-exchange", &ax)])
        )
        .await,
        Ok(())
    );

    // exchange.delete: the default exchange, a system exchange, then configure (even
    // for an exchange that does not exist).
    assert_eq!(delete_exchange(&user, "").await, default_refused);
    assert_eq!(
        delete_exchange(&user, "amq.direct").await,
        refused(
            "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"
                .into()
        )
    );
    assert_eq!(
        delete_exchange(&user, &dx).await,
        refused(t.refusal("exchange", &dx))
    );
    let gone = t.denied("nothere");
    assert_eq!(
        delete_exchange(&user, &gone).await,
        refused(t.refusal("exchange", &gone))
    );
    assert_eq!(delete_exchange(&user, &ax_ae).await, Ok(()));

    // queue.declare: configure on the queue, a server-named one included.
    let aq = t.allowed("q");
    t.made_queue(&aq);
    assert_eq!(
        declare_queue(&user, &aq, false, false, none()).await,
        Ok(())
    );
    let dq2 = t.denied("q2");
    assert_eq!(
        declare_queue(&user, &dq2, false, false, none()).await,
        refused(t.refusal("queue", &dq2))
    );
    assert_eq!(
        declare_queue(&user, &dq, false, false, none()).await,
        refused(t.refusal("queue", &dq))
    );
    assert_eq!(declare_queue(&user, &dq, true, false, none()).await, Ok(()));
    for exclusive in [false, true] {
        let (code, text) = declare_queue(&user, "", false, exclusive, none())
            .await
            .unwrap_err();
        assert_eq!(code, 403);
        let prefix = "ACCESS_REFUSED - access to queue 'amq.gen-";
        let suffix = format!("' in vhost '/' refused for user '{}'", t.user);
        assert!(
            text.starts_with(prefix) && text.ends_with(&suffix),
            "{text}"
        );
    }
    // A reserved queue name is refused before the permission.
    assert_eq!(
        declare_queue(&user, "amq.wt-perm-q", false, false, none()).await,
        refused(
            "ACCESS_REFUSED - queue name 'amq.wt-perm-q' contains reserved prefix 'amq.*'".into()
        )
    );
    // A new queue with a dead-letter exchange: write on that exchange.
    let aq_dlx = t.allowed("q-dlx");
    t.made_queue(&aq_dlx);
    assert_eq!(
        declare_queue(
            &user,
            &aq_dlx,
            false,
            false,
            args(&[("x-dead-letter-exchange", &dx)])
        )
        .await,
        refused(t.refusal("exchange", &dx))
    );
    assert_eq!(
        declare_queue(
            &user,
            &aq_dlx,
            false,
            false,
            args(&[("x-dead-letter-exchange", &ax)])
        )
        .await,
        Ok(())
    );

    // queue.delete: configure, before the queue is looked up.
    let ch = channel(&user).await;
    let r = step(
        "delete denied",
        ch.queue_delete(dq.as_str().into(), QueueDeleteOptions::default()),
    )
    .await;
    assert_eq!(outcome(r), refused(t.refusal("queue", &dq)));
    let ch = channel(&user).await;
    let r = step(
        "delete missing",
        ch.queue_delete(gone.as_str().into(), QueueDeleteOptions::default()),
    )
    .await;
    assert_eq!(outcome(r), refused(t.refusal("queue", &gone)));
    let ch = channel(&user).await;
    let r = step(
        "delete allowed",
        ch.queue_delete(aq.as_str().into(), QueueDeleteOptions::default()),
    )
    .await;
    assert_eq!(outcome(r), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_needs_write_on_destination_and_read_on_source() {
    let b = Broker::start();
    let mut t = Setup::allowed_only(&b);
    let guest = connect(&b.uri()).await;
    let gch = channel(&guest).await;
    let (ax, dx, aq, dq) = (t.allowed("x"), t.denied("x"), t.allowed("q"), t.denied("q"));
    let ax2 = t.allowed("x2");
    for x in [&ax, &dx, &ax2] {
        t.exchange(&gch, x, ExchangeKind::Direct, false).await;
    }
    for q in [&aq, &dq] {
        t.queue(&gch, q).await;
    }
    let user = t.user_conn().await;
    let default_refused =
        refused("ACCESS_REFUSED - operation not permitted on the default exchange".into());

    assert_eq!(queue_bind(&user, &aq, &ax, "k", false).await, Ok(()));
    assert_eq!(
        queue_bind(&user, &dq, &ax, "k", false).await,
        refused(t.refusal("queue", &dq))
    );
    assert_eq!(
        queue_bind(&user, &aq, &dx, "k", false).await,
        refused(t.refusal("exchange", &dx))
    );
    // The destination is checked first.
    assert_eq!(
        queue_bind(&user, &dq, &dx, "k", false).await,
        refused(t.refusal("queue", &dq))
    );
    assert_eq!(
        queue_bind(&user, &aq, "", "k", false).await,
        default_refused
    );
    // Both checks come before either end is looked up.
    let gone_q = t.allowed("nothere-q");
    assert_eq!(
        queue_bind(&user, &gone_q, &dx, "k", false).await,
        refused(t.refusal("exchange", &dx))
    );
    let gone_x = t.allowed("nothere-x");
    assert_eq!(
        queue_bind(&user, &aq, &gone_x, "k", false).await,
        Err((
            404,
            format!("NOT_FOUND - no exchange '{gone_x}' in vhost '/'")
        ))
    );
    // queue.unbind is checked the same way.
    assert_eq!(
        queue_bind(&user, &aq, &dx, "k", true).await,
        refused(t.refusal("exchange", &dx))
    );
    assert_eq!(
        queue_bind(&user, &dq, &ax, "k", true).await,
        refused(t.refusal("queue", &dq))
    );
    assert_eq!(queue_bind(&user, &aq, &ax, "k", true).await, Ok(()));

    // exchange.bind: write on the destination, read on the source.
    assert_eq!(exchange_bind(&user, &ax2, &ax, "k").await, Ok(()));
    assert_eq!(
        exchange_bind(&user, &dx, &ax, "k").await,
        refused(t.refusal("exchange", &dx))
    );
    assert_eq!(
        exchange_bind(&user, &ax2, &dx, "k").await,
        refused(t.refusal("exchange", &dx))
    );
    // The default exchange as destination: refused after its write check passed.
    assert_eq!(exchange_bind(&user, "", &ax, "k").await, default_refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_get_and_purge_need_read() {
    let b = Broker::start();
    let mut t = Setup::allowed_only(&b);
    let guest = connect(&b.uri()).await;
    let gch = channel(&guest).await;
    let (aq, dq) = (t.allowed("q"), t.denied("q"));
    for q in [&aq, &dq] {
        t.queue(&gch, q).await;
    }
    let gone = t.denied("nothere");
    let user = t.user_conn().await;
    for q in [&aq, &dq, &gone] {
        let want = if q == &aq {
            Ok(())
        } else {
            refused(t.refusal("queue", q))
        };
        let ch = channel(&user).await;
        let r = step(
            "consume",
            ch.basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        assert_eq!(outcome(r), want, "consume {q}");
        let ch = channel(&user).await;
        let r = step(
            "get",
            ch.basic_get(q.as_str().into(), BasicGetOptions::default()),
        )
        .await;
        assert_eq!(outcome(r), want, "get {q}");
        let ch = channel(&user).await;
        let r = step(
            "purge",
            ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()),
        )
        .await;
        assert_eq!(outcome(r), want, "purge {q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_needs_write_on_the_exchange() {
    let b = Broker::start();
    let mut t = Setup::allowed_only(&b);
    let guest = connect(&b.uri()).await;
    let gch = channel(&guest).await;
    let (ax, dx, ai, di) = (
        t.allowed("x"),
        t.denied("x"),
        t.allowed("int"),
        t.denied("int"),
    );
    t.exchange(&gch, &ax, ExchangeKind::Direct, false).await;
    t.exchange(&gch, &dx, ExchangeKind::Direct, false).await;
    t.exchange(&gch, &ai, ExchangeKind::Direct, true).await;
    t.exchange(&gch, &di, ExchangeKind::Direct, true).await;
    let user = t.user_conn().await;

    assert_eq!(publish(&user, &ax, "k").await, Ok(()));
    assert_eq!(
        publish(&user, &dx, "k").await,
        refused(t.refusal("exchange", &dx))
    );
    // The default exchange is matched as amq.default.
    assert_eq!(publish(&user, "", "k").await, Ok(()));
    // The permission before the exchange's existence, then internal.
    let (agone, dgone) = (t.allowed("nothere"), t.denied("nothere"));
    assert_eq!(
        publish(&user, &agone, "k").await,
        Err((
            404,
            format!("NOT_FOUND - no exchange '{agone}' in vhost '/'")
        ))
    );
    assert_eq!(
        publish(&user, &dgone, "k").await,
        refused(t.refusal("exchange", &dgone))
    );
    assert_eq!(
        publish(&user, &ai, "k").await,
        refused(format!(
            "ACCESS_REFUSED - cannot publish to internal exchange '{ai}' in vhost '/'"
        ))
    );
    assert_eq!(
        publish(&user, &di, "k").await,
        refused(t.refusal("exchange", &di))
    );

    // Without the amq.default pattern the default exchange is refused under that name.
    t.set_permissions("^allowed-", "^allowed-", "^allowed-");
    let user2 = t.user_conn().await;
    assert_eq!(
        publish(&user2, "", "k").await,
        refused(t.refusal("exchange", "amq.default"))
    );

    // In a transaction the publish itself is refused, not the commit. Raw frames: with a
    // client library the broker's channel.close can arrive before the library sends
    // tx.commit, which it then refuses locally without telling the broker's reason.
    let mut raw = RawClient::handshake_with(
        t.port,
        &HandshakeOpts {
            user: t.user.clone(),
            pass: "pw".into(),
            ..Default::default()
        },
    );
    raw.open_channel(1);
    raw.send_method(1, &[0, 90, 0, 10]); // tx.select
    raw.expect_method(1, 90, 11);
    raw.send_method(1, &basic_publish(&dx, "k", false));
    raw.send_frame(FRAME_HEADER, 1, &content_header(1));
    raw.send_frame(FRAME_BODY, 1, b"m");
    let (code, text, class, method) = raw.expect_channel_close(1);
    assert_eq!(
        (code, text, class, method),
        (403, t.refusal("exchange", &dx), 60, 40)
    );
}

/// A publisher's channel remembers that it may publish to an exchange; narrowing the
/// user's permissions reaches it all the same. RabbitMQ clears a channel's permission
/// cache when the channel hibernates (idle for a second), Warren at once: the refusal
/// is waited for, idling between tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_permission_reaches_an_open_channel() {
    let b = Broker::start();
    let mut t = Setup::allowed_only(&b);
    let guest = connect(&b.uri()).await;
    let gch = channel(&guest).await;
    let ax = t.allowed("x");
    t.exchange(&gch, &ax, ExchangeKind::Fanout, false).await;
    let user = t.user_conn().await;
    let ch = confirm_channel(&user).await;
    for _ in 0..3 {
        assert_eq!(publish_on(&ch, &ax, "k").await, Ok(()));
    }
    t.set_permissions("^allowed-", "^nothing$", "^allowed-");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let last = loop {
        let r = publish_on(&ch, &ax, "k").await;
        if r.is_err() || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    };
    assert_eq!(last, refused(t.refusal("exchange", &ax)));
    // Widened again, a new channel publishes.
    t.set_permissions("^allowed-", "^allowed-", "^allowed-");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = publish(&user, &ax, "k").await;
        if r.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused: {r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Sets the user's topic permission on `exchange` in "/"; false when the broker has
/// no such endpoint (a build without `/api/topic-permissions`).
fn set_topic_permission(t: &Setup, exchange: &str, write: &str, read: &str) -> bool {
    let r = t.api.put(
        &format!("/api/topic-permissions/%2F/{}", enc(&t.user)),
        &json!({"exchange": exchange, "write": write, "read": read}),
    );
    if r.status == 404 || r.status == 405 {
        println!("skipped: no /api/topic-permissions endpoint ({})", r.status);
        return false;
    }
    assert!(matches!(r.status, 201 | 204), "set topic permission: {r:?}");
    true
}

/// Topic authorisation: on a topic exchange with a topic permission for the user, a
/// publish's routing key must match the write pattern and a binding key the read
/// pattern; other exchanges, and users without a topic permission, are not checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_check_routing_and_binding_keys() {
    let b = Broker::start();
    let mut t = Setup::new(&b, "^allowed-", "^allowed-", "^allowed-");
    let guest = connect(&b.uri()).await;
    let gch = channel(&guest).await;
    let (tx, tx2, dx, aq) = (
        t.allowed("t"),
        t.allowed("t2"),
        t.allowed("d"),
        t.allowed("q"),
    );
    t.exchange(&gch, &tx, ExchangeKind::Topic, false).await;
    t.exchange(&gch, &tx2, ExchangeKind::Topic, false).await;
    t.exchange(&gch, &dx, ExchangeKind::Direct, false).await;
    t.queue(&gch, &aq).await;
    if !set_topic_permission(&t, &tx, "^pub\\.", "^sub\\.") {
        return;
    }
    // A direct exchange with the same kind of permission is never checked.
    assert!(set_topic_permission(&t, &dx, "^pub\\.", "^sub\\."));
    let user = t.user_conn().await;
    let topic_refused = |rk: &str, x: &str| {
        refused(format!(
            "ACCESS_REFUSED - access to topic '{rk}' in exchange '{x}' in vhost '/' refused for user '{}'",
            t.user
        ))
    };
    let ch = confirm_channel(&user).await;
    assert_eq!(publish_on(&ch, &tx, "pub.a").await, Ok(()));
    assert_eq!(publish_on(&ch, &tx, "pub.b").await, Ok(()));
    // The same channel, the same exchange, another key: checked per key.
    assert_eq!(
        publish_on(&ch, &tx, "other.a").await,
        topic_refused("other.a", &tx)
    );
    assert_eq!(
        publish(&user, &tx2, "other.a").await,
        Ok(()),
        "no topic permission on t2"
    );
    assert_eq!(
        publish(&user, &dx, "other.a").await,
        Ok(()),
        "not a topic exchange"
    );

    assert_eq!(queue_bind(&user, &aq, &tx, "sub.#", false).await, Ok(()));
    assert_eq!(
        queue_bind(&user, &aq, &tx, "pub.#", false).await,
        topic_refused("pub.#", &tx)
    );
    assert_eq!(
        queue_bind(&user, &aq, &tx, "pub.#", true).await,
        topic_refused("pub.#", &tx)
    );
    assert_eq!(queue_bind(&user, &aq, &tx, "sub.#", true).await, Ok(()));
    assert_eq!(exchange_bind(&user, &tx2, &tx, "sub.x").await, Ok(()));
    assert_eq!(
        exchange_bind(&user, &tx2, &tx, "pub.x").await,
        topic_refused("pub.x", &tx)
    );
    assert_eq!(queue_bind(&user, &aq, &dx, "other", false).await, Ok(()));
}
