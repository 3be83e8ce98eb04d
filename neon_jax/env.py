"""The NEON pruning environment as a pure, jittable, vmappable JAX environment (gymnax 1.0 shape).

One episode compresses one trained base network (neon_spec.md §1.1): at each step the agent picks a keep
fraction for the current hidden layer, the layer is narrowed to ``ceil(keep * width)`` neurons, the network is
fine-tuned (only when keep < 1), its accuracy on the internal validation split is compared with the original's
and a cubic reward is paid (§5.1). Episodes make one pass over the hidden layers or several (paper: 4).

    env = NeonEnv(EnvConfig(passes=4), dims, preset)
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

`EnvParams` is one base network with its data splits and tolerance; a batch of environments (different
networks, different datasets) is an `EnvParams` with a leading axis, stepped with `NeonEnv.step_batch` (the
results of ``jax.vmap(env.step)``, faster). Static settings (passes, cut semantics, reward, fidelity switches)
live in the hashable `EnvConfig`, so one compiled program serves every network of a run. A finished environment
stays finished: further steps change nothing and pay 0 (so batches of networks of different depths can be
scanned for a common length). Whole episodes: `neon_jax.rollout`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from neon_jax import features, fit, nets
from neon_jax.choices import CUTS, REWARDS
from neon_jax.presets import Preset
from neon_jax.sharding import resolve_chunk_size, vmap_sorted_chunks

KEEP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6)  # action index -> fraction of the layer kept (neon_spec.md §4)
NUM_ACTIONS = len(KEEP_FRACTIONS)


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Static settings of the environment (hashable: part of the compiled program).

    Attributes:
      passes: visits of every hidden layer per episode (paper: 1 or 4).
      cut: "reinit" — faithful (§2.3): the narrowed layer and the next Linear are re-initialised at the new
        width (PyTorch init) and only they are fine-tuned; "keep_best" — beyond the paper: keep the neurons
        with the largest incoming-weight L2 norms, with their weights, and fine-tune from there.
      reward: "neon" (the paper's cubic reward3, §5.1), "reward1", "reward2", "original" (§5.2), or, beyond
        the paper, "neon_hold": reward3 whose rho^3 bonus also pays a cut that holds the original validation
        accuracy exactly (delta >= 0 instead of delta > 0). On small validation splits and networks at their
        ceiling (100 % validation accuracy) delta > 0 cannot happen, so reward3 pays a loss-free cut only rho,
        1/1600 of the bonus at rho = 40, and an agent has no reason to compress such a network.
      finetune_all: fine-tune every layer instead of only rows p-1 and p (the original's
        `--learn_new_layers_only False`).
      legacy_single_pass: reproduce b97fb33's off-by-one (§12 B1): a single pass skips the last hidden layer
        (a 1-hidden-layer network still gets its one step here instead of crashing).
      legacy_bn_reset: reproduce §12 B2: at every cut, every batch-norm except the input one and the one
        after the rebuilt Linear is re-created (identity affine, fresh running statistics).
      legacy_wrap_state: reproduce §12 B9: in multi-pass mode the state shown before the first layer of a new
        pass describes the output row instead of hidden layer 0.
      legacy_reset_train_mode: reproduce §12 B6: the first state of an episode is computed in train mode
        (dropout on, batch statistics) and that forward pass nudges BN running statistics before acc0.
    """

    passes: int = 4
    cut: str = "reinit"
    reward: str = "neon"
    finetune_all: bool = False
    legacy_single_pass: bool = False
    legacy_bn_reset: bool = False
    legacy_wrap_state: bool = False
    legacy_reset_train_mode: bool = False

    LEGACY_FIELDS = ("legacy_single_pass", "legacy_bn_reset", "legacy_wrap_state", "legacy_reset_train_mode")

    def __post_init__(self):
        if self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")
        if self.cut not in CUTS:
            raise ValueError(f"unknown cut {self.cut!r}; choose one of {CUTS}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {REWARDS}")

    def with_legacy(self, on: bool = True) -> EnvConfig:
        """This config with every switch that reproduces a bug of the original set to `on` (§12 B1, B2, B6, B9)."""
        return dataclasses.replace(self, **{name: bool(on) for name in self.LEGACY_FIELDS})


