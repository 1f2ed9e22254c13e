//! Capture recipes: which user memory the BPF program reads at a site so the decoder can show
//! strings, slices, pointed-to values, interfaces and maps, not just registers. A recipe is a
//! list of ops; each reads bytes at an address computed from a register, the stack pointer, or
//! a word an earlier op captured. Interfaces dispatch on their dynamic type at run time to the
//! recipe registered for that type. Everything is bounded: bytes per op, elements, pointer depth,
//! ops per recipe — and laid out breadth first, so what a bound leaves out is the deepest.

use gotrace_binary::abi::{AbiReg, Location};
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use serde::Serialize;
use std::collections::VecDeque;

/// Ops one recipe may hold (the BPF side's GT_MAX_OPS).
pub const MAX_OPS: usize = 64;
/// Bytes one op may read (the BPF side's GT_MAX_READ).
pub const MAX_READ: u32 = 8192;
/// Size of Go's `runtime.hmap` header (Go ≤ 1.23) and where its bucket pointer sits.
const HMAP_SIZE: u64 = 48;
const HMAP_BUCKETS: u32 = 16;
pub const HMAP_OLDBUCKETS: u32 = 24;
/// Where `itab._type` sits: an iface's dynamic type is one load away from its itab.
const ITAB_TYPE: i64 = 8;
/// Map keys or values bigger than this are stored indirectly (by pointer) in buckets.
const MAP_MAX_INLINE: u64 = 128;
/// Slots in a Swiss-table group (Go ≥ 1.24).
pub const GROUP_SLOTS: u64 = 8;

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
    /// Maps without a layout in DWARF use the bucket layout of Go ≤ 1.23.
    classic_maps: bool,
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
    pub fn new(types: &'t TypeTable, limits: Limits, classic_maps: bool) -> Self {
        Compiler {
            types,
            limits,
            classic_maps,
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
                if let (Some(ptr), Some(len)) = (home.word(0), home.word(8)) {
                    self.read(ptr, len, 0, self.limits.string_max);
                }
            }
            TypeKind::Slice { elem } => {
                let elem_size = self.types.get(*elem).size;
                let (Some(ptr), Some(len)) = (home.word(0), home.word(8)) else {
                    return;
                };
                if elem_size == 0 || elem_size > u64::from(MAX_READ) {
                    return;
                }
                let shown = u64::from(self.limits.elems).min(u64::from(MAX_READ) / elem_size);
                let max = if *elem == byte_like(self.types, *elem) {
                    self.limits.string_max.min(MAX_READ)
                } else {
                    (shown * elem_size) as u32
                };
                let Some(op) = self.read(ptr, len, elem_size as u32, max) else {
                    return;
                };
                if depth > 0 && has_pointers(self.types, *elem) {
                    let saved = self.guard;
                    for i in 0..shown {
                        self.guard = Some(Guard::Above(len, i as i64));
                        let base = (i * elem_size) as u32;
                        self.later(Home::Captured { op, base }, *elem, depth - 1);
                    }
                    self.guard = saved;
                }
            }
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
            TypeKind::Interface { empty } => {
                let (Some(tab), Some(data)) = (home.word(0), home.word(8)) else {
                    return;
                };
                let saved = self.guard;
                // Nothing to read behind a nil interface.
                self.guard = Some(Guard::Above(tab, 0));
                let type_addr = if *empty {
                    Some(tab)
                } else {
                    self.read(tab.plus(ITAB_TYPE), Operand::Const(8), 0, 8)
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
            TypeKind::Map { key, value, .. } => {
                let Some(ptr) = home.word(0) else { return };
                if depth == 0 {
                    return;
                }
                match map_layout(self.types, ty, self.classic_maps) {
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

    /// Go ≤ 1.23: the hmap header, then the first buckets of its bucket array.
    fn classic_map(&mut self, ptr: Operand, key: TypeId, value: TypeId, depth: u32) {
        let Some(header) = self.read(ptr, Operand::Const(HMAP_SIZE as i64), 0, HMAP_SIZE as u32)
        else {
            return;
        };
        let (key_size, value_size) = (self.types.get(key).size, self.types.get(value).size);
        if key_size > MAP_MAX_INLINE || value_size > MAP_MAX_INLINE {
            return;
        }
        let bucket = map_bucket_size(key_size, value_size);
        // Each bucket its own read: one past the end of a small map's array may fault
        // without losing the first.
        for b in 0..MAP_BUCKETS_READ {
            let at = Operand::Word {
                op: header,
                off: HMAP_BUCKETS,
                add: (b * bucket) as i64,
            };
            let kept = bucket.min(u64::from(MAX_READ));
            let Some(op) = self.read(at, Operand::Const(kept as i64), 0, kept as u32) else {
                return;
            };
            let slots = map_slots_shown(self.limits);
            for (ty, first, size) in [(key, 8, key_size), (value, 8 + 8 * key_size, value_size)] {
                if has_pointers(self.types, ty) {
                    for i in 0..slots {
                        let base = (first + i * size) as u32;
                        self.later(Home::Captured { op, base }, ty, depth - 1);
                    }
                }
            }
        }
        // A map that is growing still holds entries in its old buckets until they are
        // evacuated: read those buckets too (their scalars; what they point at is not followed).
        let saved = self.guard;
        self.guard = Some(Guard::Above(
            Operand::Word {
                op: header,
                off: HMAP_OLDBUCKETS,
                add: 0,
            },
            0,
        ));
        for b in 0..MAP_BUCKETS_READ {
            let at = Operand::Word {
                op: header,
                off: HMAP_OLDBUCKETS,
                add: (b * bucket) as i64,
            };
            let kept = bucket.min(u64::from(MAX_READ));
            self.read(at, Operand::Const(kept as i64), 0, kept as u32);
        }
        self.guard = saved;
    }

    /// Go ≥ 1.24 (Swiss tables): the map header; a small map's one group (no directory), or
    /// the first table of a large map's directory and that table's first groups — a table
    /// holds hundreds of entries, more than `--elems` shows. Keys and values that hold
    /// pointers are gathered from the full slots of those groups, wherever the hash put them,
    /// and followed for the first `--elems` entries.
    fn swiss_map(
        &mut self,
        ptr: Operand,
        layout: &SwissLayout,
        key: TypeId,
        value: TypeId,
        depth: u32,
    ) {
        let size = layout.header_size;
        let Some(header) = self.read(ptr, Operand::Const(size as i64), 0, size as u32) else {
            return;
        };
        let word = |off: u64| Operand::Word {
            op: header,
            off: off as u32,
            add: 0,
        };
        let (dir_ptr, dir_len) = (word(layout.dir_ptr), word(layout.dir_len));
        let group = layout.group_size;
        let saved = self.guard;
        self.guard = Some(Guard::AtMost(dir_len, 0));
        let small = self.read(dir_ptr, Operand::Const(group as i64), 0, group as u32);
        self.guard = Some(Guard::Above(dir_len, 0));
        let directory = self.read(dir_ptr, Operand::Const(8), 0, 8);
        self.guard = saved;
        let table = directory.and_then(|d| {
            let first = Operand::Word {
                op: d,
                off: 0,
                add: 0,
            };
            let size = layout.table_size;
            self.read(first, Operand::Const(size as i64), 0, size as u32)
        });
        let groups = table.and_then(|t| {
            let data = Operand::Word {
                op: t,
                off: layout.groups_data as u32,
                add: 0,
            };
            let count = Operand::Word {
                op: t,
                off: layout.groups_mask as u32,
                add: 1,
            };
            let max = group * swiss_groups_read(self.limits, group);
            self.read(data, count, group as u32, max as u32)
        });
        let sources: Vec<u16> = [small, groups].into_iter().flatten().collect();
        let Some((&first, rest)) = sources.split_first() else {
            return;
        };
        let shown = swiss_entries_followed(self.types, self.limits, layout, key, value);
        for (ty, part) in [(key, &layout.key), (value, &layout.elem)] {
            let Some(size) = swiss_part_followed(self.types, ty, part) else {
                continue;
            };
            // Nothing to gather from an empty map.
            self.guard = Some(Guard::Above(word(layout.used), 0));
            let gather = self.push(CaptureOp {
                kind: OpKind::Gather(Gather {
                    first,
                    second: rest.first().copied(),
                    group_size: group as u32,
                    ctrl: layout.ctrl as u32,
                    base: part.base as u32,
                    stride: part.stride as u32,
                    size: size as u32,
                    max_len: (shown * size) as u32,
                }),
                addr: Operand::Const(0),
                len: Operand::Const(0),
                guard: self.guard,
            });
            self.guard = saved;
            let Some(gather) = gather else { return };
            for entry in 0..shown {
                let at = (entry * size) as u32;
                if !part.indirect {
                    self.later(
                        Home::Captured {
                            op: gather,
                            base: at,
                        },
                        ty,
                        depth - 1,
                    );
                    continue;
                }
                let size = self.types.get(ty).size.min(u64::from(MAX_READ));
                let target = Operand::Word {
                    op: gather,
                    off: at,
                    add: 0,
                };
                let read = self.read(target, Operand::Const(size as i64), 0, size as u32);
                if let (Some(op), true) = (read, has_pointers(self.types, ty)) {
                    self.later(Home::Captured { op, base: 0 }, ty, depth - 1);
                }
            }
        }
    }
}

/// Groups of a large Swiss map's first table read: four per entry shown, 32 slots for each,
/// so that even a table grown for many more entries than it still holds (deleted ones) very
/// probably gives `--elems` of them; as many as one read takes.
pub fn swiss_groups_read(limits: Limits, group_size: u64) -> u64 {
    let wanted = u64::from(limits.elems).saturating_mul(4).max(1);
    wanted.min(u64::from(MAX_READ) / group_size.max(1)).max(1)
}

/// Bytes of each full slot's key (or value) a gather copies when it needs reads of its own
/// (strings, pointers; an indirect slot's pointer): `None` when it needs none.
pub fn swiss_part_followed(types: &TypeTable, ty: TypeId, part: &SlotPart) -> Option<u64> {
    if part.indirect {
        Some(8)
    } else if has_pointers(types, ty) {
        Some(types.get(ty).size).filter(|&size| size > 0)
    } else {
        None
    }
}

/// Entries of a Swiss map whose keys and values are gathered and followed, in the order of
/// its full slots: `--elems`, fewer where one gather's bytes would not fit in one read.
pub fn swiss_entries_followed(
    types: &TypeTable,
    limits: Limits,
    layout: &SwissLayout,
    key: TypeId,
    value: TypeId,
) -> u64 {
    [(key, &layout.key), (value, &layout.elem)]
        .into_iter()
        .filter_map(|(ty, part)| swiss_part_followed(types, ty, part))
        .map(|size| u64::from(MAX_READ) / size)
        .fold(u64::from(limits.elems), u64::min)
}

/// How a map type's memory is laid out in this binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapLayout {
    /// Go ≤ 1.23: runtime.hmap and its buckets.
    Classic,
    /// Go ≥ 1.24: Swiss tables, as this binary's DWARF describes them.
    Swiss(SwissLayout),
    /// Neither described in DWARF nor implied by the Go version.
    Unknown,
}

/// Offsets of a Swiss map's parts (`internal/runtime/maps`): the `Map` header, its `table`s
/// and their groups of 8 slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwissLayout {
    pub header_size: u64,
    /// Offsets in `Map` of `used` (the length), `dirPtr` and `dirLen`.
    pub used: u64,
    pub dir_ptr: u64,
    pub dir_len: u64,
    pub table_size: u64,
    /// Offsets in `table` of `groups.data` and `groups.lengthMask`.
    pub groups_data: u64,
    pub groups_mask: u64,
    pub group_size: u64,
    /// Offset in a group of its 8 control bytes.
    pub ctrl: u64,
    pub key: SlotPart,
    pub elem: SlotPart,
}

/// Where the keys (or the values) of a group's slots are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotPart {
    pub base: u64,
    pub stride: u64,
    /// The slot holds a pointer to it (Go stores keys and values over 128 bytes so).
    pub indirect: bool,
}

impl SlotPart {
    pub fn at(&self, slot: u64) -> u64 {
        self.base + slot * self.stride
    }
}

/// Reads a map type's layout from the header type DWARF gives it (`*map<K,V>` with Swiss
/// tables, `*hash<K,V>` before); without one, the Go version decides.
pub fn map_layout(types: &TypeTable, map: TypeId, classic_maps: bool) -> MapLayout {
    let TypeKind::Map { key, value, header } = types.get(map).kind else {
        return MapLayout::Unknown;
    };
    if let Some(header) = header.and_then(|p| pointee(types, p)) {
        if let Some(layout) = swiss_layout(types, header, key, value) {
            return MapLayout::Swiss(layout);
        }
        if field(types, header, "buckets").is_some() {
            return MapLayout::Classic;
        }
    }
    if classic_maps {
        MapLayout::Classic
    } else {
        MapLayout::Unknown
    }
}

fn swiss_layout(
    types: &TypeTable,
    header: TypeId,
    map_key: TypeId,
    map_value: TypeId,
) -> Option<SwissLayout> {
    let (_, used) = field(types, header, "used")?;
    let (dir_ptr_ty, dir_ptr) = field(types, header, "dirPtr")?;
    let (_, dir_len) = field(types, header, "dirLen")?;
    let table = pointee(types, pointee(types, dir_ptr_ty)?)?;
    let (groups_ty, groups) = field(types, table, "groups")?;
    let (data_ty, data) = field(types, groups_ty, "data")?;
    let (_, mask) = field(types, groups_ty, "lengthMask")?;
    let group = pointee(types, data_ty)?;
    let (_, ctrl) = field(types, group, "ctrl")?;
    let array = |ty: TypeId| match types.get(ty).kind {
        TypeKind::Array { elem, len } if len == GROUP_SLOTS => Some(elem),
        _ => None,
    };
    // A slot holding a pointer to the map's key (value) type holds it indirectly.
    let part = |base: u64, stride: u64, ty: TypeId, of: TypeId| SlotPart {
        base,
        stride,
        indirect: ty != of
            && (pointee(types, ty) == Some(of)
                || (types.get(of).size > MAP_MAX_INLINE && types.get(ty).size == 8)),
    };
    let (key, elem) = match field(types, group, "slots") {
        // One array of {key, elem} slots.
        Some((slots_ty, slots)) => {
            let slot = array(slots_ty)?;
            let stride = types.get(slot).size;
            let (key_ty, key) = field(types, slot, "key")?;
            let (elem_ty, elem) = field(types, slot, "elem")?;
            (
                part(slots + key, stride, key_ty, map_key),
                part(slots + elem, stride, elem_ty, map_value),
            )
        }
        // GOEXPERIMENT=mapsplitgroup (Go 1.27): the 8 keys, then the 8 values.
        None => {
            let (keys_ty, keys) = field(types, group, "keys")?;
            let (elems_ty, elems) = field(types, group, "elems")?;
            let (key_ty, elem_ty) = (array(keys_ty)?, array(elems_ty)?);
            (
                part(keys, types.get(key_ty).size, key_ty, map_key),
                part(elems, types.get(elem_ty).size, elem_ty, map_value),
            )
        }
    };
    Some(SwissLayout {
        header_size: types.get(header).size,
        used,
        dir_ptr,
        dir_len,
        table_size: types.get(table).size,
        groups_data: groups + data,
        groups_mask: groups + mask,
        group_size: types.get(group).size,
        ctrl,
        key,
        elem,
    })
}

/// A struct member's type and offset.
fn field(types: &TypeTable, ty: TypeId, name: &str) -> Option<(TypeId, u64)> {
    match &types.get(ty).kind {
        TypeKind::Struct { fields } => fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| (f.ty, f.offset)),
        _ => None,
    }
}

