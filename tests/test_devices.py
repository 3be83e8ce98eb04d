"""Every batched path on 1, 2, 4, 8 devices (simulated CPU devices): the same rows, networks and choices.

The multi-device checks run in a subprocess started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(set before JAX starts); inside it `sharding.resolve_devices(n)` takes the first n devices, so one process compiles
each path for every count. One device is the unsharded path (the CPU's chunked programs). Each such check compiles
every path once per device count (1-5 min on 2 cores): they run under ``-m slow``; by default only the in-process
checks run (a few seconds).
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
    print(out.stdout)


@pytest.mark.slow
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


PRUNE = r"""
import sys
import jax, numpy as np
from neon_jax.jobs.prune import prune

counts = [int(c) for c in sys.argv[1].split(",")]
agents = sys.argv[2].split(",")
assert jax.device_count() == max(counts), jax.devices()
for agent in agents:
    reports = {}
    for n in counts:
        result = prune("iris", preset="tiny", agent=agent, tau=5, passes=1, candidates=3, seed=0, progress=None,
                       devices=n)
        reports[n] = result.report
        assert result.report["run"] == {"devices": n, "processes": 1, "platform": "cpu"}, result.report["run"]
    ref = reports[counts[0]]
    for n in counts[1:]:
        r = reports[n]
        for key in ("widths_before", "widths_after", "params_after", "chosen", "candidates", "within_tau",
                    "actions", "test_acc_after", "val_acc"):
            assert r[key] == ref[key], (agent, n, key, r[key], ref[key])
        assert [c["params"] for c in r["candidate_table"]] == [c["params"] for c in ref["candidate_table"]]
    print(agent, "chose", ref["widths_after"], ref["chosen"])
print("DEVICES-OK")
"""


@pytest.mark.slow
def test_main_job_chooses_the_same_network_on_one_and_three_devices():
    """The 3 sampled episodes of the main job (the random agent) on 3 devices: the same candidates and choice."""
    _check(run_with_devices(PRUNE, 3, "1,3", "random"))


@pytest.mark.slow
def test_main_job_chooses_the_same_network_on_1_2_4_8_devices():
    """3 sampled episodes (the random agent), or 3 and a greedy one (the shipped agent), on 1, 2, 4 and 8 devices:
    padded to 4 or 8 episodes where needed, the padding dropped before the choice."""
    _check(run_with_devices(PRUNE, 8, "1,2,4,8", "random,pretrained"))


TRAIN_AGENT = r"""
import json, sys, tempfile
from pathlib import Path
import jax, numpy as np
from neon_jax import agent as agent_lib, jobs, zoo as zoo_lib
from neon_jax.env import EnvConfig
from neon_jax.presets import get_preset

counts = [int(c) for c in sys.argv[1].split(",")]
batch, iterations = int(sys.argv[2]), int(sys.argv[3])
assert jax.device_count() == max(counts), jax.devices()
preset = get_preset("tiny")
root = Path(tempfile.mkdtemp())
zoo_lib.save_zoo(zoo_lib.build_zoo(zoo_lib.prepare_data("iris", preset, seed=0), preset, n=5, n_heldout=1, seed=0,
                                   epochs=1, devices=1), root / "zoos")
states = {}
for n in counts:
    out = root / f"agent{n}"
    done = jobs.train_agent(root / "zoos", out, env_config=EnvConfig(passes=1),
                            agent_config=agent_lib.AgentConfig(architecture="compact", batch_size=batch),
                            tau=5.0, episodes=batch * iterations, evaluate=False, checkpoint_every=1, devices=n)
    states[n] = jax.device_get(done.state)
    run = json.loads((out / "run.json").read_text())["run"]
    want = max(k for k in range(1, n + 1) if batch % k == 0)  # the most devices that divide the batch
    assert run == {"devices": want, "processes": 1, "platform": "cpu"}, (n, run)
    assert len((out / "log.csv").read_text().splitlines()) == 1 + batch * iterations
ref = counts[0]
for n in counts[1:]:
    assert int(states[n].episodes) == int(states[ref].episodes) == batch * iterations
    # The agent's weights. On several devices the update's batch mean is an all-reduce and the roll-out's fine-tunes
    # run in one vmap (one device: packed slots): last-bit differences, which Adam's 1 / sqrt(v) turns into steps of
    # up to ~lr on weights whose gradients are ~0, and which the next roll-out and update carry on. An Adam step
    # moves a weight by at most ~lr (1e-3) whatever its gradient, so after a few updates every weight agrees to
    # 1e-2 and all but 0.1 % of them to 1e-3. Adam's moments are only reported: a moment of a large reward's
    # gradient can differ by a few per cent.
    pairs = list(zip(jax.tree_util.tree_leaves((states[ref].actor, states[ref].critic)),
                     jax.tree_util.tree_leaves((states[n].actor, states[n].critic))))
    worst, beyond, size = 0.0, 0, 0
    for a, b in pairs:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-2, err_msg=f"{n} devices")
        diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
        worst, beyond, size = max(worst, float(diff.max())), beyond + int((diff > 1e-3).sum()), size + diff.size
    assert beyond <= 1e-3 * size, (n, beyond, size)
    moments = [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
                            / (np.abs(np.asarray(a, np.float64)) + 1e-8)))
               for a, b in zip(jax.tree_util.tree_leaves((states[ref].actor_opt, states[ref].critic_opt)),
                               jax.tree_util.tree_leaves((states[n].actor_opt, states[n].critic_opt)))
               if np.size(a) and np.issubdtype(np.asarray(a).dtype, np.floating)]
    logs = [(root / f"agent{k}" / "log.csv").read_text().splitlines() for k in (ref, n)]
    same = sum(x.split(",")[:8] == y.split(",")[:8] for x, y in zip(*logs))  # episode .. steps, as text
    print(f"{n} devices: weights' largest difference {worst:.2e}, {beyond} of {size} beyond 1e-3; Adam moments' "
          f"largest relative difference {max(moments):.2e}; {same - 1} of {len(logs[0]) - 1} episodes logged alike")
