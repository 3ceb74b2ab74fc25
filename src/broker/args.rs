//! Queue and exchange arguments as RabbitMQ 3.10 knows them: which keys each queue type
//! accepts, the type and range check of each, the equivalence rule a redeclare is held to,
//! and the exact reply texts (`rabbit_amqqueue:check_declare_arguments`,
//! `rabbit_misc:assert_args_equivalence`, `rabbit_channel`'s DLX/AE type checks).
//!
//! Owns no state and touches no queue: the broker calls [`validate_queue_declare`] before
//! it creates a queue, [`check_queue_equivalence`] on a redeclare, and
//! [`not_implemented`] to name what it accepted but does not act on yet (issue 12 turns
//! those into behaviour and reads the values validated here). Nothing here runs per
//! message; every allocation is on the declare path.
//!
//! Texts: RabbitMQ formats values with Erlang's `~p`/`~s`, so this module renders field
//! values as the Erlang terms `rabbit_binary_parser` makes of them (`signedint`, `<<"a">>`,
//! `{2,125}`, `1.0e20`). Known gap: `~p` breaks terms longer than 80 columns over several
//! lines; we never break.

use std::fmt::Write;

use crate::error::{precondition, AmqpError};
use crate::proto::{FieldTable, FieldValue};

/// `rabbit_misc:check_expiry`: ten years in milliseconds.
const MAX_EXPIRY: i128 = 315_360_000_000;
/// `?MAX_SUPPORTED_PRIORITY`.
const MAX_PRIORITY: i128 = 255;
/// `?MAX_STREAM_MAX_SEGMENT_SIZE`.
const MAX_SEGMENT_SIZE: i128 = 3_000_000_000;

/// The queue types of RabbitMQ 3.10 (`x-queue-type`). Warren runs a quorum queue as a
/// durable queue that keeps every message in the store and counts deliveries
/// (`super::quorum`); stream declarations are validated as RabbitMQ does and then logged
/// as having no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
    Stream,
}

const CLASSIC_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
];

const QUORUM_ARGS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-message-ttl",
    "x-queue-leader-locator",
];

const STREAM_ARGS: &[&str] = &[
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

const ALL_TYPES: [QueueType; 3] = [QueueType::Classic, QueueType::Quorum, QueueType::Stream];

impl QueueType {
    /// The type a queue with these arguments has (`rabbit_amqqueue:get_queue_type`);
    /// anything but "quorum" or "stream" is classic (validation refuses the rest).
    pub fn of(args: &FieldTable) -> QueueType {
        match args.get(b"x-queue-type").and_then(FieldValue::as_bytes) {
            Some(b"quorum") => QueueType::Quorum,
            Some(b"stream") => QueueType::Stream,
            _ => QueueType::Classic,
        }
    }

    /// The Erlang module RabbitMQ names in its texts.
    pub fn module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
            QueueType::Stream => "rabbit_stream_queue",
        }
    }

    /// The `queue_arguments` capability: the keys this type accepts and compares on a
    /// redeclare.
    pub fn arguments(self) -> &'static [&'static str] {
        match self {
            QueueType::Classic => CLASSIC_ARGS,
            QueueType::Quorum => QUORUM_ARGS,
            QueueType::Stream => STREAM_ARGS,
        }
    }
}

/// Whether some queue type knows `key` (`rabbit_queue_type:arguments(queue_arguments)`).
fn known_queue_arg(key: &[u8]) -> bool {
    ALL_TYPES
        .iter()
        .any(|t| t.arguments().iter().any(|k| k.as_bytes() == key))
}

// ----- Erlang terms --------------------------------------------------------------------

/// The type atom `rabbit_binary_parser` gives a field value.
pub fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal(..) => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
        FieldValue::ByteArray(_) => "binary",
    }
}

/// The integer types `check_int_arg` accepts (`?INTEGER_ARG_TYPES`): not decimal,
/// timestamp or floats.
fn as_int(v: &FieldValue) -> Option<i128> {
    v.as_i64().map(i128::from)
}

