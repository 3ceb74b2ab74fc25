//! A published message as queues hold it.
//!
//! A message is one reference-counted heap allocation, shared by every queue it was routed
//! to and every channel it was delivered on: fan-out costs a count increment per queue.
//! The allocation holds a 16-byte head, then (when present) the store location and the
//! arrival time of a message that can expire ([`Timing`]), then (for
//! a body kept by reference) a `Bytes` handle, then the exchange name, routing key, raw
//! properties and (for a small body) the body itself:
//!
//! ```text
//! | refs u32 | body_len u32 | props_len u32 | exch_len u8 | rk_len u8 | flags u8 | pad |
//! | Location (8 B, if LOCATED) | Timing (16 B, if TIMED) | Bytes (32 B, if SHARED) |
//! | exchange | rk | props | body |
//! ```
//!
//! Why not `Rc<struct { 4 × Bytes }>`: queued messages dominate a broker's memory. Four
//! `Bytes` handles, `Rc`'s two counters and slices that pin the read buffer (with the
//! method and header frames around the body) cost about 260 bytes per queued 16-byte
//! message; this layout costs its size rounded up to the allocator's 16 bytes (64 bytes
//! for a 16-byte body with a short routing key) plus the queue's 16-byte entry.
//!
//! Small bodies (up to [`INLINE_BODY_MAX`]) are copied into the allocation: copying a few
//! hundred bytes costs less than a `Bytes` handle's atomic count, and the copy frees the
//! read buffer. Larger bodies stay a zero-copy `Bytes` slice of the read buffer.
//!
//! All unsafe code of the representation is in this module; the rest of the broker sees
//! a `Clone` handle with slice accessors.

use bytes::Bytes;
use std::alloc::{self, Layout};
use std::cell::Cell;
use std::fmt;
use std::mem::{align_of, size_of};
use std::ptr::{self, NonNull};

use crate::proto::properties;
use crate::store::Location;

/// Bodies up to this many bytes live inside the message's allocation; larger ones are
/// `Bytes` slices of the buffer they arrived in. Must stay below [`BODY_BY_REF`], so
/// that an inline body is always copied into the write buffer (never sent by reference).
pub const INLINE_BODY_MAX: usize = 512;

/// Bodies at least this large are queued for writing by reference (`conn::OutBuf`);
/// smaller ones are copied into the write buffer, where an extra iovec would cost more
/// than the copy. Defined here, beside [`INLINE_BODY_MAX`] which must stay below it, so
/// that `message` does not depend on `conn`.
pub const BODY_BY_REF: usize = 4096;

const PERSISTENT: u8 = 1;
/// The body is not in memory: it is read back from the location on delivery.
const PAGED: u8 = 2;
/// A `Location` follows the head.
const LOCATED: u8 = 4;
/// The body is a `Bytes` handle stored after the head (and location).
const SHARED: u8 = 8;
/// A [`Timing`] follows the head (and location): the message can expire.
const TIMED: u8 = 16;

#[repr(C)]
struct Head {
    refs: Cell<u32>,
    body_len: u32,
    props_len: u32,
    exchange_len: u8,
    routing_key_len: u8,
    flags: u8,
    _pad: u8,
}

const HEAD: usize = size_of::<Head>();
const LOCATION: usize = size_of::<Location>();
const TIMING: usize = size_of::<Timing>();
const SHARED_BODY: usize = size_of::<Bytes>();
const ALIGN: usize = align_of::<Bytes>();

// The Bytes handle sits at offset HEAD or HEAD + LOCATION: both must be aligned for it.
const _: () = assert!(
    HEAD.is_multiple_of(ALIGN) && LOCATION.is_multiple_of(ALIGN) && TIMING.is_multiple_of(ALIGN)
);
const _: () = assert!(align_of::<Head>() <= ALIGN && align_of::<Location>() <= ALIGN);
const _: () = assert!(INLINE_BODY_MAX < BODY_BY_REF);

thread_local! {
    /// Bytes of message bodies held in memory by this thread's broker.
    static RESIDENT: Cell<usize> = const { Cell::new(0) };
}

/// Bytes of message bodies currently held in memory (the paging decision's input).
pub fn resident_bytes() -> usize {
    RESIDENT.with(Cell::get)
}

/// Where a message's body is.
enum BodyIn<'a> {
    Inline(&'a [u8]),
    Shared(Bytes),
    Paged(usize),
}

