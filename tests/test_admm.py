"""ADMM pruning (neon_jax.admm): the proximal step, the Z / U updates, the penalty and the softmax-NLL data loss by
hand, the hard-prune masks and the parameter count against NumPy on hand-made networks, and the whole schedule
(pruned weights stay zero through the retrain, padding is never touched and changes no number, vmap = one by
one, an alpha sweep does not recompile). Tiny shapes, 1-2 epochs per phase."""

from __future__ import annotations

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neon_jax import admm as A
from neon_jax import nets
from neon_jax.env import make_env_params, stack_params

DIMS = nets.NetDims(d_max=6, k_max=4, max_hidden=3, w_max=8)
CONFIG = A.ADMMConfig(pre_epochs=1, admm_epochs=2, retrain_epochs=2, batch_size=16)
ALPHA = 2e-3  # threshold 0.2: prunes a good share of the U(-0.5, 0.5) initial weights of 4-input layers


def _network(widths=(5, 3), pre=("batchnorm", "batchnorm"), n_features=4, n_classes=3, seed=0, dims=DIMS):
    """A hand-made padded network with random batch-norm scales (padded entries too) and running variances."""
    arch = nets.make_arch(list(widths), ["relu"] * len(widths), list(pre), n_features, n_classes, dims)
    variables = nets.init_network(jax.random.PRNGKey(seed), nets.make_model(dims), arch)
    rng = np.random.default_rng(seed)
    params, stats = dict(variables["params"]), dict(variables["batch_stats"])
    for j in range(dims.max_hidden):
        n = params[f"bn{j}"]["scale"].shape[0]
        params[f"bn{j}"] = {"scale": jnp.asarray(rng.uniform(-1, 1, n), jnp.float32), "bias": params[f"bn{j}"]["bias"]}
        stats[f"bn{j}"] = {"mean": stats[f"bn{j}"]["mean"], "var": jnp.asarray(rng.uniform(0.5, 2, n), jnp.float32)}
    return {"params": params, "batch_stats": stats}, arch


def _env_params(variables, arch, seed=0, dims=DIMS, n_features=4, n_classes=3):
    rng = np.random.default_rng(100 + seed)
    split = lambda n: (rng.uniform(size=(n, n_features)).astype(np.float32), rng.integers(0, n_classes, n))
    (xf, yf), (xv, yv), (xt, yt) = split(40), split(10), split(12)
    splits = types.SimpleNamespace(x_finetune=xf, y_finetune=yf, x_val=xv, y_val=yv, x_train=np.concatenate([xf, xv]),
                                   y_train=np.concatenate([yf, yv]), x_test=xt, y_test=yt)
    return make_env_params(variables, arch, splits, dims, tau=1.0)


