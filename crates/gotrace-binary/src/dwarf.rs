//! DWARF: function signatures (parameter and result names and types) and runtime struct
//! layouts.

use crate::elf::ElfImage;
use crate::types::{Signature, TypeTable};
use crate::{BinaryError, VirtAddr};

pub struct DwarfInfo {
    types: TypeTable,
}

impl DwarfInfo {
    /// `None` when the binary carries no DWARF (built with -ldflags=-w, or stripped).
    pub fn load(_elf: &ElfImage) -> Result<Option<DwarfInfo>, BinaryError> {
        Ok(None)
    }

    pub fn types(&self) -> &TypeTable {
        &self.types
    }

    /// The signature of the function whose code starts at `entry`.
    pub fn signature(&self, _entry: VirtAddr) -> Option<&Signature> {
        None
    }

    /// Byte offset of `member` in the struct type named `struct_name` (`runtime.g`, `goid`).
    pub fn member_offset(&self, _struct_name: &str, _member: &str) -> Option<u64> {
        None
    }
}
