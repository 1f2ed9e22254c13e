//! `.gopclntab`: Go's own function table, present even in stripped binaries.

use crate::{Arch, BinaryError, Function};

pub struct Pclntab<'a> {
    #[allow(dead_code)]
    data: &'a [u8],
}

impl<'a> Pclntab<'a> {
    pub fn parse(data: &'a [u8], _arch: Arch) -> Result<Pclntab<'a>, BinaryError> {
        Ok(Pclntab { data })
    }

    /// Every function in the table.
    pub fn functions(&self) -> Vec<Function> {
        Vec::new()
    }

    /// Names the table knows that have no code of their own (inlined everywhere).
    pub fn names_without_code(&self, _functions: &[Function]) -> Vec<String> {
        Vec::new()
    }
}
