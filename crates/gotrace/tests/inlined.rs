//! Inlined calls are seen (real eBPF, every toolchain): `fixtures/go/inlined`, built without
//! `-gcflags=-l`, counts its own calls per function and records each call's arguments.
//! `main.Add` is inlined at three sites and also called out of line through a func value;
//! `main.Scale` exists only inlined. gotrace's `returned` + `inlined` calls must equal the
//! program's count for each, and every argument DWARF locates must equal what was passed.

mod common;

use common::*;
use gotrace_gobuild::Flavour;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const FIXTURE: &str = "fixtures/go/inlined";
const FUNCTIONS: [(&str, [&str; 2]); 2] = [("main.Add", ["a", "b"]), ("main.Scale", ["x", "k"])];

/// The program's own record: calls per function, and each call's arguments in order.
struct Record {
    counts: Value,
    calls: Vec<(String, [i64; 2])>,
}

fn run_program(binary: &std::path::Path) -> Record {
    let out = output_within(&mut Command::new(binary), Duration::from_secs(60));
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("the program's JSON");
    let calls = v["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            let name = c[0].as_str().expect("name").to_owned();
            (name, [c[1].as_i64().unwrap(), c[2].as_i64().unwrap()])
        })
        .collect();
    Record {
        counts: v["counts"].clone(),
        calls,
    }
}

/// Traces the fixture built by `toolchain` as `flavour`; returns (compared arguments,
/// gotrace's stderr) after checking every count and every located argument.
fn check(
    toolchain: &gotrace_gobuild::Toolchain,
    flavour: Flavour,
    extra: &[&str],
) -> (u64, String) {
    let what = format!("Go {} {flavour:?} {extra:?}", toolchain.version);
    let binary = build_go(FIXTURE, toolchain, flavour, "");
    let path = binary.to_str().unwrap();
    let mut args = vec!["--json"];
    args.extend(extra);
    args.extend([path, "main.Add", "main.Scale"]);
    let tracer = Tracer::start(&args, &[]);
    let record = run_program(&binary);
    let (stdout, stderr) = tracer.stop();
    let traced = json_calls(&stdout);
    let mut compared = 0;
    for (name, params) in FUNCTIONS {
        let mine: Vec<&Value> = traced.iter().filter(|c| c["func"] == name).collect();
        let outcome = |o: &str| mine.iter().filter(|c| c["outcome"] == o).count() as i64;
        let want = record.counts[name].as_i64().expect("count");
        let out_of_line = if extra.contains(&"--no-return") {
            outcome("entered")
        } else {
            outcome("returned")
        };
        assert_eq!(
            out_of_line + outcome("inlined"),
            want,
            "{what} {name}: {stderr}"
        );
        assert_eq!(mine.len() as i64, want, "{what} {name}: other outcomes");
        assert!(outcome("inlined") > 0, "{what} {name}");
        // The program records its calls in the order it makes them, on one goroutine.
        let passed: Vec<&[i64; 2]> = record
            .calls
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(passed.len(), mine.len(), "{what} {name}");
        for (call, passed) in mine.iter().zip(passed) {
            // Without DWARF the signature is unknown: no arguments at all (an inlined copy),
            // or the untyped words of the out-of-line function, each right or not read.
            if call["args"].is_null() {
                assert_eq!(flavour, Flavour::Stripped, "{what}: {call}");
                continue;
            }
            if call["untyped"] == true {
                assert_eq!(flavour, Flavour::Stripped, "{what}: {call}");
                let words = call["args"].as_array().expect("untyped words");
                assert_eq!(words.len(), params.len(), "{what} {name}: {call}");
                for (word, &want) in words.iter().zip(passed) {
                    match word.get("value") {
                        Some(value) => {
                            assert_eq!(value.as_u64(), Some(want as u64), "{what}: {call}");
                            compared += 1;
                        }
                        None => assert!(word["not_read"].is_string(), "{what}: {call}"),
                    }
                }
                continue;
            }
            for (param, &want) in params.iter().zip(passed) {
                let got = &call["args"][param];
                if got.is_null() {
                    // Shown as unknown, with the reason.
                    assert!(
                        call["unavailable"][param].is_string(),
                        "{what} {name}: {call}"
                    );
                    continue;
                }
                assert_eq!(got.as_i64(), Some(want), "{what} {name}.{param}: {call}");
                compared += 1;
            }
            if call["outcome"] == "inlined" {
                assert!(call["duration_ns"].is_null(), "{what}: {call}");
                assert!(
                    call["results"].as_object().is_none_or(|r| r.is_empty()),
                    "{what}: {call}"
                );
            }
        }
    }
    (compared, stderr)
}

fn root_inlined_calls_are_counted_with_their_arguments_on_every_toolchain() {
    let _serial = serial();
    for toolchain in toolchains() {
        let (compared, stderr) = check(&toolchain, Flavour::Plain, &[]);
        // DWARF locates some arguments at these sites on every release (1.25+ in DWARF 5
        // location lists).
        assert!(
            compared >= 4,
            "Go {}: compared {compared}",
            toolchain.version
        );
        eprintln!("Go {}: {compared} arguments compared", toolchain.version);
        for line in [
            "main.Add: 1 copy, 3 inlined sites",
            "main.Scale: 0 copies, 2 inlined sites",
            "an inlined call has no return of its own",
        ] {
            assert!(stderr.contains(line), "Go {}: {stderr}", toolchain.version);
        }
        // Without DWARF or symbols the sites still come from .gopclntab: every call counted,
        // its arguments untyped words, right where shown (these leaf functions have no stack
        // check to prove their registers: all `?` today) or marked not read.
        let (compared, _) = check(&toolchain, Flavour::Stripped, &[]);
        eprintln!(
            "Go {} stripped: {compared} words compared",
            toolchain.version
        );
    }
}

fn root_inlined_calls_with_no_return() {
    let _serial = serial();
    let (compared, _) = check(&newest_toolchain(), Flavour::Plain, &["--no-return"]);
    assert!(compared >= 4, "compared {compared}");
}

fn a_function_that_exists_only_inlined_is_listed_with_its_sites() {
    let binary = build_go(FIXTURE, &newest_toolchain(), Flavour::Plain, "");
    let out = run_gotrace(&["funcs", "--json", binary.to_str().unwrap(), "main.Scale"]);
    assert!(out.status.success(), "{out:?}");
    let v = funcs_listing(&out.stdout);
    let functions = v["functions"].as_array().expect("functions");
    assert_eq!(functions.len(), 1, "{v}");
    let sites = functions[0]["inlined"].as_array().expect("inlined sites");
    assert_eq!(sites.len(), 2, "{v}");
    for site in sites {
        assert!(
            site["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with("main.")),
            "{site}"
        );
    }
}

gotrace_gobuild::test_main! {
    tests: [
        a_function_that_exists_only_inlined_is_listed_with_its_sites,
    ],
    root: [
        root_inlined_calls_are_counted_with_their_arguments_on_every_toolchain,
        root_inlined_calls_with_no_return,
    ],
}
