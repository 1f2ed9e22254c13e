//! The pass over every DIE, and function signatures read from their DIEs.

use super::*;

/// A DIE's position: its offset in `.debug_info`.
pub(super) type DieRef = usize;

pub(super) struct FunctionDie {
    pub(super) entry: VirtAddr,
    pub(super) die: DieRef,
    /// From the unit's DW_AT_producer (`Go cmd/compile go1.23.5; regabi`).
    pub(super) go_minor: Option<u32>,
}

/// What one pass over every top-level DIE finds.
pub(super) struct Index {
    pub(super) functions: Vec<FunctionDie>,
    /// Abstract descriptions of inlinable functions, by name.
    pub(super) abstract_functions: Vec<(String, DieRef)>,
    /// Inlined calls (their unit's offset and their own), by abstract function.
    pub(super) inlined_calls: HashMap<DieRef, Vec<(usize, DieRef)>>,
    pub(super) structs: Vec<(String, DieRef)>,
    pub(super) runtime_types: Vec<(u64, DieRef)>,
    pub(super) ptr_size: u64,
}

/// Translation state. `types[i]` is `None` until the DIE behind `TypeId(i)` is read.
pub(super) struct Reader<'a, 'd> {
    pub(super) dwarf: &'d gimli::Dwarf<R<'a>>,
    pub(super) units: &'d [gimli::Unit<R<'a>>],
    pub(super) ptr_size: u64,
    /// Every DIE already given an id, typedef aliases included.
    pub(super) ids: HashMap<DieRef, TypeId>,
    pub(super) types: Vec<Option<GoType>>,
    /// Ids handed out whose DIE is not yet read.
    pub(super) pending: Vec<(DieRef, TypeId)>,
    pub(super) dict_type: Option<TypeId>,
}

