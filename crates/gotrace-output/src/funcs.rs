//! The records of `gotrace funcs`: the binary read, then each function with its signature,
//! argument locations and probe sites; as text for people and JSON lines for machines.

use crate::escape_controls;
use gotrace_binary::FunctionSource;
use gotrace_plan::SignatureSource;
use serde::Serialize;
use std::fmt::Write as _;

/// What the listing is read from: the header line of the text form.
#[derive(Debug, Serialize)]
pub struct BinaryInfo {
    /// `go1.23.5`; `None` when the binary has no readable build info.
    pub go_version: Option<String>,
    pub goarch: &'static str,
    pub pie: bool,
    /// The `CGO_ENABLED` build setting (Go 1.18+ records it).
    pub cgo: Option<bool>,
    pub function_source: FunctionSource,
    /// Whether signatures (and so argument locations) are available.
    pub dwarf: bool,
    /// Where DWARF comes from: the binary's own, or a debug file of its build.
    pub debug_source: gotrace_binary::DebugSource,
    /// Why DWARF that is present could not be read (the listing goes on without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwarf_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Listed {
    pub name: String,
    pub entry: String,
    pub end: String,
    pub size: u64,
    /// `func(n int) (~r0 int)`, hidden parameters (`.dict`) left out; `None` without DWARF.
    pub signature: Option<String>,
    /// Uses the stack-based ABI0 (its symbol ends in `.abi0`), not the register ABI.
    pub abi0: bool,
    pub params: Option<Vec<ListedValue>>,
    pub results: Option<Vec<ListedValue>>,
    /// Why the values have no locations though DWARF names them: the planner's check of the
    /// signature against the argument frame failed, and `trace` shows them as `?`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locations_error: Option<String>,
    /// `None` when not asked for (text without `-v`), or when they could not be found.
    pub sites: Option<Sites>,
    /// Why the sites could not be found (an instruction that does not decode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sites_error: Option<String>,
    /// Why `trace` will not probe the function (assembly, a stack switch, an instruction the
    /// kernel cannot probe), when it will not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Every place the compiler inlined the function, where `trace` probes it too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inlined: Vec<InlinedListed>,
    /// Where `trace` takes the signature from.
    pub source: SignatureSource,
    /// Without a signature: the argument words the traceback metadata describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untyped: Option<UntypedListed>,
    /// Whether the text form shows the sites and locations below the function's line (`-v`).
    #[serde(skip)]
    pub detail: bool,
}

