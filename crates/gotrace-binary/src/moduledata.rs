//! `runtime.firstmoduledata`: the record the Go runtime itself uses to find its code. From Go
//! 1.26 the `.gopclntab` header no longer holds the text start its 32-bit entry offsets count
//! from; the module data's `text` word does, in every release, and a stripped binary still has
//! it (the runtime needs it). It is found without symbols as the data word that points at the
//! table's header, and trusted only when its other pointers agree with that header.
//!
//! The layout (`runtime/symtab.go`, the same in Go 1.18 through 1.27), in pointer-sized words:
//!
//! | word  | field                                                        |
//! |-------|--------------------------------------------------------------|
//! | 0     | `pcHeader *pcHeader`                                         |
//! | 1–3   | `funcnametab []byte` (pointer, len, cap)                     |
//! | 4–9   | `cutab`, `filetab`                                           |
//! | 10–12 | `pctab []byte`                                               |
//! | 13–15 | `pclntable []byte`                                           |
//! | 16–18 | `ftab []functab` (the same pointer as `pclntable`, `nfunc+1`) |
//! | 19–21 | `findfunctab`, `minpc`, `maxpc`                              |
//! | 22–23 | `text`, `etext`                                              |
//!
//! Further on, `gofunc` (the base of every function's funcdata, such as its inline tree) moves
//! as fields are added before it: word 38 in Go 1.18–1.19, 40 from 1.20 (coverage counters),
//! 43 from 1.27 (`typedesclen`, `itaboffset`, `itabsize`).

use crate::elf::ElfImage;
use crate::pclntab::HeaderWords;
use crate::VirtAddr;

const FUNCNAMETAB: u64 = 1;
const PCTAB: u64 = 10;
const PCLNTABLE: u64 = 13;
const FTAB: u64 = 16;
const FTAB_LEN: u64 = 17;
const TEXT: u64 = 22;
const ETEXT: u64 = 23;

/// The module data's view of the Go code: `[text, etext)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModuleData {
    pub text: u64,
    pub etext: u64,
    /// `go:func.*`, the base funcdata offsets count from; `None` when the word there is not
    /// an address in the image.
    pub gofunc: Option<u64>,
    /// Where the record itself is: the type section's words follow (`rtype.rs`).
    pub at: u64,
}

/// The word holding `gofunc`, by table magic; 1.27 is told from 1.20–1.26 by word 38, which
/// is `etypes` (an address above `types`, word 37) before 1.27 and `typedesclen` (a length)
/// from 1.27.
fn gofunc_word(magic: u32, word: impl Fn(u64) -> Option<u64>) -> Option<u64> {
    match magic {
        0xFFFF_FFF0 => Some(38),
        0xFFFF_FFF1 if word(38)? >= word(37)? => Some(40),
        0xFFFF_FFF1 => Some(43),
        _ => None,
    }
}

/// Pointer-sized words of the image as the loader leaves them: a PIE's pointers are the
/// addends of `R_*_RELATIVE` relocations (link-time addresses), not what the file holds.
pub(crate) struct Words<'a> {
    elf: &'a ElfImage,
    relative: Vec<(u64, u64)>,
}

impl<'a> Words<'a> {
    pub fn new(elf: &'a ElfImage) -> Words<'a> {
        Words {
            elf,
            relative: elf.relative_relocations(),
        }
    }

    /// The word at `addr` after relocation; `None` when it is not in the file.
    pub fn at(&self, addr: u64) -> Option<u64> {
        if let Ok(i) = self.relative.binary_search_by_key(&addr, |&(at, _)| at) {
            return Some(self.relative[i].1);
        }
        let bytes = self.elf.bytes_at(VirtAddr(addr), 8).ok()?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Addresses of the aligned words whose relocated value is `value`.
    fn pointing_at(&self, value: u64) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .relative
            .iter()
            .filter(|&&(_, v)| v == value)
            .map(|&(at, _)| at)
            .collect();
        for (base, bytes) in self.elf.writable_segments() {
            let skip = ((8 - base % 8) % 8) as usize;
            let Some(aligned) = bytes.get(skip..) else {
                continue;
            };
            for (i, word) in aligned.chunks_exact(8).enumerate() {
                if word == value.to_le_bytes() {
                    out.push(base + skip as u64 + 8 * i as u64);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The module data of the table whose header is at `header_at`: the one record that points at
/// the header and whose name, pc and function tables are the header's, with a sane text range.
/// `None` when there is none, or when two such records disagree on the text range.
pub(crate) fn find(words: &Words<'_>, header_at: u64, header: &HeaderWords) -> Option<ModuleData> {
    let mut found: Option<ModuleData> = None;
    for at in words.pointing_at(header_at) {
        let word = |i: u64| words.at(at + 8 * i);
        let points = |i: u64, offset: u64| word(i) == header_at.checked_add(offset);
        let consistent = points(FUNCNAMETAB, header.funcname)
            && points(PCTAB, header.pctab)
            && points(PCLNTABLE, header.pcln)
            && points(FTAB, header.pcln)
            && word(FTAB_LEN) == header.nfunc.checked_add(1);
        let (Some(text), Some(etext)) = (word(TEXT), word(ETEXT)) else {
            continue;
        };
        if !consistent || text == 0 || etext <= text {
            continue;
        }
        let gofunc = gofunc_word(header.magic, word)
            .and_then(word)
            .filter(|&g| g != 0 && words.at(g).is_some());
        let this = ModuleData {
            text,
            etext,
            gofunc,
            at,
        };
        match found {
            Some(other) if (other.text, other.etext, other.gofunc) != (text, etext, gofunc) => {
                return None
            }
            _ => found = Some(this),
        }
    }
    found
}
