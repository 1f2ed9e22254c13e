//! A DWARF signature that does not describe the function's real argument frame is refused:
//! values would otherwise be read from the wrong registers. Go before 1.22 leaves blank `_`
//! parameters out of DWARF; `main.Unused(a int, _ string, c int)` in the fixture is such a case.

use gotrace_binary::GoBinary;
use gotrace_gobuild::testing::{build_fixture, toolchains};
use gotrace_gobuild::Flavour;
use gotrace_plan::{plan, PlanOptions};

/// `fixtures/go/sig_kinds` built plain with `-l` (each function keeps its own signature).
fn sig_kinds(toolchain: &gotrace_gobuild::Toolchain) -> GoBinary {
    let path = build_fixture(
        "fixtures/go/sig_kinds",
        "-l",
        toolchain,
        Flavour::Plain,
        None,
    );
    GoBinary::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_signature_missing_a_blank_parameter_is_refused_not_guessed() {
    for toolchain in &toolchains() {
        let minor: u32 = toolchain.version.trim_start_matches("1.").parse().unwrap();
        let binary = sig_kinds(toolchain);
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

/// `type:.eq.T[go.shape…]` (the equality the compiler generates for a type, Go 1.24–1.26) was
/// given a dictionary parameter it does not take, which moved `p` and `q` one register on.
/// Generic code that does take one keeps it. Each signature is checked against the argument
/// frame pclntab records: the check has a witness for every function planned here.
#[test]
fn generated_equality_functions_take_no_dictionary_and_generic_code_does() {
    use gotrace_binary::abi::{AbiReg, Location};
    let regs = |v: &gotrace_plan::PlannedValue| -> Vec<AbiReg> {
        match &v.location {
            Location::Registers(pieces) => pieces.iter().map(|p| p.reg).collect(),
            other => panic!("{}: {other:?}", v.name),
        }
    };
    for toolchain in &toolchains() {
        let minor: u32 = toolchain.version.trim_start_matches("1.").parse().unwrap();
        let binary = sig_kinds(toolchain);
        let mut patterns = vec![
            "main.Map[go.shape.int*".to_owned(),
            "main.(*Box[go.shape.int*]).Get".to_owned(),
        ];
        if (24..=26).contains(&minor) {
            patterns.push("type:.eq.*go.shape.*".to_owned());
        }
        let planned = plan(&binary, &patterns, PlanOptions::default()).unwrap();
        assert!(
            planned.warnings.is_empty(),
            "Go {}: {:?}",
            toolchain.version,
            planned.warnings
        );
        let mut equality = 0;
        for f in &planned.functions {
            let what = format!("Go {} {}", toolchain.version, f.name);
            let function = binary.function(&f.name).unwrap();
            assert!(binary.arg_size(function).is_some(), "{what}: no frame");
            let sig = f.signature.as_ref().unwrap_or_else(|| panic!("{what}"));
            let names: Vec<&str> = sig.params.iter().map(|p| p.name.as_str()).collect();
            if f.name.starts_with("type:.eq.") {
                equality += 1;
                assert_eq!(names, ["p", "q"], "{what}");
                assert_eq!(regs(&sig.params[0]), [AbiReg::Int(0)], "{what}");
                assert_eq!(regs(&sig.params[1]), [AbiReg::Int(1)], "{what}");
            } else if f.name.starts_with("main.Map[") {
                assert_eq!(names, [".dict", "xs", "f"], "{what}");
            } else {
                let expected = if minor <= 19 {
                    [".dict", "b", "k"]
                } else {
                    ["b", ".dict", "k"]
                };
                assert_eq!(names, expected, "{what}");
            }
        }
        assert!(planned.functions.len() >= 2, "Go {}", toolchain.version);
        if (24..=26).contains(&minor) {
            assert!(equality > 0, "Go {}", toolchain.version);
        }
    }
}
