//! `gotrace stats --by`: the groups the kernel counted, named (Go values, dynamic types, call
//! stacks), merged per shown function and name, the most called shown; `--folded` and
//! `--flamegraph` write the stacks.

use crate::cli::FlameWidth;
use anyhow::{Context, Result};
use gotrace_decode::{GroupNamer, GroupValue, Stack, Value};
use gotrace_output::{ErrorCount, GroupRow, GroupTable, StatsRow};
use gotrace_plan::stats::{FunctionStats, RawGroupKey};
use gotrace_plan::StackEnd;
use std::collections::HashMap;
use std::path::Path;

/// One group of a shown function: its calls under every key that names the same.
#[derive(Clone, Debug, Default)]
pub struct Group {
    pub key: String,
    pub cut: bool,
    pub not_read: Option<&'static str>,
    pub stats: FunctionStats,
}

/// A key as the tables show it.
fn render(value: GroupValue) -> (String, bool, Option<&'static str>) {
    match value {
        GroupValue::Value(v) => {
            let cut = matches!(&v, Value::String(b) if b.missing > 0);
            (gotrace_output::go_syntax(&v), cut, None)
        }
        GroupValue::Type(name) => (name, false, None),
        GroupValue::Stack(stack) => {
            let (folded, cut) = folded(&stack);
            (folded, cut, None)
        }
        GroupValue::NotRead(reason) => ("?".to_owned(), false, Some(reason)),
    }
}

/// `outer;…;inner`; a stack that does not reach the goroutine's first frame starts with a frame
/// saying why (`[stack cut]`).
fn folded(stack: &Stack) -> (String, bool) {
    let names = stack.frames.iter().rev().map(|f| f.function.as_str());
    let head = match stack.end {
        StackEnd::Complete => None,
        StackEnd::Cut => Some("[stack cut]"),
        StackEnd::Unreadable => Some("[stack unreadable]"),
        StackEnd::Broken => Some("[stack broken]"),
        StackEnd::Lost => Some("[stack lost]"),
    };
    let frames: Vec<&str> = head.into_iter().chain(names).collect();
    (frames.join(";"), head.is_some())
}

/// The kernel's groups, named and merged: per shown function (`shown_of[plan index]`), the
/// groups by name.
pub fn merge(
    namer: &GroupNamer<'_>,
    raw: Vec<(RawGroupKey, FunctionStats)>,
    shown_of: &[usize],
    shown: usize,
) -> Vec<Vec<Group>> {
    let mut by_name: Vec<HashMap<String, Group>> = vec![HashMap::new(); shown];
    for (key, stats) in raw {
        let Some(&s) = shown_of.get(key.function as usize) else {
            continue;
        };
        let (name, cut, not_read) = render(namer.name(&key));
        let lookup = match not_read {
            Some(reason) => format!("?{reason}"),
            None => name.clone(),
        };
        let group = by_name[s].entry(lookup).or_insert_with(|| Group {
            key: name,
            cut,
            not_read,
            stats: FunctionStats::default(),
        });
        group.stats.add(&stats);
    }
    by_name
        .into_iter()
        .map(|groups| {
            let mut groups: Vec<Group> = groups.into_values().collect();
            groups.sort_by(|a, b| {
                b.stats
                    .calls()
                    .cmp(&a.stats.calls())
                    .then_with(|| a.key.cmp(&b.key))
            });
            groups
        })
        .collect()
}

/// What a group table needs besides the groups.
pub struct TableContext<'a> {
    pub func: &'a str,
    pub by: &'a str,
    pub errors: ErrorCount,
    pub not_grouped: u64,
    pub top: usize,
    pub elapsed_ns: u64,
    pub interval_ns: u64,
    pub last: bool,
}

/// A shown function's table: its `top` groups, then the rest summed as `other`. `before`: each
/// group's calls at the last table, for calls/s (updated).
pub fn table(
    cx: &TableContext<'_>,
    groups: &[Group],
    before: &mut HashMap<String, u64>,
) -> GroupTable {
    let mut row = |key: &str, stats: &FunctionStats| {
        let calls = before.insert(key.to_owned(), stats.calls()).unwrap_or(0);
        StatsRow::new(
            cx.func,
            stats,
            cx.errors,
            cx.elapsed_ns,
            calls,
            cx.interval_ns,
        )
    };
    let mut rows: Vec<GroupRow> = groups
        .iter()
        .take(cx.top)
        .map(|g| GroupRow {
            key: g.key.clone(),
            cut: g.cut,
            not_read: g.not_read.map(str::to_owned),
            other_groups: None,
            counts: row(&g.key, &g.stats),
        })
        .collect();
    let rest = groups.get(cx.top..).unwrap_or_default();
    if !rest.is_empty() {
        let mut other = FunctionStats::default();
        rest.iter().for_each(|g| other.add(&g.stats));
        rows.push(GroupRow {
            key: "other".to_owned(),
            cut: rest.iter().any(|g| g.cut),
            not_read: None,
            other_groups: Some(rest.len()),
            counts: row("\0other", &other),
        });
    }
    GroupTable {
        func: cx.func.to_owned(),
        by: cx.by.to_owned(),
        groups: groups.len(),
        not_grouped: cx.not_grouped,
        rows,
        last: cx.last,
    }
}

/// Folded stacks, a line per distinct stack (every group, not only the top ones): `outer;…;inner
/// count`. A stack not read is one frame saying so, under the traced function.
pub fn folded_lines(groups: &[Vec<Group>], names: &[&str], width: FlameWidth) -> Vec<String> {
    let mut lines = Vec::new();
    for (function, groups) in names.iter().zip(groups) {
        for g in groups {
            let count = match width {
                FlameWidth::Calls => g.stats.calls(),
                FlameWidth::Latency => g.stats.total_ns,
            };
            if count == 0 {
                continue;
            }
            match g.not_read {
                Some(_) => lines.push(format!("[stack not read];{function} {count}")),
                None => lines.push(format!("{} {count}", g.key)),
            }
        }
    }
    lines
}

pub fn write_folded(path: &Path, lines: &[String]) -> Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("--folded {}", path.display()))
}

/// The folded stacks drawn by inferno.
pub fn write_flamegraph(path: &Path, lines: &[String], width: FlameWidth) -> Result<()> {
    let context = || format!("--flamegraph {}", path.display());
    let file = std::fs::File::create(path).with_context(context)?;
    let mut options = inferno::flamegraph::Options::default();
    options.title = "gotrace stats".to_owned();
    options.count_name = match width {
        FlameWidth::Calls => "calls",
        FlameWidth::Latency => "ns",
    }
    .to_owned();
    let writer = std::io::BufWriter::new(file);
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), writer)
        .with_context(context)
}
