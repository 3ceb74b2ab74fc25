//! The process-wide run state every thread shares: the clock epoch, the stop flag, the
//! message counters the reporter reads, the tool's fixed sizes, and the fatal exit.
//!
//! Owns nothing else: no sockets, no options. Counters are plain relaxed atomics so
//! that the hot loops pay one uncontended add per batch.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Set when the run ends: workers stop sending/counting and close their connections.
pub static STOP: AtomicBool = AtomicBool::new(false);
pub static SENT: AtomicU64 = AtomicU64::new(0);
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);
pub static CONFIRMED: AtomicU64 = AtomicU64::new(0);
pub static NACKED: AtomicU64 = AtomicU64::new(0);
pub static RETURNED: AtomicU64 = AtomicU64::new(0);
/// Producers that have sent their `-C` messages (and seen them confirmed).
pub static PRODUCERS_DONE: AtomicUsize = AtomicUsize::new(0);

/// A body timestamp meaning "do not record latency" (pre-filled messages).
pub const NO_TIMESTAMP: u64 = u64::MAX;
/// Bytes per producer write (unlimited rate) and per consumer read.
pub const BATCH_BYTES: usize = 256 * 1024;
pub const READ_BYTES: usize = 256 * 1024;
/// The frame-max we ask for (the broker's, if lower).
pub const FRAME_MAX: u32 = 131_072;
/// The channel every connection uses.
pub const CH: u16 = 1;
/// How often blocked readers wake up to look at [`STOP`].
pub const POLL: Duration = Duration::from_millis(100);

pub fn now_nanos() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Prints one line to stderr and exits non-zero. Callable from any thread.
pub fn fatal(msg: impl std::fmt::Display) -> ! {
    static ONCE: Mutex<()> = Mutex::new(());
    let _g = ONCE.lock();
    let _ = io::stdout().flush();
    eprintln!("warren-perf: {msg}");
    std::process::exit(1);
}

/// `io::Error` text without the " (os error N)" suffix.
pub fn io_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
