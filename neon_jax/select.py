"""Choosing one pruning among many: the rule, and the program that rolls out many episodes per network.

A candidate is a network an episode passes through: the original, and the network after every step of every
episode. The rule: the candidate with the fewest parameters whose validation accuracy change is at least -tau
(Delta = 100 (acc - acc0) points, the reward's Delta, so a network the reward counts as within the tolerance is
one the rule may choose); ties go to the higher validation accuracy, then to the earlier episode and step. The
original always qualifies (Delta = 0), so nothing that breaks the tolerance on the validation split comes back.
The test split takes no part in the choice.

    program = candidates_program(env, agent.act_fn, sampled=8, greedy=True)
    outcome = program(keys, env_params (B networks), agent.policy(actor))   # keys (B, 2); the chosen ones

Each network runs `sampled` episodes of the policy (episode 0 with the network's own key, as the single-episode
program `rollout.policy_program` runs it, so it is that program's episode; episode e with ``fold_in(key, e)``)
and, with `greedy`, one with argmax actions, all in one batched roll-out of B x E environments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from neon_jax import compile_cache, nets, programs, sharding
from neon_jax import search as search_lib
from neon_jax.agent import ActorPolicy
from neon_jax.choice_rule import better, within_tolerance  # noqa: F401 (the rule; re-exported)
from neon_jax.choices import SELECTIONS
from neon_jax.env import EnvParams, NeonEnv
from neon_jax.rollout import ActFn, Outcome, Tap, make_rollout


def choose(n_params, acc, acc0: float, tau: float, valid=None) -> tuple[int, int]:
    """The rule on a table of candidates (host NumPy): (index of the chosen one, candidates within tau).

    Args:
      n_params: (N,) parameters of each candidate, in (episode, step) order.
      acc: (N,) validation accuracies (fractions).
      acc0: the original's validation accuracy; tau: the tolerance in points.
      valid: (N,) bool, False for entries that are no candidate (steps after an episode ended).
    Returns:
      (index, count); index -1 when no candidate is within tau (the original is the answer).
    """
    n_params, acc = np.asarray(n_params), np.asarray(acc, np.float32)
    ok = within_tolerance(acc, np.float32(acc0), tau) & (np.ones(len(acc), bool) if valid is None else valid)
    chosen = -1
    for i in np.flatnonzero(ok):
        if chosen < 0 or better(n_params[i], acc[i], n_params[chosen], acc[chosen]):
            chosen = int(i)
    return chosen, int(ok.sum())


def running_best(env: NeonEnv) -> Tap:
    """A `rollout.Tap` that keeps each episode's best candidate so far by the rule (the original to start with)
    and records every step's test accuracy (for the candidate table only; the choice never reads it)."""

    def init(params: EnvParams, state):
        return {"variables": state.variables, "arch": state.arch, "params": nets.count_params(state.arch),
                "acc": state.acc, "step": jnp.zeros_like(state.step)}

    def step(best, params: EnvParams, state, info):
        n_params = nets.count_params(state.arch)
        take = info["active"] & within_tolerance(state.acc, state.acc0, params.choice_tau) & better(
            n_params, state.acc, best["params"], best["acc"])
        pick = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
            lambda a, b: jnp.where(take.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)
        best = pick({"variables": state.variables, "arch": state.arch, "params": n_params, "acc": state.acc,
                     "step": state.step}, best)
        test_acc = jax.vmap(lambda v, a, p: env.accuracy(v, a, p.test, index=p.data_index))(
            state.variables, state.arch, params)
        return best, {"test_acc": test_acc, "params": n_params}

    return Tap(init=init, step=step)


