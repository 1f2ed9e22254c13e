//! Issue 13 item 1, `gotrace stats`, end to end with real eBPF. `fixtures/go/stats` records its
//! own calls (counts, outcomes, durations, including groups sleeping 1, 10 and 100 ms) and prints
//! that record as JSON; what gotrace counted in the kernel must agree:
//!
//! - calls, returned, panicked and non-nil errors (an error in registers and one on the stack)
//!   equal the program's, exactly, with no call lost;
//! - each histogram holds every returned call, and its p50 and p99 are within one bucket of the
//!   program's own;
//! - `--no-return` counts every call;
//! - `--pid`: gotrace ends by itself when the process exits, with its counts;
//! - bad intervals and missing functions are usage errors.

mod common;

use common::*;
use gotrace_gobuild::{Flavour, Toolchain};
use gotrace_plan::stats::bucket;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const FIXTURE: &str = "fixtures/go/stats";
const FUNCTIONS: [&str; 6] = [
    "main.Fast",
    "main.Sleep1",
    "main.Sleep10",
    "main.Sleep100",
    "main.Mixed",
    "main.Wide",
];
const LIMIT: Duration = Duration::from_secs(120);

/// One traced program at a time on the 2-CPU CI machine.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn build(toolchain: &Toolchain) -> PathBuf {
    build_go(FIXTURE, toolchain, Flavour::Plain, "-l")
}

/// The lines of `kind`, by function (the final ones for `stats`).
fn by_func<'a>(lines: &'a [Value], kind: &str) -> Vec<(&'a str, &'a Value)> {
    lines
        .iter()
        .filter(|l| l["type"] == kind && (kind != "stats" || l["final"] == true))
        .map(|l| (l["func"].as_str().expect("func"), l))
        .collect()
}

fn get<'a>(rows: &[(&str, &'a Value)], func: &str) -> &'a Value {
    rows.iter()
        .find(|(f, _)| *f == func)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no line for {func}"))
}

/// The summary's calls lost.
fn lost(lines: &[Value]) -> u64 {
    let summary = lines
        .iter()
        .rfind(|l| l["type"] == "summary")
        .expect("a summary line");
    summary["calls_lost"].as_u64().expect("calls_lost")
}

