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

from neon_jax.agent.agent import ActorPolicy, Agent, AgentState, policy_program
from neon_jax.agent.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_policy, save_checkpoint, save_policy
from neon_jax.agent.config import ARCHITECTURES, REWARD_SCALE, REWARD_TRANSFORMS, AgentConfig, warmup_episodes
from neon_jax.agent.losses import (
    action_log_probs,
    actor_critic_losses,
    advantages,
    clipped_policy_loss,
    critic_loss,
    monte_carlo_returns,
    normalise_over_valid,
    policy_entropy,
    policy_loss,
    returns_of,
    transform_rewards,
)
from neon_jax.agent.networks import AgentNet, CompactTrunk, MLPBranch, NeonTrunk, RowBatchNorm, RowBranch, TorchDense
from neon_jax.agent.registry import PRETRAINED, LoadedAgent, load_agent
from neon_jax.agent.update import make_train_iteration, make_update

__all__ = [
    "ARCHITECTURES", "ActorPolicy", "Agent", "AgentConfig", "AgentNet", "AgentState", "CHECKPOINT_FORMAT",
    "LoadedAgent", "PRETRAINED", "load_agent",
    "CompactTrunk", "MLPBranch", "NeonTrunk", "REWARD_SCALE", "REWARD_TRANSFORMS", "RowBatchNorm", "RowBranch",
    "TorchDense", "action_log_probs", "actor_critic_losses", "advantages", "clipped_policy_loss", "critic_loss",
    "load_checkpoint", "load_policy", "make_train_iteration", "make_update", "monte_carlo_returns",
    "normalise_over_valid", "policy_entropy", "policy_loss", "policy_program", "returns_of", "save_checkpoint",
    "save_policy", "transform_rewards", "warmup_episodes",
]
