//! Outputs for a fleet, fed the same records as stdout: Prometheus metrics served on
//! `--metrics ADDR`, and each call as an OpenTelemetry span sent to `--otlp URL`. Neither ever
//! holds up the event path: metrics are counted locally and published as a snapshot a scrape
//! reads; spans go through a bounded queue to a thread of their own, and what does not fit or
//! is not taken by the collector is counted as not exported.

mod metrics;
mod otlp;

use crate::cli::UsageError;
use anyhow::Result;
use gotrace_decode::DecodedCall;
use gotrace_output::{Clock, LossCause, Lost, Record};
use std::time::{Duration, Instant};

/// How long spans still queued when tracing stops may take to reach the collector.
pub const GRACE: Duration = Duration::from_secs(3);

pub use metrics::{Metrics, STATS_BUCKETS_NS, TRACE_BUCKETS_NS};
pub use otlp::Otlp;

/// The exports asked for on the command line.
#[derive(Default)]
pub struct Exports {
    metrics: Option<Metrics>,
    otlp: Option<Otlp>,
    /// Spans not exported, as last reported in a `lost` record.
    reported: u64,
}

impl Exports {
    /// Starts serving `/metrics` on `metrics` and the span exporter for `otlp`; a bad address
    /// or URL is a usage error, an address in use an error.
    /// `bounds_ns`: the latency buckets of `/metrics` ([`TRACE_BUCKETS_NS`], [`STATS_BUCKETS_NS`]).
    pub fn start(
        metrics: Option<&str>,
        otlp: Option<&str>,
        clock: Clock,
        bounds_ns: &'static [u64],
    ) -> Result<Exports> {
        let otlp = otlp
            .map(|url| otlp::endpoint(url).map(|endpoint| Otlp::start(endpoint, clock)))
            .transpose()?;
        let metrics = metrics
            .map(|addr| {
                let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
                    UsageError(format!(
                        "--metrics {addr:?}: give an IP address and port to serve on, e.g. 127.0.0.1:9464"
                    ))
                })?;
                Metrics::serve(addr, bounds_ns)
            })
            .transpose()?;
        Ok(Exports {
            metrics,
            otlp,
            reported: 0,
        })
    }

    pub fn call(&mut self, call: &DecodedCall<'_>) {
        if let Some(m) = &mut self.metrics {
            m.call(call);
        }
        if let Some(o) = &mut self.otlp {
            o.call(call);
        }
    }

    pub fn record(&mut self, record: &Record<'_>) {
        if let Some(m) = &mut self.metrics {
            m.record(record);
        }
        if let Some(o) = &mut self.otlp {
            o.record(record);
        }
    }

    /// End of a batch: publishes the metrics, hands spans on. A `lost` record when more spans
    /// could not be exported since the last one.
    pub fn flush(&mut self) -> Option<Lost> {
        let not_exported = self.otlp.as_mut().map_or(0, Otlp::flush);
        if let Some(m) = &mut self.metrics {
            m.spans_not_exported(not_exported);
            m.publish(Instant::now());
        }
        (not_exported > self.reported).then(|| {
            self.reported = not_exported;
            Lost {
                cause: LossCause::SpansNotExported,
                calls: not_exported,
            }
        })
    }

    /// Sends what is still held, waiting until `deadline` at most: the spans not exported,
    /// all told (those still unsent then included).
    pub fn finish(&mut self, deadline: Instant) -> u64 {
        let not_exported = self.otlp.as_mut().map_or(0, |o| o.finish(deadline));
        if let Some(m) = &mut self.metrics {
            m.spans_not_exported(not_exported);
            m.publish_now();
        }
        not_exported
    }
}
