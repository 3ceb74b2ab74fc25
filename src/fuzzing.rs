//! Fuzzing entry points, shared by the cargo-fuzz crate (`fuzz/`) and the corpus
//! replay test (`tests/fuzz_replay.rs`), so that every input the fuzzer ever found
//! interesting is re-checked on stable Rust by `cargo test`.
//!
//! Compiled only with the `fuzzing` cargo feature (see Cargo.toml): the library and
//! binaries we ship leave it out.
//!
//! Every function here takes arbitrary bytes and must not panic: a panic is a bug
//! in the broker (a decoder that panics, a round trip that does not hold, a topic
//! match that disagrees with the reference matcher, a connection state machine
//! that panics, writes a malformed frame or leaves the broker wedged).

use bytes::{Bytes, BytesMut};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use crate::broker::exchange::topic::{reference, TopicTrie};
use crate::config::Config;
use crate::conn::State;
use crate::proto::properties;
use crate::proto::types::Reader;
use crate::proto::{
    basic, channel, connection, frame, queue, BasicProperties, ContentHeader, FieldTable, Method,
};
use crate::server::Server;

/// `x == x`: false only when `x` holds a NaN somewhere (floats in field tables).
fn self_eq<T: PartialEq>(x: &T) -> bool {
    let y = x;
    x == y
}

/// frame-max values a frame is parsed against.
const FRAME_MAXES: [u32; 4] = [0, frame::FRAME_MIN_SIZE, 131_072, 9];

/// A byte stream as a sequence of frames: [`frame::parse`] under several frame-max
/// values, then every complete frame's payload through the decoder for its type.
pub fn frame(data: &[u8]) {
    for fm in FRAME_MAXES {
        match frame::parse(data, fm) {
            Ok(Some(h)) => {
                let len = h.total_len();
                assert!(len <= data.len(), "frame longer than its input");
                assert_eq!(data[len - 1], frame::FRAME_END);
                assert!(fm == 0 || u64::from(h.size) + 8 <= u64::from(fm));
                assert_eq!(u16::from_be_bytes([data[1], data[2]]), h.channel);
                // Every prefix of a complete frame needs more bytes (or is already
                // known bad from the header alone, which it is not here).
                for cut in [0, 1, 6, 7, len - 1] {
                    assert_eq!(frame::parse(&data[..cut.min(len - 1)], fm), Ok(None));
                }
            }
            Ok(None) => {
                // Needs more: appending a frame end where it is due must not turn
                // it into an error other than a bad end (it can only complete it).
            }
            Err(_) => {}
        }
    }
    // Walk the stream as the connection layer does.
    let mut rest = data;
    let mut n = 0;
    while let Ok(Some(h)) = frame::parse(rest, 0) {
        let len = h.total_len();
        let payload = Bytes::copy_from_slice(&rest[7..len - 1]);
        match h.kind {
            frame::FRAME_METHOD => {
                method_bytes(&payload);
                if let Ok(m) = Method::decode(&payload) {
                    // A whole method frame written by us parses back to itself.
                    let mut b = BytesMut::new();
                    frame::write_method(&mut b, h.channel, &m);
                    let h2 = frame::parse(&b, 0)
                        .unwrap()
                        .expect("written frame complete");
                    assert_eq!(h2.total_len(), b.len());
                    assert_eq!(h2.channel, h.channel);
                    assert_eq!(h2.kind, frame::FRAME_METHOD);
                }
            }
            frame::FRAME_HEADER => properties_bytes(&payload),
            frame::FRAME_BODY => {
                let mut b = BytesMut::new();
                frame::write_body(&mut b, h.channel, &payload, frame::FRAME_MIN_SIZE);
                let mut got = Vec::new();
                let mut w = &b[..];
                while let Ok(Some(bh)) = frame::parse(w, frame::FRAME_MIN_SIZE) {
                    got.extend_from_slice(&w[7..bh.total_len() - 1]);
                    w = &w[bh.total_len()..];
                }
                assert!(w.is_empty(), "write_body produced a bad frame");
                assert_eq!(got, &payload[..]);
            }
            _ => {}
        }
        rest = &rest[len..];
        n += 1;
        if n > 64 {
            break;
        }
    }
}

/// A method frame payload: [`Method::decode`]; if it decodes, encode → decode must
/// give the same method and encode must be a fixed point.
pub fn method(data: &[u8]) {
    method_bytes(&Bytes::copy_from_slice(data));
}

fn method_bytes(payload: &Bytes) {
    let Ok(m) = Method::decode(payload) else {
        return;
    };
    let _ = (m.name(), m.has_content(), m.is_synchronous_request());
    let mut e1 = BytesMut::new();
    m.encode(&mut e1);
    let e1 = e1.freeze();
    let m2 = Method::decode(&e1)
        .unwrap_or_else(|e| panic!("re-decoding {m:?} (encoded {e1:?}) failed: {e:?}"));
    if self_eq(&m) {
        assert_eq!(m, m2, "method round trip");
    }
    let mut e2 = BytesMut::new();
    m2.encode(&mut e2);
    assert_eq!(e1, e2, "method encoding is not a fixed point");
    assert_eq!(
        (m.class_id(), m.method_id()),
        (m2.class_id(), m2.method_id())
    );
}

/// A field table: [`FieldTable::decode`] and [`FieldTable::decode_body`] with
/// encode → decode round trips (compared as values unless they hold a NaN, and as
/// bytes always), and the allocation-free validator [`Reader::skip_table`] must
/// agree with the decoder on what is valid.
pub fn field_table(data: &[u8]) {
    let src = Bytes::copy_from_slice(data);
    let decoded = FieldTable::decode(&src);
    let mut r = Reader::new(data);
    let skipped = r.skip_table(0).and_then(|()| r.finish());
    assert_eq!(
        decoded.is_ok(),
        skipped.is_ok(),
        "decode {decoded:?} vs skip_table {skipped:?}"
    );
    if let Ok(t) = decoded {
        table_round_trip(&t, FieldTable::decode, |t, b| t.encode(b));
    }
    let decoded = FieldTable::decode_body(&src);
    let skipped = Reader::new(data).skip_table_body(0);
    assert_eq!(decoded.is_ok(), skipped.is_ok());
    if let Ok(t) = decoded {
        table_round_trip(&t, FieldTable::decode_body, |t, b| t.encode_body(b));
    }
}

