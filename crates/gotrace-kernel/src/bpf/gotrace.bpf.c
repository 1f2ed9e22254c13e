// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* gotrace's one BPF program: attached at every probe site (entry, each RET) of every traced
 * function, told which site fired by its cookie. Entries are remembered per goroutine frame;
 * a return emits the paired call. What user memory to read at a site (string bytes, pointed-to
 * structs, slice elements, interface values) is data: a recipe of ops interpreted here. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include "gotrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space before load. The Go runtime's offsets come from gotrace_binary::layout
 * (per Go release and architecture, checked against the binary's DWARF): none is assumed here. */
const volatile __u64 goid_offset = 0;     /* runtime.g.goid */
const volatile __u64 stack_hi_offset = 0; /* runtime.g.stack.hi */
/* Swiss-table maps (Go 1.24+): slots per group, and the control-byte bits of an empty slot. */
const volatile __u32 swiss_group_slots = 0;
const volatile __u8 swiss_ctrl_empty = 0;
const volatile __u32 target_tgid = 0; /* 0: every process */
const volatile __u64 wakeup_bytes = 1 << 16;
const volatile __u8 entry_only = 0; /* emit entries at once; no return sites are attached */
const volatile __u8 has_recipes = 0; /* some site reads memory: worth looking recipes up */
const volatile __u8 position_independent = 0; /* the binary is PIE: learn each process's bias */
/* --stack: each call's entry walks the goroutine's frame-pointer chain (see walk_stack). */
const volatile __u8 stack_mode = 0;
/* gotrace stats: calls are counted in `func_stats`, not sent (only process exits are). */
const volatile __u8 stats_mode = 0;
/* --where programs are in `filters`; --min-duration: calls shorter are not reported. */
const volatile __u8 has_filter = 0;
/* --by (stats mode): calls are also counted per group in `groups` (enum gt_group_kind of the
 * whole plan: values, or GT_GROUP_STACK). 0: no grouping, compiled out. */
const volatile __u8 group_mode = 0;
const volatile __u64 min_duration_ns = 0;
/* --sample: one call in `sample_every` is reported; --max-rate: calls of a function beyond
 * `max_rate` in a window are counted, not reported. 0: off. */
const volatile __u32 sample_every = 0;
const volatile __u64 max_rate = 0;
/* Where runtime.recovery finds the stack pointer the recovering frame resumes at: 0 unknown,
 * 1 in g.sigcode0 (Go <= 1.21), 2 in g._panic->sp (Go 1.22+). */
const volatile __u8 resume_sp_mode = 0;
const volatile __u64 g_sigcode0_offset = 0;
const volatile __u64 g_panic_offset = 0;
const volatile __u64 panic_sp_offset = 0;

/* Never read: they put the shared types into BTF so the skeleton generates them for Rust. */
const volatile struct gt_event gt_event_type;
const volatile struct gt_capture gt_capture_type;
const volatile enum gt_event_kind gt_event_kind_type;
const volatile enum gt_site_kind gt_site_kind_type;
const volatile enum gt_skip gt_skip_type;
const volatile enum gt_cookie gt_cookie_type;
const volatile enum gt_stat gt_stat_type;
const volatile enum gt_operand_kind gt_operand_kind_type;
const volatile enum gt_op_kind gt_op_kind_type;
const volatile enum gt_capture_status gt_capture_status_type;
const volatile enum gt_limits gt_limits_type;
const volatile struct gt_func_stats gt_func_stats_type;
const volatile struct gt_error_result gt_error_result_type;
const volatile enum gt_hist gt_hist_type;
const volatile enum gt_phase gt_phase_type;
const volatile enum gt_error_at gt_error_at_type;
const volatile struct gt_filter gt_filter_type;
const volatile struct gt_filter_op gt_filter_op_type;
const volatile struct gt_filter_literal gt_filter_literal_type;
const volatile enum gt_filter_kind gt_filter_kind_type;
const volatile enum gt_filter_cmp gt_filter_cmp_type;
const volatile enum gt_word_base gt_word_base_type;
const volatile enum gt_filter_limits gt_filter_limits_type;
const volatile enum gt_left_out gt_left_out_type;
const volatile struct gt_rate_window gt_rate_window_type;
const volatile enum gt_stack_end gt_stack_end_type;
const volatile struct gt_group_key gt_group_key_type;
const volatile struct gt_group_spec gt_group_spec_type;
const volatile enum gt_group_kind gt_group_kind_type;
const volatile enum gt_group_status gt_group_status_type;
const volatile enum gt_group_limits gt_group_limits_type;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/* Calls in flight. Not an LRU: an evicted call would vanish unreported; a full table is
 * counted instead. Calls that never return leave it when their goroutine ends (goexit1), their
 * process exits, or gotrace stops (user space reports them as in flight). Allocated on demand. */
#define GT_INFLIGHT_MAX (1 << 18)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, GT_INFLIGHT_MAX);
	__type(key, struct gt_frame_key);
	__type(value, struct gt_inflight);
} inflight SEC(".maps");

/* Goroutines with traced calls in flight (or that had some): the head of each one's chain. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, GT_INFLIGHT_MAX);
	__type(key, struct gt_goroutine_key);
	__type(value, struct gt_goroutine);
} goroutines SEC(".maps");

/* Processes with traced calls: their exit is reported so user space can drain their calls. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} processes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GT_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Stats mode: each function's counts and latency histogram, by plan index; sized by user
 * space. Per CPU, so a hit updates them without atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_func_stats);
} func_stats SEC(".maps");

/* --by: each function's key (sized by user space), the counts per group, and the pcs of each
 * stack a group's key hashes (stored once per hash). Bounded: a call finding no room for its
 * group is counted in its function's `not_grouped`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_group_spec);
} group_specs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, GT_GROUPS_MAX);
	__type(key, struct gt_group_key);
	__type(value, struct gt_func_stats);
} groups SEC(".maps");

struct gt_group_stack {
	__u64 pcs[GT_STACK_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, GT_GROUP_STACKS_MAX);
	__type(key, __u64);
	__type(value, struct gt_group_stack);
} group_stacks SEC(".maps");

/* Never written: a new group's first counts (too big for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_func_stats);
} empty_stats SEC(".maps");

/* Stats mode: where each function's `error` result is at its returns. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_error_result);
} error_results SEC(".maps");

/* Entry 0, an enum gt_phase, set by user space: tracing once every site is attached, stopping
 * the moment gotrace stops, before the probes are detached. From then on a hit returns at once,
 * so neither the detach nor the final drain waits on probe work. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} phase SEC(".maps");

/* --where: function f's program, its ops and its string constants; sized by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_filter);
} filters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_filter_op);
} filter_ops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_filter_literal);
} filter_literals SEC(".maps");

/* --sample: calls seen on this CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sample_seen SEC(".maps");

/* --max-rate: each function's current window, and its calls counted over the rate so far;
 * sized by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_rate_window);
} rate_windows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} over_rate SEC(".maps");

/* Recipe of function f's entry at 2f, of its returns at 2f+1; sized by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct gt_recipe);
} recipes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_op);
} ops SEC(".maps");

/* Runtime type address → recipe reading an interface's dynamic value of that type. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, struct gt_recipe);
} type_recipes SEC(".maps");

/* Load bias (runtime − link-time address) of each process of a position-independent binary,
 * learnt at its first traced entry: runtime type addresses are turned back into the link-time
 * ones `type_recipes` is keyed by, and user space gets it in every event. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} load_biases SEC(".maps");

/* Link-time address of each function's entry site (the probed address tells the bias). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} entry_sites SEC(".maps");

static __always_inline __u64 load_bias(__u32 tgid)
{
	__u64 *bias = bpf_map_lookup_elem(&load_biases, &tgid);
	return bias ? *bias : 0;
}

/* At an entry site, ctx->rip is the probed instruction's runtime address. */
static __always_inline void learn_load_bias(struct pt_regs *ctx, __u32 tgid, __u32 func)
{
	if (!position_independent || bpf_map_lookup_elem(&load_biases, &tgid))
		return;
	__u64 *site = bpf_map_lookup_elem(&entry_sites, &func);
	if (!site)
		return;
	__u64 bias = ctx->rip - *site;
	bpf_map_update_elem(&load_biases, &tgid, &bias, BPF_NOEXIST);
}

