"""A sender that dies mid-series, the issue's own example: the first 37 of 300 slices sent in
order, no Images in Acquisition, so nothing in what arrived shows a gap. How its association
ended does: without A-RELEASE (the sender's A-ABORT, a killed DCMTK storescu) the series is
marked interrupted and its study held with the reason, until the sender sends the series again
on an association it releases. Real listener, real senders; SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from gateway.jobs.router import StudyRouter
from gateway.models import AuditEvent, Series, Study
from gateway.settings import GatewaySettings
from gateway.web.users import Role, create_user
from tests.conftest import GATEWAY_AE, RunningGateway, make_settings
from tests.routing.test_series_completeness import RULES, Scan, Sent, Site, new_scan, z_uniform
from tests.scu import association, raw_file_sending
from tests.web.conftest import PASSWORD

SLICES = 300
FIRST = 37
SENDER = "CTSCANNER1"


def reason(ended_by: str, count: int = FIRST) -> str:
    return (
        "expected the sender to release its association after the series, found the "
        f"association from {SENDER} at 127.0.0.1 ended by {ended_by} after {count} instances "
        "of this series"
    )


@pytest.fixture
def site_with(
    settings: GatewaySettings,
    engine: Engine,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
) -> Callable[..., Site]:
    """The test drives assembly and routing (as in test_series_completeness.py)."""

    def make(*, check_association_release: bool = True, network_timeout_s: float = 60) -> Site:
        configured = make_settings(
            settings.data_dir,
            settings.sqlalchemy_url,
            dicom={"network_timeout_s": network_timeout_s},
            assembly={"quiet_period_s": 3600},
            queue={"router_poll_interval_s": 3600, "broker_url": "redis://127.0.0.1:1/0"},
            web={"session_cookie_secure": False},
            routing={
                "rules": RULES,
                "series_completeness": {
                    "hold_s": 3600,
                    "check_association_release": check_association_release,
                },
            },
        )
        create_user(engine, configured.web, "viewer", PASSWORD, Role.VIEWER, actor="test")
        sent = Sent()
        router = StudyRouter(configured, engine, sent)
        router.seed()
        return Site(start_gateway(configured), configured, engine, router, sent)

    return make


def send(site: Site, paths: list[Path], *, release: bool) -> None:
    """One association from the scanner: C-STORE each file, then A-RELEASE or A-ABORT."""
    with (
        raw_file_sending(),
        association(site.gateway.port, paths, calling_ae=SENDER) as assoc,
    ):
        assert assoc.is_established
        for path in paths:
            status = assoc.send_c_store(path)
            assert status.Status == 0x0000, f"expected success, found 0x{status.Status:04X}"
        if not release:
            assoc.abort()


def series_row(engine: Engine, series_uid: str) -> Series | None:
    with engine.connect() as connection:
        return connection.execute(
            select(Series).where(Series.series_instance_uid == series_uid)
        ).first()  # type: ignore[return-value]


def wait_for_mark(engine: Engine, series_uid: str, marked: bool, timeout_s: float = 10) -> None:
    """The association's end is written by the listener's own thread: poll with a deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = series_row(engine, series_uid)
        if row is not None and (row.interrupted_at is not None) == marked:
            return
        time.sleep(0.02)
    state = "marked" if marked else "cleared"
    raise AssertionError(f"expected series {series_uid} {state} within {timeout_s} s, it was not")


def hold_reason(engine: Engine, study_uid: str) -> str | None:
    with engine.connect() as connection:
        return connection.execute(
            select(Study.series_hold_reason).where(Study.study_instance_uid == study_uid)
        ).scalar()


def interrupted_audit(engine: Engine, study_uid: str) -> list[tuple[str, str, dict[str, object]]]:
    with engine.connect() as connection:
        return [
            (str(r.actor), str(r.source_address), dict(r.detail or {}))
            for r in connection.execute(
                select(AuditEvent).where(
                    AuditEvent.study_instance_uid == study_uid,
                    AuditEvent.kind == "series.interrupted",
                )
            ).all()
        ]


def abort_after_first(site: Site, scan: Scan) -> None:
    """The issue's example: 37 of 300 in order, then the sender's A-ABORT; held."""
    paths = scan.write(range(SLICES), z_uniform)
    send(site, paths[:FIRST], release=False)
    wait_for_mark(site.engine, scan.series_uid, marked=True)
    assert site.complete_and_route() == []
    assert site.jobs(scan.study_uid) == []


