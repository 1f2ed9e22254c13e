//! DWARF: function signatures (parameter and result names and types) and runtime struct
//! layouts.
//!
//! Everything is read once, in [`DwarfInfo::load`]: the signature of every function with code,
//! the types those signatures reach, and every named struct (so `runtime.g` can be asked
//! about). Types are translated with a work list rather than recursion, so a deep chain of
//! pointers between large runtime structs cannot overflow the stack.
//!
//! A DIE that cannot be read costs what depends on it, not the binary: the rest of its unit
//! (DIEs cannot be walked past it), a function whose own DIEs are broken, a type (and so every
//! signature holding it by value, whose registers would otherwise be guessed).

use crate::elf::ElfImage;
use crate::types::{Field, GoType, Signature, TypeId, TypeKind, TypeTable, Variable};
use crate::{BinaryError, VirtAddr};
use gimli::{
    constants as dw, AttributeValue, DebuggingInformationEntry, DwAt, EndianSlice, LittleEndian,
    SectionId, UnitOffset, UnitSectionOffset,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

/// amd64 and arm64, the only architectures gotrace reads, are little-endian.
type R<'a> = EndianSlice<'a, LittleEndian>;
type Die<'a> = DebuggingInformationEntry<R<'a>>;

// Go's own DWARF attributes (cmd/internal/dwarf).
const DW_AT_GO_KIND: DwAt = DwAt(0x2900);
const DW_AT_GO_KEY: DwAt = DwAt(0x2901);
const DW_AT_GO_ELEM: DwAt = DwAt(0x2902);
const DW_AT_GO_EMBEDDED_FIELD: DwAt = DwAt(0x2903);
/// The address of the type's runtime descriptor (`runtime._type`): absolute up to Go 1.19,
/// an offset from `runtime.types` since.
const DW_AT_GO_RUNTIME_TYPE: DwAt = DwAt(0x2904);

/// `reflect.Kind` values, as Go writes them into DW_AT_go_kind.
mod go_kind {
    pub const BOOL: u64 = 1;
    pub const INT: u64 = 2;
    pub const INT64: u64 = 6;
    pub const UINT: u64 = 7;
    pub const UINTPTR: u64 = 12;
    pub const FLOAT32: u64 = 13;
    pub const FLOAT64: u64 = 14;
    pub const COMPLEX64: u64 = 15;
    pub const COMPLEX128: u64 = 16;
    pub const CHAN: u64 = 18;
    pub const FUNC: u64 = 19;
    pub const INTERFACE: u64 = 20;
    pub const MAP: u64 = 21;
    pub const SLICE: u64 = 23;
    pub const STRING: u64 = 24;
    pub const UNSAFE_POINTER: u64 = 26;
    /// The kind is in the low bits; the rest are flags.
    pub const MASK: u64 = 0x1f;
}

/// Sections a signature read needs; location lists and frames are never decompressed. (gimli
/// reads each unit's line program header when it opens the unit.)
const SECTIONS: [SectionId; 7] = [
    SectionId::DebugInfo,
    SectionId::DebugAbbrev,
    SectionId::DebugLine,
    SectionId::DebugStr,
    SectionId::DebugLineStr,
    SectionId::DebugStrOffsets,
    SectionId::DebugAddr,
];

/// A chain of typedefs longer than this is treated as broken DWARF (it would be a cycle).
const MAX_TYPEDEF_CHAIN: usize = 16;
/// Types nested by value deeper than this are treated as broken DWARF (a by-value cycle).
const MAX_VALUE_NESTING: u32 = 64;

pub struct DwarfInfo {
    types: TypeTable,
    signatures: HashMap<VirtAddr, Signature>,
    /// Why a function's signature could not be read, by entry.
    signature_errors: HashMap<VirtAddr, String>,
    /// The first error that cost a unit, or part of one, its DIEs: what a function not found
    /// may have been lost to.
    damage: Option<String>,
    structs: HashMap<String, TypeId>,
    /// DW_AT_go_runtime_type values, as written, with the type each describes.
    runtime_types: Vec<(u64, TypeId)>,
    /// Functions with an abstract (inlinable) description: its DIE and its parameters, each
    /// with its own DIE (an inlined call's parameters refer to those).
    inlinable: HashMap<String, (DieRef, Vec<(DieRef, Variable)>)>,
    /// Every inlined call's DIE (its unit's offset, its own), by its abstract function's DIE:
    /// found in load's one pass, so locating one function's inlined calls reads only their
    /// units.
    inlined_calls: HashMap<DieRef, Vec<(usize, DieRef)>>,
    /// The sections load read, kept so later reads do not inflate them again.
    held: Held,
    /// [`LOCATION_SECTIONS`], read on first use.
    location_held: OnceLock<Result<Held, String>>,
}

impl DwarfInfo {
    /// `None` when the binary carries no DWARF (built with -ldflags=-w, or stripped).
    pub fn load(elf: &ElfImage) -> Result<Option<DwarfInfo>, BinaryError> {
        let sections = read_sections(elf, &SECTIONS)?;
        let has_info = sections
            .iter()
            .any(|(id, data)| *id == SectionId::DebugInfo && !data.is_empty());
        if !has_info {
            return Ok(None);
        }
        let mut dwarf = gimli_view(&sections)?;
        // Go writes one abbreviation table shared by all its units.
        dwarf.populate_abbreviations_cache(gimli::AbbreviationsCacheStrategy::All);
        let mut units = Vec::new();
        let mut broken = Vec::new();
        let mut headers = dwarf.units();
        loop {
            match headers.next() {
                Ok(Some(header)) => {
                    let at = header.offset().0;
                    match dwarf.unit(header) {
                        Ok(unit) => units.push(unit),
                        Err(e) => broken.push(at_offset(at, e)),
                    }
                }
                Ok(None) => break,
                // A bad unit header hides where the next unit starts.
                Err(e) => {
                    broken.push(e.into());
                    break;
                }
            }
        }
        let mut reader = Reader {
            dwarf: &dwarf,
            units: &units,
            ptr_size: 8,
            ids: HashMap::new(),
            types: Vec::new(),
            pending: Vec::new(),
            dict_type: None,
        };
        let index = reader.index(&mut broken);
        reader.ptr_size = index.ptr_size;
        let mut broken = broken.into_iter();
        let damage = match broken.next() {
            Some(first) if index.functions.is_empty() => return Err(first),
            first => first.map(|e| e.to_string()),
        };

        let mut signatures = HashMap::with_capacity(index.functions.len());
        let mut signature_errors = HashMap::new();
        for f in &index.functions {
            match reader.signature(f) {
                Ok(sig) => {
                    signatures.insert(f.entry, sig);
                }
                Err(e) => {
                    signature_errors.insert(f.entry, e.to_string());
                }
            }
        }
        let mut structs = HashMap::with_capacity(index.structs.len());
        for (name, at) in index.structs {
            if let Ok(id) = reader.type_ref(at) {
                structs.entry(name).or_insert(id);
            }
        }
        let mut runtime_types = Vec::with_capacity(index.runtime_types.len());
        for (value, at) in index.runtime_types {
            if let Ok(id) = reader.type_ref(at) {
                runtime_types.push((value, id));
            }
        }
        let mut inlinable = HashMap::with_capacity(index.abstract_functions.len());
        for (name, at) in index.abstract_functions {
            if let Ok(params) = reader.abstract_params(at) {
                inlinable.insert(name, (at, params));
            }
        }
        let (types, unreadable) = reader.finish();
        // A value's registers follow from its whole layout: a signature holding an unreadable
        // type by value is not read at all.
        let why = |vars: Vec<&Variable>| {
            vars.into_iter()
                .find_map(|v| unreadable.get(&v.ty).map(|e| (v.name.clone(), e)))
                .map(|(name, e)| format!("the type of {name} cannot be read: {e}"))
        };
        signatures.retain(|entry, sig| {
            match why(sig.params.iter().chain(&sig.results).collect()) {
                Some(reason) => {
                    signature_errors.insert(*entry, reason);
                    false
                }
                None => true,
            }
        });
        inlinable.retain(|_, (_, params)| why(params.iter().map(|(_, v)| v).collect()).is_none());
        drop(units);
        drop(dwarf);
        Ok(Some(DwarfInfo {
            types,
            signatures,
            signature_errors,
            damage,
            structs,
            runtime_types,
            inlinable,
            inlined_calls: index.inlined_calls,
            held: hold(sections),
            location_held: OnceLock::new(),
        }))
    }

    pub fn types(&self) -> &TypeTable {
        &self.types
    }

    /// The signature of the function whose code starts at `entry`.
    pub fn signature(&self, entry: VirtAddr) -> Option<&Signature> {
        self.signatures.get(&entry)
    }

    /// Why there is no signature for the function starting at `entry` when DWARF is damaged:
    /// a DIE it depends on is broken, or it may be among the DIEs lost.
    pub fn signature_error(&self, entry: VirtAddr) -> Option<String> {
        if let Some(e) = self.signature_errors.get(&entry) {
            return Some(e.clone());
        }
        if self.signatures.contains_key(&entry) {
            return None;
        }
        let damage = self.damage.as_ref()?;
        Some(format!("not found in DWARF, which is damaged ({damage})"))
    }

    /// The struct type named `name` (`runtime.g`, `main.Point`).
    pub fn struct_type(&self, name: &str) -> Option<TypeId> {
        self.structs.get(name).copied()
    }

    /// Every type with a runtime descriptor: (DW_AT_go_runtime_type as written, type). See
    /// [`crate::GoBinary::runtime_types`] for absolute addresses.
    pub fn runtime_type_values(&self) -> &[(u64, TypeId)] {
        &self.runtime_types
    }

    /// Byte offset of `member` in the struct type named `struct_name` (`runtime.g`, `goid`).
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Option<u64> {
        let id = self.struct_type(struct_name)?;
        match &self.types.get(id).kind {
            TypeKind::Struct { fields } => {
                fields.iter().find(|f| f.name == member).map(|f| f.offset)
            }
            _ => None,
        }
    }
}

/// A value's place at one pc, from its DWARF location description.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DwarfLocation {
    /// In value order: each piece's size in bytes (0: the whole value) and where it is
    /// (`None`: that part is not available).
    Pieces(Vec<(u64, Option<DwarfPlace>)>),
    /// No location at this pc: the value was optimized away or folded into a constant.
    Nowhere,
    /// An expression gotrace does not evaluate, named.
    Unsupported(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DwarfPlace {
    /// A DWARF register number.
    Register(u16),
    /// This many bytes from the canonical frame address (Go's frame base).
    Cfa(i64),
}

/// A parameter of an inlined call, and where it is at one pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlinedParam {
    pub name: String,
    pub ty: TypeId,
    pub location: DwarfLocation,
}

/// What locating inlined calls reads beyond [`SECTIONS`]: location lists and range lists, in
/// both the DWARF 4 (`.debug_loc`, `.debug_ranges`) and the DWARF 5 form (Go 1.25+).
const LOCATION_SECTIONS: [SectionId; 4] = [
    SectionId::DebugLoc,
    SectionId::DebugLocLists,
    SectionId::DebugRanges,
    SectionId::DebugRngLists,
];

impl DwarfInfo {
    /// For each of `pcs`, the parameters of the inlined call of `callee` whose code holds it,
    /// in declaration order, each located at that pc; `None` where DWARF describes no inlined
    /// call of `callee`. Reads only the units holding its inlined calls, with the location
    /// lists (inflated once per binary).
    pub(crate) fn inlined_params(
        &self,
        elf: &ElfImage,
        callee: &str,
        pcs: &[u64],
    ) -> Result<Vec<Option<Vec<InlinedParam>>>, BinaryError> {
        let mut out = vec![None; pcs.len()];
        let Some((origin, params)) = self.inlinable.get(callee) else {
            return Ok(out);
        };
        let Some(calls) = self.inlined_calls.get(origin) else {
            return Ok(out);
        };
        let sections = self.sections(elf)?;
        let dwarf = gimli_view(&sections)?;
        let mut units: HashMap<usize, gimli::Unit<R<'_>>> = HashMap::new();
        for &(base, at) in calls {
            let unit = match units.entry(base) {
                std::collections::hash_map::Entry::Occupied(u) => u.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let header = dwarf
                        .debug_info
                        .header_from_offset(gimli::DebugInfoOffset(base))
                        .map_err(|e| at_offset(base, e))?;
                    v.insert(dwarf.unit(header).map_err(|e| at_offset(base, e))?)
                }
            };
            let unit = &*unit;
            let die = &unit
                .entry(UnitOffset(at - base))
                .map_err(|e| at_offset(at, e))?;
            let mut ranges = Vec::new();
            let mut iter = dwarf.die_ranges(unit, die)?;
            while let Some(r) = iter.next()? {
                ranges.push((r.begin, r.end));
            }
            let hits: Vec<usize> = (0..pcs.len())
                .filter(|&i| ranges.iter().any(|&(lo, hi)| lo <= pcs[i] && pcs[i] < hi))
                .collect();
            if hits.is_empty() {
                continue;
            }
            // The call's own parameters: its direct children that refer to the abstract
            // function's, with their location descriptions.
            let mut located: Vec<(DieRef, AttributeValue<R<'_>>)> = Vec::new();
            let mut children = unit
                .entries_at_offset(die.offset())
                .map_err(|e| at_offset(base, e))?;
            let mut first = true;
            while let Some(child) = children.next_dfs().map_err(|e| at_offset(base, e))? {
                if std::mem::take(&mut first) {
                    continue; // the call itself
                }
                if child.depth() <= 0 {
                    break;
                }
                if child.depth() != 1 || child.tag() != dw::DW_TAG_formal_parameter {
                    continue;
                }
                let param = match child.attr_value(dw::DW_AT_abstract_origin) {
                    Some(AttributeValue::UnitRef(o)) => base + o.0,
                    Some(AttributeValue::DebugInfoRef(o)) => o.0,
                    _ => continue,
                };
                if let Some(value) = child.attr_value(dw::DW_AT_location) {
                    located.push((param, value));
                }
            }
            for i in hits {
                let mut found = Vec::with_capacity(params.len());
                for (at, var) in params {
                    let location = match located.iter().find(|(p, _)| p == at) {
                        Some((_, value)) => location_at(&dwarf, unit, *value, pcs[i])?,
                        None => DwarfLocation::Nowhere,
                    };
                    found.push(InlinedParam {
                        name: var.name.clone(),
                        ty: var.ty,
                        location,
                    });
                }
                out[i] = Some(found);
            }
        }
        Ok(out)
    }
}

/// The location description in effect at `pc`: a single expression, or the entry of a location
/// list (`.debug_loc` or `.debug_loclists`) whose range holds `pc`.
fn location_at(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    value: AttributeValue<R<'_>>,
    pc: u64,
) -> Result<DwarfLocation, BinaryError> {
    let expression = match value {
        AttributeValue::Exprloc(e) => e,
        other => {
            let Some(mut list) = dwarf.attr_locations(unit, other)? else {
                return Ok(DwarfLocation::Unsupported(
                    "a location that is not an expression or a location list".into(),
                ));
            };
            let mut found = None;
            while let Some(entry) = list.next()? {
                if entry.range.begin <= pc && pc < entry.range.end {
                    found = Some(entry.data);
                    break;
                }
            }
            match found {
                Some(e) => e,
                None => return Ok(DwarfLocation::Nowhere),
            }
        }
    };
    let mut pieces = Vec::new();
    let mut place = None;
    let mut ops = expression.operations(unit.encoding());
    while let Some(op) = ops.next()? {
        match op {
            gimli::Operation::Register { register } => {
                place = Some(DwarfPlace::Register(register.0))
            }
            gimli::Operation::FrameOffset { offset } => place = Some(DwarfPlace::Cfa(offset)),
            gimli::Operation::CallFrameCFA => place = Some(DwarfPlace::Cfa(0)),
            gimli::Operation::PlusConstant { value } => match place {
                Some(DwarfPlace::Cfa(off)) => {
                    place = Some(DwarfPlace::Cfa(off.wrapping_add(value as i64)))
                }
                _ => {
                    return Ok(DwarfLocation::Unsupported(
                        "DW_OP_plus_uconst on a register".into(),
                    ))
                }
            },
            gimli::Operation::Piece {
                size_in_bits,
                bit_offset: None,
            } if size_in_bits % 8 == 0 => pieces.push((size_in_bits / 8, place.take())),
            other => return Ok(DwarfLocation::Unsupported(format!("{other:?}"))),
        }
    }
    match (pieces.is_empty(), place) {
        (true, Some(p)) => Ok(DwarfLocation::Pieces(vec![(0, Some(p))])),
        (true, None) => Ok(DwarfLocation::Nowhere),
        (false, _) => Ok(DwarfLocation::Pieces(pieces)),
    }
}

type Sections<'e> = Vec<(SectionId, Cow<'e, [u8]>)>;

