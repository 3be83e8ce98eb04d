"""The `neon-jax` command, called in-process (`neon_jax.cli.main`).

The zoo run builds the same zoo as tests/test_zoo.py (Pima diabetes from the shared data, preset tiny, 8 networks,
2 held out, seed 0), so one pytest run compiles the training program once for both files; it also checks that
`--data-dir` reaches the loader (sklearn's `diabetes` is a regression set and would be refused).
"""

import contextlib
import io
import json

import numpy as np
import pytest

from neon_jax import cli
from neon_jax import zoo as zoo_lib


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _zoo_args(shared_data, out, *extra):
    return ("zoo", "--dataset", "diabetes", "--data-dir", shared_data / "neon", "--n", 8, "--heldout", 2,
            "--preset", "tiny", "--out", out, *extra)


@pytest.fixture(scope="module")
def zoo_run(shared_data, tmp_path_factory):
    """One `neon-jax zoo` run; returns (output folder, exit code, stdout, stderr)."""
    out = tmp_path_factory.mktemp("cli_zoo")
    stdout, stderr = io.StringIO(), io.StringIO()  # capsys is function-scoped: capture by hand here
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main([str(a) for a in _zoo_args(shared_data, out)])
    return out, code, stdout.getvalue(), stderr.getvalue()


def test_datasets_lists_the_shared_files(capsys, shared_data):
    code, out, err = _run(capsys, "datasets", "--data-dir", shared_data / "neon")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "task", "rows", "features", "classes", "source"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["kropt"][1:5] == ["classification", "28056", "6", "18"]
    assert rows["diabetes"][1:5] == ["classification", "768", "8", "2"]  # the Pima file shadows sklearn's
    assert rows["sklearn:diabetes"][1] == "regression"
    assert {"iris", "wine", "breast_cancer", "digits", "nursery", "satimage"} <= rows.keys()
    assert len(rows) == 22 + 5  # every file of the folder and the 5 scikit-learn sets


def test_zoo_writes_a_loadable_zoo(zoo_run):
    out, code, stdout, stderr = zoo_run
    assert code == 0, stderr
    path = out / "diabetes"
    assert (path / "zoo.json").is_file() and (path / "networks.npz").is_file()
    zoo = zoo_lib.load_zoo(path)
    assert len(zoo) == 8 and zoo.heldout.sum() == 2 and zoo.preset.name == "tiny"
    assert zoo.meta["dataset_source"].endswith("diabetes.csv.gz") and zoo.meta["epochs"] == 3
    # without --quiet: the per-network table, then the summary line naming the output folder
    assert stdout.splitlines()[0].split()[:3] == ["net", "split", "widths"]
    assert sum(" held-out " in line for line in stdout.splitlines()) == 2
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith("diabetes: 8 networks in ") and str(path) in summary
    assert f"mean {zoo.test_accuracy.mean(dtype='float64'):.3f}" in summary


def test_zoo_refuses_to_overwrite_and_quiet_prints_one_line(capsys, zoo_run, shared_data):
    out = zoo_run[0]
    before = (out / "diabetes" / "zoo.json").read_text()
    code, stdout, err = _run(capsys, *_zoo_args(shared_data, out, "--quiet"))
    assert code == 2
    assert "--overwrite" in err and str(out / "diabetes") in err and err.startswith("neon-jax zoo: error:")
    assert stdout == ""
    assert (out / "diabetes" / "zoo.json").read_text() == before

    code, stdout, err = _run(capsys, *_zoo_args(shared_data, out, "--quiet", "--overwrite"))
    assert code == 0, err
    assert len(stdout.strip().splitlines()) == 1 and stdout.startswith("diabetes: 8 networks")
    assert "epoch" not in err  # --quiet: no progress bar


def test_zoo_epochs_zero_means_no_training(capsys, zoo_run, shared_data, tmp_path):
    code, stdout, err = _run(capsys, *_zoo_args(shared_data, tmp_path, "--quiet", "--epochs", 0))
    assert code == 0, err
    doc = json.loads((tmp_path / "diabetes" / "zoo.json").read_text())
    assert doc["meta"]["epochs"] == 0 and doc["meta"]["final_train_loss"] == []
    # untrained weights: not the trained zoo's
    trained = np.load(zoo_run[0] / "diabetes" / "networks.npz")
    untrained = np.load(tmp_path / "diabetes" / "networks.npz")
    assert not np.array_equal(trained["variables/params/output_kernel"], untrained["variables/params/output_kernel"])


