//! `--where`: an expression on a call's arguments and results, compiled per traced function
//! into a small program the probe runs, so a call filtered out costs no ring-buffer record.
//!
//! Every comparison is of one value with a constant; values are found as the decoder finds
//! them (the ABI's registers and stack slots, struct fields, through at most
//! [`MAX_HOPS`] pointers). An expression on arguments only is decided at the entry; one that
//! names a result, at the return, with the arguments' registers as they were at the entry.

mod group;
mod parse;

pub use group::{compile_group, FunctionGroup, GroupBy, GroupKey, MAX_KEY_STRING};
pub use parse::{parse, CmpOp, Expr, Operand, Path};

use crate::{PlannedFunction, PlannedValue, ProbePlan};
use gotrace_binary::abi::{AbiReg, Location, Piece};
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use std::fmt;

/// Pointers a value's path may go through (`a.b.c` with `a` and `b` pointers is 2).
pub const MAX_HOPS: usize = 3;
/// Bytes of a string constant the probe compares (`GT_FILTER_STR_MAX` in gotrace.h).
pub const MAX_STRING: usize = 64;
/// Operations of one function's program (`GT_FILTER_MAX_OPS` in gotrace.h).
pub const MAX_OPS: usize = 32;

/// A bad `--where` (or `--by`), pointing at the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    /// The option the expression was given to.
    pub option: &'static str,
    pub expr: String,
    pub at: usize,
    pub message: String,
    /// The function has no argument or result of a name the expression uses (or no known
    /// signature): a glob may leave it out rather than fail.
    pub lacks_name: bool,
}

impl FilterError {
    pub fn at(expr: &str, at: usize, message: impl Into<String>) -> FilterError {
        FilterError {
            option: "--where",
            expr: expr.to_owned(),
            at,
            message: message.into(),
            lacks_name: false,
        }
    }

    /// The same error, said of another option's expression.
    pub fn of_option(self, option: &'static str) -> FilterError {
        FilterError { option, ..self }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.expr[..self.at.min(self.expr.len())].chars().count();
        write!(
            f,
            "{}: {}\n  {}\n  {}^",
            self.option,
            self.message,
            self.expr,
            " ".repeat(column)
        )
    }
}

impl std::error::Error for FilterError {}

/// Where a word is found when the program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// An integer ABI register (its index among Go's nine).
    Reg(u8),
    /// The stack pointer: stack-assigned values are at offsets above it.
    Sp,
}

/// One word of a value: `base` (at the entry, for arguments), then each hop reads the pointer
/// at `word + hop`, then `read` (if any) reads `size` bytes at `word + read`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub base: Base,
    /// From the entry's registers and stack pointer (arguments) rather than the site's.
    pub at_entry: bool,
    pub hops: Vec<i64>,
    pub read: Option<i64>,
    pub size: u8,
    pub signed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrOp {
    Eq,
    Ne,
    Prefix,
}

/// One step of a postfix program: comparisons push a truth value, `And`/`Or`/`Not` combine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterOp {
    Compare {
        word: Word,
        op: CmpOp,
        value: i64,
    },
    String {
        ptr: Word,
        len: Word,
        op: StrOp,
        literal: u32,
    },
    And,
    Or,
    Not,
    /// False: the program of an inlined copy whose arguments are unknown (no DWARF).
    Never,
}

/// One function's program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionFilter {
    /// Decided at the return (it names a result), else at the entry.
    pub at_return: bool,
    pub ops: Vec<FilterOp>,
}

/// The `--where` programs of a plan, one per function, and their string constants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub functions: Vec<FunctionFilter>,
    pub literals: Vec<Vec<u8>>,
    /// Inlined copies the expression cannot be tested on (their arguments are unknown without
    /// DWARF): their calls are left out, and the user is told (see [`Filters::warning`]).
    pub untestable_copies: usize,
}

impl Filters {
    /// What the user should know about the program: inlined copies left out.
    pub fn warning(&self) -> Option<String> {
        (self.untestable_copies > 0).then(|| {
            format!(
                "--where: {} inlined copies cannot be tested (their arguments are not known without DWARF): their calls are left out",
                self.untestable_copies
            )
        })
    }
}

/// An inlined copy with no known signature: nothing to test, its own code is what is traced.
fn untestable_copy(function: &PlannedFunction) -> bool {
    function.inlined_into.is_some() && function.signature.is_none()
}

