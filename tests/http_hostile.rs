//! Hostile HTTP against the real broker's management port, over raw `TcpStream`s:
//! oversized and too many headers, a head dribbled a byte a second, garbage, a body over
//! the 32 MiB limit, bad JSON, chunked and pipelined requests, keep-alive and
//! `Connection: close`, HEAD, path traversal at the static files, wrong and missing
//! credentials. Each gets its answer (and a close where the framing is lost); and while
//! each abuse runs, an AMQP client keeps publishing and consuming beside it, its round
//! trips measured: HTTP abuse must not stall the reactor the AMQP connections share.
//!
//! Against RabbitMQ (`WARREN_TEST_PORT=5672`) the same statuses hold except where cowboy
//! legitimately differs (it gives no 408 to a slow head, and answers a body it will not
//! read with 415 before looking at its size); those checks run against Warren only.
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use support::api::base64;
use support::{unique, Broker};

/// The bound on the AMQP round trip (publish to delivery) while an abuse runs. Generous:
/// the reactor answers in microseconds; this catches a turn blocked on HTTP work, not
/// scheduler noise on a shared machine.
const P99_BOUND: Duration = Duration::from_millis(50);
/// The bound while a list of 10,000 queues is paged (see its test).
const LISTING_BOUND: Duration = Duration::from_millis(250);
/// Each abuse is repeated for at least this long...
const WINDOW: Duration = Duration::from_millis(500);
/// ... and until the AMQP probe has measured this many round trips beside it.
const MIN_RTTS: usize = 50;

// ----- an AMQP client measuring its round trips --------------------------------------

