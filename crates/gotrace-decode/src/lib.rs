//! Captured registers and memory → Go values. Each value's memory image is rebuilt from the
//! ABI pieces that carried it (or read from the captured stack), then read according to its
//! Go type like a debugger would: narrow integers masked to their width and sign-extended,
//! strings and slices read from their backing arrays, pointers followed, interfaces resolved
//! to their dynamic type — all from the memory the BPF program captured at the probe site.

mod group;
mod maps;
mod memory;
mod stack;
mod value;

pub use group::{GroupNamer, GroupValue};
pub use memory::Memory;
pub use stack::{Frame, Stack, Stacks};
pub use value::{Bytes, Missing, Value};

use gotrace_binary::abi::{AbiReg, Location, Piece};
use gotrace_binary::arginfo::{ArgItem, ArgWord, Unknown, UntypedArgs};
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use gotrace_plan::recipe::{has_pointers, is_pointer_shaped};
use gotrace_plan::{CallKind, PlannedValue, ProbePlan, RawCall, Unlocated, INT_REGS};
use memory::Read;
use std::collections::HashMap;

/// A named, typed, decoded parameter or result.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedValue<'p> {
    pub name: &'p str,
    pub type_name: &'p str,
    pub value: Value,
}

/// One call, decoded.
#[derive(Clone, Debug, PartialEq)]
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
    pub args: Option<Vec<NamedValue<'p>>>,
    pub results: Option<Vec<NamedValue<'p>>>,
    /// The call's stack at entry (`--stack`).
    pub stack: Option<Stack>,
}

impl Default for DecodedCall<'_> {
    fn default() -> Self {
        DecodedCall {
            function: "",
            outcome: CallKind::Entered,
            pid: 0,
            tid: 0,
            return_tid: 0,
            goid: 0,
            entry_ns: 0,
            return_ns: 0,
            args: None,
            results: None,
            stack: None,
        }
    }
}

impl DecodedCall<'_> {
    /// How long a returned call took, or how long a call in flight had been running when its
    /// process exited or gotrace stopped.
    pub fn duration_ns(&self) -> Option<u64> {
        matches!(self.outcome, CallKind::Returned | CallKind::InFlight)
            .then(|| self.return_ns.saturating_sub(self.entry_ns))
    }
}

/// What decoding needs besides the call: the types, and runtime type address → type.
pub struct Decoder<'p> {
    plan: &'p ProbePlan,
    types: &'p TypeTable,
    runtime_types: HashMap<u64, TypeId>,
    stacks: Option<Stacks<'p>>,
}

impl<'p> Decoder<'p> {
    pub fn new(
        plan: &'p ProbePlan,
        types: &'p TypeTable,
        runtime_types: HashMap<u64, TypeId>,
    ) -> Self {
        Decoder {
            plan,
            types,
            runtime_types,
            stacks: None,
        }
    }

    /// Symbolizes each call's stack (`--stack`) with `symbolizer`.
    pub fn with_stacks(mut self, symbolizer: &'p gotrace_binary::pclntab::Symbolizer<'p>) -> Self {
        self.stacks = Some(Stacks::new(symbolizer));
        self
    }

