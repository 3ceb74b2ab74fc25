//! Erlang's `erlang:phash2/2` over a binding's arguments, as RabbitMQ's management plugin
//! computes the `~HASH` part of a binding's properties key (`rabbit_mgmt_format:args_hash`:
//! base64url of the 32-bit `phash2(Args, 1 bsl 32)`, unpadded). With the same hash,
//! a properties key that a tool learnt from RabbitMQ names the same binding on Warren.
//!
//! The arguments are hashed as RabbitMQ holds them: a list of `{Key, Type, Value}`
//! tuples with RabbitMQ's type atoms (`longstr`, `long`, `bool`, `table`, ...). The
//! hash is ERTS's `make_hash2` (Bob Jenkins' mix over the term's structure), written
//! here for the term shapes a field table can take; checked against keys RabbitMQ 3.10
//! sent for each type.

use crate::proto::{FieldTable, FieldValue};

/// The Erlang terms a field table becomes.
enum Term<'a> {
    Atom(&'a str),
    Int(i64),
    Float(f64),
    Bin(&'a [u8]),
    Tuple(Vec<Term<'a>>),
    List(Vec<Term<'a>>),
}

const HCONST: u32 = 0x9e37_79b9;

/// `HCONST * n` (ERTS's `HCONST_n`).
const fn hc(n: u32) -> u32 {
    HCONST.wrapping_mul(n)
}

/// Bob Jenkins' 96-bit mix; its `c` is the new hash.
fn mix(a: u32, b: u32, c: u32) -> u32 {
    mix3(a, b, c).2
}

/// ERTS's `UINT32_HASH_2`.
fn hash2(hash: u32, x: u32, y: u32, k: u32) -> u32 {
    mix(k.wrapping_add(x), k.wrapping_add(y), hash)
}

/// ERTS's `atom_hash`: hashpjw over the name (ASCII names only here).
fn atom_hash(name: &str) -> u32 {
    let mut h: u32 = 0;
    for &v in name.as_bytes() {
        h = (h << 4).wrapping_add(u32::from(v));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
            h ^= g;
        }
    }
    h
}

/// ERTS's `block_hash` of a binary, seeded with `init`.
fn block_hash(k: &[u8], init: u32) -> u32 {
    let (mut a, mut b, mut c) = (HCONST, HCONST, init);
    let word = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let mut chunks = k.chunks_exact(12);
    for s in &mut chunks {
        a = a.wrapping_add(word(&s[0..4]));
        b = b.wrapping_add(word(&s[4..8]));
        c = c.wrapping_add(word(&s[8..12]));
        (a, b, c) = mix3(a, b, c);
    }
    let rest = chunks.remainder();
    c = c.wrapping_add(k.len() as u32);
    for (i, &byte) in rest.iter().enumerate() {
        let v = u32::from(byte);
        match i {
            0..=3 => a = a.wrapping_add(v << (8 * i)),
            4..=7 => b = b.wrapping_add(v << (8 * (i - 4))),
            // The first byte of c is the length's.
            _ => c = c.wrapping_add(v << (8 * (i - 7))),
        }
    }
    mix(a, b, c)
}

/// Bob Jenkins' mix, all three words.
fn mix3(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 13);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 8);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 13);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 12);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 16);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 5);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 3);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 10);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 15);
    (a, b, c)
}

/// Folds `t` into `hash` in ERTS's traversal order (depth first, left to right).
fn walk(t: &Term<'_>, hash: u32) -> u32 {
    match t {
        Term::Atom(a) if hash == 0 => atom_hash(a),
        Term::Atom(a) => hash2(hash, atom_hash(a), 0, hc(3)),
        Term::Int(v) if (-(1 << 27)..(1 << 27)).contains(v) => {
            let y = *v as i32;
            let h = if y < 0 {
                hash2(hash, y.wrapping_neg() as u32, 0, HCONST)
            } else {
                hash
            };
            hash2(h, y as u32, 0, HCONST)
        }
        Term::Int(v) => {
            let (k, m) = if *v < 0 {
                (hc(10), v.unsigned_abs())
            } else {
                (hc(11), *v as u64)
            };
            hash2(hash, m as u32, (m >> 32) as u32, k)
        }
        Term::Float(f) => {
            let bits = if *f == 0.0 { 0 } else { f.to_bits() };
            hash2(hash, (bits >> 32) as u32, bits as u32, hc(12))
        }
        Term::Bin(b) => {
            let seed = hc(13).wrapping_add(hash);
            if b.is_empty() {
                seed
            } else {
                block_hash(b, seed)
            }
        }
        Term::Tuple(items) => items
            .iter()
            .fold(hash2(hash, items.len() as u32, 0, hc(9)), |h, t| walk(t, h)),
        Term::List(items) => {
            let mut h = hash;
            let mut i = 0;
            loop {
                // A run of bytes is hashed four at a time (ERTS's string shortcut).
                let (mut sh, mut c) = (0u32, 0);
                while let Some(Term::Int(b @ 0..=255)) = items.get(i) {
                    sh = (sh << 8).wrapping_add(*b as u32);
                    if c == 3 {
                        h = hash2(h, sh, 0, hc(4));
                        (sh, c) = (0, 0);
                    } else {
                        c += 1;
                    }
                    i += 1;
                }
                if c > 0 {
                    h = hash2(h, sh, 0, hc(4));
                }
                match items.get(i) {
                    // The tail: nil.
                    None if h == 0 => return 3_468_870_702,
                    None => return hash2(h, 2, 0, hc(2)),
                    Some(t) => {
                        h = walk(t, h);
                        i += 1;
                    }
                }
            }
        }
    }
}

