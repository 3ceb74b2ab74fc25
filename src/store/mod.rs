//! The durable store under `--data-dir`: persistent messages of durable queues, acks,
//! and the metadata snapshot.
//!
//! Owns its files and nothing else. Writes of a loop turn are buffered and go to disk in
//! the server's sync phase: one `write` per file and, when the turn appended messages,
//! one `fdatasync` of the current segment (group commit). Publisher confirms for
//! persistent messages are sent only after that sync. Ack records are written every
//! turn but not synced: a crash can only make an ack be forgotten (the message comes back
//! `redelivered`, at-least-once), never make an unacked message disappear; a clean stop
//! syncs everything.
//!
//! Space: the store counts, per segment, the (message, queue) references not yet acked;
//! a segment that reaches zero is deleted with its ack file (the one being written too,
//! past `RECLAIM_MIN` or on a full disk).
//!
//! A full disk (ENOSPC, EDQUOT, EIO) is not fatal: a failed write cuts the segment back
//! to its last synced length (the turn's confirms are nacks and none of its records is
//! recovered), the `reserve` file is given back so acks and metadata still fit, appends
//! are refused until `retry_after_full` sees space again, and unwritten ack records stay
//! buffered. Nothing at start-up needs new space: segments are created at their first
//! record.
//!
//! Layout (see `segment.rs` and `meta.rs` for the formats): `meta`, `msgs.NNNNNNNNNN`,
//! `acks.NNNNNNNNNN`, and `lock` (held with an exclusive file lock while running).

pub mod error;
pub mod meta;
pub mod segment;

use bytes::{Bytes, BytesMut};
use log::{info, warn};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use error::StoreError;
pub use meta::Meta;
use segment::{Record, ACK, ACK_MAGIC, DEAD, DELIVERED, RETURNED, SEG_MAGIC};

/// The reference id of a paged message held by a queue whose copy must not survive a
/// restart (a transient message, or a non-durable queue). No queue has this id, so
/// recovery never brings such a reference back.
pub const SPILL: u32 = u32::MAX;

/// A segment is closed and a new one started past this size.
pub const SEGMENT_MAX: u64 = 64 * 1024 * 1024;

/// Where a persistent message lives: its segment and the offset of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u32,
    pub offset: u32,
}

/// A message found at start-up, with the queues that still hold it.
#[derive(Debug)]
pub struct Recovered {
    pub location: Location,
    pub record: Record,
    /// (queue id, delivered before the restart)
    pub queues: Vec<(u32, bool)>,
    /// (queue id, how often a quorum queue's message came back) for those of `queues`
    /// that recorded returns (see [`Store::returned`]).
    pub returns: Vec<(u32, u32)>,
    /// (queue id, reason code) for those of `queues` where the message was being
    /// dead-lettered at-least-once and no target had it yet (see [`Store::dead`]).
    pub dead: Vec<(u32, u8)>,
}

struct AckFile {
    file: File,
    buf: BytesMut,
}

/// An append-only series of segments being written.
///
/// The file is created lazily, at the first write of a record: starting the broker or
/// rolling over needs no new disk space. A failed write or fsync abandons the turn's
/// records (the file is truncated back to what the last sync made durable, so a nacked
/// message is never recovered) and marks the writer `broken`: its offsets past `good`
/// were handed out to messages still in memory, so they are never reused, and the next
/// append starts a new segment.
struct Writer {
    /// Segment number (with `SPILL_BIT` for the spill series).
    n: u32,
    file: Option<File>,
    /// Bytes in the current segment, written or buffered (the header included).
    len: u64,
    /// Bytes of the file known to be written (and, for the durable series, synced).
    good: u64,
    buf: BytesMut,
    /// Appended since the last sync (only the durable series is ever fsynced).
    unsynced: bool,
    /// A write failed: the next append rolls over to a new segment.
    broken: bool,
}

impl Writer {
    fn new(n: u32) -> Writer {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&segment::header(SEG_MAGIC));
        Writer {
            n,
            file: None,
            len: segment::HEADER_LEN as u64,
            good: 0,
            buf,
            unsynced: false,
            broken: false,
        }
    }

    /// Writes the buffered bytes (creating the file at its first record). Returns how many
    /// bytes reached the file.
    fn flush(&mut self, dir: &Path) -> io::Result<u64> {
        if self.buf.is_empty() || self.len <= segment::HEADER_LEN as u64 {
            return Ok(0);
        }
        let file = match self.file.as_mut() {
            Some(f) => f,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(seg_path(dir, self.n))?,
            ),
        };
        file.write_all(&self.buf)?;
        let n = self.buf.len() as u64;
        self.buf.clear();
        Ok(n)
    }

    /// Makes what `flush` wrote durable (durable series only).
    fn fsync(&mut self) -> io::Result<()> {
        if let Some(f) = self.file.as_ref() {
            f.sync_data()?;
        }
        self.unsynced = false;
        self.good = self.written();
        Ok(())
    }

    /// A write or fsync failed: drop this turn's records, cut the file back to its last
    /// good length (a torn partial write must not be recovered), and roll over at the
    /// next append. Needs no disk space.
    fn abandon(&mut self) {
        if let Some(f) = self.file.as_ref() {
            if let Err(e) = f.set_len(self.good) {
                log::error!("store: cannot cut back a failed segment write: {e}");
            }
        }
        self.buf.clear();
        self.unsynced = false;
        self.broken = true;
    }

    /// Bytes already handed to the file (the rest sits in `buf`).
    fn written(&self) -> u64 {
        self.len - self.buf.len() as u64
    }
}

