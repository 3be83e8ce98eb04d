"""The agent's update and training iteration, in the shape of PureJaxRL's `make_train`.

    update = make_update(agent)
    agent_state, metrics = update(agent_state, transitions)       # transitions: (B, T) rollout.Transition

    iteration = make_train_iteration(env, agent)                   # roll-out, then update, under one jit
    agent_state, metrics = iteration(agent_state, env_params, key, warmup)

Learning (neon_spec.md §6.2): Monte-Carlo returns of whole episodes (no bootstrap), advantage A = G - V(s), the
actor minimises -mean_t log pi(a_t|s_t) A_t (each step its own advantage; the original's episode-mean advantage,
§12 A0, behind `legacy_episode_mean_advantage`), the critic mean_t A_t^2, separate Adam optimisers, one step each
on the batch mean. With `update_epochs` > 1 (beyond the paper) the batch is reused for that many steps on PPO's
clipped surrogate against the policy that acted; the advantages are those of the critic that saw the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from neon_jax.agent.agent import Agent, AgentState
from neon_jax.agent.losses import (
    action_log_probs,
    advantages,
    clipped_policy_loss,
    critic_loss,
    policy_entropy,
    policy_loss,
    returns_of,
)
from neon_jax.env import EnvParams, NeonEnv
from neon_jax.nets import count_params
from neon_jax.rollout import Transition, make_rollout


def make_update(agent: Agent):
    """``update(agent_state, transitions) -> (agent_state, {"actor_loss", "critic_loss"})``, pure and jittable.

    `transitions` is a (B, T) `rollout.Transition` (observations included). The losses reported are those of the
    first gradient step (the only one unless `update_epochs` > 1).
    """
    cfg = agent.config

    def forward(actor_params, critic_params, obs):
        apply = lambda net, p: jax.vmap(jax.vmap(lambda o: net.apply(p, o)))(obs)  # noqa: E731  (B, T, ...)
        return apply(agent.actor, actor_params), apply(agent.critic, critic_params)

    def actor_loss(logits, t: Transition, adv, behaviour_log_pi):
        if behaviour_log_pi is None:
            loss = jax.vmap(policy_loss, in_axes=(0, 0, 0, 0, None))(
                logits, t.action, adv, t.valid, cfg.legacy_episode_mean_advantage).mean()
        else:
            loss = jax.vmap(clipped_policy_loss, in_axes=(0, 0, 0, 0, 0, None))(
                logits, behaviour_log_pi, t.action, adv, t.valid, cfg.clip_epsilon).mean()
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * jax.vmap(policy_entropy)(logits, t.valid).mean()
        return loss

    def adam_step(state: AgentState, total):
        """One Adam step of each net on ``total(actor, critic) -> (actor + critic loss, (actor, critic))``.

        One backward pass for both nets: the actor loss sees the advantages through a stop-gradient and the
        critic loss does not touch the actor, so d(actor + critic) splits into the two separate gradients."""
        (_, losses), (actor_grad, critic_grad) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
            state.actor, state.critic)
        a_upd, a_opt = agent.actor_opt.update(actor_grad, state.actor_opt, state.actor)
        c_upd, c_opt = agent.critic_opt.update(critic_grad, state.critic_opt, state.critic)
        return state.replace(actor=optax.apply_updates(state.actor, a_upd),
                             critic=optax.apply_updates(state.critic, c_upd), actor_opt=a_opt, critic_opt=c_opt), losses

    def update(state: AgentState, t: Transition):
        returns = returns_of(t.reward, t.valid, cfg.gamma, cfg.reward_transform)
        if cfg.update_epochs == 1:  # advantages from this very forward pass of the critic
            def total(actor_params, critic_params):
                logits, values = forward(actor_params, critic_params, t.obs)
                adv = advantages(returns, values, t.valid, cfg.normalise_advantages)
                actor, critic = actor_loss(logits, t, adv, None), critic_loss(returns, values, t.valid)
                return actor + critic, (actor, critic)

            new_state, (actor, critic) = adam_step(state, total)
        else:  # PPO: advantages and behaviour log-probabilities fixed by the nets that saw the batch
            logits0, values0 = forward(state.actor, state.critic, t.obs)
            behaviour_log_pi = jax.lax.stop_gradient(action_log_probs(logits0, t.action))
            adv = advantages(returns, values0, t.valid, cfg.normalise_advantages)

            def total(actor_params, critic_params):
                logits, values = forward(actor_params, critic_params, t.obs)
                actor, critic = actor_loss(logits, t, adv, behaviour_log_pi), critic_loss(returns, values, t.valid)
                return actor + critic, (actor, critic)

            new_state, (actor, critic) = adam_step(state, total)
            new_state, _ = jax.lax.scan(lambda s, _: adam_step(s, total), new_state, None,
                                        length=cfg.update_epochs - 1)
        new_state = new_state.replace(episodes=state.episodes + t.action.shape[0])
        return new_state, {"actor_loss": actor, "critic_loss": critic}

    return update


def make_train_iteration(env: NeonEnv, agent: Agent):
    """The whole training iteration as one jitted function: a roll-out of the batch, then `make_update`'s update.

    ``iteration(agent_state, env_params (leading axis B), key, warmup) -> (agent_state, metrics)``: B episodes
    in parallel (uniform random actions when `warmup`, learnt from all the same, §6.2 step 7; else sampled
    from the actor), then the update. Metrics: per episode (B,) return, compression, acc_change (validation,
    points), steps, keep_actions (share of "keep" actions); actor_loss and critic_loss.
    """
    rollout = make_rollout(env, agent.act_fn)
    update = make_update(agent)

    def iteration(state: AgentState, params: EnvParams, key, warmup):
        keys = jax.random.split(key, params.tau.shape[0])
        final, t = rollout(keys, params, agent.policy(state.actor, greedy=False, uniform=warmup))
        new_state, losses = update(state, t)
        valid = t.valid.astype(jnp.float32)
        metrics = {
            "return": (t.reward * valid).sum(-1),
            "compression": count_params(params.arch) / jnp.maximum(count_params(final.arch), 1),
            "acc_change": 100.0 * (final.acc - final.acc0),
            "steps": valid.sum(-1),
            "keep_actions": ((t.action == 0) & t.valid).astype(jnp.float32).sum(-1) / jnp.maximum(valid.sum(-1), 1),
            **losses,
        }
        return new_state, metrics

    return jax.jit(iteration)
