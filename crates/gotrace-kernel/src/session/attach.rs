//! Attaching the program at a plan's sites: one uprobe_multi link (finding the sites the kernel
//! refuses), or one perf-event uprobe per site.

use super::AttachMethod;
use crate::skel::{types, GotraceSkel};
use crate::KernelError;
use gotrace_binary::sites::SkipCondition;
use gotrace_plan::{Site, SiteKind};
use libbpf_rs::{Link, UprobeMultiOpts, UprobeOpts};
use std::path::Path;

/// The site's cookie, laid out as `GT_COOKIE_*` in gotrace.h reads it.
pub fn cookie(site: &Site) -> u64 {
    let kind = match site.kind {
        SiteKind::Entry => types::gt_site_kind::GT_SITE_ENTRY,
        SiteKind::Return => types::gt_site_kind::GT_SITE_RETURN,
        SiteKind::GoPanic => types::gt_site_kind::GT_SITE_GOPANIC,
        SiteKind::GoExit => types::gt_site_kind::GT_SITE_GOEXIT,
        SiteKind::FatalPanic => types::gt_site_kind::GT_SITE_FATALPANIC,
        SiteKind::Recovery => types::gt_site_kind::GT_SITE_RECOVERY,
        SiteKind::EntryReturn => types::gt_site_kind::GT_SITE_ENTRY_RETURN,
        SiteKind::Inlined => types::gt_site_kind::GT_SITE_INLINED,
    };
    let skip = match site.skip_if {
        None => types::gt_skip::GT_SKIP_NEVER,
        Some(SkipCondition::CarrySet) => types::gt_skip::GT_SKIP_IF_CF,
        Some(SkipCondition::CarryOrZeroSet) => types::gt_skip::GT_SKIP_IF_CF_ZF,
    };
    use types::gt_cookie as C;
    let field = |value: u32| u64::from(value & C::GT_COOKIE_FIELD_MASK.0);
    u64::from(site.function)
        | field(kind.0) << C::GT_COOKIE_KIND_SHIFT.0
        | field(skip.0) << C::GT_COOKIE_SKIP_SHIFT.0
        | u64::from(site.may_restart) << C::GT_COOKIE_MAY_RESTART_SHIFT.0
}

pub(super) fn attach_multi(
    skel: &GotraceSkel<'_>,
    sites: &[&Site],
    binary: &Path,
    pid: i32,
) -> Result<Link, libbpf_rs::Error> {
    let opts = UprobeMultiOpts {
        offsets: sites.iter().map(|s| s.file_offset.0 as usize).collect(),
        cookies: sites.iter().map(|s| cookie(s)).collect(),
        ..Default::default()
    };
    skel.progs
        .gotrace_site_multi
        .attach_uprobe_multi_with_opts(pid, binary, "", opts)
}

/// What attaching left out: each refused site with the kernel's reason.
pub(super) type Refused = Vec<(Site, String)>;

/// Attaches `sites` on one uprobe_multi link. The kernel fails the whole batch for one site it
/// will not probe (and only while a process maps the binary): then the refused sites are found
/// by bisection — trial attachments of the empty trial program, so nothing is reported and no
/// state is left meanwhile — and the rest go on one link. Never one probe per site: thousands
/// of those take minutes to attach and to detach.
pub(super) fn attach_multi_finding_refused(
    skel: &GotraceSkel<'_>,
    sites: &[&Site],
    binary: &Path,
    pid: i32,
) -> Result<(Option<Link>, Refused), KernelError> {
    let attach_error = |e: libbpf_rs::Error| KernelError::Attach {
        binary: binary.to_owned(),
        reason: format!("{e:#}"),
    };
    let first = match attach_multi(skel, sites, binary, pid) {
        Ok(link) => return Ok((Some(link), Vec::new())),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::PermissionDenied => {
            return Err(KernelError::NoPrivileges(crate::trial::missing()))
        }
        Err(e) => e,
    };
    let trial =
        crate::trial::Trial::load().map_err(|e| KernelError::from_libbpf(e, KernelError::Load))?;
    let offsets: Vec<usize> = sites.iter().map(|s| s.file_offset.0 as usize).collect();
    let refused = bisect_refused(sites.len(), |set| {
        trial
            .attach(binary, pid, set.iter().map(|&i| offsets[i]).collect())
            .map_err(|e| format!("{e:#}"))
    });
    if refused.is_empty() {
        // Every part attaches on its own: the batch failed for another reason.
        return Err(attach_error(first));
    }
    let rest: Vec<&Site> = sites
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i))
        .map(|(_, s)| *s)
        .collect();
    let failed = refused
        .into_iter()
        .map(|(i, reason)| (sites[i].clone(), reason))
        .collect();
    if rest.is_empty() {
        return Ok((None, failed));
    }
    let link = attach_multi(skel, &rest, binary, pid).map_err(attach_error)?;
    Ok((Some(link), failed))
}

