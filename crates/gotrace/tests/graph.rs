//! Issue 13 item 5 (`--graph`) and issue 14 item 3 (`--timeline FILE`), end to end with real
//! eBPF. `fixtures/go/graph` records its own call tree (each traced call: its goroutine, its
//! caller, its depth, in the order the calls began) and prints it as JSON at exit; what gotrace
//! shows must be that tree, call for call:
//!
//! - `--json --graph`: each goroutine's call lines, in order, with `depth` and `parent`, equal
//!   the program's record; calls that panicked (and were recovered by their caller) are in it
//!   with that outcome;
//! - `--graph` as text: each goroutine's trees, indented by depth;
//! - trees are printed while tracing goes on, once no caller of theirs is in flight (the
//!   program done with its calls but still running);
//! - `--timeline`: the file is Chrome trace event JSON with one slice per call on its
//!   goroutine's track, nested (by time) as the program recorded; closed when gotrace stops
//!   by itself after `--count`, and when the `--pid` process exits.

mod common;

use common::*;
use gotrace_gobuild::{Flavour, Toolchain};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const FUNCTIONS: [&str; 5] = [
    "main.Outer",
    "main.Middle",
    "main.Rec",
    "main.Risky",
    "main.Leaf",
];
const LIMIT: Duration = Duration::from_secs(120);
/// Rounds per goroutine (four goroutines and main): Risky panics in rounds 0, 4, 8, 12, 16.
const ROUNDS: usize = 20;

/// A call as nested: function, depth, index of its caller in its goroutine's list.
type Shape = (String, u64, Option<usize>);

fn build(toolchain: &Toolchain) -> PathBuf {
    build_go("fixtures/go/graph", toolchain, Flavour::Plain, "-l")
}

/// Runs the fixture to completion; its own record, per goroutine id.
fn run_fixture(binary: &Path) -> BTreeMap<u64, Vec<Shape>> {
    let out = output_within(
        Command::new(binary)
            .args(["-n", &ROUNDS.to_string(), "-w", "4"])
            .stdin(Stdio::null()),
        LIMIT,
    );
    assert!(out.status.success(), "{out:?}");
    parse_record(&out.stdout)
}

/// The fixture's JSON record, per goroutine id.
fn parse_record(stdout: &[u8]) -> BTreeMap<u64, Vec<Shape>> {
    let record: Value = serde_json::from_slice(stdout).expect("the fixture's record");
    let mut per_goroutine = BTreeMap::new();
    for (goid, calls) in record["goroutines"].as_object().expect("goroutines") {
        let calls = calls.as_array().expect("calls");
        let shapes = calls
            .iter()
            .map(|c| {
                let parent = c["parent"].as_i64().expect("parent");
                (
                    c["func"].as_str().expect("func").to_owned(),
                    c["depth"].as_u64().expect("depth"),
                    usize::try_from(parent).ok(),
                )
            })
            .collect();
        per_goroutine.insert(goid.parse().expect("goid"), shapes);
    }
    let total: usize = per_goroutine.values().map(Vec::len).sum();
    assert_eq!(record["calls"], total);
    assert_eq!(per_goroutine.len(), 5, "four goroutines and main");
    per_goroutine
}

/// Traces the fixture's run with `flags`; gotrace's stdout and stderr and the program's record.
fn trace(binary: &Path, flags: &[&str]) -> (Vec<u8>, String, BTreeMap<u64, Vec<Shape>>) {
    let binary_arg = binary.to_str().expect("UTF-8 path");
    let mut args: Vec<&str> = flags.to_vec();
    args.push(binary_arg);
    args.extend(FUNCTIONS);
    let tracer = Tracer::start(&args, &[]);
    let record = run_fixture(binary);
    // Every call has been reported once the program has exited; give the reader a moment.
    std::thread::sleep(Duration::from_millis(300));
    let (stdout, stderr) = tracer.stop();
    (stdout, stderr, record)
}

fn calls_in(record: &BTreeMap<u64, Vec<Shape>>) -> usize {
    record.values().map(Vec::len).sum()
}

/// `--json --graph`: the call lines per goroutine, callers first, equal the program's record.
fn json_graph(toolchain: &Toolchain) {
    let binary = build(toolchain);
    let (stdout, stderr, record) = trace(&binary, &["--json", "--graph"]);
    let lines = json_lines(&stdout);
    let calls: Vec<&Value> = lines.iter().filter(|l| l["type"] == "call").collect();
    assert_eq!(calls.len(), calls_in(&record), "{toolchain:?}: {stderr}");
    let summary = lines.last().expect("a summary");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["calls_traced"], calls.len(), "{summary}");
    assert_eq!(summary["calls_lost"], 0, "{summary}");
    assert_eq!(shapes_of(&calls), record, "{toolchain:?}");
    let panicked: Vec<&&Value> = calls
        .iter()
        .filter(|c| c["outcome"] == "panicked")
        .collect();
    assert_eq!(panicked.len(), 5 * ROUNDS.div_ceil(4), "{toolchain:?}");
    assert!(panicked.iter().all(|c| c["func"] == "main.Risky"));
}

