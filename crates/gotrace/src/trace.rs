//! A tracing session, in pipeline order: binary → plan → attach → events → decode → output.

use anyhow::{Context, Result};
use gotrace_binary::GoBinary;
use gotrace_decode::{DecodedCall, Decoder};
use gotrace_kernel::{
    proc, AttachMethod, AttachReport, Counters, InFlightNow, Session, Target, Waiter,
};
use gotrace_output::{
    AttachMethod as Method, Attached, FailedSite, InlinedCopies, LossCause, Lost, Note, Record,
    Refused, Summary, Warning,
};
use gotrace_plan::{CallKind, PlanOptions, ProbePlan};
use std::cell::{Cell, RefCell};
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::stdio::OutputError;
use pump::{name_over_rate, pump};

mod pump;

/// How long an event may wait in the ring buffer before it is printed.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Plans this big get a line before attaching (per-site attaching can take a while).
const LARGE_PLAN: usize = 1000;
/// Events decoded between two flushes of the output.
const BATCH: usize = 4096;

#[derive(Clone)]
pub struct TraceRequest {
    pub target: Target,
    pub functions: Vec<String>,
    pub exclude: Vec<String>,
    pub entry_only: bool,
    pub limits: gotrace_plan::Limits,
    /// Stop after this many calls.
    pub count: Option<u64>,
    /// Separate debug information of the binary's build (`--debug-file`).
    pub debug_file: Option<PathBuf>,
    pub filter: Filter,
    /// Each call's stack at entry (`--stack`).
    pub stack: bool,
}

/// Which calls are reported: `--where` and `--min-duration`, decided in the kernel.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub where_expr: Option<String>,
    pub min_duration_ns: u64,
    /// `--sample`: one call in this many (0: all).
    pub sample_every: u32,
    /// `--max-rate`: calls a second per function reported at most (0: no limit).
    pub max_rate: u64,
}

impl From<&crate::cli::FilterArgs> for Filter {
    fn from(args: &crate::cli::FilterArgs) -> Filter {
        Filter {
            where_expr: args.where_expr.clone(),
            min_duration_ns: args.min_duration.unwrap_or(0),
            ..Filter::default()
        }
    }
}

/// What the output can take after a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Open,
    /// Its buffers are full (the reader is slow or paused): leave events in the ring buffer
    /// for now.
    Full,
    /// It is gone (`| head`) or failed: stop tracing.
    Closed,
}

/// Where decoded calls, and everything else a session says, go.
pub trait CallSink {
    fn call(&mut self, call: &DecodedCall<'_>);
    /// Anything but a call: the attach report, a warning, a note, a loss. Fails when it could
    /// not be said (stderr is gone), which stops the session.
    fn record(&mut self, record: &Record<'_>) -> Result<(), OutputError>;
    /// End of a batch: hands buffered output on. `stopping`: the probes are detached and a
    /// full output will not be waited for, so the sink counts what it has no room for instead
    /// of keeping it.
    fn flush(&mut self, stopping: bool) -> Flow;
    /// Holds finished calls until their callers are known (`--graph`): wants to be told,
    /// now and then, which calls are in flight.
    fn waits_for_callers(&self) -> bool {
        false
    }
    /// The calls in flight at `now.at_ns`; every call that ended before then has been given
    /// to [`CallSink::call`].
    fn in_flight(&mut self, _now: &InFlightNow) {}
}

/// How a session is told to stop.
pub struct Stop<'a> {
    /// Readable when tracing should stop (a signal pipe, a stop request).
    pub fds: &'a [RawFd],
    /// Cleared while the event loop runs, set again once it stops: while set, a signal ends
    /// the process at once (see `Signals` in main.rs).
    pub exit_on_signal: Option<&'a AtomicBool>,
}

impl Stop<'_> {
    pub(crate) fn exit_on_signal(&self, yes: bool) {
        if let Some(flag) = self.exit_on_signal {
            flag.store(yes, Ordering::SeqCst);
        }
    }
}

