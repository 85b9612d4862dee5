"""A local MLflow tracking server (``mlflow server``, SQLite backend, artifacts proxied by the server)
on 127.0.0.1, for tests and for trying tracking on one machine:

    mlflow server --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlartifacts \\
        --host 127.0.0.1 --port 5000
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from randommask.errors import UserError
from randommask.tools.s3server import free_port


class LocalMlflow:
    """A running server; ``stop``/``start`` take it down and bring it back on the same port and store."""

    def __init__(self, root: Path, port: int, log: str | os.PathLike | None = None,
                 executable: str | None = None) -> None:
        self.root, self.port, self.log, self.executable = root, port, log, executable
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        mlflow = (self.executable or shutil.which("mlflow", path=os.path.dirname(sys.executable))
                  or shutil.which("mlflow"))
        if mlflow is None or not os.access(mlflow, os.X_OK):
            raise UserError("mlflow server not found; `make venv` installs it in .venv-mlflow (or pip install mlflow)")
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log:
                out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(f"mlflow server exited with code {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise UserError(f"mlflow server did not answer on {self.uri} within {timeout:.0f}s")

    def stop(self) -> None:
        """Down at once, with its workers (the whole process group)."""
        if self.proc is None:
            return
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def local_mlflow(root: str | os.PathLike, log: str | os.PathLike | None = None,
                 executable: str | None = None) -> Iterator[LocalMlflow]:
    """Run ``mlflow server`` (``executable``, else the one on PATH) with its store under ``root`` on a
    free loopback port until the block ends."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    server = LocalMlflow(root, free_port(), log, executable)
    try:
        server.start()
        yield server
    finally:
        server.stop()
