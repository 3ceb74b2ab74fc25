//! The node-wide resources: `/api/overview`, `/api/nodes[/{name}]`, `/api/whoami`,
//! `/api/extensions` (users and permissions: `mgmt::users`; vhosts: `mgmt::vhosts`),
//! with RabbitMQ 3.10's field names.

use serde_json::{json, Value};

use super::{access, list, method_not_allowed, ApiError, ApiResult, Caller};
use crate::http::{Request, Response};
use crate::server::Server;

/// The version reported as RabbitMQ's: tools branch on it (rabbitmqadmin, Terraform),
/// and Warren answers the API of 3.10.
pub const RABBITMQ_VERSION: &str = "3.10.8";

pub fn route(
    server: &mut Server,
    caller: &Caller,
    req: &Request,
    segs: &[String],
) -> Option<ApiResult> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = req.method == "GET" || req.method == "HEAD";
    let r = match s.as_slice() {
        ["overview"] if get => Ok(Response::json(200, &overview(server, caller, req))),
        ["nodes"] if get => {
            access::require_monitor(caller).and_then(|_| list(req, vec![node(server)]))
        }
        ["nodes", name] if get => access::require_monitor(caller).and_then(|_| {
            if *name == node_name() {
                Ok(Response::json(200, &node(server)))
            } else {
                Err(ApiError::not_found())
            }
        }),
        ["whoami"] if get => {
            // Every tag as given, custom ones included, as RabbitMQ shows them.
            let tags: Vec<String> = server
                .auth
                .user(caller.user.name())
                .map(|u| u.tags_text.iter().map(|t| t.to_string()).collect())
                .unwrap_or_default();
            Ok(Response::json(
                200,
                &json!({"name": caller.user.name(), "tags": tags}),
            ))
        }
        ["extensions"] if get => Ok(Response::json(200, &json!([]))),
        ["overview" | "nodes" | "whoami" | "extensions"] | ["nodes", _] => Ok(method_not_allowed()),
        _ => return None,
    };
    Some(r)
}

/// The node's name, RabbitMQ-style: `warren@HOST`. Read once (every queue's JSON
/// carries it: a file read per queue was 7% of listing 100,000 queues), and fixed for
/// the process's life like a RabbitMQ node's name.
pub fn node_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("warren@{host}")
    })
    .clone()
}

fn listeners(server: &Server) -> Vec<Value> {
    let node = node_name();
    server
        .listeners
        .iter()
        .map(|(p, addr)| {
            json!({
                "node": node,
                "protocol": p.name(),
                "ip_address": addr.ip().to_string(),
                "port": addr.port(),
                "socket_opts": [],
            })
        })
        .collect()
}

/// `/api/overview`. Monitors and administrators get the node-wide figures, the node
/// and its listeners; anyone else RabbitMQ's per-user overview: totals of the vhosts
/// it may log into, its own connections and channels, no node or listeners.
fn overview(server: &Server, caller: &Caller, req: &Request) -> Value {
    if !access::is_monitor(caller) {
        return user_overview(server, caller);
    }
    // `?msg_rates_age=600&msg_rates_incr=5` asks for the chart samples, as RabbitMQ.
    let num = |k: &str| req.param(k).and_then(|v| v.parse::<u64>().ok());
    let history = num("msg_rates_age").map(|age| (age, num("msg_rates_incr").unwrap_or(5)));
    let message_stats = super::stats::overview_message_stats(server, history);
    let b = &server.broker;
    // As of the last statistics sample, as RabbitMQ's (one pass per interval, not one
    // per request: the overview stays well under a millisecond with 100,000 queues).
    let totals = server
        .sampler
        .queue_totals
        .unwrap_or_else(|| b.queue_totals());
    let (ready, unacked, consumers) = (totals.ready, totals.unacked, totals.consumers);
    let channels: usize = server.conns.iter().map(|(_, c)| c.channels.len()).sum();
    let exchange_types: Vec<Value> = ["direct", "fanout", "headers", "topic"]
        .iter()
        .map(|t| json!({"name": t, "description": "", "enabled": true}))
        .collect();
    json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "exchange_types": exchange_types,
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Warren",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": node_name(),
        "erlang_version": "none",
        "erlang_full_version": "none",
        "disable_stats": false,
        "enable_queue_totals": true,
        "node": node_name(),
        "message_stats": message_stats,
        "churn_rates": super::stats::churn_rates(server),
        "queue_totals": {
            "messages": ready + unacked,
            "messages_details": {"rate": 0.0},
            "messages_ready": ready,
            "messages_ready_details": {"rate": 0.0},
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": {"rate": 0.0},
        },
        "object_totals": {
            "channels": channels,
            "connections": server.conns.len(),
            "consumers": consumers,
            "exchanges": b.exchanges().count(),
            "queues": b.queue_count(),
        },
        "statistics_db_event_queue": 0,
        "listeners": listeners(server),
        "contexts": [],
    })
}

