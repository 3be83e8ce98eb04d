"""Masked dense networks: the NEON architecture space at fixed padded shapes.

Every network of a run has the same array shapes (DESIGN.md):

* input Linear ``(d_max, w_max)``, hidden Linears ``(max_hidden - 1, w_max, w_max)``, output ``(w_max, k_max)``;
* a neuron mask per hidden layer ``(max_hidden, w_max)`` (1 = alive), a ``depth`` (hidden layers past it pass
  their input through unchanged), per-layer activation and pre-layer-operation codes;
* batch-norm scale/shift (and running statistics) on the input of every hidden layer, used where the
  architecture puts a BatchNorm1d.

A base network of the original (neon_spec.md §7) is, for each hidden layer j < depth::

    [Dropout(0.5) | BatchNorm1d | nothing] -> Linear_j -> ReLU | Tanh | Sigmoid

followed by ``Linear_out -> Softmax``. Padded columns, dead neurons and padded classes contribute nothing: the
input of every layer is multiplied by the mask of the layer feeding it (after batch-norm, whose shift would
otherwise leak), every activation by its own mask, and padded logits are pushed to ``-1e9``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from neon_jax.presets import (
    ACT_RELU, ACT_SIGMOID, ACT_TANH, ACTIVATION_NAMES, PRE_BATCHNORM, PRE_DROPOUT, PRE_NONE, Preset,
)

NEG_LOGIT = -1e9  # padded classes: exp() underflows to exactly 0, and no inf * 0 = nan in gradients
BN_EPS = 1e-5  # PyTorch BatchNorm1d defaults
BN_MOMENTUM = 0.1


@dataclasses.dataclass(frozen=True)
class NetDims:
    """Padded shapes shared by every network of a run (static: part of the compiled program)."""

    d_max: int  # input features
    k_max: int  # classes
    max_hidden: int
    w_max: int

    @classmethod
    def for_preset(cls, preset: Preset, d_max: int, k_max: int) -> "NetDims":
        return cls(d_max=int(d_max), k_max=int(k_max), max_hidden=preset.max_hidden, w_max=preset.w_max)


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


def torch_linear_init(key, shape, fan_in):
    """PyTorch's default Linear init (kaiming-uniform with a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / jnp.sqrt(jnp.maximum(fan_in, 1.0))
    return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0) * bound


def _activate(z: jax.Array, code: jax.Array) -> jax.Array:
    """ReLU / Tanh / Sigmoid picked by `code`, with ONE transcendental per element: sigmoid(z) = (1 + tanh(z/2)) / 2.

    Under vmap every branch is computed for every layer, so one shared tanh halves the transcendental work; an
    A/B on a quiet machine found no difference beyond noise at the cpu preset (activations were ~2 % of the time).
    """
    t = jnp.tanh(jnp.where(code == ACT_TANH, z, 0.5 * z))
    return jnp.where(code == ACT_RELU, jax.nn.relu(z), jnp.where(code == ACT_TANH, t, 0.5 + 0.5 * t))


