//! What the ring buffer brings: records parsed into calls, entry captures joined with their
//! returns.

use crate::skel::types;
use crate::KernelError;
use gotrace_plan::{CallKind, Capture, CaptureStatus, RawCall, RawStack, StackEnd, INT_REGS};
use libbpf_rs::RingBuffer;
use std::collections::HashMap;

/// Draining end of the ring buffer.
pub struct EventStream<'a> {
    pub(super) ring: RingBuffer<'a>,
}

impl EventStream<'_> {
    /// Runs the callback for every event available now.
    pub fn consume(&self) -> Result<(), KernelError> {
        self.ring
            .consume()
            .map_err(|e| KernelError::Load(format!("ring buffer: {e:#}")))
    }

    /// Runs the callback for at most `n` of the events available now; returns how many ran.
    pub fn consume_at_most(&self, n: usize) -> Result<usize, KernelError> {
        let done = self.ring.consume_raw_n(n);
        usize::try_from(done).map_err(|_| {
            let e = std::io::Error::from_raw_os_error(-done);
            KernelError::Load(format!("ring buffer: {e}"))
        })
    }

    /// Becomes readable when the BPF side asks for a wake-up (a batch has built up).
    pub fn fd(&self) -> i32 {
        self.ring.epoll_fd()
    }
}

/// What one ring-buffer record means.
// Built once per record and consumed at once: boxing the call would allocate for every call.
#[allow(clippy::large_enum_variant)]
pub(super) enum Event {
    Call(RawCall),
    /// A traced process ended at `at_ns`: its calls still in flight never return.
    ProcessExit {
        pid: u32,
        at_ns: u64,
    },
}

/// What an entry sent ahead of its call: the memory it read and, under `--stack`, its stack.
#[derive(Default)]
pub(super) struct EntryData {
    captures: Vec<Capture>,
    stack: Option<RawStack>,
}

/// Entry data waits here for their call's return event (the ring buffer keeps order, so
/// an entry's data always comes before its return).
#[derive(Default)]
pub(super) struct Pairing {
    pub(super) pending: HashMap<u64, EntryData>,
    pub(super) entry_data: Vec<bool>,
    /// Ring-buffer records read so far.
    pub(super) records: u64,
}

/// More entries waiting than this means returns are being lost: drop the oldest half.
pub(super) const MAX_PENDING: usize = 1 << 16;

impl Pairing {
    pub(super) fn event(&mut self, bytes: &[u8]) -> Option<Event> {
        self.records += 1;
        let header_size = std::mem::size_of::<types::gt_event>();
        let e: types::gt_event = read_plain(bytes)?;
        let payload = bytes
            .get(header_size..header_size + e.payload_len as usize)
            .unwrap_or(&[]);
        let (stack, payload) = parse_stack(&e, payload);
        let captures = parse_captures(payload);
        let kind = match types::gt_event_kind(e.kind) {
            types::gt_event_kind::GT_EVENT_ENTRY_DATA => {
                if self.pending.len() >= MAX_PENDING {
                    let mut ids: Vec<u64> = self.pending.keys().copied().collect();
                    ids.sort_unstable();
                    for id in &ids[..ids.len() / 2] {
                        self.pending.remove(id);
                    }
                }
                self.pending
                    .insert(e.call_id, EntryData { captures, stack });
                return None;
            }
            types::gt_event_kind::GT_EVENT_CALL => CallKind::Returned,
            types::gt_event_kind::GT_EVENT_ENTRY => CallKind::Entered,
            types::gt_event_kind::GT_EVENT_PANICKED => CallKind::Panicked,
            types::gt_event_kind::GT_EVENT_EXITED => CallKind::Exited,
            types::gt_event_kind::GT_EVENT_ABANDONED => CallKind::Abandoned,
            types::gt_event_kind::GT_EVENT_RETURN_NOT_SEEN => CallKind::ReturnNotSeen,
            types::gt_event_kind::GT_EVENT_PROCESS_EXIT => {
                return Some(Event::ProcessExit {
                    pid: e.pid,
                    at_ns: e.return_ns,
                })
            }
            _ => return None,
        };
        let (entry, return_captures) = match kind {
            CallKind::Entered | CallKind::Inlined => {
                (Some(EntryData { captures, stack }), Vec::new())
            }
            CallKind::Returned => (self.pending.remove(&e.call_id), captures),
            CallKind::Panicked
            | CallKind::Exited
            | CallKind::Abandoned
            | CallKind::ReturnNotSeen
            | CallKind::InFlight => (self.pending.remove(&e.call_id), Vec::new()),
        };
        let entry_data_lost = self.entry_data_lost(e.func, &entry);
        let entry = entry.unwrap_or_default();
        Some(Event::Call(RawCall {
            kind,
            function: e.func,
            pid: e.pid,
            entry_tid: e.entry_tid,
            return_tid: e.return_tid,
            goid: e.goid,
            entry_ns: e.entry_ns,
            return_ns: e.return_ns,
            entry_regs: e.entry_regs,
            return_regs: e.return_regs,
            entry_sp: e.entry_sp,
            return_sp: e.return_sp,
            load_bias: e.load_bias,
            entry_captures: entry.captures,
            return_captures,
            entry_data_lost,
            stack: entry.stack,
        }))
    }

