//! The pure middle of gotrace without root: the real planner's recipes for the values fixture
//! (built by Go 1.21, classic maps, and the newest toolchain, Swiss tables) run by a model of
//! the BPF interpreter over Go values laid out in memory, then decoded. Every value must come
//! back as laid out, and whatever the probe could not read must say so.

mod common;

use common::go_memory::{iface, ptr, G, UNMAPPED};

use common::{fixtures, go_syntax};
use gotrace_decode::{Missing, Value};
use gotrace_plan::Limits;

fn point(x: i64, y: i64) -> G {
    G::Struct(vec![G::Int(x), G::Int(y)])
}

fn strs(items: &[&'static str]) -> Vec<G> {
    items.iter().map(|s| G::Str(s)).collect()
}

#[test]
fn integers_of_every_width_and_bools() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let args = [
            G::Int(7),
            G::Int(-128),
            G::Int(i64::from(i16::MIN)),
            G::Int(i64::from(i32::MAX)),
            G::Int(i64::MIN),
            G::Uint(255),
            G::Uint(65535),
            G::Uint(u64::from(u32::MAX)),
            G::Uint(u64::MAX),
            G::Int(-7000),
            G::Uint(49),
            G::Uint(0xdead_0007),
            G::Bool(true),
        ];
        let results = [G::Int(-1), G::Int(-300), G::Uint(1 << 63), G::Bool(false)];
        let call = f.call(&mut l, "main.FInts", &args, &results);
        call.assert_round_trip(&f.version);
        // Ten integers fill the nine registers: the rest came from the stack.
        assert_eq!(call.arg("k"), &Value::Uint(0xdead_0007), "{}", f.version);
        assert_eq!(call.arg("a"), &Value::Int(-128));
        let args = [
            G::Int(1),
            G::Int(i64::MIN),
            G::Int(i64::MAX),
            G::Uint(u64::MAX),
            G::Int(-2),
        ];
        let results = [G::Int(i64::MIN), G::Uint(u64::MAX)];
        let call = f.call(&mut l, "main.FInt64s", &args, &results);
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.result("max")), "18446744073709551615");
        // A method: the receiver is the first value.
        let call = f.call(
            &mut l,
            "main.Point.FScale",
            &[point(2, -3), G::Int(9), G::Int(3)],
            &[point(6, -9)],
        );
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.arg("p")), "main.Point{X:2, Y:-3}");
    }
}

#[test]
fn floats_in_registers_are_marked_and_in_memory_are_read() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let call = f.call(
            &mut l,
            "main.FFloats",
            &[G::Int(1), G::Float(2.5), G::Float(1.5)],
            &[G::Float(4.0)],
        );
        call.assert_round_trip(&f.version);
        assert_eq!(call.arg("f"), &Value::Unavailable(Missing::FloatRegister));
        assert_eq!(
            call.result("r"),
            &Value::Unavailable(Missing::FloatRegister)
        );
        // Sixteen floats go on the stack: all read.
        let v: Vec<G> = (0..16)
            .map(|i| G::Float(f64::from(i) * 0.25 - 1.0))
            .collect();
        let call = f.call(
            &mut l,
            "main.FVec16",
            &[G::Int(2), G::Struct(v)],
            &[G::Float(2.75)],
        );
        call.assert_round_trip(&f.version);
        let Value::Struct { fields, .. } = call.arg("v") else {
            panic!("{:?}", call.arg("v"))
        };
        assert_eq!(fields[15].1, Value::Float(2.75));
        let a = G::Array(vec![G::Float(0.75), G::Float(-1.125)]);
        let call = f.call(
            &mut l,
            "main.FFloatArray",
            &[G::Int(3), a.clone(), G::Complex(0.5, -4.0)],
            &[a],
        );
        call.assert_round_trip(&f.version);
        assert_eq!(call.arg("c"), &Value::Unavailable(Missing::FloatRegister));
        // Integers beside floats in registers are still shown.
        let m = G::Struct(vec![
            G::Int(-4),
            G::Float(6.5),
            G::Float(0.25),
            G::Str("mixed-4"),
        ]);
        let call = f.call(&mut l, "main.FMixed", &[G::Int(4), m.clone()], &[m]);
        call.assert_round_trip(&f.version);
        assert_eq!(
            go_syntax(call.arg("m")),
            "main.Mixed{N:-4, F:?, G:?, S:\"mixed-4\"}"
        );
        // Behind a pointer, in a slice's array, boxed in an interface: memory, read.
        for boxed in [
            iface("float64", G::Float(2.5)),
            iface("complex64", G::Complex(3.0, 0.25)),
            iface("main.FPair", G::Struct(vec![G::Float(-3.5), G::Float(1.0)])),
        ] {
            let args = [
                G::Int(5),
                ptr(G::Struct(vec![G::Float(1.25), G::Float(-0.5)])),
                G::Slice(vec![G::Float(0.5), G::Float(-1.75), G::Float(3.0)], 3),
                boxed,
            ];
            let call = f.call(&mut l, "main.FFloatMem", &args, &[G::Float(0.0)]);
            call.assert_round_trip(&f.version);
        }
        let call = f.call(
            &mut l,
            "main.FFloatMem",
            &[
                G::Int(6),
                G::Zero,
                G::Zero,
                iface("complex64", G::Complex(3.0, 0.25)),
            ],
            &[G::Float(0.0)],
        );
        let Value::Interface {
            dynamic: Some((name, Ok(v))),
        } = call.arg("v")
        else {
            panic!("{:?}", call.arg("v"))
        };
        assert_eq!(
            (name.as_str(), &**v),
            ("complex64", &Value::Complex(3.0, 0.25))
        );
        assert_eq!(go_syntax(call.arg("p")), "nil");
    }
}