/// RabbitMQ's `{Type, Value}` for a field value.
fn typed(v: &FieldValue) -> (&'static str, Term<'_>) {
    match v {
        FieldValue::Bool(b) => ("bool", Term::Atom(if *b { "true" } else { "false" })),
        FieldValue::I8(n) => ("byte", Term::Int(i64::from(*n))),
        FieldValue::U8(n) => ("unsignedbyte", Term::Int(i64::from(*n))),
        FieldValue::I16(n) => ("short", Term::Int(i64::from(*n))),
        FieldValue::U16(n) => ("unsignedshort", Term::Int(i64::from(*n))),
        FieldValue::I32(n) => ("signedint", Term::Int(i64::from(*n))),
        FieldValue::U32(n) => ("unsignedint", Term::Int(i64::from(*n))),
        FieldValue::I64(n) => ("long", Term::Int(*n)),
        FieldValue::F32(n) => ("float", Term::Float(f64::from(*n))),
        FieldValue::F64(n) => ("double", Term::Float(*n)),
        FieldValue::Decimal(s, n) => (
            "decimal",
            Term::Tuple(vec![Term::Int(i64::from(*s)), Term::Int(i64::from(*n))]),
        ),
        FieldValue::LongStr(b) => ("longstr", Term::Bin(b)),
        FieldValue::ByteArray(b) => ("binary", Term::Bin(b)),
        FieldValue::Timestamp(t) => ("timestamp", Term::Int(*t as i64)),
        FieldValue::Void => ("void", Term::Atom("undefined")),
        FieldValue::Table(t) => ("table", table(t)),
        FieldValue::Array(a) => (
            "array",
            Term::List(
                a.iter()
                    .map(|v| {
                        let (ty, val) = typed(v);
                        Term::Tuple(vec![Term::Atom(ty), val])
                    })
                    .collect(),
            ),
        ),
    }
}

/// A field table as RabbitMQ holds it: `[{Key, Type, Value}]`, in the table's order.
fn table(t: &FieldTable) -> Term<'_> {
    Term::List(
        t.iter()
            .map(|(k, v)| {
                let (ty, val) = typed(v);
                Term::Tuple(vec![Term::Bin(k), Term::Atom(ty), val])
            })
            .collect(),
    )
}

/// `erlang:phash2(Args, 1 bsl 32)` of binding arguments `args`.
pub fn args_hash(args: &FieldTable) -> u32 {
    walk(&table(args), 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn key(v: serde_json::Value) -> String {
        let t = super::super::json_table(Some(&v)).unwrap();
        super::super::properties_key("", &t)
    }

    /// Properties keys RabbitMQ 3.10 answered for bindings with these arguments
    /// (routing key ""; JSON objects as the management API takes them).
    #[test]
    fn matches_rabbitmq() {
        for (args, want) in [
            (json!({"n": 1, "x-foo": "bar"}), "~W8PYWg"),
            (json!({"b": true}), "~_sQtSA"),
            (json!({"f": 1.5}), "~fF0G0A"),
            (json!({"neg": -5}), "~PGdPYw"),
            (json!({"big": 10_000_000_000u64}), "~QMYoLA"),
            (json!({"s": "a-rather-long-string-value"}), "~ee4wRQ"),
            (json!({"t": {"z": 1, "a": "x"}}), "~zRzIVg"),
            (json!({"arr": [1, "x"]}), "~gecDcw"),
            (json!({"x-match": "any", "kind": "a"}), "~ze-TWw"),
        ] {
            assert_eq!(key(args.clone()), want, "{args}");
        }
    }
}
