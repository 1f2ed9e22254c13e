//! Go-syntax rendering of decoded values, close to what `%#v` prints: `"hello"`,
//! `[]byte{0x68, 0x69} (len 2 cap 8)`, `&main.Point{X:1, Y:2}`, `*errors.errorString{s:"boom"}`,
//! `map[string]int{"a":1, …+3}`. Cut values say so: `"hello wor"…(+1234 bytes)`.

use gotrace_decode::{Bytes, Missing, Value};
use std::fmt::{self, Write};

/// Renders `value` in Go syntax.
pub fn go_syntax(value: &Value) -> String {
    GoSyntax(value).to_string()
}

/// `Display` in Go syntax, for writing into a buffer without an intermediate String.
pub struct GoSyntax<'a>(pub &'a Value);

impl fmt::Display for GoSyntax<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value(f, self.0)
    }
}

fn write_value(f: &mut fmt::Formatter<'_>, value: &Value) -> fmt::Result {
    match value {
        Value::Bool(b) => write!(f, "{b}"),
        Value::Int(i) => write!(f, "{i}"),
        Value::Uint(u) => write!(f, "{u}"),
        Value::Float(x) => write_float(f, *x),
        Value::Complex(re, im) => {
            f.write_char('(')?;
            write_complex(f, *re, *im)?;
            f.write_char(')')
        }
        Value::String(bytes) => write_string(f, bytes),
        Value::Slice { ptr: 0, .. } => f.write_str("nil"),
        Value::Slice {
            type_name,
            len,
            cap,
            elems,
            ..
        } => write_slice(f, type_name, *len, *cap, elems),
        Value::Array { type_name, elems } => {
            f.write_str(type_name)?;
            write_list(f, elems.iter(), write_value)
        }
        Value::Struct { type_name, fields } => {
            f.write_str(type_name)?;
            write_fields(f, fields)
        }
        Value::Pointer { target: None, .. } => f.write_str("nil"),
        Value::Pointer {
            type_name,
            addr,
            target: Some(target),
        } => write_pointer(f, type_name, *addr, target),
        Value::Interface { dynamic: None } => f.write_str("nil"),
        Value::Interface {
            dynamic: Some((name, value)),
        } => write_interface(f, name, value),
        Value::Map { addr: 0, .. } => f.write_str("nil"),
        Value::Map {
            type_name,
            len,
            entries,
            entries_missing,
            ..
        } => write_map(f, type_name, *len, entries, *entries_missing),
        Value::Address(0) => f.write_str("nil"),
        Value::Address(addr) => write!(f, "{addr:#x}"),
        // Floats in registers, never read by any uprobe, and an inlined call's arguments that
        // DWARF does not locate: documented as `?`.
        Value::Unavailable(
            Missing::FloatRegister
            | Missing::NoLocation
            | Missing::UncapturedRegister
            | Missing::LocationExpression,
        ) => f.write_char('?'),
        Value::Unavailable(missing) => write_not_read(f, *missing),
        // Untyped words, as a Go traceback prints them: `0xa`, `{0x4c10a0, 0x5}`, `...`; a
        // word whose place is not proven is `?` (JSON says why).
        Value::Word { bits: Ok(bits), .. } => write!(f, "{bits:#x}"),
        Value::Word { bits: Err(_), .. } => f.write_char('?'),
        Value::Words(words) => write_list(f, words.iter(), write_value),
        Value::Elided => f.write_str("..."),
    }
}

/// `[]byte{0x68, 0x69} (len 2 cap 8)`: byte slices in hex, the elements not captured counted.
fn write_slice(
    f: &mut fmt::Formatter<'_>,
    type_name: &str,
    len: u64,
    cap: u64,
    elems: &Result<Vec<Value>, Missing>,
) -> fmt::Result {
    let byte_slice = type_name == "[]uint8";
    f.write_str(if byte_slice { "[]byte" } else { type_name })?;
    match elems {
        Ok(elems) => {
            f.write_char('{')?;
            for (i, e) in elems.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                match (byte_slice, e) {
                    (true, Value::Uint(b)) => write!(f, "{b:#04x}")?,
                    _ => write_value(f, e)?,
                }
            }
            write_more(f, elems.len() as u64, len)?;
            f.write_char('}')?;
        }
        Err(missing) => write_missing(f, *missing)?,
    }
    write!(f, " (len {len} cap {cap})")
}

/// `map[string]int{"a":1, …+3}`, with why entries are missing when the probe meant to read them.
fn write_map(
    f: &mut fmt::Formatter<'_>,
    type_name: &str,
    len: Result<u64, Missing>,
    entries: &[(Value, Value)],
    entries_missing: Option<Missing>,
) -> fmt::Result {
    f.write_str(type_name)?;
    let len = match len {
        Ok(len) => len,
        Err(missing) => return write_missing(f, missing),
    };
    f.write_char('{')?;
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_value(f, k)?;
        f.write_char(':')?;
        write_value(f, v)?;
    }
    let shown = entries.len() as u64;
    write_more(f, shown, len)?;
    if let Some(missing) = entries_missing.filter(|_| shown < len) {
        f.write_char(' ')?;
        write_not_read(f, missing)?;
    }
    f.write_char('}')
}

