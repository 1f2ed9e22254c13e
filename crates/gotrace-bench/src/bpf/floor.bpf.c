// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The cost floor for `make bench`: a BPF program that does nothing, attached at exactly the
 * sites gotrace would use. What a call costs under it is what the kernel's uprobe machinery
 * costs (breakpoint, emulation or single-step, running a BPF program); whatever gotrace costs
 * above it is gotrace's own work. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("uprobe.multi")
int floor_site_multi(void *ctx)
{
	return 0;
}

SEC("uprobe")
int floor_site(void *ctx)
{
	return 0;
}