def candidates_program(env: NeonEnv, act_fn: ActFn, sampled: int = 8, greedy: bool = True, select: str = "best",
                       mesh=None, search: search_lib.Search = search_lib.NO_SEARCH):
    """The jitted pruning program that chooses among many candidates: ``program(keys, params, policy) -> Outcome``.

    Args:
      env: the environment (an agent's: `learn.agent_env`).
      act_fn: the policy (`Agent.act_fn`, `policies.random_policy`, ...); `policy` its parameters.
      sampled: episodes of the policy per network (>= 1).
      greedy: also one episode with argmax actions; the policy must then be an `agent.ActorPolicy` (its
        `greedy` is set here, per episode).
      select: "best" (the rule of this module) or "last" (the final network of episode 0: the paper's answer).
      mesh: the devices the episodes (B x episodes of them) are split over (None or one device: unsharded); the
        episodes are padded to a multiple of the devices with further sampled episodes, dropped before the choice.
      search: beyond the paper, what runs after the episodes in the same program (`search.Search`): a population
        search whose candidates join the agent's under the same rule, and / or a final fine-tune of the chosen
        network (select "best" only). The default runs nothing: the program is the faithful one.
    Returns:
      ``program(keys (B, 2), params (B networks), policy) -> rollout.Outcome`` of the chosen networks (network
      b's episode 0 from ``keys[b]``, episode e >= 1 from ``fold_in(keys[b], e)``), whose actions,
      rewards and steps are episode 0's, with ``row_extra`` chosen_episode (-1: the original), chosen_step,
      candidates, within_tau, and ``details``: the candidate table (B, E, T) params, widths, val_acc, test_acc,
      valid, plus each network's original (params0, val_acc0, test_acc0). With a search, a search candidate
      chosen is episode ``episodes + round``, step ``index + 1``; row_extra gains chosen_by_search and, with the
      final fine-tune, final_val_before / final_test_before / final_kept / final_epochs; details gain
      search_params / search_widths / search_val_acc / search_test_acc (B, rounds, population).
    """
    if sampled < 1:
        raise ValueError(f"candidates needs at least one sampled episode, got {sampled}")
    if select not in SELECTIONS:
        raise ValueError(f"unknown selection {select!r}; choose one of {', '.join(SELECTIONS)}")
    if search.active and select != "best":
        raise ValueError("the refine search and the final fine-tune go with select='best'")
    episodes = sampled + int(greedy)
    spread = sharding.spreads(mesh)
    rolled = -(-episodes // mesh.size) * mesh.size if spread else episodes  # with the padding episodes
    greedy_flags = np.array([False] * sampled + [True] * int(greedy))
    rolled_flags = np.concatenate([greedy_flags, np.zeros(rolled - episodes, bool)])
    axes = ActorPolicy(actor=None, greedy=0, uniform=None) if greedy else None
    rollout = make_rollout(env, act_fn, policy_axes=axes, tap=running_best(env))
    test_acc = jax.vmap(lambda v, a, p: env.accuracy(v, a, p.test, index=p.data_index))
    # the episodes' batch axis on the mesh: each device rolls out its share of them
    place = ((lambda x: jax.lax.with_sharding_constraint(x, sharding.batch_sharding(mesh))) if spread
             else (lambda x: x))

    @jax.jit
    def program(net_keys, params: EnvParams, policy: ActorPolicy) -> Outcome:
        n = params.tau.shape[0]
        keys = jax.vmap(lambda k: jnp.stack([k] + [jax.random.fold_in(k, e) for e in range(1, rolled)]))(net_keys)
        many = place(jax.tree_util.tree_map(lambda a: jnp.repeat(a, rolled, axis=0), params))
        if greedy:
            policy = policy.replace(greedy=place(jnp.asarray(np.tile(rolled_flags, n))))
        final, t, (best, outs) = rollout(place(keys.reshape(n * rolled, -1)), many, policy)
        per_net = lambda a: a.reshape((n, rolled) + a.shape[1:])[:, :episodes]  # noqa: E731
        final, t, best, outs = (jax.tree_util.tree_map(per_net, x) for x in (final, t, best, outs))
        if select == "best":  # the best of each network's episodes: fewest parameters, then accuracy, then order
            rank = jnp.lexsort((jnp.arange(episodes)[None, :].repeat(n, 0), -best["acc"], best["params"]), axis=-1)
            episode = rank[:, 0]
            take = lambda a: jnp.take_along_axis(  # noqa: E731
                a, episode.reshape((n, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0]
            chosen = jax.tree_util.tree_map(take, {k: best[k] for k in ("variables", "arch", "acc", "step")})
            step = chosen["step"]
            episode = jnp.where(step == 0, -1, episode)  # no episode found anything better than the original
        else:
            last = lambda a: a[:, 0]  # noqa: E731
            chosen = {"variables": jax.tree_util.tree_map(last, final.variables),
                      "arch": jax.tree_util.tree_map(last, final.arch), "acc": final.acc[:, 0]}
            step, episode = final.step[:, 0], jnp.zeros(n, jnp.int32)
        acc0 = final.acc0[:, 0]
        within = (t.valid & within_tolerance(t.info["acc"], acc0[:, None, None], params.choice_tau[:, None, None]))
        row_extra = {"chosen_episode": episode, "chosen_step": step, "candidates": 1 + t.valid.sum((1, 2)),
                     "within_tau": 1 + within.sum((1, 2))}
        details = {}
        finetune_epochs = t.info["finetune_epochs"].sum((1, 2))
        if search.rounds > 0:  # the population search: its candidates join the agent's under the same rule
            flat = lambda a: a.reshape((n, -1) + a.shape[3:])  # noqa: E731
            found = search_lib.refine(env, search, net_keys, params, {
                "widths": flat(t.info["widths"]), "params": flat(outs["params"]), "acc": flat(t.info["acc"]),
                "valid": flat(t.valid)})
            wins = found["best_within"] & better(found["best_params"], found["best_acc"], nets.count_params(
                chosen["arch"]), chosen["acc"])
            pick = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
                lambda a, b: jnp.where(wins.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)
            chosen = pick({"variables": found["best_variables"], "arch": found["best_arch"],
                           "acc": found["best_acc"]}, {k: chosen[k] for k in ("variables", "arch", "acc")})
            search_within = within_tolerance(found["val_acc"], acc0[:, None, None],
                                             params.choice_tau[:, None, None] - search.margin)
            row_extra = {"chosen_episode": jnp.where(wins, episodes + found["best_round"], episode),
                         "chosen_step": jnp.where(wins, found["best_index"] + 1, step),
                         "candidates": row_extra["candidates"] + search.rounds * search.population,
                         "within_tau": row_extra["within_tau"] + search_within.sum((1, 2)), "chosen_by_search": wins}
            details = {"search_params": found["params"], "search_widths": found["widths"],
                       "search_val_acc": found["val_acc"], "search_test_acc": found["test_acc"],
                       "search_margin": jnp.full((n,), search.margin, jnp.float32)}
        if search.final_finetune:  # once more over every layer; kept only where validation does not fall
            row_extra["final_val_before"] = chosen["acc"]
            row_extra["final_test_before"] = test_acc(chosen["variables"], chosen["arch"], params)
            variables, acc, kept, epochs = search_lib.final_finetune(env, net_keys, params, chosen["variables"],
                                                                     chosen["arch"], chosen["acc"])
            chosen = {**chosen, "variables": variables, "acc": acc}
            row_extra["final_kept"], row_extra["final_epochs"] = kept, epochs
        return Outcome(
            variables=chosen["variables"], arch=chosen["arch"], widths_before=params.arch.widths,
            params_before=nets.count_params(params.arch), params_after=nets.count_params(chosen["arch"]),
            test_acc_before=test_acc(params.variables, params.arch, params),
            test_acc_after=test_acc(chosen["variables"], chosen["arch"], params), val_acc0=acc0,
            val_acc=chosen["acc"], actions=t.action[:, 0], valid=t.valid[:, 0], reward=t.reward[:, 0],
            finetune_epochs=finetune_epochs,
            row_extra=row_extra,
            details={"params": outs["params"], "widths": t.info["widths"], "val_acc": t.info["acc"],
                     "test_acc": outs["test_acc"], "valid": t.valid, "greedy": jnp.tile(greedy_flags, (n, 1)),
                     "params0": nets.count_params(params.arch), "val_acc0": acc0,
                     "test_acc0": test_acc(params.variables, params.arch, params), **details})

    return program


_PROGRAMS = programs.ProgramCache("candidate programs", maxsize=16)


def cached_candidates_program(env: NeonEnv, act_fn: ActFn, sampled: int = 8, greedy: bool = True,
                              select: str = "best", act_key=None, mesh=None,
                              search: search_lib.Search = search_lib.NO_SEARCH):
    """`candidates_program`, built once per (environment, policy, sampled, greedy, select, mesh) settings and kept
    in a bounded cache (`programs`); `act_key` names the policy (default: the act_fn; an agent passes its config,
    as `rollout.policy_program`); `search`: `search.Search` (the default adds nothing to the key: the faithful
    program's key is as it was)."""
    key = (env.config, env.dims, env.preset, env.slots, act_fn if act_key is None else act_key, int(sampled),
           bool(greedy), select, tuple(d.id for d in mesh.devices.flat) if sharding.spreads(mesh) else None)
    if search.active:
        key = key + (search,)

    def build():
        program = candidates_program(env, act_fn, sampled, greedy, select, mesh, search)
        compile_cache.register(program, ("select.candidates_program", *key))  # a warm run need not trace it
        return program

    return _PROGRAMS.get(key, build)
