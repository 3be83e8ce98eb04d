import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neon_jax import nets
from neon_jax.presets import ACT_RELU, PRE_BATCHNORM, PRE_DROPOUT, PRESETS

TINY = PRESETS["tiny"]
CPU = PRESETS["cpu"]


def _population(preset, dims, n, seed=0, n_features=None, n_classes=None):
    model = nets.make_model(dims, preset)
    archs, variables = _sample_and_init(model, preset, n, n_features or dims.d_max, n_classes or dims.k_max)(
        jax.random.PRNGKey(seed), jax.random.PRNGKey(seed + 1))
    return model, archs, variables


@functools.cache
def _sample_and_init(model, preset, n, n_features, n_classes):
    """Sampling and initialising a population under one jit (eagerly, each of its many ops compiles alone)."""
    def build(arch_key, init_key):
        keys = jax.random.split(arch_key, n)
        archs = jax.vmap(lambda k: nets.sample_arch(k, preset, model.dims, n_features, n_classes))(keys)
        return archs, nets.init_population(init_key, model, archs)
    return jax.jit(build)


@functools.cache
def _apply(model, train=False):
    """A jitted apply per model shape: eager flax calls would dominate the test time."""
    if train:
        return jax.jit(lambda v, x, a, w, k: model.apply(v, x, a, train=True, row_weight=w, rngs={"dropout": k},
                                                         mutable=["batch_stats"]))
    return jax.jit(lambda v, x, a: model.apply(v, x, a, train=False))


def _take(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _randomise_batchnorm(variables, seed):
    """Non-trivial batch-norm parameters and running statistics, so the checks below can fail."""
    rng = np.random.default_rng(seed)

    def rnd(path, leaf):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        if name.endswith("var"):
            return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), jnp.float32)
        if "bn" in name:
            return jnp.asarray(rng.normal(size=leaf.shape), jnp.float32)
        return leaf
    return jax.tree_util.tree_map_with_path(rnd, variables)


def test_count_params_hand_computed():
    dims = nets.NetDims(d_max=12, k_max=5, max_hidden=6, w_max=64)
    # 10 features -> BN -> 40 relu -> Dropout -> 20 tanh -> 3 classes
    arch = nets.make_arch([40, 20], ["relu", "tanh"], ["batchnorm", "dropout"], 10, 3, dims)
    expected = 2 * 10 + (10 * 40 + 40) + (40 * 20 + 20) + (20 * 3 + 3)
    assert int(nets.count_params(arch)) == expected == 1343
    # one hidden layer with BN in front of it
    arch1 = nets.make_arch([7], ["sigmoid"], ["batchnorm"], 4, 2, dims)
    assert int(nets.count_params(arch1)) == 8 + (4 * 7 + 7) + (7 * 2 + 2)
    # BN in front of the second hidden layer counts the first hidden width
    arch2 = nets.make_arch([5, 6], ["relu", "relu"], ["none", "batchnorm"], 3, 2, dims)
    assert int(nets.count_params(arch2)) == (3 * 5 + 5) + 2 * 5 + (5 * 6 + 6) + (6 * 2 + 2)


def test_count_params_matches_compacted_network():
    dims = nets.NetDims.for_preset(CPU, 12, 4)
    model, archs, variables = _population(CPU, dims, 16, n_features=9, n_classes=3)
    counts = np.asarray(nets.count_params(archs))
    for i in range(16):
        dense = nets.compact(_take(variables, i), _take(archs, i), dims)
        assert dense.num_params() == counts[i]


def test_sample_arch_follows_the_generator():
    dims = nets.NetDims.for_preset(CPU, 10, 2)
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    archs = jax.vmap(lambda k: nets.sample_arch(k, CPU, dims, 10, 2))(keys)
    depth = np.asarray(archs.depth)
    assert set(depth) == set(range(1, 7))
    widths = np.asarray(archs.widths)
    live = np.arange(6)[None] < depth[:, None]
    assert set(widths[live]) == set(CPU.widths)
    assert (widths[~live] == 0).all()
    pre = np.asarray(archs.pre_layer)[live]
    assert abs((pre == PRE_DROPOUT).mean() - 0.33) < 0.03
    assert abs((pre == PRE_BATCHNORM).mean() - 0.33) < 0.03
    act = np.asarray(archs.activation)[live]
    assert abs((act == ACT_RELU).mean() - 0.90) < 0.02


