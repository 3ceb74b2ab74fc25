//! The run's topology on the setup connection: declare (and purge, and bind) the
//! exchange and queues before a run, delete them after, unless `--predeclared`.
//!
//! Owns which names exist on the broker; `amq.*` and the default exchange are never
//! declared or deleted.

use bytes::Bytes;
use warren::proto::{exchange, queue, Method};

use crate::client::Conn;
use crate::options::Opts;
use crate::shared::CH;

pub fn declare_topology(c: &mut Conn, o: &Opts) -> Result<(), String> {
    if o.predeclared {
        return Ok(());
    }
    if !o.exchange.is_empty() && !o.exchange.starts_with("amq.") {
        c.rpc(
            CH,
            Method::ExchangeDeclare(exchange::Declare {
                exchange: Bytes::from(o.exchange.clone()),
                kind: Bytes::from(o.kind.clone()),
                durable: o.persistent,
                ..Default::default()
            }),
            |m| matches!(m, Method::ExchangeDeclareOk(_)),
        )?;
    }
    for q in o.queue_names() {
        c.rpc(
            CH,
            Method::QueueDeclare(queue::Declare {
                queue: Bytes::from(q.clone()),
                durable: o.persistent,
                arguments: o.queue_args.clone(),
                ..Default::default()
            }),
            |m| matches!(m, Method::QueueDeclareOk(_)),
        )?;
        c.rpc(
            CH,
            Method::QueuePurge(queue::Purge {
                queue: Bytes::from(q.clone()),
                ..Default::default()
            }),
            |m| matches!(m, Method::QueuePurgeOk(_)),
        )?;
        if !o.exchange.is_empty() {
            c.rpc(
                CH,
                Method::QueueBind(queue::Bind {
                    queue: Bytes::from(q.clone()),
                    exchange: Bytes::from(o.exchange.clone()),
                    routing_key: Bytes::from(o.routing_key.clone()),
                    ..Default::default()
                }),
                |m| matches!(m, Method::QueueBindOk(_)),
            )?;
        }
    }
    Ok(())
}

pub fn delete_topology(c: &mut Conn, o: &Opts) -> Result<(), String> {
    for q in o.queue_names() {
        c.rpc(
            CH,
            Method::QueueDelete(queue::Delete {
                queue: Bytes::from(q),
                ..Default::default()
            }),
            |m| matches!(m, Method::QueueDeleteOk(_)),
        )?;
    }
    if !o.exchange.is_empty() && !o.exchange.starts_with("amq.") {
        c.rpc(
            CH,
            Method::ExchangeDelete(exchange::Delete {
                exchange: Bytes::from(o.exchange.clone()),
                ..Default::default()
            }),
            |m| matches!(m, Method::ExchangeDeleteOk(_)),
        )?;
    }
    Ok(())
}
