"""Lookahead pruning (Park et al., ICLR 2020), one-shot and layer-wise: with k = `setting`, every Linear but the
last loses the fraction ``1 - 0.5^k`` of its weights and the output Linear ``1 - 0.75^k`` (the original's
``1 - (1 - r)^k``, r = 0.5 / 0.25), by the lookahead score (`lap_scores`); at least one weight per Linear is kept
(k = 10 would otherwise empty layers of fewer than ~500 weights)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from neon_jax import nets
from neon_jax.presets import PRE_BATCHNORM
from neon_jax.pruning.masks import layerwise_masks, unstructured_cut
from neon_jax.pruning.method import PruningMethod, register

LAP_STEPS = (1, 3, 10)  # LAP 1 / 3 / 10 of the paper's tables (§10.1)
LAP_RATIO_HIDDEN, LAP_RATIO_OUTPUT = 0.5, 0.25


def lap_ratios(k: int) -> tuple[float, float]:
    """(hidden, output) per-layer prune ratios of LAP with k steps: ``1 - (1 - r)^k``."""
    return 1.0 - (1.0 - LAP_RATIO_HIDDEN) ** k, 1.0 - (1.0 - LAP_RATIO_OUTPUT) ** k


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
    col_sq = [(k ** 2).sum(0) for k in kernels[:H]]  # (width(j),): incoming weights of each neuron of layer j
    row_sq = [(k ** 2).sum(1) for k in kernels]  # outgoing weights of each input of Linear j
    scores = []
    for i in range(H):
        prev = jnp.ones(kernels[i].shape[0]) if i == 0 else col_sq[i - 1] * bn[i] ** 2
        nxt_out = nets.fit_width(row_sq[H], dims.width(i))  # past the depth layer i's neurons feed the output
        if i + 1 < H:
            nxt = jnp.where(i + 1 < arch.depth, row_sq[i + 1] * bn[i + 1] ** 2, nxt_out)
        else:
            nxt = nxt_out
        scores.append(kernels[i] ** 2 * prev[:, None] * nxt[None, :])
    prev_out = jnp.stack([nets.fit_width(c, dims.fan_in(H)) for c in col_sq])[arch.depth - 1]
    scores.append(kernels[H] ** 2 * prev_out[:, None])
    return scores


class LAP(PruningMethod):
    name = "lap"
    description = "lookahead pruning (Park et al. 2020), layer-wise 1-(1-r)^k, r = 0.5 / 0.25 (last); setting = k"
    counting = "unstructured"
    sweep = LAP_STEPS
    default = 1

    def check(self, setting):
        if setting is None:
            return self.default
        if isinstance(setting, bool) or not isinstance(setting, (int, np.integer, float)) or \
                float(setting) != int(setting) or not 1 <= int(setting) <= 100:
            raise ValueError(f"lap's setting is the number of lookahead steps k, an integer in 1..100, got {setting!r}")
        return int(setting)

    def arrays(self, setting, dims):
        hidden, output = lap_ratios(setting)
        return {"ratio_hidden": jnp.float32(hidden), "ratio_output": jnp.float32(output)}

    def prune(self, key, p, setting, ctx):
        masks = layerwise_masks(lap_scores(p.variables, p.arch, ctx.dims), nets.real_weight_masks(p.arch, ctx.dims),
                                setting["ratio_hidden"], setting["ratio_output"])
        return unstructured_cut(p.variables, p.arch, masks, ctx.dims)


register(LAP())
