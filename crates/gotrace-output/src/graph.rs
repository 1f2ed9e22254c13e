//! `--graph` (each goroutine's calls as an indented tree with durations, or JSON call lines
//! with `id`, `parent` and `depth`) and `--timeline` (the Chrome trace event format that
//! Perfetto and chrome://tracing open): both render the trees of [`Nesting`].

use crate::call::{format_duration, write_json, write_label};
use crate::clock::Stamps;
use crate::nesting::{Goroutine, Nesting, Node, Tree};
use crate::Format;
use gotrace_decode::DecodedCall;
use gotrace_plan::CallKind;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{self, Write};

/// Calls held at most while waiting for their callers (about 30 MB of rendered calls).
pub const GRAPH_LIMIT: usize = 100_000;

/// One call, rendered when it was reported (the decoded call borrows buffers that are reused).
#[derive(Debug)]
pub struct GraphCall {
    pub function: String,
    pub outcome: CallKind,
    /// `main.F(x=1) = 2` (text graph).
    label: String,
    /// The call's JSON object (JSON graph, timeline).
    json: Vec<u8>,
}

/// What `--graph` and `--timeline` need of the calls: their trees.
#[derive(Debug)]
pub(crate) struct Graph {
    nesting: Nesting<GraphCall>,
    /// Print trees instead of call lines.
    pub(crate) shown: bool,
    timeline: Option<Timeline>,
}

impl Graph {
    pub(crate) fn new(shown: bool, timeline: Option<Timeline>) -> Graph {
        Graph {
            nesting: Nesting::new(GRAPH_LIMIT),
            shown,
            timeline,
        }
    }

    pub(crate) fn push(&mut self, call: &DecodedCall<'_>, format: Format, stamps: &mut Stamps) {
        let mut label = Vec::new();
        let mut json = Vec::new();
        // Into a Vec: cannot fail.
        if self.shown && format == Format::Text {
            let _ = write_label(&mut label, call);
        }
        if (self.shown && format == Format::Json) || self.timeline.is_some() {
            let (utc, _, nanos) = stamps.at(call.entry_ns);
            let _ = write_json(&mut json, call, utc, nanos);
        }
        let end = match call.outcome {
            CallKind::Returned | CallKind::InFlight => Some(call.return_ns),
            // No return of their own: at their entry.
            CallKind::Entered | CallKind::Inlined => Some(call.entry_ns),
            CallKind::Panicked
            | CallKind::Exited
            | CallKind::Abandoned
            | CallKind::ReturnNotSeen => None,
        };
        let item = GraphCall {
            function: call.function.to_owned(),
            outcome: call.outcome,
            label: String::from_utf8_lossy(&label).into_owned(),
            json,
        };
        let goroutine = Goroutine::of(call.pid, call.goid, call.tid);
        self.nesting.push(goroutine, call.entry_ns, end, item);
    }

    /// Writes the trees ready (all of them when `all`: the session is over) to `out` (when
    /// shown) and to the timeline; `on_line` learns what each line written to `out` reports.
    pub(crate) fn write(
        &mut self,
        out: &mut impl Write,
        format: Format,
        stamps: &mut Stamps,
        all: bool,
        on_line: &mut dyn FnMut(Option<CallKind>),
    ) -> io::Result<()> {
        let trees = match all {
            true => self.nesting.finish(),
            false => self.nesting.take_ready(),
        };
        for tree in &trees {
            if self.shown {
                match format {
                    Format::Text => write_tree_text(out, tree, stamps, on_line)?,
                    Format::Json => write_tree_json(out, tree, on_line)?,
                }
            }
            if let Some(timeline) = &mut self.timeline {
                timeline.tree(tree);
            }
        }
        if let Some(timeline) = &mut self.timeline {
            timeline.flush();
        }
        Ok(())
    }

    pub(crate) fn settle(
        &mut self,
        before_ns: u64,
        in_flight_since: &dyn Fn(u32, u64) -> Option<u64>,
    ) {
        self.nesting.release_settled(before_ns, in_flight_since);
    }

    pub(crate) fn cut(&self) -> (u64, u64) {
        self.nesting.cut()
    }

    pub(crate) fn finish_timeline(&mut self) -> io::Result<()> {
        match &mut self.timeline {
            Some(timeline) => timeline.finish(),
            None => Ok(()),
        }
    }
}

/// How long a call ran, or `-` for one that did not return.
fn duration(node: &Node<GraphCall>) -> String {
    match node.returned {
        true => format_duration(node.end_ns - node.entry_ns),
        false => "-".to_owned(),
    }
}

fn goroutine_name(g: Goroutine) -> String {
    match g.goid {
        0 => format!("system stack of thread {}", g.thread),
        goid => format!("goroutine {goid}"),
    }
}

