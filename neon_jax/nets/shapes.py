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
import jax.numpy as jnp
import numpy as np

from neon_jax.presets import Preset

DIM_FIELDS = ("d_max", "k_max", "max_hidden", "w_max")


@dataclasses.dataclass(frozen=True)
class NetDims:
    """Padded shapes shared by every network of a run (static: part of the compiled program).

    Hidden Linear j is ``(fan_in(j), width(j))``: the input Linear reads d_max features, a hidden Linear the
    padded width of the layer before it, the output Linear ``(width(max_hidden - 1), k_max)``. `layer_widths`
    pads each hidden layer position to its own width (`layer_buckets`); None pads every layer to w_max. The
    neuron masks of `Arch` keep w_max columns either way (the layer-indexed bookkeeping); a layer's parameters
    hold its first `width(j)` of them. A layer past a network's depth passes the last live layer's output on,
    so `width(j)` must also hold that (`layer_buckets` sees to it).
    """

    d_max: int  # input features
    k_max: int  # classes
    max_hidden: int
    w_max: int
    layer_widths: tuple[int, ...] | None = None  # (max_hidden,) padded width of each hidden layer; max = w_max

    def __post_init__(self):
        if self.layer_widths is None:
            return
        widths = tuple(int(w) for w in self.layer_widths)
        if len(widths) != self.max_hidden or min(widths) < 1 or max(widths) != self.w_max:
            raise ValueError(f"layer_widths {widths} must give each of the {self.max_hidden} hidden layers a width "
                             f"in 1..w_max and reach w_max {self.w_max}")
        # one spelling per shape: every layer at w_max is the uniform shape
        object.__setattr__(self, "layer_widths", None if min(widths) == self.w_max else widths)

    def width(self, j: int) -> int:
        """Padded width of hidden layer `j` (static)."""
        return self.w_max if self.layer_widths is None else self.layer_widths[j]

    def fan_in(self, j: int) -> int:
        """Padded input width of Linear `j`: d_max for the input Linear, else the width of layer j - 1 (j =
        max_hidden: the output Linear)."""
        return self.d_max if j == 0 else self.width(j - 1)

    def label(self) -> str:
        """The hidden layers' padded widths, e.g. "384-224-512" (names a program's shape in records)."""
        return "-".join(str(self.width(j)) for j in range(self.max_hidden))

    def uniform(self) -> NetDims:
        """These dims with every hidden layer at w_max."""
        return dataclasses.replace(self, layer_widths=None)

    @classmethod
    def for_preset(cls, preset: Preset, d_max: int, k_max: int) -> NetDims:
        """The preset's widest shape (every network its sampler can draw fits it)."""
        return cls(d_max=int(d_max), k_max=int(k_max), max_hidden=preset.max_hidden, w_max=preset.w_max)

    @classmethod
    def for_widths(cls, widest: int, d_max: int, k_max: int, max_hidden: int) -> NetDims:
        """The bucket shape of networks whose widest hidden layer has `widest` neurons (`bucket_width`)."""
        return cls(d_max=int(d_max), k_max=int(k_max), max_hidden=int(max_hidden), w_max=bucket_width(widest))


def fit_width(a, n: int, value=0.0):
    """`a` with its last axis cut or padded (with `value`) to `n` entries; NumPy stays NumPy (no one-op program)."""
    have = a.shape[-1]
    if have == n:
        return a
    if have > n:
        return a[..., :n]
    xp = np if isinstance(a, (np.ndarray, np.generic)) else jnp
    return xp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, n - have)], constant_values=value)


def carried_widths(archs) -> np.ndarray:
    """(..., max_hidden) int on the host: the width each hidden layer position must hold for each network, its
    highest alive neuron + 1 within the depth, and past the depth that of the last live layer (passed on)."""
    mask = np.asarray(jax.device_get(archs.mask)) > 0
    depth = np.asarray(jax.device_get(archs.depth))
    cols = np.arange(mask.shape[-1])
    reach = np.where(mask, cols + 1, 0).max(-1)  # (..., max_hidden)
    layer = np.arange(mask.shape[-2])
    last = np.take_along_axis(reach, (depth - 1)[..., None], axis=-1)
    return np.where(layer < depth[..., None], reach, last)


def layer_buckets(archs, max_hidden: int | None = None) -> tuple[int, ...]:
    """Per-layer padded widths of networks `archs` (one or a population): each position's `bucket_width` of the
    widest width any network needs there (`carried_widths`), for the first `max_hidden` positions."""
    need = carried_widths(archs).reshape(-1, np.asarray(archs.mask).shape[-2]).max(0)
    need = need[:max_hidden] if max_hidden is not None else need
    return tuple(bucket_width(max(int(w), 1)) for w in need)


