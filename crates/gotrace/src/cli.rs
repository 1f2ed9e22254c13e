//! Command-line interface: parsed and validated here, with no I/O.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Trace Go functions with eBPF uprobes: every call's arguments, results and latency, decoded
/// as Go values, without changing, recompiling or restarting the program.
#[derive(Debug, Parser)]
#[command(
    name = "gotrace",
    version,
    after_help = "Examples:
  gotrace demo                                   build the seed Fibonacci service, trace it, explain
  gotrace trace ./server main.Fibonacci          every process running ./server, now or later
  gotrace trace --pid 4242 main.Fibonacci        one running process
  gotrace trace --json --pid 4242 main.Fibonacci one JSON object per call
  gotrace peek --pid 4242 main.Fibonacci         see the breakpoints uprobes write into the code
  gotrace funcs ./server 'main.*'                what can be traced, with signatures

Needs root (or CAP_BPF and CAP_PERFMON) and a kernel with uprobes. Never rewrites return
addresses (the kernel's return probes crash Go programs): returns are observed by probes on the
function's RET instructions, which Go tolerates."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace calls of a function: one line (or JSON object) per completed call.
    Trace(TraceArgs),
    /// Show the instruction bytes at every probe site: in the file, live while probed
    /// (a breakpoint), and after detaching (restored).
    Peek(PeekArgs),
    /// Build the seed's Fibonacci HTTP service, trace it, send requests, show calls and peek.
    Demo(DemoArgs),
    /// List a binary's functions with their Go signatures.
    Funcs(FuncsArgs),
    /// Count calls in the kernel: calls/s, outcomes and a latency histogram per function, with
    /// no record per call; a table every interval, histograms at the end.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
#[command(override_usage = "gotrace trace [OPTIONS] <BINARY | --pid PID> <FUNCTION>...")]
pub struct TraceArgs {
    /// BINARY (omitted with --pid): the Go executable to trace, in every process running it,
    /// now or later. FUNCTION: a full Go name (`main.Fibonacci`, `main.(*Server).Handle`) or a
    /// glob (`main.*`, `net/http.(*conn).*`); give several to trace them together.
    #[arg(value_name = "BINARY | FUNCTION", required = true)]
    pub positionals: Vec<OsString>,
    /// Leave out functions matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Trace only this running process (its executable is found through /proc).
    #[arg(long, short, value_name = "PID")]
    pub pid: Option<u32>,
    /// One JSON object per call instead of text: ts, pid, tid, goid, func, args, results,
    /// types, duration_ns, outcome.
    #[arg(long)]
    pub json: bool,
    /// Show the calls as a tree per goroutine: each call under the traced call it was made in,
    /// indented, with its duration, in the order they happened. A tree is printed once no
    /// traced caller of it is running (within about two seconds), when tracing stops, or, with
    /// 100 000 calls waiting, the oldest goroutine's, marked. With --json: call lines with `id`,
    /// `parent` and `depth`, callers first.
    #[arg(long, conflicts_with = "no_return")]
    pub graph: bool,
    /// Write the calls to FILE in the Chrome trace event format (open it in ui.perfetto.dev or
    /// chrome://tracing): a track per goroutine, a slice per call with its arguments and
    /// results.
    #[arg(long, value_name = "FILE", conflicts_with = "no_return")]
    pub timeline: Option<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Report one call in N (the others are counted): decided in the kernel, to trace a hot
    /// function at a fraction of the cost.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: Option<u32>,
    /// Report at most R calls a second of each function: beyond that, its calls are counted
    /// in the kernel (the output says which function), not reported, until the next second.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rate: Option<u64>,
    /// Write this file once every probe is attached (for scripts and tests).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Stop after this many calls.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Trace entries only (arguments and counts; no results or durations): the cheapest mode.
    #[arg(long)]
    pub no_return: bool,
    /// Show each call's Go call stack at entry under it (function, file:line, inlined calls
    /// marked), walked in the kernel through frame pointers and named from .gopclntab (works on
    /// stripped binaries); at most 64 frames, a stack cut there or at an unreadable frame says so.
    /// With --json: `stack` and `stack_end`.
    #[arg(long, conflicts_with = "graph")]
    pub stack: bool,
    /// Bytes of a string or []byte kept; longer ones are cut and marked `…(+N bytes)`.
    #[arg(long, value_name = "BYTES", default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=8192))]
    pub string_max: u32,
    /// Elements of a slice, array or map shown.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub elems: u32,
    /// Pointers followed from an argument (through pointers, interfaces, maps).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub depth: u32,
    /// DWARF from a separate debug file of the same build (`objcopy --only-keep-debug`, or the
    /// unstripped build itself), for a stripped binary; refused unless its build ID is the
    /// binary's or its code is proven the binary's (the plain build of a `-ldflags='-s -w'`
    /// binary: another link of the same code). Without it, a binary without DWARF is looked up by build-id under
    /// $GOTRACE_DEBUG_PATH and /usr/lib/debug.
    #[arg(long, value_name = "PATH")]
    pub debug_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9464`) at /metrics: calls by
    /// function, process and outcome, a latency histogram, calls lost by cause, sites attached.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Export each call as an OpenTelemetry span over OTLP/HTTP (protobuf) to this http:// URL
    /// (`http://127.0.0.1:4318`; /v1/traces is added): nested traced calls on a goroutine are
    /// parent and child spans. Spans the collector does not take are counted, not retried.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
}

/// Which calls `trace` reports and `stats` counts.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only calls for which this holds, decided in the kernel (a call left out costs no record):
    /// arguments, results and their fields (through pointers) compared with constants —
    /// `n > 10`, `err != nil`, `p == nil`, `ok`, `req.Method == "GET"`,
    /// `strings.HasPrefix(path, "/api")` — joined by `&&`, `||`, `!` and parentheses. On
    /// arguments alone it is decided at the entry; naming a result, at the return.
    #[arg(long = "where", value_name = "EXPR")]
    pub where_expr: Option<String>,
    /// Only calls that took at least this long (`500us`, `5ms`, `1.5s`), decided in the kernel
    /// at the return.
    #[arg(long, value_name = "DURATION", value_parser = duration_ns, conflicts_with = "no_return")]
    pub min_duration: Option<u64>,
}

