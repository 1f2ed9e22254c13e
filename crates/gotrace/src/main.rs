//! gotrace: trace Go functions' arguments, results and latency with eBPF uprobes.

mod cli;
mod debuginfo;
mod demo;
mod export;
mod follow;
mod funcs;
mod groups;
mod peek;
mod stats;
mod stdio;
mod trace;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command, TraceArgs};
use gotrace_kernel::Target;
pub use gotrace_output::Clock;
use gotrace_output::{Format, Note, Printer, Record, Summary, Warning};
use gotrace_plan::CallKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stdio::{Chunk, Delivery, Line, OutputError, Stream, Tally, Writer};
use trace::Flow;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => run_trace(args),
        Command::Peek(args) => peek::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Funcs(args) => funcs::run(&args),
        Command::Stats(args) => stats::run_cli(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`| head`): a normal end.
        Err(e) if is_closed_stdout_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let mut text = format!("gotrace: error: {}", error_text(&e));
            if let Some(hint) = hint(&e) {
                text.push_str(&format!("\ngotrace: hint: {hint}"));
            }
            stdio::report(&text);
            match e.downcast_ref::<cli::UsageError>() {
                Some(_) => ExitCode::from(2),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn is_closed_stdout_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<stdio::OutputError>()
        .is_some_and(stdio::OutputError::is_stdout_closed_pipe)
}

/// The error and its causes, each said once: many errors repeat their cause's text
/// (`cannot read X: No such file (os error 2)` caused by `No such file (os error 2)`).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
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
        B::NotAFile { .. } => Some("give the path of a Go executable"),
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

/// SIGINT and SIGTERM. While probes are attached they stop the event loop (through `pipe`,
/// which it watches); otherwise — before attaching, and once the loop has stopped (a second
/// Ctrl-C while the probes detach and the last output drains) — they end the process at once:
/// nothing is left to clean up, as the kernel removes any probe still attached when the
/// process's descriptors close.
pub struct Signals {
    pub pipe: OwnedFd,
    pub exit_now: Arc<AtomicBool>,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        let (read, write) =
            std::os::unix::net::UnixStream::pair().context("creating the signal pipe")?;
        write.set_nonblocking(true)?;
        let write_fd: OwnedFd = write.into();
        let exit_now = Arc::new(AtomicBool::new(true));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // The shutdown goes first: when it applies, nothing else should run.
            signal_hook::flag::register_conditional_shutdown(
                signal,
                128 + signal,
                Arc::clone(&exit_now),
            )
            .context("installing signal handlers")?;
            signal_hook::low_level::pipe::register(signal, write_fd.try_clone()?)
                .context("installing signal handlers")?;
        }
        Ok(Signals {
            pipe: read.into(),
            exit_now,
        })
    }
}

/// Calls written by a thread of their own ([`Writer`]); counts what it had no room for. The
/// other records go to stderr as text and, under `--json`, to stdout too, in order with the
/// calls.
struct PrinterSink {
    printer: Printer<Vec<u8>>,
    /// What each line in the printer's buffer reports.
    buffered: Vec<Line>,
    /// Output the writer had no room for yet.
    held: Option<Chunk>,
    /// Calls that came after stopping while the writer had no room: counted, not kept.
    dropped: Tally,
    discarding: bool,
    stdout: Writer,
    messages: &'static Writer,
    /// Calls the sessions reported, written or not: what `--count` counts.
    seen: u64,
    /// `--metrics` and `--otlp`, fed every call and record.
    exports: export::Exports,
}

impl PrinterSink {
    fn new(printer: Printer<Vec<u8>>, stdout: Writer, messages: &'static Writer) -> PrinterSink {
        PrinterSink {
            printer,
            buffered: Vec::new(),
            held: None,
            dropped: Tally::default(),
            discarding: false,
            stdout,
            messages,
            seen: 0,
            exports: export::Exports::default(),
        }
    }

    /// Hands what is held and buffered to the writer; false when it has no room.
    fn hand_over(&mut self) -> bool {
        let bytes = std::mem::take(self.printer.get_mut());
        let lines = std::mem::take(&mut self.buffered);
        let chunk = match self.held.take() {
            Some(mut held) => {
                held.bytes.extend_from_slice(&bytes);
                held.lines.extend(lines);
                held
            }
            None => Chunk { bytes, lines },
        };
        if chunk.bytes.is_empty() {
            return true;
        }
        match self.stdout.try_send(chunk) {
            Ok(()) => true,
            Err(chunk) => {
                self.held = Some(chunk);
                false
            }
        }
    }

