"""`make test`: the suite as three pytest processes at once, so that the 2-core machine is kept busy.

Why: one pytest process of the integration tier keeps about one core busy on average; most of its
time is starting processes, clusters and servers and waiting on them (measured from /proc/stat,
docs/testing.md "Suite time"). So the integration tier runs as two streams: the modules that bring up
their own Ray clusters and servers (OWN, below) beside the rest, which share the session's cluster
and servers (tests/conftest.py); the unit tier (no Ray, no servers) runs beside both at a lower CPU
priority, filling what they leave idle. Every test module runs in exactly one stream: a new
integration module joins the shared stream unless it is listed here.

The shared stream prints as it goes; the other two are printed whole when all three have ended
(each stream's output is also in build/test-<stream>.log), then one line per stream. The exit status is the first failing stream's
(pytest's 5, "no tests selected", counts as a pass in a stream when another ran tests, for -k).

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
INTEGRATION = "tests/integration"
# Modules whose tests start their own Ray heads and worker nodes, S3 or MLflow servers (and wait on
# their deadlines and outages): about 1,100 s of the tier's 2,600 s alone.
OWN = ("test_nodes.py", "test_jobs.py", "test_faults.py", "test_tracking_outage.py", "test_install.py")
NO_TESTS = 5  # pytest's exit status when a selection (-k, -m) leaves a stream nothing to run


@dataclass
class Stream:
    name: str
    args: list[str]
    nice: int = 0
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
        nice = self.nice
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE if self.live else open(self.log, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=(lambda: os.nice(nice)) if nice else None)
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


def streams() -> list[Stream]:
    ignore = [f"--ignore={INTEGRATION}/{m}" for m in OWN]
    return [Stream("integration", [INTEGRATION, *ignore], live=True),
            Stream("integration-own", [f"{INTEGRATION}/{m}" for m in OWN if (REPO / INTEGRATION / m).exists()]),
            Stream("unit", ["tests/unit"], nice=10)]


def status(codes: list[int]) -> int:
    """The suite's exit status from the streams' (in order)."""
    if all(c == NO_TESTS for c in codes):
        return NO_TESTS
    return next((c for c in codes if c not in (0, NO_TESTS)), 0)


def main(extra: list[str]) -> int:
    runs = streams()
    print("make test: three pytest processes at once (tests/streams.py): "
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
