//! A model of the capture interpreter in gotrace-kernel's `bpf/gotrace.bpf.c` (`send_scratch`,
//! `capture_step`, `run_read`, `run_gather`, `run_dynamic`): the same steps, bounds and
//! payload layout, so a recipe can be run against a memory image without root. Where the C
//! masks an offset or clamps a length, so does this; where the kernel crate encodes an op into
//! `struct gt_op` (a guard's bound clamped to u32, a constant guard operand meaning "no
//! guard"), the model reads the op the same way; what the kernel crate sets before load (the
//! Swiss group's slot count and empty-control bits) comes from the plan, as there.

use gotrace_plan::recipe::{CaptureOp, Gather, Guard, OpKind, Operand, Recipe};
use gotrace_plan::{Capture, CaptureStatus, ProbePlan, INT_REGS};
use std::collections::HashMap;

// gotrace.h's `enum gt_limits`.
const MAX_OPS: usize = 64;
const DYNAMIC_BASE: u32 = 64;
const MAX_READ: u64 = 8192;
const PAYLOAD_MAX: u32 = 32768;
const MAX_HOPS: u32 = 8;
// gotrace.bpf.c's defines.
const MAX_STEPS: usize = MAX_OPS * 8;
const PAYLOAD_MASK: u32 = PAYLOAD_MAX - 1;
const NO_POS: u32 = u32::MAX;
/// `sizeof(struct gt_capture)`: addr u64, want u64, len u32, op u16, status u8, pad u8.
pub const CAPTURE_HEADER: u32 = 24;

// gotrace.h's `enum gt_capture_status`.
const OK: u8 = 0;
const TRUNCATED: u8 = 1;
const FAULT: u8 = 2;
const NIL: u8 = 3;
const NO_ROOM: u8 = 4;
const GATHERED: u8 = 5;

/// `struct gt_capture`'s fields.
struct Record {
    addr: u64,
    want: u64,
    len: u32,
    op: u32,
    status: u8,
}

/// The traced process's memory as `bpf_probe_read_user` sees it: a read succeeds whole or not
/// at all.
pub trait UserMemory {
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]>;
}

/// The per-CPU `struct gt_scratch` and the maps the program reads.
pub struct Machine<'a> {
    type_recipes: HashMap<u64, &'a Recipe>,
    load_bias: u64,
    /// The program's `swiss_group_slots` and `swiss_ctrl_empty`.
    group_slots: u32,
    ctrl_empty: u8,
    regs: [u64; INT_REGS],
    sp: u64,
    data_word: u64,
    payload: Vec<u8>,
    pos: [u32; 2 * MAX_OPS],
    lens: [u32; 2 * MAX_OPS],
    payload_len: u32,
    main: &'a [CaptureOp],
    main_index: usize,
    dynamic: &'a [CaptureOp],
    dyn_index: usize,
    dyn_hops: u32,
}

impl<'a> Machine<'a> {
    /// The program loaded for `plan` (its type recipes by link-time runtime type address, its
    /// Swiss-table constants), in a process whose load bias is `load_bias`.
    pub fn new(plan: &'a ProbePlan, load_bias: u64) -> Self {
        let swiss = plan.layout.swiss();
        Machine {
            type_recipes: plan.type_recipes.iter().map(|(a, r)| (*a, r)).collect(),
            load_bias,
            group_slots: swiss.group_slots as u32,
            ctrl_empty: swiss.ctrl_empty,
            regs: [0; INT_REGS],
            sp: 0,
            data_word: 0,
            payload: vec![0; (PAYLOAD_MAX as u64 + MAX_READ + 64) as usize],
            pos: [0; 2 * MAX_OPS],
            lens: [0; 2 * MAX_OPS],
            payload_len: 0,
            main: &[],
            main_index: 0,
            dynamic: &[],
            dyn_index: 0,
            dyn_hops: 0,
        }
    }

    /// `send_scratch`: runs `recipe` at a probe with these registers and stack pointer and
    /// returns the event's payload (its `gt_capture` records), as the ring buffer carries it.
    pub fn run(
        &mut self,
        recipe: &'a Recipe,
        regs: [u64; INT_REGS],
        sp: u64,
        memory: &dyn UserMemory,
    ) -> Vec<u8> {
        self.regs = regs;
        self.sp = sp;
        self.payload_len = 0;
        self.main = &recipe.ops[..recipe.ops.len().min(MAX_OPS)];
        self.main_index = 0;
        self.dynamic = &[];
        self.dyn_index = 0;
        for _ in 0..MAX_STEPS {
            if !self.step(memory) {
                break;
            }
        }
        let len = self.payload_len.min(PAYLOAD_MAX) as usize;
        self.payload[..len].to_vec()
    }

