//! Warren-only: at-least-once delivery of confirmed persistent messages while the broker
//! is SIGKILLed at random moments and restarted on the same data directory.
//!
//! A publisher (publisher confirms, window of 100) and a consumer (manual acks,
//! prefetch 50) run against each incarnation and reconnect after each kill. At the end,
//! after a graceful restart, the queue is drained and:
//! * every confirmed id was consumed at least once or is still queued; more strictly,
//!   it was acked by the consumer (the ack sent) or is still queued: a delivery whose
//!   ack never left the consumer must come back;
//! * an id delivered more than once carried `redelivered` on every later delivery.
//!
//! 20 kills by default (well under a minute); `WARREN_SOAK=1` makes it 200.
//! `WARREN_CRASH_SEED=<n>` replays a run's random delays.
mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use support::*;

const QUEUE: &str = "crash-loop";
const WINDOW: usize = 100;

#[derive(Default)]
struct Log {
    /// Ids the broker acked to the publisher.
    confirmed: HashSet<u64>,
    /// Ids the broker nacked.
    nacked: u64,
    /// Every delivery, in the order received: (id, redelivered).
    deliveries: Vec<(u64, bool)>,
    /// Acks the consumer sent (not necessarily processed before a kill).
    acks_sent: u64,
    /// Ids the consumer tried to ack (the ack may have been lost in a kill).
    acked: HashSet<u64>,
    /// Consumers that got as far as basic.consume-ok (one per incarnation at most).
    consumers_started: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The message body: the id (u64, big-endian) and some padding of varying size.
fn body(id: u64) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.resize(8 + (id as usize * 37) % 2000, (id % 251) as u8);
    b
}

fn id_of(data: &[u8]) -> u64 {
    assert!(data.len() >= 8, "short body {data:?}");
    let id = u64::from_be_bytes(data[..8].try_into().unwrap());
    assert_eq!(data, &body(id)[..], "body of id {id} damaged");
    id
}

async fn connect_quiet(uri: &str) -> lapin::Result<Connection> {
    match tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(uri, ConnectionProperties::default()),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(lapin::Error::from(
            lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Error),
        )),
    }
}

fn declare_options() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Publishes ids from `next` until the connection fails; records confirmed ids.
async fn publisher(uri: String, next: Arc<AtomicU64>, log: Arc<Mutex<Log>>) -> lapin::Result<()> {
    let conn = connect_quiet(&uri).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(QUEUE.into(), declare_options(), FieldTable::default())
        .await?;
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut window: VecDeque<(u64, lapin::PublisherConfirm)> = VecDeque::with_capacity(WINDOW);
    let record = |id: u64, c: Confirmation| match c {
        Confirmation::Ack(_) => {
            log.lock().unwrap().confirmed.insert(id);
        }
        _ => log.lock().unwrap().nacked += 1,
    };
    loop {
        if window.len() >= WINDOW {
            let (id, confirm) = window.pop_front().unwrap();
            record(id, confirm.await?);
        }
        // Record confirms as they arrive, not only when the window is full: an incarnation
        // killed before its 100th publish (a slow host) would otherwise confirm nothing.
        while let Some((_, confirm)) = window.front_mut() {
            match futures_lite::future::poll_once(confirm).await {
                Some(r) => {
                    let (id, _) = window.pop_front().unwrap();
                    record(id, r?);
                }
                None => break,
            }
        }
        let id = next.fetch_add(1, Ordering::Relaxed);
        let c = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &body(id),
                props.clone(),
            )
            .await?;
        window.push_back((id, c));
    }
}