/// A lapin publisher-consumer on its own queue, in a thread of its own, recording the
/// time from each publish to its delivery (one message in flight at a time).
struct Probe {
    external: bool,
    samples: Arc<Mutex<Vec<(Instant, Duration)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Probe {
    fn start(b: &Broker) -> Probe {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let uri = b.uri();
        let thread = {
            let samples = samples.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                support::block_on(probe_loop(uri, samples, stop, ready_tx));
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the AMQP probe did not start");
        Probe {
            external: b.is_external(),
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Runs `abuse` over and over (a short one alone would leave no time for round
    /// trips) until it has run for at least [`WINDOW`] and the probe has made
    /// [`MIN_RTTS`] round trips meanwhile, then checks the p99 of the round trips
    /// measured while it ran. Returns what its first run returned.
    fn during<T>(&self, what: &str, abuse: impl FnMut() -> T) -> T {
        self.during_bounded(what, P99_BOUND, abuse)
    }

    /// [`Probe::during`] with another bound on the p99 round trip.
    fn during_bounded<T>(&self, what: &str, bound: Duration, mut abuse: impl FnMut() -> T) -> T {
        let start = Instant::now();
        let first = abuse();
        let mut runs = 1;
        loop {
            let since = Instant::now() - start;
            if since >= WINDOW && self.count_since(start) >= MIN_RTTS {
                break;
            }
            // The probe stalled for good if even a minute of abuse gave no round trips.
            assert!(
                since < Duration::from_secs(60),
                "{what}: {} AMQP round trips in {since:?}: the reactor stalled",
                self.count_since(start)
            );
            abuse();
            runs += 1;
        }
        let end = Instant::now();
        let mut rtts: Vec<Duration> = self
            .samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= start && *at <= end)
            .map(|(_, d)| *d)
            .collect();
        assert!(
            !self.thread.as_ref().is_some_and(|t| t.is_finished()),
            "{what}: the AMQP probe died"
        );
        rtts.sort();
        let p99 = rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)];
        let max = rtts[rtts.len() - 1];
        println!(
            "{what}: {runs} runs, {} AMQP round trips over {:?}, p50 {:?} p99 {p99:?} max {max:?}",
            rtts.len(),
            end - start,
            rtts[rtts.len() / 2]
        );
        // The bound is Warren's promise (one reactor for both planes); RabbitMQ's
        // figures are printed for comparison only.
        assert!(
            self.external || p99 < bound,
            "{what}: AMQP p99 round trip {p99:?} over {bound:?}"
        );
        first
    }

    fn count_since(&self, start: Instant) -> usize {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= start)
            .count()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn probe_loop(
    uri: String,
    samples: Arc<Mutex<Vec<(Instant, Duration)>>>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let conn = support::connect(&uri).await;
    let ch = conn.create_channel().await.expect("channel");
    let q = unique("hostile-probe");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let _ = ready.send(());
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"probe",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
        let d = support::within("probe delivery", Duration::from_secs(10), consumer.next())
            .await
            .expect("consumer ended")
            .expect("delivery");
        let rtt = t0.elapsed();
        d.ack(BasicAckOptions::default()).await.expect("ack");
        samples.lock().unwrap().push((Instant::now(), rtt));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye".into()).await;
}

// ----- raw HTTP ------------------------------------------------------------------------

fn auth() -> String {
    format!("Authorization: Basic {}\r\n", base64(b"guest:guest"))
}

fn dial(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", b.http_port)).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// One parsed response.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads responses off one connection: `head_only` for the answer to a HEAD.
struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    fn new(s: &TcpStream) -> Reader {
        Reader {
            s: s.try_clone().unwrap(),
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn answer(&mut self, head_only: bool) -> Answer {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(
                self.fill(),
                "connection ended inside a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = if head_only {
            0
        } else {
            headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().expect("content-length"))
        };
        while self.buf.len() < end + len {
            assert!(self.fill(), "connection ended inside a response body");
        }
        let body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The next answer, or None when the server closes the connection before one.
    fn answer_or_eof(&mut self) -> Option<Answer> {
        if self.buf.is_empty() && !self.fill() {
            return None;
        }
        Some(self.answer(false))
    }

    /// True when the server closes the connection (EOF or reset) within `d` with
    /// nothing more sent.
    fn closed_within(&mut self, d: Duration) -> bool {
        self.s.set_read_timeout(Some(d)).unwrap();
        let mut chunk = [0u8; 1024];
        let r = match self.s.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => panic!(
                "unexpected bytes after the answer: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
        };
        self.s
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        r && self.buf.is_empty()
    }
}

/// Sends `raw` on a fresh connection and reads one answer.
fn exchange(b: &Broker, raw: &[u8]) -> (Answer, Reader) {
    let mut s = dial(b);
    s.write_all(raw).expect("send");
    let mut r = Reader::new(&s);
    (r.answer(raw.starts_with(b"HEAD ")), r)
}

/// The broker still answers an authenticated request.
fn alive(b: &Broker) {
    let (a, _) = exchange(
        b,
        format!(
            "GET /api/overview HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
            auth()
        )
        .as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

// ----- the abuses --------------------------------------------------------------------

#[test]
fn oversized_heads_and_garbage_get_their_status_and_a_close() {
    let b = Broker::start();
    let probe = Probe::start(&b);

    probe.during("70 KiB header", || {
        let big = format!(
            "GET /api/overview HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(70_000)
        );
        let (a, mut r) = exchange(&b, big.as_bytes());
        assert_eq!(a.status, 431);
        assert!(r.closed_within(Duration::from_secs(5)), "not closed");
    });

    probe.during("a head that never ends", || {
        // Headers streamed without the blank line, far past the head limit: the broker
        // must stop reading at its bound, not buffer them.
        let mut s = dial(&b);
        let _ = s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n");
        let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
        for _ in 0..200 {
            if s.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        let mut r = Reader::new(&s);
        let status = r.answer(false).status;
        if b.is_external() {
            // cowboy gives up on such a head with a 408 or a 431.
            assert!(status == 431 || status == 408, "{status}");
        } else {
            assert_eq!(status, 431);
        }
    });

    probe.during("200 headers", || {
        let mut many = String::from("GET /api/overview HTTP/1.1\r\nHost: x\r\n");
        for i in 0..200 {
            many.push_str(&format!("X-H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let (a, mut r) = exchange(&b, many.as_bytes());
        assert_eq!(a.status, 431);
        assert!(r.closed_within(Duration::from_secs(5)), "not closed");
    });

    probe.during("garbage", || {
        for junk in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..],
            b"AMQP\x00\x00\x09\x01",
            b"GET /api/overview\r\n\r\n",
            b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            let mut s = dial(&b);
            s.write_all(junk).expect("send");
            let mut r = Reader::new(&s);
            let Some(a) = r.answer_or_eof() else {
                // cowboy may close on some garbage without a word; Warren answers.
                assert!(b.is_external(), "closed without an answer");
                continue;
            };
            assert_eq!(a.status, 400, "{:?}", String::from_utf8_lossy(junk));
            assert!(
                r.closed_within(Duration::from_secs(5)),
                "not closed after {:?}",
                String::from_utf8_lossy(junk)
            );
        }
    });

    probe.during("an HTTP version from the future", || {
        let (a, mut r) = exchange(&b, b"GET /api/overview HTTP/9.9\r\nHost: x\r\n\r\n");
        assert_eq!(a.status, 505);
        assert!(r.closed_within(Duration::from_secs(5)), "not closed");
    });

    probe.during("a thousand garbage connections", || {
        let mut conns = Vec::new();
        for i in 0..1000 {
            let mut s = dial(&b);
            let _ = s.write_all(format!("\x7f{i} garbage\r\n\r\n").as_bytes());
            conns.push(s);
        }
        for s in conns {
            let mut r = Reader::new(&s);
            assert_eq!(r.answer(false).status, 400);
        }
    });
    alive(&b);
}

#[test]
fn a_dribbled_head_is_cut_off_with_408() {
    let Some(b) = Broker::spawn_own(&[]) else {
        return; // cowboy closes a slow head without a 408
    };
    let probe = Probe::start(&b);
    let s = dial(&b);
    let mut r = Reader::new(&s);
    let writer = {
        let mut s = s.try_clone().unwrap();
        thread::spawn(move || {
            // One byte a second; the head (10 s) timeout cuts in before the end.
            for &c in b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" {
                if s.write_all(&[c]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let t0 = Instant::now();
    let a = probe.during("a head dribbled a byte a second", || r.answer(false));
    let took = t0.elapsed();
    assert_eq!(a.status, 408, "{}", a.text());
    assert!(a.closes());
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(14)).contains(&took),
        "408 after {took:?}"
    );
    assert!(r.closed_within(Duration::from_secs(5)), "not closed");
    s.shutdown(Shutdown::Both).ok();
    let _ = writer.join();
    alive(&b);
}

#[test]
fn bodies_over_the_limit_are_refused_without_being_buffered() {
    let Some(b) = Broker::spawn_own(&[]) else {
        return; // RabbitMQ answers 415 before looking at the size
    };
    let pid = b.pid().expect("pid");
    let probe = Probe::start(&b);
    let before = rss_kib(pid);

    probe.during("a 40 MiB Content-Length", || {
        let mut s = dial(&b);
        let head = format!(
            "POST /api/definitions HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            auth(),
            40 << 20
        );
        s.write_all(head.as_bytes()).unwrap();
        // Keep sending the body as a client would; the broker answers from the head.
        let writer = {
            let mut s = s.try_clone().unwrap();
            thread::spawn(move || {
                let chunk = vec![b' '; 1 << 20];
                for _ in 0..40 {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                }
            })
        };
        let mut r = Reader::new(&s);
        let a = r.answer(false);
        assert_eq!(a.status, 413, "{}", a.text());
        assert!(a.closes());
        let _ = writer.join();
    });
    let after = rss_kib(pid);
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB: the refused body was buffered"
    );

    probe.during("a chunked body past 32 MiB", || {
        let mut s = dial(&b);
        let head = format!(
            "POST /api/definitions HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
            auth()
        );
        s.write_all(head.as_bytes()).unwrap();
        let writer = {
            let mut s = s.try_clone().unwrap();
            thread::spawn(move || {
                let mut chunk = format!("{:x}\r\n", 1 << 20).into_bytes();
                chunk.extend(std::iter::repeat_n(b' ', 1 << 20));
                chunk.extend_from_slice(b"\r\n");
                for _ in 0..40 {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                }
            })
        };
        let mut r = Reader::new(&s);
        let a = r.answer(false);
        assert_eq!(a.status, 413, "{}", a.text());
        let _ = writer.join();
    });
    alive(&b);
}

#[test]
fn bad_json_chunked_bodies_pipelining_keep_alive_close_and_head() {
    let b = Broker::start();
    let probe = Probe::start(&b);
    let q = unique("hostile-q");
    let path = format!("/api/queues/%2F/{q}");

    probe.during("bad JSON", || {
        let doubly = "invalid payload: the request body JSON-decoded to a string. \
                      Is the input doubly-JSON-encoded?";
        for (body, reason) in [
            ("{abc ", "not_json"),
            ("[1,2", "not_json"),
            ("[1,2]", "not_json"),
            ("12", "not_json"),
            ("\u{0}\u{1}", "not_json"),
            ("\"just a string\"", doubly),
        ] {
            let raw = format!(
                "PUT {path} HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                auth(),
                body.len()
            );
            let (a, _) = exchange(&b, raw.as_bytes());
            assert_eq!(a.status, 400, "{body:?}: {}", a.text());
            let v: serde_json::Value = serde_json::from_slice(&a.body).expect("a JSON error");
            assert_eq!(v["error"], "bad_request", "{v}");
            assert_eq!(v["reason"], reason, "{v}");
        }
    });

    probe.during("chunked, pipelined, keep-alive, HEAD, close", || {
        // One connection: a chunked PUT, then four pipelined requests sent at once,
        // answered in order, the last asking to close. A fresh queue each run (RabbitMQ's
        // statistics lag behind a delete and re-declare of the same name).
        let q = unique("hostile-q");
        let path = format!("/api/queues/%2F/{q}");
        let mut s = dial(&b);
        let body = r#"{"durable":false,"auto_delete":false,"arguments":{}}"#;
        let (b1, b2) = body.split_at(10);
        let put = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{b1}\r\n{:x};ext=1\r\n{b2}\r\n0\r\n\r\n",
            auth(),
            b1.len(),
            b2.len()
        );
        s.write_all(put.as_bytes()).unwrap();
        let mut r = Reader::new(&s);
        let a = r.answer(false);
        assert!(
            a.status == 201 || a.status == 204,
            "{}: {}",
            a.status,
            a.text()
        );
        assert!(!a.closes());
        let pipelined = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\n{a}\r\n\
             HEAD {path} HTTP/1.1\r\nHost: x\r\n{a}\r\n\
             GET /api/queues/%2F/{q}-missing HTTP/1.1\r\nHost: x\r\n{a}\r\n\
             DELETE {path} HTTP/1.1\r\nHost: x\r\n{a}Connection: close\r\n\r\n",
            a = auth()
        );
        s.write_all(pipelined.as_bytes()).unwrap();
        let get = r.answer(false);
        assert_eq!(get.status, 200, "{}", get.text());
        let v: serde_json::Value = serde_json::from_slice(&get.body).expect("JSON");
        assert_eq!(v["name"], q.as_str());
        let head = r.answer(true);
        assert_eq!(head.status, 200, "HEAD {path}: {head:?}");
        assert_eq!(
            head.header("content-length"),
            get.header("content-length"),
            "HEAD announces the GET's length"
        );
        let missing = r.answer(false);
        assert_eq!(missing.status, 404);
        let del = r.answer(false);
        assert_eq!(del.status, 204, "{}", del.text());
        assert!(del.closes(), "Connection: close is echoed");
        assert!(r.closed_within(Duration::from_secs(5)), "not closed");
    });

    probe.during("keep-alive: 200 requests on one connection", || {
        let mut s = dial(&b);
        let mut r = Reader::new(&s);
        for _ in 0..200 {
            s.write_all(
                format!("GET /api/overview HTTP/1.1\r\nHost: x\r\n{}\r\n", auth()).as_bytes(),
            )
            .unwrap();
            let a = r.answer(false);
            assert_eq!(a.status, 200);
            assert!(!a.closes());
        }
    });

    probe.during("2000 pipelined requests not read back", || {
        // 2000 requests written without reading an answer (5 MB of answers), then read:
        // the broker holds back (backpressure) and still answers every one, in order.
        let mut s = dial(&b);
        let req = format!("GET /api/overview HTTP/1.1\r\nHost: x\r\n{}\r\n", auth());
        let writer = {
            let mut s = s.try_clone().unwrap();
            let req = req.clone();
            thread::spawn(move || {
                for _ in 0..2000 {
                    if s.write_all(req.as_bytes()).is_err() {
                        return false;
                    }
                }
                true
            })
        };
        let mut r = Reader::new(&s);
        for i in 0..2000 {
            let Some(a) = r.answer_or_eof() else {
                // cowboy closes a connection after its max_keepalive requests.
                assert!(b.is_external() && i >= 100, "closed after {i} answers");
                let _ = writer.join();
                return;
            };
            assert_eq!(a.status, 200, "answer {i}");
        }
        assert!(writer.join().unwrap(), "the broker stopped reading");
        s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(r.answer(false).status, 401);
    });
    alive(&b);
}

#[test]
fn path_traversal_never_reaches_a_file() {
    let b = Broker::start();
    let probe = Probe::start(&b);
    probe.during("path traversal", || {
        for p in [
            "/../../etc/passwd",
            "/%2e%2e/Cargo.toml",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/js/../../../etc/passwd",
            "/..%2f..%2fetc%2fpasswd",
            "/%2E%2E%2F%2E%2E%2FCargo.toml",
            "/....//....//etc/passwd",
            "/%252e%252e/Cargo.toml",
            "/./Cargo.toml",
            "/Cargo.toml",
            "/src/main.rs",
            "/%00/etc/passwd",
        ] {
            let raw = format!(
                "GET {p} HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
                auth()
            );
            let (a, _) = exchange(&b, raw.as_bytes());
            assert!(
                a.status == 404 || a.status == 400,
                "{p}: {} {}",
                a.status,
                a.text()
            );
            let t = a.text();
            assert!(
                !t.contains("root:") && !t.contains("[package]") && !t.contains("fn main"),
                "{p} served a file: {t}"
            );
        }
        // The dangerous one of the brief's list is a 404 on both brokers.
        for p in ["/../../etc/passwd", "/%2e%2e/Cargo.toml"] {
            let (a, _) = exchange(
                &b,
                format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            );
            assert_eq!(a.status, 404, "{p}");
        }
    });
    alive(&b);
}

#[test]
fn wrong_or_missing_credentials_get_401_with_a_challenge() {
    let b = Broker::start();
    let probe = Probe::start(&b);
    probe.during("bad credentials", || {
        let wrong = format!("Authorization: Basic {}\r\n", base64(b"guest:wrong"));
        let nobody = format!("Authorization: Basic {}\r\n", base64(b"nobody:x"));
        for creds in [
            String::new(),
            wrong,
            nobody,
            "Authorization: Bearer abc\r\n".to_owned(),
            format!(
                "Authorization: Basic {}\r\n",
                base64(&[0xff, 0xfe, b':', 0xff])
            ),
        ] {
            let raw = format!(
                "GET /api/overview HTTP/1.1\r\nHost: x\r\n{creds}Connection: close\r\n\r\n"
            );
            let (a, _) = exchange(&b, raw.as_bytes());
            assert_eq!(a.status, 401, "{creds:?}: {}", a.text());
            assert!(
                a.header("www-authenticate")
                    .is_some_and(|h| h.starts_with("Basic realm=")),
                "{creds:?}: {:?}",
                a.headers
            );
        }
        // A Basic header that does not parse is a bad request (as cowboy answers it).
        for creds in [
            "Authorization: Basic !!!notbase64\r\n".to_owned(),
            format!("Authorization: Basic {}\r\n", base64(b"no-colon")),
            "Authorization: Basic\r\n".to_owned(),
        ] {
            let raw = format!(
                "GET /api/overview HTTP/1.1\r\nHost: x\r\n{creds}Connection: close\r\n\r\n"
            );
            let (a, _) = exchange(&b, raw.as_bytes());
            assert_eq!(a.status, 400, "{creds:?}: {}", a.text());
        }
        // Many wrong guesses in a row on one keep-alive connection are each refused.
        let mut s = dial(&b);
        let mut r = Reader::new(&s);
        for i in 0..100 {
            let creds = base64(format!("guest:guess{i}").as_bytes());
            s.write_all(
                format!(
                    "GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {creds}\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
            assert_eq!(r.answer(false).status, 401);
        }
    });
    alive(&b);
}

/// Issue 10's promise that a management request never stalls AMQP, for the request a
/// dashboard makes every few seconds. Before `list_by` paged ahead of building JSON,
/// this request built every queue's JSON on the reactor thread (about 45 µs a queue in
/// a release build: 10,000 queues held every AMQP connection for half a second, 100,000
/// for 6 s) and this test failed with a few dozen round trips in a minute.
#[test]
fn listing_many_queues_does_not_stall_amqp() {
    let Some(b) = Broker::spawn_own(&[]) else {
        return;
    };
    let mut c = support::RawClient::with_channel(b.port);
    let names: Vec<String> = (0..10_000).map(|i| format!("many-{i:05}")).collect();
    for batch in names.chunks(1000) {
        let mut bytes = Vec::new();
        for n in batch {
            bytes.extend(support::frame(
                support::FRAME_METHOD,
                1,
                &support::queue_declare(n, false, false),
            ));
        }
        c.send(&bytes);
        for _ in batch {
            c.expect_method(1, 50, 11);
        }
    }
    let probe = Probe::start(&b);
    let mut s = dial(&b);
    let mut r = Reader::new(&s);
    let req = format!(
        "GET /api/queues?page=1&page_size=100&sort=messages HTTP/1.1\r\nHost: x\r\n{}\r\n",
        auth()
    );
    // A page of 10,000 queues is filtered and sorted in one turn: a few milliseconds in
    // a release build, 15-45 ms in this debug build depending on the machine's load, so
    // the round trips beside it are bounded at 250 ms here. The regression this catches
    // (every queue's JSON built in one turn) holds the reactor for seconds in debug.
    probe.during_bounded("paging through 10,000 queues", LISTING_BOUND, || {
        s.write_all(req.as_bytes()).unwrap();
        let a = r.answer(false);
        assert_eq!(a.status, 200);
    });
}
