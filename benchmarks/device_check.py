"""The prepared device check: the paper-preset benchmarks on one GPU (H100 / H200), beside the PyTorch reference on the
same GPU, in one call that stays within a time budget and writes everything to one folder.

    PYTHONPATH=. python benchmarks/device_check.py OUT              # on the lent machine: --budget-s 420 by default
    PYTHONPATH=. python benchmarks/device_check.py OUT --dry-run    # the same code at the tiny preset on a CPU

What it runs, in this order (`benchmarks/run.py`'s benchmarks with its ``device`` grid; ``dry`` for --dry-run),
each as it fits the budget (a benchmark is not started once the budget is spent; one that runs out of device
memory is recorded as such and the next one runs):

1. ``population``: base-network training of P = 32 and 128 random paper-preset networks (5 epochs), JAX vs
   PyTorch, with the matmul FLOPs of the padded program and of the real networks;
2. ``env_steps``: one environment step of B = 32 zoo networks (the fine-tune after a cut), JAX vs PyTorch;
3. ``episode``: four-pass episodes of 8 networks through the library's roll-out vs PyTorch replaying them;
4. ``agent_update``: the agent's update on 32 episodes vs the original's PyTorch update;
5. ``batch_scaling``: env steps per second at B = 32 .. 1024;
6. ``gymnax``: `bench_gymnax.py` on the shipped default pool (``gymnax.make("NeonPrune-v0")`` under vmap with its
   auto-reset, beside gymnax's own step) at B = 1 .. 1024, PyTorch stepping the same networks beside it;
7. ``device_scaling`` (only where the machine has several devices): population training with the population split
   over 1, 2, 4, ... all of them (`bench_device_scaling.py`).

The data is scikit-learn's bundled ``digits`` (1,797 rows, 64 features, 10 classes: no file to carry to the
machine); the zoo of 30 paper-preset networks is trained on it first and cached under ``benchmarks/.cache``.

Written to OUT: ``gymnax.json`` (bench_gymnax's record),
``suite.json`` (run.py's record: compile seconds apart, ratios), ``device_check.json`` (the
plan, what ran and what was skipped, seconds per benchmark, the XLA compiles per benchmark (every backend compile,
the small eager operations' included, from `jax.monitoring`), and the MFU of the
training step: padded and real matmul FLOP/s over the device's float32 peak), and ``log.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import jax  # noqa: E402

ORDER = ("population", "env_steps", "episode", "agent_update", "batch_scaling", "gymnax", "device_scaling")
# dense float32 peaks (no tensor cores: the benchmarks run at "highest" matmul precision), FLOP/s
FP32_PEAK = {"H100": 67e12, "H200": 67e12, "A100": 19.5e12}


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
            st.flush()
        return len(s)


def _compile_counter():
    """A list that grows by one per XLA backend compile (jax.monitoring)."""
    events = []

    def listener(name, *args, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    return events


def peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "") or ""
    return next((v for k, v in FP32_PEAK.items() if k in kind), None)


def mfu(population: dict, peak: float | None) -> list[dict]:
    """Per population size: padded and real matmul FLOP/s of JAX's training step, over `peak`."""
    rows = []
    for r in population.get("results", []):
        f = r.get("flops") or {}
        padded = f.get("jax_padded_gflops_per_s")
        real = padded / f["padded_over_real"] if padded and f.get("padded_over_real") else None
        rows.append({"population": r.get("population"), "padded_gflops_per_s": padded, "real_gflops_per_s": real,
                     "mfu_padded": padded * 1e9 / peak if padded and peak else None,
                     "mfu_real": real * 1e9 / peak if real and peak else None})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder for suite.json, device_check.json and log.txt (created; must be empty)")
    ap.add_argument("--dry-run", action="store_true", help="the tiny preset on whatever device there is")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="no benchmark starts after this many seconds (default 420; dry run 600)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(ORDER)}")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"device_check: {out} is not empty; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget_s if args.budget_s is not None else (600.0 if args.dry_run else 420.0)
    plan = ORDER if args.only is None else tuple(x for x in ORDER if x in args.only.split(","))
    if jax.device_count() == 1:  # nothing to scale over
        plan = tuple(x for x in plan if x != "device_scaling")
    preset, mode = ("tiny", "dry") if args.dry_run else ("paper", "device")

    from benchmarks import run as suite

    if args.dry_run:  # the dry run checks the code, not the speed: compile without XLA's optimisation passes
        jax.config.update("jax_disable_most_optimizations", True)
    compiles = _compile_counter()
    device = jax.devices()[0]
    doc = {"check": "device_check", "dry_run": args.dry_run, "preset": preset, "mode": mode,
           "mode_settings": suite.MODES[mode], "dataset": "digits", "budget_s": budget, "plan": list(plan),
           "device": {"platform": device.platform, "kind": getattr(device, "device_kind", None),
                      "count": jax.device_count()}, "benchmarks": {}, "skipped": []}
    began = time.perf_counter()
    log = open(out / "log.txt", "w")
    for name in plan:
        elapsed = time.perf_counter() - began
        if elapsed > budget:
            doc["skipped"].append({"benchmark": name, "reason": f"budget spent ({elapsed:.0f} s > {budget:.0f} s)"})
            continue
        n0, t0 = len(compiles), time.perf_counter()
        entry = {}
        try:
            with contextlib.redirect_stdout(_Tee(sys.stdout, log)):
                if name == "gymnax":
                    from benchmarks import bench_gymnax

                    bench_gymnax.main(["--batches", "1,8" if args.dry_run else "1,8,64,256,1024", "--steps",
                                       "2" if args.dry_run else "8", "--repeats", "1" if args.dry_run else "2",
                                       "--out", str(out / "gymnax.json")])
                else:
                    suite.main(["--mode", mode, "--preset", preset, "--dataset", "digits", "--data-dir", "",
                                "--zoo", "", "--only", name, "--out", str(out / "suite.json"),
                                "--note", f"benchmarks/device_check.py{' --dry-run' if args.dry_run else ''}"])
            entry["status"] = "ok"
        except Exception as e:  # an out-of-memory at B = 1024 must not cost the rest of the check
            entry["status"] = "error"
            entry["error"] = f"{type(e).__name__}: {str(e)[:500]}"
            log.write(traceback.format_exc())
        entry.update(seconds=time.perf_counter() - t0, xla_compiles=len(compiles) - n0)
        doc["benchmarks"][name] = entry
        print(f"[device_check] {name}: {entry['status']} in {entry['seconds']:.0f} s, "
              f"{entry['xla_compiles']} compiles", flush=True)
    suite_path = out / "suite.json"
    if suite_path.exists():
        record = json.loads(suite_path.read_text())
        if "population" in record.get("benchmarks", {}):
            doc["mfu"] = {"peak_flops_fp32": peak_flops(device),
                          "rows": mfu(record["benchmarks"]["population"], peak_flops(device)),
                          "note": "matmul FLOPs of the training step (population training; the environment's "
                                  "fine-tune runs the same step) per second, over the float32 peak; null off a "
                                  "known GPU"}
    doc["seconds_total"] = time.perf_counter() - began
    doc["xla_compiles_total"] = len(compiles)
    (out / "device_check.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    log.close()
    print(f"[device_check] wrote {out} in {doc['seconds_total']:.0f} s", flush=True)
    return 0 if all(e["status"] == "ok" for e in doc["benchmarks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
