//! One broken DIE costs what depends on it, not the binary's DWARF: in real binaries built by the
//! oldest and the newest toolchain (DWARF 4 and 5, decompressed so single DIEs can be edited),
//! - a parameter of one function whose type reference points outside `.debug_info`: only that
//!   function loses its signature, with the reason;
//! - a member of one struct type whose type reference does: only the functions holding that
//!   struct by value lose theirs (where its parts travel is unknown);
//! - an abbreviation code no DIE has, in the middle of the main package's unit: that unit's
//!   functions from there on are lost and say so; every other function keeps its signature.
//!
//! Every other signature is compared, by names, type names and sizes, with the undamaged
//! binary's.

mod common;

use common::{decompressed, dwarf_4_and_5};
use gimli::{constants as dw, AttributeValue, EndianSlice, LittleEndian};
use gotrace_binary::GoBinary;
use object::{Object, ObjectSection};
use std::collections::BTreeMap;
use std::path::Path;

/// Each function's signature as text (`q main.Quad 32`), or why there is none.
fn signatures(image: Vec<u8>) -> BTreeMap<String, Result<Vec<String>, String>> {
    let bin = GoBinary::from_bytes(Path::new("damaged"), image).unwrap();
    let dwarf = bin.dwarf().unwrap().expect("DWARF");
    let types = dwarf.types();
    bin.functions()
        .iter()
        .map(|f| {
            let sig = match dwarf.signature(f.entry) {
                Some(sig) => Ok(sig
                    .params
                    .iter()
                    .chain(&sig.results)
                    .map(|v| {
                        let ty = types.get(v.ty);
                        format!("{} {} {}", v.name, ty.name, ty.size)
                    })
                    .collect()),
                None => Err(dwarf.signature_error(f.entry).unwrap_or_default()),
            };
            (f.name.clone(), sig)
        })
        .collect()
}

/// A DIE of the decompressed image: where it is in the file and its unit.
struct Found {
    /// File offset of the DIE's first byte (its abbreviation code).
    file_offset: usize,
    /// File offset of the next DIE: the DIE's bytes end there.
    end: usize,
    unit: usize,
    /// Its DW_AT_type reference, as written (a 4-byte offset).
    type_ref: Option<u32>,
}

/// Every top-level DIE with a name, by (tag, name); each function's first parameter as
/// (DW_TAG_formal_parameter, "<function>.first") and each struct's first member as
/// (DW_TAG_member, "<struct>.first").
/// Also an abbreviation code (one LEB128 byte) no DIE of the first unit uses.
fn dies(image: &[u8]) -> (BTreeMap<(gimli::DwTag, String), Found>, u8) {
    let file = object::File::parse(image).unwrap();
    let info = file.section_by_name(".debug_info").unwrap();
    let (info_at, _) = info.file_range().unwrap();
    let load = |id: gimli::SectionId| -> Result<_, gimli::Error> {
        let data = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok(EndianSlice::new(data, LittleEndian))
    };
    let dwarf = gimli::Dwarf::load(load).unwrap();
    let mut out = BTreeMap::new();
    let mut free_code = None;
    let mut units = dwarf.units();
    while let Some(header) = units.next().unwrap() {
        let unit_at = header.offset().0;
        let unit = dwarf.unit(header).unwrap();
        free_code = free_code.or_else(|| {
            (1..0x80u8)
                .rev()
                .find(|&c| unit.abbreviations.get(u64::from(c)).is_none())
        });
        let mut cursor = unit.entries();
        let mut last: Option<((gimli::DwTag, String), usize, Option<u32>)> = None;
        let mut parent: Option<String> = None;
        while let Some(die) = cursor.next_dfs().unwrap() {
            let at = unit_at + die.offset().0;
            if let Some((key, start, type_ref)) = last.take() {
                out.entry(key).or_insert(Found {
                    file_offset: start,
                    end: info_at as usize + at,
                    unit: unit_at,
                    type_ref,
                });
            }
            let type_ref = match die.attr_value(dw::DW_AT_type) {
                Some(AttributeValue::UnitRef(o)) => Some(o.0 as u32),
                Some(AttributeValue::DebugInfoRef(o)) => Some(o.0 as u32),
                _ => None,
            };
            let name = die.attr_value(dw::DW_AT_name).map(|v| {
                let s = dwarf.attr_string(&unit, v).unwrap();
                s.to_string_lossy().into_owned()
            });
            let key = match (die.tag(), die.depth()) {
                (_, 1) => {
                    parent = name.clone();
                    name.map(|n| (die.tag(), n))
                }
                (dw::DW_TAG_formal_parameter | dw::DW_TAG_member, 2) => {
                    parent.take().map(|p| (die.tag(), format!("{p}.first")))
                }
                _ => None,
            };
            last = key.map(|k| (k, info_at as usize + at, type_ref));
        }
    }
    (out, free_code.expect("a free abbreviation code"))
}

