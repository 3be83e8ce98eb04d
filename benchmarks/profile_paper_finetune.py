"""Where does a paper-scale fine-tune's time go, and what could per-layer widths buy? (issue 35, part 2)

On the SAME paper-preset networks (widths 100..1000, real data), the same data, epochs and batch size, every variant
runs the same work -- E epochs of shuffled minibatch Adam steps, train mode, double-softmax cross-entropy, every
parameter trainable -- and is timed per epoch (best of `--repeats`, variants interleaved within each repeat):

* ``torch``         -- the original's loop in PyTorch (`torch_reference`: `base_training.train_torch` for the
                       ``train`` workload; `env_step.TorchNeonEnv.finetune`'s loop, every parameter trainable and no
                       early stop, for ``finetune``), 2 threads, float32 highest precision;
* ``shipped``       -- neon_jax as shipped: `fit.loops.finetune` (``finetune``: while-loop over epochs, best-minibatch
                       snapshot) / `fit.loops.train` (``train``) on the `MaskedMLP` at the network's width bucket
                       (max_hidden = its depth, as `nets.shape_groups` gives a one-network group);
* ``exact``         -- a minimal JAX MLP at the network's EXACT per-layer widths, no masks, the arch's own ops only
                       (no per-layer selects), `lax.scan` over minibatches and epochs: the upper bound of
                       per-layer widths + no masks;
* ``layer_buckets`` -- ``exact`` with each hidden layer zero-padded to its own bucket (`nets.bucket_width`): what
                       part 1 of the issue would produce (no masks: zero-padded relu/tanh units stay exactly zero);
* ``net_bucket_masked`` -- ``exact`` with every hidden layer padded to the network's widest bucket and neuron masks
                       (= the shipped program's shapes without its generic per-layer selects).

``finetune`` workload: batch 32 on the fine-tune split with the best-minibatch snapshot of the original's fine-tuner;
``train`` workload: batch 64 on the train split, no snapshot (base-network / population training). Vmapped batches
(``--batch-of``) run B copies of one network (same widths, different init) under one vmap; PyTorch's time for B
networks is B times its one-network time (it trains one network after the other).

``--population`` (``train`` workload, 1 epoch): P networks drawn by `nets.sample_arch` at the paper preset; PyTorch
one after the other; shipped as `zoo.build_zoo` trains them (width buckets, depth-sorted chunks of 4); ``exact`` and
``layer_buckets`` one network after the other (each its own program: the no-vmap upper bound), and
``layer_buckets_vmap``: depth-sorted chunks of 4 vmapped, each chunk padded per layer to the largest bucket of its
members (cost only: its members run the first member's layer ops, no masks) -- the vmapped upper bound.

``--trace``: `jax.profiler` breakdown of the shipped fine-tune (one network and the vmapped batch) by category.
``--tail``: the vmapped shipped fine-tune with the paper's patience, once: epochs each member needed vs epochs the
vmapped loop ran (the "slowest member" waste).

Usage::

    PYTHONPATH=. python benchmarks/profile_paper_finetune.py --trace --tail
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import DEFAULT_DATA_DIR, RESULTS_DIR, device_info, load_prepared, versions, write_json
from neon_jax import fit, nets
from neon_jax.fit import loops
from neon_jax.presets import get_preset

NETWORKS = {  # name: (widths, pre-layer ops, activations)
    "1000-700-800-800-300": ([1000, 700, 800, 800, 300], ["none", "dropout", "batchnorm", "none", "dropout"],
                             ["relu", "relu", "tanh", "relu", "relu"]),
    "900-200-300-200-300": ([900, 200, 300, 200, 300], ["dropout", "none", "batchnorm", "dropout", "none"],
                            ["relu", "relu", "relu", "sigmoid", "relu"]),
    "500-1000": ([500, 1000], ["batchnorm", "dropout"], ["relu", "relu"]),
}


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# ----------------------------------------------------------------------------------------------------------------
# The minimal JAX MLP (variants exact / layer_buckets / net_bucket_masked)


def spec_of(dense) -> dict:
    """Per hidden layer (pre op, activation, kernel, bias, bn params) + output Linear, from a `DenseNetwork`."""
    hidden, pre = [], "none"
    bn = None
    for layer in dense.layers:
        kind = layer["kind"]
        if kind == "dropout":
            pre = "dropout"
        elif kind == "batchnorm":
            pre, bn = "batchnorm", layer
        elif kind == "linear":
            hidden.append({"pre": pre, "bn": bn, "kernel": np.asarray(layer["kernel"]),
                           "bias": np.asarray(layer["bias"])})
            pre, bn = "none", None
        elif kind in ("relu", "tanh", "sigmoid"):
            hidden[-1]["act"] = kind
    out = hidden.pop()
    return {"hidden": hidden, "out": out}


def padded_params(spec, widths_pad, masked: bool):
    """(params, stats, static layer list) with hidden layer j zero-padded to widths_pad[j] neurons."""
    params, stats, layers = {}, {}, []
    d_in, real_in = spec["hidden"][0]["kernel"].shape[0], spec["hidden"][0]["kernel"].shape[0]
    for j, (h, w) in enumerate(zip(spec["hidden"], widths_pad)):
        k = np.zeros((d_in, w), np.float32)
        k[:real_in, :h["kernel"].shape[1]] = h["kernel"]
        b = np.zeros((w,), np.float32)
        b[:h["bias"].shape[0]] = h["bias"]
        params[f"k{j}"], params[f"b{j}"] = k, b
        if h["pre"] == "batchnorm":
            for name, fill, key in (("s", 1.0, "scale"), ("c", 0.0, "bias")):
                v = np.full((d_in,), fill, np.float32)
                v[:real_in] = h["bn"][key]
                params[f"{name}{j}"] = v
            for name, fill, key in (("m", 0.0, "mean"), ("v", 1.0, "var")):
                v = np.full((d_in,), fill, np.float32)
                v[:real_in] = h["bn"][key]
                stats[f"{name}{j}"] = v
        mask = (np.arange(w) < h["kernel"].shape[1]).astype(np.float32) if masked else None
        layers.append((h["pre"], h["act"], mask))
        d_in, real_in = w, h["kernel"].shape[1]
    k = np.zeros((d_in, spec["out"]["kernel"].shape[1]), np.float32)
    k[:real_in] = spec["out"]["kernel"]
    params["ko"], params["bo"] = k, np.asarray(spec["out"]["bias"], np.float32)
    return params, stats, tuple(layers)


def mlp_loss(layers, rate, params, stats, x, y, w, key):
    """Train-mode double-softmax loss of the minimal MLP and its new batch-norm statistics."""
    n = jnp.maximum(w.sum(), 1.0)
    new_stats = {}
    h = x
    keys = jax.random.split(key, len(layers)) if key is not None else [None] * len(layers)
    for j, (pre, act, mask) in enumerate(layers):
        if pre == "batchnorm":
            mean = w @ h / n
            var = w @ (h - mean) ** 2 / n
            new_stats[f"m{j}"] = 0.9 * stats[f"m{j}"] + 0.1 * mean
            new_stats[f"v{j}"] = 0.9 * stats[f"v{j}"] + 0.1 * var * n / jnp.maximum(n - 1.0, 1.0)
            a = params[f"s{j}"] * jax.lax.rsqrt(var + nets.BN_EPS)
            h = h * a + (params[f"c{j}"] - mean * a)
            if mask is not None and j > 0:
                h = h * layers[j - 1][2]
        elif pre == "dropout" and rate > 0:
            h = h * (nets.dropout_keep_mask(keys[j], h.shape, rate) * (1.0 / (1.0 - rate)))
        z = h @ params[f"k{j}"] + params[f"b{j}"]
        h = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}[act](z)
        if mask is not None:
            h = h * mask
    logits = h @ params["ko"] + params["bo"]
    logp = jax.nn.log_softmax(jax.nn.softmax(logits))
    nll = -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
    return (w * nll).sum() / n, new_stats


def mlp_program(layers, rate, x_all, y_all, epochs: int, batch: int, snapshot: bool, lr: float = 1e-3):
    """``run(params, stats, key) -> (params, stats, best_loss)``: `epochs` epochs of shuffled minibatch Adam."""
    n = int(x_all.shape[0])
    nb = -(-n // batch)
    if n % batch == 1:  # the original skips a batch of one row: statically, no select
        nb -= 1
    tx = optax.adam(lr)
    x_all, y_all = jnp.asarray(x_all, jnp.float32), jnp.asarray(y_all, jnp.int32)

    def step(carry, inp):
        params, stats, opt, best, best_loss, perm = carry
        b, k = inp
        idx = jax.lax.dynamic_slice_in_dim(perm, b * batch, batch)
        w = ((b * batch + jnp.arange(batch)) < n).astype(jnp.float32)
        (value, new_stats), grads = jax.value_and_grad(mlp_loss, argnums=2, has_aux=True)(
            layers, rate, params, stats, x_all[idx], y_all[idx], w, k)
        updates, opt = tx.update(grads, opt, params)
        new_params = optax.apply_updates(params, updates)
        stats = {**stats, **new_stats}
        if snapshot:
            better = value < best_loss
            best = jax.tree_util.tree_map(lambda a, o: jnp.where(better, a, o), (params, stats), best)
            best_loss = jnp.where(better, value, best_loss)
        return (new_params, stats, opt, best, best_loss, perm), None

    def epoch(carry, key):
        k_perm, k_drop = jax.random.split(key)
        perm = jnp.concatenate([jax.random.permutation(k_perm, n), jnp.zeros(nb * batch - n, jnp.int32)]) \
            if nb * batch > n else jax.random.permutation(k_perm, n)[:nb * batch]
        carry, _ = jax.lax.scan(step, carry + (perm,), (jnp.arange(nb), jax.random.split(k_drop, nb)))
        return carry[:-1], None

    def run(params, stats, key):
        best = (params, stats) if snapshot else ()
        carry = (params, stats, tx.init(params), best, jnp.float32(jnp.inf))
        carry, _ = jax.lax.scan(epoch, carry, jax.random.split(key, epochs))
        return carry[0], carry[1], carry[4]

    return run


# ----------------------------------------------------------------------------------------------------------------
# PyTorch (the original's loops)


def torch_finetune_fixed(model, x, y, epochs: int, batch: int, lr: float, gen):
    """`TorchNeonEnv.finetune`'s loop (best-minibatch state_dict snapshot), every parameter trainable, no early
    stop (fixed `epochs`)."""
    import torch
    from torch import nn
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    model.train()
    n = x.shape[0]
    best_loss, best_state = math.inf, None
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            if idx.shape[0] < 2:
                continue
            optimizer.zero_grad()
            loss = criterion(model(x[idx]), y[idx])
            value = loss.item()
            if value < best_loss:
                best_loss = value
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            loss.backward()
            optimizer.step()
    if best_state is not None:
        model.load_state_dict(best_state)
    return best_loss


# ----------------------------------------------------------------------------------------------------------------
# Networks and the shipped programs


def build_network(widths, pres, acts, nf, nc, key):
    dims = nets.NetDims(d_max=nf, k_max=nc, max_hidden=len(widths), w_max=nets.bucket_width(max(widths)))
    arch = nets.make_arch(widths, acts, pres, nf, nc, dims)
    model = nets.MaskedMLP(dims=dims, dropout_rate=0.5)
    variables = nets.init_network(key, model, arch)
    return dims, arch, model, variables, nets.compact(variables, arch, dims, 0.5)


def shipped_program(model, arch, data, epochs, batch, workload, p):
    learner = fit.Learner(model, fit.masked_adam(1e-3), fit.cross_entropy(True))
    everything = nets.Trainable.everything(model.dims.max_hidden)

    if workload == "finetune":
        def one(key, variables, arch):
            return loops.finetune(learner, key, variables, arch, data, everything, max_epochs=epochs,
                                  batch_size=batch, patience=epochs + 1)
    else:
        def one(key, variables, arch):
            mask = nets.param_mask(everything, variables["params"])
            return loops.train(learner, key, variables, learner.tx.init(variables["params"]), arch, data, mask,
                               epochs=epochs, batch_size=batch)
    return jax.jit(one if p == 1 else jax.vmap(one)), learner


def stack(tree, p):
    return jax.tree_util.tree_map(lambda a: jnp.stack([jnp.asarray(a)] * p), tree)


def perturb(tree, p, key):
    """P copies of `tree` with a tiny per-copy perturbation (different networks, same widths)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    out = [jnp.asarray(a)[None] * (1.0 + 1e-3 * jax.random.normal(k, (p,) + np.shape(a)))
           for a, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, out)


