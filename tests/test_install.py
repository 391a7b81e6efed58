"""What a new user meets: the package as a wheel outside any checkout, and missing extras.

These run real interpreters: the wheel is built and unpacked into a directory of its own, and
a missing extra is simulated by making its import fail (``sys.modules[name] = None``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)


def python(
    code: str, *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built as a wheel and installed (without its dependencies) into a directory."""
    build = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(build), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=150,
    )
    (wheel,) = build.glob("loyaltylayer-*.whl")
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        assert "loyaltylayer/sandbox/demo_cardholders.csv" in archive.namelist()
        archive.extractall(target)
    return target


def from_wheel(target: Path, statement: str) -> str:
    return f"import sys; sys.path.insert(0, {str(target)!r}); {statement}"


def test_the_demo_runs_from_a_wheel_in_an_empty_directory(
    installed_wheel: Path, tmp_path: Path
) -> None:
    demo = from_wheel(
        installed_wheel,
        "import loyaltylayer; print(loyaltylayer.__file__, flush=True); "
        "sys.argv = ['loyaltylayer', 'demo']; from loyaltylayer.cli import main; main()",
    )
    first = python(demo, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith(str(installed_wheel))
    assert "3 rows are invalid on purpose" in first.stdout
    assert re.search(r"│ Created +│ 47 ", first.stdout)
    assert "the demo exits 0" in first.stdout
    assert "loyaltylayer enroll cardholders.csv --plan-id pp-gold --dry-run" in first.stdout
    assert sorted(p.name for p in (tmp_path / "loyaltylayer-demo").iterdir()) == [
        "errors.csv",
        "results.jsonl",
    ]

    again = python(demo, cwd=tmp_path)  # a new sandbox: nothing of the first run is "done"
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"│ Created +│ 47 ", again.stdout)
    assert re.search(r"│ Already done +│ 0 ", again.stdout)


def test_the_demo_file_can_be_saved_to_edit(installed_wheel: Path, tmp_path: Path) -> None:
    save = from_wheel(
        installed_wheel,
        "sys.argv = ['loyaltylayer', 'demo', '--save-input', 'mine.csv']; "
        "from loyaltylayer.cli import main; main()",
    )
    assert python(save, cwd=tmp_path).returncode == 0
    saved = (tmp_path / "mine.csv").read_text(encoding="utf-8")
    assert saved.splitlines()[0].startswith("card_number,card_expiry,name_on_card,cvv")
    assert len(saved.splitlines()) == 51

    refused = python(save, cwd=tmp_path)
    assert refused.returncode == 2
    assert "mine.csv exists" in refused.stderr
    assert (tmp_path / "mine.csv").read_text(encoding="utf-8") == saved


@pytest.mark.parametrize(
    ("source", "hint"),
    [("checkout", "pip install -e '.[cli]'"), ("wheel", "pip install 'loyaltylayer[cli]'")],
)
def test_the_cli_without_its_extra_says_how_to_install_it(
    source: str, hint: str, installed_wheel: Path, tmp_path: Path
) -> None:
    run = "sys.modules['click'] = None; from loyaltylayer.cli import main; main()"
    home = installed_wheel if source == "wheel" else ROOT
    code = f"import sys; sys.path.insert(0, {str(home)!r}); {run}"
    result = python(code, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.startswith("The loyaltylayer command line needs click and rich: ")
    assert hint in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "use",
    [
        "ll.RedisRateLimiter",
        "ll.AsyncLoyaltyLayer.from_env()",
        "__import__('loyaltylayer.contrib.redis')",
    ],
)
def test_redis_without_its_extra_is_a_configuration_error(use: str, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['redis'] = None; import loyaltylayer as ll\n"
        f"try:\n    {use}\nexcept ll.ConfigurationError as error:\n    print(error)"
    )
    env = {
        "LOYALTYLAYER_CLIENT_ID": "sandbox-client",
        "LOYALTYLAYER_CLIENT_SECRET": "sandbox-secret",
        "LOYALTYLAYER_BASE_URL": "http://127.0.0.1:9",
        "LOYALTYLAYER_REDIS_URL": "redis://127.0.0.1:9/0",
    }
    result = python(code, cwd=tmp_path, env=env)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "the Redis backends need the redis package: pip install 'loyaltylayer[redis]'\n"
    )


def test_the_cli_names_the_redis_extra_when_it_is_missing(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(
        "card_number,card_expiry,name_on_card,cvv,first_name,last_name,email\n"
        "4111111111111111,12/39,ADA LOVELACE,123,Ada,Lovelace,ada@example.com\n",
        encoding="utf-8",
    )
    code = (
        "import sys; sys.modules['redis'] = None; "
        "sys.argv = ['loyaltylayer', 'enroll', 'in.csv', '--plan-id', 'pp-gold', '--sandbox', "
        "'--redis-url', 'redis://127.0.0.1:9/0']; from loyaltylayer.cli import main; main()"
    )
    result = python(code, cwd=tmp_path)
    assert result.returncode == 3
    assert "pip install 'loyaltylayer[redis]'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
