//! Content headers and basic-class message properties.
//!
//! The broker keeps a message's properties as the raw bytes the publisher sent
//! (flags + property list, [`ContentHeader::properties`]) and forwards them verbatim
//! to consumers: decoding them into a [`BasicProperties`] is only needed when the
//! broker must look inside, and the few properties it routinely needs
//! ([`delivery_mode`], [`priority`], [`expiration`], [`headers`]) have cheap raw
//! accessors that walk the bytes without allocating.
//!
//! Property flags: one or more 16-bit words; in each word bit 15 is the first
//! property of that word and bit 0 says another word follows. The basic class has
//! 14 properties, so only bits 15..=2 of the first word may be set; continuation
//! words (which clients have no reason to send) must carry no property bits.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::types::{write_shortstr, Cursor, FieldTable, Reader};

/// The class id of the basic class, the only class with content.
const BASIC: u16 = 60;

/// The header of a content header frame, with the property list kept raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHeader {
    /// The class of the content (always 60, basic, once parsed).
    pub class_id: u16,
    /// The total body size announced for the body frames that follow.
    pub body_size: u64,
    /// The property flags and property list, exactly as received (a slice of the
    /// frame payload); validated by [`ContentHeader::parse`].
    pub properties: Bytes,
}

impl ContentHeader {
    /// Parses a content header frame's payload: class id, weight (ignored), body
    /// size, then the property flags and list.
    ///
    /// The property list is validated (flags, every present property well-formed,
    /// tables valid to [`super::types::MAX_DEPTH`], nothing after the last one)
    /// without allocating, so that later raw accessors and [`BasicProperties::decode`]
    /// cannot fail on it and consumers never receive a malformed header from us.
    /// `properties` shares `payload` (zero copy).
    pub fn parse(payload: &Bytes) -> Result<ContentHeader, DecodeError> {
        let mut r = Reader::new(payload);
        let class_id = r.u16()?;
        let _weight = r.u16()?;
        let body_size = r.u64()?;
        if class_id != BASIC {
            return Err(DecodeError::BadContentClass(class_id));
        }
        let start = r.position();
        let flags = read_flags(&mut r)?;
        for p in Prop::ALL {
            if flags & p.bit() != 0 {
                skip_prop(&mut r, p.kind(), true)?;
            }
        }
        r.finish()?;
        Ok(ContentHeader {
            class_id,
            body_size,
            properties: payload.slice(start..),
        })
    }

    /// Decodes [`ContentHeader::properties`] (allocates only for a headers table).
    pub fn decode_properties(&self) -> Result<BasicProperties, DecodeError> {
        BasicProperties::decode(&self.properties)
    }
}

/// Reads the flag word(s); returns the first word with the continuation bit
/// cleared. Rejects property bits the basic class does not have.
fn read_flags(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    let first = r.u16()?;
    if first & 0b10 != 0 {
        return Err(DecodeError::BadPropertyFlags);
    }
    let mut word = first;
    while word & 1 != 0 {
        word = r.u16()?;
        if word & !1 != 0 {
            return Err(DecodeError::BadPropertyFlags);
        }
    }
    Ok(first & !1)
}

/// The wire type of a property.
#[derive(Clone, Copy)]
enum Kind {
    Short,
    Table,
    Octet,
    Timestamp,
}

/// The 14 basic properties, in wire order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prop {
    ContentType,
    ContentEncoding,
    Headers,
    DeliveryMode,
    Priority,
    CorrelationId,
    ReplyTo,
    Expiration,
    MessageId,
    Timestamp,
    Type,
    UserId,
    AppId,
    ClusterId,
}

impl Prop {
    const ALL: [Prop; 14] = [
        Prop::ContentType,
        Prop::ContentEncoding,
        Prop::Headers,
        Prop::DeliveryMode,
        Prop::Priority,
        Prop::CorrelationId,
        Prop::ReplyTo,
        Prop::Expiration,
        Prop::MessageId,
        Prop::Timestamp,
        Prop::Type,
        Prop::UserId,
        Prop::AppId,
        Prop::ClusterId,
    ];

    fn bit(self) -> u16 {
        1 << (15 - self as u16)
    }

    fn kind(self) -> Kind {
        match self {
            Prop::Headers => Kind::Table,
            Prop::DeliveryMode | Prop::Priority => Kind::Octet,
            Prop::Timestamp => Kind::Timestamp,
            _ => Kind::Short,
        }
    }
}

