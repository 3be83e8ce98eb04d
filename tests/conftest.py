"""Shared fixtures: the offline datasets beside the repository and small real data for fast tests."""

import os
from pathlib import Path

# The suite is dominated by XLA compile time (tiny presets, many program shapes): skipping XLA's optimisation
# passes halves the compiles and costs little run time at these sizes. Set before JAX is imported; also
# inherited by the notebook kernels the tests start. Benchmarks never run with it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# No persistent compilation cache in the suite, in the test processes or in the CLI subprocesses and notebook kernels
# they start (`NEON_JAX_CACHE_DIR=off`, inherited): a CI run on 2 cores crashed with a segmentation fault inside
# XLA's executable serialisation (`put_executable_and_time`) while writing a shared cache, and its worker's loss
# hung the run. Each process compiles its own programs; JAX_COMPILATION_CACHE_DIR set by hand is still honoured.
os.environ.setdefault("NEON_JAX_CACHE_DIR", "off")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """`$NEON_JAX_TEST_DATA`, else ../shared/data beside the repository."""
    return Path(os.environ.get("NEON_JAX_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not (root / "neon").is_dir():
        pytest.skip(f"shared datasets not found at {root} (set NEON_JAX_TEST_DATA)")
    return root


@pytest.fixture(scope="session")
def wine_splits():
    """Real data: scikit-learn's wine, min-max scaled, 70/30 split (178 rows, 13 features, 3 classes)."""
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    x, y = load_wine(return_X_y=True)
    x = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0)
    return x_tr, y_tr.astype(np.int32), x_te, y_te.astype(np.int32)
