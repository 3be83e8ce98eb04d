"""NEON's pruning environment as a gymnax `Environment`, registered as ``NeonPrune-v0``.

    import gymnax, neon_jax.gymnax
    env, params = gymnax.make("NeonPrune-v0")                      # the shipped default pool
    env, params = gymnax.make("NeonPrune-v0", zoo="runs/zoo_cpu", tau=5, passes=4)
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

The step is `NeonEnv.step` itself (one environment, not two); this module adds what gymnax's code expects: pure
`reset_env` / `step_env` (gymnax's `step` adds the auto-reset and ``info["final_observation"]``), `default_params`,
`action_space` (``Discrete(5)``: keep 100 / 90 / 80 / 70 / 60 % of the layer), `observation_space` (a flat `Box`
by default, the structured `features.Observation` as a `spaces.Dict` with ``observation="dict"``), `name` and
`num_actions`.

The params hold a device-resident pool (`DevicePool`): the networks of one or more zoos and each dataset's splits
stored once, with an index per network; every reset draws a network (uniform, or by `weights`), so one vmapped
batch sees many networks and datasets and every episode may be a new one. The reward is the environment's (the
paper's cubic reward by default) times ``params.reward_scale``: the default 1 / 40^3 keeps a standard PPO's losses
O(1) (the paper's reward spans about -3.2e5 .. +1.9e5); ``reward_scale=1`` is the paper's raw reward.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax import registration
from gymnax.environments import environment, spaces
from jax import custom_batching

from neon_jax import features, fit, nets
from neon_jax.choices import REWARD_SCALE
from neon_jax.env import NUM_ACTIONS, EnvConfig, EnvParams, EnvState, NeonEnv, validate_tau
from neon_jax.pool import EnvPool
from neon_jax.presets import Preset, get_preset

ENV_ID = "NeonPrune-v0"
OBSERVATIONS = ("flat", "dict")
_OBS_FIELDS = ("net_topology", "net_activations", "net_weights", "layer_topology", "layer_activations",
               "layer_weights", "progress")


@struct.dataclass
class DevicePool:
    """Networks and their datasets on the device, each dataset stored once.

    Attributes:
      variables / archs: the N networks (leading axis N).
      dataset_of: (N,) int32, each network's dataset (an index into the D splits below).
      finetune / val / train / test: `fit.PaddedData` stacks (leading axis D).
      log_weights: (N,) float32, log-probabilities of drawing each network at a reset.
      acc0: (N,) float32, each network's validation accuracy as a reset measures it (`NeonEnv.reset_accuracy`),
        measured once by `NeonPrune`; None: every reset measures it.
    """

    variables: Any
    archs: nets.Arch
    dataset_of: jax.Array
    finetune: fit.PaddedData
    val: fit.PaddedData
    train: fit.PaddedData
    test: fit.PaddedData
    log_weights: jax.Array
    acc0: Any = None

    @classmethod
    def from_pool(cls, pool: EnvPool, weights=None) -> DevicePool:
        """The pool's networks and datasets on the default device; `weights` (N,) >= 0 (default uniform)."""
        n = len(pool)
        w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {n} finite non-negative numbers, not all zero (one per network)")
        with np.errstate(divide="ignore"):
            log_w = np.log(w / w.sum()).astype(np.float32)
        put = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)  # noqa: E731
        return cls(variables=put(pool.variables), archs=put(pool.archs),
                   dataset_of=jnp.asarray(pool.dataset_of, jnp.int32), log_weights=jnp.asarray(log_w),
                   **{name: put(pool.data[name]) for name in ("finetune", "val", "train", "test")})

    @property
    def size(self) -> int:
        return int(self.dataset_of.shape[0])

    def draw(self, key: jax.Array) -> jax.Array:
        """() int32: a network drawn by the pool's weights."""
        return jax.random.categorical(key, self.log_weights).astype(jnp.int32)

    def env_params(self, network: jax.Array, tau: jax.Array) -> EnvParams:
        """`EnvParams` of network `network`: its weights gathered, the split stacks shared (`data_index`)."""
        take = lambda tree: jax.tree_util.tree_map(lambda a: a[network], tree)  # noqa: E731
        return EnvParams(variables=take(self.variables), arch=take(self.archs), finetune=self.finetune, val=self.val,
                         train=self.train, test=self.test, tau=jnp.asarray(tau, jnp.float32),
                         data_index=self.dataset_of[network])


