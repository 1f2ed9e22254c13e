//! Bounds-checked reads of the table's bytes, and the names it holds.

use super::SECTION;
use crate::BinaryError;

/// A name as the ELF symbol table spells it: the linker rewrites `·` to `.` there (for
/// ASCII-only tools), so a stripped binary must too for its names to match an unstripped one.
pub(crate) fn elf_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).replace('·', ".")
}

/// The linker's name for a generic function in Go 1.18–1.19 tables: everything inside the
/// outermost brackets becomes `...`.
pub(crate) fn abbreviate_generic(name: &str) -> String {
    match (name.find('['), name.rfind(']')) {
        (Some(i), Some(j)) if j > i => format!("{}[...]{}", &name[..i], &name[j + 1..]),
        _ => name.to_owned(),
    }
}

pub(crate) fn malformed(offset: u64, reason: impl Into<String>) -> BinaryError {
    BinaryError::Malformed {
        section: SECTION,
        offset,
        reason: reason.into(),
    }
}

/// Bounds-checked little-endian reads from the table.
pub(crate) struct Reader<'a> {
    pub data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn bytes(&self, off: u64, len: u64, what: &str) -> Result<&'a [u8], BinaryError> {
        let end = off.checked_add(len);
        end.and_then(|end| {
            self.data
                .get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)
        })
        .ok_or_else(|| {
            malformed(
                off,
                format!(
                    "{what} ({len} bytes) runs past the end of the table ({} bytes)",
                    self.data.len()
                ),
            )
        })
    }

    pub(crate) fn u8(&self, off: u64) -> Result<u8, BinaryError> {
        Ok(self.bytes(off, 1, "byte")?[0])
    }

    pub(crate) fn u32(&self, off: u64) -> Result<u32, BinaryError> {
        let b = self.bytes(off, 4, "u32")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn word(&self, off: u64, size: u64) -> Result<u64, BinaryError> {
        if size == 4 {
            return self.u32(off).map(u64::from);
        }
        let b = self.bytes(off, 8, "word")?;
        let mut w = [0; 8];
        w.copy_from_slice(b);
        Ok(u64::from_le_bytes(w))
    }

    /// A Go-style uvarint of at most 32 bits, and how many bytes it took.
    pub(crate) fn uvarint(&self, off: u64) -> Result<(u32, u64), BinaryError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.u8(off.saturating_add(i))?;
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((value, i + 1));
            }
        }
        Err(malformed(off, "varint longer than 5 bytes"))
    }

    /// The NUL-terminated string at `off`, which must lie inside `within` when given.
    pub(super) fn c_string(
        &self,
        off: u64,
        within: Option<(u64, u64)>,
    ) -> Result<String, BinaryError> {
        let (lo, hi) = within.unwrap_or((0, self.data.len() as u64));
        if off < lo || off >= hi {
            return Err(malformed(off, "function name outside the name table"));
        }
        let rest = self.bytes(off, hi - off, "function name")?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(off, "function name is not NUL-terminated"))?;
        Ok(elf_name(&rest[..len]))
    }
}
