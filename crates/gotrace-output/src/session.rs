//! What a tracing session says besides its calls: what it attached, warnings, notes, and the
//! calls the BPF side lost while it ran.

use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// Every probe of a session is in place: what is traced, where, and what is not.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Attached {
    /// The file the probes are in.
    pub binary: String,
    /// The functions traced, each name once (an inlined copy is planned as a function of its
    /// own).
    pub functions: Vec<String>,
    /// Functions also traced where the compiler inlined them.
    pub inlined: Vec<InlinedCopies>,
    /// Probe sites attached, and those that failed (each said in a warning).
    pub sites: usize,
    pub sites_failed: usize,
    /// Planned sites by kind, and runtime hooks (goroutine and process exits).
    pub entry_sites: usize,
    pub return_sites: usize,
    pub inlined_sites: usize,
    pub runtime_hooks: usize,
    pub method: AttachMethod,
    pub elapsed_ns: u64,
    /// Functions a pattern matched that cannot bear a probe, and why.
    pub refused: Vec<Refused>,
    /// Where the signatures came from: `signatures from DWARF`, `signatures from debug file
    /// PATH (same Go build ID)`, `no DWARF; signatures: 3 runtime types, 40 traceback metadata
    /// (untyped)`.
    pub signatures: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMethod {
    /// One uprobe_multi link for every site.
    #[default]
    UprobeMulti,
    /// One uprobe per site (kernels before 6.6).
    PerSite,
}

/// A function with inlined copies: how many copies have code of their own, and at how many
/// sites it was inlined.
#[derive(Clone, Debug, Serialize)]
pub struct InlinedCopies {
    pub function: String,
    pub copies: usize,
    pub inlined_sites: usize,
}

/// A matched function that is not traced.
#[derive(Clone, Debug, Serialize)]
pub struct Refused {
    pub function: String,
    /// `assembly`, `stack switch`, … (a few words per kind of reason).
    pub category: String,
    pub reason: String,
    /// Refused for one of its instructions (the surprising kind, named in the text).
    pub instruction: bool,
}

impl Attached {
    /// The refusals (one line), the note on inlined calls, and `gotrace: tracing main.F in
    /// /srv/app (3 sites: …) — Ctrl-C to stop`.
    pub(crate) fn text(&self, out: &mut String) {
        if let Some(line) = self.refused_line() {
            let _ = writeln!(out, "{line}");
        }
        if !self.inlined.is_empty() {
            out.push_str(
                "gotrace: note: an inlined call has no return of its own to probe: it is shown `inlined`, with the arguments DWARF locates at its first instruction (? where it does not), and no result or duration\n",
            );
        }
        let _ = write!(out, "gotrace: tracing {} — Ctrl-C to stop", self.describe());
    }

    /// `main.Fibonacci in /srv/app (3 sites: 1 entry, 2 return, 0 inlined, 4 runtime; one
    /// uprobe_multi link, attached in 1.2ms)`; a function inlined somewhere adds how many
    /// copies of it have code of their own and at how many sites it was inlined (`main.Add: 1
    /// copy, 3 inlined sites`).
    fn describe(&self) -> String {
        let shown = match self.functions.as_slice() {
            [one] => one.clone(),
            many => format!("{} functions", many.len()),
        };
        let with_inlined: Vec<String> = self
            .inlined
            .iter()
            .map(|i| {
                format!(
                    "{}: {} {}, {} inlined site{}",
                    i.function,
                    i.copies,
                    if i.copies == 1 { "copy" } else { "copies" },
                    i.inlined_sites,
                    if i.inlined_sites == 1 { "" } else { "s" }
                )
            })
            .collect();
        let inlined_text = match with_inlined.as_slice() {
            [] => String::new(),
            few if few.len() <= 3 => format!("{}; ", few.join("; ")),
            many => format!("{} functions also inlined; ", many.len()),
        };
        let method = match self.method {
            AttachMethod::UprobeMulti => "one uprobe_multi link",
            AttachMethod::PerSite => "one uprobe per site",
        };
        format!(
            "{shown} in {} ({inlined_text}{} sites: {} entry, {} return, {} inlined, {} runtime; {method}, attached in {:.1?}; {})",
            self.binary,
            self.sites,
            self.entry_sites,
            self.return_sites,
            self.inlined_sites,
            self.runtime_hooks,
            Duration::from_nanos(self.elapsed_ns),
            self.signatures
        )
    }

