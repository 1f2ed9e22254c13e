//! `gotrace stats`: calls counted in the kernel, per function — outcomes and a latency
//! histogram kept in BPF maps, no record per call — shown as a table every interval and as
//! histograms at the end. Targets, patterns, refusals, losses and stopping are `trace`'s.

use crate::cli::{FlameWidth, StatsArgs};
use crate::groups::{self, Group, TableContext};
use crate::stdio::Line;
use crate::trace::{self, CallSink, Flow, Stop, TraceRequest};
use crate::PrinterSink;
use anyhow::{Context, Result};
use gotrace_binary::GoBinary;
use gotrace_decode::{GroupNamer, Stacks};
use gotrace_kernel::{AttachReport, Counters, Session, Target, Waiter, Wake};
use gotrace_output::{ErrorCount, LatencyHistogram, Record, Stats, StatsRow, Summary};
use gotrace_plan::stats::{error_result, ErrorResult, FunctionStats};
use gotrace_plan::{ProbePlan, Recipe};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the loop looks at the clock (for the interval and `--duration`) when nothing
/// else wakes it.
const TICK: Duration = Duration::from_millis(50);

/// A function as the table shows it: its copies (an out-of-line body and inlined ones are
/// planned apart) added up.
struct Shown {
    name: String,
    copies: Vec<usize>,
    errors: ErrorCount,
}

/// The traced names, in plan order, with where each one's `error` result is.
fn shown(plan: &ProbePlan, errors: &[ErrorResult]) -> Vec<Shown> {
    let mut shown: Vec<Shown> = Vec::new();
    for (i, f) in plan.functions.iter().enumerate() {
        let count = match errors.get(i) {
            Some(ErrorResult::Register(_) | ErrorResult::Stack(_)) => ErrorCount::Counted(0),
            Some(ErrorResult::Unknown) => ErrorCount::Unknown(()),
            _ => ErrorCount::None,
        };
        match shown.iter_mut().find(|s| s.name == f.name) {
            // An inlined copy never returns on its own: its out-of-line body says.
            Some(s) => s.copies.push(i),
            None => shown.push(Shown {
                name: f.name.clone(),
                copies: vec![i],
                errors: count,
            }),
        }
        if f.inlined_into.is_none() {
            if let Some(s) = shown.iter_mut().find(|s| s.name == f.name) {
                s.errors = count;
            }
        }
    }
    shown
}

/// Each shown function's counts, from the plan's per-copy ones.
fn grouped(shown: &[Shown], per_copy: &[FunctionStats]) -> Vec<FunctionStats> {
    shown
        .iter()
        .map(|s| {
            let mut total = FunctionStats::default();
            for &i in &s.copies {
                if let Some(copy) = per_copy.get(i) {
                    total.add(copy);
                }
            }
            total
        })
        .collect()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The table of `stats` at `elapsed`, with each function's rate since `before`.
fn table(
    shown: &[Shown],
    stats: &[FunctionStats],
    before: &[u64],
    elapsed: Duration,
    since: Duration,
    last: bool,
    grouped: bool,
) -> Stats {
    Stats {
        rows: shown
            .iter()
            .zip(stats)
            .zip(before)
            .map(|((s, stats), &before)| {
                let mut row = StatsRow::new(
                    &s.name,
                    stats,
                    s.errors,
                    nanos(elapsed),
                    before,
                    nanos(since),
                );
                row.not_grouped = grouped.then_some(stats.not_grouped);
                row
            })
            .collect(),
        last,
    }
}

/// `--by`, `--top`, `--folded`, `--flamegraph`.
pub struct GroupOptions {
    pub by: Option<String>,
    pub top: usize,
    pub folded: Option<PathBuf>,
    pub flamegraph: Option<PathBuf>,
    pub width: FlameWidth,
}

/// `--by` in a session: names the kernel's groups and makes each function's table.
struct Grouping<'a> {
    namer: GroupNamer<'a>,
    by: &'a str,
    top: usize,
    /// The shown function of each plan index.
    shown_of: Vec<usize>,
    /// Per shown function, each group's calls at the last table.
    before: Vec<HashMap<String, u64>>,
}