/// The Erlang value a field value parses to, for comparisons.
#[derive(PartialEq)]
enum Term<'a> {
    Int(i128),
    Float(f64),
    Atom(&'static str),
    Bin(&'a [u8]),
    Decimal(u8, u32),
    Table(&'a FieldTable),
    Array(&'a [FieldValue]),
}

fn term(v: &FieldValue) -> Term<'_> {
    match v {
        FieldValue::Bool(true) => Term::Atom("true"),
        FieldValue::Bool(false) => Term::Atom("false"),
        FieldValue::Void => Term::Atom("undefined"),
        FieldValue::F32(f) => Term::Float(f64::from(*f)),
        FieldValue::F64(f) => Term::Float(*f),
        FieldValue::Timestamp(t) => Term::Int(i128::from(*t)),
        FieldValue::Decimal(s, v) => Term::Decimal(*s, *v),
        FieldValue::LongStr(b) | FieldValue::ByteArray(b) => Term::Bin(b),
        FieldValue::Table(t) => Term::Table(t),
        FieldValue::Array(a) => Term::Array(a),
        other => Term::Int(as_int(other).unwrap_or(0)),
    }
}

/// Erlang's `=:=` on the parsed values: integers of any width (and timestamps) compare
/// by value, long strings equal byte arrays, nested tables and arrays compare their
/// type atoms too.
fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    match (term(a), term(b)) {
        (Term::Table(x), Term::Table(y)) => {
            x.0.len() == y.0.len()
                && x.0.iter().zip(y.0.iter()).all(|((ka, va), (kb, vb))| {
                    ka == kb && type_name(va) == type_name(vb) && same_value(va, vb)
                })
        }
        (Term::Array(x), Term::Array(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(va, vb)| type_name(va) == type_name(vb) && same_value(va, vb))
        }
        (Term::Float(x), Term::Float(y)) => x == y,
        (x, y) => x == y,
    }
}

/// Erlang's `io_lib_format:printable_latin1_list` over bytes.
fn printable_latin1(b: &[u8]) -> bool {
    b.iter()
        .all(|&c| matches!(c, 32..=126 | 160..=255 | b'\n' | b'\r' | b'\t' | 11 | 8 | 12 | 27))
}

/// The characters of a printable string between quotes, escaped as `~p` does.
fn write_escaped(out: &mut String, b: &[u8], quote: char) {
    for &c in b {
        match c {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            11 => out.push_str("\\v"),
            8 => out.push_str("\\b"),
            12 => out.push_str("\\f"),
            27 => out.push_str("\\e"),
            b'\\' => out.push_str("\\\\"),
            c if char::from(c) == quote => {
                out.push('\\');
                out.push(quote);
            }
            // Latin-1 code points, which is how Erlang sees the bytes; the reply text
            // goes back out as the same bytes when they were UTF-8.
            c => out.push(char::from(c)),
        }
    }
}

/// `~p` of an Erlang string (a list of Latin-1 characters): quoted when printable, else
/// a list of integers.
fn write_p_string(out: &mut String, b: &[u8]) {
    if printable_latin1(b) {
        out.push('"');
        write_escaped(out, b, '"');
        out.push('"');
    } else {
        out.push('[');
        for (i, c) in b.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{c}");
        }
        out.push(']');
    }
}

/// `~p` of a binary.
fn write_p_bin(out: &mut String, b: &[u8]) {
    out.push_str("<<");
    if !b.is_empty() && printable_latin1(b) {
        out.push('"');
        write_escaped(out, b, '"');
        out.push('"');
    } else {
        for (i, c) in b.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{c}");
        }
    }
    out.push_str(">>");
}

/// `~p` of a float: the shortest digits that read back, in fixed notation unless the
/// exponent form is shorter (Erlang's `io_lib_format:fwrite_g`): `1.5`, `100.0`,
/// `1.0e3`, `1.0e-5`.
fn write_p_float(out: &mut String, f: f64) {
    if !f.is_finite() {
        // Erlang cannot hold these (its parser refuses the frame); say something sane.
        let _ = write!(out, "{f}");
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // Rust's `{:e}` is the shortest round-trip form: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let len = digits.len() as i32;
    // value = 0.DIGITS × 10^place
    let place = exp + 1;
    let fixed = if place <= 0 {
        format!("0.{}{digits}", "0".repeat((-place) as usize))
    } else if place < len {
        let (a, b) = digits.split_at(place as usize);
        format!("{a}.{b}")
    } else {
        format!("{digits}{}.0", "0".repeat((place - len) as usize))
    };
    let (first, rest) = digits.split_at(1);
    let rest = if rest.is_empty() { "0" } else { rest };
    let exp_form = format!("{first}.{rest}e{exp}");
    if neg {
        out.push('-');
    }
    out.push_str(if fixed.len() <= exp_form.len() {
        &fixed
    } else {
        &exp_form
    });
}

/// `~p` of the Erlang value of `v` (not the `{Type, Value}` pair).
fn write_p(out: &mut String, v: &FieldValue) {
    match term(v) {
        Term::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Term::Float(f) => write_p_float(out, f),
        Term::Atom(a) => out.push_str(a),
        Term::Bin(b) => write_p_bin(out, b),
        Term::Decimal(s, v) => {
            let _ = write!(out, "{{{s},{v}}}");
        }
        Term::Table(t) => {
            out.push('[');
            for (i, (k, v)) in t.0.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('{');
                write_p_bin(out, k);
                let _ = write!(out, ",{},", type_name(v));
                write_p(out, v);
                out.push('}');
            }
            out.push(']');
        }
        Term::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{{{},", type_name(v));
                write_p(out, v);
                out.push('}');
            }
            out.push(']');
        }
    }
}