#[test]
fn strings_and_byte_slices_cut_at_the_limit_say_so() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let long: &'static str = Box::leak("<00042>".repeat(43)[..300].to_owned().into_boxed_str());
        let args = [
            G::Int(7),
            G::Str(""),
            G::Str("hello, gopher #7"),
            G::Str("héllo, 世界 🌍 7"),
            G::Str(long),
        ];
        let call = f.call(&mut l, "main.FStrings", &args, &[G::Int(330)]);
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.arg("empty")), "\"\"");
        assert_eq!(go_syntax(call.arg("utf8")), "\"héllo, 世界 🌍 7\"");
        let Value::String(cut) = call.arg("long") else {
            panic!()
        };
        assert_eq!((cut.bytes.len(), cut.missing, cut.error), (256, 44, None));
        assert!(call.arg("long").is_truncated() && !call.arg("long").has_unread_part());
        assert!(
            go_syntax(call.arg("long")).ends_with("\"…(+44 bytes)"),
            "{}",
            go_syntax(call.arg("long"))
        );
        let b = G::Slice(
            vec![G::Uint(0x68), G::Uint(0x69), G::Uint(0), G::Uint(0xff)],
            8,
        );
        let r = G::Slice(
            vec![
                G::Uint(0x68),
                G::Uint(0x69),
                G::Uint(0),
                G::Uint(0xff),
                G::Uint(0x21),
            ],
            8,
        );
        let call = f.call(&mut l, "main.FBytes", &[G::Int(8), b], &[r]);
        call.assert_round_trip(&f.version);
        assert_eq!(
            go_syntax(call.arg("b")),
            "[]byte{0x68, 0x69, 0x00, 0xff} (len 4 cap 8)"
        );
        // A string whose bytes cannot be read is marked, never shown empty.
        let call = f.call(
            &mut l,
            "main.FBig",
            &[G::Int(9), G::StrAt(UNMAPPED, 1 << 20)],
            &[G::Int(1 << 20)],
        );
        call.assert_round_trip(&f.version);
        assert!(call.arg("s").has_unread_part());
        assert_eq!(
            go_syntax(call.arg("s")),
            "<not read: unreadable memory, string of 1048576 bytes>",
            "{}",
            f.version
        );
    }
}

#[test]
fn slices_and_arrays() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let big: Vec<G> = (0..40).map(|i| G::Int(i * i - 10)).collect();
        let args = [
            G::Int(10),
            G::Slice(vec![G::Int(10), G::Int(-10), G::Int(0)], 5),
            G::Slice(strs(&["a", "", "ü10", "gopher"]), 4),
            G::Zero,
            G::Slice(Vec::new(), 0),
            G::Slice(big, 40),
        ];
        let call = f.call(&mut l, "main.FSlices", &args, &[G::Int(51)]);
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.arg("none")), "nil");
        assert_eq!(go_syntax(call.arg("empty")), "[]int{} (len 0 cap 0)");
        assert_eq!(
            go_syntax(call.arg("ss")),
            "[]string{\"a\", \"\", \"ü10\", \"gopher\"} (len 4 cap 4)"
        );
        let Value::Slice {
            elems: Ok(shown),
            len: 40,
            ..
        } = call.arg("big")
        else {
            panic!()
        };
        assert_eq!(shown.len(), 16, "--elems of 40");
        assert!(call.arg("big").is_truncated());
        assert!(go_syntax(call.arg("big")).ends_with(", …+24} (len 40 cap 40)"));
        let args = [
            G::Int(11),
            G::Array(vec![G::Int(11), G::Int(-11), G::Int(7)]),
            G::Array(strs(&["left11", ""])),
            G::Array(vec![G::Uint(0), G::Uint(1), G::Uint(254), G::Uint(11)]),
            G::Array(vec![G::Int(-53)]),
        ];
        let call = f.call(
            &mut l,
            "main.FArrays",
            &args,
            &[G::Array(vec![G::Int(7), G::Int(-11), G::Int(-42)])],
        );
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.arg("b")), "[2]string{\"left11\", \"\"}");
    }
}

