//! The runtime's own type descriptors (`internal/abi/type.go`; `runtime/type.go` before Go
//! 1.21), read without DWARF or symbols: a stripped binary keeps them, because interfaces,
//! reflection and the garbage collector need them. A type used through an interface carries an
//! "uncommon" section listing its methods, each with its func type (parameters and results)
//! and the code implementing it, so those methods get full types even stripped.
//!
//! Where the descriptors are comes from the runtime's module data (`runtime/symtab.go`), whose
//! words move between releases (amd64, 8-byte words):
//!
//! | Go        | types | etypes | textsectmap | typelinks | itablinks                    |
//! |-----------|-------|--------|-------------|-----------|------------------------------|
//! | 1.19      | 35    | 36     | 39          | 42        | 45                           |
//! | 1.20–1.25 | 37    | 38     | 41          | 44        | 47                           |
//! | 1.26      | 37    | 38     | 42          | 45        | 48 (`epclntab` inserted, 41) |
//! | 1.27      | 37    | 39     | 45          | —         | —                            |
//!
//! Go 1.27 dropped both link tables: its descriptors lie one after another in
//! `[types+8, types+typedesclen)` (word 38) and its itabs in `itaboffset`/`itabsize` (40, 41).
//! Every type reachable from those roots (elements, fields, parameters, methods' func types,
//! `*T` of each `T`) is read. Offsets in descriptors count from `types` (names, types) or from
//! the text start (code; per text section when there are several).
//!
//! Strict: a type whose descriptor, or any type it is made of, cannot be read is left out, and
//! so is every method whose signature needs it — never a partial type.

mod build;
mod descriptor;
mod section;

pub(crate) use section::{section, TypeSection};

/// What tells one type descriptor from another across two links of one program: its size,
/// hash (of the type's full description), `tflag`, kind and name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    size: u64,
    hash: u32,
    tflag: u8,
    kind: u8,
    name: String,
}

/// The identity of the descriptor at `at`.
pub(crate) fn identity(
    elf: &ElfImage,
    words: &Words<'_>,
    section: &TypeSection,
    at: u64,
) -> Result<Identity, String> {
    let reader = Reader {
        elf,
        words,
        section,
    };
    reader.in_types(at)?;
    let name = match reader.offset(reader.u32(at + 40)?)? {
        Some(p) => reader.name(p)?.text,
        None => return Err(format!("the type at {at:#x} has no name string")),
    };
    Ok(Identity {
        size: reader.word(at)?,
        hash: reader.u32(at + 16)?,
        tflag: reader.u8(at + 20)?,
        kind: reader.u8(at + 23)?,
        name,
    })
}

use crate::elf::ElfImage;
use crate::moduledata::Words;
use crate::types::{Signature, TypeId, TypeTable, Variable};
use crate::{Function, VirtAddr};
use build::Builder;
use descriptor::{Raw, RawMethod, Reader, Shape};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A method whose signature the runtime types give in full.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RuntimeSignature {
    /// The function at the method's code, as `.gopclntab` names it (`main.(*Counter).Add`).
    pub function: String,
    /// The method's name (`Add`).
    pub method: String,
    /// The receiver's type: `*T` for a method of `*T` and for the wrapper an interface call
    /// of a value method goes through, else `T`. Also the first parameter.
    pub receiver: TypeId,
    /// The receiver is named `recv`, the other parameters `arg0`, `arg1`…, the results `~r0`,
    /// `~r1`… (Go's own name for an unnamed result): runtime types keep no parameter names.
    pub signature: Signature,
}

/// A method listed in a method table whose signature is not given, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NotCovered {
    /// The receiver type's name, as far as it could be read.
    pub receiver: String,
    pub method: String,
    /// The function at the method's code, when that was found.
    pub function: Option<String>,
    pub reason: String,
}

/// What the runtime type information gives: the types (in gotrace's model), the signature of
/// each method by the entry of its code, and the methods left out.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RuntimeMethods {
    pub types: TypeTable,
    pub signatures: BTreeMap<VirtAddr, RuntimeSignature>,
    pub not_covered: Vec<NotCovered>,
    /// Descriptors read (reachable from the module's roots).
    pub descriptors: usize,
    /// Each descriptor's Go name (`*errors.errorString`), by its link-time address: how an
    /// interface's dynamic type, seen as the address of its descriptor, is named.
    #[serde(skip)]
    pub type_names: HashMap<u64, String>,
    /// Each readable descriptor's type in `types`, by its link-time address: how an
    /// interface's dynamic value is decoded without DWARF.
    #[serde(skip)]
    pub type_ids: HashMap<u64, TypeId>,
}

