"""Integration fixtures: a real Orthanc, a study uploaded into it, and gateways with custom
DICOM settings (started in-process by the shared `start_gateway` fixture, so they use the
`database_url`-parametrized database: SQLite and the real PostgreSQL)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import GatewaySettings
from tests.conftest import (
    GATEWAY_AE,
    REPO,
    RunningGateway,
    free_port,
    make_settings,
    settings_environment,
    wait_for_port,
)
from tests.integration.dicom_factory import COMPRESSED_TEST_FILES, MadeInstance, mixed_study
from tests.integration.orthanc import ORTHANC_BINARY, Orthanc

GATEWAY_MODALITY = "PACSGATEWAY"  # Orthanc's name for the gateway in DicomModalities


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"expected {name} on PATH (Debian package providing it), found none")
    return path


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One Orthanc for the session: temporary storage, REST on a free port, no DICOM port.

    The gateway's DicomModalities entry is re-pointed at each test's gateway port."""
    require_tool(ORTHANC_BINARY)
    workdir = tmp_path_factory.mktemp("orthanc")
    server = Orthanc(
        workdir,
        free_port(),
        {GATEWAY_MODALITY: [GATEWAY_AE, "127.0.0.1", free_port()]},
    )
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class OrthancStudy:
    """A study stored in Orthanc: its Orthanc ID and what was uploaded, by SOP Instance UID."""

    orthanc_id: str
    study_instance_uid: str
    instances: dict[str, MadeInstance]
    orthanc_instance_ids: dict[str, str]


CT_INSTANCES = 10


@pytest.fixture(scope="session")
def orthanc_study(orthanc: Orthanc) -> OrthancStudy:
    """10 small CT slices plus one instance per compressed syntax (JPEG baseline, JPEG-LS
    lossless and near-lossless, JPEG 2000 lossless, RLE), all in one study."""
    made = mixed_study(CT_INSTANCES, COMPRESSED_TEST_FILES)
    orthanc_ids: dict[str, str] = {}
    parents = set()
    for instance in made:
        answer = orthanc.upload(instance.data)
        orthanc_ids[instance.sop_instance_uid] = answer["ID"]
        parents.add(answer["ParentStudy"])
    assert len(parents) == 1, f"expected one Orthanc study, found {sorted(parents)}"
    (study_id,) = parents
    assert len(orthanc.study_instances(study_id)) == len(made)
    return OrthancStudy(
        orthanc_id=study_id,
        study_instance_uid=made[0].study_instance_uid,
        instances={instance.sop_instance_uid: instance for instance in made},
        orthanc_instance_ids=orthanc_ids,
    )


@pytest.fixture
def start_custom_gateway(
    settings: GatewaySettings,
    database_url: str,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
) -> Callable[..., RunningGateway]:
    """Start an in-process gateway on the test's (migrated) database with DICOM overrides,
    e.g. `start_custom_gateway(allowed_peers=[...], tls={...})`."""

    def _start(**dicom: Any) -> RunningGateway:
        custom = make_settings(settings.data_dir, database_url, dicom=dicom)
        return start_gateway(custom)

    return _start


@pytest.fixture
def start_gateway_process(
    settings: GatewaySettings, database_url: str, engine: Any, tmp_path: Path
) -> Iterator[Callable[..., RunningGateway]]:
    """Start the real `pacs-gateway serve` (python -m gateway.cli) as an OS process, its
    settings passed as PACS_GATEWAY_* environment variables, on the test's migrated database.
    Stopped (SIGTERM, then SIGKILL) at teardown."""
    processes: list[subprocess.Popen[bytes]] = []

    def _stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def _start(**dicom: Any) -> RunningGateway:
        custom = make_settings(settings.data_dir, database_url, dicom=dicom)
        log = tmp_path / f"gateway-process-{len(processes)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve"],
                env=settings_environment(custom),
                cwd=REPO,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        try:
            wait_for_port(custom.dicom.port)
        except TimeoutError as exc:
            _stop(process)
            raise AssertionError(f"{exc}; gateway log:\n{log.read_text()}") from exc
        return RunningGateway(settings=custom, port=custom.dicom.port, stop=lambda: _stop(process))

    yield _start
    for process in processes:
        _stop(process)


def spool_path(gateway: RunningGateway, file_path: str) -> Path:
    return gateway.settings.spool_dir / file_path
