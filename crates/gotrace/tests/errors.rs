//! Bad input gets a clear message and a non-zero exit, never a panic.

mod common;

use common::*;
use std::process::{Command, Output};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails unless gotrace exited non-zero, without panicking, saying every one of `needles`.
fn assert_fails_saying(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
}

fn missing_file() {
    let out = run_gotrace(&["trace", "/no/such/binary", "main.main"]);
    assert_fails_saying(&out, &["/no/such/binary: no such file"]);
}

fn not_an_elf_file() {
    let path = tempfile_path("not-elf");
    std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
    let out = run_gotrace(&["trace", path.to_str().unwrap(), "main.main"]);
    assert_fails_saying(&out, &["is not an ELF file", "hint:"]);
}

fn an_elf_that_is_not_go() {
    let out = run_gotrace(&["trace", "/bin/true", "main.main"]);
    assert_fails_saying(&out, &["/bin/true is not a Go binary"]);
}

fn no_such_function_suggests_close_names() {
    let service = fibonacci_service(&newest_toolchain());
    let out = run_gotrace(&["trace", service.to_str().unwrap(), "main.Fibonaci"]);
    assert_fails_saying(
        &out,
        &[
            "no function named \"main.Fibonaci\"",
            "did you mean main.Fibonacci",
        ],
    );
}

fn pid_that_does_not_exist() {
    let out = run_gotrace(&["trace", "--pid", "999999999", "main.main"]);
    assert_fails_saying(&out, &["no process with PID 999999999"]);
}

fn root_pid_that_exits_while_traced_ends_the_session_cleanly() {
    let (service, addr) = start_fibonacci_service(&newest_toolchain());
    let pid = service.pid();
    let tracer = trace_fibonacci(&service, &[]);
    http_get(addr, "/fibonacci?num=7");
    drop(service); // SIGKILL and reap
    let out = tracer.collect();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("process {pid} exited")), "{err}");
    assert!(err.contains("1 calls traced"), "{err}");
}

fn root_without_privileges_says_which_are_needed() {
    let service_bin = fibonacci_service(&newest_toolchain());
    // Drop to nobody with no capabilities at all.
    let nobody = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    let out = setpriv_gotrace(&nobody, &["trace", service_bin.to_str().unwrap()])
        .arg("main.Fibonacci")
        .output()
        .expect("setpriv (util-linux) runs");
    // This kernel has uprobe_multi links (its BTF says so: gotrace may not try them).
    assert_fails_saying(
        &out,
        &[
            "not enough privileges",
            "root",
            "CAP_BPF and CAP_PERFMON, enough on this kernel as it has uprobe_multi links",
        ],
    );
    assert!(!stderr(&out).contains("libbpf"), "{}", stderr(&out));
}

/// `gotrace ARGS` run by `setpriv SETPRIV`.
fn setpriv_gotrace(setpriv: &[&str], args: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command.args(setpriv).arg(GOTRACE).args(args);
    command
}

/// `setpriv` arguments keeping root's user but only CAP_BPF and CAP_PERFMON.
const ONLY_BPF_AND_PERFMON: [&str; 2] = ["--inh-caps=-all", "--bounding-set=-all,+bpf,+perfmon"];

/// CAP_BPF and CAP_PERFMON are enough for the uprobe_multi link gotrace attaches on this kernel.
fn cap_bpf_and_cap_perfmon_attach_uprobe_multi() {
    // The binary, not --pid: reading a root process's /proc/PID/exe takes the caps it has.
    let service_bin = fibonacci_service(&newest_toolchain());
    let ready = tempfile_path("ready");
    let binary = service_bin.to_str().unwrap();
    let tracer = setpriv_gotrace(&ONLY_BPF_AND_PERFMON, &["trace", "--count", "1", binary])
        .args(["main.Fibonacci", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) runs");
    let mut tracer = Running(tracer);
    wait_ready(&mut tracer, &ready, std::time::Duration::from_secs(60));
    let addr = free_addr();
    let _service = start_service(&service_bin, addr);
    http_get(addr, "/fibonacci?num=5");
    let out = tracer.collect();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("one uprobe_multi link"), "{err}");
    let calls = String::from_utf8_lossy(&out.stdout);
    assert_eq!(calls.matches("main.Fibonacci(").count(), 1, "{calls}");
}

/// Perf-event uprobes need CAP_SYS_ADMIN since the fix for CVE-2025-38466: with
/// GOTRACE_NO_UPROBE_MULTI, CAP_BPF and CAP_PERFMON are refused and the error says why.
fn perf_event_uprobes_without_cap_sys_admin_say_so() {
    let service_bin = fibonacci_service(&newest_toolchain());
    let out = setpriv_gotrace(
        &ONLY_BPF_AND_PERFMON,
        &["trace", service_bin.to_str().unwrap()],
    )
    .arg("main.Fibonacci")
    .env("GOTRACE_NO_UPROBE_MULTI", "1")
    .output()
    .expect("setpriv (util-linux) runs");
    assert_fails_saying(
        &out,
        &[
            "not enough privileges",
            "perf-event uprobes (GOTRACE_NO_UPROBE_MULTI is set)",
            "CAP_SYS_ADMIN",
            "CVE-2025-38466",
        ],
    );
}

fn kernel_without_uprobes_is_reported() {
    let service_bin = fibonacci_service(&newest_toolchain());
    let out = Command::new(GOTRACE)
        .env("GOTRACE_UPROBE_SYSFS_TYPE", "/nonexistent/uprobe/type")
        .args(["trace", service_bin.to_str().unwrap(), "main.Fibonacci"])
        .output()
        .unwrap();
    assert_fails_saying(&out, &["no uprobe support", "CONFIG_UPROBES"]);
}

/// Usage errors exit 2, whether clap finds them (a missing argument, an unknown flag) or
/// gotrace does (a binary and no function; a function name that is not UTF-8).
fn usage_errors_exit_2() {
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"main.\xff");
    let runs = [
        run_gotrace(&["trace"]),
        run_gotrace(&["trace", "--pid", "1"]),
        run_gotrace(&["trace", "--bogus", "/bin/true", "main.main"]),
        run_gotrace(&["trace", "/bin/true"]),
        run_gotrace(&["funcs"]),
        Command::new(GOTRACE)
            .args(["trace", "/bin/true"])
            .arg(not_utf8)
            .output()
            .expect("running gotrace"),
    ];
    for (i, out) in runs.iter().enumerate() {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(2), "run {i}: {err}");
        let says = if i == 5 { "is not UTF-8" } else { "sage" };
        assert!(err.contains(says), "run {i}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let err = stderr(&runs[3]);
    assert!(
        err.contains("gotrace trace <BINARY | --pid PID> <FUNCTION>..."),
        "{err}"
    );
}

gotrace_gobuild::test_main! {
    tests: [
        no_such_function_suggests_close_names,
        an_elf_that_is_not_go,
        not_an_elf_file,
        missing_file,
        pid_that_does_not_exist,
        kernel_without_uprobes_is_reported,
        usage_errors_exit_2,
    ],
    root: [
        root_pid_that_exits_while_traced_ends_the_session_cleanly,
        root_without_privileges_says_which_are_needed,
        cap_bpf_and_cap_perfmon_attach_uprobe_multi,
        perf_event_uprobes_without_cap_sys_admin_say_so,
    ],
}