def dropout_keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """Bernoulli(1 - rate) keep mask (float32 0/1) from as few random bits as the rate needs.

    `jax.random.bernoulli` spends a 32-bit threefry word per element; for the paper's rate 0.5 one bit per
    element is exact (32 elements per word), other rates use 8 bits per element (resolved to 1/256). Bits are
    laid out along the last axis so the unpacking is a free reshape. Under vmap every layer draws a mask whether
    or not it has dropout, so this is a large share of a small network's training step.
    """
    lead, width = shape[:-1], shape[-1]
    per_word, bits = (32, 1) if rate == 0.5 else (4, 8)
    words = jax.random.bits(key, lead + (-(-width // per_word),), jnp.uint32)
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

    ``__call__(x, arch, train, row_weight=None, return_hidden=False, depth_bound=None, frozen_layers=None)``:
      x: (B, d_max) inputs (padded feature columns are ignored through `arch.n_features`).
      arch: `Arch` of this network.
      train: dropout on and batch-norm on batch statistics (statistics over rows with `row_weight` > 0).
      returns logits (B, k_max) with padded classes at -1e9, and with `return_hidden` also the
      post-activation outputs of every hidden layer (max_hidden, B, w_max) (zeros past the depth).
      depth_bound: optional () int >= this network's depth, the same for every network of a vmapped batch
        (unbatched, e.g. the batch's deepest network): hidden layers at or past it are skipped whole (batch-norm,
        dropout draw, Linear, activation) by a `lax.cond` instead of computed and discarded, so under vmap a
        padded network costs its batch's deepest depth instead of `max_hidden` layers. The numbers are the same
        as without a bound. A batched (per-network) bound still works, as a select (no saving).
      frozen_layers: optional (max_hidden,) int, unbatched like `depth_bound`, for gradients (train mode):
        0 = some network of the batch trains a parameter of hidden layer j (its Linear or the batch-norm in front
        of it); 1 = no network does, but one trains a layer below (the gradient flows through j's input only:
        no kernel-gradient matmul); 2 = no network trains j or anything below it (no backward pass through j at
        all). The values and the gradients of trained parameters are the same; frozen ones get zero gradients.

    Layers past the network's depth pass their input through, and their batch-norm running statistics do not
    move in train mode (there is no such batch-norm in the real network; before the bound existed they drifted
    on the passed-through activations, which nothing reads).

    Parameters are initialised as PyTorch does (`torch_linear_init`, fan-in = real width) and zero on dead
    neurons, so counting, compaction and statistics see exactly the real network.
    """

    dims: NetDims
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x, arch: Arch, train: bool = False, row_weight=None, return_hidden: bool = False,
                 depth_bound=None, frozen_layers=None):
        dims = self.dims
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

        def layer(j, h, bn_vars, kernel, bias, drop_key):
            """Hidden layer j: (h passed on, hidden output, running mean, running var)."""
            inp_mask = in_mask if j == 0 else hidden_in_masks[j - 1]
            pre = arch.pre_layer[j]
            bn_a, bn_b, new_mean, new_var = batchnorm_affine(h, row_weight, train, *bn_vars)
            is_bn = pre == PRE_BATCHNORM
            # dead inputs (and the batch-norm shift on them) contribute nothing: fold the mask into the affine map
            a = jnp.where(is_bn, bn_a, 1.0) * inp_mask
            b = jnp.where(is_bn, bn_b, 0.0) * inp_mask
            h_in = h * a + b
            if drop_key is not None:
                keep = dropout_keep_mask(drop_key, h.shape, self.dropout_rate)
                factor = jnp.where(pre == PRE_DROPOUT, keep * (1.0 / (1 - self.dropout_rate)), 1.0)
                h_in = h_in * jax.lax.optimization_barrier(factor)
            out = _activate(h_in @ kernel + bias, arch.activation[j]) * arch.mask[j]
            live = j < arch.depth
            new_mean = jnp.where(live, new_mean, bn_vars[2])
            new_var = jnp.where(live, new_var, bn_vars[3])
            return (out if j == 0 else jnp.where(live, out, h)), jnp.where(live, out, 0.0), new_mean, new_var

        def skipped(j, h, bn_vars, kernel, bias, drop_key):
            return h, jnp.zeros(h.shape[:-1] + (dims.w_max,), h.dtype), bn_vars[2], bn_vars[3]

        def frozen(j, h, bn_vars, kernel, bias, drop_key):  # no gradient for this layer's parameters
            sg = jax.lax.stop_gradient
            return layer(j, h, (sg(bn_vars[0]), sg(bn_vars[1])) + tuple(bn_vars[2:]), sg(kernel), sg(bias), drop_key)

        def inert(j, h, bn_vars, kernel, bias, drop_key):  # ... nor for its input
            return frozen(j, jax.lax.stop_gradient(h), bn_vars, kernel, bias, drop_key)

        class_mask = arch.class_mask(dims.k_max).astype(jnp.float32)
        h = x
        hidden_outputs = []
        for j in range(dims.max_hidden):
            width_in = dims.d_max if j == 0 else dims.w_max
            bn = MaskedBatchNorm(width_in, name=f"bn{j}")
            bn_vars = bn.get()
            drop_key = self.make_rng("dropout") if train and self.dropout_rate > 0 else None
            inp_mask = in_mask if j == 0 else hidden_in_masks[j - 1]
            kernel, bias = linear(f"layer{j}", (width_in, dims.w_max), fans[j], inp_mask, arch.mask[j])
            operands = (h, bn_vars, kernel, bias, drop_key)
            branches = [functools.partial(f, j) for f in (layer, frozen, inert)]
            if frozen_layers is not None:  # index 0 / 1 / 2 as documented; with a bound, 3 = skipped
                mode = jnp.asarray(frozen_layers)[j]
                if depth_bound is not None and j > 0:
                    mode = jnp.where(j < depth_bound, mode, 3)
                    branches.append(functools.partial(skipped, j))
                h, out, new_mean, new_var = jax.lax.switch(mode, branches, *operands)
            elif depth_bound is None or j == 0:
                h, out, new_mean, new_var = layer(j, *operands)
            else:  # no network of the batch reaches layer j: skip it (its output would be discarded)
                h, out, new_mean, new_var = jax.lax.cond(
                    j < depth_bound, functools.partial(layer, j), functools.partial(skipped, j), *operands)
            if train:
                bn.set_running(new_mean, new_var)
            hidden_outputs.append(out)
        last_mask = arch.mask[arch.depth - 1]
        kernel, bias = linear("output", (dims.w_max, dims.k_max), fans[-1], last_mask, class_mask)
        logits = jnp.where(class_mask > 0, h @ kernel + bias, NEG_LOGIT)
        if return_hidden:
            return logits, jnp.stack(hidden_outputs)
        return logits


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


# ----------------------------------------------------------------------------------------------------------
# Compaction: masked network <-> plain dense network with its real widths.


@dataclasses.dataclass
class DenseNetwork:
    """A plain dense network with its real widths, host-side NumPy arrays (eval-mode semantics).

    `layers` is the flat module list of the original's ``nn.Sequential``: dicts with ``kind`` one of
    ``batchnorm`` (scale, bias, mean, var, eps), ``dropout`` (rate), ``linear`` (kernel (in, out), bias (out,)),
    ``relu`` / ``tanh`` / ``sigmoid``, and a final ``softmax``.
    """

    layers: list[dict]
    n_features: int
    n_classes: int

    @property
    def hidden_widths(self) -> list[int]:
        return [l["kernel"].shape[1] for l in self.layers if l["kind"] == "linear"][:-1]

    def num_params(self) -> int:
        total = 0
        for l in self.layers:
            if l["kind"] == "linear":
                total += l["kernel"].size + l["bias"].size
            elif l["kind"] == "batchnorm":
                total += l["scale"].size + l["bias"].size
        return int(total)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Eval-mode forward pass to the pre-softmax outputs (N, n_classes), float32 NumPy."""
        h = np.asarray(x, np.float32)
        for l in self.layers:
            kind = l["kind"]
            if kind == "batchnorm":
                h = (h - l["mean"]) / np.sqrt(l["var"] + l["eps"]) * l["scale"] + l["bias"]
            elif kind == "linear":
                h = h @ l["kernel"] + l["bias"]
            elif kind == "relu":
                h = np.maximum(h, 0)
            elif kind == "tanh":
                h = np.tanh(h)
            elif kind == "sigmoid":
                h = 1 / (1 + np.exp(-h))
            # dropout is the identity in eval mode; softmax is left out of logits
        return h.astype(np.float32)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x)
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)


def compact(variables: dict, arch: Arch, dims: NetDims, dropout_rate: float = 0.5) -> DenseNetwork:
    """Turns one masked network into a `DenseNetwork` with its real widths (alive neurons only).

    Neurons keep their order; a pruned-away neuron's row and column disappear. Outputs are identical to the
    masked network's in eval mode.
    """
    params = jax.device_get(variables["params"])
    stats = jax.device_get(variables.get("batch_stats", {}))
    arch = jax.device_get(arch)
    depth, d, k = int(arch.depth), int(arch.n_features), int(arch.n_classes)
    prev_idx = np.arange(d)
    layers: list[dict] = []
    for j in range(depth):
        alive = np.flatnonzero(np.asarray(arch.mask[j]) > 0)
        pre = int(arch.pre_layer[j])
        if pre == PRE_BATCHNORM:
            bn, bs = params[f"bn{j}"], stats[f"bn{j}"]
            layers.append(dict(kind="batchnorm", scale=np.asarray(bn["scale"])[prev_idx],
                               bias=np.asarray(bn["bias"])[prev_idx], mean=np.asarray(bs["mean"])[prev_idx],
                               var=np.asarray(bs["var"])[prev_idx], eps=BN_EPS))
        elif pre == PRE_DROPOUT:
            layers.append(dict(kind="dropout", rate=dropout_rate))
        kernel = np.asarray(params[f"layer{j}_kernel"])[np.ix_(prev_idx, alive)]
        layers.append(dict(kind="linear", kernel=kernel, bias=np.asarray(params[f"layer{j}_bias"])[alive]))
        layers.append(dict(kind=ACTIVATION_NAMES[int(arch.activation[j])]))
        prev_idx = alive
    kernel = np.asarray(params["output_kernel"])[np.ix_(prev_idx, np.arange(k))]
    layers.append(dict(kind="linear", kernel=kernel, bias=np.asarray(params["output_bias"])[:k]))
    layers.append(dict(kind="softmax"))
    return DenseNetwork(layers=layers, n_features=d, n_classes=k)


def expand(net: DenseNetwork, dims: NetDims) -> tuple[dict, Arch]:
    """Places a `DenseNetwork` into the padded masked form: returns (variables, arch).

    Raises ValueError naming the problem if the network does not fit `dims` or is not of the NEON family.
    """
    widths, acts, pres = [], [], []
    pending_pre = "none"
    pending_bn = None
    hidden: list[tuple[dict, dict | None]] = []
    linears = [l for l in net.layers if l["kind"] == "linear"]
    if len(linears) < 2:
        raise ValueError("a NEON network needs at least one hidden Linear and an output Linear")
    seen_linear = 0
    for l in net.layers:
        kind = l["kind"]
        if kind in ("batchnorm", "dropout"):
            if pending_pre != "none":
                raise ValueError("two pre-layer operations in front of one Linear are not supported")
            pending_pre, pending_bn = kind, (l if kind == "batchnorm" else None)
        elif kind == "linear":
            seen_linear += 1
            if seen_linear < len(linears):
                widths.append(l["kernel"].shape[1])
                pres.append(pending_pre)
                hidden.append((l, pending_bn))
            elif pending_pre != "none":
                raise ValueError("a BatchNorm/Dropout in front of the output Linear is not supported")
            pending_pre, pending_bn = "none", None
        elif kind in ACTIVATION_NAMES:
            acts.append(kind)
        elif kind != "softmax":
            raise ValueError(f"unsupported layer kind {kind!r}")
    if len(acts) != len(widths):
        raise ValueError("every hidden Linear must be followed by exactly one activation (relu/tanh/sigmoid)")
    arch = make_arch(widths, acts, pres, net.n_features, net.n_classes, dims)
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    prev = net.n_features
    for j in range(dims.max_hidden):
        width_in = dims.d_max if j == 0 else dims.w_max
        kernel = np.zeros((width_in, dims.w_max), np.float32)
        bias = np.zeros((dims.w_max,), np.float32)
        scale, shift = np.ones((width_in,), np.float32), np.zeros((width_in,), np.float32)
        mean, var = np.zeros((width_in,), np.float32), np.ones((width_in,), np.float32)
        if j < len(hidden):
            lin, bn = hidden[j]
            if lin["kernel"].shape[0] != prev:
                raise ValueError(f"hidden Linear {j} expects {lin['kernel'].shape[0]} inputs but receives {prev}")
            w = lin["kernel"].shape[1]
            kernel[:prev, :w] = lin["kernel"]
            bias[:w] = lin["bias"]
            if bn is not None:
                scale[:prev], shift[:prev] = bn["scale"], bn["bias"]
                mean[:prev], var[:prev] = bn["mean"], bn["var"]
            prev = w
        params[f"layer{j}_kernel"], params[f"layer{j}_bias"] = kernel, bias
        params[f"bn{j}"] = {"scale": scale, "bias": shift}
        stats[f"bn{j}"] = {"mean": mean, "var": var}
    out = linears[-1]
    if out["kernel"].shape != (prev, net.n_classes):
        raise ValueError(f"output Linear has shape {out['kernel'].shape}, expected {(prev, net.n_classes)}")
    kernel = np.zeros((dims.w_max, dims.k_max), np.float32)
    bias = np.zeros((dims.k_max,), np.float32)
    kernel[:prev, : net.n_classes] = out["kernel"]
    bias[: net.n_classes] = out["bias"]
    params["output_kernel"], params["output_bias"] = kernel, bias
    variables = jax.tree_util.tree_map(jnp.asarray, {"params": params, "batch_stats": stats})
    return variables, arch


def repad(variables: dict, arch: Arch, dims_from: NetDims, dims_to: NetDims) -> tuple[dict, Arch]:
    """Zero-pads one network (or a population: leading axes are kept) from `dims_from` to larger `dims_to`.

    Used to put networks of several datasets (different d_max / k_max) into one population. The outputs on the
    real features and classes are unchanged (padding contributes nothing).
    """
    if dims_to.max_hidden != dims_from.max_hidden or dims_to.w_max != dims_from.w_max:
        raise ValueError("repad only changes d_max and k_max; max_hidden and w_max must match (same preset)")
    if dims_to.d_max < dims_from.d_max or dims_to.k_max < dims_from.k_max:
        raise ValueError(f"cannot shrink padded dims from {dims_from} to {dims_to}")
    dd, dk = dims_to.d_max - dims_from.d_max, dims_to.k_max - dims_from.k_max

    def pad_last(a, n, value=0.0):
        return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, n)], constant_values=value)

    def pad_axis(a, axis, n):
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, n)
        return jnp.pad(a, widths)

    params = dict(variables["params"])
    stats = dict(variables["batch_stats"])
    params["layer0_kernel"] = pad_axis(params["layer0_kernel"], -2, dd)
    params["bn0"] = {"scale": pad_last(params["bn0"]["scale"], dd, 1.0), "bias": pad_last(params["bn0"]["bias"], dd)}
    stats["bn0"] = {"mean": pad_last(stats["bn0"]["mean"], dd), "var": pad_last(stats["bn0"]["var"], dd, 1.0)}
    params["output_kernel"] = pad_last(params["output_kernel"], dk)
    params["output_bias"] = pad_last(params["output_bias"], dk)
    return {"params": params, "batch_stats": stats}, arch


