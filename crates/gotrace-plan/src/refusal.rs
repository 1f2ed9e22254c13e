//! Why a function, or one of its probe sites, must not be probed.

use crate::SiteKind;
use gotrace_binary::pclntab::FuncTraits;
use gotrace_binary::sites::{ProbeSites, UprobeRefusal};
use gotrace_binary::{Function, GoBinary, VirtAddr};
use serde::Serialize;

/// Why gotrace will not probe a function, though a pattern names it: a uprobe there would
/// harm the program or could not be attached. The first three come from the function's own
/// record in `.gopclntab`, which the runtime keeps for its tracebacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// Hand-written assembly: no promise of a goroutine in R14 or of a Go frame, and it may
    /// run mid-write-barrier, on the signal or system stack, or without a goroutine at all.
    Assembly,
    /// It sets SP itself: a stack switch (systemstack, mcall, morestack, gogo, asmcgocall).
    StackSwitch,
    /// The outermost frame of a stack (goexit, mstart, rt0_go): nothing calls it.
    TopOfStack,
    /// A probe site's instruction cannot carry a uprobe.
    Instruction {
        site: SiteKind,
        addr: VirtAddr,
        why: UprobeRefusal,
    },
}

impl Refusal {
    /// A short name for counting refusals by kind.
    pub fn category(&self) -> &'static str {
        match self {
            Refusal::Assembly => "assembly",
            Refusal::StackSwitch => "stack switch",
            Refusal::TopOfStack => "top of a stack",
            Refusal::Instruction { .. } => "instruction the kernel cannot probe",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Assembly => f.write_str(
                "it is hand-written assembly, which may run without a goroutine, on the signal or system stack, or mid-write-barrier",
            ),
            Refusal::StackSwitch => f.write_str(
                "it switches stacks (writes SP), so the goroutine seen at its probes is not the one that called it",
            ),
            Refusal::TopOfStack => f.write_str("it is the outermost frame of a stack: it is never called"),
            Refusal::Instruction { site, addr, why } => {
                write!(f, "its {} site at {addr} is {why}", site.label())
            }
        }
    }
}

/// Whether `function` must not be probed, from what the binary records about it (its sites
/// aside: see [`site_refusal`]).
pub fn refusal(binary: &GoBinary, function: &Function) -> Option<Refusal> {
    let traits = binary.traits(function).unwrap_or_default();
    if traits.has(FuncTraits::SP_WRITE) {
        Some(Refusal::StackSwitch)
    } else if traits.has(FuncTraits::TOP_FRAME) {
        Some(Refusal::TopOfStack)
    } else if traits.has(FuncTraits::ASM) || function.name.ends_with(".abi0") {
        // Symbol tables name ABI0 assembly `.abi0`; Go before 1.19 sets no assembly flag.
        Some(Refusal::Assembly)
    } else {
        None
    }
}

/// The first of `sites` whose instruction cannot carry a uprobe (the kernel refuses it, or
/// would emulate it wrongly), as a refusal.
pub fn site_refusal(binary: &GoBinary, sites: &ProbeSites, entry_only: bool) -> Option<Refusal> {
    if binary.arch() != gotrace_binary::Arch::Amd64 {
        return None;
    }
    let returns = sites.returns.iter().filter(|_| !entry_only);
    std::iter::once((SiteKind::Entry, &sites.entry.addr))
        .chain(returns.map(|a| (SiteKind::Return, a)))
        .find_map(|(site, &addr)| {
            // An instruction is at most 15 bytes; fewer remain at the end of the text.
            let bytes = (1..=15)
                .rev()
                .find_map(|len| binary.bytes_at(addr, len).ok())?;
            let why = gotrace_binary::sites::uprobe_refusal_amd64(bytes)?;
            Some(Refusal::Instruction { site, addr, why })
        })
}
