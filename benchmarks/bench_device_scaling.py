"""Suite benchmark ``device_scaling`` (driven by `benchmarks/run.py`): population training (and, in full mode, env
steps) with the batch sharded over 1, 2, ... devices (`neon_jax.sharding`). Each device count runs in a child
process, ``run.py --device-worker N``; on a CPU the devices are simulated
(``--xla_force_host_platform_device_count``) and share the same cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import Work, compile_aot, core_count, load_average, log, population_setup, timeit
from neon_jax import nets

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUN = HERE / "run.py"  # the child process: `run.py --device-worker N`


def device_worker(args) -> None:
    """Child process of `device_scaling`: times the sharded work on `args.device_worker` devices, prints JSON."""
    from neon_jax import sharding

    n = args.device_worker
    mesh = sharding.make_mesh(n)
    setup = population_setup(args.preset, args.dataset, args.data_dir, args.seed)
    preset, prepared, dims, trainer = setup.preset, setup.prepared, setup.dims, setup.trainer
    out = {"devices": n, "device_kind": jax.devices()[0].device_kind, "results": []}
    for p in args.worker_pop:
        archs = jax.vmap(lambda k: nets.sample_arch(k, preset, dims, prepared.n_features, prepared.n_classes))(
            jax.random.split(jax.random.PRNGKey(args.seed), p))
        variables = nets.init_population(jax.random.PRNGKey(1), setup.model, archs)
        opt = trainer.init_opt_state(variables)
        index = jnp.zeros(p, jnp.int32)
        sv, so, sa, si = sharding.shard_batch((variables, opt, archs, index), mesh)
        sd = sharding.replicate(setup.data, mesh)
        key = sharding.replicate(jax.random.PRNGKey(2), mesh)
        compiled, compile_s = compile_aot(trainer.train, key, sv, so, sa, si, sd, epochs=args.worker_epochs,
                                          batch_size=preset.train_batch, chunk_size=None)
        best, times, _ = timeit(lambda: compiled(key, sv, so, sa, si, sd), 3)  # noqa: B023 (called at once)
        out["results"].append({"benchmark": "population", "population": p, "jax_compile_s": compile_s,
                               "jax_run_s": best, "jax_run_s_all_repeats": times} | load_average())
    if args.worker_env_batch:
        out["results"].append(_sharded_env_steps(args, mesh))
    print("DEVICE-WORKER-JSON " + json.dumps(out), flush=True)


def _sharded_env_steps(args, mesh) -> dict:
    """One env step of `args.worker_env_batch` zoo environments, the batch sharded over `mesh`."""
    from benchmarks.bench_env import step_actions
    from neon_jax import sharding

    work = Work(args)
    b = args.worker_env_batch
    idx, params = work.batch(b)
    _, states = work.reset(jax.random.split(jax.random.PRNGKey(args.seed), b), params)
    actions = jnp.asarray(step_actions(args.seed, b), jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), b)
    keys, states, actions, params = sharding.shard_batch((keys, states, actions, params), mesh)
    compiled, compile_s = compile_aot(work.vstep, keys, states, actions, params)
    best, times, _ = timeit(lambda: compiled(keys, states, actions, params), 3)
    return {"benchmark": "env_steps", "batch_size": b, "jax_compile_s": compile_s,
            "jax_run_s": best, "jax_run_s_all_repeats": times} | load_average()


def _run_worker(args, mode, n: int, pops, platform: str) -> dict:
    """The child process on `n` devices: its JSON, or {"devices": n, "error": ...}."""
    cmd = [sys.executable, str(RUN), "--device-worker", str(n), "--preset", args.preset,
           "--dataset", args.dataset, "--data-dir", args.data_dir, "--worker-epochs", "5",
           "--worker-pop", ",".join(map(str, pops))]
    if mode["device_env_steps"]:
        cmd += ["--worker-env-batch", str(32 * n)] + (["--zoo", args.zoo] if args.zoo else [])
    env = dict(os.environ)
    if platform == "cpu":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith("DEVICE-WORKER-JSON ")]
    if proc.returncode or not line:
        log(f"  failed: {proc.stderr[-500:]}")
        return {"devices": n, "error": proc.stderr[-2000:]}
    res = json.loads(line[0].split(" ", 1)[1])
    for r in res["results"]:
        log(f"  {r['benchmark']}: {r['jax_run_s']:.3f}s")
    return res


def bench_device_scaling(args, mode) -> dict:
    platform = jax.devices()[0].platform
    counts = mode["devices"]
    if counts is None:
        total = jax.device_count() if platform != "cpu" else core_count()
        counts = sorted({2 ** k for k in range(int(np.log2(max(total, 1))) + 1)} | {total})
    pops = [32, 128] if args.full else [32]
    rows = []
    for n in counts:
        log(f"[device_scaling] {n} device(s)")
        rows.append(_run_worker(args, mode, n, pops, platform))
    base = {}
    for row in rows:
        for r in row.get("results", []):
            key = (r["benchmark"], r.get("population", r.get("batch_size")))
            if row["devices"] == counts[0]:
                base[key] = r["jax_run_s"]
            r["speedup_vs_first"] = base.get(key, np.nan) / r["jax_run_s"] if key in base else None
    return {"settings": {"platform": platform, "device_counts": counts,
                         "note": ("CPU: devices are simulated with --xla_force_host_platform_device_count and "
                                  "share the machine's cores, so this shows the sharding overhead, not extra "
                                  "compute" if platform == "cpu" else "real devices"),
                         "work": "population training (5 epochs) with the population axis sharded; "
                                 + ("env steps of 32 environments per device (weak scaling)"
                                    if mode["device_env_steps"] else "")},
            "results": rows}
