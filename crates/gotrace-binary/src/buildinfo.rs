//! `.go.buildinfo`: the Go version and module the binary was built from.

use crate::elf::ElfImage;
use crate::BinaryError;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BuildInfo {
    /// As the toolchain states it: `go1.23.5`.
    pub go_version: String,
    pub main_module: Option<String>,
    pub goarch: Option<String>,
}

impl BuildInfo {
    /// 23 for `go1.23.5`.
    pub fn go_version_minor(&self) -> Option<u32> {
        let rest = self.go_version.strip_prefix("go1.")?;
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }
}

pub fn parse(_section: &[u8], _elf: &ElfImage) -> Result<BuildInfo, BinaryError> {
    Err(BinaryError::Malformed {
        section: ".go.buildinfo",
        offset: 0,
        reason: "not yet parsed".into(),
    })
}
