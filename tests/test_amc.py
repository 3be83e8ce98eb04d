"""AMC (neon_jax.amc): the least-squares refit against NumPy, FLOPs and channel counts by hand, the budget wall by
hand, one DDPG update against PyTorch, the search's budget, the pruned network it returns, and vmapped against
one-by-one searches with the same keys."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neon_jax import amc, nets
from neon_jax import pool as pool_lib
from neon_jax import zoo as zoo_lib
from neon_jax.presets import PRESETS

TINY = PRESETS["tiny"]
DIMS = nets.NetDims(d_max=6, k_max=4, max_hidden=3, w_max=8)


def _arch(widths=(5, 3), n_features=4, n_classes=3, pre=None):
    pre = pre or ["none"] * len(widths)
    return nets.make_arch(list(widths), ["relu"] * len(widths), pre, n_features, n_classes, DIMS)


def test_reconstruct_matches_numpy_lstsq():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x[30:] = 0.0  # padded calibration rows
    x[:, 6] = x[:, 1] * 2.0  # a collinear column: lstsq's minimum-norm answer matters
    y = rng.normal(size=(40, 5)).astype(np.float32)
    keep = np.array([1, 1, 0, 1, 0, 1, 1, 0], np.float32)
    got = np.asarray(amc.reconstruct(jnp.asarray(x), jnp.asarray(y), jnp.asarray(keep)))
    cols = keep > 0
    want = np.zeros((8, 5), np.float32)
    want[cols] = np.linalg.lstsq(x[:, cols].astype(np.float64), y.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(got, want, atol=2e-4)
    assert np.all(got[~cols] == 0.0)


def test_flops_by_hand():
    arch = _arch((5, 3), n_features=4, n_classes=3)
    flops = np.asarray(amc.linear_flops(arch, DIMS))
    # Linear 0: 4 -> 5, Linear 1: 5 -> 3, output: 3 -> 3, padding step
    np.testing.assert_array_equal(flops, [4 * 5 + 5, 5 * 3 + 3, 3 * 3 + 3, 0])
    in_r = jnp.array([1.0, 0.4, 2 / 3, 0.1])
    out_r = jnp.array([0.4, 2 / 3, 1.0, 0.1])
    want = 25 * 1.0 * 0.4 + 18 * 0.4 * (2 / 3) + 12 * (2 / 3) * 1.0
    assert float(amc.flops_kept(jnp.asarray(flops), in_r, out_r)) == pytest.approx(want, rel=1e-6)
    deep = _arch((7, 6, 2), n_features=6, n_classes=4)
    np.testing.assert_array_equal(np.asarray(amc.linear_flops(deep, DIMS)), [6 * 7 + 7, 7 * 6 + 6, 6 * 2 + 2, 2 * 4 + 4])


@pytest.mark.parametrize("c, ratio, r, want, pruned", [
    (64, 0.3, 8, 24, True),  # round(19.2) = 19 -> up to 24
    (60, 0.99, 8, 56, True),  # round(59.4) = 59 -> 64 > 60 -> down to 56
    (64, 1.0, 8, 64, False),  # ratio 1: left as it is
    (5, 0.5, 8, 5, False),  # narrower than the rounding: kept whole (the original would give 0)
    (10, 0.25, 1, 2, True),  # round(2.5) = 2 (half to even, as np.around)
    (10, 0.01, 1, 1, True),  # at least one
])
def test_channel_count_by_hand(c, ratio, r, want, pruned):
    d, p = amc.channel_count(jnp.float32(c), jnp.float32(ratio), r)
    assert float(d) == want and bool(p) == pruned


def test_budget_wall_by_hand():
    flops = jnp.array([100.0, 50.0, 10.0, 0.0])
    lb = 0.1
    in_r = jnp.array([1.0, lb, lb, lb])
    out_r = jnp.array([lb, lb, 1.0, lb])
    # step 0 is forced to keep everything
    assert float(amc.budget_wall(jnp.float32(0.3), 0, in_r, out_r, flops, 0.5, lb)) == 1.0
    # step 1 sets Linear 0's outputs and Linear 1's inputs: this = 100*1 + 50*lb, other = 10*lb*1
    budget = 0.3 * 160.0
    max_ratio = (budget - 10 * lb) / (100 + 50 * lb)
    got = float(amc.budget_wall(jnp.float32(0.9), 1, in_r, out_r, flops, 0.3, lb))
    assert got == pytest.approx(max_ratio, rel=1e-6)
    assert float(amc.budget_wall(jnp.float32(0.2), 1, in_r, out_r, flops, 0.3, lb)) == pytest.approx(0.2)
    # an impossible budget still keeps lbound
    assert float(amc.budget_wall(jnp.float32(0.9), 1, in_r, out_r, flops, 0.01, lb)) == pytest.approx(lb)


def test_ddpg_update_matches_pytorch():
    torch = pytest.importorskip("torch")
    cfg = amc.AMCConfig(hidden=6)
    state = amc.ddpg_init(jax.random.PRNGKey(3), cfg)
    rng = np.random.default_rng(1)
    s = rng.uniform(size=(5, amc.STATE_SIZE)).astype(np.float32)
    s2 = rng.uniform(size=(5, amc.STATE_SIZE)).astype(np.float32)
    a = rng.uniform(0.1, 1, size=5).astype(np.float32)
    r = rng.normal(size=5).astype(np.float32)
    nd = np.array([1, 1, 0, 1, 0], np.float32)
    new, info = amc.ddpg_update(state, *map(jnp.asarray, (s, a, r, s2, nd)), cfg)

    def linear(p):
        m = torch.nn.Linear(*np.asarray(p["w"]).shape)
        m.weight.data = torch.tensor(np.asarray(p["w"]).T.copy())
        m.bias.data = torch.tensor(np.asarray(p["b"]).copy())
        return m

    actor = {k: linear(v) for k, v in state.actor.items()}
    critic = {k: linear(v) for k, v in state.critic.items()}
    actor_t = {k: linear(v) for k, v in state.actor.items()}
    critic_t = {k: linear(v) for k, v in state.critic.items()}
    mu = lambda n, x: torch.sigmoid(n["fc3"](torch.relu(n["fc2"](torch.relu(n["fc1"](x))))))
    q = lambda n, x, u: n["fc3"](torch.relu(n["fc2"](torch.relu(n["fc11"](x) + n["fc12"](u)))))
    T = lambda v: torch.tensor(v)
    opt_c = torch.optim.Adam([p for m in critic.values() for p in m.parameters()], lr=cfg.lr_critic)
    opt_a = torch.optim.Adam([p for m in actor.values() for p in m.parameters()], lr=cfg.lr_actor)
    rb = T(r)[:, None] - T(r).mean()  # the first batch: the moving average is its own mean
    with torch.no_grad():
        target = rb + cfg.discount * T(nd)[:, None] * q(critic_t, T(s2), mu(actor_t, T(s2)))
    opt_c.zero_grad()
    value_loss = torch.nn.functional.mse_loss(q(critic, T(s), T(a)[:, None]), target)
    value_loss.backward()
    opt_c.step()
    opt_a.zero_grad()
    policy_loss = -q(critic, T(s), mu(actor, T(s))).mean()
    policy_loss.backward()
    opt_a.step()
    assert float(info["value_loss"]) == pytest.approx(value_loss.item(), rel=1e-5)
    assert float(info["policy_loss"]) == pytest.approx(policy_loss.item(), rel=1e-4, abs=1e-7)
    for ours, theirs in ((new.critic, critic), (new.actor, actor)):
        for name, m in theirs.items():
            np.testing.assert_allclose(np.asarray(ours[name]["w"]), m.weight.detach().numpy().T, atol=1e-6)
            np.testing.assert_allclose(np.asarray(ours[name]["b"]), m.bias.detach().numpy(), atol=1e-6)
    for name in new.actor_target:  # soft update by 0.01 towards the updated networks
        want = 0.99 * np.asarray(state.actor[name]["w"]) + 0.01 * np.asarray(new.actor[name]["w"])
        np.testing.assert_allclose(np.asarray(new.actor_target[name]["w"]), want, atol=1e-7)
    assert float(new.moving_average) == pytest.approx(float(r.mean()), rel=1e-6)
    again, _ = amc.ddpg_update(new, *map(jnp.asarray, (s, a, r + 1.0, s2, nd)), cfg)
    assert float(again.moving_average) == pytest.approx(r.mean() + 0.5 * 1.0, rel=1e-5)


@pytest.fixture(scope="module")
def iris_pool():
    """Three iris networks trained for the preset's epochs (the refit needs meaningful activations)."""
    prepared = zoo_lib.prepare_data("iris", TINY)
    zoo = zoo_lib.build_zoo(prepared, TINY, n=4, n_heldout=3, seed=0)
    return pool_lib.EnvPool.from_zoos([(zoo, prepared)], "heldout", 5.0, TINY)


