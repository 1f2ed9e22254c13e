//! Binaries without any debug information, end to end on every installed toolchain: the values
//! and methods fixtures linked with `-ldflags=-s -w` run the same calls as their unstripped
//! builds, traced both ways. Methods the runtime type descriptors cover decode with their real
//! types and equal the unstripped run's values; every other function's argument words are
//! either read from where the traceback metadata and the stack-growth code place them — and
//! then each integer, pointer and bool word equals the unstripped run's value at that place,
//! found through the unstripped DWARF — or shown as not read with a reason. A
//! distribution-packaged Go program (Debian's prometheus) is traced while serving.

mod common;

use common::*;
use gotrace_binary::abi::{assign, Location};
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use gotrace_binary::GoBinary;
use gotrace_gobuild::{Flavour, Toolchain};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One goroutine, one round: the same calls in the same order in every run.
const VALUES_ARGS: [&str; 4] = ["-workers", "1", "-rounds", "1"];
const VALUES_TRACED: [&str; 3] = ["main.F*", "main.Grow*", "main.*.F*"];
const METHODS_TRACED: [&str; 9] = [
    "main.(*Counter).*",
    "main.Rect.*",
    "main.Bag.*",
    "main.Pipe.*",
    "main.Ring.*",
    "main.ByLen.*",
    "main.(*Node).*",
    "main.Handler.*",
    "main.Celsius.*",
];

/// The JSON calls of one run of `binary` (attached before it starts), in order, and stderr.
fn traced_run(binary: &Path, traced: &[&str], program_args: &[&str]) -> (Vec<Value>, String) {
    let run = trace_one_run(binary, &[], traced, program_args, &[]);
    (run.calls, run.stderr)
}

/// Calls by (function, n-th call of it): the runs make the same calls in the same order.
fn by_occurrence(calls: Vec<Value>) -> BTreeMap<(String, usize), Value> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    calls
        .into_iter()
        .map(|c| {
            let name = c["func"].as_str().unwrap_or("?").to_owned();
            let n = seen.entry(name.clone()).or_default();
            *n += 1;
            ((name, *n), c)
        })
        .collect()
}

/// A parameter of the unstripped build and where its bytes start in the argument frame: the
/// spill slot of a register parameter, the stack slot of a stack one (`cmd/compile/internal/abi`:
/// stack arguments and results, then a slot per register parameter, aligned to its type).
struct Param {
    name: String,
    ty: TypeId,
    start: u64,
}

/// Each parameter's place in the frame, by function name; functions whose DWARF signature does
/// not account for pclntab's frame (Go < 1.22: blank parameters, wrapper receivers) left out.
fn frames(binary: &GoBinary) -> HashMap<String, Vec<Param>> {
    let dwarf = binary.dwarf().unwrap().expect("unstripped build has DWARF");
    let types = dwarf.types();
    let align_up = |n: u64, a: u64| n.div_ceil(a.max(1)) * a.max(1);
    let mut out = HashMap::new();
    for f in binary.functions() {
        let Some(sig) = dwarf.signature(f.entry) else {
            continue;
        };
        let a = assign(binary.arch(), sig, types);
        if Some(a.arg_width) != binary.arg_size(f) {
            continue;
        }
        let in_registers = sig
            .params
            .iter()
            .zip(&a.params)
            .filter(|(_, l)| matches!(l, Location::Registers(_)));
        let spill_total = in_registers.fold(0, |s, (p, _)| {
            let t = types.get(p.ty);
            align_up(s, t.align) + t.size
        });
        let mut spill = a.arg_width - align_up(spill_total, 8);
        let mut params = Vec::new();
        for (p, location) in sig.params.iter().zip(&a.params) {
            let t = types.get(p.ty);
            let start = match location {
                Location::Registers(_) => {
                    spill = align_up(spill, t.align);
                    spill += t.size;
                    spill - t.size
                }
                Location::Stack { sp_offset } => sp_offset - 8,
                Location::Empty => continue,
            };
            params.push(Param {
                name: p.name.clone(),
                ty: p.ty,
                start,
            });
        }
        out.insert(f.name.clone(), params);
    }
    out
}

/// What a word must be, from the unstripped run.
#[derive(Clone, Copy)]
enum Expect {
    /// These bits (under the word's size).
    Bits(u64),
    /// A pointer the unstripped run followed: not nil. Its address is not compared: the two
    /// links need not put the data at the same place.
    NonNil,
}

