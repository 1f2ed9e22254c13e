//! Issue 13 items 2 and 4, issue 14 item 4: `gotrace stats --by`, `--folded`, `--flamegraph`,
//! end to end with real eBPF. `fixtures/go/stats_by` records each call's grouping values itself
//! (per method string, per int code, per dynamic type of the error returned, per call path
//! through runtime.Callers) and prints them as JSON; what gotrace grouped in the kernel must
//! agree:
//!
//! - `--by method` (a string, one longer than the 16 bytes kept: marked cut), `--by code` (an
//!   int, negative ones too) and `--by err` (an error result's dynamic type, nil included):
//!   calls per group equal the program's exactly, every call grouped, on the oldest and newest
//!   toolchain; `--top 2` shows two groups and sums the rest as `other`;
//! - `--by stack`: calls per stack (`outer;…;inner`, an inlined frame of its own, a goroutine's
//!   stack) equal the program's per call path, plain and stripped builds; the `--folded` file's
//!   counts are the same, and the `--flamegraph` SVG's frames (their titles) hold the folded
//!   counts summed per frame;
//! - bad `--by` expressions are usage errors pointing at the token.

mod common;

use common::*;
use gotrace_gobuild::{Flavour, Toolchain};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FIXTURE: &str = "fixtures/go/stats_by";
const LIMIT: Duration = Duration::from_secs(120);

fn build(toolchain: &Toolchain, flavour: Flavour) -> PathBuf {
    build_go(FIXTURE, toolchain, flavour, "")
}

/// Runs the program while `gotrace stats FLAGS binary FUNCTION` counts: the program's record
/// and gotrace's JSON lines.
fn count(binary: &Path, function: &str, flags: &[&str]) -> (Value, Vec<Value>) {
    let mut args = vec!["--json"];
    args.extend(flags);
    args.extend([binary.to_str().expect("UTF-8 path"), function]);
    let (record, lines, stderr) = stats_while_running(binary, &args, LIMIT);
    let summary = lines
        .iter()
        .rfind(|l| l["type"] == "summary")
        .expect("summary");
    assert_eq!(summary["calls_lost"], 0, "{stderr}");
    (record, lines)
}

/// The final group rows: key → row.
fn final_groups(lines: &[Value]) -> BTreeMap<String, &Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "group" && l["final"] == true)
        .map(|l| (l["key"].as_str().expect("key").to_owned(), l))
        .collect()
}

/// The program's counts of one grouping, keyed as gotrace writes keys.
fn expected(record: &Value, by: &str) -> BTreeMap<String, u64> {
    let object = record[by].as_object().expect("a grouping");
    object
        .iter()
        .map(|(key, n)| {
            let key = match by {
                "method" if key.len() > 16 => {
                    format!("{:?}…(+{} bytes)", &key[..16], key.len() - 16)
                }
                "method" => format!("{key:?}"),
                "err" if key == "<nil>" => "nil".to_owned(),
                _ => key.clone(),
            };
            (key, n.as_u64().expect("a count"))
        })
        .collect()
}

fn calls(groups: &BTreeMap<String, &Value>) -> BTreeMap<String, u64> {
    groups
        .iter()
        .map(|(k, v)| (k.clone(), v["calls"].as_u64().expect("calls")))
        .collect()
}

fn root_groups_by_argument_and_error_type_equal_the_programs() {
    let _serial = serial();
    for toolchain in ends() {
        let binary = build(&toolchain, Flavour::Plain);
        for by in ["method", "code", "err"] {
            let at = format!("{} --by {by}", toolchain.version);
            let (record, lines) = count(&binary, "main.Handle", &["--by", by, "--top", "50"]);
            let groups = final_groups(&lines);
            assert_eq!(calls(&groups), expected(&record, by), "{at}: {lines:?}");
            for (key, row) in &groups {
                assert_eq!(row["not_grouped"], 0, "{at}");
                assert_eq!(row["returned"], row["calls"], "{at} {key}");
                assert_eq!(row["cut"], key.contains('…'), "{at} {key}");
                if by == "err" {
                    let errors = if key == "nil" {
                        0
                    } else {
                        row["calls"].as_u64().unwrap()
                    };
                    assert_eq!(row["errors"], errors, "{at} {key}");
                }
            }
        }
    }
}

