//! The Go type model gotrace decodes values with. Filled from DWARF (`dwarf.rs`); consumed by
//! the ABI assignment (`abi.rs`), the probe plan and the value decoder.

use serde::Serialize;

/// Index of a type in a [`TypeTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TypeId(pub u32);

/// All types reachable from the signatures that were read, and every named struct. Types refer
/// to each other by [`TypeId`], so recursive types (a linked-list node) are representable.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeTable {
    types: Vec<GoType>,
}

impl TypeTable {
    pub fn get(&self, id: TypeId) -> &GoType {
        &self.types[id.0 as usize]
    }

    pub fn push(&mut self, ty: GoType) -> TypeId {
        let id = TypeId(self.types.len() as u32);
        self.types.push(ty);
        id
    }
}

/// One Go type: its Go name (`int`, `*main.Point`, `[]uint8`, `map[string]int`), its size in
/// bytes, and what it is made of.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoType {
    pub name: String,
    pub size: u64,
    pub align: u64,
    pub kind: TypeKind,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TypeKind {
    Bool,
    /// Every integer type, `uintptr` included; the width is the type's size.
    Int {
        signed: bool,
    },
    Float,
    Complex,
    String,
    /// `unsafe.Pointer`.
    UnsafePointer,
    Pointer {
        elem: TypeId,
    },
    Slice {
        elem: TypeId,
    },
    Array {
        elem: TypeId,
        len: u64,
    },
    Struct {
        fields: Vec<Field>,
    },
    /// `interface{}`/`any` is `empty` (runtime.eface {_type, data}); others are runtime.iface
    /// {tab, data}.
    Interface {
        empty: bool,
    },
    /// A map value is one pointer (to runtime.hmap, or the Swiss map header from Go 1.24).
    Map {
        key: TypeId,
        value: TypeId,
        /// The pointer type DWARF describes it as: `*hash<K,V>` (Go ≤ 1.23) or `*map<K,V>`
        /// (Swiss tables, whose members lead to this binary's table and group layouts).
        header: Option<TypeId>,
        /// The slot group type the runtime type descriptors give a Swiss map (Go 1.24+): its
        /// fields say where a group's keys and values are when there is no DWARF.
        group: Option<TypeId>,
    },
    Chan {
        elem: TypeId,
    },
    /// A func value is one pointer to a closure record.
    Func,
    /// Present in the binary but not understood: decoded as raw words.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Field {
    pub name: String,
    pub ty: TypeId,
    pub offset: u64,
    pub embedded: bool,
}

/// A named parameter or result of a function, in declaration order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Variable {
    /// As DWARF names it: `n`, `~r0` for an unnamed result, `~p0` for an unnamed parameter
    /// (Go 1.22+; older DWARF leaves blank parameters out). `.dict` is the hidden dictionary
    /// of shape-instantiated generic code, which DWARF does not list and gotrace adds.
    pub name: String,
    pub ty: TypeId,
}

/// A function's Go signature. The receiver of a method is the first parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Signature {
    pub params: Vec<Variable>,
    pub results: Vec<Variable>,
}
