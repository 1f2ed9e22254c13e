//! The Go runtime's memory layout as gotrace reads it, per Go release and architecture: where
//! a goroutine's id and stack top sit in `runtime.g`, where `runtime.recovery` finds the stack
//! pointer a recovered goroutine resumes at, an itab's `_type`, and the map implementation's
//! headers (Go ≤ 1.23 `hmap` and buckets; Go ≥ 1.24 Swiss tables). The recipe compiler, the
//! decoder and the BPF program's configuration all read them from here.
//!
//! The table is what a binary without DWARF relies on. Every number in it was read from the
//! DWARF of real binaries built by each toolchain (tests/runtime_offsets.rs checks each one
//! against each installed toolchain) and matches that release's runtime sources
//! (`runtime/runtime2.go`, `runtime/map.go`, `internal/runtime/maps`, `internal/abi`).

use crate::dwarf::DwarfInfo;
use crate::Arch;
use serde::Serialize;

/// The Go releases (minor versions) the table describes: each one checked against a real
/// toolchain's binaries. Go 1.20 is not among them: no 1.20 toolchain to check it with.
pub const TABLE_GO_MINORS: [u32; 8] = [19, 21, 22, 23, 24, 25, 26, 27];

/// Every runtime offset and size gotrace uses for one Go release on one architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RuntimeLayout {
    pub arch: Arch,
    /// The release the table row is for (the nearest one when the binary's is outside the
    /// table and DWARF filled in the rest).
    pub go_minor: u32,
    /// Offsets in `runtime.g` of `stack.hi` (frames are keyed by their distance below it, which
    /// survives stack copies) and of `goid`.
    pub g_stack_hi: u64,
    pub g_goid: u64,
    pub resume_sp: ResumeSp,
    /// Offset of the dynamic type in an itab (`runtime.itab._type`, `internal/abi.ITab.Type`).
    pub itab_type: u64,
    /// Offsets of the words inside a string {ptr, len}, a slice {ptr, len, cap} and an
    /// interface {type or itab, data} value.
    pub string_len: u64,
    pub slice_len: u64,
    pub slice_cap: u64,
    pub iface_data: u64,
    pub maps: MapImpl,
}

/// Where `runtime.recovery(gp)` finds the stack pointer the recovering frame resumes at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "in", rename_all = "snake_case")]
pub enum ResumeSp {
    /// Go ≤ 1.21: `gopanic` leaves it in `gp.sigcode0`.
    SigCode0 { g_offset: u64 },
    /// Go 1.22+: `gp._panic.sp`.
    PanicSp { g_offset: u64, sp_offset: u64 },
}

/// How the runtime lays out a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MapImpl {
    /// Go ≤ 1.23: `runtime.hmap` and its buckets.
    Classic(HmapLayout),
    /// Go ≥ 1.24: `internal/runtime/maps` Swiss tables.
    Swiss(SwissTableLayout),
}

/// `runtime.hmap` {count, flags, B, noverflow, hash0, buckets, oldbuckets, nevacuate, extra}
/// and its buckets {tophash [8]uint8, keys [8]K, elems [8]V, overflow *bmap}.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HmapLayout {
    pub size: u64,
    pub count: u64,
    /// `B`: log2 of the number of buckets (one byte).
    pub log2_buckets: u64,
    pub buckets: u64,
    pub oldbuckets: u64,
    /// Slots per bucket; the bucket starts with one tophash byte per slot.
    pub bucket_slots: u64,
    /// A slot is full when its tophash is at least this (smaller: empty or evacuated).
    pub min_top_hash: u8,
    /// Keys and values larger than this are stored by pointer.
    pub max_inline: u64,
}

impl HmapLayout {
    /// Bytes of one bucket: the tophash bytes, the keys, the values, the overflow pointer.
    pub fn bucket_size(&self, key_size: u64, value_size: u64) -> u64 {
        let n = self.bucket_slots;
        (n + n * key_size + n * value_size).div_ceil(8) * 8 + 8
    }

