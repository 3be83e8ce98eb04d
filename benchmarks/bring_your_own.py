"""Bring your own model and data: three practitioner cases before and after `prune((X, y), test=...)`.

Each case is a model trained on the user's own preprocessing and split:

- breast_cancer: StandardScaler + MLPClassifier (scikit-learn), 75/25 split (seed 42);
- digits: the same;
- bank-marketing (../shared/data/neon): `pandas.get_dummies` + standardised numeric columns, a PyTorch MLP.

"before" is what the library did with the dataset by name and the network's weights (its own min-max scaling,
encoding and 70/30 split; the input check switched off, as there was none): the numbers it reported, and what the
pruned network really scores on the user's test rows through the user's preprocessing. "after" is
``prune((X_train, y_train), network=model, test=(X_test, y_test))``: its report, checked against the returned model
on the user's test rows. Beside it, structured pruning (the same fraction of every hidden layer's neurons removed,
then fine-tuned) at the largest compression whose test accuracy is at least NEON's.

    python -m benchmarks.bring_your_own --out benchmarks/results/bring_your_own_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _mlp_pipeline(X, y):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_pipeline(StandardScaler(), MLPClassifier((64, 32), max_iter=500, random_state=0)).fit(X, y)


def sklearn_case(name: str):
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True, as_frame=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=42, stratify=y)
    pipe = _mlp_pipeline(X_tr, y_tr)
    return {"name": name, "model": pipe, "train": (X_tr, y_tr), "test": (X_te, y_te),
            "user_x": lambda X: pipe[:-1].transform(X), "net_model": pipe[-1]}


def bank_case():
    """bank-marketing as a PyTorch user prepares it: get_dummies, standardised numeric columns, a torch MLP."""
    import torch
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(SHARED / "neon" / "bank-marketing.csv.gz")
    y = (frame.pop("Class") == 2).astype(int).to_numpy()
    X = pd.get_dummies(frame, dtype=float)
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "if"]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=42, stratify=y)
    mean, std = X_tr[numeric].mean(), X_tr[numeric].std().replace(0, 1)
    prep = lambda X: X.assign(**{c: (X[c] - mean[c]) / std[c] for c in numeric}).to_numpy(np.float32)  # noqa: E731
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    xt, yt = torch.from_numpy(prep(X_tr)), torch.from_numpy(y_tr)
    for _ in range(30):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    from neon_jax import interop

    net = interop.from_torch(model.eval())
    return {"name": "bank-marketing", "network": net, "train": (prep(X_tr), y_tr), "test": (prep(X_te), y_te),
            "user_x": lambda X: X, "raw_test": (X_te, y_te), "data_dir": str(SHARED / "neon")}


def _acc(net, x, y) -> float:
    return float((net.logits(np.asarray(x, np.float32)).argmax(1) == np.asarray(y)).mean())


def _structured_at(prepared, network, preset, target: float, tau: float):
    """Structured pruning of `network` on `prepared` at each removal fraction; the most compressed with test
    accuracy >= `target`."""
    from neon_jax import pruning
    from neon_jax.pool import EnvPool

    pool = EnvPool.from_network(network, prepared, tau, preset)
    best = None
    rows = []
    for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        row = pruning.run_baseline("structured", pool, preset, setting=f, batch_size=1).rows[0]
        rows.append({"remove": f, "compression": row["compression"], "test_acc": row["test_acc_after"]})
        if row["test_acc_after"] >= target - 1e-9 and (best is None or row["compression"] > best["compression"]):
            best = rows[-1]
    return best, rows


def run_case(case: dict, tau: float, preset: str) -> dict:
    import neon_jax
    from neon_jax.interop import scikit
    from neon_jax.presets import get_preset

    out = {"case": case["name"], "tau": tau, "preset": preset}
    X_tr, y_tr = case["train"]
    X_te, y_te = case["test"]
    network = case.get("network")
    if network is None:
        network = scikit.from_sklearn(case["net_model"])[0]
    # before: the dataset by name, the network's weights, the library's own preprocessing and split
    t0 = time.perf_counter()
    old = neon_jax.prune(case["name"], data_dir=case.get("data_dir"), network=network, tau=tau, preset=preset,
                         check_inputs=False, progress=None)
    x_user = case["user_x"](X_te)
    out["before"] = {"reported_acc_before": old.report["test_acc_before"],
                     "reported_acc_after": old.report["test_acc_after"],
                     "reported_change_points": old.report["acc_change_points"],
                     "compression": old.report["compression"],
                     "user_test_acc_original": _acc(network, x_user, np.asarray(y_te)),
                     "user_test_acc_pruned": _acc(old.pruned, x_user, np.asarray(y_te)),
                     "seconds": time.perf_counter() - t0}
    # after: the user's rows and split as given
    t0 = time.perf_counter()
    model = case.get("model", network)
    new = neon_jax.prune((X_tr, y_tr), network=model, test=(X_te, y_te), tau=tau, preset=preset, progress=None)
    r = new.report
    check = new.to_sklearn().score(X_te, y_te) if "model" in case else _acc(new.pruned, X_te, y_te)
    out["after"] = {"acc_before": r["test_acc_before"], "acc_after": r["test_acc_after"],
                    "change_points": r["acc_change_points"], "compression": r["compression"],
                    "widths": f"{r['widths_before']} -> {r['widths_after']}",
                    "returned_model_test_acc": float(check), "splits": r["data"]["splits"],
                    "input_check": r["data"]["input_check"], "seconds": time.perf_counter() - t0}
    # structured pruning on the same rows, at NEON's test accuracy or better
    from neon_jax.user_data import prepare_user_data

    transform = getattr(new.model, "input_transform", None)
    prepared = prepare_user_data((X_tr, y_tr), test=(X_te, y_te), classes=getattr(new.model, "classes", None),
                                 transform=transform)
    best, rows = _structured_at(prepared, new.original, get_preset(preset), r["test_acc_after"], tau)
    out["structured"] = {"at_neon_accuracy": best, "sweep": rows}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tau", type=float, default=5.0)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--cases", default="breast_cancer,digits,bank-marketing")
    p.add_argument("--out", default="benchmarks/results/bring_your_own_cpu.json")
    args = p.parse_args(argv)
    results = []
    for name in args.cases.split(","):
        case = bank_case() if name == "bank-marketing" else sklearn_case(name)
        results.append(run_case(case, args.tau, args.preset))
        print(json.dumps(results[-1], indent=1, default=float), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"cases": results}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
