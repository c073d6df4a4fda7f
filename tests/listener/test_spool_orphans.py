"""Spool hygiene: a spool file that no instance row names (left by a failed commit) is
removed once older than `storage.orphan_grace_s`, with one audit event per pass; a file a
row names is never touched, however old, and a fresh orphan waits for its grace period."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select

from gateway.models import AuditEvent, Instance
from gateway.settings import GatewaySettings
from gateway.spool_hygiene import SpoolHygiene
from tests.conftest import RunningGateway, make_settings
from tests.pipeline.harness import wait_until
from tests.routing.studies import SeriesSpec, send_study

GRACE_S = 3600.0


def age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def orphan_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            dict(detail or {}, actor=actor, outcome=outcome)
            for actor, outcome, detail in connection.execute(
                select(AuditEvent.actor, AuditEvent.outcome, AuditEvent.detail)
                .where(AuditEvent.kind == "spool.orphans_removed")
                .order_by(AuditEvent.id)
            ).all()
        ]


def indexed_paths(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(select(Instance.file_path)).scalars())


class SpoolScene:
    """A stored study (rows and files) plus orphans as a failed commit leaves them."""

    def __init__(self, gateway: RunningGateway, engine: Engine, tmp_path: Path) -> None:
        spool = gateway.settings.spool_dir
        sent = send_study(gateway, tmp_path / "study", [SeriesSpec(1, 3)])
        self.indexed = indexed_paths(engine)
        assert len(self.indexed) == 3
        study_dir = (spool / self.indexed[0]).parent
        source = sent.paths[sent.series_uids[1]][0]
        # The final file of an instance whose row never committed, in the stored series...
        self.old_orphan = study_dir / f"{generate_uid()}.dcm"
        # ... one in a study of its own, a writer's temporary file, and a fresh orphan.
        lone = spool / generate_uid() / generate_uid()
        lone.mkdir(parents=True)
        self.lone_orphan = lone / f"{generate_uid()}.dcm"
        self.stale_tmp = study_dir / f".{generate_uid()}.4242.99.tmp"
        self.fresh_orphan = study_dir / f"{generate_uid()}.dcm"
        for path in (self.old_orphan, self.lone_orphan, self.stale_tmp, self.fresh_orphan):
            path.write_bytes(source.read_bytes())
        for path in (self.old_orphan, self.lone_orphan, self.stale_tmp):
            age(path, GRACE_S + 60)
        for relative in self.indexed:  # rows name them: kept however old
            age(spool / relative, GRACE_S * 10)
        self.spool = spool

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.spool))


def test_orphans_past_the_grace_period_are_removed_and_audited(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    scene = SpoolScene(gateway, engine, tmp_path)
    result = SpoolHygiene(gateway.settings, engine).sweep()
    removed = sorted(
        scene.relative(p) for p in (scene.old_orphan, scene.lone_orphan, scene.stale_tmp)
    )
    assert sorted(result.removed) == removed
    assert not any(p.exists() for p in (scene.old_orphan, scene.lone_orphan, scene.stale_tmp))
    assert scene.fresh_orphan.is_file(), "a fresh orphan may still get its row: kept"
    for relative in scene.indexed:
        assert (scene.spool / relative).is_file(), f"{relative} is named by a row: kept"
        pydicom.dcmread(scene.spool / relative)  # and whole
    assert indexed_paths(engine) == scene.indexed
    (event,) = orphan_events(engine)
    assert event["count"] == 3 and sorted(event["paths"]) == removed
    assert event["bytes"] == result.removed_bytes > 0
    assert event["actor"] == "spool-hygiene" and event["outcome"] == "success"
    # A second pass finds nothing and writes nothing.
    assert SpoolHygiene(gateway.settings, engine).sweep().removed == []
    assert len(orphan_events(engine)) == 1
    # Once past its grace period, the fresh orphan goes too.
    age(scene.fresh_orphan, GRACE_S + 1)
    assert SpoolHygiene(gateway.settings, engine).sweep().removed == [
        scene.relative(scene.fresh_orphan)
    ]
    assert len(orphan_events(engine)) == 2


def test_the_running_gateway_sweeps_its_spool(
    settings: GatewaySettings,
    engine: Engine,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    tmp_path: Path,
) -> None:
    configured = make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        storage={"orphan_grace_s": GRACE_S, "orphan_sweep_interval_s": 0.2},
    )
    gateway = start_gateway(configured)
    scene = SpoolScene(gateway, engine, tmp_path)
    wait_until(lambda: not scene.old_orphan.exists(), 20, "the gateway to remove the orphan")
    wait_until(lambda: orphan_events(engine), 10, "the audit event of the pass")
    assert not scene.lone_orphan.exists() and not scene.stale_tmp.exists()
    assert scene.fresh_orphan.is_file()
    assert all((scene.spool / r).is_file() for r in scene.indexed)
