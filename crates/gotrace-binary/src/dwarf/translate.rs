//! DWARF types translated into gotrace's type model, with a work list rather than recursion.

use super::*;

impl<'a> Reader<'a, '_> {
    /// The type of the hidden dictionary parameter: a pointer to the dictionary's words.
    pub(super) fn dict_type(&mut self) -> Result<TypeId, BinaryError> {
        if let Some(id) = self.dict_type {
            return Ok(id);
        }
        let id =
            TypeId(u32::try_from(self.types.len()).map_err(|_| malformed(0, "too many types"))?);
        self.types.push(Some(GoType {
            name: DICT_PARAM.to_owned(),
            size: self.ptr_size,
            align: 0,
            kind: TypeKind::UnsafePointer,
        }));
        self.dict_type = Some(id);
        Ok(id)
    }

    /// The id of the type DIE at `at`, handed out now and filled in by [`Reader::finish`].
    pub(super) fn type_ref(&mut self, at: DieRef) -> Result<TypeId, BinaryError> {
        if let Some(&id) = self.ids.get(&at) {
            return Ok(id);
        }
        // Go adds a typedef with the same name in front of each named type, and typedefs
        // named `.paramN` for generic dictionary parameters: neither adds information, so
        // both resolve to what they name. Typedefs with a Go kind (maps, chans, interfaces)
        // are real types.
        let mut target = at;
        for _ in 0..MAX_TYPEDEF_CHAIN {
            let die = self.die(target)?;
            if die.tag() != dw::DW_TAG_typedef || die.attr(DW_AT_GO_KIND).is_some() {
                break;
            }
            match self.reference(target, &die, dw::DW_AT_type)? {
                Some(next) => target = next,
                None => break,
            }
        }
        let id = match self.ids.get(&target) {
            Some(&id) => id,
            None => {
                let id = TypeId(
                    u32::try_from(self.types.len()).map_err(|_| malformed(at, "too many types"))?,
                );
                self.types.push(None);
                self.ids.insert(target, id);
                self.pending.push((target, id));
                id
            }
        };
        self.ids.insert(at, id);
        Ok(id)
    }

    /// Reads every type handed out (and what they reach), then computes alignments. A type
    /// whose DIEs cannot be read stays unknown; it is returned with its error, and so is every
    /// type holding one by value (struct fields, array elements), whose layout is then unknown.
    pub(super) fn finish(mut self) -> (TypeTable, HashMap<TypeId, String>) {
        let mut unreadable = HashMap::new();
        while let Some((at, id)) = self.pending.pop() {
            match self.translate(at) {
                Ok(ty) => {
                    if let Some(slot) = self.types.get_mut(id.0 as usize) {
                        *slot = Some(ty);
                    }
                }
                Err(e) => {
                    unreadable.insert(id, e.to_string());
                }
            }
        }
        let mut types: Vec<GoType> = self
            .types
            .into_iter()
            .map(|t| t.unwrap_or_else(unknown))
            .collect();
        let mut aligns = vec![None; types.len()];
        for i in 0..types.len() {
            let align = align_of(&types, TypeId(i as u32), &mut aligns, self.ptr_size, 0);
            types[i].align = align;
        }
        spread_unreadable(&types, &mut unreadable);
        let mut table = TypeTable::default();
        for ty in types {
            table.push(ty);
        }
        (table, unreadable)
    }

    pub(super) fn translate(&mut self, at: DieRef) -> Result<GoType, BinaryError> {
        let die = self.die(at)?;
        let name = self.name(&die, at)?.unwrap_or_default();
        let byte_size = die
            .attr_value(dw::DW_AT_byte_size)
            .and_then(|v| v.udata_value());
        let kind_attr = die
            .attr_value(DW_AT_GO_KIND)
            .and_then(|v| v.udata_value())
            .map(|k| k & go_kind::MASK);
        let ptr = self.ptr_size;
        let (kind, size) = match die.tag() {
            dw::DW_TAG_base_type => (base_kind(kind_attr, &die), byte_size.unwrap_or(0)),
            dw::DW_TAG_pointer_type => {
                let elem = self.reference(at, &die, dw::DW_AT_type)?;
                let kind = match elem {
                    Some(elem) if name != "unsafe.Pointer" => TypeKind::Pointer {
                        elem: self.type_ref(elem)?,
                    },
                    _ => TypeKind::UnsafePointer,
                };
                (kind, ptr)
            }
            dw::DW_TAG_structure_type => {
                let kind = match kind_attr {
                    Some(go_kind::STRING) => TypeKind::String,
                    Some(go_kind::SLICE) => TypeKind::Slice {
                        elem: self.slice_elem(at, &die)?,
                    },
                    _ => TypeKind::Struct {
                        fields: self.fields(at)?,
                    },
                };
                (kind, byte_size.unwrap_or(0))
            }
            dw::DW_TAG_array_type => {
                let elem = match self.reference(at, &die, dw::DW_AT_type)? {
                    Some(e) => self.type_ref(e)?,
                    None => return Err(malformed(at, "array without an element type")),
                };
                let len = self.array_len(at)?;
                (TypeKind::Array { elem, len }, byte_size.unwrap_or(0))
            }
            dw::DW_TAG_typedef => {
                self.typedef_kind(at, &die, &name, kind_attr, byte_size.unwrap_or(0))?
            }
            // A func value is one pointer to its closure record.
            dw::DW_TAG_subroutine_type => (TypeKind::Func, ptr),
            _ => (TypeKind::Unknown, byte_size.unwrap_or(0)),
        };
        Ok(GoType {
            name,
            size,
            align: 0,
            kind,
        })
    }

    /// What a Go typedef is, by its Go kind: an interface, map, chan, func or unsafe.Pointer
    /// (their DWARF is a typedef of the runtime's representation).
    fn typedef_kind(
        &mut self,
        at: DieRef,
        die: &Die<'a>,
        name: &str,
        kind_attr: Option<u64>,
        byte_size: u64,
    ) -> Result<(TypeKind, u64), BinaryError> {
        let ptr = self.ptr_size;
        Ok(match kind_attr {
            Some(go_kind::INTERFACE) => (
                TypeKind::Interface {
                    empty: self.is_empty_interface(at, die, name)?,
                },
                2 * ptr,
            ),
            Some(go_kind::MAP) => {
                let key = self.go_type_attr(at, die, DW_AT_GO_KEY)?;
                let value = self.go_type_attr(at, die, DW_AT_GO_ELEM)?;
                let header = match self.reference(at, die, dw::DW_AT_type)? {
                    Some(pointer) => Some(self.type_ref(pointer)?),
                    None => None,
                };
                let group = None;
                (
                    TypeKind::Map {
                        key,
                        value,
                        header,
                        group,
                    },
                    ptr,
                )
            }
            Some(go_kind::CHAN) => {
                let elem = self.go_type_attr(at, die, DW_AT_GO_ELEM)?;
                (TypeKind::Chan { elem }, ptr)
            }
            Some(go_kind::FUNC) => (TypeKind::Func, ptr),
            Some(go_kind::UNSAFE_POINTER) => (TypeKind::UnsafePointer, ptr),
            _ => (TypeKind::Unknown, byte_size),
        })
    }

    /// A type named by a Go attribute (go_key, go_elem); required on maps and chans.
    pub(super) fn go_type_attr(
        &mut self,
        at: DieRef,
        die: &Die<'a>,
        attr: DwAt,
    ) -> Result<TypeId, BinaryError> {
        match self.reference(at, die, attr)? {
            Some(t) => self.type_ref(t),
            None => Err(malformed(at, &format!("{attr} missing"))),
        }
    }

    /// From go_elem, or else from the type of the `array` member's pointer.
    pub(super) fn slice_elem(&mut self, at: DieRef, die: &Die<'a>) -> Result<TypeId, BinaryError> {
        if let Some(elem) = self.reference(at, die, DW_AT_GO_ELEM)? {
            return self.type_ref(elem);
        }
        for (member_at, member) in self.children(at)? {
            if member.tag() == dw::DW_TAG_member
                && self.name(&member, member_at)?.as_deref() == Some("array")
            {
                let ptr = self.reference(member_at, &member, dw::DW_AT_type)?;
                let ptr_die = match ptr {
                    Some(p) => (p, self.die(p)?),
                    None => break,
                };
                if let Some(elem) = self.reference(ptr_die.0, &ptr_die.1, dw::DW_AT_type)? {
                    return self.type_ref(elem);
                }
            }
        }
        Err(malformed(at, "slice without an element type"))
    }

    pub(super) fn fields(&mut self, at: DieRef) -> Result<Vec<Field>, BinaryError> {
        let mut fields = Vec::new();
        for (member_at, member) in self.children(at)? {
            if member.tag() != dw::DW_TAG_member {
                continue;
            }
            let name = self.name(&member, member_at)?.unwrap_or_default();
            let ty = match self.reference(member_at, &member, dw::DW_AT_type)? {
                Some(t) => self.type_ref(t)?,
                None => return Err(malformed(member_at, "member without a type")),
            };
            let offset = member
                .attr_value(dw::DW_AT_data_member_location)
                .and_then(|v| v.udata_value())
                .ok_or_else(|| malformed(member_at, "member without a constant offset"))?;
            let embedded = match member.attr_value(DW_AT_GO_EMBEDDED_FIELD) {
                Some(AttributeValue::Flag(f)) => f,
                Some(v) => v.udata_value().is_some_and(|n| n != 0),
                None => false,
            };
            fields.push(Field {
                name,
                ty,
                offset,
                embedded,
            });
        }
        Ok(fields)
    }

    pub(super) fn array_len(&self, at: DieRef) -> Result<u64, BinaryError> {
        for (_, sub) in self.children(at)? {
            if sub.tag() != dw::DW_TAG_subrange_type {
                continue;
            }
            if let Some(n) = sub
                .attr_value(dw::DW_AT_count)
                .and_then(|v| v.udata_value())
            {
                return Ok(n);
            }
            if let Some(n) = sub
                .attr_value(dw::DW_AT_upper_bound)
                .and_then(|v| v.udata_value())
            {
                return Ok(n + 1);
            }
        }
        Err(malformed(at, "array without a length"))
    }

    /// `interface {}` is runtime.eface {_type, data}; every other interface is runtime.iface
    /// {tab, data}.
    pub(super) fn is_empty_interface(
        &self,
        at: DieRef,
        die: &Die<'a>,
        name: &str,
    ) -> Result<bool, BinaryError> {
        if name == "interface {}" || name == "any" {
            return Ok(true);
        }
        let Some(mut layout) = self.reference(at, die, dw::DW_AT_type)? else {
            return Ok(false);
        };
        // A named empty interface (`type PrivateKey any`) refers to the typedef
        // `runtime.eface`, not to its struct.
        for _ in 0..MAX_TYPEDEF_CHAIN {
            let d = self.die(layout)?;
            if d.tag() != dw::DW_TAG_typedef {
                break;
            }
            match self.reference(layout, &d, dw::DW_AT_type)? {
                Some(next) => layout = next,
                None => break,
            }
        }
        for (member_at, member) in self.children(layout)? {
            if member.tag() == dw::DW_TAG_member {
                return Ok(self.name(&member, member_at)?.as_deref() == Some("_type"));
            }
        }
        Ok(false)
    }
}