/// One body of the function inlined into another, and the instruction `trace` probes in it.
#[derive(Debug, Serialize)]
pub struct InlinedListed {
    /// The function whose code holds the body.
    pub caller: String,
    /// The body's first instruction.
    pub body: String,
    /// The probe site: the body's first instruction, or a jump it leads straight to.
    pub addr: String,
    /// The site's offset in the caller.
    pub offset: u64,
    /// Why the site cannot be probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A parameter or result and where it is: at entry for parameters, at RET for results.
#[derive(Debug, Serialize)]
pub struct ListedValue {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub size: u64,
    /// `None` for ABI0 functions (assembly, cgo stubs: everything is on the stack there and
    /// the register assignment does not apply), and where the signature failed its check.
    pub location: Option<Place>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Place {
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

/// The argument words of a function without a signature, and how many of them `trace` reads.
#[derive(Debug, Serialize)]
pub struct UntypedListed {
    /// Words whose place at entry is proven.
    pub placed: usize,
    pub total: usize,
    /// The compiler left arguments or parts out (`...`).
    pub incomplete: bool,
    pub words: Vec<UntypedWordListed>,
}

/// One argument word: its offset in the argument frame and size, and where it is at entry or
/// why that is not known.
#[derive(Debug, Serialize)]
pub struct UntypedWordListed {
    pub offset: u64,
    pub size: u64,
    pub location: Option<Place>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// The low `size` bytes of `reg` hold the value's bytes from `value_offset`.
#[derive(Debug, Serialize)]
pub struct RegPiece {
    pub reg: String,
    pub value_offset: u64,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct Sites {
    pub entry: EntryInfo,
    pub returns: Vec<Site>,
    pub deferreturns: Vec<Site>,
}

#[derive(Debug, Serialize)]
pub struct EntryInfo {
    pub addr: String,
    pub offset: u64,
    /// `jbe`/`jb` when the site is the prologue's stack-check jump: a pass that takes it grows
    /// the stack and restarts the function, and is not counted as a call.
    pub stack_check: Option<&'static str>,
    /// The site is not the stack-check jump yet the function can restart from its entry.
    pub may_restart: bool,
}

#[derive(Debug, Serialize)]
pub struct Site {
    pub addr: String,
    pub offset: u64,
}

/// `RAX` for a value one register holds whole; `RCX[0:1] RDI[2:4]` (value bytes lo..hi in each
/// register's low bytes) for one split over several; `stack+0x10`; `(zero size)`; `?` where
/// the signature failed its check.
fn place_text(value: &ListedValue, abi0: bool) -> String {
    let Some(location) = &value.location else {
        return match abi0 {
            true => "stack (ABI0; offsets not computed)".to_owned(),
            false => "?".to_owned(),
        };
    };
    place_of(location, value.size)
}

/// Where a value of `size` bytes is (see [`place_text`]).
fn place_of(location: &Place, size: u64) -> String {
    match location {
        Place::Registers { pieces } => match pieces.as_slice() {
            [p] if p.value_offset == 0 && p.size == size => p.reg.clone(),
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

/// `gotrace: go1.23.5 amd64 (PIE, cgo); functions from .symtab; signatures from DWARF`
pub fn header(info: &BinaryInfo) -> String {
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
    const NEED: &str = "methods' signatures from the runtime types, other functions' arguments as untyped words from the traceback metadata";
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

/// One line for the function (`0x48fca0   main.F(n int) (~r0 int)`); with `detail`, indented
/// lines below it for each probe site and each argument and result.
pub(crate) fn function_text(out: &mut String, f: &Listed) {
    let sig = f
        .signature
        .as_deref()
        .map_or("", |s| s.trim_start_matches("func"));
    let (name, sig) = (escape_controls(&f.name), escape_controls(sig));
    let from = match (&f.source, &f.untyped) {
        (SignatureSource::RuntimeTypes, _) => "  (runtime types)".to_owned(),
        (SignatureSource::Traceback, Some(u)) => format!(
            "  (traceback metadata: {} of {} argument words placed{})",
            u.placed,
            u.total,
            if u.incomplete { ", more left out" } else { "" }
        ),
        _ => String::new(),
    };
    let _ = writeln!(out, "{:<10} {name}{sig}{from}", f.entry);
    if !f.detail {
        return;
    }
    let values = f.params.iter().flatten().map(|v| ("param", v));
    let values: Vec<(String, &ListedValue)> = values
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
        sites_text(out, s, width);
    }
    if let Some(why) = &f.locations_error {
        let _ = writeln!(out, "    {:<width$} not known: {why}", "locations");
    }
    for (label, v) in &values {
        let _ = writeln!(out, "    {label:<width$} {}", place_text(v, f.abi0));
    }
    for w in f.untyped.iter().flat_map(|u| &u.words) {
        untyped_word_text(out, w, width);
    }
    for site in &f.inlined {
        inlined_text(out, site, width);
    }
}

/// The entry site (how it is placed) and each return, in columns `width` wide.
fn sites_text(out: &mut String, s: &Sites, width: usize) {
    let e = &s.entry;
    let what = match (e.stack_check, e.may_restart, e.offset) {
        (Some(jump), _, _) => {
            format!("  stack-check {jump}: a pass that takes it grows the stack and is not counted")
        }
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

/// An argument word known from the traceback metadata: where it is, or why that is not known.
fn untyped_word_text(out: &mut String, w: &UntypedWordListed, width: usize) {
    let label = format!("word +{:#x}", w.offset);
    let place = match (&w.location, &w.unknown) {
        (Some(place), _) => place_of(place, w.size),
        (None, why) => format!("? ({})", why.as_deref().unwrap_or("not known")),
    };
    let size = match w.size {
        1 => "1 byte".to_owned(),
        n => format!("{n} bytes"),
    };
    let _ = writeln!(out, "    {label:<width$} {place} ({size})");
}

/// A place the function was inlined, or why it is not traced there.
fn inlined_text(out: &mut String, site: &InlinedListed, width: usize) {
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
