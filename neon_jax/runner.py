"""The host runner: a pruning program over every network of a pool, in batches, to rows of one format.

    result = run(program, pool, program_args, seed=0, batch_size=32)
    result.rows            # one dict per network, keys `ROW_FIELDS` (+ the caller's `extra`)

A program is a jitted ``program(key, env_params, program_args) -> rollout.Outcome`` over a batch of
environments: a policy's roll-out (`rollout.make_policy_program`, `agent.policy_program`) or a baseline
(`baselines.program`). Each batch is compiled ahead of time once per (program, shapes) in a process, so the
seconds in the rows are run time; compile seconds are reported apart. Batch b of a run uses the key
``fold_in(PRNGKey(seed), first index of b)``; a short last batch is padded by repeating its last network.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from neon_jax.pool import EnvPool

ROW_FIELDS = (
    "dataset", "network", "depth", "widths_before", "widths_after", "params_before", "params_after", "compression",
    "test_acc_before", "test_acc_after", "acc_change_points", "val_acc0", "val_acc", "return", "steps", "actions",
    "finetune_epochs", "seconds",
)


@dataclasses.dataclass
class RunResult:
    """Rows (`ROW_FIELDS` + extra), the pruned networks when asked for (host (variables, arch) per row), each
    network's `Outcome.details` (host pytrees; None where the program has none), and the seconds spent compiling
    and running."""

    rows: list[dict]
    networks: list | None
    compile_seconds: float
    run_seconds: float
    details: list = dataclasses.field(default_factory=list)


_COMPILED: dict = {}


def compiled(program, *args):
    """`program` compiled ahead of time for these argument shapes, once per process; (executable, seconds)."""
    shapes = tuple((np.shape(a), str(getattr(a, "dtype", type(a).__name__)))
                   for a in jax.tree_util.tree_leaves(args))
    signature = (program, jax.tree_util.tree_structure(args), shapes)
    if signature in _COMPILED:
        return _COMPILED[signature], 0.0
    t0 = time.perf_counter()
    executable = program.lower(*args).compile()
    _COMPILED[signature] = executable
    return executable, time.perf_counter() - t0


def compiles(program) -> int:
    """How many times `run` has compiled `program` in this process (one per shape of its arguments)."""
    return sum(1 for signature in _COMPILED if signature[0] is program)


def widths_text(widths) -> str:
    """Hidden widths as the rows write them: "48-64-32"."""
    return "-".join(str(int(w)) for w in widths)


def run(program, pool: EnvPool, program_args=None, *, seed: int = 0, batch_size: int = 32, progress: bool = False,
        desc: str = "prune", extra: dict | None = None, keep_networks: bool = False,
        on_stage=None) -> RunResult:
    """Runs `program` over every network of `pool`; one row per network.

    Args:
      program: a jitted ``program(key, env_params, program_args) -> rollout.Outcome``.
      pool: the networks, their data and the tolerance (`EnvPool`).
      program_args: the program's third argument (a policy's parameters, a baseline's setting arrays).
      seed: batch b runs with ``fold_in(PRNGKey(seed), first index of b)``.
      batch_size: networks per compiled call (capped at the pool's size).
      extra: fields added to every row (method, setting, counting, ...).
      keep_networks: also return every pruned network (host arrays).
      on_stage: called with "compile" before the first batch's program is compiled (or loaded from the cache) and
        with "run" before it runs: the main job's progress stages.
    Returns:
      `RunResult`. Row fields: dataset, network (index in its zoo), depth, widths_before / widths_after
      ("48-64-32"), params_before / params_after, compression, test_acc_before / test_acc_after,
      acc_change_points (test, points), val_acc0 / val_acc (the internal validation split), return (the
      episode's reward; 0 for one-shot methods), steps, actions (the episode's action indices as digits),
      finetune_epochs, seconds (run time per network of the batch, compile excluded).
    """
    n = len(pool)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = max(1, min(batch_size, n))
    rows, networks, details = [], ([] if keep_networks else None), []
    compile_s = run_s = 0.0
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress):
        idx = np.arange(start, min(start + batch_size, n))
        padded = np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])])
        params = pool.batch(padded)
        key = jax.random.fold_in(jax.random.PRNGKey(seed), start)
        if on_stage is not None and start == 0:
            on_stage("compile")
        executable, seconds = compiled(program, key, params, program_args)
        compile_s += seconds
        if on_stage is not None and start == 0:
            on_stage("run")
        t0 = time.perf_counter()
        out = jax.block_until_ready(executable(key, params, program_args))
        seconds = time.perf_counter() - t0
        run_s += seconds
        rows += outcome_rows(out, [pool.names[i] for i in idx], seconds / len(padded), extra)
        if networks is not None:
            host = jax.device_get((out.variables, out.arch))
            networks += [jax.tree_util.tree_map(lambda a, b=b: a[b], host) for b in range(len(idx))]
        host_details = jax.device_get(out.details)
        details += [None if host_details is None else jax.tree_util.tree_map(lambda a, b=b: a[b], host_details)
                    for b in range(len(idx))]
    return RunResult(rows=rows, networks=networks, compile_seconds=compile_s, run_seconds=run_s, details=details)


def outcome_rows(out, names: list, seconds_per_network: float, extra: dict | None = None) -> list[dict]:
    """The rows of the first ``len(names)`` networks of an `Outcome` (`names`: (dataset, network) pairs)."""
    o = jax.device_get(out)
    rows = []
    depth = np.asarray(o.arch.depth)
    after = np.asarray(o.arch.widths)
    for b, (dataset, network) in enumerate(names):
        d = int(depth[b])
        p0, p1 = int(o.params_before[b]), int(o.params_after[b])
        a0, a1 = float(o.test_acc_before[b]), float(o.test_acc_after[b])
        valid = np.asarray(o.valid[b], bool)
        rows.append({
            "dataset": dataset, "network": int(network), "depth": d,
            "widths_before": widths_text(o.widths_before[b, :d]),
            "widths_after": widths_text(after[b, :d]),
            "params_before": p0, "params_after": p1, "compression": p0 / max(p1, 1),
            "test_acc_before": a0, "test_acc_after": a1, "acc_change_points": 100.0 * (a1 - a0),
            "val_acc0": float(o.val_acc0[b]), "val_acc": float(o.val_acc[b]),
            "return": float((np.asarray(o.reward[b]) * valid).sum()), "steps": int(valid.sum()),
            "actions": "".join(str(int(a)) for a in np.asarray(o.actions[b])[valid]),
            "finetune_epochs": int(o.finetune_epochs[b]), "seconds": seconds_per_network,
            **{name: np.asarray(values[b]).item() for name, values in o.row_extra.items()},
            **(extra or {}),
        })
    return rows


def summarise(rows: list[dict]) -> dict:
    """Mean / median compression and accuracy change, and the fell / held / rose counts (as the paper)."""
    if not rows:
        return {}
    comp = np.array([r["compression"] for r in rows])
    dacc = np.array([r["acc_change_points"] for r in rows])
    return {"networks": len(rows), "compression_mean": float(comp.mean()), "compression_median": float(np.median(comp)),
            "acc_change_mean": float(dacc.mean()), "acc_change_median": float(np.median(dacc)),
            "acc_fell": int((dacc < -1e-9).sum()), "acc_held": int((np.abs(dacc) <= 1e-9).sum()),
            "acc_rose": int((dacc > 1e-9).sum())}
