//! The seed article, end to end, on real binaries with real eBPF: the Fibonacci gin service is
//! traced through --pid and through its binary, and every traced call must carry the argument
//! the request asked for and the result the service answered.

mod common;

use common::*;
use gotrace_gobuild::Toolchain;
use serde_json::Value;

const VALID: [i64; 4] = [1, 10, 20, 50];
const INVALID: [&str; 4] = ["abc", "-3", "0", "1.5"];

/// Sends the valid and invalid requests; returns (n, ret) for the valid ones, as answered.
fn send_requests(addr: std::net::SocketAddr) -> Vec<(i64, i64)> {
    let mut answered = Vec::new();
    for n in VALID {
        let (status, body) = http_get(addr, &format!("/fibonacci?num={n}"));
        assert_eq!(status, 200, "num={n}: {body}");
        answered.push((n, ret_of(&body)));
    }
    for bad in INVALID {
        let (status, body) = http_get(addr, &format!("/fibonacci?num={bad}"));
        assert_eq!(status, 400, "num={bad}: {body}");
        assert!(body.contains("greater than zero"), "{body}");
    }
    answered
}

/// Every call is one of the answered requests, in order, with a plausible pid/tid/goid/duration.
fn assert_calls_match(calls: &[Value], answered: &[(i64, i64)], pid: u32) {
    let seen: Vec<(i64, i64)> = calls
        .iter()
        .map(|c| {
            assert_eq!(c["func"], "main.Fibonacci");
            assert_eq!(c["pid"], pid, "{c}");
            assert!(c["tid"].as_u64().unwrap() > 0, "{c}");
            assert!(c["goid"].as_u64().unwrap() > 0, "{c}");
            assert!(c["duration_ns"].as_u64().unwrap() > 0, "{c}");
            assert_eq!(c["types"]["n"], "int", "{c}");
            (
                c["args"]["n"].as_i64().unwrap(),
                c["results"]["~r0"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, answered, "traced calls vs HTTP answers");
}

fn trace_by_pid(toolchain: &Toolchain) {
    let (service, addr) = start_fibonacci_service(toolchain);
    let pid = service.pid();
    let tracer = trace_fibonacci(&service, &["--json"]);
    let answered = send_requests(addr);
    let out = tracer.interrupt_and_collect();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gotrace failed: {stderr}");
    assert_calls_match(&json_calls(&out.stdout), &answered, pid);
    assert!(stderr.contains("4 calls traced, 0 calls lost"), "{stderr}");
}

/// On the oldest and the newest toolchain: gin costs a minute of compiling per toolchain on a
/// cold CI machine, and every Go release's values are compared call by call in values.rs.
fn root_seed_service_traced_by_pid_on_the_oldest_and_newest_toolchain() {
    let _serial = serial();
    for toolchain in ends() {
        eprintln!("Go {}", toolchain.version);
        trace_by_pid(&toolchain);
    }
}

fn root_seed_service_traced_by_binary_including_processes_started_later() {
    let _serial = serial();
    let service_bin = fibonacci_service(&newest_toolchain());
    let before_addr = free_addr();
    let before = start_service(&service_bin, before_addr);
    let tracer = start_gotrace(&["--json", service_bin.to_str().unwrap(), "main.Fibonacci"]);
    let after_addr = free_addr();
    let after = start_service(&service_bin, after_addr);

    let answered_after = send_requests(after_addr);
    let answered_before = send_requests(before_addr);
    let out = tracer.interrupt_and_collect();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = json_calls(&out.stdout);
    let of = |pid: u32| {
        calls
            .iter()
            .filter(|c| c["pid"] == pid)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_calls_match(&of(after.pid()), &answered_after, after.pid());
    assert_calls_match(&of(before.pid()), &answered_before, before.pid());
    // Other tests may run the same build meanwhile: binary mode traces them too, by design.
    assert_eq!(
        of(after.pid()).len() + of(before.pid()).len(),
        2 * VALID.len()
    );
}

fn root_text_output_reads_like_the_documented_line() {
    let _serial = serial();
    let (service, addr) = start_fibonacci_service(&newest_toolchain());
    let pid = service.pid();
    let tracer = trace_fibonacci(&service, &[]);
    http_get(addr, "/fibonacci?num=10");
    let out = tracer.interrupt_and_collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().unwrap_or_else(|| {
        panic!(
            "no output; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // 12:01:02.345678 pid=4242 goid=37 main.Fibonacci(n=10) = 55  1.3µs
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0].len(), "12:01:02.345678".len(), "{line}");
    assert_eq!(fields[1], format!("pid={pid}"), "{line}");
    assert!(fields[2].starts_with("goid="), "{line}");
    assert_eq!(&fields[3..6], ["main.Fibonacci(n=10)", "=", "55"], "{line}");
    assert!(fields[6].ends_with('s'), "{line}");
}

fn root_count_stops_after_n_calls() {
    let _serial = serial();
    let (service, addr) = start_fibonacci_service(&newest_toolchain());
    let tracer = trace_fibonacci(&service, &["--json", "--count", "2"]);
    for n in [3, 4, 5] {
        http_get(addr, &format!("/fibonacci?num={n}"));
    }
    let out = tracer.collect();
    assert!(out.status.success());
    let calls = json_calls(&out.stdout);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["args"]["n"], 3);
    assert_eq!(calls[1]["args"]["n"], 4);
}

fn root_closed_output_ends_the_session() {
    let _serial = serial();
    let (service, addr) = start_fibonacci_service(&newest_toolchain());
    let mut tracer = trace_fibonacci(&service, &[]);
    http_get(addr, "/fibonacci?num=3");
    let mut first = String::new();
    let stdout = tracer.0.stdout.take().expect("piped stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
    assert!(first.contains("main.Fibonacci(n=3) = 2"), "{first}");
    // The reader is gone (as with `| head -1`): the next batch of output fails and gotrace
    // detaches and exits instead of tracing into the void.
    http_get(addr, "/fibonacci?num=4");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = tracer.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gotrace kept running with its output closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        root_seed_service_traced_by_pid_on_the_oldest_and_newest_toolchain,
        root_seed_service_traced_by_binary_including_processes_started_later,
        root_text_output_reads_like_the_documented_line,
        root_count_stops_after_n_calls,
        root_closed_output_ends_the_session,
    ],
}
