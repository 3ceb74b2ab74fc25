//! Authentication and authorization: who a peer is, and what it may do in which vhost.
//!
//! Owns the users (name, RabbitMQ's salted password hash, tags, limits), which of them may
//! only connect from loopback (`--loopback-users`), and, per user and vhost, the records
//! RabbitMQ keeps: three permission patterns (configure / write / read) a resource name
//! must match, and per exchange the topic permissions (write / read) a routing key must
//! match. Patterns are regular expressions compiled once when set ([`Pattern`]). The
//! calls the rest of the broker makes:
//!
//! - [`Auth::authenticate`]: connection.start-ok's SASL response (PLAIN, AMQPLAIN) →
//!   a [`User`] or an [`AuthError`] (the loopback rule included);
//! - [`Auth::can_access_vhost`]: connection.open (the vhost's existence is the broker's);
//! - [`Auth::authorize`]: every channel operation, with RabbitMQ's table of which
//!   permission on which resource (declare/delete: configure; publish: write on the
//!   exchange; bind: write on the destination, read on the source; consume, get, purge:
//!   read on the queue), and RabbitMQ's 403 text when refused;
//! - [`Auth::authorize_topic`]: a publish (write) or bind (read) on a topic exchange.
//!
//! Durable in the data directory's `users` file ([`store`]); the server saves after every
//! change. Uses only `proto` (the AMQPLAIN table) and `error`; never sees a connection, a
//! socket or the broker: callers pass the peer address, the user and the vhost's name.
//! Never on the per-message path: publish checks once per channel and exchange (the
//! channel's exchange cache, invalidated through [`Auth::generation`]).

pub mod hash;
pub mod store;

use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::{access_refused, AmqpError};
use crate::proto::FieldTable;

pub use store::{UsersError, USERS_FILE};

/// The SASL mechanisms offered in connection.start, space-separated (spec §1.4.2.1).
pub const MECHANISMS: &[u8] = b"PLAIN AMQPLAIN";
/// The same on a TLS connection with a verified client certificate.
pub const MECHANISMS_EXTERNAL: &[u8] = b"PLAIN AMQPLAIN EXTERNAL";

/// The vhost that exists from the start (the broker creates it), and the default user's.
pub use crate::broker::DEFAULT_VHOST;

/// RabbitMQ's default hashing algorithm, the one new passwords are hashed with.
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// The hashing algorithms a stored hash may name (RabbitMQ's three modules). sha256 and
/// sha512 hashes log in; an md5 hash (RabbitMQ's legacy one) is kept, shown and exported,
/// but no login matches it here.
pub const HASHING_ALGORITHMS: [&str; 3] = [
    HASHING_ALGORITHM,
    "rabbit_password_hashing_sha512",
    "rabbit_password_hashing_md5",
];

/// The algorithm RabbitMQ calls `name`, as a `'static` name; None for an unknown one.
pub fn hashing_algorithm(name: &str) -> Option<&'static str> {
    HASHING_ALGORITHMS.iter().copied().find(|a| *a == name)
}

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

impl Permission {
    /// RabbitMQ's name (the first word of a refused topic access).
    pub fn name(self) -> &'static str {
        match self {
            Permission::Configure => "configure",
            Permission::Write => "write",
            Permission::Read => "read",
        }
    }
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

/// A compiled permission regex with the text it was given as.
pub struct Compiled {
    text: Box<str>,
    re: regex::bytes::Regex,
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// A permission pattern: RabbitMQ's regular expressions, searched anywhere in the name
/// (`re:run`, unanchored), with "" meaning "^$" (nothing but the empty name). The two
/// everyday patterns skip the regex engine. Compiled once, when set; cloning is a
/// refcount.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// ".*": every name.
    Any,
    /// "": no name (RabbitMQ's "^$"; resource names are never empty, see `authorize`).
    Nothing,
    /// Any other regular expression.
    Regex(Arc<Compiled>),
}