    /// Decodes one call reported by the kernel side.
    pub fn decode(&self, raw: &RawCall) -> Option<DecodedCall<'p>> {
        let mut call = DecodedCall::default();
        self.decode_into(raw, &mut call).then_some(call)
    }

    /// Decodes into `out`, reusing its buffers: the per-event path allocates nothing for calls
    /// whose values are all scalars. False when the call names no planned function.
    pub fn decode_into(&self, raw: &RawCall, out: &mut DecodedCall<'p>) -> bool {
        let Some(function) = self.plan.functions.get(raw.function as usize) else {
            return false;
        };
        let signature = function.signature.as_ref();
        let bias = raw.load_bias;
        let entry = Site {
            regs: &raw.entry_regs,
            sp: raw.entry_sp,
            memory: Memory::new(&raw.entry_captures, bias),
        };
        out.args = match (signature, &function.untyped) {
            (Some(s), _) => {
                Some(self.named_all(&s.params, &entry, raw.entry_data_lost, out.args.take()))
            }
            (None, Some(untyped)) => Some(untyped_words(untyped, &entry, raw.entry_data_lost)),
            (None, None) => None,
        };
        out.results = match raw.kind {
            CallKind::Returned => signature.map(|s| {
                let exit = Site {
                    regs: &raw.return_regs,
                    sp: raw.return_sp,
                    memory: Memory::new(&raw.return_captures, bias),
                };
                self.named_all(&s.results, &exit, false, out.results.take())
            }),
            CallKind::Entered
            | CallKind::Inlined
            | CallKind::Panicked
            | CallKind::Exited
            | CallKind::InFlight
            | CallKind::Abandoned
            | CallKind::ReturnNotSeen => None,
        };
        out.function = &function.name;
        // The BPF side reports an inlined copy's hit as an entry: its plan says what it is.
        out.outcome = match (raw.kind, &function.inlined_into) {
            (CallKind::Entered, Some(_)) => CallKind::Inlined,
            (kind, _) => kind,
        };
        out.pid = raw.pid;
        out.tid = raw.entry_tid;
        out.return_tid = raw.return_tid;
        out.goid = raw.goid;
        out.entry_ns = raw.entry_ns;
        out.return_ns = raw.return_ns;
        out.stack = self.stacks.as_ref().map(|stacks| {
            stacks.symbolize(raw.stack.as_ref(), bias, function.inlined_into.is_some())
        });
        true
    }

    fn named_all(
        &self,
        values: &'p [PlannedValue],
        site: &Site<'_>,
        memory_lost: bool,
        buffer: Option<Vec<NamedValue<'p>>>,
    ) -> Vec<NamedValue<'p>> {
        let mut out = buffer.unwrap_or_default();
        out.clear();
        out.extend(
            values
                .iter()
                // Compiler-internal parameters (the generic dictionary `.dict`) are not the user's.
                .filter(|v| !v.name.starts_with('.'))
                .map(|v| NamedValue {
                    name: &v.name,
                    type_name: &self.types.get(v.ty).name,
                    // Registers came with the call record; what was read through them did not.
                    value: if let Some(why) = v.unavailable {
                        Value::Unavailable(match why {
                            Unlocated::Nowhere => Missing::NoLocation,
                            Unlocated::Register => Missing::UncapturedRegister,
                            Unlocated::Expression => Missing::LocationExpression,
                        })
                    } else if memory_lost && has_pointers(self.types, v.ty) {
                        Value::Unavailable(Missing::Lost)
                    } else {
                        self.located(v.ty, &v.location, site)
                    },
                }),
        );
        out
    }

    fn located(&self, ty: TypeId, location: &Location, site: &Site<'_>) -> Value {
        let size = self.types.get(ty).size as usize;
        let image = match location {
            Location::Empty => Vec::new(),
            Location::Stack { sp_offset } => match site.memory.read(site.sp + sp_offset, size) {
                Read::Bytes(b) => b.to_vec(),
                Read::Fault => return Value::Unavailable(Missing::Unreadable),
                Read::Absent => return Value::Unavailable(Missing::Budget),
            },
            Location::Registers(pieces) => {
                let mut image = vec![0u8; size];
                let mut in_float_regs = Vec::new();
                for piece in pieces {
                    let start = piece.value_offset as usize;
                    let end = (start + piece.size as usize).min(size);
                    let AbiReg::Int(index) = piece.reg else {
                        in_float_regs.push(start..end);
                        continue;
                    };
                    let Some(reg) = site.regs.get(index as usize) else {
                        return Value::Unavailable(Missing::Budget);
                    };
                    if start < end {
                        image[start..end].copy_from_slice(&reg.to_le_bytes()[..end - start]);
                    }
                }
                let mut value = self.value(ty, &image, &site.memory, self.plan.limits.depth);
                // The parts that travelled in float registers are unknown, the rest is shown.
                if !in_float_regs.is_empty() {
                    self.mask_float_parts(ty, 0, &in_float_regs, &mut value);
                }
                return value;
            }
        };
        self.value(ty, &image, &site.memory, self.plan.limits.depth)
    }

    /// Replaces the parts of `value` (at `offset` in its register image) that came from float
    /// registers, which uprobes cannot read, by "unavailable".
    fn mask_float_parts(
        &self,
        ty: TypeId,
        offset: usize,
        unknown: &[std::ops::Range<usize>],
        value: &mut Value,
    ) {
        let t = self.types.get(ty);
        let range = offset..offset + t.size as usize;
        if !unknown
            .iter()
            .any(|u| u.start < range.end && range.start < u.end)
        {
            return;
        }
        match (&t.kind, value) {
            (TypeKind::Struct { fields: types }, Value::Struct { fields, .. }) => {
                for (field, (_, v)) in types.iter().zip(fields.iter_mut()) {
                    self.mask_float_parts(field.ty, offset + field.offset as usize, unknown, v);
                }
            }
            (TypeKind::Array { elem, .. }, Value::Array { elems, .. }) => {
                let stride = self.types.get(*elem).size as usize;
                for (i, v) in elems.iter_mut().enumerate() {
                    self.mask_float_parts(*elem, offset + i * stride, unknown, v);
                }
            }
            (_, v) => *v = Value::Unavailable(Missing::FloatRegister),
        }
    }

    /// Reads a value of type `ty` from its little-endian memory image, following at most
    /// `depth` more pointers — as many as the capture followed, so cyclic data stops too.
    fn value(&self, ty: TypeId, image: &[u8], memory: &Memory<'_>, depth: u32) -> Value {
        let t = self.types.get(ty);
        let word = |at: usize| read_uint(image, at, 8);
        let layout = &self.plan.layout;
        match &t.kind {
            TypeKind::Bool => Value::Bool(read_uint(image, 0, 1) != 0),
            TypeKind::Int { signed: true } => {
                Value::Int(sign_extend(read_uint(image, 0, t.size as usize), t.size))
            }
            TypeKind::Int { signed: false } => Value::Uint(read_uint(image, 0, t.size as usize)),
            TypeKind::Float => Value::Float(float(image, 0, t.size)),
            TypeKind::Complex => {
                let half = t.size / 2;
                Value::Complex(float(image, 0, half), float(image, half as usize, half))
            }
            TypeKind::UnsafePointer | TypeKind::Chan { .. } | TypeKind::Func => {
                Value::Address(word(0))
            }
            TypeKind::String => {
                let len = word(layout.string_len as usize);
                Value::String(string_at(memory, word(0), len))
            }
            TypeKind::Slice { elem } => {
                let (len, cap) = (layout.slice_len as usize, layout.slice_cap as usize);
                let (ptr, len, cap) = (word(0), word(len), word(cap));
                let elems = if ptr == 0 {
                    Ok(Vec::new())
                } else {
                    self.elements(*elem, ptr, len, memory, depth)
                };
                Value::Slice {
                    type_name: t.name.clone(),
                    ptr,
                    len,
                    cap,
                    elems,
                }
            }
            TypeKind::Array { elem, len } => {
                let stride = self.types.get(*elem).size as usize;
                Value::Array {
                    type_name: t.name.clone(),
                    elems: (0..*len as usize)
                        .map(|i| {
                            self.value(*elem, image.get(i * stride..).unwrap_or(&[]), memory, depth)
                        })
                        .collect(),
                }
            }
            TypeKind::Struct { fields } => Value::Struct {
                type_name: t.name.clone(),
                fields: fields
                    .iter()
                    .map(|f| {
                        let at = image.get(f.offset as usize..).unwrap_or(&[]);
                        (f.name.clone(), self.value(f.ty, at, memory, depth))
                    })
                    .collect(),
            },
            TypeKind::Pointer { elem } => {
                let addr = word(0);
                let target = (addr != 0).then(|| self.pointee(*elem, addr, memory, depth));
                Value::Pointer {
                    type_name: t.name.clone(),
                    addr,
                    target,
                }
            }
            TypeKind::Interface { empty } => {
                let data = word(layout.iface_data as usize);
                self.interface(*empty, word(0), data, memory, depth)
            }
            TypeKind::Map { key, value, .. } => {
                self.map(ty, t.name.clone(), *key, *value, word(0), memory, depth)
            }
            TypeKind::Unknown => Value::Unavailable(Missing::UnknownType),
        }
    }

    fn pointee(
        &self,
        ty: TypeId,
        addr: u64,
        memory: &Memory<'_>,
        depth: u32,
    ) -> Result<Box<Value>, Missing> {
        let size = self.types.get(ty).size as usize;
        if depth == 0 {
            return Err(Missing::Depth);
        }
        // Nothing to read (context.Background's struct{}): no capture was needed.
        if size == 0 {
            return Ok(Box::new(self.value(ty, &[], memory, depth - 1)));
        }
        match memory.read(addr, size) {
            Read::Bytes(bytes) => Ok(Box::new(self.value(ty, bytes, memory, depth - 1))),
            Read::Fault => Err(Missing::Unreadable),
            Read::Absent => Err(Missing::Budget),
        }
    }

    fn elements(
        &self,
        elem: TypeId,
        ptr: u64,
        len: u64,
        memory: &Memory<'_>,
        depth: u32,
    ) -> Result<Vec<Value>, Missing> {
        let stride = self.types.get(elem).size;
        if stride == 0 {
            return Ok((0..len.min(1 << 16))
                .map(|_| self.value(elem, &[], memory, depth))
                .collect());
        }
        let available = match memory.read_prefix(ptr, len.saturating_mul(stride)) {
            Read::Bytes(bytes) => bytes,
            Read::Fault => return Err(Missing::Unreadable),
            Read::Absent => return Err(Missing::Budget),
        };
        Ok(available
            .chunks_exact(stride as usize)
            .map(|chunk| self.value(elem, chunk, memory, depth.saturating_sub(1)))
            .collect())
    }

    fn interface(
        &self,
        empty: bool,
        tab: u64,
        data: u64,
        memory: &Memory<'_>,
        depth: u32,
    ) -> Value {
        if tab == 0 {
            return Value::Interface { dynamic: None };
        }
        let type_addr = if empty {
            tab
        } else {
            match memory.read(tab + self.plan.layout.itab_type, 8) {
                Read::Bytes(b) => read_uint(b, 0, 8),
                Read::Fault => return Value::Unavailable(Missing::Unreadable),
                Read::Absent => return Value::Unavailable(Missing::Budget),
            }
        };
        let Some(ty) = self
            .runtime_types
            .get(&memory.link_address(type_addr))
            .copied()
        else {
            return Value::Interface {
                dynamic: Some((
                    format!("<type at {type_addr:#x}>"),
                    Err(Missing::UnknownType),
                )),
            };
        };
        let name = self.types.get(ty).name.clone();
        let value = if depth == 0 {
            Err(Missing::Depth)
        } else if is_pointer_shaped(self.types, ty) {
            Ok(Box::new(self.value(
                ty,
                &data.to_le_bytes(),
                memory,
                depth - 1,
            )))
        } else {
            self.pointee(ty, data, memory, depth)
        };
        Value::Interface {
            dynamic: Some((name, value)),
        }
    }
}

