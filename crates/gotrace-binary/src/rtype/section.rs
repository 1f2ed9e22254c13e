//! Where a module's type data is (its module data's words, by Go release) and the
//! descriptors it lists: the roots of the walk.

use super::descriptor::{
    element, kind, Reader, METHOD_SIZE, TFLAG_UNCOMMON, TYPE_SIZE, UNCOMMON_SIZE,
};
use crate::moduledata::Words;

/// Where the module's type data is, from its module data record.
#[derive(Clone, Debug)]
pub(crate) struct TypeSection {
    pub(super) types: u64,
    pub(super) etypes: u64,
    /// `(vaddr, end, baseaddr)` of each text section when there are several.
    pub(super) text_sections: Vec<(u64, u64, u64)>,
    pub(super) text: u64,
    pub(super) roots: Roots,
    /// Bytes of `abi.MapType` (it grew with Swiss tables in 1.24 and again in 1.27).
    pub(super) map_type_size: u64,
}

#[derive(Clone, Debug)]
pub(super) enum Roots {
    /// `typelinks []int32` (offsets from `types`) and `itablinks []*itab`.
    Links {
        typelinks: (u64, u64),
        itablinks: (u64, u64),
    },
    /// Go 1.27: descriptors back to back, itabs back to back.
    Packed {
        typedesclen: u64,
        itaboffset: u64,
        itabsize: u64,
    },
}

impl TypeSection {
    /// Where the type data starts: what descriptors' offsets count from.
    pub(crate) fn types(&self) -> u64 {
        self.types
    }
}

/// Reads the type section's words of the module data at `at`, for Go `1.minor`.
pub(crate) fn section(
    words: &Words<'_>,
    at: u64,
    text: u64,
    minor: u32,
    swiss_maps: bool,
) -> Result<TypeSection, String> {
    let word = |i: u64| {
        words.at(at + 8 * i).ok_or_else(|| {
            format!(
                "module data word {i} at {:#x} is not in the file",
                at + 8 * i
            )
        })
    };
    let (types_w, etypes_w, textsect_w) = match minor {
        19 => (35, 36, 39),
        20..=26 => (37, 38, if minor == 26 { 42 } else { 41 }),
        27 => (37, 39, 45),
        _ => {
            return Err(format!(
                "the module data layout of Go 1.{minor} is not known"
            ))
        }
    };
    let types = word(types_w)?;
    let etypes = word(etypes_w)?;
    if types == 0 || etypes <= types {
        return Err(format!(
            "the module data's type range [{types:#x}, {etypes:#x}) is empty"
        ));
    }
    let roots = match minor {
        27 => Roots::Packed {
            typedesclen: word(38)?,
            itaboffset: word(40)?,
            itabsize: word(41)?,
        },
        _ => {
            let links = textsect_w + 3;
            Roots::Links {
                typelinks: (word(links)?, word(links + 1)?),
                itablinks: (word(links + 3)?, word(links + 4)?),
            }
        }
    };
    let (sect_ptr, sect_len) = (word(textsect_w)?, word(textsect_w + 1)?);
    if sect_len > 256 {
        return Err(format!(
            "{sect_len} text sections: not a module data record"
        ));
    }
    let mut text_sections = Vec::new();
    if sect_len > 1 {
        for i in 0..sect_len {
            let base = element(sect_ptr, 24, i)?;
            let w = |k: u64| {
                words
                    .at(base + 8 * k)
                    .ok_or_else(|| format!("text section entry at {base:#x} is not in the file"))
            };
            text_sections.push((w(0)?, w(1)?, w(2)?));
        }
    }
    let map_type_size = match minor {
        ..=23 => 88,
        24..=26 if !swiss_maps => 88,
        24..=26 => 112,
        _ => 136,
    };
    Ok(TypeSection {
        types,
        etypes,
        text_sections,
        text,
        roots,
        map_type_size,
    })
}

impl Reader<'_> {
    /// Bytes a Go 1.27 descriptor takes (`abi.Type.DescriptorSize`).
    pub(super) fn descriptor_size(&self, at: u64) -> Result<u64, String> {
        let tflag = self.u8(at + 20)?;
        let k = self.u8(at + 23)? & kind::MASK;
        let body = at + TYPE_SIZE;
        let extra = match k {
            kind::FUNC => {
                let n = u64::from(self.u16(body)?) + u64::from(self.u16(body + 2)? & 0x7fff);
                8 * n
            }
            kind::INTERFACE => 8 * self.slice(body + 8)?.1,
            kind::STRUCT => 24 * self.slice(body + 8)?.1,
            kind::BOOL..=kind::UNSAFE_POINTER => 0,
            other => return Err(format!("a descriptor of kind {other} at {at:#x}")),
        };
        let mut size = self.kind_size(k) + extra;
        if tflag & TFLAG_UNCOMMON != 0 {
            let u = at + self.kind_size(k);
            size += UNCOMMON_SIZE + METHOD_SIZE * u64::from(self.u16(u + 4)?);
        }
        Ok(size)
    }

    /// The descriptors the module lists, and the concrete type of each itab.
    pub(super) fn roots(&self) -> Result<Vec<u64>, String> {
        let s = self.section;
        let mut roots = Vec::new();
        match s.roots {
            Roots::Links {
                typelinks: (ptr, len),
                itablinks: (iptr, ilen),
            } => {
                if len > 1 << 24 || ilen > 1 << 24 {
                    return Err(format!("{len} typelinks, {ilen} itablinks"));
                }
                for i in 0..len {
                    if let Some(t) = self.offset(self.u32(element(ptr, 4, i)?)?)? {
                        roots.push(t);
                    }
                }
                for i in 0..ilen {
                    let itab = self.word(element(iptr, 8, i)?)?;
                    roots.extend(self.type_ptr(itab + 8)?);
                }
            }
            Roots::Packed {
                typedesclen,
                itaboffset,
                itabsize,
            } => {
                let end = s.types.checked_add(typedesclen).ok_or("typedesclen")?;
                let mut at = s.types + 8;
                while at < end {
                    at = at.next_multiple_of(8);
                    roots.push(at);
                    at += self.descriptor_size(at)?;
                }
                let mut at = s.types.checked_add(itaboffset).ok_or("itaboffset")?;
                let end = at.checked_add(itabsize).ok_or("itabsize")?;
                while at < end {
                    let inter = self.type_ptr(at)?.ok_or("an itab without an interface")?;
                    roots.extend(self.type_ptr(at + 8)?);
                    let methods = self.slice(inter + TYPE_SIZE + 8)?.1;
                    let fun0 = self.word(at + 24)?;
                    at += 32
                        + if fun0 == 0 {
                            0
                        } else {
                            8 * methods.saturating_sub(1)
                        };
                }
            }
        }
        Ok(roots)
    }
}
