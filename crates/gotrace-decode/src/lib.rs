//! Captured registers and memory → Go values. Each value's memory image is rebuilt from the
//! ABI pieces that carried it (or read from the captured stack), then read according to its
//! Go type like a debugger would: narrow integers masked to their width and sign-extended,
//! strings and slices read from their backing arrays, pointers followed, interfaces resolved
//! to their dynamic type — all from the memory the BPF program captured at the probe site.

mod memory;
mod render;

pub use memory::Memory;
pub use render::{go_syntax, GoSyntax};

use gotrace_binary::abi::{AbiReg, Location};
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use gotrace_plan::recipe::{
    has_pointers, is_pointer_shaped, map_bucket_size, map_layout, map_slots_shown,
    swiss_entries_followed, MapLayout, SwissLayout, GROUP_SLOTS, HMAP_OLDBUCKETS, MAP_BUCKETS_READ,
};
use gotrace_plan::{CallKind, PlannedValue, ProbePlan, RawCall, Unlocated, INT_REGS};
use memory::Read;
use std::collections::HashMap;

/// A decoded Go value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Complex(f64, f64),
    String(Bytes),
    Slice {
        type_name: String,
        ptr: u64,
        len: u64,
        cap: u64,
        /// The elements captured (the first ones), or why there are none.
        elems: Result<Vec<Value>, Missing>,
    },
    Array {
        type_name: String,
        elems: Vec<Value>,
    },
    Struct {
        type_name: String,
        fields: Vec<(String, Value)>,
    },
    Pointer {
        type_name: String,
        addr: u64,
        /// `None` for nil.
        target: Option<Result<Box<Value>, Missing>>,
    },
    Interface {
        /// `None` for a nil interface.
        dynamic: Option<(String, Result<Box<Value>, Missing>)>,
    },
    Map {
        type_name: String,
        addr: u64,
        len: Result<u64, Missing>,
        entries: Vec<(Value, Value)>,
        /// Entries the probe meant to read but could not (beyond those cut to a limit).
        entries_missing: Option<Missing>,
    },
    /// chan, func, unsafe.Pointer: an address, 0 for nil.
    Address(u64),
    Unavailable(Missing),
}

/// A string's bytes, or a prefix of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Bytes {
    pub bytes: Vec<u8>,
    /// Bytes of the real value not captured (cut to a limit).
    pub missing: u64,
    /// Why nothing was captured, when nothing was.
    pub error: Option<Missing>,
}

/// Why a value (or part of one) is not shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Float registers are not part of the registers a uprobe sees.
    FloatRegister,
    /// Behind more pointers, interfaces or maps than `--depth` follows.
    Depth,
    /// The probe's read budget ran out first: ops per site, bytes per event, or a second
    /// interface inside an interface's value.
    Budget,
    /// The pointer is not nil but its memory could not be read (unmapped, freed).
    Unreadable,
    /// The binary's DWARF describes no map layout gotrace knows.
    MapLayout,
    /// The memory read at entry was dropped: the ring buffer was full.
    Lost,
    /// The binary has no DWARF type for the dynamic type.
    UnknownType,
    /// An inlined call's argument DWARF gives no location for at the probe.
    NoLocation,
    /// An inlined call's argument in a register the probe does not capture.
    UncapturedRegister,
    /// An inlined call's argument placed by a DWARF expression gotrace does not evaluate.
    LocationExpression,
}

impl Missing {
    /// Why, in a sentence (JSON `unavailable`).
    pub fn reason(self) -> &'static str {
        match self {
            Missing::FloatRegister => "passed in a float register, which uprobes cannot read",
            Missing::Depth => "not read: beyond --depth",
            Missing::Budget => {
                "not read: the probe's read budget (ops per site, bytes per event) was used up by the values before it"
            }
            Missing::Unreadable => "not read: unreadable memory (bad or freed pointer)",
            Missing::MapLayout => "not read: this binary's DWARF describes no map layout gotrace knows",
            Missing::Lost => "not read: the memory read at entry was lost (ring buffer full)",
            Missing::UnknownType => "not read: dynamic type not described in DWARF",
            Missing::NoLocation => {
                "not read: DWARF gives no location for it at this inlined call (optimized away or a constant)"
            }
            Missing::UncapturedRegister => {
                "not read: at this inlined call it is in a register gotrace does not capture (RDX, RBP, R12-R15)"
            }
            Missing::LocationExpression => {
                "not read: DWARF places it at this inlined call in a way gotrace does not evaluate"
            }
        }
    }

    /// Why, in a word or two (`<not read: …>` in text, `{"not_read": …}` in JSON).
    pub fn short(self) -> &'static str {
        match self {
            Missing::FloatRegister => "float register",
            Missing::Depth => "beyond --depth",
            Missing::Budget => "read budget used up",
            Missing::Unreadable => "unreadable memory",
            Missing::MapLayout => "map layout unknown",
            Missing::Lost => "entry memory lost",
            Missing::UnknownType => "type not in DWARF",
            Missing::NoLocation => "no location",
            Missing::UncapturedRegister => "register not captured",
            Missing::LocationExpression => "location not understood",
        }
    }
}

