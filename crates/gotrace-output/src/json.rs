//! Values as JSON, written straight into the output buffer.

use gotrace_decode::{Bytes, Missing, NamedValue, Value};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::io::{self, Write};

/// Something with a name, written as one key of a JSON object.
pub(crate) trait Keyed {
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
pub(crate) fn write_object<O: Write, T: Keyed>(
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

pub(crate) fn write_json_value(out: &mut impl Write, value: &Value) -> io::Result<()> {
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
pub(crate) fn write_json_str(out: &mut impl Write, s: &str) -> io::Result<()> {
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
            Value::Struct { fields, .. } => serialize_fields(serializer, fields),
            Value::Pointer { target: None, .. } => serializer.serialize_none(),
            Value::Pointer {
                target: Some(Ok(v)),
                ..
            } => JsonValue(v).serialize(serializer),
            Value::Pointer {
                addr,
                target: Some(Err(missing)),
                ..
            } => serialize_unread_target(serializer, *addr, *missing),
            Value::Interface { dynamic: None } => serializer.serialize_none(),
            Value::Interface {
                dynamic: Some((name, value)),
            } => serialize_interface(serializer, name, value),
            Value::Map { addr: 0, .. } => serializer.serialize_none(),
            Value::Map {
                len: Err(missing), ..
            } => NotRead(*missing, None).serialize(serializer),
            Value::Map { len, entries, .. } => serialize_map(serializer, len.ok(), entries),
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
            // An untyped word: where it is in the argument frame, and its bits or why not.
            Value::Word { offset, size, bits } => serialize_word(serializer, *offset, *size, bits),
            Value::Words(words) => serializer.collect_seq(words.iter().map(JsonValue)),
            Value::Elided => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("elided", &true)?;
                map.end()
            }
        }
    }
}

fn serialize_fields<S: Serializer>(
    serializer: S,
    fields: &[(String, Value)],
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(fields.len()))?;
    for (name, v) in fields {
        map.serialize_entry(name, &JsonValue(v))?;
    }
    map.end()
}

/// A pointer whose target was not read: its address, and why.
fn serialize_unread_target<S: Serializer>(
    serializer: S,
    addr: u64,
    missing: Missing,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("address", &format!("{addr:#x}"))?;
    if missing == Missing::Unreadable {
        map.serialize_entry("error", "unreadable")?;
    } else {
        map.serialize_entry("not_read", missing.short())?;
    }
    map.end()
}

fn serialize_interface<S: Serializer>(
    serializer: S,
    name: &str,
    value: &Result<Box<Value>, Missing>,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(2))?;
    map.serialize_entry("type", name)?;
    match value {
        Ok(v) => map.serialize_entry("value", &JsonValue(v))?,
        Err(missing) => map.serialize_entry("value", &NotRead(*missing, None))?,
    }
    map.end()
}

fn serialize_map<S: Serializer>(
    serializer: S,
    len: Option<u64>,
    entries: &[(Value, Value)],
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(2))?;
    map.serialize_entry("len", &len)?;
    let pairs: Vec<[JsonValue; 2]> = entries
        .iter()
        .map(|(k, v)| [JsonValue(k), JsonValue(v)])
        .collect();
    map.serialize_entry("entries", &pairs)?;
    map.end()
}

fn serialize_word<S: Serializer>(
    serializer: S,
    offset: u64,
    size: u8,
    bits: &Result<u64, Missing>,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(3))?;
    map.serialize_entry("offset", &offset)?;
    map.serialize_entry("size", &size)?;
    match bits {
        Ok(bits) => map.serialize_entry("value", bits)?,
        Err(missing) => map.serialize_entry("not_read", missing.short())?,
    }
    map.end()
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
