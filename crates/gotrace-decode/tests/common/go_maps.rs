//! Maps laid out as the Go runtime lays them out: classic hmaps and buckets (Go ≤ 1.23) and
//! Swiss tables (Go ≥ 1.24, with the offsets this binary's DWARF gives).

use super::go_memory::{put, Layout, G};
use gotrace_binary::types::TypeId;
use gotrace_decode::Value;
use gotrace_plan::recipe::{swiss_groups_read, SwissLayout};

impl Layout<'_> {
    /// runtime.hmap {count, flags, B, noverflow, hash0, buckets, oldbuckets, nevacuate,
    /// extra} and buckets {tophash [8]uint8, keys [8]K, elems [8]V, overflow}: entries fill
    /// the buckets in order, every third slot left empty.
    pub(super) fn classic_map(
        &mut self,
        key: TypeId,
        value: TypeId,
        entries: &[(G, G)],
        depth: u32,
    ) -> (u64, Vec<(Value, Value)>) {
        let (ks, vs) = (self.types.get(key).size, self.types.get(value).size);
        let bucket = self.go.hmap().bucket_size(ks, vs) as usize;
        let first = 8 * self.empty_first;
        let slots: Vec<usize> = (first..)
            .filter(|s| s % 3 != 2)
            .take(entries.len())
            .collect();
        let buckets = slots.last().map_or(1, |s| s / 8 + 1).next_power_of_two();
        let mut array = vec![0u8; bucket * buckets];
        let mut shown = Vec::new();
        for ((k, v), &slot) in entries.iter().zip(&slots) {
            let (b, s) = (slot / 8 * bucket, slot % 8);
            array[b + s] = 5 + (slot % 200) as u8;
            let (kb, kv) = self.place(key, k, depth.saturating_sub(1));
            let (vb, vv) = self.place(value, v, depth.saturating_sub(1));
            let k_at = b + 8 + s * ks as usize;
            let v_at = b + 8 + 8 * ks as usize + s * vs as usize;
            array[k_at..k_at + kb.len()].copy_from_slice(&kb);
            array[v_at..v_at + vb.len()].copy_from_slice(&vb);
            // The first slots of the first two buckets are the ones read.
            if slot < 16 && slot % 8 < (self.limits.elems as usize).min(8) {
                shown.push((kv, vv));
            }
        }
        let mut hmap = [0u8; 48];
        put(&mut hmap, 0, entries.len() as u64, 8);
        hmap[9] = buckets.trailing_zeros() as u8;
        put(&mut hmap, 16, self.process.alloc(&array), 8);
        (self.process.alloc(&hmap), shown)
    }

    /// internal/runtime/maps: a map of up to 8 entries is one group that `dirPtr` points at
    /// (`dirLen` 0); a larger one has a directory of tables, each with its groups. Entries go
    /// where a hash could put them: scattered over the slots, with empty and deleted slots
    /// (control bytes 0x80, 0xfe) among the full ones (their hash's low 7 bits).
    pub(super) fn swiss_map(
        &mut self,
        layout: &SwissLayout,
        key: TypeId,
        value: TypeId,
        entries: &[(G, G)],
        depth: u32,
    ) -> (u64, Vec<(Value, Value)>) {
        const SCATTER: [usize; 8] = [5, 0, 3, 7, 1, 6, 2, 4];
        let group = layout.group_size as usize;
        let small = entries.len() <= 8 && self.empty_first == 0;
        let groups = if small {
            1
        } else {
            (self.empty_first + entries.len().div_ceil(5)).next_power_of_two()
        };
        let per_group = if small { 8 } else { 5 };
        let mut array = vec![0u8; group * groups];
        for g in 0..groups {
            for s in 0..8 {
                array[g * group + layout.shared.ctrl as usize + s] =
                    if s % 4 == 3 { 0xfe } else { 0x80 };
            }
        }
        let mut placed = Vec::new();
        for (i, (k, v)) in entries.iter().enumerate() {
            let g = self.empty_first + i / per_group;
            let s = SCATTER[i % per_group];
            let base = g * group;
            array[base + layout.shared.ctrl as usize + s] = (i * 37 % 127) as u8;
            let mut part = |ty: TypeId, x: &G, at: u64, indirect: bool| {
                let (bytes, v) = self.place(ty, x, depth.saturating_sub(1));
                let at = base + at as usize;
                if indirect {
                    let p = self.process.alloc(&bytes);
                    array[at..at + 8].copy_from_slice(&p.to_le_bytes());
                } else {
                    array[at..at + bytes.len()].copy_from_slice(&bytes);
                }
                v
            };
            let kv = part(key, k, layout.key.at(s as u64), layout.key.indirect);
            let vv = part(value, v, layout.elem.at(s as u64), layout.elem.indirect);
            placed.push(((g, s), (kv, vv)));
        }
        // The decoder walks the groups read, and their slots, in order.
        let read = if small {
            1
        } else {
            swiss_groups_read(self.limits, layout.group_size) as usize
        };
        placed.retain(|((g, _), _)| *g < read);
        placed.sort_by_key(|(at, _)| *at);
        let groups_at = self.process.alloc(&array);
        let mut header = vec![0u8; layout.shared.header_size as usize];
        put(
            &mut header,
            layout.shared.used as usize,
            entries.len() as u64,
            8,
        );
        if small {
            put(&mut header, layout.shared.dir_ptr as usize, groups_at, 8);
        } else {
            let mut table = vec![0u8; layout.shared.table_size as usize];
            put(&mut table, 0, entries.len() as u64, 2);
            put(&mut table, layout.shared.groups_data as usize, groups_at, 8);
            put(
                &mut table,
                layout.shared.groups_mask as usize,
                groups as u64 - 1,
                8,
            );
            let table = self.process.alloc(&table);
            let directory = self.process.alloc(&table.to_le_bytes());
            put(&mut header, layout.shared.dir_ptr as usize, directory, 8);
            put(&mut header, layout.shared.dir_len as usize, 1, 8);
        }
        let addr = self.process.alloc(&header);
        (addr, placed.into_iter().map(|(_, e)| e).collect())
    }
}
