"""One entry point for the speed benchmarks: neon_jax and the PyTorch reference on identical work, in one run.

    PYTHONPATH=. python benchmarks/run.py --quick            # a few minutes on 2 CPU cores
    PYTHONPATH=. python benchmarks/run.py --full             # the full grid (meant for a GPU)
    PYTHONPATH=. python benchmarks/run.py --quick --only env_steps,agent_update

Benchmarks (each: JAX compile seconds apart from run seconds, PyTorch seconds, ratio = torch / jax):

* ``population``: base-network training of P random networks (bench_population_training: same architectures,
  initial weights, data, epochs, batch; parity asserted before timing): one vmap over the population, and
  (``--slots``) the depth-sorted chunks that ``trainer.train`` uses by default on one CPU device;
* ``env_steps``: one environment step of B environments (zoo networks of a real dataset, cpu preset, reset
  states, random actions): ``jit(vmap(NeonEnv.step))``, ``vmap_in_chunks`` of it and ``NeonEnv.step_batch``
  (``--slots``: packed fine-tunes, the library's batched step) vs the PyTorch reference environment stepping the
  same networks with the same actions one by one (rebuild, fine-tune, evaluate, NumPy/SciPy state);
* ``episode``: whole four-pass episodes of B networks through the library's roll-out (`rollout.make_rollout`,
  random policy; one vmap(step) per step and, with ``--slots``, packed fine-tunes) vs
  `torch_reference.env_step.run_episode` replaying the same actions one network after the other;
* ``agent_update``: the library's update (`agent.make_update`, what `agent.make_train_iteration` runs) on B
  episodes of T observations vs the original's PyTorch update (one episode at a time, BatchNorm2d at batch 1),
  and vs one PyTorch update on the batch mean (identical maths);
* ``batch_scaling``: env steps per second vs B (PyTorch is linear in B: its per-step time from ``env_steps``);
* ``device_scaling``: population training (and, in full mode, env steps) with the batch sharded over 1, 2, ...
  devices (`neon_jax.sharding`); on a CPU the devices are simulated (``--xla_force_host_platform_device_count``)
  and share the same cores.

Each benchmark is its own module: ``population`` in `bench_population_training.py` (``suite_population``),
``env_steps`` and ``batch_scaling`` in `bench_env.py`, ``episode`` in `bench_episode.py`, ``agent_update`` in
`bench_agent_update.py`, ``device_scaling`` in `bench_device_scaling.py` (its child processes are this script with
``--device-worker N``); `common.py` holds what they share. This script is the driver: the grids, the record, notes.

Writes ``benchmarks/results/suite_<mode>_<device>.json``; `benchmarks/summarize.py` prints the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
from benchmarks.bench_agent_update import bench_agent_update  # noqa: E402
from benchmarks.bench_device_scaling import bench_device_scaling, device_worker  # noqa: E402
from benchmarks.bench_env import bench_batch_scaling, bench_env_steps  # noqa: E402
from benchmarks.bench_episode import bench_episode  # noqa: E402
from benchmarks.bench_population_training import suite_population  # noqa: E402
from benchmarks.common import log  # noqa: E402

RESULTS_DIR = HERE / "results"
BENCHMARKS = ("population", "env_steps", "episode", "agent_update", "batch_scaling", "device_scaling")

MODES = {
    "quick": dict(pop=[32], pop_epochs=5, pop_repeats=3, env_batch=32, env_repeats=3, torch_passes=2,
                  episode_batch=8, update_batch=8, scaling=[1, 8, 32], devices=[1, 2], device_env_steps=False),
    "full": dict(pop=[1, 8, 32, 128, 512], pop_epochs=5, pop_repeats=5, env_batch=32, env_repeats=5,
                 torch_passes=3, episode_batch=32, update_batch=32, scaling=[1, 4, 16, 32, 64, 256, 1024],
                 devices=None, device_env_steps=True),
    # `benchmarks/device_check.py`: the paper preset on one GPU within minutes, and its CPU dry run
    "device": dict(pop=[32, 128], pop_epochs=5, pop_repeats=3, env_batch=32, env_repeats=3, torch_passes=2,
                   episode_batch=8, update_batch=32, scaling=[32, 128, 256, 512, 1024], devices=None,
                   device_env_steps=False),
    # the paper preset on 2 CPU cores (fine-tunes of up to 100 epochs at widths to 1000): env steps and 4-pass
    # episodes of a few networks, padded against the width buckets, beside PyTorch
    "paper_cpu": dict(pop=[8], pop_epochs=1, pop_repeats=2, env_batch=4, env_repeats=2, torch_passes=1,
                      episode_batch=2, update_batch=8, scaling=[2, 4], devices=[1], device_env_steps=False,
                      zoo_networks=8),
    "dry": dict(pop=[4], pop_epochs=1, pop_repeats=1, env_batch=4, env_repeats=1, torch_passes=1, episode_batch=2,
                update_batch=2, scaling=[2, 4], devices=[1], device_env_steps=False, zoo_networks=8),
}


def derived_notes(result: dict) -> list[str]:
    """Plain-language reading of the numbers (machine sharing, the batched fine-tune's slowest member)."""
    notes = []
    b = result["benchmarks"]
    pop = b.get("population", {}).get("results", [])
    shares = [r["contention"]["jax_best_run_other_share"] for r in pop if r.get("contention")]
    if shares and max(x or 0 for x in shares) > 0.15:
        notes.append(f"Shared machine: other processes used {100 * max(shares):.0f}% of all CPU time while population "
                     "training was timed (load average in every record); JAX's two-thread programs lose more to "
                     "such sharing than single-thread PyTorch, so the ratios here understate a quiet machine's.")
    for r in b.get("env_steps", {}).get("results", []):
        slots = r["batch_size"] * r["jax_loop_epochs"]
        used = r["batch_size"] * r["jax_finetune_epochs_mean"]
        notes.append(
            f"env_steps B={r['batch_size']}: the batched fine-tune loop ran {r['jax_loop_epochs']} epochs (its "
            f"slowest member) while environments needed {r['jax_finetune_epochs_mean']:.2f} on average (PyTorch "
            f"{r['torch_finetune_epochs_mean']:.2f}): {slots / max(used, 1e-9):.2f}x the useful epochs are computed; "
            f"per computed environment-epoch JAX is x{r['ratio'] * slots / max(used, 1e-9):.2f} PyTorch's speed.")
        if "jax_step_batch_run_s" in r:
            notes.append(
                f"env_steps B={r['batch_size']}: NeonEnv.step_batch with {r['slots']} fine-tunes in flight computes "
                f"each environment's own epochs ({r['jax_step_batch_finetune_epochs_sum']} in all) at the depth of "
                f"the networks in flight: x{r['ratio_step_batch']:.2f} PyTorch "
                f"(x{r['jax_run_s'] / r['jax_step_batch_run_s']:.2f} over jit(vmap(step)) in the same run).")
    return notes


# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small grid: a few minutes on 2 CPU cores (default)")
    g.add_argument("--full", action="store_true", help="the full grid (B up to 1024, all devices): for a GPU")
    ap.add_argument("--mode", default=None, choices=sorted(MODES),
                    help="a named grid (overrides --quick / --full; device / dry: benchmarks/device_check.py)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    ap.add_argument("--preset", default="cpu", choices=["cpu", "tiny", "paper"])
    ap.add_argument("--dataset", default="diabetes")
    ap.add_argument("--data-dir", default="/work/shared/data/neon")
    ap.add_argument("--zoo", default="/work/runs/zoo_cpu/diabetes",
                    help="a saved zoo of the preset (default: the cpu zoo of diabetes; built and cached if absent)")
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--tau", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", default="auto")
    ap.add_argument("--chunk", type=int, default=8,
                    help="env_steps also times the step vmapped over chunks of this many environments, one chunk "
                         "after the other (smaller working set on a CPU; 0 = off)")
    ap.add_argument("--slots", type=int, default=4,
                    help="also time the library's batched paths with this many networks in flight: "
                         "NeonEnv.step_batch(slots=...) for env_steps and episode, trainer.train(chunk_size=...) "
                         "for population (0 = off; 4 is the default on one CPU device)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--device-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-pop", default="32", help=argparse.SUPPRESS)
    ap.add_argument("--worker-epochs", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--worker-env-batch", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.worker_pop = [int(x) for x in str(args.worker_pop).split(",") if x]
    return args


def new_record(args, mode_name: str, mode: dict) -> dict:
    result = {"suite": "neon_jax vs PyTorch reference", "mode": mode_name, "mode_settings": mode,
              "device": common.device_info(common.torch_device()), "versions": common.versions(),
              "neon_jax": common.neon_jax_provenance(), "precision": {"jax": "highest", "torch": "highest",
                                                                    "dtype": "float32"},
              "load_average_start": os.getloadavg(), "notes": list(args.note), "benchmarks": {}}
    if jax.devices()[0].platform == "cpu":
        result["notes"].append("No GPU/TPU was used: JAX on the CPU (XLA), PyTorch on the CPU.")
    return result


def merge_partial(result: dict, out_path: Path, mode_name: str, only) -> None:
    """A partial run (--only) updates the suite file it names: the other benchmarks' records are kept."""
    old = json.loads(out_path.read_text())
    if old.get("mode") == mode_name:
        result["benchmarks"] = old.get("benchmarks", {})
        result["notes"] = sorted(set(old.get("notes", [])) | set(result["notes"]))
        result["partial_updates"] = old.get("partial_updates", []) + [
            {"only": list(only), "load_average_start": result["load_average_start"]}]


def run_benchmark(name: str, args, mode: dict, work, result: dict) -> dict:
    if name == "population":
        return suite_population(args, mode)
    if name == "env_steps":
        return bench_env_steps(args, mode, work)
    if name == "episode":
        return bench_episode(args, mode, work)
    if name == "agent_update":
        return bench_agent_update(args, mode, args.preset)
    if name == "batch_scaling":
        return bench_batch_scaling(args, mode, work, result["benchmarks"].get("env_steps"))
    return bench_device_scaling(args, mode)


def main(argv=None):
    args = parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")
    if args.device_worker:
        return device_worker(args)

    import torch

    torch.set_float32_matmul_precision("highest")
    mode_name = args.mode or ("full" if args.full else "quick")
    mode = MODES[mode_name]
    args.zoo_networks = mode.get("zoo_networks", 30)
    only = BENCHMARKS if args.only is None else tuple(x.strip() for x in args.only.split(","))
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"suite_{mode_name}_{common.device_slug()}.json"
    result = new_record(args, mode_name, mode)
    began = time.perf_counter()
    if args.only is not None and out_path.exists():
        merge_partial(result, out_path, mode_name, only)

    def save():
        result["derived_notes"] = derived_notes(result)
        result["seconds_total"] = time.perf_counter() - began
        result["load_average_end"] = os.getloadavg()
        common.write_json(out_path, result, indent=1, default=float)

    work = None
    if {"env_steps", "episode", "batch_scaling"} & set(only):
        work = common.Work(args)
    for name in BENCHMARKS:
        if name not in only:
            continue
        t0 = time.perf_counter()
        res = run_benchmark(name, args, mode, work, result)
        res["seconds"] = time.perf_counter() - t0
        result["benchmarks"][name] = res
        save()
    log(f"wrote {out_path} ({time.perf_counter() - began:.0f}s)")
    return result


if __name__ == "__main__":
    main()
