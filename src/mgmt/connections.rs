//! `/api/connections`, `/api/channels` and `/api/consumers` (all, per vhost, one by
//! name; `DELETE /api/connections/{name}` closes one), as RabbitMQ 3.10 answers them.
//!
//! Everything is read from snapshots (`Connection::info`, `Channel::info`,
//! `ops::consumers`) taken on the reactor thread; closing goes through
//! `ops::close_connection` and `Server::apply`, the same path as a forced close.

use serde_json::{json, Value};

use super::access;
use super::{list, method_not_allowed, table_json, vhost, ApiError, ApiResult, Caller};
use crate::http::{Request, Response};
use crate::ops::{self, ChannelInfo, ConnectionInfo};
use crate::server::Server;

/// The reason RabbitMQ gives a connection closed from the API without `X-Reason`.
const DEFAULT_REASON: &str = "Closed via management plugin";

pub fn route(
    server: &mut Server,
    caller: &Caller,
    req: &Request,
    segs: &[String],
) -> Option<ApiResult> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let get = m == "GET" || m == "HEAD";
    // RabbitMQ: the per-vhost lists need the vhost (`is_authorized_vhost`); every list
    // shows a non-monitor only its own connections, channels and consumers
    // (`filter_user`); one connection or channel is for its owner, monitors, and (to
    // close it) administrators (`is_authorized_user`).
    if let ["vhosts", vh, "connections" | "channels"] = s.as_slice() {
        if let Err(e) = access::require_vhost(server, caller, vh) {
            return Some(Err(e));
        }
    }
    let r = match s.as_slice() {
        ["connections"] if get => list(req, connections(server, caller, None)),
        ["vhosts", vh, "connections"] if get => {
            vhost(server, vh).and_then(|_| list(req, connections(server, caller, Some(vh))))
        }
        ["connections", name] => match m {
            "GET" | "HEAD" => find(server, caller, name, false).map(|i| {
                let mut v = conn_json(server, &i);
                // `?data_rates_age=600&data_rates_incr=5`: the byte counters' samples.
                if let (Some(w), Value::Object(m)) = (
                    super::stats::window(req, "data_rates_age", "data_rates_incr"),
                    &mut v,
                ) {
                    super::stats::connection_history(server, i.conn, w, m);
                }
                Response::json(200, &v)
            }),
            "DELETE" => find(server, caller, name, true).map(|i| {
                let reason = req
                    .header("x-reason")
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .unwrap_or(DEFAULT_REASON);
                log::info!(
                    "{}: closing connection {:?} via the management API: {reason}",
                    caller.peer,
                    i.name
                );
                server.apply(ops::close_connection(i.conn, reason));
                Response::empty(204)
            }),
            _ => Ok(method_not_allowed()),
        },
        ["connections", name, "channels"] if get => {
            find(server, caller, name, false).and_then(|i| list(req, channels_of(server, &i)))
        }
        ["channels"] if get => list(req, channels(server, caller, None)),
        ["vhosts", vh, "channels"] if get => {
            vhost(server, vh).and_then(|_| list(req, channels(server, caller, Some(vh))))
        }
        ["channels", name] if get => {
            one_channel(server, caller, req, name).map(|v| Response::json(200, &v))
        }
        ["consumers"] if get => list(req, consumers(server, caller, None)),
        ["consumers", vh] if get => {
            vhost(server, vh).and_then(|_| list(req, consumers(server, caller, Some(vh))))
        }
        ["connections" | "channels" | "consumers"]
        | ["channels" | "consumers", _]
        | ["connections", _, "channels"]
        | ["vhosts", _, "connections" | "channels"] => Ok(method_not_allowed()),
        _ => return None,
    };
    Some(r)
}

/// Snapshots of the connections (of vhost `only`) `caller` may see, in key order. A
/// connection that is gone but not yet reaped is left out, as RabbitMQ drops it from
/// its list.
fn infos(server: &Server, caller: &Caller, only: Option<&str>) -> Vec<ConnectionInfo> {
    server
        .conns
        .iter()
        .filter(|(_, c)| access::visible_owner(caller, c.user.name()))
        .map(|(_, c)| c.info())
        .filter(|i| i.state != "closed" && only.is_none_or(|v| &*i.vhost == v))
        .collect()
}

/// The connection named `name` ("peer -> local"), or 404; 401 when `caller` may not
/// look at it (or, `delete`, close it): see `access::require_owner`. Names are
/// compared before a snapshot is taken: only the one found has its client properties
/// copied.
fn find(
    server: &Server,
    caller: &Caller,
    name: &str,
    delete: bool,
) -> Result<ConnectionInfo, ApiError> {
    let i = server
        .conns
        .iter()
        .find(|(_, c)| {
            let local = c.transport.as_ref().and_then(|t| t.local_addr());
            ops::connection_name(c.peer, local) == name
        })
        .map(|(_, c)| c.info())
        .filter(|i| i.state != "closed")
        .ok_or_else(ApiError::not_found)?;
    access::require_owner(caller, &i.user, delete)?;
    Ok(i)
}

fn connections(server: &Server, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    infos(server, caller, only)
        .iter()
        .map(|i| conn_json(server, i))
        .collect()
}

