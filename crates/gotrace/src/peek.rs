//! `gotrace peek`: the seed article's gdb check, built in. Shows each probed instruction as it
//! is in the file, in the live process while gotrace's probes are attached, and after detaching.

use crate::cli::PeekArgs;
use anyhow::{Context, Result};
use gotrace_binary::sites::{disassemble_one, hex};
use gotrace_binary::{Arch, VirtAddr};
use gotrace_kernel::{proc, Session, Target};
use gotrace_output::peek::{Peek, PeekedSite, Snapshot};
use gotrace_output::{Clock, Format, Printer, Record};
use gotrace_plan::PlanOptions;

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

pub fn run(args: &PeekArgs) -> Result<()> {
    let (function, sites) = peek(args.pid, &args.function, args.debug_file.as_deref())?;
    let format = match args.json {
        true => Format::Json,
        false => Format::Text,
    };
    let mut printer = Printer::new(Vec::new(), format, Clock::default());
    let peek = Peek {
        function,
        pid: args.pid,
        sites,
    };
    // Into a Vec: cannot fail.
    let _ = printer.record(&Record::Peek(&peek));
    crate::stdio::print(&String::from_utf8_lossy(&printer.into_inner()))?;
    Ok(())
}
