//! Counting calls in the kernel (`gotrace stats`): the latency histogram's bucket layout, which
//! the BPF program's `gt_hist_bucket` (gotrace.h) computes too, percentiles over it, and where
//! a function's `error` result is for telling a nil one from a non-nil one at its return.

use crate::{PlannedFunction, RawStack};
use gotrace_binary::abi::{AbiReg, Location};
use gotrace_binary::types::{TypeKind, TypeTable};
use serde::Serialize;

/// Buckets per power of two are 2^SUB_BITS: a bucket is at most 1/4 of its lower bound wide.
pub const SUB_BITS: u32 = 2;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets of one histogram; the last used one (u64::MAX's) is 251, the rest stay empty so the
/// BPF side can bound an index with a mask.
pub const BUCKETS: usize = 256;

/// The bucket of a latency of `ns` nanoseconds: exact below 2·SUB, then SUB buckets per power
/// of two.
pub fn bucket(ns: u64) -> usize {
    if ns < SUB {
        return ns as usize;
    }
    let e = 63 - u64::from(ns.leading_zeros());
    let group = e - u64::from(SUB_BITS) + 1;
    (group * SUB + ((ns >> (e - u64::from(SUB_BITS))) - SUB)) as usize
}

/// The smallest and largest latency (inclusive) that fall in bucket `i`.
pub fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i);
    }
    let (group, m) = (i / SUB, i % SUB);
    let shift = (group - 1) as u32;
    let lo = (SUB + m).checked_shl(shift).unwrap_or(u64::MAX);
    let width = 1u64.checked_shl(shift).unwrap_or(u64::MAX);
    (lo, lo.saturating_add(width - 1))
}

/// Latencies counted per bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    pub counts: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
        }
    }
}

/// A percentile as a histogram can tell it: the bucket holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Percentile {
    pub bucket: usize,
    pub lo_ns: u64,
    pub hi_ns: u64,
}

impl Histogram {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// The bucket of the `q`-quantile (0 < q ≤ 1): the first where the running count reaches
    /// ⌈q·total⌉. None when empty.
    pub fn percentile(&self, q: f64) -> Option<Percentile> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let bucket = self.counts.iter().position(|&c| {
            seen += c;
            seen >= rank
        })?;
        let (lo_ns, hi_ns) = bounds(bucket);
        Some(Percentile {
            bucket,
            lo_ns,
            hi_ns,
        })
    }

    /// The non-empty buckets' range: first and last index.
    pub fn span(&self) -> Option<(usize, usize)> {
        let first = self.counts.iter().position(|&c| c > 0)?;
        let last = self.counts.iter().rposition(|&c| c > 0)?;
        Some((first, last))
    }
}

/// One function's counts, as the kernel kept them (plus the calls user space found in flight).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    /// Returned normally; their latencies are in `latency`.
    pub returned: u64,
    /// Of `returned`: with a non-nil `error` result.
    pub errors: u64,
    /// Unwound by a panic.
    pub panicked: u64,
    /// Cut short by runtime.Goexit.
    pub exited: u64,
    /// System-stack calls whose frame the runtime reused.
    pub abandoned: u64,
    /// Calls whose return was not seen: how they ended is not known.
    pub return_not_seen: u64,
    /// Entries counted with no return to wait for (`--no-return`, inlined copies).
    pub entered: u64,
    /// Still running when their process exited or gotrace stopped.
    pub in_flight: u64,
    /// `--by`: calls counted but in no group (the kernel's group table was full).
    pub not_grouped: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub latency: Histogram,
}

impl FunctionStats {
    /// Calls that started and were counted, however they ended.
    pub fn calls(&self) -> u64 {
        self.returned
            + self.panicked
            + self.exited
            + self.abandoned
            + self.return_not_seen
            + self.entered
            + self.in_flight
    }

    pub fn add(&mut self, other: &FunctionStats) {
        self.returned += other.returned;
        self.errors += other.errors;
        self.panicked += other.panicked;
        self.exited += other.exited;
        self.abandoned += other.abandoned;
        self.return_not_seen += other.return_not_seen;
        self.entered += other.entered;
        self.in_flight += other.in_flight;
        self.not_grouped += other.not_grouped;
        self.total_ns += other.total_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
        self.latency.add(&other.latency);
    }
}

/// Where a function's `error` result is at its returns, for counting non-nil ones: its first
/// word (the itab) is 0 exactly when the error is nil.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorResult {
    /// No result of type `error`.
    None,
    /// In integer register `n` of the ABI's sequence (RAX, RBX, RCX, RDI, RSI, R8–R11).
    Register(u8),
    /// At this many bytes above SP at the RET.
    Stack(u64),
    /// It has one, but the signature was not read (no DWARF, or it did not check out).
    Unknown,
}

