"""Suite benchmarks ``env_steps`` and ``batch_scaling`` (driven by `benchmarks/run.py`): one environment step of B
zoo networks (reset states, random actions) in neon_jax beside the PyTorch reference environment stepping the same
networks with the same actions one by one.

* JAX: ``jit(vmap(NeonEnv.step))``; with ``--chunk``, ``vmap_in_chunks`` of it; with ``--slots``,
  ``NeonEnv.step_batch`` (packed fine-tunes, the library's batched step) at the pool's padded shape and with every
  width bucket at its own shape;
* PyTorch: `torch_reference.env_step` (rebuild, fine-tune, evaluate, NumPy/SciPy state), best of passes per
  environment;
* ``batch_scaling``: env steps per second vs B (PyTorch is linear in B: its per-step times from ``env_steps``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import Work, choose_torch_threads, compile_aot, load_average, log, timeit, torch_sync
from neon_jax import env as env_lib


def step_actions(seed: int, b: int) -> np.ndarray:
    """The first `b` of one fixed random action sequence: every batch size steps a prefix of the same work."""
    return np.random.default_rng(seed).integers(0, env_lib.NUM_ACTIONS, 4096)[:b].astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# JAX


def jax_env_steps(work: Work, b: int, repeats: int, seed: int, chunk: int | None = None,
                  slots: int | None = None) -> dict:
    """Compile and time one batched step of `b` environments from their reset states: ``jit(vmap(step))``;
    with `chunk`, also ``vmap_in_chunks(step, chunk)``; with `slots`, also ``NeonEnv.step_batch(slots=...)``
    (packed fine-tunes, depth-sorted finishes: the library's batched step)."""
    idx, params = work.batch(b)
    _, states = work.reset(jax.random.split(jax.random.PRNGKey(seed), b), params)
    actions = jnp.asarray(step_actions(seed, b), jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), b)
    step_args = (keys, states, actions, params)
    compiled, compile_s = compile_aot(work.vstep, *step_args)
    best, times, out = timeit(lambda: compiled(*step_args), repeats)
    epochs = np.asarray(out[5]["finetune_epochs"])
    chunked = _chunked_steps(work, step_args, out, chunk, repeats) if chunk and b > chunk else {}
    packed = _step_batch(work, step_args, out, slots, repeats) if slots else {}
    bucketed = _bucketed_steps(work, idx, seed, step_args, out, slots, repeats) if slots else {}
    return chunked | packed | bucketed | {
            "batch_size": b, "jax_compile_s": compile_s, "jax_run_s": best, "jax_run_s_all_repeats": times,
            "env_steps_per_s": b / best, "actions": np.asarray(actions).tolist(), "idx": idx.tolist(),
            "jax_finetune_epochs_mean": float(epochs.mean()), "jax_loop_epochs": int(epochs.max()),
            "widths_after": np.asarray(out[5]["width_after"]).tolist(),
            "params_after": np.asarray(out[5]["params_after"]).tolist()}


def _chunked_steps(work: Work, step_args, out, chunk: int, repeats: int) -> dict:
    """The same step, vmapped over chunks of `chunk` environments one chunk after the other."""
    from neon_jax.sharding import vmap_in_chunks

    step_c = jax.jit(vmap_in_chunks(work.env.step, chunk))
    compiled_c, compile_c = compile_aot(step_c, *step_args)
    best_c, times_c, out_c = timeit(lambda: compiled_c(*step_args), repeats)
    assert np.allclose(np.asarray(out_c[2]), np.asarray(out[2]), rtol=1e-4), "chunked step changed the rewards"
    return {"chunk": chunk, "jax_chunked_compile_s": compile_c, "jax_chunked_run_s": best_c,
            "jax_chunked_run_s_all_repeats": times_c}


