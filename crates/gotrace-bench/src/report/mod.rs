//! What the benchmark measured, the ratios the issue asks for, and the markdown tables. Pure:
//! the tests below run it on recorded numbers.

mod capture;
mod placement;
mod scale;

pub use capture::{capture_lines, string_ratios, CaptureCheck};
pub use placement::{placement_table, Handling, Placement, PlacementSite};
pub use scale::{
    attach_table, scale_ratios, startup_ratios, startup_table, throughput_table, AttachTiming,
    Startup, Throughput,
};
use std::fmt::Write as _;
use std::time::Duration;

/// Who is watching the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracer {
    Untraced,
    /// The empty BPF program on gotrace's own sites.
    Floor,
    /// The real `gotrace trace --json` CLI.
    Gotrace,
    /// The real `gotrace stats --json` CLI: counted in the kernel, no record per call.
    GotraceStats,
    /// The seed's bpftrace one-liner (entry `uprobe` at the symbol, `uretprobe` for returns).
    Bpftrace {
        async_preempt_off: bool,
    },
}

/// Which probes: entry and returns, or entry only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probes {
    None,
    Full,
    EntryOnly,
}

/// One run of the loop program.
#[derive(Clone, Debug)]
pub struct Row {
    pub tracer: Tracer,
    pub probes: Probes,
    /// The program's own figure; `None` when it did not finish.
    pub ns_per_call: Option<f64>,
    /// Calls the program says it made.
    pub calls: Option<u64>,
    /// Calls the tracer delivered (completed calls; entries in entry-only mode).
    pub delivered: Option<u64>,
    /// Events the tracer says it lost.
    pub lost: Option<u64>,
    /// `ok`, or how the target ended (`exit 2: SIGILL: illegal instruction`).
    pub status: String,
    /// The target died or computed a wrong result.
    pub harmed: bool,
    /// Options beyond the mode's own (`--string-max 8192`), shown after it.
    pub options: String,
}

impl Row {
    pub fn mode(&self) -> String {
        let probes = match self.probes {
            Probes::None => "",
            Probes::Full => "full",
            Probes::EntryOnly => "entry-only",
        };
        let mode: String = match self.tracer {
            Tracer::Untraced => "untraced".into(),
            Tracer::Floor => format!("floor (empty BPF), {probes}"),
            Tracer::Gotrace if self.probes == Probes::EntryOnly => "gotrace --no-return".into(),
            Tracer::Gotrace => "gotrace, full".into(),
            Tracer::GotraceStats if self.probes == Probes::EntryOnly => {
                "gotrace stats --no-return".into()
            }
            Tracer::GotraceStats => "gotrace stats".into(),
            Tracer::Bpftrace { async_preempt_off } => {
                let style = if self.probes == Probes::Full {
                    "one-liner"
                } else {
                    "entry uprobe only"
                };
                let godebug = if async_preempt_off {
                    ", GODEBUG=asyncpreemptoff=1"
                } else {
                    ""
                };
                format!("bpftrace {style}{godebug}")
            }
        };
        if self.options.is_empty() {
            mode
        } else {
            format!("{mode} {}", self.options)
        }
    }
}

/// All runs against one traced function.
#[derive(Clone, Debug)]
pub struct FunctionBench {
    /// `main.Fibonacci`
    pub function: String,
    /// gotrace's sites and the instruction each sits on: `entry jl, return ret ×2`.
    pub sites: String,
    pub rows: Vec<Row>,
}

/// A figure the issue sets a goal for.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    pub name: String,
    pub value: Option<f64>,
    pub goal: Goal,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Ratio {
    pub fn met(&self) -> Option<bool> {
        self.value.map(|v| match self.goal {
            Goal::AtMost(g) => v <= g,
            Goal::AtLeast(g) => v >= g,
        })
    }
}