    /// Offsets in a bucket of slot `slot`'s key and value.
    pub fn slot(&self, key_size: u64, value_size: u64, slot: u64) -> (u64, u64) {
        let n = self.bucket_slots;
        (n + slot * key_size, n + n * key_size + slot * value_size)
    }
}

/// `internal/runtime/maps`: `Map` {used, seed, dirPtr, dirLen, …}; `table` {…, groups
/// {data, lengthMask}}; a group {ctrl uint64, slots [8]{key, elem}}.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SwissTableLayout {
    pub header_size: u64,
    /// Offsets in `Map` of `used` (the length), `dirPtr` and `dirLen`.
    pub used: u64,
    pub dir_ptr: u64,
    pub dir_len: u64,
    pub table_size: u64,
    /// Offsets in `table` of `groups.data` and `groups.lengthMask`.
    pub groups_data: u64,
    pub groups_mask: u64,
    /// Offset in a group of its control bytes (one per slot), and of its first slot.
    pub ctrl: u64,
    pub slots: u64,
    pub group_slots: u64,
    /// A control byte with these bits set is empty or deleted; otherwise its slot is full.
    pub ctrl_empty: u8,
    /// Keys and values larger than this are stored by pointer.
    pub max_inline: u64,
}

const HMAP: HmapLayout = HmapLayout {
    size: 48,
    count: 0,
    log2_buckets: 9,
    buckets: 16,
    oldbuckets: 24,
    bucket_slots: 8,
    min_top_hash: 5,
    max_inline: 128,
};

const SWISS: SwissTableLayout = SwissTableLayout {
    header_size: 48,
    used: 0,
    dir_ptr: 16,
    dir_len: 24,
    table_size: 32,
    groups_data: 16,
    groups_mask: 24,
    ctrl: 0,
    slots: 8,
    group_slots: 8,
    ctrl_empty: 0x80,
    max_inline: 128,
};

/// Why there is no layout for a binary.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("gotrace knows the Go runtime's layout on amd64 only, not on {0:?}")]
    Arch(Arch),
    #[error(
        "the binary records no Go version, and has no DWARF to read the runtime's layout from"
    )]
    NoVersion,
    #[error("Go 1.{0} is outside the releases whose runtime layout gotrace knows (1.19, 1.21-1.27), and the binary has no DWARF to read it from")]
    UnknownRelease(u32),
}

impl RuntimeLayout {
    /// The table's row for Go 1.`minor` on `arch`.
    pub fn for_go(arch: Arch, minor: u32) -> Result<RuntimeLayout, LayoutError> {
        if arch != Arch::Amd64 {
            return Err(LayoutError::Arch(arch));
        }
        if !TABLE_GO_MINORS.contains(&minor) {
            return Err(LayoutError::UnknownRelease(minor));
        }
        // Go 1.23 added g.syscallbp before goid; Go 1.25 dropped gobuf.ret from g.sched.
        let g_goid = match minor {
            23 | 24 => 160,
            _ => 152,
        };
        let resume_sp = match minor {
            19 => ResumeSp::SigCode0 { g_offset: 272 },
            21 => ResumeSp::SigCode0 { g_offset: 248 },
            26 => ResumeSp::PanicSp {
                g_offset: 32,
                sp_offset: 40,
            },
            _ => ResumeSp::PanicSp {
                g_offset: 32,
                sp_offset: 48,
            },
        };
        Ok(RuntimeLayout {
            arch,
            go_minor: minor,
            g_stack_hi: 8,
            g_goid,
            resume_sp,
            itab_type: 8,
            string_len: 8,
            slice_len: 8,
            slice_cap: 16,
            iface_data: 8,
            maps: if minor <= 23 {
                MapImpl::Classic(HMAP)
            } else {
                MapImpl::Swiss(SWISS)
            },
        })
    }

