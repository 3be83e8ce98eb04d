"""The PyTorch reference environment (benchmarks/torch_reference/env_step.py) does the same work as neon_jax.env.

Same trained tiny networks, same data, same actions: the same widths and parameter counts after every step, the
same frozen weights, accuracies within run-to-run noise (fresh initialisations and shuffles differ between the two
sides), and on the same weights and sample the same state features to float32 tolerance.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny networks: one thread is fastest and does not fight the JAX threads

from benchmarks.torch_reference.base_training import to_torch_sequential, train_torch  # noqa: E402
from benchmarks.torch_reference.env_step import TorchNeonEnv, run_episode, sequential_layers, torch_env_from_jax  # noqa: E402
from benchmarks.torch_reference.features import ref_normalise  # noqa: E402
from neon_jax import env as env_lib  # noqa: E402
from neon_jax import features, nets  # noqa: E402
from neon_jax import zoo as zoo_lib  # noqa: E402
from neon_jax.presets import get_preset  # noqa: E402

TINY = get_preset("tiny")
N_NETS = 6
ACTIONS = np.array([[3, 4, 1], [4, 0, 2], [1, 3, 4], [2, 2, 0], [4, 4, 4], [0, 3, 1]], np.int32)  # (N_NETS, T)


@functools.cache
def setting():
    """Tiny random networks on wine, trained a few epochs with the PyTorch loop (no JAX training compile)."""
    prepared = zoo_lib.prepare_data("wine", TINY, seed=0)
    s = prepared.splits
    dims = nets.NetDims.for_preset(TINY, prepared.n_features, prepared.n_classes)
    model = nets.make_model(dims, TINY)
    archs = jax.vmap(lambda k: nets.sample_arch(k, TINY, dims, prepared.n_features, prepared.n_classes))(
        jax.random.split(jax.random.PRNGKey(1), N_NETS))
    archs = archs.replace(depth=archs.depth.at[0].set(TINY.max_hidden))  # at least one of full depth
    host_vars, host_archs = jax.device_get((nets.init_population(jax.random.PRNGKey(2), model, archs), archs))
    items = []
    for i in range(N_NETS):
        seq = to_torch_sequential(nets.compact(take(host_vars, i), take(host_archs, i), dims))
        torch.manual_seed(i)
        train_torch(seq, s.x_train, s.y_train, epochs=15, batch_size=TINY.train_batch, seed=i)
        v, a = nets.expand(dense_from_torch(seq, prepared.n_features, prepared.n_classes), dims)
        items.append(env_lib.make_env_params(v, a, s, dims, tau=5.0))
    params = env_lib.stack_params(items)
    env = env_lib.NeonEnv(env_lib.EnvConfig(passes=1), dims, TINY)
    return prepared, params, dims, env


def dense_from_torch(seq, n_features, n_classes) -> nets.DenseNetwork:
    return nets.DenseNetwork(layers=sequential_layers(seq), n_features=n_features, n_classes=n_classes)


def take(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


@functools.cache
def jax_episodes(seed=0):
    """Every network's one-pass episode with ACTIONS: per step (widths, params, acc) and the final state."""
    _, params, dims, env = setting()
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    keys = jax.random.split(jax.random.PRNGKey(seed), N_NETS)
    _, state = reset(keys, params)
    per_step = []
    for t in range(ACTIONS.shape[1]):
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), t + 1), N_NETS)
        _, state, _, _, _, info = step(keys, state, jnp.asarray(ACTIONS[:, t]), params)
        per_step.append(jax.device_get((info["widths"], info["params_after"], info["acc"], info["active"])))
    return per_step, jax.device_get(state)


def torch_env(i, seed=0) -> TorchNeonEnv:
    prepared, params, dims, _ = setting()
    return torch_env_from_jax(take(params.variables, i), take(params.arch, i), dims, TINY, prepared.splits,
                              passes=1, tau=5.0, seed=seed)


