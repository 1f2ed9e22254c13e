//! What `gotrace stats` says: a table of each function's counts every interval, and at the end
//! each function's latency histogram drawn like bpftrace's `hist()`.

use crate::call::format_duration;
use gotrace_plan::stats::{bounds, FunctionStats, Histogram};
use serde::Serialize;
use std::fmt::Write;

/// One function's counts so far (`"type": "stats"`, one line per function).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsRow {
    pub func: String,
    /// Since the probes were attached.
    pub elapsed_ns: u64,
    /// Calls that started, however they ended.
    pub calls: u64,
    /// Calls per second over the last interval.
    pub calls_per_s: f64,
    /// Entries counted without waiting for a return (`--no-return`, inlined copies).
    pub entered: u64,
    pub returned: u64,
    /// Of `returned`: with a non-nil `error` result. Absent when the function has no `error`
    /// result, null when its signature could not be read.
    #[serde(skip_serializing_if = "ErrorCount::is_none")]
    pub errors: ErrorCount,
    pub panicked: u64,
    pub exited: u64,
    pub abandoned: u64,
    /// Their return was not seen: how they ended is not known.
    pub return_not_seen: u64,
    pub in_flight: u64,
    /// `--by`: calls counted here but in no group, the kernel's group table being full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_grouped: Option<u64>,
    /// Percentiles of the returned calls' latency: the upper bound of the histogram bucket
    /// holding each (buckets are at most a quarter of their lower bound wide), capped at the
    /// largest latency seen. Null with no returned call.
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    pub mean_ns: Option<u64>,
    /// The returned calls' latency buckets and their total, for `--metrics` (the JSON has a
    /// `histogram` record at the end instead).
    #[serde(skip)]
    pub latency: Histogram,
    #[serde(skip)]
    pub total_ns: u64,
}

/// Non-nil errors returned, as far as they can be counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ErrorCount {
    /// The function has no `error` result.
    #[serde(skip)]
    None,
    Counted(u64),
    /// Its signature could not be read: shown as `?`, `null` in JSON.
    Unknown(()),
}

impl ErrorCount {
    fn is_none(&self) -> bool {
        matches!(self, ErrorCount::None)
    }
}

impl StatsRow {
    /// `stats` (cumulative) of `func` after `elapsed_ns`, `calls_before` calls one
    /// `interval_ns` ago.
    pub fn new(
        func: &str,
        stats: &FunctionStats,
        errors: ErrorCount,
        elapsed_ns: u64,
        calls_before: u64,
        interval_ns: u64,
    ) -> StatsRow {
        let calls = stats.calls();
        let returned = stats.returned;
        let percentile = |q| {
            stats
                .latency
                .percentile(q)
                .map(|p| p.hi_ns.min(stats.max_ns))
        };
        StatsRow {
            func: func.to_owned(),
            elapsed_ns,
            calls,
            calls_per_s: if interval_ns == 0 {
                0.0
            } else {
                calls.saturating_sub(calls_before) as f64 * 1e9 / interval_ns as f64
            },
            entered: stats.entered,
            returned,
            errors: match errors {
                ErrorCount::Counted(_) => ErrorCount::Counted(stats.errors),
                other => other,
            },
            panicked: stats.panicked,
            exited: stats.exited,
            abandoned: stats.abandoned,
            return_not_seen: stats.return_not_seen,
            in_flight: stats.in_flight,
            not_grouped: None,
            p50_ns: percentile(0.5),
            p90_ns: percentile(0.9),
            p99_ns: percentile(0.99),
            max_ns: (returned > 0).then_some(stats.max_ns),
            mean_ns: (returned > 0).then(|| stats.total_ns / returned),
            latency: stats.latency.clone(),
            total_ns: stats.total_ns,
        }
    }
}

/// Every traced function's row at one moment (`final`: when gotrace stopped).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub rows: Vec<StatsRow>,
    #[serde(rename = "final")]
    pub last: bool,
}

impl Stats {
    /// The rows as a table.
    pub fn text(&self) -> String {
        let elapsed = self.rows.first().map_or(0, |r| r.elapsed_ns);
        let mut out = format!(
            "--- {} {} ---\n",
            if self.last { "final" } else { "after" },
            format_duration(elapsed)
        );
        let width = self
            .rows
            .iter()
            .map(|r| r.func.chars().count())
            .chain([8])
            .max()
            .unwrap_or(8);
        let _ = writeln!(out, "{:<width$} {COUNT_HEADER}", "FUNCTION");
        for r in &self.rows {
            let _ = writeln!(out, "{:<width$} {}", r.func, count_columns(r));
            let others = [
                (r.entered, "entered (no return awaited)"),
                (r.exited, "exited (runtime.Goexit)"),
                (r.abandoned, "abandoned (system stack)"),
                (
                    r.return_not_seen,
                    "return not seen (how they ended is not known)",
                ),
                (r.in_flight, "in flight"),
                (
                    r.not_grouped.unwrap_or(0),
                    "not grouped (--by: the group table was full)",
                ),
            ];
            for (n, what) in others.iter().filter(|(n, _)| *n > 0) {
                let _ = writeln!(out, "{:<width$}   of which {n} {what}", "");
            }
        }
        out
    }
}

