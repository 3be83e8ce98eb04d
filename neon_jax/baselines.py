"""Baselines on the same networks, data splits, fine-tuning and parameter counting as NEON (neon_spec.md §9).

Every baseline prunes a batch of environments (`EnvPool.batch`) in one jitted, vmapped program: prune, optionally
fine-tune, measure test accuracy and count parameters, one compile per (method, shapes) for a whole sweep (the
setting is a traced argument). `run_baseline` is the shell around it and returns one row per network with the
same keys as `learn.run_agent`.

Methods (`BASELINES`):

* ``random`` — the paper's random agent: NEON's environment (re-initialising cut, `passes` visits of every hidden
  layer) with uniform random actions and the environment's fine-tune after every cut (= ``run_agent(...,
  random_actions=True)``; the observation, unused by a random policy, is dead code and compiled away).
* ``random_no_ft`` — the b97fb33 random runner: the same episode WITHOUT per-step fine-tuning (the environment
  runs with ``finetune_epochs = 0``, so the re-initialised layers stay as drawn), then ONE fine-tune of the whole
  network at the end. The original ran that final fine-tune for up to 100 epochs with patience 10, the same
  schedule as its per-step fine-tune; here it uses the preset's fine-tune schedule (`finetune_epochs`,
  `patience`: 100 / 10 in ``paper``, 10 / 3 in ``cpu``), likewise the same as the environment's.
* ``magnitude`` — unstructured global magnitude pruning: the `setting` fraction of all real Linear weights
  (hidden and output layers together) with the smallest |w| is masked (``round(fraction * n)`` weights, as
  ``torch.nn.utils.prune``; ties go to the lower flat index).
* ``structured`` — neuron pruning: every hidden layer loses ``floor(setting * width)`` neurons (at least one
  kept), those with the smallest L1 norm of their incoming weights (``ln_structured(n=1, dim=0)``, the
  environment's ``--prune`` mode, §2.7); their biases, outgoing weights and batch-norm entries go with them.
* ``amc`` — AMC (He et al. 2018, `neon_jax.amc`): a DDPG agent searches, per network, the share of each
  Linear's inputs (= the previous hidden layer's neurons) to keep under a FLOPs budget (`setting` = the share of
  FLOPs preserved, the original's 0.2), refitting the next Linear by least squares; the best strategy of the
  search is applied and fine-tuned. Its search settings are an `amc.AMCConfig` (`amc_config`); the original
  reported max(pruned, unpruned) accuracy (§12 C3), here only with ``AMCConfig(floor_accuracy=True)``. Rows add
  the search's FLOPs ratio and validation accuracy of the chosen strategy before fine-tuning.
* ``admm`` — ADMM pruning (`neon_jax.admm`, the original's runner): pre-training, ADMM epochs with an L1
  proximal step, a hard prune of every Linear weight and batch-norm scale below alpha / rho, and a masked
  retrain, all on the fine-tune split with the original's softmax-probability loss (`setting` = alpha, the
  original's 5e-4: threshold 0.05). Its retrain is its fine-tune: no other follows (as the original).
* ``lap`` — lookahead pruning (Park et al., ICLR 2020), one-shot and layer-wise: with k = `setting`, every
  Linear but the last loses the fraction ``1 - 0.5^k`` of its weights and the output Linear ``1 - 0.75^k``
  (the original's ``1 - (1 - r)^k``, r = 0.5 / 0.25), by the lookahead score (see `lap_scores`); at least
  one weight per Linear is kept (k = 10 would otherwise empty layers of fewer than ~500 weights).

Fine-tuning (``finetune=True``) is the environment's fine-tuner (`train._Trainer.finetune_one`: fresh Adam,
train mode, the finetune split, best-minibatch snapshots, the preset's epochs / patience) over every layer
(`Trainable.everything`), with pruned weights held at exactly zero (a per-weight mask on gradients and Adam
updates). The original baselines used other schedules (5 epochs for magnitude pruning, 10 000 iterations at lr
1.2e-3 for LAP, none for the 2020 LAP numbers); one schedule for all makes the comparison about the pruning.

Parameter counting, one rule for every method (fixes neon_spec.md §12 C2–C3):

* structured results (``random``, ``random_no_ft``, ``structured``, ``amc``; ``counting = "structured"``):
  `nets.count_params` of the remaining architecture — Linear weights and biases plus batch-norm scale and shift
  of alive neurons (§2.6), exactly as NEON's rows;
* unstructured results (``magnitude``, ``lap``, ``admm``; ``counting = "unstructured"``): the same count minus
  the pruned Linear weights (and ADMM's pruned batch-norm scales), i.e. the unpruned Linear weights + every
  bias + the batch-norm scale / shift of every neuron of the architecture. Neurons are not removed by
  unstructured pruning, so their biases count even when all of a neuron's weights were pruned (conservative).
  An unpruned network counts the same under both rules.

Compression = params_before / params_after; accuracies are on the TEST split (eval mode).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from neon_jax import admm, amc, nets, programs, runner
from neon_jax.env import EnvConfig, EnvParams, NeonEnv
from neon_jax.policies import random_policy
from neon_jax.pool import EnvPool
from neon_jax.presets import PRE_BATCHNORM, Preset
from neon_jax.rollout import Outcome, episode_outcome, make_rollout

BASELINES: dict[str, str] = {
    "random": "random agent: NEON's environment, uniform actions, fine-tune after every cut (the paper's)",
    "random_no_ft": "random agent without per-step fine-tuning, one whole-network fine-tune at the end (b97fb33)",
    "magnitude": "unstructured global L1-magnitude pruning of all Linear weights; setting = fraction pruned",
    "structured": "neuron pruning by the L1 norm of incoming weights; setting = fraction of each hidden layer",
    "lap": "lookahead pruning (Park et al. 2020), layer-wise 1-(1-r)^k, r = 0.5 / 0.25 (last); setting = k",
    "amc": "AMC (He et al. 2018): DDPG search of per-layer neuron ratios under a FLOPs budget, least-squares "
           "refit; setting = share of FLOPs kept",
    "admm": "ADMM pruning: L1-proximal ADMM epochs, hard prune below alpha/rho, masked retrain; setting = alpha",
}
UNSTRUCTURED = ("magnitude", "lap", "admm")
USES_PASSES = ("random", "random_no_ft")  # the one-shot pruners ignore `passes`
MAGNITUDE_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9)  # the 2020 "Pruning" sweep (§9)
STRUCTURED_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LAP_STEPS = (1, 3, 10)  # LAP 1 / 3 / 10 of the paper's tables (§10.1)
AMC_PRESERVE = (0.2, 0.35, 0.5, 0.7)  # the original's 0.2, then looser budgets for a front
ADMM_ALPHAS = (admm.ALPHA, 1e-3, 2e-3)  # the original's 5e-4 (threshold 0.05), then 0.1 and 0.2
LAP_RATIO_HIDDEN, LAP_RATIO_OUTPUT = 0.5, 0.25
# `setting=None` picks these: the b97fb33 pruning runner's 80 %, half of every layer, LAP 1.
DEFAULT_SETTING = {"random": None, "random_no_ft": None, "magnitude": 0.8, "structured": 0.5, "lap": 1,
                   "amc": 0.2, "admm": admm.ALPHA}


def default_settings(method: str) -> list:
    """The sweep the paper reports for `method` ([None] for the random agents, which have no setting)."""
    _check_method(method)
    return {"random": [None], "random_no_ft": [None], "magnitude": list(MAGNITUDE_FRACTIONS),
            "structured": list(STRUCTURED_RATIOS), "lap": list(LAP_STEPS), "amc": list(AMC_PRESERVE),
            "admm": list(ADMM_ALPHAS)}[method]


def _check_method(method: str) -> None:
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")


def check_setting(method: str, setting):
    """Validates `setting` for `method` (None = `DEFAULT_SETTING`); returns it as float / int / None."""
    _check_method(method)
    if setting is None:
        return DEFAULT_SETTING[method]
    if method in ("random", "random_no_ft"):
        raise ValueError(f"{method!r} takes no setting (use passes=...), got {setting!r}")
    if method == "lap":
        if isinstance(setting, bool) or not isinstance(setting, (int, np.integer, float)) or \
                float(setting) != int(setting) or not 1 <= int(setting) <= 100:
            raise ValueError(f"lap's setting is the number of lookahead steps k, an integer in 1..100, got {setting!r}")
        return int(setting)
    try:
        value = float(setting)
    except (TypeError, ValueError):
        raise ValueError(f"{method!r} needs a number in (0, 1), got {setting!r}") from None
    if method == "admm":
        if not 0.0 < value < 1.0:
            raise ValueError(f"admm's setting is alpha (prune threshold alpha / rho), a number in (0, 1), got {setting!r}")
        return value
    if not 0.0 < value < 1.0:
        what = "the share of FLOPs kept" if method == "amc" else "the share of weights / neurons removed"
        raise ValueError(f"{method!r} needs a fraction in (0, 1) ({what}), got {setting!r}")
    return value


def lap_ratios(k: int) -> tuple[float, float]:
    """(hidden, output) per-layer prune ratios of LAP with k steps: ``1 - (1 - r)^k``."""
    return 1.0 - (1.0 - LAP_RATIO_HIDDEN) ** k, 1.0 - (1.0 - LAP_RATIO_OUTPUT) ** k


def structured_remove_table(ratio: float, w_max: int) -> np.ndarray:
    """(w_max + 1,) int32 neurons removed from a layer of each width: ``floor(ratio * width)``, at least one kept.

    Host float64 with a 1e-9 guard, so 0.7 * 10 removes 7 (a float32 product would give 6.9999995 -> 6)."""
    return np.array([min(math.floor(ratio * w + 1e-9), max(w - 1, 0)) for w in range(w_max + 1)], np.int32)


# ----------------------------------------------------------------------------------------------------------
# Pure pieces, one network (vmap them). Kernels in the padded layout of `nets` (`nets.kernels` order: hidden
# Linears, then the output Linear); real entries per `nets.real_weight_masks`.


def _ranks(scores: jax.Array) -> jax.Array:
    """Rank of every entry in ascending order (ties: lower index first)."""
    order = jnp.argsort(scores, stable=True)
    return jnp.zeros(scores.shape, jnp.int32).at[order].set(jnp.arange(scores.size, dtype=jnp.int32))


def smallest_mask(scores: jax.Array, real: jax.Array, n_prune: jax.Array) -> jax.Array:
    """0/1 keep mask: the `n_prune` real entries with the smallest score get 0; everything else 1."""
    flat = jnp.where(real.reshape(-1) > 0, scores.reshape(-1), jnp.inf)
    return (_ranks(flat) >= n_prune).astype(jnp.float32).reshape(scores.shape)


def magnitude_masks(params: dict, arch: nets.Arch, dims: nets.NetDims, fraction) -> list[jax.Array]:
    """Keep masks of global unstructured magnitude pruning: ``round(fraction * n_real)`` of all real Linear
    weights (every layer together) with the smallest |w| are pruned. Returns one mask per `kernel_names`."""
    kernels = nets.kernels(params, dims.max_hidden)
    real = nets.real_weight_masks(arch, dims)
    scores = jnp.concatenate([jnp.abs(k).reshape(-1) for k in kernels])
    real_flat = jnp.concatenate([r.reshape(-1) for r in real])
    n_prune = jnp.round(fraction * real_flat.sum()).astype(jnp.int32)
    keep = smallest_mask(scores, real_flat, n_prune)
    sizes = np.cumsum([k.size for k in kernels])[:-1]
    return [m.reshape(k.shape) for m, k in zip(jnp.split(keep, sizes), kernels)]


def batchnorm_factors(variables: dict, arch: nets.Arch, dims: nets.NetDims) -> list[jax.Array]:
    """|gamma| / sqrt(running var + eps) of the batch-norm in front of each hidden Linear (1 where there is none).

    Entry j scales the inputs of hidden Linear j, i.e. the outputs of hidden layer j - 1 (entry 0: the features).
    """
    out = []
    for j in range(dims.max_hidden):
        scale, _, _, var = nets.batchnorm(variables, j)
        a = jnp.abs(scale) * jax.lax.rsqrt(var + nets.BN_EPS)
        out.append(jnp.where((arch.pre_layer[j] == PRE_BATCHNORM) & (j < arch.depth), a, 1.0))
    return out


def lap_scores(variables: dict, arch: nets.Arch, dims: nets.NetDims) -> list[jax.Array]:
    """Lookahead scores of every Linear weight (Park et al. 2020, their reference code `LAP`, squared form).

    For the weight from neuron k (layer i-1) to neuron j (layer i), with W_i the kernel (in, out):

        L = W_i[k, j]^2 * (sum_m W_{i-1}[m, k]^2) * (sum_n W_{i+1}[j, n]^2) * s_k^2 * s_j^2

    i.e. |w| times the L2 norms of the incoming weights of its input neuron and of the outgoing weights of its
    output neuron, squared (same ranking). The first Linear has no previous factor and the output Linear no
    next one (both 1). s is the eval-mode batch-norm scale |gamma| / sqrt(var + eps) applied to that neuron's
    output (here: the batch-norm in front of the next Linear), 1 without batch-norm — the reference code's
    `bn_factors` (BN of the previous layer for the previous factor, of the current layer for the next factor);
    the batch-norm on the raw features is ignored, as there. Biases are neither scored nor pruned. Returns one
    score array per `kernel_names` (padding and dead entries score whatever; callers mask them).
    """
    H = dims.max_hidden
    kernels = nets.kernels(variables["params"], H)
    bn = batchnorm_factors(variables, arch, dims)
    col_sq = [(k ** 2).sum(0) for k in kernels[:H]]  # (w_max,): incoming weights of each neuron of layer j
    row_sq = [(k ** 2).sum(1) for k in kernels]  # outgoing weights of each input of Linear j
    scores = []
    for i in range(H):
        prev = jnp.ones(kernels[i].shape[0]) if i == 0 else col_sq[i - 1] * bn[i] ** 2
        nxt_out = row_sq[H]
        if i + 1 < H:
            nxt = jnp.where(i + 1 < arch.depth, row_sq[i + 1] * bn[i + 1] ** 2, nxt_out)
        else:
            nxt = nxt_out
        scores.append(kernels[i] ** 2 * prev[:, None] * nxt[None, :])
    prev_out = jnp.stack(col_sq)[arch.depth - 1]
    scores.append(kernels[H] ** 2 * prev_out[:, None])
    return scores


def layerwise_masks(scores: list[jax.Array], real: list[jax.Array], ratio_hidden, ratio_output,
                    keep_at_least: int = 1) -> list[jax.Array]:
    """Per-Linear keep masks: in each Linear, ``round(ratio * n_real)`` real weights with the smallest score
    are pruned (``ratio_hidden`` for all but the output Linear), keeping at least `keep_at_least` of them."""
    masks = []
    for i, (s, r) in enumerate(zip(scores, real)):
        ratio = ratio_output if i == len(scores) - 1 else ratio_hidden
        n_real = r.sum()
        n_prune = jnp.minimum(jnp.round(ratio * n_real), jnp.maximum(n_real - keep_at_least, 0)).astype(jnp.int32)
        masks.append(smallest_mask(s, r, n_prune))
    return masks


def apply_kernel_masks(variables: dict, masks: list[jax.Array], dims: nets.NetDims) -> dict:
    """Zeroes the pruned weights."""
    H = dims.max_hidden
    kernels = [k * m for k, m in zip(nets.kernels(variables["params"], H), masks)]
    return {"params": nets.with_kernels(variables["params"], kernels, H), "batch_stats": variables["batch_stats"]}


def weight_mask_tree(params: dict, masks: list[jax.Array], dims: nets.NetDims) -> dict:
    """A pytree like `params` for `finetune_one(weight_mask=...)`: the kernel masks, ones elsewhere."""
    return nets.with_kernels(jax.tree_util.tree_map(jnp.ones_like, params), masks, dims.max_hidden)


def count_unstructured(arch: nets.Arch, masks: list[jax.Array], dims: nets.NetDims) -> jax.Array:
    """() int32 parameters after unstructured pruning: `nets.count_params(arch)` minus the pruned real weights."""
    pruned = sum(((1.0 - m) * r).sum() for m, r in zip(masks, nets.real_weight_masks(arch, dims)))
    return nets.count_params(arch) - pruned.astype(jnp.int32)


def structured_arch(params: dict, arch: nets.Arch, dims: nets.NetDims, remove_table: jax.Array) -> nets.Arch:
    """Removes from every hidden layer `remove_table[width]` alive neurons with the smallest L1 norm of incoming
    weights (ties: lower index first). Returns the narrowed `Arch` (the caller zeroes the dead weights)."""
    masks = []
    for j in range(dims.max_hidden):
        alive = arch.mask[j]
        norms = jnp.abs(nets.kernel(params, j, dims.max_hidden)).sum(0)
        n_remove = remove_table[alive.sum().astype(jnp.int32)]
        removed = smallest_mask(norms, alive, n_remove) == 0
        masks.append(jnp.where(removed, 0.0, alive))
    return arch.replace(mask=jnp.stack(masks))


# ----------------------------------------------------------------------------------------------------------
# The batched program.


def program(method: str, dims: nets.NetDims, preset: Preset, passes: int = 4, finetune: bool = True,
            cut: str = "reinit", slots: int | str | None = "auto", amc_config: amc.AMCConfig | None = None,
            admm_config: admm.ADMMConfig | None = None):
    """The jitted batch program of one baseline: ``program(keys (B, 2), env_params (leading axis B), setting) ->
    rollout.Outcome``, one per settings in a process (a sweep's setting is a traced argument, `setting_arrays`).

    The random agents roll out NEON's environment with `policies.random_policy` (network b's episode with key
    ``keys[b]``, as an agent's roll-out); the one-shot pruners prune, then fine-tune every layer with
    pruned weights held at zero (they ignore `passes` and `cut`). `cut` is the random agents' cut; `slots`:
    see `NeonEnv`; `amc_config` / `admm_config`: AMC's search and ADMM's schedule (None: the original's; other
    methods ignore them).
    """
    _check_method(method)
    if method not in USES_PASSES:
        passes, cut = 1, "reinit"
    if method == "amc":
        amc_config = amc.resolve_batching(amc_config or amc.AMCConfig())
        amc.check_table_size(dims, amc_config)
    else:
        amc_config = None
    admm_config = (admm_config or admm.ADMMConfig()) if method == "admm" else None
    return _program(method, dims, preset, int(passes), bool(finetune), cut, slots, amc_config, admm_config)


@programs.cached("baseline programs", maxsize=16)
def _program(method, dims, preset, passes, finetune, cut, slots, amc_config, admm_config):
    H = dims.max_hidden
    # the random agents' environment; without per-step fine-tuning its fine-tune runs zero epochs
    per_step = method == "random" and finetune
    env_preset = preset if per_step else dataclasses.replace(preset, finetune_epochs=0)
    env = NeonEnv(EnvConfig(passes=passes, cut=cut), dims, env_preset, slots)
    trainer = env.trainer
    final_finetune = finetune and method != "random"
    everything = nets.Trainable.everything(H)

    def tune(key, variables, arch, p: EnvParams, weight_mask):
        data = jax.tree_util.tree_map(lambda x: x[None], p.finetune)
        return trainer.finetune_one(key, variables, arch, 0, data, everything, preset.finetune_epochs,
                                    preset.finetune_batch, preset.patience, weight_mask=weight_mask)

    def prune_one(key, p: EnvParams, setting) -> dict:
        """The one-shot pruners' cut of one network (no fine-tune yet)."""
        k_prune = jax.random.split(key)[0]
        variables, arch = p.variables, p.arch
        out = {"masks": None, "extra": {}, "params_after": None}
        if method == "structured":
            arch = structured_arch(variables["params"], arch, dims, setting["remove"])
            variables = nets.zero_dead(variables, arch, dims)
        elif method == "amc":
            variables, arch, found = amc.prune(k_prune, trainer.model, variables, arch, dims, p.finetune, p.val,
                                               setting["preserve"], amc_config)
            out["extra"] = {"amc_flops_ratio": found.best_flops_ratio, "amc_search_val_acc": found.best_val_acc}
        elif method == "admm":
            variables, admm_masks = admm.admm_prune(k_prune, p, setting["alpha"], trainer.model, dims, admm_config)
            out["params_after"] = admm.count_admm(arch, admm_masks["kernels"], admm_masks["scales"], dims)
        else:
            if method == "magnitude":
                masks = magnitude_masks(variables["params"], arch, dims, setting["fraction"])
            else:  # lap
                masks = layerwise_masks(lap_scores(variables, arch, dims), nets.real_weight_masks(arch, dims),
                                        setting["ratio_hidden"], setting["ratio_output"])
            variables = apply_kernel_masks(variables, masks, dims)
            out["masks"] = masks
        return {**out, "variables": variables, "arch": arch}

    def finish_one(key, p: EnvParams, cut: dict) -> Outcome:
        """Fine-tune (pruned weights held at zero), count and measure one cut network."""
        k_tune = jax.random.split(key)[1]
        variables, arch, masks, params_after = cut["variables"], cut["arch"], cut["masks"], cut["params_after"]
        epochs = jnp.int32(0)
        if method == "admm":  # its masked retrain is its fine-tune
            epochs = jnp.int32(admm_config.retrain_epochs * admm_config.iters)
        elif final_finetune:
            weight_mask = None if masks is None else weight_mask_tree(variables["params"], masks, dims)
            variables, info = tune(k_tune, variables, arch, p, weight_mask)
            epochs = info["epochs"]
        if params_after is None:
            params_after = nets.count_params(arch) if masks is None else count_unstructured(arch, masks, dims)
        no_steps = jnp.zeros((0,), jnp.int32)
        test_before, test_after = env.accuracy(p.variables, p.arch, p.test), env.accuracy(variables, arch, p.test)
        if amc_config is not None and amc_config.floor_accuracy:  # the original's report (§12 C3)
            test_after = jnp.maximum(test_after, test_before)
        return Outcome(
            variables=variables, arch=arch, widths_before=p.arch.widths, params_before=nets.count_params(p.arch),
            params_after=params_after, test_acc_before=test_before, test_acc_after=test_after,
            val_acc0=env.accuracy(p.variables, p.arch, p.val), val_acc=env.accuracy(variables, arch, p.val),
            actions=no_steps, valid=no_steps.astype(bool), reward=no_steps.astype(jnp.float32),
            finetune_epochs=epochs, row_extra=cut["extra"])

    # AMC's searches one after the other inside the program where that is faster (`amc.AMCConfig.batching`)
    sequential = amc_config is not None and amc_config.batching == "map"

    rollout = make_rollout(env, random_policy)

    def finish_episode(key, out: Outcome, p: EnvParams):
        """random_no_ft: one whole-network fine-tune of the episode's final network."""
        variables, info = tune(jax.random.fold_in(key, 1), out.variables, out.arch, p, None)
        return out.replace(variables=variables, test_acc_after=env.accuracy(variables, out.arch, p.test),
                           val_acc=env.accuracy(variables, out.arch, p.val),
                           finetune_epochs=out.finetune_epochs + info["epochs"])

    def batch_program(keys, params: EnvParams, setting):
        if method not in USES_PASSES:
            cut = (jax.lax.map(lambda a: prune_one(*a, setting), (keys, params)) if sequential
                   else jax.vmap(prune_one, in_axes=(0, 0, None))(keys, params, setting))
            return jax.vmap(finish_one)(keys, params, cut)
        final, transitions = rollout(keys, params, None)
        out = episode_outcome(env, params, final, transitions)
        return jax.vmap(finish_episode)(keys, out, params) if final_finetune else out

    return jax.jit(batch_program)


def setting_arrays(method: str, setting, dims: nets.NetDims) -> dict:
    """The traced form of a checked `setting` (what `program` takes as its third argument)."""
    if method == "magnitude":
        return {"fraction": jnp.float32(setting)}
    if method == "structured":
        return {"remove": jnp.asarray(structured_remove_table(setting, dims.w_max))}
    if method == "lap":
        hidden, output = lap_ratios(setting)
        return {"ratio_hidden": jnp.float32(hidden), "ratio_output": jnp.float32(output)}
    if method == "amc":
        return {"preserve": jnp.float32(setting)}
    if method == "admm":
        return {"alpha": jnp.float32(setting)}
    return {}


def run_baseline(method: str, pool: EnvPool, preset: Preset, *, setting: float | int | None = None,
                 passes: int = 4, seed: int = 0, batch_size: int = 32, finetune: bool = True, cut: str = "reinit",
                 progress: bool = False, amc_config: amc.AMCConfig | None = None,
                 admm_config: admm.ADMMConfig | None = None, buckets: bool = True) -> runner.RunResult:
    """Runs one baseline over every network of `pool` (`runner.run`): one row per network.

    Args:
      method: a key of `BASELINES`.
      pool: the networks and their data splits (`EnvPool.from_zoos`).
      preset: sizes and the fine-tune schedule (epochs, batch, patience) — the environment's.
      setting: magnitude: fraction of weights pruned; structured: fraction of each hidden layer's neurons
        removed; lap: lookahead steps k; amc: share of FLOPs kept; admm: alpha; random agents: None. None
        elsewhere = `DEFAULT_SETTING`.
      passes: visits of every hidden layer per episode (random agents only; paper: 4).
      seed: PRNG seed (random actions, re-initialisation, fine-tuning shuffles and dropout).
      batch_size: networks per compiled call (the last batch is padded by repeating a network).
      finetune: random: fine-tune after every cut (False: neither per step nor at the end); every other
        method: one whole-network fine-tune after pruning (pruned weights stay zero).
      cut: the random agents' cut ("reinit": the paper's environment, or "keep_best").
      amc_config / admm_config: AMC's search and ADMM's schedule (None: the original's).
      buckets: each width bucket of the pool at its own shape (`runner.run`; False: all at the pool's shape).
    Returns:
      `runner.RunResult`; rows of `runner.ROW_FIELDS` plus method, setting and counting ("structured" /
      "unstructured").
    """
    setting = check_setting(method, setting)
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    def at(dims):
        return (program(method, dims, preset, int(passes), bool(finetune), cut, amc_config=amc_config,
                        admm_config=admm_config), setting_arrays(method, setting, dims))

    extra = {"method": method, "setting": setting,
             "counting": "unstructured" if method in UNSTRUCTURED else "structured"}
    return runner.run(at, pool, seed=seed, batch_size=batch_size, buckets=buckets, progress=progress, desc=method,
                      extra=extra)
