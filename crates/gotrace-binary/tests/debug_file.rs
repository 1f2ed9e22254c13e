//! Separate debug files on real builds, every installed toolchain: the values fixture built with
//! DWARF, then split as build pipelines split it (`objcopy --only-keep-debug`, `--strip-all`).
//! The stripped binary with its debug file reads exactly like the unstripped build; a debug
//! file of another build is refused with both build IDs named.

mod common;

use common::{all_toolchains, values};
use gotrace_binary::{BinaryError, DebugSource, GoBinary};
use gotrace_gobuild::testing::split_debug;
use gotrace_gobuild::Flavour;

#[test]
fn stripped_binary_with_its_debug_file_reads_as_the_unstripped_build() {
    for toolchain in all_toolchains() {
        let what = format!("Go {}", toolchain.version);
        let plain = values(&toolchain, Flavour::Plain);
        let (stripped, debug) = split_debug(&plain);
        let unstripped = GoBinary::open(&plain).unwrap();
        let mut bin = GoBinary::open(&stripped).unwrap();
        assert_eq!(bin.debug_source(), DebugSource::None, "{what}");
        assert!(
            bin.dwarf().unwrap().is_none(),
            "{what}: strip-all left DWARF"
        );
        let ids = bin.build_ids();
        assert!(ids.go.is_some(), "{what}: strip removed .note.go.buildid");
        assert_eq!(ids, unstripped.build_ids(), "{what}");

        bin.attach_debug_file(&debug).unwrap();
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
        let types = bin.runtime_types().unwrap();
        assert!(!types.is_empty(), "{what}");
        assert_eq!(types, unstripped.runtime_types().unwrap(), "{what}");
    }
}

#[test]
fn a_debug_file_of_another_build_is_refused_naming_both_ids() {
    for toolchain in all_toolchains() {
        let what = format!("Go {}", toolchain.version);
        let plain = values(&toolchain, Flavour::Plain);
        let (_, debug) = split_debug(&plain);
        // `-ldflags=-s -w` is another link: its Go build ID differs (and its data moves).
        let linked_stripped = values(&toolchain, Flavour::Stripped);
        let mut bin = GoBinary::open(&linked_stripped).unwrap();
        let (mine, theirs) = (
            bin.build_ids().go.expect("Go build ID"),
            GoBinary::open(&plain)
                .unwrap()
                .build_ids()
                .go
                .expect("Go build ID"),
        );
        assert_ne!(mine, theirs, "{what}: -s -w kept the Go build ID");
        let err = bin.attach_debug_file(&debug).expect_err(&what);
        assert!(matches!(err, BinaryError::DebugFile(_)), "{what}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&mine) && text.contains(&theirs),
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