/// A compiled pattern larger than this is refused (the regex crate's own limit is 10 MB;
/// a permission pattern is a line of text).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Pattern {
    /// Parses a pattern as RabbitMQ's definitions and API give it; Err is the regex
    /// error, readable.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        match s {
            ".*" => Ok(Pattern::Any),
            "" => Ok(Pattern::Nothing),
            _ => Pattern::compile(s, s),
        }
    }

    /// `text` as shown, matching with the regex `source` (differs for topic patterns,
    /// whose variables are expanded).
    fn compile(text: &str, source: &str) -> Result<Pattern, String> {
        let source = pcre_braces(source);
        // Erlang's `re` without the unicode option works on bytes (`\w` is ASCII);
        // non-ASCII literals still match their UTF-8 encoding.
        let build = |unicode: bool| {
            regex::bytes::RegexBuilder::new(&source)
                .unicode(unicode)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
        };
        let re = build(false)
            .or_else(|_| build(true))
            .map_err(|e| e.to_string())?;
        Ok(Pattern::Regex(Arc::new(Compiled {
            text: Box::from(text),
            re,
        })))
    }

    /// Whether the pattern allows `name` (found anywhere in it, as RabbitMQ's `re:run`).
    pub fn matches(&self, name: &[u8]) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Nothing => name.is_empty(),
            Pattern::Regex(c) => c.re.is_match(name),
        }
    }

    /// The pattern as it was given (".*", "", "^amq\\.").
    pub fn as_str(&self) -> &str {
        match self {
            Pattern::Any => ".*",
            Pattern::Nothing => "",
            Pattern::Regex(c) => &c.text,
        }
    }
}

/// PCRE (RabbitMQ's `re`) reads a `{` that does not start a `{n}`, `{n,}` or `{n,m}`
/// quantifier as a literal brace (so `^{username}-` is a valid topic pattern); the regex
/// crate refuses it. Escapes those braces.
fn pcre_braces(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('{') {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            // Copy an escape and the (possibly multi-byte) character after it whole.
            let next = s[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&s[i..i + 1 + next]);
            i += 1 + next;
            continue;
        }
        if c == b'{' && !is_quantifier(&b[i + 1..]) {
            out.push_str("\\{");
            i += 1;
            continue;
        }
        let len = s[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&s[i..i + len]);
        i += len;
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `rest` (what follows a `{`) is `n}`, `n,}` or `n,m}`.
fn is_quantifier(rest: &[u8]) -> bool {
    let digits = |r: &[u8]| r.iter().take_while(|c| c.is_ascii_digit()).count();
    let n = digits(rest);
    if n == 0 {
        return false;
    }
    match rest.get(n) {
        Some(b'}') => true,
        Some(b',') => {
            let m = digits(&rest[n + 1..]);
            rest.get(n + 1 + m) == Some(&b'}')
        }
        _ => false,
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

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

/// The user tags RabbitMQ knows; they govern management access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Administrator,
    Monitoring,
    Policymaker,
    Management,
    Impersonator,
}

impl Tag {
    /// The tag RabbitMQ calls `s`; None for any other text (kept only as text).
    pub fn parse(s: &str) -> Option<Tag> {
        Some(match s {
            "administrator" => Tag::Administrator,
            "monitoring" => Tag::Monitoring,
            "policymaker" => Tag::Policymaker,
            "management" => Tag::Management,
            "impersonator" => Tag::Impersonator,
            _ => return None,
        })
    }

    /// RabbitMQ's name of the tag.
    pub fn name(self) -> &'static str {
        match self {
            Tag::Administrator => "administrator",
            Tag::Monitoring => "monitoring",
            Tag::Policymaker => "policymaker",
            Tag::Management => "management",
            Tag::Impersonator => "impersonator",
        }
    }
}

/// A user's limits (RabbitMQ's `set_user_limits`); None is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    pub max_connections: Option<u64>,
    pub max_channels: Option<u64>,
}

/// A user as the management API and definitions show it.
#[derive(Debug, Clone)]
pub struct UserInfo {
    pub name: Arc<str>,
    /// The tags RabbitMQ knows, in the order given.
    pub tags: Vec<Tag>,
    /// Every tag as given, known or not, in order (RabbitMQ's list).
    pub tags_text: Vec<Arc<str>>,
    /// base64(salt4 ++ sha256(salt4 ++ password)); "" for a password-less user.
    pub password_hash: String,
    pub hashing_algorithm: &'static str,
    pub limits: UserLimits,
}

/// A user's permissions in a vhost, as the management API lists them.
#[derive(Debug, Clone)]
pub struct PermissionInfo {
    pub user: Arc<str>,
    pub vhost: Arc<str>,
    pub permissions: Permissions,
}

/// A user's topic permissions for one exchange of a vhost.
#[derive(Debug, Clone)]
pub struct TopicPermissionInfo {
    pub user: Arc<str>,
    pub vhost: Arc<str>,
    pub exchange: Arc<str>,
    pub write: Pattern,
    pub read: Pattern,
}

/// How `put_user` sets a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A clear-text password: stored as its hash with a fresh salt.
    Password(Vec<u8>),
    /// RabbitMQ's base64 `rabbit_password_hashing_sha256` hash, as in definitions ("" is
    /// a password-less user, as RabbitMQ reads it).
    Hash(String),
    /// A base64 hash made with another of [`HASHING_ALGORITHMS`] (definitions and the
    /// API carry `hashing_algorithm`; see [`hashing_algorithm`]).
    HashWith(String, &'static str),
    /// No password: PLAIN and AMQPLAIN logins are impossible (RabbitMQ's password-less
    /// user, for certificate logins).
    NoPassword,
}

