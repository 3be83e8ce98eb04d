"""PyTorch reference of the original NEON base networks (neon_spec.md §7), for benchmarks and parity checks."""

from benchmarks.torch_reference.base_training import (
    check_eval_parity, check_train_loss_parity, to_torch_sequential, train_torch,
)

__all__ = ["to_torch_sequential", "train_torch", "check_eval_parity", "check_train_loss_parity"]