/* Where an event with captures is assembled; one per CPU (max_entries set by user space). */
struct gt_scratch {
	struct gt_event hdr; /* directly followed by the payload: output in one piece */
	__u8 payload[GT_PAYLOAD_MAX + GT_MAX_READ + 64];
	__u64 regs[GT_INT_REGS];
	__u64 sp;
	__u64 data_word;
	__u32 pos[2 * GT_MAX_OPS]; /* payload offset of each op's bytes */
	__u32 lens[2 * GT_MAX_OPS];
	__u32 payload_len;
	__u32 main_first, main_count, main_index;
	__u32 dyn_first, dyn_count, dyn_index, dyn_hops;
	__u32 busy;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gt_scratch);
} scratch SEC(".maps");

/* Per-CPU call numbers: call_id = cpu << 48 | n. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} call_seq SEC(".maps");

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

/* ---- Counting in the kernel (stats mode) ---- */

/* Where each of Go's integer argument registers is in pt_regs, in ABI order. */
static const __u16 int_reg_offsets[GT_INT_REGS] = {
	__builtin_offsetof(struct pt_regs, rax), __builtin_offsetof(struct pt_regs, rbx),
	__builtin_offsetof(struct pt_regs, rcx), __builtin_offsetof(struct pt_regs, rdi),
	__builtin_offsetof(struct pt_regs, rsi), __builtin_offsetof(struct pt_regs, r8),
	__builtin_offsetof(struct pt_regs, r9), __builtin_offsetof(struct pt_regs, r10),
	__builtin_offsetof(struct pt_regs, r11),
};

/* Whether the function's `error` result is non-nil at this RET (its itab word is not 0). */
static __always_inline int error_returned(struct pt_regs *ctx, __u32 func)
{
	struct gt_error_result *where = bpf_map_lookup_elem(&error_results, &func);
	if (!where)
		return 0;
	__u64 word = 0;
	switch (where->at) {
	case GT_ERROR_REG:
		/* Read through a helper: the verifier allows no computed offset into the context
		 * (clang turns a switch over registers into one), and a copy of the registers
		 * would push the probe past the 512-byte stack. */
		if (where->reg >= GT_INT_REGS ||
		    bpf_probe_read_kernel(&word, sizeof(word),
					  (void *)ctx + int_reg_offsets[where->reg]))
			return 0;
		break;
	case GT_ERROR_STACK:
		if (bpf_probe_read_user(&word, sizeof(word), (void *)(ctx->rsp + where->sp_offset)))
			return 0;
		break;
	}
	return word != 0;
}

/* ---- --where: a function's postfix program over its arguments and results ---- */

struct filter_run {
	struct pt_regs *ctx;
	struct gt_inflight *call; /* the entry's registers and stack pointer */
	__u64 now_sp;
	__u32 at_return;
	__u32 first;
	__u32 count;
	__u32 unread;
	__u64 stack; /* truth values, the top in bit 0 */
};

/* Through a nil pointer: the comparison is false, as no value is there. */
#define GT_WORD_NIL (-2)

/* The pointers and the last read of a word, from its base value `v` (the stack pointer, or a
 * register: a pointer if anything is read through it). -1: unreadable; GT_WORD_NIL. A global
 * function: the verifier checks it once, not at every use. */
__noinline int follow_word(const struct gt_word *w, __u64 v, __u64 *out)
{
	if (!w || !out)
		return -1;
	for (int i = 0; i < GT_FILTER_MAX_HOPS; i++) {
		if (i >= w->hops)
			break;
		if (!v)
			return GT_WORD_NIL;
		if (bpf_probe_read_user(&v, sizeof(v), (void *)(v + w->off[i])))
			return -1;
	}
	__u32 size = w->size;
	if (w->has_read) {
		__u32 last = w->hops < GT_FILTER_MAX_HOPS ? w->hops : GT_FILTER_MAX_HOPS;
		__u64 raw = 0;
		if (!v)
			return GT_WORD_NIL;
		if (size == 0 || size > 8 ||
		    bpf_probe_read_user(&raw, size, (void *)(v + w->off[last])))
			return -1;
		v = raw;
	}
	if (size > 0 && size < 8) {
		__u64 mask = (1ULL << (size * 8)) - 1;
		v &= mask;
		if (w->is_signed && (v >> (size * 8 - 1)) & 1)
			v |= ~mask;
	}
	*out = v;
	return 0;
}

/* A word's value: arguments from the entry's registers and stack pointer, results from the
 * return's. */
static __always_inline int word_value(struct gt_word *w, struct filter_run *run, __u64 *out)
{
	__u64 v = 0;
	int entry = w->at_entry || !run->at_return;
	if (w->base == GT_WORD_SP) {
		v = entry ? run->call->sp : run->now_sp;
	} else {
		__u32 reg = w->reg;
		if (reg >= GT_INT_REGS)
			return -1;
		if (entry)
			v = run->call->regs[reg];
		else if (bpf_probe_read_kernel(&v, sizeof(v),
					       (void *)run->ctx + int_reg_offsets[reg]))
			return -1;
	}
	return follow_word(w, v, out);
}

static __always_inline int compare_words(__u32 cmp, __u64 a, __u64 b, int is_signed)
{
	__s64 sa = a, sb = b;
	switch (cmp) {
	case GT_CMP_EQ:
		return a == b;
	case GT_CMP_NE:
		return a != b;
	case GT_CMP_LT:
		return is_signed ? sa < sb : a < b;
	case GT_CMP_LE:
		return is_signed ? sa <= sb : a <= b;
	case GT_CMP_GT:
		return is_signed ? sa > sb : a > b;
	case GT_CMP_GE:
		return is_signed ? sa >= sb : a >= b;
	}
	return 0;
}

/* Whether the `len` bytes at `ptr` equal (or, GT_CMP_PREFIX, start with) the constant,
 * negated for GT_CMP_NE; -1 when they cannot be read. Compared 8 bytes at a time, so the
 * probe's stack stays small. A global function, checked once. */
__noinline int string_matches(const struct gt_filter_literal *lit, __u64 ptr, __u64 len,
			      __u32 cmp)
{
	if (!lit)
		return -1;
	__u32 n = lit->len;
	if (n > GT_FILTER_STR_MAX)
		return 0;
	int same = cmp == GT_CMP_PREFIX ? len >= n : len == n;
	for (__u32 at = 0; at < GT_FILTER_STR_MAX; at += 8) {
		if (!same || at >= n)
			break;
		__u32 k = n - at < 8 ? n - at : 8;
		__u64 have = 0, want = 0;
		if (k == 0 || k > 8 || bpf_probe_read_user(&have, k, (void *)(ptr + at)))
			return -1;
		__builtin_memcpy(&want, &lit->bytes[at], 8);
		if (k < 8)
			want &= (1ULL << (k * 8)) - 1;
		if (have != want)
			same = 0;
	}
	return cmp == GT_CMP_NE ? !same : same;
}

