//! Loading the BPF program, attaching it at every planned site, and reading what it reports.

use crate::skel::{types, GotraceSkel, GotraceSkelBuilder};
use crate::KernelError;
use gotrace_binary::sites::SkipCondition;
use gotrace_plan::recipe::{CaptureOp, Gather, Guard, OpKind, Operand, Recipe};
use gotrace_plan::{
    CallKind, Capture, CaptureStatus, ProbePlan, RawCall, ResumeSp, Site, SiteKind, INT_REGS,
};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{
    Link, MapCore, MapFlags, RingBuffer, RingBufferBuilder, UprobeMultiOpts, UprobeOpts,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
fn has_bpf_capabilities() -> bool {
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
    /// Loads the program and attaches it at every site of `plan` in `binary`.
    pub fn attach(
        plan: &ProbePlan,
        binary: &Path,
        target: &Target,
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
        // The skeleton borrows its backing storage for as long as it lives; a session lives
        // about as long as the process, so the few bytes are leaked rather than self-referenced.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = GotraceSkelBuilder::default()
            .open(storage)
            .map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.goid_offset = plan.goid_offset;
            rodata.target_tgid = pid.unwrap_or(0);
            rodata.entry_only = u8::from(plan.entry_only);
            rodata.position_independent = u8::from(plan.position_independent);
            rodata.has_recipes = u8::from(
                plan.functions
                    .iter()
                    .any(|f| !f.entry_recipe.ops.is_empty() || !f.return_recipe.ops.is_empty()),
            );
            match plan.resume_sp {
                ResumeSp::Unknown => rodata.resume_sp_mode = 0,
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
        let use_multi = crate::trial::uprobe_multi_supported();
        open.progs.gotrace_site_multi.set_autoload(use_multi);
        open.progs.gotrace_site.set_autoload(!use_multi);
        // Entry-only tracing keeps no calls in flight: nothing to report when a process exits.
        open.progs
            .gotrace_process_exit
            .set_autoload(!plan.entry_only);
        let tables = RecipeTables::new(plan);
        let size = |map: &mut libbpf_rs::OpenMapMut<'_>, n: usize| {
            map.set_max_entries(n.max(1) as u32)
                .map_err(|e| KernelError::Load(format!("sizing a map: {e:#}")))
        };
        size(&mut open.maps.recipes, tables.recipes.len())?;
        size(&mut open.maps.ops, tables.ops.len())?;
        size(&mut open.maps.type_recipes, tables.type_recipes.len())?;
        size(&mut open.maps.entry_sites, plan.functions.len())?;
        let cpus = libbpf_rs::num_possible_cpus()
            .map_err(|e| KernelError::Load(format!("counting CPUs: {e:#}")))?;
        size(&mut open.maps.scratch, cpus)?;
        let skel = open
            .load()
            .map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;
        tables.store(&skel)?;
        store_entry_sites(&skel, plan)?;

        let started = Instant::now();
        let pid_arg = pid.map_or(-1, |p| p as i32);
        let sites: Vec<&Site> = plan.all_sites().collect();
        let (links, method, failed) = if use_multi {
            let (link, failed) = attach_multi_finding_refused(&skel, &sites, binary, pid_arg)?;
            let links: Vec<Link> = link.into_iter().collect();
            (links, AttachMethod::UprobeMulti, failed)
        } else {
            attach_per_site(&skel, &sites, binary, pid_arg)?
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
        let mut warnings = Vec::new();
        let mut links = links;
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
                    .map(|f| !f.entry_recipe.ops.is_empty())
                    .collect(),
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
    /// a traced process exits, its calls still in flight come as [`CallKind::InFlight`].
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
        })
    }

    /// Removes every probe (restoring the original instructions) and returns how long it took.
    /// The ring buffer and counters stay readable: what the probes reported can still be read.
    /// First the probes are told to stop: a hit from then on returns at once (its call is
    /// counted in [`Counters::stopping`]), so the probed program spends its time getting out
    /// of the way of the detach, not filling the ring buffer.
    pub fn detach(&self) -> Duration {
        let started = Instant::now();
        // Failing only saves the probes less work: the links are closed all the same.
        let _ =
            self.skel
                .maps
                .stopping
                .update(&0u32.to_ne_bytes(), &1u32.to_ne_bytes(), MapFlags::ANY);
        self.links.borrow_mut().clear();
        started.elapsed()
    }

    /// Reports every call still in flight as [`CallKind::InFlight`], in flight until now; call
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

/// Draining end of the ring buffer.
pub struct EventStream<'a> {
    ring: RingBuffer<'a>,
}