print("DEVICES-OK")
"""


@pytest.mark.slow
def test_train_agent_parameters_agree_on_one_and_two_devices():
    """Two iterations of 4 episodes on 1 and 2 devices: the agent's weights agree (tolerance in the script)."""
    _check(run_with_devices(TRAIN_AGENT, 2, "1,2", 4, 2))


@pytest.mark.slow
def test_train_agent_parameters_agree_on_1_2_4_8_devices():
    """Two iterations of 8 episodes on 1, 2, 4 and 8 devices (and of 6 episodes: 4 devices use 3, 8 use 6)."""
    _check(run_with_devices(TRAIN_AGENT, 8, "1,2,4,8", 8, 2))
    _check(run_with_devices(TRAIN_AGENT, 8, "1,4,8", 6, 2))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_env(n_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _one_and_two_processes(args: list, tmp_path) -> list[tuple[str, str]]:
    """Runs the command `args` once in one process on one device (into tmp_path/one), then in two localhost
    processes under jax.distributed with 2 CPU devices each (into tmp_path/two); every run must succeed. Returns
    the two processes' (stdout, stderr)."""
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one"), "--devices", "1"], cwd=REPO,
                         env=_cli_env(1), capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-4000:]
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, *args, "--out", str(tmp_path / "two"), "--coordinator",
                               f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)], cwd=REPO,
                              env=_cli_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-4000:]
    return outs


@pytest.mark.slow
def test_two_processes_evaluate_like_one(tmp_path):
    """`neon-jax evaluate` in two localhost processes (jax.distributed, 2 CPU devices each) builds the same zoo and
    writes the rows of a one-process, one-device run; process 0 alone writes (the other's messages are silent)."""
    import pandas as pd

    from neon_jax import zoo as zoo_lib

    args = ["-m", "neon_jax", "evaluate", "--datasets", "iris", "--preset", "tiny", "--zoo-networks", "3",
            "--zoo-heldout", "2", "--methods", "random,structured", "--settings", "structured=0.5", "--tau", "5",
            "--passes", "1", "--batch", "2", "--quiet"]
    outs = _one_and_two_processes(args, tmp_path)
    # only process 0 prints the result (Gloo prints its own connection lines in both)
    assert "report ->" in outs[0][0]
    assert [line for line in outs[1][0].splitlines() if not line.startswith("[Gloo]")] == []
    rows = {k: pd.read_csv(tmp_path / k / "networks.csv").drop(columns=["seconds"]) for k in ("one", "two")}
    pd.testing.assert_frame_equal(rows["one"], rows["two"], check_exact=True)
    import json

    run = json.loads((tmp_path / "two" / "settings.json").read_text())["run"]
    assert run == {"devices": 4, "processes": 2, "platform": "cpu"}
    z1, z2 = (zoo_lib.load_zoo(tmp_path / k / "zoos" / "iris") for k in ("one", "two"))
    assert (z2.meta["devices"], z2.meta["processes"]) == (4, 2)
    np.testing.assert_array_equal(z1.test_accuracy, z2.test_accuracy)


@pytest.mark.slow
def test_two_processes_train_an_agent_like_one(tmp_path):
    """`neon-jax train-agent` in two localhost processes (2 CPU devices each, a batch of 4 over 4 devices): process 0
    alone writes the checkpoint, run.json and log.csv, and the agent's weights are those of a one-process run on
    one device to 1e-2 (as `test_train_agent_parameters_agree_on_1_2_4_8_devices`)."""
    import json

    from neon_jax import agent as agent_lib

    zoo = subprocess.run([sys.executable, "-m", "neon_jax", "zoo", "--dataset", "iris", "--n", "5", "--heldout", "1",
                          "--preset", "tiny", "--epochs", "1", "--out", str(tmp_path / "zoos"), "--quiet",
                          "--devices", "1"], cwd=REPO, env=_cli_env(1), capture_output=True, text=True, timeout=900)
    assert zoo.returncode == 0, zoo.stderr[-4000:]
    args = ["-m", "neon_jax", "train-agent", "--zoo", str(tmp_path / "zoos"), "--passes", "1", "--tau", "5",
            "--episodes", "8", "--batch", "4", "--architecture", "compact", "--no-eval", "--quiet",
            "--checkpoint-every", "1"]
    _one_and_two_processes(args, tmp_path)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["run"] == {"devices": 4, "processes": 2,
                                                                              "platform": "cpu"}
    assert len((tmp_path / "two" / "log.csv").read_text().splitlines()) == 1 + 8
    _, ref, _ = agent_lib.load_checkpoint(tmp_path / "one" / "checkpoint")
    _, got, _ = agent_lib.load_checkpoint(tmp_path / "two" / "checkpoint")
    assert int(got.episodes) == int(ref.episodes) == 8
    import jax

    for a, b in zip(jax.tree_util.tree_leaves((ref.actor, ref.critic)), jax.tree_util.tree_leaves((got.actor,
                                                                                                 got.critic))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-2)
