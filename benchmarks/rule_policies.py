"""Reference policies for the pruning environment: where does a trained agent sit among simple rules?

Runs fixed rules and (optionally) trained agents on the same networks, environment and evaluation seeds as
`neon-jax evaluate`, and reports mean compression and mean test-accuracy change (points) per policy:

* ``random``: the random policy of the environment (uniform over the 5 keep fractions), as `evaluate` runs it;
* ``keep:F``: always keep the fraction F (0.9, 0.8, 0.7 or 0.6) of the visited layer;
* ``while:F:D``: keep F while the episode's validation accuracy change is at least -D points, else keep the
  layer (the rule reads the environment's progress features, the same the `observe_progress` agents read);
* ``agent:PATH`` / ``agent:pretrained``: a trained policy, sampled; ``greedy:PATH`` takes the argmax. The share
  of each action is reported, which shows whether a policy acts on its state or always picks one action.

Every policy runs through `neon_jax.runner` on the library's one roll-out; the rules are
`neon_jax.policies.rule_policy` (one compiled roll-out for all rules: the rule's numbers are arguments, not
constants), so rules, agents and random differ only in how they choose actions.

Usage::

    PYTHONPATH=. python benchmarks/rule_policies.py --zoo-root runs/zoo_cpu --datasets no2,pm10 \\
        --networks heldout --seeds 0,1,2 --rules random,keep:0.8,keep:0.7,while:0.6:0 --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from neon_jax import learn, policies, pruning, runner
from neon_jax import zoo as zoo_lib
from neon_jax.agent import registry
from neon_jax.env import KEEP_FRACTIONS, NUM_ACTIONS, EnvConfig, NeonEnv, validate_tau
from neon_jax.pool import EnvPool
from neon_jax.presets import get_preset
from neon_jax.rollout import policy_program


def parse_rule(text: str):
    """'keep:0.8' / 'while:0.6:0' -> the rule's policy parameters; exits with the problem named otherwise."""
    try:
        return policies.parse_rule(text)
    except ValueError as err:
        raise SystemExit(f"{err} (or random, agent:PATH, greedy:PATH)") from None


def run_policy(spec: str, pool, preset, env_config, seed: int, batch: int, tau: float) -> list[dict]:
    if spec == "random":
        return pruning.run_baseline("random", pool, preset, passes=env_config.passes, cut=env_config.cut,
                                      seed=seed, batch_size=batch).rows
    if spec.startswith(("agent:", "greedy:")):
        kind, path = spec.split(":", 1)
        agent, actor, *_ = registry.load_agent(path, preset, tau=tau)
        return learn.run_agent(agent, actor, pool, preset, env_config, seed=seed, greedy=kind == "greedy",
                               batch_size=batch).rows
    rule = parse_rule(spec)
    return runner.run(lambda dims: (policy_program(NeonEnv(env_config, dims, preset), policies.rule_policy), rule),
                      pool, seed=seed, batch_size=batch).rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo-root", required=True)
    ap.add_argument("--datasets", required=True, help="comma-separated zoo names")
    ap.add_argument("--networks", default="heldout", choices=["heldout", "train", "all"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--tau", type=float, default=5.0)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--cut", default="keep_best", choices=["reinit", "keep_best"])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rules", default="random,keep:0.9,keep:0.8,keep:0.7,keep:0.6,while:0.6:0,while:0.7:2.5")
    ap.add_argument("--batch", type=int, default=36)
    ap.add_argument("--out", required=True, help="JSON file (refuses to overwrite; delete it first)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists; delete it or choose another --out")
    tau = validate_tau(args.tau)
    seeds = [int(s) for s in args.seeds.split(",")]
    rules = args.rules.split(",")
    for r in rules:
        if r != "random" and not r.startswith(("agent:", "greedy:")):
            parse_rule(r)
    paths = zoo_lib.find_zoos(args.zoo_root, args.datasets.split(","))
    pairs = [zoo_lib.load_zoo_with_data(p, args.data_dir) for p in paths]
    preset = pairs[0][0].preset
    pool = EnvPool.from_zoos(pairs, args.networks, tau, get_preset(preset.name))
    env_config = EnvConfig(passes=args.passes, cut=args.cut)
    print(f"{len(pool)} networks of {len(paths)} datasets, tau {tau:g}, {args.passes} passes, cut {args.cut}")

    results = {}
    for rule in rules:
        per_seed, actions = [], np.zeros(NUM_ACTIONS)
        t0 = time.perf_counter()
        for seed in seeds:
            rows = run_policy(rule, pool, preset, env_config, seed, args.batch, tau)
            per_seed.append(runner.summarise(rows) | {"seed": seed,
                                                      "return_mean": float(np.mean([r["return"] for r in rows]))})
            for r in rows:
                actions += np.bincount([int(a) for a in r["actions"]], minlength=NUM_ACTIONS)
        mean = {k: float(np.mean([s[k] for s in per_seed]))
                for k in ("compression_mean", "compression_median", "acc_change_mean", "return_mean")}
        results[rule] = {"mean_over_seeds": mean, "per_seed": per_seed,
                         "action_share": dict(zip(map(str, KEEP_FRACTIONS), (actions / actions.sum()).round(4).tolist())),
                         "seconds": time.perf_counter() - t0}
        print(f"{rule:>28}: x{mean['compression_mean']:.2f} / {mean['acc_change_mean']:+.2f} points "
              f"(median x{mean['compression_median']:.2f}, return {mean['return_mean']:.0f}) "
              f"actions {results[rule]['action_share']}", flush=True)
        doc = {"settings": vars(args) | {"networks_evaluated": len(pool), "preset": preset.name},
               "machine": {"platform": platform.platform(), "jax": jax.__version__, "devices": str(jax.devices())},
               "results": results}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))  # after every policy: a long run keeps what it has done
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
