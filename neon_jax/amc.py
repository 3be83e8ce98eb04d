"""AMC (He et al., ECCV 2018) for dense networks: a DDPG agent searches per-layer keep ratios under a FLOPs budget.

The original's `amc_runner.py` (neon_spec.md §9) on the padded networks of `neon_jax.nets`, one network per call
(vmap it for many). The method:

* **Layers.** The Linears of a network in order (the hidden Linears, then the output Linear): L = depth + 1
  steps. The action of step t is the share of Linear t's *input features* to keep; for t >= 1 these are the
  neurons of hidden layer t - 1, so removing an input of Linear t removes that neuron (its incoming weights,
  bias and batch-norm entries go with it: the result is a narrower network, counted as NEON's). The first
  Linear's inputs (the data's features) are never pruned: its action is forced to 1, as AMC's.
* **State** (10 numbers, `embedding`): layer index, type (1 = Linear), in and out features, stride 0, kernel 1,
  weight count, each min-max normalised over the network's layers; then the FLOPs removed so far and the FLOPs
  of the layers after this one (both over the original FLOPs) and the previous action.
* **Budget** (`budget_wall`): a proposed ratio is lowered so that, with every later layer at `lbound`, the
  network keeps at most `preserve_ratio` of its FLOPs, and never below `lbound`.
* **Channels** (`channel_count`, `keep_mask`): d' = round(c * ratio) (at least 1), rounded up to a multiple of
  `channel_round` (down where that exceeds c); the inputs with the largest L1 norm of their outgoing weights
  are kept. A ratio of 1 leaves the Linear as it is; otherwise its weights are refit by least squares
  (`reconstruct`) so that the kept inputs best reproduce the original Linear's outputs on a calibration sample
  (60 batches of 32 rows of the fine-tune split, eval mode).
* **Reward** ``-(1 - acc) * log(FLOPs)``, acc = validation accuracy of the pruned (not fine-tuned) network,
  FLOPs as AMC counts them (`linear_flops`: in * out + out per Linear, times its input and output ratios).
  Every transition of an episode gets the episode's reward.
* **Agent** (`ddpg_init`, `ddpg_update`): actor and critic 300-300, Adam lr 1e-4 / 1e-3, soft target update
  0.01, discount 1, a replay of 100 transitions per layer, batches of 64, rewards centred by a moving average
  (alpha 0.5); 50 warm-up episodes of uniform random actions in [lbound, rbound], then the actor's action with
  truncated-normal noise of scale 0.5 * 0.95^(episode - warm-up), clipped to [lbound, rbound]; after warm-up,
  one update per transition. 300 episodes; the strategy with the best reward is the result.

Beyond the original: `AMCConfig.parallel_episodes` = E > 1 runs E episodes with one actor at once (different
noise), then their E * L transitions and updates in the same order one-by-one episodes would have had them
(E = 1 is the original's schedule, exactly). The search of a whole batch of networks is one vmapped program.

Precomputation: an input subset is always the d' most important inputs, so every refit a search can ask for
(d' = channel_round, 2 * channel_round, ...) is solved once per network before the search (`reconstruction_table`)
and an episode only looks its Linears up: the same least-squares solutions, computed once instead of once per
episode. Its memory is ``(max_hidden - 1) * w_max^2 + w_max * k_max`` floats times ``w_max / channel_round`` per
network; `check_table_size` refuses shapes where that grows past a budget (the paper preset's width 1000).

Deviations, each behind a switch where the original's behaviour is a bug:

* ``legacy_bias_target`` (False): AMC fits the Linear's output *including its bias* with no intercept and then
  keeps the bias, so the bias is counted twice. Here the target is the output without the bias (``X @ W``);
  True fits the original's target.
* ``floor_accuracy`` (False): the original reported max(pruned accuracy, unpruned accuracy) (§12 C3); it is
  applied by `neon_jax.baselines` only when set.
* A layer narrower than `channel_round` would get d' = 0 in the original (floor(c / 8) * 8); here it is kept
  whole.
* Replay batches are drawn without replacement from the filled part of the buffer (with replacement while it
  holds fewer than 64), uniformly; the original's keras-style sequential memory samples the same way.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from neon_jax import nets, train
from neon_jax.presets import PRE_BATCHNORM

STATE_SIZE = 10
TABLE_BUDGET_BYTES = 1 << 30  # per network, see `check_table_size`


@dataclasses.dataclass(frozen=True)
class AMCConfig:
    """The search's settings (defaults: the original runner's, neon_spec.md §9). Static: part of the program."""

    episodes: int = 300
    warmup: int = 50  # episodes 0..warmup act at random (the original's `episode <= warmup`)
    hidden: int = 300  # actor and critic: two hidden layers of this width
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    soft_update: float = 0.01
    discount: float = 1.0
    replay_per_layer: int = 100
    batch_size: int = 64
    lbound: float = 0.1
    rbound: float = 1.0
    channel_round: int = 8
    init_delta: float = 0.5
    delta_decay: float = 0.95
    moving_alpha: float = 0.5
    calibration_rows: int = 1920  # 60 batches of 32
    parallel_episodes: int = 1
    legacy_bias_target: bool = False
    floor_accuracy: bool = False
    batching: str = "auto"  # how a batch of searches runs: "vmap", "map" (one after the other), "auto"


    def __post_init__(self):
        if self.episodes < 1 or self.parallel_episodes < 1 or self.episodes % self.parallel_episodes:
            raise ValueError(f"AMC needs episodes >= 1 in whole rounds of parallel_episodes; got episodes="
                             f"{self.episodes}, parallel_episodes={self.parallel_episodes}")
        if not 0.0 < self.lbound <= self.rbound <= 1.0:
            raise ValueError(f"AMC needs 0 < lbound <= rbound <= 1, got {self.lbound}, {self.rbound}")
        if self.channel_round < 1 or self.batch_size < 1 or self.calibration_rows < 1:
            raise ValueError("AMC's channel_round, batch_size and calibration_rows must be >= 1")
        if self.batching not in ("auto", "vmap", "map"):
            raise ValueError(f"AMC's batching is 'auto', 'vmap' or 'map', got {self.batching!r}")


def resolve_batching(config: AMCConfig) -> AMCConfig:
    """`config` with ``batching="auto"`` made concrete: "map" on a CPU, where one search after the other inside
    one program measured faster than vmapped searches (`benchmarks/results/amc_search_cpu.json`: the vmapped
    batch runs every network to the deepest one's steps and selects its whole agent state per step), "vmap" on
    accelerators (not measured yet)."""
    if config.batching != "auto":
        return config
    return dataclasses.replace(config, batching="map" if jax.default_backend() == "cpu" else "vmap")


# ----------------------------------------------------------------------------------------------------------
# The network side: one network at padded shapes. Step t (0..max_hidden) is Linear t while t < depth, then
# the output Linear (padded index max_hidden); steps past depth are padding.


def step_sizes(arch: nets.Arch, dims: nets.NetDims) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(in, out, valid): (max_hidden + 1,) in / out features of each step's Linear and whether the step exists."""
    t = jnp.arange(dims.max_hidden + 1)
    widths = jnp.concatenate([arch.widths, jnp.zeros((1,), arch.widths.dtype)])
    prev = jnp.concatenate([arch.n_features[None], arch.widths])  # inputs of Linear t for t < depth
    last = arch.widths[arch.depth - 1]
    fan_in = jnp.where(t < arch.depth, prev, jnp.where(t == arch.depth, last, 0))
    fan_out = jnp.where(t < arch.depth, widths, jnp.where(t == arch.depth, arch.n_classes, 0))
    return fan_in.astype(jnp.float32), fan_out.astype(jnp.float32), t <= arch.depth


def linear_flops(arch: nets.Arch, dims: nets.NetDims) -> jax.Array:
    """(max_hidden + 1,) FLOPs of each step's Linear as AMC counts them: in * out + out (0 past the network)."""
    fan_in, fan_out, valid = step_sizes(arch, dims)
    return jnp.where(valid, fan_in * fan_out + fan_out, 0.0)


def flops_kept(flops: jax.Array, in_ratio: jax.Array, out_ratio: jax.Array) -> jax.Array:
    """() FLOPs of a pruned network: sum over Linears of flops * input ratio * output ratio (AMC's `_cur_flops`)."""
    return (flops * in_ratio * out_ratio).sum()


def embedding(arch: nets.Arch, dims: nets.NetDims) -> jax.Array:
    """(max_hidden + 1, 10) AMC's layer embedding, min-max normalised over the network's steps (columns that do
    not vary are left as they are); the last three columns (reduced, rest, previous action) start at 0, 0, 1."""
    fan_in, fan_out, valid = step_sizes(arch, dims)
    t = jnp.arange(dims.max_hidden + 1, dtype=jnp.float32)
    one, zero = jnp.ones_like(t), jnp.zeros_like(t)
    static = jnp.stack([t, one, fan_in, fan_out, zero, one, fan_in * fan_out], axis=1)
    lo = jnp.where(valid[:, None], static, jnp.inf).min(0)
    hi = jnp.where(valid[:, None], static, -jnp.inf).max(0)
    span = hi - lo
    static = jnp.where(span > 0, (static - lo) / jnp.where(span > 0, span, 1.0), static)
    return jnp.concatenate([static, zero[:, None], zero[:, None], one[:, None]], axis=1) * valid[:, None]


def budget_wall(action, t, in_ratio, out_ratio, flops, preserve_ratio, lbound):
    """AMC's `_action_wall`: the largest ratio <= `action` for step t that keeps the budget with every later step
    at its current (lower-bound) ratio, and at least `in_ratio[t]` (lbound; 1 for the first Linear).

    Args:
      action: () proposed keep ratio of Linear t's inputs. t: () step.
      in_ratio / out_ratio: (S,) the strategy so far (unvisited steps at lbound, the first input and the last
        output at 1). flops: (S,) `linear_flops`. preserve_ratio: () share of FLOPs to keep.
    Returns:
      () the ratio to prune to (before rounding to channels).
    """
    del lbound  # carried in in_ratio
    s = jnp.arange(flops.shape[0])
    action = jnp.clip(action, 0.0, 1.0)
    this = jnp.where(s == t - 1, flops * in_ratio, 0.0).sum() + jnp.where(s == t, flops * out_ratio, 0.0).sum()
    other = jnp.where((s != t - 1) & (s != t), flops * in_ratio * out_ratio, 0.0).sum()
    budget = preserve_ratio * flops.sum()
    max_ratio = (budget - other) / jnp.where(this > 0, this, 1.0)
    return jnp.maximum(jnp.minimum(action, max_ratio), in_ratio[t])


def channel_count(c, ratio, channel_round: int):
    """(d', pruned): inputs kept of a Linear with c inputs at `ratio`, as AMC's `prune_kernel` (see the module
    docstring); `pruned` is False where the Linear is left as it is (ratio 1, or c < channel_round)."""
    d = jnp.maximum(jnp.round(c * ratio), 1.0)
    d = jnp.ceil(d / channel_round) * channel_round
    d = jnp.where(d > c, jnp.floor(c / channel_round) * channel_round, d)
    pruned = (ratio < 1.0) & (d > 0)
    return jnp.where(pruned, d, c), pruned


def importance_ranks(kernel: jax.Array, alive: jax.Array) -> jax.Array:
    """(n_in,) rank of every input of a Linear by the L1 norm of its outgoing weights, largest first (dead
    inputs last; ties: lower index first)."""
    score = jnp.where(alive > 0, jnp.abs(kernel).sum(1), -1.0)
    order = jnp.argsort(-score, stable=True)
    return jnp.zeros(score.shape, jnp.int32).at[order].set(jnp.arange(score.size, dtype=jnp.int32))


def keep_mask(ranks: jax.Array, d) -> jax.Array:
    """(n_in,) 0/1 mask of the d most important inputs."""
    return (ranks < d).astype(jnp.float32)


def reconstruct(x: jax.Array, y: jax.Array, keep: jax.Array) -> jax.Array:
    """Least-squares weights of the kept inputs: argmin_W ||x[:, keep] W - y||, zero on the other inputs.

    Args:
      x: (n, n_in) calibration inputs (padded rows all zero); y: (n, n_out) targets; keep: (n_in,) 0/1.
    Returns:
      (n_in, n_out) the minimum-norm solution (`jnp.linalg.lstsq`, NumPy's cut-off for small singular values).
    """
    w, *_ = jnp.linalg.lstsq(x * keep[None, :], y)
    return w * keep[:, None]


@struct.dataclass
class Network:
    """What a search needs of one network, computed once before it (`prepare`).

    Attributes:
      flops: (S,) `linear_flops`, S = max_hidden + 1 steps. n_in: (S,) inputs of each step's Linear.
      valid: (S,) bool, the step exists. embedding: (S, 10) `embedding`.
      ranks: (S, w_in) `importance_ranks` of the inputs of each step's Linear (step 0: unused).
      table_hidden: (max_hidden - 1, M, w_max, w_max) refits of hidden Linears 1.. keeping m + 1 multiples of
        `channel_round` inputs; table_output: (M, w_max, k_max) the same for the output Linear.
    """

    flops: jax.Array
    n_in: jax.Array
    valid: jax.Array
    embedding: jax.Array
    ranks: jax.Array
    table_hidden: jax.Array
    table_output: jax.Array


def table_entries(dims: nets.NetDims, channel_round: int) -> int:
    """M: how many channel counts (channel_round, 2 * channel_round, ... <= w_max) a refit table holds."""
    return max(dims.w_max // channel_round, 1)


def check_table_size(dims: nets.NetDims, config: AMCConfig) -> None:
    """Raises ValueError if one network's refit table would exceed `TABLE_BUDGET_BYTES`."""
    m = table_entries(dims, config.channel_round)
    size = 4 * m * ((dims.max_hidden - 1) * dims.w_max ** 2 + dims.w_max * dims.k_max)
    if size > TABLE_BUDGET_BYTES:
        raise ValueError(f"AMC's refit table needs {size / 2**30:.1f} GiB per network at w_max {dims.w_max} "
                         f"(channel_round {config.channel_round}); networks this wide are not supported yet")


def linear_inputs(model: nets.MaskedMLP, variables: dict, arch: nets.Arch, dims: nets.NetDims,
                  x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
    """Eval-mode inputs of every Linear after the first: ([hidden Linear j = 1..max_hidden-1: (n, w_max)],
    output Linear: (n, w_max)), i.e. hidden layer j - 1's output after the batch-norm in front of Linear j."""
    _, hidden = model.apply(variables, x, arch, train=False, return_hidden=True)
    inputs = []
    for j in range(1, dims.max_hidden):
        scale, bias, mean, var = nets.batchnorm(variables, j)
        a, b, _, _ = nets.batchnorm_affine(hidden[j - 1], None, False, scale, bias, mean, var)
        is_bn = arch.pre_layer[j] == PRE_BATCHNORM
        inputs.append(jnp.where(is_bn, hidden[j - 1] * a + b, hidden[j - 1]) * arch.mask[j - 1])
    return inputs, hidden[arch.depth - 1]


def prepare(key: jax.Array, model: nets.MaskedMLP, variables: dict, arch: nets.Arch, dims: nets.NetDims,
            calibration: train.PaddedData, config: AMCConfig) -> Network:
    """Everything a search of one network looks up: FLOPs, embedding, input ranks and every refit.

    Args:
      key: draws the calibration rows (a random `config.calibration_rows` of the real rows of `calibration`).
      calibration: the fine-tune split (PaddedData, no leading axis).
    """
    H, r = dims.max_hidden, config.channel_round
    n_max = calibration.x.shape[0]
    n_cal = min(config.calibration_rows, n_max)
    u = jnp.where(jnp.arange(n_max) < calibration.n, jax.random.uniform(key, (n_max,)), 2.0)
    rows = jnp.argsort(u)[:n_cal]
    row_mask = (jnp.arange(n_cal) < calibration.n).astype(jnp.float32)[:, None]
    hidden_in, out_in = linear_inputs(model, variables, arch, dims, calibration.x[rows])
    params = variables["params"]
    m = table_entries(dims, r)
    counts = r * (jnp.arange(m) + 1)

    def table(x, j):
        kernel = nets.kernel(params, j, H)
        x = x * row_mask
        y = x @ kernel
        if config.legacy_bias_target:
            y = y + nets.bias(params, j, H)[None, :] * row_mask
        alive = arch.mask[j - 1] if j < H else arch.mask[arch.depth - 1]
        ranks = importance_ranks(kernel, alive)
        return ranks, jax.vmap(lambda d: reconstruct(x, y, keep_mask(ranks, d)))(counts)

    hidden = [table(x, j) for j, x in zip(range(1, H), hidden_in)]
    out_ranks, table_output = table(out_in, H)
    hidden_ranks = [rk for rk, _ in hidden]
    # step t >= 1 reads Linear t (t < depth) or the output Linear (t == depth); pad step 0 and steps past depth
    w_in = dims.w_max
    per_linear = jnp.stack([jnp.zeros((w_in,), jnp.int32), *hidden_ranks, out_ranks])  # (H + 1, w_in)
    t = jnp.arange(H + 1)
    linear_of_step = jnp.where(t < arch.depth, t, H)
    fan_in, _, valid = step_sizes(arch, dims)
    table_hidden = (jnp.stack([tb for _, tb in hidden]) if H > 1
                    else jnp.zeros((0, m, dims.w_max, dims.w_max), jnp.float32))
    return Network(flops=linear_flops(arch, dims), n_in=fan_in, valid=valid, embedding=embedding(arch, dims),
                   ranks=per_linear[linear_of_step], table_hidden=table_hidden, table_output=table_output)


def apply_strategy(variables: dict, arch: nets.Arch, dims: nets.NetDims, net: Network, counts: jax.Array,
                   pruned: jax.Array, channel_round: int) -> tuple[dict, nets.Arch]:
    """The pruned network of a strategy: hidden layer t - 1 keeps its `counts[t]` most important neurons and
    Linear t takes its refit weights where `pruned[t]`; dead weights zeroed.

    Args:
      counts: (S,) inputs kept per step (d'); pruned: (S,) bool, the step's Linear was pruned and refit.
    Returns:
      (variables, arch) of the pruned network.
    """
    H = dims.max_hidden
    params = dict(variables["params"])
    masks = []
    for j in range(H):  # hidden layer j's neurons are the inputs of step j + 1
        keep = keep_mask(net.ranks[j + 1], counts[j + 1])
        live = (j < arch.depth) & pruned[j + 1]
        masks.append(jnp.where(live, arch.mask[j] * keep, arch.mask[j]))
    idx = lambda t: jnp.clip(counts[t] // channel_round - 1, 0, net.table_output.shape[0] - 1).astype(jnp.int32)
    for j in range(1, H):
        name = f"{nets.linear_name(j, H)}_kernel"
        use = (j < arch.depth) & pruned[j]
        params[name] = jnp.where(use, net.table_hidden[j - 1][idx(j)], params[name])
    use_out = pruned[arch.depth]
    params["output_kernel"] = jnp.where(use_out, net.table_output[idx(arch.depth)], params["output_kernel"])
    new_arch = arch.replace(mask=jnp.stack(masks))
    return nets.zero_dead({"params": params, "batch_stats": variables["batch_stats"]}, new_arch, dims), new_arch


# ----------------------------------------------------------------------------------------------------------
# The agent: DDPG with plain parameter dicts (kernels (in, out), as flax; PyTorch keeps (out, in)).


def _dense(key, n_in, n_out, bound=None, fanin_out=False):
    """PyTorch Linear init: bias U(+-1/sqrt(n_in)); weight U(+-bound), U(+-1/sqrt(n_out)) for AMC's
    `fanin_init` (it reads size[0] of a PyTorch (out, in) weight), else PyTorch's U(+-1/sqrt(n_in))."""
    kw, kb = jax.random.split(key)
    if bound is None:
        bound = 1.0 / np.sqrt(n_out if fanin_out else n_in)
    b = 1.0 / np.sqrt(n_in)
    return {"w": jax.random.uniform(kw, (n_in, n_out), jnp.float32, -bound, bound),
            "b": jax.random.uniform(kb, (n_out,), jnp.float32, -b, b)}


def init_actor(key, hidden: int, init_w: float = 3e-3) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {"fc1": _dense(k1, STATE_SIZE, hidden, fanin_out=True), "fc2": _dense(k2, hidden, hidden, fanin_out=True),
            "fc3": _dense(k3, hidden, 1, bound=init_w)}


def init_critic(key, hidden: int, init_w: float = 3e-3) -> dict:
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {"fc11": _dense(k1, STATE_SIZE, hidden, fanin_out=True), "fc12": _dense(k2, 1, hidden, fanin_out=True),
            "fc2": _dense(k3, hidden, hidden, fanin_out=True), "fc3": _dense(k4, hidden, 1, bound=init_w)}


def _lin(p, x):
    return x @ p["w"] + p["b"]


def actor_apply(params: dict, s: jax.Array) -> jax.Array:
    """(..., 10) states -> (...,) actions in (0, 1): sigmoid(fc3(relu(fc2(relu(fc1(s))))))."""
    h = jax.nn.relu(_lin(params["fc2"], jax.nn.relu(_lin(params["fc1"], s))))
    return jax.nn.sigmoid(_lin(params["fc3"], h))[..., 0]


def critic_apply(params: dict, s: jax.Array, a: jax.Array) -> jax.Array:
    """(..., 10) states, (...,) actions -> (...,) Q: fc3(relu(fc2(relu(fc11(s) + fc12(a)))))."""
    h = jax.nn.relu(_lin(params["fc11"], s) + _lin(params["fc12"], a[..., None]))
    return _lin(params["fc3"], jax.nn.relu(_lin(params["fc2"], h)))[..., 0]


@struct.dataclass
class DDPGState:
    """Actor, critic, their targets and Adam states, and the reward's moving average (`ma_set`: seen one)."""

    actor: dict
    critic: dict
    actor_target: dict
    critic_target: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    moving_average: jax.Array
    ma_set: jax.Array


def _optimizers(config: AMCConfig):
    return optax.adam(config.lr_actor), optax.adam(config.lr_critic)


def ddpg_init(key: jax.Array, config: AMCConfig) -> DDPGState:
    """A fresh agent; targets start as copies (AMC's hard update)."""
    ka, kc = jax.random.split(key)
    actor, critic = init_actor(ka, config.hidden), init_critic(kc, config.hidden)
    opt_a, opt_c = _optimizers(config)
    return DDPGState(actor=actor, critic=critic, actor_target=actor, critic_target=critic,
                     actor_opt=opt_a.init(actor), critic_opt=opt_c.init(critic), moving_average=jnp.float32(0.0),
                     ma_set=jnp.bool_(False))


def ddpg_update(state: DDPGState, s, a, r, s2, not_done, config: AMCConfig) -> tuple[DDPGState, dict]:
    """One DDPG update on a batch (AMC's `update_policy`).

    Rewards are centred by a moving average of batch means (first batch: its own mean; then
    ``ma += alpha * (mean - ma)``); target ``y = r - ma + discount * not_done * Q'(s2, mu'(s2))``; the critic takes
    one Adam step on the mean squared error, then the actor one on ``-mean Q(s, mu(s))`` (with the updated critic);
    both targets move ``soft_update`` of the way.

    Args:
      s, s2: (N, 10) states; a, r, not_done: (N,) actions, rewards and 1 - done.
    Returns:
      (new state, {"value_loss", "policy_loss"}).
    """
    opt_a, opt_c = _optimizers(config)
    mean = r.mean()
    ma = jnp.where(state.ma_set, state.moving_average + config.moving_alpha * (mean - state.moving_average), mean)
    q_next = critic_apply(state.critic_target, s2, actor_apply(state.actor_target, s2))
    target = jax.lax.stop_gradient(r - ma + config.discount * not_done * q_next)
    value_loss, g_c = jax.value_and_grad(lambda c: ((critic_apply(c, s, a) - target) ** 2).mean())(state.critic)
    upd, critic_opt = opt_c.update(g_c, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, upd)
    policy_loss, g_a = jax.value_and_grad(lambda p: -critic_apply(critic, s, actor_apply(p, s)).mean())(state.actor)
    upd, actor_opt = opt_a.update(g_a, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, upd)
    soft = lambda tgt, src: jax.tree_util.tree_map(
        lambda t, x: t * (1.0 - config.soft_update) + x * config.soft_update, tgt, src)
    new = DDPGState(actor=actor, critic=critic, actor_target=soft(state.actor_target, actor),
                    critic_target=soft(state.critic_target, critic), actor_opt=actor_opt, critic_opt=critic_opt,
                    moving_average=ma, ma_set=jnp.bool_(True))
    return new, {"value_loss": value_loss, "policy_loss": policy_loss}


@struct.dataclass
class Replay:
    """A ring buffer of transitions with a per-network limit (`limit` <= capacity)."""

    s: jax.Array  # (C, 10)
    a: jax.Array  # (C,)
    r: jax.Array  # (C,)
    s2: jax.Array  # (C, 10)
    not_done: jax.Array  # (C,)
    count: jax.Array  # () transitions stored (<= limit)
    ptr: jax.Array  # () next slot
    limit: jax.Array  # () int32


def replay_init(capacity: int, limit) -> Replay:
    z = jnp.zeros((capacity,), jnp.float32)
    return Replay(s=jnp.zeros((capacity, STATE_SIZE)), a=z, r=z, s2=jnp.zeros((capacity, STATE_SIZE)), not_done=z,
                  count=jnp.int32(0), ptr=jnp.int32(0), limit=jnp.asarray(limit, jnp.int32))


def replay_add(rb: Replay, s, a, r, s2, not_done) -> Replay:
    i = rb.ptr
    return rb.replace(s=rb.s.at[i].set(s), a=rb.a.at[i].set(a), r=rb.r.at[i].set(r), s2=rb.s2.at[i].set(s2),
                      not_done=rb.not_done.at[i].set(not_done), count=jnp.minimum(rb.count + 1, rb.limit),
                      ptr=(i + 1) % rb.limit)


def replay_sample(key, rb: Replay, n: int):
    """n indices of filled slots: without replacement once the buffer holds >= n, else with replacement."""
    k1, k2 = jax.random.split(key)
    filled = jnp.arange(rb.a.shape[0]) < rb.count
    _, without = jax.lax.top_k(jnp.where(filled, jax.random.uniform(k1, rb.a.shape), -1.0), n)
    with_ = jax.random.randint(k2, (n,), 0, jnp.maximum(rb.count, 1))
    return jnp.where(rb.count >= n, without, with_)


# ----------------------------------------------------------------------------------------------------------
# The search.


@struct.dataclass
class SearchResult:
    """A search's outcome for one network.

    Attributes:
      counts / pruned: (S,) the best strategy's inputs kept per step and whether the step's Linear was refit.
      ratios: (S,) its realised keep ratio per step (1 for the first Linear and past the network).
      best_reward / best_val_acc / best_flops_ratio: () its reward, validation accuracy (no fine-tune) and FLOPs
        over the original's.
      episode_reward / episode_val_acc / episode_flops_ratio: (episodes,) every episode's, in order.
    """

    counts: jax.Array
    pruned: jax.Array
    ratios: jax.Array
    best_reward: jax.Array
    best_val_acc: jax.Array
    best_flops_ratio: jax.Array
    episode_reward: jax.Array
    episode_val_acc: jax.Array
    episode_flops_ratio: jax.Array


def prune(key: jax.Array, model: nets.MaskedMLP, variables: dict, arch: nets.Arch, dims: nets.NetDims,
          calibration: train.PaddedData, val: train.PaddedData, preserve_ratio,
          config: AMCConfig) -> tuple[dict, nets.Arch, SearchResult]:
    """AMC on one network (vmap it for many): `prepare`, `search`, and the best strategy applied.

    Args:
      key: all the randomness (calibration rows, agent init, actions, replay batches).
      variables / arch: the network to prune. calibration / val: its fine-tune and validation splits
        (PaddedData, no leading axis). preserve_ratio: () traced share of FLOPs to keep (AMC: 0.2).
    Returns:
      (variables, arch) of the pruned network (not fine-tuned), and the `SearchResult`.
    """
    k_prep, k_search = jax.random.split(key)
    net = prepare(k_prep, model, variables, arch, dims, calibration, config)
    result = search(k_search, net, model, variables, arch, dims, val, preserve_ratio, config)
    pv, parch = apply_strategy(variables, arch, dims, net, result.counts, result.pruned, config.channel_round)
    return pv, parch, result


def search(key: jax.Array, net: Network, model: nets.MaskedMLP, variables: dict, arch: nets.Arch,
           dims: nets.NetDims, val: train.PaddedData, preserve_ratio, config: AMCConfig) -> SearchResult:
    """AMC's DDPG search of one prepared network: `config.episodes` episodes, the best reward's strategy kept.

    Args:
      key: the agent's init, actions and replay batches. net: `prepare`'s. val: the validation split.
      preserve_ratio: () traced share of FLOPs to keep.
    Returns:
      `SearchResult`.
    """
    S = dims.max_hidden + 1
    E = config.parallel_episodes
    k_agent, k_run = jax.random.split(key)
    trainer = train.make_trainer(model)
    val1 = jax.tree_util.tree_map(lambda x: x[None], val)
    n_steps = arch.depth + 1
    org = net.flops.sum()
    lb = config.lbound
    init_in = jnp.where(jnp.arange(S) == 0, 1.0, lb)
    init_out = jnp.where(jnp.arange(S) == arch.depth, 1.0, lb)
    fan_in, fan_out, _ = step_sizes(arch, dims)
    weights = jnp.where(net.valid, fan_in * fan_out, 0.0)
    rest0 = (weights.sum() - weights[0]) / weights.sum()  # the reset's "rest" counts weights

    def episode(key, actor, episode_index):
        """One episode with `actor` (None-free: random while in warm-up). Returns transitions and its reward."""
        warm = episode_index <= config.warmup
        delta = config.init_delta * config.delta_decay ** (episode_index - config.warmup).astype(jnp.float32)

        def step(carry, inputs):
            in_r, out_r, obs = carry
            t, k = inputs
            k_u, k_n = jax.random.split(k)
            random_a = jax.random.uniform(k_u, (), minval=lb, maxval=config.rbound)
            mu = actor_apply(actor, obs)
            lo, hi = (lb - mu) / delta, (config.rbound - mu) / delta
            noisy = mu + delta * jax.random.truncated_normal(k_n, lo, hi)
            a = jnp.where(warm, random_a, jnp.clip(noisy, lb, config.rbound))
            wall = budget_wall(a, t, in_r, out_r, net.flops, preserve_ratio, lb)
            d, pruned = channel_count(net.n_in[t], wall, config.channel_round)
            realised = jnp.where(pruned, d / jnp.maximum(net.n_in[t], 1.0), 1.0)
            live = t < n_steps
            in_r = jnp.where(live & (jnp.arange(S) == t), realised, in_r)
            out_r = jnp.where(live & (jnp.arange(S) == t - 1), realised, out_r)
            last = t == n_steps - 1
            nxt = jnp.minimum(t + 1, S - 1)
            reduced = (org - flops_kept(net.flops, in_r, out_r)) / org
            rest = jnp.where(jnp.arange(S) > nxt, net.flops, 0.0).sum() / org
            next_obs = net.embedding[nxt].at[7].set(reduced).at[8].set(rest).at[9].set(realised)
            next_obs = jnp.where(last, obs, next_obs)
            out = {"s": obs, "a": a, "s2": next_obs, "not_done": 1.0 - last.astype(jnp.float32), "valid": live,
                   "d": d, "pruned": pruned & live, "ratio": jnp.where(live, realised, 1.0)}
            return (in_r, out_r, jnp.where(live, next_obs, obs)), out

        obs0 = net.embedding[0].at[8].set(rest0)
        (in_r, out_r, _), tr = jax.lax.scan(step, (init_in, init_out, obs0),
                                               (jnp.arange(S), jax.random.split(key, S)))
        pv, parch = apply_strategy(variables, arch, dims, net, tr["d"], tr["pruned"], config.channel_round)
        acc = trainer.accuracy_one(pv, parch, 0, val1)
        flops = flops_kept(net.flops, in_r, out_r)
        reward = -(1.0 - acc) * jnp.log(flops)
        return tr, reward, acc, flops / org

    capacity = config.replay_per_layer * S
    agent0 = ddpg_init(k_agent, config)
    rb0 = replay_init(capacity, config.replay_per_layer * n_steps)
    best0 = {"reward": -jnp.inf, "d": jnp.zeros((S,)), "pruned": jnp.zeros((S,), bool), "ratio": jnp.ones((S,)),
             "acc": jnp.float32(0.0), "flops": jnp.float32(1.0)}

    def round_(carry, inputs):
        agent, rb, best = carry
        r_index, k = inputs
        k_ep, k_up = jax.random.split(k)
        indices = r_index * E + jnp.arange(E)
        tr, reward, acc, fr = jax.vmap(episode, in_axes=(0, None, 0))(jax.random.split(k_ep, E), agent.actor,
                                                                      indices)
        for i in range(E):  # the best in episode order (strictly better replaces, as the original)
            better = reward[i] > best["reward"]
            cand = {"reward": reward[i], "d": tr["d"][i], "pruned": tr["pruned"][i], "ratio": tr["ratio"][i],
                    "acc": acc[i], "flops": fr[i]}
            best = jax.tree_util.tree_map(lambda c, b: jnp.where(better, c, b), cand, best)
        flat = jax.tree_util.tree_map(lambda x: x.reshape((E * S,) + x.shape[2:]), tr)
        ep_of = jnp.repeat(indices, S)
        rewards = jnp.repeat(reward, S)

        # the round's transitions in episode order, the real ones first (each keeps its own key): the loop
        # runs for as many as there are (under vmap: the batch's most), not for every padded step
        order = jnp.argsort(~flat["valid"], stable=True)
        flat, rewards, ep_of = jax.tree_util.tree_map(lambda x: x[order], (flat, rewards, ep_of))
        keys = jax.random.split(k_up, E * S)[order]

        def observe(i, carry, learn: str):
            """Transition i into the replay, then (learn "all" / "some": if its episode is past warm-up) an update."""
            agent, rb = carry
            x = jax.tree_util.tree_map(lambda a: a[i], flat)
            rb = replay_add(rb, x["s"], x["a"], rewards[i], x["s2"], x["not_done"])
            if learn == "none":
                return agent, rb
            idx = replay_sample(keys[i], rb, config.batch_size)
            new_agent, _ = ddpg_update(agent, rb.s[idx], rb.a[idx], rb.r[idx], rb.s2[idx], rb.not_done[idx], config)
            if learn == "some":
                new_agent = jax.tree_util.tree_map(lambda n, o: jnp.where(ep_of[i] > config.warmup, n, o),
                                                   new_agent, agent)
            return new_agent, rb

        n_real = flat["valid"].sum()
        # rounds of warm-up episodes only fill the replay; only a round that straddles the end of warm-up
        # (parallel episodes) decides per transition
        branch = jnp.where(indices[0] > config.warmup, 1, jnp.where(indices[-1] > config.warmup, 2, 0))
        agent, rb = jax.lax.switch(
            branch, [lambda c, learn=learn: jax.lax.fori_loop(0, n_real, lambda i, c: observe(i, c, learn), c)
                     for learn in ("none", "all", "some")], (agent, rb))
        return (agent, rb, best), (reward, acc, fr)

    rounds = config.episodes // E
    (_, _, best), (rewards, accs, frs) = jax.lax.scan(
        round_, (agent0, rb0, best0), (jnp.arange(rounds), jax.random.split(k_run, rounds)))
    return SearchResult(counts=best["d"], pruned=best["pruned"], ratios=best["ratio"], best_reward=best["reward"],
                        best_val_acc=best["acc"], best_flops_ratio=best["flops"],
                        episode_reward=rewards.reshape(-1), episode_val_acc=accs.reshape(-1),
                        episode_flops_ratio=frs.reshape(-1))
