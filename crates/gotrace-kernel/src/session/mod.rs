//! Loading the BPF program, attaching it at every planned site, and reading what it reports.

mod attach;
mod events;
mod stats;
mod tables;

use crate::skel::{types, GotraceSkel, GotraceSkelBuilder, OpenGotraceSkel};
use crate::KernelError;
#[cfg(feature = "test-support")]
pub use attach::cookie;
pub use attach::PER_SITE_LIMIT;
use attach::{attach_multi_finding_refused, attach_per_site, Refused};
pub use events::EventStream;
use events::{monotonic_ns, read_plain, Event, Pairing};
use gotrace_plan::stats::ErrorResult;
use gotrace_plan::{ProbePlan, RawCall, ResumeSp, Site};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, RingBufferBuilder};
use stats::store_error_results;
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tables::{store_entry_sites, store_filters, store_group_specs, RecipeTables};

/// What to trace: every process running a binary (now or later), or one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Binary(PathBuf),
    Process(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMethod {
    /// One uprobe_multi link for all sites (Linux 6.6+): attaches and detaches in milliseconds.
    UprobeMulti,
    /// One perf-event uprobe per site: older kernels, or to find which sites the kernel refuses.
    PerSite,
}

/// How attaching went: nothing refused is hidden.
#[derive(Clone, Debug)]
pub struct AttachReport {
    pub method: AttachMethod,
    pub attached: usize,
    /// Sites the kernel refused, with its reason.
    pub failed: Vec<(Site, String)>,
    pub elapsed: Duration,
    /// Things that work less well than they should, and why.
    pub warnings: Vec<String>,
}

/// Counters kept by the BPF program, summed over CPUs. Losses count calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls lost because the ring buffer was full when their record was sent.
    pub lost: u64,
    /// Calls lost because the CPU's scratch space was in use (a probe hit preempted another).
    pub busy: u64,
    /// Calls lost because the in-flight table was full.
    pub inflight_full: u64,
    /// Returns seen without their entry (the call began before gotrace attached).
    pub unmatched_returns: u64,
    /// Entry passes ignored because the function was about to grow its stack and restart.
    pub growth_restarts: u64,
    /// Calls lost because their goroutine could not be read at entry.
    pub read_failures: u64,
    /// Process exits the ring buffer had no room for: their calls in flight were reported when
    /// gotrace stopped, with the time in flight measured to then.
    pub exits_lost: u64,
    /// Calls begun after [`Session::detach`] began (between the stop and the probes' removal):
    /// not traced.
    pub stopping: u64,
    /// Calls `--where` or `--min-duration` left out.
    pub filtered: u64,
    /// `--where` comparisons taken as false because the memory they read was unreadable.
    pub filter_unread: u64,
    /// Ring-buffer records read (calls, entries' memory, process exits).
    pub records: u64,
    /// Calls `--sample` left out.
    pub sampled_out: u64,
    /// Calls beyond `--max-rate`: counted, not reported.
    pub over_rate: u64,
    /// Returns and runtime hooks (panics, Goexit) whose goroutine could not be read.
    pub site_unread: u64,
}

/// Loaded BPF program plus its links. Dropping it detaches every probe.
pub struct Session {
    /// Emptied by `detach`, which must work while the ring buffer is still being drained.
    links: std::cell::RefCell<Vec<Link>>,
    skel: GotraceSkel<'static>,
    report: AttachReport,
    /// Joins entry captures with their calls; shared by the ring buffer and the final drain.
    pairing: RefCell<Pairing>,
}

fn uprobe_sysfs_type() -> PathBuf {
    // Overridable so the "kernel without uprobes" error can be exercised on a kernel with them.
    std::env::var_os("GOTRACE_UPROBE_SYSFS_TYPE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/bus/event_source/devices/uprobe/type"))
}

