//! Inlined calls, from the inline trees Go keeps in `.gopclntab` for its own tracebacks —
//! present even in stripped binaries.
//!
//! Each function's `_func` record (Go 1.18+: `runtime/runtime2.go`) is followed by `npcdata`
//! u32 offsets into `pctab` and `nfuncdata` u32 offsets from the module's `gofunc`.
//! `PCDATA_InlTreeIndex` (2) maps each pc to the inline tree node whose body it belongs to
//! (-1: the function's own code); `FUNCDATA_InlTree` (3) is the array of nodes
//! (`runtime/symtabinl.go`, `cmd/internal/obj/inl.go`):
//!
//! | Go        | `inlinedCall` (bytes)                                                          |
//! |-----------|--------------------------------------------------------------------------------|
//! | 1.18–1.19 | parent i16, funcID u8, pad, file i32, line i32, nameOff i32, parentPc i32 (20)  |
//! | 1.20+     | funcID u8, pad ×3, nameOff i32, parentPc i32, startLine i32 (16)                |
//!
//! A node's parent is the node the pc `parentPc` (an instruction at the call site) belongs to,
//! so a pc of a nested body belongs to every enclosing inlined call's body too.

use crate::pclntab::record::{pc_values, FuncRecord};
use crate::pclntab::{self, RawTable, Reader};
use crate::{BinaryError, VirtAddr};
use std::collections::HashMap;

pub(crate) const PCDATA_INL_TREE_INDEX: u64 = 2;
pub(crate) const FUNCDATA_INL_TREE: u64 = 3;
/// Inlined calls nested deeper than this are treated as a corrupt tree (a parent cycle).
pub(crate) const MAX_NESTING: usize = 256;

/// One place a function's body was inlined into another function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlinedBody {
    /// Entry of the function whose code holds the body.
    pub caller_entry: VirtAddr,
    /// The body's code: every pc range of the node or of a node nested in it, in address order.
    pub ranges: Vec<(VirtAddr, VirtAddr)>,
}

impl InlinedBody {
    /// The body's first instruction: its lowest address.
    pub fn start(&self) -> VirtAddr {
        self.ranges[0].0
    }

    /// Where the run of code that starts the body ends (adjacent ranges joined).
    pub fn first_run_end(&self) -> VirtAddr {
        let mut end = self.ranges[0].1;
        for &(lo, hi) in &self.ranges[1..] {
            if lo != end {
                break;
            }
            end = hi;
        }
        end
    }
}

/// Every inlined body in the binary, by the inlined function's name.
#[derive(Debug, Default)]
pub struct InlineIndex {
    bodies: HashMap<String, Vec<InlinedBody>>,
    /// Each function's stack-pointer table (`pcsp`), by entry: offset in `pctab`.
    pcsp: HashMap<VirtAddr, u64>,
    pctab: Vec<u8>,
}

impl InlineIndex {
    /// Every function inlined somewhere, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.bodies.keys().map(String::as_str)
    }

    /// The bodies of `name` inlined anywhere, in address order.
    pub fn bodies(&self, name: &str) -> &[InlinedBody] {
        self.bodies.get(name).map_or(&[], |b| b.as_slice())
    }

    /// How far SP is below its value at the function's entry, at `pc` inside it (pclntab's
    /// `pcsp` table); `None` when the table does not cover `pc`.
    pub fn sp_delta(&self, function_entry: VirtAddr, pc: VirtAddr) -> Option<u64> {
        let &off = self.pcsp.get(&function_entry)?;
        let r = Reader { data: &self.pctab };
        let runs = pc_values(&r, off, function_entry.0, 1).ok()?;
        let v = runs.iter().find(|(lo, hi, _)| *lo <= pc.0 && pc.0 < *hi)?.2;
        u64::try_from(v).ok()
    }
}