/// ```text
/// goroutine 7 (pid 4242) at 12:01:02.345678
///     12.3ms  main.handle(n=1) = nil
///      1.2ms    main.parse(s="x") = (3, nil)
/// ```
fn write_tree_text(
    out: &mut impl Write,
    tree: &Tree<GraphCall>,
    stamps: &mut Stamps,
    on_line: &mut dyn FnMut(Option<CallKind>),
) -> io::Result<()> {
    let (_, local, nanos) = stamps.at(tree.root.entry_ns);
    write!(
        out,
        "{} (pid {}) at {local}.{:06}",
        goroutine_name(tree.goroutine),
        tree.goroutine.pid,
        nanos / 1000
    )?;
    if tree.cut {
        out.write_all(b" (printed without waiting for its caller: the --graph buffer was full)")?;
    }
    out.write_all(b"\n")?;
    on_line(None);
    let mut result = Ok(());
    tree.walk(|node, depth, _| {
        if result.is_ok() {
            result = writeln!(
                out,
                "{:>10}  {:indent$}{}",
                duration(node),
                "",
                node.item.label,
                indent = 2 * depth
            );
            on_line(Some(node.item.outcome));
        }
    });
    result
}

/// Each call's JSON line, callers first, with `"id"`, `"parent"` (the caller's id, or null)
/// and `"depth"` (0 for a call no traced call contains); `"cut": true` on a tree printed
/// without waiting for its caller.
fn write_tree_json(
    out: &mut impl Write,
    tree: &Tree<GraphCall>,
    on_line: &mut dyn FnMut(Option<CallKind>),
) -> io::Result<()> {
    let mut result = Ok(());
    tree.walk(|node, depth, parent| {
        if result.is_err() {
            return;
        }
        let object = node.item.json.strip_suffix(b"}").unwrap_or(&node.item.json);
        result = (|| {
            out.write_all(object)?;
            let parent = parent.map_or_else(|| "null".to_owned(), |p| p.to_string());
            write!(
                out,
                ",\"id\":{},\"parent\":{parent},\"depth\":{depth}",
                node.id
            )?;
            if tree.cut && depth == 0 {
                out.write_all(b",\"cut\":true")?;
            }
            out.write_all(b"}\n")
        })();
        on_line(Some(node.item.outcome));
    });
    result
}

/// A Chrome trace event file (JSON array format), written as trees come: a track per
/// goroutine (pid = process, tid = goroutine id; a system stack's tid is 2^32 + its thread),
/// one complete event (`"ph": "X"`) per call.
pub struct Timeline {
    out: Box<dyn Write + Send>,
    events: u64,
    named: HashSet<(u32, u64)>,
    error: Option<io::Error>,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("events", &self.events)
            .finish()
    }
}

impl Timeline {
    /// Starts the array; the events follow as they come.
    pub fn new(mut out: Box<dyn Write + Send>) -> io::Result<Timeline> {
        out.write_all(b"[")?;
        Ok(Timeline {
            out,
            events: 0,
            named: HashSet::new(),
            error: None,
        })
    }

    fn event(&mut self, event: &Value) {
        if self.error.is_some() {
            return;
        }
        let sep: &[u8] = if self.events == 0 { b"\n" } else { b",\n" };
        let written = self
            .out
            .write_all(sep)
            .and_then(|()| serde_json::to_writer(&mut self.out, event).map_err(io::Error::from));
        match written {
            Ok(()) => self.events += 1,
            Err(e) => self.error = Some(e),
        }
    }

    fn tree(&mut self, tree: &Tree<GraphCall>) {
        let g = tree.goroutine;
        let tid = match g.goid {
            0 => (1u64 << 32) | u64::from(g.thread),
            goid => goid,
        };
        if self.named.insert((g.pid, u64::MAX)) {
            self.event(
                &json!({"name": "process_name", "ph": "M", "pid": g.pid, "tid": 0,
                "args": {"name": format!("pid {}", g.pid)}}),
            );
        }
        if self.named.insert((g.pid, tid)) {
            self.event(
                &json!({"name": "thread_name", "ph": "M", "pid": g.pid, "tid": tid,
                "args": {"name": goroutine_name(g)}}),
            );
        }
        tree.walk(|node, depth, parent| {
            let call: Value = serde_json::from_slice(&node.item.json).unwrap_or(Value::Null);
            let mut args = json!({
                "args": call["args"],
                "results": call["results"],
                "outcome": call["outcome"],
                "id": node.id,
                "parent": parent,
                "depth": depth,
            });
            if !node.returned {
                args["end"] = json!("did not return: shown ending when its last traced callee did");
            }
            let mut event = json!({
                "name": node.item.function,
                "cat": "call",
                "ph": "X",
                "pid": g.pid,
                "tid": tid,
                "ts": node.entry_ns as f64 / 1000.0,
                "dur": (node.end_ns - node.entry_ns) as f64 / 1000.0,
                "args": args,
            });
            if node.item.outcome != CallKind::Returned {
                // Drawn in a warning colour.
                event["cname"] = json!("terrible");
            }
            self.event(&event);
        });
    }

    fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
    }

    /// Closes the array; the first error met on the way, if any.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.error.is_none() {
            let closed = self.out.write_all(b"\n]\n").and_then(|()| self.out.flush());
            if let Err(e) = closed {
                self.error = Some(e);
            }
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, Printer};
    use gotrace_decode::{NamedValue, Value as GoValue};
    use std::sync::{Arc, Mutex};

    fn call(function: &'static str, goid: u64, entry: u64, end: u64) -> DecodedCall<'static> {
        DecodedCall {
            function,
            outcome: CallKind::Returned,
            pid: 42,
            tid: 43,
            return_tid: 43,
            goid,
            entry_ns: entry,
            return_ns: end,
            args: Some(vec![NamedValue {
                name: "s",
                type_name: "string",
                value: GoValue::String(gotrace_decode::Bytes {
                    bytes: b"x".to_vec(),
                    missing: 0,
                    error: None,
                }),
            }]),
            results: Some(vec![]),
            stack: None,
        }
    }

    fn calls() -> Vec<DecodedCall<'static>> {
        let panicked = DecodedCall {
            outcome: CallKind::Panicked,
            return_ns: 0,
            results: None,
            ..call("main.boom", 1, 5_000, 0)
        };
        vec![
            call("main.parse", 1, 1_000, 2_204),
            panicked,
            call("main.other", 2, 1_500, 1_600),
            call("main.handle", 1, 0, 12_301_000),
        ]
    }

    fn printed(format: Format) -> (String, Vec<Option<CallKind>>) {
        let mut p = Printer::new(Vec::new(), format, Clock::default());
        p.set_graph(true, None);
        for c in calls() {
            p.call(&c).unwrap();
        }
        assert!(p.get_mut().is_empty(), "nothing until the trees are known");
        let mut lines = Vec::new();
        p.write_graph(true, &mut |l| lines.push(l)).unwrap();
        (String::from_utf8(p.into_inner()).unwrap(), lines)
    }

    #[test]
    fn text_graph_indents_callees_under_their_caller() {
        let (text, lines) = printed(Format::Text);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 6, "{text}");
        assert!(rows[0].starts_with("goroutine 1 (pid 42) at "), "{text}");
        assert_eq!(rows[1], "    12.3ms  main.handle(s=\"x\")", "{text}");
        assert_eq!(rows[2], "     1.2µs    main.parse(s=\"x\")", "{text}");
        assert_eq!(
            rows[3], "         -    main.boom(s=\"x\") panicked",
            "{text}"
        );
        assert!(rows[4].starts_with("goroutine 2 (pid 42) at "), "{text}");
        assert_eq!(rows[5], "     100ns  main.other(s=\"x\")", "{text}");
        let calls = lines.iter().flatten().count();
        assert_eq!((lines.len(), calls), (6, 4));
    }

    #[test]
    fn json_graph_gives_each_call_its_parent_and_depth() {
        let (text, lines) = printed(Format::Json);
        let v: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let shape: Vec<(&str, &Value, &Value)> = v
            .iter()
            .map(|c| (c["func"].as_str().unwrap(), &c["depth"], &c["parent"]))
            .collect();
        let handle = &v[0]["id"];
        assert_eq!(
            shape,
            vec![
                ("main.handle", &json!(0), &Value::Null),
                ("main.parse", &json!(1), handle),
                ("main.boom", &json!(1), handle),
                ("main.other", &json!(0), &Value::Null),
            ]
        );
        assert_eq!(v[2]["outcome"], "panicked");
        assert_eq!(lines.len(), 4);
    }

    /// A writer the test can read after the timeline is done with it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn timeline_is_chrome_trace_json_with_a_track_per_goroutine() {
        let file = Shared::default();
        let timeline = Timeline::new(Box::new(file.clone())).unwrap();
        let mut p = Printer::new(Vec::new(), Format::Text, Clock::default());
        p.set_graph(false, Some(timeline));
        for c in calls() {
            p.call(&c).unwrap();
        }
        // Without --graph the calls are printed as lines, as they come.
        assert_eq!(String::from_utf8_lossy(p.get_mut()).lines().count(), 4);
        p.write_graph(true, &mut |_| {}).unwrap();
        p.finish_timeline().unwrap();
        let events: Vec<Value> = serde_json::from_slice(&file.0.lock().unwrap()).unwrap();
        let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(slices.len(), 4);
        let names: Vec<&Value> = events
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| &e["args"]["name"])
            .collect();
        assert_eq!(names, [&json!("goroutine 1"), &json!("goroutine 2")]);
        let parse = slices.iter().find(|e| e["name"] == "main.parse").unwrap();
        assert_eq!(parse["ts"], 1.0);
        assert_eq!(parse["dur"], 1.204);
        assert_eq!(parse["tid"], 1);
        assert_eq!(parse["args"]["args"]["s"], "x");
        let boom = slices.iter().find(|e| e["name"] == "main.boom").unwrap();
        assert_eq!(boom["args"]["outcome"], "panicked");
        assert_eq!(boom["cname"], "terrible");
    }
}
