//! Broken DWARF: bytes of `.debug_info`, `.debug_abbrev` and (DWARF 5, Go 1.25 on) the address
//! table `.debug_addr` in real binaries built by the oldest and the newest toolchain are flipped,
//! overwritten and cut short in memory, and `GoBinary::from_bytes(..).dwarf()` — plus what
//! callers then do with the result (signatures, ABI assignment, `runtime.g` offsets) — must
//! give an error or a partial result: never a panic, never a hang.
//!
//! Go compresses its DWARF sections, so most byte changes would only break the zlib stream.
//! The main input is therefore a copy decompressed by `objcopy --decompress-debug-sections`,
//! where mutations reach gimli and gotrace's reader; a quarter of the inputs mutate the
//! compressed original (compression header and stream) instead.
//!
//! Runs for `GOTRACE_FUZZ_SECONDS` (default 2) after a minimum number of inputs, like
//! `fuzz_parsers.rs`; inputs derive from `GOTRACE_FUZZ_SEED` and the iteration number.

mod common;

use common::{all_toolchains, decompressed, dwarf_4_and_5, env_u64, sig_kinds, Rng};
use gotrace_binary::{abi, GoBinary};
use gotrace_gobuild::workspace_target_dir;
use object::{Object, ObjectSection};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One input parsing longer than this is a hang (an unbounded loop on a cycle, say); a whole
/// healthy parse takes well under a second even unoptimised.
const HANG: Duration = Duration::from_secs(30);
const MIN_INPUTS: u64 = 40;

/// The sig_kinds fixture (every type kind) built by the newest toolchain, with its DWARF.
fn fixture() -> PathBuf {
    let newest = all_toolchains().pop().expect("at least one toolchain");
    sig_kinds(&newest, None)
}

/// The DWARF sections gotrace's reader decodes itself (not only through zlib).
const MUTATED: [&str; 3] = [".debug_info", ".debug_abbrev", ".debug_addr"];

/// A section's place in the file: its bytes, and its section-header entry (for truncation).
#[derive(Clone, Copy, Debug)]
struct Target {
    offset: usize,
    size: usize,
    /// File offset of the section header's `sh_size` field.
    size_field: usize,
}

/// Where the sections named `names` that the image has are (`.debug_addr` is DWARF 5 only).
fn targets(image: &[u8], names: &[&str]) -> Vec<Target> {
    let file = object::File::parse(image).unwrap();
    let shoff = u64::from_le_bytes(image[0x28..0x30].try_into().unwrap()) as usize;
    let shentsize = u16::from_le_bytes(image[0x3a..0x3c].try_into().unwrap()) as usize;
    names
        .iter()
        .filter_map(|name| file.section_by_name(name))
        .map(|section| {
            let (offset, size) = section.file_range().unwrap();
            Target {
                offset: offset as usize,
                size: size as usize,
                // Elf64_Shdr: name, type (4 bytes each), flags, addr, offset (8 each), size.
                size_field: shoff + section.index().0 * shentsize + 32,
            }
        })
        .collect()
}

const INTERESTING: [u64; 7] = [0, 1, 0x7f, 0x80, 0xffff, 0xffff_ffff, u64::MAX];

