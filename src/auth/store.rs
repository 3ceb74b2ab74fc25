//! The `users` file: every user (with RabbitMQ's password hash, tags and limits), every
//! permission and topic permission, as one snapshot in the data directory.
//!
//! The file is `WRNUSERS` + version u8, then `len u32 | crc32 u32 | payload`, the payload
//! JSON (RabbitMQ's field names, as a definitions export shows users). It is replaced
//! atomically (write `users.tmp`, fsync, rename over `users`, fsync the directory), as
//! `store/meta.rs` does, so a crash mid-update leaves the previous snapshot. A file that
//! fails its checks is damage, reported with a readable reason: the broker does not
//! start with users silently missing. `--loopback-users` is configuration, not stored.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::{Auth, Credential, Pattern, Permissions, UserLimits};

/// The file's name in the data directory.
pub const USERS_FILE: &str = "users";
const TMP_FILE: &str = "users.tmp";
const MAGIC: &[u8; 8] = b"WRNUSERS";
const VERSION: u8 = 1;
const HEADER: usize = 8 + 1 + 4 + 4;

/// Why a users file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersError {
    /// Too short, or not our magic.
    NotUsers,
    /// A format version this build does not read.
    Version(u8),
    /// Shorter than the length its header announces.
    Truncated,
    /// The payload fails its CRC-32.
    Checksum,
    /// The checksum holds but the payload does not decode.
    Malformed(String),
}

impl std::fmt::Display for UsersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsersError::NotUsers => f.write_str("not a Warren users file"),
            UsersError::Version(v) => write!(f, "users file format version {v} is not supported"),
            UsersError::Truncated => f.write_str("users file is truncated"),
            UsersError::Checksum => f.write_str("users file fails its checksum"),
            UsersError::Malformed(e) => write!(f, "users file is malformed: {e}"),
        }
    }
}

impl std::error::Error for UsersError {}

