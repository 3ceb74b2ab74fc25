//! Producers: the pre-built publish template, the hot loop that writes batches of it
//! patching only the timestamps (rate limit, `-C` count and confirm window applied
//! per batch), the reader thread that counts confirms, nacks and returns, and the
//! confirm bookkeeping the two share. With `--priority-random` the loop also patches
//! each message's `priority` byte from a xorshift generator.
//!
//! Owns a producer connection from its setup (confirm.select) to its close. The hot
//! loop allocates nothing per message: one buffer of whole publishes is built once.

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren::proto::frame::{self, FRAME_METHOD};
use warren::proto::{basic, confirm, BasicProperties, Method};

use crate::client::{check_close, normal_close, Conn};
use crate::hist::{confirm_lat, Hist};
use crate::options::Opts;
use crate::shared::{
    fatal, io_text, is_timeout, now_nanos, BATCH_BYTES, CH, CONFIRMED, NACKED, NO_TIMESTAMP, POLL,
    PRODUCERS_DONE, RETURNED, SENT, STOP,
};
use crate::tls::Stream;

/// Where a template's `priority` byte sits, from its timestamp's offset: the priority is
/// the last property present (only delivery-mode may come before it), so it is the last
/// byte of the content header's payload, before that frame's end octet and the body
/// frame's 7-byte header.
pub const PRIORITY_BEFORE_TS: usize = 9;

/// The bytes of one publish (method, header and body frames) and where the body's
/// timestamp sits in them. With `--priority-random` the header carries a priority
/// (0 here; patched per message at `ts_at - PRIORITY_BEFORE_TS`).
pub fn publish_template(o: &Opts, routing_key: &str, frame_max: u32) -> (Vec<u8>, usize) {
    let mut b = BytesMut::new();
    frame::write_method(
        &mut b,
        CH,
        &Method::BasicPublish(basic::Publish {
            ticket: 0,
            exchange: Bytes::from(o.exchange.clone()),
            routing_key: Bytes::from(routing_key.to_string()),
            mandatory: o.mandatory,
            immediate: false,
        }),
    );
    let props = BasicProperties {
        delivery_mode: o.persistent.then_some(2),
        priority: (o.priority_random > 0).then_some(0),
        ..Default::default()
    }
    .to_raw();
    frame::write_content_header(&mut b, CH, o.size as u64, &props);
    let ts_at = b.len() + 7;
    let mut body = vec![0u8; o.size];
    body[8..12].copy_from_slice(b"wrn!");
    frame::write_body(&mut b, CH, &body, frame_max);
    (b.to_vec(), ts_at)
}

/// Confirm bookkeeping shared by a producer and its reader thread.
pub struct Confirms {
    inner: Mutex<ConfirmInner>,
    /// Messages acked or nacked so far (a count, not a tag).
    done: AtomicU64,
    producer: OnceLock<thread::Thread>,
}

#[derive(Default)]
struct ConfirmInner {
    /// (first seq, last seq, send time) per batch, oldest first.
    batches: VecDeque<(u64, u64, u64)>,
    /// Every tag <= watermark is confirmed.
    watermark: u64,
    /// Confirmed tags above the watermark (single acks out of order).
    singles: BTreeSet<u64>,
    done: u64,
}

impl Confirms {
    fn new() -> Confirms {
        Confirms {
            inner: Mutex::new(ConfirmInner::default()),
            done: AtomicU64::new(0),
            producer: OnceLock::new(),
        }
    }

    /// Records an ack or nack of `tag` (`multiple`: and of every tag below). Adds the
    /// messages it settles to `total` (the run's confirmed or nacked count) *before*
    /// publishing them in `done`: the producer calls itself done when `done` reaches what
    /// it sent, and the run's summary, read right after, must already count them.
    fn confirm(&self, tag: u64, multiple: bool, now: u64, hist: &mut Hist, total: &AtomicU64) {
        let mut g = self.inner.lock().unwrap();
        let i = &mut *g;
        if tag <= i.watermark {
            return;
        }
        let before = i.done;
        if multiple {
            let above: Vec<u64> = i.singles.range(..=tag).copied().collect();
            i.done += tag - i.watermark - above.len() as u64;
            for t in above {
                i.singles.remove(&t);
            }
            i.watermark = tag;
        } else if i.singles.insert(tag) {
            i.done += 1;
        }
        while i.singles.remove(&(i.watermark + 1)) {
            i.watermark += 1;
        }
        while let Some(&(first, last, ts)) = i.batches.front() {
            if last <= i.watermark {
                hist.record_n(now.saturating_sub(ts), last - first + 1);
                i.batches.pop_front();
            } else {
                if first <= i.watermark {
                    hist.record_n(now.saturating_sub(ts), i.watermark - first + 1);
                    i.batches.front_mut().unwrap().0 = i.watermark + 1;
                }
                break;
            }
        }
        total.fetch_add(i.done - before, Ordering::Relaxed);
        self.done.store(i.done, Ordering::Release);
        drop(g);
        if let Some(t) = self.producer.get() {
            t.unpark();
        }
    }
}

