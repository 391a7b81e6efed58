"""The sandbox as its own process, for tests whose client process is killed, forked or exits."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from typing import Any


class SandboxProcess:
    """``python -m loyaltylayer.sandbox --port 0`` and its control plane."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loyaltylayer.sandbox", "--port", "0", "--seed", "3", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert first.startswith("LoyaltyLayer sandbox listening on http://"), first
        self.url = first.rsplit(" ", 1)[1].strip()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + "/__sandbox/" + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def passes(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "passes")["passes"])

    def journal(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "journal")["entries"])

    def close(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.communicate(timeout=10)
