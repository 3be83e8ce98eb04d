"""ADMM pruning (the paper's ADMM baseline, `admm_pruning_runner.py`) as a pure, jittable, vmappable function.

Method, per iteration (`ADMMConfig.iters`, default 1), for one network on its fine-tune split:

1. `pre_epochs` epochs of ordinary training of every parameter (train mode: dropout on, batch-norm on batch
   statistics).
2. `admm_epochs` ADMM epochs: the loss is the data loss plus ``rho / 2 * ||W - Z + U||`` (the plain norm, per
   weight tensor, as the public PyTorch ADMM code the runner's settings come from) summed over every "weight"
   W, i.e. every Linear kernel AND every batch-norm scale (gamma); not biases, not batch-norm shifts.
   Z = W and U = 0 at the start of the phase; after each epoch the L1 proximal step
   ``Z = soft_threshold(W + U, alpha / rho)``, then ``U = U + W - Z``.
3. Hard prune: every weight with ``|W| < alpha / rho`` is set to 0 and masked (``|W| >= alpha / rho`` is kept).
4. `retrain_epochs` epochs of masked Adam: pruned entries get zero gradient and zero update, so stay exactly 0.

No fine-tune after that. Settings (the original's): rho 1e-2, alpha 5e-4 (threshold 0.05), Adam lr 1e-3 with
PyTorch's defaults, batch 64, 10 / 5 / 10 epochs.

The data loss is, as the original, PyTorch's ``nll_loss`` applied to the SOFTMAX OUTPUTS (probabilities, not
log-probabilities): ``mean over real rows of -softmax(logits)[y]`` (`softmax_nll`). A known quirk of the original
(neon_spec.md §12 B5), kept on purpose: it changes the gradients and the accuracies reachable.

Padding: only real entries are weights (`weight_selection`: `nets.real_weight_masks` for kernels, the live
inputs of a live hidden Linear with batch-norm in front for scales); only they are regularised, pruned and
counted, and padded entries keep their values (their gradients and Adam updates are exactly zero).
Minibatches are shuffles of the real rows, padded rows carry weight 0, and a minibatch with fewer than 2 real
rows is skipped, as in `neon_jax.fit`.

Deviations and choices:

* Source: the runner's settings (rho, alpha, the L1 prox, ``|W| < alpha / rho``, every parameter named "weight")
  match the public PyTorch ADMM pruning code (bzantium/pytorch-admm-pruning), which adds the plain norm
  ``rho / 2 * ||W - Z + U||`` per weight tensor and keeps one Adam through all phases; both are followed here
  (the norm's gradient is 0 where the norm is 0, as PyTorch's). ``squared_penalty=True`` gives the textbook
  ADMM penalty ``rho / 2 * ||W - Z + U||^2`` instead. The NEON runner itself is not public.
* One Adam state (`fit.masked_adam`, PyTorch's defaults) through the pre-epochs, the ADMM epochs and
  the retrain; in the retrain the pruned entries' gradients and updates are masked, so they stay exactly 0 even
  though their moments from before the prune are not 0.
* ``iters > 1`` repeats the whole schedule on the result; like the original's loop, later pre-epochs and ADMM
  epochs train every weight (pruned ones may grow back) and the mask is recomputed; the last mask is returned.
* Counting (`count_admm`): `nets.count_params` minus the pruned real Linear weights and batch-norm scales
  (the original counted non-zero entries of every parameter, neon_spec.md §12 C2).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from neon_jax import fit, nets
from neon_jax.env import EnvParams
from neon_jax.presets import PRE_BATCHNORM

ALPHA = 5e-4  # the original's alpha: prune threshold alpha / rho = 0.05

tree_map = jax.tree_util.tree_map


@dataclasses.dataclass(frozen=True)
class ADMMConfig:
    """Static schedule of `admm_prune` (hashable: part of the compiled program; alpha is traced)."""

    pre_epochs: int = 10
    admm_epochs: int = 5
    retrain_epochs: int = 10
    rho: float = 1e-2
    batch_size: int = 64
    learning_rate: float = 1e-3
    iters: int = 1
    squared_penalty: bool = False  # True: the textbook squared penalty (see the module docstring)

    def __post_init__(self):
        if min(self.pre_epochs, self.admm_epochs, self.retrain_epochs) < 0 or self.iters < 1:
            raise ValueError(f"epochs must be >= 0 and iters >= 1, got {self}")
        if self.rho <= 0 or self.batch_size < 1:
            raise ValueError(f"rho must be > 0 and batch_size >= 1, got {self}")


def soft_threshold(v: jax.Array, t) -> jax.Array:
    """The L1 proximal step ``sign(v) * max(|v| - t, 0)`` (0 where ``|v| <= t``), elementwise."""
    return jnp.sign(v) * jnp.maximum(jnp.abs(v) - t, 0.0)


def admm_zu_update(w: jax.Array, u: jax.Array, alpha, rho) -> tuple[jax.Array, jax.Array]:
    """One Z / U update after an ADMM epoch: ``Z = soft_threshold(W + U, alpha / rho)``, ``U = U + W - Z``.

    Args: w, u: arrays of one shape (weights, scaled duals); alpha, rho: scalars.
    Returns: (z, u) of that shape.
    """
    z = soft_threshold(w + u, alpha / rho)
    return z, u + w - z


def softmax_nll(logits: jax.Array, y: jax.Array, weight: jax.Array) -> jax.Array:
    """The original's data loss, ``nll_loss(softmax(logits), y)``: the weighted mean of ``-softmax(logits)[y]``.

    Args: logits (B, k_max) (padded classes at `nets.NEG_LOGIT`); y (B,) int labels; weight (B,) row weights.
    Returns: () float32.
    """
    p_true = jnp.take_along_axis(jax.nn.softmax(logits), y[:, None], axis=1)[:, 0]
    return -(weight * p_true).sum() / jnp.maximum(weight.sum(), 1.0)


def admm_penalty(params: dict, z: dict, u: dict, selection: dict, rho, squared: bool = True) -> jax.Array:
    """``rho / 2 * sum over parameters of ||W - Z + U||^2`` on the selected entries (``||.||`` unsquared if not
    `squared`). Args: pytrees like `params` (`selection` 0/1); Returns: () float32."""
    terms = []
    for w, zz, uu, s in zip(*(jax.tree_util.tree_leaves(t) for t in (params, z, u, selection))):
        sq = (s * (w - zz + uu) ** 2).sum()
        terms.append(sq if squared else jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0))
    return rho / 2 * sum(terms)


def scale_real_masks(arch: nets.Arch, dims: nets.NetDims) -> list[jax.Array]:
    """0/1 masks of the real batch-norm scales, one per hidden Linear j (`nets.batchnorm_name(j)`): its live
    inputs where hidden Linear j < depth has batch-norm in front, all zero otherwise. Shapes (dims.fan_in(j),)."""
    in_masks = [arch.feature_mask(dims.d_max)] + [arch.mask[j] for j in range(dims.max_hidden - 1)]
    return [nets.fit_width(m, dims.fan_in(j)) * ((arch.pre_layer[j] == PRE_BATCHNORM) & (j < arch.depth))
            for j, m in enumerate(in_masks)]


def _with_scales(tree: dict, scales: list[jax.Array]) -> dict:
    out = dict(tree)
    for j, s in enumerate(scales):
        out[nets.batchnorm_name(j)] = {**tree[nets.batchnorm_name(j)], "scale": s}
    return out


def weight_selection(params: dict, arch: nets.Arch, dims: nets.NetDims) -> dict:
    """A pytree like `params`: 1 on the real "weights" (Linear kernels and batch-norm scales), 0 elsewhere."""
    zeros = tree_map(jnp.zeros_like, params)
    sel = nets.with_kernels(zeros, nets.real_weight_masks(arch, dims), dims.max_hidden)
    return _with_scales(sel, scale_real_masks(arch, dims))


def hard_prune_masks(variables: dict, arch: nets.Arch, dims: nets.NetDims, threshold) -> dict:
    """Keep masks of the hard prune: 0 on real weights with ``|W| < threshold``, 1 everywhere else (padding too).

    Returns: {"kernels": one mask per `nets.kernel_names`, "scales": one per hidden Linear (its batch-norm)}.
    """
    params = variables["params"]
    keep = lambda w, real: jnp.where((real > 0) & (jnp.abs(w) < threshold), 0.0, 1.0)
    kernels = [keep(k, r) for k, r in zip(nets.kernels(params, dims.max_hidden), nets.real_weight_masks(arch, dims))]
    scales = [keep(nets.batchnorm(variables, j)[0], r) for j, r in enumerate(scale_real_masks(arch, dims))]
    return {"kernels": kernels, "scales": scales}


def keep_mask_tree(params: dict, masks: dict, dims: nets.NetDims) -> dict:
    """A pytree like `params`: the masks of `hard_prune_masks` on kernels and scales, ones elsewhere."""
    ones = nets.with_kernels(tree_map(jnp.ones_like, params), masks["kernels"], dims.max_hidden)
    return _with_scales(ones, masks["scales"])


def count_admm(arch: nets.Arch, kernel_masks: list, scale_masks: list, dims: nets.NetDims) -> jax.Array:
    """() int32 parameters after ADMM pruning: `nets.count_params(arch)` minus the pruned real Linear weights
    minus the pruned real batch-norm scales (biases and batch-norm shifts always count)."""
    pruned = sum(((1.0 - m) * r).sum() for m, r in zip(kernel_masks, nets.real_weight_masks(arch, dims)))
    pruned += sum(((1.0 - m) * r).sum() for m, r in zip(scale_masks, scale_real_masks(arch, dims)))
    return nets.count_params(arch) - pruned.astype(jnp.int32)


def _learner(model: nets.MaskedMLP, config: ADMMConfig) -> fit.Learner:
    """The model with one masked Adam (PyTorch defaults) and the original's data loss (`softmax_nll`)."""
    return fit.Learner(model, fit.masked_adam(config.learning_rate), lambda logits, y, w, n_classes: softmax_nll(
        logits, y, w))


