// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* gotrace's one BPF program: attached at every probe site (entry, each RET) of every traced
 * function, told which site fired by its cookie. Entries are remembered per goroutine frame;
 * a return emits the paired call. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include "gotrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space before load. */
const volatile __u64 goid_offset = 152;
const volatile __u64 stack_hi_offset = 8;
const volatile __u32 target_tgid = 0; /* 0: every process */
const volatile __u64 wakeup_bytes = 1 << 16;
const volatile __u8 entry_only = 0; /* emit entries at once; no return sites are attached */

/* Never read: they put the shared types into BTF so the skeleton generates them for Rust. */
const volatile struct gt_event gt_event_type;
const volatile enum gt_event_kind gt_event_kind_type;
const volatile enum gt_site_kind gt_site_kind_type;
const volatile enum gt_skip gt_skip_type;
const volatile enum gt_stat gt_stat_type;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/* LRU so that calls which never return (their goroutine died) cannot fill it for good. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct gt_frame_key);
	__type(value, struct gt_inflight);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GT_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);
	if (v)
		*v += 1;
}

/* Wake the consumer only when a batch has built up; it also polls on a short timer. */
static __always_inline __u64 submit_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
									       : BPF_RB_NO_WAKEUP;
}

static __always_inline void save_int_regs(__u64 *out, struct pt_regs *ctx)
{
	out[0] = ctx->rax;
	out[1] = ctx->rbx;
	out[2] = ctx->rcx;
	out[3] = ctx->rdi;
	out[4] = ctx->rsi;
	out[5] = ctx->r8;
	out[6] = ctx->r9;
	out[7] = ctx->r10;
	out[8] = ctx->r11;
}

#define EFLAGS_CF (1 << 0)
#define EFLAGS_ZF (1 << 6)

static __always_inline int will_grow_stack(__u32 skip, __u64 eflags)
{
	switch (skip) {
	case GT_SKIP_IF_CF:
		return (eflags & EFLAGS_CF) != 0;
	case GT_SKIP_IF_CF_ZF:
		return (eflags & (EFLAGS_CF | EFLAGS_ZF)) != 0;
	default:
		return 0;
	}
}

/* Emits a call that has no return: abandoned (frame reused) or entry-only. */
static __always_inline void emit_unreturned(__u32 kind, struct gt_frame_key *key,
					    struct gt_inflight *call)
{
	struct gt_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(GT_STAT_LOST);
		return;
	}
	e->kind = kind;
	e->entry_ns = call->entry_ns;
	e->return_ns = 0;
	e->goid = key->goid;
	e->pid = key->tgid;
	e->entry_tid = call->tid;
	e->return_tid = 0;
	e->func = call->func;
	e->pad = 0;
	__builtin_memcpy(e->entry_regs, call->regs, sizeof(e->entry_regs));
	__builtin_memset(e->return_regs, 0, sizeof(e->return_regs));
	bpf_ringbuf_submit(e, submit_flags());
}

static __always_inline int on_entry(struct pt_regs *ctx, __u64 cookie, struct gt_frame_key *key,
				    __u32 tid, __u64 now)
{
	if (will_grow_stack(GT_COOKIE_SKIP(cookie), ctx->eflags)) {
		count(GT_STAT_GROWTH_SKIPPED);
		return 0;
	}
	struct gt_inflight call = {
		.entry_ns = now,
		.func = GT_COOKIE_FUNC(cookie),
		.tid = tid,
	};
	save_int_regs(call.regs, ctx);
	if (entry_only) {
		emit_unreturned(GT_EVENT_ENTRY, key, &call);
		return 0;
	}
	struct gt_inflight *old = bpf_map_lookup_elem(&inflight, key);
	if (old) {
		/* The same call again after a stack-growth restart: keep its first entry time. */
		if (GT_COOKIE_MAY_RESTART(cookie) && old->func == GT_COOKIE_FUNC(cookie))
			return 0;
		emit_unreturned(GT_EVENT_ABANDONED, key, old);
	}
	if (bpf_map_update_elem(&inflight, key, &call, BPF_ANY))
		count(GT_STAT_INFLIGHT_FULL);
	return 0;
}

static __always_inline int on_return(struct pt_regs *ctx, __u64 cookie, struct gt_frame_key *key,
				     __u32 tid, __u64 now)
{
	struct gt_inflight *call = bpf_map_lookup_elem(&inflight, key);
	if (!call || call->func != GT_COOKIE_FUNC(cookie)) {
		count(GT_STAT_UNMATCHED_RETURN);
		return 0;
	}
	struct gt_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(GT_STAT_LOST);
		bpf_map_delete_elem(&inflight, key);
		return 0;
	}
	e->kind = GT_EVENT_CALL;
	e->entry_ns = call->entry_ns;
	e->return_ns = now;
	e->goid = key->goid;
	e->pid = key->tgid;
	e->entry_tid = call->tid;
	e->return_tid = tid;
	e->func = call->func;
	e->pad = 0;
	__builtin_memcpy(e->entry_regs, call->regs, sizeof(e->entry_regs));
	save_int_regs(e->return_regs, ctx);
	bpf_ringbuf_submit(e, submit_flags());
	bpf_map_delete_elem(&inflight, key);
	return 0;
}

static __always_inline int on_site(struct pt_regs *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (target_tgid && tgid != target_tgid)
		return 0;

	/* R14 holds the current goroutine's g at every ABIInternal entry and RET. */
	void *g = (void *)ctx->r14;
	__u64 goid = 0, stack_hi = 0;
	if (bpf_probe_read_user(&goid, sizeof(goid), g + goid_offset) ||
	    bpf_probe_read_user(&stack_hi, sizeof(stack_hi), g + stack_hi_offset)) {
		count(GT_STAT_READ_FAILED);
		return 0;
	}
	struct gt_frame_key key = {
		.tgid = tgid,
		.goid = goid,
		.frame = stack_hi - ctx->rsp,
	};
	__u64 cookie = bpf_get_attach_cookie(ctx);
	if (GT_COOKIE_KIND(cookie) == GT_SITE_ENTRY)
		return on_entry(ctx, cookie, &key, (__u32)pid_tgid, now);
	return on_return(ctx, cookie, &key, (__u32)pid_tgid, now);
}

/* The same body for both attach methods: one uprobe_multi link for all sites, or (older
 * kernels) one perf-event uprobe per site. Only the one in use is loaded. */
SEC("uprobe.multi")
int gotrace_site_multi(struct pt_regs *ctx)
{
	return on_site(ctx);
}

SEC("uprobe")
int gotrace_site(struct pt_regs *ctx)
{
	return on_site(ctx);
}