impl Value {
    /// Why this value, or the first part of it that is, cannot be shown.
    pub fn unavailable_part(&self) -> Option<Missing> {
        match self {
            Value::Unavailable(missing)
            | Value::Slice {
                elems: Err(missing),
                ..
            }
            | Value::Pointer {
                target: Some(Err(missing)),
                ..
            }
            | Value::Interface {
                dynamic: Some((_, Err(missing))),
            }
            | Value::Map {
                len: Err(missing), ..
            } => Some(*missing),
            Value::String(s) => s.error,
            Value::Array { elems, .. }
            | Value::Slice {
                elems: Ok(elems), ..
            } => elems.iter().find_map(Value::unavailable_part),
            Value::Struct { fields, .. } => fields.iter().find_map(|(_, v)| v.unavailable_part()),
            Value::Pointer {
                target: Some(Ok(v)),
                ..
            }
            | Value::Interface {
                dynamic: Some((_, Ok(v))),
            } => v.unavailable_part(),
            Value::Map {
                entries,
                entries_missing,
                ..
            } => entries_missing.or_else(|| {
                entries
                    .iter()
                    .find_map(|(k, v)| k.unavailable_part().or_else(|| v.unavailable_part()))
            }),
            Value::Bool(_)
            | Value::Int(_)
            | Value::Uint(_)
            | Value::Float(_)
            | Value::Complex(..)
            | Value::Pointer { target: None, .. }
            | Value::Interface { dynamic: None }
            | Value::Address(_) => None,
        }
    }

    /// Whether some part of it was not read (as opposed to floats in registers and inlined
    /// calls' arguments DWARF does not locate, which cannot be).
    pub fn has_unread_part(&self) -> bool {
        self.unavailable_part().is_some_and(|m| {
            !matches!(
                m,
                Missing::FloatRegister
                    | Missing::NoLocation
                    | Missing::UncapturedRegister
                    | Missing::LocationExpression
            )
        })
    }

