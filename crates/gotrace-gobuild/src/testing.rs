//! What every test crate needs to run against real Go programs, in one place: the installed
//! toolchains, fixtures built once into one shared cache, and whether a test that needs root can
//! run. These fail the calling test (panic) instead of returning errors: a missing toolchain or
//! a fixture that does not build is the test's failure, said plainly.

use crate::{repo_root, toolchains as installed, workspace_target_dir, Build, Flavour, Toolchain};
use std::path::PathBuf;

/// Every installed Go toolchain, oldest first; none installed fails the test.
pub fn toolchains() -> Vec<Toolchain> {
    let all = installed();
    assert!(
        !all.is_empty(),
        "no Go toolchain installed: run scripts/setup.sh"
    );
    all
}

/// Where every test crate keeps its Go builds (`target/go-fixtures`), so each is built once.
pub fn fixtures_dir() -> PathBuf {
    workspace_target_dir().join("go-fixtures")
}

/// Builds (or reuses the cached build of) the Go program in `relative_dir` of the repository
/// (`fixtures/go/sig_kinds`, `examples/fibonacci`) with `-gcflags=<gcflags>`, for `goarch`
/// (default amd64).
pub fn build_fixture(
    relative_dir: &str,
    gcflags: &str,
    toolchain: &Toolchain,
    flavour: Flavour,
    goarch: Option<&str>,
) -> PathBuf {
    Build {
        source_dir: &repo_root().join(relative_dir),
        toolchain,
        flavour,
        goarch,
        gcflags,
        out_dir: &fixtures_dir(),
    }
    .run()
    .unwrap_or_else(|e| panic!("building {relative_dir}: {e}"))
}

/// `binary` split as a build pipeline splits it: (stripped binary, debug file), see
/// [`crate::split_debug`].
pub fn split_debug(binary: &std::path::Path) -> (PathBuf, PathBuf) {
    crate::split_debug(binary).unwrap_or_else(|e| {
        panic!(
            "splitting the debug information of {}: {e}",
            binary.display()
        )
    })
}

/// Whether this test can do what needs root (BPF, uprobes, fanotify). Not root, it says it is
/// skipped and returns false; with GOTRACE_REQUIRE_ROOT set (the README's test command and CI
/// set it) not being root fails the test instead.
pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var_os("GOTRACE_REQUIRE_ROOT").is_none(),
            "this test needs root and GOTRACE_REQUIRE_ROOT is set"
        );
        eprintln!("skipped: needs root");
    }
    root
}
