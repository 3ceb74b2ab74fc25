//! Connection negotiation and frame-level error handling, byte by byte.
mod support;

use std::time::{Duration, Instant};
use support::*;

fn healthy(b: &Broker) {
    block_on(roundtrip(&b.uri()));
}

fn bad_header(bytes: &[u8]) {
    let b = Broker::start();
    let mut c = b.connect_raw();
    c.send(bytes);
    let reply = c
        .read_bytes(8, STEP)
        .expect("server must answer with its protocol header");
    assert_eq!(&reply, PROTOCOL_HEADER);
    assert!(
        c.is_closed_within(Duration::from_secs(5)),
        "socket not closed"
    );
    healthy(&b);
}

#[test]
fn other_amqp_version_gets_091_header_and_close() {
    bad_header(b"AMQP\x01\x01\x00\x0a");
}

#[test]
fn amqp_1_0_header_gets_091_header_and_close() {
    bad_header(b"AMQP\x00\x01\x00\x00");
}

#[test]
fn http_request_gets_091_header_and_close() {
    bad_header(b"GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn tls_client_hello_gets_091_header_and_close() {
    // First bytes of a TLS 1.2 ClientHello record.
    bad_header(&[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5a, 0x1b,
    ]);
}

#[test]
fn connection_start_advertises_capabilities() {
    let b = Broker::start();
    let mut c = b.connect_raw();
    c.start().unwrap();
    let caps = c
        .server_properties
        .get("capabilities")
        .and_then(|v| v.as_table())
        .expect("capabilities table")
        .clone();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            caps.get(cap).and_then(|v| v.as_bool()),
            Some(true),
            "capability {cap}"
        );
    }
    let mechs: Vec<&str> = c.mechanisms.split(' ').collect();
    assert!(mechs.contains(&"PLAIN"), "mechanisms {:?}", c.mechanisms);
    assert!(mechs.contains(&"AMQPLAIN"), "mechanisms {:?}", c.mechanisms);
    assert_eq!(c.locales, "en_US");
    for key in ["product", "version", "platform", "copyright", "information"] {
        assert!(
            c.server_properties
                .get(key)
                .and_then(|v| v.as_str())
                .is_some(),
            "server property {key} missing: {:?}",
            c.server_properties
        );
    }
    println!("server properties: {:?}", c.server_properties);
    println!("mechanisms: {:?}", c.mechanisms);
}

#[test]
fn plain_login() {
    let b = Broker::start();
    let c = RawClient::handshake(b.port);
    c.close();
    healthy(&b);
}

#[test]
fn amqplain_login() {
    let b = Broker::start();
    let c = RawClient::handshake_with(
        b.port,
        &HandshakeOpts {
            amqplain: true,
            ..Default::default()
        },
    );
    c.close();
    healthy(&b);
}

#[test]
fn wrong_password_is_access_refused() {
    let b = Broker::start();
    for amqplain in [false, true] {
        let mut c = b.connect_raw();
        c.start().unwrap();
        let start_ok = if amqplain {
            connection_start_ok_amqplain("guest", "wrong")
        } else {
            connection_start_ok_plain("guest", "wrong")
        };
        c.send_method(0, &start_ok);
        let (code, text, class, meth) = c.expect_close();
        assert_eq!(code, 403);
        let mech = if amqplain { "AMQPLAIN" } else { "PLAIN" };
        assert_eq!(
            text,
            format!(
                "ACCESS_REFUSED - Login was refused using authentication mechanism {mech}. \
                 For details see the broker logfile."
            )
        );
        assert_eq!((class, meth), (0, 0));
        assert!(c.is_closed_within(STEP));
    }
    healthy(&b);
}

#[test]
fn unknown_user_is_access_refused() {
    let b = Broker::start();
    let mut c = b.connect_raw();
    c.start().unwrap();
    c.send_method(0, &connection_start_ok_plain("no-such-user-xyz", "x"));
    let (code, text, _, _) = c.expect_close();
    assert_eq!(code, 403);
    assert!(
        text.starts_with("ACCESS_REFUSED - Login was refused"),
        "{text}"
    );
    healthy(&b);
}

#[test]
fn unsupported_mechanism_is_refused() {
    let b = Broker::start();
    let mut c = b.connect_raw();
    c.start().unwrap();
    c.send_method(0, &connection_start_ok("EXTERNAL", b""));
    // RabbitMQ treats this as a handshake error: no connection.close is sent, the
    // socket is just closed (after a deliberate ~3 s anti-DoS delay in RabbitMQ).
    let started = Instant::now();
    let f = c.read_frame(Duration::from_secs(10));
    assert!(f.is_none(), "expected a silent close, got {f:?}");
    assert!(c.eof, "socket not closed within 10 s");
    println!("EXTERNAL -> silent close after {:?}", started.elapsed());
    healthy(&b);
}

