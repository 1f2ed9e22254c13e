//! `--otlp URL`: each call as an OpenTelemetry span, sent over OTLP/HTTP (protobuf) to
//! `URL/v1/traces` in batches by a thread of its own.
//!
//! Calls nest as `--graph` nests them (gotrace-output's [`Nesting`]): a traced call inside
//! another's time on the same goroutine is its child span. Calls arrive when they end, an inner
//! call before its caller, so a call waits for its caller until it began [`HOLD`] ago (then it
//! is the root of a trace: a caller that ends later starts a trace of its own), or until
//! [`MAX_HELD`] calls wait (then the oldest goroutine's go).

use crate::cli::UsageError;
use gotrace_decode::{DecodedCall, NamedValue, Value};
use gotrace_output::nesting::{Goroutine, Nesting, Node};
use gotrace_output::{Clock, GoSyntax, Record};
use gotrace_plan::CallKind;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spans waiting for the export thread at most; more are dropped and counted.
const QUEUE: usize = 8192;
/// Spans sent in one request at most.
const BATCH: usize = 512;
/// How long the export thread gathers a batch before sending what it has.
const LINGER: Duration = Duration::from_millis(200);
/// How long a request may take before its spans are counted as not exported.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after it began a call may still get a caller; after that it is exported as a root.
const HOLD: Duration = Duration::from_secs(2);
/// Calls held for a parent at most, over all goroutines; beyond, the oldest go as roots.
const MAX_HELD: usize = 16_384;
/// Arguments and results made attributes of a span at most, and the characters of each.
const MAX_VALUES: usize = 32;
const MAX_VALUE_CHARS: usize = 256;

/// `URL/v1/traces` for an `http://` URL (the path added unless it is there).
pub fn endpoint(url: &str) -> Result<String, UsageError> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(UsageError(format!(
            "--otlp {url:?}: give an http:// URL of an OTLP/HTTP receiver, e.g. http://127.0.0.1:4318 (https is not supported: use a local collector)"
        )));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(UsageError(format!("--otlp {url:?}: no host")));
    }
    let base = url.trim_end_matches('/');
    Ok(match base.ends_with("/v1/traces") {
        true => base.to_owned(),
        false => format!("{base}/v1/traces"),
    })
}

/// What the export thread is given: a span and the binary it was traced in.
struct Item {
    service: Arc<str>,
    span: Span,
}

pub struct Otlp {
    clock: Clock,
    /// The traced binary's file name: the spans' `service.name`.
    service: Arc<str>,
    /// Calls waiting for their caller.
    nesting: Nesting<Span>,
    ids: Ids,
    queue: Option<SyncSender<Item>>,
    /// Spans made, and those the collector took.
    made: u64,
    shared: Arc<Tally>,
    thread: Option<(std::thread::JoinHandle<()>, Receiver<()>)>,
}

#[derive(Default)]
struct Tally {
    exported: AtomicU64,
    dropped: AtomicU64,
}

impl Otlp {
    pub fn start(endpoint: String, clock: Clock) -> Otlp {
        let (queue, items) = mpsc::sync_channel(QUEUE);
        let (done_tx, done_rx) = mpsc::channel();
        let shared = Arc::new(Tally::default());
        let tally = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("otlp".into())
            .spawn(move || {
                export(&endpoint, &items, &tally);
                let _ = done_tx.send(());
            })
            .ok();
        Otlp {
            clock,
            service: Arc::from("gotrace"),
            nesting: Nesting::new(MAX_HELD),
            ids: Ids::new(),
            queue: thread.is_some().then_some(queue),
            made: 0,
            shared,
            thread: thread.map(|t| (t, done_rx)),
        }
    }

    pub fn record(&mut self, record: &Record<'_>) {
        if let Record::Attached(a) = record {
            let name = std::path::Path::new(&a.binary)
                .file_name()
                .map_or(a.binary.clone(), |n| n.to_string_lossy().into_owned());
            self.service = Arc::from(name);
        }
    }

    pub fn call(&mut self, call: &DecodedCall<'_>) {
        self.made += 1;
        let span = self.span(call);
        // A call that did not return ended after every call reported before it that began
        // after it (Nesting works that out).
        let end = call
            .duration_ns()
            .map(|ns| call.entry_ns.saturating_add(ns));
        let goroutine = Goroutine::of(call.pid, call.goid, call.tid);
        self.nesting.push(goroutine, call.entry_ns, end, span);
    }

