//! Reporting: the once-a-second lines, the end-of-run decision (`-z` elapsed, `-C`
//! messages all received, or a 10-second stall), the summary lines and the `--json`
//! file.
//!
//! Owns the output formats, which `tests/perf.rs` and `benches/compare.sh` parse: a
//! change here is a change to their contract. Sets [`STOP`] when the run ends.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::hist::{confirm_lat, consumer_lat, Hist};
use crate::options::Opts;
use crate::shared::{
    fatal, io_text, CONFIRMED, NACKED, PRODUCERS_DONE, RECEIVED, RETURNED, SENT, STOP,
};

pub struct Totals {
    pub duration: f64,
    pub sent: u64,
    pub received: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub lat: Hist,
    pub conf_lat: Hist,
    pub drain: Option<(u64, f64)>,
}

fn fmt_lat(v: &[f64; 6], idx: &[usize]) -> String {
    idx.iter()
        .map(|&i| format!("{:.0}", v[i]))
        .collect::<Vec<_>>()
        .join("/")
}

fn json_lat(h: &Hist) -> String {
    let v = h.summary_us();
    format!(
        "{{\"count\": {}, \"min\": {:.1}, \"p50\": {:.1}, \"p75\": {:.1}, \"p95\": {:.1}, \"p99\": {:.1}, \"max\": {:.1}}}",
        h.count, v[0], v[1], v[2], v[3], v[4], v[5]
    )
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn write_json(path: &str, o: &Opts, t: &Totals) {
    let d = t.duration.max(1e-9);
    let mode = if o.sink {
        "sink"
    } else if o.source {
        "source"
    } else {
        "broker"
    };
    let mut s = String::from("{\n");
    s.push_str(&format!("  \"mode\": {},\n", json_str(mode)));
    s.push_str(&format!("  \"sent\": {},\n", t.sent));
    s.push_str(&format!("  \"received\": {},\n", t.received));
    s.push_str(&format!("  \"confirmed\": {},\n", t.confirmed));
    s.push_str(&format!("  \"nacked\": {},\n", t.nacked));
    s.push_str(&format!("  \"returned\": {},\n", t.returned));
    s.push_str(&format!("  \"duration_s\": {:.3},\n", t.duration));
    s.push_str(&format!("  \"send_rate\": {:.1},\n", t.sent as f64 / d));
    s.push_str(&format!(
        "  \"receive_rate\": {:.1},\n",
        t.received as f64 / d
    ));
    s.push_str(&format!(
        "  \"confirm_rate\": {:.1},\n",
        t.confirmed as f64 / d
    ));
    s.push_str(&format!("  \"latency_us\": {},\n", json_lat(&t.lat)));
    s.push_str(&format!(
        "  \"confirm_latency_us\": {},\n",
        json_lat(&t.conf_lat)
    ));
    if let Some((n, secs)) = t.drain {
        s.push_str(&format!(
            "  \"drain\": {{\"messages\": {n}, \"seconds\": {secs:.3}, \"rate\": {:.1}}},\n",
            n as f64 / secs.max(1e-9)
        ));
    }
    s.push_str(&format!(
        "  \"config\": {{\"producers\": {}, \"consumers\": {}, \"queues\": {}, \"body_size\": {}, \"rate\": {}, \"count\": {}, \"qos\": {}, \"autoack\": {}, \"multi_ack_every\": {}, \"confirm\": {}, \"persistent\": {}, \"mandatory\": {}, \"exchange\": {}, \"queue\": {}, \"pre_fill\": {}}}\n",
        o.producers,
        o.consumers,
        o.queues,
        o.size,
        o.rate,
        o.count,
        o.qos,
        o.autoack,
        o.multi_ack,
        o.confirm,
        o.persistent,
        o.mandatory,
        json_str(&o.exchange),
        json_str(&o.queue),
        o.pre_fill
    ));
    s.push_str("}\n");
    if let Err(e) = std::fs::write(path, s) {
        fatal(format!("cannot write {path}: {}", io_text(&e)));
    }
}

pub fn print_summary(o: &Opts, t: &Totals) {
    let d = t.duration.max(1e-9);
    let mut line = format!(
        "summary: duration {:.2}s, sent {} ({:.0} msg/s), received {} ({:.0} msg/s)",
        t.duration,
        t.sent,
        t.sent as f64 / d,
        t.received,
        t.received as f64 / d
    );
    if o.confirm > 0 {
        line.push_str(&format!(
            ", confirmed {} ({:.0} msg/s), nacked {}",
            t.confirmed,
            t.confirmed as f64 / d,
            t.nacked
        ));
    }
    if o.mandatory {
        line.push_str(&format!(", returned {}", t.returned));
    }
    println!("{line}");
    if let Some((n, secs)) = t.drain {
        println!(
            "drain: {n} pre-filled messages in {secs:.3}s ({:.0} msg/s)",
            n as f64 / secs.max(1e-9)
        );
    }
    if t.lat.count > 0 {
        println!(
            "consumer latency min/p50/p75/p95/p99/max: {} µs",
            fmt_lat(&t.lat.summary_us(), &[0, 1, 2, 3, 4, 5])
        );
    }
    if t.conf_lat.count > 0 {
        println!(
            "confirm latency min/p50/p75/p95/p99/max: {} µs",
            fmt_lat(&t.conf_lat.summary_us(), &[0, 1, 2, 3, 4, 5])
        );
    }
}

/// Prints one line per second until the run ends; returns the whole-run totals.
pub fn report_loop(o: &Opts, expected: Option<u64>, drain_target: u64) -> Totals {
    let start = Instant::now();
    let mut lat_total = Hist::new();
    let mut conf_total = Hist::new();
    let mut lat_iv = Hist::new();
    let mut conf_iv = Hist::new();
    let mut next = 1u64;
    let mut last = (0u64, 0u64, 0u64);
    let mut last_t = 0.0f64;
    let mut drain = None;
    let mut stall = (RECEIVED.load(Ordering::Relaxed), Instant::now());
    let end_at = o.duration.map(|d| start + Duration::from_secs_f64(d));
    let counted = o.count > 0 || (o.producers == 0 && o.pre_fill > 0);
    let producing = o.producers > 0;
    let end;
    loop {
        thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        let recv = RECEIVED.load(Ordering::Relaxed);
        if drain.is_none() && drain_target > 0 && recv >= drain_target {
            drain = Some((drain_target, start.elapsed().as_secs_f64()));
        }
        let el = (now - start).as_secs_f64();
        if el >= next as f64 {
            let cur = (
                SENT.load(Ordering::Relaxed),
                CONFIRMED.load(Ordering::Relaxed),
                recv,
            );
            let dt = el - last_t;
            consumer_lat().drain_into(&mut lat_iv);
            confirm_lat().drain_into(&mut conf_iv);
            if !o.quiet {
                let mut line = format!(
                    "time: {next}s, sent: {:.0} msg/s",
                    (cur.0 - last.0) as f64 / dt
                );
                if o.confirm > 0 {
                    line.push_str(&format!(
                        ", confirmed: {:.0} msg/s",
                        (cur.1 - last.1) as f64 / dt
                    ));
                }
                line.push_str(&format!(
                    ", received: {:.0} msg/s",
                    (cur.2 - last.2) as f64 / dt
                ));
                if lat_iv.count > 0 {
                    line.push_str(&format!(
                        ", consumer latency min/p50/p75/p95/p99: {} µs",
                        fmt_lat(&lat_iv.summary_us(), &[0, 1, 2, 3, 4])
                    ));
                }
                if conf_iv.count > 0 {
                    line.push_str(&format!(
                        ", confirm latency p50/p99: {} µs",
                        fmt_lat(&conf_iv.summary_us(), &[1, 4])
                    ));
                }
                println!("{line}");
            }
            lat_total.merge(&lat_iv);
            conf_total.merge(&conf_iv);
            lat_iv.clear();
            conf_iv.clear();
            last = cur;
            last_t = el;
            next += 1;
        }
        if let Some(e) = end_at {
            if now >= e {
                end = e;
                break;
            }
        }
        if counted {
            let producers_done = !producing || PRODUCERS_DONE.load(Ordering::SeqCst) >= o.producers;
            let exp = expected.unwrap_or(0);
            if producers_done && (o.consumers == 0 || recv >= exp) {
                end = now;
                break;
            }
            if recv != stall.0 {
                stall = (recv, now);
            } else if producers_done && now - stall.1 > Duration::from_secs(10) {
                eprintln!(
                    "warren-perf: received {recv} of {exp} expected messages; nothing for 10 s, giving up"
                );
                end = now;
                break;
            }
        }
    }
    let duration = (end - start).as_secs_f64();
    // Counters as of the end (the last messages may still trickle in: ignored).
    let totals = (
        SENT.load(Ordering::Relaxed),
        RECEIVED.load(Ordering::Relaxed),
        CONFIRMED.load(Ordering::Relaxed),
        NACKED.load(Ordering::Relaxed),
        RETURNED.load(Ordering::Relaxed),
    );
    STOP.store(true, Ordering::SeqCst);
    consumer_lat().drain_into(&mut lat_total);
    confirm_lat().drain_into(&mut conf_total);
    Totals {
        duration,
        sent: totals.0,
        received: totals.1,
        confirmed: totals.2,
        nacked: totals.3,
        returned: totals.4,
        lat: lat_total,
        conf_lat: conf_total,
        drain,
    }
}
