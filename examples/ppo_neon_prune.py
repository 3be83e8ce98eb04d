"""PPO in PureJaxRL's style (`ppo.py`: one `Transition`, one roll-out scan, one update, composed in `make_train`)
driving ``gymnax.make("NeonPrune-v0")`` through gymnax's own wrappers.

    python examples/ppo_neon_prune.py --updates 40 --out benchmarks/results/gymnax_ppo

The whole training is one jitted ``train(key)``. The environment is the shipped default pool (scikit-learn's iris,
wine and breast_cancer, 4 cpu-preset networks each; `neon_jax.gymnax.default_pool`), or ``--zoo``. Written out:
``ppo.json`` (settings, per-update means of the finished episodes' return, compression and accuracy change) and
``ppo.png`` (the curves). The differences from PureJaxRL's `ppo.py`: no distrax (a categorical from logits by
hand), the metrics of finished episodes averaged per update inside the program (no callback).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper

import neon_jax.gymnax  # noqa: F401  (registers NeonPrune-v0)


class ActorCritic(nn.Module):
    """Two tanh MLPs (PureJaxRL's): policy logits and a value."""

    action_dim: int
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        init = lambda scale: nn.initializers.orthogonal(scale)  # noqa: E731
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=init(np.sqrt(2)))(x))
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=init(np.sqrt(2)))(a))
        logits = nn.Dense(self.action_dim, kernel_init=init(0.01))(a)
        c = nn.tanh(nn.Dense(self.hidden, kernel_init=init(np.sqrt(2)))(x))
        c = nn.tanh(nn.Dense(self.hidden, kernel_init=init(np.sqrt(2)))(c))
        return logits, nn.Dense(1, kernel_init=init(1.0))(c)[..., 0]


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    info: dict


def make_train(config: dict):
    """PureJaxRL's `make_train`: the environment and the network from `config`, returns ``train(key)``."""
    kwargs = {k: config[k] for k in ("tau", "passes", "cut", "reward") if config.get(k) is not None}
    if config.get("zoo"):
        kwargs["zoo"] = config["zoo"]
    env, env_params = gymnax.make("NeonPrune-v0", **kwargs)
    env = LogWrapper(FlattenObservationWrapper(env))
    n_envs, n_steps = config["NUM_ENVS"], config["NUM_STEPS"]
    minibatch = n_envs * n_steps // config["NUM_MINIBATCHES"]
    network = ActorCritic(env.action_space(env_params).n)
    tx = optax.chain(optax.clip_by_global_norm(config["MAX_GRAD_NORM"]), optax.adam(config["LR"], eps=1e-5))

    def policy(params, obs):
        logits, value = network.apply(params, obs)
        return jax.nn.log_softmax(logits), value

    def train(key):
        key, k_init, k_reset = jax.random.split(key, 3)
        obs_dim = env.observation_space(env_params).shape[0]
        state = TrainState.create(apply_fn=network.apply, params=network.init(k_init, jnp.zeros(obs_dim)), tx=tx)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, n_envs), env_params)

        def env_step(carry, key):
            state, env_state, obs = carry
            k_act, k_step = jax.random.split(key)
            logp, value = policy(state.params, obs)
            action = jax.random.categorical(k_act, logp)
            log_prob = jnp.take_along_axis(logp, action[:, None], 1)[:, 0]
            obs2, env_state, reward, term, trunc, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_step, n_envs), env_state, action, env_params)
            t = Transition(term | trunc, action, value, reward, log_prob, obs, info)
            return (state, env_state, obs2), t

        def gae(traj: Transition, last_value):
            def back(carry, t):
                adv, next_value = carry
                delta = t.reward + config["GAMMA"] * next_value * (1 - t.done) - t.value
                adv = delta + config["GAMMA"] * config["GAE_LAMBDA"] * (1 - t.done) * adv
                return (adv, t.value), adv

            _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), traj, reverse=True)
            return adv, adv + traj.value

        def loss_fn(params, t: Transition, adv, targets):
            logp, value = policy(params, t.obs)
            log_prob = jnp.take_along_axis(logp, t.action[:, None], 1)[:, 0]
            v_clip = t.value + (value - t.value).clip(-config["CLIP_EPS"], config["CLIP_EPS"])
            v_loss = 0.5 * jnp.maximum((value - targets) ** 2, (v_clip - targets) ** 2).mean()
            ratio = jnp.exp(log_prob - t.log_prob)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg = -jnp.minimum(ratio * adv, ratio.clip(1 - config["CLIP_EPS"], 1 + config["CLIP_EPS"]) * adv).mean()
            entropy = -(jnp.exp(logp) * logp).sum(-1).mean()
            return pg + config["VF_COEF"] * v_loss - config["ENT_COEF"] * entropy, (v_loss, pg, entropy)

        def update(carry, key):
            state, env_state, obs = carry
            k_roll, k_epochs = jax.random.split(key)
            (state, env_state, obs), traj = jax.lax.scan(env_step, (state, env_state, obs),
                                                         jax.random.split(k_roll, n_steps))
            adv, targets = gae(traj, policy(state.params, obs)[1])

            def epoch(state, key):
                perm = jax.random.permutation(key, n_envs * n_steps)
                flat = jax.tree_util.tree_map(lambda a: a.reshape((n_envs * n_steps,) + a.shape[2:]),
                                              (traj, adv, targets))
                batches = jax.tree_util.tree_map(
                    lambda a: a[perm].reshape((config["NUM_MINIBATCHES"], minibatch) + a.shape[1:]), flat)

                def minibatch_step(state, batch):
                    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, *batch)
                    return state.apply_gradients(grads=grads), aux

                return jax.lax.scan(minibatch_step, state, batches)

            state, losses = jax.lax.scan(epoch, state, jax.random.split(k_epochs, config["UPDATE_EPOCHS"]))
            ended = traj.info["returned_episode"]
            mean = lambda x: jnp.where(ended, x, 0).sum() / jnp.maximum(ended.sum(), 1)  # noqa: E731
            metrics = {"episodes": ended.sum(), "return": mean(traj.info["returned_episode_returns"]),
                       "compression": mean(traj.info["compression"]),
                       "acc_change_points": mean(traj.info["acc_change_points"]),
                       "length": mean(traj.info["returned_episode_lengths"]),
                       "value_loss": losses[0].mean(), "entropy": losses[2].mean()}
            return (state, env_state, obs), metrics

        _, metrics = jax.lax.scan(update, (state, env_state, obs), jax.random.split(key, config["NUM_UPDATES"]))
        return metrics

    return train


