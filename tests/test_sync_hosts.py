"""The sync client inside the hosts our users run it in, each a real process against a sandbox
process: gunicorn and uWSGI (pre-fork, with a call at import), Celery prefork, multiprocessing,
Jupyter, and many threads. See ``hosts.py`` for the harness."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from hosts import (
    FORK_WARNING,
    answered_by_workers,
    assert_clean,
    celery_worker,
    execute_notebook,
    free_port,
    gunicorn,
    host_env,
    run_script,
    serve,
    unexpected,
    wait_for_log,
    write,
)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX hosts"),
]

WSGI_APP = """
import os

import loyaltylayer as ll

client = ll.LoyaltyLayer.from_env(rate_limit=None)
PASS_ID = os.environ["PASS_ID"]
client.passes.status(PASS_ID)  # at import: in a pre-fork server, in the parent
if os.environ.get("SHUTDOWN_AFTER_IMPORT"):  # docs/sync.md's uWSGI recipe
    ll.shutdown_portal()


def app(environ, start_response):
    body = f"{os.getpid()} {client.passes.status(PASS_ID).pass_id}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write(tmp_path, "app.py", WSGI_APP)
    return tmp_path


@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_gunicorn_preload(host_sandbox: tuple[str, str], app_dir: Path, worker: str) -> None:
    url, pass_id = host_sandbox
    port = free_port()
    command = gunicorn(port, "--worker-class", worker, "--threads", "4")
    with serve(command, port=port, env=host_env(url, pass_id, app_dir), cwd=app_dir) as server:
        answered_by_workers(server.get_many(40), pass_id, server.process.pid)
    assert server.returncode == 0
    assert_clean(server.log)


def test_gunicorn_preload_with_shutdown_portal_before_fork(
    host_sandbox: tuple[str, str], app_dir: Path
) -> None:
    """docs/sync.md's recipe: the workers inherit no thread, and the module-level client works."""
    url, pass_id = host_sandbox
    write(
        app_dir,
        "conf.py",
        """
        import loyaltylayer as ll

        def pre_fork(server, worker):
            ll.shutdown_portal()
        """,
    )
    port = free_port()
    command = gunicorn(port, "--config", "conf.py")
    with serve(command, port=port, env=host_env(url, pass_id, app_dir), cwd=app_dir) as server:
        answered_by_workers(server.get_many(20), pass_id, server.process.pid)
    assert server.returncode == 0
    assert_clean(server.log)


def test_uwsgi_threads_forked_without_at_fork_hooks(
    host_sandbox: tuple[str, str], app_dir: Path
) -> None:
    """uWSGI loads the app in its master and forks the workers itself, without Python's at-fork
    hooks: each worker must tell by its pid that the portal it inherited is not its own.

    The app stops the portal's thread after its call at import, as docs/sync.md says: uWSGI
    takes the GIL in a new worker before telling Python about the fork, so a worker forked while
    another thread of the master held the GIL hangs (unbit/uwsgi#1149, #1369)."""
    url, pass_id = host_sandbox
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "uwsgi"), "--http-socket", f"127.0.0.1:{port}",
        "--master", "--processes", "2", "--threads", "8", "--wsgi-file", "app.py",
        "--callable", "app", "--need-app", "--die-on-term", "--disable-logging",
        "--worker-reload-mercy", "10",
    ]  # fmt: skip
    env = host_env(url, pass_id, app_dir) | {"SHUTDOWN_AFTER_IMPORT": "1"}
    with serve(command, port=port, env=env, cwd=app_dir) as server:
        answered_by_workers(server.get_many(200, concurrency=16), pass_id, server.process.pid)
    assert server.returncode is not None
    assert server.returncode >= 0  # it stopped by itself, not killed
    assert_clean(server.log)


