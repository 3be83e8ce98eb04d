"""Suite benchmark ``episode`` (driven by `benchmarks/run.py`): whole four-pass episodes of B zoo networks through the
library's roll-out (`rollout.make_rollout`, random policy) beside `torch_reference.env_step.run_episode` replaying
the same actions one network after the other.

The roll-out runs as one ``vmap(step)`` per step (``slots=None``) and, with ``--slots`` (the default on one CPU
device), with packed fine-tunes, at the pool's padded shape and with every width bucket at its own width and depth
(what `runner.run` does).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks.common import Work, compile_aot, load_average, log, timeit, torch_sync
from neon_jax import env as env_lib


def _time_rollout(env, keys, params, repeats: int):
    """(compile seconds, best seconds, all seconds, host (final state, actions, rewards, valid, fine-tune epochs))
    of the library's roll-out of `env` with the random policy."""
    from neon_jax.policies import random_policy
    from neon_jax.rollout import make_rollout

    rollout = jax.jit(lambda k, p: make_rollout(env, random_policy)(k, p, None))
    compiled, compile_s = compile_aot(rollout, keys, params)
    best, times, (final, t) = timeit(lambda: compiled(keys, params), repeats)
    return compile_s, best, times, jax.device_get((final, t.action, t.reward, t.valid, t.info["finetune_epochs"]))


def _bucketed_episodes(work: Work, idx, keys, slots: int, repeats: int, state, actions, valid) -> dict:
    """The same episodes, every width bucket at its own shape and depth (the runner's programs), compared with the
    padded vmap(step) roll-out's actions and final widths."""
    from neon_jax.policies import random_policy
    from neon_jax.rollout import make_rollout

    groups, run_g, compile_g, same_actions, same_widths = [], 0.0, 0.0, True, True
    for members, dims, params_g in work.bucket_groups(idx):
        env_g = env_lib.NeonEnv(work.env.config, dims, work.preset, slots=slots)
        rollout_g = jax.jit(lambda k, p, e=env_g: make_rollout(e, random_policy)(k, p, None))
        compiled_g, c = compile_aot(rollout_g, keys[members], params_g)
        best_g, _, (final_g, t_g) = timeit(lambda: compiled_g(keys[members], params_g),  # noqa: B023
                                            repeats)
        run_g, compile_g = run_g + best_g, compile_g + c
        for j, m in enumerate(members):
            v = np.asarray(t_g.valid[j])
            same_actions &= np.array_equal(np.asarray(t_g.action[j])[v], actions[m][valid[m]])
            d = int(final_g.arch.depth[j])
            same_widths &= np.array_equal(np.asarray(final_g.arch.widths[j])[:d], state.arch.widths[m][:d])
        groups.append({"w_max": dims.w_max, "max_hidden": dims.max_hidden, "networks": len(members),
                       "scan_steps": env_g.max_steps, "run_s": best_g, "compile_s": c})
    log(f"  per width bucket ({len(groups)} groups): jax {run_g:.2f}s (compile {compile_g:.1f}s)")
    return {"jax_buckets_run_s": run_g, "jax_buckets_compile_s": compile_g, "bucket_groups": groups,
            "buckets_same_actions_as_vmap": bool(same_actions),
            "buckets_same_final_widths_as_vmap": bool(same_widths)}


def _torch_episodes(work: Work, idx, seed: int, actions, valid):
    """PyTorch replays each network's roll-out actions, one network after the other: (episodes, seconds each)."""
    from benchmarks.torch_reference.env_step import run_episode

    torch_eps, torch_times = [], []
    for k, i in enumerate(idx):
        e = work.torch_env(int(i), seed + k)
        t1 = time.perf_counter()
        torch_eps.append(run_episode(e, actions[k][valid[k]]))
        torch_sync()
        torch_times.append(time.perf_counter() - t1)
    return torch_eps, torch_times


