//! Frames: the 7-byte header (type, channel, payload size), the payload and the
//! frame-end octet; plus writers for every frame the broker sends.
//!
//! [`parse`] only looks at a buffer and never consumes from it: the connection
//! layer reads [`FrameHead::total_len`] bytes off once it says the frame is
//! complete, and hands the payload (`7..7 + size`) to [`Method::decode`] or
//! [`ContentHeader::parse`](super::ContentHeader::parse).
//!
//! Writers append whole frames to a `BytesMut`; they never fail (over-long strings
//! are truncated, see [`super::types::write_shortstr`]). The broker must not send
//! frames larger than the negotiated frame-max; method frames are small, and
//! [`write_body`] splits bodies accordingly.

use bytes::{BufMut, BytesMut};

use super::method::Method;
use super::types::write_shortstr;

/// Frame type: a method.
pub const FRAME_METHOD: u8 = 1;
/// Frame type: a content header.
pub const FRAME_HEADER: u8 = 2;
/// Frame type: a piece of content body.
pub const FRAME_BODY: u8 = 3;
/// Frame type: a heartbeat (channel 0, empty payload).
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that must end every frame.
pub const FRAME_END: u8 = 0xCE;
/// The smallest frame-max a peer may negotiate (and the frame size allowed before tuning).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// What a client sends first: "AMQP", 0, then protocol version 0-9-1.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// The size of a frame header (type, channel, size).
const HEADER_LEN: usize = 7;

/// Why a byte stream is not a valid sequence of frames. All are fatal to the
/// connection (501 FRAME_ERROR), since framing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The octet after the payload was this rather than [`FRAME_END`].
    BadFrameEnd(u8),
    /// The frame (payload + 8) exceeds the negotiated frame-max.
    TooLarge {
        /// The announced payload size.
        size: u32,
        /// The frame-max it was checked against.
        max: u32,
    },
    /// The frame type is not method, header, body or heartbeat.
    UnknownType(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadFrameEnd(b) => write!(f, "frame end octet 0x{b:02x}, expected 0xce"),
            FrameError::TooLarge { size, max } => {
                write!(f, "frame payload of {size} bytes exceeds frame-max {max}")
            }
            FrameError::UnknownType(t) => write!(f, "unknown frame type {t}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A parsed frame header; the payload is `buf[7..7 + size]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// The frame type (one of the `FRAME_*` type constants).
    pub kind: u8,
    /// The channel number (0 for connection-level frames).
    pub channel: u16,
    /// The payload size.
    pub size: u32,
}

impl FrameHead {
    /// The length of the whole frame: header, payload and frame-end octet.
    pub fn total_len(&self) -> usize {
        (self.size as usize).saturating_add(HEADER_LEN + 1)
    }
}

/// Looks for one frame at the start of `buf`. `Ok(None)` means more bytes are
/// needed; nothing is ever consumed.
///
/// Rejects an unknown type and `size + 8 > frame_max` as soon as the 7-byte header
/// is present (before waiting for the payload, so a hostile size cannot make the
/// broker buffer gigabytes); `frame_max` 0 means no limit. Checks the frame-end
/// octet once the whole frame is present.
pub fn parse(buf: &[u8], frame_max: u32) -> Result<Option<FrameHead>, FrameError> {
    let Some(&[kind, c0, c1, s0, s1, s2, s3]) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let channel = u16::from_be_bytes([c0, c1]);
    let size = u32::from_be_bytes([s0, s1, s2, s3]);
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(FrameError::UnknownType(kind));
    }
    if frame_max != 0 && u64::from(size) + 8 > u64::from(frame_max) {
        return Err(FrameError::TooLarge {
            size,
            max: frame_max,
        });
    }
    let head = FrameHead {
        kind,
        channel,
        size,
    };
    let Some(end_at) = (size as usize).checked_add(HEADER_LEN) else {
        // Cannot be addressed on this platform: it will never be complete.
        return Err(FrameError::TooLarge {
            size,
            max: frame_max,
        });
    };
    match buf.get(end_at) {
        None => Ok(None),
        Some(&FRAME_END) => Ok(Some(head)),
        Some(&b) => Err(FrameError::BadFrameEnd(b)),
    }
}

/// Appends a frame header with a zero size; returns where the size must be patched.
fn begin(buf: &mut BytesMut, kind: u8, channel: u16) -> usize {
    buf.put_u8(kind);
    buf.put_u16(channel);
    let at = buf.len();
    buf.put_u32(0);
    at
}

/// Patches the size written by [`begin`] and appends the frame-end octet.
fn finish(buf: &mut BytesMut, size_at: usize) {
    let size = buf.len().saturating_sub(size_at + 4);
    let size = u32::try_from(size).unwrap_or(u32::MAX);
    if let Some(slot) = buf.get_mut(size_at..size_at + 4) {
        slot.copy_from_slice(&size.to_be_bytes());
    }
    buf.put_u8(FRAME_END);
}