pub(super) fn base_kind(kind: Option<u64>, die: &Die<'_>) -> TypeKind {
    match kind {
        Some(go_kind::BOOL) => return TypeKind::Bool,
        Some(go_kind::INT..=go_kind::INT64) => return TypeKind::Int { signed: true },
        Some(go_kind::UINT..=go_kind::UINTPTR) => return TypeKind::Int { signed: false },
        Some(go_kind::FLOAT32 | go_kind::FLOAT64) => return TypeKind::Float,
        Some(go_kind::COMPLEX64 | go_kind::COMPLEX128) => return TypeKind::Complex,
        _ => {}
    }
    match die.attr_value(dw::DW_AT_encoding) {
        Some(AttributeValue::Encoding(e)) => match e {
            dw::DW_ATE_boolean => TypeKind::Bool,
            dw::DW_ATE_signed | dw::DW_ATE_signed_char => TypeKind::Int { signed: true },
            dw::DW_ATE_unsigned | dw::DW_ATE_unsigned_char => TypeKind::Int { signed: false },
            dw::DW_ATE_float => TypeKind::Float,
            dw::DW_ATE_complex_float => TypeKind::Complex,
            _ => TypeKind::Unknown,
        },
        _ => TypeKind::Unknown,
    }
}

pub(super) fn unknown() -> GoType {
    GoType {
        name: String::new(),
        size: 0,
        align: 1,
        kind: TypeKind::Unknown,
    }
}

