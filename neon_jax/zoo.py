"""The base-network zoo: N trained random networks per dataset, saved with their splits (neon_spec.md §1.5, §7).

A zoo of one dataset is one population, trained as one jit program per width bucket and stored at its widest
bucket. On disk, ``<out>/<dataset>/`` holds ``zoo.json`` (preset, seeds, architectures, accuracies, the train /
held-out network split, the data split sizes, the buckets and a digest of the split indices) and ``networks.npz``
(the stacked padded variables and `Arch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import shutil
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from neon_jax import data as data_lib
from neon_jax import fit, nets, programs, sharding
from neon_jax.choices import ZOO_SPLITS
from neon_jax.presets import ACTIVATION_NAMES, Preset

ZOO_FORMAT = 1
PRE_NAMES = ("none", "dropout", "batchnorm")


@dataclasses.dataclass(eq=False)
class PreparedData:
    """A dataset ready for a preset: subsampled to `preset.max_rows` (said as it happens) and split into row
    indices, host-side (`pool.EnvPool` pads the splits and places them on the device)."""

    dataset: data_lib.Dataset
    splits: data_lib.Splits
    seed: int

    @property
    def n_features(self) -> int:
        return self.dataset.n_features

    @property
    def n_classes(self) -> int:
        return self.dataset.n_classes

    def split_digest(self) -> str:
        h = hashlib.sha256()
        for idx in (self.splits.train_idx, self.splits.test_idx, self.splits.finetune_idx, self.splits.val_idx):
            h.update(np.asarray(idx, np.int64).tobytes())
        return h.hexdigest()[:16]


def prepare_data(name_or_dataset, preset: Preset, seed: int = 0, data_dir=None,
                 val_fraction: float = 0.2) -> PreparedData:
    """Loads (if given a name), subsamples to the preset's row cap and splits a classification dataset.

    The base networks train on the 70% train split and report accuracy on the 30% test split; the environment
    fine-tunes on 80% of train and rewards on the other 20% (neon_spec.md §2.1; `val_fraction` changes that share,
    not the 70/30 split).
    """
    ds = name_or_dataset
    if not isinstance(ds, data_lib.Dataset):
        ds = data_lib.load_dataset(ds, data_dir=data_dir)
    if ds.task != "classification":
        raise ValueError(f"dataset {ds.name!r} is a {ds.task} task; NEON prunes classifiers only")
    if preset.max_rows is not None:
        ds = data_lib.subsample(ds, preset.max_rows, seed)
    return PreparedData(dataset=ds, splits=data_lib.make_splits(ds, seed=seed, val_fraction=val_fraction), seed=seed)


@dataclasses.dataclass(eq=False)
class Zoo:
    """Trained base networks of one dataset (a population: leading axis P on `variables` and `archs`)."""

    dataset: str
    preset: Preset
    dims: nets.NetDims
    variables: dict
    archs: nets.Arch
    train_accuracy: np.ndarray  # (P,) on the 70% train split
    test_accuracy: np.ndarray  # (P,) on the 30% test split
    heldout: np.ndarray  # (P,) bool: True for the networks the agent never trains on
    meta: dict

    @classmethod
    def of_network(cls, network: nets.DenseNetwork, prepared: PreparedData, preset: Preset) -> Zoo:
        """A zoo of one: a user's network at its own bucket shape (its depth, its widest layer on the ladder),
        checked against the dataset (features, classes, depth the state maps hold), with its test accuracy."""
        if network.n_features != prepared.n_features:
            raise ValueError(f"the network expects {network.n_features} input features but the dataset has "
                             f"{prepared.n_features}")
        if network.n_classes != prepared.n_classes:
            hint = ("; a binary model with one logistic output z? pass the scikit-learn model itself, or give its "
                    "output layer two columns, logits (0, z)" if network.n_classes == 1 and prepared.n_classes == 2
                    else "")
            raise ValueError(f"the network has {network.n_classes} outputs but the dataset has "
                             f"{prepared.n_classes} classes{hint}")
        widths = network.hidden_widths
        if len(widths) > preset.feature_rows - 1:
            raise ValueError(f"the network has {len(widths)} hidden layers; the state maps hold at most "
                             f"{preset.feature_rows - 1}")
        dims = nets.NetDims.for_widths(max(widths), prepared.n_features, prepared.n_classes, max_hidden=len(widths))
        variables, arch = nets.expand(network, dims)
        stack = lambda t: jax.tree_util.tree_map(lambda a: a[None], t)  # noqa: E731
        test_acc = float((np.argmax(network.logits(prepared.splits.x_test), 1) == prepared.splits.y_test).mean())
        return cls(dataset=prepared.dataset.name, preset=preset, dims=dims, variables=stack(variables),
                   archs=stack(arch), train_accuracy=np.array([np.nan]), test_accuracy=np.array([test_acc]),
                   heldout=np.array([False]), meta={"split_digest": prepared.split_digest()})

    def __len__(self) -> int:
        return int(self.archs.depth.shape[0])

    def indices(self, which: str = "all") -> np.ndarray:
        if which == "all":
            return np.arange(len(self))
        if which == "train":
            return np.flatnonzero(~self.heldout)
        if which == "heldout":
            return np.flatnonzero(self.heldout)
        raise ValueError(f"unknown subset {which!r}; use one of {', '.join(ZOO_SPLITS)}")

    def select(self, which: str = "all") -> tuple[dict, nets.Arch, np.ndarray]:
        """(variables, archs, indices) of a subset of the networks."""
        idx = self.indices(which)
        take = lambda a: a[idx]
        return jax.tree_util.tree_map(take, self.variables), jax.tree_util.tree_map(take, self.archs), idx

    def network(self, i: int) -> tuple[dict, nets.Arch]:
        return jax.tree_util.tree_map(lambda a: a[i], self.variables), jax.tree_util.tree_map(lambda a: a[i], self.archs)

    def describe(self, i: int) -> dict:
        arch = jax.device_get(jax.tree_util.tree_map(lambda a: a[i], self.archs))
        depth = int(arch.depth)
        return {
            "index": i,
            "widths": [int(w) for w in np.asarray(arch.widths)[:depth]],
            "activation": [ACTIVATION_NAMES[int(a)] for a in np.asarray(arch.activation)[:depth]],
            "pre_layer": [PRE_NAMES[int(p)] for p in np.asarray(arch.pre_layer)[:depth]],
            "params": int(nets.count_params(arch)),
            "train_accuracy": float(self.train_accuracy[i]),
            "test_accuracy": float(self.test_accuracy[i]),
            "heldout": bool(self.heldout[i]),
        }


@functools.partial(jax.jit, static_argnums=(2, 3))
def _zoo_keys(seed, dataset_key, n: int, n_chunks: int):
    """(architecture key, (n, 2) initialisation keys, (n_chunks, n, 2) training keys: chunk c's network i trains
    with ``split(split(k_train, n_chunks)[c], n)[i]``) of a zoo, in one program (eagerly, every split and fold
    compiles its own)."""
    k_arch, k_init, k_train = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), dataset_key), 3)
    train_keys = jax.vmap(lambda k: jax.random.split(k, n))(jax.random.split(k_train, n_chunks))
    return k_arch, jax.random.split(k_init, n), train_keys


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample_archs(k_arch, preset, dims, n, n_features, n_classes):
    """`n` random architectures at the preset's widest shape, under one jit."""
    return jax.vmap(lambda k: nets.sample_arch(k, preset, dims, n_features, n_classes))(jax.random.split(k_arch, n))


