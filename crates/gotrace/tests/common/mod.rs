//! Shared by the end-to-end tests: building Go programs, running them and gotrace, talking HTTP.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

use gotrace_gobuild::{Flavour, Toolchain};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const GOTRACE: &str = env!("CARGO_BIN_EXE_gotrace");

pub use gotrace_gobuild::testing::toolchains;

pub fn newest_toolchain() -> Toolchain {
    toolchains().pop().expect("checked non-empty")
}

/// The oldest and the newest installed toolchain (Go 1.19 and 1.27 here), the two ends of the
/// runtime's layouts: for scenarios too slow to run on every toolchain.
pub fn ends() -> Vec<Toolchain> {
    let all = toolchains();
    let mut ends = vec![all[0].clone()];
    if all.len() > 1 {
        ends.push(all[all.len() - 1].clone());
    }
    ends
}

/// Held by a test while it runs a traced program, so that one runs at a time: the timing
/// checks (durations within 1 ms, preemption) and the 2-CPU CI machine do not tolerate several.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds a program under the repository (e.g. `examples/fibonacci`) with `-gcflags=<gcflags>`.
pub fn build_go(
    relative_dir: &str,
    toolchain: &Toolchain,
    flavour: Flavour,
    gcflags: &str,
) -> PathBuf {
    gotrace_gobuild::testing::build_fixture(relative_dir, gcflags, toolchain, flavour, None)
}

/// The seed's Fibonacci service, built as the article builds it.
pub fn fibonacci_service(toolchain: &Toolchain) -> PathBuf {
    build_go("examples/fibonacci", toolchain, Flavour::Plain, "-l")
}

/// The Fibonacci service built by `toolchain`, started on a free port and listening.
pub fn start_fibonacci_service(toolchain: &Toolchain) -> (Running, SocketAddr) {
    let addr = free_addr();
    (start_service(&fibonacci_service(toolchain), addr), addr)
}

