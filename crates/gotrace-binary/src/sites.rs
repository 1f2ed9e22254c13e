//! Probe sites, from a linear decode of a function's machine code: where the entry probe goes,
//! every RET, and every call of `runtime.deferreturn`.
//!
//! The entry probe is placed on the prologue's stack-check jump when the function has one: the
//! kernel emulates a jump (about 15× cheaper than single-stepping the `cmp` before it), the
//! arguments are still in their registers there, and the flags tell whether this pass is about
//! to call `runtime.morestack` and restart the function — a pass the probe then ignores, so one
//! call gives one entry.

use crate::{Arch, BinaryError, Function, VirtAddr};
use iced_x86::{
    Code, ConditionCode, Decoder, DecoderOptions, FlowControl, Formatter, Instruction,
    InstructionInfoFactory, IntelFormatter, OpAccess, Register,
};
use serde::Serialize;

/// When the entry probe fires on a pass that will not run the function body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipCondition {
    /// The stack-check jump is taken when CF is set (`jb`/`jc`).
    CarrySet,
    /// The stack-check jump is taken when CF or ZF is set (`jbe`).
    CarryOrZeroSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EntrySite {
    pub addr: VirtAddr,
    /// `Some` when the site is the stack-check jump: the pass where it holds restarts the
    /// function after growing the stack and must not count as an entry.
    pub skip_if: Option<SkipCondition>,
    /// The site can fire twice for one call: it is not the stack-check jump, yet the function
    /// can grow its stack and restart from its entry.
    pub may_restart: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeSites {
    pub entry: EntrySite,
    /// Every RET instruction: the function's normal returns.
    pub returns: Vec<VirtAddr>,
    /// Every `CALL runtime.deferreturn`: where a recovered panic resumes the function.
    pub deferreturns: Vec<VirtAddr>,
}

/// Decodes `code` (the bytes of `function`, exactly its size) and finds its probe sites.
/// `function_at` names the function a call target lands in.
pub fn find<'a>(
    arch: Arch,
    function: &Function,
    code: &[u8],
    function_at: impl Fn(VirtAddr) -> Option<&'a str>,
) -> Result<ProbeSites, BinaryError> {
    match arch {
        Arch::Amd64 => find_amd64(function, code, function_at),
        Arch::Arm64 => find_arm64(function, code, function_at),
    }
}

fn find_amd64<'a>(
    function: &Function,
    code: &[u8],
    function_at: impl Fn(VirtAddr) -> Option<&'a str>,
) -> Result<ProbeSites, BinaryError> {
    let instructions = decode_amd64(function, code)?;
    let mut returns = Vec::new();
    let mut deferreturns = Vec::new();
    for ins in &instructions {
        if ins.flow_control() == FlowControl::Return {
            returns.push(VirtAddr(ins.ip()));
        } else if ins.flow_control() == FlowControl::Call
            && function_at(VirtAddr(ins.near_branch_target())) == Some("runtime.deferreturn")
            && ins.near_branch_target() != 0
        {
            deferreturns.push(VirtAddr(ins.ip()));
        }
    }
    let mut entry = entry_site_amd64(function, &instructions, &function_at);
    entry.may_restart = entry.skip_if.is_none()
        && instructions.iter().any(|ins| {
            ins.flow_control() == FlowControl::Call
                && function_at(VirtAddr(ins.near_branch_target()))
                    .is_some_and(|name| name.starts_with("runtime.morestack"))
        });
    Ok(ProbeSites {
        entry,
        returns,
        deferreturns,
    })
}

pub(crate) fn decode_amd64(
    function: &Function,
    code: &[u8],
) -> Result<Vec<Instruction>, BinaryError> {
    let mut decoder = Decoder::with_ip(64, code, function.entry.0, DecoderOptions::NONE);
    let mut out = Vec::with_capacity(code.len() / 4);
    while decoder.can_decode() {
        let offset = decoder.position();
        let ins = decoder.decode();
        if ins.is_invalid() {
            let end = (offset + 15).min(code.len());
            return Err(BinaryError::Undecodable {
                function: function.name.clone(),
                addr: function.entry.offset(offset as u64),
                bytes: hex(&code[offset..end]),
            });
        }
        out.push(ins);
    }
    Ok(out)
}

