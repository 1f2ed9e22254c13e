//! The only part of gotrace that talks to the kernel: it loads the BPF program, attaches it at
//! the sites of a [`ProbePlan`], drains the ring buffer into [`RawCall`]s, reads the BPF
//! counters, and reads target processes through `/proc`.

mod error;
pub mod proc;
mod session;
mod trial;
mod wait;
mod watch;

pub use error::{KernelError, Missing};
pub use session::{check_environment, EventStream, PER_SITE_LIMIT};
pub use session::{AttachMethod, AttachReport, Counters, InFlightNow, Session, Target};
pub use trial::uprobe_multi_supported;
pub use wait::{pidfd, Waiter, Wake};
pub use watch::{BinaryWatch, FileChange};

/// Internals that the crate's integration tests check against the kernel (tests/bpf.rs), for
/// them only: not an API.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod test_support {
    pub use crate::session::cookie;
    pub use crate::skel::types::{gt_site_kind, gt_skip};
    pub use crate::trial::{
        kernel_btf_has_uprobe_multi, kernel_has_uprobe_multi, try_uprobe_multi,
    };
}

mod skel {
    #![allow(clippy::all, unused_imports, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/gotrace.skel.rs"));
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC in nanoseconds: converts BPF timestamps to wall time.
pub fn realtime_minus_monotonic_ns() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into a valid timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}
