//! AMQP primitive types: field tables and values, plus the byte readers and
//! writers that every other codec in [`crate::proto`] is built from.
//!
//! Reading: a [`Reader`] walks a `&[u8]` with checked arithmetic and `get`, so no
//! input can make it panic; a [`Cursor`] wraps a `Reader` over a `&Bytes` and hands
//! out strings as `Bytes` slices of it (zero copy). Positions inside a `Cursor` are
//! absolute offsets into its `Bytes`, which is what makes sub-cursors (nested tables)
//! free.
//!
//! Writing: plain functions on `BytesMut`; they never panic either (over-long short
//! strings are truncated to 255 bytes rather than producing a corrupt length).
//!
//! Field-value type letters are RabbitMQ's (not the 0-9-1 spec's errata list): t bool,
//! b i8, B u8, s i16, u u16, I i32, i u32, l i64, f f32, d f64, D decimal, S long
//! string, A array, T timestamp, F table, V void, x byte array.

use std::ops::{Deref, DerefMut, Range};

use bytes::{BufMut, Bytes, BytesMut};

use super::error::DecodeError;

/// How deeply tables and arrays may nest (the top-level table is depth 1).
/// Deeper input is rejected with [`DecodeError::TooDeep`]: decoding recurses, and a
/// hostile peer must not be able to overflow the stack.
pub const MAX_DEPTH: u32 = 64;

/// A checked reader over a byte slice. Every read either returns a value and
/// advances, or returns [`DecodeError::Truncated`] and leaves the position where
/// it was meaningful to stop; nothing panics.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The current offset from the start of the underlying slice.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// `Ok(())` if everything was consumed, else [`DecodeError::TrailingBytes`].
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// Consumes `n` bytes and returns their range (absolute offsets).
    pub fn take_range(&mut self, n: usize) -> Result<Range<usize>, DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }

    /// Consumes `n` bytes and returns them.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let r = self.take_range(n)?;
        self.buf.get(r).ok_or(DecodeError::Truncated)
    }

    /// Splits off the next `n` bytes as a reader of their own (positions stay
    /// absolute), advancing `self` past them.
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        let r = self.take_range(n)?;
        let buf = self.buf.get(..r.end).ok_or(DecodeError::Truncated)?;
        Ok(Reader { buf, pos: r.start })
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        <[u8; N]>::try_from(s).map_err(|_| DecodeError::Truncated)
    }

    /// An octet.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    /// A signed octet.
    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    /// A big-endian short.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    /// A big-endian signed short.
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    /// A big-endian long.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    /// A big-endian signed long.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    /// A big-endian long long.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// A big-endian signed long long.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// A big-endian IEEE 754 single.
    pub fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_be_bytes(self.array()?))
    }
    /// A big-endian IEEE 754 double.
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    /// A short string (octet length prefix), as a slice.
    pub fn shortstr(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A long string (long length prefix), as a slice.
    pub fn longstr(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len32()?;
        self.take(n)
    }

    fn len32(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()?;
        usize::try_from(n).map_err(|_| DecodeError::Truncated)
    }

    /// Checks a length-prefixed field table without building it (no allocation).
    /// `depth` is the depth of the enclosing structure (0 at top level).
    pub fn skip_table(&mut self, depth: u32) -> Result<(), DecodeError> {
        let n = self.len32()?;
        let mut body = self.sub(n)?;
        body.skip_table_body(depth)
    }

    /// Checks table entries up to the end of this reader.
    pub fn skip_table_body(&mut self, depth: u32) -> Result<(), DecodeError> {
        let depth = nest(depth)?;
        while self.remaining() > 0 {
            self.shortstr()?;
            self.skip_value(depth)?;
        }
        Ok(())
    }

    fn skip_array(&mut self, depth: u32) -> Result<(), DecodeError> {
        let depth = nest(depth)?;
        let n = self.len32()?;
        let mut body = self.sub(n)?;
        while body.remaining() > 0 {
            body.skip_value(depth)?;
        }
        Ok(())
    }

    /// Checks one tagged field value (type letter and payload).
    pub fn skip_value(&mut self, depth: u32) -> Result<(), DecodeError> {
        let tag = self.u8()?;
        let fixed = match tag {
            b't' | b'b' | b'B' => 1,
            b's' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'l' | b'd' | b'T' => 8,
            b'V' => 0,
            b'S' | b'x' => {
                self.longstr()?;
                return Ok(());
            }
            b'A' => return self.skip_array(depth),
            b'F' => return self.skip_table(depth),
            t => return Err(DecodeError::BadFieldType(t)),
        };
        self.take(fixed)?;
        Ok(())
    }
}