def test_masked_neurons_contribute_nothing(wine_splits):
    x = jnp.asarray(wine_splits[0])
    dims = nets.NetDims.for_preset(CPU, 13, 3)
    model, archs, variables = _population(CPU, dims, 8, seed=5)
    variables = _randomise_batchnorm(variables, 9)
    for i in range(8):
        arch, v = _take(archs, i), _take(variables, i)
        ref = _apply(model)(v, x, arch)
        # scribble over every weight that touches a dead neuron or a padded input column
        noisy = jax.tree_util.tree_map(lambda leaf: leaf + 7.0 * np.random.default_rng(i).normal(
            size=leaf.shape).astype(np.float32), jax.device_get(v))
        masks = np.asarray(arch.mask)
        p, q = dict(noisy["params"]), jax.device_get(v["params"])
        for j in range(dims.max_hidden):
            m_out = masks[j]
            m_in = np.ones(dims.d_max) if j == 0 else masks[j - 1]
            live_w = np.outer(m_in, m_out) > 0
            p[f"layer{j}_kernel"] = np.where(live_w, q[f"layer{j}_kernel"], p[f"layer{j}_kernel"])
            p[f"layer{j}_bias"] = np.where(m_out > 0, q[f"layer{j}_bias"], p[f"layer{j}_bias"])
            p[f"bn{j}"] = {k: np.where(m_in > 0, q[f"bn{j}"][k], p[f"bn{j}"][k]) for k in ("scale", "bias")}
        last = masks[int(arch.depth) - 1]
        p["output_kernel"] = np.where(last[:, None] > 0, q["output_kernel"], p["output_kernel"])
        p["output_bias"] = q["output_bias"]
        keep = {"params": p, "batch_stats": v["batch_stats"]}
        out = _apply(model)(keep, x, arch)
        np.testing.assert_allclose(np.asarray(out[:, :3]), np.asarray(ref[:, :3]), atol=1e-5)
        # hidden layers past the depth pass through: their weights do not matter either (scribbled above)


def test_padding_changes_nothing(wine_splits):
    x = wine_splits[0]
    small = nets.NetDims.for_preset(CPU, 13, 3)
    big = nets.NetDims.for_preset(CPU, 40, 9)
    model, archs, variables = _population(CPU, small, 6, seed=2)
    variables = _randomise_batchnorm(variables, 4)
    big_model = nets.make_model(big, CPU)
    x_big = np.zeros((len(x), 40), np.float32)
    x_big[:, :13] = x
    for i in range(6):
        v, a = _take(variables, i), _take(archs, i)
        vb, ab = nets.repad(v, a, small, big)
        out = _apply(model)(v, jnp.asarray(x), a)
        out_big = _apply(big_model)(vb, jnp.asarray(x_big), ab)
        np.testing.assert_allclose(np.asarray(out_big[:, :3]), np.asarray(out[:, :3]), atol=1e-5)
        assert (np.asarray(out_big[:, 3:]) <= nets.NEG_LOGIT).all()
        # padded rows with zero weight leave batch statistics (train mode) unchanged
        w = jnp.concatenate([jnp.ones(len(x)), jnp.zeros(20)])
        xp = jnp.concatenate([jnp.asarray(x), 5 * jnp.ones((20, 13))])
        t1, s1 = _apply(model, True)(v, jnp.asarray(x), a, jnp.ones(len(x)), jax.random.PRNGKey(0))
        t2, s2 = _apply(model, True)(v, xp, a, w, jax.random.PRNGKey(0))
        jax.tree_util.tree_map(lambda p, q: np.testing.assert_allclose(p, q, atol=1e-5), s1, s2)
        if not (np.asarray(a.pre_layer) == PRE_DROPOUT).any():  # dropout draws depend on the row count
            np.testing.assert_allclose(np.asarray(t2[: len(x)]), np.asarray(t1), atol=1e-5)


def test_compact_and_expand_are_exact(wine_splits):
    x = jnp.asarray(wine_splits[2])
    dims = nets.NetDims.for_preset(CPU, 13, 3)
    model, archs, variables = _population(CPU, dims, 10, seed=7)
    variables = _randomise_batchnorm(variables, 1)
    for i in range(10):
        v, a = _take(variables, i), _take(archs, i)
        logits = np.asarray(_apply(model)(v, x, a))[:, :3]
        dense = nets.compact(v, a, dims)
        assert dense.hidden_widths == [int(w) for w in np.asarray(a.widths)[: int(a.depth)]]
        np.testing.assert_allclose(dense.logits(np.asarray(x)), logits, atol=1e-5)
        v2, a2 = nets.expand(dense, dims)
        np.testing.assert_array_equal(np.asarray(_apply(model)(v2, x, a2))[:, :3], logits)


def test_compact_keeps_only_alive_neurons_of_a_non_prefix_mask(wine_splits):
    x = jnp.asarray(wine_splits[2])
    dims = nets.NetDims.for_preset(TINY, 13, 3)
    arch = nets.make_arch([12, 8], ["relu", "relu"], ["none", "none"], 13, 3, dims)
    model = nets.make_model(dims, TINY)
    v = nets.init_network(jax.random.PRNGKey(0), model, arch)
    mask = np.asarray(arch.mask).copy()
    mask[0, [1, 4, 7]] = 0  # keep-best style: arbitrary neurons removed
    arch = arch.replace(mask=jnp.asarray(mask))
    dense = nets.compact(v, arch, dims)
    assert dense.hidden_widths == [9, 8]
    np.testing.assert_allclose(dense.logits(np.asarray(x)), np.asarray(_apply(model)(v, x, arch))[:, :3], atol=1e-5)
    assert dense.num_params() == int(nets.count_params(arch))


