"""What every benchmark shares: the machine and versions it ran on, which neon_jax was measured, the data and
zoos it measures on, and small helpers. One module per benchmark imports these; `run.py` drives several."""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from pathlib import Path

import jax
import numpy as np

from neon_jax import zoo as zoo_lib

CACHE_DIR = Path(os.environ.get("NEON_JAX_BENCH_CACHE", Path(__file__).resolve().parent / ".cache"))  # zoos reused between runs


DEFAULT_DATA_DIR = "/work/shared/data/neon"


RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def versions() -> dict:
    import flax
    import jaxlib
    import optax
    import torch

    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "flax": flax.__version__, "optax": optax.__version__, "torch": torch.__version__,
            "numpy": np.__version__}


def neon_jax_provenance() -> dict:
    """Which neon_jax was measured: its path, the repository's HEAD, and per module whether it matches HEAD."""
    import subprocess

    import neon_jax

    pkg = Path(neon_jax.__file__).resolve().parent
    repo = Path(__file__).resolve().parent.parent
    out = {"path": str(pkg), "repo": str(repo)}
    try:
        out["head"] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                     check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return out
    changed = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "neon_jax"], capture_output=True,
                             text=True).stdout.split("\n")
    out["neon_jax_modified_since_head"] = [line[3:] for line in changed if line.strip()]
    return out


def device_info(torch_device: str) -> dict:
    d = jax.devices()[0]
    return {"jax_platform": d.platform, "jax_device_kind": d.device_kind, "jax_device_count": jax.device_count(),
            "cpu_model": cpu_model(), "cpu_cores": core_count(), "torch_device": torch_device,
            "hostname_platform": platform.platform()}


def device_slug() -> str:
    d = jax.devices()[0]
    if d.platform == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", f"{d.platform}-{d.device_kind}".lower()).strip("-")


def load_prepared(name: str, preset, data_dir: str, seed: int):
    """The dataset as the zoo sees it (subsampled to the preset's row cap, split): from `data_dir`, or one of
    scikit-learn's bundled sets by name, else breast_cancer."""
    if data_dir and Path(data_dir).is_dir():
        return zoo_lib.prepare_data(name, preset, seed=seed, data_dir=data_dir), name
    if name in ("iris", "wine", "breast_cancer", "digits"):
        return zoo_lib.prepare_data(name, preset, seed=seed, data_dir=None), name
    print(f"data folder {data_dir!r} not found; falling back to scikit-learn breast_cancer", file=sys.stderr)
    return zoo_lib.prepare_data("breast_cancer", preset, seed=seed, data_dir=None), "breast_cancer"


def take(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def cached_zoo(dataset: str, preset, n: int, seed: int, data_dir: str):
    """(Zoo, PreparedData): loaded from benchmarks/.cache when its splits match the data, else built and saved."""
    prepared = zoo_lib.prepare_data(dataset, preset, seed=seed, data_dir=data_dir)
    folder = CACHE_DIR / f"zoo_{preset.name}_n{n}_seed{seed}"
    if (folder / prepared.dataset.name / "zoo.json").exists():
        zoo = zoo_lib.load_zoo(folder / prepared.dataset.name)
        try:
            zoo_lib.check_data_matches(zoo, prepared)
            if len(zoo) == n and zoo.preset == preset:
                print(f"zoo: {len(zoo)} networks from {folder / prepared.dataset.name}", flush=True)
                return zoo, prepared
        except ValueError:
            pass
    print(f"zoo: training {n} {preset.name} networks on {dataset} (cached in {folder}) ...", flush=True)
    start = time.perf_counter()
    zoo = zoo_lib.build_zoo(prepared, preset, n=n, n_heldout=min(6, n - 1), seed=seed)
    zoo_lib.save_zoo(zoo, folder, overwrite=True)
    print(f"zoo: built in {time.perf_counter() - start:.0f}s, test accuracy mean {zoo.test_accuracy.mean():.3f}",
          flush=True)
    return zoo, prepared
