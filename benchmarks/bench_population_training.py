"""Benchmark: base-network training of a population, neon_jax (one jitted program) vs plain PyTorch.

For each population size P the same P architectures (``nets.sample_arch`` with a fixed key) and the same initial
weights train on the same real dataset for the same epochs and batch size:

* JAX: ``trainer.train`` (vmap over networks, scan over epochs and minibatches), compiled ahead of time
  (``trainer.train.lower(...).compile()``, reported apart) and then run with ``jax.block_until_ready``, best of
  `--repeats`;
* PyTorch: the original's loop, each network's ``nn.Sequential`` trained one after the other
  (``benchmarks.torch_reference.train_torch``), total seconds; `--torch-repeats` passes, each from the initial
  weights, and the best time of every network summed.

Before any timing, every network is checked on both sides: eval-mode outputs equal (max abs diff < 1e-5) at the
initial weights and after the JAX training, and the train-mode loss and gradients equal on one batch (dropout off).

Usage::

    PYTHONPATH=. python benchmarks/bench_population_training.py --preset cpu --pop 1,8,32,128
    PYTHONPATH=. python benchmarks/bench_population_training.py --preset paper --pop 1,8,32

Writes ``benchmarks/results/population_training_<preset>_<device>.json`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    DEFAULT_DATA_DIR,
    RESULTS_DIR,
    core_count,
    device_info,
    device_slug,
    load_prepared,
    neon_jax_provenance,
    take,
    versions,
)
from neon_jax import fit, nets
from neon_jax.presets import get_preset

# ----------------------------------------------------------------------------------------------------------------
# Environment description












class CpuMeter:
    """Wall time, this process's CPU time and the share of the machine's CPU that *other* processes used.

    The share comes from /proc/stat (all CPUs) minus this process's own CPU time; on a machine shared with other
    jobs it says how far a wall-clock time is from a quiet-machine one (0 = nobody else ran).
    """

    def __enter__(self):
        self._stat0, self._self0, self._t0 = self._proc_stat(), self._self_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = self._self_cpu() - self._self0
        stat1 = self._proc_stat()
        if stat1 is None or self._stat0 is None:
            self.other_share = None
            return False
        busy = (stat1[0] - self._stat0[0]) / os.sysconf("SC_CLK_TCK")
        total = (stat1[1] - self._stat0[1]) / os.sysconf("SC_CLK_TCK")
        self.other_share = max(0.0, busy - self.cpu_s) / total if total > 0 else None
        return False

    @staticmethod
    def _self_cpu() -> float:
        t = os.times()
        return t.user + t.system

    @staticmethod
    def _proc_stat():
        try:
            f = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f[:8]) - idle, sum(f[:8])




# ----------------------------------------------------------------------------------------------------------------
# Work description




def linear_shapes_padded(dims: nets.NetDims) -> list[tuple[int, int]]:
    return ([(dims.d_max, dims.w_max)] + [(dims.w_max, dims.w_max)] * (dims.max_hidden - 1)
            + [(dims.w_max, dims.k_max)])


def linear_shapes_real(dense) -> list[tuple[int, int]]:
    return [tuple(l["kernel"].shape) for l in dense.layers if l["kind"] == "linear"]


def train_flops_per_row(shapes) -> int:
    """Matmul FLOPs of one training row: forward 2*in*out, backward twice that (input and weight gradients)."""
    return int(sum(3 * 2 * i * o for i, o in shapes))




def choose_torch_threads(setting, dense_nets, x, y, batch_size, lr, seed, device):
    """The PyTorch thread count to time with, and the probe times that chose it.

    ``setting`` is an int (used as is) or "auto": one epoch of the first networks is timed with 1 thread and with
    all cores (interleaved, best of 2) and the faster count wins, so PyTorch is never timed at a handicap (tiny
    networks run faster on one thread, and an OpenMP team of 2 threads degrades badly when the cores are shared).
    """
    import torch

    from benchmarks.torch_reference import to_torch_sequential, train_torch

    if setting != "auto":
        return int(setting), None
    candidates = sorted({1, core_count()})
    best = {n: float("inf") for n in candidates}
    for _ in range(2):
        for n in candidates:
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            for i, d in enumerate(dense_nets):
                train_torch(to_torch_sequential(d).to(device), x, y, 1, batch_size, lr, seed=seed + i, device=device)
            if device != "cpu":
                torch.cuda.synchronize()
            best[n] = min(best[n], time.perf_counter() - t0)
    return min(best, key=best.get), {str(n): t for n, t in best.items()}


# ----------------------------------------------------------------------------------------------------------------
# One population size


def bench_population(p: int, *, preset, dims, n_features, n_classes, model, trainer, data, x_train, y_train, x_check,
                     epochs, batch_size, repeats, torch_repeats, seed, torch_max_nets, torch_device, parity_nets,
                     torch_threads="auto", skip_torch=False, chunk_size=None, buckets=False) -> dict:
    """Times one population size on both sides (after the parity checks); returns its JSON record.

    The JAX side is ``trainer.train`` with ``chunk_size=None`` (one vmap over the population: the original
    neon_jax program, "jax_run_s"); with `chunk_size` an int, the depth-sorted chunks of that size are timed too,
    interleaved with the others ("jax_sorted_chunks").
    """
    import torch

    from benchmarks.torch_reference import (
        check_eval_parity,
        check_train_loss_parity,
        to_torch_sequential,
        train_torch,
    )

    load_start = os.getloadavg()[0]
    k_arch, k_init, k_train = jax.random.split(jax.random.PRNGKey(seed), 3)
    archs = jax.vmap(lambda k: nets.sample_arch(k, preset, dims, n_features, n_classes))(
        jax.random.split(k_arch, p))
    variables = nets.init_population(k_init, model, archs)
    host_vars, host_archs = jax.device_get(variables), jax.device_get(archs)  # one transfer, then NumPy slices
    opt_state = trainer.init_opt_state(variables)
    index = jnp.zeros(p, jnp.int32)
    k = n_classes

    stages = {}  # wall seconds of each stage of this benchmark (diagnostics)
    t_stage = time.perf_counter()
    # --- identical networks on both sides, checked -------------------------------------------------------------
    dense = [nets.compact(take(host_vars, i), take(host_archs, i), dims, preset.dropout_rate) for i in range(p)]
    n_torch = p if torch_max_nets is None else min(p, torch_max_nets)
    x_check_pad = jnp.asarray(np.pad(x_check, ((0, 0), (0, dims.d_max - x_check.shape[1]))))
    probs = np.asarray(jax.nn.softmax(trainer.predict(variables, archs, x_check_pad), axis=-1))[..., :k]
    eval_diff = max(check_eval_parity(to_torch_sequential(dense[i]), probs[i], x_check) for i in range(p))

    # train-mode loss and gradients on one batch, dropout off (its random masks cannot be matched)
    model0 = nets.MaskedMLP(dims=dims, dropout_rate=0.0)
    trainer0 = fit.make_trainer(model0, preset.learning_rate)
    xb, yb = x_train[:batch_size], y_train[:batch_size]
    xb_pad = jnp.asarray(np.pad(xb, ((0, 0), (0, dims.d_max - xb.shape[1]))))
    wb = jnp.ones(len(yb), jnp.float32)
    grad_fn = jax.jit(jax.value_and_grad(trainer0._loss, has_aux=True))
    loss_diffs, grad_diffs = [], []
    for i in range(min(p, parity_nets)):
        v, a = take(host_vars, i), take(host_archs, i)
        (loss, _), grads = grad_fn(v["params"], v["batch_stats"], a, xb_pad, jnp.asarray(yb), wb,
                                   jax.random.PRNGKey(0))
        g_dense = nets.compact({"params": grads, "batch_stats": v["batch_stats"]}, a, dims, 0.0)
        r = check_train_loss_parity(to_torch_sequential(dense[i], dropout_rate=0.0), float(loss), g_dense, xb, yb)
        loss_diffs.append(r["loss_abs_diff"])
        grad_diffs.append(r["grad_max_abs_diff"])

    stages["parity_checks"] = time.perf_counter() - t_stage
    # --- JAX: ahead-of-time compile -----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    compiled = trainer.train.lower(k_train, variables, opt_state, archs, index, data,
                                   epochs=epochs, batch_size=batch_size, chunk_size=None).compile()
    compile_s = time.perf_counter() - t0
    stages["jax_compile"] = compile_s
    chunked = chunked_times = chunked_out = None
    if chunk_size:
        t0 = time.perf_counter()
        chunked = trainer.train.lower(k_train, variables, opt_state, archs, index, data, epochs=epochs,
                                      batch_size=batch_size, chunk_size=int(chunk_size)).compile()
        chunked_compile_s = time.perf_counter() - t0
        stages["jax_compile_sorted_chunks"] = chunked_compile_s
        chunked_times = []

    # --- PyTorch setup: warm-up, thread count -------------------------------------------------------------------------
    threads_used = probe = None
    if not skip_torch:
        warm = to_torch_sequential(dense[0]).to(torch_device)  # first-call overheads (allocator, kernels) off the clock
        train_torch(warm, x_train, y_train, 1, batch_size, preset.learning_rate, seed=seed, device=torch_device)
        threads_used, probe = choose_torch_threads(torch_threads, dense[:3], x_train, y_train, batch_size,
                                                   preset.learning_rate, seed, torch_device)
        torch.set_num_threads(threads_used)

    # --- timing: JAX runs and PyTorch passes interleaved, so both see the same machine conditions ------------------
    run_times, jax_meters, torch_meters, torch_losses = [], [], [], []
    per_net = np.zeros((0 if skip_torch else torch_repeats, n_torch))
    out = None
    for r in range(max(repeats, 0 if skip_torch else torch_repeats)):
        if r < repeats:
            with CpuMeter() as meter:
                out = jax.block_until_ready(compiled(k_train, variables, opt_state, archs, index, data))
            run_times.append(meter.wall_s)
            jax_meters.append(meter)
            if chunked is not None:
                t0 = time.perf_counter()
                chunked_out = jax.block_until_ready(chunked(k_train, variables, opt_state, archs, index, data))
                chunked_times.append(time.perf_counter() - t0)
        if not skip_torch and r < torch_repeats:  # every pass starts from the initial weights again
            with CpuMeter() as meter:
                torch_losses = []
                for i in range(n_torch):
                    m = to_torch_sequential(dense[i]).to(torch_device)
                    t0 = time.perf_counter()
                    torch_losses.append(train_torch(m, x_train, y_train, epochs, batch_size, preset.learning_rate,
                                                    seed=seed + i, device=torch_device))
                    if torch_device != "cpu":
                        torch.cuda.synchronize()
                    per_net[r, i] = time.perf_counter() - t0
            torch_meters.append(meter)
    jax_s = min(run_times)
    jax_best = jax_meters[int(np.argmin(run_times))]
    torch_s = torch_per_net = torch_totals = None
    if not skip_torch:
        # best pass of every network, summed (favours PyTorch slightly over the best total)
        torch_per_net = per_net.min(0).tolist()
        torch_totals = (per_net.sum(1) * p / n_torch).tolist()
        torch_s = float(np.sum(torch_per_net)) * p / n_torch
    stages["timing"] = time.perf_counter() - t_stage - stages["parity_checks"] - compile_s - \
        stages.get("jax_compile_sorted_chunks", 0.0)

    # --- the JAX result is sane, and its trained networks (running batch-norm statistics included) still match
    trained, _, jax_losses = out
    jax_losses = np.asarray(jax_losses)
    if not np.all(np.isfinite(jax_losses)):
        raise AssertionError("JAX training produced non-finite losses")
    host_trained = jax.device_get(trained)
    trained_probs = np.asarray(jax.nn.softmax(trainer.predict(trained, archs, x_check_pad), axis=-1))[..., :k]
    trained_diff = max(
        check_eval_parity(to_torch_sequential(nets.compact(take(host_trained, i), take(host_archs, i), dims,
                                                           preset.dropout_rate)), trained_probs[i], x_check)
        for i in range(min(p, parity_nets)))

    # --- work accounting --------------------------------------------------------------------------------------------
    n_rows = int(len(y_train))
    n_max = int(data.x.shape[1])
    n_batches = -(-n_max // batch_size)
    padded_flops_row = train_flops_per_row(linear_shapes_padded(dims))
    real_flops_row = [train_flops_per_row(linear_shapes_real(d)) for d in dense]
    jax_flops = p * epochs * n_batches * batch_size * padded_flops_row  # padded rows of the last batch included
    real_flops = epochs * n_rows * float(np.sum(real_flops_row))
    widths = [d.hidden_widths for d in dense]
    res = {
        "population": p,
        "jax_compile_s": compile_s,
        "jax_run_s": jax_s,
        "jax_run_s_all_repeats": run_times,
        "torch_run_s": torch_s,
        "torch_run_s_all_repeats": torch_totals,
        "torch_nets_timed": n_torch if not skip_torch else 0,
        "torch_threads_used": threads_used,
        "torch_threads_probe_s": probe,
        "torch_extrapolated": (not skip_torch) and n_torch < p,
        "speedup": (torch_s / jax_s) if torch_s else None,
        "jax_s_per_network_epoch": jax_s / (p * epochs),
        "torch_s_per_network_epoch": (torch_s / (p * epochs)) if torch_s else None,
        "jax_s_per_epoch": jax_s / epochs,
        "torch_s_per_epoch": (torch_s / epochs) if torch_s else None,
        "jax_ms_per_step": 1e3 * jax_s / (epochs * n_batches),
        "steps_per_epoch": n_batches,
        "padded_shape": {
            "population": p, "d_max": dims.d_max, "w_max": dims.w_max, "max_hidden": dims.max_hidden,
            "k_max": dims.k_max, "rows_padded": n_max, "batch": batch_size,
            "linear_shapes": linear_shapes_padded(dims),
            "params_per_network_padded": int(sum(i * o + o for i, o in linear_shapes_padded(dims))),
        },
        "real_networks": {
            "depths": [len(w) for w in widths],
            "mean_depth": float(np.mean([len(w) for w in widths])),
            "mean_width": float(np.mean([x for w in widths for x in w])),
            "params_mean": float(np.mean([d.num_params() for d in dense])),
        },
        "flops": {
            "jax_padded_matmul_flops": float(jax_flops),
            "real_matmul_flops": float(real_flops),
            "padded_over_real": float(jax_flops / real_flops),
            "jax_padded_gflops_per_s": float(jax_flops / jax_s / 1e9),
            "torch_real_gflops_per_s": float(real_flops / torch_s / 1e9) if torch_s else None,
        },
        "parity": {
            "eval_max_abs_diff_initial": eval_diff,
            "eval_max_abs_diff_after_jax_training": trained_diff,
            "train_loss_max_abs_diff": max(loss_diffs) if loss_diffs else None,
            "train_grad_max_abs_diff": max(grad_diffs) if grad_diffs else None,
            "nets_checked_eval": p,
            "nets_checked_train": len(loss_diffs),
        },
        "final_epoch_loss_mean": {
            "jax": float(jax_losses[:, -1].mean()),
            "torch": float(np.mean([l[-1] for l in torch_losses])) if torch_losses else None,
        },
    }
    if chunked is not None:
        c_losses = np.asarray(chunked_out[2])
        c_probs = np.asarray(jax.nn.softmax(trainer.predict(chunked_out[0], archs, x_check_pad), axis=-1))[..., :k]
        res["jax_sorted_chunks"] = {
            "chunk_size": int(chunk_size), "compile_s": stages["jax_compile_sorted_chunks"],
            "run_s": min(chunked_times), "run_s_all_repeats": chunked_times,
            "speedup": (torch_s / min(chunked_times)) if torch_s else None,
            "over_one_vmap": jax_s / min(chunked_times),
            "epoch_loss_max_abs_diff_vs_one_vmap": float(np.abs(c_losses - jax_losses).max()),
            "check_probabilities_max_abs_diff_vs_one_vmap": float(np.abs(c_probs - trained_probs).max()),
            "note": ("trainer.train(chunk_size=k): networks sorted by depth, k at a time, hidden layers and Adam "
                     "steps none of a chunk's networks has skipped (the library default on one CPU device); "
                     "same keys, numbers equal up to float rounding amplified by Adam"),
        }
    if buckets:
        res["jax_buckets"] = bench_buckets(
            p, preset=preset, dims=dims, archs=host_archs, k_init=k_init, k_train=k_train, data=data,
            epochs=epochs, batch_size=batch_size, repeats=repeats, chunk_size=chunk_size or "auto",
            padded_losses=jax_losses, padded_probs=trained_probs, x_check_pad=x_check_pad, torch_s=torch_s,
            padded_s=jax_s, padded_chunks_s=min(chunked_times) if chunked_times else None,
            real_flops=real_flops, n_batches=n_batches)
    if torch_per_net is not None:
        res["torch_s_per_network"] = torch_per_net
    res["load_average_1min"] = {"start": load_start, "end": os.getloadavg()[0]}
    res["contention"] = {
        "note": ("share of the machine's CPU time used by other processes while timing (0 = quiet machine); "
                 "cpu_s = this process's CPU seconds (all threads)"),
        "jax_best_run_other_share": jax_best.other_share, "jax_best_run_cpu_s": jax_best.cpu_s,
        "torch_passes_other_share": [m.other_share for m in torch_meters],
        "torch_passes_cpu_s": [m.cpu_s for m in torch_meters],
    }
    res["stage_seconds"] = stages
    return res


def bench_buckets(p, *, preset, dims, archs, k_init, k_train, data, epochs, batch_size, repeats, chunk_size,
                  padded_losses, padded_probs, x_check_pad, torch_s, padded_s, padded_chunks_s, real_flops,
                  n_batches) -> dict:
    """The same P networks trained as `zoo.build_zoo` trains them: grouped by width bucket (`nets.width_buckets`),
    one program per bucket at its own padded width, each network with the initial weights and keys of the padded
    run (the draws do not depend on the padding). Compile seconds apart; the run is the sum over buckets of each
    bucket's best of `repeats`; the per-network losses and outputs are checked against the padded run's."""
    groups = nets.width_buckets(archs)
    init_keys, train_keys = jax.random.split(k_init, p), jax.random.split(k_train, p)
    losses, probs = np.zeros_like(padded_losses), np.zeros_like(padded_probs)
    per_bucket, compile_s, run_s, flops = {}, 0.0, 0.0, 0.0
    for width, idx in groups.items():
        bdims = dataclasses.replace(dims, w_max=width)
        model = nets.make_model(bdims, preset)
        trainer = fit.make_trainer(model, preset.learning_rate)
        barchs = nets.resize_width(jax.tree_util.tree_map(lambda a: jnp.asarray(a[idx]), archs), width)
        variables = jax.vmap(lambda k, a: nets.init_network(k, model, a))(init_keys[idx], barchs)
        opt_state = trainer.init_opt_state(variables)
        index = jnp.zeros(len(idx), jnp.int32)
        keys = train_keys[idx]
        t0 = time.perf_counter()
        compiled = trainer.train.lower(keys, variables, opt_state, barchs, index, data, epochs=epochs,
                                       batch_size=batch_size, chunk_size=chunk_size).compile()
        c = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(keys, variables, opt_state, barchs, index, data))
            times.append(time.perf_counter() - t0)
        losses[idx] = np.asarray(out[2])
        probs[idx] = np.asarray(jax.nn.softmax(trainer.predict(out[0], barchs, x_check_pad), axis=-1))[
            ..., :padded_probs.shape[-1]]
        bflops = len(idx) * epochs * n_batches * batch_size * train_flops_per_row(linear_shapes_padded(bdims))
        per_bucket[str(width)] = {"networks": int(len(idx)), "compile_s": c, "run_s": min(times),
                                  "run_s_all_repeats": times}
        compile_s, run_s, flops = compile_s + c, run_s + min(times), flops + bflops
    return {
        "buckets": per_bucket, "compiles": len(groups), "chunk_size": chunk_size, "compile_s": compile_s,
        "run_s": run_s, "speedup": (torch_s / run_s) if torch_s else None,
        "over_padded_one_vmap": padded_s / run_s,
        "over_padded_sorted_chunks": (padded_chunks_s / run_s) if padded_chunks_s else None,
        "padded_matmul_flops": float(flops), "padded_over_real": float(flops / real_flops),
        "epoch_loss_max_abs_diff_vs_padded": float(np.abs(losses - padded_losses).max()),
        "check_probabilities_max_abs_diff_vs_padded": float(np.abs(probs - padded_probs).max()),
        "note": ("zoo.build_zoo's path: one program per width bucket (the widest layer rounded up onto "
                 "nets.bucket_width's ladder), networks sorted by depth in chunks within a bucket; the matmul FLOPs "
                 "count every layer at its bucket's width up to max_hidden (the chunks skip the layers past a "
                 "chunk's deepest network, so the real work is less)"),
    }


def make_notes(result: dict, dims: nets.NetDims, extra: list[str]) -> list[str]:
    """Plain-language caveats derived from the measurements (padding, machine sharing, thread choice)."""
    notes = []
    rs = result["results"]
    s = result["settings"]
    if not rs:
        return list(extra)
    last = rs[-1]
    notes.append(
        f"Padding: the JAX program trains every network at the padded shape ({dims.max_hidden} hidden layers of "
        f"{dims.w_max} units, input {dims.d_max}, output {dims.k_max}) with masks, while PyTorch runs only each "
        f"network's real layers; at P={last['population']} the padded matmul FLOPs are "
        f"{last['flops']['padded_over_real']:.1f}x the real ones (mean real depth "
        f"{last['real_networks']['mean_depth']:.2f} of {dims.max_hidden}, mean real width "
        f"{last['real_networks']['mean_width']:.0f} of {dims.w_max}).")
    if s["preset"] == "paper" and result["device"]["jax_platform"] == "cpu":
        notes.append(
            "Paper widths on CPU: FLOPs, not dispatch, bound both sides here, so the padded masked program (every "
            f"network doing {dims.max_hidden - 1} hidden {dims.w_max}x{dims.w_max} layers, plus Adam over all "
            "padded parameters) loses to PyTorch "
            "running the real layers one network at a time; the padded batch pays off only where the device has "
            "far more FLOPs than one network can use (accelerators), or with depth/width bucketing.")
    shares = [r["contention"]["jax_best_run_other_share"] for r in rs] + [
        x for r in rs for x in r["contention"]["torch_passes_other_share"]]
    shares = [x for x in shares if x is not None]
    if shares and max(shares) > 0.15:
        notes.append(
            f"Shared machine: other processes used {100 * min(shares):.0f}-{100 * max(shares):.0f}% of all CPU time "
            "while this benchmark timed (see each result's 'contention'). Both sides ran under the same "
            "conditions (JAX best of its repeats, PyTorch best of its passes per network), but absolute times are "
            "inflated and ratios carry roughly +-20% noise; rerun on a quiet machine for clean numbers.")
    used = sorted({r["torch_threads_used"] for r in rs if r["torch_threads_used"] is not None})
    if s["torch_threads"] == "auto" and used:
        notes.append(
            f"PyTorch threads: 'auto' chose {used} (the faster of 1 and {result['device']['cpu_cores']} threads in "
            "a probe, see torch_threads_probe_s); timing PyTorch with all cores would have been slower here, so "
            "the speedups are against PyTorch's better setting.")
    notes.append(s["epochs_note"] + ".")
    return notes + list(extra)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="diabetes")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    ap.add_argument("--preset", default="cpu", choices=["cpu", "paper", "tiny"])
    ap.add_argument("--pop", default="1,8,32,128", help="comma-separated population sizes")
    ap.add_argument("--epochs", type=int, default=None,
                    help="default: 5 (cpu/tiny preset), 1 (paper preset); the per-epoch time is what matters")
    ap.add_argument("--repeats", type=int, default=3, help="JAX steady-state repeats (best is reported)")
    ap.add_argument("--torch-repeats", type=int, default=None,
                    help="PyTorch passes over the population (default: --repeats); per network the best counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-max-nets", type=int, default=None,
                    help="time at most this many PyTorch networks per population and extrapolate linearly")
    ap.add_argument("--torch-threads", default="auto",
                    help="PyTorch intra-op threads: a number, or 'auto' (default): whichever of 1 and all cores "
                         "trains the first networks faster (probe times are in the JSON)")
    ap.add_argument("--torch-device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--skip-torch", action="store_true", help="time the JAX side only")
    ap.add_argument("--parity-nets", type=int, default=4,
                    help="networks per population whose train-mode loss/gradients are checked")
    ap.add_argument("--matmul-precision", default="highest", help="jax_default_matmul_precision (float32: highest)")
    ap.add_argument("--chunk-size", type=int, default=None,
                    help="also time the depth-sorted chunks of this size (the library default on one CPU: 4)")
    ap.add_argument("--buckets", action="store_true",
                    help="also time the networks grouped by width bucket, as zoo.build_zoo trains them")
    ap.add_argument("--out", default=None, help="output JSON path")
    ap.add_argument("--note", action="append", default=[], help="free-text note for the JSON (repeatable)")
    args = ap.parse_args(argv)
    if args.torch_repeats is None:
        args.torch_repeats = args.repeats

    import torch

    jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    torch.set_float32_matmul_precision("highest")
    torch_threads = args.torch_threads
    torch.set_num_threads(core_count() if torch_threads == "auto" else int(torch_threads))
    torch_device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")

    preset = get_preset(args.preset)
    epochs = args.epochs if args.epochs is not None else (1 if preset.name == "paper" else 5)
    batch_size = preset.train_batch
    pops = [int(s) for s in args.pop.split(",") if s.strip()]

    prepared, dataset = load_prepared(args.dataset, preset, args.data_dir, args.seed)
    s = prepared.splits
    x_train, y_train = np.asarray(s.x_train, np.float32), np.asarray(s.y_train, np.int64)
    x_check = np.asarray(s.x_test, np.float32)
    dims = nets.NetDims.for_preset(preset, prepared.n_features, prepared.n_classes)
    model = nets.make_model(dims, preset)
    trainer = fit.make_trainer(model, preset.learning_rate)
    data = fit.stack_data([(x_train, y_train)], dims.d_max)

    result = {
        "benchmark": "population_training",
        "description": ("Base-network training (neon_spec.md §7) of P random networks: neon_jax trainer.train "
                        "(one jitted vmap/scan program, masked padded networks) vs the original's plain PyTorch "
                        "loop over nn.Sequential models, one after the other. Same architectures, initial "
                        "weights, data, epochs and batch size. Times are seconds for the whole population; "
                        "speedup = torch_run_s / jax_run_s (JAX steady state, compile time reported apart)."),
        "device": device_info(torch_device),
        "versions": versions(),
        "neon_jax": neon_jax_provenance(),
        "settings": {
            "dataset": dataset, "dataset_source": prepared.dataset.source,
            "rows_total": prepared.dataset.n_rows, "rows_train": int(len(y_train)),
            "features": prepared.n_features, "classes": prepared.n_classes,
            "preset": preset.name, "epochs": epochs,
            "epochs_note": (f"the full schedule is preset.train_epochs = {preset.train_epochs} epochs; a run is "
                            "epochs x per-epoch time, so the per-epoch (and per-network-epoch) time is what matters"),
            "batch_size": batch_size, "learning_rate": preset.learning_rate, "dtype": "float32",
            "jax_matmul_precision": str(jax.config.jax_default_matmul_precision),
            "torch_float32_matmul_precision": torch.get_float32_matmul_precision(),
            "torch_threads": torch_threads, "jax_repeats": args.repeats, "torch_repeats": args.torch_repeats,
            "seed": args.seed,
            "widths": list(preset.widths), "max_hidden": preset.max_hidden,
            "double_softmax": True,
            "torch_loop": "torch.randperm shuffle per epoch, index-sliced minibatches, size-1 batches skipped, "
                          "Adam defaults, CrossEntropyLoss on the Softmax output, model.train()",
        },
        "results": [],
    }
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"population_training_{preset.name}_{device_slug()}.json"

    header = (f"{'P':>5} {'jax compile s':>13} {'jax run s':>10} {'torch s':>10} {'speedup':>8} "
              f"{'jax ms/net-ep':>13} {'torch ms/net-ep':>15} {'pad/real flops':>14}")
    print(f"dataset {dataset} ({len(y_train)} train rows, {prepared.n_features} features, "
          f"{prepared.n_classes} classes), preset {preset.name}, {epochs} epoch(s), batch {batch_size}, "
          f"device {result['device']['jax_device_kind']}, {core_count()} cores")
    print(header)
    for p in pops:
        r = bench_population(p, preset=preset, dims=dims, n_features=prepared.n_features,
                             n_classes=prepared.n_classes, model=model, trainer=trainer, data=data, x_train=x_train,
                             y_train=y_train, x_check=x_check, epochs=epochs, batch_size=batch_size,
                             repeats=args.repeats, torch_repeats=args.torch_repeats, seed=args.seed,
                             torch_max_nets=args.torch_max_nets,
                             torch_device=torch_device, parity_nets=args.parity_nets,
                             torch_threads=torch_threads, skip_torch=args.skip_torch,
                             chunk_size=args.chunk_size, buckets=args.buckets)
        result["results"].append(r)
        fmt = lambda v, f: format(v, f) if v is not None else "-"
        print(f"{p:>5} {r['jax_compile_s']:>13.2f} {r['jax_run_s']:>10.3f} {fmt(r['torch_run_s'], '>10.3f')} "
              f"{fmt(r['speedup'], '>8.2f')} {1e3 * r['jax_s_per_network_epoch']:>13.2f} "
              f"{fmt(r['torch_s_per_network_epoch'] and 1e3 * r['torch_s_per_network_epoch'], '>15.2f')} "
              f"{r['flops']['padded_over_real']:>14.1f}"
              + (f"  (torch: {r['torch_nets_timed']}/{p} nets timed, extrapolated)" if r["torch_extrapolated"] else ""),
              flush=True)
        if "jax_sorted_chunks" in r:
            c = r["jax_sorted_chunks"]
            print(f"      sorted chunks of {c['chunk_size']}: run {c['run_s']:.3f} s, speedup "
                  f"{fmt(c['speedup'], '.2f')}", flush=True)
        if "jax_buckets" in r:
            b = r["jax_buckets"]
            counts = ", ".join(f"{w}: {v['networks']}" for w, v in b["buckets"].items())
            print(f"      width buckets {counts}: "
                  f"compile {b['compile_s']:.1f} s, run {b['run_s']:.3f} s, speedup {fmt(b['speedup'], '.2f')}, "
                  f"pad/real flops {b['padded_over_real']:.1f}, loss diff vs padded "
                  f"{b['epoch_loss_max_abs_diff_vs_padded']:.1e}", flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        result["notes"] = make_notes(result, dims, args.note)
        out_path.write_text(json.dumps(result, indent=2) + "\n")  # partial results survive an interrupted run
    for line in result["notes"]:
        print("note:", line)
    print(f"wrote {out_path}")
    return result


if __name__ == "__main__":
    main()
