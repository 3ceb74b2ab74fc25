//! Dead-lettering's message surgery, as RabbitMQ 3.10's `rabbit_dead_letter` does it:
//! the properties of the message republished to a queue's dead-letter exchange (the
//! `x-death` array with its per (queue, reason) counting, the `x-first-death-*`
//! headers, `expiration` removed, `CC` dropped when a dead-letter routing key replaces
//! the message's keys), and the cycle rule that drops a message which would return to a
//! queue it already died in without a rejection on the way.
//!
//! Pure functions over raw property lists and field tables: no queue, no store, no
//! clock (the caller passes the time). The broker calls them from
//! `Broker::dead_letter`; the fuzz target `x_death` calls them directly. Only messages
//! being dead-lettered come here: nothing runs for a plain publish or delivery.
//!
//! Details kept from RabbitMQ (they show in what consumers decode):
//! - A first death adds `x-first-death-reason`, `-queue`, `-exchange` and `x-death`; each
//!   header set sorts the header table by key (`rabbit_misc:set_table_value`).
//! - A death in a (queue, reason) already listed increments that entry's `count` only
//!   (its `time`, `exchange`, `routing-keys` stay those of the first such death) and
//!   moves it, its keys sorted, to the front; a new pair gets a fresh entry in front
//!   (also sorted). When two or more entries were there, they are first grouped by
//!   (queue, reason) with their counts summed, which reverses their order
//!   (`group_by_queue_and_reason`'s fold).
//! - An `x-death` that is not an array is replaced by a one-entry array, and no
//!   `x-first-death-*` headers are added.

use bytes::{Bytes, BytesMut};

use crate::proto::properties::BasicProperties;
use crate::proto::{FieldTable, FieldValue};

/// Why a message was dead-lettered (the `reason` of its `x-death` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL ran out in the queue.
    Expired,
    /// The queue's length limit dropped or refused it.
    Maxlen,
    /// A quorum queue's delivery limit was reached.
    DeliveryLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Where and why a message died, for its `x-death` entry.
#[derive(Debug, Clone, Copy)]
pub struct Death<'a> {
    pub reason: Reason,
    /// The queue it died in.
    pub queue: &'a [u8],
    /// The exchange it had been published to (the message's exchange).
    pub exchange: &'a [u8],
    /// Its routing key (the first of `routing-keys`; `CC` keys follow).
    pub routing_key: &'a [u8],
    /// Seconds since the epoch.
    pub time: u64,
    /// Whether a dead-letter routing key replaces the message's keys (then `CC` goes).
    pub new_routing_key: bool,
}

fn longstr(b: &[u8]) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(b))
}

fn key(t: &FieldTable, k: &[u8]) -> Option<FieldValue> {
    t.get(k).cloned()
}

/// `rabbit_misc:sort_field_table` (a stable sort by key).
fn sort(t: &mut FieldTable) {
    t.0.sort_by(|a, b| a.0.cmp(&b.0));
}

/// `rabbit_misc:set_table_value`: replace the first entry of `k` (or append), then sort.
fn set(t: &mut FieldTable, k: &'static [u8], v: FieldValue) {
    t.insert(Bytes::from_static(k), v);
    sort(t);
}

/// Whether an x-death entry is about (`queue`, `reason`): their values compared, whatever
/// their types (`x_death_event_key` reads the value only).
fn is_about(entry: &FieldTable, queue: &FieldValue, reason: &FieldValue) -> bool {
    entry.get(b"queue").is_some_and(|q| same(q, queue))
        && entry.get(b"reason").is_some_and(|r| same(r, reason))
}

/// Erlang's `=:=` on the values of two field values: strings and byte arrays are both
/// binaries; everything else compares as decoded.
fn same(a: &FieldValue, b: &FieldValue) -> bool {
    match (a.as_bytes(), b.as_bytes()) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a == b,
        _ => false,
    }
}

/// `count` as an integer (RabbitMQ adds 1 to whatever number is there).
fn count_of(entry: &FieldTable) -> Option<i64> {
    entry.get(b"count").map(|c| c.as_i64().unwrap_or(0))
}