#[test]
fn structs_nested_packed_unexported_and_embedded() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let packed = G::Struct(vec![G::Int(-7), G::Int(-32768), G::Bool(true), G::Uint(99)]);
        let call = f.call(
            &mut l,
            "main.FPacked",
            &[G::Int(12), packed.clone()],
            std::slice::from_ref(&packed),
        );
        call.assert_round_trip(&f.version);
        let outer = G::Struct(vec![
            point(1, 13),
            G::Str("outer-13"),
            packed,
            G::Slice(vec![point(3, 4), point(13, -13)], 2),
        ]);
        let call = f.call(
            &mut l,
            "main.FOuter",
            &[G::Int(13), outer],
            &[G::Str("outer-13")],
        );
        call.assert_round_trip(&f.version);
        assert_eq!(
            go_syntax(call.arg("o")),
            "main.Outer{P:main.Point{X:1, Y:13}, Tag:\"outer-13\", Small:main.Packed{A:-7, B:-32768, C:true, D:0x63}, inner:[]main.Point{main.Point{X:3, Y:4}, main.Point{X:13, Y:-13}} (len 2 cap 2)}"
                .replace("D:0x63", "D:99"),
        );
        let secret = |at: G, tags: G| {
            G::Struct(vec![
                G::Str("agent-14"),
                G::Int(44),
                tags,
                at,
                G::Bool(true),
            ])
        };
        let full = secret(ptr(point(-1, 14)), G::Slice(strs(&["x", "yz"]), 2));
        let call = f.call(&mut l, "main.FSecret", &[G::Int(14), full.clone()], &[full]);
        call.assert_round_trip(&f.version);
        let empty = secret(G::Zero, G::Zero);
        let call = f.call(
            &mut l,
            "main.FSecret",
            &[G::Int(15), empty.clone()],
            &[empty],
        );
        call.assert_round_trip(&f.version);
        let embedded = G::Struct(vec![
            point(5, 6),
            ptr(G::Struct(vec![G::Str("label")])),
            G::Int(16),
        ]);
        let call = f.call(
            &mut l,
            "main.FEmbedded",
            &[G::Int(16), embedded],
            &[G::Int(21)],
        );
        call.assert_round_trip(&f.version);
    }
}

#[test]
fn pointers_nil_chained_deep_and_unreadable() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let args = [
            G::Int(17),
            ptr(point(1, 2)),
            G::Zero,
            ptr(ptr(point(3, 4))),
            ptr(G::Int(-17)),
        ];
        let call = f.call(&mut l, "main.FPointers", &args, &[ptr(point(2, -17))]);
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.arg("nilp")), "nil");
        assert_eq!(go_syntax(call.arg("pp")), "&&main.Point{X:3, Y:4}");
        // A list longer than --depth (3) ends in a marker, not a nil.
        let list = (1..=5)
            .rev()
            .fold(G::Zero, |next, v| ptr(G::Struct(vec![G::Int(v), next])));
        let call = f.call(&mut l, "main.FList", &[G::Int(18), list], &[G::Int(5)]);
        call.assert_round_trip(&f.version);
        let text = go_syntax(call.arg("l"));
        assert!(
            text.contains("Value:3, Next:(*main.Node)(0x")
                && text.contains("<not read: beyond --depth>"),
            "{text}"
        );
        assert!(call.arg("l").has_unread_part());
        let args = [
            G::Int(19),
            G::BadPtr(0x10),
            G::BadPtr(UNMAPPED),
            ptr(point(7, 8)),
        ];
        let call = f.call(&mut l, "main.FBadPtr", &args, &[G::Bool(true)]);
        call.assert_round_trip(&f.version);
        assert_eq!(
            call.arg("low").unavailable_part(),
            Some(Missing::Unreadable)
        );
        assert_eq!(
            go_syntax(call.arg("freed")),
            "(*main.Point)(0xdead0000) <not read: unreadable memory>"
        );
    }
}

