//! Codec micro-benchmarks: decoding and encoding one frame, and a delivery's encode.
//! `cargo bench --bench codec`; criterion prints the time per operation.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use warren::proto::{basic, frame, ContentHeader, Method};

fn publish_frames(body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    let p = basic::Publish {
        exchange: Bytes::from_static(b"amq.direct"),
        routing_key: Bytes::from_static(b"perf.key"),
        ..Default::default()
    };
    frame::write_method(&mut b, 1, &Method::BasicPublish(p));
    frame::write_content_header(&mut b, 1, body.len() as u64, &[0x10, 0, 2]);
    frame::write_body(&mut b, 1, body, 131_072);
    b
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(3));
    let wire = publish_frames(&[7u8; 16]).freeze();
    g.bench_function("publish+header+body (3 frames)", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Ok(Some(h)) = frame::parse(&wire[at..], 131_072) {
                let payload = wire.slice(at + 7..at + 7 + h.size as usize);
                match h.kind {
                    frame::FRAME_METHOD => {
                        black_box(Method::decode(&payload).ok());
                    }
                    frame::FRAME_HEADER => {
                        black_box(ContentHeader::parse(&payload).ok());
                    }
                    _ => {
                        black_box(payload);
                    }
                }
                at += h.total_len();
            }
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let mut buf = BytesMut::with_capacity(1 << 20);
    let body = [7u8; 16];
    g.bench_function("deliver+header+body (16 B)", |b| {
        b.iter(|| {
            if buf.len() > (1 << 19) {
                buf.clear();
            }
            frame::write_deliver(
                &mut buf,
                1,
                b"amq.ctag-1",
                42,
                false,
                b"amq.direct",
                b"perf.key",
            );
            frame::write_content_header(&mut buf, 1, body.len() as u64, &[0x10, 0, 2]);
            frame::write_body(&mut buf, 1, &body, 131_072);
        })
    });
    g.bench_function("basic.ack method frame", |b| {
        b.iter(|| {
            if buf.len() > (1 << 19) {
                buf.clear();
            }
            frame::write_ack(&mut buf, 1, black_box(42), true);
        })
    });
    g.bench_function("basic.publish via Method::encode", |b| {
        let p = Method::BasicPublish(basic::Publish {
            exchange: Bytes::from_static(b"amq.direct"),
            routing_key: Bytes::from_static(b"perf.key"),
            ..Default::default()
        });
        b.iter(|| {
            if buf.len() > (1 << 19) {
                buf.clear();
            }
            frame::write_method(&mut buf, 1, black_box(&p));
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
