//! The argument frame computed from a DWARF signature under the register ABI must equal the
//! one the compiler wrote into pclntab. Where they differ the signature is missing something
//! (Go < 1.22 leaves blank `_` parameters and wrapper receivers out of DWARF), and the tracer
//! must not trust it.

mod common;

use common::{all_toolchains, sig_kinds};
use gotrace_binary::abi::assign;
use gotrace_binary::GoBinary;

#[test]
fn arg_width_matches_pclntab_except_where_dwarf_omits_parameters() {
    for toolchain in all_toolchains() {
        let minor: u32 = toolchain.version.trim_start_matches("1.").parse().unwrap();
        let bin = GoBinary::open(&sig_kinds(&toolchain, None)).unwrap();
        let dwarf = bin.dwarf().unwrap().expect("plain build has DWARF");
        let (mut agree, mut differ) = (0, Vec::new());
        // Equality functions generated for shape types (Go 1.24–1.26) take no dictionary.
        let mut shape_eq = 0;
        for f in bin.functions() {
            let (Some(sig), Some(args)) = (dwarf.signature(f.entry), bin.arg_size(f)) else {
                continue;
            };
            let width = assign(bin.arch(), sig, dwarf.types()).arg_width;
            // Assembly functions declare no parameters in DWARF, and ABI0 wrappers take their
            // arguments on the stack: nothing to compare.
            if f.name.ends_with(".abi0")
                || (width == 0 && sig.params.is_empty() && sig.results.is_empty())
            {
                continue;
            }
            if width == args {
                agree += 1;
                if f.name.starts_with("type:.eq.") && f.name.contains("go.shape.") {
                    shape_eq += 1;
                }
            } else {
                differ.push(format!("{}: computed {width}, pclntab {args}", f.name));
            }
        }
        assert!(
            agree > 1000,
            "Go {}: only {agree} functions compared",
            toolchain.version
        );
        if (24..=26).contains(&minor) {
            assert!(
                shape_eq > 0,
                "Go {}: no type:.eq.*[go.shape.*] compared",
                toolchain.version
            );
        }
        eprintln!(
            "Go {}: {agree} argument frames agree with pclntab ({shape_eq} shape equality functions), {} differ",
            toolchain.version,
            differ.len()
        );
        if minor >= 22 {
            assert!(differ.is_empty(), "Go {}: {differ:#?}", toolchain.version);
        } else {
            // The fixture's blank parameter is caught, and so are the runtime's wrappers whose
            // receivers DWARF leaves out: a few percent of the functions, no more.
            assert!(
                differ.iter().any(|d| d.starts_with("main.Unused:")),
                "Go {}: {differ:#?}",
                toolchain.version
            );
            assert!(
                differ.len() * 20 < agree,
                "Go {}: {differ:#?}",
                toolchain.version
            );
        }
    }
}