/// Consumes with manual acks until the connection fails; records every delivery.
async fn consumer(uri: String, log: Arc<Mutex<Log>>) -> lapin::Result<()> {
    let conn = connect_quiet(&uri).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(50, BasicQosOptions::default()).await?;
    ch.queue_declare(QUEUE.into(), declare_options(), FieldTable::default())
        .await?;
    let mut c = ch
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    log.lock().unwrap().consumers_started += 1;
    while let Some(d) = c.next().await {
        let d = d?;
        let id = id_of(&d.data);
        {
            let mut l = log.lock().unwrap();
            l.deliveries.push((id, d.redelivered));
            l.acked.insert(id);
        }
        ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
            .await?;
        log.lock().unwrap().acks_sent += 1;
    }
    Ok(())
}

struct Round {
    publisher: tokio::task::JoinHandle<lapin::Result<()>>,
    consumer: tokio::task::JoinHandle<lapin::Result<()>>,
}

/// Starts a publisher and a consumer and waits (bounded) until both are at work: the
/// publisher has published and the consumer is consuming. The random kill delay counts
/// from there, so that on a slow host the kills still land among publishes, confirms and
/// acks rather than all in the clients' connection handshakes.
fn start_clients(
    rt: &tokio::runtime::Runtime,
    b: &Broker,
    next: &Arc<AtomicU64>,
    log: &Arc<Mutex<Log>>,
) -> Round {
    let published = next.load(Ordering::Relaxed);
    let consumers = log.lock().unwrap().consumers_started;
    let round = Round {
        publisher: rt.spawn(publisher(b.uri(), next.clone(), log.clone())),
        consumer: rt.spawn(consumer(b.uri(), log.clone())),
    };
    let going = wait_until(STEP, || {
        next.load(Ordering::Relaxed) > published
            && log.lock().unwrap().consumers_started > consumers
    });
    if !going {
        let problems: Vec<String> = [round.publisher.is_finished(), round.consumer.is_finished()]
            .iter()
            .zip(["publisher", "consumer"])
            .filter(|(done, _)| **done)
            .map(|(_, who)| format!("{who} task ended"))
            .collect();
        panic!(
            "clients not at work within {STEP:?} of the broker starting ({problems:?}); \
             broker output:\n{}",
            b.logs()
        );
    }
    round
}

/// Waits (bounded) for both clients to notice the broker is gone. Returns how many had
/// to be aborted.
fn join_clients(rt: &tokio::runtime::Runtime, r: Round) -> usize {
    let mut hung = 0;
    for h in [r.publisher, r.consumer] {
        let abort = h.abort_handle();
        match rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), h).await }) {
            Ok(Ok(Ok(()))) | Ok(Ok(Err(_))) => {}
            Ok(Err(e)) => panic!("client task panicked: {e}"),
            Err(_) => {
                abort.abort();
                hung += 1;
            }
        }
    }
    hung
}