/// `…+3` (after `, ` when some were shown): how many of `len` elements were not captured.
fn write_more(f: &mut fmt::Formatter<'_>, shown: u64, len: u64) -> fmt::Result {
    if shown < len {
        write!(f, "{}…+{}", if shown > 0 { ", " } else { "" }, len - shown)?;
    }
    Ok(())
}

/// A non-nil pointer: `&` and its target, or its type and address when the target was not read.
fn write_pointer(
    f: &mut fmt::Formatter<'_>,
    type_name: &str,
    addr: u64,
    target: &Result<Box<Value>, Missing>,
) -> fmt::Result {
    match target {
        Ok(v) => {
            f.write_char('&')?;
            write_value(f, v)
        }
        Err(missing) => {
            write!(f, "({type_name})({addr:#x}) ")?;
            write_not_read(f, *missing)
        }
    }
}

/// A non-nil interface: composite values as themselves, scalars as a conversion `main.ID(7)`.
fn write_interface(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    value: &Result<Box<Value>, Missing>,
) -> fmt::Result {
    let v = match value {
        Ok(v) => v.as_ref(),
        Err(missing) => {
            return write_conversion(f, name, |f| write_not_read(f, *missing));
        }
    };
    match v {
        // A pointer to a struct reads as its type and fields: *errors.errorString{s:"boom"}.
        Value::Pointer {
            target: Some(Ok(target)),
            ..
        } => match target.as_ref() {
            Value::Struct { fields, .. } => {
                f.write_str(name)?;
                write_fields(f, fields)
            }
            other => write_conversion(f, name, |f| {
                f.write_char('&')?;
                write_value(f, other)
            }),
        },
        Value::Struct { .. }
        | Value::Pointer { .. }
        | Value::Slice { .. }
        | Value::Map { .. }
        | Value::Array { .. } => write_value(f, v),
        // complex64(3+0.25i): the conversion's parentheses are the complex's own.
        Value::Complex(re, im) => write_conversion(f, name, |f| write_complex(f, *re, *im)),
        scalar => write_conversion(f, name, |f| write_value(f, scalar)),
    }
}

/// `NAME(…)`, the inside written by `inner`.
fn write_conversion(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    inner: impl FnOnce(&mut fmt::Formatter<'_>) -> fmt::Result,
) -> fmt::Result {
    write!(f, "{name}(")?;
    inner(f)?;
    f.write_char(')')
}

fn write_complex(f: &mut fmt::Formatter<'_>, re: f64, im: f64) -> fmt::Result {
    write_float(f, re)?;
    if im >= 0.0 || im.is_nan() {
        f.write_char('+')?;
    }
    write_float(f, im)?;
    f.write_char('i')
}

/// The contents of a slice or map that were not read: `{<not read: beyond --depth>}`.
fn write_missing(f: &mut fmt::Formatter<'_>, missing: Missing) -> fmt::Result {
    f.write_char('{')?;
    write_not_read(f, missing)?;
    f.write_char('}')
}

/// `<not read: REASON>`: what the probe did not read is said so, never shown as nil or empty.
fn write_not_read(f: &mut impl Write, missing: Missing) -> fmt::Result {
    write!(f, "<not read: {}>", missing.short())
}

fn write_list<'v, T: 'v>(
    f: &mut fmt::Formatter<'_>,
    items: impl Iterator<Item = &'v T>,
    mut each: impl FnMut(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    f.write_char('{')?;
    for (i, item) in items.enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        each(f, item)?;
    }
    f.write_char('}')
}

fn write_fields(f: &mut fmt::Formatter<'_>, fields: &[(String, Value)]) -> fmt::Result {
    write_list(f, fields.iter(), |f, (name, v)| {
        write!(f, "{name}:")?;
        write_value(f, v)
    })
}

fn write_float(f: &mut fmt::Formatter<'_>, x: f64) -> fmt::Result {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e21 {
        write!(f, "{x:.0}")
    } else if x.is_nan() {
        f.write_str("NaN")
    } else if x.is_infinite() {
        f.write_str(if x > 0.0 { "+Inf" } else { "-Inf" })
    } else {
        write!(f, "{x}")
    }
}

fn write_string(f: &mut fmt::Formatter<'_>, s: &Bytes) -> fmt::Result {
    if let Some(missing) = s.error {
        return write!(
            f,
            "<not read: {}, string of {} bytes>",
            missing.short(),
            s.missing
        );
    }
    write_quoted(f, &s.bytes)?;
    if s.missing > 0 {
        write!(f, "…(+{} bytes)", s.missing)?;
    }
    Ok(())
}

