"""The portal across process boundaries: clean exit, Ctrl-C, fork and a caller's running loop.

Each scenario runs in a fresh interpreter under ``python -X dev -W error``, where an unclosed
session, a destroyed pending task or a ResourceWarning would print to stderr (or fail the exit).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sync_fixtures
from sync_fixtures.server import Server

pytestmark = pytest.mark.timeout(60)

PRELUDE = """
import os, sys, time
from sync_fixtures._sync import LoyaltyLayer
"""
BAD = (
    "Unclosed",
    "Event loop is closed",
    "Task was destroyed",
    "ResourceWarning",
    "Exception ignored",
)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


def _env(server: Server) -> dict[str, str]:
    path = os.pathsep.join([str(sync_fixtures.TESTS), str(sync_fixtures.REPO)])
    return os.environ | {"FIXTURE_BASE_URL": server.url, "PYTHONPATH": path}


def _start(server: Server, body: str, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *flags, "-c", PRELUDE + textwrap.dedent(body)],
        env=_env(server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(server: Server, body: str, *flags: str) -> str:
    """Run ``body``; it must exit 0 with nothing on stderr. What it printed."""
    process = _start(server, body, *flags)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, err) == (0, ""), out
    return out


def _run_clean(server: Server, body: str) -> str:
    """Run ``body`` under -X dev -W error; it must exit 0, fast, with nothing on stderr."""
    started = time.monotonic()
    out = _run(server, body, "-X", "dev", "-W", "error")
    assert not any(text in out for text in BAD)
    assert time.monotonic() - started < 10
    return out


def test_exit_without_close(server: Server) -> None:
    out = _run_clean(
        server,
        """
        client = LoyaltyLayer.from_env()
        print(client.get("/echo/one"), client.cards.tokenize("c", "p"))
        """,
    )
    assert out == "one c:p:None:None\n"


def test_exit_after_with(server: Server) -> None:
    out = _run_clean(
        server,
        """
        with LoyaltyLayer.from_env() as client:
            print(client.get("/echo/one"))
        print(client._async._session)
        """,
    )
    assert out == "one\nNone\n"


def test_exit_with_an_abandoned_iterator_and_context(server: Server) -> None:
    out = _run_clean(
        server,
        """
        client = LoyaltyLayer.from_env()
        numbers = client.count(5)
        print(next(numbers))
        scope = client.scope("s")
        print(scope.__enter__())
        """,
    )
    assert out == "0\ns\n"


def test_exit_with_a_call_still_running_on_another_thread(server: Server) -> None:
    started = time.monotonic()
    _run_clean(
        server,
        """
        import threading
        client = LoyaltyLayer.from_env()
        threading.Thread(target=client.get, args=("/slow?s=30",), daemon=True).start()
        time.sleep(0.3)
        """,
    )
    assert time.monotonic() - started < 8


def test_sigint_cancels_the_request_and_the_next_call_works(server: Server) -> None:
    process = _start(
        server,
        """
        client = LoyaltyLayer.from_env()
        print(client.get("/echo/ready"), flush=True)
        started = time.monotonic()
        try:
            client.get("/slow?s=30")
        except KeyboardInterrupt:
            print("interrupted after", round(time.monotonic() - started), "s", flush=True)
        print(client.get("/echo/after"))
        """,
        "-X",
        "dev",
        "-W",
        "error",
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, err) == (0, "")
    assert out == "interrupted after 0 s\nafter\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_fork_child_gets_a_fresh_portal_and_the_parent_keeps_its_pool(server: Server) -> None:
    out = _run_clean(
        server,
        """
        client = LoyaltyLayer.from_env()
        before = client.connections()
        pid = os.fork()
        if pid == 0:
            print("child", client.get("/echo/child"), flush=True)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        started = time.monotonic()
        after = client.connections()
        print("parent", os.waitstatus_to_exitcode(status), after - before,
              time.monotonic() - started < 1.0)
        """,
    )
    # The child opened one new connection; the parent reused its pooled one.
    assert out == "child child\nparent 0 1 True\n"


def test_a_call_inside_a_running_loop_works_and_warns_once(server: Server) -> None:
    out = _run(
        server,
        """
        import asyncio, warnings
        from loyaltylayer._portal import SyncInAsyncWarning

        async def main():
            client = LoyaltyLayer.from_env()
            return [client.get("/echo/a"), client.get("/echo/b")]

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(asyncio.run(main()))
        print([w.category.__name__ for w in caught], caught[0].filename == "<string>")
        """,
    )
    assert out == "['a', 'b']\n['SyncInAsyncWarning'] True\n"


def test_shutdown_portal_closes_clients_and_a_later_call_starts_a_new_loop(server: Server) -> None:
    out = _run_clean(
        server,
        """
        import threading
        from loyaltylayer import _portal
        client = LoyaltyLayer.from_env()
        client.get("/echo/x")
        _portal.shutdown_portal()
        print(client._async._session, [t.name for t in threading.enumerate()])
        print(LoyaltyLayer.from_env().get("/echo/again"))
        """,
    )
    assert out == "None ['MainThread']\nagain\n"


def _sandbox_available() -> bool:
    try:
        from loyaltylayer.sandbox import SandboxThread  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _sandbox_available(), reason="loyaltylayer.sandbox is not built yet")
def test_the_real_client_exits_cleanly_against_the_sandbox(tmp_path: Path) -> None:
    script = """
    from loyaltylayer import LoyaltyLayer
    from loyaltylayer.sandbox import SandboxConfig, SandboxThread
    from loyaltylayer.sandbox._config import DEFAULT_CLIENTS

    client_id, secret = next(iter(DEFAULT_CLIENTS.items()))
    with SandboxThread(SandboxConfig(port=0, rate_key="off")) as sandbox:
        client = LoyaltyLayer(client_id, secret, sandbox.base_url)
        print(len(client.cards.encryption_keys().keys) >= 1)
        with LoyaltyLayer(client_id, secret, sandbox.base_url) as other:
            print(type(other.cards.encryption_keys()).__name__)
    """
    process = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(script)],
        cwd=sync_fixtures.REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (process.returncode, process.stderr) == (0, "")
    assert process.stdout == "True\nEncryptionKeySet\n"


def test_a_cold_start_race_makes_one_loop_thread(server: Server) -> None:
    out = _run_clean(
        server,
        """
        import threading
        client = LoyaltyLayer.from_env()
        barrier = threading.Barrier(64)
        results = []

        def first_call(i):
            barrier.wait()
            results.append(client.get(f"/echo/{i}"))

        threads = [threading.Thread(target=first_call, args=(i,)) for i in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        names = [t.name for t in threading.enumerate()]
        print(sorted(map(int, results)) == list(range(64)), names.count("loyaltylayer-io"))
        """,
    )
    assert out == "True 1\n"


def test_ctrl_c_in_the_main_thread_does_not_land_in_another_threads_call(server: Server) -> None:
    # The main thread runs the loop for its own call, so it also runs the other thread's work
    # (here CPU-bound, like parsing a reply). Ctrl-C must interrupt the main thread's call only.
    out = _run(
        server,
        """
        import asyncio, signal, threading
        from loyaltylayer import _portal

        parsing = threading.Event()
        seen = {}

        async def parse():
            parsing.set()
            time.sleep(0.3)
            return "parsed"

        def other():
            deadline = time.monotonic() + 2
            while getattr(_portal._runtime, "_driver", None) != threading.main_thread().ident:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)  # until the main thread runs the loop
            try:
                seen["other"] = _portal.call(parse)
            except BaseException as exc:
                seen["other"] = type(exc).__name__

        def ctrl_c():
            parsing.wait()
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

        threads = [threading.Thread(target=other), threading.Thread(target=ctrl_c)]
        for thread in threads:
            thread.start()
        try:
            _portal.call(asyncio.sleep, 5)
        except KeyboardInterrupt:
            seen["main"] = "KeyboardInterrupt"
        for thread in threads:
            thread.join()
        print(seen["main"], seen["other"])
        """,
    )
    assert out == "KeyboardInterrupt parsed\n"


def test_ctrl_c_while_the_main_thread_gives_the_loop_back_leaves_the_portal_working(
    server: Server,
) -> None:
    # A real SIGINT, raised at the moment the main thread enters `give_back` (as it may, between
    # any two bytecodes): KeyboardInterrupt is fine, a loop owned by nobody forever is not.
    out = _run(
        server,
        """
        import signal, threading
        from loyaltylayer import _portal

        async def noop():
            return "ok"

        def ctrl_c_in_give_back(frame, event, arg):
            if frame.f_code.co_name == "give_back" and not sent:
                sent.append(True)
                signal.raise_signal(signal.SIGINT)

        sent = []
        sys.settrace(ctrl_c_in_give_back)
        try:
            _portal.call(noop)
        except KeyboardInterrupt:
            print("interrupted")
        sys.settrace(None)
        after = []
        thread = threading.Thread(target=lambda: after.append(_portal.call(noop)), daemon=True)
        thread.start()
        thread.join(2)
        print(sent, after, flush=True)
        os._exit(0)  # a hung portal would also hang the exit
        """,
    )
    assert out == "interrupted\n[True] ['ok']\n"


def test_a_finalizer_that_calls_between_running_the_loop_and_giving_it_back(
    server: Server,
) -> None:
    # A finalizer can run on the thread that holds the loop after its run ended and before it
    # gives the loop back (here: an object kept in the finished task's context, freed with the
    # task). A sync call there must not wait for a loop that only this thread may run.
    out = _run(
        server,
        """
        import contextvars, threading
        client = LoyaltyLayer.from_env()
        kept = contextvars.ContextVar("kept")
        seen = []

        class CallsWhenCollected:
            def __del__(self):
                seen.append(client.get("/echo/from-finalizer"))

        async def keep():
            kept.set(CallsWhenCollected())

        client.get("/echo/warm-up")
        from loyaltylayer import _portal
        thread = threading.Thread(target=_portal.call, args=(keep,), daemon=True)
        thread.start()
        thread.join(3)
        print(thread.is_alive(), seen, flush=True)
        os._exit(0)
        """,
    )
    assert out == "False ['from-finalizer']\n"


def test_exit_is_bounded_when_the_exiting_thread_drains_the_loop(server: Server) -> None:
    # At exit the main thread runs the loop for the drain itself: an async generator whose
    # clean-up never ends must not hold the exit for longer than shutdown allows.
    started = time.monotonic()
    process = _start(
        server,
        """
        import asyncio
        from loyaltylayer import _portal
        _portal._CLOSE_TIMEOUT = 0.2
        kept = []

        async def leave_a_generator_that_never_finishes_closing():
            async def stubborn():
                try:
                    yield 1
                finally:
                    await asyncio.Event().wait()
            generator = stubborn()
            await anext(generator)
            kept.append(generator)

        _portal.call(leave_a_generator_that_never_finishes_closing)
        print("exiting", flush=True)
        """,
    )
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("the process did not exit within 10 s")
    assert (process.returncode, out) == (0, "exiting\n")
    assert time.monotonic() - started < 5
