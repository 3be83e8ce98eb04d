"""Populations: the one-network loops of `fit.loops` over many networks (vmap, depth-sorted chunks, packed slots).

A population is a pytree with a leading axis P (variables and `Arch`); the data are a stack of D padded splits
(`PaddedData`, leading axis D) stored once, and each network names its split by index, so networks on different
datasets train together.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from neon_jax.fit import loops
from neon_jax.fit.batches import PaddedData, network_keys
from neon_jax.fit.loops import Learner
from neon_jax.nets import Arch, Hints, Trainable, param_layer, param_mask
from neon_jax.sharding import resolve_chunk_size, vmap_sorted_chunks

tree_map = jax.tree_util.tree_map


def active_groups(mask: dict, busy, depth_bound, max_hidden: int) -> dict:
    """`nets.Hints.groups` of a batch of fine-tunes: {top-level parameter name: unbatched bool}, False where the
    parameter is frozen in every network of the batch — masked out of every busy network's fine-tune (`mask`, 0/1
    pytree with leading axis B; `busy` (B,) bool), or in a hidden layer at or past `depth_bound` (no network has
    it, its gradient is exactly zero). Such a group's optimiser step is the identity (zero masked gradient, zero
    moments), so `fit.optim.masked_step` skips it."""
    groups = {}
    for name, leaf in mask.items():
        anywhere = jnp.zeros((), bool)
        for m in jax.tree_util.tree_leaves(leaf):
            per_net = (m != 0).reshape(m.shape[0], -1).any(-1)
            anywhere = anywhere | (per_net & busy).any()
        j = param_layer(name, max_hidden)
        groups[name] = anywhere if j == max_hidden or depth_bound is None else anywhere & (j < depth_bound)
    return groups


def train(learner: Learner, key, variables, opt_state, archs: Arch, dataset_index, data: PaddedData, *,
          epochs: int, batch_size: int, chunk_size="auto"):
    """Trains every network of the population on its split (base-network training, neon_spec.md §7).

    Args:
      key: PRNG key (split into one per network) or (P,) keys, one per network (`network_keys`).
      variables: population variables (leading axis P).
      opt_state: population optimiser state (``vmap(learner.tx.init)``) or a previous call's, so a long schedule
        can run in chunks of epochs with the same compiled program.
      archs: population `Arch` (leading axis P).
      dataset_index: (P,) int32, which split of `data` each network trains on.
      data: `PaddedData` stack (leading axis D).
      epochs, batch_size: static schedule (paper: 100, 64; no early stopping).
      chunk_size: static. None: one vmap over the population (every network computes max_hidden layers). An
        int: the networks sorted by depth and trained `chunk_size` at a time (`vmap_sorted_chunks`), each chunk
        skipping the hidden layers (and their optimiser steps) none of its networks has. Same numbers up to
        float rounding (each network keeps its key). "auto": `sharding.default_chunk_size` (on one CPU
        device 4, or 1 at paper widths, w_max >= 128; None on accelerators and meshes).
    Returns:
      (variables, opt_state, epoch_losses (P, epochs)).
    """
    max_hidden = archs.mask.shape[-2]
    everything = Trainable.everything(max_hidden)
    keys = network_keys(key, archs.depth.shape[0])
    chunk_size = resolve_chunk_size(chunk_size, w_max=archs.mask.shape[-1])

    def one(k, v, o, a, i, hints=None):
        return loops.train(learner, k, v, o, a, data, param_mask(everything, v["params"]), epochs=epochs,
                           batch_size=batch_size, index=i, hints=hints)

    if chunk_size is None:
        return jax.vmap(one)(keys, variables, opt_state, archs, dataset_index)
    names = list(variables["params"])

    def chunk(bound, k, v, o, a, i):  # every layer the chunk's networks have trains, the output Linear always
        groups = {n: (param_layer(n, max_hidden) < bound) | (param_layer(n, max_hidden) == max_hidden)
                  for n in names}
        return one(k, v, o, a, i, Hints(depth_bound=bound, groups=groups))

    return vmap_sorted_chunks(chunk, chunk_size)(archs.depth, keys, variables, opt_state, archs, dataset_index)


def finetune(learner: Learner, key, variables, archs: Arch, dataset_index, data: PaddedData, trainable: Trainable,
             *, max_epochs: int, batch_size: int, patience: int):
    """Fine-tunes every network with its own trainable set (leading axis P) and early stopping (neon_spec.md
    §2.4). Returns (variables, {"epochs": (P,), "best_loss": (P,)})."""
    keys = network_keys(key, archs.depth.shape[0])
    return jax.vmap(lambda k, v, a, i, t: loops.finetune(
        learner, k, v, a, data, t, max_epochs=max_epochs, batch_size=batch_size, patience=patience, index=i)
    )(keys, variables, archs, dataset_index, trainable)


def evaluate(learner: Learner, variables, archs: Arch, dataset_index, data: PaddedData) -> jax.Array:
    """(P,) eval-mode accuracy of each network on its split's real rows."""
    return jax.vmap(lambda v, a, i: loops.accuracy(learner, v, a, data, i))(variables, archs, dataset_index)