    /// One line for the functions a glob matched that are not traced: how many of each kind,
    /// and by name those refused for an instruction (the surprising ones).
    fn refused_line(&self) -> Option<String> {
        let many = match self.refused.as_slice() {
            [] => return None,
            [one] => {
                return Some(format!(
                    "gotrace: not tracing {}: {}",
                    one.function, one.reason
                ))
            }
            many => many,
        };
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for refusal in many {
            match kinds.iter_mut().find(|(k, _)| *k == refusal.category) {
                Some((_, n)) => *n += 1,
                None => kinds.push((&refusal.category, 1)),
            }
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let by_instruction: Vec<&str> = many
            .iter()
            .filter(|r| r.instruction)
            .map(|r| r.function.as_str())
            .collect();
        let named = match by_instruction.as_slice() {
            [] => String::new(),
            few if few.len() <= 5 => format!(" (instruction: {})", few.join(", ")),
            lots => format!(" (instruction: {}, …)", lots[..5].join(", ")),
        };
        Some(format!(
            "gotrace: not tracing {} matched functions that cannot bear a probe: {}{named}; `gotrace funcs -v` says why for each",
            many.len(),
            kinds.join(", ")
        ))
    }
}

/// Something that may not be what the user expects; tracing goes on.
#[derive(Clone, Debug, Serialize)]
pub struct Warning {
    pub message: String,
    /// The probe site that could not be attached, when that is the warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<FailedSite>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailedSite {
    pub function: String,
    /// `entry`, `return`, …
    pub kind: String,
    pub addr: String,
    pub reason: String,
}

impl Warning {
    pub fn new(message: impl Into<String>) -> Self {
        Warning {
            message: message.into(),
            site: None,
        }
    }

    /// One probe site could not be attached; the others keep working.
    pub fn site_not_attached(site: FailedSite) -> Self {
        Warning {
            message: format!(
                "could not attach the {} probe {} at {}: {}",
                site.kind, site.function, site.addr, site.reason
            ),
            site: Some(site),
        }
    }
}

/// What gotrace is doing, for a person watching: a large attach under way, the traced file
/// rebuilt, the traced process gone.
#[derive(Clone, Debug, Serialize)]
pub struct Note {
    pub message: String,
}

/// Calls the BPF side dropped since the last report, by cause; the summary has the totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Lost {
    pub cause: LossCause,
    /// Calls lost to this cause so far.
    pub calls: u64,
}

/// Named as the summary's fields that count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossCause {
    LostRingFull,
    InflightFull,
    ReadFailures,
    LostBusy,
    /// Spans of traced calls that `--otlp` could not export (the calls themselves were traced).
    SpansNotExported,
}

impl Lost {
    /// `gotrace: 12 calls lost so far: the ring buffer was full (…)`.
    pub(crate) fn text(&self) -> String {
        let why = match self.cause {
            LossCause::LostRingFull => "the ring buffer was full (output cannot keep up; trace fewer functions or use --no-return)",
            LossCause::InflightFull => "too many calls in flight at once (in-flight table full)",
            LossCause::ReadFailures => "their goroutine could not be read at entry",
            LossCause::LostBusy => "a probe hit preempted another on the same CPU",
            LossCause::SpansNotExported => {
                return format!(
                    "gotrace: {} spans not exported so far: the export queue was full or the OTLP collector did not take them",
                    self.calls
                )
            }
        };
        format!("gotrace: {} calls lost so far: {why}", self.calls)
    }
}
