//! `gotrace funcs`, run as users run it, on fixtures/go/sig_kinds built by every installed
//! toolchain in every flavour.
//!
//! Golden files (tests/golden/funcs-sig_kinds-go1.N-FLAVOUR.txt; regenerate with `BLESS=1` and
//! review the diff) hold the `-v` listing of `main.*` with absolute addresses replaced by
//! `ADDR` and the Go patch version dropped: a toolchain point release moves code around and
//! would otherwise churn every line, while what a golden is for — names, signatures, site
//! offsets inside each function, register and stack locations — stays put. The absolute
//! addresses are checked where they have a witness: a stripped build lists the same functions
//! at the same addresses as the plain one, and the JSON sites are the entry plus their offsets.

mod common;

use common::{build_go, funcs_listing, toolchains, GOTRACE};
use gotrace_gobuild::Flavour;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURE: &str = "fixtures/go/sig_kinds";

fn sig_kinds(toolchain: &gotrace_gobuild::Toolchain, flavour: Flavour) -> PathBuf {
    build_go(FIXTURE, toolchain, flavour, "-l")
}

/// Runs `gotrace funcs ARGS BINARY 'main.*'`, which must succeed; returns (stdout, stderr).
fn funcs(args: &[&str], binary: &Path) -> (String, String) {
    let output = Command::new(GOTRACE)
        .arg("funcs")
        .args(args)
        .arg(binary)
        .arg("main.*")
        .output()
        .expect("running gotrace");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "gotrace funcs {args:?} {} failed:\n{stderr}",
        binary.display()
    );
    (stdout, stderr)
}

fn funcs_json(binary: &Path, pattern: Option<&str>) -> Value {
    let mut cmd = Command::new(GOTRACE);
    cmd.args(["funcs", "--json"]).arg(binary).args(pattern);
    let output = cmd.output().expect("running gotrace");
    assert!(
        output.status.success(),
        "gotrace funcs --json {}: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    funcs_listing(&output.stdout)
}

/// `ADDR` for every hex number that starts a word (absolute addresses); offsets (`+0x4`,
/// `stack+0x10`) follow a `+` and are kept.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        let word_start = at == 0 || rest[..at].ends_with(|c: char| c.is_whitespace());
        out.push_str(&rest[..at]);
        let digits = rest[at + 2..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len() - at - 2);
        let number = &rest[at..at + 2 + digits];
        out.push_str(if word_start { "ADDR" } else { number });
        rest = &rest[at + 2 + digits..];
    }
    out.push_str(rest);
    out
}

