//! Test support for running the recipe compiler and the decoder end to end without root: the
//! values fixture built by a real Go toolchain, planned by the real planner, its recipes run by
//! a model of the BPF program over Go values laid out in a memory image.

#![allow(dead_code)] // each test file uses its own part of it

pub mod bpf_model;
mod go_maps;
pub mod go_memory;

use bpf_model::{captures, Machine};
use go_memory::{Layout, G, SP};
use gotrace_binary::types::{TypeId, TypeTable};
use gotrace_binary::GoBinary;
use gotrace_decode::{Decoder, Value};
use gotrace_gobuild::{Flavour, Toolchain};
use gotrace_plan::{plan, CallKind, Limits, PlanOptions, ProbePlan, RawCall, INT_REGS};
use std::collections::HashMap;

/// Go-syntax rendering, as the text output prints values.
pub use gotrace_output::go_syntax;

/// The values fixture (fixtures/go/values) built by one toolchain and planned for every
/// traced function in it.
pub struct Fixture {
    pub version: String,
    binary: GoBinary,
    pub plan: ProbePlan,
    pub runtime_types: HashMap<u64, TypeId>,
}

/// Go 1.21 (classic maps) and the newest installed toolchain (Swiss tables).
pub fn old_and_new() -> Vec<Toolchain> {
    let all = gotrace_gobuild::testing::toolchains();
    let old = all
        .iter()
        .find(|t| t.version == "1.21")
        .cloned()
        .expect("Go 1.21 installed (scripts/setup.sh)");
    let new = all.last().cloned().expect("checked non-empty");
    assert!(
        !swiss(&old) && swiss(&new),
        "{} then {}",
        old.version,
        new.version
    );
    vec![old, new]
}

/// The values fixture of [`old_and_new`], planned with `limits`.
pub fn fixtures(limits: Limits) -> Vec<Fixture> {
    old_and_new()
        .iter()
        .map(|t| Fixture::build(t, limits))
        .collect()
}

pub fn swiss(toolchain: &Toolchain) -> bool {
    let minor: u32 = toolchain.version[2..].parse().expect("a 1.N version");
    minor >= 24
}

impl Fixture {
    pub fn build(toolchain: &Toolchain, limits: Limits) -> Fixture {
        let path = gotrace_gobuild::testing::build_fixture(
            "fixtures/go/values",
            "-l",
            toolchain,
            Flavour::Plain,
            None,
        );
        let binary = GoBinary::open(&path).expect("the fixture opens");
        let options = PlanOptions {
            limits,
            ..PlanOptions::default()
        };
        let patterns = ["main.F*".to_owned(), "main.*.F*".to_owned()];
        let plan = plan(&binary, &patterns, options).expect("the fixture plans");
        let runtime_types = binary.runtime_types().expect("runtime types");
        Fixture {
            version: toolchain.version.clone(),
            binary,
            plan,
            runtime_types,
        }
    }

    pub fn types(&self) -> &TypeTable {
        self.binary
            .dwarf()
            .expect("DWARF reads")
            .expect("DWARF present")
            .types()
    }

    pub fn layout(&self) -> Layout<'_> {
        Layout::new(
            self.types(),
            &self.runtime_types,
            self.plan.limits,
            self.plan.layout,
        )
    }

    pub fn function(&self, name: &str) -> u32 {
        self.plan
            .functions
            .iter()
            .position(|f| f.name == name && f.inlined_into.is_none())
            .unwrap_or_else(|| panic!("{name} not planned on Go {}", self.version)) as u32
    }

    /// One call of `function`, its arguments and results laid out in `layout`'s process:
    /// the entry recipe run at entry, the return recipe at the return, the payloads parsed
    /// and decoded. Returns the decoded and the expected arguments and results.
    pub fn call(&self, layout: &mut Layout<'_>, function: &str, args: &[G], results: &[G]) -> Call {
        let index = self.function(function);
        let planned = &self.plan.functions[index as usize];
        let signature = planned.signature.as_ref().expect("a signature from DWARF");
        let (entry_regs, want_args) = layout.frame(&signature.params, args);
        let mut machine = Machine::new(&self.plan, layout.load_bias);
        let entry = machine.run(&planned.entry_recipe, entry_regs, SP, &layout.process);
        let (return_regs, want_results) = layout.frame(&signature.results, results);
        let exit = machine.run(&planned.return_recipe, return_regs, SP, &layout.process);
        let mut raw = raw_call(index, entry_regs, return_regs, &entry, &exit);
        raw.load_bias = layout.load_bias;
        self.decode(&raw, want_args, want_results)
    }

    /// Decodes `raw` beside what its values must decode as.
    pub fn decode(&self, raw: &RawCall, want_args: Vec<Value>, want_results: Vec<Value>) -> Call {
        let decoder = Decoder::new(&self.plan, self.types(), self.runtime_types.clone());
        let call = decoder.decode(raw).expect("a planned function");
        let values = |v: Option<Vec<gotrace_decode::NamedValue<'_>>>| -> Vec<(String, Value)> {
            v.expect("a signature")
                .into_iter()
                .map(|n| (n.name.to_owned(), n.value))
                .collect()
        };
        Call {
            args: values(call.args),
            results: values(call.results),
            want_args,
            want_results,
            raw: raw.clone(),
        }
    }
}

pub fn raw_call(
    function: u32,
    entry_regs: [u64; INT_REGS],
    return_regs: [u64; INT_REGS],
    entry: &[u8],
    exit: &[u8],
) -> RawCall {
    RawCall {
        kind: CallKind::Returned,
        function,
        pid: 1,
        entry_tid: 1,
        return_tid: 1,
        goid: 1,
        entry_ns: 1,
        return_ns: 2,
        entry_regs,
        return_regs,
        entry_sp: SP,
        return_sp: SP,
        load_bias: 0,
        entry_captures: captures(entry),
        return_captures: captures(exit),
        entry_data_lost: false,
        stack: None,
    }
}

/// A decoded call beside what its laid-out values must decode as.
#[derive(Debug)]
pub struct Call {
    pub args: Vec<(String, Value)>,
    pub results: Vec<(String, Value)>,
    pub want_args: Vec<Value>,
    pub want_results: Vec<Value>,
    /// What the model of the BPF program reported.
    pub raw: RawCall,
}

impl Call {
    /// Every argument and result decoded as laid out.
    pub fn assert_round_trip(&self, what: &str) {
        let got: Vec<&Value> = self
            .args
            .iter()
            .chain(&self.results)
            .map(|(_, v)| v)
            .collect();
        let want: Vec<&Value> = self.want_args.iter().chain(&self.want_results).collect();
        assert_eq!(got.len(), want.len(), "{what}: values");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let name = self
                .args
                .iter()
                .chain(&self.results)
                .nth(i)
                .map_or("?", |(n, _)| n.as_str());
            assert_eq!(g, w, "{what}: {name}");
        }
    }

    pub fn arg(&self, name: &str) -> &Value {
        lookup(&self.args, name)
    }

    pub fn result(&self, name: &str) -> &Value {
        lookup(&self.results, name)
    }
}

fn lookup<'v>(values: &'v [(String, Value)], name: &str) -> &'v Value {
    values
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no value {name}"))
}
