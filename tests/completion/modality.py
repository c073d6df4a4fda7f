"""A modality simulator for the completion tests: a pynetdicom SCU that stores a study, then
reports it with MPPS (N-CREATE, N-SET) or asks for storage commitment (N-ACTION) and
collects the N-EVENT-REPORT, on the same association or on one the gateway opens."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association

from gateway.dicom.mpps import MPPS_SOP_CLASS
from gateway.dicom.storage_commitment import (
    STORAGE_COMMITMENT_SOP_CLASS,
    STORAGE_COMMITMENT_SOP_INSTANCE,
)
from tests.conftest import GATEWAY_AE
from tests.dicom_samples import ct_instance, encode
from tests.scu import send_files

MODALITY_AE = "CTSCANNER1"


@dataclass
class Study:
    study_uid: str
    series: dict[str, list[Path]]  # series UID -> its files, in order
    sop_uids: dict[Path, str] = field(default_factory=dict)

    def listed(self) -> dict[str, list[tuple[str, str]]]:
        return {
            series: [(str(CTImageStorage), self.sop_uids[p]) for p in paths]
            for series, paths in self.series.items()
        }


def make_study(
    folder: Path, counts: Sequence[int], images_in_acquisition: Sequence[int | None] | None = None
) -> Study:
    study_uid = generate_uid()
    study = Study(study_uid, {})
    for number, count in enumerate(counts, start=1):
        series_uid = generate_uid()
        paths = []
        for index in range(count):
            ds = ct_instance(study_uid, series_uid, index, rows=8, columns=8)
            ds.SeriesNumber = number
            ds.AcquisitionNumber = 1
            if images_in_acquisition is not None and images_in_acquisition[number - 1]:
                ds.ImagesInAcquisition = images_in_acquisition[number - 1]
            path = folder / study_uid / f"{number}-{index:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode(ds))
            study.sop_uids[path] = str(ds.SOPInstanceUID)
            paths.append(path)
        study.series[series_uid] = paths
    return study


def store(port: int, paths: list[Path], calling_ae: str = MODALITY_AE) -> None:
    statuses = send_files(port, paths, calling_ae=calling_ae)
    assert statuses == [0] * len(paths), f"expected every C-STORE to succeed, found {statuses}"


@contextmanager
def mpps_association(port: int, calling_ae: str = MODALITY_AE) -> Iterator[Association]:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(MPPS_SOP_CLASS)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def n_create(assoc: Association, mpps_uid: str, study_uid: str, status: str = "IN PROGRESS") -> int:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.Modality = "CT"
    ds.PerformedProcedureStepID = "PPS1"
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber = ""
    ds.ScheduledStepAttributesSequence = [item]
    ds.PerformedSeriesSequence = []
    answer, _ = assoc.send_n_create(ds, MPPS_SOP_CLASS, mpps_uid)
    return int(answer.Status)


def n_set(
    assoc: Association,
    mpps_uid: str,
    status: str,
    listed: dict[str, list[tuple[str, str]]] | None = None,
    reason: str | None = None,
) -> tuple[int, str]:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    if listed is not None:
        ds.PerformedSeriesSequence = []
        for series_uid, instances in listed.items():
            series = Dataset()
            series.SeriesInstanceUID = series_uid
            series.ReferencedImageSequence = []
            for sop_class, sop_instance in instances:
                image = Dataset()
                image.ReferencedSOPClassUID = sop_class
                image.ReferencedSOPInstanceUID = sop_instance
                series.ReferencedImageSequence.append(image)
            ds.PerformedSeriesSequence.append(series)
    if reason is not None:
        code = Dataset()
        code.CodeValue = "110514"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = reason
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = [code]
    answer, _ = assoc.send_n_set(ds, MPPS_SOP_CLASS, mpps_uid)
    return int(answer.Status), str(answer.get("ErrorComment", ""))


@dataclass
class Reports:
    """N-EVENT-REPORTs the simulator received: (event type, dataset, on which association)."""

    received: list[tuple[int, Dataset, str]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def handler(self, where: str) -> object:
        def _on_report(event: evt.Event) -> tuple[int, None]:
            self.received.append((int(event.event_type), event.event_information, where))
            self.arrived.set()
            return 0x0000, None

        return _on_report

    def wait(self, timeout_s: float) -> tuple[int, Dataset, str]:
        assert self.arrived.wait(timeout_s), f"expected an N-EVENT-REPORT within {timeout_s} s"
        return self.received[0]


def commitment_request(transaction_uid: str, instances: Sequence[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = []
    for sop_class, sop_instance in instances:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        ds.ReferencedSOPSequence.append(item)
    return ds


@contextmanager
def commitment_association(
    port: int, reports: Reports, calling_ae: str = MODALITY_AE
) -> Iterator[Association]:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STORAGE_COMMITMENT_SOP_CLASS)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title=GATEWAY_AE,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler("same association"))],
    )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def n_action(assoc: Association, request: Dataset) -> int:
    status, _ = assoc.send_n_action(
        request, 1, STORAGE_COMMITMENT_SOP_CLASS, STORAGE_COMMITMENT_SOP_INSTANCE
    )
    return int(status.Status)


@contextmanager
def report_listener(port: int, reports: Reports, ae_title: str = MODALITY_AE) -> Iterator[None]:
    """The modality's own SCP side: takes the report on an association the gateway opens."""
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(STORAGE_COMMITMENT_SOP_CLASS, scu_role=True, scp_role=True)
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler("new association"))],
    )
    try:
        yield
    finally:
        server.shutdown()
        ae.shutdown()
