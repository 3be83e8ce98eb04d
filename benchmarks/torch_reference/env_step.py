"""The original's environment step and episode in plain PyTorch + NumPy/SciPy (neon_spec.md §2.3-2.8, §3, §5.1).

One `TorchNeonEnv` holds one base network (an ``nn.Sequential`` as the original's, see
`base_training.to_torch_sequential`) and its data splits, and does per step what NetworkEnv does, one network at a
time:

1. keep < 1: rebuild the narrowed hidden Linear at ``ceil(keep * width)`` outputs and the next Linear at as many
   inputs, both freshly initialised (PyTorch default init), and a fresh BatchNorm1d on the narrowed layer if there
   is one (§2.3, the "reinit" cut; every other module deep-copied);
2. freeze all but rows p-1 and p (§2.4) and fine-tune them: fresh Adam(lr), train mode, ``CrossEntropyLoss`` on
   the Softmax output, a ``torch.randperm`` shuffle per epoch, minibatches of `finetune_batch` (batches of one row
   skipped), every minibatch whose loss (before its update) beats the best so far snapshots the ``state_dict``
   (BN buffers included) and resets patience, an epoch without improvement counts towards `patience`, at most
   `finetune_epochs` epochs, the best snapshot is loaded at the end — exactly `neon_jax.fit.finetune`'s rule;
3. eval-mode accuracy on the internal validation split (§2.5), the cubic reward (§5.1), parameter count (§2.6);
4. the next state (§3): a fresh stratified sample of the train split, a forward pass with hooks on the last
   activation of every row but the output row, NumPy/SciPy statistics and sklearn normalisation
   (`features.ref_state` / `ref_normalise`).

The settings (epochs, batch, patience, sample size, feature map) come from a neon_jax `Preset`, so both sides do the
same work. ``keep = 1`` is a no-op (no rebuild, no fine-tuning), as the original. Float32 throughout.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch import nn

from benchmarks.torch_reference.features import ref_normalise, ref_rows, ref_state

KEEP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6)  # action index -> fraction kept (neon_spec.md §4)
_ACT_KINDS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}


def sequential_layers(model: nn.Sequential) -> list[dict]:
    """The Sequential as a layer list like `neon_jax.nets.DenseNetwork.layers` (host NumPy, kernels (in, out))."""
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            layers.append({"kind": "linear", "kernel": m.weight.detach().cpu().numpy().T,
                           "bias": m.bias.detach().cpu().numpy()})
        elif isinstance(m, nn.BatchNorm1d):
            layers.append({"kind": "batchnorm", "scale": m.weight.detach().cpu().numpy(),
                           "bias": m.bias.detach().cpu().numpy(), "mean": m.running_mean.cpu().numpy(),
                           "var": m.running_var.cpu().numpy(), "eps": m.eps})
        elif isinstance(m, nn.Dropout):
            layers.append({"kind": "dropout", "rate": m.p})
        elif type(m) in _ACT_KINDS:
            layers.append({"kind": _ACT_KINDS[type(m)]})
        elif isinstance(m, nn.Softmax):
            layers.append({"kind": "softmax"})
        else:
            raise ValueError(f"unsupported module {m!r}")
    return layers


def hooked_outputs(model: nn.Sequential, x: torch.Tensor) -> list[np.ndarray]:
    """One forward pass with forward hooks on the last activation module of every row but the output row (§3.3)."""
    modules = list(model)
    rows = ref_rows([{"kind": "linear" if isinstance(m, nn.Linear) else "other"} for m in modules])
    outputs, handles, start = [], [], 0
    for row in rows[:-1]:
        members = list(range(start, start + len(row)))
        start += len(row)
        acts = [i for i in members if type(modules[i]) in _ACT_KINDS]
        target = modules[acts[-1] if acts else members[0]]
        slot = len(outputs)
        outputs.append(None)
        handles.append(target.register_forward_hook(
            lambda _m, _inp, out, slot=slot: outputs.__setitem__(slot, out.detach().cpu().numpy())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


def stratified_sample(rng: np.random.Generator, y: np.ndarray, size: int) -> np.ndarray:
    """Row indices of the activation sample (§3.4): every row if there are at most `size`, else a label-stratified
    random subset of `size` rows (sklearn's train_test_split with stratify, as the original)."""
    n = len(y)
    if n <= size:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(n), train_size=size, stratify=y, random_state=int(rng.integers(2 ** 31)))
    return idx


