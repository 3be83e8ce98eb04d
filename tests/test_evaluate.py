"""`neon_jax.jobs.evaluate` and `neon-jax evaluate`: folds, aggregation, resumability, the CLI and the notebook.

The runs use two tiny zoos (scikit-learn's iris and wine, 4 networks each, 2 held out, untrained) and
an untrained tiny agent saved with the random agent's config, so neon and random share one compiled program
(batch 2, both datasets in every pool: one shape for the whole file). One test lets the command build its own
tiny zoos (the preset's 3 training epochs) under OUT/zoos.
"""

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from neon_jax import agent as agent_lib
from neon_jax import cli, paper_results, pruning, runner
from neon_jax import zoo as zoo_lib
from neon_jax.jobs import evaluate as ev
from neon_jax.presets import get_preset

CPU_ZOOS = ["2dplanes", "ailerons", "bank-marketing", "cardiotocography", "diabetes", "disclosure_z",
            "electricity-normalized", "first-order-theorem-proving", "fried", "house_8L", "ionosphere",
            "jungle_chess_2pcs_raw_endgame_complete", "kr-vs-k", "kropt", "mfeat-karhunen", "mfeat-morphological",
            "no2", "nursery", "phoneme", "pm10", "rmftsa_sleepdata", "satimage", "tamilnadu-electricity"]


# ---------------------------------------------------------------------------------------------- folds


def test_folds_are_deterministic_disjoint_and_cover_every_dataset():
    folds = ev.make_folds(CPU_ZOOS, size=6, seed=0)
    assert [len(f) for f in folds] == [6, 6, 6, 5]
    flat = [d for f in folds for d in f]
    assert len(flat) == len(set(flat)) and set(flat) == set(CPU_ZOOS)
    # the fold the shipped agent was trained without (/work/runs/fold.txt)
    assert folds[0] == ["phoneme", "diabetes", "rmftsa_sleepdata", "ionosphere",
                        "jungle_chess_2pcs_raw_endgame_complete", "bank-marketing"]
    assert ev.make_folds(list(reversed(CPU_ZOOS)), 6, 0) == folds  # order of the input does not matter
    assert ev.make_folds(CPU_ZOOS, 6, 1) != folds
    assert ev.make_folds(["a", "b", "c"], 2, 0) == ev.make_folds(["c", "a", "b"], 2, 0)


def test_agent_resolution_and_cells():
    agents = {"5": "a5", "5@1": "a5f1"}
    assert ev.resolve_agent_spec(agents, 5.0, None) == "a5"
    assert ev.resolve_agent_spec(agents, 5.0, 1) == "a5f1"
    assert ev.resolve_agent_spec(agents, 5.0, 0) == "a5"
    assert ev.resolve_agent_spec(agents, 50.0, 0) == "pretrained:50"  # the shipped agent nearest tau 50
    cfg = ev.EvalConfig(datasets=["x", "y"], zoo_root=".", methods=["neon", "random"], taus=[1, 5], passes=[1, 4],
                        seeds=[0, 1], greedy=True)
    cells = ev.plan_cells(cfg, None)
    neon = [c for c in cells if c.method == "neon"]
    assert len(neon) == 2 * 2 * 2 * 2 * 2 and len(cells) - len(neon) == 2 * 2 * 2  # random: no tau, no greedy
    assert len({c.key for c in cells}) == len(cells)
    assert all(c.tau is None for c in cells if c.method == "random")
    unseen = ev.plan_cells(dataclasses_replace(cfg, protocol="unseen", folds=[1]), [["x"], ["y"]])
    assert {c.dataset for c in unseen} == {"y"} and {c.fold for c in unseen} == {1}


