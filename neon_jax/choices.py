"""The names of every option that takes one of a fixed set of values, in one JAX-free place.

The modules that implement the options import their lists from here (and validate against them); the command
line takes its `choices` from here, so `neon-jax --help` and argument errors answer without importing JAX.
"""

CUTS = ("reinit", "keep_best")  # nets.cut: the original's rebuild, or keep the largest-norm neurons
REWARDS = ("neon", "reward1", "reward2", "original", "neon_hold")  # env.compute_reward
REWARD_SCALE = 40.0 ** 3  # the paper's reward at its largest: rho = 40 cubed (§5.1); scaled returns divide by it
ARCHITECTURES = ("neon", "compact")  # agent networks
REWARD_TRANSFORMS = ("none", "symlog", "scaled")  # what the agent learns from (agent.losses.transform_rewards)
PROTOCOLS = ("heldout", "unseen")  # evaluation protocols
ZOO_SPLITS = ("train", "heldout", "all")  # which networks of a zoo
SUITES = ("neon", "all")  # named dataset suites of an evaluation: the paper's datasets, or every zoo
SELECTIONS = ("best", "last")  # how the main job picks its answer among candidates (neon_jax.select)
DEFAULT_CANDIDATES = 8  # sampled episodes per prune, plus the greedy one (README, "The main job")