/// The function's last result of type `error` (Go's convention puts it last).
pub fn error_result(types: &TypeTable, function: &PlannedFunction) -> ErrorResult {
    let Some(signature) = &function.signature else {
        return ErrorResult::Unknown;
    };
    let is_error = |ty| {
        let t = types.get(ty);
        t.name == "error" && matches!(t.kind, TypeKind::Interface { empty: false })
    };
    let Some(result) = signature
        .results
        .iter()
        .rev()
        .find(|r| r.unavailable.is_none() && is_error(r.ty))
    else {
        return ErrorResult::None;
    };
    match &result.location {
        Location::Registers(pieces) => match pieces.iter().find(|p| p.value_offset == 0) {
            Some(piece) => match piece.reg {
                AbiReg::Int(n) => ErrorResult::Register(n),
                AbiReg::Float(_) => ErrorResult::Unknown,
            },
            None => ErrorResult::Unknown,
        },
        Location::Stack { sp_offset } => ErrorResult::Stack(*sp_offset),
        Location::Empty => ErrorResult::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_latencies_have_a_bucket_each() {
        for ns in 0..8 {
            assert_eq!(bucket(ns), ns as usize);
            assert_eq!(bounds(ns as usize), (ns, ns));
        }
    }

    #[test]
    fn every_value_falls_within_its_buckets_bounds() {
        let mut values: Vec<u64> = (0..4096).collect();
        for shift in 0..64 {
            let p = 1u64 << shift;
            values.extend([
                p - 1,
                p,
                p + 1,
                p | (p >> 1),
                p | (p >> 2),
                p.wrapping_mul(3),
            ]);
        }
        values.extend([u64::MAX, u64::MAX - 1, 1_000_000, 10_000_000, 100_000_000]);
        for v in values {
            let b = bucket(v);
            assert!(b < BUCKETS, "{v}");
            let (lo, hi) = bounds(b);
            assert!(lo <= v && v <= hi, "{v} in bucket {b} [{lo}, {hi}]");
        }
        assert_eq!(bucket(u64::MAX), 251);
    }

    #[test]
    fn buckets_tile_the_line_and_are_at_most_a_quarter_wide() {
        for b in 1..252 {
            let (lo, _) = bounds(b);
            let (_, prev_hi) = bounds(b - 1);
            assert_eq!(prev_hi + 1, lo, "bucket {b}");
            let (lo, hi) = bounds(b);
            assert!(hi - lo <= lo / 4, "bucket {b} [{lo}, {hi}]");
        }
        assert_eq!(bounds(251).1, u64::MAX);
    }

    #[test]
    fn percentiles_pick_the_bucket_holding_the_rank() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(0.5), None);
        // 90 calls of 1 ms, 10 of 100 ms.
        h.counts[bucket(1_000_000)] += 90;
        h.counts[bucket(100_000_000)] += 10;
        assert_eq!(h.total(), 100);
        let p = |q| h.percentile(q).map(|p| p.bucket);
        assert_eq!(p(0.5), Some(bucket(1_000_000)));
        assert_eq!(p(0.9), Some(bucket(1_000_000)));
        assert_eq!(p(0.91), Some(bucket(100_000_000)));
        assert_eq!(p(0.99), Some(bucket(100_000_000)));
        assert_eq!(p(1.0), Some(bucket(100_000_000)));
        let p50 = h.percentile(0.5).unwrap();
        assert!(p50.lo_ns <= 1_000_000 && 1_000_000 <= p50.hi_ns);
        assert_eq!(h.span(), Some((bucket(1_000_000), bucket(100_000_000))));
    }

    #[test]
    fn stats_add_up() {
        let mut a = FunctionStats {
            returned: 3,
            errors: 1,
            panicked: 2,
            max_ns: 5,
            ..Default::default()
        };
        a.latency.counts[4] = 3;
        let mut b = a.clone();
        b.max_ns = 9;
        b.in_flight = 1;
        a.add(&b);
        assert_eq!((a.calls(), a.errors, a.max_ns), (11, 2, 9));
        assert_eq!(a.latency.total(), 6);
    }
}

/// Whether a group's key holds a value (`--by`), and if not why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Read,
    /// A nil pointer on the path; for an interface, a nil interface.
    Nil,
    /// Memory the probe could not read.
    Unreadable,
    /// A result's key, and the call did not return.
    NoResult,
    /// The CPU's scratch space, needed for the stack walk, was in use.
    Busy,
}

/// A group's key as the kernel kept it (`struct gt_group_key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawGroupKey {
    /// The function's plan index.
    pub function: u32,
    pub status: KeyStatus,
    /// The word; a type descriptor's link-time address; a string's length; a stack's hash.
    pub value: u64,
    /// A string's first bytes (at most [`crate::filter::MAX_KEY_STRING`]).
    pub bytes: Vec<u8>,
    /// A stack key's pcs (link-time) and how its walk ended; `None` when the kernel's table of
    /// stacks had no room for them.
    pub stack: Option<RawStack>,
}
