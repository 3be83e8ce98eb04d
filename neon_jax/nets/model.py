"""The masked NEON base network (flax), its initialisation, and the hints that let a batch skip work.

A base network of the original (neon_spec.md §7) is, for each hidden layer j < depth::

    [Dropout(0.5) | BatchNorm1d | nothing] -> Linear_j -> ReLU | Tanh | Sigmoid

followed by ``Linear_out -> Softmax``. Padded columns, dead neurons and padded classes contribute nothing: the
input of every layer is multiplied by the mask of the layer feeding it (after batch-norm, whose shift would
otherwise leak), every activation by its own mask, and padded logits are pushed to ``-1e9``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from neon_jax.nets.arch import Arch, NetDims, fan_ins, layer_input_masks
from neon_jax.nets.layout import batchnorm_name, linear_name, param_layer
from neon_jax.nets.shapes import fit_width
from neon_jax.presets import ACT_RELU, ACT_TANH, PRE_BATCHNORM, PRE_DROPOUT, Preset

NEG_LOGIT = -1e9  # padded classes: exp() underflows to exactly 0, and no inf * 0 = nan in gradients
BN_EPS = 1e-5  # PyTorch BatchNorm1d defaults
BN_MOMENTUM = 0.1

def torch_linear_init(key, shape, fan_in):
    """PyTorch's default Linear init (kaiming-uniform with a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    The draw does not depend on the padding: row i of a (rows, cols) kernel comes from ``fold_in(key, i)`` and its
    first c entries are the same for any padded cols >= c (threefry's counters run along the row), so a network
    initialised at a wider bucket holds the same real weights. A 1-D shape (a bias) is one such row.
    """
    bound = 1.0 / jnp.sqrt(jnp.maximum(fan_in, 1.0))
    if len(shape) == 1:
        return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0) * bound
    rows = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), shape[1:], jnp.float32, -1.0, 1.0))
    return rows(jnp.arange(shape[0])) * bound


def _activate(z: jax.Array, code: jax.Array) -> jax.Array:
    """ReLU / Tanh / Sigmoid picked by `code`, with ONE transcendental per element: sigmoid(z) = (1 + tanh(z/2)) / 2.

    Under vmap every branch is computed for every layer, so the tanh is shared by the two branches that need one.
    """
    t = jnp.tanh(jnp.where(code == ACT_TANH, z, 0.5 * z))
    return jnp.where(code == ACT_RELU, jax.nn.relu(z), jnp.where(code == ACT_TANH, t, 0.5 + 0.5 * t))


def dropout_keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """Bernoulli(1 - rate) keep mask (float32 0/1) from as few random bits as the rate needs.

    `jax.random.bernoulli` spends a 32-bit threefry word per element; for the paper's rate 0.5 one bit per
    element is exact (32 elements per word), other rates use 8 bits per element (resolved to 1/256). Bits are
    laid out along the last axis so the unpacking is a reshape, and drawn feature-major so that the mask of the
    first c features is the same at any padded width. Under vmap every layer draws a mask whether
    or not it has dropout, so this is a large share of a small network's training step.
    """
    lead, width = shape[:-1], shape[-1]
    per_word, bits = (32, 1) if rate == 0.5 else (4, 8)
    # words drawn column-major (the feature axis leading), so a wider padding only appends words: the mask of
    # the real features does not depend on the bucket
    words = jnp.moveaxis(jax.random.bits(key, (-(-width // per_word),) + lead, jnp.uint32), 0, -1)
    shifts = jnp.arange(per_word, dtype=jnp.uint32) * bits
    fields = (words[..., None] >> shifts) & ((1 << bits) - 1)
    fields = fields.reshape(lead + (-1,))[..., :width]
    threshold = 1 if bits == 1 else round(rate * 256)
    return (fields >= threshold).astype(jnp.float32)


def batchnorm_affine(x, row_weight, train: bool, scale, bias, ra_mean, ra_var):
    """BatchNorm1d over the feature axis with per-row weights, as a per-feature affine map.

    Returns ``(a, b, new_mean, new_var)`` with ``normalised = x * a + b`` and the running statistics after the
    pass. PyTorch semantics: train mode normalises with the biased batch variance over the rows with weight > 0
    and moves the running statistics by momentum 0.1 towards the batch mean and unbiased variance; eval mode
    uses (and keeps) the running statistics.
    """
    if train:
        n = jnp.maximum(row_weight.sum(), 1.0)
        mean = row_weight @ x / n
        var = row_weight @ (x - mean) ** 2 / n
        unbiased = var * n / jnp.maximum(n - 1.0, 1.0)
        new_mean = (1 - BN_MOMENTUM) * ra_mean + BN_MOMENTUM * mean
        new_var = (1 - BN_MOMENTUM) * ra_var + BN_MOMENTUM * unbiased
    else:
        mean, var, new_mean, new_var = ra_mean, ra_var, ra_mean, ra_var
    a = scale * jax.lax.rsqrt(var + BN_EPS)
    return a, bias - mean * a, new_mean, new_var


@struct.dataclass
class Hints:
    """Facts true of every network of a vmapped batch that let a program skip work; no number depends on them.

    Unbatched (one value for the whole batch), traced. Computing with hints gives the values, batch-norm
    statistics and gradients of trained parameters that computing without them gives; frozen parameters get
    zero gradients either way.

    Attributes:
      depth_bound: () int >= the depth of every network of the batch, or None. Hidden layers at or past it are
        skipped whole (batch-norm, dropout draw, Linear, activation) by a `lax.cond`, so a batch of padded
        networks costs its deepest network's depth instead of `max_hidden` layers.
      groups: {top-level parameter name: () bool}, False where no network of the batch can change that
        parameter, or None (anything may change). An optimiser skips those groups; a hidden layer none of whose
        parameters changes gets no kernel-gradient matmul, and one with nothing changing at or below it no
        backward pass at all (`layer_modes`).
    """

    depth_bound: jax.Array | None = None
    groups: dict | None = None

    def layer_modes(self, max_hidden: int) -> jax.Array | None:
        """(max_hidden,) int32 per hidden layer: 0 trained, 1 frozen with something trained below it (the
        gradient passes through its input only), 2 frozen with nothing trained at or below it; None without
        `groups`."""
        if self.groups is None:
            return None
        trained = [jnp.zeros((), bool) for _ in range(max_hidden)]
        for name, on in self.groups.items():
            j = param_layer(name, max_hidden)
            if j < max_hidden:
                trained[j] = trained[j] | on
        modes, below = [], jnp.zeros((), bool)
        for j in range(max_hidden):
            modes.append(jnp.where(trained[j], 0, jnp.where(below, 1, 2)))
            below = below | trained[j]
        return jnp.stack(modes).astype(jnp.int32)


class MaskedBatchNorm(nn.Module):
    """BatchNorm1d over the feature axis with per-row weights, so padded rows never enter the statistics.

    Holds the variables (params scale / bias, batch_stats mean / var); the maths is `batchnorm_affine`.
    Calling it returns the normalisation as a per-feature affine map ``(a, b)`` with ``normalised = x * a + b``
    (and in train mode moves the running statistics): the caller selects it per layer on (features,) vectors
    instead of selecting between two (B, features) tensors, which keeps the backward pass small under vmap.
    `get` / `set_running` give `MaskedMLP` the raw variables so a whole layer can run inside a `lax.cond`.
    """

    features: int

    def setup(self):
        self.scale = self.param("scale", nn.initializers.ones, (self.features,))
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,))
        self.ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (self.features,))
        self.ra_var = self.variable("batch_stats", "var", jnp.ones, (self.features,))

    def __call__(self, x, row_weight, train: bool):
        a, b, new_mean, new_var = batchnorm_affine(x, row_weight, train, *self.get())
        if train:
            self.set_running(new_mean, new_var)
        return a, b

    def get(self):
        """(scale, bias, running mean, running var)."""
        return self.scale, self.bias, self.ra_mean.value, self.ra_var.value

    def set_running(self, mean, var):
        if not self.is_initializing():
            self.ra_mean.value = mean
            self.ra_var.value = var


class MaskedMLP(nn.Module):
    """The NEON base network at padded shapes; one instance serves every architecture of a run.

    ``__call__(x, arch, train=False, row_weight=None, return_hidden=False, hints=None)``:
      x: (B, d_max) inputs (padded feature columns are ignored through `arch.n_features`).
      arch: `Arch` of this network.
      train: dropout on and batch-norm on batch statistics (statistics over rows with `row_weight` > 0).
      returns logits (B, k_max) with padded classes at -1e9, and with `return_hidden` also the
      post-activation outputs of every hidden layer (max_hidden, B, w_max) (zeros past the depth and past a
      layer's padded width).
      hints: optional `Hints` about the whole vmapped batch (unbatched): hidden layers past `depth_bound` are
        skipped, layers no network trains get no (or a cheaper) backward pass. A batched (per-network) bound
        still works, as a select (no saving).

    Layers past the network's depth pass their input through (cut or zero-padded to their width, which holds
    it: `NetDims`), and their batch-norm running statistics do not move in train mode (there is no such
    batch-norm in the real network). Hidden Linear j is ``(dims.fan_in(j), dims.width(j))``.

    Parameters are initialised as PyTorch does (`torch_linear_init`, fan-in = real width) and zero on dead
    neurons, so counting, compaction and statistics see exactly the real network.
    """

    dims: NetDims
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x, arch: Arch, train: bool = False, row_weight=None, return_hidden: bool = False,
                 hints: Hints | None = None):
        dims = self.dims
        depth_bound = None if hints is None else hints.depth_bound
        layer_modes = None if hints is None else hints.layer_modes(dims.max_hidden)
        if row_weight is None:
            row_weight = jnp.ones(x.shape[0], jnp.float32)
        fans = fan_ins(arch)
        in_mask, hidden_in_masks = layer_input_masks(arch, dims)

        def linear(name, shape, fan_in, in_mask_, out_mask_):
            def kernel_init(key, shp):
                return torch_linear_init(key, shp, fan_in) * in_mask_[:, None] * out_mask_[None, :]

            def bias_init(key, shp):
                return torch_linear_init(key, shp, fan_in) * out_mask_

            kernel = self.param(f"{name}_kernel", kernel_init, shape)
            bias = self.param(f"{name}_bias", bias_init, shape[1:])
            return kernel, bias

        layer = functools.partial(_hidden_layer, arch, in_mask, hidden_in_masks, row_weight, train,
                                  self.dropout_rate)
        frozen = functools.partial(_frozen_layer, layer)
        branch_fns = (layer, frozen, functools.partial(_inert_layer, frozen))
        class_mask = arch.class_mask(dims.k_max).astype(jnp.float32)
        # the output Linear's parameters are created first: flax draws a module's parameter keys in creation
        # order, so the output's key (and each hidden Linear's) is then the same at any max_hidden
        last_width = dims.width(dims.max_hidden - 1)
        out_kernel, out_bias = linear(linear_name(dims.max_hidden, dims.max_hidden), (last_width, dims.k_max),
                                      fans[-1], fit_width(arch.mask[arch.depth - 1], last_width), class_mask)
        h = x
        hidden_outputs = []
        for j in range(dims.max_hidden):
            width_in, width = dims.fan_in(j), dims.width(j)
            bn = MaskedBatchNorm(width_in, name=batchnorm_name(j))
            bn_vars = bn.get()
            drop_key = self.make_rng("dropout") if train and self.dropout_rate > 0 else None
            inp_mask = in_mask if j == 0 else fit_width(hidden_in_masks[j - 1], width_in)
            kernel, bias = linear(linear_name(j, dims.max_hidden), (width_in, width), fans[j], inp_mask,
                                  fit_width(arch.mask[j], width))
            h, out, new_mean, new_var = _run_hidden_layer(j, branch_fns, layer_modes, depth_bound, width,
                                                          (h, bn_vars, kernel, bias, drop_key))
            if train:
                bn.set_running(new_mean, new_var)
            hidden_outputs.append(fit_width(out, dims.w_max))
        logits = jnp.where(class_mask > 0, h @ out_kernel + out_bias, NEG_LOGIT)
        if return_hidden:
            return logits, jnp.stack(hidden_outputs)
        return logits


def _hidden_layer(arch: Arch, in_mask, hidden_in_masks, row_weight, train: bool, dropout_rate: float, j: int, h,
                  bn_vars, kernel, bias, drop_key):
    """Hidden layer j of `MaskedMLP`: (h passed on, hidden output, running mean, running var)."""
    width_in, width = kernel.shape
    inp_mask = in_mask if j == 0 else fit_width(hidden_in_masks[j - 1], width_in)
    pre = arch.pre_layer[j]
    bn_a, bn_b, new_mean, new_var = batchnorm_affine(h, row_weight, train, *bn_vars)
    is_bn = pre == PRE_BATCHNORM
    # dead inputs (and the batch-norm shift on them) contribute nothing: fold the mask into the affine map
    a = jnp.where(is_bn, bn_a, 1.0) * inp_mask
    b = jnp.where(is_bn, bn_b, 0.0) * inp_mask
    h_in = h * a + b
    if drop_key is not None:
        keep = dropout_keep_mask(drop_key, h.shape, dropout_rate)
        factor = jnp.where(pre == PRE_DROPOUT, keep * (1.0 / (1 - dropout_rate)), 1.0)
        h_in = h_in * jax.lax.optimization_barrier(factor)
    out = _activate(h_in @ kernel + bias, arch.activation[j]) * fit_width(arch.mask[j], width)
    live = j < arch.depth
    new_mean = jnp.where(live, new_mean, bn_vars[2])
    new_var = jnp.where(live, new_var, bn_vars[3])
    return (out if j == 0 else jnp.where(live, out, fit_width(h, width))), jnp.where(live, out, 0.0), new_mean, new_var


def _skipped_layer(width: int, j: int, h, bn_vars, kernel, bias, drop_key):
    """A hidden layer no network of the batch reaches: h passed on (at the layer's `width`), zero output, running
    statistics unmoved."""
    return fit_width(h, width), jnp.zeros(h.shape[:-1] + (width,), h.dtype), bn_vars[2], bn_vars[3]


def _frozen_layer(layer, j: int, h, bn_vars, kernel, bias, drop_key):
    """`layer` j with no gradient for its parameters."""
    sg = jax.lax.stop_gradient
    return layer(j, h, (sg(bn_vars[0]), sg(bn_vars[1])) + tuple(bn_vars[2:]), sg(kernel), sg(bias), drop_key)


def _inert_layer(frozen, j: int, h, bn_vars, kernel, bias, drop_key):
    """`frozen` layer j with no gradient for its input either."""
    return frozen(j, jax.lax.stop_gradient(h), bn_vars, kernel, bias, drop_key)


def _run_hidden_layer(j: int, branch_fns, layer_modes, depth_bound, width: int, operands):
    """Hidden layer j as the hints allow: (layer, frozen, inert) `branch_fns` switched on `layer_modes` (skipped
    past `depth_bound`), or the layer itself, or a cond between it and skipping it under a bound alone."""
    layer = branch_fns[0]
    branches = [functools.partial(f, j) for f in branch_fns]
    if layer_modes is not None:  # 0 / 1 / 2 as `Hints.layer_modes`; with a bound, 3 = skipped
        mode = layer_modes[j]
        if depth_bound is not None and j > 0:
            mode = jnp.where(j < depth_bound, mode, 3)
            branches.append(functools.partial(_skipped_layer, width, j))
        return jax.lax.switch(mode, branches, *operands)
    if depth_bound is None or j == 0:
        return layer(j, *operands)
    # no network of the batch reaches layer j: skip it (its output would be discarded)
    return jax.lax.cond(j < depth_bound, functools.partial(layer, j), functools.partial(_skipped_layer, width, j),
                        *operands)


def make_model(dims: NetDims, preset: Preset | None = None) -> MaskedMLP:
    return MaskedMLP(dims=dims, dropout_rate=preset.dropout_rate if preset is not None else 0.5)


def init_network(key: jax.Array, model: MaskedMLP, arch: Arch) -> dict[str, Any]:
    """Initialises one network's variables ``{"params", "batch_stats"}`` for `arch` (vmap it for a population)."""
    x = jnp.zeros((1, model.dims.d_max), jnp.float32)
    return dict(model.init({"params": key}, x, arch, train=False))


def init_population(key: jax.Array, model: MaskedMLP, archs: Arch) -> dict[str, Any]:
    """Initialises a population (leading axis P on `archs`) under one vmap."""
    keys = jax.random.split(key, archs.depth.shape[0])
    return jax.vmap(lambda k, a: init_network(k, model, a))(keys, archs)


