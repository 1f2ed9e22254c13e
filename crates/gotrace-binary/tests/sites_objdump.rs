//! Probe sites against an independent disassembler: for every `main.*` function of the
//! fixtures (sig_kinds, pcln_kinds, sites_defer), built by every installed toolchain, the RET
//! and `CALL runtime.deferreturn` sites `GoBinary::probe_sites` finds are exactly the ones GNU
//! objdump shows, and on amd64 the entry site is the stack check's `jbe` wherever objdump shows
//! the prologue `cmp rsp,[r14+0x10]; jbe` (or `lea r12,[rsp-N]; cmp r12,[r14+0x10]; jbe`).
//!
//! objdump is binutils' (`scripts/setup.sh` installs `binutils` and, for arm64,
//! `binutils-aarch64-linux-gnu`: Debian's plain objdump only disassembles x86).

mod common;

use common::{all_toolchains, build};
use gotrace_binary::sites::SkipCondition;
use gotrace_binary::{Arch, GoBinary, VirtAddr};
use gotrace_gobuild::Flavour;
use std::path::Path;
use std::process::Command;

/// Each fixture with the gcflags its other tests build it with, so the builds are shared.
const FIXTURES: [(&str, &str); 3] = [
    ("fixtures/go/sig_kinds", "-l"),
    ("fixtures/go/pcln_kinds", ""),
    ("fixtures/go/sites_defer", "-l"),
];

/// One decoded instruction: address and text with runs of spaces collapsed
/// (`cmp rsp,QWORD PTR [r14+0x10]`, `call 431220 <runtime.deferreturn>`).
struct Insn {
    addr: u64,
    text: String,
}

impl Insn {
    fn mnemonic(&self) -> &str {
        self.text.split(' ').next().unwrap_or_default()
    }
}

/// objdump's disassembly of `[start, stop)`, Intel syntax on amd64.
fn objdump(path: &Path, arch: Arch, start: u64, stop: u64) -> Vec<Insn> {
    let (tool, syntax): (&str, &[&str]) = match arch {
        Arch::Amd64 => ("objdump", &["-M", "intel"]),
        Arch::Arm64 => ("aarch64-linux-gnu-objdump", &[]),
    };
    let output = Command::new(tool)
        .args(["-d", "--no-show-raw-insn", "-w"])
        .args(syntax)
        .arg(format!("--start-address={start:#x}"))
        .arg(format!("--stop-address={stop:#x}"))
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e} (scripts/setup.sh installs it)"));
    assert!(
        output.status.success(),
        "{tool} failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    // Instruction lines are `  492f20:\tcmp    rsp,QWORD PTR [r14+0x10]`; symbol headers,
    // blank lines and `...` (skipped zeros) have no `:\t`.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (addr, text) = line.split_once(":\t")?;
            let addr = u64::from_str_radix(addr.trim(), 16).ok()?;
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            Some(Insn { addr, text })
        })
        .collect()
}

#[derive(Default)]
struct Counts {
    functions: usize,
    returns: usize,
    deferreturns: usize,
    stack_checks: usize,
    /// Stack checks of the large-frame form (`lea r12,[rsp-N]` first).
    lea_stack_checks: usize,
}