def test_pytorch_style_initialisation_bounds():
    dims = nets.NetDims.for_preset(CPU, 10, 2)
    arch = nets.make_arch([64, 16], ["relu", "relu"], ["none", "none"], 10, 2, dims)
    v = nets.init_network(jax.random.PRNGKey(0), nets.make_model(dims, CPU), arch)["params"]
    k0 = np.asarray(v["layer0_kernel"])[:10, :64]
    assert np.abs(k0).max() <= 1 / np.sqrt(10) and np.abs(k0).max() > 0.9 / np.sqrt(10)
    k1 = np.asarray(v["layer1_kernel"])[:64, :16]
    assert np.abs(k1).max() <= 1 / np.sqrt(64)
    assert (np.asarray(v["layer1_kernel"])[:, 16:] == 0).all()  # dead neurons start at zero


@pytest.mark.parametrize("bad", [
    dict(widths=[], activation=[], pre_layer=[]),
    dict(widths=[100], activation=["relu"], pre_layer=["none"]),
    dict(widths=[8], activation=["gelu"], pre_layer=["none"]),
    dict(widths=[8, 8], activation=["relu"], pre_layer=["none", "none"]),
])
def test_make_arch_rejects_bad_input(bad):
    dims = nets.NetDims.for_preset(CPU, 10, 2)
    with pytest.raises(ValueError):
        nets.make_arch(bad["widths"], bad["activation"], bad["pre_layer"], 10, 2, dims)


def test_expand_rejects_unsupported_networks():
    dims = nets.NetDims.for_preset(TINY, 4, 2)
    lin = lambda i, o: dict(kind="linear", kernel=np.zeros((i, o), np.float32), bias=np.zeros(o, np.float32))
    with pytest.raises(ValueError, match="unsupported layer kind 'gelu'"):
        nets.expand(nets.DenseNetwork([lin(4, 8), dict(kind="gelu"), lin(8, 2)], 4, 2), dims)
    with pytest.raises(ValueError, match="expects 5 inputs"):
        nets.expand(nets.DenseNetwork([lin(5, 8), dict(kind="relu"), lin(8, 2)], 4, 2), dims)
    with pytest.raises(ValueError, match="hidden widths"):
        nets.expand(nets.DenseNetwork([lin(4, 80), dict(kind="relu"), lin(80, 2)], 4, 2), dims)


def test_depth_bound_and_frozen_layers_change_no_value_and_no_trained_gradient():
    """The speed hints of MaskedMLP (`nets.Hints`, unbatched under vmap: a depth bound and what the batch trains)
    give the same logits, hidden outputs, batch-norm statistics and gradients of the trained layers; frozen
    layers get zero gradients. Layer 1 trained, layer 0 frozen below it (mode 2: no backward at all), layers 2..
    frozen above it (mode 1: the gradient passes through their inputs only)."""
    dims = nets.NetDims.for_preset(TINY, 6, 3)
    model, archs, variables = _population(TINY, dims, 6, seed=4)
    variables = _randomise_batchnorm(variables, 5)
    archs = archs.replace(pre_layer=jnp.full_like(archs.pre_layer, PRE_BATCHNORM))
    x = jax.random.normal(jax.random.PRNGKey(6), (16, dims.d_max))
    w = jnp.ones(16)
    bound = jnp.asarray(archs.depth).max()
    # what the batch trains: layer 1 (its Linear and the batch-norm in front of it) and the output Linear
    frozen = {name: jnp.bool_(nets.param_layer(name, dims.max_hidden) in (1, dims.max_hidden))
              for name in variables["params"]}
    assert list(np.asarray(nets.Hints(groups=frozen).layer_modes(dims.max_hidden))) == \
        [2, 0] + [1] * (dims.max_hidden - 2)

    def run(bound, frozen):
        def one(v, a):
            def loss(params):
                (logits, hidden), upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, a,
                                                    train=True, row_weight=w, rngs={"dropout": jax.random.PRNGKey(7)},
                                                    mutable=["batch_stats"], return_hidden=True,
                                                    hints=nets.Hints(depth_bound=bound, groups=frozen))
                real = jnp.arange(dims.k_max) < a.n_classes
                return (jnp.where(real, logits, 0.0) ** 2).sum() + (hidden ** 2).sum(), (logits, hidden, upd)
            return jax.grad(loss, has_aux=True)(v["params"])
        return jax.jit(jax.vmap(one))(variables, archs)

    grads, (logits, hidden, stats) = run(None, None)
    for b, f in ((bound, None), (None, frozen), (bound, frozen)):
        g2, (l2, h2, s2) = run(b, f)
        np.testing.assert_allclose(np.asarray(l2), np.asarray(logits), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(h2), np.asarray(hidden), rtol=1e-5, atol=1e-6)
        jax.tree_util.tree_map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6), s2, stats)
        for name in g2:
            j = nets.param_layer(name, dims.max_hidden)
            for p, q in zip(jax.tree_util.tree_leaves(g2[name]), jax.tree_util.tree_leaves(grads[name])):
                if f is None or j in (1, dims.max_hidden):
                    np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-4, atol=1e-6, err_msg=name)
                else:
                    assert not np.asarray(p).any(), name
    assert np.asarray(grads["layer1_kernel"]).any() and np.asarray(grads["layer0_kernel"]).any()
