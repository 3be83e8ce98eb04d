"""The jobs, each a Python function the CLI command of the same name calls (the CLI parses, calls and prints):

    prune        the main job: one network on one dataset pruned by a trained agent (`neon_jax.prune`)
    rollout      one policy over every network of one or more zoos -> rows, totals, a JSON document
    train_agent  train NEON's agent on zoos, then evaluate it against the random agent
    evaluate     NEON, the random agent and the baselines over folds of held-out networks -> cells, report
                 (`neon_jax.jobs.evaluate.run_evaluation`; a package, imported on use: it draws its plots with
                 matplotlib)
"""

from neon_jax.jobs.prune import PruneResult, prune, save_result
from neon_jax.jobs.rollout import POLICY_FORMS, RolloutResult, check_policy, rollout
from neon_jax.jobs.train_agent import TrainAgentResult, select_zoos, train_agent

__all__ = ["POLICY_FORMS", "PruneResult", "RolloutResult", "TrainAgentResult", "check_policy", "prune", "rollout",
           "save_result", "select_zoos", "train_agent"]
