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

#[test]
fn missing_file() {
    let out = run_gotrace(&["trace", "/no/such/binary", "main.main"]);
    assert_fails_saying(&out, &["/no/such/binary: no such file"]);
}

#[test]
fn not_an_elf_file() {
    let path = tempfile_path("not-elf");
    std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
    let out = run_gotrace(&["trace", path.to_str().unwrap(), "main.main"]);
    assert_fails_saying(&out, &["is not an ELF file", "hint:"]);
}

#[test]
fn an_elf_that_is_not_go() {
    let out = run_gotrace(&["trace", "/bin/true", "main.main"]);
    assert_fails_saying(&out, &["/bin/true is not a Go binary"]);
}

#[test]
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

#[test]
fn pid_that_does_not_exist() {
    let out = run_gotrace(&["trace", "--pid", "999999999", "main.main"]);
    assert_fails_saying(&out, &["no process with PID 999999999"]);
}

#[test]
fn root_pid_that_exits_while_traced_ends_the_session_cleanly() {
    if !have_root() {
        return;
    }
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

#[test]
fn root_without_privileges_says_which_are_needed() {
    if !have_root() {
        return;
    }
    let service_bin = fibonacci_service(&newest_toolchain());
    // Drop to nobody with no capabilities at all.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(GOTRACE)
        .args(["trace", service_bin.to_str().unwrap(), "main.Fibonacci"])
        .output()
        .expect("setpriv (util-linux) runs");
    assert_fails_saying(
        &out,
        &["not enough privileges", "root", "CAP_BPF", "CAP_PERFMON"],
    );
}

#[test]
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
#[test]
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