/// The depth one level inside `depth`, or [`DecodeError::TooDeep`].
fn nest(depth: u32) -> Result<u32, DecodeError> {
    let d = depth.saturating_add(1);
    if d > MAX_DEPTH {
        Err(DecodeError::TooDeep)
    } else {
        Ok(d)
    }
}

/// A [`Reader`] over a `Bytes` that returns strings and tables as zero-copy
/// `Bytes` slices of it. Derefs to its `Reader` for the numeric reads.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    src: &'a Bytes,
    r: Reader<'a>,
}

impl<'a> Deref for Cursor<'a> {
    type Target = Reader<'a>;
    fn deref(&self) -> &Reader<'a> {
        &self.r
    }
}

impl DerefMut for Cursor<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.r
    }
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `src`.
    pub fn new(src: &'a Bytes) -> Self {
        Cursor {
            src,
            r: Reader::new(src),
        }
    }

    /// The next `n` bytes as a slice of the source.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let r = self.r.take_range(n)?;
        Ok(self.src.slice(r))
    }

    /// A short string, as a slice of the source.
    pub fn short_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.r.u8()?;
        self.bytes(usize::from(n))
    }

    /// A long string, as a slice of the source.
    pub fn long_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.r.len32()?;
        self.bytes(n)
    }

    /// A length-prefixed field table (top level).
    pub fn table(&mut self) -> Result<FieldTable, DecodeError> {
        self.table_at(0)
    }

    fn sub(&mut self, n: usize) -> Result<Cursor<'a>, DecodeError> {
        Ok(Cursor {
            src: self.src,
            r: self.r.sub(n)?,
        })
    }

    fn table_at(&mut self, depth: u32) -> Result<FieldTable, DecodeError> {
        let n = self.r.len32()?;
        let mut body = self.sub(n)?;
        body.table_body(depth)
    }

    fn table_body(&mut self, depth: u32) -> Result<FieldTable, DecodeError> {
        let depth = nest(depth)?;
        let mut entries = Vec::new();
        while self.remaining() > 0 {
            let key = self.short_bytes()?;
            let value = self.value(depth)?;
            entries.push((key, value));
        }
        Ok(FieldTable(entries))
    }

    fn array(&mut self, depth: u32) -> Result<Vec<FieldValue>, DecodeError> {
        let depth = nest(depth)?;
        let n = self.r.len32()?;
        let mut body = self.sub(n)?;
        let mut items = Vec::new();
        while body.remaining() > 0 {
            items.push(body.value(depth)?);
        }
        Ok(items)
    }

    /// One tagged field value.
    fn value(&mut self, depth: u32) -> Result<FieldValue, DecodeError> {
        let tag = self.u8()?;
        Ok(match tag {
            b't' => FieldValue::Bool(self.u8()? != 0),
            b'b' => FieldValue::I8(self.i8()?),
            b'B' => FieldValue::U8(self.u8()?),
            b's' => FieldValue::I16(self.i16()?),
            b'u' => FieldValue::U16(self.u16()?),
            b'I' => FieldValue::I32(self.i32()?),
            b'i' => FieldValue::U32(self.u32()?),
            b'l' => FieldValue::I64(self.i64()?),
            b'f' => FieldValue::F32(self.f32()?),
            b'd' => FieldValue::F64(self.f64()?),
            b'D' => {
                let scale = self.u8()?;
                FieldValue::Decimal(scale, self.u32()?)
            }
            b'S' => FieldValue::LongStr(self.long_bytes()?),
            b'A' => FieldValue::Array(self.array(depth)?),
            b'T' => FieldValue::Timestamp(self.u64()?),
            b'F' => FieldValue::Table(self.table_at(depth)?),
            b'V' => FieldValue::Void,
            b'x' => FieldValue::ByteArray(self.long_bytes()?),
            t => return Err(DecodeError::BadFieldType(t)),
        })
    }
}

/// Appends a short string. Longer input is truncated to 255 bytes so that encoding
/// never panics nor writes a length that disagrees with the data; callers that care
/// must validate lengths earlier (the broker refuses over-long names itself).
pub fn write_shortstr(buf: &mut BytesMut, s: &[u8]) {
    let s = s.get(..255).unwrap_or(s);
    buf.put_u8(s.len() as u8); // at most 255 after the truncation above
    buf.put_slice(s);
}

