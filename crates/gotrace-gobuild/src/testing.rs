//! What every test crate needs to run against real Go programs, in one place: the installed
//! toolchains, fixtures built once into one shared cache, and (feature `harness`) the test
//! harness of the targets holding tests that need root. These fail the calling test (panic)
//! instead of returning errors: a missing toolchain or a fixture that does not build is the
//! test's failure, said plainly.

use crate::{repo_root, toolchains as installed, Flavour, Toolchain};
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

pub use crate::fixtures_dir;

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
    crate::build_fixture(
        &repo_root().join(relative_dir),
        gcflags,
        toolchain,
        flavour,
        goarch,
    )
    .unwrap_or_else(|e| panic!("building {relative_dir}: {e}"))
}

/// The go command (`go build cmd/go`), built from `toolchain`'s own source tree once, in
/// [`fixtures_dir`]: a large real program.
pub fn go_command(toolchain: &Toolchain) -> PathBuf {
    crate::go_command(toolchain, &fixtures_dir())
        .unwrap_or_else(|e| panic!("building the go command of Go {}: {e}", toolchain.version))
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

/// Whether this process runs as root: what the BPF, uprobe and fanotify tests need.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The `main` of an integration-test target built with `harness = false` whose `root` tests
/// need root (BPF, uprobes, fanotify): not root, they show as ignored ("needs root"), and fail
/// when GOTRACE_REQUIRE_ROOT is set (scripts/test.sh and CI set it). The `tests` run always.
/// Test functions carry no `#[test]` (such a target never runs one): a function left out of
/// both lists is dead code, which the lints refuse, and a `#[test]` left in the file fails
/// the run.
///
/// ```ignore
/// gotrace_gobuild::test_main! {
///     tests: [missing_file, usage_errors_exit_2],
///     root: [traces_a_call],
/// }
/// ```
#[cfg(feature = "harness")]
#[macro_export]
macro_rules! test_main {
    (tests: [$($test:ident),* $(,)?], root: [$($root:ident),* $(,)?] $(,)?) => {
        fn main() -> ::std::process::ExitCode {
            $crate::testing::run_tests(
                file!(),
                &[$((stringify!($test), $test as fn())),*],
                &[$((stringify!($root), $root as fn())),*],
            )
        }
    };
}

/// Runs the tests of a [`test_main!`] target with libtest's command line (filters, `--list`,
/// `--test-threads`, `--exact`, ...). `source` is the target's file, relative to the repository.
#[cfg(feature = "harness")]
pub fn run_tests(
    source: &str,
    tests: &[(&'static str, fn())],
    root: &[(&'static str, fn())],
) -> std::process::ExitCode {
    use libtest_mimic::{Arguments, Completion, Trial};
    check_listing(source, tests.iter().chain(root).map(|(name, _)| *name));
    let require_root = std::env::var_os("GOTRACE_REQUIRE_ROOT").is_some();
    let root_ok = is_root();
    let plain = tests.iter().map(|&(name, test)| {
        Trial::test(name, move || {
            test();
            Ok(())
        })
    });
    let needing_root = root.iter().map(|&(name, test)| {
        Trial::ignorable_test(name, move || {
            if root_ok {
                test();
                Ok(Completion::Completed)
            } else if require_root {
                Err("needs root, and GOTRACE_REQUIRE_ROOT is set".into())
            } else {
                Ok(Completion::ignored_with("needs root"))
            }
        })
    });
    libtest_mimic::run(&Arguments::from_args(), plain.chain(needing_root).collect()).exit_code()
}

/// Fails the run for a test the harness would never run: a `#[test]` in `source`, or a name
/// listed twice.
#[cfg(feature = "harness")]
fn check_listing<'a>(source: &str, names: impl Iterator<Item = &'a str>) {
    let path = repo_root().join(source);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the test source {}: {e}", path.display()));
    if let Some((n, _)) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.trim_start().starts_with("#[test]"))
    {
        panic!(
            "{}:{}: #[test] never runs in a harness = false target: drop it and list the function in test_main!",
            source,
            n + 1
        );
    }
    let mut seen = std::collections::HashSet::new();
    for name in names {
        assert!(
            seen.insert(name),
            "{source}: {name} is listed twice in test_main!"
        );
    }
}
