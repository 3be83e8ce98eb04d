"""Networks in and out: PyTorch / NumPy classifiers in, pruned networks out as PyTorch, ONNX, safetensors, .npz.

Import (into a `nets.DenseNetwork`, which `nets.expand` places into the masked form the agent prunes):

* `from_torch(module)`: an ``nn.Sequential`` of ``Linear`` / ``ReLU`` / ``Tanh`` / ``Sigmoid`` / ``BatchNorm1d`` /
  ``Dropout``, optionally ending in ``Softmax`` (nested Sequentials are flattened);
* `from_state_dict(state_dict, layers)`: a ``state_dict`` of such a Sequential plus its layer list
  (``["Linear", "ReLU", "BatchNorm1d", ...]`` in Sequential order; entries may be dicts such as
  ``{"type": "Dropout", "p": 0.3}``);
* `from_arrays(weights, biases, activation)`: plain NumPy weight lists;
* `load_network(path)`: a file: ``.pt`` / ``.pth`` (``torch.save`` of the whole Sequential, or of
  ``{"state_dict": model.state_dict(), "layers": [...]}``), ``.safetensors`` written by `export_network`, or a
  network saved by neon_jax (``.npz`` + ``.json``).

The family the masked network represents (neon_spec.md §7, `nets.MaskedMLP`): per hidden layer
``[Dropout | BatchNorm1d | nothing] -> Linear -> ReLU | Tanh | Sigmoid`` (activations may differ between layers),
then ``Linear [-> Softmax]``. Anything else -- another layer type, a BatchNorm between a Linear and its
activation, two Linears with no activation between them, two pre-layer operations in front of one Linear, a
Dropout or BatchNorm in front of the output Linear, a BatchNorm without running statistics -- is refused with an
error naming the layer. A BatchNorm's ``eps`` other than 1e-5 is folded into its running variance (eval outputs
unchanged; fine-tuning then uses eps 1e-5). A Linear without bias gets a zero bias.

Export of a (pruned, compacted) `DenseNetwork` with its real, smaller widths: `to_torch` (``nn.Sequential``),
`torch_state_dict`, `to_onnx` (built with ``onnx.helper``, opset `ONNX_OPSET`), and `export_network`, which writes
any of `EXPORT_FORMATS` into a folder. Every form computes `DenseNetwork.logits` (and its softmax); `verify_exports`
checks that on data.

torch, onnx, onnxruntime and safetensors are optional (extras ``torch`` and ``export``) and imported lazily.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neon_jax.nets import BN_EPS, DenseNetwork, load_dense_network, save_dense_network

ONNX_OPSET = 17  # default ONNX domain; every op used (Gemm, BatchNormalization, Relu, Tanh, Sigmoid, Softmax)
ONNX_IR_VERSION = 8  # the lowest IR version that carries opset 17, so older runtimes read the file too
TORCH_FORMAT = "neon_jax.torch/1"  # the {"state_dict", "layers"} bundle and the safetensors metadata
EXPORT_FORMATS = ("torch", "onnx", "safetensors", "npz", "sklearn")
ALL_FORMATS = ("torch", "onnx", "safetensors", "npz")  # "all": the formats every network fits (sklearn by name)

# PyTorch class name -> DenseNetwork layer kind
_TORCH_KINDS = {"Linear": "linear", "ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid",
                "BatchNorm1d": "batchnorm", "Dropout": "dropout", "Softmax": "softmax"}
_KIND_TO_TORCH = {v: k for k, v in _TORCH_KINDS.items()}
_ACTIVATIONS = ("relu", "tanh", "sigmoid")
SUPPORTED = ", ".join(_TORCH_KINDS)
_FAMILY = (f"neon_jax imports an nn.Sequential of {SUPPORTED} (Softmax last): per hidden layer "
           f"[Dropout | BatchNorm1d] -> Linear -> ReLU | Tanh | Sigmoid, then Linear [-> Softmax]")


# ----------------------------------------------------------------------------------------------------------
# Import


def dense_from_layers(layers: Sequence[dict]) -> DenseNetwork:
    """Checks a flat layer list against the NEON family and returns the `DenseNetwork` it describes.

    Args:
      layers: dicts with ``kind`` (linear / relu / tanh / sigmoid / batchnorm / dropout / softmax) and the arrays
        of `DenseNetwork.layers`: linear ``kernel`` (in, out) and ``bias`` (out,); batchnorm ``scale``, ``bias``,
        ``mean``, ``var`` (features,) and ``eps``; dropout ``rate``. Position i is reported as "layer i".
    Raises:
      ValueError naming the first layer that does not fit, or the first shape that does not chain.
    """
    out: list[dict] = []
    width = None  # features flowing out of the previous layer (None before the first Linear or pre-layer)
    state = "start"  # start | linear (a Linear waiting for its activation) | activation | end (after Softmax)
    pending_pre = None  # index of a Dropout / BatchNorm waiting for its Linear
    last_linear = last_linear_pre = None
    n_linear = 0
    for i, layer in enumerate(layers):
        kind = layer["kind"]
        name = f"layer {i} ({_KIND_TO_TORCH.get(kind, kind)})"
        if state == "end":
            raise ValueError(f"{name} comes after the Softmax; Softmax must be the last layer")
        if kind == "linear":
            kernel = _f32(layer["kernel"], f"{name} weight")
            bias = _f32(layer["bias"], f"{name} bias") if layer.get("bias") is not None else np.zeros(
                kernel.shape[1:], np.float32)
            if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
                raise ValueError(f"{name}: weight {kernel.shape} and bias {bias.shape} do not form a Linear layer")
            if state == "linear":
                raise ValueError(f"{name} follows layer {last_linear} (Linear) with no activation between them; "
                                 f"every hidden Linear must be followed by ReLU, Tanh or Sigmoid")
            if width is not None and kernel.shape[0] != width:
                raise ValueError(f"{name} expects {kernel.shape[0]} input features but the layer before it "
                                 f"gives {width}")
            out.append(dict(kind="linear", kernel=kernel, bias=bias))
            width, state, last_linear, n_linear = kernel.shape[1], "linear", i, n_linear + 1
            last_linear_pre, pending_pre = pending_pre, None
        elif kind in _ACTIVATIONS:
            if state != "linear":
                raise ValueError(f"{name} does not directly follow a Linear; the family allows exactly one "
                                 f"activation after each hidden Linear")
            out.append(dict(kind=kind))
            state = "activation"
        elif kind in ("batchnorm", "dropout"):
            if state == "linear":
                raise ValueError(f"{name} sits between layer {last_linear} (Linear) and its activation; the "
                                 f"family puts Dropout/BatchNorm1d only in front of a Linear")
            if pending_pre is not None:
                raise ValueError(f"{name} is the second pre-layer operation (after layer {pending_pre}) in front "
                                 f"of one Linear; at most one Dropout or BatchNorm1d per Linear is supported")
            if kind == "dropout":
                rate = float(layer.get("rate", 0.5))
                if not 0.0 <= rate < 1.0:
                    raise ValueError(f"{name}: dropout rate must be in [0, 1), got {rate}")
                out.append(dict(kind="dropout", rate=rate))
            else:
                out.append(_batchnorm_entry(layer, name, width))
                width = out[-1]["scale"].shape[0]
            pending_pre = i
        elif kind == "softmax":
            if state != "linear":
                raise ValueError(f"{name} must directly follow the output Linear")
            out.append(dict(kind="softmax"))
            state = "end"
        else:
            raise ValueError(f"{name} is not supported; {_FAMILY}")
    if n_linear < 2:
        raise ValueError(f"a network needs at least one hidden Linear and an output Linear, found {n_linear} "
                         f"Linear layer(s)")
    if pending_pre is not None:
        raise ValueError(f"layer {pending_pre} ({_KIND_TO_TORCH[layers[pending_pre]['kind']]}) is not followed by "
                         f"a Linear; the network must end in Linear [-> Softmax]")
    if state not in ("linear", "end"):
        raise ValueError(f"the network ends in an activation after layer {last_linear} (Linear); the output Linear "
                         f"may only be followed by Softmax")
    if last_linear_pre is not None:
        raise ValueError(f"layer {last_linear_pre} ({_KIND_TO_TORCH[layers[last_linear_pre]['kind']]}) sits in "
                         f"front of the output Linear, which the masked network cannot represent; remove it "
                         f"(Dropout is the identity in eval mode)")
    linears = [l for l in out if l["kind"] == "linear"]
    return DenseNetwork(layers=out, n_features=int(linears[0]["kernel"].shape[0]),
                        n_classes=int(linears[-1]["kernel"].shape[1]))


def _f32(a, what: str) -> np.ndarray:
    try:
        return np.array(_numpy(a), dtype=np.float32, copy=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not a numeric array: {err}") from None


def _numpy(a):
    """A torch tensor (any device, with or without grad) or array-like -> NumPy."""
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _batchnorm_entry(layer: dict, name: str, width: int | None) -> dict:
    if layer.get("mean") is None or layer.get("var") is None:
        raise ValueError(f"{name} has no running statistics (track_running_stats=False): its eval output depends "
                         f"on the batch, which the masked network cannot represent")
    mean, var = _f32(layer["mean"], f"{name} running_mean"), _f32(layer["var"], f"{name} running_var")
    n = mean.shape[0] if mean.ndim == 1 else -1
    scale = _f32(layer["scale"], f"{name} weight") if layer.get("scale") is not None else np.ones(max(n, 0), np.float32)
    bias = _f32(layer["bias"], f"{name} bias") if layer.get("bias") is not None else np.zeros(max(n, 0), np.float32)
    if n < 0 or var.shape != (n,) or scale.shape != (n,) or bias.shape != (n,):
        raise ValueError(f"{name}: weight {scale.shape}, bias {bias.shape}, running_mean {mean.shape} and "
                         f"running_var {var.shape} must all be ({n},)-vectors")
    if width is not None and n != width:
        raise ValueError(f"{name} normalises {n} features but the layer before it gives {width}")
    eps = float(layer.get("eps", BN_EPS))
    # the masked network's batch-norm uses eps 1e-5: fold any other eps into the running variance (exact in eval)
    return dict(kind="batchnorm", scale=scale, bias=bias, mean=mean, var=var + np.float32(eps - BN_EPS), eps=BN_EPS)


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("this needs PyTorch: pip install 'neon_jax[torch]' (on a CPU-only machine install "
                          "the CPU build of torch first)") from None
    return torch


def _flatten_modules(module) -> list:
    from torch import nn

    mods = []
    for child in module.children() if isinstance(module, nn.Sequential) else [module]:
        mods += _flatten_modules(child) if isinstance(child, nn.Sequential) else [child]
    return mods


def from_torch(module) -> DenseNetwork:
    """A PyTorch ``nn.Sequential`` classifier of the NEON family -> `DenseNetwork` (eval-mode semantics).

    The module's weights are copied (float32); its train/eval mode does not matter. Raises ValueError naming the
    first layer outside the family or the first shape that does not chain.
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"expected an nn.Sequential, got {type(module).__name__}; {_FAMILY}")
    layers = []
    for i, m in enumerate(_flatten_modules(module)):
        cls = type(m).__name__
        kind = _TORCH_KINDS.get(cls) if type(m).__module__.startswith("torch.nn") else None
        if kind is None:
            raise ValueError(f"layer {i} ({type(m).__module__}.{cls}) is not supported; {_FAMILY}")
        if kind == "linear":
            layers.append(dict(kind=kind, kernel=_numpy(m.weight).T, bias=None if m.bias is None else m.bias))
        elif kind == "batchnorm":
            layers.append(dict(kind=kind, scale=m.weight, bias=m.bias, mean=m.running_mean, var=m.running_var,
                               eps=m.eps))
        elif kind == "dropout":
            layers.append(dict(kind=kind, rate=m.p))
        elif kind == "softmax":
            if m.dim not in (1, -1, None):
                raise ValueError(f"layer {i} (Softmax) normalises over dim {m.dim}; only dim=1 (classes) is "
                                 f"supported")
            layers.append(dict(kind=kind))
        else:
            layers.append(dict(kind=kind))
    return dense_from_layers(layers)


