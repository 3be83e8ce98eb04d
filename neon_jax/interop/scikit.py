"""scikit-learn in and out: an `MLPClassifier` (or a `Pipeline` ending in one) <-> a `DenseNetwork`.

    net, model = scikit.from_sklearn(pipeline)    # the MLP as a DenseNetwork; `model` keeps the pipeline's parts
    X_net = model.transform(X)                    # what the network sees: the pipeline's steps before the MLP
    y_idx = model.class_index(y)                  # labels -> the network's output indices (classes_ order)
    back = scikit.to_sklearn(pruned, model)       # the pruned network as the same kind of estimator

The steps before the MLP (scalers, encoders, any fitted transformer) are applied to the data, not folded into the
first layer: the network is fine-tuned on exactly what it was trained on, and the pruned model comes back as the
same `Pipeline` with the pruned MLP in its last step. A binary `MLPClassifier` has one logistic output z; it
becomes two logits (0, z), whose softmax is sklearn's (1 - sigmoid(z), sigmoid(z)), and comes back as one output
(the difference of the two logits), so predictions and probabilities agree exactly both ways.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from neon_jax.nets import DenseNetwork

# sklearn's hidden activation -> the DenseNetwork's
_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid"}
_BACK = {v: k for k, v in _ACTIVATIONS.items()}


@dataclasses.dataclass
class SklearnModel:
    """What a scikit-learn model brings besides its weights.

    Attributes:
      estimator: the model passed in (an `MLPClassifier` or a `Pipeline`).
      preprocess: the fitted steps before the MLP (a `Pipeline` of them), or None.
      classes: the MLP's `classes_` (labels in output order).
      feature_names: `feature_names_in_` of the model, where it was fitted on named columns; else None.
      binary: the MLP has one logistic output (two classes).
    """

    estimator: Any
    preprocess: Any
    classes: np.ndarray
    feature_names: tuple[str, ...] | None
    binary: bool

    def transform(self, X) -> np.ndarray:
        """(N, d) float32: the rows as the network sees them (the pipeline's steps before the MLP, if any)."""
        out = X if self.preprocess is None else self.preprocess.transform(X)
        return np.asarray(out, np.float32)

    @property
    def input_transform(self):
        """The steps before the MLP as a callable on X (None when the model is a bare MLPClassifier)."""
        return None if self.preprocess is None else self.preprocess.transform

    def class_index(self, y) -> np.ndarray:
        """(N,) int32 output indices of labels `y`; an error naming the labels the model does not know."""
        y = np.asarray(y)
        known = {c: i for i, c in enumerate(self.classes.tolist())}
        unknown = sorted({v for v in y.tolist() if v not in known}, key=str)
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not among the model's classes_ {self.classes.tolist()[:10]}")
        return np.array([known[v] for v in y.tolist()], np.int32)


def is_sklearn_model(obj) -> bool:
    """True for an `MLPClassifier` or a `Pipeline` (whose last step is checked by `from_sklearn`)."""
    try:
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import Pipeline
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return False
    return isinstance(obj, (MLPClassifier, Pipeline))


def from_sklearn(model) -> tuple[DenseNetwork, SklearnModel]:
    """A fitted `MLPClassifier`, or a `Pipeline` ending in one, as a `DenseNetwork` plus what it needs around it.

    Returns:
      (network, SklearnModel). The network takes the output of the pipeline's earlier steps
      (`SklearnModel.transform`) and gives one logit per class in `classes_` order.
    Raises:
      ValueError naming the problem: not fitted, another last step, a hidden activation the networks do not have
      ('identity'), a multi-label MLP.
    """
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    preprocess = None
    mlp = model
    if isinstance(model, Pipeline):
        mlp = model.steps[-1][1]
        if not isinstance(mlp, MLPClassifier):
            raise ValueError(f"the pipeline's last step is a {type(mlp).__name__}; neon_jax prunes pipelines that "
                             f"end in an MLPClassifier")
        preprocess = model[:-1] if len(model.steps) > 1 else None
    elif not isinstance(model, MLPClassifier):
        raise ValueError(f"expected an MLPClassifier or a Pipeline ending in one, got {type(model).__name__}")
    if not hasattr(mlp, "coefs_"):
        raise ValueError("the MLPClassifier is not fitted (no coefs_); fit it before pruning")
    if mlp.activation not in _ACTIVATIONS:
        raise ValueError(f"the MLPClassifier's hidden activation {mlp.activation!r} is not supported; "
                         f"use one of {', '.join(_ACTIVATIONS)}")
    classes = np.asarray(mlp.classes_)
    binary = mlp.out_activation_ == "logistic"
    if binary and len(classes) != 2:
        raise ValueError("a multi-label MLPClassifier (logistic outputs over several labels) is not a classifier "
                         "neon_jax prunes; it needs one class per row")
    layers = []
    coefs = [np.asarray(w, np.float32) for w in mlp.coefs_]
    biases = [np.asarray(b, np.float32) for b in mlp.intercepts_]
    if binary:  # one logistic output z -> logits (0, z): softmax gives (1 - sigmoid(z), sigmoid(z))
        coefs[-1] = np.concatenate([np.zeros_like(coefs[-1]), coefs[-1]], axis=1)
        biases[-1] = np.concatenate([np.zeros_like(biases[-1]), biases[-1]])
    for i, (w, b) in enumerate(zip(coefs, biases)):
        layers.append(dict(kind="linear", kernel=w, bias=b))
        if i < len(coefs) - 1:
            layers.append(dict(kind=_ACTIVATIONS[mlp.activation]))
    layers.append(dict(kind="softmax"))
    net = DenseNetwork(layers=layers, n_features=int(coefs[0].shape[0]), n_classes=len(classes))
    names = getattr(model, "feature_names_in_", None)
    info = SklearnModel(estimator=model, preprocess=preprocess, classes=classes,
                        feature_names=None if names is None else tuple(str(n) for n in names), binary=binary)
    return net, info


def to_sklearn(net: DenseNetwork, like: SklearnModel | Any):
    """A `DenseNetwork` (a pruned one) as a fitted estimator of the kind `like` came from: an `MLPClassifier`, or
    the same `Pipeline` (its earlier steps as fitted) ending in one, whose `predict` / `predict_proba` give the
    network's classes and probabilities.

    Args:
      net: Linear layers and one hidden activation kind between them, ending in softmax; batch-norms before a
        linear layer are folded into it and dropout left out (`DenseNetwork.folded`), the same function.
      like: the `SklearnModel` of `from_sklearn` (or the estimator itself).
    """
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import Pipeline

    if not isinstance(like, SklearnModel):
        like = from_sklearn(like)[1]
    net = net.folded()  # batch-norms into the next linear layer, dropout out: the same function
    kinds = [layer["kind"] for layer in net.layers]
    other = sorted({k for k in kinds if k not in ("linear", "softmax", *_BACK)})
    if other:
        raise ValueError(f"the network has {', '.join(other)} modules, which scikit-learn's MLPClassifier has not")
    acts = {k for k in kinds if k in _BACK}
    if len(acts) > 1:
        raise ValueError(f"the network mixes hidden activations {sorted(acts)}; an MLPClassifier has one")
    if net.n_classes != len(like.classes):
        raise ValueError(f"the network has {net.n_classes} outputs but the model {len(like.classes)} classes")
    linears = [layer for layer in net.layers if layer["kind"] == "linear"]
    coefs = [np.asarray(layer["kernel"], np.float64) for layer in linears]
    biases = [np.asarray(layer["bias"], np.float64) for layer in linears]
    old = like.estimator.steps[-1][1] if isinstance(like.estimator, Pipeline) else like.estimator
    widths = tuple(int(w.shape[1]) for w in coefs[:-1])
    mlp = clone(old).set_params(hidden_layer_sizes=widths, activation=_BACK[acts.pop()] if acts else old.activation,
                                max_iter=1, warm_start=False)
    # a one-iteration fit on one row per class sets sklearn's internals (label binarizer, out_activation_, ...);
    # its weights are then replaced by the network's
    x0 = np.zeros((len(like.classes), net.n_features))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x0, like.classes)
    if mlp.out_activation_ == "logistic":  # two classes: logits (a, b) -> one logistic output b - a
        coefs[-1] = coefs[-1][:, 1:] - coefs[-1][:, :1]
        biases[-1] = biases[-1][1:] - biases[-1][:1]
    mlp.coefs_, mlp.intercepts_ = coefs, biases
    mlp.n_iter_, mlp.loss_curve_ = getattr(old, "n_iter_", 0), list(getattr(old, "loss_curve_", []))
    if hasattr(old, "feature_names_in_"):
        mlp.feature_names_in_ = old.feature_names_in_
    if isinstance(like.estimator, Pipeline):
        return Pipeline(like.estimator.steps[:-1] + [(like.estimator.steps[-1][0], mlp)],
                        memory=like.estimator.memory)
    return mlp


