"""The resumable results folder: its files, the rows of ``networks.csv`` and the finished cells.

``settings.json`` ties the folder to one `EvalConfig.identity`; every finished cell appends one row per network
to ``networks.csv`` (columns `NETWORK_FIELDS`), then one line to ``cells.jsonl``. Rows whose cell never reached
``cells.jsonl`` (an interrupted run) are dropped before the next run, which re-runs that cell; so are the cells
whose zoo or agent files changed since they ran (each record holds a digest of them).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import pandas as pd

from neon_jax.jobs.evaluate.agents import LoadedAgent
from neon_jax.jobs.evaluate.config import Cell, EvalConfig
from neon_jax.zoo import Zoo

OUTPUT_FILES = ("settings.json", "networks.csv", "cells.jsonl", "report.md", "summary.json",
                "compression_vs_accuracy.png", "pareto_tau.png")

NETWORK_FIELDS = (
    "cell", "protocol", "fold", "dataset", "network", "split", "method", "setting", "tau", "passes", "seed",
    "greedy", "agent", "agent_tau", "agent_trained_on_dataset", "depth", "widths_before", "widths_after",
    "params_before", "params_after", "compression", "test_acc_before", "test_acc_after", "acc_change_points",
    "layer_width_ratio", "counting", "seconds",
)


def prepare_output(cfg: EvalConfig, out_dir, overwrite: bool = False) -> Path:
    """Creates the results folder, or checks that it holds an evaluation of the same identity.

    Args:
      cfg: the evaluation (`EvalConfig.identity` is compared with the folder's ``settings.json``).
      out_dir: the results folder.
      overwrite: delete a previous evaluation's `OUTPUT_FILES` (of another identity) instead of refusing.
        Zoos built under ``out_dir/zoos`` stay.

    Returns:
      The folder.
    """
    out = Path(out_dir)
    settings_path = out / "settings.json"
    if settings_path.exists():
        previous = json.loads(settings_path.read_text()).get("identity")
        if previous != cfg.identity() and not overwrite:
            diff = {k: (previous.get(k) if previous else None, v) for k, v in cfg.identity().items()
                    if not previous or previous.get(k) != v}
            raise FileExistsError(f"{out} holds an evaluation with different settings ({diff}); pass --overwrite "
                                  f"to replace it or choose another --out")
        if overwrite and previous != cfg.identity():
            for name in OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
    elif overwrite and out.exists():
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_settings(out: Path, cfg: EvalConfig, folds: list[list[str]] | None, cells_planned: int,
                   run: dict | None = None) -> None:
    """Writes ``settings.json``: the identity, the whole config, the folds, the number of cells planned and the
    devices and processes of the latest run (`run`: `sharding.run_record`)."""
    doc = {"identity": cfg.identity(), "config": dataclasses.asdict(cfg), "folds": folds,
           "cells_planned": cells_planned}
    if run is not None:
        doc["run"] = run
    (out / "settings.json").write_text(json.dumps(doc, indent=1, default=str))


def read_cells(out_dir) -> dict:
    """The finished cells of a results folder.

    A torn last line (a run killed while appending it) is dropped from the file, so its cell runs again; any other
    unreadable line is an error naming the file and the line.

    Returns:
      cell key -> its ``cells.jsonl`` record ({} before the first cell).
    """
    done = {}
    path = Path(out_dir) / "cells.jsonl"
    if not path.exists():
        return done
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            done[doc["key"]] = doc
        except (json.JSONDecodeError, KeyError, TypeError):
            if number < len(lines):
                raise ValueError(f"{path}: line {number} is not a finished cell's record (damaged file); "
                                 f"delete the line to run that cell again") from None
            write_cells(out_dir, done)  # the append that a kill cut short
    return done


def write_cells(out_dir, done: dict) -> None:
    """Rewrites ``cells.jsonl`` with exactly the records of `done` (through a temporary file renamed into place)."""
    path = Path(out_dir) / "cells.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(doc) + "\n" for doc in done.values()))
    tmp.replace(path)


def file_digest(paths) -> str:
    """A short sha256 of files' names and bytes (what a finished cell ran on: its zoo's files, its agent's)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def drop_orphan_rows(out_dir, done: dict) -> None:
    """Rewrites ``networks.csv`` without the rows of cells missing from `done` (an interrupted run's)."""
    path = Path(out_dir) / "networks.csv"
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if r["cell"] in done]
    if len(keep) != len(rows):
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, NETWORK_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(keep)
        tmp.replace(path)


