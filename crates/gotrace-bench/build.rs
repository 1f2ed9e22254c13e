//! Compiles the bench's empty BPF program (the cost floor, src/floor.rs) with clang and
//! generates its libbpf-rs skeleton into OUT_DIR.

use libbpf_cargo::SkeletonBuilder;
use std::env;
use std::path::PathBuf;

const SRC: &str = "src/bpf/floor.bpf.c";

fn main() {
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("floor.skel.rs");
    // Debian keeps the uapi <asm/*.h> headers under the multiarch directory.
    let multiarch = format!(
        "-I/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args([multiarch.as_str(), "-mcpu=v3", "-Wall", "-Werror"])
        .build_and_generate(&out)
        .unwrap_or_else(|e| {
            panic!("building {SRC} failed (is clang installed? run scripts/setup.sh): {e:#}")
        });
    println!("cargo:rerun-if-changed=src/bpf");
}
