//! The function table's records: each function's entry, name, argument size and traits.

use super::{malformed, FuncTraits, Reader, Version};
use crate::{BinaryError, Function, VirtAddr};

/// Offset of the header's text-start word (Go 1.18+): magic, padding, quantum, pointer size,
/// nfunc, nfiles.
pub(super) const TEXT_START_WORD: u64 = 8 + 2 * 8;

/// Offsets (from the start of the table) of the parts `decode_functions` reads.
pub(super) struct Layout {
    pub(super) nfunc: u64,
    /// Added to the 32-bit entry offsets of Go 1.18+; unused before, where entries are absolute.
    pub(super) text_start: u64,
    /// Start and end of `funcnametab`, which name offsets are relative to; before 1.16 they
    /// are relative to the table's start.
    pub(super) names: Option<(u64, u64)>,
    /// Base of the pc-value tables (`pcsp` offsets are relative to it).
    pub(super) pctab: u64,
    pub(super) functab: u64,
    /// Base that a function-table entry's record offset is relative to.
    pub(super) funcdata: u64,
}

/// Each function's argument frame size, by entry address.
pub(super) type ArgSizes = Vec<(VirtAddr, u32)>;

pub(super) fn decode_functions(
    r: &Reader<'_>,
    version: Version,
    quantum: u8,
    ptr_size: u64,
    l: &Layout,
) -> Result<(Vec<Function>, ArgSizes), BinaryError> {
    let field_size = if version >= Version::Go118 {
        4
    } else {
        ptr_size
    };
    // Checked before anything is allocated: nfunc comes from the file and may be absurd.
    check_table_fits(r, l, field_size)?;
    // In bounds for every i <= 2 * nfunc: the whole table was checked above.
    let raw = |i: u64| r.word(l.functab + i * field_size, field_size);
    // Entries are absolute before 1.18, offsets from the text start since.
    let address = |v: u64, off: u64| -> Result<u64, BinaryError> {
        if version >= Version::Go118 {
            l.text_start
                .checked_add(v)
                .ok_or_else(|| malformed(off, "entry address overflows"))
        } else {
            Ok(v)
        }
    };

    // Real tables walk each pc-value table once; this bounds the work a crafted one can cause.
    let mut pc_steps_left = r.data.len() as u64;
    let mut functions = Vec::with_capacity(usize::try_from(l.nfunc).unwrap_or(0));
    let mut arg_sizes = Vec::with_capacity(functions.capacity());
    let mut next_entry = if l.nfunc > 0 {
        address(raw(0)?, l.functab)?
    } else {
        0
    };
    for i in 0..l.nfunc {
        let entry = next_entry;
        let next_off = l.functab + (2 * i + 2) * field_size;
        next_entry = address(raw(2 * i + 2)?, next_off)?;
        if next_entry < entry {
            return Err(malformed(
                next_off,
                format!("function table not sorted: {next_entry:#x} follows {entry:#x}"),
            ));
        }
        let record = l
            .funcdata
            .checked_add(raw(2 * i + 1)?)
            .ok_or_else(|| malformed(next_off, "function record offset overflows"))?;
        // The record starts with its own entry, in the same form as the table's.
        let own_entry = address(r.word(record, field_size)?, record)?;
        if own_entry != entry {
            return Err(malformed(
                record,
                format!("function record says entry {own_entry:#x}, the table says {entry:#x}"),
            ));
        }
        let (name, args, code_len) =
            record_fields(r, l, record, field_size, quantum, &mut pc_steps_left)?;
        // The next entry includes alignment padding; the pc-value table covers the code only.
        // An entry without one describes no code: a linker marker (`go:textfipsstart`, 1.24+),
        // whose bytes up to the next entry are padding.
        let end = match code_len {
            Some(len) => entry.saturating_add(len).min(next_entry),
            None => entry,
        };
        functions.push(Function {
            name,
            entry: VirtAddr(entry),
            end: VirtAddr(end),
        });
        arg_sizes.push((VirtAddr(entry), args));
    }
    Ok((functions, arg_sizes))
}

