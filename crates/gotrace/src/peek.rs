//! `gotrace peek`: the seed article's gdb check, built in. Shows each probed instruction as it
//! is in the file, in the live process while gotrace's probes are attached, and after detaching.

use crate::cli::PeekArgs;
use anyhow::{Context, Result};
use gotrace_binary::sites::{disassemble_one, hex};
use gotrace_binary::{Arch, VirtAddr};
use gotrace_kernel::{proc, Session, Target};
use gotrace_plan::{PlanOptions, SiteKind};
use serde::Serialize;
use std::fmt::Write as _;

/// The bytes of one probed instruction at three moments.
#[derive(Debug, Serialize)]
pub struct PeekedSite {
    pub kind: SiteKind,
    pub addr: VirtAddr,
    pub runtime_addr: u64,
    pub file: Snapshot,
    pub probed: Snapshot,
    pub detached: Snapshot,
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub bytes: String,
    pub asm: String,
}

fn snapshot(arch: Arch, bytes: &[u8], addr: VirtAddr) -> Snapshot {
    let asm = disassemble_one(arch, bytes, addr)
        .map(|(_, text)| text)
        .unwrap_or_else(|| "(undecodable)".into());
    Snapshot {
        bytes: hex(bytes),
        asm,
    }
}

/// Attaches to `function`'s sites in process `pid`, reads the code three times, detaches.
pub fn peek(
    pid: u32,
    function: &str,
    debug_file: Option<&std::path::Path>,
) -> Result<(String, Vec<PeekedSite>)> {
    let path = proc::exe(proc::process_of(pid)?)?;
    let binary = crate::debuginfo::open(&path, debug_file)?;
    let plan = gotrace_plan::plan(&binary, &[function.to_owned()], PlanOptions::default())?;
    let arch = binary.arch();
    let mut sites = Vec::new();
    for site in &plan.sites {
        let window = binary
            .bytes_at(site.addr, 16)
            .or_else(|_| binary.bytes_at(site.addr, 1))?;
        let len = disassemble_one(arch, window, site.addr).map_or(1, |(len, _)| len);
        let runtime_addr = proc::runtime_address(pid, &path, site.file_offset.0)?
            .with_context(|| format!("{} is not mapped in process {pid}", site.addr))?;
        sites.push((site, window[..len].to_vec(), runtime_addr));
    }
    let session = Session::attach(&plan, &path, &Target::Process(pid))?;
    let probed: Vec<Vec<u8>> = sites
        .iter()
        .map(|(_, file, at)| proc::read_memory(pid, *at, file.len()))
        .collect::<Result<_, _>>()?;
    session.detach();
    let mut out = Vec::new();
    for ((site, file, runtime_addr), probed) in sites.into_iter().zip(probed) {
        let detached = proc::read_memory(pid, runtime_addr, file.len())?;
        out.push(PeekedSite {
            kind: site.kind,
            addr: site.addr,
            runtime_addr,
            file: snapshot(arch, &file, site.addr),
            probed: snapshot(arch, &probed, site.addr),
            detached: snapshot(arch, &detached, site.addr),
        });
    }
    Ok((plan.functions[0].name.clone(), out))
}

/// The table and the explanation a person reads.
pub fn render(function: &str, pid: u32, sites: &[PeekedSite]) -> String {
    let cell = |snap: &Snapshot| format!("{:<12} {}", snap.bytes, snap.asm);
    let rows: Vec<[String; 5]> = sites
        .iter()
        .map(|site| {
            [
                site.kind.label().to_owned(),
                format!("{:#x}", site.runtime_addr),
                cell(&site.file),
                cell(&site.probed),
                cell(&site.detached),
            ]
        })
        .collect();
    let header = [
        "site",
        "address",
        "in the file",
        "live, while probed",
        "live, after detaching",
    ]
    .map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{function} in process {pid}: {} probe sites",
        sites.len()
    );
    for row in [&header].into_iter().chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(s, "  {}", cells.join("   ").trim_end());
    }
    let explanation = [
        "While gotrace was attached, the kernel had replaced the first byte of each probed \
         instruction with 0xcc (int3, a breakpoint) in this process's memory only; the file on \
         disk is unchanged. When a goroutine reaches one, the CPU traps into the kernel, which \
         runs gotrace's BPF program and then carries out the original instruction on the \
         program's behalf (emulating a jump, or single-stepping a copy of anything else). After \
         detaching, the original bytes are back: the program was never rebuilt, restarted or \
         paused.",
        "The entry probe sits on the function's first jump when only flag-setting \
         instructions come before it: the arguments are still in their registers there, the \
         kernel emulates a jump about 20 times faster than it single-steps a `cmp`, and for a \
         stack-check jump the flags tell gotrace to ignore the pass that grows the stack and \
         restarts the function. Returns are probed at every `ret`, never by rewriting the \
         return address on the stack, which would corrupt Go's stacks.",
    ];
    for paragraph in explanation {
        let _ = writeln!(s, "\n{}", textwrap::fill(paragraph, 96));
    }
    s
}

pub fn run(args: &PeekArgs) -> Result<()> {
    let (function, sites) = peek(args.pid, &args.function, args.debug_file.as_deref())?;
    if args.json {
        crate::out!("{}", serde_json::to_string_pretty(&sites)?)?;
    } else {
        crate::stdio::print(&render(&function, args.pid, &sites))?;
    }
    Ok(())
}
