"""The portal across process boundaries: clean exit, Ctrl-C, fork, a caller's running loop.

Each scenario runs the real client in a fresh interpreter under ``python -X dev -W error``, where
an unclosed session, a destroyed pending task or a ResourceWarning would print to stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from hosts import BAD_OUTPUT, FORK_WARNING, create_pass, host_env, run_script, unexpected
from sandbox_process import SandboxProcess
from waiting import wait_for

pytestmark = pytest.mark.timeout(60)

PRELUDE = """
import os, sys, threading, time
import loyaltylayer as ll
from loyaltylayer import _portal
PASS_ID = os.environ["PASS_ID"]
def new_client():
    return ll.LoyaltyLayer.from_env(rate_limit=None)
"""
CLEAN = ("-X", "dev", "-W", "error", "-W", FORK_WARNING)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    process = SandboxProcess("--rate-key", "off")
    process.pass_id = create_pass(process.url)  # type: ignore[attr-defined]
    yield process
    process.close()


@pytest.fixture
def slow_status(sandbox: SandboxProcess) -> Iterator[None]:
    """The next ``passes.status`` takes 30 s to answer."""
    fault = {"route": "/v1/pass/status", "kind": "latency", "latency": 30, "times": 1}
    sandbox.call("POST", "faults", fault)
    yield
    sandbox.call("DELETE", "faults")


def _env(sandbox: SandboxProcess) -> dict[str, str]:
    return host_env(sandbox.url, sandbox.pass_id)  # type: ignore[attr-defined]


def _run(sandbox: SandboxProcess, body: str, *flags: str) -> str:
    """Run ``body``; it must exit 0 with nothing on stderr. What it printed."""
    result = run_script(PRELUDE + textwrap.dedent(body), _env(sandbox), *flags)
    assert (result.returncode, unexpected(result.stderr)) == (0, ""), result.stdout
    assert not any(text in result.stdout for text in BAD_OUTPUT)
    return result.stdout


def test_exit_without_close(sandbox: SandboxProcess) -> None:
    out = _run(sandbox, "print(new_client().passes.status(PASS_ID).pass_id == PASS_ID)", *CLEAN)
    assert out == "True\n"


def test_the_with_block_returns_the_client_and_closes_it(sandbox: SandboxProcess) -> None:
    out = _run(
        sandbox,
        """
        client = new_client()
        with client as entered:
            print(entered is client, entered.passes.status(PASS_ID).pass_id == PASS_ID)
        try:
            client.passes.status(PASS_ID)
        except ll.ClientClosedError as error:
            print(error)
        """,
        *CLEAN,
    )
    assert out == "True True\nthis client is closed\n"


def test_exit_with_an_abandoned_iterator(sandbox: SandboxProcess) -> None:
    out = _run(
        sandbox,
        """
        async def numbers():
            for i in range(100):
                yield i
        iterator = _portal.iterate(None, numbers)
        print(next(iterator), new_client().passes.status(PASS_ID).pass_id == PASS_ID)
        """,
        *CLEAN,
    )
    assert out == "0 True\n"


def test_exit_after_user_code_raised_system_exit_on_the_loop_thread(
    sandbox: SandboxProcess,
) -> None:
    out = _run(
        sandbox,
        """
        client = new_client()
        def records():
            yield {"reference": "R1"}
            sys.exit("bad input file")  # the program decides to stop, from its records
        try:
            list(client.enroll(records(), plan_id="pp-gold"))
        except SystemExit as stop:
            print("stopped:", stop)
        print(client.passes.status(PASS_ID).pass_id == PASS_ID)
        """,
        *CLEAN,
    )
    assert out == "stopped: bad input file\nTrue\n"


def test_exit_after_a_client_was_dropped_while_the_portal_was_stopped(
    sandbox: SandboxProcess,
) -> None:
    out = _run(
        sandbox,
        """
        import gc
        client = new_client()
        client.cards.encryption_keys()  # a check at import, under gunicorn --preload
        ll.shutdown_portal()  # before forking, as docs/sync.md says
        del client
        gc.collect()
        print("dropped")
        """,
        *CLEAN,
    )
    assert out == "dropped\n"


def test_exit_while_a_records_source_never_returns(sandbox: SandboxProcess) -> None:
    out = _run(
        sandbox,
        """
        import queue
        feed = queue.Queue()  # a producer that went away: the source never yields again
        client = new_client()
        job = threading.Thread(
            target=lambda: list(client.enroll(iter(feed.get, None), plan_id="pp-gold")),
            daemon=True,
        )
        job.start()
        time.sleep(0.3)
        print(client.passes.status(PASS_ID).pass_id == PASS_ID)
        """,
        *CLEAN,
    )
    assert out == "True\n"


def test_exit_with_a_call_still_running_on_another_thread(
    sandbox: SandboxProcess, slow_status: None
) -> None:
    _run(
        sandbox,
        """
        client = new_client()
        client.cards.encryption_keys()
        threading.Thread(target=client.passes.status, args=(PASS_ID,), daemon=True).start()
        time.sleep(0.3)
        """,
        *CLEAN,
    )


def test_sigint_cancels_the_request_and_the_next_call_works(
    sandbox: SandboxProcess, slow_status: None
) -> None:
    process = subprocess.Popen(
        [sys.executable, *CLEAN, "-c", PRELUDE + textwrap.dedent(
            """
            client = new_client()
            print(len(client.cards.encryption_keys().keys) > 0, flush=True)
            started = time.monotonic()
            try:
                client.passes.status(PASS_ID)
            except KeyboardInterrupt:
                print("interrupted", time.monotonic() - started < 10, flush=True)
            print(client.passes.status(PASS_ID).pass_id == PASS_ID)
            """
        )],
        env=_env(sandbox),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline() == "True\n"
    # Once the slow request has reached the sandbox (and used up its fault).
    wait_for(lambda: [fault["fired"] for fault in sandbox.call("GET", "faults")["faults"]] == [1])
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, unexpected(err), out) == (0, "", "interrupted True\nTrue\n")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
@pytest.mark.parametrize("shutdown_first", [False, True], ids=["thread-running", "shut-down"])
def test_fork_child_and_parent_both_keep_working(
    sandbox: SandboxProcess, shutdown_first: bool
) -> None:
    out = _run(
        sandbox,
        f"""
        client = new_client()
        client.passes.status(PASS_ID)
        session = client._async._transport._sessions.held
        if {shutdown_first}:
            ll.shutdown_portal()
        for call_in_child in (True, False):  # a child that never calls must not harm us either
            pid = os.fork()
            if pid == 0:
                if call_in_child:
                    print("child", client.passes.status(PASS_ID).pass_id == PASS_ID, flush=True)
                sys.exit(0)
            _, status = os.waitpid(pid, 0)
            print("parent", os.waitstatus_to_exitcode(status),
                  client.passes.status(PASS_ID).pass_id == PASS_ID,
                  client._async._transport._sessions.held is session, flush=True)
        """,
        *CLEAN,
    )
    assert out == "child True\nparent 0 True True\nparent 0 True True\n"


def test_a_call_inside_a_running_loop_works_and_warns_once(sandbox: SandboxProcess) -> None:
    out = _run(
        sandbox,
        """
        import asyncio, warnings

        async def main():
            client = new_client()
            return [client.passes.status(PASS_ID).pass_id == PASS_ID for _ in range(2)]

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(asyncio.run(main()))
        print([w.category.__name__ for w in caught], caught[0].filename == "<string>")
        """,
    )
    assert out == "[True, True]\n['SyncInAsyncWarning'] True\n"


def test_a_cold_start_race_makes_one_loop_thread(sandbox: SandboxProcess) -> None:
    out = _run(
        sandbox,
        """
        client = new_client()
        barrier = threading.Barrier(32)
        results = []

        def first_call():
            barrier.wait()
            results.append(client.passes.status(PASS_ID).pass_id)

        threads = [threading.Thread(target=first_call) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        names = [t.name for t in threading.enumerate()]
        print(results == [PASS_ID] * 32, names.count("loyaltylayer-io"))
        """,
        *CLEAN,
    )
    assert out == "True 1\n"


def test_exit_is_bounded_when_a_generator_never_finishes_closing(sandbox: SandboxProcess) -> None:
    out = _run(
        sandbox,
        """
        import asyncio
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
    assert out == "exiting\n"


def test_nothing_is_started_or_registered_at_import() -> None:
    result = run_script(
        """
        import threading
        import loyaltylayer as ll
        from loyaltylayer import _portal
        ll.LoyaltyLayer("sandbox-client", "sandbox-secret", "http://127.0.0.1:9")
        print(_portal._hooked, _portal._portal, threading.active_count())
        """,
        dict(os.environ),
        *CLEAN,
    )
    assert (result.returncode, unexpected(result.stderr), result.stdout) == (
        0,
        "",
        "False None 1\n",
    )
