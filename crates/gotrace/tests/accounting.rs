//! Issue 9, "every call is accounted for", end to end with real eBPF. `fixtures/go/accounting`
//! runs one scenario per `-mode`, checks itself and prints its own counts
//! (`COUNT <func> <outcome> <n>`); gotrace's report of each call must agree:
//!
//! - bodies that are a single RET (empty functions and methods) pair: N calls, N `returned`;
//! - recovered panics are reported `panicked` at once: in a process that exits right after, 40
//!   traced frames deep, and in `--pid` mode while the process lives on;
//! - calls in flight at `os.Exit` or at Ctrl-C are reported `in_flight` with their arguments,
//!   70,000 of them at once;
//! - `'runtime.*'` on a busy program that never panics reports no call `panicked`, nor does
//!   attaching to a process in the middle of its calls.

mod common;

use common::*;
use gotrace_gobuild::{Flavour, Toolchain};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FIXTURE: &str = "fixtures/go/accounting";
const LIMIT: Duration = Duration::from_secs(120);

fn build(toolchain: &Toolchain) -> PathBuf {
    build_go(FIXTURE, toolchain, Flavour::Plain, "-l")
}

/// `COUNT <func> <outcome> <n>` lines: what the program says it did.
fn program_counts(stdout: &str) -> BTreeMap<(String, String), u64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("COUNT "))
        .map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            assert_eq!(parts.len(), 3, "COUNT <func> <outcome> <n>: {l}");
            (
                (parts[0].to_owned(), parts[1].to_owned()),
                parts[2].parse().expect("a count"),
            )
        })
        .collect()
}

