//! Kernel timestamps as wall-clock time.

use chrono::{DateTime, Local, Utc};

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
/// The default (no offset) suits output that has no timestamps (`funcs`, `peek`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in nanoseconds, measured once at start.
    pub realtime_minus_monotonic_ns: i128,
}

impl Clock {
    /// Wall-clock (seconds, nanoseconds) since the Unix epoch.
    fn wall(&self, monotonic_ns: u64) -> (i64, u32) {
        let ns = (i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns).max(0);
        ((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
    }
}

/// Formatted timestamps, redone only when the second changes: events come in bursts within
/// the same second, and calendar arithmetic per event would dominate the output cost.
#[derive(Debug)]
pub(crate) struct Stamps {
    clock: Clock,
    second: Option<i64>,
    /// `2026-11-25T12:01:02` (UTC).
    utc: String,
    /// `12:01:02` (local time).
    local: String,
}

impl Stamps {
    pub(crate) fn new(clock: Clock) -> Self {
        Stamps {
            clock,
            second: None,
            utc: String::new(),
            local: String::new(),
        }
    }

    /// The second's prefixes and the nanoseconds within it.
    pub(crate) fn at(&mut self, monotonic_ns: u64) -> (&str, &str, u32) {
        let (second, nanos) = self.clock.wall(monotonic_ns);
        if self.second != Some(second) {
            let utc = DateTime::<Utc>::from_timestamp(second, 0).unwrap_or_default();
            self.utc = utc.format("%Y-%m-%dT%H:%M:%S").to_string();
            self.local = utc.with_timezone(&Local).format("%H:%M:%S").to_string();
            self.second = Some(second);
        }
        (&self.utc, &self.local, nanos)
    }
}
