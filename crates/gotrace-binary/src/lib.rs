//! Reads a Go ELF binary: its functions (from `.symtab`, or `.gopclntab` when stripped), its
//! build info, function signatures and types from DWARF, where each argument and result lives
//! under Go's register ABI, and the instruction addresses a tracer probes.
//!
//! Pure: it maps the file and never talks to the kernel, so all of it is testable on
//! recorded binaries without root.

pub mod abi;
mod addr;
pub mod buildinfo;
pub mod dwarf;
mod elf;
mod error;
pub mod pclntab;
pub mod sites;
mod suggest;
pub mod types;

pub use addr::{FileOffset, VirtAddr};
pub use buildinfo::BuildInfo;
pub use elf::Arch;
pub use error::BinaryError;
pub use sites::{EntrySite, ProbeSites};

use std::path::{Path, PathBuf};

/// Refuses directories, FIFOs, sockets and devices: only a regular file can be a program.
fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<(), BinaryError> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    };
    Err(BinaryError::NotAFile {
        path: path.to_owned(),
        kind,
    })
}

/// A function with machine code of its own.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Function {
    pub name: String,
    pub entry: VirtAddr,
    /// One past the last byte of the function (padding excluded where the table says so).
    pub end: VirtAddr,
}

impl Function {
    pub fn size(&self) -> u64 {
        self.end.0 - self.entry.0
    }
}

/// Where a function table came from: stripped binaries only have pclntab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionSource {
    Symtab,
    Pclntab,
}

/// An opened Go binary. Cheap lookups; DWARF is read lazily, on the first signature asked for.
pub struct GoBinary {
    path: PathBuf,
    elf: elf::ElfImage,
    functions: Vec<Function>,
    function_source: FunctionSource,
    inlined_names: Vec<String>,
    /// pclntab's argument frame size of each function, by entry.
    arg_sizes: std::collections::HashMap<VirtAddr, u32>,
    build_info: Option<BuildInfo>,
    dwarf: std::sync::OnceLock<Result<Option<dwarf::DwarfInfo>, BinaryError>>,
}

