"""A value from a peer (an association's AE title or address, a UID in a request) as text."""

from __future__ import annotations

from typing import Any


def clipped(value: Any, limit: int) -> str:
    """``value`` as text, stripped and cut to ``limit`` characters (its VR's or column's
    length): what a peer sent is never trusted to fit."""
    return str(value or "").strip()[:limit]
