"""Agent checkpoints (actor, critic, optimiser states) and policy files (the actor alone: the shipped form)."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from neon_jax.agent.agent import Agent, AgentState
from neon_jax.agent.config import AgentConfig
from neon_jax.presets import Preset

CHECKPOINT_FORMAT = 1
META_KEY = "__metadata_json__"  # the checkpoint's metadata inside its npz (utf-8 bytes), so the npz alone is whole


def save_checkpoint(path, state: AgentState, config: AgentConfig, preset: Preset, extra: dict | None = None) -> Path:
    """Writes ``<path>.npz`` (all arrays: actor, critic, optimiser states, episode count, and the metadata) and
    ``<path>.json`` (the same metadata, to read).

    The npz is written to a temporary file and renamed into place, so it is never torn and always carries its own
    metadata; the json is renamed into place after it (a kill in between leaves a json one checkpoint behind,
    which `load_checkpoint` ignores in favour of the npz's copy).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves, _ = jax.tree_util.tree_flatten(jax.device_get(state))
    doc = {"format": CHECKPOINT_FORMAT, "agent": dataclasses.asdict(config), "preset": dataclasses.asdict(preset),
           "episodes": int(state.episodes), "n_leaves": len(leaves), **(extra or {})}
    text = json.dumps(doc, indent=1)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)},
             **{META_KEY: np.frombuffer(text.encode(), np.uint8)})
    tmp.replace(path.with_suffix(".npz"))
    tmp_json = path.with_name(path.name + ".tmp.json")
    tmp_json.write_text(text)
    tmp_json.replace(path.with_suffix(".json"))
    return path.with_suffix(".npz")


def read_json(path) -> dict:
    """A metadata file's dict, or a ValueError that names the file and what is wrong with it."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged: not valid JSON ({err.msg if hasattr(err, 'msg') else err})"
                         f"{' (the file is empty)' if path.stat().st_size == 0 else ''}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is damaged: expected a JSON object, found {type(doc).__name__}")
    return doc


def _open_npz(path):
    """np.load of an npz, or a ValueError that names the file when it is truncated or not an npz at all."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is damaged or truncated: not a readable .npz archive "
                         f"({type(err).__name__})") from None


def _read_arrays(data, path, names) -> list[np.ndarray]:
    try:
        return [data[n] for n in names]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"{path} is damaged or truncated: an array cannot be read ({type(err).__name__})") from None


def load_checkpoint(path) -> tuple[Agent, AgentState, dict]:
    """Loads a checkpoint written by `save_checkpoint`: (agent, state, metadata; the npz's own copy when it has
    one). Damaged files raise a ValueError naming the file."""
    path = Path(path)
    npz, meta_path = path.with_suffix(".npz"), path.with_suffix(".json")
    if not npz.exists():
        raise FileNotFoundError(f"no agent checkpoint at {path} (expected {npz.name} and {meta_path.name})")
    with _open_npz(npz) as data:
        files = list(data.files)
        if META_KEY in files:
            (meta,) = _read_arrays(data, npz, [META_KEY])
            try:
                doc = json.loads(meta.tobytes().decode())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ValueError(f"{npz} is damaged: its metadata is not valid JSON") from None
        elif meta_path.exists():  # written before the metadata moved into the npz
            doc = read_json(meta_path)
        else:
            raise FileNotFoundError(f"no agent checkpoint at {path} (expected {npz.name} and {meta_path.name})")
        names = sorted(f for f in files if f.startswith("leaf_"))
        loaded = _read_arrays(data, npz, names)
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{meta_path}: unsupported agent checkpoint format {doc.get('format')!r}")
    preset_doc = dict(doc["preset"])
    preset_doc["widths"] = tuple(preset_doc["widths"])
    preset = Preset(**preset_doc)
    agent = Agent(AgentConfig(**doc["agent"]), preset)
    template = jax.eval_shape(agent.init, jax.random.PRNGKey(0))  # shapes only: nothing is computed
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(loaded) != len(leaves) or any(a.shape != tuple(b.shape) for a, b in zip(loaded, leaves)):
        raise ValueError(f"{npz}: the arrays do not fit an agent of this config and preset")
    if not all(np.isfinite(a).all() for a in loaded if np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{npz}: the agent holds non-finite (NaN or infinite) weights")
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
    doc = read_json(meta_path)
    if doc.get("format") == CHECKPOINT_FORMAT:
        agent, state, doc = load_checkpoint(path)
        return agent, state.actor, doc
    if doc.get("format") != "neon_jax.policy/1":
        raise ValueError(f"{meta_path} is not a neon_jax agent (format {doc.get('format')!r})")
    preset_doc = dict(doc["preset"])
    preset_doc["widths"] = tuple(preset_doc["widths"])
    agent = Agent(AgentConfig(**doc["agent"]), Preset(**preset_doc))
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # a PRNGKey's shape: nothing computed (shapes only)
    template = jax.eval_shape(agent.actor.init, key, agent.dummy_obs())
    npz = path.with_suffix(".npz")
    with _open_npz(npz) as data:
        def fill(key_path, leaf):
            name = "/".join(str(getattr(k, "key", k)) for k in key_path)
            if name not in data.files:
                raise ValueError(f"{npz}: array {name!r} is missing")
            (array,) = _read_arrays(data, npz, [name])
            if array.shape != leaf.shape:
                raise ValueError(f"{npz}: array {name!r} has the wrong shape {array.shape} (expected {leaf.shape})")
            if not np.isfinite(array).all():
                raise ValueError(f"{npz}: array {name!r} holds non-finite (NaN or infinite) weights")
            return jax.device_put(np.asarray(array, leaf.dtype))  # jnp.asarray compiles a program per shape

        actor = jax.tree_util.tree_map_with_path(fill, template)
    return agent, actor, doc