/// Points the 4-byte type reference inside `die` past the end of `.debug_info`.
fn break_type_ref(image: &mut [u8], die: &Found) {
    let want = die.type_ref.expect("a DIE with a type").to_le_bytes();
    let bytes = &image[die.file_offset..die.end];
    let at = bytes
        .windows(4)
        .position(|w| w == want)
        .expect("the reference's bytes in the DIE");
    image[die.file_offset + at..die.file_offset + at + 4]
        .copy_from_slice(&0xffff_ff00u32.to_le_bytes());
}

/// Functions whose signature differs from `before`'s; each must be lost (with a reason).
fn lost(
    before: &BTreeMap<String, Result<Vec<String>, String>>,
    after: &BTreeMap<String, Result<Vec<String>, String>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut compared = 0;
    for (name, sig) in before {
        let Ok(sig) = sig else { continue };
        compared += 1;
        match &after[name] {
            Ok(now) => assert_eq!(now, sig, "{name}: changed by damage elsewhere"),
            Err(why) => {
                assert!(!why.is_empty(), "{name}: lost without a reason");
                out.insert(name.clone(), why.clone());
            }
        }
    }
    assert!(compared > 1000, "only {compared} signatures compared");
    out
}

#[test]
fn one_broken_die_costs_only_what_depends_on_it() {
    for path in dwarf_4_and_5() {
        let what = path.display().to_string();
        let plain = decompressed(&path);
        let before = signatures(plain.clone());
        let (found, free_code) = dies(&plain);

        // A parameter of one function.
        let mut image = plain.clone();
        let param = &found[&(dw::DW_TAG_formal_parameter, "main.Structs.first".to_owned())];
        break_type_ref(&mut image, param);
        let gone = lost(&before, &signatures(image));
        assert_eq!(
            gone.keys().collect::<Vec<_>>(),
            ["main.Structs"],
            "{what}: {gone:?}"
        );

        // A member of one struct type: main.Quad, held by value only by BigThenSmall.
        let mut image = plain.clone();
        let member = &found[&(dw::DW_TAG_member, "main.Quad.first".to_owned())];
        break_type_ref(&mut image, member);
        let gone = lost(&before, &signatures(image));
        assert!(gone.contains_key("main.BigThenSmall"), "{what}: {gone:?}");
        assert!(
            gone["main.BigThenSmall"].contains("the type of q"),
            "{what}: {gone:?}"
        );
        for name in gone.keys() {
            let sig = before[name].as_ref().unwrap();
            assert!(
                sig.iter().any(|v| v.contains("main.Quad")),
                "{what}: {name} {sig:?} lost, though it holds no main.Quad"
            );
        }

        // An unknown abbreviation code in the middle of the main package's unit.
        let mut image = plain.clone();
        let unused = &found[&(dw::DW_TAG_subprogram, "main.Unused".to_owned())];
        image[unused.file_offset] = free_code;
        let gone = lost(&before, &signatures(image));
        let expected: Vec<&String> = found
            .iter()
            .filter(|((tag, _), d)| {
                *tag == dw::DW_TAG_subprogram
                    && d.unit == unused.unit
                    && d.file_offset >= unused.file_offset
            })
            .map(|((_, name), _)| name)
            .filter(|name| before.get(*name).is_some_and(|s| s.is_ok()))
            .collect();
        assert!(expected.len() >= 3, "{what}: {expected:?}");
        assert_eq!(
            gone.keys().collect::<Vec<_>>(),
            expected,
            "{what}: {gone:?}"
        );
        assert!(
            gone.values().all(|why| why.contains("damaged")),
            "{what}: {gone:?}"
        );
    }
}
