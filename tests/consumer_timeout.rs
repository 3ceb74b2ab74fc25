//! Warren-only: `--consumer-timeout 1` (seconds). An unacked delivery older than the
//! timeout closes the consumer's channel with 406 and requeues the message.
mod support;

use std::time::{Duration, Instant};
use support::*;

/// Reads basic.deliver + header + body on `channel`; returns
/// (consumer tag, delivery tag, redelivered, body).
fn read_delivery(
    c: &mut RawClient,
    channel: u16,
    within: Duration,
) -> (String, u64, bool, Vec<u8>) {
    let deadline = Instant::now() + within;
    let f = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = c.read_frame(left).expect("no basic.deliver in time");
        if f.kind != FRAME_HEARTBEAT {
            break f;
        }
    };
    assert_eq!(
        (f.channel, f.method_id()),
        (channel, Some((60, 60))),
        "{f:?}"
    );
    let mut a = f.args();
    let tag = a.shortstr();
    let dtag = a.longlong();
    let redelivered = a.octet() & 1 == 1;
    let h = c.read_frame(STEP).expect("content header");
    assert_eq!(h.kind, FRAME_HEADER);
    let size = Reader::new(&h.payload[4..12]).longlong() as usize;
    let mut body = Vec::new();
    while body.len() < size {
        let b = c.read_frame(STEP).expect("body frame");
        assert_eq!(b.kind, FRAME_BODY);
        body.extend_from_slice(&b.payload);
    }
    (tag, dtag, redelivered, body)
}

#[test]
fn unacked_delivery_times_out_and_is_requeued() {
    let Some(b) = Broker::start_with(&["--consumer-timeout", "1"]) else {
        return;
    };
    let q = unique("ctimeout");
    let mut slow = RawClient::with_channel(b.port);
    slow.send_method(1, &queue_declare(&q, false, false));
    slow.expect_method(1, 50, 11);
    slow.send_method(1, &basic_consume(&q, "slow", false));
    slow.expect_method(1, 60, 21);
    slow.send_method(1, &basic_publish("", &q, false));
    slow.send_frame(FRAME_HEADER, 1, &content_header(5));
    slow.send_frame(FRAME_BODY, 1, b"hello");
    let (tag, _, redelivered, body) = read_delivery(&mut slow, 1, STEP);
    assert_eq!(
        (tag.as_str(), redelivered, body.as_slice()),
        ("slow", false, &b"hello"[..])
    );
    let delivered_at = Instant::now();

    // A second consumer, on another connection, waits for the requeued message.
    let mut patient = RawClient::with_channel(b.port);
    patient.send_method(1, &basic_consume(&q, "patient", false));
    patient.expect_method(1, 60, 21);

    let (code, text, class, meth) = slow.expect_channel_close(1);
    let waited = delivered_at.elapsed();
    assert_eq!(code, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value \
         used: 1000 ms. This timeout value can be configured, see consumers doc guide to \
         learn more"
    );
    assert_eq!((class, meth), (0, 0));
    assert!(
        waited < Duration::from_secs(5),
        "timed out only after {waited:?}"
    );

    let (tag, dtag, redelivered, body) = read_delivery(&mut patient, 1, Duration::from_secs(5));
    assert_eq!(tag, "patient");
    assert!(redelivered, "requeued message must be flagged redelivered");
    assert_eq!(body, b"hello");
    patient.send_method(1, &basic_ack(dtag, false));

    // The connection of the slow consumer survives; only the channel was closed.
    slow.open_channel(2);
    slow.send_method(2, &queue_delete(&q));
    slow.expect_method(2, 50, 41);
    slow.close();
    patient.close();
    block_on(roundtrip(&b.uri()));
}

#[test]
fn acked_in_time_is_not_timed_out() {
    let Some(b) = Broker::start_with(&["--consumer-timeout", "1"]) else {
        return;
    };
    let q = unique("ctimeout-ok");
    let mut c = RawClient::with_channel(b.port);
    c.send_method(1, &queue_declare(&q, true, false));
    c.expect_method(1, 50, 11);
    c.send_method(1, &basic_consume(&q, "fast", false));
    c.expect_method(1, 60, 21);
    c.send_method(1, &basic_publish("", &q, false));
    c.send_frame(FRAME_HEADER, 1, &content_header(2));
    c.send_frame(FRAME_BODY, 1, b"ok");
    let (_, dtag, _, _) = read_delivery(&mut c, 1, STEP);
    c.send_method(1, &basic_ack(dtag, false));
    // Nothing may arrive for 2.5 s (well past the 1 s timeout).
    let end = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < end {
        if let Some(f) = c.read_frame(end.saturating_duration_since(Instant::now())) {
            assert_eq!(f.kind, FRAME_HEARTBEAT, "unexpected frame {f:?}");
        }
        assert!(!c.eof, "connection closed");
    }
    c.close();
}
