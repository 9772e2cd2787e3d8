// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Global configuration (ag_config) and the mutation journal bits in it. */
#include <errno.h>

#include "internal.h"

int ag_config_get(struct ag_ctx *ctx, struct ag_config *cfg)
{
	return ag_config_read(ctx, cfg);
}

static int modify_config(struct ag_ctx *ctx, void (*edit)(struct ag_config *, __u32), __u32 arg)
{
	struct ag_config cfg;
	int err;

	err = ag_lock(ctx);
	if (err)
		return err;
	err = ag_config_read(ctx, &cfg);
	if (!err) {
		edit(&cfg, arg);
		err = ag_config_write(ctx, &cfg);
	}
	ag_unlock(ctx);
	return err;
}

static void edit_default_action(struct ag_config *cfg, __u32 action)
{
	cfg->default_action = action;
}

static void edit_dry_run(struct ag_config *cfg, __u32 on)
{
	cfg->dry_run = on;
}

static void edit_dirty_set(struct ag_config *cfg, __u32 bits)
{
	cfg->dirty |= bits;
}

static void edit_dirty_clear(struct ag_config *cfg, __u32 bits)
{
	cfg->dirty &= ~bits;
}

int ag_config_set_default_action(struct ag_ctx *ctx, enum ag_action action)
{
	if (action != AG_ACTION_PASS && action != AG_ACTION_DROP)
		return ag_err(EINVAL, "default action must be pass or drop");
	return modify_config(ctx, edit_default_action, action);
}

int ag_config_set_dry_run(struct ag_ctx *ctx, bool on)
{
	return modify_config(ctx, edit_dry_run, on);
}

/* Journal bits: callers already hold the lock (nesting is free). */
int ag_dirty_set(struct ag_ctx *ctx, __u32 bits)
{
	return modify_config(ctx, edit_dirty_set, bits);
}

int ag_dirty_clear(struct ag_ctx *ctx, __u32 bits)
{
	return modify_config(ctx, edit_dirty_clear, bits);
}
