//! Captured registers → Go values. Each value's memory image is rebuilt from the ABI pieces
//! that carried it, then read according to its Go type — so narrow integers are masked to their
//! width and signed ones sign-extended, whatever the upper register bits held.

use gotrace_binary::abi::{AbiReg, Location};
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use gotrace_plan::{CallKind, PlannedValue, ProbePlan, RawCall, INT_REGS};
use serde::Serialize;

/// A decoded Go value.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    /// A pointer, map, chan, func or unsafe.Pointer: its address (0 is nil).
    Address(Address),
    /// A string whose bytes were not captured: its data pointer and length.
    StringHeader(StringHeader),
    Slice(SliceHeader),
    Interface(InterfaceHeader),
    Struct(Vec<StructField>),
    Array(Vec<Value>),
    /// Not available, and why (`"on the stack"`, `"float register"`, …).
    Unavailable(Unavailable),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Address {
    pub addr: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StringHeader {
    pub ptr: u64,
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SliceHeader {
    pub ptr: u64,
    pub len: u64,
    pub cap: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InterfaceHeader {
    pub tab: u64,
    pub data: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StructField {
    pub name: String,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Unavailable {
    pub unavailable: &'static str,
}

/// A named, typed, decoded parameter or result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedValue {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub value: Value,
}

/// One call, decoded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecodedCall<'p> {
    pub function: &'p str,
    pub outcome: CallKind,
    pub pid: u32,
    pub tid: u32,
    pub return_tid: u32,
    pub goid: u64,
    pub entry_ns: u64,
    pub return_ns: u64,
    /// `None` when the binary has no DWARF: the signature is unknown.
    pub args: Option<Vec<NamedValue>>,
    pub results: Option<Vec<NamedValue>>,
}

impl DecodedCall<'_> {
    pub fn duration_ns(&self) -> Option<u64> {
        (self.outcome == CallKind::Returned).then(|| self.return_ns.saturating_sub(self.entry_ns))
    }
}

/// Decodes one call reported by the kernel side.
pub fn decode<'p>(plan: &'p ProbePlan, types: &TypeTable, raw: &RawCall) -> Option<DecodedCall<'p>> {
    let function = plan.functions.get(raw.function as usize)?;
    let signature = function.signature.as_ref();
    let args = signature.map(|s| s.params.iter().map(|v| named(types, v, &raw.entry_regs)).collect());
    let results = match raw.kind {
        CallKind::Returned => signature.map(|s| s.results.iter().map(|v| named(types, v, &raw.return_regs)).collect()),
        CallKind::Entered | CallKind::Abandoned => None,
    };
    Some(DecodedCall {
        function: &function.name,
        outcome: raw.kind,
        pid: raw.pid,
        tid: raw.entry_tid,
        return_tid: raw.return_tid,
        goid: raw.goid,
        entry_ns: raw.entry_ns,
        return_ns: raw.return_ns,
        args,
        results,
    })
}

fn named(types: &TypeTable, planned: &PlannedValue, regs: &[u64; INT_REGS]) -> NamedValue {
    let ty = types.get(planned.ty);
    NamedValue {
        name: planned.name.clone(),
        type_name: ty.name.clone(),
        value: value_at(types, planned.ty, &planned.location, regs),
    }
}

fn value_at(types: &TypeTable, ty: TypeId, location: &Location, regs: &[u64; INT_REGS]) -> Value {
    match location {
        Location::Empty => decode_image(types, ty, &[]),
        Location::Stack { .. } => Value::Unavailable(Unavailable {
            unavailable: "passed on the stack (not captured yet)",
        }),
        Location::Registers(pieces) => {
            let size = types.get(ty).size as usize;
            let mut image = vec![0u8; size];
            for piece in pieces {
                let AbiReg::Int(index) = piece.reg else {
                    return Value::Unavailable(Unavailable {
                        unavailable: "passed in a float register, which uprobes cannot read",
                    });
                };
                let Some(reg) = regs.get(index as usize) else {
                    return Value::Unavailable(Unavailable {
                        unavailable: "register not captured",
                    });
                };
                let start = piece.value_offset as usize;
                let end = (start + piece.size as usize).min(size);
                if start < end {
                    image[start..end].copy_from_slice(&reg.to_le_bytes()[..end - start]);
                }
            }
            decode_image(types, ty, &image)
        }
    }
}

