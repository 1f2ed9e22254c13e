//! The ELF container: architecture, loadable segments (for file offsets), sections and the
//! symbol table.

use crate::{BinaryError, FileOffset, Function, VirtAddr};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};
use std::borrow::Cow;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn go_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    vaddr: u64,
    file_offset: u64,
    file_size: u64,
    writable: bool,
}

/// The file's bytes: mapped from disk (only the pages looked at are read), or owned (tests).
pub enum ImageBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for ImageBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ImageBytes::Mapped(map) => map,
            ImageBytes::Owned(bytes) => bytes,
        }
    }
}

/// The file's bytes plus what was indexed from its headers. `object::File` borrows the
/// bytes, so it is re-made on demand (that only parses headers).
pub struct ElfImage {
    data: ImageBytes,
    arch: Arch,
    pie: bool,
    segments: Vec<Segment>,
}

impl ElfImage {
    pub fn parse(path: &Path, data: ImageBytes) -> Result<ElfImage, BinaryError> {
        let not_elf = |reason: String| BinaryError::NotElf {
            path: path.to_owned(),
            reason,
        };
        if !data.starts_with(b"\x7fELF") {
            return Err(not_elf("no ELF magic".into()));
        }
        let file = object::File::parse(&*data).map_err(|e| not_elf(e.to_string()))?;
        let arch = match file.architecture() {
            object::Architecture::X86_64 => Arch::Amd64,
            object::Architecture::Aarch64 => Arch::Arm64,
            other => {
                return Err(BinaryError::UnsupportedArch {
                    path: path.to_owned(),
                    arch: format!("{other:?}"),
                })
            }
        };
        let pie = file.kind() == object::ObjectKind::Dynamic;
        let segments = file
            .segments()
            .map(|s| {
                let (file_offset, file_size) = s.file_range();
                let writable = matches!(
                    s.flags(),
                    object::SegmentFlags::Elf { p_flags, .. } if p_flags.contains(object::elf::PF_W)
                );
                Segment {
                    vaddr: s.address(),
                    file_offset,
                    file_size,
                    writable,
                }
            })
            .collect();
        Ok(ElfImage {
            data,
            arch,
            pie,
            segments,
        })
    }

    pub fn object(&self) -> object::File<'_> {
        // Parsed successfully once in `parse`; the bytes have not changed since.
        object::File::parse(&*self.data).expect("ELF headers were validated in ElfImage::parse")
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn is_pie(&self) -> bool {
        self.pie
    }

    pub fn is_little_endian(&self) -> bool {
        self.object().is_little_endian()
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    fn segment_for(&self, addr: VirtAddr, len: u64) -> Result<&Segment, BinaryError> {
        self.segments
            .iter()
            .find(|s| addr.0 >= s.vaddr && addr.0.saturating_add(len) <= s.vaddr + s.file_size)
            .ok_or(BinaryError::NotLoaded { addr })
    }

    /// `offset = vaddr − p_vaddr + p_offset` of the PT_LOAD segment holding `addr`.
    pub fn file_offset(&self, addr: VirtAddr) -> Result<FileOffset, BinaryError> {
        let s = self.segment_for(addr, 1)?;
        Ok(FileOffset(addr.0 - s.vaddr + s.file_offset))
    }

    pub fn bytes_at(&self, addr: VirtAddr, len: u64) -> Result<&[u8], BinaryError> {
        let off = self.file_offset(addr)?.0;
        self.segment_for(addr, len)?;
        self.data
            .get(off as usize..(off + len) as usize)
            .ok_or(BinaryError::NotLoaded { addr })
    }

    /// The file-backed bytes of every writable loadable segment, with their addresses: where
    /// the runtime's module data lives, whatever the section headers say (or if there are none).
    pub fn writable_segments(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.segments.iter().filter(|s| s.writable).filter_map(|s| {
            let start = usize::try_from(s.file_offset).ok()?;
            let end = start.checked_add(usize::try_from(s.file_size).ok()?)?;
            Some((s.vaddr, self.data.get(start..end)?))
        })
    }

    /// Every `R_*_RELATIVE` dynamic relocation as (address it writes, value it writes there),
    /// sorted by address: in a PIE, a pointer in the data is such a relocation's addend, and
    /// the word in the file may hold anything (often 0). Empty for a non-PIE.
    pub fn relative_relocations(&self) -> Vec<(u64, u64)> {
        let file = self.object();
        let Some(relocations) = file.dynamic_relocations() else {
            return Vec::new();
        };
        let mut out: Vec<(u64, u64)> = relocations
            .filter(|(_, rel)| {
                matches!(
                    rel.flags(),
                    object::RelocationFlags::Elf {
                        r_type: object::elf::R_X86_64_RELATIVE | object::elf::R_AARCH64_RELATIVE
                    }
                )
            })
            .map(|(addr, rel)| (addr, rel.addend() as u64))
            .collect();
        out.sort_unstable();
        out
    }

    /// The (decompressed) contents of the first section with one of these names.
    pub fn section_data_by_names(&self, names: &[&str]) -> Result<Option<&[u8]>, BinaryError> {
        let file = self.object();
        for name in names {
            if let Some(section) = file.section_by_name(name) {
                let (off, size) = section.file_range().unwrap_or((0, 0));
                let bytes = self.data.get(off as usize..(off + size) as usize).ok_or(
                    BinaryError::Malformed {
                        section: "section header",
                        offset: off,
                        reason: format!("{name} extends past the end of the file"),
                    },
                )?;
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    /// The virtual address of a section, if present.
    pub fn section_address(&self, name: &str) -> Option<u64> {
        self.object().section_by_name(name).map(|s| s.address())
    }

    /// Decompressed contents of a (possibly compressed) debug section.
    pub fn debug_section(&self, name: &str) -> Result<Cow<'_, [u8]>, BinaryError> {
        let file = self.object();
        let Some(section) = file.section_by_name(name) else {
            return Ok(Cow::Borrowed(&[]));
        };
        let compressed = section
            .compressed_data()
            .map_err(|e| BinaryError::Dwarf(format!("{name}: {e}")))?;
        // A corrupt header could claim gigabytes; deflate cannot expand more than ~1032×.
        let limit = (compressed.data.len() as u64)
            .saturating_mul(1032)
            .saturating_add(4096);
        if compressed.format != object::CompressionFormat::None
            && compressed.uncompressed_size > limit
        {
            return Err(BinaryError::Dwarf(format!(
                "{name}: claims {} bytes uncompressed from {} compressed",
                compressed.uncompressed_size,
                compressed.data.len()
            )));
        }
        compressed
            .decompress()
            .map_err(|e| BinaryError::Dwarf(format!("{name}: {e}")))
    }

    /// Address of a symbol by exact name, from `.symtab`.
    pub fn symbol_address(&self, name: &str) -> Option<u64> {
        self.object()
            .symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
    }

    /// Functions from `.symtab`; `None` when the binary is stripped.
    pub fn symtab_functions(&self) -> Option<Vec<Function>> {
        let file = self.object();
        let mut out = Vec::new();
        for sym in file.symbols() {
            if sym.kind() != SymbolKind::Text || sym.size() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            out.push(Function {
                name: name.to_owned(),
                entry: VirtAddr(sym.address()),
                end: VirtAddr(sym.address() + sym.size()),
            });
        }
        (!out.is_empty()).then_some(out)
    }
}
