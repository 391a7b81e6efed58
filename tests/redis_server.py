"""A throwaway ``redis-server`` on loopback, for tests that need the real thing.

fakeredis runs the same Lua, but not Redis's clock, its script-time freezing or its key expiry,
which is exactly what the shared limiter relies on.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

__all__ = [
    "connections",
    "connections_once_closed",
    "free_port",
    "redis_server",
    "redis_url_or_skip",
]

_START_TIMEOUT = 5.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(binary: str) -> Iterator[str]:
    """Run ``binary`` on a free loopback port without persistence; yield its ``redis://`` URL.

    A port can be taken between choosing and binding it, so a server that dies at start is
    retried on another port.
    """
    with tempfile.TemporaryDirectory(prefix="redis-test-") as workdir:
        for _attempt in range(3):
            port = free_port()
            # fmt: off
            args = [
                binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                "--appendonly", "no", "--dir", workdir, "--daemonize", "no",
            ]
            # fmt: on
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + _START_TIMEOUT
                while proc.poll() is None and time.monotonic() < deadline:
                    if _answers_ping(port):
                        yield f"redis://127.0.0.1:{port}/0"
                        return
                    time.sleep(0.02)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        raise RuntimeError(f"{binary} did not answer PING on 127.0.0.1 after 3 attempts")


def redis_url_or_skip() -> Iterator[str]:
    """Body of a session fixture: a running server's URL, or a loud skip if there is none."""
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/sbin")
    if binary is None:
        pytest.skip(
            "redis-server not installed: the Redis limiter tests need a real server "
            "(apt-get install redis-server)"
        )
    with redis_server(binary) as url:
        yield url


def connections(server: redis.Redis, name: str) -> int:
    """Connections open to ``server`` with this ``client_name`` (a test names its own, so other
    tests' connections to the same server, some still closing, are not counted)."""
    return sum(1 for client in server.client_list() if client["name"] == name)


def connections_once_closed(server: redis.Redis, name: str) -> int:
    """The count once the server has seen those connections close: it notices on its own loop, a
    moment after the client closed them. A connection left open still counts after 5 s."""
    deadline = time.monotonic() + 5.0
    while (count := connections(server, name)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return count