#[test]
fn tune_proposal() {
    let b = Broker::start();
    let mut c = b.connect_raw();
    c.login(&HandshakeOpts::default()).unwrap();
    let t = c.server_tune.unwrap();
    println!("server tune: {t:?}");
    // Warren's defaults (RabbitMQ 3.10's are the same).
    assert_eq!(t.channel_max, 2047);
    assert_eq!(t.frame_max, 131072);
    assert_eq!(t.heartbeat, 60);
    healthy(&b);
}

/// Publishes `body` on channel 1 as frames whose total size is at most `frame_max`.
fn publish_raw(c: &mut RawClient, queue: &str, body: &[u8], frame_max: usize) {
    c.send_method(1, &basic_publish("", queue, false));
    c.send_frame(FRAME_HEADER, 1, &content_header(body.len() as u64));
    for chunk in body.chunks(frame_max - 8) {
        c.send_frame(FRAME_BODY, 1, chunk);
    }
}

#[test]
fn client_frame_max_is_honoured() {
    let b = Broker::start();
    let mut c = RawClient::handshake_with(b.port, &HandshakeOpts::frame_max(4096));
    c.open_channel(1);
    let q = unique("fmax");
    c.send_method(1, &queue_declare(&q, true, false));
    c.expect_method(1, 50, 11);
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    publish_raw(&mut c, &q, &body, 4096);
    c.send_method(1, &basic_consume(&q, "ctag", true));
    c.expect_method(1, 60, 21);
    c.expect_method(1, 60, 60); // basic.deliver
    let h = c.read_frame(STEP).expect("content header");
    assert_eq!(h.kind, FRAME_HEADER);
    let mut got = Vec::new();
    while got.len() < body.len() {
        let f = c.read_frame(STEP).expect("body frame");
        assert_eq!(f.kind, FRAME_BODY);
        assert!(
            f.payload.len() + 8 <= 4096,
            "body frame of {} bytes exceeds frame_max 4096",
            f.payload.len() + 8
        );
        got.extend_from_slice(&f.payload);
    }
    assert_eq!(got, body);
    c.close();
    healthy(&b);
}

#[test]
fn unknown_vhost_is_not_allowed() {
    let b = Broker::start();
    let mut c = b.connect_raw();
    c.login(&HandshakeOpts::default()).unwrap();
    let vhost = unique("novhost");
    c.send_method(0, &connection_open(&vhost));
    let (code, text, class, meth) = c.expect_close();
    assert_eq!(code, 530);
    assert_eq!(text, format!("NOT_ALLOWED - vhost {vhost} not found"));
    assert_eq!((class, meth), (10, 40));
    assert!(c.is_closed_within(STEP));
    healthy(&b);
}

fn small_frame_client(b: &Broker) -> RawClient {
    let mut c = RawClient::handshake_with(b.port, &HandshakeOpts::frame_max(4096));
    c.open_channel(1);
    c
}

#[test]
fn frame_larger_than_frame_max_is_frame_error() {
    let b = Broker::start();
    let mut c = small_frame_client(&b);
    c.send_method(1, &basic_publish("", "nowhere", false));
    c.send_frame(FRAME_HEADER, 1, &content_header(10_000));
    c.send_frame(FRAME_BODY, 1, &[7u8; 10_000]);
    let (code, text, class, meth) = c.expect_close();
    assert_eq!(code, 501);
    // RabbitMQ reports the largest allowed *payload* (frame_max - 8).
    assert_eq!(
        text,
        "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,10000,4088}"
    );
    assert_eq!((class, meth), (0, 0));
    assert!(c.is_closed_within(STEP));
    healthy(&b);
}

#[test]
fn huge_frame_size_is_rejected_without_waiting_for_payload() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    let started = Instant::now();
    // Only the 7-byte frame header; the payload never comes.
    c.send(&[FRAME_BODY, 0, 1, 0xff, 0xff, 0xff, 0xff]);
    let (code, text, _, _) = c.expect_close_within(Duration::from_secs(3));
    assert_eq!(code, 501);
    println!(
        "2^32-1 frame -> {code} {text:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(
        text,
        "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4294967295,131064}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    healthy(&b);
}