    /// The layout of a binary built by Go 1.`minor` (when known) with `dwarf` (when present).
    ///
    /// Where DWARF describes a field the table has, DWARF wins: it is this binary's own
    /// description, and the design rule is that the binary is right. Each disagreement is
    /// returned so that it is shown rather than silently absorbed (the tests require none on
    /// every installed toolchain: the table is what binaries without DWARF get). A release
    /// outside the table is read from DWARF over the nearest row, and refused without DWARF.
    pub fn for_binary(
        arch: Arch,
        minor: Option<u32>,
        dwarf: Option<&DwarfInfo>,
    ) -> Result<(RuntimeLayout, Vec<Check>), LayoutError> {
        let newest = TABLE_GO_MINORS[TABLE_GO_MINORS.len() - 1];
        let row = match (minor, dwarf) {
            (Some(m), _) if TABLE_GO_MINORS.contains(&m) => m,
            (Some(m), None) => return Err(LayoutError::UnknownRelease(m)),
            (None, None) => return Err(LayoutError::NoVersion),
            // The nearest release, the newer one of two as near.
            (Some(m), Some(_)) => TABLE_GO_MINORS
                .into_iter()
                .min_by_key(|&r| (r.abs_diff(m), std::cmp::Reverse(r)))
                .unwrap_or(newest),
            (None, Some(_)) => newest,
        };
        let mut layout = RuntimeLayout::for_go(arch, row)?;
        let disagreements = match dwarf {
            Some(d) => layout.apply_dwarf(d),
            None => Vec::new(),
        };
        let disagreements = disagreements.into_iter().filter(Check::disagrees).collect();
        Ok((layout, disagreements))
    }

    /// Replaces every field `dwarf` describes by DWARF's value. Returns each field looked up,
    /// with the table's value and DWARF's (`None`: DWARF does not describe it).
    pub fn apply_dwarf(&mut self, dwarf: &DwarfInfo) -> Vec<Check> {
        let mut out = Vec::new();
        let mut take = |what: &'static str, field: &mut u64, found: Option<u64>| {
            out.push(Check {
                what,
                table: *field,
                dwarf: found,
            });
            *field = found.unwrap_or(*field);
        };
        let member = |s: &str, m: &str| dwarf.member_offset(s, m);
        let size = |s: &str| dwarf.struct_type(s).map(|id| dwarf.types().get(id).size);
        let stack_hi = member("runtime.g", "stack")
            .and_then(|stack| Some(stack + member("runtime.stack", "hi")?));
        take("runtime.g.stack.hi", &mut self.g_stack_hi, stack_hi);
        take(
            "runtime.g.goid",
            &mut self.g_goid,
            member("runtime.g", "goid"),
        );
        match &mut self.resume_sp {
            ResumeSp::SigCode0 { g_offset } => {
                take(
                    "runtime.g.sigcode0",
                    g_offset,
                    member("runtime.g", "sigcode0"),
                );
            }
            ResumeSp::PanicSp {
                g_offset,
                sp_offset,
            } => {
                take("runtime.g._panic", g_offset, member("runtime.g", "_panic"));
                take(
                    "runtime._panic.sp",
                    sp_offset,
                    member("runtime._panic", "sp"),
                );
            }
        }
        let itab = member("runtime.itab", "_type").or_else(|| member("internal/abi.ITab", "Type"));
        take("itab._type", &mut self.itab_type, itab);
        match &mut self.maps {
            MapImpl::Classic(h) => {
                take("runtime.hmap size", &mut h.size, size("runtime.hmap"));
                take(
                    "runtime.hmap.count",
                    &mut h.count,
                    member("runtime.hmap", "count"),
                );
                take(
                    "runtime.hmap.B",
                    &mut h.log2_buckets,
                    member("runtime.hmap", "B"),
                );
                take(
                    "runtime.hmap.buckets",
                    &mut h.buckets,
                    member("runtime.hmap", "buckets"),
                );
                let old = member("runtime.hmap", "oldbuckets");
                take("runtime.hmap.oldbuckets", &mut h.oldbuckets, old);
            }
            MapImpl::Swiss(s) => {
                const MAP: &str = "internal/runtime/maps.Map";
                const TABLE: &str = "internal/runtime/maps.table";
                const GROUPS: &str = "internal/runtime/maps.groupsReference";
                take("maps.Map size", &mut s.header_size, size(MAP));
                take("maps.Map.used", &mut s.used, member(MAP, "used"));
                take("maps.Map.dirPtr", &mut s.dir_ptr, member(MAP, "dirPtr"));
                take("maps.Map.dirLen", &mut s.dir_len, member(MAP, "dirLen"));
                take("maps.table size", &mut s.table_size, size(TABLE));
                let groups = member(TABLE, "groups");
                let at = |m: &str| Some(groups? + member(GROUPS, m)?);
                take("maps.table.groups.data", &mut s.groups_data, at("data"));
                let mask = at("lengthMask");
                take("maps.table.groups.lengthMask", &mut s.groups_mask, mask);
            }
        }
        out
    }

    /// Whether maps are Go ≤ 1.23's hmap.
    pub fn classic_maps(&self) -> bool {
        matches!(self.maps, MapImpl::Classic(_))
    }

    /// The hmap layout (the table's, also for a binary with Swiss maps: a map whose DWARF
    /// says it has buckets is read with it).
    pub fn hmap(&self) -> HmapLayout {
        match self.maps {
            MapImpl::Classic(h) => h,
            MapImpl::Swiss(_) => HMAP,
        }
    }

    /// The Swiss-table layout's fixed parts (the table's, also for a binary with classic maps).
    pub fn swiss(&self) -> SwissTableLayout {
        match self.maps {
            MapImpl::Swiss(s) => s,
            MapImpl::Classic(_) => SWISS,
        }
    }
}

