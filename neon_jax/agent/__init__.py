"""The NEON agent: actor and critic (flax), Monte-Carlo advantage actor-critic (rlax + optax), one jit per update.

Networks (neon_spec.md §6.1, `networks`): six branches over the observation — network topology, network
activation statistics, network weight statistics, layer topology, layer activation statistics, layer weight
statistics — concatenated (170 features at the paper's 10 rows), then 300-300 heads to 5 action logits (actor)
or one value (critic); or, beyond the paper, a compact permutation-invariant trunk. Learning (§6.2, `update`):
whole episodes rolled out by `neon_jax.rollout` with the actor as act_fn, Monte-Carlo returns, per-step
advantages, separate Adam(1e-3) optimisers; `make_train_iteration` is roll-out then update under one jit.
`losses` holds the pure pieces, `checkpoint` the files, `registry` which agent prunes (the shipped ones, files,
the random policy) and what it was trained on.
"""

import importlib

_EXPORTS = {
    "ARCHITECTURES": "neon_jax.agent.config",
    "ActorPolicy": "neon_jax.agent.agent",
    "Agent": "neon_jax.agent.agent",
    "AgentConfig": "neon_jax.agent.config",
    "AgentNet": "neon_jax.agent.networks",
    "AgentState": "neon_jax.agent.agent",
    "CHECKPOINT_FORMAT": "neon_jax.agent.checkpoint",
    "CompactTrunk": "neon_jax.agent.networks",
    "LoadedAgent": "neon_jax.agent.registry",
    "MLPBranch": "neon_jax.agent.networks",
    "NeonTrunk": "neon_jax.agent.networks",
    "PRETRAINED": "neon_jax.agent.registry",
    "REWARD_SCALE": "neon_jax.choices",
    "REWARD_TRANSFORMS": "neon_jax.agent.config",
    "RowBatchNorm": "neon_jax.agent.networks",
    "RowBranch": "neon_jax.agent.networks",
    "TorchDense": "neon_jax.agent.networks",
    "action_log_probs": "neon_jax.agent.losses",
    "actor_critic_losses": "neon_jax.agent.losses",
    "advantages": "neon_jax.agent.losses",
    "clipped_policy_loss": "neon_jax.agent.losses",
    "critic_loss": "neon_jax.agent.losses",
    "load_agent": "neon_jax.agent.registry",
    "load_checkpoint": "neon_jax.agent.checkpoint",
    "load_policy": "neon_jax.agent.checkpoint",
    "make_train_iteration": "neon_jax.agent.update",
    "make_update": "neon_jax.agent.update",
    "monte_carlo_returns": "neon_jax.agent.losses",
    "normalise_over_valid": "neon_jax.agent.losses",
    "policy_entropy": "neon_jax.agent.losses",
    "policy_loss": "neon_jax.agent.losses",
    "policy_program": "neon_jax.agent.agent",
    "returns_of": "neon_jax.agent.losses",
    "save_checkpoint": "neon_jax.agent.checkpoint",
    "save_policy": "neon_jax.agent.checkpoint",
    "transform_rewards": "neon_jax.agent.losses",
    "warmup_episodes": "neon_jax.agent.config",
}


def __getattr__(name: str):
    """Imports the submodule that defines `name` on first use, so `neon_jax.agent.config` (the CLI's flags) is
    read without importing JAX."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES", "ActorPolicy", "Agent", "AgentConfig", "AgentNet", "AgentState", "CHECKPOINT_FORMAT",
    "LoadedAgent", "PRETRAINED", "load_agent",
    "CompactTrunk", "MLPBranch", "NeonTrunk", "REWARD_SCALE", "REWARD_TRANSFORMS", "RowBatchNorm", "RowBranch",
    "TorchDense", "action_log_probs", "actor_critic_losses", "advantages", "clipped_policy_loss", "critic_loss",
    "load_checkpoint", "load_policy", "make_train_iteration", "make_update", "monte_carlo_returns",
    "normalise_over_valid", "policy_entropy", "policy_loss", "policy_program", "returns_of", "save_checkpoint",
    "save_policy", "transform_rewards", "warmup_episodes",
]
