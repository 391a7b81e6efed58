"""Compact JSON: how every body and line the SDK writes is encoded."""

from __future__ import annotations

import json

__all__ = ["encode_compact"]

encode_compact = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps(value, separators=(",", ":"))``, without building an encoder on every call."""