/// Sections as read: each one's inflated bytes, or `None` where the file holds it as is (read
/// again from the mapping, at no cost).
type Held = Vec<(SectionId, Option<Vec<u8>>)>;

fn hold(sections: Sections<'_>) -> Held {
    sections
        .into_iter()
        .map(|(id, data)| match data {
            Cow::Owned(inflated) => (id, Some(inflated)),
            Cow::Borrowed(_) => (id, None),
        })
        .collect()
}

impl DwarfInfo {
    /// [`SECTIONS`] and [`LOCATION_SECTIONS`], the compressed ones inflated once per binary.
    fn sections<'s>(&'s self, elf: &'s ElfImage) -> Result<Sections<'s>, BinaryError> {
        let located = self
            .location_held
            .get_or_init(|| {
                read_sections(elf, &LOCATION_SECTIONS)
                    .map(hold)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| BinaryError::Dwarf(e.trim_start_matches("DWARF: ").to_owned()))?;
        self.held
            .iter()
            .chain(located)
            .map(|(id, inflated)| match inflated {
                Some(bytes) => Ok((*id, Cow::Borrowed(&bytes[..]))),
                None => Ok((*id, elf.debug_section(id.name())?)),
            })
            .collect()
    }
}

/// The DWARF sections `ids`, decompressed where they are compressed; a missing one is empty.
fn read_sections<'e>(elf: &'e ElfImage, ids: &[SectionId]) -> Result<Sections<'e>, BinaryError> {
    ids.iter()
        .map(|&id| Ok((id, elf.debug_section(id.name())?)))
        .collect()
}

