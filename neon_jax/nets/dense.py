"""Compaction: a masked network <-> a plain dense network with its real widths (host-side NumPy), and its files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from neon_jax.nets.arch import Arch, NetDims, make_arch
from neon_jax.nets.layout import batchnorm_name, linear_name
from neon_jax.nets.model import BN_EPS
from neon_jax.nets.shapes import carried_widths
from neon_jax.presets import ACTIVATION_NAMES, PRE_BATCHNORM, PRE_DROPOUT


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

    def check_finite(self, x: np.ndarray | None = None, what: str = "the network") -> None:
        """Raises a ValueError naming the layer if a weight is NaN or infinite, or, given rows `x`, an output is."""
        for i, layer in enumerate(self.layers):
            for name, value in layer.items():
                if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
                    raise ValueError(f"{what} holds non-finite (NaN or infinite) weights: {name} of module {i} "
                                     f"({layer['kind']})")
        if x is not None:
            with np.errstate(all="ignore"):
                out = self.logits(x)
            if not np.isfinite(out).all():
                raise ValueError(f"{what} gives non-finite (NaN or infinite) outputs on the data")

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

    def folded(self) -> DenseNetwork:
        """The same function with fewer kinds of module: each batch-norm (eval mode, an affine map per column)
        folded into the linear layer after it, dropout (the identity in eval mode) left out. A batch-norm with no
        linear layer after it stays."""
        layers: list[dict] = []
        pending = None  # (a, c): the affine map h -> h * a + c of the batch-norms met since the last linear layer
        for layer in self.layers:
            kind = layer["kind"]
            if kind == "dropout":
                continue
            if kind == "batchnorm":
                a = np.asarray(layer["scale"], np.float64) / np.sqrt(np.asarray(layer["var"], np.float64)
                                                                     + layer["eps"])
                c = np.asarray(layer["bias"], np.float64) - np.asarray(layer["mean"], np.float64) * a
                pending = (a, c) if pending is None else (pending[0] * a, pending[1] * a + c)
                continue
            if kind == "linear" and pending is not None:
                w, b = np.asarray(layer["kernel"], np.float64), np.asarray(layer["bias"], np.float64)
                layer = dict(kind="linear", kernel=(pending[0][:, None] * w).astype(np.float32),
                             bias=(b + pending[1] @ w).astype(np.float32))
                pending = None
            elif pending is not None:  # an activation between the batch-norm and the linear layer: keep the norm
                layers.append(dict(kind="batchnorm", scale=pending[0].astype(np.float32),
                                   bias=pending[1].astype(np.float32), mean=np.zeros_like(pending[0], np.float32),
                                   var=np.ones_like(pending[0], np.float32), eps=0.0))
                pending = None
            layers.append(layer)
        return DenseNetwork(layers=layers, n_features=self.n_features, n_classes=self.n_classes)


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
            bn, bs = params[batchnorm_name(j)], stats[batchnorm_name(j)]
            layers.append(dict(kind="batchnorm", scale=np.asarray(bn["scale"])[prev_idx],
                               bias=np.asarray(bn["bias"])[prev_idx], mean=np.asarray(bs["mean"])[prev_idx],
                               var=np.asarray(bs["var"])[prev_idx], eps=BN_EPS))
        elif pre == PRE_DROPOUT:
            layers.append(dict(kind="dropout", rate=dropout_rate))
        name = linear_name(j, dims.max_hidden)
        kernel = np.asarray(params[f"{name}_kernel"])[np.ix_(prev_idx, alive)]
        layers.append(dict(kind="linear", kernel=kernel, bias=np.asarray(params[f"{name}_bias"])[alive]))
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
        width_in = dims.fan_in(j)
        kernel = np.zeros((width_in, dims.width(j)), np.float32)
        bias = np.zeros((dims.width(j),), np.float32)
        scale, shift = np.ones((width_in,), np.float32), np.zeros((width_in,), np.float32)
        mean, var = np.zeros((width_in,), np.float32), np.ones((width_in,), np.float32)
        if j < len(hidden):
            lin, bn = hidden[j]
            if lin["kernel"].shape[0] != prev:
                raise ValueError(f"hidden Linear {j} expects {lin['kernel'].shape[0]} inputs but receives {prev}")
            w = lin["kernel"].shape[1]
            if w > dims.width(j) or prev > width_in:
                raise ValueError(f"hidden Linear {j} ({prev} x {w}) does not fit the padded layer "
                                 f"({width_in} x {dims.width(j)})")
            kernel[:prev, :w] = lin["kernel"]
            bias[:w] = lin["bias"]
            if bn is not None:
                scale[:prev], shift[:prev] = bn["scale"], bn["bias"]
                mean[:prev], var[:prev] = bn["mean"], bn["var"]
            prev = w
        name, bn = linear_name(j, dims.max_hidden), batchnorm_name(j)
        params[f"{name}_kernel"], params[f"{name}_bias"] = kernel, bias
        params[bn] = {"scale": scale, "bias": shift}
        stats[bn] = {"mean": mean, "var": var}
    out = linears[-1]
    if out["kernel"].shape != (prev, net.n_classes):
        raise ValueError(f"output Linear has shape {out['kernel'].shape}, expected {(prev, net.n_classes)}")
    kernel = np.zeros((dims.fan_in(dims.max_hidden), dims.k_max), np.float32)
    bias = np.zeros((dims.k_max,), np.float32)
    if prev > kernel.shape[0]:
        raise ValueError(f"the output Linear reads {prev} neurons; the padded shape holds {kernel.shape[0]}")
    kernel[:prev, : net.n_classes] = out["kernel"]
    bias[: net.n_classes] = out["bias"]
    params["output_kernel"], params["output_bias"] = kernel, bias
    variables = jax.device_put({"params": params, "batch_stats": stats})  # jnp.asarray: a program per shape
    return variables, arch


def repad(variables: dict, arch: Arch, dims_from: NetDims, dims_to: NetDims) -> tuple[dict, Arch]:
    """One network (or a population: leading axes are kept) moved from the padded shape `dims_from` to `dims_to`:
    each of the sizes (d_max, k_max, max_hidden, every hidden layer's width) grows with zeros or shrinks by cutting
    padding.

    Puts networks of several datasets (different d_max / k_max) or of several width buckets into one population,
    and takes them back out to their own bucket. Neurons keep their columns, added hidden layers lie past every
    network's depth and cut ones must too, so the outputs, the statistics and (with `torch_linear_init`'s and
    dropout's padding-independent draws) the training of the real network are unchanged. A shrink that would cut
    a real part (an alive neuron, a hidden layer within a network's depth, a real feature or class) raises a
    ValueError naming it (checked on the host).
    """
    H0, H1 = dims_from.max_hidden, dims_to.max_hidden
    host = jax.device_get(arch)
    lost = []
    if H1 < H0 and (np.asarray(host.depth) > H1).any():
        lost.append(f"max_hidden {H0} -> {H1} (a network has {int(np.max(host.depth))} hidden layers)")
    if dims_to.w_max < dims_from.w_max and np.asarray(host.mask)[..., dims_to.w_max:].any():
        lost.append(f"w_max {dims_from.w_max} -> {dims_to.w_max} (alive neurons lie beyond it)")
    elif dims_to.layer_widths is not None and not lost:
        need = carried_widths(host).reshape(-1, H0).max(0)
        need = np.concatenate([need, np.repeat(need[-1:], max(H1 - H0, 0))])
        short = [j for j in range(H1) if need[j] > dims_to.width(j)]
        if short:
            j = short[0]
            lost.append(f"hidden layer {j} to width {dims_to.width(j)} (a network needs {int(need[j])} there)")
    if dims_to.d_max < dims_from.d_max and (np.asarray(host.n_features) > dims_to.d_max).any():
        lost.append(f"d_max {dims_from.d_max} -> {dims_to.d_max} (a network has {int(np.max(host.n_features))} "
                    f"features)")
    if dims_to.k_max < dims_from.k_max and (np.asarray(host.n_classes) > dims_to.k_max).any():
        lost.append(f"k_max {dims_from.k_max} -> {dims_to.k_max} (a network has {int(np.max(host.n_classes))} "
                    f"classes)")
    if lost:
        raise ValueError(f"repad cannot shrink {'; '.join(lost)}")
    return relayout(variables, arch, dims_from, dims_to)


def relayout(variables: dict, arch: Arch, dims_from: NetDims, dims_to: NetDims) -> tuple[dict, Arch]:
    """`repad` without its checks: every array cut or zero-padded to `dims_to`'s shapes; traceable (use it where
    nothing real can be cut, e.g. into a shape that holds `dims_from`, or back out of one)."""
    H0, H1 = dims_from.max_hidden, dims_to.max_hidden
    k = dims_to.k_max
    # host arrays stay on the host (NumPy): eager jnp ops would compile a one-op program per shape
    xp = np if all(isinstance(a, (np.ndarray, np.generic)) for a in jax.tree_util.tree_leaves((variables, arch))) \
        else jnp

    def fit(a, value=0.0, **axes):  # axes: {"a<k>": n} cuts or pads axis -k to n entries
        for name, n in axes.items():
            axis = a.ndim - int(name[1:])
            if a.shape[axis] > n:
                a = a[(slice(None),) * axis + (slice(0, n),)] if xp is np else jax.lax.slice_in_dim(a, 0, n, axis=axis)
            elif a.shape[axis] < n:
                widths = [(0, 0)] * a.ndim
                widths[axis] = (0, n - a.shape[axis])
                a = xp.pad(a, widths, constant_values=value)
        return a

    def bn_fit(p, s, n):
        return ({"scale": fit(p["scale"], 1.0, a1=n), "bias": fit(p["bias"], a1=n)},
                {"mean": fit(s["mean"], a1=n), "var": fit(s["var"], 1.0, a1=n)})

    src_p, src_s = variables["params"], variables["batch_stats"]
    params, stats = {}, {}
    lead = src_p["output_bias"].shape[:-1]
    for j in range(H1):
        name, bn = linear_name(j, H1), batchnorm_name(j)
        n_in, w = dims_to.fan_in(j), dims_to.width(j)
        if j < H0:
            old = linear_name(j, H0)
            params[f"{name}_kernel"] = fit(src_p[f"{old}_kernel"], a2=n_in, a1=w)
            params[f"{name}_bias"] = fit(src_p[f"{old}_bias"], a1=w)
            params[bn], stats[bn] = bn_fit(src_p[bn], src_s[bn], n_in)
        else:  # a layer past every network's depth: zeros, and a batch-norm at its defaults
            params[f"{name}_kernel"] = xp.zeros(lead + (n_in, w), np.float32)
            params[f"{name}_bias"] = xp.zeros(lead + (w,), np.float32)
            params[bn] = {"scale": xp.ones(lead + (n_in,), np.float32), "bias": xp.zeros(lead + (n_in,), np.float32)}
            stats[bn] = {"mean": xp.zeros(lead + (n_in,), np.float32), "var": xp.ones(lead + (n_in,), np.float32)}
    params["output_kernel"] = fit(src_p["output_kernel"], a2=dims_to.fan_in(H1), a1=k)
    params["output_bias"] = fit(src_p["output_bias"], a1=k)
    arch = arch.replace(mask=fit(arch.mask, a2=H1, a1=dims_to.w_max), activation=fit(arch.activation, a1=H1),
                        pre_layer=fit(arch.pre_layer, a1=H1))
    return {"params": params, "batch_stats": stats}, arch


def save_dense_network(net: DenseNetwork, path) -> Path:
    """Writes a `DenseNetwork` as ``<path>.npz`` (plain arrays) + ``<path>.json`` (its layer list)."""
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
