//! The runtime's own type descriptors (`internal/abi/type.go`; `runtime/type.go` before Go
//! 1.21), read without DWARF or symbols: a stripped binary keeps them, because interfaces,
//! reflection and the garbage collector need them. A type used through an interface carries an
//! "uncommon" section listing its methods, each with its func type (parameters and results)
//! and the code implementing it, so those methods get full types even stripped.
//!
//! Where the descriptors are comes from the runtime's module data (`runtime/symtab.go`), whose
//! words move between releases (amd64, 8-byte words):
//!
//! | Go        | types | etypes | textsectmap | typelinks | itablinks                    |
//! |-----------|-------|--------|-------------|-----------|------------------------------|
//! | 1.19      | 35    | 36     | 39          | 42        | 45                           |
//! | 1.20–1.25 | 37    | 38     | 41          | 44        | 47                           |
//! | 1.26      | 37    | 38     | 42          | 45        | 48 (`epclntab` inserted, 41) |
//! | 1.27      | 37    | 39     | 45          | —         | —                            |
//!
//! Go 1.27 dropped both link tables: its descriptors lie one after another in
//! `[types+8, types+typedesclen)` (word 38) and its itabs in `itaboffset`/`itabsize` (40, 41).
//! Every type reachable from those roots (elements, fields, parameters, methods' func types,
//! `*T` of each `T`) is read. Offsets in descriptors count from `types` (names, types) or from
//! the text start (code; per text section when there are several).
//!
//! Strict: a type whose descriptor, or any type it is made of, cannot be read is left out, and
//! so is every method whose signature needs it — never a partial type.

use crate::elf::ElfImage;
use crate::moduledata::Words;
use crate::types::{Field, GoType, Signature, TypeId, TypeKind, TypeTable, Variable};
use crate::{Function, VirtAddr};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The fixed part of every descriptor (`abi.Type`).
const TYPE_SIZE: u64 = 48;
const UNCOMMON_SIZE: u64 = 16;
const METHOD_SIZE: u64 = 16;
/// `tflag` bits.
const TFLAG_UNCOMMON: u8 = 1;
const TFLAG_EXTRA_STAR: u8 = 2;
const TFLAG_NAMED: u8 = 4;
/// Kinds (`abi.Kind`, the low five bits of the kind byte before Go 1.26).
mod kind {
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const UINTPTR: u8 = 12;
    pub const FLOAT32: u8 = 13;
    pub const FLOAT64: u8 = 14;
    pub const COMPLEX64: u8 = 15;
    pub const COMPLEX128: u8 = 16;
    pub const ARRAY: u8 = 17;
    pub const CHAN: u8 = 18;
    pub const FUNC: u8 = 19;
    pub const INTERFACE: u8 = 20;
    pub const MAP: u8 = 21;
    pub const POINTER: u8 = 22;
    pub const SLICE: u8 = 23;
    pub const STRING: u8 = 24;
    pub const STRUCT: u8 = 25;
    pub const UNSAFE_POINTER: u8 = 26;
    pub const MASK: u8 = 0x1f;
}
/// More parameters or fields than any real program has: a count past it is a misread.
const MAX_COUNT: u64 = 1 << 16;

/// A method whose signature the runtime types give in full.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RuntimeSignature {
    /// The function at the method's code, as `.gopclntab` names it (`main.(*Counter).Add`).
    pub function: String,
    /// The method's name (`Add`).
    pub method: String,
    /// The receiver's type: `*T` for a method of `*T` and for the wrapper an interface call
    /// of a value method goes through, else `T`. Also the first parameter.
    pub receiver: TypeId,
    /// The receiver is named `recv`, the other parameters `arg0`, `arg1`…, the results `~r0`,
    /// `~r1`… (Go's own name for an unnamed result): runtime types keep no parameter names.
    pub signature: Signature,
}

/// A method listed in a method table whose signature is not given, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NotCovered {
    /// The receiver type's name, as far as it could be read.
    pub receiver: String,
    pub method: String,
    /// The function at the method's code, when that was found.
    pub function: Option<String>,
    pub reason: String,
}

/// What the runtime type information gives: the types (in gotrace's model), the signature of
/// each method by the entry of its code, and the methods left out.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RuntimeMethods {
    pub types: TypeTable,
    pub signatures: BTreeMap<VirtAddr, RuntimeSignature>,
    pub not_covered: Vec<NotCovered>,
    /// Descriptors read (reachable from the module's roots).
    pub descriptors: usize,
}

/// Where the module's type data is, from its module data record.
#[derive(Clone, Debug)]
pub(crate) struct TypeSection {
    types: u64,
    etypes: u64,
    /// `(vaddr, end, baseaddr)` of each text section when there are several.
    text_sections: Vec<(u64, u64, u64)>,
    text: u64,
    roots: Roots,
    /// Bytes of `abi.MapType` (it grew with Swiss tables in 1.24 and again in 1.27).
    map_type_size: u64,
}