impl Grouping<'_> {
    /// Each shown function's groups, and its table of them.
    fn tables(
        &mut self,
        session: &Session,
        shown: &[Shown],
        table: &Stats,
        since: Duration,
    ) -> Result<(Vec<Vec<Group>>, Vec<gotrace_output::GroupTable>)> {
        let groups = groups::merge(
            &self.namer,
            session.group_stats()?,
            &self.shown_of,
            shown.len(),
        );
        let tables = shown
            .iter()
            .zip(&table.rows)
            .zip(&groups)
            .zip(&mut self.before)
            .map(|(((s, row), groups), before)| {
                let cx = TableContext {
                    func: &s.name,
                    by: self.by,
                    errors: s.errors,
                    not_grouped: row.not_grouped.unwrap_or(0),
                    top: self.top,
                    elapsed_ns: row.elapsed_ns,
                    interval_ns: nanos(since),
                    last: table.last,
                };
                groups::table(&cx, groups, before)
            })
            .collect();
        Ok((groups, tables))
    }
}

impl PrinterSink {
    /// A record of the data `stats` produces (its tables and histograms): on stdout, in the
    /// chosen format.
    fn data(&mut self, record: &Record<'_>) -> Flow {
        self.exports.record(record);
        self.exports.flush();
        // Into a Vec: cannot fail.
        let _ = self.printer.record(record);
        self.buffered.push(Line::Message);
        self.flush(false)
    }
}

