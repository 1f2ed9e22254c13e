//! Issue 13 item 4, `gotrace trace --stack`, end to end with real eBPF. `fixtures/go/stack`
//! calls `main.Leaf` from several call paths — directly, through a function the compiler
//! inlined, from another goroutine, 80 frames deep — and `main.Small`, which exists only
//! inlined; inside each call it records its own stack with `runtime.Callers` and
//! `runtime.CallersFrames`. gotrace's stack of each call must equal the program's, call for call
//! and frame for frame (function, file, line, inlined), from the caller up to the goroutine's
//! start — cut, and saying so, only for the call deeper than the frame limit:
//!
//! - plain and stripped builds on every toolchain (pclntab alone names the frames);
//! - a position-independent build (the load bias is subtracted), and `--no-return`;
//! - `--stack` with `--graph` is a usage error.

mod common;

use common::*;
use gotrace_gobuild::{Flavour, Toolchain};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const FIXTURE: &str = "fixtures/go/stack";
const FUNCTIONS: [&str; 2] = ["main.Leaf", "main.Small"];
const LIMIT: Duration = Duration::from_secs(60);
/// Calls the fixture makes: 2 × (direct, via helper, goroutine, Small) + 1 deep.
const CALLS: usize = 9;

/// (function, file, line, inlined)
type Frame = (String, String, u64, bool);

/// Built with inlining on: helper and Small must be inlined.
fn build(toolchain: &Toolchain, flavour: Flavour) -> PathBuf {
    build_go(FIXTURE, toolchain, flavour, "")
}

/// The program's `STACK func frames` lines, in call order.
fn own_stacks(stdout: &[u8]) -> Vec<(String, Vec<Frame>)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("STACK "))
        .map(|l| {
            let (func, frames) = l.split_once(' ').expect("STACK func frames");
            let frames = frames
                .split(';')
                .map(|f| {
                    let p: Vec<&str> = f.split('|').collect();
                    assert_eq!(p.len(), 4, "{f}");
                    (
                        p[0].to_owned(),
                        p[1].to_owned(),
                        p[2].parse().expect("a line number"),
                        p[3] == "1",
                    )
                })
                .collect();
            (func.to_owned(), frames)
        })
        .collect()
}

fn frame(v: &Value) -> Frame {
    (
        v["func"].as_str().expect("func").to_owned(),
        v["file"].as_str().expect("file").to_owned(),
        v["line"].as_u64().expect("line"),
        v["inlined"].as_bool().expect("inlined"),
    )
}

/// Runs the program while `gotrace trace --json --stack FLAGS` traces it: the program's stacks
/// and gotrace's calls, in the order they began.
fn trace(binary: &Path, flags: &[&str]) -> (Vec<(String, Vec<Frame>)>, Vec<Value>) {
    let mut args = vec!["--json", "--stack"];
    args.extend(flags);
    args.push(binary.to_str().expect("UTF-8 path"));
    args.extend(FUNCTIONS);
    let tracer = Tracer::start(&args, &[]);
    let output = output_within(Command::new(binary).stdin(Stdio::null()), LIMIT);
    assert!(output.status.success(), "{output:?}");
    let (stdout, stderr) = tracer.stop();
    let mut calls = json_calls(&stdout);
    calls.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
    let own = own_stacks(&output.stdout);
    assert_eq!(
        own.len(),
        CALLS,
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(calls.len(), CALLS, "{stderr}");
    (own, calls)
}

/// Compares call by call; returns the frames compared. Exactly one stack (the deep one) is cut.
fn compare(at: &str, own: &[(String, Vec<Frame>)], calls: &[Value]) -> usize {
    let mut compared = 0;
    let mut cut = 0;
    for (i, ((func, ours), call)) in own.iter().zip(calls).enumerate() {
        let at = format!("{at} call {i} ({func})");
        assert_eq!(call["func"], func.as_str(), "{at}: {call}");
        let stack = call["stack"].as_array().expect("a stack");
        let theirs: Vec<Frame> = stack.iter().map(frame).collect();
        // Frame 0: gotrace's is the entry, the program's a line inside the body.
        assert_eq!(theirs.first().map(|f| &f.0), Some(func), "{at}: {call}");
        let (theirs, ours) = (&theirs[1..], &ours[1..]);
        match call["stack_end"].as_str() {
            Some("complete") => assert_eq!(theirs, ours, "{at}"),
            Some("cut") => {
                cut += 1;
                assert!(theirs.len() < ours.len(), "{at}");
                assert_eq!(theirs, &ours[..theirs.len()], "{at}");
            }
            other => panic!("{at}: stack_end {other:?}: {call}"),
        }
        compared += theirs.len();
    }
    assert_eq!(cut, 1, "{at}: one call is deeper than the limit");
    compared
}

fn root_stacks_equal_the_programs_own_on_every_toolchain() {
    let _serial = serial();
    for toolchain in toolchains() {
        for flavour in [Flavour::Plain, Flavour::Stripped] {
            let at = format!("{} {}", toolchain.version, flavour.name());
            let (own, calls) = trace(&build(&toolchain, flavour), &[]);
            let compared = compare(&at, &own, &calls);
            assert!(compared >= 2 * CALLS, "{at}: {compared} frames compared");
            // Small and helper were inlined, and the stacks say so.
            let inlined = calls
                .iter()
                .flat_map(|c| c["stack"].as_array().into_iter().flatten())
                .filter(|f| f["inlined"] == true)
                .count();
            assert!(inlined >= 4, "{at}: {inlined} inlined frames");
        }
    }
}

fn root_position_independent_and_no_return() {
    let _serial = serial();
    let toolchain = newest_toolchain();
    for (flavour, flags) in [
        (Flavour::Pie, &[][..]),
        (Flavour::PieStripped, &[][..]),
        (Flavour::Plain, &["--no-return"][..]),
    ] {
        let at = format!("{} {} {flags:?}", toolchain.version, flavour.name());
        let (own, calls) = trace(&build(&toolchain, flavour), flags);
        assert!(compare(&at, &own, &calls) >= 2 * CALLS, "{at}");
    }
}

fn stack_with_graph_is_a_usage_error() {
    let out = run_gotrace(&["trace", "--stack", "--graph", "/bin/true", "main.F"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--graph"),
        "{out:?}"
    );
}

gotrace_gobuild::test_main! {
    tests: [stack_with_graph_is_a_usage_error],
    root: [
        root_stacks_equal_the_programs_own_on_every_toolchain,
        root_position_independent_and_no_return,
    ],
}
