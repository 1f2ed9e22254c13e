//! Fuzzing on stable: real `.gopclntab` and `.go.buildinfo` sections, and whole ELF files, are
//! mutated (bit flips, overwritten words, truncations, swapped magics, random bytes) and fed to
//! the parsers, which must return `Ok` or `Err` and never panic.
//!
//! Each of the three tests runs for `GOTRACE_FUZZ_SECONDS` (default 2: about 5 seconds in all
//! on two cores; raise it for a longer hunt). Inputs derive from
//! `GOTRACE_FUZZ_SEED` (default fixed) and the iteration number, so a failure names what
//! reproduces it; the crashing input is also written under the target directory.

mod common;

use common::{all_toolchains, env_u64, pcln_kinds, Rng};
use gotrace_binary::pclntab::Pclntab;
use gotrace_binary::{buildinfo, Arch, GoBinary};
use gotrace_gobuild::{workspace_target_dir, Flavour};
use object::{Object, ObjectSection};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn budget() -> Duration {
    Duration::from_secs(env_u64("GOTRACE_FUZZ_SECONDS", 2))
}

fn seed() -> u64 {
    env_u64("GOTRACE_FUZZ_SEED", 0x607A_CE00)
}

const MAGICS: [u32; 4] = [0xFFFF_FFFB, 0xFFFF_FFFA, 0xFFFF_FFF0, 0xFFFF_FFF1];
const INTERESTING: [u64; 8] = [0, 1, 0x7f, 0x80, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

/// One random mutation of `data`. `header` is how many leading bytes decide the layout: they
/// are hit more often than their size alone would make them.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, header: usize) {
    let pick_offset = |rng: &mut Rng, len: usize| {
        if len == 0 {
            0
        } else if rng.below(2) == 0 {
            rng.below(header.min(len))
        } else {
            rng.below(len)
        }
    };
    match rng.below(8) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                if !data.is_empty() {
                    let at = pick_offset(rng, data.len());
                    data[at] ^= 1 << rng.below(8);
                }
            }
        }
        1 | 2 => {
            // A u32 or u64 word (offsets, counts, lengths) set to an edge value or noise.
            let width = if rng.below(2) == 0 { 4 } else { 8 };
            let value = if rng.below(2) == 0 {
                INTERESTING[rng.below(INTERESTING.len())]
            } else {
                rng.next() >> rng.below(64)
            };
            let at = pick_offset(rng, data.len());
            let bytes = value.to_le_bytes();
            for (i, b) in bytes[..width].iter().enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        3 => {
            let keep = rng.below(data.len() + 1);
            data.truncate(keep);
        }
        4 => {
            // Another table version's magic on this layout: reaches the other decoders.
            let magic = MAGICS[rng.below(MAGICS.len())].to_le_bytes();
            for (slot, b) in data.iter_mut().zip(magic) {
                *slot = b;
            }
        }
        5 => {
            let at = pick_offset(rng, data.len());
            let len = rng.below(64).min(data.len() - at);
            data.drain(at..at + len);
        }
        6 => {
            let at = pick_offset(rng, data.len());
            let noise: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            data.splice(at..at, noise);
        }
        _ => {
            // Random bytes after an intact first few bytes (so the magic check passes).
            let from = rng.below(16).min(data.len());
            let len = rng.below(4096);
            data.truncate(from);
            data.extend((0..len).map(|_| rng.next() as u8));
        }
    }
}

/// `pcln_kinds` built by the toolchain at `toolchain_index` (clamped: `usize::MAX` is the newest).
fn fixture(toolchain_index: usize, flavour: Flavour, goarch: Option<&str>) -> PathBuf {
    let all = all_toolchains();
    pcln_kinds(&all[toolchain_index.min(all.len() - 1)], flavour, goarch)
}

/// The first of `names` that `file` (read from `path`) has.
fn named_section<'d, 'f>(
    file: &'f object::File<'d>,
    names: &[&str],
    path: &Path,
) -> object::Section<'d, 'f> {
    names
        .iter()
        .find_map(|n| file.section_by_name(n))
        .unwrap_or_else(|| panic!("{names:?} missing from {}", path.display()))
}

fn section(path: &Path, names: &[&str]) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    named_section(&file, names, path).data().unwrap().to_vec()
}

#[derive(Default)]
struct Outcomes {
    ok: u64,
    err: u64,
}

/// Runs `parse` on mutations of each seed input until the time budget is spent; a panic fails
/// the test with what reproduces it.
fn fuzz(
    target: &str,
    inputs: &[Vec<u8>],
    header: usize,
    parse: impl Fn(&[u8], &mut Rng) -> bool,
) -> Outcomes {
    let seed = seed();
    let deadline = Instant::now() + budget();
    let mut outcomes = Outcomes::default();
    let mut iteration: u64 = 0;
    // At least a few hundred inputs, even with a zero budget.
    while iteration < 300 || Instant::now() < deadline {
        let mut rng = Rng::new(seed ^ iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut data = inputs[iteration as usize % inputs.len()].clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut data, header);
        }
        match catch_unwind(AssertUnwindSafe(|| parse(&data, &mut rng))) {
            Ok(true) => outcomes.ok += 1,
            Ok(false) => outcomes.err += 1,
            Err(_) => {
                let saved = workspace_target_dir().join(format!("fuzz-crash-{target}.bin"));
                let _ = std::fs::write(&saved, &data);
                panic!(
                    "{target} panicked on GOTRACE_FUZZ_SEED={seed} iteration {iteration}; \
                     input saved to {}",
                    saved.display()
                );
            }
        }
        iteration += 1;
    }
    eprintln!(
        "{target}: {iteration} inputs, {} parsed, {} rejected",
        outcomes.ok, outcomes.err
    );
    outcomes
}

