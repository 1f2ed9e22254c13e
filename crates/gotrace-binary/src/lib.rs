//! Reads a Go ELF binary: its functions (from `.symtab`, or `.gopclntab` when stripped), its
//! build info, function signatures and types from DWARF, where each argument and result lives
//! under Go's register ABI, and the instruction addresses a tracer probes.
//!
//! Pure: it maps the file and never talks to the kernel, so all of it is testable on
//! recorded binaries without root.

pub mod abi;
mod addr;
pub mod arginfo;
pub mod buildinfo;
pub mod debugfile;
pub mod dwarf;
mod elf;
mod error;
pub mod inline;
pub mod layout;
mod moduledata;
pub mod pclntab;
mod proof;
mod relink;
pub mod rtype;
pub mod sites;
mod spills;
mod suggest;
pub mod types;

pub use addr::{FileOffset, VirtAddr};
pub use buildinfo::BuildInfo;
pub use debugfile::{BuildIds, DebugSource};
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

/// Maps `path` read-only, refusing anything but a non-empty regular file (checked before
/// opening it: a FIFO or a device would block or never end).
fn map_file(path: &Path) -> Result<elf::ImageBytes, BinaryError> {
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
    // Shared, not private: the kernel installs the breakpoints of uprobes on a file into
    // every private mapping of it that may execute (another gotrace tracing the same
    // binary), and the instruction bytes read here would be its int3s.
    // SAFETY: the mapping is read-only. Executables are not normally rewritten in place;
    // if one is, the parsers see a mix of old and new bytes, which they handle like any
    // untrusted input (every access is bounds-checked).
    let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(io)?;
    Ok(elf::ImageBytes::Mapped(map))
}

/// Functions from a symbol table, or the function table's: linker markers dropped, sorted by
/// entry, duplicates removed.
fn own_functions(
    symtab: Option<Vec<Function>>,
    table: &[Function],
) -> (Vec<Function>, FunctionSource) {
    let (mut functions, function_source) = match symtab {
        Some(fs) if !fs.is_empty() => (fs, FunctionSource::Symtab),
        _ => (table.to_vec(), FunctionSource::Pclntab),
    };
    // Linker markers (`go:textfipsstart`, Go 1.24+) have table entries but no code (the
    // symbol table gives them one byte of padding): they are not functions.
    let markers: std::collections::HashSet<(VirtAddr, &str)> = table
        .iter()
        .filter(|f| f.size() == 0)
        .map(|f| (f.entry, f.name.as_str()))
        .collect();
    functions.retain(|f| f.size() > 0 && !markers.contains(&(f.entry, f.name.as_str())));
    functions.sort_by(|a, b| a.entry.cmp(&b.entry).then_with(|| a.name.cmp(&b.name)));
    functions.dedup_by(|a, b| a.entry == b.entry && a.name == b.name);
    (functions, function_source)
}

/// `FuncIDWrapper` (`internal/abi/symtab.go`; `runtime/symtab.go` before 1.21): the last value
/// of the runtime's `FuncID` list, which grew in Go 1.22 and 1.25. `None` for releases not
/// checked (a test reads every installed toolchain's source).
pub fn wrapper_func_id(go_minor: u32) -> Option<u8> {
    match go_minor {
        18..=21 => Some(21),
        22..=24 => Some(22),
        25..=27 => Some(23),
        _ => None,
    }
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
    /// Go's function table (`.gopclntab`), sorted by entry: the second source every probed
    /// function's start is checked against when the functions come from `.symtab`.
    table: Vec<Function>,
    /// `[text, etext)` as the runtime's module data gives it (Go 1.18+, when it was found).
    text_range: Option<(VirtAddr, VirtAddr)>,
    inlined_names: Vec<String>,
    /// pclntab's argument frame size of each function, by entry.
    arg_sizes: std::collections::HashMap<VirtAddr, u32>,
    /// pclntab's `funcID` and `flag` of each function, by entry.
    traits: std::collections::HashMap<VirtAddr, pclntab::FuncTraits>,
    build_info: Option<BuildInfo>,
    dwarf: std::sync::OnceLock<Result<Option<dwarf::DwarfInfo>, BinaryError>>,
    /// The runtime's `gofunc`, which funcdata offsets count from (Go 1.18+).
    gofunc: Option<u64>,
    /// The runtime's module data record (its address) when it was found.
    module_data: Option<u64>,
    /// Methods' signatures from the runtime type descriptors, read on first use.
    runtime_methods: std::sync::OnceLock<Result<rtype::RuntimeMethods, String>>,
    /// Every inlined body, read from the inline trees on first use.
    inline: std::sync::OnceLock<Result<inline::InlineIndex, BinaryError>>,
    /// Every function's argument metadata (`FUNCDATA_ArgInfo`), read on first use.
    arginfo: std::sync::OnceLock<Result<arginfo::ArgInfoIndex, BinaryError>>,
    /// Separate debug information of the same build, when attached.
    debug: Option<debugfile::DebugFile>,
}

