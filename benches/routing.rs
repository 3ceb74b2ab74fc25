//! Routing micro-benchmarks: topic match against 10k bindings, headers match, routing
//! one publish to 1, 10 and 100 queues through the broker, and a queue's enqueue + take
//! (classic, and priority with 10 levels). `cargo bench --bench routing`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use warren::broker::exchange::headers;
use warren::broker::exchange::topic::TopicTrie;
use warren::broker::{Broker, Dest, ExchangeDecl, QueueDecl, QueueId, VhostId};

const ROOT: VhostId = VhostId::DEFAULT;
use bytes::BytesMut;
use warren::config::Config;
use warren::message::Message;
use warren::proto::{basic, channel, connection, exchange, frame, FieldTable, FieldValue, Method};
use warren::server::Server;

fn topic(c: &mut Criterion) {
    let mut t = TopicTrie::new();
    let words = [
        "stock", "usd", "eur", "nyse", "lse", "tech", "bank", "a", "b", "c",
    ];
    let mut n = 0u32;
    'outer: for a in words {
        for b in words {
            for c2 in words {
                for d in ["*", "#", "x", "y", "z", "w", "v", "u", "t", "s"] {
                    t.insert(format!("{a}.{b}.{c2}.{d}").as_bytes(), n);
                    n += 1;
                    if n == 10_000 {
                        break 'outer;
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    c.bench_function("topic match, 10k bindings", |b| {
        b.iter(|| {
            out.clear();
            t.matches(black_box(b"stock.usd.nyse.x"), &mut out);
            black_box(out.len())
        })
    });
}

fn headers_match(c: &mut Criterion) {
    let s = |v: &'static str| FieldValue::LongStr(Bytes::from_static(v.as_bytes()));
    let mut args = FieldTable::new();
    args.insert(Bytes::from_static(b"x-match"), s("all"));
    args.insert(Bytes::from_static(b"format"), s("pdf"));
    args.insert(Bytes::from_static(b"type"), s("report"));
    let mut h = FieldTable::new();
    h.insert(Bytes::from_static(b"format"), s("pdf"));
    h.insert(Bytes::from_static(b"type"), s("report"));
    h.insert(Bytes::from_static(b"other"), FieldValue::I32(3));
    c.bench_function("headers match, 2 keys all", |b| {
        b.iter(|| headers::matches(black_box(&args), black_box(&h)))
    });
}

/// A broker with a fanout exchange "fan" bound to `n` queues.
fn fanout_broker(n: usize) -> (Broker, Vec<QueueId>) {
    let mut broker = Broker::new();
    broker
        .declare_exchange(
            ROOT,
            &ExchangeDecl {
                name: Bytes::from_static(b"fan"),
                kind: Bytes::from_static(b"fanout"),
                passive: false,
                durable: false,
                auto_delete: false,
                internal: false,
                arguments: FieldTable::new(),
            },
        )
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let d = QueueDecl::named(format!("q{i}"));
        let q = broker.declare_queue(ROOT, &d, 0, |_| Ok(())).unwrap().id;
        broker
            .bind(
                ROOT,
                b"fan",
                Dest::Queue(q),
                Bytes::new(),
                FieldTable::new(),
            )
            .unwrap();
        ids.push(q);
    }
    (broker, ids)
}

/// Empties the queues every 10,000 iterations so memory stays flat.
fn drain_now_and_then(broker: &mut Broker, ids: &[QueueId], count: &mut u32) {
    *count += 1;
    if *count == 10_000 {
        *count = 0;
        for &q in ids {
            broker.purge(q);
        }
        let mut d = Vec::new();
        broker.take_dirty(&mut d);
        for q in d {
            broker.undirty(q);
        }
    }
}

fn route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route+enqueue");
    for n in [1usize, 10, 100] {
        let (mut broker, ids) = fanout_broker(n);
        let x = broker.publish_target(ROOT, b"fan").unwrap();
        let msg = Message::new(b"fan", b"k", &[0, 0], Bytes::from_static(&[1; 16]), None);
        let props = Bytes::from_static(&[0, 0]);
        let mut out = Vec::new();
        let mut count = 0u32;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                broker.route(x, msg.routing_key(), &props, &mut out);
                for &q in &out {
                    broker.enqueue(q, msg.clone());
                }
                drain_now_and_then(&mut broker, &ids, &mut count);
            })
        });
    }
    g.finish();
}

/// The whole per-publish broker work of a transient 16-byte message, as a channel does
/// it with its exchange cached: `Broker::publish` routes, (no store: persists nothing),
/// builds the message and enqueues it into every routed queue.
fn publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish");
    for n in [1usize, 10] {
        let (mut broker, ids) = fanout_broker(n);
        let x = broker.publish_target(ROOT, b"fan").unwrap();
        let props = Bytes::from_static(&[0, 0]);
        let body = Bytes::from_static(&[1; 16]);
        let mut count = 0u32;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                black_box(broker.publish(x, b"fan", b"k", props.clone(), body.clone(), u64::MAX));
                drain_now_and_then(&mut broker, &ids, &mut count);
            })
        });
    }
    g.finish();
}