@functools.partial(jax.jit, static_argnums=0)
def _init_networks(model, keys, archs):
    """Initial variables of a population, one key per network (eagerly this is ~150 small compiles)."""
    return jax.vmap(lambda k, a: nets.init_network(k, model, a))(keys, archs)


def build_zoo(prepared: PreparedData, preset: Preset, n: int = 30, n_heldout: int = 6, seed: int = 0,
              epochs: int | None = None, progress: Callable[[int, int], None] | None = None,
              chunk_epochs: int = 5, devices: int | None = None) -> Zoo:
    """Samples `n` random architectures and trains them, one compiled program per width bucket.

    The networks are grouped by their widest hidden layer rounded up onto `nets.bucket_width`'s ladder and each
    group trains at its own padded width, so a zoo of the paper's widths does not pay for 1000-wide padding on its
    100-wide networks. Each network keeps its own initialisation, shuffle and dropout keys, and neither draw
    depends on the padding, so a network trains as it would alone (up to float rounding). The zoo is stored at
    its widest bucket (`nets.repad`). Networks train in `nets.training_groups`: by width bucket, or at paper widths
    on a CPU (one network at a time anyway, `sharding.default_chunk_size`) each at its own shape (depth and
    per-layer buckets); ``meta["buckets"]`` records {width, or the shape's layer widths "384-224-...": networks} and
    the seconds of each.

    Args:
      prepared: the dataset from `prepare_data`.
      preset: sizes and schedule (paper: 100 epochs, batch 64).
      n, n_heldout: networks in the zoo and how many are held out from agent training (paper: 30, 6).
      seed: seeds the architectures, initialisations, shuffles and the held-out choice (together with the
        dataset's name, so that zoos of different datasets draw different architectures).
      epochs: overrides `preset.train_epochs`.
      progress: called as progress(epochs_done, epochs_total) between chunks of `chunk_epochs` epochs (the
        epochs of every bucket count: a zoo of two buckets reports 2 x epochs in all).
      devices: devices the population is split over (`sharding.job_mesh`: default every device, or the enclosing
        job's); ``meta`` records how many devices and processes trained it. The networks are the same on any count.
    Returns:
      The `Zoo` (n networks at the widest bucket's padded shape).
    """
    with sharding.use_mesh(sharding.job_mesh(devices)):
        return _build_zoo(prepared, preset, n, n_heldout, seed, epochs, progress, chunk_epochs)


