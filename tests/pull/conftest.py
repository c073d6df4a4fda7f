"""Pull fixtures: Orthanc as the source PACS (DICOM with C-FIND/C-MOVE/C-GET, and DICOMweb)
holding small studies, a log of every HTTP request it received and its DIMSE log, and the
gateway's listener (the C-MOVE destination) on the test's database."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from gateway.models import Instance
from gateway.settings import GatewaySettings
from tests.conftest import GATEWAY_AE, RunningGateway, free_port, make_settings
from tests.integration.conftest import require_tool
from tests.integration.orthanc import ORTHANC_AE, ORTHANC_BINARY, Orthanc
from tests.pull.studies import SourceStudy, make_study

GATEWAY_IN_ORTHANC = "GATEWAY"  # Orthanc's name for the gateway in DicomModalities

HTTP_LOG_LUA = r"""
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  local out = io.open([==[{path}]==], "a")
  out:write(tostring(method) .. "\t" .. tostring(uri) .. "\n")
  out:close()
  return true
end
"""

# The DIMSE requests Orthanc logs (at verbose level) when it serves a retrieval.
MOVE_RECEIVED = "Move-SCU request received"
GET_RECEIVED = "C-GET-SCU request received"


class SourcePacs(Orthanc):
    """Orthanc with a DICOM port, the DICOMweb plugin, the gateway as a known modality
    (C-MOVE destination, allowed to C-FIND and C-GET), and every HTTP request logged."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(
            workdir,
            free_port(),
            {GATEWAY_IN_ORTHANC: [GATEWAY_AE, "127.0.0.1", free_port()]},
            dicom_port=free_port(),
            dicomweb=True,
        )
        self.http_log = workdir / "http.tsv"
        script = workdir / "http_log.lua"
        script.write_text(HTTP_LOG_LUA.format(path=self.http_log))
        config = json.loads(self.config.read_text())
        config["LuaScripts"].append(str(script))
        self.config.write_text(json.dumps(config, indent=2))

    def start(self, timeout_s: float = 30.0) -> None:
        super().start(timeout_s)
        reply = self.request("PUT", "/tools/log-level", b"verbose", "text/plain")
        assert reply.status == 200, f"log level: HTTP {reply.status}"

    def http_requests(self) -> list[tuple[str, str]]:
        if not self.http_log.exists():
            return []
        lines = self.http_log.read_text().split("\n")[:-1]
        return [(m, u) for m, _, u in (line.partition("\t") for line in lines)]

    def retrievals(self) -> dict[str, int]:
        """How many C-MOVE, C-GET and WADO-RS study retrievals Orthanc has served."""
        log = self.log_text()
        wado = [
            u
            for m, u in self.http_requests()
            if m == "GET" and u.startswith("/dicom-web/studies/") and u.count("/") == 3
        ]
        return {
            "c-move": log.count(MOVE_RECEIVED),
            "c-get": log.count(GET_RECEIVED),
            "wado-rs": len(wado),
        }

    def point_gateway_at(self, port: int) -> None:
        self.set_modality(GATEWAY_IN_ORTHANC, GATEWAY_AE, "127.0.0.1", port)


@pytest.fixture(scope="session")
def source_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SourcePacs]:
    require_tool(ORTHANC_BINARY)
    server = SourcePacs(tmp_path_factory.mktemp("source-pacs"))
    server.start()
    yield server
    server.stop()


PRIOR_PATIENT = "PRIOR-PAT-4711"


@pytest.fixture(scope="session")
def source_studies(source_pacs: SourcePacs) -> dict[str, SourceStudy]:
    """What the PACS holds: A (by accession), B and C (CT, 1-2 June 2025), D (MR, 3 June),
    and the studies a follow-up of PRIOR_PATIENT dated 2026-01-15 chooses its prior among."""
    studies = [
        make_study("a", study_date="20250310", patient_id="PAT-A", accession_number="PULLACC-A"),
        make_study("b", study_date="20250601", patient_id="PAT-B"),
        make_study("c", study_date="20250602", patient_id="PAT-C", count=4),
        make_study("d", study_date="20250603", patient_id="PAT-D", modality="MR"),
        make_study("prior", study_date="20240110", patient_id=PRIOR_PATIENT),
        make_study("older", study_date="20220105", patient_id=PRIOR_PATIENT),
        make_study("too-old", study_date="20190101", patient_id=PRIOR_PATIENT),
        make_study("head", study_date="20250901", patient_id=PRIOR_PATIENT, body_part="HEAD"),
        make_study("mr-chest", study_date="20251001", patient_id=PRIOR_PATIENT, modality="MR"),
        make_study("other-patient", study_date="20251201", patient_id="SOMEONE-ELSE"),
        # 6 slices of 128x128 (33 kB each): a connection cut mid-study cuts mid-instance
        make_study("big", study_date="20230707", patient_id="PAT-BIG", count=6, size=128),
    ]
    for study in studies:
        for instance in study.instances:
            source_pacs.upload(instance.data)
    return {s.key: s for s in studies}