/// `~s` of a binary, `~p` of anything else: how `rabbit_misc:val/1` shows a value.
fn write_s_or_p(out: &mut String, v: &FieldValue) {
    match v.as_bytes() {
        Some(b) => out.push_str(&String::from_utf8_lossy(b)),
        None => write_p(out, v),
    }
}

/// `rabbit_misc:val/1` of a bare value: `'1'`, `'abc'`, `'[{<<"a">>,long,1}]'`; a void
/// is Erlang's `undefined`, which `val/1` shows as `none`, like an absent value.
pub fn show_value(v: &FieldValue) -> String {
    if matches!(v, FieldValue::Void) {
        return "none".into();
    }
    let mut s = String::from("'");
    write_s_or_p(&mut s, v);
    s.push('\'');
    s
}

/// `rabbit_misc:val/1` of a table lookup: `none`, or `the value '1' of type 'signedint'`.
pub fn show_typed(v: Option<&FieldValue>) -> String {
    match v {
        None => "none".into(),
        Some(v) => {
            let mut s = String::from("the value '");
            write_s_or_p(&mut s, v);
            let _ = write!(s, "' of type '{}'", type_name(v));
            s
        }
    }
}

// ----- equivalence ---------------------------------------------------------------------

/// `rabbit_misc:assert_args_equivalence` over `keys`: `Ok` when every key is absent from both
/// tables or present in both with the same Erlang value (any integer width matches any other;
/// `x-queue-type` "classic" matches its absence), else RabbitMQ's `inequivalent arg` 406 for `what`
/// ("queue 'q'" / "exchange 'x'") in vhost `vhost`. Keys outside `keys` are not compared, as in
/// RabbitMQ. `what` is only called for the error, so an equivalent redeclare (clients that declare
/// before every publish) allocates nothing.
pub fn check_equivalence(
    vhost: &str,
    what: impl Fn() -> String,
    keys: &[&str],
    got: &FieldTable,
    cur: &FieldTable,
) -> Result<(), AmqpError> {
    for key in keys {
        let a = got.get(key.as_bytes());
        let b = cur.get(key.as_bytes());
        let classic = |v: &FieldValue| matches!(v, FieldValue::LongStr(s) if &s[..] == b"classic");
        let (received, current) = match (a, b) {
            (None, None) => continue,
            (Some(a), Some(b)) if same_value(a, b) => continue,
            (Some(a), Some(b)) => (show_value(a), show_value(b)),
            (Some(v), None) | (None, Some(v)) if *key == "x-queue-type" && classic(v) => continue,
            (a, b) => (show_typed(a), show_typed(b)),
        };
        return Err(precondition(format!(
            "inequivalent arg '{key}' for {} in vhost '{vhost}': received {received} but current is {current}",
            what()
        )));
    }
    Ok(())
}

/// A redeclare of queue `name` (whose stored arguments are `cur`) with `got`: the keys of
/// the existing queue's type are compared.
pub fn check_queue_equivalence(
    vhost: &str,
    name: &[u8],
    got: &FieldTable,
    cur: &FieldTable,
) -> Result<(), AmqpError> {
    let what = || format!("queue '{}'", String::from_utf8_lossy(name));
    check_equivalence(vhost, what, QueueType::of(cur).arguments(), got, cur)
}

/// A redeclare of exchange `name`: only `alternate-exchange` is compared.
pub fn check_exchange_equivalence(
    vhost: &str,
    name: &[u8],
    got: &FieldTable,
    cur: &FieldTable,
) -> Result<(), AmqpError> {
    let what = || format!("exchange '{}'", String::from_utf8_lossy(name));
    check_equivalence(vhost, what, &["alternate-exchange"], got, cur)
}

// ----- validation ----------------------------------------------------------------------