/// The columns of counts every table shows, after its first column.
const COUNT_HEADER: &str =
    "    CALLS   CALLS/S  RETURNED  ERRORS PANICKED       P50       P90       P99       MAX";

fn count_columns(r: &StatsRow) -> String {
    let time = |ns: Option<u64>| ns.map_or_else(|| "-".to_owned(), format_duration);
    let errors = match r.errors {
        ErrorCount::None => "-".to_owned(),
        ErrorCount::Counted(n) => n.to_string(),
        ErrorCount::Unknown(()) => "?".to_owned(),
    };
    format!(
        "{:>9} {:>9.1} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
        r.calls,
        r.calls_per_s,
        r.returned,
        errors,
        r.panicked,
        time(r.p50_ns),
        time(r.p90_ns),
        time(r.p99_ns),
        time(r.max_ns),
    )
}

/// One group of one function's calls (`"type": "group"`): `--by`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupRow {
    /// The key in Go syntax (`"GET"`, `42`, `true`, `*errors.errorString`, `nil`), a stack as
    /// `outer;…;inner`, `?` when it was not read, `other` for the groups past `--top` summed.
    pub key: String,
    /// A string key longer than the bytes kept, or a stack walk that did not reach the
    /// goroutine's first frame.
    pub cut: bool,
    /// Why the key was not read (`key` is `?`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_read: Option<String>,
    /// The row sums this many groups past `--top` (`key` is `other`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_groups: Option<usize>,
    #[serde(flatten)]
    pub counts: StatsRow,
}

/// One function's groups at one moment, the most called first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupTable {
    pub func: String,
    /// `--by`'s expression.
    pub by: String,
    /// Distinct groups counted.
    pub groups: usize,
    /// Calls counted in no group: the kernel's group table was full.
    pub not_grouped: u64,
    pub rows: Vec<GroupRow>,
    #[serde(rename = "final")]
    pub last: bool,
}

impl GroupTable {
    pub fn text(&self) -> String {
        let mut out = format!("{} by {}: {} groups", self.func, self.by, self.groups);
        if let Some(n) = self.rows.iter().find_map(|r| r.other_groups) {
            let _ = write!(out, ", {n} past --top summed as \"other\"");
        }
        if self.not_grouped > 0 {
            let _ = write!(out, "; {} calls not grouped (table full)", self.not_grouped);
        }
        let _ = writeln!(out, "\n{COUNT_HEADER} KEY");
        for r in &self.rows {
            let mut key = r.key.clone();
            if let Some(reason) = &r.not_read {
                let _ = write!(key, " ({reason})");
            }
            if r.cut && r.not_read.is_none() && !key.contains('…') {
                key.push_str(" (cut)");
            }
            let _ = writeln!(out, "{} {key}", count_columns(&r.counts));
        }
        out
    }
}

/// One function's latency histogram (`"type": "histogram"`), at the end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyHistogram {
    pub func: String,
    /// Returned calls counted.
    pub count: u64,
    pub p50_ns: Option<u64>,
    pub p90_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    /// The non-empty buckets, in order: latencies from `lo_ns` to `hi_ns` inclusive.
    pub buckets: Vec<Bucket>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub index: usize,
    pub lo_ns: u64,
    pub hi_ns: u64,
    pub count: u64,
}

/// Bar width of the fullest bucket, as bpftrace draws it.
const BAR: u64 = 52;