def test_amc_and_admm_are_methods_with_settings_as_data():
    """AMC and ADMM plan one cell per setting (their sweeps by default); AMC's search settings are data that the
    results folder is tied to, and a bad one is named."""
    cfg = ev.EvalConfig(datasets=["x"], zoo_root=".", methods=["amc", "admm"], settings={"amc": [0.2, 0.5]},
                        amc={"episodes": 20, "parallel_episodes": 5})
    cells = ev.plan_cells(cfg, None)
    assert sorted(c.setting for c in cells if c.method == "amc") == ["0.2", "0.5"]
    assert len([c for c in cells if c.method == "admm"]) == len(pruning.default_settings("admm"))
    assert cfg.amc_config().episodes == 20 and cfg.amc_config().parallel_episodes == 5
    assert cfg.identity()["amc"] == {"episodes": 20, "parallel_episodes": 5}
    assert "amc" not in dataclasses_replace(cfg, amc={}).identity()  # older folders keep their identity
    with pytest.raises(ValueError, match="unknown AMC setting.*episode"):
        ev.EvalConfig(datasets=["x"], methods=["amc"], amc={"episode": 20})
    with pytest.raises(ValueError, match="whole rounds"):
        ev.EvalConfig(datasets=["x"], methods=["amc"], amc={"episodes": 20, "parallel_episodes": 3})
    with pytest.raises(ValueError, match="share of FLOPs kept"):
        ev.EvalConfig(datasets=["x"], methods=["amc"], settings={"amc": [2]})


def dataclasses_replace(cfg, **kw):
    return dataclasses.replace(cfg, **kw)


# ---------------------------------------------------------------------------------------------- aggregation


def _hand_rows():
    """Two datasets, two methods, hand-picked numbers."""
    base = dict(protocol="heldout", fold="", split="heldout", setting="", seed=0, greedy=0, agent="", agent_tau="",
                agent_trained_on_dataset="", counting="structured", seconds=1.0, depth=1)
    rows = []
    # neon p4 tau5: no2 compressions 2, 4 (acc -1, +1); pm10 compressions 10, 30 (acc -3, 0)
    for ds, net, comp, dacc, before, after, ratio in [("no2", 0, 2.0, -1.0, 100, 50, "2"),
                                                       ("no2", 1, 4.0, 1.0, 200, 50, "4"),
                                                       ("pm10", 0, 10.0, -3.0, 100, 10, "10"),
                                                       ("pm10", 1, 30.0, 0.0, 300, 10, "3")]:
        rows.append({**base, "cell": f"neon|{ds}", "dataset": ds, "network": net, "method": "neon",
                     "setting": "pretrained", "tau": 5.0, "passes": 4, "agent": "pretrained", "agent_tau": 50.0,
                     "widths_before": "8", "widths_after": "4", "params_before": before, "params_after": after,
                     "compression": comp, "test_acc_before": 0.5, "test_acc_after": 0.5 + dacc / 100,
                     "acc_change_points": dacc, "layer_width_ratio": ratio})
    # lap k=3 (no passes, no tau): compressions 7, 7, 7, 7; acc -2, -2, +2, 0
    for ds, net, dacc in [("no2", 0, -2.0), ("no2", 1, -2.0), ("pm10", 0, 2.0), ("pm10", 1, 0.0)]:
        rows.append({**base, "cell": f"lap|{ds}", "dataset": ds, "network": net, "method": "lap", "setting": "3",
                     "tau": "", "passes": "", "widths_before": "8", "widths_after": "8", "params_before": 70,
                     "params_after": 10, "compression": 7.0, "test_acc_before": 0.5,
                     "test_acc_after": 0.5 + dacc / 100, "acc_change_points": dacc, "layer_width_ratio": "1",
                     "counting": "unstructured"})
    # a magnitude sweep of two fractions: pooled into one "sweep" group beside the paper's "Prn"
    for setting, comp, dacc in [("0.5", 2.0, 0.0), ("0.8", 5.0, -1.0)]:
        for ds in ("no2", "pm10"):
            rows.append({**base, "cell": f"magnitude|{setting}|{ds}", "dataset": ds, "network": 0,
                         "method": "magnitude", "setting": setting, "tau": "", "passes": "", "widths_before": "8",
                         "widths_after": "8", "params_before": 10 * comp, "params_after": 10, "compression": comp,
                         "test_acc_before": 0.5, "test_acc_after": 0.5 + dacc / 100, "acc_change_points": dacc,
                         "layer_width_ratio": "1", "counting": "unstructured"})
    return rows


