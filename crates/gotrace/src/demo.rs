//! `gotrace demo`: the seed article, end to end. Builds the Fibonacci gin service, starts it,
//! traces `main.Fibonacci` while sending requests, shows each traced call beside the HTTP
//! answer, peeks at the breakpoints, and shuts everything down.

use crate::cli::DemoArgs;
use crate::out;
use crate::stdio::OutputError;
use crate::trace::{self, CallSink, Flow, TraceRequest};
use anyhow::{bail, Context, Result};
use gotrace_decode::DecodedCall;
use gotrace_gobuild::{Build, Flavour};
use gotrace_kernel::Target;
use gotrace_output::peek::Peek;
use gotrace_output::{Format, Printer, Record, Summary};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SERVICE_SOURCE: &str = include_str!("../../../examples/fibonacci/main.go");
const FUNCTION: &str = "main.Fibonacci";
/// Valid inputs, then inputs the handler rejects before calling Fibonacci.
const REQUESTS: [&str; 7] = ["1", "10", "20", "50", "abc", "-3", "0"];

/// Sends each traced call's text line, and the attach report, to the demo's main thread,
/// counting the calls: the summary's "calls traced" is what was shown. Warnings go to stderr.
struct ChannelSink {
    lines: mpsc::Sender<String>,
    attached: mpsc::Sender<String>,
    printer: Printer<Vec<u8>>,
    shown: u64,
}

impl CallSink for ChannelSink {
    fn call(&mut self, call: &DecodedCall<'_>) {
        if self
            .lines
            .send(self.printer.text(&Record::Call(call)))
            .is_ok()
        {
            self.shown += 1;
        }
    }

    fn record(&mut self, record: &Record<'_>) -> Result<(), OutputError> {
        let text = self.printer.text(record);
        match record {
            Record::Attached(_) => {
                let _ = self.attached.send(text);
                Ok(())
            }
            _ => crate::stdio::say(&text),
        }
    }

    fn flush(&mut self, _stopping: bool) -> Flow {
        Flow::Open
    }
}

/// The service process; killed if the demo stops early.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let binary = build_service(args)?;
    let addr = free_local_addr()?;
    out!("$ {} -addr {addr}", binary.display())?;
    let mut service = Service(
        Command::new(&binary)
            .arg("-addr")
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?,
    );
    wait_until_listening(addr, &mut service)?;
    let pid = service.0.id();

    out!("\n$ gotrace trace --pid {pid} {FUNCTION}")?;
    let (lines_tx, lines) = mpsc::channel();
    let (attached_tx, attached) = mpsc::channel();
    let (stop_read, mut stop_write) = UnixStream::pair()?;
    let tracer = spawn_tracer(pid, lines_tx, attached_tx, stop_read);
    match attached.recv_timeout(Duration::from_secs(30)) {
        Ok(attached) => out!("{attached}")?,
        Err(_) => {
            drop(service);
            return match tracer.join() {
                Ok(Err(e)) => Err(e.context("tracing the service")),
                _ => bail!("the tracer did not attach within 30 s"),
            };
        }
    }

    send_requests(addr, &lines)?;

    stop_write.write_all(b"x")?;
    let summary = match tracer.join() {
        Ok(result) => result?,
        Err(_) => bail!("the tracer thread panicked"),
    };
    let mut printer = Printer::new(Vec::new(), Format::Text, crate::clock());
    out!("\n{}", printer.text(&Record::Summary(&summary)))?;

    out!("\n$ gotrace peek --pid {pid} {FUNCTION}")?;
    let (function, sites) = crate::peek::peek(pid, FUNCTION, None)?;
    let peek = Peek {
        function,
        pid,
        sites,
    };
    out!("{}", printer.text(&Record::Peek(&peek)))?;

    out!("\nStopping the service (SIGINT: graceful shutdown)...")?;
    // SAFETY: kill(2) on the PID of a child we started and have not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    let status = service.0.wait()?;
    out!("service exited: {status}")?;
    Ok(())
}

/// Traces the service's `FUNCTION` on a thread of its own until `stop_read` becomes readable,
/// sending each call's line and the attach report to the main thread.
fn spawn_tracer(
    pid: u32,
    lines_tx: mpsc::Sender<String>,
    attached_tx: mpsc::Sender<String>,
    stop_read: UnixStream,
) -> JoinHandle<Result<Summary>> {
    std::thread::spawn(move || {
        let request = TraceRequest {
            target: Target::Process(pid),
            functions: vec![FUNCTION.to_owned()],
            exclude: Vec::new(),
            entry_only: false,
            limits: gotrace_plan::Limits::default(),
            count: None,
            debug_file: None,
            filter: Default::default(),
            stack: false,
        };
        let mut sink = ChannelSink {
            lines: lines_tx,
            attached: attached_tx,
            printer: Printer::new(Vec::new(), Format::Text, crate::clock()),
            shown: 0,
        };
        let stop = trace::Stop {
            fds: &[stop_read.as_raw_fd()],
            exit_on_signal: None,
        };
        let mut summary = trace::run(&request, &mut sink, &stop, || Ok(()))?;
        summary.calls = sink.shown;
        Ok::<_, anyhow::Error>(summary)
    })
}

/// Each request of [`REQUESTS`], its HTTP answer and the traced call it made (or why none).
fn send_requests(addr: SocketAddr, lines: &mpsc::Receiver<String>) -> Result<()> {
    for num in REQUESTS {
        let (status, body) = http_get(addr, &format!("/fibonacci?num={num}"))?;
        out!("\n$ curl 'http://{addr}/fibonacci?num={num}'\n  HTTP {status} {body}")?;
        // A valid request's call arrives within the flush interval; a rejected one never does.
        let wait = if status == 200 {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(300)
        };
        match lines.recv_timeout(wait) {
            Ok(line) => out!("  traced: {line}")?,
            Err(_) if status == 200 => {
                out!("  traced: nothing (unexpected: the call should have been seen)")?
            }
            Err(_) => out!(
                "  traced: no call — the handler rejected the input before calling {FUNCTION}"
            )?,
        }
    }
    Ok(())
}

fn build_service(args: &DemoArgs) -> Result<PathBuf> {
    let toolchain = gotrace_gobuild::toolchain(args.go.as_deref())?;
    let dir = match &args.build_dir {
        Some(dir) => dir.clone(),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache/gotrace/demo"),
    };
    let source_dir = dir.join("fibonacci");
    std::fs::create_dir_all(&source_dir)?;
    std::fs::write(source_dir.join("main.go"), SERVICE_SOURCE)?;
    out!(
        "Building the seed's Fibonacci service with Go {} (-gcflags '-l')...",
        toolchain.version
    )?;
    let binary = Build {
        source_dir: &source_dir,
        toolchain: &toolchain,
        flavour: Flavour::Plain,
        goarch: None,
        gcflags: "-l",
        out_dir: &dir.join("build"),
    }
    .run()?;
    Ok(binary)
}

fn free_local_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

fn wait_until_listening(addr: SocketAddr, service: &mut Service) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = service.0.try_wait()? {
            bail!("the service exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the service did not listen on {addr} within 20 s")
}

/// A minimal HTTP/1.0 GET: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
