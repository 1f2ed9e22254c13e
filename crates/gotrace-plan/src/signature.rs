//! A function's signature with each value's ABI location, checked against the argument frame
//! the compiler built — from DWARF, or from the runtime type descriptors of a method — and
//! where each signature came from.

use crate::{PlannedSignature, PlannedValue};
use gotrace_binary::abi::{self, Location};
use gotrace_binary::arginfo::UntypedArgs;
use gotrace_binary::dwarf::DwarfInfo;
use gotrace_binary::rtype::RuntimeMethods;
use gotrace_binary::types::{Signature, TypeTable};
use gotrace_binary::{Function, GoBinary};
use serde::Serialize;

/// Where a traced function's signature came from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureSource {
    /// DWARF, the binary's own or its debug file's ([`crate::ProbePlan::debug_source`]).
    Dwarf,
    /// The runtime type descriptors of a method: real types, positional names.
    RuntimeTypes,
    /// The traceback metadata (`FUNCDATA_ArgInfo`): argument words, untyped; results unknown.
    Traceback,
    /// Nothing: arguments and results are `?`.
    None,
}

impl SignatureSource {
    pub fn label(self) -> &'static str {
        match self {
            SignatureSource::Dwarf => "DWARF",
            SignatureSource::RuntimeTypes => "runtime types",
            SignatureSource::Traceback => "traceback metadata (untyped)",
            SignatureSource::None => "none",
        }
    }
}

/// The signature describes another argument frame than the compiler built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureMismatch {
    pub source: SignatureSource,
    pub width: u64,
    pub frame: u64,
}

impl std::fmt::Display for SignatureMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its {} signature needs a {}-byte argument frame but the function's is {} bytes",
            self.source.label(),
            self.width,
            self.frame
        )?;
        if self.source == SignatureSource::Dwarf {
            f.write_str(
                " (Go before 1.22 leaves blank `_` parameters and wrapper receivers out of DWARF)",
            )?;
        }
        Ok(())
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
    Some(located(
        binary,
        function,
        signature,
        dwarf.types(),
        SignatureSource::Dwarf,
    ))
}

/// A method's signature from the runtime type descriptors (`methods.types` are its types),
/// located and checked as DWARF's are. `None` when no method table lists the function.
pub fn runtime_signature(
    binary: &GoBinary,
    methods: &RuntimeMethods,
    function: &Function,
) -> Option<Result<PlannedSignature, SignatureMismatch>> {
    let method = methods.signatures.get(&function.entry)?;
    Some(located(
        binary,
        function,
        &method.signature,
        &methods.types,
        SignatureSource::RuntimeTypes,
    ))
}

fn located(
    binary: &GoBinary,
    function: &Function,
    signature: &Signature,
    types: &TypeTable,
    source: SignatureSource,
) -> Result<PlannedSignature, SignatureMismatch> {
    let assignment = abi::assign(binary.arch(), signature, types);
    if let Some(frame) = binary.arg_size(function) {
        if frame != assignment.arg_width {
            return Err(SignatureMismatch {
                source,
                width: assignment.arg_width,
                frame,
            });
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
    Ok(PlannedSignature {
        params: zip(&signature.params, assignment.params),
        results: zip(&signature.results, assignment.results),
    })
}

/// Where signatures come from: DWARF, or without it the types the runtime keeps for methods.
/// What is missing is said in `warnings`.
pub(crate) fn signature_sources<'b>(
    binary: &'b GoBinary,
    warnings: &mut Vec<String>,
) -> (Option<&'b DwarfInfo>, Option<&'b RuntimeMethods>) {
    let dwarf = match binary.dwarf() {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            warnings.push(format!(
                "{} has no DWARF (built with -ldflags=-w or stripped): methods are decoded with the types the runtime keeps for them, other functions' arguments as untyped words where the traceback metadata places them, the rest is shown as ?",
                binary.path().display()
            ));
            None
        }
        Err(e) => {
            warnings.push(format!(
                "cannot read DWARF ({e}): methods are decoded from the runtime types, other functions' arguments as untyped words, the rest is shown as ?"
            ));
            None
        }
    };
    // Without DWARF, methods' signatures come from the runtime type descriptors.
    let methods = match dwarf {
        Some(_) => None,
        None => match binary.runtime_methods() {
            Ok(m) => Some(m),
            Err(e) => {
                warnings.push(format!("no method signatures from the runtime types: {e}"));
                None
            }
        },
    };
    (dwarf, methods)
}

/// A traced function's checked signature and where it came from (DWARF, else a method's
/// runtime types), or `None` with a warning saying why it is not used.
pub(crate) fn function_signature(
    binary: &GoBinary,
    dwarf: Option<&DwarfInfo>,
    methods: Option<&RuntimeMethods>,
    function: &Function,
    warnings: &mut Vec<String>,
) -> (Option<PlannedSignature>, SignatureSource) {
    let found = match (dwarf, methods) {
        (Some(d), _) => checked_signature(binary, d, function).map(|s| (s, SignatureSource::Dwarf)),
        (None, Some(m)) => {
            runtime_signature(binary, m, function).map(|s| (s, SignatureSource::RuntimeTypes))
        }
        (None, None) => None,
    };
    match found {
        Some((Ok(signature), source)) => (Some(signature), source),
        Some((Err(mismatch), _)) => {
            warnings.push(format!(
                "{}: {mismatch}: it is not used, rather than have values read from the wrong places",
                function.name
            ));
            (None, SignatureSource::None)
        }
        None => {
            if let Some(why) = dwarf.and_then(|d| d.signature_error(function.entry)) {
                warnings.push(format!(
                    "{}: its signature cannot be read ({why}): its arguments and results are shown as ?",
                    function.name
                ));
            }
            (None, SignatureSource::None)
        }
    }
}

/// The argument words of a function without a signature, from its traceback metadata;
/// `None` (with a warning when it could not be read) when there is none.
pub(crate) fn untyped_args(
    binary: &GoBinary,
    function: &Function,
    warnings: &mut Vec<String>,
) -> Option<UntypedArgs> {
    match binary.untyped_args(function) {
        Ok(args) => args,
        Err(e) => {
            warnings.push(format!(
                "{}: its traceback metadata cannot be read ({e}): its arguments are shown as ?",
                function.name
            ));
            None
        }
    }
}
