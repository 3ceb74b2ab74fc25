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

#[cfg(test)]
mod tests {
    //! The limits driven in-process through `Server::feed`: the tallies behind them
    //! follow connections and channels as they open, close and go.
    use bytes::{Bytes, BytesMut};

    use crate::auth::{Credential, Permissions, UserLimits};
    use crate::broker::VhostLimits;
    use crate::config::Config;
    use crate::proto::frame;
    use crate::proto::{channel, connection, FieldTable, Method};
    use crate::server::Server;

    fn send(s: &mut Server, key: usize, ch: u16, m: Method) -> Vec<Method> {
        let mut b = BytesMut::new();
        frame::write_method(&mut b, ch, &m);
        feed(s, key, &b)
    }

    fn feed(s: &mut Server, key: usize, data: &[u8]) -> Vec<Method> {
        let out = s.feed(key, data);
        let mut methods = Vec::new();
        let mut rest = &out[..];
        while let Ok(Some(h)) = frame::parse(rest, 0) {
            let payload = Bytes::copy_from_slice(&rest[7..7 + h.size as usize]);
            if h.kind == frame::FRAME_METHOD {
                methods.push(Method::decode(&payload).expect("a method"));
            }
            rest = &rest[h.total_len()..];
        }
        methods
    }

    /// Logs `user` in and sends connection.open for `vhost`: the connection's key and
    /// the close's (code, text) when refused.
    fn open(s: &mut Server, user: &str, vhost: &str) -> (usize, Option<(u16, String)>) {
        let key = s.open("127.0.0.1:40000".parse().unwrap(), None);
        s.feed(key, frame::PROTOCOL_HEADER);
        let ok = connection::StartOk {
            client_properties: FieldTable::new(),
            mechanism: Bytes::from_static(b"PLAIN"),
            response: Bytes::from(format!("\0{user}\0pw")),
            locale: Bytes::from_static(b"en_US"),
        };
        send(s, key, 0, Method::ConnectionStartOk(ok));
        let tune = connection::TuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 0,
        };
        send(s, key, 0, Method::ConnectionTuneOk(tune));
        let o = connection::Open {
            virtual_host: Bytes::copy_from_slice(vhost.as_bytes()),
            ..Default::default()
        };
        let out = send(s, key, 0, Method::ConnectionOpen(o));
        (key, closed(&out))
    }

    fn closed(out: &[Method]) -> Option<(u16, String)> {
        out.iter().find_map(|m| match m {
            Method::ConnectionClose(c) => Some((
                c.reply_code,
                String::from_utf8_lossy(&c.reply_text).into_owned(),
            )),
            _ => None,
        })
    }

    fn server() -> Server {
        let mut s = Server::new(Config::default());
        s.auth
            .put_user("u", Credential::Password(b"pw".to_vec()), Vec::new())
            .unwrap();
        s.auth.set_permissions("u", "/", Permissions::full());
        s
    }

    #[test]
    fn user_limits_refuse_connections_and_channels_beyond_them() {
        let mut s = server();
        let limits = UserLimits {
            max_connections: Some(1),
            max_channels: Some(2),
        };
        assert!(s.auth.set_user_limits("u", limits));
        let (a, refused) = open(&mut s, "u", "/");
        assert_eq!(refused, None);
        for ch in [1, 2] {
            let out = send(&mut s, a, ch, Method::ChannelOpen(channel::Open::default()));
            assert!(matches!(out[0], Method::ChannelOpenOk(_)), "{out:?}");
        }
        assert_eq!(s.usage.user_channels("u"), 2);
        let (b, refused) = open(&mut s, "u", "/");
        assert_eq!(
            refused,
            Some((
                530,
                "NOT_ALLOWED - connection refused for user 'u': user connection limit (1) is reached"
                    .into()
            ))
        );
        s.remove(b);
        let out = send(&mut s, a, 3, Method::ChannelOpen(channel::Open::default()));
        assert_eq!(
            closed(&out),
            Some((
                530,
                "NOT_ALLOWED - number of channels opened for user 'u' has reached the maximum allowed user limit of (2)"
                    .into()
            ))
        );
        // A closed connection releases its channels; a removed one its place.
        assert_eq!(s.usage.user_channels("u"), 0);
        assert_eq!(s.usage.user_connections("u"), 1);
        s.remove(a);
        assert_eq!(s.usage.user_connections("u"), 0);
        let (c, refused) = open(&mut s, "u", "/");
        assert_eq!(refused, None);
        // Channels closed by the client leave the tally too.
        send(&mut s, c, 1, Method::ChannelOpen(channel::Open::default()));
        send(
            &mut s,
            c,
            1,
            Method::ChannelClose(channel::Close::default()),
        );
        assert_eq!(s.usage.user_channels("u"), 0);
        // Guest is not limited by u's limits.
        let (_, refused) = open(&mut s, "guest", "/");
        assert_eq!(refused, None);
    }

    #[test]
    fn vhost_max_connections_and_deletion() {
        let mut s = server();
        let v = s.broker.add_vhost("v");
        s.auth.set_permissions("u", "v", Permissions::full());
        let limits = VhostLimits {
            max_connections: Some(1),
            ..Default::default()
        };
        s.broker.set_vhost_limits(v, limits);
        let (a, refused) = open(&mut s, "u", "v");
        assert_eq!(refused, None);
        assert_eq!(s.usage.vhost_connections(v), 1);
        let (_, refused) = open(&mut s, "u", "v");
        assert_eq!(
            refused,
            Some((
                530,
                "NOT_ALLOWED - access to vhost 'v' refused for user 'u': connection limit (1) is reached"
                    .into()
            ))
        );
        // "/" has no limit.
        let (root, refused) = open(&mut s, "u", "/");
        assert_eq!(refused, None);
        assert!(s.delete_vhost("v"));
        assert_eq!(
            closed(&feed(&mut s, a, &[])),
            Some((320, "CONNECTION_FORCED - vhost 'v' is deleted".into()))
        );
        assert!(feed(&mut s, root, &[]).is_empty());
        assert_eq!(s.conns[root].state, crate::conn::State::Running);
        s.remove(a);
        assert_eq!(s.usage.vhost_connections(v), 0);
        assert!(s.auth.permissions().iter().all(|p| &*p.vhost != "v"));
        let (_, refused) = open(&mut s, "u", "v");
        assert_eq!(
            refused,
            Some((530, "NOT_ALLOWED - vhost v not found".into()))
        );
    }
}
