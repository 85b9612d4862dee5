"""Progress for long commands: a tqdm bar on a terminal; elsewhere (CI logs, ``ray job submit``
output, a redirected file) a plain line every few seconds, because a bar's carriage returns turn
into hundreds of fragments on one line there."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class PlainProgress:
    """The subset of tqdm's interface the commands use, printing ``desc: n/total unit`` lines."""

    def __init__(self, total: float | None, desc: str, unit: str, every: float, stream: TextIO,
                 unit_scale: bool = False) -> None:
        self.total, self.desc, self.unit, self.every, self.stream = total, desc, unit, every, stream
        self.unit_scale = unit_scale
        self.n = 0
        self.postfix = ""
        self._last = time.monotonic()
        self._printed_n: float | None = None

    def _fmt(self, x: float) -> str:
        if not self.unit_scale:
            return f"{x:,.0f}"
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if x >= scale:
                return f"{x / scale:.2f}{suffix}"
        return f"{x:.0f}"

    def _line(self) -> None:
        of = f"/{self._fmt(self.total)}" if self.total else ""
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self._fmt(self.n)}{of} {self.unit}{extra}", file=self.stream, flush=True)
        self._printed_n = self.n

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._line()

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        if self._printed_n is not None and self._printed_n != self.n:
            self._line()  # the final count, once, if a line was printed before


class _Off:
    n = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: float | None, desc: str, unit: str, show: bool = True, every: float = 10.0,
             stream: TextIO | None = None, unit_scale: bool = False) -> Any:
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a :class:`PlainProgress`
    printing at most one line per ``every`` seconds; nothing at all when ``show`` is false."""
    stream = stream or sys.stderr
    if not show:
        return _Off()
    if hasattr(stream, "isatty") and stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, dynamic_ncols=True, file=stream)
    return PlainProgress(total, desc, unit, every, stream, unit_scale=unit_scale)
