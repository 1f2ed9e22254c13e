//! Map capture: Go <= 1.23's hmap buckets and Go >= 1.24's Swiss tables, and the map layouts
//! read from DWARF that both the compiler and the decoder follow.

use super::*;
use gotrace_binary::layout::{HmapLayout, SwissTableLayout};

impl Compiler<'_> {
    /// Go ≤ 1.23: the hmap header, then the first buckets of its bucket array.
    pub(super) fn classic_map(&mut self, ptr: Operand, key: TypeId, value: TypeId, depth: u32) {
        let hmap = self.layout.hmap();
        let size = hmap.size;
        let Some(header) = self.read(ptr, Operand::Const(size as i64), 0, size as u32) else {
            return;
        };
        let (key_size, value_size) = (self.types.get(key).size, self.types.get(value).size);
        if key_size > hmap.max_inline || value_size > hmap.max_inline {
            return;
        }
        let bucket = hmap.bucket_size(key_size, value_size);
        // Each bucket its own read: one past the end of a small map's array may fault
        // without losing the first.
        for b in 0..MAP_BUCKETS_READ {
            let Some(op) = self.read_bucket(header, hmap.buckets, b * bucket, bucket) else {
                return;
            };
            for (ty, is_key) in [(key, true), (value, false)] {
                if has_pointers(self.types, ty) {
                    for slot in 0..map_slots_shown(self.limits, &hmap) {
                        let (k, v) = hmap.slot(key_size, value_size, slot);
                        let base = if is_key { k } else { v } as u32;
                        self.later(Home::Captured { op, base }, ty, depth - 1);
                    }
                }
            }
        }
        // A map that is growing still holds entries in its old buckets until they are
        // evacuated: read those buckets too (their scalars; what they point at is not followed).
        let saved = self.guard;
        let old = Operand::Word {
            op: header,
            off: hmap.oldbuckets as u32,
            add: 0,
        };
        self.guard = Some(Guard::Above(old, 0));
        for b in 0..MAP_BUCKETS_READ {
            self.read_bucket(header, hmap.oldbuckets, b * bucket, bucket);
        }
        self.guard = saved;
    }

    /// Reads a bucket `add` bytes into the bucket array whose pointer is at `field` in the
    /// captured hmap header.
    fn read_bucket(&mut self, header: u16, field: u64, add: u64, bucket: u64) -> Option<u16> {
        let at = Operand::Word {
            op: header,
            off: field as u32,
            add: add as i64,
        };
        let kept = bucket.min(u64::from(MAX_READ));
        self.read(at, Operand::Const(kept as i64), 0, kept as u32)
    }

    /// Go ≥ 1.24 (Swiss tables): the map header; a small map's one group (no directory), or
    /// the first table of a large map's directory and that table's first groups — a table
    /// holds hundreds of entries, more than `--elems` shows. Keys and values that hold
    /// pointers are gathered from the full slots of those groups, wherever the hash put them,
    /// and followed for the first `--elems` entries.
    pub(super) fn swiss_map(
        &mut self,
        ptr: Operand,
        layout: &SwissLayout,
        key: TypeId,
        value: TypeId,
        depth: u32,
    ) {
        let shared = &layout.shared;
        let size = shared.header_size;
        let Some(header) = self.read(ptr, Operand::Const(size as i64), 0, size as u32) else {
            return;
        };
        let word = |off: u64| Operand::Word {
            op: header,
            off: off as u32,
            add: 0,
        };
        let (dir_ptr, dir_len) = (word(shared.dir_ptr), word(shared.dir_len));
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
            let size = shared.table_size;
            self.read(first, Operand::Const(size as i64), 0, size as u32)
        });
        let groups = table.and_then(|t| {
            let data = Operand::Word {
                op: t,
                off: shared.groups_data as u32,
                add: 0,
            };
            let count = Operand::Word {
                op: t,
                off: shared.groups_mask as u32,
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
            self.guard = Some(Guard::Above(word(shared.used), 0));
            let gather = self.push(CaptureOp {
                kind: OpKind::Gather(Gather {
                    first,
                    second: rest.first().copied(),
                    group_size: group as u32,
                    ctrl: shared.ctrl as u32,
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
            self.follow_gathered(gather, ty, part, size, shown, depth);
        }
    }

    /// Queues the first `shown` entries' keys (or values) a gather copied side by side,
    /// `size` bytes each: read in place, or through the slot's pointer when stored indirectly.
    fn follow_gathered(
        &mut self,
        gather: u16,
        ty: TypeId,
        part: &SlotPart,
        size: u64,
        shown: u64,
        depth: u32,
    ) {
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

/// Offsets of a Swiss map's parts (`internal/runtime/maps`) for one map type: the `Map`
/// header, its `table`s and their groups of 8 slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwissLayout {
    /// The parts every map type shares. The header, table and group-reference offsets and
    /// sizes, and the control bytes' offset, are this map type's DWARF's; the rest (slots per
    /// group, the empty control bits, the inline limit) the runtime layout's.
    pub shared: SwissTableLayout,
    /// A group's size, and where its slots' keys and values are: they depend on the key and
    /// value types.
    pub group_size: u64,
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
/// tables, `*hash<K,V>` before); without one, the runtime's layout decides, with the group
/// type the runtime type descriptors give a Swiss map.
pub fn map_layout(types: &TypeTable, map: TypeId, runtime: &RuntimeLayout) -> MapLayout {
    let TypeKind::Map {
        key,
        value,
        header,
        group,
    } = types.get(map).kind
    else {
        return MapLayout::Unknown;
    };
    if let Some(header) = header.and_then(|p| pointee(types, p)) {
        if let Some(layout) = swiss_layout(types, &runtime.swiss(), header, key, value) {
            return MapLayout::Swiss(layout);
        }
        if field(types, header, "buckets").is_some() {
            return MapLayout::Classic;
        }
    }
    if let Some(group) = group.filter(|_| !runtime.classic_maps()) {
        let shared = runtime.swiss();
        if let Some(slots) = group_slots(types, &shared, group, key, value) {
            return MapLayout::Swiss(SwissLayout {
                shared: SwissTableLayout {
                    ctrl: slots.ctrl,
                    ..shared
                },
                group_size: slots.group_size,
                key: slots.key,
                elem: slots.elem,
            });
        }
    }
    if runtime.classic_maps() {
        MapLayout::Classic
    } else {
        MapLayout::Unknown
    }
}

fn swiss_layout(
    types: &TypeTable,
    runtime: &SwissTableLayout,
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
    let slots = group_slots(types, runtime, group, map_key, map_value)?;
    Some(SwissLayout {
        shared: SwissTableLayout {
            header_size: types.get(header).size,
            used,
            dir_ptr,
            dir_len,
            table_size: types.get(table).size,
            groups_data: groups + data,
            groups_mask: groups + mask,
            ctrl: slots.ctrl,
            ..*runtime
        },
        group_size: slots.group_size,
        key: slots.key,
        elem: slots.elem,
    })
}

/// Where a Swiss table group's control word, keys and values are, from its type (DWARF's, or
/// the runtime type descriptors').
struct GroupSlots {
    ctrl: u64,
    group_size: u64,
    key: SlotPart,
    elem: SlotPart,
}

fn group_slots(
    types: &TypeTable,
    runtime: &SwissTableLayout,
    group: TypeId,
    map_key: TypeId,
    map_value: TypeId,
) -> Option<GroupSlots> {
    let (_, ctrl) = field(types, group, "ctrl")?;
    let array = |ty: TypeId| match types.get(ty).kind {
        TypeKind::Array { elem, len } if len == runtime.group_slots => Some(elem),
        _ => None,
    };
    // A slot holding a pointer to the map's key (value) type holds it indirectly.
    let part = |base: u64, stride: u64, ty: TypeId, of: TypeId| SlotPart {
        base,
        stride,
        indirect: ty != of
            && (pointee(types, ty) == Some(of)
                || (types.get(of).size > runtime.max_inline && types.get(ty).size == 8)),
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
    Some(GroupSlots {
        ctrl,
        group_size: types.get(group).size,
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

/// Slots of each bucket read (all of a bucket's, `--elems` at most).
pub fn map_slots_shown(limits: Limits, hmap: &HmapLayout) -> u64 {
    hmap.bucket_slots.min(u64::from(limits.elems))
}