def test_an_aborted_association_holds_its_study_with_the_reason(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    scan = new_scan(tmp_path)
    abort_after_first(site, scan)
    expected = reason("A-ABORT from the sender")
    assert hold_reason(site.engine, scan.study_uid) == expected
    (held,) = site.audit(scan.study_uid, "study.held")
    assert held == {"series": scan.series_uid, "reason": expected, "hold_s": 3600}
    detail = {"series": scan.series_uid, "instances": FIRST, "ended_by": "A-ABORT from the sender"}
    assert interrupted_audit(site.engine, scan.study_uid) == [(SENDER, "127.0.0.1", detail)]
    page = site.study_page(scan.study_uid)
    assert 'id="series-hold"' in page and expected in page
    assert site.router.dispatch_queued() == 0 and site.sent == []


def test_a_killed_storescu_holds_its_study(site_with: Callable[..., Site], tmp_path: Path) -> None:
    """DCMTK storescu, a real modality, killed with SIGKILL mid-series: the connection drops
    under the association (no A-RELEASE, no A-ABORT)."""
    site = site_with()
    scan = new_scan(tmp_path)
    paths = scan.write(range(SLICES), z_uniform)  # in order, as a scanner sends them
    sender = subprocess.Popen(
        ["storescu", "-aet", SENDER, "-aec", GATEWAY_AE, "127.0.0.1", str(site.gateway.port)]
        + [str(path) for path in paths],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "0"},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = series_row(site.engine, scan.series_uid)
            if row is not None and row.instance_count >= 10:
                break
            assert sender.poll() is None, "storescu ended before it was killed"
            time.sleep(0.01)
        sender.send_signal(signal.SIGKILL)
    finally:
        sender.kill()
        sender.wait(timeout=10)
    wait_for_mark(site.engine, scan.series_uid, marked=True)
    row = series_row(site.engine, scan.series_uid)
    assert row is not None and 10 <= row.instance_count < SLICES
    assert site.complete_and_route() == []
    expected = reason("A-P-ABORT (connection dropped or protocol error)", row.instance_count)
    assert hold_reason(site.engine, scan.study_uid) == expected
    assert expected in site.study_page(scan.study_uid)
    assert site.jobs(scan.study_uid) == []


def test_our_own_abort_of_an_idle_sender_holds_its_study(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    """The sender stops sending and never ends its association: our network timeout
    aborts it (as a stopping listener does)."""
    site = site_with(network_timeout_s=1.0)
    scan = new_scan(tmp_path)
    paths = scan.write(range(FIRST), z_uniform)
    with raw_file_sending(), association(site.gateway.port, paths, calling_ae=SENDER) as assoc:
        for path in paths:
            assert assoc.send_c_store(path).Status == 0x0000
        wait_for_mark(site.engine, scan.series_uid, marked=True)  # while the sender idles
    assert site.complete_and_route() == []
    expected = reason("the gateway's A-ABORT (network timeout or shutdown)")
    assert hold_reason(site.engine, scan.study_uid) == expected


def test_a_released_association_is_complete_by_this_signal(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    """The same 37, released: a series that really has 37 slices. Its end is written before
    that of a later aborted association (one writer, in order), so waiting for the later
    mark shows the first end was judged too."""
    site = site_with()
    released, aborted = new_scan(tmp_path), new_scan(tmp_path)
    send(site, released.write(range(FIRST), z_uniform), release=True)
    send(site, aborted.write(range(FIRST), z_uniform), release=False)
    wait_for_mark(site.engine, aborted.series_uid, marked=True)
    row = series_row(site.engine, released.series_uid)
    assert row is not None and row.interrupted_at is None and row.interrupted_detail is None
    (job_id,) = site.complete_and_route()
    (job,) = site.jobs(released.study_uid)
    assert job.id == job_id and job.state == "queued"
    assert interrupted_audit(site.engine, released.study_uid) == []
    assert hold_reason(site.engine, aborted.study_uid) == reason("A-ABORT from the sender")


def test_resending_on_a_released_association_releases_the_hold(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    scan = new_scan(tmp_path)
    abort_after_first(site, scan)
    paths = sorted(scan.folder.iterdir())
    assert len(paths) == SLICES
    send(site, paths, release=True)  # the whole series again: 37 duplicates, 263 new
    wait_for_mark(site.engine, scan.series_uid, marked=False)
    (cleared,) = site.audit(scan.study_uid, "series.interruption_cleared")
    assert cleared["series"] == scan.series_uid and cleared["instances"] == SLICES
    (job_id,) = site.complete_and_route()
    (job,) = site.jobs(scan.study_uid)
    assert job.id == job_id and job.state == "queued" and job.generation == 2
    (released,) = site.audit(scan.study_uid, "study.released")
    assert released["series"] == scan.series_uid
    assert 'id="series-hold"' not in site.study_page(scan.study_uid)
    assert site.router.dispatch_queued() == 1 and site.sent == [(job_id, "routine")]


def test_resending_only_what_arrived_reopens_the_held_study(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    """The series had 37 slices after all: the sender resends the same 37 (all duplicates,
    which reopen nothing) and releases. Clearing the mark reopens the held study itself."""
    site = site_with()
    scan = new_scan(tmp_path)
    abort_after_first(site, scan)
    send(site, sorted(scan.folder.iterdir())[:FIRST], release=True)
    wait_for_mark(site.engine, scan.series_uid, marked=False)
    (job_id,) = site.complete_and_route()
    (job,) = site.jobs(scan.study_uid)
    assert job.id == job_id and job.state == "queued"
    updated = site.audit(scan.study_uid, "study.updated")
    assert updated == [{"reason": f"interrupted series {scan.series_uid} sent again and released"}]


def test_the_check_can_be_turned_off_for_senders_that_never_release(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with(check_association_release=False)
    scan = new_scan(tmp_path)
    send(site, scan.write(range(FIRST), z_uniform), release=False)
    wait_for_mark(site.engine, scan.series_uid, marked=True)  # still recorded and audited
    assert len(site.complete_and_route()) == 1
    assert site.audit(scan.study_uid, "study.held") == []
