//! The probe plan: for each traced function, the sites to attach (entry and every RET), how
//! each site must behave, and where the function's arguments and results live. Built from a
//! [`GoBinary`] without touching the kernel; the kernel crate executes it and the decoder reads
//! captured registers back through it.

pub mod event;
pub mod filter;
mod inlined;
pub mod pattern;
pub mod recipe;
mod refusal;
mod signature;
mod sites;
pub mod stats;

pub use event::{CallKind, Capture, CaptureStatus, RawCall, RawStack, StackEnd, INT_REGS};
use gotrace_binary::abi::Location;
use gotrace_binary::arginfo::UntypedArgs;
use gotrace_binary::dwarf::DwarfInfo;
use gotrace_binary::layout::LayoutError;
pub use gotrace_binary::layout::{ResumeSp, RuntimeLayout};
use gotrace_binary::rtype::RuntimeMethods;
use gotrace_binary::sites::SkipCondition;
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use gotrace_binary::{BinaryError, FileOffset, Function, GoBinary, VirtAddr};
pub use inlined::inlined_refusal;
use inlined::plan_inlined;
use pattern::Pattern;
use recipe::Compiler;
pub use recipe::{Limits, Recipe};
pub use refusal::{refusal, site_refusal, Refusal};
use serde::Serialize;
pub use signature::{checked_signature, runtime_signature, SignatureMismatch, SignatureSource};
use signature::{function_signature, signature_sources, untyped_args};
use sites::{function_sites, runtime_hooks};

/// What gotrace can trace: amd64 Go binaries with the register ABI (Go 1.17+).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error("{0} is an arm64 binary: gotrace can read it (`gotrace funcs`) but traces only amd64 for now")]
    UnsupportedArch(String),
    #[error("{binary} was built by {version}; gotrace needs Go 1.17 or newer (the register ABI)")]
    TooOldGo { binary: String, version: String },
    #[error("cannot tell the Go runtime's layout in {binary}: {reason}")]
    Layout { binary: String, reason: LayoutError },
    #[error("no function matches {pattern:?}")]
    NoMatch { pattern: String },
    #[error(
        "nothing left to trace: every function matched was excluded, refused or has no usable probe sites"
    )]
    NothingToTrace,
    #[error("{name} cannot be traced safely: {refusal}")]
    Refused { name: String, refusal: Refusal },
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
    /// `None` when neither DWARF nor the runtime types give it: names and types are unknown.
    pub signature: Option<PlannedSignature>,
    pub source: SignatureSource,
    /// Without a signature: the argument words the traceback metadata describes, each with
    /// its place at entry when proven (read at the entry site only).
    pub untyped: Option<UntypedArgs>,
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
    /// The Go runtime's offsets and sizes in this binary (goroutine id, stack top, panics,
    /// itabs, maps).
    pub layout: RuntimeLayout,
    /// Attach entry sites only: arguments and counts, no results or durations.
    pub entry_only: bool,
    /// Walk each call's stack at entry (`--stack`).
    pub stack: bool,
    /// Things the user should know that do not stop tracing (unreadable DWARF, …).
    pub warnings: Vec<String>,
    /// Functions a glob matched that are not traced, and why.
    pub refused: Vec<(String, Refusal)>,
    pub limits: Limits,
    /// The binary is position-independent: runtime addresses differ per process.
    pub position_independent: bool,
    /// Recipes for the dynamic values of interfaces, by runtime type address (link-time).
    pub type_recipes: Vec<(u64, Recipe)>,
    /// Where the signatures came from (the binary's DWARF, a debug file, none).
    pub debug_source: gotrace_binary::DebugSource,
    /// `--where`, compiled for each function (see [`filter::compile`]).
    #[serde(skip)]
    pub filters: Option<filter::Filters>,
    /// `--by` (stats), compiled for each function (see [`filter::compile_group`]).
    #[serde(skip)]
    pub groups: Option<filter::GroupBy>,
    /// `--min-duration`: calls that return sooner are not reported; 0: all are.
    pub min_duration_ns: u64,
    /// `--sample`: one call in this many is reported; 0 or 1: all are.
    pub sample_every: u32,
    /// `--max-rate`: a function's calls beyond this many in a window of about a second are
    /// counted, not reported; 0: no limit.
    pub max_rate: u64,
}

