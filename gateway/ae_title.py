"""The DICOM AE title value representation, checked where settings name one."""

from __future__ import annotations

import re

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE VR: no backslash


def check_ae_title(value: str) -> str:
    stripped = value.strip()
    if not stripped or not _AE_TITLE.match(value):
        raise ValueError(
            f"expected 1-16 printable ASCII characters without backslash, found {value!r}"
        )
    return stripped
