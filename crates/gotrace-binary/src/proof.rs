//! Where gotrace may probe: every address is proven here before it is planned — the
//! function's start confirmed by two independent sources, every site an instruction the
//! linear decode from that start reaches.

use crate::{
    inline, pclntab, sites, Arch, BinaryError, Function, FunctionSource, GoBinary, ProbeSites,
    VirtAddr,
};

impl GoBinary {
    /// Entry, return and deferreturn sites of a function, from a linear decode of its code.
    ///
    /// Every probe is planned through here, so this is where an address is proven before it is
    /// returned: two independent sources must agree on where the function starts (`.symtab` and
    /// `.gopclntab`; without a symbol table, `.gopclntab` and the runtime's module data), and
    /// every site must be an instruction the linear decode from that start reaches. A probe
    /// in the middle of an instruction corrupts the program, so anything else is refused.
    pub fn probe_sites(&self, function: &Function) -> Result<ProbeSites, BinaryError> {
        self.prove_start(function)?;
        let code = self.code(function)?;
        let found = sites::find(self.arch(), function, code, |target| {
            self.function_at(target).map(|f| f.name.as_str())
        })?;
        let all = std::iter::once(found.entry.addr)
            .chain(found.returns.iter().copied())
            .chain(found.deferreturns.iter().copied());
        if let Some(bad) = off_boundary(self.arch(), function, code, all) {
            return Err(BinaryError::Unproven {
                function: function.name.clone(),
                reason: format!(
                    "site {bad} is not an instruction the linear decode from {} reaches",
                    function.entry
                ),
            });
        }
        Ok(found)
    }

    /// Where to probe each place `name` was inlined: one result per inlined body, an error for
    /// a body whose first instruction is not proven (see [`GoBinary::probe_sites`]: the
    /// caller's start must be confirmed by two sources, and the address must be an
    /// instruction of the linear decode from it).
    pub fn inlined_sites(
        &self,
        name: &str,
    ) -> Result<Vec<Result<inline::InlinedSite, BinaryError>>, BinaryError> {
        let index = self.inline_index()?;
        Ok(index
            .bodies(name)
            .iter()
            .map(|body| self.inlined_site(index, name, body))
            .collect())
    }

    fn inlined_site(
        &self,
        index: &inline::InlineIndex,
        name: &str,
        body: &inline::InlinedBody,
    ) -> Result<inline::InlinedSite, BinaryError> {
        let start = body.start();
        let caller = self
            .function_at(start)
            .filter(|f| f.entry == body.caller_entry)
            .ok_or_else(|| BinaryError::Unproven {
                function: name.to_owned(),
                reason: format!(
                    "its body inlined at {start} lies in no function starting at {}",
                    body.caller_entry
                ),
            })?;
        self.prove_start(caller)?;
        let code = self.code(caller)?;
        let addr = match self.arch() {
            Arch::Amd64 => {
                let instructions = sites::decode_amd64(caller, code)?;
                let first = instructions
                    .binary_search_by_key(&start.0, |i| i.ip())
                    .map_err(|_| BinaryError::Unproven {
                        function: name.to_owned(),
                        reason: format!(
                            "its body inlined into {} starts at {start}, which is not an instruction the linear decode from {} reaches",
                            caller.name, caller.entry
                        ),
                    })?;
                inline::probe_instruction(&instructions, first, body.first_run_end())
            }
            Arch::Arm64 => start,
        };
        if off_boundary(self.arch(), caller, code, std::iter::once(addr)).is_some() {
            return Err(BinaryError::Unproven {
                function: name.to_owned(),
                reason: format!(
                    "site {addr} in {} is not an instruction the linear decode from {} reaches",
                    caller.name, caller.entry
                ),
            });
        }
        Ok(inline::InlinedSite {
            caller: caller.name.clone(),
            body_start: start,
            addr,
            sp_delta: index.sp_delta(caller.entry, addr),
        })
    }

    /// Checks that a second source agrees with the function's start: see
    /// [`GoBinary::probe_sites`].
    pub(crate) fn prove_start(&self, function: &Function) -> Result<(), BinaryError> {
        let refuse = |reason: String| {
            Err(BinaryError::Unproven {
                function: function.name.clone(),
                reason,
            })
        };
        let entry = function.entry;
        if let Some((text, etext)) = self.text_range {
            if entry < text || function.end > etext {
                return refuse(format!(
                    "{entry}..{} lies outside Go's code [{text}, {etext}) as the runtime's module data gives it",
                    function.end
                ));
            }
        }
        match self.function_source {
            FunctionSource::Pclntab if self.text_range.is_some() => Ok(()),
            FunctionSource::Pclntab => refuse(
                "the binary has no symbol table and the runtime's module data was not found, so nothing confirms where Go's code starts".into(),
            ),
            FunctionSource::Symtab => {
                let i = self.table.partition_point(|f| f.entry <= entry);
                let same = |t: &Function| same_go_name(&t.name, &function.name);
                match i.checked_sub(1).and_then(|i| self.table.get(i)) {
                    Some(t) if t.entry == entry && same(t) => Ok(()),
                    Some(t) if t.entry == entry => refuse(format!(
                        "the symbol table (.symtab) names the function at {entry} {}, Go's function table (.gopclntab) {}",
                        function.name, t.name
                    )),
                    _ => match self.table.iter().find(|t| same(t)) {
                        Some(t) => refuse(format!(
                            "the symbol table (.symtab) puts it at {entry}, Go's function table (.gopclntab) at {}",
                            t.entry
                        )),
                        None => refuse(format!(
                            "Go's function table (.gopclntab) has no function at {entry} (C code has none), so nothing confirms the symbol table's start"
                        )),
                    },
                }
            }
        }
    }
}

/// Whether a `.symtab` name and a `.gopclntab` name are the same function's: the symbol table
/// adds `.abi0` to assembly, and Go 1.18–1.19 tables shorten generic names to `F[...]`.
fn same_go_name(table: &str, symbol: &str) -> bool {
    let symbol = symbol.strip_suffix(".abi0").unwrap_or(symbol);
    table == symbol || table == pclntab::abbreviate_generic(symbol)
}

/// The first of `sites` that is not the start of an instruction in the linear decode of
/// `code` from the function's entry, or outside the function.
fn off_boundary(
    arch: Arch,
    function: &Function,
    code: &[u8],
    mut sites: impl Iterator<Item = VirtAddr>,
) -> Option<VirtAddr> {
    let inside = |a: VirtAddr| a >= function.entry && a < function.end;
    match arch {
        Arch::Amd64 => {
            let mut decoder = iced_x86::Decoder::with_ip(
                64,
                code,
                function.entry.0,
                iced_x86::DecoderOptions::NONE,
            );
            let mut starts = Vec::with_capacity(code.len() / 4);
            while decoder.can_decode() {
                starts.push(decoder.ip());
                if decoder.decode().is_invalid() {
                    break;
                }
            }
            sites.find(|&a| !inside(a) || starts.binary_search(&a.0).is_err())
        }
        Arch::Arm64 => sites.find(|&a| !inside(a) || !(a.0 - function.entry.0).is_multiple_of(4)),
    }
}
