"""neon_jax: NEON (Hirsch & Katz, 2022) — reinforcement-learning pruning of dense networks — in JAX."""

from neon_jax.presets import PRESETS, Preset, get_preset

__version__ = "0.1.0"
__all__ = ["PRESETS", "Preset", "get_preset", "prune", "__version__"]


def prune(*args, **kwargs):
    """Prunes a network on a dataset with a trained agent; see `neon_jax.jobs.prune.prune`."""
    from neon_jax.jobs.prune import prune as _prune

    return _prune(*args, **kwargs)
