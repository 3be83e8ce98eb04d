"""AMC's search of one network (`search`), and `prune`: prepare, search, apply the best strategy."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from neon_jax import fit, nets
from neon_jax.amc.config import AMCConfig
from neon_jax.amc.ddpg import actor_apply, ddpg_init, ddpg_update, replay_add, replay_init, replay_sample
from neon_jax.amc.network import Network, apply_strategy, budget_wall, channel_count, flops_kept, prepare, step_sizes


@struct.dataclass
class SearchResult:
    """A search's outcome for one network.

    Attributes:
      counts / pruned: (S,) the best strategy's inputs kept per step and whether the step's Linear was refit.
      ratios: (S,) its realised keep ratio per step (1 for the first Linear and past the network).
      best_reward / best_val_acc / best_flops_ratio: () its reward, validation accuracy (no fine-tune) and FLOPs
        over the original's.
      episode_reward / episode_val_acc / episode_flops_ratio: (episodes,) every episode's, in order.
    """

    counts: jax.Array
    pruned: jax.Array
    ratios: jax.Array
    best_reward: jax.Array
    best_val_acc: jax.Array
    best_flops_ratio: jax.Array
    episode_reward: jax.Array
    episode_val_acc: jax.Array
    episode_flops_ratio: jax.Array


def prune(key: jax.Array, model: nets.MaskedMLP, variables: dict, arch: nets.Arch, dims: nets.NetDims,
          calibration: fit.PaddedData, val: fit.PaddedData, preserve_ratio,
          config: AMCConfig) -> tuple[dict, nets.Arch, SearchResult]:
    """AMC on one network (vmap it for many): `prepare`, `search`, and the best strategy applied.

    Args:
      key: all the randomness (calibration rows, agent init, actions, replay batches).
      variables / arch: the network to prune. calibration / val: its fine-tune and validation splits
        (PaddedData, no leading axis). preserve_ratio: () traced share of FLOPs to keep (AMC: 0.2).
    Returns:
      (variables, arch) of the pruned network (not fine-tuned), and the `SearchResult`.
    """
    k_prep, k_search = jax.random.split(key)
    net = prepare(k_prep, model, variables, arch, dims, calibration, config)
    result = search(k_search, net, model, variables, arch, dims, val, preserve_ratio, config)
    pv, parch = apply_strategy(variables, arch, dims, net, result.counts, result.pruned, config.channel_round)
    return pv, parch, result


def search(key: jax.Array, net: Network, model: nets.MaskedMLP, variables: dict, arch: nets.Arch,
           dims: nets.NetDims, val: fit.PaddedData, preserve_ratio, config: AMCConfig) -> SearchResult:
    """AMC's DDPG search of one prepared network: `config.episodes` episodes, the best reward's strategy kept.

    Args:
      key: the agent's init, actions and replay batches. net: `prepare`'s. val: the validation split.
      preserve_ratio: () traced share of FLOPs to keep.
    Returns:
      `SearchResult`.
    """
    S = dims.max_hidden + 1
    E = config.parallel_episodes
    k_agent, k_run = jax.random.split(key)
    trainer = fit.make_trainer(model)
    n_steps = arch.depth + 1
    org = net.flops.sum()
    lb = config.lbound
    init_in = jnp.where(jnp.arange(S) == 0, 1.0, lb)
    init_out = jnp.where(jnp.arange(S) == arch.depth, 1.0, lb)
    fan_in, fan_out, _ = step_sizes(arch, dims)
    weights = jnp.where(net.valid, fan_in * fan_out, 0.0)
    rest0 = (weights.sum() - weights[0]) / weights.sum()  # the reset's "rest" counts weights
    ctx = _Search(net=net, trainer=trainer, variables=variables, arch=arch, dims=dims, val=val,
                  preserve_ratio=preserve_ratio, config=config, n_steps=n_steps, org=org, init_in=init_in,
                  init_out=init_out, rest0=rest0)
    capacity = config.replay_per_layer * S
    agent0 = ddpg_init(k_agent, config)
    rb0 = replay_init(capacity, config.replay_per_layer * n_steps)
    best0 = {"reward": -jnp.inf, "d": jnp.zeros((S,)), "pruned": jnp.zeros((S,), bool), "ratio": jnp.ones((S,)),
             "acc": jnp.float32(0.0), "flops": jnp.float32(1.0)}
    rounds = config.episodes // E
    (_, _, best), (rewards, accs, frs) = jax.lax.scan(
        functools.partial(_round, ctx), (agent0, rb0, best0), (jnp.arange(rounds), jax.random.split(k_run, rounds)))
    return SearchResult(counts=best["d"], pruned=best["pruned"], ratios=best["ratio"], best_reward=best["reward"],
                        best_val_acc=best["acc"], best_flops_ratio=best["flops"],
                        episode_reward=rewards.reshape(-1), episode_val_acc=accs.reshape(-1),
                        episode_flops_ratio=frs.reshape(-1))


@dataclasses.dataclass(frozen=True)
class _Search:
    """What the episodes and rounds of one `search` share (traced values, computed once at its start).

    Attributes:
      net / variables / arch / dims: the prepared network. trainer: `fit.make_trainer` of its model.
      val: the validation split (one split, no leading axis). preserve_ratio / config: `search`'s.
      n_steps: () the network's steps, depth + 1. org: () its FLOPs.
      init_in / init_out: (S,) the input and output keep ratios an episode starts from. rest0: () the first
        state's "rest" (in weights).
    """

    net: Network
    trainer: Any
    variables: dict
    arch: nets.Arch
    dims: nets.NetDims
    val: fit.PaddedData
    preserve_ratio: Any
    config: AMCConfig
    n_steps: jax.Array
    org: jax.Array
    init_in: jax.Array
    init_out: jax.Array
    rest0: jax.Array


def _episode(ctx: _Search, key, actor, episode_index):
    """One episode: the actor with noise, or uniform actions while in warm-up. Returns (transitions, reward,
    validation accuracy, FLOPs ratio)."""
    config, net, S = ctx.config, ctx.net, ctx.dims.max_hidden + 1
    warm = episode_index <= config.warmup
    delta = config.init_delta * config.delta_decay ** (episode_index - config.warmup).astype(jnp.float32)
    step = functools.partial(_episode_step, ctx, actor, warm, delta)
    obs0 = net.embedding[0].at[8].set(ctx.rest0)
    (in_r, out_r, _), tr = jax.lax.scan(step, (ctx.init_in, ctx.init_out, obs0),
                                           (jnp.arange(S), jax.random.split(key, S)))
    pv, parch = apply_strategy(ctx.variables, ctx.arch, ctx.dims, net, tr["d"], tr["pruned"], config.channel_round)
    acc = fit.accuracy(ctx.trainer.learner, pv, parch, ctx.val)
    flops = flops_kept(net.flops, in_r, out_r)
    reward = -(1.0 - acc) * jnp.log(flops)
    return tr, reward, acc, flops / ctx.org


def _episode_step(ctx: _Search, actor, warm, delta, carry, inputs):
    """Step t of an episode (a scan body): the action, walled by the budget, as a channel count and realised ratio;
    the carried (input ratios, output ratios, state) and the step's transition."""
    config, net, org, n_steps = ctx.config, ctx.net, ctx.org, ctx.n_steps
    S, lb = ctx.dims.max_hidden + 1, config.lbound
    in_r, out_r, obs = carry
    t, k = inputs
    k_u, k_n = jax.random.split(k)
    random_a = jax.random.uniform(k_u, (), minval=lb, maxval=config.rbound)
    mu = actor_apply(actor, obs)
    lo, hi = (lb - mu) / delta, (config.rbound - mu) / delta
    noisy = mu + delta * jax.random.truncated_normal(k_n, lo, hi)
    a = jnp.where(warm, random_a, jnp.clip(noisy, lb, config.rbound))
    wall = budget_wall(a, t, in_r, out_r, net.flops, ctx.preserve_ratio, lb)
    d, pruned = channel_count(net.n_in[t], wall, config.channel_round)
    realised = jnp.where(pruned, d / jnp.maximum(net.n_in[t], 1.0), 1.0)
    live = t < n_steps
    in_r = jnp.where(live & (jnp.arange(S) == t), realised, in_r)
    out_r = jnp.where(live & (jnp.arange(S) == t - 1), realised, out_r)
    last = t == n_steps - 1
    nxt = jnp.minimum(t + 1, S - 1)
    reduced = (org - flops_kept(net.flops, in_r, out_r)) / org
    rest = jnp.where(jnp.arange(S) > nxt, net.flops, 0.0).sum() / org
    next_obs = net.embedding[nxt].at[7].set(reduced).at[8].set(rest).at[9].set(realised)
    next_obs = jnp.where(last, obs, next_obs)
    out = {"s": obs, "a": a, "s2": next_obs, "not_done": 1.0 - last.astype(jnp.float32), "valid": live,
           "d": d, "pruned": pruned & live, "ratio": jnp.where(live, realised, 1.0)}
    return (in_r, out_r, jnp.where(live, next_obs, obs)), out