# ----------------------------------------------------------------------------------------------------------------
# Timing


def interleaved(fns: dict, repeats: int) -> dict:
    """{name: (best wall seconds, all wall seconds, this process's CPU seconds of the best run)}: every fn once
    per repeat, in turn. On a shared machine the CPU seconds are the contention-robust measure of the work."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    out = {}
    for k, v in times.items():
        best = min(v)
        out[k] = (best[0], [w for w, _ in v], best[1])
    return out


def torch_threads(n: int, fn):
    """`fn` run with `n` torch threads (then back to 2)."""
    import torch

    def run():
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(2)
    return run


def matmul_flops(in_dim, widths, k, rows):
    """Training matmul FLOPs (fwd 2*i*o, bwd twice that) of `rows` rows through Linear shapes in_dim->widths->k."""
    dims = [in_dim] + list(widths) + [k]
    return 6 * rows * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def bench_network(name, widths, pres, acts, prepared, args, key, result):
    import torch
    s = prepared.splits
    nf, nc = prepared.n_features, prepared.n_classes
    dims, arch, model, variables, dense = build_network(widths, pres, acts, nf, nc, key)
    spec = spec_of(dense)
    for workload in args.workloads.split(","):
        x, y = (s.x_finetune, s.y_finetune) if workload == "finetune" else (s.x_train, s.y_train)
        batch = 32 if workload == "finetune" else 64
        snapshot = workload == "finetune"
        n = len(x)
        data = fit.pad_data(x, y, n, nf)
        e = args.epochs
        buckets = [nets.bucket_width(w) for w in widths]
        wide = [dims.w_max] * len(widths)
        shapes = {"exact": (widths, False), "layer_buckets": (buckets, False), "net_bucket_masked": (wide, True)}
        rows = (-(-n // batch)) * batch
        flops = {"real": matmul_flops(nf, widths, nc, n), "exact": matmul_flops(nf, widths, nc, rows),
                 "layer_buckets": matmul_flops(nf, buckets, nc, rows),
                 "net_bucket_masked": matmul_flops(nf, wide, nc, rows),
                 "shipped": matmul_flops(nf, wide, nc, rows), "shipped_layers": matmul_flops(nf, buckets, nc, rows)}
        # parity: one minibatch, dropout off, train mode: shipped loss == exact loss == torch loss
        xb, yb = jnp.asarray(x[:batch]), jnp.asarray(y[:batch], jnp.int32)
        wb = jnp.ones(batch)
        learner0 = fit.Learner(nets.MaskedMLP(dims=dims, dropout_rate=0.0), fit.masked_adam(1e-3),
                               fit.cross_entropy(True))
        ship_loss = float(loops.loss(learner0, variables["params"], variables["batch_stats"], arch, xb, yb, wb,
                                     jax.random.PRNGKey(0))[0])
        parity = {"shipped": ship_loss}
        for v, (wp, masked) in shapes.items():
            pp, st, layers = padded_params(spec, wp, masked)
            parity[v] = float(mlp_loss(layers, 0.0, pp, st, xb, yb, wb, None)[0])
        from benchmarks.torch_reference.base_training import to_torch_sequential
        tmodel = to_torch_sequential(dense, dropout_rate=0.0)
        with torch.no_grad():
            parity["torch"] = float(torch.nn.CrossEntropyLoss()(tmodel(torch.as_tensor(np.asarray(x[:batch]))),
                                                                torch.as_tensor(np.asarray(y[:batch]).astype(np.int64))))
        worst = max(abs(v - ship_loss) for v in parity.values())
        assert worst < 1e-4, f"parity failed {parity}"
        for p in [int(v) for v in args.batch_of.split(",")]:
            fns, compile_s = {}, {}
            kk = jax.random.PRNGKey(7)
            # shipped, at the network's widest bucket and with each hidden layer at its own (`nets.with_layer_widths`)
            ldims = nets.with_layer_widths(dims, arch)
            lvars, larch = nets.repad(variables, arch, dims, ldims)
            for v, m, vv, aa in (("shipped", model, variables, arch),
                                 ("shipped_layers", nets.MaskedMLP(dims=ldims, dropout_rate=0.5), lvars, larch)):
                prog, _ = shipped_program(m, aa, data, e, batch, workload, p)
                sargs = (kk, vv, aa) if p == 1 else (jax.random.split(kk, p), perturb(vv, p, kk), stack(aa, p))
                t0 = time.perf_counter()
                comp = prog.lower(*sargs).compile()
                compile_s[v] = time.perf_counter() - t0
                fns[v] = functools.partial(comp, *sargs)
            for v, (wp, masked) in shapes.items():
                if p > 1 and v == "net_bucket_masked" and not args.all_vmapped:
                    continue
                pp, st, layers = padded_params(spec, wp, masked)
                run = mlp_program(layers, 0.5, x, y, e, batch, snapshot)
                margs = (pp, st, kk) if p == 1 else (perturb(pp, p, kk), stack(st, p), jax.random.split(kk, p))
                prog_v = jax.jit(run if p == 1 else jax.vmap(run))
                t0 = time.perf_counter()
                comp_v = prog_v.lower(*margs).compile()
                compile_s[v] = time.perf_counter() - t0
                fns[v] = functools.partial(comp_v, *margs)
            # torch: one network (B networks cost B times that, one after the other)
            xt, yt = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(np.asarray(y).astype(np.int64))
            if p == 1:
                from benchmarks.torch_reference.base_training import train_torch
                tm = to_torch_sequential(dense)
                if workload == "finetune":
                    gen = torch.Generator().manual_seed(0)
                    fns["torch"] = lambda tm=tm, gen=gen: torch_finetune_fixed(copy.deepcopy(tm), xt, yt, e, batch,
                                                                               1e-3, gen)
                else:
                    fns["torch"] = lambda tm=tm: train_torch(copy.deepcopy(tm), xt, yt, e, batch)
                fns["torch_1thread"] = torch_threads(1, fns["torch"])
            for fn in fns.values():  # warm-up
                jax.block_until_ready(fn())
            la0 = loadavg()
            timed = interleaved(fns, args.repeats)
            if p == 1:
                result.setdefault("_torch1", {})[(name, workload)] = (timed["torch"], timed["torch_1thread"])
            (t_torch, _, c_torch), (t_torch1, _, c_torch1) = result["_torch1"][(name, workload)]
            t_torch, c_torch, t_torch1, c_torch1 = t_torch * p, c_torch * p, t_torch1 * p, c_torch1 * p
            rec = {"network": name, "widths": widths, "workload": workload, "batch_size": batch, "rows": n,
                   "epochs_timed": e, "networks_vmapped": p, "parity_loss": parity if p == 1 else None,
                   "loadavg_before": la0, "loadavg_after": loadavg(), "compile_s": compile_s,
                   "torch_s_per_epoch": t_torch / e, "torch_cpu_s_per_epoch": c_torch / e,
                   "torch_1thread_s_per_epoch": t_torch1 / e, "torch_1thread_cpu_s_per_epoch": c_torch1 / e,
                   "torch_note": None if p == 1 else f"{p} x the one-network time", "variants": {}}
            for v, (best, all_s, cpu) in timed.items():
                if v.startswith("torch"):
                    continue
                rec["variants"][v] = {"s_per_epoch": best / e, "all_s": all_s, "cpu_s_per_epoch": cpu / e,
                                      "ratio_vs_torch": t_torch / best,
                                      "ratio_vs_torch_1thread": t_torch1 / best,
                                      "cpu_ratio_vs_torch": c_torch / cpu,
                                      "matmul_gflop_per_epoch": p * flops[v] / 1e9,
                                      "gflops": p * flops[v] / (best / e) / 1e9}
            rec["flops_per_network_epoch"] = flops
            result["networks"].append(rec)
            line = "  ".join(f"{v} {r['s_per_epoch'] * 1e3:7.1f}ms x{r['ratio_vs_torch']:.2f}"
                             for v, r in rec["variants"].items())
            print(f"{name:>22} {workload:>8} B={p:<2} torch {t_torch / e * 1e3:7.1f}ms (1 thread "
                  f"{t_torch1 / e * 1e3:7.1f}ms)  {line}  load {la0}",
                  flush=True)
            yield


# ----------------------------------------------------------------------------------------------------------------
# Populations (train workload, 1 epoch)


def bench_population(p, prepared, preset, args, result):
    import torch

    from benchmarks.torch_reference.base_training import to_torch_sequential, train_torch
    s = prepared.splits
    nf, nc = prepared.n_features, prepared.n_classes
    x, y = s.x_train, s.y_train
    n, batch = len(x), preset.train_batch
    dims = nets.NetDims.for_preset(preset, nf, nc)
    k_arch, k_init, k_train = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    archs = jax.vmap(lambda k: nets.sample_arch(k, preset, dims, nf, nc))(jax.random.split(k_arch, p))
    variables = nets.init_population(k_init, nets.MaskedMLP(dims=dims), archs)
    dense = [nets.compact(jax.tree_util.tree_map(lambda a, i=i: a[i], variables),
                          jax.tree_util.tree_map(lambda a, i=i: a[i], archs), dims) for i in range(p)]
    specs = [spec_of(d) for d in dense]
    widths = [[h["kernel"].shape[1] for h in sp["hidden"]] for sp in specs]
    data = fit.stack_data([(x, y)], nf)
    fns, compile_s = {}, {"shipped": 0.0, "exact": 0.0, "layer_buckets": 0.0, "layer_buckets_vmap": 0.0}
    # shipped: zoo.build_zoo's width buckets, each trained by `Trainer.train` (chunk_size auto: depth-sorted 4s)
    progs = []
    for width, idx in nets.width_buckets(archs).items():
        bd = nets.NetDims(nf, nc, preset.max_hidden, width)
        sub = jax.tree_util.tree_map(lambda a, idx=idx: a[idx], archs)
        sub = nets.resize_width(sub, width)
        trainer = fit.make_trainer(nets.MaskedMLP(dims=bd), preset.learning_rate)
        v = nets.init_population(k_init, trainer.model, sub)
        a = (k_train, v, trainer.init_opt_state(v), sub, jnp.zeros(len(idx), jnp.int32), data)
        t0 = time.perf_counter()
        c = trainer.train.lower(*a, epochs=1, batch_size=batch).compile()
        compile_s["shipped"] += time.perf_counter() - t0
        progs.append((c, a))
    fns["shipped"] = lambda: [c(*a) for c, a in progs]
    kk = jax.random.PRNGKey(3)
    for v in ("exact", "layer_buckets"):
        progs_v = []
        for sp, w in zip(specs, widths):
            wp = w if v == "exact" else [nets.bucket_width(u) for u in w]
            pp, st, layers = padded_params(sp, wp, False)
            t0 = time.perf_counter()
            c = jax.jit(mlp_program(layers, 0.5, x, y, 1, batch, False)).lower(pp, st, kk).compile()
            compile_s[v] += time.perf_counter() - t0
            progs_v.append((c, (pp, st, kk)))
        fns[v] = lambda progs_v=progs_v: [c(*a) for c, a in progs_v]
    # vmapped per-layer buckets: depth-sorted chunks of 4, each layer padded to its members' largest bucket
    order = sorted(range(p), key=lambda i: len(widths[i]))
    progs_c, chunks = [], []
    for c0 in range(0, p, 4):
        members = order[c0:c0 + 4]
        depth = max(len(widths[i]) for i in members)
        wp = [max((nets.bucket_width(widths[i][j]) for i in members if j < len(widths[i])), default=8)
              for j in range(depth)]
        deepest = max(members, key=lambda i: len(widths[i]))
        pp, st, layers = padded_params(specs[deepest], wp, False)
        run = jax.vmap(mlp_program(layers, 0.5, x, y, 1, batch, False))
        m = len(members)
        margs = (perturb(pp, m, kk), stack(st, m), jax.random.split(kk, m))
        t0 = time.perf_counter()
        c = jax.jit(run).lower(*margs).compile()
        compile_s["layer_buckets_vmap"] += time.perf_counter() - t0
        progs_c.append((c, margs))
        chunks.append({"members": len(members), "padded_widths": wp})
    fns["layer_buckets_vmap"] = lambda: [c(*a) for c, a in progs_c]
    tms = [to_torch_sequential(d) for d in dense]
    xt, yt = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(np.asarray(y).astype(np.int64))
    fns["torch"] = lambda: [train_torch(copy.deepcopy(tm), xt, yt, 1, batch) for tm in tms]
    fns["torch_1thread"] = torch_threads(1, fns["torch"])
    if not args.pop_torch2:  # 2 torch threads on a loaded 2-core machine: minutes of spin-waiting, no information
        fns["torch"] = fns["torch_1thread"]
    for fn in fns.values():
        jax.block_until_ready(fn())
    la0 = loadavg()
    timed = interleaved(fns, args.repeats)
    t_torch, t_torch1 = timed["torch"][0], timed["torch_1thread"][0]
    real = sum(matmul_flops(nf, w, nc, n) for w in widths)
    rec = {"population": p, "workload": "train", "torch_threads": 2 if args.pop_torch2 else 1,
           "batch_size": batch, "rows": n, "epochs_timed": 1,
           "widths": widths, "loadavg_before": la0, "loadavg_after": loadavg(), "compile_s": compile_s,
           "torch_s_per_epoch": t_torch, "torch_all_s": timed["torch"][1], "torch_cpu_s": timed["torch"][2],
           "torch_1thread_s_per_epoch": t_torch1, "torch_1thread_cpu_s": timed["torch_1thread"][2],
           "real_matmul_gflop": real / 1e9,
           "layer_buckets_vmap_chunks": chunks, "variants": {}}
    for v, (best, all_s, cpu) in timed.items():
        if not v.startswith("torch"):
            rec["variants"][v] = {"s_per_epoch": best, "all_s": all_s, "cpu_s": cpu, "ratio_vs_torch": t_torch / best,
                                  "ratio_vs_torch_1thread": t_torch1 / best,
                                  "cpu_ratio_vs_torch": timed["torch"][2] / cpu}
    result["populations"].append(rec)
    line = "  ".join(f"{v} {r['s_per_epoch']:.3f}s x{r['ratio_vs_torch']:.2f}" for v, r in rec["variants"].items())
    print(f"population P={p:<3} torch {t_torch:.3f}s (1 thread {t_torch1:.3f}s)  {line}  load {la0}", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Trace breakdown and the slowest-member tail


def trace_shipped(name, prepared, args, p, result):
    from benchmarks.profile_population_training import trace_breakdown
    widths, pres, acts = NETWORKS[name]
    s = prepared.splits
    nf, nc = prepared.n_features, prepared.n_classes
    dims, arch, model, variables, _ = build_network(widths, pres, acts, nf, nc, jax.random.PRNGKey(0))
    data = fit.pad_data(s.x_finetune, s.y_finetune, len(s.x_finetune), nf)
    prog, _ = shipped_program(model, arch, data, args.epochs, 32, "finetune", p)
    kk = jax.random.PRNGKey(7)
    a = (kk, variables, arch) if p == 1 else (jax.random.split(kk, p), perturb(variables, p, kk), stack(arch, p))
    comp = prog.lower(*a).compile()
    jax.block_until_ready(comp(*a))
    tb = trace_breakdown(comp, a, comp.as_text())
    tb.update(network=name, networks_vmapped=p, workload="finetune", epochs=args.epochs, loadavg=loadavg())
    result["traces"].append(tb)
    print(f"trace {name} B={p}: {tb.get('thunk_seconds_total', 0):.3f}s thunks")
    for label, v in tb.get("by_category", {}).items():
        print(f"{'':>10} {100 * v['share']:5.1f}%  {v['s']:.3f}s  {label}")


def tail_waste(name, prepared, preset, p, result):
    """The vmapped shipped fine-tune with the paper's schedule (100 epochs, patience 10): per-member epochs."""
    widths, pres, acts = NETWORKS[name]
    s = prepared.splits
    nf, nc = prepared.n_features, prepared.n_classes
    dims, arch, model, variables, _ = build_network(widths, pres, acts, nf, nc, jax.random.PRNGKey(0))
    data = fit.pad_data(s.x_finetune, s.y_finetune, len(s.x_finetune), nf)
    learner = fit.Learner(model, fit.masked_adam(1e-3), fit.cross_entropy(True))
    everything = nets.Trainable.everything(dims.max_hidden)
    one = lambda k, v, a: loops.finetune(learner, k, v, a, data, everything, max_epochs=preset.finetune_epochs,
                                         batch_size=preset.finetune_batch, patience=preset.patience)[1]
    kk = jax.random.PRNGKey(11)
    a = (jax.random.split(kk, p), perturb(variables, p, kk), stack(arch, p))
    comp = jax.jit(jax.vmap(one)).lower(*a).compile()
    t0 = time.perf_counter()
    info = jax.block_until_ready(comp(*a))
    wall = time.perf_counter() - t0
    ep = np.asarray(info["epochs"]).astype(int).tolist()
    rec = {"network": name, "networks_vmapped": p, "member_epochs": ep, "loop_epochs": max(ep),
           "wasted_share": 1 - sum(ep) / (p * max(ep)), "wall_s": wall, "loadavg": loadavg()}
    result["tail"].append(rec)
    print(f"tail {name} B={p}: member epochs {ep}, loop runs {max(ep)}: {100 * rec['wasted_share']:.0f}% of the "
          f"member-epochs are padding ({wall:.1f}s)", flush=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="diabetes")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--workloads", default="finetune,train")
    ap.add_argument("--batch-of", default="1,4,8", help="vmapped copies of each network")
    ap.add_argument("--all-vmapped", action="store_true", help="also net_bucket_masked under vmap")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--population", default="", help="e.g. 8,32 (train workload, 1 epoch)")
    ap.add_argument("--pop-torch2", action="store_true", help="population: also PyTorch with 2 threads (else its "
                    "'torch' entry is the 1-thread time)")
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--tail", type=int, default=0, help="vmapped batch size of the slowest-member run (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS_DIR / "profile_paper_finetune_cpu.json"))
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(2)
    torch.set_float32_matmul_precision("highest")
    jax.config.update("jax_default_matmul_precision", "highest")
    preset = get_preset("paper")
    prepared, dataset = load_prepared(args.dataset, preset, args.data_dir, args.seed)
    result = {"benchmark": "profile_paper_finetune", "device": device_info("cpu"), "versions": versions(),
              "torch_threads": torch.get_num_threads(), "loadavg_start": loadavg(),
              "settings": {"dataset": dataset, "preset": "paper", "epochs_timed": args.epochs,
                           "repeats": args.repeats, "dropout_rate": 0.5, "learning_rate": 1e-3,
                           "jax_matmul_precision": "highest", "torch_float32_matmul_precision": "highest",
                           "n_features": prepared.n_features, "n_classes": prepared.n_classes,
                           "rows_finetune": len(prepared.splits.x_finetune),
                           "rows_train": len(prepared.splits.x_train)},
              "networks": [], "populations": [], "traces": [], "tail": []}
    out = Path(args.out)

    def save():
        doc = {k: v for k, v in result.items() if not k.startswith("_")}
        write_json(out, doc)

    for i, name in enumerate([v for v in args.networks.split(",") if v]):
        widths, pres, acts = NETWORKS[name]
        for _ in bench_network(name, widths, pres, acts, prepared, args, jax.random.PRNGKey(i), result):
            save()
    for p in [int(v) for v in args.population.split(",") if v]:
        bench_population(p, prepared, preset, args, result)
        save()
    if args.trace:
        for p in (1, 8):
            trace_shipped(next(iter(NETWORKS)), prepared, args, p, result)
            save()
    if args.tail:
        tail_waste(next(iter(NETWORKS)), prepared, preset, args.tail, result)
        save()
    result["loadavg_end"] = loadavg()
    save()
    print(f"wrote {out}")
    return result




