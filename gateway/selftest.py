"""`pacs-gateway selftest`: a synthetic phantom study through the running gateway.

Sends the study by C-STORE, receives the SEG and SR at the destination named `selftest`
(this command is that destination, a Storage SCP on its host and port), checks them and
prints how long each stage took. `--modality DX` sends a chest radiograph with a nodule
instead (a rule must route DX to `chest_xray_nodule`) and checks its SR (no SEG)."""

from __future__ import annotations

import queue
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    SegmentationStorage,
)
from sqlalchemy import select

from gateway.database import make_engine
from gateway.delivery.config import DicomDestination
from gateway.models import TERMINAL_JOB_STATES, Job, Study
from gateway.phantom import make_phantom, write_ct_series
from gateway.phantom.radiograph import make_radiograph
from gateway.phantom.radiograph_dicom import write_radiograph
from gateway.results.reading import reported_image_findings
from gateway.settings import GatewaySettings

SELFTEST_DESTINATION = "selftest"
SELFTEST_AE = "SELFTEST"
SELFTEST_RADIOGRAPH_SEED = 15100
"""A radiograph whose nodule the chest_xray_nodule model finds (its card's check seeds)."""
STAGES = ("queue_wait", "load_preprocess", "inference", "postprocess", "results_build", "delivery")


class SelftestFailed(Exception):
    pass


def _destination(settings: GatewaySettings) -> DicomDestination:
    for destination in settings.destinations:
        if destination.name == SELFTEST_DESTINATION and isinstance(destination, DicomDestination):
            return destination
    raise SelftestFailed(
        f"expected a DICOM destination named {SELFTEST_DESTINATION!r} in the settings "
        f"(see deploy/gateway.local.toml), found {settings.destination_names}"
    )


def _send_study(
    settings: GatewaySettings, paths: list[Path], sop_class: str = CTImageStorage
) -> None:
    ae = AE(ae_title=SELFTEST_AE)
    ae.add_requested_context(sop_class)
    host = "127.0.0.1" if settings.dicom.host in ("0.0.0.0", "::") else settings.dicom.host
    assoc = ae.associate(host, settings.dicom.port, ae_title=settings.dicom.ae_title)
    if not assoc.is_established:
        raise SelftestFailed(
            f"expected the gateway to accept an association on {host}:{settings.dicom.port} "
            f"(AE {settings.dicom.ae_title}), found it refused or unreachable: is it running?"
        )
    try:
        for path in paths:
            status = assoc.send_c_store(path)
            if status.get("Status") != 0x0000:
                raise SelftestFailed(
                    f"expected C-STORE status 0x0000, found {status.get('Status')!r}"
                )
    finally:
        assoc.release()


def run_selftest(
    settings: GatewaySettings, timeout_s: float | None = None, modality: str = "CT"
) -> int:
    try:
        report = selftest(settings, timeout_s, modality)
    except SelftestFailed as exc:
        print(f"selftest FAILED: {exc}")
        return 1
    print("selftest passed")
    for line in report:
        print("  " + line)
    return 0


