//! Durable metadata: exchanges, queues and bindings, as one snapshot file.
//!
//! The file `meta` is `WRNMETA` + version u8, then `len u32 | crc32 u32 | payload`. It is
//! replaced atomically (write `meta.tmp`, fsync, rename over `meta`, fsync the directory),
//! so a crash in the middle of an update leaves the previous snapshot in place: the broker
//! can always start. A `meta` that fails its CRC is real damage, reported as an error.
//!
//! Version 3 adds the vhost records (name, description, tags, default queue type, limits)
//! before the entities, so a vhost without any durable entity (an empty vhost) and a
//! deleted "/" survive a restart. Version 2 starts every exchange, queue and binding record
//! with the name of its vhost; version 1 (written before vhosts existed) has no vhost field.
//! Version 4 appends the policies and operator policies (vhost, name, pattern,
//! apply-to, priority, definition as JSON text) after the bindings; versions 1 to 3
//! read with none.
//! All still read: without vhost records ([`Meta::vhosts`] is `None`) the broker derives
//! the vhosts from "/" and the entities' vhosts, as before.

use bytes::{BufMut, Bytes, BytesMut};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::proto::types::{write_longstr, write_shortstr, Cursor};
use crate::proto::{DecodeError, FieldTable};

const MAGIC: &[u8; 7] = b"WRNMETA";
const VERSION: u8 = 4;
/// Vhost records, no policies.
const VERSION_3: u8 = 3;
/// Vhost names on every entity, no vhost records.
const VERSION_2: u8 = 2;
/// The format before vhosts: no vhost field, everything in "/".
const VERSION_1: u8 = 1;
/// The vhost of every entity in a version-1 file.
const V1_VHOST: &[u8] = b"/";

/// Why a metadata snapshot cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaError {
    /// Too short, or not our magic.
    NotMeta,
    /// A format version this build does not read.
    Version(u8),
    /// Shorter than the length its header announces.
    Truncated,
    /// The payload fails its CRC-32.
    Checksum,
    /// The checksum holds but the payload does not decode.
    Malformed(DecodeError),
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaError::NotMeta => f.write_str("not a Warren metadata file"),
            MetaError::Version(v) => write!(f, "metadata format version {v} is not supported"),
            MetaError::Truncated => f.write_str("metadata file is truncated"),
            MetaError::Checksum => f.write_str("metadata file fails its checksum"),
            MetaError::Malformed(e) => write!(f, "metadata is malformed: {e}"),
        }
    }
}

impl std::error::Error for MetaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetaError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetaExchange {
    /// The name of its vhost.
    pub vhost: Bytes,
    pub name: Bytes,
    pub kind: Bytes,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetaQueue {
    /// The name of its vhost.
    pub vhost: Bytes,
    pub name: Bytes,
    /// The queue's id in message records (stable for the queue's life).
    pub id: u32,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetaBinding {
    /// The name of its vhost.
    pub vhost: Bytes,
    pub source: Bytes,
    /// true: the destination is an exchange.
    pub to_exchange: bool,
    pub destination: Bytes,
    pub key: Bytes,
    pub arguments: FieldTable,
}

/// A vhost with its metadata and limits (RabbitMQ's vhost record and its
/// `vhost-limits` parameter).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaVhost {
    pub name: Bytes,
    pub description: Bytes,
    pub tags: Vec<Bytes>,
    /// Empty when not set (RabbitMQ shows "undefined").
    pub default_queue_type: Bytes,
    /// `max-connections` and `max-queues` as set (a negative value is kept as given:
    /// RabbitMQ shows it and treats it as no limit); None when not set.
    pub max_connections: Option<i64>,
    pub max_queues: Option<i64>,
}

/// A policy or operator policy (RabbitMQ's `policy` / `operator_policy` parameter).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaPolicy {
    pub vhost: Bytes,
    pub operator: bool,
    pub name: Bytes,
    pub pattern: Bytes,
    /// `queues`, `exchanges` or `all`.
    pub apply_to: Bytes,
    pub priority: i64,
    /// The definition as JSON text.
    pub definition: Bytes,
}

/// Everything durable except messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub next_queue_id: u32,
    /// Every vhost, in creation order; None when read from a file older than version 3
    /// (which has no vhost records).
    pub vhosts: Option<Vec<MetaVhost>>,
    pub exchanges: Vec<MetaExchange>,
    pub queues: Vec<MetaQueue>,
    pub bindings: Vec<MetaBinding>,
    /// Policies and operator policies (none before version 4).
    pub policies: Vec<MetaPolicy>,
}

