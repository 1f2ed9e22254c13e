//! `--metrics` and `--otlp` against real components: Debian's Prometheus server scrapes
//! gotrace's `/metrics` and is queried through its HTTP API; an OTLP/HTTP receiver built from
//! the official protobuf messages (the `opentelemetry-proto` crate) takes gotrace's spans. Both
//! are compared with `fixtures/go/export`'s own record of its calls, and the spans with the
//! same run's JSON call records.

mod common;

use common::*;
use gotrace_gobuild::Flavour;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);
const FUNCTIONS: [&str; 3] = ["main.Request", "main.Step", "main.Leaf"];

fn fixture() -> PathBuf {
    build_go(
        "fixtures/go/export",
        &newest_toolchain(),
        Flavour::Plain,
        "-l",
    )
}

/// Runs the program to completion; its record of its own calls.
fn run_fixture(binary: &Path, args: &[&str]) -> Value {
    let out = output_within(Command::new(binary).args(args).stdin(Stdio::null()), LIMIT);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("the program's record")
}

/// The calls the program counted, by function.
fn counted(record: &Value) -> HashMap<String, u64> {
    let counts: HashMap<String, u64> = FUNCTIONS
        .iter()
        .map(|f| (f.to_string(), record["calls"][f].as_u64().unwrap_or(0)))
        .collect();
    assert!(counts.values().all(|&n| n > 0), "{record}");
    counts
}

/// `gotrace trace ARGS BINARY main.Request main.Step main.Leaf`, attached.
fn trace(binary: &Path, args: &[&str]) -> Tracer {
    let mut all: Vec<&str> = args.to_vec();
    all.push(binary.to_str().expect("a UTF-8 path"));
    all.extend(FUNCTIONS);
    Tracer::start(&all, &[])
}

fn summary_of(stdout: &[u8]) -> Value {
    json_lines(stdout)
        .into_iter()
        .rfind(|r| r["type"] == "summary")
        .expect("a summary")
}

/// An OTLP bad address or URL is a usage error, before anything is attached.
fn bad_export_addresses_are_usage_errors() {
    for args in [
        ["--otlp", "https://127.0.0.1:4318"],
        ["--otlp", "127.0.0.1:4318"],
        ["--metrics", "not-an-address"],
    ] {
        let mut all = vec!["trace"];
        all.extend(args);
        all.extend(["/bin/true", "main.F"]);
        let out = run_gotrace(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(args[0]), "{stderr}");
    }
}

