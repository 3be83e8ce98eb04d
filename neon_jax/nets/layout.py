"""The parameter layout of a masked network: which arrays belong to which layer, and which a fine-tune may train.

A network's variables are ``{"params": ..., "batch_stats": ...}``. Linear ``j`` (0 <= j < max_hidden: hidden
Linear j; j = max_hidden: the output Linear) has a kernel (fan_in_pad, out_pad) and a bias (out_pad,); the
batch-norm in front of hidden Linear j has scale / bias (params) and mean / var (batch_stats) over that Linear's
inputs (entry 0: the features). Every other module reaches the arrays through these functions, by index.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from neon_jax.nets.arch import Arch, NetDims
from neon_jax.nets.shapes import fit_width


def linear_name(j: int, max_hidden: int) -> str:
    """Name (prefix) of Linear `j`: ``layer{j}`` for a hidden Linear, ``output`` for j = max_hidden."""
    return "output" if j == max_hidden else f"layer{j}"


def batchnorm_name(j: int) -> str:
    """Name of the batch-norm in front of hidden Linear `j`."""
    return f"bn{j}"


def kernel(params: dict, j: int, max_hidden: int) -> jax.Array:
    """Kernel of Linear `j` (hidden, or the output Linear for j = max_hidden)."""
    return params[f"{linear_name(j, max_hidden)}_kernel"]


def bias(params: dict, j: int, max_hidden: int) -> jax.Array:
    """Bias of Linear `j`."""
    return params[f"{linear_name(j, max_hidden)}_bias"]


def kernel_names(max_hidden: int) -> list[str]:
    """Parameter names of the max_hidden + 1 kernels: hidden Linears 0.., then the output Linear."""
    return [f"{linear_name(j, max_hidden)}_kernel" for j in range(max_hidden + 1)]


def kernels(params: dict, max_hidden: int) -> list[jax.Array]:
    """The max_hidden + 1 kernels: hidden Linears 0.., then the output Linear."""
    return [kernel(params, j, max_hidden) for j in range(max_hidden + 1)]


def with_kernels(params: dict, new_kernels, max_hidden: int) -> dict:
    """A copy of `params` with the max_hidden + 1 kernels replaced (same order as `kernels`)."""
    out = dict(params)
    for j, k in enumerate(new_kernels):
        out[f"{linear_name(j, max_hidden)}_kernel"] = k
    return out


def batchnorm(variables: dict, j: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(scale, bias, running mean, running var) of the batch-norm in front of hidden Linear `j`."""
    name = batchnorm_name(j)
    p, s = variables["params"][name], variables["batch_stats"][name]
    return p["scale"], p["bias"], s["mean"], s["var"]


def param_layer(name: str, max_hidden: int) -> int:
    """Layer index of a top-level parameter: ``layer{j}_*`` and ``bn{j}`` -> j; ``output_*`` -> max_hidden."""
    if name.startswith("bn"):
        return int(name[2:])
    if name.startswith("layer"):
        return int(name[len("layer"):].split("_")[0])
    if name.startswith("output"):
        return max_hidden
    raise KeyError(f"unexpected parameter {name!r}")


def is_batchnorm(name: str) -> bool:
    return name.startswith("bn")


@struct.dataclass
class Trainable:
    """Which parameters a fine-tune may change (add a leading axis for a batch).

    Attributes:
      linear: (max_hidden + 1,) bool; entry j < max_hidden is hidden Linear j, the last entry the output Linear.
      batchnorm: (max_hidden,) bool; entry j is the batch-norm in front of hidden Linear j.
    """

    linear: jax.Array
    batchnorm: jax.Array

    @classmethod
    def everything(cls, max_hidden: int) -> Trainable:
        return cls(linear=jnp.ones(max_hidden + 1, bool), batchnorm=jnp.ones(max_hidden, bool))

    def of(self, name: str, max_hidden: int) -> jax.Array:
        """() bool: whether the top-level parameter `name` is trainable."""
        j = param_layer(name, max_hidden)
        return self.batchnorm[j] if is_batchnorm(name) else self.linear[j]


def param_mask(trainable: Trainable, params: dict) -> dict:
    """A pytree like `params` of 0/1 float32 scalars: 1 where `trainable` lets the parameter change."""
    max_hidden = trainable.batchnorm.shape[-1]
    return {name: jax.tree_util.tree_map(lambda _, name=name: trainable.of(name, max_hidden).astype(jnp.float32),
                                         leaf)
            for name, leaf in params.items()}


def trainable_rows(layer, arch: Arch, max_hidden: int) -> Trainable:
    """What the original fine-tunes after cutting hidden layer `layer` (neon_spec.md §2.4, rows p-1 and p).

    The narrowed Linear, the next Linear (the output Linear after the last hidden layer), the batch-norms in
    those rows (in front of the next two Linears) and the input batch-norm when layer 0 is cut.
    """
    nxt = jnp.where(layer + 1 >= arch.depth, max_hidden, layer + 1)
    j = jnp.arange(max_hidden + 1)
    linear = (j == layer) | (j == nxt)
    b = jnp.arange(max_hidden)
    batchnorm = ((b == layer + 1) | (b == layer + 2) | ((b == 0) & (layer == 0))) & (b < arch.depth)
    return Trainable(linear=linear, batchnorm=batchnorm)


def real_weight_masks(arch: Arch, dims: NetDims) -> list[jax.Array]:
    """0/1 float masks of the real weights of each Linear (`kernels` order): rows of live inputs x columns of
    live outputs; Linears past the depth are all zero."""
    H = dims.max_hidden
    in_masks = [arch.feature_mask(dims.d_max)] + [arch.mask[j] for j in range(H - 1)]
    masks = [fit_width(in_masks[j], dims.fan_in(j))[:, None] * fit_width(arch.mask[j], dims.width(j))[None, :]
             for j in range(H)]
    last = fit_width(arch.mask[arch.depth - 1], dims.fan_in(H))
    masks.append(last[:, None] * arch.class_mask(dims.k_max).astype(jnp.float32)[None, :])
    return masks


def zero_dead(variables: dict, arch: Arch, dims: NetDims) -> dict:
    """Zeroes every weight, bias and batch-norm affine entry that touches a dead neuron (the invariant
    "dead = zero" that counting, compaction and the state statistics rely on)."""
    H = dims.max_hidden
    params = dict(variables["params"])
    in_masks = [arch.feature_mask(dims.d_max)] + [arch.mask[j] for j in range(H - 1)]
    for j in range(H):
        out_mask = fit_width(arch.mask[j], dims.width(j))
        in_mask = fit_width(in_masks[j], dims.fan_in(j))
        name = linear_name(j, H)
        params[f"{name}_kernel"] = params[f"{name}_kernel"] * in_mask[:, None] * out_mask[None, :]
        params[f"{name}_bias"] = params[f"{name}_bias"] * out_mask
        bn = params[batchnorm_name(j)]
        params[batchnorm_name(j)] = {"scale": jnp.where(in_mask > 0, bn["scale"], 1.0),
                                     "bias": bn["bias"] * in_mask}
    last = fit_width(arch.mask[arch.depth - 1], dims.fan_in(H))
    params["output_kernel"] = params["output_kernel"] * last[:, None]
    return {"params": params, "batch_stats": variables["batch_stats"]}
