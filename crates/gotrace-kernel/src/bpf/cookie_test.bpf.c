// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Test only (not loaded by gotrace): decodes a site cookie with gotrace.h's GT_COOKIE_*
 * macros, as gotrace.bpf.c does, so a unit test can check that Rust's cookies read back; and
 * computes gotrace.h's latency bucket, so a test can check it against Rust's. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "gotrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The test run's context: Rust writes `cookie`, the program fills in the rest. */
struct gt_cookie_fields {
	__u64 cookie;
	__u32 func;
	__u32 kind;
	__u32 skip;
	__u32 may_restart;
};

/* Never read: puts the context type into BTF so the skeleton generates it for Rust. */
const volatile struct gt_cookie_fields gt_cookie_fields_type;

SEC("syscall")
int decode_cookie(struct gt_cookie_fields *f)
{
	__u64 cookie = f->cookie;

	f->func = GT_COOKIE_FUNC(cookie);
	f->kind = GT_COOKIE_KIND(cookie);
	f->skip = GT_COOKIE_SKIP(cookie);
	f->may_restart = GT_COOKIE_MAY_RESTART(cookie);
	return 0;
}

/* gt_hist_bucket of `value`, for the test that it agrees with gotrace_plan::stats::bucket. */
struct gt_hist_case {
	__u64 value;
	__u32 bucket;
	__u32 pad;
};

const volatile struct gt_hist_case gt_hist_case_type;

SEC("syscall")
int hist_bucket(struct gt_hist_case *c)
{
	c->bucket = gt_hist_bucket(c->value);
	return 0;
}
