"""Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION in, N-EVENT-REPORT out.

A modality asks whether the instances it lists are safely stored before it frees its disk,
so the answer must be exact: an instance counts as committed only when its row is committed
with the same SOP Class UID (0x0119 otherwise), its spool file is there, and the spool was
written with fsync on (gateway/dicom/spool.py syncs the file and its directory before that
commit). Listed instances not stored yet are waited for until `commitment_wait_s`, then
reported as failed with 0x0112.

The request is kept in the database before the N-ACTION is answered, so a restart before
the N-EVENT-REPORT still sends it. The report goes on the requester's association while it
is open, else on a new association to the requester's AE title at the address configured
for it in `completion.report_peers` (never the address a request came from).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom import events as evt
from pynetdicom.association import Association
from sqlalchemy import Connection, Engine, and_, or_, select, update

from gateway.audit import AuditKind, Outcome, audit_row, record, utcnow
from gateway.completion.config import CompletionSettings
from gateway.completion.signals import ListedInstance, replace_listed
from gateway.database import insert_ignoring_duplicates, writer_queue
from gateway.dicom import statuses
from gateway.dicom.clipped import clipped
from gateway.models import ExpectedInstance, Instance, StorageCommitment

LOGGER = logging.getLogger(__name__)

STORAGE_COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_SOP_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known instance
REQUEST_COMMIT = 1  # Action Type ID
ALL_SUCCESS, SOME_FAILURES = 1, 2  # Event Type ID
# Failure Reason (0008,1197), PS3.3 C.14.1.1
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
# N-ACTION statuses
NO_SUCH_ACTION_TYPE = 0x0123
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
MISSING_ATTRIBUTE = 0x0120


class CommitmentRefusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CommitmentAnswer:
    """Per listed instance: committed, or the failure reason; None while still waiting."""

    committed: tuple[tuple[str, str], ...]  # (SOP class, SOP instance)
    failed: tuple[tuple[str, str, int], ...]  # (SOP class, SOP instance, reason)

    @property
    def event_type(self) -> int:
        return SOME_FAILURES if self.failed else ALL_SUCCESS


def referenced_instances(dataset: Dataset) -> tuple[str, list[ListedInstance]]:
    """Transaction UID and the Referenced SOP Sequence of an N-ACTION, checked."""
    transaction = clipped(dataset.get("TransactionUID"), 64)
    if not transaction:
        raise CommitmentRefusal(MISSING_ATTRIBUTE, "expected a Transaction UID, found none")
    items = dataset.get("ReferencedSOPSequence") or []
    if not items:
        raise CommitmentRefusal(
            MISSING_ATTRIBUTE, "expected a Referenced SOP Sequence with items, found none"
        )
    listed = []
    for item in items:
        sop_class = clipped(item.get("ReferencedSOPClassUID"), 64)
        sop_instance = clipped(item.get("ReferencedSOPInstanceUID"), 64)
        if not sop_class or not sop_instance:
            raise CommitmentRefusal(
                MISSING_ATTRIBUTE,
                "expected Referenced SOP Class and Instance UIDs in each item, found one "
                "without them",
            )
        listed.append(ListedInstance(None, sop_class, sop_instance))
    return transaction, listed


def answer_commitment(
    connection: Connection,
    commitment_id: int,
    spool_dir: Path,
    *,
    durable: bool,
    final: bool,
) -> CommitmentAnswer | None:
    """The answer for each listed instance, or None while one is missing and not `final`."""
    rows = connection.execute(
        select(
            ExpectedInstance.sop_class_uid,
            ExpectedInstance.sop_instance_uid,
            Instance.sop_class_uid,
            Instance.file_path,
        )
        .select_from(ExpectedInstance)
        .outerjoin(Instance, Instance.sop_instance_uid == ExpectedInstance.sop_instance_uid)
        .where(ExpectedInstance.commitment_id == commitment_id)
        .order_by(ExpectedInstance.id)
    ).all()
    committed: list[tuple[str, str]] = []
    failed: list[tuple[str, str, int]] = []
    for listed_class, listed_uid, stored_class, file_path in rows:
        if stored_class is None:
            if not final:
                return None  # may still be in flight on another association
            failed.append((listed_class, listed_uid, NO_SUCH_OBJECT_INSTANCE))
        elif stored_class != listed_class:
            failed.append((listed_class, listed_uid, CLASS_INSTANCE_CONFLICT))
        elif not durable:
            failed.append((listed_class, listed_uid, statuses.PROCESSING_FAILURE))
        elif not (spool_dir / str(file_path)).is_file():  # purged by retention, or lost
            failed.append((listed_class, listed_uid, NO_SUCH_OBJECT_INSTANCE))
        else:
            committed.append((listed_class, listed_uid))
    return CommitmentAnswer(tuple(committed), tuple(failed))


def event_information(transaction_uid: str, answer: CommitmentAnswer) -> Dataset:
    info = Dataset()
    info.TransactionUID = transaction_uid
    if answer.committed:
        info.ReferencedSOPSequence = []
        for sop_class, sop_instance in answer.committed:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            info.ReferencedSOPSequence.append(item)
    if answer.failed:
        info.FailedSOPSequence = []
        for sop_class, sop_instance, reason in answer.failed:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            item.FailureReason = reason
            info.FailedSOPSequence.append(item)
    return info


class StorageCommitmentSCP:
    """The N-ACTION handler and the reporter that sends each N-EVENT-REPORT; one per
    listener process. The open associations of requests are held here (only here: a
    report for a closed one goes on a new association)."""

    def __init__(
        self,
        engine: Engine,
        settings: CompletionSettings,
        *,
        own_ae_title: str,
        spool_dir: Path,
        durable: bool,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.own_ae_title = own_ae_title
        self.spool_dir = spool_dir
        self.durable = durable
        self.token = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:128]
        self._lock = threading.Lock()
        self._associations: dict[str, Association] = {}
        self.wake = threading.Event()

    def handlers(self) -> list[tuple[evt.EventType, Any]]:
        return [
            (evt.EVT_N_ACTION, self.on_n_action),
            (evt.EVT_RELEASED, self.on_association_end),
            (evt.EVT_ABORTED, self.on_association_end),
            (evt.EVT_CONN_CLOSE, self.on_association_end),
        ]

    # N-ACTION ---------------------------------------------------------------------------
    def on_n_action(self, event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
        request: Any = event.request
        requestor = event.assoc.requestor
        actor, address = clipped(requestor.ae_title, 16), clipped(requestor.address, 64)
        transaction = ""
        try:
            if str(request.RequestedSOPClassUID) != STORAGE_COMMITMENT_SOP_CLASS:
                raise CommitmentRefusal(
                    statuses.PROCESSING_FAILURE,
                    f"expected SOP class {STORAGE_COMMITMENT_SOP_CLASS}, found "
                    f"{request.RequestedSOPClassUID}",
                )
            if str(request.RequestedSOPInstanceUID) != STORAGE_COMMITMENT_SOP_INSTANCE:
                raise CommitmentRefusal(
                    NO_SUCH_SOP_INSTANCE,
                    f"expected SOP instance {STORAGE_COMMITMENT_SOP_INSTANCE}, found "
                    f"{request.RequestedSOPInstanceUID}",
                )
            if request.ActionTypeID != REQUEST_COMMIT:
                raise CommitmentRefusal(
                    NO_SUCH_ACTION_TYPE,
                    f"expected Action Type ID {REQUEST_COMMIT}, found {request.ActionTypeID}",
                )
            transaction, listed = referenced_instances(event.action_information)
            self._keep(transaction, listed, actor, address)
            with self._lock:
                self._associations[transaction] = event.assoc
        except CommitmentRefusal as refusal:
            return self._refuse(actor, address, transaction, refusal), None
        except Exception as exc:
            unexpected = CommitmentRefusal(
                statuses.PROCESSING_FAILURE, f"unexpected {type(exc).__name__} in N-ACTION"
            )
            return self._refuse(actor, address, transaction, unexpected), None
        self.wake.set()  # the reporter answers once this response is out
        return statuses.SUCCESS, None

    def _keep(
        self, transaction: str, listed: list[ListedInstance], actor: str, address: str
    ) -> None:
        now = utcnow()
        answer_by = now + timedelta(seconds=self.settings.commitment_wait_s)
        with writer_queue(self.engine), self.engine.begin() as connection:
            commitment_id = connection.execute(
                insert_ignoring_duplicates(connection, StorageCommitment, ["transaction_uid"])
                .values(
                    transaction_uid=transaction,
                    calling_ae=actor,
                    source_address=address,
                    state="waiting",
                    requested_at=now,
                    answer_by=answer_by,
                    claimed_by=self.token,
                    claimed_at=now,
                    attempts=0,
                )
                .returning(StorageCommitment.id)
            ).scalar()
            if commitment_id is None:
                # The requester asks again (it never got our report): answer it again.
                commitment_id = connection.execute(
                    update(StorageCommitment)
                    .where(
                        StorageCommitment.transaction_uid == transaction,
                        StorageCommitment.calling_ae == actor,
                    )
                    .values(
                        state="waiting",
                        requested_at=now,
                        answer_by=answer_by,
                        claimed_by=self.token,
                        claimed_at=now,
                        attempts=0,
                        last_error=None,
                    )
                    .returning(StorageCommitment.id)
                ).scalar()
                if commitment_id is None:
                    raise CommitmentRefusal(
                        statuses.PROCESSING_FAILURE,
                        f"expected a new Transaction UID, found {transaction} from another AE",
                    )
            replace_listed(connection, listed, commitment_id=int(commitment_id))
            record(
                connection,
                audit_row(
                    AuditKind.COMMITMENT_REQUESTED,
                    actor=actor,
                    source_address=address,
                    detail={"transaction": transaction, "listed": len(listed)},
                    occurred_at=now,
                ),
            )

    def _refuse(
        self, actor: str, address: str, transaction: str, refusal: CommitmentRefusal
    ) -> Dataset:
        LOGGER.warning(
            "storage commitment from %s refused with 0x%04X: %s",
            actor,
            refusal.status,
            refusal.reason,
        )
        try:
            with writer_queue(self.engine), self.engine.begin() as connection:
                record(
                    connection,
                    audit_row(
                        AuditKind.COMMITMENT_REFUSED,
                        Outcome.FAILURE,
                        actor=actor,
                        source_address=address,
                        detail={
                            "transaction": transaction or None,
                            "status": f"0x{refusal.status:04X}",
                            "reason": refusal.reason,
                        },
                    ),
                )
        except Exception as exc:
            LOGGER.error("audit write failed: %s", type(exc).__name__)
        answer = Dataset()
        answer.Status = refusal.status
        answer.ErrorComment = refusal.reason[:64]
        return answer

    def on_association_end(self, event: evt.Event) -> None:
        """Its reports now go on a new association, sent by any listener process."""
        with self._lock:
            ended = [t for t, assoc in self._associations.items() if assoc is event.assoc]
            for transaction in ended:
                del self._associations[transaction]
        if not ended:
            return
        try:
            with writer_queue(self.engine), self.engine.begin() as connection:
                connection.execute(
                    update(StorageCommitment)
                    .where(
                        StorageCommitment.transaction_uid.in_(ended),
                        StorageCommitment.claimed_by == self.token,
                    )
                    .values(claimed_by=None)
                )
        except Exception as exc:  # the claim lapses after claim_lease_s anyway
            LOGGER.error("releasing commitment claims failed: %s", type(exc).__name__)
        self.wake.set()

    def _open_association(self, transaction: str) -> Association | None:
        with self._lock:
            assoc = self._associations.get(transaction)
        return assoc if assoc is not None and assoc.is_established else None

    # Reports ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.report_due()
            except Exception as exc:  # keep going: the database may come back
                LOGGER.error("storage commitment pass failed: %s", type(exc).__name__)
            self.wake.wait(self.settings.reporter_poll_s)
            self.wake.clear()

    def report_due(self) -> int:
        """Send every report that can be answered now; returns how many were sent."""
        now = utcnow()
        lease = now - timedelta(seconds=self.settings.claim_lease_s)
        retry = now - timedelta(seconds=self.settings.report_retry_s)
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(
                    StorageCommitment.id,
                    StorageCommitment.transaction_uid,
                    StorageCommitment.calling_ae,
                    StorageCommitment.answer_by,
                    StorageCommitment.claimed_by,
                    StorageCommitment.attempts,
                ).where(
                    StorageCommitment.state == "waiting",
                    or_(
                        StorageCommitment.claimed_by == self.token,
                        StorageCommitment.claimed_by.is_(None),
                        StorageCommitment.claimed_at < lease,
                    ),
                    or_(StorageCommitment.attempts == 0, StorageCommitment.claimed_at < retry),
                )
            ).all()
            answers = {}
            for row in rows:
                final = _aware(row.answer_by) <= now
                answers[row.id] = answer_commitment(
                    connection, row.id, self.spool_dir, durable=self.durable, final=final
                )
            connection.rollback()
        sent = 0
        for row in rows:
            answer = answers[row.id]
            if answer is None:
                if row.claimed_by == self.token and self._open_association(row.transaction_uid):
                    self._renew_claim(row.id)  # still ours: another process must not take it
                continue
            if not self._claim(row.id, row.claimed_by, now):
                continue
            sent += self._report(row.id, row.transaction_uid, row.calling_ae, row.attempts, answer)
        return sent

    def _renew_claim(self, commitment_id: int) -> None:
        with writer_queue(self.engine), self.engine.begin() as connection:
            connection.execute(
                update(StorageCommitment)
                .where(StorageCommitment.id == commitment_id)
                .values(claimed_at=utcnow())
            )

    def _claim(self, commitment_id: int, seen: str | None, now: Any) -> bool:
        with writer_queue(self.engine), self.engine.begin() as connection:
            holder = (
                StorageCommitment.claimed_by.is_(None)
                if seen is None
                else StorageCommitment.claimed_by == seen
            )
            return (
                connection.execute(
                    update(StorageCommitment)
                    .where(
                        and_(StorageCommitment.id == commitment_id, holder),
                        StorageCommitment.state == "waiting",
                    )
                    .values(claimed_by=self.token, claimed_at=now)
                ).rowcount
                == 1
            )

    def _report(
        self,
        commitment_id: int,
        transaction: str,
        calling_ae: str,
        attempts: int,
        answer: CommitmentAnswer,
    ) -> int:
        info = event_information(transaction, answer)
        assoc = self._open_association(transaction)
        via = "same association" if assoc is not None else "new association"
        try:
            if assoc is not None:
                status = self._send(assoc, info, answer.event_type)
            else:
                status = self._send_on_new_association(calling_ae, info, answer.event_type)
            error = None if status == statuses.SUCCESS else f"requester answered 0x{status:04X}"
        except ReportNotSent as exc:
            error = str(exc)
        now = utcnow()
        with writer_queue(self.engine), self.engine.begin() as connection:
            if error is None:
                connection.execute(
                    update(StorageCommitment)
                    .where(StorageCommitment.id == commitment_id)
                    .values(
                        state="reported",
                        event_type=answer.event_type,
                        failed_count=len(answer.failed),
                        reported_at=now,
                        reported_via=via,
                        attempts=attempts + 1,
                        last_error=None,
                        claimed_by=None,
                    )
                )
                record(
                    connection,
                    audit_row(
                        AuditKind.COMMITMENT_REPORTED,
                        actor=calling_ae,
                        detail={
                            "transaction": transaction,
                            "event_type": answer.event_type,
                            "committed": len(answer.committed),
                            "failed": len(answer.failed),
                            "via": via,
                        },
                        occurred_at=now,
                    ),
                )
                LOGGER.info(
                    "storage commitment %s reported (%d committed, %d failed) on the %s",
                    transaction,
                    len(answer.committed),
                    len(answer.failed),
                    via,
                )
                return 1
            gave_up = attempts + 1 >= self.settings.report_max_attempts
            connection.execute(
                update(StorageCommitment)
                .where(StorageCommitment.id == commitment_id)
                .values(
                    state="failed" if gave_up else "waiting",
                    attempts=attempts + 1,
                    last_error=error,
                    claimed_by=None,
                    claimed_at=now,  # the retry interval counts from here
                )
            )
            record(
                connection,
                audit_row(
                    AuditKind.COMMITMENT_REPORT_FAILED,
                    Outcome.FAILURE,
                    actor=calling_ae,
                    detail={
                        "transaction": transaction,
                        "attempt": attempts + 1,
                        "reason": error,
                        "gave_up": gave_up,
                    },
                    occurred_at=now,
                ),
            )
        LOGGER.warning("storage commitment report %s not sent: %s", transaction, error)
        return 0

    def _send(self, assoc: Association, info: Dataset, event_type: int) -> int:
        status, _reply = assoc.send_n_event_report(
            info, event_type, STORAGE_COMMITMENT_SOP_CLASS, STORAGE_COMMITMENT_SOP_INSTANCE
        )
        if "Status" not in status:
            raise ReportNotSent("expected an N-EVENT-REPORT response, found none (timeout)")
        return int(status.Status)

    def _send_on_new_association(self, calling_ae: str, info: Dataset, event_type: int) -> int:
        peer = self.settings.report_peer(calling_ae)
        if peer is None:
            raise ReportNotSent(
                f"requester's association closed and no completion.report_peers entry for "
                f"AE {calling_ae!r}: expected one to call it back, found none"
            )
        ae = AE(ae_title=self.own_ae_title)
        timeout = self.settings.report_timeout_s
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = timeout
        ae.add_requested_context(STORAGE_COMMITMENT_SOP_CLASS)
        # PS3.4 J.3.3: the SCP opening the association proposes the SCP role for the class.
        role = build_role(STORAGE_COMMITMENT_SOP_CLASS, scu_role=False, scp_role=True)
        try:
            assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, ext_neg=[role])
            if not assoc.is_established:
                raise ReportNotSent(
                    f"expected {peer.ae_title} at {peer.host}:{peer.port} to accept an "
                    "association for the report, found it rejected or unreachable"
                )
            try:
                return self._send(assoc, info, event_type)
            finally:
                if assoc.is_established:
                    assoc.release()
        finally:
            ae.shutdown()


class ReportNotSent(Exception):
    pass


def _aware(value: Any) -> Any:
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def commitment_contexts() -> Sequence[str]:
    return (STORAGE_COMMITMENT_SOP_CLASS,)