/// What the unstripped run shows for the scalar at `offset` bytes into a value of type `ty`
/// (JSON `shown`), when it is an integer, pointer or bool word. `None` for other words
/// (floats, string and slice parts, interfaces, maps…).
fn expected_word(types: &TypeTable, ty: TypeId, offset: u64, shown: &Value) -> Option<Expect> {
    let t = types.get(ty);
    match &t.kind {
        TypeKind::Int { signed: true } if offset == 0 => {
            shown.as_i64().map(|v| Expect::Bits(v as u64))
        }
        TypeKind::Int { signed: false } if offset == 0 => shown.as_u64().map(Expect::Bits),
        TypeKind::Bool if offset == 0 => shown.as_bool().map(|b| Expect::Bits(u64::from(b))),
        // A string's length word: the bytes shown (the caller leaves cut strings out).
        TypeKind::String if offset == 8 => shown.as_str().map(|s| Expect::Bits(s.len() as u64)),
        TypeKind::Pointer { .. } if offset == 0 => match shown {
            Value::Null => Some(Expect::Bits(0)),
            _ => Some(Expect::NonNil),
        },
        TypeKind::Struct { fields } => fields.iter().find_map(|f| {
            let size = types.get(f.ty).size;
            (f.offset <= offset && offset < f.offset + size)
                .then(|| expected_word(types, f.ty, offset - f.offset, shown.get(&f.name)?))
                .flatten()
        }),
        TypeKind::Array { elem, .. } => {
            let size = types.get(*elem).size.max(1);
            let i = (offset / size) as usize;
            expected_word(types, *elem, offset % size, shown.get(i)?)
        }
        _ => None,
    }
}

/// The words of an untyped call's arguments, aggregates flattened.
fn words(args: &Value) -> Vec<&Value> {
    fn walk<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(o) if o.contains_key("offset") => out.push(v),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(args, &mut out);
    out
}

#[derive(Default, Debug)]
struct Tally {
    calls: usize,
    /// Untyped words compared with the unstripped run's values.
    compared: usize,
    /// Untyped words read whose place holds no integer, pointer or bool (or nil-only).
    uncompared: usize,
    /// Untyped words not read, each with a reason.
    unknown: usize,
    /// Calls decoded with runtime types, and their values compared.
    typed_calls: usize,
    typed_values: usize,
    /// Of those, the values shown whole (nothing in them marked not read).
    typed_whole: usize,
    /// The others, each with what was shown.
    not_whole: Vec<String>,
    problems: Vec<String>,
}

/// An untyped call of the stripped run against the unstripped run's call.
fn compare_untyped(
    key: &(String, usize),
    want: &Value,
    have: &Value,
    frame: Option<&Vec<Param>>,
    types: &TypeTable,
    tally: &mut Tally,
) {
    if !have["results"].is_null() {
        tally
            .problems
            .push(format!("{key:?}: untyped results shown: {have}"));
    }
    for word in words(&have["args"]) {
        let (Some(offset), Some(size)) = (word["offset"].as_u64(), word["size"].as_u64()) else {
            tally.problems.push(format!("{key:?}: bad word {word}"));
            continue;
        };
        let Some(bits) = word["value"].as_u64() else {
            match word["not_read"].as_str() {
                Some(reason) if !reason.is_empty() => tally.unknown += 1,
                _ => tally.problems.push(format!(
                    "{key:?}: word +{offset} neither read nor why: {word}"
                )),
            }
            continue;
        };
        let param = frame.and_then(|params| {
            params
                .iter()
                .find(|p| p.start <= offset && offset < p.start + types.get(p.ty).size.max(1))
        });
        // Values cut to a limit show fewer bytes or elements than they have.
        let cut = |name: &str| {
            want["truncated"]
                .as_array()
                .is_some_and(|t| t.iter().any(|n| n == name))
        };
        let expected = param
            .filter(|p| !cut(&p.name))
            .and_then(|p| expected_word(types, p.ty, offset - p.start, want["args"].get(&p.name)?));
        let Some(expected) = expected else {
            tally.uncompared += 1;
            continue;
        };
        let mask = match size {
            8.. => u64::MAX,
            n => (1u64 << (8 * n)) - 1,
        };
        tally.compared += 1;
        let (right, want) = match expected {
            Expect::Bits(b) => (bits == b & mask, format!("{:#x}", b & mask)),
            Expect::NonNil => (bits != 0, "a pointer followed".to_owned()),
        };
        if !right {
            tally.problems.push(format!(
                "{key:?}: word +{offset} ({size} bytes, {}) is {bits:#x}, the unstripped run shows {want}",
                param.map_or("?", |p| p.name.as_str()),
            ));
        }
    }
}

