"""The NEON agent: actor and critic (flax), Monte-Carlo advantage actor-critic (rlax + optax), one jit per update.

Networks (neon_spec.md §6.1): six branches over the observation — network topology, network activation
statistics, network weight statistics, layer topology, layer activation statistics, layer weight statistics —
concatenated (170 features at the paper's 10 rows), then 300-300 heads to 5 action logits (actor) or one value
(critic). The network-level branches are dense maps shared over rows followed by batch-norm with the
statistics of the rows of one observation (the original's BatchNorm2d at batch size 1, always in train mode,
§12 A5). PyTorch's default initialisation.

Learning (§6.2): whole episodes are rolled out, returns are discounted Monte-Carlo returns (gamma 0.99, no
bootstrap), advantage = return - value, the actor minimises -mean_t log pi(a_t|s_t) A_t (each step its own
advantage; the original's episode-mean advantage, §12 A0, behind `legacy_episode_mean_advantage`), the critic
mean_t A_t^2, with separate Adam(1e-3) optimisers. The first `warmup_episodes` episodes act uniformly at random
but are learnt from all the same (§6.2 step 7). Many episodes run in parallel per update (`batch_size`; 1 is the
original's schedule); roll-out, returns, losses and both updates are one jitted function.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax
from flax import struct

from neon_jax.env import NUM_ACTIONS, EnvParams, NeonEnv
from neon_jax.features import PROGRESS_FEATURES, Observation
from neon_jax.nets import count_params
from neon_jax.presets import Preset

ARCHITECTURES = ("neon", "compact")
REWARD_TRANSFORMS = ("none", "symlog", "scaled")
REWARD_SCALE = 40.0 ** 3  # the paper's reward at its largest: rho = 40 cubed (§5.1)
CHECKPOINT_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Static settings of the agent.

    Attributes:
      architecture: "neon" (the original's six-branch networks, sized by the preset's feature width) or
        "compact" (beyond the paper: permutation-invariant encoders over neurons and rows, whose size does not
        depend on the padded width).
      gamma: discount of the Monte-Carlo returns (the original's effective 0.99, §12 A3).
      actor_lr / critic_lr: Adam learning rates (1e-3 each, separate optimisers).
      legacy_episode_mean_advantage: reproduce §12 A0 (actor loss = -(mean log pi) x (mean advantage)).
      batch_size: episodes rolled out in parallel per update (1 = the original's schedule).

    Beyond the paper (defaults off = faithful; each measured against the faithful agent, see README):
      reward_transform: "none" (the cubic reward as is), "symlog" (sign(r) log(1 + |r|) before the
        returns: the cubic terms span 0..64,000, so one episode that crossed the tolerance outweighs hundreds
        that did not, and the policy collapses to "keep everything") or "scaled" (r / 64,000: the paper's
        trade-off unchanged, so the same optimal policy, with O(1) targets for the critic; symlog instead
        shrinks the rho^3 bonus for ending above the original accuracy from 1,600x the in-tolerance rho to 3x).
      normalise_advantages: standardise the advantages over the valid steps of each batch (actor loss only).
      entropy_coef: weight of an entropy bonus on the policy (keeps it from collapsing before it has learnt).
      observe_progress: also feed the episode's progress (`features.progress_features`: accuracy change so
        far against tau, tau, steps taken, parameters left) through a small branch beside the six. The
        original state never says whether the tolerance is used up, which the cubic reward turns on.
      update_epochs: gradient steps taken on each batch of episodes (1 = the original's one step). More than
        one turns the actor loss into PPO's clipped surrogate (Schulman et al. 2017, `rlax`'s
        `clipped_surrogate_pg_loss`) against the policy that acted, so a batch is reused without the policy
        running away from the data; the critic regresses the same Monte-Carlo returns at every step. Episodes
        cost seconds of fine-tuning each, an update a few milliseconds: reuse is the cheap side.
      clip_epsilon: PPO's ratio clip (only used when update_epochs > 1).
    """

    architecture: str = "neon"
    gamma: float = 0.99
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    legacy_episode_mean_advantage: bool = False
    batch_size: int = 8
    reward_transform: str = "none"
    normalise_advantages: bool = False
    entropy_coef: float = 0.0
    observe_progress: bool = False
    update_epochs: int = 1
    clip_epsilon: float = 0.2

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown agent architecture {self.architecture!r}; choose one of {ARCHITECTURES}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.reward_transform not in REWARD_TRANSFORMS:
            raise ValueError(f"unknown reward_transform {self.reward_transform!r}; choose one of {REWARD_TRANSFORMS}")
        if self.entropy_coef < 0:
            raise ValueError(f"entropy_coef must be >= 0, got {self.entropy_coef}")
        if self.update_epochs < 1:
            raise ValueError(f"update_epochs must be >= 1, got {self.update_epochs}")
        if not 0.0 < self.clip_epsilon < 1.0:
            raise ValueError(f"clip_epsilon must be in (0, 1), got {self.clip_epsilon}")
        if self.update_epochs > 1 and self.legacy_episode_mean_advantage:
            raise ValueError("legacy_episode_mean_advantage reproduces the original's single update; it cannot be "
                             "combined with update_epochs > 1")

    @property
    def faithful(self) -> bool:
        """True when none of the beyond-the-paper options is on."""
        return (self.reward_transform == "none" and not self.normalise_advantages and self.entropy_coef == 0.0
                and not self.observe_progress and self.gamma == 0.99 and self.update_epochs == 1)


