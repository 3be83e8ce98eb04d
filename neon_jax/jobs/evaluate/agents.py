"""The NEON agents of an evaluation: loaded once per spec, with what they were trained on."""

from __future__ import annotations

from neon_jax.agent import registry
from neon_jax.agent.registry import LoadedAgent
from neon_jax.jobs.evaluate.config import Cell
from neon_jax.jobs.evaluate.plan import agent_key
from neon_jax.presets import Preset


def load_agent(spec: str, preset: Preset) -> LoadedAgent:
    """Loads the agent of a neon cell's setting: "pretrained:<tau>", "pretrained" or a path
    (`neon_jax.agent.registry.load_agent`)."""
    return registry.load_agent(spec, preset)


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
