"""Fixtures of the OHIF Viewer test: a phantom CT study processed by the real pipeline (gateway
and worker processes, PostgreSQL, Redis, Triton) into an Orthanc with its DICOMweb plugin;
the OHIF app (npm @ohif/app) served in front of that Orthanc; headless Chromium with software
WebGL."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from selenium.webdriver.chromium.webdriver import ChromiumDriver

from gateway import migrate
from gateway.database import make_engine
from tests.conftest import (
    GATEWAY_AE,
    REPO,
    _postgres_url,
    _reset_postgres,
    free_port,
    make_settings,
    wait_for_port,
)
from tests.inference.conftest import start_triton
from tests.integration.conftest import require_tool
from tests.integration.orthanc import ORTHANC_BINARY, Orthanc
from tests.pipeline.conftest import (
    GATEWAY_IN_ORTHANC,
    orthanc_destination,
    phantom_study,
    pipeline_settings,
)
from tests.pipeline.harness import Process, RedisServer, results_in_pacs, wait_until
from tests.viewer.expected import expected_findings
from tests.viewer.ohif_page import OhifPage
from tests.viewer.ohif_server import OhifServer

SCREENSHOTS = REPO / "docs" / "screenshots"
ENSURE_OHIF = REPO / "scripts" / "ensure-ohif.sh"
RESULTS_TIMEOUT_S = 180


@dataclass(frozen=True)
class ProcessedStudy:
    """A study in the PACS with the SEG and SR the pipeline delivered for it."""

    study_instance_uid: str
    ct_series_instance_uid: str
    ct: Mapping[str, Dataset]  # SOP Instance UID -> header of the source CT slice
    seg: Dataset
    sr: Dataset
    viewer_forms: Mapping[str, list[Dataset]]
    """Modality ('PR', 'OT', 'KO') -> what the pipeline delivered to a PACS taking the
    presentation state, secondary captures and key objects (`legacy_pacs`)."""


@pytest.fixture(scope="module")
def pacs_with_dicomweb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """This module's own Orthanc: the study browser then shows the one study of the test."""
    require_tool(ORTHANC_BINARY)
    server = Orthanc(
        tmp_path_factory.mktemp("viewer-pacs"),
        free_port(),
        {},
        dicom_port=free_port(),
        dicomweb=True,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def legacy_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A second Orthanc, a PACS whose viewer shows neither SEG nor SR: its destination takes
    the presentation state, secondary captures and key objects (C-STORE)."""
    require_tool(ORTHANC_BINARY)
    server = Orthanc(
        tmp_path_factory.mktemp("legacy-pacs"), free_port(), {}, dicom_port=free_port()
    )
    server.start()
    yield server
    server.stop()


LEGACY_FORMS = ("PR", "OT", "KO")


@pytest.fixture(scope="module")
def processed_study(
    pacs_with_dicomweb: Orthanc, legacy_pacs: Orthanc, tmp_path_factory: pytest.TempPathFactory
) -> ProcessedStudy:
    """Orthanc sends a phantom CT study to the gateway; the gateway's worker runs the lung
    nodule pipeline on Triton and delivers the SEG and SR back to Orthanc, and the viewer
    forms to `legacy_pacs`. Everything but the Orthancs is stopped again before the browser
    tests."""
    pacs = pacs_with_dicomweb
    tmp = tmp_path_factory.mktemp("viewer-pipeline")
    database_url = _postgres_url()
    _reset_postgres(database_url)
    base = make_settings(tmp / "data", database_url)
    engine = make_engine(base)
    migrate.upgrade(base, engine=engine)
    triton = start_triton(tmp)
    redis_server = RedisServer(tmp, free_port())
    processes: list[Process] = []
    try:
        redis_server.start()
        legacy = {
            **orthanc_destination(legacy_pacs),
            "name": "legacy",
            "forms": ["gsps", "sc", "kos"],
        }
        settings = pipeline_settings(
            base, redis_server.url, triton.grpc_url, [orthanc_destination(pacs), legacy]
        )
        processes.append(Process("serve", settings, tmp / "gateway.log").start())
        wait_for_port(settings.dicom.port)
        processes.append(Process("worker", settings, tmp / "worker.log").start())
        _, paths = phantom_study(tmp / "ct", seed=7301)
        (study_id,) = {pacs.upload(p.read_bytes())["ParentStudy"] for p in paths}
        source = pydicom.dcmread(paths[0], stop_before_pixels=True)
        pacs.set_modality(GATEWAY_IN_ORTHANC, GATEWAY_AE, "127.0.0.1", settings.dicom.port)
        reply = pacs.store(GATEWAY_IN_ORTHANC, [study_id])
        assert reply.status == 200, f"Orthanc's C-STORE to the gateway: {reply.body[:300]!r}"
        study_uid = str(source.StudyInstanceUID)
        try:
            found = wait_until(
                lambda: (r := results_in_pacs(pacs, study_uid)).get("SEG") and r.get("SR") and r,
                RESULTS_TIMEOUT_S,
                "the pipeline's SEG and SR in Orthanc",
            )
        except AssertionError:
            logs = "\n".join(f"--- {p.command}\n{p.log_tail()}" for p in processes)
            pytest.fail(f"expected a SEG and an SR of the study in Orthanc; logs:\n{logs}")
        seg, sr = (
            pydicom.dcmread(io.BytesIO(pacs.instance_file(found[kind][0])))
            for kind in ("SEG", "SR")
        )
        # one presentation state, one key image per finding, one key object selection
        wanted = {"PR": 1, "OT": len(expected_findings(sr)), "KO": 1}
        try:
            forms = wait_until(
                lambda: (
                    (r := results_in_pacs(legacy_pacs, study_uid))
                    and all(len(r.get(m, [])) >= n for m, n in wanted.items())
                    and r
                ),
                RESULTS_TIMEOUT_S,
                f"the pipeline's viewer forms {wanted} in the legacy PACS",
            )
        except AssertionError:
            logs = "\n".join(f"--- {p.command}\n{p.log_tail()}" for p in processes)
            pytest.fail(f"expected the viewer forms {wanted} in the legacy PACS:\n{logs}")
        viewer_forms: dict[str, list[Dataset]] = {
            modality: [pydicom.dcmread(io.BytesIO(legacy_pacs.instance_file(i))) for i in instances]
            for modality, instances in forms.items()
        }
        headers = (pydicom.dcmread(p, stop_before_pixels=True) for p in paths)
        ct = {str(h.SOPInstanceUID): h for h in headers}
        return ProcessedStudy(study_uid, str(source.SeriesInstanceUID), ct, seg, sr, viewer_forms)
    finally:
        for process in reversed(processes):
            process.stop()
        redis_server.stop()
        triton.stop()
        engine.dispose()


@pytest.fixture(scope="session")
def ohif_dist() -> Path:
    """The OHIF app's dist/ (fetched once by scripts/ensure-ohif.sh into .cache/ohif/)."""
    run = subprocess.run(
        ["bash", str(ENSURE_OHIF)], capture_output=True, text=True, timeout=600, check=False
    )
    if run.returncode != 0:
        pytest.fail(f"expected {ENSURE_OHIF} to provide OHIF's dist/, it failed: {run.stderr}")
    return Path(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def ohif(ohif_dist: Path, pacs_with_dicomweb: Orthanc) -> Iterator[OhifServer]:
    server = OhifServer(free_port(), ohif_dist, pacs_with_dicomweb.dicomweb_url).start()
    yield server
    server.stop()


def _chromedriver() -> str:
    path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(path).exists():
        pytest.fail(
            "expected chromedriver (Debian packages chromium and chromium-driver; "
            "scripts/ensure-system-packages.sh installs them), found none"
        )
    return path


@pytest.fixture
def viewer_browser(tmp_path: Path) -> Iterator[ChromiumDriver]:
    """Headless Chromium with WebGL in software (SwiftShader): OHIF renders with WebGL and
    offers only a reduced CPU fallback. The console log is kept for the test to read."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    binary = shutil.which("chromium")
    if binary:
        options.binary_location = binary
    driver = webdriver.Chrome(service=Service(_chromedriver()), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def ohif_page(
    viewer_browser: ChromiumDriver, ohif: OhifServer, tmp_path: Path
) -> Iterator[OhifPage]:
    page = OhifPage(viewer_browser, ohif.url)
    yield page
    # The console of every run, for whoever reads a failure (and for docs on what OHIF logs).
    (tmp_path / "browser-console.log").write_text(page.console_text())


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """docs/screenshots/ when asked for (PACS_GATEWAY_SAVE_SCREENSHOTS=1, `make screenshots`),
    else a temporary folder: a test run must not rewrite tracked files."""
    if os.environ.get("PACS_GATEWAY_SAVE_SCREENSHOTS"):
        return SCREENSHOTS
    return tmp_path / "shots"