#[test]
fn pclntab_never_panics_on_mutated_tables() {
    let sources = [
        (
            fixture(usize::MAX, Flavour::Plain, None),
            Arch::Amd64, // newest toolchain: magic 0xFFFFFFF1
        ),
        (fixture(0, Flavour::Stripped, Some("arm64")), Arch::Arm64),
    ];
    let names = [".gopclntab", ".data.rel.ro.gopclntab"];
    let inputs: Vec<Vec<u8>> = sources.iter().map(|(p, _)| section(p, &names)).collect();
    let arches: Vec<Arch> = sources.iter().map(|(_, a)| *a).collect();
    let outcomes = fuzz("pclntab", &inputs, 72, |data, rng| {
        let arch = arches[rng.below(arches.len())];
        let text_start = match rng.below(3) {
            0 => Some(rng.next()),
            _ => None,
        };
        match Pclntab::parse(data, arch, text_start) {
            Ok(table) => {
                let functions = table.functions();
                for f in &functions {
                    assert!(f.end >= f.entry, "{f:?} ends before it starts");
                }
                table.names_without_code(&functions);
                true
            }
            Err(_) => false,
        }
    });
    // Both outcomes occur, or the mutations are not reaching the decoder.
    assert!(outcomes.ok > 0 && outcomes.err > 0);
}

#[test]
fn buildinfo_never_panics_on_mutated_sections() {
    let inputs = vec![
        section(
            &fixture(usize::MAX, Flavour::Plain, None),
            &[".go.buildinfo"],
        ),
        section(&fixture(0, Flavour::Cgo, None), &[".go.buildinfo"]),
    ];
    let outcomes = fuzz("buildinfo", &inputs, 48, |data, _| {
        // Pointer-format headers (an unset flag bit) point into the image: let them point into
        // the mutated bytes themselves.
        let read = |addr: u64, len: u64| {
            let start = usize::try_from(addr).ok()?;
            data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
        };
        buildinfo::parse_blob(data, read).is_ok()
    });
    assert!(outcomes.ok > 0 && outcomes.err > 0);
}

/// Whole files: every sampled prefix of a real binary, and binaries whose Go sections were
/// mutated in place (the path through section lookup and the PIE text-start relocation).
#[test]
fn opening_truncated_or_corrupted_binaries_never_panics() {
    let pie = fixture(usize::MAX, Flavour::Pie, None);
    let stripped_arm64 = fixture(usize::MAX, Flavour::Stripped, Some("arm64"));
    let path = Path::new("fuzzed");
    let started = Instant::now();

    for source in [&pie, &stripped_arm64] {
        let data = std::fs::read(source).unwrap();
        let mut rng = Rng::new(seed());
        let mut lengths: Vec<usize> = (0..256).map(|_| rng.below(data.len())).collect();
        lengths.extend([0, 1, 4, 16, 63, 64, 65, data.len() - 1]);
        for len in lengths {
            let prefix = data[..len].to_vec();
            let opened = catch_unwind(|| GoBinary::from_bytes(path, prefix).is_ok());
            assert!(
                opened.is_ok(),
                "{}: prefix of {len} bytes panicked",
                source.display()
            );
        }
    }

    let data = std::fs::read(&pie).unwrap();
    let file = object::File::parse(&*data).unwrap();
    // A PIE's function table is `.data.rel.ro.gopclntab` up to Go 1.25, `.gopclntab` since.
    let ranges: Vec<(usize, usize)> = [
        &[".data.rel.ro.gopclntab", ".gopclntab"][..],
        &[".go.buildinfo"][..],
    ]
    .iter()
    .map(|names| {
        let section = named_section(&file, names, &pie);
        let (off, size) = section.file_range().expect("section has file bytes");
        (off as usize, size as usize)
    })
    .collect();
    let deadline = started + budget();
    let mut iteration: u64 = 0;
    while iteration < 50 || Instant::now() < deadline {
        let mut rng = Rng::new(seed() ^ iteration);
        let (off, size) = ranges[rng.below(ranges.len())];
        let mut section = data[off..off + size].to_vec();
        mutate(&mut rng, &mut section, 72);
        // Keep the file layout: the mutated section is cut or zero-padded to its old size.
        section.resize(size, 0);
        let mut image = data.clone();
        image[off..off + size].copy_from_slice(&section);
        let opened =
            catch_unwind(|| GoBinary::from_bytes(path, image).map(|b| b.functions().len()));
        assert!(
            opened.is_ok(),
            "mutated section at {off:#x} panicked: GOTRACE_FUZZ_SEED={} iteration {iteration}",
            seed()
        );
        iteration += 1;
    }
}
