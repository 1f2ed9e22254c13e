//! Readable descriptors turned into [`GoType`]s with the Go names DWARF gives them.

use super::descriptor::{Name, Raw, Shape};
use crate::types::{Field, GoType, TypeId, TypeKind, TypeTable};
use std::collections::{HashMap, HashSet};

/// Unnamed types nested deeper than this are not named (no real program comes close).
const MAX_NAME_DEPTH: usize = 64;

/// The descriptors a type's [`TypeKind`] refers to.
fn layout_parts(shape: &Shape) -> Vec<u64> {
    match shape {
        Shape::Pointer(e) | Shape::Slice(e) | Shape::Array(e, _) | Shape::Chan(e, _) => vec![*e],
        Shape::Map(k, v, _) => vec![*k, *v],
        Shape::Struct(_, fields) => fields.iter().map(|f| f.ty).collect(),
        Shape::Basic(_) | Shape::Interface(..) | Shape::Func { .. } => Vec::new(),
    }
}

impl Name {
    /// How Go's type strings write it: an unexported name qualified by its package path.
    pub(super) fn qualified(&self, type_pkg: &str) -> String {
        let pkg = self.pkg_path.as_deref().unwrap_or(type_pkg);
        if self.exported || pkg.is_empty() {
            self.text.clone()
        } else {
            format!("{}.{}", symbol_path(pkg), self.text)
        }
    }
}

