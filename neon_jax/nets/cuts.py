"""Cutting a hidden layer of a masked network to fewer neurons: the two cuts of the environment.

``reinit`` (the original, neon_spec.md §2.3): the narrowed layer and the next Linear are rebuilt at the new width,
freshly initialised as PyTorch does, with the batch-norm on the narrowed layer re-created; the surviving neurons
are the first ``new_width``. ``keep_best`` (beyond the paper): the alive neurons with the largest incoming-weight
L2 norms survive, with their weights. Both leave every weight of a dead neuron at zero (`layout.zero_dead`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from neon_jax.choices import CUTS
from neon_jax.nets.arch import Arch, NetDims
from neon_jax.nets.layout import batchnorm_name, kernel, linear_name, zero_dead
from neon_jax.nets.model import MaskedMLP, init_network


def narrow(arch: Arch, layer, layer_mask: jax.Array) -> Arch:
    """`arch` with hidden layer `layer` (traced int) given the neuron mask `layer_mask` (w_max,)."""
    row_of = jnp.arange(arch.mask.shape[-2])[:, None]
    return arch.replace(mask=jnp.where(row_of == layer, layer_mask[None, :], arch.mask))


def prefix_mask(new_width, w_max: int) -> jax.Array:
    """(w_max,) float mask of the first `new_width` neurons (the rebuilt layer of the ``reinit`` cut)."""
    return (jnp.arange(w_max) < new_width).astype(jnp.float32)


def largest_norm_mask(variables: dict, arch: Arch, dims: NetDims, layer, new_width) -> jax.Array:
    """(w_max,) float mask of the `new_width` alive neurons of hidden layer `layer` (traced) with the largest L2
    norm of incoming weights (ties: lower index first)."""
    params = variables["params"]
    height = max(dims.d_max, dims.w_max)  # the layers' padded shapes differ: compare over a common one
    hidden = [kernel(params, j, dims.max_hidden) for j in range(dims.max_hidden)]
    stacked = jnp.stack([jnp.pad(k, ((0, height - k.shape[0]), (0, dims.w_max - k.shape[1]))) for k in hidden])
    norms = jnp.where(arch.mask[layer] > 0, jnp.sqrt((stacked[layer] ** 2).sum(0)), -1.0)
    rank = jnp.argsort(jnp.argsort(-norms))
    return (rank < new_width).astype(jnp.float32)


def take_rebuilt(variables: dict, fresh: dict, layer, arch: Arch, dims: NetDims,
                 legacy_bn_reset: bool = False) -> dict:
    """The variables after a ``reinit`` cut of hidden layer `layer` (traced): Linears `layer` and `layer + 1`
    (the output Linear after the last hidden layer) and the batch-norm on the narrowed layer from `fresh`
    (initialised for the narrowed `arch`), everything else from `variables`.

    `legacy_bn_reset` reproduces neon_spec.md §12 B2: every batch-norm but the input one and the one after the
    rebuilt Linear is re-created too.
    """
    H = dims.max_hidden
    nxt_is_output = layer + 1 >= arch.depth
    params, stats = dict(variables["params"]), dict(variables["batch_stats"])
    fp, fs = fresh["params"], fresh["batch_stats"]
    sel = lambda c, new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(c, a, b), new, old)  # noqa: E731
    for j in range(H + 1):
        if j < H:
            take_linear = (j == layer) | ((j == layer + 1) & ~nxt_is_output)
        else:
            take_linear = nxt_is_output
        for part in ("kernel", "bias"):
            name = f"{linear_name(j, H)}_{part}"
            params[name] = sel(take_linear, fp[name], params[name])
        if j < H:
            take_bn = j == layer + 1
            if legacy_bn_reset:
                take_bn = (j >= 1) & (j != layer + 2)
            bn = batchnorm_name(j)
            params[bn] = sel(take_bn, fp[bn], params[bn])
            stats[bn] = sel(take_bn, fs[bn], stats[bn])
    # neurons dropped from the narrowed layer keep no outgoing weights ("dead = zero")
    return zero_dead({"params": params, "batch_stats": stats}, arch, dims)


def cut(key: jax.Array, model: MaskedMLP, variables: dict, arch: Arch, layer, new_width, how: str = "reinit",
        legacy_bn_reset: bool = False) -> tuple[dict, Arch]:
    """Narrows hidden layer `layer` (traced) to `new_width` neurons: (variables, arch) before any fine-tuning.

    Args:
      key: initialises the rebuilt Linears (``reinit``; unused by ``keep_best``).
      model: the `MaskedMLP` of this shape (its initialiser rebuilds the layers).
      how: "reinit" (the original) or "keep_best" (beyond the paper).
    """
    dims = model.dims
    if how == "reinit":
        new_arch = narrow(arch, layer, prefix_mask(new_width, dims.w_max))
        fresh = init_network(key, model, new_arch)
        return take_rebuilt(variables, fresh, layer, new_arch, dims, legacy_bn_reset), new_arch
    if how == "keep_best":
        new_arch = narrow(arch, layer, largest_norm_mask(variables, arch, dims, layer, new_width))
        return zero_dead(variables, new_arch, dims), new_arch
    raise ValueError(f"unknown cut {how!r}; choose one of {CUTS}")
