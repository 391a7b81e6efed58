"""Real hosts as real processes against a sandbox process: scripts, WSGI servers (gunicorn,
uWSGI), Celery workers, Jupyter notebooks. Start one, send it work, collect what it answered and
what it printed.

An app reads its client's settings from the environment (``host_env``) and the id of a pass to
read back from ``PASS_ID``. Output that means a broken exit is listed in ``BAD_OUTPUT``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from redis_server import free_port

import loyaltylayer as ll

REPO = Path(__file__).resolve().parent.parent
BAD_OUTPUT = (
    "Traceback",
    "Unclosed",
    "Event loop is closed",
    "Task was destroyed",
    "ResourceWarning",
    "Exception ignored",
    "never awaited",
)
# Python 3.12+ warns when a process with threads forks; pre-fork hosts do it by design.
FORK_WARNING = "ignore:This process:DeprecationWarning"


def unexpected(stderr: str) -> str:
    """``stderr`` without asyncio's debug-mode reports of a slow step (``-X dev`` turns them on;
    on a loaded machine, a first call that imports the card-encryption code takes 0.1 s)."""
    slow = re.compile(r"^Executing <.*> took [0-9.]+ seconds$")
    return "".join(line for line in stderr.splitlines(True) if not slow.match(line.rstrip()))


def host_env(sandbox_url: str, pass_id: str, app_dir: Path | None = None) -> dict[str, str]:
    """The environment of a host process: client settings, the pass, the app on the path."""
    path = [str(p) for p in (app_dir, REPO) if p is not None]
    return os.environ | {
        "LOYALTYLAYER_CLIENT_ID": "sandbox-client",
        "LOYALTYLAYER_CLIENT_SECRET": "sandbox-secret",
        "LOYALTYLAYER_BASE_URL": sandbox_url,
        "PASS_ID": pass_id,
        "PYTHONPATH": os.pathsep.join(path),
    }


def create_pass(sandbox_url: str) -> str:
    """A pass in the sandbox, for hosts to read back."""

    async def create() -> str:
        async with ll.AsyncLoyaltyLayer("sandbox-client", "sandbox-secret", sandbox_url) as client:
            holder = ll.Holder(first_name="Ada", last_name="Lovelace", email="ada@example.com")
            return (await client.passes.create(plan_id="esim-5gb", holder=holder)).pass_id

    return asyncio.run(create())


def journal(sandbox_url: str, *, clear: bool = False) -> list[str]:
    """The paths of the requests the sandbox has answered, oldest first; ``clear`` empties it."""
    request = urllib.request.Request(
        f"{sandbox_url}/__sandbox/journal", method="DELETE" if clear else "GET"
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return [entry["path"] for entry in json.loads(reply.read())["entries"]]


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def run_script(
    source: str, env: dict[str, str], *flags: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python [flags] -c source``, to its end."""
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Served:
    """A server process started by ``serve``: its URL, and (once stopped) its exit and log."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log
        self.returncode: int | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get_many(self, count: int, *, path: str = "", concurrency: int = 8) -> list[str]:
        """``count`` GETs of ``/<path>``, ``concurrency`` at a time: each body, or what went
        wrong."""

        def get(_: int) -> str:
            try:
                with urllib.request.urlopen(self.url + path, timeout=30) as reply:
                    return str(reply.read().decode())
            except (OSError, urllib.error.URLError) as error:
                return f"failed: {error!r}"

        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(get, range(count)))


@contextlib.contextmanager
def serve(
    command: Sequence[str],
    *,
    port: int,
    env: dict[str, str],
    cwd: Path,
    stop: signal.Signals = signal.SIGTERM,
    timeout: float = 30,
) -> Iterator[Served]:
    """Run a server ``command`` listening on ``port``; yield once ``/`` answers, stop it with
    ``stop`` afterwards (killing it if it does not exit within ``timeout``)."""
    log = cwd / f"server-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=sink)
    served = Served(process, f"http://127.0.0.1:{port}/", log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start:\n{served.log}")
            try:
                with urllib.request.urlopen(served.url, timeout=5):
                    break
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        yield served
    finally:
        process.send_signal(stop)
        try:
            served.returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def gunicorn(port: int, *options: str, app: str = "app:app") -> list[str]:
    """``gunicorn --preload`` with two workers on ``port``, for ``app``."""
    return [
        sys.executable, "-m", "gunicorn", "--preload", "--workers", "2", "--bind",
        f"127.0.0.1:{port}", "--graceful-timeout", "10", *options, app,
    ]  # fmt: skip


def uvicorn(port: int, app: str) -> list[str]:
    """``uvicorn`` in development mode (``-X dev``) on ``port``, for ``app``."""
    return [
        sys.executable, "-X", "dev", "-m", "uvicorn", app, "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip


def answered_by_workers(answers: list[str], pass_id: str, parent: int) -> None:
    """Every answer is ``<pid> <pass_id>``, from a worker, never from the parent ``parent``."""
    pids = {answer.split()[0] for answer in answers}
    assert [answer.split()[1:] for answer in answers] == [[pass_id]] * len(answers), answers
    assert str(parent) not in pids


def assert_clean(log: str) -> None:
    """``log`` has no line that means a broken request or exit (``BAD_OUTPUT``)."""
    assert not [line for line in log.splitlines() if any(bad in line for bad in BAD_OUTPUT)], log


def celery_worker(
    app_dir: Path, env: dict[str, str], *, concurrency: int = 2, timeout: float = 30
) -> subprocess.Popen[bytes]:
    """``celery -A tasks worker`` (prefork) for the ``tasks`` module in ``app_dir``, logging to
    ``app_dir/worker.log``; it is ready once the log says so (see ``wait_for_log``)."""
    command = [
        sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", "prefork",
        "--concurrency", str(concurrency), "--without-gossip", "--without-mingle",
        "--without-heartbeat", "--loglevel", "INFO",
    ]  # fmt: skip
    with (app_dir / "worker.log").open("wb") as sink:
        return subprocess.Popen(command, cwd=app_dir, env=env, stdout=sink, stderr=sink)


def wait_for_log(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"never saw {text!r}:\n{path.read_text(errors='replace')}")
        time.sleep(0.1)


def execute_notebook(
    cells: Sequence[str], directory: Path, env: dict[str, str], timeout: float = 120
) -> list[dict[str, Any]]:
    """Run a notebook of code ``cells`` with ``jupyter nbconvert --execute``; each cell's
    outputs."""
    notebook = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
             "source": textwrap.dedent(cell)}
            for cell in cells
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # fmt: skip
    path = directory / "host.ipynb"
    path.write_text(json.dumps(notebook))
    command = [
        sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
        "--output", "executed.ipynb", f"--ExecutePreprocessor.timeout={int(timeout)}", str(path),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nbconvert failed:\n{result.stderr}")
    executed = json.loads((directory / "executed.ipynb").read_text())
    return [cell["outputs"] for cell in executed["cells"]]


__all__ = [
    "BAD_OUTPUT",
    "FORK_WARNING",
    "Served",
    "answered_by_workers",
    "assert_clean",
    "celery_worker",
    "create_pass",
    "execute_notebook",
    "free_port",
    "gunicorn",
    "host_env",
    "journal",
    "run_script",
    "serve",
    "unexpected",
    "wait_for_log",
    "write",
]
