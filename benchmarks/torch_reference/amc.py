"""AMC's search as the original runs it (mit-han-lab `amc_env.py` + `lib/agent.py`, neon_spec.md §9), in PyTorch and
NumPy, one network and one episode at a time: the timing reference of `benchmarks/bench_amc.py`.

Per episode, for every Linear in order: the actor's action (random in warm-up, else truncated-normal noise), the
budget wall, the channel count, and a least-squares refit of the Linear (`np.linalg.lstsq` on the calibration
features extracted once with hooks, as the original's sklearn `LinearRegression(fit_intercept=False)`); the
pseudo-pruned network is validated, every transition gets the episode's reward, and one DDPG update follows each
transition after warm-up. The same settings and deviations as `neon_jax.amc` (target without the bias, layers
narrower than the rounding kept whole), so both sides do the same work.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import truncnorm
from torch import nn


def _mlp_actor(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1),
                         nn.Sigmoid())


class _Critic(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.fc11, self.fc12 = nn.Linear(10, hidden), nn.Linear(1, hidden)
        self.fc2, self.fc3 = nn.Linear(hidden, hidden), nn.Linear(hidden, 1)

    def forward(self, s, a):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc11(s) + self.fc12(a)))))


def linear_features(model: nn.Sequential, x: np.ndarray) -> list[tuple[nn.Linear, np.ndarray]]:
    """[(Linear, its eval-mode input features on x)] for every Linear of the network, in order."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    feats = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: feats.__setitem__(i, inp[0].detach().numpy()))
             for i, m in enumerate(linears)]
    model.eval()
    with torch.no_grad():
        model(torch.as_tensor(x, dtype=torch.float32))
    for h in hooks:
        h.remove()
    return [(m, feats[i]) for i, m in enumerate(linears)]


