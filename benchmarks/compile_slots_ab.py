"""A/B of the main job's candidates program: NeonEnv slots="auto" (packed fine-tunes) against slots=None (one vmap).

The quick start's work (a breast_cancer base network of the cpu preset, the shipped tau-5 agent, 8 sampled and one
greedy episode): trace + lower, XLA compile, run (best of 2), optimised HLO lines and the chosen network, the two
variants in turn within each repeat.

    PYTHONPATH=. python benchmarks/compile_slots_ab.py --repeats 2 --out benchmarks/results/compile_slots_ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from neon_jax import runner  # noqa: E402
from neon_jax.agent.registry import load_agent  # noqa: E402
from neon_jax.env import EnvConfig, NeonEnv  # noqa: E402
from neon_jax.pool import EnvPool  # noqa: E402
from neon_jax.presets import get_preset  # noqa: E402
from neon_jax.select import candidates_program  # noqa: E402
from neon_jax.zoo import build_zoo, prepare_data  # noqa: E402


def timed(program, args) -> dict:
    """Trace + lower, compile and run (best of 2) one program; its optimised HLO lines and the chosen network."""
    t0 = time.perf_counter()
    lowered = program.lower(*args)
    t1 = time.perf_counter()
    executable = lowered.compile()
    t2 = time.perf_counter()
    runs = []
    for _ in range(2):
        t3 = time.perf_counter()
        out = jax.block_until_ready(executable(*args))
        runs.append(time.perf_counter() - t3)
    return {"trace_lower_s": t1 - t0, "compile_s": t2 - t1, "run_s": min(runs),
            "hlo_lines": executable.as_text().count("\n"), "params_after": int(out.params_after[0]),
            "val_acc": float(out.val_acc[0]), "load": os.getloadavg()[0]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/compile_slots_ab.json")
    args = ap.parse_args(argv)
    preset = get_preset("cpu")
    prepared = prepare_data("breast_cancer", preset, seed=0)
    zoo = build_zoo(prepared, preset, n=1, n_heldout=0, seed=0)
    pool = EnvPool.from_zoos([(zoo, prepared)], "all", 5.0, preset)
    loaded = load_agent("pretrained", preset, 5.0)
    agent = loaded.agent
    config = EnvConfig(passes=4, cut=loaded.env.get("cut", "reinit"))
    program_args = (runner.network_keys(0, np.array([0])), pool.batch(np.array([0])),
                    agent.policy(loaded.actor, False))
    results: dict[str, list] = {}
    for rep in range(args.repeats):
        for slots in (["auto", None] if rep % 2 == 0 else [None, "auto"]):
            env = NeonEnv(config, pool.dims, agent.observation_preset(preset, pool.dims), slots)
            entry = timed(candidates_program(env, agent.act_fn, 8, True, "best"), program_args)
            results.setdefault(str(slots), []).append(entry)
            print(slots, entry, flush=True)
    out = {"benchmark": "compile_slots_ab", "jax": jax.__version__, "results": results}
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