    /// `capture_step`: a dynamic recipe's ops run before the main recipe goes on.
    fn step(&mut self, memory: &dyn UserMemory) -> bool {
        let (op, slot, slot_base) = if self.dyn_index < self.dynamic.len() {
            let op = self.dynamic[self.dyn_index];
            let slot = DYNAMIC_BASE + (self.dyn_index as u32 & (MAX_OPS as u32 - 1));
            self.dyn_index += 1;
            (op, slot, DYNAMIC_BASE)
        } else if self.main_index < self.main.len() {
            let op = self.main[self.main_index];
            let slot = self.main_index as u32 & (MAX_OPS as u32 - 1);
            self.main_index += 1;
            (op, slot, 0)
        } else {
            return false;
        };
        match op.kind {
            OpKind::Read { elem_size, max_len } => {
                self.run_read(&op, elem_size, max_len, slot, slot_base, memory)
            }
            OpKind::Dynamic => self.run_dynamic(&op, slot_base),
            OpKind::Gather(g) => self.run_gather(&op, &g, slot, slot_base),
        }
        true
    }

    /// `operand_value`: `None` where the C returns -1.
    fn operand(&self, o: Operand, slot_base: u32) -> Option<u64> {
        let (v, add) = match o {
            Operand::Const(add) => (0, add),
            Operand::Reg { index, add } => (*self.regs.get(index as usize)?, add),
            Operand::Sp { add } => (self.sp, add),
            Operand::Data { add } => (self.data_word, add),
            Operand::Word { op, off, add } => {
                let slot = ((slot_base + u32::from(op)) & (2 * MAX_OPS as u32 - 1)) as usize;
                let pos = self.pos[slot];
                if pos == NO_POS || u64::from(off) + 8 > u64::from(self.lens[slot]) {
                    return None;
                }
                let at = (pos.wrapping_add(off) & PAYLOAD_MASK) as usize;
                let word = u64::from_le_bytes(self.payload[at..at + 8].try_into().ok()?);
                (word, add)
            }
        };
        Some(v.wrapping_add(add as u64))
    }

    /// `guarded_off`. The kernel crate stores a guard as (operand, bound clamped to u32,
    /// at-most flag); an operand of kind NONE (a constant) means no guard at all.
    fn guarded_off(&self, guard: Option<Guard>, slot_base: u32) -> bool {
        let (operand, bound, at_most) = match guard {
            None => return false,
            Some(Guard::Above(o, b)) => (o, b, false),
            Some(Guard::AtMost(o, b)) => (o, b, true),
        };
        if matches!(operand, Operand::Const(_)) {
            return false;
        }
        let bound = bound.clamp(0, i64::from(u32::MAX));
        match self.operand(operand, slot_base) {
            None => true,
            Some(v) => ((v as i64) <= bound) != at_most,
        }
    }

    /// `record_capture`.
    fn record(&mut self, at: u32, data_at: u32, cap: Record) {
        let Record {
            addr,
            want,
            len,
            op,
            status,
        } = cap;
        let header = at & PAYLOAD_MASK;
        let mut bytes = [0u8; CAPTURE_HEADER as usize];
        bytes[0..8].copy_from_slice(&addr.to_le_bytes());
        bytes[8..16].copy_from_slice(&want.to_le_bytes());
        bytes[16..20].copy_from_slice(&len.to_le_bytes());
        bytes[20..22].copy_from_slice(&(op as u16).to_le_bytes());
        bytes[22] = status;
        let h = header as usize;
        self.payload[h..h + bytes.len()].copy_from_slice(&bytes);
        let slot = (op & (2 * MAX_OPS as u32 - 1)) as usize;
        self.pos[slot] = data_at;
        self.lens[slot] = len;
        self.payload_len = at + CAPTURE_HEADER + ((len + 7) & !7);
    }

    fn run_read(
        &mut self,
        op: &CaptureOp,
        elem_size: u32,
        max_len: u32,
        slot: u32,
        slot_base: u32,
        memory: &dyn UserMemory,
    ) {
        self.pos[slot as usize] = NO_POS;
        self.lens[slot as usize] = 0;
        if self.guarded_off(op.guard, slot_base) {
            return;
        }
        let (Some(addr), Some(mut want)) = (
            self.operand(op.addr, slot_base),
            self.operand(op.len, slot_base),
        ) else {
            return;
        };
        if elem_size != 0 {
            want = if (want as i64) < 0 {
                0
            } else {
                want.wrapping_mul(u64::from(elem_size))
            };
        }
        let mut keep = want.min(u64::from(max_len)).min(MAX_READ);
        let mut status = if keep < want { TRUNCATED } else { OK };
        let mut at = self.payload_len;
        if u64::from(at) + u64::from(CAPTURE_HEADER) + keep > u64::from(PAYLOAD_MAX) {
            if at + CAPTURE_HEADER > PAYLOAD_MAX {
                return;
            }
            status = NO_ROOM;
            keep = 0;
        }
        if addr == 0 {
            status = NIL;
            keep = 0;
        }
        at &= PAYLOAD_MASK;
        let data_at = (at + CAPTURE_HEADER) & PAYLOAD_MASK;
        if keep > 0 {
            match memory.read(addr, keep as usize) {
                Some(bytes) => {
                    let d = data_at as usize;
                    self.payload[d..d + bytes.len()].copy_from_slice(bytes);
                }
                None => {
                    status = FAULT;
                    keep = 0;
                }
            }
        }
        let cap = Record {
            addr,
            want,
            len: keep as u32,
            op: slot,
            status,
        };
        self.record(at, data_at, cap);
    }

