"""The servers a benchmark talks to, each in its own process so the client's CPU is its own.

A sandbox in the benchmark's own process would share its event loop (and its core) with the
client being measured; as a subprocess it runs on the other core and the client's CPU time is
the SDK's alone.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "PLAN_ID", "SandboxProcess", "redis_server_url"]

CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
PLAN_ID = "pp-gold"

_BANNER = "LoyaltyLayer sandbox listening on "
_TESTS = Path(__file__).resolve().parent.parent / "tests"


@attrs.frozen(kw_only=True)
class SandboxProcess:
    """A ``python -m loyaltylayer.sandbox`` subprocess and its control plane."""

    base_url: str
    process: subprocess.Popen[str]

    @classmethod
    @contextlib.contextmanager
    def run(
        cls,
        *,
        rate_limit: int = 100,
        rate_window: float = 2.0,
        block: float = 2.0,
        window_kind: str = "fixed",
        rate_key: str = "ip",
        extra: Sequence[str] = (),
    ) -> Iterator[SandboxProcess]:
        # fmt: off
        args = [
            sys.executable, "-m", "loyaltylayer.sandbox", "--port", "0", "--seed", "1",
            "--rate-limit", str(rate_limit), "--rate-window", str(rate_window),
            "--block", str(block), "--window-kind", window_kind, "--rate-key", rate_key, *extra,
        ]
        # fmt: on
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        try:
            assert process.stdout is not None
            first = process.stdout.readline().strip()
            if not first.startswith(_BANNER):
                raise RuntimeError(f"the sandbox did not start: {first!r}")
            # Nothing else is read from stdout: close it so a chatty server can never block.
            process.stdout.close()
            yield cls(base_url=first.removeprefix(_BANNER), process=process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}/__sandbox/{path}",
            method=method,
            data=json.dumps(body or {}).encode() if method == "POST" else None,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)

    def journal(self) -> list[dict[str, Any]]:
        """Every request the server counted, oldest first (``time`` is its clock, epoch s)."""
        entries: list[dict[str, Any]] = self._control("GET", "journal")["entries"]
        return entries

    def clear_journal(self) -> None:
        self._control("DELETE", "journal")

    def advance_clock(self, seconds: float) -> None:
        """Move the server's clock on: tokens it issued expire, the client does not know."""
        self._control("POST", "clock", {"advance": seconds})

    def reset(self) -> None:
        """Fresh state for the next run: limiter, block, journal, passes."""
        self._control("POST", "reset")

    def passes(self) -> list[dict[str, Any]]:
        """Every pass the server holds, of every client."""
        passes: list[dict[str, Any]] = self._control("GET", "passes")["passes"]
        return passes

    def background(self) -> dict[str, Any]:
        """The other service's traffic on the IP: its rate, requests sent and refused."""
        state: dict[str, Any] = self._control("GET", "background")
        return state


@contextlib.contextmanager
def redis_server_url() -> Iterator[str | None]:
    """A throwaway redis-server on loopback (the tests' own helper), or None without one."""
    import shutil

    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/sbin")
    if binary is None:
        yield None
        return
    sys.path.insert(0, str(_TESTS))
    try:
        from redis_server import redis_server
    finally:
        sys.path.remove(str(_TESTS))
    with redis_server(binary) as url:
        yield url
