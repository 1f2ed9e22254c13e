//! Methods' signatures from the runtime type descriptors of stripped binaries
//! (`GoBinary::runtime_methods`), checked against the DWARF of the unstripped build of the same
//! program, for every installed toolchain: `fixtures/go/methods` (types used through interfaces,
//! in every stripped flavour) and `fixtures/go/values`; and over the go command against its own
//! DWARF. Every signature given must equal DWARF's, structurally (kinds, sizes, names, field
//! names and offsets, element types); the counts are asserted and printed.

mod common;

use common::{all_toolchains, build};
use gotrace_binary::rtype::RuntimeMethods;
use gotrace_binary::types::{TypeId, TypeKind, TypeTable};
use gotrace_binary::{GoBinary, VirtAddr};
use gotrace_gobuild::{Flavour, Toolchain};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// What comparing one binary's runtime signatures with DWARF found.
#[derive(Debug, Default)]
struct Counts {
    /// Signatures the runtime types give.
    given: usize,
    /// Of those, equal to DWARF's.
    equal: usize,
    /// Functions DWARF has no signature for (nothing to compare with).
    no_dwarf: usize,
    /// Functions whose DWARF lists no results where the func type has some (the compiler
    /// leaves out an unnamed result it never stores to a variable, e.g. when every return is
    /// in a switch): their parameters are compared, and equal.
    dwarf_without_results: Vec<String>,
    /// Functions whose DWARF lists the parameters but not the receiver (the compiler's method
    /// wrappers before Go 1.22): the rest is compared, and equal.
    dwarf_without_receiver: Vec<String>,
    mismatches: Vec<String>,
    not_covered: usize,
}

