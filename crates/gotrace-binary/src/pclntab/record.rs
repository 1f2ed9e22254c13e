//! A function's `_func` record in a Go 1.18+ table (`runtime/runtime2.go`), and the pc-value
//! tables it points at: what the inline index, the argument metadata and the symbolizer read.
//!
//! | offset | field (u32 unless said)                                   |
//! |--------|-----------------------------------------------------------|
//! | 0      | entry offset                                              |
//! | 4      | nameOff                                                   |
//! | 8      | args                                                      |
//! | 16     | pcsp                                                      |
//! | 20     | pcfile                                                    |
//! | 24     | pcln                                                      |
//! | 28     | npcdata                                                   |
//! | 32     | cuOffset                                                  |
//! | fixed-1| nfuncdata (u8); fixed is 40 (Go 1.18–1.19) or 44 (1.20+)   |
//!
//! then `npcdata` u32 offsets into `pctab` and `nfuncdata` u32 offsets from `gofunc`.

use super::{malformed, RawTable, Reader};
use crate::BinaryError;

/// One function's record.
pub(crate) struct FuncRecord<'a> {
    r: Reader<'a>,
    /// Where the record starts in the table.
    pub at: u64,
    fixed: u64,
}

impl<'a> FuncRecord<'a> {
    /// The record of the table's `i`-th function; `None` for tables older than Go 1.18.
    pub(crate) fn nth(table: &RawTable<'a>, i: u64) -> Result<Option<FuncRecord<'a>>, BinaryError> {
        let fixed = match table.magic {
            0xFFFF_FFF0 => 40,
            0xFFFF_FFF1 => 44,
            _ => return Ok(None),
        };
        let r = Reader { data: table.data };
        let at = u64::from(r.u32(table.functab + (2 * i + 1) * 4)?) + table.functab;
        Ok(Some(FuncRecord { r, at, fixed }))
    }

    fn field(&self, off: u64) -> Result<u64, BinaryError> {
        self.r.u32(self.at + off).map(u64::from)
    }

    pub(crate) fn name_off(&self) -> Result<u64, BinaryError> {
        self.field(4)
    }

    /// Offsets in `pctab` of the stack-pointer, file and line tables (0: none).
    pub(crate) fn pcsp(&self) -> Result<u64, BinaryError> {
        self.field(16)
    }

    pub(crate) fn pcfile(&self) -> Result<u64, BinaryError> {
        self.field(20)
    }

    pub(crate) fn pcln(&self) -> Result<u64, BinaryError> {
        self.field(24)
    }

    /// The function's `funcID` (which special runtime function, or a wrapper), just before
    /// `flag` and `nfuncdata`.
    pub(crate) fn func_id(&self) -> Result<u8, BinaryError> {
        self.r.u8(self.at + self.fixed - 4)
    }

    /// Index of the function's compilation unit in `cutab`: file numbers count from it.
    pub(crate) fn cu_offset(&self) -> Result<u64, BinaryError> {
        self.field(32)
    }

    /// Offset in `pctab` of pc-value table `k` (`PCDATA_*`); `None` when absent.
    pub(crate) fn pcdata(&self, k: u64) -> Result<Option<u64>, BinaryError> {
        if self.field(28)? <= k {
            return Ok(None);
        }
        let off = self.field(self.fixed + 4 * k)?;
        Ok((off != 0).then_some(off))
    }

    /// Offset from `gofunc` of funcdata `k` (`FUNCDATA_*`); `None` when absent.
    pub(crate) fn funcdata(&self, k: u64) -> Result<Option<u64>, BinaryError> {
        let nfuncdata = u64::from(self.r.u8(self.at + self.fixed - 1)?);
        if nfuncdata <= k {
            return Ok(None);
        }
        let npcdata = self.field(28)?;
        let off = self.r.u32(self.at + self.fixed + 4 * npcdata + 4 * k)?;
        Ok((off != u32::MAX).then_some(u64::from(off)))
    }
}

/// The runs of a pc-value table at `off` (runtime `pcvalue`/`step`): (start, end, value), the
/// value starting at -1 and changed by a zig-zag delta before each run.
pub(crate) fn pc_values(
    r: &Reader<'_>,
    off: u64,
    entry: u64,
    quantum: u8,
) -> Result<Vec<(u64, u64, i64)>, BinaryError> {
    let mut out = Vec::new();
    walk_pc_values(r, off, entry, quantum, |run| {
        out.push(run);
        false
    })?;
    Ok(out)
}

/// The value a pc-value table at `off` gives `pc`; `None` when the table does not cover it.
pub(crate) fn pc_value_at(
    r: &Reader<'_>,
    off: u64,
    entry: u64,
    quantum: u8,
    pc: u64,
) -> Result<Option<i64>, BinaryError> {
    let mut found = None;
    walk_pc_values(r, off, entry, quantum, |(lo, hi, v)| {
        if lo <= pc && pc < hi {
            found = Some(v);
        }
        found.is_some() || lo > pc
    })?;
    Ok(found)
}

/// Runs `on_run` on each run of the table until it returns true or the table ends.
fn walk_pc_values(
    r: &Reader<'_>,
    mut off: u64,
    entry: u64,
    quantum: u8,
    mut on_run: impl FnMut((u64, u64, i64)) -> bool,
) -> Result<(), BinaryError> {
    let start = off;
    let mut pc = entry;
    let mut value: i64 = -1;
    // Each step reads at least two bytes: this bounds a table that never ends.
    for step in 0..=r.data.len() {
        let (delta, n) = r.uvarint(off)?;
        off += n;
        if delta == 0 && step > 0 {
            return Ok(());
        }
        value += i64::from((delta >> 1) as i32 ^ -((delta & 1) as i32));
        let (pc_delta, n) = r.uvarint(off)?;
        off += n;
        let next = pc + u64::from(pc_delta) * u64::from(quantum);
        if on_run((pc, next, value)) {
            return Ok(());
        }
        pc = next;
    }
    Err(malformed(start, "pc-value table does not end"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc_values_follow_the_runtime_encoding() {
        // +1 (zig-zag 2) for 3 bytes, -1 (zig-zag 1) for 2 bytes, +2 (4) for 1 byte, end.
        let data = [2u8, 3, 1, 2, 4, 1, 0];
        let r = Reader { data: &data };
        let runs = pc_values(&r, 0, 0x100, 1).unwrap();
        assert_eq!(
            runs,
            [(0x100, 0x103, 0), (0x103, 0x105, -1), (0x105, 0x106, 1)]
        );
        let at = |pc| pc_value_at(&r, 0, 0x100, 1, pc).unwrap();
        assert_eq!(at(0x100), Some(0));
        assert_eq!(at(0x104), Some(-1));
        assert_eq!(at(0x105), Some(1));
        assert_eq!(at(0x106), None);
        assert_eq!(at(0xff), None);
    }

    #[test]
    fn unterminated_pc_values_are_malformed() {
        let data = [2u8, 3, 2];
        let r = Reader { data: &data };
        assert!(pc_values(&r, 0, 0, 1).is_err());
        assert!(pc_value_at(&r, 0, 0, 1, 0x10).is_err());
    }
}
