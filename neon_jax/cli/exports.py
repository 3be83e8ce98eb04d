"""Writing a pruned network's export files from the command line, each read back and checked."""

from __future__ import annotations

from pathlib import Path

from neon_jax.cli.common import CLIError


def _export_formats(text, out, stem, overwrite, saved_by_out=False) -> list[str]:
    """Validates --export before any work is done: known formats, an --out folder, no file overwritten
    (`saved_by_out`: the npz export's files are the ones `prune --out` writes itself)."""
    from neon_jax import interop

    if not out:
        raise CLIError("--export needs --out (the folder the exported files go to)")
    formats = interop.parse_formats(text)
    try:
        interop.check_export_dependencies(formats)
    except ImportError as err:
        raise CLIError(str(err)) from None
    checked = [f for f in formats if not (saved_by_out and f == "npz")]
    existing = [str(p) for files in interop.export_paths(out, stem, checked).values() for p in files if p.exists()]
    if existing and not overwrite:
        raise CLIError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    return formats


def _export_and_verify(net, out, formats, stem, overwrite) -> None:
    """Writes the exports, reads each back and checks it against the network on 256 random inputs in [0, 1]
    (the range of min-max scaled data)."""
    import numpy as np

    from neon_jax import interop

    try:
        paths = interop.export_network(net, out, formats, stem=stem, overwrite=overwrite)
        x = np.random.default_rng(0).random((256, net.n_features), dtype=np.float32)
        checks = interop.verify_exports(net, paths, x)
    except ImportError as err:
        raise CLIError(str(err)) from None
    for fmt, files in paths.items():
        c = checks[fmt]
        print(f"exported {fmt}: {', '.join(str(p) for p in files)} (read back: max |logit diff| "
              f"{c['max_abs_diff_logits']:.1e}, same predictions: {c['same_predictions']})")


def _raw_rows(result, n: int = 256):
    """n random raw rows spanning the range the input scaling maps to [0, 1], and the network's inputs for them."""
    import numpy as np

    scaling = result.input_scaling()
    d = result.pruned.n_features
    offset, scale = (np.zeros(d, np.float32), np.ones(d, np.float32)) if scaling is None else scaling
    span = np.where(scale > 0, 1.0 / np.where(scale > 0, scale, 1.0), 1.0)
    raw = (offset + np.random.default_rng(0).random((n, d)) * span).astype(np.float32)
    return raw, (raw - offset) * scale


def _export_sklearn(result, path: Path) -> None:
    """pruned.skops for --export sklearn: `PruneResult.to_sklearn` (the user's estimator, pruned, which --out has
    written; else an MLPClassifier of the dataset's labels behind the input scaling), read back and checked."""
    import numpy as np

    from neon_jax.interop import scikit

    if isinstance(result.model, scikit.SklearnModel):
        print(f"exported sklearn: {path} (your scikit-learn model, pruned; written above)")
        return
    try:
        import skops.io as sio
        estimator = result.to_sklearn()
    except (ImportError, ValueError) as err:
        raise CLIError(f"--export sklearn: {err}") from None
    sio.dump(estimator, path)
    raw, x = _raw_rows(result)
    back = scikit.load_sklearn_file(path)
    diff = float(np.abs(back.predict_proba(raw.astype(np.float64)) - result.pruned.predict_proba(x)).max())
    if diff > 1e-4:
        raise CLIError(f"{path}: the scikit-learn model differs from the network by {diff:.3g}")
    kind = "a Pipeline (the input scaling, then the MLP)" if hasattr(back, "steps") else "an MLPClassifier"
    print(f"exported sklearn: {path}, {kind} on raw rows predicting {[str(c) for c in back.classes_[:6]]}"
          f"{'...' if len(back.classes_) > 6 else ''} (read back: max |probability diff| {diff:.1e})")


def _export_raw_onnx(result, path: Path, overwrite: bool) -> None:
    """pruned_raw.onnx: the pruned network with the input scaling baked in, checked on raw rows."""
    import numpy as np

    from neon_jax import interop

    if path.exists() and not overwrite:
        raise CLIError(f"{path} exists; pass --overwrite to replace it")
    path.write_bytes(result.raw_onnx().SerializeToString())
    raw, x = _raw_rows(result)
    out = interop.run_onnx(path, raw)
    roles = dict(getattr(result.model, "output_roles", ())) or {"probabilities": "probabilities", "logits": "logits"}
    named = {r: out[n] for n, r in roles.items()}
    probs = named["probabilities"] if "probabilities" in named else interop.softmax(named["logits"])
    diff = float(np.abs(probs - result.pruned.predict_proba(x)).max())
    if diff > 1e-4:
        raise CLIError(f"{path}: the raw-row ONNX model differs from the network by {diff:.3g}")
    print(f"exported onnx on raw rows (the input scaling baked in, the input model's outputs where it was ONNX): "
          f"{path} (read back: max |probability diff| {diff:.1e})")
