"""The train-agent job: train NEON's agent on the train networks of some zoos, then evaluate it.

    done = train_agent("runs/zoo_cpu", "runs/agent", env_config=EnvConfig(passes=4), agent_config=AgentConfig(),
                       tau=5, unseen=["diabetes"])
    done.state.episodes      # what was trained; the checkpoint is runs/agent/checkpoint.npz
    done.summary             # {"heldout/agent", "heldout/random", "unseen/agent", "unseen/random"}: runner.summarise

Training is `learn.train_agent` (resumable, checkpointed); the evaluation prunes each zoo's held-out networks (and
the networks of the `unseen` datasets) with the trained agent and with the random agent on the same environment,
and writes evaluation.csv (one row per network and policy) and evaluation.json (the settings and the summary).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from neon_jax import agent as agent_lib
from neon_jax import learn, runner, sharding
from neon_jax import zoo as zoo_lib
from neon_jax.env import EnvConfig, validate_tau
from neon_jax.pool import EnvPool


@dataclasses.dataclass
class TrainAgentResult:
    """The trained agent and its state, and its evaluation (empty when skipped)."""

    agent: agent_lib.Agent
    state: agent_lib.AgentState
    out: Path
    summary: dict
    rows: list[dict]


def select_zoos(zoo_root, datasets: list[str] | None = None, unseen: list[str] | None = None, data_dir=None,
                preset: str | None = None):
    """(train pairs, unseen pairs) of (zoo, prepared data): the zoos of `datasets` (None: every zoo under
    `zoo_root` but the unseen ones) and of `unseen`; a ValueError when a dataset is both or the preset differs."""
    paths = zoo_lib.find_zoos(zoo_root, datasets or None)
    unseen_paths = zoo_lib.find_zoos(zoo_root, unseen) if unseen else []
    unseen_names = {p.name for p in unseen_paths}
    if not datasets:
        paths = [p for p in paths if p.name not in unseen_names]
    overlap = unseen_names & {p.name for p in paths}
    if overlap:
        raise ValueError(f"datasets both trained on and unseen: {', '.join(sorted(overlap))}")
    loaded = [zoo_lib.load_zoo_with_data(p, data_dir) for p in paths]
    held = [zoo_lib.load_zoo_with_data(p, data_dir) for p in unseen_paths]
    if preset and preset != loaded[0][0].preset.name:
        raise ValueError(f"the zoos were built with preset {loaded[0][0].preset.name!r}, not {preset!r}")
    return loaded, held


def train_agent(zoo_root, out, *, env_config: EnvConfig, agent_config: agent_lib.AgentConfig, tau: float = 5.0,
                datasets: list[str] | None = None, unseen: list[str] | None = None, unseen_networks: str = "all",
                preset: str | None = None, episodes: int | None = None, seed: int = 0, data_dir=None,
                evaluate: bool = True, progress: bool = False, overwrite: bool = False,
                checkpoint_every: int | None = None, max_seconds: float | None = None, buckets: bool = False,
                say: Callable[[str], None] | None = None, devices: int | None = None) -> TrainAgentResult:
    """Trains an agent on the train networks of the zoos under `zoo_root` and evaluates it (see the module).

    Args:
      out: the folder of the checkpoint (resumed when it holds one of the same settings), evaluation.csv/json.
      env_config / agent_config: the environment and the agent.
      datasets / unseen: the training datasets (None: every zoo but the unseen) and datasets held out whole.
      unseen_networks: "all" or "heldout" networks of the unseen zoos in the evaluation.
      episodes: training episodes (None: `learn.default_episodes`).
      evaluate: False skips the evaluation.
      checkpoint_every / max_seconds / buckets / overwrite / progress: `learn.train_agent`'s.
      say: where one-line messages go (None: nowhere).
      devices: devices the roll-out batch (and the evaluation's batches) are split over (`sharding.job_mesh`:
        default every device; the training uses the most of them that divide the agent's batch); ``run.json``
        records how many devices and processes trained. Under `jax.distributed` process 0 alone writes `out`.
    Returns:
      `TrainAgentResult` (the agent, its state, the evaluation's rows and summary).
    """
    with sharding.use_mesh(sharding.job_mesh(devices)):
        writer = sharding.is_writer()
        return _train_agent(zoo_root, out, env_config, agent_config, tau, datasets, unseen, unseen_networks, preset,
                            episodes, seed, data_dir, evaluate, progress and writer, overwrite, checkpoint_every,
                            max_seconds, buckets, say if writer else None)


def _train_agent(zoo_root, out, env_config, agent_config, tau, datasets, unseen, unseen_networks, preset, episodes,
                 seed, data_dir, evaluate, progress, overwrite, checkpoint_every, max_seconds, buckets,
                 say) -> TrainAgentResult:
    """`train_agent` on the mesh of the enclosing `sharding.use_mesh` block."""
    tau = validate_tau(tau)
    loaded, held = select_zoos(zoo_root, datasets, unseen, data_dir, preset)
    preset = loaded[0][0].preset
    common = EnvPool.from_zoos(loaded + held, "all", tau, preset).dims  # one padded shape for train and eval
    pool = EnvPool.from_zoos(loaded, "train", tau, preset, dims=common)
    episodes = episodes or learn.default_episodes(len(pool))
    if say:
        say(f"training on {len(pool)} networks of {len(loaded)} datasets ({', '.join(pool.datasets)}); "
            f"{episodes} episodes, warm-up {agent_lib.warmup_episodes(len(pool))}, batch {agent_config.batch_size}, "
            f"tau={tau:g}, passes={env_config.passes}, preset {preset.name}")
    out = Path(out)
    agent, state = learn.train_agent(pool, preset, env_config, agent_config, out, episodes=episodes, seed=seed,
                                     progress=progress, overwrite=overwrite, checkpoint_every=checkpoint_every,
                                     max_seconds=max_seconds, buckets=buckets)
    if say:
        say(f"trained {int(state.episodes)} episodes -> {out / 'checkpoint.npz'}")
    result = TrainAgentResult(agent=agent, state=state, out=out, summary={}, rows=[])
    if not evaluate:
        return result
    evaluations = [("heldout", EnvPool.from_zoos(loaded, "heldout", tau, preset, dims=common))]
    if held:
        evaluations.append(("unseen", EnvPool.from_zoos(held, unseen_networks, tau, preset, dims=common)))
    for label, eval_pool in evaluations:
        for policy in ("agent", "random"):
            rows = learn.run_agent(agent, state.actor, eval_pool, preset, env_config, seed=seed,
                                   random_actions=policy == "random", progress=progress).rows
            for r in rows:
                r.update(protocol=label, policy=policy)
            result.rows += rows
            result.summary[f"{label}/{policy}"] = runner.summarise(rows)
    if not sharding.is_writer():
        return result
    if result.rows:
        with open(out / "evaluation.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, list(result.rows[0]))
            writer.writeheader()
            writer.writerows(result.rows)
    (out / "evaluation.json").write_text(json.dumps({"settings": {"tau": tau, "passes": env_config.passes,
                                                                  "env": dataclasses.asdict(env_config)},
                                                     "summary": result.summary}, indent=1))
    return result
