"""Parallel senders, a listener killed mid-study, and study assembly across restarts."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import Engine, func, select

from gateway.audit import utcnow
from gateway.models import AuditEvent, Instance, Study, StudyState
from gateway.settings import GatewaySettings
from tests.conftest import GATEWAY_AE, GatewayProcess
from tests.db_queries import audit_kinds, instance_rows, study
from tests.dicom_samples import dataset_offset, write_series
from tests.scu import association, raw_file_sending


def wait_until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"expected {what} within {timeout_s}s, found it did not happen")


def study_state(engine: Engine, study_uid: str) -> StudyState | None:
    row = study(engine, study_uid)
    return None if row is None else row.state


@pytest.mark.slow
def test_eight_parallel_storescu_associations(
    gateway_process: GatewayProcess, engine: Engine, tmp_path: Path
) -> None:
    folders = [tmp_path / f"sender{n}" for n in range(8)]
    for folder in folders:
        write_series(folder, 50)
    senders = [
        subprocess.Popen(
            [
                "storescu",
                "-aet",
                f"MOD{n}",
                "-aec",
                GATEWAY_AE,
                "+sd",
                "127.0.0.1",
                str(gateway_process.settings.dicom.port),
                str(folder),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for n, folder in enumerate(folders)
    ]
    outputs = [sender.communicate(timeout=120)[0].decode() for sender in senders]
    assert [sender.returncode for sender in senders] == [0] * 8, outputs
    rows = instance_rows(engine)
    assert len(rows) == 400
    sent = {
        str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        for folder in folders
        for path in folder.iterdir()
    }
    assert set(rows) == sent
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Study)).scalar() == 8
        assert connection.execute(select(func.sum(Study.instance_count))).scalar() == 400
    kinds = audit_kinds(engine)
    assert kinds["instance.stored"] == 400
    assert kinds["instance.refused"] == kinds["instance.duplicate"] == 0
    files = [p for p in gateway_process.settings.spool_dir.rglob("*") if p.is_file()]
    assert len(files) == 400


def _send_until_killed(
    port: int, paths: list[Path], acknowledged: list[Path], errors: list[str]
) -> None:
    try:
        with raw_file_sending(), association(port, paths[:1]) as assoc:
            for path in paths:
                status = assoc.send_c_store(path)
                if "Status" in status and status.Status == 0:
                    acknowledged.append(path)
                else:
                    return
    except Exception as exc:  # the connection dies with the listener
        errors.append(type(exc).__name__)


@pytest.mark.slow
def test_sigkill_mid_study_loses_nothing_acknowledged(
    settings: GatewaySettings, engine: Engine, tmp_path: Path
) -> None:
    paths = write_series(tmp_path / "study", 400, rows=128, columns=128)
    study_uid = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    gateway = GatewayProcess(settings, tmp_path)
    gateway.start()
    acknowledged: list[Path] = []
    errors: list[str] = []
    sender = threading.Thread(
        target=_send_until_killed, args=(settings.dicom.port, paths, acknowledged, errors)
    )
    sender.start()
    wait_until(lambda: len(acknowledged) >= 60, 60, "60 acknowledged instances")
    gateway.kill()
    sender.join(timeout=60)
    assert 60 <= len(acknowledged) < len(paths), "the kill should land mid-study"

    # Every acknowledged instance is on disk, complete, and indexed.
    rows = instance_rows(engine)
    for path in acknowledged:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert uid in rows, f"acknowledged instance {path.name} lost"
        stored = (settings.spool_dir / rows[uid].file_path).read_bytes()
        source = path.read_bytes()
        assert stored[dataset_offset(stored) :] == source[dataset_offset(source) :]
    # Nothing under a final name is incomplete: every *.dcm parses to its pixel data.
    for dcm in settings.spool_dir.rglob("*.dcm"):
        assert len(dcmread(dcm).PixelData) == 128 * 128 * 2, dcm.name

    # The sender retries everything after the restart: the study ends whole, once.
    gateway.start()
    try:
        with raw_file_sending(), association(settings.dicom.port, paths[:1]) as assoc:
            results = [assoc.send_c_store(path).Status for path in paths]
        assert set(results) == {0}
        assert len(instance_rows(engine)) == len(paths)
        wait_until(
            lambda: study_state(engine, study_uid) == StudyState.COMPLETE,
            30,
            "the study to complete",
        )
        kinds = audit_kinds(engine)
        assert kinds["instance.duplicate"] >= len(acknowledged)
        # The partial study may complete once while nothing arrives (the restart); the
        # resent rest reopens it, and the last completion holds every instance.
        with engine.connect() as connection:
            last = connection.execute(
                select(AuditEvent.detail)
                .where(AuditEvent.kind == "study.complete")
                .order_by(AuditEvent.id.desc())
            ).first()
        assert last is not None and last.detail["instances"] == len(paths)
    finally:
        gateway.stop()


def test_restart_completes_studies_whose_quiet_period_passed_while_down(
    settings: GatewaySettings, engine: Engine, tmp_path: Path
) -> None:
    slow = settings.model_copy(
        update={"assembly": settings.assembly.model_copy(update={"quiet_period_s": 3.0})}
    )
    paths = write_series(tmp_path / "study", 5)
    study_uid = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    gateway = GatewayProcess(slow, tmp_path)
    gateway.start()
    with raw_file_sending(), association(slow.dicom.port, paths[:1]) as assoc:
        assert [assoc.send_c_store(p).Status for p in paths] == [0] * 5
    gateway.kill()  # before the quiet period ends
    assert study_state(engine, study_uid) == StudyState.RECEIVING
    time.sleep(3.5)
    gateway.start()
    try:
        wait_until(lambda: study_state(engine, study_uid) == StudyState.COMPLETE, 10, "completion")
    finally:
        gateway.stop()


def _aware(moment: datetime | None) -> datetime:
    """SQLite hands back naive datetimes; the gateway writes UTC."""
    assert moment is not None, "expected a timestamp, found none"
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def test_restart_keeps_the_quiet_period_of_studies_still_arriving(
    settings: GatewaySettings, engine: Engine, tmp_path: Path
) -> None:
    """Start-up must not complete an open study early: after a restart, a study whose quiet
    period has not passed completes only once it has. Study `early` is a probe: it was sent
    `head_start_s` earlier, so its completion after the restart shows an assembly pass ran
    while `late` was still within its period."""
    quiet_s, head_start_s = 6.0, 3.5
    slow = settings.model_copy(
        update={"assembly": settings.assembly.model_copy(update={"quiet_period_s": quiet_s})}
    )
    early_paths = write_series(tmp_path / "early", 3)
    late_paths = write_series(tmp_path / "late", 3)
    early, late = (
        str(dcmread(p[0], stop_before_pixels=True).StudyInstanceUID)
        for p in (early_paths, late_paths)
    )
    gateway = GatewayProcess(slow, tmp_path)
    gateway.start()
    with raw_file_sending(), association(slow.dicom.port, early_paths[:1]) as assoc:
        assert [assoc.send_c_store(p).Status for p in early_paths] == [0] * 3
    early_row = study(engine, early)
    assert early_row is not None
    early_ends = _aware(early_row.last_received_at) + timedelta(seconds=quiet_s)
    # Not a wait for something to (not) happen: it only ages `early` against `late`.
    time.sleep(head_start_s)
    with raw_file_sending(), association(slow.dicom.port, late_paths[:1]) as assoc:
        assert [assoc.send_c_store(p).Status for p in late_paths] == [0] * 3
    gateway.kill()  # before either quiet period ends
    late_row = study(engine, late)
    assert late_row is not None and late_row.state == StudyState.RECEIVING
    assert study_state(engine, early) == StudyState.RECEIVING
    late_ends = _aware(late_row.last_received_at) + timedelta(seconds=quiet_s)
    gateway.start()
    try:
        wait_until(
            lambda: study_state(engine, early) == StudyState.COMPLETE,
            quiet_s + 10,
            "the probe study to complete after the restart",
        )
        late_state = study_state(engine, late)
        read_by = utcnow()
        assert read_by < late_ends, (
            f"expected the restart and a first assembly pass before {late_ends:%H:%M:%S.%f}, "
            f"found the first completion seen at {read_by:%H:%M:%S.%f}: too slow to tell"
        )
        # A pass ran while `late` was within its quiet period, and left it open.
        assert late_state == StudyState.RECEIVING, (
            f"expected {late} still receiving at {read_by:%H:%M:%S.%f}, before its quiet "
            f"period ends at {late_ends:%H:%M:%S.%f}, found {late_state}"
        )
        early_row = study(engine, early)
        assert early_row is not None
        early_done = _aware(early_row.completed_at)
        assert early_done >= early_ends, (
            f"expected the probe study complete after its quiet period ended at "
            f"{early_ends:%H:%M:%S.%f}, found it completed at {early_done:%H:%M:%S.%f}"
        )
        wait_until(
            lambda: study_state(engine, late) == StudyState.COMPLETE,
            quiet_s + 10,
            "the late study to complete once its quiet period passed",
        )
        late_row = study(engine, late)
        assert late_row is not None
        late_done = _aware(late_row.completed_at)
        assert late_done >= late_ends, (
            f"expected the study complete after its quiet period ended at "
            f"{late_ends:%H:%M:%S.%f}, found it completed at {late_done:%H:%M:%S.%f}"
        )
    finally:
        gateway.stop()


def test_late_instance_reopens_a_complete_study(gateway, engine: Engine, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "study", 4)
    study_uid = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    with raw_file_sending(), association(gateway.port, paths) as assoc:
        assert [assoc.send_c_store(p).Status for p in paths[:3]] == [0] * 3
    wait_until(lambda: study_state(engine, study_uid) == StudyState.COMPLETE, 10, "completion")
    with raw_file_sending(), association(gateway.port, paths) as assoc:
        assert assoc.send_c_store(paths[3]).Status == 0
    assert study_state(engine, study_uid) == StudyState.UPDATED
    wait_until(lambda: study_state(engine, study_uid) == StudyState.COMPLETE, 10, "re-completion")
    row = study(engine, study_uid)
    assert row is not None and row.completion_count == 2 and row.instance_count == 4
    kinds = audit_kinds(engine)
    assert kinds["study.complete"] == 2 and kinds["study.updated"] == 1
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Instance)).scalar() == 4
