//! Program counters → Go source frames (function, file, line), inlined calls expanded, the way
//! the runtime's own tracebacks do it (`runtime/symtab.go` `funcline1`, `symtabinl.go`): from
//! `.gopclntab` alone, so it works on stripped binaries.

use super::record::{pc_value_at, FuncRecord};
use super::{malformed, RawTable, Reader};
use crate::elf::ElfImage;
use crate::inline::{InlineTree, FUNCDATA_INL_TREE, MAX_NESTING, PCDATA_INL_TREE_INDEX};
use crate::{BinaryError, Function, VirtAddr};

/// One frame of a call stack in source terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFrame {
    pub function: String,
    /// `?` when the table names no file for the pc.
    pub file: String,
    /// 0 when the table gives no line for the pc.
    pub line: u32,
    /// A call the compiler inlined: it has no frame of its own on the machine stack.
    pub inlined: bool,
    /// Code the compiler generated (a `go` statement's or a method's wrapper), which Go's own
    /// tracebacks leave out.
    pub wrapper: bool,
}

/// Looks program counters up in a Go 1.18+ function table.
pub struct Symbolizer<'a> {
    table: RawTable<'a>,
    /// The table's functions in its order (index = record number).
    functions: Vec<Function>,
    pctab: Reader<'a>,
    quantum: u8,
    elf: &'a ElfImage,
    /// The runtime's `gofunc`, which funcdata offsets count from.
    gofunc: u64,
    /// `FuncIDWrapper` in this binary's Go release (`None`: not known).
    wrapper_id: Option<u8>,
}

impl<'a> Symbolizer<'a> {
    pub(crate) fn new(
        table: RawTable<'a>,
        functions: Vec<Function>,
        quantum: u8,
        elf: &'a ElfImage,
        gofunc: u64,
        wrapper_id: Option<u8>,
    ) -> Result<Self, BinaryError> {
        if InlineTree::node_size(table.magic).is_none() {
            return Err(malformed(0, "stacks need a Go 1.18+ function table"));
        }
        let r = Reader { data: table.data };
        let pctab_len = (table.data.len() as u64).saturating_sub(table.pctab);
        let pctab = Reader {
            data: r.bytes(table.pctab, pctab_len, "pc-value tables")?,
        };
        Ok(Symbolizer {
            table,
            functions,
            pctab,
            quantum,
            elf,
            gofunc,
            wrapper_id,
        })
    }

    /// The frames at `pc` (a link-time address), innermost first: the calls inlined there,
    /// then the function whose code it is. Empty when no function holds `pc`.
    pub fn frames(&self, pc: VirtAddr) -> Result<Vec<SourceFrame>, BinaryError> {
        let Some((i, function)) = self.function_at(pc) else {
            return Ok(Vec::new());
        };
        let Some(record) = FuncRecord::nth(&self.table, i as u64)? else {
            return Ok(Vec::new());
        };
        let entry = function.entry.0;
        let mut at = pc.0;
        let mut frames = Vec::new();
        if let Some(tree) = self.inline_tree(&record, entry)? {
            let (index_table, tree) = tree;
            for _ in 0..MAX_NESTING {
                let k = self.value(index_table, entry, at)?.unwrap_or(-1);
                if k < 0 {
                    break;
                }
                let node = tree.node(k)?;
                let mut frame = self.frame(&record, self.name(node.name_off)?, entry, at, true)?;
                frame.wrapper = Some(node.func_id) == self.wrapper_id;
                frames.push(frame);
                at = entry + node.parent_pc;
            }
        }
        let name = self.name(record.name_off()?)?;
        let mut frame = self.frame(&record, name, entry, at, false)?;
        frame.wrapper = Some(record.func_id()?) == self.wrapper_id;
        frames.push(frame);
        Ok(frames)
    }

