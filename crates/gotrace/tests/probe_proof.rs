//! A probe address is a proven instruction boundary, end to end: a `.symtab` entry off by one
//! or two bytes is refused (alone: an error; in a glob: skipped with a warning) and the traced
//! program runs exactly as untraced; stripped cgo PIE builds of the newest releases (whose
//! function table header has no text start) are traced at the right addresses.

mod common;

use common::{build_go, json_calls, run_gotrace, start_gotrace, tempfile_path, toolchains};
use gotrace_gobuild::{Flavour, Toolchain};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CALLS: usize = 700;

fn probe_proof(toolchain: &Toolchain, flavour: Flavour) -> PathBuf {
    build_go("fixtures/go/probe_proof", toolchain, flavour, "-l")
}

fn run_program(binary: &Path) -> Output {
    Command::new(binary)
        .arg(CALLS.to_string())
        .output()
        .expect("running the fixture")
}

/// What the program prints for `CALLS` calls, and the count it reports for `function`.
fn reported_calls(output: &Output, function: &str) -> usize {
    let text = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == function)
        .unwrap_or_else(|| panic!("{function} not in {text:?}"));
    words[at + 1].parse().unwrap()
}

/// Moves the `.symtab` value of `name` by `delta` bytes (ELF64, little-endian).
fn shift_symbol(data: &mut [u8], name: &str, delta: i64) {
    let u16_at = |d: &[u8], at: usize| u16::from_le_bytes(d[at..at + 2].try_into().unwrap());
    let u32_at = |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap());
    let u64_at = |d: &[u8], at: usize| u64::from_le_bytes(d[at..at + 8].try_into().unwrap());
    let shoff = u64_at(data, 0x28) as usize;
    let shentsize = usize::from(u16_at(data, 0x3a));
    let shnum = usize::from(u16_at(data, 0x3c));
    let section = |i: usize| shoff + i * shentsize;
    let symtab = (0..shnum)
        .map(section)
        .find(|&h| u32_at(data, h + 4) == 2)
        .expect("no .symtab");
    let strtab = section(u32_at(data, symtab + 0x28) as usize);
    let (sym_off, sym_size) = (u64_at(data, symtab + 0x18), u64_at(data, symtab + 0x20));
    let str_off = u64_at(data, strtab + 0x18) as usize;
    for sym in (sym_off..sym_off + sym_size).step_by(24) {
        let sym = sym as usize;
        let name_at = str_off + u32_at(data, sym) as usize;
        let len = data[name_at..].iter().position(|&b| b == 0).unwrap();
        if &data[name_at..name_at + len] == name.as_bytes() {
            let value = u64_at(data, sym + 8).wrapping_add_signed(delta);
            data[sym + 8..sym + 16].copy_from_slice(&value.to_le_bytes());
            return;
        }
    }
    panic!("{name} not in .symtab");
}

/// `main.Add`'s symbol moved by 1 and by 2 bytes in a copy of a real binary: tracing it alone
/// is an error naming both addresses; `main.*` skips it with a warning and traces the rest;
/// the traced program's exit code and output equal the untraced run's.
fn root_shifted_symtab_entry_is_refused_and_the_program_is_unharmed() {
    let mut checked = 0;
    for toolchain in toolchains() {
        let original = probe_proof(&toolchain, Flavour::Plain);
        for delta in [1, 2] {
            let what = format!("Go {} +{delta}", toolchain.version);
            let copy = tempfile_path("shifted");
            let mut data = std::fs::read(&original).unwrap();
            shift_symbol(&mut data, "main.Add", delta);
            std::fs::write(&copy, data).unwrap();
            std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let copy_arg = copy.to_str().unwrap();
            let untraced = run_program(&copy);
            assert!(untraced.status.success(), "{what}: {untraced:?}");

            let alone = run_gotrace(&["trace", copy_arg, "main.Add"]);
            let err = String::from_utf8_lossy(&alone.stderr);
            assert_eq!(alone.status.code(), Some(1), "{what}: {err}");
            assert!(
                err.contains("main.Add") && err.contains(".symtab") && err.contains(".gopclntab"),
                "{what}: {err}"
            );

            let gotrace = start_gotrace(&[copy_arg, "--json", "main.*"]);
            let traced = run_program(&copy);
            let out = gotrace.interrupt_and_collect();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(traced.status.code(), untraced.status.code(), "{what}");
            assert_eq!(traced.stdout, untraced.stdout, "{what}");
            assert!(
                err.contains("skipping main.Add") && err.contains(".symtab"),
                "{what}: {err}"
            );
            let calls = json_calls(&out.stdout);
            let count = |f: &str| calls.iter().filter(|c| c["func"] == f).count();
            assert_eq!(count("main.Add"), 0, "{what}");
            assert_eq!(
                count("main.Scale"),
                reported_calls(&traced, "Scale"),
                "{what}"
            );
            assert_eq!(count("main.Scale"), CALLS, "{what}");
            let _ = std::fs::remove_file(&copy);
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * toolchains().len());
}

/// Stripped cgo PIE builds (no symbol table, the function table merged into other data, and
/// from Go 1.26 no text start in its header) of Go 1.24 and newer: every call of the traced
/// functions is seen at the right address, and the program runs as untraced.
fn root_stripped_cgo_pie_is_traced_at_the_right_addresses() {
    let newer: Vec<Toolchain> = toolchains()
        .into_iter()
        .filter(|t| {
            t.version
                .strip_prefix("1.")
                .and_then(|m| m.parse::<u32>().ok())
                .is_some_and(|m| m >= 24)
        })
        .collect();
    assert!(
        !newer.is_empty(),
        "no Go 1.24+ toolchain: run scripts/setup.sh"
    );
    for toolchain in &newer {
        let what = format!("Go {}", toolchain.version);
        let binary = probe_proof(toolchain, Flavour::CgoPieStripped);
        let untraced = run_program(&binary);
        assert!(untraced.status.success(), "{what}: {untraced:?}");
        let gotrace = start_gotrace(&[
            binary.to_str().unwrap(),
            "--json",
            "main.Add",
            "main.Scale",
            "main.Label",
        ]);
        let traced = run_program(&binary);
        let out = gotrace.interrupt_and_collect();
        assert_eq!(traced.status.code(), untraced.status.code(), "{what}");
        assert_eq!(traced.stdout, untraced.stdout, "{what}");
        let calls = json_calls(&out.stdout);
        for function in ["Add", "Scale", "Label"] {
            let name = format!("main.{function}");
            let seen: Vec<_> = calls.iter().filter(|c| c["func"] == name).collect();
            assert_eq!(
                seen.len(),
                reported_calls(&traced, function),
                "{what} {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                seen.iter().all(|c| c["outcome"] == "returned"),
                "{what} {name}"
            );
        }
        assert!(calls.len() > CALLS, "{what}");
    }
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        root_shifted_symtab_entry_is_refused_and_the_program_is_unharmed,
        root_stripped_cgo_pie_is_traced_at_the_right_addresses,
    ],
}
