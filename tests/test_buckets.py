"""Width buckets: the padded shape of a program follows its networks, and padding changes no number.

A network initialised, trained, cut and fine-tuned at its own bucket or at a wider (and deeper) padded shape holds
the same real weights and gives the same outputs, up to float rounding (matmuls of another size may sum in
another order).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_wine

from neon_jax import fit, nets

NARROW = nets.NetDims(d_max=13, k_max=3, max_hidden=3, w_max=16)
WIDE = nets.NetDims(d_max=16, k_max=5, max_hidden=5, w_max=96)
# each hidden layer padded to its own width: the first wide, the later ones narrower than w_max; position 2 holds
# the 7 and 5 neurons the shallower networks pass on past their depth
LAYERED = nets.NetDims(d_max=16, k_max=5, max_hidden=5, w_max=96, layer_widths=(96, 16, 8, 8, 8))
SPECS = [  # (widths, activation, pre_layer): dropout, batch-norm, tanh and a non-prefix keep in the mix
    ([12, 5], ["relu", "tanh"], ["dropout", "batchnorm"]),
    ([16, 9, 3], ["relu", "relu", "sigmoid"], ["batchnorm", "dropout", "none"]),
    ([7], ["relu"], ["dropout"]),
]


def test_bucket_ladder():
    assert [nets.bucket_width(w) for w in (1, 8, 9, 16, 17, 64, 65, 100, 256, 257, 300, 1000, 1025)] == \
        [8, 8, 16, 16, 32, 64, 96, 128, 256, 384, 384, 1024, 2048]
    assert len({nets.bucket_width(w) for w in range(1, 1025)}) == 16
    dims = nets.NetDims.for_widths(300, 30, 4, max_hidden=3)
    assert (dims.w_max, dims.max_hidden) == (384, 3)
    with pytest.raises(ValueError, match="at least one neuron"):
        nets.bucket_width(0)


def _real(variables, arch, dims):
    """The real network (a DenseNetwork's layer arrays) of one padded network."""
    net = nets.compact(variables, arch, dims)
    return [{k: v for k, v in layer.items() if isinstance(v, np.ndarray)} for layer in net.layers]


def _assert_same_network(a, b, atol):
    assert len(a) == len(b)
    for la, lb in zip(a, b):
        assert la.keys() == lb.keys()
        for k in la:
            np.testing.assert_allclose(la[k], lb[k], atol=atol, rtol=0)


def _population(dims):
    archs = [nets.make_arch(w, a, p, 13, 3, dims) for w, a, p in SPECS]
    archs = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *archs)
    variables = jax.jit(nets.init_population, static_argnums=1)(jax.random.PRNGKey(3), nets.make_model(dims), archs)
    return variables, archs


def test_layer_buckets_hold_what_each_network_passes_on():
    archs = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[nets.make_arch(w, a, p, 13, 3, WIDE)
                                                               for w, a, p in SPECS])
    np.testing.assert_array_equal(nets.carried_widths(archs), [[12, 5, 5, 5, 5], [16, 9, 3, 3, 3], [7, 7, 7, 7, 7]])
    assert nets.layer_buckets(archs) == (16, 16, 8, 8, 8)
    exact = nets.with_layer_widths(nets.NetDims(13, 3, 3, 96), archs)
    assert (exact.w_max, exact.layer_widths) == (16, (16, 16, 8))
    assert nets.NetDims(13, 3, 2, 16, layer_widths=[16, 16]).layer_widths is None  # one spelling per shape
    with pytest.raises(ValueError, match="must give each of the 3 hidden layers"):
        nets.NetDims(13, 3, 3, 16, layer_widths=(16, 8))
    assert nets.common_dims([exact, LAYERED]) == nets.NetDims(16, 5, 5, 96, layer_widths=(96, 16, 8, 8, 8))


