//! Opening a binary together with its debug information: the DWARF of a stripped binary kept
//! in a separate file of the same build, given with `--debug-file` or found by build-id.

use anyhow::Result;
use gotrace_binary::{debugfile, DebugSource, GoBinary};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Directories searched for debug files before the system's (colon-separated).
pub const SEARCH_PATH_VAR: &str = "GOTRACE_DEBUG_PATH";

/// Opens `path`. With `debug_file`, its DWARF is used, and a debug file of another build is an
/// error naming both build IDs. Without, a binary that has no DWARF is given the first debug
/// file of its build found (see [`debugfile::candidates`]); candidates of another build are
/// skipped with a warning.
pub fn open(path: &Path, debug_file: Option<&Path>) -> Result<GoBinary> {
    let mut binary = GoBinary::open(path)?;
    if let Some(debug_file) = debug_file {
        binary.attach_debug_file(debug_file)?;
        return Ok(binary);
    }
    if binary.debug_source() != DebugSource::None {
        return Ok(binary);
    }
    let dirs: Vec<PathBuf> = std::env::var_os(SEARCH_PATH_VAR)
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    // `/proc/PID/exe` is named after what it links to.
    let real = std::fs::read_link(path).unwrap_or_else(|_| path.to_owned());
    let own = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    for candidate in debugfile::candidates(&binary.build_ids(), real.file_name(), &dirs) {
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && Some((m.dev(), m.ino())) != own => {}
            _ => continue,
        }
        match binary.attach_debug_file(&candidate) {
            Ok(()) => break,
            Err(e) => crate::say!("gotrace: warning: not using {}: {e}", candidate.display())?,
        }
    }
    Ok(binary)
}