/// Fails early, with the right message, when this process may not use BPF or uprobes.
pub fn check_environment() -> Result<(), KernelError> {
    let sysfs = uprobe_sysfs_type();
    if !sysfs.exists() {
        return Err(KernelError::NoUprobes(sysfs));
    }
    if !has_bpf_capabilities() {
        return Err(KernelError::NoPrivileges(crate::trial::missing_untried()));
    }
    Ok(())
}

/// root, or CAP_SYS_ADMIN, or both CAP_BPF and CAP_PERFMON in the effective set. The last are
/// not enough for perf-event uprobes on kernels with the fix for CVE-2025-38466: the kernel
/// says so when attaching, and the error says what is missing.
pub(crate) fn has_bpf_capabilities() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true; // cannot tell: let the kernel decide
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return true;
    };
    let has = |cap: u32| eff & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

impl Session {
    /// Loads the program and attaches it at every site of `plan` in `binary`: a record per
    /// call.
    pub fn attach(
        plan: &ProbePlan,
        binary: &Path,
        target: &Target,
    ) -> Result<Session, KernelError> {
        Session::open(plan, binary, target, None)
    }

    /// Like [`Session::attach`], but calls are counted in the kernel, by function, with their
    /// outcomes and latency ([`Session::function_stats`]); no record per call. Non-nil errors
    /// are counted at `error_results` (by plan index). The plan's recipes are not used.
    pub fn attach_stats(
        plan: &ProbePlan,
        error_results: &[ErrorResult],
        binary: &Path,
        target: &Target,
    ) -> Result<Session, KernelError> {
        Session::open(plan, binary, target, Some(error_results))
    }

    fn open(
        plan: &ProbePlan,
        binary: &Path,
        target: &Target,
        stats: Option<&[ErrorResult]>,
    ) -> Result<Session, KernelError> {
        check_environment()?;
        let pid = match target {
            Target::Binary(_) => None,
            Target::Process(pid) => Some(*pid),
        };
        if let Some(pid) = pid {
            if !crate::proc::exists(pid) {
                return Err(KernelError::NoSuchProcess(pid));
            }
        }
        let use_multi = crate::trial::uprobe_multi_supported();
        let skel = load(plan, pid, stats, use_multi)?;

        let started = Instant::now();
        let (mut links, method, failed, attached) =
            attach_sites(&skel, plan, binary, pid, use_multi)?;
        // Every site is in place: only now can each call's entry and return both be seen.
        set_phase(&skel, types::gt_phase::GT_PHASE_TRACING)
            .map_err(|e| KernelError::Load(format!("starting the probes: {e:#}")))?;
        let mut warnings = Vec::new();
        if !plan.entry_only {
            match skel
                .progs
                .gotrace_process_exit
                .attach_raw_tracepoint("sched_process_exit")
            {
                Ok(link) => links.push(link),
                Err(e) => warnings.push(format!("cannot watch processes exit ({e:#}): calls still in flight when a traced process exits are reported when gotrace stops")),
            }
        }
        Ok(Session {
            pairing: RefCell::new(Pairing {
                pending: HashMap::new(),
                entry_data: plan
                    .functions
                    .iter()
                    .map(|f| plan.stack || !f.entry_recipe.ops.is_empty())
                    .collect(),
                records: 0,
            }),
            links: std::cell::RefCell::new(links),
            skel,
            report: AttachReport {
                method,
                attached,
                failed,
                elapsed: started.elapsed(),
                warnings,
            },
        })
    }

    pub fn report(&self) -> &AttachReport {
        &self.report
    }

