use super::*;
use gotrace_binary::abi::Piece;
use gotrace_binary::layout::RuntimeLayout;
use gotrace_binary::types::{Field, GoType};
use gotrace_binary::Arch;

/// The runtime layout of Go 1.`minor` on amd64.
fn go(minor: u32) -> RuntimeLayout {
    RuntimeLayout::for_go(Arch::Amd64, minor).expect("in the table")
}

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
    let group = None;
    push(
        types,
        &name,
        8,
        TypeKind::Map {
            key,
            value,
            header,
            group,
        },
    )
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
    let MapLayout::Swiss(layout) = map_layout(&types, map, &go(24)) else {
        panic!("not Swiss: {:?}", map_layout(&types, map, &go(24)));
    };
    // Go 1.24's internal/runtime/maps: Map{used, seed, dirPtr, dirLen, …};
    // table{used, capacity, growthLeft, localDepth, index, groups{data, lengthMask}}.
    assert_eq!(
        (
            layout.shared.used,
            layout.shared.dir_ptr,
            layout.shared.dir_len
        ),
        (0, 16, 24)
    );
    assert_eq!(
        (layout.shared.groups_data, layout.shared.groups_mask),
        (16, 24)
    );
    assert_eq!(layout.shared.header_size, 48);
    // What every map type shares agrees with the runtime layout's table for Go 1.24.
    assert_eq!(layout.shared, go(24).swiss());
    // map[string]int: 8 control bytes, then 8 slots of {key string, elem int}.
    assert_eq!(layout.group_size, 8 + 8 * 24);
    assert_eq!(layout.shared.ctrl, 0);
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
            group: None,
        },
    );
    assert_eq!(map_layout(&types, bare, &go(23)), MapLayout::Classic);
    assert_eq!(map_layout(&types, bare, &go(24)), MapLayout::Unknown);
}

/// Without DWARF, a Swiss map type's descriptor points at its group type: with the runtime
/// layout's table row, that gives the same layout DWARF's map header does.
#[test]
fn swiss_layout_without_dwarf_comes_from_the_group_type() {
    let mut types = TypeTable::default();
    let string = push(&mut types, "string", 16, TypeKind::String);
    let int = push(&mut types, "int", 8, TypeKind::Int { signed: true });
    let from_dwarf = swiss_map_type(&mut types, string, int);
    let group = (0..)
        .map(TypeId)
        .find(|&id| types.get(id).name == "noalg.map.group")
        .expect("the group type");
    let from_descriptors = push(
        &mut types,
        "map[string]int",
        8,
        TypeKind::Map {
            key: string,
            value: int,
            header: None,
            group: Some(group),
        },
    );
    let layout = map_layout(&types, from_descriptors, &go(24));
    assert!(matches!(layout, MapLayout::Swiss(_)), "{layout:?}");
    assert_eq!(layout, map_layout(&types, from_dwarf, &go(24)));
    // Before Swiss tables the group is not looked at.
    assert_eq!(
        map_layout(&types, from_descriptors, &go(23)),
        MapLayout::Classic
    );
}

#[test]
fn a_small_swiss_map_reads_its_group_and_a_large_one_its_first_table() {
    let mut types = TypeTable::default();
    let string = push(&mut types, "string", 16, TypeKind::String);
    let int = push(&mut types, "int", 8, TypeKind::Int { signed: true });
    let map = swiss_map_type(&mut types, int, string);
    let recipe = Compiler::new(&types, Limits::default(), go(24)).site(&[(map, &in_regs(&[0]))]);
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
    let recipe = Compiler::new(&types, Limits::default(), go(24)).site(&[
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