@pytest.mark.parametrize("other", [WIDE, LAYERED], ids=["wide", "layered"])
def test_initialisation_and_outputs_do_not_depend_on_the_padding(other):
    (vn, an), (vw, aw) = _population(NARROW), _population(other)
    x = jnp.asarray(load_wine().data[:40] / 100.0, jnp.float32)
    for i in range(len(SPECS)):
        one = lambda t: jax.tree_util.tree_map(lambda a: a[i], t)  # noqa: E731
        _assert_same_network(_real(one(vn), one(an), NARROW), _real(one(vw), one(aw), other), atol=0)
        ln = nets.make_model(NARROW).apply(one(vn), x, one(an))
        lw = nets.make_model(other).apply(one(vw), jnp.pad(x, ((0, 0), (0, 3))), one(aw))
        np.testing.assert_allclose(ln, lw[:, :3], atol=1e-5)
    if other is LAYERED:  # repad between uniform and per-layer shapes, both ways, exactly
        layered, layered_arch = nets.repad(vn, an, NARROW, LAYERED)
        for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves(layered), jax.tree_util.tree_leaves(vw)):
            np.testing.assert_array_equal(leaf_a, leaf_b)
        back, back_arch = nets.repad(vw, aw, LAYERED, NARROW)
        for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves((back, back_arch)), jax.tree_util.tree_leaves((vn, an))):
            np.testing.assert_array_equal(leaf_a, leaf_b)
        with pytest.raises(ValueError, match="hidden layer 1 to width 8 .a network needs 9 there"):
            nets.repad(vn, an, NARROW, nets.NetDims(13, 3, 3, 16, layer_widths=(16, 8, 8)))
        return
    # repad grows every size and leaves the real network as it is
    grown, grown_arch = nets.repad(vn, an, NARROW, WIDE)
    for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves(grown), jax.tree_util.tree_leaves(vw)):
        assert leaf_a.shape == leaf_b.shape
    np.testing.assert_array_equal(grown_arch.mask, aw.mask)
    # and shrinks them back to their own bucket, exactly; a shrink that would cut a real part is refused
    back, back_arch = nets.repad(vw, aw, WIDE, NARROW)
    for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves((back, back_arch)), jax.tree_util.tree_leaves((vn, an))):
        np.testing.assert_array_equal(leaf_a, leaf_b)
    with pytest.raises(ValueError, match="cannot shrink w_max 96 -> 8 .alive neurons"):
        nets.repad(vw, aw, WIDE, nets.NetDims(NARROW.d_max, NARROW.k_max, NARROW.max_hidden, 8))
    with pytest.raises(ValueError, match="cannot shrink max_hidden 5 -> 1 .a network has 3 hidden layers"):
        nets.repad(vw, aw, WIDE, nets.NetDims(NARROW.d_max, NARROW.k_max, 1, NARROW.w_max))


def _wine_data(dims):
    data = load_wine()
    x = (data.data - data.data.min(0)) / np.ptp(data.data, 0)
    return fit.stack_data([(x.astype(np.float32), data.target)], dims.d_max)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_training_trajectory_does_not_depend_on_the_padding(chunk_size):
    """Base training (dropout, batch-norm, Adam) at the narrow bucket and at a wider, deeper shape, uniform or
    layer by layer: the same trajectory, network by network."""
    out = {}
    for dims in (NARROW, WIDE, LAYERED):
        variables, archs = _population(dims)
        trainer = fit.make_trainer(nets.make_model(dims))
        opt = trainer.init_opt_state(variables)
        variables, _, loss = trainer.train(jax.random.PRNGKey(5), variables, opt, archs, jnp.zeros(3, jnp.int32),
                                           _wine_data(dims), epochs=3, batch_size=32, chunk_size=chunk_size)
        out[dims] = variables, archs, np.asarray(loss)
    for other in (WIDE, LAYERED):
        np.testing.assert_allclose(out[NARROW][2], out[other][2], rtol=1e-4)
        for i in range(len(SPECS)):
            one = lambda t: jax.tree_util.tree_map(lambda a: a[i], t)  # noqa: E731
            _assert_same_network(_real(*one(out[NARROW][:2]), NARROW), _real(*one(out[other][:2]), other),
                                 atol=2e-4)


