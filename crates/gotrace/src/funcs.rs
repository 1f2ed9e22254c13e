//! `gotrace funcs`: what a binary offers to trace — names, addresses and Go signatures, and with
//! `-v` (always in JSON) the probe sites and where each argument and result lives.
//!
//! Gathering (`list`) is separate from printing (`render_text`, JSON), so the listing is the
//! same whichever form it is shown in.

use crate::cli::FuncsArgs;
use anyhow::Result;
use gotrace_binary::abi::{AbiReg, Location};
use gotrace_binary::sites::SkipCondition;
use gotrace_binary::types::{Signature, TypeTable, Variable};
use gotrace_binary::{Arch, Function, FunctionSource, GoBinary, VirtAddr};
use gotrace_output::escape_controls;
use gotrace_plan::pattern::Pattern;
use gotrace_plan::PlannedValue;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Serialize)]
struct Listing {
    binary: BinaryInfo,
    functions: Vec<Listed>,
}

/// What the listing is read from: the header line of the text form.
#[derive(Serialize)]
struct BinaryInfo {
    /// `go1.23.5`; `None` when the binary has no readable build info.
    go_version: Option<String>,
    goarch: &'static str,
    pie: bool,
    /// The `CGO_ENABLED` build setting (Go 1.18+ records it).
    cgo: Option<bool>,
    function_source: FunctionSource,
    /// Whether signatures (and so argument locations) are available.
    dwarf: bool,
    /// Where DWARF comes from: the binary's own, or a debug file of its build.
    debug_source: gotrace_binary::DebugSource,
    /// Why DWARF that is present could not be read (the listing goes on without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    dwarf_error: Option<String>,
}

#[derive(Serialize)]
struct Listed {
    name: String,
    entry: String,
    end: String,
    size: u64,
    /// `func(n int) (~r0 int)`, hidden parameters (`.dict`) left out; `None` without DWARF.
    signature: Option<String>,
    /// Uses the stack-based ABI0 (its symbol ends in `.abi0`), not the register ABI.
    abi0: bool,
    params: Option<Vec<Value>>,
    results: Option<Vec<Value>>,
    /// Why the values have no locations though DWARF names them: the planner's check of the
    /// signature against the argument frame failed, and `trace` shows them as `?`.
    #[serde(skip_serializing_if = "Option::is_none")]
    locations_error: Option<String>,
    /// `None` when not asked for (text without `-v`), or when they could not be found.
    sites: Option<Sites>,
    /// Why the sites could not be found (an instruction that does not decode).
    #[serde(skip_serializing_if = "Option::is_none")]
    sites_error: Option<String>,
    /// Why `trace` will not probe the function (assembly, a stack switch, an instruction the
    /// kernel cannot probe), when it will not.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    /// Every place the compiler inlined the function, where `trace` probes it too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inlined: Vec<InlinedListed>,
}

