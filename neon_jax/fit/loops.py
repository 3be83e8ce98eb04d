"""Training and fine-tuning ONE masked network on one split; vmap them for many (`fit.population`).

Every function takes a `Learner` (the model, its masked optimiser, the data loss) and a split: a `PaddedData`
with no leading axis, or, with `index`, a stack of splits (leading axis D) of which the network uses split
`index` — so a stack shared by a vmapped batch of networks is stored once. Minibatches are `lax.scan` steps over
a per-epoch shuffle of the real rows; padded rows carry weight 0 (never in a loss or a batch-norm statistic);
a minibatch of fewer than 2 real rows is skipped, as the original. Epochs are `lax.scan` (`train`: fixed length,
the base networks' training) or `lax.while_loop` (`finetune`: patience, the best minibatch's weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from neon_jax.fit.batches import PaddedData, gather_batch, shuffle_real_rows
from neon_jax.fit.optim import masked_step
from neon_jax.nets import NEG_LOGIT, Arch, MaskedMLP, Trainable, param_mask

tree_map = jax.tree_util.tree_map


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


def cross_entropy(double_softmax: bool = True) -> Callable:
    """The data loss ``(logits (B, k_max), y (B,), weight (B,), n_classes ()) -> ()``: the weighted mean of the
    negative log-probabilities of `log_probs` (the original's, with `double_softmax`)."""
    def loss(logits, y, weight, n_classes):
        logp = log_probs(logits, n_classes, double_softmax)
        nll = -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        return (weight * nll).sum() / jnp.maximum(weight.sum(), 1.0)

    return loss


class Learner(NamedTuple):
    """What one gradient step needs: the model, its optimiser (`fit.optim.masked_adam`), the data loss
    (``(logits, y, weight, n_classes) -> ()``, e.g. `cross_entropy`)."""

    model: MaskedMLP
    tx: optax.GradientTransformationExtraArgs
    data_loss: Callable


def loss(learner: Learner, params, stats, arch: Arch, x, y, weight, key, hints=None, extra_loss=None):
    """(train-mode loss of one minibatch, the batch-norm statistics it updates).

    Args: params / stats: the network's parameters and batch-norm buffers; arch: its `Arch`; x (B, d_max),
      y (B,), weight (B,) row weights (0 = padding); key: dropout key; hints: `nets.Hints` of a vmapped batch;
      extra_loss: optional ``params -> ()`` added to the data loss (ADMM's penalty).
    Returns: (() float32, new batch_stats).
    """
    variables = {"params": params, "batch_stats": stats}
    logits, new_vars = learner.model.apply(variables, x, arch, train=True, row_weight=weight, rngs={"dropout": key},
                                           mutable=["batch_stats"], hints=hints)
    value = learner.data_loss(logits, y, weight, arch.n_classes)
    if extra_loss is not None:
        value = value + extra_loss(params)
    return value, new_vars["batch_stats"]


def sgd_step(learner: Learner, params, stats, opt_state, arch, x, y, weight, key, mask, hints=None,
             extra_loss=None):
    """One masked optimiser step on a minibatch; a minibatch of fewer than 2 real rows changes nothing.

    `mask`: 0/1 pytree like `params` (what may change). `hints`: `nets.Hints` about the whole vmapped batch
    (skipped layers, backward passes and optimiser groups). Returns (params, stats, opt_state, loss, valid).
    """
    (value, new_stats), grads = jax.value_and_grad(loss, argnums=1, has_aux=True)(
        learner, params, stats, arch, x, y, weight, key, hints, extra_loss)
    valid = weight.sum() > 1.5
    groups = None if hints is None else hints.groups
    new_params, new_opt_state = masked_step(learner.tx, grads, opt_state, params, mask, valid, groups)
    new_stats = tree_map(lambda a, b: jnp.where(valid, a, b), new_stats, stats)
    return new_params, new_stats, new_opt_state, value, valid


def _batches(k_perm, k_drop, data: PaddedData, index, batch_size: int):
    """(row order of one epoch, per-minibatch (minibatch number, dropout key) to scan over)."""
    n_max = data.x.shape[-2]
    n_batches = -(-n_max // batch_size)
    n_real = data.n if index is None else data.n[index]
    perm = shuffle_real_rows(k_perm, n_real, n_max, n_batches * batch_size)
    return perm, (jnp.arange(n_batches), jax.random.split(k_drop, n_batches))


def train_epoch(learner: Learner, carry, key, arch, data: PaddedData, mask, batch_size: int, index=None,
                hints=None, extra_loss=None):
    """One shuffled pass of minibatch steps: ((params, stats, opt_state), mean loss of the valid minibatches)."""
    perm, xs = _batches(*jax.random.split(key), data, index, batch_size)

    def step(carry, inputs):
        params, stats, opt_state = carry
        b, k = inputs
        x, y, w = gather_batch(data, index, perm, b * batch_size, batch_size)
        params, stats, opt_state, value, valid = sgd_step(
            learner, params, stats, opt_state, arch, x, y, w, k, mask, hints, extra_loss)
        return (params, stats, opt_state), (value * valid, valid)

    carry, (losses, valid) = jax.lax.scan(step, carry, xs)
    return carry, losses.sum() / jnp.maximum(valid.sum(), 1)


def train(learner: Learner, key, variables, opt_state, arch: Arch, data: PaddedData, mask, *, epochs: int,
          batch_size: int, index=None, hints=None, extra_loss=None):
    """`epochs` epochs of `train_epoch` (no early stopping: the base networks' training, neon_spec.md §7).

    Args: key: PRNG key; variables: {"params", "batch_stats"} of one network; opt_state: `learner.tx`'s state;
      arch: its `Arch`; data: one split, or a stack with `index`; mask: 0/1 pytree like the params (what trains);
      epochs, batch_size: static; hints, extra_loss: as `sgd_step`.
    Returns: (variables, opt_state, epoch losses (epochs,)).
    """
    carry = (variables["params"], variables["batch_stats"], opt_state)
    (params, stats, opt_state), epoch_loss = jax.lax.scan(
        lambda c, k: train_epoch(learner, c, k, arch, data, mask, batch_size, index, hints, extra_loss),
        carry, jax.random.split(key, epochs))
    return {"params": params, "batch_stats": stats}, opt_state, epoch_loss


@struct.dataclass
class TuneState:
    """One fine-tune in flight: weights, optimiser state, best snapshot and early-stopping counters."""

    params: Any
    stats: Any
    opt_state: Any
    best: Any
    best_loss: jax.Array
    bad: jax.Array  # epochs in a row without improvement
    epoch: jax.Array  # epochs run
    key: jax.Array


def tune_continues(state: TuneState, max_epochs: int, patience: int) -> jax.Array:
    """() bool: the fine-tune has epochs left and has not run out of patience."""
    return (state.epoch < max_epochs) & (state.bad < patience)


def tune_setup(learner: Learner, key, variables, trainable: Trainable, weight_mask=None):
    """(the fine-tune's initial `TuneState`, the 0/1 mask of what it may change) for one network: a fresh
    optimiser; `weight_mask` (optional 0/1 pytree like the params) freezes single entries on top of `trainable`."""
    params, stats = variables["params"], variables["batch_stats"]
    mask = param_mask(trainable, params)
    if weight_mask is not None:
        mask = tree_map(lambda m, w: m * w, mask, weight_mask)
    state = TuneState(params=params, stats=stats, opt_state=learner.tx.init(params),
                      best={"params": params, "batch_stats": stats}, best_loss=jnp.float32(jnp.inf),
                      bad=jnp.int32(0), epoch=jnp.int32(0), key=key)
    return state, mask


def tune_epoch(learner: Learner, state: TuneState, arch, data: PaddedData, mask, batch_size: int, index=None,
               hints=None) -> TuneState:
    """One fine-tune epoch of one network: a fresh shuffle, a scan over its minibatches; every minibatch whose
    loss (before its update) beats the best so far snapshots the weights that produced it. With `hints`, a group
    no network trains is not copied into the snapshot (its unchanged value already is)."""
    groups = None if hints is None else hints.groups
    key, k_perm, k_drop = jax.random.split(state.key, 3)
    perm, xs = _batches(k_perm, k_drop, data, index, batch_size)

    def snapshot(better, params, best_params):
        keep = lambda new, old: tree_map(lambda a, b: jnp.where(better, a, b), new, old)
        if groups is None:
            return keep(params, best_params)
        return {name: jax.lax.cond(groups[name], keep, lambda new, old: old, params[name], best_params[name])
                for name in params}

    def step(carry, inputs):
        params, stats, opt_state, best, best_loss, improved = carry
        b, k = inputs
        x, y, w = gather_batch(data, index, perm, b * batch_size, batch_size)
        new_params, new_stats, new_opt, value, valid = sgd_step(
            learner, params, stats, opt_state, arch, x, y, w, k, mask, hints)
        better = valid & (value < best_loss)
        best = {"params": snapshot(better, params, best["params"]),
                "batch_stats": tree_map(lambda a, b_: jnp.where(better, a, b_), new_stats, best["batch_stats"])}
        best_loss = jnp.where(better, value, best_loss)
        return (new_params, new_stats, new_opt, best, best_loss, improved | better), None

    (params, stats, opt_state, best, best_loss, improved), _ = jax.lax.scan(
        step, (state.params, state.stats, state.opt_state, state.best, state.best_loss, False), xs)
    return state.replace(params=params, stats=stats, opt_state=opt_state, best=best, best_loss=best_loss,
                         bad=jnp.where(improved, 0, state.bad + 1), epoch=state.epoch + 1, key=key)


def finetune(learner: Learner, key, variables, arch: Arch, data: PaddedData, trainable: Trainable, *,
             max_epochs: int, batch_size: int, patience: int, index=None, active=True, weight_mask=None,
             hints=None):
    """The original's fine-tuner (neon_spec.md §2.4, §12 B4) for one network; vmap it for many.

    A fresh optimiser; train mode; every minibatch whose loss (before its update) beats the best so far
    snapshots the weights that produced it (and the batch-norm buffers) and resets patience; an epoch without
    any improvement counts towards `patience`; the best snapshot is returned.

    Args:
      key: PRNG key; variables / arch: one network; data: its fine-tune split (or a stack with `index`).
      trainable: `nets.Trainable`, what may change; weight_mask: optional 0/1 pytree like the params that also
        freezes single entries (pruned weights stay exactly zero).
      max_epochs, batch_size, patience: static schedule.
      active: () traced bool; False runs no epoch at all (under vmap the loop stops as soon as every active
        network has stopped).
      hints: `nets.Hints` about the whole vmapped batch.
    Returns:
      (best variables, {"epochs": () int32, "best_loss": () float32}).
    """
    state, mask = tune_setup(learner, key, variables, trainable, weight_mask)
    state = jax.lax.while_loop(
        lambda st: tune_continues(st, max_epochs, patience) & active,
        lambda st: tune_epoch(learner, st, arch, data, mask, batch_size, index, hints),
        state)
    return state.best, {"epochs": state.epoch, "best_loss": state.best_loss}


def logits(learner: Learner, variables, arch: Arch, x, hints=None) -> jax.Array:
    """Eval-mode logits (N, k_max) of one network on rows `x` (N, d_max)."""
    return learner.model.apply(variables, x, arch, train=False, hints=hints)


def accuracy(learner: Learner, variables, arch: Arch, data: PaddedData, index=None, hints=None) -> jax.Array:
    """() eval-mode accuracy of one network on the real rows of a split (or split `index` of a stack)."""
    x, y, n = (data.x, data.y, data.n) if index is None else (data.x[index], data.y[index], data.n[index])
    correct = (jnp.argmax(logits(learner, variables, arch, x, hints), -1) == y).astype(jnp.float32)
    real = jnp.arange(x.shape[0]) < n
    return jnp.where(real, correct, 0.0).sum() / jnp.maximum(n, 1)