/// Reads every function's inline tree. `functions` are the table's own (entry, end) in table
/// order; `gofunc(off, len)` reads `len` bytes at `gofunc + off`. Tables older than Go 1.18
/// give an empty index (no toolchain that old is supported for tracing).
pub(crate) fn index<'g>(
    table: RawTable<'_>,
    entries: &[VirtAddr],
    quantum: u8,
    gofunc: impl Fn(u64, u64) -> Option<&'g [u8]>,
) -> Result<InlineIndex, BinaryError> {
    let Some(node_size) = InlineTree::node_size(table.magic) else {
        return Ok(InlineIndex::default());
    };
    let r = Reader { data: table.data };
    let pctab_len = (table.data.len() as u64).saturating_sub(table.pctab);
    let pctab = r.bytes(table.pctab, pctab_len, "pc-value tables")?;
    let pcr = Reader { data: pctab };
    let mut out = InlineIndex {
        pctab: pctab.to_vec(),
        ..InlineIndex::default()
    };
    for (i, &entry) in entries.iter().enumerate().take(table.nfunc as usize) {
        let Some(record) = FuncRecord::nth(&table, i as u64)? else {
            break;
        };
        let pcsp = record.pcsp()?;
        if pcsp != 0 {
            out.pcsp.insert(entry, pcsp);
        }
        let (Some(index_table), Some(tree_off)) = (
            record.pcdata(PCDATA_INL_TREE_INDEX)?,
            record.funcdata(FUNCDATA_INL_TREE)?,
        ) else {
            continue;
        };
        let runs = pc_values(&pcr, index_table, entry.0, quantum)?;
        let nodes = runs.iter().map(|r| r.2 + 1).max().unwrap_or(0).max(0) as u64;
        if nodes == 0 {
            continue;
        }
        let tree = gofunc(tree_off, nodes * node_size).ok_or_else(|| {
            pclntab::malformed(
                record.at,
                format!("the inline tree of the function at {entry} lies outside the image"),
            )
        })?;
        let tree = InlineTree::new(tree, table.magic);
        let node = |k: i64| tree.node(k);
        let index_at = |pc: u64| {
            runs.iter()
                .find(|(lo, hi, _)| *lo <= pc && pc < *hi)
                .map_or(-1, |r| r.2)
        };
        // Every node's body: its own ranges and those of the nodes nested in it.
        let mut bodies: HashMap<i64, Vec<(VirtAddr, VirtAddr)>> = HashMap::new();
        for &(lo, hi, k) in &runs {
            let mut k = k;
            for _ in 0..MAX_NESTING {
                if k < 0 {
                    break;
                }
                bodies
                    .entry(k)
                    .or_default()
                    .push((VirtAddr(lo), VirtAddr(hi)));
                let parent_pc = node(k)?.parent_pc;
                let parent = index_at(entry.0 + parent_pc);
                // A parent is an enclosing call: it was created before its children.
                k = if parent < k { parent } else { -1 };
            }
        }
        let names = table.names.map_or(0, |(start, _)| start);
        for (k, mut ranges) in bodies {
            let name_off = node(k)?.name_off;
            let name = read_name(&r, names + name_off, table.names)?;
            ranges.sort();
            out.bodies.entry(name).or_default().push(InlinedBody {
                caller_entry: entry,
                ranges,
            });
        }
    }
    for bodies in out.bodies.values_mut() {
        bodies.sort_by_key(|b| b.start());
    }
    Ok(out)
}

fn read_name(r: &Reader<'_>, off: u64, within: Option<(u64, u64)>) -> Result<String, BinaryError> {
    let (lo, hi) = within.unwrap_or((0, r.data.len() as u64));
    if off < lo || off >= hi {
        return Err(pclntab::malformed(
            off,
            "inlined function name outside the name table",
        ));
    }
    let rest = r.bytes(off, hi - off, "inlined function name")?;
    let len = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| pclntab::malformed(off, "inlined function name is not NUL-terminated"))?;
    Ok(pclntab::elf_name(&rest[..len]))
}

/// A function's inline tree (`FUNCDATA_InlTree`): an array of `inlinedCall` nodes.
pub(crate) struct InlineTree<'g> {
    data: &'g [u8],
    magic: u32,
}

impl<'g> InlineTree<'g> {
    /// Bytes per node in a table with this magic; `None` before Go 1.18.
    pub(crate) fn node_size(magic: u32) -> Option<u64> {
        match magic {
            0xFFFF_FFF0 => Some(20),
            0xFFFF_FFF1 => Some(16),
            _ => None,
        }
    }

    pub(crate) fn new(data: &'g [u8], magic: u32) -> Self {
        InlineTree { data, magic }
    }

