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

from neon_jax import nets, train

NARROW = nets.NetDims(d_max=13, k_max=3, max_hidden=3, w_max=16)
WIDE = nets.NetDims(d_max=16, k_max=5, max_hidden=5, w_max=96)
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


def test_initialisation_and_outputs_do_not_depend_on_the_padding():
    (vn, an), (vw, aw) = _population(NARROW), _population(WIDE)
    x = jnp.asarray(load_wine().data[:40] / 100.0, jnp.float32)
    for i in range(len(SPECS)):
        one = lambda t: jax.tree_util.tree_map(lambda a: a[i], t)  # noqa: E731
        _assert_same_network(_real(one(vn), one(an), NARROW), _real(one(vw), one(aw), WIDE), atol=0)
        ln = nets.make_model(NARROW).apply(one(vn), x, one(an))
        lw = nets.make_model(WIDE).apply(one(vw), jnp.pad(x, ((0, 0), (0, 3))), one(aw))
        np.testing.assert_allclose(ln, lw[:, :3], atol=1e-5)
    # repad grows every size and leaves the real network as it is
    grown, grown_arch = nets.repad(vn, an, NARROW, WIDE)
    for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves(grown), jax.tree_util.tree_leaves(vw)):
        assert leaf_a.shape == leaf_b.shape
    np.testing.assert_array_equal(grown_arch.mask, aw.mask)
    with pytest.raises(ValueError, match="cannot shrink .*w_max 96 -> 16"):
        nets.repad(vw, aw, WIDE, NARROW)


def _wine_data(dims):
    data = load_wine()
    x = (data.data - data.data.min(0)) / np.ptp(data.data, 0)
    return train.stack_data([(x.astype(np.float32), data.target)], dims.d_max)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_training_trajectory_does_not_depend_on_the_padding(chunk_size):
    """Base training (dropout, batch-norm, Adam) at the narrow bucket and at a wider, deeper shape: the same
    trajectory, network by network."""
    out = {}
    for dims in (NARROW, WIDE):
        variables, archs = _population(dims)
        trainer = train.make_trainer(nets.make_model(dims))
        opt = trainer.init_opt_state(variables)
        variables, _, loss = trainer.train(jax.random.PRNGKey(5), variables, opt, archs, jnp.zeros(3, jnp.int32),
                                           _wine_data(dims), epochs=3, batch_size=32, chunk_size=chunk_size)
        out[dims] = variables, archs, np.asarray(loss)
    np.testing.assert_allclose(out[NARROW][2], out[WIDE][2], rtol=1e-4)
    for i in range(len(SPECS)):
        one = lambda t: jax.tree_util.tree_map(lambda a: a[i], t)  # noqa: E731
        _assert_same_network(_real(*one(out[NARROW][:2]), NARROW), _real(*one(out[WIDE][:2]), WIDE), atol=2e-4)


@pytest.mark.parametrize("how", ["reinit", "keep_best"])
def test_cut_and_finetune_do_not_depend_on_the_padding(how):
    """A cut of hidden layer 0 (fresh weights for the rebuilt Linears with `reinit`) and the early-stopping
    fine-tune that follows, at two padded shapes."""
    out = {}
    for dims in (NARROW, WIDE):
        model = nets.make_model(dims)
        variables, archs = _population(dims)
        cut = jax.vmap(lambda k, v, a, w: nets.cut(k, model, v, a, 0, w, how))
        keys = jax.random.split(jax.random.PRNGKey(9), 3)
        variables, archs = cut(keys, variables, archs, jnp.asarray([6, 10, 4]))
        trainable = jax.vmap(lambda a: nets.trainable_rows(0, a, dims.max_hidden))(archs)
        trainer = train.make_trainer(model)
        variables, info = trainer.finetune(jax.random.PRNGKey(11), variables, archs, jnp.zeros(3, jnp.int32),
                                           _wine_data(dims), trainable, max_epochs=4, batch_size=32, patience=2)
        out[dims] = variables, archs, np.asarray(info["epochs"])
    np.testing.assert_array_equal(out[NARROW][2], out[WIDE][2])
    for i in range(len(SPECS)):
        one = lambda t: jax.tree_util.tree_map(lambda a: a[i], t)  # noqa: E731
        np.testing.assert_array_equal(one(out[NARROW][1]).widths[:3], one(out[WIDE][1]).widths[:3])
        _assert_same_network(_real(*one(out[NARROW][:2]), NARROW), _real(*one(out[WIDE][:2]), WIDE), atol=2e-4)


def test_a_mixed_width_population_trains_each_network_as_it_would_alone():
    """The population (padded to its widest network) against each network trained alone at its own bucket, with
    its own keys (`train.network_keys`)."""
    variables, archs = _population(WIDE)
    keys = jax.random.split(jax.random.PRNGKey(21), len(SPECS))
    trainer = train.make_trainer(nets.make_model(WIDE))
    together, _, _ = trainer.train(keys, variables, trainer.init_opt_state(variables), archs,
                                   jnp.zeros(3, jnp.int32), _wine_data(WIDE), epochs=2, batch_size=32)
    for i, (widths, act, pre) in enumerate(SPECS):
        dims = nets.NetDims.for_widths(max(widths), 13, 3, max_hidden=len(widths))
        arch = jax.tree_util.tree_map(lambda a: a[None], nets.make_arch(widths, act, pre, 13, 3, dims))
        init_key = jax.random.split(jax.random.PRNGKey(3), len(SPECS))[i]  # `_population`'s key of network i
        alone = jax.vmap(lambda k, a: nets.init_network(k, nets.make_model(dims), a))(init_key[None], arch)
        solo = train.make_trainer(nets.make_model(dims))
        alone, _, _ = solo.train(keys[i][None], alone, solo.init_opt_state(alone), arch, jnp.zeros(1, jnp.int32),
                                 _wine_data(dims), epochs=2, batch_size=32)
        one = lambda t, j: jax.tree_util.tree_map(lambda a: a[j], t)  # noqa: E731
        _assert_same_network(_real(one(together, i), one(archs, i), WIDE), _real(one(alone, 0), one(arch, 0), dims),
                             atol=2e-4)
    with pytest.raises(ValueError, match="2 keys for a population of 3"):
        train.network_keys(keys[:2], 3)
