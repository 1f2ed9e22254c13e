//! What a session saw, said when it ends.

use serde::{Deserialize, Serialize};

/// What a session saw, printed when it ends. Every loss is counted in calls, by cause.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// Calls written that returned (or entered, with --no-return).
    pub calls: u64,
    /// Calls written that did not return (panicked, exited, in flight, abandoned), or whose
    /// return was not seen.
    pub unreturned: u64,
    /// Calls reported, by how those that did not return ended.
    pub panicked: u64,
    pub exited: u64,
    /// Still running when their process exited or gotrace stopped.
    pub in_flight: u64,
    /// On a system stack whose frame the runtime reused.
    pub abandoned: u64,
    /// Whose goroutine went on past them with no panic under way: how they ended is not known.
    pub return_not_seen: u64,
    /// Arguments and results with something cut to --string-max, --elems or --depth.
    pub truncated_values: u64,
    /// Arguments and results with a part the probe did not read (beyond --depth, read
    /// budget used up, unreadable memory); floats in registers are not counted.
    pub values_not_read: u64,
    /// Calls whose entry memory was dropped (ring buffer full): their arguments are not read.
    pub args_lost: u64,
    /// Calls lost: the ring buffer was full for their record.
    pub lost_ring_full: u64,
    /// Calls lost: a probe hit preempted another on the same CPU (scratch space in use).
    pub lost_busy: u64,
    pub unmatched_returns: u64,
    /// Calls begun after gotrace began to stop, before its probes were gone: not traced.
    pub begun_while_stopping: u64,
    /// Calls lost: the in-flight table was full.
    pub inflight_full: u64,
    pub growth_restarts: u64,
    /// Calls lost: the goroutine could not be read at entry.
    pub read_failures: u64,
    /// Process exits not seen (ring buffer full): their calls in flight were reported at stop.
    pub exits_lost: u64,
    pub sites_attached: usize,
    pub sites_failed: usize,
    /// Calls not written because the output failed (a full disk, an I/O error).
    pub not_written_failed: u64,
    /// Calls not written because gotrace stopped while the output was backed up.
    pub not_written_stopped: u64,
    /// Spans of traced calls `--otlp` did not export (queue full, collector unreachable).
    pub spans_not_exported: u64,
    /// Calls `--where` or `--min-duration` left out (not lost: they did not match).
    pub filtered_out: u64,
    /// `--where` comparisons taken as false because the memory they read was unreadable.
    pub filter_unread: u64,
    /// Ring-buffer records read: a call costs one, or two when its arguments need memory
    /// read at the entry.
    pub records: u64,
    /// Calls `--sample` left out.
    pub sampled_out: u64,
    /// Calls beyond a function's `--max-rate`: counted in the kernel, not reported.
    pub over_rate: u64,
    /// Returns and runtime hooks (panics, Goexit) whose goroutine could not be read: a call in
    /// flight then shows as `return not seen`, or `in flight` at the end.
    pub returns_unread: u64,
}

impl Summary {
    /// Adds the counts of a later session on the same target (the traced file was rebuilt
    /// and attached anew). Sites are the latest session's: they are what is attached now.
    pub fn absorb(&mut self, later: &Summary) {
        let Summary {
            calls,
            unreturned,
            panicked,
            exited,
            in_flight,
            abandoned,
            return_not_seen,
            truncated_values,
            values_not_read,
            args_lost,
            lost_ring_full,
            lost_busy,
            unmatched_returns,
            begun_while_stopping,
            inflight_full,
            growth_restarts,
            read_failures,
            exits_lost,
            sites_attached,
            sites_failed,
            not_written_failed,
            not_written_stopped,
            spans_not_exported,
            filtered_out,
            filter_unread,
            records,
            sampled_out,
            over_rate,
            returns_unread,
        } = later;
        for (total, add) in [
            (&mut self.calls, calls),
            (&mut self.unreturned, unreturned),
            (&mut self.panicked, panicked),
            (&mut self.exited, exited),
            (&mut self.in_flight, in_flight),
            (&mut self.abandoned, abandoned),
            (&mut self.return_not_seen, return_not_seen),
            (&mut self.truncated_values, truncated_values),
            (&mut self.values_not_read, values_not_read),
            (&mut self.args_lost, args_lost),
            (&mut self.lost_ring_full, lost_ring_full),
            (&mut self.lost_busy, lost_busy),
            (&mut self.unmatched_returns, unmatched_returns),
            (&mut self.begun_while_stopping, begun_while_stopping),
            (&mut self.inflight_full, inflight_full),
            (&mut self.growth_restarts, growth_restarts),
            (&mut self.read_failures, read_failures),
            (&mut self.exits_lost, exits_lost),
            (&mut self.not_written_failed, not_written_failed),
            (&mut self.not_written_stopped, not_written_stopped),
            (&mut self.spans_not_exported, spans_not_exported),
            (&mut self.filtered_out, filtered_out),
            (&mut self.filter_unread, filter_unread),
            (&mut self.records, records),
            (&mut self.sampled_out, sampled_out),
            (&mut self.over_rate, over_rate),
            (&mut self.returns_unread, returns_unread),
        ] {
            *total += add;
        }
        self.sites_attached = *sites_attached;
        self.sites_failed = *sites_failed;
    }

