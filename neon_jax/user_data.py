"""The user's own rows, used exactly as given: no scaling, no re-encoding, no reordering, no row cap.

    prepared = prepare_user_data((X_train, y_train), test=(X_test, y_test), validation=None, seed=0)

The training rows are the only rows the fine-tuning sees; the choice among candidates is made on the validation
rows (given, or split off the training rows, seeded); the test rows only report. Without test rows the report
says so and reports the validation rows. `check_inputs` compares a network's accuracy on the rows with the
majority-class rate before any work, and `check_feature_names` matches named columns with the names a model was
fitted on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neon_jax import data as data_lib
from neon_jax.nets import DenseNetwork
from neon_jax.zoo import PreparedData

MIN_FINETUNE, MIN_VALIDATION = 5, 2


def _features(X, what: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """(N, d) float32 rows and the column names of a DataFrame (None for arrays); errors name the problem."""
    names = None
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # a pandas DataFrame
        names = tuple(str(c) for c in X.columns)
        text = [str(c) for c, t in zip(X.columns, X.dtypes) if t.kind not in "biuf"]
        if text:
            raise ValueError(f"{what}: columns {text[:5]} are not numeric; encode them as the model was trained "
                             f"(the rows are used exactly as given)")
        X = X.to_numpy()
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array of rows, got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{what}: the rows are not numeric (dtype {X.dtype}); encode them as the model was "
                         f"trained (the rows are used exactly as given)")
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise ValueError(f"{what}: {int((~np.isfinite(X)).any(1).sum())} rows hold NaN or infinite values")
    return X, names


def _pair(pair, what: str, transform=None):
    try:
        X, y = pair
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (X, y)") from None
    names = tuple(str(c) for c in X.columns) if hasattr(X, "columns") else None
    if transform is not None:
        X = transform(X)
    X = _features(X, what)[0]
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"{what}: y must be 1-D with one label per row ({len(X)} rows), got shape {y.shape}")
    return X, y, names


def prepare_user_data(train, *, test=None, validation=None, classes=None, name: str = "user data", seed: int = 0,
                      val_fraction: float = 0.2, transform=None) -> PreparedData:
    """The user's rows as a `PreparedData` whose splits are theirs.

    Args:
      train: (X, y) training rows (NumPy arrays or a pandas DataFrame / Series): the fine-tuning rows, and the
        validation rows too when `validation` is None.
      test: (X, y) rows that only report (never fine-tuned on, never used to choose); None: the validation rows
        are reported instead (``splits.test_idx is splits.val_idx``).
      validation: (X, y) rows that choose among the candidates; None: `val_fraction` of the training rows,
        split off with `seed`.
      classes: the labels in the network's output order (a scikit-learn model's ``classes_``); None: the sorted
        labels of all rows given, or 0..K-1 for integer labels.
      name: the dataset's name in reports.
      transform: applied to every X as given (a DataFrame stays one) before use: a scikit-learn pipeline's steps
        before its MLP; None: none.

    Returns:
      `PreparedData` over the rows in the order train, validation, test (the splits' index arrays point there):
      x_train: all training rows; x_finetune: the training rows the fine-tune sees; x_val, x_test as above.
      ``dataset.meta["user_rows"]`` records the sizes and whether test rows were given.
    """
    parts = {"train": _pair(train, "training rows", transform)}
    if validation is not None:
        parts["validation"] = _pair(validation, "validation rows", transform)
    if test is not None:
        parts["test"] = _pair(test, "test rows", transform)
    widths = {k: v[0].shape[1] for k, v in parts.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"the row sets have different numbers of columns: {widths}")
    names = [v[2] for v in parts.values() if v[2] is not None]
    if any(n != names[0] for n in names):
        raise ValueError("the row sets' columns differ in names or order; give them the same columns")
    labels = np.concatenate([v[1] for v in parts.values()])
    if classes is None:
        classes = np.unique(labels)
        if labels.dtype.kind in "iu" and classes.min() >= 0:
            classes = np.arange(int(classes.max()) + 1)
    classes = np.asarray(classes)
    index = {c: i for i, c in enumerate(classes.tolist())}
    unknown = sorted({v for v in labels.tolist() if v not in index}, key=str)
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not among the classes {classes.tolist()[:10]}")
    if len(classes) < 2:
        raise ValueError(f"the rows hold {len(classes)} class; a classifier needs at least 2")
    X = np.concatenate([v[0] for v in parts.values()])
    y = np.array([index[v] for v in labels.tolist()], np.int32)
    sizes = {k: len(v[0]) for k, v in parts.items()}
    starts = np.cumsum([0] + list(sizes.values()))
    span = {k: np.arange(starts[i], starts[i + 1], dtype=np.int64) for i, k in enumerate(sizes)}
    train_idx = span["train"]
    if "validation" in span:
        finetune_idx, val_idx = train_idx, span["validation"]
    else:
        if len(train_idx) < MIN_FINETUNE + MIN_VALIDATION:
            raise ValueError(f"{len(train_idx)} training rows: at least {MIN_FINETUNE + MIN_VALIDATION} are needed "
                             f"to split off validation rows (or pass validation rows)")
        ft_pos, val_pos = data_lib.split_indices(len(train_idx), val_fraction, seed)
        finetune_idx, val_idx = train_idx[ft_pos], train_idx[val_pos]
    if len(finetune_idx) < MIN_FINETUNE or len(val_idx) < MIN_VALIDATION:
        raise ValueError(f"{len(finetune_idx)} fine-tune and {len(val_idx)} validation rows: at least "
                         f"{MIN_FINETUNE} and {MIN_VALIDATION} are needed")
    test_idx = span.get("test", val_idx)
    feature_names = names[0] if names and transform is None else tuple(f"x{i}" for i in range(X.shape[1]))
    rows = {**{k: int(v) for k, v in sizes.items()}, "finetune": int(len(finetune_idx))}
    meta = {"column_names": list(names[0]) if names else None, "user_rows": {**rows,
                          "validation_rows": int(len(val_idx)), "test_given": test is not None,
                          "validation_given": validation is not None},
            "scaling": "none (the rows as given)" if transform is None else "the model's own steps before its MLP"}
    ds = data_lib.Dataset(name=name, task="classification", X=X, y=y,
                          feature_names=tuple(feature_names),
                          class_names=tuple(str(c) for c in classes.tolist()), source="user arrays", meta=meta)
    splits = data_lib.Splits(
        x_train=X[train_idx], y_train=y[train_idx], x_test=X[test_idx], y_test=y[test_idx],
        x_finetune=X[finetune_idx], y_finetune=y[finetune_idx], x_val=X[val_idx], y_val=y[val_idx],
        train_idx=train_idx, test_idx=test_idx, finetune_idx=finetune_idx, val_idx=val_idx)
    return PreparedData(dataset=ds, splits=splits, seed=seed)


def check_inputs(net: DenseNetwork, x: np.ndarray, y: np.ndarray, what: str = "the training rows") -> dict:
    """The network's accuracy on rows it should know against always guessing the most common class.

    A network no better than that guess on its own training rows is being fed rows preprocessed otherwise than it
    was trained (another scaling, another column order, another label order): a ValueError says so in one line.

    Returns:
      {"accuracy", "majority_rate", "rows"} (for the report).
    """
    y = np.asarray(y)
    acc = float((np.argmax(net.logits(np.asarray(x, np.float32)), 1) == y).mean())
    majority = float(np.bincount(y, minlength=net.n_classes).max() / len(y))
    one_row = 1.0 / len(y)
    if acc <= majority + one_row:
        raise ValueError(
            f"the network scores {acc:.4f} on {what}, no better than always predicting the most common class "
            f"({majority:.4f}): the rows are probably not preprocessed as the network was trained. Pass the rows "
            f"exactly as the model saw them (prune((X, y), test=...); CLI --dataset train.csv --preprocess none), or "
            f"check_inputs=False (CLI --no-input-check) to prune anyway")
    return {"accuracy": acc, "majority_rate": majority, "rows": int(len(y))}


def check_feature_names(expected: tuple[str, ...] | None, given: tuple[str, ...] | None,
                        source: str = "model.feature_names_in_") -> None:
    """A ValueError naming the mismatch when a model fitted on named columns is given other columns (or the same
    columns in another order); nothing to check when either side has no names."""
    if expected is None or given is None:
        return
    expected, given = tuple(expected), tuple(given)
    if expected == given:
        return
    missing = [n for n in expected if n not in given]
    extra = [n for n in given if n not in expected]
    if missing or extra:
        raise ValueError(f"the model was fitted on other columns: missing {missing[:5]}, unexpected {extra[:5]}")
    moved = [n for i, n in enumerate(given) if expected[i] != n]
    raise ValueError(f"the columns are in another order than the model was fitted on: {len(moved)} moved, first "
                     f"{moved[:3]} (expected order starts {list(expected[:3])}); reorder them as X[{source}]")


def read_rows(path) -> tuple:
    """(X, y) of a CSV file read as it is (``.csv`` or ``.csv.gz``; header row; the target in the last column):
    a DataFrame of the feature columns, in file order, and the target Series. No scaling, encoding or imputing."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    frame = pd.read_csv(path)
    if frame.shape[1] < 2:
        raise ValueError(f"{path}: expected feature columns and the target in the last column, got "
                         f"{frame.shape[1]} column")
    return frame.iloc[:, :-1], frame.iloc[:, -1]
