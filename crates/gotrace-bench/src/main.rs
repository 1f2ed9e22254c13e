//! `make bench`: what tracing costs, measured in one run and printed as one report.
//!
//! For each traced function of the loop program (fixtures/go/bench_loop): untraced; the empty
//! BPF program on gotrace's own sites (the floor), full and entry-only; the real gotrace CLI,
//! `trace` and `stats`, full and `--no-return`; the seed's bpftrace one-liner (plain, with
//! async preemption off, and entry-only); the empty program on each kind of instruction a
//! probe can sit on (gotrace's entry jump, the function's first instruction, its returns). A
//! function given a 1 MiB string. Then throughput through the ring buffer, and attach/detach times for 1,000 and
//! 10,000 sites. Then the time from starting gotrace to its ready file, and its peak memory,
//! on the go command (a large real binary) against the small loop program. Needs root.

mod floor;
mod many;
mod placement;
mod report;
mod run;
mod startup;
mod text;

use anyhow::{bail, Context, Result};
use clap::Parser;
use gotrace_binary::GoBinary;
use gotrace_gobuild::Flavour;
use gotrace_plan::{PlanOptions, ProbePlan, SiteKind};
use report::{FunctionBench, Probes, Row, Throughput, Tracer};
use run::{GotraceOptions, LoopOutput, LoopTarget, TargetRun, Traced};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Functions in the generated program for the attach timings (two sites each).
const MANY_FUNCTIONS: usize = 5_200;

/// Traced in the go command from a standing start: one function, and a glob reaching many
/// inlined sites.
const GO_COMMAND_PATTERNS: [&str; 2] = ["cmd/go/internal/load.loadPackageData", "strings.*"];

#[derive(Debug, Parser)]
#[command(
    name = "gotrace-bench",
    about = "Per-call cost of gotrace vs the uprobe floor and bpftrace; throughput; attach/detach times (needs root)"
)]
struct Args {
    /// How long each run of the loop program loops, in seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// The gotrace binary to run (default: next to this one).
    #[arg(long)]
    gotrace: Option<PathBuf>,
    /// Go toolchain for the targets (default: the newest installed).
    #[arg(long)]
    go: Option<String>,
    /// Runs of each floor and gotrace mode; the median (by ns/call) is shown.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Skip the per-site (perf-event) attach/detach timing, which takes minutes to detach.
    #[arg(long)]
    skip_per_site: bool,
    /// Skip the bpftrace runs.
    #[arg(long)]
    skip_bpftrace: bool,
    /// Skip the empty program on each kind of instruction (first instruction, returns).
    #[arg(long)]
    skip_placement: bool,
    /// Skip the 1 MiB string argument.
    #[arg(long)]
    skip_string: bool,
    /// Skip start → ready on the go command (built once from the toolchain's source).
    #[arg(long)]
    skip_startup: bool,
}

fn main() -> ExitCode {
    match bench(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gotrace-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> Result<()> {
    let setup = Setup::new(args)?;
    let load_before = load_average();
    note(&format!(
        "target {} (Go {})",
        setup.target.binary.display(),
        setup.toolchain.version
    ));
    let measured = measure(args, &setup)?;
    print_report(args, &setup.toolchain, &load_before, &measured);
    Ok(())
}

/// What the measurements run: gotrace's CLI, the loop program, and where they work.
struct Setup {
    gotrace: PathBuf,
    work_dir: PathBuf,
    toolchain: gotrace_gobuild::Toolchain,
    target: LoopTarget,
    binary: GoBinary,
}

impl Setup {
    fn new(args: &Args) -> Result<Setup> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the benchmark loads BPF programs and attaches uprobes: run it as root");
        }
        let gotrace = match &args.gotrace {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("gotrace"),
        };
        if !gotrace.exists() {
            bail!(
                "{} not found: build it (cargo build --release -p gotrace) or pass --gotrace",
                gotrace.display()
            );
        }
        let work_dir = gotrace_gobuild::workspace_target_dir().join("bench");
        std::fs::create_dir_all(&work_dir)?;
        let toolchain = gotrace_gobuild::toolchain(args.go.as_deref())?;
        let target = LoopTarget {
            binary: build(
                &toolchain,
                &gotrace_gobuild::repo_root().join("fixtures/go/bench_loop"),
            )?,
            seconds: args.seconds,
        };
        let binary = GoBinary::open(&target.binary)?;
        Ok(Setup {
            gotrace,
            work_dir,
            toolchain,
            target,
            binary,
        })
    }
}