#[derive(Serialize, Deserialize)]
struct FileUser {
    name: String,
    password_hash: String,
    hashing_algorithm: String,
    tags: Vec<String>,
    #[serde(default)]
    max_connections: Option<u64>,
    #[serde(default)]
    max_channels: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct FilePermission {
    user: String,
    vhost: String,
    configure: String,
    write: String,
    read: String,
}

#[derive(Serialize, Deserialize)]
struct FileTopicPermission {
    user: String,
    vhost: String,
    exchange: String,
    write: String,
    read: String,
}

#[derive(Serialize, Deserialize)]
struct FileBody {
    users: Vec<FileUser>,
    permissions: Vec<FilePermission>,
    topic_permissions: Vec<FileTopicPermission>,
}

impl Auth {
    /// The snapshot as the file holds it (header and JSON payload).
    pub fn encode(&self) -> Vec<u8> {
        let body = FileBody {
            users: self
                .users()
                .into_iter()
                .map(|u| FileUser {
                    name: u.name.to_string(),
                    password_hash: u.password_hash,
                    hashing_algorithm: u.hashing_algorithm.to_owned(),
                    tags: u.tags_text.iter().map(|t| t.to_string()).collect(),
                    max_connections: u.limits.max_connections,
                    max_channels: u.limits.max_channels,
                })
                .collect(),
            permissions: self
                .permissions()
                .into_iter()
                .map(|p| FilePermission {
                    user: p.user.to_string(),
                    vhost: p.vhost.to_string(),
                    configure: p.permissions.configure.as_str().to_owned(),
                    write: p.permissions.write.as_str().to_owned(),
                    read: p.permissions.read.as_str().to_owned(),
                })
                .collect(),
            topic_permissions: self
                .topic_permissions()
                .into_iter()
                .map(|t| FileTopicPermission {
                    user: t.user.to_string(),
                    vhost: t.vhost.to_string(),
                    exchange: t.exchange.to_string(),
                    write: t.write.as_str().to_owned(),
                    read: t.read.as_str().to_owned(),
                })
                .collect(),
        };
        // Serializing plain strings and numbers cannot fail.
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Reads a snapshot file's contents (loopback users are the default, `guest`).
    pub fn decode(data: &[u8]) -> Result<Auth, UsersError> {
        if data.len() < HEADER || &data[..8] != MAGIC {
            return Err(UsersError::NotUsers);
        }
        if data[8] != VERSION {
            return Err(UsersError::Version(data[8]));
        }
        let len = u32::from_be_bytes([data[9], data[10], data[11], data[12]]) as usize;
        let crc = u32::from_be_bytes([data[13], data[14], data[15], data[16]]);
        let payload = data
            .get(HEADER..HEADER.saturating_add(len))
            .ok_or(UsersError::Truncated)?;
        if crc32fast::hash(payload) != crc {
            return Err(UsersError::Checksum);
        }
        let bad = |e: String| UsersError::Malformed(e);
        let body: FileBody = serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?;
        let mut a = Auth::new();
        for u in body.users {
            let algorithm = super::hashing_algorithm(&u.hashing_algorithm).ok_or_else(|| {
                bad(format!(
                    "user '{}': unknown hashing algorithm '{}'",
                    u.name, u.hashing_algorithm
                ))
            })?;
            a.put_user(
                &u.name,
                Credential::HashWith(u.password_hash, algorithm),
                u.tags,
            )
            .map_err(|e| bad(format!("user '{}': {e}", u.name)))?;
            a.set_user_limits(
                &u.name,
                UserLimits {
                    max_connections: u.max_connections,
                    max_channels: u.max_channels,
                },
            );
        }
        let pattern = |user: &str, s: &str| {
            Pattern::parse(s).map_err(|e| bad(format!("pattern '{s}' of user '{user}': {e}")))
        };
        for p in body.permissions {
            let perms = Permissions {
                configure: pattern(&p.user, &p.configure)?,
                write: pattern(&p.user, &p.write)?,
                read: pattern(&p.user, &p.read)?,
            };
            if !a.set_permissions(&p.user, &p.vhost, perms) {
                return Err(bad(format!("permissions of unknown user '{}'", p.user)));
            }
        }
        for t in body.topic_permissions {
            let (w, r) = (pattern(&t.user, &t.write)?, pattern(&t.user, &t.read)?);
            if !a.set_topic_permissions(&t.user, &t.vhost, &t.exchange, w, r) {
                return Err(bad(format!(
                    "topic permissions of unknown user '{}'",
                    t.user
                )));
            }
        }
        a.generation = 0;
        Ok(a)
    }

    /// The users stored in `dir`; None when there is no file yet (a first start). A
    /// damaged file is an `InvalidData` error (a [`UsersError`]) whose text says what is
    /// wrong; the caller names the file.
    pub fn load(dir: &Path) -> io::Result<Option<Auth>> {
        let _ = fs::remove_file(dir.join(TMP_FILE));
        let path = dir.join(USERS_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Auth::decode(&data)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Replaces `dir/users` atomically with the current users and permissions.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(TMP_FILE);
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(USERS_FILE))?;
        fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Permission, Resource};

    fn sample() -> Auth {
        let mut a = Auth::new();
        a.ensure_default_user("guest", b"guest");
        a.put_user(
            "u1",
            Credential::Password(b"secret".to_vec()),
            vec!["monitoring".into(), "custom-tag".into()],
        )
        .unwrap();
        a.put_user("nopass", Credential::NoPassword, vec![])
            .unwrap();
        let p = |s: &str| Pattern::parse(s).unwrap();
        a.set_permissions(
            "u1",
            "vh",
            Permissions {
                configure: p("^wt-"),
                write: p("^(amq\\.|wt-)"),
                read: p(""),
            },
        );
        a.set_topic_permissions("u1", "vh", "amq.topic", p("^{username}\\."), p(".*"));
        a.set_user_limits(
            "u1",
            UserLimits {
                max_connections: Some(3),
                max_channels: None,
            },
        );
        a
    }

    #[test]
    fn a_snapshot_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Auth::load(dir.path()).unwrap().is_none(), "no file yet");
        let a = sample();
        a.save(dir.path()).unwrap();
        let b = Auth::load(dir.path()).unwrap().unwrap();
        assert_eq!(b.encode(), a.encode());
        let u1 = b.user("u1").unwrap();
        assert_eq!(u1.password_hash, a.user("u1").unwrap().password_hash);
        let tags: Vec<&str> = u1.tags_text.iter().map(|t| &**t).collect();
        assert_eq!(tags, ["monitoring", "custom-tag"]);
        assert_eq!(b.user_limits("u1").max_connections, Some(3));
        let local = "127.0.0.1:1".parse().unwrap();
        let u = b.check_password("u1", b"secret", local).unwrap();
        assert!(b
            .authorize(&u, "vh", Permission::Configure, Resource::Queue(b"wt-q"))
            .is_ok());
        assert!(b
            .authorize(&u, "vh", Permission::Configure, Resource::Queue(b"q"))
            .is_err());
        assert!(b
            .authorize_topic(&u, "vh", Permission::Write, b"amq.topic", b"u1.x")
            .is_ok());
        assert!(b
            .authorize_topic(&u, "vh", Permission::Write, b"amq.topic", b"u2.x")
            .is_err());
        assert!(b.check_password("nopass", b"", local).is_err());
        assert!(b.check_password("guest", b"guest", local).is_ok());
    }

    #[test]
    fn damage_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        let path = dir.path().join(USERS_FILE);
        let good = fs::read(&path).unwrap();
        let err = |data: &[u8]| {
            fs::write(&path, data).unwrap();
            let e = Auth::load(dir.path()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            e.to_string()
        };
        let mut flipped = good.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        assert!(err(&flipped).ends_with("users file fails its checksum"));
        assert!(err(&good[..good.len() - 1]).ends_with("users file is truncated"));
        assert!(err(b"hello").ends_with("not a Warren users file"));
        let mut v2 = good.clone();
        v2[8] = 9;
        assert!(err(&v2).ends_with("users file format version 9 is not supported"));
        // A valid checksum over a payload that is not ours.
        let payload = b"{\"users\":3}";
        let mut odd = MAGIC.to_vec();
        odd.push(VERSION);
        odd.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        odd.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        odd.extend_from_slice(payload);
        assert!(err(&odd).contains("users file is malformed"));
    }

    #[test]
    fn a_leftover_tmp_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        fs::write(dir.path().join(TMP_FILE), b"half written").unwrap();
        assert!(Auth::load(dir.path()).unwrap().is_some());
        assert!(!dir.path().join(TMP_FILE).exists());
    }
}
