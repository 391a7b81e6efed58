"""The recipes of docs/sync.md's "Hosts" section that the async client or a shared Redis budget
takes part in, each in its real host against a sandbox process: Django's sync and async views
under WSGI (asgiref runs each async view in a one-off event loop), FastAPI on uvicorn, Celery
prefork on one Redis budget, and scripts that call ``asyncio.run()`` again and again. The hosts
of the sync client alone are in ``test_sync_hosts.py``; the harness is ``hosts.py``."""

from __future__ import annotations

import concurrent.futures
import os
import signal
from pathlib import Path

import pytest
import redis
from hosts import (
    answered_by_workers,
    assert_clean,
    celery_worker,
    create_pass,
    free_port,
    gunicorn,
    host_env,
    journal,
    run_script,
    serve,
    unexpected,
    uvicorn,
    wait_for_log,
    write,
)
from sandbox_process import SandboxProcess

from loyaltylayer._ratelimit import origin_of

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX hosts"),
]

STATUS = "/v1/pass/status"
TOKEN = "/auth/token"

DJANGO_APP = """
import os

from django.conf import settings

settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="host-test-" + "k" * 40)

from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

import loyaltylayer as ll

PASS_ID = os.environ["PASS_ID"]
client = ll.LoyaltyLayer.from_env(rate_limit=None)
async_client = ll.AsyncLoyaltyLayer.from_env(rate_limit=None)


def answer(found):
    return HttpResponse(f"{os.getpid()} {found.pass_id}")


def sync_view(request):
    return answer(client.passes.status(PASS_ID))


async def async_view(request):
    try:
        return answer(await async_client.passes.status(PASS_ID))
    except ll.LoyaltyLayerError as error:  # any other error is a 500
        return HttpResponse(f"{os.getpid()} {type(error).__name__}")


async def async_view_with_the_sync_client(request):
    status = sync_to_async(client.passes.status, thread_sensitive=False)
    return answer(await status(PASS_ID))


urlpatterns = [
    path("", sync_view),
    path("async", async_view),
    path("async-sync-client", async_view_with_the_sync_client),
]
application = get_wsgi_application()
asgi_application = get_asgi_application()
"""


@pytest.fixture
def django_dir(tmp_path: Path) -> Path:
    write(tmp_path, "djapp.py", DJANGO_APP)
    return tmp_path


def test_django_views_under_wsgi_one_module_level_client_follows_asgirefs_loops(
    host_sandbox: tuple[str, str], django_dir: Path
) -> None:
    """gunicorn's sync workers run one request at a time; asgiref gives each async view a new
    event loop. One module-level AsyncLoyaltyLayer serves them all, with one token per worker."""
    url, pass_id = host_sandbox
    port = free_port()
    command = gunicorn(port, app="djapp:application")
    env = host_env(url, pass_id, django_dir)
    with serve(command, port=port, env=env, cwd=django_dir) as server:
        journal(url, clear=True)
        async_answers = server.get_many(300, path="async")
        requests = journal(url)
        sync_answers = server.get_many(20)
    answered_by_workers(async_answers + sync_answers, pass_id, server.process.pid)
    assert requests.count(STATUS) == 300
    assert 1 <= requests.count(TOKEN) <= 2  # the token carries over from loop to loop
    assert server.returncode == 0
    assert_clean(server.log)


def test_django_async_views_under_a_threaded_server(
    host_sandbox: tuple[str, str], django_dir: Path
) -> None:
    """With threads, one-off loops run at once: the recipe there is the sync client through
    ``sync_to_async``. The async client refuses a second loop at once with an SDK error."""
    url, pass_id = host_sandbox
    port = free_port()
    command = gunicorn(port, "--worker-class", "gthread", "--threads", "4", app="djapp:application")
    env = host_env(url, pass_id, django_dir)
    with serve(command, port=port, env=env, cwd=django_dir) as server:
        recipe = server.get_many(100, path="async-sync-client")
        refused_or_answered = server.get_many(100, path="async")
    answered_by_workers(recipe, pass_id, server.process.pid)
    assert {answer.split()[1] for answer in refused_or_answered} <= {pass_id, "EventLoopError"}
    assert server.returncode == 0
    assert_clean(server.log)


