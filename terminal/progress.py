"""A progress line for long work, on a terminal only.

Long operations (a restore of thousands of exports, a reconcile, a guard pass
over many volumes) take a `progress(done, total)` callable. This one redraws one
line on stderr, at most every fifth of a second, when stderr is a terminal, and
clears it at the end; given a pipe, a file or `--json`, it stays silent, so
scripts and logs read only the result. Work deep below the CLI, where no
callable reaches (a file pool's copy), logs ticks that `ProgressHandler` draws.
"""
import logging
import sys
import time


class Progress:
    def __init__(self, what: str, stream=None, enabled: bool | None = None,
                 every: float = 0.2):
        self.what = what
        self.stream = stream or sys.stderr
        self.enabled = (self.stream.isatty() if enabled is None else enabled)
        self.every = every
        self.started = time.monotonic()
        self._drawn = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._drawn < self.every:
            return
        self._drawn = now
        share = f" {100 * done // total}%" if total else ""
        self.stream.write(f"\r\033[K{self.what}: {done}/{total}{share}, "
                          f"{now - self.started:.0f} s")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ProgressHandler(logging.Handler):
    """Draws log records that carry `what`, `done` and `total` (a long copy's
    ticks, deep in a pool where no callable reaches) as a Progress line each."""

    def __init__(self, stream=None):
        super().__init__(logging.INFO)
        self.stream = stream
        self.lines: dict[str, Progress] = {}

    def emit(self, record: logging.LogRecord) -> None:
        what = getattr(record, "what", None)
        done, total = getattr(record, "done", None), getattr(record, "total", None)
        if what is None or done is None or total is None:
            return
        line = self.lines.get(what) or self.lines.setdefault(what, Progress(what, self.stream))
        line(done, total)
        if done >= total:
            self.lines.pop(what).close()

    def close(self) -> None:
        for line in self.lines.values():
            line.close()
        self.lines.clear()
        super().close()


def quiet(done: int, total: int) -> None:
    """The progress of work nobody watches."""