@struct.dataclass
class EnvParams:
    """One environment: a trained base network, its data, and the user's tolerance.

    Attributes:
      variables / arch: the original (unpruned) network.
      finetune: the 80% fine-tune part of the train split (PaddedData, no leading axis).
      val: the 20% internal validation part (reward accuracies, §2.1).
      train: the whole 70% train split (the activation sample is drawn from it, as the original does).
      test: the 30% test split (reported accuracies only; never seen by the agent or the reward).
      tau: () float32, tolerated accuracy drop in points (paper: 1, 5, 50).
      select_tau: () float32, the tolerance the choice among candidates applies (`neon_jax.select`), or None:
        tau. The main job tightens it when the validation rows are too few to resolve tau; the reward and the
        agent's observation always use tau.
      data_index: () int32 or None. None: the four splits are this network's own (no leading axis). Set: they
        are stacks of many datasets' splits (leading axis D, stored once for a whole pool, `neon_jax.gymnax`)
        and this network's are split `data_index` of each.
    """

    variables: Any
    arch: nets.Arch
    finetune: fit.PaddedData
    val: fit.PaddedData
    train: fit.PaddedData
    test: fit.PaddedData
    tau: jax.Array
    select_tau: jax.Array | None = None
    data_index: jax.Array | None = None

    @property
    def choice_tau(self) -> jax.Array:
        """The tolerance of the choice: `select_tau`, else `tau`."""
        return self.tau if self.select_tau is None else self.select_tau


@struct.dataclass
class EnvState:
    variables: Any  # current (pruned) network
    arch: nets.Arch
    step: jax.Array  # () int32 steps taken
    acc0: jax.Array  # () validation accuracy of the original network (eval mode, at reset)
    acc: jax.Array  # () validation accuracy of the current network
    params0: jax.Array  # () parameters of the original network
    done: jax.Array  # () bool


def validate_tau(tau) -> float:
    """tau is a tolerance in accuracy points: a finite number in [0, 100]."""
    try:
        value = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"tau must be a number of accuracy points, got {tau!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise ValueError(f"tau must be in [0, 100] accuracy points, got {tau!r}")
    return value


def keep_width_table(w_max: int) -> np.ndarray:
    """(NUM_ACTIONS, w_max + 1) new width for each action and current width: ``ceil(keep * width)``.

    Computed once on the host in float64, exactly as the original's Python arithmetic (for the keep fractions
    and widths up to 1000 that is the exact ceil); a float32 ceil inside the program would differ
    (float32(0.6) * 25 = 15.0000006 -> 16, where float64 gives 15.0 -> 15).
    """
    return np.array([[math.ceil(k * w) for w in range(w_max + 1)] for k in KEEP_FRACTIONS], np.int32)


def compute_reward(name: str, keep, acc, acc_prev, acc0, params_new, params_prev, tau):
    """Reward of one step (neon_spec.md §5). All arguments are () arrays; accuracies are fractions.

    "neon" (reward3, the paper's): with rho = 100 (1 - keep) and delta = 100 (acc - acc0):
    -rho^3 if delta < -tau; +rho^3 if delta > 0; rho otherwise. Keep = 1 always pays 0.
    "neon_hold" (beyond the paper): the same with the bonus at delta >= 0 (holding the original accuracy).
    "reward1": 0.4 C (2 - C) acc / acc_prev; "reward2": 10 C (2 - C) * 30 acc / acc_prev, or -10 if the step
    lost more than 0.2 accuracy; "original": C (2 - C) acc / acc_prev; with C = 1 - params_new / params_prev.
    """
    if name in ("neon", "neon_hold"):
        rho = 100.0 * (1.0 - keep)
        delta = 100.0 * (acc - acc0)
        bonus = delta >= 0 if name == "neon_hold" else delta > 0
        return jnp.where(delta < -tau, -(rho ** 3), jnp.where(bonus, rho ** 3, rho))
    compression = 1.0 - params_new / jnp.maximum(params_prev, 1.0)
    ratio = acc / jnp.maximum(acc_prev, 1e-6)
    shaped = compression * (2.0 - compression)
    if name == "reward1":
        return 0.4 * shaped * ratio
    if name == "reward2":
        return jnp.where(acc_prev - acc > 0.2, -10.0, 10.0 * shaped * 30.0 * ratio)
    if name == "original":
        return shaped * ratio
    raise ValueError(f"unknown reward {name!r}; choose one of {REWARDS}")