/// DWARF's name for a type declared inside a function ends in `·N`, which the runtime's
/// type string does not have: compared without it.
fn local_type_name(name: &str) -> &str {
    match name.rsplit_once('·') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// Whether type `a` of `ta` and type `b` of `tb` are the same Go type: name, size and kind,
/// and recursively what they are made of. A map's header is not compared: the runtime
/// descriptor does not give it (DWARF does). Nor is alignment: gotrace computes DWARF's from
/// the fields, which misses `sync/atomic.align64`'s 8; the runtime states the true one.
fn same_type(ta: &TypeTable, a: TypeId, tb: &TypeTable, b: TypeId) -> Result<(), String> {
    let mut seen = HashSet::new();
    same_rec(ta, a, tb, b, &mut seen)
}

fn same_rec(
    ta: &TypeTable,
    a: TypeId,
    tb: &TypeTable,
    b: TypeId,
    seen: &mut HashSet<(TypeId, TypeId)>,
) -> Result<(), String> {
    if !seen.insert((a, b)) {
        return Ok(());
    }
    let (x, y) = (ta.get(a), tb.get(b));
    let at = || format!("{} vs {}", x.name, y.name);
    if x.name != local_type_name(&y.name) || x.size != y.size {
        return Err(format!(
            "{} ({}) vs {} ({})",
            x.name, x.size, y.name, y.size
        ));
    }
    let mut pair = |p: TypeId, q: TypeId| same_rec(ta, p, tb, q, seen);
    match (&x.kind, &y.kind) {
        (TypeKind::Pointer { elem: p }, TypeKind::Pointer { elem: q })
        | (TypeKind::Slice { elem: p }, TypeKind::Slice { elem: q })
        | (TypeKind::Chan { elem: p }, TypeKind::Chan { elem: q }) => pair(*p, *q),
        (TypeKind::Array { elem: p, len: m }, TypeKind::Array { elem: q, len: n }) => {
            if m != n {
                return Err(format!("{}: len {m} vs {n}", at()));
            }
            pair(*p, *q)
        }
        (
            TypeKind::Map {
                key: k1, value: v1, ..
            },
            TypeKind::Map {
                key: k2, value: v2, ..
            },
        ) => {
            pair(*k1, *k2)?;
            pair(*v1, *v2)
        }
        (TypeKind::Struct { fields: f }, TypeKind::Struct { fields: g }) => {
            if f.len() != g.len() {
                return Err(format!("{}: {} fields vs {}", at(), f.len(), g.len()));
            }
            for (p, q) in f.iter().zip(g) {
                if (&p.name, p.offset, p.embedded) != (&q.name, q.offset, q.embedded) {
                    return Err(format!("{}: field {p:?} vs {q:?}", at()));
                }
                pair(p.ty, q.ty)?;
            }
            Ok(())
        }
        (TypeKind::Interface { empty: e }, TypeKind::Interface { empty: f }) if e == f => Ok(()),
        (TypeKind::Int { signed: s }, TypeKind::Int { signed: t }) if s == t => Ok(()),
        (TypeKind::Bool, TypeKind::Bool)
        | (TypeKind::Float, TypeKind::Float)
        | (TypeKind::Complex, TypeKind::Complex)
        | (TypeKind::String, TypeKind::String)
        | (TypeKind::UnsafePointer, TypeKind::UnsafePointer)
        | (TypeKind::Func, TypeKind::Func) => Ok(()),
        (k, l) => Err(format!("{}: {k:?} vs {l:?}", at())),
    }
}

/// Compares every runtime signature of `stripped` with the DWARF signature of the function of
/// the same name in `with_dwarf` (which may be the same binary).
fn compare(stripped: &GoBinary, with_dwarf: &GoBinary) -> Counts {
    let rm: &RuntimeMethods = stripped
        .runtime_methods()
        .unwrap_or_else(|e| panic!("{}: {e}", stripped.path().display()));
    let dwarf = with_dwarf
        .dwarf()
        .expect("DWARF readable")
        .expect("the unstripped build has DWARF");
    let mut entries: HashMap<&str, Vec<VirtAddr>> = HashMap::new();
    for f in with_dwarf.table_functions() {
        entries.entry(f.name.as_str()).or_default().push(f.entry);
    }
    let mut counts = Counts {
        given: rm.signatures.len(),
        not_covered: rm.not_covered.len(),
        ..Default::default()
    };
    for sig in rm.signatures.values() {
        let candidates = entries
            .get(sig.function.as_str())
            .unwrap_or_else(|| panic!("{} is not in the unstripped build", sig.function));
        // Go 1.19's table names every instance of a generic method alike (`(*Gen[...]).Get`):
        // the one meant is the one whose DWARF receiver has the runtime receiver's name.
        let receiver = &rm.types.get(sig.receiver).name;
        let d = match candidates[..] {
            [one] => dwarf.signature(one),
            _ => candidates
                .iter()
                .filter_map(|&e| dwarf.signature(e))
                .find(|d| {
                    d.params
                        .first()
                        .is_some_and(|p| &dwarf.types().get(p.ty).name == receiver)
                }),
        };
        let Some(d) = d else {
            counts.no_dwarf += 1;
            continue;
        };
        let compare_list = |what: &str, r: &[gotrace_binary::types::Variable], w: &[_]| {
            let w: &[gotrace_binary::types::Variable] = w;
            if r.len() != w.len() {
                return Err(format!("{} {what} vs {}", r.len(), w.len()));
            }
            for (i, (p, q)) in r.iter().zip(w).enumerate() {
                same_type(&rm.types, p.ty, dwarf.types(), q.ty)
                    .map_err(|e| format!("{what} {i} ({}): {e}", q.name))?;
            }
            Ok(())
        };
        let params = &sig.signature.params;
        let no_receiver = d.params.len() + 1 == params.len();
        let outcome = match no_receiver {
            true => compare_list("params", &params[1..], &d.params),
            false => compare_list("params", params, &d.params),
        };
        let dropped = d.results.is_empty() && !sig.signature.results.is_empty();
        let outcome = outcome.and_then(|()| match dropped {
            true => Ok(()),
            false => compare_list("results", &sig.signature.results, &d.results),
        });
        let name = sig.function.clone();
        match outcome {
            Ok(()) if no_receiver => counts.dwarf_without_receiver.push(name),
            Ok(()) if dropped => counts.dwarf_without_results.push(name),
            Ok(()) => counts.equal += 1,
            Err(e) => counts.mismatches.push(format!("{name}: {e}")),
        }
    }
    if std::env::var_os("GOTRACE_RTYPE_VERBOSE").is_some() {
        for n in &rm.not_covered {
            eprintln!("  not covered: {n:?}");
        }
    }
    counts
}

fn open(path: &Path) -> GoBinary {
    GoBinary::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The methods the fixture uses through interfaces, by the name `.gopclntab` gives their
/// code; Go 1.19's table shortens the generic type's name to `Gen[...]`.
fn fixture_methods(toolchain: &Toolchain) -> Vec<String> {
    let generic = if toolchain.version == "1.19" {
        "Gen[...]"
    } else {
        "Gen[int]"
    };
    let mut names: Vec<String> = [
        "main.Celsius.String",
        "main.(*Counter).Add",
        "main.(*Counter).Merge",
        "main.(*Counter).Lookup",
        "main.Rect.Area",
        "main.Rect.Scale",
        "main.Rect.Describe",
        "main.Rect.Corners",
        "main.(*Rect).Corners",
        "main.Handler.Serve",
        "main.Bag.Put",
        "main.Pipe.Send",
        "main.ByLen.Less",
        "main.(*Node).Walk",
        "main.Ring.Sum",
        "main.Outer.Add",
        "main.(*Outer).Add",
        "main.Outer.Lookup",
        "bufio.(*Writer).Write",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push(format!("main.(*{generic}).Get"));
    names.push(format!("main.(*{generic}).Set"));
    names
}

impl Counts {
    /// Fails the test on any mismatch or on too few signatures equal to DWARF's; else the
    /// counts in one line.
    fn check(&self, what: &str, at_least: usize) -> String {
        assert!(
            self.mismatches.is_empty(),
            "{what}: {} of {} signatures differ from DWARF:\n{}",
            self.mismatches.len(),
            self.given,
            self.mismatches.join("\n")
        );
        assert!(self.equal >= at_least, "{what}: {self:?}");
        format!(
            "{what}: {} signatures, {} equal to DWARF, {} whose receiver DWARF leaves out, {} whose results DWARF leaves out {:?}, {} without DWARF; {} table entries not covered",
            self.given,
            self.equal,
            self.dwarf_without_receiver.len(),
            self.dwarf_without_results.len(),
            self.dwarf_without_results,
            self.no_dwarf,
            self.not_covered
        )
    }
}

/// DWARF leaves wrappers' receivers out before Go 1.22 only.
fn assert_receivers_listed(counts: &Counts, toolchain: &Toolchain, what: &str) {
    let minor: u32 = toolchain
        .version
        .trim_start_matches("1.")
        .parse()
        .unwrap_or(0);
    assert!(
        minor < 22 || counts.dwarf_without_receiver.is_empty(),
        "{what}: DWARF without the receiver of {:?}",
        counts.dwarf_without_receiver
    );
}

/// Asserts that `binary` has a runtime signature for each of `names`.
fn assert_given(binary: &GoBinary, names: &[String], what: &str) {
    let rm = binary.runtime_methods().unwrap();
    let given: HashSet<&str> = rm
        .signatures
        .values()
        .map(|s| s.function.as_str())
        .collect();
    for name in names {
        assert!(
            given.contains(name.as_str()),
            "{what}: no runtime signature for {name}"
        );
    }
}

#[test]
fn stripped_methods_fixture_matches_dwarf_on_every_toolchain() {
    let mut report = Vec::new();
    for toolchain in all_toolchains() {
        let fixture = "fixtures/go/methods";
        let plain = open(&build(fixture, "", &toolchain, Flavour::Plain, None));
        for flavour in [
            Flavour::Stripped,
            Flavour::PieStripped,
            Flavour::CgoPieStripped,
        ] {
            let what = format!("methods Go {} {}", toolchain.version, flavour.name());
            let stripped = open(&build(fixture, "", &toolchain, flavour, None));
            assert!(stripped.dwarf().unwrap().is_none(), "{what} has DWARF");
            let counts = compare(&stripped, &plain);
            assert_given(&stripped, &fixture_methods(&toolchain), &what);
            assert_receivers_listed(&counts, &toolchain, &what);
            report.push(counts.check(&what, 100));
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn stripped_values_fixture_matches_dwarf_on_every_toolchain() {
    let mut report = Vec::new();
    let names: Vec<String> = [
        "main.Point.String",
        "main.Temp.String",
        "main.MyErr.Error",
        "main.(*PErr).Error",
    ]
    .map(String::from)
    .to_vec();
    for toolchain in all_toolchains() {
        let fixture = "fixtures/go/values";
        let what = format!("values Go {}", toolchain.version);
        let plain = open(&build(fixture, "-l", &toolchain, Flavour::Plain, None));
        let stripped = open(&build(fixture, "-l", &toolchain, Flavour::Stripped, None));
        let counts = compare(&stripped, &plain);
        assert_given(&stripped, &names, &what);
        assert_receivers_listed(&counts, &toolchain, &what);
        report.push(counts.check(&what, 100));
    }
    eprintln!("{}", report.join("\n"));
}

/// The go command (~15,000 functions) of the newest toolchain, against its own DWARF (the
/// descriptors are the same with or without it).
#[test]
fn go_command_runtime_signatures_match_its_dwarf() {
    let toolchain = all_toolchains().pop().expect("a toolchain");
    let dir = gotrace_gobuild::testing::fixtures_dir();
    let path = gotrace_gobuild::go_command(&toolchain, &dir).expect("go build cmd/go");
    let binary = open(&path);
    let started = std::time::Instant::now();
    let rm = binary.runtime_methods().expect("runtime methods");
    eprintln!(
        "go command: {} descriptors read, {} signatures, in {:?}",
        rm.descriptors,
        rm.signatures.len(),
        started.elapsed()
    );
    let counts = compare(&binary, &binary);
    let what = format!("go command Go {}", toolchain.version);
    eprintln!("{}", counts.check(&what, 5000));
}

/// Corrupted type data (random bytes where the descriptors, names, link tables and module data
/// are: `.rodata`, `.typelink` and `.itablink`, or Go 1.27's `.go.type` and `.go.module`) gives
/// signatures or an error, never a panic or a hang; on the oldest and the newest toolchain.
#[test]
fn corrupted_type_data_never_panics() {
    let all = all_toolchains();
    for toolchain in [&all[0], &all[all.len() - 1]] {
        fuzz_type_data(toolchain);
    }
}

fn fuzz_type_data(toolchain: &Toolchain) {
    use object::{Object, ObjectSection};
    let path = build(
        "fixtures/go/methods",
        "",
        toolchain,
        Flavour::Stripped,
        None,
    );
    let original = std::fs::read(&path).unwrap();
    let ranges: Vec<(usize, usize)> = {
        let file = object::File::parse(&*original).unwrap();
        let names = [
            ".rodata",
            ".typelink",
            ".itablink",
            ".go.type",
            ".go.module",
            ".noptrdata",
        ];
        names
            .iter()
            .filter_map(|name| file.section_by_name(name)?.file_range())
            .map(|(start, len)| (start as usize, len as usize))
            .filter(|&(_, len)| len > 0)
            .collect()
    };
    assert!(!ranges.is_empty(), "no type data sections found");
    let expected = open(&path).runtime_methods().unwrap().signatures.len();
    let rounds = common::env_u64("GOTRACE_RTYPE_FUZZ_ROUNDS", 150);
    let mut rng = common::Rng::new(common::env_u64("GOTRACE_FUZZ_SEED", 12));
    let (mut same, mut different, mut refused) = (0, 0, 0);
    for _ in 0..rounds {
        let mut data = original.clone();
        for _ in 0..1 + rng.below(16) {
            let (start, len) = ranges[rng.below(ranges.len())];
            data[start + rng.below(len)] = rng.next() as u8;
        }
        let Ok(binary) = GoBinary::from_bytes(Path::new("mutated"), data) else {
            continue;
        };
        match binary.runtime_methods() {
            Ok(m) if m.signatures.len() == expected => same += 1,
            Ok(_) => different += 1,
            Err(_) => refused += 1,
        }
    }
    eprintln!(
        "Go {}: {rounds} mutated binaries: {same} with all {expected} signatures, {different} with another number, {refused} refused",
        toolchain.version
    );
    assert!(different + refused > 0, "no mutation reached the type data");
}
