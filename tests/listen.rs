//! Listeners: `--bind` addresses, several of them, and who may log in over which.
//!
//! What broke: with `--bind ::` (a dual-stack listener) a client on 127.0.0.1 arrives
//! as ::ffff:127.0.0.1, which was not taken for loopback, so guest was refused; and
//! only one `--bind` was accepted where RabbitMQ listens on both address families.
//! Against RabbitMQ (`WARREN_TEST_PORT`), whose default listener is dual-stack `[::]`,
//! the same connections are checked on its port without flags.
mod support;

use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use support::*;

/// Whether this machine can listen on IPv6 at all.
fn has_ipv6() -> bool {
    TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).is_ok()
        && TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// The broker to test: RabbitMQ as it runs, or Warren with `args`. None = skipped.
fn broker(args: &[&str]) -> Option<Broker> {
    if !has_ipv6() {
        println!("skipped: this machine has no IPv6");
        return None;
    }
    if is_external() {
        return Some(Broker::start());
    }
    Broker::start_with(args)
}

/// guest/guest completes the handshake (connection.open-ok) from `addr`.
fn guest_logs_in(addr: SocketAddr) {
    let mut c = RawClient::connect_to(addr);
    c.do_handshake(&HandshakeOpts::default())
        .unwrap_or_else(|e| panic!("guest over {addr}: {e}"));
    c.open_channel(1);
    c.close();
}

#[test]
fn guest_from_127_0_0_1_on_a_dual_stack_listener_is_loopback() {
    let Some(b) = broker(&["--bind", "::"]) else {
        return;
    };
    // The peer is ::ffff:127.0.0.1 on a [::] listener.
    guest_logs_in(SocketAddr::from(([127, 0, 0, 1], b.port)));
    guest_logs_in(SocketAddr::from((Ipv6Addr::LOCALHOST, b.port)));
    if !b.is_external() {
        // Logged as the IPv4 address it is, as RabbitMQ does.
        assert!(
            wait_until(STEP, || b.logs().contains("127.0.0.1:")),
            "{}",
            b.logs()
        );
    }
}

#[test]
fn several_bind_addresses_each_get_a_listener() {
    let Some(b) = broker(&["--bind", "127.0.0.1", "--bind", "::1"]) else {
        return;
    };
    guest_logs_in(SocketAddr::from(([127, 0, 0, 1], b.port)));
    guest_logs_in(SocketAddr::from((Ipv6Addr::LOCALHOST, b.port)));
}

/// The README's "all interfaces": `--bind :: --bind 0.0.0.0`. Where `::` is
/// dual-stack the IPv4 bind fails with EADDRINUSE and is covered by it (RabbitMQ does
/// the same); both families are served either way.
#[test]
fn bind_all_interfaces_in_both_families() {
    let Some(b) = broker(&["--bind", "0.0.0.0", "--bind", "::"]) else {
        return;
    };
    guest_logs_in(SocketAddr::from(([127, 0, 0, 1], b.port)));
    guest_logs_in(SocketAddr::from((Ipv6Addr::LOCALHOST, b.port)));
}
