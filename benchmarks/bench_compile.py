"""What the main job compiles: the README's quick start run cold (compile cache off) and warm (cache filled by a
first run), each in its own process, with every compiled program (name, count, compile seconds), the tracing and
lowering seconds, and the real work (base-network training and pruning less the compiling inside them).

    python benchmarks/bench_compile.py --label before      # -> benchmarks/results/compile_quick_start_before.json

The outputs' SHA-256 (candidates.csv, pruned.npz, original.npz) are recorded so that runs of two versions of the
code can be compared byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, core_count, load_average, neon_jax_provenance, versions, write_json

QUICK_START = ["prune", "--dataset", "breast_cancer", "--tau", "5"]
HASHED = ("candidates.csv", "pruned.npz", "original.npz")


def run_once(cache: str, out: Path, extra: list[str]) -> dict:
    """One quick start in a fresh process with the compile cache `cache` ("off" or a folder): the report's seconds
    and compiled programs, the real work, the wall time with imports, and the outputs' hashes."""
    env = {**os.environ, "NEON_JAX_CACHE_DIR": cache, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    report_path = out / "report_cli.json"
    cmd = [sys.executable, "-m", "neon_jax", *QUICK_START, *extra, "--out", str(out / "run"), "--json",
           str(report_path), "--quiet", "--overwrite"]
    load = load_average()
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    report = json.loads(report_path.read_text())
    seconds, compiled = report["seconds"], report["compiled"]
    stages = compiled["by_stage"]

    def compiling(stage):  # tracing, lowering and compiling inside a stage
        s = stages.get(stage, {})
        return s.get("trace_s", 0.0) + s.get("lower_s", 0.0) + s.get("compile_s", 0.0)

    real = {stage: max(seconds[stage] - compiling(stage), 0.0) for stage in ("base_network", "run")}
    return {"cache": "off" if cache == "off" else "on", "wall_s_with_imports": wall, "load_average_before": load,
            "load_average_after": load_average(), "seconds": seconds, "real_work_s": sum(real.values()),
            "real_work_by_stage_s": real, "totals": compiled["totals"], "by_stage": stages,
            "programs": compiled["programs"], "outputs_sha256": {
                name: hashlib.sha256((out / "run" / name).read_bytes()).hexdigest() for name in HASHED},
            "result": {k: report[k] for k in ("widths_before", "widths_after", "params_before", "params_after",
                                              "test_acc_before", "test_acc_after")}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="the JSON's suffix: compile_quick_start_<label>.json")
    parser.add_argument("--extra", default="", help="more prune flags, space separated (e.g. '--preset tiny')")
    parser.add_argument("--skip-warm", action="store_true", help="only the cold run")
    parser.add_argument("--out", default=None, help="the JSON's path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    extra = args.extra.split()
    doc = {"what": "the README quick start, `neon-jax " + " ".join(QUICK_START + extra) + "`, cold (compile cache "
                   "off) and warm (a second run on a cache the first filled), each in its own process",
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cores": core_count(),
           "versions": versions(), "neon_jax": neon_jax_provenance(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        doc["runs"]["cold"] = run_once("off", tmp / "cold", extra)
        print(_line("cold", doc["runs"]["cold"]), flush=True)
        if not args.skip_warm:
            run_once(str(tmp / "cache"), tmp / "fill", extra)
            doc["runs"]["warm"] = run_once(str(tmp / "cache"), tmp / "warm", extra)
            print(_line("warm", doc["runs"]["warm"]), flush=True)
    path = Path(args.out) if args.out else RESULTS_DIR / f"compile_quick_start_{args.label}.json"
    write_json(path, doc)
    print(f"-> {path}")
    return 0


def _line(name: str, run: dict) -> str:
    t, s = run["totals"], run["seconds"]
    return (f"{name}: {t['compiles']} compiles of {t['programs']} programs ({t['cache_hits']} read back) "
            f"{t['compile_s']:.1f} s, tracing {t['trace_s']:.1f} s, lowering {t['lower_s']:.1f} s; stages "
            + ", ".join(f"{k} {v:.1f}" for k, v in s.items())
            + f"; real work {run['real_work_s']:.1f} s; wall {run['wall_s_with_imports']:.1f} s; load "
            f"{run['load_average_before']}")


if __name__ == "__main__":
    sys.exit(main())
