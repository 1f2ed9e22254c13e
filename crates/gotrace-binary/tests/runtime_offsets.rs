//! `runtime.g.goid`: read from DWARF when the binary has it, from the per-version table when it
//! is stripped. The table must agree with DWARF for every installed toolchain.

use gotrace_binary::GoBinary;
use gotrace_gobuild::{repo_root, toolchains, workspace_target_dir, Build, Flavour};

#[test]
fn goid_offset_table_agrees_with_dwarf_on_every_toolchain() {
    let all = toolchains();
    assert!(
        !all.is_empty(),
        "no Go toolchain installed: run scripts/setup.sh"
    );
    let source_dir = repo_root().join("fixtures/go/pcln_kinds");
    let out_dir = workspace_target_dir().join("go-fixtures");
    for toolchain in &all {
        let build = |flavour| {
            let path = Build {
                source_dir: &source_dir,
                toolchain,
                flavour,
                goarch: None,
                gcflags: "",
                out_dir: &out_dir,
            }
            .run()
            .unwrap_or_else(|e| panic!("{e}"));
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