impl EventStream<'_> {
    /// Runs the callback for every event available now.
    pub fn consume(&self) -> Result<(), KernelError> {
        self.ring
            .consume()
            .map_err(|e| KernelError::Load(format!("ring buffer: {e:#}")))
    }

    /// Runs the callback for at most `n` of the events available now; returns how many ran.
    pub fn consume_at_most(&self, n: usize) -> Result<usize, KernelError> {
        let done = self.ring.consume_raw_n(n);
        usize::try_from(done).map_err(|_| {
            let e = std::io::Error::from_raw_os_error(-done);
            KernelError::Load(format!("ring buffer: {e}"))
        })
    }

    /// Becomes readable when the BPF side asks for a wake-up (a batch has built up).
    pub fn fd(&self) -> i32 {
        self.ring.epoll_fd()
    }
}

/// What one ring-buffer record means.
// Built once per record and consumed at once: boxing the call would allocate for every call.
#[allow(clippy::large_enum_variant)]
enum Event {
    Call(RawCall),
    /// A traced process ended at `at_ns`: its calls still in flight never return.
    ProcessExit {
        pid: u32,
        at_ns: u64,
    },
}

/// Entry captures wait here for their call's return event (the ring buffer keeps order, so
/// an entry's data always comes before its return).
#[derive(Default)]
struct Pairing {
    pending: HashMap<u64, Vec<Capture>>,
    entry_data: Vec<bool>,
}

/// More entries waiting than this means returns are being lost: drop the oldest half.
const MAX_PENDING: usize = 1 << 16;

impl Pairing {
    fn event(&mut self, bytes: &[u8]) -> Option<Event> {
        let header_size = std::mem::size_of::<types::gt_event>();
        let e: types::gt_event = read_plain(bytes)?;
        let payload = bytes
            .get(header_size..header_size + e.payload_len as usize)
            .unwrap_or(&[]);
        let captures = parse_captures(payload);
        let kind = match types::gt_event_kind(e.kind) {
            types::gt_event_kind::GT_EVENT_ENTRY_DATA => {
                if self.pending.len() >= MAX_PENDING {
                    let mut ids: Vec<u64> = self.pending.keys().copied().collect();
                    ids.sort_unstable();
                    for id in &ids[..ids.len() / 2] {
                        self.pending.remove(id);
                    }
                }
                self.pending.insert(e.call_id, captures);
                return None;
            }
            types::gt_event_kind::GT_EVENT_CALL => CallKind::Returned,
            types::gt_event_kind::GT_EVENT_ENTRY => CallKind::Entered,
            types::gt_event_kind::GT_EVENT_PANICKED => CallKind::Panicked,
            types::gt_event_kind::GT_EVENT_EXITED => CallKind::Exited,
            types::gt_event_kind::GT_EVENT_ABANDONED => CallKind::Abandoned,
            types::gt_event_kind::GT_EVENT_PROCESS_EXIT => {
                return Some(Event::ProcessExit {
                    pid: e.pid,
                    at_ns: e.return_ns,
                })
            }
            _ => return None,
        };
        let (entry_captures, return_captures) = match kind {
            CallKind::Entered | CallKind::Inlined => (Some(captures), Vec::new()),
            CallKind::Returned => (self.pending.remove(&e.call_id), captures),
            CallKind::Panicked | CallKind::Exited | CallKind::Abandoned | CallKind::InFlight => {
                (self.pending.remove(&e.call_id), Vec::new())
            }
        };
        let entry_data_lost = self.entry_data_lost(e.func, &entry_captures);
        Some(Event::Call(RawCall {
            kind,
            function: e.func,
            pid: e.pid,
            entry_tid: e.entry_tid,
            return_tid: e.return_tid,
            goid: e.goid,
            entry_ns: e.entry_ns,
            return_ns: e.return_ns,
            entry_regs: e.entry_regs,
            return_regs: e.return_regs,
            entry_sp: e.entry_sp,
            return_sp: e.return_sp,
            load_bias: e.load_bias,
            entry_captures: entry_captures.unwrap_or_default(),
            return_captures,
            entry_data_lost,
        }))
    }