/// `ensure_xdeath_event_count`: a `count` of `n` in front when there is none.
fn ensure_count(mut entry: FieldTable, n: i64) -> FieldTable {
    if entry.get(b"count").is_none() {
        entry
            .0
            .insert(0, (Bytes::from_static(b"count"), FieldValue::I64(n)));
    }
    entry
}

/// `group_by_queue_and_reason`: one entry per (queue, reason), its count the number of
/// entries that had that pair when they carry none; the result is in reverse order.
/// Items that are not tables are left out (RabbitMQ fails on them; we drop them).
fn group(tables: Vec<FieldValue>) -> Vec<FieldTable> {
    let tables: Vec<FieldTable> = tables
        .into_iter()
        .filter_map(|v| match v {
            FieldValue::Table(t) => Some(t),
            _ => None,
        })
        .collect();
    if tables.len() <= 1 {
        return tables;
    }
    let mut seen: Vec<(Option<FieldValue>, Option<FieldValue>)> = Vec::new();
    let mut out: Vec<FieldTable> = Vec::new();
    for t in &tables {
        let (q, r) = (key(t, b"queue"), key(t, b"reason"));
        let matches = |o: &FieldTable| {
            let eq = |a: Option<&FieldValue>, b: &Option<FieldValue>| match (a, b) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            };
            eq(o.get(b"queue"), &q) && eq(o.get(b"reason"), &r)
        };
        let mut all = tables.iter().filter(|o| matches(o));
        let first = all.next().cloned().unwrap_or_else(|| t.clone());
        let n = 1 + all.count() as i64;
        let pair = (q, r);
        let already = seen.iter().any(|(a, b)| {
            let eq = |x: &Option<FieldValue>, y: &Option<FieldValue>| match (x, y) {
                (Some(x), Some(y)) => same(x, y),
                (None, None) => true,
                _ => false,
            };
            eq(a, &pair.0) && eq(b, &pair.1)
        });
        if !already || out.is_empty() {
            out.insert(0, ensure_count(first, n));
        }
        if !already {
            seen.push(pair);
        }
    }
    out
}

/// `update_x_death_header`: the headers of a message dying with `info` (reason, queue,
/// time, exchange, routing-keys, original-expiration?).
fn update_headers(mut headers: FieldTable, info: FieldTable, death: &Death<'_>) -> FieldTable {
    let queue = longstr(death.queue);
    let reason = longstr(death.reason.as_str().as_bytes());
    let with_count = |mut info: FieldTable| {
        info.0
            .insert(0, (Bytes::from_static(b"count"), FieldValue::I64(1)));
        info
    };
    match headers.get(b"x-death").cloned() {
        None => {
            set(&mut headers, b"x-first-death-reason", reason);
            set(&mut headers, b"x-first-death-queue", queue);
            set(
                &mut headers,
                b"x-first-death-exchange",
                longstr(death.exchange),
            );
            let entry = FieldValue::Table(with_count(info));
            set(&mut headers, b"x-death", FieldValue::Array(vec![entry]));
        }
        Some(FieldValue::Array(items)) => {
            let grouped = group(items);
            let (matches, others): (Vec<FieldTable>, Vec<FieldTable>) = grouped
                .into_iter()
                .partition(|e| is_about(e, &queue, &reason));
            let mut entry = match matches.into_iter().next() {
                None => with_count(info),
                Some(mut m) => match count_of(&m) {
                    None => with_count(m),
                    Some(n) => {
                        m.insert(
                            Bytes::from_static(b"count"),
                            FieldValue::I64(n.saturating_add(1)),
                        );
                        m
                    }
                },
            };
            sort(&mut entry);
            let mut array = Vec::with_capacity(others.len() + 1);
            array.push(FieldValue::Table(entry));
            array.extend(others.into_iter().map(FieldValue::Table));
            set(&mut headers, b"x-death", FieldValue::Array(array));
        }
        Some(_) => {
            let entry = FieldValue::Table(with_count(info));
            set(&mut headers, b"x-death", FieldValue::Array(vec![entry]));
        }
    }
    headers
}