def _layer_kind(entry, i: int) -> tuple[str, dict]:
    """A layer-list entry ("BatchNorm1d", "relu", {"type": "Dropout", "p": 0.3}, ...) -> (kind, options)."""
    if isinstance(entry, dict):
        options = dict(entry)
        name = options.pop("type", options.pop("kind", None))
    else:
        name, options = entry, {}
    if not isinstance(name, str):
        raise ValueError(f"layer list entry {i} ({entry!r}) names no layer type")
    lookup = {k.lower(): v for k, v in _TORCH_KINDS.items()} | {v: v for v in _TORCH_KINDS.values()}
    kind = lookup.get(name.lower())
    if kind is None:
        raise ValueError(f"layer {i} ({name}) is not supported; {_FAMILY}")
    return kind, options


def from_state_dict(state_dict: dict, layers: Sequence, prefix: str = "") -> DenseNetwork:
    """A ``state_dict`` of an ``nn.Sequential`` plus its layer list -> `DenseNetwork`.

    Args:
      state_dict: ``{"<i>.weight": tensor or array, ...}`` as ``nn.Sequential.state_dict()`` names them
        (``<i>.running_mean`` / ``running_var`` for BatchNorm1d; ``num_batches_tracked`` is ignored).
      layers: the Sequential's layer types in order, e.g. ``["Linear", "ReLU", "Linear", "Softmax"]``; an entry may
        be a dict with options: ``{"type": "Dropout", "p": 0.3}``, ``{"type": "BatchNorm1d", "eps": 1e-3}``.
      prefix: a prefix of every key (e.g. ``"model."`` for a Sequential stored as an attribute).
    Raises:
      ValueError naming a missing key, a key the layer list does not use, or a shape that does not chain.
    """
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError("the layer list must be a non-empty list such as ['Linear', 'ReLU', 'Linear', 'Softmax']")
    used = set()

    def get(i, name, required=True):
        key = f"{prefix}{i}.{name}"
        if key not in state_dict:
            if required:
                raise ValueError(f"the state_dict has no {key!r}, which layer {i} ({_KIND_TO_TORCH[kind]}) needs "
                                 f"(keys present: {', '.join(list(state_dict)[:8])}{', ...' if len(state_dict) > 8 else ''})")
            return None
        used.add(key)
        return state_dict[key]

    parsed = []
    for i, entry in enumerate(layers):
        kind, options = _layer_kind(entry, i)
        if kind == "linear":
            weight = _f32(get(i, "weight"), f"layer {i} (Linear) weight")
            if weight.ndim != 2:
                raise ValueError(f"layer {i} (Linear) weight has shape {weight.shape}, expected (out, in)")
            parsed.append(dict(kind=kind, kernel=weight.T, bias=get(i, "bias", required=False)))
        elif kind == "batchnorm":
            parsed.append(dict(kind=kind, scale=get(i, "weight", False), bias=get(i, "bias", False),
                               mean=get(i, "running_mean"), var=get(i, "running_var"),
                               eps=float(options.get("eps", BN_EPS))))
            get(i, "num_batches_tracked", required=False)
        elif kind == "dropout":
            parsed.append(dict(kind=kind, rate=float(options.get("p", options.get("rate", 0.5)))))
        else:
            parsed.append(dict(kind=kind))
    unused = [k for k in state_dict if k not in used]
    if unused:
        raise ValueError(f"the state_dict holds keys the layer list does not use: {', '.join(unused[:8])}"
                         f"{', ...' if len(unused) > 8 else ''} (is the layer list complete and in order?)")
    return dense_from_layers(parsed)