/// Reads every descriptor reachable from the module's roots and gives each method table
/// entry with code its signature.
pub(crate) fn read(
    elf: &ElfImage,
    words: &Words<'_>,
    section: &TypeSection,
    functions: &[Function],
) -> Result<RuntimeMethods, String> {
    let reader = Reader {
        elf,
        words,
        section,
    };
    let raws = reachable(&reader)?;
    let bad = nameable(&raws, unreadable(&raws, HashMap::new()));
    let mut builder = Builder::new(&raws, &bad);
    let mut out = RuntimeMethods {
        descriptors: raws.len(),
        ..Default::default()
    };
    add_method_signatures(&mut builder, functions, &raws, &mut out);
    out.type_names = raws
        .iter()
        .filter(|(_, raw)| raw.is_ok())
        .filter_map(|(&at, _)| builder.name(at).ok().map(|name| (at, name)))
        .collect();
    out.type_ids = raws
        .iter()
        .filter(|(_, raw)| raw.is_ok())
        .filter_map(|(&at, _)| builder.id(at).ok().map(|id| (at, id)))
        .collect();
    out.types = builder.finish();
    Ok(out)
}

/// Every descriptor reachable from the module's roots, by address, or why it is unreadable.
fn reachable(reader: &Reader<'_>) -> Result<HashMap<u64, Result<Raw, String>>, String> {
    let mut raws: HashMap<u64, Result<Raw, String>> = HashMap::new();
    let mut queue = reader.roots()?;
    if queue.is_empty() {
        return Err("the module lists no types".into());
    }
    while let Some(at) = queue.pop() {
        if raws.contains_key(&at) {
            continue;
        }
        let raw = reader.descriptor(at);
        if let Ok(r) = &raw {
            queue.extend(r.parts());
            queue.extend(r.ptr_to_this);
            queue.extend(r.methods.iter().filter_map(|m| m.mtyp));
            if let Shape::Map(_, _, Some(group)) = r.shape {
                queue.push(group);
            }
        }
        raws.insert(at, raw);
    }
    Ok(raws)
}

/// Gives each method table entry with code its signature, in `out.signatures`, or says in
/// `out.not_covered` why not; a function two tables disagree on gets none.
fn add_method_signatures(
    builder: &mut Builder<'_>,
    functions: &[Function],
    raws: &HashMap<u64, Result<Raw, String>>,
    out: &mut RuntimeMethods,
) {
    let mut conflicts: HashSet<VirtAddr> = HashSet::new();
    let mut owners: Vec<u64> = raws.keys().copied().collect();
    owners.sort_unstable();
    for owner in owners {
        let Some(Ok(raw)) = raws.get(&owner) else {
            continue;
        };
        for m in &raw.methods {
            let mut entries = vec![];
            entries.extend(m.tfn.map(|e| (e, false)));
            // The interface-call entry differs from the direct one only for a value
            // receiver that is not pointer-shaped: the wrapper `(*T).M` then takes `*T`.
            entries.extend(m.ifn.filter(|&i| Some(i) != m.tfn).map(|e| (e, true)));
            for (entry, via_pointer) in entries {
                let found = method(builder, functions, owner, raw, m, entry, via_pointer);
                match found {
                    Ok(sig) => {
                        let at = VirtAddr(entry);
                        match out.signatures.get(&at) {
                            Some(prev) if !same(builder, prev, &sig) => {
                                conflicts.insert(at);
                            }
                            Some(_) => {}
                            None => {
                                out.signatures.insert(at, sig);
                            }
                        }
                    }
                    Err((function, reason)) => out.not_covered.push(NotCovered {
                        receiver: builder.display_name(owner),
                        method: m.name.clone(),
                        function,
                        reason,
                    }),
                }
            }
        }
    }
    for at in conflicts {
        if let Some(sig) = out.signatures.remove(&at) {
            out.not_covered.push(NotCovered {
                receiver: builder.table_name(sig.receiver),
                method: sig.method,
                function: Some(sig.function),
                reason: "method tables disagree on its signature".into(),
            });
        }
    }
}

/// Whether two tables' entries for one function agree: the same parameter and result types,
/// the receiver compared by name (one may be a `*T` made here for want of a descriptor).
fn same(b: &Builder<'_>, x: &RuntimeSignature, y: &RuntimeSignature) -> bool {
    let tys = |s: &Signature| -> Vec<TypeId> {
        s.params
            .iter()
            .skip(1)
            .chain(&s.results)
            .map(|v| v.ty)
            .collect()
    };
    x.function == y.function
        && b.table_name(x.receiver) == b.table_name(y.receiver)
        && tys(&x.signature) == tys(&y.signature)
}

