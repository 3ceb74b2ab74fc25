//! Warren: an AMQP 0-9-1 broker on one thread.
//!
//! Who owns what: the [`reactor`] owns the listener, the `mio::Poll` and the server
//! state ([`server::Server`]): the broker model ([`broker::Broker`]: exchanges, queues,
//! bindings) side by side with the connections (`Slab<conn::Connection>`). Nothing is
//! shared through `Rc<RefCell<…>>`; a handler gets `&mut` to exactly what it touches.
//! Protocol handlers change the broker through [`ops`] and the broker's own methods;
//! an operation's effects on other connections (cancel a consumer, close a connection)
//! come back as [`ops::Effect`] values that the server applies (`Server::apply`).
//!
//! The tick order, once per loop turn:
//! 1. poll for readiness (timeout = the next timer, at most one second);
//! 2. for each readable connection: read big, decode every complete frame (up to a
//!    per-turn budget), run the state machine, route publishes into queues;
//! 3. returns: up to a budget of the large unacked sets that closed channels handed
//!    back are requeued (the rest next turn, without waiting for I/O);
//! 4. dispatch: every queue that gained messages or consumer credit delivers into its
//!    consumers' out-queues;
//! 5. publisher confirms that this turn made true are queued;
//! 6. flush: every connection with output is written with vectored writes; WRITABLE
//!    interest is registered only when bytes are left behind;
//! 7. reap: connections marked closed are removed (their unacked messages requeued);
//! 8. timers: heartbeats, handshake and consumer timeouts.
//!
//! Handlers never write to sockets and never free connections.

pub mod alarm;
pub mod broker;
pub mod config;
pub mod conn;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod message;
pub mod ops;
pub mod proto;
pub mod reactor;
pub mod server;
pub mod store;
