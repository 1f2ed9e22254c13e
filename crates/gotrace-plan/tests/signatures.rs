//! A DWARF signature that does not describe the function's real argument frame is refused:
//! values would otherwise be read from the wrong registers. Go before 1.22 leaves blank `_`
//! parameters out of DWARF; `main.Unused(a int, _ string, c int)` in the fixture is such a case.

use gotrace_binary::GoBinary;
use gotrace_gobuild::{repo_root, toolchains, workspace_target_dir, Build, Flavour};
use gotrace_plan::{plan, PlanOptions};

#[test]
fn a_signature_missing_a_blank_parameter_is_refused_not_guessed() {
    let all = toolchains();
    assert!(
        !all.is_empty(),
        "no Go toolchain installed: run scripts/setup.sh"
    );
    for toolchain in &all {
        let minor: u32 = toolchain.version.trim_start_matches("1.").parse().unwrap();
        let path = Build {
            source_dir: &repo_root().join("fixtures/go/sig_kinds"),
            toolchain,
            flavour: Flavour::Plain,
            goarch: None,
            gcflags: "-l",
            out_dir: &workspace_target_dir().join("go-fixtures"),
        }
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
        let binary = GoBinary::open(&path).unwrap();
        let planned = plan(&binary, &["main.Unused".to_owned()], PlanOptions::default()).unwrap();
        let signature = &planned.functions[0].signature;
        if minor >= 22 {
            let names: Vec<&str> = signature
                .as_ref()
                .expect("complete DWARF")
                .params
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            assert_eq!(names, ["a", "~p1", "c"], "Go {}", toolchain.version);
            assert!(
                planned.warnings.is_empty(),
                "Go {}: {:?}",
                toolchain.version,
                planned.warnings
            );
        } else {
            assert!(
                signature.is_none(),
                "Go {}: {signature:?}",
                toolchain.version
            );
            assert!(
                planned
                    .warnings
                    .iter()
                    .any(|w| w.contains("main.Unused") && w.contains("blank")),
                "Go {}: {:?}",
                toolchain.version,
                planned.warnings
            );
        }
    }
}
