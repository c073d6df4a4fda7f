"""Retrieve a study with WADO-RS: GET {root}/studies/{uid} as multipart/related
application/dicom, each part (a DICOM file, as the source stores it) stored as it arrives
through the same path as a C-STORE."""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import Engine

from gateway.ingest import Sender
from gateway.pull.config import DicomWebSource
from gateway.pull.errors import SourceError
from gateway.pull.http import describe, get
from gateway.pull.matches import InstanceMatch
from gateway.pull.multipart import MultipartError, boundary_of, iter_parts
from gateway.pull.retrieved import Retrieved
from gateway.pull.store import PulledInstanceStore
from gateway.settings import GatewaySettings

# As stored at the source: no transcoding (the DICOMweb default would be Explicit VR LE).
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class WadoRetriever:
    def __init__(self, source: DicomWebSource, settings: GatewaySettings, engine: Engine) -> None:
        self.source = source
        self.settings = settings
        self.engine = engine
        self.where = describe(source)

    def retrieve(self, study_instance_uid: str, listed: Sequence[InstanceMatch]) -> Retrieved:
        pull = self.settings.pull
        store = PulledInstanceStore(
            self.settings,
            self.engine,
            Sender(self.source.sender_label, urlsplit(self.source.url).hostname or ""),
            "WADO-RS",
        )
        deadline = time.monotonic() + pull.study_timeout_s
        max_part = self.settings.dicom.max_dataset_mb * 1024 * 1024
        report = Retrieved()
        what = f"WADO-RS study {study_instance_uid}"
        with get(self.source, pull, f"/studies/{study_instance_uid}", ACCEPT, what) as response:
            try:
                boundary = boundary_of(response.headers.get("Content-Type", ""))
                for _headers, body in iter_parts(
                    response, boundary, max_part_bytes=max_part, deadline=deadline
                ):
                    report.count(store.receive_part10(body))
            except MultipartError as exc:
                raise SourceError(f"{self.where}: {what}: {exc}") from exc
            except TimeoutError as exc:
                raise SourceError(
                    f"{self.where}: {what}: not complete within {pull.study_timeout_s:g} s"
                ) from exc
        return report
