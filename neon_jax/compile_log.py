"""What a piece of work traced and compiled, program by program, counted from JAX's monitoring events.

    with compile_log.Recorder() as log:
        neon_jax.prune("iris", preset="tiny")
    log.programs()   # [{"name": "jit(candidates)", "traces": 1, "compiles": 1, "compile_s": 2.1, ...}, ...]
    log.totals()     # {"programs": 7, "compiles": 7, "cache_hits": 0, "compile_s": 4.3, "trace_s": 1.2, ...}

JAX reports three timed steps per program with its name: tracing to a jaxpr, lowering the jaxpr to an MLIR module,
and the backend compile (which, with the persistent cache on, is reading the program back when it was cached).
A one-op program that an eager operation compiles (``jnp.asarray(x) + 1`` outside ``jit``) shows up here under
the operation's name ("add", "convert_element_type", ...): the main job should have none.
"""

from __future__ import annotations

import collections
import threading
import time

from jax import monitoring

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"

_KINDS = {TRACE_EVENT: "trace", LOWER_EVENT: "lower", COMPILE_EVENT: "compile"}
_ACTIVE: list[Recorder] = []
_LOCK = threading.Lock()


def _on_span(event: str, start: float, end: float, **kwargs) -> None:
    kind = _KINDS.get(event)
    if kind is None or not _ACTIVE:
        return
    name = str(kwargs.get("fun_name", "?"))
    if name.startswith("jit(") and name.endswith(")"):  # lowering and compiling say "jit(f)", tracing "f"
        name = name[4:-1]
    with _LOCK:
        for recorder in _ACTIVE:
            recorder._add(kind, name, start, end)


def _on_event(event: str, **_kwargs) -> None:
    if event == CACHE_HIT_EVENT and _ACTIVE:
        with _LOCK:
            for recorder in _ACTIVE:
                recorder._pending_hits += 1  # the backend-compile event of the same program follows


monitoring.register_event_time_span_listener(_on_span)
monitoring.register_event_listener(_on_event)


