//! The probe plan: for each traced function, the sites to attach (entry and every RET), how
//! each site must behave, and where the function's arguments and results live. Built from a
//! [`GoBinary`] without touching the kernel; the kernel crate executes it and the decoder reads
//! captured registers back through it.

pub mod event;
pub mod pattern;
pub mod recipe;

pub use event::{CallKind, Capture, CaptureStatus, RawCall, INT_REGS};
use gotrace_binary::abi::{self, AbiReg, Location, Piece};
use gotrace_binary::dwarf::DwarfInfo;
use gotrace_binary::dwarf::{DwarfLocation, DwarfPlace};
use gotrace_binary::inline::InlinedSite;
use gotrace_binary::pclntab::FuncTraits;
use gotrace_binary::sites::{ProbeSites, SkipCondition, UprobeRefusal};
use gotrace_binary::types::TypeId;
use gotrace_binary::types::{TypeKind, TypeTable};
use gotrace_binary::{BinaryError, FileOffset, Function, GoBinary, VirtAddr};
use pattern::Pattern;
use recipe::Compiler;
pub use recipe::{Limits, Recipe};
use serde::Serialize;

/// What gotrace can trace: amd64 Go binaries with the register ABI (Go 1.17+).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error("{0} is an arm64 binary: gotrace can read it (`gotrace funcs`) but traces only amd64 for now")]
    UnsupportedArch(String),
    #[error("{binary} was built by {version}; gotrace needs Go 1.17 or newer (the register ABI)")]
    TooOldGo { binary: String, version: String },
    #[error(
        "cannot find the goroutine id's offset in runtime.g for {0} (no DWARF and no Go version)"
    )]
    NoGoidOffset(String),
    #[error("no function matches {pattern:?}")]
    NoMatch { pattern: String },
    #[error(
        "nothing left to trace: every function matched was excluded, refused or has no usable probe sites"
    )]
    NothingToTrace,
    #[error("{name} cannot be traced safely: {refusal}")]
    Refused { name: String, refusal: Refusal },
}

/// Why gotrace will not probe a function, though a pattern names it: a uprobe there would
/// harm the program or could not be attached. The first three come from the function's own
/// record in `.gopclntab`, which the runtime keeps for its tracebacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// Hand-written assembly: no promise of a goroutine in R14 or of a Go frame, and it may
    /// run mid-write-barrier, on the signal or system stack, or without a goroutine at all.
    Assembly,
    /// It sets SP itself: a stack switch (systemstack, mcall, morestack, gogo, asmcgocall).
    StackSwitch,
    /// The outermost frame of a stack (goexit, mstart, rt0_go): nothing calls it.
    TopOfStack,
    /// A probe site's instruction cannot carry a uprobe.
    Instruction {
        site: SiteKind,
        addr: VirtAddr,
        why: UprobeRefusal,
    },
}

impl Refusal {
    /// A short name for counting refusals by kind.
    pub fn category(&self) -> &'static str {
        match self {
            Refusal::Assembly => "assembly",
            Refusal::StackSwitch => "stack switch",
            Refusal::TopOfStack => "top of a stack",
            Refusal::Instruction { .. } => "instruction the kernel cannot probe",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Assembly => f.write_str(
                "it is hand-written assembly, which may run without a goroutine, on the signal or system stack, or mid-write-barrier",
            ),
            Refusal::StackSwitch => f.write_str(
                "it switches stacks (writes SP), so the goroutine seen at its probes is not the one that called it",
            ),
            Refusal::TopOfStack => f.write_str("it is the outermost frame of a stack: it is never called"),
            Refusal::Instruction { site, addr, why } => {
                write!(f, "its {} site at {addr} is {why}", site.label())
            }
        }
    }
}

/// Whether `function` must not be probed, from what the binary records about it (its sites
/// aside: see [`site_refusal`]).
pub fn refusal(binary: &GoBinary, function: &Function) -> Option<Refusal> {
    let traits = binary.traits(function).unwrap_or_default();
    if traits.has(FuncTraits::SP_WRITE) {
        Some(Refusal::StackSwitch)
    } else if traits.has(FuncTraits::TOP_FRAME) {
        Some(Refusal::TopOfStack)
    } else if traits.has(FuncTraits::ASM) || function.name.ends_with(".abi0") {
        // Symbol tables name ABI0 assembly `.abi0`; Go before 1.19 sets no assembly flag.
        Some(Refusal::Assembly)
    } else {
        None
    }
}

