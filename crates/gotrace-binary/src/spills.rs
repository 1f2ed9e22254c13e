//! Which register each argument arrives in, read from the function's own stack-growth path.
//!
//! A Go function with a stack check (amd64, `cmd/internal/obj/x86/obj6.go` `stacksplit`)
//! branches from its prologue to a block at its end that stores every register argument to its
//! spill slot, calls `runtime.morestack*`, loads them back and jumps to the entry:
//!
//! ```text
//!   CMPQ SP, 16(R14); JBE grow; ...body...
//! grow:
//!   MOVQ AX, 8(SP); MOVSD X0, 16(SP); ...      spills (FuncInfo.SpillRegisterArgs)
//!   CALL runtime.morestack_noctxt
//!   MOVQ 8(SP), AX; MOVSD 16(SP), X0; ...      the same slots, back (UnspillRegisterArgs)
//!   JMP entry
//! ```
//!
//! The compiler records the spills (`ssa.Func.RegArgs`) once it emits the first register
//! argument it uses, and then records all of them, in register order, each at
//! `8 + its offset in the argument frame` above SP at entry (the return address is below) —
//! the same offsets the traceback metadata (`FUNCDATA_ArgInfo`) gives. A function that uses
//! none of its register arguments spills nothing.

use crate::abi::AbiReg;
use crate::{Function, VirtAddr};
use iced_x86::{Code, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// One register argument's spill: the register, and the slot it is stored to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spill {
    pub reg: AbiReg,
    /// Offset in the argument frame (from SP at entry plus the return address).
    pub offset: u64,
    /// Bytes stored: the register's part that is the argument.
    pub size: u64,
}

/// What the stack-growth path of a function shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StackGrowth {
    /// No call of runtime.morestack: a NOSPLIT function (leaf, or assembly).
    None,
    /// The compiler's block, with its spills in order (possibly none).
    Spills(Vec<Spill>),
}

/// The return address CALL pushed sits between SP at entry and the argument frame.
const RETURN_ADDRESS: u64 = 8;

/// Reads the stack-growth block of `function` from its linear decode. `Err` says why a block
/// that calls morestack is not exactly the compiler's pattern: then nothing is claimed.
pub(crate) fn amd64<'a>(
    function: &Function,
    instructions: &[Instruction],
    function_at: impl Fn(VirtAddr) -> Option<&'a str>,
) -> Result<StackGrowth, String> {
    let is_morestack = |ins: &Instruction| {
        ins.flow_control() == FlowControl::Call
            && function_at(VirtAddr(ins.near_branch_target())).is_some_and(|name| {
                matches!(
                    name.strip_suffix(".abi0").unwrap_or(name),
                    "runtime.morestack" | "runtime.morestack_noctxt"
                )
            })
    };
    let calls: Vec<usize> = (0..instructions.len())
        .filter(|&i| is_morestack(&instructions[i]))
        .collect();
    let call = match calls[..] {
        [] => return Ok(StackGrowth::None),
        [call] => call,
        _ => return Err(format!("{} calls of runtime.morestack", calls.len())),
    };
    // The prologue's first conditional branch is the stack check's (huge frames check for
    // wrap-around first, with a branch to the same block).
    let check = instructions
        .iter()
        .find(|i| i.flow_control() == FlowControl::ConditionalBranch)
        .ok_or("no conditional branch leads to the morestack call")?;
    let target = check.near_branch_target();
    let start = instructions[..=call]
        .iter()
        .position(|i| i.ip() == target)
        .ok_or_else(|| {
            format!(
                "the stack check at {:#x} branches to {target:#x}, not to a block ending in the morestack call",
                check.ip()
            )
        })?;
    let mut spills = Vec::with_capacity(call - start);
    // The assembler may pad before the call (Go 1.19–1.20 align calls that end a block).
    for ins in instructions[start..call]
        .iter()
        .filter(|i| i.mnemonic() != Mnemonic::Nop)
    {
        let spill = spill_store(ins).ok_or_else(|| {
            format!(
                "the instruction at {:#x} before the morestack call is not a spill of an argument register",
                ins.ip()
            )
        })?;
        if spills.iter().any(|s: &Spill| {
            s.reg == spill.reg
                || (s.offset < spill.offset + spill.size && spill.offset < s.offset + s.size)
        }) {
            return Err(format!(
                "the spill at {:#x} repeats a register or overlaps a slot",
                ins.ip()
            ));
        }
        spills.push(spill);
    }
    // The loads back must mirror the spills, then the block jumps to the entry: this is the
    // compiler's block, not code that merely looks like its start.
    let mut rest = instructions[call + 1..]
        .iter()
        .filter(|i| i.mnemonic() != Mnemonic::Nop);
    for spill in &spills {
        let reload = rest.next().and_then(reload);
        if reload != Some(*spill) {
            return Err(format!(
                "the loads after the morestack call do not restore the spill of {:?} at {}",
                spill.reg, spill.offset
            ));
        }
    }
    match rest.next() {
        Some(jmp)
            if jmp.flow_control() == FlowControl::UnconditionalBranch
                && jmp.near_branch_target() == function.entry.0 => {}
        _ => return Err("the morestack block does not jump back to the entry".into()),
    }
    Ok(StackGrowth::Spills(spills))
}

