//! Go's internal register ABI (ABIInternal): where each argument and result of a signature
//! lives at function entry and at RET. The algorithm follows the compiler
//! (cmd/compile/internal/abi, documented in src/cmd/compile/abi-internal.md).

use crate::types::{GoType, Signature, TypeId, TypeKind, TypeTable};
use crate::Arch;
use serde::Serialize;

/// A register by its position in the ABI's sequence (amd64 integer: RAX, RBX, RCX, RDI, RSI,
/// R8, R9, R10, R11; float: X0–X14. arm64 integer: R0–R15; float: F0–F15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbiReg {
    Int(u8),
    Float(u8),
}

/// One register-sized part of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Piece {
    pub reg: AbiReg,
    /// Where this part sits in the value's memory layout.
    pub value_offset: u64,
    /// Bytes of the register that belong to the value (the low ones); the rest is garbage.
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Registers(Vec<Piece>),
    /// At `sp_offset` bytes above SP at entry (equally, at RET).
    Stack {
        sp_offset: u64,
    },
    /// A zero-size value.
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub params: Vec<Location>,
    pub results: Vec<Location>,
    /// Bytes of the argument frame the caller reserves: stack-assigned arguments and results,
    /// then (pointer-aligned) a spill slot per register-assigned argument. The compiler writes
    /// the same figure into pclntab (`_func.args`), so a difference means the signature read
    /// from DWARF is missing something.
    pub arg_width: u64,
}

/// How many integer and float registers carry arguments (and, separately, results).
pub fn register_counts(arch: Arch) -> (u8, u8) {
    match arch {
        Arch::Amd64 => (9, 15),
        Arch::Arm64 => (16, 16),
    }
}

/// Both architectures gotrace reads are 64-bit.
const PTR_SIZE: u64 = 8;

/// Stack arguments start one word above SP at entry: the return address pushed by CALL on
/// amd64, a reserved slot on arm64 (the return address is in LR there).
const STACK_ARGS_AT_SP: u64 = 8;

/// Types nested by value deeper than this only occur in broken DWARF (a cycle).
const MAX_NESTING: u32 = 64;

/// Assigns the receiver and parameters in order, then the results with fresh register
/// counters. Stack-assigned values are laid out in order with Go alignment; the results'
/// stack area starts pointer-aligned after the arguments'.
pub fn assign(arch: Arch, sig: &Signature, types: &TypeTable) -> Assignment {
    let (ints, floats) = register_counts(arch);
    let mut stack = 0;
    let mut state = Registers::new(ints, floats);
    let mut spill = 0;
    let params = sig
        .params
        .iter()
        .map(|v| {
            let location = state.assign(v.ty, types, &mut stack);
            if let Location::Registers(_) = location {
                let t = types.get(v.ty);
                spill = align_up(spill, t.align) + t.size;
            }
            location
        })
        .collect();
    stack = align_up(stack, PTR_SIZE);
    let mut state = Registers::new(ints, floats);
    let results = sig
        .results
        .iter()
        .map(|v| state.assign(v.ty, types, &mut stack))
        .collect();
    Assignment {
        params,
        results,
        arg_width: align_up(stack, PTR_SIZE) + align_up(spill, PTR_SIZE),
    }
}

/// Register counters for one pass (arguments, or results).
struct Registers {
    total_int: u8,
    total_float: u8,
    next_int: u8,
    next_float: u8,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Int,
    Float,
}

/// A scalar part of a value: which register class it needs, where it sits, how big it is.
struct Part {
    class: Class,
    offset: u64,
    size: u64,
}

impl Registers {
    fn new(total_int: u8, total_float: u8) -> Registers {
        Registers {
            total_int,
            total_float,
            next_int: 0,
            next_float: 0,
        }
    }

