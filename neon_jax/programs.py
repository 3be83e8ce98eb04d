"""The process's compiled programs: bounded caches, one `clear()`, and the memory maps the programs cost.

Every compiled XLA CPU program keeps its code mapped into the process (about five memory maps for a small
program), and past the kernel's limit (``vm.max_map_count``, 65,530 by default) the next compile dies with
"LLVM ERROR: Unable to allocate section memory". A long run (an evaluation over many datasets, a train-agent, a
zoo over many datasets, a benchmark sweep) compiles thousands of programs, so nothing may keep them all:

- every process-wide program cache of neon_jax is a `ProgramCache` (least recently used, bounded), made here and
  registered, or a function decorated with `cached`;
- `clear()` empties every one of them and JAX's own caches, which frees the programs nothing else holds;
- `checkpoint()` is called by long work at its safe points (after a run over a pool, a zoo's bucket, a train-agent
  iteration, an evaluation cell): when the programs compiled since the last clear pass `max_compiled` or the maps
  pass `clear_fraction` of the limit, it clears; when the maps stay near the limit even then, it says so once, in
  one line, with what to do.

The persistent compilation cache on disk (`neon_jax.compile_cache`) keeps the re-compiles after a clear cheap.

    programs.status()      # "programs: 12 cached, 340 compiled since the last clear, maps 4,321 of 65,530"
    programs.checkpoint()  # at a safe point: clears when over a bound
    programs.clear()       # everything, now
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any

import jax
from jax import monitoring

# JAX's events for "an executable was made": a backend compile, or one read back from the persistent cache.
_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",)
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


@dataclasses.dataclass
class Limits:
    """When `checkpoint` clears, and when it warns.

    Attributes:
      max_compiled: clear once this many programs were compiled (or read back) since the last clear; None: never
        on that count. A small CPU program costs about five memory maps.
      clear_fraction: clear once the process's memory maps pass this fraction of ``vm.max_map_count``.
      warn_fraction: after a clear, maps still above this fraction of the limit get the one-line warning.
      eviction: False keeps everything (no cache bound, no clearing): the behaviour the bounds guard against,
        for measurements only.
    """

    max_compiled: int | None = 2000
    clear_fraction: float = 0.5
    warn_fraction: float = 0.8
    eviction: bool = True


LIMITS = Limits()


def configure(**changes) -> Limits:
    """Changes `LIMITS` (keyword names of `Limits`); returns the previous limits (pass them back to restore)."""
    global LIMITS
    previous = LIMITS
    unknown = set(changes) - {f.name for f in dataclasses.fields(Limits)}
    if unknown:
        raise ValueError(f"unknown program limit(s) {sorted(unknown)}; known: "
                         f"{', '.join(f.name for f in dataclasses.fields(Limits))}")
    LIMITS = dataclasses.replace(LIMITS, **changes)
    return previous


def restore(limits: Limits) -> None:
    """Puts back limits `configure` returned."""
    global LIMITS
    LIMITS = limits


class ProgramCache:
    """A process-wide cache of programs (or of objects that hold programs), least recently used first out.

    Args:
      name: what it holds, for `status` and `stats`.
      maxsize: entries kept; adding one more drops the least recently used (not while `LIMITS.eviction` is off).
    """

    def __init__(self, name: str, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.name, self.maxsize = name, int(maxsize)
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0
        _CACHES.append(self)

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The entry of `key`, made by ``build()`` when absent (and kept, evicting the oldest past `maxsize`)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = build()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while LIMITS.eviction and len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
                self.evicted += 1
        return value

    def __contains__(self, key) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list:
        return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHES: list[ProgramCache] = []


def cached(name: str, maxsize: int):
    """`functools.cache` for functions that build programs: the results live in a `ProgramCache` (bounded, and
    emptied by `clear`). Arguments must be hashable; keyword arguments are part of the key."""

    def wrap(fn):
        cache = ProgramCache(name, maxsize)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            key = (args, tuple(sorted(kwargs.items())))
            return cache.get(key, lambda: fn(*args, **kwargs))

        wrapper.cache = cache
        return wrapper

    return wrap


class _Counter:
    """Programs compiled (or read back from the persistent cache) in this process: in all, and since the last
    clear, counted from JAX's monitoring events."""

    def __init__(self):
        self.total = 0
        self.since_clear = 0
        self.clears = 0

    def on_duration(self, event: str, _seconds: float, **_kwargs) -> None:
        if event in _COMPILE_EVENTS:
            self.total += 1
            self.since_clear += 1

    def on_event(self, event: str, **_kwargs) -> None:
        if event == _CACHE_HIT_EVENT:
            self.total += 1
            self.since_clear += 1