impl Meta {
    pub fn encode(&self) -> BytesMut {
        let mut p = BytesMut::new();
        p.put_u32(self.next_queue_id);
        let vhosts = self.vhosts.as_deref().unwrap_or_default();
        p.put_u32(vhosts.len() as u32);
        for v in vhosts {
            write_longstr(&mut p, &v.name);
            write_longstr(&mut p, &v.description);
            p.put_u32(v.tags.len() as u32);
            for t in &v.tags {
                write_longstr(&mut p, t);
            }
            write_longstr(&mut p, &v.default_queue_type);
            for limit in [v.max_connections, v.max_queues] {
                match limit {
                    None => p.put_u8(0),
                    Some(n) => {
                        p.put_u8(1);
                        p.put_i64(n);
                    }
                }
            }
        }
        p.put_u32(self.exchanges.len() as u32);
        for x in &self.exchanges {
            write_shortstr(&mut p, &x.vhost);
            write_shortstr(&mut p, &x.name);
            write_shortstr(&mut p, &x.kind);
            p.put_u8(u8::from(x.auto_delete) | u8::from(x.internal) << 1);
            x.arguments.encode(&mut p);
        }
        p.put_u32(self.queues.len() as u32);
        for q in &self.queues {
            write_shortstr(&mut p, &q.vhost);
            write_shortstr(&mut p, &q.name);
            p.put_u32(q.id);
            p.put_u8(u8::from(q.auto_delete));
            q.arguments.encode(&mut p);
        }
        p.put_u32(self.bindings.len() as u32);
        for b in &self.bindings {
            write_shortstr(&mut p, &b.vhost);
            write_shortstr(&mut p, &b.source);
            p.put_u8(u8::from(b.to_exchange));
            write_shortstr(&mut p, &b.destination);
            write_shortstr(&mut p, &b.key);
            b.arguments.encode(&mut p);
        }
        p.put_u32(self.policies.len() as u32);
        for x in &self.policies {
            write_longstr(&mut p, &x.vhost);
            p.put_u8(u8::from(x.operator));
            write_longstr(&mut p, &x.name);
            write_longstr(&mut p, &x.pattern);
            write_shortstr(&mut p, &x.apply_to);
            p.put_i64(x.priority);
            write_longstr(&mut p, &x.definition);
        }
        let mut out = BytesMut::with_capacity(p.len() + 16);
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        out.put_u32(p.len() as u32);
        out.put_u32(crc32fast::hash(&p));
        out.put_slice(&p);
        out
    }

    /// Decodes a snapshot file's contents.
    pub fn decode(data: &Bytes) -> Result<Meta, MetaError> {
        if data.len() < 16 || &data[..7] != MAGIC {
            return Err(MetaError::NotMeta);
        }
        let version = data[7];
        if !matches!(version, VERSION | VERSION_3 | VERSION_2 | VERSION_1) {
            return Err(MetaError::Version(version));
        }
        let len = u32::from_be_bytes([data[8], data[9], data[10], data[11]]) as usize;
        let crc = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
        let payload = data.get(16..16 + len).ok_or(MetaError::Truncated)?;
        if crc32fast::hash(payload) != crc {
            return Err(MetaError::Checksum);
        }
        let payload = data.slice_ref(payload);
        Self::decode_payload(&payload, version).map_err(MetaError::Malformed)
    }

