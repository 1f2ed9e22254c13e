//! Watches the traced executable on disk while its probes are attached.
//!
//! A uprobe belongs to the file's inode and keeps a copy of the instruction it replaced, taken
//! from the file when the probe was first installed. If the file is then written in place
//! (`cp new-build ./server`), every process that starts from it gets a breakpoint whose
//! single-stepped instruction is the *old* one: it runs code that no longer exists and dies.
//! So the watch does two things:
//!
//! - it holds every `exec` of the traced inode (fanotify `FAN_OPEN_EXEC_PERM`) until it knows
//!   the file is unchanged since the probes were planned (its ctime, which no user can set);
//!   when it has changed, the session is told to detach first, and only then the exec goes on;
//! - it reports a write to the inode at once (`FAN_MODIFY`), and a complete new file at the
//!   path (a rebuild, `mv`, or the end of an in-place write: inotify on the directory), so the
//!   session can re-plan and attach to what is there now.

use crate::KernelError;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
};
use nix::sys::inotify::{AddWatchFlags, InitFlags as InotifyFlags, Inotify};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// What happened to the traced file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileChange {
    /// The traced inode is being written: detach now, then call [`BinaryWatch::detached`].
    WrittenInPlace,
    /// A complete file is at the path again (a new inode, or the in-place write finished):
    /// plan it anew and attach to it.
    Replaced,
}

/// The inode the probes were planned on, as `exec` must find it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Shared between the watcher thread and the session.
struct State {
    pending: Vec<FileChange>,
    /// The identity probes are attached for; `None` while detached.
    attached: Option<Identity>,
}

pub struct BinaryWatch {
    state: Arc<Mutex<State>>,
    /// Readable while changes are pending.
    wake_read: OwnedFd,
    /// Tells the watcher thread the session has detached (or, dropped, that it is gone).
    acks: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Written to stop the thread.
    stop_write: OwnedFd,
}

impl BinaryWatch {
    /// Starts watching `path`. Execs are not held back until [`BinaryWatch::attached`] says
    /// which file the probes were planned on.
    pub fn start(path: &Path) -> Result<BinaryWatch, KernelError> {
        let watch_err = |what: &str, e: nix::Error| KernelError::Watch {
            path: path.to_owned(),
            what: what.to_owned(),
            source: std::io::Error::from(e),
        };
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|e| watch_err("fanotify_init", e))?;
        mark_inode(&fan, path).map_err(|e| watch_err("fanotify_mark", e))?;
        let inotify = Inotify::init(InotifyFlags::IN_CLOEXEC | InotifyFlags::IN_NONBLOCK)
            .map_err(|e| watch_err("inotify_init", e))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        inotify
            .add_watch(
                &dir,
                AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CREATE,
            )
            .map_err(|e| watch_err("inotify_add_watch", e))?;
        let name = path.file_name().map(OsString::from).unwrap_or_default();

        let (wake_read, wake_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| watch_err("pipe", e))?;
        let (stop_read, stop_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| watch_err("pipe", e))?;
        let state = Arc::new(Mutex::new(State {
            pending: Vec::new(),
            attached: None,
        }));
        let (acks, ack_rx) = mpsc::channel();
        let watcher = Watcher {
            fan,
            inotify,
            path: path.to_owned(),
            name,
            state: Arc::clone(&state),
            wake_write,
            stop_read,
            acks: ack_rx,
        };
        let thread = std::thread::Builder::new()
            .name("gotrace-watch".into())
            .spawn(move || watcher.run())
            .map_err(|source| KernelError::Watch {
                path: path.to_owned(),
                what: "starting the watch thread".into(),
                source,
            })?;
        Ok(BinaryWatch {
            state,
            wake_read,
            acks: Some(acks),
            thread: Some(thread),
            stop_write,
        })
    }

    /// Readable while a change waits in [`BinaryWatch::take`]; poll it with the ring buffer.
    pub fn fd(&self) -> RawFd {
        self.wake_read.as_raw_fd()
    }

    /// The changes seen since the last call, oldest first.
    pub fn take(&self) -> Vec<FileChange> {
        drain_pipe(self.wake_read.as_fd());
        let mut state = lock(&self.state);
        std::mem::take(&mut state.pending)
    }

    /// Every probe on the old file is gone: execs held back may go on.
    pub fn detached(&self) {
        lock(&self.state).attached = None;
        if let Some(acks) = &self.acks {
            let _ = acks.send(());
        }
    }

    /// Probes are attached to the file now at the path, as it was when it was planned.
    pub fn attached(&self, planned: &std::fs::Metadata) {
        lock(&self.state).attached = Some(Identity::of(planned));
    }
}

