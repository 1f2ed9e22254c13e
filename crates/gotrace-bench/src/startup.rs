//! A large real binary: from starting `gotrace trace` to its ready file (reading the binary,
//! planning, loading the BPF program, attaching) and gotrace's peak memory by then, on the go
//! command built from the newest toolchain's source. The same on the small loop program is the
//! startup floor: what any start costs, whatever the binary. Beside them, the empty program's
//! load and attach on the very same sites (the kernel's share).

use crate::floor::Floor;
use crate::report::Startup;
use crate::run::Child;
use anyhow::{bail, Context, Result};
use gotrace_binary::GoBinary;
use gotrace_kernel::Target;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longer than this to the ready file is a failure, not a figure.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `repeat` starts of `gotrace trace BINARY PATTERN`, each stopped once ready: the median time
/// to ready and the largest peak memory.
pub fn measure(
    gotrace: &Path,
    work_dir: &Path,
    binary_path: &Path,
    label: &str,
    pattern: &str,
    repeat: usize,
) -> Result<Startup> {
    let binary = GoBinary::open(binary_path)?;
    let plan = crate::plan_for(&binary, pattern, false)?;
    let started = Instant::now();
    let floor = Floor::attach(&plan, binary_path, &Target::Binary(binary_path.to_owned()))
        .context("attaching the empty program (the floor)")?;
    let floor_attach = started.elapsed();
    drop(floor);

    let mut ready = Vec::with_capacity(repeat);
    let mut peak = 0;
    for _ in 0..repeat {
        let (time, rss) = until_ready(gotrace, work_dir, binary_path, pattern)?;
        ready.push(time);
        peak = peak.max(rss);
    }
    ready.sort();
    Ok(Startup {
        binary: label.to_owned(),
        functions: binary.functions().len(),
        pattern: pattern.to_owned(),
        sites: plan.sites.len(),
        ready: ready[ready.len() / 2],
        peak_rss: peak,
        floor_attach,
    })
}

/// One start: the time from spawning gotrace to its ready file, and its peak resident memory
/// (VmHWM) then.
fn until_ready(
    gotrace: &Path,
    work_dir: &Path,
    binary: &Path,
    pattern: &str,
) -> Result<(Duration, u64)> {
    let ready = work_dir.join("startup.ready");
    let _ = fs::remove_file(&ready);
    let mut cmd = Command::new(gotrace);
    cmd.args(["trace", "--ready-file"])
        .arg(&ready)
        .arg(binary)
        .arg(pattern)
        .stdout(Stdio::null());
    let started = Instant::now();
    let mut child = Child::spawn(&mut cmd, work_dir.join("startup.stderr"))?;
    // Polled finely: the small binary's start is a few tens of milliseconds.
    while !ready.exists() {
        child.check_alive("gotrace")?;
        if started.elapsed() > READY_TIMEOUT {
            bail!("gotrace was not ready within {READY_TIMEOUT:?} on {pattern}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    let status = fs::read_to_string(format!("/proc/{}/status", child.id()))
        .context("reading gotrace's /proc/PID/status")?;
    let peak = vm_hwm(&status).context("no VmHWM in gotrace's /proc/PID/status")?;
    child.stop()?;
    Ok((elapsed, peak))
}

/// Peak resident set size in bytes, from `/proc/PID/status` (`VmHWM:   91600 kB`).
fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_memory_from_proc_status() {
        let status =
            "Name:\tgotrace\nVmPeak:\t  200000 kB\nVmHWM:\t   91600 kB\nVmRSS:\t   90000 kB\n";
        assert_eq!(super::vm_hwm(status), Some(91_600 * 1024));
        assert_eq!(super::vm_hwm("Name:\tgotrace\n"), None);
    }
}