def neon_reward(keep: float, acc: float, acc0: float, tau: float) -> float:
    """The paper's reward3 (§5.1): rho = 100 (1 - keep), delta = 100 (acc - acc0)."""
    rho = 100.0 * (1.0 - keep)
    delta = 100.0 * (acc - acc0)
    if delta < -tau:
        return -(rho ** 3)
    return rho ** 3 if delta > 0 else rho


class TorchNeonEnv:
    """The original's pruning environment for one network (see the module docstring).

    Args:
      model: the base network (``nn.Sequential``: per hidden layer ``[Dropout | BatchNorm1d] Linear act``, then
        ``Linear Softmax``); it is deep-copied at every `reset`, never modified.
      splits: dict of NumPy arrays x_finetune, y_finetune, x_val, y_val, x_train, y_train (real columns only).
      preset: a neon_jax `Preset` (finetune_epochs, finetune_batch, patience, learning_rate, activation_sample,
        feature_rows, feature_width).
      passes: visits of every hidden layer per episode (paper 1 or 4); tau: tolerance in accuracy points.
      seed: seeds this environment's torch generator (shuffles, inits, dropout) and NumPy generator (samples).
      device: where the network trains ("cpu", or "cuda" as the original); features are computed on the host.
    """

    def __init__(self, model: nn.Sequential, splits: dict, preset, passes: int = 4, tau: float = 5.0,
                 seed: int = 0, device: str = "cpu"):
        self.device = torch.device(device)
        self.original = model
        self.preset = preset
        self.passes = passes
        self.tau = float(tau)
        t = lambda a, dt: torch.as_tensor(np.asarray(a), dtype=dt, device=self.device)
        self.x_ft, self.y_ft = t(splits["x_finetune"], torch.float32), t(splits["y_finetune"], torch.int64)
        self.x_val, self.y_val = t(splits["x_val"], torch.float32), t(splits["y_val"], torch.int64)
        self.x_train = t(splits["x_train"], torch.float32)
        self.y_train_np = np.asarray(splits["y_train"])
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.seed = seed

    # -- the network -------------------------------------------------------------------------------------------

    def linear_indices(self, model=None) -> list[int]:
        return [i for i, m in enumerate(model or self.model) if isinstance(m, nn.Linear)]

    @property
    def depth(self) -> int:
        return len(self.linear_indices()) - 1

    @property
    def widths(self) -> list[int]:
        return [self.model[i].out_features for i in self.linear_indices()[:-1]]

    def num_params(self, model=None) -> int:
        """Sum of numel over all parameters (Linear weights and biases, BN affine), as the original (§2.6)."""
        return int(sum(p.numel() for p in (model or self.model).parameters()))

    def accuracy(self, x, y) -> float:
        self.model.eval()
        with torch.no_grad():
            return float((self.model(x).argmax(1) == y).float().mean())

    # -- gym-style API -------------------------------------------------------------------------------------------

    def reset(self):
        """Starts an episode on a copy of the original network; returns the first observation (eval mode)."""
        torch.manual_seed(self.seed)
        self.model = copy.deepcopy(self.original).to(self.device).eval()
        self.step_count = 0
        self.acc0 = self.acc = self.accuracy(self.x_val, self.y_val)
        self.params0 = self.num_params()
        return self.observe(0)

    def episode_length(self) -> int:
        return self.passes * self.depth

    def step(self, action: int):
        """One decision for the current hidden layer: (obs, reward, done, info)."""
        layer = self.step_count % self.depth
        keep = KEEP_FRACTIONS[int(action)]
        old_width = self.widths[layer]
        params_before, acc_before = self.num_params(), self.acc
        epochs = 0
        if keep < 1.0:
            new_width = math.ceil(keep * old_width)  # float64, as neon_jax.env.keep_width_table
            model, trainable = self.rebuild(layer, new_width)
            epochs = self.finetune(model, trainable)
            self.model = model
            self.acc = self.accuracy(self.x_val, self.y_val)
        params_after = self.num_params()
        reward = neon_reward(keep, self.acc, self.acc0, self.tau)
        self.step_count += 1
        done = self.step_count >= self.episode_length()
        obs = self.observe(self.step_count % self.depth)
        info = {"layer": layer, "keep": keep, "width_before": old_width, "width_after": self.widths[layer],
                "widths": self.widths, "params_before": params_before, "params_after": params_after,
                "acc0": self.acc0, "acc_before": acc_before, "acc": self.acc, "finetune_epochs": epochs}
        return obs, reward, done, info

    # -- pieces --------------------------------------------------------------------------------------------------

    def rebuild(self, layer: int, new_width: int):
        """(new Sequential, trainable parameters): hidden Linear `layer` at `new_width` outputs and the next Linear
        at as many inputs, both fresh; a fresh BatchNorm1d on the narrowed layer; everything else deep-copied.
        Trainable = the parameters of rows `layer` and `layer + 1` (and the input BN when `layer` is 0)."""
        mods = list(self.model)
        lin = self.linear_indices()
        a, b = lin[layer], lin[layer + 1]
        new = []
        for i, m in enumerate(mods):
            if i == a:
                new.append(nn.Linear(m.in_features, new_width))
            elif i == b:
                new.append(nn.Linear(new_width, m.out_features))
            elif a < i < b and isinstance(m, nn.BatchNorm1d):
                new.append(nn.BatchNorm1d(new_width))
            else:
                new.append(copy.deepcopy(m))
        model = nn.Sequential(*new).to(self.device)
        row_start = 0 if layer == 0 else a
        row_end = lin[layer + 2] if layer + 2 < len(lin) else len(new)
        trainable = [p for m in new[row_start:row_end] for p in m.parameters()]
        return model, trainable

    def finetune(self, model: nn.Sequential, trainable) -> int:
        """The fine-tuner (§2.4, as neon_jax.fit.finetune); loads the best snapshot; returns epochs run."""
        preset = self.preset
        keep = {id(p) for p in trainable}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        optimizer = torch.optim.Adam(trainable, lr=preset.learning_rate)
        criterion = nn.CrossEntropyLoss()
        model.train()
        n, bs = self.x_ft.shape[0], preset.finetune_batch
        best_loss, best_state, bad, epoch = math.inf, None, 0, 0
        while epoch < preset.finetune_epochs and bad < preset.patience:
            perm = torch.randperm(n, generator=self.gen).to(self.device)
            improved = False
            for start in range(0, n, bs):
                idx = perm[start:start + bs]
                if idx.shape[0] < 2:
                    continue
                optimizer.zero_grad()
                loss = criterion(model(self.x_ft[idx]), self.y_ft[idx])
                value = loss.item()
                if value < best_loss:  # the weights that produced this loss, and the BN buffers after it
                    best_loss, improved = value, True
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
                loss.backward()
                optimizer.step()
            bad = 0 if improved else bad + 1
            epoch += 1
        if best_state is not None:
            model.load_state_dict(best_state)
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()
        return epoch

    def raw_state(self, x_sample: torch.Tensor):
        """Raw maps (topology (R, 8), activations (8, R, F), weights (8, R, F)) of the current network on a sample."""
        self.model.eval()
        outs = hooked_outputs(self.model, x_sample)
        return ref_state(sequential_layers(self.model), None, self.preset.feature_rows, self.preset.feature_width,
                         activations=outs)

    def observe(self, row: int) -> dict:
        """The normalised state for `row`, on a freshly drawn stratified sample of the train split (§3.4)."""
        idx = stratified_sample(self.rng, self.y_train_np, self.preset.activation_sample)
        return ref_normalise(*self.raw_state(self.x_train[idx]), row)


