//! On-disk record formats of the message store, and scanning them back.
//!
//! A message segment `msgs.NNNNNNNNNN` starts with an 8-byte header (`WRNSEG` + format
//! version u16) followed by records `len u32 | crc32 u32 | payload[len]` (big-endian; the
//! CRC covers the payload). A message is addressed by (segment number, offset of its
//! record). A publish record's payload is
//! `n u16 | n × queue id u32 | exchange shortstr | routing key shortstr | props_len u32 |
//! [arrival u64] | properties | body`. Version 2 (issue 12): when bit 31 of `props_len`
//! is set, the message's arrival time (epoch ms) follows it, for a message that can
//! expire (its TTL keeps counting across a restart); the length is the other 31 bits.
//! Version 1 files (never that bit: no property list is 2 GiB) are read the same way;
//! the version moved so that an older Warren refuses a newer directory instead of
//! truncating it at the first record with an arrival.
//!
//! Each segment has an ack file `acks.NNNNNNNNNN` (`WRNACK` + version u16) of fixed
//! 13-byte records `offset u32 | queue id u32 | kind u8 | crc32 u32` (the CRC covers the
//! first 9 bytes): kind 1 = acked (the queue is done with it), 2 = delivered (it comes
//! back `redelivered` after a crash), 3 = returned (a quorum queue's message came back
//! once more: recovery counts these for its `x-delivery-count`; a build that does not
//! know kind 3 ignores it, so the version did not move).
//!
//! Scanning stops at the first record that is short or fails its CRC: that is where a
//! crash tore the tail, and the caller truncates the file there.

use bytes::{BufMut, Bytes, BytesMut};

pub const SEG_MAGIC: &[u8; 6] = b"WRNSEG";
pub const ACK_MAGIC: &[u8; 6] = b"WRNACK";
pub const VERSION: u16 = 2;
/// The format before arrival times; read as is.
pub const VERSION_1: u16 = 1;
/// Bit 31 of a publish record's `props_len`: an arrival time follows.
const TIMED: u32 = 1 << 31;
pub const HEADER_LEN: usize = 8;
pub const ACK_RECORD_LEN: usize = 13;

pub const ACK: u8 = 1;
pub const DELIVERED: u8 = 2;
pub const RETURNED: u8 = 3;
/// A quorum queue's message waiting to be dead-lettered at-least-once: `DEAD` plus the
/// reason's code (0 to 3), so 4 to 7.
pub const DEAD: u8 = 4;

/// The 8-byte file header for a magic.
pub fn header(magic: &[u8; 6]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(magic);
    h[6..].copy_from_slice(&VERSION.to_be_bytes());
    h
}

