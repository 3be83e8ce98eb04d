"""JAX's persistent compilation cache in a user cache folder, so that a second run of the same shapes starts in
seconds instead of compiling again (the main job compiles for tens of seconds on a small CPU)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pickle
import weakref
from pathlib import Path

import jax
import jaxlib

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
    argument or ``$NEON_JAX_CACHE_DIR``) leaves the cache off and returns None. Every program is cached, however
    fast it compiles (JAX's default keeps only those over a second; reading a small one back costs milliseconds).
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
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Exported programs: a warm run skips tracing and lowering too.
#
# JAX's persistent cache keys an executable by the lowered program, so a warm run still traces and lowers every
# program before it can read it back (seconds for the pruning program). A program registered here with a key
# (`register`: everything its tracing depends on besides neon_jax's code and its arguments' types) is also kept as
# a serialized `jax.export.Exported` beside the executables; a later run with the same code, key and argument
# types deserializes it instead of tracing it. Compiled from the same StableHLO, it computes the same numbers.

EXPORTED_FOLDER = "neon_jax_exported"
_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register(program, key) -> None:
    """Names a jitted `program` by `key` (hashable, with a stable text: dataclasses, numbers, strings; functions
    are named by module and qualified name) for `aot_compile`'s exported-program cache."""
    _KEYS[program] = key


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of neon_jax's Python sources (what every exported program's key starts with)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    """The versions of the libraries the programs' tracing goes through besides JAX (flax, optax, numpy)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("flax", "optax", "numpy"):
        try:
            found.append((name, version(name)))
        except PackageNotFoundError:
            found.append((name, None))
    return tuple(found)


def _stable(obj) -> str:
    """A text of `obj` with no memory addresses: functions by module and qualified name."""
    if isinstance(obj, (tuple, list)):
        return "(" + ", ".join(_stable(o) for o in obj) + ")"
    if callable(obj) and hasattr(obj, "__qualname__") and not dataclasses.is_dataclass(obj):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    return repr(obj)


def exported_path(program, args: tuple) -> Path | None:
    """Where `aot_compile` keeps `program`'s export for these arguments; None when the persistent cache is off or
    the program is not registered."""
    folder = jax.config.jax_compilation_cache_dir
    key = _KEYS.get(program)
    if not folder or key is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten(args)
    text = repr((source_digest(), jax.__version__, jaxlib.__version__, _versions(), jax.config.jax_enable_x64,
                 jax.config.jax_default_matmul_precision, jax.config.jax_threefry_partitionable,
                 jax.default_backend(), jax.device_count(), _stable(key), str(treedef), [str(jax.typeof(a)) for a in leaves],
                 [_placement(a) for a in leaves]))
    return Path(folder) / EXPORTED_FOLDER / f"{hashlib.sha256(text.encode()).hexdigest()}.exported"


def _placement(a) -> str:
    """How an argument lies on the devices (a program exported for one mesh is not another's): its sharding's
    mesh shape and partition spec, or "" for a host value or a single device."""
    sharding = getattr(a, "sharding", None)
    if sharding is None or len(getattr(sharding, "device_set", ())) <= 1:
        return ""
    return f"{dict(getattr(getattr(sharding, 'mesh', None), 'shape', {}))} {getattr(sharding, 'spec', '')}"


def aot_compile(program, args: tuple):
    """``program.lower(*args).compile()``; for a `register`ed program with the persistent cache on, through its
    exported StableHLO, read from the cache folder when a run already exported it (no tracing, no lowering).
    Returns a callable of `args`' structure; anything failing in the export path falls back to the plain compile."""
    path = exported_path(program, args)
    if path is None:
        return program.lower(*args).compile()
    try:
        return _exported_executable(program, args, path)
    except Exception:  # noqa: BLE001  (the exported path only saves time: never let it fail a run)
        return program.lower(*args).compile()


def _exported_executable(program, args: tuple, path: Path):
    """The executable of `program` at `args` compiled from its export at `path` (exported there first when
    absent): the export takes and gives flat lists of arrays, so no pytree type needs registering; the output
    structure is kept beside it (pickled)."""
    leaves, in_tree = jax.tree_util.tree_flatten(args)
    name = getattr(program, "__name__", "program")
    exported = out_tree = None
    if path.exists():
        try:
            out_tree, blob = pickle.loads(path.read_bytes())
            exported = jax.export.deserialize(bytearray(blob))
        except Exception:  # noqa: BLE001  (an unreadable file only costs the tracing)
            exported = None
    if exported is None:
        trees = []

        def flat(*xs):
            out_leaves, tree = jax.tree_util.tree_flatten(program(*jax.tree_util.tree_unflatten(in_tree, xs)))
            trees.append(tree)
            return out_leaves

        flat.__name__ = flat.__qualname__ = name
        exported = jax.export.export(jax.jit(flat))(*leaves)
        out_tree = trees[-1]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(pickle.dumps((out_tree, exported.serialize())))
            partial.replace(path)
        except OSError:
            pass  # an unwritable folder only costs the tracing next time

    def run(*xs):
        return exported.call(*xs)

    run.__name__ = run.__qualname__ = name
    executable = jax.jit(run).lower(*leaves).compile()
    return lambda *a: jax.tree_util.tree_unflatten(out_tree, executable(*jax.tree_util.tree_leaves(a)))