    /// A stream of the calls the probes report; `on_call` runs for each as it is consumed. When
    /// a traced process exits, its calls still in flight come as [`CallKind::InFlight`](gotrace_plan::CallKind::InFlight).
    pub fn events<'a>(
        &'a self,
        mut on_call: impl FnMut(RawCall) + 'a,
    ) -> Result<EventStream<'a>, KernelError> {
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&self.skel.maps.events, move |bytes: &[u8]| {
                let mut pairing = self.pairing.borrow_mut();
                match pairing.event(bytes) {
                    Some(Event::Call(call)) => on_call(call),
                    Some(Event::ProcessExit { pid, at_ns }) => {
                        // A failure leaves the calls in the table: the final drain gets them.
                        let _ = self.drain(&mut pairing, Some(pid), at_ns, &mut on_call);
                    }
                    None => {}
                }
                0
            })
            .map_err(|e| KernelError::Load(format!("ring buffer: {e:#}")))?;
        let ring = builder
            .build()
            .map_err(|e| KernelError::Load(format!("ring buffer: {e:#}")))?;
        Ok(EventStream { ring })
    }

    /// The BPF program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, KernelError> {
        let read = |stat: types::gt_stat| -> Result<u64, KernelError> {
            let key = stat.0.to_ne_bytes();
            let per_cpu = self
                .skel
                .maps
                .stats
                .lookup_percpu(&key, MapFlags::ANY)
                .map_err(|e| KernelError::Load(format!("reading counters: {e:#}")))?
                .unwrap_or_default();
            Ok(per_cpu
                .iter()
                .filter_map(|v| {
                    v.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_ne_bytes)
                })
                .sum())
        };
        Ok(Counters {
            lost: read(types::gt_stat::GT_STAT_LOST)?,
            busy: read(types::gt_stat::GT_STAT_BUSY)?,
            inflight_full: read(types::gt_stat::GT_STAT_INFLIGHT_FULL)?,
            unmatched_returns: read(types::gt_stat::GT_STAT_UNMATCHED_RETURN)?,
            growth_restarts: read(types::gt_stat::GT_STAT_GROWTH_SKIPPED)?,
            read_failures: read(types::gt_stat::GT_STAT_READ_FAILED)?,
            exits_lost: read(types::gt_stat::GT_STAT_EXIT_LOST)?,
            stopping: read(types::gt_stat::GT_STAT_STOPPING)?,
            filtered: read(types::gt_stat::GT_STAT_FILTERED)?,
            filter_unread: read(types::gt_stat::GT_STAT_FILTER_UNREAD)?,
            records: self.pairing.borrow().records,
            sampled_out: read(types::gt_stat::GT_STAT_SAMPLED_OUT)?,
            over_rate: read(types::gt_stat::GT_STAT_OVER_RATE)?,
            site_unread: read(types::gt_stat::GT_STAT_SITE_UNREAD)?,
        })
    }

    /// `--max-rate`: each function's calls counted over the rate so far (by plan index).
    pub fn over_rate(&self, functions: usize) -> Result<Vec<u64>, KernelError> {
        (0..functions as u32)
            .map(|func| {
                let value = self
                    .skel
                    .maps
                    .over_rate
                    .lookup(&func.to_ne_bytes(), MapFlags::ANY)
                    .map_err(|e| KernelError::Load(format!("reading --max-rate counts: {e:#}")))?;
                Ok(value.and_then(|b| read_plain::<u64>(&b)).unwrap_or(0))
            })
            .collect()
    }

    /// Removes every probe (restoring the original instructions) and returns how long it took.
    /// The ring buffer and counters stay readable: what the probes reported can still be read.
    /// First the probes are told to stop: a hit from then on returns at once (its call is
    /// counted in [`Counters::stopping`]), so the probed program spends its time getting out
    /// of the way of the detach, not filling the ring buffer.
    pub fn detach(&self) -> Duration {
        let started = Instant::now();
        // Failing only saves the probes less work: the links are closed all the same.
        let _ = set_phase(&self.skel, types::gt_phase::GT_PHASE_STOPPING);
        self.links.borrow_mut().clear();
        started.elapsed()
    }

    /// When each goroutine's outermost traced call now in flight began, read without claiming
    /// anything: for `--graph`, which holds a goroutine's finished calls until no caller of
    /// theirs can still be running. System stacks (keyed by their g's address) are left out.
    /// `None` when the table changed too much under the walk to trust it.
    pub fn in_flight_since(&self) -> Result<Option<InFlightNow>, KernelError> {
        let map_error =
            |e: libbpf_rs::Error| KernelError::Load(format!("reading calls in flight: {e:#}"));
        let at_ns = monotonic_ns();
        let inflight = &self.skel.maps.inflight;
        // A key deleted under the walk restarts it: bounded, as the table is.
        let most = 2 * inflight.max_entries() as usize;
        let mut since: HashMap<(u32, u64), u64> = HashMap::new();
        for (walked, key) in inflight.keys().enumerate() {
            if walked >= most {
                return Ok(None);
            }
            let Some(k) = read_plain::<types::gt_frame_key>(&key) else {
                continue;
            };
            if k.system != 0 {
                continue;
            }
            // Gone since the walk saw its key: it ended, and its event is on its way.
            let Some(value) = inflight.lookup(&key, MapFlags::ANY).map_err(map_error)? else {
                continue;
            };
            let Some(call) = read_plain::<types::gt_inflight>(&value) else {
                continue;
            };
            let entry = since.entry((k.tgid, k.goid)).or_insert(call.entry_ns);
            *entry = (*entry).min(call.entry_ns);
        }
        Ok(Some(InFlightNow { at_ns, since }))
    }

    /// Reports every call still in flight as [`CallKind::InFlight`](gotrace_plan::CallKind::InFlight), in flight until now; call
    /// it after [`Session::detach`] and a last consume, so that none of them can still
    /// return. Returns how many were reported.
    pub fn drain_in_flight(&self, mut on_call: impl FnMut(RawCall)) -> Result<u64, KernelError> {
        let mut pairing = self.pairing.borrow_mut();
        self.drain(&mut pairing, None, monotonic_ns(), &mut on_call)
    }

    /// Claims (deletes) the calls in flight of process `only` (or of all) and reports them, at
    /// `at_ns`. The BPF side reports a call only if its own delete succeeds: each call once.
    fn drain(
        &self,
        pairing: &mut Pairing,
        only: Option<u32>,
        at_ns: u64,
        on_call: &mut dyn FnMut(RawCall),
    ) -> Result<u64, KernelError> {
        let map_error =
            |e: libbpf_rs::Error| KernelError::Load(format!("draining calls in flight: {e:#}"));
        let inflight = &self.skel.maps.inflight;
        let mut reported = 0;
        for key in inflight.keys().collect::<Vec<_>>() {
            let Some(k) = read_plain::<types::gt_frame_key>(&key) else {
                continue;
            };
            if only.is_some_and(|pid| pid != k.tgid) {
                continue;
            }
            let Some(value) = inflight.lookup_and_delete(&key).map_err(map_error)? else {
                continue;
            };
            let Some(call) = read_plain::<types::gt_inflight>(&value) else {
                continue;
            };
            // --where left it out at its entry.
            if call.filtered != 0 {
                continue;
            }
            let bias = self
                .skel
                .maps
                .load_biases
                .lookup(&k.tgid.to_ne_bytes(), MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|b| read_plain::<u64>(&b))
                .unwrap_or(0);
            on_call(pairing.in_flight(&k, &call, at_ns, bias));
            reported += 1;
        }
        if let Some(pid) = only {
            let goroutines = &self.skel.maps.goroutines;
            for key in goroutines.keys().collect::<Vec<_>>() {
                if read_plain::<types::gt_goroutine_key>(&key).is_some_and(|g| g.tgid == pid) {
                    goroutines.delete(&key).map_err(map_error)?;
                }
            }
        }
        Ok(reported)
    }
}

