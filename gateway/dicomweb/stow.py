"""STOW-RS (PS3.18 10.5): a multipart/related body of application/dicom parts, read as a
stream. Each part goes to its own file in a staging folder as it arrives (memory holds one
read chunk), and only once the whole body has arrived is each part stored through the same
path as a C-STORE (gateway/dicom/store_instance.py): header, durable spool file, rows,
audit; study assembly and routing follow from the database. A body over the limit stores
nothing: Content-Length over it is refused before a byte is read, a chunked body at the
byte that crosses it. The staging folder is removed whatever happens."""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gateway.dicom import statuses
from gateway.dicom.spool import Spool, SpoolFull
from gateway.dicom.store_instance import InstanceStore, StoreOutcome
from gateway.dicomweb.dicom_json import json_value
from gateway.dicomweb.multipart import MediaType, MultipartReader, Part, boundary_of
from gateway.dicomweb.part10 import NotPart10, split_part10
from gateway.ingest import Sender

LOGGER = logging.getLogger(__name__)
TRANSPORT = "STOW-RS"
HEAD_BYTES = 64 * 1024  # kept of each part: its file meta names it when it is refused
STALE_STAGING_S = 24 * 3600
MB = 1024 * 1024


class BodyTooLarge(Exception):
    """The body crossed the STOW-RS limit (413): nothing was stored."""


class UnsupportedMediaType(Exception):
    """Not multipart/related of application/dicom (415)."""


class CountingReader:
    """Reads a request body and refuses it once it crosses `limit` bytes."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.count = 0

    def read(self, size: int) -> bytes:
        data = self.stream.read(min(size, self.limit - self.count + 1))
        self.count += len(data)
        if self.count > self.limit:
            raise BodyTooLarge(
                f"expected a STOW-RS body of at most {self.limit // MB} MB "
                "(dicomweb.max_stow_mb), found more"
            )
        return data


@dataclass
class StagedPart:
    number: int
    head: bytes
    path: Path | None  # None: refused while it arrived (failure says why)
    size: int = 0
    failure: tuple[int, str] | None = None


@dataclass(frozen=True)
class PartResult:
    number: int
    outcome: StoreOutcome
    sop_class_uid: str | None
    sop_instance_uid: str | None
    series_instance_uid: str | None
    study_instance_uid: str | None


def check_content_type(value: str | None) -> bytes:
    """The boundary of a multipart/related body of application/dicom parts."""
    media = MediaType.parse(value or "")
    if media.type != "multipart/related":
        raise UnsupportedMediaType(
            f'expected Content-Type multipart/related; type="application/dicom", found '
            f"{(value or 'none')[:100]!r}"
        )
    part_type = media.parameters.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise UnsupportedMediaType(
            f"expected parts of type application/dicom (metadata with bulk data is not "
            f"accepted), found {part_type[:60]!r}"
        )
    return boundary_of(media)


def clear_stale_staging(staging_root: Path, now: float | None = None) -> None:
    """Folders a crashed request left behind (any older than a day)."""
    now = time.time() if now is None else now
    try:
        entries = list(os.scandir(staging_root))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue


class StowRequest:
    """One STOW-RS request: stage, then store."""

    def __init__(
        self,
        store: InstanceStore,
        spool: Spool,
        staging_root: Path,
        *,
        max_part_bytes: int,
    ) -> None:
        self.store = store
        self.spool = spool
        self.staging = staging_root / uuid.uuid4().hex
        self.max_part_bytes = max_part_bytes

    def run(
        self,
        read: Callable[[int], bytes],
        boundary: bytes,
        sender: Sender,
        study_uid: str | None,
    ) -> list[PartResult]:
        self.staging.mkdir(parents=True, exist_ok=False)
        try:
            staged = [
                self._stage(number, part)
                for number, part in enumerate(MultipartReader(read, boundary).parts(), start=1)
            ]
            return [self._store(part, sender, study_uid) for part in staged]
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _stage(self, number: int, part: Part) -> StagedPart:
        path = self.staging / f"{number}.part"
        staged = StagedPart(number, b"", path)
        content_type = part.content_type
        if content_type is not None and content_type.type != "application/dicom":
            staged.failure = (
                statuses.CANNOT_UNDERSTAND,
                f"expected a part of type application/dicom, found {content_type.type[:60]!r}",
            )
        else:
            try:
                self.spool.check_free_space(0)
            except SpoolFull as exc:
                staged.failure = (statuses.OUT_OF_RESOURCES, str(exc))
        fd = None if staged.failure else os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        head = bytearray()
        try:
            for chunk in part.chunks:
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                staged.size += len(chunk)
                if fd is None:
                    continue  # refused: the rest of the part is read and dropped
                if staged.size > self.max_part_bytes:
                    staged.failure = (
                        statuses.OUT_OF_RESOURCES,
                        f"expected an instance of at most {self.max_part_bytes // MB} MB "
                        "(dicom.max_dataset_mb), found more",
                    )
                    fd = self._close(fd, staged)
                    continue
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                except OSError as exc:
                    reason = "found the disk full" if exc.errno == 28 else type(exc).__name__
                    staged.failure = (
                        statuses.OUT_OF_RESOURCES,
                        f"expected room to stage the part, {reason}",
                    )
                    fd = self._close(fd, staged)
        finally:
            if fd is not None:
                os.close(fd)
        staged.head = bytes(head)
        if staged.failure is not None:
            staged.path = None
        return staged

    @staticmethod
    def _close(fd: int, staged: StagedPart) -> None:
        os.close(fd)
        if staged.path is not None:
            staged.path.unlink(missing_ok=True)
        return None

    def _store(self, staged: StagedPart, sender: Sender, study_uid: str | None) -> PartResult:
        meta = _announced(staged.head)
        if staged.failure is not None or staged.path is None:
            status, reason = staged.failure or (statuses.PROCESSING_FAILURE, "not staged")
            outcome = self.store.refuse(sender, status, reason, meta.get("sop"), TRANSPORT)
            return _result(staged.number, outcome, meta)
        try:
            data = staged.path.read_bytes()
        finally:
            staged.path.unlink(missing_ok=True)  # the spool file is written from memory
        try:
            part10 = split_part10(data)
        except NotPart10 as exc:
            outcome = self.store.refuse(
                sender, statuses.CANNOT_UNDERSTAND, str(exc), meta.get("sop"), TRANSPORT
            )
            return _result(staged.number, outcome, meta)
        outcome = self.store.receive(
            sender,
            part10.meta,
            memoryview(data)[part10.dataset_offset :],
            part10.transfer_syntax_uid,
            expected_sop_class_uid=part10.media_storage_sop_class_uid,
            announced_sop_instance_uid=part10.media_storage_sop_instance_uid,
            transport=TRANSPORT,
            expected_study_instance_uid=study_uid,
        )
        return _result(staged.number, outcome, meta)


def _announced(head: bytes) -> dict[str, str]:
    """The SOP class and instance a part's file meta announces (to name a refused part)."""
    try:
        part10 = split_part10(head)
    except NotPart10:
        return {}
    found = {
        "class": part10.media_storage_sop_class_uid,
        "sop": part10.media_storage_sop_instance_uid,
    }
    return {k: v for k, v in found.items() if v}


