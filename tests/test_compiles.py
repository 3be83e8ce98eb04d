"""The main job compiles each of its programs once, and no eager operation compiles a one-op program on the way
(`neon_jax.compile_log`); the programs' numbers are those of the code before the compile work."""

import hashlib
import json

import jax
import numpy as np
import pytest

import neon_jax
from neon_jax import compile_log

# Programs JAX compiles for single operations run eagerly (jnp.asarray -> "stage", jnp.zeros -> "broadcast_in_dim",
# x.astype -> "convert_element_type", x[i] -> "gather", ...): none may come back into the main job.
ONE_OP = {"stage", "broadcast_in_dim", "convert_element_type", "gather", "slice", "stack", "unstack", "_pad",
          "add", "mul", "select_n", "concatenate", "reshape", "squeeze", "iota", "_threefry_seed",
          "_threefry_split", "_threefry_fold_in", "_broadcast_arrays", "dynamic_slice", "scatter"}
# a random base network on iris (sample, initialise, train, evaluate), the keys of its zoo and of the run, and
# the pruning program: 7 programs
MAX_COMPILES = 8


def _prune(seed: int, agent: str = "random"):
    return neon_jax.prune("iris", preset="tiny", agent=agent, tau=5, seed=seed, progress=None)


def test_main_job_compiles_each_program_once_and_no_one_op_programs():
    first = _prune(0).report["compiled"]
    names = {p["name"] for p in first["programs"] if p["compiles"]}
    assert not names & ONE_OP, f"eager one-op programs compiled: {sorted(names & ONE_OP)}"
    assert all(p["compiles"] <= 1 for p in first["programs"]), first["programs"]
    assert first["totals"]["compiles"] <= MAX_COMPILES, first["programs"]
    assert {"train", "candidates_program", "program"} & names  # the report names the programs it compiled
    assert first["by_stage"]["compile"]["compiles"] >= 1 and first["by_stage"]["base_network"]["compiles"] >= 1
    # another seed on the same shapes: every program is reused, nothing compiles again
    again = _prune(1).report["compiled"]
    assert again["totals"]["compiles"] == 0, again["programs"]


def test_compile_log_counts_traces_and_compiles_by_stage():
    f = jax.jit(lambda x: x * 2 + 1)
    with compile_log.Recorder() as log:
        f(np.ones(3, np.float32))
        log.end_stage("first")
        f(np.ones(3, np.float32))  # cached: no trace, no compile
        f(np.ones(4, np.float32))  # a new shape: traced and compiled again
        log.end_stage("second")
    (row,) = [p for p in log.programs() if p["name"] == "<lambda>"]
    assert row["traces"] == 2 and row["compiles"] == 2 and row["cache_hits"] == 0 and row["compile_s"] > 0
    assert log.by_stage()["first"]["compiles"] == 1 and log.by_stage()["second"]["compiles"] == 1
    assert log.totals()["compiles"] == 2
    assert "2 compiles" in compile_log.summary_line(log.report())
    f(np.ones(5, np.float32))  # after stop: not recorded
    assert log.totals()["compiles"] == 2


def _digest(result) -> tuple[str, str]:
    """(SHA-256 of the original's and the pruned network's arrays, of the candidate table)."""
    h = hashlib.sha256()
    for net in (result.original, result.pruned):
        for layer in net.layers:
            for key in sorted(layer):
                if isinstance(layer[key], np.ndarray):
                    h.update(key.encode())
                    h.update(np.ascontiguousarray(layer[key]).tobytes())
    table = [(c["episode"], c["step"], c["params"], c["widths"], c["val_acc"], c["test_acc"], c["chosen"])
             for c in result.candidates]
    return h.hexdigest(), hashlib.sha256(json.dumps(table).encode()).hexdigest()[:16]


# Recorded with the code before the compile work (commit 051390e) on the project's 2-core CPU, JAX 0.10.2, under
# the suite's JAX_DISABLE_MOST_OPTIMIZATIONS=1: the host-side NumPy, the key programs and the shared evaluate
# program changed no number. Another CPU or JAX may round differently: re-record there.
RECORDED = {
    "random": ("a3f8e1190dd458b020b05ada2e83bcbd4caffb381d43f233e154fc9c7cc0cb9a", "d71cec529293740c"),
    "pretrained": ("cdcc3b9902d6d065362d8b6880ecb461a024a776ce7550d9bb7cb584d936ff22", "4e409ceebadac72c"),
}


@pytest.mark.skipif(jax.__version__ != "0.10.2", reason="recorded with JAX 0.10.2")
@pytest.mark.parametrize("agent", sorted(RECORDED))
def test_main_job_outputs_unchanged(agent):
    assert _digest(_prune(0, agent)) == RECORDED[agent]


def test_warm_run_reads_programs_without_tracing_them(tmp_path):
    """With the compile cache on, a second run reads the pruning and training programs back from their exports
    (`compile_cache.aot_compile`): no tracing of them, nothing compiled, and the same files byte for byte."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NEON_JAX_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)  # as users run it
    runs = []
    for name in ("cold", "warm"):
        out = tmp_path / name
        cmd = [sys.executable, "-m", "neon_jax", "prune", "--dataset", "iris", "--preset", "tiny", "--agent",
               "random", "--quiet", "--out", str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append((out, json.loads((out / "report.json").read_text())["compiled"]))
    (cold_out, cold), (warm_out, warm) = runs
    traced = lambda log: {p["name"]: p["trace_s"] for p in log["programs"] if p["name"] in ("program", "train")}  # noqa: E731
    # warm, only a thin wrapper of the exported program is traced (milliseconds, against seconds)
    assert set(traced(cold)) == set(traced(warm)) == {"program", "train"}
    assert all(traced(warm)[k] < 0.25 * traced(cold)[k] for k in traced(cold)), (traced(cold), traced(warm))
    assert warm["totals"]["cache_hits"] == warm["totals"]["compiles"] >= 1  # every program read back
    for name in ("candidates.csv", "pruned.npz", "original.npz"):
        assert (cold_out / name).read_bytes() == (warm_out / name).read_bytes(), name
