//! The shape of a function's arguments without debug information: the traceback metadata Go
//! keeps to print arguments in a panic (`FUNCDATA_ArgInfo`, index 5 in Go 1.18–1.27), laid
//! onto the registers the function's stack-growth path proves (`spills.rs`).
//!
//! ArgInfo is a byte stream (`cmd/compile/internal/ssagen` `EmitArgInfo`, read by
//! `runtime/traceback.go` `printArgs`): for each scalar argument or scalar part of an aggregate
//! argument (struct, array, string, slice, interface, complex), its offset in the argument
//! frame and its size, one byte each; `0xfe`/`0xfd` open and close an aggregate, `0xfc` says
//! the rest is left out (ten parts at most, five levels of nesting), `0xfb` stands for a part
//! whose offset does not fit in a byte, `0xff` ends the stream. A register argument's offset is
//! its spill slot's; a stack argument's, its place above the return address. Shape-generic
//! code leaves its dictionary out.
//!
//! ArgInfo does not say which words are floats, so it cannot be laid onto the register ABI
//! alone: each register word's register comes from the spill that writes its slot, and a word
//! below every spill slot is on the stack (the spill area follows the stack arguments and
//! results). Assembly functions have ArgInfo only when they are ABI0, which passes everything
//! on the stack. Whatever is not proven so is unknown, with the reason.

use crate::abi::{Location, Piece};
use crate::pclntab::record::FuncRecord;
use crate::pclntab::{self, RawTable};
use crate::spills::{Spill, StackGrowth};
use crate::{BinaryError, VirtAddr};
use serde::Serialize;
use std::collections::HashMap;

const FUNCDATA_ARG_INFO: u64 = 5;
const END_SEQ: u8 = 0xff;
const START_AGG: u8 = 0xfe;
const END_AGG: u8 = 0xfd;
const DOTDOTDOT: u8 = 0xfc;
const OFFSET_TOO_LARGE: u8 = 0xfb;
/// Bytes below this are offsets; the operators above.
const SPECIAL: u8 = 0xf0;
/// The longest stream the compiler writes (`abi.TraceArgsMaxLen`: (5*3+2)*10+1).
const MAX_LEN: u64 = 171;

/// The arguments of a function as its traceback metadata describes them, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UntypedArgs {
    pub items: Vec<ArgItem>,
}

impl UntypedArgs {
    /// The words, in order, aggregates flattened.
    pub fn words(&self) -> impl Iterator<Item = &ArgWord> {
        self.items.iter().filter_map(|i| match i {
            ArgItem::Word(w) => Some(w),
            _ => None,
        })
    }

    /// Whether the compiler left arguments or parts out (`...` or `_` in a Go traceback).
    pub fn is_incomplete(&self) -> bool {
        self.items
            .iter()
            .any(|i| matches!(i, ArgItem::Elided | ArgItem::OffsetTooLarge))
    }
}

/// One element of the stream, as a Go traceback prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgItem {
    /// `{`: an aggregate argument or part begins.
    Open,
    /// `}`
    Close,
    Word(ArgWord),
    /// `...`: more arguments or parts the compiler did not describe.
    Elided,
    /// `_`: a part whose offset does not fit the encoding.
    OffsetTooLarge,
}

/// A scalar argument, or a scalar part of an aggregate one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArgWord {
    /// Offset in the argument frame (the spill slot of a register word).
    pub offset: u64,
    /// Bytes (1 to 8): a bool or int8 is 1, a float32 4.
    pub size: u64,
    /// Where the word is at function entry, or why that is not proven.
    pub location: Result<Location, Unknown>,
}

/// Why a word's place at entry is not known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    #[error("the function has no stack-growth path (NOSPLIT) to show its argument registers")]
    NoStackCheck,
    #[error("the stack-growth path spills no register: the function uses none of its register arguments, or takes none")]
    NothingSpilled,
    #[error("no spill writes the word's slot")]
    NotSpilled,
    #[error("the spill to the word's slot stores {spilled} bytes, the word has {word}")]
    SpillWidth { spilled: u64, word: u64 },
    #[error("the stack-growth path is not the compiler's pattern: {0}")]
    Unrecognized(String),
    #[error("argument registers are only read from amd64 code")]
    Architecture,
}

/// Every function's ArgInfo stream, by entry.
#[derive(Debug, Default)]
pub(crate) struct ArgInfoIndex {
    streams: HashMap<VirtAddr, Vec<u8>>,
}

impl ArgInfoIndex {
    pub fn get(&self, entry: VirtAddr) -> Option<&[u8]> {
        self.streams.get(&entry).map(Vec::as_slice)
    }
}

