"""Write the actor of a `train-agent` checkpoint as a shipped policy file (what `prune --agent pretrained` loads).

    PYTHONPATH=. python benchmarks/ship_agent.py runs/agent/checkpoint neon_jax/assets/agent_cpu_tau5 \\
        --record benchmarks/results/agent_cpu_tau5_hold --note "..."

The policy keeps only the actor (no critic, no optimiser moments) and the training settings that pruning needs
(the cut, tau, passes) or that a reader wants (datasets, episodes, where the training record lives).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neon_jax import agent as agent_lib


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="stem of a train-agent checkpoint (checkpoint.npz / .json)")
    ap.add_argument("out", help="stem of the policy to write (.npz / .json)")
    ap.add_argument("--record", required=True, help="folder of the committed training record")
    ap.add_argument("--note", default="", help="one line on how the agent was trained")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.with_suffix(".npz").exists() and not args.overwrite:
        raise SystemExit(f"{out.with_suffix('.npz')} exists; pass --overwrite to replace it")
    agent, state, meta = agent_lib.load_checkpoint(args.checkpoint)
    settings = meta["settings"]
    extra = {"episodes": int(state.episodes), "env": settings["env"], "tau": settings["tau"],
             "datasets": settings["datasets"], "warmup_episodes": settings["warmup_episodes"],
             "networks": settings["networks"], "training_record": args.record, "note": args.note}
    path = agent_lib.save_policy(out, state.actor, agent.config, agent.preset, extra)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {int(state.episodes)} episodes, tau {settings['tau']:g}")


if __name__ == "__main__":
    main()
