//! Authentication and authorization: who a peer is, and what it may do in which vhost.
//!
//! Owns the users (name, password, tags, loopback-only flag) and, per user and vhost,
//! the permission record RabbitMQ keeps: three patterns, configure / write / read, that a
//! resource name must match. Today there is one built-in user, guest/guest, an
//! administrator with ".*" for all three on "/", who may only connect from loopback, as in
//! RabbitMQ. Users, stored password hashes and real regular expressions come with issue
//! 11: they only add data and a `Pattern` variant; the calls stay these three:
//!
//! - [`Auth::authenticate`]: connection.start-ok's SASL response (PLAIN, AMQPLAIN) →
//!   a [`User`] or an [`AuthError`] (the loopback rule included);
//! - [`Auth::can_access_vhost`]: connection.open (the vhost's existence is the broker's);
//! - [`Auth::authorize`]: every channel operation, with RabbitMQ's table of which
//!   permission on which resource (declare/delete: configure; publish: write on the
//!   exchange; bind: write on the destination, read on the source; consume, get, purge:
//!   read on the queue), and RabbitMQ's 403 text when refused.
//!
//! Uses only `proto` (the AMQPLAIN table) and `error`; never sees a connection, a socket
//! or the broker: callers pass the peer address, the user and the vhost's name. Never on
//! the per-message path: publish checks once per channel and exchange (the channel's
//! exchange cache), deliveries are never checked.

pub mod hash;

use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::{access_refused, AmqpError};
use crate::proto::FieldTable;

/// The SASL mechanisms offered in connection.start, space-separated (spec §1.4.2.1).
pub const MECHANISMS: &[u8] = b"PLAIN AMQPLAIN";
/// The same on a TLS connection with a verified client certificate.
pub const MECHANISMS_EXTERNAL: &[u8] = b"PLAIN AMQPLAIN EXTERNAL";

/// The vhost that exists from the start (the broker creates it), and the built-in user's.
pub use crate::broker::DEFAULT_VHOST;

/// The three kinds of access RabbitMQ grants per user and vhost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Create or delete the resource (declare, delete).
    Configure,
    /// Put something into it (publish to an exchange, bind to a destination).
    Write,
    /// Take something out of it (consume, get, purge, bind from a source).
    Read,
}

/// What a permission is asked for, by kind and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Exchange(&'a [u8]),
    Queue(&'a [u8]),
}

impl Resource<'_> {
    fn kind(self) -> &'static str {
        match self {
            Resource::Exchange(_) => "exchange",
            Resource::Queue(_) => "queue",
        }
    }
}

/// A permission pattern. RabbitMQ's are regular expressions matched anywhere in the name
/// ("" means "^$": nothing but the empty name). Today only the two the built-in user
/// needs exist; issue 11 adds a compiled-regex variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// ".*": every name.
    Any,
    /// "": no name (RabbitMQ's "^$"; resource names are never empty, see `authorize`).
    Nothing,
}

impl Pattern {
    /// Parses a pattern as RabbitMQ's definitions and API give it; None when it needs
    /// the regex support that issue 11 brings.
    pub fn parse(s: &str) -> Option<Pattern> {
        match s {
            ".*" => Some(Pattern::Any),
            "" | "^$" => Some(Pattern::Nothing),
            _ => None,
        }
    }

    /// Whether the pattern allows `name`.
    pub fn matches(&self, name: &[u8]) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Nothing => name.is_empty(),
        }
    }

    /// The pattern as RabbitMQ writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Pattern::Any => ".*",
            Pattern::Nothing => "",
        }
    }
}

/// One user's permissions in one vhost (RabbitMQ's `user_permission` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

impl Permissions {
    /// ".*" ".*" ".*": everything.
    pub fn full() -> Permissions {
        Permissions {
            configure: Pattern::Any,
            write: Pattern::Any,
            read: Pattern::Any,
        }
    }

    fn pattern(&self, p: Permission) -> &Pattern {
        match p {
            Permission::Configure => &self.configure,
            Permission::Write => &self.write,
            Permission::Read => &self.read,
        }
    }
}

/// The user tags RabbitMQ knows; they govern management access (issue 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Administrator,
    Monitoring,
    Policymaker,
    Management,
}