/// The functions of `plan` that lack a name `text` uses (see [`FilterError::lacks_name`]), with
/// why; a mistake in the expression itself is an error.
pub fn lacking_names(
    text: &str,
    plan: &ProbePlan,
    types: Option<&TypeTable>,
) -> Result<Vec<(String, FilterError)>, FilterError> {
    let expr = parse(text)?;
    let mut literals = Vec::new();
    let mut lacking = Vec::new();
    for function in plan.functions.iter().filter(|f| !untestable_copy(f)) {
        let mut compiler = FunctionCompiler::new(text, function, types, &mut literals, false);
        match compiler.expr(&expr) {
            Err(e) if e.lacks_name => lacking.push((function.name.clone(), e)),
            _ => {}
        }
    }
    Ok(lacking)
}

/// Compiles `text` for every function of `plan`: each must have every name it uses.
pub fn compile(
    text: &str,
    plan: &ProbePlan,
    types: Option<&TypeTable>,
) -> Result<Filters, FilterError> {
    let expr = parse(text)?;
    let mut filters = Filters::default();
    for function in &plan.functions {
        if untestable_copy(function) {
            filters.untestable_copies += 1;
            filters.functions.push(FunctionFilter {
                at_return: false,
                ops: vec![FilterOp::Never],
            });
            continue;
        }
        let at_return = names_a_result(&expr, function);
        let mut compiler =
            FunctionCompiler::new(text, function, types, &mut filters.literals, at_return);
        if compiler.at_return && plan.entry_only {
            return Err(FilterError::at(
                text,
                0,
                format!(
                    "{} is traced without returns (--no-return): its results cannot be tested",
                    function.name
                ),
            ));
        }
        compiler.expr(&expr)?;
        if compiler.ops.len() > MAX_OPS {
            return Err(FilterError::at(
                text,
                0,
                format!("too long: at most {MAX_OPS} comparisons and operators"),
            ));
        }
        filters.functions.push(FunctionFilter {
            at_return: compiler.at_return,
            ops: compiler.ops,
        });
    }
    Ok(filters)
}

/// Whether `path` starts at a result of `function` (read at the return) rather than an argument.
fn is_result(path: &Path, function: &PlannedFunction) -> bool {
    function.signature.as_ref().is_some_and(|s| {
        let name = &path.parts[0];
        let param = s.params.iter().any(|p| &p.name == name);
        !param && (s.results.iter().any(|r| &r.name == name) || name == "err")
    })
}

fn names_a_result(expr: &Expr, function: &PlannedFunction) -> bool {
    let is_result = |path: &Path| is_result(path, function);
    match expr {
        Expr::And(a, b) | Expr::Or(a, b) => {
            names_a_result(a, function) || names_a_result(b, function)
        }
        Expr::Not(a) => names_a_result(a, function),
        Expr::Truth(path) | Expr::HasPrefix { path, .. } => is_result(path),
        Expr::Compare { left, right, .. } => [left, right]
            .iter()
            .any(|o| matches!(o, Operand::Path(p) if is_result(p))),
    }
}

/// Where a value (or a part of one) is while the path is followed.
enum Place {
    Regs {
        pieces: Vec<Piece>,
        at_entry: bool,
    },
    Memory {
        base: Base,
        at_entry: bool,
        hops: Vec<i64>,
        off: i64,
    },
}

struct FunctionCompiler<'a> {
    text: &'a str,
    function: &'a PlannedFunction,
    types: Option<&'a TypeTable>,
    literals: &'a mut Vec<Vec<u8>>,
    at_return: bool,
    ops: Vec<FilterOp>,
}

impl<'a> FunctionCompiler<'a> {
    fn new(
        text: &'a str,
        function: &'a PlannedFunction,
        types: Option<&'a TypeTable>,
        literals: &'a mut Vec<Vec<u8>>,
        at_return: bool,
    ) -> Self {
        FunctionCompiler {
            text,
            function,
            types,
            literals,
            at_return,
            ops: Vec::new(),
        }
    }

    fn error(&self, at: usize, message: impl fmt::Display) -> FilterError {
        FilterError::at(self.text, at, format!("{}: {message}", self.function.name))
    }

    fn expr(&mut self, expr: &Expr) -> Result<(), FilterError> {
        match expr {
            Expr::And(a, b) | Expr::Or(a, b) => {
                self.expr(a)?;
                self.expr(b)?;
                self.ops.push(match expr {
                    Expr::And(..) => FilterOp::And,
                    _ => FilterOp::Or,
                });
            }
            Expr::Not(a) => {
                self.expr(a)?;
                self.ops.push(FilterOp::Not);
            }
            Expr::Truth(path) => self.compare(path, CmpOp::Ne, &Operand::Bool(false), path.at)?,
            Expr::HasPrefix { path, prefix } => {
                let (place, ty) = self.resolve(path)?;
                self.string(place, ty, StrOp::Prefix, prefix, path.at)?;
            }
            Expr::Compare {
                left,
                op,
                right,
                at,
            } => match (left, right) {
                (Operand::Path(p), constant) if !matches!(constant, Operand::Path(_)) => {
                    self.compare(p, *op, constant, *at)?
                }
                (constant, Operand::Path(p)) if !matches!(constant, Operand::Path(_)) => {
                    self.compare(p, op.flipped(), constant, *at)?
                }
                _ => return Err(self.error(*at, "compare an argument or result with a constant")),
            },
        }
        Ok(())
    }

