"""Single-episode NEON against candidate-selected NEON (and the baselines) in one evaluation's results folder.

Per tau: mean and median compression, mean test accuracy change, and how many networks lost more than tau points
on the test split, for `neon` (the paper's one sampled episode), `neon_best` (the main job: the smallest candidate
within tau on the validation split) and every setting of the other methods (a baseline has no tau; its losses are
counted against each tau). Also, per tau and for every other method setting, the structured-pruning compression at
its mean accuracy change (linear interpolation along structured's sweep): "more compression at equal accuracy" as
one number.

    PYTHONPATH=. python benchmarks/compare_selection.py benchmarks/results/eval_cpu_heldout_v3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def stats(g: pd.DataFrame, tau: float) -> dict:
    return {"networks": int(len(g)), "compression_mean": float(g["compression"].mean()),
            "compression_median": float(g["compression"].median()),
            "acc_change_mean": float(g["acc_change_points"].mean()),
            "acc_change_median": float(g["acc_change_points"].median()),
            "lost_more_than_tau": int((g["acc_change_points"] < -tau - 1e-9).sum()),
            "datasets": int(g["dataset"].nunique())}


def structured_at(rows: list[dict], acc: float) -> float | None:
    """Structured's compression where its mean accuracy change equals `acc` (None outside its sweep)."""
    pts = sorted((r["acc_change_mean"], r["compression_mean"]) for r in rows)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if not xs or acc < xs[0] or acc > xs[-1]:
        return None
    return float(np.interp(acc, xs, ys))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="an evaluate --out folder (networks.csv or networks.csv.gz)")
    ap.add_argument("--out", default=None, help="JSON path (default: RESULTS/selection_vs_single.json)")
    args = ap.parse_args(argv)
    folder = Path(args.results)
    path = folder / "networks.csv" if (folder / "networks.csv").exists() else folder / "networks.csv.gz"
    df = pd.read_csv(path, dtype={"setting": str}).fillna({"setting": ""})
    taus = sorted(df.loc[df["method"].isin(["neon", "neon_best"]), "tau"].dropna().unique())
    table = []
    for tau in taus:
        for method in ("neon", "neon_best"):
            g = df[(df["method"] == method) & (df["tau"] == tau)]
            if len(g):
                table.append({"tau": float(tau), "method": method, "setting": g["setting"].iloc[0], **stats(g, tau)})
        for (method, setting), g in df[~df["method"].isin(["neon", "neon_best"])].groupby(["method", "setting"]):
            table.append({"tau": float(tau), "method": method, "setting": setting, **stats(g, tau)})
    equal = []
    for tau in taus:
        struct = [r for r in table if r["tau"] == tau and r["method"] == "structured"]
        for r in table:
            if r["tau"] == tau and r["method"] != "structured" and struct:
                equal.append({"tau": float(tau), "method": r["method"], "setting": r["setting"],
                              "acc_change_mean": r["acc_change_mean"], "compression_mean": r["compression_mean"],
                              "structured_compression_at_that_accuracy": structured_at(struct, r["acc_change_mean"])})
    doc = {"results": str(folder), "rows": table, "equal_accuracy": equal,
           "note": "accuracy changes in test-split points; lost_more_than_tau counts networks with change < -tau"}
    out = Path(args.out) if args.out else folder / "selection_vs_single.json"
    out.write_text(json.dumps(doc, indent=1))
    print("| τ | method | setting | networks | compression mean / median | Δacc mean | lost > τ |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['tau']:g} | {r['method']} | {r['setting']} | {r['networks']} | ×{r['compression_mean']:.2f} / "
              f"×{r['compression_median']:.2f} | {r['acc_change_mean']:+.2f} | {r['lost_more_than_tau']} |")
    for e in equal:
        at = e["structured_compression_at_that_accuracy"]
        print(f"tau {e['tau']:g}: {e['method']} {e['setting']} ×{e['compression_mean']:.2f} at "
              f"{e['acc_change_mean']:+.2f}; structured at that accuracy: "
              f"{'outside its sweep' if at is None else f'×{at:.2f}'}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
