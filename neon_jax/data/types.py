"""The dataset's types (`Dataset`, `DatasetInfo`, `Splits`), its errors and warnings, and the constants every
step shares (missing-value tokens, the scaling note, the manifest's name)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

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


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _CSV_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
