"""Architectures of masked networks: one network's layout (`Arch`), sampling, counting.

Every network of a compiled program has the same array shapes (`shapes.NetDims`), its width the networks' bucket
(`shapes.bucket_width`): input Linear ``(d_max, w_max)``, hidden Linears ``(w_max, w_max)``, output ``(w_max, k_max)``, a
neuron mask per hidden layer ``(max_hidden, w_max)`` (1 = alive), a ``depth`` (hidden layers past it pass their
input through) and per-layer activation and pre-layer codes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from neon_jax.nets.shapes import NetDims
from neon_jax.presets import (
    ACT_RELU,
    ACT_SIGMOID,
    ACT_TANH,
    ACTIVATION_NAMES,
    PRE_BATCHNORM,
    PRE_DROPOUT,
    PRE_NONE,
    Preset,
)


def resize_width(arch: Arch, w_max: int) -> Arch:
    """`arch` (one network or a population) with its neuron masks cut or zero-padded to `w_max` columns; the
    columns cut must hold no alive neuron (checked on the host)."""
    mask = arch.mask
    width = mask.shape[-1]
    if w_max < width:
        if np.asarray(jax.device_get(mask))[..., w_max:].any():
            raise ValueError(f"cannot narrow the masks to {w_max} columns: alive neurons lie beyond it")
        return arch.replace(mask=mask[..., :w_max])
    xp = np if isinstance(mask, np.ndarray) else jnp  # a host mask stays on the host (no one-op program)
    return arch.replace(mask=xp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, w_max - width)]))


def fit_arch(arch: Arch, dims: NetDims) -> Arch:
    """`arch` (one network or a population) with `dims.max_hidden` hidden layers and masks `dims.w_max` wide: layers
    cut must lie past every network's depth (checked on the host, as `resize_width` checks the columns), added ones
    are empty."""
    H, have = dims.max_hidden, arch.mask.shape[-2]
    if H < have:
        if (np.asarray(jax.device_get(arch.depth)) > H).any():
            raise ValueError(f"cannot cut the architectures to {H} hidden layers: a network is deeper")
        arch = arch.replace(mask=arch.mask[..., :H, :], activation=arch.activation[..., :H],
                            pre_layer=arch.pre_layer[..., :H])
    elif H > have:
        xp = np if isinstance(arch.mask, np.ndarray) else jnp
        pad = lambda a, value, extra=0: xp.pad(  # noqa: E731
            a, [(0, 0)] * (a.ndim - 1 - extra) + [(0, H - have)] + [(0, 0)] * extra, constant_values=value)
        arch = arch.replace(mask=pad(arch.mask, 0.0, 1), activation=pad(arch.activation, ACT_RELU),
                            pre_layer=pad(arch.pre_layer, PRE_NONE))
    return resize_width(arch, dims.w_max)


@struct.dataclass
class Arch:
    """Architecture of one network (add a leading axis for a population).

    Attributes:
      depth: () int32, number of hidden layers, 1..max_hidden.
      mask: (max_hidden, w_max) float32, 1 where a hidden neuron is alive; rows >= depth are all zero.
      activation: (max_hidden,) int32, ACT_RELU / ACT_TANH / ACT_SIGMOID of each hidden layer.
      pre_layer: (max_hidden,) int32, PRE_NONE / PRE_DROPOUT / PRE_BATCHNORM in front of each hidden Linear.
      n_features: () int32, real input features (<= d_max).
      n_classes: () int32, real classes (<= k_max).
    """

    depth: jax.Array
    mask: jax.Array
    activation: jax.Array
    pre_layer: jax.Array
    n_features: jax.Array
    n_classes: jax.Array

    @property
    def widths(self) -> jax.Array:
        """(..., max_hidden) int32 alive neurons per hidden layer (0 past the depth)."""
        return self.mask.sum(-1).astype(jnp.int32)

    def feature_mask(self, d_max: int) -> jax.Array:
        return (jnp.arange(d_max) < self.n_features[..., None]).astype(jnp.float32)

    def class_mask(self, k_max: int) -> jax.Array:
        return jnp.arange(k_max) < self.n_classes[..., None]


def make_arch(widths, activation, pre_layer, n_features: int, n_classes: int, dims: NetDims) -> Arch:
    """Builds an `Arch` from plain per-layer lists (length = depth), with prefix masks.

    Args:
      widths: hidden widths, e.g. [300, 100]; each in 1..w_max, at most max_hidden of them.
      activation: activation name or code per hidden layer.
      pre_layer: "none" / "dropout" / "batchnorm" (or codes) per hidden layer.
    """
    widths = [int(w) for w in widths]
    depth = len(widths)
    if not 1 <= depth <= dims.max_hidden:
        raise ValueError(f"a network needs 1..{dims.max_hidden} hidden layers, got {depth}")
    if min(widths) < 1 or max(widths) > dims.w_max:
        raise ValueError(f"hidden widths must be in 1..{dims.w_max}, got {widths}")
    if not 1 <= n_features <= dims.d_max:
        raise ValueError(f"n_features must be in 1..{dims.d_max}, got {n_features}")
    if not 2 <= n_classes <= dims.k_max:
        raise ValueError(f"n_classes must be in 2..{dims.k_max}, got {n_classes}")
    act_codes = [_code(a, ACTIVATION_NAMES) for a in activation]
    pre_codes = [_code(p, ("none", "dropout", "batchnorm")) for p in pre_layer]
    if len(act_codes) != depth or len(pre_codes) != depth:
        raise ValueError("widths, activation and pre_layer must have one entry per hidden layer")
    mask = np.zeros((dims.max_hidden, dims.w_max), np.float32)
    for j, w in enumerate(widths):
        mask[j, :w] = 1.0
    pad = dims.max_hidden - depth
    return Arch(
        depth=jnp.int32(depth), mask=jnp.asarray(mask),
        activation=jnp.asarray(act_codes + [ACT_RELU] * pad, jnp.int32),
        pre_layer=jnp.asarray(pre_codes + [PRE_NONE] * pad, jnp.int32),
        n_features=jnp.int32(n_features), n_classes=jnp.int32(n_classes),
    )


def _code(value, names) -> int:
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"unknown layer kind {value!r}; expected one of {names}")
        return names.index(value)
    return int(value)


def sample_arch(key: jax.Array, preset: Preset, dims: NetDims, n_features, n_classes) -> Arch:
    """Draws one random base-network architecture as the original generator does (neon_spec.md §7).

    Depth uniform in 1..max_hidden; each width uniform over `preset.widths`; in front of each hidden Linear
    Dropout (u <= p_dropout), BatchNorm (u <= p_dropout + p_batchnorm) or nothing; activation Tanh / Sigmoid /
    ReLU with the preset's probabilities. Jittable and vmappable over keys.
    """
    k_depth, k_width, k_pre, k_act = jax.random.split(key, 4)
    depth = jax.random.randint(k_depth, (), 1, preset.max_hidden + 1)
    widths = jax.random.choice(k_width, jnp.asarray(preset.widths), (preset.max_hidden,))
    u = jax.random.uniform(k_pre, (preset.max_hidden,))
    pre = jnp.where(u <= preset.p_dropout, PRE_DROPOUT,
                    jnp.where(u <= preset.p_dropout + preset.p_batchnorm, PRE_BATCHNORM, PRE_NONE))
    v = jax.random.uniform(k_act, (preset.max_hidden,))
    act = jnp.where(v < preset.p_tanh, ACT_TANH, jnp.where(v < preset.p_tanh + preset.p_sigmoid, ACT_SIGMOID, ACT_RELU))
    live = jnp.arange(preset.max_hidden) < depth
    mask = ((jnp.arange(dims.w_max)[None, :] < widths[:, None]) & live[:, None]).astype(jnp.float32)
    return Arch(
        depth=depth.astype(jnp.int32), mask=mask,
        activation=jnp.where(live, act, ACT_RELU).astype(jnp.int32),
        pre_layer=jnp.where(live, pre, PRE_NONE).astype(jnp.int32),
        n_features=jnp.asarray(n_features, jnp.int32), n_classes=jnp.asarray(n_classes, jnp.int32),
    )


def layer_input_masks(arch: Arch, dims: NetDims) -> tuple[jax.Array, jax.Array]:
    """Masks of the inputs of the input layer (d_max,) and of hidden layers 1.. (max_hidden - 1, w_max)."""
    return arch.feature_mask(dims.d_max), arch.mask[:-1]


def fan_ins(arch: Arch) -> jax.Array:
    """(max_hidden + 1,) real fan-in of each Linear: input layer, hidden layers 1.., output layer.

    The output layer reads the last live hidden layer; hidden layers past the depth get fan-in 1 (unused).
    """
    widths = arch.widths
    hidden_in = jnp.maximum(widths[:-1], 1)
    last = widths[arch.depth - 1]
    return jnp.concatenate([arch.n_features[None], hidden_in, last[None]]).astype(jnp.float32)


def count_params(arch: Arch) -> jax.Array:
    """Parameters of the real network, as the original counts them (neon_spec.md §2.6).

    Linear weights and biases plus batch-norm scale and shift of alive neurons; running statistics are not
    parameters. Works on a single `Arch` or, by broadcasting, a population. Returns int32 (...,).
    """
    widths = arch.widths
    max_hidden = widths.shape[-1]
    layer = jnp.arange(max_hidden)
    live = layer < arch.depth[..., None]
    fan_in = jnp.concatenate([arch.n_features[..., None], widths[..., :-1]], axis=-1)
    linear = jnp.where(live, fan_in * widths + widths, 0).sum(-1)
    batchnorm = jnp.where(live & (arch.pre_layer == PRE_BATCHNORM), 2 * fan_in, 0).sum(-1)
    last = jnp.take_along_axis(widths, (arch.depth - 1)[..., None], axis=-1)[..., 0]
    output = last * arch.n_classes + arch.n_classes
    return (linear + batchnorm + output).astype(jnp.int32)