SMALL = amc.AMCConfig(episodes=12, warmup=3, hidden=16, batch_size=8, channel_round=1, calibration_rows=64)


def _prune(cfg, preserve):
    def one(key, p, dims):
        model = nets.make_model(dims, TINY)
        return amc.prune(key, model, p.variables, p.arch, dims, p.finetune, p.val, preserve, cfg)
    return one


def test_search_keeps_its_budget_and_returns_its_network(iris_pool):
    pool = iris_pool
    dims = pool.dims
    p = pool.batch(list(range(len(pool))))
    keys = jax.random.split(jax.random.PRNGKey(0), len(pool))
    fn = jax.jit(jax.vmap(lambda k, q: _prune(SMALL, 0.4)(k, q, dims)))
    variables, arch, res = jax.device_get(fn(keys, p))
    archs = jax.device_get(p.arch)
    for b in range(len(pool)):
        a0 = jax.tree_util.tree_map(lambda x, b=b: x[b], archs)
        depth = int(a0.depth)
        flops = np.asarray(amc.linear_flops(a0, dims))
        fan_in, _, _ = (np.asarray(v) for v in amc.step_sizes(a0, dims))
        # the budget holds up to the rounding of each layer to whole neurons (at most half a neuron up)
        slack = sum(flops[t] * 0.5 / fan_in[t] * 2 for t in range(1, depth + 1)) / flops.sum()
        assert np.all(res.episode_flops_ratio[b] <= 0.4 + slack + 1e-6)
        assert res.best_reward[b] == pytest.approx(res.episode_reward[b].max())
        assert res.best_reward[b] == pytest.approx(-(1 - res.best_val_acc[b]) * math.log(res.best_flops_ratio[b]
                                                                                        * flops.sum()), rel=1e-5)
        # the returned network: hidden layer t - 1 keeps counts[t] neurons where step t pruned
        widths_before = np.asarray(a0.widths)
        widths_after = np.asarray(arch.widths[b])
        for t in range(1, depth + 1):
            want = int(res.counts[b][t]) if res.pruned[b][t] else widths_before[t - 1]
            assert widths_after[t - 1] == want
            assert res.ratios[b][t] == pytest.approx(want / widths_before[t - 1])
        assert res.ratios[b][0] == 1.0
        # its ratios give the best episode's FLOPs
        in_r = res.ratios[b]
        out_r = np.concatenate([in_r[1:depth + 1], [1.0], np.ones(dims.max_hidden - depth)])
        kept = (flops * in_r * out_r).sum() / flops.sum()
        assert kept == pytest.approx(res.best_flops_ratio[b], rel=1e-5)
        # dead neurons carry zero weights
        for j in range(depth):
            k = np.asarray(nets.kernel(jax.tree_util.tree_map(lambda x, b=b: x[b], variables["params"]), j,
                                       dims.max_hidden))
            assert np.all(k[:, np.asarray(arch.mask[b][j]) == 0] == 0)


