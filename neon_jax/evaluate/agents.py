"""The NEON agents of an evaluation: loaded once per spec, with what they were trained on."""

from __future__ import annotations

import dataclasses
from typing import Any

from neon_jax import pruner
from neon_jax.evaluate.config import Cell
from neon_jax.evaluate.plan import agent_key
from neon_jax.presets import Preset


@dataclasses.dataclass(frozen=True)
class LoadedAgent:
    """An agent ready to prune, with its training record.

    Attributes:
      agent / actor: the `neon_jax.agent.Agent` and its actor parameters.
      tau: the tau it was trained at (None if unrecorded).
      cut: the cut of its training environment.
      datasets: the datasets of its training networks (None if unrecorded).
      episodes: its training episodes (None if unrecorded).
      path: the checkpoint it was loaded from ("pretrained" for the shipped agent).
    """

    agent: Any
    actor: Any
    tau: float | None
    cut: str
    datasets: list | None
    episodes: int | None
    path: str


def load_agent(spec: str, preset: Preset) -> LoadedAgent:
    """Loads the agent of a neon cell's setting.

    Args:
      spec: "pretrained:<tau>" (the shipped agent trained nearest tau), "pretrained", or a path: a
        `train-agent --out` folder, a checkpoint or a policy file (with or without .npz / .json).
      preset: the preset of the networks it will observe.

    Returns:
      The `LoadedAgent`.
    """
    path, tau_wanted = spec, None
    if spec.startswith("pretrained"):
        path, _, wanted = spec.partition(":")
        tau_wanted = float(wanted) if wanted else None
    else:
        path = str(pruner.agent_path(spec))
    agent, actor, _, _, meta = pruner.load_agent(path, preset, tau_wanted)
    settings = meta.get("settings", {})
    env = meta.get("env", settings.get("env", {}))
    tau = meta.get("tau", settings.get("tau"))
    return LoadedAgent(agent=agent, actor=actor, tau=None if tau is None else float(tau),
                       cut=env.get("cut", "reinit"), datasets=meta.get("datasets", settings.get("datasets")),
                       episodes=meta.get("episodes"), path=path)


def check_unseen(agent: LoadedAgent, cell: Cell, folds: list[list[str]]) -> None:
    """Refuses an agent for an unseen-protocol cell if it trained on any dataset of the cell's fold.

    Raises:
      ValueError: the agent records no training datasets, or some are in the fold (the message says how
        to train and pass one without them).
    """
    fold_sets = set(folds[cell.fold])
    if agent.datasets is None:
        raise ValueError(f"agent {agent.path} records no training datasets, so it cannot be checked against "
                         f"unseen fold {cell.fold} ({', '.join(sorted(fold_sets))})")
    seen = fold_sets & set(agent.datasets)
    if seen:
        raise ValueError(
            f"agent {agent.path} (tau {cell.tau:g}) was trained on {', '.join(sorted(seen))}, which are in unseen "
            f"fold {cell.fold}; train one without them (`neon-jax train-agent --unseen {','.join(folds[cell.fold])}`)"
            f" and pass --agent {agent_key(cell.tau, cell.fold)}=PATH")
