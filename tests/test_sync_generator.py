"""tools/gen_sync.py: fresh on the tree, fails on drift and orphans, deterministic, fails closed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sync_fixtures

gen_sync = sync_fixtures.load_generator()
FIXTURES = Path(sync_fixtures.__file__).parent


def _run(
    *arguments: str | Path, cwd: Path = sync_fixtures.REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*map(str, arguments)], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A scratch copy of the fixture package, with its committed generated files."""
    shutil.copytree(
        FIXTURES, tmp_path / "sync_fixtures", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def _append(path: Path, text: str) -> int:
    """Append ``text`` to ``path``; the line number of its first line."""
    source = path.read_text()
    path.write_text(source + text)
    return source.count("\n") + 1


def test_the_real_facade_is_fresh() -> None:
    result = _run(sys.executable, "tools/gen_sync.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_fixture_facade_is_fresh() -> None:
    result = _run(*sync_fixtures.regenerate(), "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_new_async_method_makes_check_fail_with_a_diff(tree: Path) -> None:
    _append(
        tree / "sync_fixtures/_async/_resources.py",
        "\n    async def renew(self, pass_id: str, *, days: int = 30) -> str:\n"
        '        """Renew a pass."""\n'
        "        return pass_id\n",
    )
    result = _run(*sync_fixtures.regenerate(tree), "--check")
    assert result.returncode == 1
    assert "--- a/sync_fixtures/_sync/_resources.py" in result.stdout
    assert "+    def renew(self, pass_id: str, *, days: int = 30) -> str:" in result.stdout
    assert (
        "+        return _portal.call(self._async.renew, pass_id=pass_id, days=days)"
        in result.stdout
    )
    assert "out of date; run: python tools/gen_sync.py --root" in result.stderr

    regenerate = _run(*sync_fixtures.regenerate(tree))
    assert regenerate.returncode == 0
    assert "wrote sync_fixtures/_sync/_resources.py" in regenerate.stdout
    check = _run(*sync_fixtures.regenerate(tree), "--check")
    assert check.returncode == 0, check.stdout


def test_an_orphaned_generated_file_makes_check_fail(tree: Path) -> None:
    manifest = sync_fixtures.manifest(gen_sync, tree)
    orphan = tree / "sync_fixtures/_sync/_old.py"
    orphan.write_text(f"{gen_sync.HEADER_MARK} from sync_fixtures/_async/_old.py; do not edit.\n")
    hand_written = tree / "sync_fixtures/_sync/_notes.py"
    hand_written.write_text('"""Not generated: left alone."""\n')

    assert gen_sync.run(manifest, check=True) == 1
    assert orphan.exists()
    assert gen_sync.run(manifest, check=False) == 0
    assert not orphan.exists()
    assert hand_written.exists()
    assert gen_sync.run(manifest, check=True) == 0


def test_a_truncated_file_is_stale(tree: Path) -> None:
    manifest = sync_fixtures.manifest(gen_sync, tree)
    target = tree / "sync_fixtures/_sync/_client.py"
    target.write_text(target.read_text() + "\n")
    assert gen_sync.run(manifest, check=True) == 1


def test_two_runs_render_identical_bytes(tree: Path) -> None:
    manifest = sync_fixtures.manifest(gen_sync, tree)
    first = gen_sync._Renderer(manifest).render()
    second = gen_sync._Renderer(manifest).render()
    assert first == second
    assert {path.name for path in first} == {"__init__.py", "_client.py", "_resources.py"}
    for path, text in first.items():
        assert path.read_text() == text


def _error(tree: Path) -> str:
    with pytest.raises(gen_sync.GenerationError) as caught:
        gen_sync._Renderer(sync_fixtures.manifest(gen_sync, tree)).render()
    return str(caught.value)


def test_an_unmapped_async_name_stops_with_file_and_line(tree: Path) -> None:
    line = _append(
        tree / "sync_fixtures/_async/_resources.py",
        "\n    async def widget(self) -> AsyncWidget:\n        raise NotImplementedError\n",
    )
    message = _error(tree)
    assert message == (
        f"sync_fixtures/_async/_resources.py:{line + 1}: cannot map AsyncWidget: "
        "add it to the manifest or TYPE_TWINS"
    )


def test_a_coroutine_function_parameter_stops_with_file_and_line(tree: Path) -> None:
    line = _append(
        tree / "sync_fixtures/_async/_resources.py",
        "\n    async def on_done(\n        self,\n"
        "        callback: Callable[[str], Awaitable[None]],\n    ) -> None:\n        pass\n",
    )
    assert _error(tree) == (
        f"sync_fixtures/_async/_resources.py:{line + 3}: cannot map Callable[[str], "
        "Awaitable[None]]: a sync caller cannot pass a coroutine function"
    )


def test_a_loop_bound_parameter_must_be_listed_as_dropped(tree: Path) -> None:
    line = _append(
        tree / "sync_fixtures/_async/_client.py",
        "\n    async def use(self, session: aiohttp.ClientSession) -> None:\n        pass\n",
    )
    message = _error(tree)
    assert message.startswith(f"sync_fixtures/_async/_client.py:{line + 1}: parameter 'session'")
    assert "list it in Manifest.dropped" in message


def test_an_unknown_special_method_stops(tree: Path) -> None:
    line = _append(
        tree / "sync_fixtures/_async/_client.py",
        "\n    def __getattr__(self, name: str) -> Any:\n        raise AttributeError(name)\n",
    )
    assert _error(tree) == (
        f"sync_fixtures/_async/_client.py:{line + 1}: "
        "AsyncLoyaltyLayer.__getattr__: no sync twin for this special method"
    )


def test_the_cli_reports_errors_with_exit_status_2(tree: Path) -> None:
    _append(tree / "sync_fixtures/_async/_client.py", "\n    x = 1\n")
    result = _run(*sync_fixtures.regenerate(tree))
    assert result.returncode == 2
    assert "gen_sync: sync_fixtures/_async/_client.py:" in result.stderr


def test_a_member_marked_skip_is_left_out(tree: Path) -> None:
    _append(
        tree / "sync_fixtures/_async/_resources.py",
        "\n    async def internal(self) -> AsyncWidget:  # sync-facade: skip\n"
        "        raise NotImplementedError\n",
    )
    files = gen_sync._Renderer(sync_fixtures.manifest(gen_sync, tree)).render()
    assert "internal" not in files[tree / "sync_fixtures/_sync/_resources.py"]


def test_the_output_is_lint_and_format_clean() -> None:
    paths = ["loyaltylayer/_sync", "tests/sync_fixtures/_sync"]
    check = _run(sys.executable, "-m", "ruff", "check", *paths)
    assert check.returncode == 0, check.stdout
    formatted = _run(sys.executable, "-m", "ruff", "format", "--check", *paths)
    assert formatted.returncode == 0, formatted.stdout


def test_a_public_class_attribute_becomes_a_read_only_property(tree: Path) -> None:
    _append(tree / "sync_fixtures/_async/_resources.py", "\n    page_size: int = 50\n")
    files = gen_sync._Renderer(sync_fixtures.manifest(gen_sync, tree)).render()
    assert (
        "    @property\n    def page_size(self) -> int:\n        return self._async.page_size\n"
        in files[tree / "sync_fixtures/_sync/_resources.py"]
    )
