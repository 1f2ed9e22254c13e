//! `--metrics ADDR`: `/metrics` in the Prometheus text exposition format. The event path counts
//! into a map of its own and, at most every [`PUBLISH_INTERVAL`], copies it into a snapshot
//! taken with `try_lock`: a scrape encoding the snapshot never makes the event path wait.

use anyhow::{Context, Result};
use gotrace_decode::DecodedCall;
use gotrace_output::{LossCause, Record, Stats};
use gotrace_plan::CallKind;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the event path's counts are copied for scrapes.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(50);
/// Processes with a `pid` label of their own; calls of any further process are counted under
/// `pid="other"`, so a binary restarted over and over cannot grow the series without bound.
const MAX_PIDS: usize = 32;
/// Upper bounds of `trace`'s latency buckets, in nanoseconds: the conventional 1-2.5-5 steps,
/// from 1 µs (a call of a few instructions under a probe) to 10 s.
pub const TRACE_BUCKETS_NS: [u64; 22] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// Outcomes as the JSON output names them, in [`outcome_index`] order.
const OUTCOMES: [&str; 8] = [
    "returned",
    "entered",
    "inlined",
    "panicked",
    "exited",
    "in_flight",
    "abandoned",
    "return_not_seen",
];

fn outcome_index(kind: CallKind) -> usize {
    match kind {
        CallKind::Returned => 0,
        CallKind::Entered => 1,
        CallKind::Inlined => 2,
        CallKind::Panicked => 3,
        CallKind::Exited => 4,
        CallKind::InFlight => 5,
        CallKind::Abandoned => 6,
        CallKind::ReturnNotSeen => 7,
    }
}

/// Upper bounds of `stats`'s latency buckets: one below every power of 4 from 1,024 ns (1 µs) to
/// 2^34 ns (17 s). The kernel's histogram buckets never straddle a power of two, so each call is
/// counted under these exactly, never in a neighbouring bucket.
pub const STATS_BUCKETS_NS: [u64; 13] = [
    (1 << 10) - 1,
    (1 << 12) - 1,
    (1 << 14) - 1,
    (1 << 16) - 1,
    (1 << 18) - 1,
    (1 << 20) - 1,
    (1 << 22) - 1,
    (1 << 24) - 1,
    (1 << 26) - 1,
    (1 << 28) - 1,
    (1 << 30) - 1,
    (1 << 32) - 1,
    (1 << 34) - 1,
];

/// `pid` label of `stats`'s counts: the kernel counts a function's calls of every process
/// together.
const ALL_PROCESSES: &str = "all";

/// One function's counts in one process.
#[derive(Clone, Debug)]
struct FunctionCounts {
    outcomes: [u64; OUTCOMES.len()],
    /// Returned calls per latency bucket (of [`Counts::bounds_ns`]); the last is +Inf.
    buckets: Vec<u64>,
    sum_ns: u128,
    /// Counted since the last copy for scrapes.
    changed: bool,
}

impl FunctionCounts {
    fn new(bounds: &[u64]) -> Self {
        FunctionCounts {
            outcomes: [0; OUTCOMES.len()],
            buckets: vec![0; bounds.len() + 1],
            sum_ns: 0,
            changed: true,
        }
    }
}

/// Everything `/metrics` shows.
#[derive(Clone, Debug, Default)]
struct Counts {
    /// The latency buckets' upper bounds, in nanoseconds.
    bounds_ns: &'static [u64],
    binary: String,
    sites_attached: u64,
    sites_failed: u64,
    /// By `pid` label, then function.
    processes: BTreeMap<String, BTreeMap<String, FunctionCounts>>,
    /// Calls lost, by the summary's name of the cause.
    lost: BTreeMap<&'static str, u64>,
    spans_not_exported: u64,
}

pub struct Metrics {
    counts: Counts,
    /// The `pid` label of each process seen.
    pid_labels: HashMap<u32, String>,
    snapshot: Arc<Mutex<Counts>>,
    changed: bool,
    published: Instant,
}

