"""Which agent prunes: the shipped agents, agents on disk, the random policy, and what each was trained on.

    loaded = load_agent("pretrained", preset, tau=5)     # the shipped agent trained nearest tau 5
    loaded = load_agent("pretrained:50", preset)         # the same, the tau in the spec
    loaded = load_agent("runs/agent", preset)            # a train-agent --out folder, checkpoint or policy file
    loaded = load_agent("random", preset)                # the uniform policy (no actor weights)
    loaded.agent, loaded.actor, loaded.tau, loaded.env   # the agent, its actor, what it was trained at

This is the one place that reads an agent's metadata (its tau, training environment, datasets, episodes), old
checkpoints (settings nested under ``settings``) and new alike.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from neon_jax.agent.agent import Agent
from neon_jax.agent.checkpoint import load_policy
from neon_jax.agent.config import AgentConfig
from neon_jax.presets import Preset, get_preset

# preset -> {training tau: policy stem in neon_jax/assets/}; the main job takes the agent trained nearest its tau
PRETRAINED = {"cpu": {1.0: "agent_cpu_tau1", 5.0: "agent_cpu_tau5", 50.0: "agent_cpu_tau50"}}


@dataclasses.dataclass(frozen=True)
class LoadedAgent:
    """An agent ready to prune, with its training record.

    Attributes:
      agent: the `Agent` (its config and the preset it observes).
      actor: its actor parameters; None for the random policy.
      random: the uniform random policy (no actor).
      description: one line for progress messages ("pretrained agent_cpu_tau5 (2000 training episodes, ...)").
      meta: the checkpoint's metadata as saved.
      path: the checkpoint stem it was loaded from; "pretrained" for a shipped agent (the install's path is no
        record), "" for the random policy.
      tau: the tau it was trained at (None if unrecorded).
      env: its training environment's settings (passes, cut, ...; {} if unrecorded).
      datasets: the datasets of its training networks (None if unrecorded).
      episodes: its training episodes (None if unrecorded).

    Unpacks as ``(agent, actor, random, description, meta)``.
    """

    agent: Agent
    actor: Any
    random: bool
    description: str
    meta: dict
    path: str
    tau: float | None
    env: dict
    datasets: list | None
    episodes: int | None

    @property
    def cut(self) -> str:
        """The cut of its training environment ("reinit" when unrecorded, the default then)."""
        return self.env.get("cut", "reinit")

    def __iter__(self):
        return iter((self.agent, self.actor, self.random, self.description, self.meta))


def pretrained_checkpoint(preset: str | Preset, tau: float | None = None) -> Path:
    """Path (stem) of the shipped agent for networks of `preset`, the one trained nearest `tau` (on a log scale;
    None means the default tau of 5).

    The preset's own agents first; a preset without any (such as `tiny` or `paper`) takes the agents of a preset
    whose state maps hold as many hidden layers (any width: a wider layer is seen through evenly spaced neurons).
    A clear error if none does.
    """
    preset = get_preset(preset)
    candidates = [preset.name] + [name for name in PRETRAINED if name != preset.name]
    fits = [name for name in candidates if name in PRETRAINED and _maps_hold(get_preset(name), preset)]
    if not fits:
        raise ValueError(f"no pretrained agent ships for preset {preset.name!r} (its networks have up to "
                         f"{preset.max_hidden} hidden layers; agents ship for "
                         f"{', '.join(PRETRAINED)}); train one with `neon-jax train-agent` and pass --agent PATH")
    by_tau = PRETRAINED[fits[0]]
    target = np.log1p(5.0 if tau is None else float(tau))
    nearest = min(by_tau, key=lambda t: (abs(np.log1p(t) - target), t))
    path = Path(str(resources.files("neon_jax") / "assets" / by_tau[nearest]))
    if not path.with_suffix(".npz").exists():
        raise FileNotFoundError(f"the pretrained agent file {path.with_suffix('.npz')} is missing from the install")
    return path


def _maps_hold(agent_preset: Preset, preset: Preset) -> bool:
    return agent_preset.feature_rows >= preset.max_hidden + 1


def agent_path(spec) -> Path:
    """The stem of an agent on disk: a `train-agent --out` folder (its checkpoint), a checkpoint or policy file
    with or without ``.npz`` / ``.json``."""
    p = Path(spec)
    if p.is_dir():
        p = p / "checkpoint"
    return p.with_suffix("") if p.suffix in (".npz", ".json") else p


def checkpoint_stem(spec: str, preset: Preset, tau: float | None = None) -> Path:
    """The files' stem a spec other than "random" names: the shipped agent of "pretrained" / "pretrained:<tau>"
    (`pretrained_checkpoint`), else `agent_path`."""
    name, _, wanted = spec.partition(":")
    if name == "pretrained":
        return pretrained_checkpoint(preset, float(wanted) if wanted else tau)
    return agent_path(spec)


def training_record(meta: dict) -> dict:
    """{"tau", "env", "datasets", "episodes"} of an agent's metadata (top-level keys, or nested under
    ``settings`` as older checkpoints keep them); None / {} where unrecorded."""
    settings = meta.get("settings", {})
    tau = meta.get("tau", settings.get("tau"))
    return {"tau": None if tau is None else float(tau), "env": dict(meta.get("env", settings.get("env", {}))),
            "datasets": meta.get("datasets", settings.get("datasets")), "episodes": meta.get("episodes")}


def load_agent(spec: str, preset: Preset, tau: float | None = None) -> LoadedAgent:
    """The agent a spec names, checked to observe networks of `preset` (`Agent.observation_preset`).

    Args:
      spec: "pretrained" (the shipped agent trained nearest `tau`), "pretrained:<tau>" (nearest that tau),
        "random" (the uniform policy) or a path (`agent_path`).
      preset: the preset of the networks it will observe.
      tau: the tolerance it will prune at (chooses among the shipped agents).
    """
    if spec == "random":
        return LoadedAgent(agent=Agent(AgentConfig(batch_size=1), preset), actor=None, random=True,
                           description="random policy", meta={}, path="", tau=None, env={}, datasets=None,
                           episodes=None)
    name = spec.partition(":")[0]
    path = checkpoint_stem(spec, preset, tau)
    agent, actor, meta = load_policy(path)
    try:
        agent.observation_preset(preset)
    except ValueError as err:
        raise ValueError(f"the agent at {path} cannot observe these networks: {err}") from None
    record = training_record(meta)
    what = f"pretrained {path.name}" if name == "pretrained" else spec
    tau_note = f", trained at tau {record['tau']:g}" if record["tau"] is not None else ""
    return LoadedAgent(agent=agent, actor=actor, random=False, meta=meta,
                       path="pretrained" if name == "pretrained" else str(path),
                       description=f"{what} ({meta.get('episodes', '?')} training episodes{tau_note})", **record)
