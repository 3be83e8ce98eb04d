"""One roll-out: whole episodes of a batch of environments under a policy, as one `lax.scan` over steps.

    rollout = make_rollout(env, act_fn)
    final_state, transitions = rollout(keys, env_params, policy_params)   # transitions: (B, T) `Transition`

A policy is an ``act_fn(policy_params, key, obs) -> action`` for ONE environment (the roll-out vmaps it over
the batch): the actor of `neon_jax.agent` (sampled or greedy), the random policy and the fixed rules of
`neon_jax.policies` are all act_fns. `policy_params` is any pytree (the actor's weights, a rule's numbers) and
can hold traced switches, so a sampled, a greedy and a uniform policy share one compiled program.

`make_policy_program` turns a roll-out into a pruning program (one PRNG key per network): the `Outcome` that
every pruning method returns and `neon_jax.runner` turns into rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from neon_jax import nets, programs
from neon_jax.env import EnvParams, EnvState, NeonEnv
from neon_jax.features import Observation

ActFn = Callable[[Any, jax.Array, Observation], jax.Array]


@struct.dataclass
class Transition:
    """One step of an episode; a roll-out returns them with leading axes (B, T): environment, then step.

    Attributes:
      obs: the `Observation` the action was chosen on.
      action: () int32 action index (0 once the episode has finished).
      reward: () float32 the environment's reward (0 once finished).
      valid: () bool, True where the step was taken (the episode had not finished before it).
      info: the environment's step info (layer, keep, widths, parameters, accuracies, fine-tune epochs).
    """

    obs: Observation
    action: jax.Array
    reward: jax.Array
    valid: jax.Array
    info: dict


def policy_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sampling key, uniform key): what an act_fn may draw from at a step, given the step's `key`.

    The roll-out splits every step's key in three; the third drives the environment's step, so a policy's draws
    are independent of the cut, the fine-tune and the observation."""
    k_sample, k_uniform, _ = jax.random.split(key, 3)
    return k_sample, k_uniform


class Tap(NamedTuple):
    """Something a roll-out folds over its steps beside the transitions (batched: leading axis B everywhere).

    Attributes:
      init: ``init(params, state) -> carry`` from the reset states.
      step: ``step(carry, params, state, info) -> (carry, out)`` after every step, with the state after the step
        and its info; the `out`s are stacked into (B, T, ...) (None for nothing).
    """

    init: Callable
    step: Callable


def make_rollout(env: NeonEnv, act_fn: ActFn, policy_axes=None, tap: Tap | None = None):
    """Whole episodes of a batch of environments: ``rollout(keys, params, policy_params)``.

    Args:
      env: the environment.
      act_fn: the policy, ``act_fn(policy_params, key, obs) -> action`` for one environment.
      policy_axes: how `policy_params` maps over the environments, as `jax.vmap`'s ``in_axes`` (None: one value
        for every environment; a pytree prefix such as ``ActorPolicy(actor=None, greedy=0, uniform=None)``
        gives each environment its own switches).
      tap: optional `Tap` folded over the steps (a running selection, per-step measurements).
    Args (of the returned function):
      keys: (B, 2) one PRNG key per environment (its reset, actions and steps all derive from it, so an
        environment's numbers do not depend on the rest of the batch, up to float rounding).
      params: `EnvParams` with leading axis B.
      policy_params: the act_fn's parameters.
    Returns:
      (final `EnvState` (B, ...), `Transition` (B, T, ...)) with T = `env.max_steps`; environments that finish
      early stay finished (invalid steps, action 0, reward 0). With a tap, also its ``(carry, outs (B, T, ...))``.
      The batch steps together through `NeonEnv.step_batch`.
    """
    num_steps = env.max_steps

    def rollout(keys: jax.Array, params: EnvParams, policy_params):
        k_reset, k_run = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        obs, state = jax.vmap(env.reset)(k_reset, params)
        step_keys = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, num_steps))(k_run), 1, 0)  # (T, B, 2)

        def act(key, obs, done, policy):
            action = jnp.asarray(act_fn(policy, key, obs), jnp.int32)
            return jnp.where(done, 0, action), jax.random.split(key, 3)[2]

        def body(carry, keys_t):
            obs, state, tapped = carry
            action, k_step = jax.vmap(act, in_axes=(0, 0, 0, policy_axes))(keys_t, obs, state.done, policy_params)
            valid = ~state.done
            next_obs, state, reward, _, _, info = env.step_batch(k_step, state, action, params)
            out = None
            if tap is not None:
                tapped, out = tap.step(tapped, params, state, info)
            transition = Transition(obs=obs, action=action, reward=reward, valid=valid, info=info)
            return (next_obs, state, tapped), (transition, out)

        tapped = None if tap is None else tap.init(params, state)
        (_, state, tapped), (transitions, outs) = jax.lax.scan(body, (obs, state, tapped), step_keys)
        swap = lambda tree: jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), tree)  # noqa: E731
        if tap is None:
            return state, swap(transitions)
        return state, swap(transitions), (tapped, swap(outs))

    return rollout


