//! Binary mode follows the traced file across rebuilds. Written in place, the probes are
//! detached before any process can run the new bytes under them (the kernel would single-step
//! the old instructions it saved); once a complete file is at the path again — the in-place
//! write finished, or a new file was moved or linked there — it is planned and traced anew.

use crate::trace::CallSink;
use anyhow::Result;
use gotrace_kernel::{BinaryWatch, FileChange, Target};
use gotrace_output::{Note, Record, Warning};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Follow {
    watch: BinaryWatch,
    path: PathBuf,
    /// The file as it was just before the current session planned it.
    planned: Option<std::fs::Metadata>,
}

/// What to do after a session ended.
pub enum Next {
    /// A new file is at the path: plan and attach to it.
    TraceAgain,
    Stop,
}

impl Follow {
    /// Watches the traced file in binary mode; a `--pid` process keeps its own file. Where the
    /// kernel will not let gotrace watch (fanotify's permission events need CAP_SYS_ADMIN),
    /// it traces unwatched and says what that risks.
    pub fn start(target: &Target, sink: &mut dyn CallSink) -> Result<Option<Follow>> {
        let Target::Binary(path) = target else {
            return Ok(None);
        };
        match BinaryWatch::start(path) {
            Ok(watch) => Ok(Some(Follow {
                watch,
                path: path.clone(),
                planned: None,
            })),
            Err(e) => {
                let warning = Warning::new(format!(
                    "{e}: if {} is written in place while traced, processes started from it may crash; stop gotrace before replacing it",
                    path.display()
                ));
                sink.record(&Record::Warning(&warning))?;
                Ok(None)
            }
        }
    }

    /// Readable when the file changed: stops the session like a signal does.
    pub fn fd(&self) -> RawFd {
        self.watch.fd()
    }

    /// Just before a session opens the file to plan it.
    pub fn planning(&mut self) {
        self.planned = std::fs::metadata(&self.path).ok();
    }

    /// The session's probes are attached to the file `planning` saw.
    pub fn attached(&self) {
        if let Some(meta) = &self.planned {
            self.watch.attached(meta);
        }
    }

    /// After a session ended (and detached): whether the file changed and a new one is ready
    /// to trace. `failed`: the session could not trace the file at the path (a half-written or
    /// broken build), so gotrace waits for the next one. Waits until a complete file is at the
    /// path, or a signal on `signal_fd`; while waiting, `exit_now` is cleared so a signal
    /// ends the wait rather than the process.
    pub fn next(
        &self,
        signal_fd: RawFd,
        exit_now: &AtomicBool,
        failed: bool,
        sink: &mut dyn CallSink,
    ) -> Result<Next> {
        let mut changes = self.watch.take();
        if readable(signal_fd) || (changes.is_empty() && !failed) {
            return Ok(Next::Stop);
        }
        // Nothing is attached any more: execs the watch holds may go on.
        self.watch.detached();
        if changes.contains(&FileChange::WrittenInPlace) {
            let message = format!(
                "{} was written in place: probes detached (processes started from it now would run stale instructions under them); tracing resumes when the write is complete",
                self.path.display()
            );
            sink.record(&Record::Note(&Note { message }))?;
        }
        exit_now.store(false, Ordering::SeqCst);
        while !changes.contains(&FileChange::Replaced) {
            // SAFETY: both descriptors stay open for the whole call: the watch's is owned by
            // `self`, the signal pipe by the caller, who passes it on every call.
            let (watch_fd, signal) = unsafe {
                (
                    BorrowedFd::borrow_raw(self.watch.fd()),
                    BorrowedFd::borrow_raw(signal_fd),
                )
            };
            let mut fds = [
                PollFd::new(watch_fd, PollFlags::POLLIN),
                PollFd::new(signal, PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, PollTimeout::NONE);
            if readable(signal_fd) {
                exit_now.store(true, Ordering::SeqCst);
                return Ok(Next::Stop);
            }
            changes = self.watch.take();
            if changes.contains(&FileChange::WrittenInPlace) {
                self.watch.detached();
            }
        }
        exit_now.store(true, Ordering::SeqCst);
        let message = format!("{} was replaced: tracing the new file", self.path.display());
        sink.record(&Record::Note(&Note { message }))?;
        Ok(Next::TraceAgain)
    }
}

/// Whether `fd` has something to read now (the signal pipe: a signal came).
fn readable(fd: RawFd) -> bool {
    // SAFETY: the caller owns `fd` and keeps it open across this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) > 0
}