    /// `run_gather` and its `gather_slot` loop.
    fn run_gather(&mut self, op: &CaptureOp, g: &Gather, slot: u32, slot_base: u32) {
        self.pos[slot as usize] = NO_POS;
        self.lens[slot as usize] = 0;
        if self.guarded_off(op.guard, slot_base) || g.group_size == 0 || self.group_slots == 0 {
            return;
        }
        let mut at = self.payload_len;
        if at + CAPTURE_HEADER > PAYLOAD_MAX {
            return;
        }
        at &= PAYLOAD_MASK;
        let data_at = at + CAPTURE_HEADER;
        let room = PAYLOAD_MAX - data_at;
        let max = g.max_len.min(MAX_READ as u32);
        let out_end = data_at + max.min(room);
        let mut out = data_at;
        let size = g.size & (MAX_READ as u32 - 1);
        for source in [Some(g.first), g.second] {
            let Some(source) = source else { break };
            let src_slot = ((slot_base + u32::from(source)) & (2 * MAX_OPS as u32 - 1)) as usize;
            if self.pos[src_slot] == NO_POS {
                continue;
            }
            let (src, src_len) = (self.pos[src_slot], self.lens[src_slot]);
            let slots = u64::from(self.group_slots);
            for index in 0..u64::from(src_len / g.group_size) * slots {
                let group = (index / slots) as u32 * g.group_size;
                let s = (index % slots) as u32;
                // `gather_slot` returning 1: this source's loop ends, the next one's begins.
                if group + g.group_size > src_len || out + g.size > out_end {
                    break;
                }
                let ctrl = self.payload[((src + group + g.ctrl + s) & PAYLOAD_MASK) as usize];
                if ctrl & self.ctrl_empty != 0 {
                    continue;
                }
                let from = ((src + group + g.base + s * g.stride) & PAYLOAD_MASK) as usize;
                let to = (out & PAYLOAD_MASK) as usize;
                self.payload.copy_within(from..from + size as usize, to);
                out += g.size;
            }
        }
        let kept = out - data_at;
        let cap = Record {
            addr: 0,
            want: u64::from(kept),
            len: kept,
            op: slot,
            status: GATHERED,
        };
        self.record(at, data_at, cap);
    }

    fn run_dynamic(&mut self, op: &CaptureOp, slot_base: u32) {
        if slot_base == 0 {
            self.dyn_hops = 0;
        } else if self.dyn_index != self.dynamic.len() {
            return;
        } else {
            self.dyn_hops += 1;
            if self.dyn_hops > MAX_HOPS {
                return;
            }
        }
        let (Some(type_addr), Some(data)) = (
            self.operand(op.addr, slot_base),
            self.operand(op.len, slot_base),
        ) else {
            return;
        };
        if type_addr == 0 {
            return;
        }
        let Some(recipe) = self
            .type_recipes
            .get(&type_addr.wrapping_sub(self.load_bias))
        else {
            return;
        };
        self.dynamic = &recipe.ops[..recipe.ops.len().min(MAX_OPS)];
        self.dyn_index = 0;
        self.data_word = data;
    }
}

/// The `gt_capture` records of a payload, as the kernel crate hands them to the decoder.
pub fn captures(payload: &[u8]) -> Vec<Capture> {
    let mut out = Vec::new();
    let mut rest = payload;
    let header = CAPTURE_HEADER as usize;
    while rest.len() >= header {
        let u64_at = |at: usize| u64::from_le_bytes(rest[at..at + 8].try_into().unwrap());
        let len = u32::from_le_bytes(rest[16..20].try_into().unwrap()) as usize;
        let Some(bytes) = rest.get(header..header + len) else {
            break;
        };
        let status = match rest[22] {
            OK => CaptureStatus::Ok,
            TRUNCATED => CaptureStatus::Truncated,
            FAULT => CaptureStatus::Fault,
            NIL => CaptureStatus::Nil,
            GATHERED => CaptureStatus::Gathered,
            _ => CaptureStatus::NoRoom,
        };
        out.push(Capture {
            addr: u64_at(0),
            want: u64_at(8),
            status,
            bytes: bytes.to_vec(),
        });
        rest = rest.get(header + len.div_ceil(8) * 8..).unwrap_or(&[]);
    }
    out
}
