//! Output: one line per call, as text for people or JSON for machines, written through a
//! buffer that the event loop flushes once per batch, and the summary printed at the end.

use chrono::{DateTime, Local, Utc};
use gotrace_decode::{Bytes, DecodedCall, GoSyntax, Missing, NamedValue, Value};
use gotrace_plan::CallKind;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::io::{self, Write};

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in nanoseconds, measured once at start.
    pub realtime_minus_monotonic_ns: i128,
}

impl Clock {
    /// Wall-clock (seconds, nanoseconds) since the Unix epoch.
    fn wall(&self, monotonic_ns: u64) -> (i64, u32) {
        let ns = (i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns).max(0);
        ((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
    }
}

/// Formatted timestamps, redone only when the second changes: events come in bursts within
/// the same second, and calendar arithmetic per event would dominate the output cost.
#[derive(Debug)]
struct Stamps {
    clock: Clock,
    second: Option<i64>,
    /// `2026-11-25T12:01:02` (UTC).
    utc: String,
    /// `12:01:02` (local time).
    local: String,
}

impl Stamps {
    fn new(clock: Clock) -> Self {
        Stamps {
            clock,
            second: None,
            utc: String::new(),
            local: String::new(),
        }
    }

    /// The second's prefixes and the nanoseconds within it.
    fn at(&mut self, monotonic_ns: u64) -> (&str, &str, u32) {
        let (second, nanos) = self.clock.wall(monotonic_ns);
        if self.second != Some(second) {
            let utc = DateTime::<Utc>::from_timestamp(second, 0).unwrap_or_default();
            self.utc = utc.format("%Y-%m-%dT%H:%M:%S").to_string();
            self.local = utc.with_timezone(&Local).format("%H:%M:%S").to_string();
            self.second = Some(second);
        }
        (&self.utc, &self.local, nanos)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Writes calls in one format, without building intermediate strings per call.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    stamps: Stamps,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format, clock: Clock) -> Self {
        Printer {
            out,
            format,
            stamps: Stamps::new(clock),
        }
    }

    pub fn call(&mut self, call: &DecodedCall<'_>) -> io::Result<()> {
        let (utc, local, nanos) = self.stamps.at(call.entry_ns);
        match self.format {
            Format::Text => {
                write_text(&mut self.out, call, local, nanos)?;
                self.out.write_all(b"\n")
            }
            Format::Json => {
                write_json(&mut self.out, call, utc, nanos)?;
                self.out.write_all(b"\n")
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// The buffer calls are written into (to hand it on, emptied, to another writer).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// `12:01:02.345678 pid=4242 goid=37 main.Fibonacci(n=10) = 55  1.3µs`
pub fn text_line(call: &DecodedCall<'_>, clock: Clock) -> String {
    let mut stamps = Stamps::new(clock);
    let (_, local, nanos) = stamps.at(call.entry_ns);
    let mut line = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_text(&mut line, call, local, nanos);
    String::from_utf8_lossy(&line).into_owned()
}

fn write_text(
    out: &mut impl Write,
    call: &DecodedCall<'_>,
    local: &str,
    nanos: u32,
) -> io::Result<()> {
    write!(
        out,
        "{local}.{:06} pid={} goid={} {}(",
        nanos / 1000,
        call.pid,
        call.goid,
        escape_controls(call.function)
    )?;
    match &call.args {
        Some(args) => {
            for (i, v) in args.iter().enumerate() {
                let sep = if i > 0 { ", " } else { "" };
                write!(out, "{sep}{}={}", v.name, GoSyntax(&v.value))?;
            }
        }
        None => out.write_all(b"?")?,
    }
    out.write_all(b")")?;
    match call.outcome {
        CallKind::Entered => Ok(()),
        CallKind::Inlined => out.write_all(b" inlined"),
        CallKind::Panicked => out.write_all(b" panicked"),
        CallKind::Exited => out.write_all(b" exited (runtime.Goexit)"),
        CallKind::Abandoned => {
            out.write_all(b" abandoned (the runtime reused its system-stack frame)")
        }
        CallKind::InFlight => {
            out.write_all(b" in flight")?;
            match call.duration_ns() {
                Some(ns) => write!(out, "  {}", format_duration(ns)),
                None => Ok(()),
            }
        }
        CallKind::Returned => {
            match call.results.as_deref() {
                None => out.write_all(b" = ?")?,
                Some([]) => {}
                Some([one]) => write!(out, " = {}", GoSyntax(&one.value))?,
                Some(many) => {
                    out.write_all(b" = (")?;
                    for (i, v) in many.iter().enumerate() {
                        let sep = if i > 0 { ", " } else { "" };
                        write!(out, "{sep}{}", GoSyntax(&v.value))?;
                    }
                    out.write_all(b")")?;
                }
            }
            match call.duration_ns() {
                Some(ns) => write!(out, "  {}", format_duration(ns)),
                None => Ok(()),
            }
        }
    }
}

/// `s` with control characters escaped (`\n`, `\u{1b}`): names read from a binary are printed
/// through this, so a crafted one cannot drive the terminal or forge lines.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c.is_control() {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Durations the way Go prints them: `850ns`, `1.3µs`, `2.25ms`, `1.5s`.
pub fn format_duration(ns: u64) -> String {
    let trim = |v: f64| {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{}µs", trim(ns as f64 / 1e3)),
        1_000_000..=999_999_999 => format!("{}ms", trim(ns as f64 / 1e6)),
        _ => format!("{}s", trim(ns as f64 / 1e9)),
    }
}

/// One call as a JSON object, written field by field: the keys are constants, the numbers
/// go through itoa, and only names and values that need it go through JSON escaping.
fn write_json(
    out: &mut impl Write,
    call: &DecodedCall<'_>,
    utc: &str,
    nanos: u32,
) -> io::Result<()> {
    let mut n = itoa::Buffer::new();
    write!(out, "{{\"ts\":\"{utc}.{nanos:09}Z\",\"pid\":")?;
    out.write_all(n.format(call.pid).as_bytes())?;
    out.write_all(b",\"tid\":")?;
    out.write_all(n.format(call.tid).as_bytes())?;
    out.write_all(b",\"goid\":")?;
    out.write_all(n.format(call.goid).as_bytes())?;
    out.write_all(b",\"func\":")?;
    write_json_str(out, call.function)?;
    let outcome: &[u8] = match call.outcome {
        CallKind::Returned => b",\"outcome\":\"returned\"",
        CallKind::Entered => b",\"outcome\":\"entered\"",
        CallKind::Inlined => b",\"outcome\":\"inlined\"",
        CallKind::Panicked => b",\"outcome\":\"panicked\"",
        CallKind::Exited => b",\"outcome\":\"exited\"",
        CallKind::InFlight => b",\"outcome\":\"in_flight\"",
        CallKind::Abandoned => b",\"outcome\":\"abandoned\"",
    };
    out.write_all(outcome)?;
    for (key, values) in [("args", &call.args), ("results", &call.results)] {
        write!(out, ",\"{key}\":")?;
        match values {
            None => out.write_all(b"null")?,
            Some(values) => write_object(out, values, |out, v| write_json_value(out, &v.value))?,
        }
    }
    let all: Vec<&NamedValue<'_>> = call
        .args
        .iter()
        .chain(call.results.iter())
        .flatten()
        .collect();
    out.write_all(b",\"types\":")?;
    write_object(out, all.iter().copied(), |out, v| {
        write_json_str(out, v.type_name)
    })?;
    out.write_all(b",\"truncated\":[")?;
    for (i, v) in all.iter().filter(|v| v.value.is_truncated()).enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_json_str(out, v.name)?;
    }
    out.write_all(b"],\"unavailable\":")?;
    let unavailable = all
        .iter()
        .filter_map(|v| v.value.unavailable_part().map(|m| (v.name, m)));
    write_object(out, unavailable, |out, (_, m)| {
        write_json_str(out, m.reason())
    })?;
    out.write_all(b",\"duration_ns\":")?;
    match call.duration_ns() {
        Some(ns) => out.write_all(n.format(ns).as_bytes())?,
        None => out.write_all(b"null")?,
    }
    if call.outcome == CallKind::Returned {
        out.write_all(b",\"return_tid\":")?;
        out.write_all(n.format(call.return_tid).as_bytes())?;
    }
    out.write_all(b"}")
}

/// Something with a name, written as one key of a JSON object.
trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for &NamedValue<'_> {
    fn key(&self) -> &str {
        self.name
    }
}

impl Keyed for (&str, Missing) {
    fn key(&self) -> &str {
        self.0
    }
}

/// `{"key":value,…}` in the items' order.
fn write_object<O: Write, T: Keyed>(
    out: &mut O,
    items: impl IntoIterator<Item = T>,
    mut value: impl FnMut(&mut O, &T) -> io::Result<()>,
) -> io::Result<()> {
    out.write_all(b"{")?;
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_json_str(out, item.key())?;
        out.write_all(b":")?;
        value(out, &item)?;
    }
    out.write_all(b"}")
}

fn write_json_value(out: &mut impl Write, value: &Value) -> io::Result<()> {
    let mut n = itoa::Buffer::new();
    match value {
        Value::Int(i) => out.write_all(n.format(*i).as_bytes()),
        Value::Uint(u) => out.write_all(n.format(*u).as_bytes()),
        Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
        other => serde_json::to_writer(out, &JsonValue(other)).map_err(io::Error::from),
    }
}

/// A JSON string; Go identifiers and type names rarely need escaping, so check before paying
/// for it.
fn write_json_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.write_all(b"\"")?;
        out.write_all(s.as_bytes())?;
        out.write_all(b"\"")
    } else {
        serde_json::to_writer(out, s).map_err(io::Error::from)
    }
}

/// Values as JSON: numbers as numbers, strings as strings, structs as objects, pointers as
/// what they point to, interfaces as {"type", "value"}, maps as {"len", "entries"}, nil as null.
struct JsonValue<'a>(&'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Uint(u) => serializer.serialize_u64(*u),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::Complex(re, im) => [re, im].serialize(serializer),
            Value::String(Bytes {
                error: Some(missing),
                missing: len,
                ..
            }) => NotRead(*missing, Some(*len)).serialize(serializer),
            Value::String(s) => serializer.serialize_str(&String::from_utf8_lossy(&s.bytes)),
            Value::Slice { ptr: 0, .. } => serializer.serialize_none(),
            Value::Slice {
                elems: Ok(elems), ..
            }
            | Value::Array { elems, .. } => serializer.collect_seq(elems.iter().map(JsonValue)),
            Value::Slice {
                elems: Err(missing),
                len,
                ..
            } => NotRead(*missing, Some(*len)).serialize(serializer),
            Value::Struct { fields, .. } => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (name, v) in fields {
                    map.serialize_entry(name, &JsonValue(v))?;
                }
                map.end()
            }
            Value::Pointer { target: None, .. } => serializer.serialize_none(),
            Value::Pointer {
                target: Some(Ok(v)),
                ..
            } => JsonValue(v).serialize(serializer),
            Value::Pointer {
                addr,
                target: Some(Err(missing)),
                ..
            } => {
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("address", &format!("{addr:#x}"))?;
                if *missing == Missing::Unreadable {
                    map.serialize_entry("error", "unreadable")?;
                } else {
                    map.serialize_entry("not_read", missing.short())?;
                }
                map.end()
            }
            Value::Interface { dynamic: None } => serializer.serialize_none(),
            Value::Interface {
                dynamic: Some((name, value)),
            } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("type", name)?;
                match value {
                    Ok(v) => map.serialize_entry("value", &JsonValue(v))?,
                    Err(missing) => map.serialize_entry("value", &NotRead(*missing, None))?,
                }
                map.end()
            }
            Value::Map { addr: 0, .. } => serializer.serialize_none(),
            Value::Map {
                len: Err(missing), ..
            } => NotRead(*missing, None).serialize(serializer),
            Value::Map { len, entries, .. } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("len", &len.ok())?;
                let pairs: Vec<[JsonValue; 2]> = entries
                    .iter()
                    .map(|(k, v)| [JsonValue(k), JsonValue(v)])
                    .collect();
                map.serialize_entry("entries", &pairs)?;
                map.end()
            }
            Value::Address(0) => serializer.serialize_none(),
            Value::Address(addr) => serializer.serialize_str(&format!("{addr:#x}")),
            // Floats in registers and unlocated arguments of inlined calls: null, with the
            // reason under "unavailable" (documented).
            Value::Unavailable(
                Missing::FloatRegister
                | Missing::NoLocation
                | Missing::UncapturedRegister
                | Missing::LocationExpression,
            ) => serializer.serialize_none(),
            Value::Unavailable(missing) => NotRead(*missing, None).serialize(serializer),
        }
    }
}

