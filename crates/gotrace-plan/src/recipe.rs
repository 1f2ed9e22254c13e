//! Capture recipes: which user memory the BPF program reads at a site so the decoder can show
//! strings, slices, pointed-to values, interfaces and maps, not just registers. A recipe is a
//! list of ops; each reads bytes at an address computed from a register, the stack pointer, or
//! a word an earlier op captured. Interfaces dispatch on their dynamic type at run time to the
//! recipe registered for that type. Everything is bounded: bytes per op, elements, pointer depth,
//! ops per recipe — and laid out breadth first, so what a bound leaves out is the deepest.

use gotrace_binary::abi::{AbiReg, Location};
use gotrace_binary::arginfo::UntypedArgs;
use gotrace_binary::layout::RuntimeLayout;
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use serde::Serialize;
use std::collections::VecDeque;

mod maps;
pub use maps::{
    map_layout, map_slots_shown, swiss_entries_followed, swiss_groups_read, swiss_part_followed,
    MapLayout, SlotPart, SwissLayout, MAP_BUCKETS_READ,
};

/// Ops one recipe may hold (the BPF side's GT_MAX_OPS).
pub const MAX_OPS: usize = 64;
/// Bytes one op may read (the BPF side's GT_MAX_READ).
pub const MAX_READ: u32 = 8192;

/// How much to capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Bytes of a string (or of a slice's backing array) kept.
    pub string_max: u32,
    /// Elements of a slice, array or map shown.
    pub elems: u32,
    /// Pointers followed from an argument.
    pub depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            string_max: 256,
            elems: 16,
            depth: 3,
        }
    }
}

/// A value an op computes from the site's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operand {
    Const(i64),
    /// Integer ABI register `index` (RAX, RBX, RCX, RDI, RSI, R8–R11) plus `add`.
    Reg {
        index: u8,
        add: i64,
    },
    /// The stack pointer plus `add`.
    Sp {
        add: i64,
    },
    /// The 8-byte word at `off` in the bytes op `op` of the same recipe captured, plus `add`.
    Word {
        op: u16,
        off: u32,
        add: i64,
    },
    /// The data word of the interface a dynamic-type recipe runs for, plus `add`.
    Data {
        add: i64,
    },
}

