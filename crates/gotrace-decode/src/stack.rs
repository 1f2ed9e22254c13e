//! A call's stack at entry: the pcs the kernel walked → Go source frames, through pclntab.

use gotrace_binary::pclntab::{SourceFrame, Symbolizer};
use gotrace_binary::VirtAddr;
use gotrace_plan::{RawStack, StackEnd};
use std::cell::RefCell;
use std::collections::HashMap;

/// One frame of a call's stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// `?` for a pc no function of the binary holds.
    pub function: String,
    pub file: String,
    pub line: u32,
    /// A call the compiler inlined into the frame below it in the list.
    pub inlined: bool,
    /// Compiler-generated code: left out of the stack, as Go's tracebacks do, unless it called
    /// a panic.
    pub wrapper: bool,
    /// The link-time address looked up.
    pub pc: u64,
}

/// A call's stack, innermost first, and whether it is whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<Frame>,
    pub end: StackEnd,
}

/// `frames` without the compiler's wrappers, the way the runtime's `tracebackPCs` leaves them
/// out: a wrapper stays when it called a panic function instead of what it wraps.
fn without_wrappers(frames: Vec<Frame>) -> Vec<Frame> {
    let mut kept: Vec<Frame> = Vec::with_capacity(frames.len());
    let mut callee: Option<String> = None;
    for f in frames {
        let called_panic = matches!(
            callee.as_deref(),
            Some("runtime.gopanic" | "runtime.sigpanic" | "runtime.panicwrap")
        );
        callee = Some(f.function.clone());
        if !f.wrapper || called_panic {
            kept.push(f);
        }
    }
    kept
}

/// Distinct pcs remembered before the cache starts again (a long session's memory stays bounded).
const CACHE_MAX: usize = 1 << 16;

/// Symbolizes stacks, remembering each pc's frames: a traced function's callers repeat.
pub struct Stacks<'b> {
    symbolizer: &'b Symbolizer<'b>,
    cache: RefCell<HashMap<u64, Vec<Frame>>>,
}

impl<'b> Stacks<'b> {
    pub fn new(symbolizer: &'b Symbolizer<'b>) -> Self {
        Stacks {
            symbolizer,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The frames of `raw` (`None`: its record was lost). `inlined_site`: the probe sat in an
    /// inlined body, inside a function whose own frame may already be set up.
    pub fn symbolize(&self, raw: Option<&RawStack>, bias: u64, inlined_site: bool) -> Stack {
        let Some(raw) = raw else {
            return Stack {
                frames: Vec::new(),
                end: StackEnd::Lost,
            };
        };
        let link = |pc: u64| pc.wrapping_sub(bias);
        let mut frames = Vec::new();
        for (i, &pc) in raw.pcs.iter().enumerate() {
            match i {
                // The probed instruction itself: no call to step back over.
                0 => frames.extend(self.frames_at(link(pc))),
                // The word at SP is a return address only where the frame holding the probe
                // has not pushed its frame pointer: an entry, or a frameless function.
                1 if inlined_site && !self.frameless(link(raw.pcs[0])) => {}
                // A return address points after its CALL: the call is the byte before.
                _ => frames.extend(self.frames_at(link(pc).wrapping_sub(1))),
            }
        }
        Stack {
            frames: without_wrappers(frames),
            end: raw.end,
        }
    }

    fn frameless(&self, pc: u64) -> bool {
        matches!(self.symbolizer.sp_delta(VirtAddr(pc)), Ok(Some(0)))
    }

    fn frames_at(&self, pc: u64) -> Vec<Frame> {
        let mut cache = self.cache.borrow_mut();
        if let Some(frames) = cache.get(&pc) {
            return frames.clone();
        }
        let found = match self.symbolizer.frames(VirtAddr(pc)) {
            Ok(found) if !found.is_empty() => found,
            // A pc outside Go's code (or a damaged table) is shown as unknown, not dropped.
            _ => vec![SourceFrame {
                function: "?".to_owned(),
                file: "?".to_owned(),
                line: 0,
                inlined: false,
                wrapper: false,
            }],
        };
        let frames: Vec<Frame> = found
            .into_iter()
            .map(|f| Frame {
                function: f.function,
                file: f.file,
                line: f.line,
                inlined: f.inlined,
                wrapper: f.wrapper,
                pc,
            })
            .collect();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(pc, frames.clone());
        frames
    }
}