/// The first of `sites` whose instruction cannot carry a uprobe (the kernel refuses it, or
/// would emulate it wrongly), as a refusal.
pub fn site_refusal(binary: &GoBinary, sites: &ProbeSites, entry_only: bool) -> Option<Refusal> {
    if binary.arch() != gotrace_binary::Arch::Amd64 {
        return None;
    }
    let returns = sites.returns.iter().filter(|_| !entry_only);
    std::iter::once((SiteKind::Entry, &sites.entry.addr))
        .chain(returns.map(|a| (SiteKind::Return, a)))
        .find_map(|(site, &addr)| {
            // An instruction is at most 15 bytes; fewer remain at the end of the text.
            let bytes = (1..=15)
                .rev()
                .find_map(|len| binary.bytes_at(addr, len).ok())?;
            let why = gotrace_binary::sites::uprobe_refusal_amd64(bytes)?;
            Some(Refusal::Instruction { site, addr, why })
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    Entry,
    Return,
    /// `runtime.gopanic`: the goroutine's traced calls may be unwound.
    GoPanic,
    /// `runtime.goexit1`: the goroutine ends; calls still in flight were cut short (Goexit).
    GoExit,
    /// `runtime.fatalpanic`: an unrecovered panic; calls in flight panicked.
    FatalPanic,
    /// `runtime.recovery`: a recovered panic; calls below the recovering frame panicked.
    Recovery,
    /// Entry and return at once: the function's body is a single `RET`.
    EntryReturn,
    /// The first instruction of a body the compiler inlined into another function: an entry
    /// with no return of its own.
    Inlined,
}

impl SiteKind {
    pub fn label(self) -> &'static str {
        match self {
            SiteKind::Entry => "entry",
            SiteKind::Return => "return",
            SiteKind::GoPanic => "runtime.gopanic",
            SiteKind::GoExit => "runtime.goexit1",
            SiteKind::FatalPanic => "runtime.fatalpanic",
            SiteKind::Recovery => "runtime.recovery",
            SiteKind::EntryReturn => "entry-and-return",
            SiteKind::Inlined => "inlined",
        }
    }
}

/// The runtime functions whose entries tell how calls that never return ended.
const RUNTIME_HOOKS: [(&str, SiteKind); 4] = [
    ("runtime.gopanic", SiteKind::GoPanic),
    ("runtime.goexit1", SiteKind::GoExit),
    ("runtime.fatalpanic", SiteKind::FatalPanic),
    ("runtime.recovery", SiteKind::Recovery),
];

/// Where `runtime.recovery(gp)` finds the stack pointer the recovering frame resumes at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ResumeSp {
    /// Not known: calls a recovered panic unwound are reported at the goroutine's next traced
    /// entry or return at a shallower frame.
    Unknown,
    /// Go ≤ 1.21: `gp.sigcode0`.
    SigCode0 { g_offset: u64 },
    /// Go 1.22+: `gp._panic.sp`.
    PanicSp { g_offset: u64, sp_offset: u64 },
}

/// From the binary's DWARF, else from the release's known layout.
fn resume_sp(binary: &GoBinary) -> ResumeSp {
    let minor = binary.build_info().and_then(|b| b.go_version_minor());
    let dwarf = binary.dwarf().ok().flatten();
    let member = |s: &str, m: &str| dwarf.and_then(|d| d.member_offset(s, m));
    // runtime._panic has an `sp` from 1.22 on; before, gopanic leaves it in g.sigcode0.
    match (
        member("runtime._panic", "sp"),
        member("runtime.g", "_panic"),
    ) {
        (Some(sp_offset), Some(g_offset)) if member("runtime._panic", "startSP").is_some() => {
            return ResumeSp::PanicSp {
                g_offset,
                sp_offset,
            }
        }
        _ => {}
    }
    if let Some(g_offset) = member("runtime.g", "sigcode0") {
        if minor.is_none_or(|m| m <= 21) {
            return ResumeSp::SigCode0 { g_offset };
        }
    }
    resume_sp_by_version(minor)
}