def _round(ctx: _Search, carry, inputs):
    """One round (a scan body): `config.parallel_episodes` episodes under vmap, the best kept in episode order, and
    their transitions observed by the agent. Carries (agent, replay, best); gives (rewards, accuracies, FLOPs
    ratios) of the round's episodes."""
    config, S, E = ctx.config, ctx.dims.max_hidden + 1, ctx.config.parallel_episodes
    agent, rb, best = carry
    r_index, k = inputs
    k_ep, k_up = jax.random.split(k)
    indices = r_index * E + jnp.arange(E)
    tr, reward, acc, fr = jax.vmap(functools.partial(_episode, ctx), in_axes=(0, None, 0))(
        jax.random.split(k_ep, E), agent.actor, indices)
    for i in range(E):  # the best in episode order (strictly better replaces, as the original)
        better = reward[i] > best["reward"]
        cand = {"reward": reward[i], "d": tr["d"][i], "pruned": tr["pruned"][i], "ratio": tr["ratio"][i],
                "acc": acc[i], "flops": fr[i]}
        best = jax.tree_util.tree_map(lambda c, b: jnp.where(better, c, b), cand, best)
    flat = jax.tree_util.tree_map(lambda x: x.reshape((E * S,) + x.shape[2:]), tr)
    ep_of = jnp.repeat(indices, S)
    rewards = jnp.repeat(reward, S)

    # the round's transitions in episode order, the real ones first (each keeps its own key): the loop
    # runs for as many as there are (under vmap: the batch's most), not for every padded step
    order = jnp.argsort(~flat["valid"], stable=True)
    flat, rewards, ep_of = jax.tree_util.tree_map(lambda x: x[order], (flat, rewards, ep_of))
    keys = jax.random.split(k_up, E * S)[order]
    observe = functools.partial(_observe, config, flat, rewards, ep_of, keys)
    n_real = flat["valid"].sum()
    # rounds of warm-up episodes only fill the replay; only a round that straddles the end of warm-up
    # (parallel episodes) decides per transition
    branch = jnp.where(indices[0] > config.warmup, 1, jnp.where(indices[-1] > config.warmup, 2, 0))
    agent, rb = jax.lax.switch(
        branch, [lambda c, learn=learn: jax.lax.fori_loop(0, n_real, lambda i, c: observe(i, c, learn), c)
                 for learn in ("none", "all", "some")], (agent, rb))
    return (agent, rb, best), (reward, acc, fr)


def _observe(config: AMCConfig, flat, rewards, ep_of, keys, i, carry, learn: str):
    """Transition i into the replay, then (learn "all" / "some": if its episode is past warm-up) an update."""
    agent, rb = carry
    x = jax.tree_util.tree_map(lambda a: a[i], flat)
    rb = replay_add(rb, x["s"], x["a"], rewards[i], x["s2"], x["not_done"])
    if learn == "none":
        return agent, rb
    idx = replay_sample(keys[i], rb, config.batch_size)
    new_agent, _ = ddpg_update(agent, rb.s[idx], rb.a[idx], rb.r[idx], rb.s2[idx], rb.not_done[idx], config)
    if learn == "some":
        new_agent = jax.tree_util.tree_map(lambda n, o: jnp.where(ep_of[i] > config.warmup, n, o),
                                           new_agent, agent)
    return new_agent, rb