/// The calls in flight at a moment, per goroutine: see [`Session::in_flight_since`].
#[derive(Clone, Debug, Default)]
pub struct InFlightNow {
    /// When the walk began (CLOCK_MONOTONIC ns): a call begun before it and still in flight
    /// was seen, unless it ended during the walk.
    pub at_ns: u64,
    /// `(pid, goid)` → the entry time of its outermost traced call in flight.
    pub since: HashMap<(u32, u64), u64>,
}

/// Opens the BPF program configured for `plan`, sizes its maps, loads it and fills its tables.
fn load(
    plan: &ProbePlan,
    pid: Option<u32>,
    stats: Option<&[ErrorResult]>,
    use_multi: bool,
) -> Result<GotraceSkel<'static>, KernelError> {
    // The skeleton borrows its backing storage for as long as it lives; a session lives
    // about as long as the process, so the few bytes are leaked rather than self-referenced.
    let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
        Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = GotraceSkelBuilder::default()
        .open(storage)
        .map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;
    if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
        configure(rodata, plan, pid, stats);
    }
    open.progs.gotrace_site_multi.set_autoload(use_multi);
    open.progs.gotrace_site.set_autoload(!use_multi);
    // Entry-only tracing keeps no calls in flight: nothing to report when a process exits.
    open.progs
        .gotrace_process_exit
        .set_autoload(!plan.entry_only);
    let tables = RecipeTables::new(plan);
    size_maps(&mut open, plan, &tables, stats)?;
    let skel = open
        .load()
        .map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;
    tables.store(&skel)?;
    store_entry_sites(&skel, plan)?;
    if let Some(filters) = &plan.filters {
        store_filters(&skel, filters)?;
    }
    if let Some(error_results) = stats {
        store_error_results(&skel, error_results)?;
        if let Some(groups) = &plan.groups {
            store_group_specs(&skel, groups)?;
        }
    }
    Ok(skel)
}

