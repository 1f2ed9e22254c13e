//! Stripped binaries traced with separate debug information, end to end, on every installed
//! toolchain: the values fixture built with DWARF, split as build pipelines split it
//! (`objcopy --only-keep-debug`, then `--strip-all`), and the stripped binary traced with
//! `--debug-file`: every call gotrace reports equals, value by value, what it reports for the
//! unstripped build running the same calls; so does the `-ldflags='-s -w'` build traced with
//! the plain build as its debug file (another link of the same code, proven so). A debug file
//! of other code is refused with both build IDs named; `GOTRACE_DEBUG_PATH` finds the debug file by name and by GNU build-id.

mod common;

use common::*;
use gotrace_binary::GoBinary;
use gotrace_gobuild::testing::split_debug;
use gotrace_gobuild::{Flavour, Toolchain};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const TRACED: [&str; 2] = ["main.F*", "main.*.F*"];
/// One goroutine, one round: the calls and their ids are the same in every run.
const PROGRAM_ARGS: [&str; 4] = ["-workers", "1", "-rounds", "1"];

fn values(toolchain: &Toolchain, flavour: Flavour) -> PathBuf {
    build_go("fixtures/go/values", toolchain, flavour, "-l")
}

/// Traces one run of `binary` (attached before it starts); returns gotrace's records of that
/// process by (function, call id), and gotrace's stderr.
fn traced_run(
    binary: &Path,
    flags: &[&str],
    env: &[(&str, &str)],
) -> (BTreeMap<(String, i64), Value>, String) {
    let run = trace_one_run(binary, flags, &TRACED, &PROGRAM_ARGS, env);
    let mut calls = BTreeMap::new();
    for call in run.calls {
        let key = (
            call["func"].as_str().unwrap_or("?").to_owned(),
            call["args"]["id"].as_i64().unwrap_or(-1),
        );
        assert!(
            calls.insert(key.clone(), comparable(call)).is_none(),
            "{key:?} reported twice"
        );
    }
    (calls, run.stderr)
}

