//! Warren-only: SIGTERM closes client connections with 320 and exits 0; SIGUSR1 logs stats.
mod support;

use std::time::{Duration, Instant};
use support::*;

#[test]
fn sigterm_closes_connections_with_320_and_exits_zero() {
    let Some(mut b) = Broker::spawn_own(&[]) else {
        return;
    };
    let mut c1 = RawClient::with_channel(b.port);
    let mut c2 = b.handshake();
    let started = Instant::now();
    b.sigterm();
    for c in [&mut c1, &mut c2] {
        let (code, text, class, meth) = c.expect_close_within(Duration::from_secs(5));
        assert_eq!(code, 320);
        // RabbitMQ 3.10's text on shutdown.
        assert_eq!(
            text,
            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
        );
        assert_eq!((class, meth), (0, 0));
        assert!(c.is_closed_within(Duration::from_secs(5)));
    }
    let status = b
        .wait_exit(Duration::from_secs(5))
        .expect("warren did not exit within 5 s of SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        b.logs()
    );
    println!("shut down in {:?}", started.elapsed());
}

#[test]
fn sigterm_with_no_clients_exits_zero() {
    let Some(mut b) = Broker::spawn_own(&[]) else {
        return;
    };
    b.sigterm();
    let status = b
        .wait_exit(Duration::from_secs(5))
        .expect("warren did not exit within 5 s of SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        b.logs()
    );
}

#[test]
fn sigusr1_logs_counters_and_the_broker_keeps_serving() {
    let Some(b) = Broker::spawn_own(&[]) else {
        return;
    };
    let mut c = RawClient::with_channel(b.port);
    let q = unique("stats");
    c.send_method(1, &queue_declare(&q, false, false));
    c.expect_method(1, 50, 11);
    for body in [&b"one"[..], b"two", b"three"] {
        c.send_method(1, &basic_publish("", &q, false));
        c.send_frame(FRAME_HEADER, 1, &content_header(body.len() as u64));
        c.send_frame(FRAME_BODY, 1, body);
    }
    // A passive declare answers after the three publishes were handled.
    c.send_method(
        1,
        &method(
            50,
            10,
            &Args::new()
                .short(0)
                .shortstr(&q)
                .bits(&[true, false, false, false, false])
                .table(&[])
                .build(),
        ),
    );
    c.expect_method(1, 50, 11);
    let pid = b.pid().expect("own broker");
    let status = std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let want = "stats: connections 1, channels 1, queues 1, ready 3, unacked 0, \
                resident body bytes 11, rss KiB ";
    assert!(
        wait_until(Duration::from_secs(5), || b.logs().contains(want)),
        "no stats line; logs:\n{}",
        b.logs()
    );
    healthy_roundtrip(&b);
}

fn healthy_roundtrip(b: &Broker) {
    block_on(roundtrip(&b.uri()));
}

/// A client that got its close-ok but never closes its socket lingers for up to 30 s
/// (as on RabbitMQ); a shutdown does not wait for it.
#[test]
fn sigterm_does_not_wait_for_a_lingering_socket() {
    let Some(mut b) = Broker::spawn_own(&[]) else {
        return;
    };
    let mut c = RawClient::with_channel(b.port);
    c.send_method(0, &connection_close(200, "bye"));
    c.expect_method(0, 10, 51);
    let started = Instant::now();
    b.sigterm();
    let status = b
        .wait_exit(Duration::from_secs(5))
        .expect("warren did not exit within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(c.is_closed_within(Duration::from_secs(5)));
    println!("shut down in {:?}", started.elapsed());
}
