"""The `neon-jax` command: the thin shell around the compiled core (files, progress, tables)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from neon_jax.presets import PRESETS, get_preset


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder(s) of *.csv / *.csv.gz datasets (default: $NEON_JAX_DATA_DIR; "
                             "scikit-learn's iris, wine, breast_cancer, digits need none)")


def cmd_datasets(args) -> int:
    from neon_jax import data

    infos = data.list_datasets(args.data_dir)
    rows = [(i.name, i.task, i.rows, i.features, i.classes or "-", i.source) for i in infos]
    print(format_table(["name", "task", "rows", "features", "classes", "source"], rows))
    return 0


def cmd_zoo(args) -> int:
    from neon_jax import zoo as zoo_lib

    preset = get_preset(args.preset)
    names = [n for n in args.dataset.split(",") if n]
    out = Path(args.out)
    for name in names:
        if (out / name / "zoo.json").exists() and not args.overwrite:
            raise CLIError(f"{out / name} already holds a zoo; pass --overwrite to replace it")
    for name in names:
        prepared = zoo_lib.prepare_data(name, preset, seed=args.seed, data_dir=args.data_dir)
        epochs = args.epochs or preset.train_epochs
        start = time.perf_counter()
        with tqdm(total=epochs, desc=f"{name}: {args.n} networks", unit="epoch", disable=args.quiet) as bar:
            def progress(done, total):
                bar.update(done - bar.n)

            zoo = zoo_lib.build_zoo(prepared, preset, n=args.n, n_heldout=args.heldout, seed=args.seed,
                                    epochs=epochs, progress=progress)
        path = zoo_lib.save_zoo(zoo, out, overwrite=args.overwrite)
        s = prepared.splits
        majority = max((s.y_test == c).mean() for c in range(prepared.n_classes))
        rows = []
        for i in range(len(zoo)):
            d = zoo.describe(i)
            rows.append((i, "held-out" if d["heldout"] else "train", "-".join(map(str, d["widths"])),
                         d["params"], f"{d['train_accuracy']:.3f}", f"{d['test_accuracy']:.3f}"))
        if not args.quiet:
            print(format_table(["net", "split", "widths", "params", "train acc", "test acc"], rows))
        print(f"{name}: {len(zoo)} networks in {time.perf_counter() - start:.1f}s, test accuracy "
              f"mean {zoo.test_accuracy.mean():.3f} (majority class {majority:.3f}) -> {path}")
    return 0


def format_table(header, rows) -> str:
    """A plain fixed-width text table."""
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neon-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", help="list the datasets that can be loaded")
    _add_data_args(p)
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("zoo", help="train N random base networks per dataset and save them")
    p.add_argument("--dataset", required=True, help="dataset name(s), comma-separated, or a CSV path")
    _add_data_args(p)
    p.add_argument("--n", type=int, default=30, help="networks per dataset (paper: 30)")
    p.add_argument("--heldout", type=int, default=6, help="networks held out from agent training (paper: 6)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="scale preset (default: cpu)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder; the zoo goes to OUT/<dataset>/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zoo")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_zoo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"neon-jax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
