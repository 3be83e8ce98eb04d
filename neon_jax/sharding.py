"""Placing the population / environment batch axis on a device mesh (one 1-D mesh of every local device, no pmap).

Every batched program of neon_jax (population training, fine-tuning, roll-outs, agent iterations) maps over a
leading batch axis with `jax.vmap`. To spread that axis over devices, put the *inputs* on a 1-D mesh and let
`jax.jit` propagate the sharding: batched arrays (networks, architectures, environment parameters, optimiser
states of a population) are split along their leading axis with ``PartitionSpec("batch")``; what every member
shares (PRNG keys, a stacked dataset, the agent's parameters and optimiser state) is replicated. XLA then runs
each device's slice of the vmapped work locally and inserts the only collective the maths needs (the batch mean
of the agent's loss becomes an all-reduce).

    mesh = make_mesh()                                   # all devices (of all hosts) on one axis
    variables, opt_state, archs, index = shard_batch((variables, opt_state, archs, index), mesh)
    data = replicate(data, mesh)
    trainer.train(key, variables, opt_state, archs, index, data, epochs=..., batch_size=...)

    params = shard_batch(pad_batch(pool.batch(idx), mesh.size), mesh)   # roll-outs / agent iterations
    state = replicate(agent_state, mesh)
    iteration(state, params, key, warmup)

The batch size must be a multiple of the number of devices (`pad_batch` repeats the last entry; drop the padded
results). Results come back sharded the same way; `jax.device_get` gathers them.

Multi-host (several machines, e.g. a GPU cluster or a TPU pod): call `jax.distributed.initialize()` in every process
before anything else touches JAX; `make_mesh()` then spans every process's devices, and `shard_batch` builds each
global array from the rows each process holds (`jax.make_array_from_process_local_data`): give every process its
own slice of the batch (``process_slice``), run the same program everywhere.

The library's batched paths do this for the caller: a job resolves its devices once (`resolve_devices`: all by
default, ``devices=N`` / ``--devices N`` fewer) and runs under ``use_mesh(mesh)``; the runner, zoo training, the
main job's candidates and the agent's training iterations then pad their batch to a multiple of the mesh
(`pad_to_mesh`), place it (`put_batch`, `put_replicated`: every process holds the whole host batch and places
its own devices' rows) and gather the results (`gather`). On one device (one process) they take the unsharded
path, unchanged, with the CPU's chunked programs.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def make_mesh(n_devices: int | None = None, devices=None) -> Mesh:
    """A 1-D mesh with axis ``"batch"`` over the first `n_devices` devices (default: all, of every host)."""
    devices = list(jax.devices() if devices is None else devices)
    if n_devices is not None:
        if not 1 <= n_devices <= len(devices):
            raise ValueError(f"n_devices must be in 1..{len(devices)}, got {n_devices}")
        devices = devices[:n_devices]
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _check_divisible(tree, n: int) -> None:
    for leaf in jax.tree_util.tree_leaves(tree):
        if np.ndim(leaf) == 0:
            raise ValueError("shard_batch needs a leading batch axis on every array (got a scalar); "
                             "replicate shared values instead")
        if np.shape(leaf)[0] % n:
            raise ValueError(f"batch axis of size {np.shape(leaf)[0]} is not a multiple of the {n} devices of "
                             "the mesh; pad it with pad_batch")


def shard_batch(tree, mesh: Mesh):
    """Places every array of `tree` with its leading (batch) axis split over `mesh`.

    Single process: `tree` holds the whole batch. Several processes (after `jax.distributed.initialize`): each
    process passes the rows it holds (its `process_slice` of the batch) and gets the global arrays.
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() > 1:
        local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
        _check_divisible(tree, local)
        return jax.tree_util.tree_map(
            lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)
    _check_divisible(tree, mesh.size)
    return jax.device_put(tree, sharding)


def replicate(tree, mesh: Mesh):
    """Places every array of `tree` whole on every device of `mesh` (keys, shared data, agent parameters)."""
    return jax.device_put(tree, replicated(mesh))


