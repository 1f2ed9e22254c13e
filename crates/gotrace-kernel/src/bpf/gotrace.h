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
	GT_SITE_GOPANIC = 2,    /* runtime.gopanic: the goroutine starts panicking */
	GT_SITE_GOEXIT = 3,     /* runtime.goexit1: the goroutine ends (returned or Goexit) */
	GT_SITE_FATALPANIC = 4, /* runtime.fatalpanic: an unrecovered panic kills the process */
	GT_SITE_RECOVERY = 5,   /* runtime.recovery: a recovered panic unwinds the frames below */
	GT_SITE_ENTRY_RETURN = 6, /* a body that is a single RET: entry and return at once */
	GT_SITE_INLINED = 7, /* a body the compiler inlined: an entry with no return of its own */
};

enum gt_skip {
	GT_SKIP_NEVER = 0,
	GT_SKIP_IF_CF = 1,    /* jb: taken when CF=1 */
	GT_SKIP_IF_CF_ZF = 2, /* jbe: taken when CF=1 or ZF=1 */
};

/* The cookie's layout, the one definition: the skeleton carries it into Rust, which builds
 * cookies with these shifts (a test decodes Rust's cookies with the macros below). */
enum gt_cookie {
	GT_COOKIE_KIND_SHIFT = 32,
	GT_COOKIE_SKIP_SHIFT = 40,
	GT_COOKIE_MAY_RESTART_SHIFT = 48,
	GT_COOKIE_FIELD_MASK = 0xff, /* kind and skip: 8 bits each */
};

#define GT_COOKIE_FUNC(c) ((__u32)(c))
#define GT_COOKIE_KIND(c) ((__u32)(((c) >> GT_COOKIE_KIND_SHIFT) & GT_COOKIE_FIELD_MASK))
#define GT_COOKIE_SKIP(c) ((__u32)(((c) >> GT_COOKIE_SKIP_SHIFT) & GT_COOKIE_FIELD_MASK))
#define GT_COOKIE_MAY_RESTART(c) (((c) >> GT_COOKIE_MAY_RESTART_SHIFT) & 1)

/* Where a session is, in entry 0 of the `phase` map. Probes attach one site after another, and a
 * call whose entry was probed before its return was could never be paired: nothing is traced
 * until every site is in place, and nothing after gotrace begins to stop. */
enum gt_phase {
	GT_PHASE_ATTACHING = 0, /* some sites may not be probed yet: a hit does nothing */
	GT_PHASE_TRACING = 1,
	GT_PHASE_STOPPING = 2, /* the calls a hit would begin are counted, not traced */
};

enum gt_event_kind {
	GT_EVENT_CALL = 1,       /* an entry paired with its return (+ the return's captures) */
	GT_EVENT_ENTRY = 2,      /* an entry, in entry-only mode (+ the entry's captures) */
	GT_EVENT_PANICKED = 3,   /* a call unwound by a panic: it never returned */
	GT_EVENT_ENTRY_DATA = 4, /* the entry's captures of a call whose GT_EVENT_CALL follows */
	GT_EVENT_EXITED = 5,     /* a call cut short by runtime.Goexit */
	GT_EVENT_ABANDONED = 6,  /* a system-stack call whose frame the runtime reused */
	GT_EVENT_PROCESS_EXIT = 7, /* a traced process ended: its calls in flight never return */
	/* A call its goroutine went on past with no panic under way: its return was not seen (the
	 * goroutine was unreadable there), so how it ended is not known. */
	GT_EVENT_RETURN_NOT_SEEN = 8,
};

/* How a stack walk (--stack) ended. */
enum gt_stack_end {
	GT_STACK_NONE = 0,       /* not walked */
	GT_STACK_COMPLETE = 1,   /* a frame pointer of 0: the goroutine's first frame was reached */
	GT_STACK_CUT = 2,        /* GT_STACK_MAX pcs kept; the stack goes on */
	GT_STACK_UNREADABLE = 3, /* a frame could not be read */
	GT_STACK_BROKEN = 4,     /* the next frame pointer was not above this one: not followed */
};

/* Every event: this header, then `payload_len` bytes: `stack_len` u64 pcs of the call's stack
 * at entry (the probed pc, the word at SP — the return address at an entry — then the return
 * address of each frame up the frame-pointer chain), then gt_capture records. */
struct gt_event {
	__u64 entry_ns;
	__u64 return_ns;
	__u64 goid;
	__u64 call_id; /* pairs a GT_EVENT_ENTRY_DATA with its call */
	__u64 entry_sp;
	__u64 return_sp;
	__u64 load_bias; /* runtime − link-time address of a position-independent binary */
	__u32 pid;
	__u32 entry_tid;
	__u32 return_tid;
	__u32 func;
	__u32 kind;
	__u32 payload_len;
	__u32 stack_len;
	__u32 stack_end; /* enum gt_stack_end */
	__u64 entry_regs[GT_INT_REGS];
	__u64 return_regs[GT_INT_REGS];
};

