//! `gotrace funcs`: what a binary offers to trace — names, addresses and Go signatures, and with
//! `-v` (always in JSON) the probe sites and where each argument and result lives.
//!
//! Gathering (`list`) is separate from printing (gotrace-output's `binary` and `function`
//! records), so the listing is the same whichever form it is shown in.

use crate::cli::FuncsArgs;
use anyhow::Result;
use gotrace_binary::abi::{AbiReg, Location};
use gotrace_binary::dwarf::DwarfInfo;
use gotrace_binary::rtype::RuntimeMethods;
use gotrace_binary::sites::SkipCondition;
use gotrace_binary::types::{Signature, TypeTable, Variable};
use gotrace_binary::{Arch, Function, GoBinary, VirtAddr};
use gotrace_output::funcs::{
    BinaryInfo, EntryInfo, InlinedListed, Listed, ListedValue, Place, RegPiece, Site, Sites,
    UntypedListed, UntypedWordListed,
};
use gotrace_output::{Clock, Format, Printer, Record};
use gotrace_plan::pattern::Pattern;
use gotrace_plan::{PlannedSignature, PlannedValue, SignatureSource};

/// What `funcs` found: the binary, then its functions.
struct Listing {
    binary: BinaryInfo,
    functions: Vec<Listed>,
}

/// Where `name` was inlined, each site proven (or why not), and refused where `trace` would
/// refuse it; a binary whose inline trees cannot be read says so as one entry.
fn inlined(binary: &GoBinary, name: &str) -> Vec<InlinedListed> {
    let found = match binary.inlined_sites(name) {
        Ok(found) => found,
        Err(e) => {
            return vec![InlinedListed {
                caller: String::new(),
                body: String::new(),
                addr: String::new(),
                offset: 0,
                error: Some(e.to_string()),
            }]
        }
    };
    found
        .into_iter()
        .map(|site| match site {
            Ok(site) => {
                let caller = binary.function(&site.caller).ok();
                let error = match gotrace_plan::inlined_refusal(binary, &site) {
                    Ok(refusal) => refusal.map(|r| format!("not traced: {r}")),
                    Err(e) => Some(e.to_string()),
                };
                InlinedListed {
                    offset: caller.map_or(0, |c| site.addr.0 - c.entry.0),
                    caller: site.caller,
                    body: site.body_start.to_string(),
                    addr: site.addr.to_string(),
                    error,
                }
            }
            Err(e) => InlinedListed {
                caller: String::new(),
                body: String::new(),
                addr: String::new(),
                offset: 0,
                error: Some(e.to_string()),
            },
        })
        .collect()
}