def warmup_episodes(n_networks: int) -> int:
    """W = min(2N, 500) uniformly random warm-up episodes (neon_spec.md §1.3)."""
    return min(2 * n_networks, 500)


# ----------------------------------------------------------------------------------------------------------
# Networks.


def _torch_uniform(fan_in):
    bound = 1.0 / np.sqrt(max(fan_in, 1))
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class TorchDense(nn.Module):
    """Dense layer with PyTorch's default initialisation (weights and bias U(+-1/sqrt(fan_in)))."""

    features: int

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        kernel = self.param("kernel", _torch_uniform(fan_in), (fan_in, self.features))
        bias = self.param("bias", _torch_uniform(fan_in), (self.features,))
        return x @ kernel + bias


class RowBatchNorm(nn.Module):
    """BatchNorm2d at batch size 1 in train mode: statistics over the rows of one observation, per channel."""

    @nn.compact
    def __call__(self, x):  # x: (rows, channels)
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        mean = x.mean(0)
        var = ((x - mean) ** 2).mean(0)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class RowBranch(nn.Module):
    """A dense map shared over rows, each followed by row batch-norm and ReLU; output flattened channel-major."""

    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x):  # (rows, inputs)
        for f in self.features:
            x = nn.relu(RowBatchNorm()(TorchDense(f)(x)))
        return x.T.reshape(-1)  # index = channel * rows + row, as PyTorch's flatten of (C, rows, 1)


class MLPBranch(nn.Module):
    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for f in self.features:
            x = nn.relu(TorchDense(f)(x))
        return x


class NeonTrunk(nn.Module):
    """The original's six branches -> (2R + 5R + 5R + 10 + 20 + 20,) features (170 for R = 10)."""

    @nn.compact
    def __call__(self, obs: Observation):
        rows = obs.net_topology.shape[0]
        per_row = lambda m: jnp.transpose(m, (1, 0, 2)).reshape(rows, -1)  # (8, R, F) -> (R, 8F)
        return jnp.concatenate([
            RowBranch((50, 5, 2), name="net_topology")(obs.net_topology),
            RowBranch((100, 10, 5), name="net_activations")(per_row(obs.net_activations)),
            RowBranch((100, 10, 5), name="net_weights")(per_row(obs.net_weights)),
            MLPBranch((10, 10, 10), name="layer_topology")(obs.layer_topology),
            MLPBranch((500, 500, 20), name="layer_activations")(obs.layer_activations.reshape(-1)),
            MLPBranch((500, 500, 20), name="layer_weights")(obs.layer_weights.reshape(-1)),
        ])