/// Whether `have` (stripped) says what `want` (unstripped) says, or marks it not read.
/// Addresses differ between the two links and are not compared; an interface whose dynamic
/// type the stripped binary cannot name shows its value not read.
fn agrees(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (_, Value::Object(h)) if h.contains_key("not_read") => true,
        (Value::Object(w), Value::Object(h)) => {
            if h.get("value").is_some_and(|v| v.get("not_read").is_some()) {
                return true;
            }
            w.len() == h.len()
                && w.iter()
                    .all(|(k, v)| k == "address" || h.get(k).is_some_and(|hv| agrees(v, hv)))
        }
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| agrees(a, b))
        }
        (Value::String(w), Value::String(h)) if w.starts_with("0x") && h.starts_with("0x") => true,
        _ => want == have,
    }
}

/// A call the stripped run decoded with runtime types: each parameter and result, by position,
/// equals the unstripped run's (DWARF names them, the runtime types number them).
fn compare_typed(
    key: &(String, usize),
    want: &Value,
    have: &Value,
    unstripped: &GoBinary,
    stripped: &GoBinary,
    tally: &mut Tally,
) {
    let (Ok(f), Ok(g)) = (unstripped.function(&key.0), stripped.function(&key.0)) else {
        tally.problems.push(format!("{key:?}: function not found"));
        return;
    };
    let dwarf = unstripped.dwarf().unwrap().unwrap();
    let methods = stripped.runtime_methods().expect("runtime methods");
    let (Some(truth), Some(method)) = (dwarf.signature(f.entry), methods.signatures.get(&g.entry))
    else {
        tally
            .problems
            .push(format!("{key:?}: typed without a runtime signature"));
        return;
    };
    tally.typed_calls += 1;
    let pairs = [
        ("args", &truth.params, &method.signature.params),
        ("results", &truth.results, &method.signature.results),
    ];
    for (what, named, numbered) in pairs {
        // Go before 1.22 leaves wrapper receivers out of DWARF: then the positions differ.
        if named.len() != numbered.len() || want[what].is_null() {
            continue;
        }
        for (n, p) in named.iter().zip(numbered.iter()) {
            let (w, h) = (&want[what][&n.name], &have[what][&p.name]);
            tally.typed_values += 1;
            if !h.to_string().contains("not_read") {
                tally.typed_whole += 1;
            } else {
                tally.not_whole.push(format!("{key:?} {}: {h}", n.name));
            }
            if !agrees(w, h) {
                tally.problems.push(format!(
                    "{key:?}: {what} {} / {}: unstripped {w}, stripped {h}",
                    n.name, p.name
                ));
            }
        }
    }
}

/// Traces `fixture` built plain and stripped with the same workload and compares every call.
fn compare_fixture(
    toolchain: &Toolchain,
    fixture: &str,
    traced: &[&str],
    program_args: &[&str],
) -> Tally {
    let plain = build_go(fixture, toolchain, Flavour::Plain, "-l");
    let stripped = build_go(fixture, toolchain, Flavour::Stripped, "-l");
    let (want, plain_err) = traced_run(&plain, traced, program_args);
    let (have, stripped_err) = traced_run(&stripped, traced, program_args);
    assert!(plain_err.contains("signatures from DWARF"), "{plain_err}");
    assert!(
        stripped_err.contains("no DWARF; signatures: "),
        "the attach line says where signatures came from: {stripped_err}"
    );
    let unstripped_bin = GoBinary::open(&plain).unwrap();
    let stripped_bin = GoBinary::open(&stripped).unwrap();
    let frames = frames(&unstripped_bin);
    let types = unstripped_bin.dwarf().unwrap().unwrap().types();
    let (want, have) = (by_occurrence(want), by_occurrence(have));
    let mut tally = Tally::default();
    for key in want.keys().filter(|k| !have.contains_key(*k)) {
        tally
            .problems
            .push(format!("{key:?}: not reported for the stripped build"));
    }
    for (key, have) in &have {
        let Some(want) = want.get(key) else {
            tally
                .problems
                .push(format!("{key:?}: reported only for the stripped build"));
            continue;
        };
        tally.calls += 1;
        match have["untyped"].as_bool() {
            Some(true) => compare_untyped(key, want, have, frames.get(&key.0), types, &mut tally),
            _ if have["args"].is_null() => tally.unknown += 1,
            _ => compare_typed(key, want, have, &unstripped_bin, &stripped_bin, &mut tally),
        }
    }
    tally
}

