//! What decoding produces: Go values, and why a part of one is not shown.

/// A decoded Go value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Complex(f64, f64),
    String(Bytes),
    Slice {
        type_name: String,
        ptr: u64,
        len: u64,
        cap: u64,
        /// The elements captured (the first ones), or why there are none.
        elems: Result<Vec<Value>, Missing>,
    },
    Array {
        type_name: String,
        elems: Vec<Value>,
    },
    Struct {
        type_name: String,
        fields: Vec<(String, Value)>,
    },
    Pointer {
        type_name: String,
        addr: u64,
        /// `None` for nil.
        target: Option<Result<Box<Value>, Missing>>,
    },
    Interface {
        /// `None` for a nil interface.
        dynamic: Option<(String, Result<Box<Value>, Missing>)>,
    },
    Map {
        type_name: String,
        addr: u64,
        len: Result<u64, Missing>,
        entries: Vec<(Value, Value)>,
        /// Entries the probe meant to read but could not (beyond those cut to a limit).
        entries_missing: Option<Missing>,
    },
    /// chan, func, unsafe.Pointer: an address, 0 for nil.
    Address(u64),
    Unavailable(Missing),
    /// A word of an argument known only from the traceback metadata (no debug information):
    /// its offset in the argument frame, its size in bytes, and its bits — or why they were
    /// not read.
    Word {
        offset: u64,
        size: u8,
        bits: Result<u64, Missing>,
    },
    /// `{…}`: the words of an aggregate argument (or part) known only from the traceback
    /// metadata.
    Words(Vec<Value>),
    /// `...`: arguments or parts the traceback metadata leaves out.
    Elided,
}

/// A string's bytes, or a prefix of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Bytes {
    pub bytes: Vec<u8>,
    /// Bytes of the real value not captured (cut to a limit).
    pub missing: u64,
    /// Why nothing was captured, when nothing was.
    pub error: Option<Missing>,
}

/// Why a value (or part of one) is not shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Float registers are not part of the registers a uprobe sees.
    FloatRegister,
    /// Behind more pointers, interfaces or maps than `--depth` follows.
    Depth,
    /// The probe's read budget ran out first: ops per site, bytes per event, or a second
    /// interface inside an interface's value.
    Budget,
    /// The pointer is not nil but its memory could not be read (unmapped, freed).
    Unreadable,
    /// The binary's DWARF describes no map layout gotrace knows.
    MapLayout,
    /// The memory read at entry was dropped: the ring buffer was full.
    Lost,
    /// The binary has no DWARF type for the dynamic type.
    UnknownType,
    /// An inlined call's argument DWARF gives no location for at the probe.
    NoLocation,
    /// An inlined call's argument in a register the probe does not capture.
    UncapturedRegister,
    /// An inlined call's argument placed by a DWARF expression gotrace does not evaluate.
    LocationExpression,
    /// An untyped word of a function without a stack-growth path, which alone shows the
    /// registers its arguments arrive in.
    NoStackCheck,
    /// An untyped word whose register its function's stack-growth path does not prove.
    NotProven,
    /// A part the traceback metadata cannot describe (its offset does not fit).
    NotDescribed,
}

impl Missing {
    /// Why, in a sentence (JSON `unavailable`).
    pub fn reason(self) -> &'static str {
        match self {
            Missing::FloatRegister => "passed in a float register, which uprobes cannot read",
            Missing::Depth => "not read: beyond --depth",
            Missing::Budget => {
                "not read: the probe's read budget (ops per site, bytes per event) was used up by the values before it"
            }
            Missing::Unreadable => "not read: unreadable memory (bad or freed pointer)",
            Missing::MapLayout => "not read: this binary's DWARF describes no map layout gotrace knows",
            Missing::Lost => "not read: the memory read at entry was lost (ring buffer full)",
            Missing::UnknownType => "not read: dynamic type not described in DWARF",
            Missing::NoLocation => {
                "not read: DWARF gives no location for it at this inlined call (optimized away or a constant)"
            }
            Missing::UncapturedRegister => {
                "not read: at this inlined call it is in a register gotrace does not capture (RDX, RBP, R12-R15)"
            }
            Missing::LocationExpression => {
                "not read: DWARF places it at this inlined call in a way gotrace does not evaluate"
            }
            Missing::NoStackCheck => {
                "not read: without debug information, the register of an argument of a function without a stack check (NOSPLIT) is not known"
            }
            Missing::NotProven => {
                "not read: without debug information, its register is not proven by the function's stack-growth code"
            }
            Missing::NotDescribed => "not read: the traceback metadata does not describe it",
        }
    }

    /// Why, in a word or two (`<not read: …>` in text, `{"not_read": …}` in JSON).
    pub fn short(self) -> &'static str {
        match self {
            Missing::FloatRegister => "float register",
            Missing::Depth => "beyond --depth",
            Missing::Budget => "read budget used up",
            Missing::Unreadable => "unreadable memory",
            Missing::MapLayout => "map layout unknown",
            Missing::Lost => "entry memory lost",
            Missing::UnknownType => "type not in DWARF",
            Missing::NoLocation => "no location",
            Missing::UncapturedRegister => "register not captured",
            Missing::LocationExpression => "location not understood",
            Missing::NoStackCheck => "no debug information, no stack check",
            Missing::NotProven => "no debug information, register not proven",
            Missing::NotDescribed => "not described",
        }
    }
}