    /// The entry's memory was dropped (ring buffer full) though its call arrived.
    fn entry_data_lost(&self, func: u32, captures: &Option<Vec<Capture>>) -> bool {
        captures.is_none() && self.entry_data.get(func as usize).copied().unwrap_or(false)
    }

    /// A call still in flight at `at_ns`, from its in-flight table entry.
    fn in_flight(
        &mut self,
        key: &types::gt_frame_key,
        call: &types::gt_inflight,
        at_ns: u64,
        load_bias: u64,
    ) -> RawCall {
        let entry_captures = self.pending.remove(&call.call_id);
        RawCall {
            kind: CallKind::InFlight,
            function: call.func,
            pid: key.tgid,
            entry_tid: call.tid,
            return_tid: 0,
            // A system goroutine's key holds its g's address: its goid is 0.
            goid: if key.system != 0 { 0 } else { key.goid },
            entry_ns: call.entry_ns,
            return_ns: at_ns.max(call.entry_ns),
            entry_regs: call.regs,
            return_regs: [0; INT_REGS],
            entry_sp: call.sp,
            return_sp: 0,
            load_bias,
            entry_data_lost: self.entry_data_lost(call.func, &entry_captures),
            entry_captures: entry_captures.unwrap_or_default(),
            return_captures: Vec::new(),
        }
    }
}

/// The gt_capture records of an event's payload.
fn parse_captures(mut payload: &[u8]) -> Vec<Capture> {
    let header_size = std::mem::size_of::<types::gt_capture>();
    let mut out = Vec::new();
    while let Some(header) = payload.get(..header_size) {
        // SAFETY: gt_capture is plain integers and `header` holds exactly its size.
        let c: types::gt_capture = unsafe { std::ptr::read_unaligned(header.as_ptr().cast()) };
        let len = c.len as usize;
        let Some(bytes) = payload.get(header_size..header_size + len) else {
            break;
        };
        let status = match types::gt_capture_status(u32::from(c.status)) {
            types::gt_capture_status::GT_CAPTURE_OK => CaptureStatus::Ok,
            types::gt_capture_status::GT_CAPTURE_TRUNCATED => CaptureStatus::Truncated,
            types::gt_capture_status::GT_CAPTURE_FAULT => CaptureStatus::Fault,
            types::gt_capture_status::GT_CAPTURE_NIL => CaptureStatus::Nil,
            types::gt_capture_status::GT_CAPTURE_GATHERED => CaptureStatus::Gathered,
            _ => CaptureStatus::NoRoom,
        };
        out.push(Capture {
            addr: c.addr,
            want: c.want,
            status,
            bytes: bytes.to_vec(),
        });
        payload = payload
            .get(header_size + len.div_ceil(8) * 8..)
            .unwrap_or(&[]);
    }
    out
}

/// A plan's recipes laid out as the BPF maps hold them.
struct RecipeTables {
    /// Indexed 2f (entry) and 2f+1 (returns) for function f.
    recipes: Vec<types::gt_recipe>,
    ops: Vec<types::gt_op>,
    type_recipes: Vec<(u64, types::gt_recipe)>,
}