/// The Go program in `source_dir`, built with inlining off.
fn build(
    toolchain: &gotrace_gobuild::Toolchain,
    source_dir: &Path,
) -> Result<PathBuf, gotrace_gobuild::BuildError> {
    gotrace_gobuild::build_fixture(source_dir, "-l", toolchain, Flavour::Plain, None)
}

/// Every measurement the report shows.
struct Measured {
    functions: Vec<FunctionBench>,
    placements: Vec<report::Placement>,
    string: Option<text::StringBench>,
    throughput: Vec<Throughput>,
    attach: Vec<report::AttachTiming>,
    startup: Vec<report::Startup>,
}

fn measure(args: &Args, setup: &Setup) -> Result<Measured> {
    let Setup {
        gotrace,
        work_dir,
        toolchain,
        target,
        binary,
    } = setup;
    let mut functions = Vec::new();
    let mut placements = Vec::new();
    for (function, func) in [("main.Fibonacci", "fib"), ("main.Work", "work")] {
        let bench = per_call(args, gotrace, work_dir, binary, target, function, func)?;
        if !args.skip_placement {
            placements.extend(placement::measure(
                args.repeat.max(1),
                binary,
                target,
                &bench,
                func,
            )?);
        }
        functions.push(bench);
    }
    let string = if args.skip_string {
        None
    } else {
        Some(text::measure(
            args.repeat.max(1),
            gotrace,
            work_dir,
            binary,
            target,
        )?)
    };
    let throughput = throughput(gotrace, work_dir, binary, target)?;
    let attach = attach_timings(args, &|dir: &Path| build(toolchain, dir), work_dir)?;
    let startup = if args.skip_startup {
        Vec::new()
    } else {
        startup_timings(args, gotrace, work_dir, toolchain, &target.binary)?
    };
    Ok(Measured {
        functions,
        placements,
        string,
        throughput,
        attach,
        startup,
    })
}

fn print_report(
    args: &Args,
    toolchain: &gotrace_gobuild::Toolchain,
    load_before: &str,
    measured: &Measured,
) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "\n# gotrace bench — kernel {}, {} CPUs, Go {}, {} s per run, median of {}\n",
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        toolchain.version,
        args.seconds,
        args.repeat.max(1),
    );
    println!("Load average before / after: {load_before} / {} (other work on the machine moves every figure).\n", load_average());
    println!("Per-call cost, one goroutine calling the function in a tight loop. overhead = traced − untraced ns/call;");
    println!("ratio to floor = overhead / the empty program's overhead on the same sites (full or entry-only).\n");
    let mut ratios = Vec::new();
    for f in &measured.functions {
        println!("## {} — gotrace's sites: {}\n", f.function, f.sites);
        println!("{}", f.table());
        ratios.extend(f.ratios());
    }
    if !measured.placements.is_empty() {
        println!("## Probe placement: the empty program on each kind of instruction\n");
        println!("One run per row, each call hitting exactly one of the run's sites: ns/hit = floor ns/call − untraced ns/call.");
        println!("The kernel emulates jumps, calls, NOPs and `push reg`; it single-steps anything else out of line.\n");
        println!("{}", report::placement_table(&measured.placements));
    }
    let string_ratios = measured
        .string
        .as_ref()
        .map(print_string)
        .unwrap_or_default();
    println!(
        "## Throughput: JSON lines gotrace wrote / wall time (target start → gotrace exited)\n"
    );
    println!("{}", report::throughput_table(&measured.throughput));
    println!("## Attach and detach (`Session::attach` / `detach`, the program running)\n");
    println!("{}", report::attach_table(&measured.attach));
    ratios.extend(report::scale_ratios(&measured.throughput, &measured.attach));
    if !measured.startup.is_empty() {
        println!("## Start → ready: `gotrace trace` started until its ready file exists\n");
        println!("Reading the binary, planning, loading the BPF program and attaching; peak memory is gotrace's VmHWM then.");
        println!("The first row is the startup floor: the small loop program, one function. Median of {} starts.\n", args.repeat.max(1));
        println!("{}", report::startup_table(&measured.startup));
    }
    println!("## Goals (issue 6)\n");
    print!("{}", report::ratio_lines(&ratios));
    if !string_ratios.is_empty() {
        println!("\n## Goals (issue 4)\n");
        print!("{}", report::ratio_lines(&string_ratios));
    }
    if !measured.startup.is_empty() {
        println!("\n## Goals (issue 10)\n");
        print!(
            "{}",
            report::ratio_lines(&report::startup_ratios(&measured.startup))
        );
    }
}

