"""Tabular datasets: loading, the paper's preprocessing, and the paper's splits.

Sources (see `load_dataset`):
  * scikit-learn's bundled sets: iris, wine, breast_cancer, digits (classification), diabetes (regression);
  * CSV files (``.csv`` or ``.csv.gz``, one header row, last column = target by default) found in data folders
    given by ``data_dir`` or the ``NEON_JAX_DATA_DIR`` environment variable (``os.pathsep``-separated), and in
    their immediate subfolders, or named directly by path;
  * ``openml:<name or id>`` (scikit-learn's ``fetch_openml``; needs network or a filled cache);
  * ``tfds:<name>`` (``tensorflow_datasets``, an optional dependency imported only when asked for).

Preprocessing follows the original NEON notebooks (neon_spec.md §7): every feature becomes a float, the target
is label-encoded to 0..K-1, and X is min-max scaled per column with the minimum and maximum of the FULL dataset,
before any split. This leaks the test rows' minimum and maximum into the scaling, exactly like the original; we
keep it so results stay comparable. Beyond what the paper needed (its CSVs were all numeric), real files need:
  * quotes: header names and cells quoted with ``'`` or ``"`` are unquoted (``'1'`` -> ``1``), so a quoted
    number is a number (as the paper's float cast); gzip is recognised from the bytes, not the file name;
  * missing values: empty cells, ``?`` and the usual missing-value tokens (`MISSING_TOKENS`: NA, N/A, NaN, null,
    None, ``-``, ..., in any letter case, as pandas reads them) are missing. A numeric column's missing cells get
    the column's median; a categorical column's missing cells become their own category ``<missing>``; rows with a
    missing target are dropped. Non-finite numbers (``inf``, ``nan``) count as missing;
    a text column that is mostly numbers is categorical, with a `DatasetWarning`;
  * categorical features: a column that is not entirely numeric after unquoting is one-hot encoded with its
    categories sorted as strings (deterministic; ``<missing>`` comes last); the new columns are named
    ``"<column>=<category>"``;
  * constant columns are kept (scaling maps them to 0) and listed in ``meta["constant_columns"]``;
  * labels: numeric labels are sorted numerically (labels 1..K map to 0..K-1, ``2 < 10``), other labels are
    sorted as strings.

Splits (neon_spec.md §2.1): `make_splits` reproduces the base-network split (70/30, ``random_state=0``) and the
environment's split of the training part (80/20, ``random_state=1``, not stratified) with
``sklearn.model_selection.train_test_split``.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA_ENV = "NEON_JAX_DATA_DIR"

TASKS = ("classification", "regression")
MISSING_TOKENS = ("", "?", "-", "na", "n/a", "nan", "-nan", "null", "none", "#n/a", "#na", "<na>", "nil", "missing")
"""Cells that mean "no value", compared after unquoting and lower-casing (pandas' default list, plus ?, - and a
few more spellings)."""
MISSING_CATEGORY = "<missing>"
# A numeric target with at most this many distinct integer values is taken as class labels (when no manifest
# says otherwise).
MAX_INTEGER_CLASSES = 30
SCALING_NOTE = "minmax fit on full data (as the paper)"
MANIFEST_NAME = "MANIFEST.csv"

_SKLEARN_SETS = {  # name -> (loader in sklearn.datasets, task)
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "digits": ("load_digits", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
_CSV_SUFFIXES = (".csv.gz", ".csv")
_QUOTED = r"""^(['"])(.*)\1$"""


class DatasetWarning(UserWarning):
    """A file loaded, but probably not as its author meant (for example numbers read as categories)."""


class DatasetError(ValueError):
    """A dataset cannot be found, read or used; the message names the dataset or file and the problem."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """One entry of `list_datasets`.

    Attributes:
      name: the name `load_dataset` accepts.
      task: "classification" or "regression".
      rows: rows with a target value (rows with a missing target are not counted; `load_dataset` drops them).
      features: feature columns in the source, before one-hot expansion of categorical columns.
      classes: number of classes; 0 for regression.
      source: "sklearn" or the file's path.
    """

    name: str
    task: str
    rows: int
    features: int
    classes: int
    source: str


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A preprocessed dataset.

    Attributes:
      name: dataset name.
      task: "classification" or "regression".
      X: (n, d) float32; with scaling, each column is min-max scaled to [0, 1] over all n rows (constant
        columns are 0).
      y: (n,) int32 class ids 0..K-1 (classification) or float32 targets (regression, unscaled).
      feature_names: d names, after one-hot expansion (``"color=red"``).
      class_names: K original label strings in id order; () for regression.
      source: "sklearn", the file path, "openml:<name>" or "tfds:<name>".
      meta: provenance and preprocessing record: n_raw_features, raw_feature_names, target, categorical_columns,
        categories, n_missing_imputed, n_missing_categorical, n_dropped_missing_target, constant_columns,
        feature_min / feature_max ((d,) float64, before scaling), scaling, task_source, label_values.
    """

    name: str
    task: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    source: str
    meta: dict

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        """K for classification, 0 for regression."""
        return len(self.class_names)

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, task={self.task!r}, rows={self.n_rows}, features={self.n_features}, "
                f"classes={self.n_classes}, source={self.source!r})")


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """The paper's splits of one dataset (neon_spec.md §2.1, §7).

    Attributes:
      x_train, y_train: (n_train, d), (n_train,): base-network training split (70%).
      x_test, y_test: the held-out 30% (the paper's ``X_val.csv``): final reported accuracy.
      x_finetune, y_finetune: 80% of the training split: the environment's fine-tune set.
      x_val, y_val: 20% of the training split: the environment's internal validation set (reward accuracies).
      train_idx, test_idx, finetune_idx, val_idx: int64 row indices into the Dataset, in the order
        train_test_split returns them (x_train == X[train_idx], x_finetune == X[finetune_idx], ...).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_finetune: np.ndarray
    y_finetune: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray
    finetune_idx: np.ndarray
    val_idx: np.ndarray

    def __repr__(self) -> str:
        return (f"Splits(train={len(self.train_idx)}, test={len(self.test_idx)}, "
                f"finetune={len(self.finetune_idx)}, val={len(self.val_idx)})")


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


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


def resolve_task(target: pd.Series, *, path: str | os.PathLike | None = None,
                 task: str | None = None) -> tuple[str, str]:
    """Decides classification vs regression for a target column.

    Args:
      target: (n,) raw target values (strings or numbers; missing values allowed).
      path: the CSV file the target came from; a ``MANIFEST.csv`` row for it (same folder or the parent folder,
        matched on ``name``) decides when present.
      task: an explicit choice, which wins.

    Returns:
      (task, how it was decided), e.g. ("regression", "manifest /data/MANIFEST.csv").
    """
    if task is not None:
        return task, "argument"
    if path is not None:
        found = _manifest_task(Path(path))
        if found is not None:
            return found
    parsed = _parse_column(target)
    if parsed.numbers is None:
        return "classification", "heuristic: non-numeric target"
    distinct = np.unique(parsed.numbers[parsed.present])
    if len(distinct) <= MAX_INTEGER_CLASSES and np.all(np.floor(distinct) == distinct):
        return "classification", f"heuristic: numeric target with {len(distinct)} distinct integer values"
    return "regression", "heuristic: numeric target with many or non-integer values"


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled split of ``range(n)`` with train_test_split semantics (not stratified, random_state=seed).

    Returns:
      (first, second): int64 index arrays; ``second`` holds ``ceil(fraction * n)`` rows, in the order
      ``sklearn.model_selection.train_test_split(np.arange(n), test_size=fraction, random_state=seed)`` returns.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"fraction must lie in (0, 1), got {fraction}")
    first, second = train_test_split(np.arange(n, dtype=np.int64), test_size=fraction, random_state=seed)
    return first, second


MIN_ROWS = 10  # every split of `make_splits` holds rows (3 test, 5 fine-tune, 2 validation)


def make_splits(ds: Dataset, seed: int = 0, test_fraction: float = 0.3, val_fraction: float = 0.2) -> Splits:
    """The paper's two-level split (neon_spec.md §2.1, §7).

    First ``split_indices(n, test_fraction, seed)`` gives train (70%) / test (30%); the paper used seed 0. Then the
    training rows, in that returned order, are split with ``split_indices(len(train), val_fraction, seed + 1)`` into
    fine-tune (80%) / internal validation (20%); the paper's environment used random_state=1, i.e. seed + 1 for the
    default seed 0. So ``make_splits(ds)`` reproduces the paper and other seeds shift both splits together.
    """
    if ds.n_rows < MIN_ROWS:
        raise ValueError(f"dataset {ds.name!r} has {ds.n_rows} rows: the paper's splits (train / test, then "
                         f"fine-tune / validation) need at least {MIN_ROWS}")
    train_idx, test_idx = split_indices(ds.n_rows, test_fraction, seed)
    ft_pos, val_pos = split_indices(len(train_idx), val_fraction, seed + 1)
    finetune_idx, val_idx = train_idx[ft_pos], train_idx[val_pos]
    return Splits(
        x_train=ds.X[train_idx], y_train=ds.y[train_idx],
        x_test=ds.X[test_idx], y_test=ds.y[test_idx],
        x_finetune=ds.X[finetune_idx], y_finetune=ds.y[finetune_idx],
        x_val=ds.X[val_idx], y_val=ds.y[val_idx],
        train_idx=train_idx, test_idx=test_idx, finetune_idx=finetune_idx, val_idx=val_idx,
    )


def subsample(ds: Dataset, max_rows: int | None, seed: int) -> Dataset:
    """A random subset of at most ``max_rows`` rows, stratified by class for classification.

    Every class keeps at least one row and the others are shared in proportion to class sizes (largest
    remainders), so class ids stay 0..K-1. Rows keep their original order; X keeps the full data's scaling.
    Returns ``ds`` itself when it has at most ``max_rows`` rows (or max_rows is None). The subset's meta records
    ``subsampled_from_rows``, ``subsample_max_rows`` and ``subsample_seed``.

    Raises:
      DatasetError: ``max_rows`` is smaller than the number of classes.
    """
    if max_rows is None or ds.n_rows <= max_rows:
        return ds
    if max_rows < 1:
        raise DatasetError(f"max_rows must be >= 1, got {max_rows}")
    rng = np.random.default_rng(seed)
    if ds.task == "classification":
        counts = np.bincount(ds.y, minlength=ds.n_classes)
        if max_rows < np.count_nonzero(counts):
            raise DatasetError(f"{ds.name}: max_rows={max_rows} cannot keep all {ds.n_classes} classes")
        take = _allocate(counts, max_rows)
        idx = np.concatenate([rng.choice(np.flatnonzero(ds.y == k), size=t, replace=False)
                              for k, t in enumerate(take) if t > 0])
    else:
        idx = rng.choice(ds.n_rows, size=max_rows, replace=False)
    idx = np.sort(idx)
    meta = {**ds.meta, "subsampled_from_rows": ds.n_rows, "subsample_max_rows": max_rows, "subsample_seed": seed}
    return dataclasses.replace(ds, X=ds.X[idx], y=ds.y[idx], meta=meta)


# ----------------------------------------------------------------------------------------------------------------
# Registry: data folders, names, listing
# ----------------------------------------------------------------------------------------------------------------


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


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _CSV_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


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


@functools.cache
def _sklearn_bunch(key: str):
    from sklearn import datasets

    return getattr(datasets, _SKLEARN_SETS[key][0])()


def _sklearn_info(key: str) -> DatasetInfo:
    bunch = _sklearn_bunch(key)
    task = _SKLEARN_SETS[key][1]
    classes = len(np.unique(bunch.target)) if task == "classification" else 0
    return DatasetInfo(key, task, int(bunch.data.shape[0]), int(bunch.data.shape[1]), classes, "sklearn")


@functools.lru_cache(maxsize=64)
def _read_manifest(path: str, mtime_ns: int) -> pd.DataFrame | None:
    del mtime_ns  # cache key only
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return None
    return frame if {"name", "task"} <= set(frame.columns) else None


def _manifest_task(path: Path) -> tuple[str, str] | None:
    """(task, "manifest <path>") from a MANIFEST.csv in the file's folder or its parent, if it lists the file."""
    stem = _stem(path)
    for folder in (path.parent, path.parent.parent):
        manifest = folder / MANIFEST_NAME
        if not manifest.is_file():
            continue
        frame = _read_manifest(str(manifest), manifest.stat().st_mtime_ns)
        if frame is None:
            continue
        rows = frame[frame["name"] == stem]
        if len(rows) > 1 and "suite" in frame.columns:  # same name in two suites: the folder name decides
            rows = rows[rows["suite"] == path.parent.name]
        if len(rows) and rows["task"].iloc[0] in TASKS:
            return rows["task"].iloc[0], f"manifest {manifest}"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Reading and preprocessing
# ----------------------------------------------------------------------------------------------------------------


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _sniff_quotechar(path: Path, compression: str | None) -> str:
    """``'`` when the first lines open more fields with ``'`` than with ``"``, else ``"``."""
    opener = gzip.open if compression == "gzip" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
        head = [fh.readline() for _ in range(20)]
    fields = [f.strip() for line in head for f in line.split(",")]
    singles = sum(f.startswith("'") for f in fields)
    doubles = sum(f.startswith('"') for f in fields)
    return "'" if singles > doubles else '"'


def _read_csv(path: Path, *, header_only: bool = False, usecols=None) -> pd.DataFrame:
    """Reads a CSV (gzip detected from the bytes) with unquoted header names; '' and '?' cells become NaN (the other
    `MISSING_TOKENS`, in any case and quoted or not, are recognised by `_parse_column`).

    Numeric columns come back as numbers; the others as object columns, to be unquoted and typed by
    `_parse_column`.
    """
    try:
        compression = "gzip" if _is_gzip(path) else None
        quotechar = _sniff_quotechar(path, compression)
        frame = pd.read_csv(
            path, compression=compression, quotechar=quotechar, skipinitialspace=True,
            na_values=["", "?"], keep_default_na=False, low_memory=False,
            encoding="utf-8-sig", encoding_errors="replace", nrows=0 if header_only else None, usecols=usecols)
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the file is empty (no header row)") from None
    except Exception as exc:  # gzip, zlib, unicode, parser errors: all mean the same to the caller
        raise DatasetError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    frame.columns = [_unquote(str(c)) for c in frame.columns]
    frame.attrs["quotechar"] = quotechar
    return frame


def _unquote(text: str) -> str:
    text = text.strip()
    match = re.match(_QUOTED, text, re.S)
    return match.group(2).strip() if match else text


@dataclasses.dataclass(frozen=True)
class _Parsed:
    """One raw column after unquoting: either numbers or text categories.

    Attributes:
      numbers: (n,) float64 with NaN for missing cells (empty, '?', non-finite), when every present cell is a
        number; else None.
      codes: (n,) int64 index into ``categories``, -1 for missing, for a text column; else None.
      categories: sorted distinct strings of a text column; else None.
    """

    numbers: np.ndarray | None
    codes: np.ndarray | None = None
    categories: np.ndarray | None = None

    @property
    def present(self) -> np.ndarray:
        """(n,) bool: the cell holds a value."""
        return ~np.isnan(self.numbers) if self.numbers is not None else self.codes >= 0


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _parse_column(col: pd.Series) -> _Parsed:
    """Unquotes and types one column. Text is handled per distinct value (pd.factorize), which keeps wide
    categorical files fast. A text column whose present cells are mostly numbers is still categorical (every
    distinct number becomes a category), with a warning naming the column and the cells that are not numbers."""
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        numbers = col.to_numpy(dtype=np.float64, na_value=np.nan)
        return _Parsed(np.where(np.isfinite(numbers), numbers, np.nan))
    raw_codes, uniques = pd.factorize(col)  # cells pandas already read as missing get code -1
    text = np.array([_unquote(str(u)) for u in uniques] + [""], dtype=object)  # last entry: code -1
    present = ~np.isin(np.array([t.lower() for t in text], dtype=object), MISSING_TOKENS)
    values = [_as_number(t) if p else np.nan for t, p in zip(text, present)]
    if any(v is None for v in values):  # some cell is not a number: a categorical column
        counts = np.bincount(np.where(raw_codes < 0, len(text) - 1, raw_codes), minlength=len(text))
        words = [i for i, v in enumerate(values) if v is None]
        numeric_cells = sum(counts[i] for i, v in enumerate(values) if v is not None and present[i])
        if numeric_cells > counts[words].sum():
            shown = ", ".join(repr(text[i]) for i in sorted(words, key=lambda i: -counts[i])[:5])
            warnings.warn(
                f"column {col.name!r} is mostly numbers ({numeric_cells} of {int(counts[present].sum())} cells) but "
                f"holds text ({shown}), so it is treated as categorical, one column per distinct value; if those "
                f"cells mean 'missing', replace them with an empty cell or one of {', '.join(MISSING_TOKENS[1:6])}",
                DatasetWarning, stacklevel=4)
        categories, inverse = np.unique(text[present].astype(str), return_inverse=True)
        mapping = np.full(len(text), -1, dtype=np.int64)
        mapping[present] = inverse
        return _Parsed(None, mapping[raw_codes], categories)
    table = np.array(values, dtype=np.float64)
    return _Parsed(np.where(np.isfinite(table), table, np.nan)[raw_codes])


def _check_columns(path: Path, columns) -> None:
    if len(columns) < 2:
        raise DatasetError(f"{path}: needs at least 2 columns (features and a target), found {len(columns)}: "
                           f"{list(columns)}")


def _load_csv(path: Path, *, target: str | None, scale: bool, task: str | None, name: str | None = None) -> Dataset:
    frame = _read_csv(path)
    _check_columns(path, frame.columns)
    if target is None:
        target_col = frame.columns[-1]
    else:
        target_col = _unquote(target)
        if target_col not in frame.columns:
            raise DatasetError(f"{path}: no target column {target!r}; columns: {list(frame.columns)}")
    if isinstance(frame.columns.get_loc(target_col), (slice, np.ndarray)):
        raise DatasetError(f"{path}: target column name {target_col!r} is not unique")
    return _build(
        name or _stem(path), str(path), frame.drop(columns=[target_col]), frame[target_col], scale=scale,
        task_hint=task, task_path=path, meta={"quotechar": frame.attrs["quotechar"]})


def _load_sklearn(key: str, *, scale: bool, task: str | None) -> Dataset:
    bunch = _sklearn_bunch(key)
    features = pd.DataFrame(bunch.data, columns=[str(c) for c in bunch.feature_names])
    task = task or _SKLEARN_SETS[key][1]
    label_names = None
    if task == "classification" and "target_names" in bunch:  # iris: 0 -> "setosa", ...
        label_names = [str(c) for c in bunch.target_names]
    return _build(key, "sklearn", features, pd.Series(bunch.target, name="target"), scale=scale, task_hint=task,
                  label_names=label_names)


def _load_openml(spec: str, *, target: str | None, scale: bool, task: str | None) -> Dataset:
    from sklearn import datasets

    query = {"data_id": int(spec)} if spec.isdigit() else {"name": spec}
    try:
        bunch = datasets.fetch_openml(**query, as_frame=True, parser="auto")
    except Exception as exc:  # network, HTTP and "no such dataset" errors all end here
        raise DatasetError(
            f"cannot fetch OpenML dataset {spec!r}: {type(exc).__name__}: {exc}. Fetching needs network access to "
            f"openml.org, or a scikit-learn data cache that already holds it; offline, export it to a CSV file "
            f"and load the file instead.") from exc
    frame = bunch.frame
    default_targets = list(bunch.target_names or [])
    target_col = target if target is not None else (default_targets[0] if default_targets else frame.columns[-1])
    if target_col not in frame.columns:
        raise DatasetError(f"openml:{spec}: no target column {target_col!r}; columns: {list(frame.columns)}")
    # Other default targets of a multi-target set are not features.
    drop = [c for c in default_targets if c != target_col] + [target_col]
    return _build(bunch.get("details", {}).get("name", spec), f"openml:{spec}",
                  frame.drop(columns=drop), frame[target_col], scale=scale, task_hint=task)


def _load_tfds(spec: str, *, scale: bool, task: str | None) -> Dataset:
    try:
        tfds = importlib.import_module("tensorflow_datasets")
    except ImportError as exc:
        raise DatasetError(
            f"tfds:{spec} needs the optional package tensorflow_datasets (pip install tensorflow "
            f"tensorflow-datasets); it is not installed ({exc})") from exc
    try:
        splits, info = tfds.load(spec, split=None, as_supervised=True, batch_size=-1, with_info=True)
    except Exception as exc:  # download failures (offline), unknown names
        raise DatasetError(
            f"cannot load TFDS dataset {spec!r}: {type(exc).__name__}: {exc}. Loading needs network access for the "
            f"first download, or a prepared copy in the TFDS data folder.") from exc
    xs, ys = [], []
    for split in sorted(splits):  # every split, in a fixed order: the paper's own splits are made later
        x, y = tfds.as_numpy(splits[split])
        xs.append(np.asarray(x).reshape(len(x), -1))
        ys.append(np.asarray(y).reshape(len(y)))
    X, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys)
    label_key = (getattr(info, "supervised_keys", None) or (None, "label"))[1]
    try:  # a ClassLabel feature knows its class names; other label features do not
        label_names = list(info.features[label_key].names) or None
    except (AttributeError, KeyError, TypeError):
        label_names = None
    if task is None and np.issubdtype(y.dtype, np.integer) and label_names:
        task = "classification"
    features = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    return _build(spec, f"tfds:{spec}", features, pd.Series(y, name=str(label_key)), scale=scale, task_hint=task,
                  label_names=label_names)


