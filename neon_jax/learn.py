"""Training the agent across datasets, and running an agent over a pool of networks: the shell around agent.py.

`train_agent` is the original's loop (neon_spec.md §1.3) made batched: the training networks are shuffled
once and served round-robin, B episodes per jitted iteration; the first min(2N, 500) episodes act at random;
the default length is the original's M = 10 N + W episodes. Every episode is logged to CSV, checkpoints are
written atomically and a run resumes from its last checkpoint. `run_agent` evaluates a trained (or random)
agent on a pool and reports what the paper reports, on the test split.
"""

from __future__ import annotations

import csv
import functools
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from neon_jax import agent as agent_lib
from neon_jax import nets, train
from neon_jax.env import EnvConfig, NeonEnv
from neon_jax.pool import EnvPool
from neon_jax.presets import Preset

LOG_FIELDS = ("episode", "dataset", "network", "warmup", "return", "compression", "val_acc_change", "steps",
              "keep_fraction_of_actions", "actor_loss", "critic_loss", "seconds")


def default_episodes(n_networks: int) -> int:
    """The original's episode count M = 10 N + W (its stopping rule is vacuous, §12 A1)."""
    return 10 * n_networks + agent_lib.warmup_episodes(n_networks)


def train_agent(pool: EnvPool, preset: Preset, env_config: EnvConfig, agent_config: agent_lib.AgentConfig,
                out_dir, episodes: int | None = None, seed: int = 0, checkpoint_every: int = 10,
                progress: bool = True, max_seconds: float | None = None) -> tuple[agent_lib.Agent, agent_lib.AgentState]:
    """Trains an agent on every network of `pool`; resumes from ``out_dir/checkpoint`` if present.

    Writes ``out_dir/log.csv`` (one row per episode), ``out_dir/checkpoint.{npz,json}`` (every
    `checkpoint_every` iterations and at the end) and ``out_dir/run.json`` (settings). Stops after `episodes`
    (default `default_episodes(len(pool))`) or `max_seconds` of training, whichever comes first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(pool)
    episodes = default_episodes(n) if episodes is None else int(episodes)
    warmup = agent_lib.warmup_episodes(n)
    ckpt = out / "checkpoint"
    agent = agent_lib.Agent(agent_config, preset)
    settings = {"preset": preset.name, "env": dataclasses.asdict(env_config), "agent": dataclasses.asdict(agent_config),
                "tau": pool.tau, "networks": n, "datasets": pool.datasets, "episodes": episodes,
                "warmup_episodes": warmup, "seed": seed, "dims": dataclasses.asdict(pool.dims)}
    if ckpt.with_suffix(".json").exists():
        loaded_agent, state, meta = agent_lib.load_checkpoint(ckpt)
        if (meta.get("settings", {}).get("env") != settings["env"]
                or dataclasses.asdict(loaded_agent.config) != settings["agent"]):
            raise ValueError(f"{ckpt}: the checkpoint was trained with other settings; use another --out")
        agent = loaded_agent
    else:
        state = agent.init(jax.random.PRNGKey(seed))
    (out / "run.json").write_text(json.dumps(settings, indent=1))
    env = NeonEnv(env_config, pool.dims, preset)
    iteration = agent_lib.make_train_iteration(env, agent)
    order = np.random.default_rng(seed).permutation(n)  # shuffled once, then round-robin (§1.3)
    batch = agent_config.batch_size
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    start = time.perf_counter()
    done = int(state.episodes)
    with open(log_path, "a", newline="") as fh, tqdm(total=episodes, initial=min(done, episodes), unit="episode",
                                                     desc="train-agent", disable=not progress) as bar:
        writer = csv.DictWriter(fh, LOG_FIELDS)
        if new_log:
            writer.writeheader()
        iters = 0
        while done < episodes:
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
            idx = order[(done + np.arange(batch)) % n]
            key = jax.random.fold_in(jax.random.PRNGKey(seed + 1), done)
            t0 = time.perf_counter()
            state, metrics = iteration(state, pool.batch(idx), key, jnp.bool_(done < warmup))
            metrics = jax.device_get(metrics)
            seconds = time.perf_counter() - t0
            for b, i in enumerate(idx):
                writer.writerow({
                    "episode": done + b, "dataset": pool.names[i][0], "network": pool.names[i][1],
                    "warmup": int(done + b < warmup), "return": float(metrics["return"][b]),
                    "compression": float(metrics["compression"][b]),
                    "val_acc_change": float(metrics["acc_change"][b]), "steps": int(metrics["steps"][b]),
                    "keep_fraction_of_actions": float(metrics["keep_actions"][b]),
                    "actor_loss": float(metrics["actor_loss"]), "critic_loss": float(metrics["critic_loss"]),
                    "seconds": seconds / batch})
            fh.flush()
            done = int(state.episodes)
            iters += 1
            bar.update(min(done, episodes) - bar.n)
            bar.set_postfix(ret=f"{np.mean(metrics['return']):.3g}", comp=f"{np.mean(metrics['compression']):.2f}")
            if iters % checkpoint_every == 0:
                agent_lib.save_checkpoint(ckpt, state, agent.config, preset, {"settings": settings})
    agent_lib.save_checkpoint(ckpt, state, agent.config, preset,
                              {"settings": settings, "train_seconds_this_run": time.perf_counter() - start})
    return agent, state


def run_agent(agent: agent_lib.Agent, actor_params, pool: EnvPool, preset: Preset, env_config: EnvConfig,
              seed: int = 0, greedy: bool = False, random_actions: bool = False, batch_size: int = 32,
              progress: bool = False, networks: list | None = None) -> list[dict]:
    """Prunes every network of `pool` with the agent (no learning); one row per network.

    Actions are sampled from the policy by default, as the original evaluates (§1.4); `greedy` takes the
    argmax; `random_actions` is the random agent of the same environment. Accuracies are on the TEST split.
    If `networks` is a list, the pruned (variables, arch) of every network is appended to it (host arrays).
    """
    batch_size = max(1, min(batch_size, len(pool)))
    env = NeonEnv(env_config, pool.dims, preset)
    evaluate = _evaluator(env, agent)
    test_acc = _test_accuracy_fn(env.trainer)
    rows = []
    n = len(pool)
    for start in tqdm(range(0, n, batch_size), desc="prune", disable=not progress):
        idx = np.arange(start, min(start + batch_size, n))
        padded = np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])]) if len(idx) < batch_size else idx
        params = pool.batch(padded)
        t0 = time.perf_counter()
        final, traj = evaluate(actor_params, params, jax.random.fold_in(jax.random.PRNGKey(seed), start),
                               jnp.bool_(greedy), jnp.bool_(random_actions))
        jax.block_until_ready(final)
        seconds = time.perf_counter() - t0
        acc_before = np.asarray(test_acc(params.variables, params.arch, params.test))
        acc_after = np.asarray(test_acc(final.variables, final.arch, params.test))
        p0 = np.asarray(nets.count_params(params.arch))
        p1 = np.asarray(nets.count_params(final.arch))
        w0, w1 = np.asarray(params.arch.widths), np.asarray(final.arch.widths)
        depth = np.asarray(params.arch.depth)
        actions = np.asarray(traj["action"])
        valid = np.asarray(traj["valid"])
        if networks is not None:
            host = jax.device_get((final.variables, final.arch))
            networks += [jax.tree_util.tree_map(lambda a: a[b], host) for b in range(len(idx))]
        for b, i in enumerate(idx):
            d = int(depth[b])
            rows.append({
                "dataset": pool.names[i][0], "network": pool.names[i][1],
                "widths_before": "-".join(map(str, w0[b, :d])), "widths_after": "-".join(map(str, w1[b, :d])),
                "params_before": int(p0[b]), "params_after": int(p1[b]), "compression": float(p0[b] / p1[b]),
                "test_acc_before": float(acc_before[b]), "test_acc_after": float(acc_after[b]),
                "acc_change_points": float(100 * (acc_after[b] - acc_before[b])),
                "val_acc0": float(final.acc0[b]), "val_acc": float(final.acc[b]),
                "return": float((np.asarray(traj["reward"])[b] * valid[b]).sum()),
                "actions": "".join(str(a) for a, v in zip(actions[b], valid[b]) if v),
                "seconds": seconds / len(padded),
            })
    return rows


_EVALUATORS: dict = {}


def _evaluator(env: NeonEnv, agent: agent_lib.Agent):
    key = (env.config, env.dims, env.preset, agent.config)
    if key not in _EVALUATORS:  # one compile per shape and setting for the whole process
        _EVALUATORS[key] = agent_lib.make_evaluate(env, agent)
    return _EVALUATORS[key]


@functools.lru_cache(maxsize=None)
def _test_accuracy_fn(env_trainer):
    trainer = env_trainer

    @jax.jit
    def accuracy(variables, archs, split):
        return jax.vmap(lambda v, a, s: trainer.accuracy_one(v, a, 0, jax.tree_util.tree_map(lambda x: x[None], s)))(
            variables, archs, split)

    return accuracy


def summarise(rows: list[dict]) -> dict:
    """Mean / median compression and accuracy change, and the fell / held / rose counts (as the paper)."""
    if not rows:
        return {}
    comp = np.array([r["compression"] for r in rows])
    dacc = np.array([r["acc_change_points"] for r in rows])
    return {"networks": len(rows), "compression_mean": float(comp.mean()), "compression_median": float(np.median(comp)),
            "acc_change_mean": float(dacc.mean()), "acc_change_median": float(np.median(dacc)),
            "acc_fell": int((dacc < -1e-9).sum()), "acc_held": int((np.abs(dacc) <= 1e-9).sum()),
            "acc_rose": int((dacc > 1e-9).sum())}
