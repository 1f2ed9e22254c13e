//! Waiting for whichever comes first: a batch of events, a signal, the traced process exiting,
//! or the flush timer.

use crate::KernelError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Events are waiting, or the timer ran out: drain the ring buffer.
    Drain,
    /// One of the watched "stop" descriptors fired (a signal pipe, a process's pidfd).
    Stop,
}

pub struct Waiter {
    epoll: OwnedFd,
    stop_fds: Vec<RawFd>,
    interval: Duration,
}

const DRAIN_TOKEN: u64 = u64::MAX;

impl Waiter {
    /// `events_fd` wakes for draining; every fd in `stop_fds` wakes for stopping. `interval`
    /// bounds how long events may sit in the ring buffer before they are printed.
    pub fn new(
        events_fd: RawFd,
        stop_fds: &[RawFd],
        interval: Duration,
    ) -> Result<Waiter, KernelError> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(KernelError::io("epoll_create1")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        let waiter = Waiter {
            epoll,
            stop_fds: stop_fds.to_vec(),
            interval,
        };
        waiter.add(events_fd, DRAIN_TOKEN)?;
        for &fd in stop_fds {
            waiter.add(fd, fd as u64)?;
        }
        Ok(waiter)
    }

    fn add(&self, fd: RawFd, token: u64) -> Result<(), KernelError> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; `ev` is a valid epoll_event for the call.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0
        {
            return Err(KernelError::io("epoll_ctl")(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub fn wait(&self) -> Result<Wake, KernelError> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let timeout = self.interval.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `events` is a writable array of the length passed.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Wake::Drain);
            }
            return Err(KernelError::io("epoll_wait")(err));
        }
        let fired = &events[..n as usize];
        if fired
            .iter()
            .any(|e| self.stop_fds.iter().any(|&fd| e.u64 == fd as u64))
        {
            return Ok(Wake::Stop);
        }
        Ok(Wake::Drain)
    }

    /// Waits for a stop descriptor only, at most one interval: for when events must stay in
    /// the ring buffer for now (the output is backed up).
    pub fn wait_for_stop(&self) -> Result<Wake, KernelError> {
        let timeout = self.interval.as_millis().min(i32::MAX as u128) as i32;
        self.poll_stop(timeout)
    }

    /// Whether a stop descriptor has fired, without waiting: looked at between parts of a
    /// batch, so a stop is seen within a few events however slowly they are decoded.
    pub fn stop_requested(&self) -> Result<bool, KernelError> {
        Ok(self.poll_stop(0)? == Wake::Stop)
    }

    fn poll_stop(&self, timeout: i32) -> Result<Wake, KernelError> {
        let mut fds: Vec<libc::pollfd> = self
            .stop_fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a writable array of the length passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Wake::Drain);
            }
            return Err(KernelError::io("poll")(err));
        }
        match fds.iter().any(|p| p.revents != 0) {
            true => Ok(Wake::Stop),
            false => Ok(Wake::Drain),
        }
    }
}

/// A descriptor that becomes readable when process `pid` exits.
pub fn pidfd(pid: u32) -> Result<OwnedFd, KernelError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(KernelError::NoSuchProcess(pid));
        }
        return Err(KernelError::io(format!("pidfd_open({pid})"))(err));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}