/// Queue and exchange arguments: the first byte picks the declare's flags (durable,
/// exclusive, auto-delete, server-named), the rest is a field table body. Validation
/// and the equivalence checks must not panic; every refusal is a 406; a table is always
/// equivalent to itself (unless it holds a NaN, which RabbitMQ cannot even parse); the
/// first half of the entries against the second half exercises the inequivalence texts.
pub fn queue_arguments(data: &[u8]) {
    use crate::broker::args;
    use crate::error::ReplyCode;
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(t) = FieldTable::decode_body(&Bytes::copy_from_slice(rest)) else {
        return;
    };
    let name: &[u8] = if flags & 8 != 0 { b"" } else { b"q" };
    let is_406 = |e: &crate::error::AmqpError| e.code == ReplyCode::PreconditionFailed;
    if let Err(e) = args::validate_queue_declare(
        "/",
        name,
        &t,
        flags & 1 != 0,
        flags & 2 != 0,
        flags & 4 != 0,
    ) {
        assert!(is_406(&e), "{e:?}");
    }
    if let Err(e) = args::validate_exchange_declare("/", name, &t) {
        assert!(is_406(&e), "{e:?}");
    }
    if self_eq(&t) {
        assert!(
            args::check_queue_equivalence("/", name, &t, &t).is_ok(),
            "{t:?}"
        );
        assert!(
            args::check_exchange_equivalence("/", name, &t, &t).is_ok(),
            "{t:?}"
        );
    }
    let half = t.0.len() / 2;
    let a = FieldTable(t.0.get(..half).unwrap_or_default().to_vec());
    let b = FieldTable(t.0.get(half..).unwrap_or_default().to_vec());
    for (x, y) in [(&a, &b), (&b, &a)] {
        if let Err(e) = args::check_queue_equivalence("/", name, x, y) {
            assert!(
                is_406(&e) && e.text.starts_with("inequivalent arg '"),
                "{e:?}"
            );
        }
        if let Err(e) = args::check_exchange_equivalence("/", name, x, y) {
            assert!(is_406(&e), "{e:?}");
        }
    }
    let _ = args::not_implemented(&t);
    // The same table as basic.consume arguments, for each queue type.
    for qtype in [
        args::QueueType::Classic,
        args::QueueType::Quorum,
        args::QueueType::Stream,
    ] {
        if let Err(e) = args::validate_consume("/", name, qtype, &t) {
            assert!(is_406(&e) && e.text.starts_with("invalid arg '"), "{e:?}");
        }
    }
    queue_features(flags, &t);
}

/// A queue declared with arguments `t` (issue 12's features) in a memory-only broker:
/// publishes with and without `expiration`, a reject, expiry now and far ahead, a
/// purge. Must not panic, and the counts must agree with the ready messages.
fn queue_features(flags: u8, t: &FieldTable) {
    use crate::broker::dead_letter::Reason;
    use crate::broker::{Broker, QueueDecl};
    let mut b = Broker::new();
    let v = crate::broker::VhostId::DEFAULT;
    let mut d = QueueDecl::named(Bytes::from_static(b"q"));
    d.arguments = t.clone();
    d.durable = flags & 1 != 0;
    let Ok(q) = b.declare_queue(v, &d, 1, |_| Ok(())) else {
        return;
    };
    // A queue of the same name as a dead-letter target with the same arguments.
    let mut dl = QueueDecl::named(Bytes::from_static(b"dl"));
    dl.arguments = t.clone();
    let _ = b.declare_queue(v, &dl, 1, |_| Ok(()));
    let Some(x) = b.exchange_id(v, b"") else {
        return;
    };
    let plain = BasicProperties::default().to_raw();
    let expiring = BasicProperties {
        expiration: Some(Bytes::from_static(b"0")),
        ..Default::default()
    }
    .to_raw();
    for (i, p) in [&plain, &expiring, &plain, &expiring]
        .into_iter()
        .enumerate()
    {
        let body = Bytes::from(vec![b'x'; i * 7]);
        let _ = b.publish(x, b"", b"q", p.clone(), body, u64::MAX);
        let _ = b.take_rejected();
    }
    let ready = |b: &Broker| b.queue(q.id).map_or(0, |q| q.len());
    if let Some(r) = b.queue_mut(q.id).and_then(|q| q.next_delivery()) {
        b.dead_letter(q.id, 0, r.msg, Reason::Rejected);
    }
    // Returns (nack with requeue): a quorum queue counts them and dead-letters past
    // its `x-delivery-limit`; any queue keeps its counts right.
    for _ in 0..3 {
        let Some(r) = b.queue_mut(q.id).and_then(|q| q.next_delivery()) else {
            break;
        };
        let token = r.token();
        b.requeue(q.id, 0, r.msg, token);
    }
    b.expire_due(q.id, false);
    let _ = b.run_queue_timers();
    let before = ready(&b);
    if let Some(queue) = b.queue(q.id) {
        assert_eq!(queue.message_count() as usize, before);
        let bytes = queue.ready_bytes();
        if let Some(f) = queue.features.as_ref() {
            assert_eq!(f.bytes, bytes, "tracked ready bytes");
        }
    }
    let _ = b.purge(q.id);
    assert_eq!(ready(&b), 0);
    consumer_order(&mut b, q.id, flags, t);
}