impl RecipeTables {
    fn new(plan: &ProbePlan) -> RecipeTables {
        let mut tables = RecipeTables {
            recipes: Vec::with_capacity(plan.functions.len() * 2),
            ops: Vec::new(),
            type_recipes: Vec::with_capacity(plan.type_recipes.len()),
        };
        for f in &plan.functions {
            let entry = tables.add(&f.entry_recipe);
            let returns = tables.add(&f.return_recipe);
            tables.recipes.extend([entry, returns]);
        }
        for (addr, recipe) in &plan.type_recipes {
            let stored = tables.add(recipe);
            tables.type_recipes.push((*addr, stored));
        }
        tables
    }

    fn add(&mut self, recipe: &Recipe) -> types::gt_recipe {
        let first = self.ops.len() as u32;
        self.ops.extend(recipe.ops.iter().map(gt_op));
        types::gt_recipe {
            first,
            count: recipe.ops.len() as u32,
        }
    }

    fn store(&self, skel: &GotraceSkel<'_>) -> Result<(), KernelError> {
        let fill = |map: &libbpf_rs::MapMut<'_>, key: &[u8], value: &[u8]| {
            map.update(key, value, MapFlags::ANY)
                .map_err(|e| KernelError::Load(format!("filling a recipe map: {e:#}")))
        };
        for (i, recipe) in self.recipes.iter().enumerate() {
            fill(
                &skel.maps.recipes,
                &(i as u32).to_ne_bytes(),
                bytes_of(recipe),
            )?;
        }
        for (i, op) in self.ops.iter().enumerate() {
            fill(&skel.maps.ops, &(i as u32).to_ne_bytes(), bytes_of(op))?;
        }
        for (addr, recipe) in &self.type_recipes {
            fill(
                &skel.maps.type_recipes,
                &addr.to_ne_bytes(),
                bytes_of(recipe),
            )?;
        }
        Ok(())
    }
}

/// Each function's entry-site address, from which the BPF side learns a PIE process's bias.
fn store_entry_sites(skel: &GotraceSkel<'_>, plan: &ProbePlan) -> Result<(), KernelError> {
    for site in plan.sites.iter().filter(|s| {
        matches!(
            s.kind,
            SiteKind::Entry | SiteKind::EntryReturn | SiteKind::Inlined
        )
    }) {
        skel.maps
            .entry_sites
            .update(
                &site.function.to_ne_bytes(),
                &site.addr.0.to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(|e| KernelError::Load(format!("filling entry sites: {e:#}")))?;
    }
    Ok(())
}

/// The bytes of a generated BPF type, as a map update wants them.
fn bytes_of<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: only used with the skeleton's repr(C) types gt_recipe and gt_op, whose fields
    // are integers laid out without implicit padding (gotrace.h pads explicitly), so every
    // byte is initialised; the slice borrows `value` for its lifetime.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
}

fn gt_operand(operand: Operand) -> types::gt_operand {
    use types::gt_operand_kind as K;
    let (kind, reg, op, off, add) = match operand {
        Operand::Const(v) => (K::GT_OPERAND_NONE, 0, 0, 0, v),
        Operand::Reg { index, add } => (K::GT_OPERAND_REG, index, 0, 0, add),
        Operand::Sp { add } => (K::GT_OPERAND_SP, 0, 0, 0, add),
        Operand::Word { op, off, add } => (K::GT_OPERAND_WORD, 0, op, off, add),
        Operand::Data { add } => (K::GT_OPERAND_DATA, 0, 0, 0, add),
    };
    types::gt_operand {
        kind: kind.0 as u8,
        reg,
        op,
        off,
        add,
    }
}

