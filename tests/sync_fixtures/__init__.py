"""A stand-in async client with the real one's conventions, its generated facade, a test server.

``_async`` is hand-written like ``loyaltylayer/_async`` (an aiohttp session made lazily on its
loop, resources behind properties, an async generator, an async context manager); ``_sync`` is
generated from it by ``tools/gen_sync.py`` and checked for freshness by the tests.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent


def regenerate(root: Path = TESTS) -> list[str]:
    """The command that regenerates (add ``--check`` to verify) the facade of this package."""
    return [
        sys.executable,
        str(REPO / "tools" / "gen_sync.py"),
        "--root",
        str(root),
        "--async-package",
        "sync_fixtures._async",
        "--sync-package",
        "sync_fixtures._sync",
    ]


def load_generator() -> ModuleType:
    """``tools/gen_sync.py`` as a module (``tools`` is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_sync", REPO / "tools" / "gen_sync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_sync", module)
    spec.loader.exec_module(module)
    return module


def manifest(generator: ModuleType, root: Path = TESTS) -> object:
    """The real manifest, pointed at this fixture package under ``root``."""
    return dataclasses.replace(
        generator.MANIFEST,
        root=root,
        async_package="sync_fixtures._async",
        sync_package="sync_fixtures._sync",
    )