/// Whether an I/O error means the disk cannot take more data (the disk alarm's business).
pub fn is_space_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EIO)
    ) || e.kind() == io::ErrorKind::StorageFull
}

#[cfg(test)]
thread_local! {
    /// Fault injection: the next `Store::sync` on this thread fails (a disk error).
    pub(crate) static FAIL_NEXT_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub struct Store {
    dir: PathBuf,
    _lock: File,
    /// Durable messages: `msgs.N`, fsynced at each turn that appended.
    msgs: Writer,
    /// Bodies no durable queue references (transient or non-durable paged messages):
    /// `spill.N`, never synced, never recovered, deleted wholesale at start-up.
    spill: Writer,
    acks: HashMap<u32, AckFile>,
    /// Read handles for paged bodies, by segment.
    readers: HashMap<u32, File>,
    live: HashMap<u32, u64>,
    next_queue_id: u32,
    segment_max: u64,
    /// The disk refused a write (ENOSPC, EIO): appends are refused, the disk alarm is on.
    /// Cleared by `retry_after_full` once measured free space is back.
    full: bool,
    /// An append was refused this turn: the turn's sync fails (its confirms are nacks).
    refused: bool,
    /// Acks that must not reach the disk before this turn's messages are synced
    /// ([`Store::ack_after_sync`]: a quorum queue's at-least-once dead-lettering).
    after_sync: Vec<(Location, u32)>,
    /// Bytes of the `reserve` file we hold; released at the first ENOSPC so that acks
    /// and the metadata snapshot can still be written.
    reserve_size: u64,
    reserved: bool,
    /// Bytes written since the server last measured free space (see `take_written`).
    written: u64,
}

/// Bytes kept in the `reserve` file while the disk has room: at the first ENOSPC they are
/// given back so ack records (26 bytes per delivered-and-acked message) and the metadata
/// snapshot still fit while consumers drain.
pub const RESERVE: u64 = 1024 * 1024;

/// Past this size, a current segment whose messages are all settled is closed and
/// deleted as soon as that happens (not only at the 64 MiB rollover), so a drained store
/// gives its space back.
pub const RECLAIM_MIN: u64 = 1024 * 1024;

/// Spill segments are numbered with this bit set, so one map covers both series.
const SPILL_BIT: u32 = 1 << 31;

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    if n & SPILL_BIT != 0 {
        dir.join(format!("spill.{:010}", n & !SPILL_BIT))
    } else {
        dir.join(format!("msgs.{n:010}"))
    }
}

fn reserve_path(dir: &Path) -> PathBuf {
    dir.join("reserve")
}

fn ack_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("acks.{n:010}"))
}

