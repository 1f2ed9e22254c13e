//! A plan's capture recipes and entry sites, laid out as the BPF program's maps hold them.

use crate::skel::{types, GotraceSkel};
use crate::KernelError;
use gotrace_plan::filter::{
    Base, CmpOp, FilterOp, Filters, GroupBy, GroupKey, StrOp, Word, MAX_HOPS,
};
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
        let index = |i: usize| (i as u32).to_ne_bytes();
        fill_all(
            &skel.maps.recipes,
            self.recipes.iter().enumerate().map(|(i, r)| (index(i), r)),
        )?;
        fill_all(
            &skel.maps.ops,
            self.ops.iter().enumerate().map(|(i, op)| (index(i), op)),
        )?;
        fill_all(
            &skel.maps.type_recipes,
            self.type_recipes
                .iter()
                .map(|(addr, r)| (addr.to_ne_bytes(), r)),
        )
    }
}

/// Entries written per batch: enough to make the syscalls few, few enough that the copies stay
/// small beside the tables themselves.
const BATCH: usize = 8192;

/// Writes the entries in batches: a large binary has hundreds of thousands of ops and tens of
/// thousands of runtime types, and one syscall each made up a quarter of the time to attach. A
/// kernel that cannot update this map in batches (before 5.6) gets one update per entry.
fn fill_all<'e, K: AsRef<[u8]>, V: Copy + 'e>(
    map: &libbpf_rs::MapMut<'_>,
    entries: impl Iterator<Item = (K, &'e V)>,
) -> Result<(), KernelError> {
    let (mut keys, mut values, mut count) = (Vec::new(), Vec::new(), 0usize);
    for (key, value) in entries {
        keys.extend_from_slice(key.as_ref());
        values.extend_from_slice(bytes_of(value));
        count += 1;
        if count == BATCH {
            fill_batch(map, &keys, &values, count)?;
            (count, keys, values) = (0, Vec::new(), Vec::new());
        }
    }
    fill_batch(map, &keys, &values, count)
}

fn fill_batch(
    map: &libbpf_rs::MapMut<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
) -> Result<(), KernelError> {
    if count == 0 {
        return Ok(());
    }
    let batched = map.update_batch(keys, values, count as u32, MapFlags::ANY, MapFlags::ANY);
    if batched.is_ok() {
        return Ok(());
    }
    let (key_size, value_size) = (keys.len() / count, values.len() / count);
    for (key, value) in keys
        .chunks_exact(key_size)
        .zip(values.chunks_exact(value_size))
    {
        map.update(key, value, MapFlags::ANY)
            .map_err(|e| KernelError::Load(format!("filling a recipe map: {e:#}")))?;
    }
    Ok(())
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

/// `--where`: each function's program, the ops and the string constants.
pub(super) fn store_filters(skel: &GotraceSkel<'_>, filters: &Filters) -> Result<(), KernelError> {
    let fill_error = |e: libbpf_rs::Error| KernelError::Load(format!("filling filters: {e:#}"));
    let mut first = 0u32;
    for (index, function) in filters.functions.iter().enumerate() {
        let program = types::gt_filter {
            first,
            count: function.ops.len() as u32,
            at_return: u32::from(function.at_return),
            pad: 0,
        };
        skel.maps
            .filters
            .update(
                &(index as u32).to_ne_bytes(),
                bytes_of(&program),
                MapFlags::ANY,
            )
            .map_err(fill_error)?;
        for op in &function.ops {
            skel.maps
                .filter_ops
                .update(
                    &first.to_ne_bytes(),
                    bytes_of(&filter_op(op)),
                    MapFlags::ANY,
                )
                .map_err(fill_error)?;
            first += 1;
        }
    }
    for (index, literal) in filters.literals.iter().enumerate() {
        let mut value = types::gt_filter_literal {
            len: literal.len() as u32,
            ..Default::default()
        };
        value.bytes[..literal.len()].copy_from_slice(literal);
        skel.maps
            .filter_literals
            .update(
                &(index as u32).to_ne_bytes(),
                bytes_of(&value),
                MapFlags::ANY,
            )
            .map_err(fill_error)?;
    }
    Ok(())
}

/// `--by`: each function's key, as `group_key` in the BPF program reads it.
pub(super) fn store_group_specs(
    skel: &GotraceSkel<'_>,
    groups: &GroupBy,
) -> Result<(), KernelError> {
    use types::gt_group_kind as K;
    for (index, function) in groups.functions.iter().enumerate() {
        let none = Word {
            base: Base::Sp,
            at_entry: false,
            hops: Vec::new(),
            read: None,
            size: 0,
            signed: false,
        };
        let (kind, a, b) = match &function.key {
            GroupKey::Word { word, .. } => (K::GT_GROUP_WORD, word, &none),
            GroupKey::String { ptr, len } => (K::GT_GROUP_STRING, ptr, len),
            GroupKey::Type(word) => (K::GT_GROUP_TYPE, word, &none),
            GroupKey::Stack => (K::GT_GROUP_STACK, &none, &none),
            GroupKey::Unknown => (K::GT_GROUP_NONE, &none, &none),
        };
        let spec = types::gt_group_spec {
            kind: kind.0,
            at_return: u32::from(function.at_return),
            a: gt_word(a),
            b: gt_word(b),
        };
        skel.maps
            .group_specs
            .update(
                &(index as u32).to_ne_bytes(),
                bytes_of(&spec),
                MapFlags::ANY,
            )
            .map_err(|e| KernelError::Load(format!("filling group keys: {e:#}")))?;
    }
    Ok(())
}

fn filter_op(op: &FilterOp) -> types::gt_filter_op {
    use types::gt_filter_cmp as C;
    use types::gt_filter_kind as K;
    let cmp = |op: CmpOp| match op {
        CmpOp::Eq => C::GT_CMP_EQ,
        CmpOp::Ne => C::GT_CMP_NE,
        CmpOp::Lt => C::GT_CMP_LT,
        CmpOp::Le => C::GT_CMP_LE,
        CmpOp::Gt => C::GT_CMP_GT,
        CmpOp::Ge => C::GT_CMP_GE,
    };
    let (kind, cmp, literal, value, a, b) = match op {
        FilterOp::Compare { word, op, value } => (
            K::GT_FILTER_CMP,
            cmp(*op),
            0,
            *value,
            gt_word(word),
            Default::default(),
        ),
        FilterOp::String {
            ptr,
            len,
            op,
            literal,
        } => {
            let cmp = match op {
                StrOp::Eq => C::GT_CMP_EQ,
                StrOp::Ne => C::GT_CMP_NE,
                StrOp::Prefix => C::GT_CMP_PREFIX,
            };
            (
                K::GT_FILTER_STR,
                cmp,
                *literal,
                0,
                gt_word(ptr),
                gt_word(len),
            )
        }
        FilterOp::And => (
            K::GT_FILTER_AND,
            C::GT_CMP_EQ,
            0,
            0,
            Default::default(),
            Default::default(),
        ),
        FilterOp::Or => (
            K::GT_FILTER_OR,
            C::GT_CMP_EQ,
            0,
            0,
            Default::default(),
            Default::default(),
        ),
        FilterOp::Not => (
            K::GT_FILTER_NOT,
            C::GT_CMP_EQ,
            0,
            0,
            Default::default(),
            Default::default(),
        ),
        FilterOp::Never => (
            K::GT_FILTER_NEVER,
            C::GT_CMP_EQ,
            0,
            0,
            Default::default(),
            Default::default(),
        ),
    };
    types::gt_filter_op {
        kind: kind.0,
        cmp: cmp.0,
        literal,
        pad: 0,
        value,
        a,
        b,
    }
}

fn gt_word(word: &Word) -> types::gt_word {
    let (base, reg) = match word.base {
        Base::Reg(reg) => (types::gt_word_base::GT_WORD_REG, reg),
        Base::Sp => (types::gt_word_base::GT_WORD_SP, 0),
    };
    let mut off = [0i64; MAX_HOPS + 1];
    off[..word.hops.len()].copy_from_slice(&word.hops);
    if let Some(read) = word.read {
        off[word.hops.len()] = read;
    }
    types::gt_word {
        base: base.0 as u8,
        reg,
        at_entry: u8::from(word.at_entry),
        hops: word.hops.len() as u8,
        has_read: u8::from(word.read.is_some()),
        size: word.size,
        is_signed: u8::from(word.signed),
        pad: 0,
        off,
    }
}

/// The bytes of a generated BPF type, as a map update wants them.
pub(super) fn bytes_of<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: only used with the skeleton's repr(C) types (gt_recipe, gt_op, gt_error_result, the gt_filter ones), whose fields
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
        assert_eq!(
            types::gt_group_limits::GT_GROUP_STR_MAX.0 as usize,
            gotrace_plan::filter::MAX_KEY_STRING
        );
    }
}
