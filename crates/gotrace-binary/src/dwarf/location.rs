//! Where an inlined call's parameters are at a pc: DWARF location lists, read on first use.

use super::*;

/// A value's place at one pc, from its DWARF location description.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DwarfLocation {
    /// In value order: each piece's size in bytes (0: the whole value) and where it is
    /// (`None`: that part is not available).
    Pieces(Vec<(u64, Option<DwarfPlace>)>),
    /// No location at this pc: the value was optimized away or folded into a constant.
    Nowhere,
    /// An expression gotrace does not evaluate, named.
    Unsupported(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DwarfPlace {
    /// A DWARF register number.
    Register(u16),
    /// This many bytes from the canonical frame address (Go's frame base).
    Cfa(i64),
}

/// A parameter of an inlined call, and where it is at one pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlinedParam {
    pub name: String,
    pub ty: TypeId,
    pub location: DwarfLocation,
}

/// What locating inlined calls reads beyond [`SECTIONS`]: location lists and range lists, in
/// both the DWARF 4 (`.debug_loc`, `.debug_ranges`) and the DWARF 5 form (Go 1.25+).
pub(super) const LOCATION_SECTIONS: [SectionId; 4] = [
    SectionId::DebugLoc,
    SectionId::DebugLocLists,
    SectionId::DebugRanges,
    SectionId::DebugRngLists,
];

impl DwarfInfo {
    /// For each of `pcs`, the parameters of the inlined call of `callee` whose code holds it,
    /// in declaration order, each located at that pc; `None` where DWARF describes no inlined
    /// call of `callee`. Reads only the units holding its inlined calls, with the location
    /// lists (inflated once per binary).
    pub(crate) fn inlined_params(
        &self,
        elf: &ElfImage,
        callee: &str,
        pcs: &[u64],
    ) -> Result<Vec<Option<Vec<InlinedParam>>>, BinaryError> {
        let mut out = vec![None; pcs.len()];
        let Some((origin, params)) = self.inlinable.get(callee) else {
            return Ok(out);
        };
        let Some(calls) = self.inlined_calls.get(origin) else {
            return Ok(out);
        };
        let sections = self.sections(elf)?;
        let dwarf = gimli_view(&sections)?;
        let mut units: HashMap<usize, gimli::Unit<R<'_>>> = HashMap::new();
        for &(base, at) in calls {
            let unit = unit_at(&dwarf, &mut units, base)?;
            let die = &unit
                .entry(UnitOffset(at - base))
                .map_err(|e| at_offset(at, e))?;
            let ranges = pc_ranges(&dwarf, unit, die)?;
            let hits: Vec<usize> = (0..pcs.len())
                .filter(|&i| ranges.iter().any(|&(lo, hi)| lo <= pcs[i] && pcs[i] < hi))
                .collect();
            if hits.is_empty() {
                continue;
            }
            let located = call_param_values(unit, die.offset(), base)?;
            for i in hits {
                let mut found = Vec::with_capacity(params.len());
                for (at, var) in params {
                    let location = match located.iter().find(|(p, _)| p == at) {
                        Some((_, value)) => location_at(&dwarf, unit, *value, pcs[i])?,
                        None => DwarfLocation::Nowhere,
                    };
                    found.push(InlinedParam {
                        name: var.name.clone(),
                        ty: var.ty,
                        location,
                    });
                }
                out[i] = Some(found);
            }
        }
        Ok(out)
    }
}

/// The unit at `base` in `.debug_info`, opened once and kept in `units`.
fn unit_at<'u, 's>(
    dwarf: &gimli::Dwarf<R<'s>>,
    units: &'u mut HashMap<usize, gimli::Unit<R<'s>>>,
    base: usize,
) -> Result<&'u gimli::Unit<R<'s>>, BinaryError> {
    Ok(match units.entry(base) {
        std::collections::hash_map::Entry::Occupied(u) => u.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let header = dwarf
                .debug_info
                .header_from_offset(gimli::DebugInfoOffset(base))
                .map_err(|e| at_offset(base, e))?;
            v.insert(dwarf.unit(header).map_err(|e| at_offset(base, e))?)
        }
    })
}

/// The pc ranges `[begin, end)` of a DIE's code.
fn pc_ranges<'s>(
    dwarf: &gimli::Dwarf<R<'s>>,
    unit: &gimli::Unit<R<'s>>,
    die: &Die<'s>,
) -> Result<Vec<(u64, u64)>, BinaryError> {
    let mut ranges = Vec::new();
    let mut iter = dwarf.die_ranges(unit, die)?;
    while let Some(r) = iter.next()? {
        ranges.push((r.begin, r.end));
    }
    Ok(ranges)
}

