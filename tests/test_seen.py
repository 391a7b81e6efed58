"""SeenKeys: duplicate detection in flat arrays (pure logic)."""

from __future__ import annotations

import tracemalloc

from loyaltylayer._seen import SeenKeys


def test_first_seen_is_remembered_and_returned_for_repeats() -> None:
    seen = SeenKeys(capacity=4)
    lines = [seen.first_seen(f"ref-{i}", i + 2) for i in range(5000)]
    assert lines == [i + 2 for i in range(5000)]
    assert len(seen) == 5000
    assert seen.first_seen("ref-17", 9999) == 19
    assert seen.first_seen("ref-4999", 1) == 5001
    assert seen.first_seen("new", 7) == 7
    assert len(seen) == 5001


def test_memory_per_key_is_a_few_dozen_bytes() -> None:
    tracemalloc.start()
    seen = SeenKeys()
    for i in range(50_000):
        seen.first_seen(f"customer-{i:08d}", i)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(seen) == 50_000
    assert current / 50_000 < 60  # a dict of the same keys takes about 136