/// Topic permissions: write and read patterns for routing keys, compiled with RabbitMQ's
/// `{username}` and `{vhost}` variables already expanded (the record belongs to one user
/// and vhost, so the expansion never changes; `as_str` keeps the text as given).
#[derive(Debug, Clone)]
struct TopicRecord {
    write: Pattern,
    read: Pattern,
}

/// A user as the auth module stores it.
#[derive(Debug)]
struct UserRecord {
    name: Arc<str>,
    /// The stored hash as text ("" = no password) and decoded (salt ++ digest); None
    /// when no password login is possible.
    hash_text: String,
    hash: Option<Vec<u8>>,
    /// One of [`HASHING_ALGORITHMS`].
    algorithm: &'static str,
    tags: Vec<Tag>,
    tags_text: Vec<Arc<str>>,
    limits: UserLimits,
    /// Per vhost name. A user without an entry for a vhost may not open it.
    permissions: HashMap<Arc<str>, Permissions>,
    /// Per vhost, per exchange (looked up by `&str` on a publish, no allocation).
    topic: HashMap<Arc<str>, HashMap<Arc<str>, TopicRecord>>,
}

impl UserRecord {
    fn info(&self) -> UserInfo {
        UserInfo {
            name: self.name.clone(),
            tags: self.tags.clone(),
            tags_text: self.tags_text.clone(),
            password_hash: self.hash_text.clone(),
            hashing_algorithm: self.algorithm,
            limits: self.limits,
        }
    }
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
    /// A malformed response.
    Refused(Mechanism),
    /// An unknown user, a wrong or empty password, or a password-less user (told apart
    /// only in the log, never to the client; RabbitMQ's "invalid credentials").
    InvalidCredentials { user: String, mechanism: Mechanism },
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
            AuthError::Refused(m)
            | AuthError::InvalidCredentials { mechanism: m, .. }
            | AuthError::LoopbackOnly { mechanism: m, .. } => m,
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
            // RabbitMQ's log line: "PLAIN login refused: user 'u' - invalid credentials".
            AuthError::InvalidCredentials { user, mechanism } => write!(
                f,
                "authentication failed ({}): user '{user}' - invalid credentials",
                mechanism.name()
            ),
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

/// A stored hash's text decoded: Ok(None) for "" (no password), Err when it is not
/// base64. A decoded hash of the wrong length for its algorithm is kept as text and
/// never matches a login.
fn decode_hash(text: &str) -> Result<Option<Vec<u8>>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    crate::mgmt::base64_decode(text)
        .map(Some)
        .ok_or_else(|| format!("password_hash '{text}' is not base64"))
}

/// Whether `pass` hashes to `stored` (salt4 ++ digest) under `algorithm`, compared in
/// constant time.
fn hash_matches(algorithm: &'static str, stored: &[u8], pass: &[u8]) -> bool {
    if stored.len() < 4 {
        return false;
    }
    let mut salted = Vec::with_capacity(4 + pass.len());
    salted.extend_from_slice(&stored[..4]);
    salted.extend_from_slice(pass);
    match algorithm {
        "rabbit_password_hashing_sha256" => same_secret(&hash::sha256(&salted), &stored[4..]),
        "rabbit_password_hashing_sha512" => same_secret(&hash::sha512(&salted), &stored[4..]),
        _ => false,
    }
}

/// RabbitMQ's tags as given: an empty text is no tag.
fn tags_of(tags_text: Vec<String>) -> (Vec<Tag>, Vec<Arc<str>>) {
    let text: Vec<Arc<str>> = tags_text
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(Arc::from)
        .collect();
    let tags = text.iter().filter_map(|t| Tag::parse(t)).collect();
    (tags, text)
}

/// The users and their permissions; owned by the server, read by every connection.
#[derive(Debug)]
pub struct Auth {
    users: HashMap<Arc<str>, UserRecord>,
    /// `--loopback-users`: these may only connect from a loopback address.
    loopback: HashSet<String>,
    generation: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new()
    }
}

impl Auth {
    /// No users at all (a fresh store); `guest` is loopback-only, RabbitMQ's default.
    pub fn new() -> Auth {
        Auth {
            users: HashMap::new(),
            loopback: HashSet::from(["guest".to_owned()]),
            generation: 0,
        }
    }