#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    pub entry_only: bool,
    /// Walk each call's stack at entry.
    pub stack: bool,
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
    let (layout, disagreements) = binary
        .runtime_layout()
        .map_err(|reason| PlanError::Layout {
            binary: binary.path().display().to_string(),
            reason,
        })?;
    let mut gathered = Gathered {
        warnings: disagreements
            .iter()
            .map(|d| format!("runtime layout: {d}"))
            .collect(),
        ..Gathered::default()
    };
    let (dwarf, methods) = signature_sources(binary, &mut gathered.warnings);
    let (inlined_only, patterns) = split_inlined_only(binary, patterns, &options.exclude);
    let selected = select(binary, &patterns, &options.exclude)?;
    let sources = SignatureSources { dwarf, methods };
    plan_selected(
        binary,
        &selected,
        &patterns,
        &options,
        layout,
        sources,
        &mut gathered,
    )?;
    let inlined_names = selected.iter().map(|f| f.name.clone()).chain(inlined_only);
    let compiler = || dwarf.map(|d| Compiler::new(d.types(), options.limits, layout));
    for name in inlined_names {
        plan_inlined(
            binary,
            &name,
            &compiler,
            &mut gathered.functions,
            &mut gathered.sites,
            &mut gathered.warnings,
            &mut gathered.refused,
        )?;
    }
    gathered.into_plan(binary, &options, layout)
}

/// What planning gathers as it goes: the traced functions (inlined copies too) and their
/// sites, the warnings, and the functions refused.
#[derive(Default)]
struct Gathered {
    functions: Vec<PlannedFunction>,
    sites: Vec<Site>,
    warnings: Vec<String>,
    refused: Vec<(String, Refusal)>,
}

/// Where signatures come from: DWARF, or without it the types the runtime keeps for methods.
#[derive(Clone, Copy)]
struct SignatureSources<'b> {
    dwarf: Option<&'b DwarfInfo>,
    methods: Option<&'b RuntimeMethods>,
}

