"""Keyed hashes of the Accession Number and Patient ID: what the database holds instead of
the values, so that a search by either (QIDO-RS, the studies page) matches exactly without
the database alone revealing them.

HMAC-SHA256 under a key derived from the gateway's secret (`web.secret_key`, else the one
generated in data_dir/web-secret). One attribute's hash never equals another's for the same
text (the attribute's name is part of the message). Someone with the database and not the
secret learns which studies share a patient or an accession number, and nothing more;
with the secret too, a guessed value can be checked. Changing the secret orphans the
stored hashes: searches by these two attributes then find nothing until the studies are
received again.
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.settings import GatewaySettings

_KEY_PURPOSE = b"pacs-gateway patient index v1"


def normalise(value: str | None) -> str | None:
    """The value as matched: DICOM pads with spaces (and NUL); empty means absent."""
    if value is None:
        return None
    text = str(value).strip(" \x00")
    return text or None


class PatientIndex:
    """Hashes for the two indexed attributes. Never logs or keeps a value."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode("utf-8"), _KEY_PURPOSE, hashlib.sha256).digest()

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> PatientIndex:
        from gateway.web.secret import secret_key

        return cls(secret_key(settings))

    def _hash(self, attribute: bytes, value: str | None) -> str | None:
        text = normalise(value)
        if text is None:
            return None
        message = attribute + b"\x00" + text.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def accession_number(self, value: str | None) -> str | None:
        return self._hash(b"AccessionNumber", value)

    def patient_id(self, value: str | None) -> str | None:
        return self._hash(b"PatientID", value)