impl Metrics {
    /// Serves `/metrics` on `addr` from a thread of its own until gotrace exits, with latency
    /// buckets bounded by `bounds_ns`.
    pub fn serve(addr: SocketAddr, bounds_ns: &'static [u64]) -> Result<Metrics> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("serving --metrics on {addr}"))?;
        let (metrics, registry) = Metrics::new(bounds_ns);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || answer_scrapes(&server, &registry))
            .context("starting the metrics server")?;
        Ok(metrics)
    }

    /// The counts, and the registry that encodes what they publish.
    fn new(bounds_ns: &'static [u64]) -> (Metrics, Registry) {
        let counts = Counts {
            bounds_ns,
            ..Counts::default()
        };
        let snapshot = Arc::new(Mutex::new(counts.clone()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot(Arc::clone(&snapshot))));
        let metrics = Metrics {
            counts,
            pid_labels: HashMap::new(),
            snapshot,
            changed: true,
            published: Instant::now(),
        };
        (metrics, registry)
    }

    pub fn call(&mut self, call: &DecodedCall<'_>) {
        let labels = self.pid_labels.len();
        let pid = self
            .pid_labels
            .entry(call.pid)
            .or_insert_with(|| match labels < MAX_PIDS {
                true => call.pid.to_string(),
                false => "other".to_owned(),
            });
        let bounds = self.counts.bounds_ns;
        let counts = function_counts(&mut self.counts, pid, call.function);
        counts.outcomes[outcome_index(call.outcome)] += 1;
        counts.changed = true;
        if call.outcome == CallKind::Returned {
            if let Some(ns) = call.duration_ns() {
                counts.buckets[bounds.partition_point(|&bound| bound < ns)] += 1;
                counts.sum_ns += u128::from(ns);
            }
        }
        self.changed = true;
    }

    /// `stats`'s counts so far: they replace the function's, under `pid="all"`.
    fn stats(&mut self, stats: &Stats) {
        let bounds = self.counts.bounds_ns;
        for row in &stats.rows {
            let counts = function_counts(&mut self.counts, ALL_PROCESSES, &row.func);
            for (kind, n) in [
                (CallKind::Returned, row.returned),
                (CallKind::Entered, row.entered),
                (CallKind::Panicked, row.panicked),
                (CallKind::Exited, row.exited),
                (CallKind::InFlight, row.in_flight),
                (CallKind::Abandoned, row.abandoned),
                (CallKind::ReturnNotSeen, row.return_not_seen),
            ] {
                counts.outcomes[outcome_index(kind)] = n;
            }
            counts.buckets.iter_mut().for_each(|b| *b = 0);
            for (i, &n) in row
                .latency
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
            {
                // The first bound at or above the bucket's largest latency holds all of it.
                let (_, hi) = gotrace_plan::stats::bounds(i);
                counts.buckets[bounds.partition_point(|&bound| bound < hi)] += n;
            }
            counts.sum_ns = u128::from(row.total_ns);
            counts.changed = true;
        }
        self.changed = true;
    }

    pub fn record(&mut self, record: &Record<'_>) {
        match record {
            Record::Stats(stats) => self.stats(stats),
            Record::Attached(a) => {
                self.counts.binary.clone_from(&a.binary);
                self.counts.sites_attached = a.sites as u64;
                self.counts.sites_failed = a.sites_failed as u64;
            }
            // Counts of the current session; the summary has the totals.
            Record::Lost(lost) => {
                let name = match lost.cause {
                    LossCause::LostRingFull => "lost_ring_full",
                    LossCause::InflightFull => "inflight_full",
                    LossCause::ReadFailures => "read_failures",
                    LossCause::LostBusy => "lost_busy",
                    // Counted apart: the calls themselves were traced.
                    LossCause::SpansNotExported => return,
                };
                let total = self.counts.lost.entry(name).or_default();
                *total = (*total).max(lost.calls);
            }
            Record::Summary(s) => {
                for (name, n) in [
                    ("lost_ring_full", s.lost_ring_full),
                    ("inflight_full", s.inflight_full),
                    ("read_failures", s.read_failures),
                    ("lost_busy", s.lost_busy),
                    ("not_written_failed", s.not_written_failed),
                    ("not_written_stopped", s.not_written_stopped),
                ] {
                    self.counts.lost.insert(name, n);
                }
                self.counts.spans_not_exported = s.spans_not_exported;
                self.publish_now();
                return;
            }
            _ => return,
        }
        self.changed = true;
    }

    pub fn spans_not_exported(&mut self, n: u64) {
        if n != self.counts.spans_not_exported {
            self.counts.spans_not_exported = n;
            self.changed = true;
        }
    }

    /// Copies the counts for scrapes, unless one is encoding them right now (next time then)
    /// or they were copied less than [`PUBLISH_INTERVAL`] ago.
    pub fn publish(&mut self, now: Instant) {
        if !self.changed || now.duration_since(self.published) < PUBLISH_INTERVAL {
            return;
        }
        if let Ok(mut snapshot) = self.snapshot.try_lock() {
            copy_changed(&mut self.counts, &mut snapshot);
            self.changed = false;
            self.published = now;
        }
    }

    /// Copies the counts for scrapes, waiting for a scrape under way: the last counts.
    pub fn publish_now(&mut self) {
        let mut snapshot = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        copy_changed(&mut self.counts, &mut snapshot);
        self.changed = false;
    }
}