def with_layer_widths(dims: NetDims, archs) -> NetDims:
    """`dims` with each hidden layer padded to its own bucket for networks `archs` (`layer_buckets`), w_max kept
    as the masks' width: the layers' widest bucket, at most `dims.w_max`."""
    widths = tuple(min(w, dims.w_max) for w in layer_buckets(archs, dims.max_hidden))
    widths += (widths[-1],) * (dims.max_hidden - len(widths))
    return dataclasses.replace(dims, w_max=max(widths), layer_widths=widths)


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


def training_groups(archs, dims: NetDims, own_shapes: bool = False) -> list[tuple[np.ndarray, NetDims]]:
    """How a population trains: [(indices, padded dims)], one program per group.

    By default networks are grouped by their widest hidden layer's bucket (`width_buckets`), `dims.max_hidden`
    deep, each hidden layer padded to the widest bucket its members need at that position (`with_layer_widths`).
    With `own_shapes` every network trains at its own shape instead (its depth, each layer at its own bucket;
    networks of the same shape share a program): no padding at all, one compile per distinct shape, the better
    trade where networks train one after another anyway (`sharding.default_chunk_size`: paper widths on a CPU).

    Args:
      archs: the population's `Arch` (leading axis P), masks `dims.w_max` wide.
    """
    if not own_shapes:
        return [(idx, with_layer_widths(dataclasses.replace(dims.uniform(), w_max=width),
                                        jax.tree_util.tree_map(lambda a, i=idx: a[i], archs)))
                for width, idx in width_buckets(archs).items()]
    depths = np.asarray(jax.device_get(archs.depth)).reshape(-1)
    need = carried_widths(archs).reshape(len(depths), -1)
    shapes = [tuple(bucket_width(max(int(w), 1)) for w in need[i, :depths[i]]) for i in range(len(depths))]
    groups = []
    for shape in sorted(set(shapes), key=lambda s: (max(s), len(s), s)):
        idx = np.array([i for i, s in enumerate(shapes) if s == shape])
        groups.append((idx, NetDims(dims.d_max, dims.k_max, len(shape), max(shape), shape)))
    return groups


def shape_groups(archs, dims: NetDims, batch_size: int, own_shapes: bool = False) -> list[tuple[np.ndarray, NetDims]]:
    """The shape groups of a run over networks `archs` padded to `dims`: [(indices, padded dims)], narrowest first.

    Networks are grouped by their widest hidden layer's bucket (`bucket_width`). Narrowest first, a bucket
    joins the next wider one unless running it at its own width saves at least one batch of work at the wider
    width, n (1 - (w / w_next)^2) >= batch_size (w^2: the hidden matmuls): a program of its own costs a compile,
    which only a batch or more of saved work repays. So a run compiles at most min(buckets, N / batch_size + 1)
    programs. A group's max_hidden is its deepest network's depth (shorter episodes: passes x depth steps), and
    each of its hidden layers is padded to its own bucket (`with_layer_widths`: the widest its members need at
    that position, so a single network runs at exactly its layers' buckets); d_max and k_max stay `dims`', whose
    data arrays every group shares. With `own_shapes` every network runs at its own shape (`training_groups`).
    """
    if own_shapes:
        return training_groups(archs, dims, own_shapes=True)
    buckets = np.array([bucket_width(w) for w in np.atleast_1d(widest_layers(archs))])
    depths = np.asarray(jax.device_get(archs.depth))
    rungs = sorted(set(buckets.tolist()))
    groups, waiting = [], np.zeros(0, int)
    for rung, wider in zip(rungs, rungs[1:] + [None]):
        idx = np.sort(np.concatenate([waiting, np.flatnonzero(buckets == rung)]))
        if wider is not None and len(idx) * (1.0 - (rung / wider) ** 2) < batch_size:
            waiting = idx
            continue
        group = dataclasses.replace(dims.uniform(), max_hidden=int(depths[idx].max()), w_max=min(rung, dims.w_max))
        groups.append((idx, with_layer_widths(group, jax.tree_util.tree_map(lambda a, i=idx: a[i], archs))))
        waiting = np.zeros(0, int)
    return groups


def common_dims(dims: Iterable[NetDims]) -> NetDims:
    """The smallest `NetDims` that holds every one of `dims` (each field's maximum; per-layer widths position by
    position, a shallower one's last layer carried on past its depth)."""
    dims = list(dims)
    if not dims:
        raise ValueError("common_dims needs at least one NetDims")
    out = NetDims(*(max(getattr(d, f) for d in dims) for f in DIM_FIELDS))
    if all(d.layer_widths is None for d in dims):
        return out
    widths = tuple(max(d.width(min(j, d.max_hidden - 1)) for d in dims) for j in range(out.max_hidden))
    return dataclasses.replace(out, w_max=max(widths), layer_widths=widths)


def check_fits(dims: NetDims, need: NetDims) -> None:
    """A ValueError when `dims` is smaller than `need` in any field."""
    if any(getattr(dims, f) < getattr(need, f) for f in DIM_FIELDS) or any(
            dims.width(j) < need.width(j) for j in range(min(dims.max_hidden, need.max_hidden))):
        raise ValueError(f"dims {dims} are smaller than the zoos need ({need})")
