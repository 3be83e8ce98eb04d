"""neon-jax: prune dense classifiers with NEON's trained agent, build zoos of base networks, train and evaluate agents
against the paper's baselines, and export pruned networks to PyTorch / ONNX."""

from __future__ import annotations

import sys
import warnings

from neon_jax.cli.args import build_parser
from neon_jax.cli.common import CLIError, _speedup, format_table

__all__ = ["CLIError", "_speedup", "build_parser", "format_table", "main"]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    def show(message, category, *_args, **_kwargs):  # our warnings as one plain line each, not a source listing
        print(f"neon-jax {args.command}: warning: {message}", file=sys.stderr)

    try:
        if hasattr(args, "devices"):  # before anything else starts JAX's backends
            _start_devices(args)
        if args.command != "datasets":  # every other command compiles: a second run of the same shapes need not
            from neon_jax import compile_cache

            compile_cache.enable()
        from neon_jax.data import DatasetWarning

        with warnings.catch_warnings():
            warnings.simplefilter("default", DatasetWarning)
            warnings.showwarning = show
            return args.func(args)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"neon-jax {args.command}: error: {err}", file=sys.stderr)
        return 2


def _start_devices(args) -> None:
    """Joins a multi-process run when asked (`sharding.initialize_distributed`: flags or $NEON_JAX_COORDINATOR ...)
    and checks --devices against the devices there are (a ValueError: one line naming how many)."""
    from neon_jax import sharding

    sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    if args.devices is not None:
        sharding.resolve_devices(args.devices)