_COUNTER = _Counter()
monitoring.register_event_duration_secs_listener(_COUNTER.on_duration)
monitoring.register_event_listener(_COUNTER.on_event)
_warned = False


def clear() -> None:
    """Empties every program cache of neon_jax and JAX's own caches. Programs still referenced elsewhere (a
    caller's jitted function, an executable in use) live on; the others are freed with their memory maps."""
    for cache in _CACHES:
        cache.clear()
    jax.clear_caches()
    _COUNTER.since_clear = 0
    _COUNTER.clears += 1


def memory_maps() -> int | None:
    """The process's memory maps (lines of /proc/self/maps); None where the system has no such file."""
    try:
        with open("/proc/self/maps", "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return None


def map_limit() -> int | None:
    """The kernel's per-process limit of memory maps (/proc/sys/vm/max_map_count); None where unknown."""
    try:
        with open("/proc/sys/vm/max_map_count") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cached_entries() -> int:
    """Entries of every program cache of neon_jax (each a program, or an object holding a few)."""
    return sum(len(c) for c in _CACHES)


def compiled_since_clear() -> int:
    """Programs compiled or read back from the persistent cache since the last `clear` (an upper bound of the
    programs alive that JAX made)."""
    return _COUNTER.since_clear


def stats() -> dict:
    """The numbers of `status`, for a log or a record: cached entries (in all and per cache), programs compiled
    (in all and since the last clear), clears, evictions, memory maps and their limit."""
    return {"cached": cached_entries(), "caches": {c.name: len(c) for c in _CACHES},
            "compiled": _COUNTER.total, "compiled_since_clear": _COUNTER.since_clear, "clears": _COUNTER.clears,
            "evicted": sum(c.evicted for c in _CACHES), "memory_maps": memory_maps(), "map_limit": map_limit()}


def status() -> str:
    """One short line for a progress bar: "12 cached, 340 compiled since clear, maps 4,321/65,530"."""
    maps, limit = memory_maps(), map_limit()
    text = f"{cached_entries()} cached, {_COUNTER.since_clear} compiled since clear"
    if maps is not None:
        text += f", maps {maps:,}" + (f"/{limit:,}" if limit else "")
    return text


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def checkpoint(say: Callable[[str], Any] | None = _to_stderr) -> bool:
    """At a safe point of long work (nothing compiled is needed past it but what the caller holds): clears every
    program (`clear`) when the programs compiled since the last clear pass `LIMITS.max_compiled` or the memory maps
    pass `LIMITS.clear_fraction` of the kernel's limit. If the maps stay above `LIMITS.warn_fraction` of the limit
    after that, `say` (default: standard error) gets one line (once per process) with what to do. Returns whether it cleared."""
    global _warned
    if not LIMITS.eviction:
        return False
    maps, limit = memory_maps(), map_limit()
    near = maps is not None and limit is not None and maps > LIMITS.clear_fraction * limit
    many = LIMITS.max_compiled is not None and _COUNTER.since_clear >= LIMITS.max_compiled
    if not (near or many):
        return False
    clear()
    maps = memory_maps()
    if (maps is not None and limit is not None and maps > LIMITS.warn_fraction * limit and not _warned
            and say is not None):
        _warned = True
        say(f"warning: this process holds {maps:,} memory maps of the kernel's limit of {limit:,} even after "
            f"dropping its compiled programs; past the limit XLA dies with 'LLVM ERROR: Unable to allocate section "
            f"memory'. Raise the limit (sudo sysctl -w vm.max_map_count=262144) or run fewer datasets per process; "
            f"evaluate, train-agent and zoo resume where they stopped.")
    return True
