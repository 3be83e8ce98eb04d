"""One vmapped prune-and-fine-tune program for any registered method, and its shell over a pool.

`program(name, dims, preset, ...)` compiles once per (method, shapes) for a whole sweep (the setting is a traced
argument): prune (`PruningMethod.prune`, or an episode of NEON's environment for the random agents), optionally
fine-tune, measure test accuracy and count parameters, building one `rollout.Outcome` per network. `run_baseline`
runs it over every network of a pool (`runner.run`), one row per network with the keys of `learn.run_agent`.

Fine-tuning (``finetune=True``) is the environment's fine-tuner (`fit.finetune`: fresh Adam, train
mode, the finetune split, best-minibatch snapshots, the preset's epochs / patience) over every layer
(`Trainable.everything`), with pruned weights held at exactly zero (a per-weight mask on gradients and Adam
updates). The original baselines used other schedules (5 epochs for magnitude pruning, 10 000 iterations at lr
1.2e-3 for LAP, none for the 2020 LAP numbers); one schedule for all makes the comparison about the pruning.

Parameter counting, one rule for every method (fixes neon_spec.md §12 C2–C3):

* structured results (``counting = "structured"``: the random agents, structured, AMC): `nets.count_params` of the
  remaining architecture — Linear weights and biases plus batch-norm scale and shift of alive neurons (§2.6),
  exactly as NEON's rows;
* unstructured results (``counting = "unstructured"``: magnitude, LAP, ADMM): the same count minus the pruned
  Linear weights (and ADMM's pruned batch-norm scales), i.e. the unpruned Linear weights + every bias + the
  batch-norm scale / shift of every neuron of the architecture. Neurons are not removed by unstructured pruning,
  so their biases count even when all of a neuron's weights were pruned (conservative). An unpruned network counts
  the same under both rules.

Compression = params_before / params_after; accuracies are on the TEST split (eval mode).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from neon_jax import admm, amc, fit, nets, programs, runner
from neon_jax.env import EnvConfig, EnvParams, NeonEnv
from neon_jax.policies import random_policy
from neon_jax.pool import EnvPool
from neon_jax.presets import Preset
from neon_jax.pruning.masks import count_unstructured, weight_mask_tree
from neon_jax.pruning.method import Context, get_method
from neon_jax.rollout import Outcome, episode_outcome, make_rollout


def check_setting(method: str, setting):
    """Validates `setting` for `method` (None = its default); returns it as float / int / None."""
    return get_method(method).check(setting)


def default_settings(method: str) -> list:
    """The sweep the paper reports for `method` ([None] for the random agents, which have no setting)."""
    return list(get_method(method).sweep)


def setting_arrays(method: str, setting, dims: nets.NetDims) -> dict:
    """The traced form of a checked `setting` (what `program` takes as its third argument)."""
    return get_method(method).arrays(setting, dims)


def program(method: str, dims: nets.NetDims, preset: Preset, passes: int = 4, finetune: bool = True,
            cut: str = "reinit", slots: int | str | None = "auto", amc_config: amc.AMCConfig | None = None,
            admm_config: admm.ADMMConfig | None = None):
    """The jitted batch program of one method: ``program(keys (B, 2), env_params (leading axis B), setting) ->
    rollout.Outcome``, one per settings in a process (a sweep's setting is a traced argument, `setting_arrays`).

    The random agents roll out NEON's environment with `policies.random_policy` (network b's episode with key
    ``keys[b]``, as an agent's roll-out); the one-shot pruners prune, then fine-tune every layer with
    pruned weights held at zero (they ignore `passes` and `cut`). `cut` is the random agents' cut; `slots`:
    see `NeonEnv`; `amc_config` / `admm_config`: AMC's search and ADMM's schedule (None: the original's; other
    methods ignore them).
    """
    m = get_method(method)
    if not m.uses_passes:
        passes, cut = 1, "reinit"
    config = m.config(dims, amc_config=amc_config, admm_config=admm_config)
    return _program(method, dims, preset, int(passes), bool(finetune), cut, slots, config)


@programs.cached("baseline programs", maxsize=16)
def _program(method, dims, preset, passes, finetune, cut, slots, config):
    m = get_method(method)
    # the random agents' environment; without per-step fine-tuning its fine-tune runs zero epochs
    per_step = m.tunes_each_step and finetune
    env_preset = preset if per_step else dataclasses.replace(preset, finetune_epochs=0)
    env = NeonEnv(EnvConfig(passes=passes, cut=cut), dims, env_preset, slots)
    ctx = Context(env=env, dims=dims, config=config)
    final_finetune = finetune and not m.tunes_each_step
    everything = nets.Trainable.everything(dims.max_hidden)
    own_epochs = m.own_retrain_epochs(config)

    def tune(key, variables, arch, p: EnvParams, weight_mask):
        return fit.finetune(env.trainer.learner, key, variables, arch, p.finetune, everything,
                            max_epochs=preset.finetune_epochs, batch_size=preset.finetune_batch,
                            patience=preset.patience, weight_mask=weight_mask)

    def prune_one(key, p: EnvParams, setting) -> dict:
        return m.prune(jax.random.split(key)[0], p, setting, ctx)

    def finish_one(key, p: EnvParams, cut: dict) -> Outcome:
        """Fine-tune (pruned weights held at zero), count and measure one cut network."""
        k_tune = jax.random.split(key)[1]
        variables, arch, masks, params_after = cut["variables"], cut["arch"], cut["masks"], cut["params_after"]
        epochs = jnp.int32(0)
        if own_epochs is not None:  # the method's own retrain is its fine-tune
            epochs = jnp.int32(own_epochs)
        elif final_finetune:
            weight_mask = None if masks is None else weight_mask_tree(variables["params"], masks, dims)
            variables, info = tune(k_tune, variables, arch, p, weight_mask)
            epochs = info["epochs"]
        if params_after is None:
            params_after = nets.count_params(arch) if masks is None else count_unstructured(arch, masks, dims)
        return outcome(env, p, variables, arch, params_after, epochs, cut["extra"], m.floors_accuracy(config))

    sequential = m.sequential(config)
    rollout = make_rollout(env, random_policy)

    def finish_episode(key, out: Outcome, p: EnvParams):
        """random_no_ft: one whole-network fine-tune of the episode's final network."""
        variables, info = tune(jax.random.fold_in(key, 1), out.variables, out.arch, p, None)
        return out.replace(variables=variables, test_acc_after=env.accuracy(variables, out.arch, p.test),
                           val_acc=env.accuracy(variables, out.arch, p.val),
                           finetune_epochs=out.finetune_epochs + info["epochs"])

    def batch_program(keys, params: EnvParams, setting):
        if not m.uses_passes:
            cut = (jax.lax.map(lambda a: prune_one(*a, setting), (keys, params)) if sequential
                   else jax.vmap(prune_one, in_axes=(0, 0, None))(keys, params, setting))
            return jax.vmap(finish_one)(keys, params, cut)
        final, transitions = rollout(keys, params, None)
        out = episode_outcome(env, params, final, transitions)
        return jax.vmap(finish_episode)(keys, out, params) if final_finetune else out

    return jax.jit(batch_program)


def outcome(env: NeonEnv, p: EnvParams, variables: dict, arch: nets.Arch, params_after, epochs, extra: dict,
            floor_accuracy: bool = False) -> Outcome:
    """The `rollout.Outcome` of one network pruned in one cut (no episode: no steps), measured on its splits.

    `floor_accuracy`: report max(pruned, unpruned) test accuracy, the original AMC's report (§12 C3)."""
    no_steps = jnp.zeros((0,), jnp.int32)
    test_before, test_after = env.accuracy(p.variables, p.arch, p.test), env.accuracy(variables, arch, p.test)
    if floor_accuracy:
        test_after = jnp.maximum(test_after, test_before)
    return Outcome(
        variables=variables, arch=arch, widths_before=p.arch.widths, params_before=nets.count_params(p.arch),
        params_after=params_after, test_acc_before=test_before, test_acc_after=test_after,
        val_acc0=env.accuracy(p.variables, p.arch, p.val), val_acc=env.accuracy(variables, arch, p.val),
        actions=no_steps, valid=no_steps.astype(bool), reward=no_steps.astype(jnp.float32),
        finetune_epochs=epochs, row_extra=extra)


def run_baseline(method: str, pool: EnvPool, preset: Preset, *, setting: float | int | None = None,
                 passes: int = 4, seed: int = 0, batch_size: int = 32, finetune: bool = True, cut: str = "reinit",
                 progress: bool = False, amc_config: amc.AMCConfig | None = None,
                 admm_config: admm.ADMMConfig | None = None, buckets: bool = True) -> runner.RunResult:
    """Runs one method over every network of `pool` (`runner.run`): one row per network.

    Args:
      method: a key of `pruning.METHODS` (`BASELINES`).
      pool: the networks and their data splits (`EnvPool.from_zoos`).
      preset: sizes and the fine-tune schedule (epochs, batch, patience) — the environment's.
      setting: magnitude: fraction of weights pruned; structured: fraction of each hidden layer's neurons
        removed; lap: lookahead steps k; amc: share of FLOPs kept; admm: alpha; random agents: None. None
        elsewhere = the method's default.
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
    m = get_method(method)
    setting = m.check(setting)
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")

    def at(dims):
        return (program(method, dims, preset, int(passes), bool(finetune), cut, amc_config=amc_config,
                        admm_config=admm_config), m.arrays(setting, dims))

    extra = {"method": method, "setting": setting, "counting": m.counting}
    return runner.run(at, pool, seed=seed, batch_size=batch_size, buckets=buckets, progress=progress, desc=method,
                      extra=extra)
