//! The record of `gotrace peek`: each probed instruction's bytes in the file, live while
//! probed, and after detaching; as a table with its explanation, or JSON lines.

use gotrace_binary::VirtAddr;
use gotrace_plan::SiteKind;
use serde::Serialize;
use std::fmt::Write as _;

/// One function's probe sites in one process.
#[derive(Debug, Serialize)]
pub struct Peek {
    pub function: String,
    pub pid: u32,
    pub sites: Vec<PeekedSite>,
}

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

/// The table and the explanation a person reads.
pub(crate) fn peek_text(peek: &Peek) -> String {
    let (function, pid, sites) = (&peek.function, peek.pid, &peek.sites);
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
