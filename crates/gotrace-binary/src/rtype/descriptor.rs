//! One runtime type descriptor (`abi.Type` and what follows it by kind) read into [`Raw`],
//! its references still addresses; see the module's documentation for where they are.

use super::build::go_quote;
use super::section::TypeSection;
use crate::elf::ElfImage;
use crate::moduledata::Words;
use crate::types::TypeKind;
use crate::VirtAddr;

/// The fixed part of every descriptor (`abi.Type`).
pub(super) const TYPE_SIZE: u64 = 48;
pub(super) const UNCOMMON_SIZE: u64 = 16;
pub(super) const METHOD_SIZE: u64 = 16;
/// `tflag` bits.
pub(super) const TFLAG_UNCOMMON: u8 = 1;
pub(super) const TFLAG_EXTRA_STAR: u8 = 2;
pub(super) const TFLAG_NAMED: u8 = 4;
/// Kinds (`abi.Kind`, the low five bits of the kind byte before Go 1.26).
pub(super) mod kind {
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
pub(super) const MAX_COUNT: u64 = 1 << 16;

/// One descriptor as read, its references still addresses.
#[derive(Clone, Debug)]
pub(super) struct Raw {
    /// `str`, the `*` of a shared name removed: package names, not paths (`http.Header`).
    pub(super) str: String,
    pub(super) named: bool,
    /// The uncommon section's import path (named types; empty for built-ins).
    pub(super) pkg_path: String,
    pub(super) size: u64,
    pub(super) align: u64,
    pub(super) shape: Shape,
    pub(super) ptr_to_this: Option<u64>,
    pub(super) methods: Vec<RawMethod>,
}

#[derive(Clone, Debug)]
pub(super) enum Shape {
    Basic(TypeKind),
    Pointer(u64),
    Slice(u64),
    Array(u64, u64),
    Chan(u64, u64),
    /// Key, value, and (Swiss tables, Go 1.24+) the slot group type, whose fields give where a
    /// group's keys and values are.
    Map(u64, u64, Option<u64>),
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
pub(super) struct RawField {
    pub(super) name: Name,
    pub(super) ty: u64,
    pub(super) offset: u64,
}

/// A decoded `abi.Name`.
#[derive(Clone, Debug, Default)]
pub(super) struct Name {
    pub(super) text: String,
    pub(super) exported: bool,
    pub(super) embedded: bool,
    pub(super) tag: Option<String>,
    /// Its own package path, when it differs from its type's.
    pub(super) pkg_path: Option<String>,
}

#[derive(Clone, Debug)]
pub(super) struct RawMethod {
    pub(super) name: String,
    /// The func type, without the receiver; `None` when the linker dropped it.
    pub(super) mtyp: Option<u64>,
    pub(super) ifn: Option<u64>,
    pub(super) tfn: Option<u64>,
}

pub(super) struct Reader<'a> {
    pub(super) elf: &'a ElfImage,
    pub(super) words: &'a Words<'a>,
    pub(super) section: &'a TypeSection,
}

impl Reader<'_> {
    pub(super) fn bytes(&self, addr: u64, len: u64) -> Result<&[u8], String> {
        self.elf
            .bytes_at(VirtAddr(addr), len)
            .map_err(|_| format!("{len} bytes at {addr:#x} are not in the file"))
    }

    pub(super) fn u8(&self, addr: u64) -> Result<u8, String> {
        Ok(self.bytes(addr, 1)?[0])
    }

