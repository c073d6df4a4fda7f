"""Deterministic UIDs for result objects, so that a rerun of a job makes the same objects.

UUID-derived UIDs under the 2.25 root (PS3.5 B.2): a name-based UUID (SHA-1, RFC 4122 v5) of
the parts that identify the result, as a decimal integer.
"""

from __future__ import annotations

import uuid

# Fixed namespace of this product; changing it changes every derived UID.
_NAMESPACE = uuid.UUID("6f1c2b8e-3d0a-5e7b-9c41-2a7d5b0e8f13")


def derive_uid(*parts: str) -> str:
    """The same parts always give the same UID; different parts a different one."""
    if not parts:
        raise ValueError("expected at least one part to derive a UID from, found none")
    name = "\x1f".join(parts)  # unit separator: ("a.b", "c") differs from ("a", "b.c")
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"
