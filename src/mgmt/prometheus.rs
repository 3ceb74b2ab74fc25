//! The Prometheus exposition (`GET /metrics` and `/metrics/per-object` on
//! `--prometheus-port`): RabbitMQ 3.10's metric names, types and HELP texts (its
//! `rabbitmq_prometheus` plugin), so a Grafana dashboard built for RabbitMQ shows
//! Warren. Aggregated, each object metric is one unlabelled sum; per object it has
//! RabbitMQ's labels (`vhost` and `queue` for queues, `channel` for connections).
//!
//! Owns nothing; reads the server's counters (`crate::counters`), the broker, the
//! connections and the resource probes (`crate::alarm`). The text is built in one
//! string per scrape.

use std::fmt::Write;

use crate::counters::MsgCounters;
use crate::server::Server;

/// The RabbitMQ release whose plugin's names and labels this exposition follows
/// (`rabbitmq_build_info`'s `rabbitmq_version`; Warren's own is `warren_version`).
pub const RABBITMQ_COMPAT_VERSION: &str = "3.10.8";

/// The queue types RabbitMQ labels its global counters with: Warren's queues are
/// classic ones; the others are printed as 0 so that sums over the label work.
const QUEUE_TYPES: [&str; 3] = [
    "rabbit_classic_queue",
    "rabbit_quorum_queue",
    "rabbit_stream_queue",
];

/// A label value escaped as the text format wants (backslash, quote, newline).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The `# TYPE` and `# HELP` lines of a metric, in RabbitMQ's order.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}\n# HELP {name} {help}");
}

/// A metric with one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The global counters, RabbitMQ's `rabbitmq_global_*` families: (name, help, value,
/// labelled by queue type).
fn globals(g: &MsgCounters) -> [(&'static str, &'static str, u64, bool); 14] {
    [
        ("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers", g.ack, true),
        ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", g.confirm, false),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", g.deliver_no_ack, true),
        ("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", g.deliver, true),
        ("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", g.get_no_ack, true),
        ("rabbitmq_global_messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", g.get, true),
        ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers", g.deliver_get(), true),
        ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message", g.get_empty, true),
        ("rabbitmq_global_messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations", g.publish_confirm, false),
        ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", g.publish, false),
        ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", g.redeliver, true),
        ("rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams", g.routed, false),
        ("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", g.drop_unroutable, false),
        ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", g.return_unroutable, false),
    ]
}

/// (open file descriptors, their soft limit): the entries of /proc/self/fd and
/// RLIMIT_NOFILE; 0 where the OS does not tell.
fn fds() -> (u64, u64) {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        0
    };
    (open, max)
}

/// One channel's figures for the `rabbitmq_channel_*` families.
struct ChannelRow {
    /// The API's channel name ("CONNECTION (N)"), escaped.
    name: String,
    info: crate::ops::ChannelInfo,
    counters: MsgCounters,
}