    pub(super) fn u16(&self, addr: u64) -> Result<u16, String> {
        let b = self.bytes(addr, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&self, addr: u64) -> Result<u32, String> {
        let b = self.bytes(addr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A pointer-sized word as the loader leaves it (relocated in a PIE).
    pub(super) fn word(&self, addr: u64) -> Result<u64, String> {
        self.words
            .at(addr)
            .ok_or_else(|| format!("the word at {addr:#x} is not in the file"))
    }

    /// A pointer into the type data; `None` for nil.
    pub(super) fn type_ptr(&self, addr: u64) -> Result<Option<u64>, String> {
        match self.word(addr)? {
            0 => Ok(None),
            p => self.in_types(p).map(Some),
        }
    }

    pub(super) fn in_types(&self, p: u64) -> Result<u64, String> {
        if p < self.section.types || p >= self.section.etypes {
            return Err(format!("{p:#x} lies outside the type data"));
        }
        Ok(p)
    }

    /// `types + off` for a nameOff or typeOff; `None` for 0 and -1 (the linker's "none").
    pub(super) fn offset(&self, off: u32) -> Result<Option<u64>, String> {
        let off = off as i32;
        if off == 0 || off == -1 {
            return Ok(None);
        }
        let p = self.section.types.wrapping_add_signed(i64::from(off));
        self.in_types(p).map(Some)
    }

    /// A text offset resolved as `moduledata.textOff` does; `None` for -1 (dead code).
    pub(super) fn text_off(&self, off: u32) -> Option<u64> {
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
                let inside = (off >= vaddr && off < end) || (last && off == end);
                inside
                    .then(|| base.checked_add(off.checked_sub(vaddr)?))
                    .flatten()
            })
    }

    /// A varint-prefixed string (Go 1.17+ names); its text and where it ends.
    pub(super) fn string(&self, at: u64) -> Result<(String, u64), String> {
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
    pub(super) fn name(&self, addr: u64) -> Result<Name, String> {
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

    pub(super) fn name_off(&self, off: u32) -> Result<String, String> {
        self.name_at_off(off).map(|n| n.text)
    }

    pub(super) fn name_at_off(&self, off: u32) -> Result<Name, String> {
        match self.offset(off)? {
            Some(p) => self.name(p),
            None => Ok(Name::default()),
        }
    }

    /// A `Name` field (one pointer); empty when nil.
    pub(super) fn name_ptr(&self, addr: u64) -> Result<String, String> {
        match self.word(addr)? {
            0 => Ok(String::new()),
            p => Ok(self.name(self.in_types(p)?)?.text),
        }
    }

    /// A `[]T` header: data pointer and length, the length bounded.
    pub(super) fn slice(&self, addr: u64) -> Result<(u64, u64), String> {
        let (ptr, len) = (self.word(addr)?, self.word(addr + 8)?);
        if len > MAX_COUNT {
            return Err(format!("a slice of {len} elements at {addr:#x}"));
        }
        Ok((ptr, len))
    }

    /// The bytes of the kind-specific part of a descriptor: where its uncommon section starts.
    pub(super) fn kind_size(&self, k: u8) -> u64 {
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

    pub(super) fn descriptor(&self, at: u64) -> Result<Raw, String> {
        let size = self.word(at)?;
        let tflag = self.u8(at + 20)?;
        let align = u64::from(self.u8(at + 21)?);
        let k = self.u8(at + 23)? & kind::MASK;
        let str = self.type_string(at, tflag)?;
        let ptr_to_this = self.offset(self.u32(at + 44)?)?;
        let shape = self.shape(at, k, tflag, &str)?;
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
            (raw.pkg_path, raw.methods) = self.uncommon(at + self.kind_size(k))?;
        }
        Ok(raw)
    }

    /// The name string of the descriptor at `at`, without the `*` the linker may put first.
    fn type_string(&self, at: u64, tflag: u8) -> Result<String, String> {
        let str = match self.offset(self.u32(at + 40)?)? {
            Some(p) => self.name(p)?.text,
            None => return Err(format!("the type at {at:#x} has no name string")),
        };
        if tflag & TFLAG_EXTRA_STAR == 0 {
            return Ok(str);
        }
        Ok(str
            .strip_prefix('*')
            .ok_or_else(|| format!("the type at {at:#x} lacks its name's extra '*'"))?
            .to_owned())
    }

    /// The kind-specific part of the descriptor at `at` (of kind `k`, named `str`).
    fn shape(&self, at: u64, k: u8, tflag: u8, str: &str) -> Result<Shape, String> {
        let body = at + TYPE_SIZE;
        let elem = |off: u64| {
            self.type_ptr(body + off)?
                .ok_or_else(|| format!("the type {str} at {at:#x} has no element type"))
        };
        Ok(match k {
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
            kind::MAP => {
                // Go 1.24+'s Swiss map type: `Group *Type` follows `Key` and `Elem`.
                let group = match self.section.map_type_size > TYPE_SIZE + 40 {
                    true => self.type_ptr(body + 16)?,
                    false => None,
                };
                Shape::Map(elem(0)?, elem(8)?, group)
            }
            kind::STRUCT => self.struct_shape(body)?,
            kind::INTERFACE => self.interface_shape(body)?,
            kind::FUNC => self.func_shape(at, tflag)?,
            other => return Err(format!("the type at {at:#x} has kind {other}")),
        })
    }

    /// A struct's package path and fields, from its descriptor's `body`.
    fn struct_shape(&self, body: u64) -> Result<Shape, String> {
        let (pkg_path, fields) = self.pkg_path_and_list(body, 24, |f| {
            let name = self.name(self.in_types(self.word(f)?)?)?;
            // Checked here, so that a type whose name cannot be written is left out
            // with everything made of it.
            if let Some(tag) = &name.tag {
                go_quote(tag)?;
            }
            let ty = self
                .type_ptr(f + 8)?
                .ok_or("a struct field without a type")?;
            Ok(RawField {
                ty,
                offset: self.word(f + 16)?,
                name,
            })
        })?;
        Ok(Shape::Struct(pkg_path, fields))
    }

    /// An interface's package path and methods, from its descriptor's `body`.
    fn interface_shape(&self, body: u64) -> Result<Shape, String> {
        let (pkg_path, methods) = self.pkg_path_and_list(body, 8, |m| {
            let name = self.name_at_off(self.u32(m)?)?;
            let ty = self
                .offset(self.u32(m + 4)?)?
                .ok_or("an interface method without a type")?;
            Ok((name, ty))
        })?;
        Ok(Shape::Interface(pkg_path, methods))
    }

    /// The package path a struct's or interface's `body` starts with, then each entry of the
    /// slice of `size`-byte entries after it, read by `entry`.
    fn pkg_path_and_list<T>(
        &self,
        body: u64,
        size: u64,
        entry: impl Fn(u64) -> Result<T, String>,
    ) -> Result<(String, Vec<T>), String> {
        let pkg_path = self.name_ptr(body)?;
        let (ptr, len) = self.slice(body + 8)?;
        let mut list = Vec::with_capacity(len as usize);
        for i in 0..len {
            list.push(entry(element(ptr, size, i)?)?);
        }
        Ok((pkg_path, list))
    }

    /// A func type's parameter and result types, which follow its descriptor (and its
    /// uncommon section, when it has one).
    fn func_shape(&self, at: u64, tflag: u8) -> Result<Shape, String> {
        let body = at + TYPE_SIZE;
        let ins = u64::from(self.u16(body)?);
        let out_count = self.u16(body + 2)?;
        let outs = u64::from(out_count & 0x7fff);
        let mut p = at + self.kind_size(kind::FUNC);
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
        Ok(Shape::Func {
            ins: list(ins)?,
            outs: list(outs)?,
            variadic: out_count & 0x8000 != 0,
        })
    }

    /// The uncommon section at `u`: the type's package path and its methods.
    fn uncommon(&self, u: u64) -> Result<(String, Vec<RawMethod>), String> {
        let pkg_path = self.name_off(self.u32(u)?)?;
        let count = u64::from(self.u16(u + 4)?);
        let moff = u64::from(self.u32(u + 8)?);
        let mut methods = Vec::new();
        for i in 0..count {
            let m = u + moff + METHOD_SIZE * i;
            methods.push(RawMethod {
                name: self.name_off(self.u32(m)?)?,
                mtyp: self.offset(self.u32(m + 4)?)?,
                ifn: self.text_off(self.u32(m + 8)?),
                tfn: self.text_off(self.u32(m + 12)?),
            });
        }
        Ok((pkg_path, methods))
    }
}

/// The address of element `i` of an array of `size`-byte elements at `base` (which the file
/// gives, so it may be anything).
pub(super) fn element(base: u64, size: u64, i: u64) -> Result<u64, String> {
    base.checked_add(size * i)
        .ok_or_else(|| format!("an array at {base:#x} runs past the address space"))
}

impl Raw {
    /// The descriptors this one is made of, for the walk and for strictness.
    pub(super) fn parts(&self) -> Vec<u64> {
        let mut out = Vec::new();
        match &self.shape {
            Shape::Basic(_) => {}
            Shape::Pointer(e) | Shape::Slice(e) | Shape::Array(e, _) | Shape::Chan(e, _) => {
                out.push(*e)
            }
            Shape::Map(k, v, _) => out.extend([*k, *v]),
            Shape::Struct(_, fields) => out.extend(fields.iter().map(|f| f.ty)),
            Shape::Interface(_, methods) => out.extend(methods.iter().map(|m| m.1)),
            Shape::Func { ins, outs, .. } => out.extend(ins.iter().chain(outs)),
        }
        out
    }
}
