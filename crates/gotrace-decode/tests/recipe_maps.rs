//! Maps without root: classic hmaps and buckets (Go 1.21) and Swiss tables (the newest
//! toolchain) laid out in memory, read by the real recipes run by the model of the BPF
//! program, decoded. Nil, empty, small, large, nested, boxed in an interface, behind a
//! pointer, and maps whose entries all sit where the probe does not read.

mod common;

use common::go_memory::{iface, ptr, G};
use common::{fixtures, go_syntax};
use gotrace_decode::{Missing, Value};
use gotrace_plan::Limits;

fn s(text: &str) -> G {
    G::Str(Box::leak(text.to_owned().into_boxed_str()))
}

fn int_map(n: i64, key: impl Fn(i64) -> i64) -> G {
    G::Map((0..n).map(|i| (G::Int(key(i)), G::Int(-i))).collect())
}

/// A map's length and the number of entries shown.
fn shown(v: &Value) -> (u64, usize, Option<Missing>) {
    match v {
        Value::Map {
            len: Ok(len),
            entries,
            entries_missing,
            ..
        } => (*len, entries.len(), *entries_missing),
        other => panic!("not a read map: {other:?}"),
    }
}

#[test]
fn small_empty_and_nil_maps() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let m = G::Map(vec![
            (s("a"), G::Int(1)),
            (s("bb"), G::Int(-2)),
            (s(""), G::Int(3)),
        ]);
        let mi = G::Map(vec![(G::Int(7), s("seven")), (G::Int(-1), s(""))]);
        let args = [G::Int(30), m, mi, G::Map(Vec::new()), G::Zero];
        let call = f.call(&mut l, "main.FMaps", &args, &[G::Int(5)]);
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.arg("none")), "nil", "{}", f.version);
        assert_eq!(go_syntax(call.arg("empty")), "map[string]int{}");
        assert_eq!(shown(call.arg("m")), (3, 3, None));
        assert!(!call.arg("m").is_truncated() && !call.arg("m").has_unread_part());
        let text = go_syntax(call.arg("mi"));
        assert!(
            text.contains("7:\"seven\"") && text.contains("-1:\"\""),
            "{text}"
        );
    }
}

#[test]
fn larger_maps_show_their_first_entries_and_say_they_are_cut() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let one = G::Map(vec![(s("k31"), G::Int(31))]);
        let many = int_map(100, |i| i * 7 + 31);
        let big = int_map(2000, |i| i + 31);
        let call = f.call(
            &mut l,
            "main.FMapSizes",
            &[G::Int(31), one, many, big],
            &[G::Int(2101)],
        );
        call.assert_round_trip(&f.version);
        let (len, n, missing) = shown(call.arg("many"));
        assert_eq!((len, missing), (100, None), "{}", f.version);
        // Go 1.21 reads the first slots of two buckets; Swiss tables --elems full slots.
        assert!((10..=16).contains(&n), "{n}");
        assert!(call.arg("many").is_truncated() && call.arg("big").is_truncated());
        let text = go_syntax(call.arg("big"));
        assert!(
            text.ends_with(&format!(", …+{}}}", 2000 - shown(call.arg("big")).1)),
            "{text}"
        );
        // Strings as values: gathered (Swiss) or read from the buckets (classic), followed.
        let a = G::Map(
            (0..200)
                .map(|i| (G::Int(i * 7919 - 32), s(&format!("a{i}"))))
                .collect(),
        );
        let b = G::Map(
            (0..200)
                .map(|i| (s(&format!("k{i}")), s(&format!("b{i}"))))
                .collect(),
        );
        let call = f.call(
            &mut l,
            "main.FMapStress",
            &[G::Int(32), a, b],
            &[G::Int(400)],
        );
        call.assert_round_trip(&f.version);
        assert!(
            !call.arg("b").has_unread_part(),
            "{}",
            go_syntax(call.arg("b"))
        );
    }
}