/// The 1 MiB string's section of the report; its ratios, for the goals.
fn print_string(s: &text::StringBench) -> Vec<report::Ratio> {
    println!(
        "## {} with a 1 MiB string argument — gotrace's sites: {}\n",
        s.bench.function, s.bench.sites
    );
    println!(
        "Text(s) returns leaf(len(s)): a stack check like Work's. gotrace's JSON went to {}{}.\n",
        s.output_dir.display(),
        if s.output_dir.starts_with("/dev/shm") {
            " (a tmpfs: at 8 KiB a line a disk file falls behind its writeback and events are lost)"
        } else {
            ""
        }
    );
    println!("{}", s.bench.table());
    println!(
        "{}",
        report::capture_lines(&s.bench.function, text::ARG, &s.checks)
    );
    report::string_ratios(&s.bench, &s.checks)
}

/// Start → ready: the loop program (the startup floor), then the go command built from the
/// toolchain's own source (cached in target/).
fn startup_timings(
    args: &Args,
    gotrace: &Path,
    work_dir: &Path,
    toolchain: &gotrace_gobuild::Toolchain,
    loop_binary: &Path,
) -> Result<Vec<report::Startup>> {
    let repeat = args.repeat.max(1);
    note("start → ready: the loop program's main.Work (the startup floor)");
    let mut out = vec![startup::measure(
        gotrace,
        work_dir,
        loop_binary,
        "loop program",
        "main.Work",
        repeat,
    )?];
    note(&format!(
        "building the go command from Go {}'s source (once; cached in target/)",
        toolchain.version
    ));
    let go_command = gotrace_gobuild::go_command(toolchain, &gotrace_gobuild::fixtures_dir())?;
    let label = format!("go command (Go {})", toolchain.version);
    for pattern in GO_COMMAND_PATTERNS {
        note(&format!("start → ready: the go command, {pattern}"));
        out.push(startup::measure(
            gotrace,
            work_dir,
            &go_command,
            &label,
            pattern,
            repeat,
        )?);
    }
    Ok(out)
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn note(text: &str) {
    eprintln!("gotrace-bench: {text}");
}

fn plan_for(binary: &GoBinary, pattern: &str, entry_only: bool) -> Result<ProbePlan> {
    gotrace_plan::plan(
        binary,
        &[pattern.to_owned()],
        PlanOptions {
            entry_only,
            ..Default::default()
        },
    )
    .with_context(|| format!("planning {pattern}"))
}

/// Every run against one function of the loop program.
fn per_call(
    args: &Args,
    gotrace: &Path,
    work_dir: &Path,
    binary: &GoBinary,
    target: &LoopTarget,
    function: &str,
    func: &str,
) -> Result<FunctionBench> {
    let full_plan = plan_for(binary, function, false)?;
    let entry_plan = plan_for(binary, function, true)?;
    let mut rows = Vec::new();

    let repeat = args.repeat.max(1);
    let (baseline, reference) = untraced(target, function, func, repeat)?;
    let reference = Some(&reference);
    rows.push(baseline);

    for (probes, plan) in [(Probes::Full, &full_plan), (Probes::EntryOnly, &entry_plan)] {
        note(&format!(
            "{function}: floor, {} sites (median of {repeat})",
            plan.sites.len()
        ));
        let run = median(repeat, || run::under_floor(plan, target, func), |r| r)?;
        rows.push(row(Tracer::Floor, probes, &run, None, None, reference));
    }
    // `gotrace trace`, then `gotrace stats` (counted in the kernel), each full and entry-only.
    for (tracer, command) in [
        (Tracer::Gotrace, "gotrace"),
        (Tracer::GotraceStats, "gotrace stats"),
    ] {
        for (probes, entry_only) in [(Probes::Full, false), (Probes::EntryOnly, true)] {
            note(&format!(
                "{function}: {command}{} (median of {repeat})",
                if entry_only { " --no-return" } else { "" }
            ));
            let options = GotraceOptions {
                entry_only,
                stats: tracer == Tracer::GotraceStats,
                ..Default::default()
            };
            let t = median(
                repeat,
                || run::under_gotrace(gotrace, work_dir, target, function, func, 1, &options),
                |t| &t.target,
            )?;
            rows.push(traced_row(tracer, probes, &t, reference));
        }
    }
    if !args.skip_bpftrace {
        for (probes, async_preempt_off) in [
            (Probes::Full, false),
            (Probes::Full, true),
            (Probes::EntryOnly, false),
        ] {
            let tracer = Tracer::Bpftrace { async_preempt_off };
            let entry_only = probes == Probes::EntryOnly;
            note(&format!(
                "{function}: bpftrace{}",
                if entry_only { " entry-only" } else { "" }
            ));
            let t = run::under_bpftrace(
                work_dir,
                target,
                function,
                func,
                entry_only,
                async_preempt_off,
            )?;
            rows.push(traced_row(tracer, probes, &t, reference));
        }
    }
    Ok(FunctionBench {
        function: function.to_owned(),
        sites: describe_sites(binary, &full_plan),
        rows,
    })
}

/// The loop program alone, `repeat` times: its row, and the output every traced run of it
/// must reproduce.
fn untraced(
    target: &LoopTarget,
    function: &str,
    func: &str,
    repeat: usize,
) -> Result<(Row, LoopOutput)> {
    note(&format!("{function}: untraced (median of {repeat})"));
    let run = median(repeat, || target.run(func, 1, &[]), |r| r)?;
    let Some(reference) = run.output.filter(|_| run.status.success()) else {
        bail!("the untraced loop program failed: {}", run.describe(None));
    };
    let baseline = row(
        Tracer::Untraced,
        Probes::None,
        &run,
        None,
        None,
        Some(&reference),
    );
    Ok((baseline, reference))
}

/// Runs `once` `n` times and keeps the run with the median ns/call — or the first run that
/// harmed the target, which must not be hidden.
fn median<T>(
    n: usize,
    mut once: impl FnMut() -> Result<T>,
    run: impl Fn(&T) -> &TargetRun,
) -> Result<T> {
    let mut runs = (0..n).map(|_| once()).collect::<Result<Vec<T>>>()?;
    if let Some(i) = runs
        .iter()
        .position(|r| !run(r).status.success() || run(r).output.is_none())
    {
        return Ok(runs.swap_remove(i));
    }
    let ns = |r: &T| run(r).output.map_or(f64::INFINITY, |o| o.ns_per_call);
    runs.sort_by(|a, b| ns(a).total_cmp(&ns(b)));
    Ok(runs.swap_remove(n / 2))
}

fn row(
    tracer: Tracer,
    probes: Probes,
    run: &TargetRun,
    delivered: Option<u64>,
    lost: Option<u64>,
    reference: Option<&LoopOutput>,
) -> Row {
    let harmed = run.harmed(reference);
    Row {
        tracer,
        probes,
        // A run that died part-way has no meaningful per-call figure.
        ns_per_call: run
            .output
            .filter(|_| run.status.success())
            .map(|o| o.ns_per_call),
        calls: run.output.map(|o| o.calls),
        delivered,
        lost,
        status: run.describe(reference),
        harmed,
        options: String::new(),
    }
}

fn traced_row(tracer: Tracer, probes: Probes, t: &Traced, reference: Option<&LoopOutput>) -> Row {
    row(
        tracer,
        probes,
        &t.target,
        Some(t.delivered),
        t.lost,
        reference,
    )
}

/// `entry jl, return ret ×2`: the instruction under each site decides what a hit costs
/// (emulated jumps ≈ 0.6 µs, single-stepped instructions ≈ 10 µs on a KVM guest).
fn describe_sites(binary: &GoBinary, plan: &ProbePlan) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for site in &plan.sites {
        let kind = match site.kind {
            SiteKind::Entry => "entry".to_owned(),
            SiteKind::Return => "return".to_owned(),
            #[allow(unreachable_patterns)] // the plan may add kinds (runtime hooks)
            other => format!("{other:?}").to_lowercase(),
        };
        let text = format!(
            "{kind} {}",
            mnemonic(binary, site.addr).unwrap_or_else(|| "?".into())
        );
        match parts.iter_mut().find(|(t, _)| *t == text) {
            Some((_, n)) => *n += 1,
            None => parts.push((text, 1)),
        }
    }
    parts
        .into_iter()
        .map(|(t, n)| if n > 1 { format!("{t} ×{n}") } else { t })
        .collect::<Vec<_>>()
        .join(", ")
}