/// A record without what differs from run to run by nature: when (timestamps, durations),
/// where (process, thread, goroutine ids), and this process's heap addresses (chans, closures,
/// unsafe pointers, pointers beyond `--depth`: above 4 GiB, where Go's heap lives on amd64 —
/// at 0xc000000000, or from Go 1.26 at a randomized base — and static data of these non-PIE
/// builds does not) and
/// map entries (a map's hash seed is random per process, so which entries the probe reads first
/// differs; its length does not).
fn comparable(mut call: Value) -> Value {
    if let Some(obj) = call.as_object_mut() {
        for key in ["ts", "pid", "tid", "goid", "duration_ns", "return_tid"] {
            obj.remove(key);
        }
    }
    fn walk(v: &mut Value) {
        match v {
            Value::Object(obj) => {
                if obj.contains_key("address") {
                    obj.insert("address".into(), Value::Null);
                }
                if obj.contains_key("entries") && obj.contains_key("len") {
                    obj.insert("entries".into(), Value::Null);
                }
                obj.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::String(text) => {
                let heap = text
                    .strip_prefix("0x")
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    .is_some_and(|addr| addr >= 1 << 32);
                if heap {
                    *text = "heap address".into();
                }
            }
            _ => {}
        }
    }
    walk(&mut call);
    call
}

/// Every call of `expected` (the unstripped run) is in `got`, equal, and `got` has no other.
fn assert_same_calls(
    what: &str,
    expected: &BTreeMap<(String, i64), Value>,
    got: &BTreeMap<(String, i64), Value>,
) {
    // Every function of the fixture, several calls of most.
    assert!(expected.len() > 30, "{what}: only {} calls", expected.len());
    let named = expected
        .values()
        .filter(|c| c["args"]["id"].is_i64() && c["types"]["id"] == "int")
        .count();
    assert_eq!(named, expected.len(), "{what}: calls without a typed id");
    let mut problems = Vec::new();
    for (key, want) in expected {
        match got.get(key) {
            None => problems.push(format!("{key:?}: not reported for the stripped binary")),
            Some(have) if have != want => problems.push(format!(
                "{key:?}:\n  unstripped {want}\n  stripped   {have}"
            )),
            Some(_) => {}
        }
    }
    for key in got.keys().filter(|k| !expected.contains_key(*k)) {
        problems.push(format!("{key:?}: reported only for the stripped binary"));
    }
    assert!(
        problems.is_empty(),
        "{what}: {} of {} calls differ:\n{}",
        problems.len(),
        expected.len(),
        problems.join("\n")
    );
}

/// Two stripped builds of the values fixture traced with debug files: the plain build's split
/// (`objcopy`, same build IDs), and the `-ldflags='-s -w'` build with the plain build itself
/// (another link of the same code). Both report what the unstripped build reports.
fn stripped_binary_with_its_debug_file_traces_as_the_unstripped_build() {
    let _serial = serial();
    for toolchain in toolchains() {
        let what = format!("Go {}", toolchain.version);
        let plain = values(&toolchain, Flavour::Plain);
        let (stripped, debug) = split_debug(&plain);
        let (expected, plain_err) = traced_run(&plain, &[], &[]);
        assert!(
            plain_err.contains("signatures from DWARF"),
            "{what}: {plain_err}"
        );
        let (got, stripped_err) =
            traced_run(&stripped, &["--debug-file", debug.to_str().unwrap()], &[]);
        // Go 1.24+ writes a GNU build-id too, and it is checked first.
        let said = format!("signatures from debug file {} (same ", debug.display());
        assert!(stripped_err.contains(&said), "{what}: {stripped_err}");
        assert_same_calls(&what, &expected, &got);

        let what = format!("{what} -s -w");
        let linked_stripped = values(&toolchain, Flavour::Stripped);
        let (got, stripped_err) = traced_run(
            &linked_stripped,
            &["--debug-file", plain.to_str().unwrap()],
            &[],
        );
        let said = format!(
            "signatures from debug file {} (same compiled code",
            plain.display()
        );
        assert!(stripped_err.contains(&said), "{what}: {stripped_err}");
        assert_same_calls(&what, &expected, &got);
    }
}

/// `gotrace trace`'s or `funcs`' stderr and exit status for a debug file of another build.
fn refused(args: &[&str], mine: &str, theirs: &str) {
    let out = run_gotrace(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} accepted: {stderr}");
    assert!(
        stderr.contains("is not from the same build")
            && stderr.contains(mine)
            && stderr.contains(theirs),
        "{args:?}: both build IDs must be named: {stderr}"
    );
}

fn go_build_id(binary: &Path) -> String {
    GoBinary::open(binary)
        .unwrap()
        .build_ids()
        .go
        .expect("a Go build ID")
}

/// For the oldest and newest toolchain: the values fixture compiled with other flags (inlining
/// on) and linked with `-ldflags=-s -w`, and the debug file split from the usual build: other
/// code, other build IDs.
fn other_code() -> Vec<(PathBuf, PathBuf)> {
    ends()
        .iter()
        .map(|toolchain| {
            let (_, debug) = split_debug(&values(toolchain, Flavour::Plain));
            let inlined = build_go("fixtures/go/values", toolchain, Flavour::Stripped, "");
            (inlined, debug)
        })
        .collect()
}

/// The Go build ID of the build a debug file was split from (`BINARY.debug`).
fn debug_build_id(debug: &Path) -> String {
    go_build_id(&debug.with_extension(""))
}

fn a_debug_file_of_another_build_is_refused_naming_both_ids() {
    for (binary, debug) in other_code() {
        let (mine, theirs) = (go_build_id(&binary), debug_build_id(&debug));
        let args = [
            "funcs",
            "--debug-file",
            debug.to_str().unwrap(),
            binary.to_str().unwrap(),
        ];
        refused(&args, &mine, &theirs);
    }
    // The same source built by another toolchain.
    let all = toolchains();
    if let [first, .., last] = all.as_slice() {
        let (stripped, _) = split_debug(&values(first, Flavour::Plain));
        let (_, other_debug) = split_debug(&values(last, Flavour::Plain));
        let args = [
            "funcs",
            "--debug-file",
            other_debug.to_str().unwrap(),
            stripped.to_str().unwrap(),
        ];
        refused(
            &args,
            &go_build_id(&stripped),
            &debug_build_id(&other_debug),
        );
    }
}

fn root_trace_refuses_a_debug_file_of_another_build() {
    let _serial = serial();
    for (binary, debug) in other_code() {
        let (mine, theirs) = (go_build_id(&binary), debug_build_id(&debug));
        let args = [
            "trace",
            "--debug-file",
            debug.to_str().unwrap(),
            binary.to_str().unwrap(),
            "main.FAny",
        ];
        refused(&args, &mine, &theirs);
    }
}

/// A search directory holding the values fixture's debug file under the stripped binary's name
/// (`DIR/NAME.debug`): (directory, stripped binary, the debug file there).
fn search_dir_by_name(toolchain: &Toolchain, what: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = tempfile_path(what);
    std::fs::create_dir_all(&dir).unwrap();
    let (stripped, debug) = split_debug(&values(toolchain, Flavour::Plain));
    let by_name = dir.join(format!(
        "{}.debug",
        stripped.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::copy(&debug, &by_name).unwrap();
    (dir, stripped, by_name)
}

fn debug_files_are_found_through_gotrace_debug_path() {
    let toolchain = newest_toolchain();
    // By name: DIR/NAME.debug.
    let (dir, stripped, by_name) = search_dir_by_name(&toolchain, "debug-path");
    // By GNU build-id (the external linker of a cgo build writes one): DIR/.build-id/xx/yyyy.debug.
    let (cgo_stripped, cgo_debug) = split_debug(&values(&toolchain, Flavour::Cgo));
    let gnu = GoBinary::open(&cgo_stripped)
        .unwrap()
        .build_ids()
        .gnu
        .expect("the external linker writes a GNU build-id");
    let by_id = dir
        .join(".build-id")
        .join(&gnu[..2])
        .join(format!("{}.debug", &gnu[2..]));
    std::fs::create_dir_all(by_id.parent().unwrap()).unwrap();
    std::fs::copy(&cgo_debug, &by_id).unwrap();

    let search = format!("/nonexistent:{}", dir.display());
    for (binary, found) in [(&stripped, &by_name), (&cgo_stripped, &by_id)] {
        let out = Command::new(GOTRACE)
            .args(["funcs", binary.to_str().unwrap(), "main.FAny"])
            .env("GOTRACE_DEBUG_PATH", &search)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("signatures from debug file {}", found.display())),
            "{stderr}"
        );
        assert!(stdout.contains("main.FAny(id int, v "), "{stdout}");
    }

    std::fs::remove_dir_all(&dir).unwrap();
}

fn root_trace_finds_the_debug_file_through_gotrace_debug_path() {
    let _serial = serial();
    let toolchain = newest_toolchain();
    let (dir, stripped, by_name) = search_dir_by_name(&toolchain, "debug-path-trace");
    let search = dir.display().to_string();
    let (calls, stderr) = traced_run(&stripped, &[], &[("GOTRACE_DEBUG_PATH", &search)]);
    assert!(
        stderr.contains(&format!("signatures from debug file {}", by_name.display())),
        "{stderr}"
    );
    let (expected, _) = traced_run(&values(&toolchain, Flavour::Plain), &[], &[]);
    assert!(expected.len() > 30, "only {} calls", expected.len());
    assert_eq!(calls, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

gotrace_gobuild::test_main! {
    tests: [
        a_debug_file_of_another_build_is_refused_naming_both_ids,
        debug_files_are_found_through_gotrace_debug_path,
    ],
    root: [
        stripped_binary_with_its_debug_file_traces_as_the_unstripped_build,
        root_trace_refuses_a_debug_file_of_another_build,
        root_trace_finds_the_debug_file_through_gotrace_debug_path,
    ],
}
