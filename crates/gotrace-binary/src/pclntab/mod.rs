//! `.gopclntab`: Go's own function table, present even in stripped binaries.
//!
//! The layout follows Go's `src/debug/gosym/pclntab.go` and the linker's `pcln.go`. A header of
//! magic, two zero bytes, the instruction quantum and the pointer size, then pointer-sized words:
//!
//! | magic        | Go        | header words                                                        |
//! |--------------|-----------|---------------------------------------------------------------------|
//! | `0xFFFFFFFB` | 1.2–1.15  | nfunc; the function table follows at once                           |
//! | `0xFFFFFFFA` | 1.16–1.17 | nfunc, nfile, funcname, cu, file, pc, func table offsets            |
//! | `0xFFFFFFF0` | 1.18–1.19 | nfunc, nfile, text start, funcname, cu, file, pc, func table offsets |
//! | `0xFFFFFFF1` | 1.20+     | as 1.18; from 1.26 the text start word is always 0                   |
//!
//! The function table holds `nfunc` pairs (entry, offset of the function's `_func` record) and
//! one more entry: the end of the last function. Before 1.18 entries are absolute addresses in
//! pointer-sized words; from 1.18 they are 32-bit offsets from the text start, which
//! `moduledata.rs` finds where the runtime does.
//!
//! Every read is bounds-checked: a corrupt table gives `BinaryError::Malformed`, never a panic.

mod decode;
mod reader;
pub(crate) mod record;
mod symbolize;

use crate::elf::ElfImage;
use crate::moduledata::{self, ModuleData, Words};
use crate::{Arch, BinaryError, Function, VirtAddr};
use decode::{decode_functions, decode_traits, Layout, TEXT_START_WORD};
pub(crate) use reader::{abbreviate_generic, elf_name, malformed, Reader};
use std::collections::HashSet;
pub use symbolize::{SourceFrame, Symbolizer};

/// Where the linker puts the table: PIE builds move it among the data that is relocated.
pub(crate) const SECTION_NAMES: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

const SECTION: &str = ".gopclntab";

/// Table generations. Go 1.20 changed only fields of the `_func` record that are not read here,
/// so it shares 1.18's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    Go12,
    Go116,
    Go118,
}

pub struct Pclntab<'a> {
    functions: Vec<Function>,
    /// Each function's `args`: the bytes of its argument frame — stack-assigned arguments and
    /// results, plus the spill slots of register-assigned arguments (ABIInternal).
    arg_sizes: Vec<(VirtAddr, u32)>,
    /// `funcnametab` (Go 1.16+): NUL-terminated names of every function with code and of every
    /// function the inline trees refer to. Before 1.16 names are scattered through the table.
    names: Option<&'a [u8]>,
    /// Each function's `funcID` and `flag`, by entry address (Go 1.16+).
    traits: Vec<(VirtAddr, FuncTraits)>,
    /// The raw table, for readers of the `_func` records' pc-value tables and funcdata.
    raw: RawTable<'a>,
}

/// A Go 1.18+ table as the runtime sees it: where its parts start (`inline.rs` reads the
/// `_func` records' pc-value tables and funcdata through it).
#[derive(Clone, Copy)]
pub(crate) struct RawTable<'a> {
    pub data: &'a [u8],
    /// `0xFFFFFFF0` (Go 1.18–1.19) or `0xFFFFFFF1` (1.20+); other tables are not described.
    pub magic: u32,
    pub nfunc: u64,
    pub functab: u64,
    pub pctab: u64,
    pub names: Option<(u64, u64)>,
    /// Offsets of `cutab` (compilation unit → file numbers) and `filetab` (file names).
    pub files: (u64, u64),
}

/// What the runtime's `_func` record says about a function beyond its name and extent: the
/// `funcID` and `flag` bytes (`internal/abi/symtab.go`; `runtime/symtab.go` before 1.21).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuncTraits {
    /// Nonzero for the runtime's special functions; the numbering changes between releases.
    pub func_id: u8,
    pub flag: u8,
}