class NeonEnv:
    """The NEON environment for one padded shape (`dims`) and schedule (`preset`). Methods are pure.

    `slots` is how `step_batch` packs a batch's fine-tunes: an int (fine-tunes in flight, deepest networks
    first), None (one ``vmap(step)`` over the whole batch: what a batch sharded over several devices wants) or
    "auto" (`sharding.default_chunk_size`: 4 on one CPU device, None on accelerators and meshes). It changes
    no number beyond float rounding.
    """

    def __init__(self, config: EnvConfig, dims: nets.NetDims, preset: Preset, slots: int | str | None = "auto"):
        self.config = config
        self.dims = dims
        self.preset = preset
        self.slots = resolve_chunk_size(slots)
        self.model = nets.make_model(dims, preset)
        self.trainer = fit.make_trainer(self.model, preset.learning_rate)
        # device_put, not jnp.asarray (which compiles a one-op program per shape)
        self.width_table = jax.device_put(keep_width_table(dims.w_max))
        self.keep = jax.device_put(np.asarray(KEEP_FRACTIONS, np.float32))

    # -- gymnax-style API ---------------------------------------------------------------------------------------

    @property
    def num_actions(self) -> int:
        return NUM_ACTIONS

    @property
    def max_steps(self) -> int:
        """Longest episode of any network of this shape (steps of a common scan over a mixed batch)."""
        return self.config.passes * self.dims.max_hidden

    def episode_length(self, arch: nets.Arch) -> jax.Array:
        """Steps of an episode on `arch`: passes x hidden layers (one pass: depth, or depth - 1 with the
        legacy off-by-one)."""
        depth = arch.depth
        if self.config.passes == 1 and self.config.legacy_single_pass:
            return jnp.maximum(depth - 1, 1)
        return self.config.passes * depth

    def reset(self, key: jax.Array, params: EnvParams, acc0: jax.Array | None = None):
        """Starts an episode on the original network: (obs, state). acc0 is measured in eval mode on the validation
        split, unless given (the network's own, measured before: `reset_accuracy`)."""
        variables, arch = params.variables, params.arch
        obs, variables = self._observe(key, variables, arch, params, jnp.int32(0),
                                       train_mode=self.config.legacy_reset_train_mode)
        if acc0 is None:
            acc0 = self.accuracy(variables, arch, params.val, index=params.data_index)
        state = EnvState(variables=variables, arch=arch, step=jnp.int32(0), acc0=acc0, acc=acc0,
                         params0=nets.count_params(arch), done=jnp.bool_(False))
        return self._with_progress(obs, state, params), state

    def reset_accuracy(self, params: EnvParams) -> jax.Array | None:
        """() the acc0 `reset` measures, or None where the reset's own pass moves the network (the legacy train-mode
        reset moves BatchNorm statistics): what a pool can measure once per network instead of once per reset."""
        if self.config.legacy_reset_train_mode:
            return None
        return self.accuracy(params.variables, params.arch, params.val, index=params.data_index)

    def step(self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams):
        """One decision for the current hidden layer: (obs, state, reward, terminated, truncated, info)."""
        cut = self._step_cut(key, state, action)
        tuned, tune_info = fit.finetune(
            self.trainer.learner, cut["k_tune"], cut["variables"], cut["arch"], params.finetune, cut["trainable"],
            max_epochs=self.preset.finetune_epochs, batch_size=self.preset.finetune_batch,
            patience=self.preset.patience, index=params.data_index, active=cut["cuts"])
        return self._step_finish(cut, tuned, tune_info["epochs"], state, params)

    def step_batch(self, keys: jax.Array, states: EnvState, actions: jax.Array, params: EnvParams):
        """``jax.vmap(step)`` over a batch of environments (leading axis B), with the same results, faster.

        The cuts are vmapped; the fine-tunes go through `fit.finetune_packed`: `slots` fine-tunes in
        flight, deepest networks first, a finished one handing its slot to the next, hidden layers no network
        in flight has skipped; accuracies and observations are vmapped over chunks of `slots` networks of
        similar depth (`sharding.vmap_sorted_chunks`). So the batch pays about its mean fine-tune epochs at its
        networks' own depths, not its slowest network's epochs at `max_hidden` layers. Results equal
        ``vmap(step)``'s up to float rounding (matmuls batched differently reduce in another order). Params whose
        splits are shared stacks (`EnvParams.data_index`) are stepped by ``vmap(step)``.
        """
        if self.slots is None or params.data_index is not None:
            return jax.vmap(self.step)(keys, states, actions, params)
        cut = jax.vmap(self._step_cut)(keys, states, actions)
        n = keys.shape[0]
        tuned, tune_info = fit.finetune_packed(
            self.trainer.learner, cut["k_tune"], cut["variables"], cut["arch"], jnp.arange(n), params.finetune,
            cut["trainable"], self.preset.finetune_epochs, self.preset.finetune_batch, self.preset.patience, active=cut["cuts"],
            slots=self.slots)
        finish = vmap_sorted_chunks(
            lambda bound, *a: self._step_finish(*a, hints=nets.Hints(depth_bound=bound)), self.slots)
        return finish(states.arch.depth, cut, tuned, tune_info["epochs"], states, params)

    def accuracy(self, variables, arch: nets.Arch, split: fit.PaddedData, hints: nets.Hints | None = None,
                 index=None):
        """() eval-mode accuracy of one network on the real rows of one split (``params.val`` for the reward,
        ``params.test`` for what the paper reports; split `index` of a stack, `EnvParams.data_index`).
        Vmappable; `hints`: see `nets.Hints`."""
        return fit.accuracy(self.trainer.learner, variables, arch, split, index, hints)

    def trainable(self, layer, arch: nets.Arch) -> nets.Trainable:
        """What the fine-tune after cutting hidden layer `layer` may change: rows p-1 and p of the original
        (`nets.trainable_rows`), or everything with `finetune_all`."""
        if self.config.finetune_all:
            return nets.Trainable.everything(self.dims.max_hidden)
        return nets.trainable_rows(layer, arch, self.dims.max_hidden)

    def layer_index(self, step, depth):
        """0-based hidden layer visited at `step`: the pointer cycles 0..depth-1 (§1.2)."""
        return jnp.mod(step, jnp.maximum(depth, 1)).astype(jnp.int32)

    # -- the step, in two halves around the fine-tune -------------------------------------------------------------

    def _step_cut(self, key, state: EnvState, action):
        """The step up to fine-tuning: which layer, the new width, the cut network and what it may train."""
        k_cut, k_tune, k_obs = jax.random.split(key, 3)
        arch = state.arch
        active = ~state.done
        layer = self.layer_index(state.step, arch.depth)
        action = jnp.asarray(action, jnp.int32)
        keep = self.keep[action]
        new_width = self.width_table[action, arch.widths[layer]]
        # The original rebuilds and fine-tunes for every keep < 1 (§2.3, §4), also when ceil(keep * width) equals
        # the width (8 -> ceil(7.2) = 8); only keep = 1 is a no-op.
        cuts = active & (keep < 1.0)
        variables, new_arch = nets.cut(k_cut, self.model, state.variables, arch, layer, new_width, self.config.cut,
                                       self.config.legacy_bn_reset)
        return {"k_tune": k_tune, "k_obs": k_obs, "active": active, "layer": layer, "keep": keep, "cuts": cuts,
                "variables": variables, "arch": new_arch, "trainable": self.trainable(layer, new_arch)}

    def _step_finish(self, cut, tuned, tune_epochs, state: EnvState, params: EnvParams, hints=None):
        """The step after fine-tuning: accuracy, reward, the next state and observation."""
        cfg = self.config
        arch = state.arch
        active, cuts, keep, layer = cut["active"], cut["cuts"], cut["keep"], cut["layer"]
        # keep = 1 (or a finished episode) changes nothing and costs no fine-tuning
        pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(cuts, a, b), new, old)  # noqa: E731
        variables = pick(tuned, state.variables)
        new_arch = pick(cut["arch"], arch)
        acc = jnp.where(cuts, self.accuracy(variables, new_arch, params.val, hints, params.data_index), state.acc)

        params_prev = nets.count_params(arch)
        params_new = nets.count_params(new_arch)
        reward = compute_reward(cfg.reward, keep, acc, state.acc, state.acc0, params_new.astype(jnp.float32),
                                params_prev.astype(jnp.float32), params.tau)
        reward = jnp.where(active, reward, 0.0)

        step = state.step + active.astype(jnp.int32)
        done = state.done | (step >= self.episode_length(arch))
        next_layer = self.layer_index(step, arch.depth)
        row = next_layer
        if cfg.legacy_wrap_state and cfg.passes > 1:
            row = jnp.where((next_layer == 0) & (step > 0), arch.depth, next_layer)
        obs, _ = self._observe(cut["k_obs"], variables, new_arch, params, row, train_mode=False, hints=hints)
        new_state = EnvState(variables=variables, arch=new_arch, step=step, acc0=state.acc0, acc=acc,
                             params0=state.params0, done=done)
        obs = self._with_progress(obs, new_state, params)
        info = {
            "layer": layer,
            "keep": keep,
            "width_before": arch.widths[layer],
            "width_after": new_arch.widths[layer],
            "widths": new_arch.widths,
            "params_before": params_prev,
            "params_after": params_new,
            "acc0": state.acc0,
            "acc_before": state.acc,
            "acc": acc,
            "finetune_epochs": jnp.where(cuts, tune_epochs, 0),
            "active": active,
        }
        return obs, new_state, reward.astype(jnp.float32), done & active, jnp.bool_(False), info

    def _observe(self, key, variables, arch, params: EnvParams, row, train_mode: bool, hints=None):
        """Redraws the activation sample from the train split (§3.4, §12 B8) and builds the state for `row`."""
        k_sample, k_drop = jax.random.split(key)
        split, i = params.train, params.data_index
        y, n = (split.y, split.n) if i is None else (split.y[i], split.n[i])
        idx, weight = features.activation_sample(k_sample, y, y, n, self.preset.activation_sample,
                                                 n_classes=self.dims.k_max)
        rows = split.x[idx] if i is None else split.x[i, idx]
        return features.observe(variables, arch, self.dims, self.preset, rows, weight, row,
                                train=train_mode, key=k_drop, return_variables=True, hints=hints)

    def _with_progress(self, obs: features.Observation, state: EnvState, params: EnvParams):
        """Attaches the episode's progress (beyond the paper; only agents with `observe_progress` read it)."""
        progress = features.progress_features(state.acc, state.acc0, params.tau, state.step,
                                              self.episode_length(state.arch), nets.count_params(state.arch),
                                              state.params0)
        return obs.replace(progress=progress)


# ----------------------------------------------------------------------------------------------------------
# Building batches of environments.


def make_env_params(variables, arch, splits, dims: nets.NetDims, tau: float, n_max: dict | None = None) -> EnvParams:
    """`EnvParams` for one network from a `data.Splits` (padded to `dims` and to the row counts `n_max`,
    a dict with keys finetune / val / train / test; default: this split's own sizes)."""
    tau = validate_tau(tau)
    parts = {"finetune": (splits.x_finetune, splits.y_finetune), "val": (splits.x_val, splits.y_val),
             "train": (splits.x_train, splits.y_train), "test": (splits.x_test, splits.y_test)}
    n_max = n_max or {}
    padded = {k: fit.pad_data(x, y, n_max.get(k, len(x)), dims.d_max) for k, (x, y) in parts.items()}
    return EnvParams(variables=variables, arch=arch, tau=jnp.float32(tau), **padded)


def stack_params(items: list[EnvParams]) -> EnvParams:
    """Stacks environments (same padded shapes) into a batch with a leading axis."""
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *items)
