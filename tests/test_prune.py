"""The main job end to end: `neon-jax prune` on a bundled dataset, on any CSV, and on a saved network."""

import json

import numpy as np
import pytest

from neon_jax import cli, nets


def _prune(args, capsys, quiet=True):
    code = cli.main(["prune", "--preset", "tiny", "--agent", "random", *(["--quiet"] if quiet else []), *args])
    return code, capsys.readouterr()


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    """A CSV with string labels and a categorical column, as real files have."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "toy.csv"
    x = rng.normal(size=(240, 3))
    colour = rng.choice(["red", "green"], 240)
    label = np.where(x[:, 0] + (colour == "red") > 0.5, "'yes'", "'no'")
    lines = ["a,b,c,colour,target"] + [f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{c},{t}" for r, c, t in zip(x, colour, label)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prune_bundled_dataset_saves_networks_and_report(tmp_path, capsys):
    out = tmp_path / "iris"
    code, cap = _prune(["--dataset", "iris", "--out", str(out), "--json", str(tmp_path / "r.json")], capsys,
                       quiet=False)
    assert code == 0, cap.err
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads((tmp_path / "r.json").read_text())
    pruned = nets.load_dense_network(out / "pruned")
    original = nets.load_dense_network(out / "original")
    assert "-".join(map(str, pruned.hidden_widths)) == report["widths_after"]
    assert "-".join(map(str, original.hidden_widths)) == report["widths_before"]
    assert pruned.num_params() == report["params_after"] and original.num_params() == report["params_before"]
    assert report["compression"] == pytest.approx(report["params_before"] / report["params_after"])
    assert "widths before -> after" in cap.out and "x" in cap.out
    # the candidates: every network of every episode, the chosen one within tau on the validation split
    table = report["candidate_table"]
    assert len(table) == report["candidates"] == len((out / "candidates.csv").read_text().splitlines()) - 1
    assert sum(c["chosen"] for c in table) == 1 and report["within_tau"] == sum(c["within_tau"] for c in table)
    chosen = next(c for c in table if c["chosen"])
    assert chosen["params"] == report["params_after"] == min(c["params"] for c in table if c["within_tau"])
    assert chosen["val_change_points"] >= -report["tau"] and (out / "front.png").stat().st_size > 0
    assert report["chosen"]["episode"] == chosen["episode"] and "candidates" in cap.out
    # the stages partition the wall time, so the report's seconds agree with each other; each stage was shown
    seconds = report["seconds"]
    assert set(seconds) == {"load", "base_network", "compile", "run", "report", "total"}
    assert seconds["total"] == pytest.approx(sum(v for k, v in seconds.items() if k != "total"))
    assert seconds["base_network"] > 0 and "training a random base network" in cap.err
    for shown in ("compiling the pruning program", "pruning with the", "done in", "since the command started"):
        assert shown in cap.err + cap.out
    # nothing the user saved is overwritten without asking
    code, cap = _prune(["--dataset", "iris", "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in cap.err


def test_prune_any_csv_and_a_saved_network(csv_file, tmp_path, capsys):
    out = tmp_path / "toy"
    code, cap = _prune(["--dataset", str(csv_file), "--out", str(out)], capsys)
    assert code == 0, cap.err
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == 2 and report["features"] == 5  # a, b, c + colour one-hot (red, green)
    # prune the saved original again, as a user's network (the toy's base network learned nothing: it scores the
    # majority rate, which the input check refuses, so it is switched off)
    code, cap = _prune(["--dataset", str(csv_file), "--network", str(out / "original"), "--json",
                        str(tmp_path / "again.json"), "--no-input-check"], capsys)
    assert code == 0, cap.err
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["params_before"] == report["params_before"]
    assert again["test_acc_before"] == pytest.approx(report["test_acc_before"], abs=1e-6)


def test_prune_errors_are_clear(csv_file, tmp_path, capsys):
    code, cap = _prune(["--dataset", "no_such_dataset"], capsys)
    assert code == 2 and "no_such_dataset" in cap.err and "Traceback" not in cap.err
    code, cap = _prune(["--dataset", "iris", "--tau", "150"], capsys)
    assert code == 2 and "tau" in cap.err
    # the state maps hold 9 hidden layers (any width): a 10-layer network gets a clear error
    rng = np.random.default_rng(0)
    layers, fan_in = [], 4
    for width in [6] * 10:
        layers += [dict(kind="linear", kernel=rng.normal(size=(fan_in, width)).astype(np.float32),
                        bias=np.zeros(width, np.float32)), dict(kind="relu")]
        fan_in = width
    layers += [dict(kind="linear", kernel=rng.normal(size=(fan_in, 3)).astype(np.float32),
                    bias=np.zeros(3, np.float32)), dict(kind="softmax")]
    deep = nets.save_dense_network(nets.DenseNetwork(layers=layers, n_features=4, n_classes=3), tmp_path / "deep")
    code, cap = _prune(["--dataset", "iris", "--network", str(deep)], capsys)
    assert code == 2 and "10 hidden layers" in cap.err and "Traceback" not in cap.err
    code, cap = _prune(["--dataset", "iris", "--network", str(tmp_path / "missing")], capsys)
    assert code == 2 and "no saved network" in cap.err


def test_prune_checks_arguments_and_files_before_any_work(tmp_path, capsys, monkeypatch):
    """Bad --passes / --network fail before the dataset is loaded or a base network is trained, naming the bad
    argument."""
    import importlib

    pruner = importlib.import_module("neon_jax.jobs.prune")

    def no_work(*args, **kwargs):
        raise AssertionError("the data was loaded before the arguments were checked")

    monkeypatch.setattr(pruner, "prepare_data", no_work)
    monkeypatch.setattr(pruner, "build_zoo", no_work)
    for args, words in ((["--passes", "0"], "passes"), (["--network", str(tmp_path / "missing.pt")], "missing.pt")):
        code, cap = _prune(["--dataset", "iris", *args], capsys)
        assert code == 2 and words in cap.err and "Traceback" not in cap.err, (args, cap.err)
