//! The probe's bounds without root: ops per recipe, bytes per event, hops between dynamic
//! recipes, --depth, --elems and --string-max, and entry memory lost. Whatever a bound leaves
//! unread must be marked as not read, never shown as nil, empty or a wrong number.

mod common;

use common::go_memory::{iface, ptr, G};
use common::{fixtures, go_syntax};
use gotrace_decode::{Missing, Value};
use gotrace_plan::{CaptureStatus, Limits};

fn leaked(text: String) -> G {
    G::Str(Box::leak(text.into_boxed_str()))
}

/// Every string inside `v`, with whether it was read.
fn strings<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    match v {
        Value::String(_) => out.push(v),
        Value::Struct { fields, .. } => fields.iter().for_each(|(_, f)| strings(f, out)),
        Value::Pointer {
            target: Some(Ok(t)),
            ..
        } => strings(t, out),
        _ => {}
    }
}

/// FBudget's tree needs 73 reads, more than a recipe's 64 ops: breadth first, the strings
/// after it are read, and the deepest leaves' strings are marked.
#[test]
fn ops_used_up_leave_the_deepest_values_marked() {
    for f in fixtures(Limits::default()) {
        let planned = &f.plan.functions[f.function("main.FBudget") as usize];
        assert!(planned.entry_recipe.incomplete, "{}", f.version);
        let mut l = f.layout();
        let leaf = |i: usize| G::Struct((0..8).map(|j| leaked(format!("leaf{i}.s{j}"))).collect());
        let tree = ptr(G::Struct((0..8).map(|i| ptr(leaf(i))).collect()));
        let args = [
            G::Int(40),
            tree,
            G::Str("/src/file40.go"),
            G::Str("example.com/pkg/40"),
        ];
        let call = f.call(&mut l, "main.FBudget", &args, &[G::Int(32)]);
        assert_eq!(call.arg("filename"), &call.want_args[2], "{}", f.version);
        assert_eq!(call.arg("path"), &call.want_args[3]);
        let mut found = Vec::new();
        strings(call.arg("tree"), &mut found);
        assert_eq!(found.len(), 64, "every leaf read, then its strings");
        let unread = found
            .iter()
            .filter(|s| s.unavailable_part() == Some(Missing::Budget))
            .count();
        // 64 ops: the tree, two strings, eight leaves: 53 of the 64 strings.
        assert_eq!(unread, 64 - 53, "{}", f.version);
        // The ones read are the laid-out ones; the first unread one says so.
        let mut want = Vec::new();
        strings(&call.want_args[1], &mut want);
        for (got, want) in found.iter().zip(&want).take(53) {
            assert_eq!(got, want);
        }
        let text = go_syntax(call.arg("tree"));
        assert!(text.contains("S5:<not read: read budget used up"), "{text}");
        assert!(
            !text.contains("S7:\"\""),
            "an unread string is never shown empty: {text}"
        );
    }
}

/// --string-max 8192: six strings of 8000 bytes overflow an event's 32 KiB of captures. The
/// reads that find no room are recorded as such and their strings marked.
#[test]
fn bytes_used_up_mark_the_strings_that_found_no_room() {
    let limits = Limits {
        string_max: 8192,
        ..Limits::default()
    };
    for f in fixtures(limits) {
        let mut l = f.layout();
        let ss: Vec<G> = (0..6)
            .map(|i| leaked(format!("{i}").repeat(8000)))
            .collect();
        let args = [
            G::Int(41),
            G::Zero,
            G::Slice(ss, 6),
            G::Zero,
            G::Zero,
            G::Zero,
        ];
        let call = f.call(&mut l, "main.FSlices", &args, &[G::Int(6)]);
        let no_room = call
            .raw
            .entry_captures
            .iter()
            .filter(|c| c.status == CaptureStatus::NoRoom)
            .count();
        assert!(no_room >= 2, "{no_room} reads without room");
        let Value::Slice { elems: Ok(got), .. } = call.arg("ss") else {
            panic!("{:?}", call.arg("ss"))
        };
        let Value::Slice {
            elems: Ok(want), ..
        } = &call.want_args[2]
        else {
            panic!()
        };
        let read = 6 - no_room;
        assert_eq!(got[..read], want[..read], "{}", f.version);
        for s in &got[read..] {
            assert_eq!(s.unavailable_part(), Some(Missing::Budget), "{s:?}");
        }
        assert!(go_syntax(call.arg("ss"))
            .contains("<not read: read budget used up, string of 8000 bytes>"));
    }
}

