"""Datasets as padded stacks and minibatches over them: `PaddedData` (D datasets padded to one row count and
feature count, each network naming its dataset by index, so a dataset shared by many networks is stored once),
per-epoch shuffles of the real rows, minibatch gathers with weight 0 on padded rows, one key per network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class PaddedData:
    """One split of one dataset at padded shapes (add a leading axis D for a stack of datasets).

    Attributes:
      x: (n_max, d_max) float32 features, zero past the real rows and columns.
      y: (n_max,) int32 labels, 0 past the real rows.
      n: () int32 number of real rows.
    """

    x: jax.Array
    y: jax.Array
    n: jax.Array


def pad_data(x: np.ndarray, y: np.ndarray, n_max: int, d_max: int) -> PaddedData:
    """Pads one split to (n_max, d_max); raises ValueError if it does not fit."""
    x = np.asarray(x, np.float32)
    n, d = x.shape
    if n > n_max or d > d_max:
        raise ValueError(f"split of shape {x.shape} does not fit the padded shape ({n_max}, {d_max})")
    xp = np.zeros((n_max, d_max), np.float32)
    yp = np.zeros((n_max,), np.int32)
    xp[:n, :d] = x
    yp[:n] = np.asarray(y, np.int32)
    # device_put, not jnp.asarray: the latter compiles a one-op program per shape
    return jax.device_put(PaddedData(x=xp, y=yp, n=np.int32(n)))


def stack_data(splits: list[tuple[np.ndarray, np.ndarray]], d_max: int, n_max: int | None = None) -> PaddedData:
    """Pads several (x, y) splits to common shapes and stacks them: PaddedData with leading axis D."""
    n_max = n_max or max(len(x) for x, _ in splits)
    padded = [jax.device_get(pad_data(x, y, n_max, d_max)) for x, y in splits]
    return jax.device_put(jax.tree_util.tree_map(lambda *a: np.stack(a), *padded))


def gather_batch(data: PaddedData, dataset_index, perm, start, batch_size):
    """One minibatch: rows `perm[start:start + batch_size]` as (x, y, weight), weight 0 past the real rows.

    `data` is one split (no leading axis; `dataset_index` None) or a stack of splits (leading axis D) of which
    split `dataset_index` is read.
    """
    idx = jax.lax.dynamic_slice(perm, (start,), (batch_size,))
    if dataset_index is None:
        x, y, n = data.x[idx], data.y[idx], data.n
    else:
        x, y, n = data.x[dataset_index, idx], data.y[dataset_index, idx], data.n[dataset_index]
    weight = ((start + jnp.arange(batch_size)) < n).astype(jnp.float32)
    return x, y, weight


def shuffle_real_rows(key, n_real, n_max, n_padded):
    """A permutation of 0..n_max-1 with the real rows first in random order, padded to n_padded entries."""
    u = jax.random.uniform(key, (n_max,))
    u = jnp.where(jnp.arange(n_max) < n_real, u, 2.0)
    perm = jnp.argsort(u)
    return jnp.pad(perm, (0, n_padded - n_max))


def network_keys(key: jax.Array, n: int) -> jax.Array:
    """One key per network of a population: `key` split n ways, or `key` itself when it already holds n keys
    (raw keys (n, 2) or typed keys (n,)). Passing a network its own key makes its training independent of which
    population (bucket) it runs in."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if key.ndim == (1 if typed else 2):
        if key.shape[0] != n:
            raise ValueError(f"{key.shape[0]} keys for a population of {n} networks")
        return key
    return jax.random.split(key, n)