def test_refit_weights_are_the_least_squares_of_the_kept_inputs(iris_pool):
    """The output Linear of a pruned network is lstsq of the kept inputs against the original outputs."""
    pool = iris_pool
    dims = pool.dims
    p = jax.tree_util.tree_map(lambda x: x[0], pool.batch([0]))
    model = nets.make_model(dims, TINY)
    cfg = amc.AMCConfig(channel_round=1, calibration_rows=10_000)
    net = amc.prepare(jax.random.PRNGKey(0), model, p.variables, p.arch, dims, p.finetune, cfg)
    depth = int(p.arch.depth)
    fan_in, _, _ = amc.step_sizes(p.arch, dims)
    counts = fan_in.at[depth].set(2.0)  # only the output Linear's inputs (the last hidden layer) are pruned
    pruned = jnp.zeros(dims.max_hidden + 1, bool).at[depth].set(True)
    variables, arch = amc.apply_strategy(p.variables, p.arch, dims, net, counts, pruned, 1)
    assert int(arch.widths[depth - 1]) == 2
    _, out_in = amc.linear_inputs(model, p.variables, p.arch, dims, p.finetune.x)
    n = int(p.finetune.n)
    x = np.asarray(out_in)[:n]
    w0 = np.asarray(p.variables["params"]["output_kernel"])
    y = x @ w0
    alive = np.asarray(arch.mask[depth - 1]) > 0
    assert alive.sum() == 2
    # the two kept neurons are those with the largest outgoing L1 norm
    norms = np.abs(w0).sum(1)
    assert set(np.flatnonzero(alive)) == set(np.argsort(-norms, kind="stable")[:2])
    want = np.linalg.lstsq(x[:, alive].astype(np.float64), y.astype(np.float64), rcond=None)[0]
    got = np.asarray(variables["params"]["output_kernel"])
    np.testing.assert_allclose(got[alive], want, atol=1e-3)
    assert np.all(got[~alive] == 0)