/// The counts of `function` in the process labelled `pid`.
fn function_counts<'c>(
    counts: &'c mut Counts,
    pid: &str,
    function: &str,
) -> &'c mut FunctionCounts {
    let bounds = counts.bounds_ns;
    // Looked up before inserting: the event path does not allocate a key per call.
    if !counts.processes.contains_key(pid) {
        counts.processes.insert(pid.to_owned(), BTreeMap::new());
    }
    let functions = counts.processes.get_mut(pid).expect("inserted above");
    if !functions.contains_key(function) {
        functions.insert(function.to_owned(), FunctionCounts::new(bounds));
    }
    functions.get_mut(function).expect("inserted above")
}

/// Brings `snapshot` up to `counts`, copying only the functions counted since the last time
/// (a plan of thousands of functions in many processes is not copied whole every time).
fn copy_changed(counts: &mut Counts, snapshot: &mut Counts) {
    snapshot.bounds_ns = counts.bounds_ns;
    snapshot.binary.clone_from(&counts.binary);
    snapshot.sites_attached = counts.sites_attached;
    snapshot.sites_failed = counts.sites_failed;
    snapshot.lost.clone_from(&counts.lost);
    snapshot.spans_not_exported = counts.spans_not_exported;
    for (pid, functions) in &mut counts.processes {
        let copies = snapshot.processes.entry(pid.clone()).or_default();
        for (function, c) in functions.iter_mut().filter(|(_, c)| c.changed) {
            c.changed = false;
            match copies.get_mut(function) {
                Some(copy) => copy.clone_from(c),
                None => {
                    copies.insert(function.clone(), c.clone());
                }
            }
        }
    }
}

fn answer_scrapes(server: &tiny_http::Server, registry: &Registry) {
    for request in server.incoming_requests() {
        let response =
            match request.url() {
                "/metrics" => {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, registry) {
                        Ok(()) => {
                            tiny_http::Response::from_string(text).with_header(tiny_http::Header {
                                field: "Content-Type".parse().expect("a valid header name"),
                                value: "text/plain; version=0.0.4; charset=utf-8"
                                    .parse()
                                    .expect("a valid header value"),
                            })
                        }
                        Err(_) => tiny_http::Response::from_string("encoding failed")
                            .with_status_code(500),
                    }
                }
                _ => tiny_http::Response::from_string("gotrace serves /metrics\n")
                    .with_status_code(404),
            };
        // A scraper that went away: nothing to do about it.
        let _ = request.respond(response);
    }
}

/// The published counts, encoded at each scrape.
#[derive(Debug)]
struct Snapshot(Arc<Mutex<Counts>>);

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let binary = counts.binary.as_str();
        counts.encode_calls(&mut encoder)?;
        counts.encode_latency(&mut encoder)?;
        counts.encode_lost(&mut encoder)?;
        encoder
            .encode_descriptor(
                "gotrace_spans_not_exported",
                "Spans dropped: the export queue was full or the OTLP collector did not take them.",
                None,
                MetricType::Counter,
            )?
            .encode_family(&[("binary", binary)])?
            .encode_counter::<NoLabelSet, _, u64>(&counts.spans_not_exported, None)?;
        for (name, help, n) in [
            (
                "gotrace_sites_attached",
                "Probe sites attached.",
                counts.sites_attached,
            ),
            (
                "gotrace_sites_failed",
                "Probe sites that failed to attach.",
                counts.sites_failed,
            ),
        ] {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_family(&[("binary", binary)])?
                .encode_gauge(&n)?;
        }
        Ok(())
    }
}

