"""Networks in: PyTorch modules and files, state_dicts, NumPy weight lists and safetensors exports as a
`nets.DenseNetwork`, which `nets.expand` places into the masked form the agent prunes.

* `from_torch(module)`: an ``nn.Sequential`` of ``Linear`` / ``ReLU`` / ``Tanh`` / ``Sigmoid`` / ``BatchNorm1d`` /
  ``Dropout``, optionally ending in ``Softmax`` (nested Sequentials are flattened);
* `from_state_dict(state_dict, layers)`: a ``state_dict`` of such a Sequential plus its layer list
  (``["Linear", "ReLU", "BatchNorm1d", ...]`` in Sequential order; entries may be dicts such as
  ``{"type": "Dropout", "p": 0.3}``);
* `from_arrays(weights, biases, activation)`: plain NumPy weight lists;
* `load_network(path)`: a file: ``.pt`` / ``.pth`` (``torch.save`` of the whole Sequential, or of
  ``{"state_dict": model.state_dict(), "layers": [...]}``), ``.safetensors`` written by `exports.export_network`,
  or a network saved by neon_jax (``.npz`` + ``.json``).

The family the masked network represents (neon_spec.md §7, `nets.MaskedMLP`): per hidden layer
``[Dropout | BatchNorm1d | nothing] -> Linear -> ReLU | Tanh | Sigmoid`` (activations may differ between layers),
then ``Linear [-> Softmax]``. Anything else -- another layer type, a BatchNorm between a Linear and its
activation, two Linears with no activation between them, two pre-layer operations in front of one Linear, a
Dropout or BatchNorm in front of the output Linear, a BatchNorm without running statistics -- is refused with an
error naming the layer. A BatchNorm's ``eps`` other than 1e-5 is folded into its running variance (eval outputs
unchanged; fine-tuning then uses eps 1e-5). A Linear without bias gets a zero bias.

torch and safetensors are optional (extras ``torch`` and ``export``) and imported lazily.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neon_jax.nets import BN_EPS, DenseNetwork, load_dense_network

TORCH_FORMAT = "neon_jax.torch/1"  # the {"state_dict", "layers"} bundle and the safetensors metadata
# PyTorch class name -> DenseNetwork layer kind
_TORCH_KINDS = {"Linear": "linear", "ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid",
                "BatchNorm1d": "batchnorm", "Dropout": "dropout", "Softmax": "softmax"}
_KIND_TO_TORCH = {v: k for k, v in _TORCH_KINDS.items()}
_ACTIVATIONS = ("relu", "tanh", "sigmoid")
SUPPORTED = ", ".join(_TORCH_KINDS)
_FAMILY = (f"neon_jax imports an nn.Sequential of {SUPPORTED} (Softmax last): per hidden layer "
           f"[Dropout | BatchNorm1d] -> Linear -> ReLU | Tanh | Sigmoid, then Linear [-> Softmax]")



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
            kernel, bias = _linear_arrays(layer, name)
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
    _check_family_end(layers, n_linear, pending_pre, state, last_linear, last_linear_pre)
    linears = [l for l in out if l["kind"] == "linear"]
    return DenseNetwork(layers=out, n_features=int(linears[0]["kernel"].shape[0]),
                        n_classes=int(linears[-1]["kernel"].shape[1]))


def _linear_arrays(layer: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (in, out), bias (out,)) of a linear layer dict as float32 (a missing bias is zeros), or a ValueError
    naming the layer when they do not form a Linear."""
    kernel = _f32(layer["kernel"], f"{name} weight")
    bias = _f32(layer["bias"], f"{name} bias") if layer.get("bias") is not None else np.zeros(
        kernel.shape[1:], np.float32)
    if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
        raise ValueError(f"{name}: weight {kernel.shape} and bias {bias.shape} do not form a Linear layer")
    return kernel, bias


def _check_family_end(layers: Sequence[dict], n_linear: int, pending_pre: int | None, state: str,
                      last_linear: int | None, last_linear_pre: int | None) -> None:
    """The checks on a whole layer list once `dense_from_layers` has walked it: a hidden and an output Linear, no
    pre-layer left without its Linear, nothing but Softmax after the output Linear, and no pre-layer in front of
    the output Linear; a ValueError names the first that fails."""
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
        from neon_jax.interop.onnx_import import from_onnx

        return from_onnx(path)[0]
    return load_dense_network(path)


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