class Recorder:
    """Counts, per program name, traces, lowerings and backend compiles (with their seconds) while active.

    Use as a context manager, or `start` / `stop`. Recorders nest: each active one sees every event.
    ``end_stage(name)`` labels the events since the previous one with the stage `name` (the main job's stages), so
    `by_stage` splits the seconds by stage.
    """

    def __init__(self):
        self._rows: dict[str, dict] = collections.OrderedDict()
        self._pending_hits = 0
        self._spans: list[list] = []  # [kind, stage (None until its stage ends), start, end]

    def start(self) -> Recorder:
        """Starts recording (returns self)."""
        with _LOCK:
            if self not in _ACTIVE:
                _ACTIVE.append(self)
        return self

    def stop(self) -> Recorder:
        """Stops recording (returns self); what was recorded stays."""
        with _LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        return self

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def end_stage(self, name: str) -> None:
        """Labels the events recorded since the previous `end_stage` (or the start) with the stage `name`."""
        with _LOCK:
            for span in self._spans:
                if span[1] is None:
                    span[1] = name

    def _add(self, kind: str, name: str, start: float, end: float) -> None:
        seconds = end - start
        self._spans.append([kind, None, start, end])
        row = self._rows.setdefault(name, {"name": name, "traces": 0, "trace_s": 0.0, "lowerings": 0,
                                           "lower_s": 0.0, "compiles": 0, "cache_hits": 0, "compile_s": 0.0})
        if kind == "trace":
            row["traces"] += 1
        elif kind == "lower":
            row["lowerings"] += 1
        else:
            row["compiles"] += 1
            if self._pending_hits:
                row["cache_hits"] += 1
                self._pending_hits -= 1
        row[f"{kind}_s"] += seconds

    def programs(self) -> list[dict]:
        """One dict per program name, most compile seconds first: name, traces, trace_s (a trace's seconds hold
        those of the functions traced inside it), lowerings, lower_s, compiles (backend compiles and reads from the
        persistent cache), cache_hits (the reads), compile_s."""
        rows = [dict(r) for r in self._rows.values()]
        for r in rows:
            for key in ("trace_s", "lower_s", "compile_s"):
                r[key] = round(r[key], 4)
        return sorted(rows, key=lambda r: (-r["compile_s"], -r["trace_s"], r["name"]))

    def _wall(self, kind: str, stage: str | None = None) -> float:
        """Seconds covered by the spans of `kind` (in `stage`, or all): nested spans (a jitted function traced
        inside another's trace) count once."""
        spans = sorted((a, b) for k, st, a, b in self._spans if k == kind and (stage is None or (st or "-") == stage))
        total, reach = 0.0, float("-inf")
        for a, b in spans:
            if b > reach:
                total += b - max(a, reach)
                reach = b
        return round(total, 4)

    def by_stage(self) -> dict:
        """{stage: {"trace_s", "lower_s", "compile_s", "compiles"}}: the wall seconds of each kind of step
        recorded under each stage (nested traces once)."""
        names = list(dict.fromkeys(span[1] or "-" for span in self._spans))
        return {name: {**{f"{k}_s": self._wall(k, name) for k in ("trace", "lower", "compile")},
                       "compiles": sum(1 for k, st, _, _ in self._spans if k == "compile" and (st or "-") == name)}
                for name in names}

    def totals(self) -> dict:
        """{"programs", "compiles", "cache_hits", "traces", "trace_s", "lower_s", "compile_s"} over every
        program (``programs``: distinct names compiled at least once; seconds: wall, nested traces once)."""
        rows = self._rows.values()
        return {"programs": sum(1 for r in rows if r["compiles"]),
                "compiles": sum(r["compiles"] for r in rows), "cache_hits": sum(r["cache_hits"] for r in rows),
                "traces": sum(r["traces"] for r in rows),
                **{f"{k}_s": self._wall(k) for k in ("trace", "lower", "compile")}}

    def report(self) -> dict:
        """{"totals", "by_stage", "programs"}: what a job's report records."""
        return {"totals": self.totals(), "by_stage": self.by_stage(), "programs": self.programs()}


class StageClock:
    """One clock for the stages of a job (a context manager): `lap(stage)` returns the seconds since the previous
    lap (or the start) and labels the programs traced and compiled meanwhile with the stage (a `Recorder`)."""

    def __init__(self):
        self.last = time.perf_counter()
        self.log = Recorder()

    def __enter__(self) -> StageClock:
        self.log.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.log.stop()

    def lap(self, stage: str) -> float:
        """Ends `stage`: its seconds."""
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.log.end_stage(stage)
        return seconds

    def finish(self, seconds: dict, report: dict) -> None:
        """Ends the "report" stage: `seconds` gets it and the "total" (the stages partition the wall time: what
        the user waited), `report` the "compiled" programs (`Recorder.report`)."""
        seconds["report"] = self.lap("report")
        seconds["total"] = sum(seconds.values())
        report["compiled"] = self.log.report()


def summary_line(report: dict, top: int = 3) -> str:
    """One line of a `Recorder.report`: "12 programs, 14 compiles (0 read from the cache) in 6.1 s, tracing
    2.0 s; most: jit(candidates) 3.9 s, ..."."""
    t = report["totals"]
    most = ", ".join(f"{p['name']} {p['compile_s']:.1f} s" + (f" x{p['compiles']}" if p["compiles"] > 1 else "")
                     for p in report["programs"][:top] if p["compiles"])
    return (f"{t['programs']} programs, {t['compiles']} compiles ({t['cache_hits']} read from the cache) in "
            f"{t['compile_s']:.1f} s, tracing {t['trace_s']:.1f} s, lowering {t['lower_s']:.1f} s"
            + (f"; most: {most}" if most else ""))