/// Fails unless the function table's `2 * nfunc + 1` words lie within the data.
fn check_table_fits(r: &Reader<'_>, l: &Layout, field_size: u64) -> Result<(), BinaryError> {
    let table_len = l
        .nfunc
        .checked_mul(2)
        .and_then(|n| n.checked_add(1))
        .and_then(|n| n.checked_mul(field_size))
        .ok_or_else(|| malformed(8, format!("{} functions cannot fit", l.nfunc)))?;
    r.bytes(l.functab, table_len, "function table")?;
    Ok(())
}

/// The name, argument frame size and code length (`None`: no pc-value table) that the
/// function record at `record` gives, from the u32 fields following its entry: nameOff,
/// args, deferreturn, pcsp.
fn record_fields(
    r: &Reader<'_>,
    l: &Layout,
    record: u64,
    field_size: u64,
    quantum: u8,
    pc_steps_left: &mut u64,
) -> Result<(String, u32, Option<u64>), BinaryError> {
    let name_off = u64::from(r.u32(record.saturating_add(field_size))?);
    let name_base = l.names.map_or(0, |(start, _)| start);
    let name = r.c_string(name_base.saturating_add(name_off), l.names)?;
    let args = r.u32(record.saturating_add(field_size + 4))?;
    let pcsp = u64::from(r.u32(record.saturating_add(field_size + 12))?);
    let code_len = if pcsp == 0 {
        None
    } else {
        pc_table_extent(r, l.pctab.saturating_add(pcsp), quantum, pc_steps_left)?
    };
    Ok((name, args, code_len))
}

/// The `funcID` and `flag` bytes at `at` in each function's record; `functions` are the
/// table's, in its order.
pub(super) fn decode_traits(
    r: &Reader<'_>,
    functions: &[Function],
    ptr_size: u64,
    l: &Layout,
    version: Version,
    at: u64,
) -> Result<Vec<(VirtAddr, FuncTraits)>, BinaryError> {
    let field_size = if version >= Version::Go118 {
        4
    } else {
        ptr_size
    };
    let mut out = Vec::with_capacity(functions.len());
    for (i, function) in functions.iter().enumerate() {
        let pair = l.functab + (2 * i as u64 + 1) * field_size;
        let record = l
            .funcdata
            .checked_add(r.word(pair, field_size)?)
            .ok_or_else(|| malformed(pair, "function record offset overflows"))?;
        let bytes = r.bytes(record.saturating_add(at), 2, "funcID and flag")?;
        out.push((
            function.entry,
            FuncTraits {
                func_id: bytes[0],
                flag: bytes[1],
            },
        ));
    }
    Ok(out)
}

/// How many bytes of code a pc-value table at `off` covers: the sum of its pc deltas. The
/// encoding (runtime `step`): pairs of a zig-zag value delta and a pc delta in quanta, both
/// uvarints, ended by a zero value delta after the first pair.
pub(super) fn pc_table_extent(
    r: &Reader<'_>,
    mut off: u64,
    quantum: u8,
    steps_left: &mut u64,
) -> Result<Option<u64>, BinaryError> {
    let start = off;
    let mut pc: u64 = 0;
    let mut first = true;
    loop {
        *steps_left = steps_left
            .checked_sub(1)
            .ok_or_else(|| malformed(start, "pc-value tables are longer than the whole table"))?;
        let (value_delta, n) = r.uvarint(off)?;
        off = off.saturating_add(n);
        if value_delta == 0 && !first {
            break;
        }
        first = false;
        let (pc_delta, n) = r.uvarint(off)?;
        off = off.saturating_add(n);
        pc = pc.saturating_add(u64::from(pc_delta) * u64::from(quantum));
    }
    Ok((pc > 0).then_some(pc))
}