/// Appends a long string (truncated at `u32::MAX` bytes, for the same reason as
/// [`write_shortstr`]).
pub fn write_longstr(buf: &mut BytesMut, s: &[u8]) {
    let max = u32::MAX as usize;
    let s = s.get(..max).unwrap_or(s);
    buf.put_u32(s.len() as u32);
    buf.put_slice(s);
}

/// Writes a u32 placeholder, runs `body`, then patches the placeholder with the
/// number of bytes `body` wrote. Used for tables and arrays.
fn with_len32(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let n = buf.len().saturating_sub(at).saturating_sub(4);
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    if let Some(slot) = buf.get_mut(at..at + 4) {
        slot.copy_from_slice(&n.to_be_bytes());
    }
}

/// One value in a field table or array.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t`: boolean (one octet, nonzero is true).
    Bool(bool),
    /// `b`: signed 8-bit.
    I8(i8),
    /// `B`: unsigned 8-bit.
    U8(u8),
    /// `s`: signed 16-bit.
    I16(i16),
    /// `u`: unsigned 16-bit.
    U16(u16),
    /// `I`: signed 32-bit.
    I32(i32),
    /// `i`: unsigned 32-bit.
    U32(u32),
    /// `l`: signed 64-bit.
    I64(i64),
    /// `f`: 32-bit float.
    F32(f32),
    /// `d`: 64-bit float.
    F64(f64),
    /// `D`: decimal: scale (decimal places), then unsigned value.
    Decimal(u8, u32),
    /// `S`: long string (bytes, not necessarily UTF-8).
    LongStr(Bytes),
    /// `A`: array of tagged values.
    Array(Vec<FieldValue>),
    /// `T`: timestamp (seconds since the epoch).
    Timestamp(u64),
    /// `F`: nested table.
    Table(FieldTable),
    /// `V`: no value.
    Void,
    /// `x`: byte array (long-string encoding).
    ByteArray(Bytes),
}

impl FieldValue {
    /// The bytes of a `LongStr` or `ByteArray`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            FieldValue::LongStr(b) | FieldValue::ByteArray(b) => Some(b),
            _ => None,
        }
    }

    /// The value of a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Any integer type widened to `i64` (clients disagree on which integer type
    /// to send for e.g. `x-max-length`, so callers should accept all of them).
    /// Not timestamps, decimals or floats.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(v) => i64::from(v),
            FieldValue::U8(v) => i64::from(v),
            FieldValue::I16(v) => i64::from(v),
            FieldValue::U16(v) => i64::from(v),
            FieldValue::I32(v) => i64::from(v),
            FieldValue::U32(v) => i64::from(v),
            FieldValue::I64(v) => v,
            _ => return None,
        })
    }

    /// Appends the type letter and the value.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            FieldValue::Bool(v) => {
                buf.put_u8(b't');
                buf.put_u8(u8::from(*v));
            }
            FieldValue::I8(v) => {
                buf.put_u8(b'b');
                buf.put_i8(*v);
            }
            FieldValue::U8(v) => {
                buf.put_u8(b'B');
                buf.put_u8(*v);
            }
            FieldValue::I16(v) => {
                buf.put_u8(b's');
                buf.put_i16(*v);
            }
            FieldValue::U16(v) => {
                buf.put_u8(b'u');
                buf.put_u16(*v);
            }
            FieldValue::I32(v) => {
                buf.put_u8(b'I');
                buf.put_i32(*v);
            }
            FieldValue::U32(v) => {
                buf.put_u8(b'i');
                buf.put_u32(*v);
            }
            FieldValue::I64(v) => {
                buf.put_u8(b'l');
                buf.put_i64(*v);
            }
            FieldValue::F32(v) => {
                buf.put_u8(b'f');
                buf.put_f32(*v);
            }
            FieldValue::F64(v) => {
                buf.put_u8(b'd');
                buf.put_f64(*v);
            }
            FieldValue::Decimal(scale, v) => {
                buf.put_u8(b'D');
                buf.put_u8(*scale);
                buf.put_u32(*v);
            }
            FieldValue::LongStr(s) => {
                buf.put_u8(b'S');
                write_longstr(buf, s);
            }
            FieldValue::Array(items) => {
                buf.put_u8(b'A');
                with_len32(buf, |buf| {
                    for v in items {
                        v.encode(buf);
                    }
                });
            }
            FieldValue::Timestamp(v) => {
                buf.put_u8(b'T');
                buf.put_u64(*v);
            }
            FieldValue::Table(t) => {
                buf.put_u8(b'F');
                t.encode(buf);
            }
            FieldValue::Void => buf.put_u8(b'V'),
            FieldValue::ByteArray(s) => {
                buf.put_u8(b'x');
                write_longstr(buf, s);
            }
        }
    }
}