/// The layouts of the releases gotrace is tested with (amd64, read from their DWARF; the
/// accounting tests check them against every installed toolchain), for binaries without DWARF.
pub fn resume_sp_by_version(minor: Option<u32>) -> ResumeSp {
    let panic_sp = |sp_offset| ResumeSp::PanicSp {
        g_offset: 32,
        sp_offset,
    };
    match minor {
        Some(19) => ResumeSp::SigCode0 { g_offset: 272 },
        Some(21) => ResumeSp::SigCode0 { g_offset: 248 },
        Some(22..=25) | Some(27) => panic_sp(48),
        Some(26) => panic_sp(40),
        _ => ResumeSp::Unknown,
    }
}

/// One address to attach the BPF program at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Site {
    /// Index into [`ProbePlan::functions`] (unused for runtime hooks).
    pub function: u32,
    pub kind: SiteKind,
    pub addr: VirtAddr,
    pub file_offset: FileOffset,
    /// Entry only: the pass where this holds is about to grow the stack and restart.
    pub skip_if: Option<SkipCondition>,
    /// Entry only: the site can fire twice for one call (see [`gotrace_binary::EntrySite`]).
    pub may_restart: bool,
}

/// A parameter or result: its name, type and where the ABI puts it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedValue {
    pub name: String,
    pub ty: TypeId,
    pub location: Location,
    /// Why the value cannot be read at this site (`location` is then unused).
    pub unavailable: Option<Unlocated>,
}

/// Why an inlined call's argument is not read: DWARF's location lists are all there is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unlocated {
    /// DWARF gives no location there (optimized away, or folded into a constant).
    Nowhere,
    /// It is in a register the probe does not capture (RDX, RBP, R12–R15).
    Register,
    /// DWARF describes its place in a form gotrace does not evaluate.
    Expression,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedFunction {
    pub name: String,
    pub entry: VirtAddr,
    /// `None` when the binary has no DWARF: names and types are unknown.
    pub signature: Option<PlannedSignature>,
    /// Memory to read at entry (for the arguments) and at each return (for the results).
    pub entry_recipe: Recipe,
    pub return_recipe: Recipe,
    /// An inlined copy: the function whose code holds it (`entry` is then its probe site).
    pub inlined_into: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PlannedSignature {
    pub params: Vec<PlannedValue>,
    pub results: Vec<PlannedValue>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbePlan {
    pub functions: Vec<PlannedFunction>,
    /// The traced functions' sites.
    pub sites: Vec<Site>,
    /// Entries of runtime functions that end calls without a return (panics, Goexit).
    pub runtime_hooks: Vec<Site>,
    /// Offset of `goid` in `runtime.g`.
    pub goid_offset: u64,
    /// Attach entry sites only: arguments and counts, no results or durations.
    pub entry_only: bool,
    /// Things the user should know that do not stop tracing (unreadable DWARF, …).
    pub warnings: Vec<String>,
    /// Functions a glob matched that are not traced, and why.
    pub refused: Vec<(String, Refusal)>,
    pub limits: Limits,
    /// Maps have the bucket layout of Go ≤ 1.23 (their entries are captured).
    pub classic_maps: bool,
    /// The binary is position-independent: runtime addresses differ per process.
    pub position_independent: bool,
    /// Recipes for the dynamic values of interfaces, by runtime type address (link-time).
    pub type_recipes: Vec<(u64, Recipe)>,
    /// How the `runtime.recovery` hook finds where a recovered goroutine resumes.
    pub resume_sp: ResumeSp,
}

#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    pub entry_only: bool,
    /// Functions matching any of these globs are left out.
    pub exclude: Vec<String>,
    pub limits: Limits,
}

/// The functions `patterns` select: an exact name must exist (else an error with suggestions,
/// or "inlined"); a glob must match at least one function. Sorted by address, no duplicates.
pub fn select<'b>(
    binary: &'b GoBinary,
    patterns: &[String],
    exclude: &[String],
) -> Result<Vec<&'b Function>, PlanError> {
    let excluded: Vec<Pattern> = exclude.iter().map(|e| Pattern::new(e)).collect();
    let mut chosen: Vec<&Function> = Vec::new();
    for text in patterns {
        let pattern = Pattern::new(text);
        if !pattern.is_glob() {
            chosen.push(binary.function(text)?);
            continue;
        }
        let before = chosen.len();
        // Assembly (`.abi0`) matches too: `plan` refuses it with a reason.
        chosen.extend(
            binary
                .functions()
                .iter()
                .filter(|f| pattern.matches(&f.name)),
        );
        if chosen.len() == before {
            return Err(PlanError::NoMatch {
                pattern: text.clone(),
            });
        }
    }
    chosen.retain(|f| !excluded.iter().any(|e| e.matches(&f.name)));
    chosen.sort_by_key(|f| f.entry);
    chosen.dedup_by_key(|f| f.entry);
    Ok(chosen)
}