/// The program's constants: every Go runtime offset it uses, from the plan's runtime layout,
/// and which of its features this session turns on.
fn configure(
    rodata: &mut types::rodata,
    plan: &ProbePlan,
    pid: Option<u32>,
    stats: Option<&[ErrorResult]>,
) {
    let layout = &plan.layout;
    rodata.goid_offset = layout.g_goid;
    rodata.stack_hi_offset = layout.g_stack_hi;
    let swiss = layout.swiss();
    rodata.swiss_group_slots = swiss.group_slots as u32;
    rodata.swiss_ctrl_empty = swiss.ctrl_empty;
    rodata.target_tgid = pid.unwrap_or(0);
    rodata.entry_only = u8::from(plan.entry_only);
    rodata.stack_mode = u8::from(plan.stack && stats.is_none());
    rodata.position_independent = u8::from(plan.position_independent);
    rodata.stats_mode = u8::from(stats.is_some());
    rodata.has_filter = u8::from(plan.filters.is_some());
    // --by: grouping is compiled out of the probe unless counting with it.
    rodata.group_mode = match (&plan.groups, stats) {
        (Some(g), Some(_)) if g.is_stack() => types::gt_group_kind::GT_GROUP_STACK.0 as u8,
        (Some(_), Some(_)) => types::gt_group_kind::GT_GROUP_WORD.0 as u8,
        _ => 0,
    };
    rodata.min_duration_ns = plan.min_duration_ns;
    rodata.sample_every = plan.sample_every;
    rodata.max_rate = plan.max_rate;
    rodata.has_recipes = u8::from(
        stats.is_none()
            && plan
                .functions
                .iter()
                .any(|f| !f.entry_recipe.ops.is_empty() || !f.return_recipe.ops.is_empty()),
    );
    match layout.resume_sp {
        ResumeSp::SigCode0 { g_offset } => {
            rodata.resume_sp_mode = 1;
            rodata.g_sigcode0_offset = g_offset;
        }
        ResumeSp::PanicSp {
            g_offset,
            sp_offset,
        } => {
            rodata.resume_sp_mode = 2;
            rodata.g_panic_offset = g_offset;
            rodata.panic_sp_offset = sp_offset;
        }
    }
}

