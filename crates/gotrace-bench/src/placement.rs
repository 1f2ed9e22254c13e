//! What a probe costs depending on the instruction under it (issue 6): the empty program on
//! gotrace's own entry site (a conditional jump, which the kernel emulates), on the function's
//! first instruction (a `cmp`, which it single-steps out of line) and on its returns (`ret`,
//! single-stepped). Each call hits exactly one of the sites attached in a run, so the floor's
//! overhead per call is its cost per hit.

use crate::report::{FunctionBench, Handling, Placement, PlacementSite, Probes, Tracer};
use crate::run::{self, LoopTarget};
use anyhow::{Context, Result};
use gotrace_binary::{sites, Arch, GoBinary, VirtAddr};
use gotrace_plan::{ProbePlan, SiteKind};
use iced_x86::{Code, Decoder, DecoderOptions};

/// The kernel's canonical x86-64 NOPs (`x86_nops`, lengths 1 to 8): the only multi-byte NOPs
/// it emulates rather than single-steps.
const KERNEL_NOPS: [&[u8]; 8] = [
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// How the x86-64 kernel runs the instruction at the start of `bytes` when a uprobe on it
/// fires (arch/x86/kernel/uprobes.c: `branch_setup_xol_ops`, `push_setup_xol_ops`): relative
/// jumps, conditional jumps, relative calls, NOPs and `push reg` are emulated; anything else is
/// copied out of line and single-stepped (a debug exception: a VM exit on a KVM guest).
pub fn kernel_handling(bytes: &[u8]) -> Option<Handling> {
    let ins = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode();
    if ins.is_invalid() {
        return None;
    }
    let code = &bytes[..ins.len()];
    let emulated = ins.is_jcc_short_or_near()
        || matches!(
            ins.code(),
            Code::Jmp_rel8_64 | Code::Jmp_rel32_64 | Code::Call_rel32_64 | Code::Push_r64
        )
        || matches!(ins.code(), Code::Nopw | Code::Nopd | Code::Nopq)
        || KERNEL_NOPS.contains(&code);
    // The kernel refuses to emulate branches with an operand-size prefix.
    let prefixed_branch = ins.is_jcc_short_or_near() && code.first() == Some(&0x66);
    Some(if emulated && !prefixed_branch {
        Handling::Emulated
    } else {
        Handling::SingleStepped
    })
}

/// `jbe 0x48e40f` and how the kernel runs it.
fn instruction(binary: &GoBinary, addr: VirtAddr) -> (String, Option<Handling>) {
    let Some(function) = binary.function_at(addr) else {
        return ("?".into(), None);
    };
    let Ok(bytes) = binary.bytes_at(addr, (function.end.0 - addr.0).min(15)) else {
        return ("?".into(), None);
    };
    let text = sites::disassemble_one(binary.arch(), bytes, addr)
        .map_or_else(|| "?".into(), |(_, text)| text);
    let handling = match binary.arch() {
        Arch::Amd64 => kernel_handling(bytes),
        Arch::Arm64 => None,
    };
    (text, handling)
}

/// The empty program on gotrace's entry site (taken from `bench`, already measured), on the
/// function's first instruction, and on its returns.
pub fn measure(
    repeat: usize,
    binary: &GoBinary,
    target: &LoopTarget,
    bench: &FunctionBench,
    func: &str,
) -> Result<Vec<Placement>> {
    let function = bench.function.as_str();
    let entry_plan = crate::plan_for(binary, function, true)?;
    let full_plan = crate::plan_for(binary, function, false)?;
    let entry = entry_plan
        .sites
        .iter()
        .find(|s| s.kind == SiteKind::Entry)
        .with_context(|| format!("{function} has no entry site"))?;
    let first = binary.function(function)?.entry;

    let untraced = bench
        .find(Tracer::Untraced, Probes::None)
        .and_then(|r| r.ns_per_call);
    let per_hit = |run: &run::TargetRun| {
        run.output
            .filter(|_| run.status.success())
            .zip(untraced)
            .map(|(o, u)| o.ns_per_call - u)
    };
    let mut out = Vec::new();
    let mut push = |site: PlacementSite, addr: VirtAddr, ns: Option<f64>, status: String| {
        let (instruction, handling) = instruction(binary, addr);
        out.push(Placement {
            function: function.to_owned(),
            site,
            instruction,
            handling,
            ns_per_hit: ns,
            status,
        });
    };

    let gotrace_entry = bench.find(Tracer::Floor, Probes::EntryOnly);
    push(
        PlacementSite::GotraceEntry,
        entry.addr,
        gotrace_entry.and_then(|r| bench.overhead(r)),
        gotrace_entry.map_or_else(|| "not run".into(), |r| r.status.clone()),
    );

    if first != entry.addr {
        let mut plan = entry_plan.clone();
        for site in plan.sites.iter_mut().filter(|s| s.kind == SiteKind::Entry) {
            site.addr = first;
            site.file_offset = binary.file_offset(first)?;
        }
        let run = floor_median(repeat, &plan, target, func, function, "first instruction")?;
        push(
            PlacementSite::FirstInstruction,
            first,
            per_hit(&run),
            run.describe(None),
        );
    }

    let mut plan: ProbePlan = full_plan.clone();
    plan.sites.retain(|s| s.kind == SiteKind::Return);
    if let Some(ret) = plan.sites.first().map(|s| s.addr) {
        let run = floor_median(repeat, &plan, target, func, function, "returns only")?;
        push(
            PlacementSite::Returns {
                sites: plan.sites.len(),
            },
            ret,
            per_hit(&run),
            run.describe(None),
        );
    }
    Ok(out)
}

fn floor_median(
    repeat: usize,
    plan: &ProbePlan,
    target: &LoopTarget,
    func: &str,
    function: &str,
    what: &str,
) -> Result<run::TargetRun> {
    crate::note(&format!(
        "{function}: placement, floor on the {what} (median of {repeat})"
    ));
    crate::median(repeat, || run::under_floor(plan, target, func), |r| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_instructions_the_kernel_emulates() {
        let h = |bytes: &[u8]| kernel_handling(bytes).unwrap();
        // Go's stack check: `cmp rsp,[r14+0x10]` then `jbe`.
        assert_eq!(h(&[0x49, 0x3b, 0x66, 0x10]), Handling::SingleStepped);
        assert_eq!(h(&[0x76, 0x29]), Handling::Emulated);
        assert_eq!(h(&[0x0f, 0x86, 0, 1, 0, 0]), Handling::Emulated);
        // `cmp rax,2` then `jl` (Fibonacci).
        assert_eq!(h(&[0x48, 0x83, 0xf8, 0x02]), Handling::SingleStepped);
        assert_eq!(h(&[0x7c, 0x05]), Handling::Emulated);
        assert_eq!(h(&[0xc3]), Handling::SingleStepped); // ret
        assert_eq!(h(&[0xe8, 0x7b, 0xff, 0xff, 0xff]), Handling::Emulated); // call rel32
        assert_eq!(h(&[0xeb, 0xb6]), Handling::Emulated); // jmp rel8
        assert_eq!(h(&[0xff, 0xe0]), Handling::SingleStepped); // jmp rax
        assert_eq!(h(&[0x55]), Handling::Emulated); // push rbp
        assert_eq!(h(&[0x0f, 0x1f, 0x40, 0x00]), Handling::Emulated); // canonical nopl
        assert_eq!(h(&[0x0f, 0x1f, 0x40, 0x01]), Handling::SingleStepped); // other nopl
        assert_eq!(h(&[0x48, 0x89, 0xd8]), Handling::SingleStepped); // mov rax,rbx
        assert_eq!(h(&[0xe2, 0x00]), Handling::SingleStepped); // loop
        assert_eq!(kernel_handling(&[0x0f]), None);
    }
}