/// The binary a target runs: the path to read its ELF from and to attach uprobes to.
pub fn target_binary(target: &Target) -> Result<PathBuf> {
    match target {
        Target::Binary(path) => {
            if !path.exists() {
                anyhow::bail!(
                    "{}: no such file; give the path of a Go executable",
                    path.display()
                );
            }
            Ok(path.clone())
        }
        Target::Process(pid) => Ok(proc::exe(*pid)?),
    }
}

/// Opens the target's binary and plans the probes.
pub fn prepare(request: &TraceRequest) -> Result<(GoBinary, PathBuf, ProbePlan)> {
    let path = target_binary(&request.target)?;
    let binary = crate::debuginfo::open(&path, request.debug_file.as_deref())?;
    let mut plan = gotrace_plan::plan(&binary, &request.functions, plan_options(request, &[]))?;
    if let Some(text) = &request.filter.where_expr {
        plan = left_out_by_where(text, &binary, plan, request)?;
        let types = gotrace_plan::signature_types(&binary);
        let filters = gotrace_plan::filter::compile(text, &plan, types)
            .map_err(|e| crate::cli::UsageError(e.to_string()))?;
        plan.warnings.extend(filters.warning());
        plan.filters = Some(filters);
    }
    plan.min_duration_ns = request.filter.min_duration_ns;
    plan.sample_every = request.filter.sample_every;
    plan.max_rate = request.filter.max_rate;
    Ok((binary, path, plan))
}

fn plan_options(request: &TraceRequest, also_exclude: &[String]) -> PlanOptions {
    PlanOptions {
        entry_only: request.entry_only,
        stack: request.stack,
        exclude: [&request.exclude[..], also_exclude].concat(),
        limits: request.limits,
    }
}

/// With a glob, the functions that lack a name `--where` uses are left out (planned anew without
/// them) and a warning says so; a function named exactly must have them all.
fn left_out_by_where(
    text: &str,
    binary: &GoBinary,
    plan: ProbePlan,
    request: &TraceRequest,
) -> Result<ProbePlan> {
    let types = gotrace_plan::signature_types(binary);
    let lacking = gotrace_plan::filter::lacking_names(text, &plan, types)
        .map_err(|e| crate::cli::UsageError(e.to_string()))?;
    let globbed = request
        .functions
        .iter()
        .any(|f| gotrace_plan::pattern::Pattern::new(f).is_glob());
    let Some((_, first)) = lacking.first() else {
        return Ok(plan);
    };
    if !globbed || lacking.len() == plan.functions.len() {
        return Err(crate::cli::UsageError(first.to_string()).into());
    }
    let names: Vec<String> = lacking.iter().map(|(name, _)| name.clone()).collect();
    let mut narrowed =
        gotrace_plan::plan(binary, &request.functions, plan_options(request, &names))?;
    narrowed.warnings.push(format!(
        "--where: {} of the functions matched are not traced: they lack a name it uses (e.g. {})",
        lacking.len(),
        first.message
    ));
    Ok(narrowed)
}