/// A connection as RabbitMQ's API shows it.
fn conn_json(server: &Server, i: &ConnectionInfo) -> Value {
    // Byte and read/write-call counters with their rates (`mgmt::stats`).
    let io = server
        .conns
        .get(i.conn)
        .map(|c| super::stats::connection_io_stats(&c.io, server.config.stats_interval));
    let mut v = json!({
        "name": i.name,
        "node": super::overview::node_name(),
        "vhost": &*i.vhost,
        "user": i.user,
        "user_who_performed_action": i.user,
        "peer_host": i.peer.ip().to_string(),
        "peer_port": i.peer.port(),
        "host": i.local.map(|l| l.ip().to_string()),
        "port": i.local.map(|l| l.port()),
        "channels": i.channels,
        "state": i.state,
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": i.auth_mechanism,
        "client_properties": table_json(&i.client_properties),
        "connected_at": i.connected_at,
        "timeout": i.heartbeat,
        "frame_max": i.frame_max,
        "channel_max": i.channel_max,
        "recv_oct": 0,
        "recv_oct_details": {"rate": 0.0},
        "send_oct": 0,
        "send_oct_details": {"rate": 0.0},
        "recv_cnt": 0,
        "send_cnt": 0,
        "send_pend": 0,
        "ssl": i.tls.is_some(),
        "ssl_protocol": i.tls.as_ref().map(|t| t.protocol),
        "ssl_key_exchange": i.tls.as_ref().map(|t| &t.key_exchange),
        "ssl_cipher": i.tls.as_ref().map(|t| &t.cipher),
        "ssl_hash": i.tls.as_ref().map(|t| &t.hash),
        "peer_cert_subject": i.tls.as_ref().and_then(|t| t.peer_cert_subject.as_ref()),
        "peer_cert_issuer": i.tls.as_ref().and_then(|t| t.peer_cert_issuer.as_ref()),
        "peer_cert_validity": i.tls.as_ref().and_then(|t| t.peer_cert_validity.as_ref()),
        "type": "network",
    });
    if let (Value::Object(m), Some(io)) = (&mut v, io) {
        m.extend(io);
    }
    v
}

/// RabbitMQ's channel name: "CONNECTION_NAME (NUMBER)".
fn channel_name(conn: &str, number: u16) -> String {
    format!("{conn} ({number})")
}

fn channel_json(server: &Server, c: &ConnectionInfo, ch: &ChannelInfo) -> Value {
    let message_stats = server
        .conns
        .get(c.conn)
        .and_then(|k| k.channel(ch.number))
        .map_or_else(
            || json!({}),
            |k| super::stats::channel_message_stats(k, server.config.stats_interval),
        );
    json!({
        "message_stats": message_stats,
        "name": channel_name(&c.name, ch.number),
        "number": ch.number,
        "node": super::overview::node_name(),
        "connection_details": {
            "name": c.name,
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
        },
        "vhost": &*c.vhost,
        "user": c.user,
        "user_who_performed_action": c.user,
        "consumer_count": ch.consumers,
        "messages_unacknowledged": ch.unacked,
        "messages_unconfirmed": ch.unconfirmed,
        "messages_uncommitted": ch.uncommitted_publishes,
        "acks_uncommitted": ch.uncommitted_acks,
        "pending_raft_commands": 0,
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "state": if ch.closing { "closing" } else { "running" },
    })
}

/// The channels of connection `i`, by number.
fn channels_of(server: &Server, i: &ConnectionInfo) -> Vec<Value> {
    let Some(c) = server.conns.get(i.conn) else {
        return Vec::new();
    };
    let mut chans: Vec<ChannelInfo> = c.channels.iter().map(|ch| ch.info()).collect();
    chans.sort_by_key(|ch| ch.number);
    chans.iter().map(|ch| channel_json(server, i, ch)).collect()
}

fn channels(server: &Server, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    infos(server, caller, only)
        .iter()
        .flat_map(|i| channels_of(server, i))
        .collect()
}

/// `/api/channels/{name}`: the channel with its consumers, and with
/// `?msg_rates_age=...&msg_rates_incr=...` its counters' samples.
fn one_channel(
    server: &Server,
    caller: &Caller,
    req: &Request,
    name: &str,
) -> Result<Value, ApiError> {
    let (conn_name, number) = name
        .strip_suffix(')')
        .and_then(|n| n.rsplit_once(" ("))
        .and_then(|(c, n)| n.parse::<u16>().ok().map(|n| (c, n)))
        .ok_or_else(ApiError::not_found)?;
    let i = find(server, caller, conn_name, false)?;
    let ch = server
        .conns
        .get(i.conn)
        .and_then(|c| c.channel(number))
        .map(|ch| ch.info())
        .ok_or_else(ApiError::not_found)?;
    let mut v = channel_json(server, &i, &ch);
    let consumers: Vec<Value> = ops::consumers(&server.broker)
        .iter()
        .filter(|c| c.conn == i.conn && c.channel == number)
        .map(|c| super::consumer_json(server, c))
        .collect();
    if let Value::Object(m) = &mut v {
        if let (Some(w), Some(Value::Object(ms))) = (
            super::stats::window(req, "msg_rates_age", "msg_rates_incr"),
            m.get_mut("message_stats"),
        ) {
            super::stats::channel_history(server, i.conn, number, w, ms);
        }
        m.insert("consumer_details".into(), Value::Array(consumers));
        m.insert("deliveries".into(), json!([]));
        m.insert("publishes".into(), json!([]));
    }
    Ok(v)
}

/// The consumers (of vhost `only`) on connections `caller` may see.
fn consumers(server: &Server, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    let own = |conn: usize| {
        server
            .conns
            .get(conn)
            .is_some_and(|k| access::visible_owner(caller, k.user.name()))
    };
    ops::consumers(&server.broker)
        .iter()
        .filter(|c| only.is_none_or(|v| &*c.vhost == v) && own(c.conn))
        .map(|c| super::consumer_json(server, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_connection_name_and_number() {
        assert_eq!(
            channel_name("127.0.0.1:5000 -> 127.0.0.1:5672", 3),
            "127.0.0.1:5000 -> 127.0.0.1:5672 (3)"
        );
    }
}