    fn types(&self, at: usize) -> Result<&TypeTable, FilterError> {
        self.types
            .ok_or_else(|| self.error(at, "no types (no DWARF): its values cannot be tested"))
    }

    /// The argument or result a path starts at, then its fields.
    fn resolve(&self, path: &Path) -> Result<(Place, TypeId), FilterError> {
        let (value, at_entry) = self.named_value(path)?;
        let mut place = self.start(value, at_entry, path.at)?;
        let mut ty = value.ty;
        let types = self.types(path.at)?;
        for field in &path.parts[1..] {
            if let TypeKind::Pointer { elem } = types.get(ty).kind {
                place = self.deref(place, path.at)?;
                ty = elem;
            }
            let found = match &types.get(ty).kind {
                TypeKind::Struct { fields } => fields.iter().find(|f| &f.name == field),
                _ => None,
            };
            let Some(f) = found else {
                return Err(self.error(
                    path.at,
                    format!("{} has no field {field}", types.get(ty).name),
                ));
            };
            place = field_place(place, f.offset, types.get(f.ty).size);
            ty = f.ty;
        }
        Ok((place, ty))
    }

    /// The argument or result a path names first, and whether it is read at entry.
    fn named_value(&self, path: &Path) -> Result<(&PlannedValue, bool), FilterError> {
        let Some(signature) = &self.function.signature else {
            return Err(FilterError {
                lacks_name: true,
                ..self.error(
                    path.at,
                    "its signature is unknown (no DWARF): argument names are needed",
                )
            });
        };
        let name = &path.parts[0];
        // Go leaves results unnamed (`~r1`): `err` is the one result of type error.
        let errors: Vec<&PlannedValue> = match self.types {
            Some(types) if name == "err" => signature
                .results
                .iter()
                .filter(|r| types.get(r.ty).name == "error")
                .collect(),
            _ => Vec::new(),
        };
        if let Some(p) = signature.params.iter().find(|p| &p.name == name) {
            return Ok((p, true));
        }
        match signature.results.iter().find(|r| &r.name == name) {
            Some(r) => Ok((r, false)),
            None if errors.len() == 1 => Ok((errors[0], false)),
            None => {
                let names: Vec<&str> = signature
                    .params
                    .iter()
                    .chain(&signature.results)
                    .map(|v| v.name.as_str())
                    .collect();
                Err(FilterError {
                    lacks_name: true,
                    ..self.error(
                        path.at,
                        format!(
                            "no argument or result named {name} (it has: {})",
                            names.join(", ")
                        ),
                    )
                })
            }
        }
    }

    fn start(&self, value: &PlannedValue, at_entry: bool, at: usize) -> Result<Place, FilterError> {
        if value.unavailable.is_some() {
            return Err(self.error(
                at,
                format!("{} is not where the probe can read it", value.name),
            ));
        }
        match &value.location {
            Location::Registers(pieces) => Ok(Place::Regs {
                pieces: pieces.clone(),
                at_entry,
            }),
            Location::Stack { sp_offset } => Ok(Place::Memory {
                base: Base::Sp,
                at_entry,
                hops: Vec::new(),
                off: *sp_offset as i64,
            }),
            Location::Empty => {
                Err(self.error(at, format!("{} has no value (zero size)", value.name)))
            }
        }
    }

    /// The place a pointer held at `place` points to.
    fn deref(&self, place: Place, at: usize) -> Result<Place, FilterError> {
        let pointer = self.word(&place, 0, 8, false, at)?;
        if pointer.hops.len() + usize::from(pointer.read.is_some()) > MAX_HOPS {
            return Err(self.error(at, format!("follows more than {MAX_HOPS} pointers")));
        }
        let mut hops = pointer.hops;
        hops.extend(pointer.read);
        Ok(Place::Memory {
            base: pointer.base,
            at_entry: pointer.at_entry,
            hops,
            off: 0,
        })
    }

