"""Names and folders: the data folders (``data_dir``, ``NEON_JAX_DATA_DIR``), the datasets they hold (listed with
their task and size), and `load_dataset`, which finds a name, a path, ``openml:`` or ``tfds:`` and reads it."""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neon_jax.data.preprocess import _encode_labels, _manifest_task, _parse_column, resolve_task
from neon_jax.data.readers import (
    _check_columns,
    _load_csv,
    _load_openml,
    _load_sklearn,
    _load_tfds,
    _read_csv,
    _sklearn_bunch,
)
from neon_jax.data.types import (
    _CSV_SUFFIXES,
    _SKLEARN_SETS,
    DEFAULT_DATA_ENV,
    MANIFEST_NAME,
    TASKS,
    Dataset,
    DatasetError,
    DatasetInfo,
    _stem,
)


def list_datasets(data_dir=None) -> list[DatasetInfo]:
    """Lists the scikit-learn sets and every CSV file in the data folders (and their immediate subfolders).

    Names are unique and each loads with `load_dataset(name, data_dir)`. A file's name is its file name without
    ``.csv``/``.csv.gz``. When two entries would share a name, the first claims it (data folders in the given
    order, top-level files before subfolders) and later files are listed as ``<subfolder>/<name>``; a file beats a
    scikit-learn set of the same name, and scikit-learn's regression set is always ``sklearn:diabetes``, so
    ``diabetes`` means one dataset only (the neon Pima file), with or without a data folder. ``MANIFEST.csv``
    files are not datasets. Files that cannot be read are left out with a warning. Row and class counts come from
    a scan of the target column, cached per file and mtime.
    """
    infos = []
    for name, entry in _registry(_data_dirs(data_dir))[0].items():
        if entry.kind == "sklearn":
            info = _sklearn_info(entry.ref)
        else:
            try:
                info = _scan_file(*_file_stamp(entry.ref))
            except DatasetError as exc:
                warnings.warn(f"skipping {entry.ref}: {exc}", stacklevel=2)
                continue
        infos.append(dataclasses.replace(info, name=name))
    return infos


def load_dataset(name, data_dir=None, *, target: str | None = None, scale: bool = True,
                 task: str | None = None) -> Dataset:
    """Loads and preprocesses one dataset (see the module docstring for the preprocessing).

    Args:
      name: a name from `list_datasets` ("iris", "kropt", "neon/diabetes", "sklearn:diabetes"), a path to a
        ``.csv``/``.csv.gz`` file, ``"openml:<name or id>"`` or ``"tfds:<name>"``.
      data_dir: a folder or a list of folders holding CSV files (searched with their immediate subfolders);
        default: the ``NEON_JAX_DATA_DIR`` environment variable (``os.pathsep``-separated), else none, so only
        the scikit-learn sets are known.
      target: target column name (CSV and OpenML); default: the last column (OpenML: its default target).
      scale: min-max scale X with the full data's per-column min and max, as the paper does (this leaks the test
        rows' min/max into the scaling, exactly like the original). False keeps the imputed, one-hot values.
      task: "classification" or "regression" to override detection. Detection: a ``MANIFEST.csv`` (column
        ``task``) in the file's folder or its parent; otherwise a non-numeric target, or a numeric one with at
        most 30 distinct integer values, is classification, anything else regression.

    Returns:
      The Dataset; X (n, d) float32, y (n,) int32 or float32.

    Raises:
      DatasetError: unknown name (the message lists the known names), unreadable file, no rows, one class, a
        missing target column, fewer than 2 columns, or an OpenML/TFDS source that cannot be fetched.
    """
    if task is not None and task not in TASKS:
        raise DatasetError(f"task must be one of {TASKS}, got {task!r}")
    if isinstance(name, os.PathLike):
        return _load_csv(Path(name), target=target, scale=scale, task=task)
    name = str(name)
    if name.startswith("openml:"):
        return _load_openml(name[len("openml:"):], target=target, scale=scale, task=task)
    if name.startswith("tfds:"):
        return _load_tfds(name[len("tfds:"):], scale=scale, task=task)
    if name.lower().endswith(_CSV_SUFFIXES):
        return _load_csv(Path(name).expanduser(), target=target, scale=scale, task=task)
    dirs = _data_dirs(data_dir)
    listed, aliases = _registry(dirs)
    entry = listed.get(name) or aliases.get(name)
    if entry is None:  # a forgiving second try: a unique case-insensitive match ("House_8l")
        matches = [e for key, e in {**aliases, **listed}.items() if key.lower() == name.lower()]
        entry = matches[0] if len({id(e) for e in matches}) == 1 else None
    if entry is None:
        if Path(name).is_file():  # a CSV file without the usual suffix
            return _load_csv(Path(name), target=target, scale=scale, task=task)
        raise DatasetError(_unknown_name_message(name, listed, dirs))
    if entry.kind == "sklearn":
        if target is not None:
            raise DatasetError(f"target= applies to CSV and OpenML data, not to the scikit-learn set {name!r}")
        return _load_sklearn(entry.ref, scale=scale, task=task)
    return _load_csv(Path(entry.ref), target=target, scale=scale, task=task, name=entry.name)


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str  # the listed name
    kind: str  # "sklearn" | "file"
    ref: str   # sklearn key or file path


