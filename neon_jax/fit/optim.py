"""The masked optimiser: Adam that changes only the entries a 0/1 mask allows, and only on valid minibatches.

`masked_adam` is an optax `GradientTransformationExtraArgs`; `masked_step` applies it to one network's parameters,
skipping (under `lax.cond`) whole parameter groups that no network of a vmapped batch trains.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

tree_map = jax.tree_util.tree_map


def masked_adam(learning_rate: float) -> optax.GradientTransformationExtraArgs:
    """Adam with PyTorch's defaults (betas (0.9, 0.999), eps 1e-8) on masked gradients, held still on invalid steps.

    The state is one `optax.adam` state per top-level parameter group (``{name: state}``, every group counting the
    same steps), so a group can be stepped alone (`masked_step`). ``update(grads, state, params, *, mask,
    valid=True)``: the gradients and the Adam updates are multiplied by `mask` (a 0/1 pytree like `params`), so
    masked entries never move; where `valid` (traced bool) is False the updates are zero and the state is kept.

    Args:
      learning_rate: Adam's step size.
    Returns:
      the transformation; its updates go through `optax.apply_updates`.
    """
    adam = optax.adam(learning_rate)

    def init(params):
        return {name: adam.init(group) for name, group in params.items()}

    def update(grads, state, params=None, *, mask, valid=True, **extra_args):
        del extra_args
        grads = tree_map(lambda g, m: g * m, grads, mask)
        new_state, updates = {}, {}
        for name in grads:
            u, new_state[name] = adam.update(grads[name], state[name], None if params is None else params[name])
            updates[name] = tree_map(lambda u_, m: jnp.where(valid, u_ * m, 0.0), u, mask[name])
        new_state = tree_map(lambda a, b: jnp.where(valid, a, b), new_state, state)
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def masked_step(tx: optax.GradientTransformationExtraArgs, grads, state, params, mask, valid, groups=None):
    """(params, state) after one step of `tx` (`masked_adam`), or unchanged if not `valid`.

    Args:
      tx: `masked_adam(...)`.
      grads, params, mask: pytrees {group name: ...} of one network (`mask` 0/1).
      state: `tx`'s state (one per group).
      valid: () bool; False leaves parameters and state exactly as they were.
      groups: optional {group name: unbatched () bool}, `nets.Hints.groups`. A group marked False is frozen in
        every network of the (vmapped) batch: its masked gradient and its moments are zero, so its step is the
        identity (only its step count advances), and a `lax.cond` skips it instead of rewriting its parameters and
        moments at every minibatch. Same numbers and state either way.
    Returns:
      (new params, new state).
    """
    def step(g, s, p, m):
        updates, s = tx.update(g, s, p, mask=m, valid=valid)
        new = optax.apply_updates(p, updates)
        return tree_map(lambda a, b: jnp.where(valid, a, b), new, p), s

    if groups is None:
        return step(grads, state, params, mask)
    new_params, new_state, skip = {}, {}, _count_only(valid)
    for name in params:
        def group_step(g, s, p, m, name=name):
            p, s = step({name: g}, {name: s}, {name: p}, {name: m})
            return p[name], s[name]

        new_params[name], new_state[name] = jax.lax.cond(
            groups[name], group_step, skip, grads[name], state[name], params[name], mask[name])
    return new_params, new_state


def _count_only(valid):
    """The step of a skipped group: parameters and moments as they are, the step count advanced as every group's
    (so all groups count the same steps, whichever were skipped)."""
    def skip(g, s, p, m):
        count = optax.tree_utils.tree_get(s, "count")
        return p, optax.tree_utils.tree_set(s, count=jnp.where(valid, optax.safe_increment(count), count))

    return skip
