//! The traced file changes on disk while gotrace traces it (binary mode): written in place, the
//! probes go before any process runs the new bytes, and the program behaves exactly as
//! untraced; replaced or rebuilt at its path, gotrace plans the new file and traces on.

mod common;

use common::*;
use gotrace_gobuild::Flavour;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `prog TAG N` to completion.
fn run_prog(prog: &Path, tag: u32, n: u32) -> Output {
    output_within(
        Command::new(prog).arg(tag.to_string()).arg(n.to_string()),
        Duration::from_secs(30),
    )
}

/// The attach count gotrace wrote into its ready file (1 after the first attach).
fn attach_count(ready: &Path) -> u32 {
    std::fs::read_to_string(ready)
        .ok()
        .and_then(|s| s.lines().nth(1).and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0)
}

fn wait_for_attach(ready: &Path, count: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while attach_count(ready) < count {
        assert!(
            Instant::now() < deadline,
            "gotrace did not attach a {count}th time within 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn install(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copying the build");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn root_a_binary_written_in_place_or_rebuilt_is_never_harmed_and_traced_on() {
    let newest = newest_toolchain();
    // Two builds that differ only in main's code: main.Step sits at the same address in both,
    // but begins with another instruction. A probe left on the inode would replay the first
    // build's instruction in the second (a naive tracer crashes it with SIGSEGV).
    let first = build_go("fixtures/go/rebuild", &newest, Flavour::Plain, "-l");
    let second = build_go("fixtures/go/rebuild", &newest, Flavour::Plain, "-l -N");
    let step = |path: &Path| {
        let binary = gotrace_binary::GoBinary::open(path).expect("opening a build");
        let f = binary.function("main.Step").expect("main.Step").clone();
        let first_bytes = binary.bytes_at(f.entry, 4).expect("code").to_vec();
        (f.entry, first_bytes)
    };
    let (first_at, first_code) = step(&first);
    let (second_at, second_code) = step(&second);
    assert_eq!(
        first_at, second_at,
        "main.Step at the same address in both builds"
    );
    assert_ne!(
        first_code, second_code,
        "main.Step's code differs between the builds"
    );

    let dir = tempfile_path("rebuild-dir");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let prog = dir.join("server");
    install(&first, &prog);
    let ready = tempfile_path("ready");
    let gotrace = Running(
        Command::new(GOTRACE)
            .args(["trace", "--json", "--ready-file"])
            .arg(&ready)
            .arg(&prog)
            .arg("main.Step")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting gotrace"),
    );
    wait_for_attach(&ready, 1);

    // Traced as usual.
    let run1 = run_prog(&prog, 1, 5);
    assert!(run1.status.success());

    // Written in place (same inode), then run at once: the exec waits for the detach, and the
    // program runs the new bytes with no stale probe in them.
    install(&second, &prog);
    let run2 = run_prog(&prog, 2, 7);
    let untraced2 = run_prog(&second, 2, 7);
    assert_eq!(run2.status.code(), untraced2.status.code());
    assert_eq!(run2.stdout, untraced2.stdout, "output as untraced");
    assert_eq!(run2.stdout, b"tag 2: 7 calls, sum 14091\n");

    // The write finished: gotrace planned the new file and traces it.
    wait_for_attach(&ready, 2);
    let run3 = run_prog(&prog, 3, 3);
    assert_eq!(run3.stdout, b"tag 3: 3 calls, sum 9005\n");

    // Rebuilt at the path as a new inode (rename over it, as linkers and `mv` do).
    let fresh = dir.join("server.new");
    install(&first, &fresh);
    std::fs::rename(&fresh, &prog).expect("rename over");
    wait_for_attach(&ready, 3);
    let run4 = run_prog(&prog, 4, 4);
    assert_eq!(run4.stdout, b"tag 4: 4 calls, sum 16014\n");

    let out = gotrace.interrupt_and_collect();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gotrace failed: {stderr}");
    assert!(
        stderr.contains("written in place"),
        "the in-place write is reported: {stderr}"
    );
    assert!(
        stderr.contains("replaced"),
        "the new file is reported: {stderr}"
    );
    let calls = json_calls(&out.stdout);
    let tagged = |tag: i64| {
        calls
            .iter()
            .filter(|c| c["args"]["tag"].as_i64() == Some(tag))
            .collect::<Vec<_>>()
    };
    for (tag, n) in [(1, 5), (3, 3), (4, 4)] {
        let seen = tagged(tag);
        assert_eq!(seen.len(), n, "tag {tag}: {n} calls traced");
        for call in seen {
            let i = call["args"]["i"].as_i64().expect("i");
            assert_eq!(call["outcome"], "returned");
            assert_eq!(call["results"]["~r0"].as_i64(), Some(tag * 1000 + i * i));
        }
    }
    // Run 2 started while the probes were being replaced: whatever was traced of it is right.
    let run2_calls = tagged(2);
    assert!(run2_calls.len() <= 7);
    for call in run2_calls {
        let i = call["args"]["i"].as_i64().expect("i");
        assert_eq!(call["results"]["~r0"].as_i64(), Some(2000 + i * i));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        root_a_binary_written_in_place_or_rebuilt_is_never_harmed_and_traced_on,
    ],
}