#[test]
fn interfaces_empty_and_not_nil_and_unknown_types() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        for (v, text) in [
            (iface("int", G::Int(-20)), "int(-20)"),
            (
                iface("string", G::Str("any string")),
                "string(\"any string\")",
            ),
            (iface("main.Point", point(20, 21)), "main.Point{X:20, Y:21}"),
            (
                iface("*main.Point", ptr(point(22, 23))),
                "*main.Point{X:22, Y:23}",
            ),
            (iface("main.Temp", G::Int(21)), "main.Temp(21)"),
            (
                iface("[]int", G::Slice(vec![G::Int(1), G::Int(2)], 2)),
                "[]int{1, 2} (len 2 cap 2)",
            ),
            (G::Zero, "nil"),
        ] {
            let call = f.call(&mut l, "main.FAny", &[G::Int(20), v.clone()], &[v]);
            call.assert_round_trip(&f.version);
            assert_eq!(go_syntax(call.arg("v")), text, "{}", f.version);
        }
        // A dynamic type DWARF does not describe: named by its address, marked.
        let call = f.call(
            &mut l,
            "main.FAny",
            &[G::Int(21), G::IfaceAt(0x4f00)],
            &[G::Zero],
        );
        call.assert_round_trip(&f.version);
        assert_eq!(call.arg("v").unavailable_part(), Some(Missing::UnknownType));
        // A non-empty interface finds its dynamic type through its itab.
        let s = iface("main.Point", point(1, 2));
        let call = f.call(
            &mut l,
            "main.FStringer",
            &[G::Int(22), s],
            &[G::Str("stringer")],
        );
        call.assert_round_trip(&f.version);
        let s = iface("main.Temp", G::Int(30));
        let call = f.call(
            &mut l,
            "main.FStringer",
            &[G::Int(23), s],
            &[G::Str("stringer")],
        );
        assert_eq!(go_syntax(call.arg("s")), "main.Temp(30)");
    }
}

#[test]
fn errors_as_arguments_and_results() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let boom = iface("*errors.errorString", ptr(G::Struct(vec![G::Str("boom")])));
        let call = f.call(&mut l, "main.FErr", &[G::Int(24), boom.clone()], &[boom]);
        call.assert_round_trip(&f.version);
        assert_eq!(
            go_syntax(call.result("~r0")),
            "*errors.errorString{s:\"boom\"}"
        );
        let my = iface("main.MyErr", G::Struct(vec![G::Int(7), G::Str("mine")]));
        let p = iface("*main.PErr", ptr(G::Struct(vec![G::Str("op"), G::Int(2)])));
        let call = f.call(&mut l, "main.FErr", &[G::Int(25), my], &[p]);
        call.assert_round_trip(&f.version);
        // Results: (q int, err error), nil and not.
        let call = f.call(
            &mut l,
            "main.FDiv",
            &[G::Int(26), G::Int(7), G::Int(2)],
            &[G::Int(3), G::Zero],
        );
        call.assert_round_trip(&f.version);
        assert_eq!(go_syntax(call.result("err")), "nil");
        let zero = iface(
            "*errors.errorString",
            ptr(G::Struct(vec![G::Str("division by zero")])),
        );
        let call = f.call(
            &mut l,
            "main.FDiv",
            &[G::Int(27), G::Int(7), G::Int(0)],
            &[G::Int(0), zero],
        );
        call.assert_round_trip(&f.version);
        // An error holding an error: *fs.PathError{Op, Path, Err: syscall.Errno}, two hops.
        let path = "/nonexistent/gotrace-values/28";
        let errno = iface("syscall.Errno", G::Uint(2));
        let err = iface(
            "*io/fs.PathError",
            ptr(G::Struct(vec![G::Str("open"), G::Str(path), errno])),
        );
        let call = f.call(&mut l, "main.FOpen", &[G::Int(28), G::Str(path)], &[err]);
        call.assert_round_trip(&f.version);
        assert_eq!(
            go_syntax(call.result("err")),
            format!("*io/fs.PathError{{Op:\"open\", Path:\"{path}\", Err:syscall.Errno(0x2)}}")
                .replace("(0x2)", "(2)")
        );
    }
}

#[test]
fn chans_funcs_and_unsafe_pointers_are_addresses() {
    for f in fixtures(Limits::default()) {
        let mut l = f.layout();
        let args = [
            G::Int(29),
            G::Addr(0xc0_000a_0000),
            G::Addr(0x004b_2c40),
            G::Zero,
            G::Zero,
            G::Addr(0xc0_000b_0008),
            G::Zero,
        ];
        let call = f.call(&mut l, "main.FChans", &args, &[G::Addr(0xc0_000a_0000)]);
        call.assert_round_trip(&f.version);
        assert_eq!(call.arg("nilch"), &Value::Address(0));
        assert_eq!(call.arg("f"), &Value::Address(0x004b_2c40));
    }
}
