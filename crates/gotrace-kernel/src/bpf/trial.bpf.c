// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* A BPF program that does nothing, for trial attachments: whether this kernel has uprobe_multi
 * links at all, and which sites of a batch the kernel refused it refuses. Nothing runs while
 * trying, so no event is reported and no state is left. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("uprobe.multi")
int trial_site(void *ctx)
{
	return 0;
}