#[test]
fn funcs_verbose_output_matches_the_goldens() {
    let bless = std::env::var_os("BLESS").is_some();
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut stale = Vec::new();
    let ends = [
        toolchains().remove(0),
        toolchains().pop().expect("a toolchain"),
    ];
    for tc in toolchains() {
        // PIE and cgo rebuild the standard library (≈ 15 s per toolchain on a cold CI
        // machine): on the oldest and the newest release; probe_proof.rs covers cgo PIE on
        // Go 1.24–1.27.
        let flavours: &[Flavour] = match ends.iter().any(|e| e.version == tc.version) {
            true => &Flavour::ALL,
            false => &[Flavour::Plain, Flavour::Stripped],
        };
        for &flavour in flavours {
            let binary = sig_kinds(&tc, flavour);
            let (stdout, stderr) = funcs(&["-v"], &binary);
            // The header's `go1.23.5` becomes `go1.23`.
            let version = stderr.split_whitespace().nth(1).unwrap_or_default();
            assert!(
                version.starts_with(&format!("go{}", tc.version)),
                "{stderr}"
            );
            let got = normalise(&format!("{stderr}{stdout}")).replacen(
                version,
                &format!("go{}", tc.version),
                1,
            );
            let golden = golden_dir.join(format!(
                "funcs-sig_kinds-go{}-{}.txt",
                tc.version,
                flavour.name()
            ));
            if bless {
                std::fs::create_dir_all(&golden_dir).unwrap();
                std::fs::write(&golden, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if got != want {
                let first = got
                    .lines()
                    .zip(want.lines())
                    .position(|(g, w)| g != w)
                    .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
                stale.push(format!(
                    "{}: first difference at line {}:\n  got:  {:?}\n  want: {:?}",
                    golden.display(),
                    first + 1,
                    got.lines().nth(first),
                    want.lines().nth(first)
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "gotrace funcs output differs from the goldens (BLESS=1 regenerates; review the diff):\n{}",
        stale.join("\n")
    );
}

/// (name, entry, end) of every function, and the probe sites of `main.*`, as the JSON gives
/// them. Names are compared as the pclntab spells them: without the `.abi0` the symbol table
/// gives assembly functions, and (Go 1.19) generic instantiations shortened to `F[...]`.
fn table(listing: &Value, shortens_generics: bool) -> BTreeMap<String, (String, String, String)> {
    listing["functions"]
        .as_array()
        .expect("functions array")
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            let name = name.strip_suffix(".abi0").unwrap_or(name);
            let name = match (name.find('['), name.rfind(']')) {
                (Some(i), Some(j)) if shortens_generics && j > i => {
                    format!("{}[...]{}", &name[..i], &name[j + 1..])
                }
                _ => name.to_owned(),
            };
            let sites = match name.starts_with("main.") {
                true => f["sites"].to_string(),
                false => String::new(),
            };
            let key = format!("{} {name}", f["entry"].as_str().unwrap());
            (key, (f["end"].to_string(), name, sites))
        })
        .collect()
}

#[test]
fn stripped_build_lists_the_same_functions_at_the_same_addresses() {
    for tc in toolchains() {
        let plain = funcs_json(&sig_kinds(&tc, Flavour::Plain), None);
        let stripped = funcs_json(&sig_kinds(&tc, Flavour::Stripped), None);
        assert_eq!(plain["binary"]["function_source"], "symtab");
        assert_eq!(stripped["binary"]["function_source"], "pclntab");
        assert_eq!(stripped["binary"]["dwarf"], false);
        let shortens = tc.version == "1.19";
        let (plain, stripped) = (table(&plain, shortens), table(&stripped, shortens));
        let differ: Vec<_> = plain
            .iter()
            .filter(|(k, v)| stripped.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(stripped.keys().filter(|k| !plain.contains_key(*k)))
            .take(10)
            .collect();
        assert!(
            differ.is_empty(),
            "Go {}: {} vs {} functions; these differ: {differ:?}",
            tc.version,
            plain.len(),
            stripped.len()
        );
        assert!(
            plain.len() > 1000,
            "Go {}: {} functions",
            tc.version,
            plain.len()
        );
    }
}

fn hex(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{v} is not an address"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn json_carries_binary_info_signatures_locations_and_sites() {
    let tc = toolchains().pop().expect("a toolchain");
    let listing = funcs_json(&sig_kinds(&tc, Flavour::Pie), Some("main.*"));
    let info = &listing["binary"];
    assert!(
        info["go_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("go{}", tc.version))),
        "{info}"
    );
    assert_eq!(info["goarch"], "amd64");
    assert_eq!(info["pie"], true);
    assert_eq!(info["dwarf"], true);
    let functions = listing["functions"].as_array().unwrap();
    let function = |name: &str| {
        functions
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
    };

    // Every site is its function's entry plus its offset, inside the function.
    for f in functions {
        let (entry, end) = (hex(&f["entry"]), hex(&f["end"]));
        let sites = &f["sites"];
        let all = std::iter::once(&sites["entry"])
            .chain(sites["returns"].as_array().unwrap())
            .chain(sites["deferreturns"].as_array().unwrap());
        for site in all {
            let addr = hex(&site["addr"]);
            assert_eq!(
                addr,
                entry + site["offset"].as_u64().unwrap(),
                "{}",
                f["name"]
            );
            assert!(addr < end, "{}: site {addr:#x} past the end", f["name"]);
        }
    }

    let div_mod = function("main.DivMod");
    assert_eq!(div_mod["signature"], "func(a int, b int) (q int, r int)");
    let place = |v: &Value| v["location"].to_string();
    let reg = |r: &str| {
        format!(r#"{{"kind":"registers","pieces":[{{"reg":"{r}","size":8,"value_offset":0}}]}}"#)
    };
    let params = div_mod["params"].as_array().unwrap();
    let results = div_mod["results"].as_array().unwrap();
    assert_eq!(
        [
            place(&params[0]),
            place(&params[1]),
            place(&results[0]),
            place(&results[1])
        ],
        [reg("RAX"), reg("RBX"), reg("RAX"), reg("RBX")]
    );
    // The tenth integer does not fit in the nine integer registers.
    let many = function("main.ManyInts");
    assert_eq!(
        many["params"][9]["location"].to_string(),
        r#"{"kind":"stack","sp_offset":8}"#
    );
    // A function with a stack check is entered on its jbe.
    let interfaces = function("main.Interfaces");
    assert_eq!(interfaces["sites"]["entry"]["stack_check"], "jbe");
    assert!(interfaces["sites"]["entry"]["offset"].as_u64().unwrap() > 0);

    // The generic dictionary is listed with its location but left out of the signature.
    let map = function("main.Map[go.shape.int]");
    assert_eq!(map["params"][0]["name"], ".dict");
    assert_eq!(
        map["signature"],
        "func(xs []go.shape.int, f func(go.shape.int) go.shape.int) (~r0 []go.shape.int)"
    );
}

#[test]
fn stripped_binary_says_types_need_dwarf_and_still_lists_sites() {
    let tc = toolchains().pop().expect("a toolchain");
    let (stdout, stderr) = funcs(&["-v"], &sig_kinds(&tc, Flavour::Stripped));
    assert!(stderr.contains("no DWARF"), "{stderr}");
    assert!(stderr.contains("functions from .gopclntab"), "{stderr}");
    let div_mod: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains(" main.DivMod  (traceback metadata: "))
        .take_while(|l| l.starts_with("0x") || l.starts_with("    "))
        .collect();
    // The name and how many argument words the traceback metadata places, then its sites:
    // entry and at least one RET; no typed argument lines.
    assert!(div_mod.len() >= 3, "{stdout}");
    assert!(div_mod[1].trim_start().starts_with("entry"), "{div_mod:?}");
    assert!(div_mod.iter().any(|l| l.trim_start().starts_with("ret ")));
    assert!(!div_mod.iter().any(|l| l.contains("param")), "{div_mod:?}");
}

#[test]
fn unknown_function_is_an_error_with_suggestions() {
    let tc = toolchains().pop().expect("a toolchain");
    let output = Command::new(GOTRACE)
        .arg("funcs")
        .arg(sig_kinds(&tc, Flavour::Plain))
        .arg("main.DivMood")
        .output()
        .expect("running gotrace");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("main.DivMod"), "{stderr}");
}

/// The location `gotrace funcs --json` gives for a planned value.
fn listed_location(location: &gotrace_binary::abi::Location) -> Value {
    use gotrace_binary::abi::{AbiReg, Location};
    const INT: [&str; 9] = ["RAX", "RBX", "RCX", "RDI", "RSI", "R8", "R9", "R10", "R11"];
    match location {
        Location::Registers(pieces) => {
            let pieces: Vec<Value> = pieces
                .iter()
                .map(|p| {
                    let reg = match p.reg {
                        AbiReg::Int(i) => INT[usize::from(i)].to_owned(),
                        AbiReg::Float(i) => format!("X{i}"),
                    };
                    serde_json::json!({"reg": reg, "value_offset": p.value_offset, "size": p.size})
                })
                .collect();
            serde_json::json!({"kind": "registers", "pieces": pieces})
        }
        Location::Stack { sp_offset } => {
            serde_json::json!({"kind": "stack", "sp_offset": sp_offset})
        }
        Location::Empty => serde_json::json!({"kind": "empty"}),
    }
}

/// `funcs -v` shows where `trace` reads each argument and result: for every `main.*` function
/// of every fixture (built as the other tests build them) on every toolchain, each location
/// `funcs --json` lists equals the plan's, and a signature the plan does not trust (its DWARF
/// misses a blank parameter, Go 1.19 and 1.21) has no locations in the listing either.
#[test]
fn funcs_and_the_plan_agree_on_every_location() {
    let fixtures_dir = gotrace_gobuild::repo_root().join("fixtures/go");
    let mut fixtures: Vec<String> = std::fs::read_dir(&fixtures_dir)
        .expect("fixtures/go")
        .flatten()
        .filter(|e| e.path().join("main.go").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 15, "{fixtures:?}");
    let (mut compared, mut unlocated) = (0, 0);
    let all = toolchains();
    let newest = all.last().expect("a toolchain").version.clone();
    for tc in all {
        for fixture in &fixtures {
            // Out of line (`-l`) on every toolchain; as the compiler likes it (inlined copies,
            // generic shapes) on the newest only: building every fixture twice on all eight
            // would double this test's builds for little more than the newest one shows.
            let flags: &[&str] = if tc.version == newest {
                &["-l", ""]
            } else {
                &["-l"]
            };
            for &gcflags in flags {
                let path = build_go(
                    &format!("fixtures/go/{fixture}"),
                    &tc,
                    Flavour::Plain,
                    gcflags,
                );
                let what = format!("Go {} {fixture} gcflags={gcflags:?}", tc.version);
                let listing = funcs_json(&path, Some("main.*"));
                let binary = gotrace_binary::GoBinary::open(&path).expect("a Go binary");
                let plan = gotrace_plan::plan(
                    &binary,
                    &["main.*".to_owned()],
                    gotrace_plan::PlanOptions::default(),
                )
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                let listed: BTreeMap<&str, &Value> = listing["functions"]
                    .as_array()
                    .expect("functions")
                    .iter()
                    .map(|f| (f["name"].as_str().expect("name"), f))
                    .collect();
                let planned = plan.functions.iter().filter(|f| f.inlined_into.is_none());
                for function in planned {
                    let f = listed
                        .get(function.name.as_str())
                        .unwrap_or_else(|| panic!("{what}: {} planned, not listed", function.name));
                    let Some(signature) = &function.signature else {
                        // Not trusted: nothing located in the listing either, and it says why.
                        for v in f["params"].as_array().into_iter().flatten() {
                            assert_eq!(v["location"], Value::Null, "{what}: {}", function.name);
                        }
                        if f["params"].is_array() {
                            assert!(f["locations_error"].is_string(), "{what}: {f}");
                            unlocated += 1;
                        }
                        continue;
                    };
                    for (kind, values) in [
                        ("params", &signature.params),
                        ("results", &signature.results),
                    ] {
                        let shown = f[kind].as_array().unwrap_or_else(|| panic!("{what}: {f}"));
                        assert_eq!(
                            shown.len(),
                            values.len(),
                            "{what}: {} {kind}",
                            function.name
                        );
                        for (v, s) in values.iter().zip(shown) {
                            assert_eq!(s["name"], v.name.as_str(), "{what}: {}", function.name);
                            assert_eq!(
                                s["location"],
                                listed_location(&v.location),
                                "{what}: {} {kind} {}",
                                function.name,
                                v.name
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
    }
    // Both kinds were met: the blank-parameter signatures of Go 1.19 and 1.21 among them.
    assert!(compared > 1000, "{compared} values compared");
    assert!(unlocated >= 2, "{unlocated} signatures not trusted");
    eprintln!("{compared} locations agree; {unlocated} signatures located by neither");
}