/// A value the probe did not read: `{"not_read": "beyond --depth"}` (with the length of a
/// string or slice whose contents were not read), never null or empty.
struct NotRead(Missing, Option<u64>);

impl Serialize for NotRead {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("not_read", self.0.short())?;
        if let Some(len) = self.1 {
            map.serialize_entry("len", &len)?;
        }
        map.end()
    }
}

/// What a session saw, printed when it ends. Every loss is counted in calls, by cause.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Calls written that returned (or entered, with --no-return).
    pub calls: u64,
    /// Calls written that did not return (panicked, exited, in flight, abandoned).
    pub unreturned: u64,
    /// Calls reported, by how those that did not return ended.
    pub panicked: u64,
    pub exited: u64,
    /// Still running when their process exited or gotrace stopped.
    pub in_flight: u64,
    /// On a system stack whose frame the runtime reused.
    pub abandoned: u64,
    /// Arguments and results with something cut to --string-max, --elems or --depth.
    pub truncated_values: u64,
    /// Arguments and results with a part the probe did not read (beyond --depth, read
    /// budget used up, unreadable memory); floats in registers are not counted.
    pub values_not_read: u64,
    /// Calls whose entry memory was dropped (ring buffer full): their arguments are not read.
    pub args_lost: u64,
    /// Calls lost: the ring buffer was full for their record.
    pub lost_ring_full: u64,
    /// Calls lost: a probe hit preempted another on the same CPU (scratch space in use).
    pub lost_busy: u64,
    pub unmatched_returns: u64,
    /// Calls begun after gotrace began to stop, before its probes were gone: not traced.
    pub begun_while_stopping: u64,
    /// Calls lost: the in-flight table was full.
    pub inflight_full: u64,
    pub growth_restarts: u64,
    /// Calls lost: the goroutine could not be read at entry.
    pub read_failures: u64,
    /// Process exits not seen (ring buffer full): their calls in flight were reported at stop.
    pub exits_lost: u64,
    pub sites_attached: usize,
    pub sites_failed: usize,
    /// Calls not written because the output failed (a full disk, an I/O error).
    pub not_written_failed: u64,
    /// Calls not written because gotrace stopped while the output was backed up.
    pub not_written_stopped: u64,
}

