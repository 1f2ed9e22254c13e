//! Inlined calls found from `.gopclntab`'s inline trees, on every installed toolchain: the
//! fixture's `main.Add` is inlined at three sites (and has code of its own), `main.Scale` at
//! two (and has none). Stripped builds must give the same sites as unstripped ones, and every
//! site must be an instruction of its caller's linear decode.

mod common;

use common::{all_toolchains, build};
use gotrace_binary::dwarf::DwarfLocation;
use gotrace_binary::inline::InlinedSite;
use gotrace_binary::GoBinary;
use gotrace_gobuild::Flavour;

const FIXTURE: &str = "fixtures/go/inlined";

fn sites(binary: &GoBinary, name: &str) -> Vec<InlinedSite> {
    binary
        .inlined_sites(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_iter()
        .map(|s| s.unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

#[test]
fn inlined_sites_on_every_toolchain_and_flavour() {
    for toolchain in all_toolchains() {
        for (plain, stripped) in [
            (Flavour::Plain, Flavour::Stripped),
            (Flavour::Pie, Flavour::PieStripped),
        ] {
            let what = format!("Go {} {plain:?}", toolchain.version);
            let path = build(FIXTURE, "", &toolchain, plain, None);
            let binary = GoBinary::open(&path).unwrap();
            let add = sites(&binary, "main.Add");
            let scale = sites(&binary, "main.Scale");
            assert_eq!(add.len(), 3, "{what}: {add:?}");
            assert_eq!(scale.len(), 2, "{what}: {scale:?}");
            assert!(binary.function("main.Add").is_ok(), "{what}");
            assert!(binary.function("main.Scale").is_err(), "{what}");
            let mut callers: Vec<&str> = add.iter().map(|s| s.caller.as_str()).collect();
            callers.sort();
            assert_eq!(callers, ["main.loop", "main.main", "main.twice"], "{what}");
            for site in add.iter().chain(&scale) {
                let caller = binary.function(&site.caller).unwrap();
                assert!(
                    site.body_start >= caller.entry && site.addr < caller.end,
                    "{what}: {site:?}"
                );
                assert!(site.addr >= site.body_start, "{what}: {site:?}");
                assert!(site.sp_delta.is_some(), "{what}: {site:?}");
            }
            // Every site has an inlined call in DWARF with both parameters, named; DWARF
            // locates some of them (DWARF 5 location lists from 1.25).
            let pcs: Vec<_> = add.iter().chain(&scale).map(|s| s.addr).collect();
            let mut params = binary
                .inlined_params("main.Add", &pcs[..add.len()])
                .unwrap();
            params.extend(
                binary
                    .inlined_params("main.Scale", &pcs[add.len()..])
                    .unwrap(),
            );
            let mut located = 0;
            for (site, params) in add.iter().chain(&scale).zip(&params) {
                let params = params
                    .as_ref()
                    .unwrap_or_else(|| panic!("{what}: no DWARF inlined call at {site:?}"));
                let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
                assert!(
                    names == ["a", "b"] || names == ["x", "k"],
                    "{what}: {names:?}"
                );
                located += params
                    .iter()
                    .filter(|p| matches!(p.location, DwarfLocation::Pieces(_)))
                    .count();
            }
            assert!(located >= 4, "{what}: {located} located");
            let stripped_path = build(FIXTURE, "", &toolchain, stripped, None);
            let stripped_binary = GoBinary::open(&stripped_path).unwrap();
            assert_eq!(
                sites(&stripped_binary, "main.Add"),
                add,
                "{what} vs {stripped:?}"
            );
            assert_eq!(
                sites(&stripped_binary, "main.Scale"),
                scale,
                "{what} vs {stripped:?}"
            );
        }
    }
}