static __always_inline int compare_string(struct gt_filter_op *op, struct filter_run *run)
{
	__u64 ptr = 0, len = 0;
	struct gt_filter_literal *lit = bpf_map_lookup_elem(&filter_literals, &op->literal);
	int found = lit ? word_value(&op->a, run, &ptr) : -1;
	if (!found)
		found = word_value(&op->b, run, &len);
	int truth = found ? found : string_matches(lit, ptr, len, op->cmp);
	if (truth == -1)
		run->unread = 1;
	return truth > 0;
}

static long filter_step(__u64 index, void *arg)
{
	struct filter_run *run = arg;
	if (index >= run->count)
		return 1;
	__u32 at = run->first + (__u32)index;
	struct gt_filter_op *op = bpf_map_lookup_elem(&filter_ops, &at);
	if (!op)
		return 1;
	__u64 top = run->stack & 1, below = (run->stack >> 1) & 1;
	switch (op->kind) {
	case GT_FILTER_AND:
		run->stack = (run->stack >> 2) << 1 | (top & below);
		break;
	case GT_FILTER_OR:
		run->stack = (run->stack >> 2) << 1 | (top | below);
		break;
	case GT_FILTER_NOT:
		run->stack ^= 1;
		break;
	case GT_FILTER_NEVER:
		run->stack <<= 1;
		break;
	case GT_FILTER_STR:
		run->stack = run->stack << 1 | compare_string(op, run);
		break;
	default: {
		__u64 v = 0;
		int truth = 0;
		int found = word_value(&op->a, run, &v);
		if (found == -1)
			run->unread = 1;
		else if (!found)
			truth = compare_words(op->cmp, v, op->value, op->a.is_signed);
		run->stack = run->stack << 1 | truth;
	}
	}
	return 0;
}

/* Whether `call` passes its function's --where program, run at the entry or `at_return`
 * (a program runs at one of them; at the other it passes). A global function: the verifier
 * checks it once, however many paths call it. */
__noinline int passes_filter(struct pt_regs *ctx, struct gt_inflight *call, __u32 at_return)
{
	if (!call)
		return 1;
	__u32 func = call->func;
	struct gt_filter *f = bpf_map_lookup_elem(&filters, &func);
	if (!f || !f->count || (f->at_return != 0) != (at_return != 0))
		return 1;
	struct filter_run run = {
		.ctx = ctx,
		.call = call,
		.now_sp = ctx->rsp,
		.at_return = at_return,
		.first = f->first,
		.count = f->count < GT_FILTER_MAX_OPS ? f->count : GT_FILTER_MAX_OPS,
	};
	bpf_loop(GT_FILTER_MAX_OPS, filter_step, &run, 0);
	if (run.unread)
		count(GT_STAT_FILTER_UNREAD);
	return run.stack & 1;
}

/* --by: this CPU's counts of the call's group, made at its first call; NULL when not
 * grouping, or when the table is full (the function's `not_grouped` counts the call). */
static __always_inline struct gt_func_stats *group_stats(struct gt_group_key *key,
							  struct gt_func_stats *function)
{
	if (!group_mode || !key)
		return NULL;
	struct gt_func_stats *g = bpf_map_lookup_elem(&groups, key);
	if (g)
		return g;
	__u32 zero = 0;
	struct gt_func_stats *empty = bpf_map_lookup_elem(&empty_stats, &zero);
	/* Fails when full, or when another CPU made it meanwhile (the lookup then finds it). */
	if (empty)
		bpf_map_update_elem(&groups, key, empty, BPF_NOEXIST);
	g = bpf_map_lookup_elem(&groups, key);
	if (!g)
		function->not_grouped++;
	return g;
}

static __always_inline void count_return(struct gt_func_stats *s, __u64 ns, int failed)
{
	s->returned++;
	s->total_ns += ns;
	if (ns > s->max_ns)
		s->max_ns = ns;
	s->hist[gt_hist_bucket(ns) & (GT_HIST_BUCKETS - 1)]++;
	if (failed)
		s->errors++;
}

static __always_inline void stat_return(struct pt_regs *ctx, __u32 func, __u64 ns,
					struct gt_group_key *group)
{
	struct gt_func_stats *s = bpf_map_lookup_elem(&func_stats, &func);
	if (!s)
		return;
	int failed = error_returned(ctx, func);
	count_return(s, ns, failed);
	struct gt_func_stats *g = group_stats(group, s);
	if (g)
		count_return(g, ns, failed);
}

static __always_inline void count_unreturned(struct gt_func_stats *s, __u32 kind)
{
	if (kind == GT_EVENT_PANICKED)
		s->panicked++;
	else if (kind == GT_EVENT_EXITED)
		s->exited++;
	else if (kind == GT_EVENT_RETURN_NOT_SEEN)
		s->return_not_seen++;
	else
		s->abandoned++;
}

static __always_inline void stat_unreturned(__u32 func, __u32 kind, struct gt_group_key *group)
{
	struct gt_func_stats *s = bpf_map_lookup_elem(&func_stats, &func);
	if (!s)
		return;
	count_unreturned(s, kind);
	struct gt_func_stats *g = group_stats(group, s);
	if (g)
		count_unreturned(g, kind);
}

static __always_inline void stat_entered(__u32 func, struct gt_group_key *group)
{
	struct gt_func_stats *s = bpf_map_lookup_elem(&func_stats, &func);
	if (!s)
		return;
	s->entered++;
	struct gt_func_stats *g = group_stats(group, s);
	if (g)
		g->entered++;
}

/* ---- The capture interpreter ---- */

#define GT_NO_POS 0xffffffff
#define GT_PAYLOAD_MASK (GT_PAYLOAD_MAX - 1)
#define GT_MAX_STEPS (GT_MAX_OPS * 8)

static __always_inline int operand_value(struct gt_scratch *s, struct gt_operand *o,
					 __u32 slot_base, __u64 *out)
{
	__u64 v = 0;
	switch (o->kind) {
	case GT_OPERAND_NONE:
		break;
	case GT_OPERAND_REG:
		if (o->reg >= GT_INT_REGS)
			return -1;
		v = s->regs[o->reg];
		break;
	case GT_OPERAND_SP:
		v = s->sp;
		break;
	case GT_OPERAND_DATA:
		v = s->data_word;
		break;
	case GT_OPERAND_WORD: {
		__u32 slot = (slot_base + o->op) & (2 * GT_MAX_OPS - 1);
		__u32 pos = s->pos[slot];
		if (pos == GT_NO_POS || (__u64)o->off + 8 > s->lens[slot])
			return -1;
		__u32 at = (pos + o->off) & GT_PAYLOAD_MASK;
		__builtin_memcpy(&v, &s->payload[at], sizeof(v));
		break;
	}
	default:
		return -1;
	}
	*out = v + o->add;
	return 0;
}

/* Whether the op's guard keeps it from running. */
static __always_inline int guarded_off(struct gt_scratch *s, struct gt_op *op, __u32 slot_base)
{
	__u64 v;
	return op->guard.kind != GT_OPERAND_NONE &&
	       (operand_value(s, &op->guard, slot_base, &v) ||
		((__s64)v <= (__s64)op->guard_above) != op->guard_at_most);
}

/* Writes a capture's header at payload offset `at` (its bytes are at `data_at`) and makes them
 * op `cap->op`'s, for the words later ops read. */
static __always_inline void record_capture(struct gt_scratch *s, struct gt_capture *cap, __u32 at,
					   __u32 data_at)
{
	__builtin_memcpy(&s->payload[at & GT_PAYLOAD_MASK], cap, sizeof(*cap));
	__u32 slot = cap->op & (2 * GT_MAX_OPS - 1);
	s->pos[slot] = data_at;
	s->lens[slot] = cap->len;
	s->payload_len = at + sizeof(struct gt_capture) + ((cap->len + 7) & ~7U);
}