def _train(learner: fit.Learner, key, variables, opt_state, arch, data, epochs: int, mask, config: ADMMConfig):
    """`epochs` epochs of masked Adam (`mask`: what may change): (variables, opt_state)."""
    variables, opt_state, _ = fit.train(learner, key, variables, opt_state, arch, data, mask, epochs=epochs,
                                        batch_size=config.batch_size)
    return variables, opt_state


def admm_phase(key, variables: dict, arch: nets.Arch, data: fit.PaddedData, alpha, model: nets.MaskedMLP,
               dims: nets.NetDims, config: ADMMConfig, opt_state=None) -> tuple[dict, dict, dict, optax.OptState]:
    """Step 2 of the schedule: `config.admm_epochs` ADMM epochs from Z = W, U = 0.

    Args: key: PRNG key; variables / arch: one network; data: its fine-tune split (`PaddedData`, no leading
      axis); alpha: () L1 weight (traced); model, dims, config: static; opt_state: the Adam state to go on
      with (None: a fresh one).
    Returns: (variables, Z, U, opt_state); Z and U are pytrees like ``variables["params"]``, zero off the real
      weights.
    """
    params = variables["params"]
    sel = weight_selection(params, arch, dims)
    learner = _learner(model, config)
    ones = tree_map(jnp.ones_like, params)
    z, u = tree_map(jnp.multiply, sel, params), tree_map(jnp.zeros_like, params)

    def admm_epoch(carry, key):
        inner, z, u = carry
        penalty = lambda q: admm_penalty(q, z, u, sel, config.rho, config.squared_penalty)
        inner, _ = fit.train_epoch(learner, inner, key, arch, data, ones, config.batch_size, extra_loss=penalty)
        leaves, treedef = jax.tree_util.tree_flatten(inner[0])
        zu = [admm_zu_update(w, b, alpha, config.rho) for w, b in zip(leaves, jax.tree_util.tree_leaves(u))]
        unflat = lambda i: tree_map(jnp.multiply, sel, jax.tree_util.tree_unflatten(treedef, [p[i] for p in zu]))
        return (inner, unflat(0), unflat(1)), None

    opt_state = learner.tx.init(params) if opt_state is None else opt_state
    carry = ((params, variables["batch_stats"], opt_state), z, u)
    (inner, z, u), _ = jax.lax.scan(admm_epoch, carry, jax.random.split(key, config.admm_epochs))
    return {"params": inner[0], "batch_stats": inner[1]}, z, u, inner[2]


