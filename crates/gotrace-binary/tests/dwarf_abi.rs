//! Signatures read from DWARF and register assignments computed by the ABI algorithm, checked
//! on real binaries built from fixtures/go/sig_kinds by every installed Go toolchain.
//!
//! The independent witness for the ABI is the DWARF location list Go writes for each
//! parameter: at the entry PC it names the register(s) or the frame slot holding it. The
//! witness is read here with gimli directly, not through `gotrace_binary`.

mod common;

use common::{all_toolchains, open, sig_kinds};
use gimli::{
    BaseAddresses, CfaRule, DebugFrame, EndianSlice, LittleEndian, Operation, UnwindContext,
    UnwindSection,
};
use gotrace_binary::abi::{self, AbiReg, Location, Piece};
use gotrace_binary::dwarf::DwarfInfo;
use gotrace_binary::types::{Signature, TypeId, TypeKind, TypeTable};
use gotrace_binary::{Arch, GoBinary};
use gotrace_gobuild::Toolchain;
use object::{Object, ObjectSection};
use std::collections::HashMap;
use std::path::Path;

fn minor(toolchain: &Toolchain) -> u32 {
    toolchain
        .version
        .trim_start_matches("1.")
        .parse()
        .expect("toolchain version 1.N")
}

fn dwarf(bin: &GoBinary) -> &DwarfInfo {
    bin.dwarf()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.path().display()))
        .unwrap_or_else(|| panic!("{} has no DWARF", bin.path().display()))
}

/// `int8 i1`, `[]string []string`, `main.Packed struct{A@0 B@2 C@4 D@8}`: the Go name, then
/// what gotrace understood the type to be.
fn describe(types: &TypeTable, id: TypeId) -> String {
    let t = types.get(id);
    let name = |id: &TypeId| types.get(*id).name.clone();
    let kind = match &t.kind {
        TypeKind::Bool => "bool".to_owned(),
        TypeKind::Int { signed: true } => format!("i{}", t.size),
        TypeKind::Int { signed: false } => format!("u{}", t.size),
        TypeKind::Float => format!("f{}", t.size),
        TypeKind::Complex => format!("c{}", t.size),
        TypeKind::String => "string".to_owned(),
        TypeKind::UnsafePointer => "unsafe".to_owned(),
        TypeKind::Pointer { elem } => format!("*{}", name(elem)),
        TypeKind::Slice { elem } => format!("[]{}", name(elem)),
        TypeKind::Array { elem, len } => format!("[{len}]{}", name(elem)),
        TypeKind::Struct { fields } => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| {
                    format!(
                        "{}{}@{}",
                        if f.embedded { "+" } else { "" },
                        f.name,
                        f.offset
                    )
                })
                .collect();
            format!("struct{{{}}}", fields.join(" "))
        }
        TypeKind::Interface { empty: true } => "eface".to_owned(),
        TypeKind::Interface { empty: false } => "iface".to_owned(),
        TypeKind::Map { key, value, .. } => format!("map[{}]{}", name(key), name(value)),
        TypeKind::Chan { elem } => format!("chan {}", name(elem)),
        TypeKind::Func => "func".to_owned(),
        TypeKind::Unknown => "?".to_owned(),
    };
    format!("{} {kind}", t.name)
}

/// Params and results of `function` as `name type kind` lines.
fn signature_lines(bin: &GoBinary, function: &str) -> (Vec<String>, Vec<String>) {
    let d = dwarf(bin);
    let f = bin.function(function).unwrap_or_else(|e| panic!("{e}"));
    let sig = d
        .signature(f.entry)
        .unwrap_or_else(|| panic!("no signature for {function}"));
    let lines = |vars: &[gotrace_binary::types::Variable]| {
        vars.iter()
            .map(|v| format!("{} {}", v.name, describe(d.types(), v.ty)))
            .collect::<Vec<_>>()
    };
    (lines(&sig.params), lines(&sig.results))
}

