"""The front door: `pacs-gateway run` (SQLite, the embedded Celery-over-SQLite broker, the
bundled Triton it starts itself) and `pacs-gateway selftest` against it."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import REPO, free_port, wait_for_port

CONFIG = """
data_dir = "{data}"
http_port = {http_port}
[dicom]
ae_title = "PACSGATEWAY"
host = "127.0.0.1"
port = {dicom_port}
[[dicom.allowed_peers]]
ae_title = "*"
host = "127.0.0.1"
[storage]
min_free_mb = 0
[assembly]
quiet_period_s = 2
poll_interval_s = 0.5
[queue]
broker_url = "sqla+sqlite:///{data}/broker.sqlite"
router_poll_interval_s = 0.5
[inference]
triton_grpc_url = "127.0.0.1:{grpc}"
triton_grpc_port = {grpc}
triton_http_port = {http}
triton_metrics_port = {metrics}
[delivery]
poll_interval_s = 0.5
[[destinations]]
kind = "dicom"
name = "selftest"
ae_title = "SELFTEST"
host = "127.0.0.1"
port = {selftest_port}
[[routing.rules]]
name = "chest-ct"
conditions = [{{ attribute = "modality", operator = "equals", value = "CT" }}]
"""


def test_run_then_selftest(tmp_path: Path) -> None:
    dicom_port = free_port()
    http_port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        CONFIG.format(
            data=tmp_path / "data",
            dicom_port=dicom_port,
            grpc=free_port(),
            http=free_port(),
            metrics=free_port(),
            selftest_port=free_port(),
            http_port=http_port,
        )
    )
    log = (tmp_path / "run.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_GATEWAY_")}
    run = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for_port(dicom_port, timeout_s=180)
        selftest = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "selftest",
                "--config",
                str(config),
                "--timeout",
                "200",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        output = selftest.stdout + selftest.stderr
        assert selftest.returncode == 0, output + (tmp_path / "run.log").read_text()[-4000:]
        assert "selftest passed" in output
        assert "job 1: delivered" in output
        for stage in ("assembly (quiet period)", "inference", "results_build", "delivery"):
            assert stage in output, output
        assert (tmp_path / "data" / "gateway.db").is_file()
        assert (tmp_path / "data" / "broker.sqlite").is_file()
        assert "pacs-gateway selftest --config" in (tmp_path / "run.log").read_text()
        # the admin UI runs beside it
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        run.terminate()
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        log.close()
    assert run.returncode == 0, (tmp_path / "run.log").read_text()[-4000:]
