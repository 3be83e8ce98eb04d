"""Shape policy, the one home: padded dims (`NetDims`), the width ladder (`bucket_width`), and how a set of networks
is grouped into programs (`width_buckets` for training zoos, `shape_groups` for runs over a pool) and padded to one
shape (`common_dims`).

Every network of a compiled program has the same array shapes; a program's width is its networks' bucket, not the
preset's widest, so narrow networks do not pay for wide ones, and a run compiles one program per group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import jax
import numpy as np

from neon_jax.presets import Preset

DIM_FIELDS = ("d_max", "k_max", "max_hidden", "w_max")


@dataclasses.dataclass(frozen=True)
class NetDims:
    """Padded shapes shared by every network of a run (static: part of the compiled program)."""

    d_max: int  # input features
    k_max: int  # classes
    max_hidden: int
    w_max: int

    @classmethod
    def for_preset(cls, preset: Preset, d_max: int, k_max: int) -> NetDims:
        """The preset's widest shape (every network its sampler can draw fits it)."""
        return cls(d_max=int(d_max), k_max=int(k_max), max_hidden=preset.max_hidden, w_max=preset.w_max)

    @classmethod
    def for_widths(cls, widest: int, d_max: int, k_max: int, max_hidden: int) -> NetDims:
        """The bucket shape of networks whose widest hidden layer has `widest` neurons (`bucket_width`)."""
        return cls(d_max=int(d_max), k_max=int(k_max), max_hidden=int(max_hidden), w_max=bucket_width(widest))


def bucket_width(width: int) -> int:
    """The padded width of a bucket: `width` rounded up onto the ladder 8, 16, then multiples of 32 to 256,
    multiples of 128 to 1024, then powers of two (2048, 4096, ...).

    A short ladder (16 rungs up to 1024) bounds the compiles of a run, one program per bucket, while a layer is
    padded by less than one rung (under 32 neurons up to 256, under 128 up to 1024: the paper's 300 -> 384); every
    rung above 16 is a multiple of 32, which tiles well on accelerators.
    """
    width = int(width)
    if width < 1:
        raise ValueError(f"a hidden layer needs at least one neuron, got width {width}")
    if width <= 16:
        return 8 if width <= 8 else 16
    if width <= 256:
        return -(-width // 32) * 32
    if width <= 1024:
        return -(-width // 128) * 128
    return 1 << (width - 1).bit_length()


def widest_layers(archs) -> np.ndarray:
    """(P,) (or () for one network) int: each network's widest alive hidden layer, on the host."""
    return np.asarray(jax.device_get(archs.mask)).sum(-1).max(-1).astype(int)




def width_buckets(archs) -> dict[int, np.ndarray]:
    """{bucket width: indices of the networks whose widest hidden layer rounds up to it} (`bucket_width`).

    Args:
      archs: a population's `Arch` (leading axis P).
    """
    buckets = np.array([bucket_width(w) for w in np.atleast_1d(widest_layers(archs))])
    return {int(b): np.flatnonzero(buckets == b) for b in np.unique(buckets)}


def shape_groups(archs, dims: NetDims, batch_size: int) -> list[tuple[np.ndarray, NetDims]]:
    """The shape groups of a run over networks `archs` padded to `dims`: [(indices, padded dims)], narrowest first.

    Networks are grouped by their widest hidden layer's bucket (`bucket_width`). Narrowest first, a bucket
    joins the next wider one unless running it at its own width saves at least one batch of work at the wider
    width, n (1 - (w / w_next)^2) >= batch_size (w^2: the hidden matmuls): a program of its own costs a compile,
    which only a batch or more of saved work repays. So a run compiles at most min(buckets, N / batch_size + 1)
    programs. A group's max_hidden is its deepest network's depth (shorter episodes: passes x depth steps); d_max
    and k_max stay `dims`', whose data arrays every group shares.
    """
    buckets = np.array([bucket_width(w) for w in np.atleast_1d(widest_layers(archs))])
    depths = np.asarray(jax.device_get(archs.depth))
    rungs = sorted(set(buckets.tolist()))
    groups, waiting = [], np.zeros(0, int)
    for rung, wider in zip(rungs, rungs[1:] + [None]):
        idx = np.sort(np.concatenate([waiting, np.flatnonzero(buckets == rung)]))
        if wider is not None and len(idx) * (1.0 - (rung / wider) ** 2) < batch_size:
            waiting = idx
            continue
        groups.append((idx, dataclasses.replace(dims, max_hidden=int(depths[idx].max()), w_max=min(rung, dims.w_max))))
        waiting = np.zeros(0, int)
    return groups


def common_dims(dims: Iterable[NetDims]) -> NetDims:
    """The smallest `NetDims` that holds every one of `dims` (each field's maximum)."""
    dims = list(dims)
    if not dims:
        raise ValueError("common_dims needs at least one NetDims")
    return NetDims(*(max(getattr(d, f) for d in dims) for f in DIM_FIELDS))


def check_fits(dims: NetDims, need: NetDims) -> None:
    """A ValueError when `dims` is smaller than `need` in any field."""
    if any(getattr(dims, f) < getattr(need, f) for f in DIM_FIELDS):
        raise ValueError(f"dims {dims} are smaller than the zoos need ({need})")