def _build(name: str, source: str, features: pd.DataFrame, target: pd.Series, *, scale: bool,
           task_hint: str | None, task_path: Path | None = None, label_names: Sequence[str] | None = None,
           meta: dict | None = None) -> Dataset:
    """Turns raw feature columns and a raw target into a Dataset.

    Args:
      features: (n, f) raw columns, numeric or text.
      target: (n,) raw target values.
      label_names: names of integer labels (label value v -> label_names[v]), as sklearn and TFDS give them.
    """
    where = source if source != "sklearn" else f"sklearn:{name}"
    if len(features) == 0:
        raise DatasetError(f"{where}: no data rows")
    task, task_source = resolve_task(target, path=task_path, task=task_hint)
    parsed = _parse_column(target)
    keep = parsed.present
    if not keep.any():
        raise DatasetError(f"{where}: no rows with a target value (column {target.name!r})")

    if task == "classification":
        y, class_names, label_values = _encode_labels(parsed, keep, label_names)
        if len(class_names) < 2:
            raise DatasetError(f"{where}: only one class ({class_names[0]!r}) in target column {target.name!r}; "
                               f"classification needs at least 2")
    else:
        if parsed.numbers is None:
            raise DatasetError(f"{where}: regression needs a numeric target, column {target.name!r} is not")
        y, class_names, label_values = parsed.numbers[keep].astype(np.float32), [], []

    features = features.iloc[np.flatnonzero(keep)] if not keep.all() else features
    X, feature_names, prep = _encode_features(features, scale=scale)
    record = {
        "n_raw_features": features.shape[1],
        "raw_feature_names": [str(c) for c in features.columns],
        "target": str(target.name),
        "n_dropped_missing_target": int((~keep).sum()),
        "task_source": task_source,
        "label_values": label_values,
        "scaling": SCALING_NOTE if scale else "none",
        **prep,
        **(meta or {}),
    }
    return Dataset(name=name, task=task, X=X, y=y, feature_names=tuple(feature_names),
                   class_names=tuple(class_names), source=source, meta=record)


