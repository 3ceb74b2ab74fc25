//! Warren: an AMQP 0-9-1 broker on one thread.
//!
//! Who owns what: the [`reactor`] owns the `mio::Poll`, the listeners (each tagged with the
//! protocol it speaks) and the token scheme; [`server::Server`] owns the broker model
//! ([`broker::Broker`]: vhosts, each with its exchanges, queues and bindings) and the users and
//! permissions ([`auth::Auth`]) side by side with the connections (`Slab<conn::Connection>`, each
//! carrying its user and vhost); each connection owns its socket as a [`net::Transport`], which
//! only the reactor drives. Nothing is shared through `Rc<RefCell<…>>`; a handler gets `&mut` to
//! exactly what it touches. A queue owns its ready messages (`broker::queue`, one storage per queue
//! kind); the dispatch policy (round-robin, prefetch, backpressure, and turning a message into a
//! basic.deliver or basic.get-ok) is `broker::dispatch`, given the connections by the server.
//! Protocol handlers change the broker through [`ops`] and the broker's own methods; an operation's
//! effects on other connections (cancel a consumer, close a connection) come back as
//! [`ops::Effect`] values that the server applies (`Server::apply`).
//!
//! The phases of one loop turn, in the order `server::Server::turn` runs them (the one
//! place the order is written; the reactor and the in-process driver both call it):
//! 1. read: poll for readiness (no wait when work is pending, else until the next timer,
//!    at most one second), accept, and for each ready connection read big, decode every
//!    complete frame (up to a per-turn budget), run the state machine, route publishes
//!    into queues;
//! 2. returns: up to a budget of the large unacked sets that closed channels handed
//!    back are requeued (the rest next turn, without waiting for I/O);
//! 3. dispatch: every queue that gained messages or consumer credit delivers into its
//!    consumers' out-queues;
//! 4. sync: the store's writes of this turn reach the disk, one fdatasync for all;
//! 5. confirms: publisher confirms that this turn made true are queued (nacks when
//!    the sync failed);
//! 6. timers: heartbeats, handshake, close and consumer timeouts, resource alarms;
//! 7. read again: publishers unblocked by a cleared alarm are read next turn;
//! 8. flush: every connection with output is written with vectored writes; WRITABLE
//!    interest is registered only when bytes are left behind;
//! 9. reap: connections marked closed are removed (their unacked messages requeued).
//!
//! Handlers never write to sockets and never free connections.

pub mod alarm;
pub mod auth;
pub mod broker;
pub mod config;
pub mod conn;
pub mod counters;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
pub mod message;
pub mod mgmt;
pub mod net;
pub mod ops;
pub mod proto;
pub mod reactor;
pub mod server;
pub mod store;