/// One mutation inside `t` (or of its size): abbreviation codes, attribute forms, unit
/// lengths, offsets and LEB128 bytes are all just bytes here.
fn mutate(rng: &mut Rng, image: &mut [u8], t: Target) {
    // Headers (unit lengths, versions, abbreviation offsets; the compression header) decide
    // the most: hit the first bytes more often.
    let at = t.offset
        + if rng.below(3) == 0 {
            rng.below(t.size.min(64))
        } else {
            rng.below(t.size)
        };
    match rng.below(5) {
        0 | 1 => {
            for _ in 0..1 + rng.below(4) {
                let at = t.offset + rng.below(t.size);
                image[at] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            let width = [1, 2, 4, 8][rng.below(4)];
            let end = (at + width).min(t.offset + t.size);
            image[at..end].copy_from_slice(&value[..end - at]);
        }
        3 => {
            let len = rng.below(256).min(t.offset + t.size - at);
            for b in &mut image[at..at + len] {
                *b = rng.next() as u8;
            }
        }
        _ => {
            // Cut the section short: its header states a smaller size.
            let keep = rng.below(t.size) as u64;
            image[t.size_field..t.size_field + 8].copy_from_slice(&keep.to_le_bytes());
        }
    }
}

/// Opens the image and uses its DWARF as `gotrace funcs` and `trace` would. `Ok(true)` when
/// DWARF loaded (whole or partial), `Ok(false)` when it was rejected with an error.
fn exercise(image: Vec<u8>) -> bool {
    let Ok(bin) = GoBinary::from_bytes(Path::new("corrupt"), image) else {
        return false;
    };
    let loaded = match bin.dwarf() {
        Ok(Some(d)) => d,
        Ok(None) | Err(_) => return false,
    };
    for f in bin.functions() {
        if let Some(sig) = loaded.signature(f.entry) {
            abi::assign(bin.arch(), sig, loaded.types());
        }
    }
    loaded.member_offset("runtime.g", "goid");
    let _ = bin.runtime_layout();
    true
}

#[test]
fn broken_dwarf_is_an_error_or_partial_never_a_panic() {
    // Per fixture: (decompressed copy, compressed original), each with its targets.
    let mut inputs = Vec::new();
    for path in dwarf_4_and_5() {
        let original = std::fs::read(&path).unwrap();
        let plain = decompressed(&path);
        let (plain_targets, original_targets) =
            (targets(&plain, &MUTATED), targets(&original, &MUTATED));
        assert!(plain_targets.len() >= 2, "{}", path.display());
        // The undamaged inputs load, or the outcomes below would prove nothing.
        for image in [&plain, &original] {
            assert!(
                exercise(image.to_vec()),
                "{}: DWARF does not load",
                path.display()
            );
        }
        inputs.push([(plain, plain_targets), (original, original_targets)]);
    }

    let seed = env_u64("GOTRACE_FUZZ_SEED", 0x607A_CE00);
    let deadline = Instant::now() + Duration::from_secs(env_u64("GOTRACE_FUZZ_SECONDS", 2));
    let (mut loaded, mut rejected) = (0u64, 0u64);
    let mut iteration: u64 = 0;
    while iteration < MIN_INPUTS || Instant::now() < deadline {
        let mut rng = Rng::new(seed ^ iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let fixture = &inputs[rng.below(inputs.len())];
        let (image, targets) = &fixture[usize::from(rng.below(4) == 0)];
        let mut image = image.to_vec();
        for _ in 0..1 + rng.below(3) {
            let t = targets[rng.below(targets.len())];
            mutate(&mut rng, &mut image, t);
        }
        let saved = image.clone();
        // In a thread, so a hang is reported instead of stalling the test run.
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = send.send(catch_unwind(AssertUnwindSafe(|| exercise(image))));
        });
        let context = format!("GOTRACE_FUZZ_SEED={seed} iteration {iteration}");
        match receive.recv_timeout(HANG) {
            Ok(Ok(true)) => loaded += 1,
            Ok(Ok(false)) => rejected += 1,
            outcome => {
                let file = workspace_target_dir().join("dwarf-corrupt-crash.bin");
                let _ = std::fs::write(&file, &saved);
                let what = match outcome {
                    Err(_) => "hung",
                    _ => "panicked",
                };
                panic!("{what} on {context}; input saved to {}", file.display());
            }
        }
        iteration += 1;
    }
    eprintln!("dwarf: {iteration} inputs, {loaded} loaded (whole or partial), {rejected} rejected");
    // Both outcomes occur, or the mutations are not reaching the reader.
    assert!(
        loaded > 0 && rejected > 0,
        "{loaded} loaded, {rejected} rejected"
    );
}

/// Found by the test above: a compression header claiming 16 GiB made `dwarf()` allocate and
/// zero all of it before zlib failed (about a minute and 16 GiB of memory here; the OOM killer
/// on a smaller machine). Deflate never expands more than 1032:1, so a claim beyond that is
/// corrupt and can be rejected before decompressing.
#[test]
fn compressed_section_claiming_gigabytes_is_rejected_quickly() {
    let mut image = std::fs::read(fixture()).unwrap();
    let info = targets(&image, &[".debug_info"])[0];
    // Elf64_Chdr: ch_type u32, ch_reserved u32, ch_size u64.
    let ch_size = info.offset + 8;
    image[ch_size..ch_size + 8].copy_from_slice(&(16u64 << 30).to_le_bytes());
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let bin = GoBinary::from_bytes(Path::new("huge"), image).unwrap();
        let _ = send.send(bin.dwarf().is_err());
    });
    assert_eq!(
        receive.recv_timeout(Duration::from_secs(5)),
        Ok(true),
        "a 16 GiB ch_size was not rejected within 5 s"
    );
}
