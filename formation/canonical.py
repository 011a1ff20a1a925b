"""Canonical JSON and content hashes: how recipes and grading rules get the sha256 recorded with every result."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, no NaN: the same content always gives the same text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_sha256(data: Any) -> str:
    """Hex sha256 of the canonical JSON of ``data``."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()
