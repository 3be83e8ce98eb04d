"""Training the agent across datasets, and running an agent over a pool of networks: the shell around agent.py.

`train_agent` is the original's loop (neon_spec.md §1.3) made batched: the training networks are shuffled
once and served round-robin, B episodes per jitted iteration; the first min(2N, 500) episodes act at random;
the default length is the original's M = 10 N + W episodes. Every episode is logged to CSV, checkpoints are
written atomically and a run resumes from its last checkpoint. `run_agent` prunes a pool with a trained (or
the random) policy through `neon_jax.runner` and reports what the paper reports, on the test split.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from neon_jax import agent as agent_lib
from neon_jax import nets, programs, runner, sharding
from neon_jax.env import EnvConfig, NeonEnv
from neon_jax.policies import random_policy
from neon_jax.pool import EnvPool
from neon_jax.presets import Preset
from neon_jax.rollout import policy_program as cached_policy_program
from neon_jax.select import cached_candidates_program

LOG_FIELDS = ("episode", "dataset", "network", "warmup", "return", "compression", "val_acc_change", "steps",
              "keep_fraction_of_actions", "actor_loss", "critic_loss", "seconds")


def default_episodes(n_networks: int) -> int:
    """The original's episode count M = 10 N + W (its stopping rule is vacuous, §12 A1)."""
    return 10 * n_networks + agent_lib.warmup_episodes(n_networks)