/// Go's alignment rules: scalars align to their size (a complex to its halves), pointer-shaped
/// values and headers to the pointer size, arrays to their element, structs to their most
/// aligned field.
/// Adds to `unreadable` every type that holds one of its types by value, until none is left:
/// its layout, and so where its parts travel, is unknown.
pub(super) fn spread_unreadable(types: &[GoType], unreadable: &mut HashMap<TypeId, String>) {
    while !unreadable.is_empty() {
        let mut found = Vec::new();
        for (i, ty) in types.iter().enumerate() {
            let id = TypeId(i as u32);
            if unreadable.contains_key(&id) {
                continue;
            }
            let held = match &ty.kind {
                TypeKind::Struct { fields } => fields.iter().find_map(|f| {
                    unreadable
                        .get(&f.ty)
                        .map(|e| format!("field {}: {e}", f.name))
                }),
                TypeKind::Array { elem, .. } => {
                    unreadable.get(elem).map(|e| format!("element: {e}"))
                }
                _ => None,
            };
            if let Some(why) = held {
                found.push((id, why));
            }
        }
        if found.is_empty() {
            break;
        }
        unreadable.extend(found);
    }
}

pub(super) fn align_of(
    types: &[GoType],
    id: TypeId,
    memo: &mut [Option<u64>],
    ptr: u64,
    depth: u32,
) -> u64 {
    let i = id.0 as usize;
    if let Some(Some(a)) = memo.get(i) {
        return *a;
    }
    let Some(ty) = types.get(i) else { return 1 };
    if depth > MAX_VALUE_NESTING {
        return 1;
    }
    // Provisional, so that a by-value cycle (only in broken DWARF) terminates.
    if let Some(slot) = memo.get_mut(i) {
        *slot = Some(1);
    }
    let align = match &ty.kind {
        TypeKind::Bool | TypeKind::Int { .. } | TypeKind::Float => ty.size.clamp(1, ptr),
        TypeKind::Complex => (ty.size / 2).clamp(1, ptr),
        TypeKind::String
        | TypeKind::UnsafePointer
        | TypeKind::Pointer { .. }
        | TypeKind::Slice { .. }
        | TypeKind::Interface { .. }
        | TypeKind::Map { .. }
        | TypeKind::Chan { .. }
        | TypeKind::Func => ptr,
        TypeKind::Array { elem, .. } => align_of(types, *elem, memo, ptr, depth + 1),
        TypeKind::Struct { fields } => fields
            .iter()
            .map(|f| align_of(types, f.ty, memo, ptr, depth + 1))
            .max()
            .unwrap_or(1),
        TypeKind::Unknown => 1,
    };
    if let Some(slot) = memo.get_mut(i) {
        *slot = Some(align);
    }
    align
}