def run_episode(env: TorchNeonEnv, actions) -> dict:
    """A whole episode with the given actions (one per step; extra ones are ignored). Returns a summary."""
    env.reset()
    rewards, infos, done, t = [], [], False, 0
    while not done:
        _, reward, done, info = env.step(int(actions[t]))
        rewards.append(reward)
        infos.append(info)
        t += 1
    return {"steps": t, "return": float(np.sum(rewards)), "widths": env.widths, "params0": env.params0,
            "params": env.num_params(), "acc0": env.acc0, "acc": env.acc,
            "finetune_epochs": [i["finetune_epochs"] for i in infos], "rewards": rewards}


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def splits_dict(splits) -> dict:
    """The arrays a `TorchNeonEnv` needs from a `neon_jax.data.Splits`."""
    return {k: getattr(splits, k) for k in ("x_finetune", "y_finetune", "x_val", "y_val", "x_train", "y_train")}


def torch_env_from_jax(variables, arch, dims, preset, splits, passes: int = 4, tau: float = 5.0,
                       seed: int = 0, device: str = "cpu") -> TorchNeonEnv:
    """A `TorchNeonEnv` on the same network (one masked neon_jax network, no leading axis) and the same splits."""
    from benchmarks.torch_reference.base_training import to_torch_sequential
    from neon_jax import nets

    dense = nets.compact(variables, arch, dims, preset.dropout_rate)
    return TorchNeonEnv(to_torch_sequential(dense).eval(), splits_dict(splits), preset, passes, tau, seed, device)
