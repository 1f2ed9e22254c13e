/* Types shared by the BPF program and user space (Rust uses the skeleton's generated copies). */
#ifndef GOTRACE_H
#define GOTRACE_H

/* Go's integer argument/result registers on amd64: RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11. */
#define GT_INT_REGS 9

/* A site's BPF cookie: bits 0-31 the function's index in the probe plan, bits 32-39 the site
 * kind, bits 40-47 when an entry pass must be ignored, bit 48 whether the entry site can fire
 * twice for one call (a stack-growth restart that the site cannot see coming). */
enum gt_site_kind {
	GT_SITE_ENTRY = 0,
	GT_SITE_RETURN = 1,
};

enum gt_skip {
	GT_SKIP_NEVER = 0,
	GT_SKIP_IF_CF = 1,    /* jb: taken when CF=1 */
	GT_SKIP_IF_CF_ZF = 2, /* jbe: taken when CF=1 or ZF=1 */
};

#define GT_COOKIE_FUNC(c) ((__u32)(c))
#define GT_COOKIE_KIND(c) ((__u32)(((c) >> 32) & 0xff))
#define GT_COOKIE_SKIP(c) ((__u32)(((c) >> 40) & 0xff))
#define GT_COOKIE_MAY_RESTART(c) (((c) >> 48) & 1)

enum gt_event_kind {
	GT_EVENT_CALL = 1,      /* an entry paired with its return */
	GT_EVENT_ENTRY = 2,     /* an entry, in entry-only mode */
	GT_EVENT_ABANDONED = 3, /* an entry whose frame was reused before any return was seen */
};

struct gt_event {
	__u64 entry_ns;
	__u64 return_ns;
	__u64 goid;
	__u32 pid;
	__u32 entry_tid;
	__u32 return_tid;
	__u32 func;
	__u32 kind;
	__u32 pad;
	__u64 entry_regs[GT_INT_REGS];
	__u64 return_regs[GT_INT_REGS];
};

/* A call in flight is identified by its goroutine and its frame's distance from the top of the
 * goroutine's stack: stacks move when they grow, that distance does not. */
struct gt_frame_key {
	__u32 tgid;
	__u32 pad;
	__u64 goid;
	__u64 frame;
};

struct gt_inflight {
	__u64 entry_ns;
	__u32 func;
	__u32 tid;
	__u64 regs[GT_INT_REGS];
};

/* Indexes of the per-CPU counters in the `stats` map. */
enum gt_stat {
	GT_STAT_LOST = 0,            /* ring buffer full: event dropped */
	GT_STAT_INFLIGHT_FULL = 1,   /* no room to remember a call: its return will be unmatched */
	GT_STAT_UNMATCHED_RETURN = 2,/* a return with no entry (call began before attaching) */
	GT_STAT_GROWTH_SKIPPED = 3,  /* entry passes ignored because the stack was about to grow */
	GT_STAT_READ_FAILED = 4,     /* the goroutine's g could not be read */
	GT_STAT_COUNT = 5,
};

#endif