/// gotrace's calls counted by function and outcome.
fn traced_counts(calls: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for c in calls {
        let key = (
            c["func"].as_str().unwrap_or("?").to_owned(),
            c["outcome"].as_str().unwrap_or("?").to_owned(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// On every toolchain: traces `functions` while the program runs `args` to the end, checks its
/// exit code and that gotrace reports exactly the calls the program counted, by function and
/// outcome, with none lost; returns each toolchain's calls for further checks.
fn each_toolchain_reports_what_the_program_counted(
    functions: &[&str],
    args: &[&str],
    exit_code: i32,
) -> Vec<(String, Vec<Value>)> {
    let mut all = Vec::new();
    for toolchain in toolchains() {
        let binary = build(&toolchain);
        let mut trace_args = vec!["--json", binary.to_str().expect("UTF-8 path")];
        trace_args.extend_from_slice(functions);
        let tracer = Tracer::start(&trace_args, &[]);
        let output = output_within(Command::new(&binary).args(args).stdin(Stdio::null()), LIMIT);
        let (out, stderr) = tracer.stop();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let version = &toolchain.version;
        assert_eq!(output.status.code(), Some(exit_code), "{version}: {stdout}");
        let expected = program_counts(&stdout);
        assert!(!expected.is_empty(), "{version}: {stdout}");
        let calls = json_calls(&out);
        assert_eq!(traced_counts(&calls), expected, "{version}: {stderr}");
        assert_eq!(calls_lost(&stderr), 0, "{version}: {stderr}");
        all.push((toolchain.version, calls));
    }
    all
}

/// The summary's `N calls lost` (by cause after it).
fn calls_lost(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .rfind(|l| l.contains(" calls traced, "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    line.split(" calls traced, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no calls lost in {line}"))
}

fn root_single_ret_functions_and_methods_return() {
    let _serial = serial();
    let runs = each_toolchain_reports_what_the_program_counted(
        &["main.Empty", "main.T.Nop", "main.Identity"],
        &["-mode", "empty", "-n", "500"],
        0,
    );
    for (version, calls) in runs {
        // Identity returns its argument: the one instruction is its entry and its return.
        let mut seen: Vec<i64> = calls
            .iter()
            .filter(|c| c["func"] == "main.Identity")
            .map(|c| {
                assert_eq!(c["args"]["x"], c["results"]["~r0"], "{c}");
                c["args"]["x"].as_i64().expect("x")
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..500).collect::<Vec<i64>>(), "{version}");
    }
}

fn root_recovered_panics_in_a_short_lived_process_are_reported() {
    let _serial = serial();
    let runs = each_toolchain_reports_what_the_program_counted(
        &["main.Outer", "main.Middle", "main.Boom", "main.Deep"],
        &["-mode", "panics"],
        0,
    );
    for (version, calls) in runs {
        assert_eq!(calls.len(), 57, "{version}: 5×3 + 1 + 41 calls");
    }
}

/// `--pid`: the process lives on after its panics; they must be reported while it does, not
/// as calls in flight when gotrace stops.
fn root_recovered_panics_are_reported_in_pid_mode() {
    let _serial = serial();
    for toolchain in ends() {
        let binary = build(&toolchain);
        let mut program = Running(
            Command::new(&binary)
                .args(["-mode", "panics", "-wait"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("starting the program"),
        );
        let mut lines = BufReader::new(program.0.stdout.take().expect("stdout")).lines();
        let mut next = || lines.next().expect("a line").expect("reading the program");
        assert_eq!(next(), "READY");
        let pid = program.pid().to_string();
        let tracer = Tracer::start(
            &[
                "--json",
                "--pid",
                &pid,
                "main.Outer",
                "main.Middle",
                "main.Boom",
                "main.Deep",
            ],
            &[],
        );
        let mut stdin = program.0.stdin.take().expect("stdin");
        writeln!(stdin).expect("starting the program's work");
        let mut stdout = String::new();
        loop {
            let line = next();
            if line == "DONE" {
                break;
            }
            assert!(!line.starts_with("FAIL"), "{line}");
            stdout += &line;
            stdout.push('\n');
        }
        // The program is still running (it waits for stdin to close).
        let (out, stderr) = tracer.stop();
        drop(stdin);
        let calls = json_calls(&out);
        assert_eq!(
            traced_counts(&calls),
            program_counts(&stdout),
            "{}: {stderr}",
            toolchain.version
        );
        let status = program.0.wait().expect("waiting for the program");
        assert!(status.success(), "{status}");
    }
}

fn root_calls_in_flight_at_os_exit_are_reported_with_their_arguments() {
    let _serial = serial();
    // os.Exit(3) inside main.Hold, with 8 goroutines blocked inside main.Block.
    let runs = each_toolchain_reports_what_the_program_counted(
        &["main.Block", "main.Hold"],
        &["-mode", "exit", "-n", "8"],
        3,
    );
    for (version, calls) in runs {
        let mut blocked: Vec<i64> = calls
            .iter()
            .filter(|c| c["func"] == "main.Block")
            .map(|c| c["args"]["i"].as_i64().expect("i"))
            .collect();
        blocked.sort_unstable();
        assert_eq!(blocked, (0..8).collect::<Vec<i64>>(), "{version}");
        let hold = calls.iter().find(|c| c["func"] == "main.Hold");
        assert_eq!(
            hold.map(|h| &h["args"]["code"]),
            Some(&3.into()),
            "{version}"
        );
        for c in &calls {
            assert!(c["results"].is_null(), "{c}");
            assert!(c["duration_ns"].as_u64().is_some(), "time in flight: {c}");
        }
    }
}

/// Goroutines blocked inside a traced call until gotrace stops: `n` calls in flight at once.
fn hold_then_stop(binary: &Path, n: usize) -> (Vec<Value>, String) {
    let tracer = Tracer::start(
        &["--json", binary.to_str().expect("UTF-8 path"), "main.Block"],
        &[],
    );
    let n_arg = n.to_string();
    let mut program = Running(
        Command::new(binary)
            .args(["-mode", "hold", "-n", &n_arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the program"),
    );
    let mut lines = BufReader::new(program.0.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + LIMIT;
    loop {
        let line = lines.next().expect("a line").expect("reading the program");
        assert!(!line.starts_with("FAIL"), "{line}");
        if line == "HOLDING" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the program did not start its goroutines"
        );
    }
    let (out, stderr) = tracer.stop();
    drop(program.0.stdin.take());
    let status = program.0.wait().expect("waiting for the program");
    assert!(status.success(), "{status}");
    (json_calls(&out), stderr)
}

fn root_calls_in_flight_at_ctrl_c_are_reported() {
    let _serial = serial();
    for toolchain in ends() {
        let (calls, stderr) = hold_then_stop(&build(&toolchain), 50);
        let mut held: Vec<i64> = calls
            .iter()
            .map(|c| {
                assert_eq!(c["outcome"], "in_flight", "{c}");
                c["args"]["i"].as_i64().expect("i")
            })
            .collect();
        held.sort_unstable();
        assert_eq!(held, (0..50).collect::<Vec<i64>>(), "{stderr}");
    }
}

/// 70,000 calls in flight at once: each reported, or counted as lost under its cause.
fn root_70000_calls_in_flight_are_all_accounted_for() {
    let _serial = serial();
    const N: usize = 70_000;
    for toolchain in ends() {
        let (calls, stderr) = hold_then_stop(&build(&toolchain), N);
        let in_flight = calls.iter().filter(|c| c["outcome"] == "in_flight").count();
        assert_eq!(in_flight, calls.len(), "only calls in flight: {stderr}");
        let lost = calls_lost(&stderr) as usize;
        assert_eq!(in_flight + lost, N, "{}: {stderr}", toolchain.version);
        assert!(
            !stderr.contains("calls begun before attaching"),
            "nothing blamed on attaching: {stderr}"
        );
        // The table holds 262,144 calls: none of these should have been lost.
        assert_eq!(lost, 0, "{stderr}");
    }
}

/// A program that never panics, every runtime function it may be traced at: no call reported
/// as panicked (system-stack calls the runtime never returns from are `abandoned`).
fn root_runtime_glob_reports_no_false_panics() {
    let _serial = serial();
    for toolchain in ends() {
        let binary = build(&toolchain);
        let tracer = Tracer::start(&[binary.to_str().expect("UTF-8 path"), "runtime.*"], &[]);
        let output = output_within(
            Command::new(&binary)
                .args(["-mode", "busy", "-n", "3"])
                .stdin(Stdio::null()),
            LIMIT,
        );
        let (out, stderr) = tracer.stop();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}: {stdout}", toolchain.version);
        assert!(stdout.contains("OK"), "{stdout}");
        let text = String::from_utf8_lossy(&out);
        let lines = text.lines().count();
        assert!(
            lines > 1000,
            "{}: only {lines} calls: {stderr}",
            toolchain.version
        );
        let panicked: Vec<&str> = text.lines().filter(|l| l.ends_with(" panicked")).collect();
        assert!(
            panicked.is_empty(),
            "{}: {} false panics, e.g. {:?}",
            toolchain.version,
            panicked.len(),
            &panicked[..panicked.len().min(5)]
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !text.contains(" return not seen"),
            "{}: returns not seen: {stderr}",
            toolchain.version
        );
        assert!(
            text.lines()
                .all(|l| !l.contains(" goid=0 ") || !l.ends_with(" panicked")),
            "system-stack calls are never panicked"
        );
    }
}

/// Attaching to a process already calling the traced functions: sites are probed one after
/// another, so a call whose entry probe was in place before its return probe would never pair,
/// and the next call in the same frame would report it unwound. Nothing may be reported
/// `panicked` (the program never panics) and every call returns.
fn root_attaching_to_a_busy_process_reports_no_false_panics() {
    let binary = build_go(
        "fixtures/go/bench_loop",
        &newest_toolchain(),
        Flavour::Plain,
        "",
    );
    let program = Running(
        Command::new(&binary)
            .args(["-func", "ops", "-g", "2", "-for", "120s"])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting bench_loop"),
    );
    let pid = program.pid().to_string();
    const ATTACHES: usize = 12;
    const CALLS: usize = 400;
    for attempt in 0..ATTACHES {
        let out = output_within(
            Command::new(GOTRACE).args([
                "trace",
                "--json",
                "--count",
                &CALLS.to_string(),
                "--pid",
                &pid,
                "main.Op*",
            ]),
            LIMIT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "attach {attempt}: {stderr}");
        let calls = json_calls(&out.stdout);
        assert_eq!(calls.len(), CALLS, "attach {attempt}: {stderr}");
        let summary = json_lines(&out.stdout)
            .into_iter()
            .find(|l| l["type"] == "summary")
            .expect("a summary line");
        assert_eq!(summary["panicked"], 0, "attach {attempt}: {summary}");
        // Only a return gotrace said it could not read may be missing.
        let unreturned: Vec<&Value> = calls
            .iter()
            .filter(|c| c["outcome"] != "returned")
            .collect();
        let unread = summary["returns_unread"].as_u64().expect("returns_unread");
        assert!(
            unreturned.len() as u64 <= unread
                && unreturned.iter().all(|c| c["outcome"] == "return_not_seen"),
            "attach {attempt}: {} calls did not return, e.g. {}",
            unreturned.len(),
            unreturned[0]
        );
    }
}

/// The layout table used for binaries without DWARF agrees with each toolchain's DWARF.
fn resume_sp_table_matches_dwarf() {
    for toolchain in toolchains() {
        let binary = build(&toolchain);
        let go = gotrace_binary::GoBinary::open(&binary).expect("opening the fixture");
        let minor = go.build_info().and_then(|b| b.go_version_minor());
        let plan = gotrace_plan::plan(&go, &["main.Boom".to_owned()], Default::default())
            .expect("planning");
        let table = minor
            .and_then(|m| gotrace_plan::RuntimeLayout::for_go(go.arch(), m).ok())
            .expect("the table has a row for every installed toolchain");
        assert_eq!(
            table.resume_sp, plan.layout.resume_sp,
            "{}: the table disagrees with DWARF",
            toolchain.version
        );
        assert!(
            !plan
                .warnings
                .iter()
                .any(|w| w.starts_with("runtime layout")),
            "{}: {:?}",
            toolchain.version,
            plan.warnings
        );
    }
}

gotrace_gobuild::test_main! {
    tests: [
        resume_sp_table_matches_dwarf,
    ],
    root: [
        root_single_ret_functions_and_methods_return,
        root_recovered_panics_in_a_short_lived_process_are_reported,
        root_recovered_panics_are_reported_in_pid_mode,
        root_calls_in_flight_at_os_exit_are_reported_with_their_arguments,
        root_calls_in_flight_at_ctrl_c_are_reported,
        root_70000_calls_in_flight_are_all_accounted_for,
        root_runtime_glob_reports_no_false_panics,
        root_attaching_to_a_busy_process_reports_no_false_panics,
    ],
}
