//! Running the loop program: alone, under the empty program (the floor), under the gotrace CLI
//! and under bpftrace. Every child is killed and reaped if the benchmark stops half-way.

use crate::floor::Floor;
use anyhow::{bail, Context, Result};
use gotrace_kernel::Target;
use gotrace_output::Summary;
use gotrace_plan::ProbePlan;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for a tracer to attach before giving up.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// What the loop program printed: `calls=N ns_per_call=X elapsed_ns=E sum=S`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoopOutput {
    pub calls: u64,
    pub ns_per_call: f64,
    pub elapsed_ns: u64,
    pub sum: i64,
}

impl LoopOutput {
    pub fn parse(stdout: &str) -> Option<LoopOutput> {
        let line = stdout.lines().find(|l| l.starts_with("calls="))?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        Some(LoopOutput {
            calls: field("calls")?.parse().ok()?,
            ns_per_call: field("ns_per_call")?.parse().ok()?,
            elapsed_ns: field("elapsed_ns")?.parse().ok()?,
            sum: field("sum")?.parse().ok()?,
        })
    }

    /// Same result per call as `reference` (the untraced run): the target computed correctly.
    pub fn agrees_with(&self, reference: &LoopOutput) -> bool {
        i128::from(self.sum) * i128::from(reference.calls)
            == i128::from(reference.sum) * i128::from(self.calls)
    }
}

/// One run of the loop program.
#[derive(Clone, Debug)]
pub struct TargetRun {
    pub output: Option<LoopOutput>,
    pub status: ExitStatus,
    pub stderr: String,
}

impl TargetRun {
    /// `ok`, `exit 2: SIGILL: illegal instruction`, `killed by signal 4`, `ok, WRONG RESULTS`.
    pub fn describe(&self, reference: Option<&LoopOutput>) -> String {
        if self.harmed(reference) && self.status.success() {
            return "ok, WRONG RESULTS".into();
        }
        if self.status.success() {
            return "ok".into();
        }
        // The Go runtime turns fatal signals into a message and exit status 2.
        let why = self
            .stderr
            .lines()
            .find(|l| {
                [
                    "fatal error",
                    "SIG",
                    "unexpected return pc",
                    "unknown caller pc",
                    "panic:",
                ]
                .iter()
                .any(|m| l.contains(m))
            })
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("exit {code}{why}"),
            (None, Some(sig)) => format!("killed by signal {sig}{why}"),
            _ => format!("{}{why}", self.status),
        }
    }

    pub fn harmed(&self, reference: Option<&LoopOutput>) -> bool {
        !self.status.success()
            || match (self.output, reference) {
                (Some(out), Some(reference)) => !out.agrees_with(reference),
                (None, _) => true,
                _ => false,
            }
    }
}

/// The loop program (fixtures/go/bench_loop) and how long each run loops.
pub struct LoopTarget {
    pub binary: PathBuf,
    pub seconds: f64,
}