impl Summary {
    /// Adds the counts of a later session on the same target (the traced file was rebuilt
    /// and attached anew). Sites are the latest session's: they are what is attached now.
    pub fn absorb(&mut self, later: &Summary) {
        let Summary {
            calls,
            unreturned,
            panicked,
            exited,
            in_flight,
            abandoned,
            truncated_values,
            values_not_read,
            args_lost,
            lost_ring_full,
            lost_busy,
            unmatched_returns,
            begun_while_stopping,
            inflight_full,
            growth_restarts,
            read_failures,
            exits_lost,
            sites_attached,
            sites_failed,
            not_written_failed,
            not_written_stopped,
        } = later;
        for (total, add) in [
            (&mut self.calls, calls),
            (&mut self.unreturned, unreturned),
            (&mut self.panicked, panicked),
            (&mut self.exited, exited),
            (&mut self.in_flight, in_flight),
            (&mut self.abandoned, abandoned),
            (&mut self.truncated_values, truncated_values),
            (&mut self.values_not_read, values_not_read),
            (&mut self.args_lost, args_lost),
            (&mut self.lost_ring_full, lost_ring_full),
            (&mut self.lost_busy, lost_busy),
            (&mut self.unmatched_returns, unmatched_returns),
            (&mut self.begun_while_stopping, begun_while_stopping),
            (&mut self.inflight_full, inflight_full),
            (&mut self.growth_restarts, growth_restarts),
            (&mut self.read_failures, read_failures),
            (&mut self.exits_lost, exits_lost),
            (&mut self.not_written_failed, not_written_failed),
            (&mut self.not_written_stopped, not_written_stopped),
        ] {
            *total += add;
        }
        self.sites_attached = *sites_attached;
        self.sites_failed = *sites_failed;
    }