def _build_zoo(prepared: PreparedData, preset: Preset, n: int, n_heldout: int, seed: int, epochs: int | None,
               progress, chunk_epochs: int) -> Zoo:
    """`build_zoo` on the mesh of the enclosing `sharding.use_mesh` block."""
    if not 0 <= n_heldout < n:
        raise ValueError(f"n_heldout must be in 0..{n - 1}, got {n_heldout}")
    epochs = preset.train_epochs if epochs is None else epochs
    s = prepared.splits
    widest = nets.NetDims.for_preset(preset, prepared.n_features, prepared.n_classes)
    # The dataset's name is folded into the key: the paper draws each dataset's architectures afresh, and one key
    # for all would give every zoo the same 30 architectures and the same held-out indices.
    dataset_key = zlib.crc32(prepared.dataset.name.encode()) & 0x7FFFFFFF
    chunks = _epoch_chunks(epochs, chunk_epochs)
    k_arch, init_keys, train_keys = jax.device_get(_zoo_keys(np.int32(seed), np.uint32(dataset_key), n, len(chunks)))
    all_archs = jax.device_get(_sample_archs(k_arch, preset, widest, n, prepared.n_features, prepared.n_classes))
    widest_bucket = max(nets.width_buckets(all_archs))
    dims = dataclasses.replace(widest, w_max=widest_bucket)
    # where networks train one after another anyway (paper widths on a CPU), each trains at its own shape
    own_shapes = sharding.own_shapes(widest_bucket)
    groups = nets.training_groups(all_archs, widest, own_shapes=own_shapes)
    train_data = fit.stack_data([(s.x_train, s.y_train)], widest.d_max)
    # the test rows padded to the training rows' count (padded rows count for nothing): one evaluate program
    test_data = fit.stack_data([(s.x_test, s.y_test)], widest.d_max, n_max=max(len(s.x_train), len(s.x_test)))
    start = time.perf_counter()
    done, parts, bucket_meta = 0, [], {}
    for idx, bdims in groups:
        bucket_start = time.perf_counter()
        archs = nets.fit_arch(jax.tree_util.tree_map(lambda a: a[idx], all_archs), bdims)  # noqa: B023
        part, done = _train_bucket(preset, bdims, dims, idx, archs, init_keys, chunks, train_keys, n,
                                   (train_data, test_data), done, progress, epochs * len(groups))
        parts.append(part)
        bucket_meta[bdims.label() if own_shapes else str(bdims.w_max)] = {
            "networks": len(idx), "seconds": time.perf_counter() - bucket_start}
        programs.checkpoint()  # a safe point: this bucket's programs are done; cleared when over the bounds
    variables, archs, train_acc, test_acc, final_loss = _gather_buckets(parts)
    _check_trained_finite(variables, n, prepared.dataset.name)
    rng = np.random.default_rng([seed, dataset_key])
    heldout = np.zeros(n, bool)
    heldout[rng.choice(n, n_heldout, replace=False)] = True
    meta = _zoo_meta(prepared, seed, epochs, start, bucket_meta, len(groups) * len(set(chunks)), final_loss)
    meta.update(sharding.run_record(sharding.active_mesh()))  # devices, processes, platform
    return Zoo(dataset=prepared.dataset.name, preset=preset, dims=dims, variables=variables, archs=archs,
               train_accuracy=train_acc, test_accuracy=test_acc, heldout=heldout, meta=meta)