/// The `CC` header's string entries (`rabbit_basic:header_routes`; a `BCC` never reaches
/// a queue in RabbitMQ, so only `CC` can be there).
fn cc_keys(headers: Option<&FieldTable>) -> Vec<FieldValue> {
    match headers.and_then(|h| h.get(b"CC")) {
        Some(FieldValue::Array(keys)) => keys
            .iter()
            .filter(|k| matches!(k, FieldValue::LongStr(_)))
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// The raw properties of the message that dies as `death` with properties `raw`: its
/// headers updated as RabbitMQ does (see the module doc), its `expiration` removed (kept
/// as `original-expiration` in the entry), everything else as it was. None when `raw`
/// does not decode (never for properties Warren accepted).
pub fn dead_letter_properties(raw: &Bytes, death: &Death<'_>) -> Option<Bytes> {
    let mut props = BasicProperties::decode(raw).ok()?;
    let mut routing_keys = vec![longstr(death.routing_key)];
    routing_keys.extend(cc_keys(props.headers.as_ref()));
    let mut info = FieldTable::new();
    info.0.extend([
        (
            Bytes::from_static(b"reason"),
            longstr(death.reason.as_str().as_bytes()),
        ),
        (Bytes::from_static(b"queue"), longstr(death.queue)),
        (
            Bytes::from_static(b"time"),
            FieldValue::Timestamp(death.time),
        ),
        (Bytes::from_static(b"exchange"), longstr(death.exchange)),
        (
            Bytes::from_static(b"routing-keys"),
            FieldValue::Array(routing_keys),
        ),
    ]);
    if let Some(e) = props.expiration.take() {
        info.0.push((
            Bytes::from_static(b"original-expiration"),
            FieldValue::LongStr(e),
        ));
    }
    let mut headers = update_headers(props.headers.take().unwrap_or_default(), info, death);
    if death.new_routing_key {
        if let Some(at) = headers.0.iter().position(|(k, _)| &k[..] == b"CC") {
            headers.0.remove(at);
        }
    }
    props.headers = Some(headers);
    let mut buf = BytesMut::with_capacity(raw.len() + 160);
    props.encode(&mut buf);
    Some(buf.freeze())
}

/// RabbitMQ's cycle rule (`detect_cycles`/`is_cycle`) for a message being dead-lettered
/// for `reason` with headers `headers` (already updated by this death) into `queue`:
/// true when the message died in `queue` before and no entry up to and including that
/// one says `rejected` (a fully automatic cycle: the message is not delivered there).
/// A rejection, or anything in the array that is not a table, breaks the cycle.
pub fn is_cycle(reason: Reason, headers: Option<&FieldTable>, queue: &[u8]) -> bool {
    if reason == Reason::Rejected {
        return false;
    }
    let Some(FieldValue::Array(deaths)) = headers.and_then(|h| h.get(b"x-death")) else {
        return false;
    };
    let names_queue = |v: &FieldValue| match v {
        FieldValue::Table(d) => {
            matches!(d.get(b"queue"), Some(FieldValue::LongStr(q)) if &q[..] == queue)
        }
        _ => false,
    };
    let Some(at) = deaths.iter().position(names_queue) else {
        return false;
    };
    deaths[..=at].iter().all(|v| match v {
        FieldValue::Table(d) => {
            !matches!(d.get(b"reason"), Some(FieldValue::LongStr(r)) if &r[..] == b"rejected")
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death<'a>(reason: Reason, queue: &'a str) -> Death<'a> {
        Death {
            reason,
            queue: queue.as_bytes(),
            exchange: b"",
            routing_key: queue.as_bytes(),
            time: 1000,
            new_routing_key: false,
        }
    }

    fn headers(raw: &Bytes) -> FieldTable {
        BasicProperties::decode(raw).unwrap().headers.unwrap()
    }

    fn deaths(h: &FieldTable) -> Vec<FieldTable> {
        match h.get(b"x-death") {
            Some(FieldValue::Array(a)) => a
                .iter()
                .map(|v| match v {
                    FieldValue::Table(t) => t.clone(),
                    _ => panic!("not a table"),
                })
                .collect(),
            other => panic!("x-death is {other:?}"),
        }
    }

    fn s(v: &FieldValue) -> String {
        String::from_utf8_lossy(v.as_bytes().unwrap()).into_owned()
    }

    #[test]
    fn first_death_adds_first_death_headers_and_drops_expiration() {
        let props = BasicProperties {
            expiration: Some(Bytes::from_static(b"60000")),
            delivery_mode: Some(2),
            ..Default::default()
        };
        let raw = props.to_raw();
        let out = dead_letter_properties(&raw, &death(Reason::Rejected, "work")).unwrap();
        let p = BasicProperties::decode(&out).unwrap();
        assert_eq!((p.expiration, p.delivery_mode), (None, Some(2)));
        let h = p.headers.unwrap();
        let keys: Vec<&[u8]> = h.0.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(
            keys,
            [
                &b"x-death"[..],
                b"x-first-death-exchange",
                b"x-first-death-queue",
                b"x-first-death-reason"
            ]
        );
        let d = &deaths(&h)[0];
        let keys: Vec<&[u8]> = d.0.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(
            keys,
            [
                &b"count"[..],
                b"reason",
                b"queue",
                b"time",
                b"exchange",
                b"routing-keys",
                b"original-expiration"
            ]
        );
        assert_eq!(d.get(b"count"), Some(&FieldValue::I64(1)));
        assert_eq!(s(d.get(b"original-expiration").unwrap()), "60000");
    }

    #[test]
    fn retry_cycle_counts_per_queue_and_reason() {
        let mut raw = BasicProperties::default().to_raw();
        for round in 1..=3i64 {
            raw = dead_letter_properties(&raw, &death(Reason::Rejected, "work")).unwrap();
            assert!(!is_cycle(
                Reason::Rejected,
                Some(&headers(&raw)),
                "retry".as_bytes()
            ));
            raw = dead_letter_properties(&raw, &death(Reason::Expired, "retry")).unwrap();
            let h = headers(&raw);
            assert!(
                !is_cycle(Reason::Expired, Some(&h), b"work"),
                "a rejection breaks it"
            );
            let d = deaths(&h);
            assert_eq!(d.len(), 2);
            assert_eq!(s(d[0].get(b"queue").unwrap()), "retry");
            assert_eq!(d[0].get(b"count"), Some(&FieldValue::I64(round)));
            assert_eq!(s(h.get(b"x-first-death-queue").unwrap()), "work");
        }
    }

    #[test]
    fn expiry_back_into_the_same_queue_is_a_cycle() {
        let raw = BasicProperties::default().to_raw();
        let raw = dead_letter_properties(&raw, &death(Reason::Expired, "a")).unwrap();
        assert!(is_cycle(Reason::Expired, Some(&headers(&raw)), b"a"));
        assert!(!is_cycle(Reason::Expired, Some(&headers(&raw)), b"b"));
        assert!(!is_cycle(Reason::Rejected, Some(&headers(&raw)), b"a"));
    }

    #[test]
    fn cc_is_listed_then_dropped_with_a_new_routing_key() {
        let mut h = FieldTable::new();
        h.insert(
            "CC",
            FieldValue::Array(vec![FieldValue::LongStr(Bytes::from_static(b"k2"))]),
        );
        let raw = BasicProperties {
            headers: Some(h),
            ..Default::default()
        }
        .to_raw();
        let mut d = death(Reason::Rejected, "q");
        d.new_routing_key = true;
        let out = headers(&dead_letter_properties(&raw, &d).unwrap());
        assert!(out.get(b"CC").is_none());
        let rks = deaths(&out)[0].get(b"routing-keys").cloned().unwrap();
        assert_eq!(
            rks,
            FieldValue::Array(vec![
                FieldValue::LongStr(Bytes::from_static(b"q")),
                FieldValue::LongStr(Bytes::from_static(b"k2"))
            ])
        );
    }

    #[test]
    fn an_x_death_that_is_not_an_array_is_reset() {
        let mut h = FieldTable::new();
        h.insert("x-death", FieldValue::LongStr(Bytes::from_static(b"junk")));
        let raw = BasicProperties {
            headers: Some(h),
            ..Default::default()
        }
        .to_raw();
        let out = headers(&dead_letter_properties(&raw, &death(Reason::Maxlen, "q")).unwrap());
        assert_eq!(deaths(&out).len(), 1);
        assert!(out.get(b"x-first-death-reason").is_none());
    }
}
