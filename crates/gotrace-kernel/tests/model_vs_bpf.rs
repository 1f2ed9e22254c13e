//! ROOT TEST: the model of the capture interpreter that gotrace-decode's root-free tests run
//! recipes with (gotrace-decode/tests/common/bpf_model.rs) against the real BPF program. The
//! values fixture is traced for real; for every call, the model runs the same recipe with the
//! same registers and stack pointer over the memory the real program read (its captures), and
//! must produce exactly the real captures: the same reads at the same addresses, the same
//! lengths, statuses, gathers and dynamic hops, in the same order. Not root: shown as ignored.

#[path = "../../gotrace-decode/tests/common/bpf_model.rs"]
mod bpf_model;

use bpf_model::{captures, Machine, UserMemory};
use gotrace_binary::GoBinary;
use gotrace_gobuild::testing::{build_fixture, toolchains};
use gotrace_gobuild::Flavour;
use gotrace_kernel::{Session, Target};
use gotrace_plan::{plan, CallKind, Capture, CaptureStatus, PlanOptions, RawCall};
use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The traced process's memory as far as the real program read it: a read the real program
/// made finds its bytes; any other read faults (and so differs from the real one).
struct Read<'c>(&'c [Capture]);

impl UserMemory for Read<'_> {
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.0
            .iter()
            .filter(|c| matches!(c.status, CaptureStatus::Ok | CaptureStatus::Truncated))
            .find_map(|c| {
                let start = usize::try_from(addr.checked_sub(c.addr)?).ok()?;
                c.bytes.get(start..start.checked_add(len)?)
            })
    }
}

fn traced_calls(binary: &std::path::Path, plan: &gotrace_plan::ProbePlan) -> Vec<RawCall> {
    let session =
        Session::attach(plan, binary, &Target::Binary(binary.to_owned())).expect("probes attach");
    let calls = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&calls);
    let stream = session
        .events(move |call| sink.borrow_mut().push(call))
        .expect("ring buffer");
    let mut child = Command::new(binary)
        .args(["-workers", "1", "-rounds", "3", "-big", "0", "-maps", "2"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the fixture runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut exited = None;
    while Instant::now() < deadline {
        stream.consume().expect("consume");
        if exited.is_none() {
            exited = child.try_wait().expect("wait").map(|_| Instant::now());
        } else if exited.is_some_and(|at| at.elapsed() > Duration::from_millis(500)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if exited.is_none() {
        child.kill().expect("kill the fixture");
    }
    child.wait().expect("wait");
    assert!(exited.is_some(), "the fixture did not exit");
    stream.consume().expect("consume");
    drop(stream);
    let counters = session.counters().expect("counters");
    assert_eq!(counters.lost, 0, "{counters:?}");
    session.detach();
    Rc::try_unwrap(calls).expect("one owner").into_inner()
}

fn root_the_model_reads_what_the_bpf_program_reads() {
    let newest = toolchains().pop().expect("checked non-empty");
    let old: Vec<_> = toolchains()
        .into_iter()
        .filter(|t| t.version == "1.21")
        .collect();
    for toolchain in old.iter().chain([&newest]) {
        let path = build_fixture("fixtures/go/values", "-l", toolchain, Flavour::Plain, None);
        let binary = GoBinary::open(&path).expect("opens");
        let patterns = ["main.F*".to_owned(), "main.*.F*".to_owned()];
        let plan = plan(&binary, &patterns, PlanOptions::default()).expect("plans");
        let calls = traced_calls(&path, &plan);
        let (mut compared, mut reads, mut gathers, mut dynamic) = (0, 0, 0, 0);
        for call in calls.iter().filter(|c| c.kind == CallKind::Returned) {
            let function = &plan.functions[call.function as usize];
            let sites = [
                (
                    &function.entry_recipe,
                    call.entry_regs,
                    call.entry_sp,
                    &call.entry_captures,
                ),
                (
                    &function.return_recipe,
                    call.return_regs,
                    call.return_sp,
                    &call.return_captures,
                ),
            ];
            for (recipe, regs, sp, real) in sites {
                if recipe.ops.is_empty() {
                    continue;
                }
                let mut machine = Machine::new(&plan, call.load_bias);
                let modelled = captures(&machine.run(recipe, regs, sp, &Read(real)));
                assert_eq!(
                    &modelled, real,
                    "{} on Go {}",
                    function.name, toolchain.version
                );
                compared += 1;
                reads += real
                    .iter()
                    .filter(|c| c.status == CaptureStatus::Ok)
                    .count();
                gathers += real
                    .iter()
                    .filter(|c| c.status == CaptureStatus::Gathered)
                    .count();
                // Captures of dynamic recipes' ops: more than the recipe's own ops.
                dynamic += usize::from(real.len() > recipe.ops.len());
            }
        }
        eprintln!(
            "Go {}: {compared} sites compared, {reads} reads, {gathers} gathers, {dynamic} with dynamic recipes",
            toolchain.version
        );
        assert!(
            compared > 100 && reads > 500 && dynamic > 10,
            "Go {}",
            toolchain.version
        );
        if newest.version == toolchain.version {
            assert!(gathers > 10, "Swiss maps gathered: {gathers}");
        }
    }
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [root_the_model_reads_what_the_bpf_program_reads],
}