    /// Node `k`: the inlined function's name and `funcID`, and an instruction of the call
    /// site, as an offset from the outer function's entry.
    pub(crate) fn node(&self, k: i64) -> Result<InlineNode, BinaryError> {
        let size = Self::node_size(self.magic).unwrap_or(16);
        let at =
            u64::try_from(k).map_err(|_| pclntab::malformed(0, "negative inline node"))? * size;
        let t = Reader { data: self.data };
        let (func_id, name, parent) = match self.magic {
            0xFFFF_FFF0 => (2, 12, 16),
            _ => (0, 4, 8),
        };
        Ok(InlineNode {
            name_off: u64::from(t.u32(at + name)?),
            parent_pc: u64::from(t.u32(at + parent)?),
            func_id: t.u8(at + func_id)?,
        })
    }
}

/// One node of an inline tree.
pub(crate) struct InlineNode {
    pub name_off: u64,
    pub parent_pc: u64,
    pub func_id: u8,
}

/// A place to probe an inlined call: an instruction of the caller's linear decode.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InlinedSite {
    /// The function whose code holds the inlined body.
    pub caller: String,
    /// The body's first instruction.
    pub body_start: VirtAddr,
    /// Where the probe goes: the body's first instruction, or the jump it leads straight to.
    pub addr: VirtAddr,
    /// How far SP is below its value at the caller's entry, at `addr` (`None`: unknown).
    pub sp_delta: Option<u64>,
}

/// Where to probe a body that starts at instruction `first` of `instructions` (the caller's
/// linear decode) and whose first run of code ends at `run_end`: a jump there, reached from
/// the first instruction through instructions that cannot fault or branch (so every pass
/// through the first reaches it), because the kernel emulates a jump but single-steps the
/// rest; otherwise the first instruction.
pub(crate) fn probe_instruction(
    instructions: &[iced_x86::Instruction],
    first: usize,
    run_end: VirtAddr,
) -> VirtAddr {
    use iced_x86::{FlowControl, Mnemonic as M, OpKind};
    let start = VirtAddr(instructions[first].ip());
    for ins in &instructions[first..] {
        if ins.ip() >= run_end.0 {
            break;
        }
        match ins.flow_control() {
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                return VirtAddr(ins.ip())
            }
            FlowControl::Next => {}
            _ => break,
        }
        let touches_memory = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory)
            && ins.mnemonic() != M::Lea;
        let harmless = matches!(
            ins.mnemonic(),
            M::Mov
                | M::Movzx
                | M::Movsx
                | M::Movsxd
                | M::Lea
                | M::Add
                | M::Sub
                | M::And
                | M::Or
                | M::Xor
                | M::Cmp
                | M::Test
                | M::Inc
                | M::Dec
                | M::Neg
                | M::Not
                | M::Shl
                | M::Shr
                | M::Sar
                | M::Imul
                | M::Nop
        );
        if touches_memory || !harmless || ins.has_lock_prefix() {
            break;
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Vec<iced_x86::Instruction> {
        let mut d = iced_x86::Decoder::with_ip(64, bytes, 0x1000, iced_x86::DecoderOptions::NONE);
        let mut out = Vec::new();
        while d.can_decode() {
            out.push(d.decode());
        }
        out
    }

    #[test]
    fn probe_moves_to_a_jump_only_through_harmless_instructions() {
        // mov rax,rbx; add rax,1; jmp +0
        let code = [0x48, 0x89, 0xd8, 0x48, 0x83, 0xc0, 0x01, 0xeb, 0x00];
        let ins = decode(&code);
        assert_eq!(
            probe_instruction(&ins, 0, VirtAddr(0x1009)),
            VirtAddr(0x1007)
        );
        // The body's first run ends before the jump: stay on the first instruction.
        assert_eq!(
            probe_instruction(&ins, 0, VirtAddr(0x1007)),
            VirtAddr(0x1000)
        );
        // mov rax,[rbx] may fault (a nil check): a pass could stop there.
        let code = [0x48, 0x8b, 0x03, 0xeb, 0x00];
        assert_eq!(
            probe_instruction(&decode(&code), 0, VirtAddr(0x1005)),
            VirtAddr(0x1000)
        );
        // A call before the jump: stay.
        let code = [0xe8, 0, 0, 0, 0, 0xeb, 0x00];
        assert_eq!(
            probe_instruction(&decode(&code), 0, VirtAddr(0x1007)),
            VirtAddr(0x1000)
        );
        // A body that starts with a jump is probed there.
        let code = [0x74, 0x00];
        assert_eq!(
            probe_instruction(&decode(&code), 0, VirtAddr(0x1002)),
            VirtAddr(0x1000)
        );
    }
}