/// The first jump of the function reached through instructions that only set flags or touch
/// the stack-check scratch register R12 — so every argument register still holds its value —
/// or, failing that, the function's first instruction.
fn entry_site_amd64<'a>(
    function: &Function,
    instructions: &[Instruction],
    function_at: &impl Fn(VirtAddr) -> Option<&'a str>,
) -> EntrySite {
    let fallback = EntrySite {
        addr: function.entry,
        skip_if: None,
        may_restart: false,
    };
    // The last stack-growth jump seen so far. Frames over 4 KiB check twice (`sub r12; jb`
    // for underflow, then `cmp r12,[r14+16]; jbe`): only the last jump is passed by exactly the
    // passes that run the body.
    let mut stack_check: Option<EntrySite> = None;
    let mut info = InstructionInfoFactory::new();
    for ins in instructions.iter().take(8) {
        match ins.flow_control() {
            FlowControl::ConditionalBranch
                if calls_morestack(instructions, ins.near_branch_target(), function_at) =>
            {
                let skip_if = match ins.condition_code() {
                    ConditionCode::be => SkipCondition::CarryOrZeroSet,
                    ConditionCode::b => SkipCondition::CarrySet,
                    // A stack check we cannot evaluate: probing the first instruction instead
                    // is slower but still right.
                    _ => return fallback,
                };
                stack_check = Some(EntrySite {
                    addr: VirtAddr(ins.ip()),
                    skip_if: Some(skip_if),
                    may_restart: false,
                });
            }
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                return stack_check.unwrap_or(EntrySite {
                    addr: VirtAddr(ins.ip()),
                    skip_if: None,
                    may_restart: false,
                });
            }
            FlowControl::Next => {
                let writes_only_scratch = info.info(ins).used_registers().iter().all(|r| {
                    r.access() == OpAccess::Read
                        || r.access() == OpAccess::CondRead
                        || r.register().full_register() == Register::R12
                });
                if !writes_only_scratch || ins.code() == Code::Nopd {
                    break;
                }
            }
            _ => break,
        }
    }
    stack_check.unwrap_or(fallback)
}

/// Whether the code at `target` (inside this function) reaches a call of runtime.morestack*
/// before any other branch: Go's out-of-line stack-growth block spills the register arguments,
/// calls morestack and jumps back to the entry.
fn calls_morestack<'a>(
    instructions: &[Instruction],
    target: u64,
    function_at: &impl Fn(VirtAddr) -> Option<&'a str>,
) -> bool {
    let Some(start) = instructions.iter().position(|i| i.ip() == target) else {
        return false;
    };
    for ins in &instructions[start..] {
        match ins.flow_control() {
            FlowControl::Next => continue,
            FlowControl::Call => {
                return function_at(VirtAddr(ins.near_branch_target()))
                    .is_some_and(|name| name.starts_with("runtime.morestack"));
            }
            _ => return false,
        }
    }
    false
}

const ARM64_RET: u32 = 0xd65f_03c0;

fn find_arm64<'a>(
    function: &Function,
    code: &[u8],
    function_at: impl Fn(VirtAddr) -> Option<&'a str>,
) -> Result<ProbeSites, BinaryError> {
    if !code.len().is_multiple_of(4) {
        return Err(BinaryError::Undecodable {
            function: function.name.clone(),
            addr: function.entry.offset((code.len() - code.len() % 4) as u64),
            bytes: hex(&code[code.len() - code.len() % 4..]),
        });
    }
    let mut returns = Vec::new();
    let mut deferreturns = Vec::new();
    for (i, word) in code.chunks_exact(4).enumerate() {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        let addr = function.entry.offset(4 * i as u64);
        if word == ARM64_RET {
            returns.push(addr);
        } else if word & 0xfc00_0000 == 0x9400_0000 {
            // BL imm26: target = pc + sign_extend(imm26) * 4.
            let imm = ((word & 0x03ff_ffff) << 6) as i32 >> 6;
            let target = addr.0.wrapping_add_signed(i64::from(imm) * 4);
            if function_at(VirtAddr(target)) == Some("runtime.deferreturn") {
                deferreturns.push(addr);
            }
        }
    }
    Ok(ProbeSites {
        entry: EntrySite {
            addr: function.entry,
            skip_if: None,
            may_restart: false,
        },
        returns,
        deferreturns,
    })
}

