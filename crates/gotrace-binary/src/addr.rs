//! Distinct newtypes for the address spaces a tracer juggles, so mixing them is a type error.

use serde::Serialize;
use std::fmt;

/// A virtual address as the ELF file states it (link-time address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VirtAddr(pub u64);

/// An offset into the ELF file: what the kernel's uprobe API takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FileOffset(pub u64);

impl VirtAddr {
    pub fn offset(self, by: u64) -> VirtAddr {
        VirtAddr(self.0 + by)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for FileOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