/// Plans probes for the functions `patterns` select (exact Go names or globs).
pub fn plan(
    binary: &GoBinary,
    patterns: &[String],
    options: PlanOptions,
) -> Result<ProbePlan, PlanError> {
    check_traceable(binary)?;
    let goid_offset = binary
        .goid_offset()
        .ok_or_else(|| PlanError::NoGoidOffset(binary.path().display().to_string()))?;
    let mut functions = Vec::new();
    let mut sites = Vec::new();
    let mut warnings = Vec::new();
    let dwarf = match binary.dwarf() {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            warnings.push(format!(
                "{} has no DWARF (built with -ldflags=-w or stripped): arguments and results cannot be named or decoded, shown as ?",
                binary.path().display()
            ));
            None
        }
        Err(e) => {
            warnings.push(format!(
                "cannot read DWARF ({e}): arguments and results shown as ?"
            ));
            None
        }
    };
    // A name with no code of its own is traced where it was inlined.
    let excluded: Vec<Pattern> = options.exclude.iter().map(|e| Pattern::new(e)).collect();
    let (inlined_only, patterns): (Vec<String>, Vec<String>) =
        patterns.iter().cloned().partition(|p| {
            !Pattern::new(p).is_glob()
                && matches!(binary.function(p), Err(BinaryError::Inlined { .. }))
        });
    let inlined_only: Vec<String> = inlined_only
        .into_iter()
        .filter(|n| !excluded.iter().any(|e| e.matches(n)))
        .collect();
    let patterns = &patterns[..];
    let selected = select(binary, patterns, &options.exclude)?;
    // Swiss-table maps (Go 1.24+) have another layout; their entries are not captured.
    let classic_maps = binary
        .build_info()
        .and_then(|b| b.go_version_minor())
        .is_none_or(|minor| minor <= 23);
    let only_exact = patterns.iter().all(|p| !Pattern::new(p).is_glob());
    let mut refused = Vec::new();
    for &function in &selected {
        let index = functions.len() as u32;
        let probe_sites = match binary.probe_sites(function) {
            Ok(sites) => sites,
            Err(e) if only_exact => return Err(e.into()),
            // One odd function in a wide pattern should not stop the rest.
            Err(e) => {
                warnings.push(format!("skipping {}: {e}", function.name));
                continue;
            }
        };
        let refusal = refusal(binary, function)
            .or_else(|| site_refusal(binary, &probe_sites, options.entry_only));
        if let Some(refusal) = refusal {
            let named = patterns.contains(&function.name);
            if named && only_exact {
                return Err(PlanError::Refused {
                    name: function.name.clone(),
                    refusal,
                });
            }
            refused.push((function.name.clone(), refusal));
            continue;
        }
        // A body that is a single RET enters and returns at one instruction: one site does both.
        let entry_returns =
            !options.entry_only && probe_sites.returns.contains(&probe_sites.entry.addr);
        sites.push(Site {
            function: index,
            kind: if entry_returns {
                SiteKind::EntryReturn
            } else {
                SiteKind::Entry
            },
            addr: probe_sites.entry.addr,
            file_offset: binary.file_offset(probe_sites.entry.addr)?,
            skip_if: probe_sites.entry.skip_if,
            may_restart: probe_sites.entry.may_restart,
        });
        if !options.entry_only {
            for &addr in probe_sites
                .returns
                .iter()
                .filter(|&&a| a != probe_sites.entry.addr)
            {
                sites.push(Site {
                    function: index,
                    kind: SiteKind::Return,
                    addr,
                    file_offset: binary.file_offset(addr)?,
                    skip_if: None,
                    may_restart: false,
                });
            }
        }
        let signature = match dwarf.and_then(|d| checked_signature(binary, d, function)) {
            Some(Ok(signature)) => Some(signature),
            Some(Err(mismatch)) => {
                warnings.push(format!(
                    "{}: {mismatch}: its arguments and results are shown as ? rather than guessed",
                    function.name
                ));
                None
            }
            None => {
                if let Some(why) = dwarf.and_then(|d| d.signature_error(function.entry)) {
                    warnings.push(format!(
                        "{}: its signature cannot be read ({why}): its arguments and results are shown as ?",
                        function.name
                    ));
                }
                None
            }
        };
        let (entry_recipe, return_recipe) = match (&signature, dwarf) {
            (Some(sig), Some(d)) => (
                Compiler::new(d.types(), options.limits, classic_maps).site(&located(&sig.params)),
                Compiler::new(d.types(), options.limits, classic_maps).site(&located(&sig.results)),
            ),
            _ => (Recipe::default(), Recipe::default()),
        };
        functions.push(PlannedFunction {
            name: function.name.clone(),
            entry: function.entry,
            signature,
            entry_recipe,
            return_recipe,
            inlined_into: None,
        });
    }
    let inlined_names = selected.iter().map(|f| f.name.clone()).chain(inlined_only);
    let compiler = || dwarf.map(|d| Compiler::new(d.types(), options.limits, classic_maps));
    for name in inlined_names {
        plan_inlined(
            binary,
            &name,
            &compiler,
            &mut functions,
            &mut sites,
            &mut warnings,
            &mut refused,
        )?;
    }
    if functions.is_empty() {
        if let [(name, refusal)] = &refused[..] {
            return Err(PlanError::Refused {
                name: name.clone(),
                refusal: refusal.clone(),
            });
        }
        return Err(PlanError::NothingToTrace);
    }
    let mut runtime_hooks = Vec::new();
    if !options.entry_only {
        for (name, kind) in RUNTIME_HOOKS {
            let site = binary
                .function(name)
                .and_then(|f| binary.probe_sites(f))
                .and_then(|s| Ok((s.entry, binary.file_offset(s.entry.addr)?)));
            let hook_refused = site.as_ref().ok().and_then(|(entry, _)| {
                let sites = ProbeSites {
                    entry: *entry,
                    returns: Vec::new(),
                    deferreturns: Vec::new(),
                };
                site_refusal(binary, &sites, true)
            });
            if let Some(refusal) = hook_refused {
                warnings.push(format!(
                    "cannot probe {name} ({refusal}): calls unwound by panics or Goexit may go unreported"
                ));
                continue;
            }
            match site {
                Ok((entry, file_offset)) => runtime_hooks.push(Site {
                    function: u32::MAX,
                    kind,
                    addr: entry.addr,
                    file_offset,
                    skip_if: entry.skip_if,
                    may_restart: false,
                }),
                Err(e) => warnings.push(format!(
                    "cannot probe {name} ({e}): calls unwound by panics or Goexit may go unreported"
                )),
            }
        }
    }
    let type_recipes = match dwarf {
        Some(d) if functions.iter().any(|f| mentions_interface(d.types(), f)) => binary
            .runtime_types()?
            .into_iter()
            .map(|(addr, ty)| {
                (
                    addr,
                    Compiler::new(d.types(), options.limits, classic_maps).dynamic(ty),
                )
            })
            .filter(|(_, recipe)| !recipe.ops.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    Ok(ProbePlan {
        functions,
        sites,
        runtime_hooks,
        goid_offset,
        entry_only: options.entry_only,
        warnings,
        refused,
        limits: options.limits,
        classic_maps,
        position_independent: binary.is_pie(),
        type_recipes,
        resume_sp: resume_sp(binary),
    })
}

/// Plans an entry-like probe at each place `name` was inlined, each its own planned function
/// (its arguments are somewhere else at every site). A site the binary cannot prove, or whose
/// caller or instruction cannot bear a probe, is left out with a warning; a name with no code
/// of its own and no site left is an error.
fn plan_inlined<'t>(
    binary: &GoBinary,
    name: &str,
    compiler: &dyn Fn() -> Option<Compiler<'t>>,
    functions: &mut Vec<PlannedFunction>,
    sites: &mut Vec<Site>,
    warnings: &mut Vec<String>,
    refused: &mut Vec<(String, Refusal)>,
) -> Result<(), PlanError> {
    let has_code = binary.function(name).is_ok();
    let found = match binary.inlined_sites(name) {
        Ok(found) => found,
        // A table gotrace cannot read costs the inlined copies, not the function's own code.
        Err(e) if has_code => {
            warnings.push(format!(
                "cannot find where {name} was inlined ({e}): only its own code is traced"
            ));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut usable = Vec::new();
    for found in found {
        let site = match found {
            Ok(site) => site,
            Err(e) => {
                warnings.push(format!("skipping an inlined copy of {name}: {e}"));
                continue;
            }
        };
        match inlined_refusal(binary, &site)? {
            Some(Refusal::Instruction { addr, why, .. }) => refused.push((
                format!("{name} (inlined into {})", site.caller),
                Refusal::Instruction {
                    site: SiteKind::Inlined,
                    addr,
                    why,
                },
            )),
            Some(r) => refused.push((format!("{name} (inlined into {})", site.caller), r)),
            None => usable.push(site),
        }
    }
    if usable.is_empty() && !has_code {
        if let Some((_, refusal)) = refused.iter().rev().find(|(n, _)| n.starts_with(name)) {
            return Err(PlanError::Refused {
                name: name.to_owned(),
                refusal: refusal.clone(),
            });
        }
        return Err(BinaryError::Inlined {
            name: name.to_owned(),
        }
        .into());
    }
    let addrs: Vec<VirtAddr> = usable.iter().map(|s| s.addr).collect();
    let params = binary.inlined_params(name, &addrs).unwrap_or_else(|e| {
        warnings.push(format!(
            "cannot read the DWARF of {name}'s inlined copies ({e}): their arguments are shown as ?"
        ));
        vec![None; addrs.len()]
    });
    let types = binary.dwarf().ok().flatten().map(|d| d.types());
    for (site, params) in usable.into_iter().zip(params) {
        let signature = params.map(|params| PlannedSignature {
            params: params
                .into_iter()
                .map(|p| {
                    let size = types.map_or(0, |t| t.get(p.ty).size);
                    let (location, unavailable) =
                        match inlined_location(&p.location, size, site.sp_delta) {
                            Ok(location) => (location, None),
                            Err(why) => (Location::Empty, Some(why)),
                        };
                    PlannedValue {
                        name: p.name,
                        ty: p.ty,
                        location,
                        unavailable,
                    }
                })
                .collect(),
            results: Vec::new(),
        });
        let entry_recipe = match (&signature, compiler()) {
            (Some(sig), Some(c)) => c.site(&located(&sig.params)),
            _ => Recipe::default(),
        };
        sites.push(Site {
            function: functions.len() as u32,
            kind: SiteKind::Inlined,
            addr: site.addr,
            file_offset: binary.file_offset(site.addr)?,
            skip_if: None,
            may_restart: false,
        });
        functions.push(PlannedFunction {
            name: name.to_owned(),
            entry: site.addr,
            signature,
            entry_recipe,
            return_recipe: Recipe::default(),
            inlined_into: Some(site.caller),
        });
    }
    Ok(())
}

/// Whether an inlined copy's site must not be probed: its caller must not be (see
/// [`refusal`]), or its instruction cannot bear a probe.
pub fn inlined_refusal(
    binary: &GoBinary,
    site: &InlinedSite,
) -> Result<Option<Refusal>, BinaryError> {
    let caller = binary.function(&site.caller)?;
    let sites = ProbeSites {
        entry: gotrace_binary::EntrySite {
            addr: site.addr,
            skip_if: None,
            may_restart: false,
        },
        returns: Vec::new(),
        deferreturns: Vec::new(),
    };
    Ok(refusal(binary, caller).or_else(|| site_refusal(binary, &sites, true)))
}

/// Where the probe finds a value DWARF places at `location` (amd64): the integer registers the
/// BPF side captures, float registers (shown as unknown), or the caller's frame — the
/// canonical frame address is SP at the caller's entry plus 8 (the return address), and
/// `sp_delta` is how far SP is below that entry value at the probe.
fn inlined_location(
    location: &DwarfLocation,
    size: u64,
    sp_delta: Option<u64>,
) -> Result<Location, Unlocated> {
    let pieces = match location {
        DwarfLocation::Nowhere => return Err(Unlocated::Nowhere),
        DwarfLocation::Unsupported(_) => return Err(Unlocated::Expression),
        DwarfLocation::Pieces(pieces) => pieces,
    };
    // (value offset, piece size, place); a size of 0 is the whole value.
    let mut parts = Vec::with_capacity(pieces.len());
    let mut at = 0;
    for &(piece_size, place) in pieces {
        let piece_size = if piece_size == 0 { size } else { piece_size };
        parts.push((at, piece_size, place.ok_or(Unlocated::Nowhere)?));
        at += piece_size;
    }
    if parts
        .iter()
        .all(|(_, _, p)| matches!(p, DwarfPlace::Register(_)))
    {
        let mut out = Vec::with_capacity(parts.len());
        for (value_offset, piece_size, place) in parts {
            let DwarfPlace::Register(r) = place else {
                return Err(Unlocated::Expression);
            };
            if piece_size > 8 {
                return Err(Unlocated::Expression);
            }
            let reg = match r {
                0 => AbiReg::Int(0),
                3 => AbiReg::Int(1),
                2 => AbiReg::Int(2),
                5 => AbiReg::Int(3),
                4 => AbiReg::Int(4),
                8..=11 => AbiReg::Int(r as u8 - 3),
                17..=32 => AbiReg::Float(r as u8 - 17),
                _ => return Err(Unlocated::Register),
            };
            out.push(Piece {
                reg,
                value_offset,
                size: piece_size,
            });
        }
        return Ok(Location::Registers(out));
    }
    // In memory: one run of the frame, each piece where the one before it ends.
    let cfa_above_sp = sp_delta.ok_or(Unlocated::Expression)? + 8;
    let mut start = None;
    for (value_offset, _, place) in parts {
        let DwarfPlace::Cfa(off) = place else {
            return Err(Unlocated::Expression);
        };
        let first = off - value_offset as i64;
        match start {
            None => start = Some(first),
            Some(s) if s == first => {}
            Some(_) => return Err(Unlocated::Expression),
        }
    }
    let sp_offset = cfa_above_sp as i64 + start.ok_or(Unlocated::Nowhere)?;
    u64::try_from(sp_offset)
        .map(|sp_offset| Location::Stack { sp_offset })
        .map_err(|_| Unlocated::Expression)
}

fn located(values: &[PlannedValue]) -> Vec<(TypeId, &Location)> {
    values
        .iter()
        .filter(|v| v.unavailable.is_none())
        .map(|v| (v.ty, &v.location))
        .collect()
}

/// Whether any argument or result can hold an interface (then dynamic types need recipes).
fn mentions_interface(types: &TypeTable, function: &PlannedFunction) -> bool {
    fn walk(types: &TypeTable, ty: TypeId, budget: u32) -> bool {
        budget > 0
            && match &types.get(ty).kind {
                TypeKind::Interface { .. } => true,
                TypeKind::Pointer { elem }
                | TypeKind::Slice { elem }
                | TypeKind::Array { elem, .. } => walk(types, *elem, budget - 1),
                TypeKind::Map { key, value, .. } => {
                    walk(types, *key, budget - 1) || walk(types, *value, budget - 1)
                }
                TypeKind::Struct { fields } => fields.iter().any(|f| walk(types, f.ty, budget - 1)),
                _ => false,
            }
    }
    function.signature.as_ref().is_some_and(|s| {
        s.params
            .iter()
            .chain(&s.results)
            .any(|v| walk(types, v.ty, 6))
    })
}

fn check_traceable(binary: &GoBinary) -> Result<(), PlanError> {
    if binary.arch() != gotrace_binary::Arch::Amd64 {
        return Err(PlanError::UnsupportedArch(
            binary.path().display().to_string(),
        ));
    }
    if let Some(info) = binary.build_info() {
        if info.go_version_minor().is_some_and(|minor| minor < 17) {
            return Err(PlanError::TooOldGo {
                binary: binary.path().display().to_string(),
                version: info.go_version.clone(),
            });
        }
    }
    Ok(())
}

/// The DWARF signature describes another argument frame than the compiler built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureMismatch {
    pub dwarf_width: u64,
    pub frame: u64,
}

impl std::fmt::Display for SignatureMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its DWARF signature needs a {}-byte argument frame but the function's is {} bytes (Go before 1.22 leaves blank `_` parameters and wrapper receivers out of DWARF)",
            self.dwarf_width, self.frame
        )
    }
}