/// Runs a session until a `stop` descriptor becomes readable, the traced process exits, the
/// output closes, or `count` calls were seen. `on_attached` runs once every probe is in place
/// and the sink has been told so.
/// Stopping detaches first, whatever the output is doing; the events already in the ring buffer
/// then go to the sink, which writes or counts them.
pub fn run(
    request: &TraceRequest,
    sink: &mut dyn CallSink,
    stop: &Stop<'_>,
    on_attached: impl FnOnce() -> Result<()>,
) -> Result<Summary> {
    let (binary, path, plan) = prepare(request)?;
    for warning in &plan.warnings {
        sink.record(&Record::Warning(&Warning::new(warning.to_string())))?;
    }
    let empty_types = gotrace_binary::types::TypeTable::default();
    let types = gotrace_plan::signature_types(&binary).unwrap_or(&empty_types);
    let symbolizer = match request.stack {
        true => Some(binary.symbolizer().context("--stack")?),
        false => None,
    };
    let mut decoder = Decoder::new(&plan, types, binary.runtime_types().unwrap_or_default());
    if let Some(symbolizer) = &symbolizer {
        decoder = decoder.with_stacks(symbolizer);
    }

    // Opened before attaching, so a process exiting meanwhile still ends the session cleanly;
    // readable once the traced process has exited.
    let exit_fd = match request.target {
        Target::Process(pid) => Some(gotrace_kernel::pidfd(pid)?),
        Target::Binary(_) => None,
    };
    let (session, report) = attach(request, &plan, &path, sink, None)?;
    // Before anyone is told the probes are ready: a signal from then on must stop cleanly.
    stop.exit_on_signal(false);
    sink.record(&Record::Attached(&attached(&plan, &report, &path)))?;
    on_attached()?;

    let mut summary = Summary {
        sites_attached: report.attached,
        sites_failed: report.failed.len(),
        ..Summary::default()
    };
    let limit = request.count.unwrap_or(u64::MAX);
    let counted = Counted::default();
    let sink = RefCell::new(sink);
    // Reused for every event: decoding a call of scalars allocates nothing.
    let call = RefCell::new(DecodedCall::default());
    // Every call the kernel side reports, from the ring buffer or drained in flight at the end.
    let handle = |raw: gotrace_plan::RawCall| {
        let mut call = call.borrow_mut();
        if counted.calls.get() >= limit || !decoder.decode_into(&raw, &mut call) {
            return;
        }
        counted.add(&raw, &call);
        sink.borrow_mut().call(&call);
    };
    deliver_until_stopped(
        &session,
        &plan,
        stop,
        exit_fd.as_ref(),
        &sink,
        &handle,
        || counted.calls.get() >= limit,
    )?;
    counted.add_to(&mut summary);
    add_counters(&mut summary, &session.counters()?);
    Ok(summary)
}

/// What `run` counts of the calls it hands on, for the summary.
#[derive(Default)]
struct Counted {
    calls: Cell<u64>,
    outcomes: RefCell<Outcomes>,
    truncated: Cell<u64>,
    not_read: Cell<u64>,
    args_lost: Cell<u64>,
}

impl Counted {
    fn add(&self, raw: &gotrace_plan::RawCall, call: &DecodedCall<'_>) {
        self.calls.set(self.calls.get() + 1);
        self.outcomes.borrow_mut().add(call.outcome);
        if raw.entry_data_lost {
            self.args_lost.set(self.args_lost.get() + 1);
        }
        // One pass over the values on the per-event path.
        for v in call.args.iter().chain(call.results.iter()).flatten() {
            self.truncated
                .set(self.truncated.get() + u64::from(v.value.is_truncated()));
            self.not_read
                .set(self.not_read.get() + u64::from(v.value.has_unread_part()));
        }
    }

    fn add_to(self, summary: &mut Summary) {
        let outcomes = self.outcomes.into_inner();
        summary.panicked = outcomes.panicked;
        summary.exited = outcomes.exited;
        summary.in_flight = outcomes.in_flight;
        summary.abandoned = outcomes.abandoned;
        summary.return_not_seen = outcomes.return_not_seen;
        summary.args_lost = self.args_lost.get();
        summary.truncated_values = self.truncated.get();
        summary.values_not_read = self.not_read.get();
    }
}

/// Hands events to the sink until a `stop` descriptor fires, the traced process exits
/// (`exit_fd`), the output closes or `done`; then detaches and hands on what the ring buffer
/// still holds and the calls still in flight.
fn deliver_until_stopped(
    session: &Session,
    plan: &ProbePlan,
    stop: &Stop<'_>,
    exit_fd: Option<&OwnedFd>,
    sink: &RefCell<&mut dyn CallSink>,
    handle: &dyn Fn(gotrace_plan::RawCall),
    done: impl Fn() -> bool,
) -> Result<()> {
    let events = session.events(handle)?;
    let mut watched: Vec<RawFd> = stop.fds.to_vec();
    if let Some(fd) = exit_fd {
        use std::os::fd::AsRawFd;
        watched.push(fd.as_raw_fd());
    }
    let waiter = Waiter::new(events.fd(), &watched, FLUSH_INTERVAL)?;
    let mut over_rate_named = vec![false; plan.functions.len()];
    pump(
        (session, plan),
        &mut over_rate_named,
        &events,
        &waiter,
        sink,
        done,
    )?;
    // From here a signal may end the process at once: the kernel completes any detach
    // still under way when the process's descriptors close.
    stop.exit_on_signal(true);
    session.detach();
    while events.consume_at_most(BATCH)? > 0 {
        sink.borrow_mut().flush(true);
    }
    // Detached and drained: what is still in flight will not return while gotrace looks.
    session.drain_in_flight(handle)?;
    if plan.max_rate > 0 {
        name_over_rate(session, plan, &mut over_rate_named, *sink.borrow_mut())?;
    }
    sink.borrow_mut().flush(true);
    Ok(())
}

