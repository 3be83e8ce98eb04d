"""Named scale presets: `paper` (the original's scales), `cpu` (minutes on 2 cores), `wide` (the paper's widths on
CPU schedules), `mixed` (widths 8..256, for an agent of every width) and `tiny` (tests).

A preset fixes every size that shapes a compiled program (padded widths, depth, feature width, sample size) and
every schedule length (epochs, batch sizes, patience). Values in `paper` follow neon_spec.md §2.4, §3, §7; the
smaller presets deviate on purpose and say so below.
"""

from __future__ import annotations

import dataclasses

# Pre-layer operation codes (what sits in front of each hidden Linear, neon_spec.md §7).
PRE_NONE, PRE_DROPOUT, PRE_BATCHNORM = 0, 1, 2
# Activation codes of hidden layers.
ACT_RELU, ACT_TANH, ACT_SIGMOID = 0, 1, 2
ACTIVATION_NAMES = ("relu", "tanh", "sigmoid")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes and schedules of one run. Frozen and hashable, so it can be a static jit argument.

    Attributes:
      name: preset name.
      max_hidden: most hidden layers a base network can have (paper: 6).
      widths: the hidden widths the architecture sampler draws from (paper: 100, 200, ..., 1000).
      train_epochs / train_batch: base-network training (paper: 100 epochs, batch 64, no early stopping).
      learning_rate: Adam learning rate for base training and fine-tuning (paper: 1e-3).
      dropout_rate: rate of the Dropout layers of base networks (paper: 0.5).
      finetune_epochs / finetune_batch / patience: the environment's fine-tuning after each cut
        (paper: up to 100 epochs, batch 32, patience 10 epochs).
      feature_rows: rows of the state maps (paper: MAX_LAYERS = 10).
      feature_width: columns of the state maps (paper: MAX_LAYER_SIZE = 1000); a wider layer is seen through
        evenly spaced neurons (`features.compact_neurons`).
      activation_sample: rows of the activation-statistics sample (paper: 3000).
      max_rows: cap on a dataset's rows (stratified subsample) so a preset's run time stays bounded;
        None = all rows (paper).
      p_dropout / p_batchnorm: probability of Dropout / BatchNorm in front of a hidden layer (paper 0.33 / 0.33).
      p_tanh / p_sigmoid: activation probabilities (paper 0.05 / 0.05, ReLU otherwise).
    """

    name: str
    max_hidden: int
    widths: tuple[int, ...]
    train_epochs: int
    train_batch: int
    finetune_epochs: int
    finetune_batch: int
    patience: int
    feature_width: int
    activation_sample: int
    max_rows: int | None
    feature_rows: int = 10
    learning_rate: float = 1e-3
    dropout_rate: float = 0.5
    p_dropout: float = 0.33
    p_batchnorm: float = 0.33
    p_tanh: float = 0.05
    p_sigmoid: float = 0.05

    def __post_init__(self):
        if self.max_hidden < 1:
            raise ValueError(f"preset {self.name!r}: max_hidden must be >= 1, got {self.max_hidden}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"preset {self.name!r}: widths must be positive, got {self.widths}")
        if self.feature_width < 1:
            raise ValueError(f"preset {self.name!r}: feature_width must be >= 1, got {self.feature_width}")
        if self.feature_rows < self.max_hidden + 1:
            raise ValueError(f"preset {self.name!r}: feature_rows must hold max_hidden + 1 rows")

    @property
    def w_max(self) -> int:
        """Padded width of every hidden layer."""
        return max(self.widths)


PRESETS: dict[str, Preset] = {
    # The original's scales (neon_spec.md §2.4, §3, §7).
    "paper": Preset(
        name="paper", max_hidden=6, widths=tuple(range(100, 1001, 100)),
        train_epochs=100, train_batch=64, finetune_epochs=100, finetune_batch=32, patience=10,
        feature_width=1000, activation_sample=3000, max_rows=None,
    ),
    # Deviates from the paper: widths 8..64 (not 100..1000), 60 training epochs, fine-tuning up to 10 epochs
    # with patience 3, a 500-row activation sample, datasets capped at 3000 rows. Same depth range, layer
    # types and probabilities, so the agent sees the same kind of decisions at a CPU-sized cost.
    "cpu": Preset(
        name="cpu", max_hidden=6, widths=tuple(range(8, 65, 8)),
        train_epochs=60, train_batch=64, finetune_epochs=10, finetune_batch=32, patience=3,
        feature_width=64, activation_sample=500, max_rows=3000,
    ),
    # The paper's architecture space (widths 100..1000, up to 6 hidden layers, same layer types) with schedules a
    # 2-core CPU can afford: 30 training epochs, fine-tuning up to 10 epochs with patience 3, a 500-row activation
    # sample, datasets capped at 1000 rows. For evaluating agents on networks of the paper's widths; networks train
    # and fine-tune at their own width buckets (`nets.bucket_width`), not padded to 1000.
    "wide": Preset(
        name="wide", max_hidden=6, widths=tuple(range(100, 1001, 100)),
        train_epochs=30, train_batch=64, finetune_epochs=10, finetune_batch=32, patience=3,
        feature_width=1000, activation_sample=500, max_rows=1000,
    ),
    # Beyond the paper, for training one agent on networks of many sizes: widths on a doubling ladder 8..256 (each
    # layer draws its own, so most networks have a layer wider than the 64 map columns, seen through evenly spaced
    # neurons), the cpu preset's fine-tuning and activation sample, 40 training epochs and datasets capped at 1000
    # rows so that the wider fine-tunes fit a 2-core budget. Networks run at their own width buckets.
    "mixed": Preset(
        name="mixed", max_hidden=6, widths=(8, 16, 32, 64, 128, 256),
        train_epochs=40, train_batch=64, finetune_epochs=10, finetune_batch=32, patience=3,
        feature_width=64, activation_sample=500, max_rows=1000,
    ),
    # For tests: seconds, not minutes. Up to 3 hidden layers of width 4..16.
    "tiny": Preset(
        name="tiny", max_hidden=3, widths=(4, 8, 12, 16),
        train_epochs=3, train_batch=32, finetune_epochs=2, finetune_batch=32, patience=1,
        feature_width=16, activation_sample=64, max_rows=300,
    ),
}


def get_preset(preset: str | Preset) -> Preset:
    """Returns the preset of that name (or the preset itself); a clear error lists the known names."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}") from None