def pad_batch(tree, multiple: int):
    """Repeats the last batch entry until the leading axis is a multiple of `multiple`; returns the padded tree.

    The extra entries do real (duplicate) work; drop their results (the first ``n`` rows are the real ones).
    """
    leaves = jax.tree_util.tree_leaves(tree)
    n = int(np.shape(leaves[0])[0])
    extra = (-n) % multiple
    if extra == 0:
        return tree
    idx = np.concatenate([np.arange(n), np.full(extra, n - 1)])
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def process_slice(batch_size: int) -> slice:
    """The rows of a global batch this process holds in a multi-process run (contiguous, equal shares)."""
    n = jax.process_count()
    if batch_size % n:
        raise ValueError(f"batch of {batch_size} does not split over {n} processes")
    share = batch_size // n
    return slice(jax.process_index() * share, (jax.process_index() + 1) * share)


def vmap_in_chunks(fn, chunk_size: int | None):
    """``vmap(fn)`` over the leading axis of every argument, computed `chunk_size` members at a time
    (`jax.lax.map` with ``batch_size``): the same numbers, a smaller working set. On a CPU, where a batch of
    padded networks with their Adam moments and snapshots outgrows the caches, chunks of ~8 environments step
    faster than one vmap of 32; on an accelerator use the whole batch (``chunk_size=None``)."""
    if not chunk_size:
        return jax.vmap(fn)

    def mapped(*args):
        return jax.lax.map(lambda xs: fn(*xs), args, batch_size=chunk_size)

    return mapped


AUTO = "auto"


def resolve_devices(devices: int | None = None) -> Mesh:
    """The 1-D batch mesh of a run: every device of every process (None) or the first `devices` of them.

    Args:
      devices: how many devices (None: all). In a multi-process run (`jax.distributed`) a multiple of the number
        of processes, taken evenly from every process.
    Returns:
      A `Mesh` with axis ``"batch"`` of `devices` devices.
    Raises:
      ValueError: one line naming the devices available, for 0, a negative count, a count over them, or a
        count that does not split over the processes.
    """
    available = jax.devices()
    n = len(available)
    if devices is None:
        return make_mesh(devices=available)
    if isinstance(devices, bool) or int(devices) != devices or not 1 <= devices <= n:
        raise ValueError(f"devices must be between 1 and {n} (this run has {n} {available[0].platform} "
                         f"device{'s' if n > 1 else ''}), got {devices}")
    processes = jax.process_count()
    if devices % processes:
        raise ValueError(f"devices = {devices} does not split over the {processes} processes of this run; "
                         f"give a multiple of {processes} (at most {n})")
    per = int(devices) // processes
    chosen = [d for p in range(processes) for d in [x for x in available if x.process_index == p][:per]]
    return make_mesh(devices=chosen)


_ACTIVE: list[Mesh] = []


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None):
    """Within the block, the library's batched paths place their batch axis on `mesh` (None: the unsharded path).

    Args:
      mesh: from `resolve_devices`.
    Returns:
      A context manager yielding `mesh`.
    """
    _ACTIVE.append(mesh)
    try:
        yield mesh
    finally:
        _ACTIVE.pop()


def active_mesh() -> Mesh | None:
    """The mesh of the innermost `use_mesh` block (None outside any: the unsharded path)."""
    return _ACTIVE[-1] if _ACTIVE else None


def job_mesh(devices: int | None = None) -> Mesh:
    """The mesh a job runs on: `devices` of them when given (`resolve_devices`), else the mesh of the enclosing
    `use_mesh` block (a job called by another job), else every device.

    Args:
      devices: how many devices (None: as above).
    Returns:
      A 1-D `Mesh` with axis ``"batch"``.
    """
    if devices is None and active_mesh() is not None:
        return active_mesh()
    return resolve_devices(devices)


def fit_mesh(mesh: Mesh | None, batch: int) -> Mesh | None:
    """The largest leading part of `mesh` whose devices divide `batch` (taken evenly from every process): a
    program whose batch must not be padded (the agent's update averages over it) uses that many devices.

    Args:
      mesh: the job's mesh (None: None).
      batch: the batch size B.
    Returns:
      A `Mesh` of k devices, k the largest count <= mesh.size that divides B (and splits over the processes).
    """
    if mesh is None or batch % mesh.size == 0:
        return mesh
    processes = jax.process_count()
    per_process = mesh.size // processes
    for k in range(per_process, 0, -1):
        if batch % (k * processes) == 0:
            devices = list(mesh.devices.flat)
            chosen = [d for p in range(processes) for d in [x for x in devices if x.process_index == p][:k]]
            return make_mesh(devices=chosen)
    raise ValueError(f"a batch of {batch} does not split over the {processes} processes of this run")