@pytest.mark.parametrize("how", ["reinit", "keep_best"])
def test_cut_and_finetune_do_not_depend_on_the_padding(how):
    """A cut of hidden layer 0 (fresh weights for the rebuilt Linears with `reinit`) and the early-stopping
    fine-tune that follows, at two padded shapes."""
    out = {}
    for dims in (NARROW, WIDE, LAYERED):
        model = nets.make_model(dims)
        variables, archs = _population(dims)
        cut = jax.vmap(lambda k, v, a, w: nets.cut(k, model, v, a, 0, w, how))
        keys = jax.random.split(jax.random.PRNGKey(9), 3)
        variables, archs = cut(keys, variables, archs, jnp.asarray([6, 10, 4]))
        trainable = jax.vmap(lambda a: nets.trainable_rows(0, a, dims.max_hidden))(archs)
        trainer = fit.make_trainer(model)
        variables, info = trainer.finetune(jax.random.PRNGKey(11), variables, archs, jnp.zeros(3, jnp.int32),
                                           _wine_data(dims), trainable, max_epochs=4, batch_size=32, patience=2)
        out[dims] = variables, archs, np.asarray(info["epochs"])
    for other in (WIDE, LAYERED):
        np.testing.assert_array_equal(out[NARROW][2], out[other][2])
        for i in range(len(SPECS)):
            one = lambda t: jax.tree_util.tree_map(lambda a: a[i], t)  # noqa: E731
            np.testing.assert_array_equal(one(out[NARROW][1]).widths[:3], one(out[other][1]).widths[:3])
            _assert_same_network(_real(*one(out[NARROW][:2]), NARROW), _real(*one(out[other][:2]), other),
                                 atol=2e-4)


def test_a_mixed_width_population_trains_each_network_as_it_would_alone():
    """The population (padded to its widest network) against each network trained alone at its own bucket, with
    its own keys (`fit.network_keys`)."""
    variables, archs = _population(WIDE)
    keys = jax.random.split(jax.random.PRNGKey(21), len(SPECS))
    trainer = fit.make_trainer(nets.make_model(WIDE))
    together, _, _ = trainer.train(keys, variables, trainer.init_opt_state(variables), archs,
                                   jnp.zeros(3, jnp.int32), _wine_data(WIDE), epochs=2, batch_size=32)
    for i, (widths, act, pre) in enumerate(SPECS):
        dims = nets.NetDims.for_widths(max(widths), 13, 3, max_hidden=len(widths))
        arch = jax.tree_util.tree_map(lambda a: a[None], nets.make_arch(widths, act, pre, 13, 3, dims))
        init_key = jax.random.split(jax.random.PRNGKey(3), len(SPECS))[i]  # `_population`'s key of network i
        alone = jax.vmap(lambda k, a: nets.init_network(k, nets.make_model(dims), a))(init_key[None], arch)
        solo = fit.make_trainer(nets.make_model(dims))
        alone, _, _ = solo.train(keys[i][None], alone, solo.init_opt_state(alone), arch, jnp.zeros(1, jnp.int32),
                                 _wine_data(dims), epochs=2, batch_size=32)
        one = lambda t, j: jax.tree_util.tree_map(lambda a: a[j], t)  # noqa: E731
        _assert_same_network(_real(one(together, i), one(archs, i), WIDE), _real(one(alone, 0), one(arch, 0), dims),
                             atol=2e-4)
    with pytest.raises(ValueError, match="2 keys for a population of 3"):
        fit.network_keys(keys[:2], 3)


@pytest.fixture(scope="module")
def mixed_pool():
    """A tiny-preset zoo of iris networks whose widest layers fall in both of its buckets (8 and 16)."""
    from neon_jax import zoo as zoo_lib
    from neon_jax.pool import EnvPool
    from neon_jax.presets import PRESETS

    tiny = PRESETS["tiny"]
    prepared = zoo_lib.prepare_data("iris", tiny, seed=0)
    zoo = zoo_lib.build_zoo(prepared, tiny, n=7, n_heldout=1, seed=2, epochs=3)
    return EnvPool.from_zoos([(zoo, prepared)], "all", 5.0, tiny), tiny


