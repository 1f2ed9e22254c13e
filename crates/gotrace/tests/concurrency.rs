//! Issue 5, "invisible and exact under real Go concurrency", end to end with real eBPF on every
//! installed toolchain. Each Go program under `fixtures/go/stress_*` and `fixtures/go/migration`
//! checks its own correctness, prints a deterministic summary (with a `CALLS <func> <n>` line per
//! traced function) and writes one JSON record per traced call (goid, arguments, results and
//! outcome) to `-records`. Each runs once untraced and several times traced through its binary:
//!
//! - invisible: same exit status and same stdout, every time;
//! - exact: every call the program made is reported once, with its own arguments and results,
//!   paired on the right goroutine; a call that panicked or exited is never reported as returned.

mod common;

use common::*;
use gotrace_gobuild::{Flavour, Toolchain};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Traced runs per program and toolchain: stack growth, GC and preemption differ run to run.
const TRACED_RUNS: usize = 3;

/// Traced runs of a stress program on `toolchain`: [`TRACED_RUNS`] on the oldest and newest
/// (the ends of the runtime's behaviour), one on the releases between, to keep the suite short.
fn stress_runs(toolchain: &Toolchain) -> usize {
    match ends().iter().any(|end| end.version == toolchain.version) {
        true => TRACED_RUNS,
        false => 1,
    }
}
const PROGRAM_LIMIT: Duration = Duration::from_secs(30);

struct Program {
    dir: &'static str,
    functions: &'static [&'static str],
}

const RECURSION: Program = Program {
    dir: "fixtures/go/stress_recursion",
    functions: &["main.Big", "main.Mid"],
};
const CALLERS: Program = Program {
    dir: "fixtures/go/stress_callers",
    functions: &["main.Inspect"],
};
const PANICS: Program = Program {
    dir: "fixtures/go/stress_panic",
    functions: &["main.Boom", "main.Outer", "main.Safe", "main.Quit"],
};
const GC: Program = Program {
    dir: "fixtures/go/stress_gc",
    functions: &["main.Park", "main.Churn"],
};
const BLOCKING: Program = Program {
    dir: "fixtures/go/stress_block",
    functions: &["main.Wait"],
};
const PREEMPT: Program = Program {
    dir: "fixtures/go/stress_preempt",
    functions: &["main.Spin"],
};
const MIGRATION: Program = Program {
    dir: "fixtures/go/migration",
    functions: &["main.Work"],
};

/// What one run of a program did, in its own words.
struct ProgramRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    records: Vec<Value>,
}

impl ProgramRun {
    /// `CALLS <func> <n>` lines: the true call counts, counted by the program with atomics.
    fn call_counts(&self) -> BTreeMap<String, u64> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("CALLS "))
            .map(|l| {
                let (func, n) = l.split_once(' ').expect("CALLS <func> <n>");
                (func.to_owned(), n.parse().expect("a count"))
            })
            .collect()
    }
}

fn run_program(binary: &Path) -> ProgramRun {
    let records = tempfile_path("records");
    let mut command = Command::new(binary);
    command.arg("-records").arg(&records).stdin(Stdio::null());
    let output = output_within(&mut command, PROGRAM_LIMIT);
    let text = std::fs::read(&records).unwrap_or_default();
    let _ = std::fs::remove_file(&records);
    ProgramRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        records: json_calls(&text),
    }
}

/// What gotrace said of a traced run: its calls, its stderr, and how many returns and runtime
/// hooks it could not read the goroutine of (`returns_unread`).
struct Traced {
    calls: Vec<Value>,
    stderr: String,
    unread: u64,
}

/// Starts gotrace on `binary` (so it is attached before the program starts), runs the program,
/// and returns the run with gotrace's calls of that process.
fn run_traced(binary: &Path, program: &Program, gotrace_args: &[&str]) -> (ProgramRun, Traced) {
    let binary_arg = binary.to_str().expect("UTF-8 path");
    let mut trace_args = vec!["--json"];
    trace_args.extend_from_slice(gotrace_args);
    trace_args.push(binary_arg);
    trace_args.extend_from_slice(program.functions);
    let tracer = Tracer::start(&trace_args, &[]);
    let run = run_program(binary);
    let (stdout, stderr) = tracer.stop();
    let calls = json_calls(&stdout);
    let unread = json_lines(&stdout)
        .iter()
        .rfind(|l| l["type"] == "summary")
        .and_then(|s| s["returns_unread"].as_u64())
        .expect("a summary with returns_unread");
    // Tests run one at a time, so every process of this binary is the one just run.
    let pids: std::collections::BTreeSet<u64> =
        calls.iter().filter_map(|c| c["pid"].as_u64()).collect();
    assert!(pids.len() <= 1, "calls from several processes: {pids:?}");
    let traced = Traced {
        calls,
        stderr,
        unread,
    };
    (run, traced)
}