class CompactTrunk(nn.Module):
    """Beyond the paper: a permutation-invariant encoder whose size does not depend on the feature width.

    Every neuron's 8 statistics (activation and weight) are embedded by a shared MLP and pooled (mean and max
    over the layer's non-padded neurons); rows are then pooled the same way for the network-level part. The
    padded width only changes the amount of pooling, never the parameter count.
    """

    hidden: int = 64

    @nn.compact
    def __call__(self, obs: Observation):
        neuron = MLPBranch((self.hidden, self.hidden), name="neuron_encoder")

        def pool_layer(act, wts):  # (8, F) each -> (2 * hidden,)
            stats = jnp.concatenate([act, wts], axis=0).T  # (F, 16)
            alive = (jnp.abs(stats).sum(-1) > 0).astype(jnp.float32)[:, None]
            emb = neuron(stats) * alive
            n = jnp.maximum(alive.sum(), 1.0)
            return jnp.concatenate([emb.sum(0) / n, emb.max(0)])

        layer = pool_layer(obs.layer_activations, obs.layer_weights)
        rows = jax.vmap(pool_layer, in_axes=(1, 1))(obs.net_activations, obs.net_weights)  # (R, 2h)
        row_in = jnp.concatenate([rows, obs.net_topology], axis=-1)
        row_emb = MLPBranch((self.hidden,), name="row_encoder")(row_in)
        network = jnp.concatenate([row_emb.mean(0), row_emb.max(0)])
        return jnp.concatenate([layer, network, MLPBranch((10,), name="layer_topology")(obs.layer_topology)])


class AgentNet(nn.Module):
    """Trunk + 300-300 head to `outputs` (5 logits for the actor, 1 value for the critic)."""

    outputs: int
    architecture: str = "neon"
    observe_progress: bool = False

    @nn.compact
    def __call__(self, obs: Observation):
        trunk = NeonTrunk() if self.architecture == "neon" else CompactTrunk()
        x = trunk(obs)
        if self.observe_progress:
            if obs.progress is None:
                raise ValueError("this agent observes the episode's progress, but the observation has none "
                                 "(observations from a NeonEnv carry it)")
            x = jnp.concatenate([x, MLPBranch((32, 32), name="progress")(obs.progress)])
        x = MLPBranch((300, 300), name="head")(x)
        out = TorchDense(self.outputs, name="out")(x)
        return out if self.outputs > 1 else out[0]


@struct.dataclass
class AgentState:
    actor: Any
    critic: Any
    actor_opt: Any
    critic_opt: Any
    episodes: jax.Array  # () int32 episodes learnt from so far


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
        R, F = self.preset.feature_rows, self.preset.feature_width
        z = jnp.zeros
        return Observation(net_topology=z((R, 8)), net_activations=z((8, R, F)), net_weights=z((8, R, F)),
                           layer_topology=z((8,)), layer_activations=z((8, F)), layer_weights=z((8, F)),
                           progress=z((PROGRESS_FEATURES,)))

    def init(self, key) -> AgentState:
        k_a, k_c = jax.random.split(key)
        obs = self.dummy_obs()
        actor = self.actor.init(k_a, obs)
        critic = self.critic.init(k_c, obs)
        return AgentState(actor=actor, critic=critic, actor_opt=self.actor_opt.init(actor),
                          critic_opt=self.critic_opt.init(critic), episodes=jnp.int32(0))

    def num_params(self, state: AgentState) -> tuple[int, int]:
        count = lambda t: int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(t)))
        return count(state.actor), count(state.critic)

    def act(self, key, actor_params, obs: Observation, greedy: bool = False):
        """One action for one observation: sampled from pi (as the original evaluates) or argmax."""
        logits = self.actor.apply(actor_params, obs)
        return jnp.argmax(logits) if greedy else jax.random.categorical(key, logits)


# ----------------------------------------------------------------------------------------------------------
# Losses.


def monte_carlo_returns(rewards, valid, gamma):
    """(T,) discounted returns with no bootstrap: G_t = r_t + gamma G_{t+1} over the valid steps.

    Invalid steps (after the episode ended) must come last; their rewards are ignored.
    """
    rewards = jnp.where(valid, rewards, 0.0)
    discount = gamma * valid.astype(jnp.float32)
    discount = jnp.concatenate([discount[1:], jnp.zeros((1,), jnp.float32)])  # continuation into t + 1
    return rlax.discounted_returns(rewards, discount, jnp.zeros_like(rewards))


def transform_rewards(rewards, transform: str):
    """The reward the agent learns from: as is ("none"), sign(r) log(1 + |r|) ("symlog") or r / 64,000
    ("scaled")."""
    if transform == "symlog":
        return jnp.sign(rewards) * jnp.log1p(jnp.abs(rewards))
    if transform == "scaled":
        return rewards / REWARD_SCALE
    return rewards


def action_log_probs(logits, actions):
    """(..., A) logits, (...) actions -> (...) log pi(a)."""
    return jnp.take_along_axis(jax.nn.log_softmax(logits), actions[..., None], axis=-1)[..., 0]


