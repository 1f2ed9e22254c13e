//! Go values decoded like a debugger, end to end: `fixtures/go/values` calls functions taking and
//! returning every kind of Go value from many goroutines and prints, for every call, its own
//! exact record of what it passed and got back (in gotrace's JSON conventions). gotrace traces
//! the same binary; every call must appear exactly once in its output with every value equal,
//! within the documented limits:
//!
//! - a float or complex may be `null` (with a reason in `unavailable`) only where it travelled in
//!   X0–X14, which uprobes cannot read; elsewhere it must be the exact number;
//! - a string longer than `--string-max` must be its prefix of exactly that many bytes, and a
//!   slice longer than `--elems` its first elements, with the argument named in `truncated`;
//! - a map shows its exact length and some of its real entries;
//! - `{"address": …}` replaces a value only beyond `--depth`: required beyond that many Go
//!   pointers, allowed beyond that many indirections of any kind (pointers, interface boxes,
//!   maps), as gotrace's help counts them;
//! - `{"address": …, "error": "unreadable"}` only for the bad pointers the program passed.
//!
//! The program's record also says where pointers were followed (`derefs`) and which floats were
//! in registers (`reg_floats`), so these rules are checked position by position.

mod common;

use common::*;
use gotrace_gobuild::{Flavour, Toolchain};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};

/// Every traced function is named F*; methods too (`main.Point.FScale`, `main.(*Counter).FAdd`).
const TRACED: [&str; 2] = ["main.F*", "main.*.F*"];

#[derive(Clone, Copy, Debug)]
struct Limits {
    string_max: usize,
    elems: usize,
    depth: u64,
    /// Maps show exactly min(len, --elems) entries, or fewer with a reason (Swiss tables, Go
    /// 1.24+); Go ≤ 1.23 maps show what their first two buckets hold.
    exact_maps: bool,
}

/// gotrace's defaults, which the main comparison runs with (no limit flags given).
const DEFAULTS: Limits = Limits {
    string_max: 256,
    elems: 16,
    depth: 3,
    exact_maps: false,
};

/// Go 1.24+ (Swiss-table maps).
fn swiss_maps(toolchain: &Toolchain) -> bool {
    toolchain
        .version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|minor| minor >= 24)
}

/// A type as reflect spells it: the package name without its import path (`*io/fs.PathError`,
/// as DWARF names it, is `*fs.PathError`).
fn reflect_spelling(name: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    for c in name.chars() {
        if c == '/' {
            word.clear();
        } else if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' {
            word.push(c);
        } else {
            out += &word;
            word.clear();
            out.push(c);
        }
    }
    out + &word
}

fn values_program(toolchain: &Toolchain) -> std::path::PathBuf {
    build_go("fixtures/go/values", toolchain, Flavour::Plain, "-l")
}

/// One traced run: what the program recorded and what gotrace printed.
struct Session {
    program: Vec<Value>,
    traced: Vec<Value>,
    pid: u32,
    stderr: String,
}

/// Starts gotrace on the binary (attached before the program starts, so no call is missed), runs
/// the program to completion, then stops gotrace.
fn run_traced(
    binary: &Path,
    gotrace_args: &[&str],
    functions: &[&str],
    program_args: &[&str],
) -> Session {
    let run = trace_one_run(binary, gotrace_args, functions, program_args, &[]);
    Session {
        program: json_calls(&run.program_stdout),
        traced: run.calls,
        pid: run.pid,
        stderr: run.stderr,
    }
}

/// Compares every program record with gotrace's record of the same call; returns the problems,
/// one line each.
fn compare_session(session: &Session, limits: Limits) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_call: HashMap<(String, i64), Vec<&Value>> = HashMap::new();
    // Binary mode traces every process of the binary: another test may run the same build.
    for got in session.traced.iter().filter(|g| g["pid"] == session.pid) {
        let func = got["func"].as_str().unwrap_or("?").to_owned();
        match got["args"]["id"].as_i64() {
            Some(id) => by_call.entry((func, id)).or_default().push(got),
            None => problems.push(format!(
                "{func}: gotrace record without a numeric args.id: {}",
                short(got)
            )),
        }
    }
    for exp in &session.program {
        let func = exp["func"]
            .as_str()
            .expect("program record has func")
            .to_owned();
        let id = exp["id"].as_i64().expect("program record has id");
        match by_call.remove(&(func.clone(), id)).as_deref() {
            None | Some([]) => {
                problems.push(format!("{func} id={id}: no gotrace record for this call"))
            }
            Some([got]) => {
                if got["pid"] != session.pid {
                    problems.push(format!(
                        "{func} id={id}: pid {} instead of {}",
                        got["pid"], session.pid
                    ));
                }
                problems.extend(
                    compare_call(exp, got, limits)
                        .into_iter()
                        .map(|p| format!("{func} id={id} {p}")),
                );
            }
            Some(many) => problems.push(format!(
                "{func} id={id}: {} gotrace records for one call",
                many.len()
            )),
        }
    }
    let mut extra: Vec<_> = by_call.into_iter().collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    for ((func, id), records) in extra {
        problems.push(format!(
            "{func} id={id}: {} gotrace record(s) for a call the program never made",
            records.len()
        ));
    }
    problems
}

