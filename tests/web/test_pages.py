"""Every page and form of the admin UI on the real databases: dashboard, studies, a study
page with its preview, retry and cancel, the audit log and its CSV export, rules, destination
tests, models, users and the operations endpoints."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import Engine, insert, select, update

from gateway.audit import AuditKind, audit_row, record
from gateway.cli import main as cli_main
from gateway.models import AuditEvent, Delivery, DeliveryState, Job, JobState, RoutingRule, User
from gateway.settings import GatewaySettings
from gateway.web.passwords import verify_password
from tests.conftest import free_port
from tests.web.conftest import csrf, sign_in
from tests.web.study_data import PATIENT_ID, PATIENT_NAME, StoredStudy, store_study

Client = Callable[[str | None], FlaskClient]


@pytest.fixture
def study(settings: GatewaySettings, engine: Engine, tmp_path: Path) -> StoredStudy:
    return store_study(settings, engine, tmp_path / "study")


def _text(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


def _post(client: FlaskClient, url: str, **data: object) -> str:
    response = client.post(url, data={**data, "csrf_token": csrf(client)}, follow_redirects=True)
    assert response.status_code in (200, 400), (url, response.status_code)
    return response.get_data(as_text=True)


def _audit(engine: Engine, kind: str) -> list[AuditEvent]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(AuditEvent.__table__).where(AuditEvent.kind == kind).order_by(AuditEvent.id)
            ).all()
        )


def test_dashboard_counts_failures_and_banners(client_as: Client, study: StoredStudy) -> None:
    page = _text(client_as("viewer"), "/")
    assert "20</b> instances received in the last hour" in page
    assert "1</b> jobs failed in the last hour" in page
    assert "Triton unavailable after 3 attempts" in page
    assert "association rejected" in page
    assert "Triton:" in page and "Broker:" in page  # both unreachable in these settings
    assert 'id="queue-depth">0<' in page


def test_studies_list_searches_and_pages(
    client_as: Client, study: StoredStudy, settings: GatewaySettings
) -> None:
    client = client_as("viewer")
    assert study.study_uid in _text(client, "/studies")
    assert study.study_uid in _text(client, f"/studies?uid={study.study_uid[:12]}")
    assert study.study_uid not in _text(client, "/studies?uid=9.9.9")
    assert study.study_uid not in _text(client, "/studies?uid=%25")  # LIKE wildcards escaped
    assert study.study_uid in _text(client, "/studies?modality=ct&state=complete")
    assert study.study_uid not in _text(client, "/studies?modality=MR")
    assert study.study_uid not in _text(client, "/studies?state=receiving")
    assert "page 1 of 1" in _text(client, "/studies?page=abc")


def test_study_page_shows_series_jobs_stages_findings_and_deliveries(
    client_as: Client, study: StoredStudy
) -> None:
    page = _text(client_as("viewer"), f"/studies/{study.study_uid}")
    assert study.series_uid in page
    for stage in ("sent to queue", "started", "inferred", "results built", "delivered"):
        assert f"<th>{stage}</th>" in page
    assert "<th>inference</th><td>6.500</td>" in page
    assert "<td>1234.5</td><td>14.2</td>" in page and "0.9731" in page
    assert "association rejected" in page and "<h3>pacs</h3>" in page
    assert f'src="/jobs/{study.job_id}/preview.png"' in page
    assert "Retry" not in page  # viewers see no actions
    assert _text(client_as("viewer"), "/studies/1.2.3.4", 404)


def test_patient_identity_only_for_operators_and_never_in_the_audit(
    client_as: Client, study: StoredStudy, engine: Engine
) -> None:
    viewer_page = _text(client_as("viewer"), f"/studies/{study.study_uid}")
    assert PATIENT_NAME not in viewer_page and PATIENT_ID not in viewer_page
    for role in ("operator", "admin"):
        page = _text(client_as(role), f"/studies/{study.study_uid}")
        assert f"{PATIENT_NAME} (ID {PATIENT_ID})" in page
    viewed = _audit(engine, AuditKind.PATIENT_IDENTITY_VIEWED.value)
    assert [v.actor for v in viewed] == ["operator", "admin"]
    with engine.connect() as connection:
        everything = json.dumps(
            [list(map(str, r)) for r in connection.execute(select(AuditEvent.__table__)).all()]
        )
    assert PATIENT_NAME not in everything and PATIENT_ID not in everything


def test_preview_is_a_png_with_the_segmentation_in_colour(
    client_as: Client, study: StoredStudy
) -> None:
    client = client_as("viewer")
    response = client.get(f"/jobs/{study.job_id}/preview.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    image = Image.open(io.BytesIO(response.data)).convert("RGB")
    assert image.height == 256 and image.width >= 256
    rgb = np.asarray(image, dtype=int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert ((r > 180) & (g < 100) & (b < 100)).any()  # nodule red
    assert ((g > r + 30) & (g > b + 30)).any()  # lung green
    assert client.get(f"/jobs/{study.failed_job_id}/preview.png").status_code == 404


def test_operator_retries_and_cancels_jobs(
    client_as: Client, study: StoredStudy, engine: Engine
) -> None:
    client = client_as("operator")
    page = _post(client, f"/jobs/{study.failed_job_id}/retry")
    assert f"Job {study.failed_job_id}: retry done." in page
    page = _post(client, f"/jobs/{study.failed_job_id}/cancel")
    assert f"Job {study.failed_job_id}: cancel done." in page
    page = _post(client, f"/jobs/{study.job_id}/cancel")
    assert "expected an unfinished job" in page
    with engine.connect() as connection:
        state = connection.execute(
            select(Job.state).where(Job.id == study.failed_job_id)
        ).scalar_one()
    assert state == JobState.CANCELLED
    assert [e.actor for e in _audit(engine, "job.requeued")] == ["operator"]
    assert [e.actor for e in _audit(engine, "job.cancelled")] == ["operator"]
    assert client.post("/jobs/999/retry", data={"csrf_token": csrf(client)}).status_code == 404


def test_audit_log_filters_and_exports_csv(
    client_as: Client, study: StoredStudy, engine: Engine
) -> None:
    with engine.begin() as connection:
        record(
            connection,
            audit_row(AuditKind.RULE_SEEDED, actor="=HYPERLINK(1)", detail={"rule": "x"}),
        )
    client = client_as("viewer")
    page = _text(client, f"/audit?study={study.study_uid}&kind=instance.stored")
    assert page.count("<td>instance.stored</td>") == 20
    assert "<td>study.complete</td>" not in page
    assert "No events match." in _text(client, "/audit?since=2999-01-01T00:00")
    assert "No events match." not in _text(client, "/audit?until=2999-01-01T00:00&actor=MODALITY")
    assert "No events match." in _text(client, "/audit?until=2000-01-01T00:00:00")
    response = client.get(f"/audit.csv?study={study.study_uid}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert {r["kind"] for r in rows} >= {"instance.stored", "study.complete"}
    assert all(r["study_instance_uid"] == study.study_uid for r in rows)
    everything = list(csv.DictReader(io.StringIO(client.get("/audit.csv").get_data(as_text=True))))
    assert "'=HYPERLINK(1)" in {r["actor"] for r in everything}  # no formula injection
    assert client.post("/audit", data={"csrf_token": csrf(client)}).status_code == 405


def _rules(engine: Engine) -> list[tuple[str, int, bool, list[dict[str, object]]]]:
    with engine.connect() as connection:
        return [
            tuple(r)  # type: ignore[misc]
            for r in connection.execute(
                select(
                    RoutingRule.name,
                    RoutingRule.position,
                    RoutingRule.enabled,
                    RoutingRule.conditions,
                ).order_by(RoutingRule.position)
            ).all()
        ]


def test_admin_creates_edits_toggles_and_moves_rules(
    client_as: Client, engine: Engine, study: StoredStudy
) -> None:
    admin = client_as("admin")
    assert "New rule" in _text(admin, "/rules/new")
    page = _post(
        admin,
        "/rules/new",
        name="chest-ct",
        enabled="on",
        priority="urgent",
        pipeline="lung_nodules",
        destinations="pacs",
        conditions="modality equals CT\nslice_thickness less_or_equal 5\nmodality in CT, MR",
    )
    assert "Rule chest-ct created." in page
    _post(
        admin,
        "/rules/new",
        name="default",
        enabled="on",
        priority="routine",
        pipeline="lung_nodules",
        conditions="",
    )
    bad = admin.post(
        "/rules/new",
        data={
            "name": "bad",
            "priority": "routine",
            "pipeline": "lung_nodules",
            "conditions": "modality frobnicates CT",
            "csrf_token": csrf(admin),
        },
    )
    assert bad.status_code == 400 and "Not saved" in bad.get_data(as_text=True)
    bad = admin.post(
        "/rules/new",
        data={
            "name": "chest-ct",
            "priority": "routine",
            "pipeline": "lung_nodules",
            "conditions": "",
            "csrf_token": csrf(admin),
        },
    )
    assert bad.status_code == 400 and "taken" in bad.get_data(as_text=True)
    rules = _rules(engine)
    assert [r[0] for r in rules] == ["chest-ct", "default"]
    assert rules[0][3][1] == {
        "attribute": "slice_thickness",
        "operator": "less_or_equal",
        "value": 5.0,
    }
    with engine.connect() as connection:
        ids = dict(connection.execute(select(RoutingRule.name, RoutingRule.id)).tuples().all())
    form = _text(admin, f"/rules/{ids['chest-ct']}/edit")
    assert "slice_thickness less_or_equal 5" in form and "modality in CT, MR" in form
    page = _post(
        admin,
        f"/rules/{ids['chest-ct']}/edit",
        enabled="on",
        priority="routine",
        pipeline="lung_nodules",
        conditions="modality equals MR",
    )
    assert "Rule chest-ct saved." in page
    assert _rules(engine)[0][3] == [{"attribute": "modality", "operator": "equals", "value": "MR"}]
    _post(admin, f"/rules/{ids['chest-ct']}/enabled", enabled="false")
    assert _rules(engine)[0][2] is False
    _post(admin, f"/rules/{ids['default']}/move", direction="up")
    assert [r[0] for r in _rules(engine)] == ["default", "chest-ct"]
    assert "already first" in _post(admin, f"/rules/{ids['default']}/move", direction="up")
    for kind in ("rule.created", "rule.updated", "rule.disabled", "rule.moved"):
        events = _audit(engine, kind)
        assert events and all(e.actor == "admin" for e in events), kind
    # the rule tester, for every role
    viewer = client_as("viewer")
    page = _text(viewer, f"/rules/{ids['chest-ct']}/test?study={study.study_uid}")
    assert "Does not match" in page and "modality" in page and "disabled" in page
    page = _text(viewer, f"/rules/{ids['default']}/test?study={study.study_uid}")
    assert "Matches: selects 1 series." in page
    assert "no such study" in _text(viewer, f"/rules/{ids['default']}/test?study=1.2.3", 404)
    assert _text(viewer, "/rules/999/test", 404)


@pytest.fixture
def verification_scp() -> Iterator[int]:
    port = free_port()
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_ECHO, lambda e: 0x0000)]
    )
    yield port
    server.shutdown()


def test_destination_tests_echo_and_http_are_shown_and_audited(
    tmp_path: Path,
    database_url: str,
    engine: Engine,
    users: dict[str, int],
    verification_scp: int,
) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from gateway.web import create_app
    from tests.web.conftest import web_settings

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path.startswith("/dicom-web/studies") else 404)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        settings = web_settings(
            tmp_path / "data",
            database_url,
            destinations=[
                {
                    "kind": "dicom",
                    "name": "pacs",
                    "ae_title": "PACS",
                    "host": "127.0.0.1",
                    "port": verification_scp,
                },
                {
                    "kind": "dicom",
                    "name": "down",
                    "ae_title": "DOWN",
                    "host": "127.0.0.1",
                    "port": free_port(),
                },
                {
                    "kind": "dicomweb",
                    "name": "web",
                    "url": f"http://127.0.0.1:{http.server_address[1]}/dicom-web",
                },
                {
                    "kind": "dicomweb",
                    "name": "web-bad",
                    "url": f"http://127.0.0.1:{http.server_address[1]}/nothing",
                },
            ],
        )
        app = create_app(settings, engine)
        operator = app.test_client()
        assert sign_in(operator, "operator") == 302
        page = _text(operator, "/destinations")
        assert "PACS@127.0.0.1" in page and "DICOMweb STOW-RS" in page
        assert "OK: PACS@127.0.0.1" in _post(operator, "/destinations/pacs/test")
        assert "Failed: DOWN@127.0.0.1" in _post(operator, "/destinations/down/test")
        assert "OK: http://127.0.0.1" in _post(operator, "/destinations/web/test")
        assert "answered HTTP 404" in _post(operator, "/destinations/web-bad/test")
        assert (
            operator.post(
                "/destinations/nope/test", data={"csrf_token": csrf(operator)}
            ).status_code
            == 404
        )
        viewer = app.test_client()
        assert sign_in(viewer, "viewer") == 302
        assert 'id="test-pacs"' not in _text(viewer, "/destinations")
    finally:
        http.shutdown()
    events = _audit(engine, "destination.tested")
    assert [(e.actor, e.outcome, e.detail["destination"]) for e in events] == [
        ("operator", "success", "pacs"),
        ("operator", "failure", "down"),
        ("operator", "success", "web"),
        ("operator", "failure", "web-bad"),
    ]


def test_models_page_says_when_triton_is_unreachable(client_as: Client) -> None:
    page = _text(client_as("viewer"), "/models")
    assert "Triton is unreachable" in page and "127.0.0.1:1" in page
    # Every registered pipeline is listed, its models' state unknown without Triton.
    assert 'id="pipelines"' in page and "lung_nodules" in page
    assert "lung_nodule_unet" in page and "(unknown)" in page


def test_admin_manages_users_and_keeps_one_admin(
    client_as: Client, engine: Engine, users: dict[str, int]
) -> None:
    admin = client_as("admin")
    assert "operator" in _text(admin, "/users")
    assert "created as operator" in _post(
        admin, "/users/new", username="nurse", password="a long enough password", role="operator"
    )
    assert "at least 12 characters" in _post(
        admin, "/users/new", username="short", password="short", role="viewer"
    )
    assert "taken" in _post(
        admin, "/users/new", username="NURSE", password="a long enough password", role="viewer"
    )
    with engine.connect() as connection:
        nurse = connection.execute(select(User).where(User.username == "nurse")).one()
    _post(admin, f"/users/{nurse.id}", role="viewer")
    _post(admin, f"/users/{nurse.id}", enabled="false")
    _post(admin, f"/users/{nurse.id}", password="another long password")
    with engine.connect() as connection:
        nurse = connection.execute(select(User).where(User.username == "nurse")).one()
    assert nurse.role == "viewer" and nurse.enabled is False
    assert verify_password("another long password", nurse.password_hash)
    assert "another enabled admin" in _post(admin, f"/users/{users['admin']}", role="viewer")
    assert "another enabled admin" in _post(admin, f"/users/{users['admin']}", enabled="false")
    events = _audit(engine, "user.updated")
    assert {tuple(sorted(e.detail)) for e in events} == {
        ("role", "sessions_ended", "user"),
        ("enabled", "sessions_ended", "user"),
        ("password", "sessions_ended", "user"),
    }
    assert all("long" not in json.dumps(e.detail) for e in events)  # no passwords


def test_ops_endpoints(client_as: Client, study: StoredStudy, engine: Engine) -> None:
    anonymous = client_as(None)
    assert anonymous.get("/healthz").get_data(as_text=True) == "ok\n"
    ready = anonymous.get("/readyz")
    text = ready.get_data(as_text=True)
    # broker and Triton are down here: reported, but STOW-RS and the pages still work
    assert ready.status_code == 200, text
    assert "database: ok" in text
    assert "broker: failed" in text and "triton: failed" in text and "(not required)" in text
    metrics = anonymous.get("/metrics").get_data(as_text=True)
    assert "pacs_gateway_instances_received_total 20" in metrics
    assert 'pacs_gateway_jobs{state="failed"} 1' in metrics
    assert 'pacs_gateway_job_stage_seconds_mean{stage="inference"} 6.5' in metrics
    assert "pacs_gateway_delivery_failures_total 1" in metrics
    assert "pacs_gateway_queue_depth 0" in metrics
    assert study.study_uid not in metrics
    # a retry sets the failed delivery back to pending: the counter must not drop, or
    # Prometheus reads a counter reset and the failed-for-good alert fires again
    with engine.begin() as connection:
        connection.execute(
            update(Delivery)
            .where(Delivery.state == DeliveryState.FAILED)
            .values(state=DeliveryState.PENDING)
        )
    metrics = anonymous.get("/metrics").get_data(as_text=True)
    assert "pacs_gateway_delivery_failures_total 1" in metrics
    assert 'pacs_gateway_deliveries{state="failed"} 0' in metrics


def test_readyz_is_ready_when_every_part_answers(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    from gateway.web import create_app
    from tests.web.conftest import web_settings

    settings = web_settings(
        tmp_path / "data",
        database_url,
        inference={"runner": "onnxruntime"},
        queue={"broker_url": "redis://127.0.0.1:6379/15"},
    )
    response = create_app(settings, engine).test_client().get("/readyz")
    assert response.status_code == 200, response.get_data(as_text=True)


def test_readyz_is_not_ready_without_the_database(
    tmp_path: Path, database_url: str, engine: Engine
) -> None:
    from sqlalchemy import create_engine

    from gateway.web import create_app
    from gateway.web.context import EXTENSION, WebContext
    from tests.web.conftest import web_settings

    settings = web_settings(tmp_path / "data", database_url)
    app = create_app(settings, engine)
    # the database goes away under a running web process: nothing listens on port 1
    gone = create_engine("postgresql+psycopg://gateway:x@127.0.0.1:1/gateway")
    app.extensions[EXTENSION] = WebContext(settings, gone)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "database: failed: expected the database to answer" in response.get_data(as_text=True)


def test_metrics_can_require_sign_in(tmp_path: Path, database_url: str, engine: Engine) -> None:
    from gateway.web import create_app
    from tests.web.conftest import web_settings

    settings = web_settings(tmp_path / "data", database_url, web={"metrics_public": False})
    assert create_app(settings, engine).test_client().get("/metrics").status_code == 401


def test_create_admin_cli(
    settings: GatewaySettings,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.conftest import settings_environment

    for key, value in settings_environment(settings).items():
        if key.startswith("PACS_GATEWAY_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr("sys.stdin", io.StringIO("a very good password\n"))
    assert cli_main(["create-admin", "chief", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli_main(["create-admin", "chief2", "--password-stdin"]) == 1
    assert "at least 12 characters" in capsys.readouterr().err
    with engine.connect() as connection:
        row = connection.execute(select(User).where(User.username == "chief")).one()
        assert row.role == "admin" and row.enabled
        assert (
            connection.execute(select(AuditEvent.actor).where(AuditEvent.kind == "user.created"))
            .scalar_one()
            .startswith("cli:")
        )
    assert verify_password("a very good password", row.password_hash)
    with engine.begin() as connection:  # the users table exists only in the new migration
        connection.execute(
            insert(User).values(
                username="x",
                password_hash="scrypt$1$1$1$AA==$AA==",
                role="viewer",
                enabled=True,
                created_at=row.created_at,
            )
        )


def test_dashboard_says_when_no_worker_answers(
    tmp_path: Path, database_url: str, engine: Engine, users: dict[str, int]
) -> None:
    from gateway.web import create_app
    from tests.web.conftest import web_settings

    settings = web_settings(
        tmp_path / "data",
        database_url,
        inference={"runner": "onnxruntime"},  # no Triton banner either
        queue={"broker_url": "redis://127.0.0.1:6379/11"},  # a Redis no worker listens on
    )
    client = create_app(settings, engine).test_client()
    assert sign_in(client, "viewer") == 302
    page = _text(client, "/")
    assert "No worker answered" in page
    assert "Triton:" not in page and "Broker:" not in page
