//! A 1 MiB string argument (issue 4): `main.Text(s string)` of the loop program, called with
//! the same 1 MiB string (byte i is `'a' + i % 26`) in a tight loop. Untraced, under the empty
//! program on gotrace's sites, and under gotrace at the default `--string-max` and the largest;
//! every JSON line gotrace writes is checked for the string's first `--string-max` bytes and
//! for the argument listed in "truncated".
//!
//! gotrace's JSON goes to a tmpfs (/dev/shm) here: at 8 KiB a line that is ≈ 0.5 GB a second,
//! and a file on this guest's disk falls behind its writeback, so gotrace stalls and the
//! kernel drops events — a cost of the disk, not of tracing.

use crate::report::{CaptureCheck, FunctionBench, Probes, Tracer};
use crate::run::{self, GotraceOptions, LoopTarget};
use anyhow::Result;
use gotrace_binary::GoBinary;
use std::cell::Cell;
use std::path::{Path, PathBuf};

pub const FUNCTION: &str = "main.Text";
/// The loop program's `-func`.
const FUNC: &str = "text";
/// The parameter's name, from DWARF.
pub const ARG: &str = "s";
/// gotrace's default, then its largest.
const STRING_MAXES: [usize; 2] = [256, 8192];

/// The first `n` bytes of the loop program's string.
pub fn text_prefix(n: usize) -> String {
    (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
}

/// What a JSON line must hold: `"args":{"s":"<exactly the prefix>"`, then `"s"` in the
/// "truncated" list.
pub struct Expected {
    args: String,
    name: String,
    null: String,
}

impl Expected {
    pub fn new(arg: &str, prefix: &str) -> Expected {
        Expected {
            args: format!("\"args\":{{\"{arg}\":\"{prefix}\""),
            name: format!("\"{arg}\""),
            null: format!("\"args\":{{\"{arg}\":null"),
        }
    }

    /// The line shows the argument as null (its memory was not delivered).
    pub fn is_null(&self, line: &str) -> bool {
        line.contains(&self.null)
    }

    pub fn matches(&self, line: &str) -> bool {
        let Some(at) = line.find(&self.args) else {
            return false;
        };
        let rest = &line[at + self.args.len()..];
        rest.split_once("\"truncated\":[")
            .and_then(|(_, list)| list.split_once(']'))
            .is_some_and(|(list, _)| list.split(',').any(|n| n == self.name))
    }
}

pub struct StringBench {
    pub bench: FunctionBench,
    pub checks: Vec<CaptureCheck>,
    /// Where gotrace's JSON went: `/dev/shm/…` (a tmpfs) or the work directory.
    pub output_dir: PathBuf,
}

/// A directory on a tmpfs for gotrace's output when there is one, else `work_dir`.
fn output_dir(work_dir: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let dir = shm.join(format!("gotrace-bench-{}", std::process::id()));
        if std::fs::create_dir_all(&dir).is_ok() {
            return dir;
        }
    }
    work_dir.to_owned()
}

pub fn measure(
    repeat: usize,
    gotrace: &Path,
    work_dir: &Path,
    binary: &GoBinary,
    target: &LoopTarget,
) -> Result<StringBench> {
    let out_dir = output_dir(work_dir);
    let result = measure_into(repeat, gotrace, &out_dir, binary, target);
    if out_dir != work_dir {
        let _ = std::fs::remove_dir_all(&out_dir);
    }
    result.map(|(bench, checks)| StringBench {
        bench,
        checks,
        output_dir: out_dir,
    })
}

fn measure_into(
    repeat: usize,
    gotrace: &Path,
    out_dir: &Path,
    binary: &GoBinary,
    target: &LoopTarget,
) -> Result<(FunctionBench, Vec<CaptureCheck>)> {
    let plan = crate::plan_for(binary, FUNCTION, false)?;
    let mut rows = Vec::new();
    let (baseline, reference) = crate::untraced(target, FUNCTION, FUNC, repeat)?;
    let reference = Some(&reference);
    rows.push(baseline);
    crate::note(&format!(
        "{FUNCTION}: floor, {} sites (median of {repeat})",
        plan.sites.len()
    ));
    let floor = crate::median(repeat, || run::under_floor(&plan, target, FUNC), |r| r)?;
    rows.push(crate::row(
        Tracer::Floor,
        Probes::Full,
        &floor,
        None,
        None,
        reference,
    ));

    let mut checks = Vec::new();
    for string_max in STRING_MAXES {
        crate::note(&format!(
            "{FUNCTION}: gotrace --string-max {string_max} (median of {repeat})"
        ));
        let expected = Expected::new(ARG, &text_prefix(string_max));
        let nulls = Cell::new(0u64);
        let check = |line: &str| {
            let ok = expected.matches(line);
            if !ok && expected.is_null(line) {
                nulls.set(nulls.get() + 1);
            }
            ok
        };
        let max = string_max.to_string();
        let extra_args = ["--string-max", max.as_str()];
        let options = GotraceOptions {
            entry_only: false,
            stats: false,
            extra_args: &extra_args,
            check: Some(&check),
        };
        let totals = Cell::new(CaptureCheck {
            string_max,
            ..Default::default()
        });
        let t = crate::median(
            repeat,
            || {
                let t = run::under_gotrace(gotrace, out_dir, target, FUNCTION, FUNC, 1, &options)?;
                let mut c = totals.take();
                c.runs += 1;
                c.calls += t.target.output.map_or(0, |o| o.calls);
                c.delivered += t.delivered;
                c.complete += t.checked.unwrap_or(0);
                totals.set(c);
                Ok(t)
            },
            |t| &t.target,
        )?;
        let mut row = crate::traced_row(Tracer::Gotrace, Probes::Full, &t, reference);
        row.options = format!("--string-max {string_max}");
        rows.push(row);
        checks.push(CaptureCheck {
            null_args: nulls.get(),
            ..totals.take()
        });
    }
    Ok((
        FunctionBench {
            function: FUNCTION.to_owned(),
            sites: crate::describe_sites(binary, &plan),
            rows,
        },
        checks,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_captured_prefix_and_the_truncated_mark() {
        assert_eq!(text_prefix(28), "abcdefghijklmnopqrstuvwxyzab");
        let expected = Expected::new("s", &text_prefix(4));
        let line = |s: &str, truncated: &str| {
            format!(
                r#"{{"ts":"x","func":"main.Text","outcome":"returned","args":{{"s":"{s}"}},"results":{{"~r0":1}},"types":{{"s":"string","~r0":"int"}},"truncated":[{truncated}],"unavailable":{{}},"duration_ns":1}}"#
            )
        };
        assert!(expected.matches(&line("abcd", r#""s""#)));
        assert!(expected.matches(&line("abcd", r#""x","s""#)));
        assert!(!expected.matches(&line("abcd", "")), "not marked truncated");
        assert!(!expected.matches(&line("abc", r#""s""#)), "short");
        assert!(
            !expected.matches(&line("abcde", r#""s""#)),
            "past the limit"
        );
        assert!(!expected.matches(&line("abce", r#""s""#)), "wrong bytes");
        assert!(!expected.matches(r#"{"args":null,"truncated":["s"]}"#));
        let null = r#"{"args":{"s":null},"results":{"~r0":1},"truncated":[],"unavailable":{}}"#;
        assert!(!expected.matches(null) && expected.is_null(null));
        assert!(!expected.is_null(&line("abcd", r#""s""#)));
    }
}