/// Attaches the plan's probes, saying what could not be attached. With `stats` (where each
/// function's `error` result is), calls are counted in the kernel instead of reported.
pub(crate) fn attach(
    request: &TraceRequest,
    plan: &ProbePlan,
    path: &Path,
    sink: &mut dyn CallSink,
    stats: Option<&[gotrace_plan::stats::ErrorResult]>,
) -> Result<(Session, AttachReport)> {
    let site_count = plan.all_sites().count();
    if site_count >= LARGE_PLAN {
        let message = format!(
            "attaching {site_count} sites in {} functions…",
            plan.functions.len()
        );
        sink.record(&Record::Note(&Note { message }))?;
    }
    if !gotrace_kernel::uprobe_multi_supported() && site_count > gotrace_kernel::PER_SITE_LIMIT {
        anyhow::bail!(
            "{site_count} sites to attach, and without uprobe_multi links (Linux 6.6+) each needs a uprobe of its own: detaching more than {} of those would hold gotrace for many seconds after Ctrl-C; trace fewer functions, or use --no-return",
            gotrace_kernel::PER_SITE_LIMIT
        );
    }
    let alias = utf8_alias(path)?;
    let attach_path = alias.as_ref().map_or(path, |(p, _)| p.as_path());
    let session = match stats {
        Some(errors) => Session::attach_stats(plan, errors, attach_path, &request.target)?,
        None => Session::attach(plan, attach_path, &request.target)?,
    };
    let report = session.report().clone();
    for (site, reason) in &report.failed {
        let owner = plan
            .functions
            .get(site.function as usize)
            .map_or("", |f| f.name.as_str());
        let warning = Warning::site_not_attached(FailedSite {
            function: owner.to_owned(),
            kind: site.kind.label().to_owned(),
            addr: site.addr.to_string(),
            reason: reason.to_string(),
        });
        sink.record(&Record::Warning(&warning))?;
    }
    for warning in &report.warnings {
        sink.record(&Record::Warning(&Warning::new(warning.to_string())))?;
    }
    Ok((session, report))
}

/// The BPF side's counts of what it could not report.
pub(crate) fn add_counters(summary: &mut Summary, counters: &Counters) {
    summary.lost_ring_full = counters.lost;
    summary.lost_busy = counters.busy;
    summary.unmatched_returns = counters.unmatched_returns;
    summary.begun_while_stopping = counters.stopping;
    summary.inflight_full = counters.inflight_full;
    summary.growth_restarts = counters.growth_restarts;
    summary.read_failures = counters.read_failures;
    summary.exits_lost = counters.exits_lost;
    summary.filtered_out = counters.filtered;
    summary.filter_unread = counters.filter_unread;
    summary.records = counters.records;
    summary.sampled_out = counters.sampled_out;
    summary.over_rate = counters.over_rate;
    summary.returns_unread = counters.site_unread;
}

/// Calls that did not return, by how they ended.
#[derive(Default)]
struct Outcomes {
    panicked: u64,
    exited: u64,
    in_flight: u64,
    abandoned: u64,
    return_not_seen: u64,
}

