//! A function's DWARF signature with each value's ABI location, checked against the
//! argument frame the compiler built.

use crate::{PlannedSignature, PlannedValue};
use gotrace_binary::abi::{self, Location};
use gotrace_binary::dwarf::DwarfInfo;
use gotrace_binary::{Function, GoBinary};

/// The DWARF signature describes another argument frame than the compiler built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureMismatch {
    pub dwarf_width: u64,
    pub frame: u64,
}

impl std::fmt::Display for SignatureMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its DWARF signature needs a {}-byte argument frame but the function's is {} bytes (Go before 1.22 leaves blank `_` parameters and wrapper receivers out of DWARF)",
            self.dwarf_width, self.frame
        )
    }
}

/// The function's signature with each value's ABI location, as `trace` reads them (and
/// `funcs -v` shows them). A signature whose argument frame differs from pclntab's would put
/// values in the wrong registers: refused. `None` when DWARF has no signature for it.
pub fn checked_signature(
    binary: &GoBinary,
    dwarf: &DwarfInfo,
    function: &Function,
) -> Option<Result<PlannedSignature, SignatureMismatch>> {
    let signature = dwarf.signature(function.entry)?;
    let assignment = abi::assign(binary.arch(), signature, dwarf.types());
    if let Some(frame) = binary.arg_size(function) {
        if frame != assignment.arg_width {
            return Some(Err(SignatureMismatch {
                dwarf_width: assignment.arg_width,
                frame,
            }));
        }
    }
    let zip = |vars: &[gotrace_binary::types::Variable], locations: Vec<Location>| {
        vars.iter()
            .zip(locations)
            .map(|(v, location)| PlannedValue {
                name: v.name.clone(),
                ty: v.ty,
                location,
                unavailable: None,
            })
            .collect()
    };
    Some(Ok(PlannedSignature {
        params: zip(&signature.params, assignment.params),
        results: zip(&signature.results, assignment.results),
    }))
}