/// Reads a value of type `ty` from its little-endian memory image.
fn decode_image(types: &TypeTable, ty: TypeId, image: &[u8]) -> Value {
    let t = types.get(ty);
    let word = |at: usize| read_uint(image, at, 8);
    match &t.kind {
        TypeKind::Bool => Value::Bool(read_uint(image, 0, 1) != 0),
        TypeKind::Int { signed: true } => Value::Int(sign_extend(read_uint(image, 0, t.size as usize), t.size)),
        TypeKind::Int { signed: false } => Value::Uint(read_uint(image, 0, t.size as usize)),
        TypeKind::Float => match t.size {
            4 => Value::Float(f64::from(f32::from_bits(read_uint(image, 0, 4) as u32))),
            _ => Value::Float(f64::from_bits(word(0))),
        },
        TypeKind::Pointer { .. } | TypeKind::UnsafePointer | TypeKind::Map { .. } | TypeKind::Chan { .. } | TypeKind::Func => {
            Value::Address(Address { addr: word(0) })
        }
        TypeKind::String => Value::StringHeader(StringHeader { ptr: word(0), len: word(8) }),
        TypeKind::Slice { .. } => Value::Slice(SliceHeader {
            ptr: word(0),
            len: word(8),
            cap: word(16),
        }),
        TypeKind::Interface { .. } => Value::Interface(InterfaceHeader { tab: word(0), data: word(8) }),
        TypeKind::Struct { fields } => Value::Struct(
            fields
                .iter()
                .map(|f| StructField {
                    name: f.name.clone(),
                    value: decode_image(types, f.ty, image.get(f.offset as usize..).unwrap_or(&[])),
                })
                .collect(),
        ),
        TypeKind::Array { elem, len } => {
            let stride = types.get(*elem).size as usize;
            Value::Array(
                (0..*len as usize)
                    .map(|i| decode_image(types, *elem, image.get(i * stride..).unwrap_or(&[])))
                    .collect(),
            )
        }
        TypeKind::Complex | TypeKind::Unknown => Value::Unavailable(Unavailable {
            unavailable: "type not decoded",
        }),
    }
}

fn read_uint(image: &[u8], at: usize, size: usize) -> u64 {
    let mut bytes = [0u8; 8];
    let size = size.min(8);
    if let Some(src) = image.get(at..at + size) {
        bytes[..size].copy_from_slice(src);
    }
    u64::from_le_bytes(bytes)
}

fn sign_extend(value: u64, size: u64) -> i64 {
    let bits = (size.clamp(1, 8) * 8) as u32;
    let shift = 64 - bits;
    ((value << shift) as i64) >> shift
}

/// Renders a value the way Go's `%#v` would where it can (`55`, `true`, `0xc000010000`).
pub fn go_syntax(value: &Value) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Float(f) => format_float(*f),
        Value::Address(Address { addr: 0 }) => "nil".into(),
        Value::Address(Address { addr }) => format!("{addr:#x}"),
        Value::StringHeader(StringHeader { ptr, len }) => format!("string{{ptr:{ptr:#x}, len:{len}}}"),
        Value::Slice(SliceHeader { ptr: 0, .. }) => "nil".into(),
        Value::Slice(SliceHeader { ptr, len, cap }) => format!("[]{{ptr:{ptr:#x}}} (len {len} cap {cap})"),
        Value::Interface(InterfaceHeader { tab: 0, .. }) => "nil".into(),
        Value::Interface(InterfaceHeader { tab, data }) => format!("iface{{tab:{tab:#x}, data:{data:#x}}}"),
        Value::Struct(fields) => {
            let inner: Vec<String> = fields.iter().map(|f| format!("{}:{}", f.name, go_syntax(&f.value))).collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::Array(elems) => {
            let inner: Vec<String> = elems.iter().map(go_syntax).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Unavailable(_) => "?".into(),
    }
}

fn format_float(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e21 {
        format!("{f:.0}")
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotrace_binary::abi::Piece;
    use gotrace_binary::types::GoType;

    fn int_type(types: &mut TypeTable, name: &str, size: u64, signed: bool) -> TypeId {
        types.push(GoType {
            name: name.into(),
            size,
            align: size,
            kind: TypeKind::Int { signed },
        })
    }

    fn in_reg(index: u8, size: u64) -> Location {
        Location::Registers(vec![Piece {
            reg: AbiReg::Int(index),
            value_offset: 0,
            size,
        }])
    }

    #[test]
    fn narrow_integers_are_masked_and_sign_extended() {
        let mut types = TypeTable::default();
        let int8 = int_type(&mut types, "int8", 1, true);
        let uint16 = int_type(&mut types, "uint16", 2, false);
        let mut regs = [0u64; INT_REGS];
        regs[0] = 0xdead_beef_ffff_ff80; // garbage above the low byte: int8(-128)
        regs[1] = 0x1234_0000_0001_fffe; // uint16(0xfffe)
        assert_eq!(value_at(&types, int8, &in_reg(0, 1), &regs), Value::Int(-128));
        assert_eq!(value_at(&types, uint16, &in_reg(1, 2), &regs), Value::Uint(0xfffe));
    }

    #[test]
    fn stack_and_float_values_say_why_they_are_missing() {
        let mut types = TypeTable::default();
        let int = int_type(&mut types, "int", 8, true);
        let regs = [0u64; INT_REGS];
        let on_stack = value_at(&types, int, &Location::Stack { sp_offset: 8 }, &regs);
        assert!(matches!(on_stack, Value::Unavailable(_)));
        assert_eq!(go_syntax(&on_stack), "?");
    }
}