/// Plans each selected function that can be traced and refuses the others. Only exact names
/// given: a function without probe sites is an error, and so is one named and refused.
fn plan_selected(
    binary: &GoBinary,
    selected: &[&Function],
    patterns: &[String],
    options: &PlanOptions,
    layout: RuntimeLayout,
    sources: SignatureSources,
    gathered: &mut Gathered,
) -> Result<(), PlanError> {
    let only_exact = patterns.iter().all(|p| !Pattern::new(p).is_glob());
    for &function in selected {
        let index = gathered.functions.len() as u32;
        let probe_sites = match binary.probe_sites(function) {
            Ok(sites) => sites,
            Err(e) if only_exact => return Err(e.into()),
            // One odd function in a wide pattern should not stop the rest.
            Err(e) => {
                gathered
                    .warnings
                    .push(format!("skipping {}: {e}", function.name));
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
            gathered.refused.push((function.name.clone(), refusal));
            continue;
        }
        gathered.sites.extend(function_sites(
            binary,
            index,
            &probe_sites,
            options.entry_only,
        )?);
        gathered.functions.push(planned_function(
            binary,
            sources.dwarf,
            sources.methods,
            function,
            options.limits,
            layout,
            &mut gathered.warnings,
        ));
    }
    Ok(())
}

impl Gathered {
    /// The plan: what was gathered, the runtime hooks and the dynamic types' recipes. Nothing
    /// to trace is an error, the refusal's when one function was refused.
    fn into_plan(
        mut self,
        binary: &GoBinary,
        options: &PlanOptions,
        layout: RuntimeLayout,
    ) -> Result<ProbePlan, PlanError> {
        if self.functions.is_empty() {
            if let [(name, refusal)] = &self.refused[..] {
                return Err(PlanError::Refused {
                    name: name.clone(),
                    refusal: refusal.clone(),
                });
            }
            return Err(PlanError::NothingToTrace);
        }
        let runtime_hooks = if options.entry_only {
            Vec::new()
        } else {
            runtime_hooks(binary, &mut self.warnings)
        };
        let type_recipes = type_recipes(binary, &self.functions, options.limits, layout)?;
        Ok(ProbePlan {
            functions: self.functions,
            sites: self.sites,
            runtime_hooks,
            layout,
            entry_only: options.entry_only,
            stack: options.stack,
            warnings: self.warnings,
            refused: self.refused,
            limits: options.limits,
            position_independent: binary.is_pie(),
            type_recipes,
            debug_source: binary.debug_source(),
            filters: None,
            groups: None,
            min_duration_ns: 0,
            sample_every: 0,
            max_rate: 0,
        })
    }
}

/// Splits off the exact names with no code of their own (not excluded), which are traced where
/// they were inlined, from the patterns that select functions.
fn split_inlined_only(
    binary: &GoBinary,
    patterns: &[String],
    exclude: &[String],
) -> (Vec<String>, Vec<String>) {
    let excluded: Vec<Pattern> = exclude.iter().map(|e| Pattern::new(e)).collect();
    let (inlined_only, patterns): (Vec<String>, Vec<String>) =
        patterns.iter().cloned().partition(|p| {
            !Pattern::new(p).is_glob()
                && matches!(binary.function(p), Err(BinaryError::Inlined { .. }))
        });
    let inlined_only = inlined_only
        .into_iter()
        .filter(|n| !excluded.iter().any(|e| e.matches(n)))
        .collect();
    (inlined_only, patterns)
}

/// One traced function's signature (or untyped arguments) and capture recipes.
fn planned_function(
    binary: &GoBinary,
    dwarf: Option<&DwarfInfo>,
    methods: Option<&RuntimeMethods>,
    function: &Function,
    limits: Limits,
    layout: RuntimeLayout,
    warnings: &mut Vec<String>,
) -> PlannedFunction {
    let types = dwarf.map(DwarfInfo::types).or(methods.map(|m| &m.types));
    let (signature, source) = function_signature(binary, dwarf, methods, function, warnings);
    let untyped = match signature {
        Some(_) => None,
        None => untyped_args(binary, function, warnings),
    };
    let source = match (source, &untyped) {
        (SignatureSource::None, Some(_)) => SignatureSource::Traceback,
        (source, _) => source,
    };
    let (entry_recipe, return_recipe) = match (&signature, types) {
        (Some(sig), Some(t)) => (
            Compiler::new(t, limits, layout).site(&located(&sig.params)),
            Compiler::new(t, limits, layout).site(&located(&sig.results)),
        ),
        _ => (
            untyped
                .as_ref()
                .map(|u| Compiler::new(&TypeTable::default(), limits, layout).stack_words(u))
                .unwrap_or_default(),
            Recipe::default(),
        ),
    };
    PlannedFunction {
        name: function.name.clone(),
        entry: function.entry,
        signature,
        source,
        untyped,
        entry_recipe,
        return_recipe,
        inlined_into: None,
    }
}

/// Recipes for the dynamic values of interfaces, by runtime type address, when a traced value
/// can hold an interface.
fn type_recipes(
    binary: &GoBinary,
    functions: &[PlannedFunction],
    limits: Limits,
    layout: RuntimeLayout,
) -> Result<Vec<(u64, Recipe)>, PlanError> {
    Ok(match signature_types(binary) {
        Some(types) if functions.iter().any(|f| mentions_interface(types, f)) => binary
            .runtime_types()?
            .into_iter()
            .map(|(addr, ty)| (addr, Compiler::new(types, limits, layout).dynamic(ty)))
            .filter(|(_, recipe)| !recipe.ops.is_empty())
            .collect(),
        _ => Vec::new(),
    })
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

impl ProbePlan {
    /// Every site to attach: the functions' and the runtime hooks.
    pub fn all_sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.iter().chain(&self.runtime_hooks)
    }

    /// How many traced functions' signatures came from each source, best first:
    /// `12 DWARF` (`from the debug file PATH` when it gave them), or
    /// `3 runtime types, 40 traceback metadata (untyped), 2 none`.
    pub fn signature_sources(&self) -> String {
        let sources = [
            SignatureSource::Dwarf,
            SignatureSource::RuntimeTypes,
            SignatureSource::Traceback,
            SignatureSource::None,
        ];
        let mut parts = Vec::new();
        for source in sources {
            let n = self
                .functions
                .iter()
                .filter(|f| f.inlined_into.is_none() && f.source == source)
                .count();
            if n == 0 {
                continue;
            }
            parts.push(match (source, &self.debug_source) {
                (SignatureSource::Dwarf, gotrace_binary::DebugSource::DebugFile { path, .. }) => {
                    format!("{n} DWARF from {}", path.display())
                }
                _ => format!("{n} {}", source.label()),
            });
        }
        parts.join(", ")
    }
}

/// The types signatures are decoded with: DWARF's (the binary's or its debug file's), else
/// those the runtime type descriptors give methods; `None` when there are neither.
pub fn signature_types(binary: &GoBinary) -> Option<&TypeTable> {
    match binary.dwarf() {
        Ok(Some(d)) => Some(d.types()),
        _ => binary.runtime_methods().ok().map(|m| &m.types),
    }
}