def test_vmapped_searches_equal_one_by_one(iris_pool):
    pool = iris_pool
    dims = pool.dims
    cfg = amc.AMCConfig(episodes=8, warmup=2, hidden=16, batch_size=8, channel_round=2, calibration_rows=64,
                        parallel_episodes=2)
    p = pool.batch([0, 1])
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    one = _prune(cfg, 0.5)
    _, arch_v, res_v = jax.jit(jax.vmap(lambda k, q: one(k, q, dims)))(keys, p)
    single = jax.jit(lambda k, q: one(k, q, dims))
    for b in range(2):
        q = jax.tree_util.tree_map(lambda x, b=b: x[b], p)
        _, arch_1, res_1 = single(keys[b], q)
        np.testing.assert_array_equal(np.asarray(arch_1.widths), np.asarray(arch_v.widths[b]))
        np.testing.assert_allclose(np.asarray(res_1.episode_reward), np.asarray(res_v.episode_reward[b]), rtol=1e-5)


def test_bad_config():
    with pytest.raises(ValueError, match="whole rounds"):
        amc.AMCConfig(episodes=10, parallel_episodes=3)
    with pytest.raises(ValueError, match="lbound"):
        amc.AMCConfig(lbound=0.0)
    with pytest.raises(ValueError, match="refit"):
        amc.AMCConfig(refit="lazy")
    wide = nets.NetDims(d_max=10, k_max=10, max_hidden=6, w_max=1024)
    with pytest.raises(ValueError, match="over the budget"):
        amc.check_table_size(wide, amc.AMCConfig())
    with pytest.raises(ValueError, match="over the budget"):
        amc.refit_mode(wide, amc.AMCConfig(refit="table"))


def test_refit_mode_is_the_table_where_it_fits():
    """"auto": the table up to the budget (the `cpu` preset's widths, w_max 640), on demand past it (the paper's
    widths); the pruning method resolves it per shape group."""
    from neon_jax.pruning import get_method
    for w_max, want in ((64, "table"), (640, "table"), (768, "on_demand"), (1024, "on_demand")):
        dims = nets.NetDims(d_max=10, k_max=10, max_hidden=6, w_max=w_max)
        assert amc.refit_mode(dims, amc.AMCConfig()) == want
        assert amc.refit_mode(dims, amc.AMCConfig(refit="on_demand")) == "on_demand"
        assert get_method("amc").config(dims).refit == want
    assert amc.table_bytes(nets.NetDims(10, 10, 6, 1024), amc.AMCConfig()) == 4 * 128 * (5 * 1024 ** 2 + 10240)


def _prepared(pool, cfg, index=0):
    p = jax.tree_util.tree_map(lambda x: x[index], pool.batch([index]))
    model = nets.make_model(pool.dims, TINY)
    return p, model, amc.prepare(jax.random.PRNGKey(1), model, p.variables, p.arch, pool.dims, p.finetune, cfg)


