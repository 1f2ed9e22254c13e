//! Separate debug files on real builds, every installed toolchain: the values fixture built with
//! DWARF, then split as build pipelines split it (`objcopy --only-keep-debug`, `--strip-all`).
//! The stripped binary with its debug file reads exactly like the unstripped build, and so does
//! the `-ldflags='-s -w'` build with the plain build as its debug file; a debug file of other
//! code is refused with both build IDs named.

mod common;

use common::{all_toolchains, build, values};
use gotrace_binary::debugfile::IdKind;
use gotrace_binary::{BinaryError, DebugSource, GoBinary};
use gotrace_gobuild::testing::split_debug;
use gotrace_gobuild::Flavour;
use std::path::Path;

/// `bin` with `debug` attached reads as `unstripped`: functions, DWARF signatures, probe sites,
/// and the runtime types interfaces are named by (the same types; at the same addresses when
/// `same_addresses`, else at this binary's own, which may have moved: none is dropped).
fn reads_as_unstripped(
    what: &str,
    bin: &mut GoBinary,
    debug: &Path,
    unstripped: &GoBinary,
    same_addresses: bool,
) {
    assert_eq!(bin.debug_source(), DebugSource::None, "{what}");
    assert!(
        bin.dwarf().unwrap().is_none(),
        "{what}: stripped build has DWARF"
    );
    bin.attach_debug_file(debug).unwrap();
    assert!(
        matches!(bin.debug_source(), DebugSource::DebugFile { ref path, .. } if *path == debug),
        "{what}: {:?}",
        bin.debug_source()
    );
    assert_eq!(bin.function_source(), unstripped.function_source());
    assert_eq!(bin.functions(), unstripped.functions(), "{what}");
    let (d, u) = (
        bin.dwarf().unwrap().expect("DWARF from the debug file"),
        unstripped.dwarf().unwrap().expect("DWARF"),
    );
    let mut compared = 0;
    for f in unstripped.functions() {
        assert_eq!(
            d.signature(f.entry),
            u.signature(f.entry),
            "{what}: {}",
            f.name
        );
        compared += usize::from(u.signature(f.entry).is_some());
        assert_eq!(
            bin.probe_sites(f).ok(),
            unstripped.probe_sites(f).ok(),
            "{what}: {}",
            f.name
        );
    }
    assert!(compared > 100, "{what}: only {compared} signatures");
    let (types, expected) = (
        bin.runtime_types().unwrap(),
        unstripped.runtime_types().unwrap(),
    );
    assert!(
        expected.len() > 50,
        "{what}: only {} runtime types",
        expected.len()
    );
    if same_addresses {
        assert_eq!(types, expected, "{what}");
    } else {
        let sorted = |m: &std::collections::HashMap<u64, gotrace_binary::types::TypeId>| {
            let mut v: Vec<u32> = m.values().map(|t| t.0).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(&types), sorted(&expected), "{what}: types named");
    }
}

#[test]
fn stripped_binary_with_its_debug_file_reads_as_the_unstripped_build() {
    for toolchain in all_toolchains() {
        let what = format!("Go {}", toolchain.version);
        let plain = values(&toolchain, Flavour::Plain);
        let (stripped, debug) = split_debug(&plain);
        let unstripped = GoBinary::open(&plain).unwrap();
        let mut bin = GoBinary::open(&stripped).unwrap();
        let ids = bin.build_ids();
        assert!(ids.go.is_some(), "{what}: strip removed .note.go.buildid");
        assert_eq!(ids, unstripped.build_ids(), "{what}");
        reads_as_unstripped(&what, &mut bin, &debug, &unstripped, true);
    }
}

/// `go build -ldflags='-s -w'` is another link of the same code: its build IDs differ from the
/// plain build's and its data moves, but the plain build, as its debug file, describes it once
/// the code is proven the same.
#[test]
fn another_link_of_the_same_code_reads_as_the_unstripped_build() {
    for toolchain in all_toolchains() {
        let what = format!("Go {} -s -w", toolchain.version);
        let plain = values(&toolchain, Flavour::Plain);
        let unstripped = GoBinary::open(&plain).unwrap();
        let mut bin = GoBinary::open(&values(&toolchain, Flavour::Stripped)).unwrap();
        assert_ne!(bin.build_ids().go, unstripped.build_ids().go, "{what}");
        reads_as_unstripped(&what, &mut bin, &plain, &unstripped, false);
        assert!(
            matches!(
                bin.debug_source(),
                DebugSource::DebugFile {
                    matched: IdKind::SameCode,
                    ..
                }
            ),
            "{what}: {:?}",
            bin.debug_source()
        );
    }
}

#[test]
fn a_debug_file_of_other_code_is_refused_naming_both_ids() {
    let all = all_toolchains();
    for toolchain in [&all[0], &all[all.len() - 1]] {
        let what = format!("Go {}", toolchain.version);
        let plain = values(toolchain, Flavour::Plain);
        // The same source compiled with other flags (inlining on): other code.
        let inlined = build("fixtures/go/values", "", toolchain, Flavour::Stripped, None);
        let mut bin = GoBinary::open(&inlined).unwrap();
        let (mine, theirs) = (
            bin.build_ids().go.expect("Go build ID"),
            GoBinary::open(&plain)
                .unwrap()
                .build_ids()
                .go
                .expect("Go build ID"),
        );
        let err = bin.attach_debug_file(&plain).expect_err(&what);
        assert!(matches!(err, BinaryError::DebugFile(_)), "{what}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&mine) && text.contains(&theirs) && text.contains("differ"),
            "{what}: {text}"
        );
        assert_eq!(bin.debug_source(), DebugSource::None, "{what}");
        assert!(bin.dwarf().unwrap().is_none(), "{what}");
    }
}

#[test]
fn a_file_without_dwarf_or_ids_is_refused() {
    let toolchain = all_toolchains().pop().expect("a toolchain");
    let plain = values(&toolchain, Flavour::Plain);
    let (stripped, _) = split_debug(&plain);
    let mut bin = GoBinary::open(&stripped).unwrap();
    // The stripped binary is of the same build but has no DWARF to give.
    let err = bin.attach_debug_file(&stripped).expect_err("no DWARF");
    assert!(err.to_string().contains("has no DWARF"), "{err}");
    // Not an ELF file at all.
    let err = bin
        .attach_debug_file(std::path::Path::new("/etc/hostname"))
        .expect_err("not ELF");
    assert!(matches!(err, BinaryError::NotElf { .. }), "{err}");
    assert_eq!(bin.debug_source(), DebugSource::None);
}
