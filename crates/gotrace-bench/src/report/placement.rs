//! Where a probe sits: how the kernel runs each probed instruction, against gotrace's entry.

use super::{divide, markdown, ns, opt};

/// How the kernel runs a probed instruction when the probe fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// The kernel computes the instruction's effect itself (jumps, calls, NOPs, `push reg`).
    Emulated,
    /// A copy runs out of line under the trap flag: a debug exception more (a VM exit on KVM).
    SingleStepped,
}

impl Handling {
    pub fn label(self) -> &'static str {
        match self {
            Handling::Emulated => "emulated",
            Handling::SingleStepped => "single-stepped",
        }
    }
}

/// Where the empty program sat in one placement run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementSite {
    /// gotrace's own entry site (the stack check's conditional jump, or the first jump after
    /// flag-setting instructions).
    GotraceEntry,
    /// The function's first instruction, where a symbol uprobe goes.
    FirstInstruction,
    /// Every RET of the function (one fires per call).
    Returns { sites: usize },
}

impl PlacementSite {
    pub fn label(self) -> String {
        match self {
            PlacementSite::GotraceEntry => "entry, gotrace's site".into(),
            PlacementSite::FirstInstruction => "entry, first instruction".into(),
            PlacementSite::Returns { sites: 1 } => "return".into(),
            PlacementSite::Returns { sites } => format!("return ×{sites}"),
        }
    }
}

/// The empty program on one kind of site of one function.
#[derive(Clone, Debug)]
pub struct Placement {
    pub function: String,
    pub site: PlacementSite,
    /// `jbe 0x48e40f`, `cmp rsp, [r14+0x10]`
    pub instruction: String,
    /// `None` where the benchmark cannot tell (not x86-64, undecodable).
    pub handling: Option<Handling>,
    /// The empty program's overhead per call, which is its cost per hit: exactly one of the
    /// run's sites fires per call.
    pub ns_per_hit: Option<f64>,
    pub status: String,
}

pub fn placement_table(runs: &[Placement]) -> String {
    let rows = runs
        .iter()
        .map(|p| {
            let emulated_entry = runs
                .iter()
                .find(|q| q.function == p.function && q.site == PlacementSite::GotraceEntry)
                .and_then(|q| q.ns_per_hit);
            vec![
                p.function.clone(),
                p.site.label(),
                format!("`{}`", p.instruction),
                p.handling.map_or("?", Handling::label).to_owned(),
                opt(p.ns_per_hit, ns),
                opt(
                    p.ns_per_hit
                        .zip(emulated_entry)
                        .and_then(|(a, b)| divide(a, b)),
                    |v| format!("{v:.1}"),
                ),
                p.status.clone(),
            ]
        })
        .collect();
    markdown(
        &[
            "function",
            "probe on",
            "instruction",
            "kernel",
            "empty program ns/hit",
            "× gotrace's entry",
            "target",
        ],
        rows,
    )
}