def test_aggregates_match_hand_computed_tables(tmp_path):
    pd.DataFrame(_hand_rows(), columns=ev.NETWORK_FIELDS).to_csv(tmp_path / "networks.csv", index=False)
    (tmp_path / "settings.json").write_text(json.dumps({"identity": {"protocol": "heldout", "preset": "cpu"}}))
    (tmp_path / "cells.jsonl").write_text("\n".join(json.dumps({"key": k, "method": m, "seconds": s}) for k, m, s in
                                                    [("neon|no2", "neon", 2.0), ("neon|pm10", "neon", 3.0),
                                                     ("lap|no2", "lap", 1.5), ("lap|pm10", "lap", 0.5)]) + "\n")
    summary = ev.write_report(tmp_path)
    neon, lap, mag5, mag8, sweep = summary["groups"]
    assert [g["label"] for g in summary["groups"]] == ["neon p4 tau5", "lap 3", "magnitude 0.5", "magnitude 0.8",
                                                       "magnitude sweep (2 settings)"]
    c, a = neon["over_networks"]["compression"], neon["over_networks"]["acc_change"]
    assert c["mean"] == pytest.approx(11.5) and c["median"] == pytest.approx(7.0)
    assert c["std"] == pytest.approx(np.std([2, 4, 10, 30], ddof=1)) and (c["max"], c["min"]) == (30, 2)
    assert a["mean"] == pytest.approx(-0.75) and a["median"] == pytest.approx(-0.5)
    assert (neon["acc_fell"], neon["acc_held"], neon["acc_rose"]) == (2, 1, 1)
    d = neon["over_datasets"]["compression"]  # per-dataset means 3 and 20
    assert d["mean"] == pytest.approx(11.5) and d["std"] == pytest.approx(np.std([3, 20], ddof=1))
    assert neon["over_datasets"]["acc_change"]["min"] == pytest.approx(-1.5)
    assert neon["per_dataset"]["pm10"] == {"compression": 20.0, "acc_change_points": -1.5, "networks": 2}
    assert neon["compression_of_total_params"] == pytest.approx(700 / 120)
    assert neon["layer_width_reduction"] == {1: [pytest.approx(4.75)]}
    assert neon["paper_config"] == "N4-5" and lap["paper_config"] == "LAP3"
    assert neon["flags"] == ["agent trained at tau 50"]
    assert (lap["acc_fell"], lap["acc_held"], lap["acc_rose"]) == (2, 1, 1) and lap["counting"] == ["unstructured"]
    assert sweep["paper_config"] == "Prn" and mag5["paper_config"] is None and sweep["networks"] == 4
    assert sweep["over_networks"]["compression"]["mean"] == pytest.approx(3.5)
    assert (sweep["acc_fell"], sweep["acc_held"], sweep["acc_rose"]) == (2, 2, 0)
    assert not mag5["headline"] and mag8["headline"]  # 0.8 is the baseline's default setting
    assert summary["wall_seconds_per_method"] == {"neon": 5.0, "lap": 2.0}

    report = (tmp_path / "report.md").read_text()
    assert "| neon p4 tau5 | 4 | 11.50 | 7.00 |" in report
    assert "15.76 (N4-5)" in report and "-0.87" in report  # the paper's aggregate beside ours
    assert "*paper N4-5*" in report and "*8.76*" in report and "*-17.33*" in report  # pm10's published N4-5 row
    assert "*paper LAP3*" in report and "single-dataset agents" in report and "2.84 (Prn)" in report
    assert "unstructured count" in report
    assert (tmp_path / "compression_vs_accuracy.png").stat().st_size > 1000
    assert (tmp_path / "pareto_tau.png").stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["groups"][0]["label"] == "neon p4 tau5"


