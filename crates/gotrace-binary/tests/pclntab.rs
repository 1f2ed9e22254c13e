//! The pclntab reader against real binaries built from `fixtures/go/pcln_kinds` by every
//! installed Go toolchain, in every flavour: the symbol table of an unstripped build is the
//! reference the function table must agree with.

mod common;

use common::{all_toolchains, pcln_kinds};
use gotrace_binary::pclntab::Pclntab;
use gotrace_binary::VirtAddr;
use gotrace_binary::{Arch, BinaryError, Function, FunctionSource, GoBinary};
use gotrace_gobuild::{Flavour, Toolchain};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use std::collections::BTreeMap;
use std::path::Path;

/// The name the function table gives a symbol: without the `.abi0` the symbol table adds to
/// assembly functions, and (Go 1.18–1.19) with generic shapes shortened to `F[...]`.
fn table_name(name: &str, toolchain: &Toolchain) -> String {
    let name = name.strip_suffix(".abi0").unwrap_or(name);
    let shortens = matches!(toolchain.version.as_str(), "1.18" | "1.19");
    match (name.find('['), name.rfind(']')) {
        (Some(i), Some(j)) if shortens && j > i => {
            format!("{}[...]{}", &name[..i], &name[j + 1..])
        }
        _ => name.to_owned(),
    }
}

/// The symbol table's functions with code inside the Go text (`runtime.text`..`runtime.etext`),
/// read with `object` alone: a cgo binary also holds C code the Go table does not describe, and
/// Go 1.24+ markers (`go:textfipsstart`) are one-byte symbols over padding. Keyed by entry.
fn symtab_go_functions(path: &Path, toolchain: &Toolchain) -> BTreeMap<u64, (String, u64)> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let (text, etext) = symtab_text_range(&file, path);
    let out: BTreeMap<u64, (String, u64)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter(|s| s.address() >= text && s.address() < etext)
        .filter(|s| !is_padding(&file, s.address(), s.size()))
        .map(|s| {
            let name = table_name(s.name().unwrap(), toolchain);
            (s.address(), (name, s.address() + s.size()))
        })
        .collect();
    assert!(
        out.len() > 500,
        "{}: only {} functions",
        path.display(),
        out.len()
    );
    out
}

/// `runtime.text` and `runtime.etext` from the symbol table.
fn symtab_text_range(file: &object::File<'_>, path: &Path) -> (u64, u64) {
    let symbol = |name: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
            .unwrap_or_else(|| panic!("{name} missing from {}", path.display()))
    };
    (symbol("runtime.text"), symbol("runtime.etext"))
}

/// Whether the bytes at `addr` are the linker's padding between functions: int3 on amd64,
/// zero words (`udf #0`) on arm64.
fn is_padding(file: &object::File<'_>, addr: u64, size: u64) -> bool {
    let text = file.section_by_name(".text").unwrap();
    let bytes = text.data_range(addr, size).unwrap().unwrap();
    bytes.iter().all(|&b| b == 0xcc) || bytes.iter().all(|&b| b == 0)
}

