"""Store one instance, whatever carried it (C-STORE or STOW-RS): read its header (never the
pixels), write the bytes durably to the spool, commit its rows, index the patient hashes,
and answer a DICOM status. Every refusal is logged (no PHI) and audited, and leaves nothing
stored. The transports only turn their own framing into (file meta, dataset body)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.database import writer_queue
from gateway.dicom import statuses
from gateway.dicom.dataset_limits import DatasetLimits, DatasetTooLarge
from gateway.dicom.header import InstanceHeader, UnreadableDataset, read_header
from gateway.dicom.spool import Spool, SpooledFile, SpoolFull
from gateway.ingest import HierarchyConflict, InstanceIndex, Receipt, Sender
from gateway.patient_index import PatientIndex

LOGGER = logging.getLogger(__name__)

# Studies whose hashes this store has written: one UPDATE per study, not per instance. A
# bound keeps a long-running listener's memory flat; forgetting only costs an UPDATE.
_HASHED_STUDIES_KEPT = 4096

_SET_STUDY_HASHES = text(
    """
    UPDATE studies SET
        accession_number_hash = COALESCE(accession_number_hash, :accession_number_hash),
        patient_id_hash = COALESCE(patient_id_hash, :patient_id_hash)
    WHERE study_instance_uid = :study_uid
      AND (accession_number_hash IS NULL OR patient_id_hash IS NULL)
    """
)


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """A DICOM status and, when refused, why (no PHI); the header when one was read."""

    status: int
    reason: str | None = None
    header: InstanceHeader | None = None
    receipt: Receipt | None = None

    @property
    def stored(self) -> bool:
        return self.status == statuses.SUCCESS


class SopClassMismatch(Exception):
    """The dataset's SOP class differs from the one its carrier names (0xA900)."""