/// The signature of one method table entry, or the function found and why not.
fn method(
    b: &mut Builder<'_>,
    functions: &[Function],
    owner: u64,
    raw: &Raw,
    m: &RawMethod,
    entry: u64,
    via_pointer: bool,
) -> Result<RuntimeSignature, (Option<String>, String)> {
    let i = functions.partition_point(|f| f.entry.0 <= entry);
    let f = i
        .checked_sub(1)
        .and_then(|i| functions.get(i))
        .filter(|f| f.entry.0 == entry)
        .ok_or_else(|| (None, format!("no function starts at its code {entry:#x}")))?;
    let fail = |reason: String| (Some(f.name.clone()), reason);
    let receiver_part = f
        .name
        .strip_suffix(&m.name)
        .and_then(|r| r.strip_suffix('.'))
        .ok_or_else(|| fail(format!("the function at its code is {}", f.name)))?;
    let mtyp = m
        .mtyp
        .ok_or_else(|| fail("the linker dropped its func type".into()))?;
    let Shape::Func { ins, outs, .. } = &b.raw(mtyp).map_err(fail)?.shape else {
        return Err(fail(format!(
            "its method type at {mtyp:#x} is not a func type"
        )));
    };
    let (ins, outs) = (ins.clone(), outs.clone());
    let receiver = if via_pointer {
        b.pointer_to(owner, raw).map_err(fail)?
    } else {
        b.id(owner).map_err(fail)?
    };
    // `pkg.(*T).M` takes a pointer, `pkg.T.M` a value: the name must say what the table does.
    let pointer_named = receiver_part.ends_with(')');
    let pointer_typed = via_pointer || matches!(raw.shape, Shape::Pointer(_));
    if pointer_named != pointer_typed {
        return Err(fail(format!(
            "its name disagrees with the method table on whether the receiver is a pointer ({})",
            raw.str
        )));
    }
    let mut sig = Signature::default();
    sig.params.push(Variable {
        name: "recv".into(),
        ty: receiver,
    });
    for (i, &t) in ins.iter().enumerate() {
        let ty = b.id(t).map_err(fail)?;
        sig.params.push(Variable {
            name: format!("arg{i}"),
            ty,
        });
    }
    for (i, &t) in outs.iter().enumerate() {
        let ty = b.id(t).map_err(fail)?;
        sig.results.push(Variable {
            name: format!("~r{i}"),
            ty,
        });
    }
    Ok(RuntimeSignature {
        function: f.name.clone(),
        method: m.name.clone(),
        receiver,
        signature: sig,
    })
}

/// `bad` and the types that cannot be named (only in a corrupted binary: an unnamed type made
/// of itself), with everything made of them: after this, every type outside it translates.
fn nameable(
    raws: &HashMap<u64, Result<Raw, String>>,
    mut bad: HashMap<u64, String>,
) -> HashMap<u64, String> {
    loop {
        let mut builder = Builder::new(raws, &bad);
        let mut keys: Vec<u64> = raws
            .keys()
            .copied()
            .filter(|a| !bad.contains_key(a))
            .collect();
        keys.sort_unstable();
        let failed: Vec<(u64, String)> = keys
            .into_iter()
            .filter_map(|a| builder.name(a).err().map(|e| (a, e)))
            .collect();
        if failed.is_empty() {
            return bad;
        }
        bad.extend(failed);
        bad = unreadable(raws, bad);
    }
}

/// The descriptors that cannot be given a full type: unreadable, or made of one that is.
fn unreadable(
    raws: &HashMap<u64, Result<Raw, String>>,
    mut bad: HashMap<u64, String>,
) -> HashMap<u64, String> {
    bad.extend(
        raws.iter()
            .filter_map(|(&at, r)| r.as_ref().err().map(|e| (at, e.clone()))),
    );
    loop {
        let mut added = Vec::new();
        for (&at, raw) in raws {
            let Ok(raw) = raw else { continue };
            if bad.contains_key(&at) {
                continue;
            }
            let missing = raw
                .parts()
                .into_iter()
                .find(|p| !raws.contains_key(p) || bad.contains_key(p));
            if let Some(p) = missing {
                let why = match bad.get(&p) {
                    Some(e) => format!("{} is made of a type that is not readable: {e}", raw.str),
                    None => format!("{} is made of a type at {p:#x} that was not read", raw.str),
                };
                added.push((at, why));
            }
        }
        if added.is_empty() {
            return bad;
        }
        bad.extend(added);
    }
}