/// A message body ready to send: borrowed from the message, or read back from the store.
#[derive(Debug)]
pub enum Body<'a> {
    /// In the message's own allocation (small bodies).
    Inline(&'a [u8]),
    /// A shared slice of the buffer it arrived in.
    Shared(&'a Bytes),
    /// Read back from the store (paged bodies).
    Loaded(Bytes),
}

impl Body<'_> {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Body::Inline(s) => s,
            Body::Shared(b) => b,
            Body::Loaded(b) => b,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body as a shareable handle, when it is one (large bodies are written by
    /// reference instead of being copied into the write buffer).
    pub fn shared(&self) -> Option<&Bytes> {
        match self {
            Body::Inline(_) => None,
            Body::Shared(b) => Some(b),
            Body::Loaded(b) => Some(b),
        }
    }
}

/// When a message that can expire arrived, and its own TTL: kept in the message (not in
/// a queue entry) because every queue it was routed to counts from the same arrival, and
/// a requeued message keeps its original expiry. Only messages that carry an
/// `expiration` or were routed to a queue with a TTL have one (16 bytes more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Timing {
    /// Milliseconds since the epoch when the broker accepted it (a wall clock, so that
    /// it keeps counting across a restart).
    pub arrival_ms: u64,
    /// Its `expiration` property in milliseconds; `u64::MAX` when it has none.
    pub ttl_ms: u64,
}

impl Timing {
    /// When it expires in a queue whose `x-message-ttl` is `queue_ttl` (the smaller of
    /// the two TTLs, counted from arrival); None when neither applies.
    #[inline]
    pub fn expiry(&self, queue_ttl: Option<u64>) -> Option<u64> {
        let ttl = queue_ttl.unwrap_or(u64::MAX).min(self.ttl_ms);
        (ttl != u64::MAX).then(|| self.arrival_ms.saturating_add(ttl))
    }
}

/// An immutable published message. `clone()` shares it (a count increment).
pub struct Message {
    head: NonNull<Head>,
}

impl Message {
    /// A message whose body is in memory. `properties` must be a validated raw property
    /// list (see `proto::ContentHeader`); `location` is where the store keeps it, if it does.
    pub fn new(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body: Bytes,
        location: Option<Location>,
    ) -> Message {
        Message::new_timed(exchange, routing_key, properties, body, location, None)
    }

    /// [`Message::new`] with the arrival and TTL of a message that can expire. Inlined
    /// so that `new` (no timing) is compiled without the timing's branches.
    #[inline(always)]
    pub fn new_timed(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body: Bytes,
        location: Option<Location>,
        timing: Option<Timing>,
    ) -> Message {
        if body.len() <= INLINE_BODY_MAX {
            let inline = BodyIn::Inline(&body);
            Message::build(exchange, routing_key, properties, inline, location, timing)
        } else {
            // Moved in, not cloned: no count traffic on the shared buffer.
            let shared = BodyIn::Shared(body);
            Message::build(exchange, routing_key, properties, shared, location, timing)
        }
    }

    /// A message whose body of `body_len` bytes stays on disk at `location`.
    pub fn paged(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body_len: usize,
        location: Location,
    ) -> Message {
        Message::paged_timed(exchange, routing_key, properties, body_len, location, None)
    }

    /// [`Message::paged`] with the arrival and TTL of a message that can expire.
    pub fn paged_timed(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body_len: usize,
        location: Location,
        timing: Option<Timing>,
    ) -> Message {
        let body = BodyIn::Paged(body_len);
        Message::build(
            exchange,
            routing_key,
            properties,
            body,
            Some(location),
            timing,
        )
    }