    /// First start (no users stored): creates `user`/`pass` as administrator with ".*"
    /// for all three on "/" (RabbitMQ's `default_user`). Does nothing when any user
    /// exists.
    pub fn ensure_default_user(&mut self, user: &str, pass: &[u8]) {
        if !self.users.is_empty() {
            return;
        }
        // A fresh store: the name is free and a password always hashes.
        let _ = self.put_user(
            user,
            Credential::Password(pass.to_vec()),
            vec!["administrator".to_owned()],
        );
        self.set_permissions(user, DEFAULT_VHOST, Permissions::full());
    }

    /// `--loopback-users`: the users that may only connect from loopback (RabbitMQ's
    /// `loopback_users`; default `guest`).
    pub fn set_loopback_users(&mut self, names: Vec<String>) {
        self.loopback = names.into_iter().collect();
    }

    /// Creates or updates `name` (RabbitMQ's `add_user` / `change_password` /
    /// `set_user_tags` in one, as the API's PUT). Ok(true): created; Ok(false): updated
    /// (permissions and limits stay). Err: a readable reason (a hash that is not base64,
    /// an empty name).
    pub fn put_user(
        &mut self,
        name: &str,
        cred: Credential,
        tags_text: Vec<String>,
    ) -> Result<bool, String> {
        if name.is_empty() {
            return Err("user name must not be empty".to_owned());
        }
        let (hash_text, hash, algorithm) = match cred {
            Credential::Password(p) => {
                let text = hash::rabbit_sha256(hash::salt(), &p);
                let h = decode_hash(&text)?;
                (text, h, HASHING_ALGORITHM)
            }
            Credential::Hash(text) => {
                let h = decode_hash(&text)?;
                (text, h, HASHING_ALGORITHM)
            }
            Credential::HashWith(text, algorithm) => {
                let h = decode_hash(&text)?;
                (text, h, algorithm)
            }
            Credential::NoPassword => (String::new(), None, HASHING_ALGORITHM),
        };
        let (tags, tags_text) = tags_of(tags_text);
        self.generation += 1;
        if let Some(u) = self.users.get_mut(name) {
            u.hash_text = hash_text;
            u.hash = hash;
            u.algorithm = algorithm;
            u.tags = tags;
            u.tags_text = tags_text;
            return Ok(false);
        }
        let name: Arc<str> = Arc::from(name);
        self.users.insert(
            name.clone(),
            UserRecord {
                name,
                hash_text,
                hash,
                algorithm,
                tags,
                tags_text,
                limits: UserLimits::default(),
                permissions: HashMap::new(),
                topic: HashMap::new(),
            },
        );
        Ok(true)
    }

    /// Deletes `name` with its permissions, topic permissions and limits; false when
    /// there is no such user. Its open connections stay (RabbitMQ's behaviour); their
    /// permission checks then fail.
    pub fn delete_user(&mut self, name: &str) -> bool {
        let gone = self.users.remove(name).is_some();
        if gone {
            self.generation += 1;
        }
        gone
    }