/// Quotes bytes the way Go's strconv.Quote does: printable UTF-8 as is, the rest escaped.
fn write_quoted(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_char('"')?;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => {
                    if (c as u32) < 0x80 {
                        write!(f, "\\x{:02x}", c as u32)?
                    } else {
                        write!(f, "\\u{:04x}", c as u32)?
                    }
                }
                c => f.write_char(c)?,
            }
        }
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str, missing: u64) -> Value {
        Value::String(Bytes {
            bytes: s.as_bytes().to_vec(),
            missing,
            error: None,
        })
    }

    #[test]
    fn strings_are_quoted_like_go_and_say_when_cut() {
        assert_eq!(go_syntax(&string("hello", 0)), "\"hello\"");
        assert_eq!(go_syntax(&string("a\"b\n", 0)), "\"a\\\"b\\n\"");
        assert_eq!(
            go_syntax(&string("hello wor", 1234)),
            "\"hello wor\"…(+1234 bytes)"
        );
        assert_eq!(go_syntax(&string("héllo", 0)), "\"héllo\"");
    }

    #[test]
    fn byte_slices_and_structs_read_like_the_issue_examples() {
        let bytes = Value::Slice {
            type_name: "[]uint8".into(),
            ptr: 0xc000,
            len: 2,
            cap: 8,
            elems: Ok(vec![Value::Uint(0x68), Value::Uint(0x69)]),
        };
        assert_eq!(go_syntax(&bytes), "[]byte{0x68, 0x69} (len 2 cap 8)");
        let point = Value::Struct {
            type_name: "main.Point".into(),
            fields: vec![("X".into(), Value::Int(1)), ("Y".into(), Value::Int(2))],
        };
        let p = Value::Pointer {
            type_name: "*main.Point".into(),
            addr: 0xc000,
            target: Some(Ok(Box::new(point))),
        };
        assert_eq!(go_syntax(&p), "&main.Point{X:1, Y:2}");
        let err_struct = Value::Struct {
            type_name: "errors.errorString".into(),
            fields: vec![("s".into(), string("boom", 0))],
        };
        let err = Value::Interface {
            dynamic: Some((
                "*errors.errorString".into(),
                Ok(Box::new(Value::Pointer {
                    type_name: "*errors.errorString".into(),
                    addr: 1,
                    target: Some(Ok(Box::new(err_struct))),
                })),
            )),
        };
        assert_eq!(go_syntax(&err), "*errors.errorString{s:\"boom\"}");
        assert_eq!(go_syntax(&Value::Interface { dynamic: None }), "nil");
        let map = Value::Map {
            type_name: "map[string]int".into(),
            addr: 0xc000,
            len: Ok(4),
            entries: vec![(string("a", 0), Value::Int(1))],
            entries_missing: None,
        };
        assert_eq!(go_syntax(&map), "map[string]int{\"a\":1, …+3}");
        assert_eq!(go_syntax(&Value::Float(3.25)), "3.25");
    }

    /// Issue 9: a value the probe did not read says so, never nil or empty.
    #[test]
    fn complex_values_keep_one_pair_of_parentheses() {
        assert_eq!(go_syntax(&Value::Complex(3.0, 0.25)), "(3+0.25i)");
        let boxed = Value::Interface {
            dynamic: Some(("complex64".into(), Ok(Box::new(Value::Complex(3.0, -0.25))))),
        };
        assert_eq!(go_syntax(&boxed), "complex64(3-0.25i)");
        let unreadable = Value::Pointer {
            type_name: "*main.Point".into(),
            addr: 0x10,
            target: Some(Err(Missing::Unreadable)),
        };
        assert_eq!(
            go_syntax(&unreadable),
            "(*main.Point)(0x10) <not read: unreadable memory>"
        );
    }

    #[test]
    fn values_not_read_say_why() {
        let not_read = |missing| {
            Value::String(Bytes {
                bytes: Vec::new(),
                missing: 12,
                error: Some(missing),
            })
        };
        assert_eq!(
            go_syntax(&not_read(Missing::Budget)),
            "<not read: read budget used up, string of 12 bytes>"
        );
        let deep = Value::Pointer {
            type_name: "*main.Node".into(),
            addr: 0xc000,
            target: Some(Err(Missing::Depth)),
        };
        assert_eq!(
            go_syntax(&deep),
            "(*main.Node)(0xc000) <not read: beyond --depth>"
        );
        let map = Value::Map {
            type_name: "map[int]int".into(),
            addr: 0xc000,
            len: Err(Missing::Budget),
            entries: Vec::new(),
            entries_missing: None,
        };
        assert_eq!(
            go_syntax(&map),
            "map[int]int{<not read: read budget used up>}"
        );
        assert_eq!(
            go_syntax(&Value::Unavailable(Missing::Budget)),
            "<not read: read budget used up>"
        );
        assert_eq!(go_syntax(&Value::Unavailable(Missing::FloatRegister)), "?");
        for v in [not_read(Missing::Unreadable), deep, map] {
            assert!(v.has_unread_part(), "{v:?}");
        }
    }
}