/// Counts the calls of `request`'s functions until a `stop` descriptor fires, the traced
/// process exits, `duration` passes or the output closes; a table every `interval`, then the
/// final table and (unless entry-only) each function's histogram.
fn run(
    request: &TraceRequest,
    interval: Duration,
    duration: Option<Duration>,
    sink: &mut PrinterSink,
    stop: &Stop<'_>,
    options: &GroupOptions,
    on_attached: impl FnOnce() -> Result<()>,
) -> Result<Summary> {
    let (binary, path, plan) = counting_plan(request, options, sink)?;
    let empty_types = gotrace_binary::types::TypeTable::default();
    // The table the plan's signatures index: DWARF's, or a stripped binary's runtime types.
    let types = gotrace_plan::signature_types(&binary).unwrap_or(&empty_types);
    let errors: Vec<ErrorResult> = plan
        .functions
        .iter()
        .map(|f| error_result(types, f))
        .collect();
    let shown = shown(&plan, &errors);
    let stacked = plan.groups.as_ref().is_some_and(|g| g.is_stack());
    let symbolizer = match stacked {
        true => Some(binary.symbolizer().context("--by stack")?),
        false => None,
    };
    let stacks = symbolizer.as_ref().map(Stacks::new);
    let no_names = HashMap::new();
    // Dynamic types are named from the runtime's descriptors (read only when needed).
    let type_names = match plan.groups.is_some() && !stacked {
        true => binary
            .runtime_methods()
            .map_or(&no_names, |m| &m.type_names),
        false => &no_names,
    };
    let mut grouping = plan.groups.as_ref().map(|by| Grouping {
        namer: GroupNamer::new(&plan, by, type_names, stacks.as_ref()),
        by: &by.text,
        top: options.top,
        shown_of: shown_of(&shown, plan.functions.len()),
        before: vec![HashMap::new(); shown.len()],
    });
    let exit_fd = match request.target {
        Target::Process(pid) => Some(gotrace_kernel::pidfd(pid)?),
        Target::Binary(_) => None,
    };
    let (session, report) = trace::attach(request, &plan, &path, sink, Some(&errors))?;
    stop.exit_on_signal(false);
    sink.record(&Record::Attached(&trace::attached(&plan, &report, &path)))?;
    on_attached()?;

    // Calls still running when their process exits or gotrace stops come back from the
    // in-flight table: counted here, by plan index.
    let in_flight = RefCell::new(vec![0u64; plan.functions.len()]);
    let handle = |raw: gotrace_plan::RawCall| {
        if let Some(n) = in_flight.borrow_mut().get_mut(raw.function as usize) {
            *n += 1;
        }
    };
    let read = |session: &Session| -> Result<Vec<FunctionStats>> {
        let mut per_copy = session.function_stats(plan.functions.len())?;
        for (stats, &n) in per_copy.iter_mut().zip(in_flight.borrow().iter()) {
            stats.in_flight += n;
        }
        Ok(grouped(&shown, &per_copy))
    };
    let started = Instant::now();
    let mut before = vec![0u64; shown.len()];
    let mut last_table = started;
    {
        let events = session.events(&handle)?;
        let mut watched: Vec<RawFd> = stop.fds.to_vec();
        watched.extend(exit_fd.as_ref().map(AsRawFd::as_raw_fd));
        let waiter = Waiter::new(events.fd(), &watched, TICK)?;
        let mut reported = Counters::default();
        loop {
            if waiter.wait()? == Wake::Stop {
                break;
            }
            // Only process exits come through the ring buffer.
            events.consume()?;
            let now = Instant::now();
            if duration.is_some_and(|d| now - started >= d) {
                break;
            }
            if now - last_table < interval {
                continue;
            }
            let stats = read(&session)?;
            let since = now - last_table;
            let shown_table = table(
                &shown,
                &stats,
                &before,
                now - started,
                since,
                false,
                grouping.is_some(),
            );
            before = stats.iter().map(FunctionStats::calls).collect();
            last_table = now;
            if sink.data(&Record::Stats(&shown_table)) == Flow::Closed
                || show_groups(&mut grouping, &session, &shown, &shown_table, since, sink)?.1
                    == Flow::Closed
            {
                break;
            }
            // A failed stderr stops the session like a failed stdout; the caller says so.
            if trace::report_losses(&session.counters()?, &mut reported, sink).is_err() {
                break;
            }
        }
        stop.exit_on_signal(true);
        session.detach();
        events.consume()?;
        // Detached: what is still in flight will not return while gotrace looks.
        session.drain_in_flight(&handle)?;
    }
    let now = Instant::now();
    let stats = read(&session)?;
    let since = now - last_table;
    let last = table(
        &shown,
        &stats,
        &before,
        now - started,
        since,
        true,
        grouping.is_some(),
    );
    sink.data(&Record::Stats(&last));
    let (groups, _) = show_groups(&mut grouping, &session, &shown, &last, since, sink)?;
    let names: Vec<&str> = shown.iter().map(|s| s.name.as_str()).collect();
    write_stacks(options, &groups, &names)?;
    if !plan.entry_only {
        for ((s, stats), row) in shown.iter().zip(&stats).zip(&last.rows) {
            let histogram = LatencyHistogram::new(&s.name, row, &stats.latency);
            sink.data(&Record::Histogram(&histogram));
        }
    }
    let mut summary = summary(&report, &stats);
    trace::add_counters(&mut summary, &session.counters()?);
    Ok(summary)
}

/// The plan for counting `request`'s calls, grouped `--by` if asked; its warnings recorded.
fn counting_plan(
    request: &TraceRequest,
    options: &GroupOptions,
    sink: &mut PrinterSink,
) -> Result<(GoBinary, PathBuf, ProbePlan)> {
    let (binary, path, mut plan) = trace::prepare(request)?;
    if let Some(by) = &options.by {
        let types = gotrace_plan::signature_types(&binary);
        let groups = gotrace_plan::filter::compile_group(by, &plan, types)
            .map_err(|e| crate::cli::UsageError(e.to_string()))?;
        plan.groups = Some(groups);
    }
    // Nothing is read at the sites: counting needs no values.
    for f in &mut plan.functions {
        f.entry_recipe = Recipe::default();
        f.return_recipe = Recipe::default();
    }
    plan.type_recipes.clear();
    for warning in &plan.warnings {
        let warning = gotrace_output::Warning::new(warning.to_string());
        sink.record(&Record::Warning(&warning))?;
    }
    Ok((binary, path, plan))
}

