"""Returns, advantages and the actor-critic losses of episodes (rlax), as pure functions of arrays.

Shapes: one episode is (T,) steps (logits (T, A)); `valid` marks the steps taken (invalid steps come last and
take no part in any mean).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import rlax

from neon_jax.choices import REWARD_SCALE


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
    with warnings.catch_warnings():  # rlax's own use of its softmax (it would tell our users to switch to distrax)
        warnings.filterwarnings("ignore", "Rlax softmax will be deprecated", PendingDeprecationWarning)
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


def returns_of(rewards, valid, gamma: float, transform: str = "none"):
    """(B, T) Monte-Carlo returns of a batch of episodes of the rewards as the agent learns them (`transform`)."""
    return jax.vmap(monte_carlo_returns, in_axes=(0, 0, None))(transform_rewards(rewards, transform), valid, gamma)


def advantages(returns, values, valid, normalise: bool = False):
    """(B, T) advantages A = G - V(s) of a batch of episodes, held constant for the actor (stop-gradient);
    `normalise` standardises them over the valid steps of the batch (beyond the paper)."""
    adv = jax.lax.stop_gradient(returns - values)
    return normalise_over_valid(adv, valid) if normalise else adv


def critic_loss(returns, values, valid):
    """The critic's loss of a batch of episodes: the mean over episodes of mean_t (G_t - V(s_t))^2 (valid t)."""
    valid_f = valid.astype(jnp.float32)
    return ((valid_f * (returns - values) ** 2).sum(-1) / jnp.maximum(valid_f.sum(-1), 1.0)).mean()


def actor_critic_losses(logits, values, actions, rewards, valid, gamma, legacy_episode_mean_advantage):
    """Losses of ONE episode (T steps), the faithful way: (actor_loss, critic_loss, advantages).

    Per-step (intended): -mean_t log pi(a_t) A_t. Legacy (§12 A0): -(mean_t log pi(a_t)) * (mean_t A_t), the
    original's broadcast. Critic: mean_t A_t^2. Means run over the valid steps only.
    """
    returns = monte_carlo_returns(rewards, valid, gamma)
    adv = returns - values
    actor = policy_loss(logits, actions, advantages(returns, values, valid), valid, legacy_episode_mean_advantage)
    critic = critic_loss(returns[None], values[None], valid[None])
    return actor, critic, adv


def normalise_over_valid(x, valid):
    """(x - mean) / std over the valid entries of a (B, T) array; invalid entries become 0."""
    valid_f = valid.astype(jnp.float32)
    n = jnp.maximum(valid_f.sum(), 1.0)
    mean = (valid_f * x).sum() / n
    std = jnp.sqrt((valid_f * (x - mean) ** 2).sum() / n)
    return valid_f * (x - mean) / (std + 1e-8)

