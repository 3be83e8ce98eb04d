"""Population training, fine-tuning and evaluation of masked networks, all under one jit each.

A population is a pytree with a leading axis P (variables and `Arch`). Datasets are a stack of D padded
datasets (`PaddedData` with a leading axis D) and each network names its dataset by index, so networks on
different datasets train together and a dataset shared by many networks is stored once.

Minibatches are `lax.scan` steps over a per-epoch shuffle of each network's real rows; padded rows carry weight
0 (they never enter a loss or a batch-norm statistic). Epochs are `lax.scan` (base training, fixed length, as
the original) or `lax.while_loop` (fine-tuning with patience: a network that stopped keeps its weights while
the others go on).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from neon_jax import programs
from neon_jax.fit.batches import PaddedData, gather_batch, network_keys, shuffle_real_rows
from neon_jax.nets import NEG_LOGIT, Arch, Hints, MaskedMLP, Trainable, param_layer, param_mask
from neon_jax.sharding import resolve_chunk_size, vmap_sorted_chunks


@struct.dataclass
class _TuneState:
    """One fine-tune in flight: weights, Adam state, best snapshot and early-stopping counters."""

    params: Any
    stats: Any
    opt_state: Any
    best: Any
    best_loss: jax.Array
    bad: jax.Array  # epochs in a row without improvement
    epoch: jax.Array  # epochs run
    key: jax.Array


def _tune_continues(state: _TuneState, max_epochs: int, patience: int) -> jax.Array:
    return (state.epoch < max_epochs) & (state.bad < patience)


def active_groups(mask: dict, busy, depth_bound, max_hidden: int) -> dict:
    """`nets.Hints.groups` of a batch of fine-tunes: {top-level parameter name: unbatched bool}, False where the
    parameter is frozen in every network of the batch — masked out of every busy network's fine-tune (`mask`, 0/1
    pytree with leading axis B; `busy` (B,) bool), or in a hidden layer at or past `depth_bound` (no network has
    it, its gradient is exactly zero). Such a group's Adam step is the identity (zero masked gradient, zero
    moments), so `_masked_adam` skips it."""
    groups = {}
    for name, leaf in mask.items():
        anywhere = jnp.zeros((), bool)
        for m in jax.tree_util.tree_leaves(leaf):
            per_net = (m != 0).reshape(m.shape[0], -1).any(-1)
            anywhere = anywhere | (per_net & busy).any()
        j = param_layer(name, max_hidden)
        groups[name] = anywhere if j == max_hidden or depth_bound is None else anywhere & (j < depth_bound)
    return groups


def log_probs(logits: jax.Array, n_classes: jax.Array, double_softmax: bool) -> jax.Array:
    """Log-probabilities the loss sees.

    `double_softmax=True` reproduces the original (neon_spec.md §12 B5): the network ends in Softmax and
    CrossEntropyLoss applies log-softmax again to those probabilities (padded classes excluded both times).
    """
    if not double_softmax:
        return jax.nn.log_softmax(logits)
    probs = jax.nn.softmax(logits)
    class_mask = jnp.arange(logits.shape[-1]) < n_classes
    return jax.nn.log_softmax(jnp.where(class_mask, probs, NEG_LOGIT))


@programs.cached("trainers", maxsize=32)
def make_trainer(model: MaskedMLP, learning_rate: float = 1e-3, double_softmax: bool = True):
    """Builds the jitted population functions for one model shape. Cached (bounded, `programs`): one compile per
    shape and schedule.

    Returns an object whose jitted population functions are `train`, `finetune`, `evaluate` and `predict`, and
    whose per-network pieces, traced inside callers' programs (the environment, the baselines, AMC, ADMM), are
    `finetune_one`, `finetune_packed`, `accuracy_one` and `init_opt_state` (see their docstrings).
    """
    return Trainer(model, learning_rate, double_softmax)


class Trainer:
    """The jitted population functions of one model shape and the per-network pieces callers trace into their own
    programs (see `make_trainer`); build it with `make_trainer` (cached), not directly."""

    def __init__(self, model: MaskedMLP, learning_rate: float, double_softmax: bool):
        self.model = model
        self.optimizer = optax.adam(learning_rate)  # PyTorch Adam defaults: betas (0.9, 0.999), eps 1e-8
        self.double_softmax = double_softmax
        self.train = jax.jit(self._train_population, static_argnames=("epochs", "batch_size", "chunk_size"))
        self.finetune = jax.jit(self._finetune_population, static_argnames=("max_epochs", "batch_size", "patience"))
        self.evaluate = jax.jit(self._evaluate_population)
        self.predict = jax.jit(jax.vmap(self._logits, in_axes=(0, 0, None)))

    # -- one network -------------------------------------------------------------------------------------------

    def _loss(self, params, stats, arch, x, y, weight, key, hints=None):
        variables = {"params": params, "batch_stats": stats}
        logits, new_vars = self.model.apply(
            variables, x, arch, train=True, row_weight=weight, rngs={"dropout": key}, mutable=["batch_stats"],
            hints=hints)
        logp = log_probs(logits, arch.n_classes, self.double_softmax)
        nll = -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        loss = (weight * nll).sum() / jnp.maximum(weight.sum(), 1.0)
        return loss, new_vars["batch_stats"]

    def _sgd_step(self, params, stats, opt_state, arch, x, y, weight, key, mask, hints=None):
        """One Adam step on a minibatch; batches of fewer than 2 real rows are skipped (as the original).
        `hints`: `nets.Hints` about the whole vmapped batch (skipped layers, backward passes and Adam groups)."""
        (loss, new_stats), grads = jax.value_and_grad(self._loss, has_aux=True)(
            params, stats, arch, x, y, weight, key, hints)
        valid = weight.sum() > 1.5
        groups = None if hints is None else hints.groups
        new_params, new_opt_state = self._masked_adam(grads, opt_state, params, mask, valid, groups)
        new_stats = jax.tree_util.tree_map(lambda a, b: jnp.where(valid, a, b), new_stats, stats)
        return new_params, new_stats, new_opt_state, loss, valid

    def _masked_adam(self, grads, opt_state, params, mask, valid, groups=None):
        """(params, opt_state) after one Adam step on the masked gradients, or unchanged if not `valid`.

        `groups` (optional): {top-level parameter name: unbatched bool}, `nets.Hints.groups`. A group marked
        False is frozen in every network of the (vmapped) batch: its masked gradient is zero and so are its
        moments, so its step is exactly the identity, and a `lax.cond` skips it instead of rewriting its
        parameters and moments at every minibatch (the environment's fine-tune trains 2 of up to 7 Linears).
        Same numbers either way.
        """
        pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(valid, a, b), new, old)

        def step(grads, opt_state, params, mask):
            grads = jax.tree_util.tree_map(lambda g, m: g * m, grads, mask)
            updates, new_opt_state = self.optimizer.update(grads, opt_state, params)
            updates = jax.tree_util.tree_map(lambda u, m: u * m, updates, mask)
            return pick(optax.apply_updates(params, updates), params), pick(new_opt_state, opt_state)

        if groups is None:
            return step(grads, opt_state, params, mask)
        adam, rest = opt_state  # optax.adam: (ScaleByAdamState(count, mu, nu), EmptyState()); moments per leaf
        new_params, mu, nu = {}, {}, {}
        for name in params:
            def group_step(g, m1, m2, p, m, name=name):
                p, (state, _) = step({name: g}, (adam._replace(mu={name: m1}, nu={name: m2}), rest), {name: p},
                                     {name: m})
                return p[name], state.mu[name], state.nu[name]

            new_params[name], mu[name], nu[name] = jax.lax.cond(
                groups[name], group_step, lambda g, m1, m2, p, m: (p, m1, m2),
                grads[name], adam.mu[name], adam.nu[name], params[name], mask[name])
        count = jnp.where(valid, optax.safe_increment(adam.count), adam.count)
        return new_params, (adam._replace(count=count, mu=mu, nu=nu), rest)

    def _train_one(self, key, variables, opt_state, arch, dataset_index, data: PaddedData, epochs, batch_size,
                   trainable, hints=None):
        params, stats = variables["params"], variables["batch_stats"]
        mask = param_mask(trainable, params)
        n_max = data.x.shape[1]
        n_batches = -(-n_max // batch_size)

        def epoch(carry, key):
            params, stats, opt_state = carry
            k_perm, k_drop = jax.random.split(key)
            perm = shuffle_real_rows(k_perm, data.n[dataset_index], n_max, n_batches * batch_size)

            def step(carry, inputs):
                params, stats, opt_state = carry
                b, k = inputs
                x, y, w = gather_batch(data, dataset_index, perm, b * batch_size, batch_size)
                params, stats, opt_state, loss, valid = self._sgd_step(
                    params, stats, opt_state, arch, x, y, w, k, mask, hints)
                return (params, stats, opt_state), (loss * valid, valid)

            carry, (losses, valid) = jax.lax.scan(
                step, (params, stats, opt_state), (jnp.arange(n_batches), jax.random.split(k_drop, n_batches)))
            return carry, losses.sum() / jnp.maximum(valid.sum(), 1)

        (params, stats, opt_state), epoch_loss = jax.lax.scan(
            epoch, (params, stats, opt_state), jax.random.split(key, epochs))
        return {"params": params, "batch_stats": stats}, opt_state, epoch_loss

    def finetune_one(self, key, variables, arch, dataset_index, data, trainable, max_epochs, batch_size, patience,
                     active=True, weight_mask=None, hints=None):
        """The original's fine-tuner (neon_spec.md §2.4, §12 B4), for one network (vmap it for many).

        Fresh Adam; train mode; every minibatch whose loss (before its update) beats the best so far snapshots
        the weights that produced it (and the batch-norm buffers) and resets patience; an epoch without any
        improvement counts towards `patience`; the best snapshot is returned. `active` (traced bool) = False
        runs no epoch at all: under vmap the loop then stops as soon as every active network has stopped,
        instead of paying for fine-tunes whose result would be thrown away. `weight_mask` (optional, a pytree
        like `variables["params"]` of 0/1 arrays) freezes single entries on top of `trainable`: their gradients
        and Adam updates are zeroed, so pruned (zero) weights stay exactly zero (unstructured pruning).
        `hints` (optional): `nets.Hints` about the whole vmapped batch. For many networks, `finetune_packed`
        gives the same results faster.
        """
        state, mask = self._tune_setup(key, variables, trainable, weight_mask)

        def keep_going(state):
            return _tune_continues(state, max_epochs, patience) & active

        state = jax.lax.while_loop(
            keep_going,
            lambda st: self._tune_epoch(st, arch, dataset_index, data, mask, batch_size, hints),
            state)
        return state.best, {"epochs": state.epoch, "best_loss": state.best_loss}

    def _tune_setup(self, key, variables, trainable, weight_mask):
        """(the fine-tune's initial `_TuneState`, the 0/1 mask of what it may change) for one network."""
        params, stats = variables["params"], variables["batch_stats"]
        mask = param_mask(trainable, params)
        if weight_mask is not None:
            mask = jax.tree_util.tree_map(lambda m, w: m * w, mask, weight_mask)
        state = _TuneState(params=params, stats=stats, opt_state=self.optimizer.init(params),
                           best={"params": params, "batch_stats": stats}, best_loss=jnp.float32(jnp.inf),
                           bad=jnp.int32(0), epoch=jnp.int32(0), key=key)
        return state, mask

    def _tune_epoch(self, state: _TuneState, arch, dataset_index, data, mask, batch_size, hints=None):
        """One fine-tune epoch of one network: a fresh shuffle, a scan over its minibatches. With `hints`, a
        group no network trains is not copied into the best snapshot (its unchanged value already is)."""
        groups = None if hints is None else hints.groups
        n_max = data.x.shape[1]
        n_batches = -(-n_max // batch_size)
        key, k_perm, k_drop = jax.random.split(state.key, 3)
        perm = shuffle_real_rows(k_perm, data.n[dataset_index], n_max, n_batches * batch_size)

        def snapshot(better, params, best_params):
            keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), new, old)
            if groups is None:
                return keep(params, best_params)
            return {name: jax.lax.cond(groups[name], keep, lambda new, old: old, params[name], best_params[name])
                    for name in params}

        def step(carry, inputs):
            params, stats, opt_state, best, best_loss, improved = carry
            b, k = inputs
            x, y, w = gather_batch(data, dataset_index, perm, b * batch_size, batch_size)
            new_params, new_stats, new_opt, loss, valid = self._sgd_step(
                params, stats, opt_state, arch, x, y, w, k, mask, hints)
            better = valid & (loss < best_loss)
            best = {"params": snapshot(better, params, best["params"]),
                    "batch_stats": jax.tree_util.tree_map(lambda a, b_: jnp.where(better, a, b_), new_stats,
                                                          best["batch_stats"])}
            best_loss = jnp.where(better, loss, best_loss)
            return (new_params, new_stats, new_opt, best, best_loss, improved | better), None

        (params, stats, opt_state, best, best_loss, improved), _ = jax.lax.scan(
            step, (state.params, state.stats, state.opt_state, state.best, state.best_loss, False),
            (jnp.arange(n_batches), jax.random.split(k_drop, n_batches)))
        return state.replace(params=params, stats=stats, opt_state=opt_state, best=best, best_loss=best_loss,
                             bad=jnp.where(improved, 0, state.bad + 1), epoch=state.epoch + 1, key=key)

    def finetune_packed(self, keys, variables, archs, dataset_index, data, trainable, max_epochs, batch_size,
                        patience, active=None, weight_mask=None, slots: int = 8):
        """`finetune_one` for a batch of networks (leading axis B on every argument but `data`), with the same
        results as ``vmap(finetune_one)``, computed `slots` networks at a time with no waiting for the slowest.

        Under one vmap the early-stopping loop runs until the batch's slowest network stops, and every network
        computes the batch's deepest depth. Here a `lax.while_loop` keeps `slots` fine-tunes in flight (vmapped
        over the slot axis, one epoch per iteration, hidden layers past the deepest network in flight skipped,
        see `MaskedMLP`); a network that stops leaves its slot and the next one of the queue takes it. The queue
        is the active networks, deepest first, so networks in flight have similar depths; inactive ones
        (`active` False) never run and return their variables unchanged with 0 epochs, as in `finetune_one`.
        The loop runs about (sum of epochs) / slots epochs instead of (slowest epochs) x B / slots. Each network
        keeps its own key, shuffles, dropout draws and Adam state, so the numbers are `finetune_one`'s (up to
        float rounding: matmuls of another batch size may reduce in another order).

        Args: as `finetune_one` with a leading axis B (`keys` (B, 2), `active` (B,) bool, default all);
          `data` is the stacked `PaddedData` (leading axis D) and `dataset_index` (B,) picks each network's.
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
        take = lambda tree, i: jax.tree_util.tree_map(lambda a: a[i], tree)
        setup = jax.vmap(self._tune_setup)
        max_hidden = archs.mask.shape[-2]

        def load(i):
            state, mask = setup(keys[i], take(variables, i), take(trainable, i), take(weight_mask, i))
            return state, take(archs, i), dataset_index[i], mask

        def fill(slot_env, slot, next_pos):
            free = slot_env < 0
            pos = next_pos + jnp.cumsum(free) - 1
            new = free & (pos < n_todo)
            env = queue[jnp.clip(pos, 0, n - 1)]
            slot = jax.lax.cond(new.any(), lambda: jax.tree_util.tree_map(
                lambda a, b: jnp.where(new.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), load(env), slot),
                lambda: slot)
            return jnp.where(new, env, slot_env), slot, next_pos + new.sum()

        def write(out, state, done, slot_env):
            at = jnp.where(done, slot_env, n)  # out of range: dropped
            best, best_loss, epochs = out
            best = jax.tree_util.tree_map(lambda o, v: o.at[at].set(v, mode="drop"), best, state.best)
            return best, best_loss.at[at].set(state.best_loss, mode="drop"), epochs.at[at].set(state.epoch,
                                                                                                mode="drop")

        def body(carry):
            slot_env, slot, next_pos, out = carry
            state, arch, index, mask = slot
            busy = slot_env >= 0
            bound = jnp.where(busy, arch.depth, 0).max()
            hints = Hints(depth_bound=bound, groups=active_groups(mask, busy, bound, max_hidden))
            state = jax.vmap(lambda st, a, i, m: self._tune_epoch(st, a, i, data, m, batch_size, hints))(
                state, arch, index, mask)
            done = busy & ~_tune_continues(state, max_epochs, patience)
            out = jax.lax.cond(done.any(), write, lambda out, *_: out, out, state, done, slot_env)
            slot_env, slot, next_pos = fill(jnp.where(done, -1, slot_env), (state, arch, index, mask), next_pos)
            return slot_env, slot, next_pos, out

        first = jnp.minimum(jnp.arange(slots), n - 1)
        slot_env, slot, next_pos = fill(jnp.full(slots, -1, jnp.int32), load(queue[first]), jnp.int32(0))
        _, _, _, (best, best_loss, epochs) = jax.lax.while_loop(
            lambda c: (c[0] >= 0).any(), body, (slot_env, slot, next_pos, out))
        return best, {"epochs": epochs, "best_loss": best_loss}

    def _logits(self, variables, arch, x, hints=None):
        return self.model.apply(variables, x, arch, train=False, hints=hints)

    def accuracy_one(self, variables, arch, dataset_index, data, hints=None):
        """Eval-mode accuracy of one network on the real rows of dataset `dataset_index` of `data`. `hints`:
        `nets.Hints` about the whole vmapped batch."""
        logits = self._logits(variables, arch, data.x[dataset_index], hints)
        correct = (jnp.argmax(logits, -1) == data.y[dataset_index]).astype(jnp.float32)
        real = jnp.arange(data.x.shape[1]) < data.n[dataset_index]
        return jnp.where(real, correct, 0.0).sum() / jnp.maximum(data.n[dataset_index], 1)

    # -- populations -------------------------------------------------------------------------------------------

    def init_opt_state(self, variables):
        """Adam state for a population (leading axis P), to carry across `train` calls made in chunks."""
        return jax.vmap(self.optimizer.init)(variables["params"])

    def _train_population(self, key, variables, opt_state, archs: Arch, dataset_index, data: PaddedData, *,
                          epochs, batch_size, chunk_size="auto"):
        """Trains every network of the population on its dataset (base-network training, neon_spec.md §7).

        Args:
          key: PRNG key (split into one per network) or (P,) keys, one per network (`network_keys`).
          variables: population variables (leading axis P).
          opt_state: population Adam state from `init_opt_state` or a previous call (so a long schedule can
            run in chunks of epochs with a progress bar between them and the same compiled program).
          archs: population `Arch` (leading axis P).
          dataset_index: (P,) int32, which dataset of `data` each network trains on.
          data: `PaddedData` stack (leading axis D).
          epochs, batch_size: static schedule (paper: 100, 64; no early stopping).
          chunk_size: static. None: one vmap over the population (every network computes max_hidden layers).
            An int: the networks sorted by depth and trained `chunk_size` at a time (`vmap_sorted_chunks`),
            each chunk skipping the hidden layers (and their Adam steps) none of its networks has. Same numbers
            up to float rounding (each network keeps its key). "auto" (default): `sharding.default_chunk_size`
            (4 on one CPU device, None on accelerators and meshes).
        Returns:
          (variables, opt_state, epoch_losses (P, epochs)).
        """
        max_hidden = archs.mask.shape[-2]
        everything = Trainable.everything(max_hidden)
        keys = network_keys(key, archs.depth.shape[0])
        chunk_size = resolve_chunk_size(chunk_size)
        if chunk_size is None:
            return jax.vmap(
                lambda k, v, o, a, i: self._train_one(k, v, o, a, i, data, epochs, batch_size, everything)
            )(keys, variables, opt_state, archs, dataset_index)

        names = list(variables["params"])

        def chunk(bound, k, v, o, a, i):  # every layer the chunk's networks have trains, the output Linear always
            groups = {n: (param_layer(n, max_hidden) < bound) | (param_layer(n, max_hidden) == max_hidden)
                      for n in names}
            return self._train_one(k, v, o, a, i, data, epochs, batch_size, everything,
                                   Hints(depth_bound=bound, groups=groups))

        return vmap_sorted_chunks(chunk, chunk_size)(archs.depth, keys, variables, opt_state, archs, dataset_index)

    def _finetune_population(self, key, variables, archs, dataset_index, data, trainable: Trainable, *,
                             max_epochs, batch_size, patience):
        """Fine-tunes every network with its own trainable set and early stopping (neon_spec.md §2.4).

        `trainable` has a leading axis P. Returns (variables, info) with info["epochs"] (P,) epochs run.
        """
        keys = network_keys(key, archs.depth.shape[0])
        return jax.vmap(
            lambda k, v, a, i, t: self.finetune_one(k, v, a, i, data, t, max_epochs, batch_size, patience)
        )(keys, variables, archs, dataset_index, trainable)

    def _evaluate_population(self, variables, archs, dataset_index, data):
        """(P,) eval-mode accuracy of each network on its dataset's real rows."""
        return jax.vmap(lambda v, a, i: self.accuracy_one(v, a, i, data))(variables, archs, dataset_index)