    /// One user, as the API shows it.
    pub fn user(&self, name: &str) -> Option<UserInfo> {
        self.users.get(name).map(UserRecord::info)
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<UserInfo> {
        let mut v: Vec<UserInfo> = self.users.values().map(UserRecord::info).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
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
        // RabbitMQ's check_user_login with no password: "invalid credentials" for an
        // unknown user; any user that exists passes, password-less ones included.
        let rec = self
            .users
            .get(name)
            .ok_or_else(|| AuthError::InvalidCredentials {
                user: name.to_owned(),
                mechanism: m,
            })?;
        if self.loopback.contains(name) && !peer.ip().to_canonical().is_loopback() {
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
        let invalid = || AuthError::InvalidCredentials {
            user: user.to_owned(),
            mechanism: m,
        };
        // RabbitMQ refuses an empty password before looking the user up.
        if pass.is_empty() {
            return Err(invalid());
        }
        let rec = self.users.get(user).ok_or_else(invalid)?;
        let stored = rec.hash.as_deref().ok_or_else(invalid)?;
        if !hash_matches(rec.algorithm, stored, pass) {
            return Err(invalid());
        }
        // A dual-stack listener (`--bind ::`) sees IPv4 peers as ::ffff:a.b.c.d;
        // ::ffff:127.0.0.1 is loopback all the same.
        if self.loopback.contains(user) && !peer.ip().to_canonical().is_loopback() {
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
    /// there is no such user. Bumps [`Auth::generation`]: channels that cached a
    /// publish's permission check again.
    pub fn set_permissions(&mut self, user: &str, vhost: &str, p: Permissions) -> bool {
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        u.permissions.insert(Arc::from(vhost), p);
        self.generation += 1;
        true
    }

    /// Removes `user`'s permissions in `vhost`; false when there were none.
    pub fn clear_permissions(&mut self, user: &str, vhost: &str) -> bool {
        let gone = self
            .users
            .get_mut(user)
            .is_some_and(|u| u.permissions.remove(vhost).is_some());
        if gone {
            self.generation += 1;
        }
        gone
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

    /// Sets `user`'s topic permissions for `exchange` in `vhost` (RabbitMQ's
    /// `set_topic_permissions`); false when there is no such user. `{username}` and
    /// `{vhost}` in the patterns stand for the user's and vhost's names, as RabbitMQ
    /// expands them (its MQTT-only `{client_id}` is left as written).
    pub fn set_topic_permissions(
        &mut self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: Pattern,
        read: Pattern,
    ) -> bool {
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        let expand = |p: Pattern| -> Pattern {
            let text = p.as_str();
            if !text.contains("{username}") && !text.contains("{vhost}") {
                return p;
            }
            let source = text.replace("{username}", user).replace("{vhost}", vhost);
            // A name can make the expanded regex invalid ("a(" as a user name): then it
            // matches nothing, as an unmatchable `re:run` does.
            Pattern::compile(text, &source).unwrap_or_else(|_| {
                Pattern::Regex(Arc::new(Compiled {
                    text: Box::from(text),
                    re: regex::bytes::Regex::new("[^\\s\\S]").expect("a valid regex"),
                }))
            })
        };
        let rec = TopicRecord {
            write: expand(write),
            read: expand(read),
        };
        u.topic
            .entry(Arc::from(vhost))
            .or_default()
            .insert(Arc::from(exchange), rec);
        self.generation += 1;
        true
    }

    /// Removes `user`'s topic permissions in `vhost` for `exchange`, or for every
    /// exchange when None; false when there were none.
    pub fn clear_topic_permissions(
        &mut self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> bool {
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        let gone = match exchange {
            None => u.topic.remove(vhost).is_some(),
            Some(x) => {
                let gone = u
                    .topic
                    .get_mut(vhost)
                    .is_some_and(|m| m.remove(x).is_some());
                if u.topic.get(vhost).is_some_and(HashMap::is_empty) {
                    u.topic.remove(vhost);
                }
                gone
            }
        };
        if gone {
            self.generation += 1;
        }
        gone
    }

    /// Every topic permission record, by user, vhost and exchange.
    pub fn topic_permissions(&self) -> Vec<TopicPermissionInfo> {
        let mut v: Vec<TopicPermissionInfo> = self
            .users
            .values()
            .flat_map(|u| {
                u.topic.iter().flat_map(move |(vh, m)| {
                    m.iter().map(move |(x, t)| TopicPermissionInfo {
                        user: u.name.clone(),
                        vhost: vh.clone(),
                        exchange: x.clone(),
                        write: t.write.clone(),
                        read: t.read.clone(),
                    })
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.user, &a.vhost, &a.exchange).cmp(&(&b.user, &b.vhost, &b.exchange)));
        v
    }

    /// RabbitMQ's topic authorisation (`check_topic_access`): Ok when the user has no
    /// topic permission for this exchange in this vhost; otherwise the write (publish) or
    /// read (bind, consume via binding) pattern must match the routing key. Err is 403
    /// "access to topic 'RK' in exchange 'X' in vhost 'V' refused for user 'U'" (RabbitMQ
    /// 3.10's `rabbit_access_control:check_topic_access` names no permission).
    pub fn authorize_topic(
        &self,
        user: &User,
        vhost: &str,
        perm: Permission,
        exchange: &[u8],
        routing_key: &[u8],
    ) -> Result<(), AmqpError> {
        let Some(u) = self.users.get(&*user.name) else {
            return Ok(());
        };
        let Ok(x) = std::str::from_utf8(exchange) else {
            return Ok(());
        };
        let Some(t) = u.topic.get(vhost).and_then(|m| m.get(x)) else {
            return Ok(());
        };
        let p = match perm {
            Permission::Write => &t.write,
            Permission::Read => &t.read,
            // Topic permissions have no configure: nothing to refuse.
            Permission::Configure => return Ok(()),
        };
        if p.matches(routing_key) {
            return Ok(());
        }
        Err(access_refused(format!(
            "access to topic '{}' in exchange '{x}' in vhost '{vhost}' refused for user '{}'",
            String::from_utf8_lossy(routing_key),
            user.name
        )))
    }

    /// Sets `user`'s limits; false when there is no such user.
    pub fn set_user_limits(&mut self, user: &str, l: UserLimits) -> bool {
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        u.limits = l;
        true
    }

    /// `user`'s limits (unlimited for an unknown user).
    pub fn user_limits(&self, user: &str) -> UserLimits {
        self.users.get(user).map(|u| u.limits).unwrap_or_default()
    }

    /// A deleted vhost: every user's permissions and topic permissions in it go.
    pub fn forget_vhost(&mut self, vhost: &str) {
        for u in self.users.values_mut() {
            u.permissions.remove(vhost);
            u.topic.remove(vhost);
        }
        self.generation += 1;
    }

    /// Bumped by every change that can narrow what a connected user may do
    /// (permissions, topic permissions, users): channels compare it with the value they
    /// cached their publish permission under.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `user`'s stored password hash (definitions export); "" for a password-less user,
    /// None when there is no such user.
    pub fn password_hash(&self, user: &str) -> Option<String> {
        self.users.get(user).map(|u| u.hash_text.clone())
    }

    /// The tags of `user` (none for a user that no longer exists).
    pub fn tags(&self, user: &User) -> &[Tag] {
        self.users.get(&*user.name).map_or(&[], |u| &u.tags)
    }

    /// Whether `user` may `perm` the `resource` in `vhost`: its permission record's
    /// pattern for `perm` matches the resource's name (the default exchange "" is
    /// matched as "amq.default", as RabbitMQ's `rabbit_auth_backend_internal` does).
    /// Err is 403 ACCESS_REFUSED with RabbitMQ's text, e.g. "access to queue 'q' in
    /// vhost '/' refused for user 'u'" (channel-scoped; the default exchange is named
    /// 'amq.default' there too, as RabbitMQ renames the resource before checking it).
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
            String::from_utf8_lossy(matched),
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

    /// RabbitMQ's first start: guest/guest, loopback only.
    fn guest_auth() -> Auth {
        let mut a = Auth::new();
        a.ensure_default_user("guest", b"guest");
        a
    }

    fn plain(user: &str, pass: &str) -> Bytes {
        Bytes::from(format!("\0{user}\0{pass}"))
    }

    #[test]
    fn guest_logs_in_with_plain_and_amqplain() {
        let a = guest_auth();
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
        let a = guest_auth();
        for r in [
            plain("guest", "nope"),
            plain("nobody", "guest"),
            plain("guest", ""),
            Bytes::from_static(b"guest"),
            Bytes::from_static(b"\0guest\0guest\0extra"),
        ] {
            let e = a.authenticate(b"PLAIN", &r, local()).unwrap_err();
            assert!(
                matches!(
                    e,
                    AuthError::Refused(Mechanism::Plain)
                        | AuthError::InvalidCredentials {
                            mechanism: Mechanism::Plain,
                            ..
                        }
                ),
                "{e:?}"
            );
            assert_eq!(
                e.refusal().as_deref(),
                Some("Login was refused using authentication mechanism PLAIN. For details see the broker logfile.")
            );
        }
        let e = a
            .authenticate(b"PLAIN", &plain("guest", "nope"), local())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "authentication failed (PLAIN): user 'guest' - invalid credentials"
        );
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
        let a = guest_auth();
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
        let a = guest_auth();
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
        let mut a = guest_auth();
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
            "access to exchange 'amq.default' in vhost '/' refused for user 'guest'"
        );
    }

    #[test]
    fn regex_patterns_search_anywhere_as_rabbitmq_re_run() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(matches!(p(".*"), Pattern::Any));
        assert!(matches!(p(""), Pattern::Nothing));
        assert_eq!(p("^amq\\.gen.*").as_str(), "^amq\\.gen.*");
        assert!(p("^amq\\.gen").matches(b"amq.gen-xyz"));
        assert!(!p("^amq\\.gen").matches(b"x.amq.gen"));
        // Unanchored: a match anywhere counts.
        assert!(p("gen").matches(b"amq.gen-xyz"));
        assert!(p("^$").matches(b""));
        assert!(!p("^$").matches(b"q"));
        assert!(p("^(a|b)$").matches(b"b"));
        // Bytes, not text: names need not be UTF-8.
        assert!(p("^q.$").matches(b"q\xff"));
        // PCRE's literal braces (topic variables) compile; quantifiers still count.
        assert!(p("^{username}-").matches(b"{username}-x"));
        assert!(p("^a{2}$").matches(b"aa"));
        assert!(!p("^a{2}$").matches(b"a{2}"));
        assert!(p("^x{1,}$").matches(b"xxx"));
        assert!(p("\\{").matches(b"{"));
        // Non-ASCII literals match their UTF-8 bytes; `.` is one byte, as Erlang's `re`.
        assert!(p("^é-").matches("é-x".as_bytes()));
        assert!(p("^..-$").matches("é-".as_bytes()));
        let e = Pattern::parse("(unclosed").unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
        assert!(Pattern::parse("[z-a]").is_err());
        assert_eq!(p("^a"), p("^a"));
        assert_ne!(p("^a"), p("^b"));
    }

    #[test]
    fn passwords_are_stored_as_rabbitmq_salted_sha256() {
        let mut a = Auth::new();
        assert!(a.users().is_empty(), "a fresh store has no users");
        assert_eq!(
            a.put_user("u", Credential::Password(b"pw".to_vec()), vec![]),
            Ok(true)
        );
        let h = a.user("u").unwrap().password_hash;
        let raw = crate::mgmt::base64_decode(&h).unwrap();
        assert_eq!(raw.len(), 36);
        let mut salted = raw[..4].to_vec();
        salted.extend_from_slice(b"pw");
        assert_eq!(&raw[4..], &hash::sha256(&salted));
        assert!(a.check_password("u", b"pw", local()).is_ok());
        assert!(a.check_password("u", b"pW", local()).is_err());
        // Two users with one password get different salts.
        a.put_user("v", Credential::Password(b"pw".to_vec()), vec![])
            .unwrap();
        assert_ne!(a.user("v").unwrap().password_hash, h);
        // A hash made elsewhere (RabbitMQ's, here salt 01020304) logs in with its password.
        let theirs = hash::rabbit_sha256([1, 2, 3, 4], b"secret");
        assert_eq!(
            a.put_user(
                "u",
                Credential::Hash(theirs.clone()),
                vec!["management".into()]
            ),
            Ok(false)
        );
        assert_eq!(a.user("u").unwrap().password_hash, theirs);
        assert!(a.check_password("u", b"secret", local()).is_ok());
        assert!(a.check_password("u", b"pw", local()).is_err());
        assert!(a
            .put_user("u", Credential::Hash("not base64!".into()), vec![])
            .is_err());
        // Another algorithm's hash (md5's 16 bytes) is kept but never matches.
        let md5ish = crate::mgmt::base64_encode(&[7u8; 16]);
        a.put_user("w", Credential::Hash(md5ish.clone()), vec![])
            .unwrap();
        assert_eq!(a.password_hash("w").as_deref(), Some(md5ish.as_str()));
        assert!(a.check_password("w", b"", local()).is_err());
        // Password-less: no PLAIN login at all, not even with an empty password.
        a.put_user("np", Credential::NoPassword, vec![]).unwrap();
        assert_eq!(a.user("np").unwrap().password_hash, "");
        assert!(a.check_password("np", b"", local()).is_err());
        assert!(a.check_password("np", b"x", local()).is_err());
        assert!(a.authenticate(b"PLAIN", &plain("np", ""), local()).is_err());
        assert!(a.put_user("", Credential::NoPassword, vec![]).is_err());
        // sha512 (RabbitMQ's other module): salt4 ++ sha512(salt4 ++ password).
        let mut raw = vec![9, 8, 7, 6];
        raw.extend_from_slice(&hash::sha512(b"\x09\x08\x07\x06pw512"));
        let algo = hashing_algorithm("rabbit_password_hashing_sha512").unwrap();
        let h512 = crate::mgmt::base64_encode(&raw);
        a.put_user("s", Credential::HashWith(h512, algo), vec![])
            .unwrap();
        assert_eq!(a.user("s").unwrap().hashing_algorithm, algo);
        assert!(a.check_password("s", b"pw512", local()).is_ok());
        assert!(a.check_password("s", b"pw51", local()).is_err());
        assert_eq!(hashing_algorithm("bogus"), None);
    }

    #[test]
    fn tags_keep_their_text_and_known_ones_are_parsed() {
        let mut a = Auth::new();
        a.put_user(
            "u",
            Credential::NoPassword,
            vec![
                "administrator".into(),
                "custom".into(),
                " ".into(),
                "impersonator".into(),
            ],
        )
        .unwrap();
        let u = a.user("u").unwrap();
        assert_eq!(u.tags, [Tag::Administrator, Tag::Impersonator]);
        let text: Vec<&str> = u.tags_text.iter().map(|t| &**t).collect();
        assert_eq!(text, ["administrator", "custom", "impersonator"]);
        assert_eq!(u.hashing_algorithm, "rabbit_password_hashing_sha256");
        for t in [
            "administrator",
            "monitoring",
            "policymaker",
            "management",
            "impersonator",
        ] {
            assert_eq!(Tag::parse(t).map(Tag::name), Some(t));
        }
        assert_eq!(Tag::parse("Administrator"), None);
    }

    #[test]
    fn default_user_and_loopback_users_follow_the_flags() {
        let mut a = Auth::new();
        a.ensure_default_user("admin", b"s3cret");
        a.ensure_default_user("other", b"x");
        let names: Vec<String> = a.users().iter().map(|u| u.name.to_string()).collect();
        assert_eq!(
            names,
            ["admin"],
            "only a first start creates the default user"
        );
        let far: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let u = a.check_password("admin", b"s3cret", far).unwrap();
        assert_eq!(a.tags(&u), &[Tag::Administrator]);
        assert!(a.can_access_vhost(&u, "/"));
        a.set_loopback_users(vec!["admin".into()]);
        let e = a.check_password("admin", b"s3cret", far).unwrap_err();
        assert_eq!(e.to_string(), "user 'admin' can only connect via localhost");
        // A wrong password from afar is a wrong password, not a loopback refusal.
        assert!(matches!(
            a.check_password("admin", b"no", far),
            Err(AuthError::InvalidCredentials { .. })
        ));
        a.set_loopback_users(vec![]);
        assert!(a.check_password("admin", b"s3cret", far).is_ok());
    }

    #[test]
    fn deleting_and_clearing_narrow_and_bump_the_generation() {
        let mut a = guest_auth();
        let g = a.check_password("guest", b"guest", local()).unwrap();
        let g0 = a.generation();
        assert!(a.clear_permissions("guest", "/"));
        assert!(!a.clear_permissions("guest", "/"));
        assert!(a.generation() > g0);
        assert!(!a.can_access_vhost(&g, "/"));
        a.set_permissions("guest", "/", Permissions::full());
        a.set_permissions("guest", "v2", Permissions::full());
        a.forget_vhost("v2");
        assert!(!a.can_access_vhost(&g, "v2"));
        assert!(a.can_access_vhost(&g, "/"));
        let g1 = a.generation();
        assert!(a.delete_user("guest"));
        assert!(!a.delete_user("guest"));
        assert!(a.generation() > g1);
        assert!(!a.can_access_vhost(&g, "/"));
        assert!(a
            .authorize(&g, "/", Permission::Read, Resource::Queue(b"q"))
            .is_err());
        assert!(a.permissions().is_empty());
    }

    #[test]
    fn topic_permissions_as_rabbitmq_checks_them() {
        let mut a = guest_auth();
        let g = a.check_password("guest", b"guest", local()).unwrap();
        let p = |s: &str| Pattern::parse(s).unwrap();
        // No topic permission for the exchange: allowed.
        assert!(a
            .authorize_topic(&g, "/", Permission::Write, b"amq.topic", b"any")
            .is_ok());
        assert!(a.set_topic_permissions("guest", "/", "amq.topic", p("^{username}\\."), p("")));
        assert!(!a.set_topic_permissions("nobody", "/", "amq.topic", p(".*"), p(".*")));
        assert!(a
            .authorize_topic(&g, "/", Permission::Write, b"amq.topic", b"guest.x")
            .is_ok());
        let e = a
            .authorize_topic(&g, "/", Permission::Write, b"amq.topic", b"other.x")
            .unwrap_err();
        assert_eq!(e.code, ReplyCode::AccessRefused);
        assert_eq!(
            e.text,
            "access to topic 'other.x' in exchange 'amq.topic' in vhost '/' refused for user 'guest'"
        );
        // "" is "^$" for read.
        assert!(a
            .authorize_topic(&g, "/", Permission::Read, b"amq.topic", b"k")
            .is_err());
        // Other exchanges and vhosts are unaffected.
        assert!(a
            .authorize_topic(&g, "/", Permission::Write, b"other", b"x")
            .is_ok());
        assert!(a
            .authorize_topic(&g, "v", Permission::Write, b"amq.topic", b"x")
            .is_ok());
        let t = a.topic_permissions();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].write.as_str(), "^{username}\\.", "shown as given");
        assert!(a.clear_topic_permissions("guest", "/", Some("amq.topic")));
        assert!(!a.clear_topic_permissions("guest", "/", None));
        assert!(a.topic_permissions().is_empty());
    }

    #[test]
    fn user_limits_default_to_unlimited() {
        let mut a = guest_auth();
        assert_eq!(a.user_limits("guest"), UserLimits::default());
        let l = UserLimits {
            max_connections: Some(2),
            max_channels: Some(0),
        };
        assert!(a.set_user_limits("guest", l));
        assert!(!a.set_user_limits("nobody", l));
        assert_eq!(a.user_limits("guest"), l);
        assert_eq!(a.user("guest").unwrap().limits, l);
    }
}
