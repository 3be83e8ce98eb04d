# ruff: noqa: E501, E731, E401, E702, I001
"""Env step of one paper network (500-1000): the step program's argument / output bytes, and donate_argnums on the state."""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks.common import DEFAULT_DATA_DIR, load_prepared
from benchmarks.profile_paper_finetune import NETWORKS, build_network
from neon_jax import env as env_lib
from neon_jax.presets import get_preset

jax.config.update("jax_default_matmul_precision", "highest")
preset = get_preset("paper")
prepared, _ = load_prepared("diabetes", preset, DEFAULT_DATA_DIR, 0)
name = sys.argv[1]
w, p_, a_ = NETWORKS[name]
dims, arch, model, variables, _ = build_network(w, p_, a_, prepared.n_features, prepared.n_classes, jax.random.PRNGKey(0))
params = env_lib.make_env_params(variables, arch, prepared.splits, dims, 5.0)
env = env_lib.NeonEnv(env_lib.EnvConfig(passes=4), dims, preset)
_, state = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
action = jnp.int32(int(sys.argv[2]))
key = jax.random.PRNGKey(5)
plain = jax.jit(env.step).lower(key, state, action, params).compile()
donated = jax.jit(env.step, donate_argnums=(1,)).lower(key, state, action, params).compile()
nbytes = lambda t: sum(a.nbytes for a in jax.tree_util.tree_leaves(t))
out = jax.block_until_ready(plain(key, state, action, params))
ma = plain.memory_analysis()
fresh = lambda: jax.tree_util.tree_map(lambda a: a.copy(), state)
times = {"plain": [], "donated": []}
for _ in range(int(sys.argv[3])):
    for k, c in (("plain", plain), ("donated", donated)):
        s = jax.block_until_ready(fresh())
        t0 = time.perf_counter()
        o = jax.block_until_ready(c(key, s, action, params))
        times[k].append(time.perf_counter() - t0)
t0 = time.perf_counter(); jax.block_until_ready(fresh()); copy_s = time.perf_counter() - t0
print(json.dumps({"network": name, "action": int(action), "finetune_epochs": int(out[-1]["finetune_epochs"]),
                  "state_bytes": nbytes(state), "env_params_bytes": nbytes(params), "output_bytes": nbytes(out),
                  "memory_analysis": {k: getattr(ma, k, None) for k in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")} if ma else None,
                  "copy_of_state_s": copy_s, "loadavg": os.getloadavg(),
                  **{k: {"best_s": min(v), "all": v} for k, v in times.items()}}))
