"""Find any study (the studies page, Flask client, SQLite and PostgreSQL): each search field
alone and ANDed, job fields on one and the same job, Accession Number and Patient ID matched
exactly through their keyed hashes as set at ingest (a real C-STORE too) and never sent in a
URL, who may search by them, clear messages for bad input, paging that keeps the search, and
what each row shows (pipeline, state, findings, turnaround)."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pydicom
import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from gateway.models import AuditEvent, Job, Study
from gateway.patient_index import PatientIndex
from gateway.settings import GatewaySettings
from gateway.web.findings_match import Verdict, read_findings, verdict_clause
from gateway.web.secret import secret_key
from gateway.web.study_rows import classification_thresholds
from tests.conftest import RunningGateway
from tests.scu import send_files
from tests.web.conftest import csrf, web_settings
from tests.web.search_data import Corpus, build_corpus, ct_files, ingest

Client = Callable[[str | None], FlaskClient]
PAGE_SIZE = 1  # so that every search below of two or more studies walks pages


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> GatewaySettings:
    return web_settings(
        tmp_path / "data",
        database_url,
        web={"page_size": PAGE_SIZE},
        destinations=[
            {"kind": "dicom", "name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1}
        ],
    )


@pytest.fixture
def corpus(settings: GatewaySettings, engine: Engine, tmp_path: Path) -> Corpus:
    return build_corpus(settings, engine, tmp_path / "files")


_UID_LINK = re.compile(
    r'<tr class="study" id="study-\d+"><td rowspan="\d+"><a href="/studies/([0-9.]+)"'
)
_PAGES = re.compile(r"page (\d+) of (\d+)")


def _page(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


def _canonical(args: dict[str, list[str]]) -> dict[str, list[str]]:
    """As the search reads them: dates as YYYYMMDD or YYYY-MM-DD, modality in any case."""
    return {
        k: [v.replace("-", "") if k.startswith("date") else v.lower() for v in vs]
        for k, vs in args.items()
    }


def found(client: FlaskClient, query: str) -> set[str]:
    """Every Study Instance UID the search lists, walking its pages by the pager's links."""
    page = _page(client, f"/studies?{query}")
    uids = _UID_LINK.findall(page)
    match = _PAGES.search(page)
    assert match is not None
    pages = int(match.group(2))
    for number in range(2, pages + 1):
        links = re.findall(r'<a href="(/studies\?[^"]*)">older', page)
        assert links, "expected an 'older' link on a page before the last"
        nxt = links[0].replace("&amp;", "&")
        args = parse_qs(urlsplit(nxt).query)
        assert args.pop("page") == [str(number)]
        assert _canonical(args) == _canonical(parse_qs(query)), "the pager lost the search"
        page = _page(client, nxt)
        uids += _UID_LINK.findall(page)
    assert len(uids) == len(set(uids)), "a study listed on two pages"
    return set(uids)


CASES: list[tuple[dict[str, str], set[str]]] = [
    ({}, {"A", "B", "C", "D", "E"}),
    ({"date_from": "2024-02-01"}, {"B", "C", "D", "E"}),
    ({"date_to": "2024-02-15"}, {"A", "B"}),  # inclusive
    ({"date_from": "2024-02-15", "date_to": "2024-02-20"}, {"B", "C"}),
    ({"date_from": "20240215", "date_to": "20240220"}, {"B", "C"}),  # DICOM DA also taken
    ({"modality": "DX"}, {"C", "E"}),
    ({"modality": "ct"}, {"A", "B", "D"}),
    ({"calling_ae": "XR_ROOM"}, {"C", "E"}),
    ({"calling_ae": "ct_other"}, {"D"}),
    ({"state": "complete"}, {"A", "B", "C", "D", "E"}),
    ({"state": "receiving"}, set()),
    ({"rule": "chest-xr"}, {"C", "E"}),
    ({"rule": "liver"}, {"E"}),
    ({"pipeline": "lung_nodules"}, {"A", "B", "D"}),
    ({"job_state": "failed"}, {"D"}),
    ({"job_state": "queued"}, set()),
    ({"findings": "positive"}, {"A", "C", "D", "E"}),
    ({"findings": "negative"}, {"B", "E"}),
    ({"pipeline": "lung_nodules", "findings": "positive"}, {"A", "D"}),
    ({"pipeline": "lung_nodules", "findings": "negative"}, {"B"}),
    ({"pipeline": "chest_xray_nodule", "findings": "positive"}, {"C"}),
    ({"pipeline": "chest_xray_nodule", "findings": "negative"}, {"E"}),
    ({"pipeline": "liver_lesions", "findings": "positive"}, {"E"}),
    # ANDed: each alone finds more
    ({"modality": "CT", "calling_ae": "CT_SCANNER", "date_from": "2024-02-01"}, {"B"}),
    # job fields on one and the same job: D's failed job has no findings, its positive
    # job is delivered; E's negative job is chest_xray_nodule, its positive one liver
    ({"job_state": "failed", "findings": "positive"}, set()),
    ({"rule": "liver", "findings": "negative"}, set()),
    ({"pipeline": "lung_nodules", "job_state": "delivered"}, {"A", "B", "D"}),
]


