"""The pytest plugin users get with the SDK: fixtures that work, and an opt-out."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import loyaltylayer as ll

async def test_async_client(loyaltylayer_async_client, loyaltylayer_sandbox):
    created = await loyaltylayer_async_client.passes.create(
        plan_id="esim-5gb",
        holder=ll.Holder(first_name="A", last_name="B", email="a@example.com"),
    )
    assert [p["pass_id"] for p in loyaltylayer_sandbox.passes()] == [created.pass_id]

def test_sync_client(loyaltylayer_client, loyaltylayer_sandbox_thread):
    created = loyaltylayer_client.passes.create(
        plan_id="esim-5gb",
        holder=ll.Holder(first_name="A", last_name="B", email="a@example.com"),
    )
    assert loyaltylayer_client.passes.status(created.pass_id).pass_id == created.pass_id
    assert len(loyaltylayer_sandbox_thread.passes()) == 1
"""


def test_fixtures_give_fresh_sandboxes_and_ready_clients(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "asyncio", "--asyncio-mode=auto", "-q")
    result.assert_outcomes(passed=2)


def test_users_can_opt_out(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USER_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "asyncio", "--asyncio-mode=auto", "-p", "no:loyaltylayer", "-q"
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'loyaltylayer_async_client' not found*"])