/* A call in flight is identified by its goroutine and its frame's distance from the top of the
 * goroutine's stack: stacks move when they grow, that distance does not. A system goroutine
 * (g0 or gsignal: goid 0, one per thread) is identified by its g's address instead. */
struct gt_frame_key {
	__u32 tgid;
	__u32 system; /* 1: `goid` holds the address of a system goroutine's g */
	__u64 goid;
	__u64 frame;
};

/* --by (stats): what a call is grouped by. */
enum gt_group_limits {
	GT_GROUP_STR_MAX = 16, /* bytes of a string key kept (the in-flight record, copied on the 512-byte BPF stack, holds it) */
	GT_GROUPS_MAX = 4096,  /* groups of all functions together */
	GT_GROUP_STACKS_MAX = 4096,
};

enum gt_group_kind {
	GT_GROUP_NONE = 0,   /* nothing read: an inlined copy whose arguments are unknown */
	GT_GROUP_WORD = 1,   /* an integer or bool: word `a` */
	GT_GROUP_STRING = 2, /* the string whose pointer is `a`, length `b` */
	GT_GROUP_TYPE = 3,   /* an interface's dynamic type: word `a` is its type descriptor */
	GT_GROUP_STACK = 4,  /* the call's stack at entry, hashed; the pcs in `group_stacks` */
};

/* Whether a key holds a value, and if not why (the group is shown as `?`). */
enum gt_group_status {
	GT_GROUP_OK = 0,
	GT_GROUP_NIL = 1,        /* a nil pointer on the path (an interface: nil) */
	GT_GROUP_UNREADABLE = 2, /* memory the probe could not read */
	GT_GROUP_NO_RESULT = 3,  /* a result's key, and the call did not return */
	GT_GROUP_BUSY = 4,       /* the CPU's scratch space (for a stack walk) was in use */
};

/* A group: the function and its key. `value` is the word, the type descriptor's link-time
 * address, the string's length, or the stack's hash; `len` the bytes of a string kept, or the
 * pcs of a stack; `end` how a stack walk ended. Zeroed whole: it is hashed as bytes. */
struct gt_group_key {
	__u32 func;
	__u16 status;
	__u8 len;
	__u8 end;
	__u64 value;
	__u8 bytes[GT_GROUP_STR_MAX];
};

struct gt_inflight {
	__u64 entry_ns;
	__u64 call_id;
	__u64 sp;
	__u64 parent; /* frame of the goroutine's next outer traced call in flight; 0: none */
	__u32 func;
	__u32 tid;
	__u64 regs[GT_INT_REGS];
	__u32 filtered; /* an enum gt_left_out: nothing is reported of it */
	__u32 pad;
	struct gt_group_key group; /* --by, decided at the entry (arguments, stack) */
};

/* Why a call held in flight (its return must still pair) is not reported. */
enum gt_left_out {
	GT_REPORTED = 0,
	GT_LEFT_OUT_WHERE = 1,
	GT_LEFT_OUT_SAMPLE = 2,
	GT_LEFT_OUT_RATE = 3,
};

/* --max-rate: a function's calls in the current window of 2^30 ns (about a second). */
struct gt_rate_window {
	__u64 window;
	__u64 calls;
};

/* --where: one postfix program per traced function (gotrace-plan's filter module compiles it).
 * Comparisons push a truth value; AND, OR, NOT combine the top two (one). */
enum gt_filter_limits {
	GT_FILTER_MAX_OPS = 32,
	GT_FILTER_STR_MAX = 64,
	GT_FILTER_MAX_HOPS = 3,
};

enum gt_filter_kind {
	GT_FILTER_CMP = 0, /* word `a` against `value` */
	GT_FILTER_STR = 1, /* the string whose pointer is `a` and length `b` against `literal` */
	GT_FILTER_AND = 2,
	GT_FILTER_OR = 3,
	GT_FILTER_NOT = 4,
	GT_FILTER_NEVER = 5, /* pushes false */
};

enum gt_filter_cmp {
	GT_CMP_EQ = 0,
	GT_CMP_NE = 1,
	GT_CMP_LT = 2,
	GT_CMP_LE = 3,
	GT_CMP_GT = 4,
	GT_CMP_GE = 5,
	GT_CMP_PREFIX = 6, /* strings only */
};

enum gt_word_base {
	GT_WORD_REG = 0, /* integer ABI register `reg` */
	GT_WORD_SP = 1,  /* the stack pointer */
};