@pytest.mark.parametrize("role", ["viewer"])
def test_each_field_alone_and_anded_finds_exactly_its_studies(
    client_as: Client, corpus: Corpus, role: str
) -> None:
    client = client_as(role)
    for args, expected in CASES:
        got = corpus.keys(found(client, urlencode(args)))
        assert got == expected, (args, got, expected)
    uid = corpus.uids["C"]
    assert corpus.keys(found(client, urlencode({"uid": uid[:-1]}))) == {"C"}


def _search(client: FlaskClient, **fields: str) -> tuple[str, set[str]]:
    """Post the search form; the URL it redirects to, and what that URL lists."""
    response = client.post("/studies", data={**fields, "csrf_token": csrf(client)})
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    location = response.location
    return location, found(client, urlsplit(location).query)


def test_accession_number_and_patient_id_match_exactly_through_the_keyed_hash(
    client_as: Client, corpus: Corpus, settings: GatewaySettings, engine: Engine
) -> None:
    client = client_as("operator")
    index = PatientIndex(secret_key(settings))
    location, uids = _search(client, accession_number="ACC-1002")
    assert corpus.keys(uids) == {"B"}
    query = parse_qs(urlsplit(location).query)
    assert query == {"accession_hash": [index.accession_number("ACC-1002")]}
    assert "ACC-1002" not in location

    location, uids = _search(client, patient_id="PAT-1")
    assert corpus.keys(uids) == {"A", "B"}  # one patient, two studies
    assert "PAT-1" not in location
    page = _page(client, location)
    assert "PAT-1" not in page and 'id="patient_hash-active"' in page

    # The same normalisation as at ingest: DICOM's padding is not part of the value...
    assert corpus.keys(_search(client, patient_id=" PAT-1 ")[1]) == {"A", "B"}
    # ...and the match is exact: no case folding, no prefix.
    assert _search(client, patient_id="pat-1")[1] == set()
    assert _search(client, patient_id="PAT")[1] == set()
    assert _search(client, accession_number="ACC-100")[1] == set()
    # ANDed with each other and with the other fields.
    assert corpus.keys(_search(client, accession_number="ACC-1001", patient_id="PAT-1")[1]) == {"A"}
    assert _search(client, accession_number="ACC-2001", patient_id="PAT-1")[1] == set()
    assert corpus.keys(_search(client, patient_id="PAT-1", date_from="2024-02-01")[1]) == {"B"}
    # Posting the form again keeps an active hash (hidden field) with the new fields.
    hashed = index.patient_id("PAT-1")
    assert hashed is not None
    assert corpus.keys(_search(client, patient_hash=hashed, findings="positive")[1]) == {"A"}

    # Every list shown for an identifier search is audited: who, and by which fields only.
    with engine.connect() as connection:
        searches = connection.execute(
            select(AuditEvent.actor, AuditEvent.detail).where(
                AuditEvent.kind == "studies.identifier_searched"
            )
        ).all()
    assert ("operator", {"fields": ["Accession number"]}) in [tuple(r) for r in searches]
    assert ("operator", {"fields": ["Accession number", "Patient ID"]}) in [
        tuple(r) for r in searches
    ]
    assert "PAT-1" not in repr(searches) and hashed not in repr(searches)

    # The database holds keyed hashes, not the values; another secret gives other hashes.
    with engine.connect() as connection:
        rows = connection.execute(select(Study.__table__)).all()
    assert "PAT-1" not in repr(rows) and "ACC-1002" not in repr(rows)
    assert {r.patient_id_hash for r in rows} >= {hashed}
    assert PatientIndex("another secret").patient_id("PAT-1") != hashed


