"""What every benchmark shares: the machine and versions it ran on, which neon_jax was measured, timing (ahead-of-time
compiles, best-of-repeats runs, the machine's contention, the PyTorch thread choice), the data and zoos it measures
on, the set-ups several benchmarks share, and small helpers. One module per benchmark imports these; `run.py`
drives several."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import jax
import numpy as np

from neon_jax import env as env_lib
from neon_jax import fit, nets
from neon_jax import pool as pool_lib
from neon_jax import zoo as zoo_lib
from neon_jax.presets import get_preset

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


def write_json(path, doc, indent: int = 2, default=None) -> None:
    """`doc` as JSON at `path` (its folder created), with a final newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=indent, default=default) + "\n")


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Timing


def load_average() -> dict:
    return {"load_average_1min": os.getloadavg()[0]}


def timeit(fn, repeats: int):
    """(best seconds, all seconds, last output) of `repeats` calls; outputs are blocked on."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def compile_aot(jitted, *args, **kwargs):
    """(compiled, seconds): `jitted.lower(*args, **kwargs).compile()`, ahead of time, timed."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - t0


class CpuMeter:
    """Wall time, this process's CPU time and the share of the machine's CPU that *other* processes used.

    The share comes from /proc/stat (all CPUs) minus this process's own CPU time; on a machine shared with other
    jobs it says how far a wall-clock time is from a quiet-machine one (0 = nobody else ran).
    """

    def __enter__(self):
        self._stat0, self._self0, self._t0 = self._proc_stat(), self._self_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = self._self_cpu() - self._self0
        stat1 = self._proc_stat()
        if stat1 is None or self._stat0 is None:
            self.other_share = None
            return False
        busy = (stat1[0] - self._stat0[0]) / os.sysconf("SC_CLK_TCK")
        total = (stat1[1] - self._stat0[1]) / os.sysconf("SC_CLK_TCK")
        self.other_share = max(0.0, busy - self.cpu_s) / total if total > 0 else None
        return False

    @staticmethod
    def _self_cpu() -> float:
        t = os.times()
        return t.user + t.system

    @staticmethod
    def _proc_stat():
        try:
            f = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f[:8]) - idle, sum(f[:8])


# ----------------------------------------------------------------------------------------------------------------
# PyTorch: where it runs, and with how many threads


def torch_device() -> str:
    """The PyTorch side runs where the original did: on the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def choose_torch_threads(setting, probe_fn) -> tuple[int, dict | None]:
    """The PyTorch thread count to time with (set), and the probe times that chose it.

    ``setting`` is a number (used as is) or "auto": `probe_fn` is timed with 1 thread and with all cores
    (interleaved, best of 2) and the faster count wins, so PyTorch is never timed at a handicap (tiny networks run
    faster on one thread, and an OpenMP team of 2 threads degrades badly when the cores are shared).
    """
    import torch

    if setting != "auto":
        torch.set_num_threads(int(setting))
        return int(setting), None
    best = {}
    for _ in range(2):
        for n in sorted({1, core_count()}):
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            probe_fn()
            best[n] = min(best.get(n, np.inf), time.perf_counter() - t0)
    n = min(best, key=best.get)
    torch.set_num_threads(n)
    return n, {str(k): v for k, v in best.items()}


# ----------------------------------------------------------------------------------------------------------------
# Set-ups: population training on a real dataset, and a zoo of trained networks as environments


@dataclasses.dataclass(frozen=True)
class PopulationSetup:
    """A dataset's training split and the padded model and trainer population training runs at."""

    preset: object
    prepared: object
    dataset: str  # the dataset actually used (breast_cancer when the data folder is missing)
    x_train: np.ndarray  # float32
    y_train: np.ndarray  # int64
    x_check: np.ndarray  # the test rows, float32: outputs compared on both sides
    dims: nets.NetDims
    model: object
    trainer: object
    data: object  # fit.stack_data of the training split


