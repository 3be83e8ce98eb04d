"""Networks out: a (pruned, compacted) `DenseNetwork` with its real, smaller widths as PyTorch, ONNX, safetensors,
.npz or a scikit-learn estimator, each read back and checked.

`to_torch` (``nn.Sequential``), `torch_state_dict`, `to_onnx` (built with ``onnx.helper``, opset `ONNX_OPSET`),
and `export_network`, which writes any of `EXPORT_FORMATS` into a folder. Every form computes
`DenseNetwork.logits` (and its softmax); `verify_exports` checks that on data.

torch, onnx, onnxruntime, safetensors and skops are optional (extras ``torch`` and ``export``) and imported lazily.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neon_jax.interop.imports import (
    _ACTIVATIONS,
    _KIND_TO_TORCH,
    TORCH_FORMAT,
    _torch,
    load_dense_network,
    load_safetensors,
    load_torch,
)
from neon_jax.nets import DenseNetwork, save_dense_network

ONNX_OPSET = 17  # default ONNX domain; every op used (Gemm, BatchNormalization, Relu, Tanh, Sigmoid, Softmax)
ONNX_IR_VERSION = 8  # the lowest IR version that carries opset 17, so older runtimes read the file too
EXPORT_FORMATS = ("torch", "onnx", "safetensors", "npz", "sklearn")
ALL_FORMATS = ("torch", "onnx", "safetensors", "npz")  # "all": the formats every network fits (sklearn by name)


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


def _torch_modules(net: DenseNetwork) -> list:
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
            modules.append(nn.Dropout(p=float(l["rate"])))
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
    with ``(input - offset) * scale`` (``Sub``, ``Mul``), so it runs on raw rows (`jobs.prune.PruneResult.input_scaling`).
    `outputs` ([(name, role)], role "probabilities" / "logits" / "label"): the graph's outputs in that order and
    with those names instead (an imported ONNX model's, `onnx_import.OnnxModel.output_roles`); a "label" output is
    ``class_labels[argmax]`` (int64 or string labels). `feature_names` (d names): the input's columns in order, kept
    as the model's metadata ``feature_names`` (a JSON list), which `onnx_import.from_onnx` reads back so a DataFrame
    with other or reordered columns is named before any work.
    """
    import onnx
    from onnx import TensorProto, helper

    arrays = state_arrays(net)
    wanted = _wanted_outputs(outputs, class_labels)
    nodes, inits, h = _input_scaling_graph(net, input_scaling)
    layer_nodes, layer_inits, outputs = _layer_graph(net, arrays, h)
    nodes += layer_nodes
    inits += layer_inits
    shape_out = ["batch", net.n_classes]
    infos = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape_out) for name in outputs]
    if wanted is not None:
        out_nodes, out_inits, infos = _output_graph(wanted, outputs, class_labels, shape_out)
        nodes += out_nodes
        inits += out_inits
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


def _wanted_outputs(outputs, class_labels) -> list[tuple[str, str]] | None:
    """`to_onnx`'s `outputs` as [(name, role)] (None: the default outputs), checked: known roles, class labels for a
    label output, and no name of the graph's own tensors."""
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
    return wanted


def _input_scaling_graph(net: DenseNetwork, input_scaling) -> tuple[list, list, str]:
    """(nodes, initialisers, tensor the first layer reads) of the graph's start: ``(input - offset) * scale`` for an
    `input_scaling` ((d,) offset, (d,) scale), else nothing and ``input``."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
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
    return nodes, inits, h


def _layer_graph(net: DenseNetwork, arrays: dict, h: str) -> tuple[list, list, list[str]]:
    """(nodes, initialisers, default output names) of the network's layers (parameters `arrays`, `state_arrays`)
    read from tensor `h`: Gemm, BatchNormalization, the activations and Softmax (Dropout emits no node); the
    outputs are ``probabilities`` (when the network ends in Softmax) and ``logits``, in that order."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
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
    return nodes, inits, outputs


def _output_graph(wanted: list[tuple[str, str]], outputs: list[str], class_labels,
                  shape_out: list) -> tuple[list, list, list]:
    """(nodes, initialisers, output value infos) that give the graph the `wanted` outputs, in order: an Identity of
    the probabilities or logits under another name, or a label output ``class_labels[argmax]``."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, infos = [], [], []
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
    return nodes, inits, infos


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
      (`scikit.network_to_mlp`; read it with `neon_jax.interop.scikit.load_sklearn_file` or ``skops.io.load``); networks
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

            from neon_jax.interop.scikit import network_to_mlp

            sio.dump(network_to_mlp(net), paths[fmt][0])
    return paths


def _readable_like_the_others(path: Path) -> None:
    """safetensors writes its file owner-only (0600); give it the mode every other file of the export gets."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


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
    ref_p = softmax(ref)
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
            logits, probs = out["logits"], out.get("probabilities", softmax(out["logits"]))
        elif fmt == "sklearn":  # probabilities only: logits are log-probabilities up to a constant per row
            from neon_jax.interop.scikit import load_sklearn_file

            probs64 = load_sklearn_file(files[0]).predict_proba(x.astype(np.float64))
            probs = probs64.astype(np.float32)
            logits = np.log(np.maximum(probs64, 1e-300))
            logits = logits - logits.mean(1, keepdims=True) + ref.mean(1, keepdims=True)
        else:
            logits = (load_safetensors(files[0]) if fmt == "safetensors" else load_dense_network(files[0])).logits(x)
            probs = softmax(logits)
        diff = float(np.max(np.abs(logits - ref))) if len(x) else 0.0
        diff_p = float(np.max(np.abs(probs - ref_p))) if len(x) else 0.0
        same = bool(np.array_equal(np.argmax(logits, 1), np.argmax(ref, 1)))
        results[fmt] = {"max_abs_diff_logits": diff, "max_abs_diff_probabilities": diff_p, "same_predictions": same}
        if not (diff <= atol and same):
            raise AssertionError(f"the exported {fmt} model differs from the network: max |logit diff| {diff:.3g} "
                                 f"(atol {atol}), same predictions: {same}")
    return results


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, NumPy."""
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)
