//! The contract between the kernel side and the decoder: what the kernel crate reports for
//! each call, built from the BPF program's records (`gt_event`, `gt_capture` in the kernel
//! crate's `bpf/gotrace.h`) and read back through the [`ProbePlan`](crate::ProbePlan).

use serde::Serialize;

/// Number of integer argument registers the kernel side captures (amd64's Go ABI; the BPF
/// side's `GT_INT_REGS`).
pub const INT_REGS: usize = 9;

/// One region of the traced process's memory, read at a probe site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub addr: u64,
    /// Bytes the recipe asked for; more than `bytes.len()` when cut to a limit.
    pub want: u64,
    pub status: CaptureStatus,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureStatus {
    Ok,
    /// Cut to a limit: `want` bytes asked for, fewer kept.
    Truncated,
    /// The address could not be read (unmapped, freed).
    Fault,
    /// The address was 0.
    Nil,
    /// The event had no room left for it.
    NoRoom,
    /// Copies of bytes other ops captured (a Swiss map's full slots): no memory at `addr`.
    Gathered,
}

/// What the kernel reports for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawCall {
    pub kind: CallKind,
    /// Index into [`ProbePlan::functions`](crate::ProbePlan::functions).
    pub function: u32,
    pub pid: u32,
    pub entry_tid: u32,
    /// 0 when there was no return.
    pub return_tid: u32,
    pub goid: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub entry_ns: u64,
    pub return_ns: u64,
    pub entry_regs: [u64; INT_REGS],
    pub return_regs: [u64; INT_REGS],
    pub entry_sp: u64,
    pub return_sp: u64,
    /// Runtime − link-time address of the process's binary (0 unless position-independent).
    pub load_bias: u64,
    /// Memory read at entry (for the arguments) and at the return (for the results).
    pub entry_captures: Vec<Capture>,
    pub return_captures: Vec<Capture>,
    /// The entry read memory but that record was lost: arguments that need it are unknown.
    pub entry_data_lost: bool,
    /// The call's stack at entry (`--stack`); `None` when not asked for or its record was lost.
    pub stack: Option<RawStack>,
}

/// A call's stack as the kernel walked it at entry: runtime addresses (add nothing; subtract
/// the load bias to get link-time ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawStack {
    /// The probed pc, the word at SP (the return address at an entry probe: no frame of the
    /// callee is set up yet), then the return address of each frame up the frame-pointer chain.
    pub pcs: Vec<u64>,
    pub end: StackEnd,
}

/// How a stack walk ended: whether the stack shown is whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackEnd {
    /// The goroutine's first frame was reached: the stack is whole.
    Complete,
    /// The frame limit was reached and the stack goes on.
    Cut,
    /// A frame could not be read: the frames above it are not shown.
    Unreadable,
    /// The frame-pointer chain did not lead up the stack: not followed further.
    Broken,
    /// The entry's record was lost (the ring buffer was full): no frame is known.
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// Entered and returned.
    Returned,
    /// Entered; returns are not traced (entry-only mode).
    Entered,
    /// Unwound by a panic: it never returned.
    Panicked,
    /// Cut short by runtime.Goexit.
    Exited,
    /// Still running when its process exited or gotrace stopped; `return_ns` is that moment.
    InFlight,
    /// A call on a system stack (g0) whose frame the runtime reused: it never returned.
    Abandoned,
    /// Its goroutine went on past it (a later call in the same frame or an outer return) with
    /// no panic under way: its return happened unseen, so how it ended is not known.
    ReturnNotSeen,
    /// An inlined call, seen at its body's first instruction: it has no return of its own.
    Inlined,
}
