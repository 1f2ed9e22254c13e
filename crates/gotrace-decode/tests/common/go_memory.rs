//! Go values laid out in a process image as the Go runtime lays them out on amd64 (string and
//! slice headers, eface/iface words and itabs, classic hmaps and buckets for Go ≤ 1.23, Swiss
//! map headers, directories, tables and groups for Go ≥ 1.24, with the offsets this binary's
//! DWARF gives), and the decoded value each one must come back as.

use super::bpf_model::UserMemory;
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use gotrace_decode::{Bytes, Missing, Value};
use gotrace_plan::recipe::{is_pointer_shaped, map_layout, MapLayout};
use gotrace_plan::Limits;
use gotrace_plan::RuntimeLayout;
use std::collections::HashMap;

pub const HEAP_BASE: u64 = 0xc0_0000_0000;
const HEAP_SIZE: usize = 4 << 20;
pub const STACK_BASE: u64 = 0xc0_0080_0000;
const STACK_SIZE: usize = 64 << 10;
/// The stack pointer at the probe: frames' stack arguments lie above it.
pub const SP: u64 = STACK_BASE + 0x1000;
/// An address in no mapping: reading it faults.
pub const UNMAPPED: u64 = 0xdead_0000;
/// The high bytes a register holds beyond a narrow value (the decoder must mask them off).
const REG_GARBAGE: u64 = 0xa5a5_a5a5_a5a5_a5a5;

