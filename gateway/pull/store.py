"""Store an instance retrieved from the source archive (a C-GET sub-operation, a WADO-RS
part) through the same store as the listener's C-STORE and STOW-RS
(gateway/dicom/store_instance.py): header read and checked, the bytes as received written
durably to the spool, rows committed and the patient index updated (study assembly and
routing follow from them), a duplicate kept once, a refusal logged and audited."""

from __future__ import annotations

from sqlalchemy import Engine

from gateway.dicom import statuses
from gateway.dicom.dataset_limits import DatasetLimits
from gateway.dicom.spool import Spool
from gateway.dicom.store_instance import InstanceStore, StoreOutcome
from gateway.dicomweb.part10 import NotPart10, split_part10
from gateway.ingest import Sender
from gateway.patient_index import PatientIndex
from gateway.settings import GatewaySettings


class PulledInstanceStore:
    """One per retrieval; `sender` names the source archive (its AE title or label),
    `transport` the way the instances came (audited with a refusal)."""

    def __init__(
        self, settings: GatewaySettings, engine: Engine, sender: Sender, transport: str
    ) -> None:
        spool = Spool(
            settings.spool_dir,
            min_free_bytes=settings.storage.min_free_mb * 1024 * 1024,
            fsync=settings.storage.fsync,
        )
        self.store = InstanceStore(
            engine,
            spool,
            DatasetLimits.from_settings(settings.dicom),
            patient_index=PatientIndex.from_settings(settings),
        )
        self.sender = sender
        self.transport = transport

    def receive(
        self,
        meta: bytes | memoryview,
        body: memoryview,
        transfer_syntax_uid: str,
        *,
        sop_class_uid: str | None,
        sop_instance_uid: str | None,
    ) -> StoreOutcome:
        return self.store.receive(
            self.sender,
            meta,
            body,
            transfer_syntax_uid,
            expected_sop_class_uid=sop_class_uid,
            announced_sop_instance_uid=sop_instance_uid,
            transport=self.transport,
        )

    def receive_part10(self, data: bytes) -> StoreOutcome:
        """A DICOM file (a WADO-RS part), its file meta stored as received."""
        try:
            part = split_part10(data)
        except NotPart10 as exc:
            return self.store.refuse(
                self.sender, statuses.CANNOT_UNDERSTAND, str(exc), None, self.transport
            )
        return self.receive(
            part.meta,
            memoryview(data)[part.dataset_offset :],
            part.transfer_syntax_uid,
            sop_class_uid=part.media_storage_sop_class_uid,
            sop_instance_uid=part.media_storage_sop_instance_uid,
        )
