"""The jobs, each a Python function the CLI command of the same name calls (the CLI parses, calls and prints):

    rollout      one policy over every network of one or more zoos -> rows, totals, a JSON document
    train_agent  train NEON's agent on zoos, then evaluate it against the random agent

(`neon_jax.prune` is the main job, `neon_jax.evaluate.run_evaluation` the evaluation.)
"""

from neon_jax.jobs.rollout import POLICY_FORMS, RolloutResult, check_policy, rollout
from neon_jax.jobs.train_agent import TrainAgentResult, select_zoos, train_agent

__all__ = ["POLICY_FORMS", "RolloutResult", "TrainAgentResult", "check_policy", "rollout", "select_zoos",
           "train_agent"]