/// An import path as symbol names (and so DWARF and `.gopclntab`) write it: the last
/// element's dots and a few unsafe bytes escaped (`cmd/internal/objabi.PathToPrefix`).
pub(super) fn symbol_path(path: &str) -> String {
    let slash = path.rfind('/').map_or(0, |i| i + 1);
    let mut out = String::with_capacity(path.len());
    for (i, c) in path.char_indices() {
        let escape = c <= ' ' || (c == '.' && i >= slash) || c == '%' || c == '"' || c > '~';
        if escape {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Turns readable descriptors into [`GoType`]s on demand, with full Go names.
pub(super) struct Builder<'r> {
    raws: &'r HashMap<u64, Result<Raw, String>>,
    bad: &'r HashMap<u64, String>,
    ids: HashMap<u64, TypeId>,
    types: Vec<Option<GoType>>,
    /// `*T` made for a `T` whose own pointer type has no descriptor.
    made_pointers: HashMap<u64, TypeId>,
    names: HashMap<u64, String>,
    /// The unnamed types whose names are being built.
    naming: HashSet<u64>,
}

impl<'r> Builder<'r> {
    pub(super) fn new(
        raws: &'r HashMap<u64, Result<Raw, String>>,
        bad: &'r HashMap<u64, String>,
    ) -> Self {
        Builder {
            raws,
            bad,
            ids: HashMap::new(),
            types: Vec::new(),
            made_pointers: HashMap::new(),
            names: HashMap::new(),
            naming: HashSet::new(),
        }
    }

    pub(super) fn raw(&self, at: u64) -> Result<&'r Raw, String> {
        if let Some(e) = self.bad.get(&at) {
            return Err(e.clone());
        }
        match self.raws.get(&at) {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("the type at {at:#x} was not read")),
        }
    }

    /// The type's Go name with import paths (`*net/http.Request`, `map[string][]int`), as
    /// DWARF gives it. Unnamed types never contain themselves except through a named type,
    /// so the recursion ends.
    pub(super) fn name(&mut self, at: u64) -> Result<String, String> {
        if let Some(n) = self.names.get(&at) {
            return Ok(n.clone());
        }
        let raw = self.raw(at)?;
        // Only a corrupted binary has an unnamed type made of itself, or nested past any
        // program's types: refused rather than recursed into without end.
        if !self.naming.insert(at) || self.naming.len() > MAX_NAME_DEPTH {
            self.naming.remove(&at);
            return Err(format!("the type at {at:#x} cannot be named"));
        }
        let name = self.name_of(raw);
        self.naming.remove(&at);
        let name = name?;
        self.names.insert(at, name.clone());
        Ok(name)
    }

    fn name_of(&mut self, raw: &Raw) -> Result<String, String> {
        let name = if raw.named {
            // `str` qualifies by package name (`http.Header`); the uncommon section has the
            // path. Built-in types (`int`, `error`) have neither.
            match raw.str.split_once('.') {
                Some((_, rest)) if !raw.pkg_path.is_empty() => {
                    format!("{}.{rest}", symbol_path(&raw.pkg_path))
                }
                _ => raw.str.clone(),
            }
        } else {
            match &raw.shape {
                Shape::Basic(_) => raw.str.clone(),
                Shape::Pointer(e) => format!("*{}", self.name(*e)?),
                Shape::Slice(e) => format!("[]{}", self.name(*e)?),
                Shape::Array(e, n) => format!("[{n}]{}", self.name(*e)?),
                Shape::Chan(e, dir) => {
                    let e = self.name(*e)?;
                    match dir {
                        1 => format!("<-chan {e}"),
                        2 => format!("chan<- {e}"),
                        _ if e.starts_with("<-chan") => format!("chan ({e})"),
                        _ => format!("chan {e}"),
                    }
                }
                Shape::Map(k, v, _) => format!("map[{}]{}", self.name(*k)?, self.name(*v)?),
                Shape::Func {
                    ins,
                    outs,
                    variadic,
                } => {
                    let mut params = Vec::new();
                    for (i, &t) in ins.iter().enumerate() {
                        let n = self.name(t)?;
                        params.push(match n.strip_prefix("[]") {
                            Some(e) if *variadic && i + 1 == ins.len() => format!("...{e}"),
                            _ => n,
                        });
                    }
                    let results = outs
                        .iter()
                        .map(|&t| self.name(t))
                        .collect::<Result<Vec<_>, _>>()?;
                    let results = match results.len() {
                        0 => String::new(),
                        1 => format!(" {}", results[0]),
                        _ => format!(" ({})", results.join(", ")),
                    };
                    format!("func({}){results}", params.join(", "))
                }
                Shape::Struct(_, fields) if fields.is_empty() => "struct {}".into(),
                Shape::Struct(pkg, fields) => {
                    let mut parts = Vec::new();
                    for f in fields {
                        let t = self.name(f.ty)?;
                        let mut part = if f.name.embedded {
                            t
                        } else {
                            format!("{} {t}", f.name.qualified(pkg))
                        };
                        if let Some(tag) = &f.name.tag {
                            part.push_str(&format!(" {}", go_quote(tag)?));
                        }
                        parts.push(part);
                    }
                    format!("struct {{ {} }}", parts.join("; "))
                }
                Shape::Interface(_, methods) if methods.is_empty() => "interface {}".into(),
                Shape::Interface(pkg, methods) => {
                    let mut parts = Vec::new();
                    for (name, t) in methods {
                        let sig = self.name(*t)?;
                        let sig = sig.strip_prefix("func").unwrap_or(&sig);
                        parts.push(format!("{}{sig}", name.qualified(pkg)));
                    }
                    format!("interface {{ {} }}", parts.join("; "))
                }
            }
        };
        Ok(name)
    }

    pub(super) fn display_name(&mut self, at: u64) -> String {
        self.name(at)
            .unwrap_or_else(|_| self.raw(at).map(|r| r.str.clone()).unwrap_or_default())
    }

    pub(super) fn table_name(&self, id: TypeId) -> String {
        self.types
            .get(id.0 as usize)
            .and_then(|t| t.as_ref())
            .map(|t| t.name.clone())
            .unwrap_or_default()
    }

    /// The id of the descriptor at `at`, translating it and what it is made of. Only types
    /// outside `bad` get here, and all their parts are outside it too, so no translation
    /// stops half-way (which would leave an id without a type).
    pub(super) fn id(&mut self, at: u64) -> Result<TypeId, String> {
        if let Some(&id) = self.ids.get(&at) {
            return Ok(id);
        }
        // Ids first, for `at` and every type it is made of, without recursion (a corrupted
        // binary can chain descriptors deeper than any stack); then each type, whose parts
        // all have ids by then.
        let mut stack = vec![at];
        let mut order = Vec::new();
        while let Some(a) = stack.pop() {
            if self.ids.contains_key(&a) {
                continue;
            }
            let raw = self.raw(a)?;
            self.ids.insert(a, TypeId(self.types.len() as u32));
            self.types.push(None);
            order.push(a);
            stack.extend(layout_parts(&raw.shape));
        }
        for a in order {
            let ty = self.translate(a)?;
            let id = self.ids[&a];
            self.types[id.0 as usize] = Some(ty);
        }
        Ok(self.ids[&at])
    }

    /// The [`GoType`] of a descriptor whose parts all have ids.
    fn translate(&mut self, at: u64) -> Result<GoType, String> {
        let raw = self.raw(at)?;
        let name = self.name(at)?;
        let id = |a: &u64| self.ids.get(a).copied().ok_or("a part without an id");
        let kind = match &raw.shape {
            Shape::Basic(k) => k.clone(),
            Shape::Pointer(e) => TypeKind::Pointer { elem: id(e)? },
            Shape::Slice(e) => TypeKind::Slice { elem: id(e)? },
            Shape::Array(e, len) => TypeKind::Array {
                elem: id(e)?,
                len: *len,
            },
            Shape::Chan(e, _) => TypeKind::Chan { elem: id(e)? },
            // The header's layout is not in the descriptor (DWARF gives it as `*hash<K,V>` or
            // `*map<K,V>`): reading the entries needs the runtime's layout for this release,
            // and with Swiss tables the group type, when it is readable (it is optional: a map
            // whose group cannot be read is still a map, its entries then not read).
            Shape::Map(k, v, group) => TypeKind::Map {
                key: id(k)?,
                value: id(v)?,
                header: None,
                group: match group.filter(|g| self.raw(*g).is_ok()) {
                    Some(g) => self.id(g).ok(),
                    None => None,
                },
            },
            Shape::Struct(_, fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for f in fields {
                    out.push(Field {
                        name: f.name.text.clone(),
                        ty: id(&f.ty)?,
                        offset: f.offset,
                        embedded: f.name.embedded,
                    });
                }
                TypeKind::Struct { fields: out }
            }
            Shape::Interface(_, methods) => TypeKind::Interface {
                empty: methods.is_empty(),
            },
            Shape::Func { .. } => TypeKind::Func,
        };
        Ok(GoType {
            name,
            size: raw.size,
            align: raw.align,
            kind,
        })
    }

    /// `*T` for the descriptor of `T`: its own pointer descriptor, or one made here (a pointer
    /// is one word whatever it points at).
    pub(super) fn pointer_to(&mut self, owner: u64, raw: &Raw) -> Result<TypeId, String> {
        if let Some(p) = raw.ptr_to_this {
            if self.raw(p).is_ok() {
                return self.id(p);
            }
        }
        if let Some(&id) = self.made_pointers.get(&owner) {
            return Ok(id);
        }
        let elem = self.id(owner)?;
        let name = format!("*{}", self.name(owner)?);
        let id = TypeId(self.types.len() as u32);
        self.types.push(Some(GoType {
            name,
            size: 8,
            align: 8,
            kind: TypeKind::Pointer { elem },
        }));
        self.made_pointers.insert(owner, id);
        Ok(id)
    }

    pub(super) fn finish(self) -> TypeTable {
        let mut table = TypeTable::default();
        for ty in self.types {
            table.push(ty.unwrap_or(GoType {
                name: String::new(),
                size: 0,
                align: 0,
                kind: TypeKind::Unknown,
            }));
        }
        table
    }
}