/// Sizes every table to what `plan` stores in it (at least one entry: the kernel refuses an
/// empty map).
fn size_maps(
    open: &mut OpenGotraceSkel<'_>,
    plan: &ProbePlan,
    tables: &RecipeTables,
    stats: Option<&[ErrorResult]>,
) -> Result<(), KernelError> {
    let size = |map: &mut libbpf_rs::OpenMapMut<'_>, n: usize| {
        map.set_max_entries(n.max(1) as u32)
            .map_err(|e| KernelError::Load(format!("sizing a map: {e:#}")))
    };
    size(&mut open.maps.recipes, tables.recipes.len())?;
    size(&mut open.maps.ops, tables.ops.len())?;
    size(&mut open.maps.type_recipes, tables.type_recipes.len())?;
    size(&mut open.maps.entry_sites, plan.functions.len())?;
    let stats_entries = if stats.is_some() {
        plan.functions.len()
    } else {
        0
    };
    size(&mut open.maps.func_stats, stats_entries)?;
    let (programs, filter_ops, literals) = plan.filters.as_ref().map_or((0, 0, 0), |f| {
        let ops = f.functions.iter().map(|p| p.ops.len()).sum();
        (f.functions.len(), ops, f.literals.len())
    });
    size(&mut open.maps.filters, programs)?;
    size(&mut open.maps.filter_ops, filter_ops)?;
    size(&mut open.maps.filter_literals, literals)?;
    let rated = if plan.max_rate > 0 {
        plan.functions.len()
    } else {
        0
    };
    size(&mut open.maps.rate_windows, rated)?;
    size(&mut open.maps.over_rate, rated)?;
    size(&mut open.maps.error_results, stats_entries)?;
    let group_specs = match (&plan.groups, stats) {
        (Some(g), Some(_)) => g.functions.len(),
        _ => 0,
    };
    size(&mut open.maps.group_specs, group_specs)?;
    let cpus = libbpf_rs::num_possible_cpus()
        .map_err(|e| KernelError::Load(format!("counting CPUs: {e:#}")))?;
    size(&mut open.maps.scratch, cpus)
}

/// Attaches the loaded program at every site of `plan`: its links, how, the sites refused and
/// how many were attached. An error when none was.
fn attach_sites(
    skel: &GotraceSkel<'_>,
    plan: &ProbePlan,
    binary: &Path,
    pid: Option<u32>,
    use_multi: bool,
) -> Result<(Vec<Link>, AttachMethod, Refused, usize), KernelError> {
    let pid_arg = pid.map_or(-1, |p| p as i32);
    let sites: Vec<&Site> = plan.all_sites().collect();
    let (links, method, failed) = if use_multi {
        let (link, failed) = attach_multi_finding_refused(skel, &sites, binary, pid_arg)?;
        let links: Vec<Link> = link.into_iter().collect();
        (links, AttachMethod::UprobeMulti, failed)
    } else {
        attach_per_site(skel, &sites, binary, pid_arg)?
    };
    let attached = match method {
        AttachMethod::UprobeMulti if links.is_empty() => 0,
        AttachMethod::UprobeMulti => sites.len() - failed.len(),
        AttachMethod::PerSite => links.len(),
    };
    if attached == 0 {
        let reason = failed
            .first()
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| "no sites".into());
        return Err(KernelError::Attach {
            binary: binary.to_owned(),
            reason,
        });
    }
    Ok((links, method, failed, attached))
}

/// Moves the probes to `phase` (see `enum gt_phase` in gotrace.h).
fn set_phase(skel: &GotraceSkel<'_>, phase: types::gt_phase) -> Result<(), libbpf_rs::Error> {
    skel.maps
        .phase
        .update(&0u32.to_ne_bytes(), &phase.0.to_ne_bytes(), MapFlags::ANY)
}