fn stripped_values_show_only_what_the_unstripped_run_shows() {
    let _serial = serial();
    for toolchain in toolchains() {
        let what = format!("Go {}", toolchain.version);
        let t = compare_fixture(
            &toolchain,
            "fixtures/go/values",
            &VALUES_TRACED,
            &VALUES_ARGS,
        );
        eprintln!(
            "{what}: values: {} calls, {} words compared, {} read but not comparable, {} not read (with reasons), {} typed calls ({} values)",
            t.calls, t.compared, t.uncompared, t.unknown, t.typed_calls, t.typed_values
        );
        assert!(
            t.problems.is_empty(),
            "{what}: {} problems:\n{}",
            t.problems.len(),
            t.problems.join("\n")
        );
        assert!(t.calls > 30, "{what}: only {} calls", t.calls);
        // The Grow* functions' integer, bool and pointer words: 2×8 + 2×3 + 4 + 5.
        assert!(
            t.compared >= 30,
            "{what}: only {} words compared",
            t.compared
        );
    }
}

fn methods_decode_with_their_runtime_types() {
    let _serial = serial();
    for toolchain in toolchains() {
        let what = format!("Go {}", toolchain.version);
        let t = compare_fixture(&toolchain, "fixtures/go/methods", &METHODS_TRACED, &[]);
        eprintln!(
            "{what}: methods: {} calls, {} typed ({} values compared, {} shown whole), {} untyped words compared, {} not read",
            t.calls, t.typed_calls, t.typed_values, t.typed_whole, t.compared, t.unknown
        );
        assert!(
            t.problems.is_empty(),
            "{what}: {} problems:\n{}",
            t.problems.len(),
            t.problems.join("\n")
        );
        assert!(
            t.typed_calls >= 8,
            "{what}: only {} typed calls",
            t.typed_calls
        );
        assert!(
            t.typed_values >= 15,
            "{what}: only {} values",
            t.typed_values
        );
        // Equal, not merely marked not read: every value is shown whole, interfaces' dynamic
        // values (named from the runtime type descriptors) and Swiss maps (laid out by their
        // group type's descriptor) included.
        assert!(
            t.not_whole.is_empty(),
            "{what}: {} of {} values not shown whole:\n{}",
            t.not_whole.len(),
            t.typed_values,
            t.not_whole.join("\n")
        );
    }
}

/// Debian's prometheus (`apt-get install prometheus`, in scripts/setup.sh): built by Debian's
/// Go, stripped, no debug file.
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// The HTTP handler method the runtime types cover in it: every API and UI route goes through it.
const HANDLER: &str = "net/http.HandlerFunc.ServeHTTP";