impl GoBinary {
    /// Opens and indexes `path`, mapping it rather than reading it whole. Fails if it is not a
    /// regular file (checked before opening it: a FIFO or a device would block or never end),
    /// not an ELF file or not a Go program.
    pub fn open(path: &Path) -> Result<GoBinary, BinaryError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| BinaryError::Io {
            path: path.to_owned(),
            source,
        };
        check_regular(path, &std::fs::metadata(path).map_err(io)?)?;
        // Non-blocking, so that a FIFO swapped in since the check cannot hang the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        check_regular(path, &meta)?;
        if meta.len() == 0 {
            return Err(BinaryError::NotElf {
                path: path.to_owned(),
                reason: "the file is empty".into(),
            });
        }
        // SAFETY: the mapping is read-only and private to this process. Executables are not
        // normally rewritten in place; if one is, the parsers see a mix of old and new bytes,
        // which they handle like any untrusted input (every access is bounds-checked).
        let map = unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) }.map_err(io)?;
        Self::from_image(path, elf::ImageBytes::Mapped(map))
    }

    /// Indexes an ELF image already in memory; `path` is only used in messages.
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<GoBinary, BinaryError> {
        Self::from_image(path, elf::ImageBytes::Owned(data))
    }

    fn from_image(path: &Path, data: elf::ImageBytes) -> Result<GoBinary, BinaryError> {
        let elf = elf::ElfImage::parse(path, data)?;
        let table = match elf.section_data_by_names(&pclntab::SECTION_NAMES)? {
            Some(bytes) => Some(pclntab::Pclntab::parse(
                bytes,
                elf.arch(),
                pclntab::relocated_text_start(&elf, None),
            )?),
            None => pclntab::find_in_data(&elf)?,
        };
        let build_info = match elf.section_data_by_names(&[".go.buildinfo"])? {
            Some(bytes) => buildinfo::parse(bytes, &elf).ok(),
            None => None,
        };
        if table.is_none() && build_info.is_none() {
            return Err(BinaryError::NotGo {
                path: path.to_owned(),
            });
        }
        let (mut functions, function_source) = match elf.symtab_functions() {
            Some(fs) if !fs.is_empty() => (fs, FunctionSource::Symtab),
            _ => (
                table.as_ref().map(|t| t.functions()).unwrap_or_default(),
                FunctionSource::Pclntab,
            ),
        };
        functions.sort_by(|a, b| a.entry.cmp(&b.entry).then_with(|| a.name.cmp(&b.name)));
        functions.dedup_by(|a, b| a.entry == b.entry && a.name == b.name);
        let inlined_names = table
            .as_ref()
            .map(|t| t.names_without_code(&functions))
            .unwrap_or_default();
        let arg_sizes = table
            .map(|t| t.arg_sizes().iter().copied().collect())
            .unwrap_or_default();
        Ok(GoBinary {
            path: path.to_owned(),
            elf,
            functions,
            function_source,
            inlined_names,
            arg_sizes,
            build_info,
            dwarf: std::sync::OnceLock::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn arch(&self) -> Arch {
        self.elf.arch()
    }

    /// Position-independent (ET_DYN): runtime addresses differ from file addresses by a bias.
    pub fn is_pie(&self) -> bool {
        self.elf.is_pie()
    }

    pub fn build_info(&self) -> Option<&BuildInfo> {
        self.build_info.as_ref()
    }

    /// Every function with machine code, sorted by entry address.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    pub fn function_source(&self) -> FunctionSource {
        self.function_source
    }

    /// Looks a function up by its full Go name (`main.Fibonacci`, `main.(*T).M`).
    pub fn function(&self, name: &str) -> Result<&Function, BinaryError> {
        if let Some(f) = self.functions.iter().find(|f| f.name == name) {
            return Ok(f);
        }
        if self.inlined_names.iter().any(|n| n == name) {
            return Err(BinaryError::Inlined {
                name: name.to_owned(),
            });
        }
        let names = self.functions.iter().map(|f| f.name.as_str());
        Err(BinaryError::NoSuchFunction {
            name: name.to_owned(),
            suggestions: suggest::closest(name, names, 3),
        })
    }

    /// The function whose code contains `addr`.
    pub fn function_at(&self, addr: VirtAddr) -> Option<&Function> {
        let i = self.functions.partition_point(|f| f.entry <= addr);
        let f = self.functions.get(i.checked_sub(1)?)?;
        (addr < f.end).then_some(f)
    }

    /// The function's machine code as it is in the file.
    pub fn code(&self, function: &Function) -> Result<&[u8], BinaryError> {
        self.elf.bytes_at(function.entry, function.size())
    }

    /// `len` bytes at `addr` as they are in the file.
    pub fn bytes_at(&self, addr: VirtAddr, len: u64) -> Result<&[u8], BinaryError> {
        self.elf.bytes_at(addr, len)
    }

    /// The file offset the kernel's uprobe API wants for `addr`.
    pub fn file_offset(&self, addr: VirtAddr) -> Result<FileOffset, BinaryError> {
        self.elf.file_offset(addr)
    }

    /// Entry, return and deferreturn sites of a function, from a linear decode of its code.
    pub fn probe_sites(&self, function: &Function) -> Result<ProbeSites, BinaryError> {
        let code = self.code(function)?;
        sites::find(self.arch(), function, code, |target| {
            self.function_at(target).map(|f| f.name.as_str())
        })
    }

    /// The function's argument frame size from pclntab (see [`abi::arg_width`]).
    pub fn arg_size(&self, function: &Function) -> Option<u64> {
        self.arg_sizes.get(&function.entry).map(|&n| u64::from(n))
    }

    /// DWARF, read on first use; `None` when the binary was built or stripped without it.
    pub fn dwarf(&self) -> Result<Option<&dwarf::DwarfInfo>, BinaryError> {
        let loaded = self.dwarf.get_or_init(|| dwarf::DwarfInfo::load(&self.elf));
        match loaded {
            Ok(d) => Ok(d.as_ref()),
            Err(e) => Err(BinaryError::Dwarf(
                e.to_string().trim_start_matches("DWARF: ").to_owned(),
            )),
        }
    }

    /// Runtime type descriptor address (link-time) → DWARF type: how an interface's dynamic
    /// type is named. Empty without DWARF.
    pub fn runtime_types(
        &self,
    ) -> Result<std::collections::HashMap<u64, types::TypeId>, BinaryError> {
        let Some(dwarf) = self.dwarf()? else {
            return Ok(Default::default());
        };
        // Go 1.20+ writes offsets from `runtime.types`; older releases, absolute addresses.
        let base = self.elf.symbol_address("runtime.types").unwrap_or(0);
        Ok(dwarf
            .runtime_type_values()
            .iter()
            .map(|&(value, ty)| (if value < base { base + value } else { value }, ty))
            .collect())
    }

    /// Offset of `goid` inside `runtime.g`: from DWARF when present, else by Go version.
    pub fn goid_offset(&self) -> Option<u64> {
        if let Ok(Some(d)) = self.dwarf() {
            if let Some(off) = d.member_offset("runtime.g", "goid") {
                return Some(off);
            }
        }
        let version = self.build_info.as_ref()?.go_version_minor()?;
        Some(match version {
            17..=22 => 152,
            23..=24 => 160,
            _ => 152,
        })
    }
}
