"""Redirects are never followed, and no reply is read past ``max_response_bytes``.

The redirect tests put two real servers on two loopback addresses: the API host (the sandbox
behind a relay that answers one path with a redirect) on 127.0.0.1, and the host it points to
on 127.0.0.2, which records anything that reaches it. The reply tests use a server that
misbehaves on purpose; the memory test runs client and server in a fresh interpreter and
measures its peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from network_servers import serving
from sdk_env import CLIENT_ID, CLIENT_SECRET, card

import loyaltylayer as ll
from loyaltylayer.sandbox import Sandbox


@asynccontextmanager
async def redirecting_api(
    status: int, path: str, location: Callable[[str], str]
) -> AsyncIterator[tuple[Sandbox, str, list[str], list[str]]]:
    """The sandbox behind a relay that answers ``path`` with a ``status`` redirect to
    ``location(elsewhere_url)``; yields the sandbox, the relay's URL, the paths the relay
    answered and the requests that reached the other host."""
    reached: list[str] = []
    relayed: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(f"{request.method} {request.path_qs} {await request.text()}")
        return web.json_response({"access_token": "stolen", "expires_in": 3600})

    async with (
        Sandbox() as sandbox,
        serving(elsewhere, "127.0.0.2") as elsewhere_url,
        aiohttp.ClientSession() as upstream,
    ):

        async def relay(request: web.Request) -> web.Response:
            relayed.append(request.path)
            if request.path == path:
                return web.Response(status=status, headers={"Location": location(elsewhere_url)})
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with upstream.request(
                request.method,
                sandbox.base_url + request.path_qs,
                data=await request.read(),
                headers=headers,
            ) as reply:
                return web.Response(
                    status=reply.status,
                    body=await reply.read(),
                    content_type=reply.content_type,
                )

        async with serving(relay) as api_url:
            yield sandbox, api_url, relayed, reached


@pytest.mark.parametrize("status", [307, 308])
async def test_a_redirect_of_the_token_request_sends_the_secret_nowhere(status: int) -> None:
    async with (
        redirecting_api(
            status, "/auth/token", lambda url: f"{url}/collect?client_secret=x#top"
        ) as (_, api_url, relayed, reached),
        ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, api_url) as client,
    ):
        with pytest.raises(ll.UnexpectedResponseError) as excinfo:
            await client.passes.status("pss_1")
        assert client.attempts == 1
    error = excinfo.value
    assert (error.status, error.retryable, error.path) == (status, False, "/auth/token")
    assert f"{status} redirect to http://127.0.0.2:" in str(error)
    assert "collect" not in str(error)
    assert "client_secret" not in str(error)
    assert relayed == ["/auth/token"]
    assert reached == []


async def test_a_redirect_of_a_tokenize_sends_the_card_nowhere() -> None:
    async with redirecting_api(308, "/v1/card/tokenize", lambda url: f"{url}/v1/card/tokenize") as (
        sandbox,
        api_url,
        relayed,
        reached,
    ):
        async with ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, api_url) as client:
            with pytest.raises(ll.UnexpectedResponseError, match="308 redirect to http"):
                await client.cards.tokenize(card(), plan_id="pp-gold")
        journaled = [entry.path for entry in sandbox.journal()]
    assert relayed == ["/auth/token", "/v1/card/encryption-keys", "/v1/card/tokenize"]
    assert journaled == ["/auth/token", "/v1/card/encryption-keys"]
    assert reached == []


async def test_a_relative_redirect_names_the_api_origin_and_is_not_followed() -> None:
    async with (
        redirecting_api(302, "/v1/pass/status", lambda _: "/v1/pass/status?again=1") as (
            _,
            api_url,
            relayed,
            _reached,
        ),
        ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, api_url) as client,
    ):
        with pytest.raises(ll.UnexpectedResponseError) as excinfo:
            await client.passes.status("pss_1")
    assert str(excinfo.value).startswith(f"302 redirect to {api_url} refused")
    assert relayed == ["/auth/token", "/v1/pass/status"]


TOKEN = {"access_token": "tok", "expires_in": 3600}


def _padded_token(size: int) -> bytes:
    """A token reply of exactly ``size`` bytes."""
    body = json.dumps(TOKEN).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def test_a_reply_up_to_the_cap_is_read_and_one_byte_more_is_refused() -> None:
    async def api(request: web.Request) -> web.Response:
        return web.Response(body=_padded_token(4096), content_type="application/json")

    async with serving(api) as url:
        for limit, fits in ((4096, True), (4095, False)):
            client = ll.AsyncLoyaltyLayer(CLIENT_ID, CLIENT_SECRET, url, max_response_bytes=limit)
            async with client:
                if fits:
                    assert await client._transport._auth.token() == "tok"
                    continue
                with pytest.raises(ll.UnexpectedResponseError) as excinfo:
                    await client._transport._auth.token()
            assert "200 reply is larger than max_response_bytes (4095 bytes)" in str(excinfo.value)
            assert not excinfo.value.retryable


@pytest.mark.parametrize("form", ["declared", "chunked", "gzip"])
async def test_a_reply_past_the_cap_stops_the_read(form: str) -> None:
    big = json.dumps(TOKEN | {"padding": "x" * 1_000_000}).encode()

    async def api(request: web.Request) -> web.StreamResponse:
        if form == "gzip":
            compressor = zlib.compressobj(wbits=31)
            body = compressor.compress(big) + compressor.flush()
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            return web.Response(body=body, headers=headers)
        if form == "declared":
            return web.Response(body=big, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(big), 65536):
            await response.write(big[start : start + 65536])
        await response.write_eof()
        return response

    async with (
        serving(api) as url,
        ll.AsyncLoyaltyLayer(
            CLIENT_ID, CLIENT_SECRET, url, max_response_bytes=65536, max_retries=3
        ) as client,
    ):
        with pytest.raises(ll.UnexpectedResponseError, match="larger than max_response_bytes"):
            await client.passes.status("pss_1")
        assert client.attempts == 1


MEMORY_PROBE = textwrap.dedent(
    """
    import asyncio, json, zlib
    from aiohttp import web
    import loyaltylayer as ll

    MIB = 1 << 20

    def bomb():
        # 200 MiB of zeros, gzip-compressed a MiB at a time (about 200 KiB)
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(MIB)
        return b"".join([compressor.compress(zeros) for _ in range(200)] + [compressor.flush()])

    BOMB = bomb()

    async def api(request):
        if request.path == "/auth/token":
            return web.json_response({"access_token": "tok", "expires_in": 3600})
        if request.path == "/v1/pass/status":
            return web.Response(
                body=BOMB,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 200 * MIB
        await response.prepare(request)
        chunk = b" " * (64 * 1024)
        try:
            for _ in range(200 * MIB // len(chunk)):
                await response.write(chunk)
        except ConnectionError:
            pass
        return response

    def peak_mib():
        # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its parent's peak
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    async def main():
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", api)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        figures = {"bomb_kib": len(BOMB) // 1024}
        async with ll.AsyncLoyaltyLayer("id", "secret", url, max_retries=0) as client:
            await client._transport._auth.token()
            figures["baseline_mib"] = peak_mib()
            for name, call in (
                ("body_200mb", lambda: client.passes.cancel("pss_1")),
                ("gzip_bomb", lambda: client.passes.status("pss_1")),
            ):
                try:
                    await call()
                except ll.UnexpectedResponseError as error:
                    figures[name + "_error"] = str(error).split(" [")[0]
                figures[name + "_peak_mib"] = peak_mib()
        await runner.cleanup()
        print(json.dumps(figures))

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_stays_flat_for_a_200_mb_body_and_a_gzip_bomb() -> None:
    """Peak RSS of a fresh interpreter that serves both replies to itself and reads them."""
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    print(figures)  # the figures quoted in docs/network-security.md: pytest -s shows them
    cap = "200 reply is larger than max_response_bytes (8388608 bytes); reading stopped"
    assert figures["body_200mb_error"] == cap
    assert figures["gzip_bomb_error"] == cap
    assert figures["bomb_kib"] < 300
    # Reading either reply whole would add 200 MiB; the cap allows 8 MiB plus buffers.
    assert figures["body_200mb_peak_mib"] - figures["baseline_mib"] < 48
    assert figures["gzip_bomb_peak_mib"] - figures["baseline_mib"] < 48
