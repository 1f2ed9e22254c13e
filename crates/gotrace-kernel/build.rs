//! Compiles the BPF programs with clang and generates their libbpf-rs skeletons into OUT_DIR:
//! gotrace's program, the empty one for trial attachments, and the cookie decoder the unit
//! tests run (compiled here, embedded only in the test build).

use libbpf_cargo::SkeletonBuilder;
use std::env;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Debian keeps the uapi <asm/*.h> headers under the multiarch directory.
    let multiarch = format!(
        "-I/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    for name in ["gotrace", "trial", "cookie_test"] {
        let src = format!("src/bpf/{name}.bpf.c");
        SkeletonBuilder::new()
            .source(&src)
            .clang_args([multiarch.as_str(), "-mcpu=v3", "-Wall", "-Werror"])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| {
                panic!("building {src} failed (is clang installed? run scripts/setup.sh): {e:#}")
            });
    }
    println!("cargo:rerun-if-changed=src/bpf");
}