class InstanceStore:
    """Shared by every association (and every STOW-RS request) of one process."""

    def __init__(
        self,
        engine: Engine,
        spool: Spool,
        limits: DatasetLimits | None = None,
        *,
        patient_index: PatientIndex | None = None,
    ) -> None:
        self.engine = engine
        self.spool = spool
        self.limits = limits or DatasetLimits()
        self.patient_index = patient_index
        self.index = InstanceIndex(engine)
        self._hashed_studies: set[str] = set()

    def receive(
        self,
        sender: Sender,
        meta: bytes | memoryview,
        body: memoryview,
        transfer_syntax_uid: str,
        *,
        expected_sop_class_uid: str | None,
        announced_sop_instance_uid: str | None,
        transport: str,
        expected_study_instance_uid: str | None = None,
    ) -> StoreOutcome:
        """Read the header of `body` (a dataset in `transfer_syntax_uid`, no file meta),
        check it against what the carrier announced, and store `meta` + `body`.

        `expected_study_instance_uid` (STOW-RS to a study's URL): an instance of another
        study is refused with 0x0110, as PS3.18 10.5.3.2 asks, and nothing is stored."""
        header: InstanceHeader | None = None
        try:
            header = read_header(body, transfer_syntax_uid, self.limits)
            check_sop_class(header, expected_sop_class_uid)
            if expected_study_instance_uid not in (None, header.study_instance_uid):
                reason = (
                    f"expected an instance of study {expected_study_instance_uid} as in the "
                    f"request, found one of study {header.study_instance_uid}"
                )
                return self.refuse(
                    sender,
                    statuses.PROCESSING_FAILURE,
                    reason,
                    header.sop_instance_uid,
                    transport,
                    header=header,
                )
        except UnreadableDataset as exc:
            status, reason = statuses.CANNOT_UNDERSTAND, str(exc)
        except DatasetTooLarge as exc:
            status, reason = statuses.OUT_OF_RESOURCES, str(exc)
        except RecursionError:  # defensive: the structure walk bounds nesting before pydicom
            status, reason = statuses.CANNOT_UNDERSTAND, "sequences nested too deep to parse"
        except SopClassMismatch as exc:
            status, reason = statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)
        else:
            return self.store(sender, header, meta, body, transport=transport)
        uid = announced_sop_instance_uid if header is None else header.sop_instance_uid
        return self.refuse(sender, status, reason, uid, transport, header=header)

    def store(
        self,
        sender: Sender,
        header: InstanceHeader,
        meta: bytes | memoryview,
        body: memoryview,
        *,
        transport: str,
    ) -> StoreOutcome:
        # No look-up first: the rare duplicate costs a discarded file, every other instance
        # saves a database round trip. The unique SOP Instance UID decides in the commit.
        uid = header.sop_instance_uid
        try:
            spooled = self.spool.write(
                header.study_instance_uid, header.series_instance_uid, uid, (meta, body)
            )
        except SpoolFull as exc:
            return self.refuse(
                sender, statuses.OUT_OF_RESOURCES, str(exc), uid, transport, header=header
            )
        except Exception as exc:
            LOGGER.exception("spool write failed")
            reason = f"spool write failed: {type(exc).__name__}"
            return self.refuse(
                sender, statuses.OUT_OF_RESOURCES, reason, uid, transport, header=header
            )
        try:
            receipt = self.index.record_instance(header, spooled, sender)
        except HierarchyConflict as exc:
            self.spool.discard(spooled.relative_path)
            return self.refuse(
                sender, statuses.CANNOT_UNDERSTAND, str(exc), uid, transport, header=header
            )
        except Exception as exc:
            # Most likely not committed: the sender will retry. Remove the file only once
            # the index is known not to name it (a commit may succeed and still raise).
            LOGGER.error("index commit failed: %s", type(exc).__name__)
            self._discard_unless_indexed(header, spooled)
            reason = f"database error: {type(exc).__name__}"
            return self.refuse(
                sender, statuses.PROCESSING_FAILURE, reason, uid, transport, header=header
            )
        if receipt is Receipt.DUPLICATE:
            self._keep_one_copy(header, spooled)
        self._index_patient(header)
        return StoreOutcome(statuses.SUCCESS, header=header, receipt=receipt)

    def _index_patient(self, header: InstanceHeader) -> None:
        """The study's keyed hashes, once per study (the first non-empty values win)."""
        study = header.study_instance_uid
        if self.patient_index is None or study in self._hashed_studies:
            return
        values = {
            "study_uid": study,
            "accession_number_hash": self.patient_index.accession_number(header.accession_number),
            "patient_id_hash": self.patient_index.patient_id(header.patient_id),
        }
        try:
            with writer_queue(self.engine), self.engine.begin() as connection:
                connection.execute(_SET_STUDY_HASHES, values)
        except Exception as exc:  # the instance is stored; its next sibling retries this
            LOGGER.error("patient index update failed: %s", type(exc).__name__)
            return
        if len(self._hashed_studies) >= _HASHED_STUDIES_KEPT:
            self._hashed_studies.clear()
        self._hashed_studies.add(study)

    def _discard_unless_indexed(self, header: InstanceHeader, spooled: SpooledFile) -> None:
        try:
            if self.index.stored_file(header.sop_instance_uid) != spooled.relative_path:
                self.spool.discard(spooled.relative_path)
        except Exception as exc:  # database still unreachable: an orphan file is harmless
            LOGGER.error("kept %s, index unreadable: %s", spooled.relative_path, type(exc).__name__)

    def _keep_one_copy(self, header: InstanceHeader, spooled: SpooledFile) -> None:
        """A duplicate: drop our copy, unless the stored copy has gone missing."""
        stored = self.index.stored_file(header.sop_instance_uid)
        if stored == spooled.relative_path:
            return  # the stored file had gone and ours took its name: it is whole again
        if stored is not None and self.spool.path_of(stored).is_file():
            self.spool.discard(spooled.relative_path)
            return
        LOGGER.warning(
            "stored file of %s missing: replaced by the copy just received", header.sop_instance_uid
        )
        self.index.replace_missing_file(header.sop_instance_uid, spooled)

    def refuse(
        self,
        sender: Sender,
        status: int,
        reason: str,
        sop_instance_uid: str | None,
        transport: str,
        *,
        header: InstanceHeader | None = None,
    ) -> StoreOutcome:
        """Log and audit a refusal (no PHI: the reasons name UIDs and sizes only)."""
        uid = (sop_instance_uid or "")[:64] or None
        LOGGER.warning(
            "%s from %s refused with 0x%04X: %s", transport, sender.ae_title, status, reason
        )
        row_detail: dict[str, Any] = {"status": f"0x{status:04X}", "reason": reason}
        if transport != "C-STORE":
            row_detail["transport"] = transport
        try:
            with self.engine.begin() as connection:
                record(
                    connection,
                    audit_row(
                        AuditKind.INSTANCE_REFUSED,
                        Outcome.FAILURE,
                        actor=sender.ae_title,
                        source_address=sender.address,
                        study_instance_uid=None if header is None else header.study_instance_uid,
                        sop_instance_uid=uid,
                        detail=row_detail,
                    ),
                )
        except Exception as exc:  # the audit must not take the receiver down
            LOGGER.error("audit write failed: %s", type(exc).__name__)
        return StoreOutcome(status, reason, header=header)


def check_sop_class(header: InstanceHeader, expected_sop_class_uid: str | None) -> None:
    """The class the carrier announced (C-STORE's Affected SOP Class UID, a STOW-RS part's
    Media Storage SOP Class UID) must be the dataset's. A differing SOP Instance UID is
    tolerated (some senders take it from a stale file meta); the dataset's own is indexed."""
    if expected_sop_class_uid and expected_sop_class_uid != header.sop_class_uid:
        raise SopClassMismatch(
            f"expected SOP Class UID {expected_sop_class_uid} as announced, "
            f"found {header.sop_class_uid} in the dataset"
        )