def _epoch_chunks(epochs: int, chunk_epochs: int) -> list[int]:
    """The epochs in training chunks of `chunk_epochs` (the last one shorter; none for 0 epochs)."""
    chunks = []
    while sum(chunks) < epochs:
        chunks.append(min(chunk_epochs, epochs - sum(chunks)))
    return chunks


def _train_bucket(preset: Preset, bdims: nets.NetDims, dims: nets.NetDims, idx, archs, init_keys, chunks,
                  train_keys, n: int, data, done: int, progress, total: int):
    """Trains the networks `idx` of one width bucket (`archs` at its width `bdims`) chunk by chunk, reporting
    `progress`. Returns ((idx, variables and archs repadded to `dims`, train accuracy, test accuracy, final train
    loss), the epochs done over all buckets)."""
    train_data, test_data = data
    mesh = sharding.active_mesh()
    spread = sharding.spreads(mesh)
    # on several devices the population is padded to a multiple of them (copies of the last network, dropped below)
    (members, archs), real = sharding.pad_to_mesh((np.asarray(idx), archs), mesh if spread else None)
    model = nets.make_model(bdims, preset)
    variables = _init_networks(model, init_keys[members], archs)
    trainer = fit.make_trainer(model, preset.learning_rate)
    opt_state = trainer.init_opt_state(variables)
    index = np.zeros(len(members), np.int32)
    if spread:
        variables, opt_state, archs, index = sharding.put_batch((variables, opt_state, archs, index), mesh)
        train_data, test_data = sharding.put_replicated((train_data, test_data), mesh)
    losses = []
    for chunk, keys in zip(chunks, train_keys):
        keys = sharding.put_batch(keys[members], mesh) if spread else keys[members]
        args = (keys, variables, opt_state, archs, index, train_data)
        variables, opt_state, loss = trainer.train_compiled(args, epochs=chunk, batch_size=preset.train_batch)(*args)
        losses.append(np.asarray(sharding.gather(loss))[real])
        done += chunk
        if progress is not None:
            progress(done, total)
    train_acc = np.asarray(sharding.gather(trainer.evaluate(variables, archs, index, train_data)))[real]
    test_acc = np.asarray(sharding.gather(trainer.evaluate(variables, archs, index, test_data)))[real]
    if spread:  # the whole population on the host, its padding dropped
        variables, archs = sharding.drop_padding(sharding.gather((variables, archs)), real)
    variables, archs = nets.repad(*jax.device_get((variables, archs)), bdims, dims)  # on the host
    return (idx, variables, archs, train_acc, test_acc,
            np.concatenate(losses, axis=1)[:, -1] if losses else np.full(len(idx), np.nan)), done


def _gather_buckets(parts: list[tuple]):
    """(variables, archs, train accuracy, test accuracy, final train loss) of the whole zoo, in network order,
    from the buckets' parts (`_train_bucket`)."""
    order = np.argsort(np.concatenate([p[0] for p in parts]))
    gather = lambda *a: np.concatenate(a)[order]  # noqa: E731
    variables = jax.tree_util.tree_map(gather, *[p[1] for p in parts])
    archs = jax.tree_util.tree_map(gather, *[p[2] for p in parts])
    train_acc, test_acc, final_loss = (gather(*[p[k] for p in parts]) for k in (3, 4, 5))
    return variables, archs, train_acc, test_acc, final_loss


