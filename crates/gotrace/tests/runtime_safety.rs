//! Never probe what cannot bear it: the runtime's assembly (write barriers, stack switches,
//! signal handlers), and instructions the kernel refuses or would emulate wrongly. Tracing
//! `'runtime.*'` and `'*'` on a GC-heavy program, built by every toolchain, must leave the
//! program's exit code and output exactly as they are untraced; a glob over a function whose
//! first instruction is `lock`-prefixed must attach the rest on one link, name the refused one,
//! and detach within a second of Ctrl-C.

mod common;

use common::*;
use gotrace_gobuild::{Flavour, Toolchain};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs of the traced program per pattern and mode.
const RUNS: usize = 5;

fn gc_busy(toolchain: &Toolchain) -> std::path::PathBuf {
    build_go("fixtures/go/gc_busy", toolchain, Flavour::Plain, "-l")
}

fn run_program(binary: &Path) -> Output {
    output_within(&mut Command::new(binary), Duration::from_secs(120))
}

/// `gotrace funcs --json BINARY PATTERN`'s functions.
fn listed(binary: &Path, pattern: &str) -> Vec<serde_json::Value> {
    let out = run_gotrace(&["funcs", "--json", &binary.display().to_string(), pattern]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = funcs_listing(&out.stdout);
    listing["functions"].as_array().unwrap().clone()
}

/// Starts `gotrace trace ARGS` writing its calls to `out`, and returns once attached.
fn start_tracing_to_file(args: &[&str], out: &Path) -> (Running, Duration) {
    let ready = tempfile_path("ready");
    let started = Instant::now();
    let child = Command::new(GOTRACE)
        .arg("trace")
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gotrace");
    let mut running = Running(child);
    while !ready.exists() {
        if let Some(status) = running.0.try_wait().unwrap() {
            let err = running.collect().stderr;
            panic!(
                "gotrace exited before attaching ({status}): {}",
                String::from_utf8_lossy(&err)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not attached in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (running, started.elapsed())
}

fn root_runtime_and_everything_traced_leave_a_gc_heavy_program_unchanged() {
    let _serial = serial();
    for toolchain in toolchains() {
        let binary = gc_busy(&toolchain);
        let path = binary.display().to_string();
        let expected = run_program(&binary);
        assert!(
            expected.status.success(),
            "go{}: untraced run failed",
            toolchain.version
        );

        // The write barriers are assembly on every release: refused, with the reason.
        let barriers = listed(&binary, "runtime.gcWriteBarrier*");
        assert!(
            !barriers.is_empty(),
            "go{}: no write barrier",
            toolchain.version
        );
        for f in &barriers {
            let why = f["refused"]
                .as_str()
                .unwrap_or_else(|| panic!("go{}: {} not refused", toolchain.version, f["name"]));
            assert!(why.contains("assembly"), "{why}");
        }
        if toolchain.version == "1.19" {
            // Its first instruction, `xchg rax, r8`, is one the kernel emulates as a nop.
            assert!(barriers
                .iter()
                .any(|f| f["name"] == "runtime.gcWriteBarrierR8"));
        }

        for (pattern, flags) in [
            ("runtime.*", &[][..]),
            ("runtime.*", &["--no-return"][..]),
            ("*", &[][..]),
            ("*", &["--no-return"][..]),
        ] {
            let what = format!("go{} {pattern} {flags:?}", toolchain.version);
            let calls = tempfile_path("calls");
            let mut args = flags.to_vec();
            args.extend([path.as_str(), pattern]);
            let (tracer, _) = start_tracing_to_file(&args, &calls);
            for run in 0..RUNS {
                let traced = run_program(&binary);
                assert_eq!(
                    traced.status.code(),
                    expected.status.code(),
                    "{what} run {run}"
                );
                assert_eq!(
                    String::from_utf8_lossy(&traced.stdout),
                    String::from_utf8_lossy(&expected.stdout),
                    "{what} run {run}: stdout differs"
                );
                assert_eq!(
                    String::from_utf8_lossy(&traced.stderr),
                    String::from_utf8_lossy(&expected.stderr),
                    "{what} run {run}: stderr differs"
                );
            }
            let out = tracer.interrupt_and_collect();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{what}: {stderr}");
            let refused = stderr
                .lines()
                .find(|l| l.starts_with("gotrace: not tracing "))
                .unwrap_or_else(|| panic!("{what}: no refusal line in {stderr}"));
            let count: usize = refused["gotrace: not tracing ".len()..]
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{what}: {refused}"));
            assert!(
                count >= 8 && refused.contains(" assembly"),
                "{what}: {refused}"
            );
            let written = std::fs::read_to_string(&calls).unwrap();
            let runtime_calls = written.lines().filter(|l| l.contains(" runtime.")).count();
            assert!(runtime_calls > 0, "{what}: no runtime call reported");
            eprintln!("{what}: {count} functions refused, {runtime_calls} runtime calls reported");
            let _ = std::fs::remove_file(&calls);
        }
    }
}

/// The first instruction of `function` in objdump's words.
fn first_instruction(binary: &Path, function: &str) -> String {
    let out = Command::new("objdump")
        .arg("-d")
        .arg(binary)
        .output()
        .expect("running objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let header = format!("<{function}>:");
    let mut lines = text.lines().skip_while(|l| !l.ends_with(&header));
    lines
        .next()
        .unwrap_or_else(|| panic!("{function} not in objdump's output"));
    lines.next().unwrap_or_default().to_owned()
}

fn byte_at(pid: u32, addr: u64) -> u8 {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = [0u8];
    mem.read_exact_at(&mut b, addr).unwrap();
    b[0]
}

fn root_lock_prefixed_first_instruction_is_named_and_the_rest_attach_on_one_link() {
    let _serial = serial();
    for toolchain in toolchains() {
        let v = &toolchain.version;
        let binary = build_go("fixtures/go/lock_prefix", &toolchain, Flavour::Plain, "-l");
        let first = first_instruction(&binary, "main.(*Int).Add");
        assert!(
            first.contains("lock "),
            "go{v}: main.(*Int).Add starts with {first}"
        );

        let work = listed(&binary, "main.Work");
        let entry = work[0]["sites"]["entry"]["addr"].as_str().unwrap();
        let entry = u64::from_str_radix(entry.trim_start_matches("0x"), 16).unwrap();

        let mut program = Command::new(&binary)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the program");
        let mut line = String::new();
        BufReader::new(program.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "running");
        let program = Running(program);
        let pid = program.pid();
        let original = byte_at(pid, entry);

        let started = Instant::now();
        let tracer = start_gotrace(&["--pid", &pid.to_string(), "main.*"]);
        let ready_in = started.elapsed();
        assert!(
            ready_in < Duration::from_secs(10),
            "go{v}: ready after {ready_in:?}"
        );
        assert_eq!(byte_at(pid, entry), 0xcc, "go{v}: main.Work not probed");
        std::thread::sleep(Duration::from_millis(300));

        tracer.signal(libc::SIGINT);
        let stopping = Instant::now();
        while byte_at(pid, entry) != original {
            assert!(
                stopping.elapsed() < Duration::from_secs(1),
                "go{v}: still probed 1 s after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let detached_in = stopping.elapsed();
        let out = tracer.collect();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "go{v}: {stderr}");
        assert!(
            stderr.contains("not tracing main.(*Int).Add: its entry site")
                && stderr.contains("lock"),
            "go{v}: the refused function is not named: {stderr}"
        );
        assert!(stderr.contains("one uprobe_multi link"), "go{v}: {stderr}");
        let work_calls = stdout.lines().filter(|l| l.contains("main.Work(")).count();
        assert!(
            work_calls >= 10,
            "go{v}: {work_calls} main.Work calls: {stdout}"
        );
        eprintln!(
            "go{v}: ready in {ready_in:?}, {work_calls} main.Work calls, detached {detached_in:?} after Ctrl-C"
        );
    }
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        root_runtime_and_everything_traced_leave_a_gc_heavy_program_unchanged,
        root_lock_prefixed_first_instruction_is_named_and_the_rest_attach_on_one_link,
    ],
}
