"""Population training, fine-tuning and evaluation (neon_jax.train).

Every call below goes through ONE trainer (preset tiny, d_max 30 = breast_cancer's features, k_max 3 = wine's
classes) with the same population size, the same padded data shape (2 datasets x 398 rows) and the same static
schedule, so `train`, `finetune` and `evaluate` compile once each for the whole module (XLA compiles of the
train/fine-tune programs dominate this file's run time).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from neon_jax import fit, nets
from neon_jax.presets import PRESETS

TINY = PRESETS["tiny"]
P = 8  # networks per population (every population of this module)
D_MAX, K_MAX = 30, 3  # breast_cancer has 30 features, wine 3 classes
N_MAX = 398  # breast_cancer's 70% train split; every stack of this module is padded to it
BATCH = 32
EPOCHS_PER_CALL = 5  # the static `epochs` of every `train` call (longer schedules run in chunks, as build_zoo does)
FT = dict(max_epochs=6, batch_size=BATCH, patience=2)  # the static schedule of every `finetune` call
WINE_F, WINE_K = 13, 3
BC_F, BC_K = 30, 2


# Jitted: an eager vmapped flax init (or architecture sampler) compiles every primitive on its own, which costs
# more than one compile of the whole program.
_init_population = jax.jit(nets.init_population, static_argnums=1)


def _take(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _leaves(tree):
    """{"params/layer0_kernel": array, ...} host copies of a variables pytree."""
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf) for path, leaf in flat}


def _stack_archs(archs):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *archs)


def _trainable(linear, batchnorm):
    """A population `Trainable` (leading axis P) from per-network bool lists."""
    return fit.Trainable(linear=jnp.asarray(linear, bool), batchnorm=jnp.asarray(batchnorm, bool))


def _np_double_softmax_nll(logits, y):
    """Mean NLL of CrossEntropy applied to softmax outputs (the original's loss), in float64 NumPy."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    lp = p - np.log(np.exp(p).sum(1, keepdims=True))
    return float(-lp[np.arange(len(y)), y].mean())


@pytest.fixture(scope="module")
def setup(wine_splits):
    x_w, y_w, xt_w, yt_w = wine_splits
    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    x_b, xt_b, y_b, yt_b = train_test_split(x, y.astype(np.int32), test_size=0.3, random_state=0)
    assert len(x_b) == N_MAX and x_b.shape[1] == D_MAX

    dims = nets.NetDims.for_preset(TINY, D_MAX, K_MAX)
    model = nets.make_model(dims, TINY)
    trainer = fit.make_trainer(model, TINY.learning_rate)

    # Random architectures as the zoo draws them: networks 0-3 on wine, 4-7 on breast_cancer.
    n_features = jnp.asarray([WINE_F] * 4 + [BC_F] * 4, jnp.int32)
    n_classes = jnp.asarray([WINE_K] * 4 + [BC_K] * 4, jnp.int32)
    sampled = jax.jit(jax.vmap(lambda k, f, c: nets.sample_arch(k, TINY, dims, f, c)))(
        jax.random.split(jax.random.PRNGKey(0), P), n_features, n_classes)
    mixed_index = jnp.asarray([0] * 4 + [1] * 4, jnp.int32)

    # Hand-made wine architectures with batch-norm and dropout in known places (for the freezing checks).
    layered = _stack_archs([
        nets.make_arch(widths, acts, pres, WINE_F, WINE_K, dims) for widths, acts, pres in (
            ([8, 12, 6], ["relu", "tanh", "relu"], ["batchnorm", "batchnorm", "batchnorm"]),
            ([16, 4, 8], ["relu", "relu", "sigmoid"], ["none", "batchnorm", "dropout"]),
            ([12, 12], ["relu", "relu"], ["batchnorm", "dropout"]),
            ([4, 16, 16], ["tanh", "relu", "relu"], ["dropout", "none", "batchnorm"]),
            ([16, 8, 4], ["relu", "relu", "relu"], ["batchnorm", "none", "none"]),
            ([8, 8], ["sigmoid", "relu"], ["none", "batchnorm"]),
            ([12, 4, 12], ["relu", "tanh", "relu"], ["batchnorm", "dropout", "batchnorm"]),
            ([16], ["relu"], ["batchnorm"]),
        )
    ])
    # Deterministic wine architectures: no dropout, no batch-norm (train mode == eval mode).
    plain = _stack_archs([
        nets.make_arch(w, ["relu"] * len(w), ["none"] * len(w), WINE_F, WINE_K, dims)
        for w in ([8], [16, 8], [12, 12, 4], [4], [16], [8, 16], [12, 8, 16], [4, 4])
    ])

    train_data = fit.stack_data([(x_w, y_w), (x_b, y_b)], D_MAX, N_MAX)
    test_data = fit.stack_data([(xt_w, yt_w), (xt_b, yt_b)], D_MAX, N_MAX)
    return dict(
        dims=dims, model=model, trainer=trainer, sampled=sampled, mixed_index=mixed_index, layered=layered,
        plain=plain, train_data=train_data, test_data=test_data, wine=(x_w, y_w, xt_w, yt_w),
        bc=(x_b, y_b, xt_b, yt_b),
    )


@pytest.fixture(scope="module")
def trained(setup):
    """The sampled 2-dataset population trained for 80 epochs (16 calls of the same compiled program)."""
    s = setup
    trainer = s["trainer"]
    variables = _init_population(jax.random.PRNGKey(1), s["model"], s["sampled"])
    opt_state = trainer.init_opt_state(variables)
    key = jax.random.PRNGKey(2)
    losses = []
    for _ in range(16):
        key, k = jax.random.split(key)
        variables, opt_state, loss = trainer.train(k, variables, opt_state, s["sampled"], s["mixed_index"],
                                                   s["train_data"], epochs=EPOCHS_PER_CALL, batch_size=BATCH)
        losses.append(np.asarray(loss))
    return variables, opt_state, np.concatenate(losses, axis=1)


# ---------------------------------------------------------------------------------------------------------------
# Base training


def test_population_on_two_datasets_learns(setup, trained):
    s = setup
    variables, _, losses = trained
    assert losses.shape == (P, 80) and np.isfinite(losses).all()
    # the mean minibatch loss falls over training for every network
    assert (losses[:, -5:].mean(1) < losses[:, :5].mean(1)).all()
    acc = np.asarray(s["trainer"].evaluate(variables, s["sampled"], s["mixed_index"], s["test_data"]))
    yt_w, yt_b = s["wine"][3], s["bc"][3]
    majority = np.array([np.bincount(yt_w).max() / len(yt_w)] * 4 + [np.bincount(yt_b).max() / len(yt_b)] * 4)
    above = acc > majority + 0.15
    assert above[:4].sum() >= 3, (acc, majority)  # wine networks
    assert above[4:].sum() >= 3, (acc, majority)  # breast_cancer networks
    # each network trained on its own dataset: swapping the datasets ruins the breast_cancer networks
    swapped = np.asarray(s["trainer"].evaluate(variables, s["sampled"], 1 - s["mixed_index"], s["test_data"]))
    assert swapped[4:].mean() < acc[4:].mean() - 0.2


def test_evaluate_matches_numpy_on_the_compacted_networks(setup, trained):
    s = setup
    variables, _, _ = trained
    acc = np.asarray(s["trainer"].evaluate(variables, s["sampled"], s["mixed_index"], s["test_data"]))
    for i in range(P):
        x, y = (s["wine"] if i < 4 else s["bc"])[2:]
        dense = nets.compact(_take(variables, i), _take(s["sampled"], i), s["dims"])
        pred = dense.logits(x).argmax(1)
        # identical up to at most one near-tie row flipping between XLA and NumPy
        assert abs((pred == y).mean() - acc[i]) <= 1.0 / len(y) + 1e-6, i


def test_training_keeps_dead_neurons_at_zero(setup, trained):
    """Dead neurons, padded features and padded classes get no gradient: their weights stay exactly 0."""
    s = setup
    variables, _, _ = trained
    params = jax.device_get(variables["params"])
    archs = jax.device_get(s["sampled"])
    for i in range(P):
        mask = np.asarray(archs.mask[i])
        f, k = int(archs.n_features[i]), int(archs.n_classes[i])
        assert not params["layer0_kernel"][i][f:].any()  # padded input features
        for j in range(TINY.max_hidden):
            dead = mask[j] == 0
            assert not params[f"layer{j}_kernel"][i][:, dead].any()
            assert not params[f"layer{j}_bias"][i][dead].any()
        last = mask[int(archs.depth[i]) - 1]
        assert not params["output_kernel"][i][last == 0].any()
        assert not params["output_kernel"][i][:, k:].any() and not params["output_bias"][i][k:].any()


def test_padded_rows_never_enter_training(setup):
    """Garbage in the padded rows (n unchanged) changes nothing, bit for bit: not the loss, not the batch-norm
    statistics, not the shuffle."""
    s = setup
    trainer = s["trainer"]
    data = s["train_data"]
    rng = np.random.default_rng(0)
    real_rows = np.arange(N_MAX)[None, :] < np.asarray(data.n)[:, None]
    noise_x = rng.normal(size=data.x.shape).astype(np.float32) * 5
    noise_y = rng.integers(0, K_MAX, size=data.y.shape).astype(np.int32)
    garbage = dataclasses.replace(
        data, x=jnp.where(real_rows[..., None], data.x, noise_x), y=jnp.where(real_rows, data.y, noise_y))
    assert not np.array_equal(np.asarray(garbage.x), np.asarray(data.x))
    variables = _init_population(jax.random.PRNGKey(5), s["model"], s["sampled"])
    opt_state = trainer.init_opt_state(variables)
    args = (jax.random.PRNGKey(6), variables, opt_state, s["sampled"], s["mixed_index"])
    v1, _, l1 = trainer.train(*args, data, epochs=EPOCHS_PER_CALL, batch_size=BATCH)
    v2, _, l2 = trainer.train(*args, garbage, epochs=EPOCHS_PER_CALL, batch_size=BATCH)
    np.testing.assert_array_equal(np.asarray(l1), np.asarray(l2))
    for (name, a), b in zip(_leaves(v1).items(), _leaves(v2).values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    acc1 = trainer.evaluate(v1, s["sampled"], s["mixed_index"], data)
    acc2 = trainer.evaluate(v1, s["sampled"], s["mixed_index"], garbage)
    np.testing.assert_array_equal(np.asarray(acc1), np.asarray(acc2))


def test_padded_rows_never_enter_evaluation(setup, trained):
    s = setup
    variables, _, _ = trained
    trainer = s["trainer"]
    x_w, y_w, xt_w, yt_w = s["wine"]
    x_b, y_b, xt_b, yt_b = s["bc"]
    # the test splits at their natural padded length (171 rows) vs padded to 398 rows
    tight = fit.stack_data([(xt_w, yt_w), (xt_b, yt_b)], D_MAX)
    assert tight.x.shape[1] == len(xt_b) < N_MAX
    acc_tight = np.asarray(trainer.evaluate(variables, s["sampled"], s["mixed_index"], tight))
    acc_loose = np.asarray(trainer.evaluate(variables, s["sampled"], s["mixed_index"], s["test_data"]))
    np.testing.assert_allclose(acc_tight, acc_loose, rtol=0, atol=1e-6)
    # the accuracy is over the real rows only: a fraction with denominator n, not n_max
    n = np.where(np.arange(P) < 4, len(yt_w), len(yt_b))
    np.testing.assert_allclose(acc_loose * n, np.round(acc_loose * n), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Batches of one row


def test_batches_of_one_row_are_skipped(setup):
    """33 real rows at batch 32 leave a last batch of one row: skipped (no Adam step), and nothing is NaN."""
    s = setup
    trainer = s["trainer"]
    x_w, y_w = s["wine"][:2]
    odd = fit.stack_data([(x_w[:33], y_w[:33]), (x_w[:34], y_w[:34])], D_MAX, N_MAX)
    index = jnp.asarray([0, 1] * 4, jnp.int32)
    variables = _init_population(jax.random.PRNGKey(7), s["model"], s["layered"])  # batch-norm, dropout
    opt_state = trainer.init_opt_state(variables)
    new, opt_state, losses = trainer.train(jax.random.PRNGKey(8), variables, opt_state, s["layered"], index, odd,
                                           epochs=EPOCHS_PER_CALL, batch_size=BATCH)
    # 33 rows: one real step per epoch; 34 rows: two (the last batch has 2 rows); the 11 empty batches: none
    for group, group_state in opt_state.items():  # one Adam state per parameter group, all counting alike
        steps = np.asarray(optax.tree_utils.tree_get(group_state, "count"))
        np.testing.assert_array_equal(steps, np.where(np.asarray(index) == 0, 1, 2) * EPOCHS_PER_CALL, group)
    assert np.isfinite(np.asarray(losses)).all()
    assert all(np.isfinite(a).all() for a in _leaves(new).values())
    assert np.isfinite(np.asarray(trainer.evaluate(new, s["layered"], index, odd))).all()

    ft, info = trainer.finetune(jax.random.PRNGKey(9), variables, s["layered"], index, odd,
                                jax.vmap(lambda _: fit.Trainable.everything(TINY.max_hidden))(jnp.arange(P)), **FT)
    assert np.isfinite(np.asarray(info["best_loss"])).all()
    assert all(np.isfinite(a).all() for a in _leaves(ft).values())


def test_finetune_on_a_single_row_never_steps(setup):
    """A split with one real row has only a batch of one: no step, no snapshot; the weights come back unchanged."""
    s = setup
    x_w, y_w = s["wine"][:2]
    single = fit.stack_data([(x_w[:1], y_w[:1]), (x_w[:1], y_w[:1])], D_MAX, N_MAX)
    variables = _init_population(jax.random.PRNGKey(10), s["model"], s["layered"])
    everything = jax.vmap(lambda _: fit.Trainable.everything(TINY.max_hidden))(jnp.arange(P))
    out, info = s["trainer"].finetune(jax.random.PRNGKey(11), variables, s["layered"], jnp.zeros(P, jnp.int32),
                                      single, everything, **FT)
    np.testing.assert_array_equal(np.asarray(info["epochs"]), FT["patience"])  # no epoch ever improved
    assert np.isinf(np.asarray(info["best_loss"])).all()
    for (name, a), b in zip(_leaves(variables["params"]).items(), _leaves(out["params"]).values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


# ---------------------------------------------------------------------------------------------------------------
# Fine-tuning

# Per network of the mixed-depth population: which Linears (hidden 0..2, output) and which batch-norms (in front
# of hidden 0..2) may change; one network trains nothing, one trains everything.
MIXED_LINEAR = [[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0],
                [1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]]
MIXED_BATCHNORM = [[0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0],
                   [1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_finetune_changes_only_the_trainable_layers(setup):
    s = setup
    trainer = s["trainer"]
    archs = s["layered"]
    linear, batchnorm = MIXED_LINEAR, MIXED_BATCHNORM
    trainable = _trainable(linear, batchnorm)
    variables = _init_population(jax.random.PRNGKey(12), s["model"], archs)
    out, info = trainer.finetune(jax.random.PRNGKey(13), variables, archs, jnp.zeros(P, jnp.int32),
                                 s["train_data"], trainable, **FT)
    epochs = np.asarray(info["epochs"])
    assert ((epochs >= 1 + FT["patience"]) & (epochs <= FT["max_epochs"])).all(), epochs
    assert np.isfinite(np.asarray(info["best_loss"])[np.asarray(linear).any(1)]).all()

    before, after = _leaves(variables), _leaves(out)
    host_archs = jax.device_get(archs)
    for i in range(P):
        depth = int(host_archs.depth[i])
        pre = np.asarray(host_archs.pre_layer[i])
        for j in range(TINY.max_hidden + 1):
            names = ["params/output_kernel", "params/output_bias"] if j == TINY.max_hidden else \
                [f"params/layer{j}_kernel", f"params/layer{j}_bias"]
            for name in names:
                changed = not np.array_equal(before[name][i], after[name][i])
                used = j == TINY.max_hidden or j < depth
                assert changed == bool(linear[i][j] and used), (i, name, linear[i][j])
        for j in range(TINY.max_hidden):
            for leaf in ("scale", "bias"):
                name = f"params/bn{j}/{leaf}"
                changed = not np.array_equal(before[name][i], after[name][i])
                in_use = j < depth and pre[j] == 2  # PRE_BATCHNORM
                assert changed == bool(batchnorm[i][j] and in_use), (i, name)
    # frozen batch-norms still update their running statistics in train mode, as the original does
    frozen_bn_moved = [not np.array_equal(before["batch_stats/bn0/mean"][i], after["batch_stats/bn0/mean"][i])
                       for i in range(P) if not batchnorm[i][0] and host_archs.pre_layer[i][0] == 2]
    assert frozen_bn_moved and all(frozen_bn_moved)


def test_finetune_stops_after_patience_epochs_without_improvement(setup):
    """Identical rows and nothing trainable: every minibatch loss equals the first, so only epoch 1 improves."""
    s = setup
    x_w, y_w = s["wine"][:2]
    const_x, const_y = np.repeat(x_w[:1], 64, 0), np.repeat(y_w[:1], 64)  # two full batches per epoch
    data = fit.stack_data([(const_x, const_y), (const_x, const_y)], D_MAX, N_MAX)
    variables = _init_population(jax.random.PRNGKey(14), s["model"], s["plain"])
    frozen = _trainable(np.zeros((P, TINY.max_hidden + 1)), np.zeros((P, TINY.max_hidden)))
    out, info = s["trainer"].finetune(jax.random.PRNGKey(15), variables, s["plain"], jnp.zeros(P, jnp.int32),
                                      data, frozen, **FT)
    np.testing.assert_array_equal(np.asarray(info["epochs"]), 1 + FT["patience"])
    assert 1 + FT["patience"] < FT["max_epochs"]  # so this really is an early stop
    for (name, a), b in zip(_leaves(variables["params"]).items(), _leaves(out["params"]).values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    best = np.asarray(info["best_loss"])
    for i in range(P):
        dense = nets.compact(_take(variables, i), _take(s["plain"], i), s["dims"])
        assert best[i] == pytest.approx(_np_double_softmax_nll(dense.logits(const_x[:1]), const_y[:1]), rel=1e-5)


def test_finetune_returns_the_best_snapshot_not_the_last_weights(setup):
    """One full batch per epoch, no dropout or batch-norm: epoch e's minibatch loss is the loss of the weights
    after e-1 Adam steps. The loss falls every epoch, so all `max_epochs` run and the best snapshot is the weights
    after max_epochs - 1 steps (the ones that produced the last, lowest loss), not the final weights."""
    s = setup
    trainer = s["trainer"]
    x_w, y_w = s["wine"][:2]
    data = fit.stack_data([(x_w[:BATCH], y_w[:BATCH]), (x_w[:BATCH], y_w[:BATCH])], D_MAX, N_MAX)
    index = jnp.zeros(P, jnp.int32)
    archs = s["plain"]
    variables = _init_population(jax.random.PRNGKey(16), s["model"], archs)
    everything = jax.vmap(lambda _: fit.Trainable.everything(TINY.max_hidden))(jnp.arange(P))
    out, info = trainer.finetune(jax.random.PRNGKey(17), variables, archs, index, data, everything, **FT)
    assert FT["max_epochs"] == EPOCHS_PER_CALL + 1
    np.testing.assert_array_equal(np.asarray(info["epochs"]), FT["max_epochs"])

    # The same full-batch Adam trajectory through `train`: 5 steps (the best snapshot) and 6 (the final weights).
    opt_state = trainer.init_opt_state(variables)
    after5, _, _ = trainer.train(jax.random.PRNGKey(18), variables, opt_state, archs, index, data,
                                 epochs=EPOCHS_PER_CALL, batch_size=BATCH)

    def loss(v, i):
        dense = nets.compact(_take(v, i), _take(archs, i), s["dims"])
        return _np_double_softmax_nll(dense.logits(x_w[:BATCH]), y_w[:BATCH])

    best = np.asarray(info["best_loss"])
    for i in range(P):
        l0, l_out, l5 = loss(variables, i), loss(out, i), loss(after5, i)
        assert best[i] == pytest.approx(l_out, rel=1e-5, abs=1e-6), i  # the returned weights produced best_loss
        assert l_out == pytest.approx(l5, rel=1e-5, abs=1e-6), i  # ... and they are the weights after 5 steps
        assert l_out < l0
    for (name, a), b in zip(_leaves(after5["params"]).items(), _leaves(out["params"]).values()):
        # one Adam step moves every weight by ~1e-3; summation order alone moves them by ~1e-8
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("slots", [3, 8])
def test_finetune_packed_equals_vmapped_finetune(setup, slots):
    """The slot-scheduled fine-tune gives vmap(fit.finetune)'s results: networks of mixed depths and trainable
    sets (one with nothing trainable), two inactive, 3 slots (8 networks do not divide into 3) and one slot per
    network. Epochs and losses exactly; weights up to the summation order of a differently batched matmul."""
    s = setup
    trainer = s["trainer"]
    archs = s["layered"]
    linear, batchnorm = MIXED_LINEAR, MIXED_BATCHNORM
    trainable = _trainable(linear, batchnorm)
    variables = _init_population(jax.random.PRNGKey(30), s["model"], archs)
    index = jnp.asarray([0, 1] * 4, jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(31), P)
    active = jnp.asarray([1, 1, 0, 1, 1, 1, 0, 1], bool)

    @jax.jit
    def reference(keys, variables):
        return jax.vmap(lambda k, v, a, i, t, on: fit.finetune(
            trainer.learner, k, v, a, s["train_data"], t, **FT, index=i, active=on))(
            keys, variables, archs, index, trainable, active)

    packed = jax.jit(lambda keys, variables: fit.finetune_packed(
        trainer.learner, keys, variables, archs, index, s["train_data"], trainable, FT["max_epochs"], FT["batch_size"],
        FT["patience"], active=active, slots=slots))
    want, want_info = reference(keys, variables)
    got, got_info = packed(keys, variables)
    np.testing.assert_array_equal(np.asarray(got_info["epochs"]), np.asarray(want_info["epochs"]))
    assert (np.asarray(got_info["epochs"])[~np.asarray(active)] == 0).all()
    np.testing.assert_allclose(np.asarray(got_info["best_loss"]), np.asarray(want_info["best_loss"]), rtol=1e-5)
    # weights at test_env's tolerance: batched matmuls of another size reduce in another order, and Adam's
    # g / sqrt(v) magnifies last-bit differences on near-zero gradients over a few dozen steps
    for (name, a), b in zip(_leaves(want).items(), _leaves(got).values()):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-3, err_msg=name)
    # inactive networks come back untouched
    for (name, a), b in zip(_leaves(variables).items(), _leaves(got).values()):
        for i in np.flatnonzero(~np.asarray(active)):
            np.testing.assert_array_equal(b[i], a[i], err_msg=name)


def test_depth_bound_skips_layers_with_the_same_numbers(setup):
    """Training in depth-sorted chunks (each chunk skips the hidden layers above its deepest network: a
    `nets.Hints` depth bound, and no Adam step for those layers) changes no number: training losses, weights,
    batch-norm statistics and Adam moments match one vmap over the whole population."""
    s = setup
    trainer = s["trainer"]
    archs = s["plain"]  # depths 1..3
    variables = _init_population(jax.random.PRNGKey(32), s["model"], archs)
    opt_state = trainer.init_opt_state(variables)
    index = jnp.zeros(P, jnp.int32)
    run = lambda chunk: trainer.train(jax.random.PRNGKey(33), variables, opt_state, archs, index,  # noqa: E731
                                      s["train_data"], epochs=2, batch_size=BATCH, chunk_size=chunk)
    want = run(None)
    for chunk in (1, 2, 3):  # 1: what "auto" picks on a CPU at paper widths
        got = run(chunk)
        for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Compile once per shape


def test_no_retracing_across_architectures_and_variables(setup, trained):
    s = setup
    trainer = s["trainer"]
    variables, opt_state, _ = trained  # outputs of earlier calls go back in, as in a chunked schedule
    other = _init_population(jax.random.PRNGKey(20), s["model"], s["layered"])
    index = jnp.asarray([0, 1] * 4, jnp.int32)
    trainable = _trainable(np.ones((P, TINY.max_hidden + 1)), np.zeros((P, TINY.max_hidden)))

    calls = {
        "train": [
            lambda: trainer.train(jax.random.PRNGKey(21), variables, opt_state, s["sampled"], s["mixed_index"],
                                  s["train_data"], epochs=EPOCHS_PER_CALL, batch_size=BATCH),
            lambda: trainer.train(jax.random.PRNGKey(22), other, trainer.init_opt_state(other), s["layered"],
                                  index, s["test_data"], epochs=EPOCHS_PER_CALL, batch_size=BATCH),
        ],
        "finetune": [
            lambda: trainer.finetune(jax.random.PRNGKey(23), variables, s["sampled"], s["mixed_index"],
                                     s["train_data"], trainable, **FT),
            lambda: trainer.finetune(jax.random.PRNGKey(24), other, s["layered"], index, s["test_data"],
                                     jax.vmap(lambda _: fit.Trainable.everything(TINY.max_hidden))(jnp.arange(P)),
                                     **FT),
        ],
        "evaluate": [
            lambda: trainer.evaluate(variables, s["sampled"], s["mixed_index"], s["test_data"]),
            lambda: trainer.evaluate(other, s["layered"], index, s["train_data"]),
        ],
    }
    for name, (first, second) in calls.items():
        fn = getattr(trainer, name)
        jax.block_until_ready(first())
        size = fn._cache_size()
        assert size >= 1
        jax.block_until_ready(second())
        assert fn._cache_size() == size, f"{name} retraced for new architectures / variables of the same shapes"


# ---------------------------------------------------------------------------------------------------------------
# Loss


def test_log_probs_double_softmax_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
    n_classes = 3
    padded = np.where(np.arange(5) < n_classes, logits, nets.NEG_LOGIT).astype(np.float32)  # as the network emits

    got = np.asarray(fit.log_probs(jnp.asarray(padded), jnp.int32(n_classes), double_softmax=True))
    z = logits[:, :n_classes].astype(np.float64)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)  # the network's Softmax over the real classes
    expected = p - np.log(np.exp(p).sum(1, keepdims=True))  # CrossEntropyLoss's log-softmax of those probabilities
    np.testing.assert_allclose(got[:, :n_classes], expected, rtol=1e-5, atol=1e-6)
    # padded classes get (numerically) zero probability and do not enter the normaliser
    assert (np.exp(got[:, n_classes:]) == 0).all()
    np.testing.assert_allclose(np.exp(got[:, :n_classes]).sum(1), 1.0, rtol=1e-5)
    # a double softmax is flat: log-probabilities are bounded below by log(1 / (1 + (K - 1) e))
    assert got[:, :n_classes].min() >= np.log(1 / (1 + (n_classes - 1) * np.e)) - 1e-6

    plain = np.asarray(fit.log_probs(jnp.asarray(padded), jnp.int32(n_classes), double_softmax=False))
    expected_plain = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(plain[:, :n_classes], expected_plain, rtol=1e-5, atol=1e-5)
    assert (np.exp(plain[:, n_classes:]) == 0).all()


def test_masked_adam_is_adam_where_the_mask_allows():
    """`fit.masked_adam`: with a full mask, optax.adam's numbers (to the last bit or two: CPU kernels may round
    differently between two compiled programs); masked entries never move; an invalid step changes nothing;
    skipping a frozen group (`masked_step(groups=...)`) gives exactly the parameters and state of stepping it."""
    rng = np.random.default_rng(0)
    params = {"a": {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
              "b": {"w": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}}
    grads = [jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(4)]
    tx, adam = fit.masked_adam(1e-2), optax.adam(1e-2)
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    p, s, q, t = params, tx.init(params), params, adam.init(params)
    for g in grads:
        p, s = fit.masked_step(tx, g, s, p, ones, jnp.bool_(True))
        u, t = adam.update(g, t, q)
        q = optax.apply_updates(q, u)
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(q)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=3e-7, atol=0)

    mask = {"a": {"w": jnp.asarray(rng.integers(0, 2, (3, 4)), jnp.float32)}, "b": {"w": jnp.zeros(5)}}
    p, s = params, tx.init(params)
    for g in grads:
        p, s = fit.masked_step(tx, g, s, p, mask, jnp.bool_(True))
    frozen = np.asarray(mask["a"]["w"]) == 0
    np.testing.assert_array_equal(np.asarray(p["a"]["w"])[frozen], np.asarray(params["a"]["w"])[frozen])
    assert (np.asarray(p["a"]["w"])[~frozen] != np.asarray(params["a"]["w"])[~frozen]).all()
    np.testing.assert_array_equal(np.asarray(p["b"]["w"]), np.asarray(params["b"]["w"]))

    p2, s2 = fit.masked_step(tx, grads[0], s, p, mask, jnp.bool_(False))
    for a, b in zip(jax.tree_util.tree_leaves((p2, s2)), jax.tree_util.tree_leaves((p, s))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    groups = {"a": jnp.bool_(True), "b": jnp.bool_(False)}  # "b" is masked out entirely: skipping it is exact
    step = jax.jit(lambda groups: fit.masked_step(tx, grads[1], s, p, mask, jnp.bool_(True), groups))
    plain, skipped = step({"a": jnp.bool_(True), "b": jnp.bool_(True)}), step(groups)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(skipped)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
