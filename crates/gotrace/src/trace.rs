//! A tracing session, in pipeline order: binary → plan → attach → events → decode → output.

use anyhow::{Context, Result};
use gotrace_binary::GoBinary;
use gotrace_decode::{DecodedCall, Decoder};
use gotrace_kernel::{
    proc, AttachMethod, AttachReport, Counters, EventStream, Session, Target, Waiter, Wake,
};
use gotrace_output::Summary;
use gotrace_plan::{CallKind, PlanOptions, ProbePlan};
use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long an event may wait in the ring buffer before it is printed.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Plans this big get a line before attaching (per-site attaching can take a while).
const LARGE_PLAN: usize = 1000;
/// How often the BPF side's loss counters are checked while tracing.
const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// Events decoded between two flushes of the output.
const BATCH: usize = 4096;
/// Events decoded between two looks at the stop signals: well under a millisecond of work on an
/// idle machine, a few when gotrace gets a fraction of a CPU under overload (a batch of 4096 then
/// took half a second), so a stop is seen promptly however events come.
const CHUNK: usize = 64;

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

/// Where decoded calls go.
pub trait CallSink {
    fn call(&mut self, call: &DecodedCall<'_>);
    /// End of a batch: hands buffered output on. `stopping`: the probes are detached and a
    /// full output will not be waited for, so the sink counts what it has no room for instead
    /// of keeping it.
    fn flush(&mut self, stopping: bool) -> Flow;
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
    fn exit_on_signal(&self, yes: bool) {
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
    let plan = gotrace_plan::plan(
        &binary,
        &request.functions,
        PlanOptions {
            entry_only: request.entry_only,
            exclude: request.exclude.clone(),
            limits: request.limits,
        },
    )?;
    Ok((binary, path, plan))
}

/// Runs a session until a `stop` descriptor becomes readable, the traced process exits, the
/// output closes, or `count` calls were seen. `on_attached` runs once every probe is in place.
/// Stopping detaches first, whatever the output is doing; the events already in the ring buffer
/// then go to the sink, which writes or counts them.
pub fn run(
    request: &TraceRequest,
    sink: &mut dyn CallSink,
    stop: &Stop<'_>,
    on_attached: impl FnOnce(&ProbePlan, &AttachReport) -> Result<()>,
) -> Result<Summary> {
    let (binary, path, plan) = prepare(request)?;
    for warning in &plan.warnings {
        crate::say!("gotrace: warning: {warning}")?;
    }
    if let Some(line) = refused_line(&plan) {
        crate::say!("{line}")?;
    }
    if let Some(note) = inlined_note(&plan) {
        crate::say!("{note}")?;
    }
    let empty_types = gotrace_binary::types::TypeTable::default();
    let types = match binary.dwarf() {
        Ok(Some(d)) => d.types(),
        _ => &empty_types,
    };
    let decoder = Decoder::new(&plan, types, binary.runtime_types().unwrap_or_default());

    // Opened before attaching, so a process exiting meanwhile still ends the session cleanly;
    // readable once the traced process has exited.
    let exit_fd = match request.target {
        Target::Process(pid) => Some(gotrace_kernel::pidfd(pid)?),
        Target::Binary(_) => None,
    };
    let site_count = plan.all_sites().count();
    if site_count >= LARGE_PLAN {
        crate::say!(
            "gotrace: attaching {site_count} sites in {} functions…",
            plan.functions.len()
        )?;
    }
    if !gotrace_kernel::uprobe_multi_supported() && site_count > gotrace_kernel::PER_SITE_LIMIT {
        anyhow::bail!(
            "{site_count} sites to attach, and without uprobe_multi links (Linux 6.6+) each needs a uprobe of its own: detaching more than {} of those would hold gotrace for many seconds after Ctrl-C; trace fewer functions, or use --no-return",
            gotrace_kernel::PER_SITE_LIMIT
        );
    }
    let alias = utf8_alias(&path)?;
    let attach_path = alias.as_ref().map_or(path.as_path(), |(p, _)| p.as_path());
    let session = Session::attach(&plan, attach_path, &request.target)?;
    let report = session.report().clone();
    for (site, reason) in &report.failed {
        let owner = plan
            .functions
            .get(site.function as usize)
            .map_or("", |f| f.name.as_str());
        crate::say!(
            "gotrace: warning: could not attach the {} probe {owner} at {}: {reason}",
            site.kind.label(),
            site.addr
        )?;
    }
    for warning in &report.warnings {
        crate::say!("gotrace: warning: {warning}")?;
    }
    // Before anyone is told the probes are ready: a signal from then on must stop cleanly.
    stop.exit_on_signal(false);
    on_attached(&plan, &report)?;

    let mut summary = Summary {
        sites_attached: report.attached,
        sites_failed: report.failed.len(),
        ..Summary::default()
    };
    let limit = request.count.unwrap_or(u64::MAX);
    let calls = Cell::new(0u64);
    let outcomes = RefCell::new(Outcomes::default());
    let truncated = Cell::new(0u64);
    let not_read = Cell::new(0u64);
    let args_lost = Cell::new(0u64);
    let sink = RefCell::new(sink);
    // Reused for every event: decoding a call of scalars allocates nothing.
    let call = RefCell::new(DecodedCall::default());
    // Every call the kernel side reports, from the ring buffer or drained in flight at the end.
    let handle = |raw: gotrace_plan::RawCall| {
        let mut call = call.borrow_mut();
        if calls.get() >= limit || !decoder.decode_into(&raw, &mut call) {
            return;
        }
        calls.set(calls.get() + 1);
        outcomes.borrow_mut().add(call.outcome);
        if raw.entry_data_lost {
            args_lost.set(args_lost.get() + 1);
        }
        // One pass over the values on the per-event path.
        for v in call.args.iter().chain(call.results.iter()).flatten() {
            truncated.set(truncated.get() + u64::from(v.value.is_truncated()));
            not_read.set(not_read.get() + u64::from(v.value.has_unread_part()));
        }
        sink.borrow_mut().call(&call);
    };
    {
        let events = session.events(&handle)?;
        let mut watched: Vec<RawFd> = stop.fds.to_vec();
        if let Some(fd) = &exit_fd {
            use std::os::fd::AsRawFd;
            watched.push(fd.as_raw_fd());
        }
        let waiter = Waiter::new(events.fd(), &watched, FLUSH_INTERVAL)?;
        let mut reported = Counters::default();
        let mut last_check = Instant::now();
        let mut flow = Flow::Open;
        loop {
            let wake = match flow {
                // The kernel counts what does not fit in the ring buffer meanwhile.
                Flow::Full => waiter.wait_for_stop()?,
                _ => waiter.wait()?,
            };
            if wake == Wake::Stop {
                break;
            }
            if flow != Flow::Full && consume_until_stop(&events, &waiter)? {
                break;
            }
            flow = sink.borrow_mut().flush(false);
            if flow == Flow::Closed || calls.get() >= limit {
                break;
            }
            if last_check.elapsed() >= COUNTER_INTERVAL {
                last_check = Instant::now();
                // A failed stderr stops the session like a failed stdout; the caller says so.
                if report_losses(&session.counters()?, &mut reported).is_err() {
                    break;
                }
            }
        }
        // From here a signal may end the process at once: the kernel completes any detach
        // still under way when the process's descriptors close.
        stop.exit_on_signal(true);
        session.detach();
        while events.consume_at_most(BATCH)? > 0 {
            sink.borrow_mut().flush(true);
        }
        // Detached and drained: what is still in flight will not return while gotrace looks.
        session.drain_in_flight(&handle)?;
        sink.borrow_mut().flush(true);
    }
    let outcomes = outcomes.into_inner();
    summary.panicked = outcomes.panicked;
    summary.exited = outcomes.exited;
    summary.in_flight = outcomes.in_flight;
    summary.abandoned = outcomes.abandoned;
    summary.args_lost = args_lost.get();
    summary.truncated_values = truncated.get();
    summary.values_not_read = not_read.get();
    let counters = session.counters()?;
    summary.lost_ring_full = counters.lost;
    summary.lost_busy = counters.busy;
    summary.unmatched_returns = counters.unmatched_returns;
    summary.begun_while_stopping = counters.stopping;
    summary.inflight_full = counters.inflight_full;
    summary.growth_restarts = counters.growth_restarts;
    summary.read_failures = counters.read_failures;
    summary.exits_lost = counters.exits_lost;
    Ok(summary)
}

/// Consumes one batch (at most [`BATCH`] events) a [`CHUNK`] at a time, looking at the stop
/// signals between chunks; true when one fired.
fn consume_until_stop(events: &EventStream<'_>, waiter: &Waiter) -> Result<bool> {
    let mut done = 0;
    while done < BATCH {
        let n = events.consume_at_most(CHUNK)?;
        done += n;
        if waiter.stop_requested()? {
            return Ok(true);
        }
        if n < CHUNK {
            break;
        }
    }
    Ok(false)
}

/// Calls that did not return, by how they ended.
#[derive(Default)]
struct Outcomes {
    panicked: u64,
    exited: u64,
    in_flight: u64,
    abandoned: u64,
}

impl Outcomes {
    fn add(&mut self, kind: CallKind) {
        match kind {
            CallKind::Returned | CallKind::Entered | CallKind::Inlined => {}
            CallKind::Panicked => self.panicked += 1,
            CallKind::Exited => self.exited += 1,
            CallKind::InFlight => self.in_flight += 1,
            CallKind::Abandoned => self.abandoned += 1,
        }
    }
}

/// One line for the functions a glob matched that are not traced: how many of each kind, and
/// by name those refused for an instruction (the surprising ones).
fn refused_line(plan: &ProbePlan) -> Option<String> {
    let many = match plan.refused.as_slice() {
        [] => return None,
        [(name, why)] => return Some(format!("gotrace: not tracing {name}: {why}")),
        many => many,
    };
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for (_, refusal) in many {
        match kinds.iter_mut().find(|(k, _)| *k == refusal.category()) {
            Some((_, n)) => *n += 1,
            None => kinds.push((refusal.category(), 1)),
        }
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let by_instruction: Vec<&str> = many
        .iter()
        .filter(|(_, r)| matches!(r, gotrace_plan::Refusal::Instruction { .. }))
        .map(|(name, _)| name.as_str())
        .collect();
    let named = match by_instruction.as_slice() {
        [] => String::new(),
        few if few.len() <= 5 => format!(" (instruction: {})", few.join(", ")),
        lots => format!(" (instruction: {}, …)", lots[..5].join(", ")),
    };
    Some(format!(
        "gotrace: not tracing {} matched functions that cannot bear a probe: {}{named}; `gotrace funcs -v` says why for each",
        many.len(),
        kinds.join(", ")
    ))
}

/// Says so on stderr, while tracing, when the BPF side had to drop something since last time.
fn report_losses(now: &Counters, reported: &mut Counters) -> Result<(), crate::stdio::OutputError> {
    let causes = [
        (now.lost, reported.lost, "the ring buffer was full (output cannot keep up; trace fewer functions or use --no-return)"),
        (now.inflight_full, reported.inflight_full, "too many calls in flight at once (in-flight table full)"),
        (now.read_failures, reported.read_failures, "their goroutine could not be read at entry"),
        (now.busy, reported.busy, "a probe hit preempted another on the same CPU"),
    ];
    for (now, before, why) in causes {
        if now > before {
            crate::say!("gotrace: {now} calls lost so far: {why}")?;
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

/// `main.Fibonacci in /srv/app (3 sites: 1 entry, 2 return, 0 inlined, 4 runtime; one
/// uprobe_multi link, attached in 1.2ms)`; a function inlined somewhere adds how many copies of
/// it have code of their own and at how many sites it was inlined (`main.Add: 1 copy, 3
/// inlined sites`).
pub fn describe_attach(plan: &ProbePlan, report: &AttachReport, binary: &Path) -> String {
    use gotrace_plan::SiteKind;
    // Each inlined copy is planned as a function of its own: count names, not copies.
    let mut names: Vec<&str> = Vec::new();
    for f in &plan.functions {
        if !names.contains(&f.name.as_str()) {
            names.push(&f.name);
        }
    }
    let shown = match names.as_slice() {
        [one] => (*one).to_owned(),
        many => format!("{} functions", many.len()),
    };
    let with_inlined: Vec<String> = names
        .iter()
        .filter_map(|&name| {
            let copies = |inlined: bool| {
                plan.functions
                    .iter()
                    .filter(|f| f.name == name && f.inlined_into.is_some() == inlined)
                    .count()
            };
            let (own, sites) = (copies(false), copies(true));
            (sites > 0).then(|| {
                format!(
                    "{name}: {own} {}, {sites} inlined site{}",
                    if own == 1 { "copy" } else { "copies" },
                    if sites == 1 { "" } else { "s" }
                )
            })
        })
        .collect();
    let inlined_text = match with_inlined.as_slice() {
        [] => String::new(),
        few if few.len() <= 3 => format!("{}; ", few.join("; ")),
        many => format!("{} functions also inlined; ", many.len()),
    };
    let count = |kinds: &[SiteKind]| {
        plan.sites
            .iter()
            .filter(|s| kinds.contains(&s.kind))
            .count()
    };
    let entries = count(&[SiteKind::Entry, SiteKind::EntryReturn]);
    let returns = count(&[SiteKind::Return]);
    let inlined = count(&[SiteKind::Inlined]);
    let hooks = plan.runtime_hooks.len();
    let method = match report.method {
        AttachMethod::UprobeMulti => "one uprobe_multi link",
        AttachMethod::PerSite => "one uprobe per site",
    };
    format!(
        "{shown} in {} ({inlined_text}{} sites: {entries} entry, {returns} return, {inlined} inlined, {hooks} runtime; {method}, attached in {:.1?}; {})",
        binary.display(),
        report.attached,
        report.elapsed,
        match &plan.debug_source {
            gotrace_binary::DebugSource::None => "no signatures (no DWARF)".to_owned(),
            source => format!("signatures from {source}"),
        }
    )
}

/// Said once when inlined copies are traced: why their calls look different.
pub fn inlined_note(plan: &ProbePlan) -> Option<&'static str> {
    plan.functions.iter().any(|f| f.inlined_into.is_some()).then_some(
        "gotrace: note: an inlined call has no return of its own to probe: it is shown `inlined`, with the arguments DWARF locates at its first instruction (? where it does not), and no result or duration",
    )
}

/// Writes `path` atomically so a reader never sees it half-written: gotrace's PID, then how
/// many times it has attached (more than once when the traced file was rebuilt).
pub fn write_ready_file(path: &Path, attaches: u32) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, format!("{}\n{attaches}\n", std::process::id()))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