/// Appends a whole method frame: header, class and method ids, arguments, frame end.
pub fn write_method(buf: &mut BytesMut, channel: u16, m: &Method) {
    let at = begin(buf, FRAME_METHOD, channel);
    m.encode(buf);
    finish(buf, at);
}

/// Appends a heartbeat frame.
pub fn write_heartbeat(buf: &mut BytesMut) {
    buf.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Appends a content header frame for the basic class: class id 60, weight 0,
/// `body_size`, then `properties_raw` (flags + property list, as kept by
/// [`ContentHeader`](super::ContentHeader)) verbatim.
pub fn write_content_header(
    buf: &mut BytesMut,
    channel: u16,
    body_size: u64,
    properties_raw: &[u8],
) {
    let at = begin(buf, FRAME_HEADER, channel);
    buf.put_u16(60);
    buf.put_u16(0);
    buf.put_u64(body_size);
    buf.put_slice(properties_raw);
    finish(buf, at);
}

/// Appends only the 7-byte header of a body frame carrying `len` bytes; the caller
/// sends the body bytes (by reference, e.g. in a vectored write) and then
/// [`FRAME_END`].
pub fn write_body_frame_header(buf: &mut BytesMut, channel: u16, len: u32) {
    buf.put_u8(FRAME_BODY);
    buf.put_u16(channel);
    buf.put_u32(len);
}

/// The largest body payload per frame under `frame_max` (0 = no limit).
pub fn max_body_payload(frame_max: u32) -> usize {
    if frame_max == 0 {
        u32::MAX as usize
    } else {
        // A frame_max below 9 cannot carry a body; send a byte per frame rather
        // than loop forever (negotiation never allows less than FRAME_MIN_SIZE).
        (frame_max.saturating_sub(8) as usize).max(1)
    }
}

/// Appends `body` as body frames of at most `frame_max - 8` payload bytes each
/// (`frame_max` 0 = no limit). An empty body writes no frame.
pub fn write_body(buf: &mut BytesMut, channel: u16, body: &[u8], frame_max: u32) {
    for chunk in body.chunks(max_body_payload(frame_max)) {
        // chunk.len() <= u32::MAX by construction of max_body_payload.
        write_body_frame_header(buf, channel, chunk.len() as u32);
        buf.put_slice(chunk);
        buf.put_u8(FRAME_END);
    }
}

/// Appends a basic.deliver method frame without building a [`Method`] (the hot path).
pub fn write_deliver(
    buf: &mut BytesMut,
    channel: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    redelivered: bool,
    exchange: &[u8],
    routing_key: &[u8],
) {
    let at = begin(buf, FRAME_METHOD, channel);
    buf.put_u16(60);
    buf.put_u16(60);
    write_shortstr(buf, consumer_tag);
    buf.put_u64(delivery_tag);
    buf.put_u8(u8::from(redelivered));
    write_shortstr(buf, exchange);
    write_shortstr(buf, routing_key);
    finish(buf, at);
}

/// Appends a basic.ack method frame (publisher confirms) without building a [`Method`].
pub fn write_ack(buf: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    let [c0, c1] = channel.to_be_bytes();
    let t = delivery_tag.to_be_bytes();
    buf.put_slice(&[FRAME_METHOD, c0, c1, 0, 0, 0, 13, 0, 60, 0, 80]);
    buf.put_slice(&t);
    buf.put_u8(u8::from(multiple));
    buf.put_u8(FRAME_END);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{basic, connection, FieldTable, FieldValue};
    use bytes::Bytes;

    #[test]
    fn parse_needs_more_at_every_prefix() {
        let mut buf = BytesMut::new();
        write_method(&mut buf, 3, &Method::BasicQosOk(basic::QosOk));
        write_heartbeat(&mut buf);
        let first_len = 7 + 4 + 1;
        for n in 0..first_len {
            assert_eq!(parse(&buf[..n], 4096), Ok(None), "prefix {n}");
        }
        let h = parse(&buf, 4096).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHead {
                kind: FRAME_METHOD,
                channel: 3,
                size: 4
            }
        );
        assert_eq!(h.total_len(), first_len);
        let hb = parse(&buf[first_len..], 0).unwrap().unwrap();
        assert_eq!(
            hb,
            FrameHead {
                kind: FRAME_HEARTBEAT,
                channel: 0,
                size: 0
            }
        );
        assert_eq!(hb.total_len(), 8);
    }

    #[test]
    fn parse_bad_end_and_type() {
        let buf = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0xCD];
        assert_eq!(parse(&buf, 0), Err(FrameError::BadFrameEnd(0xCD)));
        let buf = [4, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse(&buf, 0), Err(FrameError::UnknownType(4)));
        // An unknown type is rejected with only the header present.
        assert_eq!(
            parse(&[0, 0, 0, 0, 0, 0, 9], 0),
            Err(FrameError::UnknownType(0))
        );
    }

    #[test]
    fn parse_too_large_from_header_alone() {
        // size 4089 + 8 = 4097 > 4096.
        let buf = [FRAME_BODY, 0, 1, 0, 0, 0x0F, 0xF9];
        assert_eq!(
            parse(&buf, 4096),
            Err(FrameError::TooLarge {
                size: 4089,
                max: 4096
            })
        );
        // 4088 + 8 = 4096 fits: needs more bytes.
        let buf = [FRAME_BODY, 0, 1, 0, 0, 0x0F, 0xF8];
        assert_eq!(parse(&buf, 4096), Ok(None));
        // size 2^32 - 1: too large for any frame_max, and "need more" with no limit.
        let buf = [FRAME_BODY, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            parse(&buf, u32::MAX),
            Err(FrameError::TooLarge {
                size: u32::MAX,
                max: u32::MAX
            })
        );
        assert_eq!(parse(&buf, 0), Ok(None));
        let h = FrameHead {
            kind: FRAME_BODY,
            channel: 1,
            size: u32::MAX,
        };
        assert_eq!(h.total_len(), u32::MAX as usize + 8);
    }

    #[test]
    fn connection_start_exact_bytes() {
        let mut props = FieldTable::new();
        props.insert(
            &b"product"[..],
            FieldValue::LongStr(Bytes::from_static(b"Warren")),
        );
        let m = Method::ConnectionStart(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: props,
            mechanisms: Bytes::from_static(b"PLAIN"),
            locales: Bytes::from_static(b"en_US"),
        });
        let mut buf = BytesMut::new();
        write_method(&mut buf, 0, &m);
        let mut want: Vec<u8> = vec![1, 0, 0, 0, 0, 0, 47, 0, 10, 0, 10, 0, 9];
        want.extend_from_slice(&[0, 0, 0, 19, 7]);
        want.extend_from_slice(b"productS");
        want.extend_from_slice(&[0, 0, 0, 6]);
        want.extend_from_slice(b"Warren");
        want.extend_from_slice(&[0, 0, 0, 5]);
        want.extend_from_slice(b"PLAIN");
        want.extend_from_slice(&[0, 0, 0, 5]);
        want.extend_from_slice(b"en_US");
        want.push(0xCE);
        assert_eq!(&buf[..], &want[..]);
        let h = parse(&buf, 4096).unwrap().unwrap();
        let payload = Bytes::copy_from_slice(&buf[7..h.total_len() - 1]);
        assert_eq!(Method::decode(&payload), Ok(m));
    }

    #[test]
    fn deliver_exact_bytes() {
        let mut buf = BytesMut::new();
        write_deliver(&mut buf, 1, b"ctag", 0x0102, true, b"ex", b"rk");
        let want: &[u8] = &[
            1, 0, 1, 0, 0, 0, 24, // header
            0, 60, 0, 60, // basic.deliver
            4, b'c', b't', b'a', b'g', //
            0, 0, 0, 0, 0, 0, 1, 2, // delivery tag
            1, // redelivered
            2, b'e', b'x', 2, b'r', b'k', 0xCE,
        ];
        assert_eq!(&buf[..], want);
        // Same bytes as the generic encoder.
        let m = Method::BasicDeliver(basic::Deliver {
            consumer_tag: Bytes::from_static(b"ctag"),
            delivery_tag: 0x0102,
            redelivered: true,
            exchange: Bytes::from_static(b"ex"),
            routing_key: Bytes::from_static(b"rk"),
        });
        let mut generic = BytesMut::new();
        write_method(&mut generic, 1, &m);
        assert_eq!(buf, generic);
    }

    #[test]
    fn ack_matches_generic() {
        for (tag, multiple) in [(0u64, false), (u64::MAX, true), (77, true)] {
            let mut fast = BytesMut::new();
            write_ack(&mut fast, 513, tag, multiple);
            let mut generic = BytesMut::new();
            let m = Method::BasicAck(basic::Ack {
                delivery_tag: tag,
                multiple,
            });
            write_method(&mut generic, 513, &m);
            assert_eq!(fast, generic);
        }
    }

    #[test]
    fn bodies_are_split() {
        let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut buf = BytesMut::new();
        write_body(&mut buf, 2, &body, 4096);
        let mut rest = &buf[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            let h = parse(rest, 4096).unwrap().unwrap();
            assert_eq!(h.kind, FRAME_BODY);
            assert_eq!(h.channel, 2);
            assert!(h.size <= 4088 && h.size > 0);
            got.extend_from_slice(&rest[7..h.total_len() - 1]);
            rest = &rest[h.total_len()..];
        }
        assert_eq!(got, body);
        let mut empty = BytesMut::new();
        write_body(&mut empty, 2, b"", 4096);
        assert!(empty.is_empty());
    }

    #[test]
    fn content_header_frame() {
        let mut buf = BytesMut::new();
        write_content_header(&mut buf, 5, 3, &[0x10, 0, 2]);
        let h = parse(&buf, 4096).unwrap().unwrap();
        assert_eq!(h.kind, FRAME_HEADER);
        let payload = Bytes::copy_from_slice(&buf[7..h.total_len() - 1]);
        let ch = crate::proto::ContentHeader::parse(&payload).unwrap();
        assert_eq!(ch.body_size, 3);
        assert_eq!(&ch.properties[..], &[0x10, 0, 2]);
    }
}