def _assert_trees_close(got, want):
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_on_demand_refits_equal_the_table(iris_pool):
    """The same pruned network from the table and on demand, for strategies that prune every step, some steps,
    or none; the on-demand network holds the problems, not the table."""
    dims = iris_pool.dims
    cfg = amc.AMCConfig(channel_round=2, calibration_rows=64)
    p, _, table = _prepared(iris_pool, dataclasses.replace(cfg, refit="table"))
    _, _, lazy = _prepared(iris_pool, dataclasses.replace(cfg, refit="on_demand"))
    assert table.refit == "table" and lazy.refit == "on_demand"
    assert lazy.table_hidden is None and table.cal_x is None
    assert lazy.cal_x.shape[::2] == (dims.max_hidden, dims.w_max)
    depth = int(p.arch.depth)
    fan_in, _, _ = amc.step_sizes(p.arch, dims)
    rng = np.random.default_rng(0)
    apply = jax.jit(lambda net, c, pr: amc.apply_strategy(p.variables, p.arch, dims, net, c, pr, 2))
    for trial in range(4):
        ratios = rng.uniform(0.1, 1.0, dims.max_hidden + 1)
        counts, pruned = amc.channel_count(fan_in, jnp.asarray(ratios, jnp.float32), 2)
        pruned = pruned & (jnp.arange(dims.max_hidden + 1) >= 1) & (jnp.arange(dims.max_hidden + 1) <= depth)
        if trial == 3:
            pruned = jnp.zeros_like(pruned)
        v_t, a_t = apply(table, counts, pruned)
        v_l, a_l = apply(lazy, counts, pruned)
        np.testing.assert_array_equal(np.asarray(a_t.mask), np.asarray(a_l.mask))
        _assert_trees_close(v_l, v_t)


def test_on_demand_search_equals_the_table_search(iris_pool):
    """Searches with the same keys: the same strategy, rewards and pruned network from either refit mode, one by
    one and vmapped."""
    dims = iris_pool.dims
    p = iris_pool.batch([0, 1])
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    got = {}
    for mode in ("table", "on_demand"):
        cfg = dataclasses.replace(SMALL, channel_round=2, refit=mode)
        got[mode] = jax.device_get(jax.jit(jax.vmap(lambda k, q, cfg=cfg: _prune(cfg, 0.4)(k, q, dims)))(keys, p))
    (v_t, a_t, r_t), (v_l, a_l, r_l) = got["table"], got["on_demand"]
    np.testing.assert_array_equal(r_t.counts, r_l.counts)
    np.testing.assert_array_equal(r_t.pruned, r_l.pruned)
    np.testing.assert_allclose(r_t.episode_reward, r_l.episode_reward, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(a_t.mask), np.asarray(a_l.mask))
    _assert_trees_close(v_l, v_t)
    q = jax.tree_util.tree_map(lambda x: x[0], p)  # one by one: the refits run under lax.cond
    cfg = dataclasses.replace(SMALL, channel_round=2, refit="on_demand")
    _, a_1, r_1 = jax.jit(lambda k, q: _prune(cfg, 0.4)(k, q, dims))(keys[0], q)
    np.testing.assert_array_equal(np.asarray(r_1.counts), r_t.counts[0])
    np.testing.assert_allclose(np.asarray(r_1.episode_reward), r_t.episode_reward[0], rtol=1e-5)


def test_networks_past_the_table_budget_run(iris_pool, monkeypatch):
    """With the budget below the tiny networks' table, "auto" solves on demand and the method runs end to end
    (`run_baseline`), where it used to refuse; "table" still refuses."""
    from neon_jax import pruning
    monkeypatch.setattr(amc.network, "TABLE_BUDGET_BYTES", 1024)
    dims = iris_pool.dims
    assert amc.table_bytes(dims, amc.AMCConfig(channel_round=1)) > 1024
    assert amc.refit_mode(dims, amc.AMCConfig(channel_round=1)) == "on_demand"
    with pytest.raises(ValueError, match="over the budget"):
        amc.refit_mode(dims, amc.AMCConfig(refit="table"))
    cfg = dataclasses.replace(SMALL, episodes=4, warmup=1)
    result = pruning.run_baseline("amc", iris_pool, TINY, setting=0.5, amc_config=cfg, batch_size=4)
    rows = result.rows
    assert len(rows) == len(iris_pool)
    assert all(0.0 < r["amc_flops_ratio"] <= 1.0 for r in rows)