/// Consumers with priorities from `flags` (one with the fuzzed table as its consume
/// arguments, when it passes) on queue `id`: a classic queue's consumers stay sorted
/// by priority (the active one first on a single-active-consumer queue), and the queue
/// is back to plain round-robin once they are gone.
fn consumer_order(
    b: &mut crate::broker::Broker,
    id: crate::broker::QueueId,
    flags: u8,
    t: &FieldTable,
) {
    use crate::broker::args;
    use crate::broker::queue::ConsumerOrder;
    let Some(q) = b.queue(id) else { return };
    let qtype = args::QueueType::of(&q.props.arguments);
    let mut ids = Vec::new();
    for i in 0..4u8 {
        let p = i64::from((flags >> (2 * i)) & 3) - 1;
        let mut a = FieldTable::new();
        if p != 0 {
            a.insert("x-priority", crate::proto::FieldValue::I64(p));
        }
        if i == 3 && args::validate_consume("/", b"q", qtype, t).is_ok() {
            a = t.clone();
        }
        let tag = Bytes::from(vec![b'c', i]);
        let p = args::consumer_priority(&a);
        if let Ok(c) = b.add_consumer(id, 1, 1, tag, true, false, 0, p) {
            ids.push(c);
        }
    }
    if let Some(q) = b.queue(id) {
        let ps: Vec<i32> = q.consumers().map(|c| c.priority).collect();
        let from = usize::from(q.is_single_active());
        if !q.quorum || !q.is_single_active() {
            let rest = ps.get(from..).unwrap_or_default();
            assert!(rest.windows(2).all(|w| w[0] >= w[1]), "{ps:?}");
        }
        if ps.iter().any(|&p| p != 0) && !q.is_single_active() {
            assert_eq!(q.order(), ConsumerOrder::Priority);
        }
    }
    for c in ids {
        b.remove_consumer(id, c);
    }
    if let Some(q) = b.queue(id) {
        assert!(q.order() != ConsumerOrder::Priority, "{:?}", q.order());
    }
}

/// Dead-lettering's header building (`broker::dead_letter`): the input is a flags byte
/// then a property list. Each of several deaths in a row (rejected, expired, maxlen,
/// over two queues) must give properties that decode, without `expiration`, with an
/// `x-death` array whose first entry is this death's (queue, reason) with an integer
/// `count`, and the first-death headers once there was none; the cycle rule must
/// answer for any queue.
pub fn x_death(data: &[u8]) {
    use crate::broker::dead_letter::{dead_letter_properties, is_cycle, Death, Reason};
    use crate::proto::FieldValue;
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(p) = BasicProperties::decode(&Bytes::copy_from_slice(rest)) else {
        return;
    };
    let mut raw = p.to_raw();
    let reasons = [
        Reason::Rejected,
        Reason::Expired,
        Reason::Maxlen,
        Reason::DeliveryLimit,
    ];
    for i in 0..6u8 {
        let reason = reasons[usize::from((flags >> (i % 4)) & 3)];
        let queue: &[u8] = if (flags >> i) & 1 == 0 { b"a" } else { b"b" };
        let death = Death {
            reason,
            queue,
            exchange: b"x",
            routing_key: b"rk",
            time: 1_700_000_000,
            new_routing_key: flags & 0x80 != 0,
        };
        let had_death = BasicProperties::decode(&raw)
            .ok()
            .and_then(|p| p.headers)
            .is_some_and(|h| h.get(b"x-death").is_some());
        let out = dead_letter_properties(&raw, &death).expect("valid properties in, out");
        let decoded = BasicProperties::decode(&out).expect("dead-letter properties decode");
        assert_eq!(decoded.expiration, None);
        let h = decoded.headers.expect("headers");
        let Some(FieldValue::Array(deaths)) = h.get(b"x-death") else {
            panic!("x-death is not an array: {h:?}");
        };
        let Some(FieldValue::Table(first)) = deaths.first() else {
            panic!("x-death has no first table: {deaths:?}");
        };
        assert_eq!(first.get(b"queue").and_then(|v| v.as_bytes()), Some(queue));
        assert_eq!(
            first.get(b"reason").and_then(|v| v.as_bytes()),
            Some(reason.as_str().as_bytes())
        );
        // An integer (RabbitMQ adds 1 to whatever the entry had, even 0 or below: the
        // fuzzer's crash-negative-count seed).
        assert!(first.get(b"count").and_then(|c| c.as_i64()).is_some());
        if !had_death {
            assert!(h.get(b"x-first-death-queue").is_some());
        }
        for q in [&b"a"[..], b"b", b"c"] {
            let _ = is_cycle(reason, Some(&h), q);
        }
        raw = out;
    }
}

fn table_round_trip(
    t: &FieldTable,
    decode: impl Fn(&Bytes) -> Result<FieldTable, crate::proto::DecodeError>,
    encode: impl Fn(&FieldTable, &mut BytesMut),
) {
    let _ = (t.len(), t.is_empty(), t.iter().count());
    let mut e1 = BytesMut::new();
    encode(t, &mut e1);
    let e1 = e1.freeze();
    let t2 = decode(&e1).unwrap_or_else(|e| panic!("re-decoding {t:?} failed: {e:?}"));
    if self_eq(t) {
        assert_eq!(t, &t2, "table round trip");
    }
    let mut e2 = BytesMut::new();
    encode(&t2, &mut e2);
    assert_eq!(e1, e2, "table encoding is not a fixed point");
}

/// A content header frame payload: [`ContentHeader::parse`]; a parsed header's
/// properties must decode (parse validates them), the raw accessors must agree
/// with the decoded values, and the properties must round trip. The same bytes
/// are also tried as a bare property list ([`BasicProperties::decode`]).
pub fn properties(data: &[u8]) {
    properties_bytes(&Bytes::copy_from_slice(data));
}