/// One field's offset (or a struct's size) in the table and in a binary's DWARF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub what: &'static str,
    pub table: u64,
    pub dwarf: Option<u64>,
}

impl Check {
    pub fn disagrees(&self) -> bool {
        self.dwarf.is_some_and(|d| d != self.table)
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.dwarf {
            Some(d) => write!(
                f,
                "{} is {d} in this binary's DWARF but {} in gotrace's table for its Go release (DWARF used)",
                self.what, self.table
            ),
            None => write!(f, "{} is not in this binary's DWARF", self.what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_in_the_table_has_a_row_and_none_outside() {
        for minor in TABLE_GO_MINORS {
            let layout = RuntimeLayout::for_go(Arch::Amd64, minor).expect("a row");
            assert_eq!(layout.classic_maps(), minor <= 23, "Go 1.{minor}");
            assert!(matches!(layout.resume_sp, ResumeSp::SigCode0 { .. }) == (minor <= 21));
        }
        assert!(RuntimeLayout::for_go(Arch::Amd64, 18).is_err());
        assert!(RuntimeLayout::for_go(Arch::Amd64, 20).is_err());
        assert!(RuntimeLayout::for_go(Arch::Amd64, 28).is_err());
        assert!(matches!(
            RuntimeLayout::for_go(Arch::Arm64, 24),
            Err(LayoutError::Arch(Arch::Arm64))
        ));
    }

    #[test]
    fn without_dwarf_a_release_outside_the_table_is_refused() {
        assert!(matches!(
            RuntimeLayout::for_binary(Arch::Amd64, Some(28), None),
            Err(LayoutError::UnknownRelease(28))
        ));
        assert!(matches!(
            RuntimeLayout::for_binary(Arch::Amd64, None, None),
            Err(LayoutError::NoVersion)
        ));
        let (layout, disagreements) =
            RuntimeLayout::for_binary(Arch::Amd64, Some(24), None).expect("in the table");
        assert_eq!((layout.g_goid, layout.g_stack_hi), (160, 8));
        assert!(disagreements.is_empty());
    }

    #[test]
    fn hmap_buckets() {
        // map[string]int: 8 tophash bytes, 8 × 16 key bytes, 8 × 8 value bytes, overflow.
        assert_eq!(HMAP.bucket_size(16, 8), 8 + 128 + 64 + 8);
        assert_eq!(HMAP.slot(16, 8, 2), (8 + 32, 8 + 128 + 16));
        // map[uint8]bool: 8 + 8 + 8 bytes padded to 8, then the overflow pointer.
        assert_eq!(HMAP.bucket_size(1, 1), 24 + 8);
    }
}
