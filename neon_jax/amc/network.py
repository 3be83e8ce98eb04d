"""The network side of AMC, one padded network: FLOPs, the layer embedding, the budget wall, channel counts,
the input ranking, least-squares refits (solved once per network into a table, or per strategy where the table
would not fit: `refit_mode`) and the pruned network of a strategy."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from neon_jax import fit, nets
from neon_jax.amc.config import AMCConfig
from neon_jax.presets import PRE_BATCHNORM

TABLE_BUDGET_BYTES = 1 << 30  # per network, see `refit_mode`


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

    The refits of a strategy come from one of two places (`refit`, static): "table" holds every refit a search
    can ask for, solved once; "on_demand" holds each Linear's least-squares problem and `apply_strategy` solves
    the strategy's refits when it is applied (the same `reconstruct`). The other mode's fields are None.

    Attributes:
      flops: (S,) `linear_flops`, S = max_hidden + 1 steps. n_in: (S,) inputs of each step's Linear.
      valid: (S,) bool, the step exists. embedding: (S, 10) `embedding`.
      ranks: (S, w_in) `importance_ranks` of the inputs of each step's Linear (step 0: unused).
      table_hidden: (max_hidden - 1, M, w_max, w_max) refits of hidden Linears 1.. keeping m + 1 multiples of
        `channel_round` inputs; table_output: (M, w_max, k_max) the same for the output Linear ("table").
      cal_x: (max_hidden, n_cal, w_max) calibration inputs of Linears 1.., the output Linear last (padded rows
        zero); cal_y_hidden: (max_hidden - 1, n_cal, w_max) and cal_y_output: (n_cal, k_max) their targets
        ("on_demand").
      refit: "table" or "on_demand" (static).
    """

    flops: jax.Array
    n_in: jax.Array
    valid: jax.Array
    embedding: jax.Array
    ranks: jax.Array
    table_hidden: jax.Array | None = None
    table_output: jax.Array | None = None
    cal_x: jax.Array | None = None
    cal_y_hidden: jax.Array | None = None
    cal_y_output: jax.Array | None = None
    refit: str = struct.field(pytree_node=False, default="table")