fn root_top_sums_the_rest_as_other() {
    let _serial = serial();
    let binary = build(&newest_toolchain(), Flavour::Plain);
    let (record, lines) = count(&binary, "main.Handle", &["--by", "method", "--top", "2"]);
    let groups = final_groups(&lines);
    let mut want: Vec<u64> = expected(&record, "method").into_values().collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(groups.len(), 3, "{groups:?}");
    let other = groups["other"];
    assert_eq!(other["other_groups"], want.len() - 2, "{other}");
    assert_eq!(other["calls"], want[2..].iter().sum::<u64>(), "{other}");
    assert_eq!(other["groups"], want.len(), "{other}");
}

/// Each frame of a flame graph (a stack's prefix) and its count, from folded lines.
fn frames_of_folded(folded: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut prefixes: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, n) in folded {
        let frames: Vec<&str> = stack.split(';').collect();
        for depth in 1..=frames.len() {
            *prefixes.entry(frames[..depth].join(";")).or_default() += n;
        }
    }
    let mut frames: Vec<(String, u64)> = prefixes
        .into_iter()
        .map(|(p, n)| (p.rsplit(';').next().unwrap_or_default().to_owned(), n))
        .collect();
    frames.sort();
    frames
}

/// Each frame's name and count from the SVG's titles (`main.Leaf (6 calls, 40.00%)`).
fn frames_of_svg(svg: &str) -> Vec<(String, u64)> {
    // inferno writes the SVG 1.1 doctype.
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, options).expect("the SVG parses");
    let mut frames: Vec<(String, u64)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .filter(|t| !t.starts_with("all ("))
        .map(|t| {
            let (name, rest) = t.rsplit_once(" (").expect("name (count …)");
            let count = rest.split(' ').next().expect("a count");
            (
                name.to_owned(),
                count.replace(',', "").parse().expect("a number"),
            )
        })
        .collect();
    frames.sort();
    frames
}

fn root_groups_by_stack_equal_the_programs_call_paths() {
    let _serial = serial();
    for toolchain in ends() {
        for flavour in [Flavour::Plain, Flavour::Stripped] {
            let at = format!("{} {flavour:?}", toolchain.version);
            let binary = build(&toolchain, flavour);
            let folded_path = tempfile_path("folded");
            let svg_path = tempfile_path("flame.svg");
            let flags = [
                "--folded",
                folded_path.to_str().expect("UTF-8"),
                "--flamegraph",
                svg_path.to_str().expect("UTF-8"),
            ];
            let (record, lines) = count(&binary, "main.Leaf", &flags);
            let want = expected(&record, "stack");
            assert_eq!(calls(&final_groups(&lines)), want, "{at}: {lines:?}");
            let folded: BTreeMap<String, u64> = std::fs::read_to_string(&folded_path)
                .expect("the folded file")
                .lines()
                .map(|l| {
                    let (stack, n) = l.rsplit_once(' ').expect("stack count");
                    (stack.to_owned(), n.parse().expect("a count"))
                })
                .collect();
            assert_eq!(folded, want, "{at}");
            let svg = std::fs::read_to_string(&svg_path).expect("the SVG");
            assert_eq!(frames_of_svg(&svg), frames_of_folded(&folded), "{at}");
        }
    }
}

fn bad_by_expressions_are_usage_errors_that_point_at_the_token() {
    let binary = build(&newest_toolchain(), Flavour::Plain);
    let path = binary.to_str().expect("UTF-8 path");
    let cases: [(&[&str], &str); 5] = [
        (
            &["--by", "method.x.&"],
            "--by: unexpected '&'\n  method.x.&\n           ^",
        ),
        (
            &["--by", "meth"],
            "no argument or result named meth (it has: method, code, ~r0, ~r1)",
        ),
        (
            &["--by", "code > 3"],
            "--by: expected `stack`, or an argument",
        ),
        (&["--by", "method.Len"], "string has no field Len"),
        (
            &["--by", "method", "--folded", "/dev/null"],
            "they need --by stack, not --by method",
        ),
    ];
    for (flags, message) in cases {
        let args = [&["stats"], flags, &[path, "main.Handle"]].concat();
        assert_usage_error(&args, message);
    }
}

gotrace_gobuild::test_main! {
    tests: [bad_by_expressions_are_usage_errors_that_point_at_the_token],
    root: [
        root_groups_by_argument_and_error_type_equal_the_programs,
        root_top_sums_the_rest_as_other,
        root_groups_by_stack_equal_the_programs_call_paths,
    ],
}
