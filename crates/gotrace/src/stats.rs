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
    let grouping = plan.groups.as_ref().map(|by| Grouping {
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

    let in_flight = RefCell::new(vec![0u64; plan.functions.len()]);
    let started = Instant::now();
    let mut tally = Tally {
        shown: &shown,
        grouping,
        in_flight: &in_flight,
        started,
        last_table: started,
        before: vec![0u64; shown.len()],
    };
    let mut watched: Vec<RawFd> = stop.fds.to_vec();
    watched.extend(exit_fd.as_ref().map(AsRawFd::as_raw_fd));
    let until = Until {
        watched: &watched,
        interval,
        duration,
    };
    count_until_stopped(&mut tally, &session, &until, stop, sink)?;
    last_records(
        &mut tally,
        &session,
        &report,
        plan.entry_only,
        options,
        sink,
    )
}

/// Between tables: each shown function's calls at the last one and when it was shown (the
/// base of the next table's rates), and the calls that came back from the in-flight table.
struct Tally<'a> {
    shown: &'a [Shown],
    grouping: Option<Grouping<'a>>,
    /// Calls still running when their process exits or gotrace stops come back from the
    /// in-flight table: counted here, one slot per plan index.
    in_flight: &'a RefCell<Vec<u64>>,
    started: Instant,
    last_table: Instant,
    before: Vec<u64>,
}

impl Tally<'_> {
    /// Each shown function's counts now, the calls back from the in-flight table added.
    fn read(&self, session: &Session) -> Result<Vec<FunctionStats>> {
        let mut per_copy = session.function_stats(self.in_flight.borrow().len())?;
        for (stats, &n) in per_copy.iter_mut().zip(self.in_flight.borrow().iter()) {
            stats.in_flight += n;
        }
        Ok(grouped(self.shown, &per_copy))
    }

    /// The table at `now` (the final one when `last`), with the counts it shows and the time
    /// since the previous table; it becomes the base of the next one's rates.
    fn table(
        &mut self,
        session: &Session,
        now: Instant,
        last: bool,
    ) -> Result<(Vec<FunctionStats>, Stats, Duration)> {
        let stats = self.read(session)?;
        let since = now - self.last_table;
        let shown_table = table(
            self.shown,
            &stats,
            &self.before,
            now - self.started,
            since,
            last,
            self.grouping.is_some(),
        );
        self.before = stats.iter().map(FunctionStats::calls).collect();
        self.last_table = now;
        Ok((stats, shown_table, since))
    }

    /// `--by`: each function's table of groups after `table`; the groups, for the stacks'
    /// files.
    fn show_groups(
        &mut self,
        session: &Session,
        table: &Stats,
        since: Duration,
        sink: &mut PrinterSink,
    ) -> Result<(Vec<Vec<Group>>, Flow)> {
        let Some(grouping) = &mut self.grouping else {
            return Ok((Vec::new(), Flow::Open));
        };
        let (groups, tables) = grouping.tables(session, self.shown, table, since)?;
        let mut flow = Flow::Open;
        for t in &tables {
            flow = sink.data(&Record::Groups(t));
        }
        Ok((groups, flow))
    }
}

/// When the loop shows a table and when it stops: a `watched` descriptor fires (a stop
/// signal or the traced process's exit), or `duration` passes.
struct Until<'a> {
    watched: &'a [RawFd],
    interval: Duration,
    duration: Option<Duration>,
}

/// Counts one call back from the in-flight table.
fn count_in_flight(in_flight: &RefCell<Vec<u64>>) -> impl Fn(gotrace_plan::RawCall) + '_ {
    move |raw| {
        if let Some(n) = in_flight.borrow_mut().get_mut(raw.function as usize) {
            *n += 1;
        }
    }
}

/// Shows a table every `until.interval` until it is time to stop or the output closes, then
/// detaches and counts the calls still in flight.
fn count_until_stopped(
    tally: &mut Tally<'_>,
    session: &Session,
    until: &Until<'_>,
    stop: &Stop<'_>,
    sink: &mut PrinterSink,
) -> Result<()> {
    let handle = count_in_flight(tally.in_flight);
    let events = session.events(&handle)?;
    let waiter = Waiter::new(events.fd(), until.watched, TICK)?;
    let mut reported = Counters::default();
    loop {
        if waiter.wait()? == Wake::Stop {
            break;
        }
        // Only process exits come through the ring buffer.
        events.consume()?;
        let now = Instant::now();
        if until.duration.is_some_and(|d| now - tally.started >= d) {
            break;
        }
        if now - tally.last_table < until.interval {
            continue;
        }
        let (_, shown_table, since) = tally.table(session, now, false)?;
        if sink.data(&Record::Stats(&shown_table)) == Flow::Closed
            || tally.show_groups(session, &shown_table, since, sink)?.1 == Flow::Closed
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
    Ok(())
}

/// The final table, each function's groups and the stacks' files, each function's histogram
/// (unless entry-only), and the summary.
fn last_records(
    tally: &mut Tally<'_>,
    session: &Session,
    report: &AttachReport,
    entry_only: bool,
    options: &GroupOptions,
    sink: &mut PrinterSink,
) -> Result<Summary> {
    let (stats, last, since) = tally.table(session, Instant::now(), true)?;
    sink.data(&Record::Stats(&last));
    let (groups, _) = tally.show_groups(session, &last, since, sink)?;
    let names: Vec<&str> = tally.shown.iter().map(|s| s.name.as_str()).collect();
    write_stacks(options, &groups, &names)?;
    if !entry_only {
        for ((s, stats), row) in tally.shown.iter().zip(&stats).zip(&last.rows) {
            let histogram = LatencyHistogram::new(&s.name, row, &stats.latency);
            sink.data(&Record::Histogram(&histogram));
        }
    }
    let mut summary = summary(report, &stats);
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
