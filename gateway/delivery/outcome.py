"""What sending one object came to, and which DICOM statuses are worth retrying."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutgoingObject:
    sop_instance_uid: str
    sop_class_uid: str
    path: Path


@dataclass(frozen=True)
class SendOutcome:
    sop_instance_uid: str
    delivered: bool
    permanent: bool = False
    """For a failure: retrying cannot help (rejected SOP class, unknown AE, bad request)."""
    reason: str = ""

    @classmethod
    def ok(cls, uid: str, note: str = "") -> SendOutcome:
        return cls(uid, True, reason=note)

    @classmethod
    def transient(cls, uid: str, reason: str) -> SendOutcome:
        return cls(uid, False, False, reason)

    @classmethod
    def permanent_failure(cls, uid: str, reason: str) -> SendOutcome:
        return cls(uid, False, True, reason)


def all_failed(objects: list[OutgoingObject], reason: str, *, permanent: bool) -> list[SendOutcome]:
    return [SendOutcome(o.sop_instance_uid, False, permanent, reason) for o in objects]


# Failure statuses a later attempt may get past: out of resources, processing failure.
_TRANSIENT_STATUSES = range(0xA700, 0xA800)
_PROCESSING_FAILURE = 0x0110
_WARNINGS = {0x0001, 0xB000, 0xB006, 0xB007}


def classify_status(uid: str, status: int, where: str) -> SendOutcome:
    """A C-STORE (or STOW-RS FailureReason) status to an outcome."""
    text = f"{where} answered status 0x{status:04X}"
    if status == 0x0000:
        return SendOutcome.ok(uid)
    if status in _WARNINGS:
        return SendOutcome.ok(uid, f"{text} (warning, stored)")
    if status in _TRANSIENT_STATUSES or status == _PROCESSING_FAILURE:
        return SendOutcome.transient(uid, text)
    return SendOutcome.permanent_failure(uid, text)
