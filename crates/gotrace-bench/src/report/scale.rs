//! Scale: events per second through the ring buffer, attach and detach times, start-up cost.

use super::{delivered, divide, duration, markdown, opt, Goal, Ratio};
use std::time::Duration;

/// Many events through the ring buffer: a multi-goroutine, multi-site target.
#[derive(Clone, Debug)]
pub struct Throughput {
    pub mode: String,
    pub goroutines: u32,
    pub sites: usize,
    pub calls: Option<u64>,
    /// JSON lines gotrace wrote.
    pub events: u64,
    pub lost: Option<u64>,
    /// From starting the target until gotrace had written everything and exited.
    pub wall: Duration,
    /// gotrace's own CPU time (user + system).
    pub gotrace_cpu: Duration,
    pub status: String,
}

impl Throughput {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

pub fn throughput_table(runs: &[Throughput]) -> String {
    let rows = runs
        .iter()
        .map(|t| {
            vec![
                t.mode.clone(),
                format!("{} goroutines, {} sites", t.goroutines, t.sites),
                delivered(Some(t.events), t.calls, t.lost),
                format!("{:.2}", t.wall.as_secs_f64()),
                format!("{:.0}", t.events_per_second()),
                t.calls.map_or("?".into(), |c| {
                    format!("{:.0}", c as f64 / t.wall.as_secs_f64().max(1e-9))
                }),
                format!(
                    "{:.2} s ({:.2} µs/event)",
                    t.gotrace_cpu.as_secs_f64(),
                    t.gotrace_cpu.as_secs_f64() * 1e6 / (t.events.max(1) as f64)
                ),
                t.status.clone(),
            ]
        })
        .collect();
    markdown(
        &[
            "mode",
            "target",
            "delivered / calls",
            "wall s",
            "events/s",
            "calls/s",
            "gotrace CPU",
            "target",
        ],
        rows,
    )
}

/// Attaching and detaching many sites.
#[derive(Clone, Debug)]
pub struct AttachTiming {
    pub sites: usize,
    pub method: String,
    /// `Session::attach`'s own figure (the program load excluded).
    pub attach: Option<Duration>,
    pub detach: Option<Duration>,
    pub note: String,
}

pub fn attach_table(runs: &[AttachTiming]) -> String {
    let rows = runs
        .iter()
        .map(|a| {
            vec![
                a.sites.to_string(),
                a.method.clone(),
                opt(a.attach, duration),
                opt(a.detach, duration),
                a.note.clone(),
            ]
        })
        .collect();
    markdown(&["sites", "method", "attach", "detach", "note"], rows)
}

/// The goals that concern throughput and attach times, beside the per-function ratios.
pub fn scale_ratios(throughput: &[Throughput], attach: &[AttachTiming]) -> Vec<Ratio> {
    let mut out = Vec::new();
    if let Some(best) = throughput
        .iter()
        .filter(|t| t.lost == Some(0))
        .max_by(|a, b| a.events_per_second().total_cmp(&b.events_per_second()))
    {
        out.push(Ratio {
            name: format!("events/s with 0 lost ({})", best.mode),
            value: Some(best.events_per_second()),
            goal: Goal::AtLeast(1e6),
        });
    }
    for a in attach
        .iter()
        .filter(|a| a.sites >= 10_000 && a.method.contains("multi"))
    {
        for (what, d) in [("attach", a.attach), ("detach", a.detach)] {
            out.push(Ratio {
                name: format!("{} sites {what}, seconds ({})", a.sites, a.method),
                value: d.map(|d| d.as_secs_f64()),
                goal: Goal::AtMost(1.0),
            });
        }
    }
    out
}

/// One binary and pattern: from starting `gotrace trace` to its ready file.
#[derive(Clone, Debug)]
pub struct Startup {
    /// `go command (Go 1.27)`
    pub binary: String,
    pub functions: usize,
    pub pattern: String,
    pub sites: usize,
    /// The median over the runs.
    pub ready: Duration,
    /// gotrace's peak resident memory by then (the largest over the runs), in bytes.
    pub peak_rss: u64,
    /// The empty program's load and attach on the same sites.
    pub floor_attach: Duration,
}

/// The first row is the startup floor (the small loop program); the others are shown as
/// multiples of it.
pub fn startup_table(runs: &[Startup]) -> String {
    let floor = runs.first();
    let rows = runs
        .iter()
        .map(|s| {
            let times = floor.and_then(|f| divide(s.ready.as_secs_f64(), f.ready.as_secs_f64()));
            let memory = floor.and_then(|f| divide(s.peak_rss as f64, f.peak_rss as f64));
            vec![
                s.binary.clone(),
                s.functions.to_string(),
                format!("`{}`", s.pattern),
                s.sites.to_string(),
                duration(s.ready),
                opt(times, |r| format!("{r:.1} ×")),
                format!("{:.0} MB", s.peak_rss as f64 / 1e6),
                opt(memory, |r| format!("{r:.1} ×")),
                duration(s.floor_attach),
            ]
        })
        .collect();
    markdown(
        &[
            "binary",
            "functions",
            "pattern",
            "sites",
            "start → ready",
            "× floor",
            "peak memory",
            "× floor",
            "empty program load + attach",
        ],
        rows,
    )
}

/// The goals for a large binary: ready within 2 s, in at most 300 MB (every row but
/// the startup floor).
pub fn startup_ratios(runs: &[Startup]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for s in runs.iter().skip(1) {
        let what = format!("{}, `{}`", s.binary, s.pattern);
        out.push(Ratio {
            name: format!("{what}: start → ready, seconds"),
            value: Some(s.ready.as_secs_f64()),
            goal: Goal::AtMost(2.0),
        });
        out.push(Ratio {
            name: format!("{what}: peak memory, MB"),
            value: Some(s.peak_rss as f64 / 1e6),
            goal: Goal::AtMost(300.0),
        });
    }
    out
}
