//! One call, as a text line or a JSON object.

use crate::go_syntax::GoSyntax;
use crate::json::{write_json_str, write_json_value, write_object};
use gotrace_decode::{DecodedCall, NamedValue, Stack};
use gotrace_plan::{CallKind, StackEnd};
use std::io::{self, Write};

/// `12:01:02.345678 pid=4242 goid=37 main.Fibonacci(n=10) = 55  1.3µs`
pub(crate) fn write_text(
    out: &mut impl Write,
    call: &DecodedCall<'_>,
    local: &str,
    nanos: u32,
) -> io::Result<()> {
    write!(
        out,
        "{local}.{:06} pid={} goid={} ",
        nanos / 1000,
        call.pid,
        call.goid,
    )?;
    write_label(out, call)?;
    if let (CallKind::Returned | CallKind::InFlight, Some(ns)) = (call.outcome, call.duration_ns())
    {
        write!(out, "  {}", format_duration(ns))?
    }
    match &call.stack {
        Some(stack) => write_stack_text(out, stack),
        None => Ok(()),
    }
}

/// The stack under the call line, innermost first, one `    at func (file:line)` line per
/// frame (each line starts with its newline: the caller ends the last), then how it ended
/// unless it is whole.
fn write_stack_text(out: &mut impl Write, stack: &Stack) -> io::Result<()> {
    for f in &stack.frames {
        write!(
            out,
            "\n    at {} ({}:{})",
            escape_controls(&f.function),
            escape_controls(&f.file),
            f.line
        )?;
        if f.inlined {
            out.write_all(b" [inlined]")?;
        }
    }
    let end: &[u8] = match stack.end {
        StackEnd::Complete => return Ok(()),
        StackEnd::Cut => b"\n    ... stack cut: more frames than the limit",
        StackEnd::Unreadable => b"\n    ... next frame not read (unreadable memory)",
        StackEnd::Broken => b"\n    ... next frame not followed (the frame pointer chain broke)",
        StackEnd::Lost => b"\n    ... stack not known (its record was lost: ring buffer full)",
    };
    out.write_all(end)
}

/// `,"stack":[{"func":…,"file":…,"line":…,"inlined":…,"pc":"0x…"},…],"stack_end":"…"`
fn write_stack_json(out: &mut impl Write, stack: &Stack) -> io::Result<()> {
    let mut n = itoa::Buffer::new();
    out.write_all(b",\"stack\":[")?;
    for (i, f) in stack.frames.iter().enumerate() {
        out.write_all(if i > 0 { b",{\"func\":" } else { b"{\"func\":" })?;
        write_json_str(out, &f.function)?;
        out.write_all(b",\"file\":")?;
        write_json_str(out, &f.file)?;
        out.write_all(b",\"line\":")?;
        out.write_all(n.format(f.line).as_bytes())?;
        out.write_all(if f.inlined {
            b",\"inlined\":true"
        } else {
            b",\"inlined\":false"
        })?;
        write!(out, ",\"pc\":\"{:#x}\"}}", f.pc)?;
    }
    out.write_all(b"],\"stack_end\":")?;
    serde_json::to_writer(&mut *out, &stack.end).map_err(io::Error::from)
}

