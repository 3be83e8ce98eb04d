"""Neuron pruning: every hidden layer loses ``floor(setting * width)`` neurons (at least one kept), those with the
smallest L1 norm of their incoming weights (``ln_structured(n=1, dim=0)``, the environment's ``--prune`` mode,
§2.7); their biases, outgoing weights and batch-norm entries go with them."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from neon_jax import nets
from neon_jax.pruning.masks import smallest_mask
from neon_jax.pruning.method import PruningMethod, check_fraction, register

STRUCTURED_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def structured_remove_table(ratio: float, w_max: int) -> np.ndarray:
    """(w_max + 1,) int32 neurons removed from a layer of each width: ``floor(ratio * width)``, at least one kept.

    Host float64 with a 1e-9 guard, so 0.7 * 10 removes 7 (a float32 product would give 6.9999995 -> 6)."""
    return np.array([min(math.floor(ratio * w + 1e-9), max(w - 1, 0)) for w in range(w_max + 1)], np.int32)


def structured_arch(params: dict, arch: nets.Arch, dims: nets.NetDims, remove_table) -> nets.Arch:
    """Removes from every hidden layer `remove_table[width]` alive neurons with the smallest L1 norm of incoming
    weights (ties: lower index first). Returns the narrowed `Arch` (the caller zeroes the dead weights)."""
    masks = []
    for j in range(dims.max_hidden):
        alive = arch.mask[j]
        norms = nets.fit_width(jnp.abs(nets.kernel(params, j, dims.max_hidden)).sum(0), dims.w_max)
        n_remove = remove_table[alive.sum().astype(jnp.int32)]
        removed = smallest_mask(norms, alive, n_remove) == 0
        masks.append(jnp.where(removed, 0.0, alive))
    return arch.replace(mask=jnp.stack(masks))


class Structured(PruningMethod):
    name = "structured"
    description = "neuron pruning by the L1 norm of incoming weights; setting = fraction of each hidden layer"
    sweep = STRUCTURED_RATIOS
    default = 0.5  # half of every layer

    def check(self, setting):
        return self.default if setting is None else check_fraction(
            self.name, setting, "the share of weights / neurons removed")

    def arrays(self, setting, dims):
        return {"remove": jnp.asarray(structured_remove_table(setting, dims.w_max))}

    def prune(self, key, p, setting, ctx):
        arch = structured_arch(p.variables["params"], p.arch, ctx.dims, setting["remove"])
        return {"variables": nets.zero_dead(p.variables, arch, ctx.dims), "arch": arch, "masks": None, "extra": {},
                "params_after": None}


register(Structured())
