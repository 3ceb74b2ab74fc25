//! `warren-perf`: an AMQP 0-9-1 load generator in the spirit of RabbitMQ's PerfTest,
//! built to have a much higher ceiling than the broker it measures.
//!
//! Threads, all blocking std I/O (no async runtime):
//! - one thread per producer: publishes from a pre-built buffer of whole publishes
//!   (method + header + body frames) in which only the 8-byte timestamps are patched,
//!   with one `write_all` per batch (up to 256 KB, or one rate tick's worth);
//! - one reader thread per producer (a clone of its socket): confirms, returns and
//!   broker-initiated closes;
//! - one thread per consumer: reads 256 KB at a time and walks the frames in place
//!   with `frame::parse`, decoding only the delivery tag and the body timestamp;
//!   acks are appended to a buffer and written once per read;
//! - the main thread: setup, one report line per second, the summary.
//!
//! Latency: every body starts with the send time (nanoseconds since a process-wide
//! epoch, big-endian); consumers record `now - sent` into a log-linear histogram
//! (1/64 relative precision) kept per thread and merged once per second.
//!
//! `--sink` and `--source` measure the tool itself against local TCP peers that
//! discard everything / replay pre-built deliveries.
//!
//! Modules, one per concern (a module uses the ones listed below it, never above):
//! - `main` (this file): the order of a broker run: setup, pre-fill, consumers,
//!   producers, report, polite close;
//! - [`self_test`]: `--sink` / `--source`, the local peers;
//! - [`report`]: per-second lines, the end of the run, summary and `--json`;
//! - [`producer`], [`consumer`]: the hot loops and their connections' setup;
//! - [`topology`]: declare/purge/bind before a run, delete after;
//! - [`client`]: a blocking AMQP connection (handshake, synchronous methods, close);
//! - [`options`]: the command line;
//! - [`hist`]: latency histograms;
//! - [`shared`]: the clock, the stop flag, the counters, `fatal`.
//!
//! A binary crate: `pub` in a module means "visible to the other modules", no more.

mod client;
mod consumer;
mod hist;
mod options;
mod producer;
mod report;
mod self_test;
mod shared;
mod tls;
mod topology;

use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::consumer::start_consumer;
use crate::hist::{confirm_lat, Hist};
use crate::options::parse_opts;
use crate::producer::spawn_producer;
use crate::report::{print_summary, report_loop, write_json};
use crate::shared::{fatal, now_nanos, CONFIRMED, NACKED, PRODUCERS_DONE, STOP};
use crate::topology::{declare_topology, delete_topology};

fn main() {
    let _ = now_nanos(); // fix the epoch
    let o = parse_opts();
    if o.sink || o.source {
        if o.sink && o.source {
            fatal("--sink and --source are separate self-tests; pick one");
        }
        self_test::run(&o);
        return;
    }
    if o.handshakes > 0 {
        handshakes(&o);
        return;
    }
    if o.duration.is_none() && o.count == 0 && !(o.producers == 0 && o.pre_fill > 0) {
        eprintln!("warren-perf: note: no -z or -C given: running until interrupted");
    }

    let mut setup = Conn::open(&o.uri, "warren-perf setup").unwrap_or_else(|e| fatal(e));
    declare_topology(&mut setup, &o).unwrap_or_else(|e| fatal(e));

    let copies = o.copies_per_message();
    let mut drain_target = 0;
    if o.pre_fill > 0 {
        let t0 = Instant::now();
        let h = spawn_producer(&o, usize::MAX, o.pre_fill, 0.0, 50_000, true, false)
            .unwrap_or_else(|e| fatal(e));
        while PRODUCERS_DONE.load(Ordering::SeqCst) < 1 {
            thread::sleep(Duration::from_millis(2));
        }
        let secs = t0.elapsed().as_secs_f64();
        STOP.store(true, Ordering::SeqCst);
        let _ = h.join();
        STOP.store(false, Ordering::SeqCst);
        PRODUCERS_DONE.store(0, Ordering::SeqCst);
        CONFIRMED.store(0, Ordering::SeqCst);
        NACKED.store(0, Ordering::SeqCst);
        confirm_lat().drain_into(&mut Hist::new());
        if !o.quiet {
            println!(
                "pre-fill: {} messages published and confirmed in {secs:.3}s ({:.0} msg/s)",
                o.pre_fill,
                o.pre_fill as f64 / secs.max(1e-9)
            );
        }
        drain_target = o.pre_fill * copies;
    }

    let mut consumers = Vec::new();
    let names = o.queue_names();
    for (qi, q) in names.iter().enumerate() {
        for ci in 0..o.consumers {
            let idx = qi * o.consumers + ci;
            consumers.push(start_consumer(&o, q, idx).unwrap_or_else(|e| fatal(e)));
        }
    }
    let mut producers = Vec::new();
    for i in 0..o.producers {
        producers.push(
            spawn_producer(&o, i, o.count, o.rate, o.confirm, false, true)
                .unwrap_or_else(|e| fatal(e)),
        );
    }
    let expected = Some(o.count * o.producers as u64 * copies + drain_target);
    let t = report_loop(&o, expected, drain_target);
    print_summary(&o, &t);
    if let Some(p) = &o.json {
        write_json(p, &o, &t);
    }
    // Close politely, but never hang the exit on a broker that does not answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    let all: Vec<JoinHandle<()>> = consumers
        .into_iter()
        .chain(producers.into_iter().map(|h| {
            thread::spawn(move || {
                let _ = h.join();
            })
        }))
        .collect();
    while Instant::now() < deadline && !all.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(10));
    }
    if all.iter().all(|h| h.is_finished()) {
        if !o.predeclared && !o.keep {
            if let Err(e) = delete_topology(&mut setup, &o) {
                eprintln!("warren-perf: note: cleanup failed: {e}");
            }
        }
        setup.close();
    }
    if let Some(exp) = expected.filter(|_| o.count > 0 && o.consumers > 0) {
        if t.received < exp && o.duration.is_none() {
            std::process::exit(3);
        }
    }
}

/// `--handshakes N`: N connections opened (TCP, TLS if asked, AMQP handshake, channel
/// open) and closed politely, spread over `-x` threads; prints connections per second.
fn handshakes(o: &options::Opts) {
    let threads = o.producers.max(1);
    let per = o.handshakes.div_ceil(threads as u64);
    let t0 = Instant::now();
    let workers: Vec<JoinHandle<()>> = (0..threads)
        .map(|i| {
            let o = o.clone();
            thread::spawn(move || {
                for _ in 0..per {
                    let c = Conn::open(&o.uri, &format!("warren-perf handshake {i}"))
                        .unwrap_or_else(|e| fatal(e));
                    c.close();
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = per * threads as u64;
    println!(
        "handshakes: {n} connections in {secs:.3}s ({:.0} conn/s, {} threads{})",
        n as f64 / secs.max(1e-9),
        threads,
        if o.uri.tls.is_some() { ", TLS" } else { "" }
    );
}
