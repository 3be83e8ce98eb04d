"""An independent NumPy / SciPy / scikit-learn reference of the NEON state (neon_spec.md §3), as the original computes it.

The original (NetworkFeatureExtration bf80c94) reads a plain dense ``nn.Sequential``: it splits the flat module list
into rows at every Linear (§2.2), takes per output neuron of each row's Linear 8 statistics of its incoming weights,
hooks the last activation module of every row but the output row for the same 8 statistics of the activations over
a data sample (scipy skew / kurtosis, with scipy 1.4's 0 / -3 for constant neurons), pads to R x F, and normalises
with sklearn's StandardScaler (§3.5). This module does exactly that on a layer list (the ``layers`` of a
`neon_jax.nets.DenseNetwork`, or `env_step.sequential_layers` of a torch model); it imports neither JAX nor torch.

Used by the feature tests (tests/test_features.py) and by the PyTorch reference environment (`env_step.py`).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps
from sklearn.preprocessing import StandardScaler

ACT_CODE = {"relu": 1, "softmax": 2, "tanh": 3, "sigmoid": 4}


def ref_rows(net):
    """NFE ModelWithRows: a new row starts at every Linear that is not the first Linear of the current row.

    `net` is a `DenseNetwork` or its layer list."""
    layers = getattr(net, "layers", net)
    rows, cur = [], []
    for layer in layers:
        if layer["kind"] == "linear" and any(m["kind"] == "linear" for m in cur):
            rows.append(cur)
            cur = []
        cur.append(layer)
    rows.append(cur)
    return rows


def ref_stats(m: np.ndarray) -> np.ndarray:
    """(n_obs, n_neurons) -> (8, n_neurons) in float64, scipy-1.4 convention for constant neurons."""
    m = np.asarray(m, np.float64)
    constant = np.ptp(m, axis=0) == 0
    with np.errstate(all="ignore"):
        skew = sps.skew(m, axis=0, bias=True)
        kurt = sps.kurtosis(m, axis=0, fisher=True, bias=True)
    skew = np.where(constant, 0.0, skew)
    kurt = np.where(constant, -3.0, kurt)
    return np.stack([m.mean(0), m.std(0), skew, kurt, m.min(0), m.max(0), np.abs(m).sum(0),
                     np.sqrt((m ** 2).sum(0))])


def pad2(a, rows, cols):
    out = np.zeros((rows, cols))
    out[: a.shape[0], : a.shape[1]] = a
    return out


def ref_forward_rows(net, x, batch_stats=False):
    """Float32 forward pass; returns each non-output row's hooked output (its last activation module)."""
    h = np.asarray(x, np.float32)
    outputs = []
    for row in ref_rows(net)[:-1]:
        hooked = None
        for layer in row:
            kind = layer["kind"]
            if kind == "batchnorm":
                if batch_stats:
                    mean, var = h.mean(0), h.var(0)
                else:
                    mean, var = layer["mean"], layer["var"]
                h = ((h - mean) / np.sqrt(var + layer["eps"]) * layer["scale"] + layer["bias"]).astype(np.float32)
            elif kind == "linear":
                h = h @ layer["kernel"] + layer["bias"]
            elif kind == "relu":
                h = np.maximum(h, 0)
            elif kind == "tanh":
                h = np.tanh(h)
            elif kind == "sigmoid":
                h = (1 / (1 + np.exp(-h))).astype(np.float32)
            if kind in ("relu", "tanh", "sigmoid"):
                hooked = h
        outputs.append(hooked)
    return outputs


def ref_state(net, x, R, F, batch_stats=False, activations=None):
    """Raw maps (topology (R, 8), activations (8, R, F), weights (8, R, F)) in float64.

    `activations`: the hooked outputs of the non-output rows, if already computed (e.g. by a torch forward pass
    with hooks, as the original); default: `ref_forward_rows(net, x, batch_stats)`.
    """
    rows = ref_rows(net)
    topo = np.zeros((R, 8))
    weights = np.zeros((8, R, F))
    acts = np.zeros((8, R, F))
    for j, row in enumerate(rows):
        kinds = [m["kind"] for m in row]
        lin = next(m for m in row if m["kind"] == "linear")
        code = max((ACT_CODE[k] for k in kinds if k in ACT_CODE), default=0)
        topo[j] = [("batchnorm" in kinds), ("dropout" in kinds), *lin["kernel"].shape,
                   code == 1, code == 2, code == 3, code == 4]
        weights[:, j] = pad2(ref_stats(lin["kernel"]), 8, F)
    if activations is None:
        activations = ref_forward_rows(net, x, batch_stats)
    for j, out in enumerate(activations):
        acts[:, j] = pad2(ref_stats(out), 8, F)
    return topo, acts, weights


def ref_normalise(topo, acts, weights, row):
    """The agent-side normalisation (§3.5) for the current row: a dict named like `neon_jax.features.Observation`."""
    def per_plane(m):
        return np.stack([StandardScaler().fit_transform(plane) for plane in m])

    t_n = StandardScaler().fit_transform(topo)
    return dict(
        net_topology=t_n, net_activations=per_plane(acts), net_weights=per_plane(weights),
        layer_topology=t_n[row],
        layer_activations=StandardScaler().fit_transform(acts[:, row, :]),
        layer_weights=StandardScaler().fit_transform(weights[:, row, :]),
    )