pub struct ProducerCfg {
    pub template: Vec<u8>,
    pub ts_at: usize,
    pub rate: f64,
    pub count: u64,
    pub window: u64,
    /// Pre-fill: no timestamps, no latency.
    pub no_ts: bool,
    /// `--priority-random N`: patch each message's priority with a value in 0..N
    /// (0: the template has no priority).
    pub priority_random: u16,
}

/// xorshift64: a cheap generator for random priorities (not for anything else).
#[inline]
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// The producer hot loop: writes batches of pre-built publishes, patching only the
/// timestamps. Returns the number sent.
pub fn produce(
    stream: &mut Stream,
    cfg: &ProducerCfg,
    confirms: Option<&Confirms>,
    count_global: bool,
) -> Result<(u64, bool), String> {
    let per = cfg.template.len();
    let max_batch = (BATCH_BYTES / per).max(1);
    let mut buf = cfg.template.repeat(max_batch);
    let started = Instant::now();
    let tick = Duration::from_millis(1);
    let mut sent: u64 = 0;
    // Any non-zero seed; differs per producer thread so they do not publish in step.
    let mut rng = now_nanos() | 1;
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    loop {
        if STOP.load(Ordering::Relaxed) {
            break;
        }
        let mut n = max_batch as u64;
        if cfg.count > 0 {
            n = n.min(cfg.count - sent);
            if n == 0 {
                break;
            }
        }
        if let Some(c) = confirms {
            if cfg.window > 0 {
                let outstanding = sent - c.done.load(Ordering::Acquire);
                if outstanding >= cfg.window {
                    thread::park_timeout(Duration::from_millis(10));
                    continue;
                }
                n = n.min(cfg.window - outstanding);
            }
        }
        if cfg.rate > 0.0 {
            let due = (started.elapsed().as_secs_f64() * cfg.rate) as u64;
            if due <= sent {
                // Sleep until the next message is due, but send at most every tick.
                let next = started + Duration::from_secs_f64((sent + 1) as f64 / cfg.rate);
                let wake = next.max(Instant::now() + tick);
                thread::sleep(wake.saturating_duration_since(Instant::now()));
                continue;
            }
            n = n.min(due - sent);
        }
        let ts = if cfg.no_ts { NO_TIMESTAMP } else { now_nanos() };
        let tsb = ts.to_be_bytes();
        let n_us = n as usize;
        for k in 0..n_us {
            let at = k * per + cfg.ts_at;
            buf[at..at + 8].copy_from_slice(&tsb);
        }
        if cfg.priority_random > 0 {
            let n = u64::from(cfg.priority_random);
            for k in 0..n_us {
                // The high half: xorshift's low bits are its weakest.
                let p = (xorshift(&mut rng) >> 32) % n;
                buf[k * per + cfg.ts_at - PRIORITY_BEFORE_TS] = p as u8;
            }
        }
        if let Some(c) = confirms {
            c.inner
                .lock()
                .unwrap()
                .batches
                .push_back((sent + 1, sent + n, ts));
        }
        match write_until_stop(stream, &buf[..n_us * per]) {
            Ok(Wrote::All) => {}
            Ok(w) => return Ok((sent, w == Wrote::StoppedClean)),
            Err(e) => return Err(format!("write to {peer}: {}", io_text(&e))),
        }
        sent += n;
        if count_global {
            SENT.fetch_add(n, Ordering::Relaxed);
        }
    }
    Ok((sent, true))
}

/// How a batch write ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wrote {
    All,
    /// The run stopped before any byte of the batch was written.
    StoppedClean,
    /// The run stopped and the broker would not take the rest of a batch within
    /// two seconds: the stream ends inside a frame.
    StoppedDirty,
}