def _result(number: int, outcome: StoreOutcome, announced: dict[str, str]) -> PartResult:
    header = outcome.header
    if header is not None:
        return PartResult(
            number,
            outcome,
            header.sop_class_uid,
            header.sop_instance_uid,
            header.series_instance_uid,
            header.study_instance_uid,
        )
    return PartResult(number, outcome, announced.get("class"), announced.get("sop"), None, None)


def response(
    results: list[PartResult], base_url: str, study_uid: str | None
) -> tuple[int, dict[str, Any]]:
    """HTTP status (200 all stored, 202 some, 409 none) and the response dataset (JSON)."""
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    studies = set()
    for result in results:
        item: dict[str, Any] = {}
        if result.sop_class_uid:
            item["00081150"] = json_value("UI", result.sop_class_uid)
        if result.sop_instance_uid:
            item["00081155"] = json_value("UI", result.sop_instance_uid)
        if result.outcome.stored:
            studies.add(result.study_instance_uid)
            item["00081190"] = json_value(
                "UR",
                f"{base_url}/studies/{result.study_instance_uid}/series/"
                f"{result.series_instance_uid}/instances/{result.sop_instance_uid}",
            )
            referenced.append(item)
        else:
            item["00081197"] = json_value("US", result.outcome.status)
            failed.append(item)
    dataset: dict[str, Any] = {}
    retrieve_study = study_uid or (next(iter(studies)) if len(studies) == 1 else None)
    if retrieve_study is not None and referenced:
        dataset["00081190"] = json_value("UR", f"{base_url}/studies/{retrieve_study}")
    if failed:
        dataset["00081198"] = json_value("SQ", *failed)
    if referenced:
        dataset["00081199"] = json_value("SQ", *referenced)
    status = 200 if not failed else (202 if referenced else 409)
    return status, dataset