    /// End of a batch: exports the trees no caller can still come for (their root began
    /// [`HOLD`] ago), and those let out because too many calls waited. Spans not exported so
    /// far.
    pub fn flush(&mut self) -> u64 {
        let now = self.monotonic_now_ns();
        let hold = u64::try_from(HOLD.as_nanos()).unwrap_or(u64::MAX);
        self.nesting
            .release_settled(now.saturating_sub(hold), |_, _| None);
        for tree in self.nesting.take_ready() {
            self.send_tree(tree.root);
        }
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Exports everything held and waits until `deadline` at most for the collector to take
    /// it. Spans not exported, all told.
    pub fn finish(&mut self, deadline: Instant) -> u64 {
        for tree in self.nesting.finish() {
            self.send_tree(tree.root);
        }
        // The thread ends once it has sent what the queue holds.
        self.queue = None;
        if let Some((thread, done)) = self.thread.take() {
            let wait = deadline.saturating_duration_since(Instant::now());
            if done.recv_timeout(wait).is_ok() {
                let _ = thread.join();
            }
        }
        self.made - self.shared.exported.load(Ordering::SeqCst)
    }

    /// Gives a call and what it enclosed one new trace id, and queues them: each span's id
    /// and its parent's come from the calls' ids in the nesting.
    fn send_tree(&mut self, root: Node<Span>) {
        let trace_id = self.ids.trace(root.id);
        let mut stack = vec![(root, None)];
        while let Some((node, parent)) = stack.pop() {
            let mut span = node.item;
            span.trace_id.clone_from(&trace_id);
            span.span_id = self.ids.span(node.id);
            if let Some(parent) = parent {
                span.parent_span_id = self.ids.span(parent);
            }
            if !node.returned {
                // Ended with its last traced callee, as far as anyone can tell.
                span.end_time_unix_nano = self.unix_ns(node.end_ns);
            }
            stack.extend(node.children.into_iter().map(|c| (c, Some(node.id))));
            let item = Item {
                service: Arc::clone(&self.service),
                span,
            };
            let sent = match &self.queue {
                Some(queue) => match queue.try_send(item) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
                },
                None => false,
            };
            if !sent {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn span(&mut self, call: &DecodedCall<'_>) -> Span {
        let start = self.unix_ns(call.entry_ns);
        let end = call
            .duration_ns()
            .map_or(start, |ns| start.saturating_add(ns));
        let mut attributes = vec![
            int("process.pid", i64::from(call.pid)),
            int(
                "go.goroutine.id",
                i64::try_from(call.goid).unwrap_or(i64::MAX),
            ),
            int("thread.id", i64::from(call.tid)),
            string("gotrace.outcome", outcome(call.outcome).to_owned()),
        ];
        let mut values = 0;
        let mut dropped = 0u32;
        let mut failed: Option<String> = None;
        for (prefix, list) in [("arg", &call.args), ("result", &call.results)] {
            for (i, v) in list.iter().flatten().enumerate() {
                let shown = bounded(&v.value);
                if prefix == "result" && is_non_nil_error(v) {
                    failed.get_or_insert_with(|| shown.clone());
                }
                if values == MAX_VALUES {
                    dropped += 1;
                    continue;
                }
                values += 1;
                let key = match v.name {
                    "" => format!("gotrace.{prefix}.{i}"),
                    name => format!("gotrace.{prefix}.{name}"),
                };
                attributes.push(string(&key, shown));
            }
        }
        let status = match (call.outcome, failed) {
            (CallKind::Panicked, _) => Some(Status {
                message: "panicked".to_owned(),
                code: StatusCode::Error as i32,
            }),
            (_, Some(error)) => Some(Status {
                message: error,
                code: StatusCode::Error as i32,
            }),
            _ => None,
        };
        Span {
            name: call.function.to_owned(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count: dropped,
            status,
            ..Span::default()
        }
    }

    /// The kernel's monotonic timestamp in Unix nanoseconds, as the text and JSON outputs
    /// convert it.
    fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        let ns = i128::from(monotonic_ns) + self.clock.realtime_minus_monotonic_ns;
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    /// Now on the kernel's clock, through the same offset.
    fn monotonic_now_ns(&self) -> u64 {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let ns = i128::try_from(unix).unwrap_or(i128::MAX) - self.clock.realtime_minus_monotonic_ns;
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }
}

/// Names as the JSON output's `outcome`.
fn outcome(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Returned => "returned",
        CallKind::Entered => "entered",
        CallKind::Inlined => "inlined",
        CallKind::Panicked => "panicked",
        CallKind::Exited => "exited",
        CallKind::InFlight => "in_flight",
        CallKind::Abandoned => "abandoned",
        CallKind::ReturnNotSeen => "return_not_seen",
    }
}

/// A result of type `error` holding a value.
fn is_non_nil_error(v: &NamedValue<'_>) -> bool {
    v.type_name == "error" && matches!(v.value, Value::Interface { dynamic: Some(_) })
}

/// The value in Go syntax, cut to [`MAX_VALUE_CHARS`].
fn bounded(value: &Value) -> String {
    let mut text = GoSyntax(value).to_string();
    if let Some((cut, _)) = text.char_indices().nth(MAX_VALUE_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn int(key: &str, v: i64) -> KeyValue {
    attribute(key, any_value::Value::IntValue(v))
}

fn string(key: &str, v: String) -> KeyValue {
    attribute(key, any_value::Value::StringValue(v))
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// Span and trace ids from the nesting's call ids through a randomly keyed hash (ids differ
/// between runs and processes), never zero (an invalid id).
struct Ids {
    keys: std::collections::hash_map::RandomState,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            keys: std::collections::hash_map::RandomState::new(),
        }
    }

    fn word(&self, space: u8, id: u64) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write_u8(space);
        h.write_u64(id);
        h.finish().max(1)
    }

    fn span(&self, call: u64) -> Vec<u8> {
        self.word(0, call).to_be_bytes().to_vec()
    }

    /// The trace of the tree whose outermost call is `root`.
    fn trace(&self, root: u64) -> Vec<u8> {
        let mut id = self.word(1, root).to_be_bytes().to_vec();
        id.extend_from_slice(&self.word(2, root).to_be_bytes());
        id
    }
}

/// The export thread: batches of spans, each posted once; a batch the collector did not take
/// (unreachable, slow, an error status) is counted as dropped. Ends when the queue closes.
fn export(endpoint: &str, items: &Receiver<Item>, tally: &Tally) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into();
    let mut batch: Vec<Item> = Vec::with_capacity(BATCH);
    let mut open = true;
    while open {
        match items.recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
        let until = Instant::now() + LINGER;
        while batch.len() < BATCH {
            match items.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(item) => batch.push(item),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let n = batch.len() as u64;
        let body = request(std::mem::take(&mut batch)).encode_to_vec();
        let sent = agent
            .post(endpoint)
            .header("Content-Type", "application/x-protobuf")
            .send(&body[..]);
        match sent {
            Ok(_) => tally.exported.fetch_add(n, Ordering::SeqCst),
            Err(_) => tally.dropped.fetch_add(n, Ordering::Relaxed),
        };
    }
}

/// One request: the spans grouped by the binary they were traced in.
fn request(items: Vec<Item>) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Arc<str>, Vec<Span>)> = Vec::new();
    for item in items {
        match groups.iter_mut().find(|(s, _)| *s == item.service) {
            Some((_, spans)) => spans.push(item.span),
            None => groups.push((item.service, vec![item.span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", service.to_string())],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "gotrace".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once_and_only_http_is_taken() {
        assert_eq!(
            endpoint("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            endpoint("http://collector:4318/v1/traces/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "http://",
            "http:///x",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_values_are_cut_to_the_bound() {
        let long = Value::String(gotrace_decode::Bytes {
            bytes: vec![b'a'; 1000],
            missing: 0,
            error: None,
        });
        let shown = bounded(&long);
        assert_eq!(shown.chars().count(), MAX_VALUE_CHARS + 1, "{shown}");
        assert!(shown.ends_with('…'));
        assert_eq!(bounded(&Value::Int(42)), "42");
    }
}
