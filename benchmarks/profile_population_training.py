"""Where does the time of neon_jax population training go? Profile and ablations of `trainer.train` (JAX only).

Two tools:

* ``--trace``: runs the shipped `trainer.train` once under ``jax.profiler`` and sums the exclusive time of every
  XLA thunk, grouped by what it computes (matched on the op names in the compiled HLO): matmuls, dropout RNG,
  batch-norm, backward cotangent sums, loop-carry copies, the skipped-batch selects of `fit.sgd_step`, ...
* variants, each compiled ahead of time and timed (best of `--repeats`; wall and process-CPU seconds). They change
  the benchmark's *copy* of the work, never neon_jax itself:

  - ``baseline``       -- `neon_jax.fit.make_trainer` as shipped;
  - ``rbg``            -- the same program with ``jax_default_prng_impl=rbg`` (dropout masks from XLA's
                          RngBitGenerator instead of threefry);
  - ``no_dropout``     -- dropout rate 0 (no random masks at all): an upper bound on what dropout costs;
  - ``no_select``      -- `fit.sgd_step` without the skipped-batch ``where`` over params / stats / Adam state and without
                          the trainable-mask multiplies (both no-ops in base training);
  - ``depth_buckets``  -- the population split by depth, each group trained by its own program with
                          ``max_hidden = depth`` (times summed): what bucketing by depth would save.

Usage::

    PYTHONPATH=. python benchmarks/profile_population_training.py --preset cpu --pop 32 --trace
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.common import (
    DEFAULT_DATA_DIR,
    RESULTS_DIR,
    CpuMeter,
    device_info,
    device_slug,
    load_prepared,
    neon_jax_provenance,
    versions,
)
from benchmarks.population import linear_shapes_padded, train_flops_per_row
from neon_jax import fit, nets
from neon_jax.fit import loops as fit_loops
from neon_jax.presets import ACTIVATION_NAMES, get_preset


def _no_select_sgd_step(learner, params, stats, opt_state, arch, x, y, weight, key, mask, hints=None,
                        extra_loss=None):
    """`fit.sgd_step` without the skipped-batch selects and the trainable masks (base training: all trainable)."""
    (loss, new_stats), grads = jax.value_and_grad(fit.loss, argnums=1, has_aux=True)(
        learner, params, stats, arch, x, y, weight, key, hints, extra_loss)
    updates, new_opt_state = learner.tx.update(grads, opt_state, params, mask=mask)
    return optax.apply_updates(params, updates), new_stats, new_opt_state, loss, weight.sum() > 1.5


@contextlib.contextmanager
def _no_select():
    """Traces `fit.loops` with `_no_select_sgd_step` in place of its `sgd_step` (the benchmark's copy of the work:
    only programs compiled inside the block see it)."""
    saved = fit_loops.sgd_step
    fit_loops.sgd_step = _no_select_sgd_step
    try:
        yield
    finally:
        fit_loops.sgd_step = saved


def _trainer(model, preset) -> fit.Trainer:
    """A fresh (uncached) `fit.Trainer` of `model`, as `fit.make_trainer` builds it."""
    return fit.Trainer(fit.Learner(model, fit.masked_adam(preset.learning_rate), fit.cross_entropy(True)))


def _compile_variant(name, archs, preset, dims, rate, k_init, k_train, data, epochs, batch) -> list:
    """The compiled training program(s) of one variant (`depth_buckets`: one per depth)."""
    if name != "depth_buckets":
        trainer = _trainer(nets.MaskedMLP(dims=dims, dropout_rate=rate), preset)
        return [compile_train(trainer, archs, k_init, k_train, data, epochs, batch)]
    programs = []
    for d, group in depth_groups(archs, preset, dims).items():
        model = nets.MaskedMLP(dims=nets.NetDims(dims.d_max, dims.k_max, d, dims.w_max), dropout_rate=rate)
        programs.append(compile_train(_trainer(model, preset), group, k_init, k_train, data, epochs, batch))
    return programs


# ----------------------------------------------------------------------------------------------------------------
# Populations


def sample_population(preset, dims, n_features, n_classes, p, seed):
    k_arch, k_init, k_train = jax.random.split(jax.random.PRNGKey(seed), 3)
    archs = jax.vmap(lambda k: nets.sample_arch(k, preset, dims, n_features, n_classes))(jax.random.split(k_arch, p))
    return archs, k_init, k_train


def depth_groups(archs, preset, dims) -> dict[int, nets.Arch]:
    """The population's architectures grouped by depth, each rebuilt at ``max_hidden = depth``."""
    host = jax.device_get(archs)
    groups: dict[int, list] = collections.defaultdict(list)
    for i in range(host.depth.shape[0]):
        d = int(host.depth[i])
        dims_d = nets.NetDims(dims.d_max, dims.k_max, d, dims.w_max)
        widths = [int(w) for w in np.asarray(host.widths[i])[:d]]
        acts = [ACTIVATION_NAMES[int(a)] for a in np.asarray(host.activation[i])[:d]]
        pres = [int(q) for q in np.asarray(host.pre_layer[i])[:d]]
        groups[d].append(nets.make_arch(widths, acts, pres, int(host.n_features[i]), int(host.n_classes[i]), dims_d))
    return {d: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *g) for d, g in sorted(groups.items())}