/// One body of the function inlined into another, and the instruction `trace` probes in it.
#[derive(Serialize)]
struct InlinedListed {
    /// The function whose code holds the body.
    caller: String,
    /// The body's first instruction.
    body: String,
    /// The probe site: the body's first instruction, or a jump it leads straight to.
    addr: String,
    /// The site's offset in the caller.
    offset: u64,
    /// Why the site cannot be probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
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

/// A parameter or result and where it is: at entry for parameters, at RET for results.
#[derive(Serialize)]
struct Value {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    size: u64,
    /// `None` for ABI0 functions (assembly, cgo stubs: everything is on the stack there and
    /// the register assignment does not apply), and where the signature failed its check.
    location: Option<Place>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Place {
    Registers {
        pieces: Vec<RegPiece>,
    },
    /// Bytes above SP, at entry and equally at RET.
    Stack {
        sp_offset: u64,
    },
    /// A zero-size value.
    Empty,
}

/// The low `size` bytes of `reg` hold the value's bytes from `value_offset`.
#[derive(Serialize)]
struct RegPiece {
    reg: String,
    value_offset: u64,
    size: u64,
}

#[derive(Serialize)]
struct Sites {
    entry: EntryInfo,
    returns: Vec<Site>,
    deferreturns: Vec<Site>,
}

#[derive(Serialize)]
struct EntryInfo {
    addr: String,
    offset: u64,
    /// `jbe`/`jb` when the site is the prologue's stack-check jump: a pass that takes it grows
    /// the stack and restarts the function, and is not counted as a call.
    stack_check: Option<&'static str>,
    /// The site is not the stack-check jump yet the function can restart from its entry.
    may_restart: bool,
}

#[derive(Serialize)]
struct Site {
    addr: String,
    offset: u64,
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

/// `RAX` for a value one register holds whole; `RCX[0:1] RDI[2:4]` (value bytes lo..hi in each
/// register's low bytes) for one split over several; `stack+0x10`; `(zero size)`; `?` where
/// the signature failed its check.
fn place_text(value: &Value, abi0: bool) -> String {
    let Some(location) = &value.location else {
        return match abi0 {
            true => "stack (ABI0; offsets not computed)".to_owned(),
            false => "?".to_owned(),
        };
    };
    match location {
        Place::Registers { pieces } => match pieces.as_slice() {
            [p] if p.value_offset == 0 && p.size == value.size => p.reg.clone(),
            _ => pieces
                .iter()
                .map(|p| format!("{}[{}:{}]", p.reg, p.value_offset, p.value_offset + p.size))
                .collect::<Vec<_>>()
                .join(" "),
        },
        Place::Stack { sp_offset } => format!("stack+{sp_offset:#x}"),
        Place::Empty => "(zero size)".to_owned(),
    }
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
    let arch = binary.arch();
    let pattern = pattern.map(Pattern::new);
    let mut functions: Vec<Listed> = binary
        .functions()
        .iter()
        .filter(|f| pattern.as_ref().is_none_or(|p| p.matches(&f.name)))
        .map(|f| {
            let signature = dwarf.and_then(|d| d.signature(f.entry).map(|s| (s, d.types())));
            let abi0 = f.name.ends_with(".abi0");
            let values =
                |vars: &[Variable], located: Option<&[PlannedValue]>, types: &TypeTable| {
                    vars.iter()
                        .enumerate()
                        .map(|(i, v)| Value {
                            name: v.name.clone(),
                            ty: types.get(v.ty).name.clone(),
                            size: types.get(v.ty).size,
                            location: located
                                .and_then(|l| l.get(i))
                                .map(|p| place(arch, &p.location)),
                        })
                        .collect::<Vec<_>>()
                };
            // The planner's locations, checked against the argument frame: what `trace` reads.
            let checked = match (dwarf, abi0) {
                (Some(d), false) => gotrace_plan::checked_signature(binary, d, f),
                _ => None,
            };
            let (checked, locations_error) = match checked {
                Some(Ok(checked)) => (Some(checked), None),
                Some(Err(mismatch)) => (None, Some(mismatch.to_string())),
                None => (None, None),
            };
            let assigned = signature.map(|(sig, types)| {
                (
                    values(&sig.params, checked.as_ref().map(|c| &c.params[..]), types),
                    values(
                        &sig.results,
                        checked.as_ref().map(|c| &c.results[..]),
                        types,
                    ),
                )
            });
            let (params, results) = assigned.unzip();
            let (sites, sites_error) = match with_sites.then(|| sites(binary, f)) {
                Some(Ok(s)) => (Some(s), None),
                Some(Err(e)) => (None, Some(e)),
                None => (None, None),
            };
            let refused = with_sites
                .then(|| {
                    gotrace_plan::refusal(binary, f).or_else(|| {
                        let sites = binary.probe_sites(f).ok()?;
                        gotrace_plan::site_refusal(binary, &sites, false)
                    })
                })
                .flatten()
                .map(|r| r.to_string());
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
                refused,
                inlined: if with_sites {
                    inlined(binary, &f.name)
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    // With a pattern, the functions that have no code of their own but were inlined: `trace`
    // probes them where they were inlined.
    if let Some(pattern) = &pattern {
        let mut only_inlined: Vec<&str> = binary
            .inline_index()?
            .names()
            .filter(|n| pattern.matches(n) && binary.function(n).is_err())
            .collect();
        only_inlined.sort_unstable();
        functions.extend(only_inlined.into_iter().map(|name| Listed {
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
        }));
    }
    Ok(Listing {
        binary: binary_info(binary, dwarf.is_some(), dwarf_error),
        functions,
    })
}

/// `gotrace: go1.23.5 amd64 (PIE, cgo); functions from .symtab; signatures from DWARF`
fn header(info: &BinaryInfo) -> String {
    let mut traits = Vec::new();
    if info.pie {
        traits.push("PIE");
    }
    if info.cgo == Some(true) {
        traits.push("cgo");
    }
    let traits = match traits.is_empty() {
        true => String::new(),
        false => format!(" ({})", traits.join(", ")),
    };
    let source = match info.function_source {
        FunctionSource::Symtab => "functions from .symtab",
        FunctionSource::Pclntab => "functions from .gopclntab (no symbol table)",
    };
    const NEED: &str = "names and probe sites only, signatures and argument locations need DWARF";
    let types = match (info.dwarf, &info.dwarf_error) {
        (true, _) => format!("signatures from {}", info.debug_source),
        (false, Some(e)) => format!("DWARF unreadable ({e}): {NEED}"),
        (false, None) => format!("no DWARF (built with -ldflags=-w or stripped): {NEED}"),
    };
    let version = escape_controls(info.go_version.as_deref().unwrap_or("Go version unknown"));
    format!(
        "gotrace: {version} {}{traits}; {source}; {types}",
        info.goarch
    )
}

/// One line per function (`0x48fca0   main.F(n int) (~r0 int)`); with `verbose`, indented
/// lines below it for each probe site and each argument and result.
fn render_text(listing: &Listing, verbose: bool) -> String {
    let mut out = String::new();
    for f in &listing.functions {
        let sig = f
            .signature
            .as_deref()
            .map_or("", |s| s.trim_start_matches("func"));
        let (name, sig) = (escape_controls(&f.name), escape_controls(sig));
        let _ = writeln!(out, "{:<10} {name}{sig}", f.entry);
        if !verbose {
            continue;
        }
        let values = f.params.iter().flatten().map(|v| ("param", v));
        let values: Vec<(String, &Value)> = values
            .chain(f.results.iter().flatten().map(|v| ("result", v)))
            .map(|(kind, v)| (format!("{kind} {}", escape_controls(&v.name)), v))
            .collect();
        let width = values
            .iter()
            .map(|(label, _)| label.len())
            .max()
            .unwrap_or(0)
            .max("deferreturn".len());
        if let Some(e) = &f.sites_error {
            let e = escape_controls(e);
            let _ = writeln!(out, "    {:<width$} error: {e}", "sites");
        }
        if let Some(why) = &f.refused {
            let _ = writeln!(out, "    {:<width$} not traced: {why}", "refused");
        }
        if let Some(s) = &f.sites {
            let e = &s.entry;
            let what = match (e.stack_check, e.may_restart, e.offset) {
                (Some(jump), _, _) => format!(
                    "  stack-check {jump}: a pass that takes it grows the stack and is not counted"
                ),
                (None, true, _) => {
                    "  may fire twice: the function can grow its stack and restart".to_owned()
                }
                (None, false, 0) => "  first instruction".to_owned(),
                (None, false, _) => "  first jump, no stack check".to_owned(),
            };
            let _ = writeln!(
                out,
                "    {:<width$} {} +{:#x}{what}",
                "entry", e.addr, e.offset
            );
            for (kind, list) in [("ret", &s.returns), ("deferreturn", &s.deferreturns)] {
                for site in list {
                    let _ = writeln!(out, "    {kind:<width$} {} +{:#x}", site.addr, site.offset);
                }
            }
        }
        if let Some(why) = &f.locations_error {
            let _ = writeln!(out, "    {:<width$} not known: {why}", "locations");
        }
        for (label, v) in &values {
            let _ = writeln!(out, "    {label:<width$} {}", place_text(v, f.abi0));
        }
        for site in &f.inlined {
            let at = match site.addr == site.body {
                true => format!("{} {}+{:#x}", site.addr, site.caller, site.offset),
                false => format!(
                    "{} {}+{:#x} (first jump of the body at {})",
                    site.addr, site.caller, site.offset, site.body
                ),
            };
            let text = match &site.error {
                Some(e) if site.addr.is_empty() => format!("error: {e}"),
                Some(e) => format!("{at}  {e}"),
                None => at,
            };
            let _ = writeln!(out, "    {:<width$} {}", "inlined", escape_controls(&text));
        }
    }
    out
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
    if args.json {
        crate::out!("{}", serde_json::to_string_pretty(&listing)?)?;
    } else {
        crate::say!("{}", header(&listing.binary))?;
        crate::stdio::print(&render_text(&listing, args.verbose))?;
    }
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
