//! The build-info reader against real binaries: every installed toolchain, every flavour and
//! both architectures must report the version `go version` prints and the settings they were
//! built with.

mod common;

use common::{all_toolchains, pcln_kinds};
use gotrace_binary::GoBinary;
use gotrace_gobuild::{Flavour, Toolchain};
use std::process::Command;

/// `go1.23.5` from `go version go1.23.5 linux/amd64`.
fn reported_version(toolchain: &Toolchain) -> String {
    let out = Command::new(&toolchain.go)
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("unexpected `go version` output {text:?}"))
        .to_owned()
}

#[test]
fn build_info_matches_how_each_binary_was_built() {
    for toolchain in all_toolchains() {
        let version = reported_version(&toolchain);
        let minor: u32 = toolchain.version.trim_start_matches("1.").parse().unwrap();
        let builds = [
            (Flavour::Plain, None),
            (Flavour::Stripped, None),
            (Flavour::Pie, None),
            (Flavour::Cgo, None),
            (Flavour::Plain, Some("arm64")),
            (Flavour::Stripped, Some("arm64")),
        ];
        for (flavour, goarch) in builds {
            let what = format!("Go {} {flavour:?} {goarch:?}", toolchain.version);
            let bin = GoBinary::open(&pcln_kinds(&toolchain, flavour, goarch)).unwrap();
            let info = bin
                .build_info()
                .unwrap_or_else(|| panic!("{what}: no build info"));
            assert_eq!(info.go_version, version, "{what}");
            assert_eq!(info.go_version_minor(), Some(minor), "{what}");
            assert_eq!(
                info.goarch.as_deref(),
                Some(goarch.unwrap_or("amd64")),
                "{what}"
            );
            assert_eq!(info.goarch.as_deref(), Some(bin.arch().go_name()), "{what}");
            // GOPATH mode: a main package but no main module.
            assert_eq!(info.main_module, None, "{what}");
            let cgo = if flavour == Flavour::Cgo { "1" } else { "0" };
            assert_eq!(info.setting("CGO_ENABLED"), Some(cgo), "{what}");
            assert_eq!(info.setting("GOOS"), Some("linux"), "{what}");
            // Go 1.19 records no command-line flags for a GOPATH-mode build.
            if minor >= 21 {
                let buildmode = if flavour == Flavour::Pie {
                    "pie"
                } else {
                    "exe"
                };
                assert_eq!(info.setting("-buildmode"), Some(buildmode), "{what}");
                // Quoted in the binary (`-ldflags="-s -w"`): checks the unquoting.
                let ldflags = (flavour == Flavour::Stripped).then_some("-s -w");
                assert_eq!(info.setting("-ldflags"), ldflags, "{what}");
            }
        }
    }
}
