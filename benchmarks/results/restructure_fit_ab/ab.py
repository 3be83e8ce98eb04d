"""A/B of the fit/ restructuring: zoo training, every baseline (fine-tuned), NEON with a random-init agent (step_batch
slots, vmap(step), candidates)."""
import json
import sys

import jax
import numpy as np

from neon_jax import admm, amc, learn
from neon_jax import agent as agent_lib
from neon_jax import pruning as B
from neon_jax import zoo as zoo_lib
from neon_jax.env import EnvConfig
from neon_jax.pool import EnvPool
from neon_jax.presets import PRESETS

tiny = PRESETS["tiny"]
out = {}
for name in ("iris", "wine"):
    prepared = zoo_lib.prepare_data(name, tiny, seed=0)
    zoo = zoo_lib.build_zoo(prepared, tiny, n=6, n_heldout=2, seed=0)
    out[f"{name}/zoo"] = [float(v) for v in np.asarray(jax.tree_util.tree_leaves(zoo.variables)[0]).ravel()[:50]] + \
        [float(a) for a in np.ravel(zoo.test_accuracy)]
    pool = EnvPool.from_zoos([(zoo, prepared)], "all", 5.0, tiny)
    for method in B.BASELINES:
        kw = {}
        if method == "amc":
            kw["amc_config"] = amc.AMCConfig(episodes=6, warmup=2, hidden=16, batch_size=8)
        if method == "admm":
            kw["admm_config"] = admm.ADMMConfig(pre_epochs=1, admm_epochs=1, retrain_epochs=1)
        r = B.run_baseline(method, pool, tiny, passes=1, batch_size=4, **kw)
        out[f"{name}/{method}"] = [[row.get("widths_after", ""), int(row["params_after"]),
                                    float(row["test_acc_after"])] for row in r.rows]
    ag = agent_lib.Agent(agent_lib.AgentConfig(), tiny)
    st = ag.init(jax.random.PRNGKey(3))
    for label, kw in (("neon", {}), ("neon_vmap", {"batch_size": 1}), ("neon_k2", {"candidates": 2})):
        r = learn.run_agent(ag, st.actor, pool, tiny, EnvConfig(passes=2), seed=1, **kw)
        out[f"{name}/{label}"] = [[row.get("widths_after", ""), int(row["params_after"]),
                                   float(row["test_acc_after"])] for row in r.rows]
    print(name, {k: v[:1] for k, v in out.items() if k.startswith(name)}, flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=0)
