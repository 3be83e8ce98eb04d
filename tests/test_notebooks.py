"""The notebooks run end to end (at the tiny preset, so the suite stays quick)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run(name: str, parameters: str, tmp_path) -> "nbformat.NotebookNode":
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged, f"{name} has no cell tagged 'parameters'"
    tagged[0].source = parameters
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_quickstart_runs(tmp_path):
    nb = _run("quickstart.ipynb", 'DATASET = "iris"\nPRESET = "tiny"\nAGENT = "random"\nTAUS = (1, 50)', tmp_path)
    text = _text(nb)
    assert "compression" in text and "hidden widths" in text
    assert any(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))
