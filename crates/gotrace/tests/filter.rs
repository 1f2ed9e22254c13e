//! `--where` and `--min-duration`, end to end with real eBPF: `fixtures/go/filter` prints every
//! call it made with the values the filters look at; gotrace must report exactly the calls that
//! match, and — decided in the kernel — read exactly one ring-buffer record per reported call
//! (two when its arguments need memory read at the entry), plus one for the process's exit.
//! `--sample` and `--max-rate` report part of the calls and count the rest.

mod common;

use common::*;
use gotrace_gobuild::{Flavour, Toolchain};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn build(toolchain: &Toolchain) -> PathBuf {
    build_go("fixtures/go/filter", toolchain, Flavour::Plain, "-l")
}

/// One call as the program recorded it: `CALL main.Num n=3 flag=false`.
struct Recorded {
    func: String,
    fields: BTreeMap<String, String>,
}

impl Recorded {
    fn int(&self, name: &str) -> i64 {
        self.fields[name].parse().expect("an integer field")
    }
    fn text(&self, name: &str) -> &str {
        &self.fields[name]
    }
}

/// Runs the fixture while `gotrace COMMAND FLAGS BINARY FUNCTION` traces it.
fn traced_run(
    command: &str,
    binary: &Path,
    flags: &[&str],
    function: &str,
) -> (Vec<Recorded>, Vec<Value>) {
    let mut args: Vec<&str> = vec!["--json"];
    args.extend(flags);
    args.push(binary.to_str().expect("UTF-8 path"));
    args.push(function);
    let tracer = Tracer::start_command(command, &args, &[]);
    let output = output_within(
        Command::new(binary).stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    assert!(output.status.success());
    let (stdout, _) = tracer.stop();
    let recorded = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("CALL "))
        .map(|l| {
            let mut words = l.split(' ');
            let func = words.next().expect("a function").to_owned();
            let fields = words
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            Recorded { func, fields }
        })
        .collect();
    (recorded, json_lines(&stdout))
}

fn calls(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "call").collect()
}

fn summary(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("a summary line")
}

struct Case {
    function: &'static str,
    expr: &'static str,
    matches: fn(&Recorded) -> bool,
    /// What identifies a call: its record's field, and the traced argument holding it.
    key: (&'static str, &'static str),
}

const CASES: [Case; 7] = [
    Case {
        function: "main.Num",
        expr: "n >= 40 && !flag",
        matches: |r| r.int("n") >= 40 && r.text("flag") == "false",
        key: ("n", "n"),
    },
    Case {
        function: "main.Num",
        expr: "n < -10 || (n > 100 && flag == true)",
        matches: |r| r.int("n") < -10 || (r.int("n") > 100 && r.text("flag") == "true"),
        key: ("n", "n"),
    },
    Case {
        function: "main.Name",
        expr: "strings.HasPrefix(s, \"ab\") && p != nil",
        matches: |r| r.text("s").starts_with("ab") && r.int("id") >= 0,
        key: ("s", "s"),
    },
    Case {
        function: "main.Name",
        expr: "p.ID == 7 || s == \"xy3\"",
        matches: |r| r.int("id") == 7 || r.text("s") == "xy3",
        key: ("s", "s"),
    },
    Case {
        function: "main.Name",
        expr: "!(p == nil) && p.ID <= 2",
        matches: |r| (0..=2).contains(&r.int("id")),
        key: ("s", "s"),
    },
    Case {
        function: "main.Name",
        expr: "err != nil",
        matches: |r| r.text("err") == "true",
        key: ("s", "s"),
    },
    Case {
        function: "main.Name",
        expr: "~r0 == \"xy5!\"",
        matches: |r| r.text("s") == "xy5",
        key: ("s", "s"),
    },
];