    /// Registers if the whole value fits in those left, else the next stack slot. Counting
    /// first means a value that does not fit takes no registers, so a later, smaller value
    /// can still get some.
    fn assign(&mut self, ty: TypeId, types: &TypeTable, stack: &mut u64) -> Location {
        let t = types.get(ty);
        if t.size > 0 {
            let mut parts = Vec::new();
            if register_parts(ty, types, 0, &mut parts, 0) {
                let need_int = parts.iter().filter(|p| p.class == Class::Int).count();
                let need_float = parts.len() - need_int;
                if need_int <= usize::from(self.total_int.saturating_sub(self.next_int))
                    && need_float <= usize::from(self.total_float.saturating_sub(self.next_float))
                {
                    return Location::Registers(parts.iter().map(|p| self.take(p)).collect());
                }
            }
        }
        // Zero-size values are stack-assigned too: they take no bytes but do align the offset.
        let offset = align_up(*stack, t.align);
        *stack = offset + t.size;
        if t.size == 0 {
            Location::Empty
        } else {
            Location::Stack {
                sp_offset: STACK_ARGS_AT_SP + offset,
            }
        }
    }

    fn take(&mut self, part: &Part) -> Piece {
        let reg = match part.class {
            Class::Int => {
                self.next_int += 1;
                AbiReg::Int(self.next_int - 1)
            }
            Class::Float => {
                self.next_float += 1;
                AbiReg::Float(self.next_float - 1)
            }
        };
        Piece {
            reg,
            value_offset: part.offset,
            size: part.size,
        }
    }
}

/// Appends the scalar parts of `ty` (at `base` within the outer value) in register order.
/// False when the type can never be register-assigned (arrays longer than one element, types
/// not understood).
fn register_parts(
    ty: TypeId,
    types: &TypeTable,
    base: u64,
    out: &mut Vec<Part>,
    depth: u32,
) -> bool {
    if depth > MAX_NESTING {
        return false;
    }
    let t: &GoType = types.get(ty);
    let word = |out: &mut Vec<Part>, n: u64| {
        for i in 0..n {
            out.push(Part {
                class: Class::Int,
                offset: base + i * PTR_SIZE,
                size: PTR_SIZE,
            });
        }
    };
    match &t.kind {
        TypeKind::Bool
        | TypeKind::Int { .. }
        | TypeKind::UnsafePointer
        | TypeKind::Pointer { .. }
        | TypeKind::Map { .. }
        | TypeKind::Chan { .. }
        | TypeKind::Func => out.push(Part {
            class: Class::Int,
            offset: base,
            size: t.size,
        }),
        TypeKind::Float => out.push(Part {
            class: Class::Float,
            offset: base,
            size: t.size,
        }),
        TypeKind::Complex => {
            let half = t.size / 2;
            for offset in [base, base + half] {
                out.push(Part {
                    class: Class::Float,
                    offset,
                    size: half,
                });
            }
        }
        TypeKind::String | TypeKind::Interface { .. } => word(out, 2),
        TypeKind::Slice { .. } => word(out, 3),
        TypeKind::Struct { fields } => {
            return fields
                .iter()
                .all(|f| register_parts(f.ty, types, base + f.offset, out, depth + 1));
        }
        TypeKind::Array { elem, len } => {
            return match len {
                0 => true,
                1 => register_parts(*elem, types, base, out, depth + 1),
                _ => false,
            };
        }
        TypeKind::Unknown => return false,
    }
    true
}