/// `main.Fibonacci(n=10) = 55`, or the way the call ended: the call without where, when and
/// how long.
pub(crate) fn write_label(out: &mut impl Write, call: &DecodedCall<'_>) -> io::Result<()> {
    write!(out, "{}(", escape_controls(call.function))?;
    match &call.args {
        Some(args) => {
            for (i, v) in args.iter().enumerate() {
                let sep = if i > 0 { ", " } else { "" };
                match v.name {
                    // Untyped words are positional, like a Go traceback's.
                    "" => write!(out, "{sep}{}", GoSyntax(&v.value))?,
                    name => write!(out, "{sep}{name}={}", GoSyntax(&v.value))?,
                }
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
        CallKind::InFlight => out.write_all(b" in flight"),
        CallKind::ReturnNotSeen => out.write_all(b" return not seen"),
        CallKind::Returned => match call.results.as_deref() {
            None => out.write_all(b" = ?"),
            Some([]) => Ok(()),
            Some([one]) => write!(out, " = {}", GoSyntax(&one.value)),
            Some(many) => {
                out.write_all(b" = (")?;
                for (i, v) in many.iter().enumerate() {
                    let sep = if i > 0 { ", " } else { "" };
                    write!(out, "{sep}{}", GoSyntax(&v.value))?;
                }
                out.write_all(b")")
            }
        },
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
pub(crate) fn write_json(
    out: &mut impl Write,
    call: &DecodedCall<'_>,
    utc: &str,
    nanos: u32,
) -> io::Result<()> {
    let mut n = itoa::Buffer::new();
    write!(
        out,
        "{{\"type\":\"call\",\"ts\":\"{utc}.{nanos:09}Z\",\"pid\":"
    )?;
    out.write_all(n.format(call.pid).as_bytes())?;
    out.write_all(b",\"tid\":")?;
    out.write_all(n.format(call.tid).as_bytes())?;
    out.write_all(b",\"goid\":")?;
    out.write_all(n.format(call.goid).as_bytes())?;
    out.write_all(b",\"func\":")?;
    write_json_str(out, call.function)?;
    out.write_all(outcome_json(call.outcome))?;
    write_values_json(out, call)?;
    write_value_notes_json(out, call)?;
    out.write_all(b",\"duration_ns\":")?;
    match call.duration_ns() {
        Some(ns) => out.write_all(n.format(ns).as_bytes())?,
        None => out.write_all(b"null")?,
    }
    if call.outcome == CallKind::Returned {
        out.write_all(b",\"return_tid\":")?;
        out.write_all(n.format(call.return_tid).as_bytes())?;
    }
    if let Some(stack) = &call.stack {
        write_stack_json(out, stack)?;
    }
    out.write_all(b"}")
}

fn outcome_json(outcome: CallKind) -> &'static [u8] {
    match outcome {
        CallKind::Returned => b",\"outcome\":\"returned\"",
        CallKind::Entered => b",\"outcome\":\"entered\"",
        CallKind::Inlined => b",\"outcome\":\"inlined\"",
        CallKind::Panicked => b",\"outcome\":\"panicked\"",
        CallKind::Exited => b",\"outcome\":\"exited\"",
        CallKind::InFlight => b",\"outcome\":\"in_flight\"",
        CallKind::Abandoned => b",\"outcome\":\"abandoned\"",
        CallKind::ReturnNotSeen => b",\"outcome\":\"return_not_seen\"",
    }
}

/// `"args"` and `"results"`: objects by name, or for untyped words a list of `"args"`.
fn write_values_json(out: &mut impl Write, call: &DecodedCall<'_>) -> io::Result<()> {
    // Untyped words have no names: a list, in order, each word with its offset and size.
    if let Some(args) = call
        .args
        .as_ref()
        .filter(|a| a.iter().any(|v| v.name.is_empty()))
    {
        out.write_all(b",\"untyped\":true,\"args\":[")?;
        for (i, v) in args.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write_json_value(out, &v.value)?;
        }
        return out.write_all(b"],\"results\":null");
    }
    for (key, values) in [("args", &call.args), ("results", &call.results)] {
        write!(out, ",\"{key}\":")?;
        match values {
            None => out.write_all(b"null")?,
            Some(values) => write_object(out, values, |out, v| write_json_value(out, &v.value))?,
        }
    }
    Ok(())
}

/// `"types"`, `"truncated"` and `"unavailable"` of the named values.
fn write_value_notes_json(out: &mut impl Write, call: &DecodedCall<'_>) -> io::Result<()> {
    let all: Vec<&NamedValue<'_>> = call
        .args
        .iter()
        .chain(call.results.iter())
        .flatten()
        .filter(|v| !v.name.is_empty())
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, Format, Printer, Record};
    use gotrace_decode::Value;

    fn text_line(call: &DecodedCall<'_>, clock: Clock) -> String {
        Printer::new(Vec::new(), Format::Text, clock).text(&Record::Call(call))
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

    #[test]
    fn untyped_words_read_like_a_go_traceback() {
        let word = |offset, size, bits| Value::Word { offset, size, bits };
        let positional = |value| NamedValue {
            name: "",
            type_name: "",
            value,
        };
        let untyped = DecodedCall {
            args: Some(vec![
                positional(word(0, 8, Ok(10))),
                positional(Value::Words(vec![
                    word(8, 8, Ok(0x4c10a0)),
                    word(16, 8, Ok(5)),
                ])),
                positional(word(24, 1, Err(gotrace_decode::Missing::NoStackCheck))),
                positional(Value::Elided),
            ]),
            results: None,
            ..call(CallKind::Returned)
        };
        let clock = Clock {
            realtime_minus_monotonic_ns: 0,
        };
        let line = text_line(&untyped, clock);
        assert!(
            line.contains("main.Fibonacci(0xa, {0x4c10a0, 0x5}, ?, ...) = ?  1.3µs"),
            "{line}"
        );
        let mut printer = Printer::new(Vec::new(), Format::Json, clock);
        printer.call(&untyped).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&printer.into_inner()).unwrap();
        assert_eq!(v["untyped"], true);
        assert_eq!(v["args"][0]["value"], 10);
        assert_eq!(v["args"][1][1]["offset"], 16);
        assert_eq!(v["args"][2]["size"], 1);
        assert_eq!(
            v["args"][2]["not_read"],
            "no debug information, no stack check"
        );
        assert_eq!(v["args"][3]["elided"], true);
        assert!(v["results"].is_null());
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
            stack: None,
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

    #[test]
    fn stacks_show_under_the_call_and_say_how_they_ended() {
        use gotrace_decode::{Frame, Stack};
        use gotrace_plan::StackEnd;
        let frame = |function: &str, line, inlined| Frame {
            function: function.to_owned(),
            file: "/src/main.go".to_owned(),
            line,
            inlined,
            wrapper: false,
            pc: 0x401000,
        };
        let clock = Clock {
            realtime_minus_monotonic_ns: 0,
        };
        let with_stack = DecodedCall {
            stack: Some(Stack {
                frames: vec![
                    frame("main.Fibonacci", 10, false),
                    frame("main.helper", 20, true),
                    frame("main.main", 30, false),
                ],
                end: StackEnd::Cut,
            }),
            ..call(CallKind::Returned)
        };
        let text = text_line(&with_stack, clock);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with("main.Fibonacci(n=10) = 55  1.3µs"),
            "{text}"
        );
        assert_eq!(
            &lines[1..],
            [
                "    at main.Fibonacci (/src/main.go:10)",
                "    at main.helper (/src/main.go:20) [inlined]",
                "    at main.main (/src/main.go:30)",
                "    ... stack cut: more frames than the limit",
            ]
        );
        let mut printer = Printer::new(Vec::new(), Format::Json, clock);
        printer.call(&with_stack).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&printer.into_inner()).unwrap();
        assert_eq!(v["stack_end"], "cut");
        assert_eq!(v["stack"][1]["func"], "main.helper");
        assert_eq!(v["stack"][1]["inlined"], true);
        assert_eq!(v["stack"][2]["line"], 30);
        assert_eq!(v["stack"][0]["pc"], "0x401000");
        // Without --stack, no stack keys at all.
        let mut printer = Printer::new(Vec::new(), Format::Json, clock);
        printer.call(&call(CallKind::Returned)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&printer.into_inner()).unwrap();
        assert!(v.get("stack").is_none() && v.get("stack_end").is_none());
    }
}
