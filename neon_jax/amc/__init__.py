"""AMC (He et al., ECCV 2018) for dense networks: a DDPG agent searches per-layer keep ratios under a FLOPs budget.

Four rooms: `config` (the settings), `network` (the network side: FLOPs, embedding, budget wall, channels, refits),
`ddpg` (the agent and its replay), `search` (a search and `prune`).

The original's `amc_runner.py` (neon_spec.md §9) on the padded networks of `neon_jax.nets`, one network per call
(vmap it for many). The method:

* **Layers.** The Linears of a network in order (the hidden Linears, then the output Linear): L = depth + 1
  steps. The action of step t is the share of Linear t's *input features* to keep; for t >= 1 these are the
  neurons of hidden layer t - 1, so removing an input of Linear t removes that neuron (its incoming weights,
  bias and batch-norm entries go with it: the result is a narrower network, counted as NEON's). The first
  Linear's inputs (the data's features) are never pruned: its action is forced to 1, as AMC's.
* **State** (10 numbers, `embedding`): layer index, type (1 = Linear), in and out features, stride 0, kernel 1,
  weight count, each min-max normalised over the network's layers; then the FLOPs removed so far and the FLOPs
  of the layers after this one (both over the original FLOPs) and the previous action.
* **Budget** (`budget_wall`): a proposed ratio is lowered so that, with every later layer at `lbound`, the
  network keeps at most `preserve_ratio` of its FLOPs, and never below `lbound`.
* **Channels** (`channel_count`, `keep_mask`): d' = round(c * ratio) (at least 1), rounded up to a multiple of
  `channel_round` (down where that exceeds c); the inputs with the largest L1 norm of their outgoing weights
  are kept. A ratio of 1 leaves the Linear as it is; otherwise its weights are refit by least squares
  (`reconstruct`) so that the kept inputs best reproduce the original Linear's outputs on a calibration sample
  (60 batches of 32 rows of the fine-tune split, eval mode).
* **Reward** ``-(1 - acc) * log(FLOPs)``, acc = validation accuracy of the pruned (not fine-tuned) network,
  FLOPs as AMC counts them (`linear_flops`: in * out + out per Linear, times its input and output ratios).
  Every transition of an episode gets the episode's reward.
* **Agent** (`ddpg_init`, `ddpg_update`): actor and critic 300-300, Adam lr 1e-4 / 1e-3, soft target update
  0.01, discount 1, a replay of 100 transitions per layer, batches of 64, rewards centred by a moving average
  (alpha 0.5); 50 warm-up episodes of uniform random actions in [lbound, rbound], then the actor's action with
  truncated-normal noise of scale 0.5 * 0.95^(episode - warm-up), clipped to [lbound, rbound]; after warm-up,
  one update per transition. 300 episodes; the strategy with the best reward is the result.

Beyond the original: `AMCConfig.parallel_episodes` = E > 1 runs E episodes with one actor at once (different
noise), then their E * L transitions and updates in the same order one-by-one episodes would have had them
(E = 1 is the original's schedule, exactly). The search of a whole batch of networks is one vmapped program.

Refits (`AMCConfig.refit`): an input subset is always the d' most important inputs, so every refit a search can
ask for (d' = channel_round, 2 * channel_round, ...) can be solved once per network before the search (`prepare`,
"table") and an episode only looks its Linears up: the same least-squares solutions, computed once instead of once
per episode. Its memory is ``(max_hidden - 1) * w_max^2 + w_max * k_max`` floats times ``w_max / channel_round``
per network (1.5 GiB at w_max 1024, channel_round 8). Where that grows past a budget (`TABLE_BUDGET_BYTES`, 1 GiB:
the paper's widths, w_max 768 and 1024), "auto" keeps each Linear's calibration inputs and targets instead
(``max_hidden * n_cal * w_max`` floats and the targets, ~30 MB at the `wide` preset) and `apply_strategy` solves the
refits of the strategy it applies ("on_demand"): the same `reconstruct` of the same problem, one per pruned Linear
per episode instead of one per channel count per Linear.

Deviations, each behind a switch where the original's behaviour is a bug:

* ``legacy_bias_target`` (False): AMC fits the Linear's output *including its bias* with no intercept and then
  keeps the bias, so the bias is counted twice. Here the target is the output without the bias (``X @ W``);
  True fits the original's target.
* ``floor_accuracy`` (False): the original reported max(pruned accuracy, unpruned accuracy) (§12 C3); it is
  applied by `neon_jax.pruning` only when set.
* A layer narrower than `channel_round` would get d' = 0 in the original (floor(c / 8) * 8); here it is kept
  whole.
* Replay batches are drawn without replacement from the filled part of the buffer (with replacement while it
  holds fewer than 64), uniformly; the original's keras-style sequential memory samples the same way.
"""


from neon_jax.amc.config import REFIT_MODES, STATE_SIZE, AMCConfig, resolve_batching
from neon_jax.amc.ddpg import (
    DDPGState,
    Replay,
    actor_apply,
    critic_apply,
    ddpg_init,
    ddpg_update,
    init_actor,
    init_critic,
    replay_add,
    replay_init,
    replay_sample,
)
from neon_jax.amc.network import (
    TABLE_BUDGET_BYTES,
    Network,
    apply_strategy,
    budget_wall,
    channel_count,
    check_table_size,
    embedding,
    flops_kept,
    importance_ranks,
    keep_mask,
    linear_flops,
    linear_inputs,
    prepare,
    reconstruct,
    refit_mode,
    refit_problems,
    resolve_refit,
    step_sizes,
    table_bytes,
    table_entries,
)
from neon_jax.amc.search import SearchResult, prune, search

__all__ = [
    "REFIT_MODES", "STATE_SIZE", "TABLE_BUDGET_BYTES", "AMCConfig", "DDPGState", "Network", "Replay", "SearchResult",
    "actor_apply", "apply_strategy", "budget_wall", "channel_count", "check_table_size", "critic_apply", "ddpg_init",
    "ddpg_update", "embedding", "flops_kept", "importance_ranks", "init_actor", "init_critic", "keep_mask",
    "linear_flops", "linear_inputs", "prepare", "prune", "reconstruct", "refit_mode", "refit_problems", "replay_add",
    "replay_init", "replay_sample", "resolve_batching", "resolve_refit", "search", "step_sizes", "table_bytes",
    "table_entries",
]