fn properties_bytes(payload: &Bytes) {
    if let Ok(h) = ContentHeader::parse(payload) {
        assert_eq!(h.class_id, 60);
        let p = h
            .decode_properties()
            .unwrap_or_else(|e| panic!("parsed header's properties do not decode: {e:?}"));
        let raw = &h.properties;
        assert_eq!(properties::delivery_mode(raw), p.delivery_mode);
        assert_eq!(properties::priority(raw), p.priority);
        assert_eq!(properties::expiration(raw), p.expiration.as_deref());
        let hs = properties::headers(raw);
        if self_eq(&p.headers) {
            assert_eq!(hs, p.headers, "raw headers accessor");
        } else {
            assert!(hs.is_some());
        }
        props_round_trip(&p);
        // Re-framed by our writer, the header parses back to the same thing.
        let mut b = BytesMut::new();
        frame::write_content_header(&mut b, 1, h.body_size, raw);
        let fh = frame::parse(&b, 0).unwrap().expect("complete");
        let again = ContentHeader::parse(&Bytes::copy_from_slice(&b[7..fh.total_len() - 1]))
            .expect("re-framed content header parses");
        assert_eq!(again.body_size, h.body_size);
        assert_eq!(again.properties, h.properties);
    }
    if let Ok(p) = BasicProperties::decode(payload) {
        props_round_trip(&p);
    }
}

