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
"""

from __future__ import annotations

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


def default_chunk_size() -> int | None:
    """How many members neon_jax's batched programs compute at a time when told ``"auto"``.

    4 on a single CPU device: measured on 2 cores (cpu preset, 32 networks), the depth-sorted chunks of 4 train a
    population ~1.3x faster than one vmap, and 4 fine-tunes in flight step 32 environments as fast as 8 and ~2x
    faster than one vmap (benchmarks/run.py). None (the whole batch in one vmap) on accelerators, which want wide
    batches, and whenever there are several devices, where the batch axis is meant to be sharded instead.
    """
    if jax.default_backend() == "cpu" and jax.device_count() == 1:
        return 4
    return None


def resolve_chunk_size(chunk_size):
    """``"auto"`` -> `default_chunk_size()`; an int or None as given."""
    return default_chunk_size() if chunk_size == AUTO else chunk_size


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
