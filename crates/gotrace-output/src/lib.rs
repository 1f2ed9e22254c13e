//! Everything gotrace says, as one stream of records — calls, the attach report, warnings,
//! notes, live losses, the closing summary, and the listings of `funcs` and `peek` — each
//! rendered as text for people or as one JSON object per line (with a `"type"`) for machines.
//! Calls are written straight into a buffer that the event loop hands on once per batch.

mod call;
mod clock;
pub mod funcs;
mod go_syntax;
mod graph;
mod json;
pub mod nesting;
pub mod peek;
mod session;
mod stats;
mod summary;
#[cfg(test)]
mod tests;

pub use call::{escape_controls, format_duration};
pub use clock::Clock;
pub use go_syntax::{go_syntax, GoSyntax};
pub use graph::{Timeline, GRAPH_LIMIT};
pub use session::{
    AttachMethod, Attached, FailedSite, InlinedCopies, LossCause, Lost, Note, Refused, Warning,
};
pub use stats::{Bucket, ErrorCount, GroupRow, GroupTable, LatencyHistogram, Stats, StatsRow};
pub use summary::Summary;

use call::{write_json, write_text};
use clock::Stamps;
use gotrace_decode::DecodedCall;
use gotrace_plan::CallKind;
use graph::Graph;
use serde::Serialize;
use std::io::{self, Write};

