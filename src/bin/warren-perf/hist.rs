//! Latency histograms: a log-linear, HdrHistogram-like [`Hist`] with no dependency,
//! and the registries through which the reporter merges the per-thread histograms of
//! consumers (delivery latency) and producer readers (confirm latency).
//!
//! Owns only numbers: it never reads a socket or a counter.

use std::sync::{Arc, Mutex, OnceLock};

/// Values below `2 * SUB` get exact buckets; above, each power of two is split into
/// `SUB` buckets (relative error < 1/64).
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize) * SUB;

#[derive(Clone)]
pub struct Hist {
    pub counts: Vec<u64>,
    pub count: u64,
    pub min: u64,
    pub max: u64,
}

impl Hist {
    pub fn new() -> Hist {
        Hist {
            counts: vec![0; BUCKETS],
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    #[inline]
    fn index(v: u64) -> usize {
        if v < (2 * SUB) as u64 {
            v as usize
        } else {
            let msb = 63 - v.leading_zeros();
            let shift = msb - SUB_BITS;
            let mantissa = (v >> shift) as usize; // in [SUB, 2 * SUB)
            (shift as usize + 1) * SUB + (mantissa - SUB)
        }
    }

    /// The midpoint of bucket `i`.
    fn value_at(i: usize) -> u64 {
        if i < 2 * SUB {
            i as u64
        } else {
            let shift = (i / SUB - 1) as u32;
            let mantissa = (i % SUB + SUB) as u64;
            (mantissa << shift) + ((1u64 << shift) >> 1)
        }
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    #[inline]
    pub fn record_n(&mut self, v: u64, n: u64) {
        self.counts[Self::index(v)] += n;
        self.count += n;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, o: &Hist) {
        if o.count == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    pub fn clear(&mut self) {
        if self.count != 0 {
            self.counts.iter_mut().for_each(|c| *c = 0);
        }
        self.count = 0;
        self.min = u64::MAX;
        self.max = 0;
    }

    /// The value at quantile `q` (0..=1), clamped to the observed min and max.
    fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if q <= 0.0 {
            return self.min;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value_at(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// min/p50/p75/p95/p99/max in microseconds.
    pub fn summary_us(&self) -> [f64; 6] {
        let us = |ns: u64| ns as f64 / 1000.0;
        if self.count == 0 {
            return [0.0; 6];
        }
        [
            us(self.min),
            us(self.quantile(0.50)),
            us(self.quantile(0.75)),
            us(self.quantile(0.95)),
            us(self.quantile(0.99)),
            us(self.max),
        ]
    }
}

/// Per-thread histograms, registered so that the reporter can merge them.
#[derive(Default)]
pub struct HistRegistry {
    pub hists: Mutex<Vec<Arc<Mutex<Hist>>>>,
}

impl HistRegistry {
    pub fn register(&self) -> Arc<Mutex<Hist>> {
        let h = Arc::new(Mutex::new(Hist::new()));
        self.hists.lock().unwrap().push(h.clone());
        h
    }

    /// Moves every thread's samples into `into` (and leaves them empty).
    pub fn drain_into(&self, into: &mut Hist) {
        for h in self.hists.lock().unwrap().iter() {
            let mut h = h.lock().unwrap();
            into.merge(&h);
            h.clear();
        }
    }
}

static CONSUMER_LAT: OnceLock<HistRegistry> = OnceLock::new();
static CONFIRM_LAT: OnceLock<HistRegistry> = OnceLock::new();

pub fn consumer_lat() -> &'static HistRegistry {
    CONSUMER_LAT.get_or_init(HistRegistry::default)
}

pub fn confirm_lat() -> &'static HistRegistry {
    CONFIRM_LAT.get_or_init(HistRegistry::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_precise() {
        let mut prev = 0;
        for i in 0..BUCKETS {
            let v = Hist::value_at(i);
            assert!(i == 0 || v > prev, "bucket {i}");
            assert_eq!(Hist::index(v), i, "bucket {i} value {v}");
            prev = v;
        }
        for v in [0u64, 1, 127, 128, 129, 1000, 65_535, 1 << 40, u64::MAX] {
            let back = Hist::value_at(Hist::index(v)) as f64;
            let err = (back - v as f64).abs() / (v as f64).max(1.0);
            assert!(err <= 1.0 / 64.0, "{v} -> {back}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Hist::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.quantile(0.0), 1000);
        let mut m = Hist::new();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count, 20_000);
        assert_eq!(m.quantile(0.5), h.quantile(0.5));
        m.clear();
        assert_eq!(m.count, 0);
        assert_eq!(m.quantile(0.5), 0);
    }
}
