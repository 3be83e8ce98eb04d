"""Masked dense networks: the NEON architecture space at fixed padded shapes.

Every network of a compiled program has the same array shapes, with neuron masks for the rest; the padded width is
the networks' bucket (`bucket_width`), not the preset's widest. Its modules: `shapes` (padded dims, the width
ladder, grouping networks into programs: the one home of shape policy), `arch` (one network's layout, sampling,
counting), `layout` (which arrays belong to which layer, and what a fine-tune may train), `model` (the masked flax
module, initialisation, speed hints), `cuts` (narrowing a hidden layer), `dense` (compaction to a plain network
with its real widths, and back).
"""

from neon_jax.nets.arch import (
                                 Arch,
                                 count_params,
                                 fan_ins,
                                 fit_arch,
                                 layer_input_masks,
                                 make_arch,
                                 resize_width,
                                 sample_arch,
)
from neon_jax.nets.cuts import CUTS, cut, largest_norm_mask, narrow, prefix_mask, take_rebuilt
from neon_jax.nets.dense import DenseNetwork, compact, expand, load_dense_network, relayout, repad, save_dense_network
from neon_jax.nets.layout import (
                                 Trainable,
                                 batchnorm,
                                 batchnorm_name,
                                 bias,
                                 is_batchnorm,
                                 kernel,
                                 kernel_names,
                                 kernels,
                                 linear_name,
                                 param_layer,
                                 param_mask,
                                 real_weight_masks,
                                 trainable_rows,
                                 with_kernels,
                                 zero_dead,
)
from neon_jax.nets.model import (
                                 BN_EPS,
                                 BN_MOMENTUM,
                                 NEG_LOGIT,
                                 Hints,
                                 MaskedBatchNorm,
                                 MaskedMLP,
                                 batchnorm_affine,
                                 dropout_keep_mask,
                                 init_network,
                                 init_population,
                                 make_model,
                                 torch_linear_init,
)
from neon_jax.nets.shapes import (
                                 NetDims,
                                 bucket_width,
                                 carried_widths,
                                 check_fits,
                                 common_dims,
                                 fit_width,
                                 layer_buckets,
                                 shape_groups,
                                 training_groups,
                                 widest_layers,
                                 width_buckets,
                                 with_layer_widths,
)

__all__ = [
    "Arch", "BN_EPS", "BN_MOMENTUM", "CUTS", "DenseNetwork", "Hints", "MaskedBatchNorm", "MaskedMLP", "NEG_LOGIT",
    "NetDims", "Trainable", "batchnorm", "batchnorm_affine", "batchnorm_name", "bias", "bucket_width", "compact",
    "count_params", "fit_arch", "widest_layers", "carried_widths", "check_fits", "common_dims", "fit_width", "layer_buckets",
    "shape_groups", "training_groups", "width_buckets", "with_layer_widths",
    "cut", "dropout_keep_mask", "expand", "fan_ins", "init_network", "init_population", "is_batchnorm", "kernel",
    "kernel_names", "kernels", "largest_norm_mask", "layer_input_masks", "linear_name", "load_dense_network", "make_arch",
    "make_model", "narrow", "param_layer", "param_mask", "prefix_mask", "real_weight_masks", "relayout", "repad", "resize_width",
    "sample_arch", "save_dense_network", "take_rebuilt", "torch_linear_init", "trainable_rows", "with_kernels",
    "zero_dead",
]
