//! Maps decoded from what the probe captured: Go <= 1.23's hmap buckets and Go >= 1.24's
//! Swiss tables, following the layouts the recipe compiler read them by.

use crate::memory::Read;
use crate::{read_uint, Decoder, Memory, Missing, Value};
use gotrace_binary::types::TypeId;
use gotrace_plan::recipe::{
    map_layout, map_slots_shown, swiss_entries_followed, MapLayout, SwissLayout, MAP_BUCKETS_READ,
};

impl Decoder<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn map(
        &self,
        map_type: TypeId,
        type_name: String,
        key: TypeId,
        value: TypeId,
        addr: u64,
        memory: &Memory<'_>,
        depth: u32,
    ) -> Value {
        let (len, entries, entries_missing) = if addr == 0 {
            (Ok(0), Vec::new(), None)
        } else if depth == 0 {
            (Err(Missing::Depth), Vec::new(), None)
        } else {
            match map_layout(self.types, map_type, &self.plan.layout) {
                MapLayout::Classic => self.classic_map(key, value, addr, memory, depth),
                MapLayout::Swiss(layout) => {
                    self.swiss_map(&layout, key, value, addr, memory, depth)
                }
                MapLayout::Unknown => (Err(Missing::MapLayout), Vec::new(), None),
            }
        };
        Value::Map {
            type_name,
            addr,
            len,
            entries,
            entries_missing,
        }
    }

    /// Go ≤ 1.23: the hmap header and the first buckets.
    fn classic_map(
        &self,
        key: TypeId,
        value: TypeId,
        addr: u64,
        memory: &Memory<'_>,
        depth: u32,
    ) -> MapParts {
        let hmap = self.plan.layout.hmap();
        let header = match map_header(memory, addr, hmap.size as usize) {
            Ok(h) => h,
            Err(parts) => return parts,
        };
        let mut entries = Vec::new();
        let (key_size, value_size) = (self.types.get(key).size, self.types.get(value).size);
        let bucket_size = hmap.bucket_size(key_size, value_size);
        let buckets = read_uint(header, hmap.buckets as usize, 8);
        let log2_buckets = read_uint(header, hmap.log2_buckets as usize, 1);
        let in_use = 1u64
            .checked_shl(log2_buckets as u32)
            .unwrap_or(u64::MAX)
            .min(MAP_BUCKETS_READ);
        let slots = map_slots_shown(self.plan.limits, &hmap);
        // A growing map's old buckets hold the entries not yet evacuated (their tophash is
        // still full); what those entries point at is not followed.
        let old = read_uint(header, hmap.oldbuckets as usize, 8);
        let old_in_use = if old == 0 { 0 } else { MAP_BUCKETS_READ };
        let new = (0..in_use).map(|b| (buckets + b * bucket_size, true));
        let olds = (0..old_in_use).map(|b| (old + b * bucket_size, false));
        for (at, followed) in new.chain(olds) {
            let Read::Bytes(bucket) = memory.read(at, bucket_size as usize) else {
                continue;
            };
            for slot in 0..slots {
                // Smaller tophash values mark empty or evacuated slots.
                let top = bucket.get(slot as usize).copied().unwrap_or(0);
                if top < hmap.min_top_hash || entries.len() >= self.plan.limits.elems as usize {
                    continue;
                }
                let (k_at, v_at) = hmap.slot(key_size, value_size, slot);
                let part = |at: u64| bucket.get(at as usize..).unwrap_or(&[]);
                let k = self.value(key, part(k_at), memory, depth - 1);
                let v = self.value(value, part(v_at), memory, depth - 1);
                let unread = [&k, &v]
                    .iter()
                    .any(|x| x.unavailable_part() == Some(Missing::Budget));
                if followed || !unread {
                    entries.push((k, v));
                }
            }
        }
        let len = read_uint(header, hmap.count as usize, 8);
        // Every entry sits in buckets past the ones read: say so, never show an empty map.
        let missing = (entries.is_empty() && len > 0).then_some(Missing::Budget);
        (Ok(len), entries, missing)
    }

    /// Go ≥ 1.24 (Swiss tables): the length from the `Map` header; entries from a small
    /// map's one group, or from the first groups of a large map's first table — the slots
    /// whose control byte says full (high bit clear; 0x80 empty, 0xfe deleted), in the order
    /// the probe gathered them. Fewer than min(len, --elems) entries say why.
    fn swiss_map(
        &self,
        layout: &SwissLayout,
        key: TypeId,
        value: TypeId,
        addr: u64,
        memory: &Memory<'_>,
        depth: u32,
    ) -> MapParts {
        let shared = &layout.shared;
        let header = match map_header(memory, addr, shared.header_size as usize) {
            Ok(h) => h,
            Err(parts) => return parts,
        };
        let len = read_uint(header, shared.used as usize, 8);
        let mut entries = Vec::new();
        if len == 0 {
            return (Ok(0), entries, None);
        }
        let dir_ptr = read_uint(header, shared.dir_ptr as usize, 8);
        let dir_len = read_uint(header, shared.dir_len as usize, 8) as i64;
        let group_size = layout.group_size as usize;
        let groups = if dir_len <= 0 {
            memory.read(dir_ptr, group_size)
        } else {
            let table = match memory.read(dir_ptr, 8) {
                Read::Bytes(d) => memory.read(read_uint(d, 0, 8), shared.table_size as usize),
                other => other,
            };
            match table {
                Read::Bytes(t) => {
                    let data = read_uint(t, shared.groups_data as usize, 8);
                    let count = read_uint(t, shared.groups_mask as usize, 8).saturating_add(1);
                    memory.read_prefix(data, count.saturating_mul(layout.group_size))
                }
                other => other,
            }
        };
        let groups = match groups {
            Read::Bytes(g) => g,
            Read::Fault => return (Ok(len), entries, Some(Missing::Unreadable)),
            Read::Absent => return (Ok(len), entries, Some(Missing::Budget)),
        };
        let (key_size, value_size) = (self.types.get(key).size, self.types.get(value).size);
        let limits = self.plan.limits;
        let followed = swiss_entries_followed(self.types, limits, layout, key, value);
        let wanted = len.min(u64::from(limits.elems));
        let full = groups.chunks_exact(group_size).flat_map(|group| {
            (0..shared.group_slots)
                .filter(move |&slot| {
                    // A slot past the bytes read counts as empty.
                    group
                        .get((shared.ctrl + slot) as usize)
                        .is_some_and(|ctrl| ctrl & shared.ctrl_empty == 0)
                })
                .map(move |slot| (group, slot))
        });
        for (n, (group, slot)) in full.enumerate() {
            if entries.len() as u64 >= wanted {
                break;
            }
            let k = self.slot_value(key, key_size, &layout.key, slot, group, memory, depth);
            let v = self.slot_value(value, value_size, &layout.elem, slot, group, memory, depth);
            // The first `followed` full slots are the ones the probe gathered and followed:
            // shown, with what it could not read marked. Past them, only entries needing no
            // reads of their own.
            let unread = [&k, &v]
                .iter()
                .any(|x| x.unavailable_part() == Some(Missing::Budget));
            if !unread || (n as u64) < followed {
                entries.push((k, v));
            }
        }
        // Groups or tables not read, or entries not followed: fewer than --elems shown.
        let missing = (entries.len() as u64) < wanted;
        (Ok(len), entries, missing.then_some(Missing::Budget))
    }

    /// The key or value in one slot of a Swiss-table group, read through its pointer when
    /// the map stores it indirectly.
    #[allow(clippy::too_many_arguments)]
    fn slot_value(
        &self,
        ty: TypeId,
        size: u64,
        part: &gotrace_plan::recipe::SlotPart,
        slot: u64,
        group: &[u8],
        memory: &Memory<'_>,
        depth: u32,
    ) -> Value {
        let at = part.at(slot) as usize;
        let image = group.get(at..).unwrap_or(&[]);
        if !part.indirect {
            return self.value(ty, image, memory, depth - 1);
        }
        match memory.read(read_uint(image, 0, 8), size as usize) {
            Read::Bytes(bytes) => self.value(ty, bytes, memory, depth - 1),
            Read::Fault => Value::Unavailable(Missing::Unreadable),
            Read::Absent => Value::Unavailable(Missing::Budget),
        }
    }
}

/// A map's length, the entries shown, and why entries meant to be read were not.
type MapParts = (Result<u64, Missing>, Vec<(Value, Value)>, Option<Missing>);

/// A map's header, or what to show when it was not read.
fn map_header<'m>(memory: &Memory<'m>, addr: u64, size: usize) -> Result<&'m [u8], MapParts> {
    match memory.read(addr, size) {
        Read::Bytes(h) => Ok(h),
        Read::Fault => Err((Err(Missing::Unreadable), Vec::new(), None)),
        Read::Absent => Err((Err(Missing::Budget), Vec::new(), None)),
    }
}