/// The traced argument `name` of a call, as the program would print it.
fn shown(call: &Value, name: &str) -> String {
    match &call["args"][name] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn root_where_reports_exactly_the_matching_calls_filtered_in_the_kernel() {
    let _serial = serial();
    for toolchain in ends() {
        let binary = build(&toolchain);
        // Records per reported call without a filter: 1, or 2 with memory read at the entry.
        let mut per_call = BTreeMap::new();
        for function in ["main.Num", "main.Name"] {
            let (recorded, lines) = traced_run("trace", &binary, &[], function);
            let total = recorded.iter().filter(|r| r.func == function).count() as u64;
            let s = summary(&lines);
            assert_eq!(s["calls"], total, "{function}: {s}");
            let records = s["records"].as_u64().expect("records") - 1;
            assert_eq!(records % total, 0, "{function}: {s}");
            per_call.insert(function, records / total);
        }
        assert_eq!(per_call["main.Num"], 1, "registers only: no entry record");
        assert_eq!(per_call["main.Name"], 2, "strings are read at the entry");
        for case in &CASES {
            let (recorded, lines) =
                traced_run("trace", &binary, &["--where", case.expr], case.function);
            let all: Vec<&Recorded> = recorded
                .iter()
                .filter(|r| r.func == case.function)
                .collect();
            let mut want: Vec<String> = all
                .iter()
                .filter(|r| (case.matches)(r))
                .map(|r| r.text(case.key.0).to_owned())
                .collect();
            let mut got: Vec<String> = calls(&lines)
                .iter()
                .map(|c| {
                    assert_eq!(c["outcome"], "returned", "{c}");
                    shown(c, case.key.1)
                })
                .collect();
            want.sort();
            got.sort();
            let context = format!("Go {} {}: {}", toolchain.version, case.function, case.expr);
            assert!(
                !want.is_empty() && want.len() < all.len(),
                "{context}: the case selects {} of {}",
                want.len(),
                all.len()
            );
            assert_eq!(got, want, "{context}");
            let s = summary(&lines);
            let matched = want.len() as u64;
            let total = all.len() as u64;
            assert_eq!(s["filtered_out"], total - matched, "{context}: {s}");
            assert_eq!(s["filter_unread"], 0, "{context}: {s}");
            // Decided at the entry: nothing at all for a call left out. At the return (a
            // result is named): the entry's record was sent before it was known.
            let at_return = case.expr.contains("err") || case.expr.contains("~r0");
            let per = per_call[case.function];
            let expected = match at_return {
                false => matched * per + 1,
                true => total * (per - 1) + matched + 1,
            };
            assert_eq!(s["records"], expected, "{context}: {s}");
        }
    }
}

fn root_min_duration_reports_exactly_the_slow_calls() {
    let _serial = serial();
    let binary = build(&newest_toolchain());
    let (recorded, lines) = traced_run("trace", &binary, &["--min-duration", "20ms"], "main.Slow");
    let slow = recorded
        .iter()
        .filter(|r| r.func == "main.Slow" && r.int("ms") == 40)
        .count();
    let fast = recorded
        .iter()
        .filter(|r| r.func == "main.Slow" && r.int("ms") == 0)
        .count();
    assert_eq!((slow, fast), (6, 6));
    let reported = calls(&lines);
    assert_eq!(reported.len(), slow, "{lines:?}");
    for call in &reported {
        assert_eq!(call["args"]["ms"], 40, "{call}");
        assert!(call["duration_ns"].as_u64().expect("a duration") >= 20_000_000);
    }
    let s = summary(&lines);
    assert_eq!(s["filtered_out"], fast as u64, "{s}");
    assert_eq!(s["records"], slow as u64 + 1, "{s}");
}

fn root_stats_where_counts_the_matching_calls() {
    let _serial = serial();
    let binary = build(&newest_toolchain());
    for flags in [
        &["--where", "n > 100 || flag"][..],
        &["--no-return", "--where", "n > 100 || flag"],
    ] {
        let (recorded, lines) = traced_run("stats", &binary, flags, "main.Num");
        let matched = recorded
            .iter()
            .filter(|r| r.func == "main.Num" && (r.int("n") > 100 || r.text("flag") == "true"))
            .count() as u64;
        let last = lines
            .iter()
            .rfind(|l| l["type"] == "stats" && l["final"] == true)
            .expect("a final stats line");
        assert_eq!(last["calls"], matched, "{flags:?}: {last}");
        assert_eq!(summary(&lines)["filtered_out"], 200 - matched, "{flags:?}");
    }
}

/// `--sample 10`: about one call in ten reported (the count is kept per CPU), the rest counted;
/// `--max-rate 50`: at most 50 calls a second reported, the rest counted, and the function named.
fn root_sample_and_max_rate_report_part_of_the_calls_and_count_the_rest() {
    let _serial = serial();
    let binary = build(&newest_toolchain());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let (recorded, lines) = traced_run("trace", &binary, &["--sample", "10"], "main.Num");
    let total = recorded.iter().filter(|r| r.func == "main.Num").count() as u64;
    assert_eq!(total, 200);
    let reported = calls(&lines);
    let n = reported.len() as u64;
    assert!(n.abs_diff(total / 10) <= cpus, "{n} of {total} reported");
    let s = summary(&lines);
    assert_eq!(s["sampled_out"], total - n, "{s}");
    assert_eq!(s["records"], n + 1, "{s}");
    let called: Vec<String> = recorded
        .iter()
        .filter(|r| r.func == "main.Num")
        .map(|r| r.text("n").to_owned())
        .collect();
    for call in &reported {
        assert!(called.contains(&shown(call, "n")), "{call}");
    }

    let (_, lines) = traced_run("trace", &binary, &["--max-rate", "50"], "main.Num");
    let n = calls(&lines).len() as u64;
    // The 200 calls take well under a second: one window, or two if they straddle its end.
    assert!((50..=100).contains(&n), "{n} reported");
    let s = summary(&lines);
    assert_eq!(s["over_rate"], total - n, "{s}");
    assert_eq!(s["records"], n + 1, "{s}");
    let notes: Vec<&Value> = lines.iter().filter(|l| l["type"] == "note").collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("main.Num is called more than 50 times a second")),
        "{notes:?}"
    );
}