struct Site<'a> {
    regs: &'a [u64; INT_REGS],
    sp: u64,
    memory: Memory<'a>,
}

/// The arguments of a function known only from its traceback metadata, positionally (no
/// names, no types): each word read where its place at entry is proven, else not read.
fn untyped_words<'p>(
    args: &UntypedArgs,
    entry: &Site<'_>,
    memory_lost: bool,
) -> Vec<NamedValue<'p>> {
    // Aggregates nest: the innermost open one collects the words.
    let mut open: Vec<Vec<Value>> = vec![Vec::new()];
    for item in &args.items {
        let value = match item {
            ArgItem::Open => {
                open.push(Vec::new());
                continue;
            }
            ArgItem::Close => match open.len() {
                1 => continue,
                _ => Value::Words(open.pop().unwrap_or_default()),
            },
            ArgItem::Word(word) => Value::Word {
                offset: word.offset,
                size: word.size as u8,
                bits: untyped_word(word, entry, memory_lost),
            },
            ArgItem::Elided => Value::Elided,
            ArgItem::OffsetTooLarge => Value::Unavailable(Missing::NotDescribed),
        };
        if let Some(last) = open.last_mut() {
            last.push(value);
        }
    }
    // A stream cut inside an aggregate: what was opened is still shown.
    while open.len() > 1 {
        let words = open.pop().unwrap_or_default();
        if let Some(last) = open.last_mut() {
            last.push(Value::Words(words));
        }
    }
    open.pop()
        .unwrap_or_default()
        .into_iter()
        .map(|value| NamedValue {
            name: "",
            type_name: "",
            value,
        })
        .collect()
}