/// Writes all of `b` to a socket that has a write timeout, giving up once the run
/// is stopping, so that a broker applying back-pressure cannot hang the end of the
/// run; a batch already begun is finished if the broker takes it within 2 s.
fn write_until_stop(s: &mut Stream, mut b: &[u8]) -> io::Result<Wrote> {
    let total = b.len();
    let mut deadline: Option<Instant> = None;
    while !b.is_empty() {
        match s.write(b) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => b = &b[n..],
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                if STOP.load(Ordering::Relaxed) {
                    if b.len() == total {
                        return Ok(Wrote::StoppedClean);
                    }
                    let d =
                        *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
                    if Instant::now() >= d {
                        return Ok(Wrote::StoppedDirty);
                    }
                }
            }
            Err(_) if STOP.load(Ordering::Relaxed) => return Ok(Wrote::StoppedDirty),
            Err(e) => return Err(e),
        }
    }
    Ok(Wrote::All)
}

/// The reader half of a producer connection: confirms, returns, closes.
fn producer_reader(mut c: Conn, confirms: Arc<Confirms>, hist: Arc<Mutex<Hist>>) {
    let mut stopping: Option<Instant> = None;
    loop {
        let now = now_nanos();
        loop {
            let f = match c.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => fatal(e),
            };
            let (h, p) = f;
            if h.kind != FRAME_METHOD {
                continue; // content of a basic.return, heartbeats
            }
            let pl = &c.buf[p.clone()];
            match pl.get(..4) {
                Some([0, 60, 0, 80]) | Some([0, 60, 0, 120]) if pl.len() >= 13 => {
                    let tag = u64::from_be_bytes(pl[4..12].try_into().unwrap());
                    let multiple = pl[12] & 1 != 0;
                    let total = if pl[3] == 80 { &CONFIRMED } else { &NACKED };
                    confirms.confirm(tag, multiple, now, &mut hist.lock().unwrap(), total);
                }
                Some([0, 60, 0, 50]) => {
                    RETURNED.fetch_add(1, Ordering::Relaxed);
                }
                Some([0, 10, 0, 51]) => return, // close-ok: we are done
                _ => {
                    match c.decode_method(p) {
                        Ok(m) => {
                            if let Err(e) = check_close(&m) {
                                // A channel.close answers one of our publishes, however
                                // late it arrives (it comes before our close's close-ok):
                                // a run of a few messages may be "over" before it is read.
                                let ours = matches!(m, Method::ChannelClose(_));
                                if STOP.load(Ordering::Relaxed) && !ours {
                                    return; // the run is over; the summary stands
                                }
                                fatal(e);
                            }
                            if let Method::ConnectionBlocked(b) = &m {
                                eprintln!(
                                    "warren-perf: note: connection blocked by broker: {}",
                                    String::from_utf8_lossy(&b.reason)
                                );
                            }
                        }
                        Err(e) => fatal(e),
                    }
                }
            }
        }
        if STOP.load(Ordering::Relaxed) {
            let t = *stopping.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(3) {
                return;
            }
        }
        match c.fill() {
            Ok(_) => {}
            Err(_) if STOP.load(Ordering::Relaxed) => return,
            Err(e) => fatal(e),
        }
    }
}