/// A field table: ordered `(key, value)` entries. Order (and any duplicate keys a
/// peer sent) is kept so that decode → encode reproduces the input exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTable(pub Vec<(Bytes, FieldValue)>);

impl FieldTable {
    /// An empty table.
    pub fn new() -> Self {
        FieldTable(Vec::new())
    }

    /// The value of the first entry named `key`.
    pub fn get(&self, key: &[u8]) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    /// Sets `key` to `v`: replaces the first entry with that key in place, or appends.
    pub fn insert(&mut self, key: impl Into<Bytes>, v: FieldValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = v,
            None => self.0.push((key, v)),
        }
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends the table with its u32 length prefix. Keys longer than 255 bytes are
    /// truncated (see [`write_shortstr`]).
    pub fn encode(&self, buf: &mut BytesMut) {
        with_len32(buf, |buf| self.encode_body(buf));
    }

    /// Appends the entries without a length prefix (the AMQPLAIN response format).
    pub fn encode_body(&self, buf: &mut BytesMut) {
        for (k, v) in &self.0 {
            write_shortstr(buf, k);
            v.encode(buf);
        }
    }

    /// Decodes entries that fill all of `src`, without a length prefix (the
    /// AMQPLAIN response format). Keys and strings are slices of `src`.
    pub fn decode_body(src: &Bytes) -> Result<FieldTable, DecodeError> {
        Cursor::new(src).table_body(0)
    }

    /// Decodes a length-prefixed table that fills all of `src`.
    pub fn decode(src: &Bytes) -> Result<FieldTable, DecodeError> {
        let mut c = Cursor::new(src);
        let t = c.table()?;
        c.finish()?;
        Ok(t)
    }
}

