"""The agent: actor and critic with their optimisers (`Agent`), its state, and its policy as an act_fn."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from neon_jax.agent.config import AgentConfig
from neon_jax.agent.networks import AgentNet
from neon_jax.env import NUM_ACTIONS
from neon_jax.features import Observation, zeros_observation
from neon_jax.nets import NetDims
from neon_jax.policies import random_policy
from neon_jax.presets import Preset
from neon_jax.rollout import policy_keys
from neon_jax.rollout import policy_program as cached_policy_program


@struct.dataclass
class AgentState:
    """What training changes: both networks, their Adam states, and the episodes learnt from."""

    actor: Any
    critic: Any
    actor_opt: Any
    critic_opt: Any
    episodes: jax.Array  # () int32 episodes learnt from so far


@struct.dataclass
class ActorPolicy:
    """The `policy_params` of `Agent.act_fn`: the actor's weights and two traced switches, so sampled, greedy and
    uniform actions are one compiled program.

    Attributes:
      actor: the actor's parameters.
      greedy: () bool, argmax instead of sampling from pi (the original samples, §1.4).
      uniform: () bool, uniform random actions instead (the warm-up episodes, §6.2; the random agent).
    """

    actor: Any
    greedy: jax.Array
    uniform: jax.Array


class Agent:
    """Actor, critic and their optimisers for one preset (observation shape) and config."""

    def __init__(self, config: AgentConfig, preset: Preset):
        self.config = config
        self.preset = preset
        self.actor = AgentNet(NUM_ACTIONS, config.architecture, config.observe_progress)
        self.critic = AgentNet(1, config.architecture, config.observe_progress)
        self.actor_opt = optax.adam(config.actor_lr)  # PyTorch Adam defaults, no clipping, no weight decay
        self.critic_opt = optax.adam(config.critic_lr)

    def dummy_obs(self) -> Observation:
        return zeros_observation(self.preset)

    def init(self, key) -> AgentState:
        k_a, k_c = jax.random.split(key)
        obs = self.dummy_obs()
        actor = self.actor.init(k_a, obs)
        critic = self.critic.init(k_c, obs)
        return AgentState(actor=actor, critic=critic, actor_opt=self.actor_opt.init(actor),
                          critic_opt=self.critic_opt.init(critic), episodes=jnp.int32(0))

    def num_params(self, state: AgentState) -> tuple[int, int]:
        count = lambda t: int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(t)))  # noqa: E731
        return count(state.actor), count(state.critic)

    def policy(self, actor, greedy=False, uniform=False) -> ActorPolicy:
        """The `policy_params` of `act_fn` for these actor weights."""
        flag = lambda b: b if isinstance(b, jax.Array) else jax.device_put(np.bool_(b))  # noqa: E731  (no program)
        return ActorPolicy(actor=actor, greedy=flag(greedy), uniform=flag(uniform))

    def act_fn(self, policy: ActorPolicy, key: jax.Array, obs: Observation) -> jax.Array:
        """The actor as an act_fn of `neon_jax.rollout`: one action for one observation."""
        k_sample, _ = policy_keys(key)
        logits = self.actor.apply(policy.actor, obs)
        chosen = jnp.where(policy.greedy, jnp.argmax(logits), jax.random.categorical(k_sample, logits))
        return jnp.where(policy.uniform, random_policy(None, key, obs), chosen)  # the warm-up's random agent

    def observation_preset(self, preset: Preset, dims: NetDims | None = None) -> Preset:
        """`preset` with this agent's state-map sizes, so an agent trained at one scale observes networks of
        another (the networks' schedules stay `preset`'s).

        The original architecture reads maps of its own (rows, columns); a layer wider than its columns is seen
        through evenly spaced neurons (`features.compact_neurons`). The compact architecture reads maps of any
        size: its columns become wide enough for every neuron of `dims` (default: `preset`'s networks).
        Raises a clear error when the networks have more hidden layers than the maps have rows.
        """
        max_hidden = preset.max_hidden if dims is None else dims.max_hidden
        widest = preset.w_max if dims is None else max(dims.w_max, dims.k_max)
        if self.config.architecture == "compact":
            rows, width = max(preset.feature_rows, max_hidden + 1), max(preset.feature_width, widest)
        else:
            rows, width = self.preset.feature_rows, self.preset.feature_width
        if rows < max_hidden + 1:
            raise ValueError(
                f"this agent's state maps hold {rows - 1} hidden layers (preset {self.preset.name!r}); these "
                f"networks have up to {max_hidden}")
        if (rows, width) == (preset.feature_rows, preset.feature_width):
            return preset
        return dataclasses.replace(preset, feature_rows=rows, feature_width=width)


def policy_program(env, agent: Agent):
    """The jitted pruning program of `agent`'s policy on `env` (`rollout.make_policy_program`), built once per
    (environment, agent) settings in a process: ``program(keys, env_params, agent.policy(actor, greedy, uniform))
    -> rollout.Outcome``."""
    return cached_policy_program(env, agent.act_fn, ("agent", agent.config, agent.preset))
