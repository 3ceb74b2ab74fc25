//! Warren-only: SIGTERM closes client connections with 320 and exits 0.
mod support;

use std::time::{Duration, Instant};
use support::*;

#[test]
fn sigterm_closes_connections_with_320_and_exits_zero() {
    let Some(mut b) = Broker::spawn_own(&[]) else {
        return;
    };
    let mut c1 = b.handshake();
    c1.open_channel(1);
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
