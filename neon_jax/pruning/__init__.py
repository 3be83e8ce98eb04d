"""Pruning methods besides NEON's agent, on the same networks, data splits, fine-tuning and parameter counting
(neon_spec.md §9), each one small class behind one protocol (`method.PruningMethod`) and a registry:

    method       the protocol, `Context`, `register`, `get_method`
    masks        the pure pieces the one-shot pruners share (ranks, keep masks, counting)
    random       the paper's random agent and the b97fb33 one without per-step fine-tuning
    magnitude    unstructured global magnitude pruning
    structured   neuron pruning by the L1 norm of incoming weights
    lap          lookahead pruning (Park et al. 2020)
    amc          AMC (He et al. 2018; the search is `neon_jax.amc`)
    admm         ADMM pruning (the algorithm is `neon_jax.admm`)
    program      one vmapped prune-and-fine-tune program for any of them; `run_baseline` over a pool

A new method is one new file here: its class (check, arrays, prune, counting) and `register(...)`, imported below.
"""

# the registration order is the listing order (BASELINES, evaluation grids)
from neon_jax.pruning import random  # noqa: I001
from neon_jax.pruning import magnitude, structured, lap, amc, admm
from neon_jax.pruning.admm import ADMM_ALPHAS
from neon_jax.pruning.amc import AMC_PRESERVE
from neon_jax.pruning.lap import LAP_RATIO_HIDDEN, LAP_RATIO_OUTPUT, LAP_STEPS, batchnorm_factors, lap_ratios, lap_scores
from neon_jax.pruning.magnitude import MAGNITUDE_FRACTIONS, magnitude_masks
from neon_jax.pruning.masks import (apply_kernel_masks, count_unstructured, layerwise_masks, smallest_mask,
                                    weight_mask_tree)
from neon_jax.pruning.method import METHODS, Context, PruningMethod, get_method, register
from neon_jax.pruning.program import (check_setting, default_settings, outcome, program, run_baseline,
                                      setting_arrays)
from neon_jax.pruning.structured import STRUCTURED_RATIOS, structured_arch, structured_remove_table

BASELINES: dict[str, str] = {name: m.description for name, m in METHODS.items()}
UNSTRUCTURED = tuple(name for name, m in METHODS.items() if m.counting == "unstructured")
USES_PASSES = tuple(name for name, m in METHODS.items() if m.uses_passes)  # the one-shot pruners ignore `passes`
DEFAULT_SETTING = {name: m.default for name, m in METHODS.items()}

__all__ = [
    "ADMM_ALPHAS", "AMC_PRESERVE", "BASELINES", "DEFAULT_SETTING", "LAP_RATIO_HIDDEN", "LAP_RATIO_OUTPUT", "LAP_STEPS",
    "MAGNITUDE_FRACTIONS", "METHODS", "STRUCTURED_RATIOS", "UNSTRUCTURED", "USES_PASSES", "Context", "PruningMethod",
    "admm", "amc", "apply_kernel_masks", "batchnorm_factors", "check_setting", "count_unstructured",
    "default_settings", "get_method", "lap", "lap_ratios", "lap_scores", "layerwise_masks", "magnitude",
    "magnitude_masks", "outcome", "program", "random", "register", "run_baseline", "setting_arrays",
    "smallest_mask", "structured", "structured_arch", "structured_remove_table", "weight_mask_tree",
]