/// `MOV[BWLQ] reg, disp(SP)`, `MOVSD`/`MOVSS Xn, disp(SP)` with an argument register.
fn spill_store(ins: &Instruction) -> Option<Spill> {
    let store = matches!(
        ins.code(),
        Code::Mov_rm8_r8
            | Code::Mov_rm16_r16
            | Code::Mov_rm32_r32
            | Code::Mov_rm64_r64
            | Code::Movsd_xmmm64_xmm
            | Code::Movss_xmmm32_xmm
    );
    if !store || ins.op0_kind() != OpKind::Memory || ins.op1_kind() != OpKind::Register {
        return None;
    }
    slot(ins, ins.op1_register())
}

/// The load of a spill back: `MOV`, `MOVZX` (sub-word integers) or `MOVSD`/`MOVSS`.
fn reload(ins: &Instruction) -> Option<Spill> {
    let load = matches!(
        ins.code(),
        Code::Mov_r8_rm8
            | Code::Mov_r16_rm16
            | Code::Mov_r32_rm32
            | Code::Mov_r64_rm64
            | Code::Movzx_r32_rm8
            | Code::Movzx_r32_rm16
            | Code::Movzx_r64_rm8
            | Code::Movzx_r64_rm16
            | Code::Movsd_xmm_xmmm64
            | Code::Movss_xmm_xmmm32
    );
    if !load || ins.op0_kind() != OpKind::Register || ins.op1_kind() != OpKind::Memory {
        return None;
    }
    slot(ins, ins.op0_register())
}

/// The argument register and SP-relative slot of a spill or its reload.
fn slot(ins: &Instruction, reg: Register) -> Option<Spill> {
    if ins.memory_base() != Register::RSP
        || ins.memory_index() != Register::None
        || ins.segment_prefix() != Register::None
    {
        return None;
    }
    // Sign-extended: a slot below the return address is no argument's.
    let disp = u64::try_from(ins.memory_displacement64() as i64).ok()?;
    let offset = disp.checked_sub(RETURN_ADDRESS)?;
    let size = ins.memory_size().size() as u64;
    Some(Spill {
        reg: abi_reg(reg)?,
        offset,
        size,
    })
}