/// An error wrapping an error wrapping …: each *PathError's recipe ends by running the next
/// one's, at most 8 hops after the first. With --depth 20 the decoder would follow them all;
/// the ones the probe never read are marked.
#[test]
fn dynamic_hops_past_the_limit_are_marked() {
    let limits = Limits {
        depth: 40,
        ..Limits::default()
    };
    for f in fixtures(limits) {
        let mut l = f.layout();
        let chain = (0..12).fold(iface("syscall.Errno", G::Uint(2)), |inner, i| {
            let path = leaked(format!("/level/{i}"));
            iface(
                "*io/fs.PathError",
                ptr(G::Struct(vec![G::Str("open"), path, inner])),
            )
        });
        let call = f.call(&mut l, "main.FOpen", &[G::Int(42), G::Str("/x")], &[chain]);
        // Walk the chain: every level read is the laid-out one, then a marker.
        let (mut got, mut want) = (call.result("err"), &call.want_results[0]);
        let mut levels = 0;
        loop {
            let (
                Value::Interface {
                    dynamic: Some((_, g)),
                },
                Value::Interface {
                    dynamic: Some((_, w)),
                },
            ) = (got, want)
            else {
                panic!("{got:?}")
            };
            let (Ok(g), Ok(w)) = (g, w) else {
                panic!("{g:?}")
            };
            let (
                Value::Pointer {
                    target: Some(g), ..
                },
                Value::Pointer {
                    target: Some(Ok(w)),
                    ..
                },
            ) = (&**g, &**w)
            else {
                panic!("{g:?}")
            };
            let g = match g {
                Ok(g) => g,
                Err(missing) => {
                    assert_eq!(*missing, Missing::Budget, "level {levels}");
                    break;
                }
            };
            let (Value::Struct { fields: gf, .. }, Value::Struct { fields: wf, .. }) = (&**g, &**w)
            else {
                panic!()
            };
            assert_eq!(gf[..2], wf[..2], "level {levels}");
            levels += 1;
            (got, want) = (&gf[2].1, &wf[2].1);
        }
        // The result's own recipe, then 8 hops.
        assert_eq!(levels, 9, "{}", f.version);
    }
}

/// --depth 1, --elems 2, --string-max 4: everything cut says so, and every value read is
/// the laid-out one.
#[test]
fn tight_limits_cut_and_mark() {
    let limits = Limits {
        string_max: 4,
        elems: 2,
        depth: 1,
    };
    for f in fixtures(limits) {
        let mut l = f.layout();
        let point = |x, y| G::Struct(vec![G::Int(x), G::Int(y)]);
        let args = [
            G::Int(43),
            ptr(point(1, 2)),
            G::Zero,
            ptr(ptr(point(3, 4))),
            ptr(G::Int(5)),
        ];
        let call = f.call(&mut l, "main.FPointers", &args, &[ptr(point(2, 5))]);
        call.assert_round_trip(&f.version);
        assert!(go_syntax(call.arg("pp")).contains("<not read: beyond --depth>"));
        let args = [
            G::Int(44),
            G::Slice(vec![G::Int(1), G::Int(2), G::Int(3)], 3),
            G::Slice(vec![G::Str("abcdef"), G::Str("xy")], 2),
            G::Zero,
            G::Slice(Vec::new(), 4),
            G::Zero,
        ];
        let call = f.call(&mut l, "main.FSlices", &args, &[G::Int(5)]);
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.arg("xs")), "[]int{1, 2, …+1} (len 3 cap 3)");
        assert!(go_syntax(call.arg("ss")).starts_with("[]string{\"abcd\"…(+2 bytes), \"xy\"}"));
        let m = G::Map(vec![
            (G::Str("a"), G::Int(1)),
            (G::Str("b"), G::Int(2)),
            (G::Str("c"), G::Int(3)),
        ]);
        let call = f.call(
            &mut l,
            "main.FMaps",
            &[G::Int(45), m, G::Zero, G::Zero, G::Zero],
            &[G::Int(3)],
        );
        call.assert_round_trip(&f.version);
        assert!(call.arg("m").is_truncated(), "{}", go_syntax(call.arg("m")));
        let v = iface("*main.Point", ptr(point(6, 7)));
        let call = f.call(&mut l, "main.FAny", &[G::Int(46), v.clone()], &[v]);
        call.assert_round_trip(&f.version);
    }
}