def population_setup(preset_name: str, dataset: str, data_dir: str, seed: int) -> PopulationSetup:
    preset = get_preset(preset_name)
    prepared, dataset = load_prepared(dataset, preset, data_dir, seed)
    s = prepared.splits
    x_train, y_train = np.asarray(s.x_train, np.float32), np.asarray(s.y_train, np.int64)
    dims = nets.NetDims.for_preset(preset, prepared.n_features, prepared.n_classes)
    model = nets.make_model(dims, preset)
    return PopulationSetup(preset=preset, prepared=prepared, dataset=dataset, x_train=x_train, y_train=y_train,
                           x_check=np.asarray(s.x_test, np.float32), dims=dims, model=model,
                           trainer=fit.make_trainer(model, preset.learning_rate),
                           data=fit.stack_data([(x_train, y_train)], dims.d_max))


class Work:
    """The zoo networks, their data and the JAX environment every environment benchmark shares."""

    def __init__(self, args):
        self.preset = get_preset(args.preset)
        path = Path(args.zoo) if args.zoo else None
        if path is not None and (path / "zoo.json").exists():
            self.zoo, self.prepared = zoo_lib.load_zoo_with_data(path, data_dir=args.data_dir)
            self.zoo_source = str(path)
        else:
            self.zoo, self.prepared = cached_zoo(args.dataset, self.preset, getattr(args, "zoo_networks", 30), 0,
                                                 args.data_dir)
            self.zoo_source = "benchmarks/.cache"
        if self.zoo.preset != self.preset:
            raise SystemExit(f"the zoo at {path} is of preset {self.zoo.preset.name}, not {self.preset.name}")
        self.pool = pool_lib.EnvPool.from_zoos([(self.zoo, self.prepared)], "all", args.tau, self.preset)
        self.params, self.dims, self.names = self.pool.batch(np.arange(len(self.pool))), self.pool.dims, self.pool.names
        self.host_params = jax.device_get(self.params)
        self.n = len(self.names)
        self.tau = args.tau
        self.passes = args.passes
        self.env = env_lib.NeonEnv(env_lib.EnvConfig(passes=args.passes), self.dims, self.preset)
        self.reset = jax.jit(jax.vmap(self.env.reset))
        self.vstep = jax.jit(jax.vmap(self.env.step))

    def batch(self, b):
        idx = np.arange(b) % self.n
        return idx, take(self.params, idx)

    def bucket_groups(self, idx):
        """The networks `idx` split into shape groups as `runner.run` splits them (`nets.shape_groups` with no
        merging, batch 1; at paper widths on a CPU each network at its own shape): [(positions in idx, dims,
        EnvParams at dims)]."""
        from neon_jax import sharding

        sub = self.pool.subset(idx)
        own = sharding.own_shapes(max(nets.width_buckets(sub.archs)))
        return [(members, dims, sub.subset(members).repadded(dims).batch(np.arange(len(members))))
                for members, dims in nets.shape_groups(sub.archs, sub.dims, 1, own)]

    def torch_env(self, i, seed):
        from benchmarks.torch_reference.env_step import torch_env_from_jax

        return torch_env_from_jax(take(self.host_params.variables, i), take(self.host_params.arch, i), self.dims,
                                  self.preset, self.prepared.splits, self.passes, self.tau, seed, torch_device())

    def describe(self) -> dict:
        s = self.prepared.splits
        return {"dataset": self.prepared.dataset.name, "zoo": self.zoo_source, "zoo_networks": self.n,
                "rows": {"finetune": len(s.finetune_idx), "val": len(s.val_idx), "train": len(s.train_idx)},
                "features": self.prepared.n_features, "classes": self.prepared.n_classes,
                "preset": self.preset.name, "passes": self.passes, "tau": self.tau, "cut": "reinit",
                "finetune_epochs_max": self.preset.finetune_epochs, "finetune_batch": self.preset.finetune_batch,
                "patience": self.preset.patience, "activation_sample": self.preset.activation_sample,
                "feature_map": [self.preset.feature_rows, self.preset.feature_width],
                "padded_dims": dataclasses.asdict(self.dims),
                "zoo_widths": [self.zoo.describe(i)["widths"] for i in range(self.n)]}
