"""Unstructured global magnitude pruning: the `setting` fraction of all real Linear weights (hidden and output
layers together) with the smallest |w| is masked (``round(fraction * n)`` weights, as ``torch.nn.utils.prune``;
ties go to the lower flat index)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from neon_jax import nets
from neon_jax.pruning.masks import smallest_mask, unstructured_cut
from neon_jax.pruning.method import PruningMethod, check_fraction, register

MAGNITUDE_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9)  # the 2020 "Pruning" sweep (§9)


def magnitude_masks(params: dict, arch: nets.Arch, dims: nets.NetDims, fraction) -> list[jax.Array]:
    """Keep masks of global unstructured magnitude pruning: ``round(fraction * n_real)`` of all real Linear
    weights (every layer together) with the smallest |w| are pruned. Returns one mask per `kernel_names`."""
    kernels = nets.kernels(params, dims.max_hidden)
    real = nets.real_weight_masks(arch, dims)
    scores = jnp.concatenate([jnp.abs(k).reshape(-1) for k in kernels])
    real_flat = jnp.concatenate([r.reshape(-1) for r in real])
    n_prune = jnp.round(fraction * real_flat.sum()).astype(jnp.int32)
    keep = smallest_mask(scores, real_flat, n_prune)
    sizes = np.cumsum([k.size for k in kernels])[:-1]
    return [m.reshape(k.shape) for m, k in zip(jnp.split(keep, sizes), kernels)]


class Magnitude(PruningMethod):
    name = "magnitude"
    description = "unstructured global L1-magnitude pruning of all Linear weights; setting = fraction pruned"
    counting = "unstructured"
    sweep = MAGNITUDE_FRACTIONS
    default = 0.8  # the b97fb33 pruning runner's 80 %

    def check(self, setting):
        return self.default if setting is None else check_fraction(
            self.name, setting, "the share of weights / neurons removed")

    def arrays(self, setting, dims):
        return {"fraction": jnp.float32(setting)}

    def prune(self, key, p, setting, ctx):
        masks = magnitude_masks(p.variables["params"], p.arch, ctx.dims, setting["fraction"])
        return unstructured_cut(p.variables, p.arch, masks, ctx.dims)


register(Magnitude())