/// Decodes the one instruction at the start of `bytes` (at address `addr`): its length and its
/// Intel-syntax text (`int3`, `cmp rax,2`). `None` when the bytes do not decode.
pub fn disassemble_one(arch: Arch, bytes: &[u8], addr: VirtAddr) -> Option<(usize, String)> {
    match arch {
        Arch::Amd64 => {
            let mut decoder = Decoder::with_ip(64, bytes, addr.0, DecoderOptions::NONE);
            let ins = decoder.decode();
            if ins.is_invalid() {
                return None;
            }
            let mut formatter = IntelFormatter::new();
            let options = formatter.options_mut();
            options.set_hex_prefix("0x");
            options.set_hex_suffix("");
            options.set_uppercase_hex(false);
            options.set_show_branch_size(false);
            options.set_branch_leading_zeros(false);
            options.set_space_after_operand_separator(true);
            let mut text = String::new();
            formatter.format(&ins, &mut text);
            Some((ins.len(), text))
        }
        Arch::Arm64 => {
            let word = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
            let text = match word {
                ARM64_RET => "ret".to_owned(),
                // The breakpoint the kernel's arm64 uprobes write.
                0x0000_0000..=0x0000_ffff => format!("udf #{word:#x}"),
                _ => format!(".word {word:#010x}"),
            };
            Some((4, text))
        }
    }
}

/// Bytes as `48 83 f8 02`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a probe at an instruction would be refused by the kernel, or would change what the
/// program does. Mirrors `arch_uprobe_analyze_insn` in Linux's `arch/x86/kernel/uprobes.c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UprobeRefusal {
    /// A LOCK or ES/CS/SS/DS segment prefix: the kernel refuses to single-step it.
    LockOrSegmentPrefix,
    /// An opcode outside the kernel's table of instructions it will single-step.
    Opcode(u8),
    /// `mov ss`: it masks exceptions, so the kernel never single-steps it.
    MovSs,
    /// A relative branch with an operand-size prefix: the kernel refuses it.
    SizedBranch,
    /// `xchg` with R8 (opcode 0x90 with REX.B): the kernel emulates every instruction whose
    /// opcode byte is 0x90 as a NOP, so the probed program would skip the exchange. Go 1.19's
    /// `runtime.gcWriteBarrierR8` begins with one: probing it corrupts the heap.
    SkippedAsNop,
    /// VEX/EVEX/XOP-encoded: the kernel looks its opcode byte up as a one-byte instruction's
    /// (a VEX `0xeb` would be emulated as `jmp`).
    VectorEncoded,
}

impl std::fmt::Display for UprobeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UprobeRefusal::LockOrSegmentPrefix => {
                f.write_str("a lock- or segment-prefixed instruction, which the kernel will not probe")
            }
            UprobeRefusal::Opcode(op) => {
                write!(f, "opcode {op:#04x}, which the kernel will not probe")
            }
            UprobeRefusal::MovSs => f.write_str("`mov ss`, which the kernel will not probe"),
            UprobeRefusal::SizedBranch => {
                f.write_str("a 0x66-prefixed branch, which the kernel will not probe")
            }
            UprobeRefusal::SkippedAsNop => f.write_str(
                "`xchg r8, rax`, which the kernel would emulate as a nop (the program would skip it)",
            ),
            UprobeRefusal::VectorEncoded => f.write_str(
                "a VEX/EVEX-encoded instruction, which the kernel could mistake for a branch",
            ),
        }
    }
}

/// One-byte opcodes the kernel's `good_insns_64` table leaves out (invalid in 64-bit mode,
/// privileged, or traps of their own).
const UPROBE_BAD_OPCODES: [u8; 40] = [
    0x06, 0x07, 0x0e, 0x16, 0x17, 0x1e, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x60, 0x61, 0x62, 0x6c, 0x6d,
    0x6e, 0x6f, 0x82, 0x9a, 0xcc, 0xcd, 0xce, 0xcf, 0xd4, 0xd5, 0xd6, 0xe4, 0xe5, 0xe6, 0xe7, 0xea,
    0xec, 0xed, 0xee, 0xef, 0xf1, 0xf4, 0xfa, 0xfb,
];