/// The overview of a user who is not a monitor (`rabbit_mgmt_db:get_overview(User, _)`).
fn user_overview(server: &Server, caller: &Caller) -> Value {
    let b = &server.broker;
    let visible = |vh: &str| access::listed_vhost(server, caller, vh);
    let vhosts: Vec<crate::broker::VhostId> = b
        .vhosts()
        .filter(|(_, v)| visible(&v.name))
        .map(|(id, _)| id)
        .collect();
    let (mut queues, mut ready, mut unacked) = (0usize, 0u64, 0u64);
    for (_, q) in b.queues().filter(|(_, q)| vhosts.contains(&q.vhost)) {
        queues += 1;
        ready += q.message_count() as u64;
        unacked += q.unacked_count();
    }
    let exchanges = b
        .exchanges()
        .filter(|(_, x)| vhosts.contains(&x.vhost))
        .count();
    let own: Vec<_> = server
        .conns
        .iter()
        .filter(|(_, c)| c.user.name() == caller.user.name())
        .collect();
    let channels: usize = own.iter().map(|(_, c)| c.channels.len()).sum();
    let exchange_types: Vec<Value> = ["direct", "fanout", "headers", "topic"]
        .iter()
        .map(|t| json!({"name": t, "description": "", "enabled": true}))
        .collect();
    // RabbitMQ leaves the queue totals empty when there are no messages to count.
    let queue_totals = if queues == 0 {
        json!({})
    } else {
        json!({
            "messages": ready + unacked,
            "messages_details": {"rate": 0.0},
            "messages_ready": ready,
            "messages_ready_details": {"rate": 0.0},
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": {"rate": 0.0},
        })
    };
    json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "exchange_types": exchange_types,
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Warren",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": node_name(),
        "erlang_version": "none",
        "erlang_full_version": "none",
        "disable_stats": false,
        "enable_queue_totals": true,
        "message_stats": {},
        "churn_rates": {},
        "queue_totals": queue_totals,
        "object_totals": {
            "channels": channels,
            "connections": own.len(),
            "exchanges": exchanges,
            "queues": queues,
        },
        "statistics_db_event_queue": 0,
    })
}

fn node(server: &Server) -> Value {
    let mem_used = crate::alarm::rss().unwrap_or(0);
    let mem_limit = server.config.memory_limit();
    let disk_free = crate::alarm::free_disk(&server.config.data_dir).unwrap_or(0);
    let alarm = server.alarm;
    let uptime = server.now.saturating_duration_since(server.started);
    json!({
        "name": node_name(),
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "mem_used": mem_used,
        "mem_limit": mem_limit,
        "mem_alarm": matches!(alarm, Some(crate::alarm::Alarm::Memory)),
        "disk_free": disk_free,
        "disk_free_limit": server.config.disk_free_limit,
        "disk_free_alarm": matches!(alarm, Some(crate::alarm::Alarm::Disk)),
        "fd_used": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
        "fd_total": fd_limit(),
        "sockets_used": server.conns.len(),
        "sockets_total": server.config.max_connections,
        "proc_used": 1,
        "proc_total": 1,
        "processors": 1,
        "run_queue": 0,
        "uptime": uptime.as_millis() as u64,
        "partitions": [],
        "applications": [],
        "contexts": [],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
    })
}

fn fd_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0 {
        l.rlim_cur
    } else {
        0
    }
}

/// Every permission record as the API (and a definitions export) shows it.
pub fn permissions(server: &Server) -> Vec<Value> {
    server
        .auth
        .permissions()
        .into_iter()
        .map(|p| {
            json!({
                "user": &*p.user,
                "vhost": &*p.vhost,
                "configure": p.permissions.configure.as_str(),
                "write": p.permissions.write.as_str(),
                "read": p.permissions.read.as_str(),
            })
        })
        .collect()
}