fn gt_op(op: &CaptureOp) -> types::gt_op {
    let (kind, elem_size, max_len) = match op.kind {
        OpKind::Read { elem_size, max_len } => (types::gt_op_kind::GT_OP_READ, elem_size, max_len),
        OpKind::Dynamic => (types::gt_op_kind::GT_OP_DYNAMIC, 0, 0),
        OpKind::Gather(g) => (types::gt_op_kind::GT_OP_GATHER, g.group_size, g.max_len),
    };
    let (addr, len) = match op.kind {
        OpKind::Gather(g) => gather_operands(&g),
        _ => (gt_operand(op.addr), gt_operand(op.len)),
    };
    let (guard, guard_above, guard_at_most) = match op.guard {
        Some(Guard::Above(operand, bound)) => (gt_operand(operand), bound, 0),
        Some(Guard::AtMost(operand, bound)) => (gt_operand(operand), bound, 1),
        None => (gt_operand(Operand::Const(0)), 0, 0),
    };
    types::gt_op {
        kind: kind.0 as u8,
        guard_at_most,
        pad: [0; 2],
        guard_above: guard_above.clamp(0, i64::from(u32::MAX)) as u32,
        elem_size,
        max_len,
        addr,
        len,
        guard,
    }
}

/// A gather's fields, packed into its operands as gotrace.h's GT_OP_GATHER reads them.
fn gather_operands(g: &Gather) -> (types::gt_operand, types::gt_operand) {
    use types::gt_operand_kind as K;
    let second = g.second.map_or(K::GT_OPERAND_NONE, |_| K::GT_OPERAND_WORD);
    let addr = types::gt_operand {
        kind: K::GT_OPERAND_WORD.0 as u8,
        reg: 0,
        op: g.first,
        off: g.base,
        add: i64::from(g.size),
    };
    let len = types::gt_operand {
        kind: second.0 as u8,
        reg: 0,
        op: g.second.unwrap_or(0),
        off: g.stride,
        add: i64::from(g.ctrl),
    };
    (addr, len)
}

/// The site's cookie, laid out as `GT_COOKIE_*` in gotrace.h reads it.
fn cookie(site: &Site) -> u64 {
    let kind = match site.kind {
        SiteKind::Entry => types::gt_site_kind::GT_SITE_ENTRY,
        SiteKind::Return => types::gt_site_kind::GT_SITE_RETURN,
        SiteKind::GoPanic => types::gt_site_kind::GT_SITE_GOPANIC,
        SiteKind::GoExit => types::gt_site_kind::GT_SITE_GOEXIT,
        SiteKind::FatalPanic => types::gt_site_kind::GT_SITE_FATALPANIC,
        SiteKind::Recovery => types::gt_site_kind::GT_SITE_RECOVERY,
        SiteKind::EntryReturn => types::gt_site_kind::GT_SITE_ENTRY_RETURN,
        SiteKind::Inlined => types::gt_site_kind::GT_SITE_INLINED,
    };
    let skip = match site.skip_if {
        None => types::gt_skip::GT_SKIP_NEVER,
        Some(SkipCondition::CarrySet) => types::gt_skip::GT_SKIP_IF_CF,
        Some(SkipCondition::CarryOrZeroSet) => types::gt_skip::GT_SKIP_IF_CF_ZF,
    };
    use types::gt_cookie as C;
    let field = |value: u32| u64::from(value & C::GT_COOKIE_FIELD_MASK.0);
    u64::from(site.function)
        | field(kind.0) << C::GT_COOKIE_KIND_SHIFT.0
        | field(skip.0) << C::GT_COOKIE_SKIP_SHIFT.0
        | u64::from(site.may_restart) << C::GT_COOKIE_MAY_RESTART_SHIFT.0
}

fn attach_multi(
    skel: &GotraceSkel<'_>,
    sites: &[&Site],
    binary: &Path,
    pid: i32,
) -> Result<Link, libbpf_rs::Error> {
    let opts = UprobeMultiOpts {
        offsets: sites.iter().map(|s| s.file_offset.0 as usize).collect(),
        cookies: sites.iter().map(|s| cookie(s)).collect(),
        ..Default::default()
    };
    skel.progs
        .gotrace_site_multi
        .attach_uprobe_multi_with_opts(pid, binary, "", opts)
}

