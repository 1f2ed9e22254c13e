//! `--json` makes stdout JSON lines from the first to the last: an `attached` object first,
//! calls, warnings, notes and live `lost` reports as they happen, and a `summary` last whose
//! counts are the call lines written — however the session ends: the traced program exiting
//! normally, `--count`, a `--pid` process exiting while traced, or calls lost on the way.
//! `funcs --json` and `peek --json` are JSON lines too.

mod common;

use common::*;
use gotrace_gobuild::Flavour;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// `fixtures/go/accounting`: `-mode empty -n N` calls `main.Identity(i)` N times.
fn accounting() -> PathBuf {
    build_go(
        "fixtures/go/accounting",
        &newest_toolchain(),
        Flavour::Plain,
        "-l",
    )
}

/// Runs the program to completion: `n` calls of `main.Identity`.
fn run_identity(binary: &Path, n: u32) {
    let program = output_within(
        Command::new(binary)
            .args(["-mode", "empty", "-n", &n.to_string()])
            .stdin(Stdio::null()),
        LIMIT,
    );
    assert!(program.status.success(), "{program:?}");
}

/// What a `--json` stdout held, its shape checked.
struct Stream {
    calls: Vec<Value>,
    records: Vec<Value>,
    summary: Value,
}

impl Stream {
    fn records_of(&self, kind: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == kind).collect()
    }
}

/// Every line parses as JSON with a known `type`, the first is `attached`, the last `summary`,
/// and the summary counts exactly the call lines written.
fn check_stream(stdout: &[u8], stderr: &str) -> Stream {
    const TYPES: [&str; 6] = ["attached", "call", "warning", "note", "lost", "summary"];
    let records = json_lines(stdout);
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        panic!("no output; stderr: {stderr}");
    };
    assert_eq!(first["type"], "attached", "{first}\n{stderr}");
    assert_eq!(last["type"], "summary", "{last}\n{stderr}");
    for r in &records {
        let kind = r["type"].as_str().unwrap_or_else(|| panic!("no type: {r}"));
        assert!(TYPES.contains(&kind), "{r}");
    }
    let summaries = records.iter().filter(|r| r["type"] == "summary").count();
    assert_eq!(summaries, 1, "one summary, last");
    let calls: Vec<Value> = records
        .iter()
        .filter(|r| r["type"] == "call")
        .cloned()
        .collect();
    let summary = last.clone();
    let written = summary["calls"].as_u64().unwrap() + summary["unreturned"].as_u64().unwrap();
    assert_eq!(written, calls.len() as u64, "{summary}");
    assert_eq!(summary["calls_traced"], written, "{summary}");
    // A person watching still reads the text on stderr.
    assert!(stderr.contains("gotrace: tracing "), "{stderr}");
    assert!(
        stderr.contains(&format!("gotrace: {written} calls traced")),
        "{stderr}"
    );
    Stream {
        calls,
        records,
        summary,
    }
}

/// Identity's arguments, sorted: 0..n when every call was traced once.
fn identity_args(calls: &[Value]) -> Vec<i64> {
    let mut seen: Vec<i64> = calls
        .iter()
        .map(|c| {
            assert_eq!(c["func"], "main.Identity", "{c}");
            c["args"]["x"].as_i64().expect("x")
        })
        .collect();
    seen.sort_unstable();
    seen
}

fn root_json_lines_when_the_traced_program_exits_normally() {
    // One at a time: gotrace traces every process of a binary, another test's included.
    let _serial = serial();
    let binary = accounting();
    let tracer = Tracer::start(&["--json", binary.to_str().unwrap(), "main.Identity"], &[]);
    run_identity(&binary, 300);
    let (stdout, stderr) = tracer.stop();
    let stream = check_stream(&stdout, &stderr);
    assert_eq!(identity_args(&stream.calls), (0..300).collect::<Vec<_>>());
    assert_eq!(stream.summary["calls_lost"], 0, "{}", stream.summary);
    let attached = &stream.records[0];
    assert_eq!(attached["functions"], serde_json::json!(["main.Identity"]));
    assert!(attached["sites"].as_u64().unwrap() >= 1, "{attached}");
    assert_eq!(attached["binary"], binary.to_str().unwrap());
}

fn root_json_lines_with_count() {
    // One at a time: gotrace traces every process of a binary, another test's included.
    let _serial = serial();
    let binary = accounting();
    let tracer = start_gotrace(&[
        "--json",
        "--count",
        "100",
        binary.to_str().unwrap(),
        "main.Identity",
    ]);
    run_identity(&binary, 300);
    // gotrace stops by itself after 100 calls.
    let out = tracer.collect();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stream = check_stream(&out.stdout, &stderr);
    assert_eq!(stream.calls.len(), 100);
}

