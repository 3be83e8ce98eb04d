"""ONNX in: an MLP graph (PyTorch's exporter, skl2onnx's MLPClassifier) as a `DenseNetwork`.

    net, model = onnx_import.from_onnx("model.onnx")
    x = model.transform(X)          # a leading Scaler (skl2onnx's StandardScaler / MinMaxScaler), if any
    model.classes                   # the labels in output order (skl2onnx's classes; else 0..K-1)

The graph is walked from its input along one chain: ``Gemm`` (or ``MatMul`` + ``Add``), ``Relu`` / ``Tanh`` /
``Sigmoid``, ``BatchNormalization``, ``Dropout`` / ``Identity`` / ``Cast`` (no-ops in inference), ending in
``Softmax`` (or, for skl2onnx's binary models, ``Sigmoid`` -> ``Sub`` -> ``Concat``: one logistic output z, taken
as the two logits (0, z)). A leading ``Scaler`` is applied to the rows, not folded into the first layer, so the
fine-tune sees what the network was trained on. After the probabilities only skl2onnx's label branch
(``ArgMax``, ``ArrayFeatureExtractor``, ``Reshape``, ``Cast``, ``ZipMap``) may follow. Any other node is refused,
naming it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from neon_jax.nets import DenseNetwork

_ACTIVATIONS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}
_NO_OPS = ("Dropout", "Identity", "Cast")
_LABEL_BRANCH = ("ArgMax", "ArrayFeatureExtractor", "Reshape", "Cast", "ZipMap", "Identity")


@dataclasses.dataclass
class OnnxModel:
    """What an ONNX model brings besides its weights.

    Attributes:
      path: the file.
      input_name: the graph's input; output_names: its outputs, in order.
      scaler: (offset, scale) of a leading Scaler: rows become (x - offset) * scale; None: none.
      classes: labels in output order (skl2onnx's class list; else 0..K-1).
      binary: one logistic output taken as two logits.
      feature_names: the input's columns in order, from the model's metadata (`FEATURE_NAME_KEYS`); None if unnamed.
    """

    path: str
    input_name: str
    output_names: tuple[str, ...]
    scaler: tuple[np.ndarray, np.ndarray] | None
    classes: np.ndarray
    binary: bool
    feature_names: tuple[str, ...] | None = None
    output_roles: tuple[tuple[str, str], ...] = ()  # (graph output, "probabilities" / "logits" / "label"), in order
    labelled: bool = False  # the graph names its classes (skl2onnx); else `classes` is 0..K-1, in the data's order

    def transform(self, X) -> np.ndarray:
        """(N, d) float32: the rows as the network sees them (the leading Scaler applied, if any)."""
        X = np.asarray(X, np.float32)
        if self.scaler is None:
            return X
        offset, scale = self.scaler
        return ((X - offset) * scale).astype(np.float32)

    @property
    def input_transform(self):
        return None if self.scaler is None else self.transform


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def from_onnx(path) -> tuple[DenseNetwork, OnnxModel]:
    """An ONNX MLP file as a `DenseNetwork` and its `OnnxModel` (see the module docstring for the graphs read).

    Raises:
      ValueError naming the first node that is not part of an MLP (a ``Conv``, say), or the shape that breaks.
    """
    path = Path(path)
    model, weights, input_name = _load_graph(path)
    graph = model.graph
    walk = _Walk(path=path, weights=weights, current=input_name)
    nodes = [n for n in graph.node if n.op_type != "Constant"]
    _walk_chain(walk, nodes)
    layers, classes = walk.layers, walk.classes
    logits = walk.current  # the chain's last tensor: the logits when there is no Softmax
    linears = [layer for layer in layers if layer["kind"] == "linear"]
    if not linears:
        raise ValueError(f"{path}: the graph has no dense layer")
    if not walk.ended:  # no Softmax: the last Linear's outputs are the logits
        layers.append(dict(kind="softmax"))
    n_classes = int(linears[-1]["kernel"].shape[1])
    labelled = classes is not None
    classes = np.arange(n_classes) if classes is None else np.asarray(classes).reshape(-1)
    if len(classes) != n_classes:
        raise ValueError(f"{path}: {n_classes} outputs but {len(classes)} class labels")
    net = DenseNetwork(layers=layers, n_features=int(linears[0]["kernel"].shape[0]), n_classes=n_classes)
    info = OnnxModel(path=str(path), input_name=input_name, output_names=tuple(o.name for o in graph.output),
                     scaler=walk.scaler, classes=classes, binary=walk.binary, labelled=labelled,
                     feature_names=_feature_names(model, path, net.n_features),
                     output_roles=_output_roles(graph, nodes, walk.probabilities, logits))
    return net, info


def _load_graph(path: Path):
    """(onnx.ModelProto, {tensor name: constant array} of its initialisers and Constant nodes, the one input that
    is not a constant) of an ONNX file; FileNotFoundError or a ValueError naming the file when it cannot be."""
    import onnx
    from onnx import numpy_helper

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - onnx raises several kinds on a bad file
        raise ValueError(f"{path}: not a readable ONNX model ({type(err).__name__})") from None
    graph = model.graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            weights[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
    inputs = [i.name for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ValueError(f"{path}: an MLP graph has one input, this one has {len(inputs)}: {inputs}")
    return model, weights, inputs[0]


@dataclasses.dataclass
class _Walk:
    """Where `from_onnx`'s walk along the graph's chain stands: the tensor it has reached and what it has read."""

    path: Path
    weights: dict
    current: str  # the chain's latest tensor
    layers: list[dict] = dataclasses.field(default_factory=list)
    scaler: tuple[np.ndarray, np.ndarray] | None = None
    classes: np.ndarray | None = None
    binary: bool = False
    ended: bool = False  # past the probabilities
    pending: np.ndarray | None = None  # a MatMul's kernel, waiting for its Add
    probabilities: str | None = None  # the tensor of the class probabilities (None: the graph ends in logits)

    def where(self, node) -> str:
        """The file and node, to name in an error."""
        return f"{self.path}: node {node.name or '?'} ({node.op_type})"


def _walk_chain(walk: _Walk, nodes: list) -> None:
    """Reads `nodes` (the graph's non-Constant nodes, in order) into `walk`: the chain from the input to the
    probabilities, then only skl2onnx's label branch."""
    i = 0
    while i < len(nodes):
        node = nodes[i]
        if walk.ended:
            if node.op_type not in _LABEL_BRANCH:
                raise ValueError(f"{walk.where(node)} follows the probabilities; an MLP classifier ends there")
            if node.op_type == "ArrayFeatureExtractor" and node.input[0] in walk.weights:
                walk.classes = walk.weights[node.input[0]]
            i += 1
            continue
        if walk.current not in node.input:
            raise ValueError(f"{walk.where(node)} is not on the network's chain; neon_jax reads plain MLP graphs")
        if _is_binary_head(walk.layers, nodes, i):
            last = walk.layers[-1]  # skl2onnx's binary head: p = sigmoid(z), (1 - p, p) -> logits (0, z)
            last["kernel"] = np.concatenate([np.zeros_like(last["kernel"]), last["kernel"]], axis=1)
            last["bias"] = np.concatenate([np.zeros_like(last["bias"]), last["bias"]])
            walk.layers.append(dict(kind="softmax"))
            walk.binary, walk.ended = True, True
            walk.current = walk.probabilities = nodes[i + 2].output[0]
            i += 3
            continue
        _read_node(walk, node)
        walk.current = node.output[0]
        i += 1


def _is_binary_head(layers: list[dict], nodes: list, i: int) -> bool:
    """Whether node i starts skl2onnx's binary head: a Sigmoid of a one-output Linear, then Sub and Concat."""
    return (nodes[i].op_type == "Sigmoid" and bool(layers) and layers[-1]["kind"] == "linear"
            and layers[-1]["kernel"].shape[1] == 1
            and i + 2 < len(nodes) and [n.op_type for n in nodes[i + 1:i + 3]] == ["Sub", "Concat"])


def _read_node(walk: _Walk, node) -> None:
    """One node of the chain before the probabilities into `walk` (a layer, the leading scaling, or nothing for a
    no-op); a ValueError naming the node when it is not part of an MLP."""
    op, weights, layers = node.op_type, walk.weights, walk.layers
    if op == "Scaler" and not layers:
        a = _attrs(node)
        walk.scaler = (np.asarray(a.get("offset", [0.0]), np.float32), np.asarray(a.get("scale", [1.0]), np.float32))
    elif op in ("Sub", "Mul") and not layers and node.input[0] == walk.current and node.input[1] in weights:
        # a leading (input - offset) * scale, as `interop.to_onnx(input_scaling=...)` writes it: the Scaler's map
        offset, scale = walk.scaler if walk.scaler is not None else (np.float32(0.0), np.float32(1.0))
        c = np.asarray(weights[node.input[1]], np.float32).reshape(-1)
        walk.scaler = (offset + c / np.where(scale != 0, scale, 1.0), scale) if op == "Sub" else (offset, scale * c)
    elif op in _NO_OPS:
        pass  # identities in inference (a Dropout's mask output is unused)
    elif op == "Gemm":
        layers.append(_gemm_layer(walk, node))
    elif op == "MatMul":
        w = weights.get(node.input[1])
        if w is None or w.ndim != 2:
            raise ValueError(f"{walk.where(node)}: its weight is not a 2-D constant of the graph")
        walk.pending = np.asarray(w, np.float32)
        layers.append(dict(kind="linear", kernel=walk.pending, bias=np.zeros(walk.pending.shape[1], np.float32)))
    elif op == "Add" and walk.pending is not None:
        other = [n for n in node.input if n != walk.current]
        b = weights.get(other[0]) if other else None
        if b is None:
            raise ValueError(f"{walk.where(node)}: its bias is not a constant of the graph")
        layers[-1]["bias"] = np.asarray(b, np.float32).reshape(-1)
        walk.pending = None
    elif op == "BatchNormalization":
        a = _attrs(node)
        scale, bias, mean, var = (np.asarray(weights[n], np.float32) for n in node.input[1:5])
        layers.append(dict(kind="batchnorm", scale=scale, bias=bias, mean=mean, var=var,
                           eps=float(a.get("epsilon", 1e-5))))
    elif op == "Softmax":
        layers.append(dict(kind="softmax"))
        walk.ended, walk.probabilities = True, node.output[0]
    elif op in _ACTIVATIONS:
        layers.append(dict(kind=_ACTIVATIONS[op]))
    else:
        raise ValueError(f"{walk.where(node)} is not supported: neon_jax reads MLP graphs (Gemm or MatMul+Add, "
                         f"Relu/Tanh/Sigmoid, BatchNormalization, Dropout, a final Softmax)")


def _gemm_layer(walk: _Walk, node) -> dict:
    """A Gemm node as a linear layer dict (kernel (in, out), alpha and beta folded in)."""
    a = _attrs(node)
    if a.get("transA", 0):
        raise ValueError(f"{walk.where(node)}: transA=1 is not a dense layer's form")
    w = walk.weights.get(node.input[1])
    if w is None:
        raise ValueError(f"{walk.where(node)}: its weight is not a constant of the graph")
    w = (w.T if a.get("transB", 0) else w) * float(a.get("alpha", 1.0))
    b = walk.weights.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[1])
    return dict(kind="linear", kernel=np.asarray(w, np.float32),
                bias=np.asarray(b * float(a.get("beta", 1.0)), np.float32).reshape(-1))


FEATURE_NAME_KEYS = ("feature_names", "feature_names_in", "columns")  # metadata keys read as the input's columns


def _feature_names(model, path, n_features: int) -> tuple[str, ...] | None:
    """The input's column names where the model's metadata holds them (a JSON list or comma-separated text under
    one of `FEATURE_NAME_KEYS`; `interop.to_onnx` writes ``feature_names``); None when it does not."""
    props = {p.key: p.value for p in model.metadata_props}
    key = next((k for k in FEATURE_NAME_KEYS if k in props), None)
    if key is None:
        return None
    text = props[key]
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = [n.strip() for n in text.split(",")]
    if not isinstance(names, list) or len(names) != n_features:
        raise ValueError(f"{path}: the metadata's {key!r} names {len(names) if isinstance(names, list) else '?'} "
                         f"columns but the first layer takes {n_features} inputs")
    return tuple(str(n) for n in names)


def _output_roles(graph, nodes, probabilities: str | None, logits: str) -> tuple[tuple[str, str], ...]:
    """Each graph output's role: the probabilities (the Softmax's output, or an Identity of it), the logits (the
    last Linear's output when there is no Softmax), or the label (skl2onnx's label branch)."""
    same = {probabilities} if probabilities else set()
    for node in nodes:
        if node.op_type == "Identity" and node.input[0] in same:
            same.add(node.output[0])
    roles = []
    for out in graph.output:
        if out.name in same:
            roles.append((out.name, "probabilities"))
        elif out.name == logits:
            roles.append((out.name, "logits"))
        else:
            roles.append((out.name, "label"))
    return tuple(roles)
