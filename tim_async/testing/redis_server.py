"""A throw-away ``redis-server`` on loopback, for testing code that uses
:class:`~tim_async.limiter_redis.RedisLimiter` (the SDK's own tests and benchmarks use it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RedisServer", "RedisServerNotFound", "redis_server"]


class RedisServerNotFound(FileNotFoundError):
    """No ``redis-server`` binary on the PATH (Debian/Ubuntu: ``apt-get install redis-server``)."""


class RedisServer:
    """A running throw-away server: ``url`` to connect to, ``stop()`` to kill it early (to test
    Redis going away); stopped anyway when the :func:`redis_server` block ends."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self._proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(startup_timeout: float = 5.0) -> Iterator[RedisServer]:
    """Start ``redis-server`` on a free 127.0.0.1 port without persistence; yield it (its
    ``url`` is ``redis://127.0.0.1:PORT/0``); kill it on exit. Raises
    :class:`RedisServerNotFound` when the binary is missing and ``RuntimeError`` when it does
    not come up."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisServerNotFound("redis-server not installed: apt-get install redis-server")
    for _ in range(5):  # a port taken between choosing and binding: try another
        port = _free_port()
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(proc, port)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_ping(port):
                try:
                    yield server
                finally:
                    server.stop()
                return
            time.sleep(0.01)
        server.stop()
    raise RuntimeError("could not start redis-server")
