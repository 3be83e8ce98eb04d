"""AMC's agent: DDPG (actor and critic 300-300, their targets, Adam, the moving-average reward baseline) and its
replay buffer, as plain parameter dicts (kernels (in, out), as flax; PyTorch keeps (out, in))."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from neon_jax.amc.config import STATE_SIZE, AMCConfig


def _dense(key, n_in, n_out, bound=None, fanin_out=False):
    """PyTorch Linear init: bias U(+-1/sqrt(n_in)); weight U(+-bound), U(+-1/sqrt(n_out)) for AMC's
    `fanin_init` (it reads size[0] of a PyTorch (out, in) weight), else PyTorch's U(+-1/sqrt(n_in))."""
    kw, kb = jax.random.split(key)
    if bound is None:
        bound = 1.0 / np.sqrt(n_out if fanin_out else n_in)
    b = 1.0 / np.sqrt(n_in)
    return {"w": jax.random.uniform(kw, (n_in, n_out), jnp.float32, -bound, bound),
            "b": jax.random.uniform(kb, (n_out,), jnp.float32, -b, b)}


def init_actor(key, hidden: int, init_w: float = 3e-3) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {"fc1": _dense(k1, STATE_SIZE, hidden, fanin_out=True), "fc2": _dense(k2, hidden, hidden, fanin_out=True),
            "fc3": _dense(k3, hidden, 1, bound=init_w)}


def init_critic(key, hidden: int, init_w: float = 3e-3) -> dict:
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {"fc11": _dense(k1, STATE_SIZE, hidden, fanin_out=True), "fc12": _dense(k2, 1, hidden, fanin_out=True),
            "fc2": _dense(k3, hidden, hidden, fanin_out=True), "fc3": _dense(k4, hidden, 1, bound=init_w)}


def _lin(p, x):
    return x @ p["w"] + p["b"]


def actor_apply(params: dict, s: jax.Array) -> jax.Array:
    """(..., 10) states -> (...,) actions in (0, 1): sigmoid(fc3(relu(fc2(relu(fc1(s))))))."""
    h = jax.nn.relu(_lin(params["fc2"], jax.nn.relu(_lin(params["fc1"], s))))
    return jax.nn.sigmoid(_lin(params["fc3"], h))[..., 0]


def critic_apply(params: dict, s: jax.Array, a: jax.Array) -> jax.Array:
    """(..., 10) states, (...,) actions -> (...,) Q: fc3(relu(fc2(relu(fc11(s) + fc12(a)))))."""
    h = jax.nn.relu(_lin(params["fc11"], s) + _lin(params["fc12"], a[..., None]))
    return _lin(params["fc3"], jax.nn.relu(_lin(params["fc2"], h)))[..., 0]


@struct.dataclass
class DDPGState:
    """Actor, critic, their targets and Adam states, and the reward's moving average (`ma_set`: seen one)."""

    actor: dict
    critic: dict
    actor_target: dict
    critic_target: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    moving_average: jax.Array
    ma_set: jax.Array


def _optimizers(config: AMCConfig):
    return optax.adam(config.lr_actor), optax.adam(config.lr_critic)


def ddpg_init(key: jax.Array, config: AMCConfig) -> DDPGState:
    """A fresh agent; targets start as copies (AMC's hard update)."""
    ka, kc = jax.random.split(key)
    actor, critic = init_actor(ka, config.hidden), init_critic(kc, config.hidden)
    opt_a, opt_c = _optimizers(config)
    return DDPGState(actor=actor, critic=critic, actor_target=actor, critic_target=critic,
                     actor_opt=opt_a.init(actor), critic_opt=opt_c.init(critic), moving_average=jnp.float32(0.0),
                     ma_set=jnp.bool_(False))


def ddpg_update(state: DDPGState, s, a, r, s2, not_done, config: AMCConfig) -> tuple[DDPGState, dict]:
    """One DDPG update on a batch (AMC's `update_policy`).

    Rewards are centred by a moving average of batch means (first batch: its own mean; then
    ``ma += alpha * (mean - ma)``); target ``y = r - ma + discount * not_done * Q'(s2, mu'(s2))``; the critic takes
    one Adam step on the mean squared error, then the actor one on ``-mean Q(s, mu(s))`` (with the updated critic);
    both targets move ``soft_update`` of the way.

    Args:
      s, s2: (N, 10) states; a, r, not_done: (N,) actions, rewards and 1 - done.
    Returns:
      (new state, {"value_loss", "policy_loss"}).
    """
    opt_a, opt_c = _optimizers(config)
    mean = r.mean()
    ma = jnp.where(state.ma_set, state.moving_average + config.moving_alpha * (mean - state.moving_average), mean)
    q_next = critic_apply(state.critic_target, s2, actor_apply(state.actor_target, s2))
    target = jax.lax.stop_gradient(r - ma + config.discount * not_done * q_next)
    value_loss, g_c = jax.value_and_grad(lambda c: ((critic_apply(c, s, a) - target) ** 2).mean())(state.critic)
    upd, critic_opt = opt_c.update(g_c, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, upd)
    policy_loss, g_a = jax.value_and_grad(lambda p: -critic_apply(critic, s, actor_apply(p, s)).mean())(state.actor)
    upd, actor_opt = opt_a.update(g_a, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, upd)
    soft = lambda tgt, src: jax.tree_util.tree_map(
        lambda t, x: t * (1.0 - config.soft_update) + x * config.soft_update, tgt, src)
    new = DDPGState(actor=actor, critic=critic, actor_target=soft(state.actor_target, actor),
                    critic_target=soft(state.critic_target, critic), actor_opt=actor_opt, critic_opt=critic_opt,
                    moving_average=ma, ma_set=jnp.bool_(True))
    return new, {"value_loss": value_loss, "policy_loss": policy_loss}


@struct.dataclass
class Replay:
    """A ring buffer of transitions with a per-network limit (`limit` <= capacity)."""

    s: jax.Array  # (C, 10)
    a: jax.Array  # (C,)
    r: jax.Array  # (C,)
    s2: jax.Array  # (C, 10)
    not_done: jax.Array  # (C,)
    count: jax.Array  # () transitions stored (<= limit)
    ptr: jax.Array  # () next slot
    limit: jax.Array  # () int32


def replay_init(capacity: int, limit) -> Replay:
    z = jnp.zeros((capacity,), jnp.float32)
    return Replay(s=jnp.zeros((capacity, STATE_SIZE)), a=z, r=z, s2=jnp.zeros((capacity, STATE_SIZE)), not_done=z,
                  count=jnp.int32(0), ptr=jnp.int32(0), limit=jnp.asarray(limit, jnp.int32))


def replay_add(rb: Replay, s, a, r, s2, not_done) -> Replay:
    i = rb.ptr
    return rb.replace(s=rb.s.at[i].set(s), a=rb.a.at[i].set(a), r=rb.r.at[i].set(r), s2=rb.s2.at[i].set(s2),
                      not_done=rb.not_done.at[i].set(not_done), count=jnp.minimum(rb.count + 1, rb.limit),
                      ptr=(i + 1) % rb.limit)


def replay_sample(key, rb: Replay, n: int):
    """n indices of filled slots: without replacement once the buffer holds >= n, else with replacement."""
    k1, k2 = jax.random.split(key)
    filled = jnp.arange(rb.a.shape[0]) < rb.count
    _, without = jax.lax.top_k(jnp.where(filled, jax.random.uniform(k1, rb.a.shape), -1.0), n)
    with_ = jax.random.randint(k2, (n,), 0, jnp.maximum(rb.count, 1))
    return jnp.where(rb.count >= n, without, with_)
