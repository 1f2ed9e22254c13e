//! A plan's capture recipes and entry sites, laid out as the BPF program's maps hold them.

use crate::skel::{types, GotraceSkel};
use crate::KernelError;
use gotrace_plan::recipe::{CaptureOp, Gather, Guard, OpKind, Operand, Recipe};
use gotrace_plan::{ProbePlan, SiteKind};
use libbpf_rs::{MapCore, MapFlags};

/// A plan's recipes laid out as the BPF maps hold them.
pub(super) struct RecipeTables {
    /// Indexed 2f (entry) and 2f+1 (returns) for function f.
    pub(super) recipes: Vec<types::gt_recipe>,
    pub(super) ops: Vec<types::gt_op>,
    pub(super) type_recipes: Vec<(u64, types::gt_recipe)>,
}

impl RecipeTables {
    pub(super) fn new(plan: &ProbePlan) -> RecipeTables {
        let mut tables = RecipeTables {
            recipes: Vec::with_capacity(plan.functions.len() * 2),
            ops: Vec::new(),
            type_recipes: Vec::with_capacity(plan.type_recipes.len()),
        };
        for f in &plan.functions {
            let entry = tables.add(&f.entry_recipe);
            let returns = tables.add(&f.return_recipe);
            tables.recipes.extend([entry, returns]);
        }
        for (addr, recipe) in &plan.type_recipes {
            let stored = tables.add(recipe);
            tables.type_recipes.push((*addr, stored));
        }
        tables
    }

    fn add(&mut self, recipe: &Recipe) -> types::gt_recipe {
        let first = self.ops.len() as u32;
        self.ops.extend(recipe.ops.iter().map(gt_op));
        types::gt_recipe {
            first,
            count: recipe.ops.len() as u32,
        }
    }

    pub(super) fn store(&self, skel: &GotraceSkel<'_>) -> Result<(), KernelError> {
        let fill = |map: &libbpf_rs::MapMut<'_>, key: &[u8], value: &[u8]| {
            map.update(key, value, MapFlags::ANY)
                .map_err(|e| KernelError::Load(format!("filling a recipe map: {e:#}")))
        };
        for (i, recipe) in self.recipes.iter().enumerate() {
            fill(
                &skel.maps.recipes,
                &(i as u32).to_ne_bytes(),
                bytes_of(recipe),
            )?;
        }
        for (i, op) in self.ops.iter().enumerate() {
            fill(&skel.maps.ops, &(i as u32).to_ne_bytes(), bytes_of(op))?;
        }
        for (addr, recipe) in &self.type_recipes {
            fill(
                &skel.maps.type_recipes,
                &addr.to_ne_bytes(),
                bytes_of(recipe),
            )?;
        }
        Ok(())
    }
}

/// Each function's entry-site address, from which the BPF side learns a PIE process's bias.
pub(super) fn store_entry_sites(
    skel: &GotraceSkel<'_>,
    plan: &ProbePlan,
) -> Result<(), KernelError> {
    for site in plan.sites.iter().filter(|s| {
        matches!(
            s.kind,
            SiteKind::Entry | SiteKind::EntryReturn | SiteKind::Inlined
        )
    }) {
        skel.maps
            .entry_sites
            .update(
                &site.function.to_ne_bytes(),
                &site.addr.0.to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(|e| KernelError::Load(format!("filling entry sites: {e:#}")))?;
    }
    Ok(())
}

/// The bytes of a generated BPF type, as a map update wants them.
pub(super) fn bytes_of<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: only used with the skeleton's repr(C) types gt_recipe, gt_op and gt_error_result, whose fields
    // are integers laid out without implicit padding (gotrace.h pads explicitly), so every
    // byte is initialised; the slice borrows `value` for its lifetime.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
}

pub(super) fn gt_operand(operand: Operand) -> types::gt_operand {
    use types::gt_operand_kind as K;
    let (kind, reg, op, off, add) = match operand {
        Operand::Const(v) => (K::GT_OPERAND_NONE, 0, 0, 0, v),
        Operand::Reg { index, add } => (K::GT_OPERAND_REG, index, 0, 0, add),
        Operand::Sp { add } => (K::GT_OPERAND_SP, 0, 0, 0, add),
        Operand::Word { op, off, add } => (K::GT_OPERAND_WORD, 0, op, off, add),
        Operand::Data { add } => (K::GT_OPERAND_DATA, 0, 0, 0, add),
    };
    types::gt_operand {
        kind: kind.0 as u8,
        reg,
        op,
        off,
        add,
    }
}

pub(super) fn gt_op(op: &CaptureOp) -> types::gt_op {
    let (kind, elem_size, max_len) = match op.kind {
        OpKind::Read { elem_size, max_len } => (types::gt_op_kind::GT_OP_READ, elem_size, max_len),
        OpKind::Dynamic => (types::gt_op_kind::GT_OP_DYNAMIC, 0, 0),
        OpKind::Gather(g) => (types::gt_op_kind::GT_OP_GATHER, g.group_size, g.max_len),
    };
    let (addr, len) = match op.kind {
        OpKind::Gather(g) => gather_operands(&g),
        _ => (gt_operand(op.addr), gt_operand(op.len)),
    };
    let (guard, guard_above, guard_at_most) = match op.guard {
        Some(Guard::Above(operand, bound)) => (gt_operand(operand), bound, 0),
        Some(Guard::AtMost(operand, bound)) => (gt_operand(operand), bound, 1),
        None => (gt_operand(Operand::Const(0)), 0, 0),
    };
    types::gt_op {
        kind: kind.0 as u8,
        guard_at_most,
        pad: [0; 2],
        guard_above: guard_above.clamp(0, i64::from(u32::MAX)) as u32,
        elem_size,
        max_len,
        addr,
        len,
        guard,
    }
}

/// A gather's fields, packed into its operands as gotrace.h's GT_OP_GATHER reads them.
pub(super) fn gather_operands(g: &Gather) -> (types::gt_operand, types::gt_operand) {
    use types::gt_operand_kind as K;
    let second = g.second.map_or(K::GT_OPERAND_NONE, |_| K::GT_OPERAND_WORD);
    let addr = types::gt_operand {
        kind: K::GT_OPERAND_WORD.0 as u8,
        reg: 0,
        op: g.first,
        off: g.base,
        add: i64::from(g.size),
    };
    let len = types::gt_operand {
        kind: second.0 as u8,
        reg: 0,
        op: g.second.unwrap_or(0),
        off: g.stride,
        add: i64::from(g.ctrl),
    };
    (addr, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotrace_plan::recipe::{MAX_OPS, MAX_READ};
    use gotrace_plan::INT_REGS;
    #[test]
    fn plan_limits_match_the_bpf_program() {
        assert_eq!(MAX_OPS as u32, types::gt_limits::GT_MAX_OPS.0);
        assert_eq!(MAX_READ, types::gt_limits::GT_MAX_READ.0);
        assert_eq!(types::gt_event::default().entry_regs.len(), INT_REGS);
    }

    #[test]
    fn histogram_layout_matches_the_bpf_program() {
        use gotrace_plan::stats::{BUCKETS, SUB_BITS};
        assert_eq!(types::gt_hist::GT_HIST_SUB_BITS.0, SUB_BITS);
        assert_eq!(types::gt_hist::GT_HIST_BUCKETS.0 as usize, BUCKETS);
        assert_eq!(types::gt_func_stats::default().hist.len(), BUCKETS);
    }
}
