"""A PACS that counts: a pynetdicom Storage SCP that records every C-STORE request (study,
SOP class, SOP instance) and answers success. It keeps every copy, so a result sent twice
counts twice (Orthanc would keep one)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import UID, SegmentationStorage
from pynetdicom import AE, StoragePresentationContexts, evt

from tests.conftest import free_port

COUNTER_AE = "COUNTER"


@dataclass
class CountingPacs:
    ae_title: str
    port: int
    stores: list[tuple[str, str, str]] = field(default_factory=list)
    """(StudyInstanceUID, SOP Class UID, SOP Instance UID) of each C-STORE request."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def destination(self) -> dict[str, Any]:
        return {
            "kind": "dicom",
            "name": "counting-pacs",
            "ae_title": self.ae_title,
            "host": "127.0.0.1",
            "port": self.port,
        }

    def received(self) -> dict[str, Counter[str]]:
        """Study UID -> 'SEG' / 'SR' -> C-STOREs received."""
        out: dict[str, Counter[str]] = {}
        with self.lock:
            for study, sop_class, _ in self.stores:
                out.setdefault(study, Counter())[_kind(sop_class)] += 1
        return out


def _kind(sop_class_uid: str) -> str:
    if sop_class_uid == SegmentationStorage:
        return "SEG"
    name = UID(sop_class_uid).name
    return "SR" if name.endswith("SR Storage") else name or sop_class_uid


@contextmanager
def counting_pacs(ae_title: str = COUNTER_AE) -> Iterator[CountingPacs]:
    pacs = CountingPacs(ae_title, free_port())
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True
    ae.maximum_associations = 16
    ae.supported_contexts = StoragePresentationContexts

    def on_store(event: Any) -> int:
        dataset = event.dataset
        with pacs.lock:
            pacs.stores.append(
                (
                    str(dataset.StudyInstanceUID),
                    str(event.request.AffectedSOPClassUID),
                    str(event.request.AffectedSOPInstanceUID),
                )
            )
        return 0x0000

    server = ae.start_server(
        ("127.0.0.1", pacs.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield pacs
    finally:
        server.shutdown()
