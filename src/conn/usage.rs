//! How many connections each vhost has, and how many connections and channels each user
//! has: what RabbitMQ's vhost limit `max-connections` and user limits `max-connections`
//! and `max-channels` are checked against (its connection and channel tracking).
//!
//! The tallies are kept by the server, never on the message path: after each batch of
//! a connection's input (and when a connection is closed from outside or removed) the
//! server calls [`Usage::reconcile`], which compares what the connection holds now (open
//! or not, how many channels) with what it last added ([`Counted`], kept on the
//! connection) and adds the difference. That is one comparison per batch, whatever the
//! batch did, and no tally can drift: a connection only ever takes back what it added.
//! The handshake and channel.open read the tallies (`Session::usage`) to refuse what
//! goes beyond a limit. A connection counts from its connection.open-ok until it is
//! removed, as RabbitMQ tracks it until it is gone.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Connection, State};
use crate::broker::VhostId;

/// What one connection has added to the tallies.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// Counted as an open connection of this vhost and user.
    open: Option<(VhostId, Arc<str>)>,
    /// Channels counted for the user.
    channels: u32,
}

impl Counted {
    /// Channels of this connection already in its user's tally.
    pub fn channels(&self) -> u32 {
        self.channels
    }
}

/// The tallies.
#[derive(Debug, Default)]
pub struct Usage {
    vhost_connections: HashMap<VhostId, u32>,
    user_connections: HashMap<Arc<str>, u32>,
    user_channels: HashMap<Arc<str>, u32>,
}

fn add(map: &mut HashMap<Arc<str>, u32>, key: &Arc<str>, n: i64) {
    let e = map.entry(key.clone()).or_insert(0);
    *e = (i64::from(*e) + n).clamp(0, i64::from(u32::MAX)) as u32;
    if *e == 0 {
        map.remove(key);
    }
}

impl Usage {
    /// Open connections of vhost `v`.
    pub fn vhost_connections(&self, v: VhostId) -> u32 {
        self.vhost_connections.get(&v).copied().unwrap_or(0)
    }

    /// Open connections of user `user`.
    pub fn user_connections(&self, user: &str) -> u32 {
        self.user_connections.get(user).copied().unwrap_or(0)
    }

    /// Open channels of user `user`, over all its connections (as counted at their
    /// last reconcile).
    pub fn user_channels(&self, user: &str) -> u32 {
        self.user_channels.get(user).copied().unwrap_or(0)
    }

    /// Brings `c`'s share of the tallies up to date: counted as open from the
    /// connection.open-ok on (states Running and later, until removal), its channels
    /// as it holds them now.
    pub fn reconcile(&mut self, c: &mut Connection) {
        if c.counted.open.is_none() && c.state == State::Running {
            let user: Arc<str> = Arc::from(c.user.name());
            *self.vhost_connections.entry(c.vhost_id).or_insert(0) += 1;
            add(&mut self.user_connections, &user, 1);
            c.counted.open = Some((c.vhost_id, user));
        }
        let channels = c.channels.len() as u32;
        if channels != c.counted.channels {
            if let Some((_, user)) = &c.counted.open {
                add(
                    &mut self.user_channels,
                    user,
                    i64::from(channels) - i64::from(c.counted.channels),
                );
                c.counted.channels = channels;
            }
        }
    }

    /// Takes back everything `c` added (it is being removed).
    pub fn forget(&mut self, c: &mut Connection) {
        let counted = std::mem::take(&mut c.counted);
        if let Some((vhost, user)) = counted.open {
            if let Some(n) = self.vhost_connections.get_mut(&vhost) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.vhost_connections.remove(&vhost);
                }
            }
            add(&mut self.user_connections, &user, -1);
            add(&mut self.user_channels, &user, -i64::from(counted.channels));
        }
    }
}

/// A user's limits in force (None: no limit).
/// Until `Auth::user_limits` (the auth branch) lands, every user is unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub struct InForce {
    pub max_connections: Option<u64>,
    pub max_channels: Option<u64>,
}

/// The limits of `user` (the auth module keeps them).
pub fn user_limits(_auth: &crate::auth::Auth, _user: &str) -> InForce {
    InForce::default()
}

/// A deleted vhost's permissions go (`Auth::forget_vhost` of the auth branch).
pub fn forget_vhost(_auth: &mut crate::auth::Auth, _vhost: &str) {}