/// `gotrace trace FLAGS --pid PID main.Fibonacci` on a running service, once attached.
pub fn trace_fibonacci(service: &Running, flags: &[&str]) -> Running {
    let pid = service.pid().to_string();
    let mut args = flags.to_vec();
    args.extend(["--pid", &pid, "main.Fibonacci"]);
    start_gotrace(&args)
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing behind.
pub struct Running(pub Child);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child we have not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, signal) };
    }

    /// Sends SIGINT and waits for the process to finish, returning its output.
    pub fn interrupt_and_collect(self) -> Output {
        self.signal(libc::SIGINT);
        self.collect()
    }

    /// Waits for the process to finish by itself, returning its output.
    pub fn collect(mut self) -> Output {
        let child = std::mem::replace(
            &mut self.0,
            Command::new("true").spawn().expect("spawn true"),
        );
        child.wait_with_output().expect("waiting for child")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on a loopback address of this call's own (127.x.y.z, from the PID and a
/// counter): the port is free only until it is closed, and two services that raced for one
/// port on 127.0.0.1 let a test connect to the other's and then trace one that had exited.
pub fn free_addr() -> SocketAddr {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    let ip = std::net::Ipv4Addr::new(127, (pid >> 8) as u8, pid as u8, 1 + (n % 250) as u8);
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

pub fn start_service(binary: &Path, addr: SocketAddr) -> Running {
    let child = Command::new(binary)
        .arg("-addr")
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the service");
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "service did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running
}

/// Starts `gotrace trace ARGS --ready-file F` and returns once every probe is attached.
pub fn start_gotrace(args: &[&str]) -> Running {
    start_gotrace_with_env(args, &[])
}

pub fn tempfile_path(what: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = gotrace_gobuild::workspace_target_dir().join("test-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// GET a path: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `ret` field of the service's JSON answer.
pub fn ret_of(body: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    v["ret"]
        .as_i64()
        .unwrap_or_else(|| panic!("no ret in {body}"))
}

/// Parses JSON lines: gotrace's calls (its other records — attached, warning, note, lost,
/// summary — left out), or a test program's objects.
pub fn json_calls(stdout: &[u8]) -> Vec<serde_json::Value> {
    const RECORDS: [&str; 5] = ["attached", "warning", "note", "lost", "summary"];
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .filter(|v: &serde_json::Value| !v["type"].as_str().is_some_and(|t| RECORDS.contains(&t)))
        .collect()
}

/// `bench_loop -func work`, calling `main.Work` in a loop for two minutes (killed on drop).
pub fn busy_program() -> (Running, PathBuf) {
    let binary = build_go(
        "fixtures/go/bench_loop",
        &newest_toolchain(),
        Flavour::Plain,
        "",
    );
    let child = Command::new(&binary)
        .args(["-func", "work", "-for", "120s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting bench_loop");
    (Running(child), binary)
}

/// Every line of `stdout` as JSON (a line that is not JSON fails the test).
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// `gotrace funcs --json`'s lines gathered as `{"binary": …, "functions": […]}`, without their
/// `type`: a `binary` object first, then one `function` object per function.
pub fn funcs_listing(stdout: &[u8]) -> serde_json::Value {
    let mut lines = json_lines(stdout).into_iter();
    let untyped = |mut v: serde_json::Value, tag: &str| {
        assert_eq!(v["type"], tag, "{v}");
        v.as_object_mut().expect("an object").remove("type");
        v
    };
    let binary = untyped(lines.next().expect("a binary line"), "binary");
    let functions: Vec<serde_json::Value> = lines.map(|f| untyped(f, "function")).collect();
    serde_json::json!({ "binary": binary, "functions": functions })
}

/// `gotrace peek --json`'s lines: one `site` object per probe site.
pub fn peek_sites(stdout: &[u8]) -> Vec<serde_json::Value> {
    let sites = json_lines(stdout);
    for site in &sites {
        assert_eq!(site["type"], "site", "{site}");
    }
    sites
}

pub fn run_gotrace(args: &[&str]) -> Output {
    Command::new(GOTRACE)
        .args(args)
        .output()
        .expect("running gotrace")
}

/// `gotrace ARGS` is a usage error (exit status 2) whose message contains `message`.
pub fn assert_usage_error(args: &[&str], message: &str) {
    let out = run_gotrace(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}

/// `start_gotrace` with extra environment variables (e.g. `GOTRACE_NO_UPROBE_MULTI=1`).
pub fn start_gotrace_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    start_subcommand("trace", args, env)
}

/// `gotrace COMMAND ARGS` (`trace` or `stats`), returned once every probe is attached.
pub fn start_subcommand(command: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
    let ready = tempfile_path("ready");
    let child = Command::new(GOTRACE)
        .arg(command)
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gotrace");
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if let Some(status) = running.0.try_wait().unwrap() {
            let mut err = String::new();
            let mut stderr = running.0.stderr.take().unwrap();
            stderr.read_to_string(&mut err).unwrap();
            panic!("gotrace exited before attaching ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "gotrace did not attach within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    running
}

/// Runs a command to completion, killing it (and failing) after `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let pid = child.id() as i32;
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match result.recv_timeout(limit) {
        Ok(output) => output.expect("waiting for the command"),
        Err(_) => {
            // SAFETY: kill(2) on our child, which the waiting thread has not reaped (it is
            // still running: the wait has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{command:?} did not finish within {limit:?}");
        }
    }
}

/// One traced run of a program: gotrace's calls of that process, in order, its stderr, and
/// what the program wrote to stdout.
pub struct TracedRun {
    pub calls: Vec<serde_json::Value>,
    pub stderr: String,
    pub pid: u32,
    pub program_stdout: Vec<u8>,
}

/// One run of `binary` with `program_args`, traced from before it starts (`gotrace trace --json
/// FLAGS BINARY FUNCTIONS`, with `env`). The program and gotrace must succeed.
pub fn trace_one_run(
    binary: &Path,
    flags: &[&str],
    functions: &[&str],
    program_args: &[&str],
    env: &[(&str, &str)],
) -> TracedRun {
    let mut args = vec!["--json"];
    args.extend_from_slice(flags);
    args.push(binary.to_str().expect("a UTF-8 path"));
    args.extend_from_slice(functions);
    let tracer = Tracer::start(&args, env);
    let program = Command::new(binary)
        .args(program_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the program");
    let pid = program.id();
    let out = program.wait_with_output().expect("running the program");
    assert!(
        out.status.success(),
        "{} failed while traced ({}): {}",
        binary.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (stdout, stderr) = tracer.stop();
    let calls = json_calls(&stdout)
        .into_iter()
        .filter(|c| c["pid"] == pid)
        .collect();
    TracedRun {
        calls,
        stderr,
        pid,
        program_stdout: out.stdout,
    }
}

/// gotrace, with its stdout and stderr drained while it runs: a traced program can produce
/// megabytes of calls, and a full pipe would stall gotrace and overflow its ring buffer.
pub struct Tracer {
    running: Running,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        from.read_to_end(&mut all)
            .expect("reading gotrace's output");
        all
    })
}

impl Tracer {
    /// `gotrace trace ARGS`, once every probe is attached.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Tracer {
        Tracer::start_command("trace", args, env)
    }

    /// `gotrace COMMAND ARGS` (`trace` or `stats`), once every probe is attached.
    pub fn start_command(command: &str, args: &[&str], env: &[(&str, &str)]) -> Tracer {
        let mut running = start_subcommand(command, args, env);
        let stdout = drain(running.0.stdout.take().expect("piped stdout"));
        let stderr = drain(running.0.stderr.take().expect("piped stderr"));
        Tracer {
            running,
            stdout,
            stderr,
        }
    }

    /// Ctrl-C: gotrace drains its ring buffer, detaches and prints its summary. Returns its
    /// stdout and stderr once it has exited successfully.
    pub fn stop(self) -> (Vec<u8>, String) {
        self.finish(true)
    }

    /// Its stdout and stderr once it has exited successfully: after a Ctrl-C with `interrupt`,
    /// else once it ends by itself (`--duration`, `--count`, the traced process exiting).
    pub fn finish(mut self, interrupt: bool) -> (Vec<u8>, String) {
        if interrupt {
            self.running.signal(libc::SIGINT);
        }
        let status = self.running.0.wait().expect("waiting for gotrace");
        let stdout = self.stdout.join().expect("stdout reader");
        let stderr =
            String::from_utf8_lossy(&self.stderr.join().expect("stderr reader")).into_owned();
        assert!(status.success(), "gotrace failed ({status}): {stderr}");
        (stdout, stderr)
    }
}

/// Waits for gotrace's ready file: fails if gotrace exits first or does not attach in `limit`.
pub fn wait_ready(tracer: &mut Running, ready: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !ready.exists() {
        if let Some(status) = tracer.0.try_wait().unwrap() {
            panic!("gotrace exited before attaching ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "gotrace did not attach within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `binary` to its end (within `limit`) while `gotrace stats ARGS` counts: the program's
/// stdout as one JSON object, gotrace's JSON lines, its stderr.
pub fn stats_while_running(
    binary: &Path,
    args: &[&str],
    limit: Duration,
) -> (serde_json::Value, Vec<serde_json::Value>, String) {
    let stats = Tracer::start_command("stats", args, &[]);
    let output = output_within(Command::new(binary).stdin(Stdio::null()), limit);
    assert!(output.status.success(), "{output:?}");
    let record = serde_json::from_slice(&output.stdout).expect("the program's record");
    let (stdout, stderr) = stats.finish(true);
    (record, json_lines(&stdout), stderr)
}
