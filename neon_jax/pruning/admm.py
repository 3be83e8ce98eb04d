"""ADMM pruning (`neon_jax.admm`, the original's runner) as a pruning method: pre-training, ADMM epochs with an L1
proximal step, a hard prune of every Linear weight and batch-norm scale below alpha / rho, and a masked retrain,
all on the fine-tune split with the original's softmax-probability loss (`setting` = alpha, the original's 5e-4:
threshold 0.05). Its retrain is its fine-tune: no other follows (as the original)."""

from __future__ import annotations

import jax.numpy as jnp

from neon_jax import admm
from neon_jax.pruning.method import PruningMethod, check_fraction, register

ADMM_ALPHAS = (admm.ALPHA, 1e-3, 2e-3)  # the original's 5e-4 (threshold 0.05), then 0.1 and 0.2


class ADMM(PruningMethod):
    name = "admm"
    description = "ADMM pruning: L1-proximal ADMM epochs, hard prune below alpha/rho, masked retrain; setting = alpha"
    counting = "unstructured"
    sweep = ADMM_ALPHAS
    default = admm.ALPHA

    def check(self, setting):
        return self.default if setting is None else check_fraction(
            self.name, setting, "alpha", f"admm's setting is alpha (prune threshold alpha / rho), a number in (0, 1), "
                                         f"got {setting!r}")

    def arrays(self, setting, dims):
        return {"alpha": jnp.float32(setting)}

    def config(self, dims, amc_config=None, admm_config=None):
        return admm_config or admm.ADMMConfig()

    def prune(self, key, p, setting, ctx):
        variables, masks = admm.admm_prune(key, p, setting["alpha"], ctx.env.trainer.model, ctx.dims, ctx.config)
        return {"variables": variables, "arch": p.arch, "masks": None, "extra": {},
                "params_after": admm.count_admm(p.arch, masks["kernels"], masks["scales"], ctx.dims)}

    def own_retrain_epochs(self, config) -> int:
        return config.retrain_epochs * config.iters


register(ADMM())