CONFIG = {"LR": 3e-4, "NUM_ENVS": 16, "NUM_STEPS": 16, "UPDATE_EPOCHS": 4, "NUM_MINIBATCHES": 4, "GAMMA": 0.99,
          "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2, "ENT_COEF": 0.01, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=40, help="PPO updates (each NUM_ENVS x NUM_STEPS steps)")
    parser.add_argument("--envs", type=int, default=CONFIG["NUM_ENVS"], help="environments stepped in parallel")
    parser.add_argument("--steps", type=int, default=CONFIG["NUM_STEPS"], help="steps per environment per update")
    parser.add_argument("--tau", type=float, default=5.0, help="tolerance in accuracy points")
    parser.add_argument("--passes", type=int, default=4, help="visits of every hidden layer per episode")
    parser.add_argument("--cut", default="reinit", help="reinit (the paper's) or keep_best")
    parser.add_argument("--reward", default="neon", help="neon (the paper's cubic reward) or neon_hold, ...")
    parser.add_argument("--zoo", default=None, help="zoo folder (default: the shipped default pool)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for ppo.json and ppo.png (refuses to overwrite)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else None
    if out is not None and (out / "ppo.json").exists():
        raise SystemExit(f"{out / 'ppo.json'} exists; choose another --out")
    config = {**CONFIG, "NUM_UPDATES": args.updates, "NUM_ENVS": args.envs, "NUM_STEPS": args.steps,
              "tau": args.tau, "passes": args.passes, "cut": args.cut, "reward": args.reward, "zoo": args.zoo}
    t0 = time.perf_counter()
    train = jax.jit(make_train(config)).lower(jax.random.PRNGKey(args.seed)).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = jax.device_get(jax.block_until_ready(train(jax.random.PRNGKey(args.seed))))
    run_s = time.perf_counter() - t0
    curves = {k: np.asarray(v).tolist() for k, v in metrics.items()}
    steps = args.envs * args.steps
    record = {"config": config, "env_steps": steps * args.updates, "compile_s": compile_s, "run_s": run_s,
              "env_steps_per_s": steps * args.updates / run_s, "per_update": curves}
    for i in range(0, args.updates, max(1, args.updates // 10)):
        print(f"update {i:4d}: episodes {curves['episodes'][i]:3d}  return {curves['return'][i]:8.3f}  "
              f"compression x{curves['compression'][i]:.2f}  acc change {curves['acc_change_points'][i]:+.2f}")
    print(f"{steps * args.updates} environment steps in {run_s:.0f} s (+{compile_s:.0f} s compiling)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ppo.json").write_text(json.dumps(record, indent=1) + "\n")
        plot(curves, out / "ppo.png")
        print(f"wrote {out / 'ppo.json'} and {out / 'ppo.png'}")


def plot(curves: dict, path: Path) -> None:
    """Return, compression and accuracy change of the finished episodes, per update."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.2))
    for ax, key, label in zip(fig.subplots(1, 3), ("return", "compression", "acc_change_points"),
                              ("episode return (reward x 1/40^3)", "compression (x)", "val. accuracy change (pts)")):
        y = np.asarray(curves[key], float)
        y[np.asarray(curves["episodes"]) == 0] = np.nan
        ax.plot(y, lw=0.8)
        ax.set_xlabel("PPO update")
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