def _step_batch(work: Work, step_args, out, slots: int, repeats: int) -> dict:
    """The same step through ``NeonEnv.step_batch`` with `slots` fine-tunes in flight, compared with vmap(step)."""
    step_b = jax.jit(env_lib.NeonEnv(work.env.config, work.dims, work.preset, slots=slots).step_batch)
    compiled_b, compile_b = compile_aot(step_b, *step_args)
    best_b, times_b, out_b = timeit(lambda: compiled_b(*step_args), repeats)
    info_b = out_b[5]
    return {
        "slots": slots, "jax_step_batch_compile_s": compile_b, "jax_step_batch_run_s": best_b,
        "jax_step_batch_run_s_all_repeats": times_b,
        "jax_step_batch_finetune_epochs_sum": int(np.asarray(info_b["finetune_epochs"]).sum()),
        "step_batch_vs_vmap": {
            "same_widths": bool(np.array_equal(np.asarray(info_b["width_after"]), np.asarray(out[5]["width_after"]))),
            "same_epochs": bool(np.array_equal(np.asarray(info_b["finetune_epochs"]),
                                               np.asarray(out[5]["finetune_epochs"]))),
            "reward_max_abs_diff": float(np.abs(np.asarray(out_b[2]) - np.asarray(out[2])).max()),
            "val_acc_max_abs_diff": float(np.abs(np.asarray(info_b["acc"]) - np.asarray(out[5]["acc"])).max()),
            "note": "float rounding of differently batched matmuls, amplified by Adam, can move an accuracy "
                    "by a validation row; vmap(step) vs one environment at a time differs the same way"},
    }


def _bucketed_steps(work: Work, idx, seed: int, step_args, out, slots: int, repeats: int) -> dict:
    """The same steps, every width bucket at its own shape (the runner's programs)."""
    keys, _, actions, _ = step_args
    b = len(idx)
    groups, run_s, compile_g, same = [], 0.0, 0.0, True
    for members, dims, params_g in work.bucket_groups(idx):
        env_g = env_lib.NeonEnv(work.env.config, dims, work.preset, slots=slots)
        _, states_g = jax.jit(jax.vmap(env_g.reset))(jax.random.split(jax.random.PRNGKey(seed), b)[members],
                                                     params_g)
        args_g = (keys[members], states_g, actions[members], params_g)
        compiled_g, c = compile_aot(jax.jit(env_g.step_batch), *args_g)
        best_g, _, out_g = timeit(lambda: compiled_g(*args_g), repeats)  # noqa: B023 (called at once)
        run_s, compile_g = run_s + best_g, compile_g + c
        same &= bool(np.array_equal(np.asarray(out_g[5]["width_after"]), np.asarray(out[5]["width_after"])[members]))
        groups.append({"w_max": dims.w_max, "max_hidden": dims.max_hidden, "networks": len(members),
                       "run_s": best_g, "compile_s": c})
    return {"jax_buckets_run_s": run_s, "jax_buckets_compile_s": compile_g, "bucket_groups": groups,
            "buckets_same_widths_as_vmap": same}


# ----------------------------------------------------------------------------------------------------------------
# PyTorch


def torch_env_steps(work: Work, idx, actions, passes: int, seed: int) -> dict:
    """The same steps, one environment after the other; per environment the best of `passes` (reset off the
    clock before every pass)."""
    per_env = np.full((passes, len(idx)), np.inf)
    epochs, widths, n_params = [], [], []
    for r in range(passes):
        for k, (i, a) in enumerate(zip(idx, actions)):
            env = work.torch_env(int(i), seed + k)
            env.reset()
            t0 = time.perf_counter()
            _, _, _, info = env.step(int(a))
            torch_sync()
            per_env[r, k] = time.perf_counter() - t0
            if r == 0:
                epochs.append(info["finetune_epochs"])
                widths.append(info["width_after"])
                n_params.append(info["params_after"])
    best = per_env.min(0)
    return {"torch_run_s": float(best.sum()), "torch_run_s_all_passes": per_env.sum(1).tolist(),
            "torch_s_per_env": best.tolist(),
            "torch_s_per_env_step": float(best.mean()),
            "torch_s_per_cut_step": float(best[np.asarray(actions) != 0].mean()) if np.any(np.asarray(actions)) else None,
            "torch_s_per_keep_step": float(best[np.asarray(actions) == 0].mean()) if np.any(np.asarray(actions) == 0) else None,
            "torch_finetune_epochs_mean": float(np.mean(epochs)), "widths_after": widths, "params_after": n_params}


# ----------------------------------------------------------------------------------------------------------------
# The suite's benchmarks