/// `func(n int) (~r0 int)`: parameters whose names start with `.` (the generic dictionary)
/// are the compiler's, not the source's, and are left out.
fn go_signature(sig: &Signature, types: &TypeTable) -> String {
    let list = |vars: &[Variable]| {
        vars.iter()
            .filter(|v| !v.name.starts_with('.'))
            .map(|v| format!("{} {}", v.name, types.get(v.ty).name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match sig.results.len() {
        0 => format!("func({})", list(&sig.params)),
        _ => format!("func({}) ({})", list(&sig.params), list(&sig.results)),
    }
}

/// The register's name in Go's ABI sequence (RAX, RBX, …, R11; X0–X14; arm64 R0–R15, F0–F15).
fn reg_name(arch: Arch, reg: AbiReg) -> String {
    const AMD64_INT: [&str; 9] = ["RAX", "RBX", "RCX", "RDI", "RSI", "R8", "R9", "R10", "R11"];
    match (arch, reg) {
        (Arch::Amd64, AbiReg::Int(i)) => AMD64_INT
            .get(usize::from(i))
            .map_or_else(|| format!("int{i}"), |r| (*r).to_owned()),
        (Arch::Amd64, AbiReg::Float(i)) => format!("X{i}"),
        (Arch::Arm64, AbiReg::Int(i)) => format!("R{i}"),
        (Arch::Arm64, AbiReg::Float(i)) => format!("F{i}"),
    }
}

fn place(arch: Arch, loc: &Location) -> Place {
    match loc {
        Location::Registers(pieces) => Place::Registers {
            pieces: pieces
                .iter()
                .map(|p| RegPiece {
                    reg: reg_name(arch, p.reg),
                    value_offset: p.value_offset,
                    size: p.size,
                })
                .collect(),
        },
        Location::Stack { sp_offset } => Place::Stack {
            sp_offset: *sp_offset,
        },
        Location::Empty => Place::Empty,
    }
}

/// The argument words `trace` reads for a function without a signature (from its traceback
/// metadata), each placed or with the reason it is not; `None` when there is no metadata.
fn untyped(binary: &GoBinary, function: &Function) -> Option<UntypedListed> {
    let args = binary.untyped_args(function).ok()??;
    let words: Vec<UntypedWordListed> = args
        .words()
        .map(|w| UntypedWordListed {
            offset: w.offset,
            size: w.size,
            location: w.location.as_ref().ok().map(|l| place(binary.arch(), l)),
            unknown: w.location.as_ref().err().map(|e| e.to_string()),
        })
        .collect();
    Some(UntypedListed {
        placed: words.iter().filter(|w| w.location.is_some()).count(),
        total: words.len(),
        incomplete: args.is_incomplete(),
        words,
    })
}

fn site(function: &Function, addr: VirtAddr) -> Site {
    Site {
        addr: addr.to_string(),
        offset: addr.0 - function.entry.0,
    }
}

fn sites(binary: &GoBinary, function: &Function) -> Result<Sites, String> {
    match binary.probe_sites(function) {
        Ok(s) => Ok(Sites {
            entry: EntryInfo {
                addr: s.entry.addr.to_string(),
                offset: s.entry.addr.0 - function.entry.0,
                stack_check: s.entry.skip_if.map(|c| match c {
                    SkipCondition::CarryOrZeroSet => "jbe",
                    SkipCondition::CarrySet => "jb",
                }),
                may_restart: s.entry.may_restart,
            },
            returns: s.returns.iter().map(|a| site(function, *a)).collect(),
            deferreturns: s.deferreturns.iter().map(|a| site(function, *a)).collect(),
        }),
        Err(e) => Err(e.to_string()),
    }
}

fn binary_info(binary: &GoBinary, dwarf: bool, dwarf_error: Option<String>) -> BinaryInfo {
    let build = binary.build_info();
    BinaryInfo {
        go_version: build.map(|b| b.go_version.clone()),
        goarch: binary.arch().go_name(),
        pie: binary.is_pie(),
        cgo: build
            .and_then(|b| b.setting("CGO_ENABLED"))
            .map(|v| v == "1"),
        function_source: binary.function_source(),
        dwarf,
        debug_source: binary.debug_source(),
        dwarf_error,
    }
}

/// Where `list` finds signatures: DWARF, or without it the runtime's method types.
#[derive(Clone, Copy)]
struct SignatureSources<'b> {
    dwarf: Option<&'b DwarfInfo>,
    methods: Option<&'b RuntimeMethods>,
}

/// The functions of `binary` matching `pattern` (all without one), with signatures from DWARF
/// where it has them, located as the planner locates them for `trace`, and, when
/// `with_sites`, their probe sites.
fn list(binary: &GoBinary, pattern: Option<&str>, with_sites: bool) -> Result<Listing> {
    // Broken DWARF costs the signatures, not the listing.
    let (dwarf, dwarf_error) = match binary.dwarf() {
        Ok(d) => (d, None),
        Err(e) => (
            None,
            Some(e.to_string().trim_start_matches("DWARF: ").to_owned()),
        ),
    };
    // Without DWARF, methods' signatures come from the runtime type descriptors, as in `trace`.
    let methods = match (dwarf, &dwarf_error) {
        (None, None) => binary.runtime_methods().ok(),
        _ => None,
    };
    let sources = SignatureSources { dwarf, methods };
    let pattern = pattern.map(Pattern::new);
    let mut functions: Vec<Listed> = binary
        .functions()
        .iter()
        .filter(|f| pattern.as_ref().is_none_or(|p| p.matches(&f.name)))
        .map(|f| listed(binary, sources, f, with_sites))
        .collect();
    // With a pattern, the functions that have no code of their own but were inlined: `trace`
    // probes them where they were inlined.
    if let Some(pattern) = &pattern {
        functions.extend(only_inlined(binary, pattern, with_sites)?);
    }
    Ok(Listing {
        binary: binary_info(binary, dwarf.is_some(), dwarf_error),
        functions,
    })
}

/// One function with code of its own: its signature, where `trace` reads each value, and with
/// `with_sites` its probe sites, where it was inlined and whether `trace` refuses it.
fn listed(binary: &GoBinary, sources: SignatureSources, f: &Function, with_sites: bool) -> Listed {
    let from_runtime = sources
        .methods
        .and_then(|m| m.signatures.get(&f.entry).map(|s| (&s.signature, &m.types)));
    let signature = sources
        .dwarf
        .and_then(|d| d.signature(f.entry).map(|s| (s, d.types())))
        .or(from_runtime);
    let abi0 = f.name.ends_with(".abi0");
    let (checked, locations_error) = planned_signature(binary, sources, f, abi0);
    let arch = binary.arch();
    let (params, results) = signature
        .map(|(sig, types)| {
            (
                listed_values(
                    arch,
                    &sig.params,
                    checked.as_ref().map(|c| &c.params[..]),
                    types,
                ),
                listed_values(
                    arch,
                    &sig.results,
                    checked.as_ref().map(|c| &c.results[..]),
                    types,
                ),
            )
        })
        .unzip();
    // What `trace` falls back to: the traceback metadata's words.
    let untyped = match (&checked, abi0) {
        (None, false) => untyped(binary, f),
        _ => None,
    };
    let source = match (&checked, from_runtime, &untyped) {
        (Some(_), Some(_), _) => SignatureSource::RuntimeTypes,
        (Some(_), None, _) => SignatureSource::Dwarf,
        (None, _, Some(_)) => SignatureSource::Traceback,
        (None, _, None) => SignatureSource::None,
    };
    let (sites, sites_error) = match with_sites.then(|| sites(binary, f)) {
        Some(Ok(s)) => (Some(s), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    Listed {
        name: f.name.clone(),
        entry: f.entry.to_string(),
        end: f.end.to_string(),
        size: f.size(),
        signature: signature.map(|(sig, types)| go_signature(sig, types)),
        abi0,
        params,
        results,
        locations_error,
        sites,
        sites_error,
        refused: with_sites.then(|| refused(binary, f)).flatten(),
        inlined: if with_sites {
            inlined(binary, &f.name)
        } else {
            Vec::new()
        },
        source,
        untyped,
        detail: with_sites,
    }
}

/// The planner's locations, checked against the argument frame: what `trace` reads; or why
/// they are not (the signature describes another frame).
fn planned_signature(
    binary: &GoBinary,
    sources: SignatureSources,
    f: &Function,
    abi0: bool,
) -> (Option<PlannedSignature>, Option<String>) {
    let checked = match (sources.dwarf, sources.methods, abi0) {
        (Some(d), _, false) => gotrace_plan::checked_signature(binary, d, f),
        (None, Some(m), false) => gotrace_plan::runtime_signature(binary, m, f),
        _ => None,
    };
    match checked {
        Some(Ok(checked)) => (Some(checked), None),
        Some(Err(mismatch)) => (None, Some(mismatch.to_string())),
        None => (None, None),
    }
}

/// Parameters or results with their types and, where the planner located them, their places.
fn listed_values(
    arch: Arch,
    vars: &[Variable],
    located: Option<&[PlannedValue]>,
    types: &TypeTable,
) -> Vec<ListedValue> {
    vars.iter()
        .enumerate()
        .map(|(i, v)| ListedValue {
            name: v.name.clone(),
            ty: types.get(v.ty).name.clone(),
            size: types.get(v.ty).size,
            location: located
                .and_then(|l| l.get(i))
                .map(|p| place(arch, &p.location)),
        })
        .collect()
}

/// Why `trace` would refuse to probe the function, by itself or at its probe sites.
fn refused(binary: &GoBinary, f: &Function) -> Option<String> {
    gotrace_plan::refusal(binary, f)
        .or_else(|| {
            let sites = binary.probe_sites(f).ok()?;
            gotrace_plan::site_refusal(binary, &sites, false)
        })
        .map(|r| r.to_string())
}

/// The functions matching `pattern` that have no code of their own, only inlined copies.
fn only_inlined(binary: &GoBinary, pattern: &Pattern, with_sites: bool) -> Result<Vec<Listed>> {
    let mut names: Vec<&str> = binary
        .inline_index()?
        .names()
        .filter(|n| pattern.matches(n) && binary.function(n).is_err())
        .collect();
    names.sort_unstable();
    Ok(names
        .into_iter()
        .map(|name| Listed {
            name: name.to_owned(),
            entry: "inlined".to_owned(),
            end: "inlined".to_owned(),
            size: 0,
            signature: None,
            abi0: false,
            params: None,
            results: None,
            locations_error: None,
            sites: None,
            sites_error: None,
            refused: None,
            inlined: if with_sites {
                inlined(binary, name)
            } else {
                Vec::new()
            },
            source: SignatureSource::None,
            untyped: None,
            detail: with_sites,
        })
        .collect())
}

pub fn run(args: &FuncsArgs) -> Result<()> {
    if !args.binary.exists() {
        anyhow::bail!("{}: no such file", args.binary.display());
    }
    let binary = crate::debuginfo::open(&args.binary, args.debug_file.as_deref())?;
    let listing = list(&binary, args.pattern.as_deref(), args.verbose || args.json)?;
    if listing.functions.is_empty() {
        if let Some(pattern) = &args.pattern {
            if !Pattern::new(pattern).is_glob() {
                // A plain name: the lookup's error suggests close names.
                binary.function(pattern)?;
            }
            anyhow::bail!(
                "no function in {} matches {pattern:?}",
                args.binary.display()
            );
        }
    }
    let format = match args.json {
        true => Format::Json,
        false => Format::Text,
    };
    let mut printer = Printer::new(Vec::new(), format, Clock::default());
    let binary = Record::Binary(&listing.binary);
    match format {
        // Into a Vec: cannot fail.
        Format::Json => {
            let _ = printer.record(&binary);
        }
        Format::Text => crate::stdio::say(&printer.text(&binary))?,
    }
    for f in &listing.functions {
        let _ = printer.record(&Record::Function(f));
    }
    crate::stdio::print(&String::from_utf8_lossy(&printer.into_inner()))?;
    let failed = listing
        .functions
        .iter()
        .filter(|f| f.sites_error.is_some())
        .count();
    if failed > 0 {
        anyhow::bail!("the probe sites of {failed} function(s) could not be found (see above)");
    }
    Ok(())
}