/// gimli's view of `sections` (any section not among them reads as empty).
fn gimli_view<'s>(sections: &'s Sections<'_>) -> Result<gimli::Dwarf<R<'s>>, BinaryError> {
    gimli::Dwarf::load::<_, BinaryError>(|id| {
        let data = sections
            .iter()
            .find(|(s, _)| *s == id)
            .map_or(&[][..], |(_, d)| &d[..]);
        Ok(EndianSlice::new(data, LittleEndian))
    })
}

fn at_offset(offset: usize, e: gimli::Error) -> BinaryError {
    BinaryError::Dwarf(format!(".debug_info at {offset:#x}: {e}"))
}

fn malformed(offset: usize, what: &str) -> BinaryError {
    BinaryError::Dwarf(format!(".debug_info at {offset:#x}: {what}"))
}

/// A DIE's position: its offset in `.debug_info`.
type DieRef = usize;

struct FunctionDie {
    entry: VirtAddr,
    die: DieRef,
    /// From the unit's DW_AT_producer (`Go cmd/compile go1.23.5; regabi`).
    go_minor: Option<u32>,
}

/// What one pass over every top-level DIE finds.
struct Index {
    functions: Vec<FunctionDie>,
    /// Abstract descriptions of inlinable functions, by name.
    abstract_functions: Vec<(String, DieRef)>,
    /// Inlined calls (their unit's offset and their own), by abstract function.
    inlined_calls: HashMap<DieRef, Vec<(usize, DieRef)>>,
    structs: Vec<(String, DieRef)>,
    runtime_types: Vec<(u64, DieRef)>,
    ptr_size: u64,
}