def compile_train(trainer, archs, k_init, k_train, data, epochs, batch):
    variables = nets.init_population(k_init, trainer.model, archs)
    opt_state = trainer.init_opt_state(variables)
    index = jnp.zeros(archs.depth.shape[0], jnp.int32)
    compiled = trainer.train.lower(k_train, variables, opt_state, archs, index, data, epochs=epochs,
                                   batch_size=batch).compile()
    return compiled, (k_train, variables, opt_state, archs, index, data)


def time_programs(programs, repeats):
    """Best total over `repeats` of running every (compiled, args) in turn; returns (wall, cpu, all walls)."""
    walls, cpus = [], []
    for _ in range(repeats):
        with CpuMeter() as m:
            for compiled, args in programs:
                jax.block_until_ready(compiled(*args))
        walls.append(m.wall_s)
        cpus.append(m.cpu_s)
    return min(walls), min(cpus), walls


# ----------------------------------------------------------------------------------------------------------------
# Trace breakdown

CATEGORIES = [  # (label, test on (thunk name, op_name metadata)); first match wins
    ("dropout RNG (threefry bernoulli)", lambda n, op: any(k in op for k in ("bernoulli", "threefry", "_uniform",
                                                                               "random_bits"))),
    ("batch-norm (fwd + bwd)", lambda n, op: "MaskedBatchNorm" in op or re.search(r"/bn\d+/", op) is not None),
    ("backward cotangent sums (add_any-rooted fusions, with whatever XLA fused into them)",
     lambda n, op: op.endswith("add_any")),
    ("loop-carry copies", lambda n, op: re.sub(r"^end: ", "", n).startswith("copy")),
    ("_sgd_step skip-select + Adam (fused)",
     lambda n, op: op.endswith("closed_call/while/body/closed_call/jit(_where)/select_n")),
    ("matmuls (dot)", lambda n, op: n.startswith("dot") or ("dot_general" in op and "MaskedMLP" in op)),
    ("activations", lambda n, op: any(k in op for k in ("tanh", "logistic", "relu"))),
    ("epoch shuffle (argsort)", lambda n, op: "sort" in op),
    ("loss (double softmax)", lambda n, op: "softmax" in op or "log_probs" in op),
    ("Adam / updates", lambda n, op: any(k in op for k in ("adam", "scale_by", "apply_updates", "moment"))),
    ("masks / selects / rest of MaskedMLP", lambda n, op: "MaskedMLP" in op),
]


