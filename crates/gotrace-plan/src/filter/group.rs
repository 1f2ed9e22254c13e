//! `--by` (`gotrace stats`): what a function's calls are grouped by — the call's stack, or an
//! argument or result (or a field of one) found exactly as `--where` finds it.

use super::{is_result, parse, Expr, FilterError, FunctionCompiler, Path, Word};
use crate::{PlannedFunction, ProbePlan};
use gotrace_binary::types::{TypeKind, TypeTable};

/// Bytes of a string key kept (`GT_GROUP_STR_MAX` in gotrace.h); a longer string is cut.
pub const MAX_KEY_STRING: usize = 16;
/// Where an itab (`runtime.itab`/`abi.ITab`: inter, then _type) holds the dynamic type.
const ITAB_TYPE: u64 = 8;

/// How one function's key is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupKey {
    /// An integer (`boolean`: a bool): its word.
    Word { word: Word, boolean: bool },
    /// A string: its first [`MAX_KEY_STRING`] bytes and its length.
    String { ptr: Word, len: Word },
    /// An interface's dynamic type: `word` reads its type descriptor's address (nil: none).
    Type(Word),
    /// The call's Go stack at entry.
    Stack,
    /// Nothing can be read: an inlined copy whose arguments are unknown (no DWARF).
    Unknown,
}

/// One function's key: read at its return (a result) or its entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionGroup {
    pub at_return: bool,
    pub key: GroupKey,
}

/// `--by EXPR` compiled for every function of a plan, in plan order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// EXPR as given (`stack`, `req.Method`).
    pub text: String,
    pub functions: Vec<FunctionGroup>,
}

impl GroupBy {
    pub fn is_stack(&self) -> bool {
        self.functions
            .first()
            .is_some_and(|f| f.key == GroupKey::Stack)
    }
}

/// Compiles `--by text` for every function of `plan`: `stack`, or a path each function has.
pub fn compile_group(
    text: &str,
    plan: &ProbePlan,
    types: Option<&TypeTable>,
) -> Result<GroupBy, FilterError> {
    let by = |e: FilterError| e.of_option("--by");
    if text.trim() == "stack" {
        let stack = FunctionGroup {
            at_return: false,
            key: GroupKey::Stack,
        };
        return Ok(GroupBy {
            text: "stack".to_owned(),
            functions: vec![stack; plan.functions.len()],
        });
    }
    let path = match parse(text).map_err(by)? {
        Expr::Truth(path) => path,
        _ => {
            return Err(by(FilterError::at(
                text,
                0,
                "expected `stack`, or an argument or result (`n`, `req.Method`, `err`)",
            )))
        }
    };
    let functions = plan
        .functions
        .iter()
        .map(|function| function_key(text, &path, function, plan.entry_only, types).map_err(by))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GroupBy {
        text: text.trim().to_owned(),
        functions,
    })
}

fn function_key(
    text: &str,
    path: &Path,
    function: &PlannedFunction,
    entry_only: bool,
    types: Option<&TypeTable>,
) -> Result<FunctionGroup, FilterError> {
    if super::untestable_copy(function) {
        return Ok(FunctionGroup {
            at_return: false,
            key: GroupKey::Unknown,
        });
    }
    let at_return = is_result(path, function);
    let mut literals = Vec::new();
    let compiler = FunctionCompiler::new(text, function, types, &mut literals, at_return);
    if at_return && entry_only {
        return Err(compiler.error(
            path.at,
            "is counted without returns (--no-return): its results cannot be read",
        ));
    }
    Ok(FunctionGroup {
        at_return,
        key: compiler.group_key(path)?,
    })
}

impl FunctionCompiler<'_> {
    /// How the value at `path` is read as a key: integers, bools, strings and interfaces.
    fn group_key(&self, path: &Path) -> Result<GroupKey, FilterError> {
        let (place, ty) = self.resolve(path)?;
        let types = self.types(path.at)?;
        let go = types.get(ty);
        let at = path.at;
        Ok(match &go.kind {
            TypeKind::Int { signed } => GroupKey::Word {
                word: self.word(&place, 0, go.size as u8, *signed, at)?,
                boolean: false,
            },
            TypeKind::Bool => GroupKey::Word {
                word: self.word(&place, 0, 1, false, at)?,
                boolean: true,
            },
            TypeKind::String => GroupKey::String {
                ptr: self.word(&place, 0, 8, false, at)?,
                len: self.word(&place, 8, 8, false, at)?,
            },
            TypeKind::Interface { empty: true } => {
                GroupKey::Type(self.word(&place, 0, 8, false, at)?)
            }
            TypeKind::Interface { empty: false } => {
                let itab = self.deref(place, at)?;
                GroupKey::Type(self.word(&itab, ITAB_TYPE, 8, false, at)?)
            }
            _ => {
                return Err(self.error(
                    at,
                    format!(
                        "cannot group by {} ({}): integers, bools, strings and interfaces only",
                        path.parts.join("."),
                        go.name
                    ),
                ))
            }
        })
    }
}