@struct.dataclass
class NeonPruneParams(environment.EnvParams):
    """The gymnax params: the pool, the tolerance (accuracy points), the reward's scale."""

    pool: DevicePool = None
    tau: jax.Array = 5.0
    reward_scale: jax.Array = 1.0 / REWARD_SCALE
    max_steps_in_episode: int = struct.field(pytree_node=False, default=1)


@struct.dataclass
class NeonPruneState(environment.EnvState):
    """The environment's state (`env.EnvState`), the network being pruned (index into the pool), steps taken."""

    env: EnvState = None
    network: jax.Array = 0


class NeonPrune(environment.Environment):
    """NEON's environment over a pool of networks, as gymnax expects it (see the module docstring).

    Args:
      pool: an `EnvPool` (host) of the networks to prune, with their data.
      preset: the pool's preset (its fine-tuning schedule and observation sizes).
      config: the environment's static settings (`EnvConfig`; passes, cut, reward).
      tau: default tolerance in accuracy points (a param: another value needs no recompilation).
      reward_scale: default multiplier of the reward (1 / 40^3; 1 = the paper's raw reward).
      weights: optional (N,) draw weights of the pool's networks (default uniform).
      observation: "flat" (one float32 vector) or "dict" (the structured observation, a `spaces.Dict`).
    """

    def __init__(self, pool: EnvPool, preset: Preset, config: EnvConfig | None = None, tau: float = 5.0,
                 reward_scale: float = 1.0 / REWARD_SCALE, weights=None, observation: str = "flat"):
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
        if not np.isfinite(reward_scale) or reward_scale <= 0:
            raise ValueError(f"reward_scale must be a positive number, got {reward_scale!r}")
        super().__init__()
        self.core = NeonEnv(config or EnvConfig(), pool.dims, preset, slots=None)
        self.pool = self._with_acc0(DevicePool.from_pool(pool, weights))
        self.names = list(pool.names)
        self.observation = observation
        self._defaults = (validate_tau(tau), float(reward_scale))
        self._zero_obs = features.zeros_observation(preset)

    @property
    def default_params(self) -> NeonPruneParams:
        tau, scale = self._defaults
        return NeonPruneParams(pool=self.pool, tau=jnp.float32(tau), reward_scale=jnp.float32(scale),
                               max_steps_in_episode=self.core.max_steps)

    def reset_env(self, key: jax.Array, params: NeonPruneParams):
        """Draws a network from the pool and starts an episode on it: (obs, state)."""
        k_draw, k_reset = jax.random.split(key)
        network = params.pool.draw(k_draw)
        acc0 = None if params.pool.acc0 is None else params.pool.acc0[network]
        obs, state = self.core.reset(k_reset, params.pool.env_params(network, params.tau), acc0)
        return self._obs(obs), NeonPruneState(time=jnp.int32(0), env=state, network=network)

    @partial(jax.jit, static_argnames=("self",))
    def step(self, key: jax.Array, state: NeonPruneState, action, params: NeonPruneParams | None = None):
        """gymnax's `Environment.step` (auto-reset, ``info["terminated" / "truncated" / "final_observation"]``) with
        the reset computed only when an episode ended (`_reset_where`)."""
        if params is None:
            params = self.default_params
        key_step, key_reset = jax.random.split(key)
        obs_st, state_st, reward, terminated, info = self.step_env(key_step, state, action, params)
        truncated = self.is_truncated(state_st, params)
        obs, new_state = self._reset_where(terminated | truncated, key_reset, params, obs_st, state_st)
        info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": obs_st}
        return obs, new_state, reward, terminated, truncated, info

    def _reset_where(self, done, key, params, obs_st, state_st):
        """(obs, state): a new episode where `done`, the step's own elsewhere; the reset (a draw, a gather from the
        pool and one activation pass, acc0 being the pool's) runs only when an episode ended: for one environment
        under `lax.cond`, for a vmapped batch (`custom_vmap`) once for the whole batch when any of it ended,
        instead of gymnax's reset of every environment at every step."""
        return _reset_where_fn(self)(done, key, params, obs_st, state_st)

    def step_env(self, key: jax.Array, state: NeonPruneState, action, params: NeonPruneParams):
        """`NeonEnv.step` on the state's network: (obs, state, reward x reward_scale, terminated, info); info is
        the environment's plus "network" (its pool index), "compression" (original / current parameters) and
        "acc_change_points" (validation accuracy change so far)."""
        p = params.pool.env_params(state.network, params.tau)
        obs, env_state, reward, terminated, _, info = self.core.step(key, state.env, action, p)
        new = state.replace(env=env_state, time=state.time + 1)
        info = {**info, "network": state.network,
                "compression": env_state.params0 / jnp.maximum(info["params_after"], 1),
                "acc_change_points": 100.0 * (env_state.acc - env_state.acc0)}
        return self._obs(obs), new, reward * params.reward_scale, terminated, info

    def is_truncated(self, state: NeonPruneState, params: NeonPruneParams) -> jax.Array:
        """Never: every episode ends by itself after passes x depth steps (at most `max_steps_in_episode`)."""
        return jnp.bool_(False)

    def is_terminated(self, state: NeonPruneState, params: NeonPruneParams) -> jax.Array:
        return state.env.done

    @property
    def name(self) -> str:
        return ENV_ID

    @property
    def num_actions(self) -> int:
        return NUM_ACTIONS

    def action_space(self, params: NeonPruneParams | None = None) -> spaces.Discrete:
        """Five actions: keep 100 / 90 / 80 / 70 / 60 % of the current hidden layer."""
        return spaces.Discrete(NUM_ACTIONS)

    def observation_space(self, params: NeonPruneParams | None = None):
        """A flat `Box` (default) or a `spaces.Dict` of the `features.Observation` fields."""
        boxes = {f: spaces.Box(-jnp.inf, jnp.inf, getattr(self._zero_obs, f).shape, jnp.float32) for f in _OBS_FIELDS}
        if self.observation == "dict":
            return spaces.Dict(boxes)
        return spaces.Box(-jnp.inf, jnp.inf, (sum(int(np.prod(b.shape)) for b in boxes.values()),), jnp.float32)

    def state_space(self, params: NeonPruneParams | None = None):
        raise NotImplementedError("the state is a pruned network; it has no gymnax space")

    def _with_acc0(self, pool: DevicePool) -> DevicePool:
        """The pool with every network's reset accuracy measured once (in chunks of 64 networks)."""
        if self.core.config.legacy_reset_train_mode:
            return pool
        measure = jax.jit(lambda p: jax.lax.map(
            lambda i: self.core.reset_accuracy(p.env_params(i, 0.0)), jnp.arange(p.size, dtype=jnp.int32),
            batch_size=64))
        return pool.replace(acc0=measure(pool))

    def _obs(self, obs: features.Observation):
        if self.observation == "dict":
            return {f: getattr(obs, f) for f in _OBS_FIELDS}
        return jnp.concatenate([getattr(obs, f).reshape(-1) for f in _OBS_FIELDS]).astype(jnp.float32)