def test_zoo_negative_epochs_is_a_clean_error(capsys, tmp_path):
    code, stdout, err = _run(capsys, "zoo", "--dataset", "iris", "--preset", "tiny", "--epochs", -1, "--out", tmp_path)
    assert code == 2 and "--epochs" in err
    assert not any(tmp_path.iterdir())


def test_zoo_unknown_dataset_lists_known_names(capsys, tmp_path):
    code, stdout, err = _run(capsys, "zoo", "--dataset", "no_such_set", "--n", 4, "--heldout", 1, "--preset", "tiny",
                             "--out", tmp_path, "--quiet")
    assert code == 2
    assert err.startswith("neon-jax zoo: error:") and "no_such_set" in err
    assert all(name in err for name in ("iris", "wine", "breast_cancer", "digits"))
    assert not any(tmp_path.iterdir())


def test_zoo_bad_heldout_is_a_clean_error(capsys, tmp_path):
    # iris from scikit-learn (no data folder needed) loads; the network split is refused before any training
    code, stdout, err = _run(capsys, "zoo", "--dataset", "iris", "--n", 4, "--heldout", 4, "--preset", "tiny",
                             "--out", tmp_path, "--quiet")
    assert code == 2 and "n_heldout" in err
    assert not (tmp_path / "iris").exists()


def test_zoo_small_n_holds_out_what_fits_and_says_so(capsys, tmp_path):
    # --n 4 without --heldout: the paper's default of 6 held out would not fit; a fifth of 4 (1) is held out
    code, stdout, err = _run(capsys, "zoo", "--dataset", "iris", "--n", 4, "--preset", "tiny", "--epochs", 0,
                             "--out", tmp_path, "--quiet")
    assert code == 0, err
    assert "holding out 1 of 4 networks" in stdout
    zoo = zoo_lib.load_zoo(tmp_path / "iris")
    assert len(zoo) == 4 and zoo.heldout.sum() == 1


def test_zoo_n_zero_is_a_clean_error(capsys, tmp_path):
    code, stdout, err = _run(capsys, "zoo", "--dataset", "iris", "--n", 0, "--preset", "tiny", "--out", tmp_path)
    assert code == 2 and "--n must be >= 1" in err
    assert not any(tmp_path.iterdir())


def test_zoo_regression_dataset_is_a_clean_error(capsys, tmp_path):
    code, stdout, err = _run(capsys, "zoo", "--dataset", "sklearn:diabetes", "--preset", "tiny", "--out", tmp_path)
    assert code == 2 and "regression" in err
    # in a list, before any network of the sets before it trains
    code, stdout, err = _run(capsys, "zoo", "--dataset", "iris,sklearn:diabetes", "--preset", "tiny", "--out",
                             tmp_path)
    assert code == 2 and "regression" in err and not (tmp_path / "iris").exists()


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["zoo", "--dataset", "iris"])  # --out is required
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["zoo", "--dataset", "iris", "--out", "x", "--preset", "huge"])
    assert exc.value.code == 2


def test_data_warnings_reach_the_user_as_one_line(capsys, tmp_path):
    csv = tmp_path / "w.csv"
    csv.write_text("a,b,y\n" + "".join(f"{i},{'x' if i == 3 else i * 2},{i % 2}\n" for i in range(40)))
    code, stdout, err = _run(capsys, "zoo", "--dataset", csv, "--n", 2, "--preset", "tiny", "--epochs", 0,
                             "--out", tmp_path / "zoo", "--quiet")
    assert code == 0, err
    assert "neon-jax zoo: warning: column 'b' is mostly numbers" in err and "data.py" not in err


def test_every_option_has_help_and_every_command_real_examples():
    import argparse
    import shlex

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "prune" in parser.description and "thin shell" not in parser.description
    for name, command in sub.choices.items():
        bare = [a.option_strings[0] for a in command._actions if a.option_strings and not a.help]
        assert not bare, f"neon-jax {name}: options without help text: {bare}"
        lines = command.epilog.replace("\\\n", " ").splitlines()[1:]  # continued lines joined
        examples = [line.split("  #")[0].strip() for line in lines]
        assert examples and all(e.startswith("neon-jax ") for e in examples), name
        for example in examples:  # each example is a command line the parser accepts as written
            args = parser.parse_args(shlex.split(example)[1:])
            assert args.command in (name, "prune")
    assert "default: the shipped agent" in sub.choices["prune"].format_help()


