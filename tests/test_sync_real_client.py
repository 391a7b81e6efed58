"""The generated LoyaltyLayer itself across a fork, against a sandbox in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from sandbox_process import SandboxProcess

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only"),
]


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    sandbox = SandboxProcess("--rate-key", "off")
    yield sandbox.url
    sandbox.close()


def test_after_fork_child_and_parent_both_keep_working(sandbox_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys, time
        import loyaltylayer as ll
        client = ll.LoyaltyLayer("sandbox-client", "sandbox-secret", {sandbox_url!r})
        holder = ll.Holder(first_name="A", last_name="B", email="a@example.com")
        created = client.passes.create(plan_id="esim-5gb", holder=holder)
        pid = os.fork()
        if pid == 0:
            print("child", client.passes.status(created.pass_id).pass_id == created.pass_id,
                  flush=True)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        started = time.monotonic()
        again = client.passes.status(created.pass_id)
        print("parent", os.waitstatus_to_exitcode(status), again.pass_id == created.pass_id,
              time.monotonic() - started < 1.0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "child True\nparent 0 True True\n"