fn props_round_trip(p: &BasicProperties) {
    let e1 = p.to_raw();
    let p2 =
        BasicProperties::decode(&e1).unwrap_or_else(|e| panic!("re-decoding {p:?} failed: {e:?}"));
    if self_eq(p) {
        assert_eq!(p, &p2, "properties round trip");
    }
    assert_eq!(e1, p2.to_raw(), "properties encoding is not a fixed point");
    // Our own encoding, wrapped in a content header, passes the strict parser.
    let mut payload = BytesMut::new();
    payload.extend_from_slice(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
    payload.extend_from_slice(&e1);
    let payload = payload.freeze();
    let h = ContentHeader::parse(&payload)
        .unwrap_or_else(|e| panic!("our encoding of {p:?} does not parse: {e:?}"));
    assert_eq!(h.body_size, 3);
}

/// Topic bindings over a tiny alphabet: a byte program of insert / remove / match
/// operations on a [`TopicTrie`], checked against a set-of-bindings model and the
/// slow [`reference`] matcher.
pub fn topic(data: &[u8]) {
    const PAT_WORDS: [&[u8]; 8] = [b"a", b"b", b"*", b"#", b"", b"#", b"*", b"a*"];
    const KEY_WORDS: [&[u8]; 4] = [b"a", b"b", b"c", b""];
    let mut trie: TopicTrie<u8> = TopicTrie::new();
    let mut model: BTreeSet<(Vec<u8>, u8)> = BTreeSet::new();
    let mut it = data.iter().copied();
    let mut ops = 0;
    while let Some(op) = it.next() {
        ops += 1;
        if ops > 48 {
            break;
        }
        let kind = op & 3;
        let n = usize::from((op >> 2) & 7);
        let mut s: Vec<u8> = Vec::new();
        let mut hashes = 0;
        if kind == 3 {
            // match: a key of up to 7 words, 2 bits each
            let mut bits = 0u32;
            let mut have = 0;
            for i in 0..n {
                if have < 2 {
                    bits |= u32::from(it.next().unwrap_or(0)) << have;
                    have += 8;
                }
                if i > 0 {
                    s.push(b'.');
                }
                s.extend_from_slice(KEY_WORDS[(bits & 3) as usize]);
                bits >>= 2;
                have -= 2;
            }
            let key = s;
            let mut out = vec![200u8, 201];
            trie.matches(&key, &mut out);
            assert_eq!(&out[..2], &[200, 201], "matches touched existing output");
            let got: Vec<u8> = out[2..].to_vec();
            let got_set: BTreeSet<u8> = got.iter().copied().collect();
            assert_eq!(got_set.len(), got.len(), "duplicate destinations {got:?}");
            let want: BTreeSet<u8> = model
                .iter()
                .filter(|(p, _)| reference::matches(p, &key))
                .map(|&(_, d)| d)
                .collect();
            assert_eq!(
                got_set,
                want,
                "key {:?} bindings {:?}",
                String::from_utf8_lossy(&key),
                model
                    .iter()
                    .map(|(p, d)| (String::from_utf8_lossy(p).into_owned(), *d))
                    .collect::<Vec<_>>()
            );
        } else {
            // insert (0, 1) or remove (2): a dest, then a pattern of up to 7 words
            let dest = it.next().unwrap_or(0) & 7;
            let mut bits = 0u32;
            let mut have = 0;
            for i in 0..n {
                if have < 3 {
                    bits |= u32::from(it.next().unwrap_or(0)) << have;
                    have += 8;
                }
                let w = PAT_WORDS[(bits & 7) as usize];
                bits >>= 3;
                have -= 3;
                if w == b"#" {
                    hashes += 1;
                    if hashes > 4 {
                        continue; // keep the reference matcher cheap
                    }
                }
                if i > 0 {
                    s.push(b'.');
                }
                s.extend_from_slice(w);
            }
            let pattern = s;
            if kind == 2 {
                let removed = trie.remove(&pattern, dest);
                assert_eq!(removed, model.remove(&(pattern, dest)), "remove result");
            } else {
                let added = trie.insert(&pattern, dest);
                assert_eq!(added, model.insert((pattern, dest)), "insert result");
            }
            assert_eq!(trie.len(), model.len());
            assert_eq!(trie.is_empty(), model.is_empty());
        }
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// The client side of a handshake up to an open channel 1: protocol header,
/// start-ok (PLAIN guest/guest), tune-ok, connection.open, channel.open.
pub fn handshake_bytes() -> &'static [u8] {
    static HS: OnceLock<Vec<u8>> = OnceLock::new();
    HS.get_or_init(|| {
        let mut b = BytesMut::new();
        b.extend_from_slice(frame::PROTOCOL_HEADER);
        let mut props = FieldTable::new();
        props.insert(
            Bytes::from_static(b"product"),
            crate::proto::FieldValue::LongStr(Bytes::from_static(b"warren-fuzz")),
        );
        let mut caps = FieldTable::new();
        for c in [
            &b"consumer_cancel_notify"[..],
            b"publisher_confirms",
            b"basic.nack",
        ] {
            caps.insert(
                Bytes::copy_from_slice(c),
                crate::proto::FieldValue::Bool(true),
            );
        }
        props.insert(
            Bytes::from_static(b"capabilities"),
            crate::proto::FieldValue::Table(caps),
        );
        let methods = [
            Method::ConnectionStartOk(connection::StartOk {
                client_properties: props,
                mechanism: Bytes::from_static(b"PLAIN"),
                response: Bytes::from_static(b"\0guest\0guest"),
                locale: Bytes::from_static(b"en_US"),
            }),
            Method::ConnectionTuneOk(connection::TuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 0,
            }),
            Method::ConnectionOpen(connection::Open {
                virtual_host: Bytes::from_static(b"/"),
                ..Default::default()
            }),
        ];
        for m in &methods {
            frame::write_method(&mut b, 0, m);
        }
        frame::write_method(&mut b, 1, &Method::ChannelOpen(channel::Open::default()));
        b.to_vec()
    })
}

/// Checks everything the server wrote to a connection: a sequence of complete,
/// well-formed frames (after an optional protocol header, sent when the client's
/// was refused), none larger than `frame_max` (0 = unchecked).
fn check_output(out: &[u8], first: bool, frame_max: u32) -> Vec<(u16, Method)> {
    let mut rest = out;
    if first && rest.starts_with(b"AMQP") {
        assert_eq!(&rest[..8.min(rest.len())], frame::PROTOCOL_HEADER);
        rest = &rest[8..];
    }
    let mut methods = Vec::new();
    while !rest.is_empty() {
        let h = match frame::parse(rest, frame_max) {
            Ok(Some(h)) => h,
            other => panic!(
                "server wrote a bad frame: {other:?} at {} of {}: {:?}",
                out.len() - rest.len(),
                out.len(),
                &rest[..rest.len().min(64)]
            ),
        };
        let payload = Bytes::copy_from_slice(&rest[7..h.total_len() - 1]);
        match h.kind {
            frame::FRAME_METHOD => {
                let m = Method::decode(&payload).unwrap_or_else(|e| {
                    panic!("server wrote an undecodable method: {e:?} {payload:?}")
                });
                methods.push((h.channel, m));
            }
            frame::FRAME_HEADER => {
                ContentHeader::parse(&payload).unwrap_or_else(|e| {
                    panic!("server wrote a bad content header: {e:?} {payload:?}")
                });
            }
            frame::FRAME_BODY => assert_ne!(h.channel, 0, "body frame on channel 0"),
            _ => {
                assert_eq!(h.channel, 0, "heartbeat on a channel");
                assert_eq!(h.size, 0, "heartbeat with a payload");
            }
        }
        rest = &rest[h.total_len()..];
    }
    methods
}

/// Feeds `data` to connection `key` and checks the output.
fn feed_checked(server: &mut Server, key: usize, data: &[u8]) -> Vec<(u16, Method)> {
    let first = server
        .conns
        .get(key)
        .is_some_and(|c| c.state == State::Header);
    let out = server.feed(key, data);
    let frame_max = server.conns.get(key).map_or(0, |c| c.frame_max);
    check_output(&out, first, frame_max)
}

/// A fresh connection on `server` must get through a handshake, declare a
/// server-named queue, publish to it and basic.get the message back.
fn round_trip(server: &mut Server) {
    let key = server.open(peer(), None);
    let mut b = BytesMut::from(handshake_bytes());
    let declare = queue::Declare {
        exclusive: true,
        ..Default::default()
    };
    frame::write_method(&mut b, 1, &Method::QueueDeclare(declare));
    let out = feed_checked(server, key, &b);
    let name = out
        .iter()
        .find_map(|(ch, m)| match m {
            Method::QueueDeclareOk(ok) if *ch == 1 => Some(ok.queue.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("broker wedged: no queue.declare-ok, got {out:?}"));
    let mut b = BytesMut::new();
    let publish = basic::Publish {
        routing_key: name.clone(),
        ..Default::default()
    };
    frame::write_method(&mut b, 1, &Method::BasicPublish(publish));
    frame::write_content_header(&mut b, 1, 4, &[0, 0]);
    frame::write_body(&mut b, 1, b"ping", 131_072);
    let get = basic::Get {
        queue: name,
        no_ack: true,
        ..Default::default()
    };
    frame::write_method(&mut b, 1, &Method::BasicGet(get));
    let raw = server.feed(key, &b);
    let out = check_output(&raw, false, 131_072);
    assert!(
        out.iter()
            .any(|(ch, m)| *ch == 1 && matches!(m, Method::BasicGetOk(_))),
        "broker wedged: no basic.get-ok, got {out:?}"
    );
    assert!(
        raw.ends_with(b"ping\xce"),
        "basic.get did not return the body"
    );
    server.lost(key);
    server.remove(key);
}

/// The connection state machine: a fresh [`Server`], one connection, `data` fed in
/// three chunks (split at points given by bytes 1 and 2). The first byte is a mode:
/// bit 0 clear = a valid handshake up to an open channel 1 is sent first, so the
/// fuzzer starts in the running state; bit 1 = the peer hangs up at the end; bits
/// 2..=3 = how much time passes after each chunk (0, 11 s, 200 s, 1801 s). Every frame the
/// server writes must be well-formed; afterwards another connection must still be
/// able to do a full publish / get round trip, and reaping must leave no trace.
pub fn connection(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (s1, s2, body) = match rest {
        [a, b, body @ ..] => (usize::from(*a), usize::from(*b), body),
        _ => (0, 0, rest),
    };
    let mut server = Server::new(Config::default());
    let key = server.open(peer(), None);
    if mode & 1 == 0 {
        feed_checked(&mut server, key, handshake_bytes());
    }
    let p1 = body.len() * s1 / 256;
    let p2 = p1 + (body.len() - p1) * s2 / 256;
    // Bits 2..=3 of the mode byte let time pass between chunks, so that the timers
    // (handshake timeout, heartbeats, close and consumer timeouts) fire.
    let step = match (mode >> 2) & 3 {
        0 => Duration::ZERO,
        1 => Duration::from_secs(11),
        2 => Duration::from_secs(200),
        _ => Duration::from_secs(1801),
    };
    for chunk in [&body[..p1], &body[p1..p2], &body[p2..]] {
        feed_checked(&mut server, key, chunk);
        server.now += step;
        server.turn_without_io();
        if let Some(c) = server.conns.get_mut(key) {
            let out = c.out.take_all();
            check_output(&out, false, c.frame_max);
        }
    }
    if mode & 2 != 0 {
        // The peer hangs up: release everything the connection held.
        server.lost(key);
    }
    for k in server.closed() {
        server.remove(k);
    }
    round_trip(&mut server);
    // Once the fuzzed connection is gone too, nothing it did may linger.
    server.lost(key);
    for k in server.closed() {
        server.remove(k);
    }
    server.turn_without_io();
    assert!(server.conns.is_empty(), "a connection was not reaped");
}

/// Store recovery from arbitrary file contents. The input is split (at a point taken
/// from its first two bytes) into a message segment and its ack file; both are scanned
/// as pure functions, then written into a data directory next to a valid metadata
/// snapshot (queues 1 to 3) and opened by `Store::open`, which must not panic, must
/// recover only records of known queues, must leave the segment truncated to its valid
/// prefix, and must recover the same messages when opened again.
pub fn segment(data: &[u8]) {
    use crate::store::meta::{Meta, MetaQueue};
    use crate::store::segment::{self as seg, header, ACK_MAGIC, SEG_MAGIC};
    use crate::store::Store;

    let split = data
        .get(..2)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let rest = data.get(2..).unwrap_or(&[]);
    let split = split.min(rest.len());
    let (msgs, acks) = rest.split_at(split);

    // Pure scans over the raw bytes, with and without a valid header in front.
    for body in [msgs, acks] {
        let _ = seg::scan_segment(&Bytes::copy_from_slice(body));
        let _ = seg::scan_acks(body);
        let _ = Meta::decode(&Bytes::copy_from_slice(body));
    }
    let mut seg_file = header(SEG_MAGIC).to_vec();
    seg_file.extend_from_slice(msgs);
    let (records, valid) = seg::scan_segment(&Bytes::from(seg_file.clone()));
    assert!(valid <= seg_file.len());
    assert!(records.iter().all(|r| (r.offset as usize) < valid));
    let mut ack_file = header(ACK_MAGIC).to_vec();
    ack_file.extend_from_slice(acks);

    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("warren-fuzz-store-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let meta = Meta {
        next_queue_id: 4,
        queues: (1..=3)
            .map(|id| MetaQueue {
                vhost: Bytes::from_static(b"/"),
                name: Bytes::from(format!("q{id}")),
                id,
                auto_delete: false,
                arguments: segment_queue_arguments(id),
            })
            .collect(),
        ..Default::default()
    };
    meta.write_atomically(&dir).expect("meta");
    std::fs::write(dir.join("msgs.0000000001"), &seg_file).expect("segment");
    std::fs::write(dir.join("acks.0000000001"), &ack_file).expect("acks");

    let first = {
        let (_store, _meta, rec) =
            Store::open(&dir).expect("a damaged tail must not stop recovery");
        for r in &rec {
            assert!(!r.queues.is_empty());
            assert!(r.queues.iter().all(|(q, _)| (1..=3).contains(q)));
        }
        let on_disk =
            std::fs::metadata(dir.join("msgs.0000000001")).map_or(0, |m| m.len() as usize);
        if !rec.is_empty() {
            assert_eq!(on_disk, valid, "the torn tail is truncated away");
        }
        rec.iter()
            .map(|r| (r.location, r.queues.clone(), r.record.body.clone()))
            .collect::<Vec<_>>()
    };
    let (_store, _meta, rec) = Store::open(&dir).expect("reopen");
    let second: Vec<_> = rec
        .iter()
        .map(|r| (r.location, r.queues.clone(), r.record.body.clone()))
        .collect();
    assert_eq!(first, second, "recovery is idempotent");
    drop(_store);
    // The broker's side of recovery (`Broker::recover`: messages back into their
    // queues, records of kinds 4-7 waiting to be dead-lettered again) must not panic.
    assert!(open_data_dir(&dir), "a data dir Store::open opened");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The arguments of queue `id` in [`segment`]'s data directory: 1 classic, 2 classic
/// dead-lettering to `amq.fanout`, 3 a quorum queue dead-lettering at-least-once (what
/// records of kinds 4-7 are for).
fn segment_queue_arguments(id: u32) -> FieldTable {
    use crate::proto::FieldValue;
    let s = |v: &'static [u8]| FieldValue::LongStr(Bytes::from_static(v));
    let mut t = FieldTable::new();
    if id >= 2 {
        t.insert(
            Bytes::from_static(b"x-dead-letter-exchange"),
            s(b"amq.fanout"),
        );
    }
    if id == 3 {
        t.insert(Bytes::from_static(b"x-queue-type"), s(b"quorum"));
        t.insert(
            Bytes::from_static(b"x-dead-letter-strategy"),
            s(b"at-least-once"),
        );
        t.insert(Bytes::from_static(b"x-overflow"), s(b"reject-publish"));
    }
    t
}

/// Definitions import (`POST /api/definitions`, issue 10): `data` is the file.
/// [`crate::mgmt::definitions::parse_definitions`] must not panic and must refuse only
/// with a 400; the same bytes posted to a fresh memory-only server must answer 204 or
/// a 4xx, never panic or 5xx, and a refused file must change nothing (the export
/// before and after is the same, users with their stored hashes, permissions, topic
/// permissions and limits included). An accepted file, exported and imported again,
/// must be accepted (Warren's export is a valid file).
pub fn definitions(data: &[u8]) {
    use crate::http::conn::Service;
    use crate::http::Request;
    use crate::mgmt::{self, definitions::parse_definitions};

    if let Err(e) = parse_definitions(data) {
        assert_eq!(e.status, 400, "{e:?}");
    }
    let mut server = Server::new(Config::default());
    let auth = format!("Basic {}", mgmt::base64_encode(b"guest:guest"));
    let request = |method: &str, body: Bytes| Request {
        method: method.to_owned(),
        path: "/api/definitions".to_owned(),
        headers: vec![
            ("authorization".to_owned(), auth.clone()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ],
        body,
        ..Default::default()
    };
    let export = |server: &mut Server| {
        let r = mgmt::handle(
            server,
            Service::Management,
            &request("GET", Bytes::new()),
            peer(),
        );
        assert_eq!(r.status, 200);
        serde_json::from_slice::<serde_json::Value>(&r.body).expect("the export is JSON")
    };
    let before = export(&mut server);
    let r = mgmt::handle(
        &mut server,
        Service::Management,
        &request("POST", Bytes::copy_from_slice(data)),
        peer(),
    );
    assert!(
        r.status == 204 || (400..500).contains(&r.status),
        "status {}",
        r.status
    );
    if r.status != 204 {
        assert_eq!(
            before,
            export(&mut server),
            "a refused file changed something"
        );
        return;
    }
    // The file may have taken guest's password, tags or permissions away: give them
    // back so that the export and its re-import can be asked for as guest.
    let guest = crate::auth::Credential::Password(b"guest".to_vec());
    let _ = server
        .auth
        .put_user("guest", guest, vec!["administrator".to_owned()]);
    let vhosts: Vec<String> = server
        .broker
        .vhosts()
        .map(|(_, v)| v.name.to_string())
        .collect();
    for v in vhosts {
        server
            .auth
            .set_permissions("guest", &v, crate::auth::Permissions::full());
    }
    let out = mgmt::handle(
        &mut server,
        Service::Management,
        &request("GET", Bytes::new()),
        peer(),
    );
    assert_eq!(out.status, 200);
    let again = mgmt::handle(
        &mut server,
        Service::Management,
        &request("POST", Bytes::from(out.body)),
        peer(),
    );
    assert_eq!(again.status, 204, "Warren's own export was refused");
}

/// What reading a byte stream with a [`crate::http::RequestReader`] gave: the requests
/// (their parts as comparable values) and how it ended (an error, or more bytes needed).
type HttpOutcome = (
    Vec<(
        String,
        String,
        Vec<(String, String)>,
        Vec<(String, String)>,
        Bytes,
        bool,
    )>,
    Option<crate::http::HttpError>,
);

/// Feeds `input` to a fresh reader in pieces (cut at the offsets in `cuts`), taking
/// every complete request after each piece, until the input ends or an error.
fn http_read(limits: crate::http::Limits, input: &[u8], cuts: &[usize]) -> HttpOutcome {
    let mut reader = crate::http::RequestReader::new(limits);
    let mut buf = BytesMut::new();
    let mut reqs = Vec::new();
    let mut start = 0;
    let ends = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < input.len())
        .chain(std::iter::once(input.len()));
    for end in ends {
        if end < start {
            continue;
        }
        buf.extend_from_slice(&input[start..end]);
        start = end;
        loop {
            match reader.next(&mut buf) {
                Ok(Some(r)) => {
                    assert!(r.path.starts_with('/'), "a path that is not absolute");
                    assert!(!r.method.is_empty());
                    assert!(r.body.len() <= limits.max_body, "body over the limit");
                    assert!(r.headers.len() <= limits.max_headers);
                    assert!(r
                        .headers
                        .iter()
                        .all(|(n, _)| !n.bytes().any(|b| b.is_ascii_uppercase())));
                    // The helpers the router uses must not panic either.
                    let _ = r.segments();
                    let _ = r.param("page");
                    let _ = r.header("authorization");
                    reqs.push((r.method, r.path, r.query, r.headers, r.body, r.close));
                }
                Ok(None) => break,
                Err(e) => {
                    assert!((400..600).contains(&e.status()));
                    return (reqs, Some(e));
                }
            }
        }
    }
    (reqs, None)
}

/// The HTTP request reader on arbitrary bytes. Byte 0 picks the limits (tight ones, so
/// that the head, header-count and body bounds are reached, or the defaults) and bytes
/// 1-2 seed the cut points; the rest is the stream. Read whole, one byte at a time and
/// in the seeded pieces, it must never panic, every request must respect the limits,
/// and the three readings must agree exactly (the same requests, the same error): what
/// a request means cannot depend on how TCP happened to segment it.
pub fn http_request(data: &[u8]) {
    use crate::http::Limits;

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (seed, input) = if rest.len() >= 2 {
        (u16::from_be_bytes([rest[0], rest[1]]), &rest[2..])
    } else {
        (0, rest)
    };
    let limits = if mode & 1 == 0 {
        Limits {
            max_head: 256,
            max_headers: 8,
            max_body: 512,
        }
    } else {
        Limits::default()
    };
    // Pieces of pseudo-random lengths (1 to 64 bytes) from the seed.
    let mut cuts = Vec::new();
    let mut x = u32::from(seed) | 1;
    let mut at = 0;
    while at < input.len() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        at += 1 + (x % 64) as usize;
        cuts.push(at);
    }
    let whole = http_read(limits, input, &[]);
    let pieces = http_read(limits, input, &cuts);
    assert_eq!(whole, pieces, "reading in pieces changed the outcome");
    if input.len() <= 1024 {
        let bytes: Vec<usize> = (1..input.len()).collect();
        let bytewise = http_read(limits, input, &bytes);
        assert_eq!(whole, bytewise, "reading byte by byte changed the outcome");
    }
}

/// The server configuration of [`tls_server`]: the fuzz-only certificate, TLS 1.2 and
/// 1.3, client certificates verified against that same certificate (optional), as
/// `--tls-ca` sets it up.
fn tls_config() -> std::sync::Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<std::sync::Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let cert = include_bytes!("../fuzz/tls/fuzz-only-cert.pem");
            let key = include_bytes!("../fuzz/tls/fuzz-only-key.pem");
            crate::net::tls::server_config_pem(cert, key, Some(cert))
                .expect("the fuzz certificate loads")
        })
        .clone()
}

