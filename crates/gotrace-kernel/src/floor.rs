//! The cost floor: an empty BPF program (`src/bpf/floor.bpf.c`) attached at exactly the sites
//! of a [`ProbePlan`], the same way a [`Session`](crate::Session) attaches them. A traced call
//! can cost no less than it costs under this; `make bench` compares gotrace with it.

use crate::session::uprobe_multi_supported;
use crate::{KernelError, Target};
use gotrace_plan::ProbePlan;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, UprobeMultiOpts};
use std::mem::MaybeUninit;
use std::path::Path;
use std::time::{Duration, Instant};

mod skel {
    #![allow(clippy::all, unused_imports, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}

use skel::{FloorSkel, FloorSkelBuilder};

/// The empty program, attached. Dropping it detaches every probe.
pub struct Floor {
    links: Vec<Link>,
    _skel: FloorSkel<'static>,
    attach_time: Duration,
}

impl Floor {
    /// Attaches the empty program at every site of `plan` in `binary`: one uprobe_multi link,
    /// or one perf-event uprobe per site where gotrace would use those (kernels before 6.6,
    /// `GOTRACE_NO_UPROBE_MULTI`). Unlike a session, one refused site is an error.
    pub fn attach(plan: &ProbePlan, binary: &Path, target: &Target) -> Result<Floor, KernelError> {
        crate::check_environment()?;
        let pid = match target {
            Target::Binary(_) => -1,
            Target::Process(pid) => *pid as i32,
        };
        // Leaked for the same reason as a session's: the skeleton borrows it for its lifetime.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = FloorSkelBuilder::default()
            .open(storage)
            .map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;
        let multi = uprobe_multi_supported();
        open.progs.floor_site_multi.set_autoload(multi);
        open.progs.floor_site.set_autoload(!multi);
        let skel = open
            .load()
            .map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;

        let started = Instant::now();
        let attach_error = |e: libbpf_rs::Error| KernelError::Attach {
            binary: binary.to_owned(),
            reason: format!("{e:#}"),
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
            links,
            _skel: skel,
            attach_time: started.elapsed(),
        })
    }

    /// How long attaching the sites took (loading the program excluded).
    pub fn attach_time(&self) -> Duration {
        self.attach_time
    }

    /// Removes every probe and returns how long it took.
    pub fn detach(mut self) -> Duration {
        let started = Instant::now();
        self.links.clear();
        started.elapsed()
    }
}

/// The empty program loaded for trial attachments: finding the sites the kernel refuses
/// without gotrace's own program running on the others meanwhile (no events, no state).
pub(crate) struct Trial {
    skel: FloorSkel<'static>,
}

impl Trial {
    pub(crate) fn load() -> Result<Trial, KernelError> {
        // Leaked for the same reason as a session's: the skeleton borrows it for its lifetime.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = FloorSkelBuilder::default()
            .open(storage)
            .map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;
        open.progs.floor_site.set_autoload(false);
        let skel = open
            .load()
            .map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;
        Ok(Trial { skel })
    }

    /// Attaches the empty program at `offsets` on one uprobe_multi link and detaches at once.
    pub(crate) fn attach(
        &self,
        binary: &Path,
        pid: i32,
        offsets: Vec<usize>,
    ) -> Result<(), libbpf_rs::Error> {
        let opts = UprobeMultiOpts {
            offsets,
            ..Default::default()
        };
        self.skel
            .progs
            .floor_site_multi
            .attach_uprobe_multi_with_opts(pid, binary, "", opts)
            .map(drop)
    }
}