    /// The entry's memory was dropped (ring buffer full) though its call arrived.
    fn entry_data_lost(&self, func: u32, entry: &Option<EntryData>) -> bool {
        entry.is_none() && self.entry_data.get(func as usize).copied().unwrap_or(false)
    }

    /// A call still in flight at `at_ns`, from its in-flight table entry.
    pub(super) fn in_flight(
        &mut self,
        key: &types::gt_frame_key,
        call: &types::gt_inflight,
        at_ns: u64,
        load_bias: u64,
    ) -> RawCall {
        let entry = self.pending.remove(&call.call_id);
        let entry_data_lost = self.entry_data_lost(call.func, &entry);
        let entry = entry.unwrap_or_default();
        RawCall {
            kind: CallKind::InFlight,
            function: call.func,
            pid: key.tgid,
            entry_tid: call.tid,
            return_tid: 0,
            // A system goroutine's key holds its g's address: its goid is 0.
            goid: if key.system != 0 { 0 } else { key.goid },
            entry_ns: call.entry_ns,
            return_ns: at_ns.max(call.entry_ns),
            entry_regs: call.regs,
            return_regs: [0; INT_REGS],
            entry_sp: call.sp,
            return_sp: 0,
            load_bias,
            entry_data_lost,
            entry_captures: entry.captures,
            return_captures: Vec::new(),
            stack: entry.stack,
        }
    }
}

/// The stack an event's payload opens with (`stack_len` pcs), and the rest of the payload.
fn parse_stack<'p>(e: &types::gt_event, payload: &'p [u8]) -> (Option<RawStack>, &'p [u8]) {
    let Some(end) = stack_end(e.stack_end) else {
        return (None, payload);
    };
    let len = (e.stack_len as usize * 8).min(payload.len());
    let pcs = payload[..len]
        .chunks_exact(8)
        .filter_map(|w| w.try_into().ok().map(u64::from_ne_bytes))
        .collect();
    (Some(RawStack { pcs, end }), &payload[len..])
}

/// How a stack walk ended (`enum gt_stack_end`); `None`: no stack was walked.
pub(super) fn stack_end(raw: u32) -> Option<StackEnd> {
    use types::gt_stack_end as End;
    match End(raw) {
        End::GT_STACK_NONE => None,
        End::GT_STACK_COMPLETE => Some(StackEnd::Complete),
        End::GT_STACK_CUT => Some(StackEnd::Cut),
        End::GT_STACK_BROKEN => Some(StackEnd::Broken),
        _ => Some(StackEnd::Unreadable),
    }
}