fn build(program: &Program, toolchain: &Toolchain) -> std::path::PathBuf {
    build_go(program.dir, toolchain, Flavour::Plain, "-l")
}

/// The untraced run: the reference every traced run must reproduce. A failure here is a bug
/// in the fixture, not in gotrace.
fn baseline(binary: &Path, program: &Program) -> ProgramRun {
    let run = run_program(binary);
    assert!(
        run.status.success(),
        "{} fails untraced: {}{}",
        program.dir,
        run.stdout,
        run.stderr
    );
    let counts = run.call_counts();
    for func in program.functions {
        let recorded = run.records.iter().filter(|r| r["func"] == *func).count() as u64;
        assert_eq!(
            counts.get(*func),
            Some(&recorded),
            "{}: CALLS line vs records of {func}",
            program.dir
        );
    }
    run
}

/// The goroutine and arguments of a call: what matches a gotrace call to the program's record.
fn call_key(v: &Value) -> String {
    // serde_json's maps are sorted, so `args` prints the same for equal arguments.
    format!(
        "{} goid={} args={}",
        v["func"].as_str().unwrap_or("?"),
        v["goid"],
        v["args"]
    )
}

/// A call in few words, for failure messages.
fn brief(v: &Value) -> String {
    let mut s = format!("{} {}", call_key(v), v["outcome"].as_str().unwrap_or("?"));
    if !v["results"].is_null() {
        s += &format!(" results={}", v["results"]);
    }
    s
}

/// Whether gotrace's `call` reports the program's `record` correctly. A call that panicked or
/// ended in runtime.Goexit may be reported as "panicked"/"exited" or as "abandoned", but never
/// as returned, and never with results.
fn reports(call: &Value, record: &Value) -> bool {
    let outcome = call["outcome"].as_str().unwrap_or("");
    match record["outcome"].as_str() {
        Some("returned") => outcome == "returned" && call["results"] == record["results"],
        Some("panicked") => {
            matches!(outcome, "panicked" | "abandoned") && call["results"].is_null()
        }
        Some("exited") => matches!(outcome, "exited" | "abandoned") && call["results"].is_null(),
        other => panic!("unexpected outcome {other:?} in the program's record {record}"),
    }
}

/// Matches every record to one gotrace call; returns what does not match. Up to `unseen`
/// records (the returns and hooks gotrace counted as unreadable) may be matched by a call of
/// theirs reported `return_not_seen` or `in_flight`: gotrace said it could not see them end.
fn compare_calls(records: &[Value], mut unseen: u64, calls: &[Value]) -> Vec<String> {
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for call in calls {
        by_key.entry(call_key(call)).or_default().push(call);
    }
    let mut wrong = Vec::new();
    for record in records {
        let candidates = by_key.entry(call_key(record)).or_default();
        let explained =
            |c: &&Value| matches!(c["outcome"].as_str(), Some("return_not_seen" | "in_flight"));
        let exact = candidates.iter().position(|c| reports(c, record));
        let found = exact.or_else(|| match unseen {
            0 => None,
            _ => candidates.iter().position(explained),
        });
        match found {
            Some(i) => {
                if exact.is_none() {
                    unseen -= 1;
                    eprintln!(
                        "explained by an unreadable return: {}",
                        brief(candidates[i])
                    );
                }
                candidates.remove(i);
            }
            None => wrong.push(format!(
                "program: {}; gotrace: {}",
                brief(record),
                if candidates.is_empty() {
                    "nothing".to_owned()
                } else {
                    candidates
                        .iter()
                        .map(|c| brief(c))
                        .collect::<Vec<_>>()
                        .join(" | ")
                }
            )),
        }
    }
    let extra: Vec<&Value> = by_key.values().flatten().copied().collect();
    let mut problems = Vec::new();
    if !wrong.is_empty() {
        problems.push(format!(
            "{} of {} calls not reported correctly, e.g.\n      {}",
            wrong.len(),
            records.len(),
            wrong
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n      ")
        ));
    }
    if !extra.is_empty() {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for c in &extra {
            *kinds
                .entry(format!(
                    "{} {}",
                    c["func"].as_str().unwrap_or("?"),
                    c["outcome"]
                ))
                .or_default() += 1;
        }
        problems.push(format!(
            "{} calls reported that the program never made (or reported twice): {kinds:?}, e.g.\n      {}",
            extra.len(),
            extra.iter().take(5).map(|c| brief(c)).collect::<Vec<_>>().join("\n      ")
        ));
    }
    problems
}