    fn decode_payload(p: &Bytes, version: u8) -> Result<Meta, DecodeError> {
        let mut c = Cursor::new(p);
        let vhost = |c: &mut Cursor<'_>| -> Result<Bytes, DecodeError> {
            if version == VERSION_1 {
                Ok(Bytes::from_static(V1_VHOST))
            } else {
                c.short_bytes()
            }
        };
        let mut m = Meta {
            next_queue_id: c.u32()?,
            ..Default::default()
        };
        if version >= VERSION_3 {
            let mut vhosts = Vec::new();
            for _ in 0..c.u32()? {
                let name = c.long_bytes()?;
                let description = c.long_bytes()?;
                let mut tags = Vec::new();
                for _ in 0..c.u32()? {
                    tags.push(c.long_bytes()?);
                }
                let default_queue_type = c.long_bytes()?;
                let limit = |c: &mut Cursor<'_>| -> Result<Option<i64>, DecodeError> {
                    match c.u8()? {
                        0 => Ok(None),
                        _ => Ok(Some(c.i64()?)),
                    }
                };
                let max_connections = limit(&mut c)?;
                let max_queues = limit(&mut c)?;
                vhosts.push(MetaVhost {
                    name,
                    description,
                    tags,
                    default_queue_type,
                    max_connections,
                    max_queues,
                });
            }
            m.vhosts = Some(vhosts);
        }
        for _ in 0..c.u32()? {
            let vhost = vhost(&mut c)?;
            let name = c.short_bytes()?;
            let kind = c.short_bytes()?;
            let flags = c.u8()?;
            let arguments = c.table()?;
            m.exchanges.push(MetaExchange {
                vhost,
                name,
                kind,
                auto_delete: flags & 1 != 0,
                internal: flags & 2 != 0,
                arguments,
            });
        }
        for _ in 0..c.u32()? {
            let vhost = vhost(&mut c)?;
            let name = c.short_bytes()?;
            let id = c.u32()?;
            let auto_delete = c.u8()? & 1 != 0;
            let arguments = c.table()?;
            m.queues.push(MetaQueue {
                vhost,
                name,
                id,
                auto_delete,
                arguments,
            });
        }
        for _ in 0..c.u32()? {
            let vhost = vhost(&mut c)?;
            let source = c.short_bytes()?;
            let to_exchange = c.u8()? != 0;
            let destination = c.short_bytes()?;
            let key = c.short_bytes()?;
            let arguments = c.table()?;
            m.bindings.push(MetaBinding {
                vhost,
                source,
                to_exchange,
                destination,
                key,
                arguments,
            });
        }
        if version >= VERSION {
            for _ in 0..c.u32()? {
                let vhost = c.long_bytes()?;
                let operator = c.u8()? != 0;
                let name = c.long_bytes()?;
                let pattern = c.long_bytes()?;
                let apply_to = c.short_bytes()?;
                let priority = c.i64()?;
                let definition = c.long_bytes()?;
                m.policies.push(MetaPolicy {
                    vhost,
                    operator,
                    name,
                    pattern,
                    apply_to,
                    priority,
                    definition,
                });
            }
        }
        c.finish()?;
        Ok(m)
    }

    /// Replaces `dir/meta` atomically with this snapshot.
    pub fn write_atomically(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join("meta.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join("meta"))?;
        fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FieldValue;

    fn sample() -> Meta {
        let mut args = FieldTable::new();
        args.insert(Bytes::from_static(b"x-max-length"), FieldValue::I32(10));
        Meta {
            next_queue_id: 7,
            vhosts: Some(vec![
                MetaVhost {
                    name: Bytes::from_static(b"/"),
                    ..Default::default()
                },
                MetaVhost {
                    name: Bytes::from_static(b"empty"),
                    description: Bytes::from_static(b"kept with no entity"),
                    tags: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
                    default_queue_type: Bytes::from_static(b"quorum"),
                    max_connections: Some(-1),
                    max_queues: Some(0),
                },
            ]),
            exchanges: vec![MetaExchange {
                vhost: Bytes::from_static(b"/"),
                name: Bytes::from_static(b"logs"),
                kind: Bytes::from_static(b"fanout"),
                auto_delete: false,
                internal: true,
                arguments: FieldTable::new(),
            }],
            queues: vec![MetaQueue {
                vhost: Bytes::from_static(b"/"),
                name: Bytes::from_static(b"tasks"),
                id: 3,
                auto_delete: true,
                arguments: args.clone(),
            }],
            bindings: vec![MetaBinding {
                vhost: Bytes::from_static(b"/"),
                source: Bytes::from_static(b"logs"),
                to_exchange: false,
                destination: Bytes::from_static(b"tasks"),
                key: Bytes::from_static(b"k"),
                arguments: args,
            }],
            policies: vec![MetaPolicy {
                vhost: Bytes::from_static(b"empty"),
                operator: true,
                name: Bytes::from_static(b"cap"),
                pattern: Bytes::from_static(b"^q"),
                apply_to: Bytes::from_static(b"queues"),
                priority: -3,
                definition: Bytes::from_static(br#"{"max-length":5}"#),
            }],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Meta::decode(&m.encode().freeze()).unwrap(), m);
    }

    /// `sample()` as version 1 (before vhosts) encoded it; kept as a fixture.
    const V1_SAMPLE: &[u8] = &[
        87, 82, 78, 77, 69, 84, 65, 1, 0, 0, 0, 102, 189, 225, 30, 120, 0, 0, 0, 7, 0, 0, 0, 1, 4,
        108, 111, 103, 115, 6, 102, 97, 110, 111, 117, 116, 2, 0, 0, 0, 0, 0, 0, 0, 1, 5, 116, 97,
        115, 107, 115, 0, 0, 0, 3, 1, 0, 0, 0, 18, 12, 120, 45, 109, 97, 120, 45, 108, 101, 110,
        103, 116, 104, 73, 0, 0, 0, 10, 0, 0, 0, 1, 4, 108, 111, 103, 115, 0, 5, 116, 97, 115, 107,
        115, 1, 107, 0, 0, 0, 18, 12, 120, 45, 109, 97, 120, 45, 108, 101, 110, 103, 116, 104, 73,
        0, 0, 0, 10,
    ];

    /// `sample()` without vhost records, as version 2 (vhost names, no vhost records)
    /// encoded it; kept as a fixture.
    const V2_SAMPLE: &[u8] = &[
        87, 82, 78, 77, 69, 84, 65, 2, 0, 0, 0, 108, 61, 222, 9, 210, 0, 0, 0, 7, 0, 0, 0, 1, 1,
        47, 4, 108, 111, 103, 115, 6, 102, 97, 110, 111, 117, 116, 2, 0, 0, 0, 0, 0, 0, 0, 1, 1,
        47, 5, 116, 97, 115, 107, 115, 0, 0, 0, 3, 1, 0, 0, 0, 18, 12, 120, 45, 109, 97, 120, 45,
        108, 101, 110, 103, 116, 104, 73, 0, 0, 0, 10, 0, 0, 0, 1, 1, 47, 4, 108, 111, 103, 115, 0,
        5, 116, 97, 115, 107, 115, 1, 107, 0, 0, 0, 18, 12, 120, 45, 109, 97, 120, 45, 108, 101,
        110, 103, 116, 104, 73, 0, 0, 0, 10,
    ];

    /// `sample()` as an older version has it: no vhost records.
    fn without_vhosts() -> Meta {
        Meta {
            vhosts: None,
            policies: Vec::new(),
            ..sample()
        }
    }

    #[test]
    fn version_3_reads_without_policies() {
        // A version-3 file is a version-4 one without the policy count at the end.
        let m = Meta {
            policies: Vec::new(),
            ..sample()
        };
        let v4 = m.encode();
        let payload = &v4[16..v4.len() - 4];
        let mut v3 = Vec::from(&v4[..7]);
        v3.push(VERSION_3);
        v3.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v3.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        v3.extend_from_slice(payload);
        assert_eq!(Meta::decode(&Bytes::from(v3)).unwrap(), m);
    }

    #[test]
    fn version_1_reads_with_everything_in_the_default_vhost() {
        assert_eq!(
            Meta::decode(&Bytes::from_static(V1_SAMPLE)).unwrap(),
            without_vhosts()
        );
    }

    #[test]
    fn version_2_reads_without_vhost_records() {
        assert_eq!(
            Meta::decode(&Bytes::from_static(V2_SAMPLE)).unwrap(),
            without_vhosts()
        );
    }

    #[test]
    fn no_vhost_at_all_is_not_the_same_as_no_vhost_records() {
        // Every vhost deleted ("/" included) must stay so after a restart.
        let m = Meta {
            vhosts: Some(Vec::new()),
            ..Meta::default()
        };
        assert_eq!(
            Meta::decode(&m.encode().freeze()).unwrap().vhosts,
            Some(Vec::new())
        );
    }

    #[test]
    fn round_trip_keeps_each_entity_in_its_vhost() {
        let mut m = sample();
        let mut other = sample();
        let v = Bytes::from_static(b"team-b");
        other.exchanges[0].vhost = v.clone();
        other.queues[0].vhost = v.clone();
        other.queues[0].id = 4;
        other.bindings[0].vhost = v;
        m.exchanges.extend(other.exchanges);
        m.queues.extend(other.queues);
        m.bindings.extend(other.bindings);
        assert_eq!(Meta::decode(&m.encode().freeze()).unwrap(), m);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let enc = sample().encode();
        for cut in 0..enc.len() {
            assert!(Meta::decode(&Bytes::copy_from_slice(&enc[..cut])).is_err());
        }
        let mut bad = enc.clone();
        let n = bad.len() - 1;
        bad[n] ^= 1;
        assert!(Meta::decode(&bad.freeze())
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("warren-meta-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        sample().write_atomically(&dir).unwrap();
        let back = Meta::decode(&Bytes::from(fs::read(dir.join("meta")).unwrap())).unwrap();
        assert_eq!(back, sample());
        assert!(!dir.join("meta.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
