"""Agent checkpoints (actor, critic, optimiser states) and policy files (the actor alone: the shipped form)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from neon_jax.agent.agent import Agent, AgentState
from neon_jax.agent.config import AgentConfig
from neon_jax.presets import Preset

CHECKPOINT_FORMAT = 1


def save_checkpoint(path, state: AgentState, config: AgentConfig, preset: Preset, extra: dict | None = None) -> Path:
    """Writes ``<path>.npz`` (all arrays: actor, critic, optimiser states, episode count) and ``<path>.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves, _ = jax.tree_util.tree_flatten(jax.device_get(state))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    tmp.replace(path.with_suffix(".npz"))
    doc = {"format": CHECKPOINT_FORMAT, "agent": dataclasses.asdict(config), "preset": dataclasses.asdict(preset),
           "episodes": int(state.episodes), "n_leaves": len(leaves), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    return path.with_suffix(".npz")


def load_checkpoint(path) -> tuple[Agent, AgentState, dict]:
    """Loads a checkpoint written by `save_checkpoint`: (agent, state, metadata)."""
    path = Path(path)
    npz, meta_path = path.with_suffix(".npz"), path.with_suffix(".json")
    if not npz.exists() or not meta_path.exists():
        raise FileNotFoundError(f"no agent checkpoint at {path} (expected {npz.name} and {meta_path.name})")
    doc = json.loads(meta_path.read_text())
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{meta_path}: unsupported agent checkpoint format {doc.get('format')!r}")
    preset_doc = dict(doc["preset"])
    preset_doc["widths"] = tuple(preset_doc["widths"])
    preset = Preset(**preset_doc)
    agent = Agent(AgentConfig(**doc["agent"]), preset)
    template = jax.eval_shape(agent.init, jax.random.PRNGKey(0))  # shapes only: nothing is computed
    leaves, treedef = jax.tree_util.tree_flatten(template)
    with np.load(npz) as data:
        loaded = [data[f"leaf_{i:05d}"] for i in range(len(data.files))]
    if len(loaded) != len(leaves) or any(a.shape != tuple(b.shape) for a, b in zip(loaded, leaves)):
        raise ValueError(f"{npz}: the arrays do not fit an agent of this config and preset")
    state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in loaded])
    return agent, state, doc


def save_policy(path, actor_params, config: AgentConfig, preset: Preset, extra: dict | None = None) -> Path:
    """Writes only the actor (what pruning needs) as ``<path>.npz`` (compressed) + ``<path>.json``.

    This is the shipped form of a trained agent: a quarter of a training checkpoint (no critic, no optimiser
    moments), loadable with `load_policy`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(actor_params))[0]
    arrays = {"/".join(str(getattr(k, "key", k)) for k in key_path): np.asarray(leaf, np.float32)
              for key_path, leaf in flat}
    np.savez_compressed(path.with_suffix(".npz"), **arrays)
    doc = {"format": "neon_jax.policy/1", "agent": dataclasses.asdict(config), "preset": dataclasses.asdict(preset),
           **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    return path.with_suffix(".npz")


def load_policy(path) -> tuple[Agent, Any, dict]:
    """Loads an actor written by `save_policy` (or the actor of a `save_checkpoint` file): (agent, actor, meta)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.exists() or not path.with_suffix(".npz").exists():
        raise FileNotFoundError(f"no agent at {path} (expected {path.with_suffix('.npz').name} and {meta_path.name})")
    doc = json.loads(meta_path.read_text())
    if doc.get("format") == CHECKPOINT_FORMAT:
        agent, state, doc = load_checkpoint(path)
        return agent, state.actor, doc
    if doc.get("format") != "neon_jax.policy/1":
        raise ValueError(f"{meta_path} is not a neon_jax agent (format {doc.get('format')!r})")
    preset_doc = dict(doc["preset"])
    preset_doc["widths"] = tuple(preset_doc["widths"])
    agent = Agent(AgentConfig(**doc["agent"]), Preset(**preset_doc))
    template = jax.eval_shape(agent.actor.init, jax.random.PRNGKey(0), agent.dummy_obs())  # shapes only
    with np.load(path.with_suffix(".npz")) as data:
        def fill(key_path, leaf):
            name = "/".join(str(getattr(k, "key", k)) for k in key_path)
            if name not in data.files or data[name].shape != leaf.shape:
                raise ValueError(f"{path.with_suffix('.npz')}: array {name!r} is missing or has the wrong shape")
            return jnp.asarray(data[name])

        actor = jax.tree_util.tree_map_with_path(fill, template)
    return agent, actor, doc
