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
import os
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import (
    DEFAULT_DATA_DIR,
    RESULTS_DIR,
    PopulationSetup,
    compile_aot,
    core_count,
    device_info,
    device_slug,
    log,
    neon_jax_provenance,
    population_setup,
    take,
    versions,
    write_json,
)
from benchmarks.common import torch_device as default_torch_device
from benchmarks.population import (
    Timings,
    bench_buckets,
    check_eval_parity_all,
    check_probabilities,
    check_train_parity,
    check_trained,
    contention_record,
    flop_counts,
    pad_features,
    prepare_torch,
    sample_population,
    time_interleaved,
    torch_seconds,
    work_record,
)
from neon_jax import nets

# ----------------------------------------------------------------------------------------------------------------
# One population size


def bench_population(p: int, setup: PopulationSetup, *, epochs, batch_size, repeats, torch_repeats, seed,
                     torch_max_nets, torch_device, parity_nets, torch_threads="auto", skip_torch=False,
                     chunk_size=None, buckets=False) -> dict:
    """Times one population size on both sides (after the parity checks); returns its JSON record.

    The JAX side is ``trainer.train`` with ``chunk_size=None`` (one vmap over the population: the original
    neon_jax program, "jax_run_s"); with `chunk_size` an int, the depth-sorted chunks of that size are timed too,
    interleaved with the others ("jax_sorted_chunks"); with `buckets`, the width buckets ("jax_buckets").
    """
    load_start = os.getloadavg()[0]
    pop = sample_population(p, setup, seed)
    dims, preset = setup.dims, setup.preset
    stages = {}  # wall seconds of each stage of this benchmark (diagnostics)
    t_stage = time.perf_counter()
    # --- identical networks on both sides, checked -------------------------------------------------------------
    dense = [nets.compact(take(pop.host_vars, i), take(pop.host_archs, i), dims, preset.dropout_rate)
             for i in range(p)]
    n_torch = p if torch_max_nets is None else min(p, torch_max_nets)
    x_check_pad = pad_features(setup.x_check, dims)
    eval_diff = check_eval_parity_all(setup, pop.variables, pop.archs, dense, x_check_pad)
    loss_diffs, grad_diffs = check_train_parity(setup, pop, dense, batch_size, parity_nets)
    stages["parity_checks"] = time.perf_counter() - t_stage
    # --- JAX: ahead-of-time compile ------------------------------------------------------------------------------
    train_args = pop.train_args(setup.data)
    compiled, compile_s = compile_aot(setup.trainer.train, *train_args, epochs=epochs, batch_size=batch_size,
                                      chunk_size=None)
    stages["jax_compile"] = compile_s
    chunked = None
    if chunk_size:
        chunked, stages["jax_compile_sorted_chunks"] = compile_aot(
            setup.trainer.train, *train_args, epochs=epochs, batch_size=batch_size, chunk_size=int(chunk_size))
    # --- PyTorch setup: warm-up, thread count; then the timing ----------------------------------------------------
    threads_used = probe = None
    if not skip_torch:
        threads_used, probe = prepare_torch(setup, dense, batch_size, seed, torch_device, torch_threads)
    t = time_interleaved(setup, pop, dense, compiled, chunked, n_torch=n_torch, epochs=epochs,
                         batch_size=batch_size, repeats=repeats, torch_repeats=torch_repeats, seed=seed,
                         device=torch_device, skip_torch=skip_torch)
    jax_s = min(t.run_times)
    torch_s, torch_per_net, torch_totals = torch_seconds(t, p, n_torch, skip_torch)
    stages["timing"] = time.perf_counter() - t_stage - stages["parity_checks"] - compile_s - \
        stages.get("jax_compile_sorted_chunks", 0.0)

    # --- the JAX result is sane, and its trained networks (running batch-norm statistics included) still match
    jax_losses, trained_probs, trained_diff = check_trained(setup, pop, t.out, x_check_pad, parity_nets)

    counts = flop_counts(setup, dense, p, epochs, batch_size)
    res = {
        "population": p,
        "jax_compile_s": compile_s,
        "jax_run_s": jax_s,
        "jax_run_s_all_repeats": t.run_times,
        "torch_run_s": torch_s,
        "torch_run_s_all_repeats": torch_totals,
        "torch_nets_timed": n_torch if not skip_torch else 0,
        "torch_threads_used": threads_used,
        "torch_threads_probe_s": probe,
        "torch_extrapolated": (not skip_torch) and n_torch < p,
        **per_epoch_record(jax_s, torch_s, p, epochs, counts["n_batches"]),
        **work_record(setup, dense, p, batch_size, counts, jax_s, torch_s),
        "parity": parity_record(p, eval_diff, trained_diff, loss_diffs, grad_diffs),
        "final_epoch_loss_mean": {
            "jax": float(jax_losses[:, -1].mean()),
            "torch": float(np.mean([l[-1] for l in t.torch_losses])) if t.torch_losses else None,
        },
    }
    if chunked is not None:
        res["jax_sorted_chunks"] = sorted_chunks_record(setup, pop, t, chunk_size, stages, torch_s, jax_s,
                                                        jax_losses, trained_probs, x_check_pad)
    if buckets:
        res["jax_buckets"] = bench_buckets(
            p, setup, pop, epochs=epochs, batch_size=batch_size, repeats=repeats, chunk_size=chunk_size or "auto",
            padded_losses=jax_losses, padded_probs=trained_probs, x_check_pad=x_check_pad, torch_s=torch_s,
            padded_s=jax_s, padded_chunks_s=min(t.chunked_times) if t.chunked_times else None,
            real_flops=counts["real_flops"], n_batches=counts["n_batches"])
    if torch_per_net is not None:
        res["torch_s_per_network"] = torch_per_net
    res["load_average_1min"] = {"start": load_start, "end": os.getloadavg()[0]}
    res["contention"] = contention_record(t)
    res["stage_seconds"] = stages
    return res


