"""OHIF (npm @ohif/app, headless Chromium) pointed at the GATEWAY's DICOMweb instead of the
PACS: the processed study's CT held by the gateway (stored by STOW-RS) and its SEG and SR as
the gateway's own results (its results directory), opened as a user would; the SEG loads
with every segment, through QIDO-RS and WADO-RS (metadata, frames, instances) of the gateway.

OHIF's proxy (tests/viewer/ohif_server.py) passes no Authorization header, so a small front
adds the viewer's read token, as a site's reverse proxy that signs its users in would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.chromium.webdriver import ChromiumDriver
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway import migrate
from gateway.database import make_engine
from gateway.dicom.spool import Spool
from gateway.dicomweb.tokens import Scope, create_token
from gateway.models import AuditEvent
from gateway.web import create_app
from tests.conftest import free_port, make_settings
from tests.dicomweb.server import multipart_body
from tests.integration.orthanc import Orthanc
from tests.viewer.conftest import ProcessedStudy
from tests.viewer.expected import expected_segments
from tests.viewer.ohif_page import SEGMENTATIONS_JS, OhifPage
from tests.viewer.ohif_server import DICOMWEB_PATH, OhifServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
WAIT_S = 90

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def with_token(app: WsgiApp, secret: str) -> WsgiApp:
    """Requests without credentials go on with the viewer's bearer token."""

    def front(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ.setdefault("HTTP_AUTHORIZATION", f"Bearer {secret}")
        return app(environ, start_response)

    return front


@dataclass
class GatewayViewer:
    ohif: OhifServer
    engine: Any


def _orthanc_file(pacs: Orthanc, sop_instance_uid: str) -> bytes:
    orthanc_id = pacs.find_instance(sop_instance_uid)
    assert orthanc_id is not None, f"expected {sop_instance_uid} in Orthanc"
    return pacs.instance_file(orthanc_id)


@pytest.fixture
def gateway_viewer(
    processed_study: ProcessedStudy,
    pacs_with_dicomweb: Orthanc,
    ohif_dist: Path,
    tmp_path: Path,
) -> Iterator[GatewayViewer]:
    study = processed_study
    ohif_port, front_port = free_port(), free_port()
    settings = make_settings(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'gateway.db'}",
        web={"session_cookie_secure": False},
        # BulkDataURIs as the browser reaches them: through OHIF's same-origin proxy
        dicomweb={"public_url": f"http://127.0.0.1:{ohif_port}{DICOMWEB_PATH}"},
    )
    engine = make_engine(settings)
    migrate.upgrade(settings, engine=engine)
    viewer_token = create_token(engine, "OHIF", Scope.READ, actor="test", source_address=None)
    loader_token = create_token(engine, "LOADER", Scope.STORE, actor="test", source_address=None)
    app = create_app(settings, engine)
    server = make_server("127.0.0.1", front_port, with_token(app, viewer_token), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ohif = None
    try:
        # The CT into the gateway by STOW-RS, exactly the bytes the PACS holds
        body, content_type = multipart_body(
            [_orthanc_file(pacs_with_dicomweb, uid) for uid in study.ct]
        )
        reply = requests.post(
            f"http://127.0.0.1:{front_port}/dicomweb/studies",
            data=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {loader_token}"},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text[:500]
        # The SEG and SR where the gateway's pipeline writes its results
        results = Spool(settings.results_dir, min_free_bytes=0)
        for result in (study.seg, study.sr):
            results.write(
                study.study_instance_uid,
                str(result.SeriesInstanceUID),
                str(result.SOPInstanceUID),
                (_orthanc_file(pacs_with_dicomweb, str(result.SOPInstanceUID)),),
            )
        upstream = f"http://127.0.0.1:{front_port}/dicomweb"
        ohif = OhifServer(ohif_port, ohif_dist, upstream).start()
        yield GatewayViewer(ohif, engine)
    finally:
        if ohif is not None:
            ohif.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        engine.dispose()


def _refused(viewer: GatewayViewer) -> list[str]:
    """The viewer's requests the gateway did not answer 200, as its audit has them."""
    with viewer.engine.connect() as connection:
        events = connection.execute(
            select(AuditEvent.detail).where(AuditEvent.kind == "dicomweb.request")
        ).scalars()
        return [
            f"{d['method']} {d['route']}: {d['status']} {d.get('error', '')}"
            for d in events
            if d and d.get("status") != 200
        ]


def test_ohif_opens_the_processed_study_and_its_seg_from_the_gateway(
    processed_study: ProcessedStudy,
    gateway_viewer: GatewayViewer,
    viewer_browser: ChromiumDriver,
    screenshots: Path,
) -> None:
    study = processed_study
    page = OhifPage(viewer_browser, gateway_viewer.ohif.url)
    segments = expected_segments(study.seg)
    page.open_study(
        study.study_instance_uid,
        [study.ct_series_instance_uid, study.seg.SeriesInstanceUID, study.sr.SeriesInstanceUID],
    )
    seg_display_set = page.display_set_uid(study.seg.SeriesInstanceUID)
    page.open_series("SEG", str(study.seg.SeriesDescription))
    try:
        state = page.wait_for(
            f"const s = (() => {{ {SEGMENTATIONS_JS} }})()"
            ".find(x => x.segmentationId === arguments[0]);"
            "return s && s.shownInActiveViewport && s.segments.length >= arguments[1] && s;",
            WAIT_S,
            "the SEG, served by the gateway, loaded as a segmentation shown in the viewport",
            seg_display_set,
            len(segments),
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the gateway refused: {_refused(gateway_viewer)}") from None
    time.sleep(1)  # the render
    page.screenshot(screenshots / "ohif-gateway.png")
    shown = {s["segmentIndex"]: s["label"] for s in state["segments"]}
    assert shown == {s.number: s.label for s in segments}
    # It all came from the gateway, as the viewer's client, over each kind of request.
    with gateway_viewer.engine.connect() as connection:
        routes = {
            str(detail["route"])
            for detail in connection.execute(
                select(AuditEvent.detail).where(
                    AuditEvent.kind == "dicomweb.request", AuditEvent.actor == "OHIF"
                )
            ).scalars()
            if detail and detail.get("status") == 200
        }
    assert "/studies" in routes  # QIDO-RS
    assert "/studies/<study>/series/<series>/metadata" in routes
    assert any(r.endswith("/frames/<frames>") for r in routes), routes  # the CT images
    # the SEG itself: OHIF 3.13 fetches the whole instance (WADO-RS) to read its frames
    assert "/studies/<study>/series/<series>/instances/<sop>" in routes, routes
