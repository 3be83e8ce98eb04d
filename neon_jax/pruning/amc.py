"""AMC (He et al. 2018, `neon_jax.amc`) as a pruning method: a DDPG agent searches, per network, the share of each
Linear's inputs (= the previous hidden layer's neurons) to keep under a FLOPs budget (`setting` = the share of
FLOPs preserved, the original's 0.2), refitting the next Linear by least squares; the best strategy of the search
is applied and fine-tuned. Its search settings are an `amc.AMCConfig`; the original reported max(pruned,
unpruned) accuracy (§12 C3), here only with ``AMCConfig(floor_accuracy=True)``. Rows add the search's FLOPs ratio
and validation accuracy of the chosen strategy before fine-tuning."""

from __future__ import annotations

import jax.numpy as jnp

from neon_jax import amc, nets
from neon_jax.pruning.method import PruningMethod, check_fraction, register

AMC_PRESERVE = (0.2, 0.35, 0.5, 0.7)  # the original's 0.2, then looser budgets for a front


class AMC(PruningMethod):
    name = "amc"
    description = ("AMC (He et al. 2018): DDPG search of per-layer neuron ratios under a FLOPs budget, least-squares "
                   "refit; setting = share of FLOPs kept")
    sweep = AMC_PRESERVE
    default = 0.2

    def check(self, setting):
        return self.default if setting is None else check_fraction(self.name, setting, "the share of FLOPs kept")

    def arrays(self, setting, dims):
        return {"preserve": jnp.float32(setting)}

    def config(self, dims, amc_config=None, admm_config=None):
        return amc.resolve_refit(amc.resolve_batching(amc_config or amc.AMCConfig()), dims)

    def prune(self, key, p, setting, ctx):
        # AMC's refit tables and calibration inputs are per uniform width: a network padded layer by layer is
        # searched at its w_max (nothing real is cut either way: AMC only removes neurons)
        dims, uniform = ctx.dims, ctx.dims.uniform()
        model = ctx.env.trainer.model.clone(dims=uniform)
        variables, arch = nets.relayout(p.variables, p.arch, dims, uniform)
        variables, arch, found = amc.prune(key, model, variables, arch, uniform, p.finetune, p.val,
                                           setting["preserve"], ctx.config)
        variables, arch = nets.relayout(variables, arch, uniform, dims)
        return {"variables": variables, "arch": arch, "masks": None, "params_after": None,
                "extra": {"amc_flops_ratio": found.best_flops_ratio, "amc_search_val_acc": found.best_val_acc}}

    def floors_accuracy(self, config) -> bool:
        return bool(config.floor_accuracy)

    def sequential(self, config) -> bool:  # the searches one after the other where that is faster
        return config.batching == "map"


register(AMC())