def policy_loss(logits, actions, advantages, valid, legacy_episode_mean_advantage):
    """Actor loss of ONE episode given (stop-gradient) advantages; means over the valid steps.

    Per-step (intended): -mean_t log pi(a_t) A_t. Legacy (§12 A0): -(mean_t log pi(a_t)) * (mean_t A_t).
    """
    valid_f = valid.astype(jnp.float32)
    n = jnp.maximum(valid_f.sum(), 1.0)
    if legacy_episode_mean_advantage:
        log_pi = action_log_probs(logits, actions)
        return -((valid_f * log_pi).sum() / n) * ((valid_f * advantages).sum() / n)
    # rlax's loss is mean_t w_t log pi A_t; weights T / n on valid steps make it a mean over valid steps
    weights = valid_f * (valid.shape[0] / n)
    return rlax.policy_gradient_loss(logits, actions, advantages, weights)


def clipped_policy_loss(logits, behaviour_log_pi, actions, advantages, valid, epsilon):
    """PPO's clipped surrogate of ONE episode, a mean over the valid steps (`update_epochs` > 1).

    ratio_t = pi(a_t|s_t) / pi_behaviour(a_t|s_t); loss = -mean_t min(ratio_t A_t, clip(ratio_t, 1 +- eps) A_t).
    At ratio 1 (the first step on a batch) its gradient is the per-step policy gradient of `policy_loss`.
    """
    ratio = jnp.exp(action_log_probs(logits, actions) - behaviour_log_pi)
    valid_f = valid.astype(jnp.float32)
    # invalid steps get advantage 0, so they add 0 to rlax's mean over all T; T / n turns it into a valid mean
    loss = rlax.clipped_surrogate_pg_loss(ratio, valid_f * advantages, epsilon)
    return loss * valid.shape[0] / jnp.maximum(valid_f.sum(), 1.0)


def policy_entropy(logits, valid):
    """Mean entropy of pi over the valid steps of ONE episode."""
    valid_f = valid.astype(jnp.float32)
    log_p = jax.nn.log_softmax(logits)
    ent = -(jnp.exp(log_p) * log_p).sum(-1)
    return (valid_f * ent).sum() / jnp.maximum(valid_f.sum(), 1.0)


def actor_critic_losses(logits, values, actions, rewards, valid, gamma, legacy_episode_mean_advantage):
    """Losses of ONE episode (T steps), the faithful way.

    Returns (actor_loss, critic_loss, advantages). Per-step (intended): -mean_t log pi(a_t) A_t.
    Legacy (§12 A0): -(mean_t log pi(a_t)) * (mean_t A_t), the original's broadcast. Critic: mean_t A_t^2.
    Means run over the valid steps only.
    """
    valid_f = valid.astype(jnp.float32)
    n = jnp.maximum(valid_f.sum(), 1.0)
    advantages = monte_carlo_returns(rewards, valid, gamma) - values
    actor = policy_loss(logits, actions, jax.lax.stop_gradient(advantages), valid, legacy_episode_mean_advantage)
    critic = (valid_f * advantages ** 2).sum() / n
    return actor, critic, advantages


def normalise_over_valid(x, valid):
    """(x - mean) / std over the valid entries of a (B, T) array; invalid entries become 0."""
    valid_f = valid.astype(jnp.float32)
    n = jnp.maximum(valid_f.sum(), 1.0)
    mean = (valid_f * x).sum() / n
    std = jnp.sqrt((valid_f * (x - mean) ** 2).sum() / n)
    return valid_f * (x - mean) / (std + 1e-8)


# ----------------------------------------------------------------------------------------------------------
# Roll-outs and the training iteration.


def make_agent_rollout(env: NeonEnv, agent: Agent):
    """Roll-out of ONE environment with the actor: (key, env_params, actor_params, random_actions, greedy) ->
    (final_state, trajectory with obs (T, ...), actions, rewards, valid, info). Vmap it over environments."""

    def rollout(key, params: EnvParams, actor_params, random_actions, greedy):
        k_reset, k_run = jax.random.split(key)
        obs, state = env.reset(k_reset, params)

        def body(carry, key):
            obs, state = carry
            k_act, k_rand, k_step = jax.random.split(key, 3)
            logits = agent.actor.apply(actor_params, obs)
            policy_action = jnp.where(greedy, jnp.argmax(logits), jax.random.categorical(k_act, logits))
            action = jnp.where(random_actions, jax.random.randint(k_rand, (), 0, NUM_ACTIONS), policy_action)
            valid = ~state.done
            action = jnp.where(valid, action, 0)
            next_obs, state, reward, _, _, info = env.step(k_step, state, action, params)
            return (next_obs, state), {"obs": obs, "action": action, "reward": reward, "valid": valid, "info": info}

        (_, state), traj = jax.lax.scan(body, (obs, state), jax.random.split(k_run, env.max_steps))
        return state, traj

    return rollout