/// `--json --graph` call lines as nested, per goroutine, their `parent` ids as indexes.
fn shapes_of(calls: &[&Value]) -> BTreeMap<u64, Vec<Shape>> {
    let mut seen: BTreeMap<u64, Vec<Shape>> = BTreeMap::new();
    let mut index_of: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
    for c in calls {
        let goid = c["goid"].as_u64().expect("goid");
        let list = seen.entry(goid).or_default();
        let parent = c["parent"].as_u64().map(|p| {
            let (g, i) = index_of[&p];
            assert_eq!(g, goid, "a caller on another goroutine: {c}");
            i
        });
        index_of.insert(c["id"].as_u64().expect("id"), (goid, list.len()));
        let func = c["func"].as_str().expect("func").to_owned();
        list.push((func, c["depth"].as_u64().expect("depth"), parent));
    }
    seen
}

/// `--timeline`: one slice per call on its goroutine's track, nested by time as recorded.
fn timeline(toolchain: &Toolchain) {
    let binary = build(toolchain);
    let file = tempfile_path("timeline.json");
    let file_arg = file.to_str().expect("UTF-8 path").to_owned();
    let (_, stderr, record) = trace(&binary, &["--timeline", &file_arg]);
    assert!(stderr.contains("timeline written to"), "{stderr}");
    let events = read_timeline(&file);
    let _ = std::fs::remove_file(&file);
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), calls_in(&record), "{toolchain:?}");
    let per_track = tracks(&slices);
    for (tid, name) in events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| (&e["tid"], &e["args"]["name"]))
    {
        assert_eq!(name.as_str(), Some(format!("goroutine {tid}").as_str()));
    }
    assert_eq!(nest_tracks(per_track), record, "{toolchain:?}");
    let risky_panicked = slices
        .iter()
        .filter(|s| s["args"]["outcome"] == "panicked")
        .count();
    assert_eq!(risky_panicked, 5 * ROUNDS.div_ceil(4));
}

/// Each track's slices nested by time.
fn nest_tracks(per_track: BTreeMap<u64, Vec<&Value>>) -> BTreeMap<u64, Vec<Shape>> {
    let mut nested = BTreeMap::new();
    for (tid, mut track) in per_track {
        // Callers first: by start, the longer of two starting together first.
        track.sort_by(|a, b| {
            let key = |e: &Value| (e["ts"].as_f64().unwrap(), -e["dur"].as_f64().unwrap());
            key(a).partial_cmp(&key(b)).expect("numbers")
        });
        nested.insert(tid, nest_by_time(&track));
    }
    nested
}

/// Slices per track (goroutine).
fn tracks<'a>(slices: &[&'a Value]) -> BTreeMap<u64, Vec<&'a Value>> {
    let mut per_track: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for s in slices {
        per_track
            .entry(s["tid"].as_u64().expect("tid"))
            .or_default()
            .push(s);
    }
    per_track
}

fn read_timeline(file: &Path) -> Vec<Value> {
    let text = std::fs::read(file).expect("the timeline file");
    serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&text[text.len().saturating_sub(300)..])
        )
    })
}

/// Slices of one track, ordered by start: each one's caller is the innermost earlier slice
/// whose time contains it.
fn nest_by_time(track: &[&Value]) -> Vec<Shape> {
    // Microseconds with nanosecond fractions: allow for the float's rounding.
    const EPSILON: f64 = 1e-3;
    let mut open: Vec<(usize, f64)> = Vec::new();
    let mut shapes = Vec::new();
    for (i, s) in track.iter().enumerate() {
        let ts = s["ts"].as_f64().expect("ts");
        let end = ts + s["dur"].as_f64().expect("dur");
        while open.last().is_some_and(|&(_, e)| end > e + EPSILON) {
            open.pop();
        }
        let name = s["name"].as_str().expect("name").to_owned();
        shapes.push((name, open.len() as u64, open.last().map(|&(p, _)| p)));
        open.push((i, end));
    }
    shapes
}

fn root_graph_json_nests_calls_as_the_program_recorded() {
    let _serial = serial();
    for toolchain in toolchains() {
        json_graph(&toolchain);
    }
}

fn root_timeline_nests_calls_as_the_program_recorded() {
    let _serial = serial();
    for toolchain in ends() {
        timeline(&toolchain);
    }
}

/// Text: a heading per tree, each call indented two spaces per depth after its duration.
fn root_graph_text_indents_callees() {
    let _serial = serial();
    let toolchain = newest_toolchain();
    let binary = build(&toolchain);
    let (stdout, stderr, record) = trace(&binary, &["--graph"]);
    let text = String::from_utf8(stdout).expect("UTF-8");
    let mut seen: BTreeMap<u64, Vec<(String, u64)>> = BTreeMap::new();
    let mut goid = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("goroutine ") {
            goid = rest.split(' ').next().and_then(|g| g.parse::<u64>().ok());
            continue;
        }
        let goid = goid.unwrap_or_else(|| panic!("a call before any heading: {line}"));
        // After the duration's column (10 characters, right-aligned) and two spaces.
        let call: String = line.chars().skip(12).collect();
        let depth = (call.len() - call.trim_start().len()) / 2;
        let func = call.trim_start().split('(').next().unwrap_or("").to_owned();
        seen.entry(goid).or_default().push((func, depth as u64));
    }
    let expected: BTreeMap<u64, Vec<(String, u64)>> = record
        .into_iter()
        .map(|(g, calls)| (g, calls.into_iter().map(|(f, d, _)| (f, d)).collect()))
        .collect();
    assert_eq!(seen, expected, "{stderr}");
}

