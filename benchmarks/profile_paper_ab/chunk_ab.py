# ruff: noqa: E501, E731, E401, E702, I001
"""A/B: population training at the paper preset, width buckets as zoo.build_zoo, chunk_size 1 vs 4."""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks.common import DEFAULT_DATA_DIR, load_prepared
from neon_jax import fit, nets
from neon_jax.presets import get_preset

jax.config.update("jax_default_matmul_precision", "highest")
preset = get_preset("paper")
prepared, _ = load_prepared("diabetes", preset, DEFAULT_DATA_DIR, 0)
s = prepared.splits; nf, nc = prepared.n_features, prepared.n_classes
data = fit.stack_data([(s.x_train, s.y_train)], nf)
dims = nets.NetDims.for_preset(preset, nf, nc)
out = []
for p in [int(v) for v in sys.argv[1].split(",")]:
    k_arch, k_init, k_train = jax.random.split(jax.random.PRNGKey(0), 3)
    archs = jax.vmap(lambda k: nets.sample_arch(k, preset, dims, nf, nc))(jax.random.split(k_arch, p))
    progs = {c: [] for c in (1, 4)}
    for width, idx in nets.width_buckets(archs).items():
        bd = nets.NetDims(nf, nc, preset.max_hidden, width)
        sub = nets.resize_width(jax.tree_util.tree_map(lambda a: a[idx], archs), width)
        trainer = fit.make_trainer(nets.MaskedMLP(dims=bd), preset.learning_rate)
        v = nets.init_population(k_init, trainer.model, sub)
        a = (k_train, v, trainer.init_opt_state(v), sub, jnp.zeros(len(idx), jnp.int32), data)
        for c in progs:
            progs[c].append((trainer.train.lower(*a, epochs=1, batch_size=64, chunk_size=c).compile(), a))
    res = {c: [] for c in progs}
    outs = {}
    for c in progs:
        outs[c] = [jax.block_until_ready(f(*a)) for f, a in progs[c]]
    for _ in range(3):
        for c in progs:
            c0, t0 = time.process_time(), time.perf_counter()
            for f, a in progs[c]:
                jax.block_until_ready(f(*a))
            res[c].append((time.perf_counter() - t0, time.process_time() - c0))
    diff = max(float(jnp.abs(o1[2] - o4[2]).max()) for o1, o4 in zip(outs[1], outs[4]))
    r = {"population": p, "loadavg": os.getloadavg(), "loss_max_abs_diff_chunk1_vs_4": diff,
         **{f"chunk{c}": {"best_s": min(w for w, _ in v), "all": v} for c, v in res.items()}}
    print(json.dumps(r), flush=True)
    out.append(r)
json.dump(out, open(sys.argv[2], "w"), indent=2)
