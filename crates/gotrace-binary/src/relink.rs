//! A debug file from another link of the same compiled program: `go build -ldflags='-s -w'`
//! and a plain `go build` of the same source compile the same code but link it apart, so their
//! build IDs differ and their data moves (the build settings in `.rodata` grow by the flags),
//! while every function stays where it was.
//!
//! The unstripped build's DWARF then describes the stripped one's code, but only when that is
//! proven, never assumed from names:
//! - the function tables (`.gopclntab`) are equal byte for byte: every function's name,
//!   extent, stack-pointer, file and line tables, stack maps and inline trees;
//! - the code at `[text, etext)` is equal, instruction by instruction, except for the
//!   displacements of RIP-relative operands that point outside the code (data that moved);
//! - an interface's dynamic type is named from DWARF only where the descriptor at the
//!   corresponding place of this binary's type data has the same size, hash, kind and name.
//!
//! A change of source or of compiler flags changes the code or the tables, and is refused.

use crate::elf::ElfImage;
use crate::moduledata::Words;
use crate::rtype::{self, TypeSection};
use crate::types::TypeId;
use crate::{pclntab, Function, VirtAddr};
use iced_x86::{Decoder, DecoderOptions, Instruction};
use std::collections::HashMap;

/// What a proven relink needs later: where each file's type data is.
pub(crate) struct Relinked {
    binary_types: TypeSection,
    debug_types: TypeSection,
}

/// Proves `debug` is another link of the code in `binary` (Go `1.minor`, Swiss maps or not);
/// the error says what differs.
pub(crate) fn prove(
    binary: &ElfImage,
    debug: &ElfImage,
    minor: u32,
    swiss_maps: bool,
) -> Result<Relinked, String> {
    let located = |elf, whose: &str| -> Result<_, String> {
        pclntab::locate(elf)
            .map_err(|e| format!("{whose}'s function table is unreadable: {e}"))?
            .ok_or_else(|| format!("{whose} has no Go function table"))
    };
    let (mine, theirs) = (
        located(binary, "the binary")?,
        located(debug, "the debug file")?,
    );
    if mine.table.raw().data != theirs.table.raw().data {
        return Err("their function tables (.gopclntab) differ".into());
    }
    let (Some(m), Some(t)) = (mine.module, theirs.module) else {
        return Err("the runtime's module data was not found in both".into());
    };
    if (m.text, m.etext) != (t.text, t.etext) {
        return Err(format!(
            "their code lies at [{:#x}, {:#x}) and [{:#x}, {:#x})",
            m.text, m.etext, t.text, t.etext
        ));
    }
    same_code(binary, debug, (m.text, m.etext), &mine.table.functions())?;
    let types = |elf, at, whose: &str| {
        rtype::section(&Words::new(elf), at, m.text, minor, swiss_maps)
            .map_err(|e| format!("{whose}'s type data: {e}"))
    };
    Ok(Relinked {
        binary_types: types(binary, m.at, "the binary")?,
        debug_types: types(debug, t.at, "the debug file")?,
    })
}

/// The code of both files in `[text, etext)` is the same but for moved data references. Only
/// ranges whose bytes differ are decoded: each Go function from its entry (an instruction
/// boundary), and code between them (C code of a cgo build, padding) from where it starts.
fn same_code(
    binary: &ElfImage,
    debug: &ElfImage,
    (text, etext): (u64, u64),
    functions: &[Function],
) -> Result<(), String> {
    let (mine, theirs) = (
        code_bytes(binary, (text, etext), "the binary")?,
        code_bytes(debug, (text, etext), "the debug file")?,
    );
    if mine == theirs {
        return Ok(());
    }
    let mut ranges: Vec<(u64, u64, &str)> = Vec::new();
    let mut at = text;
    for f in functions {
        let (lo, hi) = (f.entry.0.max(at), f.end.0.min(etext));
        if lo >= hi {
            continue;
        }
        if at < lo {
            ranges.push((at, lo, "code outside Go functions"));
        }
        ranges.push((lo, hi, &f.name));
        at = hi;
    }
    if at < etext {
        ranges.push((at, etext, "code outside Go functions"));
    }
    for (lo, hi, name) in ranges {
        let range = (lo - text) as usize..(hi - text) as usize;
        if mine[range.clone()] != theirs[range.clone()] {
            same_instructions(
                &mine[range.clone()],
                &theirs[range],
                (lo, name),
                (text, etext),
            )?;
        }
    }
    Ok(())
}

fn code_bytes<'a>(
    elf: &'a ElfImage,
    (text, etext): (u64, u64),
    whose: &str,
) -> Result<&'a [u8], String> {
    elf.bytes_at(VirtAddr(text), etext - text)
        .map_err(|e| format!("{whose}'s code is not in the file: {e}"))
}

/// One function's instructions: the same instruction at every step, and where bytes differ,
/// only in the displacement of a RIP-relative operand that points outside the code in both.
fn same_instructions(
    mine: &[u8],
    theirs: &[u8],
    (entry, name): (u64, &str),
    (text, etext): (u64, u64),
) -> Result<(), String> {
    let mut a = Decoder::with_ip(64, mine, entry, DecoderOptions::NONE);
    let mut b = Decoder::with_ip(64, theirs, entry, DecoderOptions::NONE);
    let (mut x, mut y) = (Instruction::default(), Instruction::default());
    let differs = |at: u64| Err(format!("their code differs in {name} at {at:#x}"));
    while a.can_decode() {
        a.decode_out(&mut x);
        b.decode_out(&mut y);
        let start = (x.ip() - entry) as usize;
        let end = start + x.len();
        if x.len() != y.len() || x.code() != y.code() {
            return differs(x.ip());
        }
        let Some(diff) = (start..end).find(|&i| mine[i] != theirs[i]) else {
            continue;
        };
        let in_code = |target: u64| (text..etext).contains(&target);
        let offsets = a.get_constant_offsets(&x);
        let displacement = start + offsets.displacement_offset()
            ..start + offsets.displacement_offset() + offsets.displacement_size();
        let only_displacement = offsets.has_displacement()
            && (diff..end).all(|i| mine[i] == theirs[i] || displacement.contains(&i));
        if !x.is_ip_rel_memory_operand()
            || !only_displacement
            || in_code(x.ip_rel_memory_address())
            || in_code(y.ip_rel_memory_address())
        {
            return differs(x.ip());
        }
    }
    Ok(())
}

impl Relinked {
    /// DW_AT_go_runtime_type values of the debug file (offsets from its `types`, or before Go
    /// 1.20 absolute addresses) → this binary's descriptor addresses, keeping each only where
    /// the descriptor at the same offset of this binary's type data is the same type.
    pub(crate) fn runtime_types(
        &self,
        binary: &ElfImage,
        debug: &ElfImage,
        values: &[(u64, TypeId)],
    ) -> HashMap<u64, TypeId> {
        let (mine, theirs) = (Words::new(binary), Words::new(debug));
        let (base_mine, base_theirs) = (self.binary_types.types(), self.debug_types.types());
        values
            .iter()
            .filter_map(|&(value, ty)| {
                let at_theirs = crate::dwarf::runtime_type_address(value, base_theirs)?;
                let at_mine = base_mine.checked_add(at_theirs.checked_sub(base_theirs)?)?;
                let same = rtype::identity(binary, &mine, &self.binary_types, at_mine).ok()?
                    == rtype::identity(debug, &theirs, &self.debug_types, at_theirs).ok()?;
                same.then_some((at_mine, ty))
            })
            .collect()
    }
}