def _data_dirs(data_dir) -> list[Path]:
    """The data folders: ``data_dir`` (one folder or a list) or else $NEON_JAX_DATA_DIR; missing folders raise."""
    if data_dir is None:
        raw = [p for p in os.environ.get(DEFAULT_DATA_ENV, "").split(os.pathsep) if p]
        origin = f"${DEFAULT_DATA_ENV}"
    else:
        raw = [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)
        origin = "data_dir"
    dirs = [Path(p).expanduser() for p in raw]
    for d in dirs:
        if not d.is_dir():
            raise DatasetError(f"data folder {str(d)!r} (from {origin}) does not exist or is not a folder")
    return dirs


def _csv_files(folder: Path) -> list[Path]:
    """CSV data files directly inside ``folder`` (sorted), without hidden files and manifests."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name.lower().endswith(_CSV_SUFFIXES) and not p.name.startswith(".")
                  and p.name.lower() != MANIFEST_NAME.lower())


def _registry(dirs: Sequence[Path]) -> tuple[dict[str, _Entry], dict[str, _Entry]]:
    """(listed name -> entry, alias -> entry). Aliases: ``<subfolder>/<stem>`` for files, ``sklearn:<name>``."""
    files = []  # (stem, qualified name, path), in priority order
    for d in dirs:
        files += [(_stem(p), _stem(p), p) for p in _csv_files(d)]
        for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files += [(_stem(p), f"{sub.name}/{_stem(p)}", p) for p in _csv_files(sub)]
    listed: dict[str, _Entry] = {}
    aliases: dict[str, _Entry] = {}
    for stem, qualified, path in files:
        # A name already taken falls back to the qualified name, then to the full path (always loadable).
        name = next(n for n in (stem, qualified, str(path)) if n not in listed)
        listed[name] = entry = _Entry(name, "file", str(path))
        aliases.setdefault(qualified, entry)
    for key, (_, task) in _SKLEARN_SETS.items():  # a regression set is always sklearn:<key>: "diabetes" is Pima's
        name = key if key not in listed and task == "classification" else f"sklearn:{key}"
        listed[name] = entry = _Entry(name, "sklearn", key)
        aliases[f"sklearn:{key}"] = entry
    # scikit-learn sets first, then files: the order a user expects in a listing.
    listed = {k: v for k, v in listed.items() if v.kind == "sklearn"} | {
        k: v for k, v in listed.items() if v.kind == "file"}
    return listed, aliases


def _entry_task(entry: _Entry) -> str | None:
    """The task of a listed entry when it is known without reading the file (scikit-learn's table, a manifest)."""
    if entry.kind == "sklearn":
        return _SKLEARN_SETS[entry.ref][1]
    found = _manifest_task(Path(entry.ref))
    return found[0] if found else None


def _unknown_name_message(name: str, listed: dict[str, _Entry], dirs: Sequence[Path]) -> str:
    where = (f"data folders searched: {', '.join(map(str, dirs))}" if dirs else
             "no data folder is set, so only the scikit-learn sets are known")
    tasks = {n: _entry_task(e) for n, e in listed.items()}
    names = [n for n in listed if tasks[n] != "regression"]
    regression = [n for n in listed if tasks[n] == "regression"]
    also = f" (regression, which pruning does not take: {', '.join(regression)})" if regression else ""
    return (f"unknown dataset {name!r}; available: {', '.join(names)}{also}. {where}. To use CSV files, pass "
            f"--data-dir <folder> (data_dir= in Python) or set {DEFAULT_DATA_ENV}=<folder>[{os.pathsep}<folder>...] "
            f"(each folder and its immediate subfolders are searched), or give a path to a .csv/.csv.gz file, "
            f"'openml:<name or id>' or 'tfds:<name>'.")


def _file_stamp(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=1024)
def _scan_file(path: str, mtime_ns: int, size: int) -> DatasetInfo:
    """DatasetInfo of a CSV from its header and target column only (cached per path, mtime and size)."""
    del mtime_ns, size  # part of the cache key only
    columns = _read_csv(Path(path), header_only=True).columns
    _check_columns(Path(path), columns)
    target = _read_csv(Path(path), usecols=[len(columns) - 1]).iloc[:, 0]
    task, _ = resolve_task(target, path=path)
    parsed = _parse_column(target)
    classes = 0
    if task == "classification":  # counted as _encode_labels counts them
        classes = len(_encode_labels(parsed, parsed.present, None)[1])
    return DatasetInfo(_stem(Path(path)), task, int(parsed.present.sum()), len(columns) - 1, classes, path)


def _sklearn_info(key: str) -> DatasetInfo:
    bunch = _sklearn_bunch(key)
    task = _SKLEARN_SETS[key][1]
    classes = len(np.unique(bunch.target)) if task == "classification" else 0
    return DatasetInfo(key, task, int(bunch.data.shape[0]), int(bunch.data.shape[1]), classes, "sklearn")