/// Why a file header is not one this build reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than `HEADER_LEN` bytes.
    Short,
    /// Not our magic (what was there, lossily as text).
    BadMagic(String),
    /// Ours, but a format version this build does not read.
    Version(u16),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => f.write_str("file shorter than its header"),
            HeaderError::BadMagic(m) => write!(f, "bad magic {m:?}"),
            HeaderError::Version(v) => write!(
                f,
                "format version {v} is not supported (this build reads {VERSION})"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Checks a file header. Err says why it is not ours or too new.
pub fn check_header(data: &[u8], magic: &[u8; 6]) -> Result<(), HeaderError> {
    if data.len() < HEADER_LEN {
        return Err(HeaderError::Short);
    }
    if &data[..6] != magic {
        return Err(HeaderError::BadMagic(
            String::from_utf8_lossy(&data[..6]).into_owned(),
        ));
    }
    let v = u16::from_be_bytes([data[6], data[7]]);
    if v != VERSION && v != VERSION_1 {
        return Err(HeaderError::Version(v));
    }
    Ok(())
}

fn put_short(buf: &mut BytesMut, s: &[u8]) {
    let n = s.len().min(255);
    buf.put_u8(n as u8);
    buf.put_slice(&s[..n]);
}

/// Appends a whole publish record (length, CRC, payload) to `buf`.
pub fn encode_publish(
    buf: &mut BytesMut,
    queues: &[u32],
    exchange: &[u8],
    key: &[u8],
    props: &[u8],
    body: &[u8],
) {
    encode_publish_timed(buf, queues, exchange, key, props, body, None);
}

/// [`encode_publish`] with the arrival time (epoch ms) of a message that can expire.
pub fn encode_publish_timed(
    buf: &mut BytesMut,
    queues: &[u32],
    exchange: &[u8],
    key: &[u8],
    props: &[u8],
    body: &[u8],
    arrival_ms: Option<u64>,
) {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_u32(0);
    let payload = buf.len();
    buf.put_u16(queues.len().min(u16::MAX as usize) as u16);
    for q in queues.iter().take(u16::MAX as usize) {
        buf.put_u32(*q);
    }
    put_short(buf, exchange);
    put_short(buf, key);
    // A property list arrives in one frame: far below 2 GiB (bit 31 is the flag).
    let plen = (props.len() as u32) & !TIMED;
    match arrival_ms {
        Some(t) => {
            buf.put_u32(plen | TIMED);
            buf.put_u64(t);
        }
        None => buf.put_u32(plen),
    }
    buf.put_slice(props);
    buf.put_slice(body);
    let len = (buf.len() - payload) as u32;
    let crc = crc32fast::hash(&buf[payload..]);
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// Appends an ack-file record.
pub fn encode_ack(buf: &mut BytesMut, offset: u32, queue: u32, kind: u8) {
    let mut r = [0u8; ACK_RECORD_LEN];
    r[..4].copy_from_slice(&offset.to_be_bytes());
    r[4..8].copy_from_slice(&queue.to_be_bytes());
    r[8] = kind;
    let crc = crc32fast::hash(&r[..9]);
    r[9..].copy_from_slice(&crc.to_be_bytes());
    buf.put_slice(&r);
}

/// A publish record read back; every field is a slice of the segment's buffer.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: u32,
    pub queues: Vec<u32>,
    pub exchange: Bytes,
    pub routing_key: Bytes,
    pub properties: Bytes,
    pub body: Bytes,
    /// Arrival time (epoch ms) of a message that can expire.
    pub arrival_ms: Option<u64>,
}

/// Walks the publish records of a whole segment file. Returns the records and the
/// length of the valid prefix (where a torn or corrupt tail begins).
pub fn scan_segment(data: &Bytes) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while let Some(r) = parse_record(data, at) {
        at = r.1;
        out.push(r.0);
    }
    (out, at.min(data.len()))
}

/// The publish record at `at` when it is whole and passes its CRC, with the offset just
/// past it.
pub fn parse_record(data: &Bytes, at: usize) -> Option<(Record, usize)> {
    {
        let head = data.get(at..at + 8)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let end = (at + 8).checked_add(len)?;
        let payload = data.get(at + 8..end)?;
        if crc32fast::hash(payload) != crc {
            return None;
        }
        let r = parse_publish(data, at, at + 8, end)?;
        Some((r, end))
    }
}

fn parse_publish(data: &Bytes, record: usize, mut at: usize, end: usize) -> Option<Record> {
    let p = data.get(at..end)?;
    let n = u16::from_be_bytes([*p.first()?, *p.get(1)?]) as usize;
    at += 2;
    let mut queues = Vec::with_capacity(n);
    for _ in 0..n {
        let q = data.get(at..at + 4)?;
        queues.push(u32::from_be_bytes([q[0], q[1], q[2], q[3]]));
        at += 4;
    }
    let short = |at: &mut usize| -> Option<Bytes> {
        let n = *data.get(*at)? as usize;
        let s = data.get(*at + 1..*at + 1 + n)?;
        let b = data.slice_ref(s);
        *at += 1 + n;
        Some(b)
    };
    let exchange = short(&mut at)?;
    let routing_key = short(&mut at)?;
    let pl = data.get(at..at + 4)?;
    let plen = u32::from_be_bytes([pl[0], pl[1], pl[2], pl[3]]);
    at += 4;
    let mut arrival_ms = None;
    if plen & TIMED != 0 {
        let t = data.get(at..at + 8)?;
        arrival_ms = Some(u64::from_be_bytes([
            t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7],
        ]));
        at += 8;
    }
    let plen = (plen & !TIMED) as usize;
    let props = data.get(at..at.checked_add(plen)?)?;
    let properties = data.slice_ref(props);
    at += plen;
    if at > end {
        return None;
    }
    let body = data.slice(at..end);
    Some(Record {
        offset: u32::try_from(record).ok()?,
        queues,
        exchange,
        routing_key,
        properties,
        body,
        arrival_ms,
    })
}