/// The location descriptions of the parameters of the inlined call at `call` in the unit at
/// `base`, by the abstract parameter's DIE each refers to.
fn call_param_values<'s>(
    unit: &gimli::Unit<R<'s>>,
    call: UnitOffset,
    base: usize,
) -> Result<Vec<(DieRef, AttributeValue<R<'s>>)>, BinaryError> {
    // The call's own parameters: its direct children that refer to the abstract
    // function's, with their location descriptions.
    let mut located = Vec::new();
    let mut children = unit
        .entries_at_offset(call)
        .map_err(|e| at_offset(base, e))?;
    let mut first = true;
    while let Some(child) = children.next_dfs().map_err(|e| at_offset(base, e))? {
        if std::mem::take(&mut first) {
            continue; // the call itself
        }
        if child.depth() <= 0 {
            break;
        }
        if child.depth() != 1 || child.tag() != dw::DW_TAG_formal_parameter {
            continue;
        }
        let param = match child.attr_value(dw::DW_AT_abstract_origin) {
            Some(AttributeValue::UnitRef(o)) => base + o.0,
            Some(AttributeValue::DebugInfoRef(o)) => o.0,
            _ => continue,
        };
        if let Some(value) = child.attr_value(dw::DW_AT_location) {
            located.push((param, value));
        }
    }
    Ok(located)
}

/// The location description in effect at `pc`: a single expression, or the entry of a location
/// list (`.debug_loc` or `.debug_loclists`) whose range holds `pc`.
pub(super) fn location_at(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    value: AttributeValue<R<'_>>,
    pc: u64,
) -> Result<DwarfLocation, BinaryError> {
    let expression = match value {
        AttributeValue::Exprloc(e) => e,
        other => {
            let Some(mut list) = dwarf.attr_locations(unit, other)? else {
                return Ok(DwarfLocation::Unsupported(
                    "a location that is not an expression or a location list".into(),
                ));
            };
            let mut found = None;
            while let Some(entry) = list.next()? {
                if entry.range.begin <= pc && pc < entry.range.end {
                    found = Some(entry.data);
                    break;
                }
            }
            match found {
                Some(e) => e,
                None => return Ok(DwarfLocation::Nowhere),
            }
        }
    };
    let mut pieces = Vec::new();
    let mut place = None;
    let mut ops = expression.operations(unit.encoding());
    while let Some(op) = ops.next()? {
        match op {
            gimli::Operation::Register { register } => {
                place = Some(DwarfPlace::Register(register.0))
            }
            gimli::Operation::FrameOffset { offset } => place = Some(DwarfPlace::Cfa(offset)),
            gimli::Operation::CallFrameCFA => place = Some(DwarfPlace::Cfa(0)),
            gimli::Operation::PlusConstant { value } => match place {
                Some(DwarfPlace::Cfa(off)) => {
                    place = Some(DwarfPlace::Cfa(off.wrapping_add(value as i64)))
                }
                _ => {
                    return Ok(DwarfLocation::Unsupported(
                        "DW_OP_plus_uconst on a register".into(),
                    ))
                }
            },
            gimli::Operation::Piece {
                size_in_bits,
                bit_offset: None,
            } if size_in_bits % 8 == 0 => pieces.push((size_in_bits / 8, place.take())),
            other => return Ok(DwarfLocation::Unsupported(format!("{other:?}"))),
        }
    }
    match (pieces.is_empty(), place) {
        (true, Some(p)) => Ok(DwarfLocation::Pieces(vec![(0, Some(p))])),
        (true, None) => Ok(DwarfLocation::Nowhere),
        (false, _) => Ok(DwarfLocation::Pieces(pieces)),
    }
}

impl DwarfInfo {
    /// [`SECTIONS`] and [`LOCATION_SECTIONS`], the compressed ones inflated once per binary.
    fn sections<'s>(&'s self, elf: &'s ElfImage) -> Result<Sections<'s>, BinaryError> {
        let located = self
            .location_held
            .get_or_init(|| {
                read_sections(elf, &LOCATION_SECTIONS)
                    .map(hold)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| BinaryError::Dwarf(e.trim_start_matches("DWARF: ").to_owned()))?;
        self.held
            .iter()
            .chain(located)
            .map(|(id, inflated)| match inflated {
                Some(bytes) => Ok((*id, Cow::Borrowed(&bytes[..]))),
                None => Ok((*id, elf.debug_section(id.name())?)),
            })
            .collect()
    }
}