def admm_prune(key, p: EnvParams, alpha, model: nets.MaskedMLP, dims: nets.NetDims,
               config: ADMMConfig = ADMMConfig()) -> tuple[dict, dict]:
    """ADMM-prunes ONE network (`p.variables`, `p.arch`) on `p.finetune`: the whole schedule of the module
    docstring, `config.iters` times. Pure and jittable; vmap it over keys and `EnvParams` for many networks.

    Args:
      key: PRNG key (shuffles and dropout).
      p: the network and its data splits (no leading axis).
      alpha: () float, the L1 weight (traced: a sweep does not recompile); the prune threshold is alpha / rho.
      model / dims / config: static (`nets.make_model(dims, preset)`, the padded shapes, the schedule).
    Returns:
      (variables after the retrain, masks): masks of the last hard prune as `hard_prune_masks`
      ({"kernels": per `nets.kernel_names`, "scales": per hidden Linear}; 1 = kept, padding 1).
    """
    learner = _learner(model, config)
    ones = tree_map(jnp.ones_like, p.variables["params"])

    def iteration(carry, key):
        variables, opt_state = carry
        k_pre, k_admm, k_re = jax.random.split(key, 3)
        variables, opt_state = _train(learner, k_pre, variables, opt_state, p.arch, p.finetune, config.pre_epochs,
                                      ones, config)
        variables, _, _, opt_state = admm_phase(k_admm, variables, p.arch, p.finetune, alpha, model, dims, config,
                                                opt_state)
        masks = hard_prune_masks(variables, p.arch, dims, alpha / config.rho)
        keep = keep_mask_tree(variables["params"], masks, dims)
        variables = {"params": tree_map(jnp.multiply, variables["params"], keep),
                     "batch_stats": variables["batch_stats"]}
        return _train(learner, k_re, variables, opt_state, p.arch, p.finetune, config.retrain_epochs, keep,
                      config), masks

    carry = (p.variables, learner.tx.init(p.variables["params"]))
    (variables, _), masks = jax.lax.scan(iteration, carry, jax.random.split(key, config.iters))
    return variables, tree_map(lambda m: m[-1], masks)