/// The invisibility and exactness checks of one traced run against the untraced reference.
fn check_run(reference: &ProgramRun, run: &ProgramRun, traced: &Traced) -> Vec<String> {
    let stderr = &traced.stderr;
    let mut problems = Vec::new();
    if run.status.code() != reference.status.code() {
        problems.push(format!(
            "exit status {} traced, {} untraced; stderr:\n{}",
            run.status, reference.status, run.stderr
        ));
    }
    if run.stdout != reference.stdout {
        problems.push(format!(
            "stdout differs; traced:\n{}\nuntraced:\n{}",
            run.stdout, reference.stdout
        ));
    }
    if !stderr.contains(" 0 calls lost") {
        problems.push(format!("gotrace lost events: {stderr}"));
    }
    problems.extend(compare_calls(&run.records, traced.unread, &traced.calls));
    problems
}

/// Runs a stress program on every toolchain, untraced then traced, and fails with every problem
/// found (all toolchains and runs, so one report shows the whole picture).
fn stress(program: &Program) {
    let mut problems = Vec::new();
    for toolchain in toolchains() {
        let binary = build(program, &toolchain);
        let started = Instant::now();
        let reference = baseline(&binary, program);
        let runs = stress_runs(&toolchain);
        for run in 1..=runs {
            let (program_run, traced) = run_traced(&binary, program, &[]);
            for problem in check_run(&reference, &program_run, &traced) {
                problems.push(format!("Go {} run {run}: {problem}", toolchain.version));
            }
        }
        eprintln!(
            "{} with Go {}: 1 untraced and {runs} traced runs in {:.1?}",
            program.dir,
            toolchain.version,
            started.elapsed()
        );
    }
    assert!(
        problems.is_empty(),
        "{}:\n  {}",
        program.dir,
        problems.join("\n  ")
    );
}

fn root_stress_deep_recursion_growing_the_stack_inside_traced_calls() {
    let _serial = serial();
    stress(&RECURSION);
}

fn root_stress_tracebacks_taken_inside_traced_calls() {
    let _serial = serial();
    stress(&CALLERS);
}

fn root_stress_panics_through_and_recovered_inside_traced_calls() {
    let _serial = serial();
    stress(&PANICS);
}

fn root_stress_goroutines_parked_in_traced_calls_during_gc() {
    let _serial = serial();
    stress(&GC);
}

fn root_stress_goroutines_blocking_in_traced_calls() {
    let _serial = serial();
    stress(&BLOCKING);
}

fn root_stress_tight_loops_preempted_inside_traced_calls() {
    let _serial = serial();
    stress(&PREEMPT);
}

