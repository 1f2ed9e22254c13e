use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("not enough privileges to load BPF programs and attach uprobes: {0}")]
    NoPrivileges(Missing),
    #[error("this kernel has no uprobe support ({0} is missing): it needs CONFIG_UPROBES=y and CONFIG_UPROBE_EVENTS=y")]
    NoUprobes(PathBuf),
    #[error("no process with PID {0}")]
    NoSuchProcess(u32),
    #[error("process {0} is a zombie: it has exited and only its exit status is left, waiting for its parent to collect it")]
    Zombie(u32),
    #[error("loading the BPF program failed: {0}")]
    Load(String),
    #[error("attaching probes to {binary} failed: {reason}")]
    Attach { binary: PathBuf, reason: String },
    #[error("watching {path} for changes ({what}): {source}")]
    Watch {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// What gotrace lacks to trace, for the way it would attach its probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The kernel has uprobe_multi links: CAP_BPF and CAP_PERFMON are enough.
    BpfAndPerfmon,
    /// Perf-event uprobes, because the kernel has no uprobe_multi links
    /// (`env_override: false`) or GOTRACE_NO_UPROBE_MULTI asks for them: CAP_SYS_ADMIN.
    SysAdmin { env_override: bool },
    /// Without privileges gotrace could not find out whether the kernel has uprobe_multi links.
    Unknown,
}

/// Since the fix for CVE-2025-38466, perf-event uprobes need CAP_SYS_ADMIN.
const PERF_EVENT_NOTE: &str = "perf-event uprobes need CAP_SYS_ADMIN since the fix for CVE-2025-38466 (Linux 5.10.240, 6.1.146, 6.6.99, 6.12.39 and later); CAP_BPF and CAP_PERFMON are enough only for uprobe_multi links (Linux 6.6+)";

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::BpfAndPerfmon => write!(
                f,
                "run gotrace as root, or grant it CAP_BPF and CAP_PERFMON, enough on this kernel as it has uprobe_multi links (e.g. `sudo setcap cap_bpf,cap_perfmon+ep $(which gotrace)`)"
            ),
            Missing::SysAdmin { env_override } => write!(
                f,
                "gotrace attaches perf-event uprobes ({}): run it as root, or grant it CAP_SYS_ADMIN (e.g. `sudo setcap cap_sys_admin+ep $(which gotrace)`); {PERF_EVENT_NOTE}",
                if *env_override {
                    "GOTRACE_NO_UPROBE_MULTI is set"
                } else {
                    "this kernel has no uprobe_multi links"
                }
            ),
            Missing::Unknown => write!(
                f,
                "run gotrace as root, or grant it CAP_BPF and CAP_PERFMON where the kernel has uprobe_multi links, CAP_SYS_ADMIN where it has not; {PERF_EVENT_NOTE}"
            ),
        }
    }
}

impl KernelError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> KernelError {
        let context = context.into();
        move |source| KernelError::Io { context, source }
    }

    /// Classifies a libbpf error: permission problems get their own message. The verifier
    /// rejects a program with EACCES too; with the capabilities in hand that is what it is,
    /// and saying "not enough privileges" to root would send the user the wrong way.
    pub(crate) fn from_libbpf(
        e: libbpf_rs::Error,
        make: impl FnOnce(String) -> KernelError,
    ) -> KernelError {
        use libbpf_rs::ErrorKind;
        match e.kind() {
            ErrorKind::PermissionDenied if !crate::session::has_bpf_capabilities() => {
                KernelError::NoPrivileges(crate::trial::missing())
            }
            _ => make(format!("{e:#}")),
        }
    }
}