/* A word: the base (the entry's, with `at_entry`), then `hops` pointers read at word+off[i],
 * then, with `has_read`, `size` bytes read at word+off[hops]; sign-extended if `is_signed`. */
struct gt_word {
	__u8 base;
	__u8 reg;
	__u8 at_entry;
	__u8 hops;
	__u8 has_read;
	__u8 size;
	__u8 is_signed;
	__u8 pad;
	__s64 off[GT_FILTER_MAX_HOPS + 1];
};

/* --by: a function's key, read at its entry or (a result) at its return. */
struct gt_group_spec {
	__u32 kind; /* enum gt_group_kind */
	__u32 at_return;
	struct gt_word a;
	struct gt_word b;
};

struct gt_filter_op {
	__u32 kind;
	__u32 cmp;
	__u32 literal;
	__u32 pad;
	__s64 value;
	struct gt_word a;
	struct gt_word b;
};

/* A function's program: ops first..first+count of `filter_ops`, run at the entry or return. */
struct gt_filter {
	__u32 first;
	__u32 count;
	__u32 at_return;
	__u32 pad;
};

struct gt_filter_literal {
	__u32 len;
	__u8 bytes[GT_FILTER_STR_MAX];
};

struct gt_goroutine_key {
	__u32 tgid;
	__u32 system;
	__u64 goid;
};

/* A goroutine's traced calls in flight form a chain through `gt_inflight.parent`, innermost
 * first: a return or an entry at some frame proves every deeper one was unwound. */
struct gt_goroutine {
	__u64 top; /* frame of the innermost traced call in flight; 0: none */
	__u32 panicking;
	__u32 pad;
};

/* ---- Capture recipes: which user memory to read at a site, interpreted by one program. ---- */

/* Where an operand's value comes from. */
enum gt_operand_kind {
	GT_OPERAND_NONE = 0,  /* the constant `add` */
	GT_OPERAND_REG = 1,   /* integer ABI register `reg` */
	GT_OPERAND_SP = 2,    /* the stack pointer */
	GT_OPERAND_WORD = 3,  /* the 8-byte word at `off` in the bytes op `op` captured */
	GT_OPERAND_DATA = 4,  /* the data word of the interface a dynamic recipe runs for */
};

struct gt_operand {
	__u8 kind;
	__u8 reg;
	__u16 op;
	__u32 off;
	__s64 add;
};

enum gt_op_kind {
	GT_OP_READ = 0,    /* read len×elem_size bytes (at most max_len) at addr */
	GT_OP_DYNAMIC = 1, /* an interface: run the recipe registered for runtime type `addr`
			      with `len` as its data word; inside such a recipe only as its
			      last op, whose recipe then replaces it (at most GT_MAX_HOPS) */
	GT_OP_GATHER = 2,  /* a Swiss map's full slots: walks the groups (`elem_size` bytes each)
			      that op `addr.op` captured, then op `len.op` (len kind NONE: no
			      second), and for each slot whose control byte (at `len.add` in the
			      group) has its high bit clear copies `addr.add` bytes from
			      `addr.off + slot × len.off` in the group; at most `max_len` bytes */
};

struct gt_op {
	__u8 kind;
	__u8 guard_at_most; /* 1: run only if guard's value <= guard_above instead */
	__u8 pad[2];
	__u32 elem_size; /* READ: 0 means `len` is a byte count, not an element count */
	__u32 max_len;
	__u32 guard_above; /* run only if guard's value > guard_above (guard kind NONE: always) */
	struct gt_operand addr;
	struct gt_operand len;
	struct gt_operand guard;
};

/* The ops of one site kind of one function (or of one dynamic type): a slice of `ops`. */
struct gt_recipe {
	__u32 first;
	__u32 count;
};

enum gt_capture_status {
	GT_CAPTURE_OK = 0,
	GT_CAPTURE_TRUNCATED = 1, /* `want` bytes were asked for, `len` kept */
	GT_CAPTURE_FAULT = 2,     /* the address could not be read */
	GT_CAPTURE_NIL = 3,       /* the address was 0 */
	GT_CAPTURE_NO_ROOM = 4,   /* the event's capture space was used up */
	GT_CAPTURE_GATHERED = 5,  /* a gather's copies of captured bytes: no memory at `addr` */
};

/* One captured memory region, followed by `len` bytes padded to 8. */
struct gt_capture {
	__u64 addr;
	__u64 want;
	__u32 len;
	__u16 op; /* index of the op in its recipe; dynamic sub-ops: GT_DYNAMIC_BASE + index */
	__u8 status;
	__u8 pad;
};

