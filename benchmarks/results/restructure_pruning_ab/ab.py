import json
import sys

try:
    from neon_jax import pruning as B
except ImportError:
    from neon_jax import baselines as B
from neon_jax import amc
from neon_jax import zoo as zoo_lib
from neon_jax.pool import EnvPool
from neon_jax.presets import PRESETS

tiny = PRESETS["tiny"]
out = {}
for name in ("iris", "wine"):
    prepared = zoo_lib.prepare_data(name, tiny, seed=0)
    zoo = zoo_lib.build_zoo(prepared, tiny, n=6, n_heldout=2, seed=0)
    pool = EnvPool.from_zoos([(zoo, prepared)], "all", 5.0, tiny)
    for method in B.BASELINES:
        kw = {}
        if method == "amc":
            kw["amc_config"] = amc.AMCConfig(episodes=6, warmup=2, hidden=16, batch_size=8)
        if method == "admm":
            from neon_jax import admm
            kw["admm_config"] = admm.ADMMConfig(pre_epochs=1, admm_epochs=1, retrain_epochs=1)
        r = B.run_baseline(method, pool, tiny, passes=1, batch_size=4, **kw)
        out[f"{name}/{method}"] = [[row["widths_after"] if "widths_after" in row else "", int(row["params_after"]),
                                    float(row["test_acc_after"])] for row in r.rows]
        print(name, method, out[f"{name}/{method}"][:2], flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=0)
