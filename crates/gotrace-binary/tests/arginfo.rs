//! Argument words without debug information (`GoBinary::untyped_args`): the shape from Go's
//! traceback metadata, each word's place at entry from the stack-growth path's spills. Every
//! place claimed must be the one DWARF and the register ABI give for the same bytes of the same
//! parameter, on every toolchain; what is not proven is counted by reason.

mod common;

use common::{all_toolchains, build, sig_kinds, values};
use gotrace_binary::abi::{assign, AbiReg, Location};
use gotrace_binary::arginfo::{ArgItem, Unknown};
use gotrace_binary::pclntab::FuncTraits;
use gotrace_binary::GoBinary;
use gotrace_gobuild::Flavour;
use std::collections::{BTreeMap, HashMap};

/// What DWARF and the ABI say lives at each offset of a function's argument frame.
struct Truth {
    /// Register parts by their spill slot's offset: (register, bytes).
    registers: HashMap<u64, (AbiReg, u64)>,
    /// Byte ranges of the stack-assigned parameters.
    stack: Vec<(u64, u64)>,
}

fn align_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align.max(1)) * align.max(1)
}

/// The frame the compiler lays out (`cmd/compile/internal/abi`): stack arguments and results,
/// then the spill area, where each register parameter has a slot aligned to its type.
/// `None` when DWARF's signature does not account for pclntab's frame size (Go < 1.22 leaves
/// blank parameters and wrapper receivers out), so it cannot be trusted.
fn truth(bin: &GoBinary, f: &gotrace_binary::Function) -> Option<Truth> {
    let dwarf = bin.dwarf().ok()??;
    let sig = dwarf.signature(f.entry)?;
    let types = dwarf.types();
    // Assembly declares no parameters in DWARF: nothing to compare with.
    if is_assembly(bin, f) {
        return None;
    }
    let a = assign(bin.arch(), sig, types);
    if Some(a.arg_width) != bin.arg_size(f) {
        return None;
    }
    let spill_total = sig
        .params
        .iter()
        .zip(&a.params)
        .filter(|(_, l)| matches!(l, Location::Registers(_)))
        .fold(0, |s, (p, _)| {
            let t = types.get(p.ty);
            align_up(s, t.align) + t.size
        });
    let spill_start = a.arg_width - align_up(spill_total, 8);
    let mut spill = 0;
    let mut out = Truth {
        registers: HashMap::new(),
        stack: Vec::new(),
    };
    for (p, location) in sig.params.iter().zip(&a.params) {
        let t = types.get(p.ty);
        match location {
            Location::Registers(pieces) => {
                spill = align_up(spill, t.align);
                for piece in pieces {
                    out.registers.insert(
                        spill_start + spill + piece.value_offset,
                        (piece.reg, piece.size),
                    );
                }
                spill += t.size;
            }
            Location::Stack { sp_offset } => {
                out.stack.push((sp_offset - 8, sp_offset - 8 + t.size))
            }
            Location::Empty => {}
        }
    }
    Some(out)
}

fn is_assembly(bin: &GoBinary, f: &gotrace_binary::Function) -> bool {
    bin.traits(f).is_some_and(|t| t.has(FuncTraits::ASM))
}

#[derive(Default, Debug)]
struct Counts {
    functions: usize,
    words: usize,
    in_registers: usize,
    on_stack: usize,
    /// Proven words of functions whose DWARF signature could be checked against pclntab.
    compared: usize,
    /// Words (proven or not) of those functions, each found in DWARF's frame.
    shaped: usize,
    /// Stack words of assembly functions (ABI0): placed by the ABI, which DWARF cannot confirm.
    assembly: usize,
    unknown: BTreeMap<&'static str, usize>,
    disagreements: Vec<String>,
}

fn reason(u: &Unknown) -> &'static str {
    match u {
        Unknown::NoStackCheck => "no stack check",
        Unknown::NothingSpilled => "nothing spilled",
        Unknown::NotSpilled => "not spilled",
        Unknown::SpillWidth { .. } => "spill width",
        Unknown::Unrecognized(_) => "unrecognized block",
        Unknown::Architecture => "architecture",
    }
}