impl Outcomes {
    fn add(&mut self, kind: CallKind) {
        match kind {
            CallKind::Returned | CallKind::Entered | CallKind::Inlined => {}
            CallKind::Panicked => self.panicked += 1,
            CallKind::Exited => self.exited += 1,
            CallKind::InFlight => self.in_flight += 1,
            CallKind::Abandoned => self.abandoned += 1,
            CallKind::ReturnNotSeen => self.return_not_seen += 1,
        }
    }
}

/// Says so, while tracing, when the BPF side had to drop something since last time.
pub(crate) fn report_losses(
    now: &Counters,
    reported: &mut Counters,
    sink: &mut dyn CallSink,
) -> Result<(), OutputError> {
    let causes = [
        (now.lost, reported.lost, LossCause::LostRingFull),
        (
            now.inflight_full,
            reported.inflight_full,
            LossCause::InflightFull,
        ),
        (
            now.read_failures,
            reported.read_failures,
            LossCause::ReadFailures,
        ),
        (now.busy, reported.busy, LossCause::LostBusy),
    ];
    for (calls, before, cause) in causes {
        if calls > before {
            sink.record(&Record::Lost(&Lost { cause, calls }))?;
        }
    }
    *reported = *now;
    Ok(())
}

/// `/proc/self/fd/N` for a path that is not UTF-8 (libbpf takes paths as strings), with the
/// file it names, which must stay open while the alias is used.
fn utf8_alias(path: &Path) -> Result<Option<(PathBuf, std::fs::File)>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if path.to_str().is_some() {
        return Ok(None);
    }
    // O_PATH: names the file without opening it for reading.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let alias = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    Ok(Some((alias, file)))
}

/// What a session attached: the functions (each name once: an inlined copy is planned as a
/// function of its own), the sites by kind, and what a pattern matched but is not traced.
pub(crate) fn attached(plan: &ProbePlan, report: &AttachReport, binary: &Path) -> Attached {
    use gotrace_plan::SiteKind;
    let mut functions: Vec<String> = Vec::new();
    for f in &plan.functions {
        if !functions.contains(&f.name) {
            functions.push(f.name.clone());
        }
    }
    let inlined = functions
        .iter()
        .filter_map(|name| {
            let copies = |inlined: bool| {
                plan.functions
                    .iter()
                    .filter(|f| &f.name == name && f.inlined_into.is_some() == inlined)
                    .count()
            };
            let (copies, inlined_sites) = (copies(false), copies(true));
            (inlined_sites > 0).then(|| InlinedCopies {
                function: name.clone(),
                copies,
                inlined_sites,
            })
        })
        .collect();
    let count = |kinds: &[SiteKind]| {
        plan.sites
            .iter()
            .filter(|s| kinds.contains(&s.kind))
            .count()
    };
    Attached {
        binary: binary.display().to_string(),
        functions,
        inlined,
        sites: report.attached,
        sites_failed: report.failed.len(),
        entry_sites: count(&[SiteKind::Entry, SiteKind::EntryReturn]),
        return_sites: count(&[SiteKind::Return]),
        inlined_sites: count(&[SiteKind::Inlined]),
        runtime_hooks: plan.runtime_hooks.len(),
        method: match report.method {
            AttachMethod::UprobeMulti => Method::UprobeMulti,
            AttachMethod::PerSite => Method::PerSite,
        },
        elapsed_ns: u64::try_from(report.elapsed.as_nanos()).unwrap_or(u64::MAX),
        signatures: match &plan.debug_source {
            gotrace_binary::DebugSource::None => {
                format!("no DWARF; signatures: {}", plan.signature_sources())
            }
            source => format!("signatures from {source}"),
        },
        refused: plan
            .refused
            .iter()
            .map(|(name, why)| Refused {
                function: name.clone(),
                category: why.category().to_owned(),
                reason: why.to_string(),
                instruction: matches!(why, gotrace_plan::Refusal::Instruction { .. }),
            })
            .collect(),
    }
}

/// Writes `path` atomically so a reader never sees it half-written: gotrace's PID, then how
/// many times it has attached (more than once when the traced file was rebuilt).
pub fn write_ready_file(path: &Path, attaches: u32) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, format!("{}\n{attaches}\n", std::process::id()))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