#[derive(Clone, Debug)]
enum Roots {
    /// `typelinks []int32` (offsets from `types`) and `itablinks []*itab`.
    Links {
        typelinks: (u64, u64),
        itablinks: (u64, u64),
    },
    /// Go 1.27: descriptors back to back, itabs back to back.
    Packed {
        typedesclen: u64,
        itaboffset: u64,
        itabsize: u64,
    },
}

/// Reads the type section's words of the module data at `at`, for Go `1.minor`.
pub(crate) fn section(
    words: &Words<'_>,
    at: u64,
    text: u64,
    minor: u32,
    swiss_maps: bool,
) -> Result<TypeSection, String> {
    let word = |i: u64| {
        words.at(at + 8 * i).ok_or_else(|| {
            format!(
                "module data word {i} at {:#x} is not in the file",
                at + 8 * i
            )
        })
    };
    let (types_w, etypes_w, textsect_w) = match minor {
        19 => (35, 36, 39),
        20..=26 => (37, 38, if minor == 26 { 42 } else { 41 }),
        27 => (37, 39, 45),
        _ => {
            return Err(format!(
                "the module data layout of Go 1.{minor} is not known"
            ))
        }
    };
    let types = word(types_w)?;
    let etypes = word(etypes_w)?;
    if types == 0 || etypes <= types {
        return Err(format!(
            "the module data's type range [{types:#x}, {etypes:#x}) is empty"
        ));
    }
    let roots = match minor {
        27 => Roots::Packed {
            typedesclen: word(38)?,
            itaboffset: word(40)?,
            itabsize: word(41)?,
        },
        _ => {
            let links = textsect_w + 3;
            Roots::Links {
                typelinks: (word(links)?, word(links + 1)?),
                itablinks: (word(links + 3)?, word(links + 4)?),
            }
        }
    };
    let (sect_ptr, sect_len) = (word(textsect_w)?, word(textsect_w + 1)?);
    if sect_len > 256 {
        return Err(format!(
            "{sect_len} text sections: not a module data record"
        ));
    }
    let mut text_sections = Vec::new();
    if sect_len > 1 {
        for i in 0..sect_len {
            let base = sect_ptr + 24 * i;
            let w = |k: u64| {
                words
                    .at(base + 8 * k)
                    .ok_or_else(|| format!("text section entry at {base:#x} is not in the file"))
            };
            text_sections.push((w(0)?, w(1)?, w(2)?));
        }
    }
    let map_type_size = match minor {
        ..=23 => 88,
        24..=26 if !swiss_maps => 88,
        24..=26 => 112,
        _ => 136,
    };
    Ok(TypeSection {
        types,
        etypes,
        text_sections,
        text,
        roots,
        map_type_size,
    })
}

/// One descriptor as read, its references still addresses.
#[derive(Clone, Debug)]
struct Raw {
    /// `str`, the `*` of a shared name removed: package names, not paths (`http.Header`).
    str: String,
    named: bool,
    /// The uncommon section's import path (named types; empty for built-ins).
    pkg_path: String,
    size: u64,
    align: u64,
    shape: Shape,
    ptr_to_this: Option<u64>,
    methods: Vec<RawMethod>,
}

#[derive(Clone, Debug)]
enum Shape {
    Basic(TypeKind),
    Pointer(u64),
    Slice(u64),
    Array(u64, u64),
    Chan(u64, u64),
    Map(u64, u64),
    /// The package path of unexported field names, and the fields.
    Struct(String, Vec<RawField>),
    /// The package path of unexported method names, and the methods with their func types.
    Interface(String, Vec<(Name, u64)>),
    Func {
        ins: Vec<u64>,
        outs: Vec<u64>,
        variadic: bool,
    },
}

#[derive(Clone, Debug)]
struct RawField {
    name: Name,
    ty: u64,
    offset: u64,
}

/// A decoded `abi.Name`.
#[derive(Clone, Debug, Default)]
struct Name {
    text: String,
    exported: bool,
    embedded: bool,
    tag: Option<String>,
    /// Its own package path, when it differs from its type's.
    pkg_path: Option<String>,
}

impl Name {
    /// How Go's type strings write it: an unexported name qualified by its package path.
    fn qualified(&self, type_pkg: &str) -> String {
        let pkg = self.pkg_path.as_deref().unwrap_or(type_pkg);
        if self.exported || pkg.is_empty() {
            self.text.clone()
        } else {
            format!("{}.{}", symbol_path(pkg), self.text)
        }
    }
}

/// An import path as symbol names (and so DWARF and `.gopclntab`) write it: the last
/// element's dots and a few unsafe bytes escaped (`cmd/internal/objabi.PathToPrefix`).
fn symbol_path(path: &str) -> String {
    let slash = path.rfind('/').map_or(0, |i| i + 1);
    let mut out = String::with_capacity(path.len());
    for (i, c) in path.char_indices() {
        let escape = c <= ' ' || (c == '.' && i >= slash) || c == '%' || c == '"' || c > '~';
        if escape {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Clone, Debug)]
struct RawMethod {
    name: String,
    /// The func type, without the receiver; `None` when the linker dropped it.
    mtyp: Option<u64>,
    ifn: Option<u64>,
    tfn: Option<u64>,
}

struct Reader<'a> {
    elf: &'a ElfImage,
    words: &'a Words<'a>,
    section: &'a TypeSection,
}