fn mnemonic(binary: &GoBinary, addr: gotrace_binary::VirtAddr) -> Option<String> {
    let end = binary.function_at(addr)?.end;
    let bytes = binary.bytes_at(addr, (end.0 - addr.0).min(15)).ok()?;
    let mut decoder = iced_x86::Decoder::with_ip(64, bytes, addr.0, iced_x86::DecoderOptions::NONE);
    let ins = decoder.decode();
    (!ins.is_invalid()).then(|| format!("{:?}", ins.mnemonic()).to_lowercase())
}

/// Eight functions called by several goroutines, traced with a glob.
fn throughput(
    gotrace: &Path,
    work_dir: &Path,
    binary: &GoBinary,
    target: &LoopTarget,
) -> Result<Vec<Throughput>> {
    const GOROUTINES: u32 = 4;
    let pattern = "main.Op*";
    // The ops loop passes the default argument (10) in one iteration of 100.
    let keep_one_percent: &[&str] = &["--where", "x == 10"];
    let mut out = Vec::new();
    for (entry_only, extra_args) in [(true, &[][..]), (false, &[][..]), (false, keep_one_percent)] {
        let sites = plan_for(binary, pattern, entry_only)?.sites.len();
        let mode = match (entry_only, extra_args.is_empty()) {
            (true, _) => "gotrace --no-return",
            (false, true) => "gotrace, full",
            (false, false) => "gotrace --where 'x == 10' (1% kept)",
        };
        note(&format!(
            "throughput: {mode}, {pattern}, {GOROUTINES} goroutines"
        ));
        let options = GotraceOptions {
            entry_only,
            extra_args,
            ..Default::default()
        };
        let t = run::under_gotrace(
            gotrace, work_dir, target, pattern, "ops", GOROUTINES, &options,
        )?;
        out.push(Throughput {
            mode: format!("{mode} '{pattern}'"),
            goroutines: GOROUTINES,
            sites,
            calls: t.target.output.map(|o| o.calls),
            events: t.delivered,
            lost: t.lost,
            wall: t.wall,
            gotrace_cpu: t.tracer_cpu,
            status: t.target.describe(None),
        });
    }
    Ok(out)
}

