"""The control plane refuses what only a web page on the same machine would send it (a foreign
``Host`` through DNS rebinding, a foreign ``Origin``, a form or text body), and the banner never
prints a secret from ``--config``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from sandbox_api import Api
from test_sandbox_cli import _start


async def _control(api: Api, method: str, path: str, **options: Any) -> tuple[int, Any]:
    async with api.session.request(method, f"{api.base}/__sandbox/{path}", **options) as reply:
        return reply.status, await reply.json()


async def test_scripts_and_tests_are_still_served(api: Api) -> None:
    port = api.sandbox.port
    for options in (
        {},
        {"headers": {"Host": f"localhost:{port}"}},
        {"headers": {"Origin": f"http://127.0.0.1:{port}"}},
    ):
        status, _ = await _control(api, "POST", "clock", json={"advance": 1}, **options)
        assert status == 200, options
    assert (await _control(api, "POST", "reset"))[0] == 200  # no body at all


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"headers": {"Host": "rebound.attacker.example:{port}"}}, "its loopback address only"),
        ({"headers": {"Host": "127.0.0.1:1"}}, "its loopback address only"),
        ({"headers": {"Host": "127.0.0.1:{port}:x"}}, "its loopback address only"),
        ({"headers": {"Origin": "https://attacker.example"}}, "web pages of other origins"),
        ({"headers": {"Origin": "null"}}, "web pages of other origins"),
        ({"headers": {"Origin": "http://localhost:1"}}, "web pages of other origins"),
        ({"data": "reset", "headers": {"Content-Type": "text/plain"}}, "application/json"),
        ({"data": {"advance": "1"}}, "application/json"),  # a form
        ({"data": b"{}"}, "application/json"),  # no Content-Type at all
    ],
)
async def test_what_a_web_page_sends_is_refused(
    api: Api, options: dict[str, Any], reason: str
) -> None:
    port = api.sandbox.port
    headers = options.get("headers", {})
    options = options | {"headers": {k: v.format(port=port) for k, v in headers.items()}}
    for method, path in (("POST", "clock"), ("POST", "reset"), ("GET", "passes")):
        status, body = await _control(api, method, path, **options)
        assert status == 403
        assert body["error"] == "forbidden"
        assert reason in body["error_description"]
    assert api.sandbox.clock.offset == 0.0  # the clock was not advanced


def test_the_banner_shows_the_demo_secret_but_no_config_secret(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.json"
    config.write_text(json.dumps({"clients": {"bank-uat": "real-looking-secret-9f2c"}}))
    proc, _ = _start("--config", str(config))
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    assert proc.stdout is not None
    banner = proc.stdout.read()
    assert "client_id=sandbox-client  client_secret=sandbox-secret" in banner
    assert "client_id=bank-uat  client_secret=(from --config, not shown)" in banner
    assert "real-looking-secret-9f2c" not in banner