impl Tag {
    /// RabbitMQ's name of the tag.
    pub fn name(self) -> &'static str {
        match self {
            Tag::Administrator => "administrator",
            Tag::Monitoring => "monitoring",
            Tag::Policymaker => "policymaker",
            Tag::Management => "management",
        }
    }
}

/// A user as the management API lists it.
#[derive(Debug, Clone)]
pub struct UserInfo {
    pub name: Arc<str>,
    pub tags: Vec<Tag>,
}

/// A user's permissions in a vhost, as the management API lists them.
#[derive(Debug, Clone)]
pub struct PermissionInfo {
    pub user: Arc<str>,
    pub vhost: Arc<str>,
    pub permissions: Permissions,
}

/// A user as the auth module stores it.
#[derive(Debug)]
struct UserRecord {
    name: Arc<str>,
    /// Today the built-in user's password as given; issue 11 stores RabbitMQ's salted
    /// SHA-256 (`rabbit_password_hashing_sha256`) instead.
    password: Box<[u8]>,
    tags: Vec<Tag>,
    /// May only connect from a loopback address (RabbitMQ's `loopback_users`).
    loopback_only: bool,
    /// Per vhost name. A user without an entry for a vhost may not open it.
    permissions: HashMap<Arc<str>, Permissions>,
}

/// An authenticated user, as a connection carries it. Cloning is a refcount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    name: Arc<str>,
}

impl User {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Default for User {
    /// Nobody: what a connection holds before connection.start-ok is accepted.
    fn default() -> Self {
        User {
            name: Arc::from(""),
        }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The SASL mechanisms we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616: authzid NUL authcid NUL password.
    Plain,
    /// A field table with LOGIN and PASSWORD (RabbitMQ's AMQPLAIN).
    AmqPlain,
    /// RFC 4422 EXTERNAL: the identity is the TLS client certificate's (RabbitMQ's
    /// `rabbitmq_auth_mechanism_ssl`); offered only on TLS connections with a verified
    /// client certificate, see [`Auth::login_external`].
    External,
}

impl Mechanism {
    pub fn parse(name: &[u8]) -> Option<Mechanism> {
        match name {
            b"PLAIN" => Some(Mechanism::Plain),
            b"AMQPLAIN" => Some(Mechanism::AmqPlain),
            b"EXTERNAL" => Some(Mechanism::External),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::AmqPlain => "AMQPLAIN",
            Mechanism::External => "EXTERNAL",
        }
    }

    /// The (user, password) in a response; None when it is malformed.
    fn credentials(self, response: &Bytes) -> Option<(Bytes, Bytes)> {
        match self {
            Mechanism::Plain => {
                let mut parts = response.split(|b| *b == 0);
                let _authz = parts.next()?;
                let user = parts.next()?;
                let pass = parts.next()?;
                if parts.next().is_some() {
                    return None;
                }
                Some((response.slice_ref(user), response.slice_ref(pass)))
            }
            Mechanism::AmqPlain => {
                let t = FieldTable::decode_body(response).ok()?;
                let user = Bytes::copy_from_slice(t.get(b"LOGIN")?.as_bytes()?);
                let pass = Bytes::copy_from_slice(t.get(b"PASSWORD")?.as_bytes()?);
                Some((user, pass))
            }
            // No credentials in the response: the certificate is the credential.
            Mechanism::External => None,
        }
    }
}

/// Why a login was refused. `Display` is the log line (the peer address goes before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// A mechanism we did not offer. RabbitMQ treats this as a handshake failure: no
    /// close method, the socket is just closed.
    UnknownMechanism(String),
    /// A malformed response, an unknown user or a wrong password (told apart only in
    /// the log, never to the client).
    Refused(Mechanism),
    /// The right password for a loopback-only user from another host.
    LoopbackOnly {
        user: Arc<str>,
        mechanism: Mechanism,
    },
}

impl AuthError {
    /// The reason sent to a client that announced `authentication_failure_close`
    /// (403, RabbitMQ's "safe" text that names no user); None when the socket is just
    /// closed.
    pub fn refusal(&self) -> Option<String> {
        let m = match self {
            AuthError::UnknownMechanism(_) => return None,
            AuthError::Refused(m) | AuthError::LoopbackOnly { mechanism: m, .. } => m,
        };
        Some(format!(
            "Login was refused using authentication mechanism {}. For details see the broker logfile.",
            m.name()
        ))
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::UnknownMechanism(m) => write!(f, "unknown authentication mechanism '{m}'"),
            AuthError::Refused(m) => write!(f, "authentication failed ({})", m.name()),
            AuthError::LoopbackOnly { user, .. } => {
                write!(f, "user '{user}' can only connect via localhost")
            }
        }
    }
}

