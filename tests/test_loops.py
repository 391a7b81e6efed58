"""``LoopBound``: what belongs to one event loop follows its owner from loop to loop.

Real loops, started and stopped as hosts do (``asyncio.run()``, a loop in another thread); the
resource is a plain object that records where it was closed.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

import loyaltylayer as ll
from loyaltylayer._loops import LoopBound

_T = TypeVar("_T")


class Resource:
    """Something of one loop: which loop made it, and which loops closed it."""

    def __init__(self) -> None:
        self.made_on = asyncio.get_running_loop()
        self.closed_on: list[asyncio.AbstractEventLoop] = []

    async def close(self) -> None:
        self.closed_on.append(asyncio.get_running_loop())


def bound() -> tuple[LoopBound[Resource], list[Resource]]:
    made: list[Resource] = []

    def make() -> Resource:
        made.append(Resource())
        return made[-1]

    return LoopBound(make, Resource.close, what="this thing"), made


def test_one_loop_gets_one_resource() -> None:
    things, made = bound()

    async def use() -> None:
        first = await things.get()
        assert await things.get() is first
        assert things.held is first

    asyncio.run(use())
    assert len(made) == 1


def test_each_asyncio_run_closes_its_own_as_its_loop_shuts_down() -> None:
    things, made = bound()

    async def use() -> Resource:
        return await things.get()

    resources = [asyncio.run(use()) for _ in range(3)]
    assert made == resources
    assert len({id(r) for r in resources}) == 3
    assert [r.closed_on == [r.made_on] for r in resources] == [True] * 3


@pytest.fixture
def other_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop running in another thread, as a threaded web server's request would have."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def on(loop: asyncio.AbstractEventLoop, fn: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``fn()`` on ``loop``, in its thread, and wait for its result."""
    return asyncio.run_coroutine_threadsafe(fn(), loop).result(5)


def test_a_second_loop_at_the_same_time_is_refused_with_an_sdk_error(
    other_loop: asyncio.AbstractEventLoop,
) -> None:
    things, made = bound()
    held = on(other_loop, things.get)

    async def use() -> Resource:
        return await things.get()

    with pytest.raises(ll.EventLoopError) as info:
        asyncio.run(use())
    assert isinstance(info.value, ll.LoyaltyLayerError)
    assert str(info.value).startswith(
        "this thing is in use by an event loop running in another thread"
    )
    assert things.held is held  # nothing was taken from the loop using it
    assert made == [held]


def test_closing_from_another_loop_closes_it_on_its_own_loop(
    other_loop: asyncio.AbstractEventLoop,
) -> None:
    things, _ = bound()
    held = on(other_loop, things.get)
    asyncio.run(things.aclose())
    on(other_loop, lambda: asyncio.sleep(0))  # the close, scheduled there, has run
    assert held.closed_on == [other_loop]
    assert things.held is None


def test_closing_on_its_loop_closes_it_once_and_a_later_use_makes_a_new_one() -> None:
    things, made = bound()

    async def use_and_close() -> Resource:
        held = await things.get()
        await things.aclose()
        await things.aclose()
        assert held.closed_on == [asyncio.get_running_loop()]
        assert await things.get() is not held
        return held

    asyncio.run(use_and_close())
    assert len(made) == 2
    assert [r.closed_on == [r.made_on] for r in made] == [True, True]


def test_a_forked_child_leaves_the_parents_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    things, made = bound()

    async def fork_then_use() -> Resource:
        parents = await things.get()
        parent = os.getpid()
        monkeypatch.setattr(os, "getpid", lambda: parent + 1)
        ours = await things.get()
        assert ours is not parents
        return parents

    # The "child" goes on running its copy of the parent's loop, and shuts it down.
    parents = asyncio.run(fork_then_use())
    monkeypatch.undo()
    assert parents.closed_on == []
    assert [r.closed_on == [r.made_on] for r in made[1:]] == [True]


def test_a_ready_made_first_one_serves_the_first_loop_only() -> None:
    def refuse() -> Resource:
        raise ll.EventLoopError("made elsewhere")

    async def use(things: LoopBound[Resource]) -> Resource:
        return await things.get()

    async def given() -> LoopBound[Resource]:
        return LoopBound(refuse, Resource.close, what="it", first=Resource())

    async def use_close_use(things: LoopBound[Resource]) -> tuple[Resource, object]:
        first = await things.get()
        await things.aclose()
        assert await things.get() is first  # the loop it serves may use it again
        return first, asyncio.get_running_loop()  # which closes it again as it shuts down

    things = asyncio.run(given())
    first, loop = asyncio.run(use_close_use(things))
    with pytest.raises(ll.EventLoopError, match="made elsewhere"):
        asyncio.run(use(things))
    assert first.closed_on == [loop, loop]