# ----------------------------------------------------------------------------------------------------------------
# One population size's record


def per_epoch_record(jax_s, torch_s, p: int, epochs: int, n_batches: int) -> dict:
    return {
        "speedup": (torch_s / jax_s) if torch_s else None,
        "jax_s_per_network_epoch": jax_s / (p * epochs),
        "torch_s_per_network_epoch": (torch_s / (p * epochs)) if torch_s else None,
        "jax_s_per_epoch": jax_s / epochs,
        "torch_s_per_epoch": (torch_s / epochs) if torch_s else None,
        "jax_ms_per_step": 1e3 * jax_s / (epochs * n_batches),
        "steps_per_epoch": n_batches,
    }


def parity_record(p: int, eval_diff, trained_diff, loss_diffs, grad_diffs) -> dict:
    return {
        "eval_max_abs_diff_initial": eval_diff,
        "eval_max_abs_diff_after_jax_training": trained_diff,
        "train_loss_max_abs_diff": max(loss_diffs) if loss_diffs else None,
        "train_grad_max_abs_diff": max(grad_diffs) if grad_diffs else None,
        "nets_checked_eval": p,
        "nets_checked_train": len(loss_diffs),
    }


def sorted_chunks_record(setup, pop, t: Timings, chunk_size, stages, torch_s, jax_s, jax_losses, trained_probs,
                         x_check_pad) -> dict:
    c_losses = np.asarray(t.chunked_out[2])
    c_probs = check_probabilities(setup, t.chunked_out[0], pop.archs, x_check_pad)
    return {
        "chunk_size": int(chunk_size), "compile_s": stages["jax_compile_sorted_chunks"],
        "run_s": min(t.chunked_times), "run_s_all_repeats": t.chunked_times,
        "speedup": (torch_s / min(t.chunked_times)) if torch_s else None,
        "over_one_vmap": jax_s / min(t.chunked_times),
        "epoch_loss_max_abs_diff_vs_one_vmap": float(np.abs(c_losses - jax_losses).max()),
        "check_probabilities_max_abs_diff_vs_one_vmap": float(np.abs(c_probs - trained_probs).max()),
        "note": ("trainer.train(chunk_size=k): networks sorted by depth, k at a time, hidden layers and Adam "
                 "steps none of a chunk's networks has skipped (the library default on one CPU device); "
                 "same keys, numbers equal up to float rounding amplified by Adam"),
    }


# ----------------------------------------------------------------------------------------------------------------
# The suite's ``population`` benchmark (benchmarks/run.py)


SUITE_KEEP = ("population", "jax_compile_s", "jax_run_s", "jax_run_s_all_repeats", "torch_run_s",
              "torch_run_s_all_repeats", "speedup", "torch_threads_used", "torch_extrapolated", "parity",
              "final_epoch_loss_mean", "load_average_1min", "contention", "flops", "jax_sorted_chunks", "jax_buckets")


def suite_population(args, mode) -> dict:
    """`bench_population` on the suite's grid (`mode`), its records cut to the suite's keys, ratios added."""
    import torch

    setup = population_setup(args.preset, args.dataset, args.data_dir, args.seed)
    preset = setup.preset
    rows = []
    for p in mode["pop"]:
        log(f"[population] P={p}")
        r = bench_population(
            p, setup, epochs=mode["pop_epochs"], batch_size=preset.train_batch, repeats=mode["pop_repeats"],
            torch_repeats=mode["pop_repeats"], seed=args.seed, torch_max_nets=64 if p > 128 else None,
            torch_device="cpu" if not torch.cuda.is_available() else "cuda", parity_nets=2,
            torch_threads=args.torch_threads, chunk_size=args.slots or None, buckets=True)
        rows.append({k: r[k] for k in SUITE_KEEP if k in r} | {"ratio": r["speedup"]})
        log(f"  jax {r['jax_run_s']:.3f}s (compile {r['jax_compile_s']:.1f}s)  torch {r['torch_run_s']:.3f}s  "
            f"ratio {r['speedup']:.2f}")
        if "jax_sorted_chunks" in r:
            c = r["jax_sorted_chunks"]
            rows[-1]["ratio_sorted_chunks"] = c["speedup"]
            log(f"  sorted chunks of {c['chunk_size']}: jax {c['run_s']:.3f}s (compile {c['compile_s']:.1f}s)  "
                f"ratio {c['speedup']:.2f}")
        b = r["jax_buckets"]
        rows[-1]["ratio_buckets"] = b["speedup"]
        log(f"  width buckets ({b['compiles']} programs): jax {b['run_s']:.3f}s (compile {b['compile_s']:.1f}s)  "
            f"ratio {b['speedup']:.2f}")
    return {"settings": {"dataset": setup.dataset, "preset": preset.name, "epochs": mode["pop_epochs"],
                         "batch_size": preset.train_batch, "rows_train": int(len(setup.y_train))},
            "results": rows}


