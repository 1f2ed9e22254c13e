use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("not enough privileges to load BPF programs and attach uprobes: run gotrace as root, or grant it CAP_BPF and CAP_PERFMON (e.g. `sudo setcap cap_bpf,cap_perfmon+ep $(which gotrace)`)")]
    NoPrivileges,
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

impl KernelError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> KernelError {
        let context = context.into();
        move |source| KernelError::Io { context, source }
    }

    /// Classifies a libbpf error: permission problems get their own message.
    pub(crate) fn from_libbpf(
        e: libbpf_rs::Error,
        make: impl FnOnce(String) -> KernelError,
    ) -> KernelError {
        use libbpf_rs::ErrorKind;
        match e.kind() {
            ErrorKind::PermissionDenied => KernelError::NoPrivileges,
            _ => make(format!("{e:#}")),
        }
    }
}