impl<'a> Reader<'a, '_> {
    /// What every readable unit holds; a unit that cannot be walked to its end adds its error
    /// to `broken` and gives what came before the bad DIE.
    pub(super) fn index(&self, broken: &mut Vec<BinaryError>) -> Index {
        let mut index = Index {
            functions: Vec::new(),
            abstract_functions: Vec::new(),
            inlined_calls: HashMap::new(),
            structs: Vec::new(),
            runtime_types: Vec::new(),
            ptr_size: 8,
        };
        for unit in self.units {
            if let Err(e) = self.index_unit(unit, &mut index, broken) {
                broken.push(e);
            }
        }
        index
    }

    /// Adds what `unit` holds to `index`: an error where the walk cannot go on; a DIE whose
    /// name or address cannot be read is left out (its error in `broken`).
    pub(super) fn index_unit(
        &self,
        unit: &gimli::Unit<R<'a>>,
        index: &mut Index,
        broken: &mut Vec<BinaryError>,
    ) -> Result<(), BinaryError> {
        let base = unit.header.offset().0;
        index.ptr_size = u64::from(unit.header.address_size());
        let mut go_minor = None;
        let mut cursor = unit.entries();
        while let Some(die) = cursor.next_dfs().map_err(|e| at_offset(base, e))? {
            if die.depth() == 0 {
                go_minor = match die.attr_value(dw::DW_AT_producer) {
                    Some(v) => {
                        let producer = self
                            .dwarf
                            .attr_string(unit, v)
                            .map_err(|e| at_offset(base, e))?;
                        go_minor_version(&producer.to_string_lossy())
                    }
                    None => None,
                };
            }
            if die.tag() == dw::DW_TAG_inlined_subroutine {
                let origin = match die.attr_value(dw::DW_AT_abstract_origin) {
                    Some(AttributeValue::UnitRef(o)) => Some(base + o.0),
                    Some(AttributeValue::DebugInfoRef(o)) => Some(o.0),
                    _ => None,
                };
                if let Some(origin) = origin {
                    let call = (base, base + die.offset().0);
                    index.inlined_calls.entry(origin).or_default().push(call);
                }
            }
            // Go puts functions and types directly under the compile unit.
            if die.depth() != 1 {
                continue;
            }
            let at = base + die.offset().0;
            if let Some(value) = die.attr_value(DW_AT_GO_RUNTIME_TYPE) {
                let addr = match value {
                    gimli::AttributeValue::Addr(a) => Some(a),
                    other => other.udata_value(),
                };
                // 0 stands for "no descriptor" (at `runtime.types` itself there is none).
                if let Some(addr) = addr.filter(|&a| a != 0) {
                    index.runtime_types.push((addr, at));
                }
            }
            match die.tag() {
                dw::DW_TAG_subprogram => {
                    let Some(value) = die.attr_value(dw::DW_AT_low_pc) else {
                        // An abstract function: what its inlined calls refer to.
                        if die.attr(dw::DW_AT_inline).is_some() {
                            match self.name_in(unit, die, at) {
                                Ok(Some(name)) => index.abstract_functions.push((name, at)),
                                Ok(None) => {}
                                Err(e) => broken.push(e),
                            }
                        }
                        continue;
                    };
                    match self.dwarf.attr_address(unit, value) {
                        Ok(Some(pc)) => index.functions.push(FunctionDie {
                            entry: VirtAddr(pc),
                            die: at,
                            go_minor,
                        }),
                        Ok(None) => {}
                        Err(e) => broken.push(at_offset(at, e)),
                    }
                }
                dw::DW_TAG_structure_type => match self.name_in(unit, die, at) {
                    Ok(Some(name)) => index.structs.push((name, at)),
                    Ok(None) => {}
                    Err(e) => broken.push(e),
                },
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn unit_of(
        &self,
        at: DieRef,
    ) -> Result<(&gimli::Unit<R<'a>>, UnitOffset), BinaryError> {
        let i = self.units.partition_point(|u| u.header.offset().0 <= at);
        let unit = i
            .checked_sub(1)
            .and_then(|i| self.units.get(i))
            .ok_or_else(|| malformed(at, "reference outside every unit"))?;
        let offset = UnitSectionOffset(at)
            .to_unit_offset(&unit.header)
            .ok_or_else(|| malformed(at, "reference outside its unit"))?;
        Ok((unit, offset))
    }

    pub(super) fn die(&self, at: DieRef) -> Result<Die<'a>, BinaryError> {
        let (unit, offset) = self.unit_of(at)?;
        unit.entry(offset).map_err(|e| at_offset(at, e))
    }

    /// The direct children of the DIE at `at`, in order.
    pub(super) fn children(&self, at: DieRef) -> Result<Vec<(DieRef, Die<'a>)>, BinaryError> {
        let (unit, offset) = self.unit_of(at)?;
        let base = unit.header.offset().0;
        // A tree, not a depth-first walk: the list ends at its null entry, so a broken DIE
        // right after it costs nothing here.
        let mut tree = unit
            .entries_tree(Some(offset))
            .map_err(|e| at_offset(at, e))?;
        let root = tree.root().map_err(|e| at_offset(at, e))?;
        let mut children = root.children();
        let mut out = Vec::new();
        while let Some(child) = children.next().map_err(|e| at_offset(at, e))? {
            let die = child.entry();
            out.push((base + die.offset().0, die.clone()));
        }
        Ok(out)
    }

    pub(super) fn name_in(
        &self,
        unit: &gimli::Unit<R<'a>>,
        die: &Die<'a>,
        at: DieRef,
    ) -> Result<Option<String>, BinaryError> {
        match die.attr_value(dw::DW_AT_name) {
            None => Ok(None),
            Some(value) => {
                let s = self
                    .dwarf
                    .attr_string(unit, value)
                    .map_err(|e| at_offset(at, e))?;
                Ok(Some(s.to_string_lossy().into_owned()))
            }
        }
    }

    pub(super) fn name(&self, die: &Die<'a>, at: DieRef) -> Result<Option<String>, BinaryError> {
        let (unit, _) = self.unit_of(at)?;
        self.name_in(unit, die, at)
    }

    /// The DIE an attribute of the DIE at `at` refers to.
    pub(super) fn reference(
        &self,
        at: DieRef,
        die: &Die<'a>,
        attr: DwAt,
    ) -> Result<Option<DieRef>, BinaryError> {
        match die.attr_value(attr) {
            None => Ok(None),
            Some(AttributeValue::UnitRef(offset)) => {
                let (unit, _) = self.unit_of(at)?;
                Ok(Some(unit.header.offset().0 + offset.0))
            }
            Some(AttributeValue::DebugInfoRef(offset)) => Ok(Some(offset.0)),
            Some(_) => Err(malformed(at, &format!("{attr} is not a reference"))),
        }
    }

    pub(super) fn signature(&mut self, f: &FunctionDie) -> Result<Signature, BinaryError> {
        let function = f.die;
        let die = self.die(function)?;
        let mut sig = Signature::default();
        for (at, child) in self.formal_parameters(function, &die)? {
            let name = self.name(&child, at)?.unwrap_or_default();
            let ty = match self.reference(at, &child, dw::DW_AT_type)? {
                Some(t) => self.type_ref(t)?,
                None => return Err(malformed(at, "parameter without a type")),
            };
            let is_result = matches!(
                child.attr_value(dw::DW_AT_variable_parameter),
                Some(AttributeValue::Flag(true))
            );
            let var = Variable { name, ty };
            let list = if is_result {
                &mut sig.results
            } else {
                &mut sig.params
            };
            // The compiler writes a named result that a closure captures twice; Go names are
            // unique in a signature except the blank `_`.
            if var.name != "_" && list.iter().any(|v| v.name == var.name) {
                continue;
            }
            list.push(var);
        }
        // An out-of-line copy of an inlinable function is named only by its abstract origin
        // (`slices.Sort[go.shape.[]string,go.shape.string]`): without the name its dictionary
        // would be missed and every argument read one register early.
        let name = match self.name(&die, function)? {
            Some(name) => name,
            None => match self.reference(function, &die, dw::DW_AT_abstract_origin)? {
                Some(origin) => self.name(&self.die(origin)?, origin)?.unwrap_or_default(),
                None => String::new(),
            },
        };
        // Go 1.27 lists the dictionary itself, typed as its words (`*[6]uintptr`), and in an
        // out-of-line copy of an inlinable function as the copy's own parameter, after the
        // abstract function's: it goes where the ABI passes it. It is the compiler's, never
        // decoded: one opaque type on every version, so no read goes through it.
        let listed = sig.params.iter().position(|p| p.name == DICT_PARAM);
        let position = dictionary_position(&name, f.go_minor);
        if listed.is_some() || position.is_some() {
            let ty = self.dict_type()?;
            let at = position.or(listed).unwrap_or(0);
            if let Some(i) = listed {
                sig.params.remove(i);
            }
            let dict = Variable {
                name: DICT_PARAM.to_owned(),
                ty,
            };
            sig.params.insert(at.min(sig.params.len()), dict);
        }
        Ok(sig)
    }

    /// The parameter and result DIEs of a function, in declaration order. An out-of-line copy
    /// of an inlinable function refers to an abstract function for its parameters, and adds
    /// the ones the abstract function lacks (unnamed results, `~r0`) as its own: those are
    /// put after the parameter that precedes them in the copy.
    pub(super) fn formal_parameters(
        &self,
        function: DieRef,
        die: &Die<'a>,
    ) -> Result<Vec<(DieRef, Die<'a>)>, BinaryError> {
        let is_param = |(_, d): &(DieRef, Die<'a>)| d.tag() == dw::DW_TAG_formal_parameter;
        let own: Vec<_> = self
            .children(function)?
            .into_iter()
            .filter(is_param)
            .collect();
        let Some(origin) = self.reference(function, die, dw::DW_AT_abstract_origin)? else {
            return Ok(own);
        };
        let mut all: Vec<_> = self
            .children(origin)?
            .into_iter()
            .filter(is_param)
            .collect();
        let mut next = 0;
        for (at, child) in own {
            match self.reference(at, &child, dw::DW_AT_abstract_origin)? {
                Some(o) => {
                    if let Some(k) = all.iter().position(|(a, _)| *a == o) {
                        next = k + 1;
                    }
                }
                None => {
                    all.insert(next, (at, child));
                    next += 1;
                }
            }
        }
        Ok(all)
    }

    /// The parameters (not the results) of an abstract function, with their DIEs.
    pub(super) fn abstract_params(
        &mut self,
        function: DieRef,
    ) -> Result<Vec<(DieRef, Variable)>, BinaryError> {
        let mut out = Vec::new();
        for (at, child) in self.children(function)? {
            let is_result = matches!(
                child.attr_value(dw::DW_AT_variable_parameter),
                Some(AttributeValue::Flag(true))
            );
            if child.tag() != dw::DW_TAG_formal_parameter || is_result {
                continue;
            }
            let name = self.name(&child, at)?.unwrap_or_default();
            let Some(ty) = self.reference(at, &child, dw::DW_AT_type)? else {
                return Err(malformed(at, "parameter without a type"));
            };
            let ty = self.type_ref(ty)?;
            out.push((at, Variable { name, ty }));
        }
        Ok(out)
    }
}

/// The name given to the hidden dictionary parameter of shape-instantiated generic code.
pub const DICT_PARAM: &str = ".dict";

/// `17` from a producer string such as `Go cmd/compile go1.17.2; regabi`.
pub(super) fn go_minor_version(producer: &str) -> Option<u32> {
    let rest = &producer[producer.find("go1.")? + 4..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// Where the hidden dictionary parameter goes, for shape-instantiated generic code
/// (`pkg.Map[go.shape.int]`, `pkg.(*Box[go.shape.int]).Get`); DWARF before Go 1.27 does
/// not list it. A
/// generic function takes it first. A method of a generic type took it before the receiver
/// up to Go 1.19 and takes it after the receiver since the unified IR frontend (Go 1.20).
/// Closures inside generic code reach the dictionary through their context instead, and the
/// equality and hash functions the compiler generates for a type (`type:.eq.T[go.shape.int]`,
/// `type..hash.T` before Go 1.21) take only pointers to the values, whatever `T` is.
pub(super) fn dictionary_position(name: &str, go_minor: Option<u32>) -> Option<usize> {
    if name.starts_with("type:.") || name.starts_with("type..") {
        return None;
    }
    let open = name.find('[')?;
    let mut depth = 0usize;
    let mut close = None;
    for (i, c) in name[open..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close?;
    if !name[open..close].contains("go.shape.") {
        return None;
    }
    let rest = &name[close + 1..];
    if rest.is_empty() {
        return Some(0);
    }
    let is_method = rest
        .strip_prefix(").")
        .or_else(|| rest.strip_prefix('.'))
        .is_some_and(|m| !m.contains('.') && !is_closure_name(m));
    if !is_method {
        return None;
    }
    Some(if go_minor.is_some_and(|m| m <= 19) {
        0
    } else {
        1
    })
}

/// Compiler-made function literal names: `func1`, `gowrap2`, `deferwrap1`.
pub(super) fn is_closure_name(name: &str) -> bool {
    ["func", "gowrap", "deferwrap"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_goes_first_in_functions_and_after_the_receiver_since_go_1_20() {
        assert_eq!(
            dictionary_position("main.Map[go.shape.int]", Some(23)),
            Some(0)
        );
        assert_eq!(
            dictionary_position("main.Map[go.shape.int_0]", Some(19)),
            Some(0)
        );
        assert_eq!(
            dictionary_position("main.(*Box[go.shape.int]).Get", Some(21)),
            Some(1)
        );
        assert_eq!(
            dictionary_position("main.Box[go.shape.string].Get", Some(23)),
            Some(1)
        );
        assert_eq!(
            dictionary_position("main.(*Box[go.shape.int_0]).Get", Some(19)),
            Some(0)
        );
        assert_eq!(
            dictionary_position(
                "example.com/a.b/c.Pair[go.shape.[]uint8,go.shape.struct { X int }]",
                Some(22)
            ),
            Some(0)
        );
    }

    #[test]
    fn no_dictionary_for_closures_wrappers_generated_type_functions_or_plain_functions() {
        assert_eq!(
            dictionary_position("main.Map[go.shape.int].func1", Some(23)),
            None
        );
        assert_eq!(
            dictionary_position("main.(*Box[go.shape.int]).Get.func2", Some(23)),
            None
        );
        assert_eq!(dictionary_position("main.Map[int]", Some(23)), None);
        assert_eq!(dictionary_position("main.(*Box[int]).Get", Some(23)), None);
        assert_eq!(dictionary_position("main.main", Some(23)), None);
        assert_eq!(
            dictionary_position(
                "type:.eq.internal/sync.entry[go.shape.interface {},go.shape.interface {}]",
                Some(24)
            ),
            None
        );
        assert_eq!(
            dictionary_position(
                "type:.eq.sync/atomic.Pointer[go.shape.struct { internal/sync.isEntry bool }]",
                Some(26)
            ),
            None
        );
        assert_eq!(
            dictionary_position("type..eq.main.Pair[go.shape.int_0]", Some(19)),
            None
        );
        assert_eq!(dictionary_position("main.Map[go.shape.int", Some(23)), None);
    }

    #[test]
    fn go_version_from_producer() {
        assert_eq!(
            go_minor_version("Go cmd/compile go1.23.5; regabi"),
            Some(23)
        );
        assert_eq!(go_minor_version("Go cmd/compile go1.9"), Some(9));
        assert_eq!(go_minor_version("GNU C17"), None);
    }
}