/// Asserts two function lists are equal, showing only the entries that differ.
fn assert_same(
    got: &BTreeMap<u64, (String, u64)>,
    want: &BTreeMap<u64, (String, u64)>,
    what: &str,
) {
    assert!(
        want.len() > 500,
        "{what}: only {} functions expected",
        want.len()
    );
    let mut diffs = Vec::new();
    for (entry, w) in want {
        match got.get(entry) {
            Some(g) if g == w => {}
            g => diffs.push(format!("{entry:#x}: got {g:?}, want {w:?}")),
        }
    }
    for (entry, g) in got {
        if !want.contains_key(entry) {
            diffs.push(format!("{entry:#x}: got {g:?}, not in the symbol table"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} differ:\n{}",
        diffs.len(),
        want.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn by_entry(functions: &[Function], toolchain: &Toolchain) -> BTreeMap<u64, (String, u64)> {
    let out: BTreeMap<u64, (String, u64)> = functions
        .iter()
        .map(|f| (f.entry.0, (table_name(&f.name, toolchain), f.end.0)))
        .collect();
    assert_eq!(out.len(), functions.len(), "duplicate entries");
    out
}

/// Every pair (name, entry, end) of the function table equals the symbol table's, the two list
/// the same functions, and the runtime's module data gives the symbol table's text range, for
/// every toolchain, flavour and both architectures.
#[test]
fn pclntab_agrees_with_symtab_in_every_build() {
    for toolchain in all_toolchains() {
        let builds = [
            (Flavour::Plain, None, Arch::Amd64),
            (Flavour::Pie, None, Arch::Amd64),
            (Flavour::Cgo, None, Arch::Amd64),
            (Flavour::CgoPie, None, Arch::Amd64),
            (Flavour::Plain, Some("arm64"), Arch::Arm64),
        ];
        for (flavour, goarch, arch) in builds {
            let path = pcln_kinds(&toolchain, flavour, goarch);
            let what = format!("Go {} {flavour:?} {}", toolchain.version, arch.go_name());
            let expected = symtab_go_functions(&path, &toolchain);
            let bin = GoBinary::open(&path).unwrap();
            assert_eq!(bin.arch(), arch, "{what}");
            assert_eq!(bin.function_source(), FunctionSource::Symtab, "{what}");
            assert_same(
                &by_entry(bin.table_functions(), &toolchain),
                &expected,
                &what,
            );
            let data = std::fs::read(&path).unwrap();
            let file = object::File::parse(&*data).unwrap();
            let (text, etext) = symtab_text_range(&file, &path);
            assert_eq!(
                bin.text_range(),
                Some((VirtAddr(text), VirtAddr(etext))),
                "{what}: module data's text range"
            );
        }
    }
}

/// Without a symbol table (`-ldflags=-s -w`) the function table must give the same functions,
/// at the same addresses, as the unstripped build of the same toolchain and mode — on Go 1.26+
/// too, whose table header no longer holds the text start.
#[test]
fn stripped_builds_list_the_unstripped_builds_functions() {
    for toolchain in all_toolchains() {
        let pairs = [
            (Flavour::Stripped, Flavour::Plain, None, Arch::Amd64),
            (Flavour::PieStripped, Flavour::Pie, None, Arch::Amd64),
            (Flavour::CgoPieStripped, Flavour::CgoPie, None, Arch::Amd64),
            (
                Flavour::Stripped,
                Flavour::Plain,
                Some("arm64"),
                Arch::Arm64,
            ),
        ];
        for (stripped, unstripped, goarch, arch) in pairs {
            let what = format!("Go {} {stripped:?} {}", toolchain.version, arch.go_name());
            let reference = pcln_kinds(&toolchain, unstripped, goarch);
            let expected = symtab_go_functions(&reference, &toolchain);
            let bin = GoBinary::open(&pcln_kinds(&toolchain, stripped, goarch)).unwrap();
            assert_eq!(bin.arch(), arch, "{what}");
            assert_eq!(bin.function_source(), FunctionSource::Pclntab, "{what}");
            assert_same(&by_entry(bin.functions(), &toolchain), &expected, &what);
            let reference_bin = GoBinary::open(&reference).unwrap();
            assert_eq!(bin.text_range(), reference_bin.text_range(), "{what}");
            // Every main function's start is proven and its sites decode.
            let main: Vec<&Function> = bin
                .functions()
                .iter()
                .filter(|f| f.name.starts_with("main."))
                .collect();
            assert!(main.len() >= 4, "{what}: {} main functions", main.len());
            for f in main {
                bin.probe_sites(f)
                    .unwrap_or_else(|e| panic!("{what} {}: {e}", f.name));
            }
        }
    }
}

/// The file offset of a section header field of section `name`.
fn section_header_field(data: &[u8], name: &str, field: u64) -> usize {
    let file = object::File::parse(data).unwrap();
    let index = file.section_by_name(name).unwrap().index().0 as u64;
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap());
    let shentsize = u64::from(u16::from_le_bytes(data[0x3a..0x3c].try_into().unwrap()));
    (shoff + index * shentsize + field) as usize
}

/// Removes the symbol table from an ELF image in memory (its section becomes SHT_NULL).
fn drop_symtab(data: &mut [u8]) {
    let sh_type = section_header_field(data, ".symtab", 4);
    data[sh_type..sh_type + 4].fill(0);
}

/// The file offset of the function table's header.
fn pclntab_header_offset(data: &[u8]) -> usize {
    let file = object::File::parse(data).unwrap();
    let section = [".gopclntab", ".data.rel.ro.gopclntab"]
        .iter()
        .find_map(|n| file.section_by_name(n))
        .unwrap();
    section.file_range().unwrap().0 as usize
}

/// A PIE (Go 1.18–1.25 relocate the header's text-start word) and a plain binary whose symbol
/// table is gone and whose header holds no text address (as Go 1.26+ writes it, or as linkers
/// that leave dynamically relocated words unwritten): the text start comes from the runtime's
/// module data, or every address would be off by it.
#[test]
fn text_start_comes_from_the_module_data_when_the_header_has_none() {
    for toolchain in all_toolchains() {
        for flavour in [Flavour::Plain, Flavour::Pie] {
            let path = pcln_kinds(&toolchain, flavour, None);
            let expected = symtab_go_functions(&path, &toolchain);
            let mut data = std::fs::read(&path).unwrap();
            drop_symtab(&mut data);
            let text_start_at = pclntab_header_offset(&data) + 8 + 2 * 8;
            data[text_start_at..text_start_at + 8].fill(0);
            let bin = GoBinary::from_bytes(&path, data).unwrap();
            assert_eq!(bin.function_source(), FunctionSource::Pclntab);
            assert_same(
                &by_entry(bin.functions(), &toolchain),
                &expected,
                &format!("Go {} {flavour:?}", toolchain.version),
            );
        }
    }
}

/// A header whose text start disagrees with the runtime's module data (Go 1.18–1.25 write
/// both): the binary is refused rather than read with one of the two guessed.
#[test]
fn header_and_module_data_disagreeing_is_an_error() {
    for toolchain in all_toolchains() {
        let path = pcln_kinds(&toolchain, Flavour::Plain, None);
        let mut data = std::fs::read(&path).unwrap();
        let at = pclntab_header_offset(&data) + 8 + 2 * 8;
        let stated = u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
        if stated == 0 {
            continue; // Go 1.26+: the header has no text start to disagree
        }
        data[at..at + 8].copy_from_slice(&(stated + 0x20).to_le_bytes());
        let err = GoBinary::from_bytes(&path, data).err();
        let text = format!("{err:?}");
        assert!(
            matches!(err, Some(BinaryError::Malformed { .. }))
                && text.contains(&format!("{:#x}", stated + 0x20))
                && text.contains(&format!("{stated:#x}")),
            "Go {}: {text}",
            toolchain.version
        );
    }
}

/// Without the module data (the word that points at the table's header overwritten) a stripped
/// binary has one source for where Go's code starts: Go 1.26+ cannot be read at all, and on
/// older releases no function may be probed.
#[test]
fn stripped_binary_without_module_data_is_refused() {
    let mut checked = 0;
    for toolchain in all_toolchains() {
        let path = pcln_kinds(&toolchain, Flavour::Stripped, None);
        let mut data = std::fs::read(&path).unwrap();
        let header_at = {
            let file = object::File::parse(&*data).unwrap();
            file.section_by_name(".gopclntab").unwrap().address()
        };
        let pointers: Vec<usize> = (0..data.len() - 8)
            .step_by(8)
            .filter(|&i| data[i..i + 8] == header_at.to_le_bytes())
            .collect();
        assert!(!pointers.is_empty(), "Go {}", toolchain.version);
        for i in pointers {
            data[i..i + 8].fill(0);
        }
        match GoBinary::from_bytes(&path, data) {
            Err(BinaryError::NoTextStart) => {}
            Ok(bin) => {
                assert_eq!(bin.text_range(), None, "Go {}", toolchain.version);
                let main = bin.function("main.main").unwrap();
                let err = bin.probe_sites(main).unwrap_err().to_string();
                assert!(
                    err.contains("module data"),
                    "Go {}: {err}",
                    toolchain.version
                );
            }
            Err(e) => panic!("Go {}: {e}", toolchain.version),
        }
        checked += 1;
    }
    assert_eq!(checked, all_toolchains().len());
}

/// Moves a function symbol's st_value by `delta` bytes in a copy of a real binary: the program
/// would still run (it never reads `.symtab`), but a probe there lands mid-instruction.
fn shift_symbol(data: &mut [u8], name: &str, delta: i64) -> u64 {
    let (value_at, value) = {
        let file = object::File::parse(&*data).unwrap();
        let symbol = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
        let symtab = file.section_by_name(".symtab").unwrap();
        let at = symtab.file_range().unwrap().0 + symbol.index().0 as u64 * 24 + 8;
        (at as usize, symbol.address())
    };
    let shifted = value.wrapping_add_signed(delta);
    data[value_at..value_at + 8].copy_from_slice(&shifted.to_le_bytes());
    shifted
}

/// A `.symtab` entry off by 1 or 2 bytes (either way): that function is refused with a reason
/// naming both addresses; its neighbours are still probed.
#[test]
fn symtab_entry_shifted_by_one_or_two_bytes_is_refused() {
    for toolchain in all_toolchains() {
        for flavour in [Flavour::Plain, Flavour::Pie] {
            let path = pcln_kinds(&toolchain, flavour, None);
            let original = GoBinary::open(&path).unwrap();
            let true_entry = original.function("main.apply").unwrap().entry;
            for delta in [1, 2, -1, -2] {
                let what = format!("Go {} {flavour:?} {delta:+}", toolchain.version);
                let mut data = std::fs::read(&path).unwrap();
                let shifted = shift_symbol(&mut data, "main.apply", delta);
                let bin = GoBinary::from_bytes(&path, data).unwrap();
                let f = bin.function("main.apply").unwrap();
                assert_eq!(f.entry, VirtAddr(shifted), "{what}");
                let err = bin.probe_sites(f).unwrap_err();
                let text = err.to_string();
                assert!(
                    matches!(err, BinaryError::Unproven { .. })
                        && text.contains(&format!("{}", VirtAddr(shifted)))
                        && text.contains(&format!("{true_entry}")),
                    "{what}: {text}"
                );
                for other in ["main.main", "main.(*counter).Bump"] {
                    let f = bin.function(other).unwrap();
                    bin.probe_sites(f)
                        .unwrap_or_else(|e| panic!("{what} {other}: {e}"));
                }
            }
        }
    }
}

/// A symbol table that names the function at an address differently from the function
/// table: refused, naming both.
#[test]
fn symtab_naming_another_function_is_refused() {
    let toolchain = all_toolchains().pop().unwrap();
    let path = pcln_kinds(&toolchain, Flavour::Plain, None);
    let mut data = std::fs::read(&path).unwrap();
    let bump = GoBinary::open(&path)
        .unwrap()
        .function("main.(*counter).Bump")
        .unwrap()
        .entry;
    let apply = GoBinary::open(&path)
        .unwrap()
        .function("main.apply")
        .unwrap()
        .entry;
    shift_symbol(&mut data, "main.apply", bump.0 as i64 - apply.0 as i64);
    let bin = GoBinary::from_bytes(&path, data).unwrap();
    let f = bin
        .functions()
        .iter()
        .find(|f| f.name == "main.apply")
        .unwrap();
    let text = bin.probe_sites(f).unwrap_err().to_string();
    assert!(
        text.contains("main.apply") && text.contains("main.(*counter).Bump"),
        "{text}"
    );
}

/// C functions of a cgo binary have no entry in Go's function table: nothing confirms their
/// start, so they are refused.
#[test]
fn c_functions_are_refused() {
    for toolchain in all_toolchains() {
        let bin = GoBinary::open(&pcln_kinds(&toolchain, Flavour::Cgo, None)).unwrap();
        let (text, etext) = bin.text_range().unwrap();
        let c: Vec<&Function> = bin
            .functions()
            .iter()
            .filter(|f| f.entry < text || f.entry >= etext)
            .collect();
        assert!(
            c.len() > 5,
            "Go {}: {} C functions",
            toolchain.version,
            c.len()
        );
        for f in c {
            assert!(
                matches!(bin.probe_sites(f), Err(BinaryError::Unproven { .. })),
                "Go {} {}",
                toolchain.version,
                f.name
            );
        }
    }
}

/// `main.tinyRecord` is inlined into every caller: the table names it (its inline tree refers to
/// it) but no function has its name, so asking for it says "inlined", not "no such function".
#[test]
fn function_inlined_everywhere_is_reported_as_inlined() {
    for toolchain in all_toolchains() {
        for flavour in [Flavour::Plain, Flavour::Stripped] {
            let what = format!("Go {} {flavour:?}", toolchain.version);
            let bin = GoBinary::open(&pcln_kinds(&toolchain, flavour, None)).unwrap();
            assert!(
                matches!(
                    bin.function("main.tinyRecord"),
                    Err(BinaryError::Inlined { ref name }) if name == "main.tinyRecord"
                ),
                "{what}: {:?}",
                bin.function("main.tinyRecord")
            );
            for has_code in ["main.main", "main.(*counter).Bump", "main.apply"] {
                assert!(bin.function(has_code).is_ok(), "{what}: {has_code}");
            }
            assert!(matches!(
                bin.function("main.tinyRecordd"),
                Err(BinaryError::NoSuchFunction { .. })
            ));
        }
    }
}

#[test]
fn corrupt_headers_are_errors() {
    let cases: [(&[u8], &str); 4] = [
        (b"", "empty"),
        (b"\xf1\xff\xff\xff\x00\x00\x01", "cut-short header"),
        (b"\xf2\xff\xff\xff\x00\x00\x01\x08", "unknown magic"),
        (
            b"\xf1\xff\xff\xff\x00\x00\x04\x08",
            "arm64 quantum in an amd64 binary",
        ),
    ];
    for (data, what) in cases {
        assert!(
            matches!(
                Pclntab::parse(data, Arch::Amd64, None),
                Err(BinaryError::Malformed { .. })
            ),
            "{what}"
        );
    }
}
