"""Cardholder rows for enrollment jobs: valid, distinct, cheap to make by the hundred thousand."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from loyaltylayer._enroll_models import RECORD_FIELDS

__all__ = ["rows", "write_csv"]


# Test PANs that pass the Luhn check; the sandbox accepts any of them.
_CARDS = ("4111111111111111", "4242424242424242", "5555555555554444", "378282246310005")


def rows(count: int, *, prefix: str = "BENCH") -> Iterator[dict[str, str]]:
    """``count`` rows in the CLI's columns, each with its own reference (its record key)."""
    for i in range(count):
        card = _CARDS[i % len(_CARDS)]
        yield {
            "card_number": card,
            "card_expiry": "12/39",
            "name_on_card": "ADA LOVELACE",
            "cvv": "1234" if card.startswith("3") else "123",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": f"ada.{i}@example.com",
            "phone": "+442071838750",
            "country": "GB",
            "reference": f"{prefix}-{i}",
        }


def write_csv(path: Path, count: int) -> Path:
    """A CSV input file of ``count`` rows, as the CLI reads it."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        writer.writerows(rows(count))
    return path
