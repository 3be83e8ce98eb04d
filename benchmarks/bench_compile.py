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


def program_parts(dataset: str = "breast_cancer", preset: str = "cpu") -> list[dict]:
    """Where the pruning program's compile time goes: its pieces (the reset, one `step_batch`, the packed
    fine-tune, one accuracy) lowered and compiled alone on the quick start's network (compile cache off), beside
    the whole program; seconds and optimised HLO lines of each."""
    import jax
    import jax.numpy as jnp

    import neon_jax.jobs.prune  # noqa: F401  (the module: `neon_jax.jobs.prune` the attribute is the function)
    from neon_jax import fit, runner, select

    prune_module = sys.modules["neon_jax.jobs.prune"]
    seen, build = {}, select.candidates_program

    class Captured(Exception):
        pass

    def record_env(env, act_fn, *a, **k):
        seen["env"] = env
        return build(env, act_fn, *a, **k)

    def stop(program, *args):
        seen["program"], seen["args"] = program, args
        raise Captured

    select.candidates_program, runner.compiled = record_env, stop
    try:
        prune_module.prune(dataset, tau=5, preset=preset, progress=None)
    except Captured:
        pass
    env, (keys, params, policy) = seen["env"], seen["args"]
    episodes = keys.shape[0] * 9  # the quick start's 8 sampled episodes and a greedy one
    many = jax.tree_util.tree_map(lambda a: jnp.repeat(a, episodes, axis=0), params)
    ks = jax.random.split(jax.random.PRNGKey(0), episodes)
    _, states = jax.jit(jax.vmap(env.reset))(ks, many)
    actions = jnp.zeros(episodes, jnp.int32)
    cut = jax.vmap(env._step_cut)(ks, states, actions)

    def finetune(cut, many):
        return fit.finetune_packed(env.trainer.learner, cut["k_tune"], cut["variables"], cut["arch"],
                                   jnp.arange(episodes), many.finetune, cut["trainable"], env.preset.finetune_epochs,
                                   env.preset.finetune_batch, env.preset.patience, active=cut["cuts"],
                                   slots=env.slots)

    parts = [("reset: the first observation (state features) of every episode", jax.vmap(env.reset), (ks, many)),
             ("step_batch: cut, packed fine-tune, accuracy, observation", env.step_batch,
              (ks, states, actions, many)),
             ("the packed fine-tune alone", finetune, (cut, many)),
             ("one accuracy alone", jax.vmap(lambda v, a, p: env.accuracy(v, a, p.val)),
              (states.variables, states.arch, many)),
             ("the whole pruning program", seen["program"], (keys, params, policy))]
    rows = []
    for name, fn, args in parts:
        start = time.perf_counter()
        lowered = jax.jit(fn).lower(*args)
        lowered_s = time.perf_counter() - start
        start = time.perf_counter()
        text = lowered.compile().as_text()
        rows.append({"part": name, "lower_s": lowered_s, "compile_s": time.perf_counter() - start,
                     "hlo_lines": text.count("\n"), **load_average()})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="the JSON's suffix: compile_quick_start_<label>.json")
    parser.add_argument("--extra", default="", help="more prune flags, space separated (e.g. '--preset tiny')")
    parser.add_argument("--skip-warm", action="store_true", help="only the cold run")
    parser.add_argument("--out", default=None, help="the JSON's path (default: benchmarks/results/...)")
    parser.add_argument("--parts", action="store_true",
                        help="only the pruning program's pieces compiled alone (`program_parts`; cache off)")
    args = parser.parse_args(argv)
    if args.parts:
        os.environ["NEON_JAX_CACHE_DIR"] = "off"
        doc = {"what": program_parts.__doc__.split("\n\n")[0].replace("\n", " "), "date_utc": time.strftime(
            "%Y-%m-%d %H:%M", time.gmtime()), "cores": core_count(), "neon_jax": neon_jax_provenance(),
            "parts": program_parts()}
        path = Path(args.out) if args.out else RESULTS_DIR / "compile_program_parts.json"
        write_json(path, doc)
        print(f"-> {path}")
        return 0
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