/// `--count`: gotrace stops by itself, and the timeline it leaves is closed JSON.
fn root_timeline_is_closed_when_count_stops_tracing() {
    let _serial = serial();
    let binary = build(&newest_toolchain());
    let file = tempfile_path("timeline-count.json");
    let tracer = start_gotrace_with_env(
        &[
            "--count",
            "10",
            "--timeline",
            file.to_str().expect("UTF-8 path"),
            binary.to_str().expect("UTF-8 path"),
            "main.Leaf",
        ],
        &[],
    );
    run_fixture(&binary);
    let out = tracer.collect();
    assert!(out.status.success(), "{out:?}");
    let events = read_timeline(&file);
    let _ = std::fs::remove_file(&file);
    let slices = events.iter().filter(|e| e["ph"] == "X").count();
    assert_eq!(slices, 10);
}

/// `--json --graph` while the program, done with its calls, still runs: every tree is printed
/// within a few intervals of the in-flight table's look, without waiting for gotrace to stop.
fn root_graph_prints_trees_while_tracing() {
    let _serial = serial();
    let binary = build(&newest_toolchain());
    let mut args = vec!["--json", "--graph", binary.to_str().expect("UTF-8 path")];
    args.extend(FUNCTIONS);
    let mut tracer = start_gotrace_with_env(&args, &[]);
    let (lines, from_gotrace) = mpsc::channel();
    let stdout = tracer.0.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut program = Command::new(&binary)
        .args(["-n", &ROUNDS.to_string(), "-w", "4", "-wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the fixture");
    let mut record_line = String::new();
    BufReader::new(program.stdout.take().expect("piped stdout"))
        .read_line(&mut record_line)
        .expect("the fixture's record");
    let record = parse_record(record_line.as_bytes());
    let expected = calls_in(&record);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut calls: Vec<Value> = Vec::new();
    while calls.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = from_gotrace.recv_timeout(left) else {
            panic!(
                "{} of {expected} calls printed while the program runs",
                calls.len()
            );
        };
        let v: Value = serde_json::from_str(&line).expect("a JSON line");
        if v["type"] == "call" {
            assert!(v["cut"].is_null(), "no tree cut short: {v}");
            calls.push(v);
        }
    }
    assert_eq!(shapes_of(&calls.iter().collect::<Vec<_>>()), record);
    assert!(
        program.try_wait().expect("the fixture").is_none(),
        "still running"
    );
    drop(program.stdin.take());
    assert!(program.wait().expect("the fixture").success());
    tracer.signal(libc::SIGINT);
    let out = tracer.collect();
    assert!(out.status.success(), "{out:?}");
    let rest: Vec<Value> = from_gotrace
        .try_iter()
        .map(|l| serde_json::from_str(&l).expect("JSON"))
        .collect();
    assert!(
        rest.iter().all(|v| v["type"] != "call"),
        "no call after: {rest:?}"
    );
    assert!(rest.iter().any(|v| v["type"] == "summary"));
}

/// `--pid`: gotrace ends by itself when the process exits, its timeline closed and whole.
fn root_timeline_is_closed_when_the_traced_process_exits() {
    let _serial = serial();
    let binary = build(&ends()[0]);
    let mut program = Command::new(&binary)
        .args(["-n", &ROUNDS.to_string(), "-w", "4", "-first", "-wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the fixture");
    let file = tempfile_path("timeline-pid.json");
    let pid = program.id().to_string();
    let mut args = vec![
        "--timeline",
        file.to_str().expect("UTF-8 path"),
        "--pid",
        &pid,
    ];
    args.extend(FUNCTIONS);
    let tracer = start_gotrace_with_env(&args, &[]);
    let mut stdin = program.stdin.take().expect("piped stdin");
    stdin.write_all(b"go\n").expect("starting the calls");
    let mut record_line = String::new();
    BufReader::new(program.stdout.take().expect("piped stdout"))
        .read_line(&mut record_line)
        .expect("the fixture's record");
    let record = parse_record(record_line.as_bytes());
    drop(stdin);
    assert!(program.wait().expect("the fixture").success());
    let out = tracer.collect();
    assert!(out.status.success(), "{out:?}");
    let events = read_timeline(&file);
    let _ = std::fs::remove_file(&file);
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), calls_in(&record));
    assert_eq!(nest_tracks(tracks(&slices)), record);
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        root_graph_json_nests_calls_as_the_program_recorded,
        root_timeline_nests_calls_as_the_program_recorded,
        root_graph_text_indents_callees,
        root_timeline_is_closed_when_count_stops_tracing,
        root_graph_prints_trees_while_tracing,
        root_timeline_is_closed_when_the_traced_process_exits,
    ],
}
