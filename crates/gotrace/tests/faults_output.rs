//! Output that cannot be written, and stopping whatever the output is doing: Ctrl-C detaches
//! every probe within a second (checked in the traced process's memory) with stdout a pipe
//! nobody reads and under an overload of `'runtime.*' --no-return`; a full device, a full
//! tmpfs, a closed stdout or stderr, a reader that goes away — a message and a non-zero exit
//! (or a clean stop for a closed stdout pipe), never a panic.

mod common;

use common::*;
use gotrace_binary::GoBinary;
use gotrace_gobuild::Flavour;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(1);

/// Where, in process `pid`, each function's probe sites are (entry and, with `returns`, every
/// `ret`), computed the way gotrace's `peek` does: file offset → the process's mapping of it.
fn probe_addresses(
    pid: u32,
    binary: &Path,
    functions: impl Fn(&str) -> bool,
    returns: bool,
) -> Vec<u64> {
    let bin = GoBinary::open(binary).unwrap();
    let mut out = Vec::new();
    for f in bin.functions().iter().filter(|f| functions(&f.name)) {
        let Ok(sites) = bin.probe_sites(f) else {
            continue;
        };
        let mut addrs = vec![sites.entry.addr];
        if returns {
            addrs.extend(sites.returns.iter().copied());
        }
        for addr in addrs {
            // The file's own byte there must not be int3 already, or the check proves nothing.
            if bin.bytes_at(addr, 1).unwrap()[0] == 0xcc {
                continue;
            }
            let offset = bin.file_offset(addr).unwrap();
            if let Some(at) = gotrace_kernel::proc::runtime_address(pid, binary, offset.0).unwrap()
            {
                out.push(at);
            }
        }
    }
    out
}

/// The addresses among `addrs` where process `pid` has a breakpoint (0xcc) now.
fn breakpoints(mem: &File, addrs: &[u64]) -> Vec<u64> {
    addrs
        .iter()
        .copied()
        .filter(|&a| {
            let mut b = [0u8];
            mem.read_exact_at(&mut b, a).is_ok() && b[0] == 0xcc
        })
        .collect()
}

/// Polls until none of `addrs` holds a breakpoint; how long that took.
fn time_until_detached(mem: &File, addrs: &[u64], since: Instant) -> Duration {
    while !breakpoints(mem, addrs).is_empty() {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "probes still attached after 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    since.elapsed()
}

/// Reads a child's pipe to the end on a thread of its own.
fn collect(pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut pipe = pipe;
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// Waits for a child to exit, at most `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "gotrace still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes waiting in a pipe.
fn pipe_fill(fd: i32) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int, `n`, which we own.
    unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    n as usize
}

/// `gotrace trace ARGS --ready-file F` with stdout a pipe the test never reads; returns once
/// attached, with stderr collected on a thread.
fn trace_into_unread_pipe(
    args: &[&str],
) -> (
    Running,
    std::process::ChildStdout,
    std::thread::JoinHandle<String>,
) {
    let ready = tempfile_path("ready");
    let mut child = Command::new(GOTRACE)
        .arg("trace")
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let mut tracer = Running(child);
    wait_ready(&mut tracer, &ready, Duration::from_secs(60));
    (tracer, stdout, stderr)
}

/// Waits until nobody-reads `stdout` is full: gotrace's writes block from then on. A full pipe
/// holds less than its 64 KiB when writes left the ends of its pages unused (seen: 60,424
/// bytes), so full is: more than half of it, and no longer growing while gotrace writes as
/// fast as it can.
fn wait_until_full(tracer: &mut Running, stdout: &std::process::ChildStdout) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0, Instant::now());
    loop {
        let fill = pipe_fill(stdout.as_raw_fd());
        if fill != last.0 {
            last = (fill, Instant::now());
        } else if fill >= 32 << 10 && last.1.elapsed() >= Duration::from_millis(250) {
            return;
        }
        if let Some(status) = tracer.0.try_wait().unwrap() {
            panic!("gotrace ended ({status}) before its output pipe filled up");
        }
        assert!(
            Instant::now() < deadline,
            "the output pipe never filled up ({fill} bytes)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn open_mem(pid: u32) -> File {
    File::open(format!("/proc/{pid}/mem")).unwrap()
}

fn root_ctrl_c_with_stdout_a_pipe_nobody_reads_detaches_within_a_second() {
    let (program, binary) = busy_program();
    let pid = program.pid();
    let (mut tracer, stdout, stderr) =
        trace_into_unread_pipe(&["--pid", &pid.to_string(), "main.Work"]);
    let addrs = probe_addresses(pid, &binary, |n| n == "main.Work", true);
    assert!(addrs.len() >= 2, "an entry and a return: {addrs:x?}");
    let mem = open_mem(pid);
    assert_eq!(
        breakpoints(&mem, &addrs),
        addrs,
        "every site probed while attached"
    );
    wait_until_full(&mut tracer, &stdout);

    let sent = Instant::now();
    tracer.signal(libc::SIGINT);
    let detached = time_until_detached(&mem, &addrs, sent);
    eprintln!("probes detached {detached:?} after Ctrl-C");
    assert!(
        detached < LIMIT,
        "probes detached {detached:?} after Ctrl-C"
    );
    // It then gives the output a moment, counts what was never written, and exits.
    let status = exit_within(&mut tracer.0, Duration::from_secs(10));
    let err = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("stopped while the output was backed up"),
        "calls never written are counted: {err}"
    );
    assert!(program.0.id() == pid && gotrace_kernel::proc::exists(pid));
    drop(stdout);
}