impl std::error::Error for AuthError {}

/// Compares without returning early on the first difference (a password check must
/// not tell how much of a guess was right).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The users and their permissions; owned by the server, read by every connection.
#[derive(Debug)]
pub struct Auth {
    users: HashMap<Arc<str>, UserRecord>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new()
    }
}

impl Auth {
    /// The built-in configuration: guest/guest, administrator, loopback only, full
    /// permissions on "/" (RabbitMQ's first-start defaults).
    pub fn new() -> Auth {
        let mut a = Auth {
            users: HashMap::new(),
        };
        let name: Arc<str> = Arc::from("guest");
        let mut permissions = HashMap::new();
        permissions.insert(Arc::from(DEFAULT_VHOST), Permissions::full());
        a.users.insert(
            name.clone(),
            UserRecord {
                name,
                password: Box::from(&b"guest"[..]),
                tags: vec![Tag::Administrator],
                loopback_only: true,
                permissions,
            },
        );
        a
    }

    /// connection.start-ok: checks the SASL `response` of `mechanism` from `peer`.
    /// Ok is the user to carry on the connection; Err says why not (see `AuthError`).
    pub fn authenticate(
        &self,
        mechanism: &[u8],
        response: &Bytes,
        peer: SocketAddr,
    ) -> Result<User, AuthError> {
        // EXTERNAL needs the connection's certificate (`login_external`): through
        // here it was not offered.
        let m = Mechanism::parse(mechanism)
            .filter(|m| *m != Mechanism::External)
            .ok_or_else(|| {
                AuthError::UnknownMechanism(String::from_utf8_lossy(mechanism).into_owned())
            })?;
        let (user, pass) = m.credentials(response).ok_or(AuthError::Refused(m))?;
        let user = std::str::from_utf8(&user).map_err(|_| AuthError::Refused(m))?;
        self.login(user, &pass, peer, m)
    }

    /// SASL EXTERNAL: `name` comes from the TLS client certificate, which the transport
    /// has verified against `--tls-ca`. The user must exist (its password is not
    /// checked, as RabbitMQ's EXTERNAL), and the loopback rule holds as for any login.
    pub fn login_external(&self, name: &str, peer: SocketAddr) -> Result<User, AuthError> {
        let m = Mechanism::External;
        let rec = self.users.get(name).ok_or(AuthError::Refused(m))?;
        if rec.loopback_only && !peer.ip().to_canonical().is_loopback() {
            return Err(AuthError::LoopbackOnly {
                user: rec.name.clone(),
                mechanism: m,
            });
        }
        Ok(User {
            name: rec.name.clone(),
        })
    }

    /// A user name and password from `peer` outside SASL (the management API's HTTP
    /// Basic); the same checks as [`Auth::authenticate`].
    pub fn check_password(
        &self,
        user: &str,
        pass: &[u8],
        peer: SocketAddr,
    ) -> Result<User, AuthError> {
        self.login(user, pass, peer, Mechanism::Plain)
    }

    fn login(
        &self,
        user: &str,
        pass: &[u8],
        peer: SocketAddr,
        m: Mechanism,
    ) -> Result<User, AuthError> {
        let rec = self
            .users
            .get(user)
            .filter(|r| same_secret(&r.password, pass))
            .ok_or(AuthError::Refused(m))?;
        // A dual-stack listener (`--bind ::`) sees IPv4 peers as ::ffff:a.b.c.d;
        // ::ffff:127.0.0.1 is loopback all the same.
        if rec.loopback_only && !peer.ip().to_canonical().is_loopback() {
            return Err(AuthError::LoopbackOnly {
                user: rec.name.clone(),
                mechanism: m,
            });
        }
        Ok(User {
            name: rec.name.clone(),
        })
    }