def from_arrays(weights: Sequence, biases: Sequence | None = None, activation: str | Sequence[str] = "relu",
                layout: str = "in_out", softmax: bool = True) -> DenseNetwork:
    """Plain weight lists -> `DenseNetwork` (``Linear -> activation`` per hidden layer, then ``Linear [-> Softmax]``).

    Args:
      weights: one 2-D array per Linear layer, the last one the output layer.
      biases: one 1-D array per Linear (None: zeros).
      activation: one name (relu / tanh / sigmoid) for every hidden layer, or one per hidden layer.
      layout: "in_out" (``x @ W``: NumPy, Keras, JAX) or "out_in" (PyTorch's ``W x``).
      softmax: end in Softmax (predictions are the argmax of the logits either way).
    """
    if layout not in ("in_out", "out_in"):
        raise ValueError(f"layout must be 'in_out' or 'out_in', got {layout!r}")
    weights = [_f32(w, f"weight {i}") for i, w in enumerate(weights)]
    if biases is not None and len(biases) != len(weights):
        raise ValueError(f"got {len(weights)} weight arrays but {len(biases)} bias arrays")
    hidden = len(weights) - 1
    acts = [activation] * hidden if isinstance(activation, str) else list(activation)
    if len(acts) != hidden:
        raise ValueError(f"{hidden} hidden layer(s) need {hidden} activation(s), got {len(acts)}")
    layers = []
    for i, w in enumerate(weights):
        if w.ndim != 2:
            raise ValueError(f"weight {i} has shape {w.shape}; each weight must be 2-D")
        kernel = w if layout == "in_out" else w.T
        if i > 0 and kernel.shape[0] != layers[-2]["kernel"].shape[1]:
            other = "out_in" if layout == "in_out" else "in_out"
            raise ValueError(f"weight {i} has shape {w.shape}, which does not chain with weight {i - 1} "
                             f"{weights[i - 1].shape} in layout {layout!r} (are the arrays in layout {other!r}?)")
        layers.append(dict(kind="linear", kernel=kernel, bias=None if biases is None else biases[i]))
        if i < hidden:
            kind = str(acts[i]).lower()
            if kind not in _ACTIVATIONS:
                raise ValueError(f"activation {i} ({acts[i]!r}) is not supported; use relu, tanh or sigmoid")
            layers.append(dict(kind=kind))
    if softmax:
        layers.append(dict(kind="softmax"))
    return dense_from_layers(layers)