def test_django_views_under_asgi_share_uvicorns_loop(
    host_sandbox: tuple[str, str], django_dir: Path
) -> None:
    """Async views run on the server's one loop, and the server stops cleanly though nothing
    closes the module-level client (Django has no lifespan)."""
    url, pass_id = host_sandbox
    port = free_port()
    command = uvicorn(port, "djapp:asgi_application")
    env = host_env(url, pass_id, django_dir)
    with serve(command, port=port, env=env, cwd=django_dir) as server:
        answers = server.get_many(60, path="async") + server.get_many(20)
    assert answers == [f"{server.process.pid} {pass_id}"] * 80
    assert server.returncode in (0, -signal.SIGTERM)  # uvicorn raises the signal again once done
    assert "Finished server process" in server.log
    assert_clean(server.log)


FASTAPI_APP = """
import contextlib
import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

import loyaltylayer as ll

PASS_ID = os.environ["PASS_ID"]
# A budget of RATE_REQUESTS per RATE_PER seconds when set (the test of one budget for both).
rate = ll.RateLimit(
    requests=int(os.environ.get("RATE_REQUESTS", "100")),
    per=float(os.environ.get("RATE_PER", "60")),
)
async_client = ll.AsyncLoyaltyLayer.from_env(rate_limit=rate)  # `async def` endpoints
client = ll.LoyaltyLayer.from_env(rate_limit=rate)  # `def` endpoints, run in worker threads


@contextlib.asynccontextmanager
async def lifespan(app):
    yield
    await async_client.close()


app = FastAPI(lifespan=lifespan)


@app.get("/", response_class=PlainTextResponse)
async def status_async():
    return f"{os.getpid()} {(await async_client.passes.status(PASS_ID)).pass_id}"


@app.get("/sync", response_class=PlainTextResponse)
def status_sync():
    return f"{os.getpid()} {client.passes.status(PASS_ID).pass_id}"
"""


def test_fastapi_on_uvicorn_with_the_async_and_the_sync_client(
    host_sandbox: tuple[str, str], tmp_path: Path
) -> None:
    """Both clients work, and the server stops cleanly (the lifespan closes the async client,
    the portal the sync one)."""
    url, pass_id = host_sandbox
    write(tmp_path, "fastapp.py", FASTAPI_APP)
    port = free_port()
    command = uvicorn(port, "fastapp:app")
    with serve(command, port=port, env=host_env(url, pass_id, tmp_path), cwd=tmp_path) as server:
        answers = server.get_many(40) + server.get_many(40, path="sync")
    assert answers == [f"{server.process.pid} {pass_id}"] * 80
    assert server.returncode in (0, -signal.SIGTERM)  # uvicorn raises the signal again once done
    assert "Application shutdown complete." in server.log
    assert_clean(server.log)


def test_fastapi_async_and_sync_clients_share_one_budget(tmp_path: Path) -> None:
    """The async client on uvicorn's loop and the sync client on the portal's loop, called at
    once: the sandbox, limiting its IP to 10 requests in any second, never counts more and
    refuses nothing. Two budgets would each send 10 a second."""
    sandbox = SandboxProcess(
        "--rate-limit", "10", "--rate-window", "1", "--window-kind", "sliding", "--block", "5"
    )  # fmt: skip
    try:
        pass_id = create_pass(sandbox.url)
        # The pass was made through another budget: its requests leave the sandbox's window.
        sandbox.call("POST", "clock", {"advance": 2.0})
        write(tmp_path, "fastapp.py", FASTAPI_APP)
        port = free_port()
        command = uvicorn(port, "fastapp:app")
        env = host_env(sandbox.url, pass_id, tmp_path) | {"RATE_REQUESTS": "10", "RATE_PER": "1"}
        with serve(command, port=port, env=env, cwd=tmp_path) as server:
            paths = ["", "sync"] * 20
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda path: server.get_many(1, path=path)[0], paths))
        entries = sandbox.journal()
    finally:
        sandbox.close()
    assert answers == [f"{server.process.pid} {pass_id}"] * 40
    assert [entry["status"] for entry in entries].count(429) == 0
    assert [entry["path"] for entry in entries].count(STATUS) == 41  # and serve()'s first GET
    stamps = sorted(entry["time"] for entry in entries)
    assert max(sum(1 for t in stamps if start <= t < start + 1.0) for start in stamps) <= 10
    assert_clean(server.log)


