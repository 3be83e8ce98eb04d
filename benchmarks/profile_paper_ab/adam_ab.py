# ruff: noqa: E501, E731, E401, E702, I001
import json
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import optax
from optax._src import numerics

from benchmarks.common import DEFAULT_DATA_DIR, load_prepared
from benchmarks.profile_paper_finetune import NETWORKS, build_network
from neon_jax import fit, nets
from neon_jax.fit import loops
from neon_jax.presets import get_preset

jax.config.update("jax_default_matmul_precision", "highest")
tree_map = jax.tree_util.tree_map

def masked_adam_barrier(lr, b1=0.9, b2=0.999, eps=1e-8):
    adam = optax.adam(lr)
    def init(params):
        return {name: adam.init(group) for name, group in params.items()}
    def one(g, s):
        st = s[0]
        mu = optax.tree.update_moment(g, st.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(g, st.nu, b2, 2)
        mu, nu = jax.lax.optimization_barrier((mu, nu))
        count_inc = numerics.safe_increment(st.count)
        mu_hat = optax.tree.bias_correction(mu, b1, count_inc)
        nu_hat = optax.tree.bias_correction(nu, b2, count_inc)
        u = tree_map(lambda m, v: m / (jnp.sqrt(v + 0.0) + eps), mu_hat, nu_hat)
        u = tree_map(lambda x: jnp.array(-lr, dtype=x.dtype) * x, u)
        return u, (st._replace(count=count_inc, mu=mu, nu=nu),) + tuple(s[1:])
    def update(grads, state, params=None, *, mask, valid=True, **extra):
        grads = tree_map(lambda g, m: g * m, grads, mask)
        new_state, updates = {}, {}
        for name in grads:
            u, new_state[name] = one(grads[name], state[name])
            updates[name] = tree_map(lambda u_, m: jnp.where(valid, u_ * m, 0.0), u, mask[name])
        new_state = tree_map(lambda a, b: jnp.where(valid, a, b), new_state, state)
        return updates, new_state
    return optax.GradientTransformationExtraArgs(init, update)

prepared, _ = load_prepared("diabetes", get_preset("paper"), DEFAULT_DATA_DIR, 0)
s = prepared.splits
name = sys.argv[1]; epochs = int(sys.argv[2])
w, p_, a_ = NETWORKS[name]
dims, arch, model, variables, _ = build_network(w, p_, a_, prepared.n_features, prepared.n_classes, jax.random.PRNGKey(0))
data = fit.pad_data(s.x_finetune, s.y_finetune, len(s.x_finetune), prepared.n_features)
every = nets.Trainable.everything(dims.max_hidden)
progs = {}
for label, tx in (("optax", fit.masked_adam(1e-3)), ("barrier", masked_adam_barrier(1e-3))):
    learner = fit.Learner(model, tx, fit.cross_entropy(True))
    f = jax.jit(lambda k, v, a, learner=learner: loops.finetune(learner, k, v, a, data, every, max_epochs=epochs, batch_size=32, patience=epochs + 1))
    c = f.lower(jax.random.PRNGKey(1), variables, arch).compile()
    txt = c.as_text()
    big = len(re.findall(r"= f32\[\d+,\d+\]\{1,0\} copy\(", txt))
    progs[label] = (c, big)
outs = {k: jax.block_until_ready(c(jax.random.PRNGKey(1), variables, arch)) for k, (c, _) in progs.items()}
diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(outs["optax"]), jax.tree_util.tree_leaves(outs["barrier"])))
times = {k: [] for k in progs}
for _ in range(int(sys.argv[3])):
    for k, (c, _) in progs.items():
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(c(jax.random.PRNGKey(1), variables, arch))
        times[k].append((time.perf_counter() - t0, time.process_time() - c0))
print(json.dumps({"network": name, "epochs": epochs, "max_abs_diff": diff, "loadavg": os.getloadavg(),
                  **{k: {"matrix_copies_in_hlo": progs[k][1], "best_s": min(t for t, _ in v), "best_cpu_s": min(c for _, c in v), "all": v} for k, v in times.items()}}))