static __always_inline void run_read(struct gt_scratch *s, struct gt_op *op, __u32 slot,
				     __u32 slot_base)
{
	s->pos[slot] = GT_NO_POS;
	s->lens[slot] = 0;
	if (guarded_off(s, op, slot_base))
		return;
	__u64 addr, want;
	if (operand_value(s, &op->addr, slot_base, &addr) ||
	    operand_value(s, &op->len, slot_base, &want))
		return;
	if (op->elem_size)
		want = (__s64)want < 0 ? 0 : want * op->elem_size;
	__u64 keep = want;
	__u8 status = GT_CAPTURE_OK;
	if (keep > op->max_len)
		keep = op->max_len;
	if (keep > GT_MAX_READ)
		keep = GT_MAX_READ;
	if (keep < want) {
		status = GT_CAPTURE_TRUNCATED;
		count(GT_STAT_TRUNCATED);
	}
	__u32 at = s->payload_len;
	if (at + sizeof(struct gt_capture) + keep > GT_PAYLOAD_MAX) {
		if (at + sizeof(struct gt_capture) > GT_PAYLOAD_MAX)
			return;
		status = GT_CAPTURE_NO_ROOM;
		keep = 0;
	}
	if (addr == 0) {
		status = GT_CAPTURE_NIL;
		keep = 0;
	}
	at &= GT_PAYLOAD_MASK;
	__u32 data_at = (at + sizeof(struct gt_capture)) & GT_PAYLOAD_MASK;
	if (keep && bpf_probe_read_user(&s->payload[data_at], keep & (GT_MAX_READ * 2 - 1),
					(void *)addr)) {
		status = GT_CAPTURE_FAULT;
		keep = 0;
	}
	struct gt_capture cap = {
		.addr = addr,
		.want = want,
		.len = keep,
		.op = slot,
		.status = status,
	};
	record_capture(s, &cap, at, data_at);
}

/* A gather walking one captured group array: payload offsets and the group's layout. */
struct gt_gather {
	__u32 src, src_len, out, out_end;
	__u32 group_size, ctrl, base, stride, size;
};

/* One slot (index = group × slots per group + slot) of a gather's walk: copied if its control
 * byte says full. */
static long gather_slot(__u64 index, void *ctx)
{
	struct gt_gather *g = ctx;
	__u32 cpu = bpf_get_smp_processor_id();
	struct gt_scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
	if (!s)
		return 1;
	__u32 group = (__u32)(index / swiss_group_slots) * g->group_size;
	__u32 slot = index % swiss_group_slots;
	if (group + g->group_size > g->src_len || g->out + g->size > g->out_end)
		return 1;
	__u8 ctrl = s->payload[(g->src + group + g->ctrl + slot) & GT_PAYLOAD_MASK];
	if (ctrl & swiss_ctrl_empty)
		return 0;
	__u32 from = (g->src + group + g->base + slot * g->stride) & GT_PAYLOAD_MASK;
	if (bpf_probe_read_kernel(&s->payload[g->out & GT_PAYLOAD_MASK],
				  g->size & (GT_MAX_READ - 1), &s->payload[from]))
		return 1;
	g->out += g->size;
	return 0;
}

/* GT_OP_GATHER: the full slots' keys (or values) side by side, so that later ops read the n-th
 * entry's words at a fixed offset wherever the map's hash put it. */
static __always_inline void run_gather(struct gt_scratch *s, struct gt_op *op, __u32 slot,
				       __u32 slot_base)
{
	s->pos[slot] = GT_NO_POS;
	s->lens[slot] = 0;
	if (guarded_off(s, op, slot_base) || op->elem_size == 0 || swiss_group_slots == 0)
		return;
	__u32 at = s->payload_len;
	if (at + sizeof(struct gt_capture) > GT_PAYLOAD_MAX)
		return;
	at &= GT_PAYLOAD_MASK;
	__u32 data_at = at + sizeof(struct gt_capture);
	__u32 room = GT_PAYLOAD_MAX - data_at;
	__u32 max = op->max_len < GT_MAX_READ ? op->max_len : GT_MAX_READ;
	struct gt_gather g = {
		.out = data_at,
		.out_end = data_at + (max < room ? max : room),
		.group_size = op->elem_size,
		.ctrl = (__u32)op->len.add,
		.base = op->addr.off,
		.stride = op->len.off,
		.size = (__u32)op->addr.add,
	};
	struct gt_operand *sources[2] = {&op->addr, &op->len};
	for (int i = 0; i < 2; i++) {
		if (i == 1 && op->len.kind == GT_OPERAND_NONE)
			break;
		__u32 src = (slot_base + sources[i]->op) & (2 * GT_MAX_OPS - 1);
		if (s->pos[src] == GT_NO_POS)
			continue;
		g.src = s->pos[src];
		g.src_len = s->lens[src];
		bpf_loop(g.src_len / g.group_size * swiss_group_slots, gather_slot, &g, 0);
	}
	__u32 kept = g.out - data_at;
	struct gt_capture cap = {
		.want = kept,
		.len = kept,
		.op = slot,
		.status = GT_CAPTURE_GATHERED,
	};
	record_capture(s, &cap, at, data_at);
}

static __always_inline void run_dynamic(struct gt_scratch *s, struct gt_op *op, __u32 slot_base)
{
	__u64 type_addr, data;
	/* Inside a dynamic recipe, only its last op: the new recipe replaces the finished one. */
	if (slot_base == 0)
		s->dyn_hops = 0;
	else if (s->dyn_index != s->dyn_count || ++s->dyn_hops > GT_MAX_HOPS)
		return;
	if (operand_value(s, &op->addr, slot_base, &type_addr) ||
	    operand_value(s, &op->len, slot_base, &data) || type_addr == 0)
		return;
	type_addr -= s->hdr.load_bias;
	struct gt_recipe *r = bpf_map_lookup_elem(&type_recipes, &type_addr);
	if (!r)
		return;
	s->dyn_first = r->first;
	s->dyn_count = r->count < GT_MAX_OPS ? r->count : GT_MAX_OPS;
	s->dyn_index = 0;
	s->data_word = data;
}

static long capture_step(__u64 index, void *unused)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct gt_scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
	if (!s)
		return 1;
	__u32 op_index, slot, slot_base;
	if (s->dyn_index < s->dyn_count) {
		op_index = s->dyn_first + s->dyn_index;
		slot_base = GT_DYNAMIC_BASE;
		slot = GT_DYNAMIC_BASE + (s->dyn_index & (GT_MAX_OPS - 1));
		s->dyn_index++;
	} else if (s->main_index < s->main_count) {
		op_index = s->main_first + s->main_index;
		slot_base = 0;
		slot = s->main_index & (GT_MAX_OPS - 1);
		s->main_index++;
	} else {
		return 1;
	}
	struct gt_op *op = bpf_map_lookup_elem(&ops, &op_index);
	if (!op)
		return 1;
	if (op->kind == GT_OP_READ)
		run_read(s, op, slot, slot_base);
	else if (op->kind == GT_OP_DYNAMIC)
		run_dynamic(s, op, slot_base);
	else if (op->kind == GT_OP_GATHER)
		run_gather(s, op, slot, slot_base);
	return 0;
}

/* The CPU's scratch event, claimed for this probe hit; NULL (counted as lost) if it is not
 * there or a probe hit in another task that preempted this one on this CPU holds it. */
static __always_inline struct gt_scratch *claim_scratch(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct gt_scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
	if (!s)
		return NULL;
	if (__sync_fetch_and_add(&s->busy, 1)) {
		__sync_fetch_and_add(&s->busy, -1);
		return NULL;
	}
	return s;
}

