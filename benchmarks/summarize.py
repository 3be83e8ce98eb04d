"""Prints the README's speed table (markdown) from the JSON files `benchmarks/run.py` writes.

    PYTHONPATH=. python benchmarks/summarize.py                      # every benchmarks/results/suite_*.json
    PYTHONPATH=. python benchmarks/summarize.py benchmarks/results/suite_quick_cpu.json

ratio = PyTorch seconds / JAX seconds on the same work (> 1: neon_jax faster); JAX compile time is listed apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def _step_batch_row(benchmark: str, work: str, r: dict) -> tuple:
    """The row of a result's `NeonEnv.step_batch` variant (timed beside the plain vmap in the same run)."""
    return (benchmark, f"{work} (slots {r['slots']})", r["jax_step_batch_run_s"], r["jax_step_batch_compile_s"],
            r["torch_run_s"], r["ratio_step_batch"])


def _buckets_row(benchmark: str, work: str, r: dict) -> tuple:
    """The row of a result's per-bucket variant: each width bucket at its own shape, as `runner.run` runs a pool."""
    groups = ", ".join(f"{g['networks']} at {g['w_max']}x{g['max_hidden']}" for g in r["bucket_groups"])
    return (benchmark, f"{work}, each width bucket at its own shape ({groups})", r["jax_buckets_run_s"],
            r["jax_buckets_compile_s"], r["torch_run_s"], r["ratio_buckets"])


def rows_of(doc: dict) -> list[tuple]:
    """(benchmark, work, jax s, compile s, torch s, ratio) rows of one suite file."""
    b = doc["benchmarks"]
    out = []
    if "population" in b:
        s = b["population"]["settings"]
        for r in b["population"]["results"]:
            out.append(("population training", f"P={r['population']} nets, {s['epochs']} epochs ({s['preset']})",
                        r["jax_run_s"], r["jax_compile_s"], r["torch_run_s"], r["ratio"]))
            if "jax_sorted_chunks" in r:
                c = r["jax_sorted_chunks"]
                out.append(("population training", f"P={r['population']}, JAX in depth-sorted chunks of "
                            f"{c['chunk_size']} (library default on CPU)", c["run_s"], c["compile_s"],
                            r["torch_run_s"], c["speedup"]))
    if "env_steps" in b:
        for r in b["env_steps"]["results"]:
            out.append(("env steps", f"B={r['batch_size']} envs, 1 step each (torch one by one)", r["jax_run_s"],
                        r["jax_compile_s"], r["torch_run_s"], r["ratio"]))
            if "jax_chunked_run_s" in r:
                out.append(("env steps", f"B={r['batch_size']} envs, JAX vmapped in chunks of {r['chunk']}",
                            r["jax_chunked_run_s"], r["jax_chunked_compile_s"], r["torch_run_s"], r["ratio_chunked"]))
            if "jax_step_batch_run_s" in r:
                out.append(_step_batch_row("env steps", f"B={r['batch_size']} envs, NeonEnv.step_batch", r))
            if "jax_buckets_run_s" in r:
                out.append(_buckets_row("env steps", f"B={r['batch_size']} envs", r))
    if "episode" in b:
        for r in b["episode"]["results"]:
            out.append(("4-pass episode", f"B={r['batch_size']} networks", r["jax_run_s"], r["jax_compile_s"],
                        r["torch_run_s"], r["ratio"]))
            if "jax_step_batch_run_s" in r:
                out.append(_step_batch_row("4-pass episode", f"B={r['batch_size']} networks, step_batch", r))
            if "jax_buckets_run_s" in r:
                out.append(_buckets_row("4-pass episode", f"B={r['batch_size']} networks", r))
    if "agent_update" in b:
        for r in b["agent_update"]["results"]:
            out.append(("agent update", f"B={r['batch_size']} episodes x {r['steps_per_episode']} steps "
                        "(torch: one update per episode)", r["jax_run_s"], r["jax_compile_s"], r["torch_run_s"],
                        r["ratio"]))
            out.append(("agent update", f"B={r['batch_size']} episodes (torch: one batched update)", r["jax_run_s"],
                        r["jax_compile_s"], r["torch_batched_update_s"], r["ratio_vs_torch_batched"]))
    if "batch_scaling" in b:
        for r in b["batch_scaling"]["results"]:
            out.append(("env steps vs B", f"B={r['batch_size']}: {r['env_steps_per_s']:.0f} env-steps/s",
                        r["jax_run_s"], r["jax_compile_s"], r.get("torch_run_s", r.get("torch_run_s_extrapolated")),
                        r.get("ratio")))
    if "device_scaling" in b:
        for row in b["device_scaling"]["results"]:
            for r in row.get("results", []):
                size = r.get("population", r.get("batch_size"))
                out.append((f"{r['benchmark']} on {row['devices']} device(s)",
                            f"{'P' if r['benchmark'] == 'population' else 'B'}={size}, "
                            f"x{_fmt(r.get('speedup_vs_first'))} vs {b['device_scaling']['settings']['device_counts'][0]}",
                            r["jax_run_s"], r["jax_compile_s"], None, None))
    return out


def table(doc: dict) -> str:
    d = doc["device"]
    head = (f"**{doc['mode']} mode** on {d['jax_device_kind']} ({d['cpu_model']}, {d['cpu_cores']} cores; "
            f"PyTorch on {d['torch_device']}), jax {doc['versions']['jax']}, torch {doc['versions']['torch']}, "
            f"load average {doc['load_average_start'][0]:.1f} -> {doc['load_average_end'][0]:.1f}\n\n")
    lines = ["| benchmark | work | JAX s | JAX compile s | PyTorch s | ratio |", "|---|---|---:|---:|---:|---:|"]
    for name, work, j, c, t, r in rows_of(doc):
        lines.append(f"| {name} | {work} | {_fmt(j, '.3f')} | {_fmt(c, '.1f')} | {_fmt(t, '.3f')} | "
                     f"{'x' + _fmt(r) if r is not None else '-'} |")
    return head + "\n".join(lines)


def main(argv=None) -> str:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])] or sorted(RESULTS_DIR.glob("suite_*.json"))
    if not paths:
        raise SystemExit(f"no suite_*.json under {RESULTS_DIR}; run benchmarks/run.py first")
    text = "\n\n".join(table(json.loads(p.read_text())) + f"\n\n(from `{p.name}`)" for p in paths)
    print(text)
    return text


if __name__ == "__main__":
    main()
