"""PyTorch reference of the original NEON (neon_spec.md §2, §3, §6, §7), for benchmarks and parity checks.

Submodules: `base_training` (base networks, training, parity checks), `features` (NumPy/SciPy state, no torch),
`env_step` (the environment step and episode), `agent` (the A2C update). Imported lazily, so the torch-free
`features` reference works without torch.
"""

_BASE = ("check_eval_parity", "check_train_loss_parity", "to_torch_sequential", "train_torch")
__all__ = list(_BASE)


def __getattr__(name):
    if name in _BASE:
        from benchmarks.torch_reference import base_training

        return getattr(base_training, name)
    raise AttributeError(name)