/// What attaching left out: each refused site with the kernel's reason.
type Refused = Vec<(Site, String)>;

/// Attaches `sites` on one uprobe_multi link. The kernel fails the whole batch for one site it
/// will not probe (and only while a process maps the binary): then the refused sites are found
/// by bisection — trial attachments of the empty trial program, so nothing is reported and no
/// state is left meanwhile — and the rest go on one link. Never one probe per site: thousands
/// of those take minutes to attach and to detach.
fn attach_multi_finding_refused(
    skel: &GotraceSkel<'_>,
    sites: &[&Site],
    binary: &Path,
    pid: i32,
) -> Result<(Option<Link>, Refused), KernelError> {
    let attach_error = |e: libbpf_rs::Error| KernelError::Attach {
        binary: binary.to_owned(),
        reason: format!("{e:#}"),
    };
    let first = match attach_multi(skel, sites, binary, pid) {
        Ok(link) => return Ok((Some(link), Vec::new())),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::PermissionDenied => {
            return Err(KernelError::NoPrivileges(crate::trial::missing()))
        }
        Err(e) => e,
    };
    let trial =
        crate::trial::Trial::load().map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;
    let offsets: Vec<usize> = sites.iter().map(|s| s.file_offset.0 as usize).collect();
    let refused = bisect_refused(sites.len(), |set| {
        trial
            .attach(binary, pid, set.iter().map(|&i| offsets[i]).collect())
            .map_err(|e| format!("{e:#}"))
    });
    if refused.is_empty() {
        // Every part attaches on its own: the batch failed for another reason.
        return Err(attach_error(first));
    }
    let rest: Vec<&Site> = sites
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i))
        .map(|(_, s)| *s)
        .collect();
    let failed = refused
        .into_iter()
        .map(|(i, reason)| (sites[i].clone(), reason))
        .collect();
    if rest.is_empty() {
        return Ok((None, failed));
    }
    let link = attach_multi(skel, &rest, binary, pid).map_err(attach_error)?;
    Ok((Some(link), failed))
}

/// The indices in `0..n` whose trial attachment fails, with its error, given that attaching
/// all of them failed: each failing set is split in halves down to single sites, so k refused
/// sites among n cost about 2·k·log2(n) trials.
fn bisect_refused<E>(
    n: usize,
    mut attach: impl FnMut(&[usize]) -> Result<(), E>,
) -> Vec<(usize, E)> {
    fn split<E>(
        set: &[usize],
        attach: &mut impl FnMut(&[usize]) -> Result<(), E>,
        out: &mut Vec<(usize, E)>,
    ) {
        let (left, right) = set.split_at(set.len() / 2);
        for half in [left, right].into_iter().filter(|h| !h.is_empty()) {
            match attach(half) {
                Ok(()) => {}
                Err(e) if half.len() == 1 => out.push((half[0], e)),
                Err(_) => split(half, attach, out),
            }
        }
    }
    let all: Vec<usize> = (0..n).collect();
    let mut out = Vec::new();
    split(&all, &mut attach, &mut out);
    out
}

/// Sites a kernel without uprobe_multi links gets as one perf-event uprobe each: detaching
/// each waits for an RCU grace period (about 0.1 s here), so more would hold Ctrl-C for long.
pub const PER_SITE_LIMIT: usize = 64;

/// One perf-event uprobe per site (kernels without uprobe_multi links, or
/// `GOTRACE_NO_UPROBE_MULTI`).
fn attach_per_site(
    skel: &GotraceSkel<'_>,
    sites: &[&Site],
    binary: &Path,
    pid: i32,
) -> Result<PerSiteOutcome, KernelError> {
    raise_open_file_limit();
    let mut links = Vec::new();
    let mut failed = Vec::new();
    for site in sites {
        let opts = UprobeOpts {
            cookie: cookie(site),
            ..Default::default()
        };
        let result = skel.progs.gotrace_site.attach_uprobe_with_opts(
            pid,
            binary,
            site.file_offset.0 as usize,
            opts,
        );
        match result {
            Ok(link) => links.push(link),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::PermissionDenied => {
                return Err(KernelError::NoPrivileges(crate::trial::missing()))
            }
            Err(e) => failed.push(((*site).clone(), format!("{e:#}"))),
        }
    }
    Ok((links, AttachMethod::PerSite, failed))
}

