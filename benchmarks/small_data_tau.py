"""Does the main job keep tau on small data? The choice with tau itself against the small-data rule.

On small datasets the choice among candidates is made on a few validation rows (iris: 21, one row = 4.8 points), and
the smallest candidate that happens to score well on them is often worse on new rows. For each dataset and seed the
main job prunes the same base network twice: ``small_data="off"`` (the choice within tau on validation) and
``small_data="auto"`` (`jobs.prune.selection_rule`: within tau less one standard error when one validation row is
worth more than tau / 2 points). Counted: test changes beyond tau, compression.

    python -m benchmarks.small_data_tau --out benchmarks/results/small_data_tau_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="iris,wine,sonar,ionosphere")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--tau", type=float, default=5.0)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--rules", default="off,auto")
    p.add_argument("--out", default="benchmarks/results/small_data_tau_cpu.json")
    args = p.parse_args(argv)
    import neon_jax

    rows = []
    for name in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for rule in args.rules.split(","):
                t0 = time.perf_counter()
                r = neon_jax.prune(name, data_dir=str(SHARED / "uci"), tau=args.tau, preset=args.preset, seed=seed,
                                   small_data=rule, progress=None).report
                rows.append({"dataset": name, "seed": seed, "rule": rule, "compression": r["compression"],
                             "test_change_points": r["acc_change_points"],
                             "val_change_points": r["chosen"]["val_acc_change_points"],
                             "beyond_tau": bool(r["acc_change_points"] < -args.tau),
                             "original_returned": r["chosen"]["episode"] < 0, "within_tau": r["within_tau"],
                             "candidates": r["candidates"], **{k: r["selection"][k] for k in (
                                 "applied", "validation_rows", "one_row_points", "margin_points", "select_tau")},
                             "test_rows": r["data"]["splits"]["test"], "seconds": time.perf_counter() - t0})
                print(json.dumps(rows[-1]), flush=True)
                summary = {}
                for rl in args.rules.split(","):
                    mine = [x for x in rows if x["rule"] == rl]
                    if mine:
                        comp = np.array([x["compression"] for x in mine])
                        summary[rl] = {"runs": len(mine), "beyond_tau": int(sum(x["beyond_tau"] for x in mine)),
                                       "compression_mean": float(comp.mean()),
                                       "compression_median": float(np.median(comp)),
                                       "test_change_mean": float(np.mean([x["test_change_points"] for x in mine])),
                                       "original_returned": int(sum(x["original_returned"] for x in mine))}
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps({"settings": vars(args), "summary": summary, "rows": rows},
                                                     indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