impl GoBinary {
    /// Opens and indexes `path`, mapping it rather than reading it whole. Fails if it is not a
    /// regular file (checked before opening it: a FIFO or a device would block or never end),
    /// not an ELF file or not a Go program.
    pub fn open(path: &Path) -> Result<GoBinary, BinaryError> {
        Self::from_image(path, map_file(path)?)
    }

    /// Indexes an ELF image already in memory; `path` is only used in messages.
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<GoBinary, BinaryError> {
        Self::from_image(path, elf::ImageBytes::Owned(data))
    }

    fn from_image(path: &Path, data: elf::ImageBytes) -> Result<GoBinary, BinaryError> {
        let elf = elf::ElfImage::parse(path, data)?;
        let (table, module) = match pclntab::locate(&elf)? {
            Some(found) => (Some(found.table), found.module),
            None => (None, None),
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
        let table_functions: Vec<Function> =
            table.as_ref().map(|t| t.functions()).unwrap_or_default();
        let (functions, function_source) = own_functions(elf.symtab_functions(), &table_functions);
        let inlined_names = table
            .as_ref()
            .map(|t| t.names_without_code(&functions))
            .unwrap_or_default();
        let traits = table
            .as_ref()
            .map(|t| t.traits().iter().copied().collect())
            .unwrap_or_default();
        let text_range = module.map(|m| (VirtAddr(m.text), VirtAddr(m.etext)));
        let module_data = module.map(|m| m.at);
        let gofunc = module.and_then(|m| m.gofunc).or_else(|| {
            elf.symbol_address("go:func.*")
                .or_else(|| elf.symbol_address("go.func.*"))
        });
        let table_functions = table_functions
            .into_iter()
            .filter(|f| f.size() > 0)
            .collect();
        let arg_sizes = table
            .map(|t| t.arg_sizes().iter().copied().collect())
            .unwrap_or_default();
        Ok(GoBinary {
            path: path.to_owned(),
            elf,
            functions,
            function_source,
            table: table_functions,
            text_range,
            inlined_names,
            arg_sizes,
            traits,
            build_info,
            dwarf: std::sync::OnceLock::new(),
            gofunc,
            module_data,
            runtime_methods: std::sync::OnceLock::new(),
            inline: std::sync::OnceLock::new(),
            arginfo: std::sync::OnceLock::new(),
            debug: None,
        })
    }

    /// Takes DWARF (signatures, types, inlined-call locations) and, for a binary without a
    /// symbol table, the symbol table from the debug file at `path`, once its build ID is proven
    /// equal to this binary's (see [`debugfile`]). On error nothing changes.
    ///
    /// The debug file's symbol table then stands where the binary's own would: as the source of
    /// function names and ends, and as one of the two sources a probed function's start must be
    /// confirmed by (the other is still this binary's `.gopclntab`, so both must agree before
    /// anything is probed).
    pub fn attach_debug_file(&mut self, path: &Path) -> Result<(), BinaryError> {
        let debug = debugfile::DebugFile::open(path, &self.path, &self.elf, self.go_release())?;
        if self.function_source == FunctionSource::Pclntab {
            if let Some(symtab) = debug.elf.symtab_functions() {
                let table = pclntab::locate(&self.elf)?.map(|found| found.table);
                let all: Vec<Function> = table.as_ref().map(|t| t.functions()).unwrap_or_default();
                let (functions, source) = own_functions(Some(symtab), &all);
                self.inlined_names = table
                    .map(|t| t.names_without_code(&functions))
                    .unwrap_or_default();
                self.functions = functions;
                self.function_source = source;
            }
        }
        // Another link's data addresses are not this binary's.
        if self.gofunc.is_none() && debug.relinked.is_none() {
            self.gofunc = debug
                .elf
                .symbol_address("go:func.*")
                .or_else(|| debug.elf.symbol_address("go.func.*"));
        }
        self.dwarf = std::sync::OnceLock::new();
        self.debug = Some(debug);
        Ok(())
    }

    /// The Go build ID and GNU build-id in the binary's notes.
    pub fn build_ids(&self) -> BuildIds {
        BuildIds::read(&self.elf)
    }

    /// Where signatures come from: the binary's DWARF, a debug file, or nowhere.
    pub fn debug_source(&self) -> DebugSource {
        match &self.debug {
            Some(d) => DebugSource::DebugFile {
                path: d.path.clone(),
                matched: d.matched,
            },
            None if debugfile::has_dwarf(&self.elf) => DebugSource::Dwarf,
            None => DebugSource::None,
        }
    }

    /// The file DWARF is read from: the debug file when one is attached.
    fn dwarf_elf(&self) -> &elf::ElfImage {
        self.debug.as_ref().map_or(&self.elf, |d| &d.elf)
    }

    /// A symbol's address from `.symtab`, or from the debug file's when the binary has none
    /// and the debug file is of this very build (another link's data lies elsewhere).
    fn symbol_address(&self, name: &str) -> Option<u64> {
        self.elf.symbol_address(name).or_else(|| {
            let debug = self.debug.as_ref().filter(|d| d.relinked.is_none())?;
            debug.elf.symbol_address(name)
        })
    }

    /// The Go release (`1.minor`) and whether maps are Swiss tables, from the build info.
    fn go_release(&self) -> Option<(u32, bool)> {
        let info = self.build_info.as_ref()?;
        let minor = info.go_version_minor()?;
        let swiss_maps = !info
            .settings
            .iter()
            .any(|(k, v)| k == "GOEXPERIMENT" && v.contains("noswissmap"));
        Some((minor, swiss_maps))
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

    /// Go's function table as read from `.gopclntab` (entries from the runtime's text start),
    /// in address order, whatever [`GoBinary::functions`] comes from.
    pub fn table_functions(&self) -> &[Function] {
        &self.table
    }

    /// Where Go's code lies, `[text, etext)`, as the runtime's module data says.
    pub fn text_range(&self) -> Option<(VirtAddr, VirtAddr)> {
        self.text_range
    }

    /// Every inlined body in the binary, from `.gopclntab`'s inline trees (read on first use).
    pub fn inline_index(&self) -> Result<&inline::InlineIndex, BinaryError> {
        let loaded = self.inline.get_or_init(|| {
            let (Some(found), Some(gofunc)) = (pclntab::locate(&self.elf)?, self.gofunc) else {
                return Ok(inline::InlineIndex::default());
            };
            let entries: Vec<VirtAddr> = found.table.functions().iter().map(|f| f.entry).collect();
            let quantum = match self.arch() {
                Arch::Amd64 => 1,
                Arch::Arm64 => 4,
            };
            inline::index(found.table.raw(), &entries, quantum, |off, len| {
                self.elf
                    .bytes_at(VirtAddr(gofunc.checked_add(off)?), len)
                    .ok()
            })
        });
        match loaded {
            Ok(index) => Ok(index),
            Err(e) => Err(BinaryError::Malformed {
                section: ".gopclntab",
                offset: 0,
                reason: format!("inline tree: {e}"),
            }),
        }
    }

    /// Symbolizes program counters through `.gopclntab` (function, file, line, inlined calls):
    /// for call stacks. Fails when the binary has no Go 1.18+ table or no `gofunc`.
    pub fn symbolizer(&self) -> Result<pclntab::Symbolizer<'_>, BinaryError> {
        let no_table = || BinaryError::Malformed {
            section: ".gopclntab",
            offset: 0,
            reason: "no function table with inline trees: stacks cannot be symbolized".into(),
        };
        let found = pclntab::locate(&self.elf)?.ok_or_else(no_table)?;
        let gofunc = self.gofunc.ok_or_else(no_table)?;
        let quantum = match self.arch() {
            Arch::Amd64 => 1,
            Arch::Arm64 => 4,
        };
        pclntab::Symbolizer::new(
            found.table.raw(),
            found.table.functions(),
            quantum,
            &self.elf,
            gofunc,
            self.build_info
                .as_ref()
                .and_then(|b| b.go_version_minor())
                .and_then(wrapper_func_id),
        )
    }

    /// The function's arguments as Go's traceback metadata describes them (`FUNCDATA_ArgInfo`:
    /// words, sizes, aggregates; no types), with where each word is at entry where the
    /// function's stack-growth path proves it (see [`arginfo`]). Needs no debug information.
    /// `None` when the binary keeps no such metadata for the function (assembly, tables
    /// older than Go 1.18).
    pub fn untyped_args(
        &self,
        function: &Function,
    ) -> Result<Option<arginfo::UntypedArgs>, BinaryError> {
        let loaded = self.arginfo.get_or_init(|| {
            let (Some(found), Some(gofunc)) = (pclntab::locate(&self.elf)?, self.gofunc) else {
                return Ok(arginfo::ArgInfoIndex::default());
            };
            let entries: Vec<VirtAddr> = found.table.functions().iter().map(|f| f.entry).collect();
            arginfo::index(found.table.raw(), &entries, |off, len| {
                let at = VirtAddr(gofunc.checked_add(off)?);
                // The stream may end closer to the end of the image than its longest length.
                (1..=len).rev().find_map(|n| self.elf.bytes_at(at, n).ok())
            })
        });
        let index = match loaded {
            Ok(index) => index,
            Err(e) => {
                return Err(BinaryError::Malformed {
                    section: ".gopclntab",
                    offset: 0,
                    reason: format!("argument metadata: {e}"),
                })
            }
        };
        let Some(stream) = index.get(function.entry) else {
            return Ok(None);
        };
        let mut items = arginfo::parse(stream, function.entry)?;
        let assembly = self
            .traits(function)
            .is_some_and(|t| t.has(pclntab::FuncTraits::ASM));
        let evidence = match self.arch() {
            _ if assembly => Ok(arginfo::Evidence::Abi0),
            Arch::Amd64 => {
                let instructions = sites::decode_amd64(function, self.code(function)?)?;
                spills::amd64(function, &instructions, |a| {
                    self.function_at(a).map(|f| f.name.as_str())
                })
                .map(arginfo::Evidence::Growth)
                .map_err(arginfo::Unknown::Unrecognized)
            }
            Arch::Arm64 => Err(arginfo::Unknown::Architecture),
        };
        arginfo::locate(&mut items, evidence);
        Ok(Some(arginfo::UntypedArgs { items }))
    }

    /// For each of `pcs` (sites of `name` inlined, see [`GoBinary::inlined_sites`]), the
    /// inlined call's parameters and where DWARF puts each there; `None` where DWARF (or the
    /// binary's DWARF as a whole) describes no inlined call of `name`.
    pub fn inlined_params(
        &self,
        name: &str,
        pcs: &[VirtAddr],
    ) -> Result<Vec<Option<Vec<dwarf::InlinedParam>>>, BinaryError> {
        let Some(d) = self.dwarf()? else {
            return Ok(vec![None; pcs.len()]);
        };
        let pcs: Vec<u64> = pcs.iter().map(|p| p.0).collect();
        d.inlined_params(self.dwarf_elf(), name, &pcs)
    }

    /// What pclntab's record says about the function (assembly, stack switch, top frame);
    /// `None` when the table has no such record for it (Go before 1.16, or no table).
    pub fn traits(&self, function: &Function) -> Option<pclntab::FuncTraits> {
        self.traits.get(&function.entry).copied()
    }

    /// The function's argument frame size from pclntab (see [`abi::arg_width`]).
    pub fn arg_size(&self, function: &Function) -> Option<u64> {
        self.arg_sizes.get(&function.entry).map(|&n| u64::from(n))
    }

    /// DWARF, read on first use; `None` when the binary was built or stripped without it.
    pub fn dwarf(&self) -> Result<Option<&dwarf::DwarfInfo>, BinaryError> {
        let loaded = self
            .dwarf
            .get_or_init(|| dwarf::DwarfInfo::load(self.dwarf_elf()));
        match loaded {
            Ok(d) => Ok(d.as_ref()),
            Err(e) => Err(BinaryError::Dwarf(
                e.to_string().trim_start_matches("DWARF: ").to_owned(),
            )),
        }
    }

    /// Runtime type descriptor address (link-time) → type: how an interface's dynamic type is
    /// named and its value decoded. The types are DWARF's when there is DWARF, else those the
    /// runtime type descriptors give (the table of [`GoBinary::runtime_methods`]); empty when
    /// neither can be read.
    pub fn runtime_types(
        &self,
    ) -> Result<std::collections::HashMap<u64, types::TypeId>, BinaryError> {
        let Some(dwarf) = self.dwarf()? else {
            return Ok(self
                .runtime_methods()
                .map(|m| m.type_ids.clone())
                .unwrap_or_default());
        };
        if let Some(debug) = &self.debug {
            if let Some(relinked) = &debug.relinked {
                let values = dwarf.runtime_type_values();
                return Ok(relinked.runtime_types(&self.elf, &debug.elf, values));
            }
        }
        let base = self.symbol_address("runtime.types").unwrap_or(0);
        Ok(dwarf
            .runtime_type_values()
            .iter()
            .filter_map(|&(value, ty)| Some((dwarf::runtime_type_address(value, base)?, ty)))
            .collect())
    }

    /// The signature of every method the runtime type descriptors list with code, by the
    /// entry of that code (read on first use; see [`rtype`]). Needs no DWARF or symbols, only
    /// the runtime's module data and a known Go release (1.19–1.27).
    pub fn runtime_methods(&self) -> Result<&rtype::RuntimeMethods, BinaryError> {
        let loaded = self.runtime_methods.get_or_init(|| {
            let (Some(at), Some((text, _))) = (self.module_data, self.text_range) else {
                return Err("the runtime's module data was not found".to_owned());
            };
            let (minor, swiss_maps) = self
                .go_release()
                .ok_or("the Go version is not in the build info")?;
            let words = moduledata::Words::new(&self.elf);
            let section = rtype::section(&words, at, text.0, minor, swiss_maps)?;
            rtype::read(&self.elf, &words, &section, &self.table)
        });
        loaded
            .as_ref()
            .map_err(|e| BinaryError::RuntimeTypes(e.clone()))
    }

    /// The Go runtime's layout in this binary: the table's row for its Go release, with what
    /// its DWARF (when present and readable) describes taking precedence; the disagreements
    /// with the table are returned to be shown.
    pub fn runtime_layout(
        &self,
    ) -> Result<(layout::RuntimeLayout, Vec<layout::Check>), layout::LayoutError> {
        let minor = self.build_info.as_ref().and_then(|b| b.go_version_minor());
        let dwarf = self.dwarf().ok().flatten();
        layout::RuntimeLayout::for_binary(self.arch(), minor, dwarf)
    }
}