def test_a_real_c_store_sets_the_hashes_the_search_matches(
    settings: GatewaySettings,
    engine: Engine,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    client_as: Client,
    tmp_path: Path,
) -> None:
    gateway = start_gateway(settings)
    paths = ct_files(tmp_path / "sent", 21, accession="ACC-4711", patient_id="PAT-C-STORE")
    assert send_files(gateway.port, paths, calling_ae="CT_SCANNER") == [0] * len(paths)
    gateway.stop()
    client = client_as("operator")
    uid = None
    with engine.connect() as connection:
        uid = connection.execute(select(Study.study_instance_uid)).scalar_one()
    assert _search(client, accession_number="ACC-4711")[1] == {uid}
    assert _search(client, patient_id="PAT-C-STORE")[1] == {uid}
    assert _search(client, patient_id="PAT-C-STORE", calling_ae="CT_SCANNER")[1] == {uid}
    assert _search(client, accession_number="ACC-4712")[1] == set()

    # The operator sees the Patient ID on the study page (and that is audited), yet no
    # table of the database holds either value in clear: only the keyed hashes.
    page = _page(client, f"/studies/{uid}")
    assert "PAT-C-STORE" in page
    with engine.connect() as connection:
        dump = repr(
            [connection.execute(select(table)).all() for table in Study.metadata.sorted_tables]
        )
    assert "PAT-C-STORE" not in dump and "ACC-4711" not in dump
    index = PatientIndex(secret_key(settings))
    hashes = (index.patient_id("PAT-C-STORE"), index.accession_number("ACC-4711"))
    assert all(h is not None and h in dump for h in hashes)


def test_only_roles_that_may_see_identity_search_by_it(
    client_as: Client, corpus: Corpus, settings: GatewaySettings
) -> None:
    hashed = PatientIndex(secret_key(settings)).patient_id("PAT-1")
    viewer = client_as("viewer")
    page = _page(viewer, "/studies")
    assert 'name="patient_id"' not in page and 'name="accession_number"' not in page
    assert "Operators and admins may also search by accession number and patient ID" in page
    for data in ({"patient_id": "PAT-1"}, {"accession_number": "ACC-1001"}):
        response = viewer.post("/studies", data={**data, "csrf_token": csrf(viewer)})
        assert response.status_code == 403, data
        assert "expected an operator or admin" in response.get_data(as_text=True)
    assert viewer.get(f"/studies?patient_hash={hashed}").status_code == 403
    # The viewer's search without identifiers still works by POST.
    response = viewer.post("/studies", data={"modality": "DX", "csrf_token": csrf(viewer)})
    assert response.status_code == 303 and "modality=DX" in response.location
    for role in ("operator", "admin"):
        client = client_as(role)
        page = _page(client, "/studies")
        assert 'name="patient_id"' in page and 'name="accession_number"' in page
        assert corpus.keys(found(client, f"patient_hash={hashed}")) == {"A", "B"}, role


def test_bad_input_gets_a_clear_message_not_a_500(client_as: Client, corpus: Corpus) -> None:
    client = client_as("operator")
    for query, message in (
        (
            "date_from=2024-13-01",
            "Study date from: expected a date as YYYY-MM-DD, found '2024-13-01'",
        ),
        ("date_to=yesterday", "Study date to: expected a date as YYYY-MM-DD, found 'yesterday'"),
        (
            "date_from=2024-03-01&date_to=2024-01-01",
            "Study date: expected the start on or before the end, found 20240301 after 20240101",
        ),
        ("job_state=lost", "Job state: expected one of queued, running, inferred"),
        ("findings=maybe", "Findings: expected one of positive, negative, found 'maybe'"),
        ("state=gone", "Study state: expected one of receiving, complete, updated"),
        ("calling_ae=" + "A" * 17, "Calling AE: expected at most 16 characters, found 17"),
        ("patient_hash=xyz", "Patient ID: expected a 64-digit hexadecimal hash, found another"),
        (
            "patient_id=PAT-1",
            "Patient ID: expected it from the search form (POST), found it in the URL",
        ),
    ):
        page = _page(client, f"/studies?{query}", 400)
        assert message in html.unescape(page), (query, message)
        assert 'id="search-problems"' in page and "No studies match." in page
    # What was typed stays in the form, to be corrected.
    assert 'value="2024-13-01"' in _page(client, "/studies?date_from=2024-13-01&modality=DX", 400)
    # The form says it too, and keeps what was typed.
    response = client.post(
        "/studies",
        data={"date_from": "2024-02-30", "modality": "CT", "csrf_token": csrf(client)},
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Study date from: expected a date as YYYY-MM-DD, found '2024-02-30'" in html.unescape(
        page
    )
    assert 'value="2024-02-30"' in page and 'value="CT"' in page


