"""The refine search and the final fine-tune after the agent's episodes (`neon_jax.search`): off, the main job is
the faithful one; on, its candidates obey the choice rule, the original stays eligible, and the job still compiles
a bounded number of programs."""

import jax
import numpy as np
import pytest

import neon_jax
from neon_jax import cli, nets
from neon_jax.presets import get_preset
from neon_jax.search import Search, cut_to_widths, parse_refine

MAX_COMPILES = 8  # as tests/test_compiles.py: the search runs inside the candidates program, no program more


def _prune(**kw):
    return neon_jax.prune("iris", preset="tiny", agent="random", tau=kw.pop("tau", 5), seed=0, progress=None, **kw)


def _same_network(a: nets.DenseNetwork, b: nets.DenseNetwork) -> bool:
    return a.hidden_widths == b.hidden_widths and all(
        np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a.__dict__), jax.tree_util.tree_leaves(b.__dict__))
        if isinstance(x, np.ndarray))


@pytest.fixture(scope="module")
def faithful():
    return _prune()


@pytest.fixture(scope="module")
def refined():
    return _prune(refine=2, refine_population=4, final_finetune=True, refine_margin=1.0)


def test_refine_off_is_the_faithful_job(faithful):
    off = _prune(refine=0, refine_population=7, final_finetune=False)
    assert off.candidates == faithful.candidates
    assert _same_network(off.pruned, faithful.pruned)
    assert "search" not in faithful.report and "final_finetune" not in faithful.report
    assert all("search" not in c for c in faithful.candidates)
    for key in ("widths_after", "params_after", "test_acc_after", "val_acc", "chosen_episode", "chosen_step"):
        assert off.report[key] == faithful.report[key]


def test_search_candidates_obey_the_rule(faithful, refined):
    r, table = refined.report, refined.candidates
    searched = [c for c in table if c["search"]]
    assert len(searched) == 2 * 4 == r["candidates"] - len(faithful.candidates)
    assert all(c["episode"] >= r["episodes"] for c in searched)
    # the agent's candidates are the faithful job's, unchanged
    agents = [{k: v for k, v in c.items() if k not in ("search", "chosen")} for c in table if not c["search"]]
    assert agents == [{k: v for k, v in c.items() if k != "chosen"} for c in faithful.candidates]
    assert table[0]["episode"] == -1 and table[0]["within_tau"]  # the original always eligible
    (chosen,) = [c for c in table if c["chosen"]]
    assert chosen["within_tau"] and chosen["val_change_points"] >= -r["tau"]
    assert chosen["params"] == r["params_after"] == min(c["params"] for c in table if c["within_tau"])
    assert chosen["params"] <= faithful.report["params_after"]  # the search only adds candidates
    assert r["search"]["chosen_by_search"] == chosen["search"]
    # the final fine-tune: kept only when validation does not fall; before = the chosen candidate
    f = r["final_finetune"]
    assert f["val_acc_before"] == pytest.approx(chosen["val_acc"]) and f["val_acc_after"] >= f["val_acc_before"]
    assert f["kept"] or f["val_acc_after"] == f["val_acc_before"]
    assert 100 * (r["val_acc"] - r["val_acc0"]) >= -r["tau"]
    assert refined.pruned.num_params() == r["params_after"]
    assert r["compiled"]["totals"]["compiles"] <= MAX_COMPILES, r["compiled"]["programs"]


def test_search_never_chooses_beyond_tau():
    result = _prune(tau=1e-3, refine=1, refine_population=4)
    for c in result.candidates:
        if c["chosen"]:
            assert c["within_tau"] and (c["episode"] == -1 or c["val_change_points"] >= -1e-3)


def test_search_saves_its_candidates(refined, tmp_path):
    from neon_jax.jobs.prune import save_result

    save_result(refined, tmp_path / "out")
    lines = (tmp_path / "out" / "candidates.csv").read_text().splitlines()
    assert lines[0].endswith(",search") and len(lines) == 1 + len(refined.candidates)


def test_cut_to_widths_keeps_the_largest_norm_neurons():
    preset = get_preset("tiny")
    dims = nets.NetDims(max_hidden=2, w_max=8, d_max=4, k_max=3)
    model = nets.make_model(dims, preset)
    arch = nets.make_arch([8, 6], ["relu", "relu"], ["none", "none"], 4, 3, dims)
    variables = nets.init_network(jax.random.PRNGKey(0), model, arch)
    variables = nets.zero_dead(variables, arch, dims)
    v, a = cut_to_widths(variables, arch, dims, np.array([3, 2]))
    assert np.asarray(a.widths).tolist() == [3, 2]
    norms = np.sqrt((np.asarray(nets.kernel(variables["params"], 0, dims.max_hidden)) ** 2).sum(0))
    kept = np.flatnonzero(np.asarray(a.mask[0]))
    assert sorted(kept.tolist()) == sorted(np.argsort(-norms)[:3].tolist())
    assert nets.count_params(a) < nets.count_params(arch)


def test_bad_options_give_one_line(capsys):
    for kw, words in (({"refine": -1}, "refine must be"), ({"refine_population": 0}, "refine_population must be"),
                      ({"refine": 1.5}, "refine must be"), ({"final_finetune": "yes"}, "final_finetune must be"),
                      ({"refine": 1, "select": "last"}, "select='best'"), ({"refine_epochs": 0}, "refine_epochs must be"),
                      ({"refine_margin": -1}, "refine_margin must be")):
        with pytest.raises(ValueError, match=words) as err:
            _prune(**kw)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError):
        Search(rounds=1, elite=0)
    assert parse_refine("2x8") == (2, 8) and parse_refine("3") == (3, 16) and parse_refine("0") == (0, 16)
    code = cli.main(["prune", "--preset", "tiny", "--agent", "random", "--quiet", "--dataset", "iris",
                     "--refine", "two"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--refine takes ROUNDS" in err and len(err.splitlines()) == 1
