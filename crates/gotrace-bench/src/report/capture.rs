//! What the 1 MiB string argument's captures held, and the goal they meet.

use super::{divide, FunctionBench, Goal, Ratio, Tracer};
use std::fmt::Write as _;

/// What gotrace's JSON held for the 1 MiB string argument, over every run of one mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaptureCheck {
    /// `--string-max`
    pub string_max: usize,
    pub runs: usize,
    /// Calls the program made.
    pub calls: u64,
    /// JSON lines gotrace wrote.
    pub delivered: u64,
    /// Lines whose argument is exactly the string's first `string_max` bytes and which list
    /// the argument in "truncated".
    pub complete: u64,
    /// Lines with the argument null: its memory never reached gotrace.
    pub null_args: u64,
}

impl CaptureCheck {
    /// Share of the delivered calls captured up to the limit and marked truncated.
    pub fn complete_share(&self) -> Option<f64> {
        divide(self.complete as f64, self.delivered as f64)
    }
}

pub fn capture_lines(function: &str, arg: &str, checks: &[CaptureCheck]) -> String {
    let mut s = String::new();
    for c in checks {
        let runs = if c.runs == 1 { "run" } else { "runs" };
        let _ = write!(
            s,
            "- {function} `--string-max {}`, {} {runs}: {} calls made, {} delivered, {} with `{arg}` = its first {} bytes and `\"truncated\":[\"{arg}\"]`",
            c.string_max, c.runs, c.calls, c.delivered, c.complete, c.string_max,
        );
        if c.null_args > 0 {
            let _ = write!(s, ", {} with `{arg}` null", c.null_args);
        }
        s.push('\n');
    }
    s
}

/// The goals for the long string: within the full-tracing budget, every delivered call
/// captured up to the limit and marked truncated.
pub fn string_ratios(bench: &FunctionBench, checks: &[CaptureCheck]) -> Vec<Ratio> {
    let f = &bench.function;
    let mut out: Vec<Ratio> = bench
        .rows
        .iter()
        .filter(|r| r.tracer == Tracer::Gotrace)
        .map(|r| Ratio {
            name: format!("{f}, 1 MiB string: {} / floor full (overhead)", r.mode()),
            value: bench.ratio_to_floor(r),
            goal: Goal::AtMost(1.3),
        })
        .collect();
    out.extend(checks.iter().map(|c| Ratio {
        name: format!(
            "{f}, 1 MiB string, --string-max {}: share of delivered calls with the first {} bytes, marked truncated",
            c.string_max, c.string_max
        ),
        value: c.complete_share(),
        goal: Goal::AtLeast(1.0),
    }));
    out
}