type PerSiteOutcome = (Vec<Link>, AttachMethod, Refused);

/// Each per-site link holds file descriptors: lift the soft limit to the hard one.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// CLOCK_MONOTONIC now, the clock of the BPF side's timestamps.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A generated BPF type read from map or event bytes; `None` when they are too short.
fn read_plain<T: Copy>(bytes: &[u8]) -> Option<T> {
    let bytes = bytes.get(..std::mem::size_of::<T>())?;
    // SAFETY: only used with the skeleton's plain-integer types (gt_event, gt_capture,
    // gt_frame_key, gt_inflight, gt_goroutine_key), for which any bit pattern is valid;
    // `bytes` holds exactly their size and read_unaligned makes no alignment assumption.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}
#[cfg(test)]
mod tests {
    use super::*;
    use gotrace_plan::recipe::{MAX_OPS, MAX_READ};

    #[test]
    fn plan_limits_match_the_bpf_program() {
        assert_eq!(MAX_OPS as u32, types::gt_limits::GT_MAX_OPS.0);
        assert_eq!(MAX_READ, types::gt_limits::GT_MAX_READ.0);
        assert_eq!(types::gt_event::default().entry_regs.len(), INT_REGS);
    }

    mod cookie_test_skel {
        #![allow(clippy::all, unused_imports, dead_code)]
        include!(concat!(env!("OUT_DIR"), "/cookie_test.skel.rs"));
    }

    /// Rust lays cookies out with the generated `gt_cookie` constants; the BPF program reads
    /// them with gotrace.h's GT_COOKIE_* macros (here in a test program run by
    /// BPF_PROG_TEST_RUN): every field of every kind of site reads back.
    #[test]
    fn cookies_read_back_with_the_bpf_programs_macros() {
        use cookie_test_skel::{types::gt_cookie_fields, CookieTestSkelBuilder};
        use gotrace_binary::{FileOffset, VirtAddr};
        use types::{gt_site_kind as K, gt_skip as S};
        if !gotrace_gobuild::testing::have_root() {
            return;
        }
        let mut storage = MaybeUninit::uninit();
        let skel = CookieTestSkelBuilder::default()
            .open(&mut storage)
            .and_then(|open| open.load())
            .expect("the cookie decoder loads");
        let kinds = [
            (SiteKind::Entry, K::GT_SITE_ENTRY),
            (SiteKind::Return, K::GT_SITE_RETURN),
            (SiteKind::GoPanic, K::GT_SITE_GOPANIC),
            (SiteKind::GoExit, K::GT_SITE_GOEXIT),
            (SiteKind::FatalPanic, K::GT_SITE_FATALPANIC),
            (SiteKind::Recovery, K::GT_SITE_RECOVERY),
            (SiteKind::EntryReturn, K::GT_SITE_ENTRY_RETURN),
            (SiteKind::Inlined, K::GT_SITE_INLINED),
        ];
        let skips = [
            (None, S::GT_SKIP_NEVER),
            (Some(SkipCondition::CarrySet), S::GT_SKIP_IF_CF),
            (Some(SkipCondition::CarryOrZeroSet), S::GT_SKIP_IF_CF_ZF),
        ];
        let mut decoded = 0;
        for (kind, bpf_kind) in kinds {
            for (skip_if, bpf_skip) in skips {
                for may_restart in [false, true] {
                    for function in [0, 1, 0x8765_4321, u32::MAX] {
                        let site = Site {
                            function,
                            kind,
                            addr: VirtAddr(0x401000),
                            file_offset: FileOffset(0x1000),
                            skip_if,
                            may_restart,
                        };
                        let mut fields = gt_cookie_fields {
                            cookie: cookie(&site),
                            ..Default::default()
                        };
                        // SAFETY: gt_cookie_fields is plain integers (any bytes are valid) and
                        // the slice covers exactly it, borrowed mutably for the test run.
                        let context = unsafe {
                            std::slice::from_raw_parts_mut(
                                (&mut fields as *mut gt_cookie_fields).cast::<u8>(),
                                std::mem::size_of::<gt_cookie_fields>(),
                            )
                        };
                        let input = libbpf_rs::ProgramInput {
                            context_in: Some(context),
                            ..Default::default()
                        };
                        let output = skel
                            .progs
                            .decode_cookie
                            .test_run(input)
                            .expect("BPF_PROG_TEST_RUN runs the decoder");
                        assert_eq!(output.return_value, 0);
                        assert_eq!(
                            (fields.func, fields.kind, fields.skip, fields.may_restart),
                            (function, bpf_kind.0, bpf_skip.0, u32::from(may_restart)),
                            "{site:?}"
                        );
                        decoded += 1;
                    }
                }
            }
        }
        assert_eq!(decoded, 8 * 3 * 2 * 4);
    }

    fn event(kind: types::gt_event_kind, call_id: u64) -> Vec<u8> {
        let e = types::gt_event {
            kind: kind.0,
            call_id,
            ..Default::default()
        };
        bytes_of(&e).to_vec()
    }

    #[test]
    fn a_call_whose_entry_data_was_dropped_says_so() {
        use types::gt_event_kind as K;
        let mut pairing = Pairing {
            pending: HashMap::new(),
            entry_data: vec![true],
        };
        let call = |e: Option<Event>| match e {
            Some(Event::Call(c)) => c,
            _ => panic!("not a call"),
        };
        assert!(call(pairing.event(&event(K::GT_EVENT_CALL, 7))).entry_data_lost);
        assert!(pairing.event(&event(K::GT_EVENT_ENTRY_DATA, 8)).is_none());
        assert!(!call(pairing.event(&event(K::GT_EVENT_CALL, 8))).entry_data_lost);
        assert!(pairing.pending.is_empty());
    }

    #[test]
    fn bisection_finds_every_refused_site_and_only_those() {
        for (n, bad) in [
            (1, vec![0]),
            (10, vec![3]),
            (1000, vec![0, 17, 500, 999]),
            (7, (0..7).collect()),
        ] {
            let mut trials = 0;
            let found = bisect_refused(n, |set: &[usize]| {
                trials += 1;
                assert!(!set.is_empty());
                match set.iter().find(|i| bad.contains(i)) {
                    Some(i) => Err(*i),
                    None => Ok(()),
                }
            });
            let indices: Vec<usize> = found.iter().map(|(i, _)| *i).collect();
            assert_eq!(indices, bad, "n={n}");
            assert!(found.iter().all(|(i, e)| i == e));
            let log2 = usize::BITS - n.leading_zeros();
            assert!(
                trials <= 2 * bad.len() * log2 as usize + 2,
                "n={n}: {trials} trials"
            );
        }
    }

    #[test]
    fn captures_parse_back_with_padding() {
        let mut payload = Vec::new();
        for (addr, data) in [(0x1000u64, &b"hello"[..]), (0x2000, &b"12345678"[..])] {
            let c = types::gt_capture {
                addr,
                want: data.len() as u64,
                len: data.len() as u32,
                op: 0,
                status: 0,
                pad: 0,
            };
            payload.extend_from_slice(bytes_of(&c));
            payload.extend_from_slice(data);
            payload.resize(payload.len().div_ceil(8) * 8, 0);
        }
        let parsed = parse_captures(&payload);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].bytes, b"hello");
        assert_eq!(parsed[1].addr, 0x2000);
        assert_eq!(parsed[1].bytes, b"12345678");
    }
}