#[test]
fn confirmed_messages_survive_random_sigkills_at_least_once() {
    if is_external() {
        println!("skipped: needs its own warren process (WARREN_TEST_PORT is set)");
        return;
    }
    let soak = std::env::var("WARREN_SOAK").is_ok_and(|v| v == "1");
    let kills = if soak { 200 } else { 20 };
    let seed = std::env::var("WARREN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash loop: {kills} kills, WARREN_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let t0 = Instant::now();
    let dir = tempfile::TempDir::new().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let log = Arc::new(Mutex::new(Log::default()));
    let mut hung = 0;
    let mut torn = 0;
    let mut slowest_start = Duration::ZERO;

    for round in 0..kills {
        let started = Instant::now();
        // Panics (with the broker's output) unless the data dir loads.
        let mut b = Broker::spawn_in(dir.path(), &[]).unwrap();
        slowest_start = slowest_start.max(started.elapsed());
        if b.logs().contains("torn or corrupt tail") {
            torn += 1;
        }
        let clients = start_clients(&rt, &b, &next, &log);
        let delay = rng.range(50, 400);
        std::thread::sleep(Duration::from_millis(delay));
        b.kill9();
        hung += join_clients(&rt, clients);
        let l = log.lock().unwrap();
        if round % 5 == 4 || round + 1 == kills {
            println!(
                "round {:3}: killed after {delay:3} ms; {} published, {} confirmed, {} delivered ({:?})",
                round + 1,
                next.load(Ordering::Relaxed),
                l.confirmed.len(),
                l.deliveries.len(),
                t0.elapsed()
            );
        }
    }

    // One more incarnation that ends with SIGTERM, then a graceful restart to drain.
    let mut b = Broker::spawn_in(dir.path(), &[]).unwrap();
    let clients = start_clients(&rt, &b, &next, &log);
    std::thread::sleep(Duration::from_millis(300));
    b.stop();
    hung += join_clients(&rt, clients);
    let mut b = Broker::spawn_in(dir.path(), &[]).unwrap();
    let drained: Vec<(u64, bool)> = rt.block_on(async {
        let conn = b.connect().await;
        let ch = step("create_channel", conn.create_channel()).await.unwrap();
        // Nobody else is connected: the count is exact. A no-ack consumer drains
        // faster than basic.get.
        let count = step(
            "passive queue_declare",
            ch.queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap()
        .message_count() as usize;
        let mut c = step(
            "basic_consume",
            ch.basic_consume(
                QUEUE.into(),
                "drain".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let d = next_delivery(&mut c).await;
            out.push((id_of(&d.data), d.redelivered));
        }
        assert!(
            step(
                "basic_get",
                ch.basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
            )
            .await
            .unwrap()
            .is_none(),
            "more messages than the queue's count"
        );
        let _ = conn.close(200, "bye".into()).await;
        out
    });
    b.stop();

    let l = log.lock().unwrap();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut bad_duplicates = Vec::new();
    for &(id, redelivered) in l.deliveries.iter().chain(drained.iter()) {
        let n = seen.entry(id).or_insert(0);
        *n += 1;
        if *n > 1 && !redelivered {
            bad_duplicates.push(id);
        }
    }
    let mut lost: Vec<u64> = l
        .confirmed
        .iter()
        .copied()
        .filter(|id| !seen.contains_key(id))
        .collect();
    lost.sort_unstable();
    // Stronger than "consumed at least once": a delivery whose ack was never sent
    // must come back, so every confirmed id was acked (or at least the ack was sent)
    // or is still queued.
    let still_queued: HashSet<u64> = drained.iter().map(|(id, _)| *id).collect();
    let mut vanished: Vec<u64> = l
        .confirmed
        .iter()
        .copied()
        .filter(|id| !l.acked.contains(id) && !still_queued.contains(id))
        .collect();
    vanished.sort_unstable();
    let duplicates = seen.values().filter(|n| **n > 1).count();
    let published = next.load(Ordering::Relaxed);
    println!(
        "crash loop done in {:?}: {kills} kills, {published} published, {} confirmed, {} nacked, \
         {} deliveries ({} distinct ids, {duplicates} delivered more than once), {} acks sent, \
         {} left in the queue at the end, {torn} starts repaired a torn tail, \
         slowest start {slowest_start:?}, {hung} client tasks aborted",
        t0.elapsed(),
        l.confirmed.len(),
        l.nacked,
        l.deliveries.len(),
        seen.len(),
        l.acks_sent,
        drained.len(),
    );
    assert!(
        !l.confirmed.is_empty() && !l.deliveries.is_empty(),
        "the clients never got going"
    );
    assert!(
        lost.is_empty(),
        "{} confirmed ids were never delivered nor left queued (seed {seed}): {:?}",
        lost.len(),
        &lost[..lost.len().min(50)]
    );
    assert!(
        vanished.is_empty(),
        "{} confirmed ids were delivered, never acked, and not queued at the end (seed {seed}): {:?}",
        vanished.len(),
        &vanished[..vanished.len().min(50)]
    );
    assert!(
        bad_duplicates.is_empty(),
        "ids delivered again without redelivered (seed {seed}): {:?}",
        &bad_duplicates[..bad_duplicates.len().min(50)]
    );
    assert!(
        seen.keys().all(|id| *id < published),
        "a delivery of an id never published"
    );
}
