//! `runtime.g.goid`: read from DWARF when the binary has it, from the per-version table when it
//! is stripped. The table must agree with DWARF for every installed toolchain.

mod common;

use common::{all_toolchains, pcln_kinds};
use gotrace_binary::GoBinary;
use gotrace_gobuild::Flavour;

#[test]
fn goid_offset_table_agrees_with_dwarf_on_every_toolchain() {
    for toolchain in &all_toolchains() {
        let build = |flavour| {
            let path = pcln_kinds(toolchain, flavour, None);
            GoBinary::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let plain = build(Flavour::Plain);
        let stripped = build(Flavour::Stripped);
        let from_dwarf = plain
            .dwarf()
            .expect("DWARF reads")
            .expect("plain build has DWARF")
            .member_offset("runtime.g", "goid")
            .expect("runtime.g.goid in DWARF");
        assert!(stripped
            .dwarf()
            .expect("no DWARF is not an error")
            .is_none());
        assert_eq!(
            stripped.goid_offset(),
            Some(from_dwarf),
            "Go {}: the table's goid offset differs from DWARF's",
            toolchain.version
        );
        assert_eq!(plain.goid_offset(), Some(from_dwarf));
    }
}