def search(model: nn.Sequential, x_cal: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, preserve: float = 0.2,
           episodes: int = 300, warmup: int = 50, hidden: int = 300, batch: int = 64, lbound: float = 0.1,
           rbound: float = 1.0, channel_round: int = 8, seed: int = 0) -> dict:
    """One AMC search of `model` (restored afterwards). Returns the best reward and the per-episode rewards."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = linear_features(model, x_cal)
    originals = [m.weight.data.clone() for m, _ in layers]
    L = len(layers)
    n_in = np.array([m.in_features for m, _ in layers], float)
    n_out = np.array([m.out_features for m, _ in layers], float)
    flops = n_in * n_out + n_out
    org = flops.sum()
    emb = np.stack([np.arange(L), np.ones(L), n_in, n_out, np.zeros(L), np.ones(L), n_in * n_out], 1)
    lo, hi = emb.min(0), emb.max(0)
    emb = np.where(hi > lo, (emb - lo) / np.where(hi > lo, hi - lo, 1), emb)
    emb = np.concatenate([emb, np.zeros((L, 2)), np.ones((L, 1))], 1).astype(np.float32)
    targets = [f @ w.numpy().T for (_, f), w in zip(layers, originals)]
    order = [np.argsort(-np.abs(w.numpy()).sum(0), kind="stable") for w in originals]
    actor, critic = _mlp_actor(hidden), _Critic(hidden)
    actor_t, critic_t = _mlp_actor(hidden), _Critic(hidden)
    actor_t.load_state_dict(actor.state_dict())
    critic_t.load_state_dict(critic.state_dict())
    opt_a, opt_c = torch.optim.Adam(actor.parameters(), 1e-4), torch.optim.Adam(critic.parameters(), 1e-3)
    cap = 100 * L
    mem = {"s": np.zeros((cap, 10), np.float32), "a": np.zeros(cap, np.float32), "r": np.zeros(cap, np.float32),
           "s2": np.zeros((cap, 10), np.float32), "nd": np.zeros(cap, np.float32)}
    count = ptr = 0
    ma = None
    x_val_t = torch.as_tensor(np.array(x_val, np.float32))
    rewards = []
    for ep in range(episodes):
        in_r = np.full(L, lbound)
        in_r[0] = 1.0
        out_r = np.full(L, lbound)
        out_r[-1] = 1.0
        obs = emb[0].copy()
        obs[8] = (n_in * n_out)[1:].sum() / (n_in * n_out).sum()
        traj = []
        for t in range(L):
            if ep <= warmup:
                a = rng.uniform(lbound, rbound)
            else:
                with torch.no_grad():
                    mu = float(actor(torch.as_tensor(obs)[None])[0, 0])
                delta = 0.5 * 0.95 ** (ep - warmup)
                a = float(truncnorm.rvs((lbound - mu) / delta, (rbound - mu) / delta, loc=mu, scale=delta,
                                        random_state=rng))
            this = (flops[t - 1] * in_r[t - 1] if t > 0 else 0.0) + flops[t] * out_r[t]
            other = sum(flops[i] * in_r[i] * out_r[i] for i in range(L) if i not in (t - 1, t))
            wall = max(min(np.clip(a, 0, 1), (preserve * org - other) / this), in_r[t])
            c = n_in[t]
            d = max(round(c * wall), 1)
            d = int(np.ceil(d / channel_round) * channel_round)
            if d > c:
                d = int(np.floor(c / channel_round) * channel_round)
            m, feat = layers[t]
            if wall < 1.0 and d > 0:
                keep = np.sort(order[t][:d])
                w = np.zeros_like(originals[t].numpy())
                w[:, keep] = np.linalg.lstsq(feat[:, keep], targets[t], rcond=None)[0].T
                m.weight.data = torch.as_tensor(w)
                ratio = d / c
            else:
                ratio = 1.0
            in_r[t] = ratio
            if t > 0:
                out_r[t - 1] = ratio
            last = t == L - 1
            if last:
                nxt = obs.copy()
            else:
                nxt = emb[t + 1].copy()
                nxt[7] = (org - (flops * in_r * out_r).sum()) / org
                nxt[8] = flops[t + 2:].sum() / org
                nxt[9] = ratio
            traj.append((obs, a, nxt, 0.0 if last else 1.0))
            obs = nxt
        model.eval()
        with torch.no_grad():
            acc = float((model(x_val_t).argmax(1).numpy() == y_val).mean())
        reward = -(1.0 - acc) * np.log((flops * in_r * out_r).sum())
        rewards.append(reward)
        for (m, _), w in zip(layers, originals):
            m.weight.data = w.clone()
        for s, a, s2, nd in traj:
            for k, v in (("s", s), ("a", a), ("r", reward), ("s2", s2), ("nd", nd)):
                mem[k][ptr] = v
            ptr, count = (ptr + 1) % cap, min(count + 1, cap)
            if ep <= warmup:
                continue
            idx = rng.choice(count, batch, replace=count < batch)
            s_b, a_b, s2_b = (torch.as_tensor(mem[k][idx]) for k in ("s", "a", "s2"))
            r_b, nd_b = torch.as_tensor(mem["r"][idx]), torch.as_tensor(mem["nd"][idx])
            ma = float(r_b.mean()) if ma is None else ma + 0.5 * (float(r_b.mean()) - ma)
            with torch.no_grad():
                target = (r_b - ma)[:, None] + nd_b[:, None] * critic_t(s2_b, actor_t(s2_b))
            opt_c.zero_grad()
            nn.functional.mse_loss(critic(s_b, a_b[:, None]), target).backward()
            opt_c.step()
            opt_a.zero_grad()
            (-critic(s_b, actor(s_b)).mean()).backward()
            opt_a.step()
            with torch.no_grad():
                for tgt, src in ((actor_t, actor), (critic_t, critic)):
                    for pt, ps in zip(tgt.parameters(), src.parameters()):
                        pt.mul_(0.99).add_(0.01 * ps)
    return {"best_reward": float(np.max(rewards)), "rewards": rewards}