/// The ABI's position of an amd64 register (any width of the integer registers; high-byte
/// registers are never arguments).
fn abi_reg(reg: Register) -> Option<AbiReg> {
    if reg.is_xmm() {
        let n = reg.number();
        return (n < 15).then_some(AbiReg::Float(n as u8));
    }
    if matches!(
        reg,
        Register::AH | Register::BH | Register::CH | Register::DH
    ) {
        return None;
    }
    const INT: [Register; 9] = [
        Register::RAX,
        Register::RBX,
        Register::RCX,
        Register::RDI,
        Register::RSI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
    ];
    let full = reg.full_register();
    INT.iter()
        .position(|&r| r == full)
        .map(|i| AbiReg::Int(i as u8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(code: &[u8], entry: u64) -> Vec<Instruction> {
        let mut d = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
        let mut out = Vec::new();
        while d.can_decode() {
            out.push(d.decode());
        }
        out
    }

    fn function(len: usize) -> Function {
        Function {
            name: "main.f".into(),
            entry: VirtAddr(0x1000),
            end: VirtAddr(0x1000 + len as u64),
        }
    }

    /// cmp rsp,[r14+0x10]; jbe grow; ret; grow: mov [rsp+8],rax; movsd [rsp+0x10],xmm0;
    /// mov [rsp+0x18],bl; call morestack_noctxt; mov rax,[rsp+8]; movsd xmm0,[rsp+0x10];
    /// movzx ebx,byte [rsp+0x18]; jmp entry.
    fn block() -> Vec<u8> {
        let mut code = vec![0x49, 0x3b, 0x66, 0x10, 0x76, 0x01, 0xc3];
        code.extend([0x48, 0x89, 0x44, 0x24, 0x08]);
        code.extend([0xf2, 0x0f, 0x11, 0x44, 0x24, 0x10]);
        code.extend([0x88, 0x5c, 0x24, 0x18]);
        code.extend([0xe8, 0x00, 0x00, 0x00, 0x00]);
        code.extend([0x48, 0x8b, 0x44, 0x24, 0x08]);
        code.extend([0xf2, 0x0f, 0x10, 0x44, 0x24, 0x10]);
        code.extend([0x0f, 0xb6, 0x5c, 0x24, 0x18]);
        let jmp_at = code.len() as i64 + 2;
        code.extend([0xeb, (-jmp_at) as u8]);
        code
    }

    fn morestack_at(call_end: u64) -> impl Fn(VirtAddr) -> Option<&'static str> {
        move |a| (a.0 == call_end).then_some("runtime.morestack_noctxt.abi0")
    }

    #[test]
    fn the_compilers_block_gives_each_register_and_slot() {
        let code = block();
        let f = function(code.len());
        let ins = decode(&code, 0x1000);
        // The call's target is its own end (rel32 0).
        let call_end = ins.iter().find(|i| i.is_call_near()).unwrap().next_ip();
        let got = amd64(&f, &ins, morestack_at(call_end)).unwrap();
        let spill = |reg, offset, size| Spill { reg, offset, size };
        assert_eq!(
            got,
            StackGrowth::Spills(vec![
                spill(AbiReg::Int(0), 0, 8),
                spill(AbiReg::Float(0), 8, 8),
                spill(AbiReg::Int(1), 16, 1),
            ])
        );
    }

    #[test]
    fn a_reload_that_differs_or_a_jump_elsewhere_claims_nothing() {
        let code = block();
        let ins = decode(&code, 0x1000);
        let call_end = ins.iter().find(|i| i.is_call_near()).unwrap().next_ip();
        // The first reload from 0x10 instead of 8.
        let mut bad = code.clone();
        let reload = (call_end - 0x1000) as usize;
        bad[reload + 4] = 0x10;
        let f = function(bad.len());
        assert!(amd64(&f, &decode(&bad, 0x1000), morestack_at(call_end)).is_err());
        // The final jump one byte past the entry.
        let mut bad = code.clone();
        let last = bad.len() - 1;
        bad[last] = bad[last].wrapping_add(1);
        assert!(amd64(&f, &decode(&bad, 0x1000), morestack_at(call_end)).is_err());
        // A spill below the return address: mov [rsp-8],rax.
        let mut bad = code.clone();
        bad[7 + 4] = 0xf8;
        assert!(amd64(&f, &decode(&bad, 0x1000), morestack_at(call_end)).is_err());
        // No morestack call at all: a NOSPLIT function.
        assert_eq!(
            amd64(&f, &ins, |_| None::<&str>).unwrap(),
            StackGrowth::None
        );
    }

    /// Every single-byte change of the block, and random bytes, give a block or a reason,
    /// never a panic; and whatever is accepted still reloads what it spilled.
    #[test]
    fn mutated_blocks_never_panic() {
        let code = block();
        let ins = decode(&code, 0x1000);
        let call_end = ins.iter().find(|i| i.is_call_near()).unwrap().next_ip();
        let mut accepted = 0;
        for at in 0..code.len() {
            for value in [
                0x00, 0x01, 0x08, 0x10, 0x24, 0x44, 0x89, 0x8b, 0xc3, 0xe8, 0xff,
            ] {
                let mut bad = code.clone();
                bad[at] = value;
                let f = function(bad.len());
                if let Ok(StackGrowth::Spills(_)) =
                    amd64(&f, &decode(&bad, 0x1000), morestack_at(call_end))
                {
                    accepted += 1;
                }
            }
        }
        // Changes to the body before the block (ret → another one-byte instruction) keep it.
        assert!(accepted > 0);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..48)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let f = function(bytes.len());
            let _ = amd64(&f, &decode(&bytes, 0x1000), |_| {
                Some("runtime.morestack_noctxt")
            });
        }
    }
}
