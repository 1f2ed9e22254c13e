//! Inputs that are not what they seem: a device, a FIFO, a directory, a socket or a 3 GiB sparse
//! file as the binary is refused in under a second without reading it (< 100 MB RSS); `--pid`
//! of a thread traces its process; a zombie is named; a binary path that is not UTF-8 works.

mod common;

use common::*;
use gotrace_gobuild::Flavour;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished gotrace did: exit code, stderr, wall time, peak RSS.
struct Measured {
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
    max_rss_kib: i64,
}

/// Runs gotrace with `args`, measuring its peak RSS through wait4's rusage.
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also reports its peak RSS"
)]
fn measured(args: &[&std::ffi::OsStr]) -> Measured {
    let started = Instant::now();
    let mut child = Command::new(GOTRACE)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let pid = child.id() as i32;
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        // SAFETY: kill(2); if the child was reaped already the PID may be reused within
        // 20 s only in theory, and the test has failed by then anyway.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our child, writing into locals we own.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    let elapsed = started.elapsed();
    drop(watchdog);
    Measured {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stderr: reader.join().unwrap(),
        elapsed,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// `trace PATH main.main` and `funcs PATH` are refused, fast and small, saying `what`.
fn assert_refused(path: &std::path::Path, what: &str) {
    for args in [
        vec!["trace".as_ref(), path.as_os_str(), "main.main".as_ref()],
        vec!["funcs".as_ref(), path.as_os_str()],
    ] {
        let m = measured(&args);
        assert_eq!(m.code, Some(1), "{args:?}: {}", m.stderr);
        assert!(
            m.stderr.contains(what),
            "{args:?}: missing {what:?} in {}",
            m.stderr
        );
        assert!(!m.stderr.contains("panicked"), "{}", m.stderr);
        assert!(
            m.elapsed < Duration::from_secs(1),
            "{args:?} took {:?}",
            m.elapsed
        );
        assert!(
            m.max_rss_kib < 100 << 10,
            "{args:?} peaked at {} KiB",
            m.max_rss_kib
        );
    }
}

fn dev_zero_is_refused_without_reading_it() {
    assert_refused("/dev/zero".as_ref(), "/dev/zero is a character device");
}

fn a_fifo_is_refused_without_opening_it() {
    let path = tempfile_path("fifo");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_refused(&path, "is a FIFO");
    let _ = std::fs::remove_file(&path);
}

fn a_directory_is_refused() {
    let path = tempfile_path("dir");
    std::fs::create_dir_all(&path).unwrap();
    assert_refused(&path, "is a directory");
}

fn a_socket_is_refused() {
    let path = tempfile_path("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    assert_refused(&path, "is a socket");
    let _ = std::fs::remove_file(&path);
}

fn a_3_gib_sparse_file_is_not_read_whole() {
    let path = tempfile_path("sparse");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(3 << 30).unwrap();
    assert_refused(&path, "is not an ELF file");
    let _ = std::fs::remove_file(&path);
}

fn bench_loop() -> PathBuf {
    build_go(
        "fixtures/go/bench_loop",
        &newest_toolchain(),
        Flavour::Plain,
        "",
    )
}

fn root_pid_of_a_thread_traces_its_process() {
    let program = Running(
        Command::new(bench_loop())
            .args(["-func", "work", "-for", "120s", "-g", "2"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = program.pid();
    // A Go program runs several threads; any but the main one will do.
    let deadline = Instant::now() + Duration::from_secs(10);
    let tid = loop {
        let other = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&t| t != pid);
        if let Some(t) = other {
            break t;
        }
        assert!(Instant::now() < deadline, "no second thread");
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = output_within(
        Command::new(GOTRACE).args([
            "trace",
            "--count",
            "5",
            "--pid",
            &tid.to_string(),
            "main.Work",
        ]),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{tid} is a thread of process {pid}")),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let calls: Vec<&str> = stdout.lines().collect();
    assert_eq!(calls.len(), 5, "{stdout}");
    // A return whose goroutine was unreadable for an instant is said, and counted.
    let unseen_said = err.contains("whose goroutine could not be read");
    for line in calls {
        assert!(line.contains(&format!("pid={pid} ")), "{line}");
        let returned = line.contains("main.Work(n=10) = ");
        let unseen = unseen_said && line.contains("main.Work(n=10) return not seen");
        assert!(returned || unseen, "{line}\n{err}");
    }
}

fn a_zombie_is_named() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Not reaped yet: once it has exited it stays a zombie until `wait` below.
    while !std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'))
    {
        assert!(Instant::now() < deadline, "never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = run_gotrace(&["trace", "--pid", &pid.to_string(), "main.main"]);
    let _ = child.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("process {pid} is a zombie")), "{err}");
}

fn root_a_binary_path_that_is_not_utf8_is_traced() {
    let dir = tempfile_path("non-utf8");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(std::ffi::OsStr::from_bytes(b"bench-\xff\xfe"));
    std::fs::copy(bench_loop(), &path).unwrap();
    let funcs = Command::new(GOTRACE)
        .arg("funcs")
        .arg(&path)
        .arg("main.Work")
        .output()
        .unwrap();
    assert!(
        funcs.status.success(),
        "{}",
        String::from_utf8_lossy(&funcs.stderr)
    );

    let ready = tempfile_path("ready");
    let tracer = Command::new(GOTRACE)
        .arg("trace")
        .arg(&path)
        .args(["main.Work", "--count", "3", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tracer = Running(tracer);
    wait_ready(&mut tracer, &ready, Duration::from_secs(60));
    let program = Command::new(&path)
        .args(["-func", "work", "-n", "1000"])
        .output()
        .unwrap();
    assert!(program.status.success());
    let out = tracer.collect();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("main.Work(n=10)"))
            .count(),
        3,
        "{stdout}{err}"
    );
}

gotrace_gobuild::test_main! {
    tests: [
        a_3_gib_sparse_file_is_not_read_whole,
        a_socket_is_refused,
        a_directory_is_refused,
        a_fifo_is_refused_without_opening_it,
        dev_zero_is_refused_without_reading_it,
        a_zombie_is_named,
    ],
    root: [
        root_pid_of_a_thread_traces_its_process,
        root_a_binary_path_that_is_not_utf8_is_traced,
    ],
}
