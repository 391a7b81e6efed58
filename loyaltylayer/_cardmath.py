"""Pure card arithmetic shared by the SDK's input checks and the sandbox's server-side checks.

Kept free of I/O and of any secret-bearing object, so both sides can use exactly the same rules:
a card the SDK accepts is a card the sandbox accepts.
"""

from __future__ import annotations

import datetime as _dt
import re

__all__ = [
    "CARD_TYPES",
    "card_type_for",
    "expiry_is_past",
    "looks_like_card_number",
    "luhn_check_digit",
    "luhn_valid",
    "mask_card",
    "parse_expiry",
]

CARD_TYPES = ("VISA", "MASTERCARD", "AMEX", "DISCOVER", "JCB", "UNIONPAY", "DINERS")

_EXPIRY = re.compile(r"(0[1-9]|1[0-2])/([0-9]{2})")
_NOT_DIGITS = re.compile(r"[^0-9]")


def _luhn_sum(digits: str, *, double_first: bool) -> int:
    total = 0
    double = double_first
    for char in reversed(digits):
        value = ord(char) - 48
        if double:
            value *= 2
            if value > 9:
                value -= 9
        total += value
        double = not double
    return total


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only) passes the Luhn mod-10 check."""
    if not digits.isascii() or not digits.isdigit():
        return False
    return _luhn_sum(digits, double_first=False) % 10 == 0


def looks_like_card_number(text: str) -> bool:
    """12 to 19 digits (maybe grouped by spaces or dashes) that pass the Luhn check: a PAN."""
    digits = text.replace(" ", "").replace("-", "")
    return 12 <= len(digits) <= 19 and luhn_valid(digits)


def mask_card(number: str) -> str:
    """``4111 1111 1111 1111`` -> ``**** 1111``: the most of a card number any output shows."""
    digits = _NOT_DIGITS.sub("", number)
    return f"**** {digits[-4:]}" if len(digits) >= 4 else "****"


def luhn_check_digit(partial: str) -> str:
    """The digit that, appended to ``partial``, makes a Luhn-valid number (used for ICCIDs)."""
    return str((10 - _luhn_sum(partial, double_first=True) % 10) % 10)


def card_type_for(digits: str) -> str | None:
    """The card network a PAN belongs to, from its IIN range; ``None`` when no range matches."""
    if not digits.isdigit():
        return None
    two, four, six = int(digits[:2] or 0), int(digits[:4] or 0), int(digits[:6] or 0)
    if digits.startswith("4"):
        return "VISA"
    if 51 <= two <= 55 or 222100 <= six <= 272099:
        return "MASTERCARD"
    if two in (34, 37):
        return "AMEX"
    if two in (36, 38, 39) or 300 <= int(digits[:3] or 0) <= 305:
        return "DINERS"
    if four == 6011 or two == 65 or 644 <= int(digits[:3] or 0) <= 649 or 622126 <= six <= 622925:
        return "DISCOVER"
    if 3528 <= four <= 3589:
        return "JCB"
    if two == 62 or two == 81:
        return "UNIONPAY"
    return None


def parse_expiry(expiry: str) -> tuple[int, int] | None:
    """``"MM/YY"`` as ``(month, four-digit year)``; ``None`` when it is not of that form."""
    match = _EXPIRY.fullmatch(expiry)
    if match is None:
        return None
    return int(match.group(1)), 2000 + int(match.group(2))


def expiry_is_past(month: int, year: int, today: _dt.date) -> bool:
    """A card is valid through the last day of its expiry month."""
    return (year, month) < (today.year, today.month)
