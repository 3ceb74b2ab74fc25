//! Consumers: basic.qos and basic.consume on a fresh connection, then the hot loop
//! that reads 256 KB at a time, walks the frames in place decoding only the delivery
//! tag and the body timestamp, records latency and writes the batched acks once per
//! read.
//!
//! Owns a consumer connection from its setup to its close. Also driven, without a
//! broker, by `--source` (see `self_test`).

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::thread::{self, JoinHandle};

use bytes::{Bytes, BytesMut};
use warren::proto::frame::{self, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};
use warren::proto::{basic, Method};

use crate::client::{check_close, Conn};
use crate::hist::{consumer_lat, Hist};
use crate::options::Opts;
use crate::shared::{fatal, io_text, now_nanos, CH, NO_TIMESTAMP, POLL, RECEIVED, STOP};

/// The consumer hot loop: walks deliveries in place; acks are batched per read.
pub fn consume(c: &mut Conn, autoack: bool, multi_ack: u64, reject: bool, hist: &Mutex<Hist>) {
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut tag: u64 = 0;
    let mut body_left: u64 = 0;
    let mut body_started = false;
    let mut unacked: u64 = 0;
    let multiple = multi_ack > 1;
    loop {
        match c.fill() {
            Ok(true) => {}
            Ok(false) => {
                if STOP.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(e) => {
                if STOP.load(Ordering::Relaxed) {
                    return;
                }
                fatal(e)
            }
        }
        if STOP.load(Ordering::Relaxed) {
            return;
        }
        let now = now_nanos();
        let mut got: u64 = 0;
        let mut h = hist.lock().unwrap();
        loop {
            let (fh, p) = match c.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => fatal(e),
            };
            let pl = &c.buf[p.clone()];
            match fh.kind {
                FRAME_METHOD => {
                    if pl.get(..4) == Some(&[0, 60, 0, 60]) {
                        let ctag_len = *pl.get(4).unwrap_or(&0) as usize;
                        let t = pl
                            .get(5 + ctag_len..13 + ctag_len)
                            .unwrap_or_else(|| fatal("short basic.deliver"));
                        tag = u64::from_be_bytes(t.try_into().unwrap());
                    } else {
                        match c.decode_method(p) {
                            Ok(m) => {
                                if let Err(e) = check_close(&m) {
                                    fatal(e)
                                }
                                if let Method::BasicCancel(_) = m {
                                    fatal("consumer cancelled by broker (queue deleted?)")
                                }
                            }
                            Err(e) => fatal(e),
                        }
                    }
                }
                FRAME_HEADER => {
                    body_left = pl
                        .get(4..12)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
                        .unwrap_or(0);
                    body_started = false;
                    if body_left == 0 {
                        got += 1;
                    }
                }
                FRAME_BODY => {
                    if !body_started {
                        body_started = true;
                        if let Some(ts) = pl.get(..8) {
                            let ts = u64::from_be_bytes(ts.try_into().unwrap());
                            if ts != NO_TIMESTAMP {
                                h.record(now.saturating_sub(ts));
                            }
                        }
                    }
                    body_left = body_left.saturating_sub(pl.len() as u64);
                    if body_left == 0 {
                        got += 1;
                        if reject {
                            let r = basic::Reject {
                                delivery_tag: tag,
                                requeue: false,
                            };
                            frame::write_method(&mut wbuf, CH, &Method::BasicReject(r));
                        } else if !autoack {
                            unacked += 1;
                            if unacked >= multi_ack {
                                frame::write_ack(&mut wbuf, CH, tag, multiple);
                                unacked = 0;
                            }
                        }
                    }
                }
                FRAME_HEARTBEAT => {}
                _ => {}
            }
        }
        drop(h);
        RECEIVED.fetch_add(got, Ordering::Relaxed);
        if !wbuf.is_empty() {
            if let Err(e) = c.stream.write_all(&wbuf) {
                if STOP.load(Ordering::Relaxed) {
                    return;
                }
                fatal(format!("write to {}: {}", c.peer, io_text(&e)));
            }
            wbuf.clear();
        }
    }
}

pub fn start_consumer(o: &Opts, q: &str, idx: usize) -> Result<JoinHandle<()>, String> {
    let mut c = Conn::open(&o.uri, &format!("warren-perf consumer {idx}"))?;
    if o.qos > 0 {
        c.rpc(
            CH,
            Method::BasicQos(basic::Qos {
                prefetch_count: o.qos,
                ..Default::default()
            }),
            |m| matches!(m, Method::BasicQosOk(_)),
        )?;
    }
    c.rpc(
        CH,
        Method::BasicConsume(basic::Consume {
            queue: Bytes::from(q.to_string()),
            consumer_tag: Bytes::from(format!("warren-perf-{idx}")),
            no_ack: o.autoack && !o.reject,
            ..Default::default()
        }),
        |m| matches!(m, Method::BasicConsumeOk(_)),
    )?;
    c.stream
        .set_read_timeout(Some(POLL))
        .map_err(|e| io_text(&e))?;
    let hist = consumer_lat().register();
    let (autoack, multi, reject) = (o.autoack && !o.reject, o.multi_ack, o.reject);
    thread::Builder::new()
        .name(format!("consumer-{idx}"))
        .spawn(move || {
            consume(&mut c, autoack, multi, reject, &hist);
            c.close();
        })
        .map_err(|e| e.to_string())
}
