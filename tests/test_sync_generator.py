"""tools/gen_sync.py: fresh on the tree, fails on drift and orphans, deterministic, fails closed.

Each test runs the generator on a scratch copy of ``loyaltylayer/_async`` and ``_sync``.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_sync", REPO / "tools" / "gen_sync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_sync", module)
    spec.loader.exec_module(module)
    return module


gen_sync = _load_generator()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A scratch copy of the async package and its committed facade."""
    for package in ("_async", "_sync"):
        shutil.copytree(
            REPO / "loyaltylayer" / package,
            tmp_path / "loyaltylayer" / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return tmp_path


def _append(tree: Path, module: str, text: str) -> int:
    """Append ``text`` to an async module of ``tree``; the line number of its first line."""
    path = tree / "loyaltylayer" / "_async" / f"{module}.py"
    source = path.read_text()
    path.write_text(source + text)
    return source.count("\n") + 1


def _error(tree: Path) -> str:
    with pytest.raises(gen_sync.GenerationError) as caught:
        gen_sync.render(tree)
    return str(caught.value)


def test_the_real_facade_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "tools/gen_sync.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_new_async_method_makes_check_fail_with_a_diff(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(
        tree,
        "_resources",
        "\n    async def renew(self, pass_id: str, *, days: int = 30) -> Pass:\n"
        '        """Renew a pass."""\n'
        "        raise NotImplementedError\n",
    )
    assert gen_sync.run(tree, check=True) == 1
    out, err = capsys.readouterr()
    assert "--- a/loyaltylayer/_sync/_resources.py" in out
    assert "+    def renew(self, pass_id: str, *, days: int = 30) -> Pass:" in out
    assert "+        return _portal.call(self._async.renew, pass_id=pass_id, days=days)" in out
    assert err == "\nThe sync facade is out of date; run: python tools/gen_sync.py\n"

    assert gen_sync.run(tree, check=False) == 0
    assert capsys.readouterr().out == "wrote loyaltylayer/_sync/_resources.py\n"
    assert gen_sync.run(tree, check=True) == 0