fn attach_timings(
    args: &Args,
    build: &dyn Fn(&Path) -> Result<PathBuf, gotrace_gobuild::BuildError>,
    work_dir: &Path,
) -> Result<Vec<report::AttachTiming>> {
    let source_dir = work_dir.join("bench_many");
    many::generate(&source_dir, MANY_FUNCTIONS)?;
    note(&format!(
        "building a program with {MANY_FUNCTIONS} functions"
    ));
    let path = build(&source_dir)?;
    let binary = GoBinary::open(&path)?;
    let plan = plan_for(&binary, "main.F*", false)?;
    note(&format!(
        "{} functions, {} sites",
        plan.functions.len(),
        plan.sites.len()
    ));
    let mut out = Vec::new();
    for sites in [1_000, 10_000] {
        note(&format!("attach/detach {sites} sites, uprobe_multi"));
        out.push(many::time_attach(&path, &plan, sites, false)?);
    }
    if args.skip_per_site {
        return Ok(out);
    }
    note("attach/detach 1000 sites, one perf-event uprobe each");
    let mut per_site = many::time_attach(&path, &plan, 1_000, true)?;
    per_site
        .note
        .push_str("; 10,000 not run: ≈ 20 min to detach (costs doc)");
    out.push(per_site);
    Ok(out)
}
