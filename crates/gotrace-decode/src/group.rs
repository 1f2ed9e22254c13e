//! `--by` (`gotrace stats`): the kernel's group keys → what they stand for: a Go value, an
//! interface's dynamic type named from the runtime type descriptors, or a call stack.

use crate::stack::{Stack, Stacks};
use crate::value::{Bytes, Value};
use gotrace_plan::filter::{GroupBy, GroupKey};
use gotrace_plan::stats::{KeyStatus, RawGroupKey};
use gotrace_plan::ProbePlan;
use std::collections::HashMap;

/// What a group's key stands for.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupValue {
    /// An integer, bool or string (a string longer than the key's bytes is cut and says so).
    Value(Value),
    /// An interface's dynamic type; `nil` for a nil interface.
    Type(String),
    Stack(Stack),
    /// No value: why.
    NotRead(&'static str),
}

/// Names the keys of one session's groups.
pub struct GroupNamer<'b> {
    by: &'b GroupBy,
    type_names: &'b HashMap<u64, String>,
    stacks: Option<&'b Stacks<'b>>,
    /// By plan index: the probe of an inlined copy sits inside its caller's frame.
    inlined: Vec<bool>,
}

impl<'b> GroupNamer<'b> {
    /// `type_names`: runtime type descriptors' names by link-time address; `stacks`: for
    /// `--by stack`.
    pub fn new(
        plan: &ProbePlan,
        by: &'b GroupBy,
        type_names: &'b HashMap<u64, String>,
        stacks: Option<&'b Stacks<'b>>,
    ) -> Self {
        GroupNamer {
            by,
            type_names,
            stacks,
            inlined: plan
                .functions
                .iter()
                .map(|f| f.inlined_into.is_some())
                .collect(),
        }
    }

    pub fn name(&self, key: &RawGroupKey) -> GroupValue {
        let index = key.function as usize;
        let Some(spec) = self.by.functions.get(index) else {
            return GroupValue::NotRead("a function gotrace did not plan");
        };
        match (key.status, &spec.key) {
            (_, GroupKey::Unknown) => {
                GroupValue::NotRead("an inlined copy: its arguments are unknown without DWARF")
            }
            (KeyStatus::Nil, GroupKey::Type(_)) => GroupValue::Type("nil".to_owned()),
            (KeyStatus::Nil, _) => GroupValue::NotRead("a nil pointer on the way"),
            (KeyStatus::Unreadable, _) => GroupValue::NotRead("memory the probe could not read"),
            (KeyStatus::NoResult, _) => GroupValue::NotRead("the call did not return a result"),
            (KeyStatus::Busy, _) => {
                GroupValue::NotRead("the CPU's scratch space was in use: stack not walked")
            }
            (KeyStatus::Read, GroupKey::Word { word, boolean }) => {
                GroupValue::Value(match (*boolean, word.signed) {
                    (true, _) => Value::Bool(key.value != 0),
                    (false, true) => Value::Int(key.value as i64),
                    (false, false) => Value::Uint(key.value),
                })
            }
            (KeyStatus::Read, GroupKey::String { .. }) => GroupValue::Value(Value::String(Bytes {
                bytes: key.bytes.clone(),
                missing: key.value.saturating_sub(key.bytes.len() as u64),
                error: None,
            })),
            (KeyStatus::Read, GroupKey::Type(_)) => GroupValue::Type(
                self.type_names
                    .get(&key.value)
                    .cloned()
                    .unwrap_or_else(|| format!("type@{:#x}", key.value)),
            ),
            (KeyStatus::Read, GroupKey::Stack) => match (&key.stack, self.stacks) {
                (Some(raw), Some(stacks)) => {
                    let inlined = self.inlined.get(index).copied().unwrap_or(false);
                    GroupValue::Stack(stacks.symbolize(Some(raw), 0, inlined))
                }
                (None, _) => GroupValue::NotRead("the kernel's table of stacks was full"),
                (_, None) => GroupValue::NotRead("stacks are not named in this session"),
            },
        }
    }
}