def _check_trained_finite(variables: dict, n: int, name: str) -> None:
    """A ValueError naming the networks of the zoo `name` that trained to non-finite weights, if any."""
    finite = np.all([np.isfinite(np.asarray(leaf)).reshape(n, -1).all(1)
                     for leaf in jax.tree_util.tree_leaves(variables)], axis=0)
    if not finite.all():
        raise ValueError(f"{name}: networks {', '.join(map(str, np.flatnonzero(~finite)))} of {n} "
                         f"trained to non-finite (NaN or infinite) weights; check the data for extreme values")


def _zoo_meta(prepared: PreparedData, seed: int, epochs: int, start: float, bucket_meta: dict,
              train_programs: int, final_loss: np.ndarray) -> dict:
    """The zoo's ``meta`` (what ``zoo.json`` records besides the networks); `start`: when training began."""
    s = prepared.splits
    return {
        "format": ZOO_FORMAT,
        "seed": seed,
        "seed_rule": "per-dataset (crc32 of the name folded into the seed)",
        "epochs": epochs,
        "train_seconds": time.perf_counter() - start,
        "buckets": bucket_meta,
        "train_programs": train_programs,  # one per (bucket, chunk length): the compiles
        "dataset_source": prepared.dataset.source,
        "data_seed": prepared.seed,
        "rows": prepared.dataset.n_rows,
        "features": prepared.n_features,
        "classes": prepared.n_classes,
        "split_sizes": {"train": len(s.train_idx), "test": len(s.test_idx), "finetune": len(s.finetune_idx),
                        "val": len(s.val_idx)},
        "split_digest": prepared.split_digest(),
        "final_train_loss": final_loss.tolist() if epochs else [],
    }


def save_zoo(zoo: Zoo, out_dir, overwrite: bool = False) -> Path:
    """Writes ``<out_dir>/<dataset>/{zoo.json, networks.npz}``; refuses to overwrite unless asked.

    The files are written to ``<out_dir>/.building/<dataset>/`` and the folder renamed into place once complete,
    so a process killed while saving leaves no half zoo where `find_zoos` looks.
    """
    path = Path(out_dir) / zoo.dataset
    if (path / "zoo.json").exists() and not overwrite:
        raise FileExistsError(f"a zoo already exists at {path}; pass overwrite=True (CLI: --overwrite) to replace it")
    final, path = path, Path(out_dir) / ".building" / zoo.dataset
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    arrays = {}
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(zoo.variables))[0]
    for key_path, leaf in flat:
        arrays["variables/" + "/".join(str(getattr(k, "key", k)) for k in key_path)] = np.asarray(leaf)
    for field in dataclasses.fields(nets.Arch):
        arrays[f"arch/{field.name}"] = np.asarray(getattr(zoo.archs, field.name))
    np.savez_compressed(path / "networks.npz", **arrays)
    doc = {
        "dataset": zoo.dataset,
        "preset": dataclasses.asdict(zoo.preset),
        # a zoo is stored at one uniform shape: no layer_widths key, so the format is the one earlier versions read
        "dims": {k: v for k, v in dataclasses.asdict(zoo.dims).items() if k != "layer_widths" or v is not None},
        "meta": zoo.meta,
        "networks": [zoo.describe(i) for i in range(len(zoo))],
    }
    (path / "zoo.json").write_text(json.dumps(doc, indent=1))
    if final.exists():
        shutil.rmtree(final)
    path.replace(final)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
    return final