/// Prometheus on a free loopback address with its storage in a fresh directory, ready.
fn start_prometheus() -> (Running, std::net::SocketAddr, std::path::PathBuf) {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: scripts/setup.sh installs Debian's prometheus package"
    );
    let dir = tempfile_path("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    // Nothing scraped: the only requests are the test's.
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    let addr = free_addr();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() || http_get(addr, "/-/ready").0 != 200 {
        assert!(Instant::now() < deadline, "prometheus not ready on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (running, addr, dir)
}

fn packaged_prometheus_handlers_show_typed_requests() {
    let _serial = serial();
    let (prometheus, addr, dir) = start_prometheus();
    let listing = run_gotrace(&["funcs", PROMETHEUS, HANDLER]);
    let listed = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listed.contains("(runtime types)") && listed.contains("arg1 *net/http.Request"),
        "{HANDLER} is covered by the runtime types: {listed}"
    );
    let pid = prometheus.pid().to_string();
    let tracer = Tracer::start(&["--json", "--pid", &pid, HANDLER], &[]);
    let paths = ["/api/v1/status/buildinfo", "/-/healthy", "/api/v1/labels"];
    for path in paths {
        assert_eq!(http_get(addr, path).0, 200, "{path}");
    }
    let (stdout, stderr) = tracer.stop();
    // Detached: it serves on.
    assert_eq!(http_get(addr, "/-/healthy").0, 200, "after detaching");
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        stderr.contains("1 runtime types"),
        "the attach line says where the signature came from: {stderr}"
    );
    let calls: Vec<Value> = json_calls(&stdout)
        .into_iter()
        .filter(|c| c["func"] == HANDLER)
        .collect();
    assert!(
        calls.len() >= paths.len(),
        "{} calls: {stderr}",
        calls.len()
    );
    let mut seen = Vec::new();
    for call in &calls {
        assert_eq!(call["types"]["arg1"], "*net/http.Request", "{call}");
        assert_eq!(call["types"]["recv"], "net/http.HandlerFunc", "{call}");
        assert_eq!(call["outcome"], "returned", "{call}");
        let request = &call["args"]["arg1"];
        assert_eq!(request["Method"], "GET", "{call}");
        assert_eq!(request["Proto"], "HTTP/1.0", "{call}");
        assert_eq!(request["Host"], addr.to_string(), "{call}");
        if let Some(path) = request["URL"]["Path"].as_str() {
            seen.push(path.to_owned());
        }
        assert_eq!(
            request["RequestURI"].as_str().map(str::is_empty),
            Some(false),
            "{call}"
        );
        seen.push(
            request["RequestURI"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    for path in paths {
        assert!(seen.iter().any(|s| s == path), "{path} not among {seen:?}");
    }
    eprintln!(
        "prometheus: {} calls of {HANDLER}, requests {seen:?}",
        calls.len()
    );
}

/// `--where` on Debian's stripped prometheus: the handler is tested with the names the runtime
/// types give (`arg1`), its inlined copy (arguments unknown) is left out with a warning, and
/// exactly the requests that match are reported.
fn packaged_prometheus_where_reports_only_matching_requests() {
    let _serial = serial();
    let (prometheus, addr, dir) = start_prometheus();
    let pid = prometheus.pid().to_string();
    let expr = "arg1.Method == \"GET\" && strings.HasPrefix(arg1.RequestURI, \"/api/\")";
    let tracer = Tracer::start(&["--json", "--pid", &pid, "--where", expr, HANDLER], &[]);
    let paths = [
        "/api/v1/status/buildinfo",
        "/-/healthy",
        "/metrics",
        "/api/v1/labels",
    ];
    for path in paths {
        assert_eq!(http_get(addr, path).0, 200, "{path}");
    }
    let (stdout, stderr) = tracer.stop();
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        stderr.contains("inlined copies cannot be tested"),
        "{stderr}"
    );
    let calls = json_calls(&stdout);
    let mut uris: Vec<&str> = calls
        .iter()
        .map(|c| c["args"]["arg1"]["RequestURI"].as_str().unwrap_or("?"))
        .collect();
    uris.sort_unstable();
    uris.dedup();
    assert_eq!(
        uris,
        ["/api/v1/labels", "/api/v1/status/buildinfo"],
        "{stderr}"
    );
    let summary = json_lines(&stdout)
        .into_iter()
        .rfind(|l| l["type"] == "summary")
        .expect("a summary");
    assert!(summary["filtered_out"].as_u64() > Some(0), "{summary}");
}

/// `stats --by` on Debian's stripped prometheus: requests grouped by method (the inlined copy,
/// whose arguments are unknown, would be a `?` group), every counted call in a group.
fn packaged_prometheus_stats_by_method() {
    let _serial = serial();
    let (prometheus, addr, dir) = start_prometheus();
    let pid = prometheus.pid().to_string();
    let args = ["--json", "--pid", &pid, "--by", "arg1.Method", HANDLER];
    let stats = Tracer::start_command("stats", &args, &[]);
    for path in ["/api/v1/labels", "/-/healthy"] {
        assert_eq!(http_get(addr, path).0, 200, "{path}");
    }
    let posted = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-X", "POST"])
        .arg(format!("http://{addr}/api/v1/query?query=up"))
        .status()
        .expect("running curl");
    assert!(posted.success());
    let (stdout, stderr) = stats.stop();
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
    let lines = json_lines(&stdout);
    let total = lines
        .iter()
        .rfind(|l| l["type"] == "stats" && l["final"] == true)
        .and_then(|l| l["calls"].as_u64())
        .expect("a final stats line");
    let groups: Vec<(&str, u64)> = lines
        .iter()
        .filter(|l| l["type"] == "group" && l["final"] == true)
        .map(|l| {
            (
                l["key"].as_str().unwrap_or("?"),
                l["calls"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let keys: Vec<&str> = groups.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["\"GET\"", "\"POST\""], "{groups:?} {stderr}");
    assert!(groups.iter().all(|(_, n)| *n > 0), "{groups:?}");
    assert_eq!(
        groups.iter().map(|(_, n)| n).sum::<u64>(),
        total,
        "{groups:?}"
    );
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        stripped_values_show_only_what_the_unstripped_run_shows,
        methods_decode_with_their_runtime_types,
        packaged_prometheus_handlers_show_typed_requests,
        packaged_prometheus_where_reports_only_matching_requests,
        packaged_prometheus_stats_by_method,
    ],
}
