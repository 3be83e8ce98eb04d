"""A pool of environments held on the host, from which device batches are assembled.

Training the agent across datasets touches hundreds of (network, dataset) pairs; stacking them all on the
device would copy each dataset once per network. The pool keeps every dataset once (padded to the pool's
common shapes) and every network once, and builds the `EnvParams` of a batch by indexing (one host-to-device
copy of a few MB per iteration).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from neon_jax import fit, nets
from neon_jax.env import EnvParams, validate_tau
from neon_jax.presets import Preset
from neon_jax.zoo import PreparedData, Zoo, check_data_matches

SPLITS = ("finetune", "val", "train", "test")


def _split_arrays(prepared: PreparedData, name: str):
    s = prepared.splits
    return {"finetune": (s.x_finetune, s.y_finetune), "val": (s.x_val, s.y_val),
            "train": (s.x_train, s.y_train), "test": (s.x_test, s.y_test)}[name]


@dataclasses.dataclass(eq=False)
class EnvPool:
    """Networks of several zoos with their datasets, padded to common `dims` and row counts.

    Attributes:
      dims: common padded network shape.
      names: (dataset, network index in its zoo) for every pool entry.
      variables / archs: host (NumPy) pytrees with leading axis N.
      dataset_of: (N,) index into `datasets`.
      data: per split, host `PaddedData` with leading axis D (one entry per dataset).
      tau: tolerance in accuracy points.
    """

    dims: nets.NetDims
    names: list
    datasets: list
    variables: dict
    archs: nets.Arch
    dataset_of: np.ndarray
    data: dict
    tau: float
    base_test_accuracy: np.ndarray
    select_tau: float | None = None  # the choice's tolerance (`EnvParams.select_tau`); None: tau

    @classmethod
    def from_zoos(cls, zoos_and_data: list[tuple[Zoo, PreparedData]], which: str, tau: float, preset: Preset,
                  dims: nets.NetDims | None = None) -> EnvPool:
        """Builds a pool of the `which` ("train" / "heldout" / "all") networks of each zoo.

        The data must be the zoo's own (checked by split digest) and every zoo of the same preset. The pool's shape
        is the smallest that holds every zoo's (`nets.repad`): the zoos' own buckets, not the preset's widest.
        `dims` forces larger common shapes (for example to share a compiled program with another pool).
        """
        tau = validate_tau(tau)
        if not zoos_and_data:
            raise ValueError("an environment pool needs at least one zoo")
        for zoo, prepared in zoos_and_data:
            check_data_matches(zoo, prepared)
            if zoo.preset.widths != preset.widths or zoo.preset.max_hidden != preset.max_hidden:
                raise ValueError(f"the zoo of {zoo.dataset!r} was built with preset {zoo.preset.name!r}, "
                                 f"which does not match {preset.name!r}")
        need = nets.common_dims(z.dims for z, _ in zoos_and_data)
        if dims is None:
            dims = need
        else:
            nets.check_fits(dims, need)
        n_max = {s: max(len(_split_arrays(p, s)[0]) for _, p in zoos_and_data) for s in SPLITS}
        data = {}
        for s in SPLITS:
            padded = [jax.device_get(fit.pad_data(*_split_arrays(p, s), n_max[s], dims.d_max))
                      for _, p in zoos_and_data]
            data[s] = jax.tree_util.tree_map(lambda *a: np.stack(a), *padded)
        variables, archs, names, dataset_of, base_acc = [], [], [], [], []
        for d, (zoo, _) in enumerate(zoos_and_data):
            idx = zoo.indices(which)
            v, a = jax.tree_util.tree_map(lambda x: x[idx], (zoo.variables, zoo.archs))
            v, a = nets.repad(v, a, zoo.dims, dims)
            variables.append(jax.device_get(v))
            archs.append(jax.device_get(a))
            names += [(zoo.dataset, int(i)) for i in idx]
            dataset_of += [d] * len(idx)
            base_acc.append(zoo.test_accuracy[idx])
        cat = lambda *a: np.concatenate(a)
        return cls(dims=dims, names=names, datasets=[z.dataset for z, _ in zoos_and_data],
                   variables=jax.tree_util.tree_map(cat, *variables), archs=jax.tree_util.tree_map(cat, *archs),
                   dataset_of=np.asarray(dataset_of, np.int32), data=data, tau=tau,
                   base_test_accuracy=np.concatenate(base_acc))

    @classmethod
    def from_network(cls, network: nets.DenseNetwork, prepared: PreparedData, tau: float, preset: Preset,
                     dims: nets.NetDims | None = None) -> EnvPool:
        """A pool of one network on its dataset (`Zoo.of_network`: checked against the data, at its own shape)."""
        return cls.from_zoos([(Zoo.of_network(network, prepared, preset), prepared)], "all", tau, preset, dims)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices) -> EnvPool:
        """A pool of only the entries `indices`, sharing this pool's data arrays and shapes (so the programs
        compiled for this pool serve it too)."""
        idx = np.asarray(indices)
        take = lambda a: a[idx]  # noqa: E731
        return dataclasses.replace(self, names=[self.names[i] for i in idx],
                                   variables=jax.tree_util.tree_map(take, self.variables),
                                   archs=jax.tree_util.tree_map(take, self.archs), dataset_of=self.dataset_of[idx],
                                   base_test_accuracy=self.base_test_accuracy[idx])

    def repadded(self, dims: nets.NetDims) -> EnvPool:
        """This pool with its networks at the padded shape `dims` (`nets.repad`: a narrower or shallower shape that
        still holds every network, or a larger one); d_max and k_max stay, as the data arrays are shared."""
        if (dims.d_max, dims.k_max) != (self.dims.d_max, self.dims.k_max):
            raise ValueError(f"a pool's networks change only max_hidden and w_max; {dims} has other d_max / k_max "
                             f"than {self.dims}")
        if dims == self.dims:
            return self
        variables, archs = jax.device_get(nets.repad(self.variables, self.archs, self.dims, dims))
        return dataclasses.replace(self, dims=dims, variables=variables, archs=archs)

    def batch(self, indices) -> EnvParams:
        """`EnvParams` (leading axis len(indices)) of the given pool entries, on the device."""
        indices = np.asarray(indices)
        take = lambda a: np.asarray(a)[indices]  # noqa: E731
        ds = self.dataset_of[indices]
        split = {s: jax.tree_util.tree_map(lambda a: np.asarray(a)[ds], self.data[s]) for s in SPLITS}
        # built on the host and put on the device in one go: jnp.asarray / jnp.full would compile a one-op
        # program per shape
        return jax.device_put(EnvParams(
            variables=jax.tree_util.tree_map(take, self.variables), arch=jax.tree_util.tree_map(take, self.archs),
            tau=np.full((len(indices),), self.tau, np.float32),
            select_tau=None if self.select_tau is None else np.full((len(indices),), self.select_tau, np.float32),
            **split))


def batch_from_zoos(zoos_and_data, which: str, tau: float, preset: Preset):
    """Every `which` network of several zoos as one device batch: (EnvParams (leading axis B), dims, names).

    A convenience over `EnvPool` for batches that fit at once (roll-outs, benchmarks, tests).
    """
    pool = EnvPool.from_zoos(zoos_and_data, which, tau, preset)
    return pool.batch(np.arange(len(pool))), pool.dims, pool.names