/// Translation state. `types[i]` is `None` until the DIE behind `TypeId(i)` is read.
struct Reader<'a, 'd> {
    dwarf: &'d gimli::Dwarf<R<'a>>,
    units: &'d [gimli::Unit<R<'a>>],
    ptr_size: u64,
    /// Every DIE already given an id, typedef aliases included.
    ids: HashMap<DieRef, TypeId>,
    types: Vec<Option<GoType>>,
    /// Ids handed out whose DIE is not yet read.
    pending: Vec<(DieRef, TypeId)>,
    dict_type: Option<TypeId>,
}

impl<'a> Reader<'a, '_> {
    /// What every readable unit holds; a unit that cannot be walked to its end adds its error
    /// to `broken` and gives what came before the bad DIE.
    fn index(&self, broken: &mut Vec<BinaryError>) -> Index {
        let mut index = Index {
            functions: Vec::new(),
            abstract_functions: Vec::new(),
            inlined_calls: HashMap::new(),
            structs: Vec::new(),
            runtime_types: Vec::new(),
            ptr_size: 8,
        };
        for unit in self.units {
            if let Err(e) = self.index_unit(unit, &mut index, broken) {
                broken.push(e);
            }
        }
        index
    }

    /// Adds what `unit` holds to `index`: an error where the walk cannot go on; a DIE whose
    /// name or address cannot be read is left out (its error in `broken`).
    fn index_unit(
        &self,
        unit: &gimli::Unit<R<'a>>,
        index: &mut Index,
        broken: &mut Vec<BinaryError>,
    ) -> Result<(), BinaryError> {
        let base = unit.header.offset().0;
        index.ptr_size = u64::from(unit.header.address_size());
        let mut go_minor = None;
        let mut cursor = unit.entries();
        while let Some(die) = cursor.next_dfs().map_err(|e| at_offset(base, e))? {
            if die.depth() == 0 {
                go_minor = match die.attr_value(dw::DW_AT_producer) {
                    Some(v) => {
                        let producer = self
                            .dwarf
                            .attr_string(unit, v)
                            .map_err(|e| at_offset(base, e))?;
                        go_minor_version(&producer.to_string_lossy())
                    }
                    None => None,
                };
            }
            if die.tag() == dw::DW_TAG_inlined_subroutine {
                let origin = match die.attr_value(dw::DW_AT_abstract_origin) {
                    Some(AttributeValue::UnitRef(o)) => Some(base + o.0),
                    Some(AttributeValue::DebugInfoRef(o)) => Some(o.0),
                    _ => None,
                };
                if let Some(origin) = origin {
                    let call = (base, base + die.offset().0);
                    index.inlined_calls.entry(origin).or_default().push(call);
                }
            }
            // Go puts functions and types directly under the compile unit.
            if die.depth() != 1 {
                continue;
            }
            let at = base + die.offset().0;
            if let Some(value) = die.attr_value(DW_AT_GO_RUNTIME_TYPE) {
                let addr = match value {
                    gimli::AttributeValue::Addr(a) => Some(a),
                    other => other.udata_value(),
                };
                if let Some(addr) = addr {
                    index.runtime_types.push((addr, at));
                }
            }
            match die.tag() {
                dw::DW_TAG_subprogram => {
                    let Some(value) = die.attr_value(dw::DW_AT_low_pc) else {
                        // An abstract function: what its inlined calls refer to.
                        if die.attr(dw::DW_AT_inline).is_some() {
                            match self.name_in(unit, die, at) {
                                Ok(Some(name)) => index.abstract_functions.push((name, at)),
                                Ok(None) => {}
                                Err(e) => broken.push(e),
                            }
                        }
                        continue;
                    };
                    match self.dwarf.attr_address(unit, value) {
                        Ok(Some(pc)) => index.functions.push(FunctionDie {
                            entry: VirtAddr(pc),
                            die: at,
                            go_minor,
                        }),
                        Ok(None) => {}
                        Err(e) => broken.push(at_offset(at, e)),
                    }
                }
                dw::DW_TAG_structure_type => match self.name_in(unit, die, at) {
                    Ok(Some(name)) => index.structs.push((name, at)),
                    Ok(None) => {}
                    Err(e) => broken.push(e),
                },
                _ => {}
            }
        }
        Ok(())
    }

    fn unit_of(&self, at: DieRef) -> Result<(&gimli::Unit<R<'a>>, UnitOffset), BinaryError> {
        let i = self.units.partition_point(|u| u.header.offset().0 <= at);
        let unit = i
            .checked_sub(1)
            .and_then(|i| self.units.get(i))
            .ok_or_else(|| malformed(at, "reference outside every unit"))?;
        let offset = UnitSectionOffset(at)
            .to_unit_offset(&unit.header)
            .ok_or_else(|| malformed(at, "reference outside its unit"))?;
        Ok((unit, offset))
    }

    fn die(&self, at: DieRef) -> Result<Die<'a>, BinaryError> {
        let (unit, offset) = self.unit_of(at)?;
        unit.entry(offset).map_err(|e| at_offset(at, e))
    }

    /// The direct children of the DIE at `at`, in order.
    fn children(&self, at: DieRef) -> Result<Vec<(DieRef, Die<'a>)>, BinaryError> {
        let (unit, offset) = self.unit_of(at)?;
        let base = unit.header.offset().0;
        // A tree, not a depth-first walk: the list ends at its null entry, so a broken DIE
        // right after it costs nothing here.
        let mut tree = unit
            .entries_tree(Some(offset))
            .map_err(|e| at_offset(at, e))?;
        let root = tree.root().map_err(|e| at_offset(at, e))?;
        let mut children = root.children();
        let mut out = Vec::new();
        while let Some(child) = children.next().map_err(|e| at_offset(at, e))? {
            let die = child.entry();
            out.push((base + die.offset().0, die.clone()));
        }
        Ok(out)
    }

    fn name_in(
        &self,
        unit: &gimli::Unit<R<'a>>,
        die: &Die<'a>,
        at: DieRef,
    ) -> Result<Option<String>, BinaryError> {
        match die.attr_value(dw::DW_AT_name) {
            None => Ok(None),
            Some(value) => {
                let s = self
                    .dwarf
                    .attr_string(unit, value)
                    .map_err(|e| at_offset(at, e))?;
                Ok(Some(s.to_string_lossy().into_owned()))
            }
        }
    }

    fn name(&self, die: &Die<'a>, at: DieRef) -> Result<Option<String>, BinaryError> {
        let (unit, _) = self.unit_of(at)?;
        self.name_in(unit, die, at)
    }

    /// The DIE an attribute of the DIE at `at` refers to.
    fn reference(
        &self,
        at: DieRef,
        die: &Die<'a>,
        attr: DwAt,
    ) -> Result<Option<DieRef>, BinaryError> {
        match die.attr_value(attr) {
            None => Ok(None),
            Some(AttributeValue::UnitRef(offset)) => {
                let (unit, _) = self.unit_of(at)?;
                Ok(Some(unit.header.offset().0 + offset.0))
            }
            Some(AttributeValue::DebugInfoRef(offset)) => Ok(Some(offset.0)),
            Some(_) => Err(malformed(at, &format!("{attr} is not a reference"))),
        }
    }

    fn signature(&mut self, f: &FunctionDie) -> Result<Signature, BinaryError> {
        let function = f.die;
        let die = self.die(function)?;
        let mut sig = Signature::default();
        for (at, child) in self.formal_parameters(function, &die)? {
            let name = self.name(&child, at)?.unwrap_or_default();
            let ty = match self.reference(at, &child, dw::DW_AT_type)? {
                Some(t) => self.type_ref(t)?,
                None => return Err(malformed(at, "parameter without a type")),
            };
            let is_result = matches!(
                child.attr_value(dw::DW_AT_variable_parameter),
                Some(AttributeValue::Flag(true))
            );
            let var = Variable { name, ty };
            let list = if is_result {
                &mut sig.results
            } else {
                &mut sig.params
            };
            // The compiler writes a named result that a closure captures twice; Go names are
            // unique in a signature except the blank `_`.
            if var.name != "_" && list.iter().any(|v| v.name == var.name) {
                continue;
            }
            list.push(var);
        }
        // An out-of-line copy of an inlinable function is named only by its abstract origin
        // (`slices.Sort[go.shape.[]string,go.shape.string]`): without the name its dictionary
        // would be missed and every argument read one register early.
        let name = match self.name(&die, function)? {
            Some(name) => name,
            None => match self.reference(function, &die, dw::DW_AT_abstract_origin)? {
                Some(origin) => self.name(&self.die(origin)?, origin)?.unwrap_or_default(),
                None => String::new(),
            },
        };
        // Go 1.27 lists the dictionary itself, typed as its words (`*[6]uintptr`), and in an
        // out-of-line copy of an inlinable function as the copy's own parameter, after the
        // abstract function's: it goes where the ABI passes it. It is the compiler's, never
        // decoded: one opaque type on every version, so no read goes through it.
        let listed = sig.params.iter().position(|p| p.name == DICT_PARAM);
        let position = dictionary_position(&name, f.go_minor);
        if listed.is_some() || position.is_some() {
            let ty = self.dict_type()?;
            let at = position.or(listed).unwrap_or(0);
            if let Some(i) = listed {
                sig.params.remove(i);
            }
            let dict = Variable {
                name: DICT_PARAM.to_owned(),
                ty,
            };
            sig.params.insert(at.min(sig.params.len()), dict);
        }
        Ok(sig)
    }

    /// The parameter and result DIEs of a function, in declaration order. An out-of-line copy
    /// of an inlinable function refers to an abstract function for its parameters, and adds
    /// the ones the abstract function lacks (unnamed results, `~r0`) as its own: those are
    /// put after the parameter that precedes them in the copy.
    fn formal_parameters(
        &self,
        function: DieRef,
        die: &Die<'a>,
    ) -> Result<Vec<(DieRef, Die<'a>)>, BinaryError> {
        let is_param = |(_, d): &(DieRef, Die<'a>)| d.tag() == dw::DW_TAG_formal_parameter;
        let own: Vec<_> = self
            .children(function)?
            .into_iter()
            .filter(is_param)
            .collect();
        let Some(origin) = self.reference(function, die, dw::DW_AT_abstract_origin)? else {
            return Ok(own);
        };
        let mut all: Vec<_> = self
            .children(origin)?
            .into_iter()
            .filter(is_param)
            .collect();
        let mut next = 0;
        for (at, child) in own {
            match self.reference(at, &child, dw::DW_AT_abstract_origin)? {
                Some(o) => {
                    if let Some(k) = all.iter().position(|(a, _)| *a == o) {
                        next = k + 1;
                    }
                }
                None => {
                    all.insert(next, (at, child));
                    next += 1;
                }
            }
        }
        Ok(all)
    }

    /// The parameters (not the results) of an abstract function, with their DIEs.
    fn abstract_params(
        &mut self,
        function: DieRef,
    ) -> Result<Vec<(DieRef, Variable)>, BinaryError> {
        let mut out = Vec::new();
        for (at, child) in self.children(function)? {
            let is_result = matches!(
                child.attr_value(dw::DW_AT_variable_parameter),
                Some(AttributeValue::Flag(true))
            );
            if child.tag() != dw::DW_TAG_formal_parameter || is_result {
                continue;
            }
            let name = self.name(&child, at)?.unwrap_or_default();
            let Some(ty) = self.reference(at, &child, dw::DW_AT_type)? else {
                return Err(malformed(at, "parameter without a type"));
            };
            let ty = self.type_ref(ty)?;
            out.push((at, Variable { name, ty }));
        }
        Ok(out)
    }

    /// The type of the hidden dictionary parameter: a pointer to the dictionary's words.
    fn dict_type(&mut self) -> Result<TypeId, BinaryError> {
        if let Some(id) = self.dict_type {
            return Ok(id);
        }
        let id =
            TypeId(u32::try_from(self.types.len()).map_err(|_| malformed(0, "too many types"))?);
        self.types.push(Some(GoType {
            name: DICT_PARAM.to_owned(),
            size: self.ptr_size,
            align: 0,
            kind: TypeKind::UnsafePointer,
        }));
        self.dict_type = Some(id);
        Ok(id)
    }

    /// The id of the type DIE at `at`, handed out now and filled in by [`Reader::finish`].
    fn type_ref(&mut self, at: DieRef) -> Result<TypeId, BinaryError> {
        if let Some(&id) = self.ids.get(&at) {
            return Ok(id);
        }
        // Go adds a typedef with the same name in front of each named type, and typedefs
        // named `.paramN` for generic dictionary parameters: neither adds information, so
        // both resolve to what they name. Typedefs with a Go kind (maps, chans, interfaces)
        // are real types.
        let mut target = at;
        for _ in 0..MAX_TYPEDEF_CHAIN {
            let die = self.die(target)?;
            if die.tag() != dw::DW_TAG_typedef || die.attr(DW_AT_GO_KIND).is_some() {
                break;
            }
            match self.reference(target, &die, dw::DW_AT_type)? {
                Some(next) => target = next,
                None => break,
            }
        }
        let id = match self.ids.get(&target) {
            Some(&id) => id,
            None => {
                let id = TypeId(
                    u32::try_from(self.types.len()).map_err(|_| malformed(at, "too many types"))?,
                );
                self.types.push(None);
                self.ids.insert(target, id);
                self.pending.push((target, id));
                id
            }
        };
        self.ids.insert(at, id);
        Ok(id)
    }

    /// Reads every type handed out (and what they reach), then computes alignments. A type
    /// whose DIEs cannot be read stays unknown; it is returned with its error, and so is every
    /// type holding one by value (struct fields, array elements), whose layout is then unknown.
    fn finish(mut self) -> (TypeTable, HashMap<TypeId, String>) {
        let mut unreadable = HashMap::new();
        while let Some((at, id)) = self.pending.pop() {
            match self.translate(at) {
                Ok(ty) => {
                    if let Some(slot) = self.types.get_mut(id.0 as usize) {
                        *slot = Some(ty);
                    }
                }
                Err(e) => {
                    unreadable.insert(id, e.to_string());
                }
            }
        }
        let mut types: Vec<GoType> = self
            .types
            .into_iter()
            .map(|t| t.unwrap_or_else(unknown))
            .collect();
        let mut aligns = vec![None; types.len()];
        for i in 0..types.len() {
            let align = align_of(&types, TypeId(i as u32), &mut aligns, self.ptr_size, 0);
            types[i].align = align;
        }
        spread_unreadable(&types, &mut unreadable);
        let mut table = TypeTable::default();
        for ty in types {
            table.push(ty);
        }
        (table, unreadable)
    }

    fn translate(&mut self, at: DieRef) -> Result<GoType, BinaryError> {
        let die = self.die(at)?;
        let name = self.name(&die, at)?.unwrap_or_default();
        let byte_size = die
            .attr_value(dw::DW_AT_byte_size)
            .and_then(|v| v.udata_value());
        let kind_attr = die
            .attr_value(DW_AT_GO_KIND)
            .and_then(|v| v.udata_value())
            .map(|k| k & go_kind::MASK);
        let ptr = self.ptr_size;
        let (kind, size) = match die.tag() {
            dw::DW_TAG_base_type => (base_kind(kind_attr, &die), byte_size.unwrap_or(0)),
            dw::DW_TAG_pointer_type => {
                let elem = self.reference(at, &die, dw::DW_AT_type)?;
                let kind = match elem {
                    Some(elem) if name != "unsafe.Pointer" => TypeKind::Pointer {
                        elem: self.type_ref(elem)?,
                    },
                    _ => TypeKind::UnsafePointer,
                };
                (kind, ptr)
            }
            dw::DW_TAG_structure_type => {
                let kind = match kind_attr {
                    Some(go_kind::STRING) => TypeKind::String,
                    Some(go_kind::SLICE) => TypeKind::Slice {
                        elem: self.slice_elem(at, &die)?,
                    },
                    _ => TypeKind::Struct {
                        fields: self.fields(at)?,
                    },
                };
                (kind, byte_size.unwrap_or(0))
            }
            dw::DW_TAG_array_type => {
                let elem = match self.reference(at, &die, dw::DW_AT_type)? {
                    Some(e) => self.type_ref(e)?,
                    None => return Err(malformed(at, "array without an element type")),
                };
                let len = self.array_len(at)?;
                (TypeKind::Array { elem, len }, byte_size.unwrap_or(0))
            }
            dw::DW_TAG_typedef => match kind_attr {
                Some(go_kind::INTERFACE) => (
                    TypeKind::Interface {
                        empty: self.is_empty_interface(at, &die, &name)?,
                    },
                    2 * ptr,
                ),
                Some(go_kind::MAP) => {
                    let key = self.go_type_attr(at, &die, DW_AT_GO_KEY)?;
                    let value = self.go_type_attr(at, &die, DW_AT_GO_ELEM)?;
                    let header = match self.reference(at, &die, dw::DW_AT_type)? {
                        Some(pointer) => Some(self.type_ref(pointer)?),
                        None => None,
                    };
                    (TypeKind::Map { key, value, header }, ptr)
                }
                Some(go_kind::CHAN) => {
                    let elem = self.go_type_attr(at, &die, DW_AT_GO_ELEM)?;
                    (TypeKind::Chan { elem }, ptr)
                }
                Some(go_kind::FUNC) => (TypeKind::Func, ptr),
                Some(go_kind::UNSAFE_POINTER) => (TypeKind::UnsafePointer, ptr),
                _ => (TypeKind::Unknown, byte_size.unwrap_or(0)),
            },
            // A func value is one pointer to its closure record.
            dw::DW_TAG_subroutine_type => (TypeKind::Func, ptr),
            _ => (TypeKind::Unknown, byte_size.unwrap_or(0)),
        };
        Ok(GoType {
            name,
            size,
            align: 0,
            kind,
        })
    }

    /// A type named by a Go attribute (go_key, go_elem); required on maps and chans.
    fn go_type_attr(
        &mut self,
        at: DieRef,
        die: &Die<'a>,
        attr: DwAt,
    ) -> Result<TypeId, BinaryError> {
        match self.reference(at, die, attr)? {
            Some(t) => self.type_ref(t),
            None => Err(malformed(at, &format!("{attr} missing"))),
        }
    }

    /// From go_elem, or else from the type of the `array` member's pointer.
    fn slice_elem(&mut self, at: DieRef, die: &Die<'a>) -> Result<TypeId, BinaryError> {
        if let Some(elem) = self.reference(at, die, DW_AT_GO_ELEM)? {
            return self.type_ref(elem);
        }
        for (member_at, member) in self.children(at)? {
            if member.tag() == dw::DW_TAG_member
                && self.name(&member, member_at)?.as_deref() == Some("array")
            {
                let ptr = self.reference(member_at, &member, dw::DW_AT_type)?;
                let ptr_die = match ptr {
                    Some(p) => (p, self.die(p)?),
                    None => break,
                };
                if let Some(elem) = self.reference(ptr_die.0, &ptr_die.1, dw::DW_AT_type)? {
                    return self.type_ref(elem);
                }
            }
        }
        Err(malformed(at, "slice without an element type"))
    }

    fn fields(&mut self, at: DieRef) -> Result<Vec<Field>, BinaryError> {
        let mut fields = Vec::new();
        for (member_at, member) in self.children(at)? {
            if member.tag() != dw::DW_TAG_member {
                continue;
            }
            let name = self.name(&member, member_at)?.unwrap_or_default();
            let ty = match self.reference(member_at, &member, dw::DW_AT_type)? {
                Some(t) => self.type_ref(t)?,
                None => return Err(malformed(member_at, "member without a type")),
            };
            let offset = member
                .attr_value(dw::DW_AT_data_member_location)
                .and_then(|v| v.udata_value())
                .ok_or_else(|| malformed(member_at, "member without a constant offset"))?;
            let embedded = match member.attr_value(DW_AT_GO_EMBEDDED_FIELD) {
                Some(AttributeValue::Flag(f)) => f,
                Some(v) => v.udata_value().is_some_and(|n| n != 0),
                None => false,
            };
            fields.push(Field {
                name,
                ty,
                offset,
                embedded,
            });
        }
        Ok(fields)
    }

    fn array_len(&self, at: DieRef) -> Result<u64, BinaryError> {
        for (_, sub) in self.children(at)? {
            if sub.tag() != dw::DW_TAG_subrange_type {
                continue;
            }
            if let Some(n) = sub
                .attr_value(dw::DW_AT_count)
                .and_then(|v| v.udata_value())
            {
                return Ok(n);
            }
            if let Some(n) = sub
                .attr_value(dw::DW_AT_upper_bound)
                .and_then(|v| v.udata_value())
            {
                return Ok(n + 1);
            }
        }
        Err(malformed(at, "array without a length"))
    }

    /// `interface {}` is runtime.eface {_type, data}; every other interface is runtime.iface
    /// {tab, data}.
    fn is_empty_interface(
        &self,
        at: DieRef,
        die: &Die<'a>,
        name: &str,
    ) -> Result<bool, BinaryError> {
        if name == "interface {}" || name == "any" {
            return Ok(true);
        }
        let Some(mut layout) = self.reference(at, die, dw::DW_AT_type)? else {
            return Ok(false);
        };
        // A named empty interface (`type PrivateKey any`) refers to the typedef
        // `runtime.eface`, not to its struct.
        for _ in 0..MAX_TYPEDEF_CHAIN {
            let d = self.die(layout)?;
            if d.tag() != dw::DW_TAG_typedef {
                break;
            }
            match self.reference(layout, &d, dw::DW_AT_type)? {
                Some(next) => layout = next,
                None => break,
            }
        }
        for (member_at, member) in self.children(layout)? {
            if member.tag() == dw::DW_TAG_member {
                return Ok(self.name(&member, member_at)?.as_deref() == Some("_type"));
            }
        }
        Ok(false)
    }
}

