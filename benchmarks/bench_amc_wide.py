"""AMC (FLOPs kept 0.2, the original's search settings) on the networks of wide zoos (the paper's widths), one
network per compiled batch so that each row's seconds are its own: the refit mode of each shape group (the table
where it fits `amc.TABLE_BUDGET_BYTES`, on demand otherwise), seconds per network (search and fine-tune; compiles
apart), compression, accuracy change and the process's peak resident memory.

    neon-jax zoo --dataset diabetes --data-dir ../shared/data --n 4 --heldout 1 --preset wide --out runs/zoo_wide
    PYTHONPATH=. python benchmarks/bench_amc_wide.py --zoo-root runs/zoo_wide --datasets diabetes \
        --data-dir ../shared/data --out benchmarks/results/amc_wide/bench_amc_wide_auto.json
    # the same networks with every refit solved on demand (--refit on_demand), the first two:
    PYTHONPATH=. python benchmarks/bench_amc_wide.py ... --refit on_demand --networks 2 \
        --out benchmarks/results/amc_wide/bench_amc_wide_on_demand.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from neon_jax import amc, nets, pruning  # noqa: E402
from neon_jax import zoo as zoo_lib  # noqa: E402
from neon_jax.pool import EnvPool  # noqa: E402

ROW_KEYS = ("dataset", "network", "depth", "widths_before", "widths_after", "compression", "test_acc_before",
            "test_acc_after", "acc_change_points", "amc_flops_ratio", "amc_search_val_acc", "finetune_epochs",
            "seconds")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo-root", required=True)
    ap.add_argument("--datasets", default="diabetes")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--which", default="all", choices=("all", "train", "heldout"))
    ap.add_argument("--networks", type=int, default=None, help="the first N networks of the pool (default all)")
    ap.add_argument("--preserve", type=float, default=0.2)
    ap.add_argument("--refit", default="auto", choices=amc.REFIT_MODES)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    zoos = [zoo_lib.load_zoo_with_data(p, args.data_dir)
            for p in zoo_lib.find_zoos(args.zoo_root, args.datasets.split(","))]
    preset = zoos[0][0].preset
    pool = EnvPool.from_zoos(zoos, args.which, 5.0, preset)
    if args.networks is not None:
        pool = pool.subset(list(range(min(args.networks, len(pool)))))
    config = amc.AMCConfig(refit=args.refit)
    t0 = time.perf_counter()
    result = pruning.run_baseline("amc", pool, preset, setting=args.preserve, batch_size=1, amc_config=config)
    wall = time.perf_counter() - t0
    groups = [dict(g, table_gib=amc.table_bytes(nets.NetDims(pool.dims.d_max, pool.dims.k_max, g["max_hidden"],
                                                             g["w_max"]), config) / 2**30,
                   refit=amc.refit_mode(nets.NetDims(pool.dims.d_max, pool.dims.k_max, g["max_hidden"], g["w_max"]),
                                        config))
              for g in result.groups]
    rows = [{k: r.get(k) for k in ROW_KEYS} for r in result.rows]
    doc = {"preset": preset.name, "datasets": args.datasets, "which": args.which, "preserve": args.preserve,
           "refit": args.refit, "networks": len(rows), "wall_seconds": wall,
           "compile_seconds": result.compile_seconds, "run_seconds": result.run_seconds,
           "seconds_per_network": result.run_seconds / max(len(rows), 1),
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "machine": {"platform": platform.platform(), "backend": jax.default_backend(),
                       "devices": str(jax.devices())},
           "groups": groups, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, default=str))
    for r in rows:
        print(f"{r['network']}: widths {r['widths_before']} -> {r['widths_after']}, x{r['compression']:.2f}, "
              f"Δacc {r['acc_change_points']:+.2f}, {r['seconds']:.0f} s")
    print(f"{len(rows)} networks, {result.run_seconds:.0f} s run + {result.compile_seconds:.0f} s compile, "
          f"peak RSS {doc['peak_rss_gib']:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
