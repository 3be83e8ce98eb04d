"""The NEON pruning environment as a pure, jittable, vmappable JAX environment (gymnax 1.0 shape).

One episode compresses one trained base network (neon_spec.md §1.1): at each step the agent picks a keep
fraction for the current hidden layer, the layer is narrowed to ``ceil(keep * width)`` neurons, the network is
fine-tuned (only when keep < 1), its accuracy on the internal validation split is compared with the original's
and a cubic reward is paid (§5.1). Episodes make one pass over the hidden layers or several (paper: 4).

    env = NeonEnv(EnvConfig(passes=4), dims, preset)
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

`EnvParams` is one base network with its data splits and tolerance; a batch of environments (different
networks, different datasets) is an `EnvParams` with a leading axis, stepped with `jax.vmap`. Static settings
(passes, cut semantics, reward, schedules, fidelity switches) live in the hashable `EnvConfig`, so one
compiled program serves every network of a run. A finished environment stays finished: further steps
change nothing and pay 0 (so batches of networks of different depths can be scanned for a common length).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from neon_jax import features, nets, train
from neon_jax.sharding import resolve_chunk_size, vmap_sorted_chunks
from neon_jax.presets import PRE_BATCHNORM, Preset

KEEP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6)  # action index -> fraction of the layer kept (neon_spec.md §4)
NUM_ACTIONS = len(KEEP_FRACTIONS)
REWARDS = ("neon", "reward1", "reward2", "original", "neon_hold")
CUTS = ("reinit", "keep_best")


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

    def __post_init__(self):
        if self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")
        if self.cut not in CUTS:
            raise ValueError(f"unknown cut {self.cut!r}; choose one of {CUTS}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {REWARDS}")


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
    """

    variables: Any
    arch: nets.Arch
    finetune: train.PaddedData
    val: train.PaddedData
    train: train.PaddedData
    test: train.PaddedData
    tau: jax.Array


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

    Computed once on the host in float64, exactly as the original's Python arithmetic; a float32 ceil inside
    the program would differ (float32(0.6) * 25 = 15.0000006 -> 16, where float64 gives 15.0 -> 15).
    (Docstring fix: it claimed 0.7 * 100 = 70.00000000000001 -> 71, but in float64 0.7 * 100 == 70.0 -> 70;
    for keep in KEEP_FRACTIONS and widths up to 1000, float64 ceil equals the exact ceil.)
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
    """The NEON environment for one padded shape (`dims`) and schedule (`preset`). Methods are pure."""

    def __init__(self, config: EnvConfig, dims: nets.NetDims, preset: Preset):
        self.config = config
        self.dims = dims
        self.preset = preset
        self.model = nets.make_model(dims, preset)
        self.trainer = train.make_trainer(self.model, preset.learning_rate)
        self.width_table = jnp.asarray(keep_width_table(dims.w_max))
        self.keep = jnp.asarray(KEEP_FRACTIONS, jnp.float32)

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

    def reset(self, key: jax.Array, params: EnvParams):
        """Starts an episode on the original network: (obs, state). acc0 is measured in eval mode."""
        variables, arch = params.variables, params.arch
        obs, variables = self._observe(key, variables, arch, params, jnp.int32(0),
                                       train_mode=self.config.legacy_reset_train_mode)
        acc0 = self._accuracy(variables, arch, params.val)
        state = EnvState(variables=variables, arch=arch, step=jnp.int32(0), acc0=acc0, acc=acc0,
                         params0=nets.count_params(arch), done=jnp.bool_(False))
        return self._with_progress(obs, state, params), state

    def step(self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams):
        """One decision for the current hidden layer: (obs, state, reward, terminated, truncated, info)."""
        cut = self._step_cut(key, state, action)
        data = jax.tree_util.tree_map(lambda a: a[None], params.finetune)
        tuned, tune_info = self.trainer.finetune_one(
            cut["k_tune"], cut["variables"], cut["arch"], 0, data, cut["trainable"], self.preset.finetune_epochs,
            self.preset.finetune_batch, self.preset.patience, active=cut["cuts"])
        return self._step_finish(cut, tuned, tune_info["epochs"], state, params)

    def step_batch(self, keys: jax.Array, states: EnvState, actions: jax.Array, params: EnvParams,
                   slots: int | str | None = "auto"):
        """``jax.vmap(step)`` over a batch of environments (leading axis B), with the same results, faster.

        The cuts are vmapped; the fine-tunes go through `train._Trainer.finetune_packed`: `slots` fine-tunes in
        flight, deepest networks first, a finished one handing its slot to the next, hidden layers no network
        in flight has skipped; accuracies and observations are vmapped over chunks of `slots` networks of
        similar depth (`sharding.vmap_sorted_chunks`). So the batch pays about its mean fine-tune epochs at its
        networks' own depths, not its slowest network's epochs at `max_hidden` layers. Results equal
        ``vmap(step)``'s up to float rounding (matmuls batched differently reduce in another order).

        `slots`: None is the plain ``vmap(step)`` (one fine-tune loop for the whole batch; what a batch sharded
        over several devices wants); "auto" (default) is `sharding.default_chunk_size` (4 on one CPU device,
        None on accelerators and meshes). Measured on 2 CPU cores: benchmarks/run.py ``env_steps``.
        """
        slots = resolve_chunk_size(slots)
        if slots is None:
            return jax.vmap(self.step)(keys, states, actions, params)
        cut = jax.vmap(self._step_cut)(keys, states, actions)
        n = keys.shape[0]
        tuned, tune_info = self.trainer.finetune_packed(
            cut["k_tune"], cut["variables"], cut["arch"], jnp.arange(n), params.finetune, cut["trainable"],
            self.preset.finetune_epochs, self.preset.finetune_batch, self.preset.patience, active=cut["cuts"],
            slots=slots)
        finish = vmap_sorted_chunks(lambda bound, *a: self._step_finish(*a, depth_bound=bound), slots)
        return finish(states.arch.depth, cut, tuned, tune_info["epochs"], states, params)

    def _step_cut(self, key, state: EnvState, action):
        """The step up to fine-tuning: which layer, the new width, the cut network and what it may train."""
        k_cut, k_tune, k_obs = jax.random.split(key, 3)
        arch = state.arch
        active = ~state.done
        layer = self.layer_index(state.step, arch.depth)
        action = jnp.asarray(action, jnp.int32)
        keep = self.keep[action]
        new_width = self.width_table[action, arch.widths[layer]]
        # Fix: the original rebuilds (re-initialises) and fine-tunes for every keep < 1 (§2.3, §4), also when
        # ceil(keep * width) == width (width < 10 with keep 0.9, e.g. 8 -> ceil(7.2) = 8; < 5 with 0.8; ...);
        # only keep = 1 is a no-op. Testing `new_width < old_width` skipped those steps but still paid their reward.
        cuts = active & (keep < 1.0)
        variables, new_arch = self._cut(k_cut, state.variables, arch, layer, new_width)
        return {"k_tune": k_tune, "k_obs": k_obs, "active": active, "layer": layer, "keep": keep, "cuts": cuts,
                "variables": variables, "arch": new_arch, "trainable": self._trainable(layer, new_arch)}

    def _step_finish(self, cut, tuned, tune_epochs, state: EnvState, params: EnvParams, depth_bound=None):
        """The step after fine-tuning: accuracy, reward, the next state and observation. `depth_bound`
        (optional, unbatched): see `nets.MaskedMLP`."""
        cfg = self.config
        arch = state.arch
        active, cuts, keep, layer = cut["active"], cut["cuts"], cut["keep"], cut["layer"]
        # keep = 1 (or a finished episode) changes nothing and costs no fine-tuning
        pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(cuts, a, b), new, old)
        variables = pick(tuned, state.variables)
        new_arch = pick(cut["arch"], arch)
        acc = jnp.where(cuts, self._accuracy(variables, new_arch, params.val, depth_bound), state.acc)

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
        obs, _ = self._observe(cut["k_obs"], variables, new_arch, params, row, train_mode=False,
                               depth_bound=depth_bound)
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

    # -- pieces -----------------------------------------------------------------------------------------------

    def layer_index(self, step, depth):
        """0-based hidden layer visited at `step`: the pointer cycles 0..depth-1 (§1.2)."""
        return jnp.mod(step, jnp.maximum(depth, 1)).astype(jnp.int32)

    def _accuracy(self, variables, arch, split: train.PaddedData, depth_bound=None):
        data = jax.tree_util.tree_map(lambda a: a[None], split)
        return self.trainer.accuracy_one(variables, arch, 0, data, depth_bound)

    def _observe(self, key, variables, arch, params: EnvParams, row, train_mode: bool, depth_bound=None):
        """Redraws the activation sample from the train split (§3.4, §12 B8) and builds the state for `row`."""
        k_sample, k_drop = jax.random.split(key)
        split = params.train
        idx, weight = features.activation_sample(k_sample, split.x, split.y, split.n, self.preset.activation_sample,
                                                 n_classes=self.dims.k_max)
        return features.observe(variables, arch, self.dims, self.preset, split.x[idx], weight, row,
                                train=train_mode, key=k_drop, return_variables=True, depth_bound=depth_bound)

    def _with_progress(self, obs: features.Observation, state: EnvState, params: EnvParams):
        """Attaches the episode's progress (beyond the paper; only agents with `observe_progress` read it)."""
        progress = features.progress_features(state.acc, state.acc0, params.tau, state.step,
                                              self.episode_length(state.arch), nets.count_params(state.arch),
                                              state.params0)
        return obs.replace(progress=progress)

    def _trainable(self, layer, arch) -> train.Trainable:
        """Rows p-1 and p of the original (§2.4): the narrowed Linear, the next Linear (the output Linear after
        the last hidden layer), the batch-norms in those rows, and the input batch-norm when layer 0 is cut."""
        max_hidden = self.dims.max_hidden
        if self.config.finetune_all:
            return train.Trainable.everything(max_hidden)
        nxt = jnp.where(layer + 1 >= arch.depth, max_hidden, layer + 1)
        j = jnp.arange(max_hidden + 1)
        linear = (j == layer) | (j == nxt)
        b = jnp.arange(max_hidden)
        batchnorm = ((b == layer + 1) | (b == layer + 2) | ((b == 0) & (layer == 0))) & (b < arch.depth)
        return train.Trainable(linear=linear, batchnorm=batchnorm)

    def _cut(self, key, variables, arch: nets.Arch, layer, new_width):
        """Narrows hidden layer `layer` to `new_width` neurons: returns (variables, arch) before fine-tuning."""
        w_idx = jnp.arange(self.dims.w_max)
        row_of = jnp.arange(self.dims.max_hidden)[:, None]
        if self.config.cut == "reinit":
            layer_mask = (w_idx < new_width).astype(jnp.float32)
        else:  # keep_best: the alive neurons with the largest incoming-weight norms
            kernels = self._hidden_kernel(variables, layer)
            norms = jnp.where(arch.mask[layer] > 0, jnp.sqrt((kernels ** 2).sum(0)), -1.0)
            rank = jnp.argsort(jnp.argsort(-norms))
            layer_mask = (rank < new_width).astype(jnp.float32)
        mask = jnp.where(row_of == layer, layer_mask[None, :], arch.mask)
        new_arch = arch.replace(mask=mask)
        if self.config.cut == "reinit":
            fresh = nets.init_network(key, self.model, new_arch)
            return self._merge_fresh(variables, fresh, layer, new_arch), new_arch
        return self._zero_dead(variables, new_arch), new_arch

    def _hidden_kernel(self, variables, layer):
        """(fan_in_pad, w_max) incoming kernel of hidden layer `layer` (input layer is d_max rows, else w_max)."""
        params = variables["params"]
        stacked = [params[f"layer{j}_kernel"] for j in range(self.dims.max_hidden)]
        # the input layer has d_max rows; compare norms over a common padded height
        height = max(self.dims.d_max, self.dims.w_max)
        padded = jnp.stack([jnp.pad(k, ((0, height - k.shape[0]), (0, 0))) for k in stacked])
        return padded[layer]

    def _merge_fresh(self, variables, fresh, layer, arch):
        """Takes the re-initialised Linears `layer` and `layer + 1` (or the output Linear) and the re-created
        batch-norm on the narrowed layer from `fresh`; everything else from `variables` (§2.3)."""
        max_hidden = self.dims.max_hidden
        nxt_is_output = layer + 1 >= arch.depth
        params, stats = dict(variables["params"]), dict(variables["batch_stats"])
        fp, fs = fresh["params"], fresh["batch_stats"]
        sel = lambda c, new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(c, a, b), new, old)
        for j in range(max_hidden):
            take_linear = (j == layer) | ((j == layer + 1) & ~nxt_is_output)
            for part in ("kernel", "bias"):
                name = f"layer{j}_{part}"
                params[name] = sel(take_linear, fp[name], params[name])
            take_bn = j == layer + 1
            if self.config.legacy_bn_reset:
                take_bn = (j >= 1) & (j != layer + 2)
            params[f"bn{j}"] = sel(take_bn, fp[f"bn{j}"], params[f"bn{j}"])
            stats[f"bn{j}"] = sel(take_bn, fs[f"bn{j}"], stats[f"bn{j}"])
        for part in ("kernel", "bias"):
            name = f"output_{part}"
            params[name] = sel(nxt_is_output, fp[name], params[name])
        # Neurons dropped from the narrowed layer must not keep outgoing weights in the next (kept) Linear:
        # with reinit both are fresh, so this only guards the invariant "dead = zero".
        return self._zero_dead({"params": params, "batch_stats": stats}, arch)

    def _zero_dead(self, variables, arch):
        """Zeroes every weight, bias and batch-norm affine entry that touches a dead neuron."""
        params = dict(variables["params"])
        in_masks = [arch.feature_mask(self.dims.d_max)] + [arch.mask[j] for j in range(self.dims.max_hidden - 1)]
        for j in range(self.dims.max_hidden):
            out_mask = arch.mask[j]
            params[f"layer{j}_kernel"] = params[f"layer{j}_kernel"] * in_masks[j][:, None] * out_mask[None, :]
            params[f"layer{j}_bias"] = params[f"layer{j}_bias"] * out_mask
            bn = params[f"bn{j}"]
            params[f"bn{j}"] = {"scale": jnp.where(in_masks[j] > 0, bn["scale"], 1.0), "bias": bn["bias"] * in_masks[j]}
        last = arch.mask[arch.depth - 1]
        params["output_kernel"] = params["output_kernel"] * last[:, None]
        return {"params": params, "batch_stats": variables["batch_stats"]}


