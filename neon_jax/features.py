"""The NEON state: topology map, weight statistics, activation statistics and their normalisation.

neon_spec.md §3 is the source of truth. The original (NetworkFeatureExtration bf80c94) describes a network by
"rows" (§2.2): row j holds Linear_j, its activation and the BatchNorm/Dropout sitting in front of Linear_{j+1};
row 0 also holds the operation in front of Linear_0; the last row is [Linear_out, Softmax]. Per row it builds

* a topology vector ``[BN, Dropout, in_features, out_features, is_ReLU, is_Softmax, is_Tanh, is_Sigmoid]``;
* per output neuron of the row's Linear, 8 statistics of its incoming weights;
* per hidden neuron, the same 8 statistics of its post-activation outputs over a data sample;

and pads everything to ``R = feature_rows`` rows (paper 10) and ``F = feature_width`` neurons (paper 1000); a layer
wider than F is seen through F of its neurons, evenly spaced (`compact_neurons`).
The 8 statistics, in order (`STATISTICS`): mean, population std, biased skewness, biased Fisher excess kurtosis,
min, max, L1 norm, L2 norm. A constant input gets skewness 0 and kurtosis -3, as scipy 1.4 returned (§3.3);
modern scipy returns NaN, which would poison the agent.

Here the networks are masked and padded (`neon_jax.nets`). The original's layers are dense, so a statistic
vector lists the layer's neurons in order and then zeros; masks here may be non-prefix (a "keep the best neurons"
pruning leaves arbitrary neurons alive), so every per-neuron vector is *compacted*: alive neurons first, in their
original order, then zero padding. Statistics only ever see alive inputs and real (row-weight > 0) samples.

Everything is a pure function of arrays, jittable with traced depth / masks / layer row (`dims`, `preset`,
`F`, `R`, `train` are static) and vmappable over a population (leading axis on variables, arch, samples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from neon_jax import nets
from neon_jax.nets import Arch, Hints, MaskedMLP, NetDims
from neon_jax.presets import ACT_RELU, ACT_SIGMOID, ACT_TANH, PRE_BATCHNORM, PRE_DROPOUT, Preset

STATISTICS = ("mean", "std", "skewness", "kurtosis", "min", "max", "l1", "l2")
TOPOLOGY_COLUMNS = ("batchnorm", "dropout", "in_features", "out_features", "is_relu", "is_softmax", "is_tanh",
                    "is_sigmoid")

# A spread this small relative to the mean (std below ~16 float32 ulps of the mean) is rounding noise, not
# signal: treat the input as constant (skewness 0, kurtosis -3) instead of reporting the shape of the noise.
# Relative, not absolute, so that small-scale data (tiny weights) keep their statistics: skewness and kurtosis
# are scale-invariant, and so is this test. Exactly constant inputs are caught separately (min == max).
_REL_VAR_CONSTANT = 1e-12
# sklearn's StandardScaler leaves a column unscaled (only centred) when its std is below 10 float64 epsilons.
_SKLEARN_TINY_SCALE = 10 * float(np.finfo(np.float64).eps)


@struct.dataclass
class Observation:
    """The normalised NEON state as the agent consumes it (neon_spec.md §3.5, §3.6). Add a leading axis for a batch.

    Attributes:
      net_topology: (R, 8) topology map, each column standardised over the R rows (padding rows included).
      net_activations: (8, R, F) activation-statistics map, each plane standardised per column over the rows.
      net_weights: (8, R, F) weight-statistics map, normalised like `net_activations`.
      layer_topology: (8,) row `layer_row` of `net_topology`.
      layer_activations: (8, F) raw activation statistics of row `layer_row`, standardised per column across the
        8 statistics (unusual, but what the original does, §12 A6).
      layer_weights: (8, F) raw weight statistics of row `layer_row`, normalised like `layer_activations`.
      progress: (PROGRESS_FEATURES,) beyond the paper: where the episode stands (accuracy change so far against
        tau, tau, steps taken, parameters left; see `progress_features`). The environment fills it; the
        original's agent never reads it (`AgentConfig.observe_progress` off). None outside an environment.
    """

    net_topology: jax.Array
    net_activations: jax.Array
    net_weights: jax.Array
    layer_topology: jax.Array
    layer_activations: jax.Array
    layer_weights: jax.Array
    progress: jax.Array | None = None


PROGRESS_FEATURES = 8


def zeros_observation(preset: Preset) -> Observation:
    """An all-zero `Observation` of the preset's shapes (R = feature_rows, F = feature_width), progress included."""
    R, F = preset.feature_rows, preset.feature_width
    z = lambda shape: np.zeros(shape, np.float32)  # noqa: E731  (host zeros: no one-op program per shape)
    return Observation(net_topology=z((R, 8)), net_activations=z((8, R, F)), net_weights=z((8, R, F)),
                       layer_topology=z((8,)), layer_activations=z((8, F)), layer_weights=z((8, F)),
                       progress=z((PROGRESS_FEATURES,)))