fn root_json_lines_when_the_traced_process_exits() {
    // One at a time: gotrace traces every process of a binary, another test's included.
    let _serial = serial();
    let binary = accounting();
    let mut program = Running(
        Command::new(&binary)
            .args(["-mode", "empty", "-n", "200", "-wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the program"),
    );
    let mut lines = BufReader::new(program.0.stdout.take().unwrap()).lines();
    let mut next = move || lines.next().expect("a line").expect("reading the program");
    assert_eq!(next(), "READY");
    let pid = program.pid().to_string();
    let tracer = start_gotrace(&["--json", "--pid", &pid, "main.Identity"]);
    let mut stdin = program.0.stdin.take().unwrap();
    writeln!(stdin).unwrap();
    assert!(next().starts_with("COUNT "));
    while next() != "DONE" {}
    // EOF: the program prints OK and exits; gotrace, tracing only it, ends by itself.
    drop(stdin);
    assert_eq!(next(), "OK");
    // Reaped, as a shell would: gotrace tells an exited process from a zombie by /proc.
    assert!(program.0.wait().unwrap().success());
    let out = tracer.collect();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stream = check_stream(&out.stdout, &stderr);
    assert_eq!(identity_args(&stream.calls), (0..200).collect::<Vec<_>>());
    let exited = format!("process {pid} exited");
    let notes = stream.records_of("note");
    assert!(notes.iter().any(|n| n["message"] == exited), "{notes:?}");
    assert!(stderr.contains(&format!("gotrace: {exited}")), "{stderr}");
}

/// stdout not read while a busy program runs: the output backs up, the ring buffer fills, and
/// calls are lost — said while tracing in `lost` objects, counted in the summary by cause.
fn root_json_lines_report_losses() {
    let (busy, _) = busy_program();
    let mut tracer = start_gotrace(&["--json", "--pid", &busy.pid().to_string(), "main.Work"]);
    let (said, stderr_lines) = mpsc::channel();
    let stderr = BufReader::new(tracer.0.stderr.take().unwrap());
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines() {
            let line = line.expect("reading gotrace's stderr");
            all.push_str(&line);
            all.push('\n');
            let _ = said.send(line);
        }
        all
    });
    // Nobody reads stdout until gotrace says it lost calls.
    loop {
        let line = stderr_lines
            .recv_timeout(Duration::from_secs(60))
            .expect("no loss reported within 60 s");
        if line.contains(" calls lost so far: ") {
            break;
        }
    }
    let mut stdout = tracer.0.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut all = Vec::new();
        stdout
            .read_to_end(&mut all)
            .expect("reading gotrace's stdout");
        all
    });
    tracer.signal(libc::SIGINT);
    let status = tracer.0.wait().unwrap();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(status.success(), "{stderr}");
    let stream = check_stream(&stdout, &stderr);
    assert!(!stream.calls.is_empty());
    let lost = stream.records_of("lost");
    assert!(!lost.is_empty(), "no lost object; stderr: {stderr}");
    for report in &lost {
        let cause = report["cause"].as_str().expect("a cause");
        let so_far = report["calls"].as_u64().expect("calls");
        assert!(so_far > 0, "{report}");
        // The summary counts the same cause, by the same name, at least as many.
        let total = stream.summary[cause]
            .as_u64()
            .unwrap_or_else(|| panic!("{cause}"));
        assert!(total >= so_far, "{report} {}", stream.summary);
    }
    assert!(
        stream.summary["calls_lost"].as_u64().unwrap() > 0,
        "{}",
        stream.summary
    );
    drop(busy);
}

fn funcs_json_is_json_lines() {
    let binary = accounting();
    let out = run_gotrace(&["funcs", "--json", binary.to_str().unwrap(), "main.*"]);
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["type"], "binary", "{}", lines[0]);
    assert!(lines[0]["go_version"].is_string(), "{}", lines[0]);
    let functions = &lines[1..];
    assert!(functions.iter().all(|f| f["type"] == "function"));
    let identity = functions
        .iter()
        .find(|f| f["name"] == "main.Identity")
        .expect("main.Identity listed");
    assert_eq!(identity["signature"], "func(x int) (~r0 int)", "{identity}");
    // The reassembled listing the other tests read holds the same functions.
    let listing = funcs_listing(&out.stdout);
    assert_eq!(
        listing["functions"].as_array().unwrap().len(),
        functions.len()
    );
}

fn root_peek_json_is_json_lines() {
    let (busy, _) = busy_program();
    let pid = busy.pid();
    let out = run_gotrace(&["peek", "--json", "--pid", &pid.to_string(), "main.Work"]);
    assert!(out.status.success(), "{out:?}");
    let sites = peek_sites(&out.stdout);
    assert!(sites.len() >= 2, "an entry and a return: {sites:?}");
    for site in &sites {
        assert_eq!(site["function"], "main.Work", "{site}");
        assert_eq!(site["pid"], pid, "{site}");
        assert_eq!(site["probed"]["asm"], "int3", "{site}");
    }
    drop(busy);
}

gotrace_gobuild::test_main! {
    tests: [funcs_json_is_json_lines],
    root: [
        root_json_lines_when_the_traced_program_exits_normally,
        root_json_lines_with_count,
        root_json_lines_when_the_traced_process_exits,
        root_json_lines_report_losses,
        root_peek_json_is_json_lines,
    ],
}
