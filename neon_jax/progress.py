"""Stages of long work, shown as they happen: a spinner with the elapsed seconds on a terminal, plain lines elsewhere.

`Stages` is the ``progress`` callable of `neon_jax.prune`: calling it prints a note; ``stage(name)`` ends the stage
before (printing how long it took) and starts the next; ``done()`` ends the last one and returns the seconds since
the first stage began.
"""

from __future__ import annotations

import sys
import threading
import time

_FRAMES = "|/-\\"


class Stages:
    """Named stages of one job, timed by one clock.

    Args:
      stream: where to write (default: standard error, so the result on standard output stays clean).
      spinner: redraw a spinner and the elapsed seconds every 0.1 s; default: only when `stream` is a terminal.
    """

    def __init__(self, stream=None, spinner: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.spinner = bool(getattr(self.stream, "isatty", lambda: False)()) if spinner is None else spinner
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._start = self._first = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, message: str) -> None:
        """Prints a note on its own line (above the spinner)."""
        with self._lock:
            self._clear()
            self.stream.write(f"{message}\n")
            self.stream.flush()

    def stage(self, name: str) -> None:
        """Ends the current stage and starts `name`."""
        self._end()
        now = time.perf_counter()
        self._first = now if self._first is None else self._first
        self._name, self._start = name, now
        if self.spinner:
            self._stop.clear()
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        else:
            self.stream.write(f"{name} ...\n")
            self.stream.flush()

    def done(self) -> float:
        """Ends the last stage; returns the seconds since the first stage began (0 if none began)."""
        self._end()
        return 0.0 if self._first is None else time.perf_counter() - self._first

    def abort(self) -> None:
        """Stops the spinner of the current stage without calling it done (the job failed; its error follows)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        with self._lock:
            self._clear()
            self.stream.flush()
        self._name = None

    def _end(self) -> None:
        if self._name is None:
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        seconds = time.perf_counter() - self._start
        self.seconds[self._name] = self.seconds.get(self._name, 0.0) + seconds
        with self._lock:
            self._clear()
            self.stream.write(f"{self._name}: done in {seconds:.1f}s\n")
            self.stream.flush()
        self._name = None

    def _clear(self) -> None:
        if self.spinner and self._name is not None:
            self.stream.write("\r\033[K")

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            with self._lock:
                self.stream.write(f"\r\033[K{_FRAMES[frame % len(_FRAMES)]} {self._name}  "
                                  f"{time.perf_counter() - self._start:.0f}s")
                self.stream.flush()
            frame += 1


def stage(progress, name: str) -> None:
    """Starts stage `name` on `progress` when it has stages (`Stages`); a plain callable (``print``) gets one line;
    None stays silent."""
    if progress is None:
        return
    start = getattr(progress, "stage", None)
    if start is not None:
        start(name)
    else:
        progress(f"{name} ...")
