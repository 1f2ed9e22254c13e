//! Inlined copies of a traced function: an entry-like probe at each place the compiler
//! inlined its body, with the arguments found where DWARF puts them there.

use crate::recipe::Compiler;
use crate::{
    located, refusal, site_refusal, PlanError, PlannedFunction, PlannedSignature, PlannedValue,
    Recipe, Refusal, SignatureSource, Site, SiteKind, Unlocated,
};
use gotrace_binary::abi::{AbiReg, Location, Piece};
use gotrace_binary::dwarf::{DwarfLocation, DwarfPlace, InlinedParam};
use gotrace_binary::inline::InlinedSite;
use gotrace_binary::sites::ProbeSites;
use gotrace_binary::types::TypeTable;
use gotrace_binary::{BinaryError, GoBinary, VirtAddr};

/// Plans an entry-like probe at each place `name` was inlined, each its own planned function
/// (its arguments are somewhere else at every site). A site the binary cannot prove, or whose
/// caller or instruction cannot bear a probe, is left out with a warning; a name with no code
/// of its own and no site left is an error.
pub(crate) fn plan_inlined<'t>(
    binary: &GoBinary,
    name: &str,
    compiler: &dyn Fn() -> Option<Compiler<'t>>,
    functions: &mut Vec<PlannedFunction>,
    sites: &mut Vec<Site>,
    warnings: &mut Vec<String>,
    refused: &mut Vec<(String, Refusal)>,
) -> Result<(), PlanError> {
    let Some(usable) = usable_sites(binary, name, warnings, refused)? else {
        return Ok(());
    };
    let addrs: Vec<VirtAddr> = usable.iter().map(|s| s.addr).collect();
    let params = binary.inlined_params(name, &addrs).unwrap_or_else(|e| {
        warnings.push(format!(
            "cannot read the DWARF of {name}'s inlined copies ({e}): their arguments are shown as ?"
        ));
        vec![None; addrs.len()]
    });
    let types = binary.dwarf().ok().flatten().map(|d| d.types());
    for (site, params) in usable.into_iter().zip(params) {
        let signature = params.map(|params| inlined_signature(params, types, site.sp_delta));
        let entry_recipe = match (&signature, compiler()) {
            (Some(sig), Some(c)) => c.site(&located(&sig.params)),
            _ => Recipe::default(),
        };
        sites.push(Site {
            function: functions.len() as u32,
            kind: SiteKind::Inlined,
            addr: site.addr,
            file_offset: binary.file_offset(site.addr)?,
            skip_if: None,
            may_restart: false,
        });
        functions.push(PlannedFunction {
            name: name.to_owned(),
            entry: site.addr,
            source: match signature {
                Some(_) => SignatureSource::Dwarf,
                None => SignatureSource::None,
            },
            signature,
            untyped: None,
            entry_recipe,
            return_recipe: Recipe::default(),
            inlined_into: Some(site.caller),
        });
    }
    Ok(())
}

