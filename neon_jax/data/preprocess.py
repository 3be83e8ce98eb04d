"""Preprocessing (neon_spec.md §7): columns parsed (quotes, missing values, numbers), the task decided (a
``MANIFEST.csv`` row, else a heuristic), labels encoded to 0..K-1, features one-hot encoded and min-max scaled on the
full data, as the paper; `_build` turns a frame into a `Dataset`."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from neon_jax.data.types import (
    _QUOTED,
    MANIFEST_NAME,
    MAX_INTEGER_CLASSES,
    MISSING_CATEGORY,
    MISSING_TOKENS,
    SCALING_NOTE,
    TASKS,
    Dataset,
    DatasetError,
    DatasetWarning,
    _stem,
)


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
