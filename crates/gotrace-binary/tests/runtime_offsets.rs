//! The runtime layout table (gotrace_binary::layout) against the DWARF of real binaries: for
//! every installed toolchain, every offset and size the table holds that DWARF describes must
//! be described, and equal. The table is what binaries without DWARF get.

mod common;

use common::{all_toolchains, pcln_kinds};
use gotrace_binary::layout::{MapImpl, RuntimeLayout};
use gotrace_binary::GoBinary;
use gotrace_gobuild::Flavour;

#[test]
fn layout_table_agrees_with_dwarf_on_every_toolchain() {
    for toolchain in &all_toolchains() {
        let build = |flavour| {
            let path = pcln_kinds(toolchain, flavour, None);
            GoBinary::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let plain = build(Flavour::Plain);
        let version = &toolchain.version;
        let minor = plain
            .build_info()
            .and_then(|b| b.go_version_minor())
            .expect("a Go version in the build info");
        let table = RuntimeLayout::for_go(plain.arch(), minor)
            .unwrap_or_else(|e| panic!("Go {version}: no row in the table: {e}"));
        let dwarf = plain
            .dwarf()
            .expect("DWARF reads")
            .expect("plain has DWARF");
        let checks = table.clone().apply_dwarf(dwarf);
        // g: stack.hi, goid; the resume SP's one or two; itab; five (classic) or seven (Swiss)
        // map fields.
        let resume = if minor <= 21 { 1 } else { 2 };
        let maps = if table.classic_maps() { 5 } else { 7 };
        assert_eq!(
            checks.len(),
            2 + resume + 1 + maps,
            "Go {version}: {checks:?}"
        );
        for check in &checks {
            assert_eq!(check.dwarf, Some(check.table), "Go {version}: {check}");
        }
        assert_eq!(
            plain.runtime_layout().expect("a layout"),
            (table, Vec::new())
        );
        // Stripped of DWARF, the same layout, from the table alone.
        let stripped = build(Flavour::Stripped);
        assert!(stripped
            .dwarf()
            .expect("no DWARF is not an error")
            .is_none());
        assert_eq!(
            stripped.runtime_layout().expect("a layout"),
            (table, Vec::new())
        );
        assert_eq!(
            matches!(table.maps, MapImpl::Swiss(_)),
            minor >= 24,
            "Go {version}"
        );
    }
}