def make_agent_rollout_batch(env: NeonEnv, agent: Agent, slots="auto"):
    """Roll-outs of a batch of environments with the actor, stepped together with `NeonEnv.step_batch`:
    ``(keys (B, 2), env_params (B, ...), actor_params, random_actions, greedy) -> (final_state, trajectory)``,
    the same as ``vmap(make_agent_rollout(env, agent), in_axes=(0, 0, None, None, None))`` (same keys, so the
    same actions and numbers up to float rounding), with the trajectory's leading axes (B, T). One `lax.scan`
    over the steps of the whole batch: each step's fine-tunes are packed into `slots` (see `step_batch`), and
    environments that have finished take no fine-tuning slot."""
    num_steps = env.max_steps

    def rollout(keys, params: EnvParams, actor_params, random_actions, greedy):
        k_reset, k_run = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        obs, state = jax.vmap(env.reset)(k_reset, params)
        step_keys = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, num_steps))(k_run), 1, 0)  # (T, B, 2)

        def act(key, obs, done):
            k_act, k_rand, k_step = jax.random.split(key, 3)
            logits = agent.actor.apply(actor_params, obs)
            policy_action = jnp.where(greedy, jnp.argmax(logits), jax.random.categorical(k_act, logits))
            action = jnp.where(random_actions, jax.random.randint(k_rand, (), 0, NUM_ACTIONS), policy_action)
            return jnp.where(done, 0, action), k_step

        def body(carry, keys_t):
            obs, state = carry
            action, k_step = jax.vmap(act)(keys_t, obs, state.done)
            valid = ~state.done
            next_obs, state, reward, _, _, info = env.step_batch(k_step, state, action, params, slots)
            return (next_obs, state), {"obs": obs, "action": action, "reward": reward, "valid": valid, "info": info}

        (_, state), traj = jax.lax.scan(body, (obs, state), step_keys)
        return state, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), traj)

    return rollout