#[test]
fn signatures_read_from_dwarf_are_what_the_source_says() {
    for tc in all_toolchains() {
        let go = minor(&tc);
        let bin = open(&sig_kinds(&tc, None));
        // Go 1.19 names shapes `go.shape.int_0`; later versions `go.shape.int`.
        let shape = |s: &str| {
            if go <= 19 {
                s.replace("go.shape.int", "go.shape.int_0")
            } else {
                s.to_owned()
            }
        };
        let int = "int i8";
        let mut expected: Vec<(&str, Vec<String>, Vec<String>)> = vec![
            (
                "main.Ints",
                vec![
                    format!("a {int}"),
                    "b int8 i1".into(),
                    "c int16 i2".into(),
                    "d int32 i4".into(),
                    "e int64 i8".into(),
                    "f uint u8".into(),
                    "g uint8 u1".into(),
                    "h uint16 u2".into(),
                    "i uint32 u4".into(),
                    "j uint64 u8".into(),
                ],
                vec![format!("~r0 {int}")],
            ),
            (
                "main.BoolPtr",
                vec![
                    "ok bool bool".into(),
                    "u uintptr u8".into(),
                    "p *int *int".into(),
                    "up unsafe.Pointer unsafe".into(),
                ],
                vec!["~r0 bool bool".into()],
            ),
            (
                "main.Floats",
                vec![
                    "a float32 f4".into(),
                    "b float64 f8".into(),
                    "c complex64 c8".into(),
                    "d complex128 c16".into(),
                    "t main.Celsius f8".into(),
                ],
                vec!["~r0 float64 f8".into()],
            ),
            (
                "main.Strings",
                vec![
                    "s string string".into(),
                    "bs []uint8 []uint8".into(),
                    "ss []string []string".into(),
                ],
                vec![format!("~r0 {int}")],
            ),
            (
                "main.Arrays",
                vec![
                    "a0 [0]int [0]int".into(),
                    "a1 [1]string [1]string".into(),
                    "a3 [3]int [3]int".into(),
                    format!("x {int}"),
                ],
                vec![format!("~r0 {int}")],
            ),
            (
                "main.Structs",
                vec![
                    "p main.Point struct{X@0 Y@8}".into(),
                    "pk main.Packed struct{A@0 B@2 C@4 D@8}".into(),
                    "o main.Outer struct{P@0 Tag@16 Small@32}".into(),
                    "e struct {} struct{}".into(),
                    "d main.Derived struct{+Base@0 Name@8}".into(),
                ],
                vec![format!("~r0 {int}")],
            ),
            (
                "main.Interfaces",
                vec![
                    "err error iface".into(),
                    "a interface {} eface".into(),
                    "s main.Shape iface".into(),
                ],
                vec!["~r0 string string".into()],
            ),
            (
                "main.MapsChans",
                vec![
                    "m map[string]int map[string]int".into(),
                    "c chan int chan int".into(),
                    "r <-chan string chan string".into(),
                ],
                vec![format!("~r0 {int}")],
            ),
            (
                "main.Funcs",
                vec!["f func(int) int func".into(), "g func() func".into()],
                vec![format!("~r0 {int}")],
            ),
            (
                "main.List",
                vec!["n *main.Node *main.Node".into()],
                vec![format!("~r0 {int}")],
            ),
            (
                "main.Point.Sum",
                vec!["p main.Point struct{X@0 Y@8}".into()],
                vec![format!("~r0 {int}")],
            ),
            (
                "main.(*Point).Scale",
                vec!["p *main.Point *main.Point".into(), format!("k {int}")],
                vec![],
            ),
            (
                "main.Named",
                vec![
                    "l main.IntList []int".into(),
                    "h main.Handler func".into(),
                    "c main.Celsius f8".into(),
                ],
                vec![format!("~r0 {int}")],
            ),
            (
                "main.DivMod",
                vec![format!("a {int}"), format!("b {int}")],
                vec![format!("q {int}"), format!("r {int}")],
            ),
            (
                "main.Unnamed",
                vec![format!("x {int}")],
                vec![
                    format!("~r0 {int}"),
                    "~r1 string string".into(),
                    "~r2 error iface".into(),
                ],
            ),
        ];
        // Go 1.22 started listing blank parameters (as `~pN`); older DWARF leaves them out.
        let unused = if go >= 22 {
            vec![
                format!("a {int}"),
                "~p1 string string".into(),
                format!("c {int}"),
            ]
        } else {
            vec![format!("a {int}"), format!("c {int}")]
        };
        expected.push(("main.Unused", unused, vec![format!("~r0 {int}")]));
        // Shape-instantiated generic code takes a dictionary DWARF does not list: gotrace adds
        // it, first for functions, after the receiver for methods since Go 1.20.
        let map_int = shape("main.Map[go.shape.int]");
        let int_shape = shape("go.shape.int");
        let generic = vec![
            ".dict .dict unsafe".to_owned(),
            format!("xs []{int_shape} []{int_shape}"),
            format!("f func({int_shape}) {int_shape} func"),
        ];
        expected.push((
            &map_int,
            generic,
            vec![format!("~r0 []{int_shape} []{int_shape}")],
        ));
        let get = shape("main.(*Box[go.shape.int]).Get");
        let receiver = format!("b *main.Box[{int_shape}] *main.Box[{int_shape}]");
        let get_params = if go <= 19 {
            vec![
                ".dict .dict unsafe".to_owned(),
                receiver,
                format!("k {int}"),
            ]
        } else {
            vec![
                receiver,
                ".dict .dict unsafe".to_owned(),
                format!("k {int}"),
            ]
        };
        expected.push((&get, get_params, vec![format!("~r0 {int_shape} i8")]));

        for (function, params, results) in &expected {
            let (got_params, got_results) = signature_lines(&bin, function);
            assert_eq!(
                &got_params, params,
                "Go {}: params of {function}",
                tc.version
            );
            assert_eq!(
                &got_results, results,
                "Go {}: results of {function}",
                tc.version
            );
        }
        // Both instantiations of the generic function have code and a signature.
        let (string_params, _) = signature_lines(&bin, &map_int.replace("int", "string"));
        assert_eq!(
            string_params.len(),
            3,
            "Go {}: {string_params:?}",
            tc.version
        );
    }
}