def _row(page: str, job_id: int) -> str:
    start = page.index(f"#job-{job_id}")
    return page[start : page.index("</tr>", start)]


def test_each_row_shows_received_pipeline_state_findings_and_turnaround(
    client_as: Client, corpus: Corpus, settings: GatewaySettings, engine: Engine, tmp_path: Path
) -> None:
    client = client_as("viewer")
    expected = {
        "A": (
            "lung_nodules",
            "delivered",
            "positive</b>: nodule present (p 0.97), 1 segmented",
            "42.5 s",
        ),
        "B": ("lung_nodules", "delivered", "negative</b>: nodule absent (p 0.10)", "2 min 05 s"),
        "C": (
            "chest_xray_nodule",
            "delivered",
            "positive</b>: nodule present (p 0.91), 1 localised",
            "8.0 s",
        ),
        "D": ("lung_nodules", "delivered", "positive</b>: nodule present (p 0.70)", "1 h 02 min"),
        "D-failed": ("lung_nodules", "failed", "", ""),
        "E": ("chest_xray_nodule", "delivered", "negative</b>: nodule absent (p 0.12)", "30.0 s"),
        "E-seg": ("liver_lesions", "delivered", "positive</b>: 2 segmented", "1 min 00 s"),
    }
    pages = {key: _page(client, f"/studies?uid={uid}") for key, uid in corpus.uids.items()}
    for name, (pipeline, state, findings, turnaround) in expected.items():
        job_id = corpus.jobs[name]
        row = _row(pages[name[0]], job_id)
        assert f"<td>{pipeline}</td>" in row, (name, row)
        assert f'<span class="state {state}">{state}</span>' in row, (name, row)
        cell = re.search(rf'id="findings-{job_id}">(.*?)</td>', row)
        assert cell is not None and (findings in cell.group(1) if findings else cell.group(1) == "")
        assert f'id="turnaround-{job_id}">{turnaround}</td>' in row, (name, row)
    with engine.connect() as connection:
        received = connection.execute(
            select(Study.last_received_at).where(Study.study_instance_uid == corpus.uids["A"])
        ).scalar_one()
    assert (received.strftime("%Y-%m-%d %H:%M:%S")) in pages["A"]

    # A late instance reopens study B; its job's turnaround still counts from the last
    # instance it was made for, not the late one.
    late = ct_files(tmp_path / "late", 2, study_date=dt.date(2024, 2, 15), patient_id="PAT-1")
    for path in late:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = corpus.uids["B"]
        ds.save_as(path, enforce_file_format=True)
    ingest(settings, engine, late[:1], "CT_SCANNER")
    page = _page(client, f"/studies?uid={corpus.uids['B']}")
    assert f'id="turnaround-{corpus.jobs["B"]}">2 min 05 s</td>' in page


def test_findings_verdicts_of_the_list_and_of_the_search_agree(
    corpus: Corpus, engine: Engine, settings: GatewaySettings
) -> None:
    """One rule, two readers: the SQL verdict of every job equals the Python one."""
    thresholds = classification_thresholds(settings.pipeline_registry())
    assert thresholds["lung_nodules"] == 0.5 and thresholds["chest_xray_nodule"] == 0.5
    with engine.connect() as connection:
        rows = connection.execute(select(Job.id, Job.pipeline, Job.summary)).all()
        in_sql = {
            verdict: set(
                connection.execute(
                    select(Job.id).where(verdict_clause(verdict, engine.dialect.name, thresholds))
                ).scalars()
            )
            for verdict in Verdict
        }
    in_python: dict[Verdict, set[int]] = {v: set() for v in Verdict}
    for row in rows:
        line = read_findings(row.summary, thresholds.get(row.pipeline))
        if line is not None:
            in_python[line.verdict].add(row.id)
    assert in_sql == in_python
    jobs = corpus.jobs
    assert in_sql[Verdict.POSITIVE] == {jobs[k] for k in ("A", "C", "D", "E-seg")}
    assert in_sql[Verdict.NEGATIVE] == {jobs[k] for k in ("B", "E")}