/// Compares one call: names, types, every value, and the `truncated` and `unavailable` notes.
fn compare_call(exp: &Value, got: &Value, limits: Limits) -> Vec<String> {
    let mut cmp = Comparison {
        limits,
        derefs: parse_derefs(&exp["derefs"]),
        reg_floats: exp["reg_floats"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        problems: Vec::new(),
        cut: BTreeSet::new(),
        partial: BTreeSet::new(),
        unavailable_floats: BTreeSet::new(),
        not_read: BTreeSet::new(),
        top: String::new(),
        byte_slice: false,
    };
    if got["outcome"] != "returned" {
        cmp.problems.push(format!(
            "outcome {} instead of \"returned\"",
            got["outcome"]
        ));
    }
    for section in ["args", "results"] {
        let (Some(exp_values), Some(got_values)) =
            (exp[section].as_object(), got[section].as_object())
        else {
            cmp.problems.push(format!(
                "{section}: expected an object, got {}",
                short(&got[section])
            ));
            continue;
        };
        for name in got_values.keys().filter(|n| !exp_values.contains_key(*n)) {
            cmp.problems
                .push(format!("{section}/{name}: not a parameter of the function"));
        }
        for (name, exp_value) in exp_values {
            let Some(got_value) = got_values.get(name) else {
                cmp.problems.push(format!(
                    "{section}/{name}: missing (expected {})",
                    short(exp_value)
                ));
                continue;
            };
            let exp_type = exp["types"][name].as_str().unwrap_or("?");
            if got["types"][name] != exp_type {
                cmp.problems.push(format!(
                    "{section}/{name}: type {} instead of {exp_type:?}",
                    got["types"][name]
                ));
            }
            cmp.top = name.clone();
            cmp.byte_slice = exp_type == "[]uint8";
            cmp.value(&format!("{section}/{name}"), exp_value, got_value);
        }
    }

    let truncated: BTreeSet<String> = got["truncated"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for name in cmp.cut.difference(&truncated) {
        cmp.problems.push(format!(
            "{name}: cut to a limit but not listed in \"truncated\" ({})",
            got["truncated"]
        ));
    }
    for name in truncated
        .iter()
        .filter(|n| !cmp.cut.contains(*n) && !cmp.partial.contains(*n))
    {
        cmp.problems.push(format!(
            "{name}: listed in \"truncated\" but nothing in it was cut"
        ));
    }
    let unavailable = got["unavailable"].as_object().cloned().unwrap_or_default();
    for name in &cmp.unavailable_floats {
        let reason = unavailable.get(name).and_then(Value::as_str);
        if reason.is_none_or(str::is_empty) {
            cmp.problems.push(format!(
                "{name}: a float shown as null without a reason in \"unavailable\""
            ));
        }
    }
    for name in &cmp.not_read {
        let reason = unavailable.get(name).and_then(Value::as_str);
        if !reason.is_some_and(|r| r.starts_with("not read")) {
            cmp.problems.push(format!(
                "{name}: a part not read (beyond --depth, unreadable) without \"not read: …\" in \"unavailable\" ({:?})",
                reason
            ));
        }
    }
    for name in unavailable
        .keys()
        .filter(|n| !cmp.unavailable_floats.contains(*n) && !cmp.not_read.contains(*n))
    {
        cmp.problems.push(format!(
            "{name}: in \"unavailable\" ({}) but nothing in it was left unread",
            unavailable[name]
        ));
    }
    cmp.problems
}

/// `derefs`: path → every pointer followed to produce the value there, as
/// (pointer levels, memory indirections counting interfaces and maps too, address).
type Derefs = HashMap<String, Vec<(u64, u64, u64)>>;

fn parse_derefs(v: &Value) -> Derefs {
    let mut derefs = Derefs::new();
    for (path, list) in v.as_object().into_iter().flatten() {
        for d in list.as_array().into_iter().flatten() {
            let (Some(strict), Some(loose), Some(addr)) = (
                d[0].as_u64(),
                d[1].as_u64(),
                d[2].as_str().and_then(parse_addr),
            ) else {
                panic!("bad derefs entry in the program's record: {d}");
            };
            derefs
                .entry(path.clone())
                .or_default()
                .push((strict, loose, addr));
        }
    }
    derefs
}

struct Comparison {
    limits: Limits,
    derefs: Derefs,
    reg_floats: HashSet<String>,
    problems: Vec<String>,
    /// Arguments/results in which a string or slice was cut: must be listed in `truncated`.
    cut: BTreeSet<String>,
    /// Arguments/results shown partly for other reasons (map entries, depth): may be listed.
    partial: BTreeSet<String>,
    /// Arguments/results with a register float shown as null: must have a reason.
    unavailable_floats: BTreeSet<String>,
    /// Arguments/results with a part rightly not read (beyond --depth, a bad pointer): must
    /// say so in `unavailable`.
    not_read: BTreeSet<String>,
    /// The argument or result being compared.
    top: String,
    /// It is a []byte, which `--string-max` may limit instead of `--elems`.
    byte_slice: bool,
}

impl Comparison {
    fn problem(&mut self, path: &str, exp: &Value, got: &Value, why: &str) {
        self.problems.push(format!(
            "{path}: expected {}, got {} ({why})",
            short(exp),
            short(got)
        ));
    }

    fn value(&mut self, path: &str, exp: &Value, got: &Value) {
        if let Some(bad) = bad_pointer(exp) {
            let ok = got["error"] == "unreadable"
                && got["address"].as_str().and_then(parse_addr) == Some(bad);
            if !ok {
                self.problem(
                    path,
                    exp,
                    got,
                    "a bad pointer must show its address and \"unreadable\"",
                );
            }
            self.not_read.insert(self.top.clone());
            return;
        }
        let derefs = self.derefs.get(path).cloned().unwrap_or_default();
        if !exp.is_null() && got.get("address").is_some() {
            let addr = got["address"].as_str().and_then(parse_addr);
            let depth = self.limits.depth;
            if got.get("error").is_some() {
                self.problem(path, exp, got, "readable memory shown as an error");
            } else if derefs
                .iter()
                .any(|&(_, loose, a)| loose > depth && Some(a) == addr)
            {
                if got["not_read"] != "beyond --depth" {
                    self.problem(path, exp, got, "cut at --depth without \"not_read\"");
                }
                self.partial.insert(self.top.clone());
                self.not_read.insert(self.top.clone());
            } else if derefs.iter().any(|&(_, loose, _)| loose > depth) {
                self.problem(
                    path,
                    exp,
                    got,
                    "cut at --depth, but not at the address of the pointer followed there",
                );
            } else {
                self.problem(
                    path,
                    exp,
                    got,
                    &format!("cut although within --depth {depth}"),
                );
            }
            return;
        }
        if let Some(why) = got.get("not_read") {
            // Only --depth may leave a value unread here (interface boxes and maps count as
            // indirections too).
            if why == "beyond --depth"
                && derefs
                    .iter()
                    .any(|&(_, loose, _)| loose > self.limits.depth)
            {
                self.partial.insert(self.top.clone());
                self.not_read.insert(self.top.clone());
            } else {
                self.problem(path, exp, got, "not read");
            }
            return;
        }
        if !exp.is_null()
            && derefs
                .iter()
                .any(|&(strict, _, _)| strict > self.limits.depth)
        {
            self.problem(
                path,
                exp,
                got,
                &format!(
                    "beyond --depth {}: must be {{\"address\": …}}",
                    self.limits.depth
                ),
            );
            return;
        }
        match exp {
            Value::Null | Value::Bool(_) => {
                if got != exp {
                    self.problem(path, exp, got, "differs");
                }
            }
            Value::Number(_) => {
                if got.is_null() && self.reg_floats.contains(path) {
                    self.unavailable_floats.insert(self.top.clone());
                } else if !numbers_equal(exp, got) {
                    let why = if self.reg_floats.contains(path) {
                        "a float in a register: null or the exact value, never another number"
                    } else {
                        "differs"
                    };
                    self.problem(path, exp, got, why);
                }
            }
            Value::String(e) => self.string(path, e, got),
            Value::Array(e) => {
                if got.is_null() && self.reg_floats.contains(path) {
                    self.unavailable_floats.insert(self.top.clone()); // a complex in registers
                } else if let Some(g) = got.as_array() {
                    self.elems(path, e, g, exp, got);
                } else {
                    self.problem(path, exp, got, "expected an array");
                }
            }
            Value::Object(e) => match got.as_object() {
                Some(g) if is_map(e) => self.map(path, e, g, exp, got),
                Some(g) if is_interface(e) => {
                    let dynamic = g.get("type").and_then(Value::as_str).map(reflect_spelling);
                    if dynamic.as_deref() != e.get("type").and_then(Value::as_str) {
                        self.problem(path, exp, got, "dynamic type differs");
                    } else {
                        self.value(
                            &format!("{path}/value"),
                            &e["value"],
                            g.get("value").unwrap_or(&Value::Null),
                        );
                    }
                }
                Some(g) => {
                    let (ek, gk): (BTreeSet<_>, BTreeSet<_>) =
                        (e.keys().collect(), g.keys().collect());
                    if ek != gk {
                        self.problem(path, exp, got, "struct fields differ");
                        return;
                    }
                    for (field, ev) in e {
                        self.value(&format!("{path}/{field}"), ev, &g[field]);
                    }
                }
                None => self.problem(path, exp, got, "expected an object"),
            },
        }
    }

    /// A string within the limit must be equal; a longer one exactly its first --string-max
    /// bytes (fewer only so as not to split a UTF-8 character), and marked.
    fn string(&mut self, path: &str, exp: &str, got: &Value) {
        let Some(g) = got.as_str() else {
            return self.problem(path, &Value::from(exp), got, "expected a string");
        };
        let max = self.limits.string_max;
        if exp.len() <= max {
            if g != exp {
                self.problem(path, &Value::from(exp), got, "differs");
            }
        } else if g
            != &exp[..(0..=max)
                .rev()
                .find(|&i| exp.is_char_boundary(i))
                .unwrap_or(0)]
        {
            let why = format!(
                "longer than --string-max {max}: must be its first {max} bytes, got {} bytes",
                g.len()
            );
            self.problem(path, &Value::from(exp), got, &why);
        } else {
            self.cut.insert(self.top.clone());
        }
    }

    /// Slices and arrays: the first min(len, --elems) elements, marked when cut.
    fn elems(&mut self, path: &str, exp: &[Value], got: &[Value], exp_v: &Value, got_v: &Value) {
        let want = exp.len().min(self.limits.elems);
        // A []byte is a byte string: its limit may be --string-max instead.
        let want_bytes = exp.len().min(self.limits.string_max);
        let top_level_bytes =
            self.byte_slice && !path[path.find('/').map_or(0, |i| i + 1)..].contains('/');
        if got.len() != want && !(top_level_bytes && got.len() == want_bytes) {
            let why = format!(
                "{} elements; expected the first {want} of {} (--elems {})",
                got.len(),
                exp.len(),
                self.limits.elems
            );
            return self.problem(path, exp_v, got_v, &why);
        }
        if got.len() < exp.len() {
            self.cut.insert(self.top.clone());
        }
        for (i, (e, g)) in exp.iter().zip(got).enumerate() {
            self.value(&format!("{path}/{i}"), e, g);
        }
    }

    /// Maps: the exact length and some (at least one, if any) of the real entries, no duplicates.
    fn map(
        &mut self,
        path: &str,
        exp: &Map<String, Value>,
        got: &Map<String, Value>,
        exp_v: &Value,
        got_v: &Value,
    ) {
        if got.get("len") != exp.get("len") {
            return self.problem(path, exp_v, got_v, "map length differs");
        }
        let exp_entries = exp["entries"].as_array().expect("program map has entries");
        let Some(got_entries) = got.get("entries").and_then(Value::as_array) else {
            return self.problem(path, exp_v, got_v, "map without entries");
        };
        // Swiss tables may show fewer entries with a reason (checked below); a classic map
        // whose entries all sit in buckets past the two read must say it read none.
        if got_entries.is_empty() && !exp_entries.is_empty() && !self.limits.exact_maps {
            self.partial.insert(self.top.clone());
            self.not_read.insert(self.top.clone());
            return;
        }
        let mut seen = Vec::new();
        for entry in got_entries {
            let (Some(key), Some(value)) = (entry.get(0), entry.get(1)) else {
                return self.problem(path, exp_v, entry, "map entry is not [key, value]");
            };
            if seen.contains(&key) {
                return self.problem(path, exp_v, key, "map key shown twice");
            }
            seen.push(key);
            // Nothing below a map is tracked: a value there cut at --depth is right when the
            // map itself is as deep.
            let map_at_depth = self
                .derefs
                .get(path)
                .is_some_and(|d| d.iter().any(|&(_, loose, _)| loose >= self.limits.depth));
            match exp_entries
                .iter()
                .find(|e| numbers_equal(&e[0], key) || e[0] == *key)
            {
                Some(_) if map_at_depth && value["not_read"] == "beyond --depth" => {
                    self.partial.insert(self.top.clone());
                    self.not_read.insert(self.top.clone());
                }
                Some(e) => self.value(&format!("{path}/entries[{key}]"), &e[1], value),
                None => self.problem(path, exp_v, key, "map key not in the map"),
            }
        }
        // Swiss tables: --elems entries wherever the hash put them, marked when cut; fewer only
        // with a reason under "unavailable" (groups or tables beyond the read budget).
        if self.limits.exact_maps {
            let want = exp_entries.len().min(self.limits.elems);
            if got_entries.len() < want {
                self.partial.insert(self.top.clone());
                self.not_read.insert(self.top.clone());
            } else if got_entries.len() != want {
                let why = format!(
                    "{} entries; expected {want} of {} (--elems {})",
                    got_entries.len(),
                    exp_entries.len(),
                    self.limits.elems
                );
                self.problem(path, exp_v, got_v, &why);
            } else if want < exp_entries.len() {
                self.cut.insert(self.top.clone());
            }
        } else if got_entries.len() < exp_entries.len() {
            self.partial.insert(self.top.clone());
        }
    }
}

fn is_map(o: &Map<String, Value>) -> bool {
    o.len() == 2 && o.contains_key("len") && o.contains_key("entries")
}

fn is_interface(o: &Map<String, Value>) -> bool {
    o.len() == 2 && o.contains_key("type") && o.contains_key("value")
}

/// The program renders the bad pointers it passed as `{"address": …, "error": "unreadable"}`.
fn bad_pointer(exp: &Value) -> Option<u64> {
    let o = exp.as_object()?;
    (o.len() == 2 && o.get("error")? == "unreadable").then_some(())?;
    parse_addr(o.get("address")?.as_str()?)
}

fn parse_addr(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// Equal numbers: integers exactly; floats exactly (the fixture's floats are exact in binary);
/// an integer written as a float only where that float is exact.
fn numbers_equal(exp: &Value, got: &Value) -> bool {
    match (exp, got) {
        (Value::Number(e), Value::Number(g)) => {
            if let (Some(e), Some(g)) = (e.as_i64(), g.as_i64()) {
                return e == g;
            }
            if let (Some(e), Some(g)) = (e.as_u64(), g.as_u64()) {
                return e == g;
            }
            match (e.as_f64(), g.as_f64()) {
                (Some(e), Some(g)) => e == g && e.abs() < 2f64.powi(53),
                _ => false,
            }
        }
        _ => false,
    }
}

/// A value for a one-line message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 160 {
        return s;
    }
    let mut end = 120;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &s[..end], s.len())
}