/// The function's signature with each value's ABI location, as `trace` reads them (and
/// `funcs -v` shows them). A signature whose argument frame differs from pclntab's would put
/// values in the wrong registers: refused. `None` when DWARF has no signature for it.
pub fn checked_signature(
    binary: &GoBinary,
    dwarf: &DwarfInfo,
    function: &Function,
) -> Option<Result<PlannedSignature, SignatureMismatch>> {
    let signature = dwarf.signature(function.entry)?;
    let assignment = abi::assign(binary.arch(), signature, dwarf.types());
    if let Some(frame) = binary.arg_size(function) {
        if frame != assignment.arg_width {
            return Some(Err(SignatureMismatch {
                dwarf_width: assignment.arg_width,
                frame,
            }));
        }
    }
    let zip = |vars: &[gotrace_binary::types::Variable], locations: Vec<Location>| {
        vars.iter()
            .zip(locations)
            .map(|(v, location)| PlannedValue {
                name: v.name.clone(),
                ty: v.ty,
                location,
                unavailable: None,
            })
            .collect()
    };
    Some(Ok(PlannedSignature {
        params: zip(&signature.params, assignment.params),
        results: zip(&signature.results, assignment.results),
    }))
}

impl ProbePlan {
    /// Every site to attach: the functions' and the runtime hooks.
    pub fn all_sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.iter().chain(&self.runtime_hooks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(place: DwarfPlace) -> DwarfLocation {
        DwarfLocation::Pieces(vec![(0, Some(place))])
    }

    #[test]
    fn inlined_arguments_in_captured_registers() {
        // DWARF 3 is RBX, the second register of Go's sequence; 9 is R9, the seventh.
        let got = inlined_location(&whole(DwarfPlace::Register(3)), 8, None);
        let piece = |reg, value_offset| Piece {
            reg,
            value_offset,
            size: 8,
        };
        assert_eq!(got, Ok(Location::Registers(vec![piece(AbiReg::Int(1), 0)])));
        // A string split over RAX (pointer) and R9 (length).
        let split = DwarfLocation::Pieces(vec![
            (8, Some(DwarfPlace::Register(0))),
            (8, Some(DwarfPlace::Register(9))),
        ]);
        assert_eq!(
            inlined_location(&split, 16, None),
            Ok(Location::Registers(vec![
                piece(AbiReg::Int(0), 0),
                piece(AbiReg::Int(6), 8)
            ]))
        );
    }

    #[test]
    fn inlined_arguments_the_probe_cannot_read() {
        // RDX (1) and R12 (12) are not among the captured registers.
        for r in [1, 6, 12, 15] {
            let got = inlined_location(&whole(DwarfPlace::Register(r)), 8, None);
            assert_eq!(got, Err(Unlocated::Register), "DWARF register {r}");
        }
        assert_eq!(
            inlined_location(&DwarfLocation::Nowhere, 8, None),
            Err(Unlocated::Nowhere)
        );
        // Half a string optimized away.
        let half = DwarfLocation::Pieces(vec![(8, Some(DwarfPlace::Register(0))), (8, None)]);
        assert_eq!(inlined_location(&half, 16, None), Err(Unlocated::Nowhere));
        let mixed = DwarfLocation::Pieces(vec![
            (8, Some(DwarfPlace::Register(0))),
            (8, Some(DwarfPlace::Cfa(-16))),
        ]);
        assert_eq!(
            inlined_location(&mixed, 16, None),
            Err(Unlocated::Expression)
        );
        let other = DwarfLocation::Unsupported("DW_OP_deref".into());
        assert_eq!(
            inlined_location(&other, 8, None),
            Err(Unlocated::Expression)
        );
    }

    #[test]
    fn inlined_arguments_in_the_frame_are_found_from_sp() {
        // 0x48 below the caller's entry SP, a slot 24 bytes below the CFA (entry SP + 8):
        // SP + 0x48 + 8 - 24.
        let slot = whole(DwarfPlace::Cfa(-24));
        assert_eq!(
            inlined_location(&slot, 8, Some(0x48)),
            Ok(Location::Stack { sp_offset: 0x38 })
        );
        // Unknown frame size: not guessed.
        assert_eq!(inlined_location(&slot, 8, None), Err(Unlocated::Expression));
        // A string in two adjacent slots is one run; two apart are not.
        let run = DwarfLocation::Pieces(vec![
            (8, Some(DwarfPlace::Cfa(-32))),
            (8, Some(DwarfPlace::Cfa(-24))),
        ]);
        assert_eq!(
            inlined_location(&run, 16, Some(0x48)),
            Ok(Location::Stack { sp_offset: 0x30 })
        );
        let apart = DwarfLocation::Pieces(vec![
            (8, Some(DwarfPlace::Cfa(-40))),
            (8, Some(DwarfPlace::Cfa(-24))),
        ]);
        assert_eq!(
            inlined_location(&apart, 16, Some(0x48)),
            Err(Unlocated::Expression)
        );
    }
}