def network_to_mlp(net: DenseNetwork, classes=None):
    """A `DenseNetwork` as a fitted `MLPClassifier` of no preprocessing whose `predict_proba` is the network's
    softmax (`to_sklearn` for a network that did not come from scikit-learn).

    Args:
      classes: (K,) labels in output order; default 0..K-1.
    """
    from sklearn.neural_network import MLPClassifier

    classes = np.arange(net.n_classes) if classes is None else np.asarray(classes)
    if len(classes) != net.n_classes:
        raise ValueError(f"{len(classes)} class labels for a network of {net.n_classes} outputs")
    return to_sklearn(net, SklearnModel(estimator=MLPClassifier(hidden_layer_sizes=tuple(net.hidden_widths)),
                                        preprocess=None, classes=classes, feature_names=None, binary=False))


def affine_scaler(offset, scale):
    """A fitted `MinMaxScaler` whose `transform` is ``(X - offset) * scale`` (columns with scale 0 give 0), so a
    network trained on scaled inputs runs on raw rows as a `Pipeline` (the map neon_jax's min-max scaling and an
    ONNX model's Scaler apply).

    Args:
      offset, scale: (d,) arrays.
    """
    from sklearn.preprocessing import MinMaxScaler

    offset, scale = np.asarray(offset, np.float64), np.asarray(scale, np.float64)
    if offset.shape != scale.shape or offset.ndim != 1:
        raise ValueError(f"offset and scale must be two (d,) arrays, got shapes {offset.shape} and {scale.shape}")
    scaler = MinMaxScaler().fit(np.stack([offset, offset + 1.0]))  # sets every fitted attribute; then ours
    scaler.scale_ = scale
    scaler.min_ = -offset * scale
    span = np.where(scale != 0, 1.0 / np.where(scale != 0, scale, 1.0), 0.0)
    scaler.data_min_, scaler.data_max_, scaler.data_range_ = offset, offset + span, span
    return scaler