impl Drop for BinaryWatch {
    fn drop(&mut self) {
        // Closing the ack channel and writing the stop pipe both end the thread; execs it still
        // holds are allowed as it goes (and by the kernel when the fanotify group closes).
        self.acks = None;
        let _ = nix::unistd::write(&self.stop_write, &[1]);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn drain_pipe(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 64];
    let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
    while poll(&mut pfd, PollTimeout::ZERO).unwrap_or(0) > 0 {
        if !matches!(nix::unistd::read(fd, &mut buf), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Marks the inode now at `path`.
fn mark_inode(fan: &Fanotify, path: &Path) -> Result<(), nix::Error> {
    fan.mark(
        MarkFlags::FAN_MARK_ADD,
        MaskFlags::FAN_OPEN_EXEC_PERM | MaskFlags::FAN_MODIFY,
        nix::fcntl::AT_FDCWD,
        Some(path),
    )
}

struct Watcher {
    fan: Fanotify,
    inotify: Inotify,
    path: PathBuf,
    name: OsString,
    state: Arc<Mutex<State>>,
    wake_write: OwnedFd,
    stop_read: OwnedFd,
    acks: mpsc::Receiver<()>,
}

impl Watcher {
    fn run(self) {
        loop {
            let mut fds = [
                PollFd::new(self.fan.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.stop_read.as_fd(), PollFlags::POLLIN),
            ];
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            let ready = |i: usize| {
                fds[i]
                    .revents()
                    .is_some_and(|r| !(r & (PollFlags::POLLIN | PollFlags::POLLHUP)).is_empty())
            };
            let (fan_ready, dir_ready, stop) = (ready(0), ready(1), ready(2));
            if stop {
                return;
            }
            if fan_ready && !self.on_inode_events() {
                return;
            }
            if dir_ready {
                self.on_directory_events();
            }
        }
    }

    /// Handles events on the traced inode; false when the session is gone.
    fn on_inode_events(&self) -> bool {
        let Ok(events) = self.fan.read_events() else {
            return true;
        };
        let mut held = Vec::new();
        let mut written = false;
        for event in &events {
            let mask = event.mask();
            if mask.contains(MaskFlags::FAN_MODIFY) {
                written = true;
            }
            if mask.contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
                let Some(fd) = event.fd() else { continue };
                let attached = lock(&self.state).attached;
                let unchanged = match (attached, fstat_identity(fd)) {
                    // Probes live on the planned inode only: another inode has none.
                    (Some(planned), Some(now)) => {
                        planned == now || (planned.dev, planned.ino) != (now.dev, now.ino)
                    }
                    // Nothing attached: nothing stale to run.
                    (None, _) => true,
                    (Some(_), None) => false,
                };
                if unchanged {
                    self.respond(fd);
                } else {
                    written = true;
                    held.push(fd);
                }
            }
        }
        if written && lock(&self.state).attached.is_some() {
            // An ack left from an earlier detach must not release these execs.
            while self.acks.try_recv().is_ok() {}
            self.notify(FileChange::WrittenInPlace);
            // Execs of the changed file wait until the probes are gone.
            if self.acks.recv().is_err() {
                for fd in held {
                    self.respond(fd);
                }
                return false;
            }
        }
        for fd in held {
            self.respond(fd);
        }
        true
    }

    /// A complete file appeared at the traced path: mark the new inode and report it.
    fn on_directory_events(&self) {
        let Ok(events) = self.inotify.read_events() else {
            return;
        };
        let ours = events.iter().any(|e| {
            e.name.as_deref() == Some(self.name.as_os_str())
                && e.mask
                    .intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO)
        });
        if !ours {
            return;
        }
        // The old inode's marks go; the new one's exec are gated from now on.
        let _ = self.fan.mark(
            MarkFlags::FAN_MARK_FLUSH,
            MaskFlags::empty(),
            nix::fcntl::AT_FDCWD,
            None::<&Path>,
        );
        if mark_inode(&self.fan, &self.path).is_ok() {
            self.notify(FileChange::Replaced);
        }
    }

    fn notify(&self, change: FileChange) {
        lock(&self.state).pending.push(change);
        let _ = nix::unistd::write(&self.wake_write, &[1]);
    }

    fn respond(&self, fd: BorrowedFd<'_>) {
        let _ = self
            .fan
            .write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
    }
}

fn fstat_identity(fd: BorrowedFd<'_>) -> Option<Identity> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    Some(Identity {
        dev: st.st_dev,
        ino: st.st_ino,
        ctime: (st.st_ctime, st.st_ctime_nsec),
    })
}