/// The run's summary from the sites attached and every shown function's final counts.
fn summary(report: &AttachReport, stats: &[FunctionStats]) -> Summary {
    let mut summary = Summary {
        sites_attached: report.attached,
        sites_failed: report.failed.len(),
        ..Summary::default()
    };
    for s in stats {
        summary.calls += s.returned + s.entered;
        summary.panicked += s.panicked;
        summary.exited += s.exited;
        summary.in_flight += s.in_flight;
        summary.abandoned += s.abandoned;
        summary.return_not_seen += s.return_not_seen;
    }
    summary.unreturned = summary.panicked
        + summary.exited
        + summary.in_flight
        + summary.abandoned
        + summary.return_not_seen;
    summary
}

/// The shown function of each plan index.
fn shown_of(shown: &[Shown], functions: usize) -> Vec<usize> {
    let mut of = vec![0; functions];
    for (s, shown) in shown.iter().enumerate() {
        for &copy in &shown.copies {
            if let Some(slot) = of.get_mut(copy) {
                *slot = s;
            }
        }
    }
    of
}

/// `--by`: each function's table of groups after `table`; the groups, for the stacks' files.
fn show_groups(
    grouping: &mut Option<Grouping<'_>>,
    session: &Session,
    shown: &[Shown],
    table: &Stats,
    since: Duration,
    sink: &mut PrinterSink,
) -> Result<(Vec<Vec<Group>>, Flow)> {
    let Some(grouping) = grouping else {
        return Ok((Vec::new(), Flow::Open));
    };
    let (groups, tables) = grouping.tables(session, shown, table, since)?;
    let mut flow = Flow::Open;
    for t in &tables {
        flow = sink.data(&Record::Groups(t));
    }
    Ok((groups, flow))
}

/// `--folded`, `--flamegraph`: every stack counted (all groups, not only the top ones).
fn write_stacks(options: &GroupOptions, groups: &[Vec<Group>], names: &[&str]) -> Result<()> {
    if let Some(path) = &options.folded {
        groups::write_folded(
            path,
            &groups::folded_lines(groups, names, FlameWidth::Calls),
        )?;
    }
    if let Some(path) = &options.flamegraph {
        let lines = groups::folded_lines(groups, names, options.width);
        groups::write_flamegraph(path, &lines, options.width)?;
    }
    Ok(())
}

/// `gotrace stats`.
pub fn run_cli(args: StatsArgs) -> Result<()> {
    let (mut sink, messages, signals) = crate::open_output(args.json)?;
    let (binary, functions) = args.binary_and_functions()?;
    let target = crate::target_of(binary, args.pid, &mut sink)?;
    sink.exports = crate::export::Exports::start(
        args.metrics.as_deref(),
        None,
        crate::clock(),
        &crate::export::STATS_BUCKETS_NS,
    )?;
    let request = TraceRequest {
        target,
        functions,
        exclude: args.exclude.clone(),
        entry_only: args.no_return,
        limits: gotrace_plan::Limits::default(),
        count: None,
        debug_file: args.debug_file.clone(),
        filter: (&args.filter).into(),
        stack: false,
    };
    let options = GroupOptions {
        by: args.group_by()?,
        top: usize::try_from(args.top).unwrap_or(usize::MAX),
        folded: args.folded.clone(),
        flamegraph: args.flamegraph.clone(),
        width: args.flamegraph_by,
    };
    trace::target_binary(&request.target)?;
    gotrace_kernel::check_environment()?;
    let stop_fds = [signals.pipe.as_raw_fd()];
    let stop = Stop {
        fds: &stop_fds,
        exit_on_signal: Some(&signals.exit_now),
    };
    let result = run(
        &request,
        Duration::from_secs_f64(args.interval),
        args.duration.map(Duration::from_secs_f64),
        &mut sink,
        &stop,
        &options,
        || match &args.ready_file {
            Some(ready) => trace::write_ready_file(ready, 1),
            None => Ok(()),
        },
    );
    signals.exit_now.store(true, Ordering::SeqCst);
    let delivery = sink.finish(Instant::now() + crate::DRAIN_GRACE);
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            messages.finish(Instant::now() + crate::DRAIN_GRACE);
            return Err(e);
        }
    };
    crate::finish_session(
        &mut sink,
        messages,
        &request.target,
        &summary,
        delivery.error,
    )
}
