"""README.md's examples run as written (the front door must not lie)."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _block(marker: str) -> str:
    found = [b for b in PYTHON_BLOCKS if marker in b]
    assert len(found) == 1, f"README.md: expected one python block with {marker!r}, found {len(found)}"
    return found[0]


def test_readme_python_pieces_run_as_written(capsys):
    """The 'pieces' example: a batch of environments, a random roll-out, the agent's update, `runner.run`."""
    namespace: dict = {}
    exec(compile(_block("make_rollout"), "README.md", "exec"), namespace)
    rows, losses = namespace["rows"], namespace["losses"]
    assert len(rows) == 4 and all(set(r["widths_before"]) <= set("0123456789-") for r in rows)
    assert namespace["transitions"].action.shape[0] == 4
    assert all(bool(__import__("numpy").isfinite(v).all()) for v in __import__("jax").tree_util.tree_leaves(losses))
    out = capsys.readouterr().out
    assert "->" in out and "(4," in out


@pytest.mark.slow
def test_readme_python_prune_runs_as_written():
    """The first Python example: the main job on breast_cancer with the shipped agent (cpu preset)."""
    namespace: dict = {}
    exec(compile(_block('neon_jax.prune("breast_cancer"'), "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.report["compression"] >= 1.0 and result.report["tau"] == 5.0
    assert result.report["chosen"]["val_acc_change_points"] >= -5.0


def test_readme_bring_your_own_runs(capsys):
    """'Bring your own model and data': the scikit-learn pipeline pruned on the user's split (at the tiny preset
    here; as written under -m slow)."""
    code = _block("result.to_sklearn()").replace("tau=5)", 'tau=5, preset="tiny", passes=1, candidates=2)')
    assert 'preset="tiny"' in code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result, pipe = namespace["result"], namespace["pipe"]
    assert abs(result.report["test_acc_before"] - pipe.score(namespace["X_test"], namespace["y_test"])) < 1e-6
    assert "->" in capsys.readouterr().out


@pytest.mark.slow
def test_readme_bring_your_own_runs_as_written():
    namespace: dict = {}
    exec(compile(_block("result.to_sklearn()"), "README.md", "exec"), namespace)
    assert namespace["result"].report["compression"] >= 1.0


def test_readme_gymnax_example_runs_as_written(capsys):
    """'As a gymnax environment': gymnax.make on the shipped default pool, the wrappers, a vmapped reset and step."""
    namespace: dict = {}
    exec(compile(_block('gymnax.make("NeonPrune-v0"'), "README.md", "exec"), namespace)
    assert namespace["obs"].shape[0] == 4 and namespace["reward"].shape == (4,)
    assert "compression" in namespace["info"] and "final_observation" in namespace["info"]
    assert "(4," in capsys.readouterr().out
