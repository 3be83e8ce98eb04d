"""Suite benchmark ``agent_update`` (driven by `benchmarks/run.py`): the library's update (`agent.make_update`, what
`agent.make_train_iteration` runs after its roll-out) on B episodes of T random observations, beside the original's
PyTorch update (`torch_reference/agent.py`: one episode at a time, BatchNorm2d at batch 1) and one PyTorch update on
the batch mean (identical maths).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    choose_torch_threads,
    compile_aot,
    load_average,
    log,
    timeit,
    torch_device,
    torch_sync,
)
from neon_jax.presets import get_preset


def random_episodes(seed: int, b: int, t_len: int, rows: int, width: int):
    """B episodes of T steps: random observations (host arrays), actions and rewards."""
    rng = np.random.default_rng(seed)
    shapes = {"net_topology": (rows, 8), "net_activations": (8, rows, width), "net_weights": (8, rows, width),
              "layer_topology": (8,), "layer_activations": (8, width), "layer_weights": (8, width)}
    obs_np = {k: rng.normal(size=(b, t_len) + s).astype(np.float32) for k, s in shapes.items()}
    actions = rng.integers(0, 5, (b, t_len)).astype(np.int32)
    rewards = rng.normal(size=(b, t_len)).astype(np.float32) * 100
    return obs_np, actions, rewards


def _torch_updates(a2c, episodes, passes: int):
    """Seconds of each pass: the original's schedule (one update per episode), and one batched update."""
    per_episode, batched = [], []
    for _ in range(passes):
        t0 = time.perf_counter()
        for e in episodes:
            a2c.update_episode(*e)
        torch_sync()
        per_episode.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a2c.update_batch(episodes)
        torch_sync()
        batched.append(time.perf_counter() - t0)
    return per_episode, batched


def bench_agent_update(args, mode, work_preset) -> dict:
    from benchmarks.torch_reference.agent import TorchA2C, observations_from_arrays
    from neon_jax import agent as agent_lib
    from neon_jax.features import Observation
    from neon_jax.rollout import Transition

    preset = get_preset(work_preset)
    b = mode["update_batch"]
    t_len = args.passes * preset.max_hidden
    R, F = preset.feature_rows, preset.feature_width
    agent = agent_lib.Agent(agent_lib.AgentConfig(batch_size=b), preset)
    state = agent.init(jax.random.PRNGKey(args.seed))
    obs_np, actions, rewards = random_episodes(args.seed, b, t_len, R, F)
    transitions = Transition(obs=Observation(**{k: jnp.asarray(v) for k, v in obs_np.items()}),
                             action=jnp.asarray(actions), reward=jnp.asarray(rewards),
                             valid=jnp.ones((b, t_len), bool), info={})
    update = jax.jit(agent_lib.make_update(agent))  # the library's update, as make_train_iteration runs it

    log(f"[agent_update] B={b} episodes x T={t_len}: JAX compile + run")
    compiled, compile_s = compile_aot(update, state, transitions)
    best, times, _ = timeit(lambda: compiled(state, transitions), mode["env_repeats"])
    a2c = TorchA2C(R, F, seed=args.seed, device=torch_device())
    episodes = [(observations_from_arrays(obs_np, k, torch_device()), actions[k].tolist(), rewards[k])
                for k in range(b)]
    threads, probe_s = choose_torch_threads(args.torch_threads, lambda: a2c.update_episode(*episodes[0]))
    per_episode, batched = _torch_updates(a2c, episodes, max(2, mode["torch_passes"]))
    r = {"batch_size": b, "steps_per_episode": t_len, "agent_params": agent.num_params(state),
         "torch_agent_params": list(a2c.num_params()), "jax_compile_s": compile_s, "jax_run_s": best,
         "jax_run_s_all_repeats": times, "torch_run_s": min(per_episode), "torch_run_s_all_passes": per_episode,
         "torch_batched_update_s": min(batched), "ratio": min(per_episode) / best,
         "ratio_vs_torch_batched": min(batched) / best, "torch_threads": threads,
         "torch_threads_probe_s": probe_s} | load_average()
    log(f"  jax {best:.3f}s (compile {compile_s:.1f}s)  torch per-episode {min(per_episode):.3f}s, batched "
        f"{min(batched):.3f}s  ratio {r['ratio']:.2f} / {r['ratio_vs_torch_batched']:.2f}")
    return {"settings": {"preset": preset.name, "agent": "neon six-branch actor + critic", "batch": b,
                         "steps": t_len, "feature_map": [R, F], "lr": 1e-3, "gamma": 0.99,
                         "torch": ("ratio: the original's schedule (one update per episode, B updates); "
                                   "ratio_vs_torch_batched: one update on the mean of the B episodes, the same "
                                   "maths as neon_jax")},
            "results": [r]}
