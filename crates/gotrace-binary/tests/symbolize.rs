//! pclntab's line tables, file tables and inline trees as the symbolizer reads them (for
//! `--stack`), against `fixtures/go/stack` built with inlining by every installed toolchain,
//! plain and stripped: a function's entry names its `func` line; inside `main.viaHelper`, the
//! inlined `main.helper` expands to two frames at the right lines. The runtime's own answer, call
//! by call, is checked end to end in `crates/gotrace/tests/stack.rs`.

mod common;

use common::{all_toolchains, build, open};
use gotrace_binary::pclntab::SourceFrame;
use gotrace_binary::{wrapper_func_id, VirtAddr};
use gotrace_gobuild::Flavour;

/// The 1-based line of the fixture's source holding `text`.
fn line_of(source: &str, text: &str) -> u32 {
    let i = source
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text} not in the fixture"));
    i as u32 + 1
}

fn frame(function: &str, line: u32, inlined: bool) -> (String, u32, bool) {
    (function.to_owned(), line, inlined)
}

fn brief(frames: &[SourceFrame]) -> Vec<(String, u32, bool)> {
    frames
        .iter()
        .map(|f| (f.function.clone(), f.line, f.inlined))
        .collect()
}

#[test]
fn entries_and_inlined_calls_name_their_lines() {
    let dir = gotrace_gobuild::repo_root().join("fixtures/go/stack");
    let source = std::fs::read_to_string(dir.join("main.go")).unwrap();
    for toolchain in all_toolchains() {
        for flavour in [Flavour::Plain, Flavour::Stripped] {
            let at = format!("{} {}", toolchain.version, flavour.name());
            let binary = open(&build("fixtures/go/stack", "", &toolchain, flavour, None));
            let symbolizer = binary.symbolizer().unwrap_or_else(|e| panic!("{at}: {e}"));
            let leaf = binary.function("main.Leaf").unwrap();
            let frames = symbolizer.frames(leaf.entry).unwrap();
            assert_eq!(
                brief(&frames),
                [frame("main.Leaf", line_of(&source, "func Leaf("), false)],
                "{at}"
            );
            assert!(frames[0].file.ends_with("/main.go"), "{at}: {frames:?}");
            let outer = binary.function("main.viaHelper").unwrap();
            let expanded = (outer.entry.0..outer.end.0)
                .map(|pc| symbolizer.frames(VirtAddr(pc)).unwrap())
                .find(|f| f.len() == 2)
                .unwrap_or_else(|| panic!("{at}: helper not inlined into viaHelper"));
            assert_eq!(
                brief(&expanded),
                [
                    frame("main.helper", line_of(&source, "return Leaf(id) + 1"), true),
                    frame("main.viaHelper", line_of(&source, "func viaHelper("), false),
                ],
                "{at}"
            );
            assert!(symbolizer.frames(VirtAddr(1)).unwrap().is_empty(), "{at}");
        }
    }
}

/// The table of `FuncIDWrapper` values against each installed toolchain's own source: the last
/// name of its `FuncID` list.
#[test]
fn wrapper_func_id_is_the_last_of_each_toolchains_list() {
    for toolchain in all_toolchains() {
        let goroot = toolchain.go.parent().and_then(|bin| bin.parent()).unwrap();
        let source = ["src/internal/abi/symtab.go", "src/runtime/symtab.go"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(goroot.join(p)).ok())
            .find(|s| s.contains("FuncIDNormal") || s.contains("funcID_normal"))
            .unwrap_or_else(|| panic!("{}: no FuncID list", toolchain.version));
        let ids: Vec<&str> = source
            .lines()
            .map(str::trim_start)
            .skip_while(|l| !l.starts_with("FuncIDNormal") && !l.starts_with("funcID_normal"))
            .take_while(|l| !l.starts_with(')'))
            .filter(|l| l.starts_with("FuncID") || l.starts_with("funcID_"))
            .collect();
        let wrapper = ids
            .iter()
            .position(|l| l.starts_with("FuncIDWrapper") || l.starts_with("funcID_wrapper"))
            .unwrap_or_else(|| panic!("{}: no wrapper in {ids:?}", toolchain.version));
        let minor: u32 = toolchain.version.trim_start_matches("1.").parse().unwrap();
        assert_eq!(
            wrapper_func_id(minor),
            Some(wrapper as u8),
            "{}",
            toolchain.version
        );
    }
}