def bench_episode(args, mode, work: Work) -> dict:
    """Whole four-pass episodes of B networks through the library's roll-out (`rollout.make_rollout` with the
    random policy), once as one ``vmap(step)`` per step (``slots=None``) and once packed (``--slots``, the
    default on one CPU device); PyTorch replays the same actions, one network after the other."""
    b = mode["episode_batch"]
    t_max = work.env.max_steps
    idx, params = work.batch(b)
    keys = jax.random.split(jax.random.PRNGKey(args.seed + 3), b)
    repeats = max(1, mode["env_repeats"] - 1)

    def env_at(slots):
        return env_lib.NeonEnv(work.env.config, work.dims, work.preset, slots=slots)

    log(f"[episode] B={b}, {t_max} scan steps: JAX compile + run (the library's roll-out, slots=None)")
    compile_s, best, times, (state, actions, rewards, valid, epochs) = _time_rollout(env_at(None), keys, params,
                                                                                      repeats)
    log(f"  jax {best:.2f}s")
    packed = {}
    if args.slots:  # the same episodes (same keys, so the same actions) stepped with packed fine-tunes
        compile_b, best_b, times_b, (state_b, actions_b, rewards_b, _, _) = _time_rollout(
            env_at(args.slots), keys, params, repeats)
        packed = {"slots": args.slots, "jax_step_batch_compile_s": compile_b, "jax_step_batch_run_s": best_b,
                  "jax_step_batch_run_s_all_repeats": times_b,
                  "step_batch_same_actions_as_vmap": bool(np.array_equal(actions_b, actions)),
                  "step_batch_same_final_widths_as_vmap": bool(np.array_equal(state_b.arch.widths, state.arch.widths)),
                  "step_batch_return_max_abs_diff": float(np.abs(rewards_b.sum(1) - rewards.sum(1)).max())}
        log(f"  step_batch (slots {args.slots}): jax {best_b:.2f}s (compile {compile_b:.1f}s)")
        packed |= _bucketed_episodes(work, idx, keys, args.slots, repeats, state, actions, valid)
    log(f"  torch: {b} episodes one by one, replaying the roll-out's actions")
    t0 = time.perf_counter()
    torch_eps, torch_times = _torch_episodes(work, idx, args.seed, actions, valid)
    torch_s = float(np.sum(torch_times))
    jax_widths = [np.asarray(state.arch.widths[k][: int(state.arch.depth[k])]).tolist() for k in range(b)]
    r = {"batch_size": b, "scan_steps": t_max, "jax_compile_s": compile_s, "jax_run_s": best,
         "jax_run_s_all_repeats": times, "torch_run_s": torch_s, "torch_s_per_episode": torch_times,
         "ratio": torch_s / best, "steps_per_episode": [int(v.sum()) for v in valid],
         "jax_finetune_epochs_total": int(epochs.sum()),
         "torch_finetune_epochs_total": int(sum(sum(e["finetune_epochs"]) for e in torch_eps)),
         "same_final_widths": jax_widths == [e["widths"] for e in torch_eps],
         "jax_val_acc_change_mean": float(np.mean(state.acc - state.acc0)),
         "torch_val_acc_change_mean": float(np.mean([e["acc"] - e["acc0"] for e in torch_eps])),
         "torch_wall_s_incl_setup": time.perf_counter() - t0} | packed | load_average()
    if packed:
        r["ratio_step_batch"] = torch_s / packed["jax_step_batch_run_s"]
        r["ratio_buckets"] = torch_s / packed["jax_buckets_run_s"]
    log(f"  torch {torch_s:.2f}s  ratio {r['ratio']:.2f}" +
        (f" (step_batch {r['ratio_step_batch']:.2f})" if packed else "") + f"  same widths {r['same_final_widths']}")
    return {"settings": work.describe() | {"actions": "uniform random (the library's random policy), replayed by "
                                                      "PyTorch", "program": "neon_jax.rollout.make_rollout"},
            "results": [r]}
