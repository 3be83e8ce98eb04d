"""Readers: a CSV file (quoted, gzipped, any missing-value spelling), a scikit-learn bundled set, an OpenML set
(``openml:<name or id>``) or a TFDS set (``tfds:<name>``, imported only when asked for), each through `_build`."""

from __future__ import annotations

import functools
import gzip
import importlib
from pathlib import Path

import numpy as np
import pandas as pd

from neon_jax.data.preprocess import _build, _unquote
from neon_jax.data.types import _SKLEARN_SETS, Dataset, DatasetError, _stem


@functools.cache
def _sklearn_bunch(key: str):
    from sklearn import datasets

    return getattr(datasets, _SKLEARN_SETS[key][0])()


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