fn numbered(dir: &Path, prefix: &str) -> io::Result<Vec<u32>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|s| s.parse::<u32>().ok())
        {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

impl Store {
    /// Opens (creating if needed) the data directory, locks it, loads the metadata and
    /// recovers every message still referenced by a durable queue, in log order. A torn
    /// tail is truncated away and logged. Errors are readable and mean the broker must
    /// not start (it never starts silently empty on a damaged directory).
    pub fn open(dir: &Path) -> Result<(Store, Meta, Vec<Recovered>), StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(|source| StoreError::NotWritable {
                dir: dir.to_path_buf(),
                source,
            })?;
        lock.try_lock().map_err(|_| StoreError::InUse {
            dir: dir.to_path_buf(),
        })?;
        let _ = fs::remove_file(dir.join("meta.tmp"));
        let meta_path = dir.join("meta");
        let meta = match fs::read(&meta_path) {
            Ok(data) => Meta::decode(&Bytes::from(data)).map_err(|source| StoreError::Meta {
                path: meta_path,
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(StoreError::io(meta_path)(e)),
        };
        let known: HashSet<u32> = meta.queues.iter().map(|q| q.id).collect();
        let segments = numbered(dir, "msgs.").map_err(StoreError::io(dir))?;
        let mut live = HashMap::new();
        let mut recovered = Vec::new();
        for &n in &segments {
            let kept = Self::recover_segment(dir, n, &known, &mut recovered)
                .map_err(StoreError::io(seg_path(dir, n)))?;
            if kept > 0 {
                live.insert(n, kept);
            } else {
                let _ = fs::remove_file(seg_path(dir, n));
                let _ = fs::remove_file(ack_path(dir, n));
            }
        }
        // Ack files whose segment is gone are leftovers of an interrupted clean-up.
        for n in numbered(dir, "acks.").map_err(StoreError::io(dir))? {
            if !live.contains_key(&n) {
                let _ = fs::remove_file(ack_path(dir, n));
            }
        }
        // Spill data never outlives the process that wrote it.
        for n in numbered(dir, "spill.").map_err(StoreError::io(dir))? {
            let _ = fs::remove_file(seg_path(dir, n | SPILL_BIT));
        }
        // New segments are created at their first record: a full disk does not stop
        // the start-up (consumers must be able to drain it).
        let cur = segments.last().map_or(1, |n| n + 1);
        let msgs = Writer::new(cur);
        let spill = Writer::new(1 | SPILL_BIT);
        let next_queue_id = meta
            .next_queue_id
            .max(meta.queues.iter().map(|q| q.id + 1).max().unwrap_or(1));
        info!(
            "store: {} messages recovered from {} segments in {}",
            recovered.len(),
            live.len(),
            dir.display()
        );
        let mut store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            msgs,
            spill,
            acks: HashMap::new(),
            readers: HashMap::new(),
            live,
            next_queue_id,
            segment_max: SEGMENT_MAX,
            full: false,
            refused: false,
            after_sync: Vec::new(),
            reserve_size: RESERVE,
            reserved: false,
            written: 0,
        };
        if !store.make_reserve() {
            warn!(
                "store: the disk under {} is full; starting with the disk alarm on \
                 (publishers blocked, consumers can drain)",
                dir.display()
            );
            store.full = true;
        }
        Ok((store, meta, recovered))
    }

    /// Reads one segment and its acks; appends what is still live; returns how many
    /// (message, queue) references were kept.
    fn recover_segment(
        dir: &Path,
        n: u32,
        known: &HashSet<u32>,
        out: &mut Vec<Recovered>,
    ) -> io::Result<u64> {
        let path = seg_path(dir, n);
        let data = Bytes::from(fs::read(&path)?);
        if let Err(e) = segment::check_header(&data, SEG_MAGIC) {
            if data.len() < segment::HEADER_LEN {
                // Created but never written: a crash right after rollover.
                return Ok(0);
            }
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        let (records, valid) = segment::scan_segment(&data);
        if valid < data.len() {
            warn!(
                "store: {}: dropping {} bytes of torn or corrupt tail after {} good records",
                path.display(),
                data.len() - valid,
                records.len()
            );
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(valid as u64)?;
            f.sync_all()?;
        }
        let mut state: HashMap<(u32, u32), u8> = HashMap::new();
        let mut returned: HashMap<(u32, u32), u32> = HashMap::new();
        let mut dead: HashMap<(u32, u32), u8> = HashMap::new();
        match fs::read(ack_path(dir, n)) {
            Ok(acks) => {
                if segment::check_header(&acks, ACK_MAGIC).is_ok() {
                    let (recs, valid) = segment::scan_acks(&acks);
                    if valid < acks.len() {
                        warn!(
                            "store: acks.{n:010}: ignoring {} bytes of torn tail",
                            acks.len() - valid
                        );
                        let f = OpenOptions::new().write(true).open(ack_path(dir, n))?;
                        f.set_len(valid as u64)?;
                    }
                    for (off, q, kind) in recs {
                        if kind == RETURNED {
                            *returned.entry((off, q)).or_insert(0) += 1;
                        }
                        if kind >= DEAD {
                            dead.insert((off, q), kind - DEAD);
                        }
                        let e = state.entry((off, q)).or_insert(0);
                        *e = (*e).max(kind_rank(kind));
                    }
                } else if acks.len() < segment::HEADER_LEN {
                    // Created but its header not yet written when the broker died. Left
                    // in place, later records would be appended after no header and
                    // the whole file ignored at the next start.
                    fs::remove_file(ack_path(dir, n))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut kept = 0;
        for record in records {
            let queues: Vec<(u32, bool)> = record
                .queues
                .iter()
                .filter(|q| known.contains(q))
                .filter_map(|&q| match state.get(&(record.offset, q)) {
                    Some(3) => None,
                    Some(1 | 2) => Some((q, true)),
                    _ => Some((q, false)),
                })
                .collect();
            if queues.is_empty() {
                continue;
            }
            kept += queues.len() as u64;
            let returns = if returned.is_empty() {
                Vec::new()
            } else {
                queues
                    .iter()
                    .filter_map(|&(q, _)| Some((q, *returned.get(&(record.offset, q))?)))
                    .collect()
            };
            let dead = if dead.is_empty() {
                Vec::new()
            } else {
                queues
                    .iter()
                    .filter(|(q, _)| state.get(&(record.offset, *q)) == Some(&2))
                    .filter_map(|&(q, _)| Some((q, *dead.get(&(record.offset, q))?)))
                    .collect()
            };
            out.push(Recovered {
                location: Location {
                    segment: n,
                    offset: record.offset,
                },
                record,
                queues,
                returns,
                dead,
            });
        }
        Ok(kept)
    }

    /// A fresh id for a new durable queue.
    pub fn next_queue_id(&mut self) -> u32 {
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        id
    }

    /// Appends a message for the queue references `queues` (durable ids and/or
    /// `SPILL`). A record that only spill references hold goes to the spill series. It
    /// reaches the disk at the next `sync`.
    pub fn append(
        &mut self,
        queues: &[u32],
        exchange: &[u8],
        key: &[u8],
        props: &[u8],
        body: &[u8],
    ) -> io::Result<Location> {
        self.append_timed(queues, exchange, key, props, body, None)
    }

    /// [`Store::append`] with the arrival time (epoch ms) of a message that can expire,
    /// recorded so that its TTL keeps counting across a restart.
    pub fn append_timed(
        &mut self,
        queues: &[u32],
        exchange: &[u8],
        key: &[u8],
        props: &[u8],
        body: &[u8],
        arrival_ms: Option<u64>,
    ) -> io::Result<Location> {
        let to_spill = queues.iter().all(|q| *q == SPILL);
        if self.full {
            self.refused = true;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "disk full: message not stored",
            ));
        }
        let max = self.segment_max;
        let w = self.writer(to_spill);
        if w.len >= max || w.broken {
            self.rollover(to_spill)?;
        }
        let w = self.writer(to_spill);
        let Ok(offset) = u32::try_from(w.len) else {
            self.refused = true;
            return Err(io::Error::other("segment offset overflow"));
        };
        let before = w.buf.len();
        segment::encode_publish_timed(&mut w.buf, queues, exchange, key, props, body, arrival_ms);
        w.len += (w.buf.len() - before) as u64;
        w.unsynced = true;
        let n = w.n;
        *self.live.entry(n).or_insert(0) += queues.len() as u64;
        Ok(Location { segment: n, offset })
    }

    fn writer(&mut self, spill: bool) -> &mut Writer {
        if spill {
            &mut self.spill
        } else {
            &mut self.msgs
        }
    }

    /// Closes the segment being written and starts the next one (created at its first
    /// write). The old one's buffered records go to disk first; on failure they are
    /// abandoned like a failed sync and the append is refused.
    fn rollover(&mut self, spill: bool) -> io::Result<()> {
        let dir = self.dir.clone();
        let w = self.writer(spill);
        let r = w.flush(&dir).and_then(|n| {
            if w.unsynced && !spill {
                w.fsync()?;
            }
            Ok(n)
        });
        match r {
            Ok(n) => self.written += n,
            Err(e) => {
                self.writer(spill).abandon();
                self.refused = true;
                self.note_error(&e);
                return Err(e);
            }
        }
        let w = self.writer(spill);
        let old = w.n;
        let next = if spill {
            ((old & !SPILL_BIT) + 1) | SPILL_BIT
        } else {
            old + 1
        };
        *w = Writer::new(next);
        if self.live.get(&old).copied().unwrap_or(0) == 0 {
            self.delete_segment(old);
        }
        Ok(())
    }

    /// The current durable segment has no live message left: close it and delete it (with
    /// its ack file), so its space comes back without waiting for the 64 MiB rollover.
    /// Needs no disk space (the next segment is created at its first record). Its
    /// buffered records, if any, are all settled and never need to reach the disk.
    fn reclaim_current(&mut self) {
        let old = self.msgs.n;
        if self.live.get(&old).copied().unwrap_or(0) != 0 {
            return;
        }
        self.msgs = Writer::new(old + 1);
        self.delete_segment(old);
    }

    /// Under a disk alarm: gives back the current segment if everything in it is
    /// settled, whatever its size. Cheap when there is nothing to do.
    pub fn compact(&mut self) {
        if self.msgs.len > segment::HEADER_LEN as u64 {
            self.reclaim_current();
        }
    }

    /// Creates the `reserve` file (or finds it whole). False when the disk has no room.
    fn make_reserve(&mut self) -> bool {
        let path = reserve_path(&self.dir);
        if fs::metadata(&path).is_ok_and(|m| m.len() >= self.reserve_size) {
            self.reserved = true;
            return true;
        }
        let ok = File::create(&path).and_then(|f| {
            let len = libc::off_t::try_from(self.reserve_size).unwrap_or(libc::off_t::MAX);
            // SAFETY: a valid open descriptor; posix_fallocate has no memory arguments.
            let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, len) };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(rc))
            }
        });
        match ok {
            Ok(()) => {
                self.reserved = true;
                true
            }
            Err(_) => {
                let _ = fs::remove_file(&path);
                self.reserved = false;
                false
            }
        }
    }

    /// A write failed: a full (or failing) disk refuses further appends and gives back
    /// the reserve so acks and metadata can still be written.
    fn note_error(&mut self, e: &io::Error) {
        if is_space_error(e) && !self.full {
            self.full = true;
            if self.reserved {
                let _ = fs::remove_file(reserve_path(&self.dir));
                self.reserved = false;
            }
        }
    }

    /// Something else of this turn could not be stored (the metadata snapshot): the
    /// turn's messages are abandoned too, so that none of its nacked publishes is
    /// recovered.
    pub fn refuse_turn(&mut self) {
        self.refused = true;
    }

    /// Whether the disk refused a write and appends are refused (disk alarm on).
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Space is back (`free` measured bytes, enough for the reserve and the alarm's
    /// limit): take the reserve again and accept appends. Returns whether it did.
    pub fn retry_after_full(&mut self, free: u64, limit: u64) -> bool {
        if !self.full || free < limit.saturating_add(self.reserve_size.saturating_mul(2)) {
            return false;
        }
        if self.make_reserve() {
            self.full = false;
        }
        !self.full
    }

    /// Bytes written since the last `take_written`, without resetting.
    pub fn pending_written(&self) -> u64 {
        self.written
    }

    /// Bytes written to the data directory since the last call (for the disk alarm's
    /// estimate between two measurements).
    pub fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }

    fn is_current(&self, n: u32) -> bool {
        n == self.msgs.n || n == self.spill.n
    }

    fn ack_record(&mut self, loc: Location, queue: u32, kind: u8) {
        // Spill segments are never recovered: nothing to record.
        if !self.live.contains_key(&loc.segment) || loc.segment & SPILL_BIT != 0 {
            return;
        }
        let dir = self.dir.clone();
        let entry = match self.acks.entry(loc.segment) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let path = ack_path(&dir, loc.segment);
                let fresh = !path.exists();
                let file = match OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        warn!("store: cannot open {}: {e}", path.display());
                        return;
                    }
                };
                let mut buf = BytesMut::new();
                if fresh {
                    buf.extend_from_slice(&segment::header(ACK_MAGIC));
                }
                v.insert(AckFile { file, buf })
            }
        };
        segment::encode_ack(&mut entry.buf, loc.offset, queue, kind);
    }

    /// Records that a delivery with manual ack went out (it comes back `redelivered`
    /// after a crash).
    pub fn delivered(&mut self, loc: Location, queue: u32) {
        self.ack_record(loc, queue, DELIVERED);
    }

    /// A quorum queue's message came back once more (its delivery count; see
    /// `broker::quorum`).
    pub fn returned(&mut self, loc: Location, queue: u32) {
        self.ack_record(loc, queue, RETURNED);
    }

    /// Quorum queue `queue` is dead-lettering the message at-least-once and no target
    /// queue has it yet (reason code `reason`, 0 to 3): after a restart it is still
    /// waiting to be dead-lettered, not ready (see `broker::at_least_once`).
    pub fn dead(&mut self, loc: Location, queue: u32, reason: u8) {
        self.ack_record(loc, queue, DEAD + (reason & 3));
    }

    /// [`Store::ack`], held back until this turn's message records are synced: the
    /// dead-lettered copy written this turn is durable before the source's ack can
    /// reach the disk, so a crash at any point loses nothing (at worst a duplicate).
    pub fn ack_after_sync(&mut self, loc: Location, queue: u32) {
        self.after_sync.push((loc, queue));
    }

    /// The queue is done with the message (acked, dropped, purged, queue deleted).
    pub fn ack(&mut self, loc: Location, queue: u32) {
        self.ack_record(loc, queue, ACK);
        let Some(n) = self.live.get_mut(&loc.segment) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n == 0 {
            if !self.is_current(loc.segment) {
                self.delete_segment(loc.segment);
            } else if loc.segment == self.msgs.n && (self.msgs.len >= RECLAIM_MIN || self.full) {
                self.reclaim_current();
            }
        }
    }

    fn delete_segment(&mut self, n: u32) {
        self.live.remove(&n);
        self.acks.remove(&n);
        self.readers.remove(&n);
        let _ = fs::remove_file(seg_path(&self.dir, n));
        let _ = fs::remove_file(ack_path(&self.dir, n));
    }

    /// Reads back the body of the message stored at `loc` (a paged message being
    /// delivered). The record may still sit in this turn's write buffer.
    pub fn read_body(&mut self, loc: Location) -> io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stored message record is damaged",
            )
        };
        let w = if loc.segment & SPILL_BIT != 0 {
            &self.spill
        } else {
            &self.msgs
        };
        let written = w.written();
        let (record, at) = if loc.segment == w.n && u64::from(loc.offset) >= written {
            let start = (u64::from(loc.offset) - written) as usize;
            let head = w.buf.get(start..start + 8).ok_or_else(bad)?;
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let rec = w.buf.get(start..start + 8 + len).ok_or_else(bad)?;
            (Bytes::copy_from_slice(rec), 0)
        } else {
            let file = match self.readers.entry(loc.segment) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(File::open(seg_path(&self.dir, loc.segment))?)
                }
            };
            let mut head = [0u8; 8];
            file.read_exact_at(&mut head, u64::from(loc.offset))?;
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let mut rec = vec![0u8; 8 + len];
            file.read_exact_at(&mut rec, u64::from(loc.offset))?;
            (Bytes::from(rec), 0)
        };
        let (r, _) = segment::parse_record(&record, at).ok_or_else(bad)?;
        Ok(r.body)
    }

    /// The sync phase: writes this turn's records and, when durable messages were
    /// appended, makes them durable with one fdatasync. Returns whether it synced.
    ///
    /// Err means this turn's durable records are not on disk and never will be (their
    /// confirms are nacks): a write or fsync failed, or an append was refused. The
    /// segment is cut back so none of them is recovered after a restart. Ack records
    /// never fail a sync: what the disk refuses stays buffered, in order, and is written
    /// at a later turn (or dropped with its segment once that segment is deleted).
    pub fn sync(&mut self) -> io::Result<bool> {
        self.write_acks();
        let dir = self.dir.clone();
        match self.spill.flush(&dir) {
            Ok(n) => {
                self.written += n;
                self.spill.good = self.spill.written();
            }
            Err(e) => {
                // Paged bodies of transient messages: lost, and said so at delivery.
                self.spill.abandon();
                self.note_error(&e);
            }
        }
        self.spill.unsynced = false;
        #[cfg(test)]
        if FAIL_NEXT_SYNC.with(|f| f.replace(false)) {
            self.msgs.abandon();
            return Err(io::Error::other("injected sync failure (test)"));
        }
        if std::mem::take(&mut self.refused) {
            self.msgs.abandon();
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "disk full: messages refused",
            ));
        }
        let unsynced = self.msgs.unsynced;
        let r = self.msgs.flush(&dir).and_then(|n| {
            if unsynced {
                self.msgs.fsync()?;
            }
            Ok(n)
        });
        match r {
            Ok(n) => {
                self.written += n;
                if !self.after_sync.is_empty() {
                    for (loc, q) in std::mem::take(&mut self.after_sync) {
                        self.ack(loc, q);
                    }
                    self.write_acks();
                }
                Ok(unsynced)
            }
            Err(e) => {
                self.msgs.abandon();
                self.note_error(&e);
                Err(e)
            }
        }
    }

    /// Writes buffered ack records, resuming exactly where a short or failed write
    /// stopped (records are fixed-size and append-only, so a resumed write is whole).
    fn write_acks(&mut self) {
        let mut failed = None;
        for a in self.acks.values_mut() {
            while !a.buf.is_empty() {
                match a.file.write(&a.buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        bytes::Buf::advance(&mut a.buf, n);
                        self.written += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            if !self.full {
                log::error!("store: cannot write ack records: {e}; they are kept and retried");
            }
            self.note_error(&e);
        }
    }

    /// Clean stop: everything written and synced, ack files included; spill data is
    /// deleted (it would be at the next start anyway).
    pub fn close(&mut self) -> io::Result<()> {
        self.sync()?;
        for a in self.acks.values_mut() {
            if !a.buf.is_empty() {
                return Err(io::Error::other("ack records could not be written"));
            }
            a.file.sync_data()?;
        }
        if let Some(f) = self.msgs.file.as_ref() {
            f.sync_data()?;
        }
        let spills: Vec<u32> = self
            .live
            .keys()
            .copied()
            .filter(|n| n & SPILL_BIT != 0)
            .collect();
        for n in spills {
            self.delete_segment(n);
        }
        let _ = fs::remove_file(seg_path(&self.dir, self.spill.n));
        Ok(())
    }

    /// Replaces the metadata snapshot.
    pub fn write_meta(&mut self, meta: &Meta) -> io::Result<()> {
        let mut m = meta.clone();
        m.next_queue_id = self.next_queue_id;
        let r = m.write_atomically(&self.dir);
        if let Err(e) = &r {
            // A half-written snapshot must not hold on to the space it took.
            let _ = fs::remove_file(self.dir.join("meta.tmp"));
            self.note_error(e);
        }
        r
    }

    /// Segment numbers with live messages (tests and diagnostics).
    pub fn live_segments(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .live
            .keys()
            .copied()
            .filter(|n| n & SPILL_BIT == 0)
            .collect();
        v.sort_unstable();
        v
    }

    #[cfg(test)]
    fn set_segment_max(&mut self, n: u64) {
        self.segment_max = n;
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("segment", &self.msgs.n)
            .field("live", &self.live)
            .finish()
    }
}

/// Ack beats dead-lettering, which beats delivered, when several are recorded for one
/// reference.
fn kind_rank(kind: u8) -> u8 {
    match kind {
        ACK => 3,
        k if k >= DEAD => 2,
        DELIVERED => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("warren-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn with_queue(id: u32) -> Meta {
        Meta {
            next_queue_id: id + 1,
            queues: vec![meta::MetaQueue {
                vhost: Bytes::from_static(b"/"),
                name: Bytes::from(format!("q{id}")),
                id,
                auto_delete: false,
                arguments: Default::default(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_file_in_the_way_of_the_data_directory_is_named_in_the_error() {
        let dir = tmp("unusable");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-a-directory");
        fs::write(&file, b"hello").unwrap();
        let e = Store::open(&file).err().unwrap();
        assert!(matches!(e, StoreError::CreateDir { .. }), "{e:?}");
        let want = format!("cannot create data directory {}: ", file.display());
        assert!(e.to_string().starts_with(&want), "{e}");

        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn unacked_messages_survive_and_acked_ones_do_not() {
        let dir = tmp("basic");
        {
            let (mut s, _, rec) = Store::open(&dir).unwrap();
            assert!(rec.is_empty());
            s.write_meta(&with_queue(1)).unwrap();
            let a = s.append(&[1], b"", b"q1", &[0, 0], b"a").unwrap();
            let _b = s.append(&[1], b"", b"q1", &[0, 0], b"b").unwrap();
            let c = s.append(&[1], b"", b"q1", &[0, 0], b"c").unwrap();
            assert!(s.sync().unwrap());
            s.ack(a, 1);
            s.delivered(c, 1);
            s.close().unwrap();
        }
        let (_s, meta, rec) = Store::open(&dir).unwrap();
        assert_eq!(meta.queues.len(), 1);
        let bodies: Vec<(&[u8], bool)> = rec
            .iter()
            .map(|r| (&r.record.body[..], r.queues[0].1))
            .collect();
        assert_eq!(bodies, vec![(b"b" as &[u8], false), (b"c", true)]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waiting_dead_letters_are_recovered_and_held_back_acks_wait_for_the_sync() {
        let dir = tmp("dead");
        {
            let (mut s, _, _) = Store::open(&dir).unwrap();
            s.write_meta(&with_queue(1)).unwrap();
            let a = s.append(&[1], b"", b"q1", &[0, 0], b"a").unwrap();
            let b = s.append(&[1], b"", b"q1", &[0, 0], b"b").unwrap();
            assert!(s.sync().unwrap());
            s.dead(a, 1, 1);
            s.dead(b, 1, 0);
            // b's copy goes elsewhere: its ack waits for the sync of this turn...
            s.ack_after_sync(b, 1);
            s.write_acks();
            assert!(s.acks.values().all(|f| f.buf.is_empty()));
            assert_eq!(s.after_sync.len(), 1, "not written before the sync");
            // ...and is written by it.
            assert!(!s.sync().unwrap());
            assert!(s.after_sync.is_empty());
            let c = s.append(&[1], b"", b"q1", &[0, 0], b"c").unwrap();
            s.dead(c, 1, 3);
            s.ack_after_sync(c, 1);
            // A crash before the next sync: c's ack never reached the disk.
            s.write_acks();
            s.msgs.flush(&dir).unwrap();
        }
        let (_s, _, rec) = Store::open(&dir).unwrap();
        let bodies: Vec<&[u8]> = rec.iter().map(|r| &r.record.body[..]).collect();
        let dead: Vec<Vec<(u32, u8)>> = rec.iter().map(|r| r.dead.clone()).collect();
        assert_eq!(bodies, [b"a" as &[u8], b"c"]);
        assert_eq!(dead, [vec![(1, 1)], vec![(1, 3)]]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn messages_of_unknown_queues_are_not_recovered() {
        let dir = tmp("unknown");
        {
            let (mut s, _, _) = Store::open(&dir).unwrap();
            s.append(&[9], b"", b"gone", &[0, 0], b"x").unwrap();
            s.close().unwrap();
        }
        let (s, _, rec) = Store::open(&dir).unwrap();
        assert!(rec.is_empty());
        assert!(s.live_segments().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fully_acked_segments_are_deleted() {
        let dir = tmp("reclaim");
        let (mut s, _, _) = Store::open(&dir).unwrap();
        s.write_meta(&with_queue(1)).unwrap();
        s.set_segment_max(64);
        let locs: Vec<Location> = (0..10)
            .map(|i| s.append(&[1], b"", b"q1", &[0, 0], &[i; 40]).unwrap())
            .collect();
        s.sync().unwrap();
        let first = locs[0].segment;
        assert!(seg_path(&dir, first).exists());
        for l in &locs[..9] {
            s.ack(*l, 1);
        }
        s.sync().unwrap();
        assert!(
            !seg_path(&dir, first).exists(),
            "segment of acked messages reclaimed"
        );
        assert_eq!(s.live_segments(), vec![locs[9].segment]);
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn spill_records_are_readable_never_synced_and_gone_after_a_restart() {
        let dir = tmp("spill");
        {
            let (mut s, _, _) = Store::open(&dir).unwrap();
            s.write_meta(&with_queue(1)).unwrap();
            let sp = s
                .append(&[SPILL], b"", b"t", &[0, 0], b"transient body")
                .unwrap();
            let both = s
                .append(&[1, SPILL], b"", b"p", &[0, 0], b"persistent body")
                .unwrap();
            assert!(sp.segment & SPILL_BIT != 0 && both.segment & SPILL_BIT == 0);
            // Readable before and after the turn's write.
            assert_eq!(&s.read_body(sp).unwrap()[..], b"transient body");
            assert!(s.sync().unwrap(), "the durable record is synced");
            assert_eq!(&s.read_body(sp).unwrap()[..], b"transient body");
            assert_eq!(&s.read_body(both).unwrap()[..], b"persistent body");
            let sp2 = s.append(&[SPILL], b"", b"t", &[0, 0], b"x").unwrap();
            assert!(!s.sync().unwrap(), "spill data alone needs no fsync");
            assert_eq!(&s.read_body(sp2).unwrap()[..], b"x");
            // Simulate a crash: no close, the spill file stays behind.
        }
        assert!(numbered(&dir, "spill.").unwrap().len() == 1);
        let (_s, _, rec) = Store::open(&dir).unwrap();
        assert!(
            numbered(&dir, "spill.").unwrap().is_empty(),
            "the old one is gone; a new one is created at its first record"
        );
        let bodies: Vec<&[u8]> = rec.iter().map(|r| &r.record.body[..]).collect();
        assert_eq!(bodies, vec![b"persistent body" as &[u8]]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_sync_is_cut_back_and_its_nacked_records_never_recovered() {
        let dir = tmp("failsync");
        {
            let (mut s, _, _) = Store::open(&dir).unwrap();
            s.write_meta(&with_queue(1)).unwrap();
            let a = s.append(&[1], b"", b"q1", &[0, 0], b"a").unwrap();
            assert!(s.sync().unwrap());
            let b = s.append(&[1], b"", b"q1", &[0, 0], b"nacked").unwrap();
            FAIL_NEXT_SYNC.with(|f| f.set(true));
            assert!(s.sync().is_err());
            // The offsets handed out before the failure are never reused: an ack of the
            // nacked message must not settle a later one.
            let c = s.append(&[1], b"", b"q1", &[0, 0], b"c").unwrap();
            assert_ne!(c.segment, a.segment);
            assert!(s.sync().unwrap());
            s.ack(b, 1);
            s.close().unwrap();
        }
        let (_s, _, rec) = Store::open(&dir).unwrap();
        let bodies: Vec<&[u8]> = rec.iter().map(|r| &r.record.body[..]).collect();
        assert_eq!(bodies, vec![b"a" as &[u8], b"c"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_drained_current_segment_gives_its_space_back() {
        let dir = tmp("drain");
        let (mut s, _, _) = Store::open(&dir).unwrap();
        s.write_meta(&with_queue(1)).unwrap();
        let body = vec![7u8; 4096];
        let locs: Vec<Location> = (0..300)
            .map(|_| s.append(&[1], b"", b"q1", &[0, 0], &body).unwrap())
            .collect();
        s.sync().unwrap();
        let seg = locs[0].segment;
        assert!(locs.iter().all(|l| l.segment == seg), "one current segment");
        assert!(fs::metadata(seg_path(&dir, seg)).unwrap().len() > RECLAIM_MIN);
        for l in &locs {
            s.delivered(*l, 1);
        }
        s.sync().unwrap();
        for l in &locs {
            s.ack(*l, 1);
        }
        s.sync().unwrap();
        assert!(!seg_path(&dir, seg).exists(), "drained segment deleted");
        assert!(!ack_path(&dir, seg).exists(), "with its ack file");
        assert!(s.live_segments().is_empty());
        let next = s.append(&[1], b"", b"q1", &[0, 0], b"x").unwrap();
        assert!(next.segment > seg);
        s.sync().unwrap();
        drop(s);
        let (_s, _, rec) = Store::open(&dir).unwrap();
        assert_eq!(rec.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_store_refuses_appends_nacks_the_turn_and_recovers_when_space_is_back() {
        let dir = tmp("full");
        let (mut s, _, _) = Store::open(&dir).unwrap();
        assert!(
            reserve_path(&dir).exists(),
            "the reserve is taken at start-up"
        );
        s.write_meta(&with_queue(1)).unwrap();
        let kept = s.append(&[1], b"", b"q1", &[0, 0], b"kept").unwrap();
        s.sync().unwrap();
        s.note_error(&io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(s.is_full());
        assert!(!reserve_path(&dir).exists(), "the reserve is given back");
        assert!(s.append(&[1], b"", b"q1", &[0, 0], b"refused").is_err());
        assert!(
            s.sync().is_err(),
            "the turn with a refused append is nacked"
        );
        // Acks still work while full.
        s.ack(kept, 1);
        assert!(!s.retry_after_full(RESERVE, 0), "not enough room yet");
        assert!(s.retry_after_full(u64::MAX / 4, 0));
        assert!(!s.is_full() && reserve_path(&dir).exists());
        s.append(&[1], b"", b"q1", &[0, 0], b"later").unwrap();
        assert!(s.sync().unwrap());
        s.close().unwrap();
        drop(s);
        let (_s, _, rec) = Store::open(&dir).unwrap();
        let bodies: Vec<&[u8]> = rec.iter().map(|r| &r.record.body[..]).collect();
        assert_eq!(bodies, vec![b"later" as &[u8]]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_broker_cannot_open_the_same_directory() {
        let dir = tmp("lock");
        let first = Store::open(&dir).unwrap();
        let err = Store::open(&dir).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_meta_file_is_a_clear_error() {
        let dir = tmp("badmeta");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("meta"), b"WRNMETA\x01garbage-garbage-garbage").unwrap();
        let err = Store::open(&dir).err().unwrap();
        assert!(err.to_string().contains("meta"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