impl Reader<'_> {
    fn bytes(&self, addr: u64, len: u64) -> Result<&[u8], String> {
        self.elf
            .bytes_at(VirtAddr(addr), len)
            .map_err(|_| format!("{len} bytes at {addr:#x} are not in the file"))
    }

    fn u8(&self, addr: u64) -> Result<u8, String> {
        Ok(self.bytes(addr, 1)?[0])
    }

    fn u16(&self, addr: u64) -> Result<u16, String> {
        let b = self.bytes(addr, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, addr: u64) -> Result<u32, String> {
        let b = self.bytes(addr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A pointer-sized word as the loader leaves it (relocated in a PIE).
    fn word(&self, addr: u64) -> Result<u64, String> {
        self.words
            .at(addr)
            .ok_or_else(|| format!("the word at {addr:#x} is not in the file"))
    }

    /// A pointer into the type data; `None` for nil.
    fn type_ptr(&self, addr: u64) -> Result<Option<u64>, String> {
        match self.word(addr)? {
            0 => Ok(None),
            p => self.in_types(p).map(Some),
        }
    }

    fn in_types(&self, p: u64) -> Result<u64, String> {
        if p < self.section.types || p >= self.section.etypes {
            return Err(format!("{p:#x} lies outside the type data"));
        }
        Ok(p)
    }

    /// `types + off` for a nameOff or typeOff; `None` for 0 and -1 (the linker's "none").
    fn offset(&self, off: u32) -> Result<Option<u64>, String> {
        let off = off as i32;
        if off == 0 || off == -1 {
            return Ok(None);
        }
        let p = self.section.types.wrapping_add_signed(i64::from(off));
        self.in_types(p).map(Some)
    }

    /// A text offset resolved as `moduledata.textOff` does; `None` for -1 (dead code).
    fn text_off(&self, off: u32) -> Option<u64> {
        if off as i32 == -1 {
            return None;
        }
        let off = u64::from(off);
        let sections = &self.section.text_sections;
        if sections.is_empty() {
            return Some(self.section.text + off);
        }
        sections
            .iter()
            .enumerate()
            .find_map(|(i, &(vaddr, end, base))| {
                let last = i + 1 == sections.len();
                ((off >= vaddr && off < end) || (last && off == end)).then(|| base + off - vaddr)
            })
    }

    /// A varint-prefixed string (Go 1.17+ names); its text and where it ends.
    fn string(&self, at: u64) -> Result<(String, u64), String> {
        let mut len: u64 = 0;
        let mut p = at;
        for shift in (0..35).step_by(7) {
            let b = self.u8(p)?;
            p += 1;
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        if len > MAX_COUNT {
            return Err(format!("a name of {len} bytes at {at:#x}"));
        }
        let bytes = self.bytes(p, len)?;
        let s =
            std::str::from_utf8(bytes).map_err(|_| format!("the name at {at:#x} is not UTF-8"))?;
        Ok((s.to_owned(), p + len))
    }

    /// An encoded name (`abi.Name`): flags (exported 1, tag 2, package path 4, embedded 8),
    /// the name, then the tag and the package path's nameOff when the flags say so.
    fn name(&self, addr: u64) -> Result<Name, String> {
        let flags = self.u8(addr)?;
        let (text, mut end) = self.string(addr + 1)?;
        let mut tag = None;
        if flags & 2 != 0 {
            let (t, e) = self.string(end)?;
            tag = Some(t);
            end = e;
        }
        let pkg_path = if flags & 4 != 0 {
            Some(self.name_off(self.u32(end)?)?)
        } else {
            None
        };
        Ok(Name {
            text,
            exported: flags & 1 != 0,
            embedded: flags & 8 != 0,
            tag,
            pkg_path,
        })
    }

    fn name_off(&self, off: u32) -> Result<String, String> {
        self.name_at_off(off).map(|n| n.text)
    }

    fn name_at_off(&self, off: u32) -> Result<Name, String> {
        match self.offset(off)? {
            Some(p) => self.name(p),
            None => Ok(Name::default()),
        }
    }

    /// A `Name` field (one pointer); empty when nil.
    fn name_ptr(&self, addr: u64) -> Result<String, String> {
        match self.word(addr)? {
            0 => Ok(String::new()),
            p => Ok(self.name(p)?.text),
        }
    }

    /// A `[]T` header: data pointer and length, the length bounded.
    fn slice(&self, addr: u64) -> Result<(u64, u64), String> {
        let (ptr, len) = (self.word(addr)?, self.word(addr + 8)?);
        if len > MAX_COUNT {
            return Err(format!("a slice of {len} elements at {addr:#x}"));
        }
        Ok((ptr, len))
    }

    /// The bytes of the kind-specific part of a descriptor: where its uncommon section starts.
    fn kind_size(&self, k: u8) -> u64 {
        match k {
            kind::ARRAY => TYPE_SIZE + 24,
            kind::CHAN => TYPE_SIZE + 16,
            kind::FUNC => TYPE_SIZE + 8,
            kind::INTERFACE | kind::STRUCT => TYPE_SIZE + 32,
            kind::MAP => self.section.map_type_size,
            kind::POINTER | kind::SLICE => TYPE_SIZE + 8,
            _ => TYPE_SIZE,
        }
    }

    fn descriptor(&self, at: u64) -> Result<Raw, String> {
        let size = self.word(at)?;
        let tflag = self.u8(at + 20)?;
        let align = u64::from(self.u8(at + 21)?);
        let k = self.u8(at + 23)? & kind::MASK;
        let mut str = match self.offset(self.u32(at + 40)?)? {
            Some(p) => self.name(p)?.text,
            None => return Err(format!("the type at {at:#x} has no name string")),
        };
        if tflag & TFLAG_EXTRA_STAR != 0 {
            str = str
                .strip_prefix('*')
                .ok_or_else(|| format!("the type at {at:#x} lacks its name's extra '*'"))?
                .to_owned();
        }
        let ptr_to_this = self.offset(self.u32(at + 44)?)?;
        let body = at + TYPE_SIZE;
        let elem = |off: u64| {
            self.type_ptr(body + off)?
                .ok_or_else(|| format!("the type {str} at {at:#x} has no element type"))
        };
        let shape = match k {
            kind::BOOL => Shape::Basic(TypeKind::Bool),
            kind::INT..=kind::UINTPTR => Shape::Basic(TypeKind::Int {
                signed: k <= kind::INT + 4,
            }),
            kind::FLOAT32 | kind::FLOAT64 => Shape::Basic(TypeKind::Float),
            kind::COMPLEX64 | kind::COMPLEX128 => Shape::Basic(TypeKind::Complex),
            kind::STRING => Shape::Basic(TypeKind::String),
            kind::UNSAFE_POINTER => Shape::Basic(TypeKind::UnsafePointer),
            kind::POINTER => Shape::Pointer(elem(0)?),
            kind::SLICE => Shape::Slice(elem(0)?),
            kind::ARRAY => Shape::Array(elem(0)?, self.word(body + 16)?),
            kind::CHAN => Shape::Chan(elem(0)?, self.word(body + 8)?),
            kind::MAP => Shape::Map(elem(0)?, elem(8)?),
            kind::STRUCT => {
                let pkg_path = self.name_ptr(body)?;
                let (ptr, len) = self.slice(body + 8)?;
                let mut fields = Vec::with_capacity(len as usize);
                for i in 0..len {
                    let f = ptr + 24 * i;
                    let name = self.name(self.word(f)?)?;
                    // Checked here, so that a type whose name cannot be written is left out
                    // with everything made of it.
                    if let Some(tag) = &name.tag {
                        go_quote(tag)?;
                    }
                    let ty = self
                        .type_ptr(f + 8)?
                        .ok_or("a struct field without a type")?;
                    fields.push(RawField {
                        ty,
                        offset: self.word(f + 16)?,
                        name,
                    });
                }
                Shape::Struct(pkg_path, fields)
            }
            kind::INTERFACE => {
                let pkg_path = self.name_ptr(body)?;
                let (ptr, len) = self.slice(body + 8)?;
                let mut methods = Vec::with_capacity(len as usize);
                for i in 0..len {
                    let m = ptr + 8 * i;
                    let name = self.name_at_off(self.u32(m)?)?;
                    let ty = self
                        .offset(self.u32(m + 4)?)?
                        .ok_or("an interface method without a type")?;
                    methods.push((name, ty));
                }
                Shape::Interface(pkg_path, methods)
            }
            kind::FUNC => {
                let ins = u64::from(self.u16(body)?);
                let out_count = self.u16(body + 2)?;
                let outs = u64::from(out_count & 0x7fff);
                let mut p = at + self.kind_size(k);
                if tflag & TFLAG_UNCOMMON != 0 {
                    p += UNCOMMON_SIZE;
                }
                let mut list = |n: u64| -> Result<Vec<u64>, String> {
                    (0..n)
                        .map(|_| {
                            let t = self.type_ptr(p)?.ok_or("a nil parameter type");
                            p += 8;
                            t.map_err(String::from)
                        })
                        .collect::<Result<_, _>>()
                };
                Shape::Func {
                    ins: list(ins)?,
                    outs: list(outs)?,
                    variadic: out_count & 0x8000 != 0,
                }
            }
            other => return Err(format!("the type at {at:#x} has kind {other}")),
        };
        let mut raw = Raw {
            str,
            named: tflag & TFLAG_NAMED != 0,
            pkg_path: String::new(),
            size,
            align,
            shape,
            ptr_to_this,
            methods: Vec::new(),
        };
        if tflag & TFLAG_UNCOMMON != 0 {
            let u = at + self.kind_size(k);
            raw.pkg_path = self.name_off(self.u32(u)?)?;
            let count = u64::from(self.u16(u + 4)?);
            let moff = u64::from(self.u32(u + 8)?);
            for i in 0..count {
                let m = u + moff + METHOD_SIZE * i;
                raw.methods.push(RawMethod {
                    name: self.name_off(self.u32(m)?)?,
                    mtyp: self.offset(self.u32(m + 4)?)?,
                    ifn: self.text_off(self.u32(m + 8)?),
                    tfn: self.text_off(self.u32(m + 12)?),
                });
            }
        }
        Ok(raw)
    }

    /// Bytes a Go 1.27 descriptor takes (`abi.Type.DescriptorSize`).
    fn descriptor_size(&self, at: u64) -> Result<u64, String> {
        let tflag = self.u8(at + 20)?;
        let k = self.u8(at + 23)? & kind::MASK;
        let body = at + TYPE_SIZE;
        let extra = match k {
            kind::FUNC => {
                let n = u64::from(self.u16(body)?) + u64::from(self.u16(body + 2)? & 0x7fff);
                8 * n
            }
            kind::INTERFACE => 8 * self.slice(body + 8)?.1,
            kind::STRUCT => 24 * self.slice(body + 8)?.1,
            kind::BOOL..=kind::UNSAFE_POINTER => 0,
            other => return Err(format!("a descriptor of kind {other} at {at:#x}")),
        };
        let mut size = self.kind_size(k) + extra;
        if tflag & TFLAG_UNCOMMON != 0 {
            let u = at + self.kind_size(k);
            size += UNCOMMON_SIZE + METHOD_SIZE * u64::from(self.u16(u + 4)?);
        }
        Ok(size)
    }

    /// The descriptors the module lists, and the concrete type of each itab.
    fn roots(&self) -> Result<Vec<u64>, String> {
        let s = self.section;
        let mut roots = Vec::new();
        match s.roots {
            Roots::Links {
                typelinks: (ptr, len),
                itablinks: (iptr, ilen),
            } => {
                if len > 1 << 24 || ilen > 1 << 24 {
                    return Err(format!("{len} typelinks, {ilen} itablinks"));
                }
                for i in 0..len {
                    if let Some(t) = self.offset(self.u32(ptr + 4 * i)?)? {
                        roots.push(t);
                    }
                }
                for i in 0..ilen {
                    let itab = self.word(iptr + 8 * i)?;
                    roots.extend(self.type_ptr(itab + 8)?);
                }
            }
            Roots::Packed {
                typedesclen,
                itaboffset,
                itabsize,
            } => {
                let end = s.types.checked_add(typedesclen).ok_or("typedesclen")?;
                let mut at = s.types + 8;
                while at < end {
                    at = at.next_multiple_of(8);
                    roots.push(at);
                    at += self.descriptor_size(at)?;
                }
                let mut at = s.types.checked_add(itaboffset).ok_or("itaboffset")?;
                let end = at.checked_add(itabsize).ok_or("itabsize")?;
                while at < end {
                    let inter = self.type_ptr(at)?.ok_or("an itab without an interface")?;
                    roots.extend(self.type_ptr(at + 8)?);
                    let methods = self.slice(inter + TYPE_SIZE + 8)?.1;
                    let fun0 = self.word(at + 24)?;
                    at += 32
                        + if fun0 == 0 {
                            0
                        } else {
                            8 * methods.saturating_sub(1)
                        };
                }
            }
        }
        Ok(roots)
    }
}

impl Raw {
    /// The descriptors this one is made of, for the walk and for strictness.
    fn parts(&self) -> Vec<u64> {
        let mut out = Vec::new();
        match &self.shape {
            Shape::Basic(_) => {}
            Shape::Pointer(e) | Shape::Slice(e) | Shape::Array(e, _) | Shape::Chan(e, _) => {
                out.push(*e)
            }
            Shape::Map(k, v) => out.extend([*k, *v]),
            Shape::Struct(_, fields) => out.extend(fields.iter().map(|f| f.ty)),
            Shape::Interface(_, methods) => out.extend(methods.iter().map(|m| m.1)),
            Shape::Func { ins, outs, .. } => out.extend(ins.iter().chain(outs)),
        }
        out
    }
}

/// Reads every descriptor reachable from the module's roots and gives each method table
/// entry with code its signature.
pub(crate) fn read(
    elf: &ElfImage,
    words: &Words<'_>,
    section: &TypeSection,
    functions: &[Function],
) -> Result<RuntimeMethods, String> {
    let reader = Reader {
        elf,
        words,
        section,
    };
    let mut raws: HashMap<u64, Result<Raw, String>> = HashMap::new();
    let mut queue = reader.roots()?;
    if queue.is_empty() {
        return Err("the module lists no types".into());
    }
    while let Some(at) = queue.pop() {
        if raws.contains_key(&at) {
            continue;
        }
        let raw = reader.descriptor(at);
        if let Ok(r) = &raw {
            queue.extend(r.parts());
            queue.extend(r.ptr_to_this);
            queue.extend(r.methods.iter().filter_map(|m| m.mtyp));
        }
        raws.insert(at, raw);
    }
    let bad = unreadable(&raws);
    let mut builder = Builder::new(&raws, &bad);
    let mut out = RuntimeMethods {
        descriptors: raws.len(),
        ..Default::default()
    };
    let mut conflicts: HashSet<VirtAddr> = HashSet::new();
    let mut owners: Vec<u64> = raws.keys().copied().collect();
    owners.sort_unstable();
    for owner in owners {
        let Some(Ok(raw)) = raws.get(&owner) else {
            continue;
        };
        for m in &raw.methods {
            let mut entries = vec![];
            entries.extend(m.tfn.map(|e| (e, false)));
            // The interface-call entry differs from the direct one only for a value
            // receiver that is not pointer-shaped: the wrapper `(*T).M` then takes `*T`.
            entries.extend(m.ifn.filter(|&i| Some(i) != m.tfn).map(|e| (e, true)));
            for (entry, via_pointer) in entries {
                let found = method(&mut builder, functions, owner, raw, m, entry, via_pointer);
                match found {
                    Ok(sig) => {
                        let at = VirtAddr(entry);
                        match out.signatures.get(&at) {
                            Some(prev) if !same(&builder, prev, &sig) => {
                                conflicts.insert(at);
                            }
                            Some(_) => {}
                            None => {
                                out.signatures.insert(at, sig);
                            }
                        }
                    }
                    Err((function, reason)) => out.not_covered.push(NotCovered {
                        receiver: builder.display_name(owner),
                        method: m.name.clone(),
                        function,
                        reason,
                    }),
                }
            }
        }
    }
    for at in conflicts {
        if let Some(sig) = out.signatures.remove(&at) {
            out.not_covered.push(NotCovered {
                receiver: builder.table_name(sig.receiver),
                method: sig.method,
                function: Some(sig.function),
                reason: "method tables disagree on its signature".into(),
            });
        }
    }
    out.types = builder.finish();
    Ok(out)
}

/// Whether two tables' entries for one function agree: the same parameter and result types,
/// the receiver compared by name (one may be a `*T` made here for want of a descriptor).
fn same(b: &Builder<'_>, x: &RuntimeSignature, y: &RuntimeSignature) -> bool {
    let tys = |s: &Signature| -> Vec<TypeId> {
        s.params
            .iter()
            .skip(1)
            .chain(&s.results)
            .map(|v| v.ty)
            .collect()
    };
    x.function == y.function
        && b.table_name(x.receiver) == b.table_name(y.receiver)
        && tys(&x.signature) == tys(&y.signature)
}

/// The signature of one method table entry, or the function found and why not.
fn method(
    b: &mut Builder<'_>,
    functions: &[Function],
    owner: u64,
    raw: &Raw,
    m: &RawMethod,
    entry: u64,
    via_pointer: bool,
) -> Result<RuntimeSignature, (Option<String>, String)> {
    let i = functions.partition_point(|f| f.entry.0 <= entry);
    let f = i
        .checked_sub(1)
        .and_then(|i| functions.get(i))
        .filter(|f| f.entry.0 == entry)
        .ok_or_else(|| (None, format!("no function starts at its code {entry:#x}")))?;
    let fail = |reason: String| (Some(f.name.clone()), reason);
    let receiver_part = f
        .name
        .strip_suffix(&m.name)
        .and_then(|r| r.strip_suffix('.'))
        .ok_or_else(|| fail(format!("the function at its code is {}", f.name)))?;
    let mtyp = m
        .mtyp
        .ok_or_else(|| fail("the linker dropped its func type".into()))?;
    let Shape::Func { ins, outs, .. } = &b.raw(mtyp).map_err(fail)?.shape else {
        return Err(fail(format!(
            "its method type at {mtyp:#x} is not a func type"
        )));
    };
    let (ins, outs) = (ins.clone(), outs.clone());
    let receiver = if via_pointer {
        b.pointer_to(owner, raw).map_err(fail)?
    } else {
        b.id(owner).map_err(fail)?
    };
    // `pkg.(*T).M` takes a pointer, `pkg.T.M` a value: the name must say what the table does.
    let pointer_named = receiver_part.ends_with(')');
    let pointer_typed = via_pointer || matches!(raw.shape, Shape::Pointer(_));
    if pointer_named != pointer_typed {
        return Err(fail(format!(
            "its name disagrees with the method table on whether the receiver is a pointer ({})",
            raw.str
        )));
    }
    let mut sig = Signature::default();
    sig.params.push(Variable {
        name: "recv".into(),
        ty: receiver,
    });
    for (i, &t) in ins.iter().enumerate() {
        let ty = b.id(t).map_err(fail)?;
        sig.params.push(Variable {
            name: format!("arg{i}"),
            ty,
        });
    }
    for (i, &t) in outs.iter().enumerate() {
        let ty = b.id(t).map_err(fail)?;
        sig.results.push(Variable {
            name: format!("~r{i}"),
            ty,
        });
    }
    Ok(RuntimeSignature {
        function: f.name.clone(),
        method: m.name.clone(),
        receiver,
        signature: sig,
    })
}

/// The descriptors that cannot be given a full type: unreadable, or made of one that is.
fn unreadable(raws: &HashMap<u64, Result<Raw, String>>) -> HashMap<u64, String> {
    let mut bad: HashMap<u64, String> = raws
        .iter()
        .filter_map(|(&at, r)| r.as_ref().err().map(|e| (at, e.clone())))
        .collect();
    loop {
        let mut added = Vec::new();
        for (&at, raw) in raws {
            let Ok(raw) = raw else { continue };
            if bad.contains_key(&at) {
                continue;
            }
            let missing = raw
                .parts()
                .into_iter()
                .find(|p| !raws.contains_key(p) || bad.contains_key(p));
            if let Some(p) = missing {
                let why = match bad.get(&p) {
                    Some(e) => format!("{} is made of a type that is not readable: {e}", raw.str),
                    None => format!("{} is made of a type at {p:#x} that was not read", raw.str),
                };
                added.push((at, why));
            }
        }
        if added.is_empty() {
            return bad;
        }
        bad.extend(added);
    }
}

/// Turns readable descriptors into [`GoType`]s on demand, with full Go names.
struct Builder<'r> {
    raws: &'r HashMap<u64, Result<Raw, String>>,
    bad: &'r HashMap<u64, String>,
    ids: HashMap<u64, TypeId>,
    types: Vec<Option<GoType>>,
    /// `*T` made for a `T` whose own pointer type has no descriptor.
    made_pointers: HashMap<u64, TypeId>,
    names: HashMap<u64, String>,
}

impl<'r> Builder<'r> {
    fn new(raws: &'r HashMap<u64, Result<Raw, String>>, bad: &'r HashMap<u64, String>) -> Self {
        Builder {
            raws,
            bad,
            ids: HashMap::new(),
            types: Vec::new(),
            made_pointers: HashMap::new(),
            names: HashMap::new(),
        }
    }

    fn raw(&self, at: u64) -> Result<&'r Raw, String> {
        if let Some(e) = self.bad.get(&at) {
            return Err(e.clone());
        }
        match self.raws.get(&at) {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("the type at {at:#x} was not read")),
        }
    }

    /// The type's Go name with import paths (`*net/http.Request`, `map[string][]int`), as
    /// DWARF gives it. Unnamed types never contain themselves except through a named type,
    /// so the recursion ends.
    fn name(&mut self, at: u64) -> Result<String, String> {
        if let Some(n) = self.names.get(&at) {
            return Ok(n.clone());
        }
        let raw = self.raw(at)?;
        let name = if raw.named {
            // `str` qualifies by package name (`http.Header`); the uncommon section has the
            // path. Built-in types (`int`, `error`) have neither.
            match raw.str.split_once('.') {
                Some((_, rest)) if !raw.pkg_path.is_empty() => {
                    format!("{}.{rest}", symbol_path(&raw.pkg_path))
                }
                _ => raw.str.clone(),
            }
        } else {
            match &raw.shape {
                Shape::Basic(_) => raw.str.clone(),
                Shape::Pointer(e) => format!("*{}", self.name(*e)?),
                Shape::Slice(e) => format!("[]{}", self.name(*e)?),
                Shape::Array(e, n) => format!("[{n}]{}", self.name(*e)?),
                Shape::Chan(e, dir) => {
                    let e = self.name(*e)?;
                    match dir {
                        1 => format!("<-chan {e}"),
                        2 => format!("chan<- {e}"),
                        _ if e.starts_with("<-chan") => format!("chan ({e})"),
                        _ => format!("chan {e}"),
                    }
                }
                Shape::Map(k, v) => format!("map[{}]{}", self.name(*k)?, self.name(*v)?),
                Shape::Func {
                    ins,
                    outs,
                    variadic,
                } => {
                    let mut params = Vec::new();
                    for (i, &t) in ins.iter().enumerate() {
                        let n = self.name(t)?;
                        params.push(match n.strip_prefix("[]") {
                            Some(e) if *variadic && i + 1 == ins.len() => format!("...{e}"),
                            _ => n,
                        });
                    }
                    let results = outs
                        .iter()
                        .map(|&t| self.name(t))
                        .collect::<Result<Vec<_>, _>>()?;
                    let results = match results.len() {
                        0 => String::new(),
                        1 => format!(" {}", results[0]),
                        _ => format!(" ({})", results.join(", ")),
                    };
                    format!("func({}){results}", params.join(", "))
                }
                Shape::Struct(_, fields) if fields.is_empty() => "struct {}".into(),
                Shape::Struct(pkg, fields) => {
                    let mut parts = Vec::new();
                    for f in fields {
                        let t = self.name(f.ty)?;
                        let mut part = if f.name.embedded {
                            t
                        } else {
                            format!("{} {t}", f.name.qualified(pkg))
                        };
                        if let Some(tag) = &f.name.tag {
                            part.push_str(&format!(" {}", go_quote(tag)?));
                        }
                        parts.push(part);
                    }
                    format!("struct {{ {} }}", parts.join("; "))
                }
                Shape::Interface(_, methods) if methods.is_empty() => "interface {}".into(),
                Shape::Interface(pkg, methods) => {
                    let mut parts = Vec::new();
                    for (name, t) in methods {
                        let sig = self.name(*t)?;
                        let sig = sig.strip_prefix("func").unwrap_or(&sig);
                        parts.push(format!("{}{sig}", name.qualified(pkg)));
                    }
                    format!("interface {{ {} }}", parts.join("; "))
                }
            }
        };
        self.names.insert(at, name.clone());
        Ok(name)
    }

    fn display_name(&mut self, at: u64) -> String {
        self.name(at)
            .unwrap_or_else(|_| self.raw(at).map(|r| r.str.clone()).unwrap_or_default())
    }

    fn table_name(&self, id: TypeId) -> String {
        self.types
            .get(id.0 as usize)
            .and_then(|t| t.as_ref())
            .map(|t| t.name.clone())
            .unwrap_or_default()
    }

    /// The id of the descriptor at `at`, translating it and what it is made of. Only types
    /// outside `bad` get here, and all their parts are outside it too, so no translation
    /// stops half-way (which would leave an id without a type).
    fn id(&mut self, at: u64) -> Result<TypeId, String> {
        if let Some(&id) = self.ids.get(&at) {
            return Ok(id);
        }
        let raw = self.raw(at)?;
        let name = self.name(at)?;
        let id = TypeId(self.types.len() as u32);
        self.types.push(None);
        self.ids.insert(at, id);
        let kind = match &raw.shape {
            Shape::Basic(k) => k.clone(),
            Shape::Pointer(e) => TypeKind::Pointer { elem: self.id(*e)? },
            Shape::Slice(e) => TypeKind::Slice { elem: self.id(*e)? },
            Shape::Array(e, len) => TypeKind::Array {
                elem: self.id(*e)?,
                len: *len,
            },
            Shape::Chan(e, _) => TypeKind::Chan { elem: self.id(*e)? },
            // The header's layout is not in the descriptor (DWARF gives it as `*hash<K,V>` or
            // `*map<K,V>`): reading the entries needs the runtime's layout for this release.
            Shape::Map(k, v) => TypeKind::Map {
                key: self.id(*k)?,
                value: self.id(*v)?,
                header: None,
            },
            Shape::Struct(_, fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for f in fields {
                    out.push(Field {
                        name: f.name.text.clone(),
                        ty: self.id(f.ty)?,
                        offset: f.offset,
                        embedded: f.name.embedded,
                    });
                }
                TypeKind::Struct { fields: out }
            }
            Shape::Interface(_, methods) => TypeKind::Interface {
                empty: methods.is_empty(),
            },
            Shape::Func { .. } => TypeKind::Func,
        };
        self.types[id.0 as usize] = Some(GoType {
            name,
            size: raw.size,
            align: raw.align,
            kind,
        });
        Ok(id)
    }

    /// `*T` for the descriptor of `T`: its own pointer descriptor, or one made here (a pointer
    /// is one word whatever it points at).
    fn pointer_to(&mut self, owner: u64, raw: &Raw) -> Result<TypeId, String> {
        if let Some(p) = raw.ptr_to_this {
            if self.raw(p).is_ok() {
                return self.id(p);
            }
        }
        if let Some(&id) = self.made_pointers.get(&owner) {
            return Ok(id);
        }
        let elem = self.id(owner)?;
        let name = format!("*{}", self.name(owner)?);
        let id = TypeId(self.types.len() as u32);
        self.types.push(Some(GoType {
            name,
            size: 8,
            align: 8,
            kind: TypeKind::Pointer { elem },
        }));
        self.made_pointers.insert(owner, id);
        Ok(id)
    }

    fn finish(self) -> TypeTable {
        let mut table = TypeTable::default();
        for ty in self.types {
            table.push(ty.unwrap_or(GoType {
                name: String::new(),
                size: 0,
                align: 0,
                kind: TypeKind::Unknown,
            }));
        }
        table
    }
}

/// A struct tag as Go's type strings quote it (`strconv.Quote`), for the tags real programs
/// use: printable ASCII; anything else is not reproduced, and the type is then left out.
fn go_quote(tag: &str) -> Result<String, String> {
    let mut out = String::from('"');
    for c in tag.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => return Err(format!("a struct tag with {c:?} ({tag:?})")),
        }
    }
    out.push('"');
    Ok(out)
}