def test_a_run_over_width_buckets_gives_each_network_the_rows_of_one_padded_program(mixed_pool):
    """runner.run: each width bucket of a pool at its own shape (narrower, shallower) gives the rows of the whole
    pool at its padded shape, whatever the batch size (every network has its own key); one program per group."""
    from neon_jax import pruning

    pool, tiny = mixed_pool
    groups = nets.shape_groups(pool.archs, pool.dims, 2)
    assert len(groups) == 2 and sorted(np.concatenate([g for g, _ in groups]).tolist()) == list(range(len(pool)))
    for members, dims in groups:
        widest = nets.widest_layers(pool.subset(members).archs)
        assert dims.w_max == nets.bucket_width(widest.max()) and dims.w_max < pool.dims.w_max or dims == groups[-1][1]
        assert dims.max_hidden == int(np.asarray(pool.archs.depth)[members].max())
    assert nets.shape_groups(pool.archs, pool.dims, len(pool))[0][1].w_max == pool.dims.w_max  # small buckets join wider ones

    def rows(**kw):
        result = pruning.run_baseline("random", pool, tiny, passes=2, seed=5, **kw)
        return result, {(r["dataset"], r["network"]): r for r in result.rows}

    bucketed, by_bucket = rows(batch_size=2)
    padded, one_program = rows(batch_size=3, buckets=False)
    _, one_by_one = rows(batch_size=1)
    assert bucketed.compiles == 2 and padded.compiles == 1
    assert [(g["w_max"], g["networks"]) for g in bucketed.groups] == [(d.w_max, len(m)) for m, d in groups]
    for name, r in by_bucket.items():
        for other in (one_program[name], one_by_one[name]):
            for field in ("widths_after", "params_after", "actions", "steps", "finetune_epochs"):
                assert r[field] == other[field], (name, field)
            for field in ("test_acc_after", "val_acc"):
                assert r[field] == pytest.approx(other[field], abs=1e-5), (name, field)
            assert r["return"] == pytest.approx(other["return"], rel=1e-6, abs=1e-3), name  # cubes of ~30: float32


def test_a_pool_moves_to_a_bucket_and_back_unchanged(mixed_pool):

    pool, _ = mixed_pool
    members, dims = nets.shape_groups(pool.archs, pool.dims, 2)[0]
    small = pool.subset(members).repadded(dims)
    assert small.dims == dims and np.asarray(small.archs.mask).shape[-2:] == (dims.max_hidden, dims.w_max)
    back = small.repadded(pool.dims)
    for a, b in zip(jax.tree_util.tree_leaves((back.variables, back.archs)),
                    jax.tree_util.tree_leaves((pool.subset(members).variables, pool.subset(members).archs))):
        assert a.shape == b.shape
    with pytest.raises(ValueError, match="only max_hidden and w_max"):
        pool.repadded(nets.NetDims(pool.dims.d_max + 1, pool.dims.k_max, pool.dims.max_hidden, pool.dims.w_max))


def test_agent_training_over_buckets_serves_each_bucket_at_its_shape_in_turn(mixed_pool, tmp_path):
    """train_agent(buckets=True): every iteration's batch comes from one width bucket, the buckets take turns in
    proportion to their networks (`bucket_schedule`), and the run records its groups."""
    import csv
    import json

    from neon_jax import agent as agent_lib
    from neon_jax import learn
    from neon_jax.env import EnvConfig

    schedule = [learn.bucket_schedule([3, 1], k) for k in range(8)]
    assert [g for g, _ in schedule] == [0, 0, 1, 0, 0, 0, 1, 0]
    assert [s for g, s in schedule if g == 0] == list(range(6)) and learn.bucket_schedule([5], 9) == (0, 9)
    pool, tiny = mixed_pool
    groups = nets.shape_groups(pool.archs, pool.dims, 2)
    _, state = learn.train_agent(pool, tiny, EnvConfig(passes=1), agent_lib.AgentConfig(batch_size=2), tmp_path,
                                 episodes=8, progress=False, buckets=True)
    assert int(state.episodes) == 8
    with open(tmp_path / "log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    group_of = {pool.names[i]: g for g, (members, _) in enumerate(groups) for i in members}
    for k in range(4):
        served = {group_of[(r["dataset"], int(r["network"]))] for r in log[2 * k: 2 * k + 2]}
        assert served == {learn.bucket_schedule([len(m) for m, _ in groups], k)[0]}
    settings = json.loads((tmp_path / "run.json").read_text())
    assert settings["buckets"] == [[d.w_max, d.max_hidden, len(m)] for m, d in groups]


def test_training_groups_by_bucket_or_by_own_shape():
    archs = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[nets.make_arch(w, a, p, 13, 3, WIDE)
                                                               for w, a, p in SPECS + [([16, 9, 2], SPECS[1][1],
                                                                                         SPECS[1][2])]])
    by_bucket = nets.training_groups(archs, WIDE)
    assert [(g.tolist(), d.w_max, d.max_hidden, d.layer_widths) for g, d in by_bucket] == \
        [([2], 8, 5, None), ([0, 1, 3], 16, 5, (16, 16, 8, 8, 8))]
    shallow = nets.fit_arch(archs, nets.NetDims(13, 3, 3, 16))  # rows past every depth cut, columns narrowed
    assert shallow.mask.shape[-2:] == (3, 16) and (np.asarray(nets.fit_arch(shallow, WIDE).mask) ==
                                                    np.asarray(archs.mask)).all()
    with pytest.raises(ValueError, match="cannot cut the architectures to 2 hidden layers"):
        nets.fit_arch(archs, nets.NetDims(13, 3, 2, 16))
    own = nets.training_groups(archs, WIDE, own_shapes=True)
    assert [(g.tolist(), d.max_hidden, d.width(0), d.layer_widths) for g, d in own] == \
        [([2], 1, 8, None), ([0], 2, 16, (16, 8)), ([1, 3], 3, 16, (16, 16, 8))]


