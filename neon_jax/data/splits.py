"""Splits (neon_spec.md §2.1): the base network's 70/30 split and the environment's 80/20 split of its training
part (`make_splits`), and a stratified row cap (`subsample`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from neon_jax.data.types import Dataset, DatasetError, Splits


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