impl FunctionBench {
    pub fn find(&self, tracer: Tracer, probes: Probes) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.tracer == tracer && r.probes == probes)
    }

    fn untraced(&self) -> Option<f64> {
        self.find(Tracer::Untraced, Probes::None)?.ns_per_call
    }

    /// What tracing adds to a call: traced ns/call − untraced ns/call.
    pub fn overhead(&self, row: &Row) -> Option<f64> {
        Some(row.ns_per_call? - self.untraced()?)
    }

    /// Overhead relative to the empty program on the same kind of probes.
    pub fn ratio_to_floor(&self, row: &Row) -> Option<f64> {
        match row.tracer {
            Tracer::Untraced => None,
            Tracer::Floor => Some(1.0),
            _ => divide(
                self.overhead(row)?,
                self.overhead(self.find(Tracer::Floor, row.probes)?)?,
            ),
        }
    }

    /// The bpftrace run to compare with: the plain one when the target survived it, else the
    /// one with asynchronous preemption off.
    pub fn bpftrace(&self, probes: Probes) -> Option<&Row> {
        let plain = self.find(
            Tracer::Bpftrace {
                async_preempt_off: false,
            },
            probes,
        );
        match plain {
            Some(row) if !row.harmed && row.ns_per_call.is_some() => Some(row),
            _ => self
                .find(
                    Tracer::Bpftrace {
                        async_preempt_off: true,
                    },
                    probes,
                )
                .filter(|r| r.ns_per_call.is_some())
                .or(plain),
        }
    }

    /// The ratios the goals are stated in.
    pub fn ratios(&self) -> Vec<Ratio> {
        let overhead_of = |tracer, probes| self.find(tracer, probes).and_then(|r| self.overhead(r));
        let gotrace_full = overhead_of(Tracer::Gotrace, Probes::Full);
        let gotrace_entry = overhead_of(Tracer::Gotrace, Probes::EntryOnly);
        let floor_full = overhead_of(Tracer::Floor, Probes::Full);
        let floor_entry = overhead_of(Tracer::Floor, Probes::EntryOnly);
        let stats_full = overhead_of(Tracer::GotraceStats, Probes::Full);
        let stats_entry = overhead_of(Tracer::GotraceStats, Probes::EntryOnly);
        let bpftrace_overhead = |probes| self.bpftrace(probes).and_then(|r| self.overhead(r));
        let label = |probes| match self.bpftrace(probes).map(|r| r.tracer) {
            Some(Tracer::Bpftrace {
                async_preempt_off: true,
            }) => " (asyncpreemptoff=1 run)",
            _ => "",
        };
        let f = &self.function;
        vec![
            Ratio {
                name: format!("{f}: gotrace full / floor full (overhead)"),
                value: gotrace_full
                    .and_then(|g| divide(g, overhead_of(Tracer::Floor, Probes::Full)?)),
                goal: Goal::AtMost(1.3),
            },
            Ratio {
                name: format!("{f}: gotrace --no-return / floor entry-only (overhead)"),
                value: gotrace_entry
                    .and_then(|g| divide(g, overhead_of(Tracer::Floor, Probes::EntryOnly)?)),
                goal: Goal::AtMost(1.3),
            },
            Ratio {
                name: format!(
                    "{f}: bpftrace one-liner / gotrace full (overhead){}",
                    label(Probes::Full)
                ),
                value: bpftrace_overhead(Probes::Full).and_then(|b| divide(b, gotrace_full?)),
                goal: Goal::AtLeast(2.0),
            },
            Ratio {
                name: format!(
                    "{f}: bpftrace-style entry / gotrace --no-return (overhead){}",
                    label(Probes::EntryOnly)
                ),
                value: bpftrace_overhead(Probes::EntryOnly).and_then(|b| divide(b, gotrace_entry?)),
                goal: Goal::AtLeast(20.0),
            },
            Ratio {
                name: format!("{f}: gotrace stats / floor full (overhead)"),
                value: stats_full.and_then(|g| divide(g, floor_full?)),
                goal: Goal::AtMost(1.1),
            },
            Ratio {
                name: format!("{f}: gotrace stats --no-return / floor entry-only (overhead)"),
                value: stats_entry.and_then(|g| divide(g, floor_entry?)),
                goal: Goal::AtMost(1.2),
            },
        ]
    }

    pub fn table(&self) -> String {
        let rows = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.mode(),
                    opt(r.ns_per_call, ns),
                    opt(
                        self.overhead(r).filter(|_| r.tracer != Tracer::Untraced),
                        ns,
                    ),
                    opt(self.ratio_to_floor(r), |v| format!("{v:.2}")),
                    delivered(r.delivered, r.calls, r.lost),
                    r.status.clone(),
                ]
            })
            .collect();
        markdown(
            &[
                "mode",
                "ns/call",
                "overhead ns/call",
                "ratio to floor",
                "delivered / calls",
                "target",
            ],
            rows,
        )
    }
}