def test_a_zoo_trained_network_by_network_at_its_own_shape_is_the_zoo_trained_by_width_bucket(monkeypatch):
    """At paper widths on a CPU `zoo.build_zoo` trains each network at its own shape (depth, per-layer buckets);
    the networks are those of the width-bucket path."""
    import dataclasses

    from neon_jax import sharding
    from neon_jax import zoo as zoo_lib
    from neon_jax.presets import PRESETS

    preset = dataclasses.replace(PRESETS["tiny"], name="tiny_wide", widths=(5, 140), max_hidden=3, train_epochs=2)
    prepared = zoo_lib.prepare_data("iris", preset, seed=0)
    own = zoo_lib.build_zoo(prepared, preset, n=4, n_heldout=1, seed=3)
    with monkeypatch.context() as m:
        m.setattr(sharding, "default_chunk_size", lambda w_max=None: 4)  # the width-bucket path
        bucketed = zoo_lib.build_zoo(prepared, preset, n=4, n_heldout=1, seed=3)
    assert own.dims == bucketed.dims and own.dims.w_max == 160
    assert all("-" in k or int(k) < sharding.WIDE_ON_CPU for k in own.meta["buckets"]) and \
        own.meta["train_programs"] > bucketed.meta["train_programs"]
    np.testing.assert_array_equal(own.archs.mask, bucketed.archs.mask)
    np.testing.assert_allclose(own.test_accuracy, bucketed.test_accuracy, atol=1e-6)
    for i in range(4):
        one = lambda t: jax.tree_util.tree_map(lambda a: a[i], t)  # noqa: E731
        _assert_same_network(_real(one(own.variables), one(own.archs), own.dims),
                             _real(one(bucketed.variables), one(bucketed.archs), bucketed.dims),
                             atol=1e-3)  # Adam turns rounding-level gradients of another matmul size into lr-sized steps


def test_a_run_with_every_network_at_its_own_shape_gives_the_rows_of_one_padded_program(mixed_pool, monkeypatch):
    """runner.run at paper widths on a CPU (`sharding.own_shapes`) runs each network at its own depth and per-layer
    buckets, one program per distinct shape: the rows of the whole pool at its padded shape."""
    from neon_jax import pruning, sharding

    pool, tiny = mixed_pool
    padded = pruning.run_baseline("random", pool, tiny, passes=2, seed=5, batch_size=3, buckets=False)
    monkeypatch.setattr(sharding, "own_shapes", lambda w_max: True)
    own = pruning.run_baseline("random", pool, tiny, passes=2, seed=5, batch_size=2)
    shapes = nets.training_groups(pool.archs, pool.dims, own_shapes=True)
    assert own.compiles == len(shapes) > 2
    assert [(g["w_max"], g["max_hidden"], g["networks"]) for g in own.groups] == \
        [(d.w_max, d.max_hidden, len(m)) for m, d in shapes]
    by_name = {(r["dataset"], r["network"]): r for r in padded.rows}
    for r in own.rows:
        other = by_name[(r["dataset"], r["network"])]
        for field in ("widths_after", "params_after", "actions", "steps", "finetune_epochs"):
            assert r[field] == other[field], field
        for field in ("test_acc_after", "val_acc"):
            assert r[field] == pytest.approx(other[field], abs=1e-5), field