/// The places `name` was inlined that can bear a probe; the others are left out with a
/// warning, or refused. `None` when where it was inlined cannot be read but it has code of its
/// own to trace.
fn usable_sites(
    binary: &GoBinary,
    name: &str,
    warnings: &mut Vec<String>,
    refused: &mut Vec<(String, Refusal)>,
) -> Result<Option<Vec<InlinedSite>>, PlanError> {
    let has_code = binary.function(name).is_ok();
    let found = match binary.inlined_sites(name) {
        Ok(found) => found,
        // A table gotrace cannot read costs the inlined copies, not the function's own code.
        Err(e) if has_code => {
            warnings.push(format!(
                "cannot find where {name} was inlined ({e}): only its own code is traced"
            ));
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let mut usable = Vec::new();
    for found in found {
        let site = match found {
            Ok(site) => site,
            Err(e) => {
                warnings.push(format!("skipping an inlined copy of {name}: {e}"));
                continue;
            }
        };
        match inlined_refusal(binary, &site)? {
            Some(Refusal::Instruction { addr, why, .. }) => refused.push((
                format!("{name} (inlined into {})", site.caller),
                Refusal::Instruction {
                    site: SiteKind::Inlined,
                    addr,
                    why,
                },
            )),
            Some(r) => refused.push((format!("{name} (inlined into {})", site.caller), r)),
            None => usable.push(site),
        }
    }
    if usable.is_empty() && !has_code {
        if let Some((_, refusal)) = refused.iter().rev().find(|(n, _)| n.starts_with(name)) {
            return Err(PlanError::Refused {
                name: name.to_owned(),
                refusal: refusal.clone(),
            });
        }
        return Err(BinaryError::Inlined {
            name: name.to_owned(),
        }
        .into());
    }
    Ok(Some(usable))
}

/// An inlined copy's arguments, each where the probe finds it (see [`inlined_location`]) or
/// with why it cannot.
fn inlined_signature(
    params: Vec<InlinedParam>,
    types: Option<&TypeTable>,
    sp_delta: Option<u64>,
) -> PlannedSignature {
    PlannedSignature {
        params: params
            .into_iter()
            .map(|p| {
                let size = types.map_or(0, |t| t.get(p.ty).size);
                let (location, unavailable) = match inlined_location(&p.location, size, sp_delta) {
                    Ok(location) => (location, None),
                    Err(why) => (Location::Empty, Some(why)),
                };
                PlannedValue {
                    name: p.name,
                    ty: p.ty,
                    location,
                    unavailable,
                }
            })
            .collect(),
        results: Vec::new(),
    }
}

/// Whether an inlined copy's site must not be probed: its caller must not be (see
/// [`refusal`]), or its instruction cannot bear a probe.
pub fn inlined_refusal(
    binary: &GoBinary,
    site: &InlinedSite,
) -> Result<Option<Refusal>, BinaryError> {
    let caller = binary.function(&site.caller)?;
    let sites = ProbeSites {
        entry: gotrace_binary::EntrySite {
            addr: site.addr,
            skip_if: None,
            may_restart: false,
        },
        returns: Vec::new(),
        deferreturns: Vec::new(),
    };
    Ok(refusal(binary, caller).or_else(|| site_refusal(binary, &sites, true)))
}

/// Where the probe finds a value DWARF places at `location` (amd64): the integer registers the
/// BPF side captures, float registers (shown as unknown), or the caller's frame — the
/// canonical frame address is SP at the caller's entry plus 8 (the return address), and
/// `sp_delta` is how far SP is below that entry value at the probe.
fn inlined_location(
    location: &DwarfLocation,
    size: u64,
    sp_delta: Option<u64>,
) -> Result<Location, Unlocated> {
    let pieces = match location {
        DwarfLocation::Nowhere => return Err(Unlocated::Nowhere),
        DwarfLocation::Unsupported(_) => return Err(Unlocated::Expression),
        DwarfLocation::Pieces(pieces) => pieces,
    };
    // (value offset, piece size, place); a size of 0 is the whole value.
    let mut parts = Vec::with_capacity(pieces.len());
    let mut at = 0;
    for &(piece_size, place) in pieces {
        let piece_size = if piece_size == 0 { size } else { piece_size };
        parts.push((at, piece_size, place.ok_or(Unlocated::Nowhere)?));
        at += piece_size;
    }
    if parts
        .iter()
        .all(|(_, _, p)| matches!(p, DwarfPlace::Register(_)))
    {
        let mut out = Vec::with_capacity(parts.len());
        for (value_offset, piece_size, place) in parts {
            let DwarfPlace::Register(r) = place else {
                return Err(Unlocated::Expression);
            };
            if piece_size > 8 {
                return Err(Unlocated::Expression);
            }
            let reg = match r {
                0 => AbiReg::Int(0),
                3 => AbiReg::Int(1),
                2 => AbiReg::Int(2),
                5 => AbiReg::Int(3),
                4 => AbiReg::Int(4),
                8..=11 => AbiReg::Int(r as u8 - 3),
                17..=32 => AbiReg::Float(r as u8 - 17),
                _ => return Err(Unlocated::Register),
            };
            out.push(Piece {
                reg,
                value_offset,
                size: piece_size,
            });
        }
        return Ok(Location::Registers(out));
    }
    // In memory: one run of the frame, each piece where the one before it ends.
    let cfa_above_sp = sp_delta.ok_or(Unlocated::Expression)? + 8;
    let mut start = None;
    for (value_offset, _, place) in parts {
        let DwarfPlace::Cfa(off) = place else {
            return Err(Unlocated::Expression);
        };
        let first = off - value_offset as i64;
        match start {
            None => start = Some(first),
            Some(s) if s == first => {}
            Some(_) => return Err(Unlocated::Expression),
        }
    }
    let sp_offset = cfa_above_sp as i64 + start.ok_or(Unlocated::Nowhere)?;
    u64::try_from(sp_offset)
        .map(|sp_offset| Location::Stack { sp_offset })
        .map_err(|_| Unlocated::Expression)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(place: DwarfPlace) -> DwarfLocation {
        DwarfLocation::Pieces(vec![(0, Some(place))])
    }

    #[test]
    fn inlined_arguments_in_captured_registers() {
        // DWARF 3 is RBX, the second register of Go's sequence; 9 is R9, the seventh.
        let got = inlined_location(&whole(DwarfPlace::Register(3)), 8, None);
        let piece = |reg, value_offset| Piece {
            reg,
            value_offset,
            size: 8,
        };
        assert_eq!(got, Ok(Location::Registers(vec![piece(AbiReg::Int(1), 0)])));
        // A string split over RAX (pointer) and R9 (length).
        let split = DwarfLocation::Pieces(vec![
            (8, Some(DwarfPlace::Register(0))),
            (8, Some(DwarfPlace::Register(9))),
        ]);
        assert_eq!(
            inlined_location(&split, 16, None),
            Ok(Location::Registers(vec![
                piece(AbiReg::Int(0), 0),
                piece(AbiReg::Int(6), 8)
            ]))
        );
    }

    #[test]
    fn inlined_arguments_the_probe_cannot_read() {
        // RDX (1) and R12 (12) are not among the captured registers.
        for r in [1, 6, 12, 15] {
            let got = inlined_location(&whole(DwarfPlace::Register(r)), 8, None);
            assert_eq!(got, Err(Unlocated::Register), "DWARF register {r}");
        }
        assert_eq!(
            inlined_location(&DwarfLocation::Nowhere, 8, None),
            Err(Unlocated::Nowhere)
        );
        // Half a string optimized away.
        let half = DwarfLocation::Pieces(vec![(8, Some(DwarfPlace::Register(0))), (8, None)]);
        assert_eq!(inlined_location(&half, 16, None), Err(Unlocated::Nowhere));
        let mixed = DwarfLocation::Pieces(vec![
            (8, Some(DwarfPlace::Register(0))),
            (8, Some(DwarfPlace::Cfa(-16))),
        ]);
        assert_eq!(
            inlined_location(&mixed, 16, None),
            Err(Unlocated::Expression)
        );
        let other = DwarfLocation::Unsupported("DW_OP_deref".into());
        assert_eq!(
            inlined_location(&other, 8, None),
            Err(Unlocated::Expression)
        );
    }

    #[test]
    fn inlined_arguments_in_the_frame_are_found_from_sp() {
        // 0x48 below the caller's entry SP, a slot 24 bytes below the CFA (entry SP + 8):
        // SP + 0x48 + 8 - 24.
        let slot = whole(DwarfPlace::Cfa(-24));
        assert_eq!(
            inlined_location(&slot, 8, Some(0x48)),
            Ok(Location::Stack { sp_offset: 0x38 })
        );
        // Unknown frame size: not guessed.
        assert_eq!(inlined_location(&slot, 8, None), Err(Unlocated::Expression));
        // A string in two adjacent slots is one run; two apart are not.
        let run = DwarfLocation::Pieces(vec![
            (8, Some(DwarfPlace::Cfa(-32))),
            (8, Some(DwarfPlace::Cfa(-24))),
        ]);
        assert_eq!(
            inlined_location(&run, 16, Some(0x48)),
            Ok(Location::Stack { sp_offset: 0x30 })
        );
        let apart = DwarfLocation::Pieces(vec![
            (8, Some(DwarfPlace::Cfa(-40))),
            (8, Some(DwarfPlace::Cfa(-24))),
        ]);
        assert_eq!(
            inlined_location(&apart, 16, Some(0x48)),
            Err(Unlocated::Expression)
        );
    }
}
