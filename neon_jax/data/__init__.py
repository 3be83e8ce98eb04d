"""Tabular datasets: loading, the paper's preprocessing, and the paper's splits.

    types        Dataset, DatasetInfo, Splits, errors, shared constants
    registry     data folders, names, listing, `load_dataset`
    readers      CSV, scikit-learn, OpenML, TFDS
    preprocess   columns, missing values, the task, label and feature encoding, scaling
    splits       the paper's splits, a stratified row cap

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

from neon_jax.data.preprocess import resolve_task
from neon_jax.data.registry import list_datasets, load_dataset
from neon_jax.data.splits import MIN_ROWS, make_splits, split_indices, subsample
from neon_jax.data.types import (
    DEFAULT_DATA_ENV,
    MANIFEST_NAME,
    MAX_INTEGER_CLASSES,
    MISSING_CATEGORY,
    MISSING_TOKENS,
    SCALING_NOTE,
    TASKS,
    Dataset,
    DatasetError,
    DatasetInfo,
    DatasetWarning,
    Splits,
)

__all__ = [
    "DEFAULT_DATA_ENV", "MANIFEST_NAME", "MAX_INTEGER_CLASSES", "MIN_ROWS", "MISSING_CATEGORY", "MISSING_TOKENS",
    "SCALING_NOTE", "TASKS", "Dataset", "DatasetError", "DatasetInfo", "DatasetWarning", "Splits", "list_datasets",
    "load_dataset", "make_splits", "resolve_task", "split_indices", "subsample",
]