    /// How far SP is below its value at the function's entry, at `pc` (`pcsp`); `None` when
    /// no function or table covers `pc`.
    pub fn sp_delta(&self, pc: VirtAddr) -> Result<Option<u64>, BinaryError> {
        let Some((i, function)) = self.function_at(pc) else {
            return Ok(None);
        };
        let Some(record) = FuncRecord::nth(&self.table, i as u64)? else {
            return Ok(None);
        };
        let pcsp = record.pcsp()?;
        if pcsp == 0 {
            return Ok(None);
        }
        let v = self.value(pcsp, function.entry.0, pc.0)?;
        Ok(v.and_then(|v| u64::try_from(v).ok()))
    }

    fn function_at(&self, pc: VirtAddr) -> Option<(usize, &Function)> {
        let i = self
            .functions
            .partition_point(|f| f.entry <= pc)
            .checked_sub(1)?;
        let f = &self.functions[i];
        (pc < f.end).then_some((i, f))
    }

    /// The function's `PCDATA_InlTreeIndex` table and inline tree, if it inlined anything.
    fn inline_tree(
        &self,
        record: &FuncRecord<'_>,
        entry: u64,
    ) -> Result<Option<(u64, InlineTree<'a>)>, BinaryError> {
        let (Some(index_table), Some(tree_off)) = (
            record.pcdata(PCDATA_INL_TREE_INDEX)?,
            record.funcdata(FUNCDATA_INL_TREE)?,
        ) else {
            return Ok(None);
        };
        let nodes = super::record::pc_values(&self.pctab, index_table, entry, self.quantum)?
            .iter()
            .map(|r| r.2 + 1)
            .max()
            .unwrap_or(0)
            .max(0) as u64;
        let size = InlineTree::node_size(self.table.magic).unwrap_or(16);
        let at = self.gofunc.checked_add(tree_off).map(VirtAddr);
        let tree = at.and_then(|at| self.elf.bytes_at(at, nodes * size).ok());
        let tree = tree.ok_or_else(|| {
            malformed(
                record.at,
                format!("the inline tree of the function at {entry:#x} lies outside the image"),
            )
        })?;
        Ok(Some((index_table, InlineTree::new(tree, self.table.magic))))
    }

    fn value(&self, table: u64, entry: u64, pc: u64) -> Result<Option<i64>, BinaryError> {
        pc_value_at(&self.pctab, table, entry, self.quantum, pc)
    }

    fn frame(
        &self,
        record: &FuncRecord<'_>,
        function: String,
        entry: u64,
        pc: u64,
        inlined: bool,
    ) -> Result<SourceFrame, BinaryError> {
        let line = match record.pcln()? {
            0 => None,
            t => self.value(t, entry, pc)?,
        };
        let file = match record.pcfile()? {
            0 => None,
            t => self.value(t, entry, pc)?,
        };
        let file = match file {
            Some(n) if n >= 0 => self.file_name(record.cu_offset()? + n as u64)?,
            _ => None,
        };
        Ok(SourceFrame {
            function,
            file: file.unwrap_or_else(|| "?".to_owned()),
            line: line.and_then(|l| u32::try_from(l).ok()).unwrap_or(0),
            inlined,
            wrapper: false,
        })
    }

    /// File `n` of `cutab`: an offset into `filetab` (`u32::MAX`: no file).
    fn file_name(&self, n: u64) -> Result<Option<String>, BinaryError> {
        let r = Reader {
            data: self.table.data,
        };
        let (cutab, filetab) = self.table.files;
        let off = r.u32(cutab + 4 * n)?;
        if off == u32::MAX {
            return Ok(None);
        }
        r.c_string(filetab + u64::from(off), None).map(Some)
    }

    fn name(&self, off: u64) -> Result<String, BinaryError> {
        let r = Reader {
            data: self.table.data,
        };
        let base = self.table.names.map_or(0, |(start, _)| start);
        r.c_string(base + off, self.table.names)
    }
}
