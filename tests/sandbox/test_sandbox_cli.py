"""The standalone server: ``python -m loyaltylayer.sandbox`` in a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from loyaltylayer.sandbox._cli import main


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loyaltylayer.sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.fullmatch(r"LoyaltyLayer sandbox listening on (http://127\.0\.0\.1:\d+)\n", line)
    assert match, line
    return proc, match.group(1)


def _token(url: str, client_id: str, secret: str) -> dict[str, object]:
    data = json.dumps({"client_id": client_id, "client_secret": secret}).encode()
    request = urllib.request.Request(
        url + "/auth/token", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return dict(json.loads(resp.read()))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serves_and_stops_cleanly(signum: int, tmp_path: Path) -> None:
    config = tmp_path / "sandbox.json"
    config.write_text(
        json.dumps(
            {
                "clients": {"acme": "acme-secret"},
                "plans": {"esim-1gb": {"type": "esim", "data_allowance_mb": 1024}},
            }
        )
    )
    proc, url = _start("--config", str(config), "--token-ttl", "60", "--seed", "1")
    try:
        assert _token(url, "sandbox-client", "sandbox-secret")["expires_in"] == 60
        assert _token(url, "acme", "acme-secret")["token_type"] == "Bearer"
    finally:
        proc.send_signal(signum)
        proc.wait(timeout=10)
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert "client_id=sandbox-client" in out
    assert "plan esim-1gb: esim" in out


def test_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["--config", str(bad)]) == 2
    assert main(["--encryption-key", str(tmp_path / "missing.pem")]) == 2
    assert main(["--rate-limit", "0"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--window-kind", "rolling"])


def test_keeps_serving_when_nobody_reads_its_output() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    read_end, write_end = os.pipe()
    os.close(read_end)  # a launcher that closed the pipe before the banner was even written
    proc = subprocess.Popen(
        [sys.executable, "-m", "loyaltylayer.sandbox", "--port", str(port)],
        stdout=write_end, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(write_end)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                token = _token(url, "sandbox-client", "sandbox-secret")
                break
            except OSError:
                assert time.monotonic() < deadline, "the sandbox never answered"
                time.sleep(0.05)
        assert token["token_type"] == "Bearer"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err == ""