CELERY_TASKS = """
import asyncio
import os

from celery import Celery

import loyaltylayer as ll

app = Celery("tasks", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
client = ll.LoyaltyLayer.from_env()  # with LOYALTYLAYER_REDIS_URL: one budget for all workers
async_client = ll.AsyncLoyaltyLayer.from_env()
client.passes.status(os.environ["PASS_ID"])  # at import, in the parent, through Redis


@app.task
def status(pass_id):
    return f"{os.getpid()} {client.passes.status(pass_id).pass_id}"


@app.task
def status_async(pass_id):
    async def status():
        return (await async_client.passes.status(pass_id)).pass_id

    return f"{os.getpid()} {asyncio.run(status())}"
"""


def test_celery_prefork_on_one_redis_budget(
    host_sandbox: tuple[str, str], tmp_path: Path, redis_url: str
) -> None:
    """Each child connects to Redis anew (the parent's connection is the parent's), and every
    request of every process takes its lease there; a task may run its own loop."""
    from celery import Celery

    url, pass_id = host_sandbox
    leases = f"{{loyaltylayer:{origin_of(url)}:default}}:leases"
    server = redis.Redis.from_url(redis_url)
    server.delete(leases)
    journal(url, clear=True)
    write(tmp_path, "tasks.py", CELERY_TASKS)
    env = host_env(url, pass_id, tmp_path) | {
        "REDIS_URL": redis_url,
        "LOYALTYLAYER_REDIS_URL": redis_url,
    }
    worker = celery_worker(tmp_path, env)
    try:
        wait_for_log(tmp_path / "worker.log", "ready.", worker, timeout=60)
        app = Celery("tasks", broker=redis_url, backend=redis_url)
        results = [
            app.send_task(name, args=[pass_id])
            for _ in range(8)
            for name in ("tasks.status", "tasks.status_async")
        ]
        answers = [result.get(timeout=60) for result in results]
        app.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    answered_by_workers(answers, pass_id, worker.pid)
    requests = journal(url)
    assert requests.count(STATUS) == 17  # one at import, 16 tasks
    assert server.zcard(leases) == len(requests)
    server.close()
    assert worker.returncode == 0
    assert_clean((tmp_path / "worker.log").read_text())


ASYNCIO_RUN_SCRIPT = """
import asyncio
import os

import loyaltylayer as ll

client = ll.AsyncLoyaltyLayer.from_env()


async def main():
    return (await client.passes.status(os.environ["PASS_ID"])).pass_id


for _ in range(3):
    print(asyncio.run(main()))
"""


@pytest.mark.parametrize("budget", ["in-process", "redis"])
def test_a_script_runs_asyncio_run_three_times_with_one_module_level_client(
    host_sandbox: tuple[str, str], request: pytest.FixtureRequest, budget: str
) -> None:
    url, pass_id = host_sandbox
    env = host_env(url, pass_id)
    if budget == "redis":
        env["LOYALTYLAYER_REDIS_URL"] = request.getfixturevalue("redis_url")
    journal(url, clear=True)
    result = run_script(ASYNCIO_RUN_SCRIPT, env, "-X", "dev", "-W", "error")
    assert (result.returncode, unexpected(result.stderr)) == (0, "")
    assert result.stdout == f"{pass_id}\n" * 3
    assert journal(url) == [TOKEN, STATUS, STATUS, STATUS]


def test_a_cron_script_with_the_sync_client(host_sandbox: tuple[str, str]) -> None:
    url, pass_id = host_sandbox
    script = """
    import os
    import loyaltylayer as ll

    with ll.LoyaltyLayer.from_env() as client:
        print(client.passes.status(os.environ["PASS_ID"]).pass_id)
    """
    result = run_script(script, host_env(url, pass_id), "-X", "dev", "-W", "error")
    assert (result.returncode, unexpected(result.stderr), result.stdout) == (0, "", f"{pass_id}\n")
