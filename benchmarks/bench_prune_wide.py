"""Benchmark: the main job on a wide PyTorch network, a 512-256-128 MLP, with the shipped agent on this machine.

    PYTHONPATH=. python benchmarks/bench_prune_wide.py                     # digits, tau 5, 4 passes, cpu schedules
    PYTHONPATH=. python benchmarks/bench_prune_wide.py --widths 1000,500 --dataset satimage --data-dir ../shared/data

1. Trains the PyTorch model (``nn.Sequential`` of Linear/ReLU, Adam 1e-3, batch 64, `--epochs`) on the train split
   that `neon-jax prune` itself uses (`zoo.prepare_data`), and saves it with ``torch.save(model)``.
2. Prunes it with `neon_jax.prune` as ``neon-jax prune --dataset D --network model.pt`` does: the shipped agent, the
   network at its own bucket (widths rounded up onto `nets.bucket_width`'s ladder, its own depth), the preset's
   fine-tuning schedule (`--preset`, default cpu). Twice in one process: the first call includes the compile, the
   second shows the warm cost (the compiled program is reused).
3. Exports the pruned network to ONNX and PyTorch and checks both against the pruned network's NumPy forward pass
   on the test split (shapes and probabilities).

4. Times one environment step of the same network (a keep-0.6 cut of layer 0 and the fine-tune after it) at its
   bucket and at the paper preset's padded shape (six 1000-wide layers), warm, best of 3: what padding to the
   preset's widest would cost.

Writes ``benchmarks/results/prune_wide_<preset>.json`` (seconds per stage of both calls, the padded shape, the
chosen widths, compression, accuracy change, the ONNX check, the padding comparison).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))


def train_torch_model(prepared, widths, epochs: int, seed: int):
    import torch

    torch.manual_seed(seed)
    s = prepared.splits
    layers, fan_in = [], prepared.n_features
    for w in widths:
        layers += [torch.nn.Linear(fan_in, w), torch.nn.ReLU()]
        fan_in = w
    layers += [torch.nn.Linear(fan_in, prepared.n_classes), torch.nn.Softmax(dim=1)]
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.tensor(s.x_train, dtype=torch.float32), torch.tensor(s.y_train, dtype=torch.long)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for b in range(0, len(x), 64):
            idx = perm[b:b + 64]
            logits = model[:-1](x[idx])
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        test_acc = float((model(torch.tensor(s.x_test, dtype=torch.float32)).argmax(1).numpy() == s.y_test).mean())
    return model, time.perf_counter() - start, test_acc


def time_env_step(network, prepared, preset, dims, tau: float, repeats: int = 3) -> dict:
    """Warm seconds of one environment step (a keep-0.6 cut of the first hidden layer and the fine-tune that
    follows) of `network` placed at `dims`: best of `repeats`, compile apart."""
    import jax
    import jax.numpy as jnp

    from neon_jax import nets
    from neon_jax.env import EnvConfig, NeonEnv, make_env_params

    env = NeonEnv(EnvConfig(passes=4, cut="keep_best"), dims, preset)
    variables, arch = nets.expand(network, dims)
    params = make_env_params(variables, arch, prepared.splits, dims, tau)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    key = jax.random.PRNGKey(0)
    _, state = reset(key, params)
    t0 = time.perf_counter()
    out = jax.block_until_ready(step(key, state, jnp.int32(4), params))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(step(key, state, jnp.int32(4), params))
        times.append(time.perf_counter() - t0)
    return {"w_max": dims.w_max, "max_hidden": dims.max_hidden, "first_call_s": first, "step_s": min(times),
            "step_s_all": times, "finetune_epochs": int(out[5]["finetune_epochs"]),
            "widths_after": [int(w) for w in out[1].arch.widths[:len(network.hidden_widths)]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--widths", default="512,256,128")
    ap.add_argument("--epochs", type=int, default=30, help="PyTorch training epochs of the model to prune")
    ap.add_argument("--tau", type=float, default=5.0)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/prune_wide_<preset>.json)")
    args = ap.parse_args(argv)

    import jax
    import numpy as np
    import torch

    from neon_jax import interop, nets, prune
    from neon_jax.presets import get_preset
    from neon_jax.zoo import prepare_data

    widths = [int(w) for w in args.widths.split(",")]
    preset = get_preset(args.preset)
    prepared = prepare_data(args.dataset, preset, seed=args.seed, data_dir=args.data_dir)
    model, train_s, torch_acc = train_torch_model(prepared, widths, args.epochs, args.seed)
    print(f"trained the PyTorch {'-'.join(map(str, widths))} model on {prepared.dataset.name} in {train_s:.1f} s "
          f"(test accuracy {torch_acc:.4f})", flush=True)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: compiles.append(secs) if event == "/jax/core/compile/backend_compile_duration"
        else None)
    calls = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(model, path)
        for call in ("first (compiles)", "second (warm)"):
            before = len(compiles)
            start = time.perf_counter()
            result = prune(args.dataset, data_dir=args.data_dir, network=str(path), tau=args.tau,
                           passes=args.passes, preset=preset, seed=args.seed, progress=None)
            wall = time.perf_counter() - start
            r = result.report
            calls.append({"call": call, "wall_seconds": wall, "seconds": r["seconds"],
                          "xla_compiles": len(compiles) - before,
                          "xla_compile_seconds": float(sum(compiles[before:]))})
            print(f"{call}: {wall:.1f} s wall ({', '.join(f'{k} {v:.1f}' for k, v in r['seconds'].items())}), "
                  f"{len(compiles) - before} XLA compiles", flush=True)
        paths = interop.export_network(result.pruned, tmp, formats=["onnx", "torch"])
        x = prepared.splits.x_test.astype(np.float32)
        expected = result.pruned.predict_proba(x)
        onnx_out = interop.run_onnx(paths["onnx"][0], x)["probabilities"]
        reloaded = interop.load_network(paths["torch"][0])
        onnx_check = {"shape": list(onnx_out.shape), "max_abs_diff": float(np.abs(onnx_out - expected).max()),
                      "same_classes": bool((onnx_out.argmax(1) == expected.argmax(1)).all()),
                      "torch_roundtrip_widths": reloaded.hidden_widths}
    dims = nets.NetDims.for_widths(max(widths), prepared.n_features, prepared.n_classes, max_hidden=len(widths))
    # the cost of padding: one environment step of the same network at its bucket and at the paper preset's
    # padded shape (six 1000-wide layers; what the network would have cost before the buckets)
    net = interop.from_torch(model)
    paper = get_preset("paper")
    padded = nets.NetDims.for_preset(paper, prepared.n_features, prepared.n_classes)
    steps = {"bucket": time_env_step(net, prepared, preset, dims, args.tau),
             "paper_padding": time_env_step(net, prepared, preset, padded, args.tau)}
    steps["padding_cost"] = steps["paper_padding"]["step_s"] / steps["bucket"]["step_s"]
    print(f"one env step (keep 0.6 of layer 0, then the fine-tune): {steps['bucket']['step_s']:.2f} s at "
          f"{dims.w_max} x {dims.max_hidden}, {steps['paper_padding']['step_s']:.2f} s padded to "
          f"{padded.w_max} x {padded.max_hidden} (x{steps['padding_cost']:.2f})", flush=True)
    record = {
        "benchmark": "prune_wide", "device": jax.devices()[0].device_kind, "platform": platform.platform(),
        "cpus": __import__("os").cpu_count(), "jax": jax.__version__, "torch": torch.__version__,
        "dataset": prepared.dataset.name, "rows": prepared.dataset.n_rows, "features": prepared.n_features,
        "classes": prepared.n_classes, "preset": preset.name,
        "schedule": {"finetune_epochs": preset.finetune_epochs, "finetune_batch": preset.finetune_batch,
                     "patience": preset.patience, "max_rows": preset.max_rows},
        "tau": args.tau, "passes": args.passes, "seed": args.seed,
        "model": {"widths": widths, "torch_train_seconds": train_s, "torch_test_accuracy": torch_acc,
                  "epochs": args.epochs},
        "padded_shape": {"w_max": dims.w_max, "max_hidden": dims.max_hidden,
                         "before_buckets": "refused at the cpu preset (wider than its 64); the paper preset would "
                                           "pad it to 6 x 1000"},
        "env_step_bucket_vs_paper_padding": steps,
        "calls": calls,
        "result": {k: r[k] for k in ("widths_before", "widths_after", "params_before", "params_after", "compression",
                                     "acc_change_points", "within_tau", "agent", "episodes") if k in r},
        "export_check": onnx_check,
    }
    out = Path(args.out) if args.out else HERE / "results" / f"prune_wide_{preset.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["result"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
