//! The pclntab reader against real binaries built from `fixtures/go/pcln_kinds` by every
//! installed Go toolchain, in every flavour: the symbol table of an unstripped build is the
//! reference the function table must agree with.

mod common;

use common::{all_toolchains, pcln_kinds};
use gotrace_binary::pclntab::Pclntab;
use gotrace_binary::{Arch, BinaryError, Function, FunctionSource, GoBinary};
use gotrace_gobuild::{Flavour, Toolchain};
use object::{Object, ObjectSection, ObjectSymbol};
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

/// The symbol table's functions inside the Go text (`runtime.text`..`runtime.etext`): a cgo
/// binary also holds C code the Go table does not describe. Keyed by entry address.
fn symtab_go_functions(path: &Path, toolchain: &Toolchain) -> BTreeMap<u64, (String, u64)> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let symbol = |name: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
            .unwrap_or_else(|| panic!("{name} missing from {}", path.display()))
    };
    let (text, etext) = (symbol("runtime.text"), symbol("runtime.etext"));
    let bin = GoBinary::from_bytes(path, data.clone()).unwrap();
    assert_eq!(bin.function_source(), FunctionSource::Symtab);
    bin.functions()
        .iter()
        .filter(|f| f.entry.0 >= text && f.entry.0 < etext)
        .map(|f| (f.entry.0, (table_name(&f.name, toolchain), f.end.0)))
        .collect()
}

/// Asserts two function lists are equal, showing only the entries that differ.
fn assert_same(
    got: &BTreeMap<u64, (String, u64)>,
    want: &BTreeMap<u64, (String, u64)>,
    what: &str,
) {
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

fn by_entry(functions: &[Function]) -> BTreeMap<u64, (String, u64)> {
    functions
        .iter()
        .map(|f| (f.entry.0, (f.name.clone(), f.end.0)))
        .collect()
}

/// The table as the binary holds it, parsed with the text start its header states.
fn pclntab_functions(path: &Path, arch: Arch) -> Vec<Function> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let section = [".gopclntab", ".data.rel.ro.gopclntab"]
        .iter()
        .find_map(|n| file.section_by_name(n))
        .unwrap_or_else(|| panic!("no pclntab section in {}", path.display()));
    let table = Pclntab::parse(section.data().unwrap(), arch, None).unwrap();
    table.functions()
}

/// Every pair (name, entry, end) of the function table equals the symbol table's, and the two
/// list the same functions, for every toolchain, flavour and both architectures.
#[test]
fn pclntab_agrees_with_symtab_in_every_build() {
    for toolchain in all_toolchains() {
        let builds = [
            (Flavour::Plain, None, Arch::Amd64),
            (Flavour::Pie, None, Arch::Amd64),
            (Flavour::Cgo, None, Arch::Amd64),
            (Flavour::Plain, Some("arm64"), Arch::Arm64),
        ];
        for (flavour, goarch, arch) in builds {
            let path = pcln_kinds(&toolchain, flavour, goarch);
            let what = format!("Go {} {flavour:?} {}", toolchain.version, arch.go_name());
            let expected = symtab_go_functions(&path, &toolchain);
            let table = pclntab_functions(&path, arch);
            assert!(table.len() > 500, "{what}: only {} functions", table.len());
            assert_eq!(
                by_entry(&table).len(),
                table.len(),
                "{what}: duplicate entries"
            );
            assert_same(&by_entry(&table), &expected, &what);
        }
    }
}

