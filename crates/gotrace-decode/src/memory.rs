//! The traced process's memory as the BPF program captured it at one probe site.

use gotrace_plan::{Capture, CaptureStatus};

pub struct Memory<'a> {
    captures: &'a [Capture],
    /// The process's load bias: runtime − link-time address (0 unless position-independent).
    bias: u64,
}

/// What a read finds.
pub enum Read<'a> {
    Bytes(&'a [u8]),
    /// The program tried and the address was unreadable.
    Fault,
    /// Nothing was captured there.
    Absent,
}

impl<'a> Memory<'a> {
    pub fn new(captures: &'a [Capture], bias: u64) -> Self {
        Memory { captures, bias }
    }

    /// The binary's (link-time) address of a runtime address in this process.
    pub fn link_address(&self, runtime: u64) -> u64 {
        runtime.wrapping_sub(self.bias)
    }

    /// Exactly `len` bytes at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Read<'a> {
        match self.read_prefix(addr, len as u64) {
            Read::Bytes(b) if b.len() == len => Read::Bytes(b),
            Read::Bytes(_) => Read::Absent,
            other => other,
        }
    }

    /// Up to `len` bytes at `addr`: fewer when the capture was cut to a limit. Several
    /// captures may hold `addr` (a classic map's second bucket read past a one-bucket array
    /// runs into the next object, which may be another map's buckets): the one holding the
    /// most of the range is taken, not the first, whose few bytes would leave it unread.
    pub fn read_prefix(&self, addr: u64, len: u64) -> Read<'a> {
        let mut fault = false;
        let mut best: Option<&'a [u8]> = None;
        for c in self.captures {
            if addr < c.addr {
                continue;
            }
            let skip = addr - c.addr;
            match c.status {
                CaptureStatus::Fault if skip == 0 => fault = true,
                CaptureStatus::Ok | CaptureStatus::Truncated
                    if skip < c.bytes.len() as u64 || (skip == 0 && len == 0) =>
                {
                    let end = c.bytes.len().min(skip.saturating_add(len) as usize);
                    let found = &c.bytes[skip as usize..end];
                    if found.len() as u64 == len {
                        return Read::Bytes(found);
                    }
                    if best.is_none_or(|b| found.len() > b.len()) {
                        best = Some(found);
                    }
                }
                _ => {}
            }
        }
        match best {
            Some(bytes) => Read::Bytes(bytes),
            None if fault => Read::Fault,
            None => Read::Absent,
        }
    }
}