/// A Go value to lay out, shaped by the Go type it is placed as.
#[derive(Clone, Debug)]
pub enum G {
    Int(i64),
    Uint(u64),
    Float(f64),
    Complex(f64, f64),
    Bool(bool),
    Str(&'static str),
    /// A string header pointing at `ptr` (an unmapped address: unreadable bytes).
    StrAt(u64, u64),
    Slice(Vec<G>, u64),
    Array(Vec<G>),
    Struct(Vec<G>),
    /// A pointer to the value; also a chan or func's record, when laid out as one.
    Ptr(Box<G>),
    /// A pointer (or string, map) to an unmapped address.
    BadPtr(u64),
    /// The zero value of any type: nil pointer, slice, map, interface, chan, func.
    Zero,
    /// An interface holding a value of the named dynamic type.
    Iface(&'static str, Box<G>),
    /// An interface whose dynamic type is at `addr`, which DWARF does not describe.
    IfaceAt(u64),
    Map(Vec<(G, G)>),
    /// A chan, func or unsafe.Pointer word.
    Addr(u64),
}

pub fn ptr(g: G) -> G {
    G::Ptr(Box::new(g))
}

pub fn iface(ty: &'static str, g: G) -> G {
    G::Iface(ty, Box::new(g))
}

/// A process's memory: a heap arena the values are allocated in, and a goroutine stack.
pub struct Process {
    heap: Vec<u8>,
    next: u64,
    stack: Vec<u8>,
}

impl Process {
    pub fn new() -> Self {
        Process {
            heap: vec![0; HEAP_SIZE],
            next: HEAP_BASE + 0x100,
            stack: vec![0; STACK_SIZE],
        }
    }

    pub(super) fn alloc(&mut self, bytes: &[u8]) -> u64 {
        let at = self.next;
        let start = (at - HEAP_BASE) as usize;
        self.heap[start..start + bytes.len()].copy_from_slice(bytes);
        self.next = (at + bytes.len().max(1) as u64).div_ceil(16) * 16;
        at
    }

    fn write_stack(&mut self, addr: u64, bytes: &[u8]) {
        let at = (addr - STACK_BASE) as usize;
        self.stack[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

impl UserMemory for Process {
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        fn within(addr: u64, len: usize, base: u64, bytes: &[u8]) -> Option<&[u8]> {
            let start = usize::try_from(addr.checked_sub(base)?).ok()?;
            bytes.get(start..start.checked_add(len)?)
        }
        within(addr, len, HEAP_BASE, &self.heap)
            .or_else(|| within(addr, len, STACK_BASE, &self.stack))
    }
}

pub(super) fn put(image: &mut [u8], at: usize, value: u64, size: usize) {
    image[at..at + size].copy_from_slice(&value.to_le_bytes()[..size]);
}

/// Lays values out and says what the decoder must make of them, with the plan's limits.
pub struct Layout<'t> {
    pub types: &'t TypeTable,
    pub limits: Limits,
    /// The runtime layout of the release the fixture was built by.
    pub go: RuntimeLayout,
    /// Dynamic type name → its runtime type address.
    pub runtime: HashMap<String, (u64, TypeId)>,
    pub process: Process,
    /// Buckets (classic) or groups (Swiss, then in a table) left empty before a map's
    /// entries: where a hash may put every entry past what the probe reads.
    pub empty_first: usize,
    /// Runtime − link-time address of the binary in this process (position-independent).
    pub load_bias: u64,
}

impl<'t> Layout<'t> {
    pub fn new(
        types: &'t TypeTable,
        runtime_types: &HashMap<u64, TypeId>,
        limits: Limits,
        go: RuntimeLayout,
    ) -> Self {
        let mut runtime: HashMap<String, (u64, TypeId)> = HashMap::new();
        for (&addr, &ty) in runtime_types {
            let entry = runtime
                .entry(types.get(ty).name.clone())
                .or_insert((addr, ty));
            // One name, several descriptors: the lowest address, the same in every run.
            if addr < entry.0 {
                *entry = (addr, ty);
            }
        }
        Layout {
            types,
            limits,
            go,
            runtime,
            process: Process::new(),
            empty_first: 0,
            load_bias: 0,
        }
    }

    /// Lays `g` out as a value of `ty`: its own bytes (the image that registers or a frame
    /// hold), and the value decoding it with `depth` pointers left to follow must give.
    pub fn place(&mut self, ty: TypeId, g: &G, depth: u32) -> (Vec<u8>, Value) {
        let t = self.types.get(ty);
        let size = t.size as usize;
        let mut image = vec![0u8; size];
        let value = match (&t.kind, g) {
            (TypeKind::Bool, G::Bool(b)) => {
                image[0] = u8::from(*b);
                Value::Bool(*b)
            }
            (TypeKind::Int { signed: true }, G::Int(i)) => {
                put(&mut image, 0, *i as u64, size);
                Value::Int(*i)
            }
            (TypeKind::Int { signed: false }, G::Uint(u)) => {
                put(&mut image, 0, *u, size);
                Value::Uint(*u)
            }
            (TypeKind::Float, G::Float(f)) => {
                self.float(&mut image, 0, *f, size);
                Value::Float(if size == 4 { f64::from(*f as f32) } else { *f })
            }
            (TypeKind::Complex, G::Complex(re, im)) => {
                self.float(&mut image, 0, *re, size / 2);
                self.float(&mut image, size / 2, *im, size / 2);
                let narrow = |x: f64| if size == 8 { f64::from(x as f32) } else { x };
                Value::Complex(narrow(*re), narrow(*im))
            }
            (TypeKind::String, G::Str(s)) => {
                let ptr = if s.is_empty() {
                    0
                } else {
                    self.process.alloc(s.as_bytes())
                };
                put(&mut image, 0, ptr, 8);
                put(&mut image, 8, s.len() as u64, 8);
                let kept = s.len().min(self.limits.string_max as usize);
                Value::String(Bytes {
                    bytes: s.as_bytes()[..kept].to_vec(),
                    missing: (s.len() - kept) as u64,
                    error: None,
                })
            }
            (TypeKind::String, G::StrAt(at, len)) => {
                put(&mut image, 0, *at, 8);
                put(&mut image, 8, *len, 8);
                Value::String(Bytes {
                    bytes: Vec::new(),
                    missing: *len,
                    error: Some(Missing::Unreadable),
                })
            }
            (TypeKind::Slice { elem }, G::Slice(elems, cap)) => {
                self.slice(ty, *elem, elems, *cap, &mut image, depth)
            }
            (TypeKind::Array { elem, .. }, G::Array(elems)) => {
                let stride = self.types.get(*elem).size as usize;
                let mut values = Vec::new();
                for (i, e) in elems.iter().enumerate() {
                    let (bytes, v) = self.place(*elem, e, depth);
                    image[i * stride..i * stride + bytes.len()].copy_from_slice(&bytes);
                    values.push(v);
                }
                Value::Array {
                    type_name: t.name.clone(),
                    elems: values,
                }
            }
            (TypeKind::Struct { fields }, G::Struct(values)) => {
                assert_eq!(fields.len(), values.len(), "fields of {}", t.name);
                let mut out = Vec::new();
                for (f, g) in fields.iter().zip(values) {
                    let (bytes, v) = self.place(f.ty, g, depth);
                    let at = f.offset as usize;
                    image[at..at + bytes.len()].copy_from_slice(&bytes);
                    out.push((f.name.clone(), v));
                }
                Value::Struct {
                    type_name: t.name.clone(),
                    fields: out,
                }
            }
            (TypeKind::Pointer { elem }, G::Ptr(target)) => {
                let target = if depth == 0 {
                    // Laid out all the same: the decoder must stop at the pointer.
                    let (bytes, _) = self.place(*elem, target, 0);
                    put(&mut image, 0, self.process.alloc(&bytes), 8);
                    Err(Missing::Depth)
                } else {
                    let (bytes, v) = self.place(*elem, target, depth - 1);
                    put(&mut image, 0, self.process.alloc(&bytes), 8);
                    Ok(Box::new(v))
                };
                Value::Pointer {
                    type_name: t.name.clone(),
                    addr: u64::from_le_bytes(image[..8].try_into().unwrap()),
                    target: Some(target),
                }
            }
            (TypeKind::Pointer { .. }, G::BadPtr(at)) => {
                put(&mut image, 0, *at, 8);
                Value::Pointer {
                    type_name: t.name.clone(),
                    addr: *at,
                    target: Some(Err(if depth == 0 {
                        Missing::Depth
                    } else {
                        Missing::Unreadable
                    })),
                }
            }
            (TypeKind::Pointer { .. }, G::Zero) => Value::Pointer {
                type_name: t.name.clone(),
                addr: 0,
                target: None,
            },
            (TypeKind::Slice { .. }, G::Zero) => Value::Slice {
                type_name: t.name.clone(),
                ptr: 0,
                len: 0,
                cap: 0,
                elems: Ok(Vec::new()),
            },
            (TypeKind::Interface { .. }, G::Zero) => Value::Interface { dynamic: None },
            (TypeKind::Interface { empty }, G::Iface(name, g)) => {
                self.interface(*empty, name, g, &mut image, depth)
            }
            (TypeKind::Interface { empty }, G::IfaceAt(type_addr)) => {
                let word = if *empty {
                    *type_addr
                } else {
                    self.itab(*type_addr)
                };
                put(&mut image, 0, word, 8);
                put(&mut image, 8, HEAP_BASE, 8);
                Value::Interface {
                    dynamic: Some((
                        format!("<type at {type_addr:#x}>"),
                        Err(Missing::UnknownType),
                    )),
                }
            }
            (TypeKind::Map { .. }, G::Zero) => Value::Map {
                type_name: t.name.clone(),
                addr: 0,
                len: Ok(0),
                entries: Vec::new(),
                entries_missing: None,
            },
            (TypeKind::Map { key, value, .. }, G::Map(entries)) => {
                let (key, value) = (*key, *value);
                let (addr, shown) = match map_layout(self.types, ty, &self.go) {
                    MapLayout::Classic => self.classic_map(key, value, entries, depth),
                    MapLayout::Swiss(layout) => self.swiss_map(&layout, key, value, entries, depth),
                    MapLayout::Unknown => panic!("{}: no map layout", t.name),
                };
                put(&mut image, 0, addr, 8);
                let shown: Vec<_> = shown.into_iter().take(self.limits.elems as usize).collect();
                let len = entries.len() as u64;
                // Fewer entries than it could show: the map says its entries were not read
                // (a classic map only when it shows none).
                let wanted = len.min(u64::from(self.limits.elems));
                let unread = if self.go.classic_maps() {
                    shown.is_empty() && len > 0
                } else {
                    (shown.len() as u64) < wanted
                };
                if depth == 0 {
                    Value::Map {
                        type_name: t.name.clone(),
                        addr,
                        len: Err(Missing::Depth),
                        entries: Vec::new(),
                        entries_missing: None,
                    }
                } else {
                    Value::Map {
                        type_name: t.name.clone(),
                        addr,
                        len: Ok(len),
                        entries: shown,
                        entries_missing: unread.then_some(Missing::Budget),
                    }
                }
            }
            (TypeKind::Chan { .. } | TypeKind::Func | TypeKind::UnsafePointer, G::Addr(a)) => {
                put(&mut image, 0, *a, 8);
                Value::Address(*a)
            }
            (TypeKind::Chan { .. } | TypeKind::Func | TypeKind::UnsafePointer, G::Zero) => {
                Value::Address(0)
            }
            (kind, g) => panic!("cannot lay out {g:?} as {} ({kind:?})", t.name),
        };
        (image, value)
    }

    fn float(&self, image: &mut [u8], at: usize, f: f64, size: usize) {
        match size {
            4 => put(image, at, u64::from((f as f32).to_bits()), 4),
            _ => put(image, at, f.to_bits(), 8),
        }
    }

    fn slice(
        &mut self,
        ty: TypeId,
        elem: TypeId,
        elems: &[G],
        cap: u64,
        image: &mut [u8],
        depth: u32,
    ) -> Value {
        let stride = self.types.get(elem).size as usize;
        let mut backing = vec![0u8; stride * (cap as usize).max(elems.len())];
        let mut values = Vec::new();
        for (i, e) in elems.iter().enumerate() {
            let (bytes, v) = self.place(elem, e, depth.saturating_sub(1));
            backing[i * stride..i * stride + bytes.len()].copy_from_slice(&bytes);
            values.push(v);
        }
        let ptr = self.process.alloc(&backing);
        put(image, 0, ptr, 8);
        put(image, 8, elems.len() as u64, 8);
        put(image, 16, cap, 8);
        let bytes = matches!(self.types.get(elem).kind, TypeKind::Int { .. }) && stride == 1;
        let shown = if bytes {
            self.limits.string_max as usize
        } else {
            (self.limits.elems as usize).min(8192 / stride.max(1))
        };
        values.truncate(shown);
        Value::Slice {
            type_name: self.types.get(ty).name.clone(),
            ptr,
            len: elems.len() as u64,
            cap,
            elems: Ok(values),
        }
    }

    fn itab(&mut self, type_addr: u64) -> u64 {
        // runtime.itab: inter, _type, hash, fun[1].
        let mut itab = [0u8; 32];
        put(&mut itab, 8, type_addr, 8);
        self.process.alloc(&itab)
    }

    fn interface(&mut self, empty: bool, name: &str, g: &G, image: &mut [u8], depth: u32) -> Value {
        let (type_addr, ty) = *self.runtime.get(name).unwrap_or_else(|| {
            let mut like: Vec<&String> = self
                .runtime
                .keys()
                .filter(|n| n.contains(name.trim_start_matches('*')))
                .collect();
            like.sort();
            panic!("no runtime type {name} in the binary; similar: {like:?}")
        });
        // The process holds runtime addresses: link-time ones moved by its load bias.
        let runtime_addr = type_addr + self.load_bias;
        let word = if empty {
            runtime_addr
        } else {
            self.itab(runtime_addr)
        };
        let inner = depth.saturating_sub(1);
        let (bytes, v) = self.place(ty, g, inner);
        let data = if is_pointer_shaped(self.types, ty) {
            u64::from_le_bytes(bytes[..8].try_into().unwrap())
        } else {
            self.process.alloc(&bytes)
        };
        put(image, 0, word, 8);
        put(image, 8, data, 8);
        let value = if depth == 0 {
            Err(Missing::Depth)
        } else {
            Ok(Box::new(v))
        };
        Value::Interface {
            dynamic: Some((self.types.get(ty).name.clone(), value)),
        }
    }

    /// Registers and stack for one site's values: each value's image goes to the registers
    /// its ABI pieces name (narrow ones with garbage above them) or to its stack slot.
    /// Returns the registers and what each value must decode as.
    pub fn frame(
        &mut self,
        values: &[gotrace_plan::PlannedValue],
        gs: &[G],
    ) -> ([u64; gotrace_plan::INT_REGS], Vec<Value>) {
        use gotrace_binary::abi::{AbiReg, Location};
        let values: Vec<_> = values.iter().filter(|v| !v.name.starts_with('.')).collect();
        assert_eq!(values.len(), gs.len(), "values of the frame");
        let mut regs = [REG_GARBAGE; gotrace_plan::INT_REGS];
        let mut expected = Vec::new();
        for (v, g) in values.into_iter().zip(gs) {
            let (image, mut value) = self.place(v.ty, g, self.limits.depth);
            match &v.location {
                Location::Registers(pieces) => {
                    let mut floats = Vec::new();
                    for p in pieces {
                        let at = p.value_offset as usize;
                        match p.reg {
                            AbiReg::Int(r) => {
                                let mut word = [0u8; 8];
                                word[..p.size as usize]
                                    .copy_from_slice(&image[at..at + p.size as usize]);
                                let keep = if p.size == 8 {
                                    u64::MAX
                                } else {
                                    (1 << (8 * p.size)) - 1
                                };
                                regs[r as usize] = (REG_GARBAGE & !keep) | u64::from_le_bytes(word);
                            }
                            AbiReg::Float(_) => floats.push(at..at + p.size as usize),
                        }
                    }
                    mask_floats(self.types, v.ty, 0, &floats, &mut value);
                }
                Location::Stack { sp_offset } => self.process.write_stack(SP + sp_offset, &image),
                Location::Empty => {}
            }
            expected.push(value);
        }
        (regs, expected)
    }
}

/// Parts of a value passed in float registers, which uprobes do not see: not shown.
fn mask_floats(
    types: &TypeTable,
    ty: TypeId,
    at: usize,
    floats: &[std::ops::Range<usize>],
    value: &mut Value,
) {
    let t = types.get(ty);
    let range = at..at + t.size as usize;
    if !floats
        .iter()
        .any(|f| f.start < range.end && range.start < f.end)
    {
        return;
    }
    match (&t.kind, value) {
        (TypeKind::Struct { fields }, Value::Struct { fields: values, .. }) => {
            for (f, (_, v)) in fields.iter().zip(values.iter_mut()) {
                mask_floats(types, f.ty, at + f.offset as usize, floats, v);
            }
        }
        (TypeKind::Array { elem, .. }, Value::Array { elems, .. }) => {
            let stride = types.get(*elem).size as usize;
            for (i, v) in elems.iter_mut().enumerate() {
                mask_floats(types, *elem, at + i * stride, floats, v);
            }
        }
        (_, v) => *v = Value::Unavailable(Missing::FloatRegister),
    }
}