SKLEARN_SUFFIXES = (".skops", ".pkl", ".pickle", ".joblib")


def load_sklearn_file(path, trust_pickle: bool = False):
    """A scikit-learn model from a file: skops' safe format (``.skops``: only skops' trusted types and
    scikit-learn's own classes are loaded; any other type in the file is refused by name), or a pickle (``.pkl``,
    ``.pickle``, ``.joblib``) only with `trust_pickle` (loading a pickle runs whatever code it holds).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".skops":
        try:
            import skops.io as sio
        except ImportError:
            raise ValueError(f"{path}: reading .skops files needs skops (pip install skops)") from None
        unknown = sio.get_untrusted_types(file=path)
        own = [t for t in unknown if t.startswith("sklearn.")]  # scikit-learn's own classes (its optimisers)
        other = [t for t in unknown if t not in own]
        if other:
            raise ValueError(f"{path}: the file holds types skops does not trust: {other[:5]}; neon_jax loads "
                             f"scikit-learn models of scikit-learn's, NumPy's and skops' trusted types only")
        return sio.load(path, trusted=own)
    if suffix in (".pkl", ".pickle", ".joblib"):
        if not trust_pickle:
            raise ValueError(f"{path}: a pickle runs any code it holds when loaded, so neon_jax does not load it "
                             f"unless you trust the file: pass --trust-pickle (trust_pickle=True), or save the "
                             f"model with skops (skops.io.dump(model, 'model.skops'))")
        import joblib

        return joblib.load(path)
    raise ValueError(f"{path}: not a scikit-learn model file ({', '.join(SKLEARN_SUFFIXES)})")