def markdown_table(doc: dict) -> str:
    """The README's tables from a results JSON: ms per epoch and ratio vs PyTorch (1 thread; 2 threads in
    brackets), CPU-seconds ratio vs PyTorch 1 thread."""
    lines = ["| network | workload | B | PyTorch 1 thr / 2 thr ms | " + " | ".join(
        ("shipped", "exact", "layer_buckets", "net_bucket_masked")) + " |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["networks"]:
        cells = []
        for v in ("shipped", "exact", "layer_buckets", "net_bucket_masked"):
            x = r["variants"].get(v)
            cells.append("-" if x is None else
                         f"{1e3 * x['s_per_epoch']:.0f} ms x{x['ratio_vs_torch_1thread']:.2f} "
                         f"(x{x['ratio_vs_torch']:.2f}) cpu x{r['torch_1thread_cpu_s_per_epoch'] / x['cpu_s_per_epoch']:.2f}")
        lines.append(f"| {r['network']} | {r['workload']} | {r['networks_vmapped']} | "
                     f"{1e3 * r['torch_1thread_s_per_epoch']:.0f} / {1e3 * r['torch_s_per_epoch']:.0f} | "
                     + " | ".join(cells) + " |")
    if doc.get("populations"):
        lines += ["", "| P | PyTorch s (threads) | shipped | exact (one after the other) | layer_buckets (one after "
                  "the other) | layer_buckets_vmap (chunks of 4) |", "|---|---|---|---|---|---|"]
        for r in doc["populations"]:
            cells = [f"{x['s_per_epoch']:.2f} s x{x['ratio_vs_torch']:.2f} cpu x{x['cpu_ratio_vs_torch']:.2f}"
                     for x in (r["variants"][v] for v in ("shipped", "exact", "layer_buckets", "layer_buckets_vmap"))]
            lines.append(f"| {r['population']} | {r['torch_s_per_epoch']:.2f} ({r['torch_threads']}) | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["--table"]:
        import json
        print(markdown_table(json.loads(Path(sys.argv[2]).read_text())))
    else:
        main()