/// One enqueue and one take on a queue holding 1,000 messages: a classic queue, and a
/// priority queue (`x-max-priority` 9) fed messages with priorities 0..9 in a shuffled
/// cycle (the queue kind's per-message work: the level read from the properties, the
/// level's deque, the bitmap).
fn queue_push_pop(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue push+pop");
    for (label, max) in [("classic", None), ("priority 10 levels", Some(9i64))] {
        let mut broker = Broker::new();
        let mut d = QueueDecl::named("q");
        if let Some(max) = max {
            d.arguments
                .insert(Bytes::from_static(b"x-max-priority"), FieldValue::I64(max));
        }
        let q = broker.declare_queue(ROOT, &d, 0, |_| Ok(())).unwrap().id;
        let msgs: Vec<Message> = [3u8, 7, 0, 9, 5, 1, 8, 2, 6, 4]
            .iter()
            .map(|&p| {
                let props = warren::proto::BasicProperties {
                    priority: max.map(|_| p),
                    ..Default::default()
                }
                .to_raw();
                Message::new(b"", b"q", &props, Bytes::from_static(&[1; 16]), None)
            })
            .collect();
        for i in 0..1000 {
            broker.enqueue(q, msgs[i % msgs.len()].clone());
        }
        let mut i = 0;
        g.bench_function(label, |b| {
            b.iter(|| {
                broker.enqueue(q, msgs[i].clone());
                i = (i + 1) % msgs.len();
                black_box(broker.queue_mut(q).and_then(|q| q.next_delivery()));
            })
        });
    }
    g.finish();
}

/// Building a queued message from a publish: one allocation, the small parts copied in
/// (the per-publish cost of the compact representation, see `message.rs`).
fn message_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("message_build");
    for size in [16usize, 512, 4096] {
        let body = Bytes::from(vec![1u8; size]);
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                black_box(Message::new(
                    b"amq.direct",
                    b"perf-test-queue",
                    &[0x10, 0, 2],
                    black_box(&body).clone(),
                    None,
                ))
            })
        });
    }
    g.finish();
}

/// A connection logged in as guest with channel 1 open, through the in-process driver.
fn channel_server() -> (Server, usize) {
    let mut server = Server::new(Config::default());
    let key = server.open("127.0.0.1:40000".parse().unwrap(), None);
    server.feed(key, frame::PROTOCOL_HEADER);
    let mut b = BytesMut::new();
    let start_ok = connection::StartOk {
        client_properties: FieldTable::new(),
        mechanism: Bytes::from_static(b"PLAIN"),
        response: Bytes::from_static(b"\0guest\0guest"),
        locale: Bytes::from_static(b"en_US"),
    };
    frame::write_method(&mut b, 0, &Method::ConnectionStartOk(start_ok));
    let tune = connection::TuneOk {
        channel_max: 2047,
        frame_max: 131_072,
        heartbeat: 0,
    };
    frame::write_method(&mut b, 0, &Method::ConnectionTuneOk(tune));
    let open = connection::Open {
        virtual_host: Bytes::from_static(b"/"),
        ..Default::default()
    };
    frame::write_method(&mut b, 0, &Method::ConnectionOpen(open));
    frame::write_method(&mut b, 1, &Method::ChannelOpen(channel::Open::default()));
    let decl = exchange::Declare {
        exchange: Bytes::from_static(b"bench-x"),
        kind: Bytes::from_static(b"fanout"),
        ..Default::default()
    };
    frame::write_method(&mut b, 1, &Method::ExchangeDeclare(decl));
    let out = server.feed(key, &b);
    assert!(!out.is_empty(), "no answer to the handshake");
    (server, key)
}

/// The channel's whole publish path (frames parsed, content assembled, the exchange's
/// permission and lookup cached on the channel, routed): 100 transient 16-byte
/// messages to an exchange without bindings (dropped), fed in one read.
fn channel_publish(c: &mut Criterion) {
    let (mut server, key) = channel_server();
    let mut wire = BytesMut::new();
    for _ in 0..100 {
        let p = basic::Publish {
            exchange: Bytes::from_static(b"bench-x"),
            routing_key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        frame::write_method(&mut wire, 1, &Method::BasicPublish(p));
        frame::write_content_header(&mut wire, 1, 16, &[0, 0]);
        frame::write_body(&mut wire, 1, &[1; 16], 131_072);
    }
    let wire = wire.freeze();
    c.bench_function("channel publish, 100 x 16 B, exchange cached", |b| {
        b.iter(|| black_box(server.feed(key, &wire).len()))
    });
}

criterion_group!(
    benches,
    topic,
    headers_match,
    route,
    publish,
    message_build,
    queue_push_pop,
    channel_publish
);
criterion_main!(benches);