impl<'a> IntoIterator for &'a FieldTable {
    type Item = (&'a Bytes, &'a FieldValue);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Bytes, FieldValue)>,
        fn(&'a (Bytes, FieldValue)) -> (&'a Bytes, &'a FieldValue),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// Proptest strategies for strings, values and tables (shared by the other tests).
#[cfg(test)]
pub(crate) mod arb {
    use super::*;
    use proptest::prelude::*;

    /// Any short string: every byte value, 0..=255 bytes.
    pub(crate) fn shortstr() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..=255).prop_map(Bytes::from)
    }

    /// Any long string (kept small for speed; the length prefix is 32-bit anyway).
    pub(crate) fn longstr() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
    }

    fn f32_not_nan() -> impl Strategy<Value = f32> {
        any::<u32>()
            .prop_map(f32::from_bits)
            .prop_filter("NaN != NaN", |f| !f.is_nan())
    }

    fn f64_not_nan() -> impl Strategy<Value = f64> {
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("NaN != NaN", |f| !f.is_nan())
    }

    /// Any field value, with nested arrays and tables.
    pub(crate) fn value() -> impl Strategy<Value = FieldValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            f32_not_nan().prop_map(FieldValue::F32),
            f64_not_nan().prop_map(FieldValue::F64),
            (any::<u8>(), any::<u32>()).prop_map(|(s, v)| FieldValue::Decimal(s, v)),
            longstr().prop_map(FieldValue::LongStr),
            any::<u64>().prop_map(FieldValue::Timestamp),
            Just(FieldValue::Void),
            longstr().prop_map(FieldValue::ByteArray),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
                proptest::collection::vec((shortstr(), inner), 0..6)
                    .prop_map(|e| FieldValue::Table(FieldTable(e))),
            ]
        })
    }

    /// Any table (duplicate keys allowed: decoding keeps them).
    pub(crate) fn table() -> impl Strategy<Value = FieldTable> {
        proptest::collection::vec((shortstr(), value()), 0..5).prop_map(FieldTable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(t: &FieldTable) -> Bytes {
        let mut buf = BytesMut::new();
        t.encode(&mut buf);
        buf.freeze()
    }

    proptest! {
        #[test]
        fn table_round_trips(t in arb::table()) {
            let bytes = encoded(&t);
            prop_assert_eq!(FieldTable::decode(&bytes), Ok(t.clone()));
            // The skipping validator agrees with the decoder.
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.skip_table(0), Ok(()));
            prop_assert_eq!(r.remaining(), 0);
            // And the body-only form round-trips too.
            let mut body = BytesMut::new();
            t.encode_body(&mut body);
            prop_assert_eq!(FieldTable::decode_body(&body.freeze()), Ok(t));
        }

        #[test]
        fn value_round_trips(v in arb::value()) {
            let t = FieldTable(vec![(Bytes::from_static(b"k"), v)]);
            prop_assert_eq!(FieldTable::decode(&encoded(&t)), Ok(t));
        }

        #[test]
        fn decode_body_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let src = Bytes::from(data);
            let decoded = FieldTable::decode_body(&src);
            let skipped = Reader::new(&src).skip_table_body(0);
            // The allocation-free validator and the decoder agree on validity.
            prop_assert_eq!(decoded.is_ok(), skipped.is_ok());
            let _ = FieldTable::decode(&src);
        }
    }

    #[test]
    fn every_type_letter_known_bytes() {
        let mut t = FieldTable::new();
        t.insert(&b"a"[..], FieldValue::Bool(true));
        t.insert(&b"b"[..], FieldValue::I8(-1));
        t.insert(&b"c"[..], FieldValue::Decimal(2, 314));
        t.insert(&b"d"[..], FieldValue::LongStr(Bytes::from_static(b"hi")));
        t.insert(
            &b"e"[..],
            FieldValue::Array(vec![FieldValue::U8(7), FieldValue::Void]),
        );
        t.insert(&b"a"[..], FieldValue::Bool(false)); // replaces in place
        let bytes = encoded(&t);
        let expected: &[u8] = &[
            0, 0, 0, 35, //
            1, b'a', b't', 0, //
            1, b'b', b'b', 0xff, //
            1, b'c', b'D', 2, 0, 0, 1, 58, //
            1, b'd', b'S', 0, 0, 0, 2, b'h', b'i', //
            1, b'e', b'A', 0, 0, 0, 3, b'B', 7, b'V',
        ];
        assert_eq!(&bytes[..], expected);
        assert_eq!(t.len(), 5);
        assert_eq!(t.get(b"b").and_then(FieldValue::as_i64), Some(-1));
        assert_eq!(t.get(b"a").and_then(FieldValue::as_bool), Some(false));
        assert_eq!(t.get(b"d").and_then(FieldValue::as_bytes), Some(&b"hi"[..]));
        assert_eq!(t.get(b"zz"), None);
    }

    #[test]
    fn bad_type_and_truncation() {
        let src = Bytes::from_static(&[1, b'k', b'Z']);
        assert_eq!(
            FieldTable::decode_body(&src),
            Err(DecodeError::BadFieldType(b'Z'))
        );
        let src = Bytes::from_static(&[1, b'k', b'I', 0, 0]);
        assert_eq!(FieldTable::decode_body(&src), Err(DecodeError::Truncated));
        // A nested table whose length overruns its parent.
        let src = Bytes::from_static(&[1, b'k', b'F', 0, 0, 0, 9, 0]);
        assert_eq!(FieldTable::decode_body(&src), Err(DecodeError::Truncated));
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 100 nested arrays: 'A' len 'A' len ... built inside out.
        let mut inner = BytesMut::new();
        for _ in 0..100 {
            let mut outer = BytesMut::new();
            outer.put_u8(b'A');
            outer.put_u32(inner.len() as u32);
            outer.put_slice(&inner);
            inner = outer;
        }
        let mut body = BytesMut::new();
        write_shortstr(&mut body, b"k");
        body.put_slice(&inner);
        let body = body.freeze();
        assert_eq!(FieldTable::decode_body(&body), Err(DecodeError::TooDeep));
        assert_eq!(
            Reader::new(&body).skip_table_body(0),
            Err(DecodeError::TooDeep)
        );
    }

    #[test]
    fn shortstr_truncates() {
        let mut buf = BytesMut::new();
        write_shortstr(&mut buf, &[b'x'; 300]);
        assert_eq!(buf.len(), 256);
        assert_eq!(buf[0], 255);
    }
}