    /// connection.open: whether `user` has a permission record in `vhost` (RabbitMQ's
    /// `check_vhost_access`; whether the vhost exists is asked of the broker first).
    pub fn can_access_vhost(&self, user: &User, vhost: &str) -> bool {
        self.users
            .get(&*user.name)
            .is_some_and(|u| u.permissions.contains_key(vhost))
    }

    /// Sets `user`'s permissions in `vhost` (RabbitMQ's `set_permissions`); false when
    /// there is no such user. Channels cache a publish's permission with their exchange
    /// (`Channel::last_exchange`): whoever narrows permissions of a connected user must
    /// clear those caches too.
    pub fn set_permissions(&mut self, user: &str, vhost: &str, p: Permissions) -> bool {
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        u.permissions.insert(Arc::from(vhost), p);
        true
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<UserInfo> {
        let mut v: Vec<UserInfo> = self
            .users
            .values()
            .map(|u| UserInfo {
                name: u.name.clone(),
                tags: u.tags.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every permission record, by user then vhost.
    pub fn permissions(&self) -> Vec<PermissionInfo> {
        let mut v: Vec<PermissionInfo> = self
            .users
            .values()
            .flat_map(|u| {
                u.permissions.iter().map(|(vh, p)| PermissionInfo {
                    user: u.name.clone(),
                    vhost: vh.clone(),
                    permissions: p.clone(),
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.user, &a.vhost).cmp(&(&b.user, &b.vhost)));
        v
    }

    /// `user`'s password as RabbitMQ's `rabbit_password_hashing_sha256` hash with a fresh
    /// salt (definitions export); None when there is no such user.
    pub fn password_hash(&self, user: &str) -> Option<String> {
        let u = self.users.get(user)?;
        Some(hash::rabbit_sha256(hash::salt(), &u.password))
    }

    /// The tags of `user` (none for a user that no longer exists).
    pub fn tags(&self, user: &User) -> &[Tag] {
        self.users.get(&*user.name).map_or(&[], |u| &u.tags)
    }

    /// Whether `user` may `perm` the `resource` in `vhost`: its permission record's
    /// pattern for `perm` matches the resource's name (the default exchange "" is
    /// matched as "amq.default", as RabbitMQ's `rabbit_auth_backend_internal` does).
    /// Err is 403 ACCESS_REFUSED with RabbitMQ's text, e.g. "access to queue 'q' in
    /// vhost '/' refused for user 'u'" (channel-scoped).
    pub fn authorize(
        &self,
        user: &User,
        vhost: &str,
        perm: Permission,
        resource: Resource<'_>,
    ) -> Result<(), AmqpError> {
        let name = match resource {
            Resource::Exchange(n) | Resource::Queue(n) => n,
        };
        let matched = if name.is_empty() {
            b"amq.default"
        } else {
            name
        };
        let allowed = self
            .users
            .get(&*user.name)
            .and_then(|u| u.permissions.get(vhost))
            .is_some_and(|p| p.pattern(perm).matches(matched));
        if allowed {
            return Ok(());
        }
        Err(access_refused(format!(
            "access to {} '{}' in vhost '{vhost}' refused for user '{}'",
            resource.kind(),
            String::from_utf8_lossy(name),
            user.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ReplyCode;
    use crate::proto::FieldValue;

    fn local() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    fn plain(user: &str, pass: &str) -> Bytes {
        Bytes::from(format!("\0{user}\0{pass}"))
    }

    #[test]
    fn guest_logs_in_with_plain_and_amqplain() {
        let a = Auth::new();
        let u = a.authenticate(b"PLAIN", &plain("guest", "guest"), local());
        assert_eq!(u.map(|u| u.name().to_string()), Ok("guest".to_string()));
        let mut t = FieldTable::new();
        t.insert(
            Bytes::from_static(b"LOGIN"),
            FieldValue::LongStr(Bytes::from_static(b"guest")),
        );
        t.insert(
            Bytes::from_static(b"PASSWORD"),
            FieldValue::LongStr(Bytes::from_static(b"guest")),
        );
        let mut body = bytes::BytesMut::new();
        t.encode_body(&mut body);
        let body = body.freeze();
        let u = a.authenticate(b"AMQPLAIN", &body, local()).unwrap();
        assert_eq!(u.name(), "guest");
        assert_eq!(a.tags(&u), &[Tag::Administrator]);
    }

    #[test]
    fn wrong_credentials_and_malformed_responses_are_refused_alike() {
        let a = Auth::new();
        for r in [
            plain("guest", "nope"),
            plain("nobody", "guest"),
            Bytes::from_static(b"guest"),
            Bytes::from_static(b"\0guest\0guest\0extra"),
        ] {
            let e = a.authenticate(b"PLAIN", &r, local()).unwrap_err();
            assert_eq!(e, AuthError::Refused(Mechanism::Plain));
            assert_eq!(
                e.refusal().as_deref(),
                Some("Login was refused using authentication mechanism PLAIN. For details see the broker logfile.")
            );
        }
        let e = a
            .authenticate(b"AMQPLAIN", &Bytes::from_static(b"\xff"), local())
            .unwrap_err();
        assert_eq!(e, AuthError::Refused(Mechanism::AmqPlain));
        let e = a
            .authenticate(b"EXTERNAL", &Bytes::new(), local())
            .unwrap_err();
        assert_eq!(e.refusal(), None, "an unknown mechanism just closes");
        assert_eq!(e.to_string(), "unknown authentication mechanism 'EXTERNAL'");
    }

    #[test]
    fn guest_is_loopback_only() {
        let a = Auth::new();
        for (peer, ok) in [
            ("10.1.2.3:5000", false),
            ("[::1]:5000", true),
            ("127.0.0.9:5000", true),
            ("[::ffff:127.0.0.1]:5000", true),
            ("[::ffff:10.1.2.3]:5000", false),
        ] {
            let r = a.authenticate(b"PLAIN", &plain("guest", "guest"), peer.parse().unwrap());
            assert_eq!(r.is_ok(), ok, "{peer}");
            if let Err(e) = r {
                assert_eq!(e.to_string(), "user 'guest' can only connect via localhost");
                assert!(e.refusal().is_some());
            }
        }
    }

    #[test]
    fn guest_may_do_everything_on_slash_and_nothing_elsewhere() {
        let a = Auth::new();
        let g = a
            .authenticate(b"PLAIN", &plain("guest", "guest"), local())
            .unwrap();
        assert!(a.can_access_vhost(&g, "/"));
        assert!(!a.can_access_vhost(&g, "other"));
        assert!(!a.can_access_vhost(&User::default(), "/"));
        for p in [Permission::Configure, Permission::Write, Permission::Read] {
            assert_eq!(a.authorize(&g, "/", p, Resource::Queue(b"q")), Ok(()));
            assert_eq!(a.authorize(&g, "/", p, Resource::Exchange(b"")), Ok(()));
        }
        let e = a
            .authorize(&g, "other", Permission::Read, Resource::Queue(b"q"))
            .unwrap_err();
        assert_eq!(e.code, ReplyCode::AccessRefused);
        assert_eq!(
            e.reply_text(),
            "ACCESS_REFUSED - access to queue 'q' in vhost 'other' refused for user 'guest'"
        );
    }

    #[test]
    fn patterns_match_as_rabbitmq_reads_them() {
        let mut a = Auth::new();
        let g = User {
            name: Arc::from("guest"),
        };
        let p = Permissions {
            configure: Pattern::Nothing,
            write: Pattern::parse(".*").unwrap(),
            read: Pattern::parse("").unwrap(),
        };
        assert!(a.set_permissions("guest", "/", p.clone()));
        assert!(!a.set_permissions("nobody", "/", p));
        let x = Resource::Exchange(b"x");
        assert!(a.authorize(&g, "/", Permission::Write, x).is_ok());
        assert!(a.authorize(&g, "/", Permission::Configure, x).is_err());
        // The default exchange is matched as "amq.default", so "" does not allow it.
        let e = a
            .authorize(&g, "/", Permission::Read, Resource::Exchange(b""))
            .unwrap_err();
        assert_eq!(
            e.text,
            "access to exchange '' in vhost '/' refused for user 'guest'"
        );
        assert_eq!(Pattern::parse("^amq\\.gen.*"), None, "regexes: issue 11");
    }
}