/// Reads the ArgInfo of every function of a Go 1.18+ table (older tables give an empty index).
/// `entries` are the table's functions in its order; `gofunc(off, len)` reads `len` bytes at
/// the runtime's `gofunc + off`, or fewer where the image ends.
pub(crate) fn index<'g>(
    table: RawTable<'_>,
    entries: &[VirtAddr],
    gofunc: impl Fn(u64, u64) -> Option<&'g [u8]>,
) -> Result<ArgInfoIndex, BinaryError> {
    let mut out = ArgInfoIndex::default();
    for (i, &entry) in entries.iter().enumerate().take(table.nfunc as usize) {
        let Some(record) = FuncRecord::nth(&table, i as u64)? else {
            break;
        };
        let Some(off) = record.funcdata(FUNCDATA_ARG_INFO)? else {
            continue;
        };
        let bytes = gofunc(off, MAX_LEN).ok_or_else(|| {
            pclntab::malformed(
                record.at,
                format!("the argument metadata of the function at {entry} lies outside the image"),
            )
        })?;
        let len = bytes.iter().position(|&b| b == END_SEQ).ok_or_else(|| {
            pclntab::malformed(
                record.at,
                format!("the argument metadata of the function at {entry} does not end"),
            )
        })?;
        out.streams.insert(entry, bytes[..=len].to_vec());
    }
    Ok(out)
}

/// Parses a stream (ending with its `0xff`), every word's location not yet known.
pub(crate) fn parse(stream: &[u8], entry: VirtAddr) -> Result<Vec<ArgItem>, BinaryError> {
    let bad = |reason: String| BinaryError::Malformed {
        section: "FUNCDATA_ArgInfo",
        offset: entry.0,
        reason,
    };
    let mut items = Vec::new();
    let mut depth = 0u32;
    let mut bytes = stream.iter().copied();
    loop {
        let b = bytes
            .next()
            .ok_or_else(|| bad("the stream does not end".into()))?;
        items.push(match b {
            END_SEQ if depth == 0 => return Ok(items),
            END_SEQ => return Err(bad(format!("{depth} aggregates are not closed"))),
            START_AGG => {
                depth += 1;
                ArgItem::Open
            }
            END_AGG => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| bad("an aggregate closes that was not opened".into()))?;
                ArgItem::Close
            }
            DOTDOTDOT => ArgItem::Elided,
            OFFSET_TOO_LARGE => ArgItem::OffsetTooLarge,
            b if b >= SPECIAL => return Err(bad(format!("unknown operator {b:#x}"))),
            offset => {
                let size = bytes
                    .next()
                    .ok_or_else(|| bad("a word has no size".into()))?;
                if size == 0 || size > 8 {
                    return Err(bad(format!("a word of {size} bytes")));
                }
                ArgItem::Word(ArgWord {
                    offset: u64::from(offset),
                    size: u64::from(size),
                    location: Err(Unknown::NoStackCheck),
                })
            }
        });
    }
}

/// What shows where a function's arguments are at entry.
pub(crate) enum Evidence {
    /// Assembly (pclntab's `FuncFlagAsm`, Go 1.19+) with ArgInfo: the toolchains write ArgInfo
    /// for assembly only when it is ABI0 (`cmd/compile/internal/gc` emits it for ABI0
    /// declarations, `cmd/internal/obj` `Flushplist` skips other ABIs), where every argument
    /// is on the stack.
    Abi0,
    /// The function's stack-growth path.
    Growth(StackGrowth),
}

/// Sets each word's location from the evidence.
pub(crate) fn locate(items: &mut [ArgItem], evidence: Result<Evidence, Unknown>) {
    for item in items {
        let ArgItem::Word(word) = item else { continue };
        word.location = match &evidence {
            Err(why) => Err(why.clone()),
            Ok(Evidence::Abi0) => Ok(on_stack(word)),
            Ok(Evidence::Growth(StackGrowth::None)) => Err(Unknown::NoStackCheck),
            Ok(Evidence::Growth(StackGrowth::Spills(spills))) => from_spills(word, spills),
        };
    }
}

/// A stack word: its frame offset counts from just above the return address CALL pushed.
fn on_stack(word: &ArgWord) -> Location {
    Location::Stack {
        sp_offset: 8 + word.offset,
    }
}

