"""Every batched path on 1, 2, 4, 8 devices (simulated CPU devices): the same rows, networks and choices.

The multi-device checks run in a subprocess started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(set before JAX starts); inside it `sharding.resolve_devices(n)` takes the first n devices, so one process compiles
each path for every count. One device is the unsharded path (the CPU's chunked programs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_with_devices(script: str, n_devices: int, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    """`script` (python -c) in a fresh process with `n_devices` simulated CPU devices, this checkout first."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_resolve_devices_and_padding_on_one_device():
    import jax
    import jax.numpy as jnp

    from neon_jax import sharding

    n = jax.device_count()
    assert sharding.resolve_devices(None).size == n and sharding.resolve_devices(1).size == 1
    for bad in (0, -1, n + 1):
        with pytest.raises(ValueError, match=f"between 1 and {n} .*got {bad}"):
            sharding.resolve_devices(bad)
    assert sharding.active_mesh() is None and not sharding.spreads(None)
    mesh = sharding.resolve_devices(1)
    with sharding.use_mesh(mesh):
        assert sharding.active_mesh() is mesh and sharding.job_mesh(None) is mesh
        assert not sharding.spreads(mesh) or jax.process_count() > 1
    assert sharding.active_mesh() is None
    assert sharding.run_record(mesh) == {"devices": 1, "processes": 1, "platform": jax.devices()[0].platform}

    tree = {"a": jnp.arange(6.0).reshape(3, 2), "b": np.arange(3)}
    padded, mask = sharding.pad_to_mesh(tree, sharding.make_mesh(1))
    assert padded is tree and mask.tolist() == [True] * 3
    if n >= 2:  # 3 entries on 2 devices: one padded copy of the last, masked
        padded, mask = sharding.pad_to_mesh(tree, sharding.resolve_devices(2))
        assert list(padded["b"]) == [0, 1, 2, 2] and mask.tolist() == [True, True, True, False]
        back = sharding.drop_padding(padded, mask)
        np.testing.assert_array_equal(back["a"], tree["a"])


EVALUATE_AND_ZOO = r"""
import json, sys, tempfile
from pathlib import Path
import jax, numpy as np, pandas as pd
from neon_jax import sharding, zoo as zoo_lib
from neon_jax.jobs import evaluate as ev
from neon_jax.presets import get_preset

counts = [int(c) for c in sys.argv[1].split(",")]
methods, epochs = sys.argv[2].split(","), int(sys.argv[3])
assert jax.device_count() == max(counts), jax.devices()
preset = get_preset("tiny")
prepared = zoo_lib.prepare_data("iris", preset, seed=0)
tmp = Path(tempfile.mkdtemp())
zoos, evals = {}, {}
for n in counts:
    # a zoo of 3 networks (fewer than the devices where n > 3: padded, the padding dropped)
    zoos[n] = zoo_lib.build_zoo(prepared, preset, n=3, n_heldout=2, seed=0, epochs=epochs, devices=n)
    assert (zoos[n].meta["devices"], zoos[n].meta["processes"]) == (n, 1), zoos[n].meta
    if n == counts[0]:
        zoo_lib.save_zoo(zoos[n], tmp / "zoos")
    cfg = ev.EvalConfig(datasets=["iris"], zoo_root=str(tmp / "zoos"), methods=methods,
                        taus=[5.0], passes=[1], seeds=[0], preset="tiny", batch_size=2,
                        settings={"structured": [0.5]})
    summary = ev.run_evaluation(cfg, tmp / f"eval{n}", progress=False, log=None, devices=n)
    assert summary["run"]["devices"] == n, summary["run"]
    cells = [json.loads(line) for line in (tmp / f"eval{n}" / "cells.jsonl").read_text().splitlines()]
    assert {c["process"]["devices"] for c in cells} == {n}
    evals[n] = pd.read_csv(tmp / f"eval{n}" / "networks.csv").drop(columns=["seconds"])
ref = counts[0]
for n in counts[1:]:
    for a, b in zip(jax.tree_util.tree_leaves((zoos[ref].variables, zoos[ref].archs)),
                    jax.tree_util.tree_leaves((zoos[n].variables, zoos[n].archs))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=f"zoo on {n}")
    np.testing.assert_array_equal(zoos[ref].test_accuracy, zoos[n].test_accuracy)
    pd.testing.assert_frame_equal(evals[ref], evals[n], check_exact=True, obj=f"evaluate rows on {n} devices")
print("DEVICES-OK", len(evals[ref]), "rows")
"""


def _check(out):
    assert out.returncode == 0 and "DEVICES-OK" in out.stdout, out.stdout[-3000:] + out.stderr[-6000:]


def test_evaluate_and_zoo_rows_on_one_and_three_devices():
    """The zoo's networks and evaluate's rows on 3 devices are those of 1 (3 zoo networks and batches of 2: fewer
    than the devices, padded and dropped)."""
    _check(run_with_devices(EVALUATE_AND_ZOO, 3, "1,3", "random_no_ft", 1))


@pytest.mark.slow
def test_evaluate_and_zoo_rows_on_1_2_4_8_devices():
    """As above on 1, 2, 4 and 8 devices, with fine-tuning methods (the random agent, structured pruning)."""
    _check(run_with_devices(EVALUATE_AND_ZOO, 8, "1,2,4,8", "random,structured", 2))


@pytest.mark.parametrize("command", [
    ["evaluate", "--datasets", "iris", "--preset", "tiny"], ["zoo", "--dataset", "iris", "--preset", "tiny"],
    ["prune", "--dataset", "iris"], ["train-agent", "--zoo", "nowhere"]])
def test_cli_devices_out_of_range_is_one_line(command, tmp_path):
    import contextlib
    import io

    import jax

    from neon_jax import cli

    n = jax.device_count()
    for bad in ("0", str(n + 1), "-2"):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main([*command, "--out", str(tmp_path / "out"), "--devices", bad])
        lines = stderr.getvalue().strip().splitlines()
        assert code == 2 and len(lines) == 1, stderr.getvalue()
        assert lines[0] == (f"neon-jax {command[0]}: error: devices must be between 1 and {n} (this run has {n} "
                            f"{jax.devices()[0].platform} device{'s' if n > 1 else ''}), got {bad}")
        assert not (tmp_path / "out").exists()