def table_entries(dims: nets.NetDims, channel_round: int) -> int:
    """M: how many channel counts (channel_round, 2 * channel_round, ... <= w_max) a refit table holds."""
    return max(dims.w_max // channel_round, 1)


def table_bytes(dims: nets.NetDims, config: AMCConfig) -> int:
    """Bytes of one network's refit table: M * ((max_hidden - 1) * w_max^2 + w_max * k_max) float32s."""
    m = table_entries(dims, config.channel_round)
    return 4 * m * ((dims.max_hidden - 1) * dims.w_max ** 2 + dims.w_max * dims.k_max)


def refit_mode(dims: nets.NetDims, config: AMCConfig) -> str:
    """"table" or "on_demand": `config.refit`, where "auto" is the table if it fits `TABLE_BUDGET_BYTES` per
    network and on demand otherwise. Raises ValueError for ``refit="table"`` past the budget."""
    if config.refit == "table":
        check_table_size(dims, config)
    if config.refit != "auto":
        return config.refit
    return "table" if table_bytes(dims, config) <= TABLE_BUDGET_BYTES else "on_demand"


def resolve_refit(config: AMCConfig, dims: nets.NetDims) -> AMCConfig:
    """`config` with ``refit="auto"`` made concrete for networks of shape `dims` (`refit_mode`)."""
    return dataclasses.replace(config, refit=refit_mode(dims, config))


def check_table_size(dims: nets.NetDims, config: AMCConfig) -> None:
    """Raises ValueError if one network's refit table would exceed `TABLE_BUDGET_BYTES`."""
    size = table_bytes(dims, config)
    if size > TABLE_BUDGET_BYTES:
        raise ValueError(f"AMC's refit table needs {size / 2**30:.1f} GiB per network at w_max {dims.w_max} "
                         f"(channel_round {config.channel_round}), over the budget of "
                         f"{TABLE_BUDGET_BYTES / 2**30:.1f} GiB; refit='on_demand' (or 'auto') solves each "
                         f"strategy's refits when it is applied instead")


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


def refit_problems(key: jax.Array, model: nets.MaskedMLP, variables: dict, arch: nets.Arch, dims: nets.NetDims,
                   calibration: fit.PaddedData, config: AMCConfig) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
    """The least-squares problem of every Linear after the first, the output Linear last: [(x, y, ranks)].

    Args:
      key: draws the calibration rows (a random `config.calibration_rows` of the real rows of `calibration`).
      calibration: the fine-tune split (PaddedData, no leading axis).
    Returns:
      per Linear j = 1..max_hidden: x (n_cal, w_max) its eval-mode inputs on the calibration rows (padded rows
      zero), y (n_cal, n_out) its outputs without the bias (with it under `legacy_bias_target`; n_out = w_max,
      k_max for the output Linear), ranks (w_max,) `importance_ranks` of its inputs.
    """
    H = dims.max_hidden
    n_max = calibration.x.shape[0]
    n_cal = min(config.calibration_rows, n_max)
    u = jnp.where(jnp.arange(n_max) < calibration.n, jax.random.uniform(key, (n_max,)), 2.0)
    rows = jnp.argsort(u)[:n_cal]
    row_mask = (jnp.arange(n_cal) < calibration.n).astype(jnp.float32)[:, None]
    hidden_in, out_in = linear_inputs(model, variables, arch, dims, calibration.x[rows])
    params = variables["params"]

    def problem(x, j):
        kernel = nets.kernel(params, j, H)
        x = x * row_mask
        y = x @ kernel
        if config.legacy_bias_target:
            y = y + nets.bias(params, j, H)[None, :] * row_mask
        alive = arch.mask[j - 1] if j < H else arch.mask[arch.depth - 1]
        return x, y, importance_ranks(kernel, alive)

    return [problem(x, j) for j, x in zip(range(1, H + 1), [*hidden_in, out_in])]


def prepare(key: jax.Array, model: nets.MaskedMLP, variables: dict, arch: nets.Arch, dims: nets.NetDims,
            calibration: fit.PaddedData, config: AMCConfig) -> Network:
    """Everything a search of one network looks up: FLOPs, embedding, input ranks and the refits (every refit
    solved, or the problems to solve them from: `refit_mode`).

    Args:
      key: draws the calibration rows (`refit_problems`).
      calibration: the fine-tune split (PaddedData, no leading axis).
    """
    H, r = dims.max_hidden, config.channel_round
    mode = refit_mode(dims, config)
    problems = refit_problems(key, model, variables, arch, dims, calibration, config)
    # step t >= 1 reads Linear t (t < depth) or the output Linear (t == depth); pad step 0 and steps past depth
    per_linear = jnp.stack([jnp.zeros((dims.w_max,), jnp.int32), *[rk for _, _, rk in problems]])  # (H + 1, w_in)
    t = jnp.arange(H + 1)
    linear_of_step = jnp.where(t < arch.depth, t, H)
    fan_in, _, valid = step_sizes(arch, dims)
    net = Network(flops=linear_flops(arch, dims), n_in=fan_in, valid=valid, embedding=embedding(arch, dims),
                  ranks=per_linear[linear_of_step], refit=mode)
    n_cal = problems[0][0].shape[0]
    if mode == "on_demand":
        y_hidden = [y for _, y, _ in problems[:-1]]
        return net.replace(cal_x=jnp.stack([x for x, _, _ in problems]), cal_y_output=problems[-1][1],
                           cal_y_hidden=(jnp.stack(y_hidden) if H > 1
                                         else jnp.zeros((0, n_cal, dims.w_max), jnp.float32)))
    counts = r * (jnp.arange(table_entries(dims, r)) + 1)
    tables = [jax.vmap(lambda d, x=x, y=y, rk=rk: reconstruct(x, y, keep_mask(rk, d)))(counts)
              for x, y, rk in problems]
    table_hidden = (jnp.stack(tables[:-1]) if H > 1
                    else jnp.zeros((0, counts.shape[0], dims.w_max, dims.w_max), jnp.float32))
    return net.replace(table_hidden=table_hidden, table_output=tables[-1])


def apply_strategy(variables: dict, arch: nets.Arch, dims: nets.NetDims, net: Network, counts: jax.Array,
                   pruned: jax.Array, channel_round: int) -> tuple[dict, nets.Arch]:
    """The pruned network of a strategy: hidden layer t - 1 keeps its `counts[t]` most important neurons and
    Linear t takes its refit weights where `pruned[t]` (looked up, or solved now: `net.refit`); dead weights
    zeroed.

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
    refit = _table_refits if net.refit == "table" else _on_demand_refits
    params = refit(params, arch, H, net, counts, pruned, channel_round)
    new_arch = arch.replace(mask=jnp.stack(masks))
    return nets.zero_dead({"params": params, "batch_stats": variables["batch_stats"]}, new_arch, dims), new_arch


def _table_refits(params: dict, arch: nets.Arch, H: int, net: Network, counts, pruned, channel_round: int) -> dict:
    """`params` with the kernel of every pruned Linear after the first looked up in the refit tables."""
    params = dict(params)
    idx = lambda t: jnp.clip(counts[t] // channel_round - 1, 0, net.table_output.shape[0] - 1).astype(jnp.int32)
    for j in range(1, H):
        name = f"{nets.linear_name(j, H)}_kernel"
        use = (j < arch.depth) & pruned[j]
        params[name] = jnp.where(use, net.table_hidden[j - 1][idx(j)], params[name])
    use_out = pruned[arch.depth]
    params["output_kernel"] = jnp.where(use_out, net.table_output[idx(arch.depth)], params["output_kernel"])
    return params


def _on_demand_refits(params: dict, arch: nets.Arch, H: int, net: Network, counts, pruned,
                      channel_round: int) -> dict:
    """`params` with the kernel of every pruned Linear after the first solved now (`reconstruct` of its kept
    inputs: the table's entry for the same count); Linears that are not refit cost nothing (`lax.cond`; under
    vmap both branches run)."""
    del channel_round  # the counts are the table's counts; no index to compute
    params = dict(params)

    def solve(use, x, y, ranks, d, old):
        return jax.lax.cond(use, lambda: reconstruct(x, y, keep_mask(ranks, d)), lambda: old)

    for j in range(1, H):
        name = f"{nets.linear_name(j, H)}_kernel"
        use = (j < arch.depth) & pruned[j]
        params[name] = solve(use, net.cal_x[j - 1], net.cal_y_hidden[j - 1], net.ranks[j], counts[j], params[name])
    t = arch.depth
    params["output_kernel"] = solve(pruned[t], net.cal_x[H - 1], net.cal_y_output, net.ranks[t], counts[t],
                                    params["output_kernel"])
    return params
