//! `--otlp URL`: each call as an OpenTelemetry span, sent over OTLP/HTTP (protobuf) to
//! `URL/v1/traces` in batches by a thread of its own.
//!
//! Calls arrive when they end, an inner call before the one enclosing it. A call on a
//! goroutine ends after every call that began and ended on that goroutine while it ran, so
//! when it arrives, the goroutine's calls held since its start are its children. A call is
//! held until a call enclosing it arrives, or for [`HOLD`] at most (then it is the root of a
//! trace: a call enclosing it that ends later starts a trace of its own).

use crate::cli::UsageError;
use gotrace_decode::{DecodedCall, NamedValue, Value};
use gotrace_output::{Clock, GoSyntax, Record};
use gotrace_plan::CallKind;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use std::collections::HashMap;
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
/// How long a call waits for a call enclosing it before it is exported as a root.
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

/// A span and the spans of the calls it enclosed, held until its trace is known.
struct Held {
    span: Span,
    children: Vec<Held>,
    arrived: Instant,
}

impl Held {
    fn size(&self) -> usize {
        1 + self.children.iter().map(Held::size).sum::<usize>()
    }
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
    /// Per (pid, goid), calls held for a parent, in the order they ended.
    held: HashMap<(u32, u64), Vec<Held>>,
    held_count: usize,
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
            held: HashMap::new(),
            held_count: 0,
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
        let key = (call.pid, call.goid);
        let siblings = self.held.entry(key).or_default();
        // Calls with no duration (entries, inlined calls) enclose nothing.
        let first_child = match call.duration_ns() {
            Some(_) => siblings
                .partition_point(|h| h.span.start_time_unix_nano < span.start_time_unix_nano),
            None => siblings.len(),
        };
        let mut children: Vec<Held> = siblings.drain(first_child..).collect();
        for child in &mut children {
            child.span.parent_span_id.clone_from(&span.span_id);
        }
        siblings.push(Held {
            span,
            children,
            arrived: Instant::now(),
        });
        self.held_count += 1;
    }

    /// End of a batch: exports the calls held for [`HOLD`] as roots (the oldest too while more
    /// than [`MAX_HELD`] are held). Spans not exported so far.
    pub fn flush(&mut self) -> u64 {
        let now = Instant::now();
        let mut roots = Vec::new();
        self.held.retain(|_, calls| {
            let old = calls.partition_point(|h| now.duration_since(h.arrived) >= HOLD);
            roots.extend(calls.drain(..old));
            !calls.is_empty()
        });
        // Calls still held once these roots are sent.
        let mut kept = self.held_count - roots.iter().map(Held::size).sum::<usize>();
        if kept > MAX_HELD {
            let mut oldest: Vec<((u32, u64), Instant)> = self
                .held
                .iter()
                .filter_map(|(k, calls)| calls.first().map(|h| (*k, h.arrived)))
                .collect();
            oldest.sort_by_key(|(_, arrived)| *arrived);
            for (key, _) in oldest {
                if kept <= MAX_HELD {
                    break;
                }
                if let Some(calls) = self.held.remove(&key) {
                    kept -= calls.iter().map(Held::size).sum::<usize>();
                    roots.extend(calls);
                }
            }
        }
        for root in roots {
            self.send_tree(root);
        }
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Exports everything held and waits until `deadline` at most for the collector to take
    /// it. Spans not exported, all told.
    pub fn finish(&mut self, deadline: Instant) -> u64 {
        let held: Vec<Held> = self.held.drain().flat_map(|(_, calls)| calls).collect();
        for root in held {
            self.send_tree(root);
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

    /// Gives a call and what it enclosed one new trace id, and queues them.
    fn send_tree(&mut self, root: Held) {
        let trace_id = self.ids.trace();
        let mut stack = vec![root];
        while let Some(mut held) = stack.pop() {
            self.held_count = self.held_count.saturating_sub(1);
            held.span.trace_id.clone_from(&trace_id);
            stack.append(&mut held.children);
            let item = Item {
                service: Arc::clone(&self.service),
                span: held.span,
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
            span_id: self.ids.span(),
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

/// Span and trace ids: a counter through a randomly keyed hash, never zero (an invalid id).
struct Ids {
    keys: std::collections::hash_map::RandomState,
    next: u64,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            keys: std::collections::hash_map::RandomState::new(),
            next: 0,
        }
    }

    fn word(&mut self) -> u64 {
        loop {
            self.next += 1;
            let mut h = self.keys.build_hasher();
            h.write_u64(self.next);
            let word = h.finish();
            if word != 0 {
                return word;
            }
        }
    }

    fn span(&mut self) -> Vec<u8> {
        self.word().to_be_bytes().to_vec()
    }

    fn trace(&mut self) -> Vec<u8> {
        let mut id = self.word().to_be_bytes().to_vec();
        id.extend_from_slice(&self.word().to_be_bytes());
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