def train_agent(pool: EnvPool, preset: Preset, env_config: EnvConfig, agent_config: agent_lib.AgentConfig,
                out_dir, episodes: int | None = None, seed: int = 0, checkpoint_every: int = 10,
                progress: bool = True, max_seconds: float | None = None, overwrite: bool = False,
                buckets: bool = False) -> tuple[agent_lib.Agent, agent_lib.AgentState]:
    """Trains an agent on every network of `pool`; resumes from ``out_dir/checkpoint`` if present.

    `buckets` (beyond the paper) draws every iteration's batch from one width bucket of the pool
    (`nets.shape_groups`) and runs it at that bucket's shape: `bucket_schedule` serves the buckets in proportion
    to their networks and each bucket's networks round-robin in the shuffled order, so a pool of mixed widths
    pays for its networks' own widths. False is the original's round-robin over the whole pool, at its shape.

    A resume must have the checkpoint's settings (preset, environment, agent, tau, networks, datasets, seed,
    padded shapes; only `episodes` may grow), else a ValueError names what differs; `overwrite` starts afresh.
    On resume ``log.csv`` keeps exactly the episodes the checkpoint holds (later rows are re-run).

    Writes ``out_dir/log.csv`` (one row per episode), ``out_dir/checkpoint.{npz,json}`` (every
    `checkpoint_every` iterations and at the end) and ``out_dir/run.json`` (settings). Stops after `episodes`
    (default `default_episodes(len(pool))`) or `max_seconds` of training, whichever comes first.
    In `sharding.use_mesh` the batch is split over the mesh (`sharding.fit_mesh`; ``run.json``'s ``run`` says how
    many devices); the agent is replicated; process 0 alone writes.
    """
    if isinstance(checkpoint_every, bool) or int(checkpoint_every) != checkpoint_every or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a whole number of iterations >= 1, got {checkpoint_every!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(pool)
    episodes = default_episodes(n) if episodes is None else int(episodes)
    warmup = agent_lib.warmup_episodes(n)
    ckpt = out / "checkpoint"
    agent = agent_lib.Agent(agent_config, preset)
    groups = (nets.shape_groups(pool.archs, pool.dims, agent_config.batch_size) if buckets
              else [(np.arange(n), pool.dims)])
    settings = _run_settings(pool, preset, env_config, agent_config, episodes, warmup, seed,
                             groups if buckets else None)
    writer, batch, log_path = sharding.is_writer(), agent_config.batch_size, out / "log.csv"
    if writer:
        _clear_run_folder(out, overwrite)
    sharding.barrier("train-agent: folder ready")
    agent, state = _resume_or_start(agent, ckpt, settings, out, seed)
    mesh = sharding.fit_mesh(sharding.active_mesh(), batch)
    sharding.barrier("train-agent: checkpoint read")
    if writer:
        _start_run_files(out, log_path, int(state.episodes), {**settings, "run": sharding.run_record(mesh)})
    place = _placement(mesh)
    state = place(state, False)
    queues, group_pools, iterations = _group_programs(pool, groups, seed, env_config, preset, agent)
    new_log, start = not log_path.exists(), time.perf_counter()
    done = int(state.episodes)
    with open(log_path if writer else os.devnull, "a", newline="") as fh, tqdm(
            total=episodes, initial=min(done, episodes), unit="episode", desc="train-agent", disable=not progress) as bar:
        log = csv.DictWriter(fh, LOG_FIELDS)
        if new_log:
            log.writeheader()
        iters = 0
        while done < episodes:
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
            g, served = bucket_schedule([len(q) for q in queues], done // batch)
            queue = queues[g]
            local = queue[(served * batch + np.arange(batch)) % len(queue)]
            key = jax.random.fold_in(jax.random.PRNGKey(seed + 1), done)
            t0 = time.perf_counter()
            state, metrics = iterations[g](state, place(group_pools[g].batch(local), True), place(key, False),
                                           place(jnp.bool_(done < warmup), False))
            metrics = sharding.gather(metrics)
            seconds = time.perf_counter() - t0
            _log_iteration(log, pool, groups[g][0][local], done, warmup, metrics, seconds / batch)
            fh.flush()
            done = int(state.episodes)
            iters += 1
            bar.update(min(done, episodes) - bar.n)
            bar.set_postfix(ret=f"{np.mean(metrics['return']):.3g}", comp=f"{np.mean(metrics['compression']):.2f}",
                            programs=programs.status())
            if iters % checkpoint_every == 0:
                _save_checkpoint(writer, ckpt, state, agent, preset, {"settings": settings})
                programs.checkpoint(bar.write)  # a safe point: clears the compiled programs when over the bounds
    _save_checkpoint(writer, ckpt, state, agent, preset,
                     {"settings": settings, "train_seconds_this_run": time.perf_counter() - start})
    return agent, state


def _start_run_files(out: Path, log_path: Path, episodes: int, run: dict) -> None:
    """``log.csv`` cut to the checkpoint's `episodes` (later rows are re-run) and ``run.json`` (`run`: the
    settings and the devices)."""
    truncate_log(log_path, episodes)
    tmp = out / "run.tmp.json"
    tmp.write_text(json.dumps(run, indent=1))
    tmp.replace(out / "run.json")


def _save_checkpoint(writer: bool, ckpt: Path, state, agent, preset: Preset, meta: dict) -> None:
    """`agent_lib.save_checkpoint` by the process that writes (process 0); the others write nothing."""
    if writer:
        agent_lib.save_checkpoint(ckpt, state, agent.config, preset, meta)


def _placement(mesh):
    """``place(tree, batched)``: on a mesh of several devices (or processes), a batch split over it (`batched`) or
    a value replicated on it; else the tree as it is (the one-device path)."""
    if not sharding.spreads(mesh):
        return lambda tree, batched: tree
    return lambda tree, batched: (sharding.put_batch if batched else sharding.put_replicated)(tree, mesh)


def _group_programs(pool: EnvPool, groups, seed: int, env_config: EnvConfig, preset: Preset,
                    agent: agent_lib.Agent) -> tuple[list, list, list]:
    """Per group of `groups` ((members, dims)): its networks' positions in its own pool in the order shuffled once
    by `seed` (served round-robin, §1.3), that pool at its shape, and its training iteration."""
    n = len(pool)
    order = np.random.default_rng(seed).permutation(n)
    queues = [np.searchsorted(members, order[np.isin(order, members)]) for members, _ in groups]
    group_pools = [pool.subset(members).repadded(dims) for members, dims in groups]
    iterations = [agent_lib.make_train_iteration(NeonEnv(env_config, dims, preset), agent) for _, dims in groups]
    return queues, group_pools, iterations


def _run_settings(pool: EnvPool, preset: Preset, env_config: EnvConfig, agent_config: agent_lib.AgentConfig,
                  episodes: int, warmup: int, seed: int, groups) -> dict:
    """A training run's settings, as ``run.json`` and the checkpoint store them (lists, not tuples): what a resume
    must match. `groups`: the width buckets' (members, dims) when training over buckets, else None."""
    settings = {"preset": preset.name, "env": dataclasses.asdict(env_config), "agent": dataclasses.asdict(agent_config),
                "tau": pool.tau, "networks": len(pool), "datasets": pool.datasets, "episodes": episodes,
                "warmup_episodes": warmup, "seed": seed, "dims": dataclasses.asdict(pool.dims)}
    if groups is not None:
        settings["buckets"] = [[int(d.w_max), int(d.max_hidden), len(m)] for m, d in groups]
    return json.loads(json.dumps(settings))


def _clear_run_folder(out: Path, overwrite: bool) -> None:
    """Removes what a kill mid-write leaves in a run folder (``*.tmp.*``) and, with `overwrite`, the previous run."""
    for stale in out.glob("*.tmp.*"):  # the renamed files are whole
        stale.unlink()
    if overwrite:
        for name in ("checkpoint.npz", "checkpoint.json", "log.csv", "run.json"):
            (out / name).unlink(missing_ok=True)


def _resume_or_start(agent: agent_lib.Agent, ckpt: Path, settings: dict, out: Path,
                     seed: int) -> tuple[agent_lib.Agent, agent_lib.AgentState]:
    """(agent, state) of the checkpoint `ckpt` when there is one (a ValueError when its settings differ from
    `settings` beyond `RESUMABLE`), else `agent` and its fresh state from `seed`."""
    if ckpt.with_suffix(".npz").exists() or ckpt.with_suffix(".json").exists():
        loaded_agent, state, meta = agent_lib.load_checkpoint(ckpt)
        changed = resume_differences(meta.get("settings", {}), settings)
        if changed:
            raise ValueError(f"{out} holds a run with other settings ({'; '.join(changed)}): resuming it would "
                             f"keep training the old agent; use another --out, or --overwrite to start afresh")
        return loaded_agent, state
    return agent, agent.init(jax.random.PRNGKey(seed))


def _log_iteration(writer: csv.DictWriter, pool: EnvPool, idx, done: int, warmup: int, metrics: dict,
                   seconds: float) -> None:
    """One ``log.csv`` row per episode of a training iteration: episodes ``done, done + 1, ...`` on the pool's
    networks `idx`, `seconds` each."""
    for b, i in enumerate(idx):
        writer.writerow({
            "episode": done + b, "dataset": pool.names[i][0], "network": pool.names[i][1],
            "warmup": int(done + b < warmup), "return": float(metrics["return"][b]),
            "compression": float(metrics["compression"][b]),
            "val_acc_change": float(metrics["acc_change"][b]), "steps": int(metrics["steps"][b]),
            "keep_fraction_of_actions": float(metrics["keep_actions"][b]),
            "actor_loss": float(metrics["actor_loss"]), "critic_loss": float(metrics["critic_loss"]),
            "seconds": seconds})


RESUMABLE = ("episodes",)  # settings a resume may change: train longer


def bucket_schedule(sizes: list[int], iteration: int) -> tuple[int, int]:
    """(group, iterations that group has served before) of training iteration `iteration` (0-based) when groups
    of `sizes` networks take turns in proportion to their sizes (smooth weighted round-robin: every iteration
    each group earns its share, the group with the most credit serves and pays one). A function of the iteration
    alone, so a resumed run continues the same schedule; one group always serves."""
    shares = np.asarray(sizes, float) / max(sum(sizes), 1)
    credit = np.zeros(len(sizes))
    served = np.zeros(len(sizes), int)
    for _ in range(iteration + 1):
        credit += shares
        g = int(np.argmax(credit))
        credit[g] -= 1.0
        served[g] += 1
    return g, int(served[g]) - 1


def resume_differences(saved: dict, now: dict) -> list[str]:
    """The settings of a run folder's checkpoint that a resume would change, as "name: now (checkpoint: saved)"."""
    return [f"{k}: {json.dumps(now.get(k))} (checkpoint: {json.dumps(saved.get(k))})"
            for k in sorted(set(saved) | set(now))
            if k not in RESUMABLE and saved.get(k) != now.get(k)]


def truncate_log(path: Path, episodes: int) -> None:
    """Keeps the header and the rows of episodes < `episodes` of ``log.csv`` (none: the file goes); a torn or
    unreadable row is dropped. Rewritten through a temporary file renamed into place."""
    if not path.exists():
        return
    if episodes <= 0:
        path.unlink()
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = []
    for row in rows:
        try:
            if int(row["episode"]) < episodes and None not in row and all(v is not None for v in row.values()):
                kept.append(row)
        except (TypeError, ValueError, KeyError):
            continue
    tmp = path.with_name(path.name + ".tmp.csv")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, LOG_FIELDS)
        writer.writeheader()
        writer.writerows({k: r.get(k) for k in LOG_FIELDS} for r in kept)
    tmp.replace(path)


def agent_env(agent: agent_lib.Agent, dims, preset: Preset, env_config: EnvConfig) -> NeonEnv:
    """The environment an agent acts in on networks of `preset`: the preset's schedules with the agent's state maps
    (`Agent.observation_preset`)."""
    return NeonEnv(env_config, dims, agent.observation_preset(preset, dims))


def run_agent(agent: agent_lib.Agent, actor_params, pool: EnvPool, preset: Preset, env_config: EnvConfig,
              seed: int = 0, greedy: bool = False, random_actions: bool = False, batch_size: int = 32,
              progress: bool = False, keep_networks: bool = False, candidates: int | None = None,
              buckets: bool = True, search=None) -> runner.RunResult:
    """Prunes every network of `pool` with the agent's policy (no learning): `runner.RunResult` (rows of
    `runner.ROW_FIELDS`).

    Actions are sampled from the policy by default, as the original evaluates (§1.4); `greedy` takes the
    argmax; `random_actions` is the random agent (`policies.random_policy`, no actor) of the same environment.
    Accuracies are on the TEST split.
    `candidates` = K rolls out K sampled episodes and a greedy one per network and keeps the smallest network
    within tau on the validation split (`neon_jax.select`; the rows gain chosen_episode, chosen_step, candidates,
    within_tau); None is the paper's single episode. `buckets`: each width bucket of the pool at its own shape
    (`runner.run`; False: every network at the pool's padded shape). `search`: with `candidates`, a
    `search.Search` run after the episodes in the same program (None: none, the faithful choice).
    """
    if candidates is not None and greedy:
        raise ValueError("candidates already include the greedy episode; greedy=True takes no candidates")
    policy = None if random_actions else agent.policy(actor_params, greedy)
    act_fn, act_key = ((random_policy, None) if random_actions
                       else (agent.act_fn, ("agent", agent.config, agent.preset)))

    def method(dims):
        env = agent_env(agent, dims, preset, env_config)
        if candidates is None:
            return cached_policy_program(env, act_fn, act_key), policy
        extra = {} if search is None else {"search": search}
        return cached_candidates_program(env, act_fn, int(candidates), not random_actions, "best", act_key,
                                         **extra), policy

    return runner.run(method, pool, seed=seed, batch_size=batch_size, buckets=buckets, progress=progress,
                      keep_networks=keep_networks)
