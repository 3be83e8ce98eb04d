"""`neon_jax.gymnax`: NEON's environment as a gymnax Environment (registration, wrappers, auto-reset, the pool)."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import environment, spaces
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

import neon_jax.gymnax as ng
from neon_jax import zoo as zoo_lib
from neon_jax.env import EnvConfig
from neon_jax.pool import EnvPool
from neon_jax.presets import PRESETS

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory):
    """Tiny zoos of iris and wine (4 networks each) saved as `neon-jax zoo` writes them."""
    root = tmp_path_factory.mktemp("gymnax_zoos")
    for name, seed in (("iris", 0), ("wine", 1)):
        prepared = zoo_lib.prepare_data(name, TINY, seed=0)
        zoo_lib.save_zoo(zoo_lib.build_zoo(prepared, TINY, n=4, n_heldout=1, seed=seed, epochs=20), root)
    return root


@pytest.fixture(scope="module")
def tiny_env(zoo_root):
    env, params = gymnax.make(ng.ENV_ID, zoo=zoo_root, tau=5, passes=1)
    return env, params


def test_make_returns_a_gymnax_environment_with_default_params(tiny_env):
    env, params = tiny_env
    assert isinstance(env, environment.Environment) and isinstance(params, ng.NeonPruneParams)
    assert env.name == "NeonPrune-v0" and env.num_actions == 5
    assert isinstance(env.action_space(params), spaces.Discrete) and env.action_space(params).n == 5
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    box = env.observation_space(params)
    assert isinstance(box, spaces.Box) and obs.shape == box.shape and obs.dtype == jnp.float32
    obs2, *_ = env.step(jax.random.PRNGKey(1), state, 1, params)
    assert obs2.shape == obs.shape
    obs, _ = env.reset(jax.random.PRNGKey(0))  # params may be left out, as in gymnax
    assert obs.shape == box.shape


def test_the_pool_stores_each_dataset_once(tiny_env):
    env, params = tiny_env
    pool = params.pool
    assert pool.size == 8 and pool.finetune.x.shape[0] == 2  # 8 networks, 2 datasets
    assert sorted(np.bincount(np.asarray(pool.dataset_of)).tolist()) == [4, 4]
    assert {name for name, _ in env.names} == {"iris", "wine"}


def test_wrappers_run_under_vmap_and_scan_with_auto_reset(tiny_env):
    """LogWrapper(FlattenObservationWrapper(env)) under vmap + lax.scan: every environment finishes several
    episodes, each passes x depth steps long for the network drawn; `final_observation` is the ended episode's
    last observation (the step's own, recomputed here), the returned observation the next episode's first."""
    env, params = tiny_env
    wrapped = LogWrapper(FlattenObservationWrapper(env))
    B, T = 4, 16
    obs, state = jax.vmap(wrapped.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(2), B), params)

    def step(carry, key):
        obs, state = carry
        k_act, k_step = jax.random.split(key)
        action = jax.random.randint(k_act, (B,), 0, 5)
        before = state.env_state
        obs2, state2, reward, term, trunc, info = jax.vmap(wrapped.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k_step, B), state, action, params)
        out = {"network": before.network, "done": term | trunc, "length": info["returned_episode_lengths"],
               "final": info["final_observation"], "obs": obs2, "reward": reward, "action": action,
               "key": jax.random.split(k_step, B), "before": before}
        return (obs2, state2), out

    _, out = jax.jit(lambda k: jax.lax.scan(step, (obs, state), jax.random.split(k, T)))(jax.random.PRNGKey(3))
    depth = np.asarray(params.pool.archs.depth)
    done = np.asarray(out["done"])
    assert (done.sum(0) >= 2).all(), done.sum(0)  # every environment finished several episodes
    lengths = np.asarray(out["length"])[done]
    networks = np.asarray(out["network"])[done]
    np.testing.assert_array_equal(lengths, 1 * depth[networks])  # passes = 1
    assert np.isfinite(np.asarray(out["reward"])).all()
    # the observation after a non-final step is that step's; after a final step, the next episode's first
    np.testing.assert_array_equal(np.asarray(out["final"])[~done], np.asarray(out["obs"])[~done])
    t, b = np.argwhere(done)[0]
    take = lambda tree: jax.tree_util.tree_map(lambda a: a[t, b], tree)  # noqa: E731
    k_step, _ = jax.random.split(out["key"][t, b])
    obs_st, *_ = env.step_env(k_step, take(out["before"]), out["action"][t, b], params)
    np.testing.assert_allclose(np.asarray(out["final"][t, b]), np.asarray(obs_st), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(out["final"][t, b]), np.asarray(out["obs"][t, b]))


def test_resets_draw_networks_by_their_weights(zoo_root):
    weights = [4, 1, 1, 1, 1, 0, 0, 2]
    env, params = gymnax.make(ng.ENV_ID, zoo=zoo_root, passes=1, weights=weights)
    n = 800
    draws = np.asarray(jax.jit(jax.vmap(lambda k: env.reset_env(k, params)[1].network))(
        jax.random.split(jax.random.PRNGKey(4), n)))
    counts = np.bincount(draws, minlength=8)
    assert counts[5] == counts[6] == 0
    expected = n * np.asarray(weights) / sum(weights)
    live = expected > 0
    chi2 = (((counts - expected) ** 2)[live] / expected[live]).sum()
    assert chi2 < 22.5, counts  # 99.9 % quantile of chi-square with 5 degrees of freedom


def test_raw_reward_setting_gives_the_environments_rewards(zoo_root, tiny_env):
    """reward_scale=1: the step is `NeonEnv.step` on the drawn network with its own splits (the pool's shared
    stacks give the same observation, reward and accuracies); the default scale divides by 40^3."""
    env, params = tiny_env
    raw = params.replace(reward_scale=jnp.float32(1.0))
    pairs = [zoo_lib.load_zoo_with_data(p) for p in zoo_lib.find_zoos(zoo_root)]
    pool = EnvPool.from_zoos(pairs, "all", 5.0, TINY)
    core = env.core
    for network in (0, 5):
        own = jax.tree_util.tree_map(lambda a: a[0], pool.batch([network]))
        key = jax.random.PRNGKey(10 + network)
        obs_own, st_own = core.reset(key, own)
        state = ng.NeonPruneState(time=jnp.int32(0), env=st_own, network=jnp.int32(network))
        for t, action in enumerate((2, 0, 4)):
            k = jax.random.PRNGKey(100 + t)
            o1, st_own, r1, d1, _, _ = core.step(k, st_own, action, own)
            o2, state, r2, d2, _ = env.step_env(k, state, action, raw)
            assert float(r2) == pytest.approx(float(r1), rel=1e-6, abs=1e-6)
            np.testing.assert_allclose(np.asarray(o2), np.asarray(env._obs(o1)), rtol=1e-5, atol=1e-6)
            assert bool(d1) == bool(d2)
            assert float(state.env.acc) == pytest.approx(float(st_own.acc))
    k = jax.random.PRNGKey(7)
    _, s0 = env.reset_env(k, params)
    _, _, scaled, _, _ = env.step_env(k, s0, 3, params)
    _, _, unscaled, _, _ = env.step_env(k, s0, 3, raw)
    assert float(scaled) == pytest.approx(float(unscaled) / 40.0 ** 3, rel=1e-6, abs=1e-9)


def test_reset_accuracy_measured_once_and_the_step_is_gymnaxs(tiny_env):
    """The pool's acc0 (measured once per network) is what a reset measures itself; the step that skips the reset
    where nothing ended gives gymnax's own `Environment.step` (reset always computed, then selected), one
    environment and under vmap, across episode ends."""
    env, params = tiny_env
    for network in range(params.pool.size):
        _, own = env.core.reset(jax.random.PRNGKey(network), params.pool.env_params(jnp.int32(network), 5.0))
        assert float(own.acc0) == float(params.pool.acc0[network])
    B, T = 4, 5
    base = jax.jit(jax.vmap(lambda k, s, a: environment.Environment.step(env, k, s, a, params)))
    ours = jax.jit(jax.vmap(lambda k, s, a: env.step(k, s, a, params)))
    one = jax.jit(lambda k, s, a: env.step(k, s, a, params))
    _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(1), B), params)
    ended = 0
    for t in range(T):
        keys = jax.random.split(jax.random.PRNGKey(10 + t), B)
        actions = jax.random.randint(jax.random.PRNGKey(20 + t), (B,), 0, 5)
        want = base(keys, state, actions)
        ended += int(np.asarray(want[3]).sum())
        singles = [one(keys[i], jax.tree_util.tree_map(lambda a: a[i], state), actions[i]) for i in range(B)]
        for got in (ours(keys, state, actions), jax.tree_util.tree_map(lambda *a: jnp.stack(a), *singles)):
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        state = want[1]
    assert ended >= 2  # episodes ended (and were reset) on the way
    # nested vmap (PureJaxRL vmaps its whole train over seeds): the (2, 2) batch gives the flat batch's step
    flat = jax.tree_util.tree_map(lambda a: a[:4], state)
    keys, actions = jax.random.split(jax.random.PRNGKey(30), 4), jnp.asarray([0, 4, 4, 2])
    nested = jax.jit(jax.vmap(jax.vmap(lambda k, s, a: env.step(k, s, a, params))))(
        *jax.tree_util.tree_map(lambda a: a.reshape((2, 2) + a.shape[1:]), (keys, flat, actions)))
    for a, b in zip(jax.tree_util.tree_leaves(nested), jax.tree_util.tree_leaves(base(keys, flat, actions))):
        np.testing.assert_allclose(np.asarray(a).reshape(np.shape(b)), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_dict_observations(zoo_root):
    env, params = gymnax.make(ng.ENV_ID, zoo=zoo_root, passes=1, observation="dict")
    obs, _ = env.reset(jax.random.PRNGKey(0), params)
    space = env.observation_space(params)
    assert isinstance(space, spaces.Dict) and set(obs) == set(space.spaces)
    assert all(obs[k].shape == space.spaces[k].shape for k in obs)


@pytest.mark.parametrize("kwargs, message", [
    ({"zoo": "/no/such/folder"}, "does not exist"),
    ({"tau": -1}, "tau must be in"),
    ({"tau": "five"}, "tau must be a number"),
    ({"passes": 0}, "passes must be a whole number"),
    ({"passes": 1.5}, "passes must be a whole number"),
    ({"observation": "pixels"}, "observation must be one of"),
    ({"reward_scale": 0}, "reward_scale must be a positive number"),
    ({"weights": [1, 2]}, "weights must be 8"),
    ({"preset": "paper"}, "were built with preset 'tiny'"),
])
def test_bad_arguments_are_one_clear_line(zoo_root, kwargs, message):
    kwargs = {"zoo": zoo_root, **kwargs}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        gymnax.make(ng.ENV_ID, **kwargs)


def test_config_reaches_the_environment(zoo_root):
    env, _ = gymnax.make(ng.ENV_ID, zoo=zoo_root, passes=2, cut="keep_best")
    assert env.core.config == EnvConfig(passes=2, cut="keep_best")