/// Skips one property value; validates table contents only if `deep`.
fn skip_prop(r: &mut Reader<'_>, kind: Kind, deep: bool) -> Result<(), DecodeError> {
    match kind {
        Kind::Short => {
            r.shortstr()?;
        }
        Kind::Octet => {
            r.u8()?;
        }
        Kind::Timestamp => {
            r.u64()?;
        }
        Kind::Table if deep => r.skip_table(0)?,
        Kind::Table => {
            r.longstr()?;
        }
    }
    Ok(())
}

/// Positions a reader over `raw` at the value of `want`, if present. Tables before
/// it are skipped by length only (cheap; `raw` was validated when it was parsed).
fn seek<'a>(raw: &'a [u8], want: Prop) -> Option<Reader<'a>> {
    let mut r = Reader::new(raw);
    let flags = read_flags(&mut r).ok()?;
    if flags & want.bit() == 0 {
        return None;
    }
    for p in Prop::ALL {
        if p == want {
            return Some(r);
        }
        if flags & p.bit() != 0 {
            skip_prop(&mut r, p.kind(), false).ok()?;
        }
    }
    None
}

/// The delivery-mode property (2 = persistent) of a raw property list, without allocating.
pub fn delivery_mode(raw: &[u8]) -> Option<u8> {
    seek(raw, Prop::DeliveryMode)?.u8().ok()
}

/// The priority property of a raw property list, without allocating.
pub fn priority(raw: &[u8]) -> Option<u8> {
    seek(raw, Prop::Priority)?.u8().ok()
}

/// The expiration property (per-message TTL in milliseconds, as decimal text) of a
/// raw property list, without allocating.
pub fn expiration(raw: &[u8]) -> Option<&[u8]> {
    seek(raw, Prop::Expiration)?.shortstr().ok()
}

/// The headers table of a raw property list, decoded on demand (its strings share
/// `raw`). `None` if absent or malformed.
pub fn headers(raw: &Bytes) -> Option<FieldTable> {
    let pos = seek(raw, Prop::Headers)?.position();
    let mut c = Cursor::new(raw);
    c.take(pos).ok()?;
    c.table().ok()
}

/// The basic class's message properties, decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BasicProperties {
    /// MIME content type.
    pub content_type: Option<Bytes>,
    /// MIME content encoding.
    pub content_encoding: Option<Bytes>,
    /// Application headers (also used by headers exchanges).
    pub headers: Option<FieldTable>,
    /// 1 = transient, 2 = persistent.
    pub delivery_mode: Option<u8>,
    /// Message priority, 0..=9.
    pub priority: Option<u8>,
    /// Application correlation identifier.
    pub correlation_id: Option<Bytes>,
    /// Address to reply to.
    pub reply_to: Option<Bytes>,
    /// Per-message TTL in milliseconds, as decimal text.
    pub expiration: Option<Bytes>,
    /// Application message identifier.
    pub message_id: Option<Bytes>,
    /// Message timestamp (seconds since the epoch).
    pub timestamp: Option<u64>,
    /// The spec's `type` property: message type name.
    pub kind: Option<Bytes>,
    /// Creating user id (RabbitMQ checks it against the connection's user).
    pub user_id: Option<Bytes>,
    /// Creating application id.
    pub app_id: Option<Bytes>,
    /// Deprecated cluster id.
    pub cluster_id: Option<Bytes>,
}