/// Walks an ack file; returns (offset, queue, kind) triples and the valid prefix length.
pub fn scan_acks(data: &[u8]) -> (Vec<(u32, u32, u8)>, usize) {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while let Some(r) = data.get(at..at + ACK_RECORD_LEN) {
        let crc = u32::from_be_bytes([r[9], r[10], r[11], r[12]]);
        if crc32fast::hash(&r[..9]) != crc {
            break;
        }
        let off = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
        let q = u32::from_be_bytes([r[4], r[5], r[6], r[7]]);
        out.push((off, q, r[8]));
        at += ACK_RECORD_LEN;
    }
    (out, at.min(data.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[(&[u32], &str, &[u8])]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_slice(&header(SEG_MAGIC));
        for (q, key, body) in records {
            encode_publish(&mut b, q, b"ex", key.as_bytes(), &[0x10, 0, 2], body);
        }
        b
    }

    #[test]
    fn publish_records_round_trip() {
        let b = segment(&[
            (&[1, 2], "k1", b"hello"),
            (&[3], "k2", b""),
            (&[], "k3", &[0xff; 1000]),
        ])
        .freeze();
        let (recs, valid) = scan_segment(&b);
        assert_eq!(valid, b.len());
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].queues, vec![1, 2]);
        assert_eq!(&recs[0].routing_key[..], b"k1");
        assert_eq!(&recs[0].body[..], b"hello");
        assert_eq!(&recs[0].properties[..], &[0x10, 0, 2]);
        assert_eq!(recs[0].offset as usize, HEADER_LEN);
        assert!(recs[1].body.is_empty());
        assert_eq!(recs[2].body.len(), 1000);
    }

    #[test]
    fn a_torn_or_garbled_tail_ends_the_scan_at_the_last_good_record() {
        let full = segment(&[
            (&[1], "a", b"one"),
            (&[1], "b", b"two"),
            (&[1], "c", b"three"),
        ]);
        let (_, all) = scan_segment(&full.clone().freeze());
        for cut in HEADER_LEN..full.len() {
            let (recs, valid) = scan_segment(&Bytes::copy_from_slice(&full[..cut]));
            assert!(valid <= cut);
            assert!(recs.len() <= 3);
            // Every record reported lies wholly within the prefix.
            assert!(recs.iter().all(|r| (r.offset as usize) < valid));
        }
        let mut garbled = full.clone();
        let last = garbled.len() - 2;
        garbled[last] ^= 0x55;
        let (recs, valid) = scan_segment(&garbled.freeze());
        assert_eq!(recs.len(), 2);
        assert!(valid < all);
    }

    #[test]
    fn ack_records_round_trip_and_stop_at_damage() {
        let mut b = BytesMut::new();
        b.put_slice(&header(ACK_MAGIC));
        encode_ack(&mut b, 8, 1, ACK);
        encode_ack(&mut b, 40, 2, DELIVERED);
        let (recs, valid) = scan_acks(&b);
        assert_eq!(recs, vec![(8, 1, ACK), (40, 2, DELIVERED)]);
        assert_eq!(valid, b.len());
        let (recs, _) = scan_acks(&b[..b.len() - 1]);
        assert_eq!(recs.len(), 1);
        assert!(check_header(&b, ACK_MAGIC).is_ok());
        let mut v1 = header(ACK_MAGIC);
        v1[7] = 1;
        assert!(
            check_header(&v1, ACK_MAGIC).is_ok(),
            "version 1 is still read"
        );
        v1[7] = 3;
        assert_eq!(check_header(&v1, ACK_MAGIC), Err(HeaderError::Version(3)));
        assert!(check_header(&b, SEG_MAGIC).is_err());
    }

    #[test]
    fn arrival_times_round_trip_and_untimed_records_stay_as_before() {
        let mut b = BytesMut::new();
        b.put_slice(&header(SEG_MAGIC));
        encode_publish_timed(
            &mut b,
            &[1, 2],
            b"x",
            b"k",
            &[0, 0],
            b"body",
            Some(1_700_000_000_123),
        );
        let untimed_at = b.len();
        encode_publish(&mut b, &[1], b"x", b"k", &[0, 0], b"plain");
        let (recs, valid) = scan_segment(&b.clone().freeze());
        assert_eq!(valid, b.len());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].arrival_ms, Some(1_700_000_000_123));
        assert_eq!(
            (&recs[0].properties[..], &recs[0].body[..]),
            (&[0u8, 0][..], &b"body"[..])
        );
        assert_eq!(recs[1].arrival_ms, None);
        assert_eq!(&recs[1].body[..], b"plain");
        // The untimed record is byte for byte what version 1 wrote.
        let plen_at = untimed_at + 8 + 2 + 4 + 2 + 2;
        assert_eq!(&b[plen_at..plen_at + 4], &2u32.to_be_bytes());
    }
}