impl Value {
    /// Why this value, or the first part of it that is, cannot be shown.
    pub fn unavailable_part(&self) -> Option<Missing> {
        match self {
            Value::Unavailable(missing)
            | Value::Slice {
                elems: Err(missing),
                ..
            }
            | Value::Pointer {
                target: Some(Err(missing)),
                ..
            }
            | Value::Interface {
                dynamic: Some((_, Err(missing))),
            }
            | Value::Map {
                len: Err(missing), ..
            } => Some(*missing),
            Value::String(s) => s.error,
            Value::Array { elems, .. }
            | Value::Slice {
                elems: Ok(elems), ..
            } => elems.iter().find_map(Value::unavailable_part),
            Value::Struct { fields, .. } => fields.iter().find_map(|(_, v)| v.unavailable_part()),
            Value::Pointer {
                target: Some(Ok(v)),
                ..
            }
            | Value::Interface {
                dynamic: Some((_, Ok(v))),
            } => v.unavailable_part(),
            Value::Word { bits: Err(m), .. } => Some(*m),
            Value::Words(words) => words.iter().find_map(Value::unavailable_part),
            Value::Map {
                entries,
                entries_missing,
                ..
            } => entries_missing.or_else(|| {
                entries
                    .iter()
                    .find_map(|(k, v)| k.unavailable_part().or_else(|| v.unavailable_part()))
            }),
            Value::Bool(_)
            | Value::Int(_)
            | Value::Uint(_)
            | Value::Float(_)
            | Value::Complex(..)
            | Value::Pointer { target: None, .. }
            | Value::Interface { dynamic: None }
            | Value::Word { bits: Ok(_), .. }
            | Value::Elided
            | Value::Address(_) => None,
        }
    }

    /// Whether some part of it was not read (as opposed to floats in registers and inlined
    /// calls' arguments DWARF does not locate, which cannot be).
    pub fn has_unread_part(&self) -> bool {
        self.unavailable_part().is_some_and(|m| {
            !matches!(
                m,
                Missing::FloatRegister
                    | Missing::NoLocation
                    | Missing::UncapturedRegister
                    | Missing::LocationExpression
                    | Missing::NoStackCheck
                    | Missing::NotProven
                    | Missing::NotDescribed
            )
        })
    }

    /// Whether anything inside was cut to a capture limit (string bytes, elements, entries).
    pub fn is_truncated(&self) -> bool {
        match self {
            Value::String(s) => s.error.is_none() && s.missing > 0,
            Value::Slice {
                len,
                elems: Ok(elems),
                ..
            } => elems.len() as u64 != *len || elems.iter().any(Value::is_truncated),
            Value::Array { elems, .. } => elems.iter().any(Value::is_truncated),
            Value::Struct { fields, .. } => fields.iter().any(|(_, v)| v.is_truncated()),
            Value::Pointer {
                target: Some(Ok(v)),
                ..
            } => v.is_truncated(),
            Value::Interface {
                dynamic: Some((_, Ok(v))),
            } => v.is_truncated(),
            Value::Map {
                len: Ok(len),
                entries,
                entries_missing,
                ..
            } => {
                // Entries not read are not cut: they are marked not read instead.
                (entries_missing.is_none() && entries.len() as u64 != *len)
                    || entries
                        .iter()
                        .any(|(k, v)| k.is_truncated() || v.is_truncated())
            }
            _ => false,
        }
    }
}