def trace_breakdown(compiled, args, hlo_text: str) -> dict:
    """Exclusive thunk time per category for one run of `compiled` (CPU thunk runtime traces)."""
    meta = {m.group(1): m.group(2) for m in re.finditer(
        r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"', hlo_text, re.M)}
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        jax.block_until_ready(compiled(*args))
        jax.profiler.stop_trace()
        files = glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True)
        if not files:
            return {"error": "no perfetto trace written"}
        events = json.load(gzip.open(files[0]))["traceEvents"]
    events = [e for e in events if e.get("ph") == "X" and "dur" in e and not e["name"].startswith(("$", "Thunk",
                                                                                                   "Pjit"))]
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e["tid"]].append(e)
    for es in by_thread.values():  # exclusive time: subtract directly nested events (while bodies, ...)
        es.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in es:
            e["excl"] = e["dur"]
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            if stack:
                stack[-1]["excl"] -= e["dur"]
            stack.append(e)
    totals = collections.defaultdict(float)
    other = collections.defaultdict(float)  # what "other" holds: thunk name (digits dropped) and op_name
    for e in events:
        name = e["name"]
        op = meta.get(name, meta.get(name.replace("end: ", ""), ""))
        label = next((lab for lab, test in CATEGORIES if test(name, op)), "other")
        totals[label] += e["excl"] / 1e6
        if label == "other":
            other[f"{re.sub(r'[.][0-9]+$', '', name)} | {op[-90:]}"] += e["excl"] / 1e6
    total = sum(totals.values())
    return {"thunk_seconds_total": total,
            "by_category": {k: {"s": v, "share": v / total} for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
            "other_top": [{"thunk | op_name": k, "s": v} for k, v in sorted(other.items(), key=lambda kv: -kv[1])[:15]]}


# ----------------------------------------------------------------------------------------------------------------


VARIANTS = ("baseline", "rbg", "no_dropout", "no_select", "depth_buckets")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="diabetes")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    ap.add_argument("--preset", default="cpu", choices=["cpu", "paper", "tiny"])
    ap.add_argument("--pop", default="32")
    ap.add_argument("--epochs", type=int, default=None, help="default: 5 (cpu/tiny), 1 (paper)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--trace", action="store_true", help="also profile the baseline and break its time down")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    jax.config.update("jax_default_matmul_precision", "highest")
    preset = get_preset(args.preset)
    epochs = args.epochs if args.epochs is not None else (1 if preset.name == "paper" else 5)
    batch = preset.train_batch
    prepared, dataset = load_prepared(args.dataset, preset, args.data_dir, args.seed)
    s = prepared.splits
    nf, nc = prepared.n_features, prepared.n_classes
    dims = nets.NetDims.for_preset(preset, nf, nc)
    data = fit.stack_data([(s.x_train, s.y_train)], dims.d_max)
    n_batches = -(-int(data.x.shape[1]) // batch)
    steps = epochs * n_batches
    flops_row = train_flops_per_row(linear_shapes_padded(dims))
    result = {"benchmark": "population_training_profile", "device": device_info("-"), "versions": versions(),
              "neon_jax": neon_jax_provenance(),
              "settings": {"dataset": dataset, "preset": preset.name, "epochs": epochs, "batch_size": batch,
                           "steps_per_epoch": n_batches, "repeats": args.repeats},
              "results": [], "traces": []}
    out_path = (Path(args.out) if args.out
                else RESULTS_DIR / f"profile_population_training_{preset.name}_{device_slug()}.json")

    def save():
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'P':>5} {'variant':>14} {'compile s':>9} {'run s':>8} {'cpu s':>8} {'ms/step':>8} {'vs base':>8} "
          f"{'other cpu':>9}")
    for p in [int(v) for v in args.pop.split(",")]:
        base_s = None
        for name in args.variants.split(","):
            if name not in VARIANTS:
                raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
            jax.config.update("jax_default_prng_impl", "rbg" if name == "rbg" else "threefry2x32")
            rate = 0.0 if name == "no_dropout" else preset.dropout_rate
            patch = _no_select() if name == "no_select" else contextlib.nullcontext()
            archs, k_init, k_train = sample_population(preset, dims, nf, nc, p, args.seed)
            t0 = time.perf_counter()
            with patch:
                programs = _compile_variant(name, archs, preset, dims, rate, k_init, k_train, data, epochs, batch)
            compile_s = time.perf_counter() - t0
            with CpuMeter() as meter:
                run_s, cpu_s, walls = time_programs(programs, args.repeats)
            base_s = run_s if name == "baseline" else base_s
            r = {"population": p, "variant": name, "programs": len(programs), "compile_s": compile_s,
                 "run_s": run_s, "cpu_s": cpu_s, "run_s_all": walls, "ms_per_step": 1e3 * run_s / steps,
                 "relative_to_baseline": run_s / base_s if base_s else None, "other_cpu_share": meter.other_share,
                 "padded_matmul_gflops_per_s": p * steps * batch * flops_row / run_s / 1e9}
            result["results"].append(r)
            rel = f"{r['relative_to_baseline']:.2f}" if base_s else "-"
            other = f"{meter.other_share:.2f}" if meter.other_share is not None else "-"
            print(f"{p:>5} {name:>14} {compile_s:>9.2f} {run_s:>8.3f} {cpu_s:>8.3f} {r['ms_per_step']:>8.2f} "
                  f"{rel:>8} {other:>9}", flush=True)
            if args.trace and name == "baseline":
                compiled, call_args = programs[0]
                tb = trace_breakdown(compiled, call_args, compiled.as_text())
                tb["population"] = p
                result["traces"].append(tb)
                for label, v in tb.get("by_category", {}).items():
                    print(f"{'':>20} {100 * v['share']:5.1f}%  {label}")
            save()
    jax.config.update("jax_default_prng_impl", "threefry2x32")
    save()
    print(f"wrote {out_path}")
    return result


if __name__ == "__main__":
    main()
