"""Policies that need no training: the paper's random agent and fixed rules, as act_fns of `neon_jax.rollout`.

    keep:F                   always keep the fraction F (0.9, 0.8, 0.7 or 0.6) of the visited layer
    while:F:D                keep F while the episode's validation accuracy change is at least -D points,
                             else keep the layer (reads the progress the environment attaches to every
                             observation, the same the `observe_progress` agents read)

Every rule is one act_fn (`rule_policy`) whose numbers are its `policy_params` (`parse_rule`), so all rules share
one compiled roll-out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from neon_jax.env import KEEP_FRACTIONS, NUM_ACTIONS
from neon_jax.features import Observation
from neon_jax.rollout import policy_keys

RULE_FORMS = ("keep:F", "while:F:D")


def random_policy(policy_params, key: jax.Array, obs: Observation) -> jax.Array:
    """Uniform over the five actions (the paper's random agent); `policy_params` and `obs` are ignored."""
    return jax.random.randint(policy_keys(key)[1], (), 0, NUM_ACTIONS)


def rule_policy(policy_params: dict, key: jax.Array, obs: Observation) -> jax.Array:
    """Action ``policy_params["action"]`` while the accuracy change so far is at least ``-max_drop`` points,
    else 0 (keep the layer). Needs the observation's progress features (every `NeonEnv` attaches them)."""
    delta = 10.0 * obs.progress[0]  # features.progress_features: accuracy change in tens of points
    return jnp.where(delta >= -policy_params["max_drop"], policy_params["action"], 0)


def parse_rule(text: str) -> dict:
    """'keep:0.8' or 'while:0.6:0' -> the `policy_params` of `rule_policy`; ValueError naming the problem."""
    parts = text.split(":")
    fractions = {round(float(f), 3): i for i, f in enumerate(KEEP_FRACTIONS)}
    try:
        if parts[0] == "keep" and len(parts) == 2:
            frac, drop = float(parts[1]), float("inf")
        elif parts[0] == "while" and len(parts) == 3:
            frac, drop = float(parts[1]), float(parts[2])
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"cannot read rule {text!r}: use {' or '.join(RULE_FORMS)}") from None
    if round(frac, 3) not in fractions:
        raise ValueError(f"rule {text!r}: the keep fraction must be one of {list(KEEP_FRACTIONS)}")
    return {"action": jnp.int32(fractions[round(frac, 3)]), "max_drop": jnp.float32(min(drop, 1e6))}


def is_rule(text: str) -> bool:
    """Whether `text` names a rule ('keep:...' or 'while:...')."""
    return text.split(":", 1)[0] in ("keep", "while")