/* A stack walk in progress: the next frame pointer, pcs kept so far, how it ended. */
struct gt_walk {
	__u64 fp;
	__u32 n;
	__u32 end;
};

/* One frame up the chain: Go on amd64 keeps frame pointers, the caller's saved frame pointer
 * at [fp] and the return address at [fp+8]. Reads only, with bpf_probe_read_user. */
static long stack_step(__u64 index, void *ctx)
{
	struct gt_walk *w = ctx;
	__u32 cpu = bpf_get_smp_processor_id();
	struct gt_scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
	if (!s)
		return 1;
	if (w->fp == 0) {
		w->end = GT_STACK_COMPLETE;
		return 1;
	}
	if (w->n >= GT_STACK_MAX) {
		w->end = GT_STACK_CUT;
		return 1;
	}
	__u64 frame[2];
	if (bpf_probe_read_user(frame, sizeof(frame), (void *)w->fp)) {
		w->end = GT_STACK_UNREADABLE;
		return 1;
	}
	__builtin_memcpy(&s->payload[(w->n * 8) & GT_PAYLOAD_MASK], &frame[1], 8);
	w->n++;
	/* Frames of callers lie higher up the stack: anything else is not a chain to follow. */
	if (frame[0] != 0 && frame[0] <= w->fp) {
		w->end = GT_STACK_BROKEN;
		return 1;
	}
	w->fp = frame[0];
	return 0;
}

/* The call's stack at entry into the payload's first bytes: the probed pc, the word at SP (the
 * return address: at an entry probe no frame of the callee is set up yet), then the return
 * address of each frame from RBP up. User space symbolizes them. */
static __always_inline void walk_stack(struct pt_regs *ctx, struct gt_scratch *s)
{
	struct gt_walk w = { .fp = ctx->rbp, .n = 2, .end = GT_STACK_CUT };
	__builtin_memcpy(&s->payload[0], &ctx->rip, 8);
	if (bpf_probe_read_user(&s->payload[8], 8, (void *)ctx->rsp)) {
		w.n = 1;
		w.end = GT_STACK_UNREADABLE;
	} else {
		bpf_loop(GT_STACK_MAX, stack_step, &w, 0);
	}
	s->hdr.stack_len = w.n;
	s->hdr.stack_end = w.end;
	s->payload_len = (w.n * 8) & (GT_STACK_MAX * 8 * 2 - 1);
}

/* ---- --by: a call's group key ---- */

/* A walked stack's hash (FNV-1a over its pcs), each pc made link-time (minus `bias`) in place. */
static __always_inline __u64 hash_stack(struct gt_scratch *s, __u32 n, __u64 bias)
{
	__u64 h = 14695981039346656037ULL;
	for (__u32 i = 0; i < GT_STACK_MAX; i++) {
		if (i >= n)
			break;
		__u64 pc;
		__builtin_memcpy(&pc, &s->payload[i * 8], 8);
		pc -= bias;
		__builtin_memcpy(&s->payload[i * 8], &pc, 8);
		h = (h ^ pc) * 1099511628211ULL;
	}
	return h;
}

/* The call's stack at entry, walked as --stack walks it: the key holds its hash, and its pcs
 * are stored once per hash in `group_stacks`. */
static __always_inline void stack_key(struct pt_regs *ctx, struct gt_group_key *key, __u64 bias)
{
	struct gt_scratch *s = claim_scratch();
	if (!s) {
		key->status = GT_GROUP_BUSY;
		return;
	}
	walk_stack(ctx, s);
	__u32 n = s->hdr.stack_len;
	if (n > GT_STACK_MAX)
		n = GT_STACK_MAX;
	key->value = hash_stack(s, n, bias);
	key->len = n;
	key->end = s->hdr.stack_end;
	/* A full table leaves the stack unnamed; user space shows that group as `?`. */
	if (!bpf_map_lookup_elem(&group_stacks, &key->value))
		bpf_map_update_elem(&group_stacks, &key->value, s->payload, BPF_NOEXIST);
	__sync_fetch_and_add(&s->busy, -1);
}

static __always_inline __u16 word_status(int found)
{
	return found == GT_WORD_NIL ? GT_GROUP_NIL : GT_GROUP_UNREADABLE;
}

/* A string's first GT_GROUP_STR_MAX bytes and its length (longer: cut, user space says so). */
static __always_inline void string_key(struct gt_group_spec *spec, struct filter_run *run,
				       struct gt_group_key *key)
{
	__u64 ptr = 0, len = 0;
	int found = word_value(&spec->a, run, &ptr);
	if (!found)
		found = word_value(&spec->b, run, &len);
	if (found) {
		key->status = word_status(found);
		return;
	}
	__u32 n = len < GT_GROUP_STR_MAX ? len : GT_GROUP_STR_MAX;
	key->value = len;
	key->len = n;
	if (n && bpf_probe_read_user(key->bytes, n, (void *)ptr)) {
		key->status = GT_GROUP_UNREADABLE;
		key->value = 0;
		key->len = 0;
	}
}

/* --by: `call`'s key by its function's spec, at the entry or `at_return`. A key read at the
 * entry is kept to the return; a result's key says "no result" until the return reads it. A
 * global function: the verifier checks it once. */
__noinline int group_key(struct pt_regs *ctx, struct gt_inflight *call, __u32 at_return)
{
	if (!call)
		return 0;
	__u32 func = call->func;
	struct gt_group_spec *spec = bpf_map_lookup_elem(&group_specs, &func);
	if (!spec || (at_return && !spec->at_return))
		return 0;
	struct gt_group_key *key = &call->group;
	__builtin_memset(key, 0, sizeof(*key));
	key->func = func;
	if (spec->at_return && !at_return) {
		key->status = GT_GROUP_NO_RESULT;
		return 0;
	}
	__u64 bias = position_independent ? load_bias(bpf_get_current_pid_tgid() >> 32) : 0;
	struct filter_run run = {
		.ctx = ctx,
		.call = call,
		.now_sp = ctx->rsp,
		.at_return = at_return,
	};
	__u64 v = 0;
	int found;
	switch (spec->kind) {
	case GT_GROUP_NONE:
		break; /* nothing to read: one group for all its calls */
	case GT_GROUP_STACK:
		stack_key(ctx, key, bias);
		break;
	case GT_GROUP_STRING:
		string_key(spec, &run, key);
		break;
	default:
		found = word_value(&spec->a, &run, &v);
		if (found)
			key->status = word_status(found);
		else if (spec->kind != GT_GROUP_TYPE)
			key->value = v;
		else if (v)
			key->value = v - bias; /* the descriptor's link-time address */
		else
			key->status = GT_GROUP_NIL;
	}
	return 0;
}

/* Runs `recipe` (if any) against the registers of `ctx`, after the stack walk when `walk` (an
 * entry, under --stack), sends the scratch event with its captures and releases the scratch
 * space. A call record that cannot be sent counts `lost` (a stat); an entry's memory record
 * (lost < 0) does not: its call says so when it arrives. */
static __always_inline void send_scratch(struct pt_regs *ctx, struct gt_scratch *s,
					 struct gt_recipe *recipe, int lost, int walk)
{
	save_int_regs(s->regs, ctx);
	s->sp = ctx->rsp;
	s->payload_len = 0;
	s->hdr.stack_len = 0;
	s->hdr.stack_end = GT_STACK_NONE;
	if (stack_mode && walk)
		walk_stack(ctx, s);
	s->main_first = recipe ? recipe->first : 0;
	s->main_count = !recipe ? 0 : recipe->count < GT_MAX_OPS ? recipe->count : GT_MAX_OPS;
	s->main_index = 0;
	s->dyn_count = 0;
	s->dyn_index = 0;
	bpf_loop(GT_MAX_STEPS, capture_step, NULL, 0);
	__u32 len = s->payload_len;
	if (len > GT_PAYLOAD_MAX)
		len = GT_PAYLOAD_MAX;
	s->hdr.payload_len = len;
	if (bpf_ringbuf_output(&events, &s->hdr, sizeof(s->hdr) + len, submit_flags()) && lost >= 0)
		count(lost);
	__sync_fetch_and_add(&s->busy, -1);
}