    /// Calls that started and were never written, by cause.
    fn losses(&self) -> [(u64, &'static str); 6] {
        [
            (self.lost_ring_full, "ring buffer full"),
            (self.inflight_full, "in-flight table full"),
            (self.read_failures, "goroutine unreadable"),
            (self.lost_busy, "probe hit preempted on its CPU"),
            (self.not_written_failed, "output failed"),
            (
                self.not_written_stopped,
                "stopped while the output was backed up",
            ),
        ]
    }

    /// Calls lost, all causes together.
    pub fn calls_lost(&self) -> u64 {
        self.losses().iter().map(|(n, _)| n).sum()
    }

    /// `gotrace: 12 calls traced, 0 calls lost`, then what did not return, what was lost by
    /// cause, and whatever else went wrong.
    pub fn text(&self) -> String {
        let mut s = format!(
            "gotrace: {} calls traced, {} calls lost",
            self.calls + self.unreturned,
            self.calls_lost()
        );
        let unreturned = nonzero(&self.unreturned_by_outcome());
        if !unreturned.is_empty() {
            s.push_str(&format!(" (did not return: {})", unreturned.join(", ")));
        }
        if self.return_not_seen > 0 {
            s.push_str(&format!(
                " ({} return not seen: how they ended is not known)",
                self.return_not_seen
            ));
        }
        let lost = nonzero(&self.losses());
        if !lost.is_empty() {
            s.push_str(&format!(" (lost: {})", lost.join(", ")));
        }
        for part in nonzero(&self.other_counts()) {
            s.push_str(&format!(", {part}"));
        }
        s
    }

    /// Calls that did not return, by how they ended (but for returns not seen).
    fn unreturned_by_outcome(&self) -> [(u64, &'static str); 4] {
        [
            (self.panicked, "panicked"),
            (self.exited, "exited (runtime.Goexit)"),
            (
                self.in_flight,
                "in flight when their process exited or gotrace stopped",
            ),
            (self.abandoned, "abandoned on a system stack"),
        ]
    }

    /// Everything else the summary counts that went wrong or was left out.
    fn other_counts(&self) -> [(u64, &'static str); 13] {
        [
            (
                self.args_lost,
                "calls with arguments not read (ring buffer full)",
            ),
            (
                self.unmatched_returns,
                "returns without a traced entry (calls begun before attaching)",
            ),
            (
                self.begun_while_stopping,
                "calls begun while gotrace was stopping (not traced)",
            ),
            (
                self.exits_lost,
                "process exits not seen (ring buffer full): their calls in flight were timed to the stop",
            ),
            (self.sites_failed as u64, "probe sites failed to attach"),
            (
                self.spans_not_exported,
                "spans not exported (export queue full or OTLP collector unreachable)",
            ),
            (
                self.filtered_out,
                "calls left out by --where or --min-duration",
            ),
            (
                self.filter_unread,
                "--where comparisons false because their memory was unreadable",
            ),
            (self.sampled_out, "calls left out by --sample"),
            (
                self.returns_unread,
                "returns or panics/Goexit whose goroutine could not be read (their calls show as not seen returning, or in flight)",
            ),
            (
                self.over_rate,
                "calls beyond --max-rate counted in the kernel, not reported",
            ),
            (
                self.truncated_values,
                "values truncated to --string-max or --elems",
            ),
            (
                self.values_not_read,
                "values with parts not read (beyond --depth, read budget, unreadable memory)",
            ),
        ]
    }
}

/// `N what` for each count that is not zero.
fn nonzero(counts: &[(u64, &str)]) -> Vec<String> {
    counts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_calls_by_outcome_and_losses_by_cause() {
        let summary = Summary {
            calls: 10,
            unreturned: 3,
            panicked: 2,
            in_flight: 1,
            lost_ring_full: 4,
            inflight_full: 5,
            ..Summary::default()
        };
        assert_eq!(
            summary.text(),
            "gotrace: 13 calls traced, 9 calls lost (did not return: 2 panicked, 1 in flight when their process exited or gotrace stopped) (lost: 4 ring buffer full, 5 in-flight table full)"
        );
        assert_eq!(
            Summary::default().text(),
            "gotrace: 0 calls traced, 0 calls lost"
        );
    }

    #[test]
    fn returns_not_seen_are_said_apart_from_calls_that_did_not_return() {
        let summary = Summary {
            calls: 5,
            unreturned: 3,
            panicked: 1,
            return_not_seen: 2,
            ..Summary::default()
        };
        assert_eq!(
            summary.text(),
            "gotrace: 8 calls traced, 0 calls lost (did not return: 1 panicked) (2 return not seen: how they ended is not known)"
        );
    }

    #[test]
    fn calls_begun_while_stopping_are_shown_but_not_lost() {
        let summary = Summary {
            calls: 3,
            begun_while_stopping: 7,
            ..Summary::default()
        };
        assert_eq!(summary.calls_lost(), 0);
        assert_eq!(
            summary.text(),
            "gotrace: 3 calls traced, 0 calls lost, 7 calls begun while gotrace was stopping (not traced)"
        );
    }
}
