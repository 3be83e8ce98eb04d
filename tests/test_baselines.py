"""Baselines (neon_jax.pruning): magnitude, structured and lookahead pruning on hand-made networks checked
against NumPy, the unstructured parameter count by hand, fine-tuning with frozen pruned weights, the random
agent's action distribution, argument errors, and one small end-to-end run of every method on a tiny zoo.

Compiles dominate: the pure pieces run eagerly on tiny shapes, and the end-to-end run shares one pool."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neon_jax import fit, nets, runner
from neon_jax import pool as pool_lib
from neon_jax import pruning as B
from neon_jax import zoo as zoo_lib
from neon_jax.env import NUM_ACTIONS
from neon_jax.policies import random_policy
from neon_jax.presets import PRESETS

TINY = PRESETS["tiny"]
DIMS = nets.NetDims(d_max=6, k_max=4, max_hidden=3, w_max=8)


@pytest.fixture(scope="module", autouse=True)
def _cheap_compiles():
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def _network(widths=(5, 3), pre=("none", "batchnorm"), n_features=4, n_classes=3, seed=0):
    """A hand-made padded network with distinct random weights and non-trivial batch-norm statistics."""
    arch = nets.make_arch(list(widths), ["relu"] * len(widths), list(pre), n_features, n_classes, DIMS)
    variables = nets.init_network(jax.random.PRNGKey(seed), nets.make_model(DIMS), arch)
    rng = np.random.default_rng(seed)
    params = dict(variables["params"])
    stats = dict(variables["batch_stats"])
    for j in range(DIMS.max_hidden):
        n = params[f"bn{j}"]["scale"].shape[0]
        params[f"bn{j}"] = {"scale": jnp.asarray(rng.uniform(-2, 2, n), jnp.float32), "bias": params[f"bn{j}"]["bias"]}
        stats[f"bn{j}"] = {"mean": stats[f"bn{j}"]["mean"], "var": jnp.asarray(rng.uniform(0.1, 3, n), jnp.float32)}
    return {"params": params, "batch_stats": stats}, arch


def _real_entries(variables, arch):
    """[(layer index, flat index within the padded kernel, value)] of every real Linear weight."""
    names = nets.kernel_names(DIMS.max_hidden)
    real = nets.real_weight_masks(arch, DIMS)
    out = []
    for i, (name, r) in enumerate(zip(names, real)):
        k = np.asarray(variables["params"][name]).reshape(-1)
        for f in np.flatnonzero(np.asarray(r).reshape(-1)):
            out.append((i, int(f), float(k[f])))
    return out


def test_real_weight_masks_count_the_linears():
    _, arch = _network()
    real = nets.real_weight_masks(arch, DIMS)
    assert [int(r.sum()) for r in real] == [4 * 5, 5 * 3, 0, 3 * 3]


def test_magnitude_prunes_exactly_the_smallest_weights():
    variables, arch = _network()
    entries = _real_entries(variables, arch)
    for fraction in (0.1, 0.5, 0.8):
        masks = B.magnitude_masks(variables["params"], arch, DIMS, fraction)
        n_prune = round(fraction * len(entries))
        order = sorted(range(len(entries)), key=lambda e: abs(entries[e][2]))
        expect_pruned = {entries[e][:2] for e in order[:n_prune]}
        pruned = {(i, int(f)) for i, m in enumerate(masks) for f in np.flatnonzero(np.asarray(m).reshape(-1) == 0)}
        assert pruned == expect_pruned
        # the count: count_params minus the pruned weights
        assert int(B.count_unstructured(arch, masks, DIMS)) == int(nets.count_params(arch)) - n_prune


def test_unstructured_count_by_hand():
    # 4 features -> 5 -> [BN on 5] -> 3 -> 3 classes:
    # Linear 4*5+5, Linear 5*3+3, BN 2*5, output 3*3+3 = 25 + 18 + 10 + 12 = 65
    variables, arch = _network()
    assert int(nets.count_params(arch)) == 65
    masks = [jnp.ones_like(m) for m in nets.real_weight_masks(arch, DIMS)]
    assert int(B.count_unstructured(arch, masks, DIMS)) == 65
    masks[0] = masks[0].at[0, 0].set(0).at[3, 4].set(0)  # two real weights of the first Linear
    masks[0] = masks[0].at[5, 0].set(0)  # a padded feature row: not a weight, not counted
    masks[1] = masks[1].at[2, 2].set(0)
    masks[3] = masks[3].at[0, 3].set(0)  # padded class column
    assert int(B.count_unstructured(arch, masks, DIMS)) == 65 - 3


def _lap_numpy(dense: nets.DenseNetwork) -> list[np.ndarray]:
    """LAP scores on the compacted network, straight from the formula (Park et al. 2020, squared form)."""
    linears, bn_after = [], []
    pending = None
    for layer in dense.layers:
        if layer["kind"] == "batchnorm":
            pending = np.abs(layer["scale"]) / np.sqrt(layer["var"] + layer["eps"])
        elif layer["kind"] == "linear":
            if linears:
                bn_after.append(pending if pending is not None else np.ones(linears[-1].shape[1]))
            pending = None
            linears.append(layer["kernel"])
    scores = []
    for i, w in enumerate(linears):
        prev = np.ones(w.shape[0]) if i == 0 else (linears[i - 1] ** 2).sum(0) * bn_after[i - 1] ** 2
        nxt = np.ones(w.shape[1]) if i == len(linears) - 1 else (linears[i + 1] ** 2).sum(1) * bn_after[i] ** 2
        scores.append(w ** 2 * prev[:, None] * nxt[None, :])
    return scores


@pytest.mark.parametrize("widths,pre", [((5, 3), ("batchnorm", "batchnorm")), ((7, 2, 6), ("none", "batchnorm", "dropout"))])
def test_lap_scores_match_numpy(widths, pre):
    variables, arch = _network(widths, pre, seed=len(widths))
    scores = B.lap_scores(variables, arch, DIMS)
    dense = nets.compact(variables, arch, DIMS)
    expect = _lap_numpy(dense)
    d, k = int(arch.n_features), int(arch.n_classes)
    ins = [d] + list(widths)
    outs = list(widths) + [k]
    got = [np.asarray(s)[: ins[i], : outs[i]] for i, s in enumerate(scores[: len(widths)])]
    got.append(np.asarray(scores[-1])[: widths[-1], :k])
    for g, e in zip(got, expect):
        np.testing.assert_allclose(g, e, rtol=1e-5)


def test_lap_masks_prune_per_layer_and_keep_one():
    variables, arch = _network()
    real = nets.real_weight_masks(arch, DIMS)
    hidden, output = B.lap_ratios(3)
    assert (hidden, output) == pytest.approx((0.875, 1 - 0.75 ** 3))
    masks = B.layerwise_masks(B.lap_scores(variables, arch, DIMS), real, hidden, output)
    for i, (m, r) in enumerate(zip(masks, real)):
        n = int(r.sum())
        ratio = output if i == len(masks) - 1 else hidden
        assert int(((1 - m) * r).sum()) == min(round(ratio * n), max(n - 1, 0))
        assert int(((1 - m) * (1 - r)).sum()) == 0  # padding is never "pruned"
    # k = 10 would prune 99.9 %: at least one weight per Linear survives
    masks = B.layerwise_masks(B.lap_scores(variables, arch, DIMS), real, *B.lap_ratios(10))
    assert [int((m * r).sum()) for m, r in zip(masks, real)] == [1, 1, 0, 1]


def test_structured_removes_whole_neurons():
    variables, arch = _network((7, 5, 8), ("none", "batchnorm", "none"))
    table = jnp.asarray(B.structured_remove_table(0.5, DIMS.w_max))
    new_arch = B.structured_arch(variables["params"], arch, DIMS, table)
    assert list(np.asarray(new_arch.widths)) == [7 - 3, 5 - 2, 8 - 4]
    # the removed neurons are those with the smallest incoming L1 norms
    for j, w in enumerate((7, 5, 8)):
        norms = np.abs(np.asarray(variables["params"][f"layer{j}_kernel"])).sum(0)[:w]
        removed = set(np.flatnonzero(np.asarray(new_arch.mask[j])[:w] == 0))
        assert removed == set(np.argsort(norms, kind="stable")[: w // 2])
    zeroed = nets.zero_dead(variables, new_arch, DIMS)
    dense = nets.compact(zeroed, new_arch, DIMS)
    assert dense.hidden_widths == [4, 3, 4]
    assert dense.num_params() == int(nets.count_params(new_arch))
    # the narrowed network computes the same as the masked one
    x = np.random.default_rng(0).uniform(size=(5, DIMS.d_max)).astype(np.float32)
    logits = nets.make_model(DIMS).apply(zeroed, x, new_arch)
    np.testing.assert_allclose(np.asarray(logits)[:, :3], dense.logits(x[:, :4]), rtol=1e-4, atol=1e-5)


def test_structured_remove_table():
    table = B.structured_remove_table(0.7, 10)
    assert list(table[:4]) == [0, 0, 1, 2] and table[10] == 7
    assert all(table[w] <= w - 1 for w in range(1, 11))
    assert B.structured_remove_table(0.9, 8)[8] == 7


def test_finetune_keeps_pruned_weights_at_zero():
    variables, arch = _network()
    masks = B.magnitude_masks(variables["params"], arch, DIMS, 0.6)
    pruned = B.apply_kernel_masks(variables, masks, DIMS)
    rng = np.random.default_rng(0)
    data = fit.pad_data(rng.uniform(size=(40, 4)), rng.integers(0, 3, 40), 40, DIMS.d_max)
    trainer = fit.make_trainer(nets.make_model(DIMS))
    tuned, info = fit.finetune(trainer.learner, jax.random.PRNGKey(1), pruned, arch, data,
                               fit.Trainable.everything(DIMS.max_hidden), max_epochs=3, batch_size=8, patience=3,
                               weight_mask=B.weight_mask_tree(pruned["params"], masks, DIMS))
    assert int(info["epochs"]) >= 1
    changed = False
    for name, m in zip(nets.kernel_names(DIMS.max_hidden), masks):
        k = np.asarray(tuned["params"][name])
        assert np.all(k[np.asarray(m) == 0] == 0)
        changed |= not np.array_equal(k, np.asarray(pruned["params"][name]))
    assert changed


def test_random_policy_is_uniform():
    n = 20000
    actions = np.asarray(jax.jit(jax.vmap(lambda k: random_policy(None, k, None)))(
        jax.random.split(jax.random.PRNGKey(3), n)))
    counts = np.bincount(actions, minlength=NUM_ACTIONS)
    assert counts.size == NUM_ACTIONS
    chi2 = ((counts - n / NUM_ACTIONS) ** 2 / (n / NUM_ACTIONS)).sum()
    assert chi2 < 18.47  # 99.9 % quantile of chi-square with 4 degrees of freedom


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown baseline"):
        B.default_settings("obd")
    with pytest.raises(ValueError, match="fraction in"):
        B.check_setting("magnitude", 1.5)
    with pytest.raises(ValueError, match="fraction in"):
        B.check_setting("structured", 0)
    with pytest.raises(ValueError, match="integer"):
        B.check_setting("lap", 2.5)
    with pytest.raises(ValueError, match="no setting"):
        B.check_setting("random", 0.5)
    assert B.check_setting("lap", 3.0) == 3 and B.check_setting("magnitude", None) == 0.8
    assert set(B.BASELINES) == {"random", "random_no_ft", "magnitude", "structured", "lap", "amc", "admm"}
    assert B.default_settings("lap") == [1, 3, 10]


@pytest.fixture(scope="module")
def tiny_pool():
    """Three untrained iris networks (the mechanics need no training, and training would cost a compile)."""
    prepared = zoo_lib.prepare_data("iris", TINY)
    zoo = zoo_lib.build_zoo(prepared, TINY, n=4, n_heldout=3, seed=0, epochs=0)
    return pool_lib.EnvPool.from_zoos([(zoo, prepared)], "heldout", 5.0, TINY)


ROW_KEYS = {"dataset", "network", "widths_before", "widths_after", "params_before", "params_after", "compression",
            "test_acc_before", "test_acc_after", "acc_change_points", "seconds", "method", "setting", "counting"}


def test_end_to_end_on_a_tiny_zoo(tiny_pool):
    """Every program shape but the random agent with per-step fine-tuning (that is the environment's own
    fine-tuned step, compiled and tested by test_env / test_agent; here it would double this file's time)."""
    pool = tiny_pool
    with pytest.raises(ValueError, match="unknown baseline"):
        B.run_baseline("nope", pool, TINY)
    by_method = {}
    for method, setting, finetune in (("magnitude", 0.5, True), ("magnitude", 0.25, True), ("structured", 0.5, False),
                                      ("lap", 1, False), ("random_no_ft", None, False)):
        rows = B.run_baseline(method, pool, TINY, setting=setting, passes=1, batch_size=2, finetune=finetune).rows
        assert len(rows) == len(pool) == 3
        for r in rows:
            assert ROW_KEYS <= set(r)
            assert r["method"] == method and r["setting"] == setting
            assert r["counting"] == ("unstructured" if method in B.UNSTRUCTURED else "structured")
            assert r["compression"] == pytest.approx(r["params_before"] / r["params_after"])
            assert r["params_after"] <= r["params_before"] and 0 <= r["test_acc_after"] <= 1
            assert r["acc_change_points"] == pytest.approx(100 * (r["test_acc_after"] - r["test_acc_before"]))
            assert (r["finetune_epochs"] >= 1) == finetune
        by_method[(method, setting)] = rows
    archs = jax.device_get(pool.archs)
    for b, (r, r_lap) in enumerate(zip(by_method[("magnitude", 0.5)], by_method[("lap", 1)])):
        arch = jax.tree_util.tree_map(lambda a: a[b], archs)
        real = [int(m.sum()) for m in nets.real_weight_masks(arch, pool.dims)]
        assert r["params_before"] - r["params_after"] == round(0.5 * sum(real))
        assert r["widths_after"] == r["widths_before"]
        lap_pruned = sum(min(round(0.5 * n), max(n - 1, 0)) for n in real[:-1]) + min(round(0.25 * real[-1]), real[-1] - 1)
        assert r_lap["params_before"] - r_lap["params_after"] == lap_pruned
    for r in by_method[("structured", 0.5)]:
        before = [int(w) for w in r["widths_before"].split("-")]
        assert [int(w) for w in r["widths_after"].split("-")] == [w - math.floor(0.5 * w) for w in before]
    for r in by_method[("random_no_ft", None)]:
        assert len(r["actions"]) == len(r["widths_before"].split("-"))  # one pass: one action per hidden layer
        assert set(r["actions"]) <= set("01234")
    # a sweep reuses the compiled program: the two magnitude fractions shared one compile
    groups = nets.shape_groups(pool.archs, pool.dims, 2)
    assert all(runner.compiles(B.program("magnitude", dims, TINY, 1, True)) == 1 for _, dims in groups)


def test_amc_end_to_end_with_the_accuracy_floor_behind_its_switch(tiny_pool):
    """AMC through `run_baseline`: whole neurons removed and counted as NEON's, the search's FLOPs within its
    budget's reach, and the original's accuracy floor (§12 C3) only when asked for."""
    from neon_jax.amc import AMCConfig

    pool = tiny_pool
    small = AMCConfig(episodes=4, warmup=1, hidden=8, batch_size=4, channel_round=1, calibration_rows=32)
    rows = B.run_baseline("amc", pool, TINY, setting=0.3, batch_size=4, amc_config=small).rows
    floored = B.run_baseline("amc", pool, TINY, setting=0.3, batch_size=4,
                             amc_config=dataclasses.replace(small, floor_accuracy=True)).rows
    assert len(rows) == len(floored) == 3
    for r, f in zip(rows, floored):
        assert ROW_KEYS <= set(r) and r["method"] == "amc" and r["counting"] == "structured"
        before = [int(w) for w in r["widths_before"].split("-")]
        after = [int(w) for w in r["widths_after"].split("-")]
        assert len(after) == len(before) and all(1 <= a <= b for a, b in zip(after, before))
        assert 0 < r["amc_flops_ratio"] <= 1 and 0 <= r["amc_search_val_acc"] <= 1
        assert r["finetune_epochs"] >= 1
        # the same search, the same network: only the reported accuracy differs
        assert f["widths_after"] == r["widths_after"] and f["params_after"] == r["params_after"]
        assert f["test_acc_after"] == max(r["test_acc_after"], r["test_acc_before"])
    with pytest.raises(ValueError, match="share of FLOPs kept"):
        B.check_setting("amc", 1.5)
    assert B.default_settings("amc")[0] == 0.2


def test_admm_end_to_end(tiny_pool):
    """ADMM through `run_baseline`: unstructured counting of its pruned weights and batch-norm scales, its own
    retrain as its fine-tune, a sweep of alpha in one compile, a larger alpha prunes more."""
    from neon_jax.admm import ADMMConfig

    pool = tiny_pool
    cfg = ADMMConfig(pre_epochs=1, admm_epochs=2, retrain_epochs=1)
    progs = [B.program("admm", dims, TINY, admm_config=cfg) for _, dims in nets.shape_groups(pool.archs, pool.dims, 4)]
    before = [runner.compiles(prog) for prog in progs]
    by_alpha = {a: B.run_baseline("admm", pool, TINY, setting=a, batch_size=4, admm_config=cfg).rows
                for a in (5e-4, 5e-3)}
    assert [runner.compiles(prog) - b for prog, b in zip(progs, before)] == [1] * len(progs)
    for loose, tight in zip(by_alpha[5e-4], by_alpha[5e-3]):
        for r in (loose, tight):
            assert ROW_KEYS <= set(r) and r["counting"] == "unstructured" and r["method"] == "admm"
            assert r["widths_after"] == r["widths_before"] and r["finetune_epochs"] == 1
            assert r["params_after"] <= r["params_before"]
        assert tight["params_after"] <= loose["params_after"]
    with pytest.raises(ValueError, match="alpha"):
        B.check_setting("admm", 0)
