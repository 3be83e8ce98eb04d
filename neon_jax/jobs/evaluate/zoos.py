"""Where each dataset's zoo comes from: found under the zoo root, or built under the results folder.

A dataset whose zoo is not under `EvalConfig.zoo_root` (or every dataset, without one) gets a zoo built under
``OUT/zoos/<dataset>/`` (`prepare_data` + `build_zoo` + `save_zoo`, seed 0, the preset's schedule). A zoo
lands there by one rename once complete (`zoo.save_zoo`), so a run killed mid-build leaves no half zoo, and the
next run loads what was built instead of building it again.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from neon_jax import sharding
from neon_jax import zoo as zoo_lib
from neon_jax.jobs.evaluate.config import EvalConfig
from neon_jax.presets import Preset

BUILT_ZOOS = "zoos"  # OUT/zoos/<dataset>/
DEFAULT_PRESET = "cpu"
ZOO_SEED = 0  # seeds the data split and the zoo, as `neon-jax zoo` by default


def built_root(out_dir) -> Path:
    """The folder the evaluation in `out_dir` builds its zoos in: ``out_dir/zoos``."""
    return Path(out_dir) / BUILT_ZOOS


def locate_zoos(datasets, zoo_root, out_dir) -> dict[str, Path | None]:
    """Finds each dataset's zoo.

    Args:
      datasets: dataset names.
      zoo_root: folder of zoos, or None.
      out_dir: the results folder, whose ``zoos/`` holds the zoos earlier runs built.

    Returns:
      dataset -> its zoo under `zoo_root`, else under ``out_dir/zoos``, else None (a zoo to build).
    """
    given = {}
    if zoo_root is not None:
        root = Path(zoo_root)
        if not root.exists():
            raise FileNotFoundError(f"zoo folder {root} does not exist")
        given = zoo_lib.zoo_folders(root)
    built = built_root(out_dir)
    ours = zoo_lib.zoo_folders(built)
    both = [n for n in datasets if n in given and n in ours and given[n].resolve() != ours[n].resolve()]
    if both:
        raise FileExistsError(f"zoos of {', '.join(both)} are both under {zoo_root} and under {built} (built by an "
                              f"earlier run of this evaluation): remove one of them")
    return {name: given.get(name, ours.get(name)) for name in datasets}


def _zoo_doc(path: Path) -> dict:
    return json.loads((path / "zoo.json").read_text())


def resolve_preset(requested: str | None, located: dict[str, Path | None]) -> str:
    """The evaluation's preset: `requested`, else the preset of the first zoo found, else "cpu"."""
    if requested is not None:
        return requested
    for path in located.values():
        if path is not None:
            return _zoo_doc(path)["preset"]["name"]
    return DEFAULT_PRESET


def check_zoos(located: dict[str, Path | None], cfg: EvalConfig, out_dir) -> None:
    """Checks the zoos found against the evaluation (from their zoo.json, before any work).

    Every zoo must be of `cfg.preset`; a zoo built under ``out_dir/zoos`` must also hold `cfg.zoo_networks`
    networks of which `cfg.zoo_heldout` are held out.
    """
    built = built_root(out_dir).resolve()
    for name, path in located.items():
        if path is None:
            continue
        doc = _zoo_doc(path)
        if doc["preset"]["name"] != cfg.preset:
            raise ValueError(f"the zoo of {name!r} was built with preset {doc['preset']['name']!r}, not "
                             f"{cfg.preset!r}")
        if path.resolve().parent == built:
            n, heldout = len(doc["networks"]), sum(bool(d["heldout"]) for d in doc["networks"])
            if (n, heldout) != (cfg.zoo_networks, cfg.zoo_heldout):
                raise ValueError(f"{path} (built by an earlier run) holds {n} networks, {heldout} held out, not "
                                 f"{cfg.zoo_networks} and {cfg.zoo_heldout}: delete it, or pass --zoo-networks {n} "
                                 f"--zoo-heldout {heldout}")


def prepare_missing(located: dict[str, Path | None], preset: Preset, data_dir, zoo_root) -> dict:
    """Loads and splits the data of every dataset without a zoo (`zoo.prepare_data`).

    Returns:
      dataset -> `zoo.PreparedData`; a dataset that cannot be loaded, or is no classification task, raises
      FileNotFoundError naming it.
    """
    where = f"under {zoo_root} " if zoo_root is not None else ""
    prepared = {}
    for name in [n for n, path in located.items() if path is None]:
        try:
            prepared[name] = zoo_lib.prepare_data(name, preset, seed=ZOO_SEED, data_dir=data_dir)
        except (ValueError, FileNotFoundError) as err:
            raise FileNotFoundError(f"no zoo for {name} {where}and no data to build one: {err}") from None
    return prepared


def build_zoo(prepared: zoo_lib.PreparedData, preset: Preset, out_dir, n: int, n_heldout: int,
              progress: bool = True) -> Path:
    """Trains a zoo of `n` networks and saves it as ``out_dir/zoos/<dataset>/``.

    Args:
      prepared: the dataset (`prepare_missing`).
      preset: sizes and the training schedule.
      out_dir: the results folder.
      n, n_heldout: networks in the zoo, and how many of them are held out.
      progress: a progress bar over the training epochs.

    Returns:
      The zoo folder.
    """
    name = prepared.dataset.name
    with tqdm(total=preset.train_epochs, desc=f"zoo {name}: {n} networks", unit="epoch",
              disable=not progress) as bar:
        def advance(done, total):  # total: the epochs of every width bucket
            bar.total = total
            bar.update(done - bar.n)

        zoo = zoo_lib.build_zoo(prepared, preset, n=n, n_heldout=n_heldout, seed=ZOO_SEED, progress=advance)
    if not sharding.is_writer():  # several processes: process 0 writes the zoo, the others read it back
        return built_root(out_dir) / name
    return zoo_lib.save_zoo(zoo, built_root(out_dir), overwrite=True)  # `locate_zoos` found no zoo.json there


def load_zoos(paths: dict[str, Path], data_dir, prepared: dict) -> dict:
    """Loads zoos with exactly the data they were trained on.

    Args:
      paths: dataset -> zoo folder.
      data_dir: where to look for the datasets (`zoo.load_zoo_with_data`).
      prepared: dataset -> `zoo.PreparedData` already in memory (the zoos just built), checked by split digest.

    Returns:
      dataset -> (`zoo.Zoo`, `zoo.PreparedData`).
    """
    loaded = {}
    for name, path in paths.items():
        if name in prepared:
            z = zoo_lib.load_zoo(path)
            zoo_lib.check_data_matches(z, prepared[name])
            loaded[name] = (z, prepared[name])
        else:
            loaded[name] = zoo_lib.load_zoo_with_data(path, data_dir)
    return loaded