/// A struct tag as Go's type strings quote it (`strconv.Quote`), for the tags real programs
/// use: printable ASCII; anything else is not reproduced, and the type is then left out.
pub(super) fn go_quote(tag: &str) -> Result<String, String> {
    let mut out = String::from('"');
    for c in tag.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => return Err(format!("a struct tag with {c:?} ({tag:?})")),
        }
    }
    out.push('"');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{go_quote, symbol_path};

    #[test]
    fn import_paths_are_written_as_symbol_names_write_them() {
        assert_eq!(symbol_path("net/http"), "net/http");
        assert_eq!(
            symbol_path("crypto/internal/entropy/v1.0.0"),
            "crypto/internal/entropy/v1%2e0%2e0"
        );
        assert_eq!(symbol_path("gopkg.in/yaml.v3"), "gopkg.in/yaml%2ev3");
        assert_eq!(symbol_path("a b/c%d"), "a%20b/c%25d");
    }

    #[test]
    fn struct_tags_are_quoted_as_go_quotes_them() {
        assert_eq!(go_quote(r#"json:"a""#).unwrap(), r#""json:\"a\"""#);
        assert_eq!(go_quote(r"a\b").unwrap(), r#""a\\b""#);
        assert!(go_quote("tab\there").is_err());
    }
}
