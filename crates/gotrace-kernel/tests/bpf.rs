//! What the crate's Rust side and its BPF programs must agree on, checked in the real kernel:
//! the layout of a site's cookie, the latency histogram's buckets, and whether this kernel has
//! uprobe_multi links.

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
use cookie_test_skel::types::{gt_cookie_fields, gt_hist_case};
use cookie_test_skel::{CookieTestSkel, CookieTestSkelBuilder};

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
    run(&skel.progs.decode_cookie, &mut fields);
    fields
}

/// gotrace.h's gt_hist_bucket (which the BPF program files latencies with) and
/// gotrace_plan::stats::bucket (which user space reads the buckets back with) agree: on every
/// value below 4096, and around every power of two up to u64::MAX.
fn latency_buckets_agree_with_the_bpf_programs() {
    use gotrace_plan::stats::bucket;
    let mut storage = MaybeUninit::uninit();
    let skel = CookieTestSkelBuilder::default()
        .open(&mut storage)
        .and_then(|open| open.load())
        .expect("the test programs load");
    let mut values: Vec<u64> = (0..4096).collect();
    for shift in 0..64 {
        let p = 1u64 << shift;
        values.extend([p - 1, p, p + 1, p | (p >> 1), p | (p >> 2) | 1, p | (p - 1)]);
    }
    values.extend([1_000_000, 10_000_000, 100_000_000, u64::MAX]);
    for &value in &values {
        let mut case = gt_hist_case {
            value,
            ..Default::default()
        };
        run(&skel.progs.hist_bucket, &mut case);
        assert_eq!(case.bucket as usize, bucket(value), "{value}");
    }
    assert!(values.len() > 4096 + 6 * 64);
}

/// Runs `program` by BPF_PROG_TEST_RUN on `context`, which it reads and writes.
fn run<T>(program: &libbpf_rs::ProgramMut<'_>, context: &mut T) {
    // SAFETY: T is one of the test programs' contexts, plain integers (any bytes are valid),
    // and the slice covers exactly it, borrowed mutably for the test run.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut((context as *mut T).cast::<u8>(), std::mem::size_of::<T>())
    };
    let input = libbpf_rs::ProgramInput {
        context_in: Some(bytes),
        ..Default::default()
    };
    let output = program
        .test_run(input)
        .expect("BPF_PROG_TEST_RUN runs the program");
    assert_eq!(output.return_value, 0);
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
        latency_buckets_agree_with_the_bpf_programs,
        trying_uprobe_multi_agrees_with_the_kernels_btf,
    ],
}