def make_train_iteration(env: NeonEnv, agent: Agent, slots="auto"):
    """The whole training iteration as one jitted function.

    ``iteration(agent_state, env_params (leading axis B), key, warmup) -> (agent_state, metrics)``: rolls
    out B episodes in parallel (uniform random actions when `warmup`), computes returns and losses, and takes
    one Adam step for the actor and one for the critic on the batch mean (`update_epochs` steps, PPO-clipped,
    when the config asks for more than one). `slots`: see `NeonEnv.step_batch`.
    """
    rollout = make_agent_rollout_batch(env, agent, slots)
    cfg = agent.config

    def batch_loss(actor_params, critic_params, trajs):
        """(actor loss, critic loss) of a batch of episodes: means over episodes of per-episode means."""
        apply = lambda net, p: jax.vmap(jax.vmap(lambda o: net.apply(p, o)))(trajs["obs"])  # (B, T, ...)
        logits, values = apply(agent.actor, actor_params), apply(agent.critic, critic_params)
        valid = trajs["valid"]
        rewards = transform_rewards(trajs["reward"], cfg.reward_transform)
        returns = jax.vmap(monte_carlo_returns, in_axes=(0, 0, None))(rewards, valid, cfg.gamma)
        advantages = returns - values
        valid_f = valid.astype(jnp.float32)
        critic = ((valid_f * advantages ** 2).sum(-1) / jnp.maximum(valid_f.sum(-1), 1.0)).mean()
        adv = jax.lax.stop_gradient(advantages)
        if cfg.normalise_advantages:
            adv = normalise_over_valid(adv, valid)
        actor = jax.vmap(policy_loss, in_axes=(0, 0, 0, 0, None))(
            logits, trajs["action"], adv, valid, cfg.legacy_episode_mean_advantage).mean()
        if cfg.entropy_coef:
            actor = actor - cfg.entropy_coef * jax.vmap(policy_entropy)(logits, valid).mean()
        return actor, critic

    def adam_step(state: AgentState, total):
        """One Adam step of each net on `total(actor, critic) -> (actor + critic loss, (actor, critic))`.

        One backward pass for both nets: the actor loss sees the advantages through a stop-gradient and the
        critic loss does not touch the actor, so d(actor + critic) splits into the two separate gradients."""
        (_, losses), (actor_grad, critic_grad) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
            state.actor, state.critic)
        a_upd, a_opt = agent.actor_opt.update(actor_grad, state.actor_opt, state.actor)
        c_upd, c_opt = agent.critic_opt.update(critic_grad, state.critic_opt, state.critic)
        return state.replace(actor=optax.apply_updates(state.actor, a_upd),
                             critic=optax.apply_updates(state.critic, c_upd), actor_opt=a_opt, critic_opt=c_opt), losses

    def proximal_epochs(state: AgentState, trajs):
        """`update_epochs` Adam steps on one batch: advantages from the critic that saw the batch, the actor's
        clipped surrogate against the policy that acted. Returns (state, losses of the first step)."""
        apply = lambda net, p: jax.vmap(jax.vmap(lambda o: net.apply(p, o)))(trajs["obs"])  # (B, T, ...)
        valid, actions = trajs["valid"], trajs["action"]
        valid_f = valid.astype(jnp.float32)
        rewards = transform_rewards(trajs["reward"], cfg.reward_transform)
        returns = jax.vmap(monte_carlo_returns, in_axes=(0, 0, None))(rewards, valid, cfg.gamma)
        behaviour_log_pi = action_log_probs(apply(agent.actor, state.actor), actions)
        adv = returns - apply(agent.critic, state.critic)
        adv = normalise_over_valid(adv, valid) if cfg.normalise_advantages else adv
        adv = jax.lax.stop_gradient(adv)

        def total(actor_params, critic_params):
            logits, values = apply(agent.actor, actor_params), apply(agent.critic, critic_params)
            critic = ((valid_f * (returns - values) ** 2).sum(-1) / jnp.maximum(valid_f.sum(-1), 1.0)).mean()
            actor = jax.vmap(clipped_policy_loss, in_axes=(0, 0, 0, 0, 0, None))(
                logits, behaviour_log_pi, actions, adv, valid, cfg.clip_epsilon).mean()
            if cfg.entropy_coef:
                actor = actor - cfg.entropy_coef * jax.vmap(policy_entropy)(logits, valid).mean()
            return actor + critic, (actor, critic)

        state, first = adam_step(state, total)
        state, _ = jax.lax.scan(lambda s, _: adam_step(s, total), state, None, length=cfg.update_epochs - 1)
        return state, first

    def iteration(state: AgentState, params: EnvParams, key, warmup):
        keys = jax.random.split(key, params.tau.shape[0])
        final, trajs = rollout(keys, params, state.actor, warmup, False)
        if cfg.update_epochs > 1:
            new_state, (actor_loss, critic_loss) = proximal_epochs(state, trajs)
        else:
            new_state, (actor_loss, critic_loss) = adam_step(
                state, lambda a, c: (lambda l: (l[0] + l[1], l))(batch_loss(a, c, trajs)))
        new_state = new_state.replace(episodes=state.episodes + params.tau.shape[0])
        valid = trajs["valid"].astype(jnp.float32)
        compression = count_params(params.arch) / jnp.maximum(count_params(final.arch), 1)
        metrics = {
            "return": (trajs["reward"] * valid).sum(-1),  # (B,)
            "compression": compression,
            "acc_change": 100.0 * (final.acc - final.acc0),
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "steps": valid.sum(-1),
            "keep_actions": ((trajs["action"] == 0) & trajs["valid"]).astype(jnp.float32).sum(-1) / jnp.maximum(valid.sum(-1), 1),
        }
        return new_state, metrics

    return jax.jit(iteration)


def make_evaluate(env: NeonEnv, agent: Agent, slots="auto"):
    """Jitted evaluation of the actor on a batch of environments (no learning):
    ``evaluate(actor_params, env_params, key, greedy, random_actions) -> (final_state, trajectory)`` with
    trajectory (B, T, ...) minus the observations. `random_actions` gives the random agent of the same
    environment (the actor is then ignored). `slots`: see `NeonEnv.step_batch`."""
    rollout = make_agent_rollout_batch(env, agent, slots)

    def evaluate(actor_params, params: EnvParams, key, greedy, random_actions):
        keys = jax.random.split(key, params.tau.shape[0])
        final, traj = rollout(keys, params, actor_params, random_actions, greedy)
        traj = {k: v for k, v in traj.items() if k != "obs"}
        return final, traj

    return jax.jit(evaluate)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints.