    /// Moves the call trees that are ready (all of them when the session is over) into the
    /// output, saying what each line reports.
    fn write_graph(&mut self, all: bool) {
        let buffered = &mut self.buffered;
        // Into a Vec: cannot fail; the timeline keeps its own error, reported at the end.
        let _ = self.printer.write_graph(all, &mut |line| {
            buffered.push(match line {
                None => Line::Message,
                Some(CallKind::Returned | CallKind::Entered | CallKind::Inlined) => Line::Call,
                Some(_) => Line::Unreturned,
            })
        });
    }

    /// Counts what the writer had no room for as not written.
    fn drop_held(&mut self) {
        if let Some(held) = self.held.take() {
            self.dropped += Tally::of(&held.lines);
        }
    }

    /// Records said once the stdout writer is done (the summary): as text on stderr and, under
    /// `--json`, on stdout unless it has `failed`, waiting a bounded time for each. Fails when
    /// stdout cannot take them.
    fn say_last(&mut self, records: &[Record<'_>], failed: bool) -> Result<(), OutputError> {
        let mut json = Vec::new();
        for record in records {
            self.exports.record(record);
            let _ = stdio::say(&self.printer.text(record));
            // Into a Vec: cannot fail.
            let _ = self.printer.record(record);
            json.append(self.printer.get_mut());
        }
        match self.printer.format() {
            Format::Json if !failed => stdio::print_last(&json),
            _ => Ok(()),
        }
    }

    /// Waits until `deadline` at most for the output to be written.
    fn finish(&mut self, deadline: Instant) -> Delivery {
        self.write_graph(true);
        self.hand_over();
        self.drop_held();
        let mut delivery = self.stdout.finish(deadline);
        delivery.stopped += self.dropped;
        delivery
    }
}

impl trace::CallSink for PrinterSink {
    fn call(&mut self, call: &gotrace_decode::DecodedCall<'_>) {
        self.seen += 1;
        self.exports.call(call);
        if self.printer.shows_graph() {
            // Its line comes with its tree (see `write_graph`). Into a Vec: cannot fail.
            let _ = self.printer.call(call);
            return;
        }
        let line = match call.outcome {
            CallKind::Returned | CallKind::Entered | CallKind::Inlined => Line::Call,
            CallKind::Panicked
            | CallKind::Exited
            | CallKind::InFlight
            | CallKind::Abandoned
            | CallKind::ReturnNotSeen => Line::Unreturned,
        };
        if self.discarding {
            self.dropped += Tally::of(&[line]);
            return;
        }
        // Into a Vec: cannot fail.
        let _ = self.printer.call(call);
        self.buffered.push(line);
    }

    fn record(&mut self, record: &Record<'_>) -> Result<(), OutputError> {
        self.exports.record(record);
        if self.printer.format() == Format::Json && !self.discarding {
            // Into a Vec: cannot fail.
            let _ = self.printer.record(record);
            self.buffered.push(Line::Message);
            // Rare, and said when they happen (one may come while no session runs).
            self.hand_over();
        }
        stdio::say(&self.printer.text(record))
    }

    fn waits_for_callers(&self) -> bool {
        self.printer.nests_calls()
    }

    fn in_flight(&mut self, now: &gotrace_kernel::InFlightNow) {
        let since = |pid, goid| now.since.get(&(pid, goid)).copied();
        self.printer.settle_graph(now.at_ns, &since);
    }

