//! Headers-exchange matching, as RabbitMQ's `rabbit_exchange_type_headers` does it.
//!
//! The binding's arguments are the pattern. `x-match` is `all` (default), `any`,
//! `all-with-x` or `any-with-x`. Binding keys starting with `x-` take no part in matching
//! unless the mode ends in `-with-x`. A `void` binding value matches a header that is
//! present with any value; other values must be equal (integers compare by value across
//! widths; long strings and byte arrays by their bytes). `all` with no keys matches every
//! message, `any` with no keys matches none.

use crate::proto::{FieldTable, FieldValue};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Any,
}

/// Whether `headers` (a message's) satisfy the binding arguments `args`.
pub fn matches(args: &FieldTable, headers: &FieldTable) -> bool {
    let (mode, with_x) = match args.get(b"x-match").and_then(FieldValue::as_bytes) {
        Some(b"any") => (Mode::Any, false),
        Some(b"any-with-x") => (Mode::Any, true),
        Some(b"all-with-x") => (Mode::All, true),
        _ => (Mode::All, false),
    };
    let mut considered = args
        .iter()
        .filter(|(k, _)| &k[..] != b"x-match" && (with_x || !k.starts_with(b"x-")));
    let one = |(k, v): (&bytes::Bytes, &FieldValue)| match headers.get(k) {
        None => false,
        Some(h) => matches!(v, FieldValue::Void) || values_equal(v, h),
    };
    match mode {
        Mode::All => considered.all(one),
        Mode::Any => considered.any(one),
    }
}

/// Numbers compare by value across widths and between integers and floats, as Erlang's
/// `==` does in RabbitMQ (a binding `n=5` matches a header `n=5.0`).
pub fn values_equal(a: &FieldValue, b: &FieldValue) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    let float = |v: &FieldValue| match v {
        FieldValue::F32(f) => Some(f64::from(*f)),
        FieldValue::F64(f) => Some(*f),
        other => other.as_i64().map(|i| i as f64),
    };
    if let (Some(x), Some(y)) = (float(a), float(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_bytes(), b.as_bytes()) {
        return x == y;
    }
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn table(pairs: &[(&'static str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::new();
        for (k, v) in pairs {
            t.insert(Bytes::from_static(k.as_bytes()), v.clone());
        }
        t
    }

    fn s(v: &'static str) -> FieldValue {
        FieldValue::LongStr(Bytes::from_static(v.as_bytes()))
    }

    #[test]
    fn all_and_any() {
        let all = table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        let any = table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        let both = table(&[("format", s("pdf")), ("type", s("report"))]);
        let one = table(&[("format", s("pdf")), ("type", s("log"))]);
        assert!(matches(&all, &both));
        assert!(!matches(&all, &one));
        assert!(matches(&any, &one));
        assert!(!matches(&any, &table(&[])));
        // Default mode is all.
        assert!(matches(&table(&[("format", s("pdf"))]), &both));
        // all with nothing to match matches everything; any matches nothing.
        assert!(matches(&table(&[("x-match", s("all"))]), &table(&[])));
        assert!(!matches(&table(&[("x-match", s("any"))]), &both));
    }

    #[test]
    fn x_keys_only_with_x_and_void_means_present() {
        let hdr = table(&[("x-id", s("1"))]);
        assert!(!matches(
            &table(&[("x-match", s("any")), ("x-id", s("1"))]),
            &hdr
        ));
        assert!(matches(
            &table(&[("x-match", s("any-with-x")), ("x-id", s("1"))]),
            &hdr
        ));
        assert!(matches(
            &table(&[("x-match", s("all-with-x")), ("x-id", FieldValue::Void)]),
            &hdr
        ));
        assert!(!matches(&table(&[("k", FieldValue::Void)]), &hdr));
    }

    #[test]
    fn integers_compare_by_value() {
        let args = table(&[("n", FieldValue::I32(5))]);
        assert!(matches(&args, &table(&[("n", FieldValue::I64(5))])));
        assert!(matches(&args, &table(&[("n", FieldValue::U8(5))])));
        assert!(!matches(&args, &table(&[("n", FieldValue::I64(6))])));
        assert!(!matches(&args, &table(&[("n", s("5"))])));
        assert!(matches(&args, &table(&[("n", FieldValue::F64(5.0))])));
        assert!(!matches(&args, &table(&[("n", FieldValue::F32(5.5))])));
    }
}