impl LoopTarget {
    /// `func`: `fib`, `work` or `ops`.
    pub fn run(&self, func: &str, goroutines: u32, env: &[(&str, &str)]) -> Result<TargetRun> {
        let output = Command::new(&self.binary)
            .args(["-func", func, "-g", &goroutines.to_string()])
            .arg(format!("-for={}ms", (self.seconds * 1000.0) as u64))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.binary.display()))?;
        Ok(TargetRun {
            output: LoopOutput::parse(&String::from_utf8_lossy(&output.stdout)),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// A child process (its stderr going to a file, so it can never block on a full pipe), killed
/// and reaped when dropped.
pub struct Child {
    process: std::process::Child,
    stderr: PathBuf,
}

impl Child {
    pub fn spawn(cmd: &mut Command, stderr: PathBuf) -> Result<Child> {
        let file =
            fs::File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        let what = format!("{:?}", cmd.get_program());
        let process = cmd
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Child { process, stderr })
    }

    pub fn id(&self) -> u32 {
        self.process.id()
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn interrupt(&self) {
        // SAFETY: kill(2) on the PID of a child we have not reaped yet.
        unsafe { libc::kill(self.process.id() as i32, libc::SIGINT) };
    }

    /// Fails if the child has already exited (it could not attach).
    pub fn check_alive(&mut self, what: &str) -> Result<()> {
        if let Some(status) = self.process.try_wait()? {
            bail!(
                "{what} exited before attaching ({status}): {}",
                self.stderr_text().trim()
            );
        }
        Ok(())
    }

    /// Waits (sleeping 10 ms at a time, as the end-to-end tests do) until `ready()` holds.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        while !ready() {
            self.check_alive(what)?;
            if Instant::now() > deadline {
                bail!("{what} did not attach within {ATTACH_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// SIGINT, then waits for it to finish; returns its stderr and the CPU time it used.
    /// Call it after every other child has been reaped: the CPU time is the growth of this
    /// process's reaped-children total.
    pub fn stop(mut self) -> Result<(String, Duration)> {
        let before = children_cpu();
        self.interrupt();
        self.process.wait()?;
        Ok((self.stderr_text(), children_cpu().saturating_sub(before)))
    }
}

/// User + system CPU time of every child reaped so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the rusage we pass; all-zero is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The empty BPF program on `plan`'s sites while the target runs.
pub fn under_floor(plan: &ProbePlan, target: &LoopTarget, func: &str) -> Result<TargetRun> {
    let floor = Floor::attach(plan, &target.binary, &Target::Binary(target.binary.clone()))
        .context("attaching the empty program (the floor)")?;
    let run = target.run(func, 1, &[]);
    drop(floor);
    run
}

/// What a traced run delivered.
#[derive(Clone, Debug)]
pub struct Traced {
    pub target: TargetRun,
    /// Calls the tracer reported (JSON lines for gotrace; completed calls for bpftrace).
    pub delivered: u64,
    pub lost: Option<u64>,
    /// From starting the target until the tracer had written everything and exited.
    pub wall: Duration,
    /// CPU time the tracer's own process used (user + system), attach and detach included.
    pub tracer_cpu: Duration,
    /// Delivered lines that passed [`GotraceOptions::check`].
    pub checked: Option<u64>,
}

/// How to run gotrace beyond the function pattern.
#[derive(Clone, Copy, Default)]
pub struct GotraceOptions<'a> {
    /// `--no-return`
    pub entry_only: bool,
    /// `gotrace stats` instead of `gotrace trace`: delivered are the calls it counted.
    pub stats: bool,
    /// More options for `gotrace trace` (`--string-max 8192`).
    pub extra_args: &'a [&'a str],
    /// Run on every JSON line gotrace wrote; the lines it holds for are counted.
    pub check: Option<&'a dyn Fn(&str) -> bool>,
}

/// `gotrace trace --json [--no-return] [OPTIONS] BINARY PATTERN > file` (or `gotrace stats`),
/// the target started once it is attached, gotrace interrupted once the target has finished.
pub fn under_gotrace(
    gotrace: &Path,
    work_dir: &Path,
    target: &LoopTarget,
    pattern: &str,
    func: &str,
    goroutines: u32,
    options: &GotraceOptions<'_>,
) -> Result<Traced> {
    let out_path = work_dir.join("gotrace.jsonl");
    let ready = work_dir.join("gotrace.ready");
    let _ = fs::remove_file(&ready);
    let out =
        fs::File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
    let mut cmd = Command::new(gotrace);
    let command = if options.stats { "stats" } else { "trace" };
    cmd.args([command, "--json", "--ready-file"]).arg(&ready);
    if options.entry_only {
        cmd.arg("--no-return");
    }
    cmd.args(options.extra_args);
    cmd.arg(&target.binary).arg(pattern);
    let mut child = Child::spawn(cmd.stdout(out), work_dir.join("gotrace.stderr"))?;
    child.wait_until("gotrace", || ready.exists())?;
    let started = Instant::now();
    let run = target.run(func, goroutines, &[])?;
    let (_, tracer_cpu) = child.stop()?;
    let wall = started.elapsed();
    let output = read_json_lines(&out_path, options.check)?;
    let _ = fs::remove_file(&out_path);
    Ok(Traced {
        target: run,
        delivered: output.calls,
        lost: output.summary.as_ref().map(Summary::calls_lost),
        wall,
        tracer_cpu,
        checked: options.check.map(|_| output.passed),
    })
}

/// What `gotrace trace --json` wrote: its call lines, how many passed a check, its summary
/// (or what `gotrace stats --json` counted, in its final lines).
#[derive(Debug)]
pub struct JsonOutput {
    pub calls: u64,
    pub passed: u64,
    pub summary: Option<Summary>,
}

/// Reads gotrace's JSON lines: counts the `call` objects (running `check` on each) and reads
/// the `summary` object, the last line.
pub fn read_json_lines(path: &Path, check: Option<&dyn Fn(&str) -> bool>) -> Result<JsonOutput> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut output = JsonOutput {
        calls: 0,
        passed: 0,
        summary: None,
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(output);
        }
        // Calls are written with their type first; other records are few.
        if line.starts_with(br#"{"type":"call","#) {
            output.calls += 1;
            if let Some(check) = check {
                let text = String::from_utf8_lossy(&line);
                output.passed += u64::from(check(text.trim_end_matches('\n')));
            }
        } else if line.starts_with(br#"{"type":"stats","#) {
            let row: serde_json::Value = serde_json::from_slice(&line)
                .with_context(|| format!("reading gotrace's stats in {}", path.display()))?;
            if row["final"] == true {
                output.calls += row["calls"].as_u64().unwrap_or(0);
            }
        } else if line.starts_with(br#"{"type":"summary","#) {
            let summary = serde_json::from_slice(&line)
                .with_context(|| format!("reading gotrace's summary in {}", path.display()))?;
            output.summary = Some(summary);
        }
    }
}

