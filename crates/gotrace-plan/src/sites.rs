//! The sites to attach: a traced function's entry and returns, and the runtime functions that
//! end calls without a return.

use crate::{site_refusal, PlanError, Site, SiteKind};
use gotrace_binary::sites::ProbeSites;
use gotrace_binary::GoBinary;

/// The runtime functions whose entries tell how calls that never return ended.
const RUNTIME_HOOKS: [(&str, SiteKind); 4] = [
    ("runtime.gopanic", SiteKind::GoPanic),
    ("runtime.goexit1", SiteKind::GoExit),
    ("runtime.fatalpanic", SiteKind::FatalPanic),
    ("runtime.recovery", SiteKind::Recovery),
];

/// The sites of one traced function: its entry and, unless entry-only, each return.
pub(crate) fn function_sites(
    binary: &GoBinary,
    index: u32,
    probe_sites: &ProbeSites,
    entry_only: bool,
) -> Result<Vec<Site>, PlanError> {
    let mut sites = Vec::with_capacity(1 + probe_sites.returns.len());
    // A body that is a single RET enters and returns at one instruction: one site does both.
    let entry_returns = !entry_only && probe_sites.returns.contains(&probe_sites.entry.addr);
    sites.push(Site {
        function: index,
        kind: if entry_returns {
            SiteKind::EntryReturn
        } else {
            SiteKind::Entry
        },
        addr: probe_sites.entry.addr,
        file_offset: binary.file_offset(probe_sites.entry.addr)?,
        skip_if: probe_sites.entry.skip_if,
        may_restart: probe_sites.entry.may_restart,
    });
    if !entry_only {
        for &addr in probe_sites
            .returns
            .iter()
            .filter(|&&a| a != probe_sites.entry.addr)
        {
            sites.push(Site {
                function: index,
                kind: SiteKind::Return,
                addr,
                file_offset: binary.file_offset(addr)?,
                skip_if: None,
                may_restart: false,
            });
        }
    }
    Ok(sites)
}

/// Sites at the runtime functions that end calls without a return (panics, Goexit); one that
/// cannot be probed is left out with a warning.
pub(crate) fn runtime_hooks(binary: &GoBinary, warnings: &mut Vec<String>) -> Vec<Site> {
    let mut runtime_hooks = Vec::new();
    for (name, kind) in RUNTIME_HOOKS {
        let site = binary
            .function(name)
            .and_then(|f| binary.probe_sites(f))
            .and_then(|s| Ok((s.entry, binary.file_offset(s.entry.addr)?)));
        let hook_refused = site.as_ref().ok().and_then(|(entry, _)| {
            let sites = ProbeSites {
                entry: *entry,
                returns: Vec::new(),
                deferreturns: Vec::new(),
            };
            site_refusal(binary, &sites, true)
        });
        if let Some(refusal) = hook_refused {
            warnings.push(format!(
                "cannot probe {name} ({refusal}): calls unwound by panics or Goexit may go unreported"
            ));
            continue;
        }
        match site {
            Ok((entry, file_offset)) => runtime_hooks.push(Site {
                function: u32::MAX,
                kind,
                addr: entry.addr,
                file_offset,
                skip_if: entry.skip_if,
                may_restart: false,
            }),
            Err(e) => warnings.push(format!(
                "cannot probe {name} ({e}): calls unwound by panics or Goexit may go unreported"
            )),
        }
    }
    runtime_hooks
}