def test_same_widths_params_and_frozen_weights_after_the_same_actions():
    torch.manual_seed(0)
    per_step, final = jax_episodes()
    _, params, dims, _ = setting()
    for i in range(N_NETS):
        env = torch_env(i)
        env.reset()
        assert env.num_params() == int(nets.count_params(take(params.arch, i)))
        for t, (widths, n_params, _, active) in enumerate(per_step):
            if not active[i]:
                break
            env.step(int(ACTIONS[i, t]))
            depth = env.depth
            assert env.widths == [int(w) for w in widths[i][:depth]], (i, t)
            assert env.num_params() == int(n_params[i]), (i, t)
        # Linears outside the cut rows were never trainable: identical on both sides (and to the original).
        jax_net = nets.compact(take(final.variables, i), take(final.arch, i), dims)
        j_lin = [l for l in jax_net.layers if l["kind"] == "linear"]
        t_lin = [l for l in sequential_layers(env.model) if l["kind"] == "linear"]
        cut = {t % env.depth for t in range(ACTIONS.shape[1]) if t < env.depth and ACTIONS[i, t] != 0}
        touched = cut | {c + 1 for c in cut}
        for j, (a, b) in enumerate(zip(j_lin, t_lin)):
            assert a["kernel"].shape == b["kernel"].shape
            if j not in touched:
                np.testing.assert_array_equal(a["kernel"], b["kernel"])


def test_accuracies_agree_within_noise():
    per_step, final = jax_episodes()
    jax_acc = np.asarray(final.acc)
    torch_acc = []
    for i in range(N_NETS):
        torch.manual_seed(i)
        torch_acc.append(run_episode(torch_env(i, seed=i), ACTIONS[i])["acc"])
    torch_acc = np.asarray(torch_acc)
    acc0 = np.array([(lambda e: (e.reset(), e.acc0)[1])(torch_env(i)) for i in range(N_NETS)])
    np.testing.assert_allclose(acc0, np.asarray(final.acc0), atol=1e-6)  # same network, same split: identical
    # after cuts: fresh inits / shuffles differ, so only the population means must agree (wine val: 25 rows)
    assert abs(jax_acc.mean() - torch_acc.mean()) < 0.12, (jax_acc, torch_acc)


def test_features_equal_on_the_same_weights():
    _, final = jax_episodes()
    prepared, params, dims, _ = setting()
    s = prepared.splits
    x_pad = np.pad(s.x_train, ((0, 0), (0, dims.d_max - s.x_train.shape[1]))).astype(np.float32)
    idx, weight = features.activation_sample(jax.random.PRNGKey(3), jnp.asarray(x_pad), jnp.asarray(s.y_train),
                                             len(s.y_train), TINY.activation_sample, n_classes=dims.k_max)
    idx = np.asarray(idx)
    observe = jax.jit(lambda v, a: features.raw_state(v, a, dims, TINY, jnp.asarray(x_pad[idx]), weight))
    for i in range(N_NETS):
        v, a = take(final.variables, i), take(final.arch, i)
        env = torch_env(i)
        env.reset()
        env.model = to_torch_sequential(nets.compact(v, a, dims)).eval()
        t_topo, t_acts, t_weights = env.raw_state(torch.as_tensor(s.x_train[idx]))
        j_topo, j_acts, j_weights = (np.asarray(m, np.float64) for m in observe(v, a))
        np.testing.assert_array_equal(j_topo, t_topo)
        np.testing.assert_allclose(j_weights, t_weights, rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(j_acts[[0, 1, 4, 5, 6, 7]], t_acts[[0, 1, 4, 5, 6, 7]], rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(j_acts[2:4], t_acts[2:4], rtol=2e-3, atol=2e-3)  # skew / kurtosis: 3rd/4th moments
        for row in range(int(a.depth)):
            got = jax.device_get(features.normalise_state(j_topo, j_acts, j_weights, row))
            want = ref_normalise(t_topo, t_acts, t_weights, row)
            for name in ("net_topology", "layer_topology", "net_weights", "layer_weights"):
                np.testing.assert_allclose(getattr(got, name), want[name], rtol=1e-3, atol=1e-3, err_msg=name)