impl LatencyHistogram {
    pub fn new(func: &str, row: &StatsRow, latency: &Histogram) -> LatencyHistogram {
        LatencyHistogram {
            func: func.to_owned(),
            count: latency.total(),
            p50_ns: row.p50_ns,
            p90_ns: row.p90_ns,
            p99_ns: row.p99_ns,
            max_ns: row.max_ns,
            buckets: latency
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(index, &count)| {
                    let (lo_ns, hi_ns) = bounds(index);
                    Bucket {
                        index,
                        lo_ns,
                        hi_ns,
                        count,
                    }
                })
                .collect(),
        }
    }

    /// `@func:` then a row per bucket from the first non-empty to the last, `[lo, hi)` and a
    /// bar; two or more empty buckets in a row are one `...` line.
    pub fn text(&self) -> String {
        let mut out = format!("@{}: {} returned calls", self.func, self.count);
        let time = |ns: Option<u64>| ns.map_or_else(|| "-".to_owned(), format_duration);
        if self.count == 0 {
            return out;
        }
        let _ = writeln!(
            out,
            ", p50 {} p90 {} p99 {} max {}",
            time(self.p50_ns),
            time(self.p90_ns),
            time(self.p99_ns),
            time(self.max_ns)
        );
        let most = self.buckets.iter().map(|b| b.count).max().unwrap_or(1);
        let label = |index: usize| {
            let (lo, hi) = bounds(index);
            format!(
                "[{}, {})",
                format_duration(lo),
                format_duration(hi.saturating_add(1))
            )
        };
        let mut previous: Option<usize> = None;
        for b in &self.buckets {
            if let Some(p) = previous {
                match b.index - p - 1 {
                    0 => {}
                    1 => {
                        let _ = writeln!(
                            out,
                            "{:<22} {:>8} |{:width$}|",
                            label(p + 1),
                            0,
                            "",
                            width = BAR as usize
                        );
                    }
                    _ => out.push_str("...\n"),
                }
            }
            let bar = (b.count * BAR).div_ceil(most) as usize;
            let _ = writeln!(
                out,
                "{:<22} {:>8} |{:<width$}|",
                label(b.index),
                b.count,
                "@".repeat(bar),
                width = BAR as usize
            );
            previous = Some(b.index);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotrace_plan::stats::bucket;

    fn sample() -> FunctionStats {
        let mut s = FunctionStats {
            returned: 100,
            errors: 7,
            panicked: 3,
            in_flight: 1,
            total_ns: 90 * 1_000_000 + 10 * 100_000_000,
            max_ns: 101_000_000,
            ..Default::default()
        };
        s.latency.counts[bucket(1_000_000)] = 90;
        s.latency.counts[bucket(100_000_000)] = 10;
        s
    }

    #[test]
    fn a_row_has_the_counts_rate_and_percentiles() {
        let row = StatsRow::new(
            "main.F",
            &sample(),
            ErrorCount::Counted(0),
            2_000_000_000,
            4,
            1_000_000_000,
        );
        assert_eq!(
            (row.calls, row.returned, row.panicked, row.in_flight),
            (104, 100, 3, 1)
        );
        assert_eq!(row.errors, ErrorCount::Counted(7));
        assert_eq!(row.calls_per_s, 100.0);
        let p50 = row.p50_ns.unwrap();
        assert_eq!(bucket(p50), bucket(1_000_000));
        assert_eq!(bucket(row.p99_ns.unwrap()), bucket(100_000_000));
        // Capped at the largest latency seen.
        assert!(row.p99_ns.unwrap() <= 101_000_000);
        assert_eq!(row.mean_ns, Some(10_900_000));
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["errors"], 7);
        let none = StatsRow::new("main.G", &sample(), ErrorCount::None, 1, 0, 1);
        assert!(serde_json::to_value(&none).unwrap().get("errors").is_none());
        let unknown = StatsRow::new("main.G", &sample(), ErrorCount::Unknown(()), 1, 0, 1);
        assert!(serde_json::to_value(&unknown).unwrap()["errors"].is_null());
    }

    #[test]
    fn the_table_shows_every_function_and_unknown_errors_as_a_question_mark() {
        let stats = Stats {
            rows: vec![
                StatsRow::new(
                    "main.F",
                    &sample(),
                    ErrorCount::Counted(0),
                    3_000_000_000,
                    0,
                    1,
                ),
                StatsRow::new(
                    "main.G",
                    &FunctionStats::default(),
                    ErrorCount::Unknown(()),
                    3_000_000_000,
                    0,
                    1,
                ),
            ],
            last: true,
        };
        let text = stats.text();
        assert!(text.starts_with("--- final 3s ---\n"), "{text}");
        let f = text.lines().find(|l| l.starts_with("main.F")).unwrap();
        assert!(
            f.contains(" 104 ") && f.contains(" 7 ") && f.contains("101ms"),
            "{f}"
        );
        let g = text.lines().find(|l| l.starts_with("main.G")).unwrap();
        assert!(g.contains(" ? ") && g.trim_end().ends_with('-'), "{g}");
        assert!(text.contains("of which 1 in flight"), "{text}");
    }

    #[test]
    fn the_histogram_draws_each_bucket_and_elides_empty_runs() {
        let s = sample();
        let row = StatsRow::new("main.F", &s, ErrorCount::None, 1, 0, 1);
        let h = LatencyHistogram::new("main.F", &row, &s.latency);
        assert_eq!(h.count, 100);
        assert_eq!(h.buckets.len(), 2);
        assert_eq!(h.buckets.iter().map(|b| b.count).sum::<u64>(), 100);
        let text = h.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("@main.F: 100 returned calls, p50 "),
            "{text}"
        );
        // 1 ms lies in [917.5µs, 1.05ms): buckets split powers of two.
        assert!(lines[1].starts_with("[917.5µs, 1.05ms) "), "{text}");
        assert!(
            lines[1].ends_with(&format!(" 90 |{}|", "@".repeat(52))),
            "{text}"
        );
        assert_eq!(lines[2], "...");
        assert!(
            lines[3].ends_with(&format!(" 10 |{:<52}|", "@".repeat(6))),
            "{text}"
        );
        assert_eq!(lines.len(), 4, "{text}");
    }
}