/// Debian's Prometheus, scraping `target` every 200 ms, storing in a directory of its own.
struct Prometheus {
    child: Running,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile_path("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\nscrape_configs:\n  - job_name: gotrace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "starting prometheus (Debian package `prometheus`; scripts/setup.sh installs it)",
            );
        let prometheus = Prometheus {
            child: Running(child),
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(addr).is_err() || http_get(addr, "/-/ready").0 != 200 {
            assert!(Instant::now() < deadline, "prometheus not ready on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// An instant query's result: (labels, value) per series.
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        );
        assert_eq!(status, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// `promql` summed by function, once it equals `want` (scrapes come every 200 ms).
    fn wait_for(&self, promql: &str, want: &HashMap<String, u64>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: HashMap<String, u64> = self
                .query(promql)
                .into_iter()
                .map(|(labels, v)| (labels["function"].as_str().unwrap().to_owned(), v as u64))
                .collect();
            if &got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.signal(libc::SIGTERM);
        let _ = self.child.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus scrapes `--metrics`: the calls it stores by function equal the program's own
/// counts, and so do the latency histograms' counts; sites attached are there too.
fn root_prometheus_scrapes_the_programs_counts() {
    let _serial = serial();
    let binary = fixture();
    let metrics = free_addr();
    let tracer = trace(&binary, &["--metrics", &metrics.to_string()]);
    let prometheus = Prometheus::start(metrics);
    let record = run_fixture(&binary, &["-n", "300"]);
    let want = counted(&record);
    prometheus.wait_for(
        "sum by (function) (gotrace_calls_total{outcome=\"returned\"})",
        &want,
    );
    prometheus.wait_for(
        "sum by (function) (gotrace_call_duration_seconds_count)",
        &want,
    );
    // Every call took more than 0 and less than 10 s: all in the finite buckets.
    prometheus.wait_for(
        "sum by (function) (gotrace_call_duration_seconds_bucket{le=\"10.0\"})",
        &want,
    );
    let sites = prometheus.query("gotrace_sites_attached");
    assert_eq!(sites.len(), 1, "{sites:?}");
    assert!(sites[0].1 >= 6.0, "an entry and a return each: {sites:?}");
    assert_eq!(sites[0].0["binary"].as_str(), binary.to_str(), "{sites:?}");
    let lost = prometheus.query("sum(gotrace_calls_lost_total)");
    assert!(lost.iter().all(|(_, v)| *v == 0.0), "{lost:?}");
    let (_, stderr) = tracer.stop();
    assert!(stderr.contains("0 calls lost"), "{stderr}");
}

/// `gotrace stats --metrics`: Prometheus stores the kernel's counts, and each latency bucket
/// (bounds one below a power of 4 ns) holds exactly the calls the final histogram puts at or
/// below its bound.
fn root_prometheus_scrapes_stats_counts_and_exact_buckets() {
    let _serial = serial();
    let binary = fixture();
    let metrics = free_addr();
    let metrics_addr = metrics.to_string();
    let mut args = vec!["--json", "--interval", "0.2", "--metrics", &metrics_addr];
    args.push(binary.to_str().expect("a UTF-8 path"));
    args.extend(FUNCTIONS);
    let tracer = Tracer::start_command("stats", &args, &[]);
    let prometheus = Prometheus::start(metrics);
    let record = run_fixture(&binary, &["-n", "300"]);
    let want = counted(&record);
    prometheus.wait_for(
        "sum by (function) (gotrace_calls_total{outcome=\"returned\",pid=\"all\"})",
        &want,
    );
    prometheus.wait_for(
        "sum by (function) (gotrace_call_duration_seconds_count)",
        &want,
    );
    let scraped = prometheus.query("gotrace_call_duration_seconds_bucket");
    let (stdout, _) = tracer.stop();
    let histograms: Vec<Value> = json_lines(&stdout)
        .into_iter()
        .filter(|l| l["type"] == "histogram")
        .collect();
    assert_eq!(histograms.len(), FUNCTIONS.len());
    let mut compared = 0;
    for (labels, value) in &scraped {
        let function = labels["function"].as_str().expect("a function label");
        let le = labels["le"].as_str().expect("an le label");
        let histogram = histograms
            .iter()
            .find(|h| h["func"] == function)
            .expect("the function's histogram");
        let bound_ns = match le {
            "+Inf" => u64::MAX,
            le => (le.parse::<f64>().expect("a number") * 1e9).round() as u64,
        };
        let at_most: u64 = histogram["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .filter(|b| b["hi_ns"].as_u64().expect("hi_ns") <= bound_ns)
            .map(|b| b["count"].as_u64().expect("count"))
            .sum();
        assert_eq!(*value as u64, at_most, "{function} le={le}");
        compared += 1;
    }
    assert_eq!(compared, FUNCTIONS.len() * 14, "{scraped:?}");
}

/// A tiny OTLP/HTTP receiver: every request to /v1/traces decoded as an
/// ExportTraceServiceRequest, its spans kept.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let addr = free_addr();
        let server = Arc::new(tiny_http::Server::http(addr).expect("receiver listens"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (server2, spans2) = (Arc::clone(&server), Arc::clone(&spans));
        let thread = std::thread::spawn(move || {
            for mut request in server2.incoming_requests() {
                assert_eq!(request.url(), "/v1/traces");
                let mut body = Vec::new();
                std::io::Read::read_to_end(request.as_reader(), &mut body).unwrap();
                let decoded = ExportTraceServiceRequest::decode(&body[..]).expect("protobuf");
                let mut spans = spans2.lock().unwrap();
                for rs in decoded.resource_spans {
                    for ss in rs.scope_spans {
                        spans.extend(ss.spans);
                    }
                }
                drop(spans);
                let _ = request.respond(tiny_http::Response::empty(200));
            }
        });
        Receiver {
            addr,
            spans,
            server,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn count(&self) -> usize {
        self.spans.lock().unwrap().len()
    }

    /// Stops listening: later requests are refused.
    fn stop(mut self) -> Vec<Span> {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            t.join().expect("receiver thread");
        }
        let spans = std::mem::take(&mut *self.spans.lock().unwrap());
        spans
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn int_attr(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(any_value::Value::IntValue(v)) => *v,
        other => panic!("{key}: {other:?} in {span:?}"),
    }
}

fn str_attr<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(span, key) {
        Some(any_value::Value::StringValue(v)) => v,
        other => panic!("{key}: {other:?} in {span:?}"),
    }
}

/// Nanoseconds since midnight UTC of a JSON call's `ts` (`2026-12-02T02:38:28.461835123Z`).
fn ns_of_day(ts: &str) -> u64 {
    let time = ts.split_once('T').unwrap().1.trim_end_matches('Z');
    let (hms, nanos) = time.split_once('.').unwrap();
    let secs: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    ((secs[0] * 60 + secs[1]) * 60 + secs[2]) * 1_000_000_000 + nanos.parse::<u64>().unwrap()
}

/// A call's identity in both outputs: function, goroutine and arguments.
type Key = (String, i64, i64, i64);

fn span_key(span: &Span) -> Key {
    let arg = |name: &str| match attr(span, &format!("gotrace.arg.{name}")) {
        Some(any_value::Value::StringValue(v)) => v.parse().unwrap(),
        _ => -1,
    };
    let (id, k) = match span.name.as_str() {
        "main.Leaf" => (arg("x") / 10, arg("x") % 10),
        _ => (arg("id"), arg("k")),
    };
    (span.name.clone(), int_attr(span, "go.goroutine.id"), id, k)
}

fn call_key(call: &Value) -> Key {
    let arg = |name: &str| call["args"][name].as_i64().unwrap_or(-1);
    let (id, k) = match call["func"].as_str().unwrap() {
        "main.Leaf" => (arg("x") / 10, arg("x") % 10),
        _ => (arg("id"), arg("k")),
    };
    (
        call["func"].as_str().unwrap().to_owned(),
        call["goid"].as_i64().unwrap(),
        id,
        k,
    )
}

/// One span per call, named after its function; start and duration those of the same run's
/// JSON call record; pid, goid, arguments and results as attributes; errors where the program
/// returned one; and each Step the child of its Request, each Leaf of its Step, one trace per
/// Request — as the program recorded its calls.
fn root_otlp_spans_are_the_calls() {
    let _serial = serial();
    let binary = fixture();
    let receiver = Receiver::start();
    let tracer = trace(&binary, &["--json", "--otlp", &receiver.url()]);
    let record = run_fixture(&binary, &["-n", "60"]);
    let (stdout, stderr) = tracer.stop();
    let spans = receiver.stop();
    let calls = json_calls(&stdout);
    let want = counted(&record);
    assert_eq!(calls.len() as u64, want.values().sum::<u64>(), "{stderr}");
    assert_eq!(spans.len(), calls.len(), "one span per call; {stderr}");
    let summary = summary_of(&stdout);
    assert_eq!(summary["spans_not_exported"], 0, "{summary}");

    let by_key: HashMap<Key, &Span> = spans.iter().map(|s| (span_key(s), s)).collect();
    assert_eq!(by_key.len(), spans.len(), "every call told apart");
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (&s.span_id[..], s)).collect();
    for call in &calls {
        let key = call_key(call);
        let span = by_key
            .get(&key)
            .unwrap_or_else(|| panic!("no span for {call}"));
        assert_eq!(int_attr(span, "process.pid"), call["pid"].as_i64().unwrap());
        assert_eq!(str_attr(span, "gotrace.outcome"), "returned");
        let duration = span.end_time_unix_nano - span.start_time_unix_nano;
        let kernel = call["duration_ns"].as_u64().unwrap();
        assert!(
            duration.abs_diff(kernel) <= 20_000,
            "{duration} vs {kernel}: {call}"
        );
        let day = 86_400 * 1_000_000_000;
        let start = span.start_time_unix_nano % day;
        assert!(
            start.abs_diff(ns_of_day(call["ts"].as_str().unwrap())) <= 20_000,
            "{start} vs {call}"
        );
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.span_id.len(), 8);
        // Nesting: the parent is the enclosing call of the program's record.
        let parent = (!span.parent_span_id.is_empty()).then(|| {
            by_id
                .get(&span.parent_span_id[..])
                .unwrap_or_else(|| panic!("parent of {call} not exported"))
        });
        let (name, goid, id, k) = key;
        match (name.as_str(), parent) {
            ("main.Request", None) => {}
            ("main.Step", Some(p)) => {
                assert_eq!(span_key(p), ("main.Request".to_owned(), goid, id, -1));
            }
            ("main.Leaf", Some(p)) => {
                assert_eq!(span_key(p), ("main.Step".to_owned(), goid, id, k));
            }
            _ => panic!("{name} with parent {parent:?}: {call}"),
        }
        if let Some(p) = parent {
            assert_eq!(p.trace_id, span.trace_id, "{call}");
        }
    }
    // Each Request's Steps are those the program ran, and only its own trace holds them.
    let requests: Vec<&Span> = spans.iter().filter(|s| s.name == "main.Request").collect();
    let traces: HashSet<&[u8]> = requests.iter().map(|s| &s.trace_id[..]).collect();
    assert_eq!(traces.len(), requests.len(), "a trace per Request");
    for request in &requests {
        let id = span_key(request).2;
        let mut steps: Vec<i64> = spans
            .iter()
            .filter(|s| s.parent_span_id == request.span_id)
            .map(|s| span_key(s).3)
            .collect();
        steps.sort();
        let mut want: Vec<i64> = record["steps"][id.to_string()]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_i64().unwrap())
            .collect();
        want.sort();
        assert_eq!(steps, want, "Request({id})");
    }
    // Errors: the Steps the program says failed, with the error as the status message.
    let failed: HashSet<String> = record["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed.len() as u64, record["errors"].as_u64().unwrap());
    assert!(!failed.is_empty());
    for span in spans.iter().filter(|s| s.name == "main.Step") {
        let (_, _, id, k) = span_key(span);
        let code = span.status.as_ref().map_or(0, |s| s.code);
        match failed.contains(&format!("{id}/{k}")) {
            true => {
                assert_eq!(code, 2, "{span:?}");
                let message = &span.status.as_ref().unwrap().message;
                assert!(message.contains(&format!("step {k} failed")), "{message}");
            }
            false => assert_eq!(code, 0, "{span:?}"),
        }
    }
}

/// The collector gone mid-run: tracing goes on, the program completes with its own counts
/// right, every call is still written, and each span the collector did not take is counted —
/// live (`lost` with cause `spans_not_exported`) and in the summary.
fn root_otlp_collector_gone_mid_run() {
    let _serial = serial();
    let binary = fixture();
    let receiver = Receiver::start();
    let tracer = trace(&binary, &["--json", "--otlp", &receiver.url()]);
    let program = {
        let binary = binary.clone();
        std::thread::spawn(move || run_fixture(&binary, &["-n", "1000", "-pause", "20ms"]))
    };
    // Some spans arrive (a Request is held up to 2 s for a caller), then the receiver goes,
    // about 2 of the program's 5 s in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.count() == 0 {
        assert!(Instant::now() < deadline, "no span arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let received = receiver.stop().len() as u64;
    let record = program.join().expect("the program ran");
    let want = counted(&record);
    assert_eq!(
        record["calls"]["main.Request"], 1000,
        "the program did all its work"
    );
    let (stdout, stderr) = tracer.stop();
    let calls = json_calls(&stdout);
    let traced = want.values().sum::<u64>();
    assert_eq!(calls.len() as u64, traced, "every call written: {stderr}");
    let summary = summary_of(&stdout);
    let not_exported = summary["spans_not_exported"].as_u64().unwrap();
    assert!(not_exported > 0, "{summary}");
    assert_eq!(received + not_exported, traced, "{summary}");
    assert_eq!(summary["calls_lost"], 0, "{summary}");
    let live = json_lines(&stdout)
        .into_iter()
        .filter(|r| r["type"] == "lost" && r["cause"] == "spans_not_exported")
        .count();
    assert!(live > 0, "a live report: {stderr}");
    assert!(stderr.contains("spans not exported"), "{stderr}");
}

/// Prometheus gone mid-run: gotrace goes on, nothing is lost, the program is unaffected, and
/// `/metrics` still counts every call when asked directly.
fn root_prometheus_gone_mid_run() {
    let _serial = serial();
    let binary = fixture();
    let metrics = free_addr();
    let tracer = trace(&binary, &["--json", "--metrics", &metrics.to_string()]);
    let prometheus = Prometheus::start(metrics);
    let program = {
        let binary = binary.clone();
        std::thread::spawn(move || run_fixture(&binary, &["-n", "300", "-pause", "5ms"]))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while prometheus
        .query("sum(gotrace_calls_total)")
        .first()
        .is_none_or(|(_, v)| *v == 0.0)
    {
        assert!(Instant::now() < deadline, "no call scraped");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(prometheus);
    let record = program.join().expect("the program ran");
    assert_eq!(
        record["calls"]["main.Request"], 300,
        "the program did all its work"
    );
    let want = counted(&record);
    // Published within 50 ms of the last call.
    std::thread::sleep(Duration::from_millis(200));
    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    for (function, n) in &want {
        let line = format!(
            "gotrace_calls_total{{binary=\"{}\",function=\"{function}\",pid=",
            binary.display()
        );
        let total: u64 = text
            .lines()
            .filter(|l| l.starts_with(&line) && l.contains("outcome=\"returned\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(total, *n, "{function}: {text}");
    }
    let (stdout, _) = tracer.stop();
    assert_eq!(summary_of(&stdout)["calls_lost"], 0);
}

gotrace_gobuild::test_main! {
    tests: [bad_export_addresses_are_usage_errors],
    root: [
        root_prometheus_scrapes_stats_counts_and_exact_buckets,
        root_prometheus_scrapes_the_programs_counts,
        root_otlp_spans_are_the_calls,
        root_otlp_collector_gone_mid_run,
        root_prometheus_gone_mid_run,
    ],
}