def _layer_ratio(before: str, after: str) -> str:
    wb = [int(w) for w in str(before).split("-") if w != ""]
    wa = [int(w) for w in str(after).split("-") if w != ""]
    return "-".join(f"{b / max(a, 1):.4g}" for b, a in zip(wb, wa))


def network_records(cell: Cell, rows: list[dict], protocol: str, zoos: dict[str, Zoo],
                    agent: LoadedAgent | None) -> list[dict]:
    """The ``networks.csv`` rows of one finished cell.

    Args:
      cell: the cell.
      rows: `runner.RunResult.rows` of its run.
      protocol: the evaluation's protocol.
      zoos: dataset -> zoo (for each network's train / held-out split).
      agent: the neon agent that ran the cell, or None.

    Returns:
      One dict per row, keys `NETWORK_FIELDS`.
    """
    out = []
    for r in rows:
        zoo = zoos[r["dataset"]]
        i = int(r["network"])
        wb, wa = str(r["widths_before"]), str(r["widths_after"])
        rec = {
            "cell": cell.key, "protocol": protocol, "fold": "" if cell.fold is None else cell.fold,
            "dataset": r["dataset"], "network": i, "split": "heldout" if zoo.heldout[i] else "train",
            "method": cell.method, "setting": cell.setting, "tau": "" if cell.tau is None else cell.tau,
            "passes": "" if cell.passes is None else cell.passes, "seed": cell.seed, "greedy": int(cell.greedy),
            "agent": "", "agent_tau": "", "agent_trained_on_dataset": "",
            "depth": len([w for w in wb.split("-") if w]), "widths_before": wb, "widths_after": wa,
            "params_before": int(r["params_before"]), "params_after": int(r["params_after"]),
            "compression": float(r["compression"]), "test_acc_before": float(r["test_acc_before"]),
            "test_acc_after": float(r["test_acc_after"]), "acc_change_points": float(r["acc_change_points"]),
            "layer_width_ratio": _layer_ratio(wb, wa), "counting": r.get("counting", "structured"),
            "seconds": float(r.get("seconds", float("nan"))),
        }
        if agent is not None:
            rec["agent"] = agent.path
            rec["agent_tau"] = "" if agent.tau is None else agent.tau
            rec["agent_trained_on_dataset"] = "" if agent.datasets is None else int(r["dataset"] in agent.datasets)
        out.append(rec)
    return out


def append_rows(out_dir, records: list[dict]) -> None:
    """Appends rows to ``networks.csv`` (writing the header first if the file is new)."""
    path = Path(out_dir) / "networks.csv"
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, NETWORK_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(records)
        fh.flush()


def append_cell(out_dir, cell: Cell, networks: int, seconds: float, inputs: str, process: dict | None = None) -> None:
    """Records a cell as finished in ``cells.jsonl`` (after its rows are in ``networks.csv``), with the digest of
    the files it ran on (`inputs`: a later run re-runs the cell when they change) and, when given, the state of
    the process after it (`process`: its compiled programs and memory maps, `programs.stats`)."""
    doc = {"key": cell.key, **dataclasses.asdict(cell), "networks": networks, "seconds": seconds, "inputs": inputs,
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if process is not None:
        doc["process"] = process
    with open(Path(out_dir) / "cells.jsonl", "a") as fh:
        fh.write(json.dumps(doc) + "\n")


def read_networks(out_dir) -> pd.DataFrame:
    """``networks.csv`` as a DataFrame, with the text columns typed as text ("" for empty)."""
    df = pd.read_csv(Path(out_dir) / "networks.csv", dtype={"setting": str, "agent": str, "counting": str,
                                                            "widths_before": str, "widths_after": str,
                                                            "layer_width_ratio": str})
    for col in ("setting", "agent", "counting", "layer_width_ratio"):
        df[col] = df[col].fillna("")
    return df