def spreads(mesh: Mesh | None) -> bool:
    """Whether a batch placed on `mesh` leaves the unsharded path: several devices, or several processes."""
    return mesh is not None and (mesh.size > 1 or jax.process_count() > 1)


def run_record(mesh: Mesh | None) -> dict:
    """{"devices": n, "processes": n, "platform": name} of a run on `mesh` (None: one device), for its records."""
    devices = [jax.devices()[0]] if mesh is None else list(mesh.devices.flat)
    return {"devices": len(devices), "processes": len({d.process_index for d in devices}),
            "platform": devices[0].platform}


def pad_to_mesh(tree, mesh: Mesh | None) -> tuple[Any, np.ndarray]:
    """`tree`'s leading axis B padded (the last entry repeated) to a multiple of the mesh's devices.

    Args:
      tree: arrays with a leading batch axis B.
      mesh: the mesh (None: no padding).
    Returns:
      (padded tree, (B',) bool mask: True on the B real entries, then False on the padding); `drop_padding`
      takes the real ones back out of the results.
    """
    n = int(np.shape(jax.tree_util.tree_leaves(tree)[0])[0])
    size = 1 if mesh is None else mesh.size
    padded = pad_batch(tree, size)
    total = -(-n // size) * size
    return padded, np.arange(total) < n


def drop_padding(tree, mask: np.ndarray):
    """The real entries (`mask`, from `pad_to_mesh`) of every array of `tree` (leading axis B')."""
    keep = np.flatnonzero(mask)
    return jax.tree_util.tree_map(lambda a: a[keep], tree)


def _is_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def _place(tree, sharding: NamedSharding):
    """Every array leaf of `tree` (the whole global value, in every process) placed with `sharding`; each
    process fills its own devices' shards. Other leaves (Python scalars) stay as they are."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(lambda a: jax.device_put(a, sharding) if _is_array(a) else a, tree)

    def put(a):
        if not _is_array(a):
            return a
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def put_batch(tree, mesh: Mesh):
    """`tree`'s arrays with their leading axis (a multiple of ``mesh.size``: `pad_to_mesh`) split over `mesh`."""
    _check_divisible([a for a in jax.tree_util.tree_leaves(tree) if _is_array(a)], mesh.size)
    return _place(tree, batch_sharding(mesh))


def put_replicated(tree, mesh: Mesh):
    """`tree`'s arrays whole on every device of `mesh` (keys, shared data, an agent's parameters)."""
    return _place(tree, replicated(mesh))


def gather(tree):
    """Every array of `tree` as host NumPy, whole: in a multi-process run each process gets the global value
    (`multihost_utils.process_allgather`), so every process holds the same results."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def get(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
            return np.asarray(a)
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree_util.tree_map(get, tree)


def barrier(name: str) -> None:
    """Waits until every process of a multi-process run reaches the barrier `name` (a no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def is_writer() -> bool:
    """Whether this process writes a run's files: process 0 (always, in a one-process run)."""
    return jax.process_index() == 0


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Starts JAX's multi-process runtime (`jax.distributed`) when asked; before anything else uses JAX.

    Args:
      coordinator: "host:port" of process 0 (default: $NEON_JAX_COORDINATOR).
      num_processes: processes in all (default: $NEON_JAX_NUM_PROCESSES).
      process_id: this process's index, 0..num_processes-1 (default: $NEON_JAX_PROCESS_ID).
    Returns:
      True when the runtime was started; False when no coordinator is given (one process).
    """
    coordinator = coordinator or os.environ.get("NEON_JAX_COORDINATOR")
    if not coordinator:
        return False
    num_processes = num_processes if num_processes is not None else os.environ.get("NEON_JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else os.environ.get("NEON_JAX_PROCESS_ID")
    if num_processes is None or process_id is None:
        raise ValueError("a multi-process run needs the coordinator, the number of processes and this process's "
                         "id (--coordinator HOST:PORT --num-processes N --process-id I)")
    num_processes, process_id = int(num_processes), int(process_id)
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"process id must be in 0..{num_processes - 1} for {num_processes} processes, "
                         f"got {process_id}")
    # the CPU devices' collectives (a no-op for accelerators); asking for the backend here would start it too early
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True


def default_chunk_size(w_max: int | None = None) -> int | None:
    """How many members neon_jax's batched programs compute at a time when told ``"auto"``.

    On a single CPU device: 4 for small networks, 1 (one member after the other) for wide ones. Measured on 2
    cores: at the cpu preset's widths (8..64, 32 networks) the depth-sorted chunks of 4 train a population ~1.3x
    faster than one vmap, and 4 fine-tunes in flight step 32 environments as fast as 8 and ~2x faster than one
    vmap (benchmarks/run.py); at the paper's widths (buckets 224..1024) a vmapped network costs 1.0-2.2x what it
    costs alone and chunks of 1 train a population 1.02-1.33x faster than chunks of 4 (P = 32 / 8)
    (benchmarks/profile_paper_finetune.py). `w_max` (the program's padded hidden width; None: unknown, treated as
    small) >= `WIDE_ON_CPU` picks 1. None (the whole batch in one vmap) on accelerators, which want wide batches,
    and whenever there are several devices, where the batch axis is meant to be sharded instead. Inside
    `use_mesh`, the devices are the mesh's: ``--devices 1`` on a host of several CPU devices keeps the chunks.
    """
    mesh = active_mesh()
    devices = jax.device_count() if mesh is None else mesh.size
    if jax.default_backend() == "cpu" and devices == 1:
        return 1 if w_max is not None and int(w_max) >= WIDE_ON_CPU else 4
    return None


WIDE_ON_CPU = 128  # padded width from which `default_chunk_size` runs one member at a time on a CPU (paper widths)


def own_shapes(w_max: int) -> bool:
    """Whether networks as wide as `w_max` run each at its own shape (`nets.training_groups`, `nets.shape_groups`):
    where `default_chunk_size` computes one member at a time anyway, padding them to a common shape only adds
    FLOPs, and a compile per distinct shape costs less than the padding (paper widths on a CPU)."""
    return default_chunk_size(w_max) == 1


def resolve_chunk_size(chunk_size, w_max: int | None = None):
    """``"auto"`` -> `default_chunk_size(w_max)`; an int or None as given."""
    return default_chunk_size(w_max) if chunk_size == AUTO else chunk_size


def map_sorted_chunks(chunk_fn, chunk_size: int):
    """``mapped(sort_key, *args)``: the members (leading axis B of every arg) sorted by `sort_key` ((B,) ints),
    cut into chunks of `chunk_size` (the last chunk padded with copies of the last member), ``chunk_fn(*chunk)``
    called on each chunk (leading axis `chunk_size`) one after the other (`lax.map`), and the per-member results
    returned in the members' original order. `chunk_fn` sees a whole chunk, so it can take unbatched decisions
    for it (skip layers none of its members has, skip work none of them needs); see `vmap_sorted_chunks`."""

    def mapped(sort_key, *args):
        n = sort_key.shape[0]
        size = max(1, min(int(chunk_size), n))
        order = jnp.argsort(sort_key, stable=True)
        pad = (-n) % size
        idx = jnp.concatenate([order, jnp.full((pad,), order[-1], order.dtype)]) if pad else order
        xs = jax.tree_util.tree_map(lambda a: a[idx].reshape((-1, size) + a.shape[1:]), args)
        out = jax.lax.map(lambda chunk: chunk_fn(*chunk), xs)
        inverse = jnp.argsort(order)
        return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[inverse], out)

    return mapped


def vmap_sorted_chunks(fn, chunk_size: int):
    """Like `vmap_in_chunks`, with the members sorted by a key and each chunk told its largest key.

    ``mapped(sort_key, *args)`` computes ``vmap(lambda *a: fn(bound, *a))`` on chunks of `chunk_size` members of
    similar `sort_key` ((B,) ints, e.g. network depths; `map_sorted_chunks`), with ``bound`` = the chunk's largest
    key (unbatched, so `fn` can skip work no member of the chunk needs, see `nets.MaskedMLP`'s `depth_bound`), and
    returns the results in the members' original order. Same numbers as ``vmap(lambda *a: fn(None, *a))`` when
    `fn` only uses the bound to skip work.
    """

    def chunk_fn(sort_key, *args):
        bound = sort_key.max()
        return jax.vmap(lambda *a: fn(bound, *a))(*args)

    mapped = map_sorted_chunks(chunk_fn, chunk_size)
    return lambda sort_key, *args: mapped(sort_key, sort_key, *args)


def describe(tree) -> dict:
    """{path: sharding spec} of every array of `tree` (for logs and tests)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): str(getattr(leaf, "sharding", None)) for p, leaf in flat}
