//! The argument frame computed from a DWARF signature under the register ABI must equal the
//! one the compiler wrote into pclntab. Where they differ the signature is missing something
//! (Go < 1.22 leaves blank `_` parameters and wrapper receivers out of DWARF), and the tracer
//! must not trust it.

mod common;

use common::{all_toolchains, build, sig_kinds};
use gotrace_binary::abi::assign;
use gotrace_binary::GoBinary;
use gotrace_gobuild::Flavour;

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

/// The out-of-line copy of an inlinable generic function is named in DWARF only through its
/// abstract origin: read without that name, `main.Last[go.shape.string]` got no dictionary
/// and its slice was read from the dictionary's register (the go command's `slices.Sort` and
/// `atomic.(*Pointer[…]).Load` on Go 1.24–1.26).
#[test]
fn out_of_line_copy_of_inlinable_generic_code_takes_its_dictionary() {
    for toolchain in all_toolchains() {
        let path = build(
            "fixtures/go/generic_copies",
            "",
            &toolchain,
            Flavour::Plain,
            None,
        );
        let bin = GoBinary::open(&path).unwrap();
        let dwarf = bin.dwarf().unwrap().expect("plain build has DWARF");
        let f = bin
            .functions()
            .iter()
            .find(|f| f.name.starts_with("main.Last[go.shape.string"))
            .unwrap_or_else(|| panic!("Go {}: no out-of-line main.Last", toolchain.version));
        let sig = dwarf.signature(f.entry).expect("signature");
        let names: Vec<&str> = sig.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, [".dict", "xs"], "Go {}", toolchain.version);
        assert_eq!(
            Some(assign(bin.arch(), sig, dwarf.types()).arg_width),
            bin.arg_size(f),
            "Go {}",
            toolchain.version
        );
    }
}