impl FuncTraits {
    /// `FuncFlagTopFrame`: the outermost frame of a stack (goexit, mstart, rt0_go).
    pub const TOP_FRAME: u8 = 1 << 0;
    /// `FuncFlagSPWrite`: writes SP with something other than a constant adjustment — a stack
    /// switch (systemstack, mcall, morestack, gogo, asmcgocall).
    pub const SP_WRITE: u8 = 1 << 1;
    /// `FuncFlagAsm`: hand-written assembly (set by the linker since Go 1.19).
    pub const ASM: u8 = 1 << 2;

    pub fn has(self, flag: u8) -> bool {
        self.flag & flag != 0
    }
}

impl<'a> Pclntab<'a> {
    /// Parses the table in `data` and decodes every function in it.
    ///
    /// `text_start` overrides the text address the header states (Go 1.18+): Go 1.26+ writes 0
    /// there, and in a PIE that word is the target of a dynamic relocation a linker may leave
    /// unwritten in the file. `locate` finds the true one in the runtime's module data.
    pub fn parse(
        data: &'a [u8],
        arch: Arch,
        text_start: Option<u64>,
    ) -> Result<Pclntab<'a>, BinaryError> {
        let r = Reader { data };
        let (version, quantum, ptr_size) = read_header(&r, arch)?;
        let word = |i: u64| r.word(8 + i * ptr_size, ptr_size);
        let layout = header_layout(version, ptr_size, text_start, word)?;
        let names = match layout.names {
            Some((start, end)) if end < start => {
                return Err(malformed(8, "name table ends before it starts"))
            }
            Some((start, end)) => Some(r.bytes(start, end - start, "name table")?),
            None => None,
        };
        let (functions, arg_sizes) = decode_functions(&r, version, quantum, ptr_size, &layout)?;
        let traits = match traits_offset(r.u32(0)?, ptr_size) {
            Some(at) => decode_traits(&r, &functions, ptr_size, &layout, version, at)?,
            None => Vec::new(),
        };
        Ok(Pclntab {
            functions,
            arg_sizes,
            names,
            traits,
            raw: RawTable {
                data,
                magic: r.u32(0)?,
                nfunc: layout.nfunc,
                functab: layout.functab,
                pctab: layout.pctab,
                names: layout.names,
                files: match version {
                    Version::Go118 => (word(4)?, word(5)?),
                    _ => (0, 0),
                },
            },
        })
    }

    pub(crate) fn raw(&self) -> RawTable<'a> {
        self.raw
    }

    /// Each function's `funcID` and `flag`, by entry address; empty before Go 1.16.
    pub fn traits(&self) -> &[(VirtAddr, FuncTraits)] {
        &self.traits
    }

    /// Every function in the table, in address order.
    pub fn functions(&self) -> Vec<Function> {
        self.functions.clone()
    }

    /// Each function's argument frame size, by entry address.
    pub fn arg_sizes(&self) -> &[(VirtAddr, u32)] {
        &self.arg_sizes
    }

    /// Names the table knows that have no code of their own: functions the compiler inlined
    /// into every caller. Empty for tables older than Go 1.16, which have no name table.
    pub fn names_without_code(&self, functions: &[Function]) -> Vec<String> {
        let Some(names) = self.names else {
            return Vec::new();
        };
        // The symbol table names differ from the function table's in two ways: it adds `.abi0`
        // to assembly functions, and Go 1.18–1.19 tables shorten generic names to `F[...]`.
        let with_code: HashSet<String> = functions
            .iter()
            .flat_map(|f| {
                let name = f.name.strip_suffix(".abi0").unwrap_or(&f.name);
                [name.to_owned(), abbreviate_generic(name)]
            })
            .collect();
        let mut out: Vec<String> = names
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(elf_name)
            .filter(|n| !with_code.contains(n))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The header's magic, checked padding, instruction quantum (checked against `arch`) and
/// pointer size.
fn read_header(r: &Reader<'_>, arch: Arch) -> Result<(Version, u8, u64), BinaryError> {
    let version = match r.u32(0)? {
        0xFFFF_FFFB => Version::Go12,
        0xFFFF_FFFA => Version::Go116,
        0xFFFF_FFF0 | 0xFFFF_FFF1 => Version::Go118,
        other => return Err(malformed(0, format!("unknown magic {other:#010x}"))),
    };
    if r.u8(4)? != 0 || r.u8(5)? != 0 {
        return Err(malformed(4, "header padding is not zero"));
    }
    let quantum = r.u8(6)?;
    let expected_quantum = match arch {
        Arch::Amd64 => 1,
        Arch::Arm64 => 4,
    };
    if quantum != expected_quantum {
        return Err(malformed(
            6,
            format!(
                "instruction quantum {quantum} does not fit {} (expected {expected_quantum})",
                arch.go_name()
            ),
        ));
    }
    let ptr_size = r.u8(7)?;
    if ptr_size != 8 && ptr_size != 4 {
        return Err(malformed(7, format!("pointer size {ptr_size}")));
    }
    Ok((version, quantum, u64::from(ptr_size)))
}

/// Where the table's parts are, from the header's words (`word(i)`, the i-th after the
/// pointer size); `text_start` overrides the header's (see [`Pclntab::parse`]).
fn header_layout(
    version: Version,
    ptr_size: u64,
    text_start: Option<u64>,
    word: impl Fn(u64) -> Result<u64, BinaryError>,
) -> Result<Layout, BinaryError> {
    Ok(match version {
        Version::Go12 => Layout {
            nfunc: word(0)?,
            text_start: 0,
            names: None,
            pctab: 0,
            functab: 8 + ptr_size,
            funcdata: 0,
        },
        Version::Go116 => Layout {
            nfunc: word(0)?,
            text_start: 0,
            names: Some((word(2)?, word(3)?)),
            pctab: word(5)?,
            functab: word(6)?,
            funcdata: word(6)?,
        },
        Version::Go118 => Layout {
            nfunc: word(0)?,
            text_start: match text_start {
                Some(t) => t,
                None => word(2)?,
            },
            names: Some((word(3)?, word(4)?)),
            pctab: word(6)?,
            functab: word(7)?,
            funcdata: word(7)?,
        },
    })
}

/// Offset in a function's record of its `funcID` and `flag` bytes, by the table's magic:
/// they follow the record's entry and eight u32 fields; Go 1.20 (magic 0xFFFFFFF1) added
/// startLine before them. `None` before Go 1.16.
fn traits_offset(magic: u32, ptr_size: u64) -> Option<u64> {
    match magic {
        0xFFFF_FFFA => Some(ptr_size + 32),
        0xFFFF_FFF0 => Some(36),
        0xFFFF_FFF1 => Some(40),
        _ => None,
    }
}

/// The words of a Go 1.18+ header (pointer size 8) the runtime's module data is checked
/// against; `None` for other tables.
pub(crate) struct HeaderWords {
    pub magic: u32,
    pub nfunc: u64,
    /// Offsets from the header of `funcnametab`, `pctab` and the function table.
    pub funcname: u64,
    pub pctab: u64,
    pub pcln: u64,
}

impl HeaderWords {
    fn read(data: &[u8]) -> Option<HeaderWords> {
        let r = Reader { data };
        if !matches!(r.u32(0).ok()?, 0xFFFF_FFF0 | 0xFFFF_FFF1) || r.u8(7).ok()? != 8 {
            return None;
        }
        let word = |i: u64| r.word(8 + 8 * i, 8).ok();
        Some(HeaderWords {
            magic: r.u32(0).ok()?,
            nfunc: word(0)?,
            funcname: word(3)?,
            pctab: word(6)?,
            pcln: word(7)?,
        })
    }
}

/// A function table found in a binary, with the text range the runtime's module data gives
/// (Go 1.18+, when the module data was found).
pub(crate) struct Located<'a> {
    pub table: Pclntab<'a>,
    pub module: Option<ModuleData>,
}