/// The gt_capture records of an event's payload.
pub(super) fn parse_captures(mut payload: &[u8]) -> Vec<Capture> {
    let header_size = std::mem::size_of::<types::gt_capture>();
    let mut out = Vec::new();
    while let Some(header) = payload.get(..header_size) {
        // SAFETY: gt_capture is plain integers and `header` holds exactly its size.
        let c: types::gt_capture = unsafe { std::ptr::read_unaligned(header.as_ptr().cast()) };
        let len = c.len as usize;
        let Some(bytes) = payload.get(header_size..header_size + len) else {
            break;
        };
        let status = match types::gt_capture_status(u32::from(c.status)) {
            types::gt_capture_status::GT_CAPTURE_OK => CaptureStatus::Ok,
            types::gt_capture_status::GT_CAPTURE_TRUNCATED => CaptureStatus::Truncated,
            types::gt_capture_status::GT_CAPTURE_FAULT => CaptureStatus::Fault,
            types::gt_capture_status::GT_CAPTURE_NIL => CaptureStatus::Nil,
            types::gt_capture_status::GT_CAPTURE_GATHERED => CaptureStatus::Gathered,
            _ => CaptureStatus::NoRoom,
        };
        out.push(Capture {
            addr: c.addr,
            want: c.want,
            status,
            bytes: bytes.to_vec(),
        });
        payload = payload
            .get(header_size + len.div_ceil(8) * 8..)
            .unwrap_or(&[]);
    }
    out
}

/// CLOCK_MONOTONIC now, the clock of the BPF side's timestamps.
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A generated BPF type read from map or event bytes; `None` when they are too short.
pub(super) fn read_plain<T: Copy>(bytes: &[u8]) -> Option<T> {
    let bytes = bytes.get(..std::mem::size_of::<T>())?;
    // SAFETY: only used with the skeleton's plain-integer types (gt_event, gt_capture,
    // gt_frame_key, gt_inflight, gt_goroutine_key, gt_func_stats, gt_group_key), for which any bit pattern is valid;
    // `bytes` holds exactly their size and read_unaligned makes no alignment assumption.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tables::bytes_of;
    fn event(kind: types::gt_event_kind, call_id: u64) -> Vec<u8> {
        let e = types::gt_event {
            kind: kind.0,
            call_id,
            ..Default::default()
        };
        bytes_of(&e).to_vec()
    }

    #[test]
    fn a_call_whose_entry_data_was_dropped_says_so() {
        use types::gt_event_kind as K;
        let mut pairing = Pairing {
            pending: HashMap::new(),
            entry_data: vec![true],
            records: 0,
        };
        let call = |e: Option<Event>| match e {
            Some(Event::Call(c)) => c,
            _ => panic!("not a call"),
        };
        assert!(call(pairing.event(&event(K::GT_EVENT_CALL, 7))).entry_data_lost);
        assert!(pairing.event(&event(K::GT_EVENT_ENTRY_DATA, 8)).is_none());
        assert!(!call(pairing.event(&event(K::GT_EVENT_CALL, 8))).entry_data_lost);
        assert!(pairing.pending.is_empty());
    }

    #[test]
    fn captures_parse_back_with_padding() {
        let mut payload = Vec::new();
        for (addr, data) in [(0x1000u64, &b"hello"[..]), (0x2000, &b"12345678"[..])] {
            let c = types::gt_capture {
                addr,
                want: data.len() as u64,
                len: data.len() as u32,
                op: 0,
                status: 0,
                pad: 0,
            };
            payload.extend_from_slice(bytes_of(&c));
            payload.extend_from_slice(data);
            payload.resize(payload.len().div_ceil(8) * 8, 0);
        }
        let parsed = parse_captures(&payload);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].bytes, b"hello");
        assert_eq!(parsed[1].addr, 0x2000);
        assert_eq!(parsed[1].bytes, b"12345678");
    }
}