@struct.dataclass
class Outcome:
    """What a pruning program returns for a batch of networks (leading axis B); `neon_jax.runner` makes rows.

    Attributes:
      variables / arch: the pruned networks.
      widths_before: (B, max_hidden) int32 hidden widths of the original networks.
      params_before / params_after: (B,) int32 parameters, counted one way for every method (`nets.count_params`;
        unstructured methods subtract their pruned weights).
      test_acc_before / test_acc_after: (B,) eval-mode accuracy on the test split (never seen by any choice).
      val_acc0 / val_acc: (B,) accuracy on the internal validation split (the reward's), before and after.
      actions / valid / reward: (B, T) the episode's steps (T = 0 for one-shot methods).
      finetune_epochs: (B,) fine-tune epochs run in all.
      row_extra: {name: (B,) scalars} a program adds to its rows (e.g. the chosen candidate's episode and step).
      details: a pytree with leading axis B that `runner.run` hands back per network (e.g. a candidate table).
    """

    variables: Any
    arch: nets.Arch
    widths_before: jax.Array
    params_before: jax.Array
    params_after: jax.Array
    test_acc_before: jax.Array
    test_acc_after: jax.Array
    val_acc0: jax.Array
    val_acc: jax.Array
    actions: jax.Array
    valid: jax.Array
    reward: jax.Array
    finetune_epochs: jax.Array
    row_extra: dict = struct.field(default_factory=dict)
    details: Any = None


def episode_outcome(env: NeonEnv, params: EnvParams, final: EnvState, transitions: Transition) -> Outcome:
    """The `Outcome` of a roll-out: its final networks, with test accuracies before and after."""
    test_acc = jax.vmap(lambda v, a, p: env.accuracy(v, a, p.test, index=p.data_index))
    return Outcome(
        variables=final.variables, arch=final.arch, widths_before=params.arch.widths,
        params_before=nets.count_params(params.arch),
        params_after=nets.count_params(final.arch), test_acc_before=test_acc(params.variables, params.arch, params),
        test_acc_after=test_acc(final.variables, final.arch, params), val_acc0=final.acc0, val_acc=final.acc,
        actions=transitions.action, valid=transitions.valid, reward=transitions.reward,
        finetune_epochs=transitions.info["finetune_epochs"].sum(-1))


def make_policy_program(env: NeonEnv, act_fn: ActFn):
    """A jitted pruning program of a policy: ``program(keys, params, policy_params) -> Outcome``.

    One roll-out of every environment of the batch, network b's from ``keys[b]`` ((B, 2): one key per network,
    so its numbers do not depend on the rest of the batch), then the test accuracies; the observations are not
    returned (XLA drops them)."""
    rollout = make_rollout(env, act_fn)

    @jax.jit
    def program(keys, params: EnvParams, policy_params) -> Outcome:
        final, transitions = rollout(keys, params, policy_params)
        return episode_outcome(env, params, final, transitions)

    return program


_PROGRAMS = programs.ProgramCache("policy programs", maxsize=16)


def policy_program(env: NeonEnv, act_fn: ActFn, act_key=None):
    """`make_policy_program`, built once per (environment settings, policy) and kept in a bounded cache
    (`programs`). `act_key` names the policy in that cache (default: the act_fn itself; an agent passes its
    config, as its act_fn is a method)."""
    key = (env.config, env.dims, env.preset, env.slots, act_fn if act_key is None else act_key)
    return _PROGRAMS.get(key, lambda: make_policy_program(env, act_fn))