/// A word a spill writes is in that register; a word wholly below every spill slot is a stack
/// argument (the compiler spills every register argument once it spills one, and the spill
/// area follows the stack arguments and results).
fn from_spills(word: &ArgWord, spills: &[Spill]) -> Result<Location, Unknown> {
    let lowest = spills
        .iter()
        .map(|s| s.offset)
        .min()
        .ok_or(Unknown::NothingSpilled)?;
    if let Some(s) = spills.iter().find(|s| s.offset == word.offset) {
        return if s.size == word.size {
            Ok(Location::Registers(vec![Piece {
                reg: s.reg,
                value_offset: 0,
                size: word.size,
            }]))
        } else {
            Err(Unknown::SpillWidth {
                spilled: s.size,
                word: word.size,
            })
        };
    }
    if word.offset + word.size <= lowest {
        return Ok(on_stack(word));
    }
    Err(Unknown::NotSpilled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::AbiReg;

    fn word(offset: u64, size: u64) -> ArgItem {
        ArgItem::Word(ArgWord {
            offset,
            size,
            location: Err(Unknown::NoStackCheck),
        })
    }

    #[test]
    fn parses_aggregates_elisions_and_large_offsets() {
        // f(a int, s string, p struct{ b bool; _ [300]byte; c int }) with a part elided.
        let stream = [
            0x00, 8, 0xfe, 0x08, 8, 0x10, 8, 0xfd, 0xfe, 0x18, 1, 0xfb, 0xfd, 0xfc, 0xff,
        ];
        let items = parse(&stream, VirtAddr(0x1000)).unwrap();
        assert_eq!(
            items,
            [
                word(0, 8),
                ArgItem::Open,
                word(8, 8),
                word(16, 8),
                ArgItem::Close,
                ArgItem::Open,
                word(24, 1),
                ArgItem::OffsetTooLarge,
                ArgItem::Close,
                ArgItem::Elided,
            ]
        );
    }

    #[test]
    fn malformed_streams_are_errors() {
        for stream in [
            &[0x00, 8][..],
            &[0xfe, 0x00, 8, 0xff],
            &[0xfd, 0xff],
            &[0xf5, 0xff],
            &[0x00, 0, 0xff],
            &[0x00],
        ] {
            assert!(parse(stream, VirtAddr(0)).is_err(), "{stream:x?}");
        }
    }

    #[test]
    fn spills_give_registers_and_what_lies_below_them_the_stack() {
        // f(a [2]int (stack, 0..16), b int (RAX, spilled at 16), c float32 (X0, at 24),
        // d int8 (RBX, at 28)), and a word at 32 that no spill writes.
        let mut items = vec![
            word(0, 8),
            word(8, 8),
            word(16, 8),
            word(24, 4),
            word(28, 2),
        ];
        items.push(word(32, 8));
        let spill = |reg, offset, size| Spill { reg, offset, size };
        let spills = vec![
            spill(AbiReg::Int(0), 16, 8),
            spill(AbiReg::Float(0), 24, 4),
            spill(AbiReg::Int(1), 28, 1),
        ];
        locate(
            &mut items,
            Ok(Evidence::Growth(StackGrowth::Spills(spills))),
        );
        let got: Vec<_> = items
            .iter()
            .map(|i| match i {
                ArgItem::Word(w) => w.location.clone(),
                _ => unreachable!(),
            })
            .collect();
        let reg = |reg, size| {
            Ok(Location::Registers(vec![Piece {
                reg,
                value_offset: 0,
                size,
            }]))
        };
        assert_eq!(
            got,
            [
                Ok(Location::Stack { sp_offset: 8 }),
                Ok(Location::Stack { sp_offset: 16 }),
                reg(AbiReg::Int(0), 8),
                reg(AbiReg::Float(0), 4),
                Err(Unknown::SpillWidth {
                    spilled: 1,
                    word: 2
                }),
                Err(Unknown::NotSpilled),
            ]
        );
        let mut items = vec![word(0, 8)];
        locate(
            &mut items,
            Ok(Evidence::Growth(StackGrowth::Spills(vec![]))),
        );
        assert!(matches!(
            &items[0],
            ArgItem::Word(ArgWord {
                location: Err(Unknown::NothingSpilled),
                ..
            })
        ));
    }

    /// Random streams parse or are refused, never panic; a parsed one has its words' sizes in
    /// 1..=8 and balanced brackets.
    #[test]
    fn random_streams_never_panic() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut parsed = 0;
        for _ in 0..20_000 {
            let tokens = x % 8;
            let mut stream = Vec::new();
            for _ in 0..tokens {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly operators and words with small offsets, as real streams are; now and
                // then a byte no stream has.
                match x % 8 {
                    0 => stream.push((x >> 8) as u8),
                    1..=3 => stream.push(0xfb + (x >> 8) as u8 % 4),
                    _ => stream.extend([(x >> 16) as u8 % 24, 1 + (x >> 24) as u8 % 8]),
                }
            }
            if !x.is_multiple_of(16) {
                stream.push(END_SEQ);
            }
            if let Ok(mut items) = parse(&stream, VirtAddr(0)) {
                parsed += 1;
                let opens = items.iter().filter(|i| matches!(i, ArgItem::Open)).count();
                let closes = items.iter().filter(|i| matches!(i, ArgItem::Close)).count();
                assert_eq!(opens, closes, "{stream:x?}");
                let spills = vec![Spill {
                    reg: AbiReg::Int(0),
                    offset: 8,
                    size: 8,
                }];
                locate(
                    &mut items,
                    Ok(Evidence::Growth(StackGrowth::Spills(spills))),
                );
            }
        }
        assert!(parsed > 100, "{parsed}");
    }
}