    #[inline(always)]
    fn build(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body: BodyIn<'_>,
        location: Option<Location>,
        timing: Option<Timing>,
    ) -> Message {
        // Exchange names and routing keys are shortstrs (at most 255 bytes) on the wire
        // and in the store; anything longer would be a bug upstream, cut rather than trusted.
        let exchange = &exchange[..exchange.len().min(255)];
        let routing_key = &routing_key[..routing_key.len().min(255)];
        // A property list arrives in one frame, so its length fits a frame size (u32).
        let properties = &properties[..properties.len().min(u32::MAX as usize)];
        let mut flags = 0;
        if properties::delivery_mode(properties) == Some(2) {
            flags |= PERSISTENT;
        }
        if location.is_some() {
            flags |= LOCATED;
        }
        if timing.is_some() {
            flags |= TIMED;
        }
        let (body_len, inline, resident) = match &body {
            BodyIn::Inline(b) => (b.len(), *b, b.len()),
            BodyIn::Shared(b) => {
                flags |= SHARED;
                (b.len(), &[][..], b.len())
            }
            BodyIn::Paged(n) => {
                flags |= PAGED;
                (*n, &[][..], 0)
            }
        };
        let head = Head {
            refs: Cell::new(1),
            body_len: u32::try_from(body_len).unwrap_or(u32::MAX),
            props_len: properties.len() as u32,
            exchange_len: exchange.len() as u8,
            routing_key_len: routing_key.len() as u8,
            flags,
            _pad: 0,
        };
        let layout = layout_of(&head);
        // SAFETY: `layout` has a non-zero size (at least HEAD) and ALIGN alignment. Every
        // write below stays inside it: `layout_of` sums exactly the parts written here,
        // at the offsets `shared_at` and `data_at` compute from the same flags.
        unsafe {
            let raw = alloc::alloc(layout);
            let Some(nn) = NonNull::new(raw.cast::<Head>()) else {
                alloc::handle_alloc_error(layout);
            };
            ptr::write(nn.as_ptr(), head);
            if let Some(loc) = location {
                ptr::write(raw.add(HEAD).cast::<Location>(), loc);
            }
            if let Some(t) = timing {
                ptr::write(raw.add(timing_at(flags)).cast::<Timing>(), t);
            }
            if let BodyIn::Shared(b) = body {
                ptr::write(raw.add(shared_at(flags)).cast::<Bytes>(), b);
            }
            let mut at = raw.add(data_at(flags));
            for part in [exchange, routing_key, properties, inline] {
                ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                at = at.add(part.len());
            }
            RESIDENT.with(|r| r.set(r.get() + resident));
            Message { head: nn }
        }
    }

    fn head(&self) -> &Head {
        // SAFETY: the allocation lives while any handle does (reference count).
        unsafe { self.head.as_ref() }
    }

    fn base(&self) -> *const u8 {
        self.head.as_ptr().cast::<u8>().cast_const()
    }

    fn flags(&self) -> u8 {
        self.head().flags
    }

    /// `len` bytes of the data area, `skip` bytes in.
    fn data(&self, skip: usize, len: usize) -> &[u8] {
        // SAFETY: the data area holds exchange, routing key, properties and the inline
        // body back to back, written by `build` with the lengths recorded in the head;
        // callers ask only for those parts.
        unsafe { std::slice::from_raw_parts(self.base().add(data_at(self.flags()) + skip), len) }
    }

    pub fn exchange(&self) -> &[u8] {
        self.data(0, usize::from(self.head().exchange_len))
    }

    pub fn routing_key(&self) -> &[u8] {
        let h = self.head();
        self.data(usize::from(h.exchange_len), usize::from(h.routing_key_len))
    }

    /// Raw basic properties (flags + list), re-sent verbatim on delivery.
    pub fn properties(&self) -> &[u8] {
        let h = self.head();
        let skip = usize::from(h.exchange_len) + usize::from(h.routing_key_len);
        self.data(skip, h.props_len as usize)
    }

    /// The body when it is in memory; a paged message's is read from the store
    /// (`broker::load_body_in`), and this returns an empty slice for it.
    pub fn body(&self) -> Body<'_> {
        let h = self.head();
        let flags = h.flags;
        if flags & SHARED != 0 {
            // SAFETY: `build` wrote a Bytes at this offset when it set SHARED; it is
            // dropped only with the allocation.
            return Body::Shared(unsafe { &*self.base().add(shared_at(flags)).cast::<Bytes>() });
        }
        if flags & PAGED != 0 {
            return Body::Inline(&[]);
        }
        let skip = usize::from(h.exchange_len) + usize::from(h.routing_key_len);
        Body::Inline(self.data(skip + h.props_len as usize, h.body_len as usize))
    }

    /// Whether the body must be read back from the store to deliver it.
    pub fn is_paged(&self) -> bool {
        self.flags() & PAGED != 0
    }

    /// The body's length, in memory or not.
    pub fn body_len(&self) -> usize {
        self.head().body_len as usize
    }

    /// Where the store keeps it (persistent messages of durable queues, paged messages).
    pub fn location(&self) -> Option<Location> {
        if self.flags() & LOCATED == 0 {
            return None;
        }
        // SAFETY: `build` wrote a Location right after the head when it set LOCATED.
        Some(unsafe { ptr::read(self.base().add(HEAD).cast::<Location>()) })
    }

    /// Its arrival and TTL, when it can expire (see [`Timing`]).
    #[inline]
    pub fn timing(&self) -> Option<Timing> {
        if self.flags() & TIMED == 0 {
            return None;
        }
        // SAFETY: `build` wrote a Timing at this offset when it set TIMED.
        Some(unsafe { ptr::read(self.base().add(timing_at(self.flags())).cast::<Timing>()) })
    }

    /// delivery_mode = 2, or kept by the store for a quorum queue (see
    /// [`Message::into_persistent`]).
    pub fn is_persistent(&self) -> bool {
        self.flags() & PERSISTENT != 0
    }

    /// This message, persistent whatever its `delivery_mode` says (which is delivered
    /// unchanged): a quorum queue keeps every message in the store, so its store
    /// reference is handled as a persistent message's. Only a message no one shares yet
    /// is changed; a shared one is returned as it is.
    pub fn into_persistent(self) -> Message {
        if self.ref_count() == 1 {
            // SAFETY: the head is valid for the message's life, and with one handle
            // (this one, owned) nothing else can be reading it.
            unsafe { (*self.head.as_ptr()).flags |= PERSISTENT };
        }
        self
    }

    /// How many handles share this message (tests and diagnostics).
    pub fn ref_count(&self) -> u32 {
        self.head().refs.get()
    }
}

