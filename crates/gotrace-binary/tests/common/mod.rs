//! Shared by the integration tests: the installed Go toolchains, the fixtures they build, and the
//! deterministic random numbers the fuzzers mutate with.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

pub use gotrace_gobuild::testing::{build_fixture as build, toolchains as all_toolchains};
use gotrace_gobuild::{Flavour, Toolchain};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `fixtures/go/pcln_kinds`, built without `-l` so the compiler inlines `main.tinyRecord` into
/// every caller.
pub fn pcln_kinds(toolchain: &Toolchain, flavour: Flavour, goarch: Option<&str>) -> PathBuf {
    build("fixtures/go/pcln_kinds", "", toolchain, flavour, goarch)
}

/// `fixtures/go/sig_kinds` (every kind of Go type), plain, with `-l` so each function keeps its
/// own signature.
pub fn sig_kinds(toolchain: &Toolchain, goarch: Option<&str>) -> PathBuf {
    build(
        "fixtures/go/sig_kinds",
        "-l",
        toolchain,
        Flavour::Plain,
        goarch,
    )
}

/// `fixtures/go/values` (every kind of Go value), built with `-l` as the tracer's tests build it.
pub fn values(toolchain: &Toolchain, flavour: Flavour) -> PathBuf {
    build("fixtures/go/values", "-l", toolchain, flavour, None)
}

/// `path` opened; failing to open fails the test.
pub fn open(path: &Path) -> gotrace_binary::GoBinary {
    gotrace_binary::GoBinary::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `sig_kinds` built by the oldest and by the newest toolchain: DWARF 4 (Go up to 1.24) and,
/// with Go 1.25 or later installed, DWARF 5.
pub fn dwarf_4_and_5() -> Vec<PathBuf> {
    let all = all_toolchains();
    let mut ends = vec![&all[0]];
    ends.extend(all.last().filter(|newest| newest.version != all[0].version));
    ends.into_iter().map(|tc| sig_kinds(tc, None)).collect()
}

/// A copy of the binary at `path` with its DWARF sections decompressed (`objcopy
/// --decompress-debug-sections`), so tests can edit single DIEs.
pub fn decompressed(path: &Path) -> Vec<u8> {
    let mut out = path.as_os_str().to_owned();
    out.push(format!(".decompressed-{}", std::process::id()));
    let out = PathBuf::from(out);
    let status = Command::new("objcopy")
        .arg("--decompress-debug-sections")
        .arg(path)
        .arg(&out)
        .status()
        .expect("running objcopy (binutils; scripts/setup.sh installs it)");
    assert!(status.success(), "objcopy failed on {}", path.display());
    let data = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    data
}

/// xorshift64* seeded through splitmix64: small, deterministic (so a failure names its input),
/// good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds give unrelated streams (and never zero).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The environment variable `name` as a number, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