/// Words on the command line that do not make a command: exit status 2, as clap's own.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl TraceArgs {
    /// The binary (absent with --pid; any bytes, as paths are) and the function patterns
    /// (UTF-8, as Go names are).
    pub fn binary_and_functions(&self) -> Result<(Option<PathBuf>, Vec<String>), UsageError> {
        binary_and_functions(self.pid, &self.positionals, "trace")
    }
}

/// `gotrace stats`: like `trace`, but counted in the kernel.
#[derive(Debug, Args)]
#[command(override_usage = "gotrace stats [OPTIONS] <BINARY | --pid PID> <FUNCTION>...")]
pub struct StatsArgs {
    /// BINARY (omitted with --pid): the Go executable whose calls to count, in every process
    /// running it, now or later. FUNCTION: a full Go name or a glob, as for `trace`.
    #[arg(value_name = "BINARY | FUNCTION", required = true)]
    pub positionals: Vec<OsString>,
    /// Leave out functions matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Count only this running process's calls.
    #[arg(long, short, value_name = "PID")]
    pub pid: Option<u32>,
    /// JSON lines instead of text: `stats` (a function's counts, every interval and at the
    /// end), `histogram` (a function's latency buckets, at the end), and the session's
    /// `attached`, `warning`, `lost` and `summary`.
    #[arg(long)]
    pub json: bool,
    /// Seconds between two tables of counts (fractions allowed).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = positive_seconds)]
    pub interval: f64,
    /// Stop after this many seconds (fractions allowed); default: until Ctrl-C or the traced
    /// process exits.
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub duration: Option<f64>,
    /// Count entries only (no outcomes or latency): the cheapest mode.
    #[arg(long)]
    pub no_return: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Also count each function's calls per group, in the kernel: by `stack` (the call's Go
    /// stack at entry) or by an argument or result as --where names them (`n`, `req.Method`,
    /// `err`: integers, bools, strings — their first 16 bytes — and interfaces, by dynamic
    /// type). A table per function, the most called groups first.
    #[arg(long = "by", value_name = "EXPR")]
    pub by: Option<String>,
    /// Groups shown per function (--by); the rest are summed as one `other` row.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub top: u64,
    /// Write the call stacks to FILE as folded stacks (`outer;...;inner count`, a line per
    /// distinct stack, the traced function innermost, inlined calls as frames of their own),
    /// for flame-graph tools. Implies --by stack.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Draw the call stacks as an SVG flame graph in FILE (a frame's width: its calls, or with
    /// --flamegraph-by latency, the total latency of its returned calls). Implies --by stack.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,
    /// What a flame graph frame's width stands for.
    #[arg(long, value_name = "WHAT", value_enum, default_value_t = FlameWidth::Calls, requires = "flamegraph")]
    pub flamegraph_by: FlameWidth,