def test_an_orphaned_generated_file_makes_check_fail(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orphan = tree / "loyaltylayer/_sync/_old.py"
    orphan.write_text(f"{gen_sync.HEADER_MARK} from loyaltylayer/_async/_old.py; do not edit.\n")
    hand_written = tree / "loyaltylayer/_sync/_notes.py"
    hand_written.write_text('"""Not generated: left alone."""\n')

    assert gen_sync.run(tree, check=True) == 1
    assert "orphan: loyaltylayer/_sync/_old.py was generated but has no source" in (
        capsys.readouterr().out
    )
    assert orphan.exists()
    assert gen_sync.run(tree, check=False) == 0
    assert not orphan.exists()
    assert hand_written.exists()
    assert gen_sync.run(tree, check=True) == 0


def test_a_trailing_line_makes_a_file_stale(tree: Path) -> None:
    target = tree / "loyaltylayer/_sync/_client.py"
    target.write_text(target.read_text() + "\n")
    assert gen_sync.run(tree, check=True) == 1


def test_two_renders_give_the_committed_bytes(tree: Path) -> None:
    first, second = gen_sync.render(tree), gen_sync.render(tree)
    assert first == second
    assert {path.name for path in first} == {"__init__.py", "_client.py", "_resources.py"}
    for path, text in first.items():
        assert path.read_text() == text


def test_imports_are_the_async_modules_own_renamed() -> None:
    client = (REPO / "loyaltylayer/_sync/_client.py").read_text()
    # was AsyncCards, AsyncCardsWithRawResponse...
    assert (
        "from ._resources import Cards, CardsWithRawResponse, Passes, PassesWithRawResponse\n"
        in (client)
    )
    assert "from collections.abc import Iterable, Iterator, Mapping\n" in client
    assert (
        "from .._async._client import DEFAULT_RATE_LIMIT, AsyncLoyaltyLayer, "
        "AsyncLoyaltyLayerWithRawResponse\n"
    ) in client
    assert "aiohttp" not in client.replace("an aiohttp", "")  # `session`, `trace_configs` dropped
    assert "run_enrollment" not in client  # used by the async body only


def test_an_unmapped_async_name_stops_with_file_and_line(tree: Path) -> None:
    line = _append(
        tree,
        "_resources",
        "\n    async def widget(self) -> AsyncWidget:\n        raise NotImplementedError\n",
    )
    assert _error(tree) == (
        f"loyaltylayer/_async/_resources.py:{line + 1}: cannot map AsyncWidget: "
        "add it to CLASSES or TYPE_TWINS"
    )


def test_a_coroutine_function_parameter_stops_with_file_and_line(tree: Path) -> None:
    line = _append(
        tree,
        "_resources",
        "\n    async def on_done(\n        self,\n"
        "        callback: Callable[[str], Awaitable[None]],\n    ) -> None:\n        pass\n",
    )
    assert _error(tree) == (
        f"loyaltylayer/_async/_resources.py:{line + 3}: cannot map Awaitable: "
        "a sync caller has no awaitables"
    )


def test_a_loop_bound_parameter_must_be_listed_as_dropped(tree: Path) -> None:
    line = _append(
        tree,
        "_client",
        "\n    async def use(self, session: aiohttp.ClientSession) -> None:\n        pass\n",
    )
    assert _error(tree) == (
        f"loyaltylayer/_async/_client.py:{line + 1}: parameter 'session' is loop-bound: "
        "list it in DROPPED"
    )


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (
            "def __getattr__(self, name: str) -> Any:\n        raise AttributeError(name)",
            "AsyncLoyaltyLayer.__getattr__: no sync twin for this special method",
        ),
        (
            "@staticmethod\n    def helper() -> int:\n        return 1",
            "AsyncLoyaltyLayer.helper: cannot mirror decorators ['staticmethod']",
        ),
        ("limit: int = 3", "AsyncLoyaltyLayer: cannot mirror this class-level statement"),
        (
            "async def status(self, pass_id: str, /) -> str:\n        return pass_id",
            "status: positional-only and *args are not mirrored",
        ),
    ],
    ids=["special-method", "staticmethod", "attribute", "positional-only"],
)
def test_what_the_classes_do_not_use_is_refused(tree: Path, member: str, message: str) -> None:
    line = _append(tree, "_client", f"\n    {member}\n")
    first = line + 1 + member.startswith("@")  # a function's line is its `def`'s
    assert _error(tree).startswith(f"loyaltylayer/_async/_client.py:{first}:")
    assert _error(tree).endswith(message)


def test_accessors_returning_mirrored_classes_are_wrapped(tree: Path) -> None:
    """What ``with_options`` and ``with_raw_response`` (issue 18) will need: a sync method
    returning ``Self`` and a property returning a mirrored class, wrapped without tracking."""
    _append(
        tree,
        "_client",
        "\n    def with_options(self, *, timeout: float | None = None) -> Self:\n"
        '        """A client sharing this one\'s session."""\n'
        "        return self\n"
        "\n    @property\n    def raw(self) -> AsyncPasses:\n"
        '        """Passes, raw."""\n'
        "        return self._passes\n",
    )
    client = gen_sync.render(tree)[tree / "loyaltylayer/_sync/_client.py"]
    assert (
        "    def with_options(self, *, timeout: float | None = None) -> Self:\n"
        '        """A client sharing this one\'s session."""\n'
        "        return type(self)._wrap(self._async.with_options(timeout=timeout), self)\n"
    ) in client
    assert "        return Passes._wrap(self._async.raw, self)\n" in client
    assert "        if owner is None:\n            _portal.track(facade, inner)\n" in client


def test_the_output_is_lint_and_format_clean() -> None:
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "loyaltylayer/_sync"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout
