"""Benchmark: size and inference latency of original vs NEON-pruned networks, in JAX, onnxruntime, PyTorch, NumPy.

The pruned networks come from a REAL prune run: the shipped agent (``agent="pretrained"``, cpu preset, its own
cut, sampled actions as the original evaluates) prunes the held-out networks of the pre-built zoos of several
datasets, all at once (`neon_jax.learn.run_agent`, the library's runner, on one `EnvPool`, as `neon_jax.jobs.prune`
does for one network).
Both the original and the pruned network of every zoo entry are compacted (`nets.compact`: real widths) and

* exported to PyTorch (``.pt``), ONNX (opset 17), safetensors and ``.npz`` (`neon_jax.interop.export_network`);
  every exported file is read back and checked against the MASKED JAX network on the dataset's test split
  (max |logit diff| < 1e-4, identical predicted classes) before anything is timed;
* sized: parameters and bytes on disk per format;
* timed at batch 1 and batch 256 (test rows, repeated if fewer) in: ``jax`` (the compacted network, jitted:
  `interop.jax_forward`), ``jax_masked`` (the padded masked network as the environment holds it, jitted: what you
  would run without compaction), ``onnxruntime`` (CPU provider), ``torch`` (eval, ``inference_mode``) and
  ``numpy`` (`DenseNetwork.predict_proba`). Every call returns softmax probabilities. One thread everywhere by
  default (``--threads``): the machine is shared and tiny networks do not profit from more.

Timing: `--warmup` calls of both networks, then `--rounds` rounds that alternate original and pruned, each
`--runs` / `--rounds` timed calls (``time.perf_counter`` around each call, JAX with ``block_until_ready``); the
latency is the median over all timed calls. speedup = original latency / pruned latency (> 1: pruned faster).

Usage::

    PYTHONPATH=. nice python benchmarks/bench_latency.py                       # 12 datasets x 3 held-out nets
    PYTHONPATH=. nice python benchmarks/bench_latency.py --datasets diabetes,phoneme --runs 100

Writes ``benchmarks/results/latency_cpu.json``: device, versions, settings, per-network rows and a summary with the
median speedup per framework and batch size.
"""

from __future__ import annotations

import argparse
import os
import sys


def _early_threads() -> int:
    """Thread settings must be in place before numpy / jax / torch are imported."""
    threads = 1
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            threads = int(sys.argv[i + 1])
        elif a.startswith("--threads="):
            threads = int(a.split("=", 1)[1])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    return threads


THREADS = _early_threads()

import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import cpu_model  # noqa: E402
from neon_jax import interop, nets  # noqa: E402
from neon_jax.agent.registry import load_agent  # noqa: E402
from neon_jax.env import EnvConfig  # noqa: E402
from neon_jax.learn import run_agent  # noqa: E402
from neon_jax.pool import EnvPool  # noqa: E402
from neon_jax.zoo import load_zoo_with_data  # noqa: E402

HERE = Path(__file__).resolve().parent
# Datasets the shipped agent was NOT trained on (its training sets: no2, pm10, disclosure_z, mfeat-morphological,
# cardiotocography, mfeat-karhunen), so the pruning is the agent's real use.
DEFAULT_DATASETS = ("2dplanes,ailerons,bank-marketing,diabetes,electricity-normalized,fried,house_8L,ionosphere,"
                    "jungle_chess_2pcs_raw_endgame_complete,nursery,phoneme,satimage")
FRAMEWORKS = ("jax", "jax_masked", "onnxruntime", "torch", "numpy")


def versions() -> dict:
    import flax
    import jaxlib
    import onnx
    import onnxruntime
    import safetensors
    import torch

    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "flax": flax.__version__, "numpy": np.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "safetensors": safetensors.__version__}


def git_head() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def time_pair(call_before, call_after, runs: int, warmup: int, rounds: int) -> tuple[float, float]:
    """Median seconds per call of two callables, timed in alternating rounds after a warm-up."""
    for _ in range(warmup):
        call_before()
        call_after()
    per_round = max(1, runs // rounds)
    times = ([], [])
    for _ in range(rounds):
        for call, out in ((call_before, times[0]), (call_after, times[1])):
            for _ in range(per_round):
                t0 = time.perf_counter()
                call()
                out.append(time.perf_counter() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


def make_callers(net: nets.DenseNetwork, onnx_path: Path, x: np.ndarray, masked) -> dict:
    """One zero-argument callable per framework computing softmax probabilities of `x` (inputs placed once)."""
    import onnxruntime as ort
    import torch

    fn, params = interop.jax_forward(net)
    x_jax = jnp.asarray(x)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {"input": x}
    model = interop.to_torch(net)
    x_torch = torch.from_numpy(x)
    masked_fn, masked_vars, masked_arch, x_padded = masked

    def torch_call():
        with torch.inference_mode():
            return model(x_torch)

    return {
        "jax": lambda: fn(params, x_jax).block_until_ready(),
        "jax_masked": lambda: masked_fn(masked_vars, x_padded, masked_arch).block_until_ready(),
        "onnxruntime": lambda: session.run(["probabilities"], feed),
        "torch": torch_call,
        "numpy": lambda: net.predict_proba(x),
    }


def first_heldout(zoo, n: int):
    """The zoo with only its first `n` held-out networks still marked held-out (to bound the run time)."""
    import dataclasses

    keep = np.flatnonzero(zoo.heldout)[:n]
    heldout = np.zeros_like(zoo.heldout)
    heldout[keep] = True
    return dataclasses.replace(zoo, heldout=heldout)


def file_bytes(paths: dict[str, list[Path]]) -> dict[str, int]:
    return {fmt: int(sum(p.stat().st_size for p in files)) for fmt, files in paths.items()}


def summarise(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"median": float(np.median(v)), "geomean": float(np.exp(np.log(v).mean())), "min": float(v.min()),
            "max": float(v.max()), "q25": float(np.quantile(v, 0.25)), "q75": float(np.quantile(v, 0.75))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", default="/work/runs/zoo_cpu", help="folder of pre-built zoos (one per dataset)")
    parser.add_argument("--data-dir", default="/work/shared/data/neon")
    parser.add_argument("--datasets", default=DEFAULT_DATASETS, help="comma-separated (default: 12 datasets the "
                                                                     "shipped agent never saw)")
    parser.add_argument("--nets-per-dataset", type=int, default=3, help="held-out networks per zoo (of 6)")
    parser.add_argument("--tau", type=float, default=5.0)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sizes", default="1,256")
    parser.add_argument("--runs", type=int, default=100, help="timed calls per network, framework and batch size")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4, help="alternating original/pruned rounds")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads of every framework (default 1)")
    parser.add_argument("--out", default=str(HERE / "results" / "latency_cpu.json"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"{out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    names = [n for n in args.datasets.split(",") if n]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    # 1. prune the held-out networks of every zoo with the shipped agent, all in one pool
    pairs = [load_zoo_with_data(Path(args.zoo) / n, args.data_dir) for n in names]
    pairs = [(first_heldout(z, args.nets_per_dataset), p) for z, p in pairs]
    preset = pairs[0][0].preset
    agent, actor, _, agent_desc, agent_meta = load_agent("pretrained", preset)
    cut = agent_meta.get("env", {}).get("cut", "reinit")
    pool = EnvPool.from_zoos(pairs, "heldout", args.tau, preset)
    say(f"pruning {len(pool)} held-out networks of {len(names)} datasets with the {agent_desc} agent "
        f"(cut {cut}, tau {args.tau:g}, passes {args.passes}) ...")
    t0 = time.perf_counter()
    result = run_agent(agent, actor, pool, preset, EnvConfig(passes=args.passes, cut=cut), seed=args.seed,
                       keep_networks=True)
    rows, finals = result.rows, result.networks
    prune_s = time.perf_counter() - t0
    say(f"pruned in {prune_s:.1f}s (compile included)")

    model = nets.make_model(pool.dims, preset)
    # padded classes already sit at -1e9, so their probability is exactly 0
    masked_apply = jax.jit(lambda v, x, a: jax.nn.softmax(model.apply(v, x, a, train=False), axis=-1))
    masked_logits_fn = jax.jit(lambda v, x, a: model.apply(v, x, a, train=False))
    prepared = {z.dataset: p for z, p in pairs}
    def pad(x):
        return np.pad(x, ((0, 0), (0, pool.dims.d_max - x.shape[1])))

    results = []
    work = Path(tempfile.mkdtemp(prefix="bench_latency_"))
    for b, row in enumerate(rows):
        dataset = row["dataset"]
        x_test = np.asarray(prepared[dataset].splits.x_test, np.float32)
        y_test = np.asarray(prepared[dataset].splits.y_test)
        k = prepared[dataset].n_classes
        v0, a0 = jax.tree_util.tree_map(lambda a: a[b], (pool.variables, pool.archs))
        v1, a1 = finals[b]
        entry = {k_: row[k_] for k_ in ("dataset", "network", "widths_before", "widths_after", "params_before",
                                        "params_after", "compression", "test_acc_before", "test_acc_after")}
        sides = {}
        for side, (v, a) in (("before", (v0, a0)), ("after", (v1, a1))):
            dense = nets.compact(v, a, pool.dims, preset.dropout_rate)
            masked = np.asarray(masked_logits_fn(v, pad(x_test), a))[:, :k]
            paths = interop.export_network(dense, work / f"{b}", stem=side)
            checks = interop.verify_exports(dense, paths, x_test, reference_logits=masked, atol=1e-4)
            acc = float((np.argmax(dense.logits(x_test), 1) == y_test).mean())
            assert abs(acc - row[f"test_acc_{side}"]) < 1e-6, (dataset, side, acc, row[f"test_acc_{side}"])
            assert dense.num_params() == row[f"params_{side}"]
            sides[side] = (dense, paths, v, a)
            entry[f"bytes_{side}"] = file_bytes(paths)
            entry[f"parity_{side}"] = {f: c["max_abs_diff_logits"] for f, c in checks.items()}
        entry["latency_ms"] = {}
        for batch in batch_sizes:
            reps = -(-batch // len(x_test))
            x = np.ascontiguousarray(np.tile(x_test, (reps, 1))[:batch])
            x_pad = jnp.asarray(pad(x))
            callers = {side: make_callers(dense, paths["onnx"][0], x, (masked_apply, v, a, x_pad))
                       for side, (dense, paths, v, a) in sides.items()}
            for fw in FRAMEWORKS:
                before, after = time_pair(callers["before"][fw], callers["after"][fw], args.runs, args.warmup,
                                          args.rounds)
                entry["latency_ms"].setdefault(fw, {})[f"b{batch}"] = {
                    "before": 1e3 * before, "after": 1e3 * after, "speedup": before / after}
        results.append(entry)
        lat = entry["latency_ms"]
        say(f"[{b + 1}/{len(rows)}] {dataset} #{row['network']}: {row['widths_before']} -> {row['widths_after']} "
            f"x{row['compression']:.2f} params; b256 speedup jax {lat['jax']['b256']['speedup']:.2f} "
            f"ort {lat['onnxruntime']['b256']['speedup']:.2f} torch {lat['torch']['b256']['speedup']:.2f}")

    summary = {"networks": len(results), "datasets": len(names),
               "compression": summarise([r["compression"] for r in results]),
               "pruned_networks": int(sum(r["params_after"] < r["params_before"] for r in results)),
               "test_acc_change_points_mean": float(np.mean([100 * (r["test_acc_after"] - r["test_acc_before"])
                                                             for r in results])),
               "bytes_ratio": {fmt: summarise([r["bytes_before"][fmt] / r["bytes_after"][fmt] for r in results])
                               for fmt in results[0]["bytes_before"]},
               "max_parity_diff": float(max(max(r[f"parity_{s}"].values()) for r in results for s in
                                            ("before", "after"))),
               "speedup": {}, "latency_ms_median": {}}
    for fw in FRAMEWORKS:
        for batch in batch_sizes:
            cells = [r["latency_ms"][fw][f"b{batch}"] for r in results]
            summary["speedup"][f"{fw}/b{batch}"] = summarise([c["speedup"] for c in cells])
            summary["latency_ms_median"][f"{fw}/b{batch}"] = {
                "before": float(np.median([c["before"] for c in cells])),
                "after": float(np.median([c["after"] for c in cells]))}
    doc = {
        "benchmark": "latency",
        "device": {"jax_platform": jax.devices()[0].platform, "cpu": cpu_model(), "cores": os.cpu_count(),
                   "platform": platform.platform(), "load_average_before": load_before,
                   "load_average_after": os.getloadavg()},
        "versions": versions(),
        "neon_jax": {"git_head": git_head()},
        "settings": {"zoo": args.zoo, "datasets": names, "which": "heldout",
                     "nets_per_dataset": args.nets_per_dataset, "preset": preset.name,
                     "agent": agent_desc, "agent_training_datasets": agent_meta.get("datasets"), "cut": cut,
                     "tau": args.tau, "passes": args.passes, "seed": args.seed, "greedy": False,
                     "batch_sizes": batch_sizes, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds,
                     "threads": args.threads, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                     "onnx_opset": interop.ONNX_OPSET, "dtype": "float32",
                     "statistic": "median seconds per call over runs; speedup = before / after",
                     "outputs": "softmax probabilities in every framework"},
        "prune_seconds_including_compile": prune_s,
        "summary": summary,
        "networks": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    say(f"wrote {out}")
    print(f"{len(results)} networks of {len(names)} datasets: compression median "
          f"x{summary['compression']['median']:.2f}, accuracy change {summary['test_acc_change_points_mean']:+.2f} "
          f"points; every export matches the masked network (max |logit diff| {summary['max_parity_diff']:.1e})")
    for key, s in summary["speedup"].items():
        lat = summary["latency_ms_median"][key]
        print(f"  {key:18s} median speedup x{s['median']:.2f} (geomean x{s['geomean']:.2f}, "
              f"{s['min']:.2f}..{s['max']:.2f}); median latency {lat['before']:.4f} -> {lat['after']:.4f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