def _allowed_torch_globals():
    from torch import nn

    return [nn.Sequential, nn.Linear, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.BatchNorm1d, nn.Dropout, nn.Softmax]


def load_torch(path) -> Any:
    """Reads a ``torch.save`` file safely: ``weights_only`` loading with the family's module classes allowed.

    Returns whatever was saved (an ``nn.Sequential`` or a dict). A file that pickles any other class is refused
    with an error naming it, before anything is unpickled (no arbitrary code runs).
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PyTorch file at {path}")
    allowed = _allowed_torch_globals()
    allowed_names = {f"{c.__module__}.{c.__qualname__}" for c in allowed}
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 -- legacy (non-zip) files: torch.load below names what it refuses
        unsafe = []
    bad = [g for g in unsafe if g not in allowed_names]
    if bad:
        raise ValueError(f"{path} holds {', '.join(bad)}, which neon_jax does not import; {_FAMILY}")
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- unpickling errors are many types; the message is what matters
        # torch's own text advises weights_only=False (running the file's code): never pass that advice on
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "weights_only" in reason or "Weights only load failed" in reason:
            reason = ("it is not a torch.save file (neither its zip format nor a legacy pickle)"
                      if not _looks_like_torch_save(path) else "its contents are not tensors and allowed modules")
        raise ValueError(f"{path} is not a model file neon_jax accepts: {reason}. {_FAMILY}, saved with "
                         f"torch.save(model, path) or torch.save({{'state_dict': ..., 'layers': [...]}}, path)") from None


def _looks_like_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive (since 1.6) or, legacy, a pickle (protocol 2+ starts with 0x80)."""
    import zipfile

    with open(path, "rb") as fh:
        first = fh.read(1)
    return zipfile.is_zipfile(path) or first == b"\x80"


def from_torch_file(path) -> DenseNetwork:
    """A ``.pt`` / ``.pth`` file -> `DenseNetwork`.

    Accepted contents: ``torch.save(model)`` of an ``nn.Sequential`` of the family, or
    ``torch.save({"state_dict": model.state_dict(), "layers": ["Linear", "ReLU", ...]})`` (the form `export_network`
    describes in ``<stem>.arch.json``). A bare state_dict is refused: it does not say which activations sit
    between the Linears.
    """
    obj = load_torch(path)
    torch = _torch()
    if isinstance(obj, torch.nn.Module):
        return from_torch(obj)
    if isinstance(obj, dict) and "state_dict" in obj and "layers" in obj:
        return from_state_dict(obj["state_dict"], obj["layers"], prefix=obj.get("prefix", ""))
    if isinstance(obj, dict) and obj and all(hasattr(v, "shape") for v in obj.values()):
        raise ValueError(f"{path} holds a bare state_dict, which does not say which activations sit between the "
                         f"Linears; save torch.save(model, path) or torch.save({{'state_dict': "
                         f"model.state_dict(), 'layers': ['Linear', 'ReLU', ..., 'Softmax']}}, path)")
    raise ValueError(f"{path} holds a {type(obj).__name__}, not an nn.Sequential or a "
                     f"{{'state_dict', 'layers'}} dict")