def pull_settings(
    settings: GatewaySettings,
    source: dict[str, Any],
    routing: dict[str, Any] | None = None,
    **pull: Any,
) -> GatewaySettings:
    """The test's gateway settings with `source` as the source archive and quick retries."""
    return make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        dicom={"port": settings.dicom.port},
        assembly={"quiet_period_s": 3600},
        queue={"router_poll_interval_s": 3600, "broker_url": "redis://127.0.0.1:6379/15"},
        pull={
            "source": source,
            "connect_timeout_s": 3,
            "response_timeout_s": 10,
            "study_timeout_s": 60,
            "max_attempts": 3,
            "backoff_initial_s": 0.1,
            "backoff_multiplier": 2,
            "batch_size": 1,
            "poll_interval_s": 0.2,
            **pull,
        },
        routing=routing or {},
    )


def source_config(pacs: SourcePacs, transport: str, **overrides: Any) -> dict[str, Any]:
    if transport == "wado-rs":
        return {"kind": "dicomweb", "url": pacs.dicomweb_url, **overrides}
    return {
        "kind": "dicom",
        "ae_title": ORTHANC_AE,
        "host": "127.0.0.1",
        "port": pacs.dicom_port,
        "retrieve": transport.removeprefix("c-"),
        **overrides,
    }


@pytest.fixture
def listening_gateway(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
) -> RunningGateway:
    """The gateway's listener (C-MOVE destination) with assembly and router idle: the test
    drives them. Orthanc's DicomModalities entry points at it."""
    idle = make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        dicom={"port": settings.dicom.port},
        assembly={"quiet_period_s": 3600},
        queue={"router_poll_interval_s": 3600, "broker_url": "redis://127.0.0.1:6379/15"},
    )
    gateway = start_gateway(idle)
    source_pacs.point_gateway_at(gateway.port)
    return gateway


def stored_instances(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(Instance.sop_instance_uid)).scalars())


class Sent(list[tuple[int, str]]):
    """The router's send(job_id, priority), recorded instead of a broker."""

    def __call__(self, job_id: int, priority: str) -> None:
        self.append((job_id, priority))


def complete_all(engine: Engine) -> list[str]:
    """Study assembly as if the quiet period had passed."""
    from datetime import timedelta

    from gateway.assembly import StudyAssembler
    from gateway.audit import utcnow

    return StudyAssembler(engine, 0.001).complete_quiet_studies(now=utcnow() + timedelta(seconds=5))


def audit_rows(engine: Engine, kind: str) -> list[Any]:
    from gateway.models import AuditEvent

    with engine.connect() as connection:
        return list(
            connection.execute(
                select(AuditEvent).where(AuditEvent.kind == kind).order_by(AuditEvent.id)
            ).all()
        )


def all_audit_text(engine: Engine) -> str:
    """Every audit row's detail and actor, for searching identifiers that must not be there."""
    from gateway.models import AuditEvent

    with engine.connect() as connection:
        rows = connection.execute(select(AuditEvent.actor, AuditEvent.detail)).all()
    return "\n".join(json.dumps([r.actor, r.detail]) for r in rows)


def pulled_rows(engine: Engine) -> list[Any]:
    from gateway.models import PulledStudy

    with engine.connect() as connection:
        return list(connection.execute(select(PulledStudy).order_by(PulledStudy.id)).all())


def stored_files(engine: Engine, spool: Path) -> dict[str, bytes]:
    """SOP Instance UID -> the stored file's bytes."""
    with engine.connect() as connection:
        rows = connection.execute(select(Instance.sop_instance_uid, Instance.file_path)).all()
    return {uid: (spool / path).read_bytes() for uid, path in rows}
