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

mod location;
mod reader;
mod translate;

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

pub use location::{DwarfLocation, DwarfPlace, InlinedParam};
pub use reader::DICT_PARAM;
use reader::{DieRef, FunctionDie, Reader};

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
    inlinable: Inlinable,
    /// Every inlined call's DIE (its unit's offset, its own), by its abstract function's DIE:
    /// found in load's one pass, so locating one function's inlined calls reads only their
    /// units.
    inlined_calls: HashMap<DieRef, Vec<(usize, DieRef)>>,
    /// The sections load read, kept so later reads do not inflate them again.
    held: Held,
    /// [`LOCATION_SECTIONS`](location::LOCATION_SECTIONS), read on first use.
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
        let (units, mut broken) = read_units(&dwarf);
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

        let (mut signatures, mut signature_errors) = read_signatures(&mut reader, &index.functions);
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
        drop_unreadable(
            &unreadable,
            &mut signatures,
            &mut signature_errors,
            &mut inlinable,
        );
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

/// The DWARF sections `ids`, decompressed where they are compressed; a missing one is empty.
fn read_sections<'e>(elf: &'e ElfImage, ids: &[SectionId]) -> Result<Sections<'e>, BinaryError> {
    ids.iter()
        .map(|&id| Ok((id, elf.debug_section(id.name())?)))
        .collect()
}
/// Functions with an abstract (inlinable) description, by name: its DIE and its parameters,
/// each with its own DIE.
type Inlinable = HashMap<String, (DieRef, Vec<(DieRef, Variable)>)>;

/// Every unit whose header reads, and what cost the others.
fn read_units<'a>(dwarf: &gimli::Dwarf<R<'a>>) -> (Vec<gimli::Unit<R<'a>>>, Vec<BinaryError>) {
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
    (units, broken)
}

/// Each function's signature, or why it could not be read, by entry.
fn read_signatures(
    reader: &mut Reader<'_, '_>,
    functions: &[FunctionDie],
) -> (HashMap<VirtAddr, Signature>, HashMap<VirtAddr, String>) {
    let mut signatures = HashMap::with_capacity(functions.len());
    let mut signature_errors = HashMap::new();
    for f in functions {
        match reader.signature(f) {
            Ok(sig) => {
                signatures.insert(f.entry, sig);
            }
            Err(e) => {
                signature_errors.insert(f.entry, e.to_string());
            }
        }
    }
    (signatures, signature_errors)
}

/// A value's registers follow from its whole layout: a signature (or an inlinable function)
/// holding an unreadable type by value is not read at all. A dropped signature's reason goes
/// to `signature_errors`.
fn drop_unreadable(
    unreadable: &HashMap<TypeId, String>,
    signatures: &mut HashMap<VirtAddr, Signature>,
    signature_errors: &mut HashMap<VirtAddr, String>,
    inlinable: &mut Inlinable,
) {
    let why = |vars: Vec<&Variable>| {
        vars.into_iter()
            .find_map(|v| unreadable.get(&v.ty).map(|e| (v.name.clone(), e)))
            .map(|(name, e)| format!("the type of {name} cannot be read: {e}"))
    };
    signatures.retain(
        |entry, sig| match why(sig.params.iter().chain(&sig.results).collect()) {
            Some(reason) => {
                signature_errors.insert(*entry, reason);
                false
            }
            None => true,
        },
    );
    inlinable.retain(|_, (_, params)| why(params.iter().map(|(_, v)| v).collect()).is_none());
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

/// The link-time address a DW_AT_go_runtime_type `value` stands for, given where the file's
/// type data starts (`types`): Go 1.20+ writes offsets from `runtime.types`, older releases
/// absolute addresses.
pub(crate) fn runtime_type_address(value: u64, types: u64) -> Option<u64> {
    match value < types {
        true => types.checked_add(value),
        false => Some(value),
    }
}
