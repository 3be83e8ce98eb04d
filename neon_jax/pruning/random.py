"""The random agents: NEON's environment (its cut, `passes` visits of every hidden layer) with uniform random
actions (`policies.random_policy`; the observation, unused, is compiled away).

* ``random`` — the paper's random agent: the environment's fine-tune after every cut (= ``run_agent(...,
  random_actions=True)``).
* ``random_no_ft`` — the b97fb33 random runner: the same episode WITHOUT per-step fine-tuning (the environment
  runs with ``finetune_epochs = 0``, so the re-initialised layers stay as drawn), then ONE fine-tune of the whole
  network at the end. The original ran that final fine-tune for up to 100 epochs with patience 10, the same
  schedule as its per-step fine-tune; here it uses the preset's fine-tune schedule (`finetune_epochs`,
  `patience`: 100 / 10 in ``paper``, 10 / 3 in ``cpu``), likewise the same as the environment's.
"""

from __future__ import annotations

from neon_jax.pruning.method import PruningMethod, register


class RandomAgent(PruningMethod):
    name = "random"
    description = "random agent: NEON's environment, uniform actions, fine-tune after every cut (the paper's)"
    uses_passes = True
    tunes_each_step = True


class RandomNoFinetune(PruningMethod):
    name = "random_no_ft"
    description = "random agent without per-step fine-tuning, one whole-network fine-tune at the end (b97fb33)"
    uses_passes = True


register(RandomAgent())
register(RandomNoFinetune())