def save_dense_network(net: DenseNetwork, path) -> "Path":
    """Writes a `DenseNetwork` as ``<path>.npz`` (plain arrays) + ``<path>.json`` (its layer list)."""
    from pathlib import Path
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, layers = {}, []
    for i, layer in enumerate(net.layers):
        entry = {}
        for key, value in layer.items():
            if isinstance(value, np.ndarray):
                arrays[f"{i}/{key}"] = value
                entry[key] = {"array": f"{i}/{key}", "shape": list(value.shape)}
            else:
                entry[key] = value
        layers.append(entry)
    np.savez(path.with_suffix(".npz"), **arrays)
    doc = {"format": "neon_jax.dense/1", "n_features": net.n_features, "n_classes": net.n_classes,
           "hidden_widths": net.hidden_widths, "num_params": net.num_params(), "layers": layers}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    return path.with_suffix(".npz")


def load_dense_network(path) -> DenseNetwork:
    """Reads a network written by `save_dense_network` (give either file or the common stem)."""
    from pathlib import Path
    import json

    path = Path(path)
    npz, meta = path.with_suffix(".npz"), path.with_suffix(".json")
    if not npz.exists() or not meta.exists():
        raise FileNotFoundError(f"no saved network at {path} (expected {npz.name} and {meta.name})")
    doc = json.loads(meta.read_text())
    if doc.get("format") != "neon_jax.dense/1":
        raise ValueError(f"{meta} is not a neon_jax network file (format {doc.get('format')!r})")
    with np.load(npz) as data:
        layers = []
        for entry in doc["layers"]:
            layers.append({k: (np.asarray(data[v["array"]], np.float32) if isinstance(v, dict) and "array" in v else v)
                           for k, v in entry.items()})
    return DenseNetwork(layers=layers, n_features=int(doc["n_features"]), n_classes=int(doc["n_classes"]))
