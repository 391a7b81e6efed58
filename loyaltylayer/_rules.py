"""Field rules of the wire contract, shared by the SDK's input checks and the sandbox.

Each rule is a pure predicate plus the limits it uses, so the SDK rejects locally exactly what
the server would reject, and the messages built from them never need to quote the value.
"""

from __future__ import annotations

import datetime as _dt
import re

__all__ = [
    "COUNTRIES",
    "IDEMPOTENCY_KEY_MAX",
    "MAX_BATCH",
    "METADATA_MAX_PAIRS",
    "NAME_MAX",
    "REASON_MAX",
    "REFERENCE_MAX",
    "has_control_characters",
    "is_country",
    "is_cvv",
    "is_e164",
    "is_email",
    "is_idempotency_key",
    "is_iso_date",
    "is_pan",
    "is_sendable_idempotency_key",
]

MAX_BATCH = 100
NAME_MAX = 64
REFERENCE_MAX = 64
REASON_MAX = 255
"""The longest cancellation ``reason``."""
METADATA_MAX_PAIRS = 20
EMAIL_MAX = 254
IDEMPOTENCY_KEY_MAX = 255
PAN_MIN, PAN_MAX = 12, 19

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

COUNTRIES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
    EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
    LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()
)


def has_control_characters(value: str) -> bool:
    """A NUL, a line break, a tab or another C0/C1 control: never part of a name or an id."""
    return _CONTROL.search(value) is not None


def is_email(value: str) -> bool:
    return len(value) <= EMAIL_MAX and _EMAIL.fullmatch(value) is not None


def is_e164(value: str) -> bool:
    return _E164.fullmatch(value) is not None


def is_iso_date(value: str) -> bool:
    if _ISO_DATE.fullmatch(value) is None:
        return False
    try:
        _dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_country(value: str) -> bool:
    return value in COUNTRIES


def is_pan(digits: str) -> bool:
    """Digits only and of a length a card number can have (the Luhn check is separate)."""
    return digits.isascii() and digits.isdigit() and PAN_MIN <= len(digits) <= PAN_MAX


def is_cvv(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) in (3, 4)


def is_idempotency_key(value: str) -> bool:
    """1-255 printable ASCII characters, as the Idempotency-Key header allows."""
    return 1 <= len(value) <= IDEMPOTENCY_KEY_MAX and all(" " <= c <= "~" for c in value)


def is_sendable_idempotency_key(value: str) -> bool:
    """An idempotency key the SDK can send as a header: HTTP strips a space at either end, so
    the server would see another key (or, for one made of spaces, none)."""
    return is_idempotency_key(value) and value[0] != " " and value[-1] != " "
