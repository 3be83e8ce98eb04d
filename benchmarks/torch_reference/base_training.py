"""The original NEON base networks in plain PyTorch (neon_spec.md §7): construction, training and parity checks.

The original builds every base network as an ``nn.Sequential`` of, per hidden layer,
``[Dropout(0.5) | BatchNorm1d | nothing] -> Linear -> ReLU | Tanh | Sigmoid``, then ``Linear -> Softmax``, and
trains it with ``CrossEntropyLoss`` applied to the *softmax output* (a double softmax, neon_spec.md §12 B5), Adam
lr 1e-3, batch 64, shuffled minibatches, no early stopping, one network after the other.

`to_torch_sequential` turns a neon_jax `DenseNetwork` (from `neon_jax.nets.compact`) into that Sequential with the
same weights, so the JAX and PyTorch sides of a benchmark start from identical networks. `check_eval_parity` and
`check_train_loss_parity` prove that both sides compute the same function (eval mode) and the same loss and
gradients (train mode, dropout off).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neon_jax.interop import to_torch


def to_torch_sequential(dense_net, dropout_rate: float | None = None) -> nn.Sequential:
    """The original's ``nn.Sequential`` for a NEON base network (ends in Softmax), in TRAIN mode as the original
    trains and pickles it (`neon_jax.interop.to_torch`'s modules and weights); `dropout_rate` overrides every
    Dropout's p."""
    model = to_torch(dense_net)
    if not len(model) or not isinstance(model[-1], nn.Softmax):
        raise ValueError("a NEON base network ends in Softmax")
    if dropout_rate is not None:
        for module in model:
            if isinstance(module, nn.Dropout):
                module.p = float(dropout_rate)
    return model.train()


def train_torch(model: nn.Module, x, y, epochs: int, batch_size: int, lr: float = 1e-3, seed: int = 0,
                device: str | torch.device = "cpu") -> list[float]:
    """Trains one base network as the original does (neon_spec.md §7); returns the mean loss of every epoch.

    Adam(lr) with PyTorch defaults, ``CrossEntropyLoss`` on the Softmax output (double softmax, as the original),
    a fresh ``torch.randperm`` shuffle every epoch (what ``DataLoader(shuffle=True)`` draws), minibatches of
    `batch_size` with the last one partial, batches of a single row skipped (BatchNorm1d cannot train on them),
    ``model.train()`` mode, float32 throughout. The model is updated in place.
    """
    device = torch.device(device)
    model.to(device).train()
    x = torch.as_tensor(np.asarray(x, np.float32), device=device)
    y = torch.as_tensor(np.asarray(y, np.int64), device=device)
    n = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout masks
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    epoch_losses = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(device)
        total, count = torch.zeros((), device=device), 0
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            if idx.shape[0] < 2:
                continue
            optimizer.zero_grad()
            loss = criterion(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.detach()
            count += 1
        epoch_losses.append(total / max(count, 1))
    return [float(v) for v in epoch_losses]  # one host sync at the end, not one per batch


def torch_eval_probs(model: nn.Module, x) -> np.ndarray:
    """Eval-mode Softmax outputs (N, K) as float32 NumPy; restores the model's previous mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(x, np.float32), device=device)).cpu().numpy()
    model.train(was_training)
    return out


def check_eval_parity(model: nn.Module, jax_probs, x, atol: float = 1e-5) -> float:
    """Asserts that the Sequential's eval-mode outputs equal the masked JAX network's softmax outputs.

    Args:
      model: the Sequential from `to_torch_sequential`.
      jax_probs: (N, k) softmax of the masked network's eval-mode logits on `x`, real classes only.
      x: (N, n_features) inputs (real feature columns only).
    Returns:
      The max abs difference (< atol, else AssertionError).
    """
    jax_probs = np.asarray(jax_probs, np.float32)
    probs = torch_eval_probs(model, x)
    if probs.shape != jax_probs.shape:
        raise AssertionError(f"output shapes differ: torch {probs.shape}, jax {jax_probs.shape}")
    diff = float(np.max(np.abs(probs - jax_probs)))
    if not diff < atol:
        raise AssertionError(f"eval outputs differ: max abs diff {diff:.3g} >= {atol}")
    return diff


def check_train_loss_parity(model: nn.Module, jax_loss: float, jax_dense_grads, x, y, rtol: float = 1e-4,
                            atol: float = 1e-6) -> dict:
    """Asserts that one train-mode forward/backward gives the JAX loss and gradients (use dropout p = 0).

    Args:
      model: the Sequential from `to_torch_sequential(..., dropout_rate=0.0)` (BatchNorm uses batch statistics).
      jax_loss: the JAX training loss on the same batch (double softmax, mean over rows).
      jax_dense_grads: the JAX parameter gradients compacted like a network (`neon_jax.nets.compact` applied to
        ``{"params": grads, "batch_stats": any}``): a `DenseNetwork` whose linear / batchnorm entries hold grads.
      x, y: the batch (real feature columns only).
    Returns:
      {"loss_abs_diff", "grad_max_abs_diff"}; AssertionError if they differ beyond rtol / atol.
    """
    device = next(model.parameters()).device
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm buffers move in train mode
    model.train()
    model.zero_grad()
    loss = nn.CrossEntropyLoss()(model(torch.as_tensor(np.asarray(x, np.float32), device=device)),
                                 torch.as_tensor(np.asarray(y, np.int64), device=device))
    loss.backward()
    loss_diff = abs(float(loss.detach()) - float(jax_loss))
    if not loss_diff <= atol + rtol * abs(float(jax_loss)):
        raise AssertionError(f"train losses differ: torch {float(loss.detach())}, jax {float(jax_loss)}")
    pairs = []
    grad_layers = [l for l in jax_dense_grads.layers if l["kind"] in ("linear", "batchnorm")]
    mods = [m for m in model if isinstance(m, (nn.Linear, nn.BatchNorm1d))]
    if len(grad_layers) != len(mods):
        raise AssertionError("the JAX gradients and the Sequential have different layer lists")
    for g, m in zip(grad_layers, mods):
        if isinstance(m, nn.Linear):
            pairs += [(m.weight.grad.cpu().numpy().T, g["kernel"]), (m.bias.grad.cpu().numpy(), g["bias"])]
        else:
            pairs += [(m.weight.grad.cpu().numpy(), g["scale"]), (m.bias.grad.cpu().numpy(), g["bias"])]
    worst = 0.0
    for t, j in pairs:
        j = np.asarray(j, np.float32)
        worst = max(worst, float(np.max(np.abs(t - j))) if t.size else 0.0)
        if not np.allclose(t, j, rtol=rtol, atol=atol):
            raise AssertionError(f"gradients differ: max abs diff {float(np.max(np.abs(t - j))):.3g}")
    model.zero_grad()
    model.load_state_dict(state)
    return {"loss_abs_diff": loss_diff, "grad_max_abs_diff": worst}
