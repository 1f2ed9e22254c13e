//! gotrace: trace Go functions' arguments, results and latency with eBPF uprobes.

mod cli;
mod demo;
mod funcs;
mod peek;
mod trace;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command, TraceArgs};
use gotrace_kernel::Target;
pub use gotrace_output::Clock;
use gotrace_output::{Format, Printer};
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => run_trace(args),
        Command::Peek(args) => peek::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Funcs(args) => funcs::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gotrace: error: {e:#}");
            if let Some(hint) = hint(&e) {
                eprintln!("gotrace: hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What to do about an error, where there is something to do.
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use gotrace_binary::BinaryError as B;
    use gotrace_kernel::KernelError as K;
    use gotrace_plan::PlanError as P;
    let binary_hint = |b: &B| {
        match b {
        B::Inlined { .. } => Some("rebuild with -gcflags=all=-l to keep it out of line, or trace a function that calls it"),
        B::NotGo { .. } => Some("gotrace traces programs built by the Go toolchain"),
        B::NotElf { .. } => Some("give the path of a Linux executable (ELF), not a script or a source file"),
        B::NoSuchFunction { .. } => Some("`gotrace funcs BINARY PATTERN` lists the functions that can be traced"),
        _ => None,
    }
    };
    for cause in e.chain() {
        if let Some(b) = cause.downcast_ref::<B>() {
            return binary_hint(b);
        }
        if let Some(P::Binary(b)) = cause.downcast_ref::<P>() {
            return binary_hint(b);
        }
        if let Some(K::NoSuchProcess(_)) = cause.downcast_ref::<K>() {
            return Some("check the PID with `ps`; to trace processes not started yet, give the binary's path instead");
        }
    }
    None
}

/// A pipe that becomes readable on SIGINT or SIGTERM: the event loop stops cleanly on it.
pub fn signal_pipe() -> Result<OwnedFd> {
    let (read, write) =
        std::os::unix::net::UnixStream::pair().context("creating the signal pipe")?;
    write.set_nonblocking(true)?;
    let write_fd: OwnedFd = write.into();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(signal, write_fd.try_clone()?)
            .context("installing signal handlers")?;
    }
    Ok(read.into())
}

/// Prints calls; remembers when the output went away (`| head` closed the pipe).
struct PrinterSink<W: Write> {
    printer: Printer<W>,
    closed: bool,
}

impl<W: Write> trace::CallSink for PrinterSink<W> {
    fn call(&mut self, call: &gotrace_decode::DecodedCall<'_>) {
        if !self.closed && self.printer.call(call).is_err() {
            self.closed = true;
        }
    }

    fn flush(&mut self) -> bool {
        if !self.closed && self.printer.flush().is_err() {
            self.closed = true;
        }
        !self.closed
    }
}

fn run_trace(args: TraceArgs) -> Result<()> {
    let Some((binary, functions)) = args.binary_and_functions() else {
        anyhow::bail!(
            "usage: gotrace trace <BINARY | --pid PID> <FUNCTION>... (see gotrace trace --help)"
        );
    };
    let target = match (binary, args.pid) {
        (_, Some(pid)) => Target::Process(pid),
        (Some(binary), None) => Target::Binary(binary),
        (None, None) => anyhow::bail!("give the binary to trace, or --pid PID"),
    };
    let request = trace::TraceRequest {
        target,
        functions,
        exclude: args.exclude.clone(),
        entry_only: args.no_return,
        limits: gotrace_plan::Limits {
            string_max: args.string_max,
            elems: args.elems,
            depth: args.depth,
        },
        count: args.count,
    };
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    let stdout = std::io::stdout();
    let mut sink = PrinterSink {
        printer: Printer::new(BufWriter::new(stdout.lock()), format, clock()),
        closed: false,
    };
    let stop = signal_pipe()?;
    let summary = trace::run(&request, &mut sink, &[stop.as_raw_fd()], |plan, report| {
        let path = trace::target_binary(&request.target)?;
        eprintln!(
            "gotrace: tracing {} — Ctrl-C to stop",
            trace::describe_attach(plan, report, &path)
        );
        if let Some(ready) = &args.ready_file {
            trace::write_ready_file(ready)?;
        }
        Ok(())
    })?;
    if let Target::Process(pid) = request.target {
        if !gotrace_kernel::proc::exists(pid) {
            eprintln!("gotrace: process {pid} exited");
        }
    }
    eprintln!("{}", summary.text());
    Ok(())
}

/// The kernel's monotonic clock mapped onto wall-clock time.
pub fn clock() -> Clock {
    Clock {
        realtime_minus_monotonic_ns: gotrace_kernel::realtime_minus_monotonic_ns(),
    }
}