fn align_up(offset: u64, align: u64) -> u64 {
    let align = align.max(1);
    offset.div_ceil(align) * align
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Field, Variable};

    struct Table {
        types: TypeTable,
    }

    impl Table {
        fn new() -> Table {
            Table {
                types: TypeTable::default(),
            }
        }

        fn add(&mut self, name: &str, size: u64, align: u64, kind: TypeKind) -> TypeId {
            self.types.push(GoType {
                name: name.into(),
                size,
                align,
                kind,
            })
        }

        fn sig(&self, params: &[TypeId], results: &[TypeId]) -> Signature {
            let var = |(i, ty): (usize, &TypeId)| Variable {
                name: format!("v{i}"),
                ty: *ty,
            };
            Signature {
                params: params.iter().enumerate().map(var).collect(),
                results: results.iter().enumerate().map(var).collect(),
            }
        }
    }

    fn regs(pieces: &[(AbiReg, u64, u64)]) -> Location {
        Location::Registers(
            pieces
                .iter()
                .map(|&(reg, value_offset, size)| Piece {
                    reg,
                    value_offset,
                    size,
                })
                .collect(),
        )
    }

    #[test]
    fn a_value_that_does_not_fit_goes_whole_to_the_stack_and_frees_its_registers() {
        let mut t = Table::new();
        let int = t.add("int", 8, 8, TypeKind::Int { signed: true });
        let fields = (0..4)
            .map(|i| Field {
                name: format!("f{i}"),
                ty: int,
                offset: i * 8,
                embedded: false,
            })
            .collect();
        let quad = t.add("Quad", 32, 8, TypeKind::Struct { fields });
        let mut params = vec![int; 6];
        params.extend([quad, int]);
        let a = assign(Arch::Amd64, &t.sig(&params, &[int]), &t.types);
        assert_eq!(a.params[6], Location::Stack { sp_offset: 8 });
        assert_eq!(a.params[7], regs(&[(AbiReg::Int(6), 0, 8)]));
        assert_eq!(a.results[0], regs(&[(AbiReg::Int(0), 0, 8)]));
    }

    #[test]
    fn small_struct_fields_keep_their_offsets_and_sizes() {
        let mut t = Table::new();
        let i8_ = t.add("int8", 1, 1, TypeKind::Int { signed: true });
        let i16_ = t.add("int16", 2, 2, TypeKind::Int { signed: true });
        let f32_ = t.add("float32", 4, 4, TypeKind::Float);
        let field = |name: &str, ty, offset| Field {
            name: name.into(),
            ty,
            offset,
            embedded: false,
        };
        let s = t.add(
            "S",
            8,
            4,
            TypeKind::Struct {
                fields: vec![field("a", i8_, 0), field("b", i16_, 2), field("c", f32_, 4)],
            },
        );
        let a = assign(Arch::Arm64, &t.sig(&[s], &[]), &t.types);
        assert_eq!(
            a.params[0],
            regs(&[
                (AbiReg::Int(0), 0, 1),
                (AbiReg::Int(1), 2, 2),
                (AbiReg::Float(0), 4, 4)
            ])
        );
    }

    #[test]
    fn stack_results_start_pointer_aligned_after_stack_arguments() {
        let mut t = Table::new();
        let i8_ = t.add("int8", 1, 1, TypeKind::Int { signed: true });
        let arr = t.add("[2]int8", 2, 1, TypeKind::Array { elem: i8_, len: 2 });
        let empty = t.add("struct {}", 0, 1, TypeKind::Struct { fields: vec![] });
        let a = assign(Arch::Amd64, &t.sig(&[arr, empty, i8_], &[arr]), &t.types);
        assert_eq!(a.params[0], Location::Stack { sp_offset: 8 });
        assert_eq!(a.params[1], Location::Empty);
        assert_eq!(a.params[2], regs(&[(AbiReg::Int(0), 0, 1)]));
        assert_eq!(a.results[0], Location::Stack { sp_offset: 16 });
    }

    #[test]
    fn complex_takes_two_float_registers_and_runs_out() {
        let mut t = Table::new();
        let c = t.add("complex128", 16, 8, TypeKind::Complex);
        let a = assign(Arch::Amd64, &t.sig(&[c; 8], &[]), &t.types);
        assert_eq!(
            a.params[0],
            regs(&[(AbiReg::Float(0), 0, 8), (AbiReg::Float(1), 8, 8)])
        );
        // Seven complex values use X0–X13; the eighth needs two of the one left.
        assert_eq!(a.params[7], Location::Stack { sp_offset: 8 });
    }
}