/// Sections an external linker may merge the table into when it has no section of its own
/// (cgo binaries built as PIE).
const HOST_SECTIONS: [&str; 2] = [".data.rel.ro", ".rodata"];

/// Finds the function table: its own section, or (stripped cgo PIE) inside a merged section by
/// its header (magic, two zero bytes, a quantum, a pointer size), the first candidate that
/// parses with at least one function.
pub(crate) fn locate(elf: &ElfImage) -> Result<Option<Located<'_>>, BinaryError> {
    let words = Words::new(elf);
    for name in SECTION_NAMES {
        if let (Some(data), Some(at)) = (
            elf.section_data_by_names(&[name])?,
            elf.section_address(name),
        ) {
            return open_at(elf, &words, data, at).map(Some);
        }
    }
    let mut no_text_start = None;
    for name in HOST_SECTIONS {
        let (Some(data), Some(base)) = (
            elf.section_data_by_names(&[name])?,
            elf.section_address(name),
        ) else {
            continue;
        };
        for at in (0..data.len().saturating_sub(8)).step_by(4) {
            let header = &data[at..at + 8];
            let magic_ok =
                matches!(header[0], 0xf1 | 0xf0 | 0xfa | 0xfb) && header[1..4] == [0xff; 3];
            if !magic_ok || header[4..6] != [0, 0] || !matches!(header[6], 1 | 4) || header[7] != 8
            {
                continue;
            }
            match open_at(elf, &words, &data[at..], base + at as u64) {
                Ok(found) if !found.table.functions.is_empty() => return Ok(Some(found)),
                Err(e @ BinaryError::NoTextStart) => no_text_start = Some(e),
                // Bytes that only look like a header.
                Ok(_) | Err(_) => {}
            }
        }
    }
    no_text_start.map_or(Ok(None), Err)
}