/// Derives every function's words and compares each claimed place with DWARF's.
fn check(bin: &GoBinary) -> Counts {
    let mut c = Counts::default();
    for f in bin.functions() {
        let args = match bin.untyped_args(f) {
            Ok(Some(args)) => args,
            Ok(None) => continue,
            Err(e) => panic!("{}: {e}", f.name),
        };
        c.functions += 1;
        let truth = truth(bin, f);
        for w in args.words() {
            c.words += 1;
            // Whatever is claimed: the word must be a part DWARF's frame has, where ArgInfo puts it.
            if let Some(t) = &truth {
                c.shaped += 1;
                let register = t.registers.get(&w.offset).map(|&(_, size)| size) == Some(w.size);
                let stack = t
                    .stack
                    .iter()
                    .any(|&(lo, hi)| lo <= w.offset && w.offset + w.size <= hi);
                if !register && !stack {
                    c.disagreements.push(format!(
                        "{}: DWARF's frame has no part at {} of {} bytes",
                        f.name, w.offset, w.size
                    ));
                }
            }
            let claim = match &w.location {
                Ok(l) => l,
                Err(u) => {
                    if let Unknown::Unrecognized(why) = u {
                        eprintln!("  {}: {why}", f.name);
                    }
                    *c.unknown.entry(reason(u)).or_default() += 1;
                    continue;
                }
            };
            match claim {
                Location::Registers(_) => c.in_registers += 1,
                _ => c.on_stack += 1,
            }
            if is_assembly(bin, f) {
                c.assembly += 1;
            }
            let Some(t) = &truth else { continue };
            c.compared += 1;
            let agrees = match claim {
                Location::Registers(pieces) => {
                    pieces.len() == 1
                        && pieces[0].value_offset == 0
                        && t.registers.get(&w.offset) == Some(&(pieces[0].reg, w.size))
                }
                Location::Stack { sp_offset } => {
                    *sp_offset == 8 + w.offset
                        && t.stack
                            .iter()
                            .any(|&(lo, hi)| lo <= w.offset && w.offset + w.size <= hi)
                }
                Location::Empty => false,
            };
            if !agrees {
                c.disagreements.push(format!(
                    "{}: word at {} ({} bytes) claimed {claim:?}; DWARF: registers {:?}, stack {:?}",
                    f.name, w.offset, w.size, t.registers, t.stack
                ));
            }
        }
    }
    c
}

/// Checks a binary's counts: something compared, a sizable part proven, nothing wrong.
fn assert_counts(label: &str, c: &Counts, min_words: usize) {
    let proven = c.in_registers + c.on_stack;
    eprintln!(
        "{label}: {} functions, {} words: {proven} proven ({} in registers, {} on the stack; {} compared with DWARF, {} of assembly; {} words laid on DWARF's frame), unknown {:?}, {} disagreements",
        c.functions, c.words, c.in_registers, c.on_stack, c.compared, c.assembly, c.shaped, c.unknown, c.disagreements.len()
    );
    assert!(
        c.disagreements.is_empty(),
        "{label}: {:#?}",
        c.disagreements
    );
    assert!(c.words >= min_words, "{label}: only {} words", c.words);
    assert!(
        c.compared * 2 >= proven && c.compared > 0,
        "{label}: only {} of {proven} proven words compared",
        c.compared
    );
    assert!(
        proven * 2 >= c.words,
        "{label}: only {proven} of {} words proven",
        c.words
    );
}

#[test]
fn every_claimed_place_equals_dwarfs_on_every_toolchain() {
    for toolchain in all_toolchains() {
        for (name, path) in [
            ("values", values(&toolchain, Flavour::Plain)),
            ("sig_kinds", sig_kinds(&toolchain, None)),
        ] {
            let bin = GoBinary::open(&path).unwrap();
            let c = check(&bin);
            assert_counts(&format!("Go {} {name}", toolchain.version), &c, 2000);
        }
    }
}

