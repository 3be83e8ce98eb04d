"""The host runner: a pruning method over every network of a pool, in batches, to rows of one format.

    result = run(method, pool, seed=0, batch_size=32)
    result.rows            # one dict per network, keys `ROW_FIELDS` (+ the caller's `extra`)

A method is ``method(dims) -> (program, program_args)``: the jitted ``program(keys, env_params, program_args) ->
rollout.Outcome`` of a batch of environments at the padded shape `dims` (a policy's roll-out,
`rollout.make_policy_program` / `agent.policy_program`; a candidate search, `select.candidates_program`; a
baseline, `pruning.program`) and its third argument. The runner splits the pool into shape groups
(`nets.shape_groups`: the networks' width buckets and depths) and runs each group at its own shape, so narrow networks
do not pay for the widest one's padding. Each group's batches are compiled ahead of time once per (program,
shapes) in a process, so the seconds in the rows are run time; compile seconds are reported apart. Network i of
the pool runs with the key ``fold_in(PRNGKey(seed), i)`` whatever its group, batch or padding, so its row
depends only on the seed (up to float rounding); a short last batch is padded by repeating its last network.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from neon_jax import compile_cache, nets, programs, sharding
from neon_jax.pool import EnvPool

ROW_FIELDS = (
    "dataset", "network", "depth", "widths_before", "widths_after", "params_before", "params_after", "compression",
    "test_acc_before", "test_acc_after", "acc_change_points", "val_acc0", "val_acc", "return", "steps", "actions",
    "finetune_epochs", "seconds",
)

Method = Callable[[nets.NetDims], tuple[Any, Any]]


@dataclasses.dataclass
class RunResult:
    """Rows (`ROW_FIELDS` + extra), the pruned networks when asked for (host (variables, arch) per row, at the
    pool's padded shape), each network's `Outcome.details` (host pytrees at its group's shape; None where the
    program has none), the seconds spent compiling and running, and the shape groups the run went through (one
    dict each: w_max, max_hidden, layer_widths (each hidden layer's padded width), networks, batches,
    compile_seconds, run_seconds)."""

    rows: list[dict]
    networks: list | None
    compile_seconds: float
    run_seconds: float
    details: list = dataclasses.field(default_factory=list)
    groups: list = dataclasses.field(default_factory=list)

    @property
    def compiles(self) -> int:
        """Programs this run compiled (or loaded from the process's cache): one per shape group."""
        return len(self.groups)


_COMPILED = programs.ProgramCache("runner executables", maxsize=32)


def compiled(program, *args, mesh=None):
    """`program` compiled ahead of time for these argument shapes (and, for arguments placed on a `mesh` of several
    devices, that mesh), kept in a bounded process-wide cache (`programs`); (executable, seconds spent compiling:
    0 when it was there)."""
    shapes = tuple((np.shape(a), str(getattr(a, "dtype", type(a).__name__)))
                   for a in jax.tree_util.tree_leaves(args))
    signature = (program, jax.tree_util.tree_structure(args), shapes)
    if sharding.spreads(mesh):
        signature += (tuple(d.id for d in mesh.devices.flat),)
    if signature in _COMPILED:
        return _COMPILED.get(signature, None), 0.0
    t0 = time.perf_counter()
    executable = _COMPILED.get(signature, lambda: compile_cache.aot_compile(program, args))
    return executable, time.perf_counter() - t0


def compiles(program) -> int:
    """How many executables of `program` (one per shape of its arguments) the runner's cache holds now."""
    return sum(1 for signature in _COMPILED.keys() if signature[0] is program)


def widths_text(widths) -> str:
    """Hidden widths as the rows write them: "48-64-32"."""
    return "-".join(str(int(w)) for w in widths)


def network_keys(seed: int, indices) -> jax.Array:
    """(len(indices), 2) the PRNG keys of pool entries `indices` in a run with `seed`: ``fold_in(PRNGKey(seed), i)``
    (one small program; eagerly, each of its operations would compile one)."""
    return _network_keys(np.int32(seed), np.asarray(indices, np.uint32))  # PRNGKey reads a seed as int32


@jax.jit
def _network_keys(seed, indices) -> jax.Array:
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(indices)


def run(method: Method, pool: EnvPool, *, seed: int = 0, batch_size: int = 32, buckets: bool = True,
        progress: bool = False, desc: str = "prune", extra: dict | None = None, keep_networks: bool = False,
        on_stage=None, mesh=None, split_batch: bool = True) -> RunResult:
    """Runs `method` over every network of `pool`, one shape group after the other; one row per network.

    Args:
      method: ``method(dims) -> (program, program_args)``, the jitted ``program(keys, env_params, program_args)
        -> rollout.Outcome`` at the padded shape `dims` and its third argument (a policy's parameters, a
        baseline's setting arrays).
      pool: the networks, their data and the tolerance (`EnvPool`).
      seed: network i of the pool runs with ``fold_in(PRNGKey(seed), i)`` (`network_keys`).
      batch_size: networks per compiled call (capped at a group's size).
      buckets: run each shape group at its own shape (`nets.shape_groups`); False runs every network at the pool's
        padded shape (one program; the same rows up to float rounding).
      extra: fields added to every row (method, setting, counting, ...).
      keep_networks: also return every pruned network (host arrays at the pool's padded shape).
      on_stage: called with "compile" before the first batch's program is compiled (or loaded from the cache) and
        with "run" before it runs: the main job's progress stages.
      mesh: the devices each batch is split over (default: `sharding.active_mesh()`; None / one device: unsharded),
        rounded up to a multiple of them (the last network repeated, its results dropped): the same rows.
      split_batch: False places each batch whole on every device (a program that splits its own work over the
        mesh: the main job's candidate episodes, `select.candidates_program`).
    Returns:
      `RunResult`, rows in the pool's order. Row fields: dataset, network (index in its zoo), depth, widths_before
      / widths_after ("48-64-32"), params_before / params_after, compression, test_acc_before / test_acc_after,
      acc_change_points (test, points), val_acc0 / val_acc (the internal validation split), return (the
      episode's reward; 0 for one-shot methods), steps, actions (the episode's action indices as digits),
      finetune_epochs, seconds (run time per network of the batch, compile excluded).
    """
    n = len(pool)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    programs.checkpoint()  # a safe point between runs: drops every compiled program when over the bounds
    mesh = sharding.active_mesh() if mesh is None else mesh
    spread = sharding.spreads(mesh)
    own = sharding.own_shapes(max(nets.width_buckets(pool.archs)))  # paper widths on a CPU: each its own shape
    groups = nets.shape_groups(pool.archs, pool.dims, batch_size, own) if buckets else [(np.arange(n), pool.dims)]
    rows, networks, details = [None] * n, ([None] * n if keep_networks else None), [None] * n
    summary = []
    total = sum(-(-len(idx) // min(batch_size, len(idx))) for idx, _ in groups)
    bar = tqdm(total=total, desc=desc, disable=not progress)
    first = True
    for members, dims in groups:
        program, program_args = method(dims)
        group = pool.subset(members).repadded(dims)
        size = min(batch_size, len(members))
        if spread:  # split: every device gets an equal share; the padding repeats the last network
            size = -(-size // mesh.size) * mesh.size if split_batch else size
            program_args = sharding.put_replicated(program_args, mesh)
        record = {"w_max": dims.w_max, "max_hidden": dims.max_hidden,
                  "layer_widths": [dims.width(j) for j in range(dims.max_hidden)], "networks": len(members), "batches": 0,
                  "compile_seconds": 0.0, "run_seconds": 0.0}
        for start in range(0, len(members), size):
            local = np.arange(start, min(start + size, len(members)))
            padded = np.concatenate([local, np.full(size - len(local), local[-1])])
            params = group.batch(padded)
            keys = network_keys(seed, members[padded])
            if spread:
                keys, params = (sharding.put_batch if split_batch else sharding.put_replicated)((keys, params), mesh)
            if on_stage is not None and first:
                on_stage("compile")
            executable, seconds = compiled(program, keys, params, program_args, mesh=mesh)
            record["compile_seconds"] += seconds
            if on_stage is not None and first:
                on_stage("run")
            first = False
            t0 = time.perf_counter()
            out = jax.block_until_ready(executable(keys, params, program_args))
            seconds = time.perf_counter() - t0
            out = sharding.gather(out) if spread else out  # the whole batch on the host (of every process)
            record["run_seconds"] += seconds
            record["batches"] += 1
            for i, row in zip(members[local], outcome_rows(out, [pool.names[i] for i in members[local]],
                                                           seconds / len(padded), extra)):
                rows[i] = row
            _keep(out, members[local], dims, pool.dims, networks, details)
            bar.update(1)
        summary.append(record)
    bar.close()
    return RunResult(rows=rows, networks=networks, compile_seconds=sum(r["compile_seconds"] for r in summary),
                     run_seconds=sum(r["run_seconds"] for r in summary), details=details, groups=summary)


def _keep(out, indices, dims: nets.NetDims, pool_dims: nets.NetDims, networks: list | None, details: list) -> None:
    """Stores the first ``len(indices)`` networks of a batch's `Outcome` (repadded to `pool_dims`; when `networks`
    is a list) and their details at their pool `indices`."""
    if networks is not None:
        host = jax.device_get((out.variables, out.arch))
        host = jax.device_get(nets.repad(*host, dims, pool_dims))
        for b, i in enumerate(indices):
            networks[i] = jax.tree_util.tree_map(lambda a, b=b: a[b], host)
    host_details = jax.device_get(out.details)
    for b, i in enumerate(indices):
        details[i] = None if host_details is None else jax.tree_util.tree_map(lambda a, b=b: a[b], host_details)


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