/// Starts one producer connection; returns its thread.
pub fn spawn_producer(
    o: &Opts,
    idx: usize,
    count: u64,
    rate: f64,
    window: u64,
    no_ts: bool,
    count_global: bool,
) -> Result<JoinHandle<u64>, String> {
    let mut c = Conn::open(&o.uri, &format!("warren-perf producer {idx}"))?;
    if window > 0 {
        c.rpc(CH, Method::ConfirmSelect(confirm::Select::default()), |m| {
            matches!(m, Method::ConfirmSelectOk(_))
        })?;
    }
    c.stream
        .set_read_timeout(Some(POLL))
        .map_err(|e| io_text(&e))?;
    let (template, ts_at) = publish_template(o, &o.routing_key_for(idx), c.frame_max);
    let cfg = ProducerCfg {
        template,
        ts_at,
        rate,
        count,
        window,
        no_ts,
        priority_random: o.priority_random,
    };
    let mut w = c
        .stream
        .try_clone()
        .map_err(|e| format!("clone socket: {}", io_text(&e)))?;
    w.set_write_timeout(Some(POLL)).map_err(|e| io_text(&e))?;
    let confirms = Arc::new(Confirms::new());
    let hist = confirm_lat().register();
    let reader = {
        let confirms = confirms.clone();
        thread::Builder::new()
            .name(format!("p{idx}-reader"))
            .spawn(move || producer_reader(c, confirms, hist))
            .map_err(|e| e.to_string())?
    };
    thread::Builder::new()
        .name(format!("producer-{idx}"))
        .spawn(move || {
            let _ = confirms.producer.set(thread::current());
            let conf = (window > 0).then_some(&*confirms);
            let (sent, clean) =
                produce(&mut w, &cfg, conf, count_global).unwrap_or_else(|e| fatal(e));
            if count > 0 && sent == count {
                // Wait for the last confirms before calling this producer done.
                if window > 0 {
                    while confirms.done.load(Ordering::Acquire) < sent
                        && !STOP.load(Ordering::Relaxed)
                    {
                        thread::park_timeout(Duration::from_millis(10));
                    }
                }
                PRODUCERS_DONE.fetch_add(1, Ordering::SeqCst);
            }
            // Wait for the end of the run (the reader keeps watching for closes).
            while !STOP.load(Ordering::Relaxed) {
                thread::park_timeout(Duration::from_millis(50));
            }
            if clean {
                let mut b = BytesMut::new();
                frame::write_method(&mut b, 0, &normal_close());
                let _ = w.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = w.write_all(&b);
            } else {
                // Mid-frame: a close would read as garbage; just hang up.
                w.shutdown();
            }
            let _ = reader.join();
            sent
        })
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::test_opts;
    use crate::shared::FRAME_MAX;
    use warren::proto::frame::{FRAME_BODY, FRAME_HEADER};

    #[test]
    fn confirm_bookkeeping() {
        let c = Confirms::new();
        {
            let mut g = c.inner.lock().unwrap();
            g.batches.push_back((1, 10, 100));
            g.batches.push_back((11, 20, 200));
        }
        let mut h = Hist::new();
        let total = AtomicU64::new(0);
        c.confirm(3, false, 1000, &mut h, &total); // out of order single
        assert_eq!(c.done.load(Ordering::Relaxed), 1);
        c.confirm(2, true, 1000, &mut h, &total); // 1..=2, then 3 joins the watermark
        assert_eq!(c.done.load(Ordering::Relaxed), 3);
        assert_eq!(h.count, 3);
        c.confirm(15, true, 2000, &mut h, &total);
        assert_eq!(c.done.load(Ordering::Relaxed), 15);
        assert_eq!(h.count, 15);
        c.confirm(15, true, 2000, &mut h, &total); // duplicate: ignored
        c.confirm(20, false, 2000, &mut h, &total);
        c.confirm(16, true, 2000, &mut h, &total);
        assert_eq!(c.done.load(Ordering::Relaxed), 17);
        // The run's total counts what `done` shows, duplicates not twice.
        assert_eq!(total.load(Ordering::Relaxed), 17);
        assert_eq!(c.inner.lock().unwrap().batches.front().unwrap().0, 17);
    }

    #[test]
    fn publish_template_patches_the_timestamp() {
        let o = Opts {
            size: 16,
            ..test_opts()
        };
        let (t, ts_at) = publish_template(&o, "rk", FRAME_MAX);
        // method, header, body: the body frame starts 7 bytes before ts_at.
        let mut rest = &t[..];
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let h = frame::parse(rest, FRAME_MAX).unwrap().unwrap();
            kinds.push(h.kind);
            rest = &rest[h.total_len()..];
        }
        assert_eq!(kinds, [FRAME_METHOD, FRAME_HEADER, FRAME_BODY]);
        assert_eq!(t[ts_at - 7], FRAME_BODY);
        assert_eq!(t.len() - ts_at, 16 + 1);
    }

    #[test]
    fn priority_byte_is_where_the_producer_patches_it() {
        for persistent in [false, true] {
            let o = Opts {
                size: 16,
                persistent,
                priority_random: 10,
                ..test_opts()
            };
            let (mut t, ts_at) = publish_template(&o, "rk", FRAME_MAX);
            t[ts_at - PRIORITY_BEFORE_TS] = 7;
            let m = frame::parse(&t, FRAME_MAX).unwrap().unwrap();
            let h = frame::parse(&t[m.total_len()..], FRAME_MAX)
                .unwrap()
                .unwrap();
            assert_eq!(h.kind, FRAME_HEADER);
            let start = m.total_len() + 7 + 12;
            let props = &t[start..m.total_len() + h.total_len() - 1];
            assert_eq!(warren::proto::properties::priority(props), Some(7));
            assert_eq!(
                warren::proto::properties::delivery_mode(props),
                persistent.then_some(2)
            );
        }
        let mut s = 1u64;
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[((xorshift(&mut s) >> 32) % 10) as usize] = true;
        }
        assert!(seen.iter().all(|&b| b), "every priority drawn");
    }
}
