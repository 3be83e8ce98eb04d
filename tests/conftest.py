"""Shared fixtures: the offline datasets beside the repository and small real data for fast tests."""

import os
from pathlib import Path

# The suite is dominated by XLA compile time (tiny presets, many program shapes): skipping XLA's optimisation
# passes halves the compiles and costs little run time at these sizes. Set before JAX is imported; also
# inherited by the notebook kernels the tests start. Benchmarks never run with it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# No persistent compilation cache in the suite, in the test processes or in the CLI subprocesses and notebook kernels
# they start (`NEON_JAX_CACHE_DIR=off`, inherited): each process compiles its own programs, and no test writes
# executables to disk. JAX_COMPILATION_CACHE_DIR set by hand is still honoured.
os.environ.setdefault("NEON_JAX_CACHE_DIR", "off")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drops every compiled program after each test module (`programs.clear`).

    Not for memory: the library bounds its own programs (`neon_jax.programs`: each run over a pool, zoo bucket
    and train-agent iteration is a checkpoint that clears past the bounds). It is here so each module starts with
    no programs: tests that count compiles (one program per shape) then never see a clear of the library's fall
    between the two runs they compare, whatever ran before them in the same process.
    """
    yield
    from neon_jax import programs

    programs.clear()


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