/// One untyped word: the low `size` bytes of its register, or `size` bytes at SP+offset.
fn untyped_word(word: &ArgWord, entry: &Site<'_>, memory_lost: bool) -> Result<u64, Missing> {
    let size = word.size as usize;
    match &word.location {
        Err(Unknown::NoStackCheck) => Err(Missing::NoStackCheck),
        Err(_) => Err(Missing::NotProven),
        Ok(Location::Registers(pieces)) => match pieces.as_slice() {
            [Piece {
                reg: AbiReg::Int(index),
                ..
            }] => {
                let reg = entry.regs.get(*index as usize).ok_or(Missing::Budget)?;
                Ok(read_uint(&reg.to_le_bytes(), 0, size))
            }
            [Piece {
                reg: AbiReg::Float(_),
                ..
            }] => Err(Missing::FloatRegister),
            _ => Err(Missing::NotProven),
        },
        Ok(Location::Stack { .. }) if memory_lost => Err(Missing::Lost),
        Ok(Location::Stack { sp_offset }) => match entry.memory.read(entry.sp + sp_offset, size) {
            Read::Bytes(b) => Ok(read_uint(b, 0, size)),
            Read::Fault => Err(Missing::Unreadable),
            Read::Absent => Err(Missing::Budget),
        },
        Ok(Location::Empty) => Err(Missing::NotProven),
    }
}

fn string_at(memory: &Memory<'_>, ptr: u64, len: u64) -> Bytes {
    if len == 0 {
        return Bytes {
            bytes: Vec::new(),
            missing: 0,
            error: None,
        };
    }
    match memory.read_prefix(ptr, len) {
        Read::Bytes(b) => Bytes {
            bytes: b.to_vec(),
            missing: len - b.len() as u64,
            error: None,
        },
        Read::Fault => Bytes {
            bytes: Vec::new(),
            missing: len,
            error: Some(Missing::Unreadable),
        },
        Read::Absent => Bytes {
            bytes: Vec::new(),
            missing: len,
            error: Some(Missing::Budget),
        },
    }
}

fn float(image: &[u8], at: usize, size: u64) -> f64 {
    match size {
        4 => f64::from(f32::from_bits(read_uint(image, at, 4) as u32)),
        _ => f64::from_bits(read_uint(image, at, 8)),
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