/// The q-quantile of `durations` by the rule gotrace uses: the ⌈q·n⌉-th smallest.
fn quantile(durations: &[u64], q: f64) -> u64 {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs the program to its end while `gotrace stats FLAGS binary FUNCTIONS` counts; returns
/// the program's record and gotrace's JSON lines.
fn count(binary: &Path, flags: &[&str]) -> (Value, Vec<Value>) {
    let mut args = flags.to_vec();
    args.push(binary.to_str().expect("UTF-8 path"));
    args.extend(FUNCTIONS);
    let (record, lines, stderr) = stats_while_running(binary, &args, LIMIT);
    assert_eq!(lost(&lines), 0, "{stderr}");
    (record, lines)
}

fn root_stats_equal_the_programs_own_record() {
    let _serial = serial();
    let mut checked = Vec::new();
    for toolchain in toolchains() {
        let version = &toolchain.version;
        let (record, lines) = count(&build(&toolchain), &["--json", "--interval", "0.2"]);
        let rows = by_func(&lines, "stats");
        let histograms = by_func(&lines, "histogram");
        assert_eq!(rows.len(), FUNCTIONS.len(), "{version}: {lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l["type"] == "stats" && l["final"] == false),
            "{version}: no interval rows"
        );
        for func in FUNCTIONS {
            let own = &record[func];
            let row = get(&rows, func);
            let at = format!("{version} {func}: {row}");
            assert!(own["calls"].as_u64().expect("calls") > 0, "{at}");
            for field in ["calls", "returned", "panicked"] {
                assert_eq!(row[field], own[field], "{at}: {field}");
            }
            match func {
                // Mixed's error is in registers, Wide's on the stack.
                "main.Mixed" | "main.Wide" => {
                    assert!(own["errors"].as_u64() > Some(0), "{at}");
                    assert_eq!(row["errors"], own["errors"], "{at}")
                }
                _ => assert!(row.get("errors").is_none(), "{at}: no error result"),
            }
            let histogram = get(&histograms, func);
            let buckets = histogram["buckets"].as_array().expect("buckets");
            let total: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
            assert_eq!(histogram["count"], own["returned"], "{at}");
            assert_eq!(Some(total), own["returned"].as_u64(), "{at}");
            let durations: Vec<u64> = own["durations_ns"]
                .as_array()
                .expect("durations")
                .iter()
                .map(|d| d.as_u64().expect("a duration"))
                .collect();
            if durations.is_empty() {
                continue;
            }
            // The sleeping groups: all calls return, each timed by the program.
            assert_eq!(row["calls"], own["returned"], "{at}");
            for (q, key) in [(0.5, "p50_ns"), (0.99, "p99_ns")] {
                let theirs = bucket(row[key].as_u64().expect("a percentile"));
                let ours = bucket(quantile(&durations, q));
                assert!(
                    theirs.abs_diff(ours) <= 1,
                    "{at}: {key} in bucket {theirs}, the program's in {ours}"
                );
            }
            checked.push((version.clone(), func));
        }
    }
    assert_eq!(checked.len(), 3 * toolchains().len());
}

fn root_no_return_counts_every_call() {
    let _serial = serial();
    for toolchain in ends() {
        let version = &toolchain.version;
        let (record, lines) = count(&build(&toolchain), &["--json", "--no-return"]);
        let rows = by_func(&lines, "stats");
        assert_eq!(rows.len(), FUNCTIONS.len(), "{version}");
        for func in FUNCTIONS {
            let row = get(&rows, func);
            assert_eq!(
                row["calls"], record[func]["calls"],
                "{version} {func}: {row}"
            );
            assert_eq!(row["entered"], row["calls"], "{version} {func}: {row}");
            assert_eq!(row["returned"], 0, "{version} {func}: {row}");
        }
        assert!(by_func(&lines, "histogram").is_empty(), "{version}");
    }
}

/// `--pid`: when the process exits, gotrace stops by itself, with the final counts.
fn root_pid_mode_ends_with_the_process() {
    let _serial = serial();
    let toolchain = newest_toolchain();
    let binary = build(&toolchain);
    let mut program = Running(
        Command::new(&binary)
            .arg("-wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the program"),
    );
    let mut lines = BufReader::new(program.0.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("a line").expect("READY"), "READY");
    let pid = program.pid().to_string();
    let functions = ["main.Sleep10", "main.Mixed"];
    let mut args = vec!["--json", "--pid", &pid];
    args.extend(functions);
    let stats = Tracer::start_command("stats", &args, &[]);
    writeln!(program.0.stdin.take().expect("stdin")).expect("starting the work");
    let record: Value = serde_json::from_str(&lines.next().expect("a line").expect("record"))
        .expect("the program's record");
    // Not interrupted: it must end by itself.
    let (stdout, stderr) = stats.finish(false);
    let lines = json_lines(&stdout);
    assert_eq!(lost(&lines), 0, "{stderr}");
    let rows = by_func(&lines, "stats");
    for func in functions {
        let row = get(&rows, func);
        for field in ["calls", "returned", "panicked"] {
            assert_eq!(row[field], record[func][field], "{func} {field}: {row}");
        }
    }
    assert_eq!(
        get(&rows, "main.Mixed")["errors"],
        record["main.Mixed"]["errors"]
    );
    assert_eq!(get(&rows, "main.Sleep10")["calls"], 20);
}

fn bad_arguments_are_usage_errors() {
    for args in [
        &["stats", "/bin/true"][..],
        &["stats", "--interval", "0", "/bin/true", "main.F"],
        &["stats", "--duration", "x", "/bin/true", "main.F"],
    ] {
        let out = run_gotrace(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

gotrace_gobuild::test_main! {
    tests: [bad_arguments_are_usage_errors],
    root: [
        root_stats_equal_the_programs_own_record,
        root_no_return_counts_every_call,
        root_pid_mode_ends_with_the_process,
    ],
}