fn root_second_ctrl_c_exits_at_once() {
    let (program, binary) = busy_program();
    let pid = program.pid();
    let (mut tracer, stdout, stderr) =
        trace_into_unread_pipe(&["--pid", &pid.to_string(), "main.Work"]);
    let addrs = probe_addresses(pid, &binary, |n| n == "main.Work", true);
    let mem = open_mem(pid);
    wait_until_full(&mut tracer, &stdout);
    tracer.signal(libc::SIGINT);
    time_until_detached(&mem, &addrs, Instant::now());
    // Detached, waiting for the output to drain: the second Ctrl-C does not wait.
    let second = Instant::now();
    tracer.signal(libc::SIGINT);
    let status = exit_within(&mut tracer.0, Duration::from_secs(10));
    let took = second.elapsed();
    eprintln!("exited {took:?} after the second Ctrl-C");
    assert!(
        took < Duration::from_millis(500),
        "exited {took:?} after the second Ctrl-C"
    );
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGINT),
        "{}",
        stderr.join().unwrap()
    );
    assert!(breakpoints(&mem, &addrs).is_empty());
    drop(stdout);
}

fn root_ctrl_c_under_runtime_overload_detaches_within_a_second() {
    let (service, addr) = start_fibonacci_service(&newest_toolchain());
    let pid = service.pid();
    let binary = fibonacci_service(&newest_toolchain());
    // Requests keep the runtime busy: every one allocates, schedules and polls the network.
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop_load);
            std::thread::spawn(move || {
                let mut served = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                        use std::io::Write;
                        let _ = write!(s, "GET /fibonacci?num=20 HTTP/1.0\r\n\r\n");
                        let _ = s.read_to_end(&mut Vec::new());
                        served += 1;
                    }
                }
                served
            })
        })
        .collect();
    let out_path = tempfile_path("overload-out");
    let ready = tempfile_path("ready");
    let mut tracer = Command::new(GOTRACE)
        .args([
            "trace",
            "--no-return",
            "--pid",
            &pid.to_string(),
            "runtime.*",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .stdout(File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(tracer.stderr.take().unwrap());
    let mut tracer = Running(tracer);
    wait_ready(&mut tracer, &ready, Duration::from_secs(120));
    let candidates = probe_addresses(pid, &binary, |n| n.starts_with("runtime."), false);
    let mem = open_mem(pid);
    let probed = breakpoints(&mem, &candidates);
    assert!(
        probed.len() > 100,
        "{} runtime entry sites probed",
        probed.len()
    );
    // Events are flowing hard before the stop.
    let grown = Instant::now();
    while std::fs::metadata(&out_path).unwrap().len() < 4 << 20 {
        assert!(
            grown.elapsed() < Duration::from_secs(60),
            "too few events to call it overload"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let sent = Instant::now();
    tracer.signal(libc::SIGINT);
    let detached = time_until_detached(&mem, &probed, sent);
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    let served: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!("probes detached {detached:?} after Ctrl-C");
    assert!(
        detached < LIMIT,
        "probes detached {detached:?} after Ctrl-C"
    );
    let status = exit_within(&mut tracer.0, Duration::from_secs(10));
    let err = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(served > 0);
    // Stopping under overload drops what was queued and counts it: whatever the summary says
    // was traced reached the file, and nothing else did.
    assert_eq!(
        traced_count(&err),
        lines_in(&out_path),
        "the summary counts the lines written: {err}"
    );
    // The service is unharmed.
    let (code, body) = http_get(addr, "/fibonacci?num=10");
    assert_eq!((code, ret_of(&body)), (200, 55));
}

/// N in the summary's `gotrace: N calls traced`.
fn traced_count(err: &str) -> usize {
    err.split("gotrace: ")
        .find_map(|s| {
            s.split(" calls traced")
                .next()
                .filter(|_| s.contains(" calls traced"))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {err}"))
}

/// Lines in the file at `path`.
fn lines_in(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Runs `command` with the streams it was given, descriptor `close` closed (as `N>&-` does),
/// to completion: it must end by itself within a minute.
fn finish_within(command: &mut Command, close: Option<i32>) -> std::process::Output {
    if let Some(fd) = close {
        // SAFETY: close(2) is async-signal-safe; this runs in the child between fork and exec.
        unsafe {
            command.pre_exec(move || {
                libc::close(fd);
                Ok(())
            });
        }
    }
    let child = command.spawn().unwrap();
    let (done, result) = std::sync::mpsc::channel();
    let child_pid = child.id();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match result.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on our child, still running (the wait has not returned).
            unsafe { libc::kill(child_pid as i32, libc::SIGKILL) };
            panic!("{command:?} did not end by itself");
        }
    }
}

/// `gotrace trace --pid PID main.Work` with these streams, to completion.
fn trace_with_output(
    pid: u32,
    stdout: Stdio,
    stderr: Stdio,
    close: Option<i32>,
) -> std::process::Output {
    let mut command = Command::new(GOTRACE);
    command
        .args(["trace", "--pid", &pid.to_string(), "main.Work"])
        .stdout(stdout)
        .stderr(stderr);
    finish_within(&mut command, close)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Non-zero, not a panic, saying every one of `needles` in `said`.
fn assert_failed_saying(status: ExitStatus, said: &str, needles: &[&str]) {
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    for needle in needles {
        assert!(said.contains(needle), "missing {needle:?} in: {said}");
    }
}

fn assert_detached(pid: u32, binary: &Path) {
    let addrs = probe_addresses(pid, binary, |n| n == "main.Work", true);
    assert!(!addrs.is_empty());
    assert!(
        breakpoints(&open_mem(pid), &addrs).is_empty(),
        "probes left behind"
    );
    assert!(gotrace_kernel::proc::exists(pid), "the traced program died");
}

fn root_stdout_to_dev_full_is_an_error() {
    let (program, binary) = busy_program();
    let full = File::options().write(true).open("/dev/full").unwrap();
    let out = trace_with_output(program.pid(), full.into(), Stdio::piped(), None);
    let err = text(&out.stderr);
    assert_failed_saying(
        out.status,
        &err,
        &[
            "writing to stdout failed: No space left on device",
            "output failed",
        ],
    );
    assert!(err.contains("gotrace: 0 calls traced"), "{err}");
    assert_detached(program.pid(), &binary);
}

/// A tmpfs of 64 KiB, unmounted when dropped.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn mount() -> SmallTmpfs {
        let dir = tempfile_path("tmpfs");
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed");
        SmallTmpfs(dir)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn root_stdout_to_a_full_tmpfs_is_an_error_and_counts_only_what_was_written() {
    let (program, binary) = busy_program();
    let tmpfs = SmallTmpfs::mount();
    let path = tmpfs.0.join("calls.txt");
    let out = trace_with_output(
        program.pid(),
        File::create(&path).unwrap().into(),
        Stdio::piped(),
        None,
    );
    let err = text(&out.stderr);
    assert_failed_saying(
        out.status,
        &err,
        &[
            "writing to stdout failed: No space left on device",
            "output failed",
        ],
    );
    let lines = lines_in(&path);
    assert!(lines > 100, "{lines} lines fit in 64 KiB");
    assert_eq!(
        traced_count(&err),
        lines,
        "the summary counts the lines that reached the file: {err}"
    );
    assert_detached(program.pid(), &binary);
}

fn root_closed_stdout_is_refused_before_attaching() {
    let (program, binary) = busy_program();
    let out = trace_with_output(program.pid(), Stdio::inherit(), Stdio::piped(), Some(1));
    assert_failed_saying(out.status, &text(&out.stderr), &["stdout is closed"]);
    assert_detached(program.pid(), &binary);
}

fn root_closed_stderr_is_said_on_stdout() {
    let (program, binary) = busy_program();
    let out = trace_with_output(program.pid(), Stdio::piped(), Stdio::inherit(), Some(2));
    assert_failed_saying(out.status, &text(&out.stdout), &["stderr is closed"]);
    assert_detached(program.pid(), &binary);
}

fn root_stderr_to_dev_full_stops_tracing_and_says_so_on_stdout() {
    let (program, binary) = busy_program();
    let full = File::options().write(true).open("/dev/full").unwrap();
    let out = trace_with_output(program.pid(), Stdio::piped(), full.into(), None);
    assert_failed_saying(
        out.status,
        &text(&out.stdout),
        &[
            "writing to stderr failed: No space left on device",
            "calls traced",
        ],
    );
    assert_detached(program.pid(), &binary);
}

fn root_one_pipe_for_both_streams_closed_after_one_line_never_panics() {
    // `gotrace trace … 2>&1 | head -1`
    let (program, binary) = busy_program();
    let (read, write) = std::os::unix::net::UnixStream::pair().unwrap();
    let write_err = write.try_clone().unwrap();
    let mut child = Command::new(GOTRACE)
        .args(["trace", "--pid", &program.pid().to_string(), "main.Work"])
        .stdout(std::os::fd::OwnedFd::from(write))
        .stderr(std::os::fd::OwnedFd::from(write_err))
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(&read).read_line(&mut first).unwrap();
    assert!(first.starts_with("gotrace: "), "{first}");
    drop(read);
    let status = exit_within(&mut child, Duration::from_secs(30));
    assert!(matches!(status.code(), Some(0 | 1)), "{status}");
    assert_detached(program.pid(), &binary);
}

fn funcs_into_a_closed_pipe_stops_cleanly() {
    // `gotrace funcs BIN | head -1`: the listing is far bigger than a pipe holds.
    let binary = build_go(
        "fixtures/go/bench_loop",
        &newest_toolchain(),
        Flavour::Plain,
        "",
    );
    let mut child = Command::new(GOTRACE)
        .arg("funcs")
        .arg(&binary)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("0x"), "{first}");
    let status = exit_within(&mut child, Duration::from_secs(30));
    let err = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
}

fn funcs_output_faults_are_errors_not_panics() {
    let binary = build_go(
        "fixtures/go/bench_loop",
        &newest_toolchain(),
        Flavour::Plain,
        "",
    );
    let funcs = |stdout: Stdio, stderr: Stdio, close: Option<i32>| {
        let mut command = Command::new(GOTRACE);
        command
            .arg("funcs")
            .arg(&binary)
            .stdout(stdout)
            .stderr(stderr);
        finish_within(&mut command, close)
    };
    let full = || -> Stdio {
        File::options()
            .write(true)
            .open("/dev/full")
            .unwrap()
            .into()
    };
    let out = funcs(full(), Stdio::piped(), None);
    assert_failed_saying(
        out.status,
        &text(&out.stderr),
        &["writing to stdout failed: No space left on device"],
    );
    let out = funcs(Stdio::piped(), full(), None);
    assert_failed_saying(
        out.status,
        &text(&out.stdout),
        &["writing to stderr failed: No space left on device"],
    );
    let out = funcs(Stdio::piped(), Stdio::piped(), Some(1));
    assert_failed_saying(out.status, &text(&out.stderr), &["stdout is closed"]);
    let out = funcs(Stdio::piped(), Stdio::piped(), Some(2));
    assert_failed_saying(out.status, &text(&out.stdout), &["stderr is closed"]);
}

gotrace_gobuild::test_main! {
    tests: [
        funcs_into_a_closed_pipe_stops_cleanly,
        funcs_output_faults_are_errors_not_panics,
    ],
    root: [
        root_ctrl_c_with_stdout_a_pipe_nobody_reads_detaches_within_a_second,
        root_second_ctrl_c_exits_at_once,
        root_ctrl_c_under_runtime_overload_detaches_within_a_second,
        root_stdout_to_dev_full_is_an_error,
        root_stdout_to_a_full_tmpfs_is_an_error_and_counts_only_what_was_written,
        root_closed_stdout_is_refused_before_attaching,
        root_closed_stderr_is_said_on_stdout,
        root_stderr_to_dev_full_stops_tracing_and_says_so_on_stdout,
        root_one_pipe_for_both_streams_closed_after_one_line_never_panics,
    ],
}