/// A glob: the functions lacking a name the expression uses are left out, and said to be.
fn root_a_glob_leaves_out_the_functions_lacking_a_name() {
    let _serial = serial();
    let binary = build(&newest_toolchain());
    let mut args = vec!["--json", "--where", "err != nil"];
    args.push(binary.to_str().expect("UTF-8 path"));
    args.push("main.*");
    let tracer = Tracer::start(&args, &[]);
    let output = output_within(
        Command::new(&binary).stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    assert!(output.status.success());
    let (stdout, stderr) = tracer.stop();
    let lines = json_lines(&stdout);
    let attached = lines
        .iter()
        .find(|l| l["type"] == "attached")
        .expect("an attached line");
    assert_eq!(
        attached["functions"],
        serde_json::json!(["main.Name"]),
        "{stderr}"
    );
    assert!(
        stderr.contains("of the functions matched are not traced: they lack a name it uses"),
        "{stderr}"
    );
    let errors: Vec<String> = calls(&lines).iter().map(|c| shown(c, "s")).collect();
    assert_eq!(errors, ["ab7", "xy7"], "{stderr}");
}

fn bad_filters_are_usage_errors_that_point_at_the_token() {
    let binary = build(&newest_toolchain());
    let path = binary.to_str().expect("UTF-8 path");
    let cases: [(&[&str], &str); 7] = [
        (
            &["--where", "n > 3 &&& flag"],
            "unexpected '&'\n  n > 3 &&& flag\n          ^",
        ),
        (
            &["--where", "count > 3"],
            "no argument or result named count (it has: n, flag, ~r0)",
        ),
        (
            &["--where", "n == \"x\""],
            "cannot compare n (int) with \"x\"",
        ),
        (&["--where", "n > 99999999999999999999"], "does not fit int"),
        (&["--where", "(n > 3"], "expected ), found the end"),
        (
            &["--no-return", "--where", "~r0 > 3"],
            "its results cannot be tested",
        ),
        (&["--min-duration", "5xs"], "is not a duration"),
    ];
    for (flags, message) in cases {
        let args = [&["trace"], flags, &[path, "main.Num"]].concat();
        assert_usage_error(&args, message);
    }
}

gotrace_gobuild::test_main! {
    tests: [
        bad_filters_are_usage_errors_that_point_at_the_token,
    ],
    root: [
        root_where_reports_exactly_the_matching_calls_filtered_in_the_kernel,
        root_min_duration_reports_exactly_the_slow_calls,
        root_stats_where_counts_the_matching_calls,
        root_sample_and_max_rate_report_part_of_the_calls_and_count_the_rest,
        root_a_glob_leaves_out_the_functions_lacking_a_name,
    ],
}
