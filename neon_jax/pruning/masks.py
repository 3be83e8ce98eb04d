"""Pure pieces the one-shot pruners share, for one network (vmap them): ranking, keep masks, applying them,
counting what is left. Kernels in the padded layout of `nets` (`nets.kernels` order: hidden Linears, then the
output Linear); real entries per `nets.real_weight_masks`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from neon_jax import nets


def _ranks(scores: jax.Array) -> jax.Array:
    """Rank of every entry in ascending order (ties: lower index first)."""
    order = jnp.argsort(scores, stable=True)
    return jnp.zeros(scores.shape, jnp.int32).at[order].set(jnp.arange(scores.size, dtype=jnp.int32))


def smallest_mask(scores: jax.Array, real: jax.Array, n_prune: jax.Array) -> jax.Array:
    """0/1 keep mask: the `n_prune` real entries with the smallest score get 0; everything else 1."""
    flat = jnp.where(real.reshape(-1) > 0, scores.reshape(-1), jnp.inf)
    return (_ranks(flat) >= n_prune).astype(jnp.float32).reshape(scores.shape)


def layerwise_masks(scores: list[jax.Array], real: list[jax.Array], ratio_hidden, ratio_output,
                    keep_at_least: int = 1) -> list[jax.Array]:
    """Per-Linear keep masks: in each Linear, ``round(ratio * n_real)`` real weights with the smallest score
    are pruned (``ratio_hidden`` for all but the output Linear), keeping at least `keep_at_least` of them."""
    masks = []
    for i, (s, r) in enumerate(zip(scores, real)):
        ratio = ratio_output if i == len(scores) - 1 else ratio_hidden
        n_real = r.sum()
        n_prune = jnp.minimum(jnp.round(ratio * n_real), jnp.maximum(n_real - keep_at_least, 0)).astype(jnp.int32)
        masks.append(smallest_mask(s, r, n_prune))
    return masks


def apply_kernel_masks(variables: dict, masks: list[jax.Array], dims: nets.NetDims) -> dict:
    """Zeroes the pruned weights."""
    H = dims.max_hidden
    kernels = [k * m for k, m in zip(nets.kernels(variables["params"], H), masks)]
    return {"params": nets.with_kernels(variables["params"], kernels, H), "batch_stats": variables["batch_stats"]}


def weight_mask_tree(params: dict, masks: list[jax.Array], dims: nets.NetDims) -> dict:
    """A pytree like `params` for `fit.finetune(weight_mask=...)`: the kernel masks, ones elsewhere."""
    return nets.with_kernels(jax.tree_util.tree_map(jnp.ones_like, params), masks, dims.max_hidden)


def count_unstructured(arch: nets.Arch, masks: list[jax.Array], dims: nets.NetDims) -> jax.Array:
    """() int32 parameters after unstructured pruning: `nets.count_params(arch)` minus the pruned real weights."""
    pruned = sum(((1.0 - m) * r).sum() for m, r in zip(masks, nets.real_weight_masks(arch, dims)))
    return nets.count_params(arch) - pruned.astype(jnp.int32)


def unstructured_cut(variables: dict, arch: nets.Arch, masks: list[jax.Array], dims: nets.NetDims) -> dict:
    """`PruningMethod.prune`'s answer for per-kernel keep masks: the weights zeroed, the masks kept."""
    return {"variables": apply_kernel_masks(variables, masks, dims), "arch": arch, "masks": masks, "extra": {},
            "params_after": None}