/// The TLS listener's side on arbitrary bytes. Byte 0 picks what is fed: even, the
/// rest is what a client sent to the AMQPS port (a server session reads, decrypts and
/// answers it as the transport does; it must fail cleanly, never panic); odd, the rest
/// is a DER certificate whose subject SASL EXTERNAL would log in as (the DER walk and
/// RabbitMQ's DN formatting must not panic, and the DN must be non-empty text when the
/// subject has attributes).
pub fn tls_server(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        crate::net::tls::feed(tls_config(), rest);
    } else if let Some(subject) = crate::net::x509::subject(rest) {
        let dn = crate::net::x509::distinguished_name(&subject);
        if subject.iter().any(|rdn| !rdn.is_empty()) {
            assert!(dn.contains('='), "a DN without attributes: {dn:?}");
        }
        let _ = crate::net::x509::common_name(&subject);
    }
}

/// `data` with the length and CRC-32 of its header (at `len_at`, then the CRC) made to
/// cover everything after `header` bytes, so that mutated payloads get past the
/// checksum and reach the decoder; None when `data` is shorter than the header.
fn with_valid_checksum(data: &[u8], header: usize, len_at: usize) -> Option<Vec<u8>> {
    let payload = data.get(header..)?;
    let mut out = data.to_vec();
    let len = u32::try_from(payload.len()).ok()?;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    out[len_at + 4..len_at + 8].copy_from_slice(&crc32fast::hash(payload).to_be_bytes());
    Some(out)
}

