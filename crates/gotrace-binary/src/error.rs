use crate::addr::VirtAddr;
use std::path::PathBuf;

/// Everything that can be wrong with a binary or a lookup in it. Each variant carries the facts
/// a user needs to act on it; the CLI adds the advice.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is a {kind}, not a program file")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{path} is not an ELF file ({reason})")]
    NotElf { path: PathBuf, reason: String },
    #[error(
        "{path} is not a Go binary: it has no Go function table (.gopclntab) and no Go build info"
    )]
    NotGo { path: PathBuf },
    #[error("{path} is built for {arch}; gotrace supports amd64 and arm64 ELF binaries")]
    UnsupportedArch { path: PathBuf, arch: String },
    #[error("no function named {name:?} in the binary{}", suggestion_text(.suggestions))]
    NoSuchFunction {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("function {name:?} has no machine code of its own: the compiler inlined it into its callers")]
    Inlined { name: String },
    #[error("address {addr} is not inside any loadable segment of the binary")]
    NotLoaded { addr: VirtAddr },
    #[error("cannot decode the instruction at {addr} in {function} (bytes {bytes}): refusing to guess probe sites")]
    Undecodable {
        function: String,
        addr: VirtAddr,
        bytes: String,
    },
    #[error("malformed {section} at offset {offset:#x}: {reason}")]
    Malformed {
        section: &'static str,
        offset: u64,
        reason: String,
    },
    #[error(
        "Go's function table does not say where the code starts (Go 1.26+ leaves that to the runtime's module data, which was not found, and there is no symbol table): refusing to guess function addresses"
    )]
    NoTextStart,
    #[error("refusing to probe {function}: {reason}")]
    Unproven { function: String, reason: String },
    #[error("DWARF: {0}")]
    Dwarf(String),
    #[error("the runtime type information cannot be read: {0}")]
    RuntimeTypes(String),
    #[error(transparent)]
    DebugFile(#[from] crate::debugfile::DebugFileError),
}

fn suggestion_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
}

impl From<gimli::Error> for BinaryError {
    fn from(e: gimli::Error) -> Self {
        BinaryError::Dwarf(e.to_string())
    }
}
