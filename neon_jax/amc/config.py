"""AMC's settings (`AMCConfig`, the original runner's defaults) and how a batch of searches runs."""

from __future__ import annotations

import dataclasses

import jax

STATE_SIZE = 10
REFIT_MODES = ("auto", "table", "on_demand")



@dataclasses.dataclass(frozen=True)
class AMCConfig:
    """The search's settings (defaults: the original runner's, neon_spec.md §9). Static: part of the program."""

    episodes: int = 300
    warmup: int = 50  # episodes 0..warmup act at random (the original's `episode <= warmup`)
    hidden: int = 300  # actor and critic: two hidden layers of this width
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    soft_update: float = 0.01
    discount: float = 1.0
    replay_per_layer: int = 100
    batch_size: int = 64
    lbound: float = 0.1
    rbound: float = 1.0
    channel_round: int = 8
    init_delta: float = 0.5
    delta_decay: float = 0.95
    moving_alpha: float = 0.5
    calibration_rows: int = 1920  # 60 batches of 32
    parallel_episodes: int = 1
    legacy_bias_target: bool = False
    floor_accuracy: bool = False
    batching: str = "auto"  # how a batch of searches runs: "vmap", "map" (one after the other), "auto"
    # where a strategy's least-squares refits come from: "table" (all solved once per network, before the
    # search), "on_demand" (solved when a strategy is applied), "auto" (the table where it fits the budget,
    # `neon_jax.amc.network.refit_mode`)
    refit: str = "auto"


    def __post_init__(self):
        if self.episodes < 1 or self.parallel_episodes < 1 or self.episodes % self.parallel_episodes:
            raise ValueError(f"AMC needs episodes >= 1 in whole rounds of parallel_episodes; got episodes="
                             f"{self.episodes}, parallel_episodes={self.parallel_episodes}")
        if not 0.0 < self.lbound <= self.rbound <= 1.0:
            raise ValueError(f"AMC needs 0 < lbound <= rbound <= 1, got {self.lbound}, {self.rbound}")
        if self.channel_round < 1 or self.batch_size < 1 or self.calibration_rows < 1:
            raise ValueError("AMC's channel_round, batch_size and calibration_rows must be >= 1")
        if self.batching not in ("auto", "vmap", "map"):
            raise ValueError(f"AMC's batching is 'auto', 'vmap' or 'map', got {self.batching!r}")
        if self.refit not in REFIT_MODES:
            raise ValueError(f"AMC's refit is 'auto', 'table' or 'on_demand', got {self.refit!r}")


def resolve_batching(config: AMCConfig) -> AMCConfig:
    """`config` with ``batching="auto"`` made concrete: "map" on a CPU, where one search after the other inside
    one program measured faster than vmapped searches (`benchmarks/results/amc_search_cpu.json`: the vmapped
    batch runs every network to the deepest one's steps and selects its whole agent state per step), "vmap" on
    accelerators (not measured yet)."""
    if config.batching != "auto":
        return config
    return dataclasses.replace(config, batching="map" if jax.default_backend() == "cpu" else "vmap")