def test_celery_prefork(host_sandbox: tuple[str, str], tmp_path: Path, redis_url: str) -> None:
    from celery import Celery

    url, pass_id = host_sandbox
    write(
        tmp_path,
        "tasks.py",
        """
        import os

        from celery import Celery

        import loyaltylayer as ll

        app = Celery("tasks", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
        client = ll.LoyaltyLayer.from_env(rate_limit=None)
        client.passes.status(os.environ["PASS_ID"])  # at import, in the parent


        @app.task
        def status(pass_id):
            return f"{os.getpid()} {client.passes.status(pass_id).pass_id}"
        """,
    )
    env = host_env(url, pass_id, tmp_path) | {"REDIS_URL": redis_url}
    worker = celery_worker(tmp_path, env)
    try:
        wait_for_log(tmp_path / "worker.log", "ready.", worker, timeout=60)
        app = Celery("tasks", broker=redis_url, backend=redis_url)
        results = [app.send_task("tasks.status", args=[pass_id]) for _ in range(12)]
        answers = [result.get(timeout=60) for result in results]
        app.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    answered_by_workers(answers, pass_id, worker.pid)
    assert worker.returncode == 0
    assert_clean((tmp_path / "worker.log").read_text())


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing(host_sandbox: tuple[str, str], tmp_path: Path, method: str) -> None:
    url, pass_id = host_sandbox
    write(
        tmp_path,
        "work.py",
        """
        import os

        import loyaltylayer as ll

        client = ll.LoyaltyLayer.from_env(rate_limit=None)


        def status(_):
            return os.getpid(), client.passes.status(os.environ["PASS_ID"]).pass_id
        """,
    )
    result = run_script(
        f"""
        import multiprocessing, os
        import work

        work.status(0)  # the parent's portal thread runs when the pool forks
        with multiprocessing.get_context({method!r}).Pool(2) as pool:
            results = pool.map(work.status, range(8))
        print(os.getpid() not in {{pid for pid, _ in results}}, {{p for _, p in results}})
        print(work.status(0)[1])
        """,
        host_env(url, pass_id, tmp_path),
        "-X", "dev", "-W", "error", "-W", FORK_WARNING,
    )  # fmt: skip
    assert (result.returncode, unexpected(result.stderr)) == (0, "")
    assert result.stdout == f"True {{'{pass_id}'}}\n{pass_id}\n"


def test_jupyter_notebook(host_sandbox: tuple[str, str], tmp_path: Path) -> None:
    """A cell runs in the kernel's event loop: the sync client works there without a warning;
    the async client is awaited at top level."""
    url, pass_id = host_sandbox
    outputs = execute_notebook(
        [
            """
            import os
            import loyaltylayer as ll

            client = ll.LoyaltyLayer.from_env(rate_limit=None)
            print("sync", client.passes.status(os.environ["PASS_ID"]).pass_id)
            """,
            """
            async with ll.AsyncLoyaltyLayer.from_env(rate_limit=None) as aclient:
                found = await aclient.passes.status(os.environ["PASS_ID"])
            print("async", found.pass_id)
            """,
            """
            print("sync", client.passes.status(os.environ["PASS_ID"]).pass_id)
            client.close()
            """,
        ],
        tmp_path,
        host_env(url, pass_id),
    )
    assert [
        [(output["output_type"], output.get("name"), "".join(output["text"])) for output in cell]
        for cell in outputs
    ] == [[("stream", "stdout", f"{kind} {pass_id}\n")] for kind in ("sync", "async", "sync")]


def test_64_threads_50_calls_each(host_sandbox: tuple[str, str]) -> None:
    url, pass_id = host_sandbox
    result = run_script(
        """
        import os, threading
        import loyaltylayer as ll

        client = ll.LoyaltyLayer.from_env(rate_limit=None)
        results = []

        def work():
            for _ in range(50):
                results.append(client.passes.status(os.environ["PASS_ID"]).pass_id)

        threads = [threading.Thread(target=work) for _ in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        names = [thread.name for thread in threading.enumerate()]
        print(len(results), set(results), names.count("loyaltylayer-io"))
        """,
        host_env(url, pass_id),
        "-W",
        "error",
    )
    assert (result.returncode, unexpected(result.stderr)) == (0, "")
    assert result.stdout == f"3200 {{'{pass_id}'}} 1\n"