#[test]
fn goid_offset_in_runtime_g_matches_the_go_version() {
    for tc in all_toolchains() {
        let bin = open(&sig_kinds(&tc, None));
        // Go 1.23 added `syscallbp` before goid; Go 1.25 dropped `gobuf.ret` from `sched`.
        let expected = match minor(&tc) {
            23 | 24 => 160,
            _ => 152,
        };
        assert_eq!(
            dwarf(&bin).member_offset("runtime.g", "goid"),
            Some(expected),
            "Go {}",
            tc.version
        );
        let (layout, _) = bin.runtime_layout().expect("a runtime layout");
        assert_eq!(layout.g_goid, expected, "Go {}", tc.version);
    }
}

#[test]
fn packed_struct_pieces_carry_field_offsets_and_sizes() {
    for tc in all_toolchains() {
        let bin = open(&sig_kinds(&tc, None));
        let d = dwarf(&bin);
        let f = bin.function("main.Structs").expect("main.Structs");
        let sig = d.signature(f.entry).expect("signature");
        let a = abi::assign(Arch::Amd64, sig, d.types());
        // p takes RAX, RBX; pk = {A int8 @0, B int16 @2, C bool @4, D uint32 @8}.
        let piece = |i, value_offset, size| Piece {
            reg: AbiReg::Int(i),
            value_offset,
            size,
        };
        assert_eq!(
            a.params[1],
            Location::Registers(vec![
                piece(2, 0, 1),
                piece(3, 2, 2),
                piece(4, 4, 1),
                piece(5, 8, 4)
            ]),
            "Go {}",
            tc.version
        );
    }
}

// ---- The DWARF witness ----------------------------------------------------------------------

/// Where DWARF says (part of) a value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Reg(u16),
    /// At SP + this, at the entry PC (the CFA rule applied to DW_OP_fbreg/DW_OP_call_frame_cfa).
    Stack(i64),
}

/// A DWARF location description at one PC: pieces (place or optimized out, size in bytes), or
/// one whole place (size `None`).
type Described = Vec<(Option<Place>, Option<u64>)>;