def save_checkpoint(path, state: AgentState, config: AgentConfig, preset: Preset, extra: dict | None = None) -> Path:
    """Writes ``<path>.npz`` (all arrays: actor, critic, optimiser states, episode count) and ``<path>.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves, _ = jax.tree_util.tree_flatten(jax.device_get(state))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    tmp.replace(path.with_suffix(".npz"))
    doc = {"format": CHECKPOINT_FORMAT, "agent": dataclasses.asdict(config), "preset": dataclasses.asdict(preset),
           "episodes": int(state.episodes), "n_leaves": len(leaves), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    return path.with_suffix(".npz")


def load_checkpoint(path) -> tuple[Agent, AgentState, dict]:
    """Loads a checkpoint written by `save_checkpoint`: (agent, state, metadata)."""
    path = Path(path)
    npz, meta_path = path.with_suffix(".npz"), path.with_suffix(".json")
    if not npz.exists() or not meta_path.exists():
        raise FileNotFoundError(f"no agent checkpoint at {path} (expected {npz.name} and {meta_path.name})")
    doc = json.loads(meta_path.read_text())
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{meta_path}: unsupported agent checkpoint format {doc.get('format')!r}")
    preset_doc = dict(doc["preset"])
    preset_doc["widths"] = tuple(preset_doc["widths"])
    preset = Preset(**preset_doc)
    agent = Agent(AgentConfig(**doc["agent"]), preset)
    template = agent.init(jax.random.PRNGKey(0))
    leaves, treedef = jax.tree_util.tree_flatten(template)
    with np.load(npz) as data:
        loaded = [data[f"leaf_{i:05d}"] for i in range(len(data.files))]
    if len(loaded) != len(leaves) or any(a.shape != np.shape(b) for a, b in zip(loaded, leaves)):
        raise ValueError(f"{npz}: the arrays do not fit an agent of this config and preset")
    state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in loaded])
    return agent, state, doc


def save_policy(path, actor_params, config: AgentConfig, preset: Preset, extra: dict | None = None) -> Path:
    """Writes only the actor (what pruning needs) as ``<path>.npz`` (compressed) + ``<path>.json``.

    This is the shipped form of a trained agent: a quarter of a training checkpoint (no critic, no optimiser
    moments), loadable with `load_policy`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(actor_params))[0]
    arrays = {"/".join(str(getattr(k, "key", k)) for k in key_path): np.asarray(leaf, np.float32)
              for key_path, leaf in flat}
    np.savez_compressed(path.with_suffix(".npz"), **arrays)
    doc = {"format": "neon_jax.policy/1", "agent": dataclasses.asdict(config), "preset": dataclasses.asdict(preset),
           **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    return path.with_suffix(".npz")


def load_policy(path) -> tuple[Agent, Any, dict]:
    """Loads an actor written by `save_policy` (or the actor of a `save_checkpoint` file): (agent, actor, meta)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.exists() or not path.with_suffix(".npz").exists():
        raise FileNotFoundError(f"no agent at {path} (expected {path.with_suffix('.npz').name} and {meta_path.name})")
    doc = json.loads(meta_path.read_text())
    if doc.get("format") == CHECKPOINT_FORMAT:
        agent, state, doc = load_checkpoint(path)
        return agent, state.actor, doc
    if doc.get("format") != "neon_jax.policy/1":
        raise ValueError(f"{meta_path} is not a neon_jax agent (format {doc.get('format')!r})")
    preset_doc = dict(doc["preset"])
    preset_doc["widths"] = tuple(preset_doc["widths"])
    agent = Agent(AgentConfig(**doc["agent"]), Preset(**preset_doc))
    template = agent.actor.init(jax.random.PRNGKey(0), agent.dummy_obs())
    with np.load(path.with_suffix(".npz")) as data:
        def fill(key_path, leaf):
            name = "/".join(str(getattr(k, "key", k)) for k in key_path)
            if name not in data.files or data[name].shape != leaf.shape:
                raise ValueError(f"{path.with_suffix('.npz')}: array {name!r} is missing or has the wrong shape")
            return jnp.asarray(data[name])

        actor = jax.tree_util.tree_map_with_path(fill, template)
    return agent, actor, doc