/// The entry's memory record lost (ring buffer full) while its call arrived: the arguments
/// that needed memory say so; registers are still shown.
#[test]
fn lost_entry_memory_is_marked() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let args = [
            G::Int(47),
            G::Str(""),
            G::Str("ascii"),
            G::Str("utf8"),
            G::Str("long"),
        ];
        let call = f.call(&mut l, "main.FStrings", &args, &[G::Int(13)]);
        let mut raw = call.raw.clone();
        raw.entry_captures.clear();
        raw.entry_data_lost = true;
        let lost = f.decode(&raw, call.want_args.clone(), call.want_results.clone());
        assert_eq!(lost.arg("id"), &Value::Int(47));
        assert_eq!(
            lost.arg("ascii"),
            &Value::Unavailable(Missing::Lost),
            "{}",
            f.version
        );
        assert_eq!(lost.result("n"), &Value::Int(13));
    }
}

/// An interface whose dynamic type DWARF names but the probe has no recipe for (not
/// registered in the BPF program's type table): its value was not read, and says so.
#[test]
fn a_dynamic_type_without_a_recipe_is_marked_not_read() {
    for mut f in fixtures(Limits::default()) {
        let (point, _) = f.layout().runtime["main.Point"];
        let before = f.plan.type_recipes.len();
        f.plan.type_recipes.retain(|(addr, _)| *addr != point);
        assert_eq!(f.plan.type_recipes.len(), before - 1, "{}", f.version);
        let mut l = f.layout();
        let v = iface("main.Point", G::Struct(vec![G::Int(1), G::Int(2)]));
        let call = f.call(&mut l, "main.FAny", &[G::Int(48), v.clone()], &[v]);
        for value in [call.arg("v"), call.result("out")] {
            let Value::Interface {
                dynamic: Some((name, Err(missing))),
            } = value
            else {
                panic!("{value:?}")
            };
            assert_eq!((name.as_str(), *missing), ("main.Point", Missing::Budget));
        }
        assert!(go_syntax(call.arg("v")).contains("not read"));
    }
}

/// A position-independent process: interfaces hold runtime type addresses, which the BPF
/// program and the decoder turn back into the link-time ones by the process's load bias.
#[test]
fn dynamic_types_are_found_through_the_load_bias() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        l.load_bias = 0x5555_0000_0000;
        let err = iface("*main.PErr", ptr(G::Struct(vec![G::Str("op"), G::Int(2)])));
        let call = f.call(&mut l, "main.FErr", &[G::Int(49), err.clone()], &[err]);
        call.assert_round_trip(&f.version);
        let v = iface("main.Point", G::Struct(vec![G::Int(3), G::Int(4)]));
        let call = f.call(&mut l, "main.FAny", &[G::Int(50), v.clone()], &[v]);
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.arg("v")), "main.Point{X:3, Y:4}");
    }
}