def progress_features(acc, acc0, tau, step, episode_length, n_params, n_params0) -> jax.Array:
    """What the original state cannot show (beyond the paper): how far the episode has come.

    The cubic reward turns on the cumulative accuracy change against tau (§5.1), which no NEON feature
    carries, so the original agent cannot tell when it has used up its tolerance. Features, all O(1):
    accuracy change in tens of points; tolerance left as a fraction of tau, (delta + tau) / max(tau, 1),
    clipped to [-5, 5] (1 = untouched, 0 = at the limit, < 0 beyond); beyond-tolerance flag; log1p(tau) /
    log1p(100); share of the episode's steps taken; parameters left / original parameters; above-original
    flag (delta > 0); tanh(delta).

    The last two resolve what the reward's other branch turns on: a cut is paid rho^3 when the accuracy ends
    strictly above the original and only rho just below it, and in tens of points that boundary is a change
    of 0.01 in the first feature, too fine for a freshly initialised network to find in a few hundred updates.
    """
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    tau = f32(tau)
    delta = 100.0 * (f32(acc) - f32(acc0))
    return jnp.stack([
        delta / 10.0,
        jnp.clip((delta + tau) / jnp.maximum(tau, 1.0), -5.0, 5.0),
        (delta < -tau).astype(jnp.float32),
        jnp.log1p(tau) / jnp.log1p(100.0),
        f32(step) / jnp.maximum(f32(episode_length), 1.0),
        f32(n_params) / jnp.maximum(f32(n_params0), 1.0),
        (delta > 0).astype(jnp.float32),
        jnp.tanh(delta),
    ])


# ----------------------------------------------------------------------------------------------------------
# Small pure helpers.


