"""Outages that start at an exact moment: a TCP proxy in front of the real S3 server (rclone) that
takes the server down when a chosen request arrives, for example the first PUT of a checkpoint's
files or the Ray Train controller's snapshot write. Polling the server's log instead would start
the outage a request or two late, and the window between a worker's upload and the controller's
registration is milliseconds wide.

At a trigger the proxy stops the real server, drops every open connection (the triggering request
is never forwarded: it fails as in a real outage) and refuses new ones; ``seconds`` later the
server starts again on its port and the proxy listens again on its own."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field

from randommask.tools.s3server import LocalS3, free_port


@dataclass
class Trigger:
    """Fires on a request line matching ``at``, once every pattern in ``after`` was seen in order."""

    name: str
    at: bytes
    after: list[bytes] = field(default_factory=list)
    fired_at: float | None = None


class OutageProxy:
    def __init__(self, server: LocalS3, triggers: list[Trigger], seconds: float = 12.0) -> None:
        self.server, self.triggers, self.seconds = server, list(triggers), seconds
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []  # every request line seen, for a failing test's message
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = False
        self._listen()

    def env(self) -> dict[str, str]:
        return {**self.server.env(), "AWS_ENDPOINT_URL": self.endpoint}

    def fired(self) -> dict[str, float | None]:
        return {t.name: t.fired_at for t in self.triggers}

    def close(self) -> None:
        self._closed = True
        self._drop_all()

    # -- connections --------------------------------------------------------------------------------
    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: an outage or the end
            try:
                upstream = socket.create_connection(("127.0.0.1", self.server.port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and self._check(data):
                    return  # the outage dropped this connection with the rest
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def _check(self, data: bytes) -> bool:
        lines = re.findall(rb"(?m)^(?:GET|PUT|POST|DELETE|HEAD) \S+ HTTP/1\.[01]", data)
        fire = None
        with self._lock:
            for line in lines:
                self.requests.append(line.decode(errors="replace"))
                for t in self.triggers:
                    if t.fired_at is not None:
                        continue
                    if t.after and re.search(t.after[0], line):
                        t.after.pop(0)
                    elif not t.after and re.search(t.at, line) and fire is None:
                        t.fired_at = time.time()
                        fire = t
                    break  # triggers fire in order: only the first pending one is looked at
        if fire is not None:
            self._outage()
        return fire is not None

    def _drop_all(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _outage(self) -> None:
        self._drop_all()
        self.server.stop()

        def back() -> None:
            time.sleep(self.seconds)
            if self._closed:
                return
            self.server.start()
            self._listen()

        threading.Thread(target=back, daemon=True).start()