# ----------------------------------------------------------------------------------------------------------
# Building batches of environments and rolling them out.


def make_env_params(variables, arch, splits, dims: nets.NetDims, tau: float, n_max: dict | None = None) -> EnvParams:
    """`EnvParams` for one network from a `data.Splits` (padded to `dims` and to the row counts `n_max`,
    a dict with keys finetune / val / train / test; default: this split's own sizes)."""
    tau = validate_tau(tau)
    parts = {"finetune": (splits.x_finetune, splits.y_finetune), "val": (splits.x_val, splits.y_val),
             "train": (splits.x_train, splits.y_train), "test": (splits.x_test, splits.y_test)}
    n_max = n_max or {}
    padded = {k: train.pad_data(x, y, n_max.get(k, len(x)), dims.d_max) for k, (x, y) in parts.items()}
    return EnvParams(variables=variables, arch=arch, tau=jnp.float32(tau), **padded)


def stack_params(items: list[EnvParams]) -> EnvParams:
    """Stacks environments (same padded shapes) into a batch with a leading axis."""
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *items)


def make_rollout(env: NeonEnv, policy, slots="auto"):
    """A jitted whole-episode roll-out of a batch of environments: one `lax.scan` over `env.max_steps`.

    `policy(key, obs) -> action` acts on ONE environment's observation (it is vmapped). Returns
    ``rollout(key, params) -> (final_state, trajectory)`` where the trajectory holds per step (T, B)
    actions, rewards, dones and the info dict; finished environments stay finished. The batch steps together
    through `NeonEnv.step_batch` (`slots`: see there); every environment keeps its own keys, so the numbers are
    those of one roll-out per environment.
    """
    num_steps = env.max_steps

    @jax.jit
    def rollout(key, params: EnvParams):
        keys = jax.random.split(key, params.tau.shape[0])
        k_reset, k_run = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        obs, state = jax.vmap(env.reset)(k_reset, params)
        step_keys = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, num_steps))(k_run), 1, 0)  # (T, B, 2)

        def body(carry, keys_t):
            obs, state = carry
            k_act, k_step = jnp.moveaxis(jax.vmap(jax.random.split)(keys_t), 1, 0)
            action = jnp.where(state.done, 0, jax.vmap(policy)(k_act, obs))
            obs, state, reward, terminated, truncated, info = env.step_batch(k_step, state, action, params, slots)
            return (obs, state), {"action": action, "reward": reward, "terminated": terminated, "info": info}

        (_, state), traj = jax.lax.scan(body, (obs, state), step_keys)  # trajectory (T, B, ...)
        return state, traj

    return rollout


def random_policy(key, obs):
    """Uniform over the five actions (the paper's random agent)."""
    return jax.random.randint(key, (), 0, NUM_ACTIONS)


def evaluate_test_accuracy(env: NeonEnv, variables, arch, params: EnvParams):
    """Eval-mode accuracy on the test split (what the paper reports). Vmappable."""
    return env._accuracy(variables, arch, params.test)