/// Offset of the timing.
fn timing_at(flags: u8) -> usize {
    HEAD + if flags & LOCATED != 0 { LOCATION } else { 0 }
}

/// Offset of the shared body handle.
fn shared_at(flags: u8) -> usize {
    timing_at(flags) + if flags & TIMED != 0 { TIMING } else { 0 }
}

/// Offset of the exchange name, the first byte of the data area.
fn data_at(flags: u8) -> usize {
    shared_at(flags) + if flags & SHARED != 0 { SHARED_BODY } else { 0 }
}

/// The allocation's layout, from the head alone (so that drop can recompute it).
fn layout_of(h: &Head) -> Layout {
    let inline = if h.flags & (SHARED | PAGED) == 0 {
        h.body_len as usize
    } else {
        0
    };
    let size = data_at(h.flags)
        + usize::from(h.exchange_len)
        + usize::from(h.routing_key_len)
        + h.props_len as usize
        + inline;
    // At most 88 + 510 + 4 GiB + INLINE_BODY_MAX bytes: far below isize::MAX on the 64-bit
    // targets Warren builds for, so this cannot fail.
    match Layout::from_size_align(size, ALIGN) {
        Ok(l) => l,
        Err(_) => std::process::abort(),
    }
}

impl Clone for Message {
    fn clone(&self) -> Message {
        let refs = &self.head().refs;
        // Each handle lives in a queue entry or an unacked record of at least 16 bytes,
        // so 2^32 handles cannot exist; overflow is a bug and aborts, as Rc's does.
        match refs.get().checked_add(1) {
            Some(n) => refs.set(n),
            None => std::process::abort(),
        }
        Message { head: self.head }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        let h = self.head();
        let n = h.refs.get() - 1;
        h.refs.set(n);
        if n > 0 {
            return;
        }
        let flags = h.flags;
        let layout = layout_of(h);
        if flags & PAGED == 0 {
            let len = h.body_len as usize;
            RESIDENT.with(|r| r.set(r.get().saturating_sub(len)));
        }
        // SAFETY: this was the last handle. The Bytes written by `build` (when SHARED) is
        // dropped exactly once, then the allocation is freed with the layout it had.
        unsafe {
            let raw = self.head.as_ptr().cast::<u8>();
            if flags & SHARED != 0 {
                ptr::drop_in_place(raw.add(shared_at(flags)).cast::<Bytes>());
            }
            alloc::dealloc(raw, layout);
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("exchange", &String::from_utf8_lossy(self.exchange()))
            .field("routing_key", &String::from_utf8_lossy(self.routing_key()))
            .field("body_len", &self.body_len())
            .field("persistent", &self.is_persistent())
            .field("paged", &self.is_paged())
            .field("location", &self.location())
            .field("timing", &self.timing())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(delivery_mode: Option<u8>) -> Vec<u8> {
        match delivery_mode {
            // property flags: bit 12 = delivery-mode
            Some(m) => vec![0x10, 0x00, m],
            None => vec![0, 0],
        }
    }

    #[test]
    fn small_message_round_trips_its_parts() {
        let m = Message::new(
            b"amq.direct",
            b"key",
            &props(None),
            Bytes::from_static(b"hello"),
            None,
        );
        assert_eq!(m.exchange(), b"amq.direct");
        assert_eq!(m.routing_key(), b"key");
        assert_eq!(m.properties(), &[0, 0]);
        assert!(matches!(m.body(), Body::Inline(b"hello")));
        assert_eq!(m.body_len(), 5);
        assert!(!m.is_persistent() && !m.is_paged());
        assert_eq!(m.location(), None);
    }

    #[test]
    fn large_body_is_shared_not_copied() {
        let body = Bytes::from(vec![7u8; INLINE_BODY_MAX + 1]);
        let at = body.as_ptr();
        let loc = Location {
            segment: 3,
            offset: 99,
        };
        let m = Message::new(b"", b"q", &props(Some(2)), body, Some(loc));
        let b = m.body();
        let shared = b.shared().expect("a large body is a Bytes handle");
        assert_eq!(shared.as_ptr(), at, "same buffer, no copy");
        assert_eq!(b.len(), INLINE_BODY_MAX + 1);
        assert_eq!(m.location(), Some(loc));
        assert!(m.is_persistent());
        assert_eq!((m.exchange(), m.routing_key()), (&b""[..], &b"q"[..]));
    }

    #[test]
    fn inline_body_boundary() {
        let at_max = Message::new(
            b"",
            b"",
            &[0, 0],
            Bytes::from(vec![1; INLINE_BODY_MAX]),
            None,
        );
        assert!(matches!(at_max.body(), Body::Inline(b) if b.len() == INLINE_BODY_MAX));
        let empty = Message::new(b"", b"", &[0, 0], Bytes::new(), None);
        assert!(empty.body().is_empty());
    }

    #[test]
    fn paged_message_has_no_body_in_memory() {
        let loc = Location {
            segment: 1,
            offset: 2,
        };
        let before = resident_bytes();
        let m = Message::paged(b"x", b"rk", &props(Some(1)), 1 << 20, loc);
        assert_eq!(resident_bytes(), before);
        assert!(m.is_paged() && !m.is_persistent());
        assert_eq!(m.body_len(), 1 << 20);
        assert!(m.body().is_empty());
        assert_eq!(m.location(), Some(loc));
        assert_eq!(m.routing_key(), b"rk");
    }

    #[test]
    fn clones_share_and_the_last_drop_frees() {
        let before = resident_bytes();
        let big = Bytes::from(vec![5u8; 4096]);
        let m = Message::new(b"e", b"k", &[0, 0], big.clone(), None);
        let small = Message::new(b"e", b"k", &[0, 0], Bytes::from_static(b"abc"), None);
        assert_eq!(resident_bytes(), before + 4096 + 3);
        let copies: Vec<Message> = (0..10).map(|_| m.clone()).collect();
        assert_eq!(m.ref_count(), 11);
        drop(copies);
        assert_eq!(m.ref_count(), 1);
        drop(m);
        drop(small);
        assert_eq!(resident_bytes(), before);
        // The shared body's handle was released: only `big` holds the buffer now.
        assert!(big.is_unique());
    }

    #[test]
    fn timing_sits_between_location_and_shared_body() {
        let t = Timing {
            arrival_ms: 1_700_000_000_000,
            ttl_ms: 500,
        };
        let loc = Location {
            segment: 7,
            offset: 11,
        };
        let big = Bytes::from(vec![3u8; INLINE_BODY_MAX + 10]);
        let m = Message::new_timed(b"x", b"k", &[0, 0], big.clone(), Some(loc), Some(t));
        assert_eq!((m.timing(), m.location()), (Some(t), Some(loc)));
        assert_eq!(m.body().as_slice(), &big[..]);
        assert_eq!(m.routing_key(), b"k");
        let small =
            Message::new_timed(b"", b"q", &[0, 0], Bytes::from_static(b"hi"), None, Some(t));
        assert_eq!(small.timing(), Some(t));
        assert_eq!(small.body().as_slice(), b"hi");
        let p = Message::paged_timed(b"", b"q", &[0, 0], 9, loc, Some(t));
        assert_eq!(
            (p.timing(), p.location(), p.body_len()),
            (Some(t), Some(loc), 9)
        );
        assert_eq!(
            Message::new(b"", b"", &[0, 0], Bytes::new(), None).timing(),
            None
        );
        assert_eq!(t.expiry(Some(100)), Some(1_700_000_000_100));
        assert_eq!(t.expiry(None), Some(1_700_000_000_500));
        let untimed = Timing {
            ttl_ms: u64::MAX,
            ..t
        };
        assert_eq!(untimed.expiry(None), None);
    }

    #[test]
    fn longest_names_and_long_properties_fit() {
        let name = vec![b'n'; 255];
        let key = vec![b'k'; 255];
        let mut p = props(Some(2));
        p.extend(std::iter::repeat_n(0xAB, 100_000));
        let m = Message::new(&name, &key, &p, Bytes::from_static(b"b"), None);
        assert_eq!(m.exchange(), &name[..]);
        assert_eq!(m.routing_key(), &key[..]);
        assert_eq!(m.properties(), &p[..]);
        assert_eq!(m.body().as_slice(), b"b");
    }
}