    fn flush(&mut self, stopping: bool) -> Flow {
        self.write_graph(false);
        if let Some(lost) = self.exports.flush() {
            // A failed stderr is seen below, as the writer's error.
            let _ = trace::CallSink::record(self, &Record::Lost(&lost));
        }
        let room = self.hand_over();
        if self.stdout.error().is_some() || self.messages.error().is_some() {
            return Flow::Closed;
        }
        if room {
            return Flow::Open;
        }
        if stopping {
            self.drop_held();
            self.discarding = true;
        }
        Flow::Full
    }
}

/// Bytes of calls queued for stdout at most: beyond that, events wait in the ring buffer.
const OUTPUT_QUEUE: usize = 1 << 20;
/// Bytes of messages queued for stderr at most.
const MESSAGE_QUEUE: usize = 64 << 10;
/// How long output still queued when tracing stops may take to be written.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// What a tracing command opens first: both streams (one that cannot be written is an error
/// before anything is attached), the signal handlers, and the sink writing in `json` or text.
fn open_output(json: bool) -> Result<(PrinterSink, &'static Writer, Signals)> {
    let stdout = Writer::spawn(Stream::Stdout, OUTPUT_QUEUE)?;
    let messages = stdio::install_messages(Writer::spawn(Stream::Stderr, MESSAGE_QUEUE)?);
    let signals = Signals::install()?;
    let format = if json { Format::Json } else { Format::Text };
    let sink = PrinterSink::new(Printer::new(Vec::new(), format, clock()), stdout, messages);
    Ok((sink, messages, signals))
}

/// The target of `BINARY` or `--pid PID`.
fn target_of(
    binary: Option<std::path::PathBuf>,
    pid: Option<u32>,
    sink: &mut PrinterSink,
) -> Result<Target> {
    Ok(match (binary, pid) {
        (_, Some(pid)) => Target::Process(traced_process(pid, sink)?),
        (Some(binary), None) => Target::Binary(binary),
        (None, None) => anyhow::bail!("give the binary to trace, or --pid PID"),
    })
}

fn run_trace(args: TraceArgs) -> Result<()> {
    let (mut sink, messages, signals) = open_output(args.json)?;
    let timeline = args.timeline.as_deref().map(open_timeline).transpose()?;
    sink.printer.set_graph(args.graph, timeline);
    let (binary, functions) = args.binary_and_functions()?;
    let target = target_of(binary, args.pid, &mut sink)?;
    let request = trace_request(&args, target, functions);
    sink.exports = export::Exports::start(
        args.metrics.as_deref(),
        args.otlp.as_deref(),
        clock(),
        &export::TRACE_BUCKETS_NS,
    )?;
    // The errors tracing would give first, before the file is watched.
    trace::target_binary(&request.target)?;
    if let Err(no_kernel_access) = gotrace_kernel::check_environment() {
        // A mistake in the input (not Go, no such function) is the more useful answer, and
        // planning needs no privileges; privileged runs skip this and plan once, later.
        trace::prepare(&request)?;
        return Err(no_kernel_access.into());
    }
    let mut follow = follow::Follow::start(&request.target, &mut sink)?;
    let mut stop_fds = vec![signals.pipe.as_raw_fd()];
    stop_fds.extend(follow.as_ref().map(follow::Follow::fd));
    let stop = trace::Stop {
        fds: &stop_fds,
        exit_on_signal: Some(&signals.exit_now),
    };
    let result = trace_each_build(
        &request,
        &mut sink,
        &stop,
        &mut follow,
        &signals,
        args.ready_file.as_deref(),
    )?;
    // Probes are detached: a further Ctrl-C need not wait for the output.
    signals.exit_now.store(true, Ordering::SeqCst);
    let delivery = sink.finish(Instant::now() + DRAIN_GRACE);
    let timeline = finish_graph(
        &mut sink,
        args.timeline.as_deref(),
        delivery.error.is_some(),
    );
    let mut summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            messages.finish(Instant::now() + DRAIN_GRACE);
            return Err(e);
        }
    };
    summary.calls = delivery.written.calls;
    summary.unreturned = delivery.written.unreturned;
    summary.not_written_failed = delivery.failed.calls + delivery.failed.unreturned;
    summary.not_written_stopped = delivery.stopped.calls + delivery.stopped.unreturned;
    summary.spans_not_exported = sink.exports.finish(Instant::now() + export::GRACE);
    finish_session(
        &mut sink,
        messages,
        &request.target,
        &summary,
        delivery.error,
    )?;
    timeline
}

fn trace_request(args: &TraceArgs, target: Target, functions: Vec<String>) -> trace::TraceRequest {
    trace::TraceRequest {
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
        debug_file: args.debug_file.clone(),
        filter: trace::Filter {
            sample_every: args.sample.unwrap_or(0),
            max_rate: args.max_rate.unwrap_or(0),
            ..(&args.filter).into()
        },
        stack: args.stack,
    }
}

/// Traces `request` in a session, and with `follow` again in a session for each new build of
/// the file, until `--count` calls, a stop or an exit; the sessions' summaries added up.
/// The outer error ends the command at once; the inner one, the tracing's, is reported after
/// the output is finished.
fn trace_each_build(
    request: &trace::TraceRequest,
    sink: &mut PrinterSink,
    stop: &trace::Stop<'_>,
    follow: &mut Option<follow::Follow>,
    signals: &Signals,
    ready_file: Option<&std::path::Path>,
) -> Result<Result<Summary>> {
    let mut attaches = 0u32;
    let mut total: Option<Summary> = None;
    loop {
        if let Some(follow) = follow.as_mut() {
            follow.planning();
        }
        let session_request = trace::TraceRequest {
            count: request.count.map(|n| n.saturating_sub(sink.seen)),
            ..request.clone()
        };
        let session = trace::run(&session_request, sink, stop, || {
            if let Some(follow) = follow.as_ref() {
                follow.attached();
            }
            attaches += 1;
            if let Some(ready) = ready_file {
                trace::write_ready_file(ready, attaches)?;
            }
            Ok(())
        });
        let failed = match session {
            Ok(summary) => {
                total.get_or_insert_with(Default::default).absorb(&summary);
                false
            }
            // The first plan failing is an error; a later one is a rebuild to wait out.
            Err(e) if attaches == 0 || follow.is_none() => return Ok(Err(e)),
            Err(e) => {
                let warning = Warning::new(format!(
                    "cannot trace the new file: {}; waiting for the next build",
                    error_text(&e)
                ));
                trace::CallSink::record(sink, &Record::Warning(&warning))?;
                true
            }
        };
        let done = request.count.is_some_and(|n| sink.seen >= n);
        let next = match follow.as_ref() {
            Some(follow) if !done => {
                follow.next(signals.pipe.as_raw_fd(), &signals.exit_now, failed, sink)?
            }
            _ => follow::Next::Stop,
        };
        if matches!(next, follow::Next::Stop) {
            return Ok(Ok(total.take().unwrap_or_default()));
        }
    }
}

