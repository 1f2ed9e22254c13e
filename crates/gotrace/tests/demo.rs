//! The README's first command: `gotrace demo` builds, traces, explains and cleans up.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn root_demo_traces_each_valid_request_and_peeks() {
    let build_dir = gotrace_gobuild::workspace_target_dir().join("demo-test");
    // The fixtures' Go cache: gin and the standard library are compiled once for all tests.
    let go_cache = gotrace_gobuild::fixtures_dir().join("go-cache");
    let out = output_within(
        Command::new(GOTRACE)
            .args(["demo", "--build-dir", build_dir.to_str().unwrap()])
            .env("GOCACHE", &go_cache),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (n, ret) in [(1, 1), (10, 55), (20, 6765), (50, 12586269025i64)] {
        assert!(
            stdout.contains(&format!("HTTP 200 {{\"ret\":{ret}}}")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("main.Fibonacci(n={n}) = {ret} ")),
            "{stdout}"
        );
    }
    assert_eq!(
        stdout.matches("the handler rejected the input").count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("4 calls traced, 0 calls lost"), "{stdout}");
    assert!(stdout.contains("int3"), "{stdout}");
    assert!(stdout.contains("service exited"), "{stdout}");
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        root_demo_traces_each_valid_request_and_peeks,
    ],
}
