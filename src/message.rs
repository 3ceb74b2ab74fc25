//! A published message as queues hold it.
//!
//! Every field is a `Bytes` slice of the connection's read buffer (zero copy); a message
//! routed to several queues is one `Rc<Message>`, so fan-out costs a reference-count
//! increment per queue. The representation is private to this module so that it can be
//! made more compact without touching the broker.

use bytes::Bytes;
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
    /// Where the store keeps it (persistent messages of durable queues).
    location: Option<Location>,
}

/// How queues and channels hold a message.
pub type MessageRef = Rc<Message>;

impl Message {
    /// `properties` must be a validated raw property list (see `proto::ContentHeader`).
    pub fn new(exchange: Bytes, routing_key: Bytes, properties: Bytes, body: Bytes) -> Message {
        let persistent = properties::delivery_mode(&properties) == Some(2);
        Message {
            exchange,
            routing_key,
            properties,
            body,
            persistent,
            location: None,
        }
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