def load_network(path) -> DenseNetwork:
    """Any supported network file -> `DenseNetwork`, by suffix: ``.pt`` / ``.pth`` (PyTorch), ``.safetensors``
    (written by `export_network`), otherwise a neon_jax network (``.npz`` / ``.json`` / their common stem)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return from_torch_file(path)
    if suffix == ".safetensors":
        return load_safetensors(path)
    if suffix == ".onnx":  # the network alone; `neon_jax.prune` also keeps the graph's Scaler and class labels
        from neon_jax.onnx_import import from_onnx

        return from_onnx(path)[0]
    return load_dense_network(path)


# ----------------------------------------------------------------------------------------------------------
# Export


def layer_spec(net: DenseNetwork) -> list[dict]:
    """The network's ``nn.Sequential`` layer list as JSON-able dicts (``type`` + sizes / options)."""
    spec = []
    for l in net.layers:
        kind = l["kind"]
        entry: dict[str, Any] = {"type": _KIND_TO_TORCH[kind]}
        if kind == "linear":
            entry.update(in_features=int(l["kernel"].shape[0]), out_features=int(l["kernel"].shape[1]))
        elif kind == "batchnorm":
            entry.update(num_features=int(l["scale"].shape[0]), eps=float(l["eps"]))
        elif kind == "dropout":
            entry.update(p=float(l["rate"]))
        elif kind == "softmax":
            entry.update(dim=1)
        spec.append(entry)
    return spec


def state_arrays(net: DenseNetwork) -> dict[str, np.ndarray]:
    """The network's parameters as ``nn.Sequential.state_dict()`` names and layouts (weight (out, in)), NumPy."""
    arrays = {}
    for i, l in enumerate(net.layers):
        if l["kind"] == "linear":
            arrays[f"{i}.weight"] = np.ascontiguousarray(np.asarray(l["kernel"], np.float32).T)
            arrays[f"{i}.bias"] = np.asarray(l["bias"], np.float32)
        elif l["kind"] == "batchnorm":
            arrays[f"{i}.weight"] = np.asarray(l["scale"], np.float32)
            arrays[f"{i}.bias"] = np.asarray(l["bias"], np.float32)
            arrays[f"{i}.running_mean"] = np.asarray(l["mean"], np.float32)
            arrays[f"{i}.running_var"] = np.asarray(l["var"], np.float32)
    return arrays