def test_pareto_front_and_paper_table():
    assert ev.pareto_front([(1, 0), (2, -1), (1.5, -2), (3, -1), (0.5, 1)]) == [(0.5, 1.0), (1.0, 0.0), (3.0, -1.0)]
    assert len(paper_results.DATASETS) == 28
    means = np.mean([v["N4-50"] for v in paper_results.PER_DATASET_COMPRESSION.values()])
    assert means == pytest.approx(paper_results.AGGREGATE["N4-50"]["ratio_mean"], abs=0.01)
    assert paper_results.paper_config("neon", 1, 50.0) == "N1-50"
    assert paper_results.paper_config("random", 4, None) == "Rand"
    assert paper_results.paper_config("random", 1, None) is None


# ---------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory):
    """Tiny zoos of iris and wine, and two untrained tiny agents (one claims to have trained on wine)."""
    root = tmp_path_factory.mktemp("eval_zoos")
    preset = get_preset("tiny")
    for name in ("iris", "wine"):
        prepared = zoo_lib.prepare_data(name, preset, seed=0)
        zoo_lib.save_zoo(zoo_lib.build_zoo(prepared, preset, n=4, n_heldout=2, seed=0, epochs=0), root)
    config = agent_lib.AgentConfig(batch_size=1)  # the random agent's config: one compile for both methods
    actor = agent_lib.Agent(config, preset).init(jax.random.PRNGKey(1)).actor
    common = {"tau": 50.0, "env": {"cut": "reinit", "passes": 1}, "episodes": 0}
    agent_lib.save_policy(root / "agents" / "blank", actor, config, preset, {**common, "datasets": []})
    agent_lib.save_policy(root / "agents" / "saw_wine", actor, config, preset, {**common, "datasets": ["wine"]})
    return root


def _cfg(root, **kw):
    base = dict(datasets=["iris", "wine"], zoo_root=str(root), methods=["neon", "random"], taus=[5.0], passes=[1],
                seeds=[0], agents={"5": str(root / "agents" / "blank")}, batch_size=2)
    return ev.EvalConfig(**{**base, **kw})


def _count_runs(monkeypatch) -> list:
    """The dataset of every `runner.run` call from now on (one per cell run)."""
    calls = []
    real = runner.run

    def counting(program, pool, *args, **kwargs):
        calls.append(pool.names[0][0])
        return real(program, pool, *args, **kwargs)

    monkeypatch.setattr(runner, "run", counting)
    return calls