/// A fresh data directory for one fuzz input (removed by the caller).
fn fuzz_dir(what: &str) -> std::path::PathBuf {
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("warren-fuzz-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Opens `dir` as `warren --data-dir` does ([`Server::with_store`]); when it opens, the
/// recovered broker must export its definitions (policies, arguments and all). Returns
/// whether it opened.
fn open_data_dir(dir: &std::path::Path) -> bool {
    use crate::http::conn::Service;
    use crate::http::Request;
    use crate::mgmt;

    let config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    let Ok(mut server) = Server::with_store(config) else {
        return false;
    };
    server.turn_without_io();
    // Whoever the file made a user, the export is asked for by a known administrator.
    let guest = crate::auth::Credential::Password(b"guest".to_vec());
    let _ = server
        .auth
        .put_user("guest", guest, vec!["administrator".to_owned()]);
    let request = Request {
        method: "GET".to_owned(),
        path: "/api/definitions".to_owned(),
        headers: vec![(
            "authorization".to_owned(),
            format!("Basic {}", mgmt::base64_encode(b"guest:guest")),
        )],
        ..Default::default()
    };
    let r = mgmt::handle(&mut server, Service::Management, &request, peer());
    assert_eq!(r.status, 200, "export of a recovered broker");
    true
}

/// The data directory's metadata file (`meta`, versions 1 to 4, see `store::meta`):
/// `data` is the file. It is decoded as it is and with its length and CRC fixed up (so
/// that mutations reach the payload decoder); a decoded snapshot must re-encode to a
/// file that decodes to the same snapshot, and encoding must be a fixed point. The
/// fixed-up file (a valid users file next to it) is then opened as a data directory
/// ([`Server::with_store`], then an export of the recovered definitions): it must open
/// exactly when the file decodes, and must not panic.
pub fn meta(data: &[u8]) {
    use crate::store::meta::Meta;

    let fixed = with_valid_checksum(data, 16, 8);
    let mut decoded = None;
    for file in std::iter::once(data).chain(fixed.as_deref()) {
        let Ok(m) = Meta::decode(&Bytes::copy_from_slice(file)) else {
            decoded = Some(false);
            continue;
        };
        decoded = Some(true);
        let e1 = m.encode().freeze();
        let mut m2 = Meta::decode(&e1).unwrap_or_else(|e| panic!("re-decoding {m:?}: {e}"));
        // A version 1 or 2 file has no vhost records; we always write version 4, whose
        // list is then empty (the broker never encodes a snapshot without vhosts).
        if m.vhosts.is_none() && m2.vhosts.as_ref().is_some_and(Vec::is_empty) {
            m2.vhosts = None;
        }
        if self_eq(&m) {
            assert_eq!(m, m2, "meta round trip");
        }
        assert_eq!(
            e1,
            m2.encode().freeze(),
            "meta encoding is not a fixed point"
        );
    }
    let file = fixed.as_deref().unwrap_or(data);
    let dir = fuzz_dir("meta");
    std::fs::write(dir.join("meta"), file).expect("meta");
    Server::new(Config::default())
        .auth
        .save(&dir)
        .expect("users");
    let opened = open_data_dir(&dir);
    assert_eq!(
        opened,
        decoded == Some(true),
        "opens exactly when meta decodes"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The users file (`users`, see `auth::store`): `data` is the file, decoded as it is and
/// with its length and CRC fixed up. A decoded file must re-encode to a file that
/// decodes and encodes to the same bytes. The fixed-up file is then opened as a data
/// directory (no `meta`): it must open exactly when it decodes, and must not panic.
pub fn users_file(data: &[u8]) {
    use crate::auth::Auth;

    let fixed = with_valid_checksum(data, 17, 9);
    let mut decoded = false;
    for file in std::iter::once(data).chain(fixed.as_deref()) {
        let Ok(a) = Auth::decode(file) else {
            decoded = false;
            continue;
        };
        decoded = true;
        let e1 = a.encode();
        let a2 = Auth::decode(&e1).unwrap_or_else(|e| panic!("re-decoding our users file: {e}"));
        assert_eq!(e1, a2.encode(), "users encoding is not a fixed point");
    }
    let file = fixed.as_deref().unwrap_or(data);
    let dir = fuzz_dir("users");
    std::fs::write(dir.join(crate::auth::USERS_FILE), file).expect("users");
    let opened = open_data_dir(&dir);
    assert_eq!(opened, decoded, "opens exactly when the users file decodes");
    let _ = std::fs::remove_dir_all(&dir);
}
