"""The original's actor, critic and A2C update in PyTorch (neon_spec.md §6), for side-by-side timing.

Architecture (§6.1, src/Model/Actor.py, Critic.py): six branches over the state — network topology
(Conv2d 1->50 over the 8 columns, BN2d, ReLU, 50->5, BN2d, ReLU, 5->2, BN2d, ReLU), network activation and weight
statistics (Conv2d 8->100 over the F neurons of a row, BN2d, ReLU, 100->10, BN2d, ReLU, 10->5, BN2d, ReLU), layer
topology (8->10->10->10, ReLU), layer activation and weight statistics (8F->500->500->20, ReLU) — concatenated
(170 at R = 10) and a 300-300 head to 5 logits (actor) or 1 value (critic). BatchNorm2d always in train mode at
batch size 1, so every observation is a separate forward pass, as the original.

Update (§6.2) of one episode: the T observations' logits and values, Monte-Carlo returns (gamma 0.99, no
bootstrap), advantage = return - value, actor loss -mean_t log pi(a_t) stopgrad(A_t) (per-step advantage, the
neon_jax default; the original's broadcast only changes a mean), critic loss mean_t A_t^2, one Adam(1e-3) step for
each network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

OBS_KEYS = ("net_topology", "net_activations", "net_weights", "layer_topology", "layer_activations",
            "layer_weights")


def _row_branch(in_channels: int, width: int, features) -> nn.Sequential:
    layers, c = [], in_channels
    for i, f in enumerate(features):
        layers += [nn.Conv2d(c, f, (1, width) if i == 0 else 1), nn.BatchNorm2d(f), nn.ReLU()]
        c = f
    return nn.Sequential(*layers)


def _mlp(sizes) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class AgentNet(nn.Module):
    """Actor (`outputs` = 5) or critic (`outputs` = 1) for maps of R rows and F neurons."""

    def __init__(self, rows: int, width: int, outputs: int):
        super().__init__()
        self.net_topology = _row_branch(1, 8, (50, 5, 2))
        self.net_activations = _row_branch(8, width, (100, 10, 5))
        self.net_weights = _row_branch(8, width, (100, 10, 5))
        self.layer_topology = _mlp((8, 10, 10, 10))
        self.layer_activations = _mlp((8 * width, 500, 500, 20))
        self.layer_weights = _mlp((8 * width, 500, 500, 20))
        trunk = 2 * rows + 5 * rows + 5 * rows + 10 + 20 + 20
        self.head = _mlp((trunk, 300, 300))
        self.out = nn.Linear(300, outputs)

    def forward(self, obs: dict) -> torch.Tensor:
        """One observation (no batch axis: net_topology (R, 8), net maps (8, R, F), layer maps (8,), (8, F))."""
        feats = torch.cat([
            self.net_topology(obs["net_topology"][None, None]).flatten(),
            self.net_activations(obs["net_activations"][None]).flatten(),
            self.net_weights(obs["net_weights"][None]).flatten(),
            self.layer_topology(obs["layer_topology"]),
            self.layer_activations(obs["layer_activations"].flatten()),
            self.layer_weights(obs["layer_weights"].flatten()),
        ])
        return self.out(self.head(feats))


def monte_carlo_returns(rewards: np.ndarray, gamma: float = 0.99) -> np.ndarray:
    out, g = np.zeros(len(rewards), np.float32), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


class TorchA2C:
    """Actor, critic and their Adam optimisers; `update_episode` is one update of the original's schedule."""

    def __init__(self, rows: int, width: int, lr: float = 1e-3, gamma: float = 0.99, seed: int = 0,
                 device: str = "cpu"):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.actor = AgentNet(rows, width, 5).to(self.device).train()
        self.critic = AgentNet(rows, width, 1).to(self.device).train()
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.gamma = gamma

    def num_params(self) -> tuple[int, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())
        return count(self.actor), count(self.critic)

    def losses(self, observations: list[dict], actions, rewards):
        """(actor_loss, critic_loss) of one episode; every observation a separate forward (BN2d at batch 1)."""
        log_pi = torch.stack([torch.log_softmax(self.actor(o), -1)[a] for o, a in zip(observations, actions)])
        values = torch.stack([self.critic(o)[0] for o in observations])
        returns = torch.as_tensor(monte_carlo_returns(np.asarray(rewards, np.float32), self.gamma), device=self.device)
        advantages = returns - values
        return -(log_pi * advantages.detach()).mean(), (advantages ** 2).mean()

    def update_episode(self, observations, actions, rewards):
        """One Adam step for each network on one episode (the original's schedule, §6.2)."""
        actor_loss, critic_loss = self.losses(observations, actions, rewards)
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        return float(actor_loss.detach()), float(critic_loss.detach())

    def update_batch(self, episodes):
        """One Adam step for each network on the mean loss of several episodes (neon_jax's batched update)."""
        pairs = [self.losses(*e) for e in episodes]
        actor_loss = torch.stack([a for a, _ in pairs]).mean()
        critic_loss = torch.stack([c for _, c in pairs]).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        return float(actor_loss.detach()), float(critic_loss.detach())


def observations_from_arrays(obs_arrays: dict, b: int, device: str = "cpu") -> list[dict]:
    """Episode `b` of batched observation arrays {key: (B, T, ...)} as a list of T torch observation dicts."""
    t_len = next(iter(obs_arrays.values())).shape[1]
    tensors = {k: torch.as_tensor(np.asarray(v[b], np.float32), device=device) for k, v in obs_arrays.items()}
    return [{k: tensors[k][t] for k in OBS_KEYS} for t in range(t_len)]