impl Operand {
    fn plus(self, by: i64) -> Operand {
        match self {
            Operand::Const(v) => Operand::Const(v + by),
            Operand::Reg { index, add } => Operand::Reg {
                index,
                add: add + by,
            },
            Operand::Sp { add } => Operand::Sp { add: add + by },
            Operand::Word { op, off, add } => Operand::Word {
                op,
                off,
                add: add + by,
            },
            Operand::Data { add } => Operand::Data { add: add + by },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Read `len × elem_size` bytes (`len` bytes when `elem_size` is 0), at most `max_len`.
    Read { elem_size: u32, max_len: u32 },
    /// Run the recipe of the runtime type at `addr`, with `len` as the interface's data word.
    Dynamic,
    /// Copy one part (keys or values) of every full slot of a Swiss map's captured groups side
    /// by side, so that later ops find the n-th entry at a fixed offset wherever the hash put
    /// it. `addr` and `len` are unused.
    Gather(Gather),
}

/// Where a gather finds a Swiss map's slots and which part of each it copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Gather {
    /// The ops whose captures are walked, in order (a small map's group, a table's groups):
    /// one that did not run adds no slot.
    pub first: u16,
    pub second: Option<u16>,
    pub group_size: u32,
    /// Offset in a group of its 8 control bytes (high bit clear: the slot is full).
    pub ctrl: u32,
    /// The part of slot s is `size` bytes at `base + s × stride` in its group.
    pub base: u32,
    pub stride: u32,
    pub size: u32,
    /// Bytes copied at most: `size` per entry.
    pub max_len: u32,
}

/// When an op runs: its reads are wasted, or wrong to interpret, otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// The operand's value is greater than the constant (an element index below a slice's
    /// length, a non-nil interface, a Swiss map with a directory).
    Above(Operand, i64),
    /// The operand's value is at most the constant (a Swiss map without a directory: small).
    AtMost(Operand, i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CaptureOp {
    pub kind: OpKind,
    pub addr: Operand,
    pub len: Operand,
    pub guard: Option<Guard>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Recipe {
    pub ops: Vec<CaptureOp>,
    /// Some wanted reads did not fit in [`MAX_OPS`].
    pub incomplete: bool,
}

/// Where the 8-byte words of a value can be found while its recipe runs.
#[derive(Clone, Debug)]
enum Home {
    /// In registers: (value offset, register index) of each whole-register piece.
    Regs(Vec<(u64, u8)>),
    /// In the bytes op `op` captured, from `base` on.
    Captured { op: u16, base: u32 },
    /// The interface data word itself (a pointer-shaped dynamic value).
    DataWord,
}

impl Home {
    fn word(&self, off: u64) -> Option<Operand> {
        match self {
            Home::Regs(pieces) => pieces
                .iter()
                .find(|(at, _)| *at == off)
                .map(|&(_, index)| Operand::Reg { index, add: 0 }),
            Home::Captured { op, base } => Some(Operand::Word {
                op: *op,
                off: base + u32::try_from(off).ok()?,
                add: 0,
            }),
            Home::DataWord => (off == 0).then_some(Operand::Data { add: 0 }),
        }
    }

    fn shifted(&self, by: u64) -> Home {
        match self {
            Home::Regs(pieces) => Home::Regs(
                pieces
                    .iter()
                    .filter(|(at, _)| *at >= by)
                    .map(|&(at, index)| (at - by, index))
                    .collect(),
            ),
            Home::Captured { op, base } => Home::Captured {
                op: *op,
                base: base + by as u32,
            },
            Home::DataWord if by == 0 => Home::DataWord,
            Home::DataWord => Home::Regs(Vec::new()),
        }
    }
}

/// Work left for a later level of the breadth-first compile.
enum Task {
    Value {
        home: Home,
        ty: TypeId,
        depth: u32,
        guard: Option<Guard>,
    },
    Dynamic {
        type_addr: Operand,
        data: Operand,
        guard: Option<Guard>,
    },
}

/// Builds recipes for one site kind (or one dynamic type). Ops are laid out breadth first:
/// every value's own memory (a top-level string's bytes, what a top-level pointer points at)
/// before anything found inside it, so when the ops or the event's bytes run out it is the
/// deepest fields that go unread, never a top-level argument.
pub struct Compiler<'t> {
    types: &'t TypeTable,
    limits: Limits,
    /// The runtime's offsets: itabs, maps, and maps without a layout in DWARF.
    layout: RuntimeLayout,
    recipe: Recipe,
    guard: Option<Guard>,
    queue: VecDeque<Task>,
    /// Compiling a dynamic type's recipe: the BPF side runs an interface found inside it only
    /// as the recipe's last op (its recipe then takes over), so one such interface is kept for
    /// the end.
    in_dynamic: bool,
    tail: Option<CaptureOp>,
}

impl<'t> Compiler<'t> {
    pub fn new(types: &'t TypeTable, limits: Limits, layout: RuntimeLayout) -> Self {
        Compiler {
            types,
            limits,
            layout,
            recipe: Recipe::default(),
            guard: None,
            queue: VecDeque::new(),
            in_dynamic: false,
            tail: None,
        }
    }

    /// Ops capturing the values at `locations` (one site's arguments or results).
    pub fn site(mut self, values: &[(TypeId, &Location)]) -> Recipe {
        for &(ty, location) in values {
            match location {
                Location::Empty => {}
                Location::Registers(pieces) => {
                    let words = pieces
                        .iter()
                        .filter_map(|p| match p.reg {
                            AbiReg::Int(index) if p.size == 8 => Some((p.value_offset, index)),
                            _ => None,
                        })
                        .collect();
                    self.later(Home::Regs(words), ty, self.limits.depth);
                }
                Location::Stack { sp_offset } => {
                    let size = self.types.get(ty).size;
                    if let Some(op) = self.read(
                        Operand::Sp {
                            add: *sp_offset as i64,
                        },
                        Operand::Const(size as i64),
                        0,
                        size as u32,
                    ) {
                        self.later(Home::Captured { op, base: 0 }, ty, self.limits.depth);
                    }
                }
            }
        }
        self.drain()
    }

    /// One read capturing the stack words of untyped arguments (register words need none:
    /// the registers come with every call).
    pub fn stack_words(mut self, args: &UntypedArgs) -> Recipe {
        let span = args
            .words()
            .filter_map(|w| match w.location {
                Ok(Location::Stack { sp_offset }) => Some((sp_offset, sp_offset + w.size)),
                _ => None,
            })
            .reduce(|(lo, hi), (l, h)| (lo.min(l), hi.max(h)));
        if let Some((lo, hi)) = span {
            self.read(
                Operand::Sp { add: lo as i64 },
                Operand::Const((hi - lo) as i64),
                0,
                (hi - lo) as u32,
            );
        }
        self.recipe
    }

    /// Ops capturing an interface's dynamic value of type `ty`, given its data word.
    pub fn dynamic(mut self, ty: TypeId) -> Recipe {
        self.in_dynamic = true;
        let size = self.types.get(ty).size;
        if size == 0 {
            return self.recipe;
        }
        let depth = self.limits.depth.saturating_sub(1);
        if is_pointer_shaped(self.types, ty) {
            self.later(Home::DataWord, ty, depth);
        } else if let Some(op) = self.read(
            Operand::Data { add: 0 },
            Operand::Const(size as i64),
            0,
            size.min(u64::from(MAX_READ)) as u32,
        ) {
            self.later(Home::Captured { op, base: 0 }, ty, depth);
        }
        self.drain()
    }

    fn drain(mut self) -> Recipe {
        while let Some(task) = self.queue.pop_front() {
            if self.recipe.ops.len() >= MAX_OPS {
                self.recipe.incomplete = true;
                break;
            }
            match task {
                Task::Value {
                    home,
                    ty,
                    depth,
                    guard,
                } => {
                    self.guard = guard;
                    self.value(&home, ty, depth);
                }
                Task::Dynamic {
                    type_addr,
                    data,
                    guard,
                } => {
                    let op = CaptureOp {
                        kind: OpKind::Dynamic,
                        addr: type_addr,
                        len: data,
                        guard,
                    };
                    if !self.in_dynamic {
                        self.push(op);
                    } else if self.tail.is_none() {
                        self.tail = Some(op);
                    } else {
                        self.recipe.incomplete = true;
                    }
                }
            }
        }
        if let Some(tail) = self.tail.take() {
            self.push(tail);
        }
        self.recipe
    }

    /// Queues a value found in memory this level reads, for the next level.
    fn later(&mut self, home: Home, ty: TypeId, depth: u32) {
        self.queue.push_back(Task::Value {
            home,
            ty,
            depth,
            guard: self.guard,
        });
    }

    fn push(&mut self, op: CaptureOp) -> Option<u16> {
        if self.recipe.ops.len() >= MAX_OPS {
            self.recipe.incomplete = true;
            return None;
        }
        self.recipe.ops.push(op);
        Some((self.recipe.ops.len() - 1) as u16)
    }

    fn read(&mut self, addr: Operand, len: Operand, elem_size: u32, max_len: u32) -> Option<u16> {
        let guard = self.guard;
        self.push(CaptureOp {
            kind: OpKind::Read {
                elem_size,
                max_len: max_len.min(MAX_READ),
            },
            addr,
            len,
            guard,
        })
    }

    /// Reads `ty`'s memory found at `home`, and queues what lies behind it.
    fn value(&mut self, home: &Home, ty: TypeId, depth: u32) {
        let t = self.types.get(ty);
        match &t.kind {
            TypeKind::String => {
                if let (Some(ptr), Some(len)) = (home.word(0), home.word(self.layout.string_len)) {
                    self.read(ptr, len, 0, self.limits.string_max);
                }
            }
            TypeKind::Slice { elem } => self.slice(home, *elem, depth),
            TypeKind::Array { elem, len } => {
                let elem_size = self.types.get(*elem).size;
                if has_pointers(self.types, *elem) {
                    for i in 0..(*len).min(u64::from(self.limits.elems)) {
                        self.value(&home.shifted(i * elem_size), *elem, depth);
                    }
                }
            }
            TypeKind::Struct { fields } => {
                for field in fields {
                    if has_pointers(self.types, field.ty) {
                        self.value(&home.shifted(field.offset), field.ty, depth);
                    }
                }
            }
            TypeKind::Pointer { elem } => {
                let size = self.types.get(*elem).size;
                let Some(ptr) = home.word(0) else { return };
                if depth == 0 || size == 0 {
                    return;
                }
                let kept = size.min(u64::from(MAX_READ));
                if let Some(op) = self.read(ptr, Operand::Const(kept as i64), 0, kept as u32) {
                    self.later(Home::Captured { op, base: 0 }, *elem, depth - 1);
                }
            }
            TypeKind::Interface { empty } => self.interface(home, *empty, depth),
            TypeKind::Map { key, value, .. } => {
                let Some(ptr) = home.word(0) else { return };
                if depth == 0 {
                    return;
                }
                match map_layout(self.types, ty, &self.layout) {
                    MapLayout::Classic => self.classic_map(ptr, *key, *value, depth),
                    MapLayout::Swiss(layout) => self.swiss_map(ptr, &layout, *key, *value, depth),
                    MapLayout::Unknown => {}
                }
            }
            TypeKind::Bool
            | TypeKind::Int { .. }
            | TypeKind::Float
            | TypeKind::Complex
            | TypeKind::UnsafePointer
            | TypeKind::Chan { .. }
            | TypeKind::Func
            | TypeKind::Unknown => {}
        }
    }

    /// A slice's first elements, and what they point at one level down.
    fn slice(&mut self, home: &Home, elem: TypeId, depth: u32) {
        let elem_size = self.types.get(elem).size;
        let (Some(ptr), Some(len)) = (home.word(0), home.word(self.layout.slice_len)) else {
            return;
        };
        if elem_size == 0 || elem_size > u64::from(MAX_READ) {
            return;
        }
        let shown = u64::from(self.limits.elems).min(u64::from(MAX_READ) / elem_size);
        let max = if elem == byte_like(self.types, elem) {
            self.limits.string_max.min(MAX_READ)
        } else {
            (shown * elem_size) as u32
        };
        let Some(op) = self.read(ptr, len, elem_size as u32, max) else {
            return;
        };
        if depth > 0 && has_pointers(self.types, elem) {
            let saved = self.guard;
            for i in 0..shown {
                self.guard = Some(Guard::Above(len, i as i64));
                let base = (i * elem_size) as u32;
                self.later(Home::Captured { op, base }, elem, depth - 1);
            }
            self.guard = saved;
        }
    }

    /// An interface's dynamic type (through its itab unless empty), and its value one level
    /// down, by the recipe of that type.
    fn interface(&mut self, home: &Home, empty: bool, depth: u32) {
        let (Some(tab), Some(data)) = (home.word(0), home.word(self.layout.iface_data)) else {
            return;
        };
        let saved = self.guard;
        // Nothing to read behind a nil interface.
        self.guard = Some(Guard::Above(tab, 0));
        let type_addr = if empty {
            Some(tab)
        } else {
            self.read(
                tab.plus(self.layout.itab_type as i64),
                Operand::Const(8),
                0,
                8,
            )
            .map(|op| Operand::Word { op, off: 0, add: 0 })
        };
        if let (Some(type_addr), true) = (type_addr, depth > 0) {
            // The dynamic value is one level down: read after this level's values.
            self.queue.push_back(Task::Dynamic {
                type_addr,
                data,
                guard: self.guard,
            });
        }
        self.guard = saved;
    }
}

/// `elem` when it is a one-byte integer (a []byte's backing array is kept like a string).
fn byte_like(types: &TypeTable, elem: TypeId) -> TypeId {
    match types.get(elem).kind {
        TypeKind::Int { .. } if types.get(elem).size == 1 => elem,
        _ => TypeId(u32::MAX),
    }
}

/// Whether decoding a value of `ty` needs memory beyond its own words.
pub fn has_pointers(types: &TypeTable, ty: TypeId) -> bool {
    has_pointers_within(types, ty, 8)
}

fn has_pointers_within(types: &TypeTable, ty: TypeId, budget: u32) -> bool {
    if budget == 0 {
        return false;
    }
    match &types.get(ty).kind {
        TypeKind::String
        | TypeKind::Slice { .. }
        | TypeKind::Pointer { .. }
        | TypeKind::Interface { .. }
        | TypeKind::Map { .. } => true,
        TypeKind::Array { elem, len } => *len > 0 && has_pointers_within(types, *elem, budget - 1),
        TypeKind::Struct { fields } => fields
            .iter()
            .any(|f| has_pointers_within(types, f.ty, budget - 1)),
        _ => false,
    }
}

/// Go stores a value directly in an interface's data word when it is one pointer (a pointer,
/// map, chan, func, unsafe.Pointer, or a struct/array holding just one of those).
pub fn is_pointer_shaped(types: &TypeTable, ty: TypeId) -> bool {
    let t = types.get(ty);
    match &t.kind {
        TypeKind::Pointer { .. }
        | TypeKind::Map { .. }
        | TypeKind::Chan { .. }
        | TypeKind::Func
        | TypeKind::UnsafePointer => true,
        TypeKind::Struct { fields } if fields.len() == 1 => is_pointer_shaped(types, fields[0].ty),
        TypeKind::Array { elem, len: 1 } => is_pointer_shaped(types, *elem),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