def _reset_where_fn(env: NeonPrune):
    """`NeonPrune._reset_where` as a `custom_vmap` function (its batching rule resets the batch under one cond)."""

    @custom_batching.custom_vmap
    def reset_where(done, key, params, obs_st, state_st):
        return jax.lax.cond(done, lambda: env.reset_env(key, params), lambda: (obs_st, state_st))

    @reset_where.def_vmap
    def rule(axis_size, in_batched, done, key, params, obs_st, state_st):
        done_b, key_b, params_b, obs_b, state_b = in_batched
        grow = lambda x, b: x if b else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x))  # noqa: E731
        done = grow(done, done_b)
        ended = jax.tree.map(grow, (obs_st, state_st), (obs_b, state_b))

        def reset_ended():
            fresh = jax.vmap(env.reset_env, in_axes=(0 if key_b else None, jax.tree.map(
                lambda b: 0 if b else None, params_b)))(key, params)
            pick = lambda r, s: jnp.where(done.reshape((-1,) + (1,) * (s.ndim - 1)), r, s)  # noqa: E731
            return jax.tree.map(pick, fresh, ended)

        out = jax.lax.cond(done.any(), reset_ended, lambda: ended)
        return out, jax.tree.map(lambda _: True, out)

    return reset_where


def make(zoo=None, tau: float = 5.0, passes: int = 4, preset: str | None = None, datasets=None, which: str = "all",
         data_dir=None, cut: str = "reinit", reward: str = "neon", reward_scale: float = 1.0 / REWARD_SCALE,
         weights=None, observation: str = "flat") -> NeonPrune:
    """The factory behind ``gymnax.make("NeonPrune-v0", ...)``.

    Args:
      zoo: a zoo folder, a folder of zoos (`neon-jax zoo`), or None: the shipped default pool (`default_pool`).
      tau: tolerance in accuracy points; passes: visits of every hidden layer per episode (paper: 1 or 4).
      preset: must match the zoos' (default: theirs); datasets: only these zoos of the folder; which: "train",
        "heldout" or "all" networks of each zoo; data_dir: where the zoos' datasets are (default: as recorded).
      cut / reward: `EnvConfig`'s; reward_scale: the reward's multiplier; weights: per-network draw weights;
      observation: "flat" or "dict".
    Returns:
      a `NeonPrune` (its `default_params` carry the pool).
    """
    from neon_jax import zoo as zoo_lib

    tau = validate_tau(tau)
    if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or passes < 1:
        raise ValueError(f"passes must be a whole number >= 1, got {passes!r}")
    if zoo is None:
        pairs = default_pool()
    else:
        paths = zoo_lib.find_zoos(Path(zoo), list(datasets) if datasets else None)
        pairs = [zoo_lib.load_zoo_with_data(p, data_dir) for p in paths]
    zoo_preset = pairs[0][0].preset
    if preset is not None and get_preset(preset) != zoo_preset:
        raise ValueError(f"the zoos were built with preset {zoo_preset.name!r}, not {preset!r}")
    pool = EnvPool.from_zoos(pairs, which, tau, zoo_preset)
    config = EnvConfig(passes=int(passes), cut=cut, reward=reward)
    return NeonPrune(pool, zoo_preset, config, tau, reward_scale, weights, observation)


DEFAULT_POOL = ("iris", "wine", "breast_cancer")


def default_pool():
    """The shipped default pool: tiny-preset zoos of scikit-learn's bundled iris, wine and breast_cancer (4 networks
    each, `neon_jax/assets/gymnax_pool/`), with their data re-prepared from scikit-learn and checked by digest."""
    from neon_jax import zoo as zoo_lib

    root = Path(__file__).resolve().parent / "assets" / "gymnax_pool"
    return [zoo_lib.load_zoo_with_data(root / name) for name in DEFAULT_POOL]


if ENV_ID not in registration.registered_envs:
    registration.register(ENV_ID, make)

__all__ = ["DEFAULT_POOL", "DevicePool", "ENV_ID", "NeonPrune", "NeonPruneParams", "NeonPruneState",
           "default_pool", "make"]
