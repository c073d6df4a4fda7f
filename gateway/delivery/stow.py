"""STOW-RS: POST {root}/studies as multipart/related; success read per instance from the
response body (ReferencedSOPSequence / FailedSOPSequence), not only from the HTTP status."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

from gateway.delivery.config import DeliverySettings, DicomWebDestination
from gateway.delivery.outcome import OutgoingObject, SendOutcome, all_failed, classify_status

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"

# HTTP statuses worth retrying; other 4xx mean the request itself is wrong.
_TRANSIENT_HTTP = {408, 425, 429}


def multipart_body(parts: Sequence[bytes]) -> tuple[bytes, str]:
    boundary = f"gateway-{uuid.uuid4().hex}"
    chunks = []
    for part in parts:
        chunks += [
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            part,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), content_type


def _first_value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def parse_stow_response(body: bytes) -> tuple[set[str], dict[str, int | None]]:
    """(stored SOP Instance UIDs, failed SOP Instance UID -> FailureReason)."""
    document = json.loads(body)
    if isinstance(document, list):  # some servers wrap the dataset in a list
        document = document[0] if document else {}
    if not isinstance(document, dict):
        raise ValueError(f"expected a DICOM JSON object, found {type(document).__name__}")
    stored = {
        str(_first_value(item, REFERENCED_SOP_INSTANCE_UID))
        for item in document.get(REFERENCED_SOP_SEQUENCE, {}).get("Value") or []
    }
    failed: dict[str, int | None] = {}
    for item in document.get(FAILED_SOP_SEQUENCE, {}).get("Value") or []:
        reason = _first_value(item, FAILURE_REASON)
        failed[str(_first_value(item, REFERENCED_SOP_INSTANCE_UID))] = (
            int(reason) if reason is not None else None
        )
    return stored, failed


class StowSender:
    """Sends batches to one DICOMweb destination."""

    def __init__(self, destination: DicomWebDestination, settings: DeliverySettings) -> None:
        self.destination = destination
        self.settings = settings

    @property
    def where(self) -> str:
        return f"{self.destination.name} (STOW-RS)"

    def _request(self, body: bytes, content_type: str) -> urllib.request.Request:
        d = self.destination
        request = urllib.request.Request(d.url.rstrip("/") + "/studies", data=body, method="POST")
        request.add_header("Content-Type", content_type)
        request.add_header("Accept", "application/dicom+json")
        if d.username is not None and d.password is not None:
            token = f"{d.username}:{d.password.get_secret_value()}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
        elif d.token is not None:
            request.add_header("Authorization", "Bearer " + d.token.get_secret_value())
        return request

    def send(self, objects: Sequence[OutgoingObject]) -> list[SendOutcome]:
        items = list(objects)
        parts: list[bytes] = []
        for obj in items:
            try:
                parts.append(obj.path.read_bytes())
            except OSError as exc:
                return all_failed(
                    items, f"expected a readable result file, found {exc.strerror}", permanent=True
                )
        body, content_type = multipart_body(parts)
        context = (
            ssl.create_default_context(cafile=str(self.destination.ca_file))
            if self.destination.ca_file
            else None
        )
        # One deadline for connect and reply: the body is small, the server's storing is not.
        timeout = self.settings.connect_timeout_s + self.settings.response_timeout_s
        try:
            with urllib.request.urlopen(
                self._request(body, content_type), timeout=timeout, context=context
            ) as response:
                status, reply = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, reply = exc.code, exc.read()
        except (OSError, TimeoutError) as exc:  # URLError, refused, reset, timed out
            return all_failed(items, f"{self.where}: no reply ({exc})", permanent=False)
        return self._outcomes(items, status, reply)

    def _outcomes(
        self, items: list[OutgoingObject], status: int, reply: bytes
    ) -> list[SendOutcome]:
        if status in _TRANSIENT_HTTP or status >= 500:
            return all_failed(items, f"{self.where}: HTTP {status}", permanent=False)
        if status >= 400 and status != 409:  # 409: some or all failed, the body says which
            return all_failed(items, f"{self.where}: HTTP {status}", permanent=True)
        try:
            stored, failed = parse_stow_response(reply)
        except (ValueError, KeyError, TypeError, IndexError):
            return all_failed(
                items,
                f"{self.where}: HTTP {status} without a readable DICOM JSON response",
                permanent=False,
            )
        outcomes = []
        for obj in items:
            uid = obj.sop_instance_uid
            if uid in failed:
                reason = failed[uid]
                if reason is None:
                    outcomes.append(
                        SendOutcome.permanent_failure(uid, f"{self.where}: failed, no reason")
                    )
                else:
                    outcomes.append(classify_status(uid, reason, self.where))
                    if outcomes[-1].delivered:  # a warning code in the failed list: failed
                        outcomes[-1] = SendOutcome.permanent_failure(
                            uid, f"{self.where}: listed as failed (0x{reason:04X})"
                        )
            elif uid in stored:
                outcomes.append(SendOutcome.ok(uid))
            else:
                outcomes.append(
                    SendOutcome.transient(
                        uid, f"{self.where}: HTTP {status} but the instance is not confirmed"
                    )
                )
        return outcomes