struct WitnessVar {
    name: String,
    is_result: bool,
    /// At the entry PC; `None` when DWARF has no location there.
    at_entry: Option<Described>,
    /// Any range's location that is a single stack slot (results' slots do not move).
    stack_anywhere: Option<i64>,
}

struct WitnessFn {
    name: String,
    /// Compiler-generated wrapper (DW_AT_trampoline).
    trampoline: bool,
    vars: Vec<WitnessVar>,
}

struct Sections {
    data: HashMap<&'static str, Vec<u8>>,
}

impl Sections {
    fn load(path: &Path) -> Sections {
        let bytes = std::fs::read(path).expect("read binary");
        let file = object::File::parse(&*bytes).expect("ELF");
        let mut data = HashMap::new();
        for name in [
            ".debug_info",
            ".debug_abbrev",
            ".debug_line",
            ".debug_str",
            ".debug_frame",
            // DWARF 4 (Go up to 1.24) and DWARF 5 (Go 1.25 on): location lists, ranges, and the
            // address table DW_FORM_addrx and the DWARF 5 lists index into.
            ".debug_loc",
            ".debug_ranges",
            ".debug_loclists",
            ".debug_rnglists",
            ".debug_addr",
            ".debug_str_offsets",
            ".debug_line_str",
        ] {
            let section = file
                .section_by_name(name)
                .map(|s| s.uncompressed_data().expect("decompress").into_owned());
            data.insert(name, section.unwrap_or_default());
        }
        Sections { data }
    }

    fn get(&self, id: gimli::SectionId) -> EndianSlice<'_, LittleEndian> {
        let bytes = self.data.get(id.name()).map_or(&[][..], |v| v.as_slice());
        EndianSlice::new(bytes, LittleEndian)
    }
}

/// Every subprogram's formal parameters with their DWARF locations, by entry PC.
fn witness(path: &Path, arch: Arch) -> HashMap<u64, WitnessFn> {
    let sections = Sections::load(path);
    let dwarf = gimli::Dwarf::load(|id| Ok::<_, gimli::Error>(sections.get(id))).expect("dwarf");
    let frame = DebugFrame::new(
        sections.get(gimli::SectionId::DebugFrame).slice(),
        LittleEndian,
    );
    let bases = BaseAddresses::default();
    let mut ctx = UnwindContext::new();
    let sp = match arch {
        Arch::Amd64 => 7,
        Arch::Arm64 => 31,
    };
    let mut out = HashMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().expect("unit header") {
        let unit = dwarf.unit(header).expect("unit");
        let mut entries = unit.entries();
        let mut current: Option<(u64, i64)> = None;
        while let Some(die) = entries.next_dfs().expect("die") {
            if die.depth() == 1 {
                current = None;
                if die.tag() != gimli::DW_TAG_subprogram {
                    continue;
                }
                // An address (DWARF 4) or an index into .debug_addr (DWARF 5).
                let Some(pc) = die
                    .attr_value(gimli::DW_AT_low_pc)
                    .and_then(|v| dwarf.attr_address(&unit, v).expect("DW_AT_low_pc"))
                else {
                    continue;
                };
                let name = die_name(&dwarf, &unit, die);
                // The CFA at the entry PC, as an offset from SP.
                let Ok(row) = frame.unwind_info_for_address(
                    &bases,
                    &mut ctx,
                    pc,
                    DebugFrame::cie_from_offset,
                ) else {
                    continue;
                };
                let CfaRule::RegisterAndOffset { register, offset } = row.cfa() else {
                    continue;
                };
                assert_eq!(register.0, sp, "{name}: CFA is not SP-based at entry");
                current = Some((pc, *offset));
                let trampoline = die.attr_value(gimli::DW_AT_trampoline).is_some();
                out.insert(
                    pc,
                    WitnessFn {
                        name,
                        trampoline,
                        vars: Vec::new(),
                    },
                );
            } else if die.depth() == 2 && die.tag() == gimli::DW_TAG_formal_parameter {
                let Some((pc, cfa)) = current else { continue };
                let name = die_name(&dwarf, &unit, die);
                let is_result = matches!(
                    origin(&unit, die)
                        .unwrap_or_else(|| die.clone())
                        .attr_value(gimli::DW_AT_variable_parameter),
                    Some(gimli::AttributeValue::Flag(true))
                );
                let mut exprs = Vec::new();
                match die.attr_value(gimli::DW_AT_location) {
                    Some(gimli::AttributeValue::Exprloc(e)) => exprs.push((None, e)),
                    Some(v) => {
                        if let Some(mut list) =
                            dwarf.attr_locations(&unit, v).expect("location list")
                        {
                            while let Some(entry) = list.next().expect("location entry") {
                                exprs.push((Some(entry.range), entry.data));
                            }
                        }
                    }
                    None => {}
                }
                let mut var = WitnessVar {
                    name,
                    is_result,
                    at_entry: None,
                    stack_anywhere: None,
                };
                for (range, expr) in exprs {
                    let described = describe_location(expr, unit.encoding(), cfa);
                    // Slots in the caller's frame, not spill slots below SP.
                    if let [(Some(Place::Stack(off)), None)] = described.as_slice() {
                        if *off > 0 {
                            var.stack_anywhere = Some(*off);
                        }
                    }
                    let covers_entry = range.is_none_or(|r| r.begin <= pc && pc < r.end);
                    if covers_entry && !described.is_empty() {
                        var.at_entry = Some(described);
                    }
                }
                if let Some(f) = out.get_mut(&pc) {
                    f.vars.push(var);
                }
            }
        }
    }
    out
}