def weighted_statistics(x: jax.Array, weight: jax.Array) -> jax.Array:
    """The 8 NEON statistics of each column of `x` over its rows, with per-row weights.

    Args:
      x: (..., N, C) values; column c is one neuron, row n one observation (an incoming weight or a sample).
      weight: (..., N) non-negative row weights broadcastable against x's leading axes; 0 = not an observation.
    Returns:
      (..., 8, C) float32: mean, population std, skewness (biased), excess kurtosis (Fisher, biased), min, max,
      L1 norm sum(w|x|), L2 norm sqrt(sum(w x^2)). A constant column gets std 0, skewness 0, kurtosis -3 (scipy 1.4).
      A column with no observation (total weight 0) is all zeros.
    """
    w = weight.astype(jnp.float32)[..., :, None]
    present = w > 0
    x = jnp.where(present, x.astype(jnp.float32), 0.0)  # garbage (even inf) in non-observations never leaks
    total = w.sum(-2)
    has_rows = total > 0
    n = jnp.where(has_rows, total, 1.0)
    # Compensated two-pass centring: the float32 mean is off by up to half an ulp, which for a neuron whose
    # spread is tiny next to its mean (a saturated tanh/sigmoid) would bias the odd moments. The residual mean
    # `shift` is small, so subtracting it separately centres to the precision of the deviations themselves.
    rough_mean = (w * x).sum(-2) / n
    d = x - rough_mean[..., None, :]
    shift = (w * d).sum(-2) / n
    d = d - shift[..., None, :]
    mean = rough_mean + shift
    d2 = d * d
    m2 = (w * d2).sum(-2) / n
    m3 = (w * d2 * d).sum(-2) / n
    m4 = (w * d2 * d2).sum(-2) / n
    lo = jnp.min(jnp.where(present, x, jnp.inf), axis=-2)
    hi = jnp.max(jnp.where(present, x, -jnp.inf), axis=-2)
    constant = (lo == hi) | (m2 <= _REL_VAR_CONSTANT * mean * mean)
    safe_m2 = jnp.where(constant, 1.0, m2)
    std = jnp.where(constant, 0.0, jnp.sqrt(safe_m2))
    skew = jnp.where(constant, 0.0, m3 / (safe_m2 * jnp.sqrt(safe_m2)))
    kurt = jnp.where(constant, -3.0, m4 / (safe_m2 * safe_m2) - 3.0)
    l1 = (w * jnp.abs(x)).sum(-2)
    l2 = jnp.sqrt((w * x * x).sum(-2))
    stats = jnp.stack([mean, std, skew, kurt, lo, hi, l1, l2], axis=-2)
    return jnp.where(has_rows[..., None, :], stats, 0.0)


