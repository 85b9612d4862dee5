"""`make test`: the integration tier and the unit tier as two pytest processes at once.

Why: the integration tier alone keeps 1.7 of the 2 cores busy on average (measured from /proc/stat
over tests/integration/test_pretrain.py on idle cores), and less while it waits on process start-ups,
drain deadlines and outages; the unit tier (no Ray, no servers, about 6 minutes alone) fills those
gaps. It runs under SCHED_IDLE, the Linux policy that gives a process the CPU only when nothing else
wants it, so it takes nothing from the integration tier's drivers or Ray workers (Ray starts its
workers at nice 15, which a merely niced unit tier would still compete with). An attempt to split the
integration tier itself into two streams overloaded the machine (Ray start-ups timed out) and was
dropped (docs/testing.md).

The integration tier prints as it goes; the unit tier's output is printed whole when both have ended
(each tier's output is also in build/test-<tier>.log), then one line per tier. The exit status is the
first failing tier's (pytest's 5, "no tests selected", counts as a pass when the other ran tests).

    python tests/streams.py [pytest arguments...]     # what `make test PYTEST_ARGS=...` runs
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO_TESTS = 5  # pytest's exit status when a selection (-k, -m) leaves a stream nothing to run


@dataclass
class Stream:
    name: str
    args: list[str]
    idle: bool = False  # run under SCHED_IDLE
    live: bool = False
    log: Path = field(init=False)
    echo: threading.Thread | None = None
    proc: subprocess.Popen | None = None
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def start(self, extra: list[str]) -> None:
        cmd = [sys.executable, "-m", "pytest", *self.args, *extra]
        self.log = REPO / "build" / f"test-{self.name}.log"
        self.log.parent.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE if self.live else open(self.log, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=idle_policy if self.idle else None)
        self.started = time.monotonic()
        if self.live:  # to the terminal as it comes, and to the log for the summary
            self.echo = threading.Thread(target=self._tee, daemon=True)
            self.echo.start()

    def _tee(self) -> None:
        with open(self.log, "wb") as log:
            for line in self.proc.stdout:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                log.write(line)

    def wait(self) -> int:
        code = self.proc.wait()
        if self.live:
            self.echo.join()
        self.seconds = time.monotonic() - self.started
        return code

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def last_line(self) -> str:
        if not self.log.exists():
            return ""
        lines = [x for x in self.log.read_text(errors="replace").splitlines() if x.strip()]
        return lines[-1].strip("= ") if lines else ""


def idle_policy() -> None:
    """In the child before it runs pytest: SCHED_IDLE (inherited by what it starts), else nice 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        os.nice(19)


def streams() -> list[Stream]:
    return [Stream("integration", ["tests/integration"], live=True), Stream("unit", ["tests/unit"], idle=True)]


def status(codes: list[int]) -> int:
    """The suite's exit status from the streams' (in order)."""
    if all(c == NO_TESTS for c in codes):
        return NO_TESTS
    return next((c for c in codes if c not in (0, NO_TESTS)), 0)


def main(extra: list[str]) -> int:
    runs = streams()
    print("make test: two pytest processes at once (tests/streams.py): "
          + "; ".join(s.name + (" (below, as it goes)" if s.live else f" -> build/test-{s.name}.log")
                      for s in runs), flush=True)
    try:
        for s in runs:
            s.start(extra)
        codes = [s.wait() for s in runs]
    except KeyboardInterrupt:
        for s in runs:
            s.stop()
        return 2
    for s in runs:
        if not s.live:
            print(f"\n{'=' * 30} {s.name} (build/test-{s.name}.log) {'=' * 30}", flush=True)
            sys.stdout.write(s.log.read_text(errors="replace"))
    print()
    for s, code in zip(runs, codes):
        print(f"{s.name:16} exit {code}  {s.seconds:6.0f} s  {s.last_line()}")
    return status(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