pub fn ratio_lines(ratios: &[Ratio]) -> String {
    let mut s = String::new();
    for r in ratios {
        let goal = match r.goal {
            Goal::AtMost(g) => format!("goal ≤ {g}"),
            Goal::AtLeast(g) => format!("goal ≥ {g}"),
        };
        let verdict = match r.met() {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        let value = opt(r.value, |v| {
            if v >= 1000.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        });
        let _ = writeln!(s, "- {}: {value} ({goal}: {verdict})", r.name);
    }
    s
}

fn divide(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "—".into())
}

fn ns(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

fn delivered(delivered: Option<u64>, calls: Option<u64>, lost: Option<u64>) -> String {
    let Some(d) = delivered else {
        return "—".into();
    };
    let calls = opt(calls, |c| c.to_string());
    match lost {
        Some(l) => format!("{d} / {calls} ({l} lost)"),
        None => format!("{d} / {calls}"),
    }
}

/// A markdown table with padded columns, readable raw.
pub fn markdown(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([headers[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..headers.len()).map(width).collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut s = line(headers.iter().map(|h| h.to_string()).collect());
    s.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        s.push_str(&line(r));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(binary: &str, ready_ms: u64, peak_mb: u64) -> Startup {
        Startup {
            binary: binary.into(),
            functions: 3_000,
            pattern: "main.Work".into(),
            sites: 9,
            ready: Duration::from_millis(ready_ms),
            peak_rss: peak_mb * 1_000_000,
            floor_attach: Duration::from_millis(12),
        }
    }

    #[test]
    fn startup_rows_are_multiples_of_the_floor_and_goals_leave_the_floor_out() {
        let runs = [
            startup("loop program", 200, 20),
            startup("go command", 900, 110),
            startup("go command", 2_500, 320),
        ];
        let table = startup_table(&runs);
        assert!(table.contains("| 4.5 ×"), "{table}");
        assert!(table.contains("| 5.5 ×"), "{table}");
        assert!(table.contains("| 900.0 ms"), "{table}");
        assert!(table.contains("| 2.50 s"), "{table}");
        let r = startup_ratios(&runs);
        assert_eq!(r.len(), 4);
        let met: Vec<_> = r.iter().map(|r| r.met()).collect();
        assert_eq!(met, [Some(true), Some(true), Some(false), Some(false)]);
        assert_eq!(r[1].value, Some(110.0));
    }

    fn row(tracer: Tracer, probes: Probes, ns_per_call: Option<f64>, status: &str) -> Row {
        Row {
            tracer,
            probes,
            ns_per_call,
            calls: Some(1000),
            delivered: (tracer != Tracer::Untraced && tracer != Tracer::Floor).then_some(1000),
            lost: (tracer == Tracer::Gotrace).then_some(0),
            status: status.into(),
            harmed: status != "ok",
            options: String::new(),
        }
    }

    /// Figures shaped like the costs doc's: untraced 4 ns, an emulated entry ≈ 0.6 µs, a
    /// single-stepped RET ≈ 10 µs, bpftrace killing the target unless preemption is off.
    fn recorded() -> FunctionBench {
        FunctionBench {
            function: "main.Work".into(),
            sites: "entry jbe, return ret".into(),
            rows: vec![
                row(Tracer::Untraced, Probes::None, Some(4.0), "ok"),
                row(Tracer::Floor, Probes::Full, Some(10_604.0), "ok"),
                row(Tracer::Floor, Probes::EntryOnly, Some(604.0), "ok"),
                row(Tracer::Gotrace, Probes::Full, Some(12_004.0), "ok"),
                row(Tracer::Gotrace, Probes::EntryOnly, Some(904.0), "ok"),
                row(Tracer::GotraceStats, Probes::Full, Some(11_004.0), "ok"),
                row(Tracer::GotraceStats, Probes::EntryOnly, Some(704.0), "ok"),
                row(
                    Tracer::Bpftrace {
                        async_preempt_off: false,
                    },
                    Probes::Full,
                    None,
                    "exit 2: SIGILL: illegal instruction",
                ),
                row(
                    Tracer::Bpftrace {
                        async_preempt_off: true,
                    },
                    Probes::Full,
                    Some(26_004.0),
                    "ok",
                ),
                row(
                    Tracer::Bpftrace {
                        async_preempt_off: false,
                    },
                    Probes::EntryOnly,
                    Some(12_004.0),
                    "ok",
                ),
            ],
        }
    }

    #[test]
    fn ratios_on_recorded_numbers() {
        let bench = recorded();
        let full = bench.find(Tracer::Gotrace, Probes::Full).unwrap();
        assert_eq!(bench.overhead(full), Some(12_000.0));
        let r = bench.ratios();
        let value = |i: usize| r[i].value.unwrap();
        assert!((value(0) - 12_000.0 / 10_600.0).abs() < 1e-9);
        assert_eq!(r[0].met(), Some(true));
        assert!((value(1) - 1.5).abs() < 1e-9);
        assert_eq!(r[1].met(), Some(false));
        // The plain bpftrace run killed the target: the asyncpreemptoff run is compared.
        assert!((value(2) - 26_000.0 / 12_000.0).abs() < 1e-9);
        assert!(r[2].name.contains("asyncpreemptoff"));
        assert!((value(3) - 12_000.0 / 900.0).abs() < 1e-9);
        assert_eq!(r[3].met(), Some(false));
        // gotrace stats against the floor of its own probes.
        assert!((value(4) - 11_000.0 / 10_600.0).abs() < 1e-9);
        assert_eq!(r[4].met(), Some(true));
        assert!((value(5) - 700.0 / 600.0).abs() < 1e-9);
        assert_eq!(r[5].met(), Some(true));
    }

    #[test]
    fn table_shows_every_run_and_who_was_harmed() {
        let table = recorded().table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 10, "{table}");
        assert!(lines[0].starts_with("| mode "), "{table}");
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "{table}"
        );
        let gotrace = lines
            .iter()
            .find(|l| l.starts_with("| gotrace, full"))
            .unwrap();
        assert!(
            gotrace.contains("| 12004 ")
                && gotrace.contains("| 12000 ")
                && gotrace.contains("| 1.13 "),
            "{gotrace}"
        );
        assert!(gotrace.contains("1000 / 1000 (0 lost)"), "{gotrace}");
        let stats = lines
            .iter()
            .find(|l| l.starts_with("| gotrace stats --no-return "))
            .unwrap();
        assert!(
            stats.contains("| 700 ") && stats.contains("| 1.17 "),
            "{stats}"
        );
        let killed = lines
            .iter()
            .find(|l| l.starts_with("| bpftrace one-liner  "))
            .unwrap();
        assert!(
            killed.contains("SIGILL") && killed.contains("| —"),
            "{killed}"
        );
        let untraced = lines.iter().find(|l| l.starts_with("| untraced")).unwrap();
        assert!(untraced.contains("| 4.0 "), "{untraced}");
    }

    #[test]
    fn scale_goals() {
        let t = Throughput {
            mode: "gotrace --no-return".into(),
            goroutines: 4,
            sites: 8,
            calls: Some(2_000_000),
            events: 2_000_000,
            lost: Some(0),
            wall: Duration::from_secs(2),
            gotrace_cpu: Duration::from_secs(1),
            status: "ok".into(),
        };
        let a = AttachTiming {
            sites: 10_000,
            method: "uprobe_multi".into(),
            attach: Some(Duration::from_millis(30)),
            detach: Some(Duration::from_millis(1500)),
            note: String::new(),
        };
        let r = scale_ratios(std::slice::from_ref(&t), std::slice::from_ref(&a));
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].value, Some(1e6));
        assert_eq!(r[0].met(), Some(true));
        assert_eq!(r[1].met(), Some(true));
        assert_eq!(r[2].met(), Some(false));
        let text = ratio_lines(&r);
        assert!(text.contains("1000000 (goal ≥ 1000000: met)"), "{text}");
        let table = throughput_table(&[t]);
        assert!(
            table.contains("| 1000000  ") && table.contains("| 1.00 s (0.50 µs/event) "),
            "{table}"
        );
        assert!(attach_table(&[a]).contains("| 1.50 s "));
    }

    #[test]
    fn placement_table_compares_each_instruction_with_gotraces_entry() {
        let p = |site, instruction: &str, handling, ns| Placement {
            function: "main.Work".into(),
            site,
            instruction: instruction.into(),
            handling: Some(handling),
            ns_per_hit: ns,
            status: "ok".into(),
        };
        let table = placement_table(&[
            p(
                PlacementSite::GotraceEntry,
                "jbe 0x48e40f",
                Handling::Emulated,
                Some(500.0),
            ),
            p(
                PlacementSite::FirstInstruction,
                "cmp rsp, [r14+0x10]",
                Handling::SingleStepped,
                Some(10_250.0),
            ),
            p(
                PlacementSite::Returns { sites: 2 },
                "ret",
                Handling::SingleStepped,
                None,
            ),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines[2].contains("| entry, gotrace's site ")
                && lines[2].contains("| `jbe 0x48e40f` ")
                && lines[2].contains("| emulated ")
                && lines[2].contains("| 500 ")
                && lines[2].contains("| 1.0 "),
            "{table}"
        );
        assert!(
            lines[3].contains("| `cmp rsp, [r14+0x10]` ")
                && lines[3].contains("| single-stepped ")
                && lines[3].contains("| 10250 ")
                && lines[3].contains("| 20.5 "),
            "{table}"
        );
        assert!(
            lines[4].contains("| return ×2 ") && lines[4].contains("| — "),
            "{table}"
        );
    }

    #[test]
    fn string_goals_and_capture_lines() {
        let mut bench = recorded();
        bench.function = "main.Text".into();
        bench.rows.truncate(4); // untraced, floor full and entry-only, gotrace full
        bench.rows[3].options = "--string-max 8192".into();
        let check = CaptureCheck {
            string_max: 8192,
            runs: 3,
            calls: 300,
            delivered: 300,
            complete: 299,
            null_args: 1,
        };
        let r = string_ratios(&bench, std::slice::from_ref(&check));
        assert_eq!(r.len(), 2);
        assert!(
            r[0].name
                .contains("gotrace, full --string-max 8192 / floor full"),
            "{}",
            r[0].name
        );
        assert_eq!(r[0].met(), Some(true));
        assert_eq!(r[1].met(), Some(false), "one call was not captured right");
        let lines = capture_lines("main.Text", "s", &[check]);
        assert!(
            lines.starts_with("- main.Text `--string-max 8192`, 3 runs: 300 calls made, 300 delivered, 299 with `s` = its first 8192 bytes"),
            "{lines}"
        );
        assert!(lines.ends_with(", 1 with `s` null\n"), "{lines}");
        assert!(bench.table().contains("| gotrace, full --string-max 8192 "));
    }
}