def test_train_agent_flags_are_the_agent_config():
    """train-agent's agent flags come from `AgentConfig`'s fields: each field but the legacy switches has one, the
    parsed defaults are AgentConfig()'s, and flags reach the config; the parser imports no JAX."""
    import dataclasses
    import subprocess
    import sys

    from neon_jax.agent import AgentConfig
    from neon_jax.agent import config as agent_config

    parser = cli.build_parser()
    base = ["train-agent", "--zoo", "z", "--out", "o"]
    assert agent_config.from_flags(parser.parse_args(base)) == AgentConfig()
    flags = {f.name for f in dataclasses.fields(AgentConfig)} - set(AgentConfig.LEGACY_FIELDS)
    assert flags <= set(vars(parser.parse_args(base)))
    got = agent_config.from_flags(parser.parse_args(base + [
        "--batch", "3", "--architecture", "compact", "--gamma", "0.5", "--observe-progress", "--update-epochs", "2",
        "--reward-transform", "scaled", "--critic-lr", "0.01"]), legacy=False)
    assert got == AgentConfig(batch_size=3, architecture="compact", gamma=0.5, observe_progress=True,
                              update_epochs=2, reward_transform="scaled", critic_lr=0.01)
    assert agent_config.from_flags(parser.parse_args(base), legacy=True).legacy_episode_mean_advantage
    code = "import sys; from neon_jax import cli; cli.build_parser(); print('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_stages_show_each_stage_and_its_seconds():
    """Long work shows its stages: plain lines off a terminal, a spinner with the elapsed seconds on one."""
    import io
    import time

    from neon_jax.progress import Stages

    plain = io.StringIO()
    stages = Stages(plain)
    stages.stage("training")
    stages("a note")
    stages.stage("compiling")
    time.sleep(0.05)
    waited = stages.done()
    lines = plain.getvalue().splitlines()
    assert lines[0] == "training ..." and lines[1] == "a note" and lines[2].startswith("training: done in ")
    assert lines[3] == "compiling ..." and lines[4].startswith("compiling: done in ")
    assert set(stages.seconds) == {"training", "compiling"} and stages.seconds["compiling"] >= 0.05
    assert waited == pytest.approx(sum(stages.seconds.values()), abs=0.01)
    spun = io.StringIO()
    stages = Stages(spun, spinner=True)
    stages.stage("pruning")
    time.sleep(0.35)
    stages.done()
    text = spun.getvalue()
    assert text.count("\r\033[K| pruning  0s") == 1 and "\r\033[K/ pruning  0s" in text  # redrawn in place
    assert text.endswith(f"\r\033[Kpruning: done in {stages.seconds['pruning']:.1f}s\n")
    assert stages.seconds["pruning"] >= 0.35
    assert Stages(io.StringIO()).done() == 0.0  # no stage, no time
    failed = io.StringIO()
    stages = Stages(failed, spinner=True)
    stages.stage("compiling")
    time.sleep(0.25)
    stages.abort()  # a failed job: the spinner stops, the stage is not called done
    text = failed.getvalue()
    time.sleep(0.25)
    assert failed.getvalue() == text and "done" not in text and text.endswith("\r\033[K")


def test_import_from_the_folder_above_a_clone(tmp_path):
    """From the folder holding a clone named neon_jax, `import neon_jax` is the package, not an empty namespace."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "neon_jax").symlink_to(root, target_is_directory=True)
    code = ("import importlib, neon_jax; p = importlib.import_module('neon_jax.jobs.prune'); "
            "print(neon_jax.__version__, callable(neon_jax.prune), neon_jax.get_preset('tiny').name, p.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    version, has_prune, preset, path = done.stdout.split()
    assert has_prune == "True" and preset == "tiny" and version == __import__("neon_jax").__version__
    assert Path(path) == tmp_path / "neon_jax" / "neon_jax" / "jobs" / "prune.py"


@pytest.mark.parametrize("spec, message", [("episodes", "expected KEY=VALUE"), ("episode=10", "unknown AMC setting"),
                                           ("episodes=10,parallel_episodes=3", "whole rounds")])
def test_evaluate_bad_amc_settings_are_clean_errors(capsys, tmp_path, spec, message):
    code, _, err = _run(capsys, "evaluate", "--datasets", "iris", "--methods", "amc", "--preset", "tiny", "--amc",
                        spec, "--out", tmp_path / "ev", "--quiet")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "ev").exists()