static __always_inline struct gt_event *reserve_event(__u32 lost)
{
	struct gt_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		count(lost);
	return e;
}

/* Fills a call's event in place with FILL (which writes through `e`) and sends it: straight from
 * the ring buffer when the site reads no memory, through the scratch space when it runs a recipe.
 * A call whose record cannot be sent is counted as lost, by cause. */
#define EMIT(ctx, recipe, walk, FILL)                                             \
	do {                                                                     \
		if (recipe || (stack_mode && walk)) {                           \
			struct gt_scratch *scratch_ = claim_scratch();           \
			if (scratch_) {                                          \
				struct gt_event *e = &scratch_->hdr;             \
				FILL;                                            \
				send_scratch(ctx, scratch_, recipe, GT_STAT_LOST, walk); \
			} else {                                                 \
				count(GT_STAT_BUSY);                             \
			}                                                        \
		} else {                                                         \
			struct gt_event *e = reserve_event(GT_STAT_LOST);        \
			if (e) {                                                 \
				FILL;                                            \
				e->payload_len = 0;                              \
				e->stack_len = 0;                                \
				e->stack_end = GT_STACK_NONE;                    \
				bpf_ringbuf_submit(e, submit_flags());           \
			}                                                        \
		}                                                                \
	} while (0)

static __always_inline struct gt_recipe *recipe_for(__u32 func, __u32 kind)
{
	if (!has_recipes)
		return NULL;
	__u32 key = func * 2 + kind;
	struct gt_recipe *r = bpf_map_lookup_elem(&recipes, &key);
	return r && r->count ? r : NULL;
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

/* The entry half of an event, from a call in flight; the return half zeroed. */
static __always_inline void fill_header(struct gt_event *e, __u32 kind, struct gt_frame_key *key,
					struct gt_inflight *call)
{
	e->kind = kind;
	e->entry_ns = call->entry_ns;
	e->goid = key->system ? 0 : key->goid;
	e->call_id = call->call_id;
	e->entry_sp = call->sp;
	e->load_bias = position_independent ? load_bias(key->tgid) : 0;
	e->pid = key->tgid;
	e->entry_tid = call->tid;
	e->func = call->func;
	__builtin_memcpy(e->entry_regs, call->regs, sizeof(e->entry_regs));
	e->return_ns = 0;
	e->return_sp = 0;
	e->return_tid = 0;
	e->stack_len = 0;
	e->stack_end = GT_STACK_NONE;
	__builtin_memset(e->return_regs, 0, sizeof(e->return_regs));
}

static __always_inline void fill_return(struct gt_event *e, struct pt_regs *ctx, __u64 now,
					__u32 tid)
{
	e->return_ns = now;
	e->return_tid = tid;
	e->return_sp = ctx->rsp;
	save_int_regs(e->return_regs, ctx);
}

/* A call that ended without a return: only what its entry recorded. */
static __always_inline void emit_unreturned(__u32 kind, struct gt_frame_key *key,
					    struct gt_inflight *call)
{
	if (stats_mode) {
		stat_unreturned(call->func, kind, &call->group);
		return;
	}
	struct gt_event *e = reserve_event(GT_STAT_LOST);
	if (!e)
		return;
	fill_header(e, kind, key, call);
	e->payload_len = 0;
	bpf_ringbuf_submit(e, submit_flags());
}

/* Unwinds a goroutine's chain of calls in flight: every call deeper than `limit` (or as deep,
 * when `inclusive`) is gone without a return. One step per call, so there is no depth limit. */
struct unwind_ctx {
	struct gt_goroutine_key g;
	__u64 limit;
	__u32 inclusive;
	/* Unless a panic is under way: GT_EVENT_PANICKED (a recovery), GT_EVENT_EXITED (Goexit), or
	 * GT_EVENT_RETURN_NOT_SEEN (a later call in the same frame or below). */
	__u32 kind;
};

static long unwind_step(__u64 index, void *arg)
{
	struct unwind_ctx *u = arg;
	struct gt_goroutine *state = bpf_map_lookup_elem(&goroutines, &u->g);
	if (!state)
		return 1;
	__u64 top = state->top;
	if (!top || (u->inclusive ? top < u->limit : top <= u->limit))
		return 1;
	struct gt_frame_key gone = {
		.tgid = u->g.tgid,
		.system = u->g.system,
		.goid = u->g.goid,
		.frame = top,
	};
	struct gt_inflight *found = bpf_map_lookup_elem(&inflight, &gone);
	if (!found) {
		/* Claimed by user space (the process exited): nothing below is ours either. */
		state->top = 0;
		return 1;
	}
	struct gt_inflight call = *found;
	state->top = call.parent;
	/* Whoever deletes a call reports it: exactly once, even against user space's drain. */
	if (bpf_map_delete_elem(&inflight, &gone))
		return 0;
	/* A system stack is never unwound by a panic: the runtime reset it (mcall, gogo). */
	__u32 kind = u->g.system ? GT_EVENT_ABANDONED
		     : state->panicking ? GT_EVENT_PANICKED : u->kind;
	if (!call.filtered)
		emit_unreturned(kind, &gone, &call);
	return 0;
}

/* Enough for any real stack: a goroutine's stack is at most 1 GB, a frame at least 8 bytes. */
#define GT_UNWIND_MAX (1 << 23)

static __always_inline void unwind(struct gt_goroutine_key *g, __u64 limit, int inclusive,
				   __u32 kind)
{
	/* The common case, nothing to unwind, costs one lookup. */
	struct gt_goroutine *state = bpf_map_lookup_elem(&goroutines, g);
	if (!state || !state->top || (inclusive ? state->top < limit : state->top <= limit))
		return;
	struct unwind_ctx u = {
		.g = *g,
		.limit = limit,
		.inclusive = inclusive,
		.kind = kind,
	};
	bpf_loop(GT_UNWIND_MAX, unwind_step, &u, 0);
}

static __always_inline struct gt_goroutine_key goroutine_key(struct gt_frame_key *key)
{
	struct gt_goroutine_key g = { .tgid = key->tgid, .system = key->system, .goid = key->goid };
	return g;
}

/* runtime.gopanic, runtime.goexit1, runtime.fatalpanic: the goroutine's traced calls in flight
 * will be unwound (a panic), or are now (Goexit, an unrecovered panic). */
static __always_inline int on_runtime_hook(__u32 kind, struct gt_frame_key *key)
{
	struct gt_goroutine_key g = goroutine_key(key);
	struct gt_goroutine *state = bpf_map_lookup_elem(&goroutines, &g);
	if (!state)
		return 0;
	switch (kind) {
	case GT_SITE_GOPANIC:
		state->panicking = 1;
		break;
	case GT_SITE_FATALPANIC:
		state->panicking = 1;
		unwind(&g, 0, 0, GT_EVENT_PANICKED);
		break;
	case GT_SITE_GOEXIT:
		unwind(&g, 0, 0, GT_EVENT_EXITED);
		bpf_map_delete_elem(&goroutines, &g);
		break;
	}
	return 0;
}

/* runtime.recovery(gp): a deferred call recovered gp's panic; gp resumes in the recovering frame
 * at the stack pointer the runtime kept for it, and every traced frame below is gone now. It runs
 * on the system stack (R14 is g0), so the goroutine comes from its argument. */
static __always_inline int on_recovery(struct pt_regs *ctx, __u32 tgid)
{
	void *gp = (void *)ctx->rax;
	__u64 goid = 0, stack_hi = 0, sp = 0;
	if (bpf_probe_read_user(&goid, sizeof(goid), gp + goid_offset) ||
	    bpf_probe_read_user(&stack_hi, sizeof(stack_hi), gp + stack_hi_offset))
		return 0;
	struct gt_goroutine_key g = { .tgid = tgid, .goid = goid };
	struct gt_goroutine *state = bpf_map_lookup_elem(&goroutines, &g);
	if (!state)
		return 0;
	if (resume_sp_mode == 1) {
		if (bpf_probe_read_user(&sp, sizeof(sp), gp + g_sigcode0_offset))
			return 0;
	} else if (resume_sp_mode == 2) {
		void *p = 0;
		if (bpf_probe_read_user(&p, sizeof(p), gp + g_panic_offset) ||
		    bpf_probe_read_user(&sp, sizeof(sp), p + panic_sp_offset))
			return 0;
	}
	/* No usable resume point: the next traced event of the goroutine settles it. */
	if (!sp || sp > stack_hi)
		return 0;
	unwind(&g, stack_hi - sp, 0, GT_EVENT_PANICKED);
	state = bpf_map_lookup_elem(&goroutines, &g);
	if (state)
		state->panicking = 0;
	return 0;
}

static __always_inline void note_process(__u32 tgid)
{
	if (bpf_map_lookup_elem(&processes, &tgid))
		return;
	__u8 one = 1;
	bpf_map_update_elem(&processes, &tgid, &one, BPF_NOEXIST);
}

static __always_inline struct gt_inflight new_call(struct pt_regs *ctx, __u64 cookie, __u32 tid,
						   __u64 now)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&call_seq, &zero);
	__u64 n = seq ? ++*seq : 0;
	struct gt_inflight call = {
		.entry_ns = now,
		.call_id = (__u64)bpf_get_smp_processor_id() << 48 | (n & ((1ULL << 48) - 1)),
		.sp = ctx->rsp,
		.func = GT_COOKIE_FUNC(cookie),
		.tid = tid,
	};
	save_int_regs(call.regs, ctx);
	return call;
}