#[test]
fn bad_frame_end_is_frame_error() {
    let b = Broker::start();
    let mut c = RawClient::handshake(b.port);
    let mut f = frame(FRAME_METHOD, 1, &channel_open());
    *f.last_mut().unwrap() = 0x00;
    c.send(&f);
    let (code, text, class, meth) = c.expect_close();
    assert_eq!(code, 501);
    println!("bad frame end -> {code} {text:?} {class}.{meth}");
    assert_eq!(
        text,
        "FRAME_ERROR - type 1, all octets = <<0,20,0,10,0>>: {invalid_frame_end_marker,0}"
    );
    assert_eq!((class, meth), (0, 0));
    healthy(&b);
}

#[test]
fn method_on_unopened_channel_is_channel_error() {
    let b = Broker::start();
    let mut c = RawClient::handshake(b.port);
    c.send_method(5, &queue_declare("", true, false));
    let (code, text, class, meth) = c.expect_close();
    assert_eq!(code, 504);
    assert_eq!(text, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((class, meth), (50, 10));
    healthy(&b);
}

#[test]
fn content_header_without_publish_is_unexpected_frame() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    c.send_frame(FRAME_HEADER, 1, &content_header(3));
    let (code, text, class, meth) = c.expect_close();
    assert_eq!(code, 505);
    println!("stray header -> {code} {text:?} {class}.{meth}");
    assert_eq!(
        text,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    );
    healthy(&b);
}

#[test]
fn body_longer_than_declared_is_connection_error() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    c.send_method(1, &basic_publish("", "nowhere", false));
    c.send_frame(FRAME_HEADER, 1, &content_header(3));
    c.send_frame(FRAME_BODY, 1, b"too long");
    // RabbitMQ 3.10 does not notice the overrun by itself: the channel keeps waiting
    // for body frames; the next method frame on it is then an unexpected frame. Warren
    // notices at the overlong body frame and closes with the same code right away.
    c.send_method(1, &basic_publish("", "nowhere", false));
    let (code, text, class, meth) = c.expect_close();
    println!("long body -> {code} {text:?} {class}.{meth}");
    assert_eq!(code, 505);
    assert!(
        text == "UNEXPECTED_FRAME - expected content body, got non content body frame instead"
            || text == "UNEXPECTED_FRAME - body of 8 bytes is longer than the 3 bytes its header declared",
        "{text}"
    );
    assert_eq!((class, meth), (60, 40));
    healthy(&b);
}

#[test]
fn heartbeat_on_nonzero_channel_is_connection_error() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    c.send_frame(FRAME_HEARTBEAT, 1, &[]);
    let (code, text, class, meth) = c.expect_close();
    println!("heartbeat on channel 1 -> {code} {text:?} {class}.{meth}");
    assert_eq!(code, 505);
    assert_eq!(text, "UNEXPECTED_FRAME - type 8, all octets = <<>>");
    assert_eq!((class, meth), (0, 0));
    healthy(&b);
}

#[test]
fn second_channel_open_is_channel_error() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    c.send_method(1, &channel_open());
    let (code, text, class, meth) = c.expect_close();
    assert_eq!(code, 504);
    assert_eq!(text, "CHANNEL_ERROR - second 'channel.open' seen");
    assert_eq!((class, meth), (20, 10));
    healthy(&b);
}

#[test]
fn frame_of_exactly_frame_max_is_accepted() {
    let b = Broker::start();
    let mut c = small_frame_client(&b);
    let q = unique("fexact");
    c.send_method(1, &queue_declare(&q, true, false));
    c.expect_method(1, 50, 11);
    let body = vec![9u8; 4096 - 8];
    publish_raw(&mut c, &q, &body, 4096);
    c.send_method(
        1,
        &method(
            60,
            70,
            &Args::new().short(0).shortstr(&q).bits(&[true]).build(),
        ),
    );
    c.expect_method(1, 60, 71); // get-ok
    let h = c.read_frame(STEP).unwrap();
    assert_eq!(h.kind, FRAME_HEADER);
    let f = c.read_frame(STEP).unwrap();
    assert_eq!((f.kind, f.payload.len()), (FRAME_BODY, 4088));
    c.close();
    healthy(&b);
}