def selftest(
    settings: GatewaySettings, timeout_s: float | None = None, modality: str = "CT"
) -> list[str]:
    destination = _destination(settings)
    received: queue.Queue[Dataset] = queue.Queue()

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.put(ds)
        return 0x0000

    scp = AE(ae_title=destination.ae_title)
    for sop_class in (SegmentationStorage, Comprehensive3DSRStorage):
        scp.add_supported_context(sop_class)
    server = scp.start_server(
        (destination.host, destination.port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert server is not None  # block=False returns the server
    if modality == "DX":
        try:
            return _selftest_radiograph(settings, received, timeout_s)
        finally:
            server.shutdown()
    if modality != "CT":
        server.shutdown()
        raise SelftestFailed(f"expected modality CT or DX, found {modality!r}")
    try:
        with tempfile.TemporaryDirectory(prefix="pacs-gateway-selftest-") as tmp:
            phantom = make_phantom(
                int(time.time()) % 100_000,
                shape=(48, 256, 256),
                spacing=(2.5, 1.2, 1.2),
                n_nodules=2,
                nodule_diameter_mm=(12.0, 20.0),
            )
            paths = write_ct_series(phantom, Path(tmp))
            study_uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
            started = time.monotonic()
            _send_study(settings, paths)
            sent_s = time.monotonic() - started
            limit = timeout_s or settings.assembly.quiet_period_s + 600
            objects = _wait_for_results(received, study_uid, started + limit)
            total_s = time.monotonic() - started
    finally:
        server.shutdown()
    seg, sr = objects["SEG"], objects["SR"]
    groups = sr.content.get_volumetric_roi_measurement_groups()
    nodule_segments = [n for n in seg.segment_numbers if n > 1]
    if len(groups) != len(nodule_segments):
        raise SelftestFailed(
            f"expected one SR group per nodule segment ({len(nodule_segments)}), "
            f"found {len(groups)}"
        )
    if not groups:
        raise SelftestFailed(
            f"expected the {len(phantom.nodules)} phantom nodule(s) found, found none"
        )
    report = [
        f"study {study_uid}: {len(paths)} CT slices sent in {sent_s:.1f} s",
        f"SEG ({seg.NumberOfFrames} frames, {len(seg.segment_numbers)} segments) and SR "
        f"({len(groups)} nodule(s); phantom has {len(phantom.nodules)}) received "
        f"{total_s:.1f} s after the first instance was sent",
    ]
    report += _stage_report(settings, study_uid)
    return report


def _selftest_radiograph(
    settings: GatewaySettings, received: queue.Queue[Dataset], timeout_s: float | None
) -> list[str]:
    """A PA chest radiograph with one nodule as a DX study: its SR (no SEG) must say
    Present and draw at least one region on the image."""
    with tempfile.TemporaryDirectory(prefix="pacs-gateway-selftest-") as tmp:
        radiograph = make_radiograph(
            SELFTEST_RADIOGRAPH_SEED,
            view_position="PA",
            n_nodules=1,
            nodule_diameter_mm=(16.0, 24.0),
            long_side_px=1000,
        )
        path = write_radiograph(radiograph, Path(tmp) / "dx.dcm", modality="DX")
        study_uid = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        started = time.monotonic()
        _send_study(settings, [path], DigitalXRayImageStorageForPresentation)
        limit = timeout_s or settings.assembly.quiet_period_s + 600
        sr = _wait_for_results(received, study_uid, started + limit, ("SR",))["SR"]
        total_s = time.monotonic() - started
    regions = sr.content.get_planar_roi_measurement_groups()
    evaluations = ["Present" if f.present else "Absent" for f in reported_image_findings(sr)]
    if evaluations != ["Present"] or not regions:
        raise SelftestFailed(
            f"expected the nodule Present with a region on the radiograph, found "
            f"{evaluations} and {len(regions)} region(s)"
        )
    report = [
        f"study {study_uid}: 1 DX image sent",
        f"SR ({len(regions)} region(s) on the radiograph) received {total_s:.1f} s after the "
        "image was sent",
    ]
    return report + _stage_report(settings, study_uid)


def _wait_for_results(
    received: queue.Queue[Dataset],
    study_uid: str,
    deadline: float,
    wanted: tuple[str, ...] = ("SEG", "SR"),
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    while set(found) != set(wanted):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SelftestFailed(
                f"expected {' and '.join(wanted)} for the study, found "
                f"{sorted(found) or 'nothing'} "
                "before the deadline (see `pacs-gateway jobs` and the gateway log)"
            )
        try:
            ds = received.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            continue
        if str(ds.StudyInstanceUID) != study_uid:
            continue
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        if ds.Modality == "SEG":
            found["SEG"] = hd.seg.segread(buffer)
        elif ds.Modality == "SR":
            found["SR"] = hd.sr.srread(buffer)
    return found


def _stage_report(settings: GatewaySettings, study_uid: str) -> list[str]:
    engine = make_engine(settings)
    # The objects can arrive here a moment before the worker records the job delivered.
    deadline = time.monotonic() + 15
    try:
        while True:
            with engine.connect() as connection:
                study = connection.execute(
                    select(Study.last_received_at, Study.completed_at).where(
                        Study.study_instance_uid == study_uid
                    )
                ).one_or_none()
                job = connection.execute(
                    select(Job.id, Job.state, Job.stage_seconds, Job.created_at).where(
                        Job.study_instance_uid == study_uid
                    )
                ).first()
            if job is None or job.state in TERMINAL_JOB_STATES or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        engine.dispose()
    lines = []
    if study is not None and study.completed_at is not None:
        waited = (study.completed_at - study.last_received_at).total_seconds()
        lines.append(f"assembly (quiet period): {waited:.1f} s")
    if job is not None:
        stages = job.stage_seconds or {}
        lines.append(f"job {job.id}: {job.state.value}")
        lines += [f"{name}: {stages[name]:.2f} s" for name in STAGES if name in stages]
    return lines
