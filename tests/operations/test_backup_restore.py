"""Backup and restore, the documented procedure (scripts/backup.sh, scripts/restore.sh, then
`pacs-gateway migrate`), on the real PostgreSQL (pg_dump custom format) and on SQLite (the
online backup API, taken while the gateway runs and its WAL holds the latest commits): the
studies, jobs and audit log come back equal, the spool files byte-identical, the schema is
current and the audit log is still append-only. A damaged backup or a used data dir is
refused."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url, select, text
from sqlalchemy.exc import DatabaseError

from gateway.database import make_engine
from gateway.jobs.control import cancel_job
from gateway.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Series,
    Study,
)
from gateway.service import check_schema_current
from tests.conftest import REPO, RunningGateway, make_settings, settings_environment
from tests.operations.scene import Scene, StoredStudy
from tests.pipeline.harness import wait_until
from tests.routing.studies import SeriesSpec, send_study

SCRIPTS = REPO / "scripts"
SERIES = [SeriesSpec(1, 12), SeriesSpec(2, 8)]


@pytest.fixture
def fresh_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """Where the backup is restored: a new SQLite file, or a new PostgreSQL database."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'gateway.db'}"
        return
    url = make_url(database_url)
    name = f"{url.database}_restored"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """The rows a restore must bring back, in a stable order."""
    queries = {
        "studies": select(
            Study.study_instance_uid, Study.state, Study.instance_count, Study.completion_count
        ).order_by(Study.id),
        "series": select(Series.series_instance_uid, Series.instance_count).order_by(Series.id),
        "instances": select(
            Instance.sop_instance_uid, Instance.file_path, Instance.size_bytes
        ).order_by(Instance.id),
        "jobs": select(Job.id, Job.study_instance_uid, Job.state, Job.pipeline).order_by(Job.id),
        "deliveries": select(Delivery.sop_instance_uid, Delivery.state).order_by(Delivery.id),
        "audit": select(
            AuditEvent.id,
            AuditEvent.kind,
            AuditEvent.outcome,
            AuditEvent.actor,
            AuditEvent.study_instance_uid,
            AuditEvent.sop_instance_uid,
            AuditEvent.detail,
        ).order_by(AuditEvent.id),
    }
    with engine.connect() as connection:
        return {
            name: [tuple(r) for r in connection.execute(q).all()] for name, q in queries.items()
        }


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_backup_then_restore_into_a_fresh_install(
    tmp_path: Path,
    database_url: str,
    engine: Engine,
    start_gateway: Any,
    fresh_database_url: str,
) -> None:
    settings = make_settings(tmp_path / "data", database_url)
    gateway: RunningGateway = start_gateway(settings)
    # Real state: a study through the DICOM listener (spool files, rows, audit), a job
    # delivered to the PACS and one an operator cancelled.
    sent = send_study(gateway, tmp_path / "sent", SERIES)
    wait_until(
        lambda: Scene(settings, engine).study_row(sent.study_uid).completion_count == 1,
        30,
        "the study complete",
    )
    scene = Scene(settings, engine)
    study = StoredStudy(sent.study_uid, sent.series_uids[1], {})
    scene.job(study, JobState.DELIVERED)
    scene.delivery(study, DeliveryState.DELIVERED)
    cancel_job(engine, scene.job(study, JobState.QUEUED, pipeline="other"), "operator")
    (settings.data_dir / "web-secret").write_text(secrets.token_urlsafe(48))
    before = snapshot(engine)
    assert len(before["instances"]) == 20 and len(before["jobs"]) == 2
    assert {"instance.stored", "study.complete", "job.cancelled"} <= {
        row[1] for row in before["audit"]
    }

    backup_dir = tmp_path / "backup"
    started = time.monotonic()
    env = {**os.environ, "PYTHON": sys.executable}
    run(SCRIPTS / "backup.sh", settings.data_dir, backup_dir, database_url, env=env)  # live
    backup_s = time.monotonic() - started
    gateway.stop()
    original_files = files(settings.data_dir / "spool")
    assert len(original_files) == 20

    restored_dir = tmp_path / "restored"
    started = time.monotonic()
    run(SCRIPTS / "restore.sh", backup_dir, restored_dir, fresh_database_url, env=env)
    restored = make_settings(restored_dir, fresh_database_url)
    run(sys.executable, "-m", "gateway.cli", "migrate", env=settings_environment(restored))
    restore_s = time.monotonic() - started
    print(f"backup {backup_s:.2f} s, restore + migrate {restore_s:.2f} s for 20 instances")

    restored_engine = make_engine(restored)
    try:
        check_schema_current(restored, restored_engine)
        assert snapshot(restored_engine) == before
        assert files(restored.spool_dir) == original_files  # byte-identical, nothing extra
        assert (restored_dir / "web-secret").read_bytes() == (
            settings.data_dir / "web-secret"
        ).read_bytes()
        with (
            pytest.raises(DatabaseError, match="append-only"),
            restored_engine.begin() as connection,
        ):
            connection.execute(text("DELETE FROM audit_events"))
    finally:
        restored_engine.dispose()


def test_restore_refuses_a_damaged_backup_and_a_used_data_dir(
    tmp_path: Path, settings: Any, engine: Engine
) -> None:
    scene = Scene(settings, engine)
    scene.study(2)
    backup_dir = tmp_path / "backup"
    env = {**os.environ, "PYTHON": sys.executable}
    run(SCRIPTS / "backup.sh", settings.data_dir, backup_dir, settings.sqlalchemy_url, env=env)

    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    refused = subprocess.run(
        [SCRIPTS / "restore.sh", backup_dir, used, f"sqlite:///{tmp_path / 'other.db'}"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "expected an empty or missing data dir" in refused.stderr

    tar = backup_dir / "data.tar"
    data = bytearray(tar.read_bytes())
    data[1000] ^= 0xFF
    tar.write_bytes(bytes(data))
    damaged = subprocess.run(
        [SCRIPTS / "restore.sh", backup_dir, tmp_path / "fresh", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True,
        text=True,
    )
    assert damaged.returncode == 1 and "match SHA256SUMS" in damaged.stderr
    assert not (tmp_path / "x.db").exists()