/// Why a value was refused: rendered as RabbitMQ's `~255p` of its error term.
enum Invalid {
    /// `"expected integer, got longstr"` (a string, so quoted).
    Text(String),
    /// `{unacceptable_type,longstr}`.
    UnacceptableType(&'static str),
    /// `{value_negative,-1}`, `{value_zero,0}`, …
    Tagged(&'static str, i128),
    /// `invalid_overflow`, …
    Atom(&'static str),
}

impl Invalid {
    fn render(&self, out: &mut String) {
        match self {
            Invalid::Text(t) => write_p_string(out, t.as_bytes()),
            Invalid::UnacceptableType(t) => {
                let _ = write!(out, "{{unacceptable_type,{t}}}");
            }
            Invalid::Tagged(tag, v) => {
                let _ = write!(out, "{{{tag},{v}}}");
            }
            Invalid::Atom(a) => out.push_str(a),
        }
    }
}

fn int_arg(v: &FieldValue) -> Result<i128, Invalid> {
    as_int(v).ok_or_else(|| Invalid::Text(format!("expected integer, got {}", type_name(v))))
}

fn non_neg_int_arg(v: &FieldValue) -> Result<i128, Invalid> {
    let n = int_arg(v)?;
    if n < 0 {
        return Err(Invalid::Tagged("value_negative", n));
    }
    Ok(n)
}

fn expiry(n: i128) -> Result<(), Invalid> {
    if n < 0 {
        Err(Invalid::Tagged("value_negative", n))
    } else if n > MAX_EXPIRY {
        Err(Invalid::Tagged("value_too_large", n))
    } else {
        Ok(())
    }
}

/// The bytes of a long string, or `{unacceptable_type,T}` (byte arrays included: RabbitMQ
/// types those `binary`).
fn longstr(v: &FieldValue) -> Result<&[u8], Invalid> {
    match v {
        FieldValue::LongStr(s) => Ok(s),
        other => Err(Invalid::UnacceptableType(type_name(other))),
    }
}

fn one_of(v: &FieldValue, allowed: &[&str], bad: Invalid) -> Result<(), Invalid> {
    let s = longstr(v)?;
    if allowed.iter().any(|a| a.as_bytes() == s) {
        Ok(())
    } else {
        Err(bad)
    }
}

/// `rabbit_amqqueue:check_max_age/1`: digits (a positive number) then one unit letter.
fn max_age(s: &[u8]) -> Result<(), Invalid> {
    let split = s
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let positive = !num.is_empty() && num.iter().any(|&c| c != b'0');
    if positive && matches!(unit, b"Y" | b"M" | b"D" | b"h" | b"m" | b"s") {
        Ok(())
    } else {
        // RabbitMQ 3.10 crashes (541) on an empty number; we answer as for a bad unit.
        Err(Invalid::Atom("invalid_max_age"))
    }
}

/// The check `declare_args()` lists for `key`; `None` for keys without one
/// (`x-delivery-limit`, `x-queue-master-locator`).
fn check_value(key: &str, v: &FieldValue, args: &FieldTable) -> Option<Result<(), Invalid>> {
    Some(match key {
        "x-expires" => int_arg(v).and_then(|n| {
            if n == 0 {
                Err(Invalid::Tagged("value_zero", 0))
            } else {
                expiry(n)
            }
        }),
        "x-message-ttl" => int_arg(v).and_then(expiry),
        "x-dead-letter-exchange" => longstr(v).map(drop),
        "x-dead-letter-routing-key" => longstr(v).and_then(|_| {
            if args.get(b"x-dead-letter-exchange").is_some() {
                Ok(())
            } else {
                Err(Invalid::Atom("routing_key_but_no_dlx_defined"))
            }
        }),
        "x-dead-letter-strategy" => one_of(
            v,
            &["at-most-once", "at-least-once"],
            Invalid::Atom("invalid_dlx_strategy"),
        ),
        "x-max-length"
        | "x-max-length-bytes"
        | "x-max-in-memory-length"
        | "x-max-in-memory-bytes"
        | "x-stream-max-segment-size-bytes" => non_neg_int_arg(v).map(drop),
        "x-max-priority" => non_neg_int_arg(v).and_then(|n| {
            if n > MAX_PRIORITY {
                Err(Invalid::Tagged("max_value_exceeded", n))
            } else {
                Ok(())
            }
        }),
        "x-overflow" => one_of(
            v,
            &["drop-head", "reject-publish", "reject-publish-dlx"],
            Invalid::Atom("invalid_overflow"),
        ),
        "x-queue-mode" => longstr(v).and_then(|s| match s {
            b"default" | b"lazy" => Ok(()),
            s => Err(Invalid::Text(format!(
                "unsupported queue mode '{}'",
                String::from_utf8_lossy(s)
            ))),
        }),
        "x-queue-version" => non_neg_int_arg(v).and_then(|n| match n {
            1 | 2 => Ok(()),
            n => Err(Invalid::Text(format!("unsupported queue version '{n}'"))),
        }),
        "x-single-active-consumer" => match v {
            FieldValue::Bool(_) => Ok(()),
            other => Err(Invalid::UnacceptableType(type_name(other))),
        },
        "x-queue-type" => longstr(v).and_then(|s| match s {
            b"classic" | b"quorum" | b"stream" => Ok(()),
            s => Err(Invalid::Text(format!(
                "unsupported queue type '{}'",
                String::from_utf8_lossy(s)
            ))),
        }),
        "x-quorum-initial-group-size" | "x-initial-cluster-size" => {
            non_neg_int_arg(v).and_then(|n| {
                if n == 0 {
                    Err(Invalid::Tagged("value_zero", 0))
                } else {
                    Ok(())
                }
            })
        }
        "x-max-age" => longstr(v).and_then(max_age),
        "x-queue-leader-locator" => one_of(
            v,
            &["client-local", "balanced", "random", "least-leaders"],
            Invalid::Atom("invalid_queue_locator_arg"),
        ),
        _ => return None,
    })
}

/// `declare_args()`'s order, which is the order RabbitMQ reports the first bad value in.
const DECLARE_ARGS_ORDER: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// What a queue.declare that creates a queue must pass, in RabbitMQ's order:
/// a server-named queue must be classic; `x-dead-letter-exchange` must be a long string;
/// `x-queue-type` must be known; each argument of that type must pass its check; no
/// argument of another type may appear; a quorum or stream queue must be durable,
/// not exclusive and not auto-delete (and a stream's segment size at most 3 GB).
/// `name` is the name the client sent (empty for server-named).
/// Returns the queue's type, or the 406 RabbitMQ 3.10 sends.
pub fn validate_queue_declare(
    vhost: &str,
    name: &[u8],
    args: &FieldTable,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
) -> Result<QueueType, AmqpError> {
    let qtype = QueueType::of(args);
    if name.is_empty() && qtype != QueueType::Classic {
        return Err(precondition(format!(
            "Cannot declare a server-named queue for type {}",
            qtype.module()
        )));
    }
    let rs = format!(
        "queue '{}' in vhost '{vhost}'",
        String::from_utf8_lossy(name)
    );
    if let Some(v) = args.get(b"x-dead-letter-exchange") {
        if !matches!(v, FieldValue::LongStr(_)) {
            return Err(precondition(format!(
                "invalid type '{}' for arg 'x-dead-letter-exchange' in {rs}",
                type_name(v)
            )));
        }
    }
    let invalid = |key: &str, why: Invalid| {
        let mut text = format!("invalid arg '{key}' for {rs}: ");
        why.render(&mut text);
        precondition(text)
    };
    if let Some(v) = args.get(b"x-queue-type") {
        if let Some(Err(why)) = check_value("x-queue-type", v, args) {
            return Err(invalid("x-queue-type", why));
        }
    }
    let allowed = qtype.arguments();
    for key in DECLARE_ARGS_ORDER.iter().filter(|k| allowed.contains(k)) {
        if let Some(v) = args.get(key.as_bytes()) {
            if let Some(Err(why)) = check_value(key, v, args) {
                return Err(invalid(key, why));
            }
        }
    }
    for (key, _) in args.iter() {
        if known_queue_arg(key) && !allowed.iter().any(|k| k.as_bytes() == &key[..]) {
            return Err(precondition(format!(
                "invalid arg '{}' for {rs} of queue type {}",
                String::from_utf8_lossy(key),
                qtype.module()
            )));
        }
    }
    if qtype != QueueType::Classic {
        let property = if auto_delete {
            Some("auto-delete")
        } else if exclusive {
            Some("exclusive-owner")
        } else if !durable {
            Some("non-durable")
        } else {
            None
        };
        if let Some(p) = property {
            return Err(precondition(format!("invalid property '{p}' for {rs}")));
        }
        if qtype == QueueType::Stream {
            let size = args
                .get(b"x-stream-max-segment-size-bytes")
                .and_then(as_int)
                .unwrap_or(0);
            if size > MAX_SEGMENT_SIZE {
                return Err(precondition(
                    "Exceeded max value for x-stream-max-segment-size-bytes",
                ));
            }
        }
    }
    Ok(qtype)
}

/// What an exchange.declare that creates an exchange must pass: `alternate-exchange`,
/// when present, must be a long string (`rabbit_channel`'s check, the only one RabbitMQ
/// makes on exchange arguments).
pub fn validate_exchange_declare(
    vhost: &str,
    name: &[u8],
    args: &FieldTable,
) -> Result<(), AmqpError> {
    match args.get(b"alternate-exchange") {
        None | Some(FieldValue::LongStr(_)) => Ok(()),
        Some(v) => Err(precondition(format!(
            "invalid type '{}' for arg 'alternate-exchange' in exchange '{}' in vhost '{vhost}'",
            type_name(v),
            String::from_utf8_lossy(name)
        ))),
    }
}

// ----- basic.consume arguments ---------------------------------------------------------

/// The consume arguments each queue type accepts (`capabilities()`'s
/// `consumer_arguments` in RabbitMQ 3.10).
fn consumer_arguments(t: QueueType) -> &'static [&'static str] {
    match t {
        QueueType::Classic => &["x-cancel-on-ha-failover", "x-priority", "x-credit"],
        QueueType::Quorum => &["x-priority", "x-credit"],
        QueueType::Stream => &["x-stream-offset", "x-credit"],
    }
}

/// What a basic.consume's arguments must pass (`rabbit_amqqueue:check_consume_arguments`):
/// each of `consume_args()` the queue's type accepts has its type checked, in that
/// order (`x-priority` an integer, `x-cancel-on-ha-failover` a bool; a stream's
/// `x-stream-offset` is not looked into); then, in the client's order, no consume
/// argument of another queue type may appear. Unknown keys pass. `queue` is the
/// queue's name; Err is the 406 RabbitMQ 3.10 sends.
pub fn validate_consume(
    vhost: &str,
    queue: &[u8],
    qtype: QueueType,
    args: &FieldTable,
) -> Result<(), AmqpError> {
    if args.is_empty() {
        return Ok(());
    }
    let rs = format!(
        "queue '{}' in vhost '{vhost}'",
        String::from_utf8_lossy(queue)
    );
    let allowed = consumer_arguments(qtype);
    for key in ["x-priority", "x-cancel-on-ha-failover"] {
        let Some(v) = args.get(key.as_bytes()).filter(|_| allowed.contains(&key)) else {
            continue;
        };
        let why = match (key, v) {
            ("x-priority", v) => int_arg(v).err(),
            (_, FieldValue::Bool(_)) => None,
            (_, other) => Some(Invalid::UnacceptableType(type_name(other))),
        };
        if let Some(why) = why {
            let mut text = format!("invalid arg '{key}' for {rs}: ");
            why.render(&mut text);
            return Err(precondition(text));
        }
    }
    for (key, _) in args.iter() {
        let known = ALL_TYPES.iter().any(|t| {
            consumer_arguments(*t)
                .iter()
                .any(|k| k.as_bytes() == &key[..])
        });
        if known && !allowed.iter().any(|k| k.as_bytes() == &key[..]) {
            return Err(precondition(format!(
                "invalid arg '{}' for {rs} of queue type {}",
                String::from_utf8_lossy(key),
                qtype.module()
            )));
        }
    }
    Ok(())
}

/// A consumer's `x-priority` (validated by [`validate_consume`]; 0 when absent), held
/// within i32.
pub fn consumer_priority(args: &FieldTable) -> i32 {
    args.get(b"x-priority")
        .and_then(FieldValue::as_i64)
        .map_or(0, |p| {
            p.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
        })
}

/// The queue arguments Warren acts on (`super::features`).
const IMPLEMENTED: &[&[u8]] = &[
    b"x-message-ttl",
    b"x-dead-letter-exchange",
    b"x-dead-letter-routing-key",
    b"x-max-length",
    b"x-max-length-bytes",
    b"x-overflow",
    b"x-expires",
    // Priority queues (`super::queue::priority`).
    b"x-max-priority",
    // Quorum queues (`super::quorum`); on one node a group size or leader locator has
    // nothing to choose. (`x-queue-mode: lazy` is accepted and still warned about:
    // Warren pages by its memory budget, not per queue.)
    b"x-delivery-limit",
    b"x-dead-letter-strategy",
    b"x-quorum-initial-group-size",
    b"x-queue-leader-locator",
    // Consumer order (`super::queue::ConsumerOrder`).
    b"x-single-active-consumer",
];

/// The known queue arguments in `args` that Warren accepts but does not act on yet
/// (every one but `x-queue-type` classic or quorum), in the client's order, for the one
/// warning a new queue logs. Empty (and allocation-free) for a queue without such
/// arguments.
pub fn not_implemented(args: &FieldTable) -> Vec<String> {
    args.iter()
        .filter(|(k, v)| {
            known_queue_arg(k)
                && !IMPLEMENTED.contains(&&k[..])
                && !(&k[..] == b"x-queue-type"
                    && matches!(v, FieldValue::LongStr(s) if &s[..] == b"classic" || &s[..] == b"quorum"))
        })
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        FieldTable(
            entries
                .iter()
                .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), v.clone()))
                .collect(),
        )
    }

    fn declare_err(entries: &[(&str, FieldValue)]) -> String {
        validate_queue_declare("/", b"q", &table(entries), false, false, false)
            .unwrap_err()
            .text
            .to_string()
    }

    fn equiv_err(got: &[(&str, FieldValue)], cur: &[(&str, FieldValue)]) -> String {
        check_queue_equivalence("/", b"q", &table(got), &table(cur))
            .unwrap_err()
            .text
            .to_string()
    }

    const INEQ: &str = "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received ";

    #[test]
    fn equivalence_texts_match_rabbitmq() {
        let one = [("x-max-length", FieldValue::I32(1))];
        assert_eq!(
            equiv_err(&[], &one),
            format!("{INEQ}none but current is the value '1' of type 'signedint'")
        );
        assert_eq!(
            equiv_err(&one, &[]),
            format!("{INEQ}the value '1' of type 'signedint' but current is none")
        );
        assert_eq!(
            equiv_err(&[("x-max-length", FieldValue::I32(2))], &one),
            format!("{INEQ}'2' but current is '1'")
        );
        assert_eq!(
            equiv_err(&[("x-max-length", s("a"))], &one),
            format!("{INEQ}'a' but current is '1'")
        );
        let t = FieldValue::Table(table(&[("a", FieldValue::I32(1)), ("b", s("x"))]));
        assert_eq!(
            equiv_err(&[("x-max-length", t)], &one),
            format!("{INEQ}'[{{<<\"a\">>,signedint,1}},{{<<\"b\">>,longstr,<<\"x\">>}}]' but current is '1'")
        );
        let a = FieldValue::Array(vec![FieldValue::I8(1), s("x")]);
        assert_eq!(
            equiv_err(&[("x-max-length", a)], &one),
            format!("{INEQ}'[{{byte,1}},{{longstr,<<\"x\">>}}]' but current is '1'")
        );
        assert_eq!(
            equiv_err(&[("x-max-length", FieldValue::Void)], &one),
            format!("{INEQ}none but current is '1'")
        );
        assert_eq!(
            equiv_err(&[("x-max-length", FieldValue::Bool(true))], &one),
            format!("{INEQ}'true' but current is '1'")
        );
        assert_eq!(
            equiv_err(&[("x-max-length", FieldValue::Decimal(2, 125))], &one),
            format!("{INEQ}'{{2,125}}' but current is '1'")
        );
        assert_eq!(
            equiv_err(&[("x-max-length", FieldValue::F64(1.5))], &one),
            format!("{INEQ}'1.5' but current is '1'")
        );
    }

    #[test]
    fn equivalence_is_by_value_across_integer_widths_and_only_known_keys() {
        let cur = table(&[("x-max-length", FieldValue::I32(1)), ("x-foo", s("a"))]);
        let got = table(&[("x-max-length", FieldValue::U8(1)), ("x-foo", s("b"))]);
        assert!(check_queue_equivalence("/", b"q", &got, &cur).is_ok());
        let got = table(&[("x-max-length", FieldValue::Timestamp(1))]);
        assert!(check_queue_equivalence("/", b"q", &got, &cur).is_ok());
        // Classic matches an absent x-queue-type both ways.
        let classic = table(&[("x-queue-type", s("classic"))]);
        assert!(check_queue_equivalence("/", b"q", &classic, &FieldTable::new()).is_ok());
        assert!(check_queue_equivalence("/", b"q", &FieldTable::new(), &classic).is_ok());
        let f = table(&[("x-max-length", FieldValue::F32(1.5))]);
        let d = table(&[("x-max-length", FieldValue::F64(1.5))]);
        assert!(check_queue_equivalence("/", b"q", &f, &d).is_ok());
    }

    #[test]
    fn erlang_float_and_binary_rendering() {
        let p = |f: f64| {
            let mut s = String::new();
            write_p_float(&mut s, f);
            s
        };
        assert_eq!(p(1.5), "1.5");
        assert_eq!(p(100.0), "100.0");
        assert_eq!(p(1000.0), "1.0e3");
        assert_eq!(p(1e20), "1.0e20");
        assert_eq!(p(1e-5), "1.0e-5");
        assert_eq!(p(0.1), "0.1");
        assert_eq!(p(-2.5), "-2.5");
        assert_eq!(p(123456789.0), "123456789.0");
        assert_eq!(p(f64::from(0.1f32)), "0.10000000149011612");
        let mut s = String::new();
        write_p_bin(&mut s, &[1, 2]);
        assert_eq!(s, "<<1,2>>");
        s.clear();
        write_p_bin(&mut s, b"a\"b");
        assert_eq!(s, "<<\"a\\\"b\">>");
    }

    #[test]
    fn consume_argument_texts_match_rabbitmq() {
        let err = |t: QueueType, entries: &[(&str, FieldValue)]| {
            validate_consume("/", b"q", t, &table(entries))
                .map_err(|e| e.text)
                .err()
        };
        let rs = "for queue 'q' in vhost '/'";
        assert_eq!(
            err(QueueType::Classic, &[("x-priority", s("high"))]).unwrap(),
            format!("invalid arg 'x-priority' {rs}: \"expected integer, got longstr\"")
        );
        assert_eq!(
            err(
                QueueType::Classic,
                &[("x-priority", FieldValue::Bool(true))]
            )
            .unwrap(),
            format!("invalid arg 'x-priority' {rs}: \"expected integer, got bool\"")
        );
        assert_eq!(
            err(
                QueueType::Classic,
                &[("x-cancel-on-ha-failover", FieldValue::I32(1))]
            )
            .unwrap(),
            format!("invalid arg 'x-cancel-on-ha-failover' {rs}: {{unacceptable_type,signedint}}")
        );
        assert_eq!(
            err(
                QueueType::Classic,
                &[("x-stream-offset", FieldValue::I32(1))]
            )
            .unwrap(),
            format!("invalid arg 'x-stream-offset' {rs} of queue type rabbit_classic_queue")
        );
        assert_eq!(
            err(
                QueueType::Quorum,
                &[("x-cancel-on-ha-failover", FieldValue::Bool(true))]
            )
            .unwrap(),
            format!("invalid arg 'x-cancel-on-ha-failover' {rs} of queue type rabbit_quorum_queue")
        );
        assert_eq!(err(QueueType::Classic, &[("x-foo", s("x"))]), None);
        assert_eq!(
            err(QueueType::Classic, &[("x-priority", FieldValue::I64(-7))]),
            None
        );
        let big = table(&[("x-priority", FieldValue::I64(1 << 40))]);
        assert_eq!(consumer_priority(&big), i32::MAX);
        assert_eq!(consumer_priority(&FieldTable::new()), 0);
    }

    #[test]
    fn validation_texts_match_rabbitmq() {
        let rs = "for queue 'q' in vhost '/'";
        // (argument, value, what RabbitMQ says after "invalid arg '<argument>' <rs>")
        let cases = [
            (
                "x-max-length",
                s("a"),
                ": \"expected integer, got longstr\"",
            ),
            ("x-max-length", FieldValue::I32(-1), ": {value_negative,-1}"),
            (
                "x-message-ttl",
                FieldValue::I64(315_360_000_001),
                ": {value_too_large,315360000001}",
            ),
            ("x-expires", FieldValue::I32(0), ": {value_zero,0}"),
            (
                "x-max-priority",
                FieldValue::I32(256),
                ": {max_value_exceeded,256}",
            ),
            ("x-overflow", s("bogus"), ": invalid_overflow"),
            (
                "x-queue-type",
                s("bogus"),
                ": \"unsupported queue type 'bogus'\"",
            ),
            (
                "x-single-active-consumer",
                FieldValue::I32(1),
                ": {unacceptable_type,signedint}",
            ),
            (
                "x-dead-letter-routing-key",
                s("k"),
                ": routing_key_but_no_dlx_defined",
            ),
            (
                "x-delivery-limit",
                FieldValue::I32(1),
                " of queue type rabbit_classic_queue",
            ),
        ];
        for (name, value, tail) in cases {
            let want = format!("invalid arg '{name}' {rs}{tail}");
            assert_eq!(declare_err(&[(name, value)]), want);
        }
        assert_eq!(
            declare_err(&[("x-dead-letter-exchange", FieldValue::I32(1))]),
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        assert_eq!(
            declare_err(&[("x-queue-type", s("quorum"))]),
            format!("invalid property 'non-durable' {rs}")
        );
        // The first failing check in declare_args() order wins, not the table's order.
        assert_eq!(
            declare_err(&[
                ("x-max-length", FieldValue::I32(-1)),
                ("x-message-ttl", FieldValue::I32(-2))
            ]),
            format!("invalid arg 'x-message-ttl' {rs}: {{value_negative,-2}}")
        );
        let ok = table(&[
            ("x-max-length", FieldValue::U8(3)),
            ("x-queue-type", s("quorum")),
            ("x-delivery-limit", s("anything")),
            ("x-foo", FieldValue::Void),
        ]);
        assert_eq!(
            validate_queue_declare("/", b"q", &ok, true, false, false).unwrap(),
            QueueType::Quorum
        );
        assert!(
            not_implemented(&ok).is_empty(),
            "quorum queues are implemented"
        );
        assert!(not_implemented(&table(&[("x-queue-type", s("classic"))])).is_empty());
        assert_eq!(
            not_implemented(&table(&[("x-queue-type", s("stream"))])),
            vec!["x-queue-type"]
        );
    }
}