def finetune_packed(learner: Learner, keys, variables, archs: Arch, dataset_index, data: PaddedData,
                    trainable: Trainable, max_epochs: int, batch_size: int, patience: int, active=None,
                    weight_mask=None, slots: int = 8):
    """`loops.finetune` for a batch of networks, with the same results as its vmap, computed `slots` networks at a
    time with no waiting for the slowest.

    Under one vmap the early-stopping loop runs until the batch's slowest network stops, and every network
    computes the batch's deepest depth. Here a `lax.while_loop` keeps `slots` fine-tunes in flight (vmapped over
    the slot axis, one epoch per iteration, hidden layers past the deepest network in flight skipped, see
    `MaskedMLP`); a network that stops leaves its slot and the next one of the queue takes it. The queue is the
    active networks, deepest first, so networks in flight have similar depths; inactive ones (`active` False)
    never run and return their variables unchanged with 0 epochs, as in `loops.finetune`. The loop runs about
    (sum of epochs) / slots epochs instead of (slowest epochs) x B / slots. Each network keeps its own key,
    shuffles, dropout draws and optimiser state, so the numbers are `loops.finetune`'s (up to float rounding:
    matmuls of another batch size may reduce in another order).

    Args: as `loops.finetune` with a leading axis B (`keys` (B, 2), `active` (B,) bool, default all);
      `data` is a stack of splits (leading axis D) and `dataset_index` (B,) picks each network's.
      `slots` (static): fine-tunes in flight (a CPU prefers ~4..8; the whole batch on an accelerator).
    Returns: (best variables (B, ...), {"epochs": (B,), "best_loss": (B,)}).
    """
    n = keys.shape[0]
    slots = max(1, min(int(slots), n))
    active = jnp.ones(n, bool) if active is None else jnp.asarray(active, bool)
    out = (variables, jnp.full(n, jnp.inf, jnp.float32), jnp.zeros(n, jnp.int32))
    if max_epochs < 1 or patience < 1:
        return out[0], {"epochs": out[2], "best_loss": out[1]}
    queue = jnp.argsort(jnp.where(active, -archs.depth, 1), stable=True).astype(jnp.int32)
    n_todo = active.sum().astype(jnp.int32)
    take = lambda tree, i: tree_map(lambda a: a[i], tree)
    setup = jax.vmap(lambda *a: loops.tune_setup(learner, *a))
    max_hidden = archs.mask.shape[-2]

    def load(i):
        state, mask = setup(keys[i], take(variables, i), take(trainable, i), take(weight_mask, i))
        return state, take(archs, i), dataset_index[i], mask

    def fill(slot_env, slot, next_pos):
        free = slot_env < 0
        pos = next_pos + jnp.cumsum(free) - 1
        new = free & (pos < n_todo)
        env = queue[jnp.clip(pos, 0, n - 1)]
        slot = jax.lax.cond(new.any(), lambda: tree_map(
            lambda a, b: jnp.where(new.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), load(env), slot),
            lambda: slot)
        return jnp.where(new, env, slot_env), slot, next_pos + new.sum()

    def write(out, state, done, slot_env):
        at = jnp.where(done, slot_env, n)  # out of range: dropped
        best, best_loss, epochs = out
        best = tree_map(lambda o, v: o.at[at].set(v, mode="drop"), best, state.best)
        return best, best_loss.at[at].set(state.best_loss, mode="drop"), epochs.at[at].set(state.epoch, mode="drop")

    def body(carry):
        slot_env, slot, next_pos, out = carry
        state, arch, index, mask = slot
        busy = slot_env >= 0
        bound = jnp.where(busy, arch.depth, 0).max()
        hints = Hints(depth_bound=bound, groups=active_groups(mask, busy, bound, max_hidden))
        state = jax.vmap(lambda st, a, i, m: loops.tune_epoch(learner, st, a, data, m, batch_size, i, hints))(
            state, arch, index, mask)
        done = busy & ~loops.tune_continues(state, max_epochs, patience)
        out = jax.lax.cond(done.any(), write, lambda out, *_: out, out, state, done, slot_env)
        slot_env, slot, next_pos = fill(jnp.where(done, -1, slot_env), (state, arch, index, mask), next_pos)
        return slot_env, slot, next_pos, out

    first = jnp.minimum(jnp.arange(slots), n - 1)
    slot_env, slot, next_pos = fill(jnp.full(slots, -1, jnp.int32), load(queue[first]), jnp.int32(0))
    _, _, _, (best, best_loss, epochs) = jax.lax.while_loop(
        lambda c: (c[0] >= 0).any(), body, (slot_env, slot, next_pos, out))
    return best, {"epochs": epochs, "best_loss": best_loss}
