//! The cost floor: an empty BPF program (`src/bpf/floor.bpf.c`) attached at exactly the sites
//! of a [`ProbePlan`], the same way a [`Session`](gotrace_kernel::Session) attaches them. A
//! traced call can cost no less than it costs under this; `make bench` compares gotrace with
//! it. Built here (see build.rs), not in gotrace-kernel: gotrace itself never loads it.

use anyhow::{Context, Result};
use gotrace_kernel::{uprobe_multi_supported, Target};
use gotrace_plan::ProbePlan;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, UprobeMultiOpts};
use std::mem::MaybeUninit;
use std::path::Path;

mod skel {
    #![allow(clippy::all, unused_imports, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}

use skel::{FloorSkel, FloorSkelBuilder};

/// The empty program, attached. Dropping it detaches every probe.
pub struct Floor {
    /// Held, never read: dropping them detaches the probes.
    _links: Vec<Link>,
    _skel: FloorSkel<'static>,
}

impl Floor {
    /// Attaches the empty program at every site of `plan` in `binary`: one uprobe_multi link,
    /// or one perf-event uprobe per site where gotrace would use those (kernels without it,
    /// `GOTRACE_NO_UPROBE_MULTI`). Unlike a session, one refused site is an error.
    pub fn attach(plan: &ProbePlan, binary: &Path, target: &Target) -> Result<Floor> {
        gotrace_kernel::check_environment()?;
        let pid = match target {
            Target::Binary(_) => -1,
            Target::Process(pid) => *pid as i32,
        };
        // Leaked for the same reason as a session's: the skeleton borrows it for its lifetime.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = FloorSkelBuilder::default()
            .open(storage)
            .context("opening the empty program")?;
        let multi = uprobe_multi_supported();
        open.progs.floor_site_multi.set_autoload(multi);
        open.progs.floor_site.set_autoload(!multi);
        let skel = open.load().context("loading the empty program")?;

        let attach_error = |e: libbpf_rs::Error| {
            anyhow::Error::new(e).context(format!("attaching probes to {}", binary.display()))
        };
        let links = if multi {
            let opts = UprobeMultiOpts {
                offsets: plan
                    .sites
                    .iter()
                    .map(|s| s.file_offset.0 as usize)
                    .collect(),
                // The program never reads its cookie; one per site keeps the kernel's work the same.
                cookies: (0..plan.sites.len() as u64).collect(),
                ..Default::default()
            };
            vec![skel
                .progs
                .floor_site_multi
                .attach_uprobe_multi_with_opts(pid, binary, "", opts)
                .map_err(attach_error)?]
        } else {
            plan.sites
                .iter()
                .map(|s| {
                    skel.progs
                        .floor_site
                        .attach_uprobe(false, pid, binary, s.file_offset.0 as usize)
                        .map_err(attach_error)
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Floor {
            _links: links,
            _skel: skel,
        })
    }
}