/* The entry's memory (and its stack, under --stack) goes now; its registers travel with the
 * call record. */
static __always_inline void send_entry_data(struct pt_regs *ctx, struct gt_frame_key *key,
					    struct gt_inflight *call)
{
	struct gt_recipe *recipe = recipe_for(call->func, GT_SITE_ENTRY);
	if (!recipe && !stack_mode)
		return;
	struct gt_scratch *scratch_ = claim_scratch();
	if (scratch_) {
		fill_header(&scratch_->hdr, GT_EVENT_ENTRY_DATA, key, call);
		send_scratch(ctx, scratch_, recipe, -1, 1);
	}
}

/* Why a call starting now is not reported (GT_REPORTED: it is): over its function's
 * --max-rate (every call counts toward the rate), not one of --sample's, or not passing a
 * --where decided at the entry. Counted by cause. */
static __always_inline __u32 left_out_at_entry(struct pt_regs *ctx, struct gt_inflight *call,
					       __u64 now)
{
	if (max_rate) {
		__u32 func = call->func;
		struct gt_rate_window *w = bpf_map_lookup_elem(&rate_windows, &func);
		if (w) {
			__u64 window = now >> 30;
			if (w->window != window) {
				w->window = window;
				w->calls = 0;
			}
			if (__sync_fetch_and_add(&w->calls, 1) >= max_rate) {
				__u64 *over = bpf_map_lookup_elem(&over_rate, &func);
				if (over)
					__sync_fetch_and_add(over, 1);
				count(GT_STAT_OVER_RATE);
				return GT_LEFT_OUT_RATE;
			}
		}
	}
	if (sample_every > 1) {
		__u32 zero = 0;
		__u64 *seen = bpf_map_lookup_elem(&sample_seen, &zero);
		if (seen && (*seen)++ % sample_every) {
			count(GT_STAT_SAMPLED_OUT);
			return GT_LEFT_OUT_SAMPLE;
		}
	}
	if (has_filter && !passes_filter(ctx, call, 0)) {
		count(GT_STAT_FILTERED);
		return GT_LEFT_OUT_WHERE;
	}
	return GT_REPORTED;
}

static __always_inline int on_entry(struct pt_regs *ctx, __u64 cookie, struct gt_frame_key *key,
				    __u32 tid, __u64 now)
{
	struct gt_inflight *old = bpf_map_lookup_elem(&inflight, key);
	/* The same call again after a stack-growth restart: keep its first entry. */
	if (old && GT_COOKIE_MAY_RESTART(cookie) && old->func == GT_COOKIE_FUNC(cookie))
		return 0;

	struct gt_goroutine_key g = goroutine_key(key);
	if (!bpf_map_lookup_elem(&goroutines, &g)) {
		struct gt_goroutine fresh = {};
		bpf_map_update_elem(&goroutines, &g, &fresh, BPF_NOEXIST);
	}
	/* A call at or below this frame still in flight was unwound by a panic, or its return
	 * was not seen. */
	unwind(&g, key->frame, 1, GT_EVENT_RETURN_NOT_SEEN);
	struct gt_goroutine *state = bpf_map_lookup_elem(&goroutines, &g);
	if (!state) {
		count(GT_STAT_INFLIGHT_FULL);
		return 0;
	}
	struct gt_inflight call = new_call(ctx, cookie, tid, now);
	call.parent = state->top;
	/* Left out at the entry, the call is still held in flight: its return must pair. */
	if (has_filter || sample_every > 1 || max_rate)
		call.filtered = left_out_at_entry(ctx, &call, now);
	if (group_mode && !call.filtered)
		group_key(ctx, &call, 0);
	if (bpf_map_update_elem(&inflight, key, &call, BPF_ANY)) {
		count(GT_STAT_INFLIGHT_FULL);
		return 0;
	}
	state->top = key->frame;
	note_process(key->tgid);
	if (!call.filtered)
		send_entry_data(ctx, key, &call);
	return 0;
}

/* Whether a returning call is reported: not filtered out at its entry, passing a --where
 * decided at the return, and lasting --min-duration. */
static __always_inline int reported_at_return(struct pt_regs *ctx, struct gt_inflight *call,
					      __u64 now)
{
	if (call->filtered)
		return 0;
	int passes = !has_filter || passes_filter(ctx, call, 1);
	if (passes && min_duration_ns && now - call->entry_ns < min_duration_ns)
		passes = 0;
	if (!passes)
		count(GT_STAT_FILTERED);
	return passes;
}

