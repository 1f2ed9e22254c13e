//! What the crate's Rust side and its BPF programs must agree on, checked in the real kernel:
//! the layout of a site's cookie, and whether this kernel has uprobe_multi links.

use gotrace_binary::sites::SkipCondition;
use gotrace_binary::{FileOffset, VirtAddr};
use gotrace_kernel::test_support::{
    cookie, gt_site_kind as K, gt_skip as S, kernel_btf_has_uprobe_multi, kernel_has_uprobe_multi,
    try_uprobe_multi,
};
use gotrace_plan::{Site, SiteKind};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use std::mem::MaybeUninit;

mod cookie_test_skel {
    #![allow(clippy::all, unused_imports, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/cookie_test.skel.rs"));
}
use cookie_test_skel::{types::gt_cookie_fields, CookieTestSkel, CookieTestSkelBuilder};

/// Rust lays cookies out with the generated `gt_cookie` constants; the BPF program reads
/// them with gotrace.h's GT_COOKIE_* macros (here in a test program run by
/// BPF_PROG_TEST_RUN): every field of every kind of site reads back.
fn cookies_read_back_with_the_bpf_programs_macros() {
    let mut storage = MaybeUninit::uninit();
    let skel = CookieTestSkelBuilder::default()
        .open(&mut storage)
        .and_then(|open| open.load())
        .expect("the cookie decoder loads");
    let kinds = [
        (SiteKind::Entry, K::GT_SITE_ENTRY),
        (SiteKind::Return, K::GT_SITE_RETURN),
        (SiteKind::GoPanic, K::GT_SITE_GOPANIC),
        (SiteKind::GoExit, K::GT_SITE_GOEXIT),
        (SiteKind::FatalPanic, K::GT_SITE_FATALPANIC),
        (SiteKind::Recovery, K::GT_SITE_RECOVERY),
        (SiteKind::EntryReturn, K::GT_SITE_ENTRY_RETURN),
        (SiteKind::Inlined, K::GT_SITE_INLINED),
    ];
    let skips = [
        (None, S::GT_SKIP_NEVER),
        (Some(SkipCondition::CarrySet), S::GT_SKIP_IF_CF),
        (Some(SkipCondition::CarryOrZeroSet), S::GT_SKIP_IF_CF_ZF),
    ];
    let mut decoded = 0;
    for (kind, bpf_kind) in kinds {
        for (skip_if, bpf_skip) in skips {
            for may_restart in [false, true] {
                for function in [0, 1, 0x8765_4321, u32::MAX] {
                    let site = Site {
                        function,
                        kind,
                        addr: VirtAddr(0x401000),
                        file_offset: FileOffset(0x1000),
                        skip_if,
                        may_restart,
                    };
                    let fields = decode(&skel, cookie(&site));
                    assert_eq!(
                        (fields.func, fields.kind, fields.skip, fields.may_restart),
                        (function, bpf_kind.0, bpf_skip.0, u32::from(may_restart)),
                        "{site:?}"
                    );
                    decoded += 1;
                }
            }
        }
    }
    assert_eq!(decoded, 8 * 3 * 2 * 4);
}

/// The fields the BPF program's macros read from `cookie`.
fn decode(skel: &CookieTestSkel<'_>, cookie: u64) -> gt_cookie_fields {
    let mut fields = gt_cookie_fields {
        cookie,
        ..Default::default()
    };
    // SAFETY: gt_cookie_fields is plain integers (any bytes are valid) and the slice covers
    // exactly it, borrowed mutably for the test run.
    let context = unsafe {
        std::slice::from_raw_parts_mut(
            (&mut fields as *mut gt_cookie_fields).cast::<u8>(),
            std::mem::size_of::<gt_cookie_fields>(),
        )
    };
    let input = libbpf_rs::ProgramInput {
        context_in: Some(context),
        ..Default::default()
    };
    let output = skel
        .progs
        .decode_cookie
        .test_run(input)
        .expect("BPF_PROG_TEST_RUN runs the decoder");
    assert_eq!(output.return_value, 0);
    fields
}

/// Trying agrees with what the kernel's BTF says it has (Linux 6.6+ has both).
fn trying_uprobe_multi_agrees_with_the_kernels_btf() {
    let tried = try_uprobe_multi();
    let btf = kernel_btf_has_uprobe_multi().expect("the kernel's BTF reads");
    assert_eq!(tried.is_ok(), btf, "trial: {tried:?}");
    assert_eq!(kernel_has_uprobe_multi(), Some(btf));
}

gotrace_gobuild::test_main! {
    tests: [],
    root: [
        cookies_read_back_with_the_bpf_programs_macros,
        trying_uprobe_multi_agrees_with_the_kernels_btf,
    ],
}
