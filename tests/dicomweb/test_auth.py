"""Every DICOMweb route needs a live API token with the route's scope (bearer, or basic with
the client name); refusals say how to authenticate; each request is audited once, with the
client, route, UIDs, outcome and counts, and no patient name or ID."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from requests import HTTPError
from sqlalchemy import select

from gateway.dicomweb.tokens import Scope, revoke_token
from gateway.models import ApiToken, AuditEvent
from tests.dicom_samples import SECRET_PATIENT_ID, SECRET_PATIENT_NAME, ct_instance
from tests.dicomweb.server import WebServer
from tests.dicomweb.stow_helpers import file_bytes, request_events, stored_count, stow

READ_ROUTES = [
    "/studies",
    "/series",
    "/instances",
    "/studies/1.2.3",
    "/studies/1.2.3/metadata",
    "/studies/1.2.3/series",
    "/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1",
    "/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered",
]


def _part() -> tuple[pydicom.Dataset, bytes]:
    ds = ct_instance(generate_uid(), generate_uid(), 0, rows=8, columns=8)
    return ds, file_bytes(ds)


def test_no_token_is_401_with_the_challenges_everywhere(web: WebServer) -> None:
    for route in READ_ROUTES:
        reply = requests.get(web.dicomweb + route, timeout=10)
        assert reply.status_code == 401, route
        challenges = reply.headers.get("WWW-Authenticate", "")
        assert 'Bearer realm="pacs-gateway DICOMweb"' in challenges, route
        assert "Basic realm=" in challenges, route
    reply = requests.post(web.dicomweb + "/studies", data=b"x", timeout=10)
    assert reply.status_code == 401
    wrong = requests.get(
        web.dicomweb + "/studies", headers={"Authorization": "Bearer pgw_guessed"}, timeout=10
    )
    assert wrong.status_code == 401
    with pytest.raises(HTTPError) as raised:
        web.client("pgw_not-a-token").search_for_studies()
    assert raised.value.response.status_code == 401


def test_a_token_reaches_only_its_scope(web: WebServer) -> None:
    reader, storer = web.token("READER", Scope.READ), web.token("STORER", Scope.STORE)
    _, part = _part()
    assert stow(web, [part], reader).status == 403
    assert stored_count(web) == 0
    assert stow(web, [part], storer).status == 200
    with pytest.raises(HTTPError) as raised:
        web.client(storer).search_for_studies()
    assert raised.value.response.status_code == 403
    assert len(web.client(reader).search_for_studies()) == 1


def test_a_revoked_token_signs_nothing_in(web: WebServer) -> None:
    secret = web.token("PACS")
    client = web.client(secret)
    assert client.search_for_studies() == []
    with web.engine.connect() as connection:
        token_id = connection.execute(select(ApiToken.id)).scalar_one()
    revoke_token(web.engine, token_id, actor="admin", source_address=None)
    with pytest.raises(HTTPError) as raised:
        client.search_for_studies()
    assert raised.value.response.status_code == 401
    _, part = _part()
    assert stow(web, [part], secret).status == 401


def test_http_basic_with_the_client_name(start_web: Callable[..., WebServer]) -> None:
    web = start_web()
    secret = web.token("ORTHANC", Scope.READ)
    ok = requests.get(web.dicomweb + "/studies", auth=("ORTHANC", secret), timeout=10)
    assert ok.status_code == 200
    for user, password in (("ORTHANC", secret + "x"), ("OTHER", secret), ("ORTHANC", "")):
        reply = requests.get(web.dicomweb + "/studies", auth=(user, password), timeout=10)
        assert reply.status_code == 401, user
    closed = start_web(dicomweb={"allow_basic_auth": False})  # same database, basic off
    reply = requests.get(closed.dicomweb + "/studies", auth=("ORTHANC", secret), timeout=10)
    assert reply.status_code == 401
    assert "Basic" not in reply.headers["WWW-Authenticate"]


def test_each_request_is_audited_once_without_phi_and_the_token_shows_its_last_use(
    web: WebServer,
) -> None:
    secret = web.token("PACS")
    ds, part = _part()
    assert stow(web, [part], secret).status == 200
    client = web.client(secret)
    client.search_for_studies(search_filters={"PatientID": SECRET_PATIENT_ID})
    client.retrieve_study(ds.StudyInstanceUID)
    requests.get(web.dicomweb + "/studies", timeout=10)  # no token
    assert request_events(web, 401)
    deadline = time.monotonic() + 5  # each is written once its response has gone out
    while True:
        with web.engine.connect() as connection:
            events = connection.execute(
                select(AuditEvent.__table__)
                .where(AuditEvent.kind == "dicomweb.request")
                .order_by(AuditEvent.id)
            ).all()
        if len(events) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    events.sort(key=lambda e: (e.actor is None, e.detail["method"] == "GET", e.detail["route"]))
    with web.engine.connect() as connection:
        token = connection.execute(select(ApiToken.__table__)).one()
        every_row = connection.execute(select(AuditEvent.__table__)).all()
    assert [(e.actor, e.detail["method"], e.detail["status"]) for e in events] == [
        ("PACS", "POST", 200),
        ("PACS", "GET", 200),
        ("PACS", "GET", 200),
        (None, "GET", 401),
    ]
    stow_event, search_event, retrieve_event, _ = events
    assert retrieve_event.detail["route"] == "/studies/<study>"
    assert stow_event.study_instance_uid == ds.StudyInstanceUID
    assert (stow_event.detail["stored"], stow_event.detail["failed"]) == (1, 0)
    assert search_event.detail["matches"] == 1 and search_event.detail["route"] == "/studies"
    assert retrieve_event.detail["instances"] == 1 and retrieve_event.detail["bytes"] == len(part)
    text = json.dumps([dict(r._mapping) for r in every_row], default=str)
    assert SECRET_PATIENT_ID not in text and SECRET_PATIENT_NAME.split("^")[0] not in text
    assert token.last_used_at is not None and token.last_used_address == "127.0.0.1"


def test_switched_off_nothing_answers(start_web: Callable[..., WebServer]) -> None:
    web = start_web(dicomweb={"enabled": False})
    secret = web.token("PACS")
    reply = requests.get(
        web.dicomweb + "/studies", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )
    assert reply.status_code == 404