def compact_neurons(values: jax.Array, mask: jax.Array, width: int) -> jax.Array:
    """Moves alive neurons to the front (original order kept), zeroes the rest, pads to `width` columns.

    This is what the original's dense layers look like: statistic vectors list the layer's neurons and then
    zero padding. A slice with more than `width` alive neurons (a layer wider than the state maps) is seen
    through `width` of them, evenly spaced over its alive neurons in order (positions floor(i * n / width)), so the
    maps of a 512-wide layer read like those of a full `width`-wide one.

    Args: values (..., C); mask (..., C) with 1 = alive, broadcastable against values (e.g. (L, 1, C) for
    (L, 8, C) statistics). Returns (..., width).
    """
    alive = mask > 0
    # Stable sort on "is dead" keeps alive neurons in their original order.
    order = jnp.argsort(~alive, axis=-1, stable=True)
    gathered = jnp.take_along_axis(values, order, axis=-1)
    gathered = jnp.where(jnp.take_along_axis(alive, order, axis=-1), gathered, 0.0)
    c = values.shape[-1]
    if c <= width:
        pad = [(0, 0)] * (values.ndim - 1) + [(0, width - c)]
        return jnp.pad(gathered, pad)
    n = jnp.broadcast_to(alive, jnp.broadcast_shapes(alive.shape, values.shape)).sum(-1, keepdims=True)
    i = jnp.arange(width)
    pick = jnp.where(n > width, (i * n) // width, i)  # (..., width): every column at most width alive
    return jnp.take_along_axis(gathered, pick, axis=-1)


def standardise(x: jax.Array, axis: int) -> jax.Array:
    """sklearn's StandardScaler along `axis` (population std).

    A constant slice becomes exactly 0 (sklearn centres it; a float32 mean may miss the value by an ulp, so the
    constant case is detected exactly rather than by the centred value). A slice whose std is below sklearn's
    threshold is only centred, as sklearn does.
    """
    mean = x.mean(axis, keepdims=True)
    centred = x - mean
    std = jnp.sqrt((centred * centred).mean(axis, keepdims=True))
    constant = x.max(axis, keepdims=True) == x.min(axis, keepdims=True)
    scale = jnp.where(std < _SKLEARN_TINY_SCALE, 1.0, std)
    return jnp.where(constant, 0.0, centred / scale)


def _place_rows(hidden: jax.Array, output_row: jax.Array, depth: jax.Array, n_rows: int) -> jax.Array:
    """Rows 0..depth-1 from `hidden` (max_hidden, ...), row `depth` = `output_row`, zeros after; (n_rows, ...)."""
    max_hidden = hidden.shape[0]
    if n_rows < max_hidden + 1:
        raise ValueError(f"feature rows ({n_rows}) must hold max_hidden + 1 = {max_hidden + 1} rows")
    padded = jnp.pad(hidden, [(0, n_rows - max_hidden)] + [(0, 0)] * (hidden.ndim - 1))
    row = jnp.arange(n_rows).reshape((n_rows,) + (1,) * (hidden.ndim - 1))
    return jnp.where(row == depth, output_row[None], jnp.where(row < depth, padded, 0.0))


def _check_key(train: bool, key) -> None:
    if train and key is None:
        raise ValueError("train-mode activation statistics need a dropout key")


# ----------------------------------------------------------------------------------------------------------
# The three raw maps.


def topology_map(arch: Arch, dims: NetDims, n_rows: int = 10) -> jax.Array:
    """Raw topology map (neon_spec.md §3.1): (n_rows, 8) float32, unscaled.

    Row j < depth is hidden layer j, row depth is the output layer, later rows are zeros. Columns
    [BN, Dropout, in_features, out_features, is_ReLU, is_Softmax, is_Tanh, is_Sigmoid]. A row's BN/Dropout flags
    come from the operation in front of the *next* Linear (it belongs to this row, §2.2), and for row 0 also from
    the operation in front of Linear_0. in/out are real sizes: input features and alive neurons.
    """
    max_hidden = dims.max_hidden
    widths = arch.widths
    layer = jnp.arange(max_hidden)
    live = layer < arch.depth
    pre = arch.pre_layer
    next_live = jnp.concatenate([live[1:], jnp.zeros((1,), bool)])
    next_pre = jnp.concatenate([pre[1:], jnp.zeros((1,), pre.dtype)])

    def flag(code):
        return (next_live & (next_pre == code)) | ((layer == 0) & (pre[0] == code))

    act = arch.activation
    fan_in = jnp.concatenate([arch.n_features[None], widths[:-1]])
    hidden = jnp.stack([
        flag(PRE_BATCHNORM), flag(PRE_DROPOUT), fan_in, widths,
        act == ACT_RELU, jnp.zeros_like(live), act == ACT_TANH, act == ACT_SIGMOID,
    ], axis=-1).astype(jnp.float32) * live[:, None]
    last_width = widths[arch.depth - 1]
    output = jnp.stack([0, 0, last_width, arch.n_classes, 0, 1, 0, 0]).astype(jnp.float32)
    return _place_rows(hidden, output, arch.depth, n_rows)


def weight_statistics(variables: dict, arch: Arch, dims: NetDims, F: int, R: int) -> jax.Array:
    """Raw weight-statistics map (neon_spec.md §3.2): (8, R, F) float32.

    Row j < depth: hidden Linear j; row depth: the output Linear; later rows zero. Column i of a row is the i-th
    alive output neuron (compacted), statistics over its incoming weights from alive inputs only (real input
    features for Linear_0, alive neurons of the previous layer otherwise).
    """
    params = variables["params"]
    feature_mask = arch.feature_mask(dims.d_max)
    kernels = nets.kernels(params, dims.max_hidden)
    per_layer = [weighted_statistics(kernels[0], feature_mask)]  # (8, width(0))
    for j in range(1, dims.max_hidden):
        per_layer.append(weighted_statistics(kernels[j], nets.fit_width(arch.mask[j - 1], dims.fan_in(j))))
    per_layer = [nets.fit_width(stats, dims.w_max) for stats in per_layer]  # layers padded to their own widths
    hidden = compact_neurons(jnp.stack(per_layer), arch.mask[:, None, :], F)  # (max_hidden, 8, F)
    last_mask = nets.fit_width(arch.mask[arch.depth - 1], dims.fan_in(dims.max_hidden))
    output = weighted_statistics(kernels[-1], last_mask)  # (8, k_max)
    output = compact_neurons(output, arch.class_mask(dims.k_max)[None, :], F)
    return jnp.moveaxis(_place_rows(hidden, output, arch.depth, R), 0, 1)


def hidden_activations(variables: dict, arch: Arch, dims: NetDims, x: jax.Array, row_weight: jax.Array,
                       train: bool = False, key: jax.Array | None = None, dropout_rate: float = 0.5,
                       hints: Hints | None = None):
    """One forward pass of the masked network; returns (hidden (max_hidden, S, w_max), variables after).

    Eval mode uses BN running statistics and no dropout. `train=True` is the original's reset quirk (§12 B6):
    dropout on (needs `key`) and BN on the batch statistics of the rows with `row_weight` > 0, which also moves
    the BN running statistics by momentum 0.1; the returned variables carry that update (unchanged in eval mode).
    `hints` (optional): `nets.Hints` about the whole vmapped batch (layers past its depth bound are skipped).
    """
    _check_key(train, key)
    model = MaskedMLP(dims=dims, dropout_rate=dropout_rate)
    if train:
        (_, hidden), updates = model.apply(variables, x, arch, train=True, row_weight=row_weight,
                                           return_hidden=True, rngs={"dropout": key}, mutable=["batch_stats"],
                                           hints=hints)
        return hidden, {**variables, **updates}
    _, hidden = model.apply(variables, x, arch, train=False, row_weight=row_weight, return_hidden=True,
                            hints=hints)
    return hidden, variables


def activation_statistics(variables: dict, arch: Arch, dims: NetDims, x: jax.Array, row_weight: jax.Array,
                          F: int, R: int, train: bool = False, key: jax.Array | None = None, *,
                          dropout_rate: float = 0.5, return_variables: bool = False, hints: Hints | None = None):
    """Raw activation-statistics map (neon_spec.md §3.3): (8, R, F) float32.

    Args:
      x: (S, d_max) the feature-extraction sample; row_weight: (S,) 1 for real rows, 0 for padding rows.
      train / key / dropout_rate: see `hidden_activations` (default eval mode).
      return_variables: also return the variables after the pass (BN running statistics moved in train mode).
      hints: optional `nets.Hints` about the whole vmapped batch: layers past its depth bound are skipped
        (forward pass and statistics; their rows are zeros either way).
    Row j < depth: post-activation outputs of hidden layer j, statistics per alive neuron (compacted) over the
    weighted rows. The output row and rows past it are zeros (the original hooks every row but the last).
    """
    hidden, new_variables = hidden_activations(variables, arch, dims, x, row_weight, train, key, dropout_rate,
                                               hints)
    depth_bound = None if hints is None else hints.depth_bound
    if depth_bound is None:
        stats = weighted_statistics(hidden, row_weight[None, :])  # (max_hidden, 8, w_max)
    else:
        per_layer = [weighted_statistics(hidden[0], row_weight)]
        for j in range(1, dims.max_hidden):
            per_layer.append(jax.lax.cond(j < depth_bound, weighted_statistics,
                                          lambda h, _: jnp.zeros((8, h.shape[-1]), jnp.float32),
                                          hidden[j], row_weight))
        stats = jnp.stack(per_layer)
    stats = compact_neurons(stats, arch.mask[:, None, :], F)
    maps = jnp.moveaxis(_place_rows(stats, jnp.zeros_like(stats[0]), arch.depth, R), 0, 1)
    return (maps, new_variables) if return_variables else maps


# ----------------------------------------------------------------------------------------------------------
# The sample.


def activation_sample(key: jax.Array, x: jax.Array, y: jax.Array, n_rows, size: int,
                      n_classes: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Draws the activation-statistics sample (neon_spec.md §3.4): returns (idx (size,) int32, row_weight (size,)).

    Args:
      key: PRNG key; the original redraws at every step with an unseeded RNG (§12 B8), so pass a fresh key.
      x: (n_max, ...) padded data (only its row count is used); y: (n_max,) int labels 0..K-1 of the rows.
      n_rows: () int, real rows (traced is fine); rows >= n_rows are padding and never drawn.
      size: sample size (preset.activation_sample, paper 3000).
      n_classes: optional static bound on K (default n_max, always enough since K <= n_rows).

    If n_rows <= size, every real row is used: idx = 0..size-1 (clipped into range), weight 1 for the first
    n_rows. Otherwise a label-stratified random subset of exactly `size` distinct real rows, weight 1, in random
    order. Per-class counts follow sklearn's stratified split (`_approximate_mode`): floor(size * n_c / n_rows)
    for each class, the missing rows going one each to the classes with the largest fractional parts, ties
    broken at random; so every class gets floor or ceil of its proportional share. The shares are computed in
    float32, so for n_rows beyond ~10^5 a tie between fractional parts may be resolved differently from exact
    arithmetic (still within +-1 of proportional).
    """
    n_max = x.shape[0]
    positions = jnp.arange(size)
    n_rows = jnp.asarray(n_rows, jnp.int32)
    all_idx = jnp.minimum(positions, n_max - 1).astype(jnp.int32)
    all_weight = (positions < n_rows).astype(jnp.float32)
    if size >= n_max:  # a subsample is impossible: n_rows <= n_max <= size
        return all_idx, all_weight

    n_bins = int(n_classes) if n_classes is not None else n_max
    k_rows, k_ties, k_perm = jax.random.split(key, 3)
    rows = jnp.arange(n_max)
    real = rows < n_rows
    label = jnp.where(real, jnp.clip(y.astype(jnp.int32), 0, n_bins - 1), n_bins)  # padding sorts last
    counts = jnp.zeros(n_bins, jnp.int32).at[label].add(1, mode="drop")

    # Per-class draw counts (sklearn's _approximate_mode).
    share = counts.astype(jnp.float32) * (size / jnp.maximum(n_rows, 1).astype(jnp.float32))
    floored = jnp.minimum(jnp.floor(share).astype(jnp.int32), counts)
    missing = size - floored.sum()
    fraction = jnp.where(counts > floored, share - floored, -1.0)  # full classes can take no more
    class_order = jnp.lexsort((jax.random.uniform(k_ties, (n_bins,)), -fraction))
    class_rank = jnp.zeros(n_bins, jnp.int32).at[class_order].set(jnp.arange(n_bins, dtype=jnp.int32))
    take = floored + ((class_rank < missing) & (counts > floored)).astype(jnp.int32)

    # Within each class, the rows with the smallest random keys are drawn (uniform without replacement).
    row_order = jnp.lexsort((jax.random.uniform(k_rows, (n_max,)), label))
    sorted_label = label[row_order]
    safe_label = jnp.minimum(sorted_label, n_bins - 1)
    class_start = jnp.cumsum(counts) - counts
    rank_in_class = rows - class_start[safe_label]
    chosen = (sorted_label < n_bins) & (rank_in_class < take[safe_label])
    # Chosen rows first; should float rounding ever leave fewer than `size`, real unchosen rows fill up, so the
    # sample is always `size` distinct real rows.
    priority = jnp.where(chosen, 0, jnp.where(sorted_label < n_bins, 1, 2))
    picked = row_order[jnp.argsort(priority, stable=True)[:size]]
    sub_idx = jax.random.permutation(k_perm, picked).astype(jnp.int32)

    small = n_rows <= size
    return jnp.where(small, all_idx, sub_idx), jnp.where(small, all_weight, 1.0)


# ----------------------------------------------------------------------------------------------------------
# The state.


def raw_state(variables: dict, arch: Arch, dims: NetDims, preset: Preset, x_sample: jax.Array,
              row_weight: jax.Array, train: bool = False, key: jax.Array | None = None, *,
              return_variables: bool = False, hints: Hints | None = None):
    """Unnormalised maps: (topology (R, 8), activations (8, R, F), weights (8, R, F)) with R, F from `preset`.

    With `return_variables`, returns ``((topology, activations, weights), variables_after)`` (see
    `activation_statistics`).
    """
    R, F = preset.feature_rows, preset.feature_width
    _check_key(train, key)  # fail before any work is traced
    topology = topology_map(arch, dims, R)
    weights = weight_statistics(variables, arch, dims, F, R)
    activations, new_variables = activation_statistics(
        variables, arch, dims, x_sample, row_weight, F, R, train, key,
        dropout_rate=preset.dropout_rate, return_variables=True, hints=hints)
    maps = (topology, activations, weights)
    return (maps, new_variables) if return_variables else maps


def normalise_state(topology: jax.Array, act_map: jax.Array, weight_map: jax.Array, layer_row) -> Observation:
    """The agent-side normalisation (neon_spec.md §3.5) of raw maps, for the row `layer_row` (traced int).

    topology (R, 8) -> StandardScaler per column over rows; act_map / weight_map (8, R, F) -> each plane
    standardised per column over rows; the layer maps are the RAW row `layer_row` (8, F), standardised per column
    across the 8 statistics; the layer topology is row `layer_row` of the normalised topology. Padding rows and
    columns take part in every normalisation, as in the original. Which row is current (including the §12 B9
    wrap quirk) is the environment's decision; this only slices.
    """
    net_topology = standardise(topology, axis=0)
    layer_row = jnp.asarray(layer_row, jnp.int32)
    layer_act = jnp.take(act_map, layer_row, axis=1)
    layer_w = jnp.take(weight_map, layer_row, axis=1)
    return Observation(
        net_topology=net_topology.astype(jnp.float32),
        net_activations=standardise(act_map, axis=1).astype(jnp.float32),
        net_weights=standardise(weight_map, axis=1).astype(jnp.float32),
        layer_topology=jnp.take(net_topology, layer_row, axis=0).astype(jnp.float32),
        layer_activations=standardise(layer_act, axis=0).astype(jnp.float32),
        layer_weights=standardise(layer_w, axis=0).astype(jnp.float32),
    )


def observe(variables: dict, arch: Arch, dims: NetDims, preset: Preset, x_sample: jax.Array,
            row_weight: jax.Array, layer_row, train: bool = False, key: jax.Array | None = None, *,
            return_variables: bool = False, hints: Hints | None = None):
    """The full NEON observation of one network for the current row: `raw_state` then `normalise_state`.

    Args:
      variables: the network's ``{"params", "batch_stats"}``; arch: its `Arch`; dims, preset: static.
      x_sample: (S, d_max) sample rows (see `activation_sample`); row_weight: (S,) 0 for padding rows.
      layer_row: () int, the 0-based row of the current layer (the environment's pointer minus one).
      train / key: the reset quirk (§12 B6), see `hidden_activations`.
      return_variables: also return the variables after the forward pass (BN running stats nudged in train mode).
      hints: optional `nets.Hints` about the whole vmapped batch (see `nets.MaskedMLP`).
    Returns:
      `Observation` (or ``(Observation, variables_after)``).
    """
    maps, new_variables = raw_state(variables, arch, dims, preset, x_sample, row_weight, train, key,
                                    return_variables=True, hints=hints)
    obs = normalise_state(*maps, layer_row)
    return (obs, new_variables) if return_variables else obs


__all__ = [
    "PROGRESS_FEATURES", "STATISTICS", "TOPOLOGY_COLUMNS", "Observation", "activation_sample", "activation_statistics",
    "compact_neurons", "hidden_activations", "normalise_state", "observe", "progress_features", "raw_state", "standardise",
    "topology_map", "weight_statistics", "weighted_statistics", "zeros_observation",
]