    /// Calls that started and were never written, by cause.
    fn losses(&self) -> [(u64, &'static str); 6] {
        [
            (self.lost_ring_full, "ring buffer full"),
            (self.inflight_full, "in-flight table full"),
            (self.read_failures, "goroutine unreadable"),
            (self.lost_busy, "probe hit preempted on its CPU"),
            (self.not_written_failed, "output failed"),
            (
                self.not_written_stopped,
                "stopped while the output was backed up",
            ),
        ]
    }

    /// Calls lost, all causes together.
    pub fn calls_lost(&self) -> u64 {
        self.losses().iter().map(|(n, _)| n).sum()
    }

    /// `gotrace: 12 calls traced, 0 calls lost`, then what did not return, what was lost by
    /// cause, and whatever else went wrong.
    pub fn text(&self) -> String {
        let mut s = format!(
            "gotrace: {} calls traced, {} calls lost",
            self.calls + self.unreturned,
            self.calls_lost()
        );
        let join = |parts: Vec<String>| parts.join(", ");
        let unreturned: Vec<String> = [
            (self.panicked, "panicked"),
            (self.exited, "exited (runtime.Goexit)"),
            (
                self.in_flight,
                "in flight when their process exited or gotrace stopped",
            ),
            (self.abandoned, "abandoned on a system stack"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !unreturned.is_empty() {
            s.push_str(&format!(" (did not return: {})", join(unreturned)));
        }
        let lost: Vec<String> = self
            .losses()
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, why)| format!("{n} {why}"))
            .collect();
        if !lost.is_empty() {
            s.push_str(&format!(" (lost: {})", join(lost)));
        }
        let extras = [
            (
                self.args_lost,
                "calls with arguments not read (ring buffer full)",
            ),
            (
                self.unmatched_returns,
                "returns without a traced entry (calls begun before attaching)",
            ),
            (
                self.begun_while_stopping,
                "calls begun while gotrace was stopping (not traced)",
            ),
            (
                self.exits_lost,
                "process exits not seen (ring buffer full): their calls in flight were timed to the stop",
            ),
            (self.sites_failed as u64, "probe sites failed to attach"),
            (
                self.truncated_values,
                "values truncated to --string-max or --elems",
            ),
            (
                self.values_not_read,
                "values with parts not read (beyond --depth, read budget, unreadable memory)",
            ),
        ];
        for (n, what) in extras {
            if n > 0 {
                s.push_str(&format!(", {n} {what}"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_calls_by_outcome_and_losses_by_cause() {
        let summary = Summary {
            calls: 10,
            unreturned: 3,
            panicked: 2,
            in_flight: 1,
            lost_ring_full: 4,
            inflight_full: 5,
            ..Summary::default()
        };
        assert_eq!(
            summary.text(),
            "gotrace: 13 calls traced, 9 calls lost (did not return: 2 panicked, 1 in flight when their process exited or gotrace stopped) (lost: 4 ring buffer full, 5 in-flight table full)"
        );
        assert_eq!(
            Summary::default().text(),
            "gotrace: 0 calls traced, 0 calls lost"
        );
    }

    #[test]
    fn calls_begun_while_stopping_are_shown_but_not_lost() {
        let summary = Summary {
            calls: 3,
            begun_while_stopping: 7,
            ..Summary::default()
        };
        assert_eq!(summary.calls_lost(), 0);
        assert_eq!(
            summary.text(),
            "gotrace: 3 calls traced, 0 calls lost, 7 calls begun while gotrace was stopping (not traced)"
        );
    }

    #[test]
    fn in_flight_calls_show_how_long_they_ran() {
        let clock = Clock {
            realtime_minus_monotonic_ns: 0,
        };
        let in_flight = DecodedCall {
            results: None,
            ..call(CallKind::InFlight)
        };
        let line = text_line(&in_flight, clock);
        assert!(
            line.ends_with("main.Fibonacci(n=10) in flight  1.3µs"),
            "{line}"
        );
        let mut printer = Printer::new(Vec::new(), Format::Json, clock);
        printer.call(&in_flight).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&printer.into_inner()).unwrap();
        assert_eq!(v["outcome"], "in_flight");
        assert_eq!(v["duration_ns"], 1_300);
        assert!(v["results"].is_null());
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(format_duration(850), "850ns");
        assert_eq!(format_duration(1_300), "1.3µs");
        assert_eq!(format_duration(2_250_000), "2.25ms");
        assert_eq!(format_duration(1_500_000_000), "1.5s");
    }

    fn call(outcome: CallKind) -> DecodedCall<'static> {
        let int = |name: &'static str, v| NamedValue {
            name,
            type_name: "int",
            value: Value::Int(v),
        };
        DecodedCall {
            function: "main.Fibonacci",
            outcome,
            pid: 4242,
            tid: 4243,
            return_tid: 4244,
            goid: 37,
            entry_ns: 1_000,
            return_ns: 2_300,
            args: Some(vec![int("n", 10)]),
            results: Some(vec![int("~r0", 55)]),
        }
    }

    #[test]
    fn text_line_has_the_documented_shape() {
        let clock = Clock {
            realtime_minus_monotonic_ns: 0,
        };
        let line = text_line(&call(CallKind::Returned), clock);
        assert!(
            line.ends_with("pid=4242 goid=37 main.Fibonacci(n=10) = 55  1.3µs"),
            "{line}"
        );
    }

    #[test]
    fn json_line_has_every_documented_field() {
        let clock = Clock {
            realtime_minus_monotonic_ns: 1_700_000_000_000_000_000,
        };
        let mut printer = Printer::new(Vec::new(), Format::Json, clock);
        printer.call(&call(CallKind::Returned)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&printer.into_inner()).unwrap();
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["tid"], 4243);
        assert_eq!(v["goid"], 37);
        assert_eq!(v["func"], "main.Fibonacci");
        assert_eq!(v["args"]["n"], 10);
        assert_eq!(v["results"]["~r0"], 55);
        assert_eq!(v["types"]["n"], "int");
        assert_eq!(v["duration_ns"], 1_300);
        assert!(v["ts"].as_str().unwrap().starts_with("2023-11-14T22:13:20"));
    }
}