type Die<'a> = gimli::DebuggingInformationEntry<EndianSlice<'a, LittleEndian>>;
type Unit<'a> = gimli::Unit<EndianSlice<'a, LittleEndian>>;

/// The abstract function or parameter an out-of-line copy of an inlinable function refers to.
fn origin<'a>(unit: &Unit<'a>, die: &Die<'a>) -> Option<Die<'a>> {
    let offset = match die.attr_value(gimli::DW_AT_abstract_origin)? {
        gimli::AttributeValue::UnitRef(o) => o,
        gimli::AttributeValue::DebugInfoRef(o) => {
            gimli::UnitSectionOffset(o.0).to_unit_offset(&unit.header)?
        }
        _ => return None,
    };
    unit.entry(offset).ok()
}

fn die_name<'a>(
    dwarf: &gimli::Dwarf<EndianSlice<'a, LittleEndian>>,
    unit: &Unit<'a>,
    die: &Die<'a>,
) -> String {
    let named = origin(unit, die).unwrap_or_else(|| die.clone());
    named
        .attr_value(gimli::DW_AT_name)
        .and_then(|v| dwarf.attr_string(unit, v).ok())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn describe_location(
    expr: gimli::Expression<EndianSlice<'_, LittleEndian>>,
    encoding: gimli::Encoding,
    cfa: i64,
) -> Described {
    let mut out = Vec::new();
    let mut pending = None;
    let mut ops = expr.operations(encoding);
    while let Some(op) = ops.next().expect("DWARF expression") {
        match op {
            Operation::Register { register } => pending = Some(Place::Reg(register.0)),
            // Go's frame base is DW_OP_call_frame_cfa.
            Operation::CallFrameCFA => pending = Some(Place::Stack(cfa)),
            Operation::FrameOffset { offset } => pending = Some(Place::Stack(cfa + offset)),
            Operation::Piece { size_in_bits, .. } => {
                out.push((pending.take(), Some(size_in_bits / 8)))
            }
            other => panic!("unexpected DWARF operation in a parameter location: {other:?}"),
        }
    }
    if let Some(place) = pending {
        out.push((Some(place), None));
    }
    out
}

fn dwarf_register(arch: Arch, reg: AbiReg) -> u16 {
    match (arch, reg) {
        (Arch::Amd64, AbiReg::Int(i)) => [0, 3, 2, 5, 4, 8, 9, 10, 11][usize::from(i)],
        (Arch::Amd64, AbiReg::Float(i)) => 17 + u16::from(i),
        (Arch::Arm64, AbiReg::Int(i)) => u16::from(i),
        (Arch::Arm64, AbiReg::Float(i)) => 64 + u16::from(i),
    }
}

/// What gotrace computed, in the witness's terms.
fn computed(arch: Arch, loc: &Location, size: u64) -> Option<Described> {
    match loc {
        Location::Empty => None,
        Location::Stack { sp_offset } => Some(vec![(Some(Place::Stack(*sp_offset as i64)), None)]),
        Location::Registers(pieces) => {
            if let [p] = pieces.as_slice() {
                if p.size == size {
                    return Some(vec![(Some(Place::Reg(dwarf_register(arch, p.reg))), None)]);
                }
            }
            Some(
                pieces
                    .iter()
                    .map(|p| (Some(Place::Reg(dwarf_register(arch, p.reg))), Some(p.size)))
                    .collect(),
            )
        }
    }
}

/// One piece of a value per element, or the whole value as one place: the same
/// description written two ways compares equal.
fn normalise(mut d: Described, size: u64) -> Described {
    // Contiguous stack pieces are one stack value (Go omits padding, so check the run only).
    if let Some((Some(Place::Stack(first)), Some(_))) = d.first().copied() {
        let mut at = first;
        let contiguous = d.iter().all(|(place, len)| {
            let ok = *place == Some(Place::Stack(at));
            at += len.unwrap_or(0) as i64;
            ok
        });
        if contiguous {
            return vec![(Some(Place::Stack(first)), None)];
        }
    }
    if let [(place, Some(len))] = d.as_slice() {
        if *len == size {
            d = vec![(*place, None)];
        }
    }
    d
}

/// Pieces DWARF marks optimized out (no place) match any register.
fn agrees(mine: &Described, theirs: &Described) -> bool {
    mine.len() == theirs.len()
        && mine
            .iter()
            .zip(theirs)
            .all(|((mp, ms), (tp, ts))| ms == ts && (tp.is_none() || mp == tp))
}

#[derive(Default, Debug)]
struct Tally {
    agree: usize,
    /// Function, value, gotrace's answer, DWARF's answer.
    disagree: Vec<(String, String, String, String)>,
    /// Non-empty values DWARF gives no location for at entry.
    no_witness: Vec<(String, String)>,
    /// Function (or function/value) and why it was not compared.
    skipped: Vec<(String, &'static str)>,
    /// Of `agree`: register arguments DWARF places at their spill slot for the whole function
    /// (Go 1.27 does so for parameters the body never reads), checked against the slot the
    /// ABI reserves for them.
    spill_homes: usize,
}

/// SP offset at entry of each register-assigned parameter's spill slot: the caller reserves
/// them after the stack-assigned arguments and results, pointer-aligned, each value aligned
/// as in memory (abi-internal.md, "Function call argument and result passing").
fn spill_homes(sig: &Signature, a: &abi::Assignment, types: &TypeTable) -> Vec<Option<i64>> {
    let mut stack_end: u64 = 0;
    for (v, loc) in sig
        .params
        .iter()
        .zip(&a.params)
        .chain(sig.results.iter().zip(&a.results))
    {
        if let Location::Stack { sp_offset } = loc {
            stack_end = stack_end.max(sp_offset + types.get(v.ty).size);
        }
    }
    let start = STACK_ARGS_AT_SP.max(stack_end.next_multiple_of(8));
    let mut offset: u64 = 0;
    sig.params
        .iter()
        .zip(&a.params)
        .map(|(v, loc)| {
            let Location::Registers(_) = loc else {
                return None;
            };
            let t = types.get(v.ty);
            offset = offset.next_multiple_of(t.align.max(1));
            let home = start + offset;
            offset += t.size;
            Some(home as i64)
        })
        .collect()
}

/// Stack-assigned arguments start one word above SP at entry (the return address on amd64, a
/// reserved word on arm64).
const STACK_ARGS_AT_SP: u64 = 8;

fn cross_check(path: &Path, only_main: bool) -> Tally {
    let bin = open(path);
    let arch = bin.arch();
    let go = bin
        .build_info()
        .and_then(|b| b.go_version_minor())
        .expect("Go version");
    let d = dwarf(&bin);
    let mut tally = Tally::default();
    for (pc, f) in witness(path, arch) {
        let name = f.name;
        if only_main && !name.starts_with("main.") {
            continue;
        }
        // ABI0 wrappers (`runtime.write.abi0`) get a DWARF copy of the Go function under the
        // same name; they take everything on the stack.
        let symbol = bin
            .function_at(gotrace_binary::VirtAddr(pc))
            .map(|f| f.name.as_str());
        if symbol.is_some_and(|s| s.ends_with(".abi0")) {
            tally.skipped.push((name, "ABI0 wrapper"));
            continue;
        }
        // Up to Go 1.21, generated wrappers leave their receiver out of DWARF.
        if f.trampoline && go <= 21 {
            tally
                .skipped
                .push((name, "wrapper without receiver in DWARF"));
            continue;
        }
        let Some(sig) = d.signature(gotrace_binary::VirtAddr(pc)) else {
            panic!("{name}: DWARF lists it but gotrace has no signature");
        };
        let a = abi::assign(arch, sig, d.types());
        for w in &f.vars {
            if !sig
                .params
                .iter()
                .chain(&sig.results)
                .any(|v| v.name == w.name)
            {
                tally.disagree.push((
                    name.clone(),
                    w.name.clone(),
                    "absent".into(),
                    "listed".into(),
                ));
            }
        }
        let homes = spill_homes(sig, &a, d.types());
        let ours = sig
            .params
            .iter()
            .zip(&a.params)
            .zip(homes)
            .chain(
                sig.results
                    .iter()
                    .zip(&a.results)
                    .zip(std::iter::repeat(None)),
            )
            .filter(|((v, _), _)| v.name != gotrace_binary::dwarf::DICT_PARAM);
        for ((var, loc), home) in ours {
            let Some(w) = f.vars.iter().find(|w| w.name == var.name) else {
                tally.no_witness.push((name.clone(), var.name.clone()));
                continue;
            };
            let size = d.types().get(var.ty).size;
            let mine = computed(arch, loc, size).map(|m| normalise(m, size));
            // A zero-size value has no bytes for DWARF's place to name (Go 1.27 still gives
            // one); gotrace must say it occupies nothing.
            if size == 0 {
                if mine.is_none() {
                    tally.agree += 1;
                } else {
                    tally.disagree.push((
                        name.clone(),
                        var.name.clone(),
                        format!("{mine:?}"),
                        "zero size".into(),
                    ));
                }
                continue;
            }
            // Go 1.27 describes a register argument the body never reads by its spill slot,
            // for the whole function; at entry the value is still in the registers gotrace
            // names, and the slot must be the one the ABI reserves for it.
            if let (Location::Registers(_), Some(home), Some(t)) = (loc, home, &w.at_entry) {
                if *t == [(Some(Place::Stack(home)), None)] {
                    tally.agree += 1;
                    tally.spill_homes += 1;
                    continue;
                }
            }
            let theirs = if w.is_result {
                // Results get their values only before RET; only a stack slot is checkable.
                match w.stack_anywhere {
                    Some(off) => Some(vec![(Some(Place::Stack(off)), None)]),
                    None => continue,
                }
            } else {
                w.at_entry.clone()
            };
            if let Some(t) = &theirs {
                let described: u64 = t.iter().map(|(_, len)| len.unwrap_or(0)).sum();
                if described > size {
                    tally.skipped.push((
                        format!("{name} {}", var.name),
                        "DWARF pieces larger than the value",
                    ));
                    continue;
                }
            }
            let theirs = theirs.map(|t| normalise(t, size));
            match (mine, theirs) {
                (None, None) => tally.agree += 1,
                (Some(_), None) => tally.no_witness.push((name.clone(), var.name.clone())),
                (Some(m), Some(t)) if agrees(&m, &t) => tally.agree += 1,
                (m, t) => tally.disagree.push((
                    name.clone(),
                    var.name.clone(),
                    format!("{m:?}"),
                    format!("{t:?}"),
                )),
            }
        }
    }
    tally
}

fn pairs(list: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut v: Vec<(&str, &str)> = list.iter().map(|(f, p)| (f.as_str(), p.as_str())).collect();
    v.sort();
    v
}

/// Every parameter of every fixture function: where DWARF says it is at entry must be where
/// the ABI algorithm puts it.
fn check_fixture(goarch: Option<&str>) {
    for tc in all_toolchains() {
        let go = minor(&tc);
        let tally = cross_check(&sig_kinds(&tc, goarch), true);
        let context = format!("Go {} {goarch:?}: {tally:#?}", tc.version);
        let disagree: Vec<(String, String)> = tally
            .disagree
            .iter()
            .map(|(f, p, _, _)| (f.clone(), p.clone()))
            .collect();
        // Up to Go 1.21 DWARF leaves blank (`_`) parameters out, so gotrace's signature has no
        // `_ string` between a and c and puts c in the registers the string really takes.
        let expected: Vec<(&str, &str)> = if go <= 21 {
            vec![("main.Unused", "c")]
        } else {
            vec![]
        };
        assert_eq!(pairs(&disagree), expected, "{context}");
        // DWARF has no entry location for: the blank parameter (unused; Go 1.22+ lists it),
        // and a stack-assigned struct the function reads in place from the caller's frame
        // (q on amd64; on arm64 q fits in registers and Structs' d is the one on the stack).
        let mut allowed = vec![("main.Unused", "~p1")];
        allowed.push(if goarch == Some("arm64") {
            ("main.Structs", "d")
        } else {
            ("main.BigThenSmall", "q")
        });
        for missing in pairs(&tally.no_witness) {
            assert!(
                allowed.contains(&missing),
                "unexpected value without DWARF location {missing:?}\n{context}"
            );
        }
        assert!(tally.agree >= 95, "too few values compared\n{context}");
        assert!(tally.skipped.is_empty(), "{context}");
        // Go 1.27 places the unused blank `~p1` of main.Unused at its spill slot.
        if go >= 27 {
            assert!(tally.spill_homes > 0, "{context}");
        }
        eprintln!(
            "Go {} {goarch:?}: {} fixture values agree with DWARF ({} by spill slot)",
            tc.version, tally.agree, tally.spill_homes
        );
    }
}

#[test]
fn fixture_locations_agree_with_dwarf_amd64() {
    check_fixture(None);
}

#[test]
fn fixture_locations_agree_with_dwarf_arm64() {
    check_fixture(Some("arm64"));
}

/// The same check over every function in the binaries (runtime, fmt, reflect, …): about
/// 2,000–2,600 values per binary.
#[test]
fn all_function_locations_agree_with_dwarf() {
    for tc in all_toolchains() {
        let go = minor(&tc);
        for goarch in [None, Some("arm64")] {
            let tally = cross_check(&sig_kinds(&tc, goarch), false);
            let context = format!(
                "Go {} {goarch:?}: disagree {:#?}",
                tc.version, tally.disagree
            );
            let mut known = vec![
                // DWARF puts both `minimum` and `max` in the third integer register at entry;
                // two parameters cannot share it, and gotrace's fourth register is right.
                ("runtime.(*pallocData).findScavengeCandidate", "max"),
            ];
            if go <= 21 {
                known.push(("main.Unused", "c")); // blank parameter left out of DWARF
            }
            if go >= 27 && goarch == Some("arm64") {
                // The same DWARF error: `nd` and `prec` both in x8 at entry; the code compares
                // x8 (nd) with x9 (prec) before it moves prec into x8.
                known.push(("internal/strconv.fmtEFG", "prec"));
            }
            if go <= 19 {
                // A generated promoted-method wrapper that is not marked DW_AT_trampoline but
                // still leaves its receiver out of DWARF.
                known.push(("reflect.(*funcType).Field", "i"));
            }
            let disagree: Vec<(String, String)> = tally
                .disagree
                .iter()
                .map(|(f, p, _, _)| (f.clone(), p.clone()))
                .collect();
            for d in pairs(&disagree) {
                assert!(known.contains(&d), "{d:?} disagrees with DWARF\n{context}");
            }
            assert!(
                tally.agree > 1500,
                "Go {} {goarch:?}: too few values compared: {}",
                tc.version,
                tally.agree
            );
            eprintln!(
                "Go {} {goarch:?}: {} values agree with DWARF ({} by spill slot), {} known differences",
                tc.version,
                tally.agree,
                tally.spill_homes,
                tally.disagree.len()
            );
        }
    }
}