/// One thing gotrace says.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    /// `"type": "call"`
    Call(&'a DecodedCall<'a>),
    /// `"attached"`
    Attached(&'a Attached),
    /// `"warning"`
    Warning(&'a Warning),
    /// `"note"`
    Note(&'a Note),
    /// `"lost"`
    Lost(&'a Lost),
    /// `"summary"`, last.
    Summary(&'a Summary),
    /// `"stats"` lines, one per function: `gotrace stats`' counts so far.
    Stats(&'a Stats),
    /// `"group"` lines, one per group of one function (`gotrace stats --by`).
    Groups(&'a GroupTable),
    /// `"histogram"`: one function's latency histogram, when `gotrace stats` ends.
    Histogram(&'a LatencyHistogram),
    /// `"binary"`: what `funcs` read.
    Binary(&'a funcs::BinaryInfo),
    /// `"function"`: one function `funcs` lists.
    Function(&'a funcs::Listed),
    /// `"site"` lines, one per probe site `peek` looked at.
    Peek(&'a peek::Peek),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Writes records in one format; calls without building intermediate strings.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    stamps: Stamps,
    /// `--graph`, `--timeline`: calls held until their trees are known.
    graph: Option<Graph>,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format, clock: Clock) -> Self {
        Printer {
            out,
            format,
            stamps: Stamps::new(clock),
            graph: None,
        }
    }

    /// Nests the calls per goroutine: printed as trees by [`Printer::write_graph`] instead of
    /// as lines when `shown` (`--graph`), and written to `timeline` if given.
    pub fn set_graph(&mut self, shown: bool, timeline: Option<Timeline>) {
        if shown || timeline.is_some() {
            self.graph = Some(Graph::new(shown, timeline));
        }
    }

    /// Calls are nested (`--graph`, `--timeline`): finished ones wait for their callers.
    pub fn nests_calls(&self) -> bool {
        self.graph.is_some()
    }

    /// Calls are printed as trees, not as lines.
    pub fn shows_graph(&self) -> bool {
        self.graph.as_ref().is_some_and(|g| g.shown)
    }

    /// Writes the call trees that are ready — every one when `all` (the session is over) —
    /// to the output (under `--graph`) and the timeline; `on_line` learns what each line
    /// written reports: a call and how it ended, or `None` for a heading.
    pub fn write_graph(
        &mut self,
        all: bool,
        on_line: &mut dyn FnMut(Option<CallKind>),
    ) -> io::Result<()> {
        match &mut self.graph {
            Some(graph) => graph.write(&mut self.out, self.format, &mut self.stamps, all, on_line),
            None => Ok(()),
        }
    }

    /// Lets the call trees that no traced caller can still come for be written: those begun
    /// before `before_ns` and before their goroutine's outermost call in flight then
    /// (`in_flight_since(pid, goid)`). Every call that ended before `before_ns` must have been
    /// given to [`Printer::call`].
    pub fn settle_graph(
        &mut self,
        before_ns: u64,
        in_flight_since: &dyn Fn(u32, u64) -> Option<u64>,
    ) {
        if let Some(graph) = &mut self.graph {
            graph.settle(before_ns, in_flight_since);
        }
    }

    /// Trees, and calls in them, printed before their caller could be seen (the graph's
    /// buffer was full).
    pub fn graph_cut(&self) -> (u64, u64) {
        self.graph.as_ref().map_or((0, 0), Graph::cut)
    }

    /// Closes the timeline file's JSON array; the first error writing it, if any.
    pub fn finish_timeline(&mut self) -> io::Result<()> {
        match &mut self.graph {
            Some(graph) => graph.finish_timeline(),
            None => Ok(()),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes `record` as complete lines: one JSON object per line, or its text.
    pub fn record(&mut self, record: &Record<'_>) -> io::Result<()> {
        match (record, self.format) {
            (Record::Call(call), _) => self.call(call),
            (_, Format::Json) => write_json_record(&mut self.out, record),
            (_, Format::Text) => {
                let text = self.text(record);
                self.out.write_all(text.as_bytes())?;
                self.out.write_all(b"\n")
            }
        }
    }

    pub fn call(&mut self, call: &DecodedCall<'_>) -> io::Result<()> {
        if let Some(graph) = &mut self.graph {
            graph.push(call, self.format, &mut self.stamps);
            if graph.shown {
                return Ok(());
            }
        }
        let (utc, local, nanos) = self.stamps.at(call.entry_ns);
        match self.format {
            Format::Text => write_text(&mut self.out, call, local, nanos)?,
            Format::Json => write_json(&mut self.out, call, utc, nanos)?,
        }
        self.out.write_all(b"\n")
    }

    /// `record` as text, whatever this printer's format (what stderr shows under `--json`),
    /// without its last newline.
    pub fn text(&mut self, record: &Record<'_>) -> String {
        let mut text = String::new();
        match record {
            Record::Call(call) => {
                let (_, local, nanos) = self.stamps.at(call.entry_ns);
                let mut line = Vec::new();
                // Writing into a Vec cannot fail.
                let _ = write_text(&mut line, call, local, nanos);
                text = String::from_utf8_lossy(&line).into_owned();
            }
            Record::Attached(attached) => attached.text(&mut text),
            Record::Warning(w) => text = format!("gotrace: warning: {}", w.message),
            Record::Note(note) => text = format!("gotrace: {}", note.message),
            Record::Lost(lost) => text = lost.text(),
            Record::Summary(summary) => text = summary.text(),
            Record::Stats(stats) => text = stats.text(),
            Record::Groups(groups) => text = groups.text(),
            Record::Histogram(histogram) => text = histogram.text(),
            Record::Binary(info) => text = funcs::header(info),
            Record::Function(f) => funcs::function_text(&mut text, f),
            Record::Peek(p) => text = peek::peek_text(p),
        }
        if text.ends_with('\n') {
            text.pop();
        }
        text
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// The buffer records are written into (to hand it on, emptied, to another writer).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// `{"type": TAG, …the record's fields}`.
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    tag: &'static str,
    #[serde(flatten)]
    record: &'a T,
}

/// The summary with its totals, as readers want them.
#[derive(Serialize)]
struct SummaryJson<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    /// Call lines written (`calls` + `unreturned`).
    calls_traced: u64,
    calls_lost: u64,
}

/// One function's stats, saying whether they are the final ones.
#[derive(Serialize)]
struct RowJson<'a> {
    #[serde(flatten)]
    row: &'a StatsRow,
    #[serde(rename = "final")]
    last: bool,
}

/// One group's row, with its function's grouping.
#[derive(Serialize)]
struct GroupJson<'a> {
    by: &'a str,
    #[serde(flatten)]
    row: &'a GroupRow,
    /// Distinct groups of the function, and its calls counted in none.
    groups: usize,
    not_grouped: u64,
    #[serde(rename = "final")]
    last: bool,
}

/// One peeked site, with the function and process it belongs to.
#[derive(Serialize)]
struct SiteJson<'a> {
    function: &'a str,
    pid: u32,
    #[serde(flatten)]
    site: &'a peek::PeekedSite,
}

/// A record other than a call as JSON lines.
fn write_json_record(out: &mut impl Write, record: &Record<'_>) -> io::Result<()> {
    fn line<T: Serialize>(out: &mut impl Write, tag: &'static str, record: &T) -> io::Result<()> {
        serde_json::to_writer(&mut *out, &Tagged { tag, record })?;
        out.write_all(b"\n")
    }
    match record {
        // Written by `Printer::call`, field by field.
        Record::Call(_) => Ok(()),
        Record::Attached(a) => line(out, "attached", a),
        Record::Warning(w) => line(out, "warning", w),
        Record::Note(n) => line(out, "note", n),
        Record::Lost(l) => line(out, "lost", l),
        Record::Summary(s) => {
            let totals = SummaryJson {
                summary: s,
                calls_traced: s.calls + s.unreturned,
                calls_lost: s.calls_lost(),
            };
            line(out, "summary", &totals)
        }
        Record::Stats(s) => s.rows.iter().try_for_each(|row| {
            let row = RowJson { row, last: s.last };
            line(out, "stats", &row)
        }),
        Record::Groups(g) => g.rows.iter().try_for_each(|row| {
            let row = GroupJson {
                by: &g.by,
                row,
                groups: g.groups,
                not_grouped: g.not_grouped,
                last: g.last,
            };
            line(out, "group", &row)
        }),
        Record::Histogram(h) => line(out, "histogram", h),
        Record::Binary(b) => line(out, "binary", b),
        Record::Function(f) => line(out, "function", f),
        Record::Peek(p) => p.sites.iter().try_for_each(|site| {
            let site = SiteJson {
                function: &p.function,
                pid: p.pid,
                site,
            };
            line(out, "site", &site)
        }),
    }
}