/// Compares every `main.*` function of `path`; returns what was compared.
fn check_binary(path: &Path) -> Counts {
    let bin = GoBinary::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let arch = bin.arch();
    let functions: Vec<_> = bin
        .functions()
        .iter()
        .filter(|f| f.name.starts_with("main."))
        .collect();
    assert!(
        !functions.is_empty(),
        "{}: no main.* functions",
        path.display()
    );
    let start = functions
        .iter()
        .map(|f| f.entry.0)
        .min()
        .unwrap_or_default();
    let stop = functions.iter().map(|f| f.end.0).max().unwrap_or_default();
    let insns = objdump(path, arch, start, stop);
    let mut counts = Counts::default();
    for f in functions {
        let context = format!("{} in {}", f.name, path.display());
        let body: Vec<&Insn> = insns
            .iter()
            .filter(|i| i.addr >= f.entry.0 && i.addr < f.end.0)
            .collect();
        // objdump restarts its sweep at every symbol; if it did not start at the entry, its
        // instruction boundaries inside the function are not comparable.
        assert_eq!(
            body.first().map(|i| i.addr),
            Some(f.entry.0),
            "{context}: objdump does not start at the entry"
        );
        let sites = bin
            .probe_sites(f)
            .unwrap_or_else(|e| panic!("{context}: {e}"));

        let want_returns: Vec<VirtAddr> = body
            .iter()
            .filter(|i| i.mnemonic() == "ret")
            .map(|i| VirtAddr(i.addr))
            .collect();
        assert_eq!(sites.returns, want_returns, "{context}: RET sites");
        let want_deferreturns: Vec<VirtAddr> = body
            .iter()
            .filter(|i| {
                matches!(i.mnemonic(), "call" | "bl") && i.text.ends_with("<runtime.deferreturn>")
            })
            .map(|i| VirtAddr(i.addr))
            .collect();
        assert_eq!(
            sites.deferreturns, want_deferreturns,
            "{context}: deferreturn sites"
        );

        // On arm64 gotrace probes the first instruction; only amd64 has an entry to compare.
        if arch == Arch::Amd64 {
            let texts: Vec<&str> = body.iter().take(3).map(|i| i.text.as_str()).collect();
            let check = "QWORD PTR [r14+0x10]";
            let jbe_at = match texts.as_slice() {
                [cmp, jbe, ..] if *cmp == format!("cmp rsp,{check}") && jbe.starts_with("jbe ") => {
                    Some(body[1].addr)
                }
                [lea, cmp, jbe]
                    if lea.starts_with("lea r12,[rsp-")
                        && *cmp == format!("cmp r12,{check}")
                        && jbe.starts_with("jbe ") =>
                {
                    counts.lea_stack_checks += 1;
                    Some(body[2].addr)
                }
                _ => None,
            };
            match jbe_at {
                Some(addr) => {
                    counts.stack_checks += 1;
                    assert_eq!(sites.entry.addr, VirtAddr(addr), "{context}: entry site");
                    assert_eq!(
                        sites.entry.skip_if,
                        Some(SkipCondition::CarryOrZeroSet),
                        "{context}: entry skip condition"
                    );
                }
                None => assert_eq!(
                    sites.entry.skip_if, None,
                    "{context}: objdump shows no stack check ({texts:?})"
                ),
            }
        }
        counts.functions += 1;
        counts.returns += sites.returns.len();
        counts.deferreturns += sites.deferreturns.len();
    }
    counts
}

fn check_all(flavours: &[Flavour], goarch: Option<&str>) {
    let mut lea_stack_checks = 0;
    for tc in all_toolchains() {
        for (fixture, gcflags) in FIXTURES {
            for &flavour in flavours {
                let path = build(fixture, gcflags, &tc, flavour, goarch);
                let counts = check_binary(&path);
                let context = format!("Go {} {fixture} {flavour:?} {goarch:?}", tc.version);
                // The comparisons were not vacuous: there were RETs (several functions have
                // more than one; sites_defer's AlwaysPanics has none), and the defer fixture
                // reaches runtime.deferreturn (defers in loops, nine defers, recover).
                assert!(counts.returns >= counts.functions, "{context}");
                if fixture.ends_with("sites_defer") {
                    assert!(
                        counts.deferreturns >= 5,
                        "{context}: {} deferreturn sites",
                        counts.deferreturns
                    );
                }
                if goarch.is_none() {
                    assert!(
                        counts.stack_checks >= 2,
                        "{context}: {} stack checks",
                        counts.stack_checks
                    );
                }
                lea_stack_checks += counts.lea_stack_checks;
            }
        }
    }
    // main.main's frames are large enough for the lea form: both forms were compared.
    if goarch.is_none() {
        assert!(lea_stack_checks > 0, "no large-frame stack check compared");
    }
}

#[test]
fn amd64_sites_match_objdump() {
    check_all(&[Flavour::Plain, Flavour::Pie], None);
}

#[test]
fn arm64_ret_and_deferreturn_sites_match_objdump() {
    check_all(&[Flavour::Plain], Some("arm64"));
}