# ----------------------------------------------------------------------------------------------------------------
# The script


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

def parse_args(argv=None):
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
    return args


def settings_record(args, setup: PopulationSetup, epochs: int) -> dict:
    import torch

    preset, prepared = setup.preset, setup.prepared
    return {
        "dataset": setup.dataset, "dataset_source": prepared.dataset.source,
        "rows_total": prepared.dataset.n_rows, "rows_train": int(len(setup.y_train)),
        "features": prepared.n_features, "classes": prepared.n_classes,
        "preset": preset.name, "epochs": epochs,
        "epochs_note": (f"the full schedule is preset.train_epochs = {preset.train_epochs} epochs; a run is "
                        "epochs x per-epoch time, so the per-epoch (and per-network-epoch) time is what matters"),
        "batch_size": preset.train_batch, "learning_rate": preset.learning_rate, "dtype": "float32",
        "jax_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "torch_float32_matmul_precision": torch.get_float32_matmul_precision(),
        "torch_threads": args.torch_threads, "jax_repeats": args.repeats, "torch_repeats": args.torch_repeats,
        "seed": args.seed,
        "widths": list(preset.widths), "max_hidden": preset.max_hidden,
        "double_softmax": True,
        "torch_loop": "torch.randperm shuffle per epoch, index-sliced minibatches, size-1 batches skipped, "
                      "Adam defaults, CrossEntropyLoss on the Softmax output, model.train()",
    }


def print_row(p: int, r: dict) -> None:
    """One population size's line of the table (and its sorted-chunk and bucket lines)."""
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


def main(argv=None) -> dict:
    args = parse_args(argv)

    import torch

    jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    torch.set_float32_matmul_precision("highest")
    torch.set_num_threads(core_count() if args.torch_threads == "auto" else int(args.torch_threads))
    device = args.torch_device or default_torch_device()

    setup = population_setup(args.preset, args.dataset, args.data_dir, args.seed)
    preset, prepared = setup.preset, setup.prepared
    epochs = args.epochs if args.epochs is not None else (1 if preset.name == "paper" else 5)
    batch_size = preset.train_batch
    pops = [int(s) for s in args.pop.split(",") if s.strip()]
    result = {
        "benchmark": "population_training",
        "description": ("Base-network training (neon_spec.md §7) of P random networks: neon_jax trainer.train "
                        "(one jitted vmap/scan program, masked padded networks) vs the original's plain PyTorch "
                        "loop over nn.Sequential models, one after the other. Same architectures, initial "
                        "weights, data, epochs and batch size. Times are seconds for the whole population; "
                        "speedup = torch_run_s / jax_run_s (JAX steady state, compile time reported apart)."),
        "device": device_info(device),
        "versions": versions(),
        "neon_jax": neon_jax_provenance(),
        "settings": settings_record(args, setup, epochs),
        "results": [],
    }
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"population_training_{preset.name}_{device_slug()}.json"

    header = (f"{'P':>5} {'jax compile s':>13} {'jax run s':>10} {'torch s':>10} {'speedup':>8} "
              f"{'jax ms/net-ep':>13} {'torch ms/net-ep':>15} {'pad/real flops':>14}")
    print(f"dataset {setup.dataset} ({len(setup.y_train)} train rows, {prepared.n_features} features, "
          f"{prepared.n_classes} classes), preset {preset.name}, {epochs} epoch(s), batch {batch_size}, "
          f"device {result['device']['jax_device_kind']}, {core_count()} cores")
    print(header)
    for p in pops:
        r = bench_population(p, setup, epochs=epochs, batch_size=batch_size, repeats=args.repeats,
                             torch_repeats=args.torch_repeats, seed=args.seed, torch_max_nets=args.torch_max_nets,
                             torch_device=device, parity_nets=args.parity_nets, torch_threads=args.torch_threads,
                             skip_torch=args.skip_torch, chunk_size=args.chunk_size, buckets=args.buckets)
        result["results"].append(r)
        print_row(p, r)
        result["notes"] = make_notes(result, setup.dims, args.note)
        write_json(out_path, result)  # partial results survive an interrupted run
    for line in result["notes"]:
        print("note:", line)
    print(f"wrote {out_path}")
    return result


if __name__ == "__main__":
    main()