fn pointee(types: &TypeTable, ty: TypeId) -> Option<TypeId> {
    match types.get(ty).kind {
        TypeKind::Pointer { elem } => Some(elem),
        _ => None,
    }
}

/// Buckets of a classic map read from the start of its bucket array: a map of a few dozen
/// entries spreads them over several, and any one may be empty.
pub const MAP_BUCKETS_READ: u64 = 2;

/// Slots of each bucket read (a bucket holds 8).
pub fn map_slots_shown(limits: Limits) -> u64 {
    8u64.min(u64::from(limits.elems))
}

/// Bytes of one classic map bucket: 8 tophash bytes, 8 keys, 8 values, the overflow pointer.
pub fn map_bucket_size(key_size: u64, value_size: u64) -> u64 {
    (8 + 8 * key_size + 8 * value_size).div_ceil(8) * 8 + 8
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
mod tests {
    use super::*;
    use gotrace_binary::abi::Piece;
    use gotrace_binary::types::{Field, GoType};

    fn push(types: &mut TypeTable, name: &str, size: u64, kind: TypeKind) -> TypeId {
        types.push(GoType {
            name: name.into(),
            size,
            align: 8,
            kind,
        })
    }

    fn strukt(types: &mut TypeTable, name: &str, fields: &[(&str, TypeId, u64)]) -> TypeId {
        let size = fields
            .iter()
            .map(|&(_, ty, at)| at + types.get(ty).size)
            .max()
            .unwrap_or(0)
            .div_ceil(8)
            * 8;
        let fields = fields
            .iter()
            .map(|&(name, ty, offset)| Field {
                name: name.into(),
                ty,
                offset,
                embedded: false,
            })
            .collect();
        push(types, name, size, TypeKind::Struct { fields })
    }

    fn pointer(types: &mut TypeTable, elem: TypeId) -> TypeId {
        let name = format!("*{}", types.get(elem).name);
        push(types, &name, 8, TypeKind::Pointer { elem })
    }

    /// `map[K]V` as the Go 1.24–1.27 linker describes it in DWARF (`synthesizemaptypes`): a
    /// pointer to `map<K,V>` whose `dirPtr` is `**table<K,V>`, whose `groups` is a
    /// `groupReference<K,V>` pointing at the compiler's group type {ctrl, slots [8]{key, elem}}.
    fn swiss_map_type(types: &mut TypeTable, key: TypeId, value: TypeId) -> TypeId {
        let u8_ = push(types, "uint8", 1, TypeKind::Int { signed: false });
        let u16_ = push(types, "uint16", 2, TypeKind::Int { signed: false });
        let u64_ = push(types, "uint64", 8, TypeKind::Int { signed: false });
        let int = push(types, "int", 8, TypeKind::Int { signed: true });
        let elem_at = types.get(key).size.div_ceil(8) * 8;
        let slot = strukt(types, "slot", &[("key", key, 0), ("elem", value, elem_at)]);
        let slots = push(
            types,
            "[8]slot",
            8 * types.get(slot).size,
            TypeKind::Array { elem: slot, len: 8 },
        );
        let group = strukt(
            types,
            "noalg.map.group",
            &[("ctrl", u64_, 0), ("slots", slots, 8)],
        );
        let group_ptr = pointer(types, group);
        let reference = strukt(
            types,
            "groupReference<K,V>",
            &[("data", group_ptr, 0), ("lengthMask", u64_, 8)],
        );
        let table = strukt(
            types,
            "table<K,V>",
            &[
                ("used", u16_, 0),
                ("capacity", u16_, 2),
                ("growthLeft", u16_, 4),
                ("localDepth", u8_, 6),
                ("index", int, 8),
                ("groups", reference, 16),
            ],
        );
        let table_ptr = pointer(types, table);
        let directory = pointer(types, table_ptr);
        let header = strukt(
            types,
            "map<K,V>",
            &[
                ("used", u64_, 0),
                ("seed", u64_, 8),
                ("dirPtr", directory, 16),
                ("dirLen", int, 24),
                ("globalDepth", u8_, 32),
                ("globalShift", u8_, 33),
                ("writing", u8_, 34),
                ("clearSeq", u64_, 40),
            ],
        );
        let header = Some(pointer(types, header));
        let name = format!("map[{}]{}", types.get(key).name, types.get(value).name);
        push(types, &name, 8, TypeKind::Map { key, value, header })
    }

    fn in_regs(regs: &[u8]) -> Location {
        Location::Registers(
            regs.iter()
                .enumerate()
                .map(|(i, &r)| Piece {
                    reg: AbiReg::Int(r),
                    value_offset: 8 * i as u64,
                    size: 8,
                })
                .collect(),
        )
    }

    #[test]
    fn swiss_layout_is_read_from_the_dwarf_types() {
        let mut types = TypeTable::default();
        let string = push(&mut types, "string", 16, TypeKind::String);
        let int = push(&mut types, "int", 8, TypeKind::Int { signed: true });
        let map = swiss_map_type(&mut types, string, int);
        let MapLayout::Swiss(layout) = map_layout(&types, map, false) else {
            panic!("not Swiss: {:?}", map_layout(&types, map, false));
        };
        // Go 1.24's internal/runtime/maps: Map{used, seed, dirPtr, dirLen, …};
        // table{used, capacity, growthLeft, localDepth, index, groups{data, lengthMask}}.
        assert_eq!((layout.used, layout.dir_ptr, layout.dir_len), (0, 16, 24));
        assert_eq!((layout.groups_data, layout.groups_mask), (16, 24));
        assert_eq!(layout.header_size, 48);
        // map[string]int: 8 control bytes, then 8 slots of {key string, elem int}.
        assert_eq!(layout.group_size, 8 + 8 * 24);
        assert_eq!(layout.ctrl, 0);
        assert_eq!((layout.key.at(0), layout.key.at(1)), (8, 32));
        assert_eq!(
            (layout.elem.at(0), layout.elem.at(7)),
            (24, 8 + 7 * 24 + 16)
        );
        assert!(!layout.key.indirect && !layout.elem.indirect);
        // No layout in DWARF: the Go version decides, and a Swiss map without one is unknown.
        let bare = push(
            &mut types,
            "map[int]int",
            8,
            TypeKind::Map {
                key: int,
                value: int,
                header: None,
            },
        );
        assert_eq!(map_layout(&types, bare, true), MapLayout::Classic);
        assert_eq!(map_layout(&types, bare, false), MapLayout::Unknown);
    }

    #[test]
    fn a_small_swiss_map_reads_its_group_and_a_large_one_its_first_table() {
        let mut types = TypeTable::default();
        let string = push(&mut types, "string", 16, TypeKind::String);
        let int = push(&mut types, "int", 8, TypeKind::Int { signed: true });
        let map = swiss_map_type(&mut types, int, string);
        let recipe = Compiler::new(&types, Limits::default(), false).site(&[(map, &in_regs(&[0]))]);
        let ops = &recipe.ops;
        let word = |op: u16, off: u32| Operand::Word { op, off, add: 0 };
        // The header, at the map pointer.
        assert_eq!(ops[0].addr, Operand::Reg { index: 0, add: 0 });
        // A small map (dirLen ≤ 0): its one group at dirPtr; a large one: the directory.
        assert_eq!(ops[1].addr, word(0, 16));
        assert_eq!(ops[1].guard, Some(Guard::AtMost(word(0, 24), 0)));
        assert_eq!(ops[2].addr, word(0, 16));
        assert_eq!(ops[2].guard, Some(Guard::Above(word(0, 24), 0)));
        // The first table, then its groups: (lengthMask + 1) groups, the first few kept.
        assert_eq!(ops[3].addr, word(2, 0));
        assert_eq!(ops[4].addr, word(3, 16));
        assert_eq!(
            ops[4].len,
            Operand::Word {
                op: 3,
                off: 24,
                add: 1
            }
        );
        let group = 8 + 8 * 24;
        assert_eq!(
            ops[4].kind,
            OpKind::Read {
                elem_size: group,
                max_len: group * (8192 / group)
            }
        );
        // Then, in a non-empty map, the values of the full slots of either gathered side by
        // side (a value at 8 + 8 in each 24-byte slot), wherever the hash put them...
        assert_eq!(
            ops[5].kind,
            OpKind::Gather(Gather {
                first: 1,
                second: Some(4),
                group_size: group,
                ctrl: 0,
                base: 8 + 8,
                stride: 24,
                size: 16,
                max_len: 16 * 16
            })
        );
        assert_eq!(ops[5].guard, Some(Guard::Above(word(0, 0), 0)));
        // ... and the strings of the first --elems of them.
        let strings: Vec<(Operand, Operand)> = ops[6..].iter().map(|o| (o.addr, o.len)).collect();
        let expected: Vec<(Operand, Operand)> = (0..16)
            .map(|e| (word(5, e * 16), word(5, e * 16 + 8)))
            .collect();
        assert_eq!(strings, expected);
        assert!(!recipe.incomplete);
    }

    /// The issue: `ParseFile(fset, filename, …)` printed `<string of 12 bytes>` because the
    /// file set's fields used up the ops before `filename`. Breadth first, every argument's
    /// own memory comes before anything found inside it.
    #[test]
    fn top_level_strings_are_read_before_deep_fields() {
        let mut types = TypeTable::default();
        let string = push(&mut types, "string", 16, TypeKind::String);
        let leaf_fields: Vec<(String, u64)> = (0..8).map(|i| (format!("S{i}"), 16 * i)).collect();
        let leaf_fields: Vec<(&str, TypeId, u64)> = leaf_fields
            .iter()
            .map(|(n, at)| (n.as_str(), string, *at))
            .collect();
        let leaf = strukt(&mut types, "main.Leaf", &leaf_fields);
        let leaf_ptr = pointer(&mut types, leaf);
        let tree_fields: Vec<(String, u64)> = (0..8).map(|i| (format!("L{i}"), 8 * i)).collect();
        let tree_fields: Vec<(&str, TypeId, u64)> = tree_fields
            .iter()
            .map(|(n, at)| (n.as_str(), leaf_ptr, *at))
            .collect();
        let tree = strukt(&mut types, "main.Tree", &tree_fields);
        let tree_ptr = pointer(&mut types, tree);
        let (t, f, p) = (in_regs(&[0]), in_regs(&[1, 2]), in_regs(&[3, 4]));
        let recipe = Compiler::new(&types, Limits::default(), false).site(&[
            (tree_ptr, &t),
            (string, &f),
            (string, &p),
        ]);
        // 1 tree + 2 strings + 8 leaves + 64 leaf strings: more than one probe reads.
        assert_eq!(recipe.ops.len(), MAX_OPS);
        assert!(recipe.incomplete);
        let reads_reg = |r: u8| Operand::Reg { index: r, add: 0 };
        assert_eq!(recipe.ops[1].addr, reads_reg(1), "filename second");
        assert_eq!(recipe.ops[2].addr, reads_reg(3), "path third");
        // Then the eight leaves, before any leaf's string.
        assert!(recipe.ops[3..11]
            .iter()
            .all(|o| matches!(o.addr, Operand::Word { op: 0, .. })));
    }
}