    /// The `size`-byte word at `offset` in the value at `place`.
    fn word(
        &self,
        place: &Place,
        offset: u64,
        size: u8,
        signed: bool,
        at: usize,
    ) -> Result<Word, FilterError> {
        match place {
            Place::Regs { pieces, at_entry } => {
                let piece = pieces
                    .iter()
                    .find(|p| p.value_offset == offset && p.size >= u64::from(size));
                match piece.map(|p| p.reg) {
                    Some(AbiReg::Int(reg)) => Ok(Word {
                        base: Base::Reg(reg),
                        at_entry: *at_entry,
                        hops: Vec::new(),
                        read: None,
                        size,
                        signed,
                    }),
                    _ => Err(self.error(at, "is not in an integer register the probe reads")),
                }
            }
            Place::Memory {
                base,
                at_entry,
                hops,
                off,
            } => Ok(Word {
                base: *base,
                at_entry: *at_entry,
                hops: hops.clone(),
                read: Some(off + offset as i64),
                size,
                signed,
            }),
        }
    }

    fn compare(
        &mut self,
        path: &Path,
        op: CmpOp,
        constant: &Operand,
        at: usize,
    ) -> Result<(), FilterError> {
        let (place, ty) = self.resolve(path)?;
        let types = self.types(path.at)?;
        let go = types.get(ty);
        let equality = matches!(op, CmpOp::Eq | CmpOp::Ne);
        let (offset, size, signed, value) = match (&go.kind, constant) {
            (TypeKind::Int { signed }, Operand::Int(v)) => {
                let bits = 8 * go.size as u32;
                let (lo, hi) = match signed {
                    true => (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1),
                    false => (0, (1i128 << bits) - 1),
                };
                if *v < lo || *v > hi {
                    return Err(self.error(at, format!("{v} does not fit {}", go.name)));
                }
                (0, go.size, *signed, *v as i64)
            }
            (TypeKind::Bool, Operand::Bool(b)) if equality => (0, 1, false, i64::from(*b)),
            (
                TypeKind::Pointer { .. }
                | TypeKind::UnsafePointer
                | TypeKind::Map { .. }
                | TypeKind::Chan { .. }
                | TypeKind::Func
                | TypeKind::Slice { .. }
                | TypeKind::Interface { .. },
                Operand::Nil,
            ) if equality => (0, 8, false, 0),
            (TypeKind::String, Operand::Str(s)) if equality => {
                let op = if op == CmpOp::Eq {
                    StrOp::Eq
                } else {
                    StrOp::Ne
                };
                return self.string(place, ty, op, s, at);
            }
            (TypeKind::Float | TypeKind::Complex, _) => {
                return Err(self.error(
                    at,
                    format!(
                        "{} is a {}: floating-point values cannot be tested (Go passes them in XMM registers, which probes do not read)",
                        path.parts.join("."),
                        go.name
                    ),
                ))
            }
            _ => {
                return Err(self.error(
                    at,
                    format!(
                        "cannot compare {} ({}) with {} using {op:?}",
                        path.parts.join("."),
                        go.name,
                        describe(constant)
                    ),
                ))
            }
        };
        let word = self.word(&place, offset, size as u8, signed, path.at)?;
        self.ops.push(FilterOp::Compare { word, op, value });
        Ok(())
    }

    fn string(
        &mut self,
        place: Place,
        ty: TypeId,
        op: StrOp,
        literal: &[u8],
        at: usize,
    ) -> Result<(), FilterError> {
        let types = self.types(at)?;
        if types.get(ty).kind != TypeKind::String {
            return Err(self.error(at, format!("{} is not a string", types.get(ty).name)));
        }
        if literal.len() > MAX_STRING {
            return Err(self.error(
                at,
                format!("string constants are compared up to {MAX_STRING} bytes"),
            ));
        }
        let ptr = self.word(&place, 0, 8, false, at)?;
        let len = self.word(&place, 8, 8, false, at)?;
        let index = match self.literals.iter().position(|l| l == literal) {
            Some(i) => i,
            None => {
                self.literals.push(literal.to_vec());
                self.literals.len() - 1
            }
        };
        self.ops.push(FilterOp::String {
            ptr,
            len,
            op,
            literal: index as u32,
        });
        Ok(())
    }
}

fn describe(constant: &Operand) -> String {
    match constant {
        Operand::Int(v) => v.to_string(),
        Operand::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
        Operand::Bool(b) => b.to_string(),
        Operand::Nil => "nil".into(),
        Operand::Path(p) => p.parts.join("."),
    }
}

/// The part of the value at `place` that is the field at `offset`, `size` bytes.
fn field_place(place: Place, offset: u64, size: u64) -> Place {
    match place {
        Place::Regs { pieces, at_entry } => Place::Regs {
            pieces: pieces
                .into_iter()
                .filter(|p| p.value_offset >= offset && p.value_offset < offset + size)
                .map(|p| Piece {
                    value_offset: p.value_offset - offset,
                    ..p
                })
                .collect(),
            at_entry,
        },
        Place::Memory {
            base,
            at_entry,
            hops,
            off,
        } => Place::Memory {
            base,
            at_entry,
            hops,
            off: off + offset as i64,
        },
    }
}
