"""Results that cannot lie: kill-and-resume of train-agent, refused resumes, damaged files, non-finite data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neon_jax import cli, nets
from neon_jax import zoo as zoo_lib
from neon_jax.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI and SIGKILLs itself at a chosen point: KILL_AT=<point>:<n> kills at the n-th time the point is reached.
KILLER = r'''
import os, signal, sys
from pathlib import Path
import numpy as np
point, n = os.environ["KILL_AT"].split(":")
calls = [0]
def hit():
    calls[0] += 1
    if calls[0] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
if point == "checkpoint":  # before the checkpoint's first byte (the log already holds the episodes)
    import neon_jax.agent as agent
    real_save = agent.save_checkpoint
    def save(*args, **kwargs):
        hit()
        return real_save(*args, **kwargs)
    agent.save_checkpoint = save
elif point == "npz":  # mid-checkpoint: the npz written to its temporary file, not yet renamed into place
    real_savez = np.savez
    def savez(*args, **kwargs):
        real_savez(*args, **kwargs)
        hit()
    np.savez = savez
elif point == "json":  # the npz renamed into place, its json not yet written
    real_write = Path.write_text
    def write_text(self, *args, **kwargs):
        if self.name == "checkpoint.tmp.json":
            hit()
        return real_write(self, *args, **kwargs)
    Path.write_text = write_text
from neon_jax import cli
sys.exit(cli.main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    """A tiny zoo of iris (4 networks, 3 to train on)."""
    root = tmp_path_factory.mktemp("resume_zoo")
    preset = get_preset("tiny")
    prepared = zoo_lib.prepare_data("iris", preset, seed=0)
    zoo_lib.save_zoo(zoo_lib.build_zoo(prepared, preset, n=4, n_heldout=1, seed=0, epochs=1), root)
    return root


def _train_args(zoo_dir, out, *extra):
    return ["train-agent", "--zoo", str(zoo_dir), "--passes", "1", "--tau", "5", "--episodes", "12", "--batch", "2",
            "--checkpoint-every", "1", "--no-eval", "--quiet", "--out", str(out), *extra]


def _log_rows(out):
    with open(out / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _leaves(out):
    with np.load(out / "checkpoint.npz") as data:
        return {k: data[k] for k in data.files if k.startswith("leaf_")}


@pytest.mark.slow  # three SIGKILLed subprocesses and two full runs: about 4.5 minutes on 2 cores
def test_killed_and_resumed_training_equals_an_uninterrupted_one(zoo_dir, tmp_path, capsys):
    reference = tmp_path / "reference"
    assert cli.main(_train_args(zoo_dir, reference)) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "NEON_JAX_CACHE_DIR": str(tmp_path / "xla")}
    # killed before the first checkpoint, mid-checkpoint (npz not renamed), between the npz and its json
    for kill_at, episodes_logged, stale in (("checkpoint:1", 2, []), ("npz:3", 6, ["checkpoint.tmp.npz"]),
                                            ("json:2", 8, [])):
        done = subprocess.run([sys.executable, "-c", KILLER, *_train_args(zoo_dir, out)], cwd=ROOT,
                              env={**env, "KILL_AT": kill_at}, capture_output=True, text=True, timeout=600)
        assert done.returncode == -9, (kill_at, done.stderr[-2000:])
        assert len(_log_rows(out)) == episodes_logged, kill_at  # what the killed run had written
        assert sorted(p.name for p in out.glob("*.tmp.*")) == stale, kill_at
    assert json.loads((out / "checkpoint.json").read_text())["episodes"] == 6  # one checkpoint behind its npz
    assert cli.main(_train_args(zoo_dir, out)) == 0  # resumes at episode 8, from the npz's own metadata
    rows, expected = _log_rows(out), _log_rows(reference)
    assert [int(r["episode"]) for r in rows] == list(range(12))  # exactly one row per episode
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(rows) == strip(expected)
    got, want = _leaves(out), _leaves(reference)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert list(out.glob("*.tmp.*")) == []
    assert json.loads((out / "checkpoint.json").read_text())["episodes"] == 12


def test_a_resume_with_other_settings_is_refused(zoo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = _train_args(zoo_dir, out)
    args[args.index("--episodes") + 1] = "4"
    assert cli.main(args) == 0
    run_json = (out / "run.json").read_text()
    for flag, value, named in (("--tau", "50", "tau"), ("--seed", "3", "seed"), ("--passes", "2", "env")):
        code = cli.main([*args, flag, value])
        err = capsys.readouterr().err
        assert code == 2 and named in err and "--overwrite" in err and len(err.strip().splitlines()) == 1, err
        assert (out / "run.json").read_text() == run_json  # nothing rewritten
    assert cli.main([*args, "--tau", "50", "--overwrite"]) == 0
    assert json.loads((out / "run.json").read_text())["tau"] == 50.0 and len(_log_rows(out)) == 4
    more = list(args)
    more[more.index("--episodes") + 1] = "6"  # training longer is a resume, not a change
    assert cli.main([*more, "--tau", "50"]) == 0 and len(_log_rows(out)) == 6
    # the folder is an agent `prune` accepts as it is
    code = cli.main(["prune", "--dataset", "iris", "--preset", "tiny", "--agent", str(out), "--passes", "1",
                     "--candidates", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err


def _one_line_error(argv, capsys, *needles):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_damaged_files_are_named_in_one_line(zoo_dir, tmp_path, capsys):
    from neon_jax.agent.registry import pretrained_checkpoint

    shipped = pretrained_checkpoint("cpu", 5.0)
    agent = tmp_path / "agent"
    agent.with_suffix(".json").write_bytes(shipped.with_suffix(".json").read_bytes())
    agent.with_suffix(".npz").write_bytes(shipped.with_suffix(".npz").read_bytes()[:5000])  # truncated
    prune = ["prune", "--dataset", "iris", "--agent", str(agent), "--quiet"]
    _one_line_error(prune, capsys, "agent.npz", "damaged or truncated")
    agent.with_suffix(".json").write_text("")
    _one_line_error(prune, capsys, "agent.json", "not valid JSON", "empty")
    # a train-agent folder whose checkpoint was cut short
    out = tmp_path / "run"
    args = _train_args(zoo_dir, out)
    args[args.index("--episodes") + 1] = "2"
    assert cli.main(args) == 0
    data = (out / "checkpoint.npz").read_bytes()
    (out / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    _one_line_error(args, capsys, "checkpoint.npz", "damaged or truncated")
    # a zoo folder without its zoo.json is not skipped in silence
    broken = tmp_path / "zoos"
    (broken / "iris").mkdir(parents=True)
    (broken / "iris" / "networks.npz").write_bytes((zoo_dir / "iris" / "networks.npz").read_bytes())
    _one_line_error(_train_args(broken, tmp_path / "other"), capsys, "no zoo.json", "iris")


def test_values_beyond_float32_are_refused_by_name(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "huge.csv"
    rows = ["a,b,target"] + [f"{x:.4f},{1.7e308 if i % 2 else -1.7e308},{int(x > 0)}"
                              for i, x in enumerate(rng.normal(size=80))]
    path.write_text("\n".join(rows) + "\n")
    _one_line_error(["prune", "--dataset", str(path), "--preset", "tiny", "--agent", "random", "--quiet"], capsys,
                    "column 'b'", "float32")


def test_a_network_with_nan_weights_is_refused(tmp_path, capsys):
    from sklearn.datasets import load_iris

    torch = pytest.importorskip("torch")
    x, _ = load_iris(return_X_y=True)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    torch.save(model, tmp_path / "nan.pt")
    _one_line_error(["prune", "--dataset", "iris", "--preset", "tiny", "--agent", "random", "--quiet", "--network",
                     str(tmp_path / "nan.pt")], capsys, "non-finite", "kernel of module 0")
    network = nets.DenseNetwork(layers=[{"kind": "linear", "kernel": np.full((4, 3), 1e30, np.float32),
                                         "bias": np.zeros(3, np.float32)}, {"kind": "softmax"}],
                                n_features=4, n_classes=3)
    with pytest.raises(ValueError, match="non-finite .* outputs"):
        network.check_finite(np.full((2, 4), 1e30, np.float32))


def test_minor_messages(tmp_path, capsys):
    """A 2-row CSV is named with what it lacks; a slowdown is not called faster."""
    path = tmp_path / "two.csv"
    path.write_text("a,b,target\n0.1,0.2,x\n0.3,0.4,y\n")
    _one_line_error(["prune", "--dataset", str(path), "--preset", "tiny", "--agent", "random", "--quiet"], capsys,
                    "2 rows", "at least 10")
    assert cli._speedup(0.94) == "x1.06 slower" and cli._speedup(2.1) == "x2.10 faster"
    assert cli._speedup(1.001) == "no faster"
