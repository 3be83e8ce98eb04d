"""What K candidate episodes cost the main job: `neon_jax.prune(..., candidates=K)` beside PyTorch running K episodes.

For each K the same held-out network of a zoo is pruned twice in one process: the first call compiles (the
persistent cache is off here, so compile time is real), the second is warm (what a second prune of the same
shapes costs; with the CLI's persistent cache a new process gets close to it). Reported: the stages of
`report.json`'s ``seconds``, the candidates, how many kept tau, the chosen compression and test change.

The PyTorch reference (`torch_reference/env_step.py`, the original's environment, the "reinit" cut) runs K episodes
of the same network one after the other, replaying the chosen episode's actions: the work the original would do
to try K prunings.

    PYTHONPATH=. python benchmarks/bench_candidates.py --zoo runs/zoo_cpu/diabetes --data-dir ../shared/data \
        --k 1,8,32 --out benchmarks/results/candidates_cost_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from neon_jax import nets  # noqa: E402
from neon_jax import zoo as zoo_lib  # noqa: E402
from neon_jax.jobs.prune import prune  # noqa: E402


def torch_episodes(network: nets.DenseNetwork, prepared, preset, actions: list[int], k: int, passes: int,
                   tau: float, seed: int) -> dict:
    """K PyTorch episodes of `network`, one after the other, each replaying `actions`: seconds and the widths."""
    import torch

    from benchmarks.torch_reference.base_training import to_torch_sequential
    from benchmarks.torch_reference.env_step import TorchNeonEnv, run_episode, splits_dict

    torch.set_num_threads(os.cpu_count() or 1)
    times, widths = [], None
    for e in range(k):
        env = TorchNeonEnv(to_torch_sequential(network).eval(), splits_dict(prepared.splits), preset, passes, tau,
                           seed + e, "cpu")
        t0 = time.perf_counter()
        out = run_episode(env, actions)
        times.append(time.perf_counter() - t0)
        widths = out["widths"]
    return {"torch_seconds": float(np.sum(times)), "torch_seconds_per_episode": times, "torch_final_widths": widths}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", default="runs/zoo_cpu/diabetes", help="a zoo folder (its first held-out network)")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--k", default="1,8,32", help="comma-separated candidate counts (sampled episodes)")
    ap.add_argument("--tau", type=float, default=5.0)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/candidates_cost_cpu.json")
    args = ap.parse_args(argv)
    if Path(args.out).exists():
        raise SystemExit(f"{args.out} exists; move it away first")
    zoo, prepared = zoo_lib.load_zoo_with_data(Path(args.zoo), data_dir=args.data_dir)
    index = int(np.flatnonzero(zoo.heldout)[0])
    variables, arch = jax.tree_util.tree_map(lambda a: a[index], (zoo.variables, zoo.archs))
    network = nets.compact(variables, arch, zoo.dims, zoo.preset.dropout_rate)
    results = []
    for k in [int(v) for v in args.k.split(",")]:
        calls = []
        for label in ("first (compiles)", "second (warm)"):
            t0 = time.perf_counter()
            r = prune(prepared.dataset, network=network, tau=args.tau, passes=args.passes, preset=zoo.preset,
                      seed=args.seed, candidates=k, progress=None).report
            calls.append({"call": label, "wall_seconds": time.perf_counter() - t0, "seconds": r["seconds"]})
        row = {"k_sampled": k, "episodes": r["episodes"], "candidates": r["candidates"], "within_tau": r["within_tau"],
               "chosen": r["chosen"], "widths_before": r["widths_before"], "widths_after": r["widths_after"],
               "compression": r["compression"], "test_acc_change_points": r["acc_change_points"], "calls": calls}
        if not args.skip_torch:
            actions = [int(a) for a in str(r["actions"])] + [0] * 64  # run_episode stops at the episode end
            row |= torch_episodes(network, prepared, zoo.preset, actions, r["episodes"], args.passes, args.tau,
                                  args.seed)
            row["torch_over_jax_warm_run"] = row["torch_seconds"] / calls[1]["seconds"]["run"]
        print(json.dumps({k2: v for k2, v in row.items() if k2 not in ("calls", "torch_seconds_per_episode")}))
        print("  " + "; ".join(f"{c['call']}: compile {c['seconds']['compile']:.1f}s, run {c['seconds']['run']:.2f}s"
                              for c in calls))
        results.append(row)
    doc = {"benchmark": "candidates_cost", "zoo": args.zoo, "network": index, "dataset": prepared.dataset.name,
           "rows": prepared.dataset.n_rows, "preset": zoo.preset.name, "tau": args.tau, "passes": args.passes,
           "agent": "pretrained (the shipped agent nearest tau)", "machine": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
           "load_average_start": os.getloadavg()[0], "results": results,
           "torch_reference": "K episodes of the original's environment (reinit cut) one after the other, replaying "
                              "the chosen episode's actions; the JAX side uses the agent's own cut"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
