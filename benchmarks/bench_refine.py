"""The refine search and the final fine-tune (issue 37, levers 2 and 3), zero-shot on datasets the agent never saw.

For each tau: the shipped cpu agent's main job (8 sampled + 1 greedy episodes, the best candidate within tau on
validation: the faithful setting), the same plus the refine search (`neon_jax.search`, R rounds x P proposals),
plus the final fine-tune, plus both; and AMC (FLOPs kept 0.2, 0.7) and structured pruning (0.7) on the same
networks (each a whole-network fine-tune after pruning). One row per (setting, tau): mean / median compression,
mean / median test accuracy change, networks beyond tau on test, seconds per network (the run, compile excluded;
the compile seconds beside it). Results are written after every setting, so an interrupted run keeps what it did.

    PYTHONPATH=. python benchmarks/bench_refine.py --zoo-root /work/runs/eval6_after2/zoos \
        --data-dir /work/shared/data/uci --networks 4 --taus 5 --out benchmarks/results/refine_unseen_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from neon_jax import zoo as zoo_lib  # noqa: E402
from neon_jax.agent.registry import load_agent  # noqa: E402
from neon_jax.env import EnvConfig  # noqa: E402
from neon_jax.learn import run_agent  # noqa: E402
from neon_jax.pool import EnvPool  # noqa: E402
from neon_jax.pruning.program import run_baseline  # noqa: E402
from neon_jax.search import Search  # noqa: E402

AGENT_DATASETS = {"no2", "pm10", "disclosure_z", "mfeat-morphological", "cardiotocography", "mfeat-karhunen"}


def summary(rows: list[dict], tau: float, seconds: float, compile_seconds: float) -> dict:
    comp = np.array([r["compression"] for r in rows])
    dacc = np.array([r["acc_change_points"] for r in rows])
    out = {"networks": len(rows), "compression_mean": float(comp.mean()), "compression_median": float(np.median(comp)),
           "acc_change_mean": float(dacc.mean()), "acc_change_median": float(np.median(dacc)),
           "beyond_tau_on_test": int((dacc < -tau).sum()), "seconds_per_network": seconds / len(rows),
           "run_seconds": seconds, "compile_seconds": compile_seconds}
    if "chosen_by_search" in rows[0]:
        out["chosen_by_search"] = int(sum(bool(r["chosen_by_search"]) for r in rows))
    if "final_kept" in rows[0]:
        out["final_finetune_kept"] = int(sum(bool(r["final_kept"]) for r in rows))
        out["final_val_change_mean"] = float(np.mean([100 * (r["val_acc"] - r["final_val_before"]) for r in rows]))
        out["final_test_change_mean"] = float(np.mean([100 * (r["test_acc_after"] - r["final_test_before"])
                                                       for r in rows]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo-root", default="/work/runs/eval6_after2/zoos")
    ap.add_argument("--data-dir", default="/work/shared/data/uci")
    ap.add_argument("--datasets", default="banana,german,ionosphere,sonar,twonorm,wdbc")
    ap.add_argument("--networks", type=int, default=4, help="held-out networks per dataset")
    ap.add_argument("--taus", default="5")
    ap.add_argument("--refine", default="2x16", help="ROUNDSxPOPULATION of the refine settings")
    ap.add_argument("--settings", default="neon,neon+refine,neon+final,neon+both,amc:0.2,structured:0.7,amc:0.7")
    ap.add_argument("--cheap-epochs", type=int, default=3, help="proposal fine-tune epochs of neon+both_cheap")
    ap.add_argument("--margin", type=float, default=0.5, help="neon+both_margin's margin, a share of tau")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/refine_unseen_cpu.json"))
    args = ap.parse_args(argv)
    datasets = args.datasets.split(",")
    seen = AGENT_DATASETS.intersection(datasets)
    if seen:
        raise SystemExit(f"the shipped agents were trained on {sorted(seen)}: not unseen")
    rounds, population = (int(x) for x in args.refine.split("x"))
    loaded = [zoo_lib.load_zoo_with_data(Path(args.zoo_root) / d, args.data_dir) for d in datasets]
    preset = loaded[0][0].preset
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    results = {"what": __doc__.split("\n\n")[0], "machine": platform.processor() or platform.machine(),
               "zoo_root": args.zoo_root, "datasets": datasets, "networks_per_dataset": args.networks,
               "preset": preset.name, "seed": args.seed, "refine": {"rounds": rounds, "population": population},
               "settings": old.get("settings", {}), "rows": old.get("rows", {})}
    for tau in (float(t) for t in args.taus.split(",")):
        pool = EnvPool.from_zoos(loaded, "heldout", tau, preset)
        keep = [i for i, (d, _) in enumerate(pool.names)
                if sum(1 for (e, _) in pool.names[:i] if e == d) < args.networks]
        pool = pool.subset(keep)
        agent = load_agent("pretrained", preset, tau)
        env_config = EnvConfig(passes=4, cut=agent.env.get("cut", "reinit"))
        for setting in args.settings.split(","):
            t0 = time.perf_counter()
            if setting.startswith("neon"):
                search = {"neon": None, "neon+refine": Search(rounds=rounds, population=population),
                          "neon+final": Search(final_finetune=True),
                          "neon+both": Search(rounds=rounds, population=population, final_finetune=True),
                          "neon+both_cheap": Search(rounds=rounds, population=population, final_finetune=True,
                                                    proposal_epochs=args.cheap_epochs),
                          "neon+both_margin": Search(rounds=rounds, population=population, final_finetune=True,
                                                     margin=args.margin * tau)}[setting]
                res = run_agent(agent.agent, agent.actor, pool, preset, env_config, seed=args.seed,
                                batch_size=len(pool), candidates=8, buckets=False, search=search)
            else:
                method, value = setting.split(":")
                res = run_baseline(method, pool, preset, setting=float(value), seed=args.seed,
                                   batch_size=len(pool), buckets=False)
            row = summary(res.rows, tau, res.run_seconds, res.compile_seconds)
            row["wall_seconds"] = time.perf_counter() - t0
            results["settings"][f"{setting} tau{tau:g}"] = row
            results["rows"][f"{setting} tau{tau:g}"] = [
                {k: r[k] for k in ("dataset", "network", "widths_before", "widths_after", "compression",
                                   "acc_change_points", "val_acc0", "val_acc")} for r in res.rows]
            print(setting, f"tau {tau:g}", json.dumps(row), flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