/// `-ldflags=-s -w` removes the symbol table; the function table must then give the same
/// functions, at the same addresses, as the unstripped build of the same toolchain.
#[test]
fn stripped_build_lists_the_plain_builds_functions() {
    for toolchain in all_toolchains() {
        for (goarch, arch) in [(None, Arch::Amd64), (Some("arm64"), Arch::Arm64)] {
            let what = format!("Go {} {}", toolchain.version, arch.go_name());
            let plain =
                symtab_go_functions(&pcln_kinds(&toolchain, Flavour::Plain, goarch), &toolchain);
            let stripped =
                GoBinary::open(&pcln_kinds(&toolchain, Flavour::Stripped, goarch)).unwrap();
            assert_eq!(stripped.arch(), arch, "{what}");
            assert_eq!(
                stripped.function_source(),
                FunctionSource::Pclntab,
                "{what}"
            );
            assert_same(&by_entry(stripped.functions()), &plain, &what);
            let main = stripped.function("main.main").unwrap();
            assert!(main.size() > 0, "{what}: main.main is empty");
        }
    }
}

/// A PIE binary whose symbol table is gone and whose table header holds no text address (as
/// linkers that leave dynamically relocated words unwritten produce): the text start must come
/// from the dynamic relocation, or every address would be off by the text start.
#[test]
fn stripped_pie_takes_the_text_start_from_its_dynamic_relocation() {
    for toolchain in all_toolchains() {
        if toolchain.version == "1.16" || toolchain.version == "1.17" {
            continue; // entries are absolute before 1.18: no text start to relocate
        }
        let path = pcln_kinds(&toolchain, Flavour::Pie, None);
        let expected = symtab_go_functions(&path, &toolchain);
        let mut data = std::fs::read(&path).unwrap();
        let (symtab_type_at, text_start_at) = {
            let file = object::File::parse(&*data).unwrap();
            let symtab = file.section_by_name(".symtab").unwrap();
            let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap());
            let shentsize = u64::from(u16::from_le_bytes(data[0x3a..0x3c].try_into().unwrap()));
            // sh_type is the second u32 of a section header.
            let symtab_type_at = shoff + symtab.index().0 as u64 * shentsize + 4;
            let table = file.section_by_name(".data.rel.ro.gopclntab").unwrap();
            let text_start_at = table.file_range().unwrap().0 + 8 + 2 * 8;
            (symtab_type_at as usize, text_start_at as usize)
        };
        data[symtab_type_at..symtab_type_at + 4].fill(0); // SHT_NULL: no symbol table
        data[text_start_at..text_start_at + 8].fill(0);
        let bin = GoBinary::from_bytes(&path, data).unwrap();
        assert_eq!(bin.function_source(), FunctionSource::Pclntab);
        assert_same(
            &by_entry(bin.functions()),
            &expected,
            &format!("Go {}", toolchain.version),
        );
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

/// A stripped cgo PIE has neither a symbol table nor a `.gopclntab` section (the external
/// linker merged it into `.data.rel.ro`): the table is found by its header, and lists the same
/// Go functions as the cgo build with symbols.
#[test]
fn stripped_cgo_pie_table_is_found_inside_data_rel_ro() {
    for toolchain in all_toolchains() {
        let stripped =
            GoBinary::open(&pcln_kinds(&toolchain, Flavour::CgoPieStripped, None)).unwrap();
        let with_symbols = GoBinary::open(&pcln_kinds(&toolchain, Flavour::Cgo, None)).unwrap();
        assert_eq!(
            stripped.function_source(),
            FunctionSource::Pclntab,
            "Go {}",
            toolchain.version
        );
        let main = |b: &GoBinary| -> Vec<String> {
            let mut names: Vec<String> = b
                .functions()
                .iter()
                .filter(|f| f.name.starts_with("main."))
                .map(|f| table_name(&f.name, &toolchain))
                .collect();
            names.sort();
            names
        };
        assert!(!main(&stripped).is_empty(), "Go {}", toolchain.version);
        assert_eq!(
            main(&stripped),
            main(&with_symbols),
            "Go {}",
            toolchain.version
        );
        // The entries are real code: each one's sites decode.
        for f in stripped
            .functions()
            .iter()
            .filter(|f| f.name.starts_with("main."))
        {
            stripped
                .probe_sites(f)
                .unwrap_or_else(|e| panic!("Go {} {}: {e}", toolchain.version, f.name));
        }
    }
}