/// RabbitMQ's size check allows a FRAME_SIZE_FUDGE of 8 bytes: payloads up to
/// frame_max bytes are accepted; the error text still names frame_max - 8.
#[test]
fn frame_size_fudge() {
    let b = Broker::start();
    let mut c = small_frame_client(&b);
    let q = unique("ffudge");
    c.send_method(1, &queue_declare(&q, true, false));
    c.expect_method(1, 50, 11);
    c.send_method(1, &basic_publish("", &q, false));
    c.send_frame(FRAME_HEADER, 1, &content_header(4096));
    c.send_frame(FRAME_BODY, 1, &[1u8; 4096]);
    // The publish above must not have killed the connection.
    c.send_method(
        1,
        &method(
            60,
            70,
            &Args::new().short(0).shortstr(&q).bits(&[true]).build(),
        ),
    );
    c.expect_method(1, 60, 71);
    assert_eq!(c.read_frame(STEP).unwrap().kind, FRAME_HEADER);
    // Re-framed for delivery: 4088 + 8 bytes.
    assert_eq!(c.read_frame(STEP).unwrap().payload.len(), 4088);
    assert_eq!(c.read_frame(STEP).unwrap().payload.len(), 8);
    c.send_method(1, &basic_publish("", &q, false));
    c.send_frame(FRAME_HEADER, 1, &content_header(4097));
    c.send_frame(FRAME_BODY, 1, &[1u8; 4097]);
    let (code, text, _, _) = c.expect_close();
    assert_eq!(code, 501);
    assert_eq!(
        text,
        "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}"
    );
    healthy(&b);
}

#[test]
fn channel_id_above_channel_max_is_accepted() {
    // RabbitMQ 3.10 only limits the *number* of open channels, not their ids.
    let b = Broker::start();
    let mut c = RawClient::handshake_with(b.port, &HandshakeOpts::channel_max(10));
    c.open_channel(11);
    c.open_channel(500);
    c.close();
    healthy(&b);
}

#[test]
fn channel_count_above_channel_max_is_not_allowed() {
    let b = Broker::start();
    let mut c = RawClient::handshake_with(b.port, &HandshakeOpts::channel_max(10));
    for ch in 1..=10 {
        c.open_channel(ch);
    }
    c.send_method(11, &channel_open());
    let (code, text, class, meth) = c.expect_close();
    println!("11th channel with channel_max 10 -> {code} {text:?} {class}.{meth}");
    assert_eq!(code, 530);
    assert_eq!(
        text,
        "NOT_ALLOWED - number of channels opened (10) has reached the negotiated channel_max (10)"
    );
    assert_eq!((class, meth), (0, 0));
    healthy(&b);
}

#[test]
fn silent_client_is_disconnected_by_heartbeat_timeout() {
    let b = Broker::start();
    let mut c = RawClient::handshake_with(b.port, &HandshakeOpts::heartbeat(1));
    let started = Instant::now();
    assert!(
        c.is_closed_within(Duration::from_secs(6)),
        "silent client still connected after 6 s"
    );
    println!("silent client closed after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(900));
    healthy(&b);
}

#[test]
fn heartbeating_client_stays_connected() {
    let b = Broker::start();
    let mut c = RawClient::handshake_with(b.port, &HandshakeOpts::heartbeat(1));
    let end = Instant::now() + Duration::from_secs(6);
    let mut server_heartbeats = 0;
    let mut next_beat = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next_beat {
            c.send_heartbeat();
            next_beat += Duration::from_millis(400);
        }
        if let Some(f) = c.read_frame(Duration::from_millis(100)) {
            assert_eq!(f.kind, FRAME_HEARTBEAT, "unexpected frame {f:?}");
            assert_eq!(f.channel, 0);
            server_heartbeats += 1;
        }
        assert!(!c.eof, "heartbeating client was disconnected");
    }
    assert!(
        server_heartbeats >= 2,
        "server sent only {server_heartbeats} heartbeats in 6 s"
    );
    // Still usable.
    c.open_channel(1);
    c.close();
    healthy(&b);
}

#[test]
fn client_connection_close_gets_close_ok() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    c.send_method(0, &connection_close(200, "Goodbye"));
    c.expect_method(0, 10, 51);
    // Note: RabbitMQ leaves closing the socket to the client (it only force-closes
    // after 30 s), so nothing is asserted about who closes first.
    healthy(&b);
}

/// More frames in one write than the broker handles per connection per turn (1,024),
/// followed by a method that needs a reply, all small enough to be read in one go: the
/// leftover frames sit in the broker's read buffer with nothing left in the socket, so
/// no readiness event will come. The broker must still handle them on a later turn.
/// (A regression: the flooding-publisher pika test hung on its final queue.declare.)
#[test]
fn frames_left_over_from_a_spent_budget_are_handled_without_a_new_event() {
    let b = Broker::start();
    let mut c = RawClient::with_channel(b.port);
    let q = unique("leftover");
    let mut burst = Vec::new();
    for _ in 0..1100 {
        burst.extend_from_slice(&frame(FRAME_HEARTBEAT, 0, &[]));
    }
    burst.extend_from_slice(&frame(FRAME_METHOD, 1, &queue_declare(&q, true, false)));
    assert!(burst.len() < 16 * 1024, "must fit one read");
    c.send(&burst);
    c.expect_method(1, 50, 11);
    healthy(&b);
}