/// The indices in `0..n` whose trial attachment fails, with its error, given that attaching
/// all of them failed: each failing set is split in halves down to single sites, so k refused
/// sites among n cost about 2·k·log2(n) trials.
pub(super) fn bisect_refused<E>(
    n: usize,
    mut attach: impl FnMut(&[usize]) -> Result<(), E>,
) -> Vec<(usize, E)> {
    fn split<E>(
        set: &[usize],
        attach: &mut impl FnMut(&[usize]) -> Result<(), E>,
        out: &mut Vec<(usize, E)>,
    ) {
        let (left, right) = set.split_at(set.len() / 2);
        for half in [left, right].into_iter().filter(|h| !h.is_empty()) {
            match attach(half) {
                Ok(()) => {}
                Err(e) if half.len() == 1 => out.push((half[0], e)),
                Err(_) => split(half, attach, out),
            }
        }
    }
    let all: Vec<usize> = (0..n).collect();
    let mut out = Vec::new();
    split(&all, &mut attach, &mut out);
    out
}

/// Sites a kernel without uprobe_multi links gets as one perf-event uprobe each: detaching
/// each waits for an RCU grace period (about 0.1 s here), so more would hold Ctrl-C for long.
pub const PER_SITE_LIMIT: usize = 64;

/// One perf-event uprobe per site (kernels without uprobe_multi links, or
/// `GOTRACE_NO_UPROBE_MULTI`).
pub(super) fn attach_per_site(
    skel: &GotraceSkel<'_>,
    sites: &[&Site],
    binary: &Path,
    pid: i32,
) -> Result<PerSiteOutcome, KernelError> {
    raise_open_file_limit();
    let mut links = Vec::new();
    let mut failed = Vec::new();
    for site in sites {
        let opts = UprobeOpts {
            cookie: cookie(site),
            ..Default::default()
        };
        let result = skel.progs.gotrace_site.attach_uprobe_with_opts(
            pid,
            binary,
            site.file_offset.0 as usize,
            opts,
        );
        match result {
            Ok(link) => links.push(link),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::PermissionDenied => {
                return Err(KernelError::NoPrivileges(crate::trial::missing()))
            }
            Err(e) => failed.push(((*site).clone(), format!("{e:#}"))),
        }
    }
    Ok((links, AttachMethod::PerSite, failed))
}

pub(super) type PerSiteOutcome = (Vec<Link>, AttachMethod, Refused);

/// Each per-site link holds file descriptors: lift the soft limit to the hard one.
pub(super) fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_finds_every_refused_site_and_only_those() {
        for (n, bad) in [
            (1, vec![0]),
            (10, vec![3]),
            (1000, vec![0, 17, 500, 999]),
            (7, (0..7).collect()),
        ] {
            let mut trials = 0;
            let found = bisect_refused(n, |set: &[usize]| {
                trials += 1;
                assert!(!set.is_empty());
                match set.iter().find(|i| bad.contains(i)) {
                    Some(i) => Err(*i),
                    None => Ok(()),
                }
            });
            let indices: Vec<usize> = found.iter().map(|(i, _)| *i).collect();
            assert_eq!(indices, bad, "n={n}");
            assert!(found.iter().all(|(i, e)| i == e));
            let log2 = usize::BITS - n.leading_zeros();
            assert!(
                trials <= 2 * bad.len() * log2 as usize + 2,
                "n={n}: {trials} trials"
            );
        }
    }
}