impl BasicProperties {
    /// Decodes a raw property list (flags + values, as in
    /// [`ContentHeader::properties`]); strings share `raw`.
    pub fn decode(raw: &Bytes) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(raw);
        let flags = read_flags(&mut c)?;
        let has = |p: Prop| flags & p.bit() != 0;
        let mut p = BasicProperties::default();
        macro_rules! short {
            ($prop:expr, $field:ident) => {
                if has($prop) {
                    p.$field = Some(c.short_bytes()?);
                }
            };
        }
        short!(Prop::ContentType, content_type);
        short!(Prop::ContentEncoding, content_encoding);
        if has(Prop::Headers) {
            p.headers = Some(c.table()?);
        }
        if has(Prop::DeliveryMode) {
            p.delivery_mode = Some(c.u8()?);
        }
        if has(Prop::Priority) {
            p.priority = Some(c.u8()?);
        }
        short!(Prop::CorrelationId, correlation_id);
        short!(Prop::ReplyTo, reply_to);
        short!(Prop::Expiration, expiration);
        short!(Prop::MessageId, message_id);
        if has(Prop::Timestamp) {
            p.timestamp = Some(c.u64()?);
        }
        short!(Prop::Type, kind);
        short!(Prop::UserId, user_id);
        short!(Prop::AppId, app_id);
        short!(Prop::ClusterId, cluster_id);
        c.finish()?;
        Ok(p)
    }

    /// Appends the flags word and the present properties (the form kept in
    /// [`ContentHeader::properties`]). Strings over 255 bytes are truncated.
    pub fn encode(&self, buf: &mut BytesMut) {
        let mut flags = 0u16;
        let mut set = |present: bool, p: Prop| {
            if present {
                flags |= p.bit();
            }
        };
        set(self.content_type.is_some(), Prop::ContentType);
        set(self.content_encoding.is_some(), Prop::ContentEncoding);
        set(self.headers.is_some(), Prop::Headers);
        set(self.delivery_mode.is_some(), Prop::DeliveryMode);
        set(self.priority.is_some(), Prop::Priority);
        set(self.correlation_id.is_some(), Prop::CorrelationId);
        set(self.reply_to.is_some(), Prop::ReplyTo);
        set(self.expiration.is_some(), Prop::Expiration);
        set(self.message_id.is_some(), Prop::MessageId);
        set(self.timestamp.is_some(), Prop::Timestamp);
        set(self.kind.is_some(), Prop::Type);
        set(self.user_id.is_some(), Prop::UserId);
        set(self.app_id.is_some(), Prop::AppId);
        set(self.cluster_id.is_some(), Prop::ClusterId);
        buf.put_u16(flags);
        let short = |buf: &mut BytesMut, s: &Option<Bytes>| {
            if let Some(s) = s {
                write_shortstr(buf, s);
            }
        };
        short(buf, &self.content_type);
        short(buf, &self.content_encoding);
        if let Some(h) = &self.headers {
            h.encode(buf);
        }
        if let Some(v) = self.delivery_mode {
            buf.put_u8(v);
        }
        if let Some(v) = self.priority {
            buf.put_u8(v);
        }
        short(buf, &self.correlation_id);
        short(buf, &self.reply_to);
        short(buf, &self.expiration);
        short(buf, &self.message_id);
        if let Some(v) = self.timestamp {
            buf.put_u64(v);
        }
        short(buf, &self.kind);
        short(buf, &self.user_id);
        short(buf, &self.app_id);
        short(buf, &self.cluster_id);
    }

    /// The encoded form, as a new `Bytes` (for building a [`ContentHeader`]).
    pub fn to_raw(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::types::{arb, FieldValue};
    use proptest::prelude::*;

    fn arb_props() -> impl Strategy<Value = BasicProperties> {
        let s = || proptest::option::of(arb::shortstr());
        (
            (s(), s(), proptest::option::of(arb::table())),
            (
                proptest::option::of(any::<u8>()),
                proptest::option::of(any::<u8>()),
            ),
            (s(), s(), s(), s()),
            proptest::option::of(any::<u64>()),
            (s(), s(), s(), s()),
        )
            .prop_map(
                |((ct, ce, h), (dm, pr), (cid, rt, exp, mid), ts, (k, uid, aid, clid))| {
                    BasicProperties {
                        content_type: ct,
                        content_encoding: ce,
                        headers: h,
                        delivery_mode: dm,
                        priority: pr,
                        correlation_id: cid,
                        reply_to: rt,
                        expiration: exp,
                        message_id: mid,
                        timestamp: ts,
                        kind: k,
                        user_id: uid,
                        app_id: aid,
                        cluster_id: clid,
                    }
                },
            )
    }

    fn header_payload(body_size: u64, raw: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u16(60);
        buf.put_u16(0);
        buf.put_u64(body_size);
        buf.put_slice(raw);
        buf.freeze()
    }

    proptest! {
        #[test]
        fn properties_round_trip(p in arb_props()) {
            let raw = p.to_raw();
            prop_assert_eq!(BasicProperties::decode(&raw), Ok(p.clone()));
            let payload = header_payload(7, &raw);
            let h = ContentHeader::parse(&payload).unwrap();
            prop_assert_eq!(h.body_size, 7);
            prop_assert_eq!(&h.properties, &raw);
            prop_assert_eq!(delivery_mode(&raw), p.delivery_mode);
            prop_assert_eq!(priority(&raw), p.priority);
            prop_assert_eq!(expiration(&raw), p.expiration.as_deref());
            prop_assert_eq!(headers(&raw), p.headers);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let src = Bytes::from(data);
            let parsed = ContentHeader::parse(&src);
            let props = BasicProperties::decode(&src);
            let _ = (delivery_mode(&src), priority(&src), expiration(&src), headers(&src));
            if let Ok(h) = parsed {
                // What parse accepted, decode must accept.
                prop_assert!(BasicProperties::decode(&h.properties).is_ok());
            }
            drop(props);
        }

        #[test]
        fn arbitrary_property_lists_never_panic(flags in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut raw = BytesMut::new();
            raw.put_u16(flags & !1);
            raw.put_slice(&data);
            let raw = raw.freeze();
            let payload = header_payload(0, &raw);
            let parsed = ContentHeader::parse(&payload);
            let decoded = BasicProperties::decode(&raw);
            prop_assert_eq!(parsed.is_ok(), decoded.is_ok());
            let _ = (delivery_mode(&raw), priority(&raw), expiration(&raw), headers(&raw));
        }
    }

    #[test]
    fn known_content_header() {
        // content-type "text/plain", delivery-mode 2, headers {x: I 5}, expiration "60000".
        let payload: &[u8] = &[
            0,
            60,
            0,
            0, // class, weight
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            11, // body size
            0b1011_0001,
            0, // content-type, headers, delivery-mode, expiration
            10,
            b't',
            b'e',
            b'x',
            b't',
            b'/',
            b'p',
            b'l',
            b'a',
            b'i',
            b'n', //
            0,
            0,
            0,
            7,
            1,
            b'x',
            b'I',
            0,
            0,
            0,
            5, // headers
            2, // delivery mode
            5,
            b'6',
            b'0',
            b'0',
            b'0',
            b'0',
        ];
        let payload = Bytes::from_static(payload);
        let h = ContentHeader::parse(&payload).unwrap();
        assert_eq!(h.class_id, 60);
        assert_eq!(h.body_size, 11);
        assert_eq!(&h.properties[..], &payload[12..]);
        assert_eq!(delivery_mode(&h.properties), Some(2));
        assert_eq!(priority(&h.properties), None);
        assert_eq!(expiration(&h.properties), Some(&b"60000"[..]));
        let mut want = FieldTable::new();
        want.insert(&b"x"[..], FieldValue::I32(5));
        assert_eq!(headers(&h.properties), Some(want.clone()));
        let p = BasicProperties::decode(&h.properties).unwrap();
        assert_eq!(
            p,
            BasicProperties {
                content_type: Some(Bytes::from_static(b"text/plain")),
                headers: Some(want),
                delivery_mode: Some(2),
                expiration: Some(Bytes::from_static(b"60000")),
                ..Default::default()
            }
        );
        assert_eq!(p.to_raw(), h.properties);
    }

    #[test]
    fn bad_headers() {
        // Bit 1 is not a basic property.
        let p = header_payload(0, &[0, 2]);
        assert_eq!(ContentHeader::parse(&p), Err(DecodeError::BadPropertyFlags));
        // A continuation word with property bits.
        let p = header_payload(0, &[0, 1, 0x80, 0]);
        assert_eq!(ContentHeader::parse(&p), Err(DecodeError::BadPropertyFlags));
        // An empty continuation word is fine.
        let p = header_payload(0, &[0x10, 1, 0, 0, 2]);
        let h = ContentHeader::parse(&p).unwrap();
        assert_eq!(delivery_mode(&h.properties), Some(2));
        // Trailing bytes.
        let p = header_payload(0, &[0, 0, 9]);
        assert_eq!(ContentHeader::parse(&p), Err(DecodeError::TrailingBytes));
        // Truncated property.
        let p = header_payload(0, &[0x80, 0, 5, b'a']);
        assert_eq!(ContentHeader::parse(&p), Err(DecodeError::Truncated));
        // Wrong class.
        let mut p = BytesMut::new();
        p.put_u16(50);
        p.put_u16(0);
        p.put_u64(0);
        p.put_u16(0);
        assert_eq!(
            ContentHeader::parse(&p.freeze()),
            Err(DecodeError::BadContentClass(50))
        );
        // Malformed header table is caught by parse, not only later.
        let p = header_payload(0, &[0x20, 0, 0, 0, 0, 3, 1, b'k', b'?']);
        assert_eq!(
            ContentHeader::parse(&p),
            Err(DecodeError::BadFieldType(b'?'))
        );
    }
}