def tree_zeros(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def _numpy_prox(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def test_config_is_static_and_checked():
    assert hash(A.ADMMConfig()) == hash(A.ADMMConfig())
    c = A.ADMMConfig()
    assert (c.pre_epochs, c.admm_epochs, c.retrain_epochs, c.rho, c.batch_size, c.learning_rate, c.iters) == \
        (10, 5, 10, 1e-2, 64, 1e-3, 1)
    with pytest.raises(ValueError):
        A.ADMMConfig(iters=0)


def test_soft_threshold_by_hand():
    v = jnp.array([-1.0, -0.05, -0.03, 0.0, 0.03, 0.05, 0.07, 2.0], jnp.float32)
    got = np.asarray(A.soft_threshold(v, jnp.float32(0.05)))
    np.testing.assert_allclose(got, [-0.95, 0.0, 0.0, 0.0, 0.0, 0.0, 0.02, 1.95], atol=1e-7)
    assert np.all(got[1:6] == 0.0)  # exactly zero at and inside the threshold


def test_zu_update_by_hand():
    w = np.array([0.3, -0.02, 0.06, -0.5], np.float32)
    u = np.array([0.0, 0.01, -0.02, 0.1], np.float32)
    z, u_new = A.admm_zu_update(jnp.asarray(w), jnp.asarray(u), 5e-4, 1e-2)  # threshold 0.05
    np.testing.assert_allclose(np.asarray(z), [0.25, 0.0, 0.0, -0.35], atol=1e-6)
    np.testing.assert_allclose(np.asarray(u_new), [0.05, -0.01, 0.04, -0.05], atol=1e-6)


def test_softmax_nll_by_hand():
    # row 0: probabilities (1/4, 3/4, 0); row 1: uniform over 2 classes; row 2: weight 0, ignored
    logits = jnp.array([[0.0, math.log(3.0), nets.NEG_LOGIT, nets.NEG_LOGIT],
                        [1.0, 1.0, nets.NEG_LOGIT, nets.NEG_LOGIT],
                        [5.0, 0.0, nets.NEG_LOGIT, nets.NEG_LOGIT]])
    loss = A.softmax_nll(logits, jnp.array([1, 0, 1]), jnp.array([1.0, 1.0, 0.0]))
    assert float(loss) == pytest.approx(-(0.75 + 0.5) / 2, abs=1e-6)


def test_penalty_by_hand():
    params = {"a": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array([4.0])}
    z = {"a": jnp.array([0.5, 2.0, 0.0]), "b": jnp.array([0.0])}
    u = {"a": jnp.array([0.0, 1.0, 0.0]), "b": jnp.array([0.0])}
    sel = {"a": jnp.array([1.0, 1.0, 0.0]), "b": jnp.array([0.0])}  # a[2] and b are not weights
    # squared: rho/2 (0.5^2 + 1^2); plain norm per tensor: rho/2 sqrt(0.5^2 + 1^2)
    assert float(A.admm_penalty(params, z, u, sel, 0.1)) == pytest.approx(0.05 * 1.25)
    assert float(A.admm_penalty(params, z, u, sel, 0.1, squared=False)) == pytest.approx(0.05 * math.sqrt(1.25))
    g = jax.grad(A.admm_penalty)(params, params, tree_zeros(params), sel, 0.1, False)  # norm 0: gradient 0
    assert all(np.all(np.isfinite(x)) and np.all(x == 0) for x in jax.tree_util.tree_leaves(g))


def _real_scales(arch):
    return [np.asarray(m) for m in A.scale_real_masks(arch, DIMS)]


def test_scale_and_weight_selection():
    variables, arch = _network((5, 3), ("none", "batchnorm"))
    scales = _real_scales(arch)
    assert [int(s.sum()) for s in scales] == [0, 5, 0]  # BN only in front of hidden Linear 1 (its 5 inputs)
    sel = A.weight_selection(variables["params"], arch, DIMS)
    assert int(sum(x.sum() for x in jax.tree_util.tree_leaves(sel))) == 4 * 5 + 5 * 3 + 3 * 3 + 5
    assert all(float(sel[name].sum()) == 0 for name in sel if name.endswith("_bias"))
    assert all(float(sel[f"bn{j}"]["bias"].sum()) == 0 for j in range(DIMS.max_hidden))


def test_hard_prune_masks_match_numpy():
    variables, arch = _network((5, 3), ("batchnorm", "batchnorm"), seed=1)
    t = 0.2
    params = dict(variables["params"])
    params["layer0_kernel"] = params["layer0_kernel"].at[1, 2].set(t)  # exactly at the threshold: kept
    variables = {"params": params, "batch_stats": variables["batch_stats"]}
    masks = A.hard_prune_masks(variables, arch, DIMS, t)
    names = nets.kernel_names(DIMS.max_hidden)
    for name, m, r in zip(names, masks["kernels"], nets.real_weight_masks(arch, DIMS)):
        w, r = np.asarray(params[name]), np.asarray(r)
        np.testing.assert_array_equal(np.asarray(m), np.where((r > 0) & (np.abs(w) < t), 0.0, 1.0))
    assert float(masks["kernels"][0][1, 2]) == 1.0
    for j, (m, r) in enumerate(zip(masks["scales"], _real_scales(arch))):
        s = np.asarray(params[f"bn{j}"]["scale"])
        np.testing.assert_array_equal(np.asarray(m), np.where((r > 0) & (np.abs(s) < t), 0.0, 1.0))
    # the random padded scales (bn1[5:], all of bn2) include small values, and none is pruned
    pad_small = np.abs(np.asarray(params["bn2"]["scale"])) < t
    assert pad_small.any() and np.all(np.asarray(masks["scales"][2]) == 1)
    assert sum(int((1 - np.asarray(m)).sum()) for m in masks["scales"]) > 0


def test_count_admm_by_hand():
    # 4 features -> 5 -> [BN on 5] -> 3 -> 3 classes: 25 + 18 + 10 (BN) + 12 = 65
    _, arch = _network((5, 3), ("none", "batchnorm"))
    assert int(nets.count_params(arch)) == 65
    kernels = [jnp.ones_like(m) for m in nets.real_weight_masks(arch, DIMS)]
    scales = [jnp.ones(DIMS.d_max), jnp.ones(DIMS.w_max), jnp.ones(DIMS.w_max)]
    assert int(A.count_admm(arch, kernels, scales, DIMS)) == 65
    kernels[0] = kernels[0].at[0, 0].set(0).at[3, 4].set(0).at[5, 0].set(0)  # 2 real, 1 padded row
    kernels[3] = kernels[3].at[0, 3].set(0)  # padded class column
    scales[1] = scales[1].at[0].set(0).at[4].set(0).at[6].set(0)  # 2 real, 1 padded neuron
    scales[0] = scales[0].at[0].set(0)  # no batch-norm in front of Linear 0: not a parameter
    assert int(A.count_admm(arch, kernels, scales, DIMS)) == 65 - 4


def test_admm_phase_updates_z_and_u_by_hand():
    # learning rate 0: W never moves, so after 2 epochs Z1 = S(W), U1 = W - Z1, Z2 = S(W + U1), U2 = U1 + W - Z2
    variables, arch = _network((5, 3), ("batchnorm", "dropout"), seed=2)
    p = _env_params(variables, arch)
    config = A.ADMMConfig(pre_epochs=0, admm_epochs=2, retrain_epochs=0, batch_size=16, learning_rate=0.0)
    out, z, u, opt = A.admm_phase(jax.random.PRNGKey(0), variables, arch, p.finetune, jnp.float32(ALPHA),
                                  nets.make_model(DIMS), DIMS, config)
    # one Adam state goes on through the phases (as the original's single optimiser): its step count adds up
    steps = int(jax.tree_util.tree_leaves(opt)[0])
    assert steps >= 2
    *_, opt2 = A.admm_phase(jax.random.PRNGKey(1), out, arch, p.finetune, jnp.float32(ALPHA), nets.make_model(DIMS),
                            DIMS, config, opt_state=opt)
    assert int(jax.tree_util.tree_leaves(opt2)[0]) == 2 * steps
    t = ALPHA / config.rho
    sel = A.weight_selection(variables["params"], arch, DIMS)
    leaves = lambda tree: [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
    for w, w_out, zz, uu, s in zip(*map(leaves, (variables["params"], out["params"], z, u, sel))):
        np.testing.assert_array_equal(w_out, w)
        z1 = _numpy_prox(w, t)
        u1 = w - z1
        z2 = _numpy_prox(w + u1, t)
        np.testing.assert_allclose(zz, s * z2, atol=1e-6)
        np.testing.assert_allclose(uu, s * (u1 + w - z2), atol=1e-6)
    assert any(np.any((s > 0) & (zz == 0)) for zz, s in zip(leaves(z), leaves(sel)))  # the prox pruned some


@functools.cache
def _prune_fn(config=CONFIG, dims=DIMS, batched=False):
    f = functools.partial(A.admm_prune, model=nets.make_model(dims), dims=dims, config=config)
    return jax.jit(jax.vmap(f) if batched else f)


def _check_pruned_and_padding(before, after, masks, arch, dims=DIMS):
    params0, params = before["params"], after["params"]
    for name, m, r in zip(nets.kernel_names(dims.max_hidden), masks["kernels"], nets.real_weight_masks(arch, dims)):
        k, m, r = np.asarray(params[name]), np.asarray(m), np.asarray(r)
        assert np.all(k[m == 0] == 0) and np.all(m[r == 0] == 1)
        np.testing.assert_array_equal(k[r == 0], np.asarray(params0[name])[r == 0])  # padding untouched (zero)
    for j, (m, r) in enumerate(zip(masks["scales"], A.scale_real_masks(arch, dims))):
        s, m, r = np.asarray(params[f"bn{j}"]["scale"]), np.asarray(m), np.asarray(r)
        assert np.all(s[m == 0] == 0) and np.all(m[r == 0] == 1)
        np.testing.assert_array_equal(s[r == 0], np.asarray(params0[f"bn{j}"]["scale"])[r == 0])
    for j in range(dims.max_hidden):
        live = np.asarray(arch.mask[j]) > 0
        assert np.all(np.asarray(params[f"{nets.linear_name(j, dims.max_hidden)}_bias"])[~live] == 0)


def test_admm_prune_masks_are_the_threshold_at_prune_time():
    # no retrain: the result is the network at the hard prune, so every kept real weight has |W| >= alpha / rho
    # and every pruned one is exactly 0
    variables, arch = _network(seed=3)
    p = _env_params(variables, arch)
    config = A.ADMMConfig(pre_epochs=1, admm_epochs=2, retrain_epochs=0, batch_size=16)
    out, masks = _prune_fn(config)(jax.random.PRNGKey(0), p, jnp.float32(ALPHA))
    t = np.float32(ALPHA) / np.float32(config.rho)
    again = A.hard_prune_masks(out, arch, DIMS, t)
    for m, m2 in zip(jax.tree_util.tree_leaves(masks), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(np.asarray(m), np.asarray(m2))
    _check_pruned_and_padding(variables, out, masks, arch)
    real = nets.real_weight_masks(arch, DIMS) + A.scale_real_masks(arch, DIMS)
    n_real = sum(float(r.sum()) for r in real)
    n_pruned = float(nets.count_params(arch) - A.count_admm(arch, masks["kernels"], masks["scales"], DIMS))
    assert 0 < n_pruned < n_real


# The comparisons below use no batch-norm behind a hidden layer: in train mode it cancels a constant shift, so
# the bias in front of it has an exact gradient of 0 and Adam turns its float noise into lr-sized steps (it
# would in PyTorch too), which makes two summation orders differ by ~lr.
COMPARE_NETS = (((5, 3), ("batchnorm", "none")), ((6, 2, 4), ("batchnorm", "dropout", "none")))


def test_admm_prune_retrain_keeps_pruned_zero_and_vmap_matches():
    nets_ = [_network(w, pre, seed=4 + i) for i, (w, pre) in enumerate(COMPARE_NETS)]
    ps = [_env_params(v, a, seed=i) for i, (v, a) in enumerate(nets_)]
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    alphas = jnp.array([ALPHA, 1.5e-3], jnp.float32)
    single = _prune_fn()
    one_by_one = [single(keys[i], ps[i], alphas[i]) for i in range(2)]
    assert single._cache_size() == 1  # a second alpha reuses the compiled program
    for (v, a), (out, masks) in zip(nets_, one_by_one):
        _check_pruned_and_padding(v, out, masks, a)
        assert any(float((1 - m).sum()) > 0 for m in masks["kernels"])
        changed = [not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
                   zip(jax.tree_util.tree_leaves(out["params"]), jax.tree_util.tree_leaves(v["params"]))]
        assert any(changed)
    batched = _prune_fn(batched=True)(keys, stack_params(ps), alphas)
    for i, ref in enumerate(one_by_one):
        for x, y in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(batched)):
            np.testing.assert_allclose(np.asarray(y)[i], np.asarray(x), atol=1e-5)


def test_padding_changes_no_number():
    # the same network (no dropout: its draws depend on the padded width) at larger padded shapes
    big = nets.NetDims(d_max=9, k_max=5, max_hidden=3, w_max=11)
    (widths, pre) = COMPARE_NETS[0]
    variables, arch = _network(widths, pre, seed=6)
    big_arch = nets.make_arch(list(widths), ["relu"] * 2, list(pre), 4, 3, big)
    big_vars = nets.init_network(jax.random.PRNGKey(0), nets.make_model(big), big_arch)
    pad = lambda small, like: jnp.zeros_like(like).at[tuple(slice(0, n) for n in small.shape)].set(small)
    big_vars = jax.tree_util.tree_map(pad, variables, big_vars)
    p, p_big = _env_params(variables, arch), _env_params(big_vars, big_arch, dims=big)
    key, alpha = jax.random.PRNGKey(2), jnp.float32(ALPHA)
    (out, masks), (out_big, masks_big) = _prune_fn()(key, p, alpha), _prune_fn(dims=big)(key, p_big, alpha)
    crop = lambda small, large: np.asarray(large)[tuple(slice(0, n) for n in small.shape)]
    for x, y in zip(jax.tree_util.tree_leaves((out, masks)), jax.tree_util.tree_leaves((out_big, masks_big))):
        np.testing.assert_allclose(crop(x, y), np.asarray(x), atol=1e-5)