impl Counts {
    /// `gotrace_calls`: each function's calls in each process, by outcome.
    fn encode_calls(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut calls = encoder.encode_descriptor(
            "gotrace_calls",
            "Calls of traced functions, by how they ended.",
            None,
            MetricType::Counter,
        )?;
        for (pid, functions) in &self.processes {
            for (function, c) in functions {
                for (outcome, n) in OUTCOMES.iter().zip(c.outcomes) {
                    if n == 0 {
                        continue;
                    }
                    let labels = [
                        ("binary", self.binary.as_str()),
                        ("function", function.as_str()),
                        ("pid", pid.as_str()),
                        ("outcome", outcome),
                    ];
                    calls
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
        }
        Ok(())
    }

    /// `gotrace_call_duration`: each function's latency histogram in each process.
    fn encode_latency(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut latency = encoder.encode_descriptor(
            "gotrace_call_duration",
            "Latency of the calls that returned, from the kernel's timestamps.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (pid, functions) in &self.processes {
            for (function, c) in functions {
                let count: u64 = c.buckets.iter().sum();
                if count == 0 {
                    continue;
                }
                let buckets: Vec<(f64, u64)> = self
                    .bounds_ns
                    .iter()
                    .map(|&ns| ns as f64 / 1e9)
                    .chain([f64::MAX])
                    .zip(c.buckets.iter().copied())
                    .collect();
                let labels = [
                    ("binary", self.binary.as_str()),
                    ("function", function.as_str()),
                    ("pid", pid.as_str()),
                ];
                latency
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(c.sum_ns as f64 / 1e9, count, &buckets, None)?;
            }
        }
        Ok(())
    }

    /// `gotrace_calls_lost`: calls not traced, by cause.
    fn encode_lost(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut lost = encoder.encode_descriptor(
            "gotrace_calls_lost",
            "Calls that started and were not traced, by cause.",
            None,
            MetricType::Counter,
        )?;
        for (cause, n) in &self.lost {
            lost.encode_family(&[("binary", self.binary.as_str()), ("cause", cause)])?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(pid: u32, outcome: CallKind, duration_ns: u64) -> DecodedCall<'static> {
        DecodedCall {
            function: "main.F",
            outcome,
            pid,
            entry_ns: 1_000,
            return_ns: 1_000 + duration_ns,
            ..DecodedCall::default()
        }
    }

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn calls_are_counted_by_outcome_and_bucketed_by_latency() {
        let (mut metrics, registry) = Metrics::new(&TRACE_BUCKETS_NS);
        metrics.call(&call(7, CallKind::Returned, 3_000));
        metrics.call(&call(7, CallKind::Returned, 2_500));
        metrics.call(&call(7, CallKind::Panicked, 0));
        // Nothing is seen before it is published.
        assert!(!scrape(&registry).contains("main.F"));
        metrics.publish_now();
        let text = scrape(&registry);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        has(r#"gotrace_calls_total{binary="",function="main.F",pid="7",outcome="returned"} 2"#);
        has(r#"gotrace_calls_total{binary="",function="main.F",pid="7",outcome="panicked"} 1"#);
        has(r#"gotrace_call_duration_seconds_count{binary="",function="main.F",pid="7"} 2"#);
        // A bound holds the calls at most that long: 2.5 µs is in le=2.5e-6, 3 µs is not.
        has(
            r#"gotrace_call_duration_seconds_bucket{le="0.0000025",binary="",function="main.F",pid="7"} 1"#,
        );
        has(
            r#"gotrace_call_duration_seconds_bucket{le="0.000005",binary="",function="main.F",pid="7"} 2"#,
        );
        has(
            r#"gotrace_call_duration_seconds_bucket{le="+Inf",binary="",function="main.F",pid="7"} 2"#,
        );
    }

    #[test]
    fn processes_beyond_the_bound_share_one_label() {
        let (mut metrics, registry) = Metrics::new(&TRACE_BUCKETS_NS);
        for pid in 0..MAX_PIDS as u32 + 5 {
            metrics.call(&call(1000 + pid, CallKind::Returned, 1));
        }
        metrics.publish_now();
        let text = scrape(&registry);
        let series = text
            .lines()
            .filter(|l| l.starts_with("gotrace_calls_total"))
            .count();
        assert_eq!(series, MAX_PIDS + 1, "{text}");
        assert!(
            text.contains(r#"pid="other",outcome="returned"} 5"#),
            "{text}"
        );
    }
}
