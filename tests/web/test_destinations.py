"""Destinations in the admin UI on both databases: seeded from the settings, created, edited
(kind-specific fields, blank secret keeps the stored one), enabled/disabled by admins only,
each change audited with the user, validation errors shown, secrets never rendered back."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from gateway.models import AuditEvent, DestinationRecord
from tests.web.conftest import csrf

Client = Callable[[str | None], FlaskClient]
TOKEN = "tok-3f9a-never-shown"
PASSWORD = "pw-71c2-never-shown"


def _post(client: FlaskClient, path: str, **data: object) -> tuple[int, str]:
    """Posts a form; destination forms send the default result form unless told otherwise."""
    data = {"forms": "seg_sr", **data}
    response = client.post(path, data={**data, "csrf_token": csrf(client)}, follow_redirects=True)
    return response.status_code, response.get_data(as_text=True)


def _get(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


def _row(engine: Engine, name: str) -> DestinationRecord:
    with engine.connect() as connection:
        row: DestinationRecord = connection.execute(
            select(DestinationRecord.__table__).where(DestinationRecord.name == name)
        ).one()
    return row


def _audit(engine: Engine) -> list[tuple[str, str | None, dict[str, object]]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(AuditEvent.kind, AuditEvent.actor, AuditEvent.detail)
            .where(AuditEvent.kind.like("destination.%"))
            .order_by(AuditEvent.id)
        ).all()
    return [(r.kind, r.actor, dict(r.detail or {})) for r in rows]


def test_settings_destinations_are_seeded_and_listed_read_only_for_viewers(
    client_as: Client, engine: Engine
) -> None:
    viewer = client_as("viewer")
    page = _get(viewer, "/destinations")
    assert "PACS@127.0.0.1:1" in page and "http://127.0.0.1:1/dicom-web" in page
    assert 'id="new-destination"' not in page and 'id="edit-pacs"' not in page
    assert 'id="test-pacs"' not in page
    _get(viewer, "/destinations/new", 403)
    operator = client_as("operator")
    page = _get(operator, "/destinations")
    assert 'id="test-pacs"' in page and 'id="edit-pacs"' not in page
    pacs = _row(engine, "pacs")
    assert _post(operator, f"/destinations/{pacs.id}/enabled", enabled="false")[0] == 403
    assert _post(operator, f"/destinations/{pacs.id}/edit", port="2")[0] == 403
    assert _post(operator, "/destinations/new", name="x", kind="dicom")[0] == 403
    assert [(k, a) for k, a, _ in _audit(engine)] == [
        ("destination.seeded", "settings"),
        ("destination.seeded", "settings"),
    ]


def test_admin_creates_edits_and_disables_a_dicom_destination(
    client_as: Client, engine: Engine
) -> None:
    admin = client_as("admin")
    assert 'id="new-destination"' in _get(admin, "/destinations")
    assert 'id="fields-dicomweb"' in _get(admin, "/destinations/new")
    fields = {"name": "archive", "kind": "dicom", "ae_title": "ARCHIVE", "host": "10.0.0.9"}
    status, page = _post(admin, "/destinations/new", **fields, port="eleven", enabled="on")
    assert status == 400
    assert "Not saved: port: Input should be a valid integer" in page and "&#39;eleven&#39;" in page
    assert 'value="ARCHIVE"' in page  # the form comes back filled in
    status, page = _post(admin, "/destinations/new", **fields, port="104", enabled="on")
    assert status == 200 and "Destination archive created." in page
    assert "ARCHIVE@10.0.0.9:104" in page
    row = _row(engine, "archive")
    assert row.kind == "dicom" and row.enabled and row.config["port"] == 104
    status, page = _post(admin, "/destinations/new", **fields, port="104")
    assert status == 400 and "found &#39;archive&#39; taken" in page

    edit = f"/destinations/{row.id}/edit"
    form = _get(admin, edit)
    assert 'value="10.0.0.9"' in form and 'id="fields-dicomweb"' not in form
    status, page = _post(admin, edit, ae_title="archive-ae-title-too-long", host="h", port="1")
    assert status == 400 and "ae_title" in page and "Not saved" in page
    status, page = _post(
        admin, edit, ae_title="ARCHIVE", host="10.0.0.10", port="11112", tls_check_hostname="on"
    )
    assert status == 200 and "Destination archive saved." in page
    assert _row(engine, "archive").config["port"] == 11112

    status, page = _post(admin, f"/destinations/{row.id}/enabled", enabled="false")
    assert status == 200 and "Destination archive disabled." in page
    assert not _row(engine, "archive").enabled
    assert _post(admin, f"/destinations/{row.id}/enabled", enabled="true")[0] == 200
    assert _row(engine, "archive").enabled
    # The rule form offers the database's destinations.
    assert 'value="archive"' in _get(admin, "/rules/new")

    events = [(k, a, d) for k, a, d in _audit(engine) if k != "destination.seeded"]
    assert [(k, a) for k, a, _ in events] == [
        ("destination.created", "admin"),
        ("destination.updated", "admin"),
        ("destination.disabled", "admin"),
        ("destination.enabled", "admin"),
    ]
    changed = events[1][2]["changed"]
    assert isinstance(changed, dict)
    assert changed["port"] == {"from": 104, "to": 11112}
    assert changed["host"] == {"from": "10.0.0.9", "to": "10.0.0.10"}


def test_secrets_are_kept_when_left_blank_and_never_shown_or_audited(
    client_as: Client, engine: Engine
) -> None:
    admin = client_as("admin")
    url = "https://pacs.example/dicom-web"
    status, page = _post(
        admin,
        "/destinations/new",
        name="cloud",
        kind="dicomweb",
        url=url,
        username="gw",
        password=PASSWORD,
        token=TOKEN,
        enabled="on",
    )
    assert status == 400 and "expected either basic auth or a token, found both" in page
    assert PASSWORD not in page and TOKEN not in page
    status, page = _post(
        admin, "/destinations/new", name="cloud", kind="dicomweb", url=url, token=TOKEN
    )
    assert status == 200 and TOKEN not in page
    row = _row(engine, "cloud")
    assert row.config["token"] == TOKEN and not row.enabled

    edit = f"/destinations/{row.id}/edit"
    form = _get(admin, edit)
    assert TOKEN not in form and "stored: blank keeps it" in form
    status, page = _post(admin, edit, url=url + "/v2", token="")
    assert status == 200 and TOKEN not in page
    row = _row(engine, "cloud")
    assert row.config["token"] == TOKEN and row.config["url"] == url + "/v2"

    status, page = _post(admin, edit, url=url, username="gw", token="", password=PASSWORD)
    assert status == 400 and "expected either basic auth or a token, found both" in page
    assert PASSWORD not in page and TOKEN not in page
    status, _ = _post(
        admin, edit, url=url + "/v2", username="gw", password=PASSWORD, clear_token="on"
    )
    assert status == 200
    row = _row(engine, "cloud")
    assert row.config["token"] is None and row.config["password"] == PASSWORD
    status, page = _post(admin, edit, url="ftp://x", username="gw")
    assert (
        status == 400 and "url: String should match pattern" in page and "&#39;ftp://x&#39;" in page
    )

    events = _audit(engine)
    text = json.dumps([d for _, _, d in events])
    assert PASSWORD not in text and TOKEN not in text
    updated = [d["changed"] for k, _, d in events if k == "destination.updated"]
    assert updated[-1] == {
        "password": "set",
        "token": "removed",
        "username": {"from": None, "to": "gw"},
    }


def test_result_forms_are_chosen_per_destination(client_as: Client, engine: Engine) -> None:
    admin = client_as("admin")
    form = _get(admin, "/destinations/new")
    assert 'id="form-seg_sr" checked' in form and 'id="form-gsps" >' in form
    fields = {"name": "old-pacs", "kind": "dicom", "ae_title": "OLDPACS", "host": "10.0.0.7"}
    status, page = _post(admin, "/destinations/new", **fields, port="104", forms=[])
    assert status == 400 and "forms: Value error, expected at least one of" in page
    status, page = _post(admin, "/destinations/new", **fields, port="104", forms=["gsps", "sc"])
    assert status == 200 and "gsps, sc" in page  # the list shows them
    row = _row(engine, "old-pacs")
    assert row.config["forms"] == ["gsps", "sc"]

    edit = f"/destinations/{row.id}/edit"
    form = _get(admin, edit)
    assert 'id="form-gsps" checked' in form and 'id="form-seg_sr" >' in form
    status, page = _post(
        admin, edit, ae_title="OLDPACS", host="10.0.0.7", port="104", forms=["kos", "pdf"]
    )
    assert status == 400 and "forms.1: Input should be" in page
    assert _row(engine, "old-pacs").config["forms"] == ["gsps", "sc"]
    status, _ = _post(admin, edit, ae_title="OLDPACS", host="10.0.0.7", port="104", forms="kos")
    assert status == 200 and _row(engine, "old-pacs").config["forms"] == ["kos"]
    changed = [d["changed"] for k, _, d in _audit(engine) if k == "destination.updated"]
    assert changed == [{"forms": {"from": ["gsps", "sc"], "to": ["kos"]}}]