/// Entry-only mode counts entries as they happen, so a restart after stack growth that is not
/// recognised shows up directly as an extra entry.
fn root_entry_counts_equal_true_counts_when_the_stack_grows() {
    let _serial = serial();
    let mut problems = Vec::new();
    for toolchain in toolchains() {
        let binary = build(&RECURSION, &toolchain);
        for run in 1..=TRACED_RUNS {
            let (traced, Traced { calls, .. }) = run_traced(&binary, &RECURSION, &["--no-return"]);
            assert!(
                traced.status.success(),
                "{}{}",
                traced.stdout,
                traced.stderr
            );
            for (func, truth) in traced.call_counts() {
                let entered = calls
                    .iter()
                    .filter(|c| c["func"] == func.as_str() && c["outcome"] == "entered")
                    .count() as u64;
                if entered != truth {
                    problems.push(format!(
                        "Go {} run {run}: {func}: {entered} entries reported, {truth} calls made",
                        toolchain.version
                    ));
                }
            }
            if calls.iter().any(|c| c["outcome"] != "entered") {
                problems.push(format!(
                    "Go {} run {run}: outcomes other than \"entered\" with --no-return",
                    toolchain.version
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// 200 goroutines call main.Work, which sleeps 1–15 ms: most calls return on another OS thread
/// than they entered on. Every call must be paired with its own return (matched by goroutine and
/// unique arguments), on the threads the program saw, with a duration between the one Work
/// measured itself and the one its caller measured: both within 1 ms of gotrace's, as the issue
/// asks, unless the goroutine was descheduled between the probe and the program's clock read.
fn root_migration_every_call_paired_with_its_own_return() {
    let _serial = serial();
    /// Clock reads in the kernel and through the vDSO, both CLOCK_MONOTONIC.
    const SLACK_NS: i64 = 20_000;
    let mut problems = Vec::new();
    for toolchain in toolchains() {
        let binary = build(&MIGRATION, &toolchain);
        let reference = baseline(&binary, &MIGRATION);
        for run in 1..=TRACED_RUNS {
            let (traced, said) = run_traced(&binary, &MIGRATION, &[]);
            let mut run_problems = check_run(&reference, &traced, &said);
            let calls = &said.calls;
            let by_key: BTreeMap<String, &Value> = calls.iter().map(|c| (call_key(c), c)).collect();
            let (mut moved, mut worst_ns) = (0, 0i64);
            let mut thread_mismatches = Vec::new();
            for record in &traced.records {
                let Some(call) = by_key.get(&call_key(record)) else {
                    continue; // reported by compare_calls
                };
                if record["entry_tid"] != record["exit_tid"] {
                    moved += 1;
                }
                // The program reads its thread id right before and right after the call: the
                // probes fire on those same threads, unless the goroutine was preempted at a
                // function prologue in between (a GC stop-the-world preempts every goroutine)
                // and resumed on another thread — rare, and bounded below.
                if call["tid"] != record["entry_tid"] || call["return_tid"] != record["exit_tid"] {
                    thread_mismatches.push(format!(
                        "threads: program entered on {} and returned on {}, gotrace says {} and {}: {}",
                        record["entry_tid"],
                        record["exit_tid"],
                        call["tid"],
                        call["return_tid"],
                        brief(record)
                    ));
                }
                // Work's own clock reads run after the entry probe and before the RET probe; its
                // caller's run before and after both. A call paired with any other return falls
                // outside this window by milliseconds; clock reads may disagree by nanoseconds.
                let ours = call["duration_ns"].as_i64().unwrap_or(-1);
                let inside = record["duration_ns"].as_i64().expect("duration_ns");
                let caller = record["caller_ns"].as_i64().expect("caller_ns");
                worst_ns = worst_ns.max((ours - inside).abs().min((ours - caller).abs()));
                if ours + SLACK_NS < inside || ours > caller + SLACK_NS {
                    run_problems.push(format!(
                        "duration {ours} ns, outside [{inside}, {caller}] ns (measured inside Work, \
                         and around the call): {}",
                        brief(record)
                    ));
                }
            }
            eprintln!(
                "  Go {} run {run}: {moved} of {} calls returned on another thread; durations at \
                 most {worst_ns} ns from the program's nearest clock",
                toolchain.version,
                traced.records.len()
            );
            // Pairing is proven by the arguments and the durations above; a thread differing
            // from the program's read more often than preemption explains is gotrace's error.
            if thread_mismatches.len() * 100 > traced.records.len() {
                run_problems.extend(thread_mismatches);
            } else if !thread_mismatches.is_empty() {
                eprintln!(
                    "  Go {} run {run}: {} calls changed thread between the program's thread-id \
                     read and the probe: {}",
                    toolchain.version,
                    thread_mismatches.len(),
                    thread_mismatches[0]
                );
            }
            // Otherwise this test would not test migration at all.
            if moved * 10 < traced.records.len() {
                run_problems.push(format!("only {moved} calls changed thread"));
            }
            for problem in run_problems {
                problems.push(format!("Go {} run {run}: {problem}", toolchain.version));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}:\n  {}",
        MIGRATION.dir,
        problems.join("\n  ")
    );
}

/// One probed instruction: where it is in the process and what the file holds there.
struct ProbeSite {
    runtime_addr: u64,
    file_bytes: Vec<u8>,
}

fn probe_sites(pid: u32, function: &str) -> Vec<ProbeSite> {
    let out = run_gotrace(&["peek", "--json", "--pid", &pid.to_string(), function]);
    assert!(
        out.status.success(),
        "peek: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sites = peek_sites(&out.stdout);
    sites
        .iter()
        .map(|s| ProbeSite {
            runtime_addr: s["runtime_addr"].as_u64().expect("runtime_addr"),
            file_bytes: s["file"]["bytes"]
                .as_str()
                .expect("file.bytes")
                .split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
                .collect(),
        })
        .collect()
}

fn read_code(pid: u32, site: &ProbeSite) -> Vec<u8> {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("opening /proc/PID/mem");
    let mut bytes = vec![0; site.file_bytes.len()];
    mem.read_exact_at(&mut bytes, site.runtime_addr)
        .expect("reading the probed code");
    bytes
}

/// gotrace killed with SIGKILL while 200 goroutines are inside the traced function: the kernel
/// removes the probes with gotrace's file descriptors, the original instructions are back, and
/// the goroutines return through them.
fn sigkill_mid_run(toolchain: &Toolchain, env: &[(&str, &str)]) {
    let binary = build(&MIGRATION, toolchain);
    let mut target = Running(
        Command::new(&binary)
            .arg("-until-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the migration program"),
    );
    let pid = target.pid();
    let sites = probe_sites(pid, "main.Work");
    assert!(sites.len() >= 2, "an entry and a return site");

    let mut tracer =
        start_gotrace_with_env(&["--json", "--pid", &pid.to_string(), "main.Work"], env);
    for site in &sites {
        assert_eq!(
            read_code(pid, site)[0],
            0xcc,
            "no breakpoint at {:#x} while traced",
            site.runtime_addr
        );
    }
    // Wait for a traced call, so calls are flowing through the probes when gotrace dies.
    let mut first = String::new();
    BufReader::new(tracer.0.stdout.as_mut().expect("piped stdout"))
        .read_line(&mut first)
        .expect("reading gotrace's first call");
    assert!(first.contains("\"main.Work\""), "{first}");
    tracer.signal(libc::SIGKILL);
    tracer.0.wait().expect("reaping gotrace");

    for site in &sites {
        assert_eq!(
            read_code(pid, site),
            site.file_bytes,
            "the code at {:#x} is not the file's after gotrace was killed",
            site.runtime_addr
        );
    }
    // Let the program finish: every goroutine is inside Work now and returns through the code
    // gotrace had probed.
    drop(target.0.stdin.take());
    let child = std::mem::replace(
        &mut target.0,
        Command::new("true").spawn().expect("spawn true"),
    );
    let out = child.wait_with_output().expect("waiting for the program");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout == "OK\n",
        "the program did not finish correctly ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn root_sigkill_leaves_the_target_running_with_its_original_code() {
    let _serial = serial();
    for toolchain in toolchains() {
        eprintln!("Go {}: uprobe_multi", toolchain.version);
        sigkill_mid_run(&toolchain, &[]);
        eprintln!("Go {}: one perf-event uprobe per site", toolchain.version);
        sigkill_mid_run(&toolchain, &[("GOTRACE_NO_UPROBE_MULTI", "1")]);
    }
}

/// The matcher itself: it must fail on what the tests exist to catch.
fn compare_calls_accepts_only_correct_reports() {
    let call = |goid: u64, outcome: &str, results: &str| -> Value {
        serde_json::from_str(&format!(
            r#"{{"func":"main.F","goid":{goid},"args":{{"x":3}},"results":{results},"outcome":"{outcome}"}}"#
        ))
        .unwrap()
    };
    let panicked = [call(7, "panicked", "null")];
    assert!(compare_calls(&panicked, 0, &[call(7, "abandoned", "null")]).is_empty());
    assert!(compare_calls(&panicked, 0, &[call(7, "panicked", "null")]).is_empty());
    // Reported as returned: one call wrong, one call extra.
    assert_eq!(
        compare_calls(&panicked, 0, &[call(7, "returned", r#"{"~r0":0}"#)]).len(),
        2
    );
    assert_eq!(compare_calls(&panicked, 0, &[]).len(), 1);
    assert_eq!(
        compare_calls(&panicked, 0, &[call(8, "abandoned", "null")]).len(),
        2
    );
    let returned = [call(7, "returned", r#"{"~r0":6}"#)];
    assert!(compare_calls(&returned, 0, &returned).is_empty());
    assert_eq!(
        compare_calls(&returned, 0, &[call(7, "returned", r#"{"~r0":5}"#)]).len(),
        2
    );
}

gotrace_gobuild::test_main! {
    tests: [
        compare_calls_accepts_only_correct_reports,
    ],
    root: [
        root_stress_deep_recursion_growing_the_stack_inside_traced_calls,
        root_stress_tracebacks_taken_inside_traced_calls,
        root_stress_panics_through_and_recovered_inside_traced_calls,
        root_stress_goroutines_parked_in_traced_calls_during_gc,
        root_stress_goroutines_blocking_in_traced_calls,
        root_stress_tight_loops_preempted_inside_traced_calls,
        root_entry_counts_equal_true_counts_when_the_stack_grows,
        root_migration_every_call_paired_with_its_own_return,
        root_sigkill_leaves_the_target_running_with_its_original_code,
    ],
}