/// Parses the table whose header is `data[0..]`, at address `at`. Go 1.18+ entries are offsets
/// from the text start: the runtime's module data gives it; the header's own word (Go
/// 1.18–1.25, relocated in a PIE) must then agree, and stands in when no module data is found;
/// Go 1.26+ writes 0 there, and then only `.symtab`'s `runtime.text` is left.
fn open_at<'a>(
    elf: &ElfImage,
    words: &Words<'_>,
    data: &'a [u8],
    at: u64,
) -> Result<Located<'a>, BinaryError> {
    let Some(header) = HeaderWords::read(data) else {
        // Older tables hold absolute addresses: there is no text start to find.
        return Ok(Located {
            table: Pclntab::parse(data, elf.arch(), None)?,
            module: None,
        });
    };
    let module = moduledata::find(words, at, &header);
    let stated = words.at(at + TEXT_START_WORD).filter(|&t| t != 0);
    let text = match (module, stated) {
        (Some(m), Some(s)) if s != m.text => {
            return Err(malformed(
                TEXT_START_WORD,
                format!(
                "the header says the code starts at {s:#x}, the runtime's module data says {:#x}",
                m.text
            ),
            ))
        }
        (Some(m), _) => m.text,
        (None, Some(s)) => s,
        (None, None) => elf
            .symbol_address("runtime.text")
            .ok_or(BinaryError::NoTextStart)?,
    };
    let table = Pclntab::parse(data, elf.arch(), Some(text))?;
    if let (Some(m), Some(first), Some(last)) =
        (module, table.functions.first(), table.functions.last())
    {
        if first.entry.0 < m.text || last.end.0 > m.etext {
            return Err(malformed(
                TEXT_START_WORD,
                format!(
                    "functions from {} to {} lie outside the module data's code [{:#x}, {:#x})",
                    first.entry, last.end, m.text, m.etext
                ),
            ));
        }
    }
    Ok(Located { table, module })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made table in the pre-1.18 layouts (no toolchain that old is installed): two
    /// functions at 0x1000 and 0x1040, the first with 0x30 bytes of code and padding after it,
    /// plus a name only an inline tree would use.
    fn old_table(magic: u32) -> Vec<u8> {
        let go12 = magic == 0xFFFF_FFFB;
        let names: &[u8] = b"main.f\0main.g\0main.inlined\0";
        // Offset 0 means "no table", so the pc tables open with a spare byte, as the linker's
        // do; then: value +1 for 0x30 bytes, end.
        let pcsp: &[u8] = &[0x00, 0x02, 0x30, 0x00];
        let functab_len = 5 * 8;
        let record_len = 8 + 4 * 4;
        // Go 1.2: header, function table, records, then the rest; offsets count from the
        // table's start. 1.16: header words, names, pc tables, function table, records;
        // offsets count from their own sub-table.
        let (functab_at, names_at, pcsp_at) = if go12 {
            let names_at = 16 + functab_len + 2 * record_len;
            (16, names_at, names_at + names.len())
        } else {
            let names_at = 8 + 7 * 8;
            let pcsp_at = names_at + names.len();
            (pcsp_at + pcsp.len(), names_at, pcsp_at)
        };
        let records_at = functab_at + functab_len;
        let (name_base, pc_base, func_base) = if go12 {
            (0, 0, 0)
        } else {
            (names_at, pcsp_at, functab_at)
        };
        let mut t = vec![0u8; 256];
        let mut put = |at: usize, bytes: &[u8]| t[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &magic.to_le_bytes());
        put(4, &[0, 0, 1, 8]);
        if go12 {
            put(8, &2u64.to_le_bytes());
        } else {
            let words = [2, 0, names_at, pcsp_at, pcsp_at, pcsp_at, functab_at];
            for (i, word) in words.into_iter().enumerate() {
                put(8 + 8 * i, &(word as u64).to_le_bytes());
            }
        }
        put(names_at, names);
        put(pcsp_at, pcsp);
        let functions = [(0x1000u64, 0, pcsp_at + 1 - pc_base), (0x1040, 7, 0)];
        for (i, (entry, name_at, pcsp)) in functions.into_iter().enumerate() {
            let record = records_at + i * record_len;
            put(functab_at + 16 * i, &entry.to_le_bytes());
            put(
                functab_at + 16 * i + 8,
                &((record - func_base) as u64).to_le_bytes(),
            );
            put(record, &entry.to_le_bytes());
            put(
                record + 8,
                &((names_at - name_base + name_at) as u32).to_le_bytes(),
            );
            put(record + 20, &(pcsp as u32).to_le_bytes());
        }
        put(functab_at + 32, &0x1050u64.to_le_bytes());
        t
    }

    #[test]
    fn go116_and_go12_layouts() {
        for magic in [0xFFFF_FFFA, 0xFFFF_FFFB] {
            let data = old_table(magic);
            let table = Pclntab::parse(&data, Arch::Amd64, None).unwrap();
            let functions = table.functions();
            let got: Vec<(&str, u64, u64)> = functions
                .iter()
                .map(|f| (f.name.as_str(), f.entry.0, f.end.0))
                .collect();
            // main.f ends where its pc-value table does; main.g (no table) has no code.
            assert_eq!(
                got,
                [("main.f", 0x1000, 0x1030), ("main.g", 0x1040, 0x1040)],
                "{magic:#x}"
            );
            let without_code = table.names_without_code(&functions);
            let expected: &[&str] = if magic == 0xFFFF_FFFA {
                &["main.inlined"]
            } else {
                &[] // no name table before 1.16
            };
            assert_eq!(without_code, expected, "{magic:#x}");
        }
    }

    #[test]
    fn unsorted_table_is_malformed() {
        let mut data = old_table(0xFFFF_FFFA);
        let second_entry = 8 + 7 * 8 + 27 + 4 + 16; // header, names, pc tables, first pair
        data[second_entry..second_entry + 8].copy_from_slice(&0x800u64.to_le_bytes());
        let err = Pclntab::parse(&data, Arch::Amd64, None).err();
        assert!(
            matches!(err, Some(BinaryError::Malformed { ref reason, .. }) if reason.contains("sorted")),
            "{err:?}"
        );
    }
}