#[test]
fn entries_where_the_probe_does_not_read_are_marked_not_read() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        // Every entry past the buckets (classic) or groups (Swiss) a probe reads.
        l.empty_first = 64;
        let call = f.call(
            &mut l,
            "main.FMapSparse",
            &[G::Int(33), int_map(12, |i| i * 31)],
            &[G::Int(12)],
        );
        call.assert_round_trip(&f.version);
        assert_eq!(
            shown(call.arg("c")),
            (12, 0, Some(Missing::Budget)),
            "{}",
            f.version
        );
        assert!(call.arg("c").has_unread_part() && !call.arg("c").is_truncated());
        let text = go_syntax(call.arg("c"));
        assert!(text.contains("not read: read budget used up"), "{text}");
        // Some entries read, the rest not: Swiss maps say why, classic ones are cut.
        l.empty_first = if f.plan.layout.classic_maps() { 1 } else { 57 };
        let call = f.call(
            &mut l,
            "main.FMapSparse",
            &[G::Int(34), int_map(20, |i| i * 31)],
            &[G::Int(20)],
        );
        call.assert_round_trip(&f.version);
        let (len, n, missing) = shown(call.arg("c"));
        assert!(len == 20 && n > 0 && n < 16, "{n} of {len}");
        assert_eq!(
            missing,
            (!f.plan.layout.classic_maps()).then_some(Missing::Budget),
            "{}",
            f.version
        );
    }
}

#[test]
fn maps_nested_boxed_and_behind_pointers() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let nested = G::Map(vec![
            (
                s("a"),
                G::Map(vec![(G::Int(1), G::Int(35)), (G::Int(2), G::Int(-35))]),
            ),
            (s("b35"), G::Map(vec![(G::Int(3), G::Int(3))])),
            (s("empty"), G::Map(Vec::new())),
            (s("nil"), G::Zero),
        ]);
        let call = f.call(
            &mut l,
            "main.FMapNested",
            &[G::Int(35), nested],
            &[G::Int(4)],
        );
        call.assert_round_trip(&f.version);
        let text = go_syntax(call.arg("nested"));
        assert!(
            text.contains("\"a\":map[int]int{") && text.contains("\"nil\":nil"),
            "{text}"
        );
        let holder = |name: &str, n: i64| {
            G::Struct(vec![s(name), G::Map(vec![(s("in"), G::Int(n))]), G::Int(n)])
        };
        let v = iface(
            "map[string]int",
            G::Map(vec![(s("x"), G::Int(36)), (s("y"), G::Int(2))]),
        );
        let args = [G::Int(36), v, holder("h36", 36), ptr(holder("ph", -36))];
        let call = f.call(&mut l, "main.FMapBoxed", &args, &[G::Int(3)]);
        call.assert_round_trip(&f.version);
        assert_eq!(
            go_syntax(call.arg("h")),
            "main.MapHolder{Name:\"h36\", M:map[string]int{\"in\":36}, N:36}",
            "{}",
            f.version
        );
        let text = go_syntax(call.arg("v"));
        assert!(
            text.starts_with("map[string]int{") && text.contains("\"x\":36"),
            "{text}"
        );
    }
}

/// With --depth 1 a map behind an interface or a pointer is past the depth: marked, and its
/// length not guessed.
#[test]
fn maps_beyond_the_depth_are_marked() {
    let limits = Limits {
        depth: 1,
        ..Limits::default()
    };
    for f in fixtures(limits) {
        let mut l = f.layout();
        let holder = G::Struct(vec![s("ph"), G::Map(vec![(s("p"), G::Int(1))]), G::Int(1)]);
        let v = iface("map[string]int", G::Map(vec![(s("x"), G::Int(37))]));
        let h = G::Struct(vec![
            s("h"),
            G::Map(vec![(s("in"), G::Int(37))]),
            G::Int(37),
        ]);
        let call = f.call(
            &mut l,
            "main.FMapBoxed",
            &[G::Int(37), v, h, ptr(holder)],
            &[G::Int(2)],
        );
        call.assert_round_trip(&f.version);
        let Value::Interface {
            dynamic: Some((_, Ok(boxed))),
        } = call.arg("v")
        else {
            panic!("{:?}", call.arg("v"))
        };
        assert!(
            matches!(
                **boxed,
                Value::Map {
                    len: Err(Missing::Depth),
                    ..
                }
            ),
            "{boxed:?}"
        );
        let Value::Struct { fields, .. } = call.arg("h") else {
            panic!("{:?}", call.arg("h"))
        };
        assert_eq!(
            shown(&fields[1].1),
            (1, 1, None),
            "a map in an argument is read"
        );
    }
}
