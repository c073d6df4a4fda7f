"""deploy/compose.yaml started by podman-compose for the container tests: images built by
scripts/container-build.sh, secrets and site overrides in a temporary folder, every port
in 12100-12199 (host network), a counting Storage SCP as the PACS."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    SegmentationStorage,
)

from tests.conftest import REPO

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
PROJECT = "pgw-test"
PORTS = {
    "DICOM_PORT": 12110,
    "HTTP_PORT": 12111,
    "POSTGRES_PORT": 12112,
    "REDIS_PORT": 12113,
    "TRITON_HTTP_PORT": 12114,
    "TRITON_GRPC_PORT": 12115,
    "TRITON_METRICS_PORT": 12116,
}
PACS_PORT = 12117
SELFTEST_PORT = 12118
BACKING_SERVICES = ("postgres", "redis", "triton")
GATEWAY_SERVICES = ("listener", "web", "worker")
LONG_RUNNING = (*BACKING_SERVICES, *GATEWAY_SERVICES)


def run(command: list[str], timeout_s: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
    )


@dataclass
class CountingPACS:
    """Counts every C-STORE request per (study, modality): a second delivery of the same
    object counts twice here, where Orthanc would keep one copy."""

    port: int
    received: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Any:
        ae = AE(ae_title="ORTHANC")
        for sop_class in (SegmentationStorage, Comprehensive3DSRStorage):
            ae.add_supported_context(sop_class)

        def on_store(event: Any) -> int:
            ds = event.dataset
            with self.lock:
                self.received[(str(ds.StudyInstanceUID), str(ds.Modality))] += 1
            return 0x0000

        return ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )

    def count(self, study_uid: str, modality: str) -> int:
        with self.lock:
            return self.received[(study_uid, modality)]


class ComposeStack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.secrets = workdir / "secrets"
        self.env = {
            **{k: str(v) for k, v in PORTS.items()},
            "SECRETS_DIR": str(self.secrets),
            "GATEWAY_ENV_FILE": str(workdir / "gateway.env"),
            "COMPOSE_PROJECT_NAME": PROJECT,
        }

    def compose(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        import os
        import sys

        command = [
            sys.executable,
            "-m",
            "podman_compose",
            "--podman-args=--runtime runc --cgroup-manager=cgroupfs",
            "-p",
            PROJECT,
            "-f",
            str(REPO / "deploy" / "compose.yaml"),
            *args,
        ]
        return run(command, timeout_s, env={**os.environ, **self.env}, cwd=REPO / "deploy")

    def write_site_files(self) -> None:
        """Secrets (scripts/container-secrets.sh) and the site overrides of the test: the
        PACS is the counting SCP, short queue deadlines so that a killed worker's job runs
        again within the test (visibility timeout, stuck-job sweep), small inference
        batches so that the worker is caught mid-inference."""
        made = run(
            ["bash", str(REPO / "scripts" / "container-secrets.sh"), str(self.secrets)],
            30,
            env={"POSTGRES_PORT": str(PORTS["POSTGRES_PORT"]), "PATH": "/usr/bin:/bin"},
        )
        assert made.returncode == 0, made.stderr
        destinations = [
            {"kind": "dicom", "name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1",
             "port": PACS_PORT},
            {"kind": "dicom", "name": "selftest", "ae_title": "SELFTEST", "host": "127.0.0.1",
             "port": SELFTEST_PORT},
        ]  # fmt: skip
        overrides = {
            "PACS_GATEWAY_DESTINATIONS": json.dumps(destinations),
            "PACS_GATEWAY_ASSEMBLY__QUIET_PERIOD_S": "3",
            "PACS_GATEWAY_INFERENCE__BATCH_SIZE": "2",
            # a killed worker's message comes back after 30 s, its lease is free after 20 s
            "PACS_GATEWAY_QUEUE__TASK_TIME_LIMIT_S": "25",
            "PACS_GATEWAY_QUEUE__RETRY_BACKOFF_MAX_S": "5",
            "PACS_GATEWAY_QUEUE__STUCK_JOB_AFTER_S": "35",
            "PACS_GATEWAY_QUEUE__VISIBILITY_TIMEOUT_S": "30",
            "PACS_GATEWAY_QUEUE__JOB_LEASE_S": "20",
        }
        (self.workdir / "gateway.env").write_text(
            "".join(f"{k}={v}\n" for k, v in overrides.items())
        )

    def database_url(self) -> str:
        return (self.secrets / "database_url").read_text().strip()

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def podman(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return run([*PODMAN, *args], timeout_s)

    def up(self, timeout_s: float) -> None:
        """Start the stack in two steps: the services and the one-shot migrate, then (after
        migrate exited 0) the gateway. `--no-deps`: podman 4.3 cannot start a container
        whose --requires dependency has dependencies of its own (docs/containers.md)."""
        deadline = time.monotonic() + timeout_s
        first = self.compose("up", "-d", "--no-deps", *BACKING_SERVICES, "migrate", timeout_s=120)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        code = self.wait_exited("migrate", deadline - time.monotonic())
        assert code == "0", f"expected migrate to exit 0, found {code}:\n{self.logs('migrate')}"
        second = self.compose("up", "-d", "--no-deps", *GATEWAY_SERVICES, timeout_s=120)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        for service in LONG_RUNNING:
            self.wait_healthy(service, max(5.0, deadline - time.monotonic()))

    def wait_healthy(self, service: str, timeout_s: float) -> None:
        """Run the service's health check (podman 4.3 without systemd runs none by itself)
        until it passes: a container that crashes and restarts never does."""
        deadline = time.monotonic() + timeout_s
        while True:
            check = self.podman("healthcheck", "run", self.container(service), timeout_s=60)
            if check.returncode == 0:
                return
            if time.monotonic() > deadline:
                said = self.podman(
                    "inspect", "--format", "{{range .State.Healthcheck.Log}}{{.Output}}{{end}}",
                    self.container(service),
                ).stdout[-1500:]  # fmt: skip
                raise AssertionError(
                    f"expected {service} healthy within {timeout_s:g} s, found "
                    f"{(check.stdout + check.stderr).strip()!r}; the checks said:\n{said}\n"
                    f"its log:\n{self.logs(service)}"
                )
            time.sleep(2)

    def wait_exited(self, service: str, timeout_s: float) -> str:
        """The container's exit code once it exited (as text)."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.podman(
                "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                self.container(service),
            ).stdout.split()  # fmt: skip
            if state and state[0] in ("exited", "stopped"):
                return state[1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {service} to exit within {timeout_s:g} s, found {state}"
                )
            time.sleep(1)

    def wait_running(self, service: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.podman("inspect", "--format", "{{.State.Status}}", self.container(service))
            if state.stdout.strip() == "running":
                return
            time.sleep(1)
        raise AssertionError(f"expected {service} running within {timeout_s:g} s, found {state}")

    def logs(self, service: str, tail: int = 40) -> str:
        """The container's log (all of it: tail=-1), stdout and stderr together."""
        logs = self.podman("logs", "--tail", str(tail), self.container(service))
        text = logs.stdout + logs.stderr  # podman logs the container's stderr on its own
        return text if tail < 0 else text[-4000:]