/// The seed's one-liner (`uprobe` at the symbol printing `reg("ax")`, plus a `uretprobe`
/// The seed's one-liner (`uprobe` at the symbol printing `reg("ax")`, plus a `uretprobe`
/// printing `retval` unless `entry_only`), output to a file.
pub fn under_bpftrace(
    work_dir: &Path,
    target: &LoopTarget,
    function: &str,
    func: &str,
    entry_only: bool,
    async_preempt_off: bool,
) -> Result<Traced> {
    let out_path = work_dir.join("bpftrace.out");
    // bpftrace limits strings to 64 bytes: keep the path short whatever the checkout's is.
    let ready = std::env::temp_dir().join(format!("gtb-{}.ready", std::process::id()));
    let _ = fs::remove_file(&ready);
    let bin = target.binary.display();
    // BEGIN fires once every probe is attached; bpftrace buffers its output file, so the
    // readiness signal is a file it creates (`system` needs --unsafe).
    let mut script = format!(
        r#"BEGIN {{ system("touch {}"); }} uprobe:{bin}:{function} {{ printf("%d\n", reg("ax")); }}"#,
        ready.display()
    );
    if !entry_only {
        // The seed article's one-liner, measured for comparison (it can kill the target).
        let seed_return_probe =
            format!(r#" uretprobe:{bin}:{function} {{ printf("ret %d\n", retval); }}"#); // bpftrace's, not gotrace's
        script.push_str(&seed_return_probe);
    }
    let mut child = Child::spawn(
        Command::new("bpftrace")
            .arg("--unsafe")
            .arg("-o")
            .arg(&out_path)
            .arg("-e")
            .arg(&script)
            .stdout(Stdio::null()),
        work_dir.join("bpftrace.stderr"),
    )
    .context("bpftrace is installed by scripts/setup.sh")?;
    child.wait_until("bpftrace", || ready.exists())?;
    let env: &[(&str, &str)] = if async_preempt_off {
        &[("GODEBUG", "asyncpreemptoff=1")]
    } else {
        &[]
    };
    let started = Instant::now();
    let run = target.run(func, 1, env)?;
    let (stderr, tracer_cpu) = child.stop()?;
    let wall = started.elapsed();
    let text = fs::read_to_string(&out_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let (mut entries, mut returns, mut lost) = (0u64, 0u64, 0u64);
    for line in text.lines().chain(stderr.lines()) {
        if line.starts_with("ret ") {
            returns += 1;
        } else if line.parse::<i64>().is_ok() {
            entries += 1;
        } else if let Some(n) = line
            .strip_prefix("Lost ")
            .and_then(|r| r.split_whitespace().next())
        {
            lost += n.parse::<u64>().unwrap_or(0);
        }
    }
    Ok(Traced {
        target: run,
        delivered: if entry_only { entries } else { returns },
        lost: Some(lost),
        wall,
        tracer_cpu,
        checked: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_loop_programs_line_and_gotraces_summary() {
        let out =
            LoopOutput::parse("calls=4096 ns_per_call=3.46 elapsed_ns=14172 sum=225280\n").unwrap();
        assert_eq!(out.calls, 4096);
        assert_eq!(out.sum, 225_280);
        let half = LoopOutput {
            calls: 2048,
            sum: 112_640,
            ..out
        };
        assert!(half.agrees_with(&out));
        assert!(!LoopOutput { sum: 1, ..half }.agrees_with(&out));
    }

    #[test]
    fn reads_gotraces_calls_and_summary_from_its_json_lines() {
        let path = std::env::temp_dir().join(format!("bench-json-{}", std::process::id()));
        let lines = [
            r#"{"type":"attached","binary":"/x","functions":["main.F"]}"#,
            r#"{"type":"call","func":"main.F","args":{"n":1}}"#,
            r#"{"type":"lost","cause":"lost_ring_full","calls":3}"#,
            r#"{"type":"call","func":"main.F","args":{"n":2}}"#,
            r#"{"type":"summary","calls":2,"unreturned":0,"lost_ring_full":3,"sites_attached":2,"calls_traced":2,"calls_lost":3}"#,
        ];
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        let check = |line: &str| line.contains(r#""n":2"#);
        let output = read_json_lines(&path, Some(&check)).unwrap();
        let _ = fs::remove_file(&path);
        assert_eq!((output.calls, output.passed), (2, 1));
        let summary = output.summary.expect("the summary");
        assert_eq!((summary.calls, summary.calls_lost()), (2, 3));
    }
}
