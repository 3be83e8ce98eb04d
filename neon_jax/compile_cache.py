"""JAX's persistent compilation cache in a user cache folder, so that a second run of the same shapes starts in
seconds instead of compiling again (the main job compiles for tens of seconds on a small CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV_VAR = "NEON_JAX_CACHE_DIR"  # a folder, or "off"


def default_folder() -> Path:
    """``$NEON_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/neon_jax/xla``, else ``~/.cache/neon_jax/xla``."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "neon_jax" / "xla"


def enable(folder=None) -> Path | None:
    """Turns the cache on in `folder` (default `default_folder`) and returns the folder in use.

    A cache JAX already has (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept as it is; ``off`` (the
    argument or ``$NEON_JAX_CACHE_DIR``) leaves the cache off and returns None. Programs that compile in under a
    second are not cached (JAX's default threshold).
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    choice = folder if folder is not None else os.environ.get(ENV_VAR)
    if choice is not None and str(choice).lower() == "off":
        return None
    path = Path(choice).expanduser() if choice else default_folder()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache folder only costs the compile time, never the run
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path