/* An enum rather than #defines so that user space sees the same numbers through BTF. */
enum gt_limits {
	GT_MAX_OPS = 64,        /* per recipe */
	GT_DYNAMIC_BASE = 64,   /* op numbers of a dynamic recipe's ops start here */
	GT_MAX_READ = 8192,     /* bytes one op may read */
	GT_PAYLOAD_MAX = 32768, /* bytes of capture records per event */
	GT_MAX_HOPS = 8,        /* dynamic recipes chained from one (an error wrapping errors) */
	GT_STACK_MAX = 64,      /* pcs of a stack walk (--stack) */
};

/* ---- Counting in the kernel (gotrace stats): no record per call. ---- */

/* The latency histogram's log-linear buckets, the one definition (gotrace_plan::stats checks
 * its copy against these, and a test runs gt_hist_bucket against Rust's): values below
 * 2 << GT_HIST_SUB_BITS have a bucket each, then 1 << GT_HIST_SUB_BITS buckets per power of
 * two. u64::MAX lands in bucket 251; GT_HIST_BUCKETS is a power of two so that a mask bounds
 * an index for the verifier. */
enum gt_hist {
	GT_HIST_SUB_BITS = 2,
	GT_HIST_BUCKETS = 256,
};

static __always_inline __u32 gt_hist_bucket(__u64 v)
{
	if (v < (1 << GT_HIST_SUB_BITS))
		return (__u32)v;
	/* floor(log2(v)) without a loop */
	__u32 e = 0;
	__u64 x = v;
	if (x >> 32) { x >>= 32; e += 32; }
	if (x >> 16) { x >>= 16; e += 16; }
	if (x >> 8) { x >>= 8; e += 8; }
	if (x >> 4) { x >>= 4; e += 4; }
	if (x >> 2) { x >>= 2; e += 2; }
	if (x >> 1) { e += 1; }
	__u32 group = e - GT_HIST_SUB_BITS + 1;
	return (group << GT_HIST_SUB_BITS) +
	       (__u32)((v >> (e - GT_HIST_SUB_BITS)) - (1 << GT_HIST_SUB_BITS));
}

/* One function's counts on one CPU (a per-CPU array indexed by the function's plan index). */
struct gt_func_stats {
	__u64 returned;
	__u64 errors; /* of returned: a non-nil `error` result */
	__u64 panicked;
	__u64 exited;
	__u64 abandoned;
	__u64 return_not_seen;
	__u64 entered; /* entries with no return to wait for: entry-only mode, inlined copies */
	__u64 not_grouped; /* --by: calls counted here but in no group (the group table was full) */
	__u64 total_ns;
	__u64 max_ns;
	__u64 hist[GT_HIST_BUCKETS]; /* returned calls' latency */
};

/* Where a function's `error` result is at its returns: its first word is 0 iff it is nil. */
enum gt_error_at {
	GT_ERROR_NONE = 0,
	GT_ERROR_REG = 1,   /* integer ABI register `reg` */
	GT_ERROR_STACK = 2, /* `sp_offset` bytes above SP at the RET */
};

struct gt_error_result {
	__u32 at;
	__u32 reg;
	__u64 sp_offset;
};

/* Indexes of the per-CPU counters in the `stats` map. Losses count calls, not records. */
enum gt_stat {
	GT_STAT_LOST = 0,             /* calls lost: the ring buffer was full for their record */
	GT_STAT_INFLIGHT_FULL = 1,    /* calls lost: no room to remember them in flight */
	GT_STAT_UNMATCHED_RETURN = 2, /* a return with no entry (call began before attaching) */
	GT_STAT_GROWTH_SKIPPED = 3,   /* entry passes ignored because the stack was about to grow */
	GT_STAT_READ_FAILED = 4,      /* calls lost: the goroutine's g could not be read */
	GT_STAT_TRUNCATED = 5,        /* captures cut to their limit */
	GT_STAT_BUSY = 6,             /* calls lost: the CPU's scratch space was in use */
	GT_STAT_EXIT_LOST = 7,        /* process exits not reported: the ring buffer was full */
	GT_STAT_STOPPING = 8,         /* calls begun after gotrace began to stop: not traced */
	GT_STAT_FILTERED = 9,         /* calls --where or --min-duration left out */
	GT_STAT_FILTER_UNREAD = 10,   /* --where comparisons false because memory was unreadable */
	GT_STAT_SAMPLED_OUT = 11,     /* calls --sample left out */
	GT_STAT_OVER_RATE = 12,       /* calls beyond --max-rate: counted, not reported */
	GT_STAT_SITE_UNREAD = 13,     /* returns and runtime hooks whose goroutine was unreadable */
	GT_STAT_COUNT = 14,
};

#endif