def test_evaluation_resumes_and_skips_finished_cells(zoo_root, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    calls = _count_runs(monkeypatch)
    summary = ev.run_evaluation(_cfg(zoo_root), out, progress=False, log=None)
    assert len(calls) == 4  # 2 methods x 2 datasets
    df = pd.read_csv(out / "networks.csv")
    assert len(df) == 8 and set(df["split"]) == {"heldout"} and set(df["dataset"]) == {"iris", "wine"}
    assert np.allclose(df["compression"], df["params_before"] / df["params_after"])
    assert np.allclose(df["acc_change_points"], 100 * (df["test_acc_after"] - df["test_acc_before"]), atol=1e-4)
    assert {g["label"] for g in summary["groups"]} == {"neon p1 tau5", "random p1"}
    assert (out / "report.md").exists() and (out / "summary.json").exists()

    calls.clear()  # same grid: nothing to do
    ev.run_evaluation(_cfg(zoo_root), out, progress=False, log=None)
    assert calls == [] and len(pd.read_csv(out / "networks.csv")) == 8

    # an interrupted cell (rows appended, never recorded as done) is dropped and re-run
    lines = (out / "cells.jsonl").read_text().splitlines()
    (out / "cells.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    calls.clear()  # a wider grid (a second seed) runs only its new cells
    ev.run_evaluation(_cfg(zoo_root, seeds=[0, 1]), out, progress=False, log=None)
    assert len(calls) == 1 + 4
    df = pd.read_csv(out / "networks.csv")
    assert len(df) == 16 and df.groupby("cell").size().eq(2).all() and len(ev.read_cells(out)) == 8

    with pytest.raises(FileExistsError, match="--overwrite"):  # another protocol in the same folder
        ev.run_evaluation(_cfg(zoo_root, protocol="unseen", fold_size=1), out, progress=False, log=None)


def test_replaced_zoo_or_agent_reruns_its_cells_and_a_torn_line_is_dropped(zoo_root, tmp_path, monkeypatch):
    """Cells are keyed by what they ran on (the zoo's files, the agent's), not by paths."""
    root = tmp_path / "zoos"
    shutil.copytree(zoo_root, root)
    out = tmp_path / "eval"
    calls = _count_runs(monkeypatch)
    ev.run_evaluation(_cfg(root), out, progress=False, log=None)
    assert len(calls) == 4
    preset = get_preset("tiny")  # iris's zoo replaced by other networks at the same path: its two cells re-run
    prepared = zoo_lib.prepare_data("iris", preset, seed=0)
    zoo_lib.save_zoo(zoo_lib.build_zoo(prepared, preset, n=4, n_heldout=2, seed=7, epochs=0), root, overwrite=True)
    calls.clear()
    ev.run_evaluation(_cfg(root), out, progress=False, log=None)
    assert sorted(calls) == ["iris", "iris"]
    df = pd.read_csv(out / "networks.csv", dtype={"widths_before": str})
    new_zoo = zoo_lib.load_zoo(root / "iris")
    held = [i for i in range(4) if new_zoo.heldout[i]]
    assert len(df) == 8 and sorted(df[df.dataset == "iris"]["network"].unique()) == held
    # the agent file replaced at the same path: the neon cells re-run, the random ones stay
    config = agent_lib.AgentConfig(batch_size=1)
    actor = agent_lib.Agent(config, preset).init(jax.random.PRNGKey(9)).actor
    agent_lib.save_policy(root / "agents" / "blank", actor, config, preset,
                          {"tau": 50.0, "env": {"cut": "reinit", "passes": 1}, "episodes": 0, "datasets": []})
    calls.clear()
    ev.run_evaluation(_cfg(root), out, progress=False, log=None)
    assert sorted(calls) == ["iris", "wine"] and len(pd.read_csv(out / "networks.csv")) == 8
    # a run killed while appending a cell's line: the torn line goes, its cell runs again
    text = (out / "cells.jsonl").read_text()
    (out / "cells.jsonl").write_text(text[: len(text) - 40])
    calls.clear()
    ev.run_evaluation(_cfg(root), out, progress=False, log=None)
    assert len(calls) == 1 and len(ev.read_cells(out)) == 4 and len(pd.read_csv(out / "networks.csv")) == 8
    lines = (out / "cells.jsonl").read_text().splitlines()  # a damaged line before the last is named, not skipped
    (out / "cells.jsonl").write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"cells.jsonl: line 2"):
        ev.run_evaluation(_cfg(root), out, progress=False, log=None)


def _cli(*argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main([str(a) for a in argv])
    return code, stdout.getvalue(), stderr.getvalue()


def test_cli_unseen_protocol_smoke_and_errors(zoo_root, tmp_path):
    out = tmp_path / "unseen"
    args = ["evaluate", "--datasets", "iris,wine", "--zoo-root", zoo_root, "--protocol", "unseen", "--fold-size", 1,
            "--tau", 5, "--passes", 1, "--batch", 2, "--out", out, "--quiet"]
    code, stdout, err = _cli(*args, "--methods", "neon,random", "--agent", f"5={zoo_root / 'agents' / 'blank'}")
    assert code == 0, err
    df = pd.read_csv(out / "networks.csv")
    assert len(df) == 2 * 2 * 4  # 2 methods x 2 datasets x all 4 networks
    assert set(df["split"]) == {"heldout", "train"} and sorted(df["fold"].unique()) == [0, 1]
    settings = json.loads((out / "settings.json").read_text())
    assert sorted(sum(settings["folds"], [])) == ["iris", "wine"]
    report = (out / "report.md").read_text()
    assert "unseen protocol" in report and "fold 0:" in report and "![pareto_tau.png]" in report
    assert "neon p1 tau5" in stdout and "agent trained at tau 50" in stdout

    # an agent that trained on a dataset of an unseen fold is refused, before any work
    code, _, err = _cli(*args, "--methods", "neon", "--agent", f"5={zoo_root / 'agents' / 'saw_wine'}", "--overwrite")
    assert code == 2 and "trained on wine" in err and "train-agent --unseen wine" in err

    code, _, err = _cli("evaluate", "--datasets", "iris", "--zoo-root", zoo_root, "--methods", "neon,bogus",
                        "--out", tmp_path / "x")
    assert code == 2 and "bogus" in err and "random" in err
    code, _, err = _cli("evaluate", "--datasets", "iris,nope", "--zoo-root", zoo_root, "--methods", "random",
                        "--out", tmp_path / "x")
    assert code == 2 and "no zoo for nope" in err
    code, _, err = _cli("evaluate", "--zoo-root", zoo_root, "--out", tmp_path / "x")
    assert code == 2 and "--suite" in err
    code, _, err = _cli("evaluate", "--datasets", "iris", "--zoo-root", zoo_root, "--tau", "5", "--agent", "x=y",
                        "--out", tmp_path / "x")
    assert code == 2 and "TAU=PATH" in err
    code, _, err = _cli("evaluate", "--datasets", "iris", "--zoo-root", zoo_root, "--methods", "neon_best",
                        "--search", "none,2x16:speed=3", "--out", tmp_path / "x")
    assert code == 2 and "search '2x16:speed=3'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_builds_the_zoos_it_lacks_and_resumes(tmp_path, monkeypatch):
    """Without --zoo-root every zoo is built under OUT/zoos (here 4 networks, 2 held out); a second run loads
    them, builds nothing and runs nothing."""
    out = tmp_path / "built"
    args = ["evaluate", "--datasets", "iris,wine", "--preset", "tiny", "--zoo-networks", 4, "--zoo-heldout", 2,
            "--methods", "structured", "--settings", "structured=0.5", "--batch", 2, "--out", out, "--quiet"]
    code, stdout, err = _cli(*args)
    assert code == 0, err
    for name in ("iris", "wine"):
        z = zoo_lib.load_zoo(out / "zoos" / name)
        assert (z.dataset, len(z), int(z.heldout.sum()), z.preset.name) == (name, 4, 2, "tiny")
    assert not (out / "zoos" / ".building").exists()
    df = pd.read_csv(out / "networks.csv", dtype={"setting": str})
    assert len(df) == 2 * 2 and set(df["dataset"]) == {"iris", "wine"} and set(df["split"]) == {"heldout"}
    assert set(df["method"]) == {"structured"} and set(df["setting"]) == {"0.5"}
    assert json.loads((out / "settings.json").read_text())["identity"]["zoo_root"] == str((out / "zoos").resolve())
    assert "structured 0.5" in stdout
    rows, cells = (out / "networks.csv").read_text(), (out / "cells.jsonl").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("nothing should be built or run again")

    monkeypatch.setattr(zoo_lib, "build_zoo", refuse)
    monkeypatch.setattr(runner, "run", refuse)
    code, _, err = _cli(*args)
    assert code == 0, err
    assert (out / "networks.csv").read_text() == rows and (out / "cells.jsonl").read_text() == cells


def test_reproduction_notebook_runs(tmp_path, zoo_root):
    """The notebook resumes an evaluation run here first (so its kernel compiles nothing), then renders it."""
    nbformat = pytest.importorskip("nbformat")
    ev.run_evaluation(_cfg(zoo_root, methods=["random"], agents={}, preset="tiny"), tmp_path / "nb_eval",
                      progress=False, log=None)
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "reproduce_evaluation.ipynb", as_version=4)
    [params] = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    params.source = (f'ZOO_ROOT = "{zoo_root}"\nDATASETS = ("iris", "wine")\nDATA_DIR = None\nPRESET = "tiny"\n'
                     f'METHODS = ("random",)\nAMC = {{}}\nTAUS = (5,)\nPASSES = (1,)\nSEEDS = (0,)\nAGENTS = {{}}\n'
                     f'OUT = "{tmp_path / "nb_eval"}"\nRESULTS = None\nBATCH = 2')
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells for o in c.get("outputs", []))
    assert "random p1" in text and "compression" in text
    assert sum(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", [])) >= 2
    assert (tmp_path / "nb_eval" / "report.md").exists()


# ---------------------------------------------------------------------------------------------- the search


def test_search_specs_are_canonical_cells_of_neon_best_and_bad_ones_one_line():
    from neon_jax.search import Search, parse_search_spec, search_spec

    assert parse_search_spec("none") == Search() and search_spec(Search()) == "none"
    spec = parse_search_spec("2X16:margin=2.50:final")
    assert spec == Search(rounds=2, population=16, margin=2.5, final_finetune=True)
    assert search_spec(spec) == "2x16:margin=2.5:final" and parse_search_spec(search_spec(spec)) == spec
    assert search_spec(parse_search_spec("final")) == "final"
    assert search_spec(parse_search_spec("3:epochs=2")) == "3x16:epochs=2"
    cfg = ev.EvalConfig(datasets=["x"], zoo_root=".", methods=["neon_best"], candidates=[1, 8],
                        searches=["none", "2x16:final", "2X16:final"])
    assert cfg.searches == ("none", "2x16:final")  # canonical, each once
    settings = sorted({c.setting for c in ev.plan_cells(cfg, None)})
    assert settings == ["pretrained:5 k=1", "pretrained:5 k=1 search=2x16:final", "pretrained:5 k=8",
                        "pretrained:5 k=8 search=2x16:final"]
    assert [ev.plan.parse_candidates_setting(s) for s in settings][1] == ("pretrained:5", 1)
    assert ev.plan.candidates_search(settings[1]) == "2x16:final" and ev.plan.candidates_search(settings[0]) == "none"
    for bad in ("2x0", "two", "2x16:speed=3", "margin=-1", "epochs=0"):
        with pytest.raises(ValueError, match="search") as err:
            ev.EvalConfig(datasets=["x"], zoo_root=".", methods=["neon_best"], searches=[bad])
        assert "\n" not in str(err.value)


def test_neon_best_with_a_search_runs_and_is_labelled(zoo_root, tmp_path):
    out = tmp_path / "eval"
    cfg = _cfg(zoo_root, methods=["neon_best"], datasets=["iris"], candidates=[1], searches=["none", "1x2:final"])
    summary = ev.run_evaluation(cfg, out, progress=False, log=None)
    df = pd.read_csv(out / "networks.csv")
    assert len(df) == 4 and set(df["setting"].str.contains("search=1x2:final")) == {True, False}
    assert {g["label"] for g in summary["groups"]} == {"neon_best k1 p1 tau5", "neon_best k1 search 1x2:final p1 tau5"}
    faithful = df[~df["setting"].str.contains("search")].sort_values("network")
    searched = df[df["setting"].str.contains("search")].sort_values("network")
    # the search only adds candidates under the same rule: never more parameters than the faithful choice
    assert (searched["params_after"].to_numpy() <= faithful["params_after"].to_numpy()).all()
