//! A published message as queues hold it.
//!
//! Every field is a `Bytes` slice of the connection's read buffer (zero copy); a message
//! routed to several queues is one `Rc<Message>`, so fan-out costs a reference-count
//! increment per queue. The representation is private to this module so that it can be
//! made more compact without touching the broker.

use bytes::Bytes;
use std::cell::Cell;
use std::rc::Rc;

use crate::proto::properties;
use crate::store::Location;

/// An immutable published message.
#[derive(Debug)]
pub struct Message {
    exchange: Bytes,
    routing_key: Bytes,
    /// Raw basic properties (flags + list), re-sent verbatim on delivery.
    properties: Bytes,
    body: Bytes,
    persistent: bool,
    /// Where the store keeps it (persistent messages of durable queues, paged messages).
    location: Option<Location>,
    /// The body is not in memory: it is read back from `location` on delivery.
    paged: bool,
    body_len: u32,
}

thread_local! {
    /// Bytes of message bodies held in memory by this thread's broker.
    static RESIDENT: Cell<usize> = const { Cell::new(0) };
}

/// Bytes of message bodies currently held in memory (the paging decision's input).
pub fn resident_bytes() -> usize {
    RESIDENT.with(Cell::get)
}

impl Drop for Message {
    fn drop(&mut self) {
        if !self.paged {
            RESIDENT.with(|r| r.set(r.get().saturating_sub(self.body.len())));
        }
    }
}

/// How queues and channels hold a message.
pub type MessageRef = Rc<Message>;

impl Message {
    /// `properties` must be a validated raw property list (see `proto::ContentHeader`).
    pub fn new(exchange: Bytes, routing_key: Bytes, properties: Bytes, body: Bytes) -> Message {
        let persistent = properties::delivery_mode(&properties) == Some(2);
        let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        RESIDENT.with(|r| r.set(r.get() + body.len()));
        Message {
            exchange,
            routing_key,
            properties,
            body,
            persistent,
            location: None,
            paged: false,
            body_len,
        }
    }

    /// A message whose body stays on disk at `loc`. Its small fields are copied so that
    /// it does not pin the read buffer it arrived in (deliberate copy: a paged message is
    /// long-lived by definition).
    pub fn paged(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body_len: usize,
        loc: Location,
    ) -> Message {
        Message {
            exchange: Bytes::copy_from_slice(exchange),
            routing_key: Bytes::copy_from_slice(routing_key),
            properties: Bytes::copy_from_slice(properties),
            body: Bytes::new(),
            persistent: properties::delivery_mode(properties) == Some(2),
            location: Some(loc),
            paged: true,
            body_len: u32::try_from(body_len).unwrap_or(u32::MAX),
        }
    }

    /// Whether the body must be read back from the store to deliver it.
    pub fn is_paged(&self) -> bool {
        self.paged
    }

    /// The body's length, in memory or not.
    pub fn body_len(&self) -> usize {
        self.body_len as usize
    }

    /// The same message, stored at `loc`.
    pub fn with_location(mut self, loc: Location) -> Message {
        self.location = Some(loc);
        self
    }

    /// Where the store keeps it, for a persistent message of a durable queue.
    pub fn location(&self) -> Option<Location> {
        self.location
    }

    pub fn exchange(&self) -> &Bytes {
        &self.exchange
    }
    pub fn routing_key(&self) -> &Bytes {
        &self.routing_key
    }
    pub fn properties(&self) -> &Bytes {
        &self.properties
    }
    pub fn body(&self) -> &Bytes {
        &self.body
    }
    /// delivery_mode = 2.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }
}
