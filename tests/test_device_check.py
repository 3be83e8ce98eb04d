"""The prepared device check (`benchmarks/device_check.py`): its dry run at the tiny preset on this CPU runs every
benchmark of the real check through the same code and writes what the real check writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_writes_every_benchmark(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "check"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NEON_JAX_BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_check.py"), str(out), "--dry-run"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "device_check.json").read_text())
    assert doc["dry_run"] and doc["preset"] == "tiny" and not doc["skipped"]
    assert list(doc["benchmarks"]) == ["population", "env_steps", "episode", "agent_update", "batch_scaling",
                                       "gymnax"]  # device_scaling: only with several devices
    gym = json.loads((out / "gymnax.json").read_text())
    assert [r["batch_size"] for r in gym["jax"]] == [1, 8] and gym["torch"]["torch_env_steps_per_s"] > 0
    for name, entry in doc["benchmarks"].items():
        assert entry["status"] == "ok", (name, entry)
        assert entry["seconds"] > 0
    assert doc["xla_compiles_total"] > 0 and doc["benchmarks"]["population"]["xla_compiles"] > 0
    suite = json.loads((out / "suite.json").read_text())
    assert set(doc["benchmarks"]) - {"gymnax"} <= set(suite["benchmarks"]) and suite["mode"] == "dry"
    pop = suite["benchmarks"]["population"]["results"][0]
    assert pop["jax_run_s"] > 0 and pop["torch_run_s"] > 0 and pop["flops"]["padded_over_real"] >= 1
    assert doc["mfu"]["rows"][0]["padded_gflops_per_s"] > 0 and doc["mfu"]["rows"][0]["mfu_padded"] is None  # CPU
    assert (out / "log.txt").read_text()
    # a second run refuses to mix its files with the first one's
    again = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_check.py"), str(out), "--dry-run"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "not empty" in again.stderr