/// Creates the `--timeline` file; its JSON array is begun.
fn open_timeline(path: &std::path::Path) -> Result<gotrace_output::Timeline> {
    let create = || -> std::io::Result<gotrace_output::Timeline> {
        let file = std::fs::File::create(path)?;
        gotrace_output::Timeline::new(Box::new(std::io::BufWriter::new(file)))
    };
    create().with_context(|| format!("creating the timeline {}", path.display()))
}

/// The end of `--graph` and `--timeline`: the timeline's JSON array closed, and said: trees
/// printed before their caller was seen, where the timeline is. The error writing it, if any.
fn finish_graph(
    sink: &mut PrinterSink,
    timeline: Option<&std::path::Path>,
    stdout_failed: bool,
) -> Result<()> {
    let mut said = Vec::new();
    let (trees, calls) = sink.printer.graph_cut();
    if trees > 0 {
        said.push(Warning::new(format!(
            "{calls} calls in {trees} trees were printed before their callers returned (--graph holds {} calls): a traced caller is shown without them",
            gotrace_output::GRAPH_LIMIT
        )));
    }
    let closed = sink.printer.finish_timeline();
    let notes: Vec<Note> = match (timeline, &closed) {
        (Some(path), Ok(())) => vec![Note {
            message: format!("timeline written to {}", path.display()),
        }],
        _ => Vec::new(),
    };
    let mut records: Vec<Record<'_>> = said.iter().map(Record::Warning).collect();
    records.extend(notes.iter().map(Record::Note));
    // A failed output is reported with the summary.
    let _ = sink.say_last(&records, stdout_failed);
    let path = timeline.map_or_else(String::new, |p| p.display().to_string());
    closed.with_context(|| format!("writing the timeline {path}"))
}

/// A session's last words, once its stdout is done: a note if the traced process exited, then
/// the summary (on stderr, and on stdout under `--json` unless `stdout_error`). The error to
/// exit with, if an output failed.
fn finish_session(
    sink: &mut PrinterSink,
    messages: &Writer,
    target: &Target,
    summary: &Summary,
    stdout_error: Option<OutputError>,
) -> Result<()> {
    let exited = match target {
        Target::Process(pid) if !gotrace_kernel::proc::exists(*pid) => Some(Note {
            message: format!("process {pid} exited"),
        }),
        _ => None,
    };
    let mut last: Vec<Record<'_>> = exited.iter().map(Record::Note).collect();
    last.push(Record::Summary(summary));
    // Stdout that failed takes nothing more; its error is the one to report.
    let printed = sink.say_last(&last, stdout_error.is_some());
    let said = messages.finish(Instant::now() + DRAIN_GRACE);
    if let Some(e) = said.error {
        // The summary did not make it to stderr: say it where it still can be.
        stdio::report(&sink.printer.text(&Record::Summary(summary)));
        return Err(e.into());
    }
    match stdout_error.or(printed.err()) {
        Some(e) if !e.is_stdout_closed_pipe() => Err(e.into()),
        _ => Ok(()),
    }
}

/// The process `--pid` names: a thread id stands for its process, a zombie is refused.
fn traced_process(pid: u32, sink: &mut PrinterSink) -> Result<u32> {
    let tgid = gotrace_kernel::proc::process_of(pid)?;
    if tgid != pid {
        let message = format!("{pid} is a thread of process {tgid}: tracing process {tgid}");
        trace::CallSink::record(sink, &Record::Note(&Note { message }))?;
    }
    Ok(tgid)
}

/// The kernel's monotonic clock mapped onto wall-clock time.
pub fn clock() -> Clock {
    Clock {
        realtime_minus_monotonic_ns: gotrace_kernel::realtime_minus_monotonic_ns(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_text_appears_once() {
        let Err(e) = gotrace_binary::GoBinary::open(std::path::Path::new("/nonexistent/x")) else {
            panic!("opened a file that does not exist");
        };
        let text = error_text(&anyhow::Error::from(e));
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
    }
}