static __always_inline int on_return(struct pt_regs *ctx, __u64 cookie, struct gt_frame_key *key,
				     __u32 tid, __u64 now)
{
	struct gt_inflight *found = bpf_map_lookup_elem(&inflight, key);
	if (!found || found->func != GT_COOKIE_FUNC(cookie)) {
		count(GT_STAT_UNMATCHED_RETURN);
		return 0;
	}
	struct gt_goroutine_key g = goroutine_key(key);
	/* Calls deeper than this one still in flight were unwound (a panic recovered here), or
	 * their returns were not seen. */
	unwind(&g, key->frame, 0, GT_EVENT_RETURN_NOT_SEEN);
	found = bpf_map_lookup_elem(&inflight, key);
	if (!found)
		return 0;
	struct gt_inflight call = *found;
	if (bpf_map_delete_elem(&inflight, key))
		return 0;
	struct gt_goroutine *state = bpf_map_lookup_elem(&goroutines, &g);
	if (state) {
		state->top = call.parent;
		if (!call.parent)
			state->panicking = 0;
	}
	if ((call.filtered || has_filter || min_duration_ns) && !reported_at_return(ctx, &call, now))
		return 0;
	if (stats_mode) {
		if (group_mode)
			group_key(ctx, &call, 1);
		stat_return(ctx, call.func, now - call.entry_ns, group_mode ? &call.group : NULL);
		return 0;
	}
	struct gt_recipe *recipe = recipe_for(call.func, GT_SITE_RETURN);
	EMIT(ctx, recipe, 0, fill_header(e, GT_EVENT_CALL, key, &call); fill_return(e, ctx, now, tid));
	return 0;
}

/* A function whose entry site is its only RET: the call begins and returns at this instruction,
 * so it is reported at once and never held in flight. */
static __always_inline int on_entry_return(struct pt_regs *ctx, __u64 cookie,
					   struct gt_frame_key *key, __u32 tid, __u64 now)
{
	struct gt_goroutine_key g = goroutine_key(key);
	if (bpf_map_lookup_elem(&goroutines, &g))
		unwind(&g, key->frame, 1, GT_EVENT_RETURN_NOT_SEEN);
	struct gt_inflight call = new_call(ctx, cookie, tid, now);
	if ((has_filter || sample_every > 1 || max_rate) && left_out_at_entry(ctx, &call, now))
		return 0;
	if ((has_filter || min_duration_ns) && !reported_at_return(ctx, &call, now))
		return 0;
	if (stats_mode) {
		if (group_mode) {
			group_key(ctx, &call, 0);
			group_key(ctx, &call, 1);
		}
		stat_return(ctx, call.func, 0, group_mode ? &call.group : NULL);
		return 0;
	}
	send_entry_data(ctx, key, &call);
	struct gt_recipe *recipe = recipe_for(call.func, GT_SITE_RETURN);
	EMIT(ctx, recipe, 0, fill_header(e, GT_EVENT_CALL, key, &call); fill_return(e, ctx, now, tid));
	return 0;
}

/* Entry-only tracing: no pairing, so no frame, no tables: the cheapest path to an event. */
static __always_inline int on_entry_only(struct pt_regs *ctx, __u64 cookie, __u32 tgid, __u32 tid,
					 __u64 goid, __u64 now)
{
	__u32 func = GT_COOKIE_FUNC(cookie);
	if (has_filter || sample_every > 1 || max_rate || group_mode) {
		struct gt_inflight call = new_call(ctx, cookie, tid, now);
		if (left_out_at_entry(ctx, &call, now))
			return 0;
		if (group_mode) {
			group_key(ctx, &call, 0);
			stat_entered(func, &call.group);
			return 0;
		}
	}
	if (stats_mode) {
		stat_entered(func, NULL);
		return 0;
	}
	struct gt_recipe *recipe = recipe_for(func, GT_SITE_ENTRY);
	EMIT(ctx, recipe, 1, {
		e->kind = GT_EVENT_ENTRY;
		e->entry_ns = now;
		e->return_ns = 0;
		e->goid = goid;
		e->call_id = 0;
		e->entry_sp = ctx->rsp;
		e->return_sp = 0;
		e->load_bias = position_independent ? load_bias(tgid) : 0;
		e->pid = tgid;
		e->entry_tid = tid;
		e->return_tid = 0;
		e->func = func;
		save_int_regs(e->entry_regs, ctx);
	});
	return 0;
}

static __always_inline int on_site(struct pt_regs *ctx)
{
	/* Counting entries takes no time stamp. */
	__u64 now = stats_mode && entry_only ? 0 : bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (target_tgid && tgid != target_tgid)
		return 0;
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 kind = GT_COOKIE_KIND(cookie);
	if (will_grow_stack(GT_COOKIE_SKIP(cookie), ctx->eflags)) {
		if (kind == GT_SITE_ENTRY)
			count(GT_STAT_GROWTH_SKIPPED);
		return 0;
	}
	/* Counting entries needs nothing from the goroutine: the cheapest path of all. Not even
	 * the phase: nothing here pairs, and what is counted until the probes are gone is read
	 * after they are. */
	if (stats_mode && !has_filter && !group_mode && (entry_only || kind == GT_SITE_INLINED)) {
		stat_entered(GT_COOKIE_FUNC(cookie), NULL);
		return 0;
	}
	int starts_call =
		kind == GT_SITE_ENTRY || kind == GT_SITE_ENTRY_RETURN || kind == GT_SITE_INLINED;
	__u32 zero = 0;
	__u32 *now_phase = bpf_map_lookup_elem(&phase, &zero);
	if (!now_phase || *now_phase != GT_PHASE_TRACING) {
		/* A call in flight stays in the table: user space reports it in flight. */
		if (starts_call && now_phase && *now_phase == GT_PHASE_STOPPING)
			count(GT_STAT_STOPPING);
		return 0;
	}
	if (starts_call)
		learn_load_bias(ctx, tgid, GT_COOKIE_FUNC(cookie));
	if (kind == GT_SITE_RECOVERY)
		return on_recovery(ctx, tgid);

	/* R14 holds the current goroutine's g at every ABIInternal entry and RET. */
	void *g = (void *)ctx->r14;
	__u64 goid = 0, stack_hi = 0;
	/* A probe cannot wait for memory: a page of the Go heap being moved is unreadable for an
	 * instant. At an entry the call is lost; at a return or runtime hook, a call in flight
	 * will show as not returned (or not seen returning): counted, so the summary says why. */
	if (bpf_probe_read_user(&goid, sizeof(goid), g + goid_offset)) {
		count(starts_call ? GT_STAT_READ_FAILED : GT_STAT_SITE_UNREAD);
		return 0;
	}
	/* An inlined call has no return to pair with: reported at once, like entry-only mode. */
	if (entry_only || kind == GT_SITE_INLINED)
		return on_entry_only(ctx, cookie, tgid, (__u32)pid_tgid, goid, now);
	if (bpf_probe_read_user(&stack_hi, sizeof(stack_hi), g + stack_hi_offset)) {
		count(starts_call ? GT_STAT_READ_FAILED : GT_STAT_SITE_UNREAD);
		return 0;
	}
	/* goid 0 is a system goroutine (g0, gsignal): one per thread, told apart by address. */
	struct gt_frame_key key = {
		.tgid = tgid,
		.system = goid == 0,
		.goid = goid ? goid : (__u64)g,
		.frame = stack_hi - ctx->rsp,
	};
	switch (kind) {
	case GT_SITE_ENTRY:
		return on_entry(ctx, cookie, &key, (__u32)pid_tgid, now);
	case GT_SITE_RETURN:
		return on_return(ctx, cookie, &key, (__u32)pid_tgid, now);
	case GT_SITE_ENTRY_RETURN:
		return on_entry_return(ctx, cookie, &key, (__u32)pid_tgid, now);
	default:
		return on_runtime_hook(kind, &key);
	}
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

/* A thread group's leader exits: the process is gone, and so are its calls in flight. User space
 * reports them (it holds their entries' memory) when this event reaches it. */
SEC("raw_tp/sched_process_exit")
int gotrace_process_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if ((__u32)pid_tgid != tgid || !bpf_map_lookup_elem(&processes, &tgid))
		return 0;
	bpf_map_delete_elem(&processes, &tgid);
	struct gt_event *e = reserve_event(GT_STAT_EXIT_LOST);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = GT_EVENT_PROCESS_EXIT;
	e->pid = tgid;
	e->return_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}