def _torch_modules(net: DenseNetwork, dropout_rate: float | None = None) -> list:
    torch = _torch()
    nn = torch.nn
    modules = []
    for l in net.layers:
        kind = l["kind"]
        if kind == "batchnorm":
            bn = nn.BatchNorm1d(int(np.asarray(l["scale"]).shape[0]), eps=float(l["eps"]), momentum=0.1)
            with torch.no_grad():
                for name, key in (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
                                  ("running_var", "var")):
                    getattr(bn, name).copy_(torch.from_numpy(np.array(l[key], np.float32)))
            modules.append(bn)
        elif kind == "dropout":
            modules.append(nn.Dropout(p=float(l["rate"] if dropout_rate is None else dropout_rate)))
        elif kind == "linear":
            kernel = np.asarray(l["kernel"], np.float32)
            lin = nn.Linear(kernel.shape[0], kernel.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
                lin.bias.copy_(torch.from_numpy(np.array(l["bias"], np.float32)))
            modules.append(lin)
        elif kind == "softmax":
            modules.append(nn.Softmax(dim=1))
        elif kind in _ACTIVATIONS:
            modules.append(getattr(nn, _KIND_TO_TORCH[kind])())
        else:
            raise ValueError(f"unsupported layer kind {kind!r}")
    return modules


def to_torch(net: DenseNetwork) -> Any:
    """`DenseNetwork` -> ``nn.Sequential`` with the same layers and real widths, weights copied, in eval mode."""
    return _torch().nn.Sequential(*_torch_modules(net)).eval()


def to_torch_sequential(dense_net: DenseNetwork, dropout_rate: float | None = None) -> Any:
    """The original's ``nn.Sequential`` for a NEON base network (ends in Softmax), in TRAIN mode as the original
    trains and pickles it; `dropout_rate` overrides every Dropout's p. Used by the PyTorch reference benchmarks."""
    modules = _torch_modules(dense_net, dropout_rate)
    if not modules or not isinstance(modules[-1], _torch().nn.Softmax):
        raise ValueError("a NEON base network ends in Softmax")
    return _torch().nn.Sequential(*modules).train()


def torch_state_dict(net: DenseNetwork) -> dict:
    """``{"format", "state_dict", "layers", "n_features", "n_classes"}``: what ``torch.save`` needs to ship the
    network without pickling module classes; `from_torch_file` reads it back."""
    torch = _torch()
    return {"format": TORCH_FORMAT,
            "state_dict": {k: torch.from_numpy(v.copy()) for k, v in state_arrays(net).items()},
            "layers": layer_spec(net), "n_features": net.n_features, "n_classes": net.n_classes}


def to_onnx(net: DenseNetwork, opset: int = ONNX_OPSET, input_scaling=None, outputs=None, class_labels=None,
            feature_names=None):
    """`DenseNetwork` -> ``onnx.ModelProto`` (built with ``onnx.helper``; default domain, opset `ONNX_OPSET`).

    Input ``input`` (batch, n_features) float32, dynamic batch. Outputs ``logits`` (batch, n_classes) and, when the
    network ends in Softmax, ``probabilities`` first. Linear -> Gemm (weights stored (out, in), transB=1),
    BatchNorm1d -> BatchNormalization (inference form), Dropout is the identity in inference and emits no node.
    Initialisers carry the PyTorch state_dict names. `input_scaling` ((d,) offset, (d,) scale): the graph starts
    with ``(input - offset) * scale`` (``Sub``, ``Mul``), so it runs on raw rows (`pruner.PruneResult.input_scaling`).
    `outputs` ([(name, role)], role "probabilities" / "logits" / "label"): the graph's outputs in that order and
    with those names instead (an imported ONNX model's, `onnx_import.OnnxModel.output_roles`); a "label" output is
    ``class_labels[argmax]`` (int64 or string labels). `feature_names` (d names): the input's columns in order, kept
    as the model's metadata ``feature_names`` (a JSON list), which `onnx_import.from_onnx` reads back so a DataFrame
    with other or reordered columns is named before any work.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    arrays = state_arrays(net)
    nodes, inits = [], []
    wanted = None if outputs is None else [(str(n), str(r)) for n, r in outputs]
    if wanted is not None:
        bad = sorted({r for _, r in wanted} - {"probabilities", "logits", "label"})
        if bad:
            raise ValueError(f"unknown output role(s) {bad}; use probabilities, logits or label")
        if any(r == "label" for _, r in wanted) and class_labels is None:
            raise ValueError("a label output needs class_labels")
        own = {"input", "input_centred", "input_scaled", "label_index", "class_labels"}
        clash = {n for n, r in wanted if n in own or (n in ("logits", "probabilities") and n != r)}
        if clash:
            raise ValueError(f"output names {sorted(clash)} are the graph's own tensors; rename them")
    h = "input"
    if input_scaling is not None:
        offset, scale = (np.asarray(a, np.float32).reshape(-1) for a in input_scaling)
        if offset.shape != (net.n_features,) or scale.shape != (net.n_features,):
            raise ValueError(f"input_scaling needs {net.n_features} offsets and scales, got {offset.shape} and "
                             f"{scale.shape}")
        inits += [numpy_helper.from_array(offset, "input_offset"), numpy_helper.from_array(scale, "input_scale")]
        nodes += [helper.make_node("Sub", ["input", "input_offset"], ["input_centred"], name="input_sub"),
                  helper.make_node("Mul", ["input_centred", "input_scale"], ["input_scaled"], name="input_mul")]
        h = "input_scaled"
    last_linear = max(i for i, l in enumerate(net.layers) if l["kind"] == "linear")
    outputs = []
    for i, l in enumerate(net.layers):
        kind = l["kind"]
        out = "logits" if i == last_linear else f"h{i}"
        if kind == "linear":
            inits += [numpy_helper.from_array(arrays[f"{i}.weight"], f"{i}.weight"),
                      numpy_helper.from_array(arrays[f"{i}.bias"], f"{i}.bias")]
            nodes.append(helper.make_node("Gemm", [h, f"{i}.weight", f"{i}.bias"], [out], name=f"linear{i}",
                                          transB=1))
        elif kind == "batchnorm":
            names = [f"{i}.weight", f"{i}.bias", f"{i}.running_mean", f"{i}.running_var"]
            inits += [numpy_helper.from_array(arrays[n], n) for n in names]
            nodes.append(helper.make_node("BatchNormalization", [h, *names], [out], name=f"batchnorm{i}",
                                          epsilon=float(l["eps"])))
        elif kind == "dropout":
            continue
        elif kind in _ACTIVATIONS:
            nodes.append(helper.make_node({"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}[kind], [h], [out],
                                          name=f"{kind}{i}"))
        elif kind == "softmax":
            out = "probabilities"
            nodes.append(helper.make_node("Softmax", [h], [out], name=f"softmax{i}", axis=1))
            outputs.append(out)
        h = out
    outputs.append("logits")
    shape_out = ["batch", net.n_classes]
    infos = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape_out) for name in outputs]
    if wanted is not None:
        infos = []
        probabilities = "probabilities" if "probabilities" in outputs else None
        for name, role in wanted:
            if role == "label":
                labels = np.asarray(class_labels)
                is_text = labels.dtype.kind in "USO"
                labels = labels.astype(object if is_text else np.int64)
                inits.append(numpy_helper.from_array(labels, "class_labels"))
                nodes += [helper.make_node("ArgMax", [probabilities or "logits"], ["label_index"], axis=1,
                                           keepdims=0, name="label_argmax"),
                          helper.make_node("Gather", ["class_labels", "label_index"], [name], axis=0,
                                           name="label_gather")]
                infos.append(helper.make_tensor_value_info(
                    name, TensorProto.STRING if is_text else TensorProto.INT64, ["batch"]))
            else:
                source = probabilities if role == "probabilities" else "logits"
                if source is None:
                    raise ValueError("the network ends without Softmax: it has no probabilities output")
                if name != source:
                    nodes.append(helper.make_node("Identity", [source], [name], name=f"output_{name}"))
                infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape_out))
    graph = helper.make_graph(
        nodes, "neon_jax_dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", net.n_features])],
        infos,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="neon_jax",
                              doc_string=f"hidden widths {net.hidden_widths}, {net.num_params()} parameters")
    model.ir_version = ONNX_IR_VERSION
    if feature_names is not None:
        names = [str(n) for n in feature_names]
        if len(names) != net.n_features:
            raise ValueError(f"{len(names)} feature names for a network of {net.n_features} inputs")
        helper.set_model_props(model, {"feature_names": json.dumps(names)})
    onnx.checker.check_model(model)
    return model


def export_paths(out_dir, stem: str, formats: Iterable[str]) -> dict[str, list[Path]]:
    """The files `export_network` writes for each format."""
    out = Path(out_dir)
    files = {"torch": [f"{stem}.pt"], "onnx": [f"{stem}.onnx"],
             "safetensors": [f"{stem}.safetensors", f"{stem}.arch.json"], "npz": [f"{stem}.npz", f"{stem}.json"],
             "sklearn": [f"{stem}.skops"]}
    return {f: [out / name for name in files[f]] for f in formats}


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """"torch,onnx" or a list -> validated, de-duplicated format names ("all" = `ALL_FORMATS`, the ones every
    network fits; "sklearn" is asked by name: scikit-learn's MLP holds no batch-norm or dropout)."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if "all" in names:
        return list(dict.fromkeys(list(ALL_FORMATS) + [n for n in names if n in EXPORT_FORMATS]))
    unknown = [n for n in names if n not in EXPORT_FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export format(s) {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(EXPORT_FORMATS)} or all (= {', '.join(ALL_FORMATS)})")
    return list(dict.fromkeys(names))


def check_export_dependencies(formats: Iterable[str]) -> None:
    """Raises ImportError (with the pip command) if a package that one of `formats` needs is missing."""
    needs = {"torch": ["torch"], "onnx": ["onnx", "onnxruntime"], "safetensors": ["safetensors"], "npz": [],
             "sklearn": ["skops"]}
    import importlib.util

    missing = sorted({m for f in formats for m in needs[f] if importlib.util.find_spec(m) is None})
    if missing:
        raise ImportError(f"exporting {', '.join(formats)} needs {', '.join(missing)}: "
                          f"pip install 'neon_jax[torch,export]'")


def export_network(net: DenseNetwork, out_dir, formats: Iterable[str] = ALL_FORMATS, stem: str = "pruned",
                   overwrite: bool = False) -> dict[str, list[Path]]:
    """Writes `net` in each of `formats` into `out_dir`; returns {format: [files]}.

    * ``torch``: ``<stem>.pt``, ``torch.save`` of the ``nn.Sequential`` (eval mode). Load it with
      ``torch.load(path, weights_only=False)``, or without unpickling arbitrary classes with
      `neon_jax.interop.load_torch`.
    * ``onnx``: ``<stem>.onnx`` (`to_onnx`, opset `ONNX_OPSET`).
    * ``safetensors``: ``<stem>.safetensors`` (the PyTorch state_dict: ``model.load_state_dict(
      safetensors.torch.load_file(path))`` works on ``to_torch``'s Sequential) with the layer list in its metadata,
      and the same architecture as ``<stem>.arch.json``.
    * ``npz``: ``<stem>.npz`` + ``<stem>.json`` (`nets.save_dense_network`: kernels (in, out)).
    * ``sklearn``: ``<stem>.skops``, a fitted scikit-learn ``MLPClassifier`` (classes 0..K-1) saved with skops
      (`scikit.network_to_mlp`; read it with `neon_jax.scikit.load_sklearn_file` or ``skops.io.load``); networks
      with batch-norm or dropout modules or mixed activations are refused (scikit-learn's MLP has none).
    Never overwrites an existing file unless `overwrite`.
    """
    formats = parse_formats(list(formats))
    check_export_dependencies(formats)
    paths = export_paths(out_dir, stem, formats)
    existing = [str(p) for files in paths.values() for p in files if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass overwrite (--overwrite) to replace")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    arch_doc = {"format": TORCH_FORMAT, "n_features": net.n_features, "n_classes": net.n_classes,
                "hidden_widths": net.hidden_widths, "num_params": net.num_params(), "layers": layer_spec(net)}
    for fmt in formats:
        if fmt == "torch":
            _torch().save(to_torch(net), paths[fmt][0])
        elif fmt == "onnx":
            paths[fmt][0].write_bytes(to_onnx(net).SerializeToString())
        elif fmt == "safetensors":
            from safetensors.numpy import save_file

            save_file(state_arrays(net), str(paths[fmt][0]), metadata={"neon_jax": json.dumps(arch_doc)})
            _readable_like_the_others(paths[fmt][0])
            paths[fmt][1].write_text(json.dumps(arch_doc, indent=1))
        elif fmt == "npz":
            save_dense_network(net, paths[fmt][0])
        elif fmt == "sklearn":
            import skops.io as sio

            from neon_jax.scikit import network_to_mlp

            sio.dump(network_to_mlp(net), paths[fmt][0])
    return paths


def _readable_like_the_others(path: Path) -> None:
    """safetensors writes its file owner-only (0600); give it the mode every other file of the export gets."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def load_safetensors(path) -> DenseNetwork:
    """Reads a ``.safetensors`` file written by `export_network` (its layer list rides in the metadata, or in the
    ``.arch.json`` beside it)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no safetensors file at {path}")
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata() or {}
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    side = path.with_suffix(".arch.json")
    if "neon_jax" in meta:
        doc = json.loads(meta["neon_jax"])
    elif side.is_file():
        doc = json.loads(side.read_text())
    else:
        raise ValueError(f"{path} carries no layer list (no 'neon_jax' metadata and no {side.name} beside it)")
    return from_state_dict(arrays, doc["layers"])


def run_onnx(model_or_path, x: np.ndarray, threads: int | None = None) -> dict[str, np.ndarray]:
    """Runs an ONNX model with onnxruntime on the CPU; returns {output name: array}."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": np.asarray(x, np.float32)})))


def verify_exports(net: DenseNetwork, paths: dict[str, list[Path]], x: np.ndarray, reference_logits=None,
                   atol: float = 1e-4) -> dict[str, dict]:
    """Loads every exported file back, runs it on `x` and compares with `reference_logits` (default: `net.logits`).

    Returns {format: {"max_abs_diff_logits", "max_abs_diff_probabilities", "same_predictions"}}; raises
    AssertionError if a form differs by more than `atol` or predicts a different class anywhere.
    """
    x = np.asarray(x, np.float32)
    ref = np.asarray(net.logits(x) if reference_logits is None else reference_logits, np.float32)
    ref_p = _softmax(ref)
    results = {}
    for fmt, files in paths.items():
        if fmt == "torch":
            torch = _torch()
            model = load_torch(files[0]).eval()
            with torch.no_grad():
                probs = model(torch.from_numpy(x)).numpy()
                logits = model[:-1](torch.from_numpy(x)).numpy() if isinstance(model[-1], torch.nn.Softmax) else probs
        elif fmt == "onnx":
            out = run_onnx(files[0], x)
            logits, probs = out["logits"], out.get("probabilities", _softmax(out["logits"]))
        elif fmt == "sklearn":  # probabilities only: logits are log-probabilities up to a constant per row
            from neon_jax.scikit import load_sklearn_file

            probs64 = load_sklearn_file(files[0]).predict_proba(x.astype(np.float64))
            probs = probs64.astype(np.float32)
            logits = np.log(np.maximum(probs64, 1e-300))
            logits = logits - logits.mean(1, keepdims=True) + ref.mean(1, keepdims=True)
        else:
            logits = (load_safetensors(files[0]) if fmt == "safetensors" else load_dense_network(files[0])).logits(x)
            probs = _softmax(logits)
        diff = float(np.max(np.abs(logits - ref))) if len(x) else 0.0
        diff_p = float(np.max(np.abs(probs - ref_p))) if len(x) else 0.0
        same = bool(np.array_equal(np.argmax(logits, 1), np.argmax(ref, 1)))
        results[fmt] = {"max_abs_diff_logits": diff, "max_abs_diff_probabilities": diff_p, "same_predictions": same}
        if not (diff <= atol and same):
            raise AssertionError(f"the exported {fmt} model differs from the network: max |logit diff| {diff:.3g} "
                                 f"(atol {atol}), same predictions: {same}")
    return results


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def numpy_latency(net: DenseNetwork, batch: int = 256, budget_s: float = 0.05, min_runs: int = 5,
                  seed: int = 0) -> float:
    """Median seconds of one eval forward pass (`DenseNetwork.logits`, NumPy) on a random batch, after a warm-up;
    runs until `budget_s` is spent (at least `min_runs` times). Cheap: the prune report's latency figure."""
    x = np.random.default_rng(seed).random((batch, net.n_features), dtype=np.float32)
    net.logits(x)  # warm-up
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        net.logits(x)
        times.append(time.perf_counter() - t0)
        if len(times) >= 10_000:
            break
    return float(np.median(times))


def latency_report(original: DenseNetwork, pruned: DenseNetwork, batch: int = 256, rounds: int = 3,
                   budget_s: float = 0.03) -> dict:
    """Measured NumPy batch-`batch` latency of both networks (interleaved rounds, best median) and the speedup."""
    before, after = [], []
    for r in range(rounds):
        before.append(numpy_latency(original, batch, budget_s, seed=r))
        after.append(numpy_latency(pruned, batch, budget_s, seed=r))
    t0, t1 = min(before), min(after)
    return {f"latency_b{batch}_numpy_ms_before": 1e3 * t0, f"latency_b{batch}_numpy_ms_after": 1e3 * t1,
            f"speedup_b{batch}_numpy": t0 / t1}


def jax_forward(net: DenseNetwork, probabilities: bool = True):
    """The compacted network as a jitted JAX function: returns ``(fn, params)`` with ``fn(params, x)`` giving
    (N, n_classes) softmax probabilities (or logits). Batch-norm is folded into a per-feature affine map, as the
    masked network computes it; Dropout is the identity (eval mode). One compile per input shape."""
    import jax
    import jax.numpy as jnp

    kinds, params = [], []
    for l in net.layers:
        kind = l["kind"]
        if kind == "linear":
            params.append((jnp.asarray(l["kernel"]), jnp.asarray(l["bias"])))
        elif kind == "batchnorm":
            a = np.asarray(l["scale"], np.float32) / np.sqrt(np.asarray(l["var"], np.float32) + np.float32(l["eps"]))
            params.append((jnp.asarray(a), jnp.asarray(np.asarray(l["bias"], np.float32) - l["mean"] * a)))
        elif kind in ("dropout", "softmax"):
            continue
        else:
            params.append(())
        kinds.append(kind)
    kinds = tuple(kinds)
    activations = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}

    @jax.jit
    def fn(params, x):
        h = x
        for kind, p in zip(kinds, params):
            if kind == "linear":
                h = h @ p[0] + p[1]
            elif kind == "batchnorm":
                h = h * p[0] + p[1]
            else:
                h = activations[kind](h)
        return jax.nn.softmax(h, axis=-1) if probabilities else h

    return fn, params
