"""Progress of one migrate step: a bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_EVERY = 2.0  # seconds between plain lines (not a terminal: logs, CI)


class Progress:
    """Counts of one step (``done`` of ``total``), drawn as they move."""

    def __init__(self, name: str, total: int, out: TextIO | None = None) -> None:
        self.name, self.total, self.done = name, total, 0
        self._out = out or sys.stdout
        self._tty = self._out.isatty()
        self._shown = time.monotonic()  # plain lines: the first after _EVERY seconds

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self._tty:
            self._draw("\r")
        elif now - self._shown >= _EVERY:
            self._shown = now
            self._line()

    def finish(self, note: str = "") -> None:
        """The step's last line (the bar's final state on a terminal)."""
        if self._tty:
            self._draw("\r")
            self._out.write(f"  {note}\n" if note else "\n")
        else:
            self._line(note)
        self._out.flush()

    def _draw(self, start: str) -> None:
        share = self.done / self.total if self.total else 1.0
        filled = int(_WIDTH * min(1.0, share))
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self._out.write(f"{start}{self.name:<12} [{bar}] {self.done}/{self.total}")
        self._out.flush()

    def _line(self, note: str = "") -> None:
        tail = f" {note}" if note else ""
        self._out.write(f"{self.name}: {self.done}/{self.total}{tail}\n")
        self._out.flush()