def bench_env_steps(args, mode, work: Work) -> dict:
    b = mode["env_batch"]
    log(f"[env_steps] B={b}: JAX compile + run")
    r = jax_env_steps(work, b, mode["env_repeats"], args.seed, chunk=args.chunk, slots=args.slots) | load_average()
    probe_env = work.torch_env(0, 0)

    def probe():
        probe_env.reset()
        probe_env.step(3)

    threads, probe_s = choose_torch_threads(args.torch_threads, probe)
    log(f"[env_steps] torch ({threads} thread(s)) stepping {b} environments one by one")
    t = torch_env_steps(work, r["idx"], r["actions"], mode["torch_passes"], args.seed)
    same = t["widths_after"] == r["widths_after"]
    r.update({k: v for k, v in t.items() if k not in ("widths_after", "params_after")})
    r["same_widths_and_params"] = bool(same and t["params_after"] == r["params_after"])
    r.pop("widths_after"), r.pop("params_after")
    r["torch_threads"], r["torch_threads_probe_s"] = threads, probe_s
    r["ratio"] = r["torch_run_s"] / r["jax_run_s"]
    _ratios_of_variants(r)
    r["note"] = ("jit(vmap(step)): the batched fine-tune loop runs until every environment has stopped "
                 "(jax_loop_epochs), PyTorch runs each environment's own epochs (torch_finetune_epochs_mean); "
                 "step_batch runs each environment's own epochs too (jax_step_batch_finetune_epochs_sum), "
                 "in `slots` fine-tunes at a time")
    log(f"  jax {r['jax_run_s']:.3f}s (compile {r['jax_compile_s']:.1f}s, loop epochs {r['jax_loop_epochs']})  "
        f"torch {r['torch_run_s']:.3f}s (mean epochs {r['torch_finetune_epochs_mean']:.1f})  ratio {r['ratio']:.2f}")
    return {"settings": work.describe(), "results": [r]}


def _ratios_of_variants(r: dict) -> None:
    """PyTorch's seconds over each timed JAX variant's (chunks, step_batch, width buckets), logged."""
    if "jax_chunked_run_s" in r:
        r["ratio_chunked"] = r["torch_run_s"] / r["jax_chunked_run_s"]
        log(f"  chunks of {r['chunk']}: jax {r['jax_chunked_run_s']:.3f}s  ratio {r['ratio_chunked']:.2f}")
    if "jax_step_batch_run_s" in r:
        r["ratio_step_batch"] = r["torch_run_s"] / r["jax_step_batch_run_s"]
        log(f"  step_batch (slots {r['slots']}): jax {r['jax_step_batch_run_s']:.3f}s (compile "
            f"{r['jax_step_batch_compile_s']:.1f}s)  ratio {r['ratio_step_batch']:.2f}")
    if "jax_buckets_run_s" in r:
        r["ratio_buckets"] = r["torch_run_s"] / r["jax_buckets_run_s"]
        log(f"  step_batch per width bucket ({len(r['bucket_groups'])} groups): jax {r['jax_buckets_run_s']:.3f}s "
            f"(compile {r['jax_buckets_compile_s']:.1f}s)  ratio {r['ratio_buckets']:.2f}")


def bench_batch_scaling(args, mode, work: Work, env_result: dict | None) -> dict:
    """Env steps per second vs B. PyTorch steps one by one: for B up to the env_steps batch its time is the sum of
    its measured times of the same first B environments and actions; beyond, that sum scaled linearly."""
    rows = []
    per_env = None
    if env_result:
        per_env = np.asarray(env_result["results"][0]["torch_s_per_env"])
    for b in mode["scaling"]:
        if env_result and b == env_result["results"][0]["batch_size"]:
            r = {k: v for k, v in env_result["results"][0].items() if k in (
                "batch_size", "jax_compile_s", "jax_run_s", "env_steps_per_s", "jax_loop_epochs",
                "jax_finetune_epochs_mean", "load_average_1min")}
        else:
            log(f"[batch_scaling] B={b}")
            r = jax_env_steps(work, b, mode["env_repeats"], args.seed) | load_average()
            for k in ("actions", "idx", "widths_after", "params_after"):
                r.pop(k)
        if per_env is not None:
            torch_s = float(per_env[:b].sum()) if b <= len(per_env) else float(per_env.sum()) * b / len(per_env)
            r["torch_run_s"] = torch_s
            r["torch_extrapolated"] = b > len(per_env)
            r["ratio"] = torch_s / r["jax_run_s"]
        rows.append(r)
        log(f"  B={b}: {r['env_steps_per_s']:.1f} env-steps/s" + (f", ratio {r['ratio']:.2f}" if "ratio" in r else ""))
    return {"settings": {"torch": ("PyTorch's measured seconds of the same first B environments and actions "
                                   "(env_steps benchmark); beyond its batch, scaled linearly (torch_extrapolated)"),
                         "actions": "prefixes of one fixed random action sequence"}, "results": rows}