/// The name given to the hidden dictionary parameter of shape-instantiated generic code.
pub const DICT_PARAM: &str = ".dict";

/// `17` from a producer string such as `Go cmd/compile go1.17.2; regabi`.
fn go_minor_version(producer: &str) -> Option<u32> {
    let rest = &producer[producer.find("go1.")? + 4..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// Where the hidden dictionary parameter goes, for shape-instantiated generic code
/// (`pkg.Map[go.shape.int]`, `pkg.(*Box[go.shape.int]).Get`); DWARF before Go 1.27 does
/// not list it. A
/// generic function takes it first. A method of a generic type took it before the receiver
/// up to Go 1.19 and takes it after the receiver since the unified IR frontend (Go 1.20).
/// Closures inside generic code reach the dictionary through their context instead, and the
/// equality and hash functions the compiler generates for a type (`type:.eq.T[go.shape.int]`,
/// `type..hash.T` before Go 1.21) take only pointers to the values, whatever `T` is.
fn dictionary_position(name: &str, go_minor: Option<u32>) -> Option<usize> {
    if name.starts_with("type:.") || name.starts_with("type..") {
        return None;
    }
    let open = name.find('[')?;
    let mut depth = 0usize;
    let mut close = None;
    for (i, c) in name[open..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close?;
    if !name[open..close].contains("go.shape.") {
        return None;
    }
    let rest = &name[close + 1..];
    if rest.is_empty() {
        return Some(0);
    }
    let is_method = rest
        .strip_prefix(").")
        .or_else(|| rest.strip_prefix('.'))
        .is_some_and(|m| !m.contains('.') && !is_closure_name(m));
    if !is_method {
        return None;
    }
    Some(if go_minor.is_some_and(|m| m <= 19) {
        0
    } else {
        1
    })
}

/// Compiler-made function literal names: `func1`, `gowrap2`, `deferwrap1`.
fn is_closure_name(name: &str) -> bool {
    ["func", "gowrap", "deferwrap"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn base_kind(kind: Option<u64>, die: &Die<'_>) -> TypeKind {
    match kind {
        Some(go_kind::BOOL) => return TypeKind::Bool,
        Some(go_kind::INT..=go_kind::INT64) => return TypeKind::Int { signed: true },
        Some(go_kind::UINT..=go_kind::UINTPTR) => return TypeKind::Int { signed: false },
        Some(go_kind::FLOAT32 | go_kind::FLOAT64) => return TypeKind::Float,
        Some(go_kind::COMPLEX64 | go_kind::COMPLEX128) => return TypeKind::Complex,
        _ => {}
    }
    match die.attr_value(dw::DW_AT_encoding) {
        Some(AttributeValue::Encoding(e)) => match e {
            dw::DW_ATE_boolean => TypeKind::Bool,
            dw::DW_ATE_signed | dw::DW_ATE_signed_char => TypeKind::Int { signed: true },
            dw::DW_ATE_unsigned | dw::DW_ATE_unsigned_char => TypeKind::Int { signed: false },
            dw::DW_ATE_float => TypeKind::Float,
            dw::DW_ATE_complex_float => TypeKind::Complex,
            _ => TypeKind::Unknown,
        },
        _ => TypeKind::Unknown,
    }
}

fn unknown() -> GoType {
    GoType {
        name: String::new(),
        size: 0,
        align: 1,
        kind: TypeKind::Unknown,
    }
}

/// Go's alignment rules: scalars align to their size (a complex to its halves), pointer-shaped
/// values and headers to the pointer size, arrays to their element, structs to their most
/// aligned field.
/// Adds to `unreadable` every type that holds one of its types by value, until none is left:
/// its layout, and so where its parts travel, is unknown.
fn spread_unreadable(types: &[GoType], unreadable: &mut HashMap<TypeId, String>) {
    while !unreadable.is_empty() {
        let mut found = Vec::new();
        for (i, ty) in types.iter().enumerate() {
            let id = TypeId(i as u32);
            if unreadable.contains_key(&id) {
                continue;
            }
            let held = match &ty.kind {
                TypeKind::Struct { fields } => fields.iter().find_map(|f| {
                    unreadable
                        .get(&f.ty)
                        .map(|e| format!("field {}: {e}", f.name))
                }),
                TypeKind::Array { elem, .. } => {
                    unreadable.get(elem).map(|e| format!("element: {e}"))
                }
                _ => None,
            };
            if let Some(why) = held {
                found.push((id, why));
            }
        }
        if found.is_empty() {
            break;
        }
        unreadable.extend(found);
    }
}

fn align_of(types: &[GoType], id: TypeId, memo: &mut [Option<u64>], ptr: u64, depth: u32) -> u64 {
    let i = id.0 as usize;
    if let Some(Some(a)) = memo.get(i) {
        return *a;
    }
    let Some(ty) = types.get(i) else { return 1 };
    if depth > MAX_VALUE_NESTING {
        return 1;
    }
    // Provisional, so that a by-value cycle (only in broken DWARF) terminates.
    if let Some(slot) = memo.get_mut(i) {
        *slot = Some(1);
    }
    let align = match &ty.kind {
        TypeKind::Bool | TypeKind::Int { .. } | TypeKind::Float => ty.size.clamp(1, ptr),
        TypeKind::Complex => (ty.size / 2).clamp(1, ptr),
        TypeKind::String
        | TypeKind::UnsafePointer
        | TypeKind::Pointer { .. }
        | TypeKind::Slice { .. }
        | TypeKind::Interface { .. }
        | TypeKind::Map { .. }
        | TypeKind::Chan { .. }
        | TypeKind::Func => ptr,
        TypeKind::Array { elem, .. } => align_of(types, *elem, memo, ptr, depth + 1),
        TypeKind::Struct { fields } => fields
            .iter()
            .map(|f| align_of(types, f.ty, memo, ptr, depth + 1))
            .max()
            .unwrap_or(1),
        TypeKind::Unknown => 1,
    };
    if let Some(slot) = memo.get_mut(i) {
        *slot = Some(align);
    }
    align
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_goes_first_in_functions_and_after_the_receiver_since_go_1_20() {
        assert_eq!(
            dictionary_position("main.Map[go.shape.int]", Some(23)),
            Some(0)
        );
        assert_eq!(
            dictionary_position("main.Map[go.shape.int_0]", Some(19)),
            Some(0)
        );
        assert_eq!(
            dictionary_position("main.(*Box[go.shape.int]).Get", Some(21)),
            Some(1)
        );
        assert_eq!(
            dictionary_position("main.Box[go.shape.string].Get", Some(23)),
            Some(1)
        );
        assert_eq!(
            dictionary_position("main.(*Box[go.shape.int_0]).Get", Some(19)),
            Some(0)
        );
        assert_eq!(
            dictionary_position(
                "example.com/a.b/c.Pair[go.shape.[]uint8,go.shape.struct { X int }]",
                Some(22)
            ),
            Some(0)
        );
    }

    #[test]
    fn no_dictionary_for_closures_wrappers_generated_type_functions_or_plain_functions() {
        assert_eq!(
            dictionary_position("main.Map[go.shape.int].func1", Some(23)),
            None
        );
        assert_eq!(
            dictionary_position("main.(*Box[go.shape.int]).Get.func2", Some(23)),
            None
        );
        assert_eq!(dictionary_position("main.Map[int]", Some(23)), None);
        assert_eq!(dictionary_position("main.(*Box[int]).Get", Some(23)), None);
        assert_eq!(dictionary_position("main.main", Some(23)), None);
        assert_eq!(
            dictionary_position(
                "type:.eq.internal/sync.entry[go.shape.interface {},go.shape.interface {}]",
                Some(24)
            ),
            None
        );
        assert_eq!(
            dictionary_position(
                "type:.eq.sync/atomic.Pointer[go.shape.struct { internal/sync.isEntry bool }]",
                Some(26)
            ),
            None
        );
        assert_eq!(
            dictionary_position("type..eq.main.Pair[go.shape.int_0]", Some(19)),
            None
        );
        assert_eq!(dictionary_position("main.Map[go.shape.int", Some(23)), None);
    }

    #[test]
    fn go_version_from_producer() {
        assert_eq!(
            go_minor_version("Go cmd/compile go1.23.5; regabi"),
            Some(23)
        );
        assert_eq!(go_minor_version("Go cmd/compile go1.9"), Some(9));
        assert_eq!(go_minor_version("GNU C17"), None);
    }
}