/// Whether a uprobe can sit on the amd64 instruction at the start of `bytes` and leave the
/// program's behaviour unchanged; `Some(reason)` when it cannot. Refuses whatever the kernel
/// would refuse (so one bad site cannot fail a whole uprobe_multi batch) and what it would
/// emulate wrongly.
pub fn uprobe_refusal_amd64(bytes: &[u8]) -> Option<UprobeRefusal> {
    let mut at = 0;
    let mut operand_size = false;
    while let Some(&b) = bytes.get(at) {
        match b {
            0xf0 | 0x26 | 0x2e | 0x36 | 0x3e => return Some(UprobeRefusal::LockOrSegmentPrefix),
            0x66 => operand_size = true,
            0xf2 | 0xf3 | 0x64 | 0x65 | 0x67 => {}
            _ => break,
        }
        at += 1;
    }
    let rex = bytes.get(at).copied().filter(|b| b & 0xf0 == 0x40);
    if rex.is_some() {
        at += 1;
    }
    let op = *bytes.get(at)?;
    let modrm_reg = bytes.get(at + 1).map(|m| (m >> 3) & 7);
    match op {
        0xc4 | 0xc5 | 0x62 => return Some(UprobeRefusal::VectorEncoded),
        0x8f if modrm_reg != Some(0) => return Some(UprobeRefusal::VectorEncoded),
        _ if UPROBE_BAD_OPCODES.contains(&op) => return Some(UprobeRefusal::Opcode(op)),
        0x8e if modrm_reg == Some(2) => return Some(UprobeRefusal::MovSs),
        0x90 if rex.is_some_and(|r| r & 1 != 0) => return Some(UprobeRefusal::SkippedAsNop),
        _ => {}
    }
    let branch = matches!(op, 0xe8 | 0xe9 | 0xeb | 0x70..=0x7f)
        || (op == 0x0f && bytes.get(at + 1).is_some_and(|b| (0x80..=0x8f).contains(b)));
    (branch && operand_size).then_some(UprobeRefusal::SizedBranch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn func(code: &[u8]) -> Function {
        Function {
            name: "main.f".into(),
            entry: VirtAddr(0x1000),
            end: VirtAddr(0x1000 + code.len() as u64),
        }
    }

    // main.Fibonacci from the seed service, Go 1.23, -gcflags=-l: a leaf without stack check.
    const FIBONACCI: &[u8] = &[
        0x48, 0x83, 0xf8, 0x02, // cmp rax,2
        0x7c, 0x0e, // jl +0xe
        0xb9, 0x02, 0x00, 0x00, 0x00, // mov ecx,2
        0xba, 0x01, 0x00, 0x00, 0x00, // mov edx,1
        0x31, 0xdb, // xor ebx,ebx
        0xeb, 0x0e, // jmp
        0xc3, // ret
        0x48, 0xff, 0xc1, // inc rcx
        0x48, 0x8d, 0x34, 0x13, // lea rsi,[rbx+rdx]
        0x48, 0x89, 0xd3, // mov rbx,rdx
        0x48, 0x89, 0xd6, // mov rsi,rdx
        0x48, 0x39, 0xc8, // cmp rax,rcx
        0x7d, 0xee, // jge
        0x48, 0x89, 0xd0, // mov rax,rdx
        0xc3, // ret
    ];

    #[test]
    fn leaf_function_enters_on_first_jump_and_finds_every_ret() {
        let f = func(FIBONACCI);
        let sites = find(Arch::Amd64, &f, FIBONACCI, |_| None).unwrap();
        assert_eq!(
            sites.entry,
            EntrySite {
                addr: VirtAddr(0x1004),
                skip_if: None,
                may_restart: false,
            }
        );
        assert_eq!(sites.returns, vec![VirtAddr(0x1014), VirtAddr(0x102a)]);
        assert!(sites.deferreturns.is_empty());
    }

    #[test]
    fn stack_check_jump_is_the_entry_and_is_skipped_when_growing() {
        // cmp rsp,[r14+0x10]; jbe +N; push rbp; ...; ret; (morestack block:) mov [rsp+8],rax;
        // call runtime.morestack_noctxt; mov rax,[rsp+8]; jmp entry
        let code: &[u8] = &[
            0x49, 0x3b, 0x66, 0x10, // cmp rsp,[r14+0x10]
            0x76, 0x02, // jbe +2 -> 0x1008
            0x90, // nop
            0xc3, // ret
            0x48, 0x89, 0x44, 0x24, 0x08, // mov [rsp+8],rax
            0xe8, 0xf3, 0x0f, 0x00, 0x00, // call 0x2005
            0x48, 0x8b, 0x44, 0x24, 0x08, // mov rax,[rsp+8]
            0xeb, 0xe3, // jmp 0x1000
        ];
        let f = func(code);
        let sites = find(Arch::Amd64, &f, code, |a| {
            (a == VirtAddr(0x2005)).then_some("runtime.morestack_noctxt")
        })
        .unwrap();
        assert_eq!(
            sites.entry,
            EntrySite {
                addr: VirtAddr(0x1004),
                skip_if: Some(SkipCondition::CarryOrZeroSet),
                may_restart: false,
            }
        );
        assert_eq!(sites.returns, vec![VirtAddr(0x1007)]);
    }

    #[test]
    fn big_frames_enter_on_the_second_stack_check() {
        // mov r12,rsp; sub r12,0x2000; jb grow; cmp r12,[r14+0x10]; jbe grow; ret;
        // grow: call runtime.morestack_noctxt; jmp entry
        let code: &[u8] = &[
            0x49, 0x89, 0xe4, // mov r12,rsp
            0x49, 0x81, 0xec, 0x00, 0x20, 0x00, 0x00, // sub r12,0x2000
            0x72, 0x07, // jb +7 -> 0x1013
            0x4d, 0x3b, 0x66, 0x10, // cmp r12,[r14+0x10]
            0x76, 0x01, // jbe +1 -> 0x1013
            0xc3, // ret
            0xe8, 0xe8, 0x0f, 0x00, 0x00, // call 0x2000
            0xeb, 0xe6, // jmp 0x1000
        ];
        let sites = find(Arch::Amd64, &func(code), code, |a| {
            (a == VirtAddr(0x2000)).then_some("runtime.morestack_noctxt")
        })
        .unwrap();
        assert_eq!(
            sites.entry,
            EntrySite {
                addr: VirtAddr(0x1010),
                skip_if: Some(SkipCondition::CarryOrZeroSet),
                may_restart: false,
            }
        );
    }

    #[test]
    fn argument_register_written_before_any_jump_probes_the_first_instruction() {
        let code: &[u8] = &[0x48, 0x89, 0xd8, 0xeb, 0x00, 0xc3]; // mov rax,rbx; jmp; ret
        let sites = find(Arch::Amd64, &func(code), code, |_| None).unwrap();
        assert_eq!(sites.entry.addr, VirtAddr(0x1000));
    }

    #[test]
    fn uprobe_refusals_follow_the_kernels_rules() {
        let cases: [(&[u8], Option<UprobeRefusal>); 12] = [
            // expvar.(*Int).Add: lock xadd [rax], rbx
            (
                &[0xf0, 0x48, 0x0f, 0xc1, 0x18],
                Some(UprobeRefusal::LockOrSegmentPrefix),
            ),
            // Go 1.19 runtime.gcWriteBarrierR8: xchg rax, r8
            (&[0x49, 0x90], Some(UprobeRefusal::SkippedAsNop)),
            (&[0x41, 0x90], Some(UprobeRefusal::SkippedAsNop)),
            // xchg rax, r9 is single-stepped, which is right
            (&[0x49, 0x91], None),
            (&[0x90], None),
            (&[0xf3, 0x90], None), // pause
            (&[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00], None),
            (&[0xcd, 0x80], Some(UprobeRefusal::Opcode(0xcd))),
            (&[0x66, 0xe9, 0x00, 0x00], Some(UprobeRefusal::SizedBranch)),
            (
                &[0xc5, 0xf9, 0xeb, 0xc1],
                Some(UprobeRefusal::VectorEncoded),
            ), // vpor
            (&[0x8e, 0xd0], Some(UprobeRefusal::MovSs)),
            // cmp rsp, [r14+0x10]; jbe; ret
            (&[0x49, 0x3b, 0x66, 0x10], None),
        ];
        for (bytes, want) in cases {
            assert_eq!(uprobe_refusal_amd64(bytes), want, "{}", hex(bytes));
        }
        assert_eq!(uprobe_refusal_amd64(&[0x76, 0x10]), None);
        assert_eq!(uprobe_refusal_amd64(&[0xc3]), None);
    }

    #[test]
    fn undecodable_bytes_are_an_error_not_skipped() {
        let code: &[u8] = &[0xc3, 0x0f, 0x0b, 0x06]; // ret; ud2; (invalid in 64-bit mode)
        let err = find(Arch::Amd64, &func(code), code, |_| None).unwrap_err();
        assert!(matches!(
            err,
            BinaryError::Undecodable {
                addr: VirtAddr(0x1003),
                ..
            }
        ));
    }

    #[test]
    fn arm64_ret_and_deferreturn_calls() {
        let mut code = Vec::new();
        code.extend_from_slice(&0x9400_0400u32.to_le_bytes()); // bl +0x1000 -> 0x2000
        code.extend_from_slice(&ARM64_RET.to_le_bytes());
        let sites = find(Arch::Arm64, &func(&code), &code, |a| {
            (a == VirtAddr(0x2000)).then_some("runtime.deferreturn")
        })
        .unwrap();
        assert_eq!(sites.returns, vec![VirtAddr(0x1004)]);
        assert_eq!(sites.deferreturns, vec![VirtAddr(0x1000)]);
    }
}
