//! Trial attachments of an empty BPF program (`src/bpf/trial.bpf.c`): whether this kernel has
//! uprobe_multi links, found by attaching one, and which sites of a batch the kernel refused
//! it refuses. The program does nothing, so trying reports no event and leaves no state.

use crate::Missing;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::UprobeMultiOpts;
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::OnceLock;

mod skel {
    #![allow(clippy::all, unused_imports, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/trial.skel.rs"));
}

use skel::{TrialSkel, TrialSkelBuilder};

/// The empty program, loaded.
pub(crate) struct Trial {
    skel: TrialSkel<'static>,
}

impl Trial {
    pub(crate) fn load() -> Result<Trial, libbpf_rs::Error> {
        // Leaked for the same reason as a session's: the skeleton borrows it for its lifetime.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let skel = TrialSkelBuilder::default().open(storage)?.load()?;
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
            .trial_site
            .attach_uprobe_multi_with_opts(pid, binary, "", opts)
            .map(drop)
    }
}

/// Whether gotrace attaches one uprobe_multi link (else one perf-event uprobe per site): when
/// this kernel attaches one, unless GOTRACE_NO_UPROBE_MULTI asks for per-site probes.
pub fn uprobe_multi_supported() -> bool {
    std::env::var_os("GOTRACE_NO_UPROBE_MULTI").is_none() && kernel_has_uprobe_multi() == Some(true)
}

/// Whether this kernel has uprobe_multi links: tried once per process by attaching the empty
/// program; when gotrace may not try (no privileges), read from the kernel's BTF, which has
/// the link's type when the kernel has the link. `None`: neither could tell.
pub fn kernel_has_uprobe_multi() -> Option<bool> {
    static TRIED: OnceLock<Option<bool>> = OnceLock::new();
    *TRIED.get_or_init(|| match try_uprobe_multi() {
        Err(e) if e.kind() == libbpf_rs::ErrorKind::PermissionDenied => {
            kernel_btf_has_uprobe_multi()
        }
        result => Some(result.is_ok()),
    })
}

/// Never called: its first instruction is the harmless address the trial attaches at (a
/// function's entry is an instruction boundary, and no thread ever runs it).
#[inline(never)]
extern "C" fn trial_target() {}

/// Attaches the empty program's uprobe_multi link at [`trial_target`] in gotrace's own
/// executable, for gotrace's own process only, and detaches it.
pub fn try_uprobe_multi() -> Result<(), libbpf_rs::Error> {
    let trial = Trial::load()?;
    let address = trial_target as extern "C" fn() as usize;
    let offset = own_file_offset(address).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "gotrace's own code is not in /proc/self/maps",
        )
    })?;
    trial.attach(
        Path::new("/proc/self/exe"),
        std::process::id() as i32,
        vec![offset],
    )
}

/// Where `address` of gotrace's own executable is in its file, from /proc/self/maps (the
/// mapping must be of /proc/self/exe's inode).
fn own_file_offset(address: usize) -> Option<usize> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::metadata("/proc/self/exe").ok()?.ino();
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        // start-end perms offset dev inode path
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        let perms = fields.next()?;
        let offset = usize::from_str_radix(fields.next()?, 16).ok()?;
        let inode: u64 = fields.nth(1)?.parse().ok()?;
        ((start..end).contains(&address) && perms.contains('x') && inode == exe)
            .then(|| address - start + offset)
    })
}

pub fn kernel_btf_has_uprobe_multi() -> Option<bool> {
    let btf = libbpf_rs::btf::Btf::from_vmlinux().ok()?;
    Some(
        btf.type_by_name::<libbpf_rs::btf::BtfType<'_>>("bpf_uprobe_multi_link")
            .is_some(),
    )
}

/// What is missing, when the kernel denies gotrace, for the way gotrace would attach.
pub(crate) fn missing() -> Missing {
    missing_given(kernel_has_uprobe_multi)
}

/// [`missing`] for a process without the capabilities to try: the kernel's BTF tells (trying
/// would only fill stderr with libbpf's complaints).
pub(crate) fn missing_untried() -> Missing {
    missing_given(kernel_btf_has_uprobe_multi)
}

fn missing_given(has_uprobe_multi: fn() -> Option<bool>) -> Missing {
    if std::env::var_os("GOTRACE_NO_UPROBE_MULTI").is_some() {
        return Missing::SysAdmin { env_override: true };
    }
    match has_uprobe_multi() {
        Some(true) => Missing::BpfAndPerfmon,
        Some(false) => Missing::SysAdmin {
            env_override: false,
        },
        None => Missing::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    /// The trial's address in the file holds the bytes the function has in memory.
    #[test]
    fn the_trial_address_is_the_functions_code_in_the_executable() {
        let address = trial_target as extern "C" fn() as usize;
        let offset = own_file_offset(address).expect("found in /proc/self/maps");
        let mut file = std::fs::File::open("/proc/self/exe").expect("own executable opens");
        let mut in_file = [0u8; 16];
        file.seek(SeekFrom::Start(offset as u64))
            .and_then(|_| file.read_exact(&mut in_file))
            .expect("own executable reads");
        // SAFETY: the 16 bytes at a function's address in a mapped, readable code segment
        // (maps said r-x, and the function and its padding are followed by more code).
        let in_memory = unsafe { std::slice::from_raw_parts(address as *const u8, 16) };
        assert_eq!(&in_file[..], in_memory);
    }
}
