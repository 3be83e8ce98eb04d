"""What every command shares: the user-facing error, the start time, name lists, tables."""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # near the process's start (JAX is imported later): what a user waits includes it


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _csv_names(text):
    return [n for n in (text or "").split(",") if n]


def _speedup(ratio: float) -> str:
    """A measured before / after time ratio in words: "x2.10 faster", "x1.06 slower", "no faster"."""
    if round(ratio, 2) == 1.0:
        return "no faster"
    return f"x{ratio:.2f} faster" if ratio > 1 else f"x{1 / ratio:.2f} slower"


def format_table(header, rows) -> str:
    """A plain fixed-width text table."""
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