/// One function checked word by word, stripped: `main.MixedIntFloat(i int, f float64,
/// s string, g float32)` takes RAX, X0, {RBX, RCX}, X1 — which ArgInfo alone cannot say.
#[test]
fn floats_are_told_from_integers() {
    for toolchain in all_toolchains() {
        let path = build(
            "fixtures/go/sig_kinds",
            "-l",
            &toolchain,
            Flavour::Stripped,
            None,
        );
        let bin = GoBinary::open(&path).unwrap();
        assert!(bin.dwarf().unwrap().is_none(), "stripped build has DWARF");
        let f = bin.function("main.MixedIntFloat").unwrap();
        let args = bin.untyped_args(f).unwrap().expect("ArgInfo");
        let got: Vec<_> = args
            .items
            .iter()
            .map(|i| match i {
                ArgItem::Word(w) => match &w.location {
                    Ok(Location::Registers(p)) => format!("{}:{:?}/{}", w.offset, p[0].reg, w.size),
                    other => format!("{}: {other:?}", w.offset),
                },
                ArgItem::Open => "{".into(),
                ArgItem::Close => "}".into(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                "0:Int(0)/8",
                "8:Float(0)/8",
                "{",
                "16:Int(1)/8",
                "24:Int(2)/8",
                "}",
                "32:Float(1)/4"
            ],
            "Go {}",
            toolchain.version
        );
    }
}

/// Without DWARF or a symbol table the same words, places and reasons come out as from the
/// unstripped build of the same program.
#[test]
fn stripped_build_gives_what_the_unstripped_one_does() {
    for toolchain in all_toolchains() {
        let plain = GoBinary::open(&values(&toolchain, Flavour::Plain)).unwrap();
        let stripped = GoBinary::open(&values(&toolchain, Flavour::Stripped)).unwrap();
        assert!(stripped.dwarf().unwrap().is_none());
        let (mut same, mut proven) = (0, 0);
        for f in stripped.functions() {
            let Some(args) = stripped.untyped_args(f).unwrap() else {
                continue;
            };
            // Stripping drops sections after the code: every function stays where it was.
            let twin = plain
                .function_at(f.entry)
                .filter(|t| t.entry == f.entry)
                .unwrap_or_else(|| {
                    panic!("Go {}: no {} at {}", toolchain.version, f.name, f.entry)
                });
            let expected = plain.untyped_args(twin).unwrap();
            assert_eq!(
                Some(&args),
                expected.as_ref(),
                "Go {}: {}",
                toolchain.version,
                f.name
            );
            same += 1;
            proven += args.words().filter(|w| w.location.is_ok()).count();
        }
        eprintln!(
            "Go {}: {same} functions' words identical stripped and unstripped ({proven} words placed)",
            toolchain.version
        );
        assert!(
            same > 1000 && proven > 2000,
            "Go {}: {same} functions, {proven} words",
            toolchain.version
        );
        // Aggregates keep their brackets: FStrings(id int, empty, ascii, utf8, long string).
        let f = stripped.function("main.FStrings").unwrap();
        let args = stripped.untyped_args(f).unwrap().expect("ArgInfo");
        let opens = args
            .items
            .iter()
            .filter(|i| matches!(i, ArgItem::Open))
            .count();
        assert_eq!(
            (opens, args.words().count()),
            (4, 9),
            "Go {}",
            toolchain.version
        );
    }
}

/// The go command (Go 1.27's own tree, ~16,000 functions): the same check at scale.
#[test]
fn go_command_claims_only_what_dwarf_says() {
    let toolchain = all_toolchains().pop().expect("a toolchain");
    let path = gotrace_gobuild::testing::go_command(&toolchain);
    let bin = GoBinary::open(&path).unwrap();
    let c = check(&bin);
    assert_counts(
        &format!("go command (Go {})", toolchain.version),
        &c,
        30_000,
    );
}

/// A stripped binary whose read-only data (where the ArgInfo streams are), function table and
/// code have random bytes overwritten: every function's words come out or an error does,
/// never a panic.
#[test]
fn corrupted_binaries_never_panic() {
    use object::{Object, ObjectSection};
    let toolchain = all_toolchains().pop().expect("a toolchain");
    let path = values(&toolchain, Flavour::Stripped);
    let data = std::fs::read(&path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let ranges: Vec<(usize, usize)> = [".rodata", ".gopclntab", ".text"]
        .iter()
        .map(|name| {
            let s = file.section_by_name(name).expect(name);
            let (off, size) = s.file_range().expect("section has file bytes");
            (off as usize, size as usize)
        })
        .collect();
    let mut rng = common::Rng::new(common::env_u64("GOTRACE_FUZZ_SEED", 1));
    let (mut words, mut errors) = (0, 0);
    for iteration in 0..24 {
        let mut image = data.clone();
        // One section at a time: the function table breaks the whole binary soonest.
        let (off, size) = ranges[iteration % ranges.len()];
        let changes = if iteration % ranges.len() == 1 {
            4
        } else {
            size / 200
        };
        for _ in 0..changes {
            image[off + rng.below(size)] = rng.next() as u8;
        }
        let outcome = std::panic::catch_unwind(|| {
            let Ok(bin) = GoBinary::from_bytes(&path, image) else {
                return (0, 1);
            };
            let (mut words, mut errors) = (0, 0);
            for f in bin.functions() {
                match bin.untyped_args(f) {
                    Ok(Some(args)) => words += args.words().count(),
                    Ok(None) => {}
                    Err(_) => errors += 1,
                }
            }
            (words, errors)
        });
        let (w, e) = outcome.unwrap_or_else(|_| panic!("iteration {iteration} panicked"));
        words += w;
        errors += e;
    }
    eprintln!("corrupted binaries: {words} words read, {errors} errors");
    assert!(words > 0 && errors > 0, "{words} words, {errors} errors");
}