/// The `rabbitmq_channel_*` families: gauges of a channel's state and its message
/// counters, summed (aggregated) or one sample per channel (`channel` label).
fn channels_families(out: &mut String, server: &Server, per_object: bool) {
    let mut rows = Vec::new();
    for (_, c) in server.conns.iter() {
        let local = c.transport.as_ref().and_then(|t| t.local_addr());
        let conn = crate::ops::connection_name(c.peer, local);
        for ch in &c.channels {
            rows.push(ChannelRow {
                name: escape(&format!("{conn} ({})", ch.id)),
                info: ch.info(),
                counters: ch.stats.now,
            });
        }
    }
    type Col = fn(&ChannelRow) -> u64;
    let families: [(&str, &str, &str, Col); 15] = [
        ("rabbitmq_channel_consumers", "gauge", "Consumers on a channel", |r| r.info.consumers as u64),
        ("rabbitmq_channel_messages_unacked", "gauge", "Delivered but not yet acknowledged messages", |r| r.info.unacked as u64),
        ("rabbitmq_channel_messages_unconfirmed", "gauge", "Published but not yet confirmed messages", |r| r.info.unconfirmed),
        ("rabbitmq_channel_prefetch", "gauge", "Total limit of unacknowledged messages for all consumers on a channel", |r| u64::from(r.info.global_prefetch_count)),
        ("rabbitmq_channel_messages_published_total", "counter", "Total number of messages published into an exchange on a channel", |r| r.counters.publish),
        ("rabbitmq_channel_messages_confirmed_total", "counter", "Total number of messages published into an exchange and confirmed on the channel", |r| r.counters.confirm),
        ("rabbitmq_channel_messages_unroutable_returned_total", "counter", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", |r| r.counters.return_unroutable),
        ("rabbitmq_channel_messages_unroutable_dropped_total", "counter", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", |r| r.counters.drop_unroutable),
        ("rabbitmq_channel_get_ack_total", "counter", "Total number of messages fetched with basic.get in manual acknowledgement mode", |r| r.counters.get),
        ("rabbitmq_channel_get_total", "counter", "Total number of messages fetched with basic.get in automatic acknowledgement mode", |r| r.counters.get_no_ack),
        ("rabbitmq_channel_messages_delivered_ack_total", "counter", "Total number of messages delivered to consumers in manual acknowledgement mode", |r| r.counters.deliver),
        ("rabbitmq_channel_messages_delivered_total", "counter", "Total number of messages delivered to consumers in automatic acknowledgement mode", |r| r.counters.deliver_no_ack),
        ("rabbitmq_channel_messages_redelivered_total", "counter", "Total number of messages redelivered to consumers", |r| r.counters.redeliver),
        ("rabbitmq_channel_messages_acked_total", "counter", "Total number of messages acknowledged by consumers", |r| r.counters.ack),
        ("rabbitmq_channel_get_empty_total", "counter", "Total number of times basic.get operations fetched no message", |r| r.counters.get_empty),
    ];
    for (name, kind, help, col) in families {
        head(out, name, kind, help);
        if per_object {
            for r in &rows {
                let _ = writeln!(out, "{name}{{channel=\"{}\"}} {}", r.name, col(r));
            }
        } else {
            let _ = writeln!(out, "{name} {}", rows.iter().map(col).sum::<u64>());
        }
    }
}

/// One queue's figures for the `rabbitmq_queue_*` families.
struct QueueRow {
    vhost: String,
    name: String,
    ready: u64,
    unacked: u64,
    consumers: u64,
    published: u64,
}

/// The exposition, aggregated (`per_object` false: `/metrics`) or with a sample per
/// queue and connection (`/metrics/per-object`).
pub fn render(server: &Server, per_object: bool) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let b = &server.broker;

    // ----- node: alarms and resources -----
    let alarm = server.alarm;
    single(
        &mut out,
        "rabbitmq_alarms_free_disk_space_watermark",
        "untyped",
        "is 1 if free disk space watermark alarm is in effect",
        u8::from(alarm == Some(crate::alarm::Alarm::Disk)),
    );
    single(
        &mut out,
        "rabbitmq_alarms_memory_used_watermark",
        "untyped",
        "is 1 if VM memory watermark alarm is in effect",
        u8::from(alarm == Some(crate::alarm::Alarm::Memory)),
    );
    single(
        &mut out,
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
        crate::alarm::rss().unwrap_or(0),
    );
    single(
        &mut out,
        "rabbitmq_disk_space_available_bytes",
        "gauge",
        "Disk space available in bytes",
        crate::alarm::free_disk(&server.config.data_dir).unwrap_or(0),
    );
    single(
        &mut out,
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory high watermark in bytes",
        server.config.memory_limit(),
    );
    single(
        &mut out,
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        server.config.disk_free_limit.max(crate::store::RESERVE),
    );

    // ----- queues -----
    let rows: Vec<QueueRow> = b
        .queues()
        .map(|(_, q)| QueueRow {
            vhost: escape(b.vhost_label(q.vhost)),
            name: escape(&String::from_utf8_lossy(&q.name)),
            ready: q.len() as u64,
            unacked: q.unacked_count(),
            consumers: u64::from(q.consumer_count()),
            published: q.stats.as_ref().map_or(0, |s| s.now.publish),
        })
        .collect();
    type Col = fn(&QueueRow) -> u64;
    let queue_families: [(&str, &str, &str, Col); 5] = [
        (
            "rabbitmq_queue_messages_ready",
            "gauge",
            "Messages ready to be delivered to consumers",
            |r| r.ready,
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "gauge",
            "Messages delivered to consumers but not yet acknowledged",
            |r| r.unacked,
        ),
        (
            "rabbitmq_queue_messages",
            "gauge",
            "Sum of ready and unacknowledged messages - total queue depth",
            |r| r.ready + r.unacked,
        ),
        (
            "rabbitmq_queue_consumers",
            "gauge",
            "Consumers on a queue",
            |r| r.consumers,
        ),
        (
            "rabbitmq_queue_messages_published_total",
            "counter",
            "Total number of messages published to queues",
            |r| r.published,
        ),
    ];
    for (name, kind, help, col) in queue_families {
        head(&mut out, name, kind, help);
        if per_object {
            for r in &rows {
                let _ = writeln!(
                    out,
                    "{name}{{vhost=\"{}\",queue=\"{}\"}} {}",
                    r.vhost,
                    r.name,
                    col(r)
                );
            }
        } else {
            let _ = writeln!(out, "{name} {}", rows.iter().map(col).sum::<u64>());
        }
    }

    // ----- connections and channels -----
    let conns: Vec<(String, crate::counters::IoCounters, u64)> = server
        .conns
        .iter()
        .map(|(_, c)| {
            // The API's connection name, so a series can be matched with the API's.
            let local = c.transport.as_ref().and_then(|t| t.local_addr());
            let name = crate::ops::connection_name(c.peer, local);
            (escape(&name), c.io.now, c.channels.len() as u64)
        })
        .collect();
    type IoCol = fn(&crate::counters::IoCounters) -> u64;
    let io_families: [(&str, &str, IoCol); 4] = [
        (
            "rabbitmq_connection_incoming_bytes_total",
            "Total number of bytes received on a connection",
            |i| i.recv_oct,
        ),
        (
            "rabbitmq_connection_outgoing_bytes_total",
            "Total number of bytes sent on a connection",
            |i| i.send_oct,
        ),
        (
            "rabbitmq_connection_incoming_packets_total",
            "Total number of packets received on a connection",
            |i| i.recv_cnt,
        ),
        (
            "rabbitmq_connection_outgoing_packets_total",
            "Total number of packets sent on a connection",
            |i| i.send_cnt,
        ),
    ];
    for (name, help, col) in io_families {
        head(&mut out, name, "counter", help);
        if per_object {
            for (n, io, _) in &conns {
                let _ = writeln!(out, "{name}{{channel=\"{n}\"}} {}", col(io));
            }
        } else {
            let _ = writeln!(
                out,
                "{name} {}",
                conns.iter().map(|c| col(&c.1)).sum::<u64>()
            );
        }
    }
    head(
        &mut out,
        "rabbitmq_connection_channels",
        "gauge",
        "Channels on a connection",
    );
    if per_object {
        for (n, _, ch) in &conns {
            let _ = writeln!(out, "rabbitmq_connection_channels{{channel=\"{n}\"}} {ch}");
        }
    } else {
        let _ = writeln!(
            out,
            "rabbitmq_connection_channels {}",
            conns.iter().map(|c| c.2).sum::<u64>()
        );
    }
    channels_families(&mut out, server, per_object);

    // ----- totals -----
    let channels: u64 = conns.iter().map(|c| c.2).sum();
    let consumers: u64 = rows.iter().map(|r| r.consumers).sum();
    let publishers = server.conns.iter().filter(|(_, c)| c.publisher).count();
    single(
        &mut out,
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        conns.len(),
    );
    single(
        &mut out,
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        channels,
    );
    single(
        &mut out,
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        consumers,
    );
    single(
        &mut out,
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        rows.len(),
    );

    // ----- churn: RabbitMQ's counters of objects made and removed -----
    let churn = b.churn.now;
    for (name, help, value) in [
        (
            "rabbitmq_connections_opened_total",
            "Total number of connections opened",
            churn.connection_created,
        ),
        (
            "rabbitmq_connections_closed_total",
            "Total number of connections closed or terminated",
            churn.connection_closed,
        ),
        (
            "rabbitmq_channels_opened_total",
            "Total number of channels opened",
            churn.channel_created,
        ),
        (
            "rabbitmq_channels_closed_total",
            "Total number of channels closed",
            churn.channel_closed,
        ),
        (
            "rabbitmq_queues_declared_total",
            "Total number of queues declared",
            churn.queue_declared,
        ),
        (
            "rabbitmq_queues_created_total",
            "Total number of queues created",
            churn.queue_created,
        ),
        (
            "rabbitmq_queues_deleted_total",
            "Total number of queues deleted",
            churn.queue_deleted,
        ),
    ] {
        single(&mut out, name, "counter", help, value);
    }

    // ----- process: file descriptors and sockets -----
    let (open_fds, max_fds) = fds();
    single(
        &mut out,
        "rabbitmq_process_open_fds",
        "gauge",
        "Open file descriptors",
        open_fds,
    );
    single(
        &mut out,
        "rabbitmq_process_open_tcp_sockets",
        "gauge",
        "Open TCP sockets",
        server.conns.len(),
    );
    single(
        &mut out,
        "rabbitmq_process_max_fds",
        "gauge",
        "Open file descriptors limit",
        max_fds,
    );
    // RabbitMQ leaves a tenth of the descriptors to files; Warren's AMQP connections
    // can use them all, but the same share keeps dashboards' "sockets used" honest.
    single(
        &mut out,
        "rabbitmq_process_max_tcp_sockets",
        "gauge",
        "Open TCP sockets limit",
        max_fds / 10 * 9,
    );

    // ----- identity -----
    let node = escape(&super::overview::node_name());
    head(
        &mut out,
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
    );
    let _ = writeln!(
        out,
        "rabbitmq_build_info{{rabbitmq_version=\"{RABBITMQ_COMPAT_VERSION}\",prometheus_plugin_version=\"{RABBITMQ_COMPAT_VERSION}\",prometheus_client_version=\"none\",erlang_version=\"none\",warren_version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    head(
        &mut out,
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
    );
    let _ = writeln!(
        out,
        "rabbitmq_identity_info{{rabbitmq_node=\"{node}\",rabbitmq_cluster=\"{node}\",rabbitmq_cluster_permanent_id=\"warren-{node}\"}} 1"
    );

    // ----- global counters -----
    single(
        &mut out,
        "rabbitmq_global_consumers",
        "gauge",
        "Current number of consumers",
        consumers,
    );
    for (name, help, value, by_type) in globals(&b.counters) {
        head(&mut out, name, "counter", help);
        if by_type {
            for t in QUEUE_TYPES {
                let v = if t == QUEUE_TYPES[0] { value } else { 0 };
                let _ = writeln!(out, "{name}{{protocol=\"amqp091\",queue_type=\"{t}\"}} {v}");
            }
        } else {
            let _ = writeln!(out, "{name}{{protocol=\"amqp091\"}} {value}");
        }
    }
    single(
        &mut out,
        "rabbitmq_global_publishers",
        "gauge",
        "Current number of publishers",
        publishers,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{QueueDecl, VhostId};
    use crate::config::Config;

    /// The value of the sample `series` (name with its labels, as printed).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn with_queue(name: &str) -> Server {
        let mut s = Server::new(Config::default());
        s.broker
            .declare_queue(
                VhostId::DEFAULT,
                &QueueDecl::named(name.to_string()),
                1,
                |_| Ok(()),
            )
            .unwrap();
        s
    }

    fn publish(s: &mut Server, rk: &str) {
        let x = s.broker.publish_target(VhostId::DEFAULT, b"").unwrap();
        let props = bytes::Bytes::from_static(&[0, 0]);
        let body = bytes::Bytes::from_static(b"m");
        s.broker
            .publish(x, b"", rk.as_bytes(), props, body, u64::MAX);
    }

    #[test]
    fn every_family_has_type_and_help_and_well_formed_samples() {
        let mut s = with_queue("q\"1");
        publish(&mut s, "q\"1");
        publish(&mut s, "nowhere");
        for per_object in [false, true] {
            let text = render(&s, per_object);
            let mut typed = std::collections::HashSet::new();
            for l in text.lines() {
                if let Some(rest) = l.strip_prefix("# TYPE ") {
                    let mut it = rest.split(' ');
                    let name = it.next().unwrap_or("");
                    assert!(typed.insert(name.to_string()), "{name} typed twice");
                    assert!(
                        matches!(it.next(), Some("gauge" | "counter" | "untyped")),
                        "{l}"
                    );
                } else if l.starts_with("# HELP ") {
                    continue;
                } else {
                    let name = l.split(['{', ' ']).next().unwrap_or("");
                    assert!(typed.contains(name), "sample before its TYPE: {l}");
                    let v = l.rsplit(' ').next().unwrap_or("");
                    assert!(v.parse::<f64>().is_ok(), "{l}");
                }
            }
            for want in [
                "rabbitmq_queue_messages_ready",
                "rabbitmq_queue_messages_unacked",
                "rabbitmq_queue_messages",
                "rabbitmq_connections",
                "rabbitmq_channels",
                "rabbitmq_consumers",
                "rabbitmq_queues",
                "rabbitmq_global_messages_received_total",
                "rabbitmq_global_messages_delivered_total",
                "rabbitmq_global_messages_confirmed_total",
                "rabbitmq_global_messages_acknowledged_total",
                "rabbitmq_global_messages_routed_total",
                "rabbitmq_global_messages_unroutable_dropped_total",
                "rabbitmq_global_messages_unroutable_returned_total",
                "rabbitmq_process_resident_memory_bytes",
                "rabbitmq_disk_space_available_bytes",
                "rabbitmq_alarms_memory_used_watermark",
                "rabbitmq_alarms_free_disk_space_watermark",
                "rabbitmq_build_info",
                "rabbitmq_identity_info",
            ] {
                assert!(typed.contains(want), "{want} missing");
            }
        }
    }

    #[test]
    fn aggregated_sums_and_per_object_labels() {
        let mut s = with_queue("a");
        s.broker
            .declare_queue(VhostId::DEFAULT, &QueueDecl::named("b"), 1, |_| Ok(()))
            .unwrap();
        publish(&mut s, "a");
        publish(&mut s, "a");
        publish(&mut s, "b");
        let agg = render(&s, false);
        assert_eq!(value(&agg, "rabbitmq_queue_messages_ready"), Some(3.0));
        assert_eq!(value(&agg, "rabbitmq_queues"), Some(2.0));
        assert_eq!(
            value(
                &agg,
                "rabbitmq_global_messages_received_total{protocol=\"amqp091\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &agg,
                "rabbitmq_global_messages_routed_total{protocol=\"amqp091\"}"
            ),
            Some(3.0)
        );
        let po = render(&s, true);
        assert_eq!(
            value(
                &po,
                "rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"a\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &po,
                "rabbitmq_queue_messages_published_total{vhost=\"/\",queue=\"b\"}"
            ),
            Some(1.0)
        );
        assert!(
            value(&po, "rabbitmq_queue_messages_ready").is_none(),
            "no unlabelled sum"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let s = with_queue("we\"ird\\");
        let po = render(&s, true);
        assert!(po.contains("queue=\"we\\\"ird\\\\\"}"), "{po}");
    }
}
