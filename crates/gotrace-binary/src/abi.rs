//! Go's internal register ABI: where each argument and result of a signature lives.

use crate::types::{Signature, TypeTable};
use crate::Arch;
use serde::Serialize;

/// A register by its position in the ABI's sequence (amd64 integer: RAX, RBX, RCX, RDI, RSI,
/// R8, R9, R10, R11; float: X0–X14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbiReg {
    Int(u8),
    Float(u8),
}

/// One register-sized part of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Piece {
    pub reg: AbiReg,
    /// Where this part sits in the value's memory layout.
    pub value_offset: u64,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Registers(Vec<Piece>),
    /// At `sp_offset` bytes above SP at entry (equally, at RET).
    Stack { sp_offset: u64 },
    /// A zero-size value.
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub params: Vec<Location>,
    pub results: Vec<Location>,
}

pub fn assign(_arch: Arch, sig: &Signature, _types: &TypeTable) -> Assignment {
    Assignment {
        params: vec![Location::Empty; sig.params.len()],
        results: vec![Location::Empty; sig.results.len()],
    }
}
