"""How fast a network runs: NumPy batch latency (the prune report's figure) and the network as a jitted JAX
function."""

from __future__ import annotations

import time

import numpy as np

from neon_jax.nets import DenseNetwork


def numpy_latency(net: DenseNetwork, batch: int = 256, budget_s: float = 0.05, min_runs: int = 5,
                  seed: int = 0) -> float:
    """Median seconds of one eval forward pass (`DenseNetwork.logits`, NumPy) on a random batch, after a warm-up;
    runs until `budget_s` is spent (at least `min_runs` times). Cheap: the prune report's latency figure."""
    x = np.random.default_rng(seed).random((batch, net.n_features), dtype=np.float32)
    net.logits(x)  # warm-up
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        net.logits(x)
        times.append(time.perf_counter() - t0)
        if len(times) >= 10_000:
            break
    return float(np.median(times))


def latency_report(original: DenseNetwork, pruned: DenseNetwork, batch: int = 256, rounds: int = 3,
                   budget_s: float = 0.03) -> dict:
    """Measured NumPy batch-`batch` latency of both networks (interleaved rounds, best median) and the speedup."""
    before, after = [], []
    for r in range(rounds):
        before.append(numpy_latency(original, batch, budget_s, seed=r))
        after.append(numpy_latency(pruned, batch, budget_s, seed=r))
    t0, t1 = min(before), min(after)
    return {f"latency_b{batch}_numpy_ms_before": 1e3 * t0, f"latency_b{batch}_numpy_ms_after": 1e3 * t1,
            f"speedup_b{batch}_numpy": t0 / t1}


def jax_forward(net: DenseNetwork, probabilities: bool = True):
    """The compacted network as a jitted JAX function: returns ``(fn, params)`` with ``fn(params, x)`` giving
    (N, n_classes) softmax probabilities (or logits). Batch-norm is folded into a per-feature affine map, as the
    masked network computes it; Dropout is the identity (eval mode). One compile per input shape."""
    import jax
    import jax.numpy as jnp

    kinds, params = [], []
    for l in net.layers:
        kind = l["kind"]
        if kind == "linear":
            params.append((jnp.asarray(l["kernel"]), jnp.asarray(l["bias"])))
        elif kind == "batchnorm":
            a = np.asarray(l["scale"], np.float32) / np.sqrt(np.asarray(l["var"], np.float32) + np.float32(l["eps"]))
            params.append((jnp.asarray(a), jnp.asarray(np.asarray(l["bias"], np.float32) - l["mean"] * a)))
        elif kind in ("dropout", "softmax"):
            continue
        else:
            params.append(())
        kinds.append(kind)
    kinds = tuple(kinds)
    activations = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}

    @jax.jit
    def fn(params, x):
        h = x
        for kind, p in zip(kinds, params):
            if kind == "linear":
                h = h @ p[0] + p[1]
            elif kind == "batchnorm":
                h = h * p[0] + p[1]
            else:
                h = activations[kind](h)
        return jax.nn.softmax(h, axis=-1) if probabilities else h

    return fn, params
