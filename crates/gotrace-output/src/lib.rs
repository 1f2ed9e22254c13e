//! Output: one line per call, as text for people or JSON for machines, written through a
//! buffer that the event loop flushes once per batch, and the summary printed at the end.

use chrono::{DateTime, Local, Utc};
use gotrace_decode::{go_syntax, DecodedCall, Missing, NamedValue, Value};
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
    fn wall(&self, monotonic_ns: u64) -> DateTime<Utc> {
        let ns = i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns;
        DateTime::from_timestamp_nanos(ns.clamp(0, i128::from(i64::MAX)) as i64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Writes calls in one format.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    clock: Clock,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format, clock: Clock) -> Self {
        Printer { out, format, clock }
    }

    pub fn call(&mut self, call: &DecodedCall<'_>) -> io::Result<()> {
        match self.format {
            Format::Text => {
                let line = text_line(call, self.clock);
                writeln!(self.out, "{line}")
            }
            Format::Json => {
                serde_json::to_writer(
                    &mut self.out,
                    &JsonCall {
                        call,
                        clock: self.clock,
                    },
                )?;
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
}

/// `12:01:02.345678 pid=4242 goid=37 main.Fibonacci(n=10) = 55  1.3µs`
pub fn text_line(call: &DecodedCall<'_>, clock: Clock) -> String {
    let time = clock
        .wall(call.entry_ns)
        .with_timezone(&Local)
        .format("%H:%M:%S%.6f");
    let args = match &call.args {
        Some(args) => join_named(args),
        None => "?".into(),
    };
    let head = format!(
        "{time} pid={} goid={} {}({args})",
        call.pid, call.goid, call.function
    );
    match call.outcome {
        CallKind::Entered => head,
        CallKind::Panicked => format!("{head} panicked"),
        CallKind::Exited => format!("{head} exited (runtime.Goexit)"),
        CallKind::Returned => {
            let results = match call.results.as_deref() {
                None => " = ?".to_owned(),
                Some([]) => String::new(),
                Some([one]) => format!(" = {}", go_syntax(&one.value)),
                Some(many) => format!(
                    " = ({})",
                    many.iter()
                        .map(|v| go_syntax(&v.value))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let duration = call.duration_ns().map(format_duration).unwrap_or_default();
            format!("{head}{results}  {duration}")
        }
    }
}

fn join_named(values: &[NamedValue]) -> String {
    values
        .iter()
        .map(|v| format!("{}={}", v.name, go_syntax(&v.value)))
        .collect::<Vec<_>>()
        .join(", ")
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

struct JsonCall<'a, 'p> {
    call: &'a DecodedCall<'p>,
    clock: Clock,
}

impl Serialize for JsonCall<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.call;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(
            "ts",
            &self
                .clock
                .wall(c.entry_ns)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        )?;
        map.serialize_entry("pid", &c.pid)?;
        map.serialize_entry("tid", &c.tid)?;
        map.serialize_entry("goid", &c.goid)?;
        map.serialize_entry("func", c.function)?;
        map.serialize_entry("outcome", &c.outcome)?;
        map.serialize_entry("args", &c.args.as_deref().map(InOrder))?;
        map.serialize_entry("results", &c.results.as_deref().map(InOrder))?;
        map.serialize_entry("types", &TypesOf(c))?;
        map.serialize_entry("truncated", &TruncatedNames(c))?;
        map.serialize_entry("unavailable", &UnavailableReasons(c))?;
        map.serialize_entry("duration_ns", &c.duration_ns())?;
        if c.outcome == CallKind::Returned {
            map.serialize_entry("return_tid", &c.return_tid)?;
        }
        map.end()
    }
}

/// Name → value, in declaration order.
struct InOrder<'a>(&'a [NamedValue]);

impl Serialize for InOrder<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for v in self.0 {
            map.serialize_entry(&v.name, &JsonValue(&v.value))?;
        }
        map.end()
    }
}

/// Name → Go type name, for every argument and result.
struct TypesOf<'a, 'p>(&'a DecodedCall<'p>);

impl Serialize for TypesOf<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for v in self.0.args.iter().chain(self.0.results.iter()).flatten() {
            map.serialize_entry(&v.name, &v.type_name)?;
        }
        map.end()
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
            Value::String(s) if s.error.is_some() => serializer.serialize_none(),
            Value::String(s) => serializer.serialize_str(&String::from_utf8_lossy(&s.bytes)),
            Value::Slice { ptr: 0, .. } => serializer.serialize_none(),
            Value::Slice {
                elems: Ok(elems), ..
            }
            | Value::Array { elems, .. } => serializer.collect_seq(elems.iter().map(JsonValue)),
            Value::Slice { elems: Err(_), .. } => serializer.serialize_none(),
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
                }
                map.end()
            }
            Value::Interface { dynamic: None } => serializer.serialize_none(),
            Value::Interface {
                dynamic: Some((name, value)),
            } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("type", name)?;
                map.serialize_entry("value", &value.as_deref().ok().map(JsonValue))?;
                map.end()
            }
            Value::Map { addr: 0, .. } => serializer.serialize_none(),
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
            Value::Unavailable(_) => serializer.serialize_none(),
        }
    }
}

/// Names of the values with something cut, in the order of the signature.
struct TruncatedNames<'a, 'p>(&'a DecodedCall<'p>);

impl Serialize for TruncatedNames<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let values = self.0.args.iter().chain(self.0.results.iter()).flatten();
        serializer.collect_seq(values.filter(|v| v.value.is_truncated()).map(|v| &v.name))
    }
}

/// Name → why the value could not be read.
struct UnavailableReasons<'a, 'p>(&'a DecodedCall<'p>);

impl Serialize for UnavailableReasons<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for v in self.0.args.iter().chain(self.0.results.iter()).flatten() {
            if let Some(missing) = v.value.unavailable_part() {
                map.serialize_entry(&v.name, missing.reason())?;
            }
        }
        map.end()
    }
}

/// What a session saw, printed when it ends.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub calls: u64,
    pub unreturned: u64,
    /// Arguments and results with something cut to --string-max, --elems or --depth.
    pub truncated_values: u64,
    pub lost_events: u64,
    pub unmatched_returns: u64,
    pub inflight_full: u64,
    pub growth_restarts: u64,
    pub read_failures: u64,
    pub sites_attached: usize,
    pub sites_failed: usize,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut s = format!(
            "gotrace: {} calls traced, {} events lost",
            self.calls, self.lost_events
        );
        let extras = [
            (
                self.unreturned,
                "calls did not return (unwound by a panic, or runtime.Goexit)",
            ),
            (
                self.unmatched_returns,
                "returns without a traced entry (calls begun before attaching)",
            ),
            (
                self.inflight_full,
                "calls not tracked (in-flight table full)",
            ),
            (
                self.read_failures,
                "probe hits where the goroutine could not be read",
            ),
            (self.sites_failed as u64, "probe sites failed to attach"),
            (
                self.truncated_values,
                "values truncated to --string-max or --elems",
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
    fn durations_read_like_go() {
        assert_eq!(format_duration(850), "850ns");
        assert_eq!(format_duration(1_300), "1.3µs");
        assert_eq!(format_duration(2_250_000), "2.25ms");
        assert_eq!(format_duration(1_500_000_000), "1.5s");
    }

    fn call(outcome: CallKind) -> DecodedCall<'static> {
        let int = |name: &str, v| NamedValue {
            name: name.into(),
            type_name: "int".into(),
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