    /// Whether anything inside was cut to a capture limit (string bytes, elements, entries).
    pub fn is_truncated(&self) -> bool {
        match self {
            Value::String(s) => s.error.is_none() && s.missing > 0,
            Value::Slice {
                len,
                elems: Ok(elems),
                ..
            } => elems.len() as u64 != *len || elems.iter().any(Value::is_truncated),
            Value::Array { elems, .. } => elems.iter().any(Value::is_truncated),
            Value::Struct { fields, .. } => fields.iter().any(|(_, v)| v.is_truncated()),
            Value::Pointer {
                target: Some(Ok(v)),
                ..
            } => v.is_truncated(),
            Value::Interface {
                dynamic: Some((_, Ok(v))),
            } => v.is_truncated(),
            Value::Map {
                len: Ok(len),
                entries,
                entries_missing,
                ..
            } => {
                // Entries not read are not cut: they are marked not read instead.
                (entries_missing.is_none() && entries.len() as u64 != *len)
                    || entries
                        .iter()
                        .any(|(k, v)| k.is_truncated() || v.is_truncated())
            }
            _ => false,
        }
    }
}

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
        }
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
        out.args = signature
            .map(|s| self.named_all(&s.params, &entry, raw.entry_data_lost, out.args.take()));
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
            | CallKind::Abandoned => None,
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
            TypeKind::String => Value::String(string_at(memory, word(0), word(8))),
            TypeKind::Slice { elem } => {
                let (ptr, len, cap) = (word(0), word(8), word(16));
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
                self.interface(*empty, word(0), word(8), memory, depth)
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
            match memory.read(tab + 8, 8) {
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

    #[allow(clippy::too_many_arguments)]
    fn map(
        &self,
        map_type: TypeId,
        type_name: String,
        key: TypeId,
        value: TypeId,
        addr: u64,
        memory: &Memory<'_>,
        depth: u32,
    ) -> Value {
        let (len, entries, entries_missing) = if addr == 0 {
            (Ok(0), Vec::new(), None)
        } else if depth == 0 {
            (Err(Missing::Depth), Vec::new(), None)
        } else {
            match map_layout(self.types, map_type, self.plan.classic_maps) {
                MapLayout::Classic => self.classic_map(key, value, addr, memory, depth),
                MapLayout::Swiss(layout) => {
                    self.swiss_map(&layout, key, value, addr, memory, depth)
                }
                MapLayout::Unknown => (Err(Missing::MapLayout), Vec::new(), None),
            }
        };
        Value::Map {
            type_name,
            addr,
            len,
            entries,
            entries_missing,
        }
    }

    /// Go ≤ 1.23: the hmap header and the first buckets.
    fn classic_map(
        &self,
        key: TypeId,
        value: TypeId,
        addr: u64,
        memory: &Memory<'_>,
        depth: u32,
    ) -> MapParts {
        let header = match map_header(memory, addr, 48) {
            Ok(h) => h,
            Err(parts) => return parts,
        };
        let mut entries = Vec::new();
        let (key_size, value_size) = (self.types.get(key).size, self.types.get(value).size);
        let bucket_size = map_bucket_size(key_size, value_size);
        let (buckets, log2_buckets) = (read_uint(header, 16, 8), read_uint(header, 9, 1));
        let in_use = 1u64
            .checked_shl(log2_buckets as u32)
            .unwrap_or(u64::MAX)
            .min(MAP_BUCKETS_READ);
        let slots = map_slots_shown(self.plan.limits) as usize;
        // A growing map's old buckets hold the entries not yet evacuated (their tophash is
        // still ≥ 5); what those entries point at is not followed.
        let old = read_uint(header, HMAP_OLDBUCKETS as usize, 8);
        let old_in_use = if old == 0 { 0 } else { MAP_BUCKETS_READ };
        let new = (0..in_use).map(|b| (buckets + b * bucket_size, true));
        let olds = (0..old_in_use).map(|b| (old + b * bucket_size, false));
        for (at, followed) in new.chain(olds) {
            let Read::Bytes(bucket) = memory.read(at, bucket_size as usize) else {
                continue;
            };
            for slot in 0..slots {
                // tophash values below 5 mark empty or evacuated slots.
                if bucket[slot] < 5 || entries.len() >= self.plan.limits.elems as usize {
                    continue;
                }
                let k_at = 8 + slot * key_size as usize;
                let v_at = 8 + 8 * key_size as usize + slot * value_size as usize;
                let k = self.value(key, bucket.get(k_at..).unwrap_or(&[]), memory, depth - 1);
                let v = self.value(value, bucket.get(v_at..).unwrap_or(&[]), memory, depth - 1);
                let unread = [&k, &v]
                    .iter()
                    .any(|x| x.unavailable_part() == Some(Missing::Budget));
                if followed || !unread {
                    entries.push((k, v));
                }
            }
        }
        let len = read_uint(header, 0, 8);
        // Every entry sits in buckets past the ones read: say so, never show an empty map.
        let missing = (entries.is_empty() && len > 0).then_some(Missing::Budget);
        (Ok(len), entries, missing)
    }

    /// Go ≥ 1.24 (Swiss tables): the length from the `Map` header; entries from a small
    /// map's one group, or from the first groups of a large map's first table — the slots
    /// whose control byte says full (high bit clear; 0x80 empty, 0xfe deleted), in the order
    /// the probe gathered them. Fewer than min(len, --elems) entries say why.
    fn swiss_map(
        &self,
        layout: &SwissLayout,
        key: TypeId,
        value: TypeId,
        addr: u64,
        memory: &Memory<'_>,
        depth: u32,
    ) -> MapParts {
        let header = match map_header(memory, addr, layout.header_size as usize) {
            Ok(h) => h,
            Err(parts) => return parts,
        };
        let len = read_uint(header, layout.used as usize, 8);
        let mut entries = Vec::new();
        if len == 0 {
            return (Ok(0), entries, None);
        }
        let dir_ptr = read_uint(header, layout.dir_ptr as usize, 8);
        let dir_len = read_uint(header, layout.dir_len as usize, 8) as i64;
        let group_size = layout.group_size as usize;
        let groups = if dir_len <= 0 {
            memory.read(dir_ptr, group_size)
        } else {
            let table = match memory.read(dir_ptr, 8) {
                Read::Bytes(d) => memory.read(read_uint(d, 0, 8), layout.table_size as usize),
                other => other,
            };
            match table {
                Read::Bytes(t) => {
                    let data = read_uint(t, layout.groups_data as usize, 8);
                    let count = read_uint(t, layout.groups_mask as usize, 8).saturating_add(1);
                    memory.read_prefix(data, count.saturating_mul(layout.group_size))
                }
                other => other,
            }
        };
        let groups = match groups {
            Read::Bytes(g) => g,
            Read::Fault => return (Ok(len), entries, Some(Missing::Unreadable)),
            Read::Absent => return (Ok(len), entries, Some(Missing::Budget)),
        };
        let (key_size, value_size) = (self.types.get(key).size, self.types.get(value).size);
        let limits = self.plan.limits;
        let followed = swiss_entries_followed(self.types, limits, layout, key, value);
        let wanted = len.min(u64::from(limits.elems));
        let full = groups.chunks_exact(group_size).flat_map(|group| {
            (0..GROUP_SLOTS)
                .filter(|&slot| {
                    // A slot past the bytes read counts as empty.
                    group
                        .get((layout.ctrl + slot) as usize)
                        .is_some_and(|ctrl| ctrl & 0x80 == 0)
                })
                .map(move |slot| (group, slot))
        });
        for (n, (group, slot)) in full.enumerate() {
            if entries.len() as u64 >= wanted {
                break;
            }
            let k = self.slot_value(key, key_size, &layout.key, slot, group, memory, depth);
            let v = self.slot_value(value, value_size, &layout.elem, slot, group, memory, depth);
            // The first `followed` full slots are the ones the probe gathered and followed:
            // shown, with what it could not read marked. Past them, only entries needing no
            // reads of their own.
            let unread = [&k, &v]
                .iter()
                .any(|x| x.unavailable_part() == Some(Missing::Budget));
            if !unread || (n as u64) < followed {
                entries.push((k, v));
            }
        }
        // Groups or tables not read, or entries not followed: fewer than --elems shown.
        let missing = (entries.len() as u64) < wanted;
        (Ok(len), entries, missing.then_some(Missing::Budget))
    }

    /// The key or value in one slot of a Swiss-table group, read through its pointer when
    /// the map stores it indirectly.
    #[allow(clippy::too_many_arguments)]
    fn slot_value(
        &self,
        ty: TypeId,
        size: u64,
        part: &gotrace_plan::recipe::SlotPart,
        slot: u64,
        group: &[u8],
        memory: &Memory<'_>,
        depth: u32,
    ) -> Value {
        let at = part.at(slot) as usize;
        let image = group.get(at..).unwrap_or(&[]);
        if !part.indirect {
            return self.value(ty, image, memory, depth - 1);
        }
        match memory.read(read_uint(image, 0, 8), size as usize) {
            Read::Bytes(bytes) => self.value(ty, bytes, memory, depth - 1),
            Read::Fault => Value::Unavailable(Missing::Unreadable),
            Read::Absent => Value::Unavailable(Missing::Budget),
        }
    }
}

/// A map's length, the entries shown, and why entries meant to be read were not.
type MapParts = (Result<u64, Missing>, Vec<(Value, Value)>, Option<Missing>);

/// A map's header, or what to show when it was not read.
fn map_header<'m>(memory: &Memory<'m>, addr: u64, size: usize) -> Result<&'m [u8], MapParts> {
    match memory.read(addr, size) {
        Read::Bytes(h) => Ok(h),
        Read::Fault => Err((Err(Missing::Unreadable), Vec::new(), None)),
        Read::Absent => Err((Err(Missing::Budget), Vec::new(), None)),
    }
}

struct Site<'a> {
    regs: &'a [u64; INT_REGS],
    sp: u64,
    memory: Memory<'a>,
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