/// Lists the problems, most frequent kinds first, then every line (capped).
fn report(problems: &[String]) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for p in problems {
        // "main.F id=N path: …" → "main.F path"
        let words: Vec<&str> = p.split_whitespace().collect();
        let kind = match words.as_slice() {
            [func, id, what, ..] if id.starts_with("id=") && !id.ends_with(':') => {
                let what = what.trim_end_matches(':').split('/').take(2);
                format!("{func} {}", what.collect::<Vec<_>>().join("/"))
            }
            [func, id, ..] if id.starts_with("id=") => format!("{func} (the call)"),
            _ => p.split(':').next().unwrap_or("").to_owned(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out = String::from("by function and argument:\n");
    for (kind, n) in kinds {
        out += &format!("  {n:5}  {kind}\n");
    }
    out += "every problem:\n";
    for p in problems.iter().take(300) {
        out += &format!("  {p}\n");
    }
    if problems.len() > 300 {
        out += &format!("  … and {} more\n", problems.len() - 300);
    }
    out
}

/// A toolchain's problems, for the failure message.
fn session_failure(toolchain: &Toolchain, session: &Session, problems: &[String]) -> String {
    format!(
        "Go {}: {} problems in {} calls\n{}gotrace's stderr:\n{}",
        toolchain.version,
        problems.len(),
        session.program.len(),
        report(problems),
        session.stderr
    )
}

fn root_values_equal_the_programs_own_record_on_every_toolchain() {
    // Traced by binary path: a run of the same fixture by another test would be traced too.
    let _serial = serial();
    let mut failures = Vec::new();
    for toolchain in toolchains() {
        let binary = values_program(&toolchain);
        let session = run_traced(&binary, &[], &TRACED, &[]);
        let limits = Limits {
            exact_maps: swiss_maps(&toolchain),
            ..DEFAULTS
        };
        let problems = compare_session(&session, limits);
        eprintln!(
            "Go {}: {} calls made, {} traced, {} problems",
            toolchain.version,
            session.program.len(),
            session.traced.len(),
            problems.len()
        );
        if !problems.is_empty() {
            failures.push(session_failure(&toolchain, &session, &problems));
        }
    }
    assert!(
        failures.is_empty(),
        "gotrace's values differ from the program's:\n{}",
        failures.join("\n")
    );
}

/// Swiss tables put each entry in the group its hash picks, and the hash seed is new in every
/// process: a map read from its first slots showed a 20-entry map without any entry when the
/// seed left them empty. Every map case, 150 times each with new maps (1 to 200 entries built
/// in increasing, decreasing and shuffled order, half of them grown by entries deleted again,
/// and a map emptied to a few entries among hundreds of groups), on Go 1.24–1.27: every value
/// equal, every map of `FMapStress` shows exactly min(len, --elems) entries with nothing left
/// unread, and a map showing fewer says why.
fn root_maps_show_their_entries_wherever_the_hash_put_them() {
    // Traced by binary path: a run of the same fixture by another test would be traced too.
    let _serial = serial();
    const ROUNDS: usize = 150;
    let mut failures = Vec::new();
    for toolchain in toolchains().into_iter().filter(swiss_maps) {
        let binary = values_program(&toolchain);
        let rounds = ROUNDS.to_string();
        let mut session = run_traced(
            &binary,
            &[],
            &["main.FMap*"],
            &["-workers", "0", "-big", "0", "-maps", &rounds],
        );
        // The program's own calls of other functions (its bad pointers) are not traced here.
        session.program.retain(|c| {
            c["func"]
                .as_str()
                .is_some_and(|f| f.starts_with("main.FMap"))
        });
        let limits = Limits {
            exact_maps: true,
            ..DEFAULTS
        };
        let mut problems = compare_session(&session, limits);
        let stress: Vec<&Value> = session
            .traced
            .iter()
            .filter(|c| c["func"] == "main.FMapStress" && c["pid"] == session.pid)
            .collect();
        if stress.len() != ROUNDS {
            problems.push(format!(
                "{} FMapStress calls traced, not {ROUNDS}",
                stress.len()
            ));
        }
        // Fewer entries only where the kernel could not read the groups at that moment (seen
        // about once in 3000 maps: a read of a few KiB the kernel refused without faulting
        // pages in), never for lack of reads.
        let (mut shown, mut unreadable) = (0, 0);
        for call in &stress {
            for name in ["a", "b"] {
                let map = &call["args"][name];
                let len = map["len"].as_u64().unwrap_or(0) as usize;
                let entries = map["entries"].as_array().map_or(0, Vec::len);
                shown += entries;
                let why = call["unavailable"][name].as_str().unwrap_or("");
                if why.starts_with("not read: unreadable memory") {
                    unreadable += 1;
                } else if entries != len.min(DEFAULTS.elems) || !why.is_empty() {
                    problems.push(format!(
                        "FMapStress id={} {name}: {entries} entries of {len}, unavailable {}",
                        call["args"]["id"], call["unavailable"]
                    ));
                }
            }
        }
        if unreadable * 100 > ROUNDS * 2 {
            problems.push(format!("{unreadable} FMapStress maps unreadable"));
        }
        let sparse_marked = session
            .traced
            .iter()
            .filter(|c| c["func"] == "main.FMapSparse" && c["pid"] == session.pid)
            .filter(|c| c["unavailable"]["c"].is_string())
            .count();
        eprintln!(
            "Go {}: {} map calls traced, {} problems; FMapStress entries shown: {shown}, maps \
             unreadable: {unreadable}; FMapSparse maps marked not read: {sparse_marked} of {ROUNDS}",
            toolchain.version,
            session.traced.len(),
            problems.len()
        );
        if shown < ROUNDS * 2 {
            problems.push(format!("only {shown} FMapStress entries shown"));
        }
        if !problems.is_empty() {
            failures.push(session_failure(&toolchain, &session, &problems));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The limits given as flags, not the defaults: the 1 MiB string is cut at --string-max 4096,
/// slices at --elems 4, pointers at --depth 1; all marked, everything else still equal.
fn root_limits_cut_strings_slices_and_pointers_and_mark_them() {
    // Traced by binary path: a run of the same fixture by another test would be traced too.
    let _serial = serial();
    let newest = newest_toolchain();
    let limits = Limits {
        string_max: 4096,
        elems: 4,
        depth: 1,
        exact_maps: swiss_maps(&newest),
    };
    let binary = values_program(&newest);
    let session = run_traced(
        &binary,
        &["--string-max", "4096", "--elems", "4", "--depth", "1"],
        &TRACED,
        &["-workers", "4", "-rounds", "1", "-big", "2"],
    );

    let big: Vec<&Value> = session
        .traced
        .iter()
        .filter(|c| c["func"] == "main.FBig")
        .collect();
    assert_eq!(big.len(), 8, "one record per 1 MiB call (4 goroutines × 2)");
    for call in big {
        let s = call["args"]["s"]
            .as_str()
            .unwrap_or_else(|| panic!("s is not a string: {}", short(call)));
        let id = call["args"]["id"].as_i64().unwrap();
        assert_eq!(s.len(), 4096, "the 1 MiB string is kept up to --string-max");
        assert!(
            s.starts_with(&format!("[{id}:0][{id}:1]")),
            "{}",
            short(&Value::from(s))
        );
        assert!(
            call["truncated"]
                .as_array()
                .is_some_and(|t| t.contains(&Value::from("s"))),
            "{}",
            short(call)
        );
        assert_eq!(call["results"]["n"], 1 << 20);
    }
    let mut problems = compare_session(&session, limits);
    // The issue: "the summary counts truncations".
    if !session.stderr.contains("truncat") {
        problems.push(format!(
            "summary: truncations not counted in {:?}",
            session.stderr
        ));
    }
    assert!(
        problems.is_empty(),
        "with {limits:?}:\n{}",
        report(&problems)
    );
}

/// The text output renders values the Go way, as the issue shows them.
fn root_text_output_renders_go_values() {
    // Traced by binary path: a run of the same fixture by another test would be traced too.
    let _serial = serial();
    let binary = values_program(&newest_toolchain());
    let tracer = start_gotrace(&[binary.to_str().unwrap(), "main.FText"]);
    let status = Command::new(&binary)
        .args(["-workers", "1", "-rounds", "1", "-big", "0"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let out = tracer.interrupt_and_collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Spacing after commas is a matter of taste: compare without it.
    let lines: Vec<String> = stdout.lines().map(|l| l.replace(", ", ",")).collect();
    assert_eq!(
        lines.len(),
        2,
        "two calls of main.FText:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in &lines {
        for expected in [
            "main.FText(",
            "s=\"hello\"",
            "b=[]byte{0x68,0x69} (len 2 cap 8)",
            "p=&main.Point{X:1,Y:2}",
        ] {
            assert!(line.contains(expected), "{expected:?} not in {line:?}");
        }
    }
    let with_error = lines
        .iter()
        .filter(|l| l.contains("err=*errors.errorString{s:\"boom\"}"))
        .count();
    let without = lines.iter().filter(|l| l.contains("err=nil")).count();
    assert_eq!(
        (with_error, without),
        (1, 1),
        "one call with errors.New(\"boom\"), one with nil:\n{stdout}"
    );
}

/// Starts gotrace in text mode on `functions`, runs the program with `program_args`, and
/// returns gotrace's stdout and stderr.
fn run_text(binary: &Path, functions: &[&str], program_args: &[&str]) -> (String, String) {
    let mut args = vec![binary.to_str().unwrap()];
    args.extend_from_slice(functions);
    let tracer = start_gotrace(&args);
    let status = Command::new(binary)
        .args(program_args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let out = tracer.interrupt_and_collect();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The issue: a call needing more reads than one probe makes lost its top-level strings
/// (`ParseFile`'s filename) to deep fields read first. Reads go breadth first: `filename` and
/// `path` are read, the tree's deepest strings are the ones left out, and each of those says
/// so — `{"not_read": …}` and a reason under "unavailable" in JSON, `<not read: …>` in text —
/// and the summary counts them. On the oldest and the newest toolchain.
fn root_reads_beyond_the_budget_are_marked_and_top_level_strings_read() {
    // Traced by binary path: a run of the same fixture by another test would be traced too.
    let _serial = serial();
    let program_args = ["-workers", "1", "-rounds", "0", "-big", "0", "-budget", "3"];
    let chains = toolchains();
    for toolchain in [chains.first().unwrap(), chains.last().unwrap()] {
        let binary = values_program(toolchain);
        let session = run_traced(&binary, &[], &["main.FBudget"], &program_args);
        let expected: Vec<&Value> = session
            .program
            .iter()
            .filter(|c| c["func"] == "main.FBudget")
            .collect();
        let traced: Vec<&Value> = session
            .traced
            .iter()
            .filter(|c| c["pid"] == session.pid)
            .collect();
        assert_eq!(
            traced.len(),
            3,
            "Go {}: {}",
            toolchain.version,
            session.stderr
        );
        for (exp, got) in expected.iter().zip(&traced) {
            let v = toolchain.version.as_str();
            assert_eq!(got["args"]["id"], exp["id"], "Go {v}");
            for name in ["filename", "path"] {
                assert_eq!(
                    got["args"][name],
                    exp["args"][name],
                    "Go {v}: {}",
                    short(got)
                );
            }
            let (mut read, mut not_read) = (0, 0);
            for leaf in 0..8 {
                for field in 0..8 {
                    let (l, f) = (format!("L{leaf}"), format!("S{field}"));
                    let g = &got["args"]["tree"][&l][&f];
                    if g == &exp["args"]["tree"][&l][&f] {
                        read += 1;
                    } else if g["not_read"] == "read budget used up" {
                        not_read += 1;
                    } else {
                        panic!("Go {v}: tree.{l}.{f} is neither its value nor marked: {g}");
                    }
                }
            }
            assert!(
                read > 0 && not_read > 0,
                "Go {v}: {read} read, {not_read} not read"
            );
            let reason = got["unavailable"]["tree"].as_str().unwrap_or_default();
            assert!(reason.contains("read budget"), "Go {v}: {}", short(got));
            assert_eq!(got["results"]["~r0"], exp["results"]["~r0"], "Go {v}");
        }
        assert!(
            session
                .stderr
                .contains("3 values with parts not read (beyond --depth, read budget"),
            "Go {}: the summary counts the values not read: {}",
            toolchain.version,
            session.stderr
        );
    }
    let binary = values_program(&newest_toolchain());
    let (stdout, stderr) = run_text(&binary, &["main.FBudget"], &program_args);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}\n{stderr}");
    for line in lines {
        assert!(line.contains("filename=\"/src/file"), "{line}");
        assert!(line.contains("path=\"example.com/pkg/"), "{line}");
        assert!(
            line.contains("<not read: read budget used up, string of 8 bytes>"),
            "{line}"
        );
    }
}

/// Issue 10: the errno inside the *fs.PathError os.Open returns shows — an interface held in
/// another interface's value. (JSON on every toolchain: the main comparison's main.FOpen.)
fn root_path_error_shows_its_errno() {
    // Traced by binary path: a run of the same fixture by another test would be traced too.
    let _serial = serial();
    let binary = values_program(&newest_toolchain());
    let (stdout, stderr) = run_text(
        &binary,
        &["main.FOpen"],
        &["-workers", "1", "-rounds", "2", "-big", "0"],
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}\n{stderr}");
    for line in lines {
        assert!(
            line.contains("= *io/fs.PathError{Op:\"open\", Path:\"/nonexistent/gotrace-values/")
                && line.contains("Err:syscall.Errno(2)}"),
            "{line}"
        );
    }
}

/// The issue, on a real program: the go command's `loadPackageData` (a *Loader, a context, six
/// more arguments) lost its `path` to the read budget in every call of `go list std`. Now every
/// call shows it, what is not read says so, and every standard package listed was seen.
fn root_go_command_load_package_data_shows_its_path() {
    let toolchain = newest_toolchain();
    let gocmd = gotrace_gobuild::testing::go_command(&toolchain);
    let goroot = toolchain.go.parent().and_then(Path::parent).unwrap();
    let func = "cmd/go/internal/load.loadPackageData";
    let tracer = start_gotrace(&["--json", gocmd.to_str().unwrap(), func]);
    let listed = Command::new(&gocmd)
        .args(["list", "std"])
        .current_dir(std::env::temp_dir())
        .env("GOROOT", goroot)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("GO111MODULE", "off")
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let out = tracer.interrupt_and_collect();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let calls = json_calls(&out.stdout);
    let packages: BTreeSet<&str> = std::str::from_utf8(&listed.stdout)
        .unwrap()
        .lines()
        .collect();
    assert!(
        packages.len() > 100 && calls.len() >= packages.len(),
        "{stderr}"
    );
    let mut seen = BTreeSet::new();
    for call in &calls {
        let path = call["args"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("path not read: {}", short(call)));
        assert!(!path.is_empty(), "{}", short(call));
        seen.insert(path.to_owned());
        for (name, why) in call["unavailable"].as_object().into_iter().flatten() {
            assert!(
                why.as_str().is_some_and(|w| w.starts_with("not read")),
                "{name}: {why}"
            );
        }
    }
    if stderr.contains(" 0 calls lost") {
        let missing: Vec<&&str> = packages.iter().filter(|p| !seen.contains(**p)).collect();
        assert!(missing.is_empty(), "listed but never traced: {missing:?}");
    }
    eprintln!(
        "go {}: {} calls of {func}, path read in all; {} packages listed",
        toolchain.version,
        calls.len(),
        packages.len()
    );
}

/// The comparison itself, on a hand-made call: it accepts what the rules allow and catches each
/// kind of mistake (so a passing end-to-end test means something). Needs no root.
fn comparison_accepts_the_rules_and_rejects_each_kind_of_mistake() {
    let limits = Limits {
        string_max: 4,
        elems: 2,
        depth: 1,
        exact_maps: true,
    };
    let exp = serde_json::json!({
        "func": "main.F", "id": 7,
        "args": {"id": 7, "f": 1.5, "s": "abcdef", "xs": [1, 2, 3], "p": {"X": 1, "Next": {"X": 2, "Next": null}},
                 "m": {"len": 3, "entries": [["a", 1], ["b", 2], ["c", 3]]}, "e": {"type": "*main.E", "value": {"s": "x"}},
                 "bad": {"address": "0x1008", "error": "unreadable"}},
        "results": {"~r0": -1},
        "types": {"id": "int", "f": "float64", "s": "string", "xs": "[]int", "p": "*main.N", "m": "map[string]int",
                  "e": "error", "bad": "*main.N", "~r0": "int"},
        "derefs": {"args/p": [[1, 1, "0x10"]], "args/p/Next": [[2, 2, "0x20"]], "args/m": [[0, 1, "0x30"]],
                   "args/e": [[0, 1, "0x40"]], "args/e/value": [[0, 1, "0x40"], [1, 2, "0x40"]]},
        "reg_floats": ["args/f"],
    });
    let good = serde_json::json!({
        "func": "main.F", "outcome": "returned",
        "args": {"id": 7, "f": null, "s": "abcd", "xs": [1, 2], "p": {"X": 1, "Next": {"address": "0x20", "not_read": "beyond --depth"}},
                 "m": {"len": 3, "entries": [["c", 3], ["a", 1]]}, "e": {"type": "*main.E", "value": {"address": "0x40", "not_read": "beyond --depth"}},
                 "bad": {"address": "0x1008", "error": "unreadable"}},
        "results": {"~r0": -1},
        "types": exp["types"].clone(),
        "truncated": ["s", "xs", "m"],
        "unavailable": {"f": "in a float register", "p": "not read: beyond --depth",
                        "e": "not read: beyond --depth", "bad": "not read: unreadable memory"},
    });
    assert_eq!(compare_call(&exp, &good, limits), Vec::<String>::new());
    // A map may show fewer than --elems entries when it says why.
    let mut short = good.clone();
    short["args"]["m"]["entries"] = serde_json::json!([]);
    short["truncated"] = serde_json::json!(["s", "xs"]);
    short["unavailable"]["m"] = "not read: read budget used up".into();
    assert_eq!(compare_call(&exp, &short, limits), Vec::<String>::new());

    type Mutation = fn(&mut Value);
    let mistakes: [(&str, Mutation); 19] = [
        ("wrong int", |g| g["results"]["~r0"] = (-1i64 as u64).into()),
        ("not read without a reason", |g| {
            g["unavailable"].as_object_mut().unwrap().remove("p");
        }),
        (
            "a value within reach not read",
            |g| g["args"]["s"] = serde_json::json!({"not_read": "read budget used up", "len": 6}),
        ),
        ("cut at --depth without saying not read", |g| {
            g["args"]["p"]["Next"] = serde_json::json!({"address": "0x20"})
        }),
        ("wrong register float", |g| g["args"]["f"] = 1.25.into()),
        ("null float without a reason", |g| {
            g["unavailable"] = serde_json::json!({})
        }),
        ("null int", |g| g["args"]["id"] = Value::Null),
        ("string cut short", |g| g["args"]["s"] = "abc".into()),
        ("string not cut", |g| g["args"]["s"] = "abcdef".into()),
        ("cut not marked", |g| {
            g["truncated"] = serde_json::json!(["xs", "m"])
        }),
        ("marked, not cut", |g| {
            g["truncated"] = serde_json::json!(["s", "xs", "id"])
        }),
        ("wrong element", |g| {
            g["args"]["xs"] = serde_json::json!([1, 3])
        }),
        ("cut within depth", |g| {
            g["args"]["p"] = serde_json::json!({"address": "0x10"})
        }),
        ("shown beyond depth", |g| {
            g["args"]["p"]["Next"] = serde_json::json!({"X": 2, "Next": null})
        }),
        ("map entry not in the map", |g| {
            g["args"]["m"]["entries"] = serde_json::json!([["d", 2]])
        }),
        ("map short of --elems without a reason", |g| {
            g["args"]["m"]["entries"] = serde_json::json!([["b", 2]])
        }),
        ("map beyond --elems", |g| {
            g["args"]["m"]["entries"] = serde_json::json!([["a", 1], ["b", 2], ["c", 3]])
        }),
        ("bad pointer read", |g| {
            g["args"]["bad"] = serde_json::json!({"X": 0, "Next": null})
        }),
        ("wrong dynamic type", |g| {
            g["args"]["e"]["type"] = "*main.F".into()
        }),
    ];
    for (what, mutate) in mistakes {
        let mut got = good.clone();
        mutate(&mut got);
        assert!(
            !compare_call(&exp, &got, limits).is_empty(),
            "not caught: {what}"
        );
    }

    let session = |traced: Vec<Value>| Session {
        program: vec![exp.clone()],
        traced,
        pid: 0,
        stderr: String::new(),
    };
    let with_pid = |mut v: Value| {
        v["pid"] = 0.into();
        v
    };
    assert!(compare_session(&session(vec![with_pid(good.clone())]), limits).is_empty());
    assert!(
        !compare_session(&session(vec![]), limits).is_empty(),
        "missing call"
    );
    assert!(
        !compare_session(&session(vec![with_pid(good.clone()); 2]), limits).is_empty(),
        "duplicate"
    );
}

gotrace_gobuild::test_main! {
    tests: [
        comparison_accepts_the_rules_and_rejects_each_kind_of_mistake,
    ],
    root: [
        root_values_equal_the_programs_own_record_on_every_toolchain,
        root_maps_show_their_entries_wherever_the_hash_put_them,
        root_limits_cut_strings_slices_and_pointers_and_mark_them,
        root_text_output_renders_go_values,
        root_reads_beyond_the_budget_are_marked_and_top_level_strings_read,
        root_path_error_shows_its_errno,
        root_go_command_load_package_data_shows_its_path,
    ],
}
