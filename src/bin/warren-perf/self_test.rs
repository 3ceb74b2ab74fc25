//! Self-tests (`--sink`, `--source`): the tool's own ceilings against local TCP peers,
//! one that discards whatever producers write and one that replays pre-built
//! deliveries to consumers, so that a broker measurement can be told apart from a
//! limit of the tool.
//!
//! Owns the local peers; reuses the producer and consumer hot loops unchanged.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::thread;

use bytes::BytesMut;
use warren::proto::frame;
use warren::proto::BasicProperties;

use crate::client::Conn;
use crate::consumer::consume;
use crate::hist::consumer_lat;
use crate::options::Opts;
use crate::producer::{produce, publish_template, ProducerCfg};
use crate::report::{print_summary, report_loop, write_json};
use crate::shared::{
    fatal, io_text, now_nanos, BATCH_BYTES, CH, FRAME_MAX, POLL, PRODUCERS_DONE, STOP,
};

fn local_listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fatal(io_text(&e)));
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Accepts connections and discards everything they send.
fn spawn_discarder(l: TcpListener) {
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut b = vec![0u8; 1 << 20];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
}

/// A buffer of whole deliveries (deliver + header + body frames), about 256 KB,
/// with the size of one delivery and where its body timestamp sits.
fn deliveries_buffer(o: &Opts) -> (Vec<u8>, usize, usize) {
    let mut one = BytesMut::new();
    let props = BasicProperties::default().to_raw();
    let body = vec![0u8; o.size];
    let mut out = Vec::new();
    let mut tag = 1u64;
    let mut ts_at = 0;
    while out.len() < BATCH_BYTES {
        one.clear();
        frame::write_deliver(
            &mut one,
            CH,
            b"warren-perf-0",
            tag,
            false,
            o.exchange.as_bytes(),
            o.routing_key.as_bytes(),
        );
        frame::write_content_header(&mut one, CH, o.size as u64, &props);
        ts_at = one.len() + 7;
        frame::write_body(&mut one, CH, &body, FRAME_MAX);
        out.extend_from_slice(&one);
        tag += 1;
    }
    (out, one.len(), ts_at)
}

/// Runs `--sink` or `--source` for `-z` seconds (5 by default) and prints the summary.
pub fn run(o: &Opts) {
    let d = o.duration.unwrap_or(5.0);
    let o = Opts {
        duration: Some(d),
        ..o.clone()
    };
    let mut handles = Vec::new();
    if o.sink {
        let (l, port) = local_listener();
        spawn_discarder(l);
        for i in 0..o.producers {
            let (s, _) = Conn::tcp("127.0.0.1", port).unwrap_or_else(|e| fatal(e));
            let mut s = crate::tls::Stream::Tcp(s);
            let _ = s.set_nodelay(true);
            let (template, ts_at) = publish_template(&o, &o.routing_key_for(i), FRAME_MAX);
            let cfg = ProducerCfg {
                template,
                ts_at,
                rate: o.rate,
                count: o.count,
                window: 0,
                no_ts: false,
                priority_random: o.priority_random,
            };
            handles.push(thread::spawn(move || {
                let _ = produce(&mut s, &cfg, None, true);

                PRODUCERS_DONE.fetch_add(1, Ordering::SeqCst);
            }));
        }
    }
    if o.source {
        let (l, port) = local_listener();
        let (buf, per, ts_at) = deliveries_buffer(&o);
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = buf.clone();
                // Discard the acks on a clone, replay deliveries on this one.
                if let Ok(mut r) = s.try_clone() {
                    thread::spawn(move || {
                        let mut b = vec![0u8; 1 << 16];
                        while matches!(r.read(&mut b), Ok(n) if n > 0) {}
                    });
                }
                thread::spawn(move || {
                    while !STOP.load(Ordering::Relaxed) {
                        // Stamp like a producer would, so latency means time in flight.
                        let ts = now_nanos().to_be_bytes();
                        for at in (ts_at..buf.len()).step_by(per) {
                            buf[at..at + 8].copy_from_slice(&ts);
                        }
                        if s.write_all(&buf).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        for i in 0..o.consumers {
            let (s, peer) = Conn::tcp("127.0.0.1", port).unwrap_or_else(|e| fatal(e));
            let mut c = Conn::from_stream(crate::tls::Stream::Tcp(s), peer);
            let _ = c.stream.set_read_timeout(Some(POLL));
            let hist = consumer_lat().register();
            let (autoack, multi) = (o.autoack, o.multi_ack);
            handles.push(
                thread::Builder::new()
                    .name(format!("consumer-{i}"))
                    .spawn(move || consume(&mut c, autoack, multi, false, &hist))
                    .unwrap(),
            );
        }
    }
    let o2 = Opts {
        count: 0,
        confirm: 0,
        ..o.clone()
    };
    let t = report_loop(&o2, None, 0);
    for h in handles {
        let _ = h.join();
    }
    print_summary(&o2, &t);
    if let Some(p) = &o.json {
        write_json(p, &o2, &t);
    }
}