def _encode_labels(parsed: _Parsed, keep: np.ndarray,
                   label_names: Sequence[str] | None) -> tuple[np.ndarray, list[str], list]:
    """Labels of the kept rows -> ((m,) int32 ids, class names, original label values), ids in sorted order.

    Numeric labels sort numerically (``2 < 10``) and are named by their canonical text (``'1'`` and ``1.0`` ->
    ``"1"``) or by ``label_names[value]``; text labels sort as strings.
    """
    if parsed.numbers is None:  # categories are sorted and each occurs in a kept row
        names = [str(c) for c in parsed.categories]
        return parsed.codes[keep].astype(np.int32), names, list(names)
    values, ids = np.unique(parsed.numbers[keep], return_inverse=True)
    if label_names is not None:
        names = [str(label_names[int(v)]) for v in values]
    else:
        names = [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in values]
    return ids.astype(np.int32), names, [v.item() for v in values]


def _encode_features(features: pd.DataFrame, *, scale: bool) -> tuple[np.ndarray, list[str], dict]:
    """(n, f) raw columns -> ((n, d) float32 X, d names, preprocessing record).

    Numeric columns: missing -> column median (0 if the column is all missing). Text columns: one-hot over the
    sorted categories, with "<missing>" appended last when cells are missing. Scaling: per column
    (x - min) / (max - min) over all rows, constant columns -> 0. Columns are filled one at a time into a float32
    array, so wide one-hot data never needs a float64 copy.
    """
    n = len(features)
    parsed = [_parse_column(features[c]) for c in features.columns]
    widths = [1 if p.numbers is not None else len(p.categories) + int((p.codes < 0).any()) for p in parsed]
    X = np.zeros((n, sum(widths)), dtype=np.float32)
    lo, hi = np.zeros(X.shape[1]), np.ones(X.shape[1])
    names, categorical, categories = [], [], {}
    n_imputed = n_missing_categorical = 0
    offset = 0
    for col, p, width in zip(features.columns, parsed, widths):
        if p.numbers is not None:
            values = p.numbers
            missing = np.isnan(values)
            if missing.any():
                n_imputed += int(missing.sum())
                values = np.where(missing, 0.0 if missing.all() else np.median(values[~missing]), values)
            lo[offset], hi[offset] = values.min(), values.max()
            if max(abs(lo[offset]), abs(hi[offset])) > np.finfo(np.float32).max:
                raise ValueError(f"column {col!r} holds values beyond float32's range (up to "
                                 f"{max(abs(lo[offset]), abs(hi[offset])):.3g}; the largest float32 is 3.4e+38): "
                                 f"networks train in float32, so rescale the column or mark those cells missing")
            if not scale:
                X[:, offset] = values
            elif hi[offset] > lo[offset]:  # constant columns stay 0
                X[:, offset] = (values - lo[offset]) / (hi[offset] - lo[offset])
            names.append(str(col))
        else:
            cats = [str(c) for c in p.categories]
            codes = p.codes
            if width > len(cats):
                n_missing_categorical += int((codes < 0).sum())
                cats.append(MISSING_CATEGORY)
                codes = np.where(codes < 0, len(cats) - 1, codes)
            if width == 1:  # a single category is a constant column of ones
                lo[offset] = 1.0
            if width > 1 or not scale:
                X[np.arange(n), offset + codes] = 1.0
            names += [f"{col}={c}" for c in cats]
            categorical.append(str(col))
            categories[str(col)] = cats
        offset += width
    prep = {
        "categorical_columns": categorical,
        "categories": categories,
        "n_missing_imputed": n_imputed,
        "n_missing_categorical": n_missing_categorical,
        "constant_columns": [name for name, a, b in zip(names, lo, hi) if b <= a],
        "feature_min": lo,
        "feature_max": hi,
    }
    return X, names, prep


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Rows to take per class: (K,) counts -> (K,) takes summing to ``total``, >= 1 for each present class."""
    quota = counts * (total / counts.sum())
    take = np.clip(np.floor(quota).astype(np.int64), (counts > 0).astype(np.int64), counts)
    while take.sum() < total:  # give to the class furthest below its quota that still has rows
        room = np.where(take < counts, quota - take, -np.inf)
        take[np.argmax(room)] += 1
    while take.sum() > total:  # the at-least-one rule overshot: take back where furthest above quota
        over = np.where(take > 1, take - quota, -np.inf)
        take[np.argmax(over)] -= 1
    return take