def load_zoo(path) -> Zoo:
    """Loads a zoo written by `save_zoo` (the folder, or its zoo.json)."""
    path = Path(path)
    if path.name == "zoo.json":
        path = path.parent
    if not (path / "zoo.json").exists() or not (path / "networks.npz").exists():
        raise FileNotFoundError(f"{path} is not a zoo folder (expected zoo.json and networks.npz in it)")
    doc = json.loads((path / "zoo.json").read_text())
    if doc.get("meta", {}).get("format") != ZOO_FORMAT:
        raise ValueError(f"{path}: unsupported zoo format {doc.get('meta', {}).get('format')!r}")
    preset_doc = dict(doc["preset"])
    preset_doc["widths"] = tuple(preset_doc["widths"])
    preset = Preset(**preset_doc)
    dims = nets.NetDims(**doc["dims"])
    with np.load(path / "networks.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    variables: dict = {}
    for key, value in arrays.items():
        if not key.startswith("variables/"):
            continue
        node = variables
        parts = key.split("/")[1:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = jax.device_put(value)  # jnp.asarray would compile a one-op program per shape
    archs = jax.device_put(nets.Arch(**{f.name: arrays[f"arch/{f.name}"] for f in dataclasses.fields(nets.Arch)}))
    nets_doc = doc["networks"]
    return Zoo(
        dataset=doc["dataset"], preset=preset, dims=dims, variables=variables, archs=archs,
        train_accuracy=np.array([d["train_accuracy"] for d in nets_doc]),
        test_accuracy=np.array([d["test_accuracy"] for d in nets_doc]),
        heldout=np.array([d["heldout"] for d in nets_doc]), meta=doc["meta"],
    )


def check_data_matches(zoo: Zoo, prepared: PreparedData) -> None:
    """Raises ValueError if `prepared` is not the data the zoo was trained on (different rows or splits)."""
    if prepared.split_digest() != zoo.meta["split_digest"]:
        raise ValueError(
            f"the data for {zoo.dataset!r} does not match the zoo's splits (digest {prepared.split_digest()} vs "
            f"{zoo.meta['split_digest']}): different file, preset row cap or seed")


def load_zoo_with_data(path, data_dir=None) -> tuple[Zoo, PreparedData]:
    """Loads a zoo and re-prepares exactly its data (same file, row cap, seed), checked by split digest.

    The dataset is found by name in `data_dir` or, failing that, at the path recorded when the zoo was built.
    """
    zoo = load_zoo(path)
    source = zoo.meta.get("dataset_source", zoo.dataset)
    candidates = [zoo.dataset] if data_dir is not None else []
    if source not in ("sklearn",) and Path(str(source)).exists():
        candidates.append(source)
    candidates.append(zoo.dataset)
    last_error = None
    for name in candidates:
        try:
            prepared = prepare_data(name, zoo.preset, seed=zoo.meta.get("data_seed", 0), data_dir=data_dir)
            check_data_matches(zoo, prepared)
            return zoo, prepared
        except (ValueError, FileNotFoundError) as err:
            last_error = err
    raise ValueError(f"cannot find the data the zoo at {path} was trained on ({zoo.dataset!r}): {last_error}")


def zoo_folders(root) -> dict[str, Path]:
    """dataset -> zoo folder under `root` (a zoo folder itself, or a folder of them); {} if there is none."""
    root = Path(root)
    if (root / "zoo.json").exists():
        return {root.name: root}
    if not root.is_dir():
        return {}
    return {p.parent.name: p.parent for p in sorted(root.glob("*/zoo.json"))}


def find_zoos(root, names=None) -> list[Path]:
    """Zoo folders under `root` (a zoo folder itself, or a folder of them), optionally only `names`."""
    root = Path(root)
    if (root / "zoo.json").exists():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"zoo folder {root} does not exist")
    found = zoo_folders(root)
    damaged = sorted(p.parent for p in root.glob("*/networks.npz") if not (p.parent / "zoo.json").exists())
    if damaged and (names is None or any(p.name in names for p in damaged)):
        raise FileNotFoundError(f"{damaged[0]} holds networks.npz but no zoo.json (a damaged or unfinished zoo); "
                                f"rebuild it with `neon-jax zoo` or move it out of {root}")
    if names is None:
        if not found:
            raise FileNotFoundError(f"no zoo under {root} (build one with `neon-jax zoo`)")
        return list(found.values())
    missing = [n for n in names if n not in found]
    if missing:
        raise FileNotFoundError(f"no zoo for {', '.join(missing)} under {root}; found: {', '.join(found) or 'none'}")
    return [found[n] for n in names]
