//! Stats mode (`gotrace stats`): the per-function and per-group counts the probes keep in
//! the kernel instead of sending a record per call.

use super::events::{self, read_plain};
use super::{tables, Session};
use crate::skel::{types, GotraceSkel};
use crate::KernelError;
use gotrace_plan::stats::{ErrorResult, FunctionStats, Histogram, KeyStatus, RawGroupKey};
use gotrace_plan::{RawStack, StackEnd};
use libbpf_rs::{MapCore, MapFlags};

impl Session {
    /// Each function's counts so far (by plan index), summed over CPUs: stats mode only.
    pub fn function_stats(&self, functions: usize) -> Result<Vec<FunctionStats>, KernelError> {
        let map_error = |e: libbpf_rs::Error| KernelError::Load(format!("reading stats: {e:#}"));
        (0..functions as u32)
            .map(|func| {
                let per_cpu = self
                    .skel
                    .maps
                    .func_stats
                    .lookup_percpu(&func.to_ne_bytes(), MapFlags::ANY)
                    .map_err(map_error)?
                    .unwrap_or_default();
                Ok(summed(&per_cpu))
            })
            .collect()
    }

    /// `--by`: every group's key and counts so far, summed over CPUs (stats mode only); a
    /// stack key's pcs from the table of stacks.
    pub fn group_stats(&self) -> Result<Vec<(RawGroupKey, FunctionStats)>, KernelError> {
        let map_error = |e: libbpf_rs::Error| KernelError::Load(format!("reading groups: {e:#}"));
        let groups = &self.skel.maps.groups;
        let mut out = Vec::new();
        for key in groups.keys() {
            let Some(k) = read_plain::<types::gt_group_key>(&key) else {
                continue;
            };
            let per_cpu = groups
                .lookup_percpu(&key, MapFlags::ANY)
                .map_err(map_error)?
                .unwrap_or_default();
            out.push((self.group_key(&k)?, summed(&per_cpu)));
        }
        Ok(out)
    }

    fn group_key(&self, k: &types::gt_group_key) -> Result<RawGroupKey, KernelError> {
        use types::gt_group_status as S;
        let status = match S(u32::from(k.status)) {
            S::GT_GROUP_OK => KeyStatus::Read,
            S::GT_GROUP_NIL => KeyStatus::Nil,
            S::GT_GROUP_NO_RESULT => KeyStatus::NoResult,
            S::GT_GROUP_BUSY => KeyStatus::Busy,
            _ => KeyStatus::Unreadable,
        };
        let end = events::stack_end(u32::from(k.end));
        let stack = match end {
            Some(end) if status == KeyStatus::Read => self.group_stack(k.value, k.len, end)?,
            _ => None,
        };
        Ok(RawGroupKey {
            function: k.func,
            status,
            value: k.value,
            bytes: k.bytes[..usize::from(k.len).min(k.bytes.len())].to_vec(),
            stack,
        })
    }

    /// The first `len` pcs stored for a stack key's hash; `None` if they were not stored.
    fn group_stack(
        &self,
        hash: u64,
        len: u8,
        end: StackEnd,
    ) -> Result<Option<RawStack>, KernelError> {
        let stored = self
            .skel
            .maps
            .group_stacks
            .lookup(&hash.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| KernelError::Load(format!("reading stacks: {e:#}")))?;
        Ok(stored.map(|bytes| RawStack {
            pcs: bytes
                .chunks_exact(8)
                .take(usize::from(len))
                .filter_map(|w| w.try_into().ok().map(u64::from_ne_bytes))
                .collect(),
            end,
        }))
    }
}

/// Each CPU's `gt_func_stats` added up.
fn summed(per_cpu: &[Vec<u8>]) -> FunctionStats {
    let mut total = FunctionStats::default();
    for bytes in per_cpu {
        if let Some(s) = read_plain::<types::gt_func_stats>(bytes) {
            total.add(&function_stats(&s));
        }
    }
    total
}

/// One CPU's counts of one function, as [`FunctionStats`].
fn function_stats(s: &types::gt_func_stats) -> FunctionStats {
    FunctionStats {
        returned: s.returned,
        errors: s.errors,
        panicked: s.panicked,
        exited: s.exited,
        abandoned: s.abandoned,
        return_not_seen: s.return_not_seen,
        entered: s.entered,
        in_flight: 0,
        not_grouped: s.not_grouped,
        total_ns: s.total_ns,
        max_ns: s.max_ns,
        latency: Histogram {
            counts: s.hist.to_vec(),
        },
    }
}

/// Where each function's `error` result is, as the BPF side reads it.
pub(super) fn store_error_results(
    skel: &GotraceSkel<'_>,
    error_results: &[ErrorResult],
) -> Result<(), KernelError> {
    use types::gt_error_at as At;
    for (func, result) in error_results.iter().enumerate() {
        let (at, reg, sp_offset) = match *result {
            ErrorResult::Register(reg) => (At::GT_ERROR_REG, u32::from(reg), 0),
            ErrorResult::Stack(offset) => (At::GT_ERROR_STACK, 0, offset),
            ErrorResult::None | ErrorResult::Unknown => (At::GT_ERROR_NONE, 0, 0),
        };
        let value = types::gt_error_result {
            at: at.0,
            reg,
            sp_offset,
        };
        skel.maps
            .error_results
            .update(
                &(func as u32).to_ne_bytes(),
                tables::bytes_of(&value),
                MapFlags::ANY,
            )
            .map_err(|e| KernelError::Load(format!("filling error results: {e:#}")))?;
    }
    Ok(())
}
