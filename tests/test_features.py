"""Tests of neon_jax.features against a NumPy/SciPy/sklearn reference of the original's state (neon_spec.md §3).

The reference below works on the *compacted* dense network (`nets.compact`), the way the original sees a model:
rows split at every Linear (§2.2), weight statistics per output neuron of each row's Linear, activation statistics
of the last activation module of each row but the output row, scipy skew/kurtosis with the scipy-1.4 convention for
constant inputs (0 and -3), and sklearn's StandardScaler for the agent-side normalisation (§3.5).
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets

from neon_jax import features, nets
from neon_jax.presets import get_preset

TINY = get_preset("tiny")
CPU = get_preset("cpu")


# ----------------------------------------------------------------------------------------------------------
# Data and networks. Every network of a preset shares one `NetDims` and every sample has S rows, so each jitted
# entry point compiles once per preset (archs, masks, rows and data are traced): that keeps the file fast.

S = 178  # sample rows: all of wine, a stratified subset of breast_cancer
D_MAX, K_MAX = 30, 3
DIMS = {TINY.name: nets.NetDims.for_preset(TINY, D_MAX, K_MAX), CPU.name: nets.NetDims.for_preset(CPU, D_MAX, K_MAX)}


@functools.cache
def load(name: str):
    """Min-max scaled real data (float32, n x d) and 0-based labels."""
    loader = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}[name]
    x, y = loader(return_X_y=True)
    lo, hi = x.min(0), x.max(0)
    x = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
    return x.astype(np.float32), y.astype(np.int32)


def pad_features(x, d_max=D_MAX, rng=None):
    """Pads columns to d_max: zeros, or garbage when `rng` is given (padded features must be ignored)."""
    shape = (len(x), d_max - x.shape[1])
    extra = np.zeros(shape) if rng is None else rng.normal(size=shape)
    return np.concatenate([x, extra.astype(np.float32)], axis=1)


@functools.cache
def sample(name: str):
    """(x_sample (S, D_MAX), row_weight (S,), real rows (S, d)) drawn with `features.activation_sample`."""
    x, y = load(name)
    idx, weight = sample_jit(jax.random.PRNGKey(0), jnp.asarray(x), jnp.asarray(y), len(y), S)
    real = x[np.asarray(idx)]
    np.testing.assert_array_equal(weight, 1.0)
    return jnp.asarray(pad_features(real)), weight, real


def random_network(seed, model, arch):
    """Variables that look trained: random kernels and biases, BN affine and running statistics (host NumPy).

    Dead / padded entries get garbage too: the features must ignore them through the masks. Built on the host
    from the variables' shapes (`jax.eval_shape`, no compile) to keep the file fast.
    """
    shapes = jax.eval_shape(lambda: nets.init_network(jax.random.PRNGKey(0), model, arch))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        noise = rng.normal(size=leaf.shape)
        if "kernel" in name:
            value = 1.5 * noise / np.sqrt(leaf.shape[0])
        elif "var" in name:
            value = np.exp(0.5 * noise)
        elif "scale" in name:
            value = 1.0 + 0.3 * noise
        else:
            value = 0.3 * noise
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def build(preset, d, k, widths, acts, pres, seed=0, dims=None):
    dims = dims or DIMS[preset.name]
    arch = nets.make_arch(widths, acts, pres, d, k, dims)
    return dims, arch, random_network(seed, nets.make_model(dims, preset), arch)


@functools.partial(jax.jit, static_argnames=("n",))
def sample_tiny_archs(key, n):
    return jax.vmap(lambda k: nets.sample_arch(k, TINY, DIMS[TINY.name], 13, 3))(jax.random.split(key, n))


def punch_holes(arch, seed):
    """A non-prefix mask: kill random neurons (at least one survives per live layer). Weights stay as garbage."""
    rng = np.random.default_rng(seed)
    mask = np.array(arch.mask)
    for j in range(int(arch.depth)):
        alive = np.flatnonzero(mask[j])
        if len(alive) > 1:
            kill = rng.choice(alive, size=len(alive) // 2, replace=False)
            mask[j, kill] = 0.0
    return arch.replace(mask=jnp.asarray(mask))


# ----------------------------------------------------------------------------------------------------------
# The reference: NumPy/SciPy/sklearn, shared with the PyTorch reference environment (benchmarks/torch_reference).

from benchmarks.torch_reference.features import (  # noqa: E402
    ref_normalise,
    ref_state,
    ref_stats,
)

# ----------------------------------------------------------------------------------------------------------
# Jitted entry points (one compile per dims and mode; archs, masks, data and rows are traced).

sample_jit = jax.jit(features.activation_sample, static_argnames=("size", "n_classes"))


TRACES: dict = {}  # (dims, preset, train) -> times `state_fn` was traced


# The whole file needs exactly five compiled state programs: tiny eval, tiny train, cpu eval, and the padded
# "tiny_wide" variant, uniform and layer by layer; any retrace for a new arch, mask, sample or row would trip the
# chex counter.
@functools.partial(jax.jit, static_argnames=("dims", "preset", "train"))
@chex.assert_max_traces(n=5)
def state_fn(variables, arch, dims, preset, x_sample, row_weight, train=False, key=None):
    """Raw maps, the observation of every row (leading axis R) and the variables after, from the public API."""
    TRACES[(dims, preset.name, train)] = TRACES.get((dims, preset.name, train), 0) + 1
    maps, after = features.raw_state(variables, arch, dims, preset, x_sample, row_weight, train, key,
                                     return_variables=True)
    rows = jnp.arange(preset.feature_rows)
    return maps, jax.vmap(lambda row: features.normalise_state(*maps, row))(rows), after


TOL = dict(rtol=2e-4, atol=2e-4)


def assert_stats_close(got, ref, name):
    """Statistics maps (8, R, F) to float32 tolerance.

    Skewness and kurtosis of a nearly saturated neuron (std far below |mean|, e.g. a tanh at -0.99998 +- 1e-5)
    are as sensitive as the ratio |mean| / std to the last-ulp differences between two float32 forward passes
    (XLA vs NumPy), so their tolerance grows with that ratio beyond 1e3.
    """
    conditioning = np.abs(ref[0]) / np.maximum(ref[1], 1e-30)
    factor = np.where(ref[1] > 0, np.maximum(1.0, conditioning / 1e3), 1.0)
    allowed = np.broadcast_to(TOL["atol"] + TOL["rtol"] * np.abs(ref), ref.shape).copy()
    allowed[2:4] *= factor
    bad = np.abs(got - ref) > allowed
    assert not bad.any(), f"{name}: {bad.sum()} mismatches, e.g. {got[bad][:5]} vs {ref[bad][:5]}"


def assert_matches_reference(variables, arch, dims, preset, x_sample, row_weight, x_real):
    """All six observation parts (every row, padding rows included) and the raw maps against the reference."""
    net = nets.compact(variables, arch, dims)
    R, F = preset.feature_rows, preset.feature_width
    (topo, acts, weights), obs, _ = jax.device_get(state_fn(variables, arch, dims, preset, x_sample, row_weight))
    r_topo, r_acts, r_weights = ref_state(net, x_real, R, F)
    for part in (topo, acts, weights, *jax.tree_util.tree_leaves(obs)):
        assert part.dtype == np.float32 and np.isfinite(part).all()
    np.testing.assert_array_equal(topo, r_topo)
    assert_stats_close(weights, r_weights, "weights")
    assert_stats_close(acts, r_acts, "activations")
    for row in range(R):
        # The normalisation is checked tightly on our raw maps (no forward-pass noise in the way) ...
        ref = ref_normalise(topo.astype(np.float64), acts.astype(np.float64), weights.astype(np.float64), row)
        for name, expected in ref.items():
            got = getattr(obs, name)[row]
            assert got.shape == expected.shape, name
            np.testing.assert_allclose(got, expected, **TOL, err_msg=f"{name} row {row}")
        # ... and end to end against the independent reference where no forward pass is involved.
        full = ref_normalise(r_topo, r_acts, r_weights, row)
        for name in ("net_topology", "layer_topology", "net_weights", "layer_weights"):
            np.testing.assert_allclose(getattr(obs, name)[row], full[name], **TOL, err_msg=f"{name} row {row}")


# ----------------------------------------------------------------------------------------------------------
# Tests.


def test_weighted_statistics_match_scipy_with_old_constant_convention():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, size=(50, 7)).astype(np.float32)
    x[:, 1] = 0.0
    x[:, 2] = 3.7  # float32 mean of a constant can miss it by an ulp: must still be "constant"
    x[:, 3] = np.float32(1.0) + np.float32(1.2e-7) * (np.arange(50) % 2)  # 1-ulp spread: rounding noise
    x[:, 4] = 1000.0 + rng.normal(size=50)  # large mean, O(1) spread
    x[:, 5] = -0.99998 + 1e-5 * rng.gamma(1.0, size=50)  # saturated tanh-like: tiny spread, skewed
    weight = (rng.random(50) < 0.7).astype(np.float32)
    got = np.asarray(jax.jit(features.weighted_statistics)(jnp.asarray(x), jnp.asarray(weight)))
    ref = ref_stats(x[weight > 0])
    assert np.isfinite(got).all()
    cols = [0, 1, 2, 4, 5, 6]
    np.testing.assert_allclose(got[:, cols], ref[:, cols], rtol=2e-5, atol=1e-5)
    np.testing.assert_array_equal(got[1:4, 1], [0.0, 0.0, -3.0])
    np.testing.assert_array_equal(got[1:4, 2], [0.0, 0.0, -3.0])
    np.testing.assert_array_equal(got[1:4, 3], [0.0, 0.0, -3.0])  # our float32 convention for sub-resolution spread
    # No observation at all: zeros, not NaN.
    empty = np.asarray(features.weighted_statistics(jnp.asarray(x), jnp.zeros(50)))
    np.testing.assert_array_equal(empty, 0.0)


CASES = [
    # name, preset, dataset, widths, activations, pre-layer ops, non-prefix masks
    ("depth1_bn_input", TINY, "wine", [12], ["relu"], ["batchnorm"], False),
    ("depth3_mixed", TINY, "wine", [12, 8, 16], ["tanh", "relu", "sigmoid"], ["dropout", "batchnorm", "dropout"],
     False),
    ("sigmoid_tanh_bn", TINY, "breast_cancer", [16, 4], ["sigmoid", "tanh"], ["none", "batchnorm"], False),
    ("non_prefix", TINY, "wine", [16, 16, 12], ["relu", "relu", "tanh"], ["batchnorm", "none", "batchnorm"], True),
    ("max_depth_cpu", CPU, "wine", [64, 24, 40, 8, 56, 16], ["relu", "tanh", "relu", "sigmoid", "relu", "relu"],
     ["batchnorm", "dropout", "none", "batchnorm", "batchnorm", "dropout"], False),
    ("max_depth_cpu_non_prefix", CPU, "breast_cancer", [64, 48, 32, 24, 16, 8], ["relu"] * 6,
     ["none", "batchnorm", "dropout", "batchnorm", "none", "batchnorm"], True),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_reference_on_real_data(case):
    name, preset, dataset, widths, acts, pres, holes = case
    x, y = load(dataset)
    dims, arch, variables = build(preset, x.shape[1], int(y.max()) + 1, widths, acts, pres, seed=len(name))
    if holes:
        arch = punch_holes(arch, seed=1)
        assert any(not np.all(np.diff(np.asarray(m)) <= 0) for m in arch.mask)  # really non-prefix
    assert_matches_reference(variables, arch, dims, preset, *sample(dataset))


def test_sampled_architectures_match_reference():
    x, y = load("wine")
    dims = DIMS[TINY.name]
    model = nets.make_model(dims, TINY)
    archs = sample_tiny_archs(jax.random.PRNGKey(0), 4)
    for i in range(4):
        arch = jax.tree_util.tree_map(lambda t: t[i], archs)
        variables = random_network(i, model, arch)
        assert_matches_reference(variables, arch, dims, TINY, *sample("wine"))


def test_train_mode_uses_batch_statistics_and_nudges_running_stats():
    x_sample, weight, x_real = sample("wine")
    dims, arch, variables = build(TINY, 13, 3, [12, 8], ["relu", "tanh"], ["batchnorm", "batchnorm"], seed=3)
    (_, acts, _), obs, after = state_fn(variables, arch, dims, TINY, x_sample, weight, train=True,
                                        key=jax.random.PRNGKey(0))
    _, r_acts, _ = ref_state(nets.compact(variables, arch, dims), x_real, TINY.feature_rows, TINY.feature_width,
                             batch_stats=True)
    assert_stats_close(np.asarray(acts), r_acts, "train-mode activations")
    old, new = variables["batch_stats"]["bn0"]["mean"], after["batch_stats"]["bn0"]["mean"]
    np.testing.assert_allclose(new[:13], 0.9 * old[:13] + 0.1 * x_real.mean(0), rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.asarray(obs.net_activations)).all()
    # Eval mode leaves the variables alone.
    _, _, same = state_fn(variables, arch, dims, TINY, x_sample, weight)
    chex.assert_trees_all_equal(same, variables)


def test_train_mode_dropout_is_keyed():
    x_sample, weight, _ = sample("wine")
    dims, arch, variables = build(TINY, 13, 3, [16, 12], ["relu", "relu"], ["dropout", "dropout"], seed=5)
    args = (variables, arch, dims, TINY, x_sample, weight)
    _, eval_obs, _ = state_fn(*args)
    _, a, _ = state_fn(*args, train=True, key=jax.random.PRNGKey(1))
    _, b, _ = state_fn(*args, train=True, key=jax.random.PRNGKey(1))
    _, c, _ = state_fn(*args, train=True, key=jax.random.PRNGKey(2))
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a.net_activations, c.net_activations)
    assert not np.allclose(a.net_activations, eval_obs.net_activations)
    for obs in (a, c):
        assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(obs))
    with pytest.raises(ValueError, match="dropout key"):
        features.observe(*args, 1, train=True)


def test_constant_neurons_give_skew_0_kurtosis_minus_3_and_no_nan():
    x_sample, weight, x_real = sample("wine")
    dims, arch, variables = build(TINY, 13, 3, [8, 8, 8], ["relu", "tanh", "sigmoid"],
                                  ["none", "batchnorm", "none"], seed=2)
    params = dict(variables["params"])
    # Dead ReLU (0), saturated tanh (exactly 1.0: a float32 mean may round), saturated sigmoid (exactly 0).
    params["layer0_bias"] = params["layer0_bias"].at[3].set(-1e3)
    params["layer1_bias"] = params["layer1_bias"].at[5].set(1e3)
    params["layer2_bias"] = params["layer2_bias"].at[0].set(-1e3)
    variables = {**variables, "params": params}
    (_, acts, _), obs, _ = state_fn(variables, arch, dims, TINY, x_sample, weight)
    acts = np.asarray(acts)
    for row, neuron, value in [(0, 3, 0.0), (1, 5, 1.0), (2, 0, 0.0)]:
        np.testing.assert_allclose(acts[:, row, neuron], [value, 0, 0, -3, value, value, value * S,
                                                          value * np.sqrt(S)], rtol=1e-6)
        np.testing.assert_array_equal(acts[1:4, row, neuron], [0, 0, -3])
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(obs))
    assert_matches_reference(variables, arch, dims, TINY, x_sample, weight, x_real)


def test_padding_invariance():
    x_sample, weight, x_real = sample("wine")
    dims, arch, variables = build(TINY, 13, 3, [16, 12], ["relu", "tanh"], ["batchnorm", "dropout"], seed=4)
    arch = punch_holes(arch, seed=3)
    base, _, _ = state_fn(variables, arch, dims, TINY, x_sample, weight)

    # The same network at bigger padded dims (prefix masks after compact -> expand), garbage feature columns,
    # and a feature width beyond w_max: the same maps, with zero columns appended.
    # The same holds with each hidden layer padded to its own width (the first one wider than the rest).
    big = nets.NetDims(d_max=37, k_max=6, max_hidden=dims.max_hidden, w_max=dims.w_max)
    layered = nets.NetDims(d_max=37, k_max=6, max_hidden=dims.max_hidden, w_max=2 * dims.w_max,
                           layer_widths=(2 * dims.w_max,) + (dims.w_max,) * (dims.max_hidden - 1))
    wide = dataclasses.replace(TINY, name="tiny_wide", feature_width=TINY.feature_width + 9)
    rng = np.random.default_rng(0)
    x_big = jnp.asarray(pad_features(x_real, big.d_max, rng))
    for other in (big, layered):
        big_vars, big_arch = nets.expand(nets.compact(variables, arch, dims), other)
        padded, _, _ = state_fn(big_vars, big_arch, other, wide, x_big, weight)
        np.testing.assert_array_equal(base[0], padded[0])
        for a, b in zip(base[1:], padded[1:]):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b)[..., : TINY.feature_width], rtol=1e-5,
                                       atol=1e-5)
            np.testing.assert_array_equal(np.asarray(b)[..., TINY.feature_width:], 0.0)

    # Padding rows (row weight 0, garbage values) change nothing, in eval mode and for BN batch statistics:
    # two samples with the same 138 real rows and different garbage rows give the reference's maps.
    n_real = 138
    def with_garbage(seed):
        garbage = 5 * np.random.default_rng(seed).normal(size=(S - n_real, D_MAX)).astype(np.float32)
        return jnp.concatenate([x_sample[:n_real], jnp.asarray(garbage)])
    w_rows = jnp.asarray(np.arange(S) < n_real, jnp.float32)  # not weak-typed: no retrace
    bn_only = arch.replace(pre_layer=jnp.asarray([2, 2, 0], jnp.int32))
    net = nets.compact(variables, bn_only, dims)
    for train, batch_stats in [(False, False), (True, True)]:
        mode = dict(train=True, key=jax.random.PRNGKey(0)) if train else {}  # same call signature: no retrace
        (_, a1, _), _, _ = state_fn(variables, bn_only, dims, TINY, with_garbage(1), w_rows, **mode)
        (_, a2, _), _, _ = state_fn(variables, bn_only, dims, TINY, with_garbage(2), w_rows, **mode)
        np.testing.assert_allclose(np.asarray(a1), np.asarray(a2), rtol=1e-5, atol=1e-5)
        _, r_acts, _ = ref_state(net, x_real[:n_real], TINY.feature_rows, TINY.feature_width, batch_stats)
        assert_stats_close(np.asarray(a1), r_acts, f"activations with padding rows (train={train})")


def test_a_layer_wider_than_the_maps_is_seen_through_evenly_spaced_neurons():
    # 7 alive of 9 columns into 3: alive values (in order) 1, 3, 4, 5, 6, 8, 9 -> positions 0, 7//3 = 2, 14//3 = 4
    values = jnp.arange(1.0, 10.0)[None]
    mask = jnp.asarray([[1, 0, 1, 1, 1, 1, 0, 1, 1]], jnp.float32)
    np.testing.assert_array_equal(features.compact_neurons(values, mask, 3), [[1, 4, 6]])
    # at most `width` alive neurons: compacted as before, whatever the padding
    few = jnp.asarray([[0, 1, 0, 0, 1, 0, 0, 0, 0]], jnp.float32)
    np.testing.assert_array_equal(features.compact_neurons(values, few, 3), [[2, 5, 0]])
    # a 16-wide layer in maps of 8 columns: the weight statistics of neurons 0, 2, ..., 14
    dims, arch, variables = build(TINY, 13, 3, [16], ["relu"], ["none"], seed=6)
    full = features.weight_statistics(variables, arch, dims, 16, 10)
    seen = features.weight_statistics(variables, arch, dims, 8, 10)
    np.testing.assert_array_equal(seen[:, 0], full[:, 0, ::2])


def test_compact_neurons_keeps_alive_order():
    values = jnp.asarray([[1.0, 2.0, 3.0, 4.0, 5.0]])
    mask = jnp.asarray([[0.0, 1.0, 0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(features.compact_neurons(values, mask, 7), [[2, 4, 5, 0, 0, 0, 0]])


def _check_stratified(idx, weight, y, n_rows, size):
    idx, weight = np.asarray(idx), np.asarray(weight)
    assert idx.shape == (size,) and weight.shape == (size,)
    np.testing.assert_array_equal(weight, 1.0)
    assert len(np.unique(idx)) == size
    assert idx.min() >= 0 and idx.max() < n_rows
    classes, counts = np.unique(y[:n_rows], return_counts=True)
    drawn = np.array([(y[idx] == c).sum() for c in classes])
    proportional = size * counts / n_rows
    assert drawn.sum() == size
    assert np.all(np.abs(drawn - proportional) < 1.0 + 1e-9), (drawn, proportional)


def test_activation_sample_stratified_and_fixed_shape():
    x, y = load("breast_cancer")
    n_max = 700  # padded rows carry garbage labels and must never be drawn
    y_pad = np.concatenate([y, np.full(n_max - len(y), 1, np.int32)])
    x_pad = np.zeros((n_max, x.shape[1]), np.float32)
    draws = []
    for seed in range(3):
        idx, weight = sample_jit(jax.random.PRNGKey(seed), jnp.asarray(x_pad), jnp.asarray(y_pad), len(y), 200)
        _check_stratified(idx, weight, y_pad, len(y), 200)
        draws.append(set(np.asarray(idx).tolist()))
    assert draws[0] != draws[1]  # redrawn from the key

    # Many imbalanced classes (ties in the fractional parts), traced n_rows, explicit class bound.
    rng = np.random.default_rng(1)
    y_many = rng.choice(7, size=1000, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.04, 0.01]).astype(np.int32)
    for n_rows, size in [(1000, 64), (997, 64), (65, 64), (64, 64), (10, 64)]:
        idx, weight = sample_jit(jax.random.PRNGKey(n_rows), jnp.zeros((1000, 1)), jnp.asarray(y_many),
                                 jnp.int32(n_rows), size, n_classes=7)
        if n_rows > size:
            _check_stratified(idx, weight, y_many, n_rows, size)
        else:
            np.testing.assert_array_equal(weight, np.arange(size) < n_rows)


def test_activation_sample_uses_all_rows_when_small():
    x, y = load("wine")
    for n_max, size in [(len(y), 200), (300, 200)]:
        x_pad = np.zeros((n_max, 13), np.float32)
        y_pad = np.zeros(n_max, np.int32)
        y_pad[: len(y)] = y
        idx, weight = sample_jit(jax.random.PRNGKey(0), jnp.asarray(x_pad), jnp.asarray(y_pad), len(y), size)
        idx, weight = np.asarray(idx), np.asarray(weight)
        assert idx.shape == (size,)
        np.testing.assert_array_equal(idx[: len(y)], np.arange(len(y)))
        np.testing.assert_array_equal(weight, np.arange(size) < len(y))
        assert idx.max() < n_max


def test_jit_vmap_population_matches_single_calls_without_retracing():
    x, y = load("wine")
    dims = DIMS[TINY.name]
    model = nets.make_model(dims, TINY)
    archs = sample_tiny_archs(jax.random.PRNGKey(11), 4)
    archs = archs.replace(depth=archs.depth.at[0].set(TINY.max_hidden),  # one at max depth ...
                          mask=archs.mask.at[0].set(1.0).at[0, 1, 2].set(0.0))  # ... with a non-prefix hole
    variables = [random_network(i, model, jax.tree_util.tree_map(lambda t: t[i], archs)) for i in range(4)]
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *variables)
    x_pad = jnp.asarray(pad_features(x))
    idx, weight = jax.vmap(lambda k: sample_jit(k, x_pad, y, len(y), S))(jax.random.split(jax.random.PRNGKey(2), 4))
    xs = x_pad[idx]
    rows = jnp.asarray([0, 1, 2, 1])

    population = jax.jit(jax.vmap(lambda v, a, xs_, w_, row: features.observe(
        v, a, dims, TINY, xs_, w_, row, return_variables=True)))
    batched, after = population(stacked, archs, xs, weight, rows)
    assert batched.net_activations.shape == (4, 8, TINY.feature_rows, TINY.feature_width)
    chex.assert_trees_all_equal(after, stacked)  # eval mode: variables untouched

    key = (dims, TINY.name, False)
    traces_before = TRACES.get(key, 0)
    assert len({(int(archs.depth[i]), tuple(np.asarray(archs.mask[i]).ravel())) for i in range(4)}) == 4
    for i in range(4):  # four different archs (depths, masks, activations) ...
        _, obs, _ = state_fn(variables[i], jax.tree_util.tree_map(lambda t: t[i], archs), dims, TINY, xs[i],
                             weight[i])
        one = jax.tree_util.tree_map(lambda t: t[int(rows[i])], obs)
        chex.assert_trees_all_close(one, jax.tree_util.tree_map(lambda t: t[i], batched), rtol=1e-5, atol=1e-5)
    assert TRACES[key] <= max(traces_before, 1)  # ... and at most one trace of the whole state pipeline