    /// Write this file once every probe is attached (for scripts and tests).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// DWARF from a separate debug file of the same build, for a stripped binary (as for
    /// `trace`): it tells where each function's `error` result is.
    #[arg(long, value_name = "PATH")]
    pub debug_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9464`) at /metrics, updated every
    /// interval: calls by function and outcome (`pid="all"`), the latency histogram (bounds
    /// one below each power of 4 ns, where the kernel's buckets divide exactly), calls lost by
    /// cause, sites attached.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// `--flamegraph-by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FlameWidth {
    /// Calls counted.
    Calls,
    /// Total latency of the returned calls (ns).
    Latency,
}

impl StatsArgs {
    pub fn binary_and_functions(&self) -> Result<(Option<PathBuf>, Vec<String>), UsageError> {
        binary_and_functions(self.pid, &self.positionals, "stats")
    }

    /// `--by`, which --folded and --flamegraph imply (they need stacks).
    pub fn group_by(&self) -> Result<Option<String>, UsageError> {
        let stacks = self.folded.is_some() || self.flamegraph.is_some();
        match &self.by {
            Some(by) if stacks && by.trim() != "stack" => Err(UsageError(format!(
                "--folded and --flamegraph draw call stacks: they need --by stack, not --by {by}"
            ))),
            None if stacks => Ok(Some("stack".to_owned())),
            by => Ok(by.clone()),
        }
    }
}

/// A duration with its unit (`ns`, `us`/`µs`, `ms`, `s`), in nanoseconds.
fn duration_ns(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration such as 500us, 5ms or 1.5s");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(bad()),
    };
    match number.parse::<f64>() {
        Ok(n) if n >= 0.0 && n * scale <= 86_400e9 => Ok((n * scale).round() as u64),
        _ => Err(bad()),
    }
}

/// A number of seconds above 0 and at most a day.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// The binary (absent with --pid; any bytes, as paths are) and the function patterns (UTF-8,
/// as Go names are) of `gotrace COMMAND`'s positional arguments.
fn binary_and_functions(
    pid: Option<u32>,
    positionals: &[OsString],
    command: &str,
) -> Result<(Option<PathBuf>, Vec<String>), UsageError> {
    let names = |items: &[OsString]| {
        items
            .iter()
            .map(|f| {
                f.to_str().map(str::to_owned).ok_or_else(|| {
                    UsageError(format!("function name {f:?} is not UTF-8 (Go names are)"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    match (pid, positionals.split_first()) {
        (Some(_), Some(_)) => Ok((None, names(positionals)?)),
        (None, Some((binary, functions))) if !functions.is_empty() => {
            Ok((Some(PathBuf::from(binary)), names(functions)?))
        }
        _ => Err(UsageError(format!(
            "usage: gotrace {command} <BINARY | --pid PID> <FUNCTION>... (see gotrace {command} --help)"
        ))),
    }
}

#[derive(Debug, Args)]
pub struct PeekArgs {
    /// The running process whose code to look at.
    #[arg(long, short, value_name = "PID")]
    pub pid: u32,
    /// The function whose probe sites to show.
    #[arg(value_name = "FUNCTION")]
    pub function: String,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// DWARF from a separate debug file of the same build (`objcopy --only-keep-debug`, or the
    /// unstripped build itself), for a stripped binary; refused unless its build ID is the
    /// binary's or its code is proven the binary's (the plain build of a `-ldflags='-s -w'`
    /// binary: another link of the same code). Without it, a binary without DWARF is looked up by build-id under
    /// $GOTRACE_DEBUG_PATH and /usr/lib/debug.
    #[arg(long, value_name = "PATH")]
    pub debug_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Go toolchain version to build the service with (e.g. 1.21); default: the newest installed.
    #[arg(long, value_name = "VERSION")]
    pub go: Option<String>,
    /// Where to build the service (default: a cache directory under ~/.cache/gotrace).
    #[arg(long, value_name = "DIR")]
    pub build_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FuncsArgs {
    /// The Go binary to read.
    #[arg(value_name = "BINARY")]
    pub binary: PathBuf,
    /// Only functions matching this glob (`main.*`, `net/http.(*conn).*`).
    #[arg(value_name = "PATTERN")]
    pub pattern: Option<String>,
    /// Also show each function's probe sites (entry, every RET, every deferreturn call) and
    /// where each argument and result lives (registers, or a stack offset).
    #[arg(long, short)]
    pub verbose: bool,
    /// One JSON object instead of text: `binary` (Go version, GOARCH, function table source)
    /// and `functions`, each with signature, argument locations and probe sites.
    #[arg(long)]
    pub json: bool,
    /// DWARF from a separate debug file of the same build (`objcopy --only-keep-debug`, or the
    /// unstripped build itself), for a stripped binary; refused unless its build ID is the
    /// binary's or its code is proven the binary's (the plain build of a `-ldflags='-s -w'`
    /// binary: another link of the same code). Without it, a binary without DWARF is looked up by build-id under
    /// $GOTRACE_DEBUG_PATH and /usr/lib/debug.
    #[arg(long, value_name = "PATH")]
    pub debug_file: Option<PathBuf>,
}
